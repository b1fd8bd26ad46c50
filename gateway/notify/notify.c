/* notify — notices without PHI by email (SMTP + TLS through libcurl) and webhook (see notify.h). */
#include "notify.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fhir_alloc.h"
#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "fhir_node.h"

#define NOTIFY_RETRY_MAX_MS (24ll * 3600 * 1000) /* the longest pause between two attempts */

struct notify {
    notify_config cfg;         /* strings owned (copies) */
    char **to;                 /* cfg.email_to's copies */
    char *store_path;
    pthread_t worker;
    bool started;
    pthread_mutex_t mu;        /* guards stop, kicked, stats */
    pthread_cond_t cv;
    bool stop, kicked;
    notify_stats stats;
};

static char *dup_or_null(const char *s)
{
    return s ? fhir_xstrdup(s) : NULL;
}

/* ---- the text of a notice ------------------------------------------------------------------ */

/* The link: public_url without its trailing slash, then path. */
static void link_of(const notify *n, const char *path, char *out, size_t len)
{
    size_t b = strlen(n->cfg.public_url);
    while (b && n->cfg.public_url[b - 1] == '/')
        b--;
    snprintf(out, len, "%.*s%s", (int)b, n->cfg.public_url, path ? path : "/ui/");
}

typedef struct digest_counts {
    fhir_arena *a;
    fhir_node *obj;
} digest_counts;

static void count_state(void *ctx, const char *name, int64_t count)
{
    digest_counts *d = ctx;
    char key[80], num[32];
    snprintf(key, sizeof key, "referrals_%s", name);
    int len = snprintf(num, sizeof num, "%lld", (long long)count);
    fhir_node_set(d->a, d->obj, fhir_arena_strdup(d->a, key), fhir_node_new_num(d->a, num, (size_t)len));
}

/* A center's digest: the inbox by Task.status (the statuses intake_task.h writes, then
 * other); "received" is waiting for the center's first answer. */
static const char *const INTAKE_STATUS[] = {"received", "accepted", "on-hold", "in-progress", "rejected",
                                            "cancelled", "completed", "other"};
#define N_INTAKE_STATUS (sizeof INTAKE_STATUS / sizeof INTAKE_STATUS[0])

static int count_intake(void *ctx, const char *status, int64_t count, int64_t oldest_ms)
{
    (void)oldest_ms;
    int64_t *n = ctx;
    size_t i = 0;
    if (status && !strcmp(status, "requested"))
        status = "received";
    while (i < N_INTAKE_STATUS - 1 && strcmp(INTAKE_STATUS[i], status ? status : ""))
        i++;
    n[i] += count;
    return 0;
}

/* The JSON of a notice (what the webhook receives; the email is written from it): site,
 * event, count, urgency, text, link, time, and for the digest its date and counts. */
static char *notice_json(notify *n, store *st, const notify_notice *w, int64_t count, fhir_error *err)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *o = fhir_node_new(a, FHIR_OBJECT);
    char num[32], link[1024], when[40], text[512];
    fhir_node_set_str(a, o, "site", n->cfg.site_id ? n->cfg.site_id : "");
    fhir_node_set_str(a, o, "event", w->kind);
    int len = snprintf(num, sizeof num, "%lld", (long long)count);
    fhir_node_set(a, o, "count", fhir_node_new_num(a, num, (size_t)len));
    if (w->urgency)
        fhir_node_set_str(a, o, "urgency", w->urgency);
    if (!strcmp(w->kind, "digest"))
        snprintf(text, sizeof text, "%s", w->summary);
    else
        snprintf(text, sizeof text, "%lld %s%s%s", (long long)count, w->summary, w->urgency ? ", urgency " : "",
                 w->urgency ? w->urgency : "");
    fhir_node_set_str(a, o, "text", text);
    link_of(n, w->link_path, link, sizeof link);
    fhir_node_set_str(a, o, "link", link);
    fhir_clock_format_instant(fhir_clock_now_ms(), when, sizeof when);
    fhir_node_set_str(a, o, "time", when);
    if (!strcmp(w->kind, "digest") && n->cfg.center) {
        fhir_node *c = fhir_node_set_obj(a, o, "counts");
        int64_t by[N_INTAKE_STATUS] = {0};
        if (store_intake_ref_states(st, count_intake, by, err) < 0) {
            fhir_arena_free(a);
            return NULL;
        }
        for (size_t i = 0; i < N_INTAKE_STATUS; i++) {
            char key[32];
            snprintf(key, sizeof key, "%s", INTAKE_STATUS[i]);
            for (char *q = key; *q; q++)
                if (*q == '-')
                    *q = '_';
            len = snprintf(num, sizeof num, "%lld", (long long)by[i]);
            fhir_node_set(a, c, fhir_arena_strdup(a, key), fhir_node_new_num(a, num, (size_t)len));
        }
    } else if (!strcmp(w->kind, "digest")) {
        fhir_node *c = fhir_node_set_obj(a, o, "counts");
        static const char *const cats[] = {"eligible", "possibly_eligible", "not_eligible"};
        for (size_t i = 0; i < sizeof cats / sizeof cats[0]; i++) {
            int64_t v = store_verdict_count(st, cats[i], err);
            if (v < 0) {
                fhir_arena_free(a);
                return NULL;
            }
            len = snprintf(num, sizeof num, "%lld", (long long)v);
            fhir_node_set(a, c, cats[i], fhir_node_new_num(a, num, (size_t)len));
        }
        digest_counts d = {a, c};
        if (store_referral_count_by_state(st, count_state, &d, err)) {
            fhir_arena_free(a);
            return NULL;
        }
    }
    char *s = fhir_json_to_string(o, FHIR_JSON_COMPACT, NOTIFY_BODY_MAX);
    fhir_arena_free(a);
    if (!s)
        fhir_error_set(err, "notice larger than %u bytes", NOTIFY_BODY_MAX);
    return s;
}

int notify_post(notify *n, store *st, const notify_notice *w, int64_t *queued, fhir_error *err)
{
    if (queued)
        *queued = 0;
    bool own = !store_in_transaction(st);
    if (own && store_begin(st, err))
        return -1;
    int64_t fresh = 0;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < w->n_keys; i++) {
        int r = store_notify_event(st, w->keys[i], w->kind, err);
        if (r < 0)
            rc = -1;
        else
            fresh += r;
    }
    if (rc == 0 && fresh > 0) {
        char *body = notice_json(n, st, w, fresh, err);
        if (!body)
            rc = -1;
        const char *channels[2] = {n->cfg.email_url ? "email" : NULL, n->cfg.webhook_url ? "webhook" : NULL};
        for (int c = 0; rc == 0 && c < 2; c++) {
            if (!channels[c])
                continue;
            store_notice row = {.kind = w->kind, .channel = channels[c], .count = fresh, .urgency = w->urgency,
                                .body_json = body};
            rc = store_notice_add(st, &row, NULL, err);
        }
        free(body);
    }
    if (own) {
        if (rc == 0)
            rc = store_commit(st, err);
        else
            store_rollback(st);
    }
    if (rc == 0 && fresh > 0) {
        if (queued)
            *queued = fresh;
        fhir_log(FHIR_LOG_INFO, "notify.queued", "kind=%s count=%lld", w->kind, (long long)fresh);
        notify_kick(n);
    }
    return rc;
}

int notify_screened(notify *n, store *st, const char *const *keys, size_t n_new, const char *urgency,
                    fhir_error *err)
{
    if (n_new == 0)
        return 0;
    notify_notice w = {.kind = "urgent_candidates", .keys = keys, .n_keys = n_new, .urgency = urgency,
                       .summary = "new CAR T candidate(s) to review", .link_path = "/ui/"};
    return notify_post(n, st, &w, NULL, err);
}

/* ---- business days and the daily digest ---------------------------------------------------- */

static void local_tm(int64_t ms, struct tm *out)
{
    time_t t = (time_t)(ms / 1000);
    localtime_r(&t, out);
}

int notify_business_days(int64_t from_ms, int64_t to_ms)
{
    if (to_ms <= from_ms)
        return 0;
    int n = 0;
    /* whole days after from, counted on the local calendar (bounded: at most ~10 years) */
    for (int64_t t = from_ms + 86400000; t <= to_ms && n < 4000; t += 86400000) {
        struct tm tm;
        local_tm(t, &tm);
        if (tm.tm_wday != 0 && tm.tm_wday != 6)
            n++;
    }
    return n;
}

/* ---- scanning the store for the daemon's events ------------------------------------------- */

typedef struct scan_ctx {
    const notify *n;
    int64_t now;
    char **stuck, **declined; /* keys (owned) */
    size_t n_stuck, n_declined, cap_stuck, cap_declined;
} scan_ctx;

static void push(char ***v, size_t *n, size_t *cap, char *s)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *v = fhir_xrealloc(*v, *cap * sizeof **v);
    }
    (*v)[(*n)++] = s;
}

static int scan_row(void *ctx, int64_t id, const char *state, int64_t updated_ms)
{
    scan_ctx *c = ctx;
    char key[96];
    if (!strcmp(state, "declined")) {
        snprintf(key, sizeof key, "referral_declined:%lld", (long long)id);
        push(&c->declined, &c->n_declined, &c->cap_declined, fhir_xstrdup(key));
    } else if (!strcmp(state, "failed")) {
        snprintf(key, sizeof key, "referral_failed:%lld", (long long)id);
        push(&c->stuck, &c->n_stuck, &c->cap_stuck, fhir_xstrdup(key));
    } else if (!strcmp(state, "unprepared")) { /* approved, its texts cannot be composed */
        snprintf(key, sizeof key, "referral_unprepared:%lld", (long long)id);
        push(&c->stuck, &c->n_stuck, &c->cap_stuck, fhir_xstrdup(key));
    } else if (c->n->cfg.stuck_business_days > 0 &&
               notify_business_days(updated_ms, c->now) >= c->n->cfg.stuck_business_days) {
        snprintf(key, sizeof key, "referral_unanswered:%lld:%lld", (long long)id, (long long)updated_ms);
        push(&c->stuck, &c->n_stuck, &c->cap_stuck, fhir_xstrdup(key));
    }
    return 0;
}

int notify_scan(notify *n, store *st, fhir_error *err)
{
    int64_t now = fhir_clock_now_ms();
    scan_ctx c = {.n = n, .now = now};
    /* a sent referral N business days old is at least N calendar days old */
    int64_t before = n->cfg.stuck_business_days > 0 ? now - (int64_t)n->cfg.stuck_business_days * 86400000
                                                    : INT64_MIN;
    int rc = store_referral_notice_scan(st, before, scan_row, &c, err) < 0 ? -1 : 0;
    if (rc == 0 && c.n_stuck) {
        notify_notice w = {.kind = "referral_stuck", .keys = (const char *const *)c.stuck, .n_keys = c.n_stuck,
                           .summary = "referral(s) stuck: failed, approved but could not be prepared, or sent "
                                      "without an answer from the center",
                           .link_path = "/ui/referrals"};
        rc = notify_post(n, st, &w, NULL, err);
    }
    if (rc == 0 && c.n_declined) {
        notify_notice w = {.kind = "referral_declined", .keys = (const char *const *)c.declined,
                           .n_keys = c.n_declined, .summary = "referral(s) declined by the center",
                           .link_path = "/ui/referrals"};
        rc = notify_post(n, st, &w, NULL, err);
    }
    for (size_t i = 0; i < c.n_stuck; i++)
        free(c.stuck[i]);
    for (size_t i = 0; i < c.n_declined; i++)
        free(c.declined[i]);
    free(c.stuck);
    free(c.declined);
    if (rc == 0 && n->cfg.digest_hour >= 0) {
        struct tm tm;
        local_tm(now, &tm);
        if (tm.tm_hour >= n->cfg.digest_hour) {
            char key[40], text[96];
            snprintf(key, sizeof key, "digest:%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
            snprintf(text, sizeof text, "daily digest %04d-%02d-%02d: %s", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, n->cfg.center ? "the intake inbox by status" : "candidates and referrals by state");
            const char *keys[1] = {key};
            notify_notice w = {.kind = "digest", .keys = keys, .n_keys = 1, .summary = text,
                               .link_path = n->cfg.center ? "/ui/intake" : "/ui/"};
            rc = notify_post(n, st, &w, NULL, err);
        }
    }
    return rc;
}

/* ---- delivery ------------------------------------------------------------------------------ */

typedef struct upload {
    const char *data;
    size_t len, off;
} upload;

static size_t read_cb(char *buf, size_t size, size_t nmemb, void *ud)
{
    upload *u = ud;
    size_t room = size * nmemb, left = u->len - u->off;
    size_t k = left < room ? left : room;
    memcpy(buf, u->data + u->off, k);
    u->off += k;
    return k;
}

static size_t sink_cb(char *p, size_t size, size_t nmemb, void *ud)
{
    fhir_buf *b = ud;
    size_t n = size * nmemb;
    fhir_buf_append(b, p, n); /* capped: what does not fit is dropped, the transfer goes on */
    return n;
}

/* The email of a notice: headers and plain text made from its JSON (counts and a link). */
static int email_text(const notify *n, int64_t id, const char *body_json, fhir_buf *out, fhir_error *err)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *j = fhir_json_parse(a, body_json, strlen(body_json), NULL, err);
    if (!j) {
        fhir_arena_free(a);
        return -1;
    }
    const char *text = fhir_node_str(fhir_node_get(j, "text"));
    const char *link = fhir_node_str(fhir_node_get(j, "link"));
    const char *kind = fhir_node_str(fhir_node_get(j, "event"));
    char date[64];
    time_t t = (time_t)(fhir_clock_now_ms() / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    fhir_buf_printf(out, "Date: %s\r\nFrom: %s\r\nTo: ", date, n->cfg.email_from);
    for (size_t i = 0; i < n->cfg.n_email_to; i++)
        fhir_buf_printf(out, "%s%s", i ? ", " : "", n->to[i]);
    fhir_buf_printf(out, "\r\nSubject: cartgate %s: %s\r\nMessage-ID: <cartgate-%s-%lld-%lld@%s>\r\n"
                         "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         "Auto-Submitted: auto-generated\r\n\r\n",
                    n->cfg.site_id ? n->cfg.site_id : "", text ? text : "", kind ? kind : "notice", (long long)id,
                    (long long)t, n->cfg.site_id ? n->cfg.site_id : "cartgate");
    fhir_buf_printf(out, "%s.\r\n\r\n", text ? text : "");
    const fhir_node *c = fhir_node_get(j, "counts");
    for (const fhir_node *m = fhir_node_first(c); m; m = m->next)
        fhir_buf_printf(out, "  %-32s %s\r\n", m->key, m->text ? m->text : "");
    if (c)
        fhir_buf_puts(out, "\r\n");
    fhir_buf_printf(out, "Open: %s\r\n\r\nThis notice carries no patient details: sign in to see them.\r\n",
                    link ? link : "");
    fhir_arena_free(a);
    if (out->overflow)
        return fhir_error_set(err, "email larger than %u bytes", NOTIFY_BODY_MAX * 2);
    return 0;
}

static void common_opts(CURL *h, const char *ca_file, int timeout_s, char *ebuf)
{
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_s * 1000L);
    if (ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, ca_file);
}

static int send_email(const notify *n, int64_t id, const char *body_json, fhir_error *err)
{
    fhir_buf msg;
    fhir_buf_init(&msg, NOTIFY_BODY_MAX * 2);
    if (email_text(n, id, body_json, &msg, err)) {
        fhir_buf_free(&msg);
        return -1;
    }
    CURL *h = curl_easy_init();
    if (!h) {
        fhir_buf_free(&msg);
        return fhir_error_set(err, "curl_easy_init failed");
    }
    char ebuf[CURL_ERROR_SIZE] = "", from[320];
    common_opts(h, n->cfg.email_ca_file, n->cfg.timeout_s, ebuf);
    curl_easy_setopt(h, CURLOPT_URL, n->cfg.email_url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    /* smtp://: STARTTLS or nothing (never the message in clear); smtps:// is TLS from the start */
    curl_easy_setopt(h, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
    snprintf(from, sizeof from, "<%s>", n->cfg.email_from);
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, from);
    struct curl_slist *rcpt = NULL;
    for (size_t i = 0; i < n->cfg.n_email_to; i++) {
        char r[320];
        snprintf(r, sizeof r, "<%s>", n->to[i]);
        rcpt = curl_slist_append(rcpt, r);
    }
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
    if (n->cfg.email_user) {
        curl_easy_setopt(h, CURLOPT_USERNAME, n->cfg.email_user);
        curl_easy_setopt(h, CURLOPT_PASSWORD, n->cfg.email_password ? n->cfg.email_password : "");
    }
    upload u = {msg.data, msg.len, 0};
    curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(h, CURLOPT_READDATA, &u);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    CURLcode cc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(h);
    fhir_buf_free(&msg);
    if (cc != CURLE_OK)
        return fhir_error_set(err, "email: %s (%s; SMTP %ld)", curl_easy_strerror(cc), ebuf[0] ? ebuf : "no detail",
                              code);
    return 0;
}

static int send_webhook(const notify *n, const char *body_json, fhir_error *err)
{
    CURL *h = curl_easy_init();
    if (!h)
        return fhir_error_set(err, "curl_easy_init failed");
    char ebuf[CURL_ERROR_SIZE] = "", auth[4200];
    common_opts(h, n->cfg.webhook_ca_file, n->cfg.timeout_s, ebuf);
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    if (n->cfg.webhook_token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", n->cfg.webhook_token);
        hd = curl_slist_append(hd, auth);
        memset(auth, 0, sizeof auth);
    }
    fhir_buf resp;
    fhir_buf_init(&resp, NOTIFY_ERROR_BODY_MAX);
    curl_easy_setopt(h, CURLOPT_URL, n->cfg.webhook_url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body_json);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body_json));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    CURLcode cc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    int rc = 0;
    if (cc != CURLE_OK)
        rc = fhir_error_set(err, "webhook: %s (%s)", curl_easy_strerror(cc), ebuf[0] ? ebuf : "no detail");
    else if (code < 200 || code > 299)
        rc = fhir_error_set(err, "webhook: HTTP %ld: %.200s", code, fhir_buf_cstr(&resp));
    fhir_buf_free(&resp);
    return rc;
}

/* A due notice copied out of the store (the row's strings live for the callback only). */
typedef struct due {
    int64_t id;
    bool webhook;
    int attempts;
    char *body;
} due;

typedef struct due_list {
    due v[NOTIFY_BATCH];
    size_t n;
} due_list;

static int due_row(void *ctx, const store_notice *r)
{
    due_list *l = ctx;
    if (l->n < NOTIFY_BATCH)
        l->v[l->n++] = (due){r->id, !strcmp(r->channel, "webhook"), r->attempts, fhir_xstrdup(r->body_json)};
    return l->n >= NOTIFY_BATCH;
}

/* One notice: claimed, sent, and its outcome written. */
static void deliver(notify *n, store *st, due *d)
{
    fhir_error err;
    fhir_error_clear(&err);
    int c = store_notice_claim(st, d->id, &err);
    if (c != 1) {
        if (c < 0)
            fhir_log(FHIR_LOG_ERROR, "notify.store_failed", "error=%s", err.msg);
        return;
    }
    int attempt = d->attempts + 1;
    int rc = d->webhook ? send_webhook(n, d->body, &err) : send_email(n, d->id, d->body, &err);
    const char *channel = d->webhook ? "webhook" : "email";
    const char *status = "sent";
    int64_t next = 0;
    if (rc) {
        if (attempt < n->cfg.max_attempts) {
            status = "pending";
            int64_t delay = (int64_t)n->cfg.retry_s * 1000;
            for (int i = 1; i < attempt && delay < NOTIFY_RETRY_MAX_MS; i++)
                delay *= 2;
            next = fhir_clock_now_ms() + (delay < NOTIFY_RETRY_MAX_MS ? delay : NOTIFY_RETRY_MAX_MS);
        } else {
            status = "failed";
        }
        fhir_log(FHIR_LOG_WARN, "notify.failed", "notice=%lld channel=%s attempt=%d next=%s error=%s",
                 (long long)d->id, channel, attempt, *status == 'p' ? "retry" : "given_up", err.msg);
    } else {
        fhir_log(FHIR_LOG_INFO, "notify.sent", "notice=%lld channel=%s attempt=%d", (long long)d->id, channel,
                 attempt);
    }
    pthread_mutex_lock(&n->mu);
    int ch = d->webhook ? 1 : 0;
    if (!rc)
        n->stats.sent[ch]++;
    else if (*status == 'p')
        n->stats.retried[ch]++;
    else
        n->stats.failed[ch]++;
    pthread_mutex_unlock(&n->mu);
    fhir_error e2;
    fhir_error_clear(&e2);
    if (store_notice_done(st, d->id, status, rc ? err.msg : NULL, next, &e2))
        fhir_log(FHIR_LOG_ERROR, "notify.store_failed", "error=%s", e2.msg);
}

static void *worker(void *arg)
{
    notify *n = arg;
    fhir_error err;
    fhir_error_clear(&err);
    store *st = store_open(n->store_path, 0, &err);
    if (!st) {
        fhir_log(FHIR_LOG_ERROR, "notify.store_failed", "error=%s", err.msg);
        return NULL;
    }
    int64_t orphans = store_notice_orphans(st, &err);
    if (orphans > 0) {
        fhir_log(FHIR_LOG_WARN, "notify.interrupted", "notices=%lld note=not sent again (at most once)",
                 (long long)orphans);
        pthread_mutex_lock(&n->mu);
        n->stats.unknown += (uint64_t)orphans;
        pthread_mutex_unlock(&n->mu);
    }
    for (;;) {
        pthread_mutex_lock(&n->mu);
        if (!n->kicked && !n->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1; /* due retries are looked for every second */
            pthread_cond_timedwait(&n->cv, &n->mu, &ts);
        }
        bool stop = n->stop;
        n->kicked = false;
        pthread_mutex_unlock(&n->mu);
        if (stop)
            break;
        due_list l = {.n = 0};
        fhir_error_clear(&err);
        if (store_notice_due(st, fhir_clock_now_ms(), NOTIFY_BATCH, due_row, &l, &err) < 0)
            fhir_log(FHIR_LOG_ERROR, "notify.store_failed", "error=%s", err.msg);
        for (size_t i = 0; i < l.n; i++) {
            pthread_mutex_lock(&n->mu);
            stop = n->stop;
            pthread_mutex_unlock(&n->mu);
            if (!stop)
                deliver(n, st, &l.v[i]);
            free(l.v[i].body);
        }
        if (l.n == NOTIFY_BATCH)
            notify_kick(n); /* more may be due */
    }
    store_close(st);
    return NULL;
}

/* ---- life ---------------------------------------------------------------------------------- */

void notify_kick(notify *n)
{
    if (!n)
        return;
    pthread_mutex_lock(&n->mu);
    n->kicked = true;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

void notify_get_stats(notify *n, notify_stats *out)
{
    pthread_mutex_lock(&n->mu);
    *out = n->stats;
    pthread_mutex_unlock(&n->mu);
}

notify *notify_new(const char *store_path, const notify_config *cfg, fhir_error *err)
{
    if (!cfg->email_url && !cfg->webhook_url) {
        fhir_error_set(err, "notify: neither an email nor a webhook is configured");
        return NULL;
    }
    if (!cfg->public_url) {
        fhir_error_set(err, "notify: the link base (public_url) is missing");
        return NULL;
    }
    if (cfg->email_url && (!cfg->email_from || cfg->n_email_to == 0 || cfg->n_email_to > NOTIFY_MAX_RECIPIENTS)) {
        fhir_error_set(err, "notify: email needs a sender and 1 to %d recipients", NOTIFY_MAX_RECIPIENTS);
        return NULL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fhir_error_set(err, "notify: curl_global_init failed");
        return NULL;
    }
    notify *n = fhir_xcalloc(1, sizeof *n);
    n->cfg = *cfg;
    n->cfg.site_id = dup_or_null(cfg->site_id);
    n->cfg.public_url = dup_or_null(cfg->public_url);
    n->cfg.email_url = dup_or_null(cfg->email_url);
    n->cfg.email_from = dup_or_null(cfg->email_from);
    n->cfg.email_user = dup_or_null(cfg->email_user);
    n->cfg.email_password = dup_or_null(cfg->email_password);
    n->cfg.email_ca_file = dup_or_null(cfg->email_ca_file);
    n->cfg.webhook_url = dup_or_null(cfg->webhook_url);
    n->cfg.webhook_token = dup_or_null(cfg->webhook_token);
    n->cfg.webhook_ca_file = dup_or_null(cfg->webhook_ca_file);
    n->to = fhir_xcalloc(cfg->n_email_to + 1, sizeof *n->to);
    for (size_t i = 0; i < cfg->n_email_to; i++)
        n->to[i] = fhir_xstrdup(cfg->email_to[i]);
    n->cfg.email_to = (const char *const *)n->to;
    if (n->cfg.retry_s <= 0)
        n->cfg.retry_s = 30;
    if (n->cfg.max_attempts <= 0)
        n->cfg.max_attempts = 8;
    if (n->cfg.timeout_s <= 0)
        n->cfg.timeout_s = 30;
    n->store_path = fhir_xstrdup(store_path);
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    if (pthread_create(&n->worker, NULL, worker, n) != 0) {
        fhir_error_set(err, "notify: cannot start the worker thread: %s", strerror(errno));
        notify_free(n);
        return NULL;
    }
    n->started = true;
    return n;
}

static void free_secret(const char *s)
{
    if (s) {
        memset((char *)s, 0, strlen(s));
        free((char *)s);
    }
}

void notify_free(notify *n)
{
    if (!n)
        return;
    if (n->started) {
        pthread_mutex_lock(&n->mu);
        n->stop = true;
        pthread_cond_signal(&n->cv);
        pthread_mutex_unlock(&n->mu);
        pthread_join(n->worker, NULL);
    }
    pthread_cond_destroy(&n->cv);
    pthread_mutex_destroy(&n->mu);
    for (size_t i = 0; i < n->cfg.n_email_to; i++)
        free(n->to[i]);
    free(n->to);
    free((char *)n->cfg.site_id);
    free((char *)n->cfg.public_url);
    free((char *)n->cfg.email_url);
    free((char *)n->cfg.email_from);
    free((char *)n->cfg.email_user);
    free_secret(n->cfg.email_password);
    free((char *)n->cfg.email_ca_file);
    free((char *)n->cfg.webhook_url);
    free_secret(n->cfg.webhook_token);
    free((char *)n->cfg.webhook_ca_file);
    free(n->store_path);
    free(n);
    curl_global_cleanup();
}
