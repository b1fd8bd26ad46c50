/* fhir_json — JSON reader (yajl callbacks) and writer for the fhir_node tree. */
#ifndef FHIR_JSON_H
#define FHIR_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "fhir_node.h"

/* Per-parse limits; exceeding one is a clean error naming the limit and the position. */
typedef struct fhir_json_limits {
    size_t max_bytes;      /* whole document; 0 = default (64 MiB) */
    size_t max_depth;      /* nesting of objects/arrays; 0 = default (256) */
    size_t max_string;     /* one string value or key in bytes; 0 = default (16 MiB) */
} fhir_json_limits;

#define FHIR_JSON_DEFAULT_MAX_BYTES (64u * 1024u * 1024u)
#define FHIR_JSON_DEFAULT_MAX_DEPTH 256u
#define FHIR_JSON_DEFAULT_MAX_STRING (16u * 1024u * 1024u)

/* Fills zero fields of *lim with the defaults. */
void fhir_json_limits_default(fhir_json_limits *lim);

/* Parses one JSON document (a leading UTF-8 BOM is accepted). The tree lives in arena a
 * (borrowed, valid until the arena is reset). Duplicate object keys, invalid UTF-8, NUL
 * bytes, trailing garbage and exceeded limits are errors; on error returns NULL and err
 * says what and where ("line 3, byte 57: ..."). lim may be NULL for defaults. */
fhir_node *fhir_json_parse(fhir_arena *a, const char *data, size_t len,
                           const fhir_json_limits *lim, fhir_error *err);

/* Options of fhir_json_parse_ex beyond the limits. */
typedef struct fhir_json_opts {
    fhir_json_limits lim;  /* zero fields = the defaults */
    bool comments;         /* accept // and slash-star comments (configuration files) */
    bool lines;            /* record every node's line in fhir_node.line (see fhir_node.h) */
} fhir_json_opts;

/* Where and why fhir_json_parse_ex failed. */
typedef struct fhir_json_failure {
    size_t line;                /* 1-based line where the reader stopped */
    size_t byte;                /* offset from the start of the text */
    bool syntax;                /* the text is not JSON (else: a rule or limit of this reader) */
    char what[FHIR_ERROR_MAX];  /* the cause, without the position; for syntax errors yajl's */
} fhir_json_failure;

/* fhir_json_parse with options (opts may be NULL). On error returns NULL and fills *fail (may
 * be NULL). Duplicate keys name the line of the first one when lines are recorded. */
fhir_node *fhir_json_parse_ex(fhir_arena *a, const char *data, size_t len,
                              const fhir_json_opts *opts, fhir_json_failure *fail);

/* The JSON library under this reader (a string literal, for version reports and log keys)
 * and the version of it this program runs with ("2.1.0"), written into buf (n bytes);
 * returns buf. */
#define FHIR_JSON_LIB "yajl"
const char *fhir_json_lib_version(char *buf, size_t n);

/* Reads a whole file ("-" = stdin) capped at lim->max_bytes and parses it. */
fhir_node *fhir_json_parse_file(fhir_arena *a, const char *path,
                                const fhir_json_limits *lim, fhir_error *err);
/* The same with another parser of the same signature (fhir_xml_parse_any, ...). */
typedef fhir_node *(*fhir_parse_fn)(fhir_arena *a, const char *data, size_t len,
                                    const fhir_json_limits *lim, fhir_error *err);
fhir_node *fhir_json_parse_file_with(fhir_arena *a, const char *path, const fhir_json_limits *lim,
                                     fhir_parse_fn parse, fhir_error *err);

/* A parser kept across many small documents in a row (the lines of an NDJSON file): one yajl
 * handle while documents parse cleanly. Same rules, limits, results and messages as
 * fhir_json_parse (lim may be NULL for defaults). Caller frees with fhir_json_reader_free(). */
typedef struct fhir_json_reader fhir_json_reader;
#define FHIR_JSON_READER_NAMES 1024u               /* member names shared at most (power of two) */
#define FHIR_JSON_READER_NAME_BYTES (256u << 10)   /* byte cap of the shared names */
fhir_json_reader *fhir_json_reader_new(const fhir_json_limits *lim);
/* The tree lives in arena a; its member names may be the reader's own copies (one per name,
 * up to a cap; a common FHIR name is the static copy of fhir_names.h), so the tree is valid
 * until a is reset or r is freed, whichever comes first.
 * NULL with err set on error. */
fhir_node *fhir_json_reader_parse(fhir_json_reader *r, fhir_arena *a, const char *data, size_t len,
                                  fhir_error *err);
void fhir_json_reader_free(fhir_json_reader *r);

/* Incremental parse for bodies that arrive in chunks (e.g. HTTP). Caller frees with
 * fhir_json_stream_free(). feed() may be called any number of times, then finish(). The trees
 * live in a; so do their member names, one copy of each name (up to FHIR_JSON_READER_NAMES of
 * them, as a reader's; a common FHIR name is the static copy of fhir_names.h), so equal names
 * in the trees of one stream are the same pointer. */
typedef struct fhir_json_stream fhir_json_stream;
fhir_json_stream *fhir_json_stream_new(fhir_arena *a, const fhir_json_limits *lim);
int fhir_json_stream_feed(fhir_json_stream *s, const char *data, size_t len, fhir_error *err);
/* Returns the root (borrowed from the arena) or NULL with err set. */
fhir_node *fhir_json_stream_finish(fhir_json_stream *s, fhir_error *err);
void fhir_json_stream_free(fhir_json_stream *s);

/* Writer flags. */
enum {
    FHIR_JSON_COMPACT = 0,
    FHIR_JSON_PRETTY = 1, /* two-space indent, newline after the document */
};

/* Appends the JSON text of n to out. Returns 0, or -1 when out's cap is hit. */
int fhir_json_write(fhir_buf *out, const fhir_node *n, int flags);
/* Appends s as a JSON string literal with escapes. */
int fhir_json_write_string(fhir_buf *out, const char *s, size_t n);
/* Malloc'd JSON text of n (caller frees); NULL when cap (0 = none) is exceeded. */
char *fhir_json_to_string(const fhir_node *n, int flags, size_t cap);

#endif
