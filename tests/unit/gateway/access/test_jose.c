/* Unit tests: JWKS parsing and JWS verification against tokens signed by OpenSSL directly
 * (RS256, PS256, ES256, ES384), tampering, algorithm confusion ("none", HS256, RS256 with an EC
 * key, a JWK's own alg), unknown kid (the rotation signal), weak and encryption keys skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "jose.h"
#include "jws_test.h"

static EVP_PKEY *rsa, *rsa_small, *ec256, *ec384;
static char jwks[16384];
static const char *const ALL[] = {"RS256", "PS256", "ES256", "ES384", NULL};

static int setup(void **state)
{
    (void)state;
    rsa = tk_rsa(2048);
    rsa_small = tk_rsa(1024);
    ec256 = tk_ec("P-256");
    ec384 = tk_ec("P-384");
    char a[4096], b[4096], c[1024], d[1024], e[1024];
    tk_jwk(rsa, "r1", ",\"use\":\"sig\"", a, sizeof a);
    tk_jwk(rsa_small, "weak", NULL, b, sizeof b);
    tk_jwk(ec256, "e1", ",\"alg\":\"ES256\"", c, sizeof c);
    tk_jwk(ec384, "e2", NULL, d, sizeof d);
    tk_jwk(ec256, "enc1", ",\"use\":\"enc\"", e, sizeof e);
    snprintf(jwks, sizeof jwks, "{\"keys\":[%s,%s,%s,%s,%s]}", a, b, c, d, e);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsa_small);
    EVP_PKEY_free(ec256);
    EVP_PKEY_free(ec384);
    return 0;
}

static jose_jwks *keys(void)
{
    fhir_error err = {0};
    size_t skipped = 99;
    jose_jwks *k = jose_jwks_parse(jwks, strlen(jwks), &skipped, &err);
    if (!k)
        fail_msg("jwks: %s", err.msg);
    assert_int_equal(jose_jwks_count(k), 3);  /* the 1024-bit RSA key and the enc key are skipped */
    assert_int_equal(skipped, 2);
    return k;
}

static int verify(jose_jwks *k, const char *tok, fhir_error *err)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *p = NULL;
    int rc = jose_verify(k, tok, ALL, a, &p, NULL, err);
    if (rc == 0)
        assert_string_equal(fhir_node_str(fhir_node_get(p, "sub")), "u1");
    fhir_arena_free(a);
    return rc;
}

static void test_good_signatures(void **state)
{
    (void)state;
    jose_jwks *k = keys();
    struct { EVP_PKEY *key; const char *alg, *kid; } cases[] = {
        {rsa, "RS256", "r1"}, {rsa, "PS256", "r1"}, {ec256, "ES256", "e1"}, {ec384, "ES384", "e2"}};
    for (size_t i = 0; i < 4; i++) {
        char h[128];
        snprintf(h, sizeof h, "{\"alg\":\"%s\",\"kid\":\"%s\"}", cases[i].alg, cases[i].kid);
        char *t = tk_sign(cases[i].key, cases[i].alg, h, "{\"sub\":\"u1\"}");
        fhir_error err = {0};
        int rc = verify(k, t, &err);
        if (rc)
            fail_msg("%s: %s", cases[i].alg, err.msg);
        free(t);
    }
    /* no kid: every key of the type is tried */
    char *t = tk_sign(ec384, "ES384", "{\"alg\":\"ES384\"}", "{\"sub\":\"u1\"}");
    fhir_error err = {0};
    assert_int_equal(verify(k, t, &err), 0);
    free(t);
    jose_jwks_free(k);
}

static void test_tampered_and_confused(void **state)
{
    (void)state;
    jose_jwks *k = keys();
    fhir_error err = {0};
    char *t = tk_sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}", "{\"sub\":\"u1\"}");
    /* payload swapped for another one: signature no longer matches */
    char *p2 = fhir_auth_b64url_encode("{\"sub\":\"u2\"}", 12);
    char *dot1 = strchr(t, '.'), *dot2 = strchr(dot1 + 1, '.');
    char forged[4096];
    snprintf(forged, sizeof forged, "%.*s.%s%s", (int)(dot1 - t), t, p2, dot2);
    assert_int_equal(verify(k, forged, &err), -1);
    assert_non_null(strstr(err.msg, "does not verify"));
    /* one bit of the signature flipped */
    char flipped[4096];
    snprintf(flipped, sizeof flipped, "%s", t);
    size_t L = strlen(flipped);
    flipped[L - 5] = flipped[L - 5] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(k, flipped, &err), -1);
    free(p2);
    free(t);
    /* alg none / HS256 are never accepted, even when listed */
    const char *with_none[] = {"none", "HS256", "RS256", NULL};
    char *hn = fhir_auth_b64url_encode("{\"alg\":\"none\"}", 15), *pn = fhir_auth_b64url_encode("{\"sub\":\"u1\"}", 12);
    char none[512];
    snprintf(none, sizeof none, "%s.%s.", hn, pn);
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *pl;
    assert_int_equal(jose_verify(k, none, with_none, a, &pl, NULL, &err), -1);
    snprintf(none, sizeof none, "%s.%s.AAAA", hn, pn);
    assert_int_equal(jose_verify(k, none, with_none, a, &pl, NULL, &err), -1);
    free(hn);
    free(pn);
    /* RS256 header on a token signed by the EC key: no RSA key verifies it */
    char *t2 = tk_sign(ec256, "ES256", "{\"alg\":\"RS256\",\"kid\":\"e1\"}", "{\"sub\":\"u1\"}");
    assert_int_equal(verify(k, t2, &err), -1);
    free(t2);
    /* the JWK e1 says alg ES256: a PS256... is refused; an ES384 claim on e1 too */
    char *t3 = tk_sign(ec256, "ES384", "{\"alg\":\"ES384\",\"kid\":\"e1\"}", "{\"sub\":\"u1\"}");
    assert_int_equal(verify(k, t3, &err), -1);
    free(t3);
    /* an algorithm outside the allow-list */
    const char *only_es[] = {"ES256", NULL};
    char *t4 = tk_sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\"}", "{\"sub\":\"u1\"}");
    assert_int_equal(jose_verify(k, t4, only_es, a, &pl, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "not accepted"));
    free(t4);
    /* crit header */
    char *t5 = tk_sign(rsa, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r1\",\"crit\":[\"x\"],\"x\":1}", "{\"sub\":\"u1\"}");
    assert_int_equal(verify(k, t5, &err), -1);
    free(t5);
    /* malformed */
    assert_int_equal(verify(k, "a.b", &err), -1);
    assert_int_equal(verify(k, "a.b.c.d", &err), -1);
    assert_int_equal(verify(k, "!!.??.**", &err), -1);
    fhir_arena_free(a);
    jose_jwks_free(k);
}

static void test_unknown_kid(void **state)
{
    (void)state;
    jose_jwks *k = keys();
    EVP_PKEY *fresh = tk_rsa(2048);
    char *t = tk_sign(fresh, "RS256", "{\"alg\":\"RS256\",\"kid\":\"r2\"}", "{\"sub\":\"u1\"}");
    fhir_error err = {0};
    assert_int_equal(verify(k, t, &err), JOSE_UNKNOWN_KID);
    fhir_arena *a = fhir_arena_new(0);
    assert_string_equal(jose_peek_kid(t, a), "r2");
    fhir_arena_free(a);
    /* after the rotation the new set verifies it */
    char j[4096], set[4200];
    tk_jwk(fresh, "r2", NULL, j, sizeof j);
    snprintf(set, sizeof set, "{\"keys\":[%s]}", j);
    jose_jwks *k2 = jose_jwks_parse(set, strlen(set), NULL, &err);
    assert_non_null(k2);
    assert_true(jose_jwks_has_kid(k2, "r2"));
    assert_int_equal(verify(k2, t, &err), 0);
    free(t);
    EVP_PKEY_free(fresh);
    jose_jwks_free(k);
    jose_jwks_free(k2);
}

static void test_bad_jwks(void **state)
{
    (void)state;
    fhir_error err = {0};
    assert_null(jose_jwks_parse("{\"keys\":[]}", 11, NULL, &err));
    assert_non_null(strstr(err.msg, "no usable"));
    assert_null(jose_jwks_parse("{}", 2, NULL, &err));
    assert_null(jose_jwks_parse("[", 1, NULL, &err));
    const char *badpt = "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
                        "\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}";
    assert_null(jose_jwks_parse(badpt, strlen(badpt), NULL, &err)); /* not on the curve */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_signatures),
        cmocka_unit_test(test_tampered_and_confused),
        cmocka_unit_test(test_unknown_kid),
        cmocka_unit_test(test_bad_jwks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
