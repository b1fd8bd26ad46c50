/* fhir_ndjson — streaming NDJSON reader: one resource per line delivered to a callback
 * while the input is read in chunks. Memory is bounded by the longest single line (capped
 * by limits.max_bytes), never by the size of the input. */
#ifndef FHIR_NDJSON_H
#define FHIR_NDJSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "fhir_error.h"
#include "fhir_json.h"
#include "fhir_node.h"

/* Called once per parsed line. res is borrowed and valid only during the call (the arena
 * is reset after each line; the lines are parsed on one fhir_json_reader). Return 0 to
 * continue, non-zero to stop the stream; err is the error the feed / finish / read call was
 * given (emptied before the call): what the callback sets there (the cause of the stop) is what
 * that call returns with. */
typedef int (*fhir_ndjson_cb)(void *ud, const fhir_node *res, size_t line_no, fhir_error *err);

/* Called for a line that fails to parse; err names the line. Return 0 to skip the line and
 * continue (counted in stats.bad), non-zero to stop with that error. NULL = stop. */
typedef int (*fhir_ndjson_err_cb)(void *ud, size_t line_no, const fhir_error *err);

typedef struct fhir_ndjson_stats {
    size_t lines;      /* non-blank lines seen */
    size_t ok;         /* delivered to the callback */
    size_t bad;        /* skipped after a parse error */
    size_t bytes;      /* input bytes consumed */
} fhir_ndjson_stats;

typedef struct fhir_ndjson fhir_ndjson;

/* Caller frees with fhir_ndjson_free(). lim->max_bytes caps a single line. */
fhir_ndjson *fhir_ndjson_new(const fhir_json_limits *lim, fhir_ndjson_cb cb,
                             fhir_ndjson_err_cb on_error, void *ud);
void fhir_ndjson_free(fhir_ndjson *r);

/* Push interface: feed bytes as they arrive, then finish (handles a last line without a
 * newline). Return 0, or -1 with err set when stopped by an error or by the callback (then
 * err holds what the callback set: its cause, or empty when it set nothing). */
int fhir_ndjson_feed(fhir_ndjson *r, const char *data, size_t len, fhir_error *err);
int fhir_ndjson_finish(fhir_ndjson *r, fhir_error *err);

/* Pull helpers: read a whole FILE / path ("-" = stdin) in 64 KiB chunks. */
int fhir_ndjson_read_file(fhir_ndjson *r, FILE *f, fhir_error *err);
int fhir_ndjson_read_path(fhir_ndjson *r, const char *path, fhir_error *err);

/* Borrowed; counters so far. */
const fhir_ndjson_stats *fhir_ndjson_stats_get(const fhir_ndjson *r);

#endif
