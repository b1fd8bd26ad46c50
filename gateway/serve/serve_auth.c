/* serve_auth — sign-in routes (see serve_auth.h). */
#include "serve_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "fhir_json.h"
#include "fhir_log.h"

typedef struct auth {
    serve *s;
    access_ctx *acc;
    oidc *o;
    char label[128];
} auth;

static void auth_free(void *ud)
{
    auth *a = ud;
    oidc_free(a->o); /* pending sign-ins are dropped before their requests go */
    free(a);
}

/* A local path to go to after sign-in, else "/". */
static const char *safe_next(const char *next)
{
    if (!next || next[0] != '/' || next[1] == '/' || next[1] == '\\' || strlen(next) > 1024)
        return "/";
    for (const char *c = next; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return "/";
    return next;
}

static void page(serve_req *r, int status, const char *title, fhir_buf *body)
{
    fhir_buf b;
    fhir_buf_init(&b, 65536);
    fhir_buf_puts(&b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>");
    serve_html_escape(&b, title);
    fhir_buf_puts(&b, " — cartgate</title></head>\n<body><main>\n");
    fhir_buf_append(&b, body->data, body->len);
    fhir_buf_puts(&b, "</main></body></html>\n");
    serve_reply(r, status, "text/html; charset=utf-8", b.data, b.len);
    fhir_buf_free(&b);
}

static void login_page(serve_req *r, auth *a, int status, const char *message, const char *next)
{
    fhir_buf b;
    fhir_buf_init(&b, 32768);
    fhir_buf_puts(&b, "<h1>Sign in to cartgate</h1>\n");
    if (message) {
        fhir_buf_puts(&b, "<p role=\"alert\">");
        serve_html_escape(&b, message);
        fhir_buf_puts(&b, "</p>\n");
    }
    fhir_buf_puts(&b, "<form method=\"post\" action=\"/auth/login\">\n<input type=\"hidden\" name=\"next\" value=\"");
    serve_html_escape(&b, next);
    fhir_buf_puts(&b, "\">\n<p><label for=\"username\">User name</label>\n"
                      "<input id=\"username\" name=\"username\" autocomplete=\"username\" required></p>\n"
                      "<p><label for=\"password\">Password</label>\n"
                      "<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" "
                      "required></p>\n<p><button type=\"submit\">Sign in</button></p>\n</form>\n");
    if (a->o) {
        char *enc = evhttp_encode_uri(next);
        fhir_buf_printf(&b, "<p><a href=\"/auth/oidc/start?next=%s\">Sign in with ", enc ? enc : "%2F");
        free(enc);
        serve_html_escape(&b, a->label);
        fhir_buf_puts(&b, "</a></p>\n");
    }
    page(r, status, "Sign in", &b);
    fhir_buf_free(&b);
}

static void get_login(serve_req *r, void *ud)
{
    login_page(r, ud, 200, NULL, safe_next(serve_query(r, "next")));
}

static void set_session(serve_req *r, const char *cookie)
{
    serve_set_cookie(r, SERVE_SESSION_COOKIE, cookie, "/", "Strict", -1);
}

static void post_login(serve_req *r, void *ud)
{
    auth *a = ud;
    const char *name = serve_form(r, "username");
    const char *pw = serve_form(r, "password");
    const char *next = safe_next(serve_form(r, "next"));
    char next_copy[1100];
    snprintf(next_copy, sizeof next_copy, "%s", next);
    access_principal p;
    char cookie[ACCESS_COOKIE_LEN];
    int64_t retry = 0;
    fhir_error err;
    fhir_error_clear(&err);
    int rc = access_login_password(a->acc, name, pw, serve_source(r), &p, cookie, &retry, &err);
    if (rc == ACCESS_OK) {
        set_session(r, cookie);
        memset(cookie, 0, sizeof cookie);
        serve_redirect(r, next_copy);
    } else if (rc == ACCESS_LOCKED) {
        char msg[160], ra[32];
        snprintf(msg, sizeof msg, "Too many failed sign-ins. Try again in %lld seconds.", (long long)retry);
        snprintf(ra, sizeof ra, "%lld", (long long)retry);
        serve_add_header(r, "Retry-After", ra);
        login_page(r, a, 429, msg, next_copy);
    } else if (rc == ACCESS_DENIED) {
        login_page(r, a, 401, "Sign-in failed: wrong user name or password.", next_copy);
    } else {
        fhir_log(FHIR_LOG_ERROR, "auth.error", "error=%s", err.msg);
        login_page(r, a, 500, "Sign-in is not available right now.", next_copy);
    }
}

static void post_logout(serve_req *r, void *ud)
{
    auth *a = ud;
    const access_principal *p = serve_principal(r);
    if (p && p->via == ACCESS_VIA_SESSION) {
        fhir_error err;
        fhir_error_clear(&err);
        if (access_logout(a->acc, serve_cookie(r, SERVE_SESSION_COOKIE), p, &err)) {
            serve_error(r, 500, err.msg);
            return;
        }
    }
    serve_set_cookie(r, SERVE_SESSION_COOKIE, "", "/", "Strict", 0);
    serve_redirect(r, "/auth/login");
}

static void get_session(serve_req *r, void *ud)
{
    (void)ud;
    const access_principal *p = serve_principal(r);
    fhir_buf b;
    fhir_buf_init(&b, 4096);
    if (!p) {
        fhir_buf_puts(&b, "{\"signed_in\":false}");
    } else {
        static const char *const via[] = {"none", "session", "token", "shared", "local"};
        char csrf[ACCESS_CSRF_LEN];
        access_csrf_token(p, csrf);
        fhir_buf_printf(&b, "{\"signed_in\":true,\"user_id\":%lld,\"user\":", (long long)p->user_id);
        fhir_json_write_string(&b, p->name, strlen(p->name));
        fhir_buf_printf(&b, ",\"role\":\"%s\",\"service\":%s,\"via\":\"%s\",\"csrf\":", role_name(p->role),
                        p->service ? "true" : "false", via[p->via <= ACCESS_VIA_LOCAL ? p->via : 0]);
        if (csrf[0])
            fhir_json_write_string(&b, csrf, strlen(csrf));
        else
            fhir_buf_puts(&b, "null");
        fhir_buf_puts(&b, "}");
    }
    serve_json(r, 200, &b);
    fhir_buf_free(&b);
}

static void on_begin(void *ud, const char *url, const char *binding, const fhir_error *err)
{
    serve_req *r = ud;
    if (!url) {
        fhir_log(FHIR_LOG_WARN, "auth.oidc_unavailable", "error=%s", err->msg);
        fhir_buf b;
        fhir_buf_init(&b, 4096);
        fhir_buf_puts(&b, "<h1>Sign-in unavailable</h1>\n<p role=\"alert\">The hospital sign-in service cannot be "
                          "reached. Try again in a minute, or use a local account.</p>\n"
                          "<p><a href=\"/auth/login\">Back to sign-in</a></p>\n");
        page(r, 503, "Sign-in unavailable", &b);
        fhir_buf_free(&b);
        return;
    }
    serve_set_cookie(r, SERVE_OIDC_COOKIE, binding, "/auth/oidc", "Lax", 600);
    serve_redirect_external(r, url);
}

static void get_oidc_start(serve_req *r, void *ud)
{
    auth *a = ud;
    if (!a->o) {
        serve_error(r, 404, "OpenID Connect sign-in is not configured");
        return;
    }
    oidc_begin(a->o, safe_next(serve_query(r, "next")), on_begin, r);
}

typedef struct cb_ctx {
    serve_req *r;
    auth *a;
} cb_ctx;

static void failed_page(serve_req *r)
{
    fhir_buf b;
    fhir_buf_init(&b, 4096);
    fhir_buf_puts(&b, "<h1>Sign-in failed</h1>\n<p role=\"alert\">The sign-in through the hospital's identity "
                      "provider could not be completed. Please start again.</p>\n"
                      "<p><a href=\"/auth/login\">Back to sign-in</a></p>\n");
    serve_set_cookie(r, SERVE_OIDC_COOKIE, "", "/auth/oidc", "Lax", 0);
    page(r, 401, "Sign-in failed", &b);
    fhir_buf_free(&b);
}

static void on_finish(void *ud, const access_oidc_identity *id, const char *return_to, const fhir_error *ferr)
{
    cb_ctx *c = ud;
    serve_req *r = c->r;
    auth *a = c->a;
    free(c);
    fhir_error err;
    fhir_error_clear(&err);
    if (!id) {
        /* refused before a person is known (state, nonce, signature, token endpoint ...) */
        fhir_log(FHIR_LOG_WARN, "access.sign_in_failed", "via=oidc source=%s error=%s",
                 serve_source(r), ferr->msg);
        access_principal who;
        memset(&who, 0, sizeof who);
        snprintf(who.name, sizeof who.name, "(unknown user)");
        snprintf(who.source, sizeof who.source, "%s", serve_source(r));
        char detail[FHIR_ERROR_MAX + 64];
        snprintf(detail, sizeof detail, "OpenID Connect sign-in refused: %s", ferr->msg);
        if (access_audit(a->acc, &who, "sign-in-failed", detail, NULL, &err))
            fhir_log(FHIR_LOG_ERROR, "auth.audit_error", "error=%s", err.msg);
        failed_page(r);
        return;
    }
    access_principal p;
    char cookie[ACCESS_COOKIE_LEN];
    int rc = access_login_oidc(a->acc, id, serve_source(r), &p, cookie, &err);
    if (rc != ACCESS_OK) {
        if (rc < 0)
            fhir_log(FHIR_LOG_ERROR, "auth.error", "error=%s", err.msg);
        failed_page(r);
        return;
    }
    set_session(r, cookie);
    memset(cookie, 0, sizeof cookie);
    serve_set_cookie(r, SERVE_OIDC_COOKIE, "", "/auth/oidc", "Lax", 0);
    /* a same-site navigation from our own page, so the SameSite=Strict cookie goes along */
    fhir_buf b, meta;
    fhir_buf_init(&b, 4096);
    fhir_buf_init(&meta, 2048);
    fhir_buf_puts(&b, "<h1>Signed in</h1>\n<p><a href=\"");
    serve_html_escape(&b, return_to);
    fhir_buf_puts(&b, "\">Continue</a></p>\n");
    fhir_buf_puts(&meta, "0;url=");
    fhir_buf_puts(&meta, return_to);
    /* the refresh header does the same as a meta tag, without markup */
    serve_add_header(r, "Refresh", fhir_buf_cstr(&meta));
    page(r, 200, "Signed in", &b);
    fhir_buf_free(&b);
    fhir_buf_free(&meta);
}

static void get_oidc_callback(serve_req *r, void *ud)
{
    auth *a = ud;
    if (!a->o) {
        serve_error(r, 404, "OpenID Connect sign-in is not configured");
        return;
    }
    cb_ctx *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->r = r;
    c->a = a;
    const char *perr = serve_query(r, "error");
    char perr_text[300] = "";
    if (perr)
        snprintf(perr_text, sizeof perr_text, "%.60s: %.200s", perr,
                 serve_query(r, "error_description") ? serve_query(r, "error_description") : "");
    oidc_finish(a->o, serve_query(r, "state"), serve_query(r, "code"), perr ? perr_text : NULL,
                serve_cookie(r, SERVE_OIDC_COOKIE), on_finish, c);
}

static const serve_route ROUTES[] = {
    {"GET", "/auth/login", ROLE_PUBLIC, get_login, SERVE_HTML},
    {"POST", "/auth/login", ROLE_PUBLIC, post_login, SERVE_HTML | SERVE_NO_CSRF},
    {"POST", "/auth/logout", ROLE_PUBLIC, post_logout, SERVE_HTML},
    {"GET", "/auth/session", ROLE_PUBLIC, get_session, 0},
    {"GET", "/auth/oidc/start", ROLE_PUBLIC, get_oidc_start, SERVE_HTML},
    {"GET", "/auth/oidc/callback", ROLE_PUBLIC, get_oidc_callback, SERVE_HTML},
};

const serve_route *serve_auth_routes(size_t *n)
{
    *n = sizeof ROUTES / sizeof ROUTES[0];
    return ROUTES;
}

int serve_auth_add(serve *s, oidc *o, const char *provider_label, fhir_error *err)
{
    auth *a = calloc(1, sizeof *a);
    if (!a)
        abort();
    a->s = s;
    a->acc = serve_access_ctx(s);
    a->o = o;
    snprintf(a->label, sizeof a->label, "%s", provider_label && *provider_label ? provider_label : "Hospital sign-in");
    size_t n;
    const serve_route *routes = serve_auth_routes(&n);
    if (serve_add_routes(s, routes, n, a, err)) {
        auth_free(a);
        return -1;
    }
    serve_on_free(s, auth_free, a);
    if (o)
        oidc_start(o);
    return 0;
}
