/* Unit tests: the one proposal path on a real SQLite store with the shipped criteria, the
 * demo center directory and the demo DLBCL patient — the proposal commits (or rolls back)
 * with the caller's transaction, is made exactly once, is refused outside a transaction,
 * follows the referral mode, and a verdict that no longer calls for a referral withdraws the
 * pending proposal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "centers.h"
#include "elig.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "map_profile.h"
#include "map_tables.h"
#include "propose.h"
#include "referral.h"
#include "store.h"

static char tmpdir[256];
static map_tables *tables;
static elig_ruleset *rules;
static centers_dir *centers;
static int64_t as_of;

static int setup(void **state)
{
    (void)state;
    fhir_log_set_level(FHIR_LOG_ERROR);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cartgate-propose-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    fhir_error err = {0};
    tables = map_tables_load(NULL, &err);
    rules = elig_load_dir("conf/criteria", &err);
    centers = centers_load("conf/demo-centers.json", &err);
    if (!tables || !rules || !centers) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    return fhir_clock_parse_date("2026-11-01", &as_of);
}

static int teardown(void **state)
{
    (void)state;
    map_tables_free(tables);
    elig_ruleset_free(rules);
    centers_free(centers);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* One screened patient, as the daemon screens it. */
typedef struct screened {
    fhir_arena *a;
    const fhir_node *res[256];
    size_t n;
    map_profile *p;
    elig_factset *fs;
    elig_result *r;
    fhir_buf vj;
} screened;

/* Screens the demo patient; without_conditions drops its Condition resources (no disease:
 * the verdict no longer calls for a referral). */
static void screen_demo(screened *s, bool without_conditions)
{
    memset(s, 0, sizeof *s);
    s->a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *b = fhir_json_parse_file(s->a, "tests/fixtures/demo-dlbcl-bundle.json", NULL, &err);
    if (!b)
        fail_msg("fixture: %s", err.msg);
    for (const fhir_node *e = fhir_node_first(fhir_node_get(b, "entry")); e && s->n < 256; e = e->next) {
        const fhir_node *r = fhir_node_get(e, "resource");
        const char *t = fhir_node_resource_type(r);
        if (r && !(without_conditions && t && !strcmp(t, "Condition")))
            s->res[s->n++] = r;
    }
    map_profile_opts o;
    map_profile_opts_default(&o);
    o.as_of_days = as_of;
    elig_profile_opts_apply(rules, &o);
    s->p = map_profile_build(tables, s->res, s->n, &o, &err);
    if (!s->p)
        fail_msg("profile: %s", err.msg);
    s->fs = elig_factset_new(rules);
    s->r = elig_result_new(rules);
    elig_profile_source src;
    elig_profile_source_init(&src, s->p, &o);
    elig_factset_fill(s->fs, elig_profile_fact, &src);
    elig_evaluate(rules, s->fs, as_of, s->r);
    fhir_buf_init(&s->vj, 1u << 22);
    elig_result_write_json(rules, s->fs, s->r, "demo-dlbcl-1", &s->vj);
}

static void screened_free(screened *s)
{
    elig_result_free(s->r);
    elig_factset_free(s->fs);
    map_profile_free(s->p);
    fhir_buf_free(&s->vj);
    fhir_arena_free(s->a);
}

static propose_opts opts_for(refer_mode mode)
{
    propose_opts o = {
        .site_id = "t-site", .site_name = "Test Community Hospital", .site_has_location = true,
        .site_lat = 41.59, .site_lon = -93.62, .mode = mode, .rules = rules, .centers = centers,
        .day = as_of,
    };
    return o;
}

static propose_input input_for(screened *s)
{
    propose_input in = {
        .patient_id = "demo-dlbcl-1", .profile = s->p, .facts = s->fs, .result = s->r,
        .verdict_json = fhir_buf_cstr(&s->vj), .resources = s->res, .n_resources = s->n,
    };
    return in;
}

static store *open_fresh(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    unlink(path);
    fhir_error err = {0};
    store *st = store_open(path, 0, &err);
    if (!st)
        fail_msg("store_open: %s", err.msg);
    return st;
}

static void test_commits_with_the_transaction(void **state)
{
    (void)state;
    screened s;
    screen_demo(&s, false);
    assert_int_equal(elig_result_category(s.r), ELIG_ELIGIBLE);
    store *st = open_fresh("tx.db");
    propose_opts o = opts_for(REFER_MODE_APPROVAL);
    propose_input in = input_for(&s);
    propose_result r;
    fhir_error err = {0};

    /* rolled back with the caller's transaction: nothing left */
    assert_int_equal(store_begin(st, &err), 0);
    assert_int_equal(propose_referral(st, &o, &in, &r, &err), 0);
    assert_int_equal(r.outcome, PROPOSE_CREATED);
    assert_true(r.referral_id > 0);
    assert_true(r.n_indications >= 1);
    store_rollback(st);
    assert_int_equal(refer_each(st, -1, NULL, NULL, NULL, &err), 0);
    assert_int_equal(store_audit_count(st, 0), 0);

    /* committed with it: one referral, pending approval, with its package */
    assert_int_equal(store_begin(st, &err), 0);
    assert_int_equal(propose_referral(st, &o, &in, &r, &err), 0);
    assert_int_equal(r.outcome, PROPOSE_CREATED);
    assert_string_equal(r.urgency, "urgent"); /* the demo verdict's urgency is "now" */
    assert_int_equal(store_commit(st, &err), 0);
    refer_record rec;
    assert_int_equal(refer_get(st, r.referral_id, &rec, &err), 1);
    assert_int_equal(rec.state, REFER_PENDING_APPROVAL);
    assert_string_equal(rec.patient_id, "demo-dlbcl-1");
    assert_string_equal(rec.center_id, r.center_id);
    assert_non_null(rec.payload);
    assert_non_null(strstr(rec.payload, "\"ServiceRequest\""));
    assert_non_null(rec.route_json);
    assert_non_null(rec.explanation);
    refer_record_free(&rec);
    assert_int_equal(store_audit_count(st, r.referral_id), 1);

    /* exactly once: the same verdict again finds it */
    int64_t first = r.referral_id;
    assert_int_equal(store_begin(st, &err), 0);
    assert_int_equal(propose_referral(st, &o, &in, &r, &err), 0);
    assert_int_equal(r.outcome, PROPOSE_EXISTS);
    assert_int_equal(r.referral_id, first);
    assert_int_equal(r.n_cancelled, 0);
    assert_int_equal(store_commit(st, &err), 0);
    assert_int_equal(refer_each(st, -1, NULL, NULL, NULL, &err), 1);

    /* a verdict that no longer calls for a referral withdraws the pending proposal */
    screened none;
    screen_demo(&none, true);
    assert_int_not_equal(elig_result_category(none.r), ELIG_ELIGIBLE);
    propose_input in2 = input_for(&none);
    assert_int_equal(store_begin(st, &err), 0);
    assert_int_equal(propose_referral(st, &o, &in2, &r, &err), 0);
    assert_int_equal(r.outcome, PROPOSE_NOT_CANDIDATE);
    assert_int_equal(r.n_cancelled, 1);
    assert_int_equal(r.cancelled[0], first);
    assert_int_equal(store_commit(st, &err), 0);
    assert_int_equal(refer_get(st, first, &rec, &err), 1);
    assert_int_equal(rec.state, REFER_CANCELLED);
    refer_record_free(&rec);
    screened_free(&none);
    store_close(st);
    screened_free(&s);
}

static void test_needs_a_transaction(void **state)
{
    (void)state;
    screened s;
    screen_demo(&s, false);
    store *st = open_fresh("notx.db");
    propose_opts o = opts_for(REFER_MODE_APPROVAL);
    propose_input in = input_for(&s);
    propose_result r;
    fhir_error err = {0};
    assert_int_equal(propose_referral(st, &o, &in, &r, &err), -1);
    assert_non_null(strstr(err.msg, "open transaction"));
    assert_int_equal(refer_each(st, -1, NULL, NULL, NULL, &err), 0);
    store_close(st);
    screened_free(&s);
}

static void test_auto_mode(void **state)
{
    (void)state;
    screened s;
    screen_demo(&s, false);
    store *st = open_fresh("auto.db");
    propose_opts o = opts_for(REFER_MODE_AUTO);
    propose_input in = input_for(&s);
    propose_result r;
    fhir_error err = {0};
    assert_int_equal(store_begin(st, &err), 0);
    assert_int_equal(propose_referral(st, &o, &in, &r, &err), 0);
    assert_int_equal(store_commit(st, &err), 0);
    assert_int_equal(r.outcome, PROPOSE_CREATED);
    refer_record rec;
    assert_int_equal(refer_get(st, r.referral_id, &rec, &err), 1);
    assert_int_equal(rec.state, REFER_APPROVED);
    assert_string_equal(rec.mode, "auto");
    refer_record_free(&rec);
    assert_int_equal(store_audit_count(st, r.referral_id), 2); /* create + standing order */
    store_close(st);
    screened_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commits_with_the_transaction),
        cmocka_unit_test(test_needs_a_transaction),
        cmocka_unit_test(test_auto_mode),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
