/* admin — the admin HTTP API (see admin.h). */
#include "admin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "referral.h"

#define ADMIN_MAX_BODY (1u << 20)
#define ADMIN_MAX_OUT (256u << 20)

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

static void send_error(struct evhttp_request *req, int code, const char *msg)
{
    fhir_buf b;
    fhir_buf_init(&b, ADMIN_ERROR_MAX);
    fhir_buf_printf(&b, "{\"error\":{\"status\":%d,\"message\":", code);
    fhir_json_write_string(&b, msg, strlen(msg));
    fhir_buf_puts(&b, "}}\n");
    if (code == 401)
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer realm=\"cartgate\"");
    send_buf(req, code, "application/json", &b);
    fhir_buf_free(&b);
}

static void send_json(struct evhttp_request *req, int code, fhir_buf *b)
{
    if (b->overflow) {
        send_error(req, 500, "response too large");
        return;
    }
    fhir_buf_putc(b, '\n');
    send_buf(req, code, "application/json", b);
}

static bool authorized(daemon *d, struct evhttp_request *req)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!h || !d->admin_token || strncmp(h, "Bearer ", 7))
        return false;
    const char *t = h + 7;
    size_t lt = strlen(t), le = strlen(d->admin_token);
    unsigned char diff = (unsigned char)(lt != le);
    for (size_t i = 0; i < le; i++)
        diff |= (unsigned char)(d->admin_token[i] ^ (i < lt ? t[i] : 0));
    return diff == 0;
}

static void js(fhir_buf *b, const char *s)
{
    if (!s)
        fhir_buf_puts(b, "null");
    else
        fhir_json_write_string(b, s, strlen(s));
}

/* Embeds a JSON text we produced ourselves (verdicts, profiles); null when absent. */
static void raw(fhir_buf *b, const char *s)
{
    fhir_buf_puts(b, s && *s ? s : "null");
}

static void iso(fhir_buf *b, int64_t ms)
{
    char t[40];
    fhir_clock_format_instant(ms, t, sizeof t);
    js(b, t);
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

static void metrics(daemon *d, struct evhttp_request *req)
{
    fhir_buf b;
    fhir_buf_init(&b, ADMIN_METRICS_MAX);
    daemon_metrics *m = &d->m;
    int64_t now = fhir_clock_now_ms();
    fhir_buf_printf(&b, "# HELP cartgate_up 1 while the daemon runs.\n# TYPE cartgate_up gauge\ncartgate_up 1\n");
    fhir_buf_printf(&b, "# HELP cartgate_ready 1 once every source completed a poll.\n# TYPE cartgate_ready gauge\n"
                        "cartgate_ready %d\n", d->ready ? 1 : 0);
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
    fhir_buf_puts(&b, "# HELP cartgate_resources_ingested_total New or changed resources stored, by source.\n"
                      "# TYPE cartgate_resources_ingested_total counter\n");
    for (size_t i = 0; i < m->n_src; i++)
        fhir_buf_printf(&b, "cartgate_resources_ingested_total{source=\"%s\"} %llu\n", m->src[i].name,
                        (unsigned long long)m->src[i].resources);
    fhir_buf_puts(&b, "# HELP cartgate_resources_unchanged_total Resources seen again unchanged, by source.\n"
                      "# TYPE cartgate_resources_unchanged_total counter\n");
    for (size_t i = 0; i < m->n_src; i++)
        fhir_buf_printf(&b, "cartgate_resources_unchanged_total{source=\"%s\"} %llu\n", m->src[i].name,
                        (unsigned long long)m->src[i].unchanged);
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
        int64_t n = store_verdict_count(d->st, cats[i], &err);
        fhir_buf_printf(&b, "cartgate_verdicts{category=\"%s\"} %lld\n", cats[i], (long long)(n < 0 ? 0 : n));
    }
    int64_t counts[REFER_N_STATES] = {0};
    refer_count_by_state(d->st, counts, &err);
    fhir_buf_puts(&b, "# HELP cartgate_referrals Referrals by state (store).\n# TYPE cartgate_referrals gauge\n");
    for (int i = 0; i < REFER_N_STATES; i++)
        fhir_buf_printf(&b, "cartgate_referrals{state=\"%s\"} %lld\n", refer_state_name((refer_state)i),
                        (long long)counts[i]);
    fhir_buf_printf(&b, "# TYPE cartgate_referrals_created_total counter\ncartgate_referrals_created_total %llu\n",
                    (unsigned long long)m->referrals_created);
    int64_t depth = 0, oldest = 0;
    refer_outbox_stats(d->st, &depth, &oldest, &err);
    fhir_buf_printf(&b, "# HELP cartgate_outbox_depth Referrals approved but not yet delivered.\n"
                        "# TYPE cartgate_outbox_depth gauge\ncartgate_outbox_depth %lld\n", (long long)depth);
    fhir_buf_printf(&b, "# HELP cartgate_outbox_oldest_age_seconds Age of the oldest undelivered referral.\n"
                        "# TYPE cartgate_outbox_oldest_age_seconds gauge\ncartgate_outbox_oldest_age_seconds %.3f\n",
                    depth && oldest ? (double)(now - oldest) / 1000.0 : 0.0);
    /* time to referral: creation of the proposal -> first delivery (audit row to 'sent') */
    histogram h = {0};
    refer_time_to_sent(d->st, histogram_add, &h, &err);
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
                    (unsigned long long)m->admin_requests);
    send_buf(req, 200, "text/plain; version=0.0.4", &b);
    fhir_buf_free(&b);
}

/* ---- patients ---------------------------------------------------------------------------- */

typedef struct patient_rows {
    fhir_buf *b;
    size_t n;
} patient_rows;

static int patient_row(void *ctx, const store_verdict *v)
{
    patient_rows *pr = ctx;
    fhir_buf *b = pr->b;
    fhir_buf_puts(b, pr->n++ ? ",{\"id\":" : "{\"id\":");
    js(b, v->patient_id);
    fhir_buf_puts(b, ",\"category\":");
    js(b, v->category);
    fhir_buf_puts(b, ",\"updated\":");
    iso(b, v->updated_ms);
    fhir_buf_puts(b, ",\"verdict\":");
    raw(b, v->verdict_json);
    fhir_buf_puts(b, "}");
    return 0;
}

static void patients_list(daemon *d, struct evhttp_request *req, struct evkeyvalq *q)
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
    fhir_buf b;
    fhir_buf_init(&b, ADMIN_MAX_OUT);
    fhir_buf_puts(&b, "{\"patients\":[");
    patient_rows pr = {.b = &b};
    fhir_error err;
    fhir_error_clear(&err);
    if (store_verdict_list(d->st, cat, limit, offset, patient_row, &pr, &err) < 0) {
        fhir_buf_free(&b);
        send_error(req, 500, err.msg);
        return;
    }
    fhir_buf_printf(&b, "],\"count\":%zu,\"offset\":%ld}", pr.n, offset);
    send_json(req, 200, &b);
    fhir_buf_free(&b);
}

static int ref_ids_cb(void *ctx, const refer_record *r);

typedef struct ref_list {
    fhir_buf *b;
    size_t n;
    bool full;
} ref_list;

static void referral_json(fhir_buf *b, const refer_record *r, bool full)
{
    fhir_buf_printf(b, "{\"id\":%lld,\"placer_id\":", (long long)r->id);
    js(b, r->placer_id);
    fhir_buf_puts(b, ",\"patient\":");
    js(b, r->patient_id);
    fhir_buf_puts(b, ",\"center\":");
    js(b, r->center_id);
    fhir_buf_puts(b, ",\"state\":");
    js(b, refer_state_name(r->state));
    fhir_buf_puts(b, ",\"mode\":");
    js(b, r->mode);
    fhir_buf_puts(b, ",\"urgency\":");
    js(b, r->urgency);
    fhir_buf_puts(b, ",\"indications\":");
    js(b, r->indications);
    fhir_buf_printf(b, ",\"attempts\":%d,\"last_status\":%d,\"last_error\":", r->attempts, r->last_status);
    js(b, r->last_error);
    fhir_buf_puts(b, ",\"center_service_request\":");
    js(b, r->center_sr_ref);
    fhir_buf_puts(b, ",\"center_task\":");
    js(b, r->center_task_ref);
    fhir_buf_puts(b, ",\"task_status\":");
    js(b, r->task_status);
    fhir_buf_puts(b, ",\"business_status\":");
    js(b, r->business_status);
    fhir_buf_puts(b, ",\"created\":");
    iso(b, r->created_ms);
    fhir_buf_puts(b, ",\"updated\":");
    iso(b, r->updated_ms);
    if (full) {
        fhir_buf_puts(b, ",\"explanation\":");
        js(b, r->explanation);
        fhir_buf_puts(b, ",\"route\":");
        raw(b, r->route_json);
        fhir_buf_puts(b, ",\"verdict\":");
        raw(b, r->verdict_json);
        fhir_buf_printf(b, ",\"payload_bytes\":%zu,\"last_response\":", r->payload ? strlen(r->payload) : 0);
        js(b, r->last_response);
    }
    fhir_buf_puts(b, "}");
}

static int ref_ids_cb(void *ctx, const refer_record *r)
{
    ref_list *l = ctx;
    if (l->n++)
        fhir_buf_putc(l->b, ',');
    referral_json(l->b, r, l->full);
    return 0;
}

static int patient_head(void *ctx, const store_verdict *v)
{
    fhir_buf *b = ctx;
    fhir_buf_puts(b, "{\"id\":");
    js(b, v->patient_id);
    fhir_buf_puts(b, ",\"category\":");
    js(b, v->category);
    fhir_buf_puts(b, ",\"ruleset\":");
    js(b, v->ruleset_hash);
    fhir_buf_puts(b, ",\"updated\":");
    iso(b, v->updated_ms);
    fhir_buf_puts(b, ",\"profile\":");
    raw(b, v->profile_json);
    fhir_buf_puts(b, ",\"verdict\":");
    raw(b, v->verdict_json);
    return 1;
}

static void patient_one(daemon *d, struct evhttp_request *req, const char *id)
{
    fhir_buf b;
    fhir_buf_init(&b, ADMIN_MAX_OUT);
    fhir_error err;
    fhir_error_clear(&err);
    int f = store_verdict_read(d->st, id, patient_head, &b, &err);
    if (f != 1) {
        fhir_buf_free(&b);
        if (f < 0)
            send_error(req, 500, err.msg);
        else
            send_error(req, 404, "no such patient (not screened)");
        return;
    }
    fhir_buf_puts(&b, ",\"referrals\":[");
    ref_list l = {.b = &b};
    refer_filter rf = {.state = -1, .patient_id = id, .summary = true};
    refer_list(d->st, &rf, ref_ids_cb, &l, &err);
    fhir_buf_puts(&b, "]}");
    send_json(req, 200, &b);
    fhir_buf_free(&b);
}

/* ---- referrals --------------------------------------------------------------------------- */

static void referrals_list(daemon *d, struct evhttp_request *req, struct evkeyvalq *q)
{
    const char *state = evhttp_find_header(q, "state");
    refer_state s = REFER_PENDING_APPROVAL;
    if (state && refer_state_parse(state, &s) != 0) {
        send_error(req, 400, "bad query: unknown referral state");
        return;
    }
    fhir_buf b;
    fhir_buf_init(&b, ADMIN_MAX_OUT);
    fhir_buf_puts(&b, "{\"referrals\":[");
    ref_list l = {.b = &b};
    fhir_error err;
    refer_filter rf = {.state = state ? (int)s : -1, .summary = true};
    if (refer_list(d->st, &rf, ref_ids_cb, &l, &err) < 0) {
        fhir_buf_free(&b);
        send_error(req, 500, err.msg);
        return;
    }
    fhir_buf_printf(&b, "],\"count\":%zu}", l.n);
    send_json(req, 200, &b);
    fhir_buf_free(&b);
}

static void referral_one(daemon *d, struct evhttp_request *req, int64_t id, const char *action)
{
    fhir_error err;
    fhir_error_clear(&err);
    refer_record r;
    int found = refer_get(d->st, id, &r, &err);
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
            rc = refer_approve(d->st, id, "admin-api", &err);
        else if (!strcmp(action, "cancel"))
            rc = refer_cancel(d->st, id, "admin-api", "cancelled via admin API", &err);
        else
            rc = refer_retry(d->st, id, "admin-api", &err);
        if (rc) {
            send_error(req, 409, err.msg);
            return;
        }
        fhir_log(FHIR_LOG_INFO, "referral.action", "referral=%lld action=%s actor=admin-api", (long long)id,
                 action);
        if (refer_get(d->st, id, &r, &err) != 1) {
            send_error(req, 500, err.msg);
            return;
        }
    }
    fhir_buf b;
    fhir_buf_init(&b, ADMIN_MAX_OUT);
    referral_json(&b, &r, true);
    refer_record_free(&r);
    send_json(req, 200, &b);
    fhir_buf_free(&b);
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

static void handle(struct evhttp_request *req, void *arg)
{
    daemon *d = arg;
    d->m.admin_requests++;
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
        else {
            fhir_buf b;
            fhir_buf_init(&b, ADMIN_HEALTH_MAX);
            fhir_buf_puts(&b, "{\"status\":\"ok\"}");
            send_json(req, 200, &b);
            fhir_buf_free(&b);
        }
    } else if (!authorized(d, req)) {
        route = "unauthorized";
        send_error(req, 401, "missing or wrong bearer token");
    } else if (!strcmp(path, "/readyz")) {
        route = "/readyz";
        if (!get)
            method_not_allowed(req, "GET");
        else {
            fhir_buf b;
            fhir_buf_init(&b, ADMIN_HEALTH_MAX);
            fhir_buf_printf(&b, "{\"ready\":%s,\"sources\":%zu}", d->ready ? "true" : "false", d->n_sources);
            send_json(req, d->ready ? 200 : 503, &b);
            fhir_buf_free(&b);
        }
    } else if (!strcmp(path, "/metrics")) {
        route = "/metrics";
        if (!get)
            method_not_allowed(req, "GET");
        else
            metrics(d, req);
    } else if (!strcmp(path, "/api/v1/patients")) {
        route = "/api/v1/patients";
        if (!get)
            method_not_allowed(req, "GET");
        else
            patients_list(d, req, &q);
    } else if (!strncmp(path, "/api/v1/patients/", 17)) {
        route = "/api/v1/patients/{id}";
        char *id = evhttp_uridecode(path + 17, 0, NULL);
        if (!get)
            method_not_allowed(req, "GET");
        else if (!id || !valid_patient_id(id))
            send_error(req, 400, "bad patient id");
        else
            patient_one(d, req, id);
        free(id);
    } else if (!strcmp(path, "/api/v1/referrals")) {
        route = "/api/v1/referrals";
        if (!get)
            method_not_allowed(req, "GET");
        else
            referrals_list(d, req, &q);
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
                referral_one(d, req, id, NULL);
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
                    referral_one(d, req, id, action);
            }
        }
    } else {
        send_error(req, 404, "no such resource");
    }
    evhttp_clear_headers(&q);
    evhttp_uri_free(u);
out:;
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    (void)conn;
    fhir_log(FHIR_LOG_DEBUG, "admin.request", "method=%s route=%s ms=%lld",
             cmd == EVHTTP_REQ_GET ? "GET" : cmd == EVHTTP_REQ_POST ? "POST" : cmd == EVHTTP_REQ_HEAD ? "HEAD" : "other",
             route, (long long)(fhir_clock_mono_ms() - t0));
}

int admin_start(daemon *d, fhir_error *err)
{
    const config *c = d->rt->cfg;
    d->http = evhttp_new(d->base);
    if (!d->http)
        return fhir_error_set(err, "admin: evhttp_new failed");
    evhttp_set_max_body_size(d->http, ADMIN_MAX_BODY);
    evhttp_set_max_headers_size(d->http, 16384);
    evhttp_set_timeout(d->http, 30);
    evhttp_set_allowed_methods(d->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(d->http, handle, d);
    d->http_sock = evhttp_bind_socket_with_handle(d->http, c->admin_bind, (ev_uint16_t)c->admin_port);
    if (!d->http_sock) {
        evhttp_free(d->http);
        d->http = NULL;
        return fhir_error_set(err, "admin: cannot listen on %s:%ld", c->admin_bind, c->admin_port);
    }
    evutil_socket_t fd = evhttp_bound_socket_get_fd(d->http_sock);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    d->admin_port = (int)c->admin_port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            d->admin_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            d->admin_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    fhir_log(FHIR_LOG_INFO, "admin.listen", "bind=%s port=%d", c->admin_bind, d->admin_port);
    return 0;
}

void admin_stop(daemon *d)
{
    if (d->http)
        evhttp_free(d->http);
    d->http = NULL;
    d->http_sock = NULL;
}
