/* fhir_jsonfile — the project's own JSON files (the daemon configuration, the criteria files,
 * the center directory) read for people who edit them by hand: a fhir_node tree (read by
 * fhir_json, the hardened reader) in which every node knows its line, optional comments,
 * typed getters, an allowed-keys check with "did you mean", and one list of
 * "FILE:LINE: what" errors, so a loader can report every mistake, each with its line.
 *
 * Which line an error names — the one rule:
 *   - a node's line is, for an object member, the line of its key, and for anything else (an
 *     array element, the root) the line where its value starts;
 *   - an error about a value (wrong kind, out of range, not allowed) names that node's line;
 *   - an unknown key names its own line (it is a member);
 *   - a missing key names the line of the object that should hold it (that object's node
 *     line: its key when it is a member, its opening brace otherwise);
 *   - a JSON syntax error names the line where the reader stopped.
 * Errors about the file as a whole (cannot open, too large) carry no line: "FILE: what".
 *
 * Ownership: the tree lives in the arena the caller passes (borrowed until that arena is
 * freed); the fhir_jsonfile handle (error list, name) is the caller's, freed with
 * fhir_jsonfile_free(), which leaves the tree alone. */
#ifndef FHIR_JSONFILE_H
#define FHIR_JSONFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "fhir_node.h"

#define FHIR_JSONFILE_MAX_ERRORS 200                    /* errors kept; later ones are counted */
#define FHIR_JSONFILE_DEFAULT_MAX_BYTES (1024u * 1024u) /* a file's size cap when opts say 0 */
#define FHIR_JSONFILE_MAX_DEPTH 64                      /* nesting of objects and arrays */

typedef struct fhir_jsonfile_opts {
    size_t max_bytes;     /* the file's size cap; 0 = FHIR_JSONFILE_DEFAULT_MAX_BYTES */
    bool comments;        /* accept // and slash-star comments */
    const char *key_word; /* what the format calls a key in messages ("field", "option");
                           * NULL = "key" */
} fhir_jsonfile_opts;

typedef struct fhir_jsonfile fhir_jsonfile;

/* Parses text (name is used in messages; copied). Never NULL (caller frees): on a syntax
 * error, an empty text or one over the cap, the root is NULL and the error is in the list.
 * opts may be NULL. */
fhir_jsonfile *fhir_jsonfile_parse(fhir_arena *a, const char *name, const char *text, size_t len,
                                   const fhir_jsonfile_opts *opts);
/* Reads path (capped at opts->max_bytes) and parses it; "PATH: cannot open: ..." and the like
 * go to the list. Never NULL (caller frees). */
fhir_jsonfile *fhir_jsonfile_read(fhir_arena *a, const char *path, const fhir_jsonfile_opts *opts);
void fhir_jsonfile_free(fhir_jsonfile *f);

/* The document's root (borrowed from the arena); NULL when it could not be read. */
const fhir_node *fhir_jsonfile_root(const fhir_jsonfile *f);
/* The name messages use (borrowed from f). */
const char *fhir_jsonfile_name(const fhir_jsonfile *f);

/* ---- errors ------------------------------------------------------------------------------- */

/* Records "NAME:LINE: what" with the line of node at (by the rule above; at NULL or a node
 * without a line gives "NAME: what"). Always returns -1, so a loader can `return` it. */
int fhir_jsonfile_error(fhir_jsonfile *f, const fhir_node *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with an explicit line (0 = none), for checks across several nodes. */
int fhir_jsonfile_error_line(fhir_jsonfile *f, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* All errors recorded, the ones past FHIR_JSONFILE_MAX_ERRORS included. */
size_t fhir_jsonfile_error_count(const fhir_jsonfile *f);
/* Error i (< the count and < FHIR_JSONFILE_MAX_ERRORS), "NAME:LINE: what"; borrowed from f. */
const char *fhir_jsonfile_error_text(const fhir_jsonfile *f, size_t i);
/* 0 when nothing was recorded; else -1 with err = the first error, followed by
 * " (and N more)" when there are others. */
int fhir_jsonfile_result(const fhir_jsonfile *f, fhir_error *err);
/* Appends every kept error, one a line, and "NAME: ... N more errors not shown" past the
 * cap. */
void fhir_jsonfile_write_errors(const fhir_jsonfile *f, fhir_buf *out);

/* ---- reading values ------------------------------------------------------------------------ */

/* "a string", "an object", "null", ...: a kind with its article, for messages. Static. */
const char *fhir_jsonfile_kind_a(fhir_kind k);

/* Checks that node is of kind k; else records "<what> must be an object, not an array" at the
 * node and returns -1. */
int fhir_jsonfile_want(fhir_jsonfile *f, const fhir_node *node, fhir_kind k, const char *what);

/* Every member of obj must be one of allowed (NULL-terminated); each other one is recorded as
 * 'unknown KEY_WORD "k" in <what> (did you mean "x"?)' at its line (the suggestion when one
 * is near: fhir_suggest). Returns -1 when any was unknown, else 0. */
int fhir_jsonfile_keys(fhir_jsonfile *f, const fhir_node *obj, const char *what,
                       const char *const *allowed);

/* Flags of the getters. */
enum {
    FHIR_JSONFILE_OPTIONAL = 0,
    FHIR_JSONFILE_REQUIRED = 1, /* absent: '<what>: missing "key"' at obj's line */
    FHIR_JSONFILE_NONEMPTY = 2, /* strings and arrays: '<what>: "key" must not be empty' */
};

/* The getters read member key of object obj; what names obj in messages ('center "a"',
 * "source"). Each returns 1 with *out set when the member is there and right, 0 when it is
 * absent and not required (*out untouched), or -1 after recording an error at the member
 * (wrong kind: '<what>: "key" must be a string, not a number'; a JSON null is a kind like
 * the others, not an absent member). Strings and nodes are borrowed from the tree. */
int fhir_jsonfile_str(fhir_jsonfile *f, const fhir_node *obj, const char *key, const char *what,
                      unsigned flags, const char **out);
/* A finite number within [lo, hi]; else '<what>: "key" = 123.0 is outside [-90, 90]'. */
int fhir_jsonfile_num(fhir_jsonfile *f, const fhir_node *obj, const char *key, const char *what,
                      unsigned flags, double lo, double hi, double *out);
/* An integer within [lo, hi]; else '<what>: "key" must be an integer, not 2.5' or the
 * range message of fhir_jsonfile_num. */
int fhir_jsonfile_int(fhir_jsonfile *f, const fhir_node *obj, const char *key, const char *what,
                      unsigned flags, int64_t lo, int64_t hi, int64_t *out);
int fhir_jsonfile_bool(fhir_jsonfile *f, const fhir_node *obj, const char *key, const char *what,
                       unsigned flags, bool *out);
/* A string that is one of values (NULL-terminated); *out = its index. Else
 * '<what>: key "x" is not one of a, b, c'. */
int fhir_jsonfile_enum(fhir_jsonfile *f, const fhir_node *obj, const char *key, const char *what,
                       unsigned flags, const char *const *values, int *out);
int fhir_jsonfile_array(fhir_jsonfile *f, const fhir_node *obj, const char *key, const char *what,
                        unsigned flags, const fhir_node **out);
int fhir_jsonfile_object(fhir_jsonfile *f, const fhir_node *obj, const char *key,
                         const char *what, unsigned flags, const fhir_node **out);

#endif
