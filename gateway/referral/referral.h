/* referral — the referral record and its state machine, kept in the store.
 *
 *   pending_approval -> approved -> sending -> sent -> accepted | declined | scheduled |
 *   completed | cancelled, plus failed (dead letter, last response kept).
 *
 * Allowed transitions (anything else is refused with an error naming both states):
 *   pending_approval -> approved | cancelled
 *   approved         -> sending | cancelled
 *   sending          -> sent | failed
 *   sent             -> accepted | declined | scheduled | completed | cancelled | failed
 *   accepted         -> scheduled | declined | completed | cancelled | failed
 *   scheduled        -> completed | declined | cancelled | failed
 *   failed           -> approved (retry) | cancelled
 *   declined, completed, cancelled: terminal
 * A referral in `sending` may already be at the center (crash or ambiguous failure), so it
 * cannot be cancelled locally; the sender resolves it to sent or failed first.
 *
 * Every transition is one SQLite transaction (WAL, synchronous=FULL; the *_in_tx variants join
 * the caller's) that updates the row and appends an audit row (actor, action, from, to,
 * detail, time). The placer identifier is deterministic (refer_placer_id) and is stored when
 * the referral is created, i.e. before anything is sent. */
#ifndef REFERRAL_H
#define REFERRAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_error.h"
#include "store.h"

typedef enum refer_state {
    REFER_PENDING_APPROVAL = 0,
    REFER_APPROVED,
    REFER_SENDING,
    REFER_SENT,
    REFER_ACCEPTED,
    REFER_DECLINED,
    REFER_SCHEDULED,
    REFER_COMPLETED,
    REFER_CANCELLED,
    REFER_FAILED,
    REFER_N_STATES,
} refer_state;

/* "pending_approval", ... Static string. */
const char *refer_state_name(refer_state s);
/* 0 and *out, or -1 when the name is unknown. */
int refer_state_parse(const char *name, refer_state *out);
bool refer_transition_allowed(refer_state from, refer_state to);
bool refer_state_terminal(refer_state s);

typedef enum refer_mode {
    REFER_MODE_APPROVAL = 0, /* default: a clinician approves each referral */
    REFER_MODE_AUTO,         /* standing orders: approved on creation by actor "auto" */
} refer_mode;

/* Placer identifier: "CG-" + 32 hex digits of SHA-256("cartgate-placer-v1", site, patient,
 * the sorted de-duplicated indication keys, center). out must hold REFER_PLACER_MAX bytes.
 * Returns 0, -1 with err on empty inputs. */
#define REFER_PLACER_MAX 40
/* Byte cap of a referral's joined indication keys. */
#define REFER_INDICATIONS_MAX (64u * 1024u)
int refer_placer_id(const char *site_id, const char *patient_id,
                    const char *const *indications, size_t n_indications,
                    const char *center_id, char out[REFER_PLACER_MAX], fhir_error *err);
/* The sorted, de-duplicated, comma-joined indication keys as stored in a referral (at most
 * REFER_INDICATIONS_MAX bytes). Caller frees; NULL with err on an empty key or a comma. */
char *refer_join_indications(const char *const *indications, size_t n, fhir_error *err);

/* What a referral is made of. Strings are borrowed for the duration of the call. */
typedef struct refer_request {
    const char *site_id;
    const char *patient_id;            /* pseudonymous patient id */
    const char *center_id;
    const char *const *indications;    /* eligible/possible "product:indication" keys */
    size_t n_indications;
    const char *urgency;               /* routine | urgent | asap | stat (FHIR request-priority) */
    const char *explanation;           /* human-readable eligibility summary */
    const char *verdict_json;          /* machine-readable verdict */
    const char *route_json;            /* route_explain_json output */
    const char *payload;               /* transaction Bundle JSON (may be set later) */
    const char *package;               /* what the Bundle is built from (propose.h) */
    refer_mode mode;
    const char *actor;                 /* who created it ("screener", a user name) */
    /* the episode (propose.h); zero values: episode 1, no predecessor, no marker, placer
     * computed by refer_placer_id */
    int64_t episode;                   /* the patient's episode this referral belongs to */
    int64_t supersedes;                /* a re-route proposal: the referral it replaces */
    const char *episode_marker;        /* the disease marker the episode opened with */
    const char *placer_id;             /* chosen by the caller (refer_placer_unique) */
} refer_request;

/* Creates the referral (state pending_approval; in auto mode immediately approved, two audit
 * rows). Idempotent: a second call with the same placer identifier returns the existing id
 * and *created = false without changing it. Returns 0 or -1 with err. */
int refer_create(store *s, const refer_request *req, int64_t *id_out, bool *created,
                 fhir_error *err);
/* The same inside the caller's open store transaction (store_begin), so the referral commits
 * with whatever caused it (propose.h); nothing is logged. -1 when no transaction is open. */
int refer_create_in_tx(store *s, const refer_request *req, int64_t *id_out, bool *created,
                       fhir_error *err);

/* A row of the referrals table. Strings are malloc'd; release with refer_record_free(). */
typedef struct refer_record {
    int64_t id;
    char *placer_id, *site_id, *patient_id, *center_id, *indications, *urgency, *mode;
    refer_state state;
    char *explanation, *verdict_json, *route_json, *payload;
    int attempts;
    int64_t next_attempt_ms;
    int last_status;
    char *last_error, *last_response;
    char *center_sr_ref, *center_task_ref, *task_status, *business_status;
    int64_t created_ms, updated_ms;
    int64_t episode;             /* the patient's episode (1, 2, ...) */
    int64_t supersedes;          /* the referral this re-route replaces; 0 none */
    char *episode_marker;        /* the disease marker the episode opened with; may be NULL */
    char *ended;                 /* REFER_ENDED_WITHDRAWN | REFER_ENDED_SUPERSEDED | NULL */
    int64_t cancel_requested_ms; /* > 0: the sender is to cancel it at its center */
    char *package;               /* what the payload is built from until it is stored */
    bool payload_built;          /* refer_get built payload from package (not stored yet) */
    int compose_cause;           /* refer_compose_cause: why its texts could not be composed
                                  * when last read (REFER_COMPOSE_OK: they were, or none
                                  * tried) */
    char *compose_error;         /* that cause in plain words, with what a person can do */
} refer_record;

/* Why a proposal stored without its texts could not get them when it was read (refer_get);
 * recorded on the row (compose_cause, compose_error), audited as "compose-failed" by the
 * actor "composer" when it changes, and cleared once they are composed or a re-screen
 * changes the proposal. REFER_COMPOSE_VERDICT_CHANGED withdraws a proposal still pending
 * approval, as a re-screen would (cancelled, ended = withdrawn, actor "composer"); a referral
 * already approved stays approved and is not sent (sender.h) until its texts compose. */
typedef enum refer_compose_cause {
    REFER_COMPOSE_OK = 0,
    REFER_COMPOSE_NOT_CACHED,      /* nothing of the patient (or no Patient) is cached any more */
    REFER_COMPOSE_VERDICT_CHANGED, /* the verdict as screened now no longer calls for it */
    REFER_COMPOSE_CENTER_GONE,     /* its center is no longer among the ranked candidates */
    REFER_COMPOSE_TOO_LARGE,       /* the package is larger than its cap */
    REFER_COMPOSE_NOT_LOADED,      /* criteria, terminology tables or centers not loaded */
    REFER_COMPOSE_OTHER,           /* anything else (a store error, a routing failure) */
    REFER_COMPOSE_N_CAUSES,
} refer_compose_cause;
/* "ok", "patient_not_cached", "verdict_changed", "center_not_candidate", "package_too_large",
 * "not_loaded", "other". Static string. */
const char *refer_compose_cause_name(refer_compose_cause c);
/* A few plain words for lists ("its center is no longer a candidate"). Static string. */
const char *refer_compose_cause_words(refer_compose_cause c);
/* 0 and *out, or -1 when the name is unknown (NULL: REFER_COMPOSE_OK). */
int refer_compose_cause_parse(const char *name, refer_compose_cause *out);
/* Byte cap of a recorded compose_error. */
#define REFER_COMPOSE_ERROR_MAX 600u

/* Why a referral ended without closing its patient's episode (refer_record.ended). */
#define REFER_ENDED_WITHDRAWN "withdrawn"   /* a proposal the screener took back */
#define REFER_ENDED_SUPERSEDED "superseded" /* replaced by an approved re-route */

void refer_record_free(refer_record *r);
/* 1 found (caller frees *out with refer_record_free), 0 not found, -1 error. A proposal the
 * screening stored without its texts (explanation, route_json and package NULL, no payload:
 * propose_opts.defer_texts) gets them composed first by the composer the process registered
 * (refer_set_composer; none: they stay NULL), which stores them, so the row is frozen from
 * then on. A referral whose payload is not stored yet gets it built from its package
 * (propose_package_payload: what would be sent, payload_built set); when that cannot be
 * built, payload stays NULL. When the composer fails, the cause is recorded on the row
 * (refer_compose_cause) and the row is read back with it; a row that ended (terminal) with a
 * recorded cause is not composed again. */
int refer_get(store *s, int64_t id, refer_record *out, fhir_error *err);
/* Composes and stores the texts of a proposal stored without them (r: the row as stored,
 * borrowed for the call); 0, or -1 with err and *cause (the row is then read without them,
 * the cause recorded on it: refer_compose_cause). */
typedef int (*refer_compose_fn)(void *ud, store *s, const refer_record *r, refer_compose_cause *cause,
                                fhir_error *err);
/* The process's composer (one per process: the daemon's, or the CLI's when it has the
 * configuration); fn NULL removes it. ud is borrowed until it is replaced. */
void refer_set_composer(refer_compose_fn fn, void *ud);
/* Does the row wait for its texts (stored by a screening that deferred them)? */
bool refer_texts_pending(const refer_record *r);
/* Stores the payload refer_get built (r->payload_built) before it is first sent, without an
 * audit row (nothing changes but where the Bundle is kept). 0, or -1 with err. */
int refer_keep_payload(store *s, const refer_record *r, fhir_error *err);
int refer_get_by_placer(store *s, const char *placer_id, refer_record *out, fhir_error *err);
/* Only the id of a placer identifier: 1 and *id_out, 0 not found, -1 error. */
int refer_find(store *s, const char *placer_id, int64_t *id_out, fhir_error *err);

/* Calls fn for each referral (optionally only in `state`, when state_filter >= 0, and/or
 * only for center_id when non-NULL), ordered by id. The record is borrowed for the call;
 * fn returns non-zero to stop. Returns the number visited or -1. */
typedef int (*refer_each_fn)(void *ctx, const refer_record *r);
int64_t refer_each(store *s, int state_filter, const char *center_id, refer_each_fn fn,
                   void *ctx, fhir_error *err);
/* The same with every filter; a patient's referrals are found by index, not by a scan. */
typedef struct refer_filter {
    int state;              /* refer_state, or -1 for any */
    const char *center_id;  /* NULL: any */
    const char *patient_id; /* NULL: any */
    bool summary;           /* explanation, verdict_json, route_json, payload and
                             * last_response left unread (NULL) */
} refer_filter;
int64_t refer_list(store *s, const refer_filter *f, refer_each_fn fn, void *ctx,
                   fhir_error *err);
/* Ids and placer ids of one patient's referrals in one state (two columns, by index).
 * placer_id is borrowed for the call; fn returns non-zero to stop. Rows visited or -1. */
typedef int (*refer_id_fn)(void *ctx, int64_t id, const char *placer_id);
int64_t refer_patient_ids(store *s, const char *patient_id, refer_state state,
                          refer_id_fn fn, void *ctx, fhir_error *err);
/* Counts per state into counts[REFER_N_STATES]. */
int refer_count_by_state(store *s, int64_t counts[REFER_N_STATES], fhir_error *err);
/* The outbox: referrals approved or sending, and the oldest creation time among them (0 when
 * none). */
int refer_outbox_stats(store *s, int64_t *depth, int64_t *oldest_created_ms, fhir_error *err);
/* For every referral delivered at least once: ms from its creation to its first `sent`
 * audit row, passed to fn. Returns how many, or -1. */
int64_t refer_time_to_sent(store *s, void (*fn)(void *ctx, int64_t ms), void *ctx,
                           fhir_error *err);

/* The generic transition: refuses illegal moves ("referral 7: cannot go from completed to
 * approved"). detail (may be NULL) goes to the audit row. */
int refer_transition(store *s, int64_t id, refer_state to, const char *actor,
                     const char *detail, fhir_error *err);

/* A person's (or a service's) act on a referral, audited with who did it: name, user id,
 * role acted in, source address and reason (store_actor; the reason also becomes the audit
 * row's detail for decline and cancel). The log line names a user by id only.
 *   approve  pending_approval -> approved; approving a re-route proposal (supersedes set)
 *            also ends the referral it replaces in the same transaction: cancelled here
 *            when nothing of it can be at its center (pending_approval, approved, failed),
 *            otherwise marked for the sender to cancel at its center (Task.status
 *            cancelled; cancel_requested_ms) — the re-route is sent only after that
 *            (sender.h). Both audited with the approver.
 *   decline  pending_approval -> cancelled (the proposal is declined; a reason is required)
 *   cancel   -> cancelled (not while sending: the sender resolves that first); a referral at
 *            its center (sent, accepted, scheduled) stays as it is, marked for the sender
 *            (cancel_requested_ms, audited "cancel-requested" with the person), which sets its
 *            Task's status to cancelled at the center (If-Match) and then moves it to
 *            cancelled (sender.h), as for an approved re-route
 *   retry    failed -> approved; clears the attempt counter and backoff
 * Refusals set err->code: 409 for a move the state machine does not allow, 400 for a missing
 * or too long reason. */
typedef enum refer_act {
    REFER_ACT_APPROVE = 0,
    REFER_ACT_DECLINE,
    REFER_ACT_CANCEL,
    REFER_ACT_RETRY,
} refer_act;
#define REFER_REASON_MAX 2000u /* bytes of a person's reason */
/* "approve", "decline", "cancel", "retry". Static string. */
const char *refer_act_name(refer_act act);
/* 0 and *out, or -1 when the name is unknown. */
int refer_act_parse(const char *name, refer_act *out);
/* who (borrowed for the call, name required) acts on referral id. 0, or -1 with err. */
int refer_do(store *s, int64_t id, refer_act act, const store_actor *who, fhir_error *err);

/* Operator actions by a plain actor name (no user id, role or source): refer_do. */
int refer_approve(store *s, int64_t id, const char *actor, fhir_error *err);
int refer_cancel(store *s, int64_t id, const char *actor, const char *reason, fhir_error *err);
/* The same inside the caller's open store transaction; nothing is logged. */
int refer_cancel_in_tx(store *s, int64_t id, const char *actor, const char *reason,
                       fhir_error *err);
/* The screener takes back a proposal nobody acted on (pending_approval, or approved by the
 * standing order and never sent): cancelled with ended = withdrawn, which does not close the
 * episode. Inside the caller's open transaction. */
int refer_withdraw_in_tx(store *s, int64_t id, const char *reason, fhir_error *err);
/* Changes what an unsent proposal is made of (placer, center, indications, urgency,
 * explanation, verdict, route, payload from req; req->placer_id required) inside the
 * caller's open transaction; audited as "update" with the old and new center and
 * indications. Refused once the referral has gone to `sending`. */
int refer_update_in_tx(store *s, int64_t id, const refer_request *req, fhir_error *err);
/* Stores the episode marker of a referral (an adopted database's closed episode gets its
 * marker from the first verdict after the upgrade). Inside the caller's transaction. */
int refer_set_marker_in_tx(store *s, int64_t id, const char *marker, fhir_error *err);
/* true when the referral has ever been in `sending` (its audit says so): it may be at its
 * center. -1 on error (err). */
int refer_ever_sent(store *s, int64_t id, fhir_error *err);
/* A unique placer identifier for a new or changed proposal: refer_placer_id when no referral
 * holds it yet, otherwise the same hash with a counter (v2) until one is free, so no two
 * referrals ever carry the same identifier to a center. */
int refer_placer_unique(store *s, const char *site_id, const char *patient_id,
                        const char *const *indications, size_t n_indications,
                        const char *center_id, char out[REFER_PLACER_MAX], fhir_error *err);

int refer_retry(store *s, int64_t id, const char *actor, fhir_error *err);

/* Stores (or replaces) the payload; allowed until the referral is first sent
 * (pending_approval / approved / failed). */
int refer_set_payload(store *s, int64_t id, const char *payload, fhir_error *err);

/* ---- used by the sender ------------------------------------------------------------- */

/* Records one delivery attempt without changing state (attempts++, last status/error/
 * response, next attempt time) plus an audit row. */
int refer_record_attempt(store *s, int64_t id, int http_status, const char *error,
                         const char *response, int64_t next_attempt_ms, fhir_error *err);
/* sending -> sent, with the center's ServiceRequest/Task references. */
int refer_mark_sent(store *s, int64_t id, const char *sr_ref, const char *task_ref,
                    const char *detail, fhir_error *err);
/* sending -> failed (dead letter), keeping status, error and response. */
int refer_mark_failed(store *s, int64_t id, int http_status, const char *error,
                      const char *response, fhir_error *err);

/* Cancellation at the center (re-route): the referrals with a cancel request, in id order
 * (summary records, borrowed for the call). Rows visited or -1. */
int64_t refer_cancel_due(store *s, refer_each_fn fn, void *ctx, fhir_error *err);
/* The center has the Task cancelled (or it was gone: detail says so): -> cancelled, the
 * request cleared, Task.status stored. actor "sender". */
int refer_mark_cancelled_at_center(store *s, int64_t id, const char *detail, fhir_error *err);
/* Clears a cancel request that has nothing left to do (the referral reached a terminal state
 * some other way); audited. */
int refer_cancel_request_clear(store *s, int64_t id, const char *detail, fhir_error *err);

/* The referral state a center's Task implies: Task.status terminal values (completed,
 * rejected, cancelled, failed, entered-in-error) win; otherwise the BSeR businessStatus code
 * (2.0 sent, 3.0 accepted, 4.0 declined, 5.1.x scheduled, 6.0 cancelled, 7.0 completed);
 * otherwise Task.status (requested/received/ready -> sent, accepted/in-progress -> accepted).
 * Returns 0 and *out, or -1 when nothing is implied (on-hold, 5.2, unknown codes). */
int refer_state_from_task(const char *task_status, const char *business_status,
                          refer_state *out);
/* Applies a polled Task: stores status/businessStatus and moves the referral when the
 * implied state differs and the move is allowed (a backwards move such as completed ->
 * accepted is ignored and *changed stays false). actor = "center:<id>". */
int refer_apply_task(store *s, int64_t id, const char *task_status, const char *business_status,
                     bool *changed, fhir_error *err);
/* The same for an earlier version of the Task read from its history: at (the version's
 * meta.lastUpdated at the center, may be NULL) is named in the audit detail. */
int refer_apply_task_at(store *s, int64_t id, const char *task_status, const char *business_status,
                        const char *at, bool *changed, fhir_error *err);

#endif
