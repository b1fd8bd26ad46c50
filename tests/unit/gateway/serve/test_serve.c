/* Unit tests: the listener with real HTTP on 127.0.0.1 — the route table (a route without a
 * role is refused; every sign-in route declares one), bind checks (plain HTTP only on
 * loopback), 401/403/404/405 JSON errors, security headers, the sign-in form and its session
 * cookie flags, CSRF and Origin checks, sign-out, TLS with a CA made by openssl here (with and
 * without the CA, TLS 1.1 refused, certificate reload), the request deadline against a client
 * trickling bytes, and the connection cap. The server runs on the test's event loop; a libcurl
 * client runs in a thread and reports back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fhir_clock.h"
#include "serve.h"
#include "serve_auth.h"

static char tmpdir[256];

/* ---- handlers under test --------------------------------------------------------------------- */

static void h_public(serve_req *r, void *ud)
{
    (void)ud;
    serve_reply(r, 200, "text/plain", "public\n", 7);
}

static void h_view(serve_req *r, void *ud)
{
    (void)ud;
    char b[200];
    int n = snprintf(b, sizeof b, "hello %s\n", serve_principal(r)->name);
    serve_reply(r, 200, "text/plain", b, (size_t)n);
}

static void h_act(serve_req *r, void *ud)
{
    (void)ud;
    char b[200];
    int n = snprintf(b, sizeof b, "acted on %s by %s as %s\n", serve_param(r, "id"), serve_principal(r)->name,
                     role_name(serve_principal(r)->role));
    serve_reply(r, 200, "text/plain", b, (size_t)n);
}

/* A route that authenticates by its own check (SERVE_OWN_AUTH): it sees the Authorization
 * header as sent, never a principal of ours, and answers 401 itself unless the header is the
 * one it expects. */
/* The own-auth route's answer to a body over its own cap (serve_route_body_cap). */
static void h_own_too_large(serve_req *r, void *ud)
{
    (void)ud;
    size_t n = 0;
    const char *b = serve_body(r, &n);
    char m[200];
    int k = snprintf(m, sizeof m, "own too large %s body=%s\n", serve_param(r, "id"), b && n ? "kept" : "none");
    serve_reply(r, 413, "text/plain", m, (size_t)k);
}

static void h_own(serve_req *r, void *ud)
{
    (void)ud;
    const char *a = serve_header(r, "Authorization");
    if (!a || strcmp(a, "Bearer signed-by-the-ehr")) {
        serve_error(r, 401, "own check failed");
        return;
    }
    char b[200];
    int n = snprintf(b, sizeof b, "own %s principal=%s\n", serve_param(r, "id"),
                     serve_principal(r) ? serve_principal(r)->name : "none");
    serve_reply(r, 200, "text/plain", b, (size_t)n);
}

/* A clinician's route that takes a large body (its cap is 32 MiB, like the center intake's):
 * answers with the number of bytes it got. */
#define BIG_CAP (32u << 20)
static void h_big(serve_req *r, void *ud)
{
    (void)ud;
    size_t n = 0;
    serve_body(r, &n);
    char b[64];
    int k = snprintf(b, sizeof b, "big %zu\n", n);
    serve_reply(r, 200, "text/plain", b, (size_t)k);
}

/* The own-auth route's head check: its handler refuses anything but this header. */
static bool own_head_ok(const serve_req *r, void *ud)
{
    (void)ud;
    const char *a = serve_header(r, "Authorization");
    return a && !strcmp(a, "Bearer signed-by-the-ehr");
}

static const serve_route ROUTES[] = {
    {"POST", "/t/big", ROLE_CLINICIAN, h_big, 0},
    {"GET", "/t/public", ROLE_PUBLIC, h_public, 0},
    {"GET", "/t/view", ROLE_VIEWER, h_view, 0},
    {"GET", "/t/page", ROLE_VIEWER, h_view, SERVE_HTML},
    {"POST", "/t/act/{id}", ROLE_CLINICIAN, h_act, 0},
    {"POST", "/t/own/{id}", ROLE_PUBLIC, h_own, SERVE_OWN_AUTH},
};

/* ---- route table and configuration ---------------------------------------------------------------- */

static void test_routes_need_roles(void **state)
{
    (void)state;
    fhir_error err = {0};
    assert_int_equal(serve_check_routes(ROUTES, sizeof ROUTES / sizeof ROUTES[0], &err), 0);
    /* a route authenticated by its handler gets no role from the listener: it must say public
     * and carry no other flag */
    serve_route own_role[] = {{"POST", "/x", ROLE_CLINICIAN, h_own, SERVE_OWN_AUTH}};
    assert_int_equal(serve_check_routes(own_role, 1, &err), -1);
    assert_non_null(strstr(err.msg, "SERVE_OWN_AUTH"));
    serve_route own_html[] = {{"GET", "/x", ROLE_PUBLIC, h_own, SERVE_OWN_AUTH | SERVE_HTML}};
    assert_int_equal(serve_check_routes(own_html, 1, &err), -1);
    serve_route no_role[] = {{"GET", "/x", ROLE_UNSET, h_public, 0}};
    assert_int_equal(serve_check_routes(no_role, 1, &err), -1);
    assert_non_null(strstr(err.msg, "declares no role"));
    serve_route bad[][1] = {
        {{"FETCH", "/x", ROLE_PUBLIC, h_public, 0}},
        {{"GET", "x", ROLE_PUBLIC, h_public, 0}},
        {{"GET", "/a//b", ROLE_PUBLIC, h_public, 0}},
        {{"GET", "/a/*/b", ROLE_PUBLIC, h_public, 0}},
        {{"GET", "/a/{}", ROLE_PUBLIC, h_public, 0}},
        {{"GET", "/a", ROLE_PUBLIC, NULL, 0}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(serve_check_routes(bad[i], 1, &err), -1);
    serve_route dup[] = {{"GET", "/x", ROLE_PUBLIC, h_public, 0}, {"GET", "/x", ROLE_VIEWER, h_public, 0}};
    assert_int_equal(serve_check_routes(dup, 2, &err), -1);
    /* every sign-in route says its role */
    size_t n;
    const serve_route *auth = serve_auth_routes(&n);
    assert_true(n >= 6);
    for (size_t i = 0; i < n; i++)
        assert_int_not_equal(auth[i].need, ROLE_UNSET);
    assert_int_equal(serve_check_routes(auth, n, &err), 0);
}

static void test_bind_checks(void **state)
{
    (void)state;
    fhir_error err = {0};
    assert_true(serve_is_loopback("127.0.0.1"));
    assert_true(serve_is_loopback("127.8.9.10"));
    assert_true(serve_is_loopback("::1"));
    assert_true(serve_is_loopback("localhost"));
    assert_false(serve_is_loopback("0.0.0.0"));
    assert_false(serve_is_loopback("10.0.0.1"));
    assert_false(serve_is_loopback("::"));
    assert_false(serve_is_loopback("128.0.0.1"));
    serve_config c = {.bind = "0.0.0.0"};
    assert_null(serve_new(NULL, NULL, &c, &err));
    assert_non_null(strstr(err.msg, "plain HTTP on 0.0.0.0"));
    c.insecure_plain_http = true;
    serve *s = serve_new(NULL, NULL, &c, &err);
    assert_non_null(s);
    serve_free(s);
    serve_config t = {.bind = "0.0.0.0", .tls_cert_file = "/nonexistent.pem"};
    assert_null(serve_new(NULL, NULL, &t, &err));
    assert_non_null(strstr(err.msg, "both"));
    t.tls_key_file = "/nonexistent.key";
    assert_null(serve_new(NULL, NULL, &t, &err));
    assert_non_null(strstr(err.msg, "certificate"));
}

/* ---- the live part ------------------------------------------------------------------------------ */

typedef struct resp {
    long code;
    char body[8192];
    size_t blen;
    char headers[8192];
    size_t hlen;
    CURLcode rc;
} resp;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    size_t k = sz * n;
    if (r->blen + k < sizeof r->body) {
        memcpy(r->body + r->blen, p, k);
        r->blen += k;
        r->body[r->blen] = 0;
    }
    return k;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    size_t k = sz * n;
    if (r->hlen + k < sizeof r->headers) {
        memcpy(r->headers + r->hlen, p, k);
        r->hlen += k;
        r->headers[r->hlen] = 0;
    }
    return k;
}

typedef struct live {
    int port;
    char base[64];
    char failures[8192];
    int nfail;
    int done_fd;             /* write end: the client is finished */
    const char *ca;          /* TLS: CA file */
    char vtok[ACCESS_TOKEN_LEN], ctok[ACCESS_TOKEN_LEN];
    serve *s;
    int phase;
    char ca2[512], cert2[512], key2[512];
} live;

#define CHECK(L, cond, ...)                                                                          \
    do {                                                                                             \
        if (!(cond)) {                                                                               \
            (L)->nfail++;                                                                            \
            size_t _o = strlen((L)->failures);                                                       \
            snprintf((L)->failures + _o, sizeof (L)->failures - _o, "line %d: ", __LINE__);          \
            _o = strlen((L)->failures);                                                              \
            snprintf((L)->failures + _o, sizeof (L)->failures - _o, __VA_ARGS__);                    \
            _o = strlen((L)->failures);                                                              \
            snprintf((L)->failures + _o, sizeof (L)->failures - _o, "\n");                           \
        }                                                                                            \
    } while (0)

/* One request. hdrs: NULL-terminated "Name: value" list. */
static void req(live *L, const char *method, const char *path, const char *const *hdrs, const char *body,
                const char *ca, resp *out)
{
    memset(out, 0, sizeof *out);
    CURL *e = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "%s%s", L->base, path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    if (body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    else if (!strcmp(method, "POST"))
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    struct curl_slist *sl = NULL;
    for (size_t i = 0; hdrs && hdrs[i]; i++)
        sl = curl_slist_append(sl, hdrs[i]);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, sl);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 20L);
    if (ca)
        curl_easy_setopt(e, CURLOPT_CAINFO, ca);
    out->rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->code);
    if (getenv("SERVE_TEST_DEBUG")) /* SERVE_TEST_DEBUG=1: one line per request */
        fprintf(stderr, "%s %s -> %ld (%s)\n", method, path, out->code, curl_easy_strerror(out->rc));
    curl_slist_free_all(sl);
    curl_easy_cleanup(e);
}

/* case-insensitive strstr (strcasestr is a GNU extension) */
static const char *ci_find(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (!strncasecmp(hay, needle, n))
            return hay;
    return NULL;
}

static bool has_header(const resp *r, const char *line)
{
    return ci_find(r->headers, line) != NULL;
}

/* Copies the value of a Set-Cookie for name into out. */
static bool cookie_of(const resp *r, const char *name, char *out, size_t n, char *line, size_t ln)
{
    char key[80];
    snprintf(key, sizeof key, "Set-Cookie: %s=", name);
    const char *p = ci_find(r->headers, key);
    if (!p)
        return false;
    const char *eol = strstr(p, "\r\n");
    snprintf(line, ln, "%.*s", (int)(eol - p), p);
    p += strlen(key);
    size_t l = strcspn(p, ";\r");
    snprintf(out, n, "%.*s", (int)l, p);
    return true;
}

static void *client_plain(void *arg)
{
    live *L = arg;
    resp r;
    /* public, with the security headers and no HSTS on plain HTTP */
    req(L, "GET", "/t/public", NULL, NULL, NULL, &r);
    CHECK(L, r.code == 200 && !strcmp(r.body, "public\n"), "public: %ld", r.code);
    CHECK(L, has_header(&r, "Content-Security-Policy: default-src 'self'; script-src 'self'"), "no CSP");
    CHECK(L, has_header(&r, "frame-ancestors 'none'"), "no frame-ancestors");
    CHECK(L, has_header(&r, "X-Content-Type-Options: nosniff"), "no nosniff");
    CHECK(L, has_header(&r, "X-Frame-Options: DENY"), "no XFO");
    CHECK(L, has_header(&r, "Referrer-Policy: same-origin"), "referrer only to ourselves");
    CHECK(L, !has_header(&r, "Strict-Transport-Security"), "HSTS on plain HTTP");
    req(L, "HEAD", "/t/public", NULL, NULL, NULL, &r);
    CHECK(L, r.code == 200 && r.blen == 0, "HEAD: %ld %zu", r.code, r.blen);
    /* anonymous */
    req(L, "GET", "/t/view", NULL, NULL, NULL, &r);
    CHECK(L, r.code == 401 && strstr(r.body, "\"status\":401") && has_header(&r, "WWW-Authenticate: Bearer"),
          "anonymous view: %ld %s", r.code, r.body);
    req(L, "GET", "/nowhere", NULL, NULL, NULL, &r);
    CHECK(L, r.code == 401, "anonymous unknown path: %ld", r.code);
    req(L, "GET", "/t/page?x=1", NULL, NULL, NULL, &r);
    CHECK(L, r.code == 303 && has_header(&r, "Location: /auth/login?next=%2Ft%2Fpage%3Fx%3D1"), "page: %ld %s", r.code,
          r.headers);
    const char *bad[] = {"Authorization: Bearer cgt_nope", NULL};
    req(L, "GET", "/t/public", bad, NULL, NULL, &r);
    CHECK(L, r.code == 401, "wrong token on a public route: %ld", r.code);
    /* tokens: viewer reads, clinician acts, viewer acting gets 403 */
    char vh[128], ch[128];
    snprintf(vh, sizeof vh, "Authorization: Bearer %s", L->vtok);
    snprintf(ch, sizeof ch, "Authorization: Bearer %s", L->ctok);
    const char *vhs[] = {vh, NULL}, *chs[] = {ch, NULL};
    req(L, "GET", "/t/view", vhs, NULL, NULL, &r);
    CHECK(L, r.code == 200 && !strcmp(r.body, "hello viv\n"), "viewer view: %ld %s", r.code, r.body);
    req(L, "GET", "/nowhere", vhs, NULL, NULL, &r);
    CHECK(L, r.code == 404 && strstr(r.body, "\"status\":404"), "known unknown path: %ld", r.code);
    req(L, "POST", "/t/act/7", vhs, NULL, NULL, &r);
    CHECK(L, r.code == 403 && strstr(r.body, "needs the clinician role"), "viewer acting: %ld %s", r.code, r.body);
    req(L, "POST", "/t/act/7", chs, NULL, NULL, &r);
    CHECK(L, r.code == 200 && !strcmp(r.body, "acted on 7 by cleo as clinician\n"), "clinician: %ld %s", r.code, r.body);
    req(L, "POST", "/t/act/a%20b", chs, NULL, NULL, &r);
    CHECK(L, r.code == 200 && strstr(r.body, "acted on a b "), "decoded param: %s", r.body);
    req(L, "DELETE", "/t/act/7", chs, NULL, NULL, &r);
    CHECK(L, r.code == 405 && has_header(&r, "Allow: POST"), "405: %ld %s", r.code, r.headers);
    req(L, "GET", "/t/act", chs, NULL, NULL, &r);
    CHECK(L, r.code == 404, "missing param segment: %ld", r.code);
    /* password sign-in through the form */
    req(L, "POST", "/auth/login", NULL, "username=cleo&password=wrong+password&next=%2Ft%2Fview", NULL, &r);
    CHECK(L, r.code == 401 && strstr(r.body, "Sign-in failed") && !has_header(&r, "Set-Cookie: cartgate_session"),
          "bad password: %ld", r.code);
    const char *evil[] = {"Origin: https://evil.example", NULL};
    req(L, "POST", "/auth/login", evil, "username=cleo&password=correct+horse+battery", NULL, &r);
    CHECK(L, r.code == 403, "cross-origin sign-in: %ld", r.code);
    req(L, "POST", "/auth/login", NULL, "username=cleo&password=correct+horse+battery&next=%2Ft%2Fview", NULL, &r);
    char cookie[128], line[512];
    CHECK(L, r.code == 303 && has_header(&r, "Location: /t/view"), "sign-in: %ld", r.code);
    CHECK(L, cookie_of(&r, SERVE_SESSION_COOKIE, cookie, sizeof cookie, line, sizeof line), "no session cookie");
    CHECK(L, strstr(line, "; HttpOnly") && strstr(line, "; Secure") && strstr(line, "; SameSite=Strict") &&
                 strstr(line, "; Path=/") && !strstr(line, "Max-Age"),
          "cookie flags: %s", line);
    req(L, "POST", "/auth/login", NULL, "username=cleo&password=correct+horse+battery&next=https%3A%2F%2Fevil.example",
        NULL, &r);
    CHECK(L, r.code == 303 && has_header(&r, "Location: /\r"), "open redirect: %s", r.headers);
    char ck[200];
    snprintf(ck, sizeof ck, "Cookie: %s=%s", SERVE_SESSION_COOKIE, cookie);
    const char *cks[] = {ck, NULL};
    req(L, "GET", "/t/view", cks, NULL, NULL, &r);
    CHECK(L, r.code == 200 && !strcmp(r.body, "hello cleo\n"), "cookie read: %ld", r.code);
    req(L, "GET", "/auth/session", cks, NULL, NULL, &r);
    char *cp = strstr(r.body, "\"csrf\":\"");
    char csrf[64] = "";
    if (cp)
        snprintf(csrf, sizeof csrf, "%.43s", cp + 8);
    CHECK(L, r.code == 200 && strstr(r.body, "\"role\":\"clinician\"") && strlen(csrf) == 43, "session: %s", r.body);
    /* CSRF: missing -> 403, wrong -> 403, right (header or form field) -> 200 */
    req(L, "POST", "/t/act/9", cks, NULL, NULL, &r);
    CHECK(L, r.code == 403 && strstr(r.body, "missing CSRF token"), "no csrf: %ld %s", r.code, r.body);
    char xh[100];
    /* the right token with its last character changed (the last of 43 base64url characters is
     * one of 16: a fixed 'A' was the right token itself once in 16 runs) */
    snprintf(xh, sizeof xh, "X-CSRF-Token: %.42s%c", csrf, csrf[42] == 'A' ? 'E' : 'A');
    const char *wrong[] = {ck, xh, NULL};
    req(L, "POST", "/t/act/9", wrong, NULL, NULL, &r);
    CHECK(L, r.code == 403 && strstr(r.body, "wrong CSRF token"), "wrong csrf: %ld %s", r.code, r.body);
    snprintf(xh, sizeof xh, "X-CSRF-Token: %s", csrf);
    const char *right[] = {ck, xh, NULL};
    req(L, "POST", "/t/act/9", right, NULL, NULL, &r);
    CHECK(L, r.code == 200 && strstr(r.body, "acted on 9 by cleo"), "csrf header: %ld %s", r.code, r.body);
    char form[100];
    snprintf(form, sizeof form, "csrf=%s", csrf);
    const char *formh[] = {ck, "Content-Type: application/x-www-form-urlencoded", NULL};
    req(L, "POST", "/t/act/10", formh, form, NULL, &r);
    CHECK(L, r.code == 200, "csrf form field: %ld %s", r.code, r.body);
    const char *xo[] = {ck, xh, "Origin: https://evil.example", NULL};
    req(L, "POST", "/t/act/9", xo, NULL, NULL, &r);
    CHECK(L, r.code == 403 && strstr(r.body, "cross-origin"), "origin: %ld", r.code);
    char own[100];
    snprintf(own, sizeof own, "Origin: %s", L->base);
    const char *oo[] = {ck, xh, own, NULL};
    req(L, "POST", "/t/act/9", oo, NULL, NULL, &r);
    CHECK(L, r.code == 200, "own origin: %ld %s", r.code, r.body);
    /* a route authenticated by its own handler: the listener neither refuses a bearer token
     * it does not know, nor lets a person's token, session or CSRF token stand in for the
     * handler's check, nor applies the Origin check (no credential of ours is involved) */
    const char *ownh[] = {"Authorization: Bearer signed-by-the-ehr", "Origin: https://ehr.example", NULL};
    req(L, "POST", "/t/own/5", ownh, "{}", NULL, &r);
    CHECK(L, r.code == 200 && !strcmp(r.body, "own 5 principal=none\n"), "own auth: %ld %s", r.code, r.body);
    req(L, "POST", "/t/own/5", chs, "{}", NULL, &r);
    CHECK(L, r.code == 401 && strstr(r.body, "own check failed"), "a person's token on own auth: %ld %s", r.code,
          r.body);
    req(L, "POST", "/t/own/5", right, "{}", NULL, &r);
    CHECK(L, r.code == 401 && strstr(r.body, "own check failed"), "a session on own auth: %ld %s", r.code, r.body);
    req(L, "POST", "/t/own/5", NULL, "{}", NULL, &r);
    CHECK(L, r.code == 401, "anonymous on own auth: %ld", r.code);
    /* sign-out needs the CSRF token too; then the cookie is worthless */
    req(L, "POST", "/auth/logout", cks, NULL, NULL, &r);
    CHECK(L, r.code == 403, "logout without csrf: %ld", r.code);
    req(L, "POST", "/auth/logout", right, NULL, NULL, &r);
    CHECK(L, r.code == 303 && has_header(&r, "Max-Age=0"), "logout: %ld %s", r.code, r.headers);
    req(L, "GET", "/t/view", cks, NULL, NULL, &r);
    CHECK(L, r.code == 401, "after logout: %ld", r.code);
    /* too large a body */
    char *big = malloc(70000);
    memset(big, 'x', 69999);
    big[69999] = 0;
    req(L, "POST", "/t/act/1", chs, big, NULL, &r);
    CHECK(L, r.code == 413, "body cap: %ld", r.code);
    free(big);
    /* a route with its own cap (100000 bytes, above this listener's 65536): under it the
     * handler gets the body, over it the route's own answer, far over it libevent's 413 */
    size_t sizes[] = {80000, 120000, BIG_CAP + SERVE_BODY_SLACK + 4096}; /* BIG_CAP: the largest cap */
    for (int i = 0; i < 3; i++) {
        big = malloc(sizes[i] + 1);
        memset(big, 'x', sizes[i]);
        big[sizes[i]] = 0;
        req(L, "POST", "/t/own/5", ownh, big, NULL, &r);
        if (i == 0)
            CHECK(L, r.code == 200 && !strcmp(r.body, "own 5 principal=none\n"), "own cap, under: %ld %s", r.code, r.body);
        else if (i == 1)
            CHECK(L, r.code == 413 && !strcmp(r.body, "own too large 5 body=none\n"), "own cap, over: %ld %s", r.code,
                  r.body);
        else
            CHECK(L, r.code == 413 && !strstr(r.body, "own too large"), "own cap, far over: %ld %s", r.code, r.body);
        free(big);
    }
    return NULL;
}

/* A raw TCP client. */
static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* waits up to ms for readable data or EOF; returns bytes read (0 = EOF, -1 = nothing) */
static ssize_t raw_wait(int fd, char *buf, size_t n, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) <= 0)
        return -1;
    return recv(fd, buf, n, 0);
}

static void *client_limits(void *arg)
{
    live *L = arg;
    /* a client sending one byte every 200 ms: the per-read idle timeout (5 s) never fires, the
     * request deadline (1 s) does */
    int fd = raw_connect(L->port);
    const char *reqs = "GET /t/public HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    bool closed = false;
    size_t sent = 0;
    char buf[512];
    for (size_t i = 0; reqs[i] && !closed; i++) {
        if (send(fd, reqs + i, 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
        sent++;
        ssize_t k = raw_wait(fd, buf, sizeof buf, 200);
        if (k == 0 || (k < 0 && errno == ECONNRESET))
            closed = true;
    }
    CHECK(L, closed && sent < strlen(reqs), "trickle not cut: sent %zu of %zu", sent, strlen(reqs));
    close(fd);
    /* the cap (2): two idle connections hold it; a third is served all the same, the oldest
     * idle one making room (evicted: it sees the end), the newer one is not evicted */
    uint64_t ev0 = serve_get_stats(L->s)->evicted;
    int a = raw_connect(L->port);
    usleep(100000);
    int b = raw_connect(L->port);
    CHECK(L, a >= 0 && b >= 0, "connects");
    usleep(100000);
    int c = raw_connect(L->port);
    const char *get = "GET /t/public HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    send(c, get, strlen(get), MSG_NOSIGNAL);
    ssize_t k = raw_wait(c, buf, sizeof buf - 1, 10000);
    CHECK(L, k > 0 && !strncmp(buf, "HTTP/1.1 200", 12), "third connection at the cap: %zd", k);
    k = raw_wait(a, buf, sizeof buf, 10000);
    CHECK(L, k == 0 || (k < 0 && errno == ECONNRESET), "the oldest idle connection is still open: %zd", k);
    CHECK(L, serve_get_stats(L->s)->evicted == ev0 + 1, "evicted %llu (want %llu)",
          (unsigned long long)serve_get_stats(L->s)->evicted, (unsigned long long)ev0 + 1);
    CHECK(L, serve_get_stats(L->s)->cap == 2, "cap %d", serve_get_stats(L->s)->cap);
    close(a);
    close(b);
    close(c);
    return NULL;
}

/* A request body of 'x' for curl; counts the calls. */
static size_t on_read(char *p, size_t sz, size_t n, void *ud)
{
    ++*(size_t *)ud;
    memset(p, 'x', sz * n);
    return sz * n;
}

static void *client_tls(void *arg)
{
    live *L = arg;
    resp r;
    req(L, "GET", "/t/public", NULL, NULL, L->ca, &r);
    CHECK(L, r.rc == CURLE_OK && r.code == 200, "TLS with the CA: %s", curl_easy_strerror(r.rc));
    CHECK(L, has_header(&r, "Strict-Transport-Security: max-age="), "no HSTS on TLS");
    req(L, "GET", "/t/public", NULL, NULL, NULL, &r); /* the system store does not know our CA */
    CHECK(L, r.rc == CURLE_PEER_FAILED_VERIFICATION || r.rc == CURLE_SSL_CACERT, "TLS without the CA: %s",
          curl_easy_strerror(r.rc));
    /* an anonymous POST of 30 MiB waiting for "100 Continue": refused from its head, no byte
     * of its body asked for */
    {
        CURL *x = curl_easy_init();
        char url[128];
        snprintf(url, sizeof url, "%s/t/big", L->base);
        curl_easy_setopt(x, CURLOPT_URL, url);
        curl_easy_setopt(x, CURLOPT_CAINFO, L->ca);
        curl_easy_setopt(x, CURLOPT_POST, 1L);
        curl_easy_setopt(x, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(30 << 20));
        curl_easy_setopt(x, CURLOPT_READFUNCTION, on_read);
        size_t reads = 0;
        curl_easy_setopt(x, CURLOPT_READDATA, &reads);
        struct curl_slist *sl = curl_slist_append(NULL, "Expect: 100-continue");
        curl_easy_setopt(x, CURLOPT_HTTPHEADER, sl);
        curl_easy_setopt(x, CURLOPT_EXPECT_100_TIMEOUT_MS, 10000L);
        curl_easy_setopt(x, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(x, CURLOPT_WRITEDATA, &r);
        curl_easy_setopt(x, CURLOPT_TIMEOUT, 20L);
        memset(&r, 0, sizeof r);
        int64_t t0 = fhir_clock_mono_ms();
        CURLcode xc = curl_easy_perform(x);
        int64_t ms = fhir_clock_mono_ms() - t0;
        curl_easy_getinfo(x, CURLINFO_RESPONSE_CODE, &r.code);
        CHECK(L, xc == CURLE_OK && r.code == 401 && reads == 0 && ms < 5000, "TLS anonymous 30 MiB: %s %ld reads=%zu %lld ms",
              curl_easy_strerror(xc), r.code, reads, (long long)ms);
        curl_slist_free_all(sl);
        curl_easy_cleanup(x);
    }
    /* TLS 1.1 is refused */
    CURL *e = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "%s/t/public", L->base);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CAINFO, L->ca);
    curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)(CURL_SSLVERSION_TLSv1 | CURL_SSLVERSION_MAX_TLSv1_1));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &r);
    CURLcode rc = curl_easy_perform(e);
    CHECK(L, rc != CURLE_OK, "TLS 1.1 accepted");
    curl_easy_cleanup(e);
    /* plain HTTP to the TLS port gets no HTTP answer */
    char plain[64];
    snprintf(plain, sizeof plain, "http://127.0.0.1:%d", L->port);
    char saved[64];
    snprintf(saved, sizeof saved, "%s", L->base);
    snprintf(L->base, sizeof L->base, "%s", plain);
    req(L, "GET", "/t/public", NULL, NULL, NULL, &r);
    CHECK(L, r.code != 200, "plain HTTP answered on the TLS port");
    snprintf(L->base, sizeof L->base, "%s", saved);
    /* reload with a certificate from another CA (asks the server thread, then waits) */
    L->phase = 1;
    char one = 'r';
    if (write(L->done_fd, &one, 1) != 1)
        abort();
    for (int i = 0; i < 200 && L->phase != 2; i++)
        usleep(50000);
    req(L, "GET", "/t/public", NULL, NULL, L->ca2, &r);
    CHECK(L, r.rc == CURLE_OK && r.code == 200, "after reload, the new CA: %s", curl_easy_strerror(r.rc));
    req(L, "GET", "/t/public", NULL, NULL, L->ca, &r);
    CHECK(L, r.rc != CURLE_OK, "after reload, the old CA still accepted");
    return NULL;
}

/* Sends data on fd, then reads for up to ms (until the end of the stream): what was answered
 * (NUL-terminated) into out; *closed when the stream ended. */
static size_t raw_ask(int fd, const char *data, int ms, char *out, size_t n, bool *closed)
{
    *closed = false;
    size_t got = 0;
    out[0] = 0;
    if (data && send(fd, data, strlen(data), MSG_NOSIGNAL) != (ssize_t)strlen(data))
        return 0;
    for (int waited = 0; waited < ms && got + 1 < n; waited += 50) {
        ssize_t k = raw_wait(fd, out + got, n - 1 - got, 50);
        if (k == 0 || (k < 0 && errno == ECONNRESET)) {
            *closed = true;
            break;
        }
        if (k > 0)
            got += (size_t)k;
        out[got] = 0;
    }
    return got;
}

/* Sends n bytes of 'x' (blocking): true when all went. */
static bool raw_body(int fd, size_t n)
{
    static char chunk[65536];
    memset(chunk, 'x', sizeof chunk);
    while (n) {
        size_t k = n < sizeof chunk ? n : sizeof chunk;
        ssize_t w = send(fd, chunk, k, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        n -= (size_t)w;
    }
    return true;
}

/* head sent alone on a new connection: answered at once with status and text in it, and the
 * connection closed (the body it declares is never sent). */
static void refused_unread(live *L, const char *head, const char *status, const char *text, const char *what)
{
    char out[8192];
    bool closed;
    uint64_t n0 = serve_get_stats(L->s)->refused_unread;
    int fd = raw_connect(L->port);
    raw_ask(fd, head, 5000, out, sizeof out, &closed);
    CHECK(L, !strncmp(out, status, strlen(status)) && strstr(out, text) && closed, "%s: closed=%d %.200s", what, closed,
          out);
    /* counted (cartgate_http_refused_unread_total) before it was answered */
    CHECK(L, serve_get_stats(L->s)->refused_unread == n0 + 1, "%s: refused_unread %llu, want %llu", what,
          (unsigned long long)serve_get_stats(L->s)->refused_unread, (unsigned long long)n0 + 1);
    close(fd);
}

/* Credentials are checked from a request's head before its body is read: requests whose
 * body is never sent are answered at once (and the connection closed) when refused, and
 * wait for their body when accepted. */
static void *client_unread(void *arg)
{
    live *L = arg;
    char out[8192], head[1024];
    bool closed;
    const size_t big = 30u << 20;
    /* anonymous: 401 with WWW-Authenticate, the JSON error, then the end */
    int fd = raw_connect(L->port);
    snprintf(head, sizeof head, "POST /t/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                "Content-Length: %zu\r\n\r\n", big);
    int64_t t0 = fhir_clock_mono_ms();
    raw_ask(fd, head, 5000, out, sizeof out, &closed);
    int64_t ms = fhir_clock_mono_ms() - t0;
    if (getenv("SERVE_TEST_DEBUG"))
        fprintf(stderr, "anonymous 30 MiB head: answered in %lld ms\n", (long long)ms);
    CHECK(L, !strncmp(out, "HTTP/1.1 401", 12) && ci_find(out, "WWW-Authenticate: Bearer") &&
                 strstr(out, "\"status\":401") && closed && ms < 3000,
          "anonymous 30 MiB unsent: closed=%d %lld ms: %.200s", closed, (long long)ms, out);
    close(fd);
    /* a viewer's token: 403 */
    char vh[160], ch[160];
    snprintf(vh, sizeof vh, "Authorization: Bearer %s\r\n", L->vtok);
    snprintf(ch, sizeof ch, "Authorization: Bearer %s\r\n", L->ctok);
    snprintf(head, sizeof head, "POST /t/big HTTP/1.1\r\nHost: x\r\n%sContent-Length: %zu\r\n\r\n", vh, big);
    refused_unread(L, head, "HTTP/1.1 403", "needs the clinician role", "viewer 30 MiB unsent");
    /* a wrong token, the head arriving in three pieces, and "Expect: 100-continue": the
     * refusal, never a "100 Continue" */
    fd = raw_connect(L->port);
    raw_ask(fd, "POST /t/big HTTP/1.1\r\nHo", 150, out, sizeof out, &closed);
    CHECK(L, !out[0] && !closed, "answered a partial head: %.200s", out);
    snprintf(head, sizeof head, "st: x\r\nAuthorization: Bearer cgt_nope\r\nExpect: 100-continue\r\nContent-Length: %zu\r\n",
             big);
    raw_ask(fd, head, 150, out, sizeof out, &closed);
    CHECK(L, !out[0] && !closed, "answered a partial head: %.200s", out);
    raw_ask(fd, "\r\n", 5000, out, sizeof out, &closed);
    CHECK(L, !strncmp(out, "HTTP/1.1 401", 12) && strstr(out, "wrong bearer token") && !strstr(out, "100 Continue") &&
                 closed,
          "wrong token in pieces: %.200s", out);
    close(fd);
    /* a session cookie that is no session */
    snprintf(head, sizeof head, "POST /t/big HTTP/1.1\r\nHost: x\r\nCookie: %s=bm9wZQ\r\nContent-Length: %zu\r\n\r\n",
             SERVE_SESSION_COOKIE, big);
    refused_unread(L, head, "HTTP/1.1 401", "authentication required", "no session, 30 MiB unsent");
    /* a chunked body, anonymous */
    refused_unread(L, "POST /t/act/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.1 401",
                   "authentication required", "anonymous chunked");
    /* over the route's cap (within what evhttp would read), with the right token: 413 unread */
    snprintf(head, sizeof head, "POST /t/big HTTP/1.1\r\nHost: x\r\n%sContent-Length: %zu\r\n\r\n", ch,
             (size_t)BIG_CAP + 1);
    refused_unread(L, head, "HTTP/1.1 413", "request body too large", "over the cap unsent");
    /* the own-auth route: its head check refuses an anonymous caller (its handler's 401) and
     * a body over its cap gets its own 413, both unread */
    refused_unread(L, "POST /t/own/5 HTTP/1.1\r\nHost: x\r\nContent-Length: 90000\r\n\r\n", "HTTP/1.1 401",
                   "own check failed", "own anonymous");
    refused_unread(L, "POST /t/own/5 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer signed-by-the-ehr\r\n"
                      "Content-Length: 120000\r\n\r\n",
                   "HTTP/1.1 413", "own too large 5 body=none", "own over its cap");
    /* accepted heads wait for their bodies, and get them */
    fd = raw_connect(L->port);
    raw_ask(fd, "POST /t/own/6 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer signed-by-the-ehr\r\n"
                "Content-Length: 5\r\nConnection: close\r\n\r\n",
            500, out, sizeof out, &closed);
    CHECK(L, !out[0] && !closed, "own accepted, answered before its body: %.200s", out);
    raw_ask(fd, "{}   ", 5000, out, sizeof out, &closed);
    CHECK(L, !strncmp(out, "HTTP/1.1 200", 12) && strstr(out, "own 6 principal=none"), "own accepted: %.200s", out);
    close(fd);
    fd = raw_connect(L->port);
    snprintf(head, sizeof head, "POST /t/big HTTP/1.1\r\nHost: x\r\n%sContent-Length: %zu\r\nConnection: close\r\n\r\n",
             ch, big);
    raw_ask(fd, head, 500, out, sizeof out, &closed);
    CHECK(L, !out[0] && !closed, "clinician 30 MiB, answered before the body: %.200s", out);
    int64_t tb = fhir_clock_mono_ms();
    CHECK(L, raw_body(fd, big), "clinician 30 MiB: the body was not taken");
    if (getenv("SERVE_TEST_DEBUG"))
        fprintf(stderr, "30 MiB sent in %lld ms\n", (long long)(fhir_clock_mono_ms() - tb));
    char want[64];
    snprintf(want, sizeof want, "big %zu\n", big);
    raw_ask(fd, NULL, 10000, out, sizeof out, &closed);
    CHECK(L, !strncmp(out, "HTTP/1.1 200", 12) && strstr(out, want), "clinician 30 MiB: %.200s", out);
    close(fd);
    /* pipelined on one connection: a public read, a clinician's post with its body, then an
     * anonymous post without one: 200, 200, 401, the end */
    fd = raw_connect(L->port);
    snprintf(head, sizeof head,
             "GET /t/public HTTP/1.1\r\nHost: x\r\n\r\n"
             "POST /t/act/3 HTTP/1.1\r\nHost: x\r\n%sContent-Length: 5\r\n\r\nhello"
             "POST /t/act/4 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
             ch);
    raw_ask(fd, head, 5000, out, sizeof out, &closed);
    const char *a1 = strstr(out, "HTTP/1.1 200"), *a2 = a1 ? strstr(a1 + 1, "HTTP/1.1 200") : NULL;
    const char *a3 = a2 ? strstr(a2 + 1, "HTTP/1.1 401") : NULL;
    CHECK(L, a1 == out && a2 && strstr(out, "acted on 3 by cleo") && a3 && closed, "pipelined: %.600s", out);
    close(fd);
    /* a refused head with no body declared keeps its connection (nothing to skip) */
    fd = raw_connect(L->port);
    raw_ask(fd, "GET /t/view HTTP/1.1\r\nHost: x\r\n\r\n", 500, out, sizeof out, &closed);
    CHECK(L, !strncmp(out, "HTTP/1.1 401", 12) && !closed, "anonymous GET: closed=%d %.200s", closed, out);
    raw_ask(fd, "GET /t/public HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5000, out, sizeof out, &closed);
    CHECK(L, !strncmp(out, "HTTP/1.1 200", 12), "then public on the same connection: %.200s", out);
    close(fd);
    return NULL;
}

typedef struct run {
    live *L;
    struct event_base *base;
    void *(*client)(void *);
} run;

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    run *R = arg;
    char c;
    if (read(fd, &c, 1) != 1)
        return;
    if (c == 'r') { /* reload request from the TLS client */
        fhir_error err = {0};
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "cp '%s' '%s/server.crt' && cp '%s' '%s/server.key'", R->L->cert2, tmpdir,
                 R->L->key2, tmpdir);
        if (system(cmd) != 0 || serve_reload_tls(R->L->s, &err))
            R->L->nfail++;
        R->L->phase = 2;
        return;
    }
    event_base_loopbreak(R->base);
}

static void *client_main(void *arg)
{
    run *R = arg;
    R->client(R->L);
    char d = 'd';
    if (write(R->L->done_fd, &d, 1) != 1)
        abort();
    return NULL;
}

static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* A CA and a server certificate for 127.0.0.1 made with the openssl command. */
static void make_pki(const char *dir, const char *tag)
{
    assert_int_equal(sh("cd '%s' && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca%s.key -out ca%s.crt -days 2 "
                        "-subj '/CN=cartgate test CA %s' >/dev/null 2>&1 && "
                        "openssl req -newkey rsa:2048 -nodes -keyout srv%s.key -out srv%s.csr -subj '/CN=127.0.0.1' "
                        ">/dev/null 2>&1 && printf 'subjectAltName=IP:127.0.0.1\\n' > ext%s && "
                        "openssl x509 -req -in srv%s.csr -CA ca%s.crt -CAkey ca%s.key -CAcreateserial -out srv%s.crt "
                        "-days 2 -extfile ext%s >/dev/null 2>&1",
                        dir, tag, tag, tag, tag, tag, tag, tag, tag, tag, tag, tag),
                     0);
}

static void run_live(serve_config *cfg, void *(*client)(void *), live *L)
{
    char path[512];
    snprintf(path, sizeof path, "%s/s.db", tmpdir);
    fhir_error err = {0};
    store *st = store_open(path, 0, &err);
    assert_non_null(st);
    access_config ac = {.kdf = {.ln = 11, .r = 8, .p = 1}};
    access_ctx *acc = access_new(st, &ac);
    access_principal root;
    access_principal_local(&root, "test");
    if (access_user_add(acc, "viv", NULL, ROLE_VIEWER, false, NULL, &root, &err) == 0)
        access_user_add(acc, "cleo", NULL, ROLE_CLINICIAN, false, "correct horse battery", &root, &err);
    assert_int_equal(access_token_create(acc, "viv", ROLE_UNSET, 1, NULL, &root, L->vtok, NULL, &err), 0);
    assert_int_equal(access_token_create(acc, "cleo", ROLE_UNSET, 1, NULL, &root, L->ctok, NULL, &err), 0);
    struct event_base *base = event_base_new();
    serve *s = serve_new(base, acc, cfg, &err);
    if (!s)
        fail_msg("serve_new: %s", err.msg);
    L->s = s;
    assert_int_equal(serve_add_routes(s, ROUTES, sizeof ROUTES / sizeof ROUTES[0], NULL, &err), 0);
    assert_int_equal(serve_auth_add(s, NULL, NULL, &err), 0);
    assert_int_equal(serve_route_body_cap(s, "POST", "/t/own/{id}", 100000, h_own_too_large, &err), 0);
    assert_int_equal(serve_route_body_cap(s, "POST", "/t/nothing", 10, NULL, &err), -1);
    assert_int_equal(serve_route_body_cap(s, "POST", "/t/big", BIG_CAP, NULL, &err), 0);
    assert_int_equal(serve_route_head_check(s, "POST", "/t/own/{id}", own_head_ok, &err), 0);
    assert_int_equal(serve_route_head_check(s, "POST", "/t/act/{id}", own_head_ok, &err), -1); /* ours to check */
    assert_int_equal(serve_route_head_check(s, "POST", "/t/nothing", own_head_ok, &err), -1);
    serve_route late[] = {{"GET", "/t/public", ROLE_VIEWER, h_public, 0}};
    assert_int_equal(serve_add_routes(s, late, 1, NULL, &err), -1); /* registered twice */
    assert_int_equal(serve_start(s, &err), 0);
    L->port = serve_port(s);
    snprintf(L->base, sizeof L->base, "%s://127.0.0.1:%d", cfg->tls_cert_file ? "https" : "http", L->port);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    L->done_fd = pfd[1];
    run R = {.L = L, .base = base, .client = client};
    struct event *ev = event_new(base, pfd[0], EV_READ | EV_PERSIST, on_done, &R);
    event_add(ev, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, client_main, &R), 0);
    event_base_dispatch(base);
    pthread_join(th, NULL);
    event_free(ev);
    close(pfd[0]);
    close(pfd[1]);
    serve_free(s);
    event_base_free(base);
    access_free(acc);
    store_close(st);
    if (L->nfail)
        fail_msg("%d failure(s):\n%s", L->nfail, L->failures);
}

static void test_live_plain(void **state)
{
    (void)state;
    live L = {0};
    serve_config c = {.bind = "127.0.0.1", .max_body_bytes = 65536};
    run_live(&c, client_plain, &L);
}

static void test_live_limits(void **state)
{
    (void)state;
    live L = {0};
    serve_config c = {.bind = "127.0.0.1", .request_timeout_s = 1, .idle_timeout_s = 5, .max_connections = 2};
    run_live(&c, client_limits, &L);
}

static void test_live_unread(void **state)
{
    (void)state;
    live L = {0};
    serve_config c = {.bind = "127.0.0.1", .max_body_bytes = 65536};
    run_live(&c, client_unread, &L);
}

static void test_live_tls(void **state)
{
    (void)state;
    make_pki(tmpdir, "1");
    make_pki(tmpdir, "2");
    assert_int_equal(sh("cd '%s' && cp srv1.crt server.crt && cp srv1.key server.key", tmpdir), 0);
    live L = {0};
    char cert[512], key[512], ca[512];
    snprintf(cert, sizeof cert, "%s/server.crt", tmpdir);
    snprintf(key, sizeof key, "%s/server.key", tmpdir);
    snprintf(ca, sizeof ca, "%s/ca1.crt", tmpdir);
    snprintf(L.ca2, sizeof L.ca2, "%s/ca2.crt", tmpdir);
    snprintf(L.cert2, sizeof L.cert2, "%s/srv2.crt", tmpdir);
    snprintf(L.key2, sizeof L.key2, "%s/srv2.key", tmpdir);
    L.ca = ca;
    /* a key that does not belong to the certificate is refused */
    fhir_error err = {0};
    serve_config bad = {.tls_cert_file = cert, .tls_key_file = L.key2};
    assert_null(serve_new(NULL, NULL, &bad, &err));
    if (!strstr(err.msg, "does not match") && !strstr(err.msg, "mismatch"))
        fail_msg("mismatched key: %s", err.msg);
    serve_config c = {.bind = "127.0.0.1", .tls_cert_file = cert, .tls_key_file = key};
    run_live(&c, client_tls, &L);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cartgate-serve-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    curl_global_cleanup();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_need_roles),
        cmocka_unit_test(test_bind_checks),
        cmocka_unit_test(test_live_plain),
        cmocka_unit_test(test_live_limits),
        cmocka_unit_test(test_live_unread),
        cmocka_unit_test(test_live_tls),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
