/* fhir_dl: a table filled from a real shared library (libm), and the reasons given when a
 * library or a symbol is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fhir_dl.h"

static struct {
    double (*cos)(double);
    double (*sqrt)(double);
    void (*absent)(void);
} m;

static void test_fills_the_table(void **state)
{
    (void)state;
    static const char *const so[] = {"libm.so.6"};
    const fhir_dl_sym syms[] = {
        {0, "cos", &m.cos, false},
        {0, "sqrt", &m.sqrt, false},
        {0, "cartgate_no_such_symbol", &m.absent, true},
    };
    char why[FHIR_DL_WHY_MAX] = "stale";
    m.absent = (void (*)(void))test_fills_the_table; /* an optional miss sets NULL */
    assert_int_equal(fhir_dl_load("libm", so, 1, syms, 3, why), 0);
    assert_string_equal(why, "");
    assert_non_null(m.cos);
    assert_true(m.cos(0.0) == 1.0);
    assert_true(m.sqrt(16.0) == 4.0);
    assert_null(m.absent);
}

static void test_reasons(void **state)
{
    (void)state;
    char why[FHIR_DL_WHY_MAX];
    static const char *const none[] = {"libcartgate-no-such-library.so.9"};
    const fhir_dl_sym s1[] = {{0, "cos", &m.cos, false}};
    assert_int_equal(fhir_dl_load("the thing", none, 1, s1, 1, why), -1);
    assert_non_null(strstr(why, "the thing is not installed: "));
    assert_non_null(strstr(why, "libcartgate-no-such-library.so.9"));

    static const char *const libm[] = {"libm.so.6"};
    const fhir_dl_sym s2[] = {{0, "cos", &m.cos, false}, {0, "cartgate_no_such_symbol", &m.absent, false}};
    assert_int_equal(fhir_dl_load("the thing", libm, 1, s2, 2, why), -1);
    assert_string_equal(why, "the thing is not installed: libm.so.6 has no cartgate_no_such_symbol");

    const fhir_dl_sym s3[] = {{1, "cos", &m.cos, false}};
    assert_int_equal(fhir_dl_load("the thing", libm, 1, s3, 1, why), -1);
    assert_string_equal(why, "the thing: cos names no library");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fills_the_table),
        cmocka_unit_test(test_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
