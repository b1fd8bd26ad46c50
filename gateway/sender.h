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
 *
 * Closed loop (sender_poll): for each referral in sent/accepted/scheduled, GET its Task at the
 * center and apply Task.status + businessStatus (refer_apply_task).
 *
 * Synchronous: each HTTP exchange runs to completion (the client retries transient failures
 * within one exchange per its retry policy). Single-threaded. */
#ifndef SENDER_H
#define SENDER_H

#include <stdint.h>

#include "centers.h"
#include "fhir_error.h"
#include "fhir_retry.h"
#include "store.h"

typedef struct sender_opts {
    const centers_dir *centers;   /* borrowed; must outlive the sender */
    fhir_retry_policy retry;      /* per exchange (fhir_client); zero = client defaults */
    long timeout_ms;              /* per HTTP attempt; 0 = 30 s */
    int64_t backoff_base_ms;      /* between passes after a transient failure; 0 = 2 s */
    int64_t backoff_cap_ms;       /* 0 = 5 min */
    const char *ca_file;          /* TLS trust for the centers; NULL = system */
} sender_opts;

typedef struct sender_stats {
    unsigned sent;        /* delivered in this pass (new sends) */
    unsigned recovered;   /* found already at the center (after crash/ambiguity) */
    unsigned transient;   /* transient failures (will retry) */
    unsigned failed;      /* moved to failed (dead letter) */
    unsigned waiting;     /* due later, behind a failing center, or without payload */
    unsigned polled;      /* Tasks read */
    unsigned changed;     /* referrals whose state followed the Task */
} sender_stats;

typedef struct sender sender;

/* Borrowed store and directory. Caller frees with sender_free(). */
sender *sender_new(store *s, const sender_opts *opts, fhir_error *err);
void sender_free(sender *snd);

/* One delivery pass (recovery, then due approved referrals). Adds to *st. Returns 0, or -1
 * with err only for local failures (store); remote failures are recorded per referral. */
int sender_pass(sender *snd, sender_stats *st, fhir_error *err);
/* One closed-loop pass over referrals at the centers. */
int sender_poll(sender *snd, sender_stats *st, fhir_error *err);

/* Referrals still to deliver (approved + sending); -1 on error. */
int64_t sender_outstanding(store *s, fhir_error *err);

#endif
