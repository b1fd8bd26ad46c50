/* Unit tests: the OpenID Connect relying party without the network — configuration checks,
 * discovery checks, the authorization URL (state, nonce, PKCE S256), one-use browser-bound
 * state, ID token validation (signature, kid rotation signal, iss, aud/azp, exp/iat with skew,
 * nonce) and the mapping of claims to a user and a role. The flow over HTTP against a real
 * provider is tests/integration/test_oidc_signin.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include "fhir_clock.h"
#include "fhir_json.h"
#include "jws_test.h"
#include "oidc.h"

#define ISS "https://idp.example.org/realms/h"
#define NOW_S 1800000000LL

static EVP_PKEY *key;
static char jwk[4096];

static int setup(void **state)
{
    (void)state;
    key = tk_rsa(2048);
    tk_jwk(key, "k1", NULL, jwk, sizeof jwk);
    fhir_clock_set_fixed(NOW_S * 1000);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(key);
    fhir_clock_set_fixed(-1);
    return 0;
}

static const char *const MAP[] = {"cg-admins=admin", "oncology=clinician", "nurses=viewer"};

static oidc_config base_cfg(void)
{
    return (oidc_config){.issuer = ISS,
                         .client_id = "cartgate",
                         .client_secret = "s3cret",
                         .redirect_uri = "https://cartgate.example.org/auth/oidc/callback",
                         .role_map = MAP,
                         .n_role_map = 3,
                         .provision = true};
}

static oidc *make(void)
{
    oidc_config c = base_cfg();
    fhir_error err = {0};
    oidc *o = oidc_new(NULL, &c, &err);
    if (!o)
        fail_msg("oidc_new: %s", err.msg);
    fhir_arena *a = fhir_arena_new(0);
    const char *disc = "{\"issuer\":\"" ISS "\",\"authorization_endpoint\":\"" ISS "/auth?x=1\","
                       "\"token_endpoint\":\"" ISS "/token\",\"jwks_uri\":\"" ISS "/certs\","
                       "\"response_types_supported\":[\"code\"],\"code_challenge_methods_supported\":[\"S256\"]}";
    fhir_node *d = fhir_json_parse(a, disc, strlen(disc), NULL, &err);
    assert_non_null(d);
    assert_int_equal(oidc_set_discovery(o, d, &err), 0);
    fhir_arena_free(a);
    char set[4200];
    snprintf(set, sizeof set, "{\"keys\":[%s]}", jwk);
    oidc_set_jwks(o, jose_jwks_parse(set, strlen(set), NULL, &err));
    assert_true(oidc_ready(o));
    return o;
}

static void test_config_checks(void **state)
{
    (void)state;
    fhir_error err = {0};
    oidc_config c = base_cfg();
    c.issuer = "http://idp.example.org";
    assert_null(oidc_new(NULL, &c, &err));
    assert_non_null(strstr(err.msg, "https"));
    c.issuer = "http://127.0.0.1:9999/op"; /* loopback: allowed for tests and side-cars */
    oidc *o = oidc_new(NULL, &c, &err);
    assert_non_null(o);
    oidc_free(o);
    c = base_cfg();
    c.scopes = "profile email";
    assert_null(oidc_new(NULL, &c, &err));
    c = base_cfg();
    const char *bad[] = {"oncology=surgeon"};
    c.role_map = bad;
    c.n_role_map = 1;
    assert_null(oidc_new(NULL, &c, &err));
    assert_non_null(strstr(err.msg, "GROUP=ROLE"));
    c = base_cfg();
    const char *algs[] = {"RS256", "none", NULL};
    c.algs = algs;
    assert_null(oidc_new(NULL, &c, &err));
    c = base_cfg();
    c.redirect_uri = "https://user:pw@cartgate.example.org/cb";
    assert_null(oidc_new(NULL, &c, &err));
}

static void test_discovery_checks(void **state)
{
    (void)state;
    oidc_config c = base_cfg();
    fhir_error err = {0};
    oidc *o = oidc_new(NULL, &c, &err);
    fhir_arena *a = fhir_arena_new(0);
    const char *docs[] = {
        "{\"issuer\":\"https://evil.example.org\",\"authorization_endpoint\":\"" ISS "/a\",\"token_endpoint\":\"" ISS
        "/t\",\"jwks_uri\":\"" ISS "/k\"}",
        "{\"issuer\":\"" ISS "\",\"authorization_endpoint\":\"http://idp.example.org/a\",\"token_endpoint\":\"" ISS
        "/t\",\"jwks_uri\":\"" ISS "/k\"}",
        "{\"issuer\":\"" ISS "\",\"authorization_endpoint\":\"" ISS "/a\",\"token_endpoint\":\"" ISS
        "/t\",\"jwks_uri\":\"" ISS "/k\",\"code_challenge_methods_supported\":[\"plain\"]}",
        "{\"issuer\":\"" ISS "\",\"authorization_endpoint\":\"" ISS "/a\",\"jwks_uri\":\"" ISS "/k\"}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        fhir_node *d = fhir_json_parse(a, docs[i], strlen(docs[i]), NULL, &err);
        assert_non_null(d);
        assert_int_equal(oidc_set_discovery(o, d, &err), -1);
    }
    assert_null(oidc_authorization_endpoint(o));
    fhir_arena_free(a);
    oidc_free(o);
}

typedef struct got_begin {
    char url[4096];
    char binding[64];
    char err[512];
} got_begin;

static void on_begin(void *ud, const char *url, const char *binding, const fhir_error *err)
{
    got_begin *g = ud;
    if (url) {
        snprintf(g->url, sizeof g->url, "%s", url);
        snprintf(g->binding, sizeof g->binding, "%s", binding);
    } else
        snprintf(g->err, sizeof g->err, "%s", err->msg);
}

static void param(const char *url, const char *name, char *out, size_t n)
{
    char k[64];
    snprintf(k, sizeof k, "&%s=", name);
    const char *p = strstr(url, k);
    assert_non_null(p);
    p += strlen(k);
    size_t l = strcspn(p, "&");
    snprintf(out, n, "%.*s", (int)l, p);
}

static void test_begin_and_state(void **state)
{
    (void)state;
    oidc *o = make();
    got_begin g = {0};
    oidc_begin(o, "/ui/worklist", on_begin, &g); /* discovery loaded: answers at once */
    assert_string_equal(g.err, "");
    const char *want_prefix = ISS "/auth?x=1&response_type=code&client_id=cartgate&redirect_uri=https%3A%2F%2F"
                                  "cartgate.example.org%2Fauth%2Foidc%2Fcallback&scope=openid%20profile%20email&";
    assert_int_equal(strncmp(g.url, want_prefix, strlen(want_prefix)), 0);
    assert_non_null(strstr(g.url, "&code_challenge_method=S256"));
    char st[64], nonce[64], challenge[64];
    param(g.url, "state", st, sizeof st);
    param(g.url, "nonce", nonce, sizeof nonce);
    param(g.url, "code_challenge", challenge, sizeof challenge);
    assert_int_equal(strlen(st), 43);
    assert_string_not_equal(st, nonce);
    assert_int_equal(oidc_pending_count(o), 1);
    /* the wrong browser: refused, and the state is spent */
    oidc_pending p;
    fhir_error err = {0};
    assert_int_equal(oidc_take_pending(o, st, "not-the-binding", &p, &err), -1);
    assert_non_null(strstr(err.msg, "binding"));
    assert_int_equal(oidc_take_pending(o, st, g.binding, &p, &err), -1);
    assert_non_null(strstr(err.msg, "unknown or already used"));
    /* a new attempt, taken once with the right binding; PKCE: challenge = S256(verifier) */
    got_begin g2 = {0};
    oidc_begin(o, "//evil.example.org/", on_begin, &g2);
    param(g2.url, "state", st, sizeof st);
    param(g2.url, "code_challenge", challenge, sizeof challenge);
    assert_int_equal(oidc_take_pending(o, st, g2.binding, &p, &err), 0);
    assert_string_equal(p.return_to, "/"); /* an open redirect is not kept */
    unsigned char h[32];
    EVP_Digest(p.verifier, strlen(p.verifier), h, NULL, EVP_sha256(), NULL);
    char *want = fhir_auth_b64url_encode(h, 32);
    assert_string_equal(challenge, want);
    free(want);
    assert_int_equal(oidc_take_pending(o, st, g2.binding, &p, &err), -1);
    /* expiry */
    got_begin g3 = {0};
    oidc_begin(o, "/x", on_begin, &g3);
    param(g3.url, "state", st, sizeof st);
    fhir_clock_advance(601 * 1000);
    assert_int_equal(oidc_take_pending(o, st, g3.binding, &p, &err), -1);
    assert_non_null(strstr(err.msg, "expired"));
    fhir_clock_set_fixed(NOW_S * 1000);
    oidc_free(o);
}

static char *idt(const char *kid, const char *iss, const char *aud, long long exp, long long iat, const char *nonce,
                 const char *extra)
{
    char h[128], p[2048];
    snprintf(h, sizeof h, "{\"alg\":\"RS256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", kid);
    snprintf(p, sizeof p, "{\"iss\":\"%s\",\"sub\":\"248289761001\",\"aud\":%s,\"exp\":%lld,\"iat\":%lld,"
                          "\"nonce\":\"%s\"%s}",
             iss, aud, exp, iat, nonce, extra ? extra : "");
    return tk_sign(key, "RS256", h, p);
}

static int check(oidc *o, char *tok, const char *nonce, fhir_error *err)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *claims = NULL;
    int rc = oidc_verify_id_token(o, tok, nonce, a, &claims, err);
    free(tok);
    fhir_arena_free(a);
    return rc;
}

static void test_id_token(void **state)
{
    (void)state;
    oidc *o = make();
    fhir_error err = {0};
    long long now = NOW_S;
    int rc = check(o, idt("k1", ISS, "\"cartgate\"", now + 300, now, "n1", NULL), "n1", &err);
    if (rc)
        fail_msg("good token refused: %s", err.msg);
    assert_int_equal(check(o, idt("k1", ISS, "[\"cartgate\",\"other\"]", now + 300, now, "n1", ",\"azp\":\"cartgate\""),
                           "n1", &err),
                     0);
    /* clock skew: expired 30 s ago is still fine with the default 60 s skew, 61 s is not */
    assert_int_equal(check(o, idt("k1", ISS, "\"cartgate\"", now - 30, now - 330, "n1", NULL), "n1", &err), 0);
    assert_int_equal(check(o, idt("k1", ISS, "\"cartgate\"", now - 61, now - 361, "n1", NULL), "n1", &err), -1);
    assert_non_null(strstr(err.msg, "expired"));
    assert_int_equal(check(o, idt("k1", ISS, "\"cartgate\"", now + 900, now + 120, "n1", NULL), "n1", &err), -1);
    assert_non_null(strstr(err.msg, "future"));
    assert_int_equal(check(o, idt("k1", "https://idp.example.org/realms/other", "\"cartgate\"", now + 300, now, "n1", NULL),
                           "n1", &err),
                     -1);
    assert_non_null(strstr(err.msg, "iss"));
    assert_int_equal(check(o, idt("k1", ISS, "\"someone-else\"", now + 300, now, "n1", NULL), "n1", &err), -1);
    assert_non_null(strstr(err.msg, "aud"));
    assert_int_equal(check(o, idt("k1", ISS, "[\"cartgate\",\"other\"]", now + 300, now, "n1", NULL), "n1", &err), -1);
    assert_non_null(strstr(err.msg, "azp"));
    /* wrong nonce (a replayed token from another attempt) */
    assert_int_equal(check(o, idt("k1", ISS, "\"cartgate\"", now + 300, now, "n1", NULL), "n2", &err), -1);
    assert_non_null(strstr(err.msg, "nonce"));
    assert_int_equal(check(o, idt("k1", ISS, "\"cartgate\"", now + 300, now, "n1", NULL), "", &err), -1);
    /* a key the set does not hold: the signal to refetch the JWKS */
    assert_int_equal(check(o, idt("k9", ISS, "\"cartgate\"", now + 300, now, "n1", NULL), "n1", &err),
                     JOSE_UNKNOWN_KID);
    /* a tampered payload */
    char *t = idt("k1", ISS, "\"cartgate\"", now + 300, now, "n1", NULL);
    char *dot = strchr(t, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    assert_int_equal(check(o, t, "n1", &err), -1);
    oidc_free(o);
}

static void test_map_identity(void **state)
{
    (void)state;
    oidc *o = make();
    fhir_error err = {0};
    struct { const char *claims; const char *name; role r; int rc; } cases[] = {
        {"{\"sub\":\"u-1\",\"name\":\"Dr A\",\"groups\":[\"nurses\",\"oncology\"]}", "u-1", ROLE_CLINICIAN, 0},
        {"{\"sub\":\"u-2\",\"groups\":[\"cg-admins\",\"oncology\"]}", "u-2", ROLE_ADMIN, 0},
        {"{\"sub\":\"u-3\",\"groups\":\"nurses\"}", "u-3", ROLE_VIEWER, 0},
        {"{\"sub\":\"u-4\",\"groups\":[\"billing\"]}", "u-4", ROLE_UNSET, 0},
        {"{\"sub\":\"u-5\"}", "u-5", ROLE_UNSET, 0},
        {"{\"sub\":\"has space\"}", NULL, ROLE_UNSET, -1},
        {"{\"name\":\"no sub\"}", NULL, ROLE_UNSET, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fhir_arena *a = fhir_arena_new(0);
        fhir_node *c = fhir_json_parse(a, cases[i].claims, strlen(cases[i].claims), NULL, &err);
        access_oidc_identity id;
        assert_int_equal(oidc_map_identity(o, c, a, &id, &err), cases[i].rc);
        if (cases[i].rc == 0) {
            assert_string_equal(id.name, cases[i].name);
            char subj[200];
            snprintf(subj, sizeof subj, ISS " %s", cases[i].name);
            assert_string_equal(id.subject, subj);
            assert_int_equal(id.role, cases[i].r);
            assert_true(id.provision);
        }
        fhir_arena_free(a);
    }
    oidc_free(o);
    /* a nested role claim (Keycloak realm_access.roles), email as the user claim, a catch-all */
    oidc_config c = base_cfg();
    c.role_claim = "realm_access.roles";
    c.user_claim = "email";
    const char *map2[] = {"oncology=clinician", "*=viewer"};
    c.role_map = map2;
    c.n_role_map = 2;
    o = oidc_new(NULL, &c, &err);
    fhir_arena *a = fhir_arena_new(0);
    const char *j = "{\"sub\":\"x\",\"email\":\"a.b@h.org\",\"email_verified\":true,\"realm_access\":{\"roles\":[\"oncology\"]}}";
    access_oidc_identity id;
    assert_int_equal(oidc_map_identity(o, fhir_json_parse(a, j, strlen(j), NULL, &err), a, &id, &err), 0);
    assert_string_equal(id.name, "a.b@h.org");
    assert_int_equal(id.role, ROLE_CLINICIAN);
    j = "{\"sub\":\"y\",\"email\":\"c@h.org\"}";
    assert_int_equal(oidc_map_identity(o, fhir_json_parse(a, j, strlen(j), NULL, &err), a, &id, &err), 0);
    assert_int_equal(id.role, ROLE_VIEWER);
    j = "{\"sub\":\"z\",\"email\":\"d@h.org\",\"email_verified\":false}";
    assert_int_equal(oidc_map_identity(o, fhir_json_parse(a, j, strlen(j), NULL, &err), a, &id, &err), -1);
    assert_non_null(strstr(err.msg, "not verified"));
    fhir_arena_free(a);
    oidc_free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_checks),
        cmocka_unit_test(test_discovery_checks),
        cmocka_unit_test(test_begin_and_state),
        cmocka_unit_test(test_id_token),
        cmocka_unit_test(test_map_identity),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
