/* serve — the one HTTP listener (see serve.h). */
#include "serve.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "fhir_alloc.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "fhir_url.h"

#define MAX_EXTRA_HEADERS 16
#define CSP "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; " \
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

typedef struct reg {
    const serve_route *r;
    void *ud;
    size_t max_body;           /* 0 = the listener's (serve_route_body_cap) */
    serve_handler too_large;
    serve_head_check head_ok;  /* SERVE_OWN_AUTH: the handler's check of the head (serve_route_head_check) */
} reg;

typedef struct conn conn;
struct conn {
    serve *s;
    struct bufferevent *bev;  /* handed to evhttp; we hold a reference of our own */
    struct event *deadline;
    bool busy;                /* a request was dispatched and is not answered yet */
    bool evicted;             /* shut down to make room; freed by the sweep */
    bool nodelay;             /* TCP_NODELAY set (on its first request: evhttp sets the socket late) */
    /* the head of the next request, seen before evhttp reads it ("before the body" below) */
    int head;                 /* HEAD_WAIT, HEAD_PASSED or HEAD_CUT */
    struct evbuffer *held;    /* the bytes of a head not yet complete, kept from evhttp */
    struct evbuffer_cb_entry *input_cb;
    size_t scanned;           /* bytes of held searched for the end of the head */
    uint64_t cut_len;         /* the Content-Length of a request cut (HEAD_CUT) */
    bool in_input;            /* on_input runs (its own moves call it again) */
    conn *prev, *next;        /* newest first: the oldest is at the tail */
};

enum { HEAD_WAIT, HEAD_PASSED, HEAD_CUT };

struct serve_req {
    serve *s;
    struct evhttp_request *req;
    const reg *route;
    char method[8];
    char *path;
    char *pnames[SERVE_MAX_PARAMS];
    char *pvals[SERVE_MAX_PARAMS];
    size_t nparams;
    struct evhttp_uri *uri;
    struct evkeyvalq query, form;
    bool query_parsed, form_parsed;
    char *body;
    size_t body_len;
    char *cookie_val;          /* last serve_cookie answer */
    access_principal who;
    bool has_who;
    char source[ACCESS_SOURCE_MAX];
    bool tls;
    bool own_cache_control;
    char *hname[MAX_EXTRA_HEADERS], *hval[MAX_EXTRA_HEADERS];
    size_t nhdr;
    const struct evkeyvalq *head_hdrs; /* a head seen before evhttp read it (dry run) */
    bool dry;                  /* a dry run of the checks on a head: refusals are noted, not sent */
    int refused;               /* the status a dry run would answer (0: none) */
    bool cut;                  /* its body was never read: refused from its head (HEAD_CUT) */
    int64_t t0;
    serve_req *prev, *next;    /* pending (asynchronous) requests */
};

struct serve {
    struct event_base *base;
    access_ctx *acc;
    serve_config cfg;
    char *bind, *cert, *key;
    SSL_CTX *ssl;
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    int port;
    reg routes[SERVE_MAX_ROUTES];
    size_t n_routes;
    conn *conns;
    int cap;                   /* connections served at once: max_connections, lowered to
                                  what the descriptor limit leaves beyond fd_reserve */
    int evicting;              /* evicted connections not yet freed */
    struct event *sweep;       /* finds the connections evhttp has let go */
    struct event *accept_retry; /* re-enables accepting after the process ran out of fds */
    struct event *next_turn;   /* re-enables accepting on the loop's next turn */
    int evicted_turn;          /* connections evicted in this turn of the loop */
    bool paused, closing, accept_failing, resting;
    serve_req *live;           /* every request not answered yet */
    size_t body_read_max;      /* bodies evhttp reads: max_body_bytes, or the largest route
                                  cap + SERVE_BODY_SLACK */
    void (*on_free[8])(void *);
    void *on_free_ud[8];
    size_t n_on_free;
    serve_stats stats;
};

/* ---- configuration ------------------------------------------------------------------------- */

bool serve_is_loopback(const char *addr)
{
    return fhir_url_host_is_loopback(addr);
}

static int ssl_fail(fhir_error *err, const char *what, const char *file)
{
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return fhir_error_set(err, "TLS: %s %s: %s", what, file ? file : "", buf[0] ? buf : "failed");
}

static SSL_CTX *tls_ctx(const char *cert, const char *key, fhir_error *err)
{
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    if (!c) {
        ssl_fail(err, "cannot create a context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    /* TLS 1.2: forward-secret AEAD suites only (TLS 1.3 suites are OpenSSL's defaults) */
    if (SSL_CTX_set_cipher_list(c, "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20") != 1) {
        ssl_fail(err, "cipher list", NULL);
        SSL_CTX_free(c);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(c, cert) != 1) {
        ssl_fail(err, "cannot load the certificate chain", cert);
        SSL_CTX_free(c);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1) {
        ssl_fail(err, "cannot load the private key", key);
        SSL_CTX_free(c);
        return NULL;
    }
    if (SSL_CTX_check_private_key(c) != 1) {
        ssl_fail(err, "the private key does not match the certificate", key);
        SSL_CTX_free(c);
        return NULL;
    }
    return c;
}

int serve_tls_check(const char *cert_file, const char *key_file, fhir_error *err)
{
    SSL_CTX *c = tls_ctx(cert_file, key_file, err);
    if (!c)
        return -1;
    SSL_CTX_free(c);
    return 0;
}

static const char *const METHODS[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};

static bool method_ok(const char *m)
{
    for (size_t i = 0; m && i < sizeof METHODS / sizeof METHODS[0]; i++)
        if (!strcmp(m, METHODS[i]))
            return true;
    return false;
}

static int check_pattern(const char *p, fhir_error *err)
{
    if (!p || p[0] != '/')
        return fhir_error_set(err, "pattern must start with /");
    size_t nparams = 0;
    for (const char *s = p + 1; *s;) {
        size_t n = strcspn(s, "/");
        if (n == 0 && s[0] == '/')
            return fhir_error_set(err, "pattern %s has an empty segment", p);
        if (s[0] == '{') {
            if (n < 3 || s[n - 1] != '}' || n > 33)
                return fhir_error_set(err, "pattern %s: bad parameter segment", p);
            if (++nparams > SERVE_MAX_PARAMS)
                return fhir_error_set(err, "pattern %s: more than %d parameters", p, SERVE_MAX_PARAMS);
        } else if (n == 1 && s[0] == '*') {
            if (s[1])
                return fhir_error_set(err, "pattern %s: * must be the last segment", p);
        } else {
            for (size_t i = 0; i < n; i++)
                if (s[i] == '{' || s[i] == '}' || s[i] == '*' || s[i] == '%' || s[i] == '?')
                    return fhir_error_set(err, "pattern %s: bad character in a segment", p);
        }
        s += n;
        if (*s == '/')
            s++;
    }
    return 0;
}

static int check_route(const serve_route *r, fhir_error *err)
{
    const char *m = r->method ? r->method : "?", *p = r->pattern ? r->pattern : "?";
    if (r->need == ROLE_UNSET || (unsigned)r->need >= ROLE_N_)
        return fhir_error_set(err, "route %s %s declares no role (use ROLE_PUBLIC for an open route)", m, p);
    if ((r->flags & SERVE_OWN_AUTH) && (r->need != ROLE_PUBLIC || (r->flags & (SERVE_HTML | SERVE_NO_CSRF))))
        return fhir_error_set(err, "route %s %s: SERVE_OWN_AUTH routes get no role from the listener (ROLE_PUBLIC, no "
                                   "other flag)", m, p);
    if (!method_ok(r->method))
        return fhir_error_set(err, "route %s %s: unknown method", m, p);
    if (!r->fn)
        return fhir_error_set(err, "route %s %s: no handler", m, p);
    if (check_pattern(r->pattern, err))
        return fhir_error_prefix(err, "route %s", m);
    return 0;
}

int serve_check_routes(const serve_route *routes, size_t n, fhir_error *err)
{
    for (size_t i = 0; i < n; i++) {
        if (check_route(&routes[i], err))
            return -1;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(routes[i].method, routes[j].method) && !strcmp(routes[i].pattern, routes[j].pattern))
                return fhir_error_set(err, "route %s %s registered twice", routes[i].method, routes[i].pattern);
    }
    return 0;
}

int serve_add_routes(serve *s, const serve_route *routes, size_t n, void *ud, fhir_error *err)
{
    if (serve_check_routes(routes, n, err))
        return -1;
    if (s->n_routes + n > SERVE_MAX_ROUTES)
        return fhir_error_set(err, "more than %d routes", SERVE_MAX_ROUTES);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < s->n_routes; j++)
            if (!strcmp(routes[i].method, s->routes[j].r->method) &&
                !strcmp(routes[i].pattern, s->routes[j].r->pattern))
                return fhir_error_set(err, "route %s %s registered twice", routes[i].method, routes[i].pattern);
    for (size_t i = 0; i < n; i++)
        s->routes[s->n_routes++] = (reg){.r = &routes[i], .ud = ud};
    return 0;
}

/* The registered route method + pattern, or NULL. */
static reg *find_reg(serve *s, const char *method, const char *pattern)
{
    for (size_t i = 0; i < s->n_routes; i++)
        if (!strcmp(s->routes[i].r->method, method) && !strcmp(s->routes[i].r->pattern, pattern))
            return &s->routes[i];
    return NULL;
}

int serve_route_body_cap(serve *s, const char *method, const char *pattern, size_t max_body,
                         serve_handler too_large, fhir_error *err)
{
    reg *g = find_reg(s, method, pattern);
    if (!g)
        return fhir_error_set(err, "body cap for %s %s: no such route", method, pattern);
    g->max_body = max_body;
    g->too_large = too_large;
    if (max_body > s->cfg.max_body_bytes && max_body + SERVE_BODY_SLACK > s->body_read_max)
        s->body_read_max = max_body + SERVE_BODY_SLACK;
    if (s->http)
        evhttp_set_max_body_size(s->http, (ev_ssize_t)s->body_read_max);
    return 0;
}

int serve_route_head_check(serve *s, const char *method, const char *pattern, serve_head_check fn, fhir_error *err)
{
    reg *g = find_reg(s, method, pattern);
    if (!g)
        return fhir_error_set(err, "head check for %s %s: no such route", method, pattern);
    if (!(g->r->flags & SERVE_OWN_AUTH))
        return fhir_error_set(err, "head check for %s %s: the listener checks the credentials of this route itself",
                              method, pattern);
    g->head_ok = fn;
    return 0;
}

/* ---- connections -----------------------------------------------------------------------------
 *
 * libevent 2.1 tells nobody when evhttp frees a connection, and a connection that never
 * completes a request never reaches a handler. So each accepted connection's bufferevent
 * (made here by the bevcb) carries a reference of ours: evhttp's bufferevent_free() then only
 * clears its callbacks and drops its own reference, the memory (and the fd) stay valid for our
 * deadline timer, and a sweep once a second (and at the cap) releases the connections whose
 * callbacks evhttp has cleared. evhttp half-closes (shutdown SHUT_WR) a connection it is done
 * with, so clients see the end of a "Connection: close" answer at once. */

static void arm(conn *c, int seconds)
{
    struct timeval tv = {seconds, 0};
    evtimer_add(c->deadline, &tv);
}

static bool released(const conn *c)
{
    bufferevent_data_cb rcb = NULL, wcb = NULL;
    bufferevent_event_cb ecb = NULL;
    void *arg = NULL;
    bufferevent_getcb(c->bev, &rcb, &wcb, &ecb, &arg);
    return !rcb && !wcb && !ecb;
}

/* The listener accepts unless paused at the cap or resting after running out of descriptors. */
static void listener_update(serve *s)
{
    if (s->closing || !s->sock)
        return;
    struct evconnlistener *l = evhttp_bound_socket_get_listener(s->sock);
    if (s->paused || s->accept_failing || s->resting)
        evconnlistener_disable(l);
    else
        evconnlistener_enable(l);
}

static void listener_pause(serve *s, bool pause)
{
    if (s->closing || !s->sock || s->paused == pause)
        return;
    s->paused = pause;
    listener_update(s);
    fhir_log(pause ? FHIR_LOG_WARN : FHIR_LOG_INFO, "serve.cap", "connections=%d cap=%d accepting=%s", s->stats.open,
             s->cap, pause ? "false" : "true");
}

static void conn_free(conn *c)
{
    serve *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->deadline);
    evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
    evbuffer_free(c->held);
    bufferevent_decref(c->bev); /* the last reference: the bufferevent and its fd go */
    if (c->evicted)
        s->evicting--;
    free(c);
    s->stats.open--;
}

/* Releases the connections evhttp is done with. */
static void sweep(serve *s)
{
    conn *next;
    for (conn *c = s->conns; c; c = next) {
        next = c->next;
        if (released(c))
            conn_free(c);
    }
    if (s->stats.open - s->evicting < s->cap)
        listener_pause(s, false);
    if (!s->conns)
        evtimer_del(s->sweep);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sweep(arg);
}

/* Closes c's socket under evhttp: it sees EOF (or a failed write) and frees the connection. */
static void close_under(conn *c)
{
    evutil_socket_t sfd = bufferevent_getfd(c->bev);
    if (sfd >= 0)
        shutdown(sfd, SHUT_RDWR);
}

/* At the cap, the oldest connection with no request in progress (idle between requests, or
 * still sending its request: a flood of idle or trickling connections) makes room for the
 * new one, so a health check is never kept out by them. Connections whose request is being
 * answered are never evicted. The oldest such connection other than keep, or NULL. */
static conn *oldest_idle(serve *s, const conn *keep)
{
    conn *tail = s->conns;
    while (tail && tail->next)
        tail = tail->next;
    for (conn *c = tail; c; c = c->prev)
        if (c != keep && !c->busy && !c->evicted && !released(c))
            return c;
    return NULL;
}

/* Frees an idle connection now, so its descriptor is back before the next accept (a burst of
 * connections is accepted in one go): evhttp's connection (the argument of the callbacks it
 * set on the bufferevent) is freed by evhttp_connection_free, then our reference. */
static void conn_free(conn *c);
static void listener_update(serve *s);
static void evict(conn *c)
{
    serve *s = c->s;
    c->evicted = true;
    s->evicting++;
    s->stats.evicted++;
    /* libevent closes a freed connection's descriptor on the loop's next turn, and accepts a
     * burst of connections in one go: past SERVE_EVICT_PER_TURN evictions, accepting rests
     * until the next turn so the descriptors come back first */
    if (++s->evicted_turn >= SERVE_EVICT_PER_TURN && !s->resting) {
        s->resting = true;
        listener_update(s);
        event_active(s->next_turn, EV_TIMEOUT, 0);
    }
    bufferevent_data_cb rcb = NULL, wcb = NULL;
    bufferevent_event_cb ecb = NULL;
    void *evcon = NULL;
    bufferevent_getcb(c->bev, &rcb, &wcb, &ecb, &evcon);
    if (evcon && !released(c))
        evhttp_connection_free(evcon);
    conn_free(c);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    if (released(c))
        return; /* already closed by evhttp; the sweep frees it */
    c->s->stats.timeouts++;
    fhir_log(FHIR_LOG_INFO, "serve.deadline", "action=close");
    close_under(c);
}

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);

/* evhttp asks for the bufferevent of each accepted connection: TLS or plain. */
static struct bufferevent *on_new_conn(struct event_base *base, void *arg)
{
    serve *s = arg;
    if (s->stats.open - s->evicting + 1 >= s->cap || s->evicting)
        sweep(s); /* before the new one exists: evhttp sets its callbacks only after we return */
    struct bufferevent *bev;
    if (s->ssl) {
        SSL *ssl = SSL_new(s->ssl);
        if (!ssl)
            abort();
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
        if (bev)
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    conn *c = calloc(1, sizeof *c);
    if (!bev || !c)
        abort(); /* out of memory: never fall back to an unencrypted default */
    bufferevent_incref(bev);
    /* whatever arrives after evhttp let go stays bounded until the sweep */
    bufferevent_setwatermark(bev, EV_READ, 0, s->cfg.max_header_bytes + s->body_read_max + 65536);
    c->s = s;
    c->bev = bev;
    c->deadline = evtimer_new(base, on_deadline, c);
    c->held = evbuffer_new();
    if (!c->deadline || !c->held)
        abort();
    c->input_cb = evbuffer_add_cb(bufferevent_get_input(bev), on_input, c);
    if (!c->input_cb)
        abort();
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->stats.open++;
    s->stats.connections++;
    arm(c, s->cfg.request_timeout_s);
    if (!evtimer_pending(s->sweep, NULL)) {
        struct timeval one = {1, 0};
        event_add(s->sweep, &one);
    }
    if (s->stats.open - s->evicting > s->cap) {
        conn *old = oldest_idle(s, c);
        if (old)
            evict(old);
    }
    if (s->stats.open - s->evicting >= s->cap && !oldest_idle(s, c))
        listener_pause(s, true); /* every other connection is being answered: wait for one */
    return bev;
}

static conn *conn_of(serve *s, struct evhttp_request *req)
{
    struct evhttp_connection *ec = evhttp_request_get_connection(req);
    struct bufferevent *bev = ec ? evhttp_connection_get_bufferevent(ec) : NULL;
    for (conn *c = s->conns; bev && c; c = c->next)
        if (c->bev == bev)
            return c;
    return NULL;
}

/* ---- before the body -------------------------------------------------------------------------
 *
 * evhttp reads a request's whole body before it calls us, and libevent 2.1 has no hook that
 * runs between a request's head and its body on a server (2.2's evhttp_set_newreqcb is not
 * in 2.1; a request's header callback can only be set on a request object we never see in
 * time). So each connection's input buffer carries a callback of ours that runs as bytes
 * arrive, before evhttp's read callback: while the next request's head is not complete, its
 * bytes are held back from evhttp (at most max_header_bytes; beyond that evhttp gets them
 * and answers 400 itself). When the head is complete and declares a body (Content-Length > 0,
 * or Transfer-Encoding), the checks of refuse_by_head() run on it dry. When they refuse it,
 * the head evhttp gets is the same without its body: Content-Length, Transfer-Encoding,
 * Expect and Connection are replaced by "Content-Length: 0" and "Connection: close", what
 * came after the head is dropped, and reading is throttled to max_header_bytes. evhttp then
 * hands us the request at once; handle() runs the same checks on it (with the declared
 * length), which answer as they always did (401 with WWW-Authenticate, 403, 413, a route's
 * own answer), and the connection closes after that answer (the unread body would otherwise
 * be taken for the next request). A head declaring more than evhttp's body limit is left to
 * evhttp, which answers 413 from the head too. After each answer (on_complete) the next head
 * is waited for; bytes pipelined meanwhile are looked at then. */

static bool refuse_by_head(serve_req *r, const char *uri, size_t blen, const reg **hit_out);
static serve_req *req_new(serve *s);
static void req_free(serve_req *r);

#define HEAD_MAX_FIELDS 128 /* header fields of a head looked at; more: left to evhttp */

/* The header fields of a head as evhttp reads them (http.c, evhttp_parse_headers_): lines end
 * at LF, after an optional CR; a line starting with a space or tab continues the field before
 * it (joined with one space); the name is what precedes the first ':'; the value loses leading
 * spaces and trailing spaces and tabs. lines: the head after the request line. -1 when evhttp
 * would refuse it or it has more than HEAD_MAX_FIELDS fields. */
typedef struct head_line {
    const char *p;
    size_t n;
} head_line;

static size_t rtrim_lws(const char *p, size_t n)
{
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r' || p[n - 1] == '\n'))
        n--;
    return n;
}

static int head_fields(const head_line *lines, size_t n, struct evkeyvalq *out)
{
    char *names[HEAD_MAX_FIELDS], *vals[HEAD_MAX_FIELDS];
    size_t nf = 0;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const char *p = lines[i].p;
        size_t len = lines[i].n;
        if (p[0] == ' ' || p[0] == '\t') {
            if (!nf) {
                rc = -1;
                break;
            }
            while (len && (*p == ' ' || *p == '\t'))
                p++, len--;
            len = rtrim_lws(p, len);
            size_t old = strlen(vals[nf - 1]);
            char *v = realloc(vals[nf - 1], old + len + 2);
            if (!v)
                abort();
            v[old] = ' ';
            memcpy(v + old + 1, p, len);
            v[old + 1 + len] = 0;
            vals[nf - 1] = v;
            continue;
        }
        const char *colon = memchr(p, ':', len);
        if (!colon || nf == HEAD_MAX_FIELDS) {
            rc = -1;
            break;
        }
        const char *v = colon + 1;
        size_t vn = len - (size_t)(v - p);
        while (vn && *v == ' ')
            v++, vn--;
        names[nf] = strndup(p, (size_t)(colon - p));
        vals[nf] = strndup(v, rtrim_lws(v, vn));
        if (!names[nf] || !vals[nf])
            abort();
        nf++;
    }
    for (size_t i = 0; i < nf; i++) {
        if (!rc && (strlen(names[i]) != strcspn(names[i], "\r\n") || evhttp_add_header(out, names[i], vals[i])))
            rc = -1;
        free(names[i]);
        free(vals[i]);
    }
    return rc;
}

/* The fields that decide whether and how a body follows (dropped from a cut head); the first
 * BODY_DECLARING of them declare one. */
static const char *const BODY_FIELDS[] = {"Content-Length", "Transfer-Encoding", "Expect",
                                          "Connection"};
#define BODY_DECLARING 2
#define BODY_ALL (sizeof BODY_FIELDS / sizeof BODY_FIELDS[0])

/* Whether the header line p[0..n) is one of the first `among` BODY_FIELDS. */
static bool body_field(const char *p, size_t n, size_t among)
{
    const char *const *F = BODY_FIELDS;
    const char *colon = memchr(p, ':', n);
    size_t k = colon ? (size_t)(colon - p) : n;
    for (size_t i = 0; i < among && i < BODY_ALL; i++)
        if (k == strlen(F[i]) && !strncasecmp(p, F[i], k))
            return true;
    return false;
}

/* The peer address of c as evhttp names it. */
static void conn_source(conn *c, char *out, size_t n)
{
    out[0] = 0;
    bufferevent_data_cb rcb = NULL, wcb = NULL;
    bufferevent_event_cb ecb = NULL;
    void *evcon = NULL;
    bufferevent_getcb(c->bev, &rcb, &wcb, &ecb, &evcon);
    if (!evcon || released(c))
        return;
    char *addr = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evcon, &addr, &port);
    snprintf(out, n, "%s", addr ? addr : "");
}

/* The head of lines (the request line first) without its body into cut: the fields that
 * declare one dropped (with their continuation lines), "Content-Length: 0" and
 * "Connection: close" added. */
static void cut_head(const head_line *lines, size_t nl, struct evbuffer *cut)
{
    evbuffer_add(cut, lines[0].p, lines[0].n);
    evbuffer_add(cut, "\r\n", 2);
    bool dropping = false;
    for (size_t i = 1; i < nl; i++) {
        if (lines[i].p[0] != ' ' && lines[i].p[0] != '\t')
            dropping = body_field(lines[i].p, lines[i].n, BODY_ALL);
        if (dropping)
            continue;
        evbuffer_add(cut, lines[i].p, lines[i].n);
        evbuffer_add(cut, "\r\n", 2);
    }
    evbuffer_add(cut, "Content-Length: 0\r\nConnection: close\r\n\r\n", 41);
}

/* A whole head, p[0, n) (its blank line included): when it declares a body and the checks
 * refuse it, the head without its body into cut (see above) and true. */
static bool head_refused(conn *c, const char *p, size_t n, struct evbuffer *cut)
{
    serve *s = c->s;
    head_line lines[HEAD_MAX_FIELDS + 2];
    size_t nl = 0;
    for (size_t at = 0; at < n;) {
        const char *lf = memchr(p + at, '\n', n - at);
        if (!lf)
            break;
        size_t len = (size_t)(lf - (p + at));
        if (len && p[at + len - 1] == '\r')
            len--;
        if (!len)
            break; /* the blank line */
        if (nl == sizeof lines / sizeof lines[0])
            return false;
        lines[nl++] = (head_line){p + at, len};
        at = (size_t)(lf - p) + 1;
    }
    if (nl < 1 || memchr(p, 0, n))
        return false;
    /* most heads declare no body: nothing more to look at */
    bool declares = false;
    for (size_t i = 1; i < nl && !declares; i++)
        declares = body_field(lines[i].p, lines[i].n, BODY_DECLARING);
    if (!declares)
        return false;
    /* the request line: METHOD SP URI SP VERSION (trailing spaces ignored, as evhttp does) */
    size_t rl = lines[0].n;
    while (rl && lines[0].p[rl - 1] == ' ')
        rl--;
    char *line = strndup(lines[0].p, rl);
    if (!line)
        abort();
    char *sp = strchr(line, ' '), *ver = strrchr(line, ' ');
    bool refused = false;
    struct evkeyvalq hdrs;
    TAILQ_INIT(&hdrs);
    if (!sp || ver == sp || head_fields(lines + 1, nl - 1, &hdrs)) {
        evhttp_clear_headers(&hdrs);
        free(line);
        return false;
    }
    *sp = *ver = 0;
    const char *method = line, *uri = sp + 1;
    /* the body it declares, read as evhttp reads it */
    const char *te = evhttp_find_header(&hdrs, "Transfer-Encoding");
    const char *cl = evhttp_find_header(&hdrs, "Content-Length");
    long long declared = 0;
    bool body = false, known = method_ok(method) || !strcmp(method, "HEAD");
    if (te && !strcasecmp(te, "chunked")) {
        body = true;
    } else if (cl) {
        char *end;
        errno = 0;
        declared = strtoll(cl, &end, 10);
        body = *cl && !*end && !errno && declared > 0;
    }
    if (known && body && strcmp(method, "HEAD") && (uint64_t)declared <= s->body_read_max) {
        serve_req *r = req_new(s);
        r->dry = true;
        r->head_hdrs = &hdrs;
        snprintf(r->method, sizeof r->method, "%s", method);
        conn_source(c, r->source, sizeof r->source);
        const reg *hit = NULL;
        refused = refuse_by_head(r, uri, (size_t)declared, &hit);
        if (refused) {
            cut_head(lines, nl, cut);
            /* evhttp counts a head's lines against max_header_bytes: one grown past it by
             * the two fields added is left as it was */
            refused = evbuffer_get_length(cut) <= s->cfg.max_header_bytes;
            if (!refused)
                evbuffer_drain(cut, evbuffer_get_length(cut));
        }
        if (refused) {
            fhir_log(FHIR_LOG_INFO, "serve.refused_unread", "method=%s route=%s status=%d declared_bytes=%lld",
                     r->method, serve_route_name(r), r->refused, declared);
            s->stats.refused_unread++;
            c->cut_len = (uint64_t)declared;
        }
        r->head_hdrs = NULL;
        req_free(r);
    }
    evhttp_clear_headers(&hdrs);
    free(line);
    return refused;
}

/* The end of the head in c->held (its blank line included), or 0 while it is not complete. */
static size_t head_end(conn *c, const char **p)
{
    size_t len = evbuffer_get_length(c->held), lim = c->s->cfg.max_header_bytes + 3;
    size_t n = len < lim ? len : lim;
    *p = (const char *)evbuffer_pullup(c->held, (ev_ssize_t)n);
    size_t from = c->scanned > 2 ? c->scanned - 2 : 0;
    for (size_t i = from; *p && i < n; i++) {
        if ((*p)[i] != '\n')
            continue;
        if (i + 1 < n && (*p)[i + 1] == '\n')
            return i + 2;
        if (i + 2 < n && (*p)[i + 1] == '\r' && (*p)[i + 2] == '\n')
            return i + 3;
    }
    c->scanned = n;
    return 0;
}

/* Takes what arrived for the next request's head into c->held; when the head is whole (or
 * too long to be), gives evhttp the bytes back, without the body when refused. */
static void take_head(conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (c->head != HEAD_WAIT || c->in_input || !evbuffer_get_length(in))
        return;
    c->in_input = true;
    evbuffer_add_buffer(c->held, in);
    const char *p = NULL;
    size_t end = head_end(c, &p);
    if (end || evbuffer_get_length(c->held) > c->s->cfg.max_header_bytes) {
        c->head = HEAD_PASSED;
        c->scanned = 0;
        struct evbuffer *cut = evbuffer_new();
        if (!cut)
            abort();
        if (end && head_refused(c, p, end, cut)) {
            c->head = HEAD_CUT;
            evbuffer_drain(c->held, evbuffer_get_length(c->held));
            evbuffer_add_buffer(c->held, cut);
            /* what the client sends after the head is read at most this far, then left
             * unread until the connection closes */
            bufferevent_setwatermark(c->bev, EV_READ, 0, c->s->cfg.max_header_bytes);
        }
        evbuffer_free(cut);
        /* in is empty here (all of it was taken); its front may be added to even while
         * the bufferevent keeps its end frozen */
        evbuffer_prepend_buffer(in, c->held);
    }
    c->in_input = false;
}

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    conn *c = arg;
    if (info->n_added && !c->in_input)
        take_head(c);
}

static void on_complete(struct evhttp_request *req, void *arg)
{
    conn *c = conn_of(arg, req);
    if (c) {
        c->busy = false;
        arm(c, c->s->cfg.request_timeout_s); /* the next request on this connection */
        listener_pause(c->s, false); /* this one may now make room for a new one */
        if (c->head == HEAD_PASSED) {
            c->head = HEAD_WAIT;
            take_head(c); /* a request pipelined behind this one */
        }
    }
}

/* ---- life ------------------------------------------------------------------------------------ */

serve *serve_new(struct event_base *base, access_ctx *acc, const serve_config *cfg, fhir_error *err)
{
    const char *bind = cfg->bind ? cfg->bind : "127.0.0.1";
    bool tls = cfg->tls_cert_file || cfg->tls_key_file;
    if (tls && (!cfg->tls_cert_file || !cfg->tls_key_file)) {
        fhir_error_set(err, "TLS needs both a certificate file and a key file");
        return NULL;
    }
    if (!tls && !serve_is_loopback(bind) && !cfg->insecure_plain_http) {
        fhir_error_set(err, "plain HTTP on %s (not a loopback address) is refused: configure a TLS certificate and "
                            "key, or bind to 127.0.0.1 behind a TLS proxy",
                       bind);
        return NULL;
    }
    serve *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->base = base;
    s->acc = acc;
    s->cfg = *cfg;
    s->bind = fhir_xstrdup(bind);
    s->cert = fhir_xstrdup(cfg->tls_cert_file);
    s->key = fhir_xstrdup(cfg->tls_key_file);
    s->cfg.bind = s->bind;
    s->cfg.tls_cert_file = s->cert;
    s->cfg.tls_key_file = s->key;
    if (s->cfg.max_connections <= 0)
        s->cfg.max_connections = 256;
    if (s->cfg.fd_reserve <= 0)
        s->cfg.fd_reserve = SERVE_FD_RESERVE_DEFAULT;
    s->cap = s->cfg.max_connections;
    if (s->cfg.request_timeout_s <= 0)
        s->cfg.request_timeout_s = 30;
    if (s->cfg.idle_timeout_s <= 0)
        s->cfg.idle_timeout_s = 15;
    if (s->cfg.response_timeout_s <= 0)
        s->cfg.response_timeout_s = 120;
    if (!s->cfg.max_header_bytes)
        s->cfg.max_header_bytes = 16384;
    if (!s->cfg.max_body_bytes)
        s->cfg.max_body_bytes = 1u << 20;
    s->body_read_max = s->cfg.max_body_bytes;
    if (tls && !(s->ssl = tls_ctx(s->cert, s->key, err))) {
        serve_free(s);
        return NULL;
    }
    if (!tls && !serve_is_loopback(bind))
        fhir_log(FHIR_LOG_WARN, "serve.insecure",
                 "bind=%s tls=false note=%s", bind,
                 "plain HTTP on a network address: only behind a TLS proxy");
    return s;
}

static void req_free(serve_req *r);
static void listener_register(serve *s, bool on);

void serve_free(serve *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_on_free; i++)
        s->on_free[i](s->on_free_ud[i]);
    s->closing = true;
    listener_register(s, false);
    /* requests still waiting for an asynchronous answer: freed with their connections */
    while (s->live) {
        serve_req *r = s->live;
        s->live = r->next;
        r->req = NULL;
        r->prev = r->next = NULL;
        r->s = NULL;
        req_free(r);
    }
    if (s->http)
        evhttp_free(s->http);
    while (s->conns)
        conn_free(s->conns);
    if (s->sweep)
        event_free(s->sweep);
    if (s->accept_retry)
        event_free(s->accept_retry);
    if (s->next_turn)
        event_free(s->next_turn);
    SSL_CTX_free(s->ssl);
    free(s->bind);
    free(s->cert);
    free(s->key);
    free(s);
}

void serve_on_free(serve *s, void (*fn)(void *), void *ud)
{
    if (s->n_on_free == sizeof s->on_free / sizeof s->on_free[0])
        abort(); /* a fixed handful of owners register here (broken invariant) */
    s->on_free[s->n_on_free] = fn;
    s->on_free_ud[s->n_on_free++] = ud;
}

int serve_reload_tls(serve *s, fhir_error *err)
{
    if (!s->cert)
        return 0;
    SSL_CTX *c = tls_ctx(s->cert, s->key, err);
    if (!c)
        return -1;
    SSL_CTX_free(s->ssl); /* connections keep a reference to the old one */
    s->ssl = c;
    fhir_log(FHIR_LOG_INFO, "serve.tls_reloaded", "cert=%s", s->cert);
    return 0;
}

static void handle(struct evhttp_request *req, void *arg);

/* The listeners of this process: libevent hands the accept error callback evhttp's own
 * argument, so the callback finds its serve by the listener. */
static serve *listeners[SERVE_MAX_LISTENERS];

static void listener_register(serve *s, bool on)
{
    for (size_t i = 0; i < SERVE_MAX_LISTENERS; i++)
        if (on ? !listeners[i] : listeners[i] == s) {
            listeners[i] = on ? s : NULL;
            return;
        }
}

static serve *listener_of(struct evconnlistener *l)
{
    for (size_t i = 0; i < SERVE_MAX_LISTENERS; i++)
        if (listeners[i] && listeners[i]->sock && evhttp_bound_socket_get_listener(listeners[i]->sock) == l)
            return listeners[i];
    return NULL;
}

static void on_next_turn(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    serve *s = arg;
    s->evicted_turn = 0;
    s->resting = false;
    listener_update(s);
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    serve *s = arg;
    s->accept_failing = false;
    sweep(s);
    listener_update(s);
}

/* accept() failed. Out of descriptors (or memory), the pending connection stays in the
 * kernel's queue and the listening socket stays readable: accepting rests for a second (one
 * warning per rest, not one per wake-up) while the sweep frees what evhttp let go. Anything
 * else (a client that reset before we accepted it) is only counted. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    (void)arg; /* evhttp's */
    int e = EVUTIL_SOCKET_ERROR();
    serve *s = listener_of(l);
    if (!s)
        return;
    s->stats.accept_errors++;
    if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM)
        return;
    if (!s->accept_failing)
        fhir_log(FHIR_LOG_WARN, "serve.accept_failed", "reason=%s connections=%d action=%s", strerror(e),
                 s->stats.open, "rest 1 s");
    s->accept_failing = true;
    listener_update(s);
    struct timeval one = {1, 0};
    evtimer_add(s->accept_retry, &one);
}

/* Descriptors open in this process now (/proc/self/fd; -1 when it cannot be read). */
static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

/* The cap: max_connections, lowered so that connections never take the descriptors the
 * store and the sources need (the soft RLIMIT_NOFILE minus those open now minus fd_reserve).
 * 0, or -1 with err when fewer than SERVE_MIN_CAP connections would be left. */
static int cap_from_limit(serve *s, fhir_error *err)
{
    s->cap = s->cfg.max_connections;
    struct rlimit rl;
    int used = open_fds();
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || used < 0)
        return 0;
    long budget = (long)rl.rlim_cur - used - s->cfg.fd_reserve;
    if (budget >= s->cap)
        return 0;
    if (budget < SERVE_MIN_CAP)
        return fhir_error_set(err, "listener: the descriptor limit %ld leaves %ld connections after the %d open and "
                                   "the %d kept for the store and the sources (at least %d needed): raise it "
                                   "(ulimit -n, LimitNOFILE=)",
                              (long)rl.rlim_cur, budget, used, s->cfg.fd_reserve, SERVE_MIN_CAP);
    s->cap = (int)budget;
    fhir_log(FHIR_LOG_WARN, "serve.cap_lowered", "max_connections=%d cap=%d nofile=%ld open=%d reserve=%d",
             s->cfg.max_connections, s->cap, (long)rl.rlim_cur, used, s->cfg.fd_reserve);
    return 0;
}

int serve_start(serve *s, fhir_error *err)
{
    if (cap_from_limit(s, err))
        return -1;
    s->stats.cap = s->cap;
    s->http = evhttp_new(s->base);
    if (!s->http)
        return fhir_error_set(err, "listener: evhttp_new failed");
    evhttp_set_max_body_size(s->http, (ev_ssize_t)s->body_read_max);
    evhttp_set_max_headers_size(s->http, (ev_ssize_t)s->cfg.max_header_bytes);
    evhttp_set_timeout(s->http, s->cfg.idle_timeout_s);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
    s->sweep = event_new(s->base, -1, EV_PERSIST, on_sweep, s);
    if (!s->sweep)
        abort();
    s->accept_retry = evtimer_new(s->base, on_accept_retry, s);
    s->next_turn = evtimer_new(s->base, on_next_turn, s);
    if (!s->accept_retry || !s->next_turn)
        abort();
    evhttp_set_bevcb(s->http, on_new_conn, s);
    evhttp_set_gencb(s->http, handle, s);
    s->sock = evhttp_bind_socket_with_handle(s->http, s->bind, (ev_uint16_t)s->cfg.port);
    if (!s->sock) {
        evhttp_free(s->http);
        s->http = NULL;
        return fhir_error_set(err, "listener: cannot listen on %s:%d", s->bind, s->cfg.port);
    }
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(s->sock), on_accept_error);
    listener_register(s, true);
    evutil_socket_t fd = evhttp_bound_socket_get_fd(s->sock);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    s->port = s->cfg.port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    fhir_log(FHIR_LOG_INFO, "serve.listen", "bind=%s port=%d tls=%s routes=%zu", s->bind, s->port,
             s->ssl ? "true" : "false", s->n_routes);
    return 0;
}

int serve_port(const serve *s)
{
    return s->port;
}

access_ctx *serve_access_ctx(const serve *s)
{
    return s->acc;
}

bool serve_is_tls(const serve *s)
{
    return s->ssl != NULL;
}

const serve_stats *serve_get_stats(const serve *s)
{
    return &s->stats;
}

/* ---- requests ---------------------------------------------------------------------------------- */

const char *serve_method(const serve_req *r)
{
    return r->method;
}

const char *serve_path(const serve_req *r)
{
    return r->path;
}

const char *serve_route_name(const serve_req *r)
{
    return r->route ? r->route->r->pattern : "other";
}

const char *serve_param(const serve_req *r, const char *name)
{
    for (size_t i = 0; i < r->nparams; i++)
        if (!strcmp(r->pnames[i], name))
            return r->pvals[i];
    return NULL;
}

const char *serve_query(serve_req *r, const char *name)
{
    if (!r->query_parsed) {
        r->query_parsed = true;
        const char *q = r->uri ? evhttp_uri_get_query(r->uri) : NULL;
        if (q)
            evhttp_parse_query_str(q, &r->query);
    }
    return evhttp_find_header(&r->query, name);
}

const char *serve_form(serve_req *r, const char *name)
{
    if (!r->form_parsed) {
        r->form_parsed = true;
        const char *ct = serve_header(r, "Content-Type");
        if (ct && !strncasecmp(ct, "application/x-www-form-urlencoded", 33) && r->body)
            evhttp_parse_query_str(r->body, &r->form);
    }
    return evhttp_find_header(&r->form, name);
}

const char *serve_body(serve_req *r, size_t *len)
{
    if (len)
        *len = r->body_len;
    return r->body ? r->body : "";
}

const char *serve_header(const serve_req *r, const char *name)
{
    if (r->head_hdrs)
        return evhttp_find_header(r->head_hdrs, name);
    return r->req ? evhttp_find_header(evhttp_request_get_input_headers(r->req), name) : NULL;
}

const char *serve_cookie(serve_req *r, const char *name)
{
    const char *h = serve_header(r, "Cookie");
    if (!h)
        return NULL;
    size_t nl = strlen(name);
    for (const char *p = h; *p;) {
        while (*p == ' ' || *p == ';')
            p++;
        size_t n = strcspn(p, ";");
        if (n > nl && !strncmp(p, name, nl) && p[nl] == '=') {
            free(r->cookie_val);
            r->cookie_val = strndup(p + nl + 1, n - nl - 1);
            if (!r->cookie_val)
                abort();
            return r->cookie_val;
        }
        p += n;
    }
    return NULL;
}

const access_principal *serve_principal(const serve_req *r)
{
    return r->has_who ? &r->who : NULL;
}

const char *serve_source(const serve_req *r)
{
    return r->source;
}

bool serve_req_tls(const serve_req *r)
{
    return r->tls;
}

access_ctx *serve_access(const serve_req *r)
{
    return r->s ? r->s->acc : NULL;
}

void serve_add_header(serve_req *r, const char *name, const char *value)
{
    if (r->nhdr == MAX_EXTRA_HEADERS)
        return;
    for (const char *c = value; c && *c; c++)
        if ((unsigned char)*c < 0x20)
            return; /* never split a header */
    if (!strcasecmp(name, "Cache-Control"))
        r->own_cache_control = true;
    r->hname[r->nhdr] = fhir_xstrdup(name);
    r->hval[r->nhdr++] = fhir_xstrdup(value);
}

void serve_set_cookie(serve_req *r, const char *name, const char *value, const char *path, const char *same_site,
                      long max_age_s)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%s=%s; Path=%s; HttpOnly; Secure; SameSite=%s", name, value ? value : "",
                     path ? path : "/", same_site ? same_site : "Strict");
    if (max_age_s >= 0 && n > 0 && (size_t)n < sizeof buf)
        snprintf(buf + n, sizeof buf - (size_t)n, "; Max-Age=%ld", max_age_s);
    serve_add_header(r, "Set-Cookie", buf);
}

static void req_free(serve_req *r)
{
    if (r->s) {
        if (r->prev)
            r->prev->next = r->next;
        else if (r->s->live == r)
            r->s->live = r->next;
        if (r->next)
            r->next->prev = r->prev;
    }
    free(r->path);
    for (size_t i = 0; i < r->nparams; i++) {
        free(r->pnames[i]);
        free(r->pvals[i]);
    }
    if (r->uri)
        evhttp_uri_free(r->uri);
    evhttp_clear_headers(&r->query);
    evhttp_clear_headers(&r->form);
    free(r->body);
    free(r->cookie_val);
    for (size_t i = 0; i < r->nhdr; i++) {
        free(r->hname[i]);
        free(r->hval[i]);
    }
    memset(r->who.session_key, 0, sizeof r->who.session_key);
    free(r);
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 302: return "Found";
    case 303: return "See Other";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

static const char *via_name(const serve_req *r)
{
    if (!r->has_who)
        return "none";
    switch (r->who.via) {
    case ACCESS_VIA_SESSION: return "session";
    case ACCESS_VIA_TOKEN: return "token";
    case ACCESS_VIA_SHARED: return "shared";
    default: return "other";
    }
}

void serve_reply(serve_req *r, int status, const char *content_type, const char *body, size_t len)
{
    serve *s = r->s;
    if (r->req) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
        if (content_type)
            evhttp_add_header(h, "Content-Type", content_type);
        if (!r->own_cache_control)
            evhttp_add_header(h, "Cache-Control", "no-store");
        evhttp_add_header(h, "Content-Security-Policy", CSP);
        evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
        evhttp_add_header(h, "X-Frame-Options", "DENY");
        evhttp_add_header(h, "Referrer-Policy", "same-origin");
        evhttp_add_header(h, "Cross-Origin-Opener-Policy", "same-origin");
        if (r->tls)
            evhttp_add_header(h, "Strict-Transport-Security", "max-age=31536000");
        for (size_t i = 0; i < r->nhdr; i++)
            evhttp_add_header(h, r->hname[i], r->hval[i]);
        struct evbuffer *out = evbuffer_new();
        if (!out)
            abort();
        if (len)
            evbuffer_add(out, body, len);
        evhttp_send_reply(r->req, status, reason(status), out);
        evbuffer_free(out);
    }
    if (s) {
        int cls = status / 100;
        if (cls >= 1 && cls <= 5)
            s->stats.status[cls]++;
        char user[32] = "-";
        if (r->has_who)
            snprintf(user, sizeof user, "%lld", (long long)r->who.user_id);
        fhir_log(FHIR_LOG_DEBUG, "serve.request", "method=%s route=%s status=%d ms=%lld user=%s via=%s", r->method,
                 serve_route_name(r), status, (long long)(fhir_clock_mono_ms() - r->t0), user, via_name(r));
    }
    req_free(r);
}

void serve_json(serve_req *r, int status, fhir_buf *b)
{
    if (b->overflow) {
        serve_error(r, 500, "response too large");
        return;
    }
    fhir_buf_putc(b, '\n');
    serve_reply(r, status, "application/json", b->data, b->len);
}

void serve_error(serve_req *r, int status, const char *msg)
{
    fhir_buf b;
    fhir_buf_init(&b, 8192);
    fhir_buf_printf(&b, "{\"error\":{\"status\":%d,\"message\":", status);
    fhir_json_write_string(&b, msg, strlen(msg));
    fhir_buf_puts(&b, "}}\n");
    if (status == 401)
        serve_add_header(r, "WWW-Authenticate", "Bearer realm=\"cartgate\"");
    serve_reply(r, status, "application/json", b.data, b.len);
    fhir_buf_free(&b);
}

void serve_redirect(serve_req *r, const char *location)
{
    serve_add_header(r, "Location", location && location[0] == '/' && location[1] != '/' ? location : "/");
    serve_reply(r, 303, "text/plain; charset=utf-8", "", 0);
}

void serve_redirect_external(serve_req *r, const char *url)
{
    if (!url || (strncasecmp(url, "https://", 8) && strncasecmp(url, "http://", 7))) {
        serve_error(r, 500, "bad redirect target");
        return;
    }
    serve_add_header(r, "Location", url);
    serve_reply(r, 302, "text/plain; charset=utf-8", "", 0);
}

bool serve_id_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '-' || s[i] == '.'))
            return false;
    return true;
}

bool serve_parse_id(const char *s, int64_t *out)
{
    size_t n = s ? strlen(s) : 0;
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

void serve_html_escape(fhir_buf *b, const char *s)
{
    fhir_buf_html_escape(b, s);
}

/* ---- dispatch ---------------------------------------------------------------------------------- */

/* Matches path against a pattern; on success fills r's params (decoded). */
static bool match(serve_req *r, const char *pattern, const char *path, bool fill)
{
    const char *p = pattern, *q = path;
    size_t np = 0;
    char *names[SERVE_MAX_PARAMS + 1], *vals[SERVE_MAX_PARAMS + 1];
    bool ok = true;
    while (ok) {
        if (*p != '/' || *q != '/') {
            ok = !*p && !*q;
            break;
        }
        p++;
        q++;
        size_t pn = strcspn(p, "/"), qn = strcspn(q, "/");
        if (pn == 1 && *p == '*') {
            if (fill) {
                names[np] = fhir_xstrdup("*");
                vals[np++] = evhttp_uridecode(q, 0, NULL);
            }
            p += 1;
            q += strlen(q);
            ok = true;
            break;
        }
        if (*p == '{') {
            if (qn == 0) {
                ok = false;
                break;
            }
            if (fill && np < SERVE_MAX_PARAMS) {
                names[np] = strndup(p + 1, pn - 2);
                char *raw = strndup(q, qn);
                vals[np] = raw ? evhttp_uridecode(raw, 0, NULL) : NULL;
                free(raw);
                if (!names[np] || !vals[np])
                    abort();
                np++;
            }
        } else if (pn != qn || strncmp(p, q, pn)) {
            ok = false;
            break;
        }
        p += pn;
        q += qn;
    }
    if (fill && ok) {
        for (size_t i = 0; i < np; i++) {
            r->pnames[i] = names[i];
            r->pvals[i] = vals[i];
            if (!vals[i])
                abort();
        }
        r->nparams = np;
    } else if (fill) {
        for (size_t i = 0; i < np; i++) {
            free(names[i]);
            free(vals[i]);
        }
    }
    return ok;
}

static bool state_changing(const char *m)
{
    return strcmp(m, "GET") && strcmp(m, "HEAD") && strcmp(m, "OPTIONS");
}

/* Origin, when sent, must be this listener (scheme and Host). */
static bool origin_ok(serve_req *r)
{
    const char *origin = serve_header(r, "Origin");
    if (!origin)
        return true;
    const char *host = serve_header(r, "Host");
    if (!host)
        return false;
    char want[300];
    snprintf(want, sizeof want, "%s://%s", r->tls ? "https" : "http", host);
    return !strcasecmp(origin, want);
}

static void authenticate(serve_req *r, bool *bad_token)
{
    serve *s = r->s;
    fhir_error err;
    fhir_error_clear(&err);
    *bad_token = false;
    const char *auth = serve_header(r, "Authorization");
    int rc = ACCESS_DENIED;
    if (auth) {
        if (!strncasecmp(auth, "Bearer ", 7))
            rc = access_check_bearer(s->acc, auth + 7, r->source, &r->who, &err);
        *bad_token = rc != ACCESS_OK;
    } else {
        const char *cookie = serve_cookie(r, SERVE_SESSION_COOKIE);
        if (cookie)
            rc = access_check_session(s->acc, cookie, r->source, &r->who, &err);
    }
    if (rc < 0) {
        fhir_log(FHIR_LOG_ERROR, "serve.auth_error", "error=%s", err.msg);
    }
    r->has_who = rc == ACCESS_OK;
}

static void login_redirect(serve_req *r)
{
    fhir_buf b;
    fhir_buf_init(&b, 4096);
    const char *uri = evhttp_request_get_uri(r->req);
    char *next = evhttp_encode_uri(uri ? uri : "/");
    fhir_buf_printf(&b, "/auth/login?next=%s", next ? next : "%2F");
    free(next);
    serve_redirect(r, b.overflow ? "/auth/login" : fhir_buf_cstr(&b));
    fhir_buf_free(&b);
}

/* A refusal by the checks of a head: sent, or in a dry run only noted. true. */
static bool refuse(serve_req *r, int status, const char *msg)
{
    if (r->dry)
        r->refused = status;
    else
        serve_error(r, status, msg);
    return true;
}

/* The checks of a request that need only its head, in the order of serve.h, on a request
 * evhttp has read (r->req), or in a dry run on a head seen before evhttp reads it (r->dry:
 * nothing is sent, r->refused is the status that would be). blen: the body's length (the
 * declared length of a head, or of a request whose body was cut). true when r was refused
 * (answered unless dry); false with *hit_out set: the body is read and the handler runs. */
static bool refuse_by_head(serve_req *r, const char *uri, size_t blen, const reg **hit_out)
{
    serve *s = r->s;
    const char *m = r->method;
    r->uri = evhttp_uri_parse_with_flags(uri ? uri : "", 0);
    const char *path = r->uri ? evhttp_uri_get_path(r->uri) : NULL;
    if (!r->uri || !path || path[0] != '/' || strstr(path, "/../") || strstr(path, "/./"))
        return refuse(r, 400, "malformed request URI");
    r->path = fhir_xstrdup(path);
    if (blen > s->body_read_max)
        return refuse(r, 413, "request body too large");

    /* the route: path first, then method */
    const char *want = !strcmp(m, "HEAD") ? "GET" : m;
    const reg *hit = NULL;
    char allow[64] = "";
    bool path_known = false;
    for (size_t i = 0; i < s->n_routes; i++) {
        if (!match(r, s->routes[i].r->pattern, path, false))
            continue;
        path_known = true;
        const char *rm = s->routes[i].r->method;
        if (!hit && !strcmp(rm, want))
            hit = &s->routes[i];
        if (strlen(allow) + strlen(rm) + 8 < sizeof allow) {
            if (allow[0])
                strcat(allow, ", ");
            strcat(allow, rm);
            if (!strcmp(rm, "GET"))
                strcat(allow, ", HEAD");
        }
    }
    if (r->dry)
        r->route = hit; /* for the log line */
    /* the body, within the route's cap (or the listener's) */
    size_t cap = hit && hit->max_body ? hit->max_body : s->cfg.max_body_bytes;
    if (blen > cap) {
        if (hit && hit->too_large && !r->dry) {
            r->route = hit;
            match(r, hit->r->pattern, path, true);
            hit->too_large(r, hit->ud);
            return true;
        }
        return refuse(r, 413, "request body too large");
    }
    if (hit && (hit->r->flags & SERVE_OWN_AUTH)) {
        /* the handler authenticates the caller itself (serve.h): no credential of ours is
         * read, so none can ride along, and nothing here grants a role. Its head check says
         * whether it will refuse the request from the head alone; then it answers that
         * refusal itself, without a body */
        r->route = hit;
        match(r, hit->r->pattern, path, true);
        if ((r->dry || r->cut) && hit->head_ok && !hit->head_ok(r, hit->ud)) {
            if (r->dry)
                r->refused = 401;
            else
                hit->r->fn(r, hit->ud);
            return true;
        }
        *hit_out = hit;
        return false;
    }
    bool bad_token;
    authenticate(r, &bad_token);
    if (bad_token)
        return refuse(r, 401, "missing or wrong bearer token");
    if (!path_known)
        return r->has_who ? refuse(r, 404, "no such resource") : refuse(r, 401, "authentication required");
    if (!hit) {
        if (!r->has_who)
            return refuse(r, 401, "authentication required");
        if (!r->dry)
            serve_add_header(r, "Allow", allow);
        return refuse(r, 405, "method not allowed");
    }
    r->route = hit;
    match(r, hit->r->pattern, path, true);
    role need = hit->r->need;
    if (need != ROLE_PUBLIC && !r->has_who) {
        if (!(hit->r->flags & SERVE_HTML))
            return refuse(r, 401, "authentication required");
        if (r->dry)
            r->refused = 303;
        else
            login_redirect(r);
        return true;
    }
    if (need != ROLE_PUBLIC && !role_allows(r->who.mask, need)) {
        char msg[160];
        snprintf(msg, sizeof msg, "this needs the %s role (you act as %s)", role_name(need), role_name(r->who.role));
        return refuse(r, 403, msg);
    }
    if (state_changing(m) && !origin_ok(r))
        return refuse(r, 403, "cross-origin request refused");
    *hit_out = hit;
    return false;
}

static const char *method_of(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    case EVHTTP_REQ_DELETE: return "DELETE";
    default: return "OPTIONS";
    }
}

/* A new serve_req of s (not yet among the live ones). */
static serve_req *req_new(serve *s)
{
    serve_req *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->s = s;
    r->t0 = fhir_clock_mono_ms();
    r->tls = s->ssl != NULL;
    TAILQ_INIT(&r->query);
    TAILQ_INIT(&r->form);
    return r;
}

static void handle(struct evhttp_request *req, void *arg)
{
    serve *s = arg;
    s->stats.requests++;
    conn *c = conn_of(s, req);
    if (c) {
        c->busy = true;
        arm(c, s->cfg.response_timeout_s);
        if (!c->nodelay) {
            /* an answer larger than one segment must not wait for the client's delayed ACK of
             * the previous one (Nagle: ~40 ms per page on keep-alive connections) */
            int one = 1;
            evutil_socket_t fd = bufferevent_getfd(c->bev);
            if (fd >= 0)
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            c->nodelay = true;
        }
    }
    evhttp_request_set_on_complete_cb(req, on_complete, s);
    serve_req *r = req_new(s);
    r->req = req;
    r->next = s->live;
    if (s->live)
        s->live->prev = r;
    s->live = r;
    struct evhttp_connection *ec = evhttp_request_get_connection(req);
    if (ec) {
        char *addr = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(ec, &addr, &port);
        snprintf(r->source, sizeof r->source, "%s", addr ? addr : "");
    }
    snprintf(r->method, sizeof r->method, "%s", method_of(evhttp_request_get_command(req)));
    /* a request refused from its head before its body was read: the body is not here (its
     * declared length stands for it) and the connection closes after the answer */
    r->cut = c && c->head == HEAD_CUT;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t blen = r->cut ? (size_t)c->cut_len : evbuffer_get_length(in);
    const reg *hit = NULL;
    if (refuse_by_head(r, evhttp_request_get_uri(req), blen, &hit))
        return;
    if (r->cut) {
        /* refused when its head was seen, but not now: a handler never gets a request whose
         * body was not read */
        fhir_log(FHIR_LOG_WARN, "serve.cut_mismatch", "route=%s", serve_route_name(r));
        serve_error(r, 400, "the request could not be read");
        return;
    }
    r->body = malloc(blen + 1);
    if (!r->body)
        abort();
    evbuffer_copyout(in, r->body, blen);
    r->body[blen] = 0;
    r->body_len = blen;
    if (hit->r->flags & SERVE_OWN_AUTH) {
        hit->r->fn(r, hit->ud);
        return;
    }
    if (state_changing(r->method) && r->has_who && r->who.via == ACCESS_VIA_SESSION &&
        !(hit->r->flags & SERVE_NO_CSRF)) {
        const char *tok = serve_header(r, "X-CSRF-Token");
        if (!tok)
            tok = serve_form(r, "csrf");
        if (!access_csrf_check(&r->who, tok)) {
            serve_error(r, 403, tok ? "wrong CSRF token" : "missing CSRF token");
            return;
        }
    }
    hit->r->fn(r, hit->ud);
}
