/* admin — the admin HTTP API (see admin.h). JSON answers are fhir_node trees written by
 * fhir_json_write; /metrics is Prometheus text. */
#include "admin.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "access.h"
#include "fhir_alloc.h"
#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "fhir_node.h"
#include "referral.h"
#include "role.h"
#include "route.h"
#include "store.h"

#define ADMIN_MAX_OUT (256u << 20)   /* bytes of one answer */
#define ADMIN_AUDIT_MAX 10000        /* audit rows of one answer */

struct admin {
    admin_env env;
    serve *srv;                      /* the listener the routes were added to */
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

static const char *const FAIL_REASONS[] = {ADMIN_POLL_FAIL_REASONS};
_Static_assert(sizeof FAIL_REASONS / sizeof FAIL_REASONS[0] == ADMIN_N_POLL_FAIL_REASONS,
               "ADMIN_N_POLL_FAIL_REASONS counts ADMIN_POLL_FAIL_REASONS");

void admin_metrics_count_failure(admin_source_metrics *s, const char *reason)
{
    size_t other = ADMIN_N_POLL_FAIL_REASONS - 1;
    for (size_t i = 0; i < ADMIN_N_POLL_FAIL_REASONS; i++)
        if (reason && !strcmp(reason, FAIL_REASONS[i])) {
            s->polls_failed_by[i]++;
            return;
        }
    s->polls_failed_by[other]++;
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

/* Writes the tree as the JSON answer (one line). */
static void send_node(serve_req *r, int code, const fhir_node *root)
{
    fhir_buf b;
    fhir_buf_init(&b, ADMIN_MAX_OUT);
    if (fhir_json_write(&b, root, FHIR_JSON_COMPACT) || b.overflow) {
        fhir_buf_free(&b);
        serve_error(r, 500, "response too large");
        return;
    }
    serve_json(r, code, &b);
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

/* A JSON text we produced ourselves (verdicts, profiles, routes), parsed; NULL when absent. */
static fhir_node *json_value(fhir_arena *a, const char *json)
{
    if (!json || !*json)
        return NULL;
    fhir_error e;
    fhir_json_limits lim = {.max_bytes = ADMIN_MAX_OUT};
    return fhir_json_parse(a, json, strlen(json), &lim, &e);
}

/* A JSON text we produced ourselves, embedded as a value (null when absent). */
static void put_json(fhir_arena *a, fhir_node *o, const char *key, const char *json)
{
    fhir_node *v = json_value(a, json);
    fhir_node_set(a, o, key, v ? v : fhir_node_new(a, FHIR_NULL));
}

/* A referral's route as the API shows it: each candidate with its reason (route.h). */
static void put_route(fhir_arena *a, fhir_node *o, const char *json)
{
    fhir_node *v = json_value(a, json), *shown = v ? route_json_shown(a, v) : NULL;
    fhir_node_set(a, o, "route", shown ? shown : v ? v : fhir_node_new(a, FHIR_NULL));
}

/* A query parameter as a number in [min, max]; def when absent; *bad when malformed. */
static long qlong(serve_req *r, const char *name, long def, long min, long max, bool *bad)
{
    const char *v = serve_query(r, name);
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

/* The process's own figures (Prometheus' process_* names), from /proc on Linux; a figure that
 * cannot be read is left out rather than shown as 0. */
static void process_metrics(fhir_buf *b)
{
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/stat", "r");
    char line[1024];
    if (f && tick > 0 && fgets(line, sizeof line, f)) {
        /* fields after the ")" that closes the command name: state is field 3 */
        const char *p = strrchr(line, ')');
        unsigned long long utime = 0, stime = 0, start = 0;
        long long rss = 0;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                                "%*d %*d %llu %*u %lld", &utime, &stime, &start, &rss) == 4) {
            fhir_buf_printf(b, "# HELP process_cpu_seconds_total User and system CPU time spent, in seconds.\n"
                               "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n",
                            (double)(utime + stime) / (double)tick);
            if (page > 0)
                fhir_buf_printf(b, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                                   "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %lld\n",
                                rss * (long long)page);
            /* start time: boot time (/proc/stat btime) + ticks since boot */
            FILE *sf = fopen("/proc/stat", "r");
            char sl[256];
            long long btime = -1;
            while (sf && fgets(sl, sizeof sl, sf))
                if (sscanf(sl, "btime %lld", &btime) == 1)
                    break;
            if (sf)
                fclose(sf);
            if (btime >= 0)
                fhir_buf_printf(b, "# HELP process_start_time_seconds Start time of the process since the Unix epoch, in seconds.\n"
                                   "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
                                (double)btime + (double)start / (double)tick);
        }
    }
    if (f)
        fclose(f);
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        fhir_buf_printf(b, "# HELP process_open_fds Number of open file descriptors.\n"
                           "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n", n - 1 /* the one reading */);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        fhir_buf_printf(b, "# HELP process_max_fds Maximum number of open file descriptors.\n"
                           "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
}

static void feedback_line(void *ctx, const char *service, const char *outcome, int64_t count)
{
    fhir_buf_printf(ctx, "cartgate_cds_feedback{service=\"%s\",outcome=\"%s\"} %lld\n", service, outcome,
                    (long long)count);
}

/* A center's inbox by Task.status (store): the statuses intake_task.h writes, then other. */
static const char *const INTAKE_STATUSES[] = {"received", "accepted", "on-hold", "in-progress",
                                              "rejected", "cancelled", "completed", "other"};
#define N_INTAKE_STATUSES (sizeof INTAKE_STATUSES / sizeof INTAKE_STATUSES[0])

typedef struct intake_gauges {
    int64_t n[N_INTAKE_STATUSES];
    int64_t waiting, oldest_waiting_ms;
} intake_gauges;

static int intake_state_cb(void *ctx, const char *status, int64_t n, int64_t oldest_ms)
{
    intake_gauges *g = ctx;
    size_t i = 0;
    while (i < N_INTAKE_STATUSES - 1 && strcmp(INTAKE_STATUSES[i], status ? status : ""))
        i++;
    g->n[i] += n;
    /* waiting for the center's answer: received (a site's "requested" is stored as received) */
    if (status && (!strcmp(status, "received") || !strcmp(status, "requested"))) {
        g->waiting += n;
        if (!g->oldest_waiting_ms || oldest_ms < g->oldest_waiting_ms)
            g->oldest_waiting_ms = oldest_ms;
    }
    return 0;
}

/* The intake counters and inbox gauges of a center: counts only, no PHI. */
static void intake_metrics(admin *ad, const admin_metrics *m, fhir_buf *b, int64_t now)
{
    fhir_buf_printf(b, "# HELP cartgate_intake_received_total Referrals received from referring sites and stored (new inbox rows).\n"
                       "# TYPE cartgate_intake_received_total counter\ncartgate_intake_received_total %llu\n"
                       "# HELP cartgate_intake_repeated_total Referral Bundles sent again by a site (its answer was lost) and answered from what was stored.\n"
                       "# TYPE cartgate_intake_repeated_total counter\ncartgate_intake_repeated_total %llu\n",
                    (unsigned long long)m->intake_received, (unsigned long long)m->intake_repeated);
    fhir_buf_puts(b, "# HELP cartgate_intake_refused_total Referral Bundles refused, nothing stored, by reason: not_json (400), "
                     "not_transaction (400), invalid (422: no ServiceRequest or Task, an unresolved reference, ...), "
                     "ambiguous_identifier (412), too_large (413).\n"
                     "# TYPE cartgate_intake_refused_total counter\n");
    for (size_t i = 0; i < m->n_intake_refuse; i++)
        fhir_buf_printf(b, "cartgate_intake_refused_total{reason=\"%s\"} %llu\n", m->intake_refuse_reasons[i],
                        (unsigned long long)m->intake_refused[i]);
    fhir_buf_printf(b, "# HELP cartgate_intake_unauthorized_total Requests to /fhir without a valid site token, and refused token requests.\n"
                       "# TYPE cartgate_intake_unauthorized_total counter\ncartgate_intake_unauthorized_total %llu\n"
                       "# HELP cartgate_intake_tokens_total Access tokens issued to referring sites.\n"
                       "# TYPE cartgate_intake_tokens_total counter\ncartgate_intake_tokens_total %llu\n",
                    (unsigned long long)m->intake_unauthorized, (unsigned long long)m->intake_tokens);
    intake_gauges g = {{0}, 0, 0};
    fhir_error err;
    fhir_error_clear(&err);
    if (store_intake_ref_states(ad->env.st, intake_state_cb, &g, &err) < 0)
        fhir_log(FHIR_LOG_ERROR, "metrics.store_failed", "error=%s", err.msg);
    fhir_buf_puts(b, "# HELP cartgate_intake_referrals Referrals in the intake inbox by their Task's status (store): received "
                     "(no answer yet), accepted, on-hold (more information requested), in-progress (consult scheduled), "
                     "rejected (declined), cancelled (by the referring site), completed, other.\n"
                     "# TYPE cartgate_intake_referrals gauge\n");
    for (size_t i = 0; i < N_INTAKE_STATUSES; i++)
        fhir_buf_printf(b, "cartgate_intake_referrals{status=\"%s\"} %lld\n", INTAKE_STATUSES[i], (long long)g.n[i]);
    fhir_buf_printf(b, "# HELP cartgate_intake_waiting Referrals waiting for the center's first answer (store).\n"
                       "# TYPE cartgate_intake_waiting gauge\ncartgate_intake_waiting %lld\n"
                       "# HELP cartgate_intake_waiting_oldest_age_seconds Age of the oldest referral waiting for the center's first answer (0: none).\n"
                       "# TYPE cartgate_intake_waiting_oldest_age_seconds gauge\ncartgate_intake_waiting_oldest_age_seconds %.3f\n",
                    (long long)g.waiting, g.waiting && g.oldest_waiting_ms ? (double)(now - g.oldest_waiting_ms) / 1000.0 : 0.0);
}

/* store_referral_unprepared_counts: a count per refer_compose_cause (unknown names: other) */
static void count_cause(void *ctx, const char *name, int64_t n)
{
    int64_t *v = ctx;
    refer_compose_cause c;
    if (refer_compose_cause_parse(name, &c) || c == REFER_COMPOSE_OK)
        c = REFER_COMPOSE_OTHER;
    v[c] += n;
}

static void metrics(admin *ad, serve_req *req)
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
    fhir_buf_printf(&b, "# HELP cartgate_build_info The running version (value always 1).\n"
                        "# TYPE cartgate_build_info gauge\ncartgate_build_info{version=\"%s\",sqlite=\"%s\"} 1\n",
                    CARTGATE_VERSION, store_sqlite_version());
    process_metrics(&b);
    fhir_buf_printf(&b, "# HELP cartgate_uptime_seconds Seconds since the daemon started.\n"
                        "# TYPE cartgate_uptime_seconds gauge\ncartgate_uptime_seconds %.3f\n",
                    (double)(now - m->started_ms) / 1000.0);
    fhir_buf_puts(&b, "# HELP cartgate_polls_total Polls finished, by source and result.\n"
                      "# TYPE cartgate_polls_total counter\n");
    for (size_t i = 0; i < m->n_src; i++) {
        fhir_buf_printf(&b, "cartgate_polls_total{source=\"%s\",result=\"ok\"} %llu\n", m->src[i].name,
                        (unsigned long long)m->src[i].polls_ok);
        fhir_buf_printf(&b, "cartgate_polls_total{source=\"%s\",result=\"failed\"} %llu\n", m->src[i].name,
                        (unsigned long long)m->src[i].polls_failed);
    }
    fhir_buf_puts(&b, "# HELP cartgate_poll_failures_total Failed polls by source and the reason of the first failure.\n"
                      "# TYPE cartgate_poll_failures_total counter\n");
    for (size_t i = 0; i < m->n_src; i++)
        for (size_t k = 0; k < ADMIN_N_POLL_FAIL_REASONS; k++)
            fhir_buf_printf(&b, "cartgate_poll_failures_total{source=\"%s\",reason=\"%s\"} %llu\n", m->src[i].name,
                            FAIL_REASONS[k], (unsigned long long)m->src[i].polls_failed_by[k]);
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
    source_counter(&b, m, "cartgate_resources_refused_total",
                   "Resources not stored because their id is not a FHIR id, by source.",
                   offsetof(admin_source_metrics, refused));
    source_counter(&b, m, "cartgate_resources_unresolved_total",
                   "Resources whose patient reference (a urn:uuid of their Bundle) names no patient: stored, never screened, by source.",
                   offsetof(admin_source_metrics, unresolved));
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
    fhir_buf_printf(&b, "# HELP cartgate_screen_errors_total Patients whose screening failed (logged as screen.failed).\n"
                        "# TYPE cartgate_screen_errors_total counter\ncartgate_screen_errors_total %llu\n",
                    (unsigned long long)m->screen_errors);
    fhir_buf_printf(&b, "# HELP cartgate_screen_partial_total Verdicts made from only part of a patient's cached records (logged as screen.partial).\n"
                        "# TYPE cartgate_screen_partial_total counter\ncartgate_screen_partial_total %llu\n",
                    (unsigned long long)m->screen_partial);
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
    int64_t unprep[REFER_COMPOSE_N_CAUSES] = {0};
    if (store_referral_unprepared_counts(ad->env.st, count_cause, unprep, &err))
        fhir_log(FHIR_LOG_ERROR, "metrics.store_failed", "error=%s", err.msg);
    fhir_buf_puts(&b, "# HELP cartgate_referrals_unprepared Referrals pending approval or approved whose summary, route "
                      "and package could not be prepared, by cause (store; shown on their pages; an approved one is "
                      "not sent until the cause clears).\n# TYPE cartgate_referrals_unprepared gauge\n");
    for (int i = 1; i < REFER_COMPOSE_N_CAUSES; i++)
        fhir_buf_printf(&b, "cartgate_referrals_unprepared{cause=\"%s\"} %lld\n",
                        refer_compose_cause_name((refer_compose_cause)i), (long long)unprep[i]);
    fhir_buf_printf(&b, "# HELP cartgate_referrals_created_total Referral proposals created.\n"
                        "# TYPE cartgate_referrals_created_total counter\ncartgate_referrals_created_total %llu\n",
                    (unsigned long long)m->referrals_created);
    if (m->cds_enabled) {
        fhir_buf_printf(&b,
                        "# HELP cartgate_cds_calls_total CDS Hooks calls by result: answered (authenticated; cards or none), "
                        "unauthorized (401), precondition_failed (412), bad_request (400), internal_error (answered with no "
                        "cards).\n# TYPE cartgate_cds_calls_total counter\n"
                        "cartgate_cds_calls_total{result=\"answered\"} %llu\n"
                        "cartgate_cds_calls_total{result=\"unauthorized\"} %llu\n"
                        "cartgate_cds_calls_total{result=\"precondition_failed\"} %llu\n"
                        "cartgate_cds_calls_total{result=\"bad_request\"} %llu\n"
                        "cartgate_cds_calls_total{result=\"internal_error\"} %llu\n",
                        (unsigned long long)m->cds_calls, (unsigned long long)m->cds_unauthorized,
                        (unsigned long long)m->cds_precondition, (unsigned long long)m->cds_bad_request,
                        (unsigned long long)m->cds_internal);
        fhir_buf_printf(&b,
                        "# HELP cartgate_cds_cards_total CDS Hooks cards shown.\n# TYPE cartgate_cds_cards_total counter\n"
                        "cartgate_cds_cards_total %llu\n"
                        "# HELP cartgate_cds_cards_suppressed_total Cards held back: the patient's referral was declined in "
                        "cartgate for the same verdict.\n# TYPE cartgate_cds_cards_suppressed_total counter\n"
                        "cartgate_cds_cards_suppressed_total %llu\n"
                        "# HELP cartgate_cds_fhir_fetches_total CDS Hooks calls that read missing data from the EHR's FHIR "
                        "server.\n# TYPE cartgate_cds_fhir_fetches_total counter\ncartgate_cds_fhir_fetches_total %llu\n",
                        (unsigned long long)m->cds_cards, (unsigned long long)m->cds_suppressed,
                        (unsigned long long)m->cds_fetches);
        fhir_buf_puts(&b, "# HELP cartgate_cds_feedback Feedback the EHR sent on cards, by service and outcome (store).\n"
                          "# TYPE cartgate_cds_feedback gauge\n");
        store_cds_feedback_count(ad->env.st, feedback_line, &b, &err);
    }
    if (m->intake_enabled)
        intake_metrics(ad, m, &b, now);
    int64_t n_pending = 0, oldest_pending = 0;
    store_referral_state_age(ad->env.st, refer_state_name(REFER_PENDING_APPROVAL), &n_pending, &oldest_pending,
                             &err);
    fhir_buf_printf(&b, "# HELP cartgate_pending_approval_oldest_age_seconds Age of the oldest referral awaiting a clinician's approval (0: none).\n"
                        "# TYPE cartgate_pending_approval_oldest_age_seconds gauge\n"
                        "cartgate_pending_approval_oldest_age_seconds %.3f\n",
                    n_pending && oldest_pending ? (double)(now - oldest_pending) / 1000.0 : 0.0);
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
    fhir_buf_printf(&b, "# HELP cartgate_reloads_total Configuration reloads (SIGHUP) by result.\n"
                        "# TYPE cartgate_reloads_total counter\ncartgate_reloads_total{result=\"ok\"} %llu\n"
                        "cartgate_reloads_total{result=\"refused\"} %llu\n",
                    (unsigned long long)m->reloads_ok, (unsigned long long)m->reloads_failed);
    fhir_buf_printf(&b, "# HELP cartgate_retention_pruned_resources_total Cached resources of patients without a heme diagnosis removed by store.retention.\n"
                        "# TYPE cartgate_retention_pruned_resources_total counter\ncartgate_retention_pruned_resources_total %llu\n",
                    (unsigned long long)m->retention_resources);
    fhir_buf_puts(&b, "# HELP cartgate_notifications_total Notices (no PHI) by channel and outcome: sent, retried (a failed attempt tried again later), failed (given up).\n"
                      "# TYPE cartgate_notifications_total counter\n");
    static const char *const channels[2] = {"email", "webhook"};
    for (int c = 0; c < 2; c++)
        fhir_buf_printf(&b, "cartgate_notifications_total{channel=\"%s\",result=\"sent\"} %llu\n"
                            "cartgate_notifications_total{channel=\"%s\",result=\"retried\"} %llu\n"
                            "cartgate_notifications_total{channel=\"%s\",result=\"failed\"} %llu\n",
                        channels[c], (unsigned long long)m->notices_sent[c], channels[c],
                        (unsigned long long)m->notices_retried[c], channels[c],
                        (unsigned long long)m->notices_failed[c]);
    fhir_buf_printf(&b, "# HELP cartgate_notifications_interrupted_total Notices interrupted while sending (a crash) and not sent again (at most once).\n"
                        "# TYPE cartgate_notifications_interrupted_total counter\ncartgate_notifications_interrupted_total %llu\n",
                    (unsigned long long)m->notices_unknown);
    fhir_buf_printf(&b, "# HELP cartgate_admin_requests_total Requests answered by the listener.\n"
                        "# TYPE cartgate_admin_requests_total counter\ncartgate_admin_requests_total %llu\n",
                    (unsigned long long)(ad->srv ? serve_get_stats(ad->srv)->requests : 0));
    if (ad->srv) {
        const serve_stats *ss = serve_get_stats(ad->srv);
        fhir_buf_printf(&b, "# HELP cartgate_http_connections_open Connections open on the listener.\n"
                            "# TYPE cartgate_http_connections_open gauge\ncartgate_http_connections_open %d\n"
                            "# HELP cartgate_http_connections_total Connections accepted by the listener.\n"
                            "# TYPE cartgate_http_connections_total counter\ncartgate_http_connections_total %llu\n"
                            "# HELP cartgate_http_timeouts_total Connections closed by a header, body or idle deadline.\n"
                            "# TYPE cartgate_http_timeouts_total counter\ncartgate_http_timeouts_total %llu\n"
                            "# HELP cartgate_http_connections_max Connections served at once (admin.max_connections, lowered to what the descriptor limit leaves).\n"
                            "# TYPE cartgate_http_connections_max gauge\ncartgate_http_connections_max %d\n"
                            "# HELP cartgate_http_evicted_total Idle or unfinished connections closed at the cap to make room for a new one.\n"
                            "# TYPE cartgate_http_evicted_total counter\ncartgate_http_evicted_total %llu\n"
                            "# HELP cartgate_http_accept_errors_total Connections the listener failed to accept (descriptors or memory short).\n"
                            "# TYPE cartgate_http_accept_errors_total counter\ncartgate_http_accept_errors_total %llu\n"
                            "# HELP cartgate_http_refused_unread_total Requests refused from their head (credentials, role, size) before their body was read.\n"
                            "# TYPE cartgate_http_refused_unread_total counter\ncartgate_http_refused_unread_total %llu\n",
                        ss->open, (unsigned long long)ss->connections, (unsigned long long)ss->timeouts, ss->cap,
                        (unsigned long long)ss->evicted, (unsigned long long)ss->accept_errors,
                        (unsigned long long)ss->refused_unread);
        fhir_buf_puts(&b, "# HELP cartgate_http_responses_total Answers of the listener by status class.\n"
                          "# TYPE cartgate_http_responses_total counter\n");
        for (int c = 2; c <= 5; c++)
            fhir_buf_printf(&b, "cartgate_http_responses_total{class=\"%dxx\"} %llu\n", c,
                            (unsigned long long)ss->status[c]);
    }
    if (b.overflow)
        serve_error(req, 500, "response too large");
    else
        serve_reply(req, 200, "text/plain; version=0.0.4", b.data, b.len);
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

static void patients_list(admin *ad, serve_req *req)
{
    bool bad = false;
    long limit = qlong(req, "limit", 1000, 1, 100000, &bad);
    long offset = qlong(req, "offset", 0, 0, 100000000, &bad);
    const char *cat = serve_query(req, "category");
    if (cat && strcmp(cat, "eligible") && strcmp(cat, "possibly_eligible") && strcmp(cat, "not_eligible") &&
        strcmp(cat, "not_in_force"))
        bad = true;
    if (bad) {
        serve_error(req, 400, "bad query: category must be eligible|possibly_eligible|not_eligible|not_in_force;"
                             " limit 1..100000; offset >= 0");
        return;
    }
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = fhir_node_new(a, FHIR_OBJECT);
    patient_rows pr = {.a = a, .list = fhir_node_set_arr(a, root, "patients")};
    fhir_error err;
    fhir_error_clear(&err);
    if (store_verdict_list(ad->env.st, cat, limit, offset, patient_row, &pr, &err) < 0)
        serve_error(req, 500, err.msg);
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
    if (r->compose_cause != REFER_COMPOSE_OK) { /* its texts could not be composed: why, in words */
        put_str(a, o, "compose_cause", refer_compose_cause_name(r->compose_cause));
        put_str(a, o, "compose_error", r->compose_error);
    }
    put_str(a, o, "center_service_request", r->center_sr_ref);
    put_str(a, o, "center_task", r->center_task_ref);
    put_str(a, o, "task_status", r->task_status);
    put_str(a, o, "business_status", r->business_status);
    if (r->cancel_requested_ms > 0)
        put_time(a, o, "cancel_requested", r->cancel_requested_ms); /* the sender cancels it at its center */
    put_time(a, o, "created", r->created_ms);
    put_time(a, o, "updated", r->updated_ms);
    if (full) {
        put_str(a, o, "explanation", r->explanation);
        put_route(a, o, r->route_json);
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
    bool have_profile; /* the row kept one (store.h: only when its worklist row needed it) */
} patient_head;

static int patient_head_row(void *ctx, const store_verdict *v)
{
    patient_head *h = ctx;
    fhir_arena *a = h->a;
    put_str(a, h->root, "id", v->patient_id);
    put_str(a, h->root, "category", v->category);
    put_str(a, h->root, "ruleset", v->ruleset_hash);
    put_time(a, h->root, "updated", v->updated_ms);
    h->have_profile = v->profile_json && *v->profile_json;
    if (h->have_profile)
        put_json(a, h->root, "profile", v->profile_json);
    put_json(a, h->root, "verdict", v->verdict_json);
    return 1;
}

/* The profile built now from the cached resources (the same screening path as the verdict's;
 * null when nothing is cached any more, e.g. after store.retention). When it cannot be built
 * (a cached record that does not decode, the profile over the answer's cap), "profile" is null
 * and "profile_error" says why: the stored verdict is still shown. */
static void patient_profile(admin *ad, fhir_arena *a, fhir_node *root, const char *id)
{
    fhir_buf pj;
    fhir_buf_init(&pj, ADMIN_MAX_OUT);
    fhir_error err;
    fhir_error_clear(&err);
    int rc = ad->env.profile ? ad->env.profile(ad->env.ud, id, &pj, &err) : 0;
    if (rc > 0 && pj.overflow)
        rc = fhir_error_set(&err, "the profile is larger than an answer may be");
    put_json(a, root, "profile", rc > 0 ? fhir_buf_cstr(&pj) : NULL);
    if (rc < 0)
        put_str(a, root, "profile_error", err.msg);
    fhir_buf_free(&pj);
}

static void patient_one(admin *ad, serve_req *req, const char *id)
{
    fhir_arena *a = fhir_arena_new(0);
    patient_head h = {.a = a, .root = fhir_node_new(a, FHIR_OBJECT)};
    fhir_error err;
    fhir_error_clear(&err);
    int f = store_verdict_read(ad->env.st, id, patient_head_row, &h, &err);
    if (f < 0)
        serve_error(req, 500, err.msg);
    else if (f == 0)
        serve_error(req, 404, "no such patient (not screened)");
    else {
        if (!h.have_profile)
            patient_profile(ad, a, h.root, id);
        /* the patient's referrals, by the patient index */
        ref_list l = {.a = a, .list = fhir_node_set_arr(a, h.root, "referrals")};
        refer_filter rf = {.state = -1, .patient_id = id, .summary = true};
        if (refer_list(ad->env.st, &rf, ref_row, &l, &err) < 0)
            serve_error(req, 500, err.msg);
        else
            send_node(req, 200, h.root);
    }
    fhir_arena_free(a);
}

/* ---- referrals --------------------------------------------------------------------------- */

static void referrals_list(admin *ad, serve_req *req)
{
    const char *state = serve_query(req, "state");
    refer_state s = REFER_PENDING_APPROVAL;
    if (state && refer_state_parse(state, &s) != 0) {
        serve_error(req, 400, "bad query: unknown referral state");
        return;
    }
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = fhir_node_new(a, FHIR_OBJECT);
    ref_list l = {.a = a, .list = fhir_node_set_arr(a, root, "referrals")};
    fhir_error err;
    fhir_error_clear(&err);
    refer_filter rf = {.state = state ? (int)s : -1, .summary = true};
    if (refer_list(ad->env.st, &rf, ref_row, &l, &err) < 0)
        serve_error(req, 500, err.msg);
    else {
        put_int(a, root, "count", (long long)l.n);
        send_node(req, 200, root);
    }
    fhir_arena_free(a);
}

/* ---- the audit trail ------------------------------------------------------------------- */

/* A list being filled (audit rows, users, tokens). */
typedef struct rows {
    fhir_arena *a;
    fhir_node *list;
    size_t n;
} rows;

/* A new object at the end of l (counted). */
static fhir_node *row_obj(rows *l)
{
    l->n++;
    return fhir_node_append(l->a, l->list, NULL, 0, fhir_node_new(l->a, FHIR_OBJECT));
}

/* A time, or null when 0 (never). */
static void put_time_or_null(fhir_arena *a, fhir_node *o, const char *key, int64_t ms)
{
    if (ms)
        put_time(a, o, key, ms);
    else
        fhir_node_set(a, o, key, fhir_node_new(a, FHIR_NULL));
}

static int audit_row(void *ctx, const store_audit_row *row)
{
    rows *ar = ctx;
    fhir_arena *a = ar->a;
    fhir_node *o = row_obj(ar);
    put_int(a, o, "id", (long long)row->id);
    put_time(a, o, "time", row->ts_ms);
    put_str(a, o, "actor", row->actor);
    if (row->user_id > 0)
        put_int(a, o, "user_id", (long long)row->user_id);
    else
        fhir_node_set(a, o, "user_id", fhir_node_new(a, FHIR_NULL));
    put_str(a, o, "role", row->role);
    put_str(a, o, "source", row->source);
    put_str(a, o, "action", row->action);
    put_str(a, o, "from", row->from_state);
    put_str(a, o, "to", row->to_state);
    put_str(a, o, "detail", row->detail);
    put_str(a, o, "reason", row->reason);
    return 0;
}

/* GET /api/v1/audit: the rows about no referral (sign-ins, users, tokens). */
static void audit_list(admin *ad, serve_req *req)
{
    bool bad = false;
    long after = qlong(req, "after", 0, 0, 0x7fffffffL, &bad);
    long limit = qlong(req, "limit", 1000, 1, ADMIN_AUDIT_MAX, &bad);
    if (bad) {
        serve_error(req, 400, "bad query: after >= 0; limit 1..10000");
        return;
    }
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = fhir_node_new(a, FHIR_OBJECT);
    rows ar = {.a = a, .list = fhir_node_set_arr(a, root, "audit")};
    fhir_error err;
    fhir_error_clear(&err);
    if (store_audit_list(ad->env.st, 0, after, limit, audit_row, &ar, &err) < 0)
        serve_error(req, 500, err.msg);
    else {
        put_int(a, root, "count", (long long)ar.n);
        send_node(req, 200, root);
    }
    fhir_arena_free(a);
}

/* ---- one referral, and the acts on it ------------------------------------------------------ */

/* The reason a person gave: JSON {"reason": "..."} or a form field; NULL when none. *bad when
 * the body is neither. The string lives in arena a. */
static const char *body_reason(serve_req *req, fhir_arena *a, bool *bad)
{
    *bad = false;
    size_t len;
    const char *body = serve_body(req, &len);
    const char *ct = serve_header(req, "Content-Type");
    if (len == 0)
        return NULL;
    if (ct && !strncmp(ct, "application/x-www-form-urlencoded", 33)) {
        const char *v = serve_form(req, "reason");
        return v ? fhir_arena_strdup(a, v) : NULL;
    }
    fhir_error e;
    fhir_json_limits lim = {.max_bytes = len + 1};
    fhir_node *n = fhir_json_parse(a, body, len, &lim, &e);
    if (!n || !fhir_node_is(n, FHIR_OBJECT)) {
        *bad = true;
        return NULL;
    }
    const fhir_node *v = fhir_node_get(n, "reason");
    if (v && !fhir_node_is(v, FHIR_STRING) && !fhir_node_is(v, FHIR_NULL)) {
        *bad = true;
        return NULL;
    }
    return fhir_node_str(v);
}

/* The role a principal acted in on a route needing `need`: its own when that grants it (a
 * person), else the one needed (a service holding several). */
static const char *acted_role(const access_principal *p, role need)
{
    if (role_grants(p->role) & ROLE_BIT(need))
        return role_name(p->role);
    return role_name(need);
}


/* GET a referral (act < 0) or act on it, answering with the referral and its audit trail. */
static void referral_one(admin *ad, serve_req *req, int act, role need)
{
    store *st = ad->env.st;
    int64_t id;
    if (!serve_parse_id(serve_param(req, "id"), &id)) {
        serve_error(req, 400, "bad referral id (a positive integer)");
        return;
    }
    fhir_error err;
    fhir_error_clear(&err);
    refer_record r;
    int found = refer_get(st, id, &r, &err);
    if (found < 0) {
        serve_error(req, 500, err.msg);
        return;
    }
    if (found == 0) {
        serve_error(req, 404, "no such referral");
        return;
    }
    fhir_arena *a = fhir_arena_new(0);
    if (act >= 0) {
        refer_record_free(&r);
        bool bad;
        const char *reason = body_reason(req, a, &bad);
        const access_principal *p = serve_principal(req);
        if (bad || !p) {
            serve_error(req, 400, "the body must be JSON {\"reason\": \"...\"} or a form with a reason field");
            fhir_arena_free(a);
            return;
        }
        store_actor who = access_actor(p, reason);
        who.role = acted_role(p, need);
        fhir_error_clear(&err);
        if (refer_do(st, id, (refer_act)act, &who, &err)) {
            serve_error(req, err.code == 400 ? 400 : err.code == 409 ? 409 : 500, err.msg);
            fhir_arena_free(a);
            return;
        }
        if (refer_get(st, id, &r, &err) != 1) {
            serve_error(req, 500, err.msg);
            fhir_arena_free(a);
            return;
        }
    }
    fhir_node *o = referral_node(a, &r, true);
    refer_record_free(&r);
    rows ar = {.a = a, .list = fhir_node_set_arr(a, o, "audit")};
    if (store_audit_list(st, id, 0, ADMIN_AUDIT_MAX, audit_row, &ar, &err) < 0)
        serve_error(req, 500, err.msg);
    else
        send_node(req, 200, o);
    fhir_arena_free(a);
}

/* ---- users and their tokens (admin) ------------------------------------------------------- */

static int user_row(void *ctx, const store_user *u)
{
    rows *l = ctx;
    fhir_arena *a = l->a;
    fhir_node *o = row_obj(l);
    put_int(a, o, "id", (long long)u->id);
    put_str(a, o, "name", u->name);
    put_str(a, o, "display_name", u->display_name);
    put_str(a, o, "role", u->role);
    put_str(a, o, "kind", u->service ? "service" : "person");
    fhir_node_set(a, o, "password", fhir_node_new_bool(a, u->pw_hash != NULL));
    fhir_node_set(a, o, "oidc", fhir_node_new_bool(a, u->oidc_subject != NULL));
    fhir_node_set(a, o, "disabled", fhir_node_new_bool(a, u->disabled));
    put_time_or_null(a, o, "last_login", u->last_login_ms);
    return 0;
}

static int token_row(void *ctx, const store_token *t)
{
    rows *l = ctx;
    fhir_arena *a = l->a;
    fhir_node *o = row_obj(l);
    put_int(a, o, "id", (long long)t->id);
    put_str(a, o, "role", t->role);
    put_str(a, o, "label", t->label[0] ? t->label : NULL);
    put_time(a, o, "created", t->created_ms);
    put_time(a, o, "expires", t->expires_ms);
    put_time_or_null(a, o, "last_used", t->last_used_ms);
    put_time_or_null(a, o, "revoked", t->revoked_ms);
    return 0;
}

/* GET /api/v1/users: everyone, no secrets. */
static void h_users(serve_req *req, void *ud)
{
    admin *ad = ud;
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = fhir_node_new(a, FHIR_OBJECT);
    rows l = {.a = a, .list = fhir_node_set_arr(a, root, "users")};
    fhir_error err;
    fhir_error_clear(&err);
    if (store_user_each(ad->env.st, user_row, &l, &err) < 0)
        serve_error(req, 500, err.msg);
    else {
        put_int(a, root, "count", (long long)l.n);
        send_node(req, 200, root);
    }
    fhir_arena_free(a);
}

/* The user of the {name} segment: 1 with *u (caller frees), else answered (404 / 500). */
static int user_of(admin *ad, serve_req *req, store_user *u)
{
    fhir_error err;
    fhir_error_clear(&err);
    const char *name = serve_param(req, "name");
    int f = name && access_name_check(name, &err) == 0 ? store_user_get(ad->env.st, name, u, &err) : 0;
    if (f < 0)
        serve_error(req, 500, err.msg);
    else if (f == 0)
        serve_error(req, 404, "no such user");
    return f;
}

/* A JSON object body (an empty body is {}); NULL answered 400. */
static fhir_node *body_object(serve_req *req, fhir_arena *a)
{
    size_t len;
    const char *body = serve_body(req, &len);
    if (len == 0)
        return fhir_node_new(a, FHIR_OBJECT);
    fhir_error e;
    fhir_json_limits lim = {.max_bytes = len + 1};
    fhir_node *n = fhir_json_parse(a, body, len, &lim, &e);
    if (!n || !fhir_node_is(n, FHIR_OBJECT)) {
        serve_error(req, 400, "the body must be a JSON object");
        return NULL;
    }
    return n;
}

/* GET /api/v1/users/{name}/tokens: ids, roles, expiry, use; never the secrets. */
static void h_tokens(serve_req *req, void *ud)
{
    admin *ad = ud;
    store_user u;
    if (user_of(ad, req, &u) != 1)
        return;
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = fhir_node_new(a, FHIR_OBJECT);
    put_str(a, root, "user", u.name);
    rows l = {.a = a, .list = fhir_node_set_arr(a, root, "tokens")};
    fhir_error err;
    fhir_error_clear(&err);
    if (store_token_each(ad->env.st, u.id, token_row, &l, &err) < 0)
        serve_error(req, 500, err.msg);
    else
        send_node(req, 200, root);
    store_user_free(&u);
    fhir_arena_free(a);
}

/* POST /api/v1/users/{name}/tokens {"days": N, "role": "...", "label": "..."}: 201 with the
 * token, shown this once (the answer is never cached or logged). */
static void h_token_new(serve_req *req, void *ud)
{
    admin *ad = ud;
    store_user u;
    if (user_of(ad, req, &u) != 1)
        return;
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *in = body_object(req, a);
    if (in) {
        int64_t days = 90;
        const fhir_node *d = fhir_node_get(in, "days");
        const char *rname = fhir_node_str(fhir_node_get(in, "role"));
        const char *label = fhir_node_str(fhir_node_get(in, "label"));
        role r = ROLE_UNSET;
        if ((d && !fhir_node_int(d, &days)) || (rname && role_parse(rname, &r))) {
            serve_error(req, 400, "days must be a whole number; role one of viewer, clinician, intake, admin");
        } else {
            char tok[ACCESS_TOKEN_LEN];
            int64_t id = 0;
            fhir_error err;
            fhir_error_clear(&err);
            if (access_token_create(serve_access(req), u.name, r, days, label, serve_principal(req), tok, &id, &err)) {
                serve_error(req, 400, err.msg);
            } else {
                fhir_node *root = fhir_node_new(a, FHIR_OBJECT);
                put_int(a, root, "id", (long long)id);
                put_str(a, root, "user", u.name);
                put_str(a, root, "token", tok);
                put_int(a, root, "days", (long long)days);
                send_node(req, 201, root);
            }
            OPENSSL_cleanse(tok, sizeof tok);
        }
    }
    store_user_free(&u);
    fhir_arena_free(a);
}

/* The answer of a user change: the user as GET /api/v1/users shows it. */
static void send_user(admin *ad, serve_req *req, const char *name)
{
    fhir_error err;
    fhir_error_clear(&err);
    store_user u;
    if (store_user_get(ad->env.st, name, &u, &err) != 1) {
        serve_error(req, 500, err.msg[0] ? err.msg : "user vanished");
        return;
    }
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *wrap = fhir_node_new(a, FHIR_ARRAY);
    rows l = {.a = a, .list = wrap};
    user_row(&l, &u);
    send_node(req, 200, fhir_node_first(wrap));
    store_user_free(&u);
    fhir_arena_free(a);
}

/* POST /api/v1/users/{name}/tokens/{id}/revoke */
static void h_token_revoke(serve_req *req, void *ud)
{
    admin *ad = ud;
    int64_t id;
    if (!serve_parse_id(serve_param(req, "id"), &id)) {
        serve_error(req, 400, "bad token id (a positive integer)");
        return;
    }
    store_user u;
    if (user_of(ad, req, &u) != 1)
        return;
    fhir_error err;
    fhir_error_clear(&err);
    if (access_token_revoke(serve_access(req), u.name, id, serve_principal(req), &err))
        serve_error(req, 409, err.msg);
    else
        send_user(ad, req, u.name);
    store_user_free(&u);
}

/* POST /api/v1/users/{name}/disable | enable | role {"role": "..."} */
static void user_change(serve_req *req, admin *ad, int what)
{
    store_user u;
    if (user_of(ad, req, &u) != 1)
        return;
    fhir_error err;
    fhir_error_clear(&err);
    int rc;
    if (what == 2) {
        fhir_arena *a = fhir_arena_new(0);
        fhir_node *in = body_object(req, a);
        role r;
        const char *rname = in ? fhir_node_str(fhir_node_get(in, "role")) : NULL;
        if (!in) {
            fhir_arena_free(a);
            store_user_free(&u);
            return;
        }
        rc = !rname || role_parse(rname, &r)
                 ? fhir_error_set(&err, "role must be viewer, clinician, intake or admin")
                 : access_user_set_role(serve_access(req), u.name, r, serve_principal(req), &err);
        fhir_arena_free(a);
    } else {
        rc = access_user_disable(serve_access(req), u.name, what == 1, serve_principal(req), &err);
    }
    if (rc)
        serve_error(req, 400, err.msg);
    else
        send_user(ad, req, u.name);
    store_user_free(&u);
}

static void h_user_disable(serve_req *req, void *ud)
{
    user_change(req, ud, 1);
}

static void h_user_enable(serve_req *req, void *ud)
{
    user_change(req, ud, 0);
}

static void h_user_role(serve_req *req, void *ud)
{
    user_change(req, ud, 2);
}

/* ---- routes -------------------------------------------------------------------------------- */


static void json_status(serve_req *req, int code, const char *key, bool value)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = fhir_node_new(a, FHIR_OBJECT);
    if (!strcmp(key, "status"))
        put_str(a, root, key, "ok");
    else
        fhir_node_set(a, root, key, fhir_node_new_bool(a, value));
    send_node(req, code, root);
    fhir_arena_free(a);
}

static void h_healthz(serve_req *req, void *ud)
{
    (void)ud;
    json_status(req, 200, "status", true);
}

static void h_readyz(serve_req *req, void *ud)
{
    admin *ad = ud;
    size_t n = 0;
    bool ready = ad->env.ready(ad->env.ud, &n);
    json_status(req, ready ? 200 : 503, "ready", ready);
}

static void h_metrics(serve_req *req, void *ud)
{
    metrics(ud, req);
}

static void h_patients(serve_req *req, void *ud)
{
    patients_list(ud, req);
}

static void h_patient(serve_req *req, void *ud)
{
    const char *id = serve_param(req, "id");
    if (!serve_id_ok(id))
        serve_error(req, 400, "bad patient id");
    else
        patient_one(ud, req, id);
}

static void h_referrals(serve_req *req, void *ud)
{
    referrals_list(ud, req);
}

static void h_referral(serve_req *req, void *ud)
{
    referral_one(ud, req, -1, ROLE_VIEWER);
}

static void h_approve(serve_req *req, void *ud)
{
    referral_one(ud, req, REFER_ACT_APPROVE, ROLE_CLINICIAN);
}

static void h_decline(serve_req *req, void *ud)
{
    referral_one(ud, req, REFER_ACT_DECLINE, ROLE_CLINICIAN);
}

static void h_cancel(serve_req *req, void *ud)
{
    referral_one(ud, req, REFER_ACT_CANCEL, ROLE_CLINICIAN);
}

static void h_retry(serve_req *req, void *ud)
{
    referral_one(ud, req, REFER_ACT_RETRY, ROLE_ADMIN);
}

/* What was (or will be) sent to the center: the stored transaction Bundle, as is. */
static void h_payload(serve_req *req, void *ud)
{
    admin *ad = ud;
    int64_t id;
    if (!serve_parse_id(serve_param(req, "id"), &id)) {
        serve_error(req, 400, "bad referral id (a positive integer)");
        return;
    }
    fhir_error err;
    fhir_error_clear(&err);
    refer_record r;
    int found = refer_get(ad->env.st, id, &r, &err);
    if (found < 0) {
        serve_error(req, 500, err.msg);
        return;
    }
    if (found == 0) {
        serve_error(req, 404, "no such referral");
        return;
    }
    if (!r.payload)
        serve_error(req, 404, "this referral has no package yet");
    else
        serve_reply(req, 200, "application/fhir+json", r.payload, strlen(r.payload));
    refer_record_free(&r);
}

/* The answer of a re-screen: {"patient": ID, "rescreen": "queued"} or {"patients": N,
 * "rescreen": "queued"} (202). */
static void send_queued(serve_req *req, const char *pid, int64_t n)
{
    fhir_buf b;
    fhir_buf_init(&b, ADMIN_RESCREEN_MAX);
    if (pid) {
        fhir_buf_puts(&b, "{\"patient\":");
        fhir_json_write_string(&b, pid, strlen(pid));
    } else {
        fhir_buf_printf(&b, "{\"patients\":%lld", (long long)n);
    }
    fhir_buf_puts(&b, ",\"rescreen\":\"queued\"}");
    if (b.overflow)
        serve_error(req, 500, "response too large");
    else
        serve_json(req, 202, &b);
    fhir_buf_free(&b);
}

/* Marks one patient (pid) or everyone with cached data (pid NULL) for screening on the
 * daemon's next pass, audited with the person (action rescreen / rescreen-all, the patient id
 * or the count as detail, the reason of the body). */
static void rescreen(admin *ad, serve_req *req, const char *pid, role need)
{
    fhir_arena *a = fhir_arena_new(0);
    bool bad;
    const char *reason = body_reason(req, a, &bad);
    const access_principal *p = serve_principal(req);
    if (bad || !p) {
        serve_error(req, 400, "the body must be empty, JSON {\"reason\": \"...\"} or a form with a reason field");
        fhir_arena_free(a);
        return;
    }
    store_actor who = access_actor(p, reason);
    who.role = acted_role(p, need);
    fhir_error err;
    fhir_error_clear(&err);
    int64_t n = 0;
    char detail[96];
    int rc = store_begin(ad->env.st, &err);
    if (rc == 0 && pid) {
        rc = store_dirty_mark(ad->env.st, pid, &err);
        snprintf(detail, sizeof detail, "%s", pid);
    } else if (rc == 0) {
        rc = store_dirty_mark_all(ad->env.st, &n, &err);
        snprintf(detail, sizeof detail, "%lld patients", (long long)n);
    }
    if (rc == 0)
        rc = store_audit_actor(ad->env.st, &who, pid ? "rescreen" : "rescreen-all", 0, NULL, NULL, detail, &err);
    if (rc == 0)
        rc = store_commit(ad->env.st, &err);
    else
        store_rollback(ad->env.st);
    fhir_arena_free(a);
    if (rc) {
        serve_error(req, 500, err.msg);
        return;
    }
    if (pid)
        fhir_log(FHIR_LOG_INFO, "patient.rescreen", "patient=%s user=%lld", pid, (long long)p->user_id);
    else
        fhir_log(FHIR_LOG_INFO, "patient.rescreen_all", "patients=%lld user=%lld", (long long)n,
                 (long long)p->user_id);
    send_queued(req, pid, n);
}

/* POST /api/v1/patients/{id}/rescreen: screens a patient again on the daemon's next pass (the
 * cached resources, today's rules). */
static void h_rescreen(serve_req *req, void *ud)
{
    admin *ad = ud;
    const char *pid = serve_param(req, "id");
    if (!serve_id_ok(pid)) {
        serve_error(req, 400, "bad patient id");
        return;
    }
    fhir_error err;
    fhir_error_clear(&err);
    char *cat = NULL;
    int known = store_verdict_get(ad->env.st, pid, NULL, &cat, NULL, &err);
    free(cat);
    if (known < 0) {
        serve_error(req, 500, err.msg);
        return;
    }
    if (known == 0) {
        serve_error(req, 404, "no such patient (never screened)");
        return;
    }
    int64_t cached = store_resource_count(ad->env.st, pid);
    if (cached < 0) {
        serve_error(req, 500, "resource count failed");
        return;
    }
    if (cached == 0) {
        /* screening nothing would remove the verdict: keep it until new data arrives */
        serve_error(req, 409, "nothing of this patient is cached (store.retention removed it); the patient "
                              "is screened again when new data arrives");
        return;
    }
    rescreen(ad, req, pid, ROLE_CLINICIAN);
}

/* POST /api/v1/patients/rescreen: everyone with cached data, on the daemon's next passes
 * (admin: it re-screens the whole population, an operator's act after a mapping or data fix,
 * not a clinical decision about one patient). */
static void h_rescreen_all(serve_req *req, void *ud)
{
    rescreen(ud, req, NULL, ROLE_ADMIN);
}

static void h_audit(serve_req *req, void *ud)
{
    audit_list(ud, req);
}

/* The role of each act must match the one its handler records (h_approve ... h_retry). */
static const serve_route ROUTES[] = {
    {"GET", "/healthz", ROLE_PUBLIC, h_healthz, 0},
    {"GET", "/readyz", ROLE_PUBLIC, h_readyz, 0},
    {"GET", "/metrics", ROLE_VIEWER, h_metrics, 0},
    {"GET", "/api/v1/patients", ROLE_VIEWER, h_patients, 0},
    {"GET", "/api/v1/patients/{id}", ROLE_VIEWER, h_patient, 0},
    {"GET", "/api/v1/referrals", ROLE_VIEWER, h_referrals, 0},
    {"GET", "/api/v1/referrals/{id}", ROLE_VIEWER, h_referral, 0},
    {"GET", "/api/v1/referrals/{id}/payload", ROLE_VIEWER, h_payload, 0},
    {"POST", "/api/v1/patients/rescreen", ROLE_ADMIN, h_rescreen_all, 0},
    {"POST", "/api/v1/patients/{id}/rescreen", ROLE_CLINICIAN, h_rescreen, 0},
    {"POST", "/api/v1/referrals/{id}/approve", ROLE_CLINICIAN, h_approve, 0},
    {"POST", "/api/v1/referrals/{id}/decline", ROLE_CLINICIAN, h_decline, 0},
    {"POST", "/api/v1/referrals/{id}/cancel", ROLE_CLINICIAN, h_cancel, 0},
    {"POST", "/api/v1/referrals/{id}/retry", ROLE_ADMIN, h_retry, 0},
    {"GET", "/api/v1/audit", ROLE_ADMIN, h_audit, 0},
    {"GET", "/api/v1/users", ROLE_ADMIN, h_users, 0},
    {"POST", "/api/v1/users/{name}/disable", ROLE_ADMIN, h_user_disable, 0},
    {"POST", "/api/v1/users/{name}/enable", ROLE_ADMIN, h_user_enable, 0},
    {"POST", "/api/v1/users/{name}/role", ROLE_ADMIN, h_user_role, 0},
    {"GET", "/api/v1/users/{name}/tokens", ROLE_ADMIN, h_tokens, 0},
    {"POST", "/api/v1/users/{name}/tokens", ROLE_ADMIN, h_token_new, 0},
    {"POST", "/api/v1/users/{name}/tokens/{id}/revoke", ROLE_ADMIN, h_token_revoke, 0},
};

const serve_route *admin_routes(size_t *n)
{
    *n = sizeof ROUTES / sizeof ROUTES[0];
    return ROUTES;
}

admin *admin_new(const admin_env *env)
{
    admin *ad = fhir_xcalloc(1, sizeof *ad);
    ad->env = *env;
    return ad;
}

int admin_add_routes(admin *a, serve *s, fhir_error *err)
{
    a->srv = s;
    return serve_add_routes(s, ROUTES, sizeof ROUTES / sizeof ROUTES[0], a, err);
}

void admin_free(admin *a)
{
    free(a);
}
