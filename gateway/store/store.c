/* store — SQLite schema, migrations, transactions and every statement of the gateway. */
#include "store.h"

#include <sqlite3.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_alloc.h"
#include "fhir_bin.h"
#include "fhir_clock.h"
#include "fhir_hash.h"

/* ---- schema ------------------------------------------------------------------------------ */

/* The worklist row of a verdicts row (migration 11): T is the verdicts row (NEW in the
 * triggers, the table in the first fill). Malformed JSON reads as {}. */
#define WORKLIST_VJ(T) "(CASE WHEN json_valid(" T ".verdict_json) THEN " T ".verdict_json ELSE '{}' END)"
#define WORKLIST_PJ(T) "(CASE WHEN json_valid(" T ".profile_json) THEN " T ".profile_json ELSE '{}' END)"
/* What a clinician's decline is bound to (worklist.vkey): the category, products, possible
 * products and consult recommendation of a verdict. One definition for the worklist's trigger
 * and for the CDS service's lookup of a verdict line it made itself (store_worklist_declined_for);
 * the expansion is the text migration 11 shipped. */
#define WORKLIST_VKEY(CAT, VJ)                                                                      \
    CAT " || '|' || coalesce(json_extract(" VJ ", '$.products'), '') || '|' || "                     \
    "coalesce(json_extract(" VJ ", '$.possible_products'), '') || '|' || "                           \
    "coalesce(json_extract(" VJ ", '$.consult.recommendation'), '')"
#define WORKLIST_COLS(T)                                                                          \
    T ".patient_id, "                                                                           \
    "(" T ".category IN ('eligible','possibly_eligible') OR coalesce(json_extract(" WORKLIST_VJ(T) \
    ", '$.consult.recommendation'), 'none') <> 'none'), "                                       \
    T ".category, "                                                                             \
    "CASE WHEN json_extract(" WORKLIST_VJ(T) ", '$.urgency') = 'now' OR json_extract("           \
    WORKLIST_VJ(T) ", '$.consult.recommendation') = 'refer_now' THEN 0 "                        \
    "WHEN json_extract(" WORKLIST_VJ(T) ", '$.urgency') = 'soon' THEN 1 "                       \
    "WHEN json_extract(" WORKLIST_VJ(T) ", '$.urgency') = 'review' OR json_extract("            \
    WORKLIST_VJ(T) ", '$.consult.recommendation') = 'early_consult' THEN 2 ELSE 3 END, "        \
    "json_extract(" WORKLIST_VJ(T) ", '$.urgency'), "                                           \
    "json_extract(" WORKLIST_VJ(T) ", '$.consult.recommendation'), "                            \
    "json_extract(" WORKLIST_PJ(T) ", '$.facts.primary_disease.value'), "                       \
    "(SELECT max(json_extract(e.value, '$.date')) FROM json_each(" WORKLIST_PJ(T)                \
    ", '$.events') e WHERE json_extract(e.value, '$.kind') = 'progression or relapse'), "                  \
    "coalesce((SELECT max(json_extract(e.value, '$.date')) FROM json_each(" WORKLIST_PJ(T)       \
    ", '$.events') e WHERE json_extract(e.value, '$.kind') = 'progression or relapse'), '9999'), "         \
    "coalesce(json_array_length(" WORKLIST_VJ(T) ", '$.missing'), 0), "                         \
    "json_extract(" WORKLIST_VJ(T) ", '$.products'), "                                          \
    "json_extract(" WORKLIST_VJ(T) ", '$.possible_products'), "                                 \
    WORKLIST_VKEY(T ".category", WORKLIST_VJ(T)) ", "                                             \
    T ".updated_ms"
#define WORKLIST_SELECT(T) "SELECT " WORKLIST_COLS(T) " FROM " T
/* delete + insert: inside a trigger an outer upsert's conflict rule would override OR REPLACE */
#define WORKLIST_ROW(T)                                                                           \
    "DELETE FROM worklist WHERE patient_id = " T ".patient_id; INSERT INTO worklist SELECT "       \
    WORKLIST_COLS(T) ";"

/* Step i brings the schema from version i to i+1; the pending steps run in one transaction
 * (migrate). Append only; never edit a shipped step. A table that an older binary created outside the migrations is adopted with
 * CREATE ... IF NOT EXISTS in the step that takes it over. */
static const struct {
    const char *what;
    const char *sql;
} migrations[] = {
    {"referrals, audit, cursors, resources, verdicts",
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
     ");"},
    /* Patients whose cached data changed and who still need screening (persisted, so a
     * restart between ingest and screening loses nothing). Before v2 the daemon created it
     * itself. */
    {"daemon_dirty (patients to screen)",
     "CREATE TABLE IF NOT EXISTS daemon_dirty ("
     "  patient_id TEXT PRIMARY KEY,"
     "  marked_ms INTEGER NOT NULL);"
     "CREATE INDEX IF NOT EXISTS daemon_dirty_order ON daemon_dirty(marked_ms, patient_id);"},
    /* The EHR write-back outbox (writeback.h), one row per (referral, state). Before v3 the
     * write-back created it itself, and only when configured. */
    {"writeback_outbox",
     "CREATE TABLE IF NOT EXISTS writeback_outbox ("
     "  id INTEGER PRIMARY KEY,"
     "  referral_id INTEGER NOT NULL REFERENCES referrals(id),"
     "  state TEXT NOT NULL,"
     "  audit_id INTEGER NOT NULL,"
     "  status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','done','failed')),"
     "  attempts INTEGER NOT NULL DEFAULT 0,"
     "  last_error TEXT,"
     "  ehr_ref TEXT,"
     "  created_ms INTEGER NOT NULL,"
     "  updated_ms INTEGER NOT NULL,"
     "  UNIQUE (referral_id, state));"
     "CREATE INDEX IF NOT EXISTS writeback_outbox_status ON writeback_outbox(status, id);"},
    /* The worklist by category, and counting it, without reading every profile. */
    {"verdicts by category",
     "CREATE INDEX verdicts_category ON verdicts(category, patient_id);"},
    /* Who is acting: users (people and services), sessions and API tokens (their SHA-256
     * only), failed sign-ins for the lockout, and the person columns of the audit. */
    {"users, sessions, api_tokens, login_failures; audit user, role, source, reason",
     "CREATE TABLE users ("
     "  id INTEGER PRIMARY KEY,"
     "  name TEXT NOT NULL UNIQUE COLLATE NOCASE,"
     "  display_name TEXT,"
     "  role TEXT NOT NULL CHECK (role IN ('viewer','clinician','intake','admin')),"
     "  kind TEXT NOT NULL CHECK (kind IN ('person','service')),"
     "  pw_hash TEXT,"                            /* scrypt string; NULL = no local password */
     "  oidc_subject TEXT UNIQUE,"                /* issuer + matching claim value */
     "  disabled INTEGER NOT NULL DEFAULT 0,"
     "  created_ms INTEGER NOT NULL,"
     "  updated_ms INTEGER NOT NULL,"
     "  last_login_ms INTEGER NOT NULL DEFAULT 0"
     ");"
     "CREATE TABLE sessions ("
     "  id_hash BLOB PRIMARY KEY,"                /* SHA-256 of the 256-bit session id */
     "  user_id INTEGER NOT NULL REFERENCES users(id),"
     "  source TEXT,"
     "  created_ms INTEGER NOT NULL,"
     "  last_seen_ms INTEGER NOT NULL,"
     "  expires_ms INTEGER NOT NULL"              /* absolute timeout */
     ");"
     "CREATE INDEX sessions_user ON sessions(user_id);"
     "CREATE TABLE api_tokens ("
     "  id INTEGER PRIMARY KEY,"
     "  user_id INTEGER NOT NULL REFERENCES users(id),"
     "  label TEXT,"
     "  hash BLOB NOT NULL UNIQUE,"               /* SHA-256 of the token */
     "  role TEXT NOT NULL CHECK (role IN ('viewer','clinician','intake','admin')),"
     "  created_ms INTEGER NOT NULL,"
     "  expires_ms INTEGER NOT NULL,"             /* 0 = no expiry */
     "  last_used_ms INTEGER NOT NULL DEFAULT 0,"
     "  revoked_ms INTEGER NOT NULL DEFAULT 0"
     ");"
     "CREATE INDEX api_tokens_user ON api_tokens(user_id);"
     "CREATE TABLE login_failures ("
     "  name TEXT PRIMARY KEY,"                   /* sign-in name as typed, lower-cased */
     "  failures INTEGER NOT NULL,"
     "  last_ms INTEGER NOT NULL,"
     "  locked_until_ms INTEGER NOT NULL"
     ");"
     "ALTER TABLE audit ADD COLUMN user_id INTEGER;"
     "ALTER TABLE audit ADD COLUMN role TEXT;"
     "ALTER TABLE audit ADD COLUMN source TEXT;"
     "ALTER TABLE audit ADD COLUMN reason TEXT;"},
    /* Patients whose data arrived in a poll that has not completed (held per source): they
     * are screened only once a poll of that source completes (store_held_release). */
    {"held (patients with data from an incomplete poll)",
     "CREATE TABLE held ("
     "  source TEXT NOT NULL,"
     "  patient_id TEXT NOT NULL,"
     "  marked_ms INTEGER NOT NULL,"
     "  PRIMARY KEY (source, patient_id)"
     ");"
     "CREATE INDEX held_patient ON held(patient_id);"},
    /* One active referral per patient and episode (propose.h): the episode a referral
     * belongs to, the referral a re-route replaces, the disease marker the episode opened
     * with, why a referral ended without closing its episode ('withdrawn': a proposal the
     * screener took back before anyone acted on it; 'superseded': replaced by an approved
     * re-route) and when a cancellation at the center was requested (the sender does it).
     * Existing rows are episode 1; proposals the screener cancelled are marked withdrawn. */
    {"referral episodes (episode, supersedes, episode_marker, ended, cancel_requested_ms)",
     "ALTER TABLE referrals ADD COLUMN episode INTEGER NOT NULL DEFAULT 1;"
     "ALTER TABLE referrals ADD COLUMN supersedes INTEGER;"           /* a referrals id */
     "ALTER TABLE referrals ADD COLUMN episode_marker TEXT;"
     "ALTER TABLE referrals ADD COLUMN ended TEXT;"
     "ALTER TABLE referrals ADD COLUMN cancel_requested_ms INTEGER NOT NULL DEFAULT 0;"
     "UPDATE referrals SET ended = 'withdrawn' WHERE state = 'cancelled' AND id IN "
     "  (SELECT referral_id FROM audit WHERE action = 'cancel' AND actor = 'screener');"
     "CREATE INDEX referrals_cancel_due ON referrals(id) WHERE cancel_requested_ms > 0;"},
    /* CDS Hooks (cds.h): the JWT ids seen until they expire (replay), the cards shown (which
     * patient a card's feedback is about) and the feedback the EHR sent. */
    {"cds hooks (cds_jti, cds_cards, cds_feedback)",
     "CREATE TABLE cds_jti ("
     "  iss TEXT NOT NULL,"
     "  jti TEXT NOT NULL,"
     "  exp_ms INTEGER NOT NULL,"
     "  PRIMARY KEY (iss, jti)"
     ");"
     "CREATE INDEX cds_jti_exp ON cds_jti(exp_ms);"
     "CREATE TABLE cds_cards ("
     "  uuid TEXT PRIMARY KEY,"
     "  patient_id TEXT NOT NULL,"
     "  service TEXT NOT NULL,"
     "  category TEXT NOT NULL,"
     "  first_ms INTEGER NOT NULL,"
     "  last_ms INTEGER NOT NULL"
     ");"
     "CREATE TABLE cds_feedback ("
     "  id INTEGER PRIMARY KEY,"
     "  service TEXT NOT NULL,"
     "  card TEXT NOT NULL,"
     "  patient_id TEXT,"                         /* NULL: a card we do not know */
     "  outcome TEXT NOT NULL CHECK (outcome IN ('accepted','overridden')),"
     "  override_reason TEXT,"                    /* the coding's code and display */
     "  accepted_suggestions TEXT,"               /* suggestion uuids, comma-separated */
     "  outcome_ts TEXT,"                          /* as the EHR sent it */
     "  received_ms INTEGER NOT NULL"
     ");"
     "CREATE INDEX cds_feedback_card ON cds_feedback(card);"},
    /* store.retention: whether the patient's last screening found a heme diagnosis (1), none
     * (0), or was made before this was recorded (NULL: never pruned); when the patient's
     * cached resources were pruned (the verdict stays: nothing is screened from an empty
     * cache until new data arrives). */
    {"verdicts.heme, verdicts.pruned_ms (store.retention)",
     "ALTER TABLE verdicts ADD COLUMN heme INTEGER;"
     "ALTER TABLE verdicts ADD COLUMN pruned_ms INTEGER;"},
    /* Notifications (notify.h): every event noticed once (its key), and the notices built from
     * them, one row per channel, with their delivery state ('sending' left by a crash becomes
     * 'unknown': delivered at most once). */
    {"notify_events, notify_notices",
     "CREATE TABLE notify_events ("
     "  key TEXT PRIMARY KEY,"                    /* "declined:12", "digest:2026-12-06" ... */
     "  kind TEXT NOT NULL,"
     "  created_ms INTEGER NOT NULL"
     ");"
     "CREATE TABLE notify_notices ("
     "  id INTEGER PRIMARY KEY,"
     "  kind TEXT NOT NULL,"
     "  channel TEXT NOT NULL CHECK (channel IN ('email','webhook')),"
     "  count INTEGER NOT NULL,"
     "  urgency TEXT,"
     "  body_json TEXT NOT NULL,"                 /* counts and the link: never PHI */
     "  status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN "
     "    ('pending','sending','sent','failed','unknown')),"
     "  attempts INTEGER NOT NULL DEFAULT 0,"
     "  next_attempt_ms INTEGER NOT NULL DEFAULT 0,"
     "  last_error TEXT,"
     "  created_ms INTEGER NOT NULL,"
     "  updated_ms INTEGER NOT NULL"
     ");"
     "CREATE INDEX notify_notices_due ON notify_notices(status, next_attempt_ms);"},
    /* The clinician's worklist (gateway/web): one row per screened patient derived from its
     * verdict by triggers, so the listing pages through an index instead of parsing every
     * verdict; the decisions of clinicians to take a patient off the list (bound to the
     * verdict they saw: vkey); when each person last looked at the list. */
    {"worklist, worklist_declines, worklist_visits",
     "CREATE TABLE worklist ("
     "  patient_id TEXT PRIMARY KEY,"
     "  on_list INTEGER NOT NULL,"                /* eligible, possibly, or a consult */
     "  category TEXT NOT NULL,"
     "  urank INTEGER NOT NULL,"                  /* 0 now ... 3 none */
     "  urgency TEXT,"
     "  consult TEXT,"
     "  disease TEXT,"
     "  relapse_day TEXT,"                        /* last progression documented, YYYY-MM-DD */
     "  relapse_sort TEXT NOT NULL,"              /* relapse_day, '9999' when none */
     "  missing_n INTEGER NOT NULL,"
     "  products TEXT,"                           /* JSON arrays of indication keys */
     "  possible TEXT,"
     "  vkey TEXT NOT NULL,"                      /* what a decline is bound to */
     "  updated_ms INTEGER NOT NULL"
     ");"
     "CREATE INDEX worklist_order ON worklist(on_list, urank, relapse_sort, patient_id);"
     "CREATE INDEX worklist_disease ON worklist(on_list, disease);"
     "CREATE TABLE worklist_declines ("
     "  patient_id TEXT PRIMARY KEY,"
     "  vkey TEXT NOT NULL,"
     "  reason_code TEXT NOT NULL,"
     "  reason TEXT,"
     "  actor TEXT NOT NULL,"
     "  user_id INTEGER,"
     "  ts_ms INTEGER NOT NULL"
     ");"
     "CREATE TABLE worklist_visits ("
     "  user_id INTEGER PRIMARY KEY,"
     "  seen_ms INTEGER NOT NULL,"
     "  prev_ms INTEGER NOT NULL"
     ");"
     "CREATE TRIGGER worklist_verdict_insert AFTER INSERT ON verdicts BEGIN " WORKLIST_ROW("NEW") " END;"
     "CREATE TRIGGER worklist_verdict_update AFTER UPDATE ON verdicts BEGIN " WORKLIST_ROW("NEW") " END;"
     "CREATE TRIGGER worklist_verdict_delete AFTER DELETE ON verdicts BEGIN "
     "  DELETE FROM worklist WHERE patient_id = OLD.patient_id; END;"
     "INSERT OR REPLACE INTO worklist SELECT * FROM (" WORKLIST_SELECT("verdicts") ");"},
    /* The worklist reads each listed patient's latest referral state from this index alone
     * (the referral rows are large: payload, verdict; reading 5,000 of them for a count took
     * 30-50 ms at 10,000 patients, the index 2-5 ms). */
    {"referrals_patient_state index",
     "CREATE INDEX referrals_patient_state ON referrals(patient_id, id, state);"},
    /* A center's side (gateway/intake): the FHIR resources received from referring sites (the
     * id is the FHIR id; the JSON carries it with meta.versionId/lastUpdated), their
     * identifiers (ifNoneExist and searches), one row per received referral (the inbox), the
     * short-lived access tokens issued to referring sites (SHA-256 of the token), and the
     * audit of the intake team's acts (audit.intake_id). */
    {"intake_resources, intake_identifiers, intake_referrals, intake_tokens, audit.intake_id",
     "CREATE TABLE intake_resources ("
     "  id INTEGER PRIMARY KEY,"
     "  type TEXT NOT NULL,"
     "  referral_id INTEGER,"                     /* intake_referrals.id once known */
     "  client_id TEXT NOT NULL,"                 /* the referring site that sent it */
     "  version INTEGER NOT NULL DEFAULT 1,"
     "  updated_ms INTEGER NOT NULL,"
     "  json TEXT NOT NULL"
     ");"
     "CREATE INDEX intake_resources_updated ON intake_resources(type, updated_ms);"
     "CREATE INDEX intake_resources_referral ON intake_resources(referral_id);"
     "CREATE TABLE intake_identifiers ("
     "  resource_id INTEGER NOT NULL REFERENCES intake_resources(id),"
     "  type TEXT NOT NULL,"
     "  system TEXT NOT NULL,"                    /* '' when the identifier has none */
     "  value TEXT NOT NULL,"
     "  PRIMARY KEY (type, system, value, resource_id)"
     ");"
     "CREATE TABLE intake_referrals ("
     "  id INTEGER PRIMARY KEY,"                  /* the referral's number in the inbox */
     "  client_id TEXT NOT NULL,"
     "  sr_id INTEGER NOT NULL REFERENCES intake_resources(id),"
     "  task_id INTEGER NOT NULL UNIQUE REFERENCES intake_resources(id),"
     "  priority TEXT,"                           /* routine | urgent | asap | stat */
     "  urank INTEGER NOT NULL,"                  /* 0 stat, 1 asap, 2 urgent, 3 routine */
     "  task_status TEXT NOT NULL,"
     "  business_status TEXT,"
     "  reason TEXT,"                             /* the last act's reason in words */
     "  consult TEXT,"                            /* the consult's date and time, when scheduled */
     "  received_ms INTEGER NOT NULL,"
     "  updated_ms INTEGER NOT NULL"
     ");"
     "CREATE INDEX intake_referrals_inbox ON intake_referrals(urank, received_ms);"
     "CREATE TABLE intake_tokens ("
     "  hash BLOB PRIMARY KEY,"
     "  client_id TEXT NOT NULL,"
     "  exp_ms INTEGER NOT NULL"
     ");"
     "ALTER TABLE audit ADD COLUMN intake_id INTEGER;"
     "CREATE INDEX audit_intake ON audit(intake_id, id) WHERE intake_id IS NOT NULL;"},
    /* 14: what a proposal's package is made of (the referral room's recipe: the resources
     * it carries by type and id, the packet document, the center and referrer as they were),
     * so the transaction Bundle is built when it is needed (shown, approved, sent) and stored
     * in payload once it is sent, instead of ~65 KB written with every proposal. Last column:
     * the small columns before it stay in the row's first page. */
    {"referrals.package", "ALTER TABLE referrals ADD COLUMN package TEXT;"},
    /* 15: the worklist row is written with its verdict (store_verdict_put_screened binds the
     * values the screener has typed; store_verdict_put derives them in SQL from the JSON as the
     * triggers did), instead of the insert and update triggers running json_extract a dozen
     * times and json_each twice over ~14 KB of JSON per verdict. The delete trigger stays. The
     * other updates of a verdict (heme, pruned_ms) change nothing the row is made of. */
    {"worklist written with the verdict",
     "DROP TRIGGER worklist_verdict_insert; DROP TRIGGER worklist_verdict_update;"},
    /* 16: a referral's verdict may be the marker REF_VERDICT_SHARED (the patient's verdicts
     * row holds the text); no table changes, the version keeps older binaries out */
    {"referrals.verdict_json shared with the verdict", "SELECT 1;"},
    /* 17: why a proposal's texts could not be composed when it was read (referral.h:
     * refer_compose_cause): its cause code and the plain sentence shown with it; cleared when
     * the texts are composed or the proposal changes. Last columns: NULL on every row that
     * composed, so a summary read never reaches past the package for them. */
    {"referrals.compose_cause, compose_error",
     "ALTER TABLE referrals ADD COLUMN compose_cause TEXT;"
     "ALTER TABLE referrals ADD COLUMN compose_error TEXT;"
     "CREATE INDEX referrals_unprepared ON referrals(compose_cause) WHERE compose_cause IS NOT NULL;"},
    /* 18: the center keeps every version of what the sites sent and of what its intake team
     * changed (intake_versions, written by a trigger with the resource, so a version is never
     * missing), served as FHIR _history; the site remembers the version of its Task at the
     * center it last read (task_seen), so a poll that finds the Task two or more versions on
     * reads the history and records each step the center took (accepted, then scheduled), not
     * only the last one. */
    {"intake_versions, task_seen",
     "CREATE TABLE intake_versions ("
     "  resource_id INTEGER NOT NULL REFERENCES intake_resources(id),"
     "  version INTEGER NOT NULL,"
     "  updated_ms INTEGER NOT NULL,"
     "  json TEXT NOT NULL,"
     "  PRIMARY KEY (resource_id, version)"
     ");"
     "INSERT INTO intake_versions(resource_id, version, updated_ms, json) "
     "  SELECT id, version, updated_ms, json FROM intake_resources WHERE json <> '';"
     "CREATE TRIGGER intake_versions_put AFTER UPDATE OF json ON intake_resources "
     "  WHEN NEW.json <> '' BEGIN "
     "  INSERT OR REPLACE INTO intake_versions(resource_id, version, updated_ms, json) "
     "  VALUES (NEW.id, NEW.version, NEW.updated_ms, NEW.json); END;"
     "CREATE TABLE task_seen ("
     "  referral_id INTEGER PRIMARY KEY REFERENCES referrals(id),"
     "  version TEXT NOT NULL,"
     "  updated_ms INTEGER NOT NULL"
     ");"},
};

#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))
_Static_assert(N_MIGRATIONS == STORE_SCHEMA_VERSION,
               "STORE_SCHEMA_VERSION (store.h) is the number of migration steps");

/* ---- statements -------------------------------------------------------------------------- */

/* A referral's verdict_json is the verdict it was proposed on. While that is still the text of
 * the patient's verdicts row (the usual case: the screener writes both in one transaction), the
 * column holds the marker REF_VERDICT_SHARED (a zero-length blob: no text is one) instead of a
 * second copy of ~8 KB; the verdict's writes copy the text into the referrals that share it
 * before they change or delete it (Q_REF_VERDICT_UNSHARE), so the referral keeps what it was
 * proposed on. Readers get the text through REF_VERDICT. (Migration 16 marks the files that may
 * hold the marker: older binaries refuse them.) */
#define REF_VERDICT_SHARED "X''"
#define REF_VERDICT                                                                          \
    "CASE WHEN typeof(verdict_json) = 'blob' THEN (SELECT v.verdict_json FROM verdicts v "    \
    "WHERE v.patient_id = referrals.patient_id) ELSE verdict_json END"
/* the marker when VJ is the patient PID's verdict text now, else VJ */
#define REF_VERDICT_SHARE(VJ, PID)                                                           \
    "CASE WHEN " VJ " = (SELECT v.verdict_json FROM verdicts v WHERE v.patient_id = " PID     \
    ") THEN " REF_VERDICT_SHARED " ELSE " VJ " END"
#define REF_COLS                                                                             \
    "id, placer_id, site_id, patient_id, center_id, indications, state, mode, urgency, "     \
    "explanation, " REF_VERDICT ", route_json, payload, attempts, next_attempt_ms, "         \
    "last_status, last_error, last_response, center_sr_ref, center_task_ref, task_status, " \
    "business_status, created_ms, updated_ms, episode, supersedes, episode_marker, ended, "  \
    "cancel_requested_ms, package, compose_cause, compose_error"
/* the same positions, large columns left unread */
#define REF_COLS_SUMMARY                                                                     \
    "id, placer_id, site_id, patient_id, center_id, indications, state, mode, urgency, "     \
    "NULL, NULL, NULL, NULL, attempts, next_attempt_ms, last_status, last_error, NULL, "     \
    "center_sr_ref, center_task_ref, task_status, business_status, created_ms, updated_ms, " \
    "episode, supersedes, episode_marker, ended, cancel_requested_ms, NULL, compose_cause, "      \
    "compose_error"
/* The patients store.retention may prune (?1: the cutoff in ms): screened without a heme
 * diagnosis, not a candidate, no referral ever, nothing held or waiting to be screened, and no
 * cached resource stored or changed since the cutoff. Verdicts, referrals and the audit are
 * never touched; only the resources table is. */
#define RETENTION_PATIENTS                                                                   \
    "WITH prune(pid) AS (SELECT v.patient_id FROM verdicts v WHERE v.heme = 0 AND "          \
    "v.category NOT IN ('eligible','possibly_eligible') AND "                                \
    "NOT EXISTS (SELECT 1 FROM referrals f WHERE f.patient_id = v.patient_id) AND "          \
    "NOT EXISTS (SELECT 1 FROM held h WHERE h.patient_id = v.patient_id) AND "               \
    "NOT EXISTS (SELECT 1 FROM daemon_dirty d WHERE d.patient_id = v.patient_id) AND "       \
    "(SELECT max(r.stored_ms) FROM resources r WHERE r.patient_id = v.patient_id) < ?1) "
#define WORKLIST_ORDER                                                                       \
    "CASE category WHEN 'eligible' THEN 0 WHEN 'possibly_eligible' THEN 1 ELSE 2 END"

enum {
    Q_SAVEPOINT,
    Q_SAVEPOINT_RELEASE,
    Q_AUDIT_INSERT,
    Q_AUDIT_EACH,
    Q_AUDIT_EACH_REF,
    Q_AUDIT_COUNT,
    Q_AUDIT_COUNT_REF,
    Q_AUDIT_SINCE,
    Q_CURSOR_GET,
    Q_CURSOR_PUT,
    Q_RES_PUT,
    Q_RES_UPSERT,
    Q_RES_EACH,
    Q_RES_EACH_NAMED,
    Q_RES_GET,
    Q_RES_DELETE,
    Q_RES_COUNT,
    Q_PRUNE_COUNT,
    Q_PRUNE_DELETE,
    Q_PRUNE_MARK,
    Q_VERDICT_PRUNED,
    Q_HELD_MARK,
    Q_HELD_RELEASE,
    Q_HELD_CLEAR,
    Q_HELD_COUNT,
    Q_HELD_COUNT_ALL,
    Q_DIRTY_MARK,
    Q_DIRTY_RULESET,
    Q_DIRTY_NEXT,
    Q_DIRTY_CLEAR,
    Q_DIRTY_COUNT,
    Q_DIRTY_ALL,
    Q_DIRTY_ALL_COUNT,
    Q_VERDICT_PUT,
    Q_VERDICT_PUT_HEME,
    Q_WL_PUT,
    Q_WL_PUT_JSON,
    Q_VERDICT_GET,
    Q_VERDICT_HEAD,
    Q_VERDICT_DELETE,
    Q_VERDICT_LIST,
    Q_VERDICT_LIST_CAT,
    Q_VERDICT_COUNT,
    Q_VERDICT_HEME,
    Q_NOTIFY_EVENT,
    Q_NOTICE_ADD,
    Q_NOTICE_DUE,
    Q_NOTICE_CLAIM,
    Q_NOTICE_DONE,
    Q_NOTICE_ORPHANS,
    Q_NOTICE_COUNT,
    Q_REF_NOTICE_SCAN,
    Q_REF_UNPREPARED,
    Q_REF_INSERT,
    Q_REF_VERDICT_UNSHARE,
    Q_REF_GET,
    Q_REF_GET_PLACER,
    Q_REF_FIND,
    Q_REF_STATE,
    Q_REF_IDS,
    Q_REF_COUNT_STATES,
    Q_REF_STATE_AGE,
    Q_REF_TIME_TO,
    Q_REF_UPDATE,
    Q_REF_TEXTS,
    Q_REF_CANCEL_DUE,
    Q_OUTBOX_ADD,
    Q_OUTBOX_PENDING,
    Q_OUTBOX_UPDATE,
    Q_AUDIT_ACTOR,
    Q_AUDIT_LIST,
    Q_USER_ADD,
    Q_USER_BY_NAME,
    Q_USER_BY_ID,
    Q_USER_BY_SUBJECT,
    Q_USER_SET_PW,
    Q_USER_SET_ROLE,
    Q_USER_SET_SUBJECT,
    Q_USER_SET_DISPLAY,
    Q_USER_SET_DISABLED,
    Q_USER_TOUCH,
    Q_USER_EACH,
    Q_SESSION_PUT,
    Q_SESSION_GET,
    Q_SESSION_TOUCH,
    Q_SESSION_DELETE,
    Q_SESSION_DELETE_USER,
    Q_SESSION_PRUNE,
    Q_SESSION_COUNT,
    Q_TOKEN_PUT,
    Q_TOKEN_GET,
    Q_TOKEN_TOUCH,
    Q_TOKEN_REVOKE,
    Q_TOKEN_REVOKE_USER,
    Q_TOKEN_EACH,
    Q_LOGIN_GET,
    Q_LOGIN_PRUNE,
    Q_LOGIN_PUT,
    Q_LOGIN_CLEAR,
    Q_CDS_JTI_PRUNE,
    Q_CDS_JTI_ADD,
    Q_CDS_CARD_PUT,
    Q_CDS_CARD_GET,
    Q_CDS_FEEDBACK_ADD,
    Q_CDS_FEEDBACK_COUNT,
    Q_WL_PAGE,
    Q_WL_COUNT,
    Q_WL_GET,
    Q_WL_COUNTS,
    Q_WL_DISEASES,
    Q_WL_DECLINE,
    Q_WL_VISIT_GET,
    Q_WL_VISIT_PUT,
    Q_WL_DECLINED_FOR,
    Q_PROGRAM_FUNNEL,
    Q_PROGRAM_REFERRALS,
    Q_PROGRAM_DECLINES,
    Q_PROGRAM_CDS,
    Q_INTAKE_RES_NEW,
    Q_INTAKE_RES_PUT,
    Q_INTAKE_RES_GET,
    Q_INTAKE_RES_HISTORY,
    Q_TASK_SEEN_GET,
    Q_TASK_SEEN_PUT,
    Q_INTAKE_RES_IDENT,
    Q_INTAKE_RES_SINCE,
    Q_INTAKE_RES_OF_REF,
    Q_INTAKE_IDENT_ADD,
    Q_INTAKE_REF_ADD,
    Q_INTAKE_REF_GET,
    Q_INTAKE_REF_BY_TASK,
    Q_INTAKE_REF_LIST,
    Q_INTAKE_REF_UPDATE,
    Q_INTAKE_REF_COUNT,
    Q_INTAKE_REF_STATES,
    Q_INTAKE_AUDIT,
    Q_INTAKE_AUDIT_LIST,
    Q_INTAKE_TOKEN_PRUNE,
    Q_INTAKE_TOKEN_PUT,
    Q_INTAKE_TOKEN_GET,
    Q_FIXED
};

#define USER_COLS                                                                            \
    "id, name, display_name, role, kind, pw_hash, oidc_subject, disabled, created_ms, "     \
    "updated_ms, last_login_ms"
#define TOKEN_COLS "id, user_id, label, role, created_ms, expires_ms, last_used_ms, revoked_ms"
#define AUDIT_COLS                                                                           \
    "id, ts_ms, coalesce(referral_id, 0), actor, action, from_state, to_state, detail, "    \
    "coalesce(user_id, 0), role, source, reason"

#define INTAKE_RES_COLS "id, type, coalesce(referral_id, 0), client_id, version, updated_ms, json"
#define INTAKE_REF_COLS                                                                      \
    "id, client_id, sr_id, task_id, priority, urank, task_status, business_status, reason, "  \
    "consult, received_ms, updated_ms"
/* the worklist page: the row, its latest referral, and the filters ?1..?4 */
/* the patient's latest referral, from the referrals_patient_state index alone */
#define WL_LAST_STATE                                                                        \
    "(SELECT x.state FROM referrals x WHERE x.patient_id = w.patient_id ORDER BY x.id DESC "  \
    "LIMIT 1)"
#define WL_COLS                                                                              \
    "w.patient_id, w.category, w.urgency, w.consult, w.disease, w.relapse_day, w.products, "   \
    "w.possible, w.missing_n, w.updated_ms, " WL_LAST_STATE ", "                              \
    "coalesce((SELECT max(x.id) FROM referrals x WHERE x.patient_id = w.patient_id), 0)"
#define WL_FROM "worklist w"
#define WL_NOT_DECLINED                                                                      \
    "NOT EXISTS (SELECT 1 FROM worklist_declines d WHERE d.patient_id = w.patient_id AND "   \
    "d.vkey = w.vkey)"
#define WL_WHERE                                                                             \
    "w.on_list = 1 AND (?1 IS NULL OR w.category = ?1 OR (?1 = 'consult' AND w.category NOT " \
    "IN ('eligible','possibly_eligible'))) AND (?2 IS NULL OR w.disease = ?2) AND "          \
    "(?3 = 0 OR w.updated_ms > ?3) AND (?4 IS NULL OR coalesce(" WL_LAST_STATE ", 'none') = ?4) AND "   \
    WL_NOT_DECLINED

static const struct {
    const char *what; /* for error messages */
    const char *sql;
} fixed[Q_FIXED] = {
    /* one per screened patient (store_savepoint): prepared once, not parsed each time */
    [Q_SAVEPOINT] = {"savepoint", "SAVEPOINT unit"},
    [Q_SAVEPOINT_RELEASE] = {"savepoint release", "RELEASE unit"},
    [Q_AUDIT_INSERT] = {"audit insert",
                        "INSERT INTO audit(ts_ms, actor, action, referral_id, from_state, "
                        "to_state, detail) VALUES (?,?,?,?,?,?,?)"},
    [Q_AUDIT_EACH] = {"audit read", "SELECT ts_ms, actor, action, from_state, to_state, detail "
                                    "FROM audit ORDER BY id"},
    [Q_AUDIT_EACH_REF] = {"audit read",
                          "SELECT ts_ms, actor, action, from_state, to_state, detail FROM audit "
                          "WHERE referral_id = ? ORDER BY id"},
    [Q_AUDIT_COUNT] = {"audit count", "SELECT count(*) FROM audit"},
    [Q_AUDIT_COUNT_REF] = {"audit count", "SELECT count(*) FROM audit WHERE referral_id = ?"},
    [Q_AUDIT_SINCE] = {"audit read", "SELECT " AUDIT_COLS " FROM audit WHERE id > ? ORDER BY id"},
    [Q_CURSOR_GET] = {"cursor read", "SELECT value FROM cursors WHERE source = ? AND key = ?"},
    [Q_CURSOR_PUT] = {"cursor write",
                      "INSERT INTO cursors(source, key, value, updated_ms) VALUES (?,?,?,?) "
                      "ON CONFLICT(source, key) DO UPDATE SET value = excluded.value, "
                      "updated_ms = excluded.updated_ms"},
    /* version and last_updated (v1 columns, read by nothing: the bytes carry meta) are left
     * NULL, and cleared when an older row changes */
    [Q_RES_PUT] = {"resource write",
                   "INSERT INTO resources(type, id, patient_id, json, stored_ms) VALUES (?,?,?,?,?) "
                   "ON CONFLICT(type, id) DO UPDATE SET patient_id = excluded.patient_id, "
                   "version = NULL, last_updated = NULL, json = excluded.json, "
                   "stored_ms = excluded.stored_ms"},
    [Q_RES_UPSERT] = {"resource write",
                      "INSERT INTO resources(type, id, patient_id, json, stored_ms) VALUES "
                      "(?,?,?,?,?) ON CONFLICT(type, id) DO UPDATE SET patient_id = "
                      "excluded.patient_id, version = NULL, last_updated = NULL, json = "
                      "excluded.json, stored_ms = excluded.stored_ms WHERE resources.json IS NOT "
                      "excluded.json"},
    /* no ORDER BY: a sort would copy every row (json included) through a temporary b-tree;
     * the caller orders what it parsed (fewer bytes) */
    [Q_RES_EACH] = {"resource read", "SELECT json FROM resources WHERE patient_id = ?"},
    [Q_RES_EACH_NAMED] = {"resource read",
                          "SELECT type, id, json FROM resources WHERE patient_id = ?"},
    [Q_RES_GET] = {"resource read",
                   "SELECT type, id, json FROM resources WHERE type = ? AND id = ?"},
    [Q_DIRTY_MARK] = {"dirty mark", "INSERT OR IGNORE INTO daemon_dirty(patient_id, marked_ms) "
                                    "VALUES (?,?)"},
    [Q_DIRTY_RULESET] = {"dirty mark",
                         "INSERT OR IGNORE INTO daemon_dirty(patient_id, marked_ms) SELECT "
                         "patient_id, ? FROM verdicts WHERE ruleset_hash <> ?"},
    [Q_RES_DELETE] = {"resource delete",
                      "DELETE FROM resources WHERE type = ? AND id = ? RETURNING patient_id"},
    [Q_RES_COUNT] = {"resource count", "SELECT count(*) FROM resources WHERE patient_id = ?"},
    /* store.retention: the patients whose cached resources may go (RETENTION_PATIENTS), and
     * their resources counted or removed */
    [Q_PRUNE_COUNT] = {"retention count",
                       RETENTION_PATIENTS "SELECT count(DISTINCT patient_id), count(*) FROM "
                       "resources WHERE patient_id IN (SELECT pid FROM prune)"},
    [Q_PRUNE_DELETE] = {"retention prune",
                        RETENTION_PATIENTS "DELETE FROM resources WHERE patient_id IN "
                        "(SELECT pid FROM prune)"},
    [Q_PRUNE_MARK] = {"retention prune",
                      RETENTION_PATIENTS "UPDATE verdicts SET pruned_ms = ?2 WHERE patient_id IN "
                      "(SELECT pid FROM prune)"},
    [Q_VERDICT_PRUNED] = {"verdict read", "SELECT pruned_ms FROM verdicts WHERE patient_id = ?"},
    [Q_HELD_MARK] = {"held mark", "INSERT OR IGNORE INTO held(source, patient_id, marked_ms) "
                                  "VALUES (?,?,?)"},
    [Q_HELD_RELEASE] = {"held release",
                        "INSERT OR IGNORE INTO daemon_dirty(patient_id, marked_ms) SELECT "
                        "patient_id, marked_ms FROM held WHERE source = ?"},
    [Q_HELD_CLEAR] = {"held release", "DELETE FROM held WHERE source = ?"},
    [Q_HELD_COUNT] = {"held count", "SELECT count(*) FROM held WHERE source = ?"},
    [Q_HELD_COUNT_ALL] = {"held count", "SELECT count(DISTINCT patient_id) FROM held"},
    /* a patient still held by any source waits (held_patient index) */
    [Q_DIRTY_NEXT] = {"dirty read", "SELECT patient_id FROM daemon_dirty d WHERE NOT EXISTS "
                                    "(SELECT 1 FROM held h WHERE h.patient_id = d.patient_id) "
                                    "ORDER BY marked_ms, patient_id LIMIT ?"},
    [Q_DIRTY_CLEAR] = {"dirty clear", "DELETE FROM daemon_dirty WHERE patient_id = ?"},
    [Q_DIRTY_COUNT] = {"dirty count", "SELECT count(*) FROM daemon_dirty"},
    [Q_DIRTY_ALL] = {"dirty mark", "INSERT OR IGNORE INTO daemon_dirty(patient_id, marked_ms) "
                                   "SELECT DISTINCT patient_id, ? FROM resources WHERE "
                                   "patient_id <> ''"},
    [Q_DIRTY_ALL_COUNT] = {"dirty count", "SELECT count(DISTINCT patient_id) FROM resources "
                                          "WHERE patient_id <> ''"},
    [Q_VERDICT_PUT] = {"verdict write",
                       "INSERT INTO verdicts(patient_id, ruleset_hash, category, profile_json, "
                       "verdict_json, updated_ms) VALUES (?,?,?,?,?,?) ON CONFLICT(patient_id) "
                       "DO UPDATE SET ruleset_hash = excluded.ruleset_hash, category = "
                       "excluded.category, profile_json = excluded.profile_json, verdict_json = "
                       "excluded.verdict_json, updated_ms = excluded.updated_ms"},
    /* a screening's verdict and its heme mark in one statement (the worklist trigger runs once) */
    [Q_VERDICT_PUT_HEME] = {"verdict write",
                            "INSERT INTO verdicts(patient_id, ruleset_hash, category, profile_json, "
                            "verdict_json, updated_ms, heme, pruned_ms) VALUES (?,?,?,?,?,?,?,NULL) "
                            "ON CONFLICT(patient_id) DO UPDATE SET ruleset_hash = "
                            "excluded.ruleset_hash, category = excluded.category, profile_json = "
                            "excluded.profile_json, verdict_json = excluded.verdict_json, "
                            "updated_ms = excluded.updated_ms, heme = excluded.heme, pruned_ms = NULL"},
    /* a verdict's worklist row (migration 15): from the screener's typed values (?1 patient,
     * ?2 category, ?3 urgency, ?4 consult recommendation, ?5 disease, ?6 relapse day, ?7
     * missing, ?8 products, ?9 possible products, ?10 updated_ms), computed as WORKLIST_COLS
     * computes them from the JSON; or from the verdicts row's JSON itself */
    [Q_WL_PUT] = {"worklist write",
                  "INSERT OR REPLACE INTO worklist(patient_id, on_list, category, urank, urgency, "
                  "consult, disease, relapse_day, relapse_sort, missing_n, products, possible, vkey, "
                  "updated_ms) VALUES (?1, (?2 IN ('eligible','possibly_eligible') OR "
                  "coalesce(?4, 'none') <> 'none'), ?2, CASE WHEN ?3 = 'now' OR ?4 = 'refer_now' "
                  "THEN 0 WHEN ?3 = 'soon' THEN 1 WHEN ?3 = 'review' OR ?4 = 'early_consult' THEN 2 "
                  "ELSE 3 END, ?3, ?4, ?5, ?6, coalesce(?6, '9999'), ?7, ?8, ?9, ?2 || '|' || "
                  "coalesce(?8, '') || '|' || coalesce(?9, '') || '|' || coalesce(?4, ''), ?10)"},
    [Q_WL_PUT_JSON] = {"worklist write", "INSERT OR REPLACE INTO worklist "
                                         WORKLIST_SELECT("verdicts") " WHERE patient_id = ?"},
    /* the small columns only: the JSON columns are not read */
    [Q_VERDICT_HEAD] = {"verdict read",
                        "SELECT patient_id, ruleset_hash, category, NULL, NULL, updated_ms "
                        "FROM verdicts WHERE patient_id = ?"},
    [Q_VERDICT_GET] = {"verdict read",
                       "SELECT patient_id, ruleset_hash, category, profile_json, verdict_json, "
                       "updated_ms FROM verdicts WHERE patient_id = ?"},
    [Q_VERDICT_DELETE] = {"verdict delete", "DELETE FROM verdicts WHERE patient_id = ?"},
    [Q_VERDICT_LIST] = {"verdict list",
                        "SELECT patient_id, ruleset_hash, category, NULL, verdict_json, "
                        "updated_ms FROM verdicts ORDER BY " WORKLIST_ORDER ", patient_id "
                        "LIMIT ? OFFSET ?"},
    [Q_VERDICT_LIST_CAT] = {"verdict list",
                            "SELECT patient_id, ruleset_hash, category, NULL, verdict_json, "
                            "updated_ms FROM verdicts WHERE category = ? ORDER BY patient_id "
                            "LIMIT ? OFFSET ?"},
    [Q_VERDICT_COUNT] = {"verdict count", "SELECT count(*) FROM verdicts WHERE category = ?"},
    [Q_NOTIFY_EVENT] = {"notify event", "INSERT OR IGNORE INTO notify_events(key, kind, created_ms) "
                                        "VALUES (?,?,?)"},
    [Q_NOTICE_ADD] = {"notice add", "INSERT INTO notify_notices(kind, channel, count, urgency, body_json, "
                                    "created_ms, updated_ms) VALUES (?,?,?,?,?,?,?)"},
    [Q_NOTICE_DUE] = {"notice read", "SELECT id, kind, channel, count, urgency, body_json, attempts FROM "
                                     "notify_notices WHERE status = 'pending' AND next_attempt_ms <= ? "
                                     "ORDER BY id LIMIT ?"},
    [Q_NOTICE_CLAIM] = {"notice claim", "UPDATE notify_notices SET status = 'sending', attempts = attempts "
                                        "+ 1, updated_ms = ? WHERE id = ? AND status = 'pending'"},
    [Q_NOTICE_DONE] = {"notice update", "UPDATE notify_notices SET status = ?, last_error = ?, "
                                        "next_attempt_ms = ?, updated_ms = ? WHERE id = ?"},
    [Q_NOTICE_ORPHANS] = {"notice update", "UPDATE notify_notices SET status = 'unknown', last_error = "
                                           "'interrupted while sending (not sent again)', updated_ms = ? "
                                           "WHERE status = 'sending'"},
    [Q_NOTICE_COUNT] = {"notice count", "SELECT count(*) FROM notify_notices WHERE status = ?"},
    /* referrals a notice may be about: failed, declined, sent and unanswered since ?1, or
     * approved but not prepared (migration 17; its state read as 'unprepared') */
    [Q_REF_NOTICE_SCAN] = {"referral list",
                           "SELECT id, CASE WHEN state = 'approved' THEN 'unprepared' ELSE state END, "
                           "updated_ms FROM referrals WHERE state IN ('failed','declined') "
                           "OR (state = 'sent' AND updated_ms < ?1) OR (state = 'approved' AND "
                           "compose_cause IS NOT NULL) ORDER BY id"},
    /* open referrals not prepared, by cause (the partial index of migration 17) */
    [Q_REF_UNPREPARED] = {"referral count",
                          "SELECT compose_cause, count(*) FROM referrals INDEXED BY referrals_unprepared "
                          "WHERE compose_cause IS NOT NULL AND state IN ('pending_approval','approved') "
                          "GROUP BY compose_cause"},
    [Q_VERDICT_HEME] = {"verdict write",
                        "UPDATE verdicts SET heme = ?, pruned_ms = NULL WHERE patient_id = ?"},
    [Q_REF_INSERT] = {"referral insert",
                      "INSERT INTO referrals(placer_id, site_id, patient_id, center_id, "
                      "indications, state, mode, urgency, explanation, verdict_json, "
                      "route_json, payload, created_ms, updated_ms, episode, supersedes, "
                      "episode_marker, package) VALUES "
                      "(?1,?2,?3,?4,?5,?6,?7,?8,?9," REF_VERDICT_SHARE("?10", "?3")
                      ",?11,?12,?13,?14,?15,?16,?17,?18) ON CONFLICT(placer_id) DO NOTHING"},
    /* before a patient's verdict text changes to ?2 or goes (?2 NULL): the referrals sharing
     * it get their own copy */
    [Q_REF_VERDICT_UNSHARE] = {"referral verdict copy",
                               "UPDATE referrals SET verdict_json = (SELECT v.verdict_json FROM "
                               "verdicts v WHERE v.patient_id = ?1) WHERE patient_id = ?1 AND "
                               "typeof(verdict_json) = 'blob' AND ?2 IS NOT (SELECT "
                               "v.verdict_json FROM verdicts v WHERE v.patient_id = ?1)"},
    [Q_REF_GET] = {"referral read", "SELECT " REF_COLS " FROM referrals WHERE id = ?"},
    [Q_REF_GET_PLACER] = {"referral read",
                          "SELECT " REF_COLS " FROM referrals WHERE placer_id = ?"},
    [Q_REF_FIND] = {"referral read", "SELECT id FROM referrals WHERE placer_id = ?"},
    [Q_REF_STATE] = {"referral read", "SELECT state FROM referrals WHERE id = ?"},
    [Q_REF_IDS] = {"referral list",
                   "SELECT id, placer_id FROM referrals INDEXED BY referrals_patient "
                   "WHERE patient_id = ? AND state = ? ORDER BY id"},
    [Q_REF_COUNT_STATES] = {"referral count",
                            "SELECT state, count(*) FROM referrals GROUP BY state"},
    [Q_REF_STATE_AGE] = {"referral count", "SELECT count(*), min(created_ms) FROM referrals "
                                           "WHERE state = ?"},
    [Q_REF_TIME_TO] = {"referral times",
                       "SELECT d FROM (SELECT (SELECT min(a.ts_ms) FROM audit a WHERE "
                       "a.referral_id = r.id AND a.to_state = ?1) - r.created_ms AS d "
                       "FROM referrals r) WHERE d IS NOT NULL"},
    /* one statement for every change a transition or the sender makes: ?N flags choose */
    [Q_REF_UPDATE] = {"referral update",
                      "UPDATE referrals SET state = coalesce(?2, state), updated_ms = ?3, "
                      "attempts = CASE WHEN ?4 THEN 0 WHEN ?5 THEN attempts + 1 "
                      "  ELSE attempts END, "
                      "next_attempt_ms = CASE WHEN ?4 THEN 0 WHEN ?5 THEN ?6 "
                      "  ELSE next_attempt_ms END, "
                      "center_sr_ref = CASE WHEN ?7 THEN ?8 ELSE center_sr_ref END, "
                      "center_task_ref = CASE WHEN ?7 THEN ?9 ELSE center_task_ref END, "
                      "last_status = CASE WHEN ?10 THEN ?11 ELSE last_status END, "
                      "last_error = CASE WHEN ?10 THEN ?12 WHEN ?7 THEN NULL "
                      "  ELSE last_error END, "
                      "last_response = CASE WHEN ?10 THEN ?13 ELSE last_response END, "
                      "task_status = CASE WHEN ?14 THEN ?15 ELSE task_status END, "
                      "business_status = CASE WHEN ?14 THEN ?16 ELSE business_status END, "
                      "payload = CASE WHEN ?17 THEN ?18 ELSE payload END, "
                      "placer_id = CASE WHEN ?19 THEN ?20 ELSE placer_id END, "
                      "center_id = CASE WHEN ?19 THEN ?21 ELSE center_id END, "
                      "indications = CASE WHEN ?19 THEN ?22 ELSE indications END, "
                      "urgency = CASE WHEN ?19 THEN ?23 ELSE urgency END, "
                      "explanation = CASE WHEN ?19 THEN ?24 ELSE explanation END, "
                      "verdict_json = CASE WHEN ?19 THEN " REF_VERDICT_SHARE("?25", "referrals.patient_id")
                      " ELSE verdict_json END, "
                      "route_json = CASE WHEN ?19 THEN ?26 ELSE route_json END, "
                      "ended = CASE WHEN ?27 THEN ?28 ELSE ended END, "
                      "cancel_requested_ms = CASE WHEN ?29 THEN ?30 ELSE cancel_requested_ms END, "
                      "episode_marker = CASE WHEN ?31 THEN ?32 ELSE episode_marker END, "
                      "package = CASE WHEN ?33 THEN ?34 ELSE package END, "
                      "compose_cause = CASE WHEN ?35 THEN ?36 WHEN ?19 THEN NULL "
                      "  ELSE compose_cause END, "
                      "compose_error = CASE WHEN ?35 THEN ?37 WHEN ?19 THEN NULL "
                      "  ELSE compose_error END "
                      "WHERE id = ?1"},
    /* a proposal's texts composed when first read: only while it is still without them and
     * still the proposal they were composed for (updated_ms kept: nothing of it changed) */
    [Q_REF_TEXTS] = {"referral texts",
                     "UPDATE referrals SET explanation = ?3, route_json = ?4, package = ?5, "
                     "compose_cause = NULL, compose_error = NULL WHERE id = ?1 AND placer_id = ?2 AND package IS NULL AND payload IS NULL"},
    /* the referrals whose cancellation at the center is still to do (partial index) */
    [Q_REF_CANCEL_DUE] = {"referral list",
                          "SELECT " REF_COLS_SUMMARY " FROM referrals INDEXED BY "
                          "referrals_cancel_due WHERE cancel_requested_ms > 0 ORDER BY id"},
    [Q_OUTBOX_ADD] = {"writeback insert",
                      "INSERT OR IGNORE INTO writeback_outbox(referral_id, state, audit_id, "
                      "created_ms, updated_ms) VALUES (?,?,?,?,?)"},
    [Q_OUTBOX_PENDING] = {"writeback read",
                          "SELECT id, referral_id, state FROM writeback_outbox "
                          "WHERE status = 'pending' ORDER BY id LIMIT ?"},
    [Q_OUTBOX_UPDATE] = {"writeback update",
                         "UPDATE writeback_outbox SET status = ?, attempts = attempts + ?, "
                         "last_error = ?, ehr_ref = coalesce(?, ehr_ref), updated_ms = ? "
                         "WHERE id = ?"},
    [Q_INTAKE_RES_NEW] = {"intake resource add",
                          "INSERT INTO intake_resources(type, client_id, updated_ms, json) VALUES (?1, ?2, ?3, '')"},
    [Q_INTAKE_RES_PUT] = {"intake resource write",
                          "UPDATE intake_resources SET referral_id = coalesce(?2, referral_id), version = ?3, "
                          "updated_ms = ?4, json = ?5 WHERE id = ?1"},
    [Q_INTAKE_RES_GET] = {"intake resource read",
                          "SELECT " INTAKE_RES_COLS " FROM intake_resources WHERE id = ?1 AND type = ?2"},
    /* a resource's versions, newest first (the versions of the row's id and type only) */
    [Q_INTAKE_RES_HISTORY] = {"intake resource history",
                              "SELECT r.id, r.type, coalesce(r.referral_id, 0), r.client_id, v.version, "
                              "v.updated_ms, v.json FROM intake_resources r JOIN intake_versions v ON "
                              "v.resource_id = r.id WHERE r.id = ?1 AND r.type = ?2 "
                              "ORDER BY v.version DESC LIMIT ?3"},
    [Q_TASK_SEEN_GET] = {"task version read", "SELECT version FROM task_seen WHERE referral_id = ?1"},
    [Q_TASK_SEEN_PUT] = {"task version write",
                         "INSERT INTO task_seen(referral_id, version, updated_ms) VALUES (?1, ?2, ?3) "
                         "ON CONFLICT(referral_id) DO UPDATE SET version = excluded.version, "
                         "updated_ms = excluded.updated_ms"},
    [Q_INTAKE_RES_IDENT] = {"intake identifier search",
                            "SELECT " INTAKE_RES_COLS " FROM intake_resources WHERE id IN (SELECT resource_id "
                            "FROM intake_identifiers WHERE type = ?1 AND value = ?3 AND (?2 IS NULL OR system = ?2)) "
                            "ORDER BY id LIMIT ?4"},
    [Q_INTAKE_RES_SINCE] = {"intake resource search",
                            "SELECT " INTAKE_RES_COLS " FROM intake_resources WHERE type = ?1 AND json <> '' AND "
                            "updated_ms >= ?2 AND updated_ms <= ?3 ORDER BY updated_ms, id LIMIT ?4"},
    [Q_INTAKE_RES_OF_REF] = {"intake referral resources",
                             "SELECT " INTAKE_RES_COLS " FROM intake_resources WHERE referral_id = ?1 ORDER BY id"},
    [Q_INTAKE_IDENT_ADD] = {"intake identifier add",
                            "INSERT OR IGNORE INTO intake_identifiers(resource_id, type, system, value) VALUES (?,?,?,?)"},
    [Q_INTAKE_REF_ADD] = {"intake referral add",
                          "INSERT INTO intake_referrals(client_id, sr_id, task_id, priority, urank, task_status, "
                          "business_status, received_ms, updated_ms) VALUES (?,?,?,?,?,?,?,?,?8)"},
    [Q_INTAKE_REF_GET] = {"intake referral read", "SELECT " INTAKE_REF_COLS " FROM intake_referrals WHERE id = ?"},
    [Q_INTAKE_REF_BY_TASK] = {"intake referral read",
                              "SELECT " INTAKE_REF_COLS " FROM intake_referrals WHERE task_id = ?"},
    [Q_INTAKE_REF_LIST] = {"intake inbox",
                           "SELECT " INTAKE_REF_COLS " FROM intake_referrals WHERE (?1 = 0 OR task_status NOT IN "
                           "('rejected','cancelled','completed','failed','entered-in-error')) "
                           "ORDER BY urank, received_ms, id LIMIT ?2"},
    [Q_INTAKE_REF_UPDATE] = {"intake referral update",
                             "UPDATE intake_referrals SET task_status = ?2, business_status = ?3, "
                             "reason = coalesce(?4, reason), consult = coalesce(?5, consult), updated_ms = ?6 "
                             "WHERE id = ?1"},
    [Q_INTAKE_REF_COUNT] = {"intake referral count",
                            "SELECT count(*) FROM intake_referrals WHERE ?1 IS NULL OR task_status = ?1"},
    [Q_INTAKE_REF_STATES] = {"intake referral states",
                             "SELECT task_status, count(*), min(received_ms) FROM intake_referrals "
                             "GROUP BY task_status ORDER BY task_status"},
    [Q_INTAKE_AUDIT] = {"audit insert",
                        "INSERT INTO audit(ts_ms, actor, action, intake_id, from_state, to_state, detail, user_id, "
                        "role, source, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)"},
    [Q_INTAKE_AUDIT_LIST] = {"audit read", "SELECT " AUDIT_COLS " FROM audit WHERE intake_id = ?1 ORDER BY id"},
    [Q_INTAKE_TOKEN_PRUNE] = {"intake token prune", "DELETE FROM intake_tokens WHERE exp_ms < ?1"},
    [Q_INTAKE_TOKEN_PUT] = {"intake token add",
                            "INSERT INTO intake_tokens(hash, client_id, exp_ms) VALUES (?,?,?)"},
    [Q_INTAKE_TOKEN_GET] = {"intake token read",
                            "SELECT client_id FROM intake_tokens WHERE hash = ?1 AND exp_ms > ?2"},
    [Q_AUDIT_ACTOR] = {"audit insert",
                       "INSERT INTO audit(ts_ms, actor, action, referral_id, from_state, to_state, "
                       "detail, user_id, role, source, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)"},
    [Q_AUDIT_LIST] = {"audit read",
                      "SELECT " AUDIT_COLS " FROM audit WHERE id > ?2 AND (?1 < 0 OR "
                      "(?1 = 0 AND referral_id IS NULL) OR referral_id = ?1) ORDER BY id LIMIT ?3"},
    [Q_USER_ADD] = {"user add",
                    "INSERT INTO users(name, display_name, role, kind, pw_hash, oidc_subject, "
                    "disabled, created_ms, updated_ms, last_login_ms) VALUES (?,?,?,?,?,?,?,?,?,0)"},
    [Q_USER_BY_NAME] = {"user read", "SELECT " USER_COLS " FROM users WHERE name = ?"},
    [Q_USER_BY_ID] = {"user read", "SELECT " USER_COLS " FROM users WHERE id = ?"},
    [Q_USER_BY_SUBJECT] = {"user read", "SELECT " USER_COLS " FROM users WHERE oidc_subject = ?"},
    [Q_USER_SET_PW] = {"user update", "UPDATE users SET pw_hash = ?, updated_ms = ? WHERE id = ?"},
    [Q_USER_SET_ROLE] = {"user update", "UPDATE users SET role = ?, updated_ms = ? WHERE id = ?"},
    [Q_USER_SET_SUBJECT] = {"user update",
                            "UPDATE users SET oidc_subject = ?, updated_ms = ? WHERE id = ?"},
    [Q_USER_SET_DISPLAY] = {"user update",
                            "UPDATE users SET display_name = ?, updated_ms = ? WHERE id = ?"},
    [Q_USER_SET_DISABLED] = {"user update",
                             "UPDATE users SET disabled = ?, updated_ms = ? WHERE id = ?"},
    [Q_USER_TOUCH] = {"user update", "UPDATE users SET last_login_ms = ? WHERE id = ?"},
    [Q_USER_EACH] = {"user list", "SELECT " USER_COLS " FROM users ORDER BY name"},
    [Q_SESSION_PUT] = {"session add",
                       "INSERT INTO sessions(id_hash, user_id, source, created_ms, last_seen_ms, "
                       "expires_ms) VALUES (?,?,?,?,?,?)"},
    [Q_SESSION_GET] = {"session read",
                       "SELECT user_id, source, created_ms, last_seen_ms, expires_ms FROM sessions "
                       "WHERE id_hash = ?"},
    [Q_SESSION_TOUCH] = {"session touch", "UPDATE sessions SET last_seen_ms = ? WHERE id_hash = ?"},
    [Q_SESSION_DELETE] = {"session delete", "DELETE FROM sessions WHERE id_hash = ?"},
    [Q_SESSION_DELETE_USER] = {"session delete", "DELETE FROM sessions WHERE user_id = ?"},
    [Q_SESSION_PRUNE] = {"session prune",
                         "DELETE FROM sessions WHERE expires_ms <= ?1 OR last_seen_ms + ?2 <= ?1"},
    [Q_SESSION_COUNT] = {"session count",
                         "SELECT count(*) FROM sessions WHERE ?1 <= 0 OR user_id = ?1"},
    [Q_TOKEN_PUT] = {"token add",
                     "INSERT INTO api_tokens(user_id, label, hash, role, created_ms, expires_ms, "
                     "last_used_ms, revoked_ms) VALUES (?,?,?,?,?,?,0,0)"},
    [Q_TOKEN_GET] = {"token read", "SELECT " TOKEN_COLS " FROM api_tokens WHERE hash = ?"},
    [Q_TOKEN_TOUCH] = {"token touch", "UPDATE api_tokens SET last_used_ms = ? WHERE id = ?"},
    [Q_TOKEN_REVOKE] = {"token revoke",
                        "UPDATE api_tokens SET revoked_ms = ? WHERE id = ? AND user_id = ? "
                        "AND revoked_ms = 0"},
    [Q_TOKEN_REVOKE_USER] = {"token revoke",
                             "UPDATE api_tokens SET revoked_ms = ? WHERE user_id = ? AND "
                             "revoked_ms = 0"},
    [Q_TOKEN_EACH] = {"token list",
                      "SELECT " TOKEN_COLS " FROM api_tokens WHERE ?1 <= 0 OR user_id = ?1 "
                      "ORDER BY id"},
    [Q_LOGIN_GET] = {"sign-in failures read",
                     "SELECT failures, locked_until_ms FROM login_failures WHERE name = ?"},
    [Q_LOGIN_PRUNE] = {"sign-in failures prune",
                       "DELETE FROM login_failures WHERE last_ms < ? AND locked_until_ms < ?"},
    [Q_LOGIN_PUT] = {"sign-in failure write",
                     "INSERT INTO login_failures(name, failures, last_ms, locked_until_ms) "
                     "VALUES (?,?,?,?) ON CONFLICT(name) DO UPDATE SET failures = "
                     "excluded.failures, last_ms = excluded.last_ms, locked_until_ms = "
                     "excluded.locked_until_ms"},
    [Q_LOGIN_CLEAR] = {"sign-in failures clear", "DELETE FROM login_failures WHERE name = ?"},
    [Q_CDS_JTI_PRUNE] = {"cds jti prune", "DELETE FROM cds_jti WHERE exp_ms < ?"},
    [Q_CDS_JTI_ADD] = {"cds jti add", "INSERT OR IGNORE INTO cds_jti(iss, jti, exp_ms) VALUES (?, ?, ?)"},
    [Q_CDS_CARD_PUT] = {"cds card put",
                        "INSERT INTO cds_cards(uuid, patient_id, service, category, first_ms, last_ms) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(uuid) DO UPDATE SET last_ms = ?5"},
    [Q_CDS_CARD_GET] = {"cds card get", "SELECT patient_id, category FROM cds_cards WHERE uuid = ?"},
    [Q_CDS_FEEDBACK_ADD] = {"cds feedback add",
                            "INSERT INTO cds_feedback(service, card, patient_id, outcome, override_reason, "
                            "accepted_suggestions, outcome_ts, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"},
    [Q_CDS_FEEDBACK_COUNT] = {"cds feedback count",
                              "SELECT service, outcome, count(*) FROM cds_feedback GROUP BY service, outcome "
                              "ORDER BY service, outcome"},
    /* the worklist (migration 11): the worklist_order index gives the order; the latest
     * referral by the patient index; declines by their primary key */
    [Q_WL_PAGE] = {"worklist read", "SELECT " WL_COLS " FROM " WL_FROM " WHERE " WL_WHERE
                                    " ORDER BY w.urank, w.relapse_sort, w.patient_id LIMIT ?5 OFFSET ?6"},
    [Q_WL_COUNT] = {"worklist count", "SELECT count(*) FROM " WL_FROM " WHERE " WL_WHERE},
    [Q_WL_GET] = {"worklist read", "SELECT " WL_COLS " FROM " WL_FROM " WHERE w.patient_id = ?1"},
    [Q_WL_COUNTS] = {"worklist count",
                     "SELECT coalesce(sum(w.urank = 0), 0), coalesce(sum(w.category = 'possibly_eligible'), 0), "
                     "coalesce(sum(w.category NOT IN ('eligible','possibly_eligible')), 0), "
                     "(SELECT count(*) FROM referrals WHERE state = 'sent') FROM worklist w "
                     "WHERE w.on_list = 1 AND " WL_NOT_DECLINED},
    [Q_WL_DISEASES] = {"worklist read", "SELECT DISTINCT disease FROM worklist WHERE on_list = 1 AND "
                                        "disease IS NOT NULL ORDER BY disease"},
    [Q_WL_DECLINE] = {"worklist decline",
                      "INSERT OR REPLACE INTO worklist_declines(patient_id, vkey, reason_code, reason, "
                      "actor, user_id, ts_ms) SELECT patient_id, vkey, ?2, ?3, ?4, ?5, ?6 FROM worklist "
                      "WHERE patient_id = ?1"},
    /* a decline bound to this verdict: the vkey of WORKLIST_COLS made from a verdict line */
    [Q_WL_DECLINED_FOR] = {"worklist decline",
                           "SELECT count(*) FROM worklist_declines WHERE patient_id = ?1 AND vkey = "
                           WORKLIST_VKEY("?2", "?3")},
    [Q_WL_VISIT_GET] = {"worklist visit", "SELECT seen_ms, prev_ms FROM worklist_visits WHERE user_id = ?"},
    [Q_WL_VISIT_PUT] = {"worklist visit",
                        "INSERT OR REPLACE INTO worklist_visits(user_id, seen_ms, prev_ms) VALUES (?,?,?)"},
    [Q_PROGRAM_FUNNEL] = {"program funnel",
                          "SELECT strftime('%Y-%m', updated_ms / 1000, 'unixepoch'), 'screened', count(*) "
                          "FROM verdicts GROUP BY 1 UNION ALL "
                          "SELECT strftime('%Y-%m', updated_ms / 1000, 'unixepoch'), 'candidate', count(*) "
                          "FROM worklist WHERE on_list = 1 GROUP BY 1 UNION ALL "
                          "SELECT strftime('%Y-%m', created_ms / 1000, 'unixepoch'), 'proposed', count(*) "
                          "FROM referrals GROUP BY 1 UNION ALL "
                          "SELECT strftime('%Y-%m', t / 1000, 'unixepoch'), to_state, count(*) FROM "
                          "(SELECT referral_id, to_state, min(ts_ms) AS t FROM audit WHERE referral_id IS NOT "
                          "NULL AND to_state IN ('approved','sent','accepted','scheduled','completed',"
                          "'declined','cancelled','failed') GROUP BY referral_id, to_state) GROUP BY 1, 2"},
    [Q_PROGRAM_REFERRALS] = {"program referrals",
                             "SELECT r.id, r.center_id, r.state, r.created_ms, (SELECT min(a.ts_ms) FROM audit a "
                             "WHERE a.referral_id = r.id AND a.to_state = 'sent'), w.relapse_day FROM referrals r "
                             "LEFT JOIN worklist w ON w.patient_id = r.patient_id ORDER BY r.id"},
    /* CDS Hooks in the chart: distinct cards shown (one per patient and verdict), then the
     * feedback by outcome and override reason */
    [Q_PROGRAM_CDS] = {"program cds",
                       "SELECT service, 'cards', '', count(*) FROM cds_cards GROUP BY service UNION ALL "
                       "SELECT service, outcome, coalesce(override_reason, ''), count(*) FROM cds_feedback "
                       "GROUP BY service, outcome, 3 ORDER BY 1, 2, 3"},
    [Q_PROGRAM_DECLINES] = {"program declines",
                            "SELECT reason_code, count(*) FROM worklist_declines GROUP BY 1 ORDER BY 2 DESC, 1"},
};

/* store_referral_each: one statement per combination of filters (state, center, patient,
 * summary), built on first use. */
#define Q_EACH_VARIANTS 16
#define Q_SLOTS (Q_FIXED + Q_EACH_VARIANTS)

#define STORE_DIRTY_MEMO 128 /* bytes of the last patient id marked (longer ids: not kept) */

/* The (source, patient) pairs store_held_mark knows to be rows of held on this handle: marked
 * by it, committed or in the open transaction. held rows are deleted by store_held_release
 * alone (Q_HELD_CLEAR), which forgets them all, as every rollback does (a rolled-back mark is
 * no row). Pairs are "source\0patient\0" in bytes, found through an open-addressing table of
 * their offsets + 1, at most half used; both double as a poll names more patients, up to
 * STORE_HELD_MEMO_MAX bytes and STORE_HELD_MEMO_PAIRS pairs; full: forgotten. */
#define HELD_MEMO_SLOTS_MIN 4096u /* a power of two, as every size the table doubles to */
typedef struct held_memo {
    char *bytes;
    size_t used, cap;
    uint32_t *slot;
    size_t n, slots;
} held_memo;

struct store {
    sqlite3 *db;
    char *path;
    bool in_tx, in_sp;
    /* the open ingest group (store_group_begin): its owner (NULL: none), whether the owner is
     * between store_group_begin and store_group_end, and what to tell it when the group is lost */
    void *group_owner;
    bool group_inside;
    store_group_lost_fn group_lost;
    /* the patient store_dirty_mark marked last in the open transaction: resources arrive
     * grouped by patient, so most marks repeat it */
    char last_dirty[STORE_DIRTY_MEMO];
    held_memo held; /* the (source, patient) pairs known to be in held (store_held_mark) */
    sqlite3_stmt *cache[Q_SLOTS];
    bool busy[Q_SLOTS]; /* handed out and not yet given back */
};

/* A statement handed out for one call: the cached one, or (when that one is still in use by
 * an enclosing iteration) one prepared for this call only (slot -1). */
typedef struct q {
    sqlite3_stmt *st;
    int slot;
} q;

static int sql_fail(store *s, fhir_error *err, const char *what)
{
    return fhir_error_set(err, "%s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

static void group_yield(store *s);

static int q_take_sql(store *s, int slot, const char *sql, const char *what, q *out,
                      fhir_error *err)
{
    group_yield(s);
    if (!s->busy[slot]) {
        if (!s->cache[slot] && sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
                                                  &s->cache[slot], NULL) != SQLITE_OK)
            return sql_fail(s, err, what);
        s->busy[slot] = true;
        out->st = s->cache[slot];
        out->slot = slot;
        return 0;
    }
    out->slot = -1;
    if (sqlite3_prepare_v2(s->db, sql, -1, &out->st, NULL) != SQLITE_OK)
        return sql_fail(s, err, what);
    return 0;
}

static int q_take(store *s, int id, q *out, fhir_error *err)
{
    return q_take_sql(s, id, fixed[id].sql, fixed[id].what, out, err);
}

static void q_give(store *s, q *x)
{
    if (!x->st)
        return;
    if (x->slot < 0) {
        sqlite3_finalize(x->st);
    } else {
        sqlite3_reset(x->st);
        sqlite3_clear_bindings(x->st);
        s->busy[x->slot] = false;
    }
    x->st = NULL;
}

/* Steps a statement that returns no rows, then gives it back. */
static int q_run(store *s, q *x, const char *what, fhir_error *err)
{
    int rc = sqlite3_step(x->st);
    int ret = rc == SQLITE_DONE ? 0 : sql_fail(s, err, what);
    q_give(s, x);
    return ret;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

/* Binds text that outlives the statement's step (no copy): the caller's argument of a call that
 * steps and gives the statement back (q_run, q_rows) before it returns. */
static void bind_static(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

/* A copy of v (NULL stays NULL); caller frees. */
static char *xdup(const char *v)
{
    if (!v)
        return NULL;
    char *r = fhir_xstrdup(v);
    return r;
}

static char *dup_col(sqlite3_stmt *st, int i)
{
    return xdup(col_text(st, i));
}

static int exec(store *s, const char *sql, fhir_error *err)
{
    group_yield(s);
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fhir_error_set(err, "%s: %s", s->path, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* ---- open, migrate, close ------------------------------------------------------------------ */

static int pragma_int(store *s, const char *sql)
{
    sqlite3_stmt *st;
    int v = -1;
    group_yield(s);
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

int store_schema_version(store *s)
{
    return pragma_int(s, "PRAGMA user_version");
}

int store_synchronous(store *s)
{
    return pragma_int(s, "PRAGMA synchronous");
}

const char *store_sqlite_version(void)
{
    return sqlite3_libversion();
}

/* A new, empty database is created from the snapshot of the schema the steps make (one
 * statement per object, in the order SQLite holds them), instead of replaying every step: a
 * step that alters a table makes SQLite parse the whole schema again (15 ALTERs: ~30 M
 * instructions, the largest part of a new daemon's start). store_snapshot.inc is generated
 * from the steps (test_store.c writes it with CARTGATE_WRITE_SNAPSHOT=FILE and fails while it
 * differs from what the steps make); a snapshot of another version is not used. */
#include "store_snapshot.inc"

static bool snapshot_usable(store *s)
{
    return STORE_SNAPSHOT_VERSION == N_MIGRATIONS &&
           pragma_int(s, "SELECT count(*) FROM sqlite_master") == 0;
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
    while (v < N_MIGRATIONS) {
        if (store_begin(s, err))
            return -1;
        /* read again under the write lock: another process opening the same new database
         * may have migrated it since (each step is decided inside its own transaction) */
        int now = store_schema_version(s);
        if (now < 0) {
            store_rollback(s);
            return sql_fail(s, err, "reading schema version");
        }
        if (now != v) {
            if (store_commit(s, err))
                return -1;
            v = now;
            continue;
        }
        /* every pending step in this one transaction: a new file is made at the current
         * schema with one commit (one WAL sync instead of one per step), and an upgrade is
         * all or nothing */
        if (v == 0 && snapshot_usable(s)) {
            if (exec(s, store_snapshot_sql, err)) {
                fhir_error_prefix(err, "creating the schema (version %d)", N_MIGRATIONS);
                store_rollback(s);
                return -1;
            }
            v = N_MIGRATIONS;
        }
        for (; v < N_MIGRATIONS; v++)
            if (exec(s, migrations[v].sql, err)) {
                fhir_error_prefix(err, "migration %d -> %d (%s)", v, v + 1, migrations[v].what);
                store_rollback(s);
                return -1;
            }
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", N_MIGRATIONS);
        if (exec(s, pragma, err)) {
            store_rollback(s);
            return -1;
        }
        if (store_commit(s, err))
            return -1;
    }
    return 0;
}

/* A new database file is created 0600 before SQLite opens it (it holds demographics); SQLite
 * gives its -wal and -shm files the database file's mode. An existing file keeps its mode. */
static int create_private(const char *path, fhir_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    if (errno == EEXIST)
        return 0;
    return fhir_error_set(err, "%s: cannot create database: %s", path, strerror(errno));
}

store *store_open(const char *path, int busy_timeout_ms, fhir_error *err)
{
    store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path)))
        abort();
    if (strcmp(path, ":memory:") != 0 && create_private(path, err)) {
        store_close(s);
        return NULL;
    }
    /* SQLite's memory statistics take a global mutex on every allocation and nothing reads
     * them; the setting is accepted only before SQLite initialises, which the first open does
     * (on the main thread, before any worker opens its own handle), later calls are ignored */
    static bool configured;
    if (!configured) {
        configured = true;
        sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    }
    /* a handle is used by one thread at a time (the event loop's; a worker opens its own), so
     * it needs no mutex of its own */
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                          SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        fhir_error_set(err, "%s: cannot open database: %s", path,
                       s->db ? sqlite3_errmsg(s->db) : "out of memory");
        store_close(s);
        return NULL;
    }
    sqlite3_busy_timeout(s->db, busy_timeout_ms > 0 ? busy_timeout_ms : 5000);
    sqlite3_extended_result_codes(s->db, 1);
    /* journal_mode returns a row; check it really switched to WAL. Switching a new database
     * needs its exclusive lock, for which SQLite does not wait (the busy handler is not
     * called): another process opening the same new file at the same moment makes it answer
     * "database is locked", so the switch is tried again, for at most the busy timeout. */
    /* a new database gets larger pages (it takes effect only before its first table and WAL
     * switch; an existing one keeps its size): referral rows of ~100 KB are written as a few
     * pages instead of ~25, each one write into the WAL and one at the checkpoint */
    sqlite3_exec(s->db, "PRAGMA page_size=" STORE_PAGE_SIZE_STR, NULL, NULL, NULL);
    bool wal = false;
    int64_t give_up = fhir_clock_mono_ms() + (busy_timeout_ms > 0 ? busy_timeout_ms : 5000);
    for (;;) {
        sqlite3_stmt *st;
        int rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(st);
            if (rc == SQLITE_ROW) {
                const char *m = col_text(st, 0);
                wal = m && !strcmp(m, "wal");
            }
            sqlite3_finalize(st);
        }
        if (wal || ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) ||
            fhir_clock_mono_ms() >= give_up)
            break;
        sqlite3_sleep(10);
    }
    if (!wal) {
        fhir_error_set(err, "%s: cannot switch to WAL journal mode: %s", path,
                       sqlite3_errmsg(s->db));
        store_close(s);
        return NULL;
    }
    char cache[64];
    snprintf(cache, sizeof cache, "PRAGMA cache_size=-%u;", STORE_CACHE_KIB);
    if (exec(s, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;", err) || exec(s, cache, err) ||
        migrate(s, err)) {
        store_close(s);
        return NULL;
    }
    return s;
}

store *store_open_existing(const char *path, int busy_timeout_ms, fhir_error *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fhir_error_set(err, "%s: no such database (the daemon creates it on its first start; "
                            "check the path)", path);
        return NULL;
    }
    return store_open(path, busy_timeout_ms, err);
}

void store_close(store *s)
{
    if (!s)
        return;
    for (int i = 0; i < Q_SLOTS; i++)
        sqlite3_finalize(s->cache[i]);
    free(s->held.bytes);
    free(s->held.slot);
    if (s->db)
        sqlite3_close_v2(s->db);
    free(s->path);
    free(s);
}

const char *store_path(const store *s)
{
    return s->path;
}

/* ---- transactions --------------------------------------------------------------------------- */

static void held_forget(store *s)
{
    if (s->held.slot) /* the sizes reached are kept for the next poll */
        memset(s->held.slot, 0, s->held.slots * sizeof *s->held.slot);
    s->held.used = s->held.n = 0;
}

int store_begin(store *s, fhir_error *err)
{
    group_yield(s);
    if (s->in_tx)
        return fhir_error_set(err, "%s: transaction already open (nested begin)", s->path);
    if (exec(s, "BEGIN IMMEDIATE", err))
        return -1;
    s->in_tx = true;
    s->last_dirty[0] = '\0';
    return 0;
}

/* The open transaction is undone (ROLLBACK); the group, the memos of it forgotten. */
static void tx_rollback(store *s)
{
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->in_tx = false;
    s->in_sp = false;
    s->group_owner = NULL;
    s->group_inside = false;
    s->group_lost = NULL;
    s->last_dirty[0] = '\0';
    held_forget(s);
}

/* COMMIT of the open transaction (the group's too): 0, or -1 with err (rolled back). */
static int tx_commit(store *s, fhir_error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
        fhir_error_set(err, "%s: %s", s->path, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        tx_rollback(s);
        return -1;
    }
    s->in_tx = false;
    s->group_owner = NULL;
    s->group_inside = false;
    s->group_lost = NULL;
    return 0;
}

/* Any use of the handle but the group owner's own unit of work: the open group commits first
 * (a failed commit rolls it back and tells its owner), so that the caller neither joins it nor
 * rolls it back. */
static void group_yield(store *s)
{
    if (!s->group_owner || s->group_inside)
        return;
    void *owner = s->group_owner;
    store_group_lost_fn lost = s->group_lost;
    fhir_error err;
    fhir_error_clear(&err);
    if (tx_commit(s, &err) && lost)
        lost(owner, err.msg);
}

/* Whether a transaction is open for the caller (an open group commits first). */
static bool tx_open(store *s)
{
    group_yield(s);
    return s->in_tx;
}

int store_commit(store *s, fhir_error *err)
{
    group_yield(s);
    if (!s->in_tx)
        return fhir_error_set(err, "%s: commit without a transaction", s->path);
    if (s->in_sp)
        return fhir_error_set(err, "%s: commit with a savepoint still open", s->path);
    return tx_commit(s, err);
}

void store_rollback(store *s)
{
    group_yield(s);
    if (!s->in_tx)
        return;
    tx_rollback(s);
}

bool store_in_transaction(store *s)
{
    return tx_open(s);
}

int store_group_begin(store *s, void *owner, store_group_lost_fn lost, fhir_error *err)
{
    if (s->group_owner == owner && owner) {
        s->group_inside = true;
        return 0;
    }
    group_yield(s); /* another owner's group */
    if (!owner)
        return fhir_error_set(err, "%s: a group needs an owner", s->path);
    if (store_begin(s, err))
        return -1;
    s->group_owner = owner;
    s->group_lost = lost;
    s->group_inside = true;
    return 1;
}

int store_group_end(store *s, bool flush, fhir_error *err)
{
    if (!s->group_owner || !s->group_inside)
        return fhir_error_set(err, "%s: group end outside a group's unit", s->path);
    s->group_inside = false;
    return flush ? tx_commit(s, err) : 0;
}

int store_group_flush(store *s, const void *owner, fhir_error *err)
{
    if (!owner || s->group_owner != owner || s->group_inside)
        return 0;
    return tx_commit(s, err) ? -1 : 1;
}

int store_savepoint(store *s, fhir_error *err)
{
    if (!tx_open(s) || s->in_sp)
        return fhir_error_set(err, "%s: a savepoint needs an open transaction and no other "
                                   "savepoint", s->path);
    q x;
    if (q_take(s, Q_SAVEPOINT, &x, err) || q_run(s, &x, "savepoint", err))
        return -1;
    s->in_sp = true;
    return 0;
}

int store_savepoint_release(store *s, fhir_error *err)
{
    if (!s->in_sp)
        return fhir_error_set(err, "%s: release without a savepoint", s->path);
    s->in_sp = false;
    q x;
    if (q_take(s, Q_SAVEPOINT_RELEASE, &x, err))
        return -1;
    return q_run(s, &x, "savepoint release", err);
}

void store_savepoint_rollback(store *s)
{
    if (!s->in_sp)
        return;
    sqlite3_exec(s->db, "ROLLBACK TO unit; RELEASE unit", NULL, NULL, NULL);
    s->in_sp = false;
    s->last_dirty[0] = '\0';
    held_forget(s);
}

/* ---- audit ---------------------------------------------------------------------------------- */

int store_audit(store *s, const char *actor, const char *action, int64_t referral_id,
                const char *from_state, const char *to_state, const char *detail,
                fhir_error *err)
{
    q x;
    if (q_take(s, Q_AUDIT_INSERT, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, fhir_clock_now_ms());
    bind_text(x.st, 2, actor ? actor : "system");
    bind_text(x.st, 3, action);
    if (referral_id > 0)
        sqlite3_bind_int64(x.st, 4, referral_id);
    else
        sqlite3_bind_null(x.st, 4);
    bind_text(x.st, 5, from_state);
    bind_text(x.st, 6, to_state);
    bind_text(x.st, 7, detail);
    return q_run(s, &x, "audit insert", err);
}

/* Steps a row-returning statement, calling row(st) for each until it returns non-zero, then
 * gives the statement back. Returns rows visited or -1. */
static int64_t q_rows(store *s, q *x, const char *what, int (*row)(void *, sqlite3_stmt *),
                      void *ctx, fhir_error *err)
{
    int64_t n = 0;
    int rc;
    while ((rc = sqlite3_step(x->st)) == SQLITE_ROW) {
        n++;
        if (row && row(ctx, x->st)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    if (rc != SQLITE_DONE)
        n = sql_fail(s, err, what);
    q_give(s, x);
    return n;
}

typedef struct audit_each_ctx {
    store_audit_fn fn;
    void *ctx;
} audit_each_ctx;

static int audit_each_row(void *ctx, sqlite3_stmt *st)
{
    audit_each_ctx *c = ctx;
    return c->fn ? c->fn(c->ctx, sqlite3_column_int64(st, 0), col_text(st, 1), col_text(st, 2),
                         col_text(st, 3), col_text(st, 4), col_text(st, 5))
                 : 0;
}

int64_t store_audit_each(store *s, int64_t referral_id, store_audit_fn fn, void *ctx,
                         fhir_error *err)
{
    q x;
    if (q_take(s, referral_id > 0 ? Q_AUDIT_EACH_REF : Q_AUDIT_EACH, &x, err))
        return -1;
    if (referral_id > 0)
        sqlite3_bind_int64(x.st, 1, referral_id);
    audit_each_ctx c = {fn, ctx};
    return q_rows(s, &x, "audit read", audit_each_row, &c, err);
}

/* A single-value query's integer: absent when there is no row or it is NULL; -1 on error. */
static int64_t q_int(store *s, q *x, int64_t absent)
{
    int64_t v = -1;
    int rc = sqlite3_step(x->st);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_type(x->st, 0) == SQLITE_NULL ? absent : sqlite3_column_int64(x->st, 0);
    else if (rc == SQLITE_DONE)
        v = absent; /* no row */
    q_give(s, x);
    return v;
}

int64_t store_audit_count(store *s, int64_t referral_id)
{
    q x;
    if (q_take(s, referral_id > 0 ? Q_AUDIT_COUNT_REF : Q_AUDIT_COUNT, &x, NULL))
        return -1;
    if (referral_id > 0)
        sqlite3_bind_int64(x.st, 1, referral_id);
    return q_int(s, &x, 0);
}

typedef struct audit_since_ctx {
    store_audit_row_fn fn;
    void *ctx;
} audit_since_ctx;

static int audit_since_row(void *ctx, sqlite3_stmt *st)
{
    audit_since_ctx *c = ctx;
    store_audit_row r = {
        .id = sqlite3_column_int64(st, 0), .ts_ms = sqlite3_column_int64(st, 1),
        .referral_id = sqlite3_column_int64(st, 2), .actor = col_text(st, 3),
        .action = col_text(st, 4), .from_state = col_text(st, 5), .to_state = col_text(st, 6),
        .detail = col_text(st, 7), .user_id = sqlite3_column_int64(st, 8),
        .role = col_text(st, 9), .source = col_text(st, 10), .reason = col_text(st, 11),
    };
    return c->fn ? c->fn(c->ctx, &r) : 0;
}

int64_t store_audit_since(store *s, int64_t after_id, store_audit_row_fn fn, void *ctx,
                          fhir_error *err)
{
    q x;
    if (q_take(s, Q_AUDIT_SINCE, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, after_id);
    audit_since_ctx c = {fn, ctx};
    return q_rows(s, &x, "audit read", audit_since_row, &c, err);
}

int store_audit_actor(store *s, const store_actor *who, const char *action, int64_t referral_id,
                      const char *from_state, const char *to_state, const char *detail,
                      fhir_error *err)
{
    q x;
    if (q_take(s, Q_AUDIT_ACTOR, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, fhir_clock_now_ms());
    bind_text(x.st, 2, who && who->name ? who->name : "system");
    bind_text(x.st, 3, action);
    if (referral_id > 0)
        sqlite3_bind_int64(x.st, 4, referral_id);
    else
        sqlite3_bind_null(x.st, 4);
    bind_text(x.st, 5, from_state);
    bind_text(x.st, 6, to_state);
    bind_text(x.st, 7, detail);
    if (who && who->user_id > 0)
        sqlite3_bind_int64(x.st, 8, who->user_id);
    else
        sqlite3_bind_null(x.st, 8);
    bind_text(x.st, 9, who ? who->role : NULL);
    bind_text(x.st, 10, who ? who->source : NULL);
    bind_text(x.st, 11, who ? who->reason : NULL);
    return q_run(s, &x, "audit insert", err);
}

int64_t store_audit_list(store *s, int64_t referral_id, int64_t after_id, int64_t limit,
                         store_audit_row_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_AUDIT_LIST, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, referral_id);
    sqlite3_bind_int64(x.st, 2, after_id);
    sqlite3_bind_int64(x.st, 3, limit > 0 ? limit : -1);
    audit_since_ctx c = {fn, ctx};
    return q_rows(s, &x, "audit read", audit_since_row, &c, err);
}

/* ---- cursors ---------------------------------------------------------------------------------- */

int store_cursor_get(store *s, const char *source, const char *key, char **value_out,
                     fhir_error *err)
{
    *value_out = NULL;
    q x;
    if (q_take(s, Q_CURSOR_GET, &x, err))
        return -1;
    bind_text(x.st, 1, source);
    bind_text(x.st, 2, key);
    int rc = sqlite3_step(x.st);
    if (rc == SQLITE_ROW)
        *value_out = dup_col(x.st, 0);
    int ret = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_fail(s, err, "cursor read");
    q_give(s, &x);
    return ret;
}

int store_cursor_put(store *s, const char *source, const char *key, const char *value,
                     fhir_error *err)
{
    q x;
    if (q_take(s, Q_CURSOR_PUT, &x, err))
        return -1;
    bind_text(x.st, 1, source);
    bind_text(x.st, 2, key);
    bind_text(x.st, 3, value);
    sqlite3_bind_int64(x.st, 4, fhir_clock_now_ms());
    return q_run(s, &x, "cursor write", err);
}

/* ---- resources -------------------------------------------------------------------------------- */

static int resource_write(store *s, int which, const char *patient_id, const char *type,
                          const char *id, const void *data, size_t len, bool *changed,
                          fhir_error *err)
{
    if (!data || len > INT_MAX)
        return fhir_error_set(err, "%s/%s: no resource bytes, or more than the store takes", type, id);
    q x;
    if (q_take(s, which, &x, err))
        return -1;
    /* every value outlives the step (q_run steps and resets before returning): no copies */
    bind_static(x.st, 1, type);
    bind_static(x.st, 2, id);
    bind_static(x.st, 3, patient_id);
    if (fhir_bin_is(data, len)) /* NOT NULL; the binary form as a BLOB, JSON as text */
        sqlite3_bind_blob(x.st, 4, data, (int)len, SQLITE_STATIC);
    else
        sqlite3_bind_text(x.st, 4, data, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(x.st, 5, fhir_clock_now_ms());
    if (q_run(s, &x, "resource write", err))
        return -1;
    if (changed)
        *changed = sqlite3_changes(s->db) > 0;
    return 0;
}

int store_resource_put(store *s, const char *patient_id, const char *type, const char *id,
                       const void *data, size_t len, fhir_error *err)
{
    return resource_write(s, Q_RES_PUT, patient_id, type, id, data, len, NULL, err);
}

int store_resource_upsert(store *s, const char *patient_id, const char *type, const char *id,
                          const void *data, size_t len, bool *changed, fhir_error *err)
{
    return resource_write(s, Q_RES_UPSERT, patient_id, type, id, data, len, changed, err);
}

typedef struct res_ctx {
    store_resource_fn fn;
    store_resource_bytes_fn bytes_fn;
    void *ctx;
} res_ctx;

/* A BLOB is the binary form; text (older rows, JSON writers) comes NUL-terminated. */
static const void *res_bytes(sqlite3_stmt *st, int col, size_t *len)
{
    const void *data = sqlite3_column_type(st, col) == SQLITE_BLOB ? sqlite3_column_blob(st, col)
                                                                   : (const void *)col_text(st, col);
    *len = data ? (size_t)sqlite3_column_bytes(st, col) : 0;
    return data ? data : "";
}

static int res_row(void *ctx, sqlite3_stmt *st)
{
    res_ctx *c = ctx;
    if (!c->fn)
        return 0;
    size_t len;
    const void *data = res_bytes(st, 2, &len);
    return c->fn(c->ctx, col_text(st, 0), col_text(st, 1), data, len);
}

/* Q_RES_EACH's row: the bytes alone (the type and id columns are not read) */
static int res_bytes_row(void *ctx, sqlite3_stmt *st)
{
    res_ctx *c = ctx;
    if (!c->bytes_fn)
        return 0;
    size_t len;
    const void *data = res_bytes(st, 0, &len);
    return c->bytes_fn(c->ctx, data, len);
}

int64_t store_resource_each(store *s, const char *patient_id, store_resource_bytes_fn fn, void *ctx,
                            fhir_error *err)
{
    q x;
    if (q_take(s, Q_RES_EACH, &x, err))
        return -1;
    bind_text(x.st, 1, patient_id);
    res_ctx c = {.bytes_fn = fn, .ctx = ctx};
    return q_rows(s, &x, "resource read", res_bytes_row, &c, err);
}

int64_t store_resource_each_named(store *s, const char *patient_id, store_resource_fn fn, void *ctx,
                                  fhir_error *err)
{
    q x;
    if (q_take(s, Q_RES_EACH_NAMED, &x, err))
        return -1;
    bind_text(x.st, 1, patient_id);
    res_ctx c = {.fn = fn, .ctx = ctx};
    return q_rows(s, &x, "resource read", res_row, &c, err);
}

int store_resource_get(store *s, const char *type, const char *id, store_resource_fn fn,
                       void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_RES_GET, &x, err))
        return -1;
    bind_text(x.st, 1, type);
    bind_text(x.st, 2, id);
    res_ctx c = {.fn = fn, .ctx = ctx};
    int64_t n = q_rows(s, &x, "resource read", res_row, &c, err);
    return n < 0 ? -1 : n > 0;
}

/* The first column's text of the (last) row into buf (n bytes), and whether there was one. */
typedef struct text_out {
    char *buf;
    size_t n;
    bool found;
} text_out;

static int text_out_row(void *ctx, sqlite3_stmt *st)
{
    text_out *o = ctx;
    o->found = true;
    if (o->buf && o->n)
        snprintf(o->buf, o->n, "%s", col_text(st, 0) ? col_text(st, 0) : "");
    return 0;
}

int store_resource_delete(store *s, const char *type, const char *id, char *patient_id_out,
                          size_t n, bool *found, fhir_error *err)
{
    if (patient_id_out && n)
        patient_id_out[0] = '\0';
    q x;
    if (q_take(s, Q_RES_DELETE, &x, err))
        return -1;
    bind_text(x.st, 1, type);
    bind_text(x.st, 2, id);
    text_out o = {patient_id_out, n, false};
    if (q_rows(s, &x, "resource delete", text_out_row, &o, err) < 0)
        return -1;
    if (found)
        *found = o.found;
    return 0;
}

int64_t store_resource_count(store *s, const char *patient_id)
{
    q x;
    if (q_take(s, Q_RES_COUNT, &x, NULL))
        return -1;
    bind_text(x.st, 1, patient_id);
    return q_int(s, &x, 0);
}

static int prune_counts(void *ctx, sqlite3_stmt *st)
{
    store_prune_counts *c = ctx;
    c->patients = sqlite3_column_int64(st, 0);
    c->resources = sqlite3_column_int64(st, 1);
    return 1;
}

int store_retention_prune(store *s, int64_t cutoff_ms, bool apply, store_prune_counts *out,
                          fhir_error *err)
{
    memset(out, 0, sizeof *out);
    bool own = !tx_open(s);
    if (own && store_begin(s, err))
        return -1;
    q x;
    int rc = q_take(s, Q_PRUNE_COUNT, &x, err);
    if (rc == 0) {
        sqlite3_bind_int64(x.st, 1, cutoff_ms);
        rc = q_rows(s, &x, "retention count", prune_counts, out, err) < 0 ? -1 : 0;
    }
    if (rc == 0 && apply && out->resources > 0) {
        /* the verdicts first: the patients are found through their cached resources */
        rc = q_take(s, Q_PRUNE_MARK, &x, err);
        if (rc == 0) {
            sqlite3_bind_int64(x.st, 1, cutoff_ms);
            sqlite3_bind_int64(x.st, 2, fhir_clock_now_ms());
            rc = q_run(s, &x, "retention prune", err);
        }
    }
    if (rc == 0 && apply && out->resources > 0) {
        rc = q_take(s, Q_PRUNE_DELETE, &x, err);
        if (rc == 0) {
            sqlite3_bind_int64(x.st, 1, cutoff_ms);
            rc = q_run(s, &x, "retention prune", err);
        }
    }
    if (own) {
        if (rc == 0)
            rc = store_commit(s, err);
        else
            store_rollback(s);
    }
    return rc;
}

/* ---- patients held by an incomplete poll --------------------------------------------------------- */

static uint32_t held_hash(const char *source, const char *patient_id)
{
    /* over "source\0patient" */
    uint32_t h = fhir_hash32(FHIR_HASH32_INIT, source, strlen(source) + 1);
    return fhir_hash32_str(h, patient_id);
}

/* The slot of the pair: the one holding it (*found), else the empty one where it would go. */
static uint32_t *held_slot(const held_memo *m, const char *source, const char *patient_id,
                           bool *found)
{
    for (uint32_t i = held_hash(source, patient_id);; i++) {
        uint32_t *sl = &m->slot[i & (m->slots - 1)];
        if (!*sl) {
            *found = false;
            return sl;
        }
        const char *src = m->bytes + *sl - 1;
        if (!strcmp(src, source) && !strcmp(src + strlen(src) + 1, patient_id)) {
            *found = true;
            return sl;
        }
    }
}

/* Room for one more pair of need bytes: the bytes or the table doubled (the table's pairs
 * placed again by their hash) while within the caps. false: full at a cap. */
static bool held_room(held_memo *m, size_t need)
{
    if (m->used + need > m->cap) {
        size_t cap = m->cap ? m->cap : 16384u;
        while (cap < m->used + need)
            cap *= 2;
        if (cap > STORE_HELD_MEMO_MAX)
            cap = STORE_HELD_MEMO_MAX;
        if (m->used + need > cap)
            return false;
        m->bytes = fhir_xrealloc(m->bytes, cap);
        m->cap = cap;
    }
    if (m->n + 1 > m->slots / 2) {
        if (m->slots >= 2u * STORE_HELD_MEMO_PAIRS)
            return false;
        held_memo bigger = *m;
        bigger.slots = m->slots ? m->slots * 2 : HELD_MEMO_SLOTS_MIN;
        bigger.slot = fhir_xcalloc(bigger.slots, sizeof *bigger.slot);
        for (size_t i = 0; i < m->slots; i++) {
            if (!m->slot[i])
                continue;
            const char *src = m->bytes + m->slot[i] - 1;
            bool found;
            *held_slot(&bigger, src, src + strlen(src) + 1, &found) = m->slot[i];
        }
        free(m->slot);
        *m = bigger;
    }
    return true;
}

/* Remembers a pair just written to held (a pair that does not fit is not remembered). */
static void held_remember(store *s, const char *source, const char *patient_id)
{
    held_memo *m = &s->held;
    size_t ls = strlen(source) + 1, lp = strlen(patient_id) + 1;
    if (ls + lp > STORE_HELD_MEMO_MAX)
        return;
    if (!held_room(m, ls + lp)) {
        held_forget(s);
        if (!held_room(m, ls + lp))
            return;
    }
    bool found;
    uint32_t *sl = held_slot(m, source, patient_id, &found);
    if (found)
        return;
    memcpy(m->bytes + m->used, source, ls);
    memcpy(m->bytes + m->used + ls, patient_id, lp);
    *sl = (uint32_t)m->used + 1;
    m->used += ls + lp;
    m->n++;
}

int store_held_mark(store *s, const char *source, const char *patient_id, fhir_error *err)
{
    bool found = false;
    if (s->held.slot && patient_id && source)
        held_slot(&s->held, source, patient_id, &found);
    if (found)
        return 0; /* a row of held already */
    q x;
    if (q_take(s, Q_HELD_MARK, &x, err))
        return -1;
    bind_static(x.st, 1, source);
    bind_static(x.st, 2, patient_id);
    sqlite3_bind_int64(x.st, 3, fhir_clock_now_ms());
    if (q_run(s, &x, "held mark", err))
        return -1;
    if (patient_id && source)
        held_remember(s, source, patient_id);
    return 0;
}

int store_held_release(store *s, const char *source, fhir_error *err)
{
    held_forget(s); /* every source's: one clear is simpler than picking */
    q x;
    if (q_take(s, Q_HELD_RELEASE, &x, err))
        return -1;
    bind_text(x.st, 1, source);
    if (q_run(s, &x, "held release", err))
        return -1;
    if (q_take(s, Q_HELD_CLEAR, &x, err))
        return -1;
    bind_text(x.st, 1, source);
    return q_run(s, &x, "held release", err);
}

int64_t store_held_count(store *s, const char *source)
{
    q x;
    if (q_take(s, source ? Q_HELD_COUNT : Q_HELD_COUNT_ALL, &x, NULL))
        return -1;
    if (source)
        bind_text(x.st, 1, source);
    return q_int(s, &x, 0);
}

/* ---- patients to screen ------------------------------------------------------------------------ */

int store_dirty_mark(store *s, const char *patient_id, fhir_error *err)
{
    if (tx_open(s) && patient_id && patient_id[0] && !strcmp(patient_id, s->last_dirty))
        return 0; /* already marked in this transaction */
    q x;
    if (q_take(s, Q_DIRTY_MARK, &x, err))
        return -1;
    bind_text(x.st, 1, patient_id);
    sqlite3_bind_int64(x.st, 2, fhir_clock_now_ms());
    if (q_run(s, &x, "dirty mark", err))
        return -1;
    if (s->in_tx && patient_id && strlen(patient_id) < sizeof s->last_dirty)
        snprintf(s->last_dirty, sizeof s->last_dirty, "%s", patient_id);
    return 0;
}

int store_dirty_mark_ruleset_changed(store *s, const char *ruleset_hash, fhir_error *err)
{
    q x;
    if (q_take(s, Q_DIRTY_RULESET, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, fhir_clock_now_ms());
    bind_text(x.st, 2, ruleset_hash);
    return q_run(s, &x, "dirty mark", err);
}

int store_dirty_mark_all(store *s, int64_t *n_out, fhir_error *err)
{
    q x;
    if (n_out) {
        if (q_take(s, Q_DIRTY_ALL_COUNT, &x, err))
            return -1;
        *n_out = q_int(s, &x, 0);
        if (*n_out < 0)
            return sql_fail(s, err, "dirty count");
    }
    if (q_take(s, Q_DIRTY_ALL, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, fhir_clock_now_ms());
    return q_run(s, &x, "dirty mark", err);
}

typedef struct ids_ctx {
    char **ids;
    size_t n, max;
} ids_ctx;

static int dirty_row(void *ctx, sqlite3_stmt *st)
{
    ids_ctx *c = ctx;
    if (c->n < c->max)
        c->ids[c->n++] = dup_col(st, 0);
    return c->n >= c->max;
}

long store_dirty_next(store *s, char **ids, size_t max, fhir_error *err)
{
    q x;
    if (max == 0)
        return 0;
    if (q_take(s, Q_DIRTY_NEXT, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, (int64_t)max);
    ids_ctx c = {ids, 0, max};
    if (q_rows(s, &x, "dirty read", dirty_row, &c, err) < 0) {
        for (size_t i = 0; i < c.n; i++)
            free(ids[i]);
        return -1;
    }
    return (long)c.n;
}

int store_dirty_clear(store *s, const char *patient_id, fhir_error *err)
{
    if (patient_id && !strcmp(patient_id, s->last_dirty))
        s->last_dirty[0] = '\0';
    q x;
    if (q_take(s, Q_DIRTY_CLEAR, &x, err))
        return -1;
    bind_text(x.st, 1, patient_id);
    return q_run(s, &x, "dirty clear", err);
}

int64_t store_dirty_count(store *s)
{
    q x;
    if (q_take(s, Q_DIRTY_COUNT, &x, NULL))
        return -1;
    return q_int(s, &x, 0);
}

/* ---- verdicts --------------------------------------------------------------------------------- */

/* The worklist row of a verdict just written at now_ms: from wl, or (NULL) from its JSON. */
static int worklist_write(store *s, const char *patient_id, const char *category,
                          const store_worklist_in *wl, int64_t now_ms, fhir_error *err)
{
    q x;
    if (q_take(s, wl ? Q_WL_PUT : Q_WL_PUT_JSON, &x, err))
        return -1;
    bind_static(x.st, 1, patient_id);
    if (wl) {
        bind_static(x.st, 2, category);
        bind_static(x.st, 3, wl->urgency);
        bind_static(x.st, 4, wl->consult);
        bind_static(x.st, 5, wl->disease);
        bind_static(x.st, 6, wl->relapse_day);
        sqlite3_bind_int64(x.st, 7, wl->missing);
        bind_static(x.st, 8, wl->products);
        bind_static(x.st, 9, wl->possible);
        sqlite3_bind_int64(x.st, 10, now_ms);
    }
    return q_run(s, &x, "worklist write", err);
}

/* Before the patient's verdict text becomes verdict_json (NULL: is deleted): the referrals
 * sharing the text now keep their own copy of it (REF_VERDICT). */
static int verdict_unshare(store *s, const char *patient_id, const char *verdict_json,
                           fhir_error *err)
{
    q x;
    if (q_take(s, Q_REF_VERDICT_UNSHARE, &x, err))
        return -1;
    bind_static(x.st, 1, patient_id);
    bind_static(x.st, 2, verdict_json);
    return q_run(s, &x, "referral verdict copy", err);
}

/* heme < 0: the verdict alone (the heme mark stays as it is) */
static int verdict_write(store *s, const char *patient_id, const char *ruleset_hash,
                         const char *category, const char *profile_json, const char *verdict_json,
                         int heme, const store_worklist_in *wl, fhir_error *err)
{
    q x;
    if (verdict_unshare(s, patient_id, verdict_json, err) ||
        q_take(s, heme < 0 ? Q_VERDICT_PUT : Q_VERDICT_PUT_HEME, &x, err))
        return -1;
    int64_t now_ms = fhir_clock_now_ms();
    bind_static(x.st, 1, patient_id);
    bind_static(x.st, 2, ruleset_hash);
    bind_static(x.st, 3, category);
    bind_static(x.st, 4, profile_json);
    bind_static(x.st, 5, verdict_json);
    sqlite3_bind_int64(x.st, 6, now_ms);
    if (heme >= 0)
        sqlite3_bind_int(x.st, 7, heme);
    if (q_run(s, &x, "verdict write", err))
        return -1;
    return worklist_write(s, patient_id, category, wl, now_ms, err);
}

int store_verdict_put(store *s, const char *patient_id, const char *ruleset_hash,
                      const char *category, const char *profile_json, const char *verdict_json,
                      fhir_error *err)
{
    return verdict_write(s, patient_id, ruleset_hash, category, profile_json, verdict_json, -1,
                         NULL, err);
}

int store_verdict_put_screened(store *s, const char *patient_id, const char *ruleset_hash,
                               const char *category, const char *profile_json,
                               const char *verdict_json, bool heme, const store_worklist_in *wl,
                               fhir_error *err)
{
    return verdict_write(s, patient_id, ruleset_hash, category, profile_json, verdict_json,
                         heme ? 1 : 0, wl, err);
}

typedef struct verdict_ctx {
    store_verdict_fn fn;
    void *ctx;
} verdict_ctx;

static int verdict_row(void *ctx, sqlite3_stmt *st)
{
    verdict_ctx *c = ctx;
    store_verdict v = {
        .patient_id = col_text(st, 0), .ruleset_hash = col_text(st, 1),
        .category = col_text(st, 2), .profile_json = col_text(st, 3),
        .verdict_json = col_text(st, 4), .updated_ms = sqlite3_column_int64(st, 5),
    };
    return c->fn ? c->fn(c->ctx, &v) : 0;
}

static int verdict_read(store *s, int which, const char *patient_id, store_verdict_fn fn,
                        void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, which, &x, err))
        return -1;
    bind_text(x.st, 1, patient_id);
    verdict_ctx c = {fn, ctx};
    int64_t n = q_rows(s, &x, "verdict read", verdict_row, &c, err);
    return n < 0 ? -1 : n > 0;
}

int store_verdict_read(store *s, const char *patient_id, store_verdict_fn fn, void *ctx,
                       fhir_error *err)
{
    return verdict_read(s, Q_VERDICT_GET, patient_id, fn, ctx, err);
}

typedef struct verdict_copy {
    char **hash, **category, **verdict_json;
} verdict_copy;

static int verdict_copy_fn(void *ctx, const store_verdict *v)
{
    verdict_copy *c = ctx;
    if (c->hash)
        *c->hash = xdup(v->ruleset_hash);
    if (c->category)
        *c->category = xdup(v->category);
    if (c->verdict_json)
        *c->verdict_json = xdup(v->verdict_json);
    return 1;
}

int store_verdict_get(store *s, const char *patient_id, char **ruleset_hash_out,
                      char **category_out, char **verdict_json_out, fhir_error *err)
{
    verdict_copy c = {ruleset_hash_out, category_out, verdict_json_out};
    return verdict_read(s, verdict_json_out ? Q_VERDICT_GET : Q_VERDICT_HEAD, patient_id,
                        verdict_copy_fn, &c, err);
}

int store_verdict_delete(store *s, const char *patient_id, fhir_error *err)
{
    q x;
    if (verdict_unshare(s, patient_id, NULL, err) || q_take(s, Q_VERDICT_DELETE, &x, err))
        return -1;
    bind_text(x.st, 1, patient_id);
    return q_run(s, &x, "verdict delete", err);
}

int64_t store_verdict_list(store *s, const char *category, int64_t limit, int64_t offset,
                           store_verdict_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, category ? Q_VERDICT_LIST_CAT : Q_VERDICT_LIST, &x, err))
        return -1;
    int k = 1;
    if (category)
        bind_text(x.st, k++, category);
    sqlite3_bind_int64(x.st, k++, limit);
    sqlite3_bind_int64(x.st, k, offset);
    verdict_ctx c = {fn, ctx};
    return q_rows(s, &x, "verdict list", verdict_row, &c, err);
}

int store_verdict_set_heme(store *s, const char *patient_id, bool heme, fhir_error *err)
{
    q x;
    if (q_take(s, Q_VERDICT_HEME, &x, err))
        return -1;
    sqlite3_bind_int(x.st, 1, heme ? 1 : 0);
    bind_text(x.st, 2, patient_id);
    return q_run(s, &x, "verdict write", err);
}

/* ---- notifications ------------------------------------------------------------------------- */

int store_notify_event(store *s, const char *key, const char *kind, fhir_error *err)
{
    q x;
    if (q_take(s, Q_NOTIFY_EVENT, &x, err))
        return -1;
    bind_text(x.st, 1, key);
    bind_text(x.st, 2, kind);
    sqlite3_bind_int64(x.st, 3, fhir_clock_now_ms());
    if (q_run(s, &x, "notify event", err))
        return -1;
    return sqlite3_changes(s->db) > 0 ? 1 : 0;
}

int store_notice_add(store *s, const store_notice *n, int64_t *id_out, fhir_error *err)
{
    q x;
    if (q_take(s, Q_NOTICE_ADD, &x, err))
        return -1;
    int64_t now = fhir_clock_now_ms();
    bind_text(x.st, 1, n->kind);
    bind_text(x.st, 2, n->channel);
    sqlite3_bind_int64(x.st, 3, n->count);
    bind_text(x.st, 4, n->urgency);
    bind_text(x.st, 5, n->body_json);
    sqlite3_bind_int64(x.st, 6, now);
    sqlite3_bind_int64(x.st, 7, now);
    if (q_run(s, &x, "notice add", err))
        return -1;
    if (id_out)
        *id_out = sqlite3_last_insert_rowid(s->db);
    return 0;
}

typedef struct notice_ctx {
    store_notice_fn fn;
    void *ctx;
} notice_ctx;

static int notice_row(void *ctx, sqlite3_stmt *st)
{
    notice_ctx *c = ctx;
    store_notice n = {.id = sqlite3_column_int64(st, 0), .kind = col_text(st, 1), .channel = col_text(st, 2),
                      .count = sqlite3_column_int64(st, 3), .urgency = col_text(st, 4),
                      .body_json = col_text(st, 5), .attempts = sqlite3_column_int(st, 6)};
    return c->fn(c->ctx, &n);
}

int64_t store_notice_due(store *s, int64_t now_ms, unsigned max, store_notice_fn fn, void *ctx,
                         fhir_error *err)
{
    q x;
    if (q_take(s, Q_NOTICE_DUE, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, now_ms);
    sqlite3_bind_int64(x.st, 2, max);
    notice_ctx c = {fn, ctx};
    return q_rows(s, &x, "notice read", notice_row, &c, err);
}

int store_notice_claim(store *s, int64_t id, fhir_error *err)
{
    q x;
    if (q_take(s, Q_NOTICE_CLAIM, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, fhir_clock_now_ms());
    sqlite3_bind_int64(x.st, 2, id);
    if (q_run(s, &x, "notice claim", err))
        return -1;
    return sqlite3_changes(s->db) > 0 ? 1 : 0;
}

int store_notice_done(store *s, int64_t id, const char *status, const char *error, int64_t next_attempt_ms,
                      fhir_error *err)
{
    q x;
    if (q_take(s, Q_NOTICE_DONE, &x, err))
        return -1;
    bind_text(x.st, 1, status);
    bind_text(x.st, 2, error);
    sqlite3_bind_int64(x.st, 3, next_attempt_ms);
    sqlite3_bind_int64(x.st, 4, fhir_clock_now_ms());
    sqlite3_bind_int64(x.st, 5, id);
    return q_run(s, &x, "notice update", err);
}

int64_t store_notice_orphans(store *s, fhir_error *err)
{
    q x;
    if (q_take(s, Q_NOTICE_ORPHANS, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, fhir_clock_now_ms());
    if (q_run(s, &x, "notice update", err))
        return -1;
    return sqlite3_changes(s->db);
}

int64_t store_notice_count(store *s, const char *status, fhir_error *err)
{
    q x;
    if (q_take(s, Q_NOTICE_COUNT, &x, err))
        return -1;
    bind_text(x.st, 1, status);
    int rc = sqlite3_step(x.st);
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(x.st, 0) : -1;
    if (v < 0)
        sql_fail(s, err, "notice count");
    q_give(s, &x);
    return v;
}

typedef struct ref_scan_ctx {
    store_referral_scan_fn fn;
    void *ctx;
} ref_scan_ctx;

static int ref_scan_row(void *ctx, sqlite3_stmt *st)
{
    ref_scan_ctx *c = ctx;
    return c->fn(c->ctx, sqlite3_column_int64(st, 0), col_text(st, 1), sqlite3_column_int64(st, 2));
}

int64_t store_referral_notice_scan(store *s, int64_t sent_before_ms, store_referral_scan_fn fn, void *ctx,
                                   fhir_error *err)
{
    q x;
    if (q_take(s, Q_REF_NOTICE_SCAN, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, sent_before_ms);
    ref_scan_ctx c = {fn, ctx};
    return q_rows(s, &x, "referral list", ref_scan_row, &c, err);
}

int64_t store_verdict_pruned(store *s, const char *patient_id)
{
    q x;
    if (q_take(s, Q_VERDICT_PRUNED, &x, NULL))
        return -1;
    bind_text(x.st, 1, patient_id);
    return q_int(s, &x, 0);
}

int64_t store_verdict_count(store *s, const char *category, fhir_error *err)
{
    q x;
    if (q_take(s, Q_VERDICT_COUNT, &x, err))
        return -1;
    bind_text(x.st, 1, category);
    int64_t n = q_int(s, &x, 0);
    if (n < 0)
        sql_fail(s, err, "verdict count");
    return n;
}

/* ---- referrals -------------------------------------------------------------------------------- */

typedef struct ref_ctx {
    store_referral_fn fn;
    void *ctx;
} ref_ctx;

static int ref_row(void *ctx, sqlite3_stmt *st)
{
    ref_ctx *c = ctx;
    store_referral r = {
        .id = sqlite3_column_int64(st, 0),
        .placer_id = col_text(st, 1),
        .site_id = col_text(st, 2),
        .patient_id = col_text(st, 3),
        .center_id = col_text(st, 4),
        .indications = col_text(st, 5),
        .state = col_text(st, 6),
        .mode = col_text(st, 7),
        .urgency = col_text(st, 8),
        .explanation = col_text(st, 9),
        .verdict_json = col_text(st, 10),
        .route_json = col_text(st, 11),
        .payload = col_text(st, 12),
        .attempts = sqlite3_column_int(st, 13),
        .next_attempt_ms = sqlite3_column_int64(st, 14),
        .last_status = sqlite3_column_int(st, 15),
        .last_error = col_text(st, 16),
        .last_response = col_text(st, 17),
        .center_sr_ref = col_text(st, 18),
        .center_task_ref = col_text(st, 19),
        .task_status = col_text(st, 20),
        .business_status = col_text(st, 21),
        .created_ms = sqlite3_column_int64(st, 22),
        .updated_ms = sqlite3_column_int64(st, 23),
        .episode = sqlite3_column_int64(st, 24),
        .supersedes = sqlite3_column_int64(st, 25),
        .episode_marker = col_text(st, 26),
        .ended = col_text(st, 27),
        .cancel_requested_ms = sqlite3_column_int64(st, 28),
        .package = col_text(st, 29),
        .compose_cause = col_text(st, 30),
        .compose_error = col_text(st, 31),
    };
    return c->fn ? c->fn(c->ctx, &r) : 0;
}

int store_referral_insert(store *s, const store_referral *r, int64_t *id_out, fhir_error *err)
{
    *id_out = 0;
    q x;
    if (q_take(s, Q_REF_INSERT, &x, err))
        return -1;
    const char *vals[] = {r->placer_id, r->site_id, r->patient_id, r->center_id,
                          r->indications, r->state, r->mode, r->urgency, r->explanation,
                          r->verdict_json, r->route_json, r->payload};
    for (int i = 0; i < 12; i++) /* the caller's: outlive the step (no copies) */
        bind_static(x.st, i + 1, vals[i]);
    int64_t now = fhir_clock_now_ms();
    sqlite3_bind_int64(x.st, 13, now);
    sqlite3_bind_int64(x.st, 14, now);
    sqlite3_bind_int64(x.st, 15, r->episode > 0 ? r->episode : 1);
    if (r->supersedes > 0)
        sqlite3_bind_int64(x.st, 16, r->supersedes);
    else
        sqlite3_bind_null(x.st, 16);
    bind_static(x.st, 17, r->episode_marker);
    bind_static(x.st, 18, r->package);
    if (q_run(s, &x, "referral insert", err))
        return -1;
    if (sqlite3_changes(s->db) > 0) {
        *id_out = sqlite3_last_insert_rowid(s->db);
        return 1;
    }
    int f = store_referral_find(s, r->placer_id, id_out, err);
    if (f == 0)
        return fhir_error_set(err, "referral %s vanished", r->placer_id);
    return f < 0 ? -1 : 0;
}

int store_referral_get(store *s, int64_t id, store_referral_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_REF_GET, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, id);
    ref_ctx c = {fn, ctx};
    int64_t n = q_rows(s, &x, "referral read", ref_row, &c, err);
    return n < 0 ? -1 : n > 0;
}

int store_referral_get_by_placer(store *s, const char *placer_id, store_referral_fn fn,
                                 void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_REF_GET_PLACER, &x, err))
        return -1;
    bind_text(x.st, 1, placer_id);
    ref_ctx c = {fn, ctx};
    int64_t n = q_rows(s, &x, "referral read", ref_row, &c, err);
    return n < 0 ? -1 : n > 0;
}

int store_referral_find(store *s, const char *placer_id, int64_t *id_out, fhir_error *err)
{
    q x;
    if (q_take(s, Q_REF_FIND, &x, err))
        return -1;
    bind_text(x.st, 1, placer_id);
    int rc = sqlite3_step(x.st), ret = 0;
    if (rc == SQLITE_ROW) {
        *id_out = sqlite3_column_int64(x.st, 0);
        ret = 1;
    } else if (rc != SQLITE_DONE) {
        ret = sql_fail(s, err, "referral read");
    }
    q_give(s, &x);
    return ret;
}

int store_referral_state(store *s, int64_t id, char *out, size_t n, fhir_error *err)
{
    q x;
    if (q_take(s, Q_REF_STATE, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, id);
    int rc = sqlite3_step(x.st), ret = 0;
    if (rc == SQLITE_ROW) {
        const char *t = col_text(x.st, 0);
        snprintf(out, n, "%s", t ? t : "");
        ret = 1;
    } else if (rc != SQLITE_DONE) {
        ret = sql_fail(s, err, "referral read");
    }
    q_give(s, &x);
    return ret;
}

#define EACH_STATE 1
#define EACH_CENTER 2
#define EACH_PATIENT 4
#define EACH_SUMMARY 8
#define EACH_SQL_MAX 1600

/* The statement of one store_referral_each variant (EACH_* flags). */
static void each_sql(int variant, char sql[EACH_SQL_MAX])
{
    int k = snprintf(sql, EACH_SQL_MAX, "SELECT %s FROM referrals%s WHERE 1",
                     variant & EACH_SUMMARY ? REF_COLS_SUMMARY : REF_COLS,
                     variant & EACH_PATIENT ? " INDEXED BY referrals_patient" : "");
    int p = 1;
    if (variant & EACH_STATE)
        k += snprintf(sql + k, EACH_SQL_MAX - (size_t)k, " AND state = ?%d", p++);
    if (variant & EACH_CENTER)
        k += snprintf(sql + k, EACH_SQL_MAX - (size_t)k, " AND center_id = ?%d", p++);
    if (variant & EACH_PATIENT)
        k += snprintf(sql + k, EACH_SQL_MAX - (size_t)k, " AND patient_id = ?%d", p++);
    snprintf(sql + k, EACH_SQL_MAX - (size_t)k, " ORDER BY id");
}

int64_t store_referral_each(store *s, const store_referral_filter *f, store_referral_fn fn,
                            void *ctx, fhir_error *err)
{
    static const store_referral_filter none = {0};
    if (!f)
        f = &none;
    int variant = (f->state ? EACH_STATE : 0) | (f->center_id ? EACH_CENTER : 0) |
                  (f->patient_id ? EACH_PATIENT : 0) | (f->summary ? EACH_SUMMARY : 0);
    char sql[EACH_SQL_MAX];
    each_sql(variant, sql);
    q x;
    if (q_take_sql(s, Q_FIXED + variant, sql, "referral list", &x, err))
        return -1;
    int p = 1;
    if (f->state)
        bind_text(x.st, p++, f->state);
    if (f->center_id)
        bind_text(x.st, p++, f->center_id);
    if (f->patient_id)
        bind_text(x.st, p++, f->patient_id);
    ref_ctx c = {fn, ctx};
    return q_rows(s, &x, "referral list", ref_row, &c, err);
}

typedef struct ref_ids_ctx {
    store_referral_id_fn fn;
    void *ctx;
} ref_ids_ctx;

static int ref_ids_row(void *ctx, sqlite3_stmt *st)
{
    ref_ids_ctx *c = ctx;
    return c->fn ? c->fn(c->ctx, sqlite3_column_int64(st, 0), col_text(st, 1)) : 0;
}

int64_t store_referral_ids(store *s, const char *patient_id, const char *state,
                           store_referral_id_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_REF_IDS, &x, err))
        return -1;
    bind_text(x.st, 1, patient_id);
    bind_text(x.st, 2, state);
    ref_ids_ctx c = {fn, ctx};
    return q_rows(s, &x, "referral list", ref_ids_row, &c, err);
}

typedef struct count_ctx {
    store_count_fn fn;
    void *ctx;
} count_ctx;

static int count_row(void *ctx, sqlite3_stmt *st)
{
    count_ctx *c = ctx;
    const char *name = col_text(st, 0);
    if (c->fn && name)
        c->fn(c->ctx, name, sqlite3_column_int64(st, 1));
    return 0;
}

int store_referral_count_by_state(store *s, store_count_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_REF_COUNT_STATES, &x, err))
        return -1;
    count_ctx c = {fn, ctx};
    return q_rows(s, &x, "referral count", count_row, &c, err) < 0 ? -1 : 0;
}

int store_referral_unprepared_counts(store *s, store_count_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_REF_UNPREPARED, &x, err))
        return -1;
    count_ctx c = {fn, ctx};
    return q_rows(s, &x, "referral count", count_row, &c, err) < 0 ? -1 : 0;
}

int store_referral_state_age(store *s, const char *state, int64_t *count,
                             int64_t *oldest_created_ms, fhir_error *err)
{
    *count = 0;
    *oldest_created_ms = 0;
    q x;
    if (q_take(s, Q_REF_STATE_AGE, &x, err))
        return -1;
    bind_text(x.st, 1, state);
    int rc = sqlite3_step(x.st), ret = 0;
    if (rc == SQLITE_ROW) {
        *count = sqlite3_column_int64(x.st, 0);
        if (sqlite3_column_type(x.st, 1) != SQLITE_NULL)
            *oldest_created_ms = sqlite3_column_int64(x.st, 1);
    } else {
        ret = sql_fail(s, err, "referral count");
    }
    q_give(s, &x);
    return ret;
}

typedef struct ms_ctx {
    store_ms_fn fn;
    void *ctx;
} ms_ctx;

static int ms_row(void *ctx, sqlite3_stmt *st)
{
    ms_ctx *c = ctx;
    if (c->fn)
        c->fn(c->ctx, sqlite3_column_int64(st, 0));
    return 0;
}

int64_t store_referral_time_to_state(store *s, const char *state, store_ms_fn fn, void *ctx,
                                     fhir_error *err)
{
    q x;
    if (q_take(s, Q_REF_TIME_TO, &x, err))
        return -1;
    bind_text(x.st, 1, state);
    ms_ctx c = {fn, ctx};
    return q_rows(s, &x, "referral times", ms_row, &c, err);
}

int store_referral_update(store *s, int64_t id, const store_referral_change *u,
                          fhir_error *err)
{
    q x;
    if (q_take(s, Q_REF_UPDATE, &x, err))
        return -1;
    sqlite3_stmt *st = x.st;
    sqlite3_bind_int64(st, 1, id);
    bind_text(st, 2, u->state);
    sqlite3_bind_int64(st, 3, fhir_clock_now_ms());
    sqlite3_bind_int(st, 4, u->reset_attempts);
    sqlite3_bind_int(st, 5, u->add_attempt);
    sqlite3_bind_int64(st, 6, u->next_attempt_ms);
    sqlite3_bind_int(st, 7, u->set_center_refs);
    bind_text(st, 8, u->center_sr_ref);
    bind_text(st, 9, u->center_task_ref);
    sqlite3_bind_int(st, 10, u->set_outcome);
    sqlite3_bind_int(st, 11, u->last_status);
    bind_text(st, 12, u->last_error);
    bind_text(st, 13, u->last_response);
    sqlite3_bind_int(st, 14, u->set_task);
    bind_text(st, 15, u->task_status);
    bind_text(st, 16, u->business_status);
    sqlite3_bind_int(st, 17, u->set_payload);
    bind_text(st, 18, u->payload);
    sqlite3_bind_int(st, 19, u->set_proposal);
    const char *pv[] = {u->placer_id, u->center_id, u->indications, u->urgency,
                        u->explanation, u->verdict_json, u->route_json};
    for (int i = 0; i < 7; i++)
        bind_text(st, 20 + i, pv[i]);
    sqlite3_bind_int(st, 27, u->set_ended);
    bind_text(st, 28, u->ended);
    sqlite3_bind_int(st, 29, u->set_cancel_request);
    sqlite3_bind_int64(st, 30, u->cancel_requested_ms);
    sqlite3_bind_int(st, 31, u->set_marker);
    bind_text(st, 32, u->episode_marker);
    sqlite3_bind_int(st, 33, u->set_package);
    bind_text(st, 34, u->package);
    sqlite3_bind_int(st, 35, u->set_compose);
    bind_text(st, 36, u->compose_cause);
    bind_text(st, 37, u->compose_error);
    if (q_run(s, &x, "referral update", err))
        return -1;
    if (sqlite3_changes(s->db) == 0)
        return fhir_error_set(err, "referral %lld does not exist", (long long)id);
    return 0;
}

int store_referral_set_texts(store *s, int64_t id, const char *placer_id, const char *explanation,
                             const char *route_json, const char *package, fhir_error *err)
{
    q x;
    if (q_take(s, Q_REF_TEXTS, &x, err))
        return -1;
    sqlite3_stmt *st = x.st;
    sqlite3_bind_int64(st, 1, id);
    bind_text(st, 2, placer_id);
    bind_text(st, 3, explanation);
    bind_text(st, 4, route_json);
    bind_text(st, 5, package);
    if (q_run(s, &x, "referral texts", err))
        return -1;
    return sqlite3_changes(s->db) > 0 ? 1 : 0;
}

int64_t store_referral_cancel_due(store *s, store_referral_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_REF_CANCEL_DUE, &x, err))
        return -1;
    ref_ctx c = {fn, ctx};
    return q_rows(s, &x, "referral list", ref_row, &c, err);
}

/* ---- write-back outbox ------------------------------------------------------------------------- */

int store_outbox_add(store *s, int64_t referral_id, const char *state, int64_t audit_id,
                     fhir_error *err)
{
    q x;
    if (q_take(s, Q_OUTBOX_ADD, &x, err))
        return -1;
    int64_t now = fhir_clock_now_ms();
    sqlite3_bind_int64(x.st, 1, referral_id);
    bind_text(x.st, 2, state);
    sqlite3_bind_int64(x.st, 3, audit_id);
    sqlite3_bind_int64(x.st, 4, now);
    sqlite3_bind_int64(x.st, 5, now);
    return q_run(s, &x, "writeback insert", err);
}

typedef struct outbox_ctx {
    store_outbox_fn fn;
    void *ctx;
} outbox_ctx;

static int outbox_row(void *ctx, sqlite3_stmt *st)
{
    outbox_ctx *c = ctx;
    return c->fn ? c->fn(c->ctx, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                         col_text(st, 2))
                 : 0;
}

int64_t store_outbox_pending(store *s, unsigned max, store_outbox_fn fn, void *ctx,
                             fhir_error *err)
{
    q x;
    if (q_take(s, Q_OUTBOX_PENDING, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, max);
    outbox_ctx c = {fn, ctx};
    return q_rows(s, &x, "writeback read", outbox_row, &c, err);
}

int store_outbox_update(store *s, int64_t row_id, const char *status, bool attempt,
                        const char *error, const char *ehr_ref, fhir_error *err)
{
    q x;
    if (q_take(s, Q_OUTBOX_UPDATE, &x, err))
        return -1;
    bind_text(x.st, 1, status);
    sqlite3_bind_int(x.st, 2, attempt ? 1 : 0);
    bind_text(x.st, 3, error);
    bind_text(x.st, 4, ehr_ref);
    sqlite3_bind_int64(x.st, 5, fhir_clock_now_ms());
    sqlite3_bind_int64(x.st, 6, row_id);
    return q_run(s, &x, "writeback update", err);
}

/* ---- who is acting: users, sessions, API tokens, failed sign-ins ------------------------------ */

/* Steps a change, gives the statement back; sqlite3_changes() or -1 (err->code STORE_CONFLICT
 * for a taken unique value). */
static int q_change(store *s, q *x, const char *what, fhir_error *err)
{
    int rc = sqlite3_step(x->st);
    int ret;
    if (rc == SQLITE_DONE) {
        ret = sqlite3_changes(s->db);
    } else {
        int ext = sqlite3_extended_errcode(s->db);
        ret = sql_fail(s, err, what);
        if (err && (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY))
            err->code = STORE_CONFLICT;
    }
    q_give(s, x);
    return ret;
}

static void copy_col(sqlite3_stmt *st, int i, char *out, size_t n)
{
    const char *t = col_text(st, i);
    snprintf(out, n, "%s", t ? t : "");
}

void store_user_free(store_user *u)
{
    if (!u)
        return;
    free(u->name);
    free(u->display_name);
    free(u->role);
    free(u->pw_hash);
    free(u->oidc_subject);
    memset(u, 0, sizeof *u);
}

static void user_fill(sqlite3_stmt *st, store_user *u)
{
    u->id = sqlite3_column_int64(st, 0);
    u->name = dup_col(st, 1);
    u->display_name = dup_col(st, 2);
    u->role = dup_col(st, 3);
    const char *kind = col_text(st, 4);
    u->service = kind && !strcmp(kind, "service");
    u->pw_hash = dup_col(st, 5);
    u->oidc_subject = dup_col(st, 6);
    u->disabled = sqlite3_column_int(st, 7) != 0;
    u->created_ms = sqlite3_column_int64(st, 8);
    u->updated_ms = sqlite3_column_int64(st, 9);
    u->last_login_ms = sqlite3_column_int64(st, 10);
}

int store_user_add(store *s, const store_user *u, int64_t *id_out, fhir_error *err)
{
    q x;
    if (q_take(s, Q_USER_ADD, &x, err))
        return -1;
    int64_t now = fhir_clock_now_ms();
    bind_text(x.st, 1, u->name);
    bind_text(x.st, 2, u->display_name);
    bind_text(x.st, 3, u->role);
    bind_text(x.st, 4, u->service ? "service" : "person");
    bind_text(x.st, 5, u->pw_hash);
    bind_text(x.st, 6, u->oidc_subject);
    sqlite3_bind_int(x.st, 7, u->disabled ? 1 : 0);
    sqlite3_bind_int64(x.st, 8, now);
    sqlite3_bind_int64(x.st, 9, now);
    if (q_change(s, &x, "user add", err) < 0)
        return -1;
    if (id_out)
        *id_out = sqlite3_last_insert_rowid(s->db);
    return 0;
}

static int user_one_row(void *ctx, sqlite3_stmt *st)
{
    user_fill(st, ctx);
    return 1;
}

static int user_get(store *s, int which, const char *key, int64_t id, store_user *out, fhir_error *err)
{
    memset(out, 0, sizeof *out);
    q x;
    if (q_take(s, which, &x, err))
        return -1;
    if (key)
        bind_text(x.st, 1, key);
    else
        sqlite3_bind_int64(x.st, 1, id);
    int64_t n = q_rows(s, &x, "user read", user_one_row, out, err);
    return n < 0 ? -1 : n > 0;
}

int store_user_get(store *s, const char *name, store_user *out, fhir_error *err)
{
    return user_get(s, Q_USER_BY_NAME, name ? name : "", 0, out, err);
}

int store_user_get_id(store *s, int64_t id, store_user *out, fhir_error *err)
{
    return user_get(s, Q_USER_BY_ID, NULL, id, out, err);
}

int store_user_get_subject(store *s, const char *subject, store_user *out, fhir_error *err)
{
    return user_get(s, Q_USER_BY_SUBJECT, subject ? subject : "", 0, out, err);
}

static int user_set(store *s, int which, int64_t id, const char *text, int num, fhir_error *err)
{
    q x;
    if (q_take(s, which, &x, err))
        return -1;
    if (which == Q_USER_SET_DISABLED)
        sqlite3_bind_int(x.st, 1, num);
    else
        bind_text(x.st, 1, text);
    sqlite3_bind_int64(x.st, 2, fhir_clock_now_ms());
    sqlite3_bind_int64(x.st, 3, id);
    return q_change(s, &x, "user update", err);
}

int store_user_set_password(store *s, int64_t id, const char *pw_hash, fhir_error *err)
{
    return user_set(s, Q_USER_SET_PW, id, pw_hash, 0, err);
}

int store_user_set_role(store *s, int64_t id, const char *role, fhir_error *err)
{
    return user_set(s, Q_USER_SET_ROLE, id, role, 0, err);
}

int store_user_set_subject(store *s, int64_t id, const char *subject, fhir_error *err)
{
    return user_set(s, Q_USER_SET_SUBJECT, id, subject, 0, err);
}

int store_user_set_display(store *s, int64_t id, const char *display_name, fhir_error *err)
{
    return user_set(s, Q_USER_SET_DISPLAY, id, display_name, 0, err);
}

int store_user_set_disabled(store *s, int64_t id, bool disabled, fhir_error *err)
{
    return user_set(s, Q_USER_SET_DISABLED, id, NULL, disabled ? 1 : 0, err);
}

int store_user_touch_login(store *s, int64_t id, fhir_error *err)
{
    q x;
    if (q_take(s, Q_USER_TOUCH, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, fhir_clock_now_ms());
    sqlite3_bind_int64(x.st, 2, id);
    return q_change(s, &x, "user update", err);
}

typedef struct user_each_ctx {
    store_user_fn fn;
    void *ctx;
} user_each_ctx;

static int user_each_row(void *ctx, sqlite3_stmt *st)
{
    user_each_ctx *c = ctx;
    store_user u;
    user_fill(st, &u);
    int stop = c->fn ? c->fn(c->ctx, &u) : 0;
    store_user_free(&u);
    return stop;
}

int64_t store_user_each(store *s, store_user_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_USER_EACH, &x, err))
        return -1;
    user_each_ctx c = {fn, ctx};
    return q_rows(s, &x, "user list", user_each_row, &c, err);
}

int store_session_put(store *s, const unsigned char hash[STORE_SECRET_HASH], int64_t user_id,
                      const char *source, int64_t expires_ms, fhir_error *err)
{
    q x;
    if (q_take(s, Q_SESSION_PUT, &x, err))
        return -1;
    int64_t now = fhir_clock_now_ms();
    sqlite3_bind_blob(x.st, 1, hash, STORE_SECRET_HASH, SQLITE_TRANSIENT);
    sqlite3_bind_int64(x.st, 2, user_id);
    bind_text(x.st, 3, source);
    sqlite3_bind_int64(x.st, 4, now);
    sqlite3_bind_int64(x.st, 5, now);
    sqlite3_bind_int64(x.st, 6, expires_ms);
    return q_change(s, &x, "session add", err) < 0 ? -1 : 0;
}

static int session_row(void *ctx, sqlite3_stmt *st)
{
    store_session *out = ctx;
    out->user_id = sqlite3_column_int64(st, 0);
    copy_col(st, 1, out->source, sizeof out->source);
    out->created_ms = sqlite3_column_int64(st, 2);
    out->last_seen_ms = sqlite3_column_int64(st, 3);
    out->expires_ms = sqlite3_column_int64(st, 4);
    return 1;
}

int store_session_get(store *s, const unsigned char hash[STORE_SECRET_HASH], store_session *out,
                      fhir_error *err)
{
    memset(out, 0, sizeof *out);
    q x;
    if (q_take(s, Q_SESSION_GET, &x, err))
        return -1;
    sqlite3_bind_blob(x.st, 1, hash, STORE_SECRET_HASH, SQLITE_TRANSIENT);
    int64_t n = q_rows(s, &x, "session read", session_row, out, err);
    return n < 0 ? -1 : n > 0;
}

int store_session_touch(store *s, const unsigned char hash[STORE_SECRET_HASH], int64_t now_ms,
                        fhir_error *err)
{
    q x;
    if (q_take(s, Q_SESSION_TOUCH, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, now_ms);
    sqlite3_bind_blob(x.st, 2, hash, STORE_SECRET_HASH, SQLITE_TRANSIENT);
    return q_change(s, &x, "session touch", err) < 0 ? -1 : 0;
}

int store_session_delete(store *s, const unsigned char hash[STORE_SECRET_HASH], fhir_error *err)
{
    q x;
    if (q_take(s, Q_SESSION_DELETE, &x, err))
        return -1;
    sqlite3_bind_blob(x.st, 1, hash, STORE_SECRET_HASH, SQLITE_TRANSIENT);
    return q_change(s, &x, "session delete", err);
}

int store_session_delete_user(store *s, int64_t user_id, fhir_error *err)
{
    q x;
    if (q_take(s, Q_SESSION_DELETE_USER, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, user_id);
    return q_change(s, &x, "session delete", err);
}

int store_session_prune(store *s, int64_t now_ms, int64_t idle_ms, fhir_error *err)
{
    q x;
    if (q_take(s, Q_SESSION_PRUNE, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, now_ms);
    sqlite3_bind_int64(x.st, 2, idle_ms);
    return q_change(s, &x, "session prune", err);
}

int64_t store_session_count(store *s, int64_t user_id)
{
    q x;
    if (q_take(s, Q_SESSION_COUNT, &x, NULL))
        return -1;
    sqlite3_bind_int64(x.st, 1, user_id);
    return q_int(s, &x, 0);
}

static int token_fill(void *ctx, sqlite3_stmt *st)
{
    store_token *t = ctx;
    t->id = sqlite3_column_int64(st, 0);
    t->user_id = sqlite3_column_int64(st, 1);
    copy_col(st, 2, t->label, sizeof t->label);
    copy_col(st, 3, t->role, sizeof t->role);
    t->created_ms = sqlite3_column_int64(st, 4);
    t->expires_ms = sqlite3_column_int64(st, 5);
    t->last_used_ms = sqlite3_column_int64(st, 6);
    t->revoked_ms = sqlite3_column_int64(st, 7);
    return 1;
}

int store_token_put(store *s, int64_t user_id, const char *label, const unsigned char hash[STORE_SECRET_HASH],
                    const char *role, int64_t expires_ms, int64_t *id_out, fhir_error *err)
{
    q x;
    if (q_take(s, Q_TOKEN_PUT, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, user_id);
    bind_text(x.st, 2, label);
    sqlite3_bind_blob(x.st, 3, hash, STORE_SECRET_HASH, SQLITE_TRANSIENT);
    bind_text(x.st, 4, role);
    sqlite3_bind_int64(x.st, 5, fhir_clock_now_ms());
    sqlite3_bind_int64(x.st, 6, expires_ms);
    if (q_change(s, &x, "token add", err) < 0)
        return -1;
    if (id_out)
        *id_out = sqlite3_last_insert_rowid(s->db);
    return 0;
}

int store_token_get(store *s, const unsigned char hash[STORE_SECRET_HASH], store_token *out, fhir_error *err)
{
    memset(out, 0, sizeof *out);
    q x;
    if (q_take(s, Q_TOKEN_GET, &x, err))
        return -1;
    sqlite3_bind_blob(x.st, 1, hash, STORE_SECRET_HASH, SQLITE_TRANSIENT);
    int64_t n = q_rows(s, &x, "token read", token_fill, out, err);
    return n < 0 ? -1 : n > 0;
}

int store_token_touch(store *s, int64_t id, int64_t now_ms, fhir_error *err)
{
    q x;
    if (q_take(s, Q_TOKEN_TOUCH, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, now_ms);
    sqlite3_bind_int64(x.st, 2, id);
    return q_change(s, &x, "token touch", err) < 0 ? -1 : 0;
}

int store_token_revoke(store *s, int64_t user_id, int64_t id, fhir_error *err)
{
    q x;
    if (q_take(s, Q_TOKEN_REVOKE, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, fhir_clock_now_ms());
    sqlite3_bind_int64(x.st, 2, id);
    sqlite3_bind_int64(x.st, 3, user_id);
    return q_change(s, &x, "token revoke", err);
}

int store_token_revoke_user(store *s, int64_t user_id, fhir_error *err)
{
    q x;
    if (q_take(s, Q_TOKEN_REVOKE_USER, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, fhir_clock_now_ms());
    sqlite3_bind_int64(x.st, 2, user_id);
    return q_change(s, &x, "token revoke", err);
}

typedef struct token_each_ctx {
    store_token_fn fn;
    void *ctx;
} token_each_ctx;

static int token_each_row(void *ctx, sqlite3_stmt *st)
{
    token_each_ctx *c = ctx;
    store_token t;
    token_fill(&t, st);
    return c->fn ? c->fn(c->ctx, &t) : 0;
}

int64_t store_token_each(store *s, int64_t user_id, store_token_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_TOKEN_EACH, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, user_id);
    token_each_ctx c = {fn, ctx};
    return q_rows(s, &x, "token list", token_each_row, &c, err);
}

typedef struct login_row_out {
    int *failures;
    int64_t *locked_until_ms;
} login_row_out;

static int login_row(void *ctx, sqlite3_stmt *st)
{
    login_row_out *o = ctx;
    *o->failures = sqlite3_column_int(st, 0);
    *o->locked_until_ms = sqlite3_column_int64(st, 1);
    return 1;
}

int store_login_get(store *s, const char *name, int *failures, int64_t *locked_until_ms, fhir_error *err)
{
    *failures = 0;
    *locked_until_ms = 0;
    q x;
    if (q_take(s, Q_LOGIN_GET, &x, err))
        return -1;
    bind_text(x.st, 1, name);
    login_row_out o = {failures, locked_until_ms};
    return q_rows(s, &x, "sign-in failures read", login_row, &o, err) < 0 ? -1 : 0;
}

int store_login_put(store *s, const char *name, int failures, int64_t now_ms, int64_t locked_until_ms,
                    fhir_error *err)
{
    q x;
    if (q_take(s, Q_LOGIN_PRUNE, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, now_ms - STORE_FAILURES_KEEP_MS);
    sqlite3_bind_int64(x.st, 2, now_ms);
    if (q_change(s, &x, "sign-in failures prune", err) < 0 || q_take(s, Q_LOGIN_PUT, &x, err))
        return -1;
    bind_text(x.st, 1, name);
    sqlite3_bind_int(x.st, 2, failures);
    sqlite3_bind_int64(x.st, 3, now_ms);
    sqlite3_bind_int64(x.st, 4, locked_until_ms);
    return q_change(s, &x, "sign-in failure write", err) < 0 ? -1 : 0;
}

int store_login_clear(store *s, const char *name, fhir_error *err)
{
    q x;
    if (q_take(s, Q_LOGIN_CLEAR, &x, err))
        return -1;
    bind_text(x.st, 1, name);
    return q_change(s, &x, "sign-in failures clear", err) < 0 ? -1 : 0;
}

/* ---- CDS Hooks ------------------------------------------------------------------------------ */

int store_cds_jti_use(store *s, const char *iss, const char *jti, int64_t exp_ms, fhir_error *err)
{
    q x;
    if (q_take(s, Q_CDS_JTI_PRUNE, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, fhir_clock_now_ms());
    if (q_run(s, &x, "cds jti prune", err))
        return -1;
    if (q_take(s, Q_CDS_JTI_ADD, &x, err))
        return -1;
    bind_text(x.st, 1, iss);
    bind_text(x.st, 2, jti);
    sqlite3_bind_int64(x.st, 3, exp_ms);
    if (q_run(s, &x, "cds jti add", err))
        return -1;
    return sqlite3_changes(s->db) > 0 ? 1 : 0;
}

int store_cds_card_put(store *s, const char *uuid, const char *patient_id, const char *service,
                       const char *category, fhir_error *err)
{
    q x;
    if (q_take(s, Q_CDS_CARD_PUT, &x, err))
        return -1;
    bind_text(x.st, 1, uuid);
    bind_text(x.st, 2, patient_id);
    bind_text(x.st, 3, service);
    bind_text(x.st, 4, category);
    sqlite3_bind_int64(x.st, 5, fhir_clock_now_ms());
    return q_run(s, &x, "cds card put", err);
}

int store_cds_card_get(store *s, const char *uuid, char *patient_id, size_t n, fhir_error *err)
{
    q x;
    if (q_take(s, Q_CDS_CARD_GET, &x, err))
        return -1;
    bind_text(x.st, 1, uuid);
    int rc = sqlite3_step(x.st);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        snprintf(patient_id, n, "%s", col_text(x.st, 0) ? col_text(x.st, 0) : "");
        ret = 1;
    } else if (rc != SQLITE_DONE) {
        ret = sql_fail(s, err, "cds card get");
    }
    q_give(s, &x);
    return ret;
}

int store_cds_feedback_add(store *s, const store_cds_feedback *f, fhir_error *err)
{
    q x;
    if (q_take(s, Q_CDS_FEEDBACK_ADD, &x, err))
        return -1;
    bind_text(x.st, 1, f->service);
    bind_text(x.st, 2, f->card);
    bind_text(x.st, 3, f->patient_id);
    bind_text(x.st, 4, f->outcome);
    bind_text(x.st, 5, f->override_reason);
    bind_text(x.st, 6, f->accepted_suggestions);
    bind_text(x.st, 7, f->outcome_ts);
    sqlite3_bind_int64(x.st, 8, fhir_clock_now_ms());
    return q_run(s, &x, "cds feedback add", err);
}

int store_cds_feedback_count(store *s, store_cds_count_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_CDS_FEEDBACK_COUNT, &x, err))
        return -1;
    int rc;
    while ((rc = sqlite3_step(x.st)) == SQLITE_ROW)
        fn(ctx, col_text(x.st, 0), col_text(x.st, 1), sqlite3_column_int64(x.st, 2));
    int ret = rc == SQLITE_DONE ? 0 : sql_fail(s, err, "cds feedback count");
    q_give(s, &x);
    return ret;
}

/* ---- the worklist and the program figures ------------------------------------------------ */

typedef struct wl_ctx {
    store_worklist_fn fn;
    void *ctx;
} wl_ctx;

static int wl_row(void *ctx, sqlite3_stmt *st)
{
    wl_ctx *c = ctx;
    store_worklist_row r = {
        .patient_id = col_text(st, 0), .category = col_text(st, 1), .urgency = col_text(st, 2),
        .consult = col_text(st, 3), .disease = col_text(st, 4), .relapse_day = col_text(st, 5),
        .products = col_text(st, 6), .possible = col_text(st, 7), .missing = sqlite3_column_int64(st, 8),
        .updated_ms = sqlite3_column_int64(st, 9), .ref_state = col_text(st, 10),
        .ref_id = sqlite3_column_int64(st, 11),
    };
    return c->fn ? c->fn(c->ctx, &r) : 0;
}

static void wl_bind(sqlite3_stmt *st, const store_worklist_filter *f)
{
    bind_text(st, 1, f ? f->category : NULL);
    bind_text(st, 2, f ? f->disease : NULL);
    sqlite3_bind_int64(st, 3, f ? f->changed_after_ms : 0);
    bind_text(st, 4, f ? f->state : NULL);
}

int64_t store_worklist_page(store *s, const store_worklist_filter *f, int64_t limit, int64_t offset,
                            store_worklist_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_WL_PAGE, &x, err))
        return -1;
    wl_bind(x.st, f);
    sqlite3_bind_int64(x.st, 5, limit);
    sqlite3_bind_int64(x.st, 6, offset);
    wl_ctx c = {fn, ctx};
    return q_rows(s, &x, "worklist read", wl_row, &c, err);
}

int64_t store_worklist_count(store *s, const store_worklist_filter *f, fhir_error *err)
{
    q x;
    if (q_take(s, Q_WL_COUNT, &x, err))
        return -1;
    wl_bind(x.st, f);
    int64_t n = q_int(s, &x, 0);
    if (n < 0)
        sql_fail(s, err, "worklist count");
    return n;
}

int store_worklist_get(store *s, const char *patient_id, store_worklist_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_WL_GET, &x, err))
        return -1;
    bind_text(x.st, 1, patient_id);
    wl_ctx c = {fn, ctx};
    int64_t n = q_rows(s, &x, "worklist read", wl_row, &c, err);
    return n < 0 ? -1 : n > 0;
}

static int counts_row(void *ctx, sqlite3_stmt *st)
{
    int64_t *out = ctx;
    for (int i = 0; i < 4; i++)
        out[i] = sqlite3_column_int64(st, i);
    return 1;
}

int store_worklist_counts(store *s, int64_t out[4], fhir_error *err)
{
    q x;
    memset(out, 0, 4 * sizeof *out);
    if (q_take(s, Q_WL_COUNTS, &x, err))
        return -1;
    return q_rows(s, &x, "worklist count", counts_row, out, err) < 0 ? -1 : 0;
}

typedef struct text_ctx {
    store_text_fn fn;
    void *ctx;
} text_ctx;

static int text_row(void *ctx, sqlite3_stmt *st)
{
    text_ctx *c = ctx;
    c->fn(c->ctx, col_text(st, 0));
    return 0;
}

int64_t store_worklist_diseases(store *s, store_text_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_WL_DISEASES, &x, err))
        return -1;
    text_ctx c = {fn, ctx};
    return q_rows(s, &x, "worklist read", text_row, &c, err);
}

int store_worklist_declined_for(store *s, const char *patient_id, const char *category, const char *verdict_json,
                                fhir_error *err)
{
    if (!verdict_json || !category)
        return 0;
    q x;
    if (q_take(s, Q_WL_DECLINED_FOR, &x, err))
        return -1;
    bind_text(x.st, 1, patient_id);
    bind_text(x.st, 2, category);
    bind_text(x.st, 3, verdict_json);
    int rc = sqlite3_step(x.st);
    int v = rc == SQLITE_ROW ? sqlite3_column_int(x.st, 0) > 0 : -1;
    if (v < 0)
        sql_fail(s, err, "worklist decline");
    q_give(s, &x);
    return v;
}

int store_worklist_decline(store *s, const char *patient_id, const char *code, const store_actor *who,
                           fhir_error *err)
{
    bool own = !tx_open(s);
    if (own && store_begin(s, err))
        return -1;
    q x;
    int64_t n = -1;
    if (q_take(s, Q_WL_DECLINE, &x, err) == 0) {
        bind_text(x.st, 1, patient_id);
        bind_text(x.st, 2, code);
        bind_text(x.st, 3, who ? who->reason : NULL);
        bind_text(x.st, 4, who && who->name ? who->name : "system");
        if (who && who->user_id > 0)
            sqlite3_bind_int64(x.st, 5, who->user_id);
        sqlite3_bind_int64(x.st, 6, fhir_clock_now_ms());
        n = q_change(s, &x, "worklist decline", err);
    }
    if (n == 0) {
        fhir_error_set(err, "patient %s is not on the worklist", patient_id);
        err->code = 404;
    }
    char detail[256];
    snprintf(detail, sizeof detail, "patient=%s code=%s", patient_id, code);
    int rc = n > 0 && store_audit_actor(s, who, "worklist-decline", 0, NULL, NULL, detail, err) == 0 ? 0 : -1;
    if (own) {
        if (rc == 0)
            rc = store_commit(s, err);
        else
            store_rollback(s);
    }
    return rc;
}

static int visit_row(void *ctx, sqlite3_stmt *st)
{
    int64_t *v = ctx;
    v[0] = sqlite3_column_int64(st, 0);
    v[1] = sqlite3_column_int64(st, 1);
    return 1;
}

int store_worklist_visit(store *s, int64_t user_id, int64_t now_ms, int64_t gap_ms, int64_t *prev_ms,
                         fhir_error *err)
{
    q x;
    int64_t v[2] = {0, 0}; /* seen, prev */
    if (q_take(s, Q_WL_VISIT_GET, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, user_id);
    if (q_rows(s, &x, "worklist visit", visit_row, v, err) < 0)
        return -1;
    /* a view long after the last one starts a new visit: the last one becomes the previous */
    int64_t prev = v[0] && now_ms - v[0] > gap_ms ? v[0] : v[1];
    *prev_ms = prev;
    if (q_take(s, Q_WL_VISIT_PUT, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, user_id);
    sqlite3_bind_int64(x.st, 2, now_ms);
    sqlite3_bind_int64(x.st, 3, prev);
    return q_change(s, &x, "worklist visit", err) < 0 ? -1 : 0;
}

typedef struct cols_ctx {
    store_cols_fn fn;
    void *ctx;
} cols_ctx;

static int cols_row(void *ctx, sqlite3_stmt *st)
{
    cols_ctx *c = ctx;
    const char *v[8];
    int n = sqlite3_column_count(st);
    if (n > 8)
        n = 8;
    for (int i = 0; i < n; i++)
        v[i] = col_text(st, i);
    return c->fn(c->ctx, v, n);
}

static int64_t program_rows(store *s, int id, store_cols_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, id, &x, err))
        return -1;
    cols_ctx c = {fn, ctx};
    return q_rows(s, &x, fixed[id].what, cols_row, &c, err);
}

int64_t store_program_funnel(store *s, store_cols_fn fn, void *ctx, fhir_error *err)
{
    return program_rows(s, Q_PROGRAM_FUNNEL, fn, ctx, err);
}

int64_t store_program_referrals(store *s, store_cols_fn fn, void *ctx, fhir_error *err)
{
    return program_rows(s, Q_PROGRAM_REFERRALS, fn, ctx, err);
}

int64_t store_program_cds(store *s, store_cols_fn fn, void *ctx, fhir_error *err)
{
    return program_rows(s, Q_PROGRAM_CDS, fn, ctx, err);
}

int64_t store_program_declines(store *s, store_cols_fn fn, void *ctx, fhir_error *err)
{
    return program_rows(s, Q_PROGRAM_DECLINES, fn, ctx, err);
}

/* ---- work counters and query plans (tests) ------------------------------------------------- */

/* The statements the daemon runs for each patient it ingests, screens and proposes for, and
 * the sender's and write-back's per-referral ones: each must find its rows by an index, so
 * that their cost does not grow with the store (store_plan_each; test_store checks). */
static const int per_patient[] = {
    Q_RES_UPSERT, Q_RES_PUT, Q_RES_EACH, Q_RES_GET, Q_RES_DELETE, Q_HELD_MARK, Q_HELD_RELEASE,
    Q_HELD_CLEAR, Q_DIRTY_MARK, Q_DIRTY_NEXT, Q_DIRTY_CLEAR, Q_VERDICT_PRUNED, Q_VERDICT_HEAD,
    Q_VERDICT_GET, Q_VERDICT_PUT, Q_VERDICT_PUT_HEME, Q_WL_PUT, Q_WL_PUT_JSON, Q_VERDICT_HEME,
    Q_VERDICT_DELETE,
    Q_REF_INSERT, Q_REF_VERDICT_UNSHARE, Q_REF_GET, Q_REF_GET_PLACER, Q_REF_FIND, Q_REF_STATE, Q_REF_IDS, Q_REF_UPDATE, Q_REF_TEXTS,
    Q_AUDIT_INSERT, Q_AUDIT_ACTOR, Q_AUDIT_EACH_REF, Q_AUDIT_COUNT_REF, Q_OUTBOX_ADD,
    Q_OUTBOX_UPDATE, Q_NOTIFY_EVENT, Q_WL_GET, Q_WL_DECLINED_FOR, Q_CURSOR_GET, Q_CURSOR_PUT,
};
/* store_referral_each as propose and the sender call it: by patient (summary or not) */
static const int per_patient_each[] = {
    EACH_PATIENT, EACH_PATIENT | EACH_SUMMARY, EACH_PATIENT | EACH_STATE,
    EACH_PATIENT | EACH_STATE | EACH_SUMMARY,
};

static int plan_of(store *s, const char *sql, store_plan_fn fn, void *ctx, fhir_error *err)
{
    char *eqp = sqlite3_mprintf("EXPLAIN QUERY PLAN %s", sql);
    if (!eqp)
        abort();
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, eqp, -1, &st, NULL);
    sqlite3_free(eqp);
    if (rc != SQLITE_OK)
        return sql_fail(s, err, "query plan");
    int ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *detail = col_text(st, 3);
        if (fn(ctx, sql, detail ? detail : ""))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        ret = sql_fail(s, err, "query plan");
    sqlite3_finalize(st);
    return ret;
}

int store_plan_each(store *s, store_plan_fn fn, void *ctx, fhir_error *err)
{
    for (size_t i = 0; i < sizeof per_patient / sizeof per_patient[0]; i++)
        if (plan_of(s, fixed[per_patient[i]].sql, fn, ctx, err))
            return -1;
    for (size_t i = 0; i < sizeof per_patient_each / sizeof per_patient_each[0]; i++) {
        char sql[EACH_SQL_MAX];
        each_sql(per_patient_each[i], sql);
        if (plan_of(s, sql, fn, ctx, err))
            return -1;
    }
    return 0;
}

void store_work_take(store *s, store_work *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < Q_SLOTS; i++) {
        sqlite3_stmt *st = s->cache[i];
        if (!st)
            continue;
        out->vm_steps += sqlite3_stmt_status(st, SQLITE_STMTSTATUS_VM_STEP, 1);
        out->fullscan_steps += sqlite3_stmt_status(st, SQLITE_STMTSTATUS_FULLSCAN_STEP, 1);
        out->sorts += sqlite3_stmt_status(st, SQLITE_STMTSTATUS_SORT, 1);
    }
}

/* ---- a center's intake (gateway/intake) ------------------------------------------------------ */

typedef struct intake_res_ctx {
    store_intake_res_fn fn;
    void *ctx;
} intake_res_ctx;

static int intake_res_row(void *ctx, sqlite3_stmt *st)
{
    intake_res_ctx *c = ctx;
    store_intake_res r = {.id = sqlite3_column_int64(st, 0), .type = col_text(st, 1),
                          .referral_id = sqlite3_column_int64(st, 2), .client_id = col_text(st, 3),
                          .version = sqlite3_column_int64(st, 4), .updated_ms = sqlite3_column_int64(st, 5),
                          .json = col_text(st, 6)};
    return c->fn ? c->fn(c->ctx, &r) : 0;
}

int store_intake_res_new(store *s, const char *type, const char *client_id, int64_t *id_out, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_RES_NEW, &x, err))
        return -1;
    bind_text(x.st, 1, type);
    bind_text(x.st, 2, client_id);
    sqlite3_bind_int64(x.st, 3, fhir_clock_now_ms());
    if (q_run(s, &x, "intake resource add", err))
        return -1;
    *id_out = sqlite3_last_insert_rowid(s->db);
    return 0;
}

int store_intake_res_put(store *s, int64_t id, int64_t referral_id, int64_t version, int64_t updated_ms,
                         const char *json, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_RES_PUT, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, id);
    if (referral_id > 0)
        sqlite3_bind_int64(x.st, 2, referral_id);
    sqlite3_bind_int64(x.st, 3, version);
    sqlite3_bind_int64(x.st, 4, updated_ms);
    bind_text(x.st, 5, json);
    int n = q_change(s, &x, "intake resource write", err);
    if (n == 0)
        return fhir_error_set(err, "intake resource %lld does not exist", (long long)id);
    return n < 0 ? -1 : 0;
}

int store_intake_res_get(store *s, const char *type, int64_t id, store_intake_res_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_RES_GET, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, id);
    bind_text(x.st, 2, type);
    intake_res_ctx c = {fn, ctx};
    int64_t n = q_rows(s, &x, "intake resource read", intake_res_row, &c, err);
    return n < 0 ? -1 : n > 0;
}

int64_t store_intake_res_history(store *s, const char *type, int64_t id, int64_t limit, store_intake_res_fn fn,
                                 void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_RES_HISTORY, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, id);
    bind_text(x.st, 2, type);
    sqlite3_bind_int64(x.st, 3, limit > 0 ? limit : -1);
    intake_res_ctx c = {fn, ctx};
    return q_rows(s, &x, "intake resource history", intake_res_row, &c, err);
}

int store_task_seen_get(store *s, int64_t referral_id, char *out, size_t n, fhir_error *err)
{
    if (n)
        out[0] = '\0';
    q x;
    if (q_take(s, Q_TASK_SEEN_GET, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, referral_id);
    text_out o = {out, n, false};
    if (q_rows(s, &x, "task version read", text_out_row, &o, err) < 0)
        return -1;
    return o.found;
}

int store_task_seen_put(store *s, int64_t referral_id, const char *version, fhir_error *err)
{
    q x;
    if (q_take(s, Q_TASK_SEEN_PUT, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, referral_id);
    bind_text(x.st, 2, version);
    sqlite3_bind_int64(x.st, 3, fhir_clock_now_ms());
    return q_run(s, &x, "task version write", err);
}

int64_t store_intake_res_by_ident(store *s, const char *type, const char *system, const char *value, int64_t limit,
                                  store_intake_res_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_RES_IDENT, &x, err))
        return -1;
    bind_text(x.st, 1, type);
    bind_text(x.st, 2, system);
    bind_text(x.st, 3, value);
    sqlite3_bind_int64(x.st, 4, limit > 0 ? limit : -1);
    intake_res_ctx c = {fn, ctx};
    return q_rows(s, &x, "intake identifier search", intake_res_row, &c, err);
}

int64_t store_intake_res_since(store *s, const char *type, int64_t from_ms, int64_t to_ms, int64_t limit,
                               store_intake_res_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_RES_SINCE, &x, err))
        return -1;
    bind_text(x.st, 1, type);
    sqlite3_bind_int64(x.st, 2, from_ms);
    sqlite3_bind_int64(x.st, 3, to_ms > 0 ? to_ms : INT64_MAX);
    sqlite3_bind_int64(x.st, 4, limit > 0 ? limit : -1);
    intake_res_ctx c = {fn, ctx};
    return q_rows(s, &x, "intake resource search", intake_res_row, &c, err);
}

int store_intake_ident_add(store *s, int64_t resource_id, const char *type, const char *system, const char *value,
                           fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_IDENT_ADD, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, resource_id);
    bind_text(x.st, 2, type);
    bind_text(x.st, 3, system ? system : "");
    bind_text(x.st, 4, value);
    return q_run(s, &x, "intake identifier add", err);
}

typedef struct intake_ref_ctx {
    store_intake_ref_fn fn;
    void *ctx;
} intake_ref_ctx;

static int intake_ref_row(void *ctx, sqlite3_stmt *st)
{
    intake_ref_ctx *c = ctx;
    store_intake_ref r = {.id = sqlite3_column_int64(st, 0), .client_id = col_text(st, 1),
                          .sr_id = sqlite3_column_int64(st, 2), .task_id = sqlite3_column_int64(st, 3),
                          .priority = col_text(st, 4), .urank = sqlite3_column_int(st, 5),
                          .task_status = col_text(st, 6), .business_status = col_text(st, 7),
                          .reason = col_text(st, 8), .consult = col_text(st, 9),
                          .received_ms = sqlite3_column_int64(st, 10), .updated_ms = sqlite3_column_int64(st, 11)};
    return c->fn ? c->fn(c->ctx, &r) : 0;
}

int store_intake_ref_add(store *s, const store_intake_ref *r, int64_t *id_out, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_REF_ADD, &x, err))
        return -1;
    bind_text(x.st, 1, r->client_id);
    sqlite3_bind_int64(x.st, 2, r->sr_id);
    sqlite3_bind_int64(x.st, 3, r->task_id);
    bind_text(x.st, 4, r->priority);
    sqlite3_bind_int(x.st, 5, r->urank);
    bind_text(x.st, 6, r->task_status);
    bind_text(x.st, 7, r->business_status);
    sqlite3_bind_int64(x.st, 8, r->received_ms ? r->received_ms : fhir_clock_now_ms());
    if (q_change(s, &x, "intake referral add", err) < 0)
        return -1;
    *id_out = sqlite3_last_insert_rowid(s->db);
    return 0;
}

int store_intake_ref_get(store *s, int64_t id, store_intake_ref_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_REF_GET, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, id);
    intake_ref_ctx c = {fn, ctx};
    int64_t n = q_rows(s, &x, "intake referral read", intake_ref_row, &c, err);
    return n < 0 ? -1 : n > 0;
}

int store_intake_ref_by_task(store *s, int64_t task_id, store_intake_ref_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_REF_BY_TASK, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, task_id);
    intake_ref_ctx c = {fn, ctx};
    int64_t n = q_rows(s, &x, "intake referral read", intake_ref_row, &c, err);
    return n < 0 ? -1 : n > 0;
}

int64_t store_intake_ref_list(store *s, bool open_only, int64_t limit, store_intake_ref_fn fn, void *ctx,
                              fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_REF_LIST, &x, err))
        return -1;
    sqlite3_bind_int(x.st, 1, open_only ? 1 : 0);
    sqlite3_bind_int64(x.st, 2, limit > 0 ? limit : -1);
    intake_ref_ctx c = {fn, ctx};
    return q_rows(s, &x, "intake inbox", intake_ref_row, &c, err);
}

int store_intake_ref_update(store *s, int64_t id, const char *task_status, const char *business_status,
                            const char *reason, const char *consult, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_REF_UPDATE, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, id);
    bind_text(x.st, 2, task_status);
    bind_text(x.st, 3, business_status);
    bind_text(x.st, 4, reason);
    bind_text(x.st, 5, consult);
    sqlite3_bind_int64(x.st, 6, fhir_clock_now_ms());
    int n = q_change(s, &x, "intake referral update", err);
    if (n == 0)
        return fhir_error_set(err, "intake referral %lld does not exist", (long long)id);
    return n < 0 ? -1 : 0;
}

int64_t store_intake_ref_count(store *s, const char *task_status)
{
    q x;
    fhir_error e;
    if (q_take(s, Q_INTAKE_REF_COUNT, &x, &e))
        return -1;
    bind_text(x.st, 1, task_status);
    int64_t n = -1;
    if (sqlite3_step(x.st) == SQLITE_ROW)
        n = sqlite3_column_int64(x.st, 0);
    q_give(s, &x);
    return n;
}

typedef struct intake_states_ctx {
    store_intake_state_fn fn;
    void *ctx;
} intake_states_ctx;

static int intake_states_row(void *ctx, sqlite3_stmt *st)
{
    intake_states_ctx *c = ctx;
    return c->fn(c->ctx, col_text(st, 0), sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2));
}

int64_t store_intake_ref_states(store *s, store_intake_state_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_REF_STATES, &x, err))
        return -1;
    intake_states_ctx c = {fn, ctx};
    return q_rows(s, &x, "intake referral states", intake_states_row, &c, err);
}

int store_intake_audit(store *s, const store_actor *who, const char *action, int64_t intake_id, const char *from_state,
                       const char *to_state, const char *detail, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_AUDIT, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, fhir_clock_now_ms());
    bind_text(x.st, 2, who && who->name ? who->name : "system");
    bind_text(x.st, 3, action);
    sqlite3_bind_int64(x.st, 4, intake_id);
    bind_text(x.st, 5, from_state);
    bind_text(x.st, 6, to_state);
    bind_text(x.st, 7, detail);
    if (who && who->user_id > 0)
        sqlite3_bind_int64(x.st, 8, who->user_id);
    bind_text(x.st, 9, who ? who->role : NULL);
    bind_text(x.st, 10, who ? who->source : NULL);
    bind_text(x.st, 11, who ? who->reason : NULL);
    return q_run(s, &x, "audit insert", err);
}

int64_t store_intake_audit_list(store *s, int64_t intake_id, store_audit_row_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_AUDIT_LIST, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, intake_id);
    audit_since_ctx c = {fn, ctx};
    return q_rows(s, &x, "audit read", audit_since_row, &c, err);
}

int store_intake_token_put(store *s, const unsigned char hash[STORE_SECRET_HASH], const char *client_id,
                           int64_t exp_ms, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_TOKEN_PRUNE, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, fhir_clock_now_ms());
    if (q_run(s, &x, "intake token prune", err))
        return -1;
    if (q_take(s, Q_INTAKE_TOKEN_PUT, &x, err))
        return -1;
    sqlite3_bind_blob(x.st, 1, hash, STORE_SECRET_HASH, SQLITE_TRANSIENT);
    bind_text(x.st, 2, client_id);
    sqlite3_bind_int64(x.st, 3, exp_ms);
    return q_run(s, &x, "intake token add", err);
}

int store_intake_token_get(store *s, const unsigned char hash[STORE_SECRET_HASH], char *client_out, size_t n,
                           fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_TOKEN_GET, &x, err))
        return -1;
    sqlite3_bind_blob(x.st, 1, hash, STORE_SECRET_HASH, SQLITE_TRANSIENT);
    sqlite3_bind_int64(x.st, 2, fhir_clock_now_ms());
    int rc = sqlite3_step(x.st), ret = 0;
    if (rc == SQLITE_ROW) {
        copy_col(x.st, 0, client_out, n);
        ret = 1;
    } else if (rc != SQLITE_DONE) {
        ret = sql_fail(s, err, "intake token read");
    }
    q_give(s, &x);
    return ret;
}

int64_t store_intake_res_of_referral(store *s, int64_t referral_id, store_intake_res_fn fn, void *ctx, fhir_error *err)
{
    q x;
    if (q_take(s, Q_INTAKE_RES_OF_REF, &x, err))
        return -1;
    sqlite3_bind_int64(x.st, 1, referral_id);
    intake_res_ctx c = {fn, ctx};
    return q_rows(s, &x, "intake referral resources", intake_res_row, &c, err);
}

/* The schema's statements as SQLite holds them, in its order (sqlite_master by rowid; SQLite's
 * own objects left out), each followed by ";\n". */
static int schema_dump(sqlite3 *db, fhir_buf *out, fhir_error *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT "
                               "LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid",
                           -1, &st, NULL) != SQLITE_OK)
        return fhir_error_set(err, "schema: %s", sqlite3_errmsg(db));
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        fhir_buf_puts(out, col_text(st, 0));
        fhir_buf_puts(out, ";\n");
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return fhir_error_set(err, "schema: %s", sqlite3_errmsg(db));
    return out->overflow ? fhir_error_set(err, "schema: larger than the buffer's cap") : 0;
}

/* Runs sql on db; 0, or -1 with err set to SQLite's message after what. */
static int db_exec(sqlite3 *db, const char *sql, const char *what, fhir_error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    fhir_error_set(err, "%s: %s", what, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
}

int store_schema_sql(fhir_buf *out, bool from_snapshot, fhir_error *err)
{
    fhir_error_clear(err);
    if (from_snapshot && STORE_SNAPSHOT_VERSION != N_MIGRATIONS)
        return fhir_error_set(err, "the schema snapshot is of version %d, the steps make %d",
                              STORE_SNAPSHOT_VERSION, N_MIGRATIONS);
    sqlite3 *db;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK)
        abort(); /* out of memory */
    int rc = 0;
    if (from_snapshot) {
        rc = db_exec(db, store_snapshot_sql, "the schema snapshot", err);
    } else {
        for (int v = 0; v < N_MIGRATIONS && !rc; v++)
            if (db_exec(db, migrations[v].sql, migrations[v].what, err)) {
                fhir_error_prefix(err, "migration %d -> %d", v, v + 1);
                rc = -1;
            }
        /* a step that writes rows on a new database would be lost by the snapshot */
        sqlite3_stmt *st;
        if (!rc && sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type = 'table' "
                                          "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
                                      -1, &st, NULL) == SQLITE_OK) {
            while (!rc && sqlite3_step(st) == SQLITE_ROW) {
                char count[256];
                snprintf(count, sizeof count, "SELECT count(*) FROM \"%s\"", col_text(st, 0));
                sqlite3_stmt *c;
                if (sqlite3_prepare_v2(db, count, -1, &c, NULL) == SQLITE_OK &&
                    sqlite3_step(c) == SQLITE_ROW && sqlite3_column_int64(c, 0) != 0)
                    rc = fhir_error_set(err, "a step writes rows into %s on a new database",
                                        col_text(st, 0));
                sqlite3_finalize(c);
            }
            sqlite3_finalize(st);
        }
    }
    if (!rc)
        rc = schema_dump(db, out, err);
    sqlite3_close(db);
    return rc;
}
