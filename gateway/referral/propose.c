/* propose — verdict -> indications -> route -> Bundle -> referral (see propose.h). */
#include "propose.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bser.h"
#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "screen.h"

#define PROPOSE_MAX_EXPLANATION (1u << 20) /* bytes of the clinician summary */
#define PROPOSE_MAX_REASON 4096            /* bytes of ServiceRequest.reasonCode text */
#define PROPOSE_MAX_PAYLOAD (64u << 20)    /* bytes of the transaction Bundle */
#define PROPOSE_MAX_ROUTE (1u << 20)       /* bytes of the route explanation */
#define PROPOSE_ARENA (64u << 20)          /* bytes of the package's trees */

typedef struct cancel_ctx {
    const char *keep_placer;
    int64_t ids[PROPOSE_MAX_CANCELLED];
    size_t n;
} cancel_ctx;

static int cancel_collect(void *ctx, int64_t id, const char *placer_id)
{
    cancel_ctx *c = ctx;
    if (c->keep_placer && placer_id && !strcmp(placer_id, c->keep_placer))
        return 0;
    if (c->n < PROPOSE_MAX_CANCELLED)
        c->ids[c->n++] = id;
    return 0;
}

/* Cancels the patient's proposals still awaiting approval, except keep_placer (found by the
 * patient index, ids only). 0, or -1 on a store failure. */
static int cancel_stale(store *s, const char *pid, const char *keep_placer, const char *reason,
                        propose_result *out, fhir_error *err)
{
    cancel_ctx c = {.keep_placer = keep_placer};
    if (refer_patient_ids(s, pid, REFER_PENDING_APPROVAL, cancel_collect, &c, err) < 0)
        return -1;
    for (size_t i = 0; i < c.n; i++) {
        if (refer_cancel_in_tx(s, c.ids[i], "screener", reason, err))
            return -1;
        out->cancelled[out->n_cancelled++] = c.ids[i];
    }
    return 0;
}

static const char *urgency_for(const propose_opts *o, elig_urgency u)
{
    if (u == ELIG_URGENCY_NOW)
        return "urgent";
    return o->urgency_default ? o->urgency_default : "routine";
}

/* The patient's resources the package carries. */
typedef struct package_parts {
    const fhir_node *patient, *condition;
    const fhir_node **cov, **obs, **med;
    size_t ncov, nobs, nmed;
} package_parts;

static void parts_pick(const propose_input *in, const char *disease_evidence, package_parts *p)
{
    memset(p, 0, sizeof *p);
    p->cov = calloc(in->n_resources + 1, sizeof *p->cov);
    p->obs = calloc(in->n_resources + 1, sizeof *p->obs);
    p->med = calloc(in->n_resources + 1, sizeof *p->med);
    if (!p->cov || !p->obs || !p->med)
        abort();
    for (size_t i = 0; i < in->n_resources; i++) {
        const fhir_node *r = in->resources[i];
        const char *t = fhir_node_resource_type(r);
        if (!t)
            continue;
        if (!strcmp(t, "Patient"))
            p->patient = r;
        else if (!strcmp(t, "Coverage"))
            p->cov[p->ncov++] = r;
        else if (!strcmp(t, "Observation"))
            p->obs[p->nobs++] = r;
        else if (!strncmp(t, "Medication", 10) && strcmp(t, "Medication"))
            p->med[p->nmed++] = r;
        else if (!strcmp(t, "Condition")) {
            char ref[200];
            snprintf(ref, sizeof ref, "Condition/%s", fhir_node_resource_id(r) ? fhir_node_resource_id(r) : "");
            if (!p->condition || strstr(disease_evidence, ref))
                p->condition = r;
        }
    }
}

static void parts_free(package_parts *p)
{
    free(p->cov);
    free(p->obs);
    free(p->med);
}

int propose_withdraw(store *s, const char *patient_id, propose_result *out, fhir_error *err)
{
    memset(out, 0, sizeof *out);
    out->outcome = PROPOSE_NOT_CANDIDATE;
    return cancel_stale(s, patient_id, NULL, "nothing of the patient is cached any more", out,
                        err);
}

int propose_referral(store *s, const propose_opts *o, const propose_input *in,
                     propose_result *out, fhir_error *err)
{
    memset(out, 0, sizeof *out);
    const char *pid = in->patient_id;
    const elig_result *res = in->result;
    const map_profile *prof = in->profile;
    elig_category cat = elig_result_category(res);
    bool candidate = cat == ELIG_ELIGIBLE || (cat == ELIG_POSSIBLY_ELIGIBLE && o->with_possible);
    /* a refer-early recommendation alone makes a proposal when the site chose so
     * (referral.consult_proposals: 1 refer_now, 2 early_consult and refer_now) */
    elig_consult cons = elig_result_consult(res);
    bool consult_only = !candidate && cons != ELIG_CONSULT_NONE && o->consult_proposals > 0 &&
                        (cons == ELIG_CONSULT_NOW || o->consult_proposals == 2);
    if (!candidate && !consult_only) {
        out->outcome = PROPOSE_NOT_CANDIDATE;
        return cancel_stale(s, pid, NULL, "verdict no longer makes the patient a candidate", out,
                            err);
    }
    /* which indications count: screen.h decides (one definition for every caller) */
    const char *inds[ELIG_MAX_INDICATIONS];
    route_need needs[ELIG_MAX_INDICATIONS];
    char products[ELIG_MAX_INDICATIONS][48];
    size_t idx[ELIG_MAX_INDICATIONS];
    size_t n_idx = consult_only
                       ? screen_consult_indications(o->rules, res, idx, ELIG_MAX_INDICATIONS)
                       : screen_indications(o->rules, res, o->with_possible, idx, ELIG_MAX_INDICATIONS);
    size_t n = 0;
    const map_fact *dis = map_profile_fact(prof, "primary_disease");
    for (size_t k = 0; k < n_idx; k++) {
        size_t i = idx[k];
        elig_category ic = elig_result_ind_category(res, i);
        const char *key = elig_ruleset_key(o->rules, i);
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
    out->n_indications = n;
    if (n == 0) {
        out->outcome = PROPOSE_NO_INDICATION;
        return 0;
    }
    /* the best center */
    fhir_error rerr;
    fhir_error_clear(&rerr);
    fhir_arena *a = fhir_arena_new(PROPOSE_ARENA);
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
    route_site site = {.has_location = o->site_has_location, .lat = o->site_lat, .lon = o->site_lon,
                       .name = o->site_name};
    route_origin origin;
    route_result rr;
    const map_fact *payer = map_profile_fact(prof, "payer");
    if (route_resolve_origin(&loc, o->zcta, &site, &origin, &rerr) ||
        route_rank(a, o->centers, &origin, needs, n, payer && payer->known ? payer->str : NULL, o->day,
                   NULL, &rr, &rerr)) {
        out->outcome = PROPOSE_ROUTE_FAILED;
        snprintf(out->detail, sizeof out->detail, "%s", rerr.msg);
        fhir_arena_free(a);
        return 0;
    }
    if (rr.n_candidates == 0) {
        out->outcome = PROPOSE_NO_CENTER;
        fhir_arena_free(a);
        return 0;
    }
    const centers_center *center = rr.candidates[0].center;
    snprintf(out->center_id, sizeof out->center_id, "%s", center->id);
    char placer[REFER_PLACER_MAX];
    if (refer_placer_id(o->site_id, pid, inds, n, center->id, placer, &rerr)) {
        out->outcome = PROPOSE_NO_PAYLOAD;
        snprintf(out->detail, sizeof out->detail, "%s", rerr.msg);
        fhir_arena_free(a);
        return 0;
    }
    int rc = -1;
    char *payload = NULL, *route_json = NULL;
    fhir_buf expl, reason;
    fhir_buf_init(&expl, PROPOSE_MAX_EXPLANATION);
    fhir_buf_init(&reason, PROPOSE_MAX_REASON);
    package_parts parts = {0};
    if (cancel_stale(s, pid, placer, "superseded by a new verdict", out, err))
        goto done;
    int64_t existing;
    int found = refer_find(s, placer, &existing, err);
    if (found < 0)
        goto done;
    if (found == 1) {
        out->outcome = PROPOSE_EXISTS; /* already proposed (or sent): exactly once */
        out->referral_id = existing;
        rc = 0;
        goto done;
    }
    /* the package */
    parts_pick(in, dis && dis->evidence ? dis->evidence : "", &parts);
    elig_result_write_explanation(o->rules, in->facts, res, &expl);
    if (consult_only)
        fhir_buf_printf(&reason, "CAR T consultation (%s; label %s): %s", elig_consult_name(cons),
                        elig_category_name(cat), inds[0]);
    else
        fhir_buf_printf(&reason, "CAR T evaluation (%s): %s", elig_category_name(cat), inds[0]);
    for (size_t i = 1; i < n; i++)
        fhir_buf_printf(&reason, ", %s", inds[i]);
    const char *urg = urgency_for(o, elig_result_urgency(res));
    snprintf(out->urgency, sizeof out->urgency, "%s", urg);
    if (!parts.patient) {
        out->outcome = PROPOSE_NO_PAYLOAD; /* nothing to send without the Patient */
        rc = 0;
        goto done;
    }
    char sysbase[200];
    snprintf(sysbase, sizeof sysbase, "urn:cartgate:%s", o->site_id);
    bser_input bi = {
        .id_system_base = sysbase, .placer_id = placer, .site_id = o->site_id,
        .site_name = o->site_name && *o->site_name ? o->site_name : o->site_id,
        .center = center, .patient_id = pid, .patient = parts.patient,
        .coverages = parts.cov, .n_coverages = parts.ncov, .condition = parts.condition,
        .observations = parts.obs, .n_observations = parts.nobs, .medications = parts.med,
        .n_medications = parts.nmed, .reason_text = fhir_buf_cstr(&reason),
        .summary_text = fhir_buf_cstr(&expl), .verdict_json = in->verdict_json, .urgency = urg,
        .authored_ms = fhir_clock_now_ms(),
    };
    fhir_node *bundle = bser_build(a, &bi, &rerr);
    if (bundle)
        payload = fhir_json_to_string(bundle, FHIR_JSON_COMPACT, PROPOSE_MAX_PAYLOAD);
    if (!payload) {
        out->outcome = PROPOSE_NO_PAYLOAD;
        snprintf(out->detail, sizeof out->detail, "%s",
                 bundle ? "the package is larger than its cap" : rerr.msg);
        rc = 0;
        goto done;
    }
    fhir_node *rj = route_explain_json(a, &rr);
    route_json = rj ? fhir_json_to_string(rj, FHIR_JSON_COMPACT, PROPOSE_MAX_ROUTE) : NULL;
    refer_request req = {
        .site_id = o->site_id, .patient_id = pid, .center_id = center->id, .indications = inds,
        .n_indications = n, .urgency = urg, .explanation = fhir_buf_cstr(&expl),
        .verdict_json = in->verdict_json, .route_json = route_json, .payload = payload,
        .mode = o->mode, .actor = "screener",
    };
    bool created = false;
    if (refer_create_in_tx(s, &req, &out->referral_id, &created, err))
        goto done;
    out->outcome = created ? PROPOSE_CREATED : PROPOSE_EXISTS;
    rc = 0;
done:
    parts_free(&parts);
    free(route_json);
    free(payload);
    fhir_buf_free(&expl);
    fhir_buf_free(&reason);
    fhir_arena_free(a);
    return rc;
}

void propose_log(const char *pid, refer_mode mode, const propose_result *r)
{
    for (size_t i = 0; i < r->n_cancelled; i++)
        fhir_log(FHIR_LOG_INFO, "referral.cancelled", "referral=%lld patient=%s reason=verdict_changed",
                 (long long)r->cancelled[i], pid);
    switch (r->outcome) {
    case PROPOSE_ROUTE_FAILED:
        fhir_log(FHIR_LOG_WARN, "referral.route_failed", "patient=%s error=%s", pid,
                 r->detail);
        break;
    case PROPOSE_NO_CENTER:
        fhir_log(FHIR_LOG_WARN, "referral.no_center", "patient=%s indications=%zu", pid,
                 r->n_indications);
        break;
    case PROPOSE_NO_PAYLOAD:
        if (r->detail[0])
            fhir_log(FHIR_LOG_WARN, "referral.payload_failed", "patient=%s error=%s", pid,
                     r->detail);
        break;
    case PROPOSE_CREATED:
        fhir_log(FHIR_LOG_INFO, "referral.created",
                 "referral=%lld patient=%s center=%s indications=%zu mode=%s urgency=%s",
                 (long long)r->referral_id, pid, r->center_id, r->n_indications,
                 mode == REFER_MODE_AUTO ? "auto" : "approval", r->urgency);
        break;
    default:
        break;
    }
}
