/* Integration: hospital sign-in through a real OpenID provider (the `oidc-provider` npm
 * package, tests/oidc-provider/provider.mjs) on loopback, against the real listener (serve +
 * sign-in routes over TLS with a certificate made by openssl here) and a real store. A Node
 * driver (tests/oidc-provider/signin.mjs) plays the browser: every redirect of the code flow
 * with PKCE, state and nonce, cookies kept per origin.
 *   - sign-in works and the groups claim maps to our roles (oncology -> clinician, nurses ->
 *     viewer, cg-admins -> admin); a person with no mapped group is refused; the session
 *     cookie is HttpOnly; Secure; SameSite=Strict; users are provisioned by subject
 *   - an ID token altered after signing is refused (and audited)
 *   - an authorization request whose nonce was swapped is refused
 *   - the provider restarts with a new signing key (other kid, other algorithm: RS256 ->
 *     ES256): the next sign-in succeeds because the unknown kid makes us fetch the JWKS again
 * Skips when node or tests/oidc-provider/node_modules is missing (scripts/bootstrap). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fhir_clock.h"
#include "fhir_log.h"
#include "oidc.h"
#include "serve.h"
#include "serve_auth.h"
#include "support.h"

static char tmp[256], cert[512], key[512], keys1[512], keys2[512];
static char provider_js[512], signin_js[512];
static struct event_base *base;
static store *st;
static access_ctx *acc;
static serve *srv;
static support_proc idp;
static int idp_port;
static char cg_url[64];

/* ---- the browser: node signin.mjs, run while our loop serves ------------------------------- */

typedef struct run {
    char out[16384];
    size_t n;
} run;

static void on_out(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    run *r = arg;
    ssize_t k = read(fd, r->out + r->n, sizeof r->out - 1 - r->n);
    if (k > 0) {
        r->n += (size_t)k;
        r->out[r->n] = 0;
        if (r->n < sizeof r->out - 1)
            return;
    }
    event_base_loopbreak(base); /* EOF (the driver is done) or full */
}

/* Runs the driver for user (extra args NULL-terminated); returns its exit status, JSON in r. */
static int browser(const char *user, const char *const *extra, run *r)
{
    memset(r, 0, sizeof *r);
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        setenv("NODE_EXTRA_CA_CERTS", cert, 1);
        char *argv[16] = {"node", signin_js, "--cartgate", cg_url, "--user", (char *)user};
        int n = 6;
        for (size_t i = 0; extra && extra[i] && n < 15; i++)
            argv[n++] = (char *)extra[i];
        argv[n] = NULL;
        execvp("node", argv);
        _exit(127);
    }
    close(p[1]);
    struct event *ev = event_new(base, p[0], EV_READ | EV_PERSIST, on_out, r);
    struct timeval limit = {120, 0};
    event_add(ev, NULL);
    event_base_loopexit(base, &limit); /* bounded: never wait forever on a stuck driver */
    event_base_dispatch(base);
    event_free(ev);
    close(p[0]);
    /* its stdout closes a moment before it exits: wait (bounded) for the exit */
    int status = 0;
    pid_t w = 0;
    for (int i = 0; i < 200 && (w = waitpid(pid, &status, WNOHANG)) == 0; i++)
        usleep(50000);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

typedef struct audit_q {
    const char *action, *part;
    int64_t n;
} audit_q;

static int audit_match(void *x, const store_audit_row *row)
{
    audit_q *c = x;
    if (!strcmp(row->action, c->action) && (!c->part || (row->detail && strstr(row->detail, c->part))))
        c->n++;
    return 0;
}

/* Audit rows about no referral with this action (and detail containing part). */
static int64_t audit_count(const char *action, const char *part)
{
    audit_q q = {action, part, 0};
    fhir_error err = {0};
    assert_true(store_audit_list(st, 0, 0, 0, audit_match, &q, &err) >= 0);
    return q.n;
}

/* ---- the identity provider ---------------------------------------------------------------------- */

static void idp_start(const char *alg, const char *kid, const char *keys)
{
    char port[16], redirect[128];
    snprintf(port, sizeof port, "%d", idp_port);
    snprintf(redirect, sizeof redirect, "%s/auth/oidc/callback", cg_url);
    char *argv[] = {"node", provider_js, "--port", port, "--client-secret", "test-secret-1234",
                    "--redirect-uri", redirect, "--alg", (char *)alg, "--kid", (char *)kid, "--keys", (char *)keys, NULL};
    char log[600];
    snprintf(log, sizeof log, "%s/idp-%s.log", tmp, kid);
    if (support_start_port(&idp, argv, log))
        fail_msg("provider did not start (see %s)", log);
    idp_port = idp.port;
}

static int setup(void **state)
{
    (void)state;
    snprintf(provider_js, sizeof provider_js, "%s/tests/oidc-provider/provider.mjs", support_source_dir());
    snprintf(signin_js, sizeof signin_js, "%s/tests/oidc-provider/signin.mjs", support_source_dir());
    char mods[600];
    snprintf(mods, sizeof mods, "%s/tests/oidc-provider/node_modules/oidc-provider", support_source_dir());
    struct stat sb;
    if (stat(mods, &sb) != 0 || system("node --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "SKIP: %s missing (run scripts/bootstrap)\n", mods);
        return 1;
    }
    if (support_tmpdir(tmp, sizeof tmp))
        return -1;
    snprintf(cert, sizeof cert, "%s/tls.crt", tmp);
    snprintf(key, sizeof key, "%s/tls.key", tmp);
    snprintf(keys1, sizeof keys1, "%s/idp-keys-1.json", tmp);
    snprintf(keys2, sizeof keys2, "%s/idp-keys-2.json", tmp);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' -days 1 "
                              "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1", key, cert);
    if (system(cmd) != 0)
        return -1;
    fhir_log_set_level(FHIR_LOG_WARN);
    base = event_base_new();
    char db[512];
    snprintf(db, sizeof db, "%s/cg.db", tmp);
    fhir_error err = {0};
    st = store_open(db, 0, &err);
    acc = access_new(st, NULL);
    serve_config sc = {.bind = "127.0.0.1", .tls_cert_file = cert, .tls_key_file = key};
    srv = serve_new(base, acc, &sc, &err);
    if (!srv || serve_start(srv, &err)) {
        fprintf(stderr, "serve: %s\n", err.msg);
        return -1;
    }
    snprintf(cg_url, sizeof cg_url, "https://127.0.0.1:%d", serve_port(srv));
    idp_start("RS256", "k-rsa-1", keys1);
    char issuer[64];
    snprintf(issuer, sizeof issuer, "http://127.0.0.1:%d", idp_port);
    char redirect[128];
    snprintf(redirect, sizeof redirect, "%s/auth/oidc/callback", cg_url);
    static const char *const map[] = {"cg-admins=admin", "oncology=clinician", "nurses=viewer"};
    oidc_config oc = {.issuer = issuer,
                      .client_id = "cartgate",
                      .client_secret = "test-secret-1234",
                      .redirect_uri = redirect,
                      .scopes = "openid profile groups",
                      .role_map = map,
                      .n_role_map = 3,
                      .provision = true};
    oidc *o = oidc_new(base, &oc, &err);
    if (!o || serve_auth_add(srv, o, "Test Hospital", &err)) {
        fprintf(stderr, "oidc: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    support_stop(&idp);
    serve_free(srv);
    access_free(acc);
    store_close(st);
    if (base)
        event_base_free(base);
    if (!getenv("KEEP_TMP"))
        support_rmtree(tmp);
    return 0;
}

/* ---- the tests ----------------------------------------------------------------------------------- */

static void expect_signed_in(const char *user, const char *want_role)
{
    run r;
    int rc = browser(user, NULL, &r);
    if (rc != 0)
        fail_msg("%s: sign-in failed (%d): %s", user, rc, r.out);
    char want[128];
    snprintf(want, sizeof want, "\"user\":\"%s\"", user);
    assert_non_null(strstr(r.out, want));
    snprintf(want, sizeof want, "\"role\":\"%s\"", want_role);
    if (!strstr(r.out, want))
        fail_msg("%s: wrong role: %s", user, r.out);
    assert_non_null(strstr(r.out, "\"via\":\"session\""));
    assert_non_null(strstr(r.out, "HttpOnly; Secure; SameSite=Strict"));
}

static void test_sign_in_and_roles(void **state)
{
    (void)state;
    expect_signed_in("dr.grace", "clinician"); /* groups staff + oncology */
    expect_signed_in("nurse.kim", "viewer");
    expect_signed_in("al.admin", "admin");
    store_user u;
    fhir_error err = {0};
    assert_int_equal(store_user_get(st, "dr.grace", &u, &err), 1);
    char subj[128];
    snprintf(subj, sizeof subj, "http://127.0.0.1:%d dr.grace", idp_port);
    assert_string_equal(u.oidc_subject, subj);
    assert_null(u.pw_hash);
    assert_string_equal(u.display_name, "Dr Grace Hopper");
    store_user_free(&u);
    assert_int_equal(audit_count("sign-in", "OpenID Connect"), 3);
    /* a person without a mapped group is refused, and the refusal is audited */
    run r;
    assert_int_not_equal(browser("bill.billing", NULL, &r), 0);
    assert_non_null(strstr(r.out, "\"status\":401"));
    assert_int_equal(audit_count("sign-in-failed", "no cartgate role"), 1);
}

static void test_tampered_token_refused(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/test/tamper?on=1", idp_port);
    assert_int_equal(support_http("POST", url, "", NULL), 200);
    run r;
    int rc = browser("nurse.kim", NULL, &r);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/test/tamper?on=0", idp_port);
    assert_int_equal(support_http("POST", url, "", NULL), 200);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(r.out, "\"status\":401"));
    assert_non_null(strstr(r.out, "\"cookie\":null"));
    assert_int_equal(audit_count("sign-in-failed", "signature does not verify"), 1);
}

static void test_wrong_nonce_refused(void **state)
{
    (void)state;
    const char *extra[] = {"--nonce", "an-attackers-nonce", NULL};
    run r;
    assert_int_not_equal(browser("dr.grace", extra, &r), 0);
    assert_non_null(strstr(r.out, "\"status\":401"));
    assert_int_equal(audit_count("sign-in-failed", "nonce does not match"), 1);
}

static void test_key_rotation(void **state)
{
    (void)state;
    support_stop(&idp); /* the provider comes back on the same port with a new key */
    idp_start("ES256", "k-ec-2", keys2);
    /* the relying party refetches the key set for an unknown kid at most every
     * OIDC_JWKS_MIN_REFETCH_S: let that much time pass on the injectable clock */
    fhir_clock_set_fixed(fhir_clock_now_ms() + (OIDC_JWKS_MIN_REFETCH_S + 1) * 1000);
    expect_signed_in("dr.alan", "clinician");
    assert_int_equal(audit_count("sign-in", "OpenID Connect"), 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_in_and_roles),
        cmocka_unit_test(test_tampered_token_refused),
        cmocka_unit_test(test_wrong_nonce_refused),
        cmocka_unit_test(test_key_rotation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
