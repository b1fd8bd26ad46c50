/* Unit tests: the admin API's route table — every route declares a role (a route added
 * without one fails here, and the listener refuses it at start), and each route needs the role
 * the access rules give it: health and readiness public, reads viewer, clinical acts
 * clinician, retry, the audit, users and tokens admin. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "admin.h"
#include "role.h"
#include "serve.h"

static const struct {
    const char *method, *pattern;
    role need;
} WANT[] = {
    {"GET", "/healthz", ROLE_PUBLIC},
    {"GET", "/readyz", ROLE_PUBLIC},
    {"GET", "/metrics", ROLE_VIEWER},
    {"GET", "/api/v1/patients", ROLE_VIEWER},
    {"GET", "/api/v1/patients/{id}", ROLE_VIEWER},
    {"GET", "/api/v1/referrals", ROLE_VIEWER},
    {"GET", "/api/v1/referrals/{id}", ROLE_VIEWER},
    {"GET", "/api/v1/referrals/{id}/payload", ROLE_VIEWER},
    {"POST", "/api/v1/patients/rescreen", ROLE_ADMIN},
    {"POST", "/api/v1/patients/{id}/rescreen", ROLE_CLINICIAN},
    {"POST", "/api/v1/referrals/{id}/approve", ROLE_CLINICIAN},
    {"POST", "/api/v1/referrals/{id}/decline", ROLE_CLINICIAN},
    {"POST", "/api/v1/referrals/{id}/cancel", ROLE_CLINICIAN},
    {"POST", "/api/v1/referrals/{id}/retry", ROLE_ADMIN},
    {"GET", "/api/v1/audit", ROLE_ADMIN},
    {"GET", "/api/v1/users", ROLE_ADMIN},
    {"POST", "/api/v1/users/{name}/disable", ROLE_ADMIN},
    {"POST", "/api/v1/users/{name}/enable", ROLE_ADMIN},
    {"POST", "/api/v1/users/{name}/role", ROLE_ADMIN},
    {"GET", "/api/v1/users/{name}/tokens", ROLE_ADMIN},
    {"POST", "/api/v1/users/{name}/tokens", ROLE_ADMIN},
    {"POST", "/api/v1/users/{name}/tokens/{id}/revoke", ROLE_ADMIN},
};

static void test_every_route_has_a_role(void **state)
{
    (void)state;
    size_t n;
    const serve_route *r = admin_routes(&n);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) {
        if (r[i].need == ROLE_UNSET)
            fail_msg("route %s %s has no role", r[i].method, r[i].pattern);
        assert_non_null(r[i].fn);
    }
    fhir_error err = {0};
    assert_int_equal(serve_check_routes(r, n, &err), 0);
}

/* Every route is in the table above with the role it must need, and nothing else is served. */
static void test_roles_as_specified(void **state)
{
    (void)state;
    size_t n;
    const serve_route *r = admin_routes(&n);
    assert_int_equal(n, sizeof WANT / sizeof WANT[0]);
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t k = 0; k < sizeof WANT / sizeof WANT[0]; k++)
            if (!strcmp(WANT[k].method, r[i].method) && !strcmp(WANT[k].pattern, r[i].pattern)) {
                found = true;
                if (WANT[k].need != r[i].need)
                    fail_msg("%s %s needs %s, should need %s", r[i].method, r[i].pattern, role_name(r[i].need),
                             role_name(WANT[k].need));
            }
        if (!found)
            fail_msg("route %s %s is not in the role table of this test", r[i].method, r[i].pattern);
    }
    /* a viewer may read but not act; a clinician may not retry; an admin may not approve */
    assert_true(role_allows(role_grants(ROLE_VIEWER), ROLE_VIEWER));
    assert_false(role_allows(role_grants(ROLE_VIEWER), ROLE_CLINICIAN));
    assert_false(role_allows(role_grants(ROLE_CLINICIAN), ROLE_ADMIN));
    assert_false(role_allows(role_grants(ROLE_ADMIN), ROLE_CLINICIAN));
}

/* The table with one role removed is refused by the listener's check. */
static void test_missing_role_refused(void **state)
{
    (void)state;
    size_t n;
    const serve_route *r = admin_routes(&n);
    serve_route copy[SERVE_MAX_ROUTES];
    assert_true(n <= SERVE_MAX_ROUTES);
    for (size_t i = 0; i < n; i++) {
        memcpy(copy, r, n * sizeof *r);
        copy[i].need = ROLE_UNSET;
        fhir_error err = {0};
        assert_int_equal(serve_check_routes(copy, n, &err), -1);
        assert_non_null(strstr(err.msg, copy[i].pattern));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_has_a_role),
        cmocka_unit_test(test_roles_as_specified),
        cmocka_unit_test(test_missing_role_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
