/* serve — the one HTTP listener of the daemon: the API, the sign-in pages and (later) the web
 * app, CDS Hooks and center intake all register routes here.
 *
 * Routes: (method, path pattern, required role, handler). A pattern is a path whose segments
 * may be "{name}" (one non-empty segment, percent-decoded, given to the handler by name) and
 * whose last segment may be "*" (the rest of the path). GET routes also answer HEAD. A route
 * without a role (ROLE_UNSET) is refused when registered; ROLE_PUBLIC must be said. The order
 * of the checks for a request: path known? -> who is it? (Authorization: Bearer <token>, else
 * the session cookie; routes flagged SERVE_OWN_AUTH skip this and every later check: their
 * handler authenticates) -> method allowed (405 with Allow) -> role allowed (401 anonymous, 403
 * otherwise) -> CSRF: a state-changing request (POST, PUT, PATCH, DELETE) made with a session
 * cookie must carry the session's CSRF token (header X-CSRF-Token or form field "csrf"), and
 * any request with an Origin header must come from our own origin; otherwise 403. An unknown
 * path answers 401 to an anonymous client (it learns nothing) and 404 to a known one.
 * Errors are JSON: {"error":{"status":403,"message":"..."}} (routes flagged SERVE_HTML send an
 * anonymous browser to the sign-in page instead of a 401).
 *
 * Every response carries: Content-Security-Policy (no inline script or style, no framing,
 * forms post only to us), X-Content-Type-Options: nosniff, X-Frame-Options: DENY,
 * Referrer-Policy: same-origin (no-referrer would make browsers send "Origin: null" on our own
 * form posts, which the Origin check refuses), Cross-Origin-Opener-Policy: same-origin, Cache-Control:
 * no-store (unless the handler sets its own), and Strict-Transport-Security on TLS.
 *
 * Transport: TLS 1.2+ through libevent's OpenSSL bufferevents (certificate chain and key from
 * PEM files; serve_reload_tls() swaps them, existing connections keep theirs). Plain HTTP is
 * accepted only on a loopback bind, unless insecure_plain_http says otherwise (for a TLS
 * proxy on another host; never for people's browsers across a network).
 * Before the body: a request that declares a body (Content-Length > 0, or chunked) is checked
 * from its head before any of its body is read — the checks above up to the Origin check, the
 * body cap against its Content-Length, and for a SERVE_OWN_AUTH route the handler's head check
 * (serve_route_head_check). A request they refuse gets the same answer as before (401 with
 * WWW-Authenticate, 403, 404, 405, the sign-in redirect, 413 or the route's own too_large
 * answer), its body is never read, and the connection closes after the answer. A client that
 * waits for "100 Continue" gets the refusal instead. The head is held back from evhttp until
 * it is complete, or longer than max_header_bytes (then evhttp refuses it): per connection at
 * most max_header_bytes plus the bytes of one read.
 * Limits: at most max_connections at once (the listener pauses at the cap, connections then
 * wait in the kernel backlog); a request's headers and body must arrive within
 * request_timeout_s of the connection opening or of the previous reply (a client trickling
 * a byte at a time cannot extend it); each read or write waits at most idle_timeout_s; a
 * handler and the writing of its reply get response_timeout_s; headers and bodies are capped
 * at max_header_bytes / max_body_bytes (413).
 *
 * Logs: one line per request with method, route pattern, status, duration and the user id
 * (never a name, a query string or a body). */
#ifndef SERVE_H
#define SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "access.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "role.h"

struct event_base;

#define SERVE_MAX_PARAMS 4
#define SERVE_MAX_ROUTES 256
#define SERVE_SESSION_COOKIE "cartgate_session"

typedef struct serve serve;
typedef struct serve_req serve_req;

/* A handler answers with serve_reply()/serve_json()/serve_error()... exactly once. Returning
 * without having answered makes the request asynchronous: the handler (or a callback it set
 * up) must answer later; the request stays valid until then. */
typedef void (*serve_handler)(serve_req *r, void *ud);

enum {
    SERVE_HTML = 1u << 0,     /* a page: anonymous browsers go to the sign-in page */
    SERVE_NO_CSRF = 1u << 1,  /* the sign-in form itself (no session yet); Origin still checked */
    /* Authenticated by the handler's own check of a signed credential (the EHR's CDS Hooks
     * JWT, cds.h), not by us: the listener reads no Authorization header and no session
     * cookie for the route (a person's token or session never reaches it, so there is nothing
     * for CSRF or the Origin check to protect), grants no role, and hands every request to
     * the handler, which answers 401 itself unless the credential verifies. Such a route must
     * declare ROLE_PUBLIC (as far as the listener is concerned it is open) and no other flag;
     * the route tables list it as "own-auth". */
    SERVE_OWN_AUTH = 1u << 2,
};

typedef struct serve_route {
    const char *method;       /* "GET" (+HEAD), "POST", "PUT", "PATCH", "DELETE" */
    const char *pattern;      /* "/api/v1/referrals/{id}/approve" */
    role need;                /* required role; ROLE_UNSET is refused */
    serve_handler fn;
    unsigned flags;
} serve_route;

#define SERVE_BODY_SLACK (1u << 20) /* bytes read beyond a route's own body cap to answer it */

#define SERVE_FD_RESERVE_DEFAULT 64 /* descriptors kept from connections when none is set */
#define SERVE_MIN_CAP 4             /* fewer connections than this: serve_start refuses */
#define SERVE_MAX_LISTENERS 16      /* listeners started at once in one process */
#define SERVE_EVICT_PER_TURN 8      /* idle connections evicted per turn of the loop */

typedef struct serve_config {
    const char *bind;              /* address; NULL = 127.0.0.1 */
    int port;                      /* 0 = any free port */
    const char *tls_cert_file;     /* PEM chain; with tls_key_file, or neither */
    const char *tls_key_file;
    bool insecure_plain_http;      /* allow plain HTTP on a non-loopback bind */
    int max_connections;           /* 0 = 256; lowered at serve_start when the descriptor limit
                                      (RLIMIT_NOFILE) minus those open minus fd_reserve is less */
    int fd_reserve;                /* descriptors connections never take (the store, the
                                      sources, files); 0 = SERVE_FD_RESERVE_DEFAULT */
    int request_timeout_s;         /* 0 = 30 */
    int idle_timeout_s;            /* 0 = 15 */
    int response_timeout_s;        /* 0 = 120 */
    size_t max_header_bytes;       /* 0 = 16 KiB */
    size_t max_body_bytes;         /* 0 = 1 MiB */
} serve_config;

typedef struct serve_stats {
    uint64_t requests;             /* dispatched requests */
    uint64_t connections;          /* accepted */
    uint64_t timeouts;             /* connections closed by the request/response deadline */
    uint64_t evicted;              /* idle connections closed at the cap to make room */
    uint64_t accept_errors;        /* accepts that failed for want of descriptors or memory */
    uint64_t refused_unread;       /* requests refused from their head, the body never read */
    int cap;                       /* connections served at once (after serve_start) */
    uint64_t status[6];            /* answers by class: [2] 2xx ... [5] 5xx */
    int open;                      /* connections open now */
} serve_stats;

/* The listener's TLS files as serve_new loads them: the PEM chain and key load and match.
 * 0, or -1 with err naming the file (check-config). */
int serve_tls_check(const char *cert_file, const char *key_file, fhir_error *err);

/* Validates cfg (TLS files load and match; a plain-HTTP non-loopback bind is refused unless
 * insecure_plain_http) and builds the listener on base (borrowed). acc (borrowed) checks
 * tokens and sessions. Nothing is bound until serve_start(). Caller frees with serve_free(). */
serve *serve_new(struct event_base *base, access_ctx *acc, const serve_config *cfg, fhir_error *err);
void serve_free(serve *s);

/* Adds routes (the table is borrowed and must outlive s; ud is handed to each handler).
 * Refuses a route without a role, an unknown method, a malformed pattern, or a method and
 * pattern registered twice. 0, or -1 with err naming the route. */
int serve_add_routes(serve *s, const serve_route *routes, size_t n, void *ud, fhir_error *err);
/* Gives the registered route method + pattern its own cap on request bodies (max_body bytes,
 * instead of the listener's max_body_bytes, larger or smaller). A body over it is answered by
 * too_large(r, ud) when given (the body is not kept: serve_body gives none; no credential
 * is read), else with the listener's 413; a Content-Length over it is answered so from the
 * head, the body unread (see "Before the body"). A body more than SERVE_BODY_SLACK over the largest
 * cap of the listener is cut off by libevent with its own 413 before any route.
 * 0, or -1 with err (no such route). */
int serve_route_body_cap(serve *s, const char *method, const char *pattern, size_t max_body,
                         serve_handler too_large, fhir_error *err);
/* A SERVE_OWN_AUTH route's check of a request's head before its body is read: false when its
 * handler will refuse the request from the head alone (no or unknown credentials). The
 * listener then reads no body and hands the handler the request without one (serve_body
 * empty), and the handler must answer that refusal without the body; true (also when it
 * cannot tell) and the body is read as usual. Sees serve_header, serve_param, serve_path,
 * serve_method, serve_source, serve_route_name; must have no side effects (the handler checks
 * again). */
typedef bool (*serve_head_check)(const serve_req *r, void *ud);
/* Gives the registered SERVE_OWN_AUTH route method + pattern its head check. 0, or -1 with
 * err (no such route, or not SERVE_OWN_AUTH: the listener checks the others itself). */
int serve_route_head_check(serve *s, const char *method, const char *pattern, serve_head_check fn, fhir_error *err);
/* Checks a route table without a listener (the same rules as serve_add_routes). */
int serve_check_routes(const serve_route *routes, size_t n, fhir_error *err);

/* Runs fn(ud) first thing in serve_free(), before any request or connection is released
 * (for owners of asynchronous work that answers requests, e.g. the OpenID Connect client). */
void serve_on_free(serve *s, void (*fn)(void *), void *ud);

/* Binds and listens. 0, or -1 with err (address in use ...). */
int serve_start(serve *s, fhir_error *err);
/* The bound port (after serve_start). */
int serve_port(const serve *s);
bool serve_is_tls(const serve *s);
const serve_stats *serve_get_stats(const serve *s);
/* Loads the certificate and key files again (SIGHUP). On failure the old ones stay. */
int serve_reload_tls(serve *s, fhir_error *err);
/* The access context given to serve_new (borrowed). */
access_ctx *serve_access_ctx(const serve *s);
/* true when addr is a loopback address (127.0.0.0/8, ::1, localhost). */
bool serve_is_loopback(const char *addr);

/* ---- one request ---------------------------------------------------------------------------- */

/* All strings borrowed until the request is answered. */
const char *serve_method(const serve_req *r);
const char *serve_path(const serve_req *r);
/* The route pattern (for logs). */
const char *serve_route_name(const serve_req *r);
/* A {name} segment of the pattern (decoded), "*" for the rest; NULL when absent. */
const char *serve_param(const serve_req *r, const char *name);
/* A query parameter (decoded); NULL when absent. */
const char *serve_query(serve_req *r, const char *name);
/* A field of an application/x-www-form-urlencoded body; NULL when absent. */
const char *serve_form(serve_req *r, const char *name);
/* The request body (NUL-terminated; *len may be NULL). */
const char *serve_body(serve_req *r, size_t *len);
const char *serve_header(const serve_req *r, const char *name);
/* The value of a request cookie; NULL when absent. */
const char *serve_cookie(serve_req *r, const char *name);
/* The authenticated principal, or NULL (public routes). */
const access_principal *serve_principal(const serve_req *r);
/* The peer address text. */
const char *serve_source(const serve_req *r);
bool serve_req_tls(const serve_req *r);
/* The serve the request came through (for access to its access_ctx). */
access_ctx *serve_access(const serve_req *r);

/* Adds a response header (copied), before the answer. */
void serve_add_header(serve_req *r, const char *name, const char *value);
/* Sets a cookie: HttpOnly, Secure, Path=path, SameSite=same_site ("Strict"/"Lax"); max_age_s
 * < 0 = a session cookie, 0 = delete. */
void serve_set_cookie(serve_req *r, const char *name, const char *value, const char *path, const char *same_site,
                      long max_age_s);

/* The answers (each ends the request; r is invalid afterwards). */
void serve_reply(serve_req *r, int status, const char *content_type, const char *body, size_t len);
/* b's contents as JSON (a trailing newline is added); 500 when b overflowed. */
void serve_json(serve_req *r, int status, fhir_buf *b);
/* {"error":{"status":N,"message":msg}} */
void serve_error(serve_req *r, int status, const char *msg);
/* 303 See Other to location (a local path). */
void serve_redirect(serve_req *r, const char *location);
/* 302 Found to an absolute http(s) URL elsewhere (the identity provider). */
void serve_redirect_external(serve_req *r, const char *url);

/* Path segments the routes take: a patient id (1..64 of A-Z a-z 0-9 - ., FHIR id characters),
 * and a positive decimal number of at most 18 digits (true and *out). */
bool serve_id_ok(const char *s);
bool serve_parse_id(const char *s, int64_t *out);

/* Writes s HTML-escaped into b. */
void serve_html_escape(fhir_buf *b, const char *s);

#endif
