/* fhir_arena — chunked bump allocator. Blocks are chained; reset keeps the first block
 * (and its size) so a per-resource reset costs nothing on the hot path. */
#include "fhir_arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_alloc.h"

#define ARENA_BLOCK_MIN (64u * 1024u)

typedef struct block {
    struct block *next;
    size_t size;  /* usable bytes in data[] */
    max_align_t data[];
} block;

struct fhir_arena {
    block *head;   /* current block (most recent) */
    block *first;  /* oldest block, kept on reset */
    char *cur;     /* next free byte of head (NULL before the first block) */
    char *lim;     /* cur may grow up to here: head's end, or sooner where the cap is reached */
    size_t done;   /* bytes handed out in the blocks before head since reset */
    size_t cap;
};

static block *block_new(size_t size)
{
    block *b = fhir_xmalloc(sizeof *b + size); /* out of memory is a broken invariant here */
    b->next = NULL;
    b->size = size;
    return b;
}

fhir_arena *fhir_arena_new(size_t cap_bytes)
{
    fhir_arena *a = fhir_xcalloc(1, sizeof *a);
    a->cap = cap_bytes;
    return a;
}

void fhir_arena_free(fhir_arena *a)
{
    if (!a)
        return;
    /* blocks are chained newest -> oldest through next */
    for (block *b = a->head; b;) {
        block *n = b->next;
        free(b);
        b = n;
    }
    free(a);
}

size_t fhir_arena_used(const fhir_arena *a)
{
    return a->done + (a->head ? (size_t)(a->cur - (char *)a->head->data) : 0);
}

/* cur at the start of block b (or where it is in it): lim = b's end, or the cap's point. */
static void set_lim(fhir_arena *a)
{
    char *end = (char *)a->head->data + a->head->size;
    a->lim = end;
    if (a->cap) {
        size_t used = fhir_arena_used(a);
        size_t room = a->cap > used ? a->cap - used : 0;
        if (room < (size_t)(end - a->cur))
            a->lim = a->cur + room;
    }
}

void fhir_arena_reset(fhir_arena *a)
{
    block *b = a->head;
    while (b && b != a->first) {
        block *n = b->next;
        free(b);
        b = n;
    }
    a->head = a->first;
    a->done = 0;
    if (a->first) {
        a->cur = (char *)a->first->data;
        set_lim(a);
    } else {
        a->cur = a->lim = NULL;
    }
}

/* What does not fit between cur and lim: past the cap, or a new block. */
static void *alloc_slow(fhir_arena *a, size_t n)
{
    size_t used = fhir_arena_used(a);
    if (a->cap && (n > a->cap || used > a->cap - n))
        return NULL;
    block *b = a->head;
    if (!b || (size_t)((char *)b->data + b->size - a->cur) < n) {
        size_t size = ARENA_BLOCK_MIN;
        if (b && b->size < (1u << 20))
            size = b->size * 2; /* grow geometrically up to 1 MiB blocks */
        else if (b)
            size = b->size;
        if (size < n)
            size = n;
        block *nb = block_new(size);
        nb->next = b;
        a->head = nb;
        if (!a->first)
            a->first = nb;
        a->done = used;
        a->cur = (char *)nb->data;
    }
    void *p = a->cur;
    a->cur += n;
    set_lim(a);
    return p;
}

void *fhir_arena_alloc(fhir_arena *a, size_t n)
{
    n = (n + 7u) & ~(size_t)7u;
    if (n == 0)
        n = 8;
    /* the usual case: it fits before lim (within the block and the cap); compared as
     * integers, as cur and lim are both NULL before the first block */
    uintptr_t c = (uintptr_t)a->cur;
    if (n <= (uintptr_t)a->lim - c) {
        a->cur += n;
        return (void *)c;
    }
    return alloc_slow(a, n);
}

void *fhir_arena_calloc(fhir_arena *a, size_t n)
{
    void *p = fhir_arena_alloc(a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

char *fhir_arena_strndup(fhir_arena *a, const char *s, size_t n)
{
    char *p = fhir_arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *fhir_arena_strdup(fhir_arena *a, const char *s)
{
    return fhir_arena_strndup(a, s, strlen(s));
}

char *fhir_arena_sprintf(fhir_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *p = fhir_arena_alloc(a, (size_t)n + 1);
    if (!p)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

size_t fhir_arena_cap(const fhir_arena *a) { return a->cap; }
