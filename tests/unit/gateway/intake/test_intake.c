/* intake: the route table (every route with its role), the Bundle checks, the transaction
 * (ifNoneExist: a repeat stores nothing and answers the same ids; nothing stored on refusal)
 * and the acts on a Task, against a real SQLite store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fhir_arena.h"
#include "fhir_json.h"
#include "intake.h"
#include "intake_bundle.h"
#include "intake_task.h"

static char dir[] = "/tmp/cartgate-intake-XXXXXX";

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static store *fresh(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fhir_error err = {0};
    store *s = store_open(path, 0, &err);
    if (!s)
        fail_msg("store_open: %s", err.msg);
    return s;
}

static void test_routes(void **state)
{
    (void)state;
    static const struct {
        const char *method, *pattern;
    } want[] = {
        {"GET", "/fhir/metadata"},   {"GET", "/fhir/.well-known/smart-configuration"}, {"POST", "/fhir/auth/token"},
        {"POST", "/fhir"},           {"GET", "/fhir/ServiceRequest"}, {"GET", "/fhir/ServiceRequest/{id}"},
        {"GET", "/fhir/Task"},       {"GET", "/fhir/Task/{id}"},
        {"GET", "/fhir/ServiceRequest/{id}/_history"}, {"GET", "/fhir/Task/{id}/_history"},
        {"PUT", "/fhir/Task/{id}"},
    };
    size_t n;
    const serve_route *r = intake_routes(&n);
    assert_int_equal(n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(r[i].method, want[i].method);
        assert_string_equal(r[i].pattern, want[i].pattern);
        /* open to the listener; the handler checks the site's token (or needs none: discovery,
         * the token endpoint itself) */
        assert_int_equal(r[i].need, ROLE_PUBLIC);
        assert_int_equal(r[i].flags, SERVE_OWN_AUTH);
    }
    fhir_error err = {0};
    assert_int_equal(serve_check_routes(r, n, &err), 0);
}

#define PATIENT                                                                                            \
    "{\"fullUrl\":\"urn:uuid:p\",\"resource\":{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"urn:s\","  \
    "\"value\":\"P1\"}]},\"request\":{\"method\":\"POST\",\"url\":\"Patient\",\"ifNoneExist\":\"identifier=urn:s|P1\"}}"
#define SR                                                                                                 \
    "{\"fullUrl\":\"urn:uuid:s\",\"resource\":{\"resourceType\":\"ServiceRequest\",\"status\":\"active\","          \
    "\"intent\":\"order\",\"priority\":\"urgent\",\"identifier\":[{\"system\":\"urn:r\",\"value\":\"R1\"}],"       \
    "\"subject\":{\"reference\":\"urn:uuid:p\"}},\"request\":{\"method\":\"POST\",\"url\":\"ServiceRequest\","     \
    "\"ifNoneExist\":\"identifier=urn:r|R1\"}}"
#define TASK                                                                                               \
    "{\"fullUrl\":\"urn:uuid:t\",\"resource\":{\"resourceType\":\"Task\",\"status\":\"requested\",\"intent\":"    \
    "\"order\",\"identifier\":[{\"system\":\"urn:t\",\"value\":\"T1\"}],\"focus\":{\"reference\":\"urn:uuid:s\"}," \
    "\"for\":{\"reference\":\"urn:uuid:p\"}},\"request\":{\"method\":\"POST\",\"url\":\"Task\","                   \
    "\"ifNoneExist\":\"identifier=urn:t|T1\"}}"
#define BUNDLE(...) "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[" __VA_ARGS__ "]}"

static const fhir_node *parse(fhir_arena *a, const char *s)
{
    fhir_error err = {0};
    const fhir_node *n = fhir_json_parse(a, s, strlen(s), NULL, &err);
    if (!n)
        fail_msg("parse: %s", err.msg);
    return n;
}

static void test_check(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    assert_int_equal(intake_bundle_check(parse(a, BUNDLE(PATIENT "," SR "," TASK)), &err), 0);
    assert_int_equal(intake_bundle_check(parse(a, BUNDLE(PATIENT "," TASK)), &err), -1);
    assert_int_equal(err.code, 422);
    assert_non_null(strstr(err.msg, "no ServiceRequest"));
    assert_int_equal(intake_bundle_check(parse(a, BUNDLE(PATIENT "," SR)), &err), -1);
    assert_non_null(strstr(err.msg, "no Task"));
    assert_int_equal(intake_bundle_check(parse(a, "{\"resourceType\":\"Patient\"}"), &err), -1);
    assert_int_equal(err.code, 400);
    /* a reference to something not in the Bundle */
    const char *bad = BUNDLE(SR "," TASK);
    assert_int_equal(intake_bundle_check(parse(a, bad), &err), -1);
    assert_non_null(strstr(err.msg, "reference \"urn:uuid:p\" at ServiceRequest.subject.reference does not resolve"));
    /* an update entry, an unsupported ifNoneExist */
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", BUNDLE(PATIENT "," SR "," TASK));
    char *m = strstr(buf, "\"method\":\"POST\"");
    memcpy(m, "\"method\":\"PUT\" ", 15);
    assert_int_equal(intake_bundle_check(parse(a, buf), &err), -1);
    assert_non_null(strstr(err.msg, "request.method must be POST"));
    snprintf(buf, sizeof buf, "%s", BUNDLE(PATIENT "," SR "," TASK));
    m = strstr(buf, "identifier=urn:s|P1");
    memcpy(m, "family=Smith&x=1111", 19);
    assert_int_equal(intake_bundle_check(parse(a, buf), &err), -1);
    assert_non_null(strstr(err.msg, "is not supported"));
    fhir_arena_free(a);
}

static int64_t count(store *st, const char *type)
{
    fhir_error err = {0};
    return store_intake_res_since(st, type, 0, 0, 0, NULL, NULL, &err);
}

static void test_transaction(void **state)
{
    (void)state;
    store *st = fresh("tx.db");
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_buf r1, r2;
    fhir_buf_init(&r1, INTAKE_RESPONSE_MAX);
    fhir_buf_init(&r2, INTAKE_RESPONSE_MAX);
    intake_tx_result res;
    const fhir_node *b = parse(a, BUNDLE(PATIENT "," SR "," TASK));
    assert_int_equal(intake_transaction(st, b, "site-a", &r1, &res, &err), 0);
    assert_int_equal(res.created, 3);
    assert_int_equal(res.n_referrals, 1);
    assert_int_equal(store_intake_ref_count(st, "received"), 1);
    /* the same Bundle again: nothing stored, the same answer (ids and versions) */
    assert_int_equal(intake_transaction(st, b, "site-a", &r2, &res, &err), 0);
    assert_int_equal(res.created, 0);
    assert_int_equal(res.matched, 3);
    assert_int_equal(res.n_referrals, 0);
    const fhir_node *x1 = parse(a, fhir_buf_cstr(&r1)), *x2 = parse(a, fhir_buf_cstr(&r2));
    for (size_t i = 0; i < 3; i++) {
        char p[64];
        snprintf(p, sizeof p, "entry[%zu].response.location", i);
        assert_string_equal(fhir_node_path_str(x1, p), fhir_node_path_str(x2, p));
    }
    assert_string_equal(fhir_node_path_str(x1, "entry[2].response.status"), "201 Created");
    assert_string_equal(fhir_node_path_str(x2, "entry[2].response.status"), "200 OK");
    assert_int_equal(count(st, "Task"), 1);
    assert_int_equal(store_intake_ref_count(st, NULL), 1);
    /* a refused Bundle stores nothing */
    fhir_buf_reset(&r1);
    assert_int_equal(intake_transaction(st, parse(a, BUNDLE(SR "," TASK)), "site-a", &r1, &res, &err), -1);
    assert_int_equal(count(st, "Task"), 1);
    assert_int_equal(r1.len, 0);
    fhir_buf_free(&r1);
    fhir_buf_free(&r2);
    fhir_arena_free(a);
    store_close(st);
}

typedef struct task_seen {
    char json[8192];
    int64_t version;
} task_seen;

static int task_cb(void *ctx, const store_intake_res *r)
{
    task_seen *t = ctx;
    snprintf(t->json, sizeof t->json, "%s", r->json);
    t->version = r->version;
    return 0;
}

typedef struct hist {
    char status[8][24];
    int64_t version[8];
    size_t n;
} hist;

static int hist_cb(void *ctx, const store_intake_res *x)
{
    hist *h = ctx;
    if (h->n < 8) {
        const char *p = strstr(x->json, "\"status\":\"");
        if (p)
            sscanf(p + 10, "%23[^\"]", h->status[h->n]);
        h->version[h->n] = x->version;
    }
    h->n++;
    return 0;
}

static void test_acts(void **state)
{
    (void)state;
    store *st = fresh("acts.db");
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_buf r;
    fhir_buf_init(&r, INTAKE_RESPONSE_MAX);
    intake_tx_result res;
    assert_int_equal(intake_transaction(st, parse(a, BUNDLE(PATIENT "," SR "," TASK)), "site-a", &r, &res, &err), 0);
    int64_t id = res.referrals[0];
    store_actor who = {.name = "nurse.kim", .user_id = 7, .role = "intake"};
    /* bad input */
    intake_act_in decl = {.kind = INTAKE_ACT_DECLINE, .code = "made-up"};
    assert_int_equal(intake_act(st, id, &decl, &who, NULL, &err), -1);
    assert_int_equal(err.code, 400);
    intake_act_in sched_bad = {.kind = INTAKE_ACT_SCHEDULE, .when = "2026-13-01T10:00"};
    assert_int_equal(intake_act(st, id, &sched_bad, &who, NULL, &err), -1);
    /* accept, then schedule: Task status and BSeR business status, a new version each */
    intake_act_in acc = {.kind = INTAKE_ACT_ACCEPT, .text = "welcome"};
    assert_int_equal(intake_act(st, id, &acc, &who, NULL, &err), 0);
    intake_act_in sch = {.kind = INTAKE_ACT_SCHEDULE, .when = "2026-12-14T09:30"};
    assert_int_equal(intake_act(st, id, &sch, &who, NULL, &err), 0);
    task_seen t = {0};
    fhir_buf_reset(&r);
    const fhir_node *resp = NULL;
    (void)resp;
    int64_t task_id = 0;
    store_intake_res_since(st, "Task", 0, 0, 0, task_cb, &t, &err);
    assert_int_equal(t.version, 3);
    const fhir_node *task = parse(a, t.json);
    task_id = strtoll(fhir_node_str(fhir_node_get(task, "id")), NULL, 10);
    assert_true(task_id > 0);
    assert_string_equal(fhir_node_str(fhir_node_get(task, "status")), "in-progress");
    assert_string_equal(fhir_node_path_str(task, "businessStatus.coding[0].code"), "5.1.1");
    assert_string_equal(fhir_node_path_str(task, "meta.versionId"), "3");
    assert_int_equal(fhir_node_count(fhir_node_get(task, "note")), 2);
    assert_non_null(strstr(fhir_node_path_str(task, "note[1].text"), "Consult scheduled for 2026-12-14 09:30"));
    assert_int_equal(store_intake_ref_count(st, "in-progress"), 1);
    /* the site cancels at a stale version: 412; at the current one: cancelled (6.0), then over */
    intake_act_in cancel = {.kind = INTAKE_ACT_CANCEL, .if_version = 2};
    assert_int_equal(intake_act(st, id, &cancel, &who, NULL, &err), -1);
    assert_int_equal(err.code, 412);
    cancel.if_version = 3;
    char *json = NULL;
    assert_int_equal(intake_act(st, id, &cancel, &who, &json, &err), 0);
    assert_non_null(strstr(json, "\"status\":\"cancelled\""));
    assert_non_null(strstr(json, "\"code\":\"6.0\""));
    free(json);
    assert_int_equal(intake_act(st, id, &acc, &who, NULL, &err), -1);
    assert_int_equal(err.code, 409);
    /* every act audited with the person */
    assert_int_equal(store_intake_audit_list(st, id, NULL, NULL, &err), 4); /* received + 3 acts */
    /* and every version of the Task kept, newest first: what GET Task/{id}/_history answers */
    hist h = {0};
    assert_int_equal(store_intake_res_history(st, "Task", task_id, 0, hist_cb, &h, &err), 4);
    assert_string_equal(h.status[0], "cancelled");
    assert_string_equal(h.status[1], "in-progress");
    assert_string_equal(h.status[2], "accepted");
    assert_string_equal(h.status[3], "received"); /* as the center stored it on arrival */
    assert_int_equal(h.version[0], 4);
    assert_int_equal(h.version[3], 1);
    fhir_buf_free(&r);
    fhir_arena_free(a);
    store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_transaction),
        cmocka_unit_test(test_acts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
