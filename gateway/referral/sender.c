/* sender — per-destination outbox queues with recovery, and the Task poller, asynchronous on
 * an event_base. */
#include "sender.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bser.h"
#include "crashpoint.h"
#include "fhir_alloc.h"
#include "fhir_client.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "referral.h"

#define RESPONSE_KEEP_BYTES (64u * 1024u)

typedef struct due {
    int64_t id;
    bool cancel;         /* cancel its Task at the center (a re-route was approved) */
    refer_state state;
    char center[128];
    int attempts;
    int64_t next_ms;
} due;

typedef struct due_list {
    due *v;
    size_t n, alloc;
} due_list;

struct center_q;

/* One lane of a center: its own queue of referrals and in-flight count. */
typedef struct lane {
    due *v;              /* owned; loaded by a pass when the lane was idle */
    size_t n, next;
    unsigned inflight;
    unsigned recovering; /* in-flight jobs that started in `sending` (recovery) */
    bool blocked;        /* transient failure or local error: the rest waits */
    sender_stats st;     /* this drain only, logged when it ends */
} lane;

typedef struct center_q {
    char *center_id;
    fhir_client *client;
    lane send, poll;
} center_q;

enum job_step { STEP_SEARCH_SR, STEP_SEARCH_TASK, STEP_POST, STEP_POLL, STEP_HISTORY,
                STEP_CANCEL_GET, STEP_CANCEL_PUT };

/* Versions of a Task read from its history at most (the steps since the last read). */
#define TASK_HISTORY_MAX 100

typedef struct job {
    sender *snd;
    center_q *q;
    lane *ln;
    due d;
    enum job_step step;
    bool recovery;
    refer_record r;
    fhir_arena *a;
    fhir_node *payload;
    char sr_ident[512], task_ident[512];
    char sr_ref[300], task_ref[300];
    char *put_body;      /* STEP_CANCEL_PUT: the Task with status cancelled */
    /* STEP_HISTORY: the Task as the poll read it, and the version read before it */
    char task_status[40], task_bs[40], task_vid[64], seen_vid[64];
    bool has_bs, seen_known;
    char if_match[64];
    struct job *prev, *next; /* sender's list of in-flight jobs */
} job;

struct sender {
    store *st;
    sender_opts o;
    struct event_base *base; /* the given one, or own_base */
    struct event_base *own_base;
    center_q *qs;
    size_t n_qs, alloc_qs;
    job *jobs;
    sender_stats total; /* cumulative */
    bool has_err;
    fhir_error err;     /* first local failure since the last pass start */
    int64_t poll_after; /* round-robin cursor of the Task poller */
};

sender *sender_new(store *s, const sender_opts *opts, fhir_error *err)
{
    if (!opts || !opts->centers) {
        fhir_error_set(err, "sender: a center directory is required");
        return NULL;
    }
    sender *snd = fhir_xcalloc(1, sizeof *snd);
    snd->st = s;
    snd->o = *opts;
    if (!snd->o.backoff_base_ms)
        snd->o.backoff_base_ms = 2000;
    if (!snd->o.backoff_cap_ms)
        snd->o.backoff_cap_ms = 5 * 60 * 1000;
    if (!snd->o.timeout_ms)
        snd->o.timeout_ms = 30000;
    if (!snd->o.max_in_flight)
        snd->o.max_in_flight = 1;
    if (!snd->o.poll_in_flight)
        snd->o.poll_in_flight = 2;
    if (!snd->o.poll_max_per_pass)
        snd->o.poll_max_per_pass = 500;
    snd->base = opts->base;
    if (!snd->base) {
        snd->own_base = event_base_new();
        if (!snd->own_base)
            abort();
        snd->base = snd->own_base;
    }
    /* one queue per directory entry at most; jobs point into this array, so it never grows */
    snd->alloc_qs = opts->centers->n + 1;
    snd->qs = fhir_xcalloc(snd->alloc_qs, sizeof *snd->qs);
    return snd;
}

static void job_free(job *j)
{
    free(j->put_body);
    fhir_arena_free(j->a);
    refer_record_free(&j->r);
    free(j);
}

void sender_free(sender *snd)
{
    if (!snd)
        return;
    /* pending operations are dropped without their callbacks; their referrals stay in
     * `sending` and are looked up at the center before any resend */
    for (size_t i = 0; i < snd->n_qs; i++) {
        fhir_client_free(snd->qs[i].client);
        free(snd->qs[i].center_id);
        free(snd->qs[i].send.v);
        free(snd->qs[i].poll.v);
    }
    free(snd->qs);
    for (job *j = snd->jobs, *nx; j; j = nx) {
        nx = j->next;
        job_free(j);
    }
    if (snd->own_base)
        event_base_free(snd->own_base);
    free(snd);
}

bool sender_busy(const sender *snd)
{
    return snd && snd->jobs != NULL;
}

static fhir_client *new_client(sender *snd, const centers_center *c, fhir_error *err)
{
    fhir_client_config cfg = {
        .name = c->id,
        .base_url = c->fhir_base,
        .format = FHIR_FORMAT_JSON,
        .total_timeout_ms = snd->o.timeout_ms,
        .connect_timeout_ms = snd->o.timeout_ms < 10000 ? snd->o.timeout_ms : 10000,
        .max_concurrent = snd->o.max_in_flight + snd->o.poll_in_flight,
        .retry = snd->o.retry,
        .ca_file = snd->o.ca_file,
    };
    switch (c->auth.type) {
    case CENTERS_AUTH_NONE:
        cfg.auth.kind = FHIR_AUTH_NONE;
        break;
    case CENTERS_AUTH_BEARER:
        cfg.auth.kind = FHIR_AUTH_BEARER;
        cfg.auth.bearer_file = c->auth.token_file;
        cfg.auth.bearer_env = c->auth.token_env;
        break;
    case CENTERS_AUTH_SMART_BACKEND:
        cfg.auth.kind = FHIR_AUTH_SMART;
        cfg.auth.smart_client_id = c->auth.client_id;
        cfg.auth.smart_key_file = c->auth.key_file;
        cfg.auth.smart_kid = c->auth.key_id;
        cfg.auth.smart_scope = c->auth.scope;
        cfg.auth.smart_token_url = c->auth.token_url;
        break;
    }
    fhir_client *cl = fhir_client_new(snd->base, &cfg, err);
    if (!cl)
        fhir_error_prefix(err, "center %s", c->id);
    return cl;
}

/* The queue of a center, created on first use with its client. NULL with err when the
 * client cannot be made (bad auth material). Borrowed, valid until sender_free(). */
static center_q *queue_for(sender *snd, const centers_center *c, fhir_error *err)
{
    for (size_t i = 0; i < snd->n_qs; i++)
        if (!strcmp(snd->qs[i].center_id, c->id))
            return &snd->qs[i];
    fhir_client *cl = new_client(snd, c, err);
    if (!cl)
        return NULL;
    if (snd->n_qs == snd->alloc_qs)
        abort(); /* broken invariant: more queues than directory entries */
    center_q *q = &snd->qs[snd->n_qs++];
    memset(q, 0, sizeof *q);
    q->center_id = fhir_xstrdup(c->id);
    q->client = cl;
    return q;
}


static bool transient_status(long status)
{
    return status == 0 || status == 408 || status == 429 || status >= 500;
}

static int64_t backoff_ms(const sender *snd, int attempts)
{
    int64_t d = snd->o.backoff_base_ms;
    for (int i = 0; i < attempts && d < snd->o.backoff_cap_ms; i++)
        d *= 2;
    return d < snd->o.backoff_cap_ms ? d : snd->o.backoff_cap_ms;
}

/* Response text kept for the operator: the JSON body, capped. Caller frees. */
static char *response_text(const fhir_client_result *res)
{
    if (!res->body)
        return NULL;
    return fhir_json_to_string(res->body, FHIR_JSON_COMPACT, RESPONSE_KEEP_BYTES);
}

/* "system|value" of the PLAC identifier of the payload's entry of `type`. */
static int payload_identifier(const fhir_node *bundle, const char *type, char *out, size_t n)
{
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next) {
        const char *rt = fhir_node_path_str(e, "resource.resourceType");
        if (!rt || strcmp(rt, type))
            continue;
        const char *q = fhir_node_path_str(e, "request.ifNoneExist");
        if (q && !strncmp(q, "identifier=", 11)) {
            snprintf(out, n, "%s", q + 11);
            return 0;
        }
    }
    return -1;
}

/* URL-encodes the characters of an identifier token that matter in a query string. */
static void query_escape(const char *s, char *out, size_t n)
{
    size_t j = 0;
    for (; *s && j + 4 < n; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '|' || ch == '&' || ch == '#' || ch == '+' || ch == ' ' || ch == '%' ||
            ch == '?') {
            snprintf(out + j, n - j, "%%%02X", ch);
            j += 3;
        } else {
            out[j++] = (char)ch;
        }
    }
    out[j] = '\0';
}

/* Records the first local (store) failure; the lane stops, the pass reports it. */
static void local_error(sender *snd, lane *ln, const fhir_error *e)
{
    if (!snd->has_err) {
        snd->has_err = true;
        snd->err = *e;
    }
    fhir_log(FHIR_LOG_ERROR, "sender.store_failed", "error=%s", e->msg);
    if (ln)
        ln->blocked = true;
}

static void count(sender *snd, lane *ln, size_t off)
{
    if (ln)
        (*(unsigned *)((char *)&ln->st + off))++;
    (*(unsigned *)((char *)&snd->total + off))++;
}
#define COUNT(snd, ln, field) count((snd), (ln), offsetof(sender_stats, field))

/* Moves an approved referral through `sending` into `failed` (no HTTP involved). */
static void fail_now(sender *snd, lane *ln, const due *d, long status, const char *msg)
{
    fhir_error e;
    fhir_error_clear(&e);
    if (d->state == REFER_APPROVED &&
        refer_transition(snd->st, d->id, REFER_SENDING, "sender", NULL, &e)) {
        local_error(snd, ln, &e);
        return;
    }
    COUNT(snd, ln, failed);
    fhir_log(FHIR_LOG_WARN, "referral.failed", "referral=%lld center=%s status=%ld",
             (long long)d->id, d->center, status);
    if (refer_mark_failed(snd->st, d->id, (int)status, msg, NULL, &e))
        local_error(snd, ln, &e);
}

/* Records a transient failure; the rest of the center's queue waits for the next pass. */
static void transient(job *j, long status, const char *msg, char *resp)
{
    sender *snd = j->snd;
    int64_t next = fhir_clock_now_ms() + backoff_ms(snd, j->d.attempts);
    COUNT(snd, j->ln, transient);
    j->ln->blocked = true;
    fhir_log(FHIR_LOG_WARN, "referral.transient", "referral=%lld center=%s status=%ld",
             (long long)j->d.id, j->d.center, status);
    fhir_error e;
    fhir_error_clear(&e);
    if (refer_record_attempt(snd->st, j->d.id, (int)status, msg, resp, next, &e))
        local_error(snd, j->ln, &e);
    free(resp);
}

/* An approved referral that cannot be made ready to send (its texts not composed: the cause
 * recorded on the row; or its Bundle not built from its package): the attempt is recorded with
 * the cause in words and the next one waits for the backoff; it stays approved. */
static void unprepared(sender *snd, lane *ln, job *j)
{
    char msg[REFER_COMPOSE_ERROR_MAX + 64];
    if (j->r.compose_cause != REFER_COMPOSE_OK)
        snprintf(msg, sizeof msg, "could not be prepared: %s",
                 j->r.compose_error ? j->r.compose_error : refer_compose_cause_name(j->r.compose_cause));
    else
        snprintf(msg, sizeof msg, "could not be prepared: its Bundle could not be built from the prepared "
                                  "package (the patient's record is no longer held here); it is tried again");
    int64_t next = fhir_clock_now_ms() + backoff_ms(snd, j->r.attempts);
    COUNT(snd, ln, unprepared);
    COUNT(snd, ln, waiting);
    fhir_log(FHIR_LOG_WARN, "referral.unprepared", "referral=%lld center=%s cause=%s attempts=%d",
             (long long)j->d.id, j->d.center,
             j->r.compose_cause != REFER_COMPOSE_OK ? refer_compose_cause_name(j->r.compose_cause)
                                                    : "payload_not_built",
             j->r.attempts + 1);
    fhir_error e;
    fhir_error_clear(&e);
    if (refer_record_attempt(snd->st, j->d.id, 0, msg, NULL, next, &e))
        local_error(snd, ln, &e);
}

static void lane_pump(sender *snd, center_q *q, lane *ln);

static void job_done(job *j)
{
    sender *snd = j->snd;
    center_q *q = j->q;
    lane *ln = j->ln;
    ln->inflight--;
    if (j->recovery)
        ln->recovering--;
    if (j->prev)
        j->prev->next = j->next;
    else
        snd->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    job_free(j);
    lane_pump(snd, q, ln);
}

static void on_http(void *ud, fhir_client_result *res);

/* Submits the job's current step. 0 when in flight; -1 when it could not be queued (the job
 * has then been finished as a transient failure). */
static int job_submit(job *j)
{
    char path[800];
    fhir_client_request rq = {.method = "GET", .path = path};
    if (j->step == STEP_SEARCH_SR || j->step == STEP_SEARCH_TASK) {
        char esc[600];
        query_escape(j->step == STEP_SEARCH_SR ? j->sr_ident : j->task_ident, esc, sizeof esc);
        snprintf(path, sizeof path, "%s?identifier=%s",
                 j->step == STEP_SEARCH_SR ? "ServiceRequest" : "Task", esc);
    } else if (j->step == STEP_POST) {
        rq.method = "POST";
        rq.path = "";
        rq.body = j->r.payload;
        rq.body_len = strlen(j->r.payload);
    } else if (j->step == STEP_CANCEL_PUT) {
        rq.method = "PUT";
        snprintf(path, sizeof path, "%s", j->r.center_task_ref);
        rq.body = j->put_body;
        rq.body_len = strlen(j->put_body);
        rq.if_match = j->if_match[0] ? j->if_match : NULL;
    } else if (j->step == STEP_HISTORY) {
        snprintf(path, sizeof path, "%s/_history?_count=%d", j->r.center_task_ref, TASK_HISTORY_MAX);
    } else {
        snprintf(path, sizeof path, "%s", j->r.center_task_ref);
    }
    fhir_error e;
    fhir_error_clear(&e);
    if (fhir_client_send(j->q->client, &rq, on_http, j, &e) == 0)
        return 0;
    if (j->step == STEP_HISTORY)
        return -1; /* the caller applies the poll's answer alone */
    if (j->step == STEP_POLL || j->step == STEP_CANCEL_GET) {
        j->ln->blocked = true;
    } else {
        char msg[FHIR_ERROR_MAX + 32];
        snprintf(msg, sizeof msg, "HTTP 0: %s", e.msg);
        transient(j, 0, msg, NULL);
    }
    return -1;
}

/* Search answer: 1 found (ref_out = "Type/id"), 0 absent, -1 failed (*status, msg). */
static int search_result(const fhir_client_result *res, const char *type, const char *ident,
                         char *ref_out, size_t ref_n, long *status, char *msg, size_t msg_n)
{
    *status = res->status;
    if (res->err.msg[0] || res->status != 200) {
        snprintf(msg, msg_n, "search %s by identifier: %s", type,
                 res->err.msg[0] ? res->err.msg : "unexpected status");
        return -1;
    }
    size_t n = 0;
    const char *id = NULL;
    for (const fhir_node *e = fhir_node_first(fhir_node_get(res->body, "entry")); e;
         e = e->next) {
        const char *mode = fhir_node_path_str(e, "search.mode");
        if (mode && strcmp(mode, "match"))
            continue;
        n++;
        id = fhir_node_path_str(e, "resource.id");
    }
    if (n > 1) {
        *status = 412;
        snprintf(msg, msg_n, "%zu %s resources at the center carry identifier %s", n, type, ident);
        return -1;
    }
    if (n == 1 && id) {
        snprintf(ref_out, ref_n, "%s/%s", type, id);
        return 1;
    }
    return 0;
}

static void on_search(job *j, fhir_client_result *res)
{
    sender *snd = j->snd;
    bool sr = j->step == STEP_SEARCH_SR;
    long status = 0;
    char msg[FHIR_ERROR_MAX + 600];
    int found = search_result(res, sr ? "ServiceRequest" : "Task", sr ? j->sr_ident : j->task_ident,
                              sr ? j->sr_ref : j->task_ref, sizeof j->sr_ref, &status, msg,
                              sizeof msg);
    fhir_error e;
    fhir_error_clear(&e);
    if (found < 0) {
        if (transient_status(status)) {
            transient(j, status, msg, NULL);
        } else {
            COUNT(snd, j->ln, failed);
            if (refer_mark_failed(snd->st, j->d.id, (int)status, msg, NULL, &e))
                local_error(snd, j->ln, &e);
        }
    } else if (found == 1 && sr) {
        j->step = STEP_SEARCH_TASK;
        if (job_submit(j) == 0)
            return;
    } else if (found == 1) {
        COUNT(snd, j->ln, recovered);
        fhir_log(FHIR_LOG_INFO, "referral.recovered", "referral=%lld center=%s",
                 (long long)j->d.id, j->d.center);
        if (refer_mark_sent(snd->st, j->d.id, j->sr_ref, j->task_ref,
                            "found at the center by placer identifier before resending", &e))
            local_error(snd, j->ln, &e);
    } else {
        /* not (entirely) there: resend; every entry is a conditional create */
        j->step = STEP_POST;
        if (job_submit(j) == 0)
            return;
    }
    job_done(j);
}

static void on_post(job *j, fhir_client_result *res)
{
    sender *snd = j->snd;
    char sr_ref[256], task_ref[256];
    fhir_error berr, e;
    fhir_error_clear(&berr);
    fhir_error_clear(&e);
    if (!res->err.msg[0] && res->status == 200 && res->body &&
        bser_response_refs(j->payload, res->body, sr_ref, task_ref, &berr) == 0) {
        crashpoint("sender.posted");
        COUNT(snd, j->ln, sent);
        fhir_log(FHIR_LOG_INFO, "referral.sent", "referral=%lld center=%s", (long long)j->d.id,
                 j->d.center);
        if (refer_mark_sent(snd->st, j->d.id, sr_ref, task_ref, NULL, &e))
            local_error(snd, j->ln, &e);
    } else {
        long status = res->status;
        char msg[FHIR_ERROR_MAX + 600];
        char oo[512] = "";
        if (res->body)
            fhir_client_outcome_text(res->body, oo, sizeof oo);
        snprintf(msg, sizeof msg, "HTTP %ld: %s%s%s", status,
                 res->err.msg[0] ? res->err.msg : berr.msg[0] ? berr.msg : "unexpected answer",
                 oo[0] ? " — " : "", oo);
        char *resp = response_text(res);
        if (status == 200 || transient_status(status)) {
            /* 200 without usable locations is ambiguous too: search next pass */
            transient(j, status, msg, resp);
        } else {
            COUNT(snd, j->ln, failed);
            fhir_log(FHIR_LOG_WARN, "referral.failed", "referral=%lld center=%s status=%ld",
                     (long long)j->d.id, j->d.center, status);
            if (refer_mark_failed(snd->st, j->d.id, (int)status, msg, resp, &e))
                local_error(snd, j->ln, &e);
            free(resp);
        }
    }
    job_done(j);
}

/* The BSeR business status code of a Task (the first coding in the BSeR system, or without
 * a system); NULL when none. */
static const char *task_business_status(const fhir_node *task)
{
    for (const fhir_node *cd = fhir_node_first(fhir_node_path(task, "businessStatus.coding")); cd;
         cd = cd->next) {
        const char *sys = fhir_node_path_str(cd, "system");
        if (!sys || !strcmp(sys, BSER_BUSINESS_STATUS_SYSTEM))
            return fhir_node_path_str(cd, "code");
    }
    return NULL;
}

static bool same_text(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

/* Copies src into dst (n bytes); false when it does not fit. */
static bool keep(char *dst, size_t n, const char *src)
{
    return (size_t)snprintf(dst, n, "%s", src) < n;
}

/* Is version b the one right after a (both whole numbers, as the center counts them)? */
static bool next_version(const char *a, const char *b)
{
    char *ea, *eb;
    long long x = strtoll(a, &ea, 10), y = strtoll(b, &eb, 10);
    return *a && *b && !*ea && !*eb && y == x + 1;
}

/* The poll's Task applied, and its version remembered as read (written only when it is not
 * the one remembered: a poll that finds nothing new writes nothing). */
static void apply_polled(job *j, const char *status, const char *bs, const char *vid)
{
    sender *snd = j->snd;
    bool changed = false;
    fhir_error e;
    fhir_error_clear(&e);
    bool seen = j->seen_known && vid && !strcmp(vid, j->seen_vid);
    if (refer_apply_task(snd->st, j->d.id, status, bs, &changed, &e) ||
        (vid && *vid && !seen && store_task_seen_put(snd->st, j->d.id, vid, &e)))
        local_error(snd, j->ln, &e);
    if (changed)
        COUNT(snd, j->ln, changed);
}

static void on_poll(job *j, fhir_client_result *res)
{
    sender *snd = j->snd;
    if (res->err.msg[0] || res->status != 200 || !res->body) {
        j->ln->blocked = true;
        fhir_log(FHIR_LOG_WARN, "referral.poll_failed", "referral=%lld center=%s status=%ld",
                 (long long)j->d.id, j->d.center, res->status);
        job_done(j);
        return;
    }
    COUNT(snd, j->ln, polled);
    const char *status = fhir_node_path_str(res->body, "status");
    const char *bs = task_business_status(res->body);
    const char *vid = fhir_node_path_str(res->body, "meta.versionId");
    fhir_error e;
    fhir_error_clear(&e);
    int known = vid ? store_task_seen_get(snd->st, j->d.id, j->seen_vid, sizeof j->seen_vid, &e) : 0;
    if (known < 0) {
        local_error(snd, j->ln, &e);
        job_done(j);
        return;
    }
    j->seen_known = known == 1;
    /* The Task moved on since the site last read it, and by more than one step (or by an
     * unknown number: versions that are not counts, or none read yet): its history tells each
     * step (accepted, then scheduled, between two polls), so each is recorded in order. */
    bool moved = !same_text(status, j->r.task_status) || !same_text(bs, j->r.business_status);
    bool one_step = j->seen_known && (!strcmp(j->seen_vid, vid) || next_version(j->seen_vid, vid));
    if (vid && *vid && moved && !one_step && keep(j->task_vid, sizeof j->task_vid, vid) &&
        keep(j->task_status, sizeof j->task_status, status ? status : "") &&
        keep(j->task_bs, sizeof j->task_bs, bs ? bs : "")) {
        j->has_bs = bs != NULL;
        j->step = STEP_HISTORY;
        if (job_submit(j) == 0)
            return;
        /* not sent: the poll's answer alone, as before the history */
        j->step = STEP_POLL;
    }
    apply_polled(j, status, bs, vid);
    job_done(j);
}

typedef struct hist_version {
    const fhir_node *t;
    int64_t ms;   /* meta.lastUpdated; INT64_MIN when absent or not an instant */
    size_t order; /* its place in the Bundle */
} hist_version;

static int newest_first(const void *pa, const void *pb)
{
    const hist_version *a = pa, *b = pb;
    if (a->ms != b->ms)
        return a->ms > b->ms ? -1 : 1;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* The Task's history after a poll found it moved on: the versions after the one last read,
 * applied oldest first, then the polled version itself. Without a usable history (a center
 * that keeps none, an error) the polled version alone, as before. */
static void on_history(job *j, fhir_client_result *res)
{
    sender *snd = j->snd;
    const char *status = j->task_status[0] ? j->task_status : NULL;
    const char *bs = j->has_bs ? j->task_bs : NULL;
    if (res->err.msg[0] || res->status != 200 || !res->body) {
        fhir_log(FHIR_LOG_INFO, "referral.history_unavailable", "referral=%lld center=%s status=%ld",
                 (long long)j->d.id, j->d.center, res->status);
        apply_polled(j, status, bs, j->task_vid);
        job_done(j);
        return;
    }
    /* The versions by meta.lastUpdated, newest first (the specification asks servers for that
     * order; the reference server does not always keep it), in the Bundle's order when equal */
    hist_version all[TASK_HISTORY_MAX];
    size_t m = 0;
    for (const fhir_node *e = fhir_node_first(fhir_node_get(res->body, "entry")); e && m < TASK_HISTORY_MAX;
         e = e->next) {
        const fhir_node *t = fhir_node_get(e, "resource");
        if (!t || !fhir_node_path_str(t, "meta.versionId"))
            continue;
        const char *lu = fhir_node_path_str(t, "meta.lastUpdated");
        int64_t ms;
        all[m] = (hist_version){t, lu && fhir_clock_parse_instant(lu, &ms) == 0 ? ms : INT64_MIN, m};
        m++;
    }
    qsort(all, m, sizeof all[0], newest_first);
    /* the versions after the one last read; when none is remembered (a referral sent before
     * the site remembered versions), after the newest one that says what the site recorded
     * last; all when the site recorded nothing yet */
    const fhir_node *newer[TASK_HISTORY_MAX];
    size_t n = 0;
    for (size_t i = 0; i < m; i++) {
        const fhir_node *t = all[i].t;
        if (j->seen_known ? !strcmp(fhir_node_path_str(t, "meta.versionId"), j->seen_vid)
                          : j->r.task_status && same_text(fhir_node_path_str(t, "status"), j->r.task_status) &&
                                same_text(task_business_status(t), j->r.business_status))
            break;
        newer[n++] = t;
    }
    fhir_error e;
    fhir_error_clear(&e);
    for (size_t i = n; i-- > 0;) {
        const fhir_node *t = newer[i];
        const char *v = fhir_node_path_str(t, "meta.versionId");
        if (!strcmp(v, j->task_vid))
            continue; /* the polled version: applied below */
        bool changed = false;
        if (refer_apply_task_at(snd->st, j->d.id, fhir_node_path_str(t, "status"), task_business_status(t),
                                fhir_node_path_str(t, "meta.lastUpdated"), &changed, &e)) {
            local_error(snd, j->ln, &e);
            job_done(j);
            return;
        }
        if (changed)
            COUNT(snd, j->ln, changed);
    }
    apply_polled(j, status, bs, j->task_vid);
    job_done(j);
}

/* The Task read before cancelling it at the center. */
static void on_cancel_get(job *j, fhir_client_result *res)
{
    sender *snd = j->snd;
    fhir_error e;
    fhir_error_clear(&e);
    long status = res->status;
    if (!res->err.msg[0] && (status == 404 || status == 410)) {
        COUNT(snd, j->ln, cancelled);
        if (refer_mark_cancelled_at_center(snd->st, j->d.id,
                                           "its Task is not at the center (404/410)", &e))
            local_error(snd, j->ln, &e);
        else
            fhir_log(FHIR_LOG_INFO, "referral.cancelled_at_center",
                     "referral=%lld center=%s task=absent", (long long)j->d.id, j->d.center);
        job_done(j);
        return;
    }
    if (res->err.msg[0] || status != 200 || !res->body) {
        char msg[FHIR_ERROR_MAX + 64];
        snprintf(msg, sizeof msg, "cancel: reading the Task: HTTP %ld %s", status, res->err.msg);
        transient(j, status, msg, NULL);
        job_done(j);
        return;
    }
    const char *ts = fhir_node_path_str(res->body, "status");
    refer_state implied;
    if (ts && refer_state_from_task(ts, NULL, &implied) == 0 && refer_state_terminal(implied)) {
        /* over at the center already */
        char detail[160];
        snprintf(detail, sizeof detail, "Task already %s at the center", ts);
        if (implied == REFER_CANCELLED) {
            COUNT(snd, j->ln, cancelled);
            if (refer_mark_cancelled_at_center(snd->st, j->d.id, detail, &e))
                local_error(snd, j->ln, &e);
        } else {
            bool changed = false;
            if (refer_apply_task(snd->st, j->d.id, ts, NULL, &changed, &e) ||
                refer_cancel_request_clear(snd->st, j->d.id, detail, &e))
                local_error(snd, j->ln, &e);
        }
        job_done(j);
        return;
    }
    if (ts && (!strcmp(ts, "failed") || !strcmp(ts, "entered-in-error"))) {
        bool changed = false;
        if (refer_apply_task(snd->st, j->d.id, ts, NULL, &changed, &e))
            local_error(snd, j->ln, &e);
        job_done(j); /* failed: the next pass cancels it here (no Task open at the center) */
        return;
    }
    /* the same Task, member order kept, with status cancelled */
    fhir_node *t = fhir_node_new(j->a, FHIR_OBJECT);
    for (const fhir_node *c = fhir_node_first(res->body); c; c = c->next)
        fhir_node_append(j->a, t, c->key, c->key_len,
                         fhir_node_key_is(c, "status") ? fhir_node_new_str(j->a, "cancelled")
                                                       : fhir_node_clone(j->a, c));
    const char *vid = fhir_node_path_str(res->body, "meta.versionId");
    if (vid)
        snprintf(j->if_match, sizeof j->if_match, "W/\"%s\"", vid);
    j->put_body = fhir_json_to_string(t, FHIR_JSON_COMPACT, RESPONSE_KEEP_BYTES * 16);
    if (!j->put_body) {
        transient(j, 0, "cancel: the Task is larger than its cap", NULL);
        job_done(j);
        return;
    }
    j->step = STEP_CANCEL_PUT;
    if (job_submit(j) == 0)
        return;
    job_done(j);
}

static void on_cancel_put(job *j, fhir_client_result *res)
{
    sender *snd = j->snd;
    fhir_error e;
    fhir_error_clear(&e);
    long status = res->status;
    if (!res->err.msg[0] && (status == 200 || status == 201)) {
        COUNT(snd, j->ln, cancelled);
        fhir_log(FHIR_LOG_INFO, "referral.cancelled_at_center", "referral=%lld center=%s task=%s",
                 (long long)j->d.id, j->d.center, j->r.center_task_ref);
        if (refer_mark_cancelled_at_center(snd->st, j->d.id, "Task.status cancelled at the center",
                                           &e))
            local_error(snd, j->ln, &e);
    } else {
        /* 412 (the Task changed since it was read), transient or refused: tried again on a
         * later pass, after the backoff; the re-route waits */
        char oo[512] = "";
        if (res->body)
            fhir_client_outcome_text(res->body, oo, sizeof oo);
        char msg[FHIR_ERROR_MAX + 600];
        snprintf(msg, sizeof msg, "cancel: HTTP %ld: %s%s%s", status,
                 res->err.msg[0] ? res->err.msg : "unexpected answer", oo[0] ? " — " : "", oo);
        if (!transient_status(status) && status != 412)
            fhir_log(FHIR_LOG_WARN, "referral.cancel_failed", "referral=%lld center=%s status=%ld",
                     (long long)j->d.id, j->d.center, status);
        transient(j, status, msg, response_text(res));
    }
    job_done(j);
}

static void on_http(void *ud, fhir_client_result *res)
{
    job *j = ud;
    switch (j->step) {
    case STEP_CANCEL_GET:
        on_cancel_get(j, res);
        break;
    case STEP_CANCEL_PUT:
        on_cancel_put(j, res);
        break;
    case STEP_SEARCH_SR:
    case STEP_SEARCH_TASK:
        on_search(j, res);
        break;
    case STEP_POST:
        on_post(j, res);
        break;
    case STEP_POLL:
        on_poll(j, res);
        break;
    case STEP_HISTORY:
        on_history(j, res);
        break;
    }
    fhir_client_result_free(res);
}

static bool start_poll(sender *snd, center_q *q, lane *ln, const due *d);

/* Is the referral a re-route replaces still open (1: the re-route waits), over (0), or
 * completed at its center (2: the patient was seen there, the re-route is not sent)? -1 on
 * error. */
static int predecessor_open(sender *snd, int64_t old_id, fhir_error *e)
{
    char st[32];
    int f = store_referral_state(snd->st, old_id, st, sizeof st, e);
    if (f <= 0)
        return f; /* gone: nothing to wait for */
    refer_state cur;
    if (refer_state_parse(st, &cur) != 0)
        return 0;
    if (cur == REFER_COMPLETED)
        return 2;
    return !refer_state_terminal(cur);
}

/* Starts one referral of a send lane. true when a job is now in flight. */
static bool start_send(sender *snd, center_q *q, lane *ln, const due *d)
{
    if (d->cancel)
        return start_poll(snd, q, ln, d); /* a Task read, then its update */
    job *j = fhir_xcalloc(1, sizeof *j);
    j->snd = snd;
    j->q = q;
    j->ln = ln;
    j->d = *d;
    fhir_error e;
    fhir_error_clear(&e);
    int f = refer_get(snd->st, d->id, &j->r, &e);
    if (f != 1) {
        if (f < 0)
            local_error(snd, ln, &e);
        free(j);
        return false;
    }
    if (j->r.state != REFER_APPROVED && j->r.state != REFER_SENDING) {
        job_free(j); /* moved on since the pass listed it (operator cancel) */
        return false;
    }
    if (j->r.state == REFER_APPROVED && j->r.supersedes > 0) {
        /* a re-route goes out only once the referral it replaces is over at its center */
        int open = predecessor_open(snd, j->r.supersedes, &e);
        if (open == 2) {
            char detail[160];
            snprintf(detail, sizeof detail, "referral %lld, which it replaces, was completed at its center: "
                     "nothing to re-route", (long long)j->r.supersedes);
            if (refer_transition(snd->st, d->id, REFER_CANCELLED, "sender", detail, &e))
                local_error(snd, ln, &e);
            job_free(j);
            return false;
        }
        if (open != 0) {
            if (open < 0)
                local_error(snd, ln, &e);
            else
                COUNT(snd, ln, waiting);
            job_free(j);
            return false;
        }
    }
    j->d.state = j->r.state;
    j->a = fhir_arena_new(0);
    fhir_error perr;
    fhir_error_clear(&perr);
    j->payload = j->r.payload ? fhir_json_parse(j->a, j->r.payload, strlen(j->r.payload), NULL,
                                                &perr)
                              : NULL;
    if (!j->payload ||
        payload_identifier(j->payload, "ServiceRequest", j->sr_ident, sizeof j->sr_ident) ||
        payload_identifier(j->payload, "Task", j->task_ident, sizeof j->task_ident)) {
        if (j->r.state == REFER_APPROVED && !j->r.payload &&
            (j->r.compose_cause != REFER_COMPOSE_OK || j->r.package)) {
            unprepared(snd, ln, j);
        } else if (j->r.state == REFER_APPROVED && !j->r.payload) {
            COUNT(snd, ln, waiting); /* the screener has not attached it yet */
        } else {
            char msg[FHIR_ERROR_MAX + 64];
            snprintf(msg, sizeof msg, "payload unusable: %s",
                     !j->r.payload ? "none stored"
                     : perr.msg[0] ? perr.msg
                                   : "no ServiceRequest/Task identifier");
            fail_now(snd, ln, &j->d, 0, msg);
        }
        job_free(j);
        return false;
    }
    /* a payload built from the proposal's package is stored before it first goes out: what
     * was sent is what is shown afterwards */
    if (refer_keep_payload(snd->st, &j->r, &e)) {
        local_error(snd, ln, &e);
        job_free(j);
        return false;
    }
    if (j->r.state == REFER_SENDING) {
        j->recovery = true; /* possibly already there: look before resending */
        j->step = STEP_SEARCH_SR;
    } else {
        if (refer_transition(snd->st, j->d.id, REFER_SENDING, "sender", NULL, &e)) {
            local_error(snd, ln, &e);
            job_free(j);
            return false;
        }
        j->step = STEP_POST;
    }
    ln->inflight++;
    if (j->recovery)
        ln->recovering++;
    j->next = snd->jobs;
    if (snd->jobs)
        snd->jobs->prev = j;
    snd->jobs = j;
    if (job_submit(j)) {
        job_done(j); /* recorded as transient; the lane is blocked */
        return false;
    }
    return true;
}

static bool start_poll(sender *snd, center_q *q, lane *ln, const due *d)
{
    job *j = fhir_xcalloc(1, sizeof *j);
    j->snd = snd;
    j->q = q;
    j->ln = ln;
    j->d = *d;
    j->step = d->cancel ? STEP_CANCEL_GET : STEP_POLL;
    if (d->cancel)
        j->a = fhir_arena_new(0);
    fhir_error e;
    fhir_error_clear(&e);
    int f = refer_get(snd->st, d->id, &j->r, &e);
    if (f != 1 || !j->r.center_task_ref) {
        if (f < 0)
            local_error(snd, ln, &e);
        if (f == 1)
            refer_record_free(&j->r);
        free(j);
        return false;
    }
    ln->inflight++;
    j->next = snd->jobs;
    if (snd->jobs)
        snd->jobs->prev = j;
    snd->jobs = j;
    if (job_submit(j)) {
        job_done(j);
        return false;
    }
    return true;
}

/* Starts what the lane may start; logs and resets the lane when its drain has ended. */
static void lane_pump(sender *snd, center_q *q, lane *ln)
{
    bool is_send = ln == &q->send;
    unsigned cap = is_send ? snd->o.max_in_flight : snd->o.poll_in_flight;
    while (!ln->blocked && ln->next < ln->n && ln->inflight < cap) {
        const due *d = &ln->v[ln->next];
        /* recovery first: nothing new goes out while a `sending` lookup is pending */
        if (is_send && d->state == REFER_APPROVED && ln->recovering)
            break;
        ln->next++;
        if (is_send)
            start_send(snd, q, ln, d);
        else
            start_poll(snd, q, ln, d);
    }
    if (ln->inflight || (!ln->blocked && ln->next < ln->n) || !ln->v)
        return;
    /* drain over: whatever was not reached waits for the next pass */
    for (size_t i = ln->next; i < ln->n; i++)
        if (is_send)
            COUNT(snd, ln, waiting);
    if (is_send) {
        if (ln->st.sent || ln->st.recovered || ln->st.transient || ln->st.failed ||
            ln->st.cancelled)
            fhir_log(FHIR_LOG_INFO, "sender.pass",
                     "center=%s sent=%u recovered=%u transient=%u failed=%u waiting=%u "
                     "cancelled=%u",
                     q->center_id, ln->st.sent, ln->st.recovered, ln->st.transient,
                     ln->st.failed, ln->st.waiting, ln->st.cancelled);
    } else if (ln->st.polled) {
        fhir_log(FHIR_LOG_INFO, "sender.tasks", "center=%s polled=%u changed=%u", q->center_id,
                 ln->st.polled, ln->st.changed);
    }
    free(ln->v);
    memset(ln, 0, sizeof *ln);
}

static int collect_due(void *ctx, const refer_record *r)
{
    due_list *l = ctx;
    if (l->n == l->alloc) {
        l->alloc = l->alloc ? l->alloc * 2 : 64;
        l->v = fhir_xrealloc(l->v, l->alloc * sizeof *l->v);
    }
    due *d = &l->v[l->n++];
    memset(d, 0, sizeof *d);
    d->id = r->id;
    d->state = r->state;
    snprintf(d->center, sizeof d->center, "%s", r->center_id);
    d->attempts = r->attempts;
    d->next_ms = r->next_attempt_ms;
    return 0;
}

static void lane_push(lane *ln, const due *d, size_t *alloc)
{
    if (ln->n == *alloc) {
        *alloc = *alloc ? *alloc * 2 : 16;
        ln->v = fhir_xrealloc(ln->v, *alloc * sizeof *ln->v);
    }
    ln->v[ln->n++] = *d;
}

/* Loads the idle lanes (send or poll) of every center from l, in order, then starts them.
 * Referrals of a center whose lane is still busy from an earlier pass are left for later. */
static void load_lanes(sender *snd, const due_list *l, bool is_send)
{
    int64_t now = fhir_clock_now_ms();
    size_t *allocs = calloc(snd->alloc_qs, sizeof *allocs);
    bool *loaded = calloc(snd->alloc_qs, sizeof *loaded);
    if (!allocs || !loaded)
        abort();
    for (size_t i = 0; i < l->n; i++) {
        const due *d = &l->v[i];
        const centers_center *c = centers_find(snd->o.centers, d->center);
        if (!c) {
            if (is_send) {
                char msg[300];
                snprintf(msg, sizeof msg, "center \"%s\" is not in the directory", d->center);
                fail_now(snd, NULL, d, 0, msg);
            }
            continue;
        }
        fhir_error cerr;
        fhir_error_clear(&cerr);
        center_q *q = queue_for(snd, c, &cerr);
        if (!q) {
            if (is_send)
                fail_now(snd, NULL, d, 0, cerr.msg);
            continue;
        }
        size_t qi = (size_t)(q - snd->qs);
        lane *ln = is_send ? &q->send : &q->poll;
        if (!loaded[qi] && ln->v) {
            if (is_send)
                snd->total.waiting++; /* that center's queue is still draining */
            continue;
        }
        loaded[qi] = true;
        if (is_send && d->next_ms > now) {
            snd->total.waiting++;
            continue;
        }
        lane_push(ln, d, &allocs[qi]);
    }
    for (size_t qi = 0; qi < snd->n_qs; qi++)
        if (loaded[qi]) {
            lane *ln = is_send ? &snd->qs[qi].send : &snd->qs[qi].poll;
            lane_pump(snd, &snd->qs[qi], ln);
        }
    free(allocs);
    free(loaded);
}

/* The referrals to cancel at their centers: those still open at a center join the list;
 * what needs no center is settled here. */
typedef struct cancel_collect_ctx {
    sender *snd;
    due_list *l;
    size_t first; /* where this call's entries start */
} cancel_collect_ctx;

static int collect_cancel(void *ctx, const refer_record *r)
{
    cancel_collect_ctx *c = ctx;
    if (r->state == REFER_SENDING)
        return 0; /* recovery resolves it to sent (or failed) first */
    if (r->state == REFER_SENT || r->state == REFER_ACCEPTED || r->state == REFER_SCHEDULED) {
        if (r->center_task_ref) {
            collect_due(c->l, r);
            c->l->v[c->l->n - 1].cancel = true;
            return 0;
        }
    }
    fhir_error e;
    fhir_error_clear(&e);
    int rc;
    if (refer_state_terminal(r->state))
        rc = refer_cancel_request_clear(c->snd->st, r->id, "already over", &e);
    else if (r->state == REFER_SENT || r->state == REFER_ACCEPTED || r->state == REFER_SCHEDULED)
        rc = refer_mark_cancelled_at_center(c->snd->st, r->id, "no Task reference was kept", &e);
    else
        rc = refer_transition(c->snd->st, r->id, REFER_CANCELLED, "sender",
                              "superseded; nothing of it open at the center", &e) ||
             refer_cancel_request_clear(c->snd->st, r->id, "cancelled here", &e);
    if (rc)
        local_error(c->snd, NULL, &e);
    return 0;
}

int sender_pass_start(sender *snd, fhir_error *err)
{
    due_list l = {0};
    /* recovery first: everything left in `sending`, then the approved queue (by the state
     * index, the small columns only: each job reads its full row when it starts) */
    refer_filter sending = {.state = REFER_SENDING, .summary = true};
    refer_filter approved = {.state = REFER_APPROVED, .summary = true};
    cancel_collect_ctx cc = {.snd = snd, .l = &l};
    if (refer_list(snd->st, &sending, collect_due, &l, err) < 0 ||
        refer_cancel_due(snd->st, collect_cancel, &cc, err) < 0 ||
        refer_list(snd->st, &approved, collect_due, &l, err) < 0) {
        free(l.v);
        return -1;
    }
    if (!sender_busy(snd))
        snd->has_err = false;
    load_lanes(snd, &l, true);
    free(l.v);
    return 0;
}

static int by_id(const void *a, const void *b)
{
    int64_t x = ((const due *)a)->id, y = ((const due *)b)->id;
    return x < y ? -1 : x > y;
}

int sender_poll_start(sender *snd, fhir_error *err)
{
    due_list l = {0};
    /* the referrals open at a center: one index lookup per state, small columns only */
    static const refer_state open_states[] = {REFER_SENT, REFER_ACCEPTED, REFER_SCHEDULED};
    for (size_t i = 0; i < sizeof open_states / sizeof open_states[0]; i++) {
        refer_filter f = {.state = open_states[i], .summary = true};
        if (refer_list(snd->st, &f, collect_due, &l, err) < 0) {
            free(l.v);
            return -1;
        }
    }
    if (!sender_busy(snd))
        snd->has_err = false;
    if (l.n > 1)
        qsort(l.v, l.n, sizeof *l.v, by_id);
    /* bounded per pass, round robin: start after the last referral polled last time */
    size_t first = 0;
    while (first < l.n && l.v[first].id <= snd->poll_after)
        first++;
    size_t take = l.n < snd->o.poll_max_per_pass ? l.n : snd->o.poll_max_per_pass;
    due_list sel = {0};
    for (size_t k = 0; k < take; k++) {
            const due *d = &l.v[(first + k) % l.n];
            if (sel.n == sel.alloc) {
                sel.alloc = sel.alloc ? sel.alloc * 2 : 64;
                sel.v = fhir_xrealloc(sel.v, sel.alloc * sizeof *sel.v);
            }
            sel.v[sel.n++] = *d;
        }
    if (take)
        snd->poll_after = take < l.n ? l.v[(first + take - 1) % l.n].id : 0;
    load_lanes(snd, &sel, false);
    free(sel.v);
    free(l.v);
    return 0;
}

static void add_diff(sender_stats *st, const sender_stats *after, const sender_stats *before)
{
    st->sent += after->sent - before->sent;
    st->recovered += after->recovered - before->recovered;
    st->transient += after->transient - before->transient;
    st->failed += after->failed - before->failed;
    st->waiting += after->waiting - before->waiting;
    st->polled += after->polled - before->polled;
    st->changed += after->changed - before->changed;
    st->cancelled += after->cancelled - before->cancelled;
    st->unprepared += after->unprepared - before->unprepared;
}

/* Runs a start function on the private base until every queue is idle. */
static int run_sync(sender *snd, int (*start)(sender *, fhir_error *), sender_stats *st,
                    fhir_error *err)
{
    if (!snd->own_base)
        return fhir_error_set(err, "sender: synchronous passes need a sender on its own event base");
    sender_stats before = snd->total;
    if (start(snd, err))
        return -1;
    while (sender_busy(snd))
        if (event_base_loop(snd->own_base, EVLOOP_ONCE) < 0)
            return fhir_error_set(err, "sender: event loop failed");
    add_diff(st, &snd->total, &before);
    if (snd->has_err) {
        *err = snd->err;
        return -1;
    }
    return 0;
}

int sender_pass(sender *snd, sender_stats *st, fhir_error *err)
{
    return run_sync(snd, sender_pass_start, st, err);
}

int sender_poll(sender *snd, sender_stats *st, fhir_error *err)
{
    return run_sync(snd, sender_poll_start, st, err);
}

int64_t sender_outstanding(store *s, fhir_error *err)
{
    int64_t counts[REFER_N_STATES];
    if (refer_count_by_state(s, counts, err))
        return -1;
    return counts[REFER_APPROVED] + counts[REFER_SENDING];
}
