/* map_stream — one patient at a time from FHIR files in bounded memory. See map_stream.h;
 * the parts: map_stream_int.h. This file: input files and line reading, patient keys,
 * patient assembly (the array map_group would build), the driver. */
#include "map_stream_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fhir_meta.h"
#include "map_group.h"
#include "map_profile.h"
#include "map_scan.h"

static int list_file(void *ud, const char *path, fhir_error *err)
{
    ms *m = ud;
    sfile f = {0};
    f.path = strdup(path);
    if (!f.path)
        abort();
    if (!strcmp(path, "-")) {
        m->have_stdin = true;
    } else {
        struct stat sb;
        if (stat(path, &sb) != 0)
            return fhir_error_set(err, "%s: %s", path, strerror(errno));
        f.size = (uint64_t)sb.st_size;
        f.ndjson = map_group_is_ndjson(path);
    }
    if (f.ndjson) { /* bulk layout: <Type>.ndjson, <Type>.<n>.ndjson */
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        size_t tl = strcspn(base, ".");
        fhir_meta_type t = fhir_meta_type_find(base, tl);
        if (t >= 0 && fhir_meta_is_resource(t) && !is_type(base, tl, "Bundle")) {
            f.skip = !map_profile_reads(base, tl);
            f.medication = is_type(base, tl, "Medication");
        }
    }
    m->files = xrealloc(m->files, (m->nfiles + 1) * sizeof *m->files);
    m->files[m->nfiles++] = f;
    m->st->files++;
    m->st->bytes += f.size;
    return 0;
}

/* ---- bulk export manifests ----------------------------------------------------------------- */

static const char *base_name(const char *path, size_t *dir_len)
{
    const char *b = strrchr(path, '/');
    *dir_len = b ? (size_t)(b - path) : 0;
    return b ? b + 1 : path;
}

/* The files a manifest lists ("output" / "error": type and url) take their type from it:
 * those of types the profile never reads are not opened. Matched by name in the manifest's
 * folder (the url's last segment, without a query). */
static void apply_manifest(ms *m, const sfile *mf, const fhir_node *root)
{
    size_t mdl;
    base_name(mf->path, &mdl);
    static const char *const lists[] = {"output", "error"};
    for (size_t l = 0; l < 2; l++)
        for (const fhir_node *e = fhir_node_first(fhir_node_get(root, lists[l])); e; e = e->next) {
            const char *type = fhir_node_str(fhir_node_get(e, "type"));
            const char *url = fhir_node_str(fhir_node_get(e, "url"));
            if (!type || !url)
                continue;
            size_t ul = strcspn(url, "?#"), tl = strlen(type);
            const char *ub = url + ul;
            while (ub > url && ub[-1] != '/')
                ub--;
            size_t bl = (size_t)(url + ul - ub);
            fhir_meta_type t = fhir_meta_type_find(type, tl);
            if (!bl || t < 0 || !fhir_meta_is_resource(t) || is_type(type, tl, "Bundle"))
                continue;
            for (size_t i = 0; i < m->nfiles; i++) {
                sfile *f = &m->files[i];
                size_t dl;
                const char *b = base_name(f->path, &dl);
                if (!f->ndjson || f->manifest || dl != mdl || memcmp(f->path, mf->path, dl) ||
                    strlen(b) != bl || memcmp(b, ub, bl))
                    continue;
                f->skip = !map_profile_reads(type, tl);
                f->medication = is_type(type, tl, "Medication");
            }
        }
}

/* A file named manifest.json that holds a bulk export manifest (an object with "output" and
 * "transactionTime", no resourceType) is applied to its folder and not read as FHIR. */
static int find_manifests(ms *m)
{
    for (size_t i = 0; i < m->nfiles; i++) {
        sfile *f = &m->files[i];
        size_t dl;
        if (f->ndjson || strcmp(base_name(f->path, &dl), "manifest.json"))
            continue;
        char *b = NULL;
        size_t n = 0;
        if (map_stream_read_doc(m, f, &b, &n))
            return -1;
        fhir_arena_reset(m->scratch);
        fhir_error pe;
        const fhir_node *root = fhir_json_parse(m->scratch, b, n, &m->lim, &pe);
        free(b);
        if (root && root->kind == FHIR_OBJECT && !fhir_node_resource_type(root) &&
            fhir_node_get(root, "output") && fhir_node_str(fhir_node_get(root, "transactionTime"))) {
            f->manifest = f->skip = true;
            m->st->manifests++;
            apply_manifest(m, f, root);
        }
        fhir_arena_reset(m->scratch);
    }
    return 0;
}

static int ignore_file(void *ud, const char *path, fhir_error *err)
{
    ms *m = ud;
    (void)err;
    if (!m->st->files_ignored++)
        snprintf(m->st->first_ignored, sizeof m->st->first_ignored, "%s", path);
    return 0;
}

void map_stream_lr_open(lreader *r, int fd, size_t max)
{
    memset(r, 0, sizeof *r);
    r->fd = fd;
    r->max = max;
    r->cap = MAP_STREAM_READ_BUF;
    r->buf = xrealloc(NULL, r->cap);
}

void map_stream_lr_close(lreader *r)
{
    free(r->buf);
    if (r->fd >= 0)
        close(r->fd);
    r->buf = NULL;
    r->fd = -1;
}

/* 1 = a line in *s / *n (valid until the next call), 2 = a line longer than max (skipped),
 * 0 = end of file, -1 = read error (errno). */
int map_stream_lr_next(lreader *r, const char **s, size_t *n)
{
    for (;;) {
        const char *nl = r->scan < r->end ? memchr(r->buf + r->scan, '\n', r->end - r->scan) : NULL;
        if (nl) {
            size_t j = (size_t)(nl - r->buf);
            *s = r->buf + r->beg;
            *n = j - r->beg;
            r->line_off = r->buf_off + r->beg;
            r->beg = r->scan = j + 1;
            if (r->skipping) {
                r->skipping = false;
                return 2;
            }
            return 1;
        }
        r->scan = r->end;
        if (r->eof) {
            if (r->beg == r->end)
                return 0;
            *s = r->buf + r->beg;
            *n = r->end - r->beg;
            r->line_off = r->buf_off + r->beg;
            r->beg = r->scan = r->end;
            if (r->skipping) {
                r->skipping = false;
                return 2;
            }
            return 1;
        }
        if (r->skipping) {
            r->buf_off += r->end;
            r->beg = r->scan = r->end = 0;
        } else if (r->beg > 0) {
            memmove(r->buf, r->buf + r->beg, r->end - r->beg);
            r->buf_off += r->beg;
            r->end -= r->beg;
            r->scan = r->end;
            r->beg = 0;
        }
        if (r->end == r->cap) {
            if (r->end > r->max) { /* longer than max: drop what is buffered, find its end */
                r->skipping = true;
                r->buf_off += r->end;
                r->beg = r->scan = r->end = 0;
            } else {
                size_t nc = r->cap * 2 > r->max + 1 ? r->max + 1 : r->cap * 2;
                if (nc <= r->cap)
                    nc = r->cap + 1;
                r->buf = xrealloc(r->buf, nc);
                r->cap = nc;
            }
        }
        ssize_t got = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (got == 0)
            r->eof = true;
        r->end += (size_t)got;
    }
}

int map_stream_open_file(ms *m, const sfile *f)
{
    int fd = open(f->path, O_RDONLY);
    if (fd < 0)
        fhir_error_set(m->err, "%s: %s", f->path, strerror(errno));
    return fd;
}

/* Reads a whole JSON file (capped like fhir_json_parse_file). Caller frees *out. */
int map_stream_read_doc(ms *m, const sfile *f, char **out, size_t *len)
{
    if (!strcmp(f->path, "-")) {
        *out = m->stdin_doc;
        *len = m->stdin_len;
        return 0;
    }
    int fd = map_stream_open_file(m, f);
    if (fd < 0)
        return -1;
    size_t cap = f->size + 1 < m->lim.max_bytes + 1 ? (size_t)f->size + 1 : m->lim.max_bytes + 1;
    char *b = xrealloc(NULL, cap);
    size_t n = 0;
    for (;;) {
        if (n == cap) {
            if (cap > m->lim.max_bytes)
                break;
            cap = cap * 2 > m->lim.max_bytes + 1 ? m->lim.max_bytes + 1 : cap * 2;
            b = xrealloc(b, cap);
        }
        ssize_t got = read(fd, b + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            close(fd);
            free(b);
            return fhir_error_set(m->err, "%s: read error: %s", f->path, strerror(e));
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    if (n > m->lim.max_bytes) {
        free(b);
        return fhir_error_set(m->err, "%s: %s: document exceeds max_bytes (%zu)", f->path,
                              f->path, m->lim.max_bytes);
    }
    *out = b;
    *len = n;
    return 0;
}

static int read_stdin(ms *m)
{
    fhir_buf b;
    fhir_buf_init(&b, m->lim.max_bytes);
    char chunk[65536];
    size_t n;
    bool big = false;
    while (!big && (n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        big = fhir_buf_append(&b, chunk, n) < 0;
    bool bad = ferror(stdin);
    m->stdin_len = b.len;
    m->stdin_doc = fhir_buf_steal(&b, NULL);
    if (!m->stdin_doc)
        m->stdin_doc = xrealloc(NULL, 1);
    m->st->bytes += m->stdin_len;
    if (big)
        return fhir_error_set(m->err, "-: -: document exceeds max_bytes (%zu)", m->lim.max_bytes);
    if (bad)
        return fhir_error_set(m->err, "-: -: read error");
    return 0;
}

/* ---- temporary files ---------------------------------------------------------------------- */

int map_stream_temp_fd(ms *m)
{
    const char *dir = m->o.tmp_dir;
    if (!dir)
        dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/cartgate-stream-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0)
        return fhir_error_set(m->err, "spill file in %s: %s", dir, strerror(errno));
    unlink(path);
    return fd;
}

int map_stream_write_all(ms *m, int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return fhir_error_set(m->err, "spill file: write error: %s",
                                  w < 0 ? strerror(errno) : "short write");
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int map_stream_pread_all(ms *m, int fd, void *p, size_t n, uint64_t off)
{
    char *c = p;
    while (n) {
        ssize_t r = pread(fd, c, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return fhir_error_set(m->err, "spill file: read error: %s",
                                  r < 0 ? strerror(errno) : "short read");
        c += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* The patient id a patient reference names: a Patient fullUrl of the Bundle scope, else
 * ".../Patient/<id>"; NULL for none. */
/* ---- keyed resources ---------------------------------------------------------------------- */
static const char *resolve_ref(const char *ref, const scope *sc, fhir_arena *a)
{
    if (!ref)
        return NULL;
    size_t rl = strlen(ref);
    for (size_t i = sc ? sc->n : 0; i-- > 0;) /* the last fullUrl wins, as in map_group */
        if (sc->v[i].url_len == rl && !memcmp(sc->v[i].url, ref, rl))
            return sc->v[i].id;
    return map_group_ref_patient_id(a, ref);
}

/* Patient id of a resource (Patient.id, or its patient reference resolved within the Bundle
 * scope, else ".../Patient/<id>"); NULL when it has none. Copies into a when needed. */
const char *map_stream_key_of(const fhir_node *res, const char *type, const scope *sc,
                          fhir_arena *a)
{
    if (!strcmp(type, "Patient"))
        return fhir_node_resource_id(res);
    if (!strcmp(type, "Medication"))
        return NULL;
    return resolve_ref(map_group_patient_ref(res), sc, a);
}

/* The patient key of a resource from its text, exactly as map_stream_key_of() gives it from the tree:
 * 1 with *key (copied into a), 0 when it has none, -1 when the scan cannot tell (escapes,
 * unusual shapes: the caller parses). */
int map_stream_key_scan(const char *raw, size_t len, const char *type, size_t tl, const scope *sc,
                    fhir_arena *a, const char **key)
{
    static const char *const names[] = {"id", "subject", "patient", "beneficiary", "individual"};
    static const char *const refname[] = {"reference"};
    map_scan_span v[5];
    const char *s;
    size_t n;
    *key = NULL;
    if (map_scan_members(raw, len, names, 5, v))
        return -1;
    if (is_type(type, tl, "Patient")) {
        if (!v[0].p)
            return 0;
        if (!map_scan_string(v[0], &s, &n) || !(*key = fhir_arena_strndup(a, s, n)))
            return -1;
        return 1;
    }
    for (int i = 1; i < 5; i++) { /* the first of the paths map_group_patient_ref() reads */
        if (!v[i].p)
            continue;
        map_scan_span r;
        if (v[i].p[0] != '{' || map_scan_members(v[i].p, v[i].len, refname, 1, &r))
            return -1;
        if (!r.p)
            continue;
        const char *ref;
        if (!map_scan_string(r, &s, &n) || !(ref = fhir_arena_strndup(a, s, n)))
            return -1;
        *key = resolve_ref(ref, sc, a);
        return *key ? 1 : 0;
    }
    return 0;
}

int map_stream_line_kind(ms *m, const char *s, size_t *n)
{
    if (*n && s[*n - 1] == '\r')
        (*n)--;
    size_t i = 0;
    while (i < *n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r'))
        i++;
    if (i == *n)
        return LINE_BLANK;
    const char *t;
    size_t tl;
    if (!map_scan_first_type(s, *n, &t, &tl))
        return LINE_PARSE;
    if (is_type(t, tl, "Bundle"))
        return LINE_BUNDLE;
    if (!map_profile_reads(t, tl)) {
        m->st->skipped++;
        m->st->bytes_skipped += *n + 1;
        return LINE_SKIP;
    }
    return LINE_READ;
}

int map_stream_next_line(ms *m, lreader *r, const sfile *f, const char **s, size_t *n)
{
    for (;;) {
        int got = map_stream_lr_next(r, s, n);
        if (got < 0)
            return fhir_error_set(m->err, "%s: read error: %s", f->path, strerror(errno));
        if (got == 0)
            return 0;
        if (got == 2) {
            m->st->bad_lines++;
            continue;
        }
        int kind = map_stream_line_kind(m, *s, n);
        if (kind != LINE_BLANK && kind != LINE_SKIP)
            return kind;
    }
}

/* Parses an NDJSON line into a; NULL (counted as a bad line) when it is not a resource
 * object. */
static fhir_node *parse_line(ms *m, fhir_arena *a, const char *s, size_t n)
{
    fhir_error e;
    fhir_node *res = map_stream_parse(m, a, s, n, &e);
    if (!res || res->kind != FHIR_OBJECT) {
        m->st->bad_lines++;
        return NULL;
    }
    return res;
}

static void no_entry(void *ud, const map_scan_entry *e)
{
    (void)ud;
    (void)e;
}

/* Parses a line whose type the profile reads into a. A line whose type does not come first
 * (sniffed false) is scanned for it first, so a line that is dropped (no type, a type not
 * read) costs no parse and leaves nothing in a; when it cannot be scanned the parser decides
 * (in scratch, then again into a when kept). NULL when dropped; *bundle set for a Bundle,
 * which the caller unpacks. */
fhir_node *map_stream_parse_kept(ms *m, fhir_arena *a, const char *s, size_t n, bool sniffed,
                             bool *bundle)
{
    *bundle = false;
    if (sniffed)
        return parse_line(m, a, s, n);
    const char *t;
    size_t tl;
    int kind = map_scan_doc(s, n, no_entry, NULL, &t, &tl);
    if (kind == 1) {
        *bundle = true;
        return NULL;
    }
    if (kind == 0) {
        if (!t)
            return NULL;
        if (!map_profile_reads(t, tl)) {
            m->st->skipped++;
            m->st->bytes_skipped += n + 1;
            return NULL;
        }
        return parse_line(m, a, s, n);
    }
    fhir_arena_reset(m->scratch);
    fhir_node *res = parse_line(m, m->scratch, s, n);
    const char *rt = res ? fhir_node_resource_type(res) : NULL;
    *bundle = rt && !strcmp(rt, "Bundle");
    if (!rt || *bundle || !map_profile_reads(rt, strlen(rt)))
        return NULL;
    if (a == m->scratch)
        return res;
    fhir_arena_reset(m->scratch);
    fhir_error e;
    return map_stream_parse(m, a, s, n, &e);
}

/* ---- patient assembly --------------------------------------------------------------------- */

static void arr_push(ms *m, const fhir_node *r, bool front)
{
    if (m->narr == m->caparr) {
        m->caparr = m->caparr ? m->caparr * 2 : 64;
        m->arr = xrealloc(m->arr, m->caparr * sizeof *m->arr);
    }
    if (front) {
        memmove(m->arr + 1, m->arr, m->narr * sizeof *m->arr);
        m->arr[0] = r;
    } else {
        m->arr[m->narr] = r;
    }
    m->narr++;
}

/* Builds the patient's array as map_group does (Patients to the front, the last one first;
 * each resource followed by the Medication it references, once) and delivers it. */
int map_stream_deliver(ms *m, const char *key, const rec *v, size_t n, size_t held)
{
    m->narr = m->nmedsel = 0;
    uint64_t first = UINT64_MAX, first_patient = UINT64_MAX;
    for (size_t i = 0; i < n; i++) {
        const fhir_node *r = v[i].res;
        const char *t = fhir_node_resource_type(r);
        bool is_patient = t && !strcmp(t, "Patient");
        arr_push(m, r, is_patient);
        if (v[i].pos < first)
            first = v[i].pos;
        if (is_patient && v[i].pos < first_patient)
            first_patient = v[i].pos;
        const char *mref = fhir_node_path_str(r, "medicationReference.reference");
        if (!mref || mref[0] == '#')
            continue;
        /* this patient's references looked up so far: most repeat (one drug, many doses) */
        medsel *hit = NULL;
        for (size_t k = 0; k < m->nmedsel && !hit; k++)
            if (!strcmp(m->medsel[k].ref, mref))
                hit = &m->medsel[k];
        if (hit)
            continue; /* found before (appended once) or known to be absent */
        const fhir_node *med = NULL;
        uint64_t id = 0;
        int f = map_stream_med_find(m, mref, &med, &id);
        if (f < 0)
            return -1;
        bool have = false;
        for (size_t k = 0; k < m->nmedsel && !have; k++)
            have = f && m->medsel[k].id == id;
        if (m->nmedsel == m->capmedsel) {
            m->capmedsel = m->capmedsel ? m->capmedsel * 2 : 16;
            m->medsel = xrealloc(m->medsel, m->capmedsel * sizeof *m->medsel);
        }
        m->medsel[m->nmedsel++] = (medsel){mref, f ? id : 0};
        if (f && !have)
            arr_push(m, med, false);
    }
    held += fhir_arena_used(m->pa);
    if (held > m->st->peak_held)
        m->st->peak_held = held;
    m->st->patients++;
    uint64_t order = first_patient != UINT64_MAX ? first_patient : first | 1ull << 63;
    int rc = m->fn(m->ud, key, m->arr, m->narr, order, m->err);
    fhir_arena_reset(m->pa);
    return rc ? -1 : 0;
}

/* Counters of a pass over the input start again (the input is read again); what was spilled
 * and held stays counted. */
void map_stream_begin_pass(ms *m)
{
    map_stream_stats *st = m->st, keep = *st;
    memset(st, 0, sizeof *st);
    st->mode = keep.mode;
    st->files = keep.files;
    st->files_skipped = keep.files_skipped;
    st->manifests = keep.manifests;
    st->bytes = keep.bytes;
    st->restarts = keep.restarts;
    st->spill_files = keep.spill_files;
    st->spill_bytes = keep.spill_bytes;
    st->peak_held = keep.peak_held;
    for (size_t i = 0; i < m->nfiles; i++)
        if (m->files[i].skip)
            st->bytes_skipped += m->files[i].size;
}

int map_stream_run(const char *const *paths, size_t npaths, const map_stream_opts *o,
                   map_stream_patient_fn fn, map_stream_restart_fn restart, void *ud,
                   map_stream_stats *st, fhir_error *err)
{
    map_stream_stats local;
    if (!st)
        st = &local;
    memset(st, 0, sizeof *st);
    fhir_error_clear(err);
    ms m = {0};
    if (o)
        m.o = *o;
    if (!m.o.budget)
        m.o.budget = MAP_STREAM_BUDGET_DEFAULT;
    if (!m.o.max_file_bytes)
        m.o.max_file_bytes = MAP_STREAM_MAX_FILE_DEFAULT;
    m.med_max = m.o.med_index_max ? m.o.med_index_max : MAP_STREAM_MED_INDEX_MAX;
    if (m.med_max < 1024)
        m.med_max = 1024;
    m.st = st;
    m.err = err;
    m.fn = fn;
    m.restart = restart;
    m.ud = ud;
    m.lim.max_bytes = m.o.max_file_bytes;
    fhir_json_limits_default(&m.lim);
    m.jr = fhir_json_reader_new(&m.lim);
    m.med_fd = -1;
    m.hold = fhir_arena_new(0);
    m.scratch = fhir_arena_new(0);
    m.pa = fhir_arena_new(0);
    fhir_buf_init(&m.tmp, 0);
    fhir_buf_init(&m.medw, 0);
    int rc = 0;
    for (size_t i = 0; i < npaths && !rc; i++)
        rc = map_group_each_file(paths[i], list_file, ignore_file, &m, err);
    if (!rc)
        rc = find_manifests(&m);
    for (size_t i = 0; i < m.nfiles; i++)
        if (m.files[i].skip) {
            st->files_skipped++;
            st->bytes_skipped += m.files[i].size;
        }
    if (!rc && m.have_stdin)
        rc = read_stdin(&m);
    if (!rc)
        rc = map_stream_med_open(&m);
    /* the sorted merge reads NDJSON files only, each with its own reader */
    bool sortable = !m.have_stdin;
    size_t readers = 0;
    for (size_t i = 0; i < m.nfiles; i++) {
        sortable = sortable && (m.files[i].skip || m.files[i].ndjson);
        readers += !m.files[i].skip;
    }
    sortable = sortable && readers <= MAP_STREAM_MAX_MERGE;
    bool merged = false;
    if (!rc && sortable && (m.o.mode == MAP_STREAM_AUTO || m.o.mode == MAP_STREAM_SORTED)) {
        st->mode = "sorted";
        int r = map_stream_run_sorted(&m);
        if (r == MERGE_UNSORTED) {
            st->restarts++;
            if (restart)
                restart(ud);
            map_stream_begin_pass(&m);
        } else {
            rc = r;
            merged = true;
        }
    }
    if (!rc && !merged)
        rc = map_stream_run_grouped(&m, m.o.mode == MAP_STREAM_SPILL);
    if (m.med_fd >= 0)
        close(m.med_fd);
    map_stream_med_close(&m);
    fhir_arena_free(m.hold);
    fhir_arena_free(m.scratch);
    fhir_arena_free(m.pa);
    fhir_json_reader_free(m.jr);
    fhir_buf_free(&m.tmp);
    fhir_buf_free(&m.medw);
    free(m.recs);
    free(m.arr);
    free(m.medsel);
    for (size_t i = 0; i < m.nfiles; i++)
        free(m.files[i].path);
    free(m.files);
    free(m.stdin_doc);
    return rc ? -1 : 0;
}
