/* Unit tests: referral state machine on a real SQLite store — placer id determinism, create
 * idempotency, approval and auto modes, every illegal transition refused, audit rows, Task
 * status mapping, crash safety (a child process killed with SIGKILL mid-run), and the acts of a
 * person (refer_do): audited with name, user id, role, source and reason; decline needs a
 * reason and a pending proposal; refusals carry 409 / 400. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "fhir_log.h"
#include "referral.h"
#include "store.h"

static char tmpdir[256];
static char dbpath[512];

static int setup(void **state)
{
    (void)state;
    fhir_log_set_level(FHIR_LOG_WARN);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cartgate-referral-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static store *open_fresh(const char *name)
{
    snprintf(dbpath, sizeof dbpath, "%s/%s", tmpdir, name);
    unlink(dbpath);
    fhir_error err = {0};
    store *s = store_open(dbpath, 0, &err);
    if (!s)
        fail_msg("store_open: %s", err.msg);
    return s;
}

static const char *const IND[] = {"axi-cel:lbcl_2l", "liso-cel:lbcl_2l"};

static refer_request req_for(const char *patient, const char *center, refer_mode mode)
{
    refer_request r = {
        .site_id = "community-1", .patient_id = patient, .center_id = center,
        .indications = IND, .n_indications = 2, .urgency = "urgent",
        .explanation = "Eligible: refractory LBCL after 1L", .verdict_json = "{\"v\":1}",
        .mode = mode, .actor = "screener",
    };
    return r;
}

static void test_placer_id(void **state)
{
    (void)state;
    fhir_error err = {0};
    char a[REFER_PLACER_MAX], b[REFER_PLACER_MAX], c[REFER_PLACER_MAX];
    const char *fwd[] = {"axi-cel:lbcl_2l", "liso-cel:lbcl_2l"};
    const char *rev[] = {"liso-cel:lbcl_2l", "axi-cel:lbcl_2l", "axi-cel:lbcl_2l"};
    assert_int_equal(refer_placer_id("s", "p", fwd, 2, "ctr", a, &err), 0);
    assert_int_equal(refer_placer_id("s", "p", rev, 3, "ctr", b, &err), 0);
    assert_string_equal(a, b); /* order and duplicates do not matter */
    assert_int_equal(strlen(a), 35);
    assert_memory_equal(a, "CG-", 3);
    assert_int_equal(refer_placer_id("s", "p", fwd, 2, "other", c, &err), 0);
    assert_string_not_equal(a, c);
    assert_int_equal(refer_placer_id("s", "p", fwd, 1, "ctr", c, &err), 0);
    assert_string_not_equal(a, c);
    /* field separation: ("ab","c") differs from ("a","bc") */
    assert_int_equal(refer_placer_id("ab", "c", fwd, 1, "x", b, &err), 0);
    assert_int_equal(refer_placer_id("a", "bc", fwd, 1, "x", c, &err), 0);
    assert_string_not_equal(b, c);
    assert_int_equal(refer_placer_id("s", "", fwd, 1, "x", c, &err), -1);
    assert_int_equal(refer_placer_id("s", "p", fwd, 0, "x", c, &err), -1);
}

static void test_create_approve_flow(void **state)
{
    (void)state;
    store *s = open_fresh("flow.db");
    fhir_error err = {0};
    refer_request rq = req_for("pat-1", "lakeshore-chicago", REFER_MODE_APPROVAL);
    int64_t id, id2;
    bool created;
    assert_int_equal(refer_create(s, &rq, &id, &created, &err), 0);
    assert_true(created);
    assert_int_equal(refer_create(s, &rq, &id2, &created, &err), 0);
    assert_false(created);
    assert_int_equal(id, id2);

    refer_record r;
    assert_int_equal(refer_get(s, id, &r, &err), 1);
    assert_int_equal(r.state, REFER_PENDING_APPROVAL);
    assert_string_equal(r.mode, "approval");
    assert_string_equal(r.urgency, "urgent");
    assert_string_equal(r.indications, "axi-cel:lbcl_2l,liso-cel:lbcl_2l");
    char placer[REFER_PLACER_MAX];
    assert_int_equal(refer_placer_id("community-1", "pat-1", IND, 2, "lakeshore-chicago",
                                     placer, &err), 0);
    assert_string_equal(r.placer_id, placer);
    refer_record_free(&r);
    assert_int_equal(store_audit_count(s, id), 1);

    /* nothing can be sent before approval */
    assert_int_equal(refer_transition(s, id, REFER_SENDING, "sender", NULL, &err), -1);
    assert_non_null(strstr(err.msg, "cannot go from pending_approval to sending"));
    assert_int_equal(err.code, 409);

    assert_int_equal(refer_approve(s, id, "dr.house", &err), 0);
    assert_int_equal(refer_transition(s, id, REFER_SENDING, "sender", NULL, &err), 0);
    /* cannot cancel what may already be at the center */
    assert_int_equal(refer_cancel(s, id, "dr.house", "changed mind", &err), -1);
    assert_non_null(strstr(err.msg, "cannot go from sending to cancelled"));
    assert_int_equal(refer_record_attempt(s, id, 503, "HTTP 503", "busy", 12345, &err), 0);
    assert_int_equal(refer_mark_sent(s, id, "ServiceRequest/9", "Task/10", NULL, &err), 0);
    assert_int_equal(refer_get(s, id, &r, &err), 1);
    assert_int_equal(r.state, REFER_SENT);
    assert_int_equal(r.attempts, 1);
    assert_string_equal(r.center_task_ref, "Task/10");
    refer_record_free(&r);

    /* center accepts, then completes (BSeR 3.0, 7.0) */
    bool changed;
    assert_int_equal(refer_apply_task(s, id, "accepted", "3.0", &changed, &err), 0);
    assert_true(changed);
    assert_int_equal(refer_apply_task(s, id, "accepted", "3.0", &changed, &err), 0);
    assert_false(changed); /* same Task state polled again: no-op, no audit row */
    assert_int_equal(refer_apply_task(s, id, "completed", "7.0", &changed, &err), 0);
    assert_true(changed);
    /* a stale poll cannot move it backwards */
    assert_int_equal(refer_apply_task(s, id, "accepted", "3.0", &changed, &err), 0);
    assert_false(changed);
    assert_int_equal(refer_get(s, id, &r, &err), 1);
    assert_int_equal(r.state, REFER_COMPLETED);
    assert_string_equal(r.business_status, "3.0"); /* what the center last said is kept */
    refer_record_free(&r);
    /* create, approve, sending, attempt, sent, accepted, completed, stale observation */
    assert_int_equal(store_audit_count(s, id), 8);
    /* terminal */
    assert_int_equal(refer_cancel(s, id, "x", NULL, &err), -1);
    assert_non_null(strstr(err.msg, "none (terminal)"));
    store_close(s);
}

static void test_every_illegal_transition_refused(void **state)
{
    (void)state;
    store *s = open_fresh("illegal.db");
    fhir_error err = {0};
    /* drive a referral into each state, then try every target */
    static const refer_state path[][6] = {
        {REFER_PENDING_APPROVAL},
        {REFER_APPROVED},
        {REFER_APPROVED, REFER_SENDING},
        {REFER_APPROVED, REFER_SENDING, REFER_SENT},
        {REFER_APPROVED, REFER_SENDING, REFER_SENT, REFER_ACCEPTED},
        {REFER_APPROVED, REFER_SENDING, REFER_SENT, REFER_DECLINED},
        {REFER_APPROVED, REFER_SENDING, REFER_SENT, REFER_SCHEDULED},
        {REFER_APPROVED, REFER_SENDING, REFER_SENT, REFER_COMPLETED},
        {REFER_CANCELLED},
        {REFER_APPROVED, REFER_SENDING, REFER_FAILED},
    };
    int n_allowed = 0, n_refused = 0;
    for (size_t k = 0; k < sizeof path / sizeof path[0]; k++) {
        refer_state start = REFER_PENDING_APPROVAL;
        for (size_t j = 0; j < 6 && (j == 0 || path[k][j]); j++)
            start = path[k][j];
        for (int to = 0; to < REFER_N_STATES; to++) {
            char pat[32];
            snprintf(pat, sizeof pat, "p-%zu-%d", k, to);
            refer_request rq = req_for(pat, "c", REFER_MODE_APPROVAL);
            int64_t id;
            assert_int_equal(refer_create(s, &rq, &id, NULL, &err), 0);
            for (size_t j = 0; j < 6 && path[k][j]; j++)
                assert_int_equal(refer_transition(s, id, path[k][j], "t", NULL, &err), 0);
            refer_record r;
            assert_int_equal(refer_get(s, id, &r, &err), 1);
            assert_int_equal(r.state, start);
            refer_record_free(&r);
            int64_t audits = store_audit_count(s, id);
            int rc = refer_transition(s, id, (refer_state)to, "t", NULL, &err);
            if (refer_transition_allowed(start, (refer_state)to)) {
                assert_int_equal(rc, 0);
                assert_int_equal(store_audit_count(s, id), audits + 1);
                n_allowed++;
            } else {
                assert_int_equal(rc, -1);
                assert_non_null(strstr(err.msg, refer_state_name(start)));
                assert_int_equal(store_audit_count(s, id), audits); /* nothing written */
                assert_int_equal(refer_get(s, id, &r, &err), 1);
                assert_int_equal(r.state, start);
                refer_record_free(&r);
                n_refused++;
            }
        }
    }
    assert_int_equal(n_allowed, 2 + 2 + 2 + 6 + 5 + 0 + 4 + 0 + 0 + 2);
    assert_int_equal(n_allowed + n_refused, 10 * REFER_N_STATES);
    assert_false(refer_transition_allowed(REFER_COMPLETED, REFER_N_STATES));
    /* unknown id */
    assert_int_equal(refer_approve(s, 424242, "t", &err), -1);
    assert_non_null(strstr(err.msg, "does not exist"));
    store_close(s);
}

static void test_auto_mode_retry_payload(void **state)
{
    (void)state;
    store *s = open_fresh("auto.db");
    fhir_error err = {0};
    refer_request rq = req_for("pat-auto", "c1", REFER_MODE_AUTO);
    rq.payload = "{\"resourceType\":\"Bundle\"}";
    int64_t id;
    assert_int_equal(refer_create(s, &rq, &id, NULL, &err), 0);
    refer_record r;
    assert_int_equal(refer_get(s, id, &r, &err), 1);
    assert_int_equal(r.state, REFER_APPROVED);
    assert_string_equal(r.mode, "auto");
    refer_record_free(&r);
    assert_int_equal(store_audit_count(s, id), 2);
    assert_int_equal(refer_retry(s, id, "op", &err), -1);
    assert_non_null(strstr(err.msg, "only for failed"));
    assert_int_equal(refer_set_payload(s, id, "{\"v\":2}", &err), 0);
    assert_int_equal(refer_transition(s, id, REFER_SENDING, "sender", NULL, &err), 0);
    assert_int_equal(refer_set_payload(s, id, "{\"v\":3}", &err), -1);
    assert_non_null(strstr(err.msg, "frozen"));
    assert_int_equal(refer_record_attempt(s, id, 422, "HTTP 422", "{\"resourceType\":\"OperationOutcome\"}", 0, &err), 0);
    assert_int_equal(refer_mark_failed(s, id, 422, "HTTP 422 Unprocessable", "{\"oo\":1}", &err), 0);
    assert_int_equal(refer_get(s, id, &r, &err), 1);
    assert_int_equal(r.state, REFER_FAILED);
    assert_int_equal(r.last_status, 422);
    assert_string_equal(r.last_response, "{\"oo\":1}");
    assert_string_equal(r.payload, "{\"v\":2}");
    refer_record_free(&r);
    assert_int_equal(refer_retry(s, id, "op", &err), 0);
    assert_int_equal(refer_get(s, id, &r, &err), 1);
    assert_int_equal(r.state, REFER_APPROVED);
    assert_int_equal(r.attempts, 0);
    refer_record_free(&r);
    rq.urgency = "whenever";
    rq.patient_id = "other";
    assert_int_equal(refer_create(s, &rq, &id, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "urgency"));
    int64_t counts[REFER_N_STATES];
    assert_int_equal(refer_count_by_state(s, counts, &err), 0);
    assert_int_equal(counts[REFER_APPROVED], 1);
    store_close(s);
}

static void test_task_mapping(void **state)
{
    (void)state;
    refer_state st;
    struct { const char *status, *bs; int want; } cases[] = {
        {"requested", NULL, REFER_SENT},
        {"received", "2.0", REFER_SENT},
        {"accepted", "3.0", REFER_ACCEPTED},
        {"in-progress", "5.1.1", REFER_SCHEDULED},
        {"in-progress", NULL, REFER_ACCEPTED},
        {"rejected", "4.0", REFER_DECLINED},
        {"in-progress", "4.0", REFER_DECLINED},
        {"cancelled", "6.0", REFER_CANCELLED},
        {"completed", "7.0", REFER_COMPLETED},
        {"requested", "7.0", REFER_COMPLETED},       /* businessStatus beats open status */
        {"completed", "3.0", REFER_COMPLETED},       /* terminal status beats businessStatus */
        {"failed", NULL, REFER_FAILED},
        {"on-hold", NULL, -1},
        {"in-progress", "5.2", REFER_ACCEPTED},      /* 5.2 implies nothing; status does */
        {NULL, "5.2", -1},
        {NULL, NULL, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = refer_state_from_task(cases[i].status, cases[i].bs, &st);
        if (cases[i].want < 0)
            assert_int_equal(rc, -1);
        else {
            assert_int_equal(rc, 0);
            if ((int)st != cases[i].want)
                fail_msg("case %zu: %s/%s -> %s", i, cases[i].status, cases[i].bs,
                         refer_state_name(st));
        }
    }
}

static void test_list_filters(void **state)
{
    (void)state;
    store *s = open_fresh("list.db");
    fhir_error err = {0};
    for (int i = 0; i < 5; i++) {
        char p[16];
        snprintf(p, sizeof p, "p%d", i);
        refer_request rq = req_for(p, i % 2 ? "odd" : "even", i < 2 ? REFER_MODE_AUTO : REFER_MODE_APPROVAL);
        int64_t id;
        assert_int_equal(refer_create(s, &rq, &id, NULL, &err), 0);
    }
    assert_int_equal(refer_each(s, -1, NULL, NULL, NULL, &err), 5);
    assert_int_equal(refer_each(s, REFER_APPROVED, NULL, NULL, NULL, &err), 2);
    assert_int_equal(refer_each(s, -1, "odd", NULL, NULL, &err), 2);
    assert_int_equal(refer_each(s, REFER_PENDING_APPROVAL, "even", NULL, NULL, &err), 2);
    store_close(s);
}

/* Crash safety: a child creates referrals one by one (auto mode) and marks each sending, reporting
 * each committed step on a pipe; the parent SIGKILLs it at a seeded moment. After reopening
 * every reported referral exists with its placer id, in a state at least as far as reported,
 * with a consistent audit trail, and re-creating returns the same row. */
static void crash_round(unsigned seed, int *max_seen)
{
    snprintf(dbpath, sizeof dbpath, "%s/crash-%u.db", tmpdir, seed);
    unlink(dbpath);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        fhir_error err = {0};
        store *s = store_open(dbpath, 0, &err);
        if (!s)
            _exit(3);
        for (int i = 0; i < 1000; i++) {
            char p[32];
            snprintf(p, sizeof p, "crash-pat-%d", i);
            refer_request rq = req_for(p, "ctr", REFER_MODE_AUTO);
            int64_t id;
            if (refer_create(s, &rq, &id, NULL, &err))
                _exit(4);
            if (write(fds[1], "c", 1) != 1)
                _exit(5);
            if (refer_transition(s, id, REFER_SENDING, "sender", NULL, &err))
                _exit(6);
            if (write(fds[1], "s", 1) != 1)
                _exit(5);
        }
        _exit(0);
    }
    close(fds[1]);
    srand(seed);
    int kill_after = 1 + rand() % 15; /* committed steps to wait for */
    int got = 0;
    char last = 0, ch;
    while (got < kill_after && read(fds[0], &ch, 1) == 1) {
        got++;
        last = ch;
    }
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    /* steps committed after our last read may also exist; never fewer */
    close(fds[0]);
    assert_true(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0));

    fhir_error err = {0};
    store *s = store_open(dbpath, 0, &err);
    if (!s)
        fail_msg("reopen after kill: %s", err.msg);
    int reported_created = (got + 1) / 2;
    int reported_sending = got / 2;
    (void)last;
    int64_t n = refer_each(s, -1, NULL, NULL, NULL, &err);
    assert_true(n >= reported_created);
    if (n > *max_seen)
        *max_seen = (int)n;
    for (int i = 0; i < n; i++) {
        char p[32], placer[REFER_PLACER_MAX];
        snprintf(p, sizeof p, "crash-pat-%d", i);
        assert_int_equal(refer_placer_id("community-1", p, IND, 2, "ctr", placer, &err), 0);
        refer_record r;
        assert_int_equal(refer_get_by_placer(s, placer, &r, &err), 1);
        if (i < reported_sending)
            assert_int_equal(r.state, REFER_SENDING);
        else
            assert_true(r.state == REFER_APPROVED || r.state == REFER_SENDING);
        /* create + auto approve (+ sending) — every state change has its audit row */
        assert_int_equal(store_audit_count(s, r.id), r.state == REFER_SENDING ? 3 : 2);
        int64_t again;
        bool created;
        refer_request rq = req_for(p, "ctr", REFER_MODE_AUTO);
        assert_int_equal(refer_create(s, &rq, &again, &created, &err), 0);
        assert_false(created);
        assert_int_equal(again, r.id);
        refer_record_free(&r);
    }
    store_close(s);
}

static void test_crash_safety_sigkill(void **state)
{
    (void)state;
    int max_seen = 0;
    for (unsigned seed = 1; seed <= 10; seed++)
        crash_round(seed, &max_seen);
    assert_true(max_seen >= 1);
}

typedef struct trail {
    char actor[64], action[16], role[16], source[32], reason[64], to[24];
    int64_t user_id;
    int n;
} trail;

static int last_row(void *ctx, const store_audit_row *row)
{
    trail *t = ctx;
    t->n++;
    snprintf(t->actor, sizeof t->actor, "%s", row->actor ? row->actor : "");
    snprintf(t->action, sizeof t->action, "%s", row->action ? row->action : "");
    snprintf(t->role, sizeof t->role, "%s", row->role ? row->role : "");
    snprintf(t->source, sizeof t->source, "%s", row->source ? row->source : "");
    snprintf(t->reason, sizeof t->reason, "%s", row->reason ? row->reason : "");
    snprintf(t->to, sizeof t->to, "%s", row->to_state ? row->to_state : "");
    t->user_id = row->user_id;
    return 0;
}

static void test_acts_with_a_person(void **state)
{
    (void)state;
    store *s = open_fresh("acts.db");
    fhir_error err = {0};
    int64_t a = 0, b = 0;
    refer_request r1 = req_for("p-act-1", "center-a", REFER_MODE_APPROVAL);
    refer_request r2 = req_for("p-act-2", "center-a", REFER_MODE_APPROVAL);
    assert_int_equal(refer_create(s, &r1, &a, NULL, &err), 0);
    assert_int_equal(refer_create(s, &r2, &b, NULL, &err), 0);

    store_actor ada = {.name = "dr.ada", .user_id = 7, .role = "clinician", .source = "10.0.0.5",
                       .reason = "relapse within 12 months, discussed with the patient"};
    assert_int_equal(refer_do(s, a, REFER_ACT_APPROVE, &ada, &err), 0);
    trail t = {0};
    assert_true(store_audit_list(s, a, 0, 0, last_row, &t, &err) >= 2);
    assert_string_equal(t.actor, "dr.ada");
    assert_string_equal(t.action, "approve");
    assert_int_equal(t.user_id, 7);
    assert_string_equal(t.role, "clinician");
    assert_string_equal(t.source, "10.0.0.5");
    assert_string_equal(t.reason, "relapse within 12 months, discussed with the patient");
    assert_string_equal(t.to, "approved");

    /* approving twice: 409 */
    err.code = 0;
    assert_int_equal(refer_do(s, a, REFER_ACT_APPROVE, &ada, &err), -1);
    assert_int_equal(err.code, 409);
    /* decline: a reason is required (400), only a pending proposal (409) */
    store_actor bo = {.name = "dr.bo", .user_id = 8, .role = "clinician", .source = "10.0.0.6"};
    err.code = 0;
    assert_int_equal(refer_do(s, b, REFER_ACT_DECLINE, &bo, &err), -1);
    assert_int_equal(err.code, 400);
    bo.reason = "patient declined";
    err.code = 0;
    assert_int_equal(refer_do(s, a, REFER_ACT_DECLINE, &bo, &err), -1);
    assert_int_equal(err.code, 409);
    assert_int_equal(refer_do(s, b, REFER_ACT_DECLINE, &bo, &err), 0);
    memset(&t, 0, sizeof t);
    store_audit_list(s, b, 0, 0, last_row, &t, &err);
    assert_string_equal(t.actor, "dr.bo");
    assert_string_equal(t.action, "decline");
    assert_int_equal(t.user_id, 8);
    assert_string_equal(t.reason, "patient declined");
    assert_string_equal(t.to, "cancelled");
    /* retry of a referral that did not fail: 409; no actor: refused */
    err.code = 0;
    assert_int_equal(refer_do(s, a, REFER_ACT_RETRY, &ada, &err), -1);
    assert_int_equal(err.code, 409);
    store_actor nobody = {0};
    assert_int_equal(refer_do(s, a, REFER_ACT_CANCEL, &nobody, &err), -1);
    /* a reason longer than the cap: 400 */
    char longr[REFER_REASON_MAX + 2];
    memset(longr, 'x', sizeof longr - 1);
    longr[sizeof longr - 1] = 0;
    ada.reason = longr;
    err.code = 0;
    assert_int_equal(refer_do(s, a, REFER_ACT_CANCEL, &ada, &err), -1);
    assert_int_equal(err.code, 400);
    refer_act act;
    assert_int_equal(refer_act_parse("decline", &act), 0);
    assert_int_equal(act, REFER_ACT_DECLINE);
    assert_int_equal(refer_act_parse("dismiss", &act), -1);
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_placer_id),
        cmocka_unit_test(test_create_approve_flow),
        cmocka_unit_test(test_every_illegal_transition_refused),
        cmocka_unit_test(test_auto_mode_retry_payload),
        cmocka_unit_test(test_task_mapping),
        cmocka_unit_test(test_list_filters),
        cmocka_unit_test(test_crash_safety_sigkill),
        cmocka_unit_test(test_acts_with_a_person),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
