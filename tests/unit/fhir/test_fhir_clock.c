/* Unit tests: injectable clock, FHIR date parsing, civil-date arithmetic, the strict
 * YYYY-MM-DD parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fhir_clock.h"

static void test_fixed_clock(void **state)
{
    (void)state;
    fhir_clock_set_fixed(1700000000000LL);
    assert_true(fhir_clock_now_ms() == 1700000000000LL);
    assert_true(fhir_clock_now() == 1700000000LL);
    fhir_clock_advance(1500);
    assert_true(fhir_clock_mono_ms() == 1700000001500LL);
    char buf[40];
    fhir_clock_format_instant(fhir_clock_now_ms(), buf, sizeof buf);
    assert_string_equal(buf, "2023-11-14T22:13:21.500Z");
    fhir_clock_set_fixed(-1);
    assert_true(fhir_clock_now_ms() > 1700000000000LL);
}

static void test_dates(void **state)
{
    (void)state;
    int64_t d;
    assert_int_equal(fhir_clock_parse_date("1970-01-01", &d), 0);
    assert_true(d == 0);
    assert_int_equal(fhir_clock_parse_date("2024-02-29", &d), 0);
    assert_true(d == fhir_clock_days_from_civil(2024, 2, 29));
    assert_int_equal(fhir_clock_parse_date("2023-02-29", &d), -1);
    assert_int_equal(fhir_clock_parse_date("2024", &d), 0);
    assert_true(d == fhir_clock_days_from_civil(2024, 1, 1));
    assert_int_equal(fhir_clock_parse_date("2024-05", &d), 0);
    assert_true(d == fhir_clock_days_from_civil(2024, 5, 1));
    /* an instant late on the 17th in UTC-5 is the 18th in UTC */
    assert_int_equal(fhir_clock_parse_date("2024-05-17T22:00:00-05:00", &d), 0);
    assert_true(d == fhir_clock_days_from_civil(2024, 5, 18));
    assert_int_equal(fhir_clock_parse_date("1950-06-30", &d), 0);
    int y;
    unsigned m, dd;
    fhir_clock_civil_from_days(d, &y, &m, &dd);
    assert_int_equal(y, 1950);
    assert_int_equal(m, 6);
    assert_int_equal(dd, 30);
    const char *bad[] = {"", "24-01-01", "2024-13-01", "2024-01-32", "2024-01-01T25", "2024/01/01",
                         "2024-01-01T10:00:00+0500", "2024-01-01 ", NULL};
    for (int i = 0; bad[i]; i++)
        if (fhir_clock_parse_date(bad[i], &d) != -1)
            fail_msg("accepted '%s'", bad[i]);
    /* the strict YYYY-MM-DD parser takes a real calendar day and nothing else */
    assert_int_equal(fhir_clock_parse_ymd("2024-02-29", &d), 0);
    assert_true(d == fhir_clock_days_from_civil(2024, 2, 29));
    assert_int_equal(fhir_clock_parse_ymd("1969-12-31", &d), 0);
    assert_true(d == -1);
    const char *not_ymd[] = {"2023-02-29", "2024-04-31", "2024-00-10", "2024-13-01", "2024-01-00",
                             "2024", "2024-05", "2024-05-17T10:00:00Z", "+202-01-01", " 2024-01-1",
                             "2024-1-011", "2026-1-01", "2026-02-30", "2024/01/01", "2024-01-01 ", "", NULL};
    for (int i = 0; not_ymd[i]; i++)
        if (fhir_clock_parse_ymd(not_ymd[i], &d) != -1)
            fail_msg("fhir_clock_parse_ymd accepted '%s'", not_ymd[i]);
    assert_int_equal(fhir_clock_parse_ymd(NULL, &d), -1);
    int64_t ms;
    assert_int_equal(fhir_clock_parse_instant("2024-05-17T10:00:00.25Z", &ms), 0);
    char buf[40];
    fhir_clock_format_instant(ms, buf, sizeof buf);
    assert_string_equal(buf, "2024-05-17T10:00:00.250Z");
    /* a long stretch of days round-trips */
    for (int64_t z = -800000; z < 800000; z += 997) {
        fhir_clock_civil_from_days(z, &y, &m, &dd);
        assert_true(fhir_clock_days_from_civil(y, m, dd) == z);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_clock),
        cmocka_unit_test(test_dates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
