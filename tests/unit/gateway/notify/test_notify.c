/* Unit tests: notify on a real SQLite file — each event noticed once (a second post of the same
 * keys queues nothing), one notice per channel with the count of new events, the body holds the
 * count, urgency, text and link and nothing else about anyone; the daily digest once per local
 * day from its hour on (the injectable clock); business days skip weekends; a delivery to a
 * port where nothing listens is retried later (attempts, last error, counters), not lost. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fhir_clock.h"
#include "notify.h"
#include "store.h"

static char dir[64], dbpath[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/cartgate-notify-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(dbpath, sizeof dbpath, "%s/n.db", dir);
    setenv("TZ", "UTC", 1);
    tzset();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    fhir_clock_set_fixed(-1);
    return system(cmd) == 0 ? 0 : -1;
}

/* Notices in one status; a failed count fails the test with SQLite's cause (a -1 must never
 * be added into a total, where it would read as one notice missing). */
static int64_t count_where(store *s, const char *status)
{
    fhir_error e = {0};
    int64_t v = store_notice_count(s, status, &e);
    if (v < 0)
        fail_msg("counting %s notices: %s", status, e.msg);
    return v;
}

typedef struct bodies {
    char body[4][1024];
    char channel[4][16];
    int n;
} bodies;

static int take(void *ctx, const store_notice *n)
{
    bodies *b = ctx;
    if (b->n < 4) {
        snprintf(b->body[b->n], sizeof b->body[0], "%s", n->body_json);
        snprintf(b->channel[b->n], sizeof b->channel[0], "%s", n->channel);
        b->n++;
    }
    return 0;
}

/* 2026-12-07 is a Monday (UTC). */
#define MON_0800 1796630400000LL /* 2026-12-07T08:00:00Z */

static void test_business_days(void **state)
{
    (void)state;
    int64_t day = 86400000;
    assert_int_equal(notify_business_days(MON_0800, MON_0800), 0);
    assert_int_equal(notify_business_days(MON_0800, MON_0800 + day), 1);         /* Tuesday */
    assert_int_equal(notify_business_days(MON_0800, MON_0800 + 4 * day), 4);     /* Friday */
    assert_int_equal(notify_business_days(MON_0800, MON_0800 + 6 * day), 4);     /* Sunday */
    assert_int_equal(notify_business_days(MON_0800, MON_0800 + 7 * day), 5);     /* next Monday */
    assert_int_equal(notify_business_days(MON_0800 + 4 * day, MON_0800 + 7 * day), 1); /* Fri -> Mon */
}

static void test_events_once_and_digest(void **state)
{
    (void)state;
    fhir_error err = {0};
    store *st = store_open(dbpath, 0, &err);
    assert_non_null(st);
    /* nothing listens on port 9: deliveries fail and wait a long retry */
    notify_config c = {.site_id = "site-1", .public_url = "https://cg.example/", .webhook_url = "http://127.0.0.1:9/h",
                       .stuck_business_days = 3, .digest_hour = 7, .retry_s = 3600, .max_attempts = 3,
                       .timeout_s = 5};
    fhir_clock_set_fixed(MON_0800 - 2 * 3600000LL); /* 06:00: before the digest hour */
    notify *n = notify_new(dbpath, &c, &err);
    if (!n)
        fail_msg("notify_new: %s", err.msg);
    const char *keys[] = {"candidate:p1:1", "candidate:p2:1"};
    int64_t queued = 0;
    notify_notice w = {.kind = "urgent_candidates", .keys = keys, .n_keys = 2, .urgency = "now",
                       .summary = "new CAR T candidate(s) to review", .link_path = "/ui/"};
    assert_int_equal(notify_post(n, st, &w, &queued, &err), 0);
    assert_int_equal(queued, 2);
    assert_int_equal(notify_post(n, st, &w, &queued, &err), 0); /* the same events: nothing */
    assert_int_equal(queued, 0);
    const char *keys2[] = {"candidate:p2:1", "candidate:p3:1"};
    w.keys = keys2;
    assert_int_equal(notify_post(n, st, &w, &queued, &err), 0); /* one of two is new */
    assert_int_equal(queued, 1);
    /* before 07:00 no digest; at 07:00 one; again that day none */
    assert_int_equal(notify_scan(n, st, &err), 0);
    fhir_clock_set_fixed(MON_0800 - 3600000LL);
    assert_int_equal(notify_scan(n, st, &err), 0);
    assert_int_equal(notify_scan(n, st, &err), 0);
    fhir_clock_set_fixed(MON_0800 + 86400000LL); /* Tuesday 08:00: the next day's */
    assert_int_equal(notify_scan(n, st, &err), 0);
    notify_free(n); /* the worker stops; what it did is in the store */
    /* 2 candidate notices and 2 digests, webhook only */
    assert_int_equal(count_where(st, "pending") + count_where(st, "sent") + count_where(st, "failed") +
                         count_where(st, "sending") + count_where(st, "unknown"),
                     4);
    bodies b = {.n = 0};
    fhir_clock_set_fixed(MON_0800 + 30LL * 86400000); /* everything is due by then */
    assert_true(store_notice_due(st, fhir_clock_now_ms(), 10, take, &b, &err) >= 0);
    /* tried once or not yet, all four are due a month later */
    assert_int_equal(b.n, 4);
    int cand2 = 0, cand1 = 0, d1 = 0, d2 = 0;
    for (int i = 0; i < b.n; i++) {
        cand2 += strstr(b.body[i], "\"event\":\"urgent_candidates\",\"count\":2,\"urgency\":\"now\"") != NULL;
        cand1 += strstr(b.body[i], "\"event\":\"urgent_candidates\",\"count\":1,") != NULL;
        d1 += strstr(b.body[i], "\"event\":\"digest\"") && strstr(b.body[i], "daily digest 2026-12-07");
        d2 += strstr(b.body[i], "\"event\":\"digest\"") && strstr(b.body[i], "daily digest 2026-12-08");
    }
    assert_int_equal(cand2, 1);
    assert_int_equal(cand1, 1);
    assert_int_equal(d1, 1);
    assert_int_equal(d2, 1);
    for (int i = 0; i < b.n; i++) {
        assert_string_equal(b.channel[i], "webhook");
        assert_non_null(strstr(b.body[i], "\"site\":\"site-1\""));
        assert_non_null(strstr(b.body[i], "\"link\":\"https://cg.example/ui/\""));
        assert_null(strstr(b.body[i], "p1"));
        assert_null(strstr(b.body[i], "p2"));
        assert_null(strstr(b.body[i], "p3"));
    }
    store_close(st);
}

/* A delivery that fails is retried later: attempts 1, the error kept, counted as retried. */
static void test_failed_delivery_retried(void **state)
{
    (void)state;
    fhir_clock_set_fixed(-1);
    char path[160];
    snprintf(path, sizeof path, "%s/r.db", dir);
    fhir_error err = {0};
    store *st = store_open(path, 0, &err);
    assert_non_null(st);
    notify_config c = {.site_id = "s", .public_url = "https://cg.example", .webhook_url = "http://127.0.0.1:9/h",
                       .digest_hour = -1, .retry_s = 3600, .max_attempts = 3, .timeout_s = 5};
    notify *n = notify_new(path, &c, &err);
    assert_non_null(n);
    const char *keys[] = {"referral_declined:7"};
    notify_notice w = {.kind = "referral_declined", .keys = keys, .n_keys = 1, .summary = "referral(s) declined",
                       .link_path = "/ui/referrals"};
    assert_int_equal(notify_post(n, st, &w, NULL, &err), 0);
    notify_stats s = {0};
    for (int i = 0; i < 200 && s.retried[1] == 0; i++) { /* bounded: 20 s */
        usleep(100000);
        notify_get_stats(n, &s);
    }
    assert_int_equal(s.retried[1], 1);
    assert_int_equal(s.sent[1], 0);
    notify_free(n);
    assert_int_equal(count_where(st, "pending"), 1);
    assert_int_equal(count_where(st, "sent"), 0);
    store_close(st);
}

/* An approved referral whose texts could not be composed (referral.h refer_compose_cause) is a
 * stuck referral: notify_scan records it once ("referral_unprepared:<id>") in a referral_stuck
 * notice; one whose cause is gone, or still pending approval, is not noticed. */
static void test_unprepared_noticed(void **state)
{
    (void)state;
    fhir_error err = {0};
    char path[160];
    snprintf(path, sizeof path, "%s/u.db", dir);
    store *st = store_open(path, 0, &err);
    assert_non_null(st);
    notify_config c = {.site_id = "site-1", .public_url = "https://cg.example/", .webhook_url = "http://127.0.0.1:9/h",
                       .stuck_business_days = 3, .digest_hour = -1, .retry_s = 3600, .max_attempts = 3,
                       .timeout_s = 5};
    fhir_clock_set_fixed(MON_0800);
    notify *n = notify_new(path, &c, &err);
    if (!n)
        fail_msg("notify_new: %s", err.msg);
    int64_t ids[3];
    const char *states[] = {"approved", "approved", "pending_approval"};
    for (int i = 0; i < 3; i++) {
        char placer[16];
        snprintf(placer, sizeof placer, "U%d", i);
        store_referral r = {.placer_id = placer, .site_id = "s", .patient_id = "p", .center_id = "c",
                            .indications = "x:y", .state = states[i], .mode = "approval", .urgency = "routine"};
        assert_int_equal(store_referral_insert(st, &r, &ids[i], &err), 1);
        if (i != 1) {
            store_referral_change x = {.set_compose = true, .compose_cause = "center_not_candidate",
                                       .compose_error = "Center c is no longer among"};
            assert_int_equal(store_referral_update(st, ids[i], &x, &err), 0);
        }
    }
    assert_int_equal(notify_scan(n, st, &err), 0);
    notify_free(n);
    char key[64];
    snprintf(key, sizeof key, "referral_unprepared:%lld", (long long)ids[0]);
    assert_int_equal(store_notify_event(st, key, "referral_stuck", &err), 0); /* recorded by the scan */
    for (int i = 1; i < 3; i++) {
        snprintf(key, sizeof key, "referral_unprepared:%lld", (long long)ids[i]);
        assert_int_equal(store_notify_event(st, key, "referral_stuck", &err), 1); /* new: not noticed */
    }
    bodies b = {.n = 0};
    fhir_clock_set_fixed(MON_0800 + 30LL * 86400000);
    assert_true(store_notice_due(st, fhir_clock_now_ms(), 10, take, &b, &err) >= 0);
    assert_int_equal(b.n, 1);
    assert_non_null(strstr(b.body[0], "\"event\":\"referral_stuck\",\"count\":1"));
    assert_non_null(strstr(b.body[0], "could not be prepared"));
    assert_null(strstr(b.body[0], "Center c")); /* counts and a link, nothing about anyone */
    fhir_clock_set_fixed(-1);
    store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_business_days),
        cmocka_unit_test(test_events_once_and_digest),
        cmocka_unit_test(test_failed_delivery_retried),
        cmocka_unit_test(test_unprepared_noticed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
