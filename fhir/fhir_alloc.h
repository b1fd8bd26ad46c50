/* fhir_alloc — the never-fail allocators (prefix fhir_x).
 *
 * Out of memory is a broken invariant in cartgate (see the project's error rules): these
 * wrappers write one line to stderr and abort instead of returning NULL, so callers never
 * test the result. Sizes of 0 allocate 1 byte, so the result is never NULL either.
 * Everything they return is malloc'd: the caller frees it with free(). Bounded growth is
 * still the caller's job (every growable buffer has a named cap). */
#ifndef FHIR_ALLOC_H
#define FHIR_ALLOC_H

#include <stddef.h>

/* malloc(n); caller frees. */
void *fhir_xmalloc(size_t n);
/* calloc(n, size) (overflow of n * size aborts too); caller frees. */
void *fhir_xcalloc(size_t n, size_t size);
/* realloc(p, n); p is consumed, caller frees the result. */
void *fhir_xrealloc(void *p, size_t n);
/* realloc(p, n * size) with overflow of n * size checked; caller frees the result. */
void *fhir_xreallocarray(void *p, size_t n, size_t size);
/* Copy of s; NULL when s is NULL. Caller frees. */
char *fhir_xstrdup(const char *s);
/* NUL-terminated copy of s[0..n) (s need not be terminated); caller frees. */
char *fhir_xstrndup(const char *s, size_t n);

#endif
