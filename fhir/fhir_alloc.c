/* fhir_alloc — the never-fail allocators: abort on out-of-memory (see fhir_alloc.h). */
#include "fhir_alloc.h"

#include <stdint.h>
#ifdef __GLIBC__
#include <malloc.h> /* mallopt */
#endif
#ifdef __linux__
#include <sys/mman.h> /* madvise */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *must(void *p, size_t n)
{
    if (!p) {
        fprintf(stderr, "cartgate: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

void *fhir_xmalloc(size_t n)
{
    return must(malloc(n ? n : 1), n);
}

void *fhir_xcalloc(size_t n, size_t size)
{
    return must(calloc(n ? n : 1, size ? size : 1), n * size);
}

void *fhir_xrealloc(void *p, size_t n)
{
    return must(realloc(p, n ? n : 1), n);
}

void *fhir_xreallocarray(void *p, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        must(NULL, SIZE_MAX);
    return fhir_xrealloc(p, n * size);
}

char *fhir_xstrdup(const char *s)
{
    return s ? fhir_xstrndup(s, strlen(s)) : NULL;
}

char *fhir_xstrndup(const char *s, size_t n)
{
    char *d = fhir_xmalloc(n + 1);
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

size_t fhir_alloc_heap_setup(size_t reserve_bytes, size_t mmap_bytes, size_t trim_bytes)
{
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, (int)(mmap_bytes < (32u << 20) ? mmap_bytes : (32u << 20)));
    mallopt(M_TRIM_THRESHOLD, (int)(trim_bytes < (1u << 30) ? trim_bytes : (1u << 30)));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    /* a block below the mmap threshold is carved from the heap (brk); advised and freed, it
     * stays the heap's top (trim_bytes keeps it) and the next allocations are carved from it */
    size_t cap = mmap_bytes > (1u << 20) ? mmap_bytes - (1u << 20) : 0;
    if (cap > (31u << 20))
        cap = 31u << 20;
    size_t r = reserve_bytes < cap ? reserve_bytes : cap;
    if (r < (4u << 20) || trim_bytes < r)
        return 0;
    char *p = malloc(r);
    if (!p)
        return 0;
    uintptr_t lo = ((uintptr_t)p + 4095u) & ~(uintptr_t)4095u;
    uintptr_t hi = ((uintptr_t)p + r) & ~(uintptr_t)4095u;
    size_t advised = madvise((void *)lo, hi - lo, MADV_HUGEPAGE) == 0 ? hi - lo : 0;
    free(p);
    return advised;
#else
    (void)reserve_bytes;
    return 0;
#endif
#else
    (void)reserve_bytes;
    (void)mmap_bytes;
    (void)trim_bytes;
    return 0;
#endif
}
