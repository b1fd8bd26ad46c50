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

/* The heap of an allocation-heavy process (the daemon, offline screening), set up once, early,
 * on the main thread, before the big allocations:
 * - blocks below mmap_bytes come from the heap and freed memory up to trim_bytes stays in it,
 *   so arenas and buffers freed and taken again (every search page, every patient) reuse
 *   memory already mapped instead of returning it to the kernel and faulting it in again;
 * - the first reserve_bytes of the heap (at most mmap_bytes - 1 MiB) are advised onto
 *   transparent huge pages (madvise MADV_HUGEPAGE): where the kernel offers them (THP
 *   "madvise" or "always"), touching new heap costs one fault per 2 MiB instead of 512; with
 *   THP "never" (the operator's choice) nothing changes. Memory is only taken when touched.
 * Not on glibc/Linux: does nothing. Returns the bytes advised (0 when none). */
size_t fhir_alloc_heap_setup(size_t reserve_bytes, size_t mmap_bytes, size_t trim_bytes);

#endif
