/* Unit tests: bearer and Basic secrets (file/env, never config), SMART client assertion
 * JWT structure (alg, kid, typ, iss = sub, aud, exp <= 5 min, unique jti), RS384 and ES384
 * signatures verified independently with OpenSSL (ES384 raw r||s rebuilt into DER), token
 * response handling (expiry, refresh margin, invalidation) and discovery parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "fhir_arena.h"
#include "fhir_auth.h"
#include "fhir_json.h"
#include "fhir_node.h"

static char tmpdir[] = "/tmp/cartgate-auth-XXXXXX";
static char rsa_path[256], ec_path[256], rsa_small_path[256], ec256_path[256];
static EVP_PKEY *rsa_key, *ec_key;

static void write_key(EVP_PKEY *k, const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(rsa_path, sizeof rsa_path, "%s/rsa.pem", tmpdir);
    snprintf(ec_path, sizeof ec_path, "%s/ec.pem", tmpdir);
    snprintf(rsa_small_path, sizeof rsa_small_path, "%s/rsa1024.pem", tmpdir);
    snprintf(ec256_path, sizeof ec256_path, "%s/ec256.pem", tmpdir);
    rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *ec256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!rsa_key || !ec_key || !small || !ec256)
        return -1;
    write_key(rsa_key, rsa_path);
    write_key(ec_key, ec_path);
    write_key(small, rsa_small_path);
    write_key(ec256, ec256_path);
    EVP_PKEY_free(small);
    EVP_PKEY_free(ec256);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(rsa_path);
    unlink(ec_path);
    unlink(rsa_small_path);
    unlink(ec256_path);
    rmdir(tmpdir);
    EVP_PKEY_free(rsa_key);
    EVP_PKEY_free(ec_key);
    return 0;
}

static fhir_auth *smart(const char *key, const char *alg)
{
    fhir_auth_config cfg = {.kind = FHIR_AUTH_SMART, .smart_client_id = "cartgate-test",
                            .smart_key_file = key, .smart_kid = "kid-1", .smart_alg = alg,
                            .smart_token_url = "https://ehr.example/auth/token"};
    fhir_error err = {0};
    fhir_auth *a = fhir_auth_new(&cfg, &err);
    if (!a)
        fail_msg("fhir_auth_new: %s", err.msg);
    return a;
}

static fhir_node *decode_part(fhir_arena *ar, const char *s, size_t n)
{
    size_t len = 0;
    unsigned char *raw = fhir_auth_b64url_decode(s, n, &len);
    assert_non_null(raw);
    fhir_error err = {0};
    fhir_node *doc = fhir_json_parse(ar, (const char *)raw, len, NULL, &err);
    free(raw);
    if (!doc)
        fail_msg("JWT part is not JSON: %s", err.msg);
    return doc;
}

/* Verifies header.claims.signature with pub; ES384 signatures arrive as raw r||s. */
static int verify(const char *jwt, EVP_PKEY *pub, bool es)
{
    const char *dot2 = strrchr(jwt, '.');
    size_t siglen = 0;
    unsigned char *sig = fhir_auth_b64url_decode(dot2 + 1, strlen(dot2 + 1), &siglen);
    assert_non_null(sig);
    unsigned char *der = NULL;
    int derlen = 0;
    if (es) {
        assert_int_equal(siglen, 96);
        ECDSA_SIG *s = ECDSA_SIG_new();
        ECDSA_SIG_set0(s, BN_bin2bn(sig, 48, NULL), BN_bin2bn(sig + 48, 48, NULL));
        derlen = i2d_ECDSA_SIG(s, &der);
        ECDSA_SIG_free(s);
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha384(), NULL, pub) == 1 &&
             EVP_DigestVerify(ctx, es ? der : sig, es ? (size_t)derlen : siglen,
                              (const unsigned char *)jwt, (size_t)(dot2 - jwt)) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    free(sig);
    return ok;
}

static void check_jwt(const char *key, const char *alg, EVP_PKEY *pub)
{
    fhir_auth *a = smart(key, alg);
    assert_string_equal(fhir_auth_smart_alg(a), alg);
    fhir_error err = {0};
    int64_t now = 1700000000123LL;
    char *jwt = fhir_auth_jwt_assertion(a, "https://ehr.example/auth/token", now, &err);
    assert_non_null(jwt);
    char *jwt2 = fhir_auth_jwt_assertion(a, "https://ehr.example/auth/token", now, &err);
    assert_non_null(jwt2);

    const char *d1 = strchr(jwt, '.');
    assert_non_null(d1);
    const char *d2 = strchr(d1 + 1, '.');
    assert_non_null(d2);
    assert_null(strchr(d2 + 1, '.'));
    assert_null(strchr(jwt, '=')); /* no padding */
    fhir_arena *ar = fhir_arena_new(0);
    fhir_node *h = decode_part(ar, jwt, (size_t)(d1 - jwt));
    fhir_node *c = decode_part(ar, d1 + 1, (size_t)(d2 - d1 - 1));
    assert_string_equal(fhir_node_str(fhir_node_get(h, "alg")), alg);
    assert_string_equal(fhir_node_str(fhir_node_get(h, "kid")), "kid-1");
    assert_string_equal(fhir_node_str(fhir_node_get(h, "typ")), "JWT");
    assert_string_equal(fhir_node_str(fhir_node_get(c, "iss")), "cartgate-test");
    assert_string_equal(fhir_node_str(fhir_node_get(c, "sub")), "cartgate-test");
    assert_string_equal(fhir_node_str(fhir_node_get(c, "aud")), "https://ehr.example/auth/token");
    int64_t iat = 0, exp = 0;
    assert_true(fhir_node_int(fhir_node_get(c, "iat"), &iat));
    assert_true(fhir_node_int(fhir_node_get(c, "exp"), &exp));
    assert_int_equal(iat, 1700000000);
    assert_true(exp > iat && exp - iat <= 300);
    const char *jti = fhir_node_str(fhir_node_get(c, "jti"));
    assert_non_null(jti);
    assert_true(strlen(jti) >= 16);

    /* a second assertion has another jti */
    const char *e1 = strchr(jwt2, '.');
    const char *e2 = strchr(e1 + 1, '.');
    fhir_node *c2 = decode_part(ar, e1 + 1, (size_t)(e2 - e1 - 1));
    assert_string_not_equal(jti, fhir_node_str(fhir_node_get(c2, "jti")));

    assert_true(verify(jwt, pub, !strcmp(alg, "ES384")));
    /* a flipped claims byte breaks the signature */
    char *bad = strdup(jwt);
    bad[(d1 - jwt) + 3] = bad[(d1 - jwt) + 3] == 'A' ? 'B' : 'A';
    assert_false(verify(bad, pub, !strcmp(alg, "ES384")));
    free(bad);

    /* the token request body carries the form fields */
    char *body = fhir_auth_token_request(a, now, &err);
    assert_non_null(body);
    assert_non_null(strstr(body, "grant_type=client_credentials"));
    assert_non_null(strstr(body, "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3A"
                                 "client-assertion-type%3Ajwt-bearer"));
    assert_non_null(strstr(body, "&client_assertion=ey"));
    assert_non_null(strstr(body, "scope=system%2F%2A.rs"));
    free(body);
    free(jwt);
    free(jwt2);
    fhir_arena_free(ar);
    fhir_auth_free(a);
}

static void test_jwt_rs384(void **state)
{
    (void)state;
    check_jwt(rsa_path, "RS384", rsa_key);
}

static void test_jwt_es384(void **state)
{
    (void)state;
    check_jwt(ec_path, "ES384", ec_key);
}

static void test_alg_from_key_and_refusals(void **state)
{
    (void)state;
    fhir_auth *a = smart(ec_path, NULL);
    assert_string_equal(fhir_auth_smart_alg(a), "ES384");
    fhir_auth_free(a);
    a = smart(rsa_path, NULL);
    assert_string_equal(fhir_auth_smart_alg(a), "RS384");
    fhir_auth_free(a);

    struct { const char *key, *alg, *expect; } bad[] = {
        {rsa_path, "ES384", "EC key on P-384"},
        {ec_path, "RS384", "needs an RSA key"},
        {rsa_small_path, "RS384", "1024 bits"},
        {ec256_path, NULL, "P-384"},
        {rsa_path, "HS256", "unsupported algorithm"},
        {"/nonexistent/key.pem", NULL, "/nonexistent/key.pem"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fhir_auth_config cfg = {.kind = FHIR_AUTH_SMART, .smart_client_id = "x",
                                .smart_key_file = bad[i].key, .smart_kid = "k",
                                .smart_alg = bad[i].alg};
        fhir_error err = {0};
        assert_null(fhir_auth_new(&cfg, &err));
        if (!strstr(err.msg, bad[i].expect))
            fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i].expect);
    }
    fhir_auth_config nokid = {.kind = FHIR_AUTH_SMART, .smart_client_id = "x",
                              .smart_key_file = rsa_path};
    fhir_error err = {0};
    assert_null(fhir_auth_new(&nokid, &err));
    assert_non_null(strstr(err.msg, "kid"));
}

static void test_token_lifecycle(void **state)
{
    (void)state;
    fhir_auth *a = smart(rsa_path, "RS384");
    int64_t now = 1700000000000LL;
    assert_true(fhir_auth_needs_token(a, now));
    assert_null(fhir_auth_header(a, now));
    uint64_t g0 = fhir_auth_generation(a);
    fhir_error err = {0};
    const char *resp = "{\"access_token\":\"tok-1\",\"token_type\":\"Bearer\","
                       "\"expires_in\":300,\"scope\":\"system/*.rs\"}";
    assert_int_equal(fhir_auth_accept_token(a, resp, strlen(resp), now, &err), 0);
    assert_true(fhir_auth_generation(a) > g0);
    assert_string_equal(fhir_auth_header(a, now), "Authorization: Bearer tok-1");
    assert_int_equal(fhir_auth_token_expiry(a), now + 300000);
    /* refreshed 30 s before expiry (margin), not at expiry */
    assert_false(fhir_auth_needs_token(a, now + 269999));
    assert_true(fhir_auth_needs_token(a, now + 270000));
    assert_null(fhir_auth_header(a, now + 270000));
    /* short-lived token: margin shrinks to a fifth of the lifetime */
    const char *short_resp = "{\"access_token\":\"tok-2\",\"token_type\":\"bearer\",\"expires_in\":10}";
    assert_int_equal(fhir_auth_accept_token(a, short_resp, strlen(short_resp), now, &err), 0);
    assert_false(fhir_auth_needs_token(a, now + 7999));
    assert_true(fhir_auth_needs_token(a, now + 8000));
    /* invalidation after a 401 */
    uint64_t g = fhir_auth_generation(a);
    fhir_auth_invalidate(a);
    assert_true(fhir_auth_generation(a) > g);
    assert_true(fhir_auth_needs_token(a, now));

    const char *bad[] = {
        "{\"token_type\":\"bearer\",\"expires_in\":300}",
        "{\"access_token\":\"t\",\"token_type\":\"mac\",\"expires_in\":300}",
        "{\"access_token\":\"t\",\"token_type\":\"bearer\",\"expires_in\":-1}",
        "{\"access_token\":\"t\\nx\",\"token_type\":\"bearer\"}",
        "not json",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fhir_error_clear(&err);
        assert_int_equal(fhir_auth_accept_token(a, bad[i], strlen(bad[i]), now, &err), -1);
        assert_true(err.msg[0] != '\0');
    }
    fhir_auth_free(a);
}

static void test_discovery(void **state)
{
    (void)state;
    fhir_auth_config cfg = {.kind = FHIR_AUTH_SMART, .smart_client_id = "x",
                            .smart_key_file = ec_path, .smart_kid = "k"};
    fhir_error err = {0};
    fhir_auth *a = fhir_auth_new(&cfg, &err);
    assert_non_null(a);
    assert_null(fhir_auth_token_url(a));
    const char *abs = "{\"token_endpoint\":\"https://h/auth/token\",\"grant_types_supported\":"
                      "[\"client_credentials\"],\"token_endpoint_auth_signing_alg_values_supported\":"
                      "[\"RS384\",\"ES384\"]}";
    assert_int_equal(fhir_auth_parse_discovery(a, abs, strlen(abs), "https://h/fhir", &err), 0);
    assert_string_equal(fhir_auth_token_url(a), "https://h/auth/token");
    const char *rel = "{\"token_endpoint\":\"/oauth/token\"}";
    assert_int_equal(fhir_auth_parse_discovery(a, rel, strlen(rel), "https://h:8443/r4/fhir", &err), 0);
    assert_string_equal(fhir_auth_token_url(a), "https://h:8443/oauth/token");
    const char *rel2 = "{\"token_endpoint\":\"token\"}";
    assert_int_equal(fhir_auth_parse_discovery(a, rel2, strlen(rel2), "https://h/fhir", &err), 0);
    assert_string_equal(fhir_auth_token_url(a), "https://h/fhir/token");
    const char *noalg = "{\"token_endpoint\":\"https://h/t\","
                        "\"token_endpoint_auth_signing_alg_values_supported\":[\"RS384\"]}";
    assert_int_equal(fhir_auth_parse_discovery(a, noalg, strlen(noalg), "https://h", &err), -1);
    assert_non_null(strstr(err.msg, "ES384"));
    const char *nogrant = "{\"token_endpoint\":\"https://h/t\",\"grant_types_supported\":[\"authorization_code\"]}";
    assert_int_equal(fhir_auth_parse_discovery(a, nogrant, strlen(nogrant), "https://h", &err), -1);
    /* the discovered endpoint: on the FHIR server's host, https (plain http only on loopback
     * for a plain http base); a configured token URL is the way to another host */
    const char *other = "{\"token_endpoint\":\"https://login.example/token\"}";
    assert_int_equal(fhir_auth_parse_discovery(a, other, strlen(other), "https://h/fhir", &err), -1);
    assert_string_equal(err.msg, "SMART configuration: token_endpoint \"https://login.example/token\" is not on "
                                 "the FHIR server's host h: refused (configure the token URL explicitly to use "
                                 "another host)");
    const char *plain = "{\"token_endpoint\":\"http://h/token\"}";
    assert_int_equal(fhir_auth_parse_discovery(a, plain, strlen(plain), "https://h/fhir", &err), -1);
    assert_string_equal(err.msg, "SMART configuration: token_endpoint \"http://h/token\" is not https: refused "
                                 "(the client assertion and the access token would cross the network in clear)");
    assert_int_equal(fhir_auth_parse_discovery(a, plain, strlen(plain), "http://h/fhir", &err), -1);
    assert_non_null(strstr(err.msg, "is not https: refused"));
    const char *lo = "{\"token_endpoint\":\"http://127.0.0.1:9/auth/token\"}";
    assert_int_equal(fhir_auth_parse_discovery(a, lo, strlen(lo), "http://localhost:9/fhir", &err), 0);
    assert_string_equal(fhir_auth_token_url(a), "http://127.0.0.1:9/auth/token");
    assert_int_equal(fhir_auth_parse_discovery(a, lo, strlen(lo), "https://127.0.0.1:9/fhir", &err), -1);
    assert_non_null(strstr(err.msg, "is not https: refused"));
    assert_string_equal(fhir_auth_token_url(a), "http://127.0.0.1:9/auth/token"); /* a refusal keeps the old */
    const char *ftp = "{\"token_endpoint\":\"ftp://h/token\"}";
    assert_int_equal(fhir_auth_parse_discovery(a, ftp, strlen(ftp), "https://h/fhir", &err), -1);
    assert_non_null(strstr(err.msg, "is not an http(s) URL"));
    const char *none = "{\"issuer\":\"x\"}";
    assert_int_equal(fhir_auth_parse_discovery(a, none, strlen(none), "https://h", &err), -1);
    assert_non_null(strstr(err.msg, "token_endpoint"));
    fhir_auth_free(a);
}

static void test_static_secrets(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/token", tmpdir);
    FILE *f = fopen(path, "w");
    fputs("  s3cret-token \nsecond line ignored\n", f);
    fclose(f);
    fhir_error err = {0};
    fhir_auth_config b = {.kind = FHIR_AUTH_BEARER, .bearer_file = path};
    fhir_auth *a = fhir_auth_new(&b, &err);
    assert_non_null(a);
    assert_string_equal(fhir_auth_header(a, 0), "Authorization: Bearer s3cret-token");
    assert_false(fhir_auth_needs_token(a, 0));
    fhir_auth_free(a);
    unlink(path);

    setenv("CARTGATE_TEST_TOKEN", "env-token", 1);
    fhir_auth_config e = {.kind = FHIR_AUTH_BEARER, .bearer_env = "CARTGATE_TEST_TOKEN"};
    a = fhir_auth_new(&e, &err);
    assert_non_null(a);
    assert_string_equal(fhir_auth_header(a, 0), "Authorization: Bearer env-token");
    fhir_auth_free(a);

    unsetenv("CARTGATE_TEST_MISSING");
    fhir_auth_config m = {.kind = FHIR_AUTH_BEARER, .bearer_env = "CARTGATE_TEST_MISSING"};
    assert_null(fhir_auth_new(&m, &err));
    assert_non_null(strstr(err.msg, "CARTGATE_TEST_MISSING"));
    fhir_auth_config nf = {.kind = FHIR_AUTH_BEARER, .bearer_file = "/nonexistent/tok"};
    assert_null(fhir_auth_new(&nf, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/tok"));

    /* RFC 7617 example: Aladdin:open sesame */
    setenv("CARTGATE_TEST_PASS", "open sesame", 1);
    fhir_auth_config ba = {.kind = FHIR_AUTH_BASIC, .basic_user = "Aladdin",
                           .basic_pass_env = "CARTGATE_TEST_PASS"};
    a = fhir_auth_new(&ba, &err);
    assert_non_null(a);
    assert_string_equal(fhir_auth_header(a, 0), "Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    fhir_auth_free(a);
    fhir_auth_config bu = {.kind = FHIR_AUTH_BASIC, .basic_user = "a:b",
                           .basic_pass_env = "CARTGATE_TEST_PASS"};
    assert_null(fhir_auth_new(&bu, &err));

    fhir_auth_config none = {.kind = FHIR_AUTH_NONE};
    a = fhir_auth_new(&none, &err);
    assert_non_null(a);
    assert_null(fhir_auth_header(a, 0));
    fhir_auth_free(a);
}

static void test_b64url_and_form(void **state)
{
    (void)state;
    char *e = fhir_auth_b64url_encode("\xfb\xff\xfe", 3);
    assert_string_equal(e, "-__-");
    free(e);
    e = fhir_auth_b64url_encode("ab", 2);
    assert_string_equal(e, "YWI");
    size_t n = 0;
    unsigned char *d = fhir_auth_b64url_decode(e, strlen(e), &n);
    assert_int_equal(n, 2);
    assert_memory_equal(d, "ab", 2);
    free(d);
    free(e);
    assert_null(fhir_auth_b64url_decode("a+b=", 4, &n));
    assert_null(fhir_auth_b64url_decode("abcde", 5, &n));
    char *f = fhir_auth_form_encode("system/*.rs a&b=c~");
    assert_string_equal(f, "system%2F%2A.rs%20a%26b%3Dc~");
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jwt_rs384),
        cmocka_unit_test(test_jwt_es384),
        cmocka_unit_test(test_alg_from_key_and_refusals),
        cmocka_unit_test(test_token_lifecycle),
        cmocka_unit_test(test_discovery),
        cmocka_unit_test(test_static_secrets),
        cmocka_unit_test(test_b64url_and_form),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
