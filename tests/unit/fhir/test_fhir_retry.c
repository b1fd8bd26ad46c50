/* Unit tests: transient/permanent classification, full-jitter backoff bounds and cap,
 * Retry-After in seconds and the three HTTP-date forms, the token bucket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fhir_clock.h"
#include "fhir_retry.h"

static void test_classification(void **state)
{
    (void)state;
    assert_true(fhir_retry_status_transient(408));
    assert_true(fhir_retry_status_transient(429));
    assert_true(fhir_retry_status_transient(500));
    assert_true(fhir_retry_status_transient(503));
    assert_true(fhir_retry_status_transient(599));
    assert_false(fhir_retry_status_transient(400));
    assert_false(fhir_retry_status_transient(401));
    assert_false(fhir_retry_status_transient(404));
    assert_false(fhir_retry_status_transient(412));
    assert_false(fhir_retry_status_transient(422));
    assert_false(fhir_retry_status_transient(200));
    assert_false(fhir_retry_status_transient(304));
}

static void test_defaults(void **state)
{
    (void)state;
    fhir_retry_policy p = {0};
    fhir_retry_policy_default(&p);
    assert_int_equal(p.max_attempts, 5);
    assert_int_equal(p.base_ms, 500);
    assert_int_equal(p.cap_ms, 30000);
    fhir_retry_policy q = {.max_attempts = 2, .base_ms = 10, .cap_ms = 5};
    fhir_retry_policy_default(&q);
    assert_int_equal(q.max_attempts, 2);
    assert_int_equal(q.cap_ms, 10); /* cap never below base */
}

static void test_backoff_bounds(void **state)
{
    (void)state;
    fhir_retry_policy p = {.base_ms = 100, .cap_ms = 1000};
    /* the largest draw hits the ceiling exactly; the smallest gives 0 */
    assert_int_equal(fhir_retry_backoff_ms(&p, 0, 100), 100);  /* 100 % 101 */
    assert_int_equal(fhir_retry_backoff_ms(&p, 0, 101), 0);
    assert_int_equal(fhir_retry_backoff_ms(&p, 1, 200), 200);  /* ceiling 200 */
    assert_int_equal(fhir_retry_backoff_ms(&p, 2, 400), 400);  /* ceiling 400 */
    assert_int_equal(fhir_retry_backoff_ms(&p, 3, 800), 800);
    assert_int_equal(fhir_retry_backoff_ms(&p, 4, 1000), 1000); /* capped, not 1600 */
    assert_int_equal(fhir_retry_backoff_ms(&p, 4, 1001), 0);
    assert_int_equal(fhir_retry_backoff_ms(&p, 60, 1000), 1000); /* no overflow */
    assert_int_equal(fhir_retry_backoff_ms(&p, 1000, UINT64_MAX) <= 1000, 1);
    /* a spread of draws stays in range and is not constant */
    int64_t lo = INT64_MAX, hi = -1;
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 2000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t d = fhir_retry_backoff_ms(&p, 2, x);
        assert_true(d >= 0 && d <= 400);
        if (d < lo)
            lo = d;
        if (d > hi)
            hi = d;
    }
    assert_true(lo < 40);
    assert_true(hi > 360);
}

static void test_delay_prefers_retry_after(void **state)
{
    (void)state;
    fhir_retry_policy p = {.base_ms = 100, .cap_ms = 1000, .max_retry_after_ms = 5000};
    assert_int_equal(fhir_retry_delay_ms(&p, 0, 7, 2000), 2000);
    assert_int_equal(fhir_retry_delay_ms(&p, 0, 7, 0), 0);
    assert_int_equal(fhir_retry_delay_ms(&p, 0, 7, 60000), 5000); /* capped */
    assert_int_equal(fhir_retry_delay_ms(&p, 0, 7, -1), 7);       /* backoff */
}

static void test_retry_after_seconds(void **state)
{
    (void)state;
    int64_t d = -1;
    assert_int_equal(fhir_retry_parse_retry_after("120", 0, &d), 0);
    assert_int_equal(d, 120000);
    assert_int_equal(fhir_retry_parse_retry_after(" 0 ", 0, &d), 0);
    assert_int_equal(d, 0);
    assert_int_equal(fhir_retry_parse_retry_after("1\r\n", 0, &d), 0);
    assert_int_equal(d, 1000);
    assert_int_equal(fhir_retry_parse_retry_after("-5", 0, &d), -1);
    assert_int_equal(fhir_retry_parse_retry_after("1.5", 0, &d), -1);
    assert_int_equal(fhir_retry_parse_retry_after("soon", 0, &d), -1);
    assert_int_equal(fhir_retry_parse_retry_after("", 0, &d), -1);
    assert_int_equal(fhir_retry_parse_retry_after(NULL, 0, &d), -1);
}

static void test_retry_after_dates(void **state)
{
    (void)state;
    /* Sun, 06 Nov 1994 08:49:37 GMT = 784111777 s since the epoch (RFC 9110 example) */
    int64_t at = 0;
    assert_int_equal(fhir_retry_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", &at), 0);
    assert_int_equal(at, 784111777000LL);
    assert_int_equal(fhir_retry_parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", &at), 0);
    assert_int_equal(at, 784111777000LL);
    assert_int_equal(fhir_retry_parse_http_date("Sun Nov  6 08:49:37 1994", &at), 0);
    assert_int_equal(at, 784111777000LL);
    /* curl_getdate honours a zone other than GMT (obsolete in RFC 9110, still a date) */
    assert_int_equal(fhir_retry_parse_http_date("Sun, 06 Nov 1994 08:49:37 PST", &at), 0);
    assert_int_equal(at, 784111777000LL + 8 * 3600000LL);
    assert_int_equal(fhir_retry_parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT", &at), -1);
    assert_int_equal(fhir_retry_parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT", &at), -1);
    assert_int_equal(fhir_retry_parse_http_date("tomorrow", &at), -1);
    assert_int_equal(fhir_retry_parse_http_date("", &at), -1);
    assert_int_equal(fhir_retry_parse_http_date(NULL, &at), -1);
    /* a Retry-After with its line end still attached */
    int64_t d0 = -1;
    assert_int_equal(fhir_retry_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT\r\n", 784111777000LL - 5000, &d0), 0);
    assert_int_equal(d0, 5000);

    /* relative to the injectable clock: 30 s ahead, and a date in the past gives 0 */
    fhir_clock_set_fixed(784111777000LL - 30000);
    int64_t d = -1;
    assert_int_equal(
        fhir_retry_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", fhir_clock_now_ms(), &d), 0);
    assert_int_equal(d, 30000);
    fhir_clock_advance(60000);
    assert_int_equal(
        fhir_retry_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", fhir_clock_now_ms(), &d), 0);
    assert_int_equal(d, 0);
    fhir_clock_set_fixed(-1);
}

static void test_bucket(void **state)
{
    (void)state;
    fhir_retry_bucket b;
    fhir_retry_bucket_init(&b, 10.0, 2.0, 1000);
    assert_int_equal(fhir_retry_bucket_take(&b, 1000), 0);
    assert_int_equal(fhir_retry_bucket_take(&b, 1000), 0);
    /* empty: one token takes 100 ms at 10/s */
    assert_int_equal(fhir_retry_bucket_take(&b, 1000), 100);
    assert_int_equal(fhir_retry_bucket_take(&b, 1050), 50);
    assert_int_equal(fhir_retry_bucket_take(&b, 1100), 0);
    /* refills to the burst, never beyond */
    assert_int_equal(fhir_retry_bucket_take(&b, 10000), 0);
    assert_int_equal(fhir_retry_bucket_take(&b, 10000), 0);
    assert_true(fhir_retry_bucket_take(&b, 10000) > 0);
    /* 100 requests at 10/s with the default burst (10): 10 at once, then 90 at 100 ms */
    fhir_retry_bucket_init(&b, 10.0, 0, 0);
    int64_t now = 0;
    for (int i = 0; i < 100; i++) {
        int64_t w;
        while ((w = fhir_retry_bucket_take(&b, now)) > 0)
            now += w;
    }
    assert_true(now >= 9000 && now <= 9090);
    /* unlimited */
    fhir_retry_bucket_init(&b, 0, 0, 0);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(fhir_retry_bucket_take(&b, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classification),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_delay_prefers_retry_after),
        cmocka_unit_test(test_retry_after_seconds),
        cmocka_unit_test(test_retry_after_dates),
        cmocka_unit_test(test_bucket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
