/* map_group — groups resources by patient across Bundles, NDJSON files and folders. */
#include "map_group.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fhir_alloc.h"
#include "fhir_arena.h"
#include "fhir_hash.h"
#include "fhir_json.h"
#include "fhir_xml.h"
#include "fhir_ndjson.h"
#include "fhir_ref.h"
#include "map_profile.h"

#define DEFAULT_MAX_BYTES ((size_t)4 << 30)
#define DEFAULT_MAX_FILE ((size_t)256 << 20)
#define MAX_DIR_FILES 100000

typedef struct gent {
    const char *key;
    size_t val;
} gent;

typedef struct gmap {
    gent *e;
    size_t cap, n;
} gmap;

static uint64_t ghash(const char *s)
{
    return fhir_hash64_str(FHIR_HASH64_INIT, s);
}

static void gmap_put(gmap *m, const char *key, size_t val)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 256;
        gent *ne = fhir_xcalloc(ncap, sizeof *ne);
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->e[i].key)
                continue;
            size_t j = (size_t)ghash(m->e[i].key) & (ncap - 1);
            while (ne[j].key)
                j = (j + 1) & (ncap - 1);
            ne[j] = m->e[i];
        }
        free(m->e);
        m->e = ne;
        m->cap = ncap;
    }
    size_t j = (size_t)ghash(key) & (m->cap - 1);
    while (m->e[j].key && strcmp(m->e[j].key, key))
        j = (j + 1) & (m->cap - 1);
    if (!m->e[j].key)
        m->n++;
    m->e[j].key = key;
    m->e[j].val = val;
}

static bool gmap_get(const gmap *m, const char *key, size_t *val)
{
    if (!m->cap || !key)
        return false;
    size_t j = (size_t)ghash(key) & (m->cap - 1);
    while (m->e[j].key) {
        if (!strcmp(m->e[j].key, key)) {
            *val = m->e[j].val;
            return true;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return false;
}

typedef struct item {
    const fhir_node *res;
    const char *pref; /* patient reference as written (NULL for Patient / shared) */
} item;

typedef struct patient {
    const char *id;
    const fhir_node **res;
    size_t n, cap;
} patient;

struct map_group {
    map_group_opts o;
    fhir_arena *a;
    item *items;
    size_t nitems, capitems;
    gmap alias;        /* fullUrl -> item index */
    gmap meds;         /* "Medication/id" -> item index */
    patient *pts;
    size_t npts, cappts;
    gmap pt_index;     /* patient id -> patient index */
    bool finished;
    size_t seen, orphans, bad_lines, ignored;
};

map_group *map_group_new(const map_group_opts *o)
{
    map_group *g = fhir_xcalloc(1, sizeof *g);
    if (o)
        g->o = *o;
    if (!g->o.max_bytes)
        g->o.max_bytes = DEFAULT_MAX_BYTES;
    if (!g->o.max_file_bytes)
        g->o.max_file_bytes = DEFAULT_MAX_FILE;
    g->a = fhir_arena_new(g->o.max_bytes);
    if (!g->a)
        abort();
    return g;
}

void map_group_free(map_group *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->npts; i++)
        free(g->pts[i].res);
    free(g->pts);
    free(g->items);
    free(g->alias.e);
    free(g->meds.e);
    free(g->pt_index.e);
    fhir_arena_free(g->a);
    free(g);
}

static bool kept_type(const map_group *g, const char *type)
{
    return g->o.all_types || map_profile_reads(type, strlen(type));
}

const char *map_group_patient_ref(const fhir_node *res)
{
    static const char *const paths[] = {"subject.reference", "patient.reference",
                                        "beneficiary.reference", "individual.reference", NULL};
    for (const char *const *p = paths; *p; p++) {
        const char *r = fhir_node_path_str(res, *p);
        if (r)
            return r;
    }
    return NULL;
}

/* Clone without the top-level members the profile never reads (narrative, meta): the clone
 * is most of the grouping cost, and narratives are often the largest part of a resource. */
fhir_node *map_group_clone_lean(fhir_arena *a, const fhir_node *res)
{
    fhir_node *o = fhir_node_new(a, FHIR_OBJECT);
    if (!o)
        return NULL;
    for (const fhir_node *c = fhir_node_first(res); c; c = c->next) {
        if (fhir_node_key_is(c, "text") || fhir_node_key_is(c, "meta"))
            continue;
        fhir_node *k = fhir_node_clone(a, c);
        if (!k || !fhir_node_append(a, o, c->key, c->key_len, k))
            return NULL;
    }
    return o;
}

static int add_one(map_group *g, const fhir_node *res, const char *full_url, fhir_error *err)
{
    const char *type = fhir_node_resource_type(res);
    if (!type)
        return 0;
    g->seen++;
    if (!kept_type(g, type))
        return 0;
    if (g->nitems == g->capitems) {
        g->capitems = g->capitems ? g->capitems * 2 : 1024;
        item *ni = fhir_xrealloc(g->items, g->capitems * sizeof *ni);
        g->items = ni;
    }
    fhir_node *c = g->o.all_types ? fhir_node_clone(g->a, res) : map_group_clone_lean(g->a, res);
    if (!c)
        return fhir_error_set(err, "resource grouping: memory cap of %zu bytes reached", g->o.max_bytes);
    item *it = &g->items[g->nitems];
    it->res = c;
    it->pref = NULL;
    if (strcmp(type, "Patient") && strcmp(type, "Medication")) {
        const char *r = map_group_patient_ref(c);
        it->pref = r;
    }
    size_t idx = g->nitems++;
    if (full_url) {
        const char *fu = fhir_arena_strdup(g->a, full_url);
        if (!fu)
            return fhir_error_set(err, "resource grouping: memory cap reached");
        gmap_put(&g->alias, fu, idx);
    }
    if (!strcmp(type, "Medication")) {
        const char *id = fhir_node_resource_id(c);
        if (id) {
            const char *k = fhir_arena_sprintf(g->a, "Medication/%s", id);
            if (!k)
                return fhir_error_set(err, "resource grouping: memory cap reached");
            gmap_put(&g->meds, k, idx);
        }
    }
    return 0;
}

static int add_res(map_group *g, const fhir_node *res, int depth, fhir_error *err)
{
    const char *type = fhir_node_resource_type(res);
    if (type && !strcmp(type, "Bundle") && depth < 3) {
        for (const fhir_node *e = fhir_node_first(fhir_node_get(res, "entry")); e; e = e->next) {
            const fhir_node *r = fhir_node_get(e, "resource");
            if (!r)
                continue;
            const char *rt = fhir_node_resource_type(r);
            if (rt && !strcmp(rt, "Bundle")) {
                if (add_res(g, r, depth + 1, err))
                    return -1;
                continue;
            }
            if (add_one(g, r, fhir_node_str(fhir_node_get(e, "fullUrl")), err))
                return -1;
        }
        return 0;
    }
    return add_one(g, res, NULL, err);
}

int map_group_add(map_group *g, const fhir_node *res, fhir_error *err)
{
    if (g->finished)
        return fhir_error_set(err, "resource grouping: add after finish");
    return add_res(g, res, 0, err);
}

/* ---- files --------------------------------------------------------------------------------- */

typedef struct nd_ctx {
    map_group *g;
    int failed;
} nd_ctx;

static int nd_line(void *ud, const fhir_node *res, size_t line_no, fhir_error *err)
{
    nd_ctx *c = ud;
    (void)line_no;
    if (map_group_add(c->g, res, err)) { /* the reader returns with this cause */
        c->failed = 1;
        return 1;
    }
    return 0;
}

static int nd_bad(void *ud, size_t line_no, const fhir_error *e)
{
    nd_ctx *c = ud;
    (void)line_no;
    (void)e;
    c->g->bad_lines++;
    return 0;
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int add_ndjson(map_group *g, const char *path, fhir_error *err)
{
    fhir_json_limits lim = {.max_bytes = g->o.max_file_bytes};
    nd_ctx c = {g, 0};
    fhir_ndjson *r = fhir_ndjson_new(&lim, nd_line, nd_bad, &c);
    if (!r)
        abort();
    int rc = fhir_ndjson_read_path(r, path, err); /* prefixes the path to what it returns */
    fhir_ndjson_free(r);
    if (rc && !c.failed)
        return fhir_error_prefix(err, "%s", path);
    return rc;
}

static int add_json(map_group *g, const char *path, fhir_error *err)
{
    fhir_json_limits lim = {.max_bytes = g->o.max_file_bytes};
    fhir_arena *a = fhir_arena_new(0);
    if (!a)
        abort();
    fhir_node *root = fhir_xml_parse_any_file(a, path, &lim, err); /* JSON, or XML by its '<' */
    int rc = 0;
    if (!root) {
        rc = -1; /* the reader's error names the path already */
    } else if (!fhir_node_resource_type(root)) {
        rc = fhir_error_set(err, "%s: not a FHIR resource (no resourceType)", path);
    } else if (map_group_add(g, root, err)) {
        rc = fhir_error_prefix(err, "%s", path);
    }
    fhir_arena_free(a);
    return rc;
}

bool map_group_is_ndjson(const char *path)
{
    return has_suffix(path, ".ndjson") || has_suffix(path, ".jsonl");
}

static int add_file(void *ud, const char *path, fhir_error *err)
{
    map_group *g = ud;
    if (strcmp(path, "-") && map_group_is_ndjson(path))
        return add_ndjson(g, path, err);
    return add_json(g, path, err);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int count_ignored(void *ud, const char *path, fhir_error *err)
{
    (void)path;
    (void)err;
    ((map_group *)ud)->ignored++;
    return 0;
}

int map_group_add_path(map_group *g, const char *path, fhir_error *err)
{
    return map_group_each_file(path, add_file, count_ignored, g, err);
}

size_t map_group_files_ignored(const map_group *g)
{
    return g->ignored;
}

static bool read_by_name(const char *nm)
{
    return has_suffix(nm, ".json") || has_suffix(nm, ".ndjson") || has_suffix(nm, ".jsonl") ||
           has_suffix(nm, ".xml");
}

int map_group_each_file(const char *path, map_group_file_fn fn, map_group_file_fn ignored, void *ud,
                        fhir_error *err)
{
    struct stat st;
    if (!strcmp(path, "-"))
        return fn(ud, path, err);
    if (stat(path, &st) != 0)
        return fhir_error_set(err, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return fn(ud, path, err);
    DIR *d = opendir(path);
    if (!d)
        return fhir_error_set(err, "%s: %s", path, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        if (nm[0] == '.')
            continue;
        if (n >= MAX_DIR_FILES)
            break;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = fhir_xrealloc(names, cap * sizeof *nn);
            names = nn;
        }
        names[n] = fhir_xstrdup(nm);
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, cmp_str);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        char full[4096];
        if ((size_t)snprintf(full, sizeof full, "%s/%s", path, names[i]) >= sizeof full) {
            rc = fhir_error_set(err, "%s/%s: path too long", path, names[i]);
            break;
        }
        struct stat fs;
        if (stat(full, &fs) != 0 || !S_ISREG(fs.st_mode))
            continue;
        if (!read_by_name(names[i])) {
            if (ignored)
                rc = ignored(ud, full, err);
            continue;
        }
        rc = fn(ud, full, err);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* ---- grouping ------------------------------------------------------------------------------ */

static size_t patient_slot(map_group *g, const char *id)
{
    size_t idx;
    if (gmap_get(&g->pt_index, id, &idx))
        return idx;
    if (g->npts == g->cappts) {
        g->cappts = g->cappts ? g->cappts * 2 : 256;
        patient *np = fhir_xrealloc(g->pts, g->cappts * sizeof *np);
        g->pts = np;
    }
    idx = g->npts++;
    memset(&g->pts[idx], 0, sizeof g->pts[idx]);
    g->pts[idx].id = id;
    gmap_put(&g->pt_index, id, idx);
    return idx;
}

static void pt_push(patient *pt, const fhir_node *res, bool front)
{
    if (pt->n == pt->cap) {
        pt->cap = pt->cap ? pt->cap * 2 : 32;
        const fhir_node **nr = fhir_xrealloc(pt->res, pt->cap * sizeof *nr);
        pt->res = nr;
    }
    if (front) {
        memmove(pt->res + 1, pt->res, pt->n * sizeof *pt->res);
        pt->res[0] = res;
    } else {
        pt->res[pt->n] = res;
    }
    pt->n++;
}

/* Patient id a reference points at; NULL when it is not a Patient reference. */
static const char *resolve_patient(map_group *g, const char *ref)
{
    if (!ref)
        return NULL;
    size_t idx;
    if (gmap_get(&g->alias, ref, &idx)) {
        const fhir_node *r = g->items[idx].res;
        const char *t = fhir_node_resource_type(r);
        return t && !strcmp(t, "Patient") ? fhir_node_resource_id(r) : NULL;
    }
    return map_group_ref_patient_id(g->a, ref);
}

const char *map_group_ref_patient_id(fhir_arena *a, const char *ref)
{
    if (!ref || !strncmp(ref, "urn:", 4))
        return NULL;
    const char *h = strstr(ref, "/_history/");
    size_t len = h ? (size_t)(h - ref) : strlen(ref);
    /* find ".../Patient/<id>" */
    const char *p = NULL;
    for (const char *s = ref; (s = strstr(s, "Patient/")) && s < ref + len; s++)
        if (s == ref || s[-1] == '/')
            p = s;
    if (!p)
        return NULL;
    const char *id = p + 8;
    size_t idl = (size_t)(ref + len - id);
    if (!idl || memchr(id, '/', idl))
        return NULL;
    return fhir_arena_strndup(a, id, idl);
}

void map_group_finish(map_group *g)
{
    if (g->finished)
        return;
    g->finished = true;
    size_t *owner = fhir_xmalloc((g->nitems ? g->nitems : 1) * sizeof *owner);
    /* Patients first, so ids come from Patient.id even when references use fullUrls. */
    for (size_t i = 0; i < g->nitems; i++) {
        owner[i] = SIZE_MAX;
        const fhir_node *r = g->items[i].res;
        const char *t = fhir_node_resource_type(r);
        if (t && !strcmp(t, "Patient")) {
            const char *id = fhir_node_resource_id(r);
            if (id)
                owner[i] = patient_slot(g, id);
        }
    }
    for (size_t i = 0; i < g->nitems; i++) {
        if (owner[i] != SIZE_MAX || !g->items[i].pref)
            continue;
        const char *id = resolve_patient(g, g->items[i].pref);
        if (id)
            owner[i] = patient_slot(g, id);
    }
    for (size_t i = 0; i < g->nitems; i++) {
        const fhir_node *r = g->items[i].res;
        const char *t = fhir_node_resource_type(r);
        if (owner[i] == SIZE_MAX) {
            if (t && strcmp(t, "Medication"))
                g->orphans++;
            continue;
        }
        patient *pt = &g->pts[owner[i]];
        pt_push(pt, r, t && !strcmp(t, "Patient"));
        /* referenced (not contained) Medication joins the patient's array once */
        const char *mref = fhir_node_path_str(r, "medicationReference.reference");
        if (!mref || mref[0] == '#')
            continue;
        size_t midx;
        bool found = gmap_get(&g->alias, mref, &midx);
        if (!found) {
            const char *m = strstr(mref, "Medication/");
            found = m && gmap_get(&g->meds, m, &midx);
        }
        if (!found)
            continue;
        const fhir_node *med = g->items[midx].res;
        bool have = false;
        for (size_t k = 0; k < pt->n && !have; k++)
            have = pt->res[k] == med;
        if (!have)
            pt_push(pt, med, false);
    }
    free(owner);
}

size_t map_group_count(map_group *g)
{
    map_group_finish(g);
    return g->npts;
}

const char *map_group_patient_id(map_group *g, size_t i)
{
    map_group_finish(g);
    return i < g->npts ? g->pts[i].id : NULL;
}

const fhir_node *const *map_group_resources(map_group *g, size_t i, size_t *n)
{
    map_group_finish(g);
    if (i >= g->npts) {
        if (n)
            *n = 0;
        return NULL;
    }
    if (n)
        *n = g->pts[i].n;
    return (const fhir_node *const *)g->pts[i].res;
}

size_t map_group_resources_seen(const map_group *g)
{
    return g->seen;
}

size_t map_group_orphans(const map_group *g)
{
    return g->orphans;
}

size_t map_group_bad_lines(const map_group *g)
{
    return g->bad_lines;
}

/* ---- the report of what was skipped (map_group_report_paths) --------------------------------- */

typedef struct rep_ctx {
    const map_group_report *r;
    const char *file;
    long bad;
    size_t unresolved;
} rep_ctx;

/* Counts the resources of doc (a resource or a Bundle) whose urn: patient reference names no
 * Patient entry of the Bundle. */
static size_t urn_orphans(const fhir_node *doc)
{
    const char *rt = fhir_node_resource_type(doc);
    if (!rt)
        return 0;
    if (strcmp(rt, "Bundle")) {
        const char *ref = map_group_patient_ref(doc);
        return ref && !strncmp(ref, "urn:", 4);
    }
    fhir_arena *a = fhir_arena_new(0);
    const fhir_ref_index *idx = fhir_ref_index_build(a, doc);
    size_t n = 0;
    for (const fhir_node *e = fhir_node_first(fhir_node_get(doc, "entry")); e; e = e->next) {
        const fhir_node *res = fhir_node_get(e, "resource");
        const char *ref = res ? map_group_patient_ref(res) : NULL;
        if (!ref || strncmp(ref, "urn:", 4))
            continue;
        const fhir_node *t = idx ? fhir_ref_resolve(idx, ref) : NULL;
        const char *tt = t ? fhir_node_resource_type(t) : NULL;
        n += !tt || strcmp(tt, "Patient");
    }
    fhir_arena_free(a);
    return n;
}

static int rep_line(void *ud, const fhir_node *res, size_t line_no, fhir_error *err)
{
    rep_ctx *c = ud;
    if (res->kind != FHIR_OBJECT) {
        c->bad++;
        if (c->r->bad_line)
            c->r->bad_line(c->r->ud, c->file, line_no);
        return 0;
    }
    c->unresolved += urn_orphans(res);
    return 0;
}

static int rep_bad(void *ud, size_t line_no, const fhir_error *e)
{
    (void)e; /* its text may quote the line */
    rep_ctx *c = ud;
    c->bad++;
    if (c->r->bad_line)
        c->r->bad_line(c->r->ud, c->file, line_no);
    return 0;
}

static int rep_file(void *ud, const char *path, fhir_error *err)
{
    rep_ctx *c = ud;
    c->file = path;
    c->unresolved = 0;
    size_t max = c->r->max_line_bytes ? c->r->max_line_bytes : (256u << 20);
    fhir_json_limits lim = {.max_bytes = max};
    int rc = 0;
    if (strcmp(path, "-") && map_group_is_ndjson(path)) {
        fhir_ndjson *nd = fhir_ndjson_new(&lim, rep_line, rep_bad, c);
        if (!nd)
            abort();
        rc = fhir_ndjson_read_path(nd, path, err);
        fhir_ndjson_free(nd);
        if (rc)
            fhir_error_prefix(err, "%s", path);
    } else if (strcmp(path, "-")) { /* stdin was read by the run already */
        fhir_arena *a = fhir_arena_new(0);
        fhir_node *root = fhir_xml_parse_any_file(a, path, &lim, err);
        if (!root)
            rc = -1;
        else
            c->unresolved = urn_orphans(root);
        fhir_arena_free(a);
    }
    if (!rc && c->unresolved && c->r->unresolved)
        c->r->unresolved(c->r->ud, path, c->unresolved);
    return rc;
}

long map_group_report_paths(const char *const *paths, size_t n, const map_group_report *r, fhir_error *err)
{
    rep_ctx c = {.r = r};
    for (size_t i = 0; i < n; i++)
        if (map_group_each_file(paths[i], rep_file, NULL, &c, err))
            return -1;
    return c.bad;
}
