/* screen_sort — rows in patient-id order in bounded memory (sorted runs, merged). See
 * screen_sort.h. Record layout, in memory and in runs: [u32 key len][key][NUL][u32 row len][row].
 * Every run is a stretch of one temporary file (one descriptor however many runs); more than
 * SCREEN_SORT_MAX_MERGE runs are merged in passes into a second file first, so the final merge
 * holds at most SCREEN_SORT_MAX_MERGE read buffers. */
#include "screen_sort.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fhir_alloc.h"
#include "fhir_buf.h"

typedef struct slot {
    size_t off;            /* record offset in mem */
    size_t seq;
} slot;

typedef struct run {
    uint64_t off, size;    /* a stretch of the run file */
} run;

struct screen_sort {
    size_t cap;
    char *tmp_dir;
    fhir_buf mem;
    slot *idx;
    size_t n, capidx;
    run *runs;
    size_t nruns;
    size_t written;        /* runs written since the last clear (screen_sort_runs) */
    int fd;                /* the run file (-1: none yet) */
    uint64_t fd_end;       /* its size */
    size_t count;
    /* rows added in key order so far (since the last clear): runs are written as they are and
     * one run continues the one before (sorted input, e.g. map_stream's sorted merge) */
    bool in_order;
    bool no_chunks;        /* no temporary file could be made for a chunk: rows kept up to the
                            * cap, as for rows out of order (the cap's spill reports it) */
    char *last;            /* the last key added */
    size_t last_cap;
};

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
    s->fd = -1;
    s->in_order = true;
    return s;
}

void screen_sort_clear(screen_sort *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->fd_end = 0;
    s->nruns = 0;
    s->written = 0;
    s->n = 0;
    s->count = 0;
    s->in_order = true;
    s->no_chunks = false;
    fhir_buf_reset(&s->mem);
}

void screen_sort_free(screen_sort *s)
{
    if (!s)
        return;
    screen_sort_clear(s);
    free(s->runs);
    free(s->idx);
    free(s->last);
    free(s->tmp_dir);
    fhir_buf_free(&s->mem);
    free(s);
}

size_t screen_sort_count(const screen_sort *s) { return s->count; }
size_t screen_sort_runs(const screen_sort *s) { return s->written; }
size_t screen_sort_held(const screen_sort *s) { return s->mem.len; }

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

/* A new temporary file, already unlinked: its descriptor, or -1 with err set. */
static int temp_file(const screen_sort *s, fhir_error *err)
{
    const char *dir = s->tmp_dir ? s->tmp_dir : getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/cartgate-sort-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0)
        return fhir_error_set(err, "sort run in %s: %s", dir, strerror(errno));
    unlink(path);
    return fd;
}

static void add_run(screen_sort *s, uint64_t off, uint64_t size)
{
    s->runs = fhir_xrealloc(s->runs, (s->nruns + 1) * sizeof *s->runs);
    s->runs[s->nruns++] = (run){off, size};
}

/* Writes the rows in memory, sorted, as a new run at the end of the run file. */
static int spill(screen_sort *s, fhir_error *err)
{
    if (!s->n)
        return 0;
    if (s->fd < 0 && (s->fd = temp_file(s, err)) < 0)
        return -1;
    int fd = s->fd;
    if (s->in_order) { /* the records are in key order as they lie in memory */
        if (write_all(fd, s->mem.data, s->mem.len, err)) {
            if (lseek(fd, (off_t)s->fd_end, SEEK_SET) < 0) {
                close(s->fd);
                s->fd = -1;
                s->nruns = 0;
            }
            return -1;
        }
        if (s->nruns) /* continues the run before */
            s->runs[s->nruns - 1].size += s->mem.len;
        else
            add_run(s, s->fd_end, s->mem.len);
        s->fd_end += s->mem.len;
        s->written++;
        s->n = 0;
        fhir_buf_reset(&s->mem);
        return 0;
    }
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
        if (lseek(fd, (off_t)s->fd_end, SEEK_SET) < 0) { /* drop the partial run */
            close(s->fd);
            s->fd = -1; /* the runs so far are lost with it: the caller reports err */
            s->nruns = 0;
        }
        return -1;
    }
    add_run(s, s->fd_end, size);
    s->fd_end += size;
    s->written++;
    s->n = 0;
    fhir_buf_reset(&s->mem);
    return 0;
}

int screen_sort_add(screen_sort *s, const char *key, const char *row, size_t len,
                    fhir_error *err)
{
    uint32_t kl = (uint32_t)strlen(key), rl = (uint32_t)len;
    if (s->in_order) {
        if (s->count && strcmp(s->last, key) > 0)
            s->in_order = false;
        else {
            if (kl + 1u > s->last_cap)
                s->last = fhir_xrealloc(s->last, s->last_cap = kl + 1u);
            memcpy(s->last, key, kl + 1u);
        }
    }
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
    /* in key order the rows can go on as they are, one chunk after the other: the buffer stays
     * small and is reused (growing it to the cap cost realloc copies and page faults) */
    if (s->in_order && !s->no_chunks && s->mem.len >= SCREEN_SORT_CHUNK) {
        bool had_file = s->fd >= 0;
        if (spill(s, err)) {
            if (had_file || s->fd >= 0)
                return -1; /* a write error */
            s->no_chunks = true; /* no temporary file: what fits under the cap stays here */
        }
    }
    return 0;
}

/* ---- merging ------------------------------------------------------------------------------ */

typedef struct reader {
    int fd;
    uint64_t off, lim;     /* next byte to read, end of the run (file offsets) */
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
            if (r->off >= r->lim)
                return r->end == r->beg && phase == 0
                           ? 0
                           : fhir_error_set(err, "sort run: truncated");
            size_t want = r->cap - r->end;
            if (want > r->lim - r->off)
                want = (size_t)(r->lim - r->off);
            ssize_t got = pread(r->fd, r->buf + r->end, want, (off_t)r->off);
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

/* Calls fn per record of runs[0..n) of fd, in key order (equal keys: earlier run first). */
static int merge(int fd, const run *runs, size_t n, screen_sort_fn fn, void *ud, fhir_error *err)
{
    reader *rd = calloc(n ? n : 1, sizeof *rd);
    reader **heap = calloc(n ? n : 1, sizeof *heap);
    if (!rd || !heap)
        abort();
    size_t nh = 0;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        rd[i] = (reader){fd, runs[i].off, runs[i].off + runs[i].size, fhir_xrealloc(NULL, SCREEN_SORT_READ_BUF),
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
    for (size_t i = 0; i < n; i++)
        free(rd[i].buf);
    free(rd);
    free(heap);
    return rc;
}

/* A merge pass writes its output here, buffered. */
typedef struct pass_out {
    int fd;
    fhir_buf buf;
    uint64_t size;
    fhir_error *err;
} pass_out;

static int pass_flush(pass_out *o)
{
    int rc = o->buf.len ? write_all(o->fd, o->buf.data, o->buf.len, o->err) : 0;
    fhir_buf_reset(&o->buf);
    return rc;
}

static int pass_put(void *ud, const char *key, const char *row, size_t len)
{
    pass_out *o = ud;
    uint32_t kl = (uint32_t)strlen(key), rl = (uint32_t)len;
    fhir_buf_append(&o->buf, &kl, 4);
    fhir_buf_append(&o->buf, key, kl + 1u);
    fhir_buf_append(&o->buf, &rl, 4);
    fhir_buf_append(&o->buf, row, len);
    o->size += 4 + (uint64_t)kl + 1 + 4 + rl;
    return o->buf.len >= (64u << 10) ? pass_flush(o) : 0;
}

/* Merges every SCREEN_SORT_MAX_MERGE consecutive runs into one run of a new file, which
 * replaces the run file (run order, and so the order of equal keys, is kept). */
static int merge_pass(screen_sort *s, fhir_error *err)
{
    int fd = temp_file(s, err);
    if (fd < 0)
        return -1;
    size_t n = (s->nruns + SCREEN_SORT_MAX_MERGE - 1) / SCREEN_SORT_MAX_MERGE;
    run *merged = fhir_xrealloc(NULL, n * sizeof *merged);
    pass_out o = {fd, {0}, 0, err};
    fhir_buf_init(&o.buf, 0);
    uint64_t end = 0;
    int rc = 0;
    for (size_t g = 0; g < n && !rc; g++) {
        size_t lo = g * SCREEN_SORT_MAX_MERGE, k = s->nruns - lo;
        if (k > SCREEN_SORT_MAX_MERGE)
            k = SCREEN_SORT_MAX_MERGE;
        o.size = 0;
        rc = merge(s->fd, s->runs + lo, k, pass_put, &o, err);
        if (rc > 0)
            rc = -1; /* pass_put's write error, err set */
        if (!rc)
            rc = pass_flush(&o);
        merged[g] = (run){end, o.size};
        end += o.size;
    }
    fhir_buf_free(&o.buf);
    if (rc) {
        close(fd);
        free(merged);
        return -1;
    }
    close(s->fd);
    free(s->runs);
    s->fd = fd;
    s->fd_end = end;
    s->runs = merged;
    s->nruns = n;
    return 0;
}

int screen_sort_each(screen_sort *s, screen_sort_fn fn, void *ud, fhir_error *err)
{
    if (!s->nruns) { /* everything in memory */
        if (!s->in_order)
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
    while (s->nruns > SCREEN_SORT_MAX_MERGE)
        if (merge_pass(s, err))
            return -1;
    return merge(s->fd, s->runs, s->nruns, fn, ud, err);
}
