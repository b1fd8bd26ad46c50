/* intake — cartgate at a CAR T center (config role "center"): the BSeR recipient endpoint
 * referring sites deliver to, on the daemon's one listener (serve.h):
 *
 *   GET  /fhir/metadata                       public   CapabilityStatement
 *   GET  /fhir/.well-known/smart-configuration public  SMART Backend Services discovery
 *   POST /fhir/auth/token                     public   client credentials + signed assertion
 *                                                      (intake_auth.h) -> a short-lived token
 *   POST /fhir                                site     a referral transaction Bundle
 *                                                      (intake_bundle.h): stored once, atomically
 *   GET  /fhir/ServiceRequest[/{id}]          site     read; search by identifier, _lastUpdated
 *   GET  /fhir/Task[/{id}]                    site     the same for Tasks (the site follows its
 *                                                      referral's Task here, sender.h)
 *   PUT  /fhir/Task/{id}                      site     the referring site cancels its referral
 *                                                      (status cancelled, If-Match the version)
 * "site" routes are flagged SERVE_OWN_AUTH: the bearer token of a registered referring site
 * (not a person's session or token) is checked here, and a site sees only what it sent; a
 * request without one is refused from its head, before any of its body is read (the site
 * routes' head check, serve_route_head_check).
 * Errors are OperationOutcomes saying what is wrong. Responses are application/fhir+json.
 *
 * Notices (notify.h, never PHI: the referral's number, its urgency and a link to the inbox):
 * one when a referral arrives, one when a referral has waited without an answer for
 * waiting_business_days (intake_scan, run by the daemon every few seconds).
 * The intake inbox pages are the web room's (web_intake.c), acting through intake_task.h. */
#ifndef INTAKE_H
#define INTAKE_H

#include <stddef.h>
#include <stdint.h>

#include "fhir_error.h"
#include "notify.h"
#include "serve.h"
#include "store.h"

#define INTAKE_SEARCH_MAX 1000     /* entries of one search answer */
#define INTAKE_PAGE_MAX (32u << 20) /* bytes of one answer (a search of full resources) */
#define INTAKE_BODY_DEFAULT (32u << 20) /* bytes of a POSTed Bundle unless configured */

typedef struct intake_config {
    const char *public_url;        /* our base URL as the sites call it (https://HOST[:PORT]):
                                      the token URL, the assertions' audience, is
                                      <public_url>/fhir/auth/token */
    const char *const *clients;    /* "CLIENT_ID JWKS_FILE" */
    size_t n_clients;
    int token_ttl_s;               /* 0 = 300 */
    int waiting_business_days;     /* a referral unanswered this long is waiting too long; 0 = 2 */
    size_t max_body_bytes;         /* largest Bundle POSTed to /fhir; 0 = INTAKE_BODY_DEFAULT */
} intake_config;

typedef struct intake_env {
    store *st;                     /* borrowed */
    notify *nt;                    /* borrowed; NULL: no notices */
} intake_env;

/* Why a POST /fhir was refused (nothing stored): the body is not JSON (400), not a
 * transaction Bundle (400), breaks the Bundle rules (422: no ServiceRequest or Task, a
 * reference that does not resolve, ...), an identifier matches more than one stored resource
 * (412), or the body is over intake.max_body_kib (413). */
#define INTAKE_N_REFUSE 5
extern const char *const intake_refuse_reasons[INTAKE_N_REFUSE];

typedef struct intake_stats {
    uint64_t received;      /* new referrals stored */
    uint64_t repeated;      /* Bundles sent again, answered from what was stored */
    uint64_t refused;       /* POST /fhir refused (the sum of refused_by) */
    uint64_t refused_by[INTAKE_N_REFUSE]; /* by intake_refuse_reasons index */
    uint64_t unauthorized;  /* requests without a valid site token, and refused token requests */
    uint64_t tokens;        /* tokens issued */
} intake_stats;

typedef struct intake intake;

/* Caller frees with intake_free() after the listener. NULL with err (a client's key set). */
intake *intake_new(const intake_env *env, const intake_config *cfg, fhir_error *err);
void intake_free(intake *in);
int intake_add_routes(intake *in, serve *s, fhir_error *err);
/* The route table (tests check every route has a role). */
const serve_route *intake_routes(size_t *n);
/* Notices for referrals waiting too long (each once). 0, or -1 with err. */
int intake_scan(intake *in, fhir_error *err);
const intake_stats *intake_get_stats(const intake *in);

#endif
