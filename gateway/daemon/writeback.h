/* writeback — tells the EHR about the center-driven state changes of referrals
 * (config referral.writeback = communication | task).
 *
 * Durable outbox: a pass first copies, in one transaction, every new audit row that records a
 * state change made by the sender or a center (to sent, accepted, declined, scheduled,
 * completed, cancelled, failed; operator actions are not written back) into the table
 * writeback_outbox, one row per (referral, state), and advances the cursor (cursors table,
 * source "writeback", key "audit_id"). Because the audit row is written in the same
 * transaction as the state change, nothing is lost across a crash or restart. Then the
 * pending rows are written to the EHR asynchronously on the daemon's loop, each as a
 * conditional create (If-None-Exist: identifier=urn:cartgate:writeback|<placer>-<state>), so
 * a retry or a restart never creates a duplicate. Transient failures (no answer, 408, 429,
 * 5xx; already retried by fhir_client) leave the row pending for the next pass; permanent
 * ones (other 4xx, local build errors) mark it failed and add an audit row
 * (action writeback-failed) — visible with `cartgate referrals show`. Logs carry the referral
 * id and HTTP status only (no PHI). Single-threaded. */
#ifndef WRITEBACK_H
#define WRITEBACK_H

#include <stdbool.h>
#include <stdint.h>

#include "centers.h"
#include "config.h"
#include "fhir_error.h"
#include "store.h"

struct event_base;

typedef struct writeback_opts {
    struct event_base *base;      /* borrowed: the daemon's loop */
    int kind;                     /* config_writeback (not NONE) */
    const config_source *source;  /* borrowed: the EHR endpoint (base_url + auth) */
    const centers_dir *centers;   /* borrowed: center names for the text */
    unsigned max_per_pass;        /* rows written per pass; 0 = 50 */
} writeback_opts;

typedef struct writeback writeback;

/* Creates the EHR client (the outbox is a store table). Borrowed store and options;
 * caller frees with writeback_free(). NULL with err. */
writeback *writeback_new(store *s, const writeback_opts *o, fhir_error *err);
/* Drops in-flight writes (their rows stay pending). */
void writeback_free(writeback *w);

/* Collects new state changes into the outbox and starts writing the pending rows; returns at
 * once (no-op while an earlier pass is still in flight). -1 with err on a store failure. */
int writeback_pass_start(writeback *w, fhir_error *err);
bool writeback_busy(const writeback *w);

#endif
