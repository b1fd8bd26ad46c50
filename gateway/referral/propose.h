/* propose — the one proposal path: a patient's verdict -> the indications that count ->
 * the best center (route.h) -> the BSeR package (bser.h) -> a referral (referral.h), and the
 * patient's stale proposals cancelled.
 *
 * Everything runs inside the caller's open store transaction, so the proposal commits with
 * the verdict that caused it (a crash cannot leave a verdict owed its proposal) and nothing
 * is logged before that commit: the caller logs the outcome with propose_log() once it has
 * committed. Exactly once: the placer identifier is deterministic, and an existing referral
 * with it (in any state) is left alone.
 *
 *   candidate? (eligible, or possibly eligible when opts.with_possible; or, when the site
 *               chose so, a refer-early consult recommendation alone: opts.consult_proposals)
 *     no  -> cancel the patient's proposals still pending approval
 *     yes -> indications -> route -> placer id; cancel the patient's other pending proposals;
 *            existing placer id -> nothing more; else Bundle -> refer_create_in_tx
 */
#ifndef PROPOSE_H
#define PROPOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "centers.h"
#include "elig.h"
#include "fhir_error.h"
#include "fhir_node.h"
#include "map_profile.h"
#include "referral.h"
#include "route.h"
#include "store.h"

#define PROPOSE_MAX_CANCELLED 64 /* stale proposals cancelled per patient and verdict */

/* The site and the referral policy; everything borrowed for the call. */
typedef struct propose_opts {
    const char *site_id, *site_name;
    bool site_has_location;
    double site_lat, site_lon;
    bool with_possible;          /* referral.min_category = possibly_eligible */
    int consult_proposals;       /* referral.consult_proposals: 0 none, 1 refer_now,
                                  * 2 early_consult and refer_now (a refer-early
                                  * recommendation alone makes a proposal) */
    const char *urgency_default; /* NULL: routine */
    refer_mode mode;
    const elig_ruleset *rules;
    const centers_dir *centers;
    const route_zcta *zcta;      /* may be NULL */
    int64_t day;                 /* the routing day (days since the epoch) */
} propose_opts;

/* One screened patient; everything borrowed for the call. */
typedef struct propose_input {
    const char *patient_id;
    const map_profile *profile;
    const elig_factset *facts;
    const elig_result *result;
    const char *verdict_json;
    const fhir_node *const *resources; /* the patient's (for the package) */
    size_t n_resources;
} propose_input;

typedef enum propose_outcome {
    PROPOSE_NOT_CANDIDATE = 0, /* no referral called for (stale proposals cancelled) */
    PROPOSE_NO_INDICATION,     /* a candidate, but no indication counts */
    PROPOSE_ROUTE_FAILED,      /* detail says why */
    PROPOSE_NO_CENTER,         /* no accredited center offers what is needed */
    PROPOSE_EXISTS,            /* the same referral exists already (any state) */
    PROPOSE_NO_PAYLOAD,        /* the package could not be built (detail; or no Patient) */
    PROPOSE_CREATED,
} propose_outcome;

/* What happened, for propose_log after the commit. */
typedef struct propose_result {
    propose_outcome outcome;
    int64_t referral_id;       /* CREATED, EXISTS */
    char center_id[128];
    size_t n_indications;
    char urgency[16];
    int64_t cancelled[PROPOSE_MAX_CANCELLED];
    size_t n_cancelled;
    char detail[FHIR_ERROR_MAX];
} propose_result;

/* Proposes (or withdraws) inside the caller's open transaction. 0 with *out filled, or -1
 * with err on a store failure (the caller rolls back what the call wrote). */
int propose_referral(store *s, const propose_opts *o, const propose_input *in,
                     propose_result *out, fhir_error *err);

/* Withdraws the patient's proposals still pending approval when nothing of the patient is
 * cached any more (every resource deleted at the source), inside the caller's open
 * transaction; *out says which (outcome PROPOSE_NOT_CANDIDATE). 0, or -1 with err. */
int propose_withdraw(store *s, const char *patient_id, propose_result *out, fhir_error *err);
/* Logs what a committed proposal did (referral.created, referral.cancelled, and the reason a
 * candidate got no referral), by the pseudonymous patient id only. */
void propose_log(const char *patient_id, refer_mode mode, const propose_result *r);

#endif
