/* Unit tests: the checks on a CDS Client's JWT (gateway/cds/cds_jwt.h) — the client entry
 * format; header checks (alg RS384/ES384 only: none, HS256, RS256 refused; typ; jku must be
 * the configured key set); iss allow-list; claims (aud exact, as a string or in an array; exp
 * passed beyond the skew; iat in the future; a lifetime over an hour; jti required) at a fixed
 * clock; and the route table of the service (every route authenticated by its own JWT check,
 * declared as such, and nothing else served). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cds.h"
#include "cds_jwt.h"
#include "fhir_arena.h"
#include "fhir_json.h"

#define NOW 1796000000LL /* seconds */
#define SVC "https://cartgate.example.org/cds-services/cartgate-car-t"

static fhir_arena *A;

static const fhir_node *J(const char *json)
{
    fhir_error err = {0};
    fhir_node *n = fhir_json_parse(A, json, strlen(json), NULL, &err);
    if (!n)
        fail_msg("bad test JSON %s: %s", json, err.msg);
    return n;
}

static cds_jwt_client clients[2];
static char bufs[2][256];

static int setup(void **state)
{
    (void)state;
    A = fhir_arena_new(1u << 20);
    fhir_error err = {0};
    assert_int_equal(cds_jwt_client_parse("https://ehr.example/cds https://ehr.example/jwks.json", bufs[0],
                                          sizeof bufs[0], &clients[0], &err), 0);
    assert_int_equal(cds_jwt_client_parse("urn:other https://other.example/keys", bufs[1], sizeof bufs[1],
                                          &clients[1], &err), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fhir_arena_free(A);
    return 0;
}

static void test_client_entries(void **state)
{
    (void)state;
    assert_string_equal(clients[0].iss, "https://ehr.example/cds");
    assert_string_equal(clients[0].jwks_url, "https://ehr.example/jwks.json");
    cds_jwt_client c;
    char b[64];
    fhir_error err = {0};
    assert_int_equal(cds_jwt_client_parse("no-space", b, sizeof b, &c, &err), -1);
    assert_int_equal(cds_jwt_client_parse("a b c", b, sizeof b, &c, &err), -1);
    assert_int_equal(cds_jwt_client_parse(" leading", b, sizeof b, &c, &err), -1);
}

static void test_pick(void **state)
{
    (void)state;
    fhir_error err = {0};
    const fhir_node *p = J("{\"iss\":\"https://ehr.example/cds\"}");
    assert_ptr_equal(cds_jwt_pick(clients, 2, J("{\"alg\":\"RS384\",\"kid\":\"k\",\"typ\":\"JWT\"}"), p, &err), &clients[0]);
    assert_ptr_equal(cds_jwt_pick(clients, 2, J("{\"alg\":\"ES384\"}"), J("{\"iss\":\"urn:other\"}"), &err), &clients[1]);
    assert_ptr_equal(cds_jwt_pick(clients, 2, J("{\"alg\":\"ES384\",\"jku\":\"https://ehr.example/jwks.json\"}"), p, &err),
                     &clients[0]);
    static const char *const refused[] = {"{\"alg\":\"none\"}", "{\"alg\":\"HS256\"}", "{\"alg\":\"RS256\"}", "{}",
                                          "{\"alg\":\"RS384\",\"typ\":\"at+jwt\"}",
                                          "{\"alg\":\"RS384\",\"jku\":\"https://evil.example/jwks.json\"}",
                                          "{\"alg\":\"RS384\",\"jku\":\"https://other.example/keys\"}"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        err.msg[0] = 0;
        if (cds_jwt_pick(clients, 2, J(refused[i]), p, &err))
            fail_msg("header %s accepted", refused[i]);
        assert_true(err.msg[0] != 0);
    }
    assert_null(cds_jwt_pick(clients, 2, J("{\"alg\":\"RS384\"}"), J("{\"iss\":\"https://evil.example\"}"), &err));
    assert_non_null(strstr(err.msg, "not an allowed CDS client"));
    assert_null(cds_jwt_pick(clients, 2, J("{\"alg\":\"RS384\"}"), J("{}"), &err));
    assert_null(cds_jwt_pick(clients, 2, NULL, p, &err));
}

static int check(const char *claims, const char **jti, fhir_error *err)
{
    return cds_jwt_check_claims(J(claims), &clients[0], SVC, NOW * 1000, jti, NULL, err);
}

static void test_claims(void **state)
{
    (void)state;
    fhir_error err = {0};
    const char *jti = NULL;
    char good[512];
    snprintf(good, sizeof good, "{\"iss\":\"https://ehr.example/cds\",\"aud\":\"%s\",\"iat\":%lld,\"exp\":%lld,\"jti\":\"j-1\"}",
             SVC, NOW - 5, NOW + 295);
    assert_int_equal(check(good, &jti, &err), 0);
    assert_string_equal(jti, "j-1");
    char c[512];
    snprintf(c, sizeof c, "{\"iss\":\"https://ehr.example/cds\",\"aud\":[\"x\",\"%s\"],\"iat\":%lld,\"exp\":%lld,\"jti\":\"j\"}",
             SVC, NOW, NOW + 60);
    assert_int_equal(check(c, NULL, &err), 0);
    /* within the skew (60 s) after exp: still accepted; beyond: refused */
    snprintf(c, sizeof c, "{\"iss\":\"https://ehr.example/cds\",\"aud\":\"%s\",\"iat\":%lld,\"exp\":%lld,\"jti\":\"j\"}", SVC,
             NOW - 100, NOW - 30);
    assert_int_equal(check(c, NULL, &err), 0);
    struct {
        const char *fmt;
        long long a, b;
        const char *why;
    } bad[] = {
        {"{\"iss\":\"urn:other\",\"aud\":\"" SVC "\",\"iat\":%lld,\"exp\":%lld,\"jti\":\"j\"}", NOW, NOW + 60, "iss"},
        {"{\"iss\":\"https://ehr.example/cds\",\"aud\":\"" SVC "/feedback\",\"iat\":%lld,\"exp\":%lld,\"jti\":\"j\"}", NOW,
         NOW + 60, "aud"},
        {"{\"iss\":\"https://ehr.example/cds\",\"aud\":[\"https://x\"],\"iat\":%lld,\"exp\":%lld,\"jti\":\"j\"}", NOW, NOW + 60,
         "aud"},
        {"{\"iss\":\"https://ehr.example/cds\",\"aud\":\"" SVC "\",\"iat\":%lld,\"exp\":%lld,\"jti\":\"j\"}", NOW - 300, NOW - 61,
         "expired"},
        {"{\"iss\":\"https://ehr.example/cds\",\"aud\":\"" SVC "\",\"iat\":%lld,\"exp\":%lld,\"jti\":\"j\"}", NOW + 120, NOW + 300,
         "future"},
        {"{\"iss\":\"https://ehr.example/cds\",\"aud\":\"" SVC "\",\"iat\":%lld,\"exp\":%lld,\"jti\":\"j\"}", NOW, NOW + 7200,
         "valid for"},
        {"{\"iss\":\"https://ehr.example/cds\",\"aud\":\"" SVC "\",\"iat\":%lld,\"exp\":%lld}", NOW, NOW + 60, "jti"},
        {"{\"iss\":\"https://ehr.example/cds\",\"aud\":\"" SVC "\",\"iat\":%lld,\"exp\":%lld,\"jti\":\"\"}", NOW, NOW + 60, "jti"},
        {"{\"iss\":\"https://ehr.example/cds\",\"aud\":\"" SVC "\",\"iat\":%lld,\"jti\":\"j\",\"x\":%lld}", NOW, 0, "no exp"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(c, sizeof c, bad[i].fmt, bad[i].a, bad[i].b);
        err.msg[0] = 0;
        if (check(c, NULL, &err) == 0)
            fail_msg("claims accepted: %s", c);
        if (!strstr(err.msg, bad[i].why))
            fail_msg("claims %s: error \"%s\" does not say %s", c, err.msg, bad[i].why);
    }
}

/* The route table: every route is authenticated by the handler's own JWT check (SERVE_OWN_AUTH,
 * which the listener only accepts with ROLE_PUBLIC), and these are all the routes. */
static void test_routes(void **state)
{
    (void)state;
    static const struct {
        const char *method, *pattern;
    } want[] = {{"GET", "/cds-services"}, {"POST", "/cds-services/{id}"}, {"POST", "/cds-services/{id}/feedback"}};
    size_t n;
    const serve_route *r = cds_routes(&n);
    assert_int_equal(n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(r[i].method, want[i].method);
        assert_string_equal(r[i].pattern, want[i].pattern);
        assert_int_equal(r[i].need, ROLE_PUBLIC);
        assert_int_equal(r[i].flags, SERVE_OWN_AUTH);
    }
    fhir_error err = {0};
    assert_int_equal(serve_check_routes(r, n, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_entries),
        cmocka_unit_test(test_pick),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_routes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
