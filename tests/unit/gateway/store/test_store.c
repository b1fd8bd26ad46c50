/* Unit tests: the SQLite store on a real file in a temp dir — migration from empty, WAL and
 * synchronous=FULL, refusing a newer schema, transactions, audit, cursors, resource cache,
 * verdicts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <unistd.h>
#include <cmocka.h>

#include "store.h"

static char tmpdir[256];
static char dbpath[512];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cartgate-store-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    return 0;
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

static int64_t int_pragma(store *s, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void test_migrate_from_empty(void **state)
{
    (void)state;
    store *s = open_fresh("m.db");
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    assert_int_equal(int_pragma(s, "PRAGMA synchronous"), 2); /* FULL */
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(store_db(s), "PRAGMA journal_mode", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    const char *tables[] = {"referrals", "audit", "cursors", "resources", "verdicts"};
    for (size_t i = 0; i < 5; i++) {
        char q[128];
        snprintf(q, sizeof q, "SELECT count(*) FROM sqlite_master WHERE name = '%s'", tables[i]);
        assert_int_equal(int_pragma(s, q), 1);
    }
    store_close(s);
    /* reopening does not re-run migrations (would fail on CREATE TABLE) */
    fhir_error err = {0};
    s = store_open(dbpath, 0, &err);
    assert_non_null(s);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    store_close(s);
}

static void test_newer_schema_refused(void **state)
{
    (void)state;
    store *s = open_fresh("newer.db");
    char *msg = NULL;
    assert_int_equal(sqlite3_exec(store_db(s), "PRAGMA user_version = 99", NULL, NULL, &msg),
                     SQLITE_OK);
    store_close(s);
    fhir_error err = {0};
    assert_null(store_open(dbpath, 0, &err));
    assert_non_null(strstr(err.msg, "schema version 99 is newer"));
}

static void test_unopenable_path(void **state)
{
    (void)state;
    fhir_error err = {0};
    assert_null(store_open("/nonexistent-dir/x.db", 0, &err));
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x.db"));
}

static void test_transactions_and_audit(void **state)
{
    (void)state;
    store *s = open_fresh("tx.db");
    fhir_error err = {0};
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_begin(s, &err), -1);
    assert_non_null(strstr(err.msg, "nested"));
    assert_int_equal(store_audit(s, "tester", "rolled-back", 0, NULL, NULL, "x", &err), 0);
    store_rollback(s);
    assert_int_equal(store_audit_count(s, 0), 0);
    assert_int_equal(store_audit(s, "tester", "kept", 0, NULL, NULL, NULL, &err), 0);
    assert_int_equal(store_audit_count(s, 0), 1);
    assert_int_equal(store_commit(s, &err), -1); /* no transaction open */
    store_close(s);
}

static int collect(void *ctx, const char *type, const char *id, const char *json)
{
    (void)json;
    char *acc = ctx;
    strcat(acc, type);
    strcat(acc, "/");
    strcat(acc, id);
    strcat(acc, ";");
    return 0;
}

static void test_cursors_resources_verdicts(void **state)
{
    (void)state;
    store *s = open_fresh("data.db");
    fhir_error err = {0};
    char *v = NULL;
    assert_int_equal(store_cursor_get(s, "ehr", "Condition", &v, &err), 0);
    assert_null(v);
    assert_int_equal(store_cursor_put(s, "ehr", "Condition", "2026-01-01T00:00:00Z", &err), 0);
    assert_int_equal(store_cursor_put(s, "ehr", "Condition", "2026-02-01T00:00:00Z", &err), 0);
    assert_int_equal(store_cursor_get(s, "ehr", "Condition", &v, &err), 0);
    assert_string_equal(v, "2026-02-01T00:00:00Z");
    free(v);

    assert_int_equal(store_resource_put(s, "p1", "Patient", "p1", "1", NULL, "{}", &err), 0);
    assert_int_equal(store_resource_put(s, "p1", "Condition", "c1", "1", NULL, "{}", &err), 0);
    assert_int_equal(store_resource_put(s, "p1", "Condition", "c1", "2", NULL, "{\"v\":2}", &err), 0);
    assert_int_equal(store_resource_put(s, "p2", "Condition", "c9", "1", NULL, "{}", &err), 0);
    char acc[256] = "";
    assert_int_equal(store_resource_each(s, "p1", collect, acc, &err), 2);
    assert_string_equal(acc, "Condition/c1;Patient/p1;");

    assert_int_equal(store_verdict_get(s, "p1", NULL, NULL, NULL, &err), 0);
    assert_int_equal(store_verdict_put(s, "p1", "sha256:abc", "eligible", "{}", "{\"x\":1}", &err), 0);
    assert_int_equal(store_verdict_put(s, "p1", "sha256:def", "possible", "{}", "{\"x\":2}", &err), 0);
    char *h = NULL, *cat = NULL, *vj = NULL;
    assert_int_equal(store_verdict_get(s, "p1", &h, &cat, &vj, &err), 1);
    assert_string_equal(h, "sha256:def");
    assert_string_equal(cat, "possible");
    assert_string_equal(vj, "{\"x\":2}");
    free(h);
    free(cat);
    free(vj);
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrate_from_empty),
        cmocka_unit_test(test_newer_schema_refused),
        cmocka_unit_test(test_unopenable_path),
        cmocka_unit_test(test_transactions_and_audit),
        cmocka_unit_test(test_cursors_resources_verdicts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
