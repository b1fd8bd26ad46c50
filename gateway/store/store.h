/* store — what is remembered: every table, every migration and every SQL statement of the
 * gateway (referrals and their audit log, poll cursors, the per-patient resource cache,
 * profiles and verdicts, the patients still to screen, the EHR write-back outbox). No other
 * room includes <sqlite3.h>; they call the typed functions below.
 *
 * Durability: WAL journal, synchronous=FULL (every commit is on disk before it returns),
 * foreign keys on, busy timeout. The schema is versioned with PRAGMA user_version and
 * migrated forward on open, one transaction per step; a database newer than this binary
 * is refused. Nothing here prunes referrals, verdicts or the audit; store_retention_prune
 * removes only cached resources (store.retention).
 *
 * Statements are prepared once per handle and kept until store_close (a statement still in
 * use by an outer iteration is prepared afresh for the inner call). Rows handed to callbacks
 * are borrowed: their strings are valid during the call only.
 *
 * One store handle per thread of control (SQLite connection). The store knows tables and
 * strings, never the types of the rooms above it (a referral's state is its name). */
#ifndef STORE_H
#define STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_buf.h"
#include "fhir_error.h"

typedef struct store store;

/* Schema version this binary writes (the number of migration steps in store.c). */
#define STORE_SCHEMA_VERSION 18
/* Page cache per connection (PRAGMA cache_size; a cap, filled as used): a screening batch's
 * writes fit in it without spilling to the WAL before the commit. */
#define STORE_CACHE_KIB 16384u
/* Page size of a new database file (bytes; SQLite's default is 4096). */
#define STORE_PAGE_SIZE_STR "16384"
/* The (source, patient) pairs a handle remembers as held (store_held_mark) so that a poll's
 * later pages mark each patient with no statement: the memo grows with the patients a poll
 * names, up to STORE_HELD_MEMO_MAX bytes of pairs and STORE_HELD_MEMO_PAIRS pairs (their table
 * 8 bytes a pair: 1 MiB); full, it is forgotten and the pairs are marked again (one statement
 * each). About 120,000 patients of 12-character ids. */
#define STORE_HELD_MEMO_MAX (2u * 1024u * 1024u)
#define STORE_HELD_MEMO_PAIRS (128u * 1024u)

/* Opens (creating when absent) and migrates. Caller closes with store_close(). NULL with err
 * ("path: cause") on failure. busy_timeout_ms == 0 means 5000. */
store *store_open(const char *path, int busy_timeout_ms, fhir_error *err);
/* Same for a database that must exist already (an operator's --db): a path that does not
 * exist is an error ("path: no such database ..."), nothing is created. */
store *store_open_existing(const char *path, int busy_timeout_ms, fhir_error *err);
void store_close(store *s);

/* Borrowed until store_close. */
const char *store_path(const store *s);
/* Current PRAGMA user_version. */
int store_schema_version(store *s);
/* The schema (every CREATE statement, as SQLite holds it, in its order, each ending ";\n")
 * appended to out: of a new database made by the migration steps, or from the snapshot a new
 * store is created from (store_snapshot.inc); the two must be the same. 0, or -1 with err. */
int store_schema_sql(fhir_buf *out, bool from_snapshot, fhir_error *err);
/* PRAGMA synchronous of this connection (2 = FULL), -1 on error. */
int store_synchronous(store *s);
/* The SQLite library version ("3.40.1"); static string. */
const char *store_sqlite_version(void);

/* Transactions: BEGIN IMMEDIATE (takes the write lock up front, so a concurrent writer waits
 * for the busy timeout instead of failing mid-way). Nested calls are an error. */
int store_begin(store *s, fhir_error *err);
int store_commit(store *s, fhir_error *err);
void store_rollback(store *s);
/* Whether a transaction is open for the caller (an open group, below, commits first). */
bool store_in_transaction(store *s);

/* Ingest groups: one transaction (BEGIN IMMEDIATE) kept open across an owner's consecutive
 * units of work (a poll's search pages), committed when the owner flushes it. Between its
 * units (after store_group_end, before the next store_group_begin) ANY other use of the
 * handle (every function of this header, another owner's group included) first commits the
 * group, so other callers never join, delay or roll back its writes; a store_rollback by the
 * owner inside a unit undoes the whole group. A commit that fails rolls the group back; when
 * it was not the owner's own call, lost(owner, message) tells the owner (from inside that
 * other call). The owner must flush or drop its group before it goes away. */
typedef void (*store_group_lost_fn)(void *owner, const char *msg);
/* The owner's unit of work starts: joins its open group, else opens one (after committing
 * any other owner's). 1 a group was opened, 0 joined, -1 with err (e.g. a transaction of
 * another caller open). */
int store_group_begin(store *s, void *owner, store_group_lost_fn lost, fhir_error *err);
/* The owner's unit of work ends; with flush the group commits: 0, or -1 with err (the group
 * rolled back). */
int store_group_end(store *s, bool flush, fhir_error *err);
/* Commits the owner's group if still open (a timer, the end of a poll): 1 committed, 0 none
 * open, -1 with err (the group rolled back). */
int store_group_flush(store *s, const void *owner, fhir_error *err);
/* One savepoint inside the open transaction (a unit that commits with the transaction or
 * is undone alone): store_savepoint, then store_savepoint_release or
 * store_savepoint_rollback. Not nestable. */
int store_savepoint(store *s, fhir_error *err);
int store_savepoint_release(store *s, fhir_error *err);
void store_savepoint_rollback(store *s);

/* ---- audit ------------------------------------------------------------------------------ */

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

/* An audit row with its ids (store_audit_since, store_audit_list). Borrowed for the call. */
typedef struct store_audit_row {
    int64_t id, ts_ms;
    int64_t referral_id; /* 0 when not about a referral */
    const char *actor, *action, *from_state, *to_state, *detail;
    int64_t user_id;     /* 0 when the actor is not a user (the daemon, a center ...) */
    const char *role, *source, *reason; /* NULL when not recorded */
} store_audit_row;
typedef int (*store_audit_row_fn)(void *ctx, const store_audit_row *row);
/* Every audit row with id > after_id, oldest first (a range of the primary key). fn returns
 * non-zero to stop. Returns rows visited or -1. */
int64_t store_audit_since(store *s, int64_t after_id, store_audit_row_fn fn, void *ctx,
                          fhir_error *err);

/* Who did it, from where and why (the audit with a person). Strings borrowed for the call;
 * NULL allowed except name. */
typedef struct store_actor {
    const char *name;     /* user or service name ("screener", "sender" for the daemon) */
    int64_t user_id;      /* 0 when not a user of the users table */
    const char *role;     /* the role acted in */
    const char *source;   /* source address */
    const char *reason;   /* the person's reason, when one is given */
} store_actor;
/* store_audit with the person columns (who NULL = "system"). */
int store_audit_actor(store *s, const store_actor *who, const char *action, int64_t referral_id,
                      const char *from_state, const char *to_state, const char *detail,
                      fhir_error *err);
/* Audit rows of one referral (referral_id > 0), of the actions about no referral (0: sign-ins,
 * user and token changes) or all (< 0), oldest first, with id > after_id, at most limit
 * (0 = all). Returns rows visited or -1. */
int64_t store_audit_list(store *s, int64_t referral_id, int64_t after_id, int64_t limit,
                         store_audit_row_fn fn, void *ctx, fhir_error *err);

/* ---- cursors (for the pollers) ------------------------------------------------------- */
/* Caller frees *value_out (NULL when absent). 0 ok (absent included), -1 error. */
int store_cursor_get(store *s, const char *source, const char *key, char **value_out,
                     fhir_error *err);
int store_cursor_put(store *s, const char *source, const char *key, const char *value,
                     fhir_error *err);

/* ---- patient resource cache --------------------------------------------------------- */
/* A cached resource's bytes are its JSON text or its binary form (fhir_bin.h: what the daemon
 * writes); the store keeps them as given (the binary form as a BLOB) and hands them back so.
 * Its meta (versionId, lastUpdated) is in those bytes only: the table's version and
 * last_updated columns, which nothing read, are no longer written (NULL in every row written
 * or changed since). Upserts one resource (data: len bytes, borrowed for the call) keyed by
 * type/id. */
int store_resource_put(store *s, const char *patient_id, const char *type, const char *id,
                       const void *data, size_t len, fhir_error *err);
/* The same, in one statement that leaves an identical stored copy untouched: *changed is
 * true when the resource was new or its bytes differed. */
int store_resource_upsert(store *s, const char *patient_id, const char *type, const char *id,
                          const void *data, size_t len, bool *changed, fhir_error *err);
/* Calls fn for every cached resource of the patient, in no particular order (borrowed bytes,
 * valid during the call: data is JSON text, NUL-terminated, or the binary form, fhir_bin_is;
 * the resource's type and id are in them, not read a second time); fn returns non-zero to
 * stop. Returns the count visited or -1. */
typedef int (*store_resource_bytes_fn)(void *ctx, const void *data, size_t len);
int64_t store_resource_each(store *s, const char *patient_id, store_resource_bytes_fn fn, void *ctx,
                            fhir_error *err);
/* The same with each resource's type and id (borrowed strings): for a caller that must name
 * one (a record that does not decode), the columns store_resource_each leaves unread. */
typedef int (*store_resource_fn)(void *ctx, const char *type, const char *id, const void *data,
                                 size_t len);
int64_t store_resource_each_named(store *s, const char *patient_id, store_resource_fn fn, void *ctx,
                                  fhir_error *err);
/* Calls fn once with the cached resource type/id (borrowed strings). 1 found, 0 absent, -1. */
int store_resource_get(store *s, const char *type, const char *id, store_resource_fn fn,
                       void *ctx, fhir_error *err);
/* Removes one cached resource (deleted at the source). *found (may be NULL) tells whether it
 * was cached; its patient id ("" when none) goes to patient_id_out (n bytes, may be NULL).
 * 0, or -1 with err. */
int store_resource_delete(store *s, const char *type, const char *id, char *patient_id_out,
                          size_t n, bool *found, fhir_error *err);

/* Cached resources of one patient. -1 on error. */
int64_t store_resource_count(store *s, const char *patient_id);

/* store.retention: the cached resources of patients screened without a heme diagnosis
 * (store_verdict_set_heme false), not eligible or possibly eligible, with no referral, nothing
 * held or waiting to be screened, and no resource stored or changed since cutoff_ms. Counted
 * into *out (patients, resources); removed too when apply (their verdicts are kept, marked
 * pruned: store_verdict_pruned). Referrals and the audit are never touched. Its own transaction unless one is open. 0, or -1 with err. */
typedef struct store_prune_counts {
    int64_t patients, resources;
} store_prune_counts;
int store_retention_prune(store *s, int64_t cutoff_ms, bool apply, store_prune_counts *out,
                          fhir_error *err);

/* ---- patients held by an incomplete poll -------------------------------------------- */
/* A patient whose cached data a poll of `source` changed while that poll has not completed:
 * never screened while held by any source (store_dirty_next skips it), released for
 * screening when a poll of that source completes. Kept across restarts. A pair this handle
 * marked before (committed, or in the open transaction) and has not released since costs no
 * statement (a poll's pages of every type name the same patients again). */
int store_held_mark(store *s, const char *source, const char *patient_id, fhir_error *err);
/* Every patient held by source becomes a patient to screen (store_dirty_*); the source holds
 * none after. */
int store_held_release(store *s, const char *source, fhir_error *err);
/* Patients held by source (NULL: by any source, each counted once). -1 on error. */
int64_t store_held_count(store *s, const char *source);

/* ---- patients still to screen ------------------------------------------------------- */
/* Marks a patient whose cached data changed (kept across restarts until cleared). */
int store_dirty_mark(store *s, const char *patient_id, fhir_error *err);
/* Marks every patient with cached resources (re-screen everyone); *n_out (may be NULL) gets
 * how many patients that is. */
int store_dirty_mark_all(store *s, int64_t *n_out, fhir_error *err);
/* Marks every patient whose verdict was made under another rule set. */
int store_dirty_mark_ruleset_changed(store *s, const char *ruleset_hash, fhir_error *err);
/* Up to max marked patients that no source holds, oldest mark first, into ids[] (caller
 * frees each). Returns how many, or -1. */
long store_dirty_next(store *s, char **ids, size_t max, fhir_error *err);
int store_dirty_clear(store *s, const char *patient_id, fhir_error *err);
/* Patients marked. -1 on error. */
int64_t store_dirty_count(store *s);

/* ---- profiles and verdicts ---------------------------------------------------------- */
/* Writes a patient's verdict and its worklist row, derived from the JSON texts in SQL (the
 * expression migration 11 shipped). 0, or -1 with err. */
int store_verdict_put(store *s, const char *patient_id, const char *ruleset_hash,
                      const char *category, const char *profile_json, const char *verdict_json,
                      fhir_error *err);
/* The worklist columns of a verdict as the screener knows them, typed (what the verdict's and
 * the profile's JSON say; store_verdict_put_screened): the urgency and consult recommendation
 * names of the verdict, the primary disease's value in the profile (NULL: unknown), the date of
 * the latest progression or relapse documented (YYYY-MM-DD as the profile writes it; NULL:
 * none), the count of the verdict's missing facts, and its products and possible products
 * arrays exactly as the verdict JSON writes them. All borrowed for the call. */
typedef struct store_worklist_in {
    const char *urgency, *consult, *disease, *relapse_day;
    int64_t missing;
    const char *products, *possible;
} store_worklist_in;
/* store_verdict_put and store_verdict_set_heme in one statement group (what the screener writes
 * per patient), with the patient's worklist row written from wl's bound values; wl NULL: the row
 * is derived from the two JSON texts in SQL (as store_verdict_put does). */
int store_verdict_put_screened(store *s, const char *patient_id, const char *ruleset_hash,
                               const char *category, const char *profile_json,
                               const char *verdict_json, bool heme, const store_worklist_in *wl,
                               fhir_error *err);
/* Records whether the verdict's screening found a heme diagnosis (after store_verdict_put, in
 * the same transaction; it also clears the retention mark: the verdict is made from cached
 * data again); store.retention prunes only patients recorded without one. */
int store_verdict_set_heme(store *s, const char *patient_id, bool heme, fhir_error *err);
/* When store.retention pruned the patient's cached resources (ms; 0 = not pruned since the
 * verdict was made, or no verdict). -1 on error. */
int64_t store_verdict_pruned(store *s, const char *patient_id);
/* Removes a patient's verdict (nothing of the patient is cached any more). */
int store_verdict_delete(store *s, const char *patient_id, fhir_error *err);
/* Caller frees the out strings (NULL allowed for the ones not wanted). 1 found, 0 absent,
 * -1 error. */
int store_verdict_get(store *s, const char *patient_id, char **ruleset_hash_out,
                      char **category_out, char **verdict_json_out, fhir_error *err);

/* A verdicts row, borrowed for the call of a store_verdict_fn. */
typedef struct store_verdict {
    const char *patient_id, *ruleset_hash, *category;
    const char *profile_json; /* NULL in lists (store_verdict_list), and when the screener
                               * wrote the worklist row from typed values (it keeps no profile) */
    const char *verdict_json;
    int64_t updated_ms;
} store_verdict;
typedef int (*store_verdict_fn)(void *ctx, const store_verdict *v);
/* Calls fn once with the patient's row, profile included. 1 found, 0 absent, -1. */
int store_verdict_read(store *s, const char *patient_id, store_verdict_fn fn, void *ctx,
                       fhir_error *err);
/* The worklist: rows of one category (NULL: all, eligible first, then possibly eligible,
 * then the rest), by patient id, from offset, at most limit; profiles not read. Returns rows
 * visited or -1. */
int64_t store_verdict_list(store *s, const char *category, int64_t limit, int64_t offset,
                           store_verdict_fn fn, void *ctx, fhir_error *err);
/* Patients of one category. -1 on error. */
int64_t store_verdict_count(store *s, const char *category, fhir_error *err);

/* ---- referrals ------------------------------------------------------------------------ */
/* A referrals row (the referral room gives it meaning: referral.h). Borrowed for the call of
 * a store_referral_fn; on insert, the caller's strings. */
typedef struct store_referral {
    int64_t id;
    const char *placer_id, *site_id, *patient_id, *center_id;
    const char *indications; /* sorted, comma-separated keys */
    const char *state, *mode, *urgency;
    const char *explanation, *verdict_json, *route_json, *payload; /* NULL in summaries */
    int attempts;
    int64_t next_attempt_ms;
    int last_status;
    const char *last_error;
    const char *last_response;                                      /* NULL in summaries */
    const char *center_sr_ref, *center_task_ref, *task_status, *business_status;
    int64_t created_ms, updated_ms;
    int64_t episode;              /* the patient's episode (1, 2, ...) */
    int64_t supersedes;           /* the referral a re-route replaces; 0 none */
    const char *episode_marker;   /* the disease marker the episode opened with; may be NULL */
    const char *ended;            /* "withdrawn" | "superseded" | NULL (see migration 7) */
    int64_t cancel_requested_ms;  /* > 0: to be cancelled at its center by the sender */
    const char *package;          /* what the payload is built from until it is stored
                                   * (migration 14); NULL in summaries */
    const char *compose_cause;    /* why its texts could not be composed (migration 17: a
                                   * refer_compose_cause name); NULL when they were or none
                                   * tried */
    const char *compose_error;    /* that cause in plain words; NULL with it */
} store_referral;
typedef int (*store_referral_fn)(void *ctx, const store_referral *r);

/* Inserts a referral (created/updated now; attempts 0; episode, supersedes and
 * episode_marker from the row, episode 0 meaning 1) unless its placer_id exists. 1 and
 * *id_out when inserted, 0 and the existing row's id when the placer id was already there,
 * -1 with err. */
int store_referral_insert(store *s, const store_referral *r, int64_t *id_out, fhir_error *err);
/* Calls fn once with the full row. 1 found, 0 absent, -1. */
int store_referral_get(store *s, int64_t id, store_referral_fn fn, void *ctx, fhir_error *err);
int store_referral_get_by_placer(store *s, const char *placer_id, store_referral_fn fn,
                                 void *ctx, fhir_error *err);
/* The id of a placer identifier (no other column read). 1 found, 0 absent, -1. */
int store_referral_find(store *s, const char *placer_id, int64_t *id_out, fhir_error *err);
/* The stored state name into out (size n). 1 found, 0 absent, -1. */
int store_referral_state(store *s, int64_t id, char *out, size_t n, fhir_error *err);

/* Which rows store_referral_each visits; NULL fields match anything. Rows with a patient_id
 * are found through the patient index, with a state (and center) through the state index. */
typedef struct store_referral_filter {
    const char *state;
    const char *center_id;
    const char *patient_id;
    bool summary; /* leave the large columns (explanation, verdict, route, payload, last
                   * response) unread: NULL in the row */
} store_referral_filter;
/* Rows in id order; fn returns non-zero to stop. Returns rows visited or -1. */
int64_t store_referral_each(store *s, const store_referral_filter *f, store_referral_fn fn,
                            void *ctx, fhir_error *err);
/* Ids and placer ids of one patient's referrals in one state (the patient index, two
 * columns). fn returns non-zero to stop. Returns rows visited or -1. */
typedef int (*store_referral_id_fn)(void *ctx, int64_t id, const char *placer_id);
int64_t store_referral_ids(store *s, const char *patient_id, const char *state,
                           store_referral_id_fn fn, void *ctx, fhir_error *err);
/* Calls fn(state, count) for every state present. 0 or -1. */
typedef void (*store_count_fn)(void *ctx, const char *name, int64_t count);
int store_referral_count_by_state(store *s, store_count_fn fn, void *ctx, fhir_error *err);
/* Calls fn(cause, count) for the referrals pending approval or approved whose texts could not
 * be composed (compose_cause), by cause. 0 or -1. */
int store_referral_unprepared_counts(store *s, store_count_fn fn, void *ctx, fhir_error *err);
/* Referrals in one state and the oldest creation time among them (0 when none). 0 or -1. */
int store_referral_state_age(store *s, const char *state, int64_t *count,
                             int64_t *oldest_created_ms, fhir_error *err);
/* For every referral whose audit log shows it reaching `state`: the time from its creation
 * to the first such audit row (ms), passed to fn. Returns rows visited or -1. */
typedef void (*store_ms_fn)(void *ctx, int64_t ms);
int64_t store_referral_time_to_state(store *s, const char *state, store_ms_fn fn, void *ctx,
                                     fhir_error *err);

/* What store_referral_update changes besides updated_ms (now); every group is optional. */
typedef struct store_referral_change {
    const char *state;            /* new state name; NULL keeps the state */
    bool reset_attempts;          /* attempts = 0, next_attempt_ms = 0 */
    bool add_attempt;             /* attempts + 1, next_attempt_ms = next_attempt_ms */
    int64_t next_attempt_ms;
    bool set_center_refs;         /* center_sr_ref, center_task_ref; last_error cleared */
    const char *center_sr_ref, *center_task_ref;
    bool set_outcome;             /* last_status, last_error, last_response */
    int last_status;
    const char *last_error, *last_response;
    bool set_task;                /* task_status, business_status */
    const char *task_status, *business_status;
    bool set_payload;
    const char *payload;
    bool set_proposal;            /* what a proposal is made of (not yet at a center) */
    const char *placer_id, *center_id, *indications, *urgency, *explanation, *verdict_json,
        *route_json;
    bool set_ended;               /* ended ("withdrawn", "superseded", NULL) */
    const char *ended;
    bool set_cancel_request;      /* cancel_requested_ms (0 = none) */
    int64_t cancel_requested_ms;
    bool set_marker;              /* episode_marker */
    const char *episode_marker;
    bool set_package;             /* package (what the payload is built from) */
    const char *package;
    bool set_compose;             /* compose_cause, compose_error (NULL clears); without it
                                   * set_proposal clears them (a changed proposal) */
    const char *compose_cause, *compose_error;
} store_referral_change;
/* Updates one row (inside the caller's transaction when one is open). 0, or -1 with err
 * (also when no row has that id). */
int store_referral_update(store *s, int64_t id, const store_referral_change *u,
                          fhir_error *err);

/* Stores a proposal's explanation, route and package composed after it was stored without
 * them (propose.h: propose_compose): only while the row still has neither package nor payload
 * and still carries placer_id (a re-screen may have changed it since); a recorded compose
 * cause is cleared. updated_ms is kept.
 * 1 written, 0 not (another reader was first, or the proposal changed), -1 with err. */
int store_referral_set_texts(store *s, int64_t id, const char *placer_id, const char *explanation,
                             const char *route_json, const char *package, fhir_error *err);

/* The referrals whose cancellation at their center was requested (cancel_requested_ms > 0),
 * in id order, summary columns only. fn returns non-zero to stop. Rows visited or -1. */
int64_t store_referral_cancel_due(store *s, store_referral_fn fn, void *ctx, fhir_error *err);

/* ---- EHR write-back outbox ------------------------------------------------------------ */
/* Queues (referral, state) once: a second add of the same pair is ignored. */
int store_outbox_add(store *s, int64_t referral_id, const char *state, int64_t audit_id,
                     fhir_error *err);
/* Up to max pending rows, oldest first. Borrowed state; fn returns non-zero to stop.
 * Returns rows visited or -1. */
typedef int (*store_outbox_fn)(void *ctx, int64_t row_id, int64_t referral_id,
                               const char *state);
int64_t store_outbox_pending(store *s, unsigned max, store_outbox_fn fn, void *ctx,
                             fhir_error *err);
/* status: "pending" | "done" | "failed"; attempt adds one to the attempt count; error
 * replaces the last error (NULL clears it); ehr_ref (NULL keeps it) is what the EHR made. */
int store_outbox_update(store *s, int64_t row_id, const char *status, bool attempt,
                        const char *error, const char *ehr_ref, fhir_error *err);

/* ---- notifications (notify.h) ------------------------------------------------------------- */
/* Records an event by its key once: 1 when new, 0 when it was recorded before, -1 on error. */
int store_notify_event(store *s, const char *key, const char *kind, fhir_error *err);

/* A notice row (one channel). Strings borrowed (for the call of a store_notice_fn). */
typedef struct store_notice {
    int64_t id;
    const char *kind, *channel; /* channel: "email" | "webhook" */
    int64_t count;
    const char *urgency;        /* may be NULL */
    const char *body_json;      /* what the notice says: counts and a link, never PHI */
    int attempts;
} store_notice;
typedef int (*store_notice_fn)(void *ctx, const store_notice *n);
/* Adds a pending notice (id, attempts ignored); *id_out may be NULL. */
int store_notice_add(store *s, const store_notice *n, int64_t *id_out, fhir_error *err);
/* Up to max pending notices due at now_ms, oldest first. Returns rows visited or -1. */
int64_t store_notice_due(store *s, int64_t now_ms, unsigned max, store_notice_fn fn, void *ctx,
                         fhir_error *err);
/* pending -> sending, attempts + 1: 1 claimed, 0 not pending any more, -1 error. */
int store_notice_claim(store *s, int64_t id, fhir_error *err);
/* The outcome of a send: status "sent", "failed" (for good) or "pending" (again at
 * next_attempt_ms), with the error (NULL when sent). */
int store_notice_done(store *s, int64_t id, const char *status, const char *error, int64_t next_attempt_ms,
                      fhir_error *err);
/* Notices left 'sending' by an interrupted process become 'unknown' (never sent again: at
 * most once). Returns how many, or -1. */
int64_t store_notice_orphans(store *s, fhir_error *err);
/* Notices in one status. -1 on error. */
int64_t store_notice_count(store *s, const char *status, fhir_error *err);
/* Referrals a notice may be about: every failed or declined one, the sent ones not updated
 * since sent_before_ms (no answer from the center), and the approved ones whose texts could not
 * be composed (state given as "unprepared"). fn(ctx, id, state, updated_ms) returns
 * non-zero to stop. Returns rows visited or -1. */
typedef int (*store_referral_scan_fn)(void *ctx, int64_t id, const char *state, int64_t updated_ms);
int64_t store_referral_notice_scan(store *s, int64_t sent_before_ms, store_referral_scan_fn fn, void *ctx,
                                   fhir_error *err);

/* ---- who is acting: users, sessions, API tokens, failed sign-ins ---------------------------
 * Secrets are never stored: sessions and tokens are kept as the SHA-256 of their random value
 * (STORE_SECRET_HASH bytes), passwords as scrypt strings made by access/pwhash. Roles are
 * stored by name ("viewer", "clinician", "intake", "admin"); the tables check the name. */
#define STORE_SECRET_HASH 32     /* bytes of a session/token hash (SHA-256) */
#define STORE_FAILURES_KEEP_MS (24ll * 3600 * 1000) /* failed sign-in rows older than this are pruned */

/* err->code of a refused insert because the name (or subject) exists already. */
#define STORE_CONFLICT 409

/* users */

typedef struct store_user {
    int64_t id;
    char *name;          /* sign-in name, unique (case-insensitive) */
    char *display_name;  /* may be NULL */
    char *role;          /* role name */
    bool service;        /* a service account (automation), not a person */
    char *pw_hash;       /* NULL: no local password (OpenID Connect only, or a service) */
    char *oidc_subject;  /* "<issuer> <claim value>" once matched through OpenID Connect */
    bool disabled;
    int64_t created_ms, updated_ms, last_login_ms;
} store_user;

/* Frees the strings of u (not u itself). NULL-safe. */
void store_user_free(store_user *u);

/* Inserts u (id, times ignored). *id_out may be NULL. A taken name or subject fails with
 * err->code STORE_CONFLICT. */
int store_user_add(store *s, const store_user *u, int64_t *id_out, fhir_error *err);
/* Fill *out (caller frees with store_user_free). 1 found, 0 absent, -1 error. */
int store_user_get(store *s, const char *name, store_user *out, fhir_error *err);
int store_user_get_id(store *s, int64_t id, store_user *out, fhir_error *err);
int store_user_get_subject(store *s, const char *subject, store_user *out, fhir_error *err);
/* Setters; 1 changed, 0 no such user, -1 error. pw_hash NULL removes the local password. */
int store_user_set_password(store *s, int64_t id, const char *pw_hash, fhir_error *err);
int store_user_set_role(store *s, int64_t id, const char *role, fhir_error *err);
int store_user_set_disabled(store *s, int64_t id, bool disabled, fhir_error *err);
int store_user_set_subject(store *s, int64_t id, const char *subject, fhir_error *err);
int store_user_set_display(store *s, int64_t id, const char *display_name, fhir_error *err);
int store_user_touch_login(store *s, int64_t id, fhir_error *err);
/* Calls fn for every user by name (u borrowed for the call); fn returns non-zero to stop.
 * Returns the count visited, or -1. */
typedef int (*store_user_fn)(void *ctx, const store_user *u);
int64_t store_user_each(store *s, store_user_fn fn, void *ctx, fhir_error *err);

/* sessions */

typedef struct store_session {
    int64_t user_id;
    char source[64];     /* address signed in from */
    int64_t created_ms, last_seen_ms, expires_ms;
} store_session;

int store_session_put(store *s, const unsigned char hash[STORE_SECRET_HASH], int64_t user_id,
                      const char *source, int64_t expires_ms, fhir_error *err);
/* 1 found, 0 absent, -1 error. */
int store_session_get(store *s, const unsigned char hash[STORE_SECRET_HASH], store_session *out,
                      fhir_error *err);
int store_session_touch(store *s, const unsigned char hash[STORE_SECRET_HASH], int64_t now_ms,
                        fhir_error *err);
/* Returns the number removed, -1 on error. */
int store_session_delete(store *s, const unsigned char hash[STORE_SECRET_HASH], fhir_error *err);
int store_session_delete_user(store *s, int64_t user_id, fhir_error *err);
/* Removes sessions past their absolute expiry or idle longer than idle_ms. */
int store_session_prune(store *s, int64_t now_ms, int64_t idle_ms, fhir_error *err);
int64_t store_session_count(store *s, int64_t user_id);

/* API tokens */

typedef struct store_token {
    int64_t id, user_id;
    char label[128];
    char role[16];
    int64_t created_ms, expires_ms, last_used_ms, revoked_ms; /* 0 = never / not */
} store_token;

int store_token_put(store *s, int64_t user_id, const char *label, const unsigned char hash[STORE_SECRET_HASH],
                    const char *role, int64_t expires_ms, int64_t *id_out, fhir_error *err);
/* 1 found, 0 absent, -1 error. */
int store_token_get(store *s, const unsigned char hash[STORE_SECRET_HASH], store_token *out, fhir_error *err);
int store_token_touch(store *s, int64_t id, int64_t now_ms, fhir_error *err);
/* 1 revoked now, 0 no such (unrevoked) token of that user, -1 error. */
int store_token_revoke(store *s, int64_t user_id, int64_t id, fhir_error *err);
int store_token_revoke_user(store *s, int64_t user_id, fhir_error *err);
typedef int (*store_token_fn)(void *ctx, const store_token *t);
/* Tokens of one user (user_id > 0) or all, oldest first. */
int64_t store_token_each(store *s, int64_t user_id, store_token_fn fn, void *ctx, fhir_error *err);

/* failed sign-ins (lockout) */

/* Failures recorded for a sign-in name (lower-cased by the caller) and until when it is
 * locked. Absent = 0 and 0. 0 or -1. */
int store_login_get(store *s, const char *name, int *failures, int64_t *locked_until_ms, fhir_error *err);
/* Records one failure at now_ms with the lock computed by the caller; prunes rows older
 * than STORE_FAILURES_KEEP_MS. */
int store_login_put(store *s, const char *name, int failures, int64_t now_ms, int64_t locked_until_ms,
                    fhir_error *err);
int store_login_clear(store *s, const char *name, fhir_error *err);

/* ---- CDS Hooks (cds.h) ------------------------------------------------------------------------ */

/* Records a JWT's (iss, jti) until exp_ms (rows past their exp are pruned first): 1 when it
 * was not seen before, 0 when it is a replay, -1 with err. */
int store_cds_jti_use(store *s, const char *iss, const char *jti, int64_t exp_ms, fhir_error *err);
/* Remembers a card shown (uuid -> patient), first and last time. 0 or -1. */
int store_cds_card_put(store *s, const char *uuid, const char *patient_id, const char *service,
                       const char *category, fhir_error *err);
/* The patient of a card shown (n bytes): 1 found, 0 unknown, -1 error. */
int store_cds_card_get(store *s, const char *uuid, char *patient_id, size_t n, fhir_error *err);
/* One feedback item as the EHR sent it (strings borrowed; patient_id NULL for an unknown
 * card). */
typedef struct store_cds_feedback {
    const char *service, *card, *patient_id, *outcome; /* outcome: accepted | overridden */
    const char *override_reason, *accepted_suggestions, *outcome_ts;
} store_cds_feedback;
int store_cds_feedback_add(store *s, const store_cds_feedback *f, fhir_error *err);
/* Feedback counted by service and outcome (for /metrics). 0 or -1. */
typedef void (*store_cds_count_fn)(void *ctx, const char *service, const char *outcome, int64_t count);
int store_cds_feedback_count(store *s, store_cds_count_fn fn, void *ctx, fhir_error *err);
/* ---- the clinician's worklist and the program figures (gateway/web) ----------------------
 * The worklist table is derived from the verdicts (migration 11; written with each verdict
 * since migration 15, removed with it by a trigger): one row per screened patient with what
 * the list sorts and filters by. A patient is on the list with an
 * eligible or possibly eligible verdict or a consult recommendation, unless a clinician took
 * the patient off it for the verdict shown then (a decline is bound to the category, the
 * products and the recommendation: a changed verdict brings the patient back). */

/* Which rows; NULL / 0 fields match anything. */
typedef struct store_worklist_filter {
    const char *category;     /* "eligible", "possibly_eligible", or "consult" (on the list by
                               * a consult recommendation alone) */
    const char *disease;      /* primary disease key */
    const char *state;        /* the latest referral's state name, or "none" (no referral) */
    int64_t changed_after_ms; /* > 0: only verdicts written after this time */
} store_worklist_filter;

/* A worklist row, borrowed for the call. */
typedef struct store_worklist_row {
    const char *patient_id, *category;
    const char *urgency, *consult, *disease;  /* NULL when the verdict has none */
    const char *relapse_day;                  /* last progression documented, or NULL */
    const char *products, *possible;          /* JSON arrays of indication keys, or NULL */
    int64_t missing;                          /* facts missing for a decision */
    int64_t updated_ms;                       /* when the verdict was written */
    const char *ref_state;                    /* the latest referral's state; NULL: none */
    int64_t ref_id;                           /* its id; 0: none */
} store_worklist_row;
typedef int (*store_worklist_fn)(void *ctx, const store_worklist_row *r);
/* One page of the list, most urgent first, then the longest since relapse documented, through
 * the worklist index. fn returns non-zero to stop. Rows visited or -1. */
int64_t store_worklist_page(store *s, const store_worklist_filter *f, int64_t limit, int64_t offset,
                            store_worklist_fn fn, void *ctx, fhir_error *err);
/* Rows matching f. -1 on error. */
int64_t store_worklist_count(store *s, const store_worklist_filter *f, fhir_error *err);
/* One patient's row (on the list or not). 1 found, 0 absent, -1. */
int store_worklist_get(store *s, const char *patient_id, store_worklist_fn fn, void *ctx, fhir_error *err);
/* The list's headline: [0] refer now, [1] possibly eligible, [2] consult suggested only,
 * [3] referrals sent and awaiting the center's answer. 0 or -1. */
int store_worklist_counts(store *s, int64_t out[4], fhir_error *err);
/* The primary diseases of the patients on the list, sorted. Rows visited or -1. */
typedef void (*store_text_fn)(void *ctx, const char *text);
int64_t store_worklist_diseases(store *s, store_text_fn fn, void *ctx, fhir_error *err);
/* Did a clinician take the patient off the worklist for this very verdict (the same category,
 * products, possible products and consult recommendation as verdict_json, one line of screen
 * JSON; the worklist's vkey)? 1 yes, 0 no, -1 error. */
int store_worklist_declined_for(store *s, const char *patient_id, const char *category, const char *verdict_json,
                                fhir_error *err);
/* Takes a patient off the list for the verdict the row holds now, with a coded reason and
 * the person's words, and audits it (action "worklist-decline", detail "patient=<id>
 * code=<code>") in one transaction (or the caller's). err->code 404 when the patient has no
 * worklist row. */
int store_worklist_decline(store *s, const char *patient_id, const char *code, const store_actor *who,
                           fhir_error *err);
/* A person looks at the list at now_ms: *prev_ms gets the start of their previous visit (0:
 * none). Views less than gap_ms apart are one visit. 0 or -1. */
int store_worklist_visit(store *s, int64_t user_id, int64_t now_ms, int64_t gap_ms, int64_t *prev_ms,
                         fhir_error *err);

/* Rows of text columns (NULL for SQL NULL), borrowed for the call; fn returns non-zero to
 * stop. */
typedef int (*store_cols_fn)(void *ctx, const char *const *cols, int n);
/* The funnel: (month "YYYY-MM", stage, count) for the stages screened (verdicts written),
 * candidate (on the worklist), proposed (referrals created), and approved, sent, accepted,
 * scheduled, completed, declined, cancelled, failed (referrals reaching the state, by the
 * first audit row that says so). Rows visited or -1. */
int64_t store_program_funnel(store *s, store_cols_fn fn, void *ctx, fhir_error *err);
/* Every referral: (id, center, state, created_ms, first sent ms or NULL, the patient's relapse
 * documented day or NULL), by id. Rows visited or -1. */
int64_t store_program_referrals(store *s, store_cols_fn fn, void *ctx, fhir_error *err);
/* Why clinicians took patients off the list: (code, count). Rows visited or -1. */
int64_t store_program_declines(store *s, store_cols_fn fn, void *ctx, fhir_error *err);
/* CDS Hooks cards in the EHR's chart: (service, "cards", "", distinct cards shown) and
 * (service, accepted|overridden, override reason or "", count). Rows visited or -1. */
int64_t store_program_cds(store *s, store_cols_fn fn, void *ctx, fhir_error *err);

/* ---- what the statements cost (for tests; no timing) ------------------------------------- */
/* The query plan (EXPLAIN QUERY PLAN) of every statement the daemon runs per patient or per
 * referral: fn(ctx, sql, detail) for each plan line, e.g. "SEARCH referrals USING INDEX
 * referrals_patient (patient_id=?)"; fn returns non-zero to skip the rest of that statement.
 * 0, or -1 with err. */
typedef int (*store_plan_fn)(void *ctx, const char *sql, const char *detail);
int store_plan_each(store *s, store_plan_fn fn, void *ctx, fhir_error *err);
/* The work the store's cached statements did since the last call (sqlite3_stmt_status:
 * virtual machine steps, triggers included; steps of full table scans; sorts), summed; the
 * counters restart at zero. */
typedef struct store_work {
    int64_t vm_steps, fullscan_steps, sorts;
} store_work;
void store_work_take(store *s, store_work *out);
/* The version of referral referral_id's Task at its center that the site last read
 * (meta.versionId) into out (n bytes): 1 known, 0 not yet, -1. */
int store_task_seen_get(store *s, int64_t referral_id, char *out, size_t n, fhir_error *err);
/* Records that version (the caller's string) as the one last read. */
int store_task_seen_put(store *s, int64_t referral_id, const char *version, fhir_error *err);
/* ---- a center's intake (gateway/intake) ------------------------------------------------------
 * The FHIR resources referring sites POST to a center's cartgate (/fhir), their identifiers, one
 * row per received referral (the intake inbox), the access tokens issued to the sites, and the
 * intake team's audit (audit rows with an intake_id). Strings of the rows handed to callbacks
 * are borrowed for the call. */
typedef struct store_intake_res {
    int64_t id;               /* the FHIR id */
    const char *type;
    int64_t referral_id;      /* 0 when not (yet) part of a referral */
    const char *client_id;    /* the site that sent it */
    int64_t version, updated_ms;
    const char *json;         /* "" while its transaction is writing it */
} store_intake_res;
typedef int (*store_intake_res_fn)(void *ctx, const store_intake_res *r);
/* Reserves the id of a new resource (its JSON follows with store_intake_res_put). */
int store_intake_res_new(store *s, const char *type, const char *client_id, int64_t *id_out, fhir_error *err);
/* Writes a resource's JSON, version and time (referral_id > 0 also sets its referral). */
int store_intake_res_put(store *s, int64_t id, int64_t referral_id, int64_t version, int64_t updated_ms,
                         const char *json, fhir_error *err);
/* One resource of type by id: 1 found (fn called), 0 absent, -1. */
int store_intake_res_get(store *s, const char *type, int64_t id, store_intake_res_fn fn, void *ctx, fhir_error *err);
/* The versions of one resource of type by id, newest first, at most limit (0 = all): every
 * version written since the center kept versions (schema 18; older ones from their latest).
 * Rows visited (0: no such resource) or -1. */
int64_t store_intake_res_history(store *s, const char *type, int64_t id, int64_t limit, store_intake_res_fn fn,
                                 void *ctx, fhir_error *err);
/* The resources of type carrying identifier system|value (system NULL: any system), by id, at
 * most limit (0 = all). Rows visited or -1. */
int64_t store_intake_res_by_ident(store *s, const char *type, const char *system, const char *value, int64_t limit,
                                  store_intake_res_fn fn, void *ctx, fhir_error *err);
/* The resources of type updated in [from_ms, to_ms] (to_ms 0 = no bound), oldest first, at
 * most limit (0 = all). Rows visited or -1. */
int64_t store_intake_res_since(store *s, const char *type, int64_t from_ms, int64_t to_ms, int64_t limit,
                               store_intake_res_fn fn, void *ctx, fhir_error *err);
/* The resources that arrived with inbox referral referral_id, by id. Rows visited or -1. */
int64_t store_intake_res_of_referral(store *s, int64_t referral_id, store_intake_res_fn fn, void *ctx, fhir_error *err);
/* Records an identifier of a stored resource (system NULL = none). */
int store_intake_ident_add(store *s, int64_t resource_id, const char *type, const char *system, const char *value,
                           fhir_error *err);

typedef struct store_intake_ref {
    int64_t id;               /* the referral's number in the inbox */
    const char *client_id;
    int64_t sr_id, task_id;   /* its ServiceRequest and Task (intake_resources ids) */
    const char *priority;     /* routine | urgent | asap | stat (NULL: not said) */
    int urank;                /* 0 stat ... 3 routine */
    const char *task_status, *business_status;
    const char *reason;       /* the last act's reason in words */
    const char *consult;      /* the consult's date and time once scheduled */
    int64_t received_ms, updated_ms;
} store_intake_ref;
typedef int (*store_intake_ref_fn)(void *ctx, const store_intake_ref *r);
int store_intake_ref_add(store *s, const store_intake_ref *r, int64_t *id_out, fhir_error *err);
/* 1 found (fn called), 0 absent, -1. */
int store_intake_ref_get(store *s, int64_t id, store_intake_ref_fn fn, void *ctx, fhir_error *err);
int store_intake_ref_by_task(store *s, int64_t task_id, store_intake_ref_fn fn, void *ctx, fhir_error *err);
/* The inbox: the open referrals only (open_only) or all, most urgent first then oldest, at
 * most limit (0 = all). Rows visited or -1. */
int64_t store_intake_ref_list(store *s, bool open_only, int64_t limit, store_intake_ref_fn fn, void *ctx,
                              fhir_error *err);
/* Sets the Task's status and business status (reason, consult: NULL keeps them). */
int store_intake_ref_update(store *s, int64_t id, const char *task_status, const char *business_status,
                            const char *reason, const char *consult, fhir_error *err);
/* Referrals received (with that Task.status when given). -1 on error. */
int64_t store_intake_ref_count(store *s, const char *task_status);
/* The inbox by Task.status: fn(ctx, status, referrals, oldest received_ms) once per status
 * held, by status name (status borrowed for the call). Rows visited or -1. */
typedef int (*store_intake_state_fn)(void *ctx, const char *task_status, int64_t n, int64_t oldest_received_ms);
int64_t store_intake_ref_states(store *s, store_intake_state_fn fn, void *ctx, fhir_error *err);
/* An audit row about intake referral intake_id (the person in who). */
int store_intake_audit(store *s, const store_actor *who, const char *action, int64_t intake_id, const char *from_state,
                       const char *to_state, const char *detail, fhir_error *err);
/* The audit rows of one intake referral, oldest first. Rows visited or -1. */
int64_t store_intake_audit_list(store *s, int64_t intake_id, store_audit_row_fn fn, void *ctx, fhir_error *err);
/* An access token issued to a referring site (its SHA-256), valid until exp_ms; expired ones
 * are removed. */
int store_intake_token_put(store *s, const unsigned char hash[STORE_SECRET_HASH], const char *client_id,
                           int64_t exp_ms, fhir_error *err);
/* The client of an unexpired token into client_out (n bytes): 1, 0 unknown or expired, -1. */
int store_intake_token_get(store *s, const unsigned char hash[STORE_SECRET_HASH], char *client_out, size_t n,
                           fhir_error *err);

#endif
