/* store — the SQLite store of the daemon: referrals (outbox), audit log, poll cursors,
 * per-patient resource cache, profiles and verdicts (with the rule-set hash).
 *
 * Durability: WAL journal, synchronous=FULL (every commit is on disk before it returns),
 * foreign keys on, busy timeout. The schema is versioned with PRAGMA user_version and
 * migrated forward on open, one transaction per step; a database newer than this binary
 * is refused. Nothing here prunes undelivered referrals.
 *
 * One store handle per thread of control (SQLite connection). */
#ifndef STORE_H
#define STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_error.h"

typedef struct store store;
typedef struct sqlite3 sqlite3;

/* Schema version this binary writes. */
#define STORE_SCHEMA_VERSION 1

/* Opens (creating when absent) and migrates. Caller closes with store_close(). NULL with err
 * ("path: cause") on failure. busy_timeout_ms == 0 means 5000. */
store *store_open(const char *path, int busy_timeout_ms, fhir_error *err);
void store_close(store *s);

/* The underlying connection, borrowed (valid until store_close), for modules that keep
 * their own SQL (referral.c). */
sqlite3 *store_db(store *s);
const char *store_path(const store *s);
/* Current PRAGMA user_version. */
int store_schema_version(store *s);

/* Transactions: BEGIN IMMEDIATE (takes the write lock up front, so a concurrent writer waits
 * for the busy timeout instead of failing mid-way). Nested calls are an error. */
int store_begin(store *s, fhir_error *err);
int store_commit(store *s, fhir_error *err);
void store_rollback(store *s);

/* Appends one audit row (inside the caller's transaction when one is open).
 * referral_id <= 0 means "not about a referral". from/to/detail may be NULL. */
int store_audit(store *s, const char *actor, const char *action, int64_t referral_id,
                const char *from_state, const char *to_state, const char *detail,
                fhir_error *err);
/* Calls fn for each audit row of a referral (all rows when referral_id <= 0), oldest first.
 * Strings are borrowed for the call; fn returns non-zero to stop. Returns rows visited or
 * -1. */
typedef int (*store_audit_fn)(void *ctx, int64_t ts_ms, const char *actor, const char *action,
                              const char *from_state, const char *to_state, const char *detail);
int64_t store_audit_each(store *s, int64_t referral_id, store_audit_fn fn, void *ctx,
                         fhir_error *err);
/* Number of audit rows (all, or for one referral when referral_id > 0). -1 on error. */
int64_t store_audit_count(store *s, int64_t referral_id);

/* ---- cursors (for the pollers) ------------------------------------------------------- */
/* Caller frees *value_out (NULL when absent). 0 ok (absent included), -1 error. */
int store_cursor_get(store *s, const char *source, const char *key, char **value_out,
                     fhir_error *err);
int store_cursor_put(store *s, const char *source, const char *key, const char *value,
                     fhir_error *err);

/* ---- patient resource cache --------------------------------------------------------- */
/* Upserts one resource (JSON text) keyed by type/id. */
int store_resource_put(store *s, const char *patient_id, const char *type, const char *id,
                       const char *version, const char *last_updated, const char *json,
                       fhir_error *err);
/* Calls fn for every cached resource of the patient (borrowed strings, valid during the
 * call); fn returns non-zero to stop. Returns the count visited or -1. */
typedef int (*store_resource_fn)(void *ctx, const char *type, const char *id, const char *json);
int64_t store_resource_each(store *s, const char *patient_id, store_resource_fn fn, void *ctx,
                            fhir_error *err);

/* ---- profiles and verdicts ---------------------------------------------------------- */
int store_verdict_put(store *s, const char *patient_id, const char *ruleset_hash,
                      const char *category, const char *profile_json, const char *verdict_json,
                      fhir_error *err);
/* Caller frees the out strings (NULL allowed for the ones not wanted). 1 found, 0 absent,
 * -1 error. */
int store_verdict_get(store *s, const char *patient_id, char **ruleset_hash_out,
                      char **category_out, char **verdict_json_out, fhir_error *err);

#endif
