/* daemon — the `cartgate run` process (see daemon.h). */
#include "daemon.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <libxml/xmlversion.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "access.h"
#include "admin.h"
#include "centers.h"
#include "config.h"
#include "elig.h"
#include "intake.h"
#include "fhir_arena.h"
#include "fhir_alloc.h"
#include "fhir_bin.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "fhir_ref.h"
#include "fhir_node.h"
#include "map_profile.h"
#include "map_tables.h"
#include "notify.h"
#include "oidc.h"
#include "poll_source.h"
#include "crashpoint.h"
#include "propose.h"
#include "referral.h"
#include "screen.h"
#include "serve.h"
#include "serve_auth.h"
#include "cds.h"
#include "route.h"
#include "sender.h"
#include "store.h"
#include "web.h"
#include "writeback.h"

/* Everything a reload replaces at once. */
typedef struct daemon_rt {
    config *cfg;
    elig_ruleset *rules;
    centers_dir *centers;
    route_cache *routes;  /* the screening's rankings' directory part (for centers and rules) */
    route_zcta *zcta;
    map_tables *tables;
    int64_t as_of_days;   /* -1 = today */
} daemon_rt;

struct daemon_proc {
    struct event_base *base;
    daemon_rt *rt;
    char *config_path;
    store *st;
    sender *snd;
    writeback *wb;           /* EHR write-back; NULL when referral.writeback is none */
    poll_source **sources;
    size_t n_sources;
    struct event *sig_term, *sig_int, *sig_hup;
    struct event *send_timer, *task_timer, *grace_timer, *retention_timer, *notify_timer;
    notify *nt;              /* notices (email / webhook); NULL when none is configured */
    serve *srv;              /* the one listener; NULL when admin.enabled is false */
    access_ctx *acc;         /* who is acting (users, sessions, tokens) */
    admin *api;              /* the JSON API's routes on srv */
    cds *hooks;              /* the CDS Hooks service on srv; NULL unless cds.enabled */
    web *ui;                 /* the clinician's pages on srv */
    intake *center;          /* a center's /fhir endpoint on srv; NULL unless role center */
    char *admin_token;       /* the shared service token, NULL when none is configured */
    bool stopping;
    bool ready;              /* every source has completed a poll (or has none) */
    daemon_rt *retired;      /* an rt replaced while its sources were still polling */
    admin_metrics m;
    fhir_json_reader *rd;    /* parses cached resources stored as JSON (older rows) */
    size_t max_resources;    /* a patient's records read per screening (DAEMON_SCREEN_MAX_RESOURCES) */
    size_t arena_max;        /* bytes of a patient's records per screening (DAEMON_SCREEN_ARENA_MAX) */
    fhir_buf bin;            /* a resource's binary form being cached (DAEMON_RESOURCE_MAX) */
};

/* ---- runtime (config + criteria + centers), loaded and swapped as one ---------------- */

static void rt_free(daemon_rt *rt)
{
    if (!rt)
        return;
    route_cache_free(rt->routes);
    elig_ruleset_free(rt->rules);
    centers_free(rt->centers);
    route_zcta_free(rt->zcta);
    map_tables_free(rt->tables);
    config_free(rt->cfg);
    free(rt);
}

/* Logs every line of diag as event=config.error. */
static void log_diag(const fhir_buf *diag)
{
    const char *p = diag->len ? diag->data : NULL;
    const char *end = p ? diag->data + diag->len : NULL;
    while (p && p < end && *p) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        char line[600];
        snprintf(line, sizeof line, "%.*s", (int)(nl ? nl - p : end - p), p);
        fhir_log(FHIR_LOG_ERROR, "config.error", "detail=%s", line);
        p = nl ? nl + 1 : NULL;
    }
}

/* Loads what the configuration names (criteria, center directory, ZIP table, mappings) into
 * rt and applies the rules across files: a center endpoint in clear to a host that is not
 * loopback is refused unless centers.insecure_plain_http (each such endpoint a "FILE:LINE:
 * what" line in diag). 0, or -1 with err. */
static int rt_load_files(daemon_rt *rt, fhir_buf *diag, fhir_error *err)
{
    const config *c = rt->cfg;
    rt->rules = elig_load_dir(c->criteria_dir, err);
    if (!rt->rules)
        return -1;
    for (size_t i = 0; i < c->criteria_enable_pending.n; i++) /* labels verified by the site */
        if (elig_ruleset_enable_pending(rt->rules, c->criteria_enable_pending.v[i], err))
            return -1;
    rt->centers = centers_load(c->centers_file, err);
    if (!rt->centers)
        return -1;
    rt->routes = route_cache_new(rt->centers);
    if (!c->centers_insecure_plain_http) {
        size_t before = diag->len;
        size_t n = centers_cleartext_endpoints(rt->centers, diag);
        if (n) {
            const char *first = diag->data + before;
            if (n > 1)
                fhir_error_set(err, "%.*s (and %zu more)", (int)strcspn(first, "\n"), first, n - 1);
            else
                fhir_error_set(err, "%.*s", (int)strcspn(first, "\n"), first);
            return -1;
        }
    }
    if (c->zcta_file) {
        rt->zcta = route_zcta_load(c->zcta_file, err);
        if (!rt->zcta)
            return -1;
    }
    rt->tables = map_tables_load(c->mappings_dir, err);
    if (!rt->tables)
        return -1;
    rt->as_of_days = -1;
    if (c->as_of && fhir_clock_parse_date(c->as_of, &rt->as_of_days) != 0)
        return fhir_error_set(err, "%s: as_of: bad date", c->path);
    return 0;
}

static daemon_rt *rt_load(const char *path, fhir_error *err)
{
    daemon_rt *rt = calloc(1, sizeof *rt);
    if (!rt)
        abort();
    fhir_buf diag;
    fhir_buf_init(&diag, DAEMON_CONFIG_DIAG_MAX);
    size_t nerr = 0;
    rt->cfg = config_load(path, &diag, &nerr, err);
    if (!rt->cfg || rt_load_files(rt, &diag, err)) {
        log_diag(&diag); /* every error on its own log line, then the summary in err */
        fhir_buf_free(&diag);
        rt_free(rt);
        return NULL;
    }
    fhir_buf_free(&diag);
    return rt;
}

int daemon_check_files(const config *c, fhir_buf *diag, fhir_error *err)
{
    daemon_rt *rt = fhir_xcalloc(1, sizeof *rt);
    rt->cfg = (config *)c; /* borrowed: not freed below */
    size_t before = diag->len;
    int rc = rt_load_files(rt, diag, err);
    if (rc && diag->len == before)
        fhir_buf_printf(diag, "%s\n", err->msg); /* a file that did not load: its one error */
    rt->cfg = NULL;
    rt_free(rt);
    return rc;
}

/* ---- ingest --------------------------------------------------------------------------- */

/* "Patient/x", "http://h/fhir/Patient/x", "Patient/x/_history/2" -> x (into out). */
static bool patient_from_ref(const char *ref, char *out, size_t outlen)
{
    if (!ref)
        return false;
    const char *p = strstr(ref, "Patient/");
    if (!p || (p != ref && p[-1] != '/'))
        return false;
    p += 8;
    size_t n = strcspn(p, "/");
    if (n == 0 || n >= outlen)
        return false;
    memcpy(out, p, n);
    out[n] = 0;
    return fhir_id_valid(out);
}

/* The patient of res into out: its own id (a Patient), else the first of its subject /
 * patient / beneficiary / individual references naming one — "Patient/<id>" (or a URL ending
 * so), or a fullUrl (urn:uuid:...) of a Patient entry of the Bundle it came in (idx, may be
 * NULL). *unresolved: it has a urn: reference there that names no Patient of its Bundle. */
static bool resource_patient(const fhir_node *res, const char *type, const fhir_ref_index *idx, char *out,
                             size_t outlen, bool *unresolved)
{
    *unresolved = false;
    if (!strcmp(type, "Patient")) {
        const char *id = fhir_node_resource_id(res);
        if (!id || strlen(id) >= outlen)
            return false;
        snprintf(out, outlen, "%s", id);
        return true;
    }
    static const char *const fields[] = {"subject", "patient", "beneficiary", "individual"};
    bool urn = false;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const fhir_node *r = fhir_node_get(res, fields[i]);
        if (fhir_node_is(r, FHIR_ARRAY))
            r = fhir_node_at(r, 0);
        const char *ref = fhir_node_path_str(r, "reference");
        if (patient_from_ref(ref, out, outlen))
            return true;
        if (!ref || strncmp(ref, "urn:", 4))
            continue;
        const fhir_node *t = idx ? fhir_ref_resolve(idx, ref) : NULL;
        const char *tt = t ? fhir_node_resource_type(t) : NULL;
        const char *id = tt && !strcmp(tt, "Patient") ? fhir_node_resource_id(t) : NULL;
        if (id && fhir_id_valid(id) && strlen(id) < outlen) {
            snprintf(out, outlen, "%s", id);
            return true;
        }
        urn = true;
    }
    *unresolved = urn;
    return false;
}

/* Stores one resource (a Bundle is unpacked: its entries resolve their urn:uuid patient
 * references within it) into the cache, inside the caller's store transaction. A resource
 * stored before with the same JSON is counted unchanged; a new or changed one holds its
 * patient for the source (screened once a poll of the source completes); one whose patient
 * reference names no patient is stored without one and counted in *unresolved. 0, or -1. */
static int ingest_in(daemon_proc *d, const char *source, const fhir_node *res, const fhir_ref_index *idx,
                     size_t *changed, size_t *unchanged, size_t *unresolved, fhir_error *err)
{
    const char *type = fhir_node_resource_type(res);
    if (!type)
        return 0; /* not a resource: ignored */
    if (!strcmp(type, "Bundle")) {
        fhir_arena *a = fhir_arena_new(0);
        const fhir_ref_index *bi = fhir_ref_index_build(a, res);
        int rc = 0;
        for (const fhir_node *e = fhir_node_first(fhir_node_get(res, "entry")); e && !rc; e = e->next) {
            const fhir_node *r = fhir_node_get(e, "resource");
            if (r && ingest_in(d, source, r, bi, changed, unchanged, unresolved, err))
                rc = -1;
        }
        fhir_arena_free(a);
        return rc;
    }
    if (!strcmp(type, "OperationOutcome"))
        return 0;
    const char *id = fhir_node_resource_id(res);
    if (!id || !*id)
        return 0; /* a resource without id cannot be cached or updated */
    if (!fhir_id_valid(id)) {
        /* counted and logged by source and type; never the id itself (it is what is wrong) */
        admin_metrics_source(&d->m, source)->refused++;
        fhir_log(FHIR_LOG_WARN, "ingest.refused", "source=%s type=%s reason=%s", source, type,
                 "id is not a FHIR id (1-64 of A-Z a-z 0-9 - .)");
        return 0;
    }
    char pid[128] = "";
    bool unres;
    bool has_patient = resource_patient(res, type, idx, pid, sizeof pid, &unres);
    if (unres) {
        admin_metrics_source(&d->m, source)->unresolved++;
        if (unresolved)
            (*unresolved)++;
    }
    /* cached in the binary form (fhir_bin.h): read back without a second JSON parse */
    fhir_buf_reset(&d->bin);
    if (fhir_bin_write(&d->bin, res) < 0)
        return fhir_error_set(err, "%s/%s: resource larger than 16 MiB", type, id);
    /* one statement: an identical cached copy is left as it is */
    bool is_new = false;
    int rc = store_resource_upsert(d->st, has_patient ? pid : "", type, id, d->bin.data, d->bin.len,
                                   &is_new, err);
    if (rc)
        return -1;
    if (!is_new) {
        if (unchanged)
            (*unchanged)++;
        return 0;
    }
    if (has_patient && store_held_mark(d->st, source, pid, err))
        return -1;
    if (changed)
        (*changed)++;
    return 0;
}

/* Removes a resource deleted at the source from the cache (inside the caller's transaction);
 * its patient is held for the source like a change, so the verdict it supported is made
 * again once the poll completes. 0, or -1 with err. */
static int remove_resource(daemon_proc *d, const char *source, const char *type,
                           const char *id, bool *found, fhir_error *err)
{
    char pid[128];
    if (store_resource_delete(d->st, type, id, pid, sizeof pid, found, err))
        return -1;
    if (*found && pid[0] && store_held_mark(d->st, source, pid, err))
        return -1;
    return 0;
}

/* ---- screening ------------------------------------------------------------------------ */

typedef struct res_list {
    fhir_arena *a;
    fhir_json_reader *rd;     /* borrowed from the daemon: the trees' member names are its own */
    const fhir_node **v;
    size_t n, cap;
    size_t max;               /* the patient's records read at most (daemon_proc.max_resources) */
    size_t read;              /* the patient's records read (v also holds referenced Medications) */
    bool full;                /* stopped at max or at the arena's cap: not every record was read */
    fhir_error *err;          /* a record that does not decode, named by type/id */
} res_list;

/* Appends one cached record, parsed. 0 to go on; 1 to stop, the list full (l->full: at max,
 * or at the arena's cap); -1 when the record does not decode (l->err names it; the caller
 * fails: a verdict is never made from less than the cache holds without saying so). own: a
 * record of the patient (counted against max), else a Medication one of them references. */
static int res_list_add(res_list *l, const char *type, const char *id, const void *data, size_t len,
                        bool own)
{
    if (own && l->read >= l->max) {
        l->full = true;
        return 1;
    }
    fhir_error e;
    fhir_error_clear(&e);
    fhir_node *n = fhir_bin_or_json_read(l->rd, l->a, data, len, &e);
    if (!n) {
        /* the arena's cap or a damaged row (the db edited, a disk fault): read alone, with no
         * cap, the record tells which (only on this path, never in the usual case) */
        fhir_arena *t = fhir_arena_new(0);
        fhir_error e2;
        bool decodes = fhir_bin_or_json_read(NULL, t, data, len, &e2) != NULL;
        fhir_arena_free(t);
        if (decodes && own) {
            l->full = true;
            return 1;
        }
        fhir_error_set(l->err, "cached %s/%s does not decode (%s)", type ? type : "?", id ? id : "?",
                       decodes ? "larger than the memory left for this chart" : e.msg);
        return -1;
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        const fhir_node **nv = realloc(l->v, l->cap * sizeof *nv);
        if (!nv)
            abort();
        l->v = nv;
    }
    l->v[l->n++] = n;
    if (own)
        l->read++;
    return 0;
}

typedef struct res_walk {
    res_list *l;
    int rc;                   /* res_list_add's last answer */
} res_walk;

static int res_bytes_cb(void *ctx, const void *data, size_t len)
{
    res_walk *w = ctx;
    w->rc = res_list_add(w->l, NULL, NULL, data, len, true);
    return w->rc != 0;
}

/* Names the patient's first cached record that does not decode in err (ctx); 1 to stop there. */
static int name_undecodable(void *ctx, const char *type, const char *id, const void *data, size_t len)
{
    fhir_arena *t = fhir_arena_new(0);
    fhir_error e;
    fhir_error_clear(&e);
    bool decodes = fhir_bin_or_json_read(NULL, t, data, len, &e) != NULL;
    fhir_arena_free(t);
    if (decodes)
        return 0;
    fhir_error_set(ctx, "cached %s/%s does not decode (%s)", type ? type : "?", id ? id : "?", e.msg);
    return 1;
}

static int med_cb(void *ctx, const char *type, const char *id, const void *data, size_t len)
{
    res_walk *w = ctx;
    w->rc = res_list_add(w->l, type, id, data, len, false);
    return w->rc != 0;
}

/* A resource with its sort key, looked up once (not in every comparison). */
typedef struct res_key {
    const char *type, *id;
    const fhir_node *n;
} res_key;

static int res_order(const void *a, const void *b)
{
    const res_key *x = a, *y = b;
    int c = strcmp(x->type, y->type);
    return c ? c : strcmp(x->id, y->id);
}

/* res_order inlined, the type compared by address first (res_list_load gives records of one
 * type read one after another the same type text). */
static inline int key_order(const res_key *x, const res_key *y)
{
    int c = x->type == y->type ? 0 : strcmp(x->type, y->type);
    return c ? c : strcmp(x->id, y->id);
}

/* k[0..n) in key_order, stably (as qsort's merge sort left equal keys); tmp holds n / 2.
 * The cache gives a patient's records as runs in order (by type, mostly by id): two halves
 * already in order cost one comparison. */
static void keys_sort(res_key *k, res_key *tmp, size_t n)
{
    if (n <= 8) {
        for (size_t i = 1; i < n; i++) {
            res_key v = k[i];
            size_t j = i;
            for (; j > 0 && key_order(&k[j - 1], &v) > 0; j--)
                k[j] = k[j - 1];
            k[j] = v;
        }
        return;
    }
    size_t h = n / 2;
    keys_sort(k, tmp, h);
    keys_sort(k + h, tmp, n - h);
    if (key_order(&k[h - 1], &k[h]) <= 0)
        return;
    memcpy(tmp, k, h * sizeof *k);
    size_t a = 0, b = h, o = 0;
    while (a < h && b < n)
        k[o++] = key_order(&k[b], &tmp[a]) < 0 ? k[b++] : tmp[a++];
    while (a < h)
        k[o++] = tmp[a++];
}

/* The patient's cached resources, parsed, in (type, id) order (the cache's key, as the profile
 * always read them), at most l->max of them; rec (may be NULL) gets how many were read of
 * those cached. 0, or -1 with the list's err set: the store failed, or a record does not
 * decode (nothing is made of the rest). */
static int res_list_load(daemon_proc *d, res_list *l, const char *pid, elig_records *rec)
{
    res_walk w = {l, 0};
    if (store_resource_each(d->st, pid, res_bytes_cb, &w, l->err) < 0)
        return -1;
    if (w.rc < 0) {
        /* the bytes alone do not say which record that was: read again with the type and id
         * columns, only on this path */
        store_resource_each_named(d->st, pid, name_undecodable, l->err, l->err);
        return -1;
    }
    if (rec) {
        int64_t cached = l->full ? store_resource_count(d->st, pid) : (int64_t)l->read;
        if (cached < 0)
            return fhir_error_set(l->err, "counting the patient's cached records failed");
        *rec = (elig_records){l->read, (uint64_t)cached};
    }
    if (l->n < 2)
        return 0;
    res_key *k = fhir_xcalloc(l->n + l->n / 2, sizeof *k); /* the keys, then keys_sort's room */
    const char *prev = NULL;
    for (size_t i = 0; i < l->n; i++) {
        const char *t = fhir_node_resource_type(l->v[i]), *id = fhir_node_resource_id(l->v[i]);
        t = t ? t : "";
        if (prev && !strcmp(t, prev))
            t = prev; /* one address per run of a type: key_order compares those without strcmp */
        prev = t;
        k[i] = (res_key){t, id ? id : "", l->v[i]};
    }
    keys_sort(k, k + l->n, l->n);
    for (size_t i = 0; i < l->n; i++)
        l->v[i] = k[i].n;
    free(k);
    return 0;
}

/* Is a resource of this type and (non-empty) id among v[0..n), sorted as res_list_load sorts
 * (res_order: a missing type or id as "")? */
static bool res_sorted_has(const fhir_node *const *v, size_t n, const char *type, const char *id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *t = fhir_node_resource_type(v[mid]), *i = fhir_node_resource_id(v[mid]);
        res_key k = {t ? t : "", i ? i : "", v[mid]}, want = {type, id, NULL};
        int c = res_order(&k, &want);
        if (!c)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* Adds the Medications the patient's medication resources reference (shared pool), by
 * "Medication/<id>" or an absolute URL ending so (fhir_ref_split, as the referral package's
 * drugs_fetch reads them; the profile resolves both). One not cached is left out (the row
 * keeps its display); 0, or -1 with the list's err: the store failed, or one does not decode. */
static int add_referenced_medications(daemon_proc *d, res_list *l)
{
    size_t n0 = l->n;
    for (size_t i = 0; i < n0; i++) {
        const char *ref = fhir_node_path_str(l->v[i], "medicationReference.reference"), *type, *id;
        bool contained;
        if (!fhir_ref_split(l->a, ref, &type, &id, &contained) || contained || !type ||
            strcmp(type, "Medication"))
            continue;
        /* the patient's own records are in (type, id) order: a binary search; those added
         * here (after n0) one by one */
        bool have = *id && res_sorted_has(l->v, n0, "Medication", id);
        for (size_t j = *id ? n0 : 0; j < l->n && !have; j++)
            if (!strcmp(fhir_node_resource_type(l->v[j]) ? fhir_node_resource_type(l->v[j]) : "",
                        "Medication") &&
                fhir_node_resource_id(l->v[j]) && !strcmp(fhir_node_resource_id(l->v[j]), id))
                have = true;
        if (have)
            continue;
        res_walk w = {l, 0};
        if (store_resource_get(d->st, "Medication", id, med_cb, &w, l->err) < 0 || w.rc < 0)
            return -1;
    }
    return 0;
}

/* One patient's screening: built (reads only), then its verdict and the proposal it calls
 * for written together inside the batch's transaction, then reported (counters, log lines)
 * once that has committed. */
typedef struct screen_job {
    char *pid;
    res_list l;
    screen *sc;
    const map_profile *p;     /* p, fs, res: borrowed from sc */
    const elig_factset *fs;
    const elig_result *res;
    fhir_buf vj, pj;
    fhir_buf products, possible; /* the worklist's arrays (parts of vj: its cap) */
    bool ok;
    bool gone;                /* nothing of the patient is cached any more (all deleted) */
    bool pruned;              /* nothing cached because store.retention pruned it: verdict kept */
    elig_records rec;         /* the patient's records read of those cached (partial: fewer) */
    /* written with the batch */
    char *old_category;       /* the verdict before this one (NULL: none) */
    propose_result prop;
} screen_job;

static void job_free(screen_job *j)
{
    screen_free(j->sc);
    fhir_buf_free(&j->vj);
    fhir_buf_free(&j->pj);
    fhir_buf_free(&j->products);
    fhir_buf_free(&j->possible);
    fhir_arena_free(j->l.a);
    free(j->l.v);
    free(j->pid);
    free(j->old_category);
    memset(j, 0, sizeof *j);
}

/* Loads the patient's resources, builds the profile and evaluates it (no store writes). */
static int job_build(daemon_proc *d, screen_job *j, const char *pid, fhir_error *err)
{
    daemon_rt *rt = d->rt;
    memset(j, 0, sizeof *j);
    j->pid = fhir_xstrdup(pid);
    j->l.a = fhir_arena_new(d->arena_max);
    j->l.rd = d->rd;
    j->l.max = d->max_resources;
    j->l.err = err;
    fhir_buf_init(&j->vj, DAEMON_VERDICT_JSON_MAX);
    fhir_buf_init(&j->pj, DAEMON_PROFILE_JSON_MAX);
    fhir_buf_init(&j->products, DAEMON_VERDICT_JSON_MAX);
    fhir_buf_init(&j->possible, DAEMON_VERDICT_JSON_MAX);
    if (res_list_load(d, &j->l, pid, &j->rec) || add_referenced_medications(d, &j->l))
        return -1;
    if (j->l.n == 0) {
        /* every resource of the patient was deleted at the source: no verdict may stay; but
         * a cache store.retention emptied keeps its verdict until new data arrives */
        int64_t pruned = store_verdict_pruned(d->st, pid);
        if (pruned < 0)
            return fhir_error_set(err, "reading the retention mark failed");
        j->pruned = pruned > 0;
        j->gone = !j->pruned;
        return 0;
    }
    map_profile_opts o;
    map_profile_opts_default(&o);
    if (rt->as_of_days >= 0)
        o.as_of_days = rt->as_of_days;
    j->sc = screen_new(rt->tables, rt->rules, &o);
    if (screen_patient(j->sc, j->l.v, j->l.n, err))
        return -1;
    screen_set_records(j->sc, &j->rec); /* the verdict says when it was made from part of the chart */
    j->p = screen_profile(j->sc);
    j->fs = screen_facts(j->sc);
    j->res = screen_result(j->sc);
    screen_write_verdict_json(j->sc, pid, &j->vj);
    j->ok = true;
    return 0;
}

/* Does the profile hold a heme diagnosis, or might it (store.retention keeps such patients)?
 * Only a known, closed set of diseases with nothing but non_heme in it says no. */
static bool profile_has_heme(const map_profile *p)
{
    const map_fact *f = map_profile_fact(p, "diseases");
    if (!f || !f->known || f->open || f->nmaybe)
        return true;
    for (size_t i = 0; i < f->nset; i++)
        if (strcmp(f->set[i], "non_heme"))
            return true;
    return false;
}

/* Inside the batch's transaction: the verdict and the proposal it calls for. With unit, as one
 * unit (a savepoint): both are written, or neither; 0, or -1 with err (nothing of the patient
 * written). Without (screen_pending's first try of a batch), -1 leaves part of the patient
 * written: the caller rolls the transaction back. */
static int job_commit(daemon_proc *d, screen_job *j, bool unit, fhir_error *err)
{
    daemon_rt *rt = d->rt;
    const config *c = rt->cfg;
    elig_category cat = elig_result_category(j->res);
    if (unit && store_savepoint(d->st, err))
        return -1;
    free(j->old_category);
    j->old_category = NULL;
    propose_opts po = {
        .site_id = c->site_id, .site_name = c->site_name, .site_has_location = c->site_has_location,
        .site_lat = c->site_lat, .site_lon = c->site_lon, .with_possible = c->referral_min_category == 1,
        .consult_proposals = c->referral_consult_proposals,
        .report_lookback_days = c->referral_report_lookback_days,
        .urgency_default = c->referral_urgency_default,
        .mode = c->referral_mode ? REFER_MODE_AUTO : REFER_MODE_APPROVAL, .rules = rt->rules,
        .centers = rt->centers, .zcta = rt->zcta, .route_cache = rt->routes,
        .day = rt->as_of_days >= 0 ? rt->as_of_days : fhir_clock_now() / 86400,
        .referrer_name = c->referrer_name, .referrer_phone = c->referrer_phone,
        .referrer_direct = c->referrer_direct,
        .defer_texts = true, /* composed when first read (compose_texts) */
    };
    propose_input pi = {
        .patient_id = j->pid, .profile = j->p, .facts = j->fs, .result = j->res,
        .verdict_json = fhir_buf_cstr(&j->vj), .resources = j->l.v, .n_resources = j->l.n,
    };
    /* the worklist row from the values the JSON was written from; from the JSON itself in
     * SQL when a text hit its cap (what is stored then is what the row is made of) */
    screen_summary sum;
    store_worklist_in wl;
    bool typed = !j->vj.overflow && !screen_summarize(j->sc, &sum, &j->products, &j->possible);
    /* the profile is stored only for that SQL (the API builds it again when asked,
     * api_profile): it is the largest text of a verdict and nothing else reads it back */
    if (!typed)
        map_profile_write_json(j->p, &j->pj, 0);
    if (typed)
        wl = (store_worklist_in){.urgency = sum.urgency, .consult = sum.consult,
                                 .disease = sum.disease,
                                 .relapse_day = sum.relapse_day[0] ? sum.relapse_day : NULL,
                                 .missing = (int64_t)sum.missing,
                                 .products = fhir_buf_cstr(&j->products),
                                 .possible = fhir_buf_cstr(&j->possible)};
    if (store_verdict_get(d->st, j->pid, NULL, &j->old_category, NULL, err) < 0 ||
        store_verdict_put_screened(d->st, j->pid, elig_ruleset_hash(rt->rules),
                                   elig_category_name(cat), typed ? NULL : fhir_buf_cstr(&j->pj),
                                   fhir_buf_cstr(&j->vj), profile_has_heme(j->p),
                                   typed ? &wl : NULL, err) ||
        propose_referral(d->st, &po, &pi, &j->prop, err) ||
        (unit && store_savepoint_release(d->st, err))) {
        if (unit) /* without, the caller rolls the whole batch back */
            store_savepoint_rollback(d->st);
        return -1;
    }
    crashpoint("screen.proposed");
    return 0;
}

/* Inside the batch's transaction: the verdict of a patient of whom nothing is cached any
 * more is removed and the proposals still pending approval withdrawn. 0, or -1 with err;
 * unit as for job_commit. */
static int job_commit_gone(daemon_proc *d, screen_job *j, bool unit, fhir_error *err)
{
    if (unit && store_savepoint(d->st, err))
        return -1;
    free(j->old_category);
    j->old_category = NULL;
    if (store_verdict_get(d->st, j->pid, NULL, &j->old_category, NULL, err) < 0 ||
        store_verdict_delete(d->st, j->pid, err) ||
        propose_withdraw(d->st, j->pid, &j->prop, err) ||
        (unit && store_savepoint_release(d->st, err))) {
        if (unit) /* without, the caller rolls the whole batch back */
            store_savepoint_rollback(d->st);
        return -1;
    }
    return 0;
}

/* What is reported of a patient once the batch has committed. */
typedef struct screen_report {
    char *pid;
    char *old_category;
    bool gone;                /* verdict removed: nothing of the patient is cached any more */
    elig_category category;
    elig_urgency urgency;
    elig_records rec;         /* read < cached: the verdict was made from part of the chart */
    propose_result prop;
} screen_report;

static void report_take(screen_report *r, screen_job *j)
{
    memset(r, 0, offsetof(screen_report, prop)); /* the batch's array is not zeroed; prop is set below */
    r->pid = j->pid;
    r->old_category = j->old_category;
    j->pid = j->old_category = NULL;
    r->gone = j->gone;
    if (!j->gone) {
        r->category = elig_result_category(j->res);
        r->urgency = elig_result_urgency(j->res);
        r->rec = j->rec;
    }
    r->prop = j->prop;
}

/* After the batch committed: counters and log lines. */
static void report_log(daemon_proc *d, const screen_report *r)
{
    if (r->gone) {
        if (r->old_category)
            fhir_log(FHIR_LOG_INFO, "screen.verdict",
                     "patient=%s category=none previous=%s reason=no_data_cached", r->pid,
                     r->old_category);
        propose_log(r->pid, d->rt->cfg->referral_mode ? REFER_MODE_AUTO : REFER_MODE_APPROVAL,
                    &r->prop);
        return;
    }
    const char *cat = elig_category_name(r->category);
    d->m.patients_screened++;
    if ((unsigned)r->category < 4)
        d->m.verdicts[r->category]++;
    if (r->rec.read < r->rec.cached) {
        d->m.screen_partial++;
        fhir_log(FHIR_LOG_WARN, "screen.partial", "patient=%s read=%llu cached=%llu category=%s", r->pid,
                 (unsigned long long)r->rec.read, (unsigned long long)r->rec.cached, cat);
    }
    if (!r->old_category || strcmp(r->old_category, cat))
        fhir_log(FHIR_LOG_INFO, "screen.verdict", "patient=%s category=%s previous=%s urgency=%s", r->pid,
                 cat, r->old_category ? r->old_category : "none", elig_urgency_name(r->urgency));
    if (r->prop.outcome == PROPOSE_CREATED)
        d->m.referrals_created++;
    propose_log(r->pid, d->rt->cfg->referral_mode ? REFER_MODE_AUTO : REFER_MODE_APPROVAL, &r->prop);
}

static bool is_candidate(const char *category)
{
    return category && (!strcmp(category, "eligible") || !strcmp(category, "possibly_eligible"));
}

/* After a batch committed: the patients who became candidates at or above notify.candidates'
 * urgency make one notice (a count, the highest urgency, a link; never who). */
static void notify_candidates(daemon_proc *d, const screen_report *rep, size_t nrep)
{
    int least = d->rt->cfg->notify_candidates; /* 0 off, else an elig_urgency */
    if (!d->nt || least <= 0)
        return;
    const char **keys = fhir_xcalloc(nrep + 1, sizeof *keys);
    char (*buf)[160] = fhir_xcalloc(nrep + 1, sizeof *buf);
    size_t n = 0;
    elig_urgency top = ELIG_URGENCY_NONE;
    int64_t now = fhir_clock_now_ms();
    for (size_t i = 0; i < nrep; i++) {
        const screen_report *r = &rep[i];
        if (r->gone || (int)r->urgency < least || !is_candidate(elig_category_name(r->category)) ||
            is_candidate(r->old_category))
            continue;
        snprintf(buf[n], sizeof buf[n], "candidate:%s:%lld", r->pid, (long long)now);
        keys[n] = buf[n];
        n++;
        if (r->urgency > top)
            top = r->urgency;
    }
    fhir_error err;
    fhir_error_clear(&err);
    if (n && notify_screened(d->nt, d->st, keys, n, elig_urgency_name(top), &err))
        fhir_log(FHIR_LOG_ERROR, "notify.failed", "kind=urgent_candidates error=%s", err.msg);
    free(keys);
    free(buf);
}

/* patients per transaction (one fsync) ...: each commit writes every page the batch touched
 * (worklist and verdict index pages, the dirty and held tables) once more; 256 instead of 64
 * wrote 7 % fewer bytes over 2,000 patients (1024: no fewer) */
#define SCREEN_BATCH 256
#define SCREEN_BATCH_MS 1000    /* ... or as many as this long allows, whichever is less */

/* Frees a batch's reports (of a batch rolled back: nothing of them logged or counted). */
static void report_drop(screen_report *rep, size_t nrep)
{
    for (size_t i = 0; i < nrep; i++) {
        free(rep[i].pid);
        free(rep[i].old_category);
    }
    free(rep);
}

static void screen_failed(daemon_proc *d, const char *pid, const fhir_error *e)
{
    d->m.screen_errors++;
    fhir_log(FHIR_LOG_WARN, "screen.failed", "patient=%s error=%s", pid, e->msg);
}

/* Screens every patient marked by ingest, one patient in memory at a time. Each batch of
 * patients is one transaction: their verdicts, the proposals they call for and the removal of
 * their marks commit together (a crash leaves them marked, and the restart screens them
 * again). A patient whose writes fail leaves nothing written and the others are kept: a batch
 * is first tried without a savepoint per patient (each one copied every page the patient's
 * writes touched, 16 KiB each, into the sub-journal: ~150 M instructions at 1,000 patients);
 * when a patient fails, the batch is rolled back and its patients up to that one are screened
 * again, each in its own savepoint (job_commit's unit), the rest in the next batch.
 * Returns how many were screened, -1 on a store error. */
static long screen_pending(daemon_proc *d, fhir_error *err)
{
    long total = 0;
    size_t guarded = 0; /* patients of the next batch screened with a savepoint each */
    for (;;) {
        /* no ranking of an earlier batch is alive here: a full cache of the directory's
         * part of rankings is emptied (past days), so it serves the days to come */
        route_cache_settle(d->rt->routes);
        char *ids[SCREEN_BATCH];
        long got = store_dirty_next(d->st, ids, SCREEN_BATCH, err);
        if (got <= 0)
            return got < 0 ? -1 : total;
        size_t n = (size_t)got, done = 0, nrep = 0;
        /* filled by report_take one by one (a batch's worth of zeroed reports was a memset of
         * ~300 KB per batch, most of it never used) */
        screen_report *rep = fhir_xmalloc(n * sizeof *rep);
        fhir_error e;
        fhir_error_clear(&e);
        int rc = store_begin(d->st, &e);
        int64_t t0 = fhir_clock_mono_ms();
        bool unit = guarded > 0, retry = false;
        if (unit && n > guarded)
            n = guarded; /* the patients after the failed one: the next batch, without */
        guarded = 0;
        for (; rc == 0 && done < n; done++) {
            if (done > 0 && fhir_clock_mono_ms() - t0 > SCREEN_BATCH_MS)
                break; /* the rest stays marked for the next batch */
            screen_job j;
            bool failed = job_build(d, &j, ids[done], &e) != 0; /* reads only */
            if (!failed && !j.pruned &&
                (j.gone ? job_commit_gone(d, &j, unit, &e) : job_commit(d, &j, unit, &e))) {
                if (!unit) {
                    /* part of the patient may be written: again from the batch's start, the
                     * failure logged and counted once, by that pass */
                    job_free(&j);
                    retry = true;
                    break;
                }
                failed = true;
            }
            if (failed) {
                screen_failed(d, ids[done], &e);
                fhir_error_clear(&e);
            } else if (!j.pruned) {
                report_take(&rep[nrep++], &j);
            }
            job_free(&j);
            rc = store_dirty_clear(d->st, ids[done], &e);
        }
        if (retry) {
            store_rollback(d->st);
            guarded = done + 1;
            report_drop(rep, nrep);
            for (size_t i = 0; i < (size_t)got; i++)
                free(ids[i]);
            continue;
        }
        if (rc == 0)
            rc = store_commit(d->st, &e);
        else
            store_rollback(d->st);
        if (rc == 0)
            crashpoint("screen.committed");
        if (rc == 0)
            notify_candidates(d, rep, nrep);
        for (size_t i = 0; i < nrep && rc == 0; i++)
            report_log(d, &rep[i]);
        report_drop(rep, nrep);
        for (size_t i = 0; i < (size_t)got; i++)
            free(ids[i]);
        if (rc)
            return fhir_error_set(err, "screening batch: %s", e.msg);
        total += (long)done;
    }
}

/* ---- sender timers ------------------------------------------------------------------- */

static void sender_rebuild(daemon_proc *d)
{
    sender_free(d->snd);
    d->snd = NULL;
    /* asynchronous on the daemon's loop: one queue per center (sender.h) */
    sender_opts so = {.centers = d->rt->centers, .base = d->base,
                      .backoff_base_ms = d->rt->cfg->referral_retry_min_ms,
                      .backoff_cap_ms = d->rt->cfg->referral_retry_max_s * 1000};
    fhir_error err;
    d->snd = sender_new(d->st, &so, &err);
    if (!d->snd) {
        fhir_log(FHIR_LOG_ERROR, "sender.failed", "error=%s", err.msg);
    }
    writeback_free(d->wb);
    d->wb = NULL;
    const config *c = d->rt->cfg;
    if (c->referral_writeback != CONFIG_WRITEBACK_NONE && c->referral_writeback_source) {
        const config_source *src = NULL;
        for (size_t i = 0; i < c->n_sources; i++)
            if (!strcmp(c->sources[i].name, c->referral_writeback_source))
                src = &c->sources[i];
        writeback_opts wo = {.base = d->base, .kind = c->referral_writeback, .source = src,
                             .centers = d->rt->centers};
        fhir_error_clear(&err);
        d->wb = writeback_new(d->st, &wo, &err);
        if (!d->wb) {
            fhir_log(FHIR_LOG_ERROR, "writeback.disabled", "error=%s", err.msg);
        }
    }
}

/* Copies new center-driven state changes into the write-back outbox and writes the pending
 * ones to the EHR (asynchronous; writeback.h). */
static void writeback_kick(daemon_proc *d)
{
    if (d->stopping || !d->wb)
        return;
    fhir_error err;
    fhir_error_clear(&err);
    if (writeback_pass_start(d->wb, &err)) {
        fhir_log(FHIR_LOG_ERROR, "writeback.pass_failed", "error=%s", err.msg);
    }
}

static void on_send_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    daemon_proc *d = arg;
    if (d->stopping || !d->snd)
        return;
    /* loads the idle centers' queues and returns; each center drains on the loop and logs
     * event=sender.pass when its queue is done */
    fhir_error err;
    fhir_error_clear(&err);
    if (sender_pass_start(d->snd, &err)) {
        fhir_log(FHIR_LOG_ERROR, "sender.pass_failed", "error=%s", err.msg);
    }
    writeback_kick(d);
}

static void on_task_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    daemon_proc *d = arg;
    if (d->stopping || !d->snd)
        return;
    fhir_error err;
    fhir_error_clear(&err);
    if (sender_poll_start(d->snd, &err)) {
        fhir_log(FHIR_LOG_ERROR, "sender.poll_failed", "error=%s", err.msg);
    }
    writeback_kick(d);
}

/* store.retention: the cached resources of patients without a heme diagnosis whose data has
 * not changed for retention_days are removed (counts logged and audited, never an id). */
static void retention_pass(daemon_proc *d)
{
    long days = d->rt->cfg->store_retention_days;
    if (days <= 0 || d->stopping)
        return;
    fhir_error err;
    fhir_error_clear(&err);
    store_prune_counts n = {0};
    int64_t cutoff = fhir_clock_now_ms() - (int64_t)days * 86400000;
    int rc = store_begin(d->st, &err);
    if (rc == 0)
        rc = store_retention_prune(d->st, cutoff, true, &n, &err);
    if (rc == 0 && n.resources > 0) {
        char detail[160];
        snprintf(detail, sizeof detail, "store.retention %ld days: %lld patients, %lld resources", days,
                 (long long)n.patients, (long long)n.resources);
        store_actor who = {.name = "retention"};
        rc = store_audit_actor(d->st, &who, "retention-prune", 0, NULL, NULL, detail, &err);
    }
    if (rc == 0)
        rc = store_commit(d->st, &err);
    else
        store_rollback(d->st);
    if (rc) {
        fhir_log(FHIR_LOG_ERROR, "retention.failed", "error=%s", err.msg);
        return;
    }
    d->m.retention_resources += (uint64_t)n.resources;
    fhir_log(FHIR_LOG_INFO, "retention.pruned", "days=%ld patients=%lld resources=%lld", days,
             (long long)n.patients, (long long)n.resources);
}

static void on_retention_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    retention_pass(arg);
}

static void on_notify_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    daemon_proc *d = arg;
    if (d->stopping || !d->nt)
        return;
    fhir_error err;
    fhir_error_clear(&err);
    if (notify_scan(d->nt, d->st, &err))
        fhir_log(FHIR_LOG_ERROR, "notify.scan_failed", "error=%s", err.msg);
    fhir_error_clear(&err);
    if (d->center && intake_scan(d->center, &err))
        fhir_log(FHIR_LOG_ERROR, "intake.scan_failed", "error=%s", err.msg);
}

static void arm_timers(daemon_proc *d)
{
    const config *c = d->rt->cfg;
    struct timeval tv = {.tv_sec = c->referral_send_interval_s};
    if (!d->send_timer)
        d->send_timer = event_new(d->base, -1, EV_PERSIST, on_send_timer, d);
    event_add(d->send_timer, &tv);
    struct timeval tv2 = {.tv_sec = c->referral_task_poll_s};
    if (!d->task_timer)
        d->task_timer = event_new(d->base, -1, EV_PERSIST, on_task_timer, d);
    event_add(d->task_timer, &tv2);
    if (d->nt) {
        struct timeval tv4 = {.tv_sec = DAEMON_NOTIFY_SCAN_S};
        if (!d->notify_timer)
            d->notify_timer = event_new(d->base, -1, EV_PERSIST, on_notify_timer, d);
        event_add(d->notify_timer, &tv4);
    }
    struct timeval tv3 = {.tv_sec = DAEMON_RETENTION_INTERVAL_S};
    if (!d->retention_timer)
        d->retention_timer = event_new(d->base, -1, EV_PERSIST, on_retention_timer, d);
    event_add(d->retention_timer, &tv3);
}

/* ---- sources ------------------------------------------------------------------------- */

static void sources_free(daemon_proc *d)
{
    for (size_t i = 0; i < d->n_sources; i++)
        poll_source_free(d->sources[i]);
    free(d->sources);
    d->sources = NULL;
    d->n_sources = 0;
}

/* ---- the sources' environment ---------------------------------------------------------- */

static int env_ingest(void *ud, const char *source, const fhir_node *res, size_t *changed,
                      size_t *unchanged, size_t *unresolved, fhir_error *err)
{
    return ingest_in(ud, source, res, NULL, changed, unchanged, unresolved, err);
}

static int env_remove(void *ud, const char *source, const char *type, const char *id,
                      bool *found, fhir_error *err)
{
    return remove_resource(ud, source, type, id, found, err);
}

static void env_count_status(void *ud, const char *source, long status)
{
    daemon_proc *d = ud;
    admin_metrics_count_status(admin_metrics_source(&d->m, source), status);
}

static void on_poll_done(void *ud, poll_source *src, const poll_result *r);

static int sources_build(daemon_proc *d, fhir_error *err)
{
    const config *c = d->rt->cfg;
    d->sources = calloc(c->n_sources + 1, sizeof *d->sources);
    if (!d->sources)
        abort();
    poll_env env = {.base = d->base, .st = d->st, .ud = d, .ingest = env_ingest,
                    .remove = env_remove, .done = on_poll_done,
                    .count_status = env_count_status};
    for (size_t i = 0; i < c->n_sources; i++) {
        admin_metrics_source(&d->m, c->sources[i].name); /* counters shown from the start */
        poll_source *p = poll_source_new(&env, &c->sources[i], err);
        if (!p)
            return fhir_error_prefix(err, "source %s", c->sources[i].name);
        d->sources[d->n_sources++] = p;
    }
    return 0;
}

static bool any_busy(const daemon_proc *d)
{
    for (size_t i = 0; i < d->n_sources; i++)
        if (poll_source_busy(d->sources[i]))
            return true;
    return false;
}

static void apply_pending_sources(daemon_proc *d)
{
    if (!d->retired || any_busy(d))
        return;
    sources_free(d);
    rt_free(d->retired);
    d->retired = NULL;
    fhir_error err;
    if (sources_build(d, &err)) {
        fhir_log(FHIR_LOG_ERROR, "sources.failed", "error=%s", err.msg);
    }
}

static void on_apply_sources(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    apply_pending_sources(arg);
}

/* Screens the patients marked by the polls, updates readiness, and finishes a stop or a
 * reload that waited for the sources. */
static void after_polls(daemon_proc *d)
{
    fhir_error err;
    fhir_error_clear(&err);
    long n = screen_pending(d, &err);
    if (n > 0)
        fhir_log(FHIR_LOG_INFO, "screen.batch", "patients=%ld", n);
    else if (n < 0) {
        fhir_log(FHIR_LOG_ERROR, "screen.failed", "error=%s", err.msg);
    }
    bool ready = true;
    for (size_t i = 0; i < d->n_sources; i++)
        if (!poll_source_done_once(d->sources[i]))
            ready = false;
    if (ready && !d->ready)
        fhir_log(FHIR_LOG_INFO, "daemon.ready", "sources=%zu", d->n_sources);
    d->ready = d->ready || ready;
    if (d->stopping && !any_busy(d))
        event_base_loopexit(d->base, NULL);
    else if (!d->stopping && d->retired) {
        /* not from inside the client callback that brought us here: the sources (and their
         * clients) may be replaced */
        struct timeval tv = {0, 0};
        event_base_once(d->base, -1, EV_TIMEOUT, on_apply_sources, d, &tv);
    }
}

/* A source's poll ended: its counters, then screening. */
static void on_poll_done(void *ud, poll_source *src, const poll_result *r)
{
    daemon_proc *d = ud;
    admin_source_metrics *m = admin_metrics_source(&d->m, poll_source_name(src));
    m->resources += r->changed;
    m->unchanged += r->unchanged;
    m->deleted += r->deleted;
    m->outcome_issues += r->outcome_issues;
    m->bulk_issues += r->bulk_issues;
    m->since_ignored = m->since_ignored || r->since_ignored;
    if (r->ok) {
        m->polls_ok++;
        m->last_success_ms = fhir_clock_now_ms();
    } else {
        m->polls_failed++;
        admin_metrics_count_failure(m, r->fail_reason);
    }
    after_polls(d);
}

/* ---- signals and life -------------------------------------------------------------------- */

static void on_grace(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    daemon_proc *d = arg;
    fhir_log(FHIR_LOG_WARN, "daemon.grace_expired", "note=in-flight polls abandoned; cursors not advanced");
    event_base_loopexit(d->base, NULL);
}

void daemon_stop(daemon_proc *d)
{
    if (d->stopping)
        return;
    d->stopping = true;
    for (size_t i = 0; i < d->n_sources; i++)
        poll_source_pause(d->sources[i]);
    if (d->send_timer)
        event_del(d->send_timer);
    if (d->task_timer)
        event_del(d->task_timer);
    if (d->retention_timer)
        event_del(d->retention_timer);
    if (d->notify_timer)
        event_del(d->notify_timer);
    if (!any_busy(d)) {
        event_base_loopexit(d->base, NULL);
        return;
    }
    fhir_log(FHIR_LOG_INFO, "daemon.draining", "grace_s=%ld", d->rt->cfg->shutdown_grace_s);
    struct timeval tv = {.tv_sec = d->rt->cfg->shutdown_grace_s};
    d->grace_timer = evtimer_new(d->base, on_grace, d);
    evtimer_add(d->grace_timer, &tv);
}

static int load_admin_token(const config *c, char **out, fhir_error *err)
{
    *out = NULL;
    if (!c->admin_enabled || (!c->admin_token_file && !c->admin_token_env))
        return 0; /* no shared service token: people use their own */
    return config_read_secret(c->admin_token_file, c->admin_token_env, out, err);
}


int daemon_reload(daemon_proc *d, fhir_error *err)
{
    daemon_rt *nrt = rt_load(d->config_path, err);
    char *tok = NULL;
    if (nrt && load_admin_token(nrt->cfg, &tok, err)) {
        rt_free(nrt);
        nrt = NULL;
    }
    if (!nrt) {
        d->m.reloads_failed++;
        fhir_log(FHIR_LOG_ERROR, "reload.refused", "error=%s kept=previous", err->msg);
        return -1;
    }
    const config *oc = d->rt->cfg, *nc = nrt->cfg;
    char later[512];
    if (config_restart_changes(oc, nc, later, sizeof later))
        fhir_log(FHIR_LOG_WARN, "reload.restart_needed", "options=%s note=%s", later,
                 "these apply at the next start");
    if (d->srv) {
        /* the same certificate and key files, read again (renewed certificates) */
        fhir_error te;
        fhir_error_clear(&te);
        if (serve_reload_tls(d->srv, &te))
            fhir_log(FHIR_LOG_ERROR, "reload.tls_refused", "error=%s kept=previous", te.msg);
    }
    free(d->admin_token);
    d->admin_token = tok;
    if (d->acc)
        access_set_shared_token(d->acc, tok);
    fhir_log_set_level((fhir_log_level)nc->log_level);
    fhir_log_set_format((fhir_log_format)nc->log_format);
    daemon_rt *old = d->rt;
    d->rt = nrt;
    sender_rebuild(d); /* the sender borrows the center directory */
    if (d->retired) /* an earlier reload still waiting: its sources use `d->retired` */
        rt_free(old);
    else
        d->retired = old; /* sources borrow their config from it until rebuilt */
    apply_pending_sources(d);
    arm_timers(d);
    d->m.reloads_ok++;
    fhir_log(FHIR_LOG_INFO, "reload.done", "sources=%zu ruleset=%s centers=%zu", nc->n_sources,
             elig_ruleset_hash(nrt->rules), nrt->centers->n);
    /* the rule set may have changed: re-screen everyone with a verdict under another hash */
    fhir_error e;
    if (store_dirty_mark_ruleset_changed(d->st, elig_ruleset_hash(nrt->rules), &e)) {
        fhir_log(FHIR_LOG_ERROR, "reload.rescreen_failed", "error=%s", e.msg);
    }
    if (!any_busy(d))
        after_polls(d);
    return 0;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    daemon_proc *d = arg;
    if (sig == SIGHUP) {
        fhir_log(FHIR_LOG_INFO, "signal", "name=HUP action=reload");
        fhir_error err;
        fhir_error_clear(&err);
        daemon_reload(d, &err);
        return;
    }
    fhir_log(FHIR_LOG_INFO, "signal", "name=%s action=stop", sig == SIGTERM ? "TERM" : "INT");
    daemon_stop(d);
}

static void log_versions(struct event_base *base)
{
    curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
    char jv[32];
    fhir_json_lib_version(jv, sizeof jv);
    char ssl[128];
    snprintf(ssl, sizeof ssl, "%s", cv->ssl_version ? cv->ssl_version : "none");
    fhir_log(FHIR_LOG_INFO, "daemon.start",
             "version=%s " FHIR_JSON_LIB "=%s libcurl=%s curl_tls=%s libxml2=%s libevent=%s "
             "libevent_backend=%s sqlite=%s openssl=%s",
             CARTGATE_VERSION, jv, cv->version, ssl, LIBXML_DOTTED_VERSION,
             event_get_version(), event_base_get_method(base), store_sqlite_version(),
             OpenSSL_version(OPENSSL_VERSION_STRING));
}

/* ---- notifications ------------------------------------------------------------------------ */

/* The notifier when notify.email.url or notify.webhook.url is set (its secrets read now). */
static int notify_start(daemon_proc *d, fhir_error *err)
{
    const config *c = d->rt->cfg;
    if (!c->notify_email_url && !c->notify_webhook_url)
        return 0;
    char *password = NULL, *token = NULL;
    if ((c->notify_email_password_file || c->notify_email_password_env) &&
        config_read_secret(c->notify_email_password_file, c->notify_email_password_env, &password, err))
        return fhir_error_prefix(err, "notify.email");
    if ((c->notify_webhook_token_file || c->notify_webhook_token_env) &&
        config_read_secret(c->notify_webhook_token_file, c->notify_webhook_token_env, &token, err)) {
        free(password);
        return fhir_error_prefix(err, "notify.webhook");
    }
    notify_config nc = {
        .site_id = c->site_id, .public_url = c->notify_public_url, .email_url = c->notify_email_url,
        .email_from = c->notify_email_from, .email_to = (const char *const *)c->notify_email_to.v,
        .n_email_to = c->notify_email_to.n, .email_user = c->notify_email_user, .email_password = password,
        .email_ca_file = c->notify_email_ca_file, .webhook_url = c->notify_webhook_url, .webhook_token = token,
        .webhook_ca_file = c->notify_webhook_ca_file, .stuck_business_days = (int)c->notify_stuck_business_days,
        .digest_hour = (int)c->notify_digest_hour, .center = c->role == 1, .retry_s = (int)c->notify_retry_s,
        .max_attempts = (int)c->notify_max_attempts, .timeout_s = 30};
    d->nt = notify_new(c->store_path, &nc, err);
    if (password) {
        memset(password, 0, strlen(password));
        free(password);
    }
    if (token) {
        memset(token, 0, strlen(token));
        free(token);
    }
    if (!d->nt)
        return -1;
    fhir_log(FHIR_LOG_INFO, "notify.start", "email=%s webhook=%s digest_hour=%ld candidates=%d",
             c->notify_email_url ? "true" : "false", c->notify_webhook_url ? "true" : "false",
             c->notify_digest_hour, c->notify_candidates);
    return 0;
}

/* ---- the admin API's environment --------------------------------------------------------- */

static const admin_metrics *api_metrics(void *ud)
{
    daemon_proc *d = ud;
    if (d->hooks) {
        const cds_stats *cs = cds_get_stats(d->hooks);
        d->m.cds_enabled = true;
        d->m.cds_calls = cs->calls;
        d->m.cds_cards = cs->cards;
        d->m.cds_unauthorized = cs->unauthorized;
        d->m.cds_precondition = cs->precondition;
        d->m.cds_bad_request = cs->bad_request;
        d->m.cds_internal = cs->internal;
        d->m.cds_fetches = cs->fetches;
        d->m.cds_suppressed = cs->suppressed;
    }
    if (d->center) {
        const intake_stats *is = intake_get_stats(d->center);
        d->m.intake_enabled = true;
        d->m.intake_received = is->received;
        d->m.intake_repeated = is->repeated;
        d->m.intake_unauthorized = is->unauthorized;
        d->m.intake_tokens = is->tokens;
        d->m.intake_refuse_reasons = intake_refuse_reasons;
        d->m.n_intake_refuse = INTAKE_N_REFUSE < ADMIN_MAX_INTAKE_REFUSE ? INTAKE_N_REFUSE : ADMIN_MAX_INTAKE_REFUSE;
        for (size_t i = 0; i < d->m.n_intake_refuse; i++)
            d->m.intake_refused[i] = is->refused_by[i];
    }
    if (d->nt) {
        notify_stats ns;
        notify_get_stats(d->nt, &ns);
        for (int i = 0; i < 2; i++) {
            d->m.notices_sent[i] = ns.sent[i];
            d->m.notices_failed[i] = ns.failed[i];
            d->m.notices_retried[i] = ns.retried[i];
        }
        d->m.notices_unknown = ns.unknown;
    }
    return &d->m;
}

/* ---- the CDS Hooks service's environment ------------------------------------------------- */

static void cds_screening_now(void *ud, cds_screening *out)
{
    daemon_proc *d = ud;
    out->rules = d->rt->rules;
    out->tables = d->rt->tables;
    out->as_of_days = d->rt->as_of_days;
}

static void on_screen_now(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    daemon_proc *d = arg;
    fhir_error err;
    fhir_error_clear(&err);
    long n = screen_pending(d, &err);
    if (n > 0)
        fhir_log(FHIR_LOG_INFO, "screen.batch", "patients=%ld", n);
    else if (n < 0)
        fhir_log(FHIR_LOG_ERROR, "screen.failed", "error=%s", err.msg);
}

/* A CDS card was accepted in the EHR: the patient (whose resources the card was made from are
 * in the cache) is screened again and its referral proposed by the one path, on the next turn
 * of the loop (not inside the request). */
static void cds_propose(void *ud, const char *patient_id)
{
    daemon_proc *d = ud;
    fhir_error err;
    fhir_error_clear(&err);
    if (store_dirty_mark(d->st, patient_id, &err)) {
        fhir_log(FHIR_LOG_ERROR, "cds.propose_failed", "patient=%s error=%s", patient_id, err.msg);
        return;
    }
    struct timeval tv = {0, 0};
    event_base_once(d->base, -1, EV_TIMEOUT, on_screen_now, d, &tv);
}

static bool api_ready(void *ud, size_t *n_sources)
{
    daemon_proc *d = ud;
    *n_sources = d->n_sources;
    return d->ready;
}

/* Descriptors the listener's connections never take: the store, the loop, the centers and,
 * per source, its requests in flight, its downloads and the drop files it reads. */
static int fd_reserve(const config *c)
{
    long n = DAEMON_FD_RESERVE_BASE;
    for (size_t i = 0; i < c->n_sources; i++)
        n += c->sources[i].concurrency + c->sources[i].download_concurrency + DAEMON_FD_PER_SOURCE;
    return n > 100000 ? 100000 : (int)n;
}

/* The soft descriptor limit up to the hard one, so a low default soft limit (1024) never
 * starves the store and the sources; logged when it changes. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? (rlim_t)DAEMON_NOFILE_UNLIMITED : rl.rlim_max;
    if (rl.rlim_cur <= was || setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    fhir_log(FHIR_LOG_INFO, "daemon.nofile", "soft_was=%llu soft=%llu", (unsigned long long)was,
             (unsigned long long)rl.rlim_cur);
}

/* ---- the web pages' environment ---------------------------------------------------------- */

static void ui_runtime(void *ud, web_runtime *out)
{
    daemon_proc *d = ud;
    daemon_rt *rt = d->rt;
    const config *c = rt->cfg;
    memset(out, 0, sizeof *out);
    out->rules = rt->rules;
    out->tables = rt->tables;
    out->as_of_days = rt->as_of_days;
    out->propose = (propose_opts){
        .site_id = c->site_id, .site_name = c->site_name, .site_has_location = c->site_has_location,
        .site_lat = c->site_lat, .site_lon = c->site_lon, .with_possible = c->referral_min_category == 1,
        .consult_proposals = c->referral_consult_proposals,
        .report_lookback_days = c->referral_report_lookback_days,
        .urgency_default = c->referral_urgency_default,
        .mode = c->referral_mode ? REFER_MODE_AUTO : REFER_MODE_APPROVAL, .rules = rt->rules,
        .centers = rt->centers, .zcta = rt->zcta,
        .day = rt->as_of_days >= 0 ? rt->as_of_days : fhir_clock_now() / 86400,
        .referrer_name = c->referrer_name, .referrer_phone = c->referrer_phone,
        .referrer_direct = c->referrer_direct,
    };
}

static int ui_resources(void *ud, const char *pid, fhir_arena *a, const fhir_node ***out, size_t *n,
                        elig_records *rec, fhir_error *err)
{
    daemon_proc *d = ud;
    res_list l = {.a = a, .rd = d->rd, .max = d->max_resources, .err = err};
    if (res_list_load(d, &l, pid, rec) || add_referenced_medications(d, &l)) {
        free(l.v);
        return -1;
    }
    *out = l.v;
    *n = l.n;
    return 0;
}

/* The texts of a proposal the screening stored without them (propose_opts.defer_texts),
 * composed for its first reader (refer_get: the pages, the API, the sender, the write-back)
 * with the runtime of this moment and the cache as the screening reads it. */
static int compose_texts(void *ud, store *s, const refer_record *r, refer_compose_cause *cause,
                         fhir_error *err)
{
    daemon_proc *d = ud;
    web_runtime rt;
    ui_runtime(d, &rt);
    propose_env env = {.opts = rt.propose, .tables = rt.tables, .as_of_days = rt.as_of_days,
                       .resources = ui_resources, .ud = d};
    return propose_compose(s, &env, r, cause, err);
}

/* A screening limit: hi, or the value of the test hook name (daemon.h) when it is set to a
 * whole number from lo to hi; a hook in use is logged. */
static size_t test_hook_limit(const char *name, long long lo, long long hi)
{
    const char *v = getenv(name);
    char *end = NULL;
    long long n = v && *v ? strtoll(v, &end, 10) : 0;
    if (n >= lo && n <= hi && end && !*end) {
        fhir_log(FHIR_LOG_WARN, "daemon.test_hook", "name=%s value=%lld", name, n);
        return (size_t)n;
    }
    return (size_t)hi;
}

/* The per-patient screening limits: DAEMON_SCREEN_MAX_RESOURCES and DAEMON_SCREEN_ARENA_MAX,
 * or their test hooks' lower values. */
static void screen_limits_init(daemon_proc *d)
{
    d->max_resources = test_hook_limit("CARTGATE_TEST_SCREEN_MAX_RESOURCES", 1, DAEMON_SCREEN_MAX_RESOURCES);
    d->arena_max = test_hook_limit("CARTGATE_TEST_SCREEN_ARENA_MAX", 4096, (long long)DAEMON_SCREEN_ARENA_MAX);
}

daemon_proc *daemon_composer_new(const char *config_path, store *st, fhir_error *err)
{
    daemon_proc *d = fhir_xcalloc(1, sizeof *d);
    d->rt = rt_load(config_path, err);
    if (!d->rt) {
        free(d);
        return NULL;
    }
    d->st = st;
    d->rd = fhir_json_reader_new(NULL);
    screen_limits_init(d);
    refer_set_composer(compose_texts, d);
    return d;
}

void daemon_composer_free(daemon_proc *d)
{
    if (!d)
        return;
    refer_set_composer(NULL, NULL);
    rt_free(d->rt);
    fhir_json_reader_free(d->rd);
    free(d);
}

/* The admin API's profile of a patient (admin_env.profile): screened now from the cache by
 * the screening job's own steps, as the verdict was. */
static int api_profile(void *ud, const char *pid, fhir_buf *out, fhir_error *err)
{
    daemon_proc *d = ud;
    screen_job j;
    int rc = job_build(d, &j, pid, err);
    if (rc == 0 && j.ok)
        map_profile_write_json(j.p, out, 0);
    bool built = rc == 0 && j.ok;
    job_free(&j);
    return rc < 0 ? -1 : built ? 1 : 0;
}

/* The listener: access (users, sessions, tokens in the store), serve (TLS, limits), the
 * sign-in routes (with OpenID Connect when configured) and the API's routes. */
static int listener_start(daemon_proc *d, fhir_error *err)
{
    const config *c = d->rt->cfg;
    access_config ac = {.session_idle_s = c->access_session_idle_s, .session_max_s = c->access_session_max_s,
                        .token_max_days = c->access_token_max_days};
    d->acc = access_new(d->st, &ac);
    access_set_shared_token(d->acc, d->admin_token);
    serve_config sc = {.bind = c->admin_bind,
                       .port = (int)c->admin_port,
                       .tls_cert_file = c->admin_tls_cert_file,
                       .tls_key_file = c->admin_tls_key_file,
                       .insecure_plain_http = c->admin_insecure_plain_http,
                       .max_connections = (int)c->admin_max_connections,
                       .fd_reserve = fd_reserve(c)};
    d->srv = serve_new(d->base, d->acc, &sc, err);
    if (!d->srv)
        return fhir_error_prefix(err, "admin listener");
    oidc *o = NULL;
    if (c->oidc_issuer) {
        char *secret = NULL;
        if ((c->oidc_client_secret_file || c->oidc_client_secret_env) &&
            config_read_secret(c->oidc_client_secret_file, c->oidc_client_secret_env, &secret, err))
            return fhir_error_prefix(err, "oidc");
        oidc_config oc = {.issuer = c->oidc_issuer,
                          .client_id = c->oidc_client_id,
                          .client_secret = secret,
                          .redirect_uri = c->oidc_redirect_uri,
                          .scopes = c->oidc_scopes,
                          .user_claim = c->oidc_user_claim,
                          .name_claim = c->oidc_name_claim,
                          .role_claim = c->oidc_role_claim,
                          .role_map = (const char *const *)c->oidc_role_map.v,
                          .n_role_map = c->oidc_role_map.n,
                          .provision = c->oidc_provision,
                          .ca_file = c->oidc_ca_file};
        o = oidc_new(d->base, &oc, err);
        if (secret) {
            memset(secret, 0, strlen(secret));
            free(secret);
        }
        if (!o)
            return fhir_error_prefix(err, "oidc");
    }
    if (serve_auth_add(d->srv, o, c->oidc_label, err))
        return -1;
    if (o)
        oidc_start(o);
    admin_env env = {.st = d->st, .ud = d, .metrics = api_metrics, .ready = api_ready,
                     .profile = api_profile};
    d->api = admin_new(&env);
    /* the web pages; CARTGATE_WEB_ASSETS (development) serves their assets from that folder */
    web_env wenv = {.st = d->st, .ud = d, .runtime = ui_runtime, .resources = ui_resources,
                    .assets_dir = getenv("CARTGATE_WEB_ASSETS"),
                    .intake = c->role == 1, .intake_waiting_days = (int)c->intake_waiting_business_days};
    d->ui = web_new(&wenv);
    if (admin_add_routes(d->api, d->srv, err) || web_add_routes(d->ui, d->srv, err))
        return -1;
    if (c->cds_enabled) {
        cds_env ce = {.st = d->st, .base = d->base, .ud = d, .screening = cds_screening_now, .propose = cds_propose};
        cds_config cc = {.public_url = c->cds_public_url,
                         .clients = (const char *const *)c->cds_clients.v,
                         .n_clients = c->cds_clients.n,
                         .fhir_servers = (const char *const *)c->cds_fhir_servers.v,
                         .n_fhir_servers = c->cds_fhir_servers.n,
                         .ca_file = c->cds_ca_file,
                         .fetch_timeout_ms = c->cds_fetch_timeout_ms,
                         .jwks_ttl_s = c->cds_jwks_ttl_s};
        d->hooks = cds_new(&ce, &cc, err);
        if (!d->hooks || cds_add_routes(d->hooks, d->srv, err))
            return fhir_error_prefix(err, "cds");
    }
    if (c->role == 1) {
        intake_env ie = {.st = d->st, .nt = d->nt};
        intake_config ic = {.public_url = c->intake_public_url,
                            .clients = (const char *const *)c->intake_clients.v,
                            .n_clients = c->intake_clients.n,
                            .token_ttl_s = (int)c->intake_token_ttl_s,
                            .waiting_business_days = (int)c->intake_waiting_business_days,
                            .max_body_bytes = (size_t)c->intake_max_body_mib << 20};
        d->center = intake_new(&ie, &ic, err);
        if (!d->center || intake_add_routes(d->center, d->srv, err))
            return fhir_error_prefix(err, "intake");
    }
    if (serve_start(d->srv, err))
        return -1;
    fhir_log(FHIR_LOG_INFO, "admin.listen", "bind=%s port=%d tls=%s shared_token=%s oidc=%s cds=%s role=%s", c->admin_bind,
             serve_port(d->srv), serve_is_tls(d->srv) ? "true" : "false", d->admin_token ? "true" : "false",
             o ? "true" : "false", d->hooks ? "true" : "false", c->role == 1 ? "center" : "site");
    return 0;
}

daemon_proc *daemon_new(const char *config_path, fhir_error *err)
{
    daemon_proc *d = calloc(1, sizeof *d);
    if (!d)
        abort();
    d->config_path = fhir_xstrdup(config_path);
    d->m.started_ms = fhir_clock_now_ms();
    d->rt = rt_load(config_path, err);
    if (!d->rt)
        goto fail;
    fhir_log_set_level((fhir_log_level)d->rt->cfg->log_level);
    fhir_log_set_format((fhir_log_format)d->rt->cfg->log_format);
    raise_nofile();
    if (load_admin_token(d->rt->cfg, &d->admin_token, err))
        goto fail;
    d->base = event_base_new();
    if (!d->base) {
        fhir_error_set(err, "event_base_new failed");
        goto fail;
    }
    log_versions(d->base);
    d->st = store_open(d->rt->cfg->store_path, (int)d->rt->cfg->store_busy_timeout_ms, err);
    if (!d->st)
        goto fail;
    d->rd = fhir_json_reader_new(NULL);
    screen_limits_init(d);
    fhir_buf_init(&d->bin, DAEMON_RESOURCE_MAX);
    refer_set_composer(compose_texts, d);
    fhir_log(FHIR_LOG_INFO, "store.open", "schema=%d ruleset=%s indications=%zu centers=%zu",
             store_schema_version(d->st), elig_ruleset_hash(d->rt->rules),
             elig_ruleset_count(d->rt->rules), d->rt->centers->n);
    /* criteria changed while the daemon was stopped (an upgrade, edited files and a restart
     * instead of SIGHUP): everyone screened under another rule set is screened again on the
     * first pass, as a reload does */
    if (store_dirty_mark_ruleset_changed(d->st, elig_ruleset_hash(d->rt->rules), err))
        goto fail;
    sender_rebuild(d);
    if (notify_start(d, err))
        goto fail;
    if (d->rt->cfg->admin_enabled && listener_start(d, err))
        goto fail;
    d->sig_term = evsignal_new(d->base, SIGTERM, on_signal, d);
    d->sig_int = evsignal_new(d->base, SIGINT, on_signal, d);
    d->sig_hup = evsignal_new(d->base, SIGHUP, on_signal, d);
    event_add(d->sig_term, NULL);
    event_add(d->sig_int, NULL);
    event_add(d->sig_hup, NULL);
    signal(SIGPIPE, SIG_IGN);
    arm_timers(d);
    if (sources_build(d, err))
        goto fail;
    if (d->n_sources == 0)
        d->ready = true;
    return d;
fail:
    daemon_free(d);
    return NULL;
}

int daemon_run(daemon_proc *d)
{
    /* patients left marked by a previous run are screened first */
    fhir_error err;
    fhir_error_clear(&err);
    long n = screen_pending(d, &err);
    if (n > 0)
        fhir_log(FHIR_LOG_INFO, "screen.recovered", "patients=%ld", n);
    retention_pass(d); /* at start, then every DAEMON_RETENTION_INTERVAL_S */
    event_base_dispatch(d->base);
    fhir_log(FHIR_LOG_INFO, "daemon.stop", "screened=%llu referrals_created=%llu",
             (unsigned long long)d->m.patients_screened, (unsigned long long)d->m.referrals_created);
    return 0;
}

void daemon_free(daemon_proc *d)
{
    if (!d)
        return;
    sources_free(d);
    serve_free(d->srv); /* first: no request may outlive what it uses */
    admin_free(d->api);
    cds_free(d->hooks);
    web_free(d->ui);
    intake_free(d->center);
    access_free(d->acc);
    if (d->sig_term)
        event_free(d->sig_term);
    if (d->sig_int)
        event_free(d->sig_int);
    if (d->sig_hup)
        event_free(d->sig_hup);
    if (d->send_timer)
        event_free(d->send_timer);
    if (d->task_timer)
        event_free(d->task_timer);
    if (d->retention_timer)
        event_free(d->retention_timer);
    if (d->notify_timer)
        event_free(d->notify_timer);
    notify_free(d->nt); /* its worker stops (an exchange in flight finishes) */
    if (d->grace_timer)
        event_free(d->grace_timer);
    sender_free(d->snd);
    writeback_free(d->wb);
    if (d->st)
        refer_set_composer(NULL, NULL);
    store_close(d->st);
    rt_free(d->rt);
    rt_free(d->retired);
    fhir_json_reader_free(d->rd); /* after everything that may hold a tree it built */
    fhir_buf_free(&d->bin);
    if (d->base)
        event_base_free(d->base);
    free(d->admin_token);
    free(d->config_path);
    free(d);
}
