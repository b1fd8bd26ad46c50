/* Unit tests: the SQLite store on a real file in a temp dir — migration from empty, WAL and
 * synchronous=FULL, refusing a newer schema, adopting the tables older binaries made outside
 * the migrations, transactions and savepoints, audit, cursors, resource cache, patients to
 * screen, verdicts, referral rows (filters, statements re-entered from a callback), the
 * write-back outbox; the per-patient statements' query plans and work (no scan; the same
 * number of SQLite steps for one patient in a small and a large store). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "fhir_bin.h"
#include "fhir_clock.h"
#include "fhir_json.h"
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

/* A second, plain SQLite connection to the same file: the test looks at (and, to build an
 * older database, edits) what the store wrote, without going through the store. */
static sqlite3 *raw_open(void)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
    return db;
}

static void raw_exec(const char *sql)
{
    sqlite3 *db = raw_open();
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
    sqlite3_close(db);
}

static int64_t raw_int(const char *sql)
{
    sqlite3 *db = raw_open();
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void test_migrate_from_empty(void **state)
{
    (void)state;
    store *s = open_fresh("m.db");
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    assert_int_equal(store_synchronous(s), 2); /* FULL */
    /* WAL is a property of the file: a second connection sees it */
    sqlite3 *db = raw_open();
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
    const char *tables[] = {"referrals", "audit", "cursors", "resources", "verdicts",
                            "daemon_dirty", "writeback_outbox"};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        char q[128];
        snprintf(q, sizeof q, "SELECT count(*) FROM sqlite_master WHERE name = '%s'", tables[i]);
        assert_int_equal(raw_int(q), 1);
    }
    store_close(s);
    /* reopening does not re-run migrations (would fail on CREATE TABLE) */
    fhir_error err = {0};
    s = store_open(dbpath, 0, &err);
    assert_non_null(s);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    store_close(s);
}

/* The pending steps run in one transaction: a step that fails leaves the file as it was, the
 * steps before it in the same upgrade included (one commit per step would have kept 13 -> 14). */
static void test_migration_all_or_nothing(void **state)
{
    (void)state;
    store *s = open_fresh("aon.db");
    store_close(s);
    /* a v13 file whose worklist triggers are already gone: step 14 adds referrals.package,
     * step 15 (DROP TRIGGER) then fails */
    raw_exec("ALTER TABLE referrals DROP COLUMN package; PRAGMA user_version = 13;");
    fhir_error err = {0};
    assert_null(store_open(dbpath, 0, &err));
    assert_non_null(strstr(err.msg, "migration 14 -> 15"));
    assert_int_equal(raw_int("PRAGMA user_version"), 13);
    assert_int_equal(raw_int("SELECT count(*) FROM pragma_table_info('referrals') WHERE name = "
                             "'package'"), 0);
}

static void test_newer_schema_refused(void **state)
{
    (void)state;
    store *s = open_fresh("newer.db");
    store_close(s);
    raw_exec("PRAGMA user_version = 99");
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

/* The database and its -wal/-shm files are created 0600 whatever the umask (they hold
 * demographics); an existing file keeps the mode its owner gave it. */
static void test_files_private(void **state)
{
    (void)state;
    mode_t old = umask(022);
    store *s = open_fresh("private.db");
    fhir_error err = {0};
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_audit(s, "test", "write", 0, NULL, NULL, NULL, &err), 0);
    assert_int_equal(store_commit(s, &err), 0);
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[600];
        struct stat sb;
        snprintf(p, sizeof p, "%s%s", dbpath, suffix[i]);
        if (stat(p, &sb) != 0)
            fail_msg("%s missing", p);
        if ((sb.st_mode & 0777) != 0600)
            fail_msg("%s has mode %03o, want 600", p, (unsigned)(sb.st_mode & 0777));
    }
    store_close(s);
    /* an existing file is not re-moded */
    assert_int_equal(chmod(dbpath, 0640), 0);
    s = store_open(dbpath, 0, &err);
    assert_non_null(s);
    struct stat sb;
    assert_int_equal(stat(dbpath, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0640);
    store_close(s);
    umask(old);
}

/* Several processes opening the same new database at once all succeed: the schema version
 * is read again under the write lock before each migration step. */
static void test_concurrent_first_open(void **state)
{
    (void)state;
    for (int round = 0; round < 5; round++) {
        snprintf(dbpath, sizeof dbpath, "%s/race-%d.db", tmpdir, round);
        pid_t kids[4];
        for (int k = 0; k < 4; k++) {
            kids[k] = fork();
            assert_true(kids[k] >= 0);
            if (kids[k] == 0) {
                fhir_error err = {0};
                store *s = store_open(dbpath, 10000, &err);
                if (!s) {
                    fprintf(stderr, "child %d: %s\n", k, err.msg);
                    _exit(1);
                }
                store_close(s);
                _exit(0);
            }
        }
        for (int k = 0; k < 4; k++) {
            int st = 0;
            assert_int_equal(waitpid(kids[k], &st, 0), kids[k]);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fail_msg("round %d: a process could not open the new database", round);
        }
        fhir_error err = {0};
        store *s = store_open(dbpath, 0, &err);
        assert_non_null(s);
        assert_true(store_schema_version(s) > 0);
        store_close(s);
    }
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

static int collect_bytes(void *ctx, const void *data, size_t len)
{
    char *acc = ctx;
    strncat(acc, data, len);
    strcat(acc, ";");
    return 0;
}

static int collect(void *ctx, const char *type, const char *id, const void *data, size_t len)
{
    (void)data;
    (void)len;
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

    assert_int_equal(store_resource_put(s, "p1", "Patient", "p1", "{}", 2, &err), 0);
    assert_int_equal(store_resource_put(s, "p1", "Condition", "c1", "{}", 2, &err), 0);
    assert_int_equal(store_resource_put(s, "p1", "Condition", "c1", "{\"v\":2}", 7, &err), 0);
    assert_int_equal(store_resource_put(s, "p2", "Condition", "c9", "{}", 2, &err), 0);
    char acc[256] = "";
    assert_int_equal(store_resource_each_named(s, "p1", collect, acc, &err), 2);
    /* in no particular order (the daemon orders what it parsed) */
    assert_int_equal(strlen(acc), strlen("Condition/c1;Patient/p1;"));
    assert_non_null(strstr(acc, "Condition/c1;"));
    assert_non_null(strstr(acc, "Patient/p1;"));
    /* the bytes alone, the last ones of each */
    acc[0] = '\0';
    assert_int_equal(store_resource_each(s, "p1", collect_bytes, acc, &err), 2);
    assert_int_equal(strlen(acc), strlen("{};{\"v\":2};"));
    assert_non_null(strstr(acc, "{};"));
    assert_non_null(strstr(acc, "{\"v\":2};"));

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

/* The worklist row of a verdicts row T as migration 11 derived it from the JSON (its text,
 * frozen here: the reference the typed write of migration 15 is compared with, and the body of
 * the triggers a version 14 file has). */
#define OLD_VJ(T) "(CASE WHEN json_valid(" T ".verdict_json) THEN " T ".verdict_json ELSE '{}' END)"
#define OLD_PJ(T) "(CASE WHEN json_valid(" T ".profile_json) THEN " T ".profile_json ELSE '{}' END)"
#define OLD_RELAPSE(T)                                                                          \
    "(SELECT max(json_extract(e.value, '$.date')) FROM json_each(" OLD_PJ(T) ", '$.events') e " \
    "WHERE json_extract(e.value, '$.kind') = 'progression or relapse')"
#define OLD_WORKLIST_COLS(T)                                                                    \
    T ".patient_id, (" T ".category IN ('eligible','possibly_eligible') OR "                    \
    "coalesce(json_extract(" OLD_VJ(T) ", '$.consult.recommendation'), 'none') <> 'none'), "   \
    T ".category, CASE WHEN json_extract(" OLD_VJ(T) ", '$.urgency') = 'now' OR json_extract(" \
    OLD_VJ(T) ", '$.consult.recommendation') = 'refer_now' THEN 0 WHEN json_extract("          \
    OLD_VJ(T) ", '$.urgency') = 'soon' THEN 1 WHEN json_extract(" OLD_VJ(T) ", '$.urgency') = " \
    "'review' OR json_extract(" OLD_VJ(T) ", '$.consult.recommendation') = 'early_consult' "   \
    "THEN 2 ELSE 3 END, json_extract(" OLD_VJ(T) ", '$.urgency'), json_extract(" OLD_VJ(T)     \
    ", '$.consult.recommendation'), json_extract(" OLD_PJ(T) ", '$.facts.primary_disease.value'), " \
    OLD_RELAPSE(T) ", coalesce(" OLD_RELAPSE(T) ", '9999'), coalesce(json_array_length("        \
    OLD_VJ(T) ", '$.missing'), 0), json_extract(" OLD_VJ(T) ", '$.products'), json_extract("   \
    OLD_VJ(T) ", '$.possible_products'), " T ".category || '|' || coalesce(json_extract("        \
    OLD_VJ(T) ", '$.products'), '') || '|' || coalesce(json_extract(" OLD_VJ(T)                \
    ", '$.possible_products'), '') || '|' || coalesce(json_extract(" OLD_VJ(T)                  \
    ", '$.consult.recommendation'), ''), " T ".updated_ms"
#define OLD_WORKLIST_ROW                                                                        \
    "DELETE FROM worklist WHERE patient_id = NEW.patient_id; INSERT INTO worklist SELECT "      \
    OLD_WORKLIST_COLS("NEW") ";"

#define PROFILE_WITH_EVENTS                                                                     \
    "{\"facts\":{\"primary_disease\":{\"value\":\"dlbcl\"}},\"events\":[{\"kind\":"             \
    "\"progression or relapse\",\"date\":\"2026-01-02\"},{\"kind\":\"transplant\",\"date\":"   \
    "\"2025-05-06\"}]}"
#define VERDICT_WITH_PRODUCTS                                                                   \
    "{\"urgency\":\"soon\",\"products\":[\"axi-cel\"],\"missing\":[\"ecog\"],\"consult\":"      \
    "{\"recommendation\":\"refer_now\"}}"
/* what the screener binds for the two texts above (store_verdict_put_screened) */
static const store_worklist_in typed_wl = {.urgency = "soon", .consult = "refer_now",
                                           .disease = "dlbcl", .relapse_day = "2026-01-02",
                                           .missing = 1, .products = "[\"axi-cel\"]"};

/* What the steps after v4 added, removed again so a fresh file looks like an older one. */
/* migration 17 (why a proposal's texts could not be composed) */
/* migration 18 (the center's versions, the site's last-read Task version) */
#define UNDO_AFTER_V17                                                                       \
    "DROP TRIGGER intake_versions_put; DROP TABLE intake_versions; DROP TABLE task_seen;"
#define UNDO_AFTER_V16                                                                       \
    UNDO_AFTER_V17                                                                           \
    "DROP INDEX referrals_unprepared; ALTER TABLE referrals DROP COLUMN compose_cause;"      \
    "ALTER TABLE referrals DROP COLUMN compose_error;"
/* migration 15 (the worklist written with the verdict): version 14's triggers again */
#define UNDO_AFTER_V14                                                                       \
    UNDO_AFTER_V16                                                                           \
    "CREATE TRIGGER worklist_verdict_insert AFTER INSERT ON verdicts BEGIN " OLD_WORKLIST_ROW  \
    " END; CREATE TRIGGER worklist_verdict_update AFTER UPDATE ON verdicts BEGIN "            \
    OLD_WORKLIST_ROW " END;"
/* migration 14 (a proposal's package) */
#define UNDO_AFTER_V13 UNDO_AFTER_V14 "ALTER TABLE referrals DROP COLUMN package;"
/* migration 13 (a center's intake) */
#define UNDO_AFTER_V12                                                                       \
    UNDO_AFTER_V13                                                                           \
    "DROP INDEX audit_intake; ALTER TABLE audit DROP COLUMN intake_id;"                      \
    "DROP TABLE intake_identifiers; DROP TABLE intake_referrals; DROP TABLE intake_tokens;"  \
    "DROP TABLE intake_resources;"
/* migration 12 (the worklist's referral index), 11 (the worklist) */
#define UNDO_AFTER_V10                                                                       \
    UNDO_AFTER_V12                                                                           \
    "DROP INDEX referrals_patient_state;"                                                    \
    "DROP TRIGGER worklist_verdict_insert; DROP TRIGGER worklist_verdict_update;"            \
    "DROP TRIGGER worklist_verdict_delete; DROP TABLE worklist; DROP TABLE worklist_declines;" \
    "DROP TABLE worklist_visits;"
#define UNDO_AFTER_V9 UNDO_AFTER_V10 "DROP TABLE notify_events; DROP TABLE notify_notices;"
#define UNDO_AFTER_V8                                                                        \
    UNDO_AFTER_V9                                                                            \
    "ALTER TABLE verdicts DROP COLUMN heme; ALTER TABLE verdicts DROP COLUMN pruned_ms;"
#define UNDO_AFTER_V7                                                                        \
    UNDO_AFTER_V8                                                                            \
    "DROP TABLE cds_jti; DROP TABLE cds_cards; DROP TABLE cds_feedback;"
#define UNDO_AFTER_V6                                                                        \
    UNDO_AFTER_V7                                                                            \
    "DROP INDEX referrals_cancel_due; ALTER TABLE referrals DROP COLUMN episode;"            \
    "ALTER TABLE referrals DROP COLUMN supersedes;"                                          \
    "ALTER TABLE referrals DROP COLUMN episode_marker; ALTER TABLE referrals DROP COLUMN ended;" \
    "ALTER TABLE referrals DROP COLUMN cancel_requested_ms;"
#define UNDO_AFTER_V4                                                                        \
    UNDO_AFTER_V6                                                                            \
    "DROP TABLE held;"                                                                       \
    "DROP TABLE sessions; DROP TABLE api_tokens; DROP TABLE login_failures; DROP TABLE users;" \
    "ALTER TABLE audit DROP COLUMN user_id; ALTER TABLE audit DROP COLUMN role;"             \
    "ALTER TABLE audit DROP COLUMN source; ALTER TABLE audit DROP COLUMN reason;"

/* A database written by a binary before v2: schema 1 plus the two tables the daemon and the
 * write-back created outside the migrations, with rows in them. Opening adopts both tables
 * (rows kept) and adds what the later steps bring. */
static void test_adopt_v1_stray_tables(void **state)
{
    (void)state;
    store *s = open_fresh("v1.db");
    store_close(s);
    raw_exec(UNDO_AFTER_V4 "DROP INDEX daemon_dirty_order; DROP INDEX verdicts_category;"
             "INSERT INTO daemon_dirty(patient_id, marked_ms) VALUES ('p-old', 5);"
             "INSERT INTO writeback_outbox(referral_id, state, audit_id, created_ms, updated_ms)"
             " VALUES (7, 'sent', 3, 1, 1);"
             "PRAGMA user_version = 1;");
    assert_int_equal(raw_int("PRAGMA user_version"), 1);
    fhir_error err = {0};
    s = store_open(dbpath, 0, &err);
    if (!s)
        fail_msg("store_open: %s", err.msg);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    assert_int_equal(store_dirty_count(s), 1);
    char *ids[4];
    assert_int_equal(store_dirty_next(s, ids, 4, &err), 1);
    assert_string_equal(ids[0], "p-old");
    free(ids[0]);
    assert_int_equal(raw_int("SELECT count(*) FROM writeback_outbox WHERE audit_id = 3"), 1);
    assert_int_equal(raw_int("SELECT count(*) FROM sqlite_master WHERE name IN "
                             "('daemon_dirty_order','verdicts_category')"), 2);
    store_close(s);
}

/* A version 1 database that never had them (write-back never configured) gets them. */
static void test_v1_without_stray_tables(void **state)
{
    (void)state;
    store *s = open_fresh("v1-bare.db");
    store_close(s);
    raw_exec(UNDO_AFTER_V4 "DROP TABLE daemon_dirty; DROP TABLE writeback_outbox; DROP INDEX verdicts_category;"
             "PRAGMA user_version = 1;");
    fhir_error err = {0};
    s = store_open(dbpath, 0, &err);
    if (!s)
        fail_msg("store_open: %s", err.msg);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    assert_int_equal(raw_int("SELECT count(*) FROM sqlite_master WHERE name IN "
                             "('daemon_dirty','writeback_outbox','writeback_outbox_status')"), 3);
    assert_int_equal(store_dirty_mark(s, "p1", &err), 0);
    assert_int_equal(store_outbox_add(s, 1, "sent", 1, &err), -1); /* no referral 1 */
    store_close(s);
}

/* CDS Hooks: a jti is accepted once until it expires (then pruned and usable again), per
 * issuer; a card remembers its patient; feedback is counted by service and outcome; a v7 file
 * gains the tables. */
static void count_fb(void *ctx, const char *service, const char *outcome, int64_t n)
{
    char *b = ctx;
    size_t l = strlen(b);
    snprintf(b + l, 512 - l, "%s/%s=%lld;", service, outcome, (long long)n);
}

/* ---- the worklist written with the verdict (migration 15) ------------------------------- */

/* Rows of the worklist that migration 11's expression over the verdicts does not give, and
 * the other way round (0 and 0: the same table). */
static void worklist_is_old_way(void)
{
    assert_int_equal(raw_int("SELECT count(*) FROM (SELECT * FROM worklist EXCEPT SELECT "
                             OLD_WORKLIST_COLS("verdicts") " FROM verdicts)"), 0);
    assert_int_equal(raw_int("SELECT count(*) FROM (SELECT " OLD_WORKLIST_COLS("verdicts")
                             " FROM verdicts EXCEPT SELECT * FROM worklist)"), 0);
    assert_int_equal(raw_int("SELECT count(*) FROM worklist"), raw_int("SELECT count(*) FROM verdicts"));
}

static void test_worklist_typed(void **state)
{
    (void)state;
    store *s = open_fresh("wl.db");
    fhir_error err = {0};
    static const struct {
        const char *category, *pj, *vj;
        store_worklist_in wl;
    } cases[] = {
        {.category = "eligible", .pj = PROFILE_WITH_EVENTS, .vj = VERDICT_WITH_PRODUCTS,
         .wl = {.urgency = "soon", .consult = "refer_now", .disease = "dlbcl", .relapse_day = "2026-01-02",
          .missing = 1, .products = "[\"axi-cel\"]"}},
        /* a consult alone puts a patient on the list; two relapses: the later one */
        {.category = "not_eligible",
         .pj = "{\"facts\":{\"primary_disease\":{\"known\":true,\"value\":\"fl\"}},\"events\":["
         "{\"date\":\"2025-03-01\",\"kind\":\"progression or relapse\"},{\"date\":"
         "\"2025-09-30\",\"kind\":\"progression or relapse\"},{\"date\":\"2026-01-01\","
         "\"kind\":\"response\"}]}",
         .vj = "{\"category\":\"not_eligible\",\"products\":[],\"possible_products\":[],\"missing\":[],"
         "\"consult\":{\"recommendation\":\"early_consult\"},\"urgency\":\"none\"}",
         .wl = {.urgency = "none", .consult = "early_consult", .disease = "fl", .relapse_day = "2025-09-30",
          .missing = 0, .products = "[]", .possible = "[]"}},
        /* possibly eligible, unknown disease, nothing documented */
        {.category = "possibly_eligible", .pj = "{\"facts\":{\"primary_disease\":{\"known\":false}},\"events\":[]}",
         .vj = "{\"products\":[],\"possible_products\":[\"liso-cel:LBCL-2L\",\"axi-cel:LBCL-2L\"],"
         "\"missing\":[\"ecog\",\"lines\",\"anc\"],\"consult\":{\"recommendation\":\"none\"},"
         "\"urgency\":\"review\"}",
         .wl = {.urgency = "review", .consult = "none", .missing = 3, .products = "[]",
          .possible = "[\"liso-cel:LBCL-2L\",\"axi-cel:LBCL-2L\"]"}},
        {.category = "not_eligible", .pj = "{\"facts\":{}}",
         .vj = "{\"products\":[],\"possible_products\":[],\"missing\":[],\"consult\":{\"recommendation\":"
         "\"none\"},\"urgency\":\"none\"}",
         .wl = {.urgency = "none", .consult = "none", .products = "[]", .possible = "[]"}},
        {.category = "eligible", .pj = "{\"facts\":{\"primary_disease\":{\"value\":\"mcl\"}}}",
         .vj = "{\"products\":[\"brexu-cel:MCL\"],\"possible_products\":[],\"missing\":[],\"consult\":"
         "{\"recommendation\":\"refer_now\"},\"urgency\":\"now\"}",
         .wl = {.urgency = "now", .consult = "refer_now", .disease = "mcl", .products = "[\"brexu-cel:MCL\"]",
          .possible = "[]"}},
    };
    char pid[32];
    fhir_clock_set_fixed(1700000000);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* typed, as the screener writes it; then the same verdict again over it */
        snprintf(pid, sizeof pid, "typed-%zu", i);
        for (int k = 0; k < 2; k++)
            assert_int_equal(store_verdict_put_screened(s, pid, "h", cases[i].category, cases[i].pj,
                                                        cases[i].vj, true, &cases[i].wl, &err), 0);
        /* from the JSON in SQL: store_verdict_put, and the screener's fallback */
        snprintf(pid, sizeof pid, "json-%zu", i);
        assert_int_equal(store_verdict_put(s, pid, "h", cases[i].category, cases[i].pj, cases[i].vj,
                                           &err), 0);
        snprintf(pid, sizeof pid, "fallback-%zu", i);
        assert_int_equal(store_verdict_put_screened(s, pid, "h", cases[i].category, cases[i].pj,
                                                    cases[i].vj, false, NULL, &err), 0);
        worklist_is_old_way();
    }
    /* the values are the ones read back (not NULL everywhere) */
    assert_int_equal(raw_int("SELECT count(*) FROM worklist WHERE on_list = 1"), 3 * 4);
    assert_int_equal(raw_int("SELECT count(*) FROM worklist WHERE relapse_day = '2025-09-30' AND "
                             "urank = 2 AND disease = 'fl' AND consult = 'early_consult'"), 3);
    assert_int_equal(raw_int("SELECT count(*) FROM worklist WHERE missing_n = 3 AND possible LIKE "
                             "'[\"liso-cel%'"), 3);
    /* a changed verdict replaces the row; a typed value that disagrees with the JSON would show */
    store_worklist_in wrong = cases[0].wl;
    wrong.urgency = "now";
    assert_int_equal(store_verdict_put_screened(s, "typed-0", "h", cases[0].category, cases[0].pj,
                                                cases[0].vj, true, &wrong, &err), 0);
    assert_int_equal(raw_int("SELECT count(*) FROM (SELECT * FROM worklist EXCEPT SELECT "
                             OLD_WORKLIST_COLS("verdicts") " FROM verdicts)"), 1);
    assert_int_equal(store_verdict_put_screened(s, "typed-0", "h", cases[1].category, cases[1].pj,
                                                cases[1].vj, true, &cases[1].wl, &err), 0);
    worklist_is_old_way();
    /* heme and the retention mark change nothing the row is made of; a delete removes it */
    assert_int_equal(store_verdict_set_heme(s, "typed-1", false, &err), 0);
    assert_int_equal(store_verdict_delete(s, "typed-2", &err), 0);
    worklist_is_old_way();
    assert_int_equal(raw_int("SELECT count(*) FROM worklist WHERE patient_id = 'typed-2'"), 0);
    fhir_clock_set_fixed(-1);
    store_close(s);

    /* a version 14 file (the triggers wrote its rows) keeps them; the triggers are dropped */
    s = open_fresh("wl14.db");
    store_close(s);
    raw_exec(UNDO_AFTER_V14 "PRAGMA user_version = 14;");
    raw_exec("INSERT INTO verdicts(patient_id, ruleset_hash, category, profile_json, verdict_json, "
             "updated_ms) VALUES ('old', 'h', 'eligible', '" PROFILE_WITH_EVENTS "', '"
             VERDICT_WITH_PRODUCTS "', 5)");
    assert_int_equal(raw_int("SELECT count(*) FROM worklist WHERE patient_id = 'old' AND urank = 0"), 1);
    s = store_open(dbpath, 0, &err);
    assert_non_null(s);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    assert_int_equal(raw_int("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN "
                             "('worklist_verdict_insert','worklist_verdict_update')"), 0);
    assert_int_equal(raw_int("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = "
                             "'worklist_verdict_delete'"), 1);
    worklist_is_old_way();
    assert_int_equal(store_verdict_delete(s, "old", &err), 0);
    assert_int_equal(raw_int("SELECT count(*) FROM worklist"), 0);
    store_close(s);
}

static void test_cds_tables(void **state)
{
    (void)state;
    store *s = open_fresh("cds.db");
    fhir_error err = {0};
    fhir_clock_set_fixed(1000000);
    assert_int_equal(store_cds_jti_use(s, "iss-a", "j1", 1060000, &err), 1);
    assert_int_equal(store_cds_jti_use(s, "iss-a", "j1", 1060000, &err), 0); /* replay */
    assert_int_equal(store_cds_jti_use(s, "iss-b", "j1", 1060000, &err), 1); /* another issuer */
    fhir_clock_set_fixed(1060001);                                           /* expired: pruned */
    assert_int_equal(store_cds_jti_use(s, "iss-a", "j1", 1120000, &err), 1);
    fhir_clock_set_fixed(-1);
    assert_int_equal(store_cds_card_put(s, "u-1", "p-1", "svc", "eligible", &err), 0);
    assert_int_equal(store_cds_card_put(s, "u-1", "p-1", "svc", "eligible", &err), 0);
    char pid[64] = "";
    assert_int_equal(store_cds_card_get(s, "u-1", pid, sizeof pid, &err), 1);
    assert_string_equal(pid, "p-1");
    assert_int_equal(store_cds_card_get(s, "u-2", pid, sizeof pid, &err), 0);
    store_cds_feedback f = {.service = "svc", .card = "u-1", .patient_id = "p-1", .outcome = "accepted"};
    assert_int_equal(store_cds_feedback_add(s, &f, &err), 0);
    f.outcome = "overridden";
    f.override_reason = "x Patient declines";
    assert_int_equal(store_cds_feedback_add(s, &f, &err), 0);
    assert_int_equal(store_cds_feedback_add(s, &f, &err), 0);
    f.outcome = "maybe";
    assert_int_equal(store_cds_feedback_add(s, &f, &err), -1); /* the table checks the outcome */
    char b[512] = "";
    assert_int_equal(store_cds_feedback_count(s, count_fb, b, &err), 0);
    assert_string_equal(b, "svc/accepted=1;svc/overridden=2;");
    store_close(s);
    /* a v7 file gains the tables */
    raw_exec(UNDO_AFTER_V7 "PRAGMA user_version = 7;");
    s = store_open(dbpath, 0, &err);
    if (!s)
        fail_msg("store_open: %s", err.msg);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    assert_int_equal(store_cds_jti_use(s, "iss-a", "j9", 1, &err), 1);
    store_close(s);
}

static void test_savepoint(void **state)
{
    (void)state;
    store *s = open_fresh("sp.db");
    fhir_error err = {0};
    assert_int_equal(store_savepoint(s, &err), -1); /* needs a transaction */
    assert_int_equal(store_begin(s, &err), 0);
    assert_true(store_in_transaction(s));
    assert_int_equal(store_dirty_mark(s, "kept-1", &err), 0);
    assert_int_equal(store_savepoint(s, &err), 0);
    assert_int_equal(store_savepoint(s, &err), -1); /* not nestable */
    assert_int_equal(store_dirty_mark(s, "undone", &err), 0);
    store_savepoint_rollback(s);
    assert_int_equal(store_savepoint(s, &err), 0);
    assert_int_equal(store_dirty_mark(s, "kept-2", &err), 0);
    assert_int_equal(store_commit(s, &err), -1); /* savepoint still open */
    assert_int_equal(store_savepoint_release(s, &err), 0);
    assert_int_equal(store_commit(s, &err), 0);
    assert_false(store_in_transaction(s));
    assert_int_equal(store_dirty_count(s), 2);
    assert_int_equal(raw_int("SELECT count(*) FROM daemon_dirty WHERE patient_id = 'undone'"), 0);
    store_close(s);
}

/* store_group_lost_fn of the tests: counts the lost groups of its owner (an int). */
static void group_lost_count(void *owner, const char *msg)
{
    (void)msg;
    (*(int *)owner)++;
}

static int64_t dirty_rows(const char *patient_id)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM daemon_dirty WHERE patient_id = '%s'", patient_id);
    return raw_int(sql);
}

/* An ingest group spans its owner's units ("pages"); any other use of the handle between them
 * commits it first, a rollback of another caller's transaction leaves its rows, the owner's own
 * rollback inside a unit undoes it, store_group_flush and store_group_end(flush) commit it. */
static void test_ingest_group(void **state)
{
    (void)state;
    store *s = open_fresh("group.db");
    fhir_error err = {0};
    int owner = 0, other = 0;
    /* two pages in one group: nothing is visible to a second connection until another
     * statement of the handle runs */
    assert_int_equal(store_group_begin(s, &owner, group_lost_count, &err), 1);
    assert_int_equal(store_dirty_mark(s, "g1", &err), 0);
    assert_int_equal(store_group_end(s, false, &err), 0);
    assert_int_equal(dirty_rows("g1"), 0);
    assert_int_equal(store_group_begin(s, &owner, group_lost_count, &err), 0); /* joined */
    assert_int_equal(store_dirty_mark(s, "g2", &err), 0);
    assert_int_equal(store_group_end(s, false, &err), 0);
    assert_int_equal(dirty_rows("g1") + dirty_rows("g2"), 0);
    assert_int_equal(store_dirty_count(s), 2); /* another use: the group commits first */
    assert_int_equal(dirty_rows("g1") + dirty_rows("g2"), 2);
    assert_false(store_in_transaction(s));

    /* another caller's transaction rolled back: the group's rows (and its held memo) stay */
    assert_int_equal(store_group_begin(s, &owner, group_lost_count, &err), 1);
    assert_int_equal(store_held_mark(s, "src", "g3", &err), 0);
    assert_int_equal(store_dirty_mark(s, "g3", &err), 0);
    assert_int_equal(store_group_end(s, false, &err), 0);
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_dirty_mark(s, "x", &err), 0);
    store_rollback(s);
    assert_int_equal(dirty_rows("g3"), 1);
    assert_int_equal(dirty_rows("x"), 0);
    assert_int_equal(raw_int("SELECT count(*) FROM held WHERE patient_id = 'g3'"), 1);
    /* the same for a bare store_rollback and a store_in_transaction check between pages */
    assert_int_equal(store_group_begin(s, &owner, group_lost_count, &err), 1);
    assert_int_equal(store_dirty_mark(s, "g4", &err), 0);
    assert_int_equal(store_group_end(s, false, &err), 0);
    store_rollback(s);
    assert_int_equal(dirty_rows("g4"), 1);
    assert_int_equal(store_group_begin(s, &owner, group_lost_count, &err), 1);
    assert_int_equal(store_dirty_mark(s, "g4b", &err), 0);
    assert_int_equal(store_group_end(s, false, &err), 0);
    assert_false(store_in_transaction(s));
    assert_int_equal(dirty_rows("g4b"), 1);

    /* the owner's rollback inside a page undoes the group; nothing is left open */
    assert_int_equal(store_group_begin(s, &owner, group_lost_count, &err), 1);
    assert_int_equal(store_dirty_mark(s, "g5", &err), 0);
    store_rollback(s);
    assert_false(store_in_transaction(s));
    assert_int_equal(store_group_flush(s, &owner, &err), 0);
    assert_int_equal(dirty_rows("g5"), 0);

    /* flush: only the owner's group, and not inside its page; end(flush) commits */
    assert_int_equal(store_group_begin(s, &owner, group_lost_count, &err), 1);
    assert_int_equal(store_dirty_mark(s, "g6", &err), 0);
    assert_int_equal(store_group_flush(s, &owner, &err), 0); /* inside its page */
    assert_int_equal(store_group_end(s, false, &err), 0);
    assert_int_equal(store_group_flush(s, &other, &err), 0);
    assert_int_equal(dirty_rows("g6"), 0);
    assert_int_equal(store_group_flush(s, &owner, &err), 1);
    assert_int_equal(dirty_rows("g6"), 1);
    assert_int_equal(store_group_begin(s, &owner, group_lost_count, &err), 1);
    assert_int_equal(store_dirty_mark(s, "g7", &err), 0);
    assert_int_equal(store_group_end(s, true, &err), 0);
    assert_int_equal(dirty_rows("g7"), 1);
    assert_int_equal(store_group_end(s, false, &err), -1); /* not inside a page */

    /* another owner's page commits the open group first */
    assert_int_equal(store_group_begin(s, &owner, group_lost_count, &err), 1);
    assert_int_equal(store_dirty_mark(s, "g8", &err), 0);
    assert_int_equal(store_group_end(s, false, &err), 0);
    assert_int_equal(store_group_begin(s, &other, group_lost_count, &err), 1);
    assert_int_equal(dirty_rows("g8"), 1);
    assert_int_equal(store_dirty_mark(s, "o1", &err), 0);
    assert_int_equal(store_group_end(s, false, &err), 0);
    assert_int_equal(store_group_flush(s, &owner, &err), 0);
    assert_int_equal(dirty_rows("o1"), 0);
    assert_int_equal(store_group_flush(s, &other, &err), 1);
    assert_int_equal(dirty_rows("o1"), 1);
    /* a group inside another caller's transaction is refused */
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_group_begin(s, &owner, group_lost_count, &err), -1);
    store_rollback(s);
    assert_int_equal(owner + other, 0); /* no commit failed */
    store_close(s);
}

static int count_json(void *ctx, const char *type, const char *id, const void *data, size_t len)
{
    (void)type;
    (void)id;
    (void)data;
    (void)len;
    (*(int *)ctx)++;
    return 0;
}

/* store_held_mark remembers the (source, patient) pairs it wrote, so a pair marked again costs
 * no statement, and forgets them whenever they may be rows no more: a release (of any source),
 * a rollback, a savepoint rolled back, a full memo. Every pair marked is a row afterwards. */
static void test_held_memo(void **state)
{
    (void)state;
    store *s = open_fresh("held-memo.db");
    fhir_error err = {0};
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_held_mark(s, "ehr", "p1", &err), 0);
    assert_int_equal(store_commit(s, &err), 0);
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_held_mark(s, "ehr", "p1", &err), 0); /* committed before: no row more */
    assert_int_equal(store_held_mark(s, "lab", "p1", &err), 0); /* another source: its own row */
    assert_int_equal(store_commit(s, &err), 0);
    assert_int_equal(store_held_count(s, "ehr"), 1);
    assert_int_equal(store_held_count(s, "lab"), 1);
    /* released: the next poll's mark is a row again */
    assert_int_equal(store_held_release(s, "ehr", &err), 0);
    assert_int_equal(store_held_count(s, "ehr"), 0);
    assert_int_equal(store_held_mark(s, "ehr", "p1", &err), 0);
    assert_int_equal(store_held_count(s, "ehr"), 1);
    /* a mark rolled back is no row */
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_held_mark(s, "ehr", "p2", &err), 0);
    store_rollback(s);
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_held_mark(s, "ehr", "p2", &err), 0);
    assert_int_equal(store_commit(s, &err), 0);
    assert_int_equal(store_held_count(s, "ehr"), 2);
    /* nor is one in a savepoint rolled back */
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_savepoint(s, &err), 0);
    assert_int_equal(store_held_mark(s, "ehr", "p3", &err), 0);
    store_savepoint_rollback(s);
    assert_int_equal(store_held_mark(s, "ehr", "p3", &err), 0);
    assert_int_equal(store_commit(s, &err), 0);
    assert_int_equal(store_held_count(s, "ehr"), 3);
    assert_int_equal(store_held_release(s, "ehr", &err), 0);
    /* a poll of 30,000 patients (the memo grows): each pair is remembered, so marking them all
     * again (a later page of another type) runs no statement: no SQLite step */
    enum { POLL = 30000 };
    char pid[96];
    store_work w;
    assert_int_equal(store_begin(s, &err), 0);
    for (int pass = 0; pass < 2; pass++) {
        store_work_take(s, &w);
        for (int i = 0; i < POLL; i++) {
            snprintf(pid, sizeof pid, "p%06d-5384", i);
            assert_int_equal(store_held_mark(s, "ehr", pid, &err), 0);
        }
        store_work_take(s, &w);
        if (pass == 0)
            assert_true(w.vm_steps >= POLL); /* one statement each */
        else if (w.vm_steps != 0)
            fail_msg("%d pairs marked again took %lld SQLite steps", POLL, (long long)w.vm_steps);
    }
    assert_int_equal(store_commit(s, &err), 0);
    assert_int_equal(store_held_count(s, "ehr"), POLL);
    assert_int_equal(store_held_release(s, "ehr", &err), 0);
    /* more pairs than the memo holds (forgotten when full: at its bytes with long ids, at its
     * pairs with short ones), each marked twice: every one a row; released, none */
    const int many[2] = {(int)(STORE_HELD_MEMO_MAX / 48u) + 1000, (int)STORE_HELD_MEMO_PAIRS + 1000};
    for (int round = 0; round < 2; round++) {
        assert_int_equal(store_begin(s, &err), 0);
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < many[round]; i++) {
                /* 43 + 1 bytes and "ehr\0": 48 a pair */
                snprintf(pid, sizeof pid, round ? "p%d" : "patient-%06d-with-a-long-id-to-fill-bytes", i);
                assert_int_equal(store_held_mark(s, "ehr", pid, &err), 0);
            }
        assert_int_equal(store_commit(s, &err), 0);
        assert_int_equal(store_held_count(s, "ehr"), many[round]);
        assert_int_equal(store_held_release(s, "ehr", &err), 0);
        assert_int_equal(store_held_count(s, "ehr"), 0);
    }
    store_close(s);
}

/* Patients held by an incomplete poll are never handed out for screening (even when another
 * source marked them) until a poll of every source holding them completes; a deleted
 * resource names its patient; a verdict can be removed. */
static void test_held_until_released(void **state)
{
    (void)state;
    store *s = open_fresh("held.db");
    fhir_error err = {0};
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_held_mark(s, "ehr", "p1", &err), 0);
    assert_int_equal(store_held_mark(s, "ehr", "p1", &err), 0); /* once (memo) */
    assert_int_equal(store_held_mark(s, "ehr", "p2", &err), 0);
    assert_int_equal(store_held_mark(s, "lab", "p2", &err), 0);
    assert_int_equal(store_held_mark(s, "ehr", "p1", &err), 0); /* once (table) */
    assert_int_equal(store_commit(s, &err), 0);
    assert_int_equal(store_held_count(s, "ehr"), 2);
    assert_int_equal(store_held_count(s, "lab"), 1);
    assert_int_equal(store_held_count(s, NULL), 2);
    assert_int_equal(store_dirty_mark(s, "p2", &err), 0);
    assert_int_equal(store_dirty_mark(s, "p3", &err), 0);
    char *ids[8];
    long got = store_dirty_next(s, ids, 8, &err);
    assert_int_equal(got, 1); /* p2 is held */
    assert_string_equal(ids[0], "p3");
    assert_int_equal(store_dirty_clear(s, ids[0], &err), 0);
    free(ids[0]);
    assert_int_equal(store_held_release(s, "ehr", &err), 0);
    assert_int_equal(store_held_count(s, "ehr"), 0);
    got = store_dirty_next(s, ids, 8, &err);
    assert_int_equal(got, 1); /* p1; p2 still held by lab */
    assert_string_equal(ids[0], "p1");
    free(ids[0]);
    assert_int_equal(store_held_release(s, "lab", &err), 0);
    got = store_dirty_next(s, ids, 8, &err);
    assert_int_equal(got, 2);
    for (long i = 0; i < got; i++)
        free(ids[i]);
    assert_int_equal(store_held_count(s, NULL), 0);

    bool changed = false, found = true;
    char pid[32];
    assert_int_equal(store_resource_upsert(s, "p1", "Condition", "c1", "{}", 2, &changed,
                                           &err), 0);
    assert_int_equal(store_resource_delete(s, "Condition", "c1", pid, sizeof pid, &found, &err), 0);
    assert_true(found);
    assert_string_equal(pid, "p1");
    assert_int_equal(store_resource_delete(s, "Condition", "c1", pid, sizeof pid, &found, &err), 0);
    assert_false(found);
    assert_string_equal(pid, "");
    assert_int_equal(store_verdict_put(s, "p1", "h", "eligible", NULL, "{}", &err), 0);
    assert_int_equal(store_verdict_delete(s, "p1", &err), 0);
    assert_int_equal(store_verdict_get(s, "p1", NULL, NULL, NULL, &err), 0);
    store_close(s);
}

typedef struct got_bytes {
    char data[512];
    size_t len;
} got_bytes;

static int keep_bytes(void *ctx, const char *type, const char *id, const void *data, size_t len)
{
    (void)type;
    (void)id;
    got_bytes *g = ctx;
    assert_true(len < sizeof g->data);
    memcpy(g->data, data, len);
    g->len = len;
    return 0;
}

/* The daemon caches the binary form (fhir_bin.h): kept as a BLOB, handed back byte for byte, an
 * identical copy left untouched; an older row's JSON text is handed back as text, and the
 * binary form of the same resource replaces it (counted as a change once). */
static void test_resource_binary_form(void **state)
{
    (void)state;
    store *s = open_fresh("bin.db");
    fhir_error err = {0};
    fhir_arena *a = fhir_arena_new(0);
    static const char json[] = "{\"resourceType\":\"Condition\",\"id\":\"c1\",\"code\":{\"text\":\"DLBCL\"}}";
    fhir_node *n = fhir_json_parse(a, json, strlen(json), NULL, &err);
    assert_non_null(n);
    fhir_buf bin;
    fhir_buf_init(&bin, 4096);
    assert_int_equal(fhir_bin_write(&bin, n), 0);
    bool changed = false;
    assert_int_equal(store_resource_upsert(s, "p1", "Condition", "c1", bin.data, bin.len,
                                           &changed, &err), 0);
    assert_true(changed);
    assert_int_equal(raw_int("SELECT count(*) FROM resources WHERE typeof(json) = 'blob'"), 1);
    assert_int_equal(store_resource_upsert(s, "p1", "Condition", "c1", bin.data, bin.len,
                                           &changed, &err), 0);
    assert_false(changed);
    got_bytes g = {0};
    assert_int_equal(store_resource_get(s, "Condition", "c1", keep_bytes, &g, &err), 1);
    assert_int_equal(g.len, bin.len);
    assert_memory_equal(g.data, bin.data, bin.len);
    /* an older row: JSON text, read back as text; then the binary form replaces it */
    assert_int_equal(store_resource_put(s, "p1", "Condition", "c2", json, strlen(json), &err), 0);
    assert_int_equal(store_resource_get(s, "Condition", "c2", keep_bytes, &g, &err), 1);
    assert_int_equal(g.len, strlen(json));
    assert_false(fhir_bin_is(g.data, g.len));
    assert_int_equal(store_resource_upsert(s, "p1", "Condition", "c2", bin.data, bin.len,
                                           &changed, &err), 0);
    assert_true(changed);
    assert_int_equal(raw_int("SELECT count(*) FROM resources WHERE typeof(json) = 'blob'"), 2);
    fhir_buf_free(&bin);
    fhir_arena_free(a);
    store_close(s);
}

static void test_resource_upsert_and_dirty(void **state)
{
    (void)state;
    store *s = open_fresh("res.db");
    fhir_error err = {0};
    bool changed = false;
    assert_int_equal(store_resource_upsert(s, "p1", "Condition", "c1", "{\"a\":1}", 7,
                                           &changed, &err), 0);
    assert_true(changed);
    assert_int_equal(store_resource_upsert(s, "p1", "Condition", "c1", "{\"a\":1}", 7,
                                           &changed, &err), 0);
    assert_false(changed); /* identical: untouched */
    assert_int_equal(store_resource_upsert(s, "p1", "Condition", "c1", "{\"a\":2}", 7,
                                           &changed, &err), 0);
    assert_true(changed);
    int n = 0;
    assert_int_equal(store_resource_get(s, "Condition", "c1", count_json, &n, &err), 1);
    assert_int_equal(store_resource_get(s, "Condition", "nope", count_json, &n, &err), 0);
    assert_int_equal(n, 1);

    /* patients to screen: oldest mark first, cleared one by one, re-marked by rule set */
    assert_int_equal(store_dirty_mark(s, "b", &err), 0);
    assert_int_equal(store_dirty_mark(s, "a", &err), 0);
    assert_int_equal(store_dirty_mark(s, "b", &err), 0); /* once */
    char *ids[8];
    long got = store_dirty_next(s, ids, 8, &err);
    assert_int_equal(got, 2);
    for (long i = 0; i < got; i++) {
        assert_int_equal(store_dirty_clear(s, ids[i], &err), 0);
        free(ids[i]);
    }
    assert_int_equal(store_dirty_count(s), 0);
    assert_int_equal(store_verdict_put(s, "a", "h1", "eligible", NULL, "{}", &err), 0);
    assert_int_equal(store_verdict_put(s, "b", "h2", "not_eligible", NULL, "{}", &err), 0);
    assert_int_equal(store_dirty_mark_ruleset_changed(s, "h2", &err), 0);
    got = store_dirty_next(s, ids, 8, &err);
    assert_int_equal(got, 1);
    assert_string_equal(ids[0], "a");
    free(ids[0]);
    assert_int_equal(store_verdict_count(s, "eligible", &err), 1);
    assert_int_equal(store_verdict_count(s, "possibly_eligible", &err), 0);
    assert_int_equal(store_dirty_clear(s, "a", &err), 0);

    /* repeated marks in a transaction are written once; none is lost to a rollback or to a
     * clear in between */
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_dirty_mark(s, "c", &err), 0);
    store_rollback(s);
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_dirty_mark(s, "c", &err), 0);
    assert_int_equal(store_commit(s, &err), 0);
    assert_int_equal(store_dirty_count(s), 1);
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_dirty_mark(s, "c", &err), 0);
    assert_int_equal(store_dirty_mark(s, "c", &err), 0);
    assert_int_equal(store_dirty_clear(s, "c", &err), 0);
    assert_int_equal(store_dirty_mark(s, "c", &err), 0);
    assert_int_equal(store_commit(s, &err), 0);
    assert_int_equal(store_dirty_count(s), 1);
    store_close(s);
}

/* A resource's meta lives in its bytes: the version and last_updated columns are left NULL, an
 * older row keeps its values while its bytes are unchanged and loses them when they change
 * (no column says a version the bytes no longer have). */
static void test_resource_meta_columns(void **state)
{
    (void)state;
    store *s = open_fresh("meta.db");
    fhir_error err = {0};
    bool changed = false;
    assert_int_equal(store_resource_upsert(s, "p1", "Condition", "c1", "{\"a\":1}", 7, &changed, &err), 0);
    assert_int_equal(store_resource_put(s, "p1", "Condition", "c2", "{\"a\":1}", 7, &err), 0);
    assert_int_equal(raw_int("SELECT count(*) FROM resources WHERE version IS NULL AND last_updated IS NULL"), 2);
    /* a row as a schema-17 binary wrote it */
    raw_exec("UPDATE resources SET version = '3', last_updated = '2026-01-01T00:00:00Z' WHERE id = 'c1'");
    assert_int_equal(store_resource_upsert(s, "p1", "Condition", "c1", "{\"a\":1}", 7, &changed, &err), 0);
    assert_false(changed);
    assert_int_equal(raw_int("SELECT count(*) FROM resources WHERE id = 'c1' AND version = '3'"), 1);
    assert_int_equal(store_resource_upsert(s, "p1", "Condition", "c1", "{\"a\":2}", 7, &changed, &err), 0);
    assert_true(changed);
    assert_int_equal(raw_int("SELECT count(*) FROM resources WHERE id = 'c1' AND version IS NULL AND "
                             "last_updated IS NULL"), 1);
    raw_exec("UPDATE resources SET version = '3', last_updated = '2026-01-01T00:00:00Z' WHERE id = 'c2'");
    assert_int_equal(store_resource_put(s, "p2", "Condition", "c2", "{\"a\":2}", 7, &err), 0);
    assert_int_equal(raw_int("SELECT count(*) FROM resources WHERE id = 'c2' AND patient_id = 'p2' AND "
                             "version IS NULL AND last_updated IS NULL"), 1);
    store_close(s);
}

static store_referral row_for(const char *placer, const char *patient, const char *state)
{
    store_referral r = {
        .placer_id = placer, .site_id = "site", .patient_id = patient, .center_id = "ctr",
        .indications = "x:y", .state = state, .mode = "approval", .urgency = "routine",
        .explanation = "why", .verdict_json = "{}", .payload = "{\"big\":true}",
    };
    return r;
}

typedef struct seen {
    store *s;
    int rows, nested, with_payload;
} seen;

/* Called from inside an iteration: the same list statement again (in use, so prepared
 * afresh for this call) and a single-row read. */
static int nested_row(void *ctx, const store_referral *r)
{
    seen *c = ctx;
    c->rows++;
    if (r->payload)
        c->with_payload++;
    return 0;
}

static int outer_row(void *ctx, const store_referral *r)
{
    seen *c = ctx;
    fhir_error err = {0};
    seen inner = {0};
    store_referral_filter f = {.state = "pending_approval", .summary = true};
    assert_int_equal(store_referral_each(c->s, &f, nested_row, &inner, &err), 2);
    assert_int_equal(store_referral_get(c->s, r->id, nested_row, &inner, &err), 1);
    assert_int_equal(inner.rows, 3);
    assert_int_equal(inner.with_payload, 1); /* the summary left the payload unread */
    c->nested++;
    c->rows++;
    return 0;
}

static int collect_id(void *ctx, int64_t id, const char *placer)
{
    (void)placer;
    int64_t *out = ctx;
    out[out[0] + 1] = id;
    out[0]++;
    return 0;
}

/* The compose cause (migration 17): a version 16 file gets the two columns, its rows read
 * without a cause; a cause set by store_referral_update is read in the full row and in a
 * summary; composed texts (store_referral_set_texts) and a changed proposal (set_proposal)
 * clear it. */
typedef struct cause_seen {
    char cause[64], error[128];
    int rows;
} cause_seen;

static int cause_row(void *ctx, const store_referral *r)
{
    cause_seen *c = ctx;
    snprintf(c->cause, sizeof c->cause, "%s", r->compose_cause ? r->compose_cause : "-");
    snprintf(c->error, sizeof c->error, "%s", r->compose_error ? r->compose_error : "-");
    c->rows++;
    return 0;
}

static void test_compose_cause_columns(void **state)
{
    (void)state;
    store *s = open_fresh("cause.db");
    fhir_error err = {0};
    int64_t id;
    store_referral r = row_for("PC", "pat-c", "approved");
    r.explanation = NULL;
    r.payload = NULL;
    assert_int_equal(store_referral_insert(s, &r, &id, &err), 1);
    store_close(s);
    raw_exec(UNDO_AFTER_V16 "PRAGMA user_version = 16;");
    s = store_open(dbpath, 0, &err);
    assert_non_null(s);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    cause_seen c = {0};
    assert_int_equal(store_referral_get(s, id, cause_row, &c, &err), 1);
    assert_string_equal(c.cause, "-");
    store_referral_change x = {.set_compose = true, .compose_cause = "center_not_candidate",
                               .compose_error = "Center ctr is no longer among"};
    assert_int_equal(store_referral_update(s, id, &x, &err), 0);
    memset(&c, 0, sizeof c);
    assert_int_equal(store_referral_get(s, id, cause_row, &c, &err), 1);
    assert_string_equal(c.cause, "center_not_candidate");
    assert_string_equal(c.error, "Center ctr is no longer among");
    memset(&c, 0, sizeof c);
    store_referral_filter sum = {.summary = true, .patient_id = "pat-c"};
    assert_int_equal(store_referral_each(s, &sum, cause_row, &c, &err), 1);
    assert_string_equal(c.cause, "center_not_candidate");
    /* an attempt or a state change keeps it */
    store_referral_change at = {.add_attempt = true, .set_outcome = true, .last_error = "x"};
    assert_int_equal(store_referral_update(s, id, &at, &err), 0);
    memset(&c, 0, sizeof c);
    assert_int_equal(store_referral_get(s, id, cause_row, &c, &err), 1);
    assert_string_equal(c.cause, "center_not_candidate");
    /* composed: cleared */
    assert_int_equal(store_referral_set_texts(s, id, "PC", "e", "{}", "{}", &err), 1);
    memset(&c, 0, sizeof c);
    assert_int_equal(store_referral_get(s, id, cause_row, &c, &err), 1);
    assert_string_equal(c.cause, "-");
    assert_string_equal(c.error, "-");
    /* a changed proposal clears it too, unless the same update sets one */
    assert_int_equal(store_referral_update(s, id, &x, &err), 0);
    store_referral_change prop = {.set_proposal = true, .placer_id = "PC2", .center_id = "ctr",
                                  .indications = "x:y", .urgency = "routine"};
    assert_int_equal(store_referral_update(s, id, &prop, &err), 0);
    memset(&c, 0, sizeof c);
    assert_int_equal(store_referral_get(s, id, cause_row, &c, &err), 1);
    assert_string_equal(c.cause, "-");
    store_close(s);
}

typedef struct versions_seen {
    int64_t v[8];
    char json[8][64];
    size_t n;
} versions_seen;

static int version_row(void *ctx, const store_intake_res *x)
{
    versions_seen *c = ctx;
    if (c->n < 8) {
        c->v[c->n] = x->version;
        snprintf(c->json[c->n], sizeof c->json[0], "%s", x->json);
    }
    c->n++;
    return 0;
}

/* Migration 18: a center's resources written before it keep their latest version as their
 * first history entry; from then on every write is a version (the trigger), newest first, of
 * the asked type only; a resource being written ("" JSON) is no version. The site's last-read
 * Task version per referral: absent, then kept, then replaced. */
static void test_intake_versions(void **state)
{
    (void)state;
    store *s = open_fresh("ver.db");
    fhir_error err = {0};
    int64_t task, sr;
    assert_int_equal(store_intake_res_new(s, "Task", "site-a", &task, &err), 0);
    assert_int_equal(store_intake_res_new(s, "ServiceRequest", "site-a", &sr, &err), 0);
    assert_int_equal(store_intake_res_put(s, task, 0, 1, 1000, "{\"status\":\"requested\"}", &err), 0);
    assert_int_equal(store_intake_res_put(s, task, 0, 2, 2000, "{\"status\":\"received\"}", &err), 0);
    store_close(s);
    /* a version 17 file: no history kept yet */
    raw_exec(UNDO_AFTER_V17 "PRAGMA user_version = 17;");
    s = store_open(dbpath, 0, &err);
    assert_non_null(s);
    versions_seen c = {0};
    assert_int_equal(store_intake_res_history(s, "Task", task, 0, version_row, &c, &err), 1);
    assert_int_equal(c.v[0], 2);
    assert_string_equal(c.json[0], "{\"status\":\"received\"}");
    /* the ServiceRequest was still being written: no version */
    assert_int_equal(store_intake_res_history(s, "ServiceRequest", sr, 0, NULL, NULL, &err), 0);
    assert_int_equal(store_intake_res_put(s, task, 0, 3, 3000, "{\"status\":\"accepted\"}", &err), 0);
    assert_int_equal(store_intake_res_put(s, task, 0, 4, 4000, "{\"status\":\"in-progress\"}", &err), 0);
    memset(&c, 0, sizeof c);
    assert_int_equal(store_intake_res_history(s, "Task", task, 0, version_row, &c, &err), 3);
    assert_int_equal(c.v[0], 4);
    assert_int_equal(c.v[1], 3);
    assert_int_equal(c.v[2], 2);
    assert_string_equal(c.json[1], "{\"status\":\"accepted\"}");
    memset(&c, 0, sizeof c);
    assert_int_equal(store_intake_res_history(s, "Task", task, 2, version_row, &c, &err), 2);
    assert_int_equal(c.v[1], 3);
    /* by id and type: the Task's id is no ServiceRequest */
    assert_int_equal(store_intake_res_history(s, "ServiceRequest", task, 0, NULL, NULL, &err), 0);

    int64_t id;
    store_referral r = row_for("PV", "pat-v", "sent");
    assert_int_equal(store_referral_insert(s, &r, &id, &err), 1);
    char v[32] = "x";
    assert_int_equal(store_task_seen_get(s, id, v, sizeof v, &err), 0);
    assert_string_equal(v, "");
    assert_int_equal(store_task_seen_put(s, id, "3", &err), 0);
    assert_int_equal(store_task_seen_get(s, id, v, sizeof v, &err), 1);
    assert_string_equal(v, "3");
    assert_int_equal(store_task_seen_put(s, id, "5", &err), 0);
    assert_int_equal(store_task_seen_get(s, id, v, sizeof v, &err), 1);
    assert_string_equal(v, "5");
    /* a referral that does not exist: refused (foreign key) */
    assert_int_equal(store_task_seen_put(s, id + 100, "1", &err), -1);
    store_close(s);
}

static void test_referral_rows(void **state)
{
    (void)state;
    store *s = open_fresh("ref.db");
    fhir_error err = {0};
    int64_t id1, id2, id3, again;
    store_referral r1 = row_for("P1", "pat-a", "pending_approval");
    store_referral r2 = row_for("P2", "pat-a", "pending_approval");
    store_referral r3 = row_for("P3", "pat-b", "approved");
    assert_int_equal(store_referral_insert(s, &r1, &id1, &err), 1);
    assert_int_equal(store_referral_insert(s, &r2, &id2, &err), 1);
    assert_int_equal(store_referral_insert(s, &r3, &id3, &err), 1);
    assert_int_equal(store_referral_insert(s, &r1, &again, &err), 0); /* same placer */
    assert_int_equal(again, id1);
    assert_int_equal(store_referral_find(s, "P2", &again, &err), 1);
    assert_int_equal(again, id2);
    assert_int_equal(store_referral_find(s, "nope", &again, &err), 0);

    int64_t ids[8] = {0};
    assert_int_equal(store_referral_ids(s, "pat-a", "pending_approval", collect_id, ids, &err), 2);
    assert_int_equal(ids[1], id1);
    assert_int_equal(ids[2], id2);
    assert_int_equal(store_referral_ids(s, "pat-b", "pending_approval", NULL, NULL, &err), 0);

    store_referral_filter by_patient = {.patient_id = "pat-a"};
    assert_int_equal(store_referral_each(s, &by_patient, NULL, NULL, &err), 2);
    store_referral_filter by_both = {.patient_id = "pat-b", .state = "approved",
                                     .center_id = "ctr"};
    assert_int_equal(store_referral_each(s, &by_both, NULL, NULL, &err), 1);
    assert_int_equal(store_referral_each(s, NULL, NULL, NULL, &err), 3);
    seen c = {.s = s};
    assert_int_equal(store_referral_each(s, NULL, outer_row, &c, &err), 3);
    assert_int_equal(c.nested, 3);

    /* updates: state and sender outcome, then the center's references */
    store_referral_change u = {.state = "approved", .add_attempt = true, .next_attempt_ms = 99,
                               .set_outcome = true, .last_status = 503, .last_error = "busy"};
    assert_int_equal(store_referral_update(s, id1, &u, &err), 0);
    char st[32];
    assert_int_equal(store_referral_state(s, id1, st, sizeof st, &err), 1);
    assert_string_equal(st, "approved");
    store_referral_change sent = {.state = "sent", .set_center_refs = true,
                                  .center_sr_ref = "ServiceRequest/1", .center_task_ref = "Task/1"};
    assert_int_equal(store_referral_update(s, id1, &sent, &err), 0);
    assert_int_equal(raw_int("SELECT count(*) FROM referrals WHERE placer_id = 'P1' AND attempts = 1 "
                             "AND next_attempt_ms = 99 AND last_status = 503 AND last_error IS NULL "
                             "AND center_task_ref = 'Task/1' AND payload = '{\"big\":true}'"), 1);
    assert_int_equal(store_referral_update(s, 12345, &sent, &err), -1);
    assert_non_null(strstr(err.msg, "does not exist"));
    int64_t n, oldest;
    assert_int_equal(store_referral_state_age(s, "approved", &n, &oldest, &err), 0);
    assert_int_equal(n, 1);
    assert_true(oldest > 0);

    /* audit since an id, and the write-back outbox */
    assert_int_equal(store_audit(s, "sender", "sent", id1, "sending", "sent", NULL, &err), 0);
    assert_int_equal(store_audit(s, "x", "note", 0, NULL, NULL, NULL, &err), 0);
    assert_int_equal(store_audit_since(s, 0, NULL, NULL, &err), 2);
    assert_int_equal(store_audit_since(s, 1, NULL, NULL, &err), 1);
    assert_int_equal(store_outbox_add(s, id1, "sent", 1, &err), 0);
    assert_int_equal(store_outbox_add(s, id1, "sent", 1, &err), 0); /* once */
    assert_int_equal(store_outbox_pending(s, 10, NULL, NULL, &err), 1);
    assert_int_equal(store_outbox_update(s, 1, "done", true, NULL, "Task/9", &err), 0);
    assert_int_equal(store_outbox_pending(s, 10, NULL, NULL, &err), 0);
    store_close(s);
}

/* A version 4 database with audit rows gets the tables of who is acting; its rows keep their
 * values and have no person (NULL columns), and the person columns work from then on. */
/* A version 6 database with referrals: they become episode 1 with no predecessor; a
 * proposal the screener cancelled is marked withdrawn, one a person cancelled is not. */
static void test_v6_to_episodes(void **state)
{
    (void)state;
    store *s = open_fresh("v6.db");
    store_close(s);
    raw_exec(UNDO_AFTER_V6
             "INSERT INTO referrals(id, placer_id, site_id, patient_id, center_id, indications, "
             "state, mode, urgency, created_ms, updated_ms) VALUES "
             "(1, 'CG-a', 's', 'p1', 'c1', 'x:y', 'cancelled', 'approval', 'routine', 1, 1),"
             "(2, 'CG-b', 's', 'p1', 'c2', 'x:y', 'cancelled', 'approval', 'routine', 1, 1),"
             "(3, 'CG-c', 's', 'p1', 'c3', 'x:y', 'sent', 'approval', 'routine', 1, 1);"
             "INSERT INTO audit(ts_ms, actor, action, referral_id, from_state, to_state) VALUES "
             "(1, 'screener', 'cancel', 1, 'pending_approval', 'cancelled'),"
             "(1, 'dr.a', 'cancel', 2, 'pending_approval', 'cancelled');"
             "PRAGMA user_version = 6;");
    fhir_error err = {0};
    s = store_open(dbpath, 0, &err);
    if (!s)
        fail_msg("store_open: %s", err.msg);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    assert_int_equal(raw_int("SELECT count(*) FROM referrals WHERE episode = 1 AND supersedes IS "
                             "NULL AND episode_marker IS NULL AND cancel_requested_ms = 0"), 3);
    assert_int_equal(raw_int("SELECT id FROM referrals WHERE ended = 'withdrawn'"), 1);
    assert_int_equal(raw_int("SELECT count(*) FROM referrals WHERE ended IS NULL"), 2);
    /* the new columns work */
    store_referral_change x = {.set_cancel_request = true, .cancel_requested_ms = 42,
                               .set_ended = true, .ended = "superseded"};
    assert_int_equal(store_referral_update(s, 3, &x, &err), 0);
    assert_int_equal(store_referral_cancel_due(s, NULL, NULL, &err), 1);
    x.cancel_requested_ms = 0;
    assert_int_equal(store_referral_update(s, 3, &x, &err), 0);
    assert_int_equal(store_referral_cancel_due(s, NULL, NULL, &err), 0);
    store_close(s);
}

static void test_v4_to_people(void **state)
{
    (void)state;
    store *s = open_fresh("v4.db");
    store_close(s);
    raw_exec(UNDO_AFTER_V4 "INSERT INTO audit(ts_ms, actor, action) VALUES (1, 'admin-api', 'approve');"
             "PRAGMA user_version = 4;");
    fhir_error err = {0};
    s = store_open(dbpath, 0, &err);
    if (!s)
        fail_msg("store_open: %s", err.msg);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    assert_int_equal(raw_int("SELECT count(*) FROM audit WHERE actor = 'admin-api' AND user_id IS NULL "
                             "AND role IS NULL AND source IS NULL AND reason IS NULL"), 1);
    store_user u = {.name = "dr.a", .role = "clinician"};
    int64_t uid = 0;
    assert_int_equal(store_user_add(s, &u, &uid, &err), 0);
    store_user bad = {.name = "DR.A", .role = "clinician"};
    assert_int_equal(store_user_add(s, &bad, NULL, &err), -1); /* names are case-insensitive */
    assert_int_equal(err.code, STORE_CONFLICT);
    store_user bad_role = {.name = "x", .role = "surgeon"};
    assert_int_equal(store_user_add(s, &bad_role, NULL, &err), -1);
    store_actor who = {.name = "dr.a", .user_id = uid, .role = "clinician", .source = "10.0.0.9",
                       .reason = "patient agrees"};
    assert_int_equal(store_audit_actor(s, &who, "approve", 0, NULL, NULL, NULL, &err), 0);
    assert_int_equal(raw_int("SELECT count(*) FROM audit WHERE actor = 'dr.a' AND user_id = 1 AND "
                             "role = 'clinician' AND source = '10.0.0.9' AND reason = 'patient agrees'"), 1);
    assert_int_equal(store_audit_list(s, 0, 0, 0, NULL, NULL, &err), 2); /* both are about no referral */
    assert_int_equal(store_audit_list(s, 0, 1, 0, NULL, NULL, &err), 1);
    store_close(s);
}

/* One patient for the retention test: a verdict (heme: 1, 0, or -1 = not recorded) and two
 * cached resources stored at stored_ms. */
static void retention_patient(store *s, const char *pid, const char *category, int heme, int64_t stored_ms)
{
    fhir_error err = {0};
    fhir_clock_set_fixed(stored_ms);
    char id[64];
    snprintf(id, sizeof id, "%s-c", pid);
    assert_int_equal(store_resource_put(s, pid, "Patient", pid, "{\"resourceType\":\"Patient\"}", 26, &err), 0);
    assert_int_equal(store_resource_put(s, pid, "Condition", id, "{\"resourceType\":\"Condition\"}", 28, &err), 0);
    assert_int_equal(store_verdict_put(s, pid, "h", category, NULL, "{}", &err), 0);
    if (heme >= 0)
        assert_int_equal(store_verdict_set_heme(s, pid, heme == 1, &err), 0);
    fhir_clock_set_fixed(-1);
}

/* store.retention: only the cached resources of patients screened without a heme diagnosis,
 * not candidates, never referred, nothing waiting, unchanged since the cutoff; a dry run
 * removes nothing; verdicts, referrals and the audit stay; the verdict is marked pruned until
 * it is made again. Re-screening everyone marks the patients with cached data. */
static void test_retention_prune(void **state)
{
    (void)state;
    store *s = open_fresh("retention.db");
    fhir_error err = {0};
    const int64_t old = 1000000000000LL, cutoff = old + 86400000LL, recent = cutoff + 1;
    retention_patient(s, "gone", "not_eligible", 0, old);        /* pruned */
    retention_patient(s, "gone2", "not_in_force", 0, old);       /* pruned */
    retention_patient(s, "heme", "not_eligible", 1, old);        /* a heme diagnosis: kept */
    retention_patient(s, "legacy", "not_eligible", -1, old);     /* not recorded: kept */
    retention_patient(s, "fresh", "not_eligible", 0, recent);    /* changed since: kept */
    retention_patient(s, "cand", "possibly_eligible", 0, old);   /* a candidate: kept */
    retention_patient(s, "refd", "not_eligible", 0, old);        /* a referral: kept */
    retention_patient(s, "dirty", "not_eligible", 0, old);       /* waiting to be screened: kept */
    retention_patient(s, "held", "not_eligible", 0, old);        /* held by a poll: kept */
    store_referral r = row_for("PR", "refd", "cancelled");
    int64_t rid;
    assert_int_equal(store_referral_insert(s, &r, &rid, &err), 1);
    assert_int_equal(store_dirty_mark(s, "dirty", &err), 0);
    assert_int_equal(store_held_mark(s, "ehr", "held", &err), 0);
    assert_int_equal(store_audit(s, "x", "note", 0, NULL, NULL, NULL, &err), 0);
    int64_t audit0 = store_audit_count(s, 0);

    store_prune_counts n;
    assert_int_equal(store_retention_prune(s, cutoff, false, &n, &err), 0);
    assert_int_equal(n.patients, 2);
    assert_int_equal(n.resources, 4);
    assert_int_equal(raw_int("SELECT count(*) FROM resources"), 18); /* a dry run removes nothing */
    assert_int_equal(store_verdict_pruned(s, "gone"), 0);

    assert_int_equal(store_retention_prune(s, cutoff, true, &n, &err), 0);
    assert_int_equal(n.patients, 2);
    assert_int_equal(n.resources, 4);
    assert_int_equal(raw_int("SELECT count(*) FROM resources"), 14);
    assert_int_equal(store_resource_count(s, "gone"), 0);
    assert_int_equal(store_resource_count(s, "gone2"), 0);
    const char *kept[] = {"heme", "legacy", "fresh", "cand", "refd", "dirty", "held"};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        assert_int_equal(store_resource_count(s, kept[i]), 2);
    assert_int_equal(raw_int("SELECT count(*) FROM verdicts"), 9);      /* every verdict stays */
    assert_int_equal(raw_int("SELECT count(*) FROM referrals"), 1);
    assert_int_equal(store_audit_count(s, 0), audit0);
    assert_true(store_verdict_pruned(s, "gone") > 0);
    assert_int_equal(store_verdict_pruned(s, "heme"), 0);
    assert_int_equal(store_retention_prune(s, cutoff, true, &n, &err), 0); /* nothing left to do */
    assert_int_equal(n.resources, 0);

    /* everyone with cached data is marked again; the pruned patients have none */
    int64_t all = 0;
    assert_int_equal(store_dirty_mark_all(s, &all, &err), 0);
    assert_int_equal(all, 7);
    assert_int_equal(raw_int("SELECT count(*) FROM daemon_dirty WHERE patient_id IN ('gone','gone2')"), 0);
    /* a verdict made again from cached data clears the mark */
    assert_int_equal(store_verdict_set_heme(s, "gone", false, &err), 0);
    assert_int_equal(store_verdict_pruned(s, "gone"), 0);
    store_close(s);
}

/* ---- a referral's verdict shared with the verdicts row (migration 16) ----------------------- */

static int copy_verdict(void *ctx, const store_referral *r)
{
    char **out = ctx;
    free(*out);
    *out = r->verdict_json ? strdup(r->verdict_json) : NULL;
    return 0;
}

/* The referral's verdict as the store reads it, and whether the row holds its own copy. */
static void expect_ref_verdict(store *s, int64_t id, const char *want, bool own_copy)
{
    fhir_error err = {0};
    char *got = NULL;
    assert_int_equal(store_referral_get(s, id, copy_verdict, &got, &err), 1);
    if (want)
        assert_string_equal(got, want);
    else
        assert_null(got);
    free(got);
    char q[128];
    snprintf(q, sizeof q, "SELECT typeof(verdict_json) = 'blob' FROM referrals WHERE id = %lld", (long long)id);
    assert_int_equal(raw_int(q), own_copy ? 0 : 1);
}

static void test_referral_verdict_shared(void **state)
{
    (void)state;
    store *s = open_fresh("share.db");
    fhir_error err = {0};
    const char *v1 = "{\"v\":1}", *v2 = "{\"v\":2}";
    assert_int_equal(store_verdict_put(s, "p", "h", "eligible", "{}", v1, &err), 0);
    /* proposed on the verdict the patient has: one copy, in the verdicts row */
    store_referral r = row_for("pl-1", "p", "pending_approval");
    r.verdict_json = v1;
    int64_t a, b, c, d;
    assert_int_equal(store_referral_insert(s, &r, &a, &err), 1);
    expect_ref_verdict(s, a, v1, false);
    /* on another text, or without a verdict row, or without a verdict: its own */
    r = row_for("pl-2", "p", "sent");
    r.verdict_json = v2;
    assert_int_equal(store_referral_insert(s, &r, &b, &err), 1);
    expect_ref_verdict(s, b, v2, true);
    r = row_for("pl-3", "nobody", "sent");
    assert_int_equal(store_referral_insert(s, &r, &c, &err), 1);
    expect_ref_verdict(s, c, "{}", true);
    r = row_for("pl-4", "p", "sent");
    r.verdict_json = NULL;
    assert_int_equal(store_referral_insert(s, &r, &d, &err), 1);
    expect_ref_verdict(s, d, NULL, true);
    /* the same verdict written again: still shared; a new one: the referral keeps v1 */
    assert_int_equal(store_verdict_put_screened(s, "p", "h", "eligible", "{}", v1, true, NULL, &err), 0);
    expect_ref_verdict(s, a, v1, false);
    assert_int_equal(store_verdict_put(s, "p", "h", "eligible", "{}", v2, &err), 0);
    expect_ref_verdict(s, a, v1, true);
    expect_ref_verdict(s, b, v2, true);
    /* a proposal updated with the verdict of now shares it; the verdict removed: kept */
    store_referral_change u = {.set_proposal = true, .placer_id = "pl-1", .center_id = "ctr",
                               .indications = "x:y", .urgency = "routine", .explanation = "why",
                               .verdict_json = v2};
    assert_int_equal(store_referral_update(s, a, &u, &err), 0);
    expect_ref_verdict(s, a, v2, false);
    assert_int_equal(store_verdict_delete(s, "p", &err), 0);
    expect_ref_verdict(s, a, v2, true);
    /* lists read it the same way */
    store_referral_filter mine = {.patient_id = "p"};
    char *got = NULL;
    assert_int_equal(store_referral_each(s, &mine, copy_verdict, &got, &err), 3);
    assert_null(got); /* the last row by id: pl-4 without a verdict */
    free(got);
    store_close(s);
}

/* ---- the per-patient work does not grow with the store ------------------------------------ */

/* Every statement the daemon runs per patient or per referral finds its rows through an index:
 * no plan line scans a table. The one ordered walk allowed is the head of the screening queue
 * (daemon_dirty_order with a LIMIT). Reads of the resource cache do not sort. */
static int plan_line(void *ctx, const char *sql, const char *detail)
{
    int *n = ctx;
    (*n)++;
    if (!strncmp(detail, "SCAN ", 5) &&
        !(strstr(detail, "COVERING INDEX daemon_dirty_order") && strstr(sql, " LIMIT ")))
        fail_msg("a per-patient statement scans: %s\n  in: %s", detail, sql);
    /* a patient's cached resources are read as they lie: a sort would copy each row, JSON and
     * all, through a temporary b-tree */
    if (strstr(detail, "TEMP B-TREE") && strstr(sql, "FROM resources"))
        fail_msg("a per-patient read of the cache sorts: %s\n  in: %s", detail, sql);
    return 0;
}

static void test_per_patient_plans(void **state)
{
    (void)state;
    store *s = open_fresh("plans.db");
    fhir_error err = {0};
    int lines = 0;
    assert_int_equal(store_plan_each(s, plan_line, &lines, &err), 0);
    assert_true(lines > 20);
    store_close(s);
}


/* What the daemon does for one patient, through the store: the poll caches three resources and
 * holds the patient, the completed poll releases it, the screener reads the cache, writes the
 * verdict (worklist trigger), looks up the patient's referrals, proposes one (audit row) and
 * clears the mark; then the sender moves it on. */
static void one_patient(store *s, const char *pid)
{
    fhir_error err = {0};
    static const char *const types[] = {"Patient", "Condition", "Observation"};
    char id[64], json[256], placer[64];
    assert_int_equal(store_begin(s, &err), 0);
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "%s-%d", pid, i);
        snprintf(json, sizeof json, "{\"resourceType\":\"%s\",\"id\":\"%s\"}", types[i], id);
        bool changed = false;
        assert_int_equal(store_resource_upsert(s, pid, types[i], id, json, strlen(json), &changed,
                                               &err), 0);
        assert_true(changed);
        assert_int_equal(store_held_mark(s, "ehr", pid, &err), 0);
    }
    assert_int_equal(store_commit(s, &err), 0);
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_held_release(s, "ehr", &err), 0);
    assert_int_equal(store_commit(s, &err), 0);

    assert_int_equal(store_begin(s, &err), 0);
    char *ids[4] = {0};
    assert_int_equal(store_dirty_next(s, ids, 4, &err), 1);
    assert_string_equal(ids[0], pid);
    free(ids[0]);
    assert_int_equal(store_resource_each(s, pid, NULL, NULL, &err), 3);
    assert_int_equal(store_verdict_pruned(s, pid), 0);
    char *old = NULL;
    assert_int_equal(store_verdict_get(s, pid, NULL, &old, NULL, &err), 0);
    assert_int_equal(store_verdict_put_screened(s, pid, "h", "eligible", PROFILE_WITH_EVENTS,
                                                VERDICT_WITH_PRODUCTS, true, &typed_wl, &err), 0);
    store_referral_filter mine = {.patient_id = pid, .summary = true};
    assert_int_equal(store_referral_each(s, &mine, NULL, NULL, &err), 0);
    assert_int_equal(store_referral_ids(s, pid, "pending_approval", NULL, NULL, &err), 0);
    snprintf(placer, sizeof placer, "placer-%s", pid);
    int64_t rid = 0, again = 0;
    store_referral r = row_for(placer, pid, "pending_approval");
    assert_int_equal(store_referral_find(s, placer, &again, &err), 0);
    assert_int_equal(store_referral_insert(s, &r, &rid, &err), 1);
    assert_int_equal(store_audit(s, "screener", "create", rid, NULL, "pending_approval", NULL, &err), 0);
    assert_int_equal(store_dirty_clear(s, pid, &err), 0);
    assert_int_equal(store_commit(s, &err), 0);

    assert_int_equal(store_begin(s, &err), 0);
    store_referral_change u = {.state = "sent", .set_center_refs = true,
                               .center_sr_ref = "ServiceRequest/1", .center_task_ref = "Task/1"};
    assert_int_equal(store_referral_update(s, rid, &u, &err), 0);
    assert_int_equal(store_audit(s, "sender", "sent", rid, "pending_approval", "sent", NULL, &err), 0);
    assert_int_equal(store_outbox_add(s, rid, "sent", 1, &err), 0);
    char st[32];
    assert_int_equal(store_referral_state(s, rid, st, sizeof st, &err), 1);
    assert_int_equal(store_audit_count(s, rid), 2);
    assert_int_equal(store_commit(s, &err), 0);
}

/* The same patient's work, counted in SQLite virtual machine steps (triggers included), is the
 * same with 3 other patients in the store and with 1,000 more: a statement that regressed into
 * a scan of resources, verdicts, referrals, the worklist or the audit would add a step for each
 * row it passes. */
static void test_per_patient_work_flat(void **state)
{
    (void)state;
    store *s = open_fresh("flat.db");
    fhir_error err = {0};
    char pid[32];
    for (int i = 0; i < 3; i++) {
        snprintf(pid, sizeof pid, "warm-%d", i);
        one_patient(s, pid);
    }
    store_work small, big;
    store_work_take(s, &small);
    one_patient(s, "probe-small");
    store_work_take(s, &small);

    /* grow the store: 1,000 patients with resources, verdicts, referrals and audit rows (one
     * transaction, as a large poll and screening would leave them) */
    assert_int_equal(store_begin(s, &err), 0);
    for (int i = 0; i < 1000; i++) {
        char id[48], placer[48];
        snprintf(pid, sizeof pid, "bulk-%d", i);
        for (int k = 0; k < 3; k++) {
            bool changed;
            snprintf(id, sizeof id, "%s-%d", pid, k);
            assert_int_equal(store_resource_upsert(s, pid, k ? "Observation" : "Patient", id,
                                                   "{\"resourceType\":\"Observation\"}", 30,
                                                   &changed, &err), 0);
        }
        assert_int_equal(store_verdict_put_screened(s, pid, "h", i % 2 ? "eligible" : "not_eligible",
                                                    PROFILE_WITH_EVENTS, VERDICT_WITH_PRODUCTS,
                                                    i % 3 == 0, &typed_wl, &err), 0);
        snprintf(placer, sizeof placer, "placer-%s", pid);
        store_referral r = row_for(placer, pid, i % 2 ? "pending_approval" : "sent");
        int64_t rid;
        assert_int_equal(store_referral_insert(s, &r, &rid, &err), 1);
        assert_int_equal(store_audit(s, "screener", "create", rid, NULL, r.state, NULL, &err), 0);
    }
    assert_int_equal(store_commit(s, &err), 0);
    store_work_take(s, &big);
    one_patient(s, "probe-big__");
    store_work_take(s, &big);

    assert_true(small.vm_steps > 100);
    assert_int_equal(small.fullscan_steps, 0);
    assert_int_equal(big.fullscan_steps, 0);
    if (big.vm_steps != small.vm_steps)
        fail_msg("one patient's work grew with the store: %lld VM steps with 4 patients, %lld "
                 "with 1,004", (long long)small.vm_steps, (long long)big.vm_steps);
    store_close(s);
}

/* Writes the schema the steps make as store_snapshot.inc (a C string literal, one statement a
 * line) to path. */
static void write_snapshot(const char *path, const char *sql)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "/* Generated: the store's schema at version %d, as SQLite holds it after every migration\n"
               " * step on a new database (store.c creates a new database from it in one step). Do not\n"
               " * edit: after adding a step, run\n"
               " *   CARTGATE_WRITE_SNAPSHOT=gateway/store/store_snapshot.inc build/test_store\n"
               " * from the repository (test_store fails while this differs from what the steps make). */\n"
               "#define STORE_SNAPSHOT_VERSION %d\n"
               "static const char store_snapshot_sql[] =\n",
            STORE_SCHEMA_VERSION, STORE_SCHEMA_VERSION);
    for (const char *p = sql; *p;) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        fputs("    \"", f);
        for (size_t i = 0; i < n; i++) {
            if (p[i] == '"' || p[i] == '\\')
                fputc('\\', f);
            fputc(p[i], f);
        }
        fputs(e ? "\\n\"\n" : "\"\n", f);
        p += n + (e ? 1 : 0);
    }
    fputs("    \"\";\n", f);
    assert_int_equal(fclose(f), 0);
}

/* A new store is created from the snapshot of the schema (store_snapshot.inc), not by the
 * steps: the two make the same schema, statement for statement, and the steps write no row
 * into a new database (the snapshot has none). */
static void test_schema_snapshot(void **state)
{
    (void)state;
    fhir_buf steps, snap;
    fhir_buf_init(&steps, 1u << 20);
    fhir_buf_init(&snap, 1u << 20);
    fhir_error err;
    if (store_schema_sql(&steps, false, &err))
        fail_msg("the steps' schema: %s", err.msg);
    const char *out = getenv("CARTGATE_WRITE_SNAPSHOT");
    if (out && *out)
        write_snapshot(out, fhir_buf_cstr(&steps));
    if (store_schema_sql(&snap, true, &err))
        fail_msg("%s: regenerate it with CARTGATE_WRITE_SNAPSHOT=gateway/store/store_snapshot.inc "
                 "build/test_store", err.msg);
    if (strcmp(fhir_buf_cstr(&steps), fhir_buf_cstr(&snap)))
        fail_msg("store_snapshot.inc differs from the schema the migration steps make: regenerate "
                 "it with CARTGATE_WRITE_SNAPSHOT=gateway/store/store_snapshot.inc build/test_store");
    assert_true(steps.len > 1000);
    /* a new file gets it at the current version */
    char path[] = "/tmp/cg-snapshot-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    unlink(path);
    store *s = store_open(path, 0, &err);
    assert_non_null(s);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    store_close(s);
    char side[sizeof path + 8];
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    fhir_buf_free(&steps);
    fhir_buf_free(&snap);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_snapshot),
        cmocka_unit_test(test_migrate_from_empty),
        cmocka_unit_test(test_resource_binary_form),
        cmocka_unit_test(test_newer_schema_refused),
        cmocka_unit_test(test_migration_all_or_nothing),
        cmocka_unit_test(test_unopenable_path),
        cmocka_unit_test(test_files_private),
        cmocka_unit_test(test_concurrent_first_open),
        cmocka_unit_test(test_transactions_and_audit),
        cmocka_unit_test(test_cursors_resources_verdicts),
        cmocka_unit_test(test_adopt_v1_stray_tables),
        cmocka_unit_test(test_v1_without_stray_tables),
        cmocka_unit_test(test_v4_to_people),
        cmocka_unit_test(test_v6_to_episodes),
        cmocka_unit_test(test_savepoint),
        cmocka_unit_test(test_ingest_group),
        cmocka_unit_test(test_worklist_typed),
        cmocka_unit_test(test_referral_verdict_shared),
        cmocka_unit_test(test_compose_cause_columns),
        cmocka_unit_test(test_intake_versions),
        cmocka_unit_test(test_cds_tables),
        cmocka_unit_test(test_resource_upsert_and_dirty),
        cmocka_unit_test(test_resource_meta_columns),
        cmocka_unit_test(test_held_until_released),
        cmocka_unit_test(test_held_memo),
        cmocka_unit_test(test_referral_rows),
        cmocka_unit_test(test_retention_prune),
        cmocka_unit_test(test_per_patient_plans),
        cmocka_unit_test(test_per_patient_work_flat),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
