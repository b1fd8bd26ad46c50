/* fhir_arena — bump allocator that owns parse trees.
 * Everything allocated from an arena lives until fhir_arena_reset() or fhir_arena_free().
 * An arena may carry a byte cap; allocation past the cap fails (returns NULL) so a hostile
 * document cannot grow memory without bound. Out-of-memory from the OS aborts. */
#ifndef FHIR_ARENA_H
#define FHIR_ARENA_H

#include <stddef.h>

typedef struct fhir_arena fhir_arena;

/* Caller frees with fhir_arena_free(). cap_bytes == 0 means no cap. */
fhir_arena *fhir_arena_new(size_t cap_bytes);
void fhir_arena_free(fhir_arena *a);

/* Releases every allocation but keeps the first block for reuse (cheap per-resource reset). */
void fhir_arena_reset(fhir_arena *a);

/* Borrowed, valid until the arena is reset. 8-byte aligned. NULL only when the cap is hit. */
void *fhir_arena_alloc(fhir_arena *a, size_t n);
/* Same, zero-filled. */
void *fhir_arena_calloc(fhir_arena *a, size_t n);
/* NUL-terminated copy of s[0..n). Borrowed, valid until the arena is reset. NULL at cap. */
char *fhir_arena_strndup(fhir_arena *a, const char *s, size_t n);
char *fhir_arena_strdup(fhir_arena *a, const char *s);
/* printf into the arena. NULL at cap. */
char *fhir_arena_sprintf(fhir_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Bytes handed out since the last reset, and the cap (0 = none). */
size_t fhir_arena_used(const fhir_arena *a);
size_t fhir_arena_cap(const fhir_arena *a);

#endif
