/* cli_opt — table-driven option parsing for the cartgate subcommands (see cli_opt.h). */
#include "cli_opt.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_clock.h"
#include "fhir_suggest.h"

#define HELP_COL 26   /* column where the help text of an option starts */
#define VAL_LONG 256  /* getopt val of a long option: VAL_LONG + its index */
#define VAL_OLD 512   /* getopt val of an old spelling: VAL_OLD + index */

static const cli_opt help_opt = {"help", 'h', CLI_FLAG, NULL, NULL, "print this help", 0, 0,
                                 NULL, NULL, false};

static size_t count_opts(const cli_cmd *c)
{
    size_t n = 0;
    while (c->opts && c->opts[n].name)
        n++;
    return n;
}

/* ---- usage and help ------------------------------------------------------------------- */

static void print_synopsis(const cli_cmd *c, FILE *f)
{
    if (c->synopsis) {
        /* every line after the first is indented under the first */
        fputs("usage: ", f);
        for (const char *p = c->synopsis; *p; p++) {
            fputc(*p, f);
            if (*p == '\n' && p[1])
                fputs("       ", f);
        }
        if (c->synopsis[strlen(c->synopsis) - 1] != '\n')
            fputc('\n', f);
        return;
    }
    fprintf(f, "usage: cartgate %s", c->name);
    bool optional = false;
    for (size_t i = 0; c->opts && c->opts[i].name; i++) {
        const cli_opt *o = &c->opts[i];
        if (o->required)
            fprintf(f, " --%s%s%s", o->name, o->kind == CLI_FLAG ? "" : " ",
                    o->kind == CLI_FLAG ? "" : o->arg ? o->arg : "VALUE");
        else if (o->help)
            optional = true;
    }
    if (optional)
        fputs(" [options]", f);
    if (c->args)
        fprintf(f, " %s", c->args);
    fputc('\n', f);
}

static void print_opt(const cli_opt *o, FILE *f)
{
    char left[128];
    int n = snprintf(left, sizeof left, "  %c%c%c --%s%s%s", o->short_name ? '-' : ' ',
                     o->short_name ? o->short_name : ' ', o->short_name ? ',' : ' ', o->name,
                     o->kind == CLI_FLAG ? "" : " ",
                     o->kind == CLI_FLAG ? "" : o->arg ? o->arg : "VALUE");
    fputs(left, f);
    if (n >= HELP_COL - 1)
        fprintf(f, "\n%*s", HELP_COL, "");
    else
        fprintf(f, "%*s", HELP_COL - n, "");
    for (const char *p = o->help; *p; p++) {
        fputc(*p, f);
        if (*p == '\n')
            fprintf(f, "%*s", HELP_COL, "");
    }
    if (o->def)
        fprintf(f, " (default: %s)", o->def);
    if (o->kind == CLI_LIST)
        fputs(" (repeatable)", f);
    fputc('\n', f);
}

void cli_help(const cli_cmd *c, FILE *f)
{
    print_synopsis(c, f);
    if (c->about)
        fprintf(f, "%s%s", c->about, c->about[strlen(c->about) - 1] == '\n' ? "" : "\n");
    fputs("\noptions:\n", f);
    for (size_t i = 0; c->opts && c->opts[i].name; i++)
        if (c->opts[i].help)
            print_opt(&c->opts[i], f);
    print_opt(&help_opt, f);
    if (c->notes)
        fprintf(f, "\n%s%s", c->notes, c->notes[strlen(c->notes) - 1] == '\n' ? "" : "\n");
}

static int usage_error(const cli_cmd *c, FILE *err)
{
    print_synopsis(c, err);
    fprintf(err, "Run 'cartgate %s --help' for every option.\n", c->name);
    return 2;
}

int cli_error(const cli_cmd *c, const char *fmt, ...)
{
    fprintf(stderr, "cartgate %s: ", c->name);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return usage_error(c, stderr);
}

/* ---- values ------------------------------------------------------------------------------- */

static void bounds_text(const cli_opt *o, char *out, size_t n)
{
    if (o->min || o->max)
        snprintf(out, n, " from %lld to %lld", o->min, o->max);
    else
        out[0] = 0;
}

/* Stores v into o's output; on a bad value prints the error and returns -1. */
static int store_value(const cli_cmd *c, const cli_opt *o, const char *v, FILE *err)
{
    char b[64];
    switch (o->kind) {
    case CLI_FLAG:
        *(bool *)o->out = true;
        return 0;
    case CLI_STR:
        *(const char **)o->out = v;
        return 0;
    case CLI_PATH:
        if (!*v) {
            fprintf(err, "cartgate %s: --%s: empty path\n", c->name, o->name);
            return -1;
        }
        *(const char **)o->out = v;
        return 0;
    case CLI_INT: {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        bool bounded = o->min || o->max;
        if (!*v || *end || errno || (bounded && (x < o->min || x > o->max))) {
            bounds_text(o, b, sizeof b);
            fprintf(err, "cartgate %s: --%s: not a whole number%s: %s\n", c->name, o->name, b, v);
            return -1;
        }
        *(long long *)o->out = x;
        return 0;
    }
    case CLI_U64: {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(v, &end, 10);
        if (!*v || *v == '-' || *v == '+' || *end || errno) {
            fprintf(err, "cartgate %s: --%s: not a whole number from 0 to %llu: %s\n", c->name,
                    o->name, (unsigned long long)UINT64_MAX, v);
            return -1;
        }
        *(uint64_t *)o->out = (uint64_t)x;
        return 0;
    }
    case CLI_NUM: {
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        bool bounded = o->min || o->max;
        if (!*v || *end || errno || !isfinite(x) ||
            (bounded && (x < (double)o->min || x > (double)o->max))) {
            bounds_text(o, b, sizeof b);
            fprintf(err, "cartgate %s: --%s: not a number%s: %s\n", c->name, o->name, b, v);
            return -1;
        }
        *(double *)o->out = x;
        return 0;
    }
    case CLI_DATE: {
        int64_t d;
        if (fhir_clock_parse_ymd(v, &d) != 0) {
            fprintf(err, "cartgate %s: --%s: not a date (YYYY-MM-DD): %s\n", c->name, o->name, v);
            return -1;
        }
        *(int64_t *)o->out = d;
        return 0;
    }
    case CLI_ENUM: {
        const char *p = o->arg;
        size_t vl = strlen(v);
        for (int i = 0; p && *p; i++) {
            const char *bar = strchr(p, '|');
            size_t l = bar ? (size_t)(bar - p) : strlen(p);
            if (l == vl && !strncmp(p, v, l)) {
                *(int *)o->out = i;
                return 0;
            }
            p = bar ? bar + 1 : p + l;
        }
        fprintf(err, "cartgate %s: --%s: not one of %s: %s\n", c->name, o->name, o->arg, v);
        return -1;
    }
    case CLI_LIST: {
        cli_list *l = o->out;
        if (l->n >= l->cap) {
            fprintf(err, "cartgate %s: --%s: given more than %zu times\n", c->name, o->name,
                    l->cap);
            return -1;
        }
        l->v[l->n++] = v;
        return 0;
    }
    }
    return -1;
}

/* ---- parsing -------------------------------------------------------------------------------- */

/* The long name in an argument "--name" or "--name=value" (without dashes), into out. */
static void long_name_of(const char *arg, char *out, size_t n)
{
    while (*arg == '-')
        arg++;
    size_t l = strcspn(arg, "=");
    snprintf(out, n, "%.*s", (int)(l < n - 1 ? l : n - 1), arg);
}

static void unknown_option(const cli_cmd *c, const char *arg, int optopt_ch, size_t n_opts,
                           FILE *err)
{
    if (optopt_ch || !arg || strncmp(arg, "--", 2)) { /* getopt names a short one by its letter */
        fprintf(err, "cartgate %s: unknown option -%c\n", c->name, optopt_ch ? optopt_ch : '?');
        return;
    }
    char name[64];
    long_name_of(arg, name, sizeof name);
    const char *cands[CLI_MAX_OPTS + 1];
    size_t nc = 0, prefixed = 0;
    for (size_t i = 0; i < n_opts; i++)
        cands[nc++] = c->opts[i].name;
    cands[nc++] = help_opt.name;
    for (size_t i = 0; i < nc; i++)
        if (*name && !strncmp(cands[i], name, strlen(name)))
            prefixed++;
    if (prefixed > 1) {
        fprintf(err, "cartgate %s: --%s is ambiguous:", c->name, name);
        for (size_t i = 0; i < nc; i++)
            if (!strncmp(cands[i], name, strlen(name)))
                fprintf(err, " --%s", cands[i]);
        fputc('\n', err);
        return;
    }
    const char *s = fhir_suggest(name, cands, nc);
    if (s)
        fprintf(err, "cartgate %s: unknown option --%s (did you mean --%s?)\n", c->name, name, s);
    else
        fprintf(err, "cartgate %s: unknown option --%s\n", c->name, name);
}

/* The entry a getopt value stands for (NULL: none); *old tells an old spelling. */
static const cli_opt *entry_of(const cli_cmd *c, size_t n, int val, bool *old, size_t *idx)
{
    *old = false;
    if (val >= VAL_OLD && val < VAL_OLD + (int)n) {
        *old = true;
        *idx = (size_t)(val - VAL_OLD);
        return &c->opts[*idx];
    }
    if (val >= VAL_LONG && val < VAL_LONG + (int)n) {
        *idx = (size_t)(val - VAL_LONG);
        return &c->opts[*idx];
    }
    for (size_t i = 0; val > 0 && i < n; i++)
        if (c->opts[i].short_name == val) {
            *idx = i;
            return &c->opts[i];
        }
    return NULL;
}

int cli_parse_io(const cli_cmd *c, int argc, char **argv, int *first, FILE *out, FILE *err)
{
    size_t n = count_opts(c);
    if (n > CLI_MAX_OPTS) /* a table bigger than its cap: a programming error */
        abort();
    /* getopt's tables: every option (val VAL_LONG + its index), its old spelling (VAL_OLD +
     * index), --help; the short letters, with ':' after those that take a value. */
    struct option lo[2 * CLI_MAX_OPTS + 2];
    char so[3 * CLI_MAX_OPTS + 4];
    size_t nl = 0, ns = 0;
    bool seen[CLI_MAX_OPTS] = {false};
    so[ns++] = ':'; /* a missing value returns ':', not '?' */
    for (size_t i = 0; i < n; i++) {
        const cli_opt *o = &c->opts[i];
        int has = o->kind == CLI_FLAG ? no_argument : required_argument;
        lo[nl++] = (struct option){o->name, has, NULL, VAL_LONG + (int)i};
        if (o->old_name)
            lo[nl++] = (struct option){o->old_name, has, NULL, VAL_OLD + (int)i};
        if (o->short_name) {
            so[ns++] = o->short_name;
            if (has == required_argument)
                so[ns++] = ':';
        }
    }
    lo[nl++] = (struct option){"help", no_argument, NULL, 'h'};
    lo[nl] = (struct option){NULL, 0, NULL, 0};
    so[ns++] = 'h';
    so[ns] = 0;

    optind = 0; /* GNU: a full re-initialisation, so every call starts afresh */
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, so, lo, NULL)) != -1) {
        const char *cur = optind > 0 && optind <= argc ? argv[optind - 1] : NULL;
        bool old = false;
        size_t i = 0;
        if (ch == 'h') {
            cli_help(c, out);
            return 0;
        }
        if (ch == '?' || ch == ':') {
            const cli_opt *o = entry_of(c, n, optopt, &old, &i);
            if (ch == ':' && o)
                fprintf(err, "cartgate %s: --%s: missing value (%s)\n", c->name, o->name,
                        o->arg ? o->arg : "VALUE");
            else if (o && o->kind == CLI_FLAG)
                fprintf(err, "cartgate %s: --%s: takes no value\n", c->name, o->name);
            else if (optopt == 'h')
                fprintf(err, "cartgate %s: --help: takes no value\n", c->name);
            else
                unknown_option(c, cur, optopt, n, err);
            return usage_error(c, err);
        }
        const cli_opt *o = entry_of(c, n, ch, &old, &i);
        if (!o) /* getopt returned a value not in its tables: cannot happen */
            abort();
        if (old)
            fprintf(err, "cartgate %s: note: --%s is deprecated, use --%s\n", c->name,
                    o->old_name, o->name);
        if (store_value(c, o, o->kind == CLI_FLAG ? NULL : optarg, err))
            return usage_error(c, err);
        seen[i] = true;
    }
    for (size_t i = 0; i < n; i++)
        if (c->opts[i].required && !seen[i]) {
            const cli_opt *o = &c->opts[i];
            fprintf(err, "cartgate %s: --%s%s%s is required\n", c->name, o->name,
                    o->kind == CLI_FLAG ? "" : " ",
                    o->kind == CLI_FLAG ? "" : o->arg ? o->arg : "VALUE");
            return usage_error(c, err);
        }
    int npos = argc - optind;
    if (npos < c->min_args) {
        fprintf(err, "cartgate %s: missing %s\n", c->name, c->args ? c->args : "arguments");
        return usage_error(c, err);
    }
    if (c->max_args >= 0 && npos > c->max_args) {
        fprintf(err, "cartgate %s: unexpected argument '%s'\n", c->name,
                argv[optind + c->max_args]);
        return usage_error(c, err);
    }
    *first = optind;
    return CLI_GO;
}

int cli_parse(const cli_cmd *c, int argc, char **argv, int *first)
{
    return cli_parse_io(c, argc, argv, first, stdout, stderr);
}
