/* referral — referral rows, placer identifiers and the state machine. */
#include "referral.h"

#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_log.h"

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
    const char **v = calloc(n + 1, sizeof *v);
    if (!v)
        abort();
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
    fhir_buf_init(&b, 64u * 1024u);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(v[i], v[i - 1]))
            fhir_buf_printf(&b, "%s%s", b.len ? "," : "", v[i]);
    free(v);
    if (b.overflow) {
        fhir_buf_free(&b);
        fhir_error_set(err, "indication list too long");
        return NULL;
    }
    char *r = fhir_buf_steal(&b, NULL);
    return r ? r : strdup("");
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

int refer_placer_id(const char *site_id, const char *patient_id,
                    const char *const *indications, size_t n_indications,
                    const char *center_id, char out[REFER_PLACER_MAX], fhir_error *err)
{
    if (!site_id || !site_id[0] || !patient_id || !patient_id[0] || !center_id ||
        !center_id[0] || n_indications == 0)
        return fhir_error_set(err, "placer id needs a site, a patient, a center and at least "
                                   "one indication");
    char *joined = join_indications(indications, n_indications, err);
    if (!joined)
        return -1;
    placer_from_joined(site_id, patient_id, joined, center_id, out);
    free(joined);
    return 0;
}

/* ---- rows --------------------------------------------------------------------------- */

#define COLS                                                                                \
    "id, placer_id, site_id, patient_id, center_id, indications, state, mode, urgency, "    \
    "explanation, verdict_json, route_json, payload, attempts, next_attempt_ms, "           \
    "last_status, last_error, last_response, center_sr_ref, center_task_ref, task_status, " \
    "business_status, created_ms, updated_ms"

static char *col(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    if (!t)
        return NULL;
    char *r = strdup((const char *)t);
    if (!r)
        abort();
    return r;
}

static void row_to_record(sqlite3_stmt *st, refer_record *r)
{
    memset(r, 0, sizeof *r);
    r->id = sqlite3_column_int64(st, 0);
    r->placer_id = col(st, 1);
    r->site_id = col(st, 2);
    r->patient_id = col(st, 3);
    r->center_id = col(st, 4);
    r->indications = col(st, 5);
    refer_state_parse((const char *)sqlite3_column_text(st, 6), &r->state);
    r->mode = col(st, 7);
    r->urgency = col(st, 8);
    r->explanation = col(st, 9);
    r->verdict_json = col(st, 10);
    r->route_json = col(st, 11);
    r->payload = col(st, 12);
    r->attempts = sqlite3_column_int(st, 13);
    r->next_attempt_ms = sqlite3_column_int64(st, 14);
    r->last_status = sqlite3_column_int(st, 15);
    r->last_error = col(st, 16);
    r->last_response = col(st, 17);
    r->center_sr_ref = col(st, 18);
    r->center_task_ref = col(st, 19);
    r->task_status = col(st, 20);
    r->business_status = col(st, 21);
    r->created_ms = sqlite3_column_int64(st, 22);
    r->updated_ms = sqlite3_column_int64(st, 23);
}

void refer_record_free(refer_record *r)
{
    if (!r)
        return;
    char **strs[] = {&r->placer_id, &r->site_id, &r->patient_id, &r->center_id,
                     &r->indications, &r->mode, &r->urgency, &r->explanation,
                     &r->verdict_json, &r->route_json, &r->payload, &r->last_error,
                     &r->last_response, &r->center_sr_ref, &r->center_task_ref,
                     &r->task_status, &r->business_status};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
}

static int sql_fail(store *s, fhir_error *err, const char *what)
{
    return fhir_error_set(err, "%s: %s: %s", store_path(s), what,
                          sqlite3_errmsg(store_db(s)));
}

static int get_where(store *s, const char *where, int64_t id, const char *text,
                     refer_record *out, fhir_error *err)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT " COLS " FROM referrals WHERE %s", where);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL) != SQLITE_OK)
        return sql_fail(s, err, "referral read");
    if (text)
        sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st), found = 0;
    if (rc == SQLITE_ROW) {
        row_to_record(st, out);
        found = 1;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_fail(s, err, "referral read");
    return found;
}

int refer_get(store *s, int64_t id, refer_record *out, fhir_error *err)
{
    return get_where(s, "id = ?", id, NULL, out, err);
}

int refer_get_by_placer(store *s, const char *placer_id, refer_record *out, fhir_error *err)
{
    return get_where(s, "placer_id = ?", 0, placer_id, out, err);
}

int64_t refer_each(store *s, int state_filter, const char *center_id, refer_each_fn fn,
                   void *ctx, fhir_error *err)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT " COLS " FROM referrals WHERE (?1 IS NULL OR state = ?1) "
                              "AND (?2 IS NULL OR center_id = ?2) ORDER BY id");
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL) != SQLITE_OK)
        return sql_fail(s, err, "referral list");
    if (state_filter >= 0 && state_filter < REFER_N_STATES)
        sqlite3_bind_text(st, 1, state_names[state_filter], -1, SQLITE_STATIC);
    if (center_id)
        sqlite3_bind_text(st, 2, center_id, -1, SQLITE_TRANSIENT);
    int64_t n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        refer_record r;
        row_to_record(st, &r);
        n++;
        int stop = fn ? fn(ctx, &r) : 0;
        refer_record_free(&r);
        if (stop) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_fail(s, err, "referral list");
    return n;
}

int refer_count_by_state(store *s, int64_t counts[REFER_N_STATES], fhir_error *err)
{
    memset(counts, 0, REFER_N_STATES * sizeof counts[0]);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(store_db(s), "SELECT state, count(*) FROM referrals GROUP BY state",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(s, err, "referral count");
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        refer_state k;
        if (refer_state_parse((const char *)sqlite3_column_text(st, 0), &k) == 0)
            counts[k] = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(s, err, "referral count");
}

/* ---- transitions -------------------------------------------------------------------- */

static int read_state(store *s, int64_t id, refer_state *out, fhir_error *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(store_db(s), "SELECT state FROM referrals WHERE id = ?", -1, &st,
                           NULL) != SQLITE_OK)
        return sql_fail(s, err, "referral read");
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        if (refer_state_parse((const char *)sqlite3_column_text(st, 0), out))
            ret = fhir_error_set(err, "referral %lld: unknown stored state \"%s\"",
                                 (long long)id, sqlite3_column_text(st, 0));
    } else if (rc == SQLITE_DONE) {
        ret = fhir_error_set(err, "referral %lld does not exist", (long long)id);
    } else {
        ret = sql_fail(s, err, "referral read");
    }
    sqlite3_finalize(st);
    return ret;
}

/* Extra columns a transition sets, besides state and updated_ms. */
typedef struct extra {
    const char *sql;      /* ", col = ?3, col2 = ?4 ..." (params from ?3 on) */
    const char *text[6];  /* bound as ?3.. in order; NULL binds NULL */
    int64_t ints[2];      /* bound after the texts */
    int n_text, n_int;
} extra;

/* Inside an open transaction: checks, updates, audits. */
static int transition_locked(store *s, int64_t id, refer_state to, const char *actor,
                             const char *action, const char *detail, const extra *x,
                             refer_state *from_out, fhir_error *err)
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
    char sql[1024];
    snprintf(sql, sizeof sql, "UPDATE referrals SET state = ?1, updated_ms = ?2%s WHERE id = ?%d",
             x ? x->sql : "", 3 + (x ? x->n_text + x->n_int : 0));
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL) != SQLITE_OK)
        return sql_fail(s, err, "referral update");
    sqlite3_bind_text(st, 1, state_names[to], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, fhir_clock_now_ms());
    int p = 3;
    for (int i = 0; x && i < x->n_text; i++, p++)
        if (x->text[i])
            sqlite3_bind_text(st, p, x->text[i], -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(st, p);
    for (int i = 0; x && i < x->n_int; i++, p++)
        sqlite3_bind_int64(st, p, x->ints[i]);
    sqlite3_bind_int64(st, p, id);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_fail(s, err, "referral update");
    if (store_audit(s, actor, action, id, state_names[from], state_names[to], detail, err))
        return -1;
    return 0;
}

static int transition_tx(store *s, int64_t id, refer_state to, const char *actor,
                         const char *action, const char *detail, const extra *x,
                         fhir_error *err)
{
    if (store_begin(s, err))
        return -1;
    refer_state from = to;
    if (transition_locked(s, id, to, actor, action, detail, x, &from, err)) {
        store_rollback(s);
        return -1;
    }
    if (store_commit(s, err))
        return -1;
    fhir_log(FHIR_LOG_INFO, "referral.state", "referral=%lld from=%s to=%s actor=%s",
             (long long)id, state_names[from], state_names[to], actor ? actor : "system");
    return 0;
}

int refer_transition(store *s, int64_t id, refer_state to, const char *actor,
                     const char *detail, fhir_error *err)
{
    return transition_tx(s, id, to, actor, refer_state_name(to), detail, NULL, err);
}

int refer_approve(store *s, int64_t id, const char *actor, fhir_error *err)
{
    return transition_tx(s, id, REFER_APPROVED, actor, "approve", NULL, NULL, err);
}

int refer_cancel(store *s, int64_t id, const char *actor, const char *reason, fhir_error *err)
{
    return transition_tx(s, id, REFER_CANCELLED, actor, "cancel", reason, NULL, err);
}

int refer_retry(store *s, int64_t id, const char *actor, fhir_error *err)
{
    refer_state from;
    if (read_state(s, id, &from, err))
        return -1;
    if (from != REFER_FAILED) {
        if (err)
            err->code = 409;
        return fhir_error_set(err, "referral %lld: retry is only for failed referrals (it is "
                                   "%s)", (long long)id, state_names[from]);
    }
    extra x = {.sql = ", attempts = 0, next_attempt_ms = 0"};
    return transition_tx(s, id, REFER_APPROVED, actor, "retry", NULL, &x, err);
}

static const char *const urgencies[] = {"routine", "urgent", "asap", "stat"};

int refer_create(store *s, const refer_request *req, int64_t *id_out, bool *created,
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
    if (refer_placer_id(req->site_id, req->patient_id, req->indications, req->n_indications,
                        req->center_id, placer, err))
        return -1;
    char *joined = join_indications(req->indications, req->n_indications, err);
    if (!joined)
        return -1;
    if (store_begin(s, err)) {
        free(joined);
        return -1;
    }
    const char *actor = req->actor ? req->actor : "system";
    int64_t now = fhir_clock_now_ms();
    sqlite3_stmt *st;
    int rc = -1;
    if (sqlite3_prepare_v2(store_db(s),
                           "INSERT INTO referrals(placer_id, site_id, patient_id, center_id, "
                           "indications, state, mode, urgency, explanation, verdict_json, "
                           "route_json, payload, created_ms, updated_ms) VALUES "
                           "(?,?,?,?,?,'pending_approval',?,?,?,?,?,?,?,?) "
                           "ON CONFLICT(placer_id) DO NOTHING",
                           -1, &st, NULL) != SQLITE_OK) {
        sql_fail(s, err, "referral insert");
        goto out;
    }
    const char *vals[] = {placer, req->site_id, req->patient_id, req->center_id, joined,
                          req->mode == REFER_MODE_AUTO ? "auto" : "approval", urg,
                          req->explanation, req->verdict_json, req->route_json, req->payload};
    for (int i = 0; i < 11; i++)
        if (vals[i])
            sqlite3_bind_text(st, i + 1, vals[i], -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 12, now);
    sqlite3_bind_int64(st, 13, now);
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    if (step != SQLITE_DONE) {
        sql_fail(s, err, "referral insert");
        goto out;
    }
    if (sqlite3_changes(store_db(s)) == 0) {
        refer_record r;
        if (refer_get_by_placer(s, placer, &r, err) != 1) {
            if (!err || !err->msg[0])
                fhir_error_set(err, "referral %s vanished", placer);
            goto out;
        }
        *id_out = r.id;
        refer_record_free(&r);
        rc = 0;
        goto out;
    }
    *id_out = sqlite3_last_insert_rowid(store_db(s));
    char detail[256];
    snprintf(detail, sizeof detail, "placer=%s center=%s indications=%s", placer,
             req->center_id, joined);
    if (store_audit(s, actor, "create", *id_out, NULL, "pending_approval", detail, err))
        goto out;
    if (req->mode == REFER_MODE_AUTO &&
        transition_locked(s, *id_out, REFER_APPROVED, "auto", "approve",
                          "standing order (auto mode)", NULL, NULL, err))
        goto out;
    if (created)
        *created = true;
    rc = 0;
out:
    free(joined);
    if (rc) {
        store_rollback(s);
        *id_out = 0;
        if (created)
            *created = false;
        return -1;
    }
    if (store_commit(s, err)) {
        *id_out = 0;
        if (created)
            *created = false;
        return -1;
    }
    if (created && *created)
        fhir_log(FHIR_LOG_INFO, "referral.created", "referral=%lld patient=%s center=%s mode=%s",
                 (long long)*id_out, req->patient_id, req->center_id,
                 req->mode == REFER_MODE_AUTO ? "auto" : "approval");
    return 0;
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
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(store_db(s),
                           "UPDATE referrals SET payload = ?, updated_ms = ? WHERE id = ?", -1,
                           &st, NULL) != SQLITE_OK) {
        sql_fail(s, err, "payload write");
        goto fail;
    }
    sqlite3_bind_text(st, 1, payload, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, fhir_clock_now_ms());
    sqlite3_bind_int64(st, 3, id);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sql_fail(s, err, "payload write");
        goto fail;
    }
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
    sqlite3_stmt *st;
    if (read_state(s, id, &cur, err))
        goto fail;
    if (sqlite3_prepare_v2(store_db(s),
                           "UPDATE referrals SET attempts = attempts + 1, last_status = ?, "
                           "last_error = ?, last_response = ?, next_attempt_ms = ?, "
                           "updated_ms = ? WHERE id = ?",
                           -1, &st, NULL) != SQLITE_OK) {
        sql_fail(s, err, "attempt write");
        goto fail;
    }
    sqlite3_bind_int(st, 1, http_status);
    if (error)
        sqlite3_bind_text(st, 2, error, -1, SQLITE_TRANSIENT);
    if (response)
        sqlite3_bind_text(st, 3, response, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, next_attempt_ms);
    sqlite3_bind_int64(st, 5, fhir_clock_now_ms());
    sqlite3_bind_int64(st, 6, id);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sql_fail(s, err, "attempt write");
        goto fail;
    }
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
    extra x = {.sql = ", center_sr_ref = ?3, center_task_ref = ?4, last_error = NULL",
               .text = {sr_ref, task_ref}, .n_text = 2};
    return transition_tx(s, id, REFER_SENT, "sender", "sent", detail, &x, err);
}

int refer_mark_failed(store *s, int64_t id, int http_status, const char *error,
                      const char *response, fhir_error *err)
{
    extra x = {.sql = ", last_error = ?3, last_response = ?4, last_status = ?5",
               .text = {error, response}, .n_text = 2, .ints = {http_status}, .n_int = 1};
    return transition_tx(s, id, REFER_FAILED, "sender", "dead-letter", error, &x, err);
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
    *changed = false;
    refer_record r;
    int f = refer_get(s, id, &r, err);
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
    char detail[160];
    snprintf(detail, sizeof detail, "Task.status=%s businessStatus=%s",
             task_status ? task_status : "-", business_status ? business_status : "-");
    extra x = {.sql = ", task_status = ?3, business_status = ?4",
               .text = {task_status, business_status}, .n_text = 2};
    if (refer_state_from_task(task_status, business_status, &want) == 0 && want != cur &&
        refer_transition_allowed(cur, want)) {
        if (transition_tx(s, id, want, actor, "task-update", detail, &x, err))
            return -1;
        *changed = true;
        return 0;
    }
    /* no state change: record what the center said, still audited */
    if (store_begin(s, err))
        return -1;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(store_db(s),
                           "UPDATE referrals SET task_status = ?, business_status = ?, "
                           "updated_ms = ? WHERE id = ?",
                           -1, &st, NULL) != SQLITE_OK) {
        store_rollback(s);
        return sql_fail(s, err, "task update");
    }
    if (task_status)
        sqlite3_bind_text(st, 1, task_status, -1, SQLITE_TRANSIENT);
    if (business_status)
        sqlite3_bind_text(st, 2, business_status, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, fhir_clock_now_ms());
    sqlite3_bind_int64(st, 4, id);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        store_rollback(s);
        return sql_fail(s, err, "task update");
    }
    if (store_audit(s, actor, "task-observed", id, state_names[cur], state_names[cur], detail,
                    err)) {
        store_rollback(s);
        return -1;
    }
    return store_commit(s, err);
}
