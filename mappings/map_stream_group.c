/* map_stream_group — grouping for map_stream (see map_stream_int.h): resources held as text
 * while they fit the budget, else partitioned by patient into spill files grouped one by
 * one; Bundles cut into entries by a cheap scan. */
#include "map_stream_int.h"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "fhir_xml.h"
#include "map_group.h"
#include "map_profile.h"
#include "map_scan.h"

static int spill_write(ms *m, spill *p, const void *d, size_t n)
{
    if (p->n + n > MAP_STREAM_SPILL_BUF) {
        if (map_stream_write_all(m, p->fd, p->buf, p->n))
            return -1;
        p->n = 0;
    }
    if (n > MAP_STREAM_SPILL_BUF) {
        if (map_stream_write_all(m, p->fd, d, n))
            return -1;
    } else {
        memcpy(p->buf + p->n, d, n);
        p->n += n;
    }
    p->size += n;
    m->st->spill_bytes += n;
    return 0;
}

static int spill_flush(ms *m, spill *p)
{
    if (p->n && map_stream_write_all(m, p->fd, p->buf, p->n))
        return -1;
    p->n = 0;
    return 0;
}

static int spills_open(ms *m, spill **out, size_t n)
{
    spill *p = calloc(n, sizeof *p);
    if (!p)
        abort();
    *out = p;
    for (size_t i = 0; i < n; i++) {
        p[i].fd = -1;
        if ((p[i].fd = map_stream_temp_fd(m)) < 0)
            return -1;
        p[i].buf = xrealloc(NULL, MAP_STREAM_SPILL_BUF);
        m->st->spill_files++;
    }
    return 0;
}

static void spills_close(spill *p, size_t n)
{
    for (size_t i = 0; p && i < n; i++) {
        if (p[i].fd >= 0)
            close(p[i].fd);
        free(p[i].buf);
    }
    free(p);
}

/* Writes one keyed resource to its spill file: [u32 key len][key][u32 len][u64 pos][text]. */
static int spill_rec(ms *m, spill *parts, size_t np, uint64_t seed, const char *key,
                     size_t kl, const char *raw, size_t len, uint64_t pos)
{
    spill *p = &parts[hash_key(key, kl, seed) % np];
    uint32_t a = (uint32_t)kl, b = (uint32_t)len;
    if (spill_write(m, p, &a, sizeof a) || spill_write(m, p, key, kl) ||
        spill_write(m, p, &b, sizeof b) || spill_write(m, p, &pos, sizeof pos) ||
        spill_write(m, p, raw, len))
        return -1;
    return 0;
}

static int rec_push(ms *m, const char *key, size_t kl, const char *raw, size_t len, uint64_t pos)
{
    if (m->nrecs == m->caprecs) {
        m->caprecs = m->caprecs ? m->caprecs * 2 : 1024;
        m->recs = xrealloc(m->recs, m->caprecs * sizeof *m->recs);
    }
    char *k = fhir_arena_strndup(m->hold, key, kl);
    char *t = fhir_arena_alloc(m->hold, len ? len : 1);
    if (!k || !t)
        abort();
    memcpy(t, raw, len);
    m->recs[m->nrecs] = (rec){k, NULL, t, len, m->nrecs, pos};
    m->nrecs++;
    return fhir_arena_used(m->hold) + m->nrecs * sizeof *m->recs > m->o.budget ? GROUP_OVER
                                                                                : GROUP_OK;
}

/* One resource of the input (its text raw, and its tree res when it has been parsed, e.g. a
 * Bundle entry; pos: its rec.pos): a Medication goes to the table; another type the profile
 * reads is kept as text under its patient, in memory or in its spill file, and parsed when
 * the patient is delivered. A line is parsed here only when a scan cannot tell its patient. */
static int take(ms *m, const char *type, size_t tl, const char *raw, size_t len,
                const fhir_node *res, const char *url, size_t url_len, const scope *sc,
                uint64_t pos)
{
    if (!type || !map_profile_reads(type, tl))
        return GROUP_OK;
    if (!raw) {
        fhir_buf_reset(&m->tmp);
        fhir_json_write(&m->tmp, res, FHIR_JSON_COMPACT);
        raw = m->tmp.data ? m->tmp.data : "";
        len = m->tmp.len;
    }
    fhir_error pe;
    fhir_arena *a = m->scratch;
    const char *key = NULL;
    int k = res || is_type(type, tl, "Medication") ? -1 : map_stream_key_scan(raw, len, type, tl, sc, a, &key);
    if (k <= 0 && !res) { /* the parser decides: a Medication, no patient, or unscannable */
        res = map_stream_parse(m, a, raw, len, &pe);
        if (!res || res->kind != FHIR_OBJECT) {
            m->st->bad_lines++;
            return GROUP_OK;
        }
    }
    m->st->resources++;
    if (is_type(type, tl, "Medication"))
        return map_stream_med_add(m, res, raw, len, url, url_len) ? GROUP_FAIL : GROUP_OK;
    if (k < 0)
        key = map_stream_key_of(res, fhir_node_resource_type(res), sc, a);
    if (!key) {
        m->st->orphans++;
        return GROUP_OK;
    }
    if (!m->spilling)
        return rec_push(m, key, strlen(key), raw, len, pos);
    return spill_rec(m, m->parts, m->nparts, 0, key, strlen(key), raw, len, pos) ? GROUP_FAIL
                                                                                : GROUP_OK;
}

/* Entries of one document (scanned spans or parsed trees), flattened through nested
 * Bundles. */
typedef struct dent {
    const char *res;       /* text span (scanned) */
    size_t len;
    const fhir_node *node; /* parsed tree */
    const char *type;
    size_t type_len;
    const char *url;
    size_t url_len;
} dent;

typedef struct doc {
    dent *v;
    size_t n, cap;
    bool bad;
} doc;

static void doc_push(doc *d, dent e)
{
    if (d->n == d->cap)
        d->v = xrealloc(d->v, (d->cap = d->cap ? d->cap * 2 : 64) * sizeof *d->v);
    d->v[d->n++] = e;
}

typedef struct scan_ctx {
    doc *d;
    int depth;
} scan_ctx;

static void scan_entry(void *ud, const map_scan_entry *e)
{
    scan_ctx *c = ud;
    if (is_type(e->type, e->type_len, "Bundle") && c->depth + 1 < BUNDLE_MAX_DEPTH) {
        scan_ctx inner = {c->d, c->depth + 1};
        const char *t;
        size_t tl;
        if (map_scan_doc(e->res, e->res_len, scan_entry, &inner, &t, &tl) != 1)
            c->d->bad = true;
        return;
    }
    doc_push(c->d, (dent){e->res, e->res_len, NULL, e->type, e->type_len, e->url, e->url_len});
}

/* The entries of a parsed Bundle, as map_group walks them. */
static void tree_entries(doc *d, const fhir_node *b, int depth)
{
    for (const fhir_node *e = fhir_node_first(fhir_node_get(b, "entry")); e; e = e->next) {
        const fhir_node *r = fhir_node_get(e, "resource");
        if (!r)
            continue;
        const char *rt = fhir_node_resource_type(r);
        if (rt && !strcmp(rt, "Bundle") && depth + 1 < BUNDLE_MAX_DEPTH) {
            tree_entries(d, r, depth + 1);
            continue;
        }
        const char *u = fhir_node_str(fhir_node_get(e, "fullUrl"));
        doc_push(d, (dent){NULL, 0, r, rt, rt ? strlen(rt) : 0, u, u ? strlen(u) : 0});
    }
}

/* Takes the kept entries of a document: Patients first (their fullUrls make the Bundle's
 * scope), then the others, each group in document order; entry i's rec.pos is pos + i. */
static int take_entries(ms *m, doc *d, fhir_arena *a, bool *reparse, uint64_t pos)
{
    scope sc = {0};
    int rc = GROUP_OK;
    for (size_t i = 0; i < d->n; i++) { /* parse what is kept (all or nothing) */
        dent *e = &d->v[i];
        if (e->node)
            continue;
        if (!e->type || !map_profile_reads(e->type, e->type_len) ||
            is_type(e->type, e->type_len, "Bundle")) {
            m->st->skipped += e->type != NULL;
            m->st->bytes_skipped += e->len;
            e->type = NULL;
            continue;
        }
        fhir_error pe;
        e->node = map_stream_parse(m, a, e->res, e->len, &pe);
        if (!e->node) {
            *reparse = true;
            return GROUP_OK;
        }
    }
    for (size_t i = 0; i < d->n; i++) {
        const dent *e = &d->v[i];
        const char *id = e->node ? fhir_node_resource_id(e->node) : NULL;
        if (!e->node || !e->url || !id || !is_type(e->type, e->type_len, "Patient"))
            continue;
        if (sc.n == sc.cap)
            sc.v = xrealloc(sc.v, (sc.cap = sc.cap ? sc.cap * 2 : 8) * sizeof *sc.v);
        sc.v[sc.n++] = (alias){e->url, e->url_len, id};
    }
    for (int pass = 0; pass < 2 && rc == GROUP_OK; pass++)
        for (size_t i = 0; i < d->n && rc == GROUP_OK; i++) {
            const dent *e = &d->v[i];
            if (!e->node || is_type(e->type, e->type_len, "Patient") != (pass == 0))
                continue;
            rc = take(m, e->type, e->type_len, e->res, e->len, e->node, e->url, e->url_len, &sc,
                      pos + i);
        }
    free(sc.v);
    return rc;
}

/* One JSON document: a whole file, or an NDJSON line holding a Bundle (line: errors make it
 * a bad line, as map_group counts them); pos: its rec.pos (of its first entry). */
static int take_doc(ms *m, const sfile *f, const char *s, size_t n, bool line, uint64_t pos)
{
    fhir_arena *a = m->scratch; /* take() copies what memory mode holds */
    doc d = {0};
    const char *t = NULL;
    size_t tl = 0;
    scan_ctx sc = {&d, 0};
    int kind = map_scan_doc(s, n, scan_entry, &sc, &t, &tl);
    int rc = GROUP_OK;
    bool reparse = kind < 0 || d.bad;
    if (!reparse && kind == 0) {
        if (!t) {
            reparse = true; /* let the parser say what it is */
        } else if (!map_profile_reads(t, tl)) {
            m->st->skipped++;
            m->st->bytes_skipped += n;
        } else {
            fhir_error pe;
            fhir_node *res = map_stream_parse(m, a, s, n, &pe);
            if (!res)
                reparse = true;
            else
                rc = take(m, t, tl, s, n, res, NULL, 0, NULL, pos);
        }
    } else if (!reparse) {
        rc = take_entries(m, &d, a, &reparse, pos);
    }
    if (reparse && rc == GROUP_OK) { /* the full parser: its tree, or its error */
        d.n = 0;
        fhir_error pe;
        fhir_node *root = !line && fhir_xml_detect(s, n) ? fhir_xml_parse(a, s, n, &m->lim, &pe)
                                                         : fhir_json_parse(a, s, n, &m->lim, &pe);
        const char *rt = root ? fhir_node_resource_type(root) : NULL;
        if (line && (!root || root->kind != FHIR_OBJECT)) {
            m->st->bad_lines++;
        } else if (!root) {
            *m->err = pe;
            fhir_error_prefix(m->err, "%s", f->path);
            rc = GROUP_FAIL;
        } else if (!rt && !line) {
            fhir_error_set(m->err, "%s: not a FHIR resource (no resourceType)", f->path);
            rc = GROUP_FAIL;
        } else if (rt && !strcmp(rt, "Bundle")) {
            tree_entries(&d, root, 0);
            rc = take_entries(m, &d, a, &reparse, pos);
        } else if (rt) {
            rc = take(m, rt, strlen(rt), NULL, 0, root, NULL, 0, NULL, pos);
        }
    }
    free(d.v);
    fhir_arena_reset(m->scratch);
    return rc;
}

/* Reads every input file once: resources held or partitioned, Medications to the table. */
static int pass_inputs(ms *m)
{
    int rc = GROUP_OK;
    for (size_t i = 0; i < m->nfiles && rc == GROUP_OK; i++) {
        const sfile *f = &m->files[i];
        if (f->skip)
            continue;
        if (!f->ndjson) {
            char *b = NULL;
            size_t n = 0;
            if (map_stream_read_doc(m, f, &b, &n))
                return GROUP_FAIL;
            rc = take_doc(m, f, b, n, false, map_stream_pos(m, f, 0));
            if (b != m->stdin_doc)
                free(b);
            continue;
        }
        int fd = map_stream_open_file(m, f);
        if (fd < 0)
            return GROUP_FAIL;
        lreader r;
        map_stream_lr_open(&r, fd, m->lim.max_bytes);
        while (rc == GROUP_OK) {
            const char *s;
            size_t n;
            int kind = map_stream_next_line(m, &r, f, &s, &n);
            if (kind <= 0) {
                rc = kind < 0 ? GROUP_FAIL : rc;
                break;
            }
            uint64_t pos = map_stream_pos(m, f, r.line_off);
            if (kind == LINE_BUNDLE) {
                rc = take_doc(m, f, s, n, true, pos);
                continue;
            }
            fhir_arena_reset(m->scratch);
            const char *t = NULL;
            size_t tl = 0;
            if (kind == LINE_READ) {
                map_scan_first_type(s, n, &t, &tl);
                rc = take(m, t, tl, s, n, NULL, NULL, 0, NULL, pos);
                continue;
            }
            bool bundle;
            fhir_node *res = map_stream_parse_kept(m, m->scratch, s, n, false, &bundle);
            if (bundle) {
                rc = take_doc(m, f, s, n, true, pos);
                continue;
            }
            if (res) {
                t = fhir_node_resource_type(res);
                rc = take(m, t, strlen(t), s, n, res, NULL, 0, NULL, pos);
            }
        }
        map_stream_lr_close(&r);
    }
    return rc;
}

static int cmp_rec(const void *a, const void *b)
{
    const rec *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

/* Delivers the held resources, patient by patient in id order: each patient's texts are
 * parsed into the patient arena (a text that does not parse counts as a bad line, as the
 * line it came from would have). */
static int deliver_held(ms *m)
{
    if (m->nrecs > 1)
        qsort(m->recs, m->nrecs, sizeof *m->recs, cmp_rec);
    size_t held = fhir_arena_used(m->hold) + m->nrecs * sizeof *m->recs;
    for (size_t i = 0; i < m->nrecs;) {
        size_t j = i, k = i;
        for (; j < m->nrecs && !strcmp(m->recs[j].key, m->recs[i].key); j++) {
            fhir_error pe;
            rec r = m->recs[j];
            r.res = map_stream_parse(m, m->pa, r.raw, r.len, &pe);
            if (!r.res || r.res->kind != FHIR_OBJECT) {
                m->st->bad_lines++;
                m->st->resources--;
                continue;
            }
            m->recs[k++] = r;
        }
        if (k > i && map_stream_deliver(m, m->recs[i].key, m->recs + i, k - i, held))
            return GROUP_FAIL;
        fhir_arena_reset(m->pa);
        i = j;
    }
    m->nrecs = 0;
    fhir_arena_reset(m->hold);
    return GROUP_OK;
}

/* A buffered reader of spill records. */
typedef struct sreader {
    int fd;
    char *buf;
    size_t cap, beg, end;
    bool eof;
} sreader;

/* Makes n bytes available at r->buf + r->beg: 1, 0 at a clean end, -1 on error. */
static int sr_need(ms *m, sreader *r, size_t n)
{
    while (r->end - r->beg < n) {
        if (r->eof)
            return r->end == r->beg ? 0 : fhir_error_set(m->err, "spill file: truncated");
        if (r->beg) {
            memmove(r->buf, r->buf + r->beg, r->end - r->beg);
            r->end -= r->beg;
            r->beg = 0;
        }
        if (r->cap < n) {
            r->cap = n;
            r->buf = xrealloc(r->buf, r->cap);
        }
        ssize_t got = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return fhir_error_set(m->err, "spill file: read error: %s", strerror(errno));
        if (got == 0)
            r->eof = true;
        r->end += (size_t)got;
    }
    return 1;
}

/* Next record: 1 with key / text pointing into the reader (valid until the next call). */
static int sr_next(ms *m, sreader *r, const char **key, size_t *kl, const char **text,
                   size_t *tl, uint64_t *pos)
{
    uint32_t a, b;
    int got = sr_need(m, r, 4);
    if (got <= 0)
        return got;
    memcpy(&a, r->buf + r->beg, 4);
    if (sr_need(m, r, 4 + (size_t)a + 4) <= 0)
        return -1;
    memcpy(&b, r->buf + r->beg + 4 + a, 4);
    size_t total = 16 + (size_t)a + b;
    if (sr_need(m, r, total) <= 0)
        return -1;
    *key = r->buf + r->beg + 4;
    *kl = a;
    memcpy(pos, r->buf + r->beg + 8 + a, 8);
    *text = r->buf + r->beg + 16 + a;
    *tl = b;
    r->beg += total;
    return 1;
}

static int group_spill(ms *m, int fd, uint64_t size, int level);

/* Calls fn for every record of a spill file, from its start. */
typedef int (*spill_fn)(ms *m, void *ud, const char *key, size_t kl, const char *text,
                        size_t len, uint64_t pos);

static int each_spill_rec(ms *m, int fd, spill_fn fn, void *ud)
{
    if (lseek(fd, 0, SEEK_SET) < 0)
        return fhir_error_set(m->err, "spill file: %s", strerror(errno));
    sreader r = {fd, xrealloc(NULL, MAP_STREAM_READ_BUF), MAP_STREAM_READ_BUF, 0, 0, false};
    int rc = GROUP_OK;
    while (rc == GROUP_OK) {
        const char *k, *t;
        size_t kl, tl;
        uint64_t pos;
        int got = sr_next(m, &r, &k, &kl, &t, &tl, &pos);
        if (got <= 0) {
            rc = got < 0 ? GROUP_FAIL : GROUP_OK;
            break;
        }
        rc = fn(m, ud, k, kl, t, tl, pos);
    }
    free(r.buf);
    return rc;
}

typedef struct split_ctx {
    spill *parts;
    size_t np;
    int level;
} split_ctx;

static int to_part(ms *m, void *ud, const char *k, size_t kl, const char *t, size_t tl,
                   uint64_t pos)
{
    split_ctx *c = ud;
    return spill_rec(m, c->parts, c->np, (uint64_t)c->level, k, kl, t, tl, pos) ? GROUP_FAIL
                                                                               : GROUP_OK;
}

static int to_held(ms *m, void *ud, const char *k, size_t kl, const char *t, size_t tl,
                   uint64_t pos)
{
    (void)ud;
    rec_push(m, k, kl, t, tl, pos); /* within the budget: the file's size said so */
    return GROUP_OK;
}

/* Splits one spill file into smaller ones by another hash of the key. Closes fd. */
static int split_spill(ms *m, int fd, uint64_t size, int level)
{
    size_t np = (size_t)(size * 4 / (m->o.budget ? m->o.budget : 1)) + 2;
    if (np > MAP_STREAM_MAX_PARTS)
        np = MAP_STREAM_MAX_PARTS;
    split_ctx c = {NULL, np, level};
    int rc = spills_open(m, &c.parts, np) ? GROUP_FAIL : GROUP_OK;
    if (rc == GROUP_OK)
        rc = each_spill_rec(m, fd, to_part, &c);
    for (size_t i = 0; i < np && rc == GROUP_OK; i++)
        if (spill_flush(m, &c.parts[i]))
            rc = GROUP_FAIL;
    close(fd);
    for (size_t i = 0; i < np && rc == GROUP_OK; i++) {
        rc = group_spill(m, c.parts[i].fd, c.parts[i].size, level);
        c.parts[i].fd = -1; /* closed by group_spill */
    }
    spills_close(c.parts, np);
    return rc;
}

/* Groups one spill file in memory; splits it when it does not fit the budget. Closes fd. */
static int group_spill(ms *m, int fd, uint64_t size, int level)
{
    if (size == 0) {
        close(fd);
        return GROUP_OK;
    }
    if (size > m->o.budget / 2 && level < MAP_STREAM_MAX_SPLITS)
        return split_spill(m, fd, size, level + 1);
    int rc = each_spill_rec(m, fd, to_held, NULL);
    close(fd);
    if (rc == GROUP_OK)
        rc = deliver_held(m);
    m->nrecs = 0;
    fhir_arena_reset(m->hold);
    return rc;
}

static int run_grouped(ms *m, bool spill_now)
{
    uint64_t est = 0;
    for (size_t i = 0; i < m->nfiles; i++)
        if (!m->files[i].skip)
            est += m->files[i].size;
    est += m->stdin_len;
    for (int attempt = 0; attempt < 2; attempt++) {
        m->spilling = spill_now || attempt == 1;
        m->st->mode = m->spilling ? "spill" : "memory";
        if (map_stream_med_open(m))
            return GROUP_FAIL;
        m->nrecs = 0;
        fhir_arena_reset(m->hold);
        if (m->spilling) {
            m->nparts = (size_t)(est * 4 / m->o.budget) + 2;
            if (m->nparts > MAP_STREAM_MAX_PARTS)
                m->nparts = MAP_STREAM_MAX_PARTS;
            if (spills_open(m, &m->parts, m->nparts))
                return GROUP_FAIL;
        }
        int rc = pass_inputs(m);
        if (rc == GROUP_OVER) { /* too large for memory: partition instead */
            if (fhir_arena_used(m->hold) > m->st->peak_held)
                m->st->peak_held = fhir_arena_used(m->hold);
            map_stream_begin_pass(m);
            continue;
        }
        if (rc != GROUP_OK)
            return rc;
        if (!m->spilling)
            return deliver_held(m);
        for (size_t i = 0; i < m->nparts; i++)
            if (spill_flush(m, &m->parts[i]))
                return GROUP_FAIL;
        for (size_t i = 0; i < m->nparts; i++) {
            int fd = m->parts[i].fd;
            m->parts[i].fd = -1;
            if ((rc = group_spill(m, fd, m->parts[i].size, 0)) != GROUP_OK)
                return rc;
        }
        return GROUP_OK;
    }
    return GROUP_OK;
}

int map_stream_run_grouped(ms *m, bool spill_now)
{
    int rc = run_grouped(m, spill_now);
    spills_close(m->parts, m->nparts);
    m->parts = NULL;
    m->nparts = 0;
    return rc;
}
