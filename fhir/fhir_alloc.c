/* fhir_alloc — the never-fail allocators: abort on out-of-memory (see fhir_alloc.h). */
#include "fhir_alloc.h"

#include <stdint.h>
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
