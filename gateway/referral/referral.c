/* referral — referral rows, placer identifiers and the state machine. */
#include "referral.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fhir_alloc.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_log.h"
#include "propose.h"

static const char *const state_names[REFER_N_STATES] = {
    "pending_approval", "approved", "sending", "sent", "accepted",
    "declined", "scheduled", "completed", "cancelled", "failed",
};

const char *refer_state_name(refer_state s)
{
    return (unsigned)s < REFER_N_STATES ? state_names[s] : "?";
}

int refer_state_parse(const char *name, refer_state *out)
{
    for (int i = 0; name && i < REFER_N_STATES; i++)
        if (!strcmp(name, state_names[i])) {
            *out = (refer_state)i;
            return 0;
        }
    return -1;
}

#define B(s) (1u << (s))
static const unsigned allowed[REFER_N_STATES] = {
    [REFER_PENDING_APPROVAL] = B(REFER_APPROVED) | B(REFER_CANCELLED),
    [REFER_APPROVED] = B(REFER_SENDING) | B(REFER_CANCELLED),
    [REFER_SENDING] = B(REFER_SENT) | B(REFER_FAILED),
    [REFER_SENT] = B(REFER_ACCEPTED) | B(REFER_DECLINED) | B(REFER_SCHEDULED) |
                   B(REFER_COMPLETED) | B(REFER_CANCELLED) | B(REFER_FAILED),
    [REFER_ACCEPTED] = B(REFER_SCHEDULED) | B(REFER_DECLINED) | B(REFER_COMPLETED) |
                       B(REFER_CANCELLED) | B(REFER_FAILED),
    [REFER_SCHEDULED] = B(REFER_COMPLETED) | B(REFER_DECLINED) | B(REFER_CANCELLED) |
                        B(REFER_FAILED),
    [REFER_FAILED] = B(REFER_APPROVED) | B(REFER_CANCELLED),
};

bool refer_transition_allowed(refer_state from, refer_state to)
{
    if ((unsigned)from >= REFER_N_STATES || (unsigned)to >= REFER_N_STATES)
        return false;
    return (allowed[from] & B(to)) != 0;
}

bool refer_state_terminal(refer_state s)
{
    return s == REFER_DECLINED || s == REFER_COMPLETED || s == REFER_CANCELLED;
}

static void allowed_list(refer_state from, char *out, size_t n)
{
    out[0] = '\0';
    size_t used = 0;
    for (int i = 0; i < REFER_N_STATES; i++)
        if (allowed[from] & B(i)) {
            int w = snprintf(out + used, n - used, "%s%s", used ? ", " : "", state_names[i]);
            if (w < 0 || (size_t)w >= n - used)
                break;
            used += (size_t)w;
        }
    if (!used)
        snprintf(out, n, "none (terminal)");
}

/* ---- placer identifier -------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted, de-duplicated, comma-joined indication keys. Caller frees. */
static char *join_indications(const char *const *ind, size_t n, fhir_error *err)
{
    const char **v = fhir_xcalloc(n + 1, sizeof *v);
    for (size_t i = 0; i < n; i++) {
        if (!ind[i] || !ind[i][0] || strchr(ind[i], ',')) {
            free(v);
            fhir_error_set(err, "indication key #%zu is empty or contains a comma", i + 1);
            return NULL;
        }
        v[i] = ind[i];
    }
    qsort(v, n, sizeof *v, cmp_str);
    fhir_buf b;
    fhir_buf_init(&b, REFER_INDICATIONS_MAX);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(v[i], v[i - 1])) { /* at the cap: overflow, the list refused below */
            if (b.len)
                fhir_buf_append(&b, ",", 1);
            fhir_buf_puts(&b, v[i]);
        }
    free(v);
    if (b.overflow) {
        fhir_buf_free(&b);
        fhir_error_set(err, "indication list too long");
        return NULL;
    }
    char *r = fhir_buf_steal(&b, NULL);
    return r ? r : strdup("");
}

char *refer_join_indications(const char *const *indications, size_t n, fhir_error *err)
{
    return join_indications(indications, n, err);
}

static int placer_from_joined(const char *site, const char *patient, const char *joined,
                              const char *center, char out[REFER_PLACER_MAX])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        abort();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    const char *parts[] = {"cartgate-placer-v1", site, patient, joined, center};
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    for (size_t i = 0; i < 5; i++)
        EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]) + 1); /* NUL separates fields */
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "CG-", 3);
    for (int i = 0; i < 16; i++) {
        out[3 + 2 * i] = hex[md[i] >> 4];
        out[4 + 2 * i] = hex[md[i] & 15];
    }
    out[35] = '\0';
    return 0;
}

/* refer_placer_id's work, the joined indications handed back in *joined (caller frees) for the
 * v2 forms refer_placer_unique derives from them. 0, or -1 with err (nothing to free). */
static int placer_id_joined(const char *site_id, const char *patient_id, const char *const *indications,
                            size_t n_indications, const char *center_id, char out[REFER_PLACER_MAX],
                            char **joined, fhir_error *err)
{
    if (!site_id || !site_id[0] || !patient_id || !patient_id[0] || !center_id ||
        !center_id[0] || n_indications == 0)
        return fhir_error_set(err, "placer id needs a site, a patient, a center and at least "
                                   "one indication");
    *joined = join_indications(indications, n_indications, err);
    if (!*joined)
        return -1;
    placer_from_joined(site_id, patient_id, *joined, center_id, out);
    return 0;
}

int refer_placer_id(const char *site_id, const char *patient_id,
                    const char *const *indications, size_t n_indications,
                    const char *center_id, char out[REFER_PLACER_MAX], fhir_error *err)
{
    char *joined = NULL;
    if (placer_id_joined(site_id, patient_id, indications, n_indications, center_id, out, &joined, err))
        return -1;
    free(joined);
    return 0;
}

int refer_placer_unique(store *s, const char *site_id, const char *patient_id,
                        const char *const *indications, size_t n_indications,
                        const char *center_id, char out[REFER_PLACER_MAX], fhir_error *err)
{
    char *joined = NULL; /* joined once, for the first form and the v2 ones */
    if (placer_id_joined(site_id, patient_id, indications, n_indications, center_id, out, &joined, err))
        return -1;
    int rc = -1;
    for (unsigned k = 1; k <= 1000; k++) {
        int64_t id;
        int f = store_referral_find(s, out, &id, err);
        if (f < 0)
            goto done;
        if (f == 0) {
            rc = 0;
            goto done;
        }
        /* taken (an earlier referral of the patient): the v2 form with a counter */
        char n[16], mixed[REFER_INDICATIONS_MAX + 32];
        snprintf(n, sizeof n, "%u", k);
        snprintf(mixed, sizeof mixed, "%s#cartgate-placer-v2#%s", joined, n);
        placer_from_joined(site_id, patient_id, mixed, center_id, out);
    }
    fhir_error_set(err, "no free placer identifier for patient %s after 1000 tries", patient_id);
done:
    free(joined);
    return rc;
}

/* ---- rows --------------------------------------------------------------------------- */

static char *dup_or_null(const char *v)
{
    if (!v)
        return NULL;
    char *r = fhir_xstrdup(v);
    return r;
}

/* A copy of a store row (caller frees with refer_record_free). */
static void record_from_row(const store_referral *row, refer_record *r)
{
    memset(r, 0, sizeof *r);
    r->id = row->id;
    r->placer_id = dup_or_null(row->placer_id);
    r->site_id = dup_or_null(row->site_id);
    r->patient_id = dup_or_null(row->patient_id);
    r->center_id = dup_or_null(row->center_id);
    r->indications = dup_or_null(row->indications);
    refer_state_parse(row->state, &r->state);
    r->mode = dup_or_null(row->mode);
    r->urgency = dup_or_null(row->urgency);
    r->explanation = dup_or_null(row->explanation);
    r->verdict_json = dup_or_null(row->verdict_json);
    r->route_json = dup_or_null(row->route_json);
    r->payload = dup_or_null(row->payload);
    r->attempts = row->attempts;
    r->next_attempt_ms = row->next_attempt_ms;
    r->last_status = row->last_status;
    r->last_error = dup_or_null(row->last_error);
    r->last_response = dup_or_null(row->last_response);
    r->center_sr_ref = dup_or_null(row->center_sr_ref);
    r->center_task_ref = dup_or_null(row->center_task_ref);
    r->task_status = dup_or_null(row->task_status);
    r->business_status = dup_or_null(row->business_status);
    r->created_ms = row->created_ms;
    r->updated_ms = row->updated_ms;
    r->episode = row->episode;
    r->supersedes = row->supersedes;
    r->episode_marker = dup_or_null(row->episode_marker);
    r->ended = dup_or_null(row->ended);
    r->cancel_requested_ms = row->cancel_requested_ms;
    r->package = dup_or_null(row->package);
    refer_compose_cause cc = REFER_COMPOSE_OK;
    if (row->compose_cause && refer_compose_cause_parse(row->compose_cause, &cc))
        cc = REFER_COMPOSE_OTHER; /* a cause this binary does not know */
    r->compose_cause = (int)cc;
    r->compose_error = dup_or_null(row->compose_error);
}

void refer_record_free(refer_record *r)
{
    if (!r)
        return;
    char **strs[] = {&r->placer_id, &r->site_id, &r->patient_id, &r->center_id,
                     &r->indications, &r->mode, &r->urgency, &r->explanation,
                     &r->verdict_json, &r->route_json, &r->payload, &r->last_error,
                     &r->last_response, &r->center_sr_ref, &r->center_task_ref,
                     &r->task_status, &r->business_status, &r->episode_marker, &r->ended,
                     &r->package, &r->compose_error};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
}

static int copy_row(void *ctx, const store_referral *row)
{
    record_from_row(row, ctx);
    return 1;
}

/* The row as stored (no payload built): what the state machine reads. */
static int get_row(store *s, int64_t id, refer_record *out, fhir_error *err)
{
    return store_referral_get(s, id, copy_row, out, err);
}

/* A payload not stored yet, built from the package (a failure leaves it NULL: logged). */
static void build_payload(store *s, refer_record *r)
{
    if (r->payload || !r->package)
        return;
    fhir_error e;
    fhir_error_clear(&e);
    char *p = NULL;
    if (propose_package_payload(s, r, &p, &e) == 0) {
        r->payload = p;
        r->payload_built = true;
    } else {
        fhir_log(FHIR_LOG_WARN, "referral.payload_failed", "referral=%lld patient=%s error=%s",
                 (long long)r->id, r->patient_id ? r->patient_id : "", e.msg);
    }
}

static refer_compose_fn composer;
static void *composer_ud;

static int transition_locked(store *s, int64_t id, refer_state to, const store_actor *who,
                             const char *action, const char *detail,
                             const store_referral_change *x, refer_state *from_out,
                             fhir_error *err);
static store_actor named(const char *actor);
static void log_state(int64_t id, refer_state from, refer_state to, const char *action,
                      const store_actor *who);

void refer_set_composer(refer_compose_fn fn, void *ud)
{
    composer = fn;
    composer_ud = fn ? ud : NULL;
}

bool refer_texts_pending(const refer_record *r)
{
    return !r->package && !r->payload && !r->explanation && !r->route_json;
}

static const char *const compose_cause_names[REFER_COMPOSE_N_CAUSES] = {
    "ok", "patient_not_cached", "verdict_changed", "center_not_candidate", "package_too_large",
    "not_loaded", "other",
};

const char *refer_compose_cause_name(refer_compose_cause c)
{
    return (unsigned)c < REFER_COMPOSE_N_CAUSES ? compose_cause_names[c] : "other";
}

const char *refer_compose_cause_words(refer_compose_cause c)
{
    switch (c) {
    case REFER_COMPOSE_OK: return "prepared";
    case REFER_COMPOSE_NOT_CACHED: return "the patient's record is no longer held here";
    case REFER_COMPOSE_VERDICT_CHANGED: return "the current verdict no longer calls for it";
    case REFER_COMPOSE_CENTER_GONE: return "its center is no longer a candidate: choose another center";
    case REFER_COMPOSE_TOO_LARGE: return "the package is larger than cartgate sends";
    case REFER_COMPOSE_NOT_LOADED: return "the criteria or center directory are not loaded";
    default: return "an internal error";
    }
}

int refer_compose_cause_parse(const char *name, refer_compose_cause *out)
{
    if (!name) {
        *out = REFER_COMPOSE_OK;
        return 0;
    }
    for (int i = 0; i < REFER_COMPOSE_N_CAUSES; i++)
        if (!strcmp(name, compose_cause_names[i])) {
            *out = (refer_compose_cause)i;
            return 0;
        }
    return -1;
}

/* The cause in plain words for the people who act on the referral: what happened and what
 * they can do (no paths, no patient data). */
static void compose_sentence(const refer_record *r, refer_compose_cause c, char *out, size_t n)
{
    bool pending = r->state == REFER_PENDING_APPROVAL;
    switch (c) {
    case REFER_COMPOSE_NOT_CACHED:
        snprintf(out, n, "Nothing of the patient's record is held here any more (the EHR no longer "
                         "returns it), so the referral cannot be prepared. It is screened again when "
                         "the EHR returns data for the patient; otherwise %s it.",
                 pending ? "decline" : "cancel");
        break;
    case REFER_COMPOSE_VERDICT_CHANGED:
        snprintf(out, n, "The patient's record as screened now no longer calls for this referral%s",
                 pending ? ": the proposal was withdrawn, as a new screening would withdraw it."
                         : ". It is not sent: cancel it, or it is prepared again if a new screening "
                           "calls for it.");
        break;
    case REFER_COMPOSE_CENTER_GONE:
        snprintf(out, n, "Center %s is no longer among the centers ranked for this patient (the center "
                         "directory changed, or the center no longer offers what the patient needs). "
                         "Choose another center (re-route)%s.",
                 r->center_id ? r->center_id : "?", pending ? " or decline it" : " or cancel it");
        break;
    case REFER_COMPOSE_TOO_LARGE:
        snprintf(out, n, "The referral package is larger than cartgate sends, so it cannot be prepared. "
                         "%s it and refer the patient by other means.",
                 pending ? "Decline" : "Cancel");
        break;
    case REFER_COMPOSE_NOT_LOADED:
        snprintf(out, n, "The criteria, terminology tables or center directory are not loaded, so the "
                         "referral cannot be prepared; an administrator must fix the configuration. "
                         "It is prepared once they load.");
        break;
    default:
        snprintf(out, n, "The referral could not be prepared (an internal error, logged as "
                         "referral.compose_failed). It is tried again; if this stays, tell the "
                         "administrator%s.",
                 pending ? ", or decline it" : ", or cancel it");
        break;
    }
}

/* Records why the texts of r could not be composed: the cause and its sentence on the row,
 * audited ("compose-failed", actor "composer") when they changed; a proposal still pending
 * approval whose verdict no longer calls for it is withdrawn as a re-screen withdraws it.
 * Joins the caller's transaction when one is open. r is read back as stored. 0 or -1. */
static int compose_record(store *s, refer_record *r, refer_compose_cause cause, fhir_error *err)
{
    char text[REFER_COMPOSE_ERROR_MAX];
    compose_sentence(r, cause, text, sizeof text);
    bool withdraw = cause == REFER_COMPOSE_VERDICT_CHANGED && r->state == REFER_PENDING_APPROVAL;
    if (!withdraw && r->compose_cause == (int)cause && r->compose_error && !strcmp(r->compose_error, text))
        return 0; /* recorded before */
    bool own = !store_in_transaction(s);
    if (own && store_begin(s, err))
        return -1;
    store_referral_change x = {.set_compose = true, .compose_cause = refer_compose_cause_name(cause),
                               .compose_error = text};
    store_actor who = named("composer");
    refer_state from = r->state;
    int rc;
    if (withdraw) {
        x.set_ended = true;
        x.ended = REFER_ENDED_WITHDRAWN;
        rc = transition_locked(s, r->id, REFER_CANCELLED, &who, "cancel", text, &x, &from, err);
    } else {
        rc = store_referral_update(s, r->id, &x, err) ||
                     store_audit_actor(s, &who, "compose-failed", r->id, state_names[r->state],
                                       state_names[r->state], text, err)
                 ? -1
                 : 0;
    }
    if (own) {
        if (rc)
            store_rollback(s);
        else if (store_commit(s, err))
            rc = -1;
    }
    if (rc)
        return -1;
    if (withdraw && own)
        log_state(r->id, from, REFER_CANCELLED, "cancel", &who);
    /* read back into a fresh record: on failure r stays as it was */
    refer_record fresh;
    memset(&fresh, 0, sizeof fresh);
    if (get_row(s, r->id, &fresh, err) != 1) {
        refer_record_free(&fresh);
        return -1;
    }
    refer_record_free(r);
    *r = fresh;
    return 0;
}

/* The texts of a proposal stored without them, composed now (the first reader) and read back
 * as stored; a failure is logged and recorded on the row (compose_record), which is read
 * without them. A row that ended with a recorded cause is not composed again. */
static int compose_texts(store *s, refer_record *r, fhir_error *err)
{
    if (!composer || !refer_texts_pending(r))
        return 1;
    if (r->compose_cause != REFER_COMPOSE_OK && refer_state_terminal(r->state))
        return 1;
    fhir_error e;
    fhir_error_clear(&e);
    refer_compose_cause cause = REFER_COMPOSE_OTHER;
    if (composer(composer_ud, s, r, &cause, &e) == 0) {
        int64_t id = r->id;
        refer_record_free(r);
        return get_row(s, id, r, err);
    }
    if (cause == REFER_COMPOSE_OK || (unsigned)cause >= REFER_COMPOSE_N_CAUSES)
        cause = REFER_COMPOSE_OTHER;
    fhir_log(FHIR_LOG_WARN, "referral.compose_failed", "referral=%lld patient=%s cause=%s error=%s",
             (long long)r->id, r->patient_id ? r->patient_id : "", refer_compose_cause_name(cause), e.msg);
    fhir_error re;
    fhir_error_clear(&re);
    if (compose_record(s, r, cause, &re)) /* not recorded (a store failure): r as it was read */
        fhir_log(FHIR_LOG_ERROR, "referral.compose_record_failed", "referral=%lld error=%s",
                 (long long)r->id, re.msg);
    return 1;
}

int refer_get(store *s, int64_t id, refer_record *out, fhir_error *err)
{
    int f = get_row(s, id, out, err);
    if (f == 1)
        f = compose_texts(s, out, err);
    if (f == 1)
        build_payload(s, out);
    return f;
}

int refer_get_by_placer(store *s, const char *placer_id, refer_record *out, fhir_error *err)
{
    int f = store_referral_get_by_placer(s, placer_id, copy_row, out, err);
    if (f == 1)
        f = compose_texts(s, out, err);
    if (f == 1)
        build_payload(s, out);
    return f;
}

int refer_keep_payload(store *s, const refer_record *r, fhir_error *err)
{
    if (!r->payload_built)
        return 0;
    store_referral_change u = {.set_payload = true, .payload = r->payload};
    return store_referral_update(s, r->id, &u, err);
}

int refer_find(store *s, const char *placer_id, int64_t *id_out, fhir_error *err)
{
    return store_referral_find(s, placer_id, id_out, err);
}

typedef struct each_ctx {
    refer_each_fn fn;
    void *ctx;
} each_ctx;

static int each_row(void *ctx, const store_referral *row)
{
    each_ctx *c = ctx;
    if (!c->fn)
        return 0;
    refer_record r;
    record_from_row(row, &r);
    int stop = c->fn(c->ctx, &r);
    refer_record_free(&r);
    return stop;
}

int64_t refer_list(store *s, const refer_filter *f, refer_each_fn fn, void *ctx,
                   fhir_error *err)
{
    store_referral_filter sf = {
        .state = f->state >= 0 && f->state < REFER_N_STATES ? state_names[f->state] : NULL,
        .center_id = f->center_id, .patient_id = f->patient_id, .summary = f->summary,
    };
    each_ctx c = {fn, ctx};
    return store_referral_each(s, &sf, each_row, &c, err);
}

int64_t refer_each(store *s, int state_filter, const char *center_id, refer_each_fn fn,
                   void *ctx, fhir_error *err)
{
    refer_filter f = {.state = state_filter, .center_id = center_id};
    return refer_list(s, &f, fn, ctx, err);
}

int64_t refer_patient_ids(store *s, const char *patient_id, refer_state state,
                          refer_id_fn fn, void *ctx, fhir_error *err)
{
    return store_referral_ids(s, patient_id, refer_state_name(state), fn, ctx, err);
}

static void count_one(void *ctx, const char *name, int64_t n)
{
    int64_t *counts = ctx;
    refer_state k;
    if (refer_state_parse(name, &k) == 0)
        counts[k] = n;
}

int refer_count_by_state(store *s, int64_t counts[REFER_N_STATES], fhir_error *err)
{
    memset(counts, 0, REFER_N_STATES * sizeof counts[0]);
    return store_referral_count_by_state(s, count_one, counts, err);
}

int refer_outbox_stats(store *s, int64_t *depth, int64_t *oldest_created_ms, fhir_error *err)
{
    *depth = 0;
    *oldest_created_ms = 0;
    static const refer_state queued[] = {REFER_APPROVED, REFER_SENDING};
    for (size_t i = 0; i < 2; i++) {
        int64_t n, oldest;
        if (store_referral_state_age(s, state_names[queued[i]], &n, &oldest, err))
            return -1;
        *depth += n;
        if (n && (!*oldest_created_ms || oldest < *oldest_created_ms))
            *oldest_created_ms = oldest;
    }
    return 0;
}

int64_t refer_time_to_sent(store *s, void (*fn)(void *ctx, int64_t ms), void *ctx,
                           fhir_error *err)
{
    return store_referral_time_to_state(s, state_names[REFER_SENT], fn, ctx, err);
}

/* ---- transitions -------------------------------------------------------------------- */

static int read_state(store *s, int64_t id, refer_state *out, fhir_error *err)
{
    char name[32];
    int f = store_referral_state(s, id, name, sizeof name, err);
    if (f < 0)
        return -1;
    if (f == 0)
        return fhir_error_set(err, "referral %lld does not exist", (long long)id);
    if (refer_state_parse(name, out))
        return fhir_error_set(err, "referral %lld: unknown stored state \"%s\"", (long long)id,
                              name);
    return 0;
}

/* Inside an open transaction: checks, updates (the state and whatever else x sets),
 * audits with who (name, user id, role, source, reason). */
static int transition_locked(store *s, int64_t id, refer_state to, const store_actor *who,
                             const char *action, const char *detail,
                             const store_referral_change *x, refer_state *from_out,
                             fhir_error *err)
{
    refer_state from;
    if (read_state(s, id, &from, err))
        return -1;
    if (from_out)
        *from_out = from;
    if (!refer_transition_allowed(from, to)) {
        char ok[200];
        allowed_list(from, ok, sizeof ok);
        if (err)
            err->code = 409;
        return fhir_error_set(err, "referral %lld: cannot go from %s to %s (allowed from %s: "
                                   "%s)", (long long)id, state_names[from], state_names[to],
                              state_names[from], ok);
    }
    store_referral_change u = x ? *x : (store_referral_change){0};
    u.state = state_names[to];
    if (store_referral_update(s, id, &u, err))
        return -1;
    if (store_audit_actor(s, who, action, id, state_names[from], state_names[to], detail, err))
        return -1;
    return 0;
}

/* A system actor (the daemon's parts, a center, the command line's --actor). */
static store_actor named(const char *actor)
{
    return (store_actor){.name = actor ? actor : "system"};
}

/* After the commit: one line per state change; a person is named by user id only (the audit
 * row has the name). */
static void log_state(int64_t id, refer_state from, refer_state to, const char *action,
                      const store_actor *who)
{
    if (who->user_id > 0)
        fhir_log(FHIR_LOG_INFO, "referral.state", "referral=%lld from=%s to=%s action=%s user=%lld role=%s",
                 (long long)id, state_names[from], state_names[to], action, (long long)who->user_id,
                 who->role ? who->role : "-");
    else
        fhir_log(FHIR_LOG_INFO, "referral.state", "referral=%lld from=%s to=%s action=%s actor=%s", (long long)id,
                 state_names[from], state_names[to], action, who->name ? who->name : "system");
}

static int transition_tx(store *s, int64_t id, refer_state to, const store_actor *who,
                         const char *action, const char *detail,
                         const store_referral_change *x, fhir_error *err)
{
    if (store_begin(s, err))
        return -1;
    refer_state from = to;
    if (transition_locked(s, id, to, who, action, detail, x, &from, err)) {
        store_rollback(s);
        return -1;
    }
    if (store_commit(s, err))
        return -1;
    log_state(id, from, to, action, who);
    return 0;
}

int refer_transition(store *s, int64_t id, refer_state to, const char *actor,
                     const char *detail, fhir_error *err)
{
    store_actor who = named(actor);
    return transition_tx(s, id, to, &who, refer_state_name(to), detail, NULL, err);
}

const char *refer_act_name(refer_act act)
{
    switch (act) {
    case REFER_ACT_APPROVE: return "approve";
    case REFER_ACT_DECLINE: return "decline";
    case REFER_ACT_CANCEL: return "cancel";
    case REFER_ACT_RETRY: return "retry";
    }
    return "?";
}

int refer_act_parse(const char *name, refer_act *out)
{
    for (int a = REFER_ACT_APPROVE; a <= REFER_ACT_RETRY; a++)
        if (name && !strcmp(name, refer_act_name((refer_act)a))) {
            *out = (refer_act)a;
            return 0;
        }
    return -1;
}

/* 0 when referral id is in state `want`; else -1 with err (409: "<why> (it is <state>)"). */
static int require_state(store *s, int64_t id, refer_state want, const char *why, fhir_error *err)
{
    refer_state from;
    if (read_state(s, id, &from, err))
        return -1;
    if (from == want)
        return 0;
    if (err)
        err->code = 409;
    return fhir_error_set(err, "referral %lld: %s (it is %s)", (long long)id, why, state_names[from]);
}

static int approve_tx(store *s, int64_t id, const store_actor *who, fhir_error *err);

/* A person cancels: a referral at its center (sent, accepted, scheduled) is marked for the
 * sender, which sets its Task's status to cancelled there (If-Match) and only then moves it
 * to cancelled (refer_mark_cancelled_at_center); the request is audited with the person
 * ("cancel-requested", state unchanged). Anything else is cancelled here at once. */
static int cancel_tx(store *s, int64_t id, const store_actor *who, fhir_error *err)
{
    if (store_begin(s, err))
        return -1;
    refer_state cur;
    if (read_state(s, id, &cur, err)) {
        store_rollback(s);
        return -1;
    }
    if (cur == REFER_SENT || cur == REFER_ACCEPTED || cur == REFER_SCHEDULED) {
        store_referral_change x = {.set_cancel_request = true, .cancel_requested_ms = fhir_clock_now_ms()};
        if (store_referral_update(s, id, &x, err) ||
            store_audit_actor(s, who, "cancel-requested", id, state_names[cur], state_names[cur], who->reason, err)) {
            store_rollback(s);
            return -1;
        }
        if (store_commit(s, err))
            return -1;
        if (who->user_id > 0)
            fhir_log(FHIR_LOG_INFO, "referral.cancel_requested", "referral=%lld state=%s user=%lld role=%s",
                     (long long)id, state_names[cur], (long long)who->user_id, who->role ? who->role : "-");
        else
            fhir_log(FHIR_LOG_INFO, "referral.cancel_requested", "referral=%lld state=%s actor=%s", (long long)id,
                     state_names[cur], who->name);
        return 0;
    }
    refer_state from = cur;
    if (transition_locked(s, id, REFER_CANCELLED, who, "cancel", who->reason, NULL, &from, err)) {
        store_rollback(s);
        return -1;
    }
    if (store_commit(s, err))
        return -1;
    log_state(id, from, REFER_CANCELLED, "cancel", who);
    return 0;
}

int refer_do(store *s, int64_t id, refer_act act, const store_actor *who, fhir_error *err)
{
    if (!who || !who->name || !*who->name)
        return fhir_error_set(err, "referral %lld: %s needs an actor", (long long)id, refer_act_name(act));
    if (who->reason && strlen(who->reason) > REFER_REASON_MAX) {
        if (err)
            err->code = 400;
        return fhir_error_set(err, "referral %lld: the reason is longer than %u bytes", (long long)id,
                              REFER_REASON_MAX);
    }
    switch (act) {
    case REFER_ACT_APPROVE:
        return approve_tx(s, id, who, err);
    case REFER_ACT_DECLINE: {
        if (!who->reason || !*who->reason) {
            if (err)
                err->code = 400;
            return fhir_error_set(err, "referral %lld: declining needs a reason", (long long)id);
        }
        if (require_state(s, id, REFER_PENDING_APPROVAL, "only a proposal pending approval can be declined", err))
            return -1;
        return transition_tx(s, id, REFER_CANCELLED, who, "decline", who->reason, NULL, err);
    }
    case REFER_ACT_CANCEL:
        return cancel_tx(s, id, who, err);
    case REFER_ACT_RETRY: {
        if (require_state(s, id, REFER_FAILED, "retry is only for failed referrals", err))
            return -1;
        store_referral_change x = {.reset_attempts = true};
        return transition_tx(s, id, REFER_APPROVED, who, "retry", NULL, &x, err);
    }
    }
    return fhir_error_set(err, "referral %lld: unknown action", (long long)id);
}

/* Inside the open transaction: the referral a just-approved re-route replaces ends —
 * cancelled here when nothing of it can be at its center, else marked for the sender.
 * *cancelled_here is set to the id cancelled here (0 none), *old_from to its state before. */
static int supersede_locked(store *s, int64_t new_id, int64_t old_id, const store_actor *who,
                            int64_t *cancelled_here, refer_state *old_from, fhir_error *err)
{
    *cancelled_here = 0;
    refer_record old;
    int f = get_row(s, old_id, &old, err);
    if (f < 0)
        return -1;
    if (f == 0)
        return 0; /* nothing to replace */
    int rc = 0;
    char detail[160];
    snprintf(detail, sizeof detail, "superseded by referral %lld (re-route approved)",
             (long long)new_id);
    if (refer_state_terminal(old.state)) {
        rc = 0; /* already over */
    } else if (old.state == REFER_PENDING_APPROVAL || old.state == REFER_APPROVED ||
               old.state == REFER_FAILED) {
        /* never at the center, or its Task there is over (failed): cancelled here */
        store_referral_change x = {.set_ended = true, .ended = REFER_ENDED_SUPERSEDED};
        rc = transition_locked(s, old_id, REFER_CANCELLED, who, "cancel", detail, &x, NULL,
                               err);
        if (rc == 0) {
            *cancelled_here = old_id;
            *old_from = old.state;
        }
    } else {
        /* sending, sent, accepted, scheduled: the sender cancels its Task at the center */
        store_referral_change x = {.set_ended = true, .ended = REFER_ENDED_SUPERSEDED,
                                   .set_cancel_request = true,
                                   .cancel_requested_ms = fhir_clock_now_ms()};
        rc = store_referral_update(s, old_id, &x, err) ||
                     store_audit_actor(s, who, "cancel-requested", old_id,
                                 state_names[old.state], state_names[old.state], detail, err)
                 ? -1
                 : 0;
    }
    refer_record_free(&old);
    return rc;
}

/* approve, and end what a re-route replaces, in one transaction (refer_do) */
static int approve_tx(store *s, int64_t id, const store_actor *who, fhir_error *err)
{
    if (store_begin(s, err))
        return -1;
    refer_state from = REFER_APPROVED;
    int64_t cancelled_here = 0;
    refer_state old_from = REFER_APPROVED;
    refer_record r;
    int f = get_row(s, id, &r, err);
    if (f <= 0) {
        if (f == 0)
            fhir_error_set(err, "referral %lld does not exist", (long long)id);
        store_rollback(s);
        return -1;
    }
    int64_t old = r.supersedes;
    refer_record_free(&r);
    if (old > 0) {
        refer_state os;
        fhir_error ge;
        int g = read_state(s, old, &os, &ge) == 0;
        if (g && os == REFER_COMPLETED) {
            store_rollback(s);
            if (err)
                err->code = 409;
            return fhir_error_set(err, "referral %lld: the referral it replaces (%lld) was completed at its center: "
                                       "nothing to re-route (cancel this proposal)",
                                  (long long)id, (long long)old);
        }
    }
    if (transition_locked(s, id, REFER_APPROVED, who, "approve", NULL, NULL, &from, err) ||
        (old > 0 && supersede_locked(s, id, old, who, &cancelled_here, &old_from, err))) {
        store_rollback(s);
        return -1;
    }
    if (store_commit(s, err))
        return -1;
    log_state(id, from, REFER_APPROVED, "approve", who);
    if (cancelled_here)
        log_state(cancelled_here, old_from, REFER_CANCELLED, "cancel", who);
    else if (old > 0)
        fhir_log(FHIR_LOG_INFO, "referral.cancel_requested", "referral=%lld replaced_by=%lld",
                 (long long)old, (long long)id);
    return 0;
}

int refer_approve(store *s, int64_t id, const char *actor, fhir_error *err)
{
    store_actor who = named(actor);
    return refer_do(s, id, REFER_ACT_APPROVE, &who, err);
}

int refer_cancel(store *s, int64_t id, const char *actor, const char *reason, fhir_error *err)
{
    store_actor who = named(actor);
    who.reason = reason;
    return refer_do(s, id, REFER_ACT_CANCEL, &who, err);
}

int refer_cancel_in_tx(store *s, int64_t id, const char *actor, const char *reason,
                       fhir_error *err)
{
    if (!store_in_transaction(s))
        return fhir_error_set(err, "referral %lld: cancel_in_tx needs an open transaction",
                              (long long)id);
    store_actor who = named(actor);
    return transition_locked(s, id, REFER_CANCELLED, &who, "cancel", reason, NULL, NULL, err);
}

int refer_withdraw_in_tx(store *s, int64_t id, const char *reason, fhir_error *err)
{
    if (!store_in_transaction(s))
        return fhir_error_set(err, "referral %lld: withdraw_in_tx needs an open transaction",
                              (long long)id);
    store_referral_change x = {.set_ended = true, .ended = REFER_ENDED_WITHDRAWN};
    store_actor who = named("screener");
    return transition_locked(s, id, REFER_CANCELLED, &who, "cancel", reason, &x, NULL, err);
}

static int audit_sending_probe(void *ctx, int64_t ts_ms, const char *actor, const char *action,
                               const char *from_state, const char *to_state, const char *detail)
{
    (void)ts_ms, (void)actor, (void)action, (void)from_state, (void)detail;
    if (to_state && !strcmp(to_state, "sending")) {
        (*(int64_t *)ctx)++;
        return 1;
    }
    return 0;
}

int refer_ever_sent(store *s, int64_t id, fhir_error *err)
{
    char st[32];
    int f = store_referral_state(s, id, st, sizeof st, err);
    if (f <= 0)
        return f < 0 ? -1 : fhir_error_set(err, "referral %lld does not exist", (long long)id);
    refer_state cur;
    if (refer_state_parse(st, &cur) == 0 && cur != REFER_PENDING_APPROVAL &&
        cur != REFER_APPROVED && cur != REFER_CANCELLED)
        return 1;
    /* approved or cancelled: the audit tells whether it ever went out */
    int64_t hits = 0;
    if (store_audit_each(s, id, audit_sending_probe, &hits, err) < 0)
        return -1;
    return hits > 0;
}

int refer_update_in_tx(store *s, int64_t id, const refer_request *req, fhir_error *err)
{
    if (!store_in_transaction(s))
        return fhir_error_set(err, "referral %lld: update_in_tx needs an open transaction",
                              (long long)id);
    if (!req->placer_id || !req->placer_id[0])
        return fhir_error_set(err, "referral %lld: update needs a placer identifier",
                              (long long)id);
    refer_record r;
    int f = get_row(s, id, &r, err);
    if (f <= 0)
        return f < 0 ? -1 : fhir_error_set(err, "referral %lld does not exist", (long long)id);
    int rc = -1;
    char *joined = NULL;
    int sent = refer_ever_sent(s, id, err);
    if (sent < 0)
        goto done;
    if (sent || (r.state != REFER_PENDING_APPROVAL && r.state != REFER_APPROVED)) {
        if (err)
            err->code = 409;
        fhir_error_set(err, "referral %lld: only a proposal not yet sent can change (it is %s)",
                       (long long)id, state_names[r.state]);
        goto done;
    }
    const char *urg = req->urgency ? req->urgency : "routine";
    joined = join_indications(req->indications, req->n_indications, err);
    if (!joined)
        goto done;
    store_referral_change x = {
        .set_proposal = true, .placer_id = req->placer_id, .center_id = req->center_id,
        .indications = joined, .urgency = urg, .explanation = req->explanation,
        .verdict_json = req->verdict_json, .route_json = req->route_json,
        .set_payload = true, .payload = req->payload, .set_package = true,
        .package = req->package,
    };
    char detail[1024];
    snprintf(detail, sizeof detail, "placer=%s center=%s -> %s indications=%s -> %s", req->placer_id,
             r.center_id, req->center_id, r.indications, joined);
    if (store_referral_update(s, id, &x, err) ||
        store_audit(s, req->actor ? req->actor : "screener", "update", id,
                    state_names[r.state], state_names[r.state], detail, err))
        goto done;
    rc = 0;
done:
    free(joined);
    refer_record_free(&r);
    return rc;
}

int refer_set_marker_in_tx(store *s, int64_t id, const char *marker, fhir_error *err)
{
    store_referral_change x = {.set_marker = true, .episode_marker = marker};
    return store_referral_update(s, id, &x, err);
}

int refer_retry(store *s, int64_t id, const char *actor, fhir_error *err)
{
    store_actor who = named(actor);
    return refer_do(s, id, REFER_ACT_RETRY, &who, err);
}

static const char *const urgencies[] = {"routine", "urgent", "asap", "stat"};

/* Inserts (and in auto mode approves) inside the caller's open transaction. */
static int create_locked(store *s, const refer_request *req, int64_t *id_out, bool *created,
                         fhir_error *err)
{
    char placer[REFER_PLACER_MAX];
    *id_out = 0;
    if (created)
        *created = false;
    const char *urg = req->urgency ? req->urgency : "routine";
    bool urg_ok = false;
    for (size_t i = 0; i < 4; i++)
        urg_ok |= !strcmp(urg, urgencies[i]);
    if (!urg_ok)
        return fhir_error_set(err, "urgency \"%s\" is not one of routine, urgent, asap, stat",
                              urg);
    if (req->placer_id) {
        if (!req->placer_id[0] || strlen(req->placer_id) >= REFER_PLACER_MAX)
            return fhir_error_set(err, "placer identifier is empty or too long");
        snprintf(placer, sizeof placer, "%s", req->placer_id);
    } else if (refer_placer_id(req->site_id, req->patient_id, req->indications,
                               req->n_indications, req->center_id, placer, err)) {
        return -1;
    }
    char *joined = join_indications(req->indications, req->n_indications, err);
    if (!joined)
        return -1;
    store_referral row = {
        .placer_id = placer, .site_id = req->site_id, .patient_id = req->patient_id,
        .center_id = req->center_id, .indications = joined,
        .state = state_names[REFER_PENDING_APPROVAL],
        .mode = req->mode == REFER_MODE_AUTO ? "auto" : "approval", .urgency = urg,
        .explanation = req->explanation, .verdict_json = req->verdict_json,
        .route_json = req->route_json, .payload = req->payload, .package = req->package,
        .episode = req->episode,
        .supersedes = req->supersedes, .episode_marker = req->episode_marker,
    };
    int ins = store_referral_insert(s, &row, id_out, err);
    if (ins <= 0) {
        free(joined);
        if (ins < 0)
            *id_out = 0;
        return ins < 0 ? -1 : 0; /* 0: the placer id exists, *id_out is that referral */
    }
    char detail[512];
    int dl = snprintf(detail, sizeof detail, "placer=%s center=%s indications=%s", placer,
                      req->center_id, joined);
    if (req->supersedes > 0 && dl > 0 && (size_t)dl < sizeof detail)
        snprintf(detail + dl, sizeof detail - (size_t)dl, " replaces=%lld",
                 (long long)req->supersedes);
    free(joined);
    const char *actor = req->actor ? req->actor : "system";
    store_actor auto_actor = named("auto");
    if (store_audit(s, actor, "create", *id_out, NULL, "pending_approval", detail, err) ||
        (req->mode == REFER_MODE_AUTO &&
         transition_locked(s, *id_out, REFER_APPROVED, &auto_actor, "approve",
                           "standing order (auto mode)", NULL, NULL, err))) {
        *id_out = 0;
        return -1;
    }
    if (created)
        *created = true;
    return 0;
}

int refer_create(store *s, const refer_request *req, int64_t *id_out, bool *created,
                 fhir_error *err)
{
    bool made = false;
    *id_out = 0;
    if (created)
        *created = false;
    if (store_begin(s, err))
        return -1;
    if (create_locked(s, req, id_out, &made, err)) {
        store_rollback(s);
        return -1;
    }
    if (store_commit(s, err)) {
        *id_out = 0;
        return -1;
    }
    if (created)
        *created = made;
    if (made)
        fhir_log(FHIR_LOG_INFO, "referral.created", "referral=%lld patient=%s center=%s mode=%s",
                 (long long)*id_out, req->patient_id, req->center_id,
                 req->mode == REFER_MODE_AUTO ? "auto" : "approval");
    return 0;
}

int refer_create_in_tx(store *s, const refer_request *req, int64_t *id_out, bool *created,
                       fhir_error *err)
{
    *id_out = 0;
    if (created)
        *created = false;
    if (!store_in_transaction(s))
        return fhir_error_set(err, "referral: create_in_tx needs an open transaction");
    return create_locked(s, req, id_out, created, err);
}

int refer_set_payload(store *s, int64_t id, const char *payload, fhir_error *err)
{
    if (store_begin(s, err))
        return -1;
    refer_state st_now;
    if (read_state(s, id, &st_now, err))
        goto fail;
    if (st_now != REFER_PENDING_APPROVAL && st_now != REFER_APPROVED && st_now != REFER_FAILED) {
        fhir_error_set(err, "referral %lld: the payload is frozen once sending starts (state "
                            "%s)", (long long)id, state_names[st_now]);
        goto fail;
    }
    store_referral_change u = {.set_payload = true, .payload = payload};
    if (store_referral_update(s, id, &u, err))
        goto fail;
    char detail[64];
    snprintf(detail, sizeof detail, "%zu bytes", payload ? strlen(payload) : 0);
    if (store_audit(s, "system", "payload", id, state_names[st_now], state_names[st_now], detail,
                    err))
        goto fail;
    return store_commit(s, err);
fail:
    store_rollback(s);
    return -1;
}

int refer_record_attempt(store *s, int64_t id, int http_status, const char *error,
                         const char *response, int64_t next_attempt_ms, fhir_error *err)
{
    if (store_begin(s, err))
        return -1;
    refer_state cur;
    if (read_state(s, id, &cur, err))
        goto fail;
    store_referral_change u = {.add_attempt = true, .next_attempt_ms = next_attempt_ms,
                               .set_outcome = true, .last_status = http_status,
                               .last_error = error, .last_response = response};
    if (store_referral_update(s, id, &u, err))
        goto fail;
    char detail[FHIR_ERROR_MAX + 32];
    snprintf(detail, sizeof detail, "status=%d %s", http_status, error ? error : "");
    if (store_audit(s, "sender", "attempt", id, state_names[cur], state_names[cur], detail, err))
        goto fail;
    return store_commit(s, err);
fail:
    store_rollback(s);
    return -1;
}

int refer_mark_sent(store *s, int64_t id, const char *sr_ref, const char *task_ref,
                    const char *detail, fhir_error *err)
{
    store_referral_change x = {.set_center_refs = true, .center_sr_ref = sr_ref,
                               .center_task_ref = task_ref};
    store_actor who = named("sender");
    return transition_tx(s, id, REFER_SENT, &who, "sent", detail, &x, err);
}

int refer_mark_failed(store *s, int64_t id, int http_status, const char *error,
                      const char *response, fhir_error *err)
{
    store_referral_change x = {.set_outcome = true, .last_status = http_status,
                               .last_error = error, .last_response = response};
    store_actor who = named("sender");
    return transition_tx(s, id, REFER_FAILED, &who, "dead-letter", error, &x, err);
}

int64_t refer_cancel_due(store *s, refer_each_fn fn, void *ctx, fhir_error *err)
{
    each_ctx c = {fn, ctx};
    return store_referral_cancel_due(s, each_row, &c, err);
}

int refer_mark_cancelled_at_center(store *s, int64_t id, const char *detail, fhir_error *err)
{
    store_referral_change x = {.set_cancel_request = true, .cancel_requested_ms = 0,
                               .set_task = true, .task_status = "cancelled"};
    store_actor who = named("sender");
    return transition_tx(s, id, REFER_CANCELLED, &who, "cancel-at-center", detail, &x, err);
}

int refer_cancel_request_clear(store *s, int64_t id, const char *detail, fhir_error *err)
{
    if (store_begin(s, err))
        return -1;
    refer_state cur;
    store_referral_change x = {.set_cancel_request = true, .cancel_requested_ms = 0};
    if (read_state(s, id, &cur, err) || store_referral_update(s, id, &x, err) ||
        store_audit(s, "sender", "cancel-request-cleared", id, state_names[cur],
                    state_names[cur], detail, err)) {
        store_rollback(s);
        return -1;
    }
    return store_commit(s, err);
}

/* ---- closed loop -------------------------------------------------------------------- */

int refer_state_from_task(const char *task_status, const char *business_status,
                          refer_state *out)
{
    static const struct {
        const char *status;
        refer_state st;
    } terminal[] = {
        {"completed", REFER_COMPLETED}, {"rejected", REFER_DECLINED},
        {"cancelled", REFER_CANCELLED}, {"failed", REFER_FAILED},
        {"entered-in-error", REFER_FAILED},
    };
    for (size_t i = 0; task_status && i < sizeof terminal / sizeof terminal[0]; i++)
        if (!strcmp(task_status, terminal[i].status)) {
            *out = terminal[i].st;
            return 0;
        }
    /* BSeR TaskBusinessStatusCS (case-insensitive codes; fhir.md §1.3) */
    static const struct {
        const char *code;
        refer_state st;
    } business[] = {
        {"2.0", REFER_SENT},       {"3.0", REFER_ACCEPTED},   {"4.0", REFER_DECLINED},
        {"5.1.1", REFER_SCHEDULED}, {"5.1.2", REFER_SCHEDULED}, {"5.1.3", REFER_SCHEDULED},
        {"5.1.4", REFER_SCHEDULED}, {"6.0", REFER_CANCELLED},  {"7.0", REFER_COMPLETED},
    };
    for (size_t i = 0; business_status && i < sizeof business / sizeof business[0]; i++)
        if (!strcasecmp(business_status, business[i].code)) {
            *out = business[i].st;
            return 0;
        }
    static const struct {
        const char *status;
        refer_state st;
    } open_states[] = {
        {"draft", REFER_SENT},    {"requested", REFER_SENT},   {"received", REFER_SENT},
        {"ready", REFER_SENT},    {"accepted", REFER_ACCEPTED}, {"in-progress", REFER_ACCEPTED},
    };
    for (size_t i = 0; task_status && i < sizeof open_states / sizeof open_states[0]; i++)
        if (!strcmp(task_status, open_states[i].status)) {
            *out = open_states[i].st;
            return 0;
        }
    return -1;
}

int refer_apply_task(store *s, int64_t id, const char *task_status, const char *business_status,
                     bool *changed, fhir_error *err)
{
    return refer_apply_task_at(s, id, task_status, business_status, NULL, changed, err);
}

int refer_apply_task_at(store *s, int64_t id, const char *task_status, const char *business_status,
                        const char *at, bool *changed, fhir_error *err)
{
    *changed = false;
    refer_record r;
    int f = get_row(s, id, &r, err);
    if (f != 1)
        return f == 0 ? fhir_error_set(err, "referral %lld does not exist", (long long)id) : -1;
    char actor[160];
    snprintf(actor, sizeof actor, "center:%s", r.center_id);
    refer_state cur = r.state, want;
    bool same_task = (r.task_status && task_status && !strcmp(r.task_status, task_status)) &&
                     ((!r.business_status && !business_status) ||
                      (r.business_status && business_status &&
                       !strcmp(r.business_status, business_status)));
    refer_record_free(&r);
    if (same_task)
        return 0;
    char detail[200];
    snprintf(detail, sizeof detail, "Task.status=%s businessStatus=%s%s%.40s%s",
             task_status ? task_status : "-", business_status ? business_status : "-",
             at ? " (at the center " : "", at ? at : "", at ? ")" : "");
    store_referral_change x = {.set_task = true, .task_status = task_status,
                               .business_status = business_status};
    if (refer_state_from_task(task_status, business_status, &want) == 0 && want != cur &&
        refer_transition_allowed(cur, want)) {
        store_actor who = named(actor);
        if (transition_tx(s, id, want, &who, "task-update", detail, &x, err))
            return -1;
        *changed = true;
        return 0;
    }
    /* no state change: record what the center said, still audited */
    if (store_begin(s, err))
        return -1;
    if (store_referral_update(s, id, &x, err) ||
        store_audit(s, actor, "task-observed", id, state_names[cur], state_names[cur], detail,
                    err)) {
        store_rollback(s);
        return -1;
    }
    return store_commit(s, err);
}
