/* admin — the admin HTTP API (see admin.h). JSON answers are fhir_node trees written by
 * fhir_json_write; /metrics is Prometheus text. */
#include "admin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "fhir_node.h"
#include "referral.h"

#define ADMIN_MAX_BODY (1u << 20)
#define ADMIN_MAX_OUT (256u << 20)   /* bytes of one answer */
#define ADMIN_MAX_TOKEN 4096          /* bytes of a bearer token compared */

struct admin {
    admin_env env;
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    int port;
    uint64_t requests;
};

/* ---- counters (filled by the daemon) --------------------------------------------------- */

admin_source_metrics *admin_metrics_source(admin_metrics *m, const char *name)
{
    for (size_t i = 0; i < m->n_src; i++)
        if (!strcmp(m->src[i].name, name))
            return &m->src[i];
    if (m->n_src == ADMIN_MAX_SOURCES)
        return &m->src[m->n_src - 1];
    admin_source_metrics *s = &m->src[m->n_src++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

void admin_metrics_count_status(admin_source_metrics *s, long status)
{
    for (size_t i = 0; i < s->n_status; i++)
        if (s->status[i] == status) {
            s->status_n[i]++;
            return;
        }
    if (s->n_status < ADMIN_MAX_STATUS) {
        s->status[s->n_status] = status;
        s->status_n[s->n_status++] = 1;
    }
}

/* ---- answers ---------------------------------------------------------------------------- */

static void send_buf(struct evhttp_request *req, int code, const char *ctype, fhir_buf *b)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
    struct evbuffer *out = evbuffer_new();
    if (b->len)
        evbuffer_add(out, b->data, b->len);
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", out);
    evbuffer_free(out);
}

/* Writes the tree as the JSON answer (one line). */
static void send_node(struct evhttp_request *req, int code, const fhir_node *root);

static void send_error(struct evhttp_request *req, int code, const char *msg)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = fhir_node_new(a, FHIR_OBJECT);
    fhir_node *e = fhir_node_set_obj(a, root, "error");
    char n[16];
    int len = snprintf(n, sizeof n, "%d", code);
    fhir_node_set(a, e, "status", fhir_node_new_num(a, n, (size_t)len));
    fhir_node_set_str(a, e, "message", msg);
    if (code == 401)
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer realm=\"cartgate\"");
    send_node(req, code, root);
    fhir_arena_free(a);
}

static void send_node(struct evhttp_request *req, int code, const fhir_node *root)
{
    fhir_buf b;
    fhir_buf_init(&b, ADMIN_MAX_OUT);
    if (fhir_json_write(&b, root, FHIR_JSON_COMPACT) || b.overflow) {
        fhir_buf_free(&b);
        send_error(req, 500, "response too large");
        return;
    }
    fhir_buf_putc(&b, '\n');
    send_buf(req, code, "application/json", &b);
    fhir_buf_free(&b);
}

/* Members of an answer: NULL strings and absent embedded JSON are null. */
static void put_str(fhir_arena *a, fhir_node *o, const char *key, const char *v)
{
    fhir_node_set(a, o, key, v ? fhir_node_new_str(a, v) : fhir_node_new(a, FHIR_NULL));
}

static void put_int(fhir_arena *a, fhir_node *o, const char *key, long long v)
{
    char n[32];
    int len = snprintf(n, sizeof n, "%lld", v);
    fhir_node_set(a, o, key, fhir_node_new_num(a, n, (size_t)len));
}

static void put_time(fhir_arena *a, fhir_node *o, const char *key, int64_t ms)
{
    char t[40];
    fhir_clock_format_instant(ms, t, sizeof t);
    put_str(a, o, key, t);
}

/* A JSON text we produced ourselves (verdicts, profiles, routes), embedded as a value. */
static void put_json(fhir_arena *a, fhir_node *o, const char *key, const char *json)
{
    fhir_node *v = NULL;
    if (json && *json) {
        fhir_error e;
        fhir_json_limits lim = {.max_bytes = ADMIN_MAX_OUT};
        v = fhir_json_parse(a, json, strlen(json), &lim, &e);
    }
    fhir_node_set(a, o, key, v ? v : fhir_node_new(a, FHIR_NULL));
}

/* Token check: same length, then a constant-time compare. */
static bool authorized(admin *ad, struct evhttp_request *req)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    const char *want = ad->env.token(ad->env.ud);
    if (!h || !want || strncmp(h, "Bearer ", 7))
        return false;
    const char *got = h + 7;
    size_t lg = strnlen(got, ADMIN_MAX_TOKEN + 1), lw = strlen(want);
    if (lg != lw || lw == 0 || lw > ADMIN_MAX_TOKEN)
        return false;
    return CRYPTO_memcmp(got, want, lw) == 0;
}

/* query parameter (decoded); caller frees the evkeyvalq via evhttp_clear_headers. */
static long qlong(struct evkeyvalq *q, const char *name, long def, long min, long max, bool *bad)
{
    const char *v = evhttp_find_header(q, name);
    if (!v)
        return def;
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < min || x > max) {
        *bad = true;
        return def;
    }
    return x;
}

/* ---- /metrics -------------------------------------------------------------------------- */

/* time to referral buckets (seconds) */
static const double hist_le[] = {1, 5, 15, 60, 300, 900, 3600, 14400, 86400, 259200, 604800};
enum { HIST_N = sizeof hist_le / sizeof hist_le[0] };

typedef struct histogram {
    unsigned long long bucket[HIST_N], count;
    double sum;
} histogram;

static void histogram_add(void *ctx, int64_t ms)
{
    histogram *h = ctx;
    double s = (double)ms / 1000.0;
    h->count++;
    h->sum += s;
    for (int i = 0; i < HIST_N; i++)
        if (s <= hist_le[i])
            h->bucket[i]++;
}

/* One counter of every source: HELP, TYPE and a line per source (field at off, uint64_t). */
static void source_counter(fhir_buf *b, const admin_metrics *m, const char *name, const char *help,
                           size_t off)
{
    fhir_buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t i = 0; i < m->n_src; i++)
        fhir_buf_printf(b, "%s{source=\"%s\"} %llu\n", name, m->src[i].name,
                        (unsigned long long)*(const uint64_t *)((const char *)&m->src[i] + off));
}

static void metrics(admin *ad, struct evhttp_request *req)
{
    fhir_buf b;
    fhir_buf_init(&b, ADMIN_METRICS_MAX);
    const admin_metrics *m = ad->env.metrics(ad->env.ud);
    size_t n_sources = 0;
    bool ready = ad->env.ready(ad->env.ud, &n_sources);
    int64_t now = fhir_clock_now_ms();
    fhir_buf_printf(&b, "# HELP cartgate_up 1 while the daemon runs.\n# TYPE cartgate_up gauge\ncartgate_up 1\n");
    fhir_buf_printf(&b, "# HELP cartgate_ready 1 once every source completed a poll.\n# TYPE cartgate_ready gauge\n"
                        "cartgate_ready %d\n", ready ? 1 : 0);
    fhir_buf_printf(&b, "# TYPE cartgate_uptime_seconds gauge\ncartgate_uptime_seconds %.3f\n",
                    (double)(now - m->started_ms) / 1000.0);
    fhir_buf_puts(&b, "# HELP cartgate_polls_total Polls finished, by source and result.\n"
                      "# TYPE cartgate_polls_total counter\n");
    for (size_t i = 0; i < m->n_src; i++) {
        fhir_buf_printf(&b, "cartgate_polls_total{source=\"%s\",result=\"ok\"} %llu\n", m->src[i].name,
                        (unsigned long long)m->src[i].polls_ok);
        fhir_buf_printf(&b, "cartgate_polls_total{source=\"%s\",result=\"failed\"} %llu\n", m->src[i].name,
                        (unsigned long long)m->src[i].polls_failed);
    }
    fhir_buf_puts(&b, "# HELP cartgate_requests_total FHIR operations by endpoint and final HTTP status (0 = no response).\n"
                      "# TYPE cartgate_requests_total counter\n");
    for (size_t i = 0; i < m->n_src; i++)
        for (size_t k = 0; k < m->src[i].n_status; k++)
            fhir_buf_printf(&b, "cartgate_requests_total{endpoint=\"%s\",status=\"%ld\"} %llu\n",
                            m->src[i].name, m->src[i].status[k], (unsigned long long)m->src[i].status_n[k]);
    source_counter(&b, m, "cartgate_resources_ingested_total",
                   "New or changed resources stored, by source.",
                   offsetof(admin_source_metrics, resources));
    source_counter(&b, m, "cartgate_resources_unchanged_total",
                   "Resources seen again unchanged, by source.",
                   offsetof(admin_source_metrics, unchanged));
    source_counter(&b, m, "cartgate_resources_deleted_total",
                   "Cached resources removed because the source deleted them, by source.",
                   offsetof(admin_source_metrics, deleted));
    source_counter(&b, m, "cartgate_search_outcome_issues_total",
                   "OperationOutcome issues the server put inside searchset pages, by source.",
                   offsetof(admin_source_metrics, outcome_issues));
    source_counter(&b, m, "cartgate_bulk_error_issues_total",
                   "Issues in the error files of bulk export manifests, by source.",
                   offsetof(admin_source_metrics, bulk_issues));
    fhir_buf_puts(&b, "# HELP cartgate_source_ignores_since 1 once the source returned data older than the _since or _lastUpdated asked for.\n"
                      "# TYPE cartgate_source_ignores_since gauge\n");
    for (size_t i = 0; i < m->n_src; i++)
        fhir_buf_printf(&b, "cartgate_source_ignores_since{source=\"%s\"} %d\n", m->src[i].name,
                        m->src[i].since_ignored ? 1 : 0);
    fhir_buf_puts(&b, "# HELP cartgate_patients_held Patients whose data came from a poll that has not completed (not screened until one does), by source (store).\n"
                      "# TYPE cartgate_patients_held gauge\n");
    for (size_t i = 0; i < m->n_src; i++) {
        int64_t held = store_held_count(ad->env.st, m->src[i].name);
        fhir_buf_printf(&b, "cartgate_patients_held{source=\"%s\"} %lld\n", m->src[i].name,
                        (long long)(held < 0 ? 0 : held));
    }
    fhir_buf_puts(&b, "# HELP cartgate_last_successful_poll_timestamp_seconds Unix time of the last successful poll.\n"
                      "# TYPE cartgate_last_successful_poll_timestamp_seconds gauge\n");
    for (size_t i = 0; i < m->n_src; i++)
        fhir_buf_printf(&b, "cartgate_last_successful_poll_timestamp_seconds{source=\"%s\"} %.3f\n",
                        m->src[i].name, (double)m->src[i].last_success_ms / 1000.0);
    fhir_buf_printf(&b, "# HELP cartgate_patients_screened_total Screenings run (profile + verdict).\n"
                        "# TYPE cartgate_patients_screened_total counter\ncartgate_patients_screened_total %llu\n",
                    (unsigned long long)m->patients_screened);
    fhir_buf_printf(&b, "# TYPE cartgate_screen_errors_total counter\ncartgate_screen_errors_total %llu\n",
                    (unsigned long long)m->screen_errors);
    fhir_buf_puts(&b, "# HELP cartgate_screenings_total Screenings by resulting category.\n"
                      "# TYPE cartgate_screenings_total counter\n");
    static const char *cats[4] = {"not_eligible", "possibly_eligible", "eligible", "not_in_force"};
    for (int i = 0; i < 4; i++)
        fhir_buf_printf(&b, "cartgate_screenings_total{category=\"%s\"} %llu\n", cats[i],
                        (unsigned long long)m->verdicts[i]);
    /* gauges read from the store */
    fhir_error err;
    fhir_error_clear(&err);
    fhir_buf_puts(&b, "# HELP cartgate_verdicts Patients by current verdict category (store).\n"
                      "# TYPE cartgate_verdicts gauge\n");
    for (int i = 0; i < 4; i++) {
        int64_t n = store_verdict_count(ad->env.st, cats[i], &err);
        fhir_buf_printf(&b, "cartgate_verdicts{category=\"%s\"} %lld\n", cats[i], (long long)(n < 0 ? 0 : n));
    }
    int64_t counts[REFER_N_STATES] = {0};
    refer_count_by_state(ad->env.st, counts, &err);
    fhir_buf_puts(&b, "# HELP cartgate_referrals Referrals by state (store).\n# TYPE cartgate_referrals gauge\n");
    for (int i = 0; i < REFER_N_STATES; i++)
        fhir_buf_printf(&b, "cartgate_referrals{state=\"%s\"} %lld\n", refer_state_name((refer_state)i),
                        (long long)counts[i]);
    fhir_buf_printf(&b, "# TYPE cartgate_referrals_created_total counter\ncartgate_referrals_created_total %llu\n",
                    (unsigned long long)m->referrals_created);
    int64_t depth = 0, oldest = 0;
    refer_outbox_stats(ad->env.st, &depth, &oldest, &err);
    fhir_buf_printf(&b, "# HELP cartgate_outbox_depth Referrals approved but not yet delivered.\n"
                        "# TYPE cartgate_outbox_depth gauge\ncartgate_outbox_depth %lld\n", (long long)depth);
    fhir_buf_printf(&b, "# HELP cartgate_outbox_oldest_age_seconds Age of the oldest undelivered referral.\n"
                        "# TYPE cartgate_outbox_oldest_age_seconds gauge\ncartgate_outbox_oldest_age_seconds %.3f\n",
                    depth && oldest ? (double)(now - oldest) / 1000.0 : 0.0);
    /* time to referral: creation of the proposal -> first delivery (audit row to 'sent') */
    histogram h = {0};
    refer_time_to_sent(ad->env.st, histogram_add, &h, &err);
    fhir_buf_puts(&b, "# HELP cartgate_time_to_referral_seconds From proposal creation to delivery at the center.\n"
                      "# TYPE cartgate_time_to_referral_seconds histogram\n");
    for (int i = 0; i < HIST_N; i++)
        fhir_buf_printf(&b, "cartgate_time_to_referral_seconds_bucket{le=\"%g\"} %llu\n", hist_le[i], h.bucket[i]);
    fhir_buf_printf(&b, "cartgate_time_to_referral_seconds_bucket{le=\"+Inf\"} %llu\n"
                        "cartgate_time_to_referral_seconds_sum %.3f\ncartgate_time_to_referral_seconds_count %llu\n",
                    h.count, h.sum, h.count);
    fhir_buf_printf(&b, "# TYPE cartgate_reloads_total counter\ncartgate_reloads_total{result=\"ok\"} %llu\n"
                        "cartgate_reloads_total{result=\"refused\"} %llu\n",
                    (unsigned long long)m->reloads_ok, (unsigned long long)m->reloads_failed);
    fhir_buf_printf(&b, "# TYPE cartgate_admin_requests_total counter\ncartgate_admin_requests_total %llu\n",
                    (unsigned long long)ad->requests);
    send_buf(req, 200, "text/plain; version=0.0.4", &b);
    fhir_buf_free(&b);
}

/* ---- patients ---------------------------------------------------------------------------- */

typedef struct patient_rows {
    fhir_arena *a;
    fhir_node *list;
    size_t n;
} patient_rows;

static int patient_row(void *ctx, const store_verdict *v)
{
    patient_rows *pr = ctx;
    fhir_arena *a = pr->a;
    fhir_node *o = fhir_node_append(a, pr->list, NULL, 0, fhir_node_new(a, FHIR_OBJECT));
    put_str(a, o, "id", v->patient_id);
    put_str(a, o, "category", v->category);
    put_time(a, o, "updated", v->updated_ms);
    put_json(a, o, "verdict", v->verdict_json);
    pr->n++;
    return 0;
}

static void patients_list(admin *ad, struct evhttp_request *req, struct evkeyvalq *q)
{
    bool bad = false;
    long limit = qlong(q, "limit", 1000, 1, 100000, &bad);
    long offset = qlong(q, "offset", 0, 0, 100000000, &bad);
    const char *cat = evhttp_find_header(q, "category");
    if (cat && strcmp(cat, "eligible") && strcmp(cat, "possibly_eligible") && strcmp(cat, "not_eligible") &&
        strcmp(cat, "not_in_force"))
        bad = true;
    if (bad) {
        send_error(req, 400, "bad query: category must be eligible|possibly_eligible|not_eligible|not_in_force;"
                             " limit 1..100000; offset >= 0");
        return;
    }
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = fhir_node_new(a, FHIR_OBJECT);
    patient_rows pr = {.a = a, .list = fhir_node_set_arr(a, root, "patients")};
    fhir_error err;
    fhir_error_clear(&err);
    if (store_verdict_list(ad->env.st, cat, limit, offset, patient_row, &pr, &err) < 0)
        send_error(req, 500, err.msg);
    else {
        put_int(a, root, "count", (long long)pr.n);
        put_int(a, root, "offset", offset);
        send_node(req, 200, root);
    }
    fhir_arena_free(a);
}

typedef struct ref_list {
    fhir_arena *a;
    fhir_node *list;
    size_t n;
} ref_list;

static fhir_node *referral_node(fhir_arena *a, const refer_record *r, bool full)
{
    fhir_node *o = fhir_node_new(a, FHIR_OBJECT);
    put_int(a, o, "id", (long long)r->id);
    put_str(a, o, "placer_id", r->placer_id);
    put_str(a, o, "patient", r->patient_id);
    put_str(a, o, "center", r->center_id);
    put_str(a, o, "state", refer_state_name(r->state));
    put_str(a, o, "mode", r->mode);
    put_str(a, o, "urgency", r->urgency);
    put_str(a, o, "indications", r->indications);
    put_int(a, o, "attempts", r->attempts);
    put_int(a, o, "last_status", r->last_status);
    put_str(a, o, "last_error", r->last_error);
    put_str(a, o, "center_service_request", r->center_sr_ref);
    put_str(a, o, "center_task", r->center_task_ref);
    put_str(a, o, "task_status", r->task_status);
    put_str(a, o, "business_status", r->business_status);
    put_time(a, o, "created", r->created_ms);
    put_time(a, o, "updated", r->updated_ms);
    if (full) {
        put_str(a, o, "explanation", r->explanation);
        put_json(a, o, "route", r->route_json);
        put_json(a, o, "verdict", r->verdict_json);
        put_int(a, o, "payload_bytes", (long long)(r->payload ? strlen(r->payload) : 0));
        put_str(a, o, "last_response", r->last_response);
    }
    return o;
}

static int ref_row(void *ctx, const refer_record *r)
{
    ref_list *l = ctx;
    fhir_node_append(l->a, l->list, NULL, 0, referral_node(l->a, r, false));
    l->n++;
    return 0;
}

typedef struct patient_head {
    fhir_arena *a;
    fhir_node *root;
} patient_head;

static int patient_head_row(void *ctx, const store_verdict *v)
{
    patient_head *h = ctx;
    fhir_arena *a = h->a;
    put_str(a, h->root, "id", v->patient_id);
    put_str(a, h->root, "category", v->category);
    put_str(a, h->root, "ruleset", v->ruleset_hash);
    put_time(a, h->root, "updated", v->updated_ms);
    put_json(a, h->root, "profile", v->profile_json);
    put_json(a, h->root, "verdict", v->verdict_json);
    return 1;
}

static void patient_one(admin *ad, struct evhttp_request *req, const char *id)
{
    fhir_arena *a = fhir_arena_new(0);
    patient_head h = {.a = a, .root = fhir_node_new(a, FHIR_OBJECT)};
    fhir_error err;
    fhir_error_clear(&err);
    int f = store_verdict_read(ad->env.st, id, patient_head_row, &h, &err);
    if (f < 0)
        send_error(req, 500, err.msg);
    else if (f == 0)
        send_error(req, 404, "no such patient (not screened)");
    else {
        /* the patient's referrals, by the patient index */
        ref_list l = {.a = a, .list = fhir_node_set_arr(a, h.root, "referrals")};
        refer_filter rf = {.state = -1, .patient_id = id, .summary = true};
        if (refer_list(ad->env.st, &rf, ref_row, &l, &err) < 0)
            send_error(req, 500, err.msg);
        else
            send_node(req, 200, h.root);
    }
    fhir_arena_free(a);
}

/* ---- referrals --------------------------------------------------------------------------- */

static void referrals_list(admin *ad, struct evhttp_request *req, struct evkeyvalq *q)
{
    const char *state = evhttp_find_header(q, "state");
    refer_state s = REFER_PENDING_APPROVAL;
    if (state && refer_state_parse(state, &s) != 0) {
        send_error(req, 400, "bad query: unknown referral state");
        return;
    }
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = fhir_node_new(a, FHIR_OBJECT);
    ref_list l = {.a = a, .list = fhir_node_set_arr(a, root, "referrals")};
    fhir_error err;
    fhir_error_clear(&err);
    refer_filter rf = {.state = state ? (int)s : -1, .summary = true};
    if (refer_list(ad->env.st, &rf, ref_row, &l, &err) < 0)
        send_error(req, 500, err.msg);
    else {
        put_int(a, root, "count", (long long)l.n);
        send_node(req, 200, root);
    }
    fhir_arena_free(a);
}

static void referral_one(admin *ad, struct evhttp_request *req, int64_t id, const char *action)
{
    store *st = ad->env.st;
    fhir_error err;
    fhir_error_clear(&err);
    refer_record r;
    int found = refer_get(st, id, &r, &err);
    if (found < 0) {
        send_error(req, 500, err.msg);
        return;
    }
    if (found == 0) {
        send_error(req, 404, "no such referral");
        return;
    }
    if (action) {
        refer_record_free(&r);
        int rc;
        if (!strcmp(action, "approve"))
            rc = refer_approve(st, id, "admin-api", &err);
        else if (!strcmp(action, "cancel"))
            rc = refer_cancel(st, id, "admin-api", "cancelled via admin API", &err);
        else
            rc = refer_retry(st, id, "admin-api", &err);
        if (rc) {
            send_error(req, 409, err.msg);
            return;
        }
        fhir_log(FHIR_LOG_INFO, "referral.action", "referral=%lld action=%s actor=admin-api", (long long)id,
                 action);
        if (refer_get(st, id, &r, &err) != 1) {
            send_error(req, 500, err.msg);
            return;
        }
    }
    fhir_arena *a = fhir_arena_new(0);
    send_node(req, 200, referral_node(a, &r, true));
    fhir_arena_free(a);
    refer_record_free(&r);
}

/* ---- routing ------------------------------------------------------------------------------ */

static bool parse_id(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 18)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return v > 0;
}

static bool valid_patient_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '-' || s[i] == '.'))
            return false;
    return true;
}

static void method_not_allowed(struct evhttp_request *req, const char *allow)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    send_error(req, 405, "method not allowed");
}

static void send_status(struct evhttp_request *req, int code, const char *key, bool value,
                        const char *key2, long long v2)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = fhir_node_new(a, FHIR_OBJECT);
    if (key2) {
        fhir_node_set(a, root, key, fhir_node_new_bool(a, value));
        put_int(a, root, key2, v2);
    } else {
        put_str(a, root, key, "ok");
    }
    send_node(req, code, root);
    fhir_arena_free(a);
}

static void handle(struct evhttp_request *req, void *arg)
{
    admin *ad = arg;
    ad->requests++;
    int64_t t0 = fhir_clock_mono_ms();
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const char *uri = evhttp_request_get_uri(req);
    struct evhttp_uri *u = evhttp_uri_parse(uri);
    const char *route = "other";
    if (!u) {
        send_error(req, 400, "malformed request URI");
        goto out;
    }
    const char *path = evhttp_uri_get_path(u);
    if (!path || !*path)
        path = "/";
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    const char *query = evhttp_uri_get_query(u);
    if (query && evhttp_parse_query_str(query, &q) != 0) {
        send_error(req, 400, "malformed query string");
        evhttp_uri_free(u);
        goto out;
    }
    bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
    if (!strcmp(path, "/healthz")) {
        route = "/healthz";
        if (!get)
            method_not_allowed(req, "GET");
        else
            send_status(req, 200, "status", false, NULL, 0);
    } else if (!authorized(ad, req)) {
        route = "unauthorized";
        send_error(req, 401, "missing or wrong bearer token");
    } else if (!strcmp(path, "/readyz")) {
        route = "/readyz";
        if (!get)
            method_not_allowed(req, "GET");
        else {
            size_t n = 0;
            bool ready = ad->env.ready(ad->env.ud, &n);
            send_status(req, ready ? 200 : 503, "ready", ready, "sources", (long long)n);
        }
    } else if (!strcmp(path, "/metrics")) {
        route = "/metrics";
        if (!get)
            method_not_allowed(req, "GET");
        else
            metrics(ad, req);
    } else if (!strcmp(path, "/api/v1/patients")) {
        route = "/api/v1/patients";
        if (!get)
            method_not_allowed(req, "GET");
        else
            patients_list(ad, req, &q);
    } else if (!strncmp(path, "/api/v1/patients/", 17)) {
        route = "/api/v1/patients/{id}";
        char *id = evhttp_uridecode(path + 17, 0, NULL);
        if (!get)
            method_not_allowed(req, "GET");
        else if (!id || !valid_patient_id(id))
            send_error(req, 400, "bad patient id");
        else
            patient_one(ad, req, id);
        free(id);
    } else if (!strcmp(path, "/api/v1/referrals")) {
        route = "/api/v1/referrals";
        if (!get)
            method_not_allowed(req, "GET");
        else
            referrals_list(ad, req, &q);
    } else if (!strncmp(path, "/api/v1/referrals/", 18)) {
        const char *rest = path + 18;
        const char *slash = strchr(rest, '/');
        int64_t id;
        if (!parse_id(rest, slash ? (size_t)(slash - rest) : strlen(rest), &id)) {
            route = "/api/v1/referrals/{id}";
            send_error(req, 400, "bad referral id (a positive integer)");
        } else if (!slash) {
            route = "/api/v1/referrals/{id}";
            if (!get)
                method_not_allowed(req, "GET");
            else
                referral_one(ad, req, id, NULL);
        } else {
            const char *action = slash + 1;
            if (strcmp(action, "approve") && strcmp(action, "cancel") && strcmp(action, "retry")) {
                route = "/api/v1/referrals/{id}/?";
                send_error(req, 404, "no such resource");
            } else {
                route = !strcmp(action, "approve") ? "/api/v1/referrals/{id}/approve"
                        : !strcmp(action, "cancel") ? "/api/v1/referrals/{id}/cancel"
                                                     : "/api/v1/referrals/{id}/retry";
                if (cmd != EVHTTP_REQ_POST)
                    method_not_allowed(req, "POST");
                else
                    referral_one(ad, req, id, action);
            }
        }
    } else {
        send_error(req, 404, "no such resource");
    }
    evhttp_clear_headers(&q);
    evhttp_uri_free(u);
out:
    fhir_log(FHIR_LOG_DEBUG, "admin.request", "method=%s route=%s ms=%lld",
             cmd == EVHTTP_REQ_GET ? "GET" : cmd == EVHTTP_REQ_POST ? "POST" : cmd == EVHTTP_REQ_HEAD ? "HEAD" : "other",
             route, (long long)(fhir_clock_mono_ms() - t0));
}

admin *admin_start(const admin_env *env, fhir_error *err)
{
    admin *ad = calloc(1, sizeof *ad);
    if (!ad)
        abort();
    ad->env = *env;
    ad->http = evhttp_new(env->base);
    if (!ad->http) {
        free(ad);
        fhir_error_set(err, "admin: evhttp_new failed");
        return NULL;
    }
    evhttp_set_max_body_size(ad->http, ADMIN_MAX_BODY);
    evhttp_set_max_headers_size(ad->http, 16384);
    evhttp_set_timeout(ad->http, 30);
    evhttp_set_allowed_methods(ad->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                             EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(ad->http, handle, ad);
    ad->sock = evhttp_bind_socket_with_handle(ad->http, env->bind, (ev_uint16_t)env->port);
    if (!ad->sock) {
        evhttp_free(ad->http);
        free(ad);
        fhir_error_set(err, "admin: cannot listen on %s:%ld", env->bind, env->port);
        return NULL;
    }
    evutil_socket_t fd = evhttp_bound_socket_get_fd(ad->sock);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    ad->port = (int)env->port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            ad->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            ad->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    fhir_log(FHIR_LOG_INFO, "admin.listen", "bind=%s port=%d", env->bind, ad->port);
    return ad;
}

int admin_port(const admin *a)
{
    return a->port;
}

void admin_stop(admin *a)
{
    if (!a)
        return;
    evhttp_free(a->http);
    free(a);
}
