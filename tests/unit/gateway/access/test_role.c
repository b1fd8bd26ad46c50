/* Unit tests: the role table — what each role may do, public and unset routes, parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "role.h"

static void test_table(void **state)
{
    (void)state;
    /* rows: holder; columns: the role a route needs */
    static const struct { role have; bool viewer, clinician, intake, admin; } rows[] = {
        {ROLE_VIEWER, true, false, false, false},
        {ROLE_CLINICIAN, true, true, false, false},
        {ROLE_INTAKE, false, false, true, false},
        {ROLE_ADMIN, true, false, false, true},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        role_mask m = role_grants(rows[i].have);
        assert_int_equal(role_allows(m, ROLE_VIEWER), rows[i].viewer);
        assert_int_equal(role_allows(m, ROLE_CLINICIAN), rows[i].clinician);
        assert_int_equal(role_allows(m, ROLE_INTAKE), rows[i].intake);
        assert_int_equal(role_allows(m, ROLE_ADMIN), rows[i].admin);
        assert_true(role_allows(m, ROLE_PUBLIC));
        assert_false(role_allows(m, ROLE_UNSET));
    }
    assert_true(role_allows(0, ROLE_PUBLIC));
    assert_false(role_allows(0, ROLE_VIEWER));
    assert_false(role_allows(~0u, ROLE_UNSET));
    assert_int_equal(role_primary(role_grants(ROLE_CLINICIAN)), ROLE_CLINICIAN);
    assert_int_equal(role_primary(role_grants(ROLE_ADMIN) | role_grants(ROLE_CLINICIAN)), ROLE_ADMIN);
    assert_int_equal(role_primary(0), ROLE_UNSET);
}

static void test_parse(void **state)
{
    (void)state;
    role r;
    const char *names[] = {"viewer", "clinician", "intake", "admin"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(role_parse(names[i], &r), 0);
        assert_string_equal(role_name(r), names[i]);
    }
    assert_int_equal(role_parse("public", &r), -1);
    assert_int_equal(role_parse("unset", &r), -1);
    assert_int_equal(role_parse("Admin", &r), -1);
    assert_int_equal(role_parse(NULL, &r), -1);
    assert_string_equal(role_name((role)99), "unset");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
