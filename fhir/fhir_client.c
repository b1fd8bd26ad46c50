/* fhir_client — FHIR REST client on libevent + curl multi (see fhir_client.h).
 *
 * Structure: every HTTP exchange is an `op` (a user request, one search page, SMART
 * discovery, a token request). Ops wait in `pending` until a concurrency slot and a rate
 * token are free, run as one curl easy handle per attempt, and on completion either
 * finish, wait for a retry timer, or (after a 401 with SMART) go back to the queue behind
 * a fresh token. */
#include "fhir_client.h"

#include <ctype.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <openssl/rand.h>

#include "fhir_alloc.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"

#include "fhir_xml.h"

#define DEFAULT_CONNECT_MS 10000L
#define DEFAULT_TOTAL_MS 60000L
#define DEFAULT_CONCURRENT 4u

typedef enum op_kind { OP_USER, OP_PAGE, OP_DISCOVERY, OP_TOKEN } op_kind;

/* Extra response headers captured for the result (besides Location, ETag, Retry-After). */
enum { H_CONTENT_LOCATION, H_X_PROGRESS, H_EXPIRES, H_CONTENT_TYPE, H_COUNT };
static const char *const extra_headers[H_COUNT] = {"content-location", "x-progress", "expires",
                                                   "content-type"};

typedef struct search search;
typedef struct op op;

struct op {
    fhir_client *c;
    op_kind kind;
    op *next;             /* queue link (pending or waiting_token) */
    op *all_prev, *all_next; /* every live op of the client (for fhir_client_free) */
    char *method;
    char *url;
    char *label;          /* "GET Patient" — no query, no ids: safe for logs */
    char *body;
    size_t body_len;
    char *if_none_exist;
    char *if_match;
    char *prefer;
    bool not_idempotent;
    bool accept_202;
    bool no_auth;         /* no Authorization header (bulk files, requiresAccessToken false) */
    bool foreign;         /* off the base's and the trusted origins: no client certificate */
    char *accept;         /* Accept override or NULL */
    char *content_type;   /* Content-Type override of a body or NULL */
    long timeout_ms;      /* per attempt; 0 = client's */
    /* streaming GET */
    fhir_client_chunk_cb chunk_cb;
    size_t stream_max;
    uint64_t delivered;   /* body bytes handed to chunk_cb over all attempts */
    bool chunk_stopped;
    bool auth_retried;
    uint64_t auth_gen;
    unsigned attempts;
    unsigned retries;
    /* current attempt */
    CURL *easy;
    struct curl_slist *hdrs;
    char errbuf[CURL_ERROR_SIZE];
    long status;
    bool streaming;
    bool too_big;
    bool parse_failed;
    fhir_error parse_err;
    size_t received;
    fhir_buf raw;
    fhir_json_stream *stream;
    fhir_node *parsed;
    char *retry_after;
    char *location;
    char *etag;
    char *hdr[H_COUNT];
    fhir_arena *arena;
    struct event *retry_timer;
    /* completion */
    fhir_client_stats *st; /* where this op's counters go (own result or the search's) */
    fhir_client_result *res;
    fhir_client_done_cb cb;
    void *ud;
    search *s;
};

struct search {
    fhir_client *c;
    fhir_client_page_cb page_cb;
    fhir_client_done_cb done;
    void *ud;      /* for page_cb */
    void *done_ud; /* for done */
    fhir_client_result *res;
    unsigned pages;
    char *prev_url;
    fhir_arena *arena; /* the current page's tree; reset after each page */
    fhir_arena *ahead; /* the next page's, asked for before the current one is handed over */
    bool count_only;   /* _summary=count / _count=0: no entries expected */
    long long total;   /* Bundle.total of the last page that had one; -1 = none */
    size_t matches;    /* entries in search mode "match" received */
    fhir_buf warnings; /* distinct OperationOutcome issue lines (capped) */
};

typedef struct sockinfo {
    struct event *ev;
} sockinfo;

struct fhir_client {
    struct event_base *base;
    bool own_base;
    CURLM *multi;
    struct event *curl_timer;
    struct event *rate_timer;
    char *name;
    char *base_url;     /* no trailing slash */
    char *origin;       /* scheme://host[:port] as written in the base URL */
    char *origin_norm;  /* the same, normalised (fhir_client_url_origin) */
    char **trusted;     /* normalised trusted origins */
    size_t n_trusted;
    fhir_format format;
    long connect_ms, total_ms;
    unsigned max_concurrent;
    size_t max_bytes;
    unsigned max_pages;
    char *ca_file, *cert_file, *key_file;
    fhir_retry_policy retry;
    fhir_client_random_fn random;
    void *random_ud;
    uint64_t prng;
    fhir_auth *auth;
    fhir_retry_bucket bucket;
    op *pending_head, *pending_tail;
    op *waiting_head, *waiting_tail; /* waiting for a SMART token */
    bool token_busy;
    unsigned inflight;
    op *all;           /* every live op */
    fhir_client_stats total;
};

static void op_start_attempt(op *o);
static void pump(fhir_client *c);
static void op_finish(op *o);
static void op_free(op *o);

/* ---- small helpers -------------------------------------------------------------------- */

/* Monotonic ms for event-loop pacing (timers run in real time, as libevent's do). */
static int64_t loop_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t next_random(fhir_client *c)
{
    if (c->random)
        return c->random(c->random_ud);
    /* xorshift64* */
    uint64_t x = c->prng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    c->prng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void ms_to_tv(int64_t ms, struct timeval *tv)
{
    if (ms < 0)
        ms = 0;
    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)((ms % 1000) * 1000);
}

static void queue_push(op **head, op **tail, op *o, bool front)
{
    o->next = NULL;
    if (!*head) {
        *head = *tail = o;
    } else if (front) {
        o->next = *head;
        *head = o;
    } else {
        (*tail)->next = o;
        *tail = o;
    }
}

/* Takes o out of the queue wherever it stands; false when it is not there. */
static bool queue_remove(op **head, op **tail, op *o)
{
    op *prev = NULL;
    for (op *q = *head; q; prev = q, q = q->next) {
        if (q != o)
            continue;
        if (prev)
            prev->next = q->next;
        else
            *head = q->next;
        if (*tail == q)
            *tail = prev;
        q->next = NULL;
        return true;
    }
    return false;
}

static op *queue_pop(op **head, op **tail)
{
    op *o = *head;
    if (o) {
        *head = o->next;
        if (!*head)
            *tail = NULL;
        o->next = NULL;
    }
    return o;
}

/* A path segment kept in a log label: a word (letters, '$', '_', '-', '.'; no digits) of at
 * most 40 bytes, e.g. "Observation", "$export-file", "files"; anything else may be an id. */
static bool label_word(const char *p, size_t n)
{
    if (!n || n > 40)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalpha((unsigned char)p[i]) && !strchr("$_-.", p[i]))
            return false;
    return true;
}

/* Is the path segment p kept in a label? Only words, and after a resource type (a capitalised
 * word) the next segment is an id unless it is an operation or a keyword ($x, _history). */
static bool label_keep(const char *p, size_t n, bool after_type)
{
    if (!label_word(p, n))
        return false;
    if (p[0] == '$' || p[0] == '_')
        return true;
    return !after_type;
}

/* "GET Patient" from method + URL. Under the base URL: only the first path segment after it.
 * Any other absolute URL (another origin, a path outside the base): its origin and a path
 * template, ids and query dropped ("GET http://host:port/fhir/Patient/{}",
 * "GET https://bucket.example/files/{}/{}"). */
static char *make_label(fhir_client *c, const char *method, const char *url)
{
    const char *p = url;
    size_t bl = strlen(c->base_url);
    bool under_base = !strncmp(url, c->base_url, bl) && strchr("/?#", url[bl]);
    if (!under_base && strstr(url, "://")) {
        char origin[300];
        fhir_buf b;
        fhir_buf_init(&b, 1024); /* origin (< 300) + 12 segments of <= 43 */
        fhir_buf_printf(&b, "%s %s", method,
                        fhir_client_url_origin(url, origin, sizeof origin) ? origin : "[bad URL]");
        const char *q = strstr(url, "://") + 3;
        q += strcspn(q, "/?#");
        size_t segs = 0;
        bool after_type = false;
        while (*q == '/' && segs < 12) {
            q++;
            size_t n = strcspn(q, "/?#");
            bool keep = label_keep(q, n, after_type);
            fhir_buf_printf(&b, "/%.*s", keep ? (int)n : 2, keep ? q : "{}");
            after_type = keep && isupper((unsigned char)q[0]);
            q += n;
            segs++;
        }
        fhir_buf_cstr(&b);
        size_t len;
        return fhir_buf_steal(&b, &len);
    }
    if (under_base)
        p = url + bl;
    while (*p == '/')
        p++;
    size_t n = strcspn(p, "/?#");
    char *l = fhir_xmalloc(strlen(method) + n + 2 + 10);
    if (n)
        sprintf(l, "%s %.*s", method, (int)n, p);
    else
        sprintf(l, "%s [base]", method);
    return l;
}

static void stats_add(fhir_client_stats *dst, const fhir_client_stats *src)
{
    dst->operations += src->operations;
    dst->attempts += src->attempts;
    dst->retries += src->retries;
    dst->auth_retries += src->auth_retries;
    dst->token_fetches += src->token_fetches;
    dst->pages += src->pages;
    dst->resources += src->resources;
    dst->bytes_in += src->bytes_in;
    dst->outcome_issues += src->outcome_issues;
    for (unsigned i = 0; i < src->schedule_len && i < FHIR_CLIENT_SCHEDULE_MAX; i++) {
        if (dst->schedule_len < FHIR_CLIENT_SCHEDULE_MAX) {
            dst->schedule_ms[dst->schedule_len] = src->schedule_ms[i];
            dst->schedule_status[dst->schedule_len] = src->schedule_status[i];
        }
        dst->schedule_len++;
    }
}

const char *fhir_client_url_origin(const char *url, char *out, size_t outlen)
{
    if (!url || !out || !outlen)
        return NULL;
    out[0] = '\0';
    CURLU *h = curl_url();
    if (!h)
        abort();
    char *scheme = NULL, *host = NULL, *port = NULL;
    const char *res = NULL;
    if (curl_url_set(h, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(h, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
        (!strcasecmp(scheme, "http") || !strcasecmp(scheme, "https"))) {
        int n = snprintf(out, outlen, "%s://%s:%s", scheme, host, port);
        if (n > 0 && (size_t)n < outlen) {
            for (char *p = out; *p; p++)
                *p = (char)tolower((unsigned char)*p);
            res = out;
        } else {
            out[0] = '\0';
        }
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(h);
    return res;
}

const char *fhir_client_outcome_text(const fhir_node *oo, char *out, size_t outlen)
{
    if (!outlen)
        return out;
    out[0] = '\0';
    const char *rt = fhir_node_resource_type(oo);
    if (!rt || strcmp(rt, "OperationOutcome"))
        return out;
    size_t o = 0;
    for (const fhir_node *is = fhir_node_first(fhir_node_get(oo, "issue")); is; is = is->next) {
        const char *sev = fhir_node_str(fhir_node_get(is, "severity"));
        const char *code = fhir_node_str(fhir_node_get(is, "code"));
        const char *txt = fhir_node_path_str(is, "details.text");
        const char *diag = fhir_node_str(fhir_node_get(is, "diagnostics"));
        if (!txt)
            txt = diag;
        if (!txt)
            txt = fhir_node_path_str(is, "details.coding.display");
        int w = snprintf(out + o, outlen - o, "%s%s%s%s%s%s", o ? "; " : "", sev ? sev : "",
                         code ? (sev ? " " : "") : "", code ? code : "",
                         (sev || code) && txt ? ": " : "", txt ? txt : "");
        if (w < 0 || (size_t)w >= outlen - o) {
            o = outlen - 1;
            break;
        }
        o += (size_t)w;
    }
    return out;
}

/* ---- results -------------------------------------------------------------------------- */

void fhir_client_result_free(fhir_client_result *r)
{
    if (!r)
        return;
    fhir_arena_free(r->arena);
    free(r->location);
    free(r->etag);
    free(r->content_location);
    free(r->retry_after);
    free(r->x_progress);
    free(r->expires);
    free(r->content_type);
    free(r->warnings);
    free(r);
}

const char *fhir_client_result_header(const fhir_client_result *r, const char *name)
{
    if (!r || !name)
        return NULL;
    static const struct {
        const char *name;
        size_t off;
    } map[] = {
        {"location", offsetof(fhir_client_result, location)},
        {"etag", offsetof(fhir_client_result, etag)},
        {"content-location", offsetof(fhir_client_result, content_location)},
        {"retry-after", offsetof(fhir_client_result, retry_after)},
        {"x-progress", offsetof(fhir_client_result, x_progress)},
        {"expires", offsetof(fhir_client_result, expires)},
        {"content-type", offsetof(fhir_client_result, content_type)},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcasecmp(name, map[i].name))
            return *(char *const *)((const char *)r + map[i].off);
    return NULL;
}

static fhir_client_result *result_new(void)
{
    fhir_client_result *r = fhir_xcalloc(1, sizeof *r);
    return r;
}

/* ---- curl multi <-> libevent (multi-event pattern) ------------------------------------ */

static void check_multi_info(fhir_client *c);

static void on_socket_event(evutil_socket_t fd, short kind, void *arg)
{
    fhir_client *c = arg;
    int action = ((kind & EV_READ) ? CURL_CSELECT_IN : 0) | ((kind & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running = 0;
    curl_multi_socket_action(c->multi, fd, action, &running);
    /* no "running == 0 -> delete the timer" here: check_multi_info may just have added
     * the next handle, whose timer must survive */
    check_multi_info(c);
}

static void on_curl_timeout(evutil_socket_t fd, short kind, void *arg)
{
    fhir_client *c = arg;
    int running = 0;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(c);
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    fhir_client *c = userp;
    if (timeout_ms < 0) {
        evtimer_del(c->curl_timer);
    } else {
        struct timeval tv;
        ms_to_tv(timeout_ms, &tv);
        evtimer_add(c->curl_timer, &tv);
    }
    return 0;
}

static int curl_socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *sockp)
{
    fhir_client *c = userp;
    sockinfo *si = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (si) {
            event_free(si->ev);
            free(si);
            curl_multi_assign(c->multi, s, NULL);
        }
        return 0;
    }
    short kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
                         ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
    if (!si) {
        si = fhir_xcalloc(1, sizeof *si);
        curl_multi_assign(c->multi, s, si);
    } else {
        event_free(si->ev);
    }
    si->ev = event_new(c->base, s, kind, on_socket_event, c);
    if (!si->ev)
        abort();
    event_add(si->ev, NULL);
    return 0;
}

/* ---- per-attempt response handling ---------------------------------------------------- */

static bool ci_prefix(const char *s, size_t n, const char *name)
{
    size_t k = strlen(name);
    return n > k && !strncasecmp(s, name, k) && s[k] == ':';
}

/* The trimmed value, or NULL when longer than FHIR_CLIENT_HEADER_MAX (dropped, not cut). */
static char *header_value(const char *s, size_t n, size_t name_len)
{
    const char *v = s + name_len + 1;
    const char *end = s + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if ((size_t)(end - v) > FHIR_CLIENT_HEADER_MAX)
        return NULL;
    return fhir_xstrndup(v, (size_t)(end - v));
}

static void free_headers(op *o)
{
    free(o->retry_after);
    free(o->location);
    free(o->etag);
    o->retry_after = o->location = o->etag = NULL;
    for (int i = 0; i < H_COUNT; i++) {
        free(o->hdr[i]);
        o->hdr[i] = NULL;
    }
}

static void reset_response(op *o)
{
    o->status = 0;
    o->streaming = false;
    o->too_big = false;
    o->parse_failed = false;
    fhir_error_clear(&o->parse_err);
    o->received = 0;
    fhir_buf_reset(&o->raw);
    o->raw.overflow = false;
    if (o->stream) {
        fhir_json_stream_free(o->stream);
        o->stream = NULL;
    }
    o->parsed = NULL;
    o->chunk_stopped = false;
    free_headers(o);
    if (o->arena)
        fhir_arena_reset(o->arena);
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
    op *o = ud;
    size_t n = size * nitems;
    if (n >= 5 && !strncmp(buf, "HTTP/", 5)) {
        /* new status line (also after 100 Continue): forget earlier headers */
        const char *sp = memchr(buf, ' ', n);
        o->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        free_headers(o);
    } else if (ci_prefix(buf, n, "retry-after")) {
        free(o->retry_after);
        o->retry_after = header_value(buf, n, 11);
    } else if (ci_prefix(buf, n, "location")) {
        free(o->location);
        o->location = header_value(buf, n, 8);
    } else if (ci_prefix(buf, n, "etag")) {
        free(o->etag);
        o->etag = header_value(buf, n, 4);
    } else {
        for (int i = 0; i < H_COUNT; i++)
            if (ci_prefix(buf, n, extra_headers[i])) {
                free(o->hdr[i]);
                o->hdr[i] = header_value(buf, n, strlen(extra_headers[i]));
                break;
            }
    }
    return n;
}

static bool want_stream(const op *o)
{
    return (o->kind == OP_USER || o->kind == OP_PAGE) && o->c->format == FHIR_FORMAT_JSON &&
           o->status >= 200 && o->status < 300 && !o->chunk_cb &&
           !(o->accept_202 && o->status == 202);
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud)
{
    op *o = ud;
    size_t n = size * nmemb;
    fhir_client *c = o->c;
    size_t cap = (o->kind == OP_TOKEN || o->kind == OP_DISCOVERY) ? FHIR_CLIENT_AUTH_BODY_MAX
                 : o->chunk_cb                                     ? o->stream_max
                                                                   : c->max_bytes;
    if (o->chunk_cb && o->status >= 200 && o->status < 300) {
        o->received += n;
        o->st->bytes_in += n;
        if (o->received > cap) {
            o->too_big = true;
            return 0;
        }
        if (n && o->chunk_cb(o->ud, data, n) != 0) {
            o->chunk_stopped = true;
            return 0;
        }
        o->delivered += n;
        return n;
    }
    if (o->received == 0 && n > 0 && want_stream(o)) {
        o->streaming = true;
        fhir_json_limits lim = {.max_bytes = cap};
        o->stream = fhir_json_stream_new(o->arena, &lim);
    }
    o->received += n;
    o->st->bytes_in += n;
    if (o->received > cap) {
        o->too_big = true;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    if (o->streaming) {
        if (fhir_json_stream_feed(o->stream, data, n, &o->parse_err) < 0) {
            o->parse_failed = true;
            return 0;
        }
        return n;
    }
    /* buffered: auth bodies, XML, error bodies (only the first FHIR_CLIENT_ERROR_BODY_MAX kept) */
    bool is_error = o->status >= 300 && (o->kind == OP_USER || o->kind == OP_PAGE);
    if (is_error && o->raw.len + n > FHIR_CLIENT_ERROR_BODY_MAX) {
        size_t room = FHIR_CLIENT_ERROR_BODY_MAX > o->raw.len ? FHIR_CLIENT_ERROR_BODY_MAX - o->raw.len : 0;
        if (room)
            fhir_buf_append(&o->raw, data, room);
        return n;
    }
    if (fhir_buf_append(&o->raw, data, n) < 0) {
        o->too_big = true;
        return 0;
    }
    return n;
}

/* ---- attempts ------------------------------------------------------------------------- */

static const char *mime(fhir_format f)
{
    return f == FHIR_FORMAT_XML ? "application/fhir+xml" : "application/fhir+json";
}

static void add_header(op *o, const char *h)
{
    struct curl_slist *n = curl_slist_append(o->hdrs, h);
    if (!n)
        abort();
    o->hdrs = n;
}

static void add_headerf(op *o, const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *h = fhir_xmalloc(n);
    snprintf(h, n, "%s: %s", name, value);
    add_header(o, h);
    free(h);
}

static void op_start_attempt(op *o)
{
    fhir_client *c = o->c;
    reset_response(o);
    o->easy = curl_easy_init();
    if (!o->easy)
        abort();
    CURL *e = o->easy;
    o->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, o);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, o->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, o);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, o);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, o->timeout_ms > 0 ? o->timeout_ms : c->total_ms);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    /* libcurl silently re-sends a request once when a reused connection dies before any
     * response byte; for a request that must not be repeated use a fresh connection. A token
     * request is one: its signed assertion is accepted once (jti), so a re-send must carry a
     * fresh one (token_body_renew), which only our own retry does */
    if (o->not_idempotent || o->kind == OP_TOKEN)
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    if (o->kind == OP_PAGE || o->chunk_cb) /* the large bodies: fewer reads and callbacks */
        curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)FHIR_CLIENT_RECV_BUFFER);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "cartgate-fhir-client");
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    if (c->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    if (c->cert_file && !o->foreign)
        curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert_file);
    if (c->key_file && !o->foreign)
        curl_easy_setopt(e, CURLOPT_SSLKEY, c->key_file);

    o->hdrs = NULL;
    add_header(o, "Expect:");
    if (o->kind == OP_TOKEN) {
        add_header(o, "Accept: application/json");
        add_header(o, "Content-Type: application/x-www-form-urlencoded");
    } else if (o->kind == OP_DISCOVERY) {
        add_header(o, "Accept: application/json");
    } else {
        add_headerf(o, "Accept", o->accept ? o->accept : mime(c->format));
        if (o->body && o->content_type) {
            add_headerf(o, "Content-Type", o->content_type);
        } else if (o->body) {
            char ct[96];
            snprintf(ct, sizeof ct, "%s; charset=utf-8", mime(c->format));
            add_headerf(o, "Content-Type", ct);
        }
        if (o->if_none_exist)
            add_headerf(o, "If-None-Exist", o->if_none_exist);
        if (o->if_match)
            add_headerf(o, "If-Match", o->if_match);
        if (o->prefer)
            add_headerf(o, "Prefer", o->prefer);
        if (!o->no_auth) {
            const char *auth = fhir_auth_header(c->auth, fhir_clock_now_ms());
            o->auth_gen = fhir_auth_generation(c->auth);
            if (auth)
                add_header(o, auth);
        }
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, o->hdrs);
    if (!strcmp(o->method, "GET")) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        if (strcmp(o->method, "POST"))
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
        if (o->body || !strcmp(o->method, "POST") || !strcmp(o->method, "PUT")) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, o->body ? o->body : "");
        }
    }
    o->attempts++;
    if (o->kind == OP_USER || o->kind == OP_PAGE)
        o->st->attempts++;
    c->inflight++;
    CURLMcode mc = curl_multi_add_handle(c->multi, e);
    if (mc != CURLM_OK) {
        /* broken invariant: adding a fresh easy handle cannot fail except on OOM */
        fprintf(stderr, "fhir_client: curl_multi_add_handle: %s\n", curl_multi_strerror(mc));
        abort();
    }
}

static void on_retry_timer(evutil_socket_t fd, short kind, void *arg)
{
    op *o = arg;
    queue_push(&o->c->pending_head, &o->c->pending_tail, o, false);
    pump(o->c);
}

static void op_schedule_retry(op *o, long status)
{
    fhir_client *c = o->c;
    int64_t ra = -1;
    if (o->retry_after && fhir_retry_parse_retry_after(o->retry_after, fhir_clock_now_ms(), &ra) < 0)
        ra = -1;
    int64_t delay = fhir_retry_delay_ms(&c->retry, o->retries, next_random(c), ra);
    fhir_client_stats *st = o->st;
    if (st->schedule_len < FHIR_CLIENT_SCHEDULE_MAX) {
        st->schedule_ms[st->schedule_len] = delay;
        st->schedule_status[st->schedule_len] = status;
    }
    st->schedule_len++;
    st->retries++;
    o->retries++;
    fhir_log(FHIR_LOG_INFO, "fhir.retry",
             "endpoint=%s request=%s status=%ld attempt=%u delay_ms=%" PRId64
             " retry_after=%s",
             c->name, o->label, status, o->attempts, delay, ra >= 0 ? "yes" : "no");
    if (!o->retry_timer) {
        o->retry_timer = evtimer_new(c->base, on_retry_timer, o);
        if (!o->retry_timer)
            abort();
    }
    struct timeval tv;
    ms_to_tv(delay, &tv);
    evtimer_add(o->retry_timer, &tv);
}

/* Builds the error message for a failed HTTP status from the (buffered) body. */
static void http_error(op *o, fhir_error *err)
{
    char detail[FHIR_ERROR_MAX] = "";
    if (o->raw.len) {
        fhir_arena *a = fhir_arena_new(16u * FHIR_CLIENT_ERROR_BODY_MAX);
        fhir_error perr = {{0}, 0};
        fhir_node *n = NULL;
        if (o->raw.len < FHIR_CLIENT_ERROR_BODY_MAX)
            n = fhir_json_parse(a, o->raw.data, o->raw.len, NULL, &perr);
        if (!n && o->raw.len < FHIR_CLIENT_ERROR_BODY_MAX && fhir_xml_detect(o->raw.data, o->raw.len))
            n = fhir_xml_parse(a, o->raw.data, o->raw.len, NULL, &perr);
        if (n && fhir_node_resource_type(n))
            fhir_client_outcome_text(n, detail, sizeof detail);
        else if (n && fhir_node_str(fhir_node_get(n, "error"))) /* OAuth error */
            snprintf(detail, sizeof detail, "%s%s%s", fhir_node_str(fhir_node_get(n, "error")),
                     fhir_node_str(fhir_node_get(n, "error_description")) ? ": " : "",
                     fhir_node_str(fhir_node_get(n, "error_description"))
                         ? fhir_node_str(fhir_node_get(n, "error_description"))
                         : "");
        if (!detail[0]) {
            /* plain text or HTML: first 160 printable bytes */
            size_t k = 0;
            for (size_t i = 0; i < o->raw.len && k < 160; i++) {
                unsigned char ch = (unsigned char)o->raw.data[i];
                detail[k++] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
            }
            detail[k] = '\0';
        }
        fhir_arena_free(a);
    }
    fhir_error_set(err, "%s: HTTP %ld%s%s", o->label, o->status, detail[0] ? ": " : "", detail);
    err->code = (int)o->status;
}

const char *fhir_client_fail_name(fhir_client_fail f)
{
    static const char *const n[] = {"none", "connect", "network", "timeout", "tls", "auth", "http_4xx",
                                    "http_5xx", "parse", "incomplete", "stopped", "other"};
    return (unsigned)f < sizeof n / sizeof n[0] ? n[f] : "other";
}

static fhir_client_fail fail_of_curl(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
        return FHIR_FAIL_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return FHIR_FAIL_TIMEOUT;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return FHIR_FAIL_NETWORK;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
        return FHIR_FAIL_TLS;
    default:
        return FHIR_FAIL_OTHER;
    }
}

/* A failed result without a reason gets the one its status says. */
static void fail_settle(fhir_client_result *r)
{
    if (!r->err.msg[0]) {
        r->fail = FHIR_FAIL_NONE;
        return;
    }
    if (r->fail != FHIR_FAIL_NONE)
        return;
    long st = r->status;
    r->fail = st == 401 || st == 403 ? FHIR_FAIL_AUTH
              : st >= 500           ? FHIR_FAIL_HTTP_5XX
              : st >= 400           ? FHIR_FAIL_HTTP_4XX
                                    : FHIR_FAIL_OTHER;
}

static bool curl_code_transient(CURLcode rc, bool not_idempotent)
{
    if (rc == CURLE_SSL_CONNECT_ERROR)
        return !not_idempotent; /* the handshake broke off (not a failed verification) */
    switch (fail_of_curl(rc)) {
    case FHIR_FAIL_CONNECT:
        return true; /* never reached the server: always safe */
    case FHIR_FAIL_TIMEOUT:
    case FHIR_FAIL_NETWORK:
        return !not_idempotent;
    default:
        return false;
    }
}

/* Token-related ops. */
static void token_done(fhir_client *c, op *o, CURLcode rc);
static void start_token_fetch(fhir_client *c);

static void op_completed(op *o, CURLcode rc)
{
    fhir_client *c = o->c;
    if (o->kind == OP_TOKEN || o->kind == OP_DISCOVERY) {
        token_done(c, o, rc);
        return;
    }
    bool retryable_left = o->attempts < c->retry.max_attempts;
    if (rc != CURLE_OK) {
        if (o->too_big) {
            fhir_error_set(&o->res->err,
                           "%s: response body exceeds the %zu-byte limit; transfer aborted",
                           o->label, o->chunk_cb ? o->stream_max : c->max_bytes);
            o->res->status = o->status;
            op_finish(o);
            return;
        }
        if (o->chunk_stopped) {
            fhir_error_set(&o->res->err, "%s: stopped by the chunk callback after %" PRIu64
                           " bytes", o->label, o->delivered);
            o->res->fail = FHIR_FAIL_STOPPED;
            o->res->status = o->status;
            op_finish(o);
            return;
        }
        if (o->chunk_cb && o->delivered > 0) {
            /* part of the body was handed over: a re-send would repeat it */
            fhir_error_set(&o->res->err, "%s: %s (%s) after %" PRIu64 " body bytes; not retried",
                           o->label, curl_easy_strerror(rc), o->errbuf[0] ? o->errbuf : "no detail",
                           o->delivered);
            o->res->fail = fail_of_curl(rc);
            o->res->status = o->status;
            op_finish(o);
            return;
        }
        if (o->parse_failed) {
            fhir_error_set(&o->res->err, "%s: response body is not valid JSON: %s", o->label,
                           o->parse_err.msg);
            o->res->fail = FHIR_FAIL_PARSE;
            o->res->status = o->status;
            op_finish(o);
            return;
        }
        if (curl_code_transient(rc, o->not_idempotent) && retryable_left) {
            op_schedule_retry(o, 0);
            return;
        }
        fhir_error_set(&o->res->err, "%s: %s (%s)%s", o->label, curl_easy_strerror(rc),
                       o->errbuf[0] ? o->errbuf : "no detail",
                       o->attempts > 1 ? " after retries" : "");
        o->res->fail = fail_of_curl(rc);
        o->res->status = o->status;
        op_finish(o);
        return;
    }
    if (o->status == 401 && !o->no_auth && fhir_auth_get_kind(c->auth) == FHIR_AUTH_SMART &&
        !o->auth_retried) {
        o->auth_retried = true;
        o->st->auth_retries++;
        if (o->auth_gen == fhir_auth_generation(c->auth))
            fhir_auth_invalidate(c->auth);
        fhir_log(FHIR_LOG_INFO, "fhir.auth_retry", "endpoint=%s request=%s", c->name,
                 o->label);
        queue_push(&c->pending_head, &c->pending_tail, o, true);
        return;
    }
    bool transient = fhir_retry_status_transient(o->status);
    if (transient && retryable_left && (!o->not_idempotent || o->status == 429) &&
        o->delivered == 0) {
        op_schedule_retry(o, o->status);
        return;
    }
    o->res->status = o->status;
    if (o->status >= 300) {
        http_error(o, &o->res->err);
        if (transient && o->attempts > 1)
            fhir_error_prefix(&o->res->err, "gave up after %u attempts", o->attempts);
        op_finish(o);
        return;
    }
    /* success: the body */
    if (o->accept_202 && o->status == 202) {
        /* async answer: an OperationOutcome at most; a body that does not parse is ignored */
        if (o->raw.len && c->format == FHIR_FORMAT_JSON) {
            fhir_json_limits lim = {.max_bytes = c->max_bytes};
            o->parsed = fhir_json_parse(o->arena, o->raw.data, o->raw.len, &lim, &o->parse_err);
        }
    } else if (o->streaming) {
        o->parsed = fhir_json_stream_finish(o->stream, &o->parse_err);
        if (!o->parsed) {
            fhir_error_set(&o->res->err, "%s: response body is not valid JSON: %s", o->label,
                           o->parse_err.msg);
            o->res->fail = FHIR_FAIL_PARSE;
        }
    } else if (o->raw.len) {
        if (c->format == FHIR_FORMAT_JSON) {
            fhir_json_limits lim = {.max_bytes = c->max_bytes};
            o->parsed = fhir_json_parse(o->arena, o->raw.data, o->raw.len, &lim, &o->parse_err);
        } else {
            fhir_json_limits lim = {.max_bytes = c->max_bytes};
            o->parsed = fhir_xml_parse_any(o->arena, o->raw.data, o->raw.len, &lim,
                                           &o->parse_err);
        }
        if (!o->parsed) {
            fhir_error_set(&o->res->err, "%s: response body could not be parsed: %s", o->label,
                           o->parse_err.msg);
            o->res->fail = FHIR_FAIL_PARSE;
        }
    }
    op_finish(o);
}

/* Takes o's transfer out of the multi handle and frees it (its headers too). */
static void op_detach_easy(op *o)
{
    curl_multi_remove_handle(o->c->multi, o->easy);
    curl_easy_cleanup(o->easy);
    o->easy = NULL;
    curl_slist_free_all(o->hdrs);
    o->hdrs = NULL;
}

static void check_multi_info(fhir_client *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *e = msg->easy_handle;
        CURLcode rc = msg->data.result;
        op *o = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&o);
        long code = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        if (code)
            o->status = code;
        op_detach_easy(o);
        c->inflight--;
        op_completed(o, rc);
    }
    pump(c);
}

/* ---- SMART token flow ----------------------------------------------------------------- */

static op *op_new(fhir_client *c, op_kind kind, const char *method, const char *url)
{
    op *o = fhir_xcalloc(1, sizeof *o);
    o->c = c;
    o->kind = kind;
    o->method = fhir_xstrdup(method);
    o->url = fhir_xstrdup(url);
    o->label = make_label(c, method, url);
    fhir_buf_init(&o->raw, kind == OP_TOKEN || kind == OP_DISCOVERY ? FHIR_CLIENT_AUTH_BODY_MAX
                                                                      : c->max_bytes);
    o->all_next = c->all;
    if (c->all)
        c->all->all_prev = o;
    c->all = o;
    return o;
}

static void fail_waiting(fhir_client *c, const fhir_error *cause)
{
    op *w;
    while ((w = queue_pop(&c->waiting_head, &c->waiting_tail))) {
        w->res->err = *cause;
        w->res->status = cause->code;
        w->res->fail = FHIR_FAIL_AUTH;
        op_finish(w);
    }
}

static void start_token_fetch(fhir_client *c)
{
    if (c->token_busy)
        return;
    c->token_busy = true;
    op *o;
    if (!fhir_auth_token_url(c->auth)) {
        char url[4096];
        snprintf(url, sizeof url, "%s/.well-known/smart-configuration", c->base_url);
        o = op_new(c, OP_DISCOVERY, "GET", url);
    } else {
        fhir_error err = {{0}, 0};
        char *body = fhir_auth_token_request(c->auth, fhir_clock_now_ms(), &err);
        if (!body) {
            c->token_busy = false;
            fhir_error_prefix(&err, "SMART token request");
            fail_waiting(c, &err);
            return;
        }
        o = op_new(c, OP_TOKEN, "POST", fhir_auth_token_url(c->auth));
        o->body = body;
        o->body_len = strlen(body);
        o->not_idempotent = false;
        c->total.token_fetches++;
    }
    o->res = result_new();
    o->st = &o->res->stats;
    queue_push(&c->pending_head, &c->pending_tail, o, true);
}

/* A token request about to be sent again gets a fresh assertion (a new jti): the endpoint may
 * have read the last one before the failure (a reset after it answered, a 5xx after it checked
 * the assertion), and an assertion is accepted once. 0, or -1 with err. */
static int token_body_renew(fhir_client *c, op *o, fhir_error *err)
{
    if (o->kind != OP_TOKEN)
        return 0;
    char *body = fhir_auth_token_request(c->auth, fhir_clock_now_ms(), err);
    if (!body)
        return -1;
    free(o->body);
    o->body = body;
    o->body_len = strlen(body);
    c->total.token_fetches++;
    return 0;
}

static void token_done(fhir_client *c, op *o, CURLcode rc)
{
    fhir_error err = {{0}, 0};
    const char *what = o->kind == OP_TOKEN ? "SMART token request" : "SMART discovery";
    bool retryable_left = o->attempts < c->retry.max_attempts;
    if (rc != CURLE_OK) {
        if (!o->too_big && curl_code_transient(rc, false) && retryable_left &&
            token_body_renew(c, o, &err) == 0) {
            op_schedule_retry(o, 0);
            return;
        }
        if (!err.msg[0])
            fhir_error_set(&err, "%s %s: %s (%s)", what, o->url,
                           o->too_big ? "response too large" : curl_easy_strerror(rc), o->errbuf);
    } else if (fhir_retry_status_transient(o->status) && retryable_left) {
        if (token_body_renew(c, o, &err) == 0) {
            op_schedule_retry(o, o->status);
            return;
        }
    } else if (o->status != 200) {
        http_error(o, &err);
        fhir_error_prefix(&err, "%s refused", what);
    } else if (o->kind == OP_DISCOVERY) {
        if (fhir_auth_parse_discovery(c->auth, o->raw.data ? o->raw.data : "", o->raw.len,
                                      c->base_url, &err) == 0) {
            c->token_busy = false;
            op_free(o);
            start_token_fetch(c);
            return;
        }
    } else {
        if (fhir_auth_accept_token(c->auth, o->raw.data ? o->raw.data : "", o->raw.len,
                                   fhir_clock_now_ms(), &err) == 0) {
            fhir_log(FHIR_LOG_INFO, "fhir.token", "endpoint=%s expires_in_ms=%" PRId64, c->name,
                     fhir_auth_token_expiry(c->auth) - fhir_clock_now_ms());
            c->token_busy = false;
            op_free(o);
            /* waiting requests go first, in their order */
            op *w;
            op *h = NULL, *t = NULL;
            while ((w = queue_pop(&c->waiting_head, &c->waiting_tail)))
                queue_push(&h, &t, w, false);
            if (h) {
                t->next = c->pending_head;
                c->pending_head = h;
                if (!c->pending_tail)
                    c->pending_tail = t;
            }
            return;
        }
    }
    c->token_busy = false;
    fhir_log(FHIR_LOG_WARN, "fhir.token_failed", "endpoint=%s status=%ld", c->name, o->status);
    if (!err.code)
        err.code = (int)o->status;
    op_free(o);
    fail_waiting(c, &err);
}

/* ---- queue pump ----------------------------------------------------------------------- */

static void on_rate_timer(evutil_socket_t fd, short kind, void *arg)
{
    pump(arg);
}

static void pump(fhir_client *c)
{
    while (c->pending_head && c->inflight < c->max_concurrent) {
        op *o = c->pending_head;
        if (o->kind == OP_USER || o->kind == OP_PAGE) {
            if (!o->no_auth && fhir_auth_needs_token(c->auth, fhir_clock_now_ms())) {
                queue_pop(&c->pending_head, &c->pending_tail);
                queue_push(&c->waiting_head, &c->waiting_tail, o, false);
                start_token_fetch(c);
                continue;
            }
            int64_t wait = fhir_retry_bucket_take(&c->bucket, loop_now_ms());
            if (wait > 0) {
                if (!evtimer_pending(c->rate_timer, NULL)) {
                    struct timeval tv;
                    ms_to_tv(wait, &tv);
                    evtimer_add(c->rate_timer, &tv);
                }
                return;
            }
        }
        queue_pop(&c->pending_head, &c->pending_tail);
        op_start_attempt(o);
    }
}

/* ---- completion ----------------------------------------------------------------------- */

static void op_free(op *o)
{
    if (!o)
        return;
    if (o->retry_timer)
        event_free(o->retry_timer);
    if (o->stream)
        fhir_json_stream_free(o->stream);
    fhir_buf_free(&o->raw);
    free(o->method);
    free(o->url);
    free(o->label);
    free(o->body);
    free(o->if_none_exist);
    free(o->if_match);
    free(o->prefer);
    free(o->accept);
    free(o->content_type);
    free_headers(o);
    if (o->kind != OP_PAGE)
        fhir_arena_free(o->arena);
    fhir_client_result_free(o->res);
    fhir_client *c = o->c;
    if (o->all_prev)
        o->all_prev->all_next = o->all_next;
    else
        c->all = o->all_next;
    if (o->all_next)
        o->all_next->all_prev = o->all_prev;
    free(o);
}

static void search_page_done(op *o);

static void op_finish(op *o)
{
    fhir_client *c = o->c;
    if (o->kind == OP_PAGE) {
        search_page_done(o);
        return;
    }
    fhir_client_result *r = o->res;
    o->res = NULL;
    r->stats.operations = 1;
    r->err.code = r->err.msg[0] ? (r->err.code ? r->err.code : (int)r->status) : 0;
    fail_settle(r);
    if (!r->err.msg[0]) {
        r->body = o->parsed;
        r->arena = o->arena;
        o->arena = NULL;
        r->location = o->location;
        r->etag = o->etag;
        o->location = o->etag = NULL;
    }
    r->retry_after = o->retry_after;
    o->retry_after = NULL;
    r->content_location = o->hdr[H_CONTENT_LOCATION];
    r->x_progress = o->hdr[H_X_PROGRESS];
    r->expires = o->hdr[H_EXPIRES];
    r->content_type = o->hdr[H_CONTENT_TYPE];
    for (int i = 0; i < H_COUNT; i++)
        o->hdr[i] = NULL;
    stats_add(&c->total, &r->stats);
    fhir_client_done_cb cb = o->cb;
    void *ud = o->ud;
    op_free(o);
    if (cb)
        cb(ud, r);
    else
        fhir_client_result_free(r);
}

/* ---- public: lifecycle ---------------------------------------------------------------- */

static char *trim_base(const char *url)
{
    size_t n = strlen(url);
    while (n && url[n - 1] == '/')
        n--;
    return fhir_xstrndup(url, n);
}

fhir_client *fhir_client_new(struct event_base *base, const fhir_client_config *cfg,
                             fhir_error *err)
{
    static bool curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            fhir_error_set(err, "curl_global_init failed");
            return NULL;
        }
        curl_ready = true;
    }
    if (!cfg || !cfg->base_url || (strncmp(cfg->base_url, "http://", 7) &&
                                   strncmp(cfg->base_url, "https://", 8))) {
        fhir_error_set(err, "FHIR base URL must start with http:// or https:// (got '%s')",
                       cfg && cfg->base_url ? cfg->base_url : "");
        return NULL;
    }
    if ((cfg->cert_file == NULL) != (cfg->key_file == NULL)) {
        fhir_error_set(err, "client certificate and key must be given together");
        return NULL;
    }
    char norm[300];
    if (!fhir_client_url_origin(cfg->base_url, norm, sizeof norm)) {
        fhir_error_set(err, "FHIR base URL '%s' does not parse", cfg->base_url);
        return NULL;
    }
    char tnorm[300];
    for (size_t i = 0; i < cfg->n_trusted_origins; i++)
        if (!cfg->trusted_origins[i] ||
            !fhir_client_url_origin(cfg->trusted_origins[i], tnorm, sizeof tnorm)) {
            fhir_error_set(err, "trusted origin '%s' is not an http(s) URL",
                           cfg->trusted_origins[i] ? cfg->trusted_origins[i] : "");
            return NULL;
        }
    fhir_auth *auth = fhir_auth_new(&cfg->auth, err);
    if (!auth)
        return NULL;
    fhir_client *c = fhir_xcalloc(1, sizeof *c);
    c->auth = auth;
    c->origin_norm = fhir_xstrdup(norm);
    if (cfg->n_trusted_origins) {
        c->trusted = fhir_xcalloc(cfg->n_trusted_origins, sizeof *c->trusted);
        for (size_t i = 0; i < cfg->n_trusted_origins; i++) {
            fhir_client_url_origin(cfg->trusted_origins[i], tnorm, sizeof tnorm);
            c->trusted[c->n_trusted++] = fhir_xstrdup(tnorm);
        }
    }
    c->base = base;
    if (!c->base) {
        c->base = event_base_new();
        if (!c->base)
            abort();
        c->own_base = true;
    }
    c->name = fhir_xstrdup(cfg->name ? cfg->name : "fhir");
    c->base_url = trim_base(cfg->base_url);
    const char *hs = strstr(c->base_url, "://") + 3;
    size_t olen = (size_t)(hs - c->base_url) + strcspn(hs, "/?#");
    c->origin = fhir_xstrndup(c->base_url, olen);
    c->format = cfg->format;
    c->connect_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : DEFAULT_CONNECT_MS;
    c->total_ms = cfg->total_timeout_ms > 0 ? cfg->total_timeout_ms : DEFAULT_TOTAL_MS;
    c->max_concurrent = cfg->max_concurrent ? cfg->max_concurrent : DEFAULT_CONCURRENT;
    c->max_bytes = cfg->max_response_bytes ? cfg->max_response_bytes : FHIR_CLIENT_DEFAULT_MAX_BYTES;
    c->max_pages = cfg->max_pages ? cfg->max_pages : FHIR_CLIENT_DEFAULT_MAX_PAGES;
    c->ca_file = fhir_xstrdup(cfg->ca_file);
    c->cert_file = fhir_xstrdup(cfg->cert_file);
    c->key_file = fhir_xstrdup(cfg->key_file);
    c->retry = cfg->retry;
    fhir_retry_policy_default(&c->retry);
    c->random = cfg->random;
    c->random_ud = cfg->random_ud;
    if (RAND_bytes((unsigned char *)&c->prng, sizeof c->prng) != 1 || !c->prng)
        c->prng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)loop_now_ms();
    fhir_retry_bucket_init(&c->bucket, cfg->rate_per_s, 0, loop_now_ms());

    c->multi = curl_multi_init();
    if (!c->multi)
        abort();
    c->curl_timer = evtimer_new(c->base, on_curl_timeout, c);
    c->rate_timer = evtimer_new(c->base, on_rate_timer, c);
    if (!c->curl_timer || !c->rate_timer)
        abort();
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)c->max_concurrent + 1);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)c->max_concurrent + 2);
    return c;
}

void fhir_client_free(fhir_client *c)
{
    if (!c)
        return;
    while (c->all) {
        op *o = c->all;
        if (o->easy)
            op_detach_easy(o);
        if (o->kind == OP_PAGE && o->s) {
            search *s = o->s;
            o->arena = NULL;
            fhir_arena_free(s->arena);
            fhir_arena_free(s->ahead);
            fhir_client_result_free(s->res);
            fhir_buf_free(&s->warnings);
            free(s->prev_url);
            free(s);
        }
        op_free(o);
    }
    curl_multi_cleanup(c->multi);
    event_free(c->curl_timer);
    event_free(c->rate_timer);
    fhir_auth_free(c->auth);
    if (c->own_base)
        event_base_free(c->base);
    free(c->name);
    free(c->base_url);
    free(c->origin);
    free(c->origin_norm);
    for (size_t i = 0; i < c->n_trusted; i++)
        free(c->trusted[i]);
    free(c->trusted);
    free(c->ca_file);
    free(c->cert_file);
    free(c->key_file);
    free(c);
}

struct event_base *fhir_client_base(const fhir_client *c)
{
    return c->base;
}

const fhir_client_stats *fhir_client_stats_get(const fhir_client *c)
{
    return &c->total;
}

const char *fhir_client_base_url(const fhir_client *c)
{
    return c->base_url;
}

/* ---- public: operations --------------------------------------------------------------- */

typedef enum origin_kind { ORIGIN_OTHER = -1, ORIGIN_SAME = 0, ORIGIN_TRUSTED = 1 } origin_kind;

/* Where an absolute URL points: the base's origin, a trusted one, or another (also when it
 * does not parse); its normalised origin (or "[bad URL]") goes to name. */
static origin_kind url_origin_kind(const fhir_client *c, const char *url, char *name,
                                   size_t namelen)
{
    if (!fhir_client_url_origin(url, name, namelen)) {
        snprintf(name, namelen, "[bad URL]");
        return ORIGIN_OTHER;
    }
    if (!strcmp(name, c->origin_norm))
        return ORIGIN_SAME;
    for (size_t i = 0; i < c->n_trusted; i++)
        if (!strcmp(name, c->trusted[i]))
            return ORIGIN_TRUSTED;
    return ORIGIN_OTHER;
}

/* The refusal of a URL on another origin, naming it. */
static void origin_refused(const fhir_client *c, const char *what, const char *origin,
                           fhir_error *err)
{
    fhir_error_set(err, "%s on origin %s refused: not the endpoint's origin %s%s", what, origin,
                   c->origin_norm, c->n_trusted ? " nor a trusted origin" : "");
}

static char *make_url(fhir_client *c, const char *path, fhir_error *err)
{
    if (!path)
        path = "";
    if (strstr(path, "://")) {
        char origin[300];
        if (url_origin_kind(c, path, origin, sizeof origin) == ORIGIN_OTHER) {
            origin_refused(c, "URL", origin, err);
            return NULL;
        }
        for (const char *p = path; *p; p++)
            if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
                fhir_error_set(err, "URL contains a space or control character");
                return NULL;
            }
        return fhir_xstrdup(path);
    }
    for (const char *p = path; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            fhir_error_set(err, "path contains a space or control character");
            return NULL;
        }
    while (*path == '/')
        path++;
    size_t n = strlen(c->base_url) + strlen(path) + 2;
    char *u = fhir_xmalloc(n);
    snprintf(u, n, "%s%s%s", c->base_url, *path ? "/" : "", path);
    return u;
}

static int serialise(fhir_client *c, const fhir_client_request *req, char **out, size_t *len,
                     fhir_error *err)
{
    *out = NULL;
    *len = 0;
    if (req->body) {
        *out = fhir_xstrndup(req->body, req->body_len);
        *len = req->body_len;
        return 0;
    }
    if (!req->resource)
        return 0;
    fhir_buf b;
    fhir_buf_init(&b, c->max_bytes);
    int rc;
    if (c->format == FHIR_FORMAT_XML) {
        rc = fhir_xml_write(&b, req->resource, FHIR_XML_COMPACT, err);
        if (rc < 0) {
            fhir_buf_free(&b);
            return fhir_error_prefix(err, "request body as XML");
        }
    } else {
        rc = fhir_json_write(&b, req->resource, FHIR_JSON_COMPACT);
    }
    if (rc < 0 || b.overflow) {
        fhir_buf_free(&b);
        return fhir_error_set(err, "request body exceeds %zu bytes", c->max_bytes);
    }
    fhir_buf_cstr(&b);
    *out = fhir_buf_steal(&b, len);
    return 0;
}

static op *user_op(fhir_client *c, const fhir_client_request *req, fhir_error *err)
{
    const char *method = req->method ? req->method : "GET";
    if (strcmp(method, "GET") && strcmp(method, "POST") && strcmp(method, "PUT") &&
        strcmp(method, "DELETE") && strcmp(method, "PATCH")) {
        fhir_error_set(err, "unsupported HTTP method '%s'", method);
        return NULL;
    }
    char *url = make_url(c, req->path, err);
    if (!url)
        return NULL;
    char *body;
    size_t blen;
    if (serialise(c, req, &body, &blen, err) < 0) {
        free(url);
        return NULL;
    }
    op *o = op_new(c, OP_USER, method, url);
    free(url);
    o->body = body;
    o->body_len = blen;
    o->if_none_exist = fhir_xstrdup(req->if_none_exist);
    o->if_match = fhir_xstrdup(req->if_match);
    o->prefer = fhir_xstrdup(req->prefer);
    o->not_idempotent = req->not_idempotent;
    o->accept_202 = req->accept_202;
    o->accept = fhir_xstrdup(req->accept);
    o->content_type = fhir_xstrdup(req->content_type);
    o->timeout_ms = req->timeout_ms;
    for (const char *h = o->accept; h && *h; h++)
        if ((unsigned char)*h < 0x20) {
            op_free(o);
            fhir_error_set(err, "Accept holds a control character");
            return NULL;
        }
    for (const char *h = o->content_type; h && *h; h++)
        if ((unsigned char)*h < 0x20) {
            op_free(o);
            fhir_error_set(err, "Content-Type holds a control character");
            return NULL;
        }
    for (const char *h = o->if_none_exist; h && *h; h++)
        if ((unsigned char)*h < 0x20) {
            op_free(o);
            fhir_error_set(err, "If-None-Exist holds a control character");
            return NULL;
        }
    o->arena = fhir_arena_new(16 * c->max_bytes);
    o->res = result_new();
    o->st = &o->res->stats;
    return o;
}

int fhir_client_send(fhir_client *c, const fhir_client_request *req, fhir_client_done_cb cb,
                     void *ud, fhir_error *err)
{
    op *o = user_op(c, req, err);
    if (!o)
        return -1;
    o->cb = cb;
    o->ud = ud;
    queue_push(&c->pending_head, &c->pending_tail, o, false);
    pump(c);
    return 0;
}

int fhir_client_get_stream(fhir_client *c, const fhir_client_stream_request *req,
                           fhir_client_chunk_cb chunk, fhir_client_done_cb done, void *ud,
                           fhir_error *err)
{
    if (!req || !req->url || !chunk)
        return fhir_error_set(err, "streaming GET: URL and chunk callback are required");
    const char *accept = req->accept ? req->accept : "application/fhir+ndjson";
    for (const char *h = accept; *h; h++)
        if ((unsigned char)*h < 0x20)
            return fhir_error_set(err, "Accept holds a control character");
    char *url = NULL;
    bool foreign = false;
    if (req->no_auth && strstr(req->url, "://")) {
        /* no token goes with it: any http(s) origin, but no downgrade from https */
        char origin[300];
        foreign = url_origin_kind(c, req->url, origin, sizeof origin) == ORIGIN_OTHER;
        if (!strcmp(origin, "[bad URL]"))
            return fhir_error_set(err, "streaming GET: not an absolute http(s) URL");
        if (!strncmp(origin, "http:", 5) && !strncmp(c->origin_norm, "https:", 6))
            return fhir_error_set(err, "streaming GET: URL on origin %s refused: plain http "
                                       "while the endpoint uses https", origin);
        for (const char *p = req->url; *p; p++)
            if ((unsigned char)*p <= 0x20 || *p == 0x7f)
                return fhir_error_set(err, "URL contains a space or control character");
        url = fhir_xstrdup(req->url);
    } else {
        url = make_url(c, req->url, err);
    }
    if (!url)
        return -1;
    op *o = op_new(c, OP_USER, "GET", url);
    free(url);
    o->no_auth = req->no_auth;
    o->foreign = foreign;
    o->accept = fhir_xstrdup(accept);
    o->timeout_ms = req->timeout_ms;
    o->chunk_cb = chunk;
    o->stream_max = req->max_bytes ? req->max_bytes : c->max_bytes;
    o->res = result_new();
    o->st = &o->res->stats;
    o->cb = done;
    o->ud = ud;
    queue_push(&c->pending_head, &c->pending_tail, o, false);
    pump(c);
    return 0;
}

static bool safe_segment(const char *s)
{
    if (!s || !*s || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.')
            return false;
    return true;
}

int fhir_client_read(fhir_client *c, const char *type, const char *id, fhir_client_done_cb cb,
                     void *ud, fhir_error *err)
{
    if (!safe_segment(type) || !safe_segment(id))
        return fhir_error_set(err, "read: bad resource type or id");
    char path[160];
    snprintf(path, sizeof path, "%s/%s", type, id);
    fhir_client_request req = {.method = "GET", .path = path};
    return fhir_client_send(c, &req, cb, ud, err);
}

int fhir_client_create(fhir_client *c, const char *type, const fhir_node *resource,
                       const char *if_none_exist, fhir_client_done_cb cb, void *ud,
                       fhir_error *err)
{
    if (!safe_segment(type))
        return fhir_error_set(err, "create: bad resource type");
    fhir_client_request req = {.method = "POST", .path = type, .resource = resource,
                               .if_none_exist = if_none_exist,
                               .not_idempotent = if_none_exist == NULL};
    return fhir_client_send(c, &req, cb, ud, err);
}

int fhir_client_update(fhir_client *c, const char *type, const char *id,
                       const fhir_node *resource, const char *if_match,
                       fhir_client_done_cb cb, void *ud, fhir_error *err)
{
    if (!safe_segment(type) || !safe_segment(id))
        return fhir_error_set(err, "update: bad resource type or id");
    char path[160];
    snprintf(path, sizeof path, "%s/%s", type, id);
    fhir_client_request req = {.method = "PUT", .path = path, .resource = resource,
                               .if_match = if_match};
    return fhir_client_send(c, &req, cb, ud, err);
}

int fhir_client_transaction(fhir_client *c, const fhir_node *bundle, fhir_client_done_cb cb,
                            void *ud, fhir_error *err)
{
    const char *rt = fhir_node_resource_type(bundle);
    const char *type = fhir_node_str(fhir_node_get(bundle, "type"));
    if (!rt || strcmp(rt, "Bundle") || !type ||
        (strcmp(type, "transaction") && strcmp(type, "batch")))
        return fhir_error_set(err, "transaction: body must be a Bundle of type transaction "
                                   "or batch");
    fhir_client_request req = {.method = "POST", .path = "", .resource = bundle};
    return fhir_client_send(c, &req, cb, ud, err);
}

int fhir_client_metadata(fhir_client *c, fhir_client_done_cb cb, void *ud, fhir_error *err)
{
    fhir_client_request req = {.method = "GET", .path = "metadata"};
    return fhir_client_send(c, &req, cb, ud, err);
}

/* ---- search --------------------------------------------------------------------------- */

static void search_end(search *s, op *o)
{
    fhir_client *c = s->c;
    fhir_client_result *r = s->res;
    s->res = NULL;
    r->stats.operations = 1;
    if (r->err.msg[0] && !r->err.code)
        r->err.code = (int)r->status;
    fail_settle(r);
    stats_add(&c->total, &r->stats);
    if (s->warnings.len) {
        fhir_buf_cstr(&s->warnings);
        size_t len;
        r->warnings = fhir_buf_steal(&s->warnings, &len);
    }
    fhir_buf_free(&s->warnings);
    fhir_client_done_cb cb = s->done;
    void *ud = s->done_ud;
    fhir_arena_free(s->arena);
    fhir_arena_free(s->ahead);
    free(s->prev_url);
    free(s);
    if (o) {
        o->arena = NULL; /* the search's, freed above */
        op_free(o);
    }
    if (cb)
        cb(ud, r);
    else
        fhir_client_result_free(r);
}

static op *page_op(search *s, const char *url, fhir_arena *a)
{
    op *o = op_new(s->c, OP_PAGE, "GET", url);
    o->s = s;
    o->arena = a;
    o->st = &s->res->stats;
    o->res = result_new(); /* per-page status/err carrier */
    return o;
}

static const char *next_link(const fhir_node *bundle)
{
    for (const fhir_node *l = fhir_node_first(fhir_node_get(bundle, "link")); l; l = l->next) {
        const char *rel = fhir_node_str(fhir_node_get(l, "relation"));
        if (rel && !strcmp(rel, "next"))
            return fhir_node_str(fhir_node_get(l, "url"));
    }
    return NULL;
}

/* The OperationOutcome entries of a searchset page (search.mode "outcome", or an
 * OperationOutcome without a mode): every issue is counted; each distinct one is logged once
 * per search (severity, code, text; never the query or the URL) and kept for the result. */
static void page_outcomes(search *s, const char *label, const fhir_node *entry)
{
    const fhir_node *oo = fhir_node_get(entry, "resource");
    for (const fhir_node *is = fhir_node_first(fhir_node_get(oo, "issue")); is; is = is->next) {
        s->res->stats.outcome_issues++;
        const char *sev = fhir_node_str(fhir_node_get(is, "severity"));
        const char *code = fhir_node_str(fhir_node_get(is, "code"));
        const char *txt = fhir_node_path_str(is, "details.text");
        if (!txt)
            txt = fhir_node_str(fhir_node_get(is, "diagnostics"));
        if (!txt)
            txt = fhir_node_path_str(is, "details.coding.display");
        char line[400];
        int n = snprintf(line, sizeof line, "%s %s: %s", sev ? sev : "unknown",
                         code ? code : "unknown", txt ? txt : "(no text)");
        if (n < 0)
            continue;
        for (char *p = line; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = ' ';
        size_t ll = strlen(line);
        bool seen = false;
        for (const char *w = s->warnings.len ? s->warnings.data : NULL; w && *w;) {
            const char *nl = strchr(w, '\n');
            size_t wl = nl ? (size_t)(nl - w) : strlen(w);
            if (wl == ll && !memcmp(w, line, ll)) {
                seen = true;
                break;
            }
            w = nl ? nl + 1 : NULL;
        }
        if (seen || s->warnings.overflow)
            continue;
        if (fhir_buf_printf(&s->warnings, "%s\n", line) < 0)
            continue;
        fhir_buf_cstr(&s->warnings);
        fhir_log(FHIR_LOG_WARN, "fhir.search_outcome",
                 "endpoint=%s request=%s severity=%s code=%s text=%s page=%u", s->c->name,
                 label, sev ? sev : "unknown",
                 code ? code : "unknown", txt ? txt : "",
                 s->pages);
    }
}

/* The URL of the page a next link names (relative links against the base; another origin
 * only when trusted), or NULL with err: refused, malformed, or the current page again. */
static char *next_page_url(search *s, const char *next, fhir_error *err)
{
    fhir_client *c = s->c;
    char *url = NULL;
    if (!strstr(next, "://")) {
        url = make_url(c, next, err);
    } else {
        char origin[300];
        if (url_origin_kind(c, next, origin, sizeof origin) == ORIGIN_OTHER)
            origin_refused(c, "next link", origin, err);
        else
            url = make_url(c, next, err);
    }
    if (url && s->prev_url && !strcmp(url, s->prev_url)) {
        free(url);
        url = NULL;
        fhir_error_set(err, "next link repeats the current page");
    }
    return url;
}

/* Drops a page asked for ahead whose search ends first: out of the multi handle (or out of
 * the queue it waits in), then freed. Its arena stays the search's. */
static void op_cancel(op *o)
{
    fhir_client *c = o->c;
    if (o->easy) {
        op_detach_easy(o);
        c->inflight--;
    } else if (!queue_remove(&c->pending_head, &c->pending_tail, o)) {
        queue_remove(&c->waiting_head, &c->waiting_tail, o);
    }
    o->arena = NULL;
    op_free(o);
}

static void search_page_done(op *o)
{
    search *s = o->s;
    fhir_client *c = s->c;
    fhir_client_result *pr = o->res;
    s->res->status = pr->status;
    if (pr->err.msg[0]) {
        s->res->err = pr->err;
        s->res->fail = pr->fail;
        fhir_error_prefix(&s->res->err, "search page %u", s->pages + 1);
        search_end(s, o);
        return;
    }
    const fhir_node *b = o->parsed;
    const char *rt = fhir_node_resource_type(b);
    if (!rt || strcmp(rt, "Bundle")) {
        fhir_error_set(&s->res->err, "search page %u: response is %s, not a Bundle",
                       s->pages + 1, rt ? rt : "not a resource");
        s->res->fail = FHIR_FAIL_PARSE;
        search_end(s, o);
        return;
    }
    s->pages++;
    s->res->stats.pages++;
    size_t nres = 0;
    for (const fhir_node *e = fhir_node_first(fhir_node_get(b, "entry")); e; e = e->next) {
        const fhir_node *r = fhir_node_get(e, "resource");
        if (r)
            nres++;
        const char *mode = fhir_node_path_str(e, "search.mode");
        const char *ert = fhir_node_resource_type(r);
        bool is_oo = ert && !strcmp(ert, "OperationOutcome");
        if (mode ? !strcmp(mode, "outcome") : is_oo)
            page_outcomes(s, o->label, e);
        else if (r && (mode ? !strcmp(mode, "match") : !is_oo))
            s->matches++;
    }
    s->res->stats.resources += nres;
    int64_t tv;
    if (fhir_node_int(fhir_node_get(b, "total"), &tv) && tv >= 0)
        s->total = (long long)tv;
    /* The next page is asked for before this one is handed to the caller, so the server
     * makes it while the caller reads this one (the two would otherwise take turns). Its
     * tree goes to the other arena; its bytes are read only when the event loop runs again,
     * after the caller has returned, so pages still reach the caller in order. What is wrong
     * with the link is said after the caller has had this page, as before. */
    const char *next = next_link(b);
    char *url = NULL;
    fhir_error uerr = {{0}, 0};
    op *ahead = NULL;
    if (next && s->pages < c->max_pages) {
        url = next_page_url(s, next, &uerr);
        if (url) {
            ahead = page_op(s, url, s->ahead); /* empty: reset when its last page was done */
            queue_push(&c->pending_head, &c->pending_tail, ahead, false);
            pump(c);
            if (ahead->easy) {
                /* send it now: libcurl would otherwise wait for its timer, that is, for
                 * the caller to return (no completion is handled here: check_multi_info,
                 * which called us, reads them after we return) */
                int running = 0;
                curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            }
        }
    }
    if (s->page_cb && s->page_cb(s->ud, b, s->pages) != 0) {
        if (ahead)
            op_cancel(ahead);
        free(url);
        fhir_error_set(&s->res->err, "search stopped by caller after page %u", s->pages);
        s->res->fail = FHIR_FAIL_STOPPED;
        search_end(s, o);
        return;
    }
    if (!next) {
        if (!s->count_only && s->total >= 0 && (long long)s->matches < s->total) {
            fhir_error_set(&s->res->err,
                           "search incomplete: %zu of %lld matches received (Bundle.total) "
                           "and page %u has no next link",
                           s->matches, s->total, s->pages);
            s->res->fail = FHIR_FAIL_INCOMPLETE;
        }
        search_end(s, o);
        return;
    }
    if (s->pages >= c->max_pages) {
        fhir_error_set(&s->res->err,
                       "search stopped at the page cap (%u pages); the server has more pages",
                       c->max_pages);
        s->res->fail = FHIR_FAIL_INCOMPLETE;
        search_end(s, o);
        return;
    }
    if (!url) {
        s->res->err = uerr;
        fhir_error_prefix(&s->res->err, "search page %u", s->pages);
        search_end(s, o);
        return;
    }
    o->arena = NULL; /* the search's, not the op's */
    op_free(o);
    /* this page's tree is done with; the next page's arena becomes the current one */
    fhir_arena *done_arena = s->arena;
    fhir_arena_reset(done_arena);
    s->arena = s->ahead;
    s->ahead = done_arena;
    free(s->prev_url);
    s->prev_url = url;
    /* pump() runs from check_multi_info after this returns */
}

/* Does the query string of url hold the parameter "name=value" param exactly? */
static bool query_has(const char *url, const char *param)
{
    const char *q = strchr(url, '?');
    size_t n = strlen(param);
    for (const char *p = q; p && *p && *p != '#'; p = strpbrk(p + 1, "&#")) {
        if (*p == '#')
            break;
        if (!strncmp(p + 1, param, n) && strchr("&#", p[1 + n]))
            return true;
    }
    return false;
}

static int search_start(fhir_client *c, const char *query, fhir_client_page_cb page_cb,
                        void *page_ud, fhir_client_done_cb done, void *done_ud,
                        fhir_error *err)
{
    char *url = make_url(c, query, err);
    if (!url)
        return -1;
    search *s = fhir_xcalloc(1, sizeof *s);
    s->c = c;
    s->page_cb = page_cb;
    s->done = done;
    s->ud = page_ud;
    s->done_ud = done_ud;
    s->res = result_new();
    s->arena = fhir_arena_new(16 * c->max_bytes);
    s->ahead = fhir_arena_new(16 * c->max_bytes);
    s->prev_url = fhir_xstrdup(url);
    s->total = -1;
    fhir_buf_init(&s->warnings, FHIR_CLIENT_WARNINGS_MAX);
    s->count_only = query_has(url, "_summary=count") || query_has(url, "_count=0");
    op *o = page_op(s, url, s->arena);
    free(url);
    queue_push(&c->pending_head, &c->pending_tail, o, false);
    pump(c);
    return 0;
}

int fhir_client_search(fhir_client *c, const char *query, fhir_client_page_cb page_cb,
                       fhir_client_done_cb done, void *ud, fhir_error *err)
{
    return search_start(c, query, page_cb, ud, done, ud, err);
}
/* ---- synchronous wrappers ------------------------------------------------------------- */

typedef struct sync_state {
    bool done;
    fhir_client_result *res;
} sync_state;

static void sync_done(void *ud, fhir_client_result *r)
{
    sync_state *st = ud;
    st->res = r;
    st->done = true;
}

static fhir_client_result *sync_wait(fhir_client *c, sync_state *st)
{
    while (!st->done) {
        int rc = event_base_loop(c->base, EVLOOP_ONCE);
        if (rc != 0 && !st->done) {
            /* nothing left to wait for but no completion: a broken invariant */
            fprintf(stderr, "fhir_client: event loop idle before the operation ended (%d)\n", rc);
            abort();
        }
    }
    return st->res;
}

fhir_client_result *fhir_client_send_sync(fhir_client *c, const fhir_client_request *req)
{
    sync_state st = {0};
    fhir_error err = {{0}, 0};
    if (fhir_client_send(c, req, sync_done, &st, &err) < 0) {
        fhir_client_result *r = result_new();
        r->err = err;
        return r;
    }
    return sync_wait(c, &st);
}

fhir_client_result *fhir_client_search_sync(fhir_client *c, const char *query,
                                            fhir_client_page_cb page_cb, void *ud)
{
    sync_state st = {0};
    fhir_error err = {{0}, 0};
    if (search_start(c, query, page_cb, ud, sync_done, &st, &err) < 0) {
        fhir_client_result *r = result_new();
        r->err = err;
        return r;
    }
    return sync_wait(c, &st);
}
