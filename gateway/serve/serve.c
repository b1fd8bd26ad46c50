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
} reg;

typedef struct conn conn;
struct conn {
    serve *s;
    struct bufferevent *bev;  /* handed to evhttp; we hold a reference of our own */
    struct event *deadline;
    bool busy;                /* a request was dispatched and is not answered yet */
    bool evicted;             /* shut down to make room; freed by the sweep */
    bool nodelay;             /* TCP_NODELAY set (on its first request: evhttp sets the socket late) */
    conn *prev, *next;        /* newest first: the oldest is at the tail */
};

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

int serve_route_body_cap(serve *s, const char *method, const char *pattern, size_t max_body,
                         serve_handler too_large, fhir_error *err)
{
    reg *g = NULL;
    for (size_t i = 0; i < s->n_routes && !g; i++)
        if (!strcmp(s->routes[i].r->method, method) && !strcmp(s->routes[i].r->pattern, pattern))
            g = &s->routes[i];
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
    if (!c->deadline)
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

static void on_complete(struct evhttp_request *req, void *arg)
{
    conn *c = conn_of(arg, req);
    if (c) {
        c->busy = false;
        arm(c, c->s->cfg.request_timeout_s); /* the next request on this connection */
        listener_pause(c->s, false); /* this one may now make room for a new one */
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
    serve_req *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->s = s;
    r->req = req;
    r->t0 = fhir_clock_mono_ms();
    r->tls = s->ssl != NULL;
    TAILQ_INIT(&r->query);
    TAILQ_INIT(&r->form);
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
    const char *m;
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: m = "GET"; break;
    case EVHTTP_REQ_HEAD: m = "HEAD"; break;
    case EVHTTP_REQ_POST: m = "POST"; break;
    case EVHTTP_REQ_PUT: m = "PUT"; break;
    case EVHTTP_REQ_PATCH: m = "PATCH"; break;
    case EVHTTP_REQ_DELETE: m = "DELETE"; break;
    default: m = "OPTIONS"; break;
    }
    snprintf(r->method, sizeof r->method, "%s", m);
    r->uri = evhttp_uri_parse_with_flags(evhttp_request_get_uri(req), 0);
    const char *path = r->uri ? evhttp_uri_get_path(r->uri) : NULL;
    if (!r->uri || !path || path[0] != '/' || strstr(path, "/../") || strstr(path, "/./")) {
        serve_error(r, 400, "malformed request URI");
        return;
    }
    r->path = fhir_xstrdup(path);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t blen = evbuffer_get_length(in);
    if (blen > s->body_read_max) {
        serve_error(r, 413, "request body too large");
        return;
    }

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
    /* the body, within the route's cap (or the listener's) */
    size_t cap = hit && hit->max_body ? hit->max_body : s->cfg.max_body_bytes;
    if (blen > cap) {
        if (hit && hit->too_large) {
            r->route = hit;
            match(r, hit->r->pattern, path, true);
            hit->too_large(r, hit->ud);
        } else {
            serve_error(r, 413, "request body too large");
        }
        return;
    }
    r->body = malloc(blen + 1);
    if (!r->body)
        abort();
    evbuffer_copyout(in, r->body, blen);
    r->body[blen] = 0;
    r->body_len = blen;
    if (hit && (hit->r->flags & SERVE_OWN_AUTH)) {
        /* the handler authenticates the caller itself (serve.h): no credential of ours is
         * read, so none can ride along, and nothing here grants a role */
        r->route = hit;
        match(r, hit->r->pattern, path, true);
        hit->r->fn(r, hit->ud);
        return;
    }
    bool bad_token;
    authenticate(r, &bad_token);
    if (bad_token) {
        serve_error(r, 401, "missing or wrong bearer token");
        return;
    }
    if (!path_known) {
        if (r->has_who)
            serve_error(r, 404, "no such resource");
        else
            serve_error(r, 401, "authentication required");
        return;
    }
    if (!hit) {
        if (!r->has_who) {
            serve_error(r, 401, "authentication required");
            return;
        }
        serve_add_header(r, "Allow", allow);
        serve_error(r, 405, "method not allowed");
        return;
    }
    r->route = hit;
    match(r, hit->r->pattern, path, true);
    role need = hit->r->need;
    if (need != ROLE_PUBLIC && !r->has_who) {
        if (hit->r->flags & SERVE_HTML)
            login_redirect(r);
        else
            serve_error(r, 401, "authentication required");
        return;
    }
    if (need != ROLE_PUBLIC && !role_allows(r->who.mask, need)) {
        char msg[160];
        snprintf(msg, sizeof msg, "this needs the %s role (you act as %s)", role_name(need), role_name(r->who.role));
        serve_error(r, 403, msg);
        return;
    }
    if (state_changing(m)) {
        if (!origin_ok(r)) {
            serve_error(r, 403, "cross-origin request refused");
            return;
        }
        if (r->has_who && r->who.via == ACCESS_VIA_SESSION && !(hit->r->flags & SERVE_NO_CSRF)) {
            const char *tok = serve_header(r, "X-CSRF-Token");
            if (!tok)
                tok = serve_form(r, "csrf");
            if (!access_csrf_check(&r->who, tok)) {
                serve_error(r, 403, tok ? "wrong CSRF token" : "missing CSRF token");
                return;
            }
        }
    }
    hit->r->fn(r, hit->ud);
}
