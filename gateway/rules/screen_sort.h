/* screen_sort — rows (one per patient) handed back in patient-id order whatever order they were
 * added in, in bounded memory: rows are kept up to a byte cap, then sorted and written to a
 * temporary file as a run; reading merges the runs. Rows that arrive in key order (a sorted
 * input) are written on in chunks of SCREEN_SORT_CHUNK bytes as one run, the buffer reused
 * (when no temporary file can be made they are kept up to the cap, as rows out of order are).
 * Offline screening adds a row per patient as the stream delivers them and prints them sorted,
 * as `cartgate screen` always has.
 *
 *   screen_sort *s = screen_sort_new(0, NULL);
 *   screen_sort_add(s, "p1", row, len, &err);   // any order
 *   screen_sort_each(s, print_row, ud, &err);   // "p0", "p1", ... (byte order of the ids)
 *   screen_sort_free(s);
 */
#ifndef SCREEN_SORT_H
#define SCREEN_SORT_H

#include <stddef.h>

#include "fhir_error.h"

#define SCREEN_SORT_MEM_DEFAULT (8u << 20) /* bytes of rows kept before a run is written */
#define SCREEN_SORT_CHUNK (256u << 10)     /* rows added in key order: bytes kept before they are
                                            * written on (or the mem cap, if smaller) */
#define SCREEN_SORT_READ_BUF (32u << 10)   /* read buffer of each run while merging */
#define SCREEN_SORT_MAX_MERGE 64           /* runs merged at once (more: merged in passes first) */

typedef struct screen_sort screen_sort;

/* mem_cap: bytes of rows kept in memory (0 = SCREEN_SORT_MEM_DEFAULT); tmp_dir: where runs
 * go (NULL = $TMPDIR, else /tmp; files are unlinked at once). Caller frees with
 * screen_sort_free(). */
screen_sort *screen_sort_new(size_t mem_cap, const char *tmp_dir);
void screen_sort_free(screen_sort *s);

/* Adds a row (row may hold any bytes, NULs included) under key. Returns 0, or -1 with err
 * set (a run could not be written). */
int screen_sort_add(screen_sort *s, const char *key, const char *row, size_t len,
                    fhir_error *err);
/* Forgets every row added so far (the input is being read again). */
void screen_sort_clear(screen_sort *s);

/* Calls fn per row in key order (byte order, as strcmp; equal keys in the order added).
 * key and row are borrowed during the call. May be called again (same rows, same order);
 * rows added afterwards join the next call. A non-zero fn return stops and is returned;
 * -1 with err set on a read error. */
typedef int (*screen_sort_fn)(void *ud, const char *key, const char *row, size_t len);
int screen_sort_each(screen_sort *s, screen_sort_fn fn, void *ud, fhir_error *err);

/* Rows added, and runs written to the temporary file so far (before any merge pass). */
size_t screen_sort_count(const screen_sort *s);
size_t screen_sort_runs(const screen_sort *s);
/* Bytes of rows held in memory now (not yet written to a run). */
size_t screen_sort_held(const screen_sort *s);

#endif
