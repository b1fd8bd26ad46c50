/* daemon — the `cartgate run` process (see daemon.h). */
#include "daemon.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <libxml/xmlversion.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_version.h>

#include "admin.h"
#include "bser.h"
#include "fhir_arena.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "map_profile.h"
#include "poll_source.h"
#include "referral.h"
#include "screen.h"

#define SCREEN_MAX_RESOURCES 100000

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        abort();
    return d;
}

/* ---- runtime (config + criteria + centers), loaded and swapped as one ---------------- */

static void rt_free(daemon_rt *rt)
{
    if (!rt)
        return;
    elig_ruleset_free(rt->rules);
    centers_free(rt->centers);
    route_zcta_free(rt->zcta);
    map_tables_free(rt->tables);
    config_free(rt->cfg);
    free(rt);
}

static daemon_rt *rt_load(const char *path, fhir_error *err)
{
    daemon_rt *rt = calloc(1, sizeof *rt);
    if (!rt)
        abort();
    fhir_buf diag;
    fhir_buf_init(&diag, 1u << 16);
    size_t nerr = 0;
    rt->cfg = config_load(path, &diag, &nerr, err);
    if (!rt->cfg) {
        /* every error on its own log line, then the summary in err */
        const char *p = fhir_buf_cstr(&diag);
        while (p && *p) {
            const char *nl = strchr(p, '\n');
            char line[600], q[700];
            snprintf(line, sizeof line, "%.*s", (int)(nl ? nl - p : (long)strlen(p)), p);
            fhir_log(FHIR_LOG_ERROR, "config.error", "detail=%s",
                     fhir_log_quote(line, q, sizeof q));
            p = nl ? nl + 1 : NULL;
        }
        fhir_buf_free(&diag);
        free(rt);
        return NULL;
    }
    fhir_buf_free(&diag);
    config *c = rt->cfg;
    rt->rules = elig_load_dir(c->criteria_dir, err);
    if (!rt->rules)
        goto fail;
    for (size_t i = 0; i < c->criteria_enable_pending.n; i++) /* labels verified by the site */
        if (elig_ruleset_enable_pending(rt->rules, c->criteria_enable_pending.v[i], err))
            goto fail;
    rt->centers = centers_load(c->centers_file, err);
    if (!rt->centers)
        goto fail;
    if (c->zcta_file) {
        rt->zcta = route_zcta_load(c->zcta_file, err);
        if (!rt->zcta)
            goto fail;
    }
    rt->tables = map_tables_load(c->mappings_dir, err);
    if (!rt->tables)
        goto fail;
    rt->as_of_days = -1;
    if (c->as_of && fhir_clock_parse_date(c->as_of, &rt->as_of_days) != 0) {
        fhir_error_set(err, "%s: as_of: bad date", path);
        goto fail;
    }
    return rt;
fail:
    rt_free(rt);
    return NULL;
}

/* ---- metrics helpers ----------------------------------------------------------------- */

daemon_src_metrics *daemon_src_metrics_get(daemon *d, const char *name)
{
    for (size_t i = 0; i < d->m.n_src; i++)
        if (!strcmp(d->m.src[i].name, name))
            return &d->m.src[i];
    if (d->m.n_src == sizeof d->m.src / sizeof d->m.src[0])
        return &d->m.src[d->m.n_src - 1];
    daemon_src_metrics *m = &d->m.src[d->m.n_src++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    return m;
}

void daemon_count_status(daemon_src_metrics *m, long status)
{
    for (size_t i = 0; i < m->n_status; i++)
        if (m->status[i] == status) {
            m->status_n[i]++;
            return;
        }
    if (m->n_status < DAEMON_MAX_STATUS) {
        m->status[m->n_status] = status;
        m->status_n[m->n_status++] = 1;
    }
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
    return true;
}

static bool resource_patient(const fhir_node *res, const char *type, char *out, size_t outlen)
{
    if (!strcmp(type, "Patient")) {
        const char *id = fhir_node_resource_id(res);
        if (!id || strlen(id) >= outlen)
            return false;
        snprintf(out, outlen, "%s", id);
        return true;
    }
    static const char *const fields[] = {"subject", "patient", "beneficiary", "individual"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const fhir_node *r = fhir_node_get(res, fields[i]);
        if (fhir_node_is(r, FHIR_ARRAY))
            r = fhir_node_at(r, 0);
        if (patient_from_ref(fhir_node_path_str(r, "reference"), out, outlen))
            return true;
    }
    return false;
}

int daemon_ingest(daemon *d, const char *source, const fhir_node *res, size_t *changed,
                  size_t *unchanged, fhir_error *err)
{
    const char *type = fhir_node_resource_type(res);
    if (!type)
        return 0; /* not a resource: ignored */
    if (!strcmp(type, "Bundle")) {
        for (const fhir_node *e = fhir_node_first(fhir_node_get(res, "entry")); e; e = e->next) {
            const fhir_node *r = fhir_node_get(e, "resource");
            if (r && daemon_ingest(d, source, r, changed, unchanged, err))
                return -1;
        }
        return 0;
    }
    if (!strcmp(type, "OperationOutcome"))
        return 0;
    const char *id = fhir_node_resource_id(res);
    if (!id || !*id)
        return 0; /* a resource without id cannot be cached or updated */
    char pid[128] = "";
    bool has_patient = resource_patient(res, type, pid, sizeof pid);
    char *json = fhir_json_to_string(res, FHIR_JSON_COMPACT, 16u << 20);
    if (!json)
        return fhir_error_set(err, "%s/%s: resource larger than 16 MiB", type, id);
    /* one statement: an identical cached copy is left as it is */
    bool is_new = false;
    int rc = store_resource_upsert(d->st, has_patient ? pid : "", type, id,
                                   fhir_node_path_str(res, "meta.versionId"),
                                   fhir_node_path_str(res, "meta.lastUpdated"), json, &is_new,
                                   err);
    free(json);
    if (rc)
        return -1;
    if (!is_new) {
        if (unchanged)
            (*unchanged)++;
        return 0;
    }
    if (has_patient && store_dirty_mark(d->st, pid, err))
        return -1;
    if (changed)
        (*changed)++;
    (void)source;
    return 0;
}

/* ---- screening ------------------------------------------------------------------------ */

typedef struct res_list {
    fhir_arena *a;
    const fhir_node **v;
    size_t n, cap;
    fhir_error *err;
    bool failed;
} res_list;

static int res_list_add_json(res_list *l, const char *json)
{
    if (l->n >= SCREEN_MAX_RESOURCES)
        return 1;
    fhir_error e;
    fhir_node *n = fhir_json_parse(l->a, json, strlen(json), NULL, &e);
    if (!n)
        return 0; /* cached by us, so this cannot happen unless the db was edited: skip */
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        const fhir_node **nv = realloc(l->v, l->cap * sizeof *nv);
        if (!nv)
            abort();
        l->v = nv;
    }
    l->v[l->n++] = n;
    return 0;
}

static int res_cb(void *ctx, const char *type, const char *id, const char *json)
{
    (void)type;
    (void)id;
    return res_list_add_json(ctx, json);
}

/* Adds the Medications the patient's medication resources reference (shared pool). */
static void add_referenced_medications(daemon *d, res_list *l)
{
    size_t n0 = l->n;
    for (size_t i = 0; i < n0; i++) {
        const char *ref = fhir_node_path_str(l->v[i], "medicationReference.reference");
        if (!ref || strncmp(ref, "Medication/", 11))
            continue;
        bool have = false;
        for (size_t j = 0; j < l->n && !have; j++)
            if (!strcmp(fhir_node_resource_type(l->v[j]) ? fhir_node_resource_type(l->v[j]) : "",
                        "Medication") &&
                fhir_node_resource_id(l->v[j]) && !strcmp(fhir_node_resource_id(l->v[j]), ref + 11))
                have = true;
        if (have)
            continue;
        fhir_error e;
        store_resource_get(d->st, "Medication", ref + 11, res_cb, l, &e);
    }
}

typedef struct cancel_ctx {
    const char *keep_placer;
    int64_t ids[64];
    size_t n;
} cancel_ctx;

static int cancel_collect(void *ctx, int64_t id, const char *placer_id)
{
    cancel_ctx *c = ctx;
    if (c->keep_placer && placer_id && !strcmp(placer_id, c->keep_placer))
        return 0;
    if (c->n < sizeof c->ids / sizeof c->ids[0])
        c->ids[c->n++] = id;
    return 0;
}

/* Cancels the patient's proposals still awaiting approval, except keep_placer (found by the
 * patient index: ids only). */
static void cancel_stale_proposals(daemon *d, const char *pid, const char *keep_placer,
                                   const char *reason)
{
    cancel_ctx c = {.keep_placer = keep_placer};
    fhir_error e;
    if (refer_patient_ids(d->st, pid, REFER_PENDING_APPROVAL, cancel_collect, &c, &e) < 0)
        return;
    for (size_t i = 0; i < c.n; i++) {
        if (refer_cancel(d->st, c.ids[i], "screener", reason, &e) == 0)
            fhir_log(FHIR_LOG_INFO, "referral.cancelled", "referral=%lld patient=%s reason=verdict_changed",
                     (long long)c.ids[i], pid);
    }
}

static const char *urgency_for(const daemon_rt *rt, elig_urgency u)
{
    if (u == ELIG_URGENCY_NOW)
        return "urgent";
    return rt->cfg->referral_urgency_default ? rt->cfg->referral_urgency_default : "routine";
}

static void propose_referral(daemon *d, const char *pid, const map_profile *prof,
                             const elig_result *res, const elig_factset *fs, const char *verdict_json,
                             const res_list *resources)
{
    daemon_rt *rt = d->rt;
    const config *c = rt->cfg;
    elig_category cat = elig_result_category(res);
    bool candidate = cat == ELIG_ELIGIBLE ||
                     (cat == ELIG_POSSIBLY_ELIGIBLE && c->referral_min_category == 1);
    /* a refer-early recommendation alone makes a proposal when the site chose so
     * (referral.consult_proposals: 1 refer_now, 2 early_consult and refer_now) */
    elig_consult cons = elig_result_consult(res);
    bool consult_only = !candidate && cons != ELIG_CONSULT_NONE && c->referral_consult_proposals > 0 &&
                        (cons == ELIG_CONSULT_NOW || c->referral_consult_proposals == 2);
    if (!candidate && !consult_only) {
        cancel_stale_proposals(d, pid, NULL, "verdict no longer makes the patient a candidate");
        return;
    }
    const char *inds[ELIG_MAX_INDICATIONS];
    route_need needs[ELIG_MAX_INDICATIONS];
    char products[ELIG_MAX_INDICATIONS][48];
    size_t n = 0;
    const map_fact *dis = map_profile_fact(prof, "primary_disease");
    size_t idx[ELIG_MAX_INDICATIONS];
    size_t nidx = consult_only ? screen_consult_indications(rt->rules, res, idx, ELIG_MAX_INDICATIONS)
                               : screen_indications(rt->rules, res, c->referral_min_category == 1, idx,
                                                    ELIG_MAX_INDICATIONS);
    for (size_t k = 0; k < nidx && k < ELIG_MAX_INDICATIONS; k++) {
        elig_category ic = elig_result_ind_category(res, idx[k]);
        const char *key = elig_ruleset_key(rt->rules, idx[k]);
        const char *colon = strchr(key, ':');
        snprintf(products[n], sizeof products[n], "%.*s", (int)(colon ? colon - key : (long)strlen(key)),
                 key);
        inds[n] = key;
        needs[n].product = products[n];
        needs[n].disease = dis && dis->known ? dis->str : NULL;
        needs[n].indication = key;
        needs[n].possible = ic != ELIG_ELIGIBLE;
        n++;
    }
    if (n == 0)
        return;
    fhir_error err;
    fhir_arena *a = fhir_arena_new(64u << 20);
    route_patient_location loc = {0};
    const map_fact *lat = map_profile_fact(prof, "latitude"), *lon = map_profile_fact(prof, "longitude");
    if (lat && lat->known && lon && lon->known) {
        loc.has_geo = true;
        loc.lat = lat->num;
        loc.lon = lon->num;
    }
    const map_fact *zip = map_profile_fact(prof, "postal_code");
    if (zip && zip->known)
        loc.zip = zip->str;
    route_site site = {.has_location = c->site_has_location, .lat = c->site_lat, .lon = c->site_lon,
                       .name = c->site_name};
    route_origin origin;
    route_result rr;
    const map_fact *payer = map_profile_fact(prof, "payer");
    int64_t day = rt->as_of_days >= 0 ? rt->as_of_days : fhir_clock_now() / 86400;
    if (route_resolve_origin(&loc, rt->zcta, &site, &origin, &err) ||
        route_rank(a, rt->centers, &origin, needs, n, payer && payer->known ? payer->str : NULL, day,
                   NULL, &rr, &err)) {
        char q[600];
        fhir_log(FHIR_LOG_WARN, "referral.route_failed", "patient=%s error=%s", pid,
                 fhir_log_quote(err.msg, q, sizeof q));
        fhir_arena_free(a);
        return;
    }
    if (rr.n_candidates == 0) {
        fhir_log(FHIR_LOG_WARN, "referral.no_center", "patient=%s indications=%zu", pid, n);
        fhir_arena_free(a);
        return;
    }
    const centers_center *center = rr.candidates[0].center;
    char placer[REFER_PLACER_MAX];
    if (refer_placer_id(c->site_id, pid, inds, n, center->id, placer, &err)) {
        fhir_arena_free(a);
        return;
    }
    cancel_stale_proposals(d, pid, placer, "superseded by a new verdict");
    int64_t existing;
    if (refer_find(d->st, placer, &existing, &err) == 1) {
        fhir_arena_free(a);
        return; /* already proposed (or sent): exactly once */
    }
    /* the package */
    const fhir_node *patient = NULL, *condition = NULL;
    const fhir_node **cov = calloc(resources->n + 1, sizeof *cov);
    const fhir_node **obs = calloc(resources->n + 1, sizeof *obs);
    const fhir_node **med = calloc(resources->n + 1, sizeof *med);
    if (!cov || !obs || !med)
        abort();
    size_t ncov = 0, nobs = 0, nmed = 0;
    const char *dis_ev = dis && dis->evidence ? dis->evidence : "";
    for (size_t i = 0; i < resources->n; i++) {
        const fhir_node *r = resources->v[i];
        const char *t = fhir_node_resource_type(r);
        if (!t)
            continue;
        if (!strcmp(t, "Patient"))
            patient = r;
        else if (!strcmp(t, "Coverage"))
            cov[ncov++] = r;
        else if (!strcmp(t, "Observation"))
            obs[nobs++] = r;
        else if (!strncmp(t, "Medication", 10) && strcmp(t, "Medication"))
            med[nmed++] = r;
        else if (!strcmp(t, "Condition")) {
            char ref[200];
            snprintf(ref, sizeof ref, "Condition/%s", fhir_node_resource_id(r) ? fhir_node_resource_id(r) : "");
            if (!condition || strstr(dis_ev, ref))
                condition = r;
        }
    }
    fhir_buf expl;
    fhir_buf_init(&expl, 1u << 20);
    elig_result_write_explanation(rt->rules, fs, res, &expl);
    fhir_buf reason;
    fhir_buf_init(&reason, 4096);
    if (consult_only)
        fhir_buf_printf(&reason, "CAR T consultation (%s; label %s): %s", elig_consult_name(cons),
                        elig_category_name(cat), inds[0]);
    else
        fhir_buf_printf(&reason, "CAR T evaluation (%s): %s", elig_category_name(cat), inds[0]);
    for (size_t i = 1; i < n; i++)
        fhir_buf_printf(&reason, ", %s", inds[i]);
    const char *urg = urgency_for(rt, elig_result_urgency(res));
    char *payload = NULL;
    if (patient) {
        char sysbase[200];
        snprintf(sysbase, sizeof sysbase, "urn:cartgate:%s", c->site_id);
        bser_input in = {
            .id_system_base = sysbase, .placer_id = placer, .site_id = c->site_id,
            .site_name = c->site_name && *c->site_name ? c->site_name : c->site_id,
            .center = center, .patient_id = pid, .patient = patient,
            .coverages = cov, .n_coverages = ncov, .condition = condition,
            .observations = obs, .n_observations = nobs, .medications = med, .n_medications = nmed,
            .reason_text = fhir_buf_cstr(&reason), .summary_text = fhir_buf_cstr(&expl),
            .verdict_json = verdict_json, .urgency = urg, .authored_ms = fhir_clock_now_ms(),
        };
        fhir_node *bundle = bser_build(a, &in, &err);
        if (bundle)
            payload = fhir_json_to_string(bundle, FHIR_JSON_COMPACT, 64u << 20);
        else {
            char q[600];
            fhir_log(FHIR_LOG_WARN, "referral.payload_failed", "patient=%s error=%s", pid,
                     fhir_log_quote(err.msg, q, sizeof q));
        }
    }
    fhir_node *rj = route_explain_json(a, &rr);
    char *route_json = rj ? fhir_json_to_string(rj, FHIR_JSON_COMPACT, 1u << 20) : NULL;
    refer_request req = {
        .site_id = c->site_id, .patient_id = pid, .center_id = center->id, .indications = inds,
        .n_indications = n, .urgency = urg, .explanation = fhir_buf_cstr(&expl),
        .verdict_json = verdict_json, .route_json = route_json, .payload = payload,
        .mode = c->referral_mode ? REFER_MODE_AUTO : REFER_MODE_APPROVAL, .actor = "screener",
    };
    int64_t rid = 0;
    bool created = false;
    if (payload && refer_create(d->st, &req, &rid, &created, &err) == 0) {
        if (created) {
            d->m.referrals_created++;
            fhir_log(FHIR_LOG_INFO, "referral.created",
                     "referral=%lld patient=%s center=%s indications=%zu mode=%s urgency=%s",
                     (long long)rid, pid, center->id, n, c->referral_mode ? "auto" : "approval", urg);
        }
    } else if (payload) {
        char q[600];
        fhir_log(FHIR_LOG_ERROR, "referral.create_failed", "patient=%s error=%s", pid,
                 fhir_log_quote(err.msg, q, sizeof q));
    }
    free(route_json);
    free(payload);
    fhir_buf_free(&expl);
    fhir_buf_free(&reason);
    free(cov);
    free(obs);
    free(med);
    fhir_arena_free(a);
}

/* One patient's screening, split so a batch can store its verdicts in one transaction and
 * create referral proposals (which run their own transactions) afterwards. */
typedef struct screen_job {
    char *pid;
    res_list l;
    screen *sc;
    const map_profile *p;     /* p, fs, res: borrowed from sc */
    const elig_factset *fs;
    const elig_result *res;
    fhir_buf vj, pj;
    bool ok;
} screen_job;

static void job_free(screen_job *j)
{
    screen_free(j->sc);
    fhir_buf_free(&j->vj);
    fhir_buf_free(&j->pj);
    fhir_arena_free(j->l.a);
    free(j->l.v);
    free(j->pid);
    memset(j, 0, sizeof *j);
}

/* Loads the patient's resources, builds the profile and evaluates it (no store writes). */
static int job_build(daemon *d, screen_job *j, const char *pid, fhir_error *err)
{
    daemon_rt *rt = d->rt;
    memset(j, 0, sizeof *j);
    j->pid = xstrdup(pid);
    j->l.a = fhir_arena_new(512u << 20);
    j->l.err = err;
    fhir_buf_init(&j->vj, 4u << 20);
    fhir_buf_init(&j->pj, 16u << 20);
    if (store_resource_each(d->st, pid, res_cb, &j->l, err) < 0)
        return -1;
    add_referenced_medications(d, &j->l);
    if (j->l.n == 0)
        return fhir_error_set(err, "patient %s: nothing cached", pid);
    map_profile_opts o;
    map_profile_opts_default(&o);
    if (rt->as_of_days >= 0)
        o.as_of_days = rt->as_of_days;
    j->sc = screen_new(rt->tables, rt->rules, &o);
    if (screen_patient(j->sc, j->l.v, j->l.n, err))
        return -1;
    j->p = screen_profile(j->sc);
    j->fs = screen_facts(j->sc);
    j->res = screen_result(j->sc);
    screen_write_json(j->sc, pid, &j->vj);
    map_profile_write_json(j->p, &j->pj, 0);
    j->ok = true;
    return 0;
}

/* Stores the verdict (inside the caller's transaction, if any). */
static int job_store(daemon *d, screen_job *j, fhir_error *err)
{
    daemon_rt *rt = d->rt;
    elig_category cat = elig_result_category(j->res);
    char *old_cat = NULL;
    int had = store_verdict_get(d->st, j->pid, NULL, &old_cat, NULL, err);
    if (store_verdict_put(d->st, j->pid, elig_ruleset_hash(rt->rules), elig_category_name(cat),
                          fhir_buf_cstr(&j->pj), fhir_buf_cstr(&j->vj), err)) {
        free(old_cat);
        return -1;
    }
    d->m.patients_screened++;
    if ((unsigned)cat < 4)
        d->m.verdicts[cat]++;
    if (had != 1 || !old_cat || strcmp(old_cat, elig_category_name(cat)))
        fhir_log(FHIR_LOG_INFO, "screen.verdict", "patient=%s category=%s previous=%s urgency=%s", j->pid,
                 elig_category_name(cat), had == 1 && old_cat ? old_cat : "none",
                 elig_urgency_name(elig_result_urgency(j->res)));
    free(old_cat);
    return 0;
}

static void job_propose(daemon *d, screen_job *j)
{
    propose_referral(d, j->pid, j->p, j->res, j->fs, fhir_buf_cstr(&j->vj), &j->l);
}

int daemon_screen_patient(daemon *d, const char *pid, fhir_error *err)
{
    screen_job j;
    int rc = job_build(d, &j, pid, err);
    if (rc == 0)
        rc = job_store(d, &j, err);
    if (rc == 0)
        job_propose(d, &j);
    job_free(&j);
    return rc;
}

static void undirty(daemon *d, const char *pid)
{
    fhir_error e;
    if (store_dirty_clear(d->st, pid, &e)) {
        char q[600];
        fhir_log(FHIR_LOG_ERROR, "screen.undirty_failed", "patient=%s error=%s", pid,
                 fhir_log_quote(e.msg, q, sizeof q));
    }
}

#define SCREEN_BATCH 16

long daemon_screen_pending(daemon *d, fhir_error *err)
{
    long total = 0;
    for (;;) {
        char *ids[SCREEN_BATCH];
        long got = store_dirty_next(d->st, ids, SCREEN_BATCH, err);
        if (got < 0)
            return -1;
        size_t n = (size_t)got;
        if (n == 0)
            break;
        screen_job jobs[SCREEN_BATCH];
        for (size_t i = 0; i < n; i++) {
            fhir_error e;
            fhir_error_clear(&e);
            if (job_build(d, &jobs[i], ids[i], &e)) {
                d->m.screen_errors++;
                char q[600];
                fhir_log(FHIR_LOG_WARN, "screen.failed", "patient=%s error=%s", ids[i],
                         fhir_log_quote(e.msg, q, sizeof q));
            }
        }
        /* the batch's verdicts and dirty marks in one transaction (one fsync, not 2n) */
        fhir_error e;
        fhir_error_clear(&e);
        bool txn = store_begin(d->st, &e) == 0;
        for (size_t i = 0; i < n; i++) {
            if (jobs[i].ok && job_store(d, &jobs[i], &e)) {
                jobs[i].ok = false;
                d->m.screen_errors++;
                char q[600];
                fhir_log(FHIR_LOG_WARN, "screen.failed", "patient=%s error=%s", ids[i],
                         fhir_log_quote(e.msg, q, sizeof q));
            }
            undirty(d, ids[i]);
        }
        if (txn && store_commit(d->st, &e)) {
            store_rollback(d->st);
            for (size_t i = 0; i < n; i++)
                job_free(&jobs[i]);
            for (size_t i = 0; i < n; i++)
                free(ids[i]);
            return fhir_error_set(err, "screening batch: %s", e.msg);
        }
        /* proposals after the verdicts are durable (refer_* run their own transactions) */
        for (size_t i = 0; i < n; i++) {
            if (jobs[i].ok)
                job_propose(d, &jobs[i]);
            job_free(&jobs[i]);
            free(ids[i]);
            total++;
        }
    }
    return total;
}

/* ---- sender timers ------------------------------------------------------------------- */

static void sender_rebuild(daemon *d)
{
    sender_free(d->snd);
    d->snd = NULL;
    /* asynchronous on the daemon's loop: one queue per center (sender.h) */
    sender_opts so = {.centers = d->rt->centers, .base = d->base};
    fhir_error err;
    d->snd = sender_new(d->st, &so, &err);
    if (!d->snd) {
        char q[600];
        fhir_log(FHIR_LOG_ERROR, "sender.failed", "error=%s", fhir_log_quote(err.msg, q, sizeof q));
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
            char q[600];
            fhir_log(FHIR_LOG_ERROR, "writeback.disabled", "error=%s", fhir_log_quote(err.msg, q, sizeof q));
        }
    }
}

/* Copies new center-driven state changes into the write-back outbox and writes the pending
 * ones to the EHR (asynchronous; writeback.h). */
static void writeback_kick(daemon *d)
{
    if (d->stopping || !d->wb)
        return;
    fhir_error err;
    fhir_error_clear(&err);
    if (writeback_pass_start(d->wb, &err)) {
        char q[600];
        fhir_log(FHIR_LOG_ERROR, "writeback.pass_failed", "error=%s", fhir_log_quote(err.msg, q, sizeof q));
    }
}

static void on_send_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    daemon *d = arg;
    if (d->stopping || !d->snd)
        return;
    /* loads the idle centers' queues and returns; each center drains on the loop and logs
     * event=sender.pass when its queue is done */
    fhir_error err;
    fhir_error_clear(&err);
    if (sender_pass_start(d->snd, &err)) {
        char q[600];
        fhir_log(FHIR_LOG_ERROR, "sender.pass_failed", "error=%s", fhir_log_quote(err.msg, q, sizeof q));
    }
    writeback_kick(d);
}

static void on_task_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    daemon *d = arg;
    if (d->stopping || !d->snd)
        return;
    fhir_error err;
    fhir_error_clear(&err);
    if (sender_poll_start(d->snd, &err)) {
        char q[600];
        fhir_log(FHIR_LOG_ERROR, "sender.poll_failed", "error=%s", fhir_log_quote(err.msg, q, sizeof q));
    }
    writeback_kick(d);
}

static void arm_timers(daemon *d)
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
}

/* ---- sources ------------------------------------------------------------------------- */

static void sources_free(daemon *d)
{
    for (size_t i = 0; i < d->n_sources; i++)
        poll_source_free(d->sources[i]);
    free(d->sources);
    d->sources = NULL;
    d->n_sources = 0;
}

static int sources_build(daemon *d, fhir_error *err)
{
    const config *c = d->rt->cfg;
    d->sources = calloc(c->n_sources + 1, sizeof *d->sources);
    if (!d->sources)
        abort();
    for (size_t i = 0; i < c->n_sources; i++) {
        poll_source *p = poll_source_new(d, &c->sources[i], err);
        if (!p)
            return fhir_error_prefix(err, "source %s", c->sources[i].name);
        d->sources[d->n_sources++] = p;
    }
    return 0;
}

static bool any_busy(const daemon *d)
{
    for (size_t i = 0; i < d->n_sources; i++)
        if (poll_source_busy(d->sources[i]))
            return true;
    return false;
}

static daemon_rt *g_retired; /* an rt replaced while its sources were still polling */

static void apply_pending_sources(daemon *d)
{
    if (!g_retired || any_busy(d))
        return;
    sources_free(d);
    rt_free(g_retired);
    g_retired = NULL;
    fhir_error err;
    if (sources_build(d, &err)) {
        char q[600];
        fhir_log(FHIR_LOG_ERROR, "sources.failed", "error=%s", fhir_log_quote(err.msg, q, sizeof q));
    }
}

static void on_apply_sources(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    apply_pending_sources(arg);
}

void daemon_poll_finished(daemon *d, poll_source *src, bool ok)
{
    (void)src;
    (void)ok;
    fhir_error err;
    fhir_error_clear(&err);
    long n = daemon_screen_pending(d, &err);
    if (n > 0)
        fhir_log(FHIR_LOG_INFO, "screen.batch", "patients=%ld", n);
    else if (n < 0) {
        char q[600];
        fhir_log(FHIR_LOG_ERROR, "screen.failed", "error=%s", fhir_log_quote(err.msg, q, sizeof q));
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
    else if (!d->stopping && g_retired) {
        /* not from inside the client callback that brought us here: the sources (and their
         * clients) may be replaced */
        struct timeval tv = {0, 0};
        event_base_once(d->base, -1, EV_TIMEOUT, on_apply_sources, d, &tv);
    }
}

/* ---- signals and life -------------------------------------------------------------------- */

static void on_grace(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    daemon *d = arg;
    fhir_log(FHIR_LOG_WARN, "daemon.grace_expired", "note=in-flight polls abandoned; cursors not advanced");
    event_base_loopexit(d->base, NULL);
}

void daemon_stop(daemon *d)
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
    if (!c->admin_enabled)
        return 0;
    return config_read_secret(c->admin_token_file, c->admin_token_env, out, err);
}

int daemon_reload(daemon *d, fhir_error *err)
{
    daemon_rt *nrt = rt_load(d->config_path, err);
    char *tok = NULL;
    if (nrt && load_admin_token(nrt->cfg, &tok, err)) {
        rt_free(nrt);
        nrt = NULL;
    }
    if (!nrt) {
        d->m.reloads_failed++;
        char q[700];
        fhir_log(FHIR_LOG_ERROR, "reload.refused", "error=%s kept=previous", fhir_log_quote(err->msg, q, sizeof q));
        return -1;
    }
    const config *oc = d->rt->cfg, *nc = nrt->cfg;
    if (strcmp(oc->store_path, nc->store_path) || strcmp(oc->admin_bind, nc->admin_bind) ||
        oc->admin_port != nc->admin_port || oc->admin_enabled != nc->admin_enabled)
        fhir_log(FHIR_LOG_WARN, "reload.restart_needed", "note=store and admin listener changes apply at the next start");
    free(d->admin_token);
    d->admin_token = tok;
    fhir_log_set_level((fhir_log_level)nc->log_level);
    daemon_rt *old = d->rt;
    d->rt = nrt;
    sender_rebuild(d); /* the sender borrows the center directory */
    if (g_retired) /* an earlier reload still waiting: its sources use `g_retired` */
        rt_free(old);
    else
        g_retired = old; /* sources borrow their config from it until rebuilt */
    apply_pending_sources(d);
    arm_timers(d);
    d->m.reloads_ok++;
    fhir_log(FHIR_LOG_INFO, "reload.done", "sources=%zu ruleset=%s centers=%zu", nc->n_sources,
             elig_ruleset_hash(nrt->rules), nrt->centers->n);
    /* the rule set may have changed: re-screen everyone with a verdict under another hash */
    fhir_error e;
    if (store_dirty_mark_ruleset_changed(d->st, elig_ruleset_hash(nrt->rules), &e)) {
        char q[700];
        fhir_log(FHIR_LOG_ERROR, "reload.rescreen_failed", "error=%s", fhir_log_quote(e.msg, q, sizeof q));
    }
    if (!any_busy(d))
        daemon_poll_finished(d, NULL, true);
    return 0;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    daemon *d = arg;
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
    int y = yajl_version();
    curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
    char yv[32];
    snprintf(yv, sizeof yv, "%d.%d.%d", y / 10000, y / 100 % 100, y % 100);
    char ssl[128], q[160];
    snprintf(ssl, sizeof ssl, "%s", cv->ssl_version ? cv->ssl_version : "none");
    fhir_log(FHIR_LOG_INFO, "daemon.start",
             "version=%s yajl=%s libcurl=%s curl_tls=%s libxml2=%s libevent=%s libevent_backend=%s "
             "sqlite=%s openssl=%s",
             CARTGATE_VERSION, yv, cv->version, fhir_log_quote(ssl, q, sizeof q), LIBXML_DOTTED_VERSION,
             event_get_version(), event_base_get_method(base), store_sqlite_version(),
             OpenSSL_version(OPENSSL_VERSION_STRING));
}

daemon *daemon_new(const char *config_path, fhir_error *err)
{
    daemon *d = calloc(1, sizeof *d);
    if (!d)
        abort();
    d->config_path = xstrdup(config_path);
    d->m.started_ms = fhir_clock_now_ms();
    d->rt = rt_load(config_path, err);
    if (!d->rt)
        goto fail;
    fhir_log_set_level((fhir_log_level)d->rt->cfg->log_level);
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
    fhir_log(FHIR_LOG_INFO, "store.open", "schema=%d ruleset=%s indications=%zu centers=%zu",
             store_schema_version(d->st), elig_ruleset_hash(d->rt->rules),
             elig_ruleset_count(d->rt->rules), d->rt->centers->n);
    sender_rebuild(d);
    if (d->rt->cfg->admin_enabled && admin_start(d, err))
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

int daemon_run(daemon *d)
{
    /* patients left marked by a previous run are screened first */
    fhir_error err;
    fhir_error_clear(&err);
    long n = daemon_screen_pending(d, &err);
    if (n > 0)
        fhir_log(FHIR_LOG_INFO, "screen.recovered", "patients=%ld", n);
    event_base_dispatch(d->base);
    fhir_log(FHIR_LOG_INFO, "daemon.stop", "screened=%llu referrals_created=%llu",
             (unsigned long long)d->m.patients_screened, (unsigned long long)d->m.referrals_created);
    return 0;
}

void daemon_free(daemon *d)
{
    if (!d)
        return;
    sources_free(d);
    if (d->http)
        admin_stop(d);
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
    if (d->grace_timer)
        event_free(d->grace_timer);
    sender_free(d->snd);
    writeback_free(d->wb);
    store_close(d->st);
    rt_free(d->rt);
    rt_free(g_retired);
    g_retired = NULL;
    if (d->base)
        event_base_free(d->base);
    free(d->admin_token);
    free(d->config_path);
    free(d);
}
