/* sender — delivers approved referrals to their centers exactly once, and follows the
 * centers' Tasks (closed loop).
 *
 * Delivery (sender_pass):
 *   1. Recovery first: every referral left in `sending` (a crash, or an ambiguous failure
 *      such as a timeout or a reset after the request was written) is looked up at its center
 *      by the placer identifier (GET ServiceRequest?identifier=system|value and Task?...)
 *      before anything is re-sent; when both are there it becomes `sent`.
 *   2. Then the due `approved` referrals: each is moved to `sending` durably, then its frozen
 *      payload (a transaction Bundle whose entries are all conditional creates) is POSTed.
 *   Outcomes: 200 with a transaction-response -> `sent` (center references stored);
 *   transient (no response, 408, 429, 5xx) -> stays `sending`, attempt recorded, next attempt
 *   after a capped exponential backoff, and the rest of that center's queue waits for the
 *   next pass (other centers go on: one queue per destination); permanent (other 4xx, e.g.
 *   422 validation or 412 duplicate identifiers) -> `failed` with the response kept.
 *   Nothing undelivered is ever deleted; a failed referral waits for an operator `retry`.
 *   An approved referral whose texts cannot be composed (referral.h: refer_compose_cause,
 *   e.g. the patient no longer cached, its center no longer a candidate) or whose Bundle
 *   cannot be built from its package is not sent and not held silently: the attempt is
 *   recorded (attempts + 1, last_error "could not be prepared: <cause in words>", audited
 *   "attempt" by "sender", event=referral.unprepared) and it is tried again after the
 *   backoff (capped, never a hot loop), when the cause may have cleared (a new screening,
 *   the centers reloaded).
 *
 * Cancellation at the center: a referral marked for it (refer_approve of a re-route that
 * replaces it, propose.h, or a person cancelling a referral already at its center,
 * refer_do) is cancelled at its center in the same pass, on its center's queue after
 * the recovery lookups: GET its Task; already over there -> recorded; otherwise PUT it back
 * with status `cancelled` (If-Match its version) -> `cancelled` here. A failure is retried
 * on a later pass after the backoff. An approved re-route is not sent while the referral it
 * replaces is still open: it waits for the pass after the cancellation.
 *
 * Closed loop (sender_poll): for each referral in sent/accepted/scheduled, GET its Task at the
 * center and apply Task.status + businessStatus (refer_apply_task).
 *
 * Asynchronous, on one event_base (the daemon's loop, or a private one for the CLI): one queue
 * per center, each with its own fhir_client, at most max_in_flight referrals of a center in
 * flight, so a center that hangs or is down delays only its own queue. A pass loads the queue
 * of every center that is idle (a center still draining from an earlier pass keeps its queue;
 * its new referrals wait for a later pass) and returns at once; the queues drain from the
 * loop. Within a queue the `sending` referrals (recovery) come first and nothing `approved`
 * starts while a recovery lookup is pending. State transitions are durable before and after
 * each HTTP exchange (referral.h); the store is written from the loop (local SQLite).
 * The Task poller works the same way, with its own lane per center and at most
 * poll_max_per_pass Tasks per pass (round robin over the open referrals).
 * Single-threaded. */
#ifndef SENDER_H
#define SENDER_H

#include <stdbool.h>
#include <stdint.h>

#include "centers.h"
#include "fhir_error.h"
#include "fhir_retry.h"
#include "store.h"

struct event_base;

typedef struct sender_opts {
    struct event_base *base;      /* borrowed; NULL = a private base (sender_pass/poll) */
    const centers_dir *centers;   /* borrowed; must outlive the sender */
    fhir_retry_policy retry;      /* per exchange (fhir_client); zero = client defaults */
    long timeout_ms;              /* per HTTP attempt; 0 = 30 s */
    int64_t backoff_base_ms;      /* between passes after a transient failure; 0 = 2 s */
    int64_t backoff_cap_ms;       /* 0 = 5 min */
    const char *ca_file;          /* TLS trust for the centers; NULL = system */
    unsigned max_in_flight;       /* referrals in flight per center; 0 = 1 */
    unsigned poll_in_flight;      /* Task reads in flight per center; 0 = 2 */
    size_t poll_max_per_pass;     /* Tasks read per poll pass; 0 = 500 */
} sender_opts;

typedef struct sender_stats {
    unsigned sent;        /* delivered in this pass (new sends) */
    unsigned recovered;   /* found already at the center (after crash/ambiguity) */
    unsigned transient;   /* transient failures (will retry) */
    unsigned failed;      /* moved to failed (dead letter) */
    unsigned waiting;     /* due later, behind a failing center, or without payload */
    unsigned polled;      /* Tasks read */
    unsigned changed;     /* referrals whose state followed the Task */
    unsigned cancelled;   /* cancelled at their centers (an approved re-route) */
    unsigned unprepared;  /* approved but their texts or Bundle cannot be made (recorded,
                           * tried again after the backoff; also counted as waiting) */
} sender_stats;

typedef struct sender sender;

/* Borrowed store and directory. Caller frees with sender_free(). */
sender *sender_new(store *s, const sender_opts *opts, fhir_error *err);
void sender_free(sender *snd);

/* Asynchronous delivery pass: loads the idle centers' queues (recovery, then due approved
 * referrals) and returns; the work runs on the event loop. -1 with err when the store cannot
 * be read. Local failures during the drain are logged (event=sender.store_failed). */
int sender_pass_start(sender *snd, fhir_error *err);
/* Asynchronous closed-loop pass (bounded, see top). */
int sender_poll_start(sender *snd, fhir_error *err);
/* true while any exchange of the sender is in flight. */
bool sender_busy(const sender *snd);

/* Synchronous passes (CLI): only for a sender on its own base (opts.base NULL); run that base
 * until every queue is idle. Add to *st. Return 0, or -1 with err for local failures (store);
 * remote failures are recorded per referral. */
int sender_pass(sender *snd, sender_stats *st, fhir_error *err);
int sender_poll(sender *snd, sender_stats *st, fhir_error *err);

/* Referrals still to deliver (approved + sending); -1 on error. */
int64_t sender_outstanding(store *s, fhir_error *err);

#endif
