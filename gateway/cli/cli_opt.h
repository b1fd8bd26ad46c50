/* cli_opt — the one option parser of the `cartgate` subcommands. Each command describes itself
 * as a table (name, positional arguments, one entry per option: long name, short letter, kind
 * with bounds, where the value goes, help text); cli_parse parses argv with getopt_long,
 * validates every value, reports errors in one form
 *     cartgate screen: --as-of: not a date (YYYY-MM-DD): 2026-13-01
 * and prints usage / --help generated from the same table, so argument parsing exists once.
 *
 * Options and positional arguments may be mixed (GNU getopt permutes argv); "--" ends the
 * options. -h/--help is added to every table. Exit statuses: 0 after --help, 2 after a usage
 * error (the convention of every cartgate command). */
#ifndef CLI_OPT_H
#define CLI_OPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CLI_MAX_OPTS 48   /* entries of one table, --help and old spellings not counted */
#define CLI_GO (-1)       /* cli_parse: go on with the command */

typedef enum cli_kind {
    CLI_FLAG, /* no value; out: bool *, set to true */
    CLI_STR,  /* out: const char ** (borrowed from argv) */
    CLI_PATH, /* out: const char ** (borrowed from argv); must not be empty */
    CLI_INT,  /* out: long long *; a whole number within [min, max] */
    CLI_U64,  /* out: uint64_t *; a whole number from 0 to 2^64-1 */
    CLI_NUM,  /* out: double *; a finite decimal number within [min, max] */
    CLI_DATE, /* out: int64_t *, days since 1970-01-01; strict YYYY-MM-DD, a real calendar day */
    CLI_ENUM, /* out: int *, the index of the value among the '|'-separated choices in .arg */
    CLI_LIST, /* out: cli_list *; repeatable, each value appended */
} cli_kind;

/* A repeatable option's values: v is the caller's array of cap entries. */
typedef struct cli_list {
    const char **v;
    size_t n, cap;
} cli_list;

typedef struct cli_opt {
    const char *name;     /* long name without "--"; a {0} entry ends the table */
    char short_name;      /* -x, or 0 */
    cli_kind kind;
    void *out;            /* where the value goes (type by kind); borrowed */
    const char *arg;      /* the value's placeholder in usage (FILE, N); CLI_ENUM: "a|b|c" */
    const char *help;     /* one line ('\n' starts another); NULL hides the option */
    long long min, max;   /* CLI_INT / CLI_NUM bounds, inclusive; both 0: unbounded */
    const char *def;      /* the default, shown by --help, or NULL */
    const char *old_name; /* a deprecated spelling still accepted (with a note), or NULL */
    bool required;        /* missing it is a usage error */
} cli_opt;

/* The options several commands share, so a concept has one spelling (and one placeholder)
 * everywhere: --as-of, --json, --mappings, -c/--config, --centers. */
#define CLI_OPT_AS_OF(p, dflt, text)                                                           \
    {.name = "as-of", .kind = CLI_DATE, .out = (p), .arg = "YYYY-MM-DD", .def = (dflt),        \
     .help = (text)}
#define CLI_OPT_JSON(p, text) {.name = "json", .kind = CLI_FLAG, .out = (p), .help = (text)}
#define CLI_OPT_MAPPINGS(p)                                                                    \
    {.name = "mappings", .kind = CLI_PATH, .out = (p), .arg = "DIR",                           \
     .def = "the compiled-in mappings/", .help = "terminology table folder"}
#define CLI_OPT_CONFIG(p, req, text)                                                           \
    {.name = "config", .short_name = 'c', .kind = CLI_PATH, .out = (p), .arg = "FILE",         \
     .required = (req), .help = (text)}
#define CLI_OPT_CENTERS(p, dflt, text)                                                         \
    {.name = "centers", .kind = CLI_PATH, .out = (p), .arg = "FILE", .def = (dflt),           \
     .help = (text)}

typedef struct cli_cmd {
    const char *name;     /* "screen": messages start "cartgate screen: " */
    const char *args;     /* positional arguments in the synopsis ("FILE|DIR..."), or NULL */
    int min_args;         /* fewest positional arguments */
    int max_args;         /* most positional arguments; -1: any number */
    const char *synopsis; /* replaces the generated synopsis lines (without "usage: "), or NULL */
    const char *about;    /* what the command does; --help prints it after the synopsis */
    const char *notes;    /* --help prints it after the options, or NULL */
    const cli_opt *opts;  /* the table, ended by a {0} entry; NULL: no options but --help */
} cli_cmd;

/* Parses argv[1..argc) (argv[0] is the command's name) into the table's outputs; options not
 * given leave their outputs untouched, so the values there before the call are the defaults.
 * *first is the index of the first positional argument (they are argv[*first..argc) after
 * the call, whose order getopt may have changed). Returns CLI_GO to go on, or the exit status
 * the command returns: 0 after --help (printed to stdout), 2 after a usage error (printed to
 * stderr). Values borrow from argv. */
int cli_parse(const cli_cmd *cmd, int argc, char **argv, int *first);
/* The same, writing help to out and errors to err (tests). */
int cli_parse_io(const cli_cmd *cmd, int argc, char **argv, int *first, FILE *out, FILE *err);

/* A usage error found by the command itself: prints "cartgate <name>: <message>" and the
 * synopsis to stderr; returns 2 (the exit status). */
int cli_error(const cli_cmd *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The full help (synopsis, about, options, notes) generated from the table. */
void cli_help(const cli_cmd *cmd, FILE *f);

#endif
