/* Unit tests: fhir_buf_printf appends exactly what vsnprintf writes (it formats the common
 * conversions itself), and a formatted append past the cap appends nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

#include "fhir_buf.h"

/* fhir_buf_printf(fmt, ...) after a prefix against snprintf of the same. */
static void check(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void check(const char *fmt, ...)
{
    char want[1024];
    va_list ap;
    va_start(ap, fmt);
    int wn = vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    assert_true(wn >= 0 && (size_t)wn < sizeof want);
    fhir_buf b;
    fhir_buf_init(&b, 0);
    fhir_buf_puts(&b, "X");
    va_start(ap, fmt);
    int rc = fhir_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    assert_int_equal(rc, 0);
    if (b.len != (size_t)wn + 1 || memcmp(b.data + 1, want, (size_t)wn))
        fail_msg("format \"%s\": want \"%s\", got \"%s\"", fmt, want, b.data + 1);
    fhir_buf_free(&b);
}

/* xorshift64: the tests' repeatable pseudo-random values */
static uint64_t next_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void test_printf_like_vsnprintf(void **state)
{
    (void)state;
    const char *volatile none = NULL; /* not a constant: the compiler would object */
    check("%s %s=%g %s (%.10s) -> %g %s", "Observation/o1", "anc", 1.5, "10*3/uL",
          "2026-10-29T10:00:00Z", 1500.0, "/uL");
    check("%d|%u|%zu|%ld|%c|%%|%.3s|%.0s|%s", -42, 4000000000u, (size_t)-1, -2147483647L - 1, 'q',
          "abcdef", "zz", "");
    check("%c%c%s", 0, 'a', "b"); /* a NUL byte is appended like any other */
    check("%.200s|%.2s", "short", "é");
    check("%5d|%-3s|%x|%03d|%.*s", 7, "a", 255, 5, 3, "abcdef"); /* left to vsnprintf */
    check("%s", none);
    check("%g %g %g %g %g %g", 0.0, -0.0, 1e20, 1.5e-7, NAN, -INFINITY);
    check("plain text, no conversion");
}

/* %g: six significant digits, trailing zeros dropped, exponent form outside 1e-4..1e6: over
 * many values of the kinds lab results and ages take, and the edges of its rules. */
static void test_printf_g(void **state)
{
    (void)state;
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 200000; i++) {
        next_rand(&x);
        double v;
        switch (i % 4) {
        case 0: v = (double)(x % 100000000) / 100.0; break;
        case 1: v = (double)(x % 1000000) / 1000.0; break;
        case 2: v = (double)(x >> 11) / 9007199254740992.0 * pow(10, (int)(x % 14) - 6); break;
        default: v = -(double)(x % 10000000) / 10.0 - 0.05; break;
        }
        check("%g", v);
    }
    static const double edge[] = {0.0001, 0.00009999995, 999999.5, 999999.4, 99999.95, 9.9999995,
                                  1e-4, 1e6, 0.5, 0.05, 0.15, 2.5, 1.0000005, 123456.5, 7.5, 95.2,
                                  1.0 / 3, 2.0 / 3, 1e5, 99999.9};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        check("%g", edge[i]);
        check("%g", -edge[i]);
    }
}

/* %.<n>f (n <= 6, fhir_buf and fhir_fmt_fixed): distances, minutes, coordinates, and ties
 * that the exact binary value decides (0.125 -> "0.12", 2.5 -> "2"), against snprintf. */
static void check_fixed(double v, unsigned prec)
{
    char want[512], got[512];
    int wn = snprintf(want, sizeof want, "%.*f", (int)prec, v);
    size_t gn = fhir_fmt_fixed(got, sizeof got, v, prec);
    if ((size_t)wn != gn || strcmp(want, got))
        fail_msg("%%.%uf of %.17g: want \"%s\", fhir_fmt_fixed \"%s\"", prec, v, want, got);
}

static void test_printf_f(void **state)
{
    (void)state;
    static const char *const fmts[] = {"%.0f", "%.1f", "%.2f", "%.3f", "%.4f", "%.5f", "%.6f"};
    uint64_t x = 2463534242ull;
    for (int i = 0; i < 200000; i++) {
        next_rand(&x);
        double v;
        switch (i % 4) {
        case 0: v = (double)(x % 10000000) / 10.0; break;                        /* km */
        case 1: v = (double)(x % 2000000) / 1000.0 - 1000.0; break;              /* halves, ties */
        case 2: v = (double)(x >> 11) / 9007199254740992.0 * 360.0 - 180.0; break; /* lat/lon */
        default: v = (double)(x >> 11) / 9007199254740992.0 * pow(10, (int)(x % 20) - 8); break;
        }
        unsigned p = (unsigned)(i % 7);
        check(fmts[p], v);
        check_fixed(v, p);
    }
    static const double edge[] = {0.0, -0.0, 0.5, 1.5, 2.5, 0.125, 0.375, 1.005, 2.675, 0.05,
                                  0.15, 0.25, 0.35, 999999999.5, 1e9, 4e9, 1e15, 1e300, 5e-7,
                                  4.9999995, 0.4999999, 1e-300, NAN, INFINITY, 377.35, 368.5};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++)
        for (unsigned p = 0; p <= 6; p++) {
            check(fmts[p], edge[i]);
            check(fmts[p], -edge[i]);
            check_fixed(edge[i], p);
            check_fixed(-edge[i], p);
        }
    check("%.7f|%.12f|%f|%.3f km", 1.0 / 3, 2.0 / 3, 0.1, 12.3456); /* 7+ and bare %f: vsnprintf */
    char small[4];
    assert_int_equal(fhir_fmt_fixed(small, sizeof small, 12345.678, 1), 7); /* truncated */
    assert_string_equal(small, "123");
}

static void test_printf_cap(void **state)
{
    (void)state;
    fhir_buf b;
    fhir_buf_init(&b, 10);
    fhir_buf_puts(&b, "12345");
    assert_int_equal(fhir_buf_printf(&b, "%s%d", "abcd", 12), -1);
    assert_true(b.overflow);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "12345");
    assert_int_equal(fhir_buf_printf(&b, "%d", 1), -1); /* stays failed */
    fhir_buf_reset(&b);
    assert_int_equal(fhir_buf_printf(&b, "%s=%g", "ab", 2.5), 0);
    assert_string_equal(b.data, "ab=2.5");
    fhir_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_printf_like_vsnprintf),
        cmocka_unit_test(test_printf_g),
        cmocka_unit_test(test_printf_f),
        cmocka_unit_test(test_printf_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
