/* cds — the CDS Hooks 2.0 service on the daemon's one listener (serve.h): the EHR shows a CAR T
 * card in the chart when a candidate is opened (patient-view) or an order is selected
 * (order-select: the moment before the next line of therapy is when referral matters most).
 * Request and response shapes are CDS Hooks 2.0, compatible with the 3.0 ballot.
 *
 *   GET  /cds-services                      discovery: both services with their prefetch
 *                                           templates (no PHI; open, as the spec allows)
 *   POST /cds-services/{id}                 a hook call -> {"cards":[...]}
 *   POST /cds-services/{id}/feedback        {"feedback":[...]} -> stored, counted
 *
 * Every route is flagged SERVE_OWN_AUTH: the caller is the EHR, authenticated by the JWT it
 * signs (Authorization: Bearer <JWT>), not a person (cds_jwt.h: allow-listed iss, key set from
 * the configured URL / jku with caching and rotation (jwks.h), RS384/ES384, aud = the service's
 * URL, exp/iat, jti not seen before (store)). Any failure answers 401 and logs why (never the
 * token). A hook call without a bearer JWT naming an allowed client (or to no such service)
 * is refused from its head, before its body is read (serve_route_head_check). Discovery
 * answers without a token too.
 *
 * A call: the JSON body (hook must be the service's, context.patientId required: else 400) ->
 * the patient's resources from the prefetch (keys absent or null count as missing) -> what is
 * missing is read from fhirServer with the call's fhirAuthorization bearer token, within
 * cds.fetch_timeout_ms, when fhirServer is one of cds.fhir_servers; otherwise 412 -> the one
 * screening path (screen.h, the rule set, tables and as-of date the daemon uses, so the card
 * agrees with the worklist and `cartgate screen`) -> a card (cds_card.h) unless the verdict
 * calls for none or a person in cartgate declined the patient's referral for the same
 * indications and disease marker (the card comes back when the verdict changes). A card's
 * patient and the call's resources are kept in the store, so feedback can act on them.
 * Anything failing inside after authentication answers 200 {"cards":[]} and logs the cause
 * by pseudonymous patient id only: the EHR is never blocked.
 *
 * Feedback: each item's card, outcome (accepted | overridden), overrideReason, accepted
 * suggestions and timestamp are stored (store_cds_feedback_add) and counted in /metrics. An
 * accepted card asks the daemon (cds_env.propose) to screen the patient again and propose the
 * referral through the one proposal path (propose.h): pending a clinician's approval unless
 * the site runs referral.mode auto. */
#ifndef CDS_H
#define CDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "elig.h"
#include "fhir_error.h"
#include "map_tables.h"
#include "serve.h"
#include "store.h"

struct event_base;

#define CDS_MAX_RESOURCES 20000     /* resources of one call (prefetch and fetched) */
#define CDS_ARENA_MAX (64u << 20)   /* bytes of one call's parsed body and resources */
#define CDS_RESPONSE_MAX (1u << 20) /* bytes of one answer */
#define CDS_VERDICT_JSON_MAX (4u << 20) /* bytes of the verdict line a worklist decline is matched on */

/* Strings borrowed for cds_new (copied). */
typedef struct cds_config {
    const char *public_url;               /* https://host[:port] */
    const char *const *clients;           /* "ISS JWKS_URL" */
    size_t n_clients;
    const char *const *fhir_servers;      /* allowed fhirServer base URLs */
    size_t n_fhir_servers;
    const char *ca_file;                  /* NULL = system store */
    long fetch_timeout_ms;                /* 0 = 2500 */
    long jwks_ttl_s;                      /* 0 = 3600 */
} cds_config;

/* The screening the daemon runs now (borrowed for one call). */
typedef struct cds_screening {
    const elig_ruleset *rules;
    const map_tables *tables;
    int64_t as_of_days;                   /* -1 = today (fhir_clock) */
} cds_screening;

/* What the service may use; borrowed until cds_free. */
typedef struct cds_env {
    store *st;
    struct event_base *base;
    void *ud;
    void (*screening)(void *ud, cds_screening *out);
    /* A card was accepted: screen the patient (its resources are in the store's cache) and
     * propose the referral through the one proposal path. */
    void (*propose)(void *ud, const char *patient_id);
} cds_env;

/* Counters for /metrics. */
typedef struct cds_stats {
    uint64_t calls;          /* hook calls authenticated */
    uint64_t cards;          /* cards answered */
    uint64_t unauthorized;   /* 401 */
    uint64_t precondition;   /* 412 */
    uint64_t bad_request;    /* 400 */
    uint64_t internal;       /* answered without cards after an internal error */
    uint64_t fetches;        /* calls that read missing data from the fhirServer */
    uint64_t suppressed;     /* cards held back: the patient's referral was declined in cartgate */
} cds_stats;

typedef struct cds cds;

/* Validates cfg (public_url, clients). Caller frees with cds_free() after the listener. */
cds *cds_new(const cds_env *env, const cds_config *cfg, fhir_error *err);
/* Registers the routes on s and cancels the service's pending work when s is freed. 0 or -1. */
int cds_add_routes(cds *c, serve *s, fhir_error *err);
/* The route table (tests: every route SERVE_OWN_AUTH). */
const serve_route *cds_routes(size_t *n);
const cds_stats *cds_get_stats(const cds *c);
void cds_free(cds *c);

/* Service ids. */
#define CDS_SERVICE_PATIENT_VIEW "cartgate-car-t"
#define CDS_SERVICE_ORDER_SELECT "cartgate-car-t-order-select"

#endif
