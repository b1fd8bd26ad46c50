/* screen_sort — rows in patient-id order in bounded memory (sorted runs, merged). See
 * screen_sort.h. Record layout, in memory and in runs: [u32 key len][key][NUL][u32 row len][row]. */
#include "screen_sort.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fhir_buf.h"

typedef struct slot {
    size_t off;            /* record offset in mem */
    size_t seq;
} slot;

typedef struct run {
    int fd;
    uint64_t size;
} run;

struct screen_sort {
    size_t cap;
    char *tmp_dir;
    fhir_buf mem;
    slot *idx;
    size_t n, capidx;
    run *runs;
    size_t nruns;
    size_t count;
};

static void *fhir_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

screen_sort *screen_sort_new(size_t mem_cap, const char *tmp_dir)
{
    screen_sort *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->cap = mem_cap ? mem_cap : SCREEN_SORT_MEM_DEFAULT;
    if (tmp_dir) {
        s->tmp_dir = strdup(tmp_dir);
        if (!s->tmp_dir)
            abort();
    }
    fhir_buf_init(&s->mem, 0);
    return s;
}

void screen_sort_clear(screen_sort *s)
{
    for (size_t i = 0; i < s->nruns; i++)
        close(s->runs[i].fd);
    s->nruns = 0;
    s->n = 0;
    s->count = 0;
    fhir_buf_reset(&s->mem);
}

void screen_sort_free(screen_sort *s)
{
    if (!s)
        return;
    screen_sort_clear(s);
    free(s->runs);
    free(s->idx);
    free(s->tmp_dir);
    fhir_buf_free(&s->mem);
    free(s);
}

size_t screen_sort_count(const screen_sort *s) { return s->count; }
size_t screen_sort_runs(const screen_sort *s) { return s->nruns; }

static const char *mem_key(const screen_sort *s, const slot *x)
{
    return s->mem.data + x->off + 4;
}

static const screen_sort *sort_ctx;

static int cmp_slot(const void *a, const void *b)
{
    const slot *x = a, *y = b;
    int c = strcmp(mem_key(sort_ctx, x), mem_key(sort_ctx, y));
    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

static void sort_mem(screen_sort *s)
{
    sort_ctx = s;
    if (s->n > 1)
        qsort(s->idx, s->n, sizeof *s->idx, cmp_slot);
    sort_ctx = NULL;
}

/* A record at p: its key, row and total size. */
static size_t rec_parse(const char *p, const char **key, const char **row, size_t *len)
{
    uint32_t kl, rl;
    memcpy(&kl, p, 4);
    *key = p + 4;
    memcpy(&rl, p + 4 + kl + 1, 4);
    *row = p + 4 + kl + 1 + 4;
    *len = rl;
    return 4 + (size_t)kl + 1 + 4 + rl;
}

static int write_all(int fd, const char *p, size_t n, fhir_error *err)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return fhir_error_set(err, "sort run: write error: %s",
                                  w < 0 ? strerror(errno) : "short write");
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes the rows in memory, sorted, as a new run. */
static int spill(screen_sort *s, fhir_error *err)
{
    if (!s->n)
        return 0;
    const char *dir = s->tmp_dir ? s->tmp_dir : getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/cartgate-sort-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0)
        return fhir_error_set(err, "sort run in %s: %s", dir, strerror(errno));
    unlink(path);
    sort_mem(s);
    fhir_buf out;
    fhir_buf_init(&out, 0);
    uint64_t size = 0;
    int rc = 0;
    for (size_t i = 0; i < s->n && !rc; i++) {
        const char *k, *row;
        size_t len;
        size_t total = rec_parse(s->mem.data + s->idx[i].off, &k, &row, &len);
        fhir_buf_append(&out, s->mem.data + s->idx[i].off, total);
        size += total;
        if (out.len >= (64u << 10)) {
            rc = write_all(fd, out.data, out.len, err);
            fhir_buf_reset(&out);
        }
    }
    if (!rc && out.len)
        rc = write_all(fd, out.data, out.len, err);
    fhir_buf_free(&out);
    if (rc) {
        close(fd);
        return -1;
    }
    s->runs = fhir_xrealloc(s->runs, (s->nruns + 1) * sizeof *s->runs);
    s->runs[s->nruns++] = (run){fd, size};
    s->n = 0;
    fhir_buf_reset(&s->mem);
    return 0;
}

int screen_sort_add(screen_sort *s, const char *key, const char *row, size_t len,
                    fhir_error *err)
{
    uint32_t kl = (uint32_t)strlen(key), rl = (uint32_t)len;
    if (s->n == s->capidx)
        s->idx = fhir_xrealloc(s->idx, (s->capidx = s->capidx ? s->capidx * 2 : 1024) * sizeof *s->idx);
    s->idx[s->n] = (slot){s->mem.len, s->count};
    s->n++;
    s->count++;
    fhir_buf_append(&s->mem, &kl, 4);
    fhir_buf_append(&s->mem, key, kl + 1u);
    fhir_buf_append(&s->mem, &rl, 4);
    fhir_buf_append(&s->mem, row, len);
    if (s->mem.len > s->cap)
        return spill(s, err);
    return 0;
}

/* ---- merging ------------------------------------------------------------------------------ */

typedef struct reader {
    int fd;
    uint64_t off, size;
    char *buf;
    size_t cap, beg, end;
    const char *key, *row;
    size_t len;
    size_t run;
} reader;

/* Loads the next record into r->key / row: 1, 0 at the end, -1 on a read error. */
static int rd_next(reader *r, fhir_error *err)
{
    size_t need = 4;
    for (int phase = 0; phase < 3; phase++) {
        while (r->end - r->beg < need) {
            if (r->beg) {
                memmove(r->buf, r->buf + r->beg, r->end - r->beg);
                r->end -= r->beg;
                r->beg = 0;
            }
            if (need > r->cap)
                r->buf = fhir_xrealloc(r->buf, r->cap = need);
            if (r->off >= r->size)
                return r->end == r->beg && phase == 0
                           ? 0
                           : fhir_error_set(err, "sort run: truncated");
            ssize_t got = pread(r->fd, r->buf + r->end, r->cap - r->end, (off_t)r->off);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0)
                return fhir_error_set(err, "sort run: read error: %s",
                                      got < 0 ? strerror(errno) : "end of file");
            r->end += (size_t)got;
            r->off += (uint64_t)got;
        }
        const char *p = r->buf + r->beg;
        uint32_t kl, rl;
        memcpy(&kl, p, 4);
        if (phase == 0) {
            need = 4 + (size_t)kl + 1 + 4;
        } else if (phase == 1) {
            memcpy(&rl, p + 4 + kl + 1, 4);
            need = 4 + (size_t)kl + 1 + 4 + rl;
        }
    }
    size_t total = rec_parse(r->buf + r->beg, &r->key, &r->row, &r->len);
    r->beg += total;
    return 1;
}

static bool rd_less(const reader *a, const reader *b)
{
    int c = strcmp(a->key, b->key);
    return c < 0 || (c == 0 && a->run < b->run);
}

static void sift(reader **h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && rd_less(h[l], h[m]))
            m = l;
        if (r < n && rd_less(h[r], h[m]))
            m = r;
        if (m == i)
            return;
        reader *t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

int screen_sort_each(screen_sort *s, screen_sort_fn fn, void *ud, fhir_error *err)
{
    if (!s->nruns) { /* everything in memory */
        sort_mem(s);
        for (size_t i = 0; i < s->n; i++) {
            const char *k, *row;
            size_t len;
            rec_parse(s->mem.data + s->idx[i].off, &k, &row, &len);
            int rc = fn(ud, k, row, len);
            if (rc)
                return rc;
        }
        return 0;
    }
    if (spill(s, err))
        return -1;
    reader *rd = calloc(s->nruns, sizeof *rd);
    reader **heap = calloc(s->nruns, sizeof *heap);
    if (!rd || !heap)
        abort();
    size_t nh = 0;
    int rc = 0;
    for (size_t i = 0; i < s->nruns && !rc; i++) {
        rd[i] = (reader){s->runs[i].fd, 0, s->runs[i].size, fhir_xrealloc(NULL, SCREEN_SORT_READ_BUF),
                         SCREEN_SORT_READ_BUF, 0, 0, NULL, NULL, 0, i};
        int got = rd_next(&rd[i], err);
        if (got < 0)
            rc = -1;
        else if (got)
            heap[nh++] = &rd[i];
    }
    for (size_t i = nh / 2; i-- > 0;)
        sift(heap, nh, i);
    while (!rc && nh) {
        reader *top = heap[0];
        rc = fn(ud, top->key, top->row, top->len);
        if (rc)
            break;
        int got = rd_next(top, err);
        if (got < 0) {
            rc = -1;
            break;
        }
        if (!got)
            heap[0] = heap[--nh];
        sift(heap, nh, 0);
    }
    for (size_t i = 0; i < s->nruns; i++)
        free(rd[i].buf);
    free(rd);
    free(heap);
    return rc;
}
