/* store — SQLite schema, migrations, transactions and small accessors. */
#include "store.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_clock.h"

struct store {
    sqlite3 *db;
    char *path;
    bool in_tx;
};

/* Migration i brings the schema from version i to i+1. Append only; never edit a shipped
 * step. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE referrals ("
    "  id INTEGER PRIMARY KEY,"
    "  placer_id TEXT NOT NULL UNIQUE,"          /* deterministic business identifier */
    "  site_id TEXT NOT NULL,"
    "  patient_id TEXT NOT NULL,"                /* pseudonymous id (safe for logs) */
    "  center_id TEXT NOT NULL,"
    "  indications TEXT NOT NULL,"               /* sorted, comma-separated keys */
    "  state TEXT NOT NULL,"
    "  mode TEXT NOT NULL CHECK (mode IN ('approval','auto')),"
    "  urgency TEXT NOT NULL,"
    "  explanation TEXT,"                        /* human-readable summary */
    "  verdict_json TEXT,"
    "  route_json TEXT,"
    "  payload TEXT,"                            /* transaction Bundle, frozen before send */
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_status INTEGER,"                     /* last HTTP status (0 = network) */
    "  last_error TEXT,"
    "  last_response TEXT,"                      /* kept for dead letters */
    "  center_sr_ref TEXT,"                      /* ServiceRequest/<id> at the center */
    "  center_task_ref TEXT,"                    /* Task/<id> at the center */
    "  task_status TEXT,"
    "  business_status TEXT,"
    "  created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL"
    ");"
    "CREATE INDEX referrals_state ON referrals(state, center_id, next_attempt_ms);"
    "CREATE INDEX referrals_patient ON referrals(patient_id);"
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY,"
    "  ts_ms INTEGER NOT NULL,"
    "  actor TEXT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  referral_id INTEGER REFERENCES referrals(id),"
    "  from_state TEXT,"
    "  to_state TEXT,"
    "  detail TEXT"
    ");"
    "CREATE INDEX audit_referral ON audit(referral_id, id);"
    "CREATE TABLE cursors ("
    "  source TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (source, key)"
    ");"
    "CREATE TABLE resources ("
    "  type TEXT NOT NULL,"
    "  id TEXT NOT NULL,"
    "  patient_id TEXT NOT NULL,"
    "  version TEXT,"
    "  last_updated TEXT,"
    "  json TEXT NOT NULL,"
    "  stored_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (type, id)"
    ");"
    "CREATE INDEX resources_patient ON resources(patient_id);"
    "CREATE TABLE verdicts ("
    "  patient_id TEXT PRIMARY KEY,"
    "  ruleset_hash TEXT NOT NULL,"
    "  category TEXT NOT NULL,"
    "  profile_json TEXT,"
    "  verdict_json TEXT,"
    "  updated_ms INTEGER NOT NULL"
    ");",
};

#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

static int sql_fail(store *s, fhir_error *err, const char *what)
{
    return fhir_error_set(err, "%s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

static int exec(store *s, const char *sql, fhir_error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fhir_error_set(err, "%s: %s", s->path, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int store_schema_version(store *s)
{
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int migrate(store *s, fhir_error *err)
{
    int v = store_schema_version(s);
    if (v < 0)
        return sql_fail(s, err, "reading schema version");
    if (v > N_MIGRATIONS)
        return fhir_error_set(err, "%s: schema version %d is newer than this cartgate "
                                   "understands (%d); refusing to open", s->path, v,
                              N_MIGRATIONS);
    for (; v < N_MIGRATIONS; v++) {
        if (store_begin(s, err))
            return -1;
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
        if (exec(s, migrations[v], err) || exec(s, pragma, err)) {
            fhir_error_prefix(err, "migration %d -> %d", v, v + 1);
            store_rollback(s);
            return -1;
        }
        if (store_commit(s, err))
            return -1;
    }
    return 0;
}

store *store_open(const char *path, int busy_timeout_ms, fhir_error *err)
{
    store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path)))
        abort();
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                          SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        fhir_error_set(err, "%s: cannot open database: %s", path,
                       s->db ? sqlite3_errmsg(s->db) : "out of memory");
        store_close(s);
        return NULL;
    }
    sqlite3_busy_timeout(s->db, busy_timeout_ms > 0 ? busy_timeout_ms : 5000);
    sqlite3_extended_result_codes(s->db, 1);
    /* journal_mode returns a row; check it really switched to WAL */
    sqlite3_stmt *st;
    bool wal = false;
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            const char *m = (const char *)sqlite3_column_text(st, 0);
            wal = m && !strcmp(m, "wal");
        }
        sqlite3_finalize(st);
    }
    if (!wal) {
        fhir_error_set(err, "%s: cannot switch to WAL journal mode: %s", path,
                       sqlite3_errmsg(s->db));
        store_close(s);
        return NULL;
    }
    if (exec(s, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;", err) || migrate(s, err)) {
        store_close(s);
        return NULL;
    }
    return s;
}

void store_close(store *s)
{
    if (!s)
        return;
    if (s->db)
        sqlite3_close_v2(s->db);
    free(s->path);
    free(s);
}

sqlite3 *store_db(store *s)
{
    return s->db;
}

const char *store_path(const store *s)
{
    return s->path;
}

int store_begin(store *s, fhir_error *err)
{
    if (s->in_tx)
        return fhir_error_set(err, "%s: transaction already open (nested begin)", s->path);
    if (exec(s, "BEGIN IMMEDIATE", err))
        return -1;
    s->in_tx = true;
    return 0;
}

int store_commit(store *s, fhir_error *err)
{
    if (!s->in_tx)
        return fhir_error_set(err, "%s: commit without a transaction", s->path);
    if (exec(s, "COMMIT", err)) {
        store_rollback(s);
        return -1;
    }
    s->in_tx = false;
    return 0;
}

void store_rollback(store *s)
{
    if (!s->in_tx)
        return;
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->in_tx = false;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

int store_audit(store *s, const char *actor, const char *action, int64_t referral_id,
                const char *from_state, const char *to_state, const char *detail,
                fhir_error *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO audit(ts_ms, actor, action, referral_id, from_state, "
                           "to_state, detail) VALUES (?,?,?,?,?,?,?)",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(s, err, "audit");
    sqlite3_bind_int64(st, 1, fhir_clock_now_ms());
    bind_text(st, 2, actor ? actor : "system");
    bind_text(st, 3, action);
    if (referral_id > 0)
        sqlite3_bind_int64(st, 4, referral_id);
    else
        sqlite3_bind_null(st, 4);
    bind_text(st, 5, from_state);
    bind_text(st, 6, to_state);
    bind_text(st, 7, detail);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_fail(s, err, "audit insert");
    return 0;
}

int64_t store_audit_each(store *s, int64_t referral_id, store_audit_fn fn, void *ctx,
                         fhir_error *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT ts_ms, actor, action, from_state, to_state, detail FROM audit "
                           "WHERE (?1 <= 0 OR referral_id = ?1) ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(s, err, "audit read");
    sqlite3_bind_int64(st, 1, referral_id);
    int64_t n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        n++;
        if (fn && fn(ctx, sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
                     (const char *)sqlite3_column_text(st, 2),
                     (const char *)sqlite3_column_text(st, 3),
                     (const char *)sqlite3_column_text(st, 4),
                     (const char *)sqlite3_column_text(st, 5))) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_fail(s, err, "audit read");
    return n;
}

int64_t store_audit_count(store *s, int64_t referral_id)
{
    sqlite3_stmt *st;
    const char *sql = referral_id > 0 ? "SELECT count(*) FROM audit WHERE referral_id = ?"
                                      : "SELECT count(*) FROM audit";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (referral_id > 0)
        sqlite3_bind_int64(st, 1, referral_id);
    int64_t n = -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static char *dup_col(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    if (!t)
        return NULL;
    char *r = strdup((const char *)t);
    if (!r)
        abort();
    return r;
}

int store_cursor_get(store *s, const char *source, const char *key, char **value_out,
                     fhir_error *err)
{
    *value_out = NULL;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT value FROM cursors WHERE source = ? AND key = ?", -1,
                           &st, NULL) != SQLITE_OK)
        return sql_fail(s, err, "cursor read");
    bind_text(st, 1, source);
    bind_text(st, 2, key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *value_out = dup_col(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_fail(s, err, "cursor read");
    return 0;
}

int store_cursor_put(store *s, const char *source, const char *key, const char *value,
                     fhir_error *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO cursors(source, key, value, updated_ms) VALUES (?,?,?,?) "
                           "ON CONFLICT(source, key) DO UPDATE SET value = excluded.value, "
                           "updated_ms = excluded.updated_ms",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(s, err, "cursor write");
    bind_text(st, 1, source);
    bind_text(st, 2, key);
    bind_text(st, 3, value);
    sqlite3_bind_int64(st, 4, fhir_clock_now_ms());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(s, err, "cursor write");
}

int store_resource_put(store *s, const char *patient_id, const char *type, const char *id,
                       const char *version, const char *last_updated, const char *json,
                       fhir_error *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO resources(type, id, patient_id, version, last_updated, "
                           "json, stored_ms) VALUES (?,?,?,?,?,?,?) ON CONFLICT(type, id) DO "
                           "UPDATE SET patient_id = excluded.patient_id, version = "
                           "excluded.version, last_updated = excluded.last_updated, json = "
                           "excluded.json, stored_ms = excluded.stored_ms",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(s, err, "resource write");
    bind_text(st, 1, type);
    bind_text(st, 2, id);
    bind_text(st, 3, patient_id);
    bind_text(st, 4, version);
    bind_text(st, 5, last_updated);
    bind_text(st, 6, json);
    sqlite3_bind_int64(st, 7, fhir_clock_now_ms());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(s, err, "resource write");
}

int64_t store_resource_each(store *s, const char *patient_id, store_resource_fn fn, void *ctx,
                            fhir_error *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT type, id, json FROM resources WHERE patient_id = ? "
                           "ORDER BY type, id",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(s, err, "resource read");
    bind_text(st, 1, patient_id);
    int64_t n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        n++;
        if (fn && fn(ctx, (const char *)sqlite3_column_text(st, 0),
                     (const char *)sqlite3_column_text(st, 1),
                     (const char *)sqlite3_column_text(st, 2))) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_fail(s, err, "resource read");
    return n;
}

int store_verdict_put(store *s, const char *patient_id, const char *ruleset_hash,
                      const char *category, const char *profile_json, const char *verdict_json,
                      fhir_error *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO verdicts(patient_id, ruleset_hash, category, "
                           "profile_json, verdict_json, updated_ms) VALUES (?,?,?,?,?,?) ON "
                           "CONFLICT(patient_id) DO UPDATE SET ruleset_hash = "
                           "excluded.ruleset_hash, category = excluded.category, profile_json "
                           "= excluded.profile_json, verdict_json = excluded.verdict_json, "
                           "updated_ms = excluded.updated_ms",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(s, err, "verdict write");
    bind_text(st, 1, patient_id);
    bind_text(st, 2, ruleset_hash);
    bind_text(st, 3, category);
    bind_text(st, 4, profile_json);
    bind_text(st, 5, verdict_json);
    sqlite3_bind_int64(st, 6, fhir_clock_now_ms());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(s, err, "verdict write");
}

int store_verdict_get(store *s, const char *patient_id, char **ruleset_hash_out,
                      char **category_out, char **verdict_json_out, fhir_error *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT ruleset_hash, category, verdict_json FROM verdicts WHERE "
                           "patient_id = ?",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(s, err, "verdict read");
    bind_text(st, 1, patient_id);
    int rc = sqlite3_step(st), found = 0;
    if (rc == SQLITE_ROW) {
        found = 1;
        if (ruleset_hash_out)
            *ruleset_hash_out = dup_col(st, 0);
        if (category_out)
            *category_out = dup_col(st, 1);
        if (verdict_json_out)
            *verdict_json_out = dup_col(st, 2);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_fail(s, err, "verdict read");
    return found;
}
