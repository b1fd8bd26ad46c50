/* intake_bundle — a referral Bundle received by a center: checked, then stored atomically.
 *
 * Accepted: a FHIR R4 Bundle of type transaction whose entries are all creates (request.method
 * POST, request.url the resource type), with at least one ServiceRequest and one Task, every
 * Task.focus a ServiceRequest of the Bundle, and every reference resolving within the Bundle
 * (to an entry's fullUrl, to "Type/id" of an entry, or "#..." contained). request.ifNoneExist,
 * when given, must be "identifier=[system|]value"; an entry whose identifier is already
 * stored is not stored again (200 with the stored id), one without a match is created (201),
 * more than one match refuses the Bundle (412). Our own Bundles (bser.h) and any BSeR-shaped
 * one pass.
 *
 * Storing (intake_transaction): one store transaction for the whole Bundle (all or nothing;
 * a kill at any point leaves either nothing or everything), references rewritten from
 * fullUrls to "Type/id", meta.versionId 1 and meta.lastUpdated set, a Task sent as
 * "requested" stored as "received" (BSeR: received by the recipient, businessStatus 2.0
 * kept), and one inbox referral per new Task. The answer is a transaction-response Bundle
 * (entries in request order: status, location Type/id/_history/v, etag, lastModified), so a
 * repeat of the same Bundle answers with the same ids and stores nothing. */
#ifndef INTAKE_BUNDLE_H
#define INTAKE_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

#include "fhir_buf.h"
#include "fhir_error.h"
#include "fhir_node.h"
#include "store.h"

#define INTAKE_BUNDLE_MAX_ENTRIES 500
#define INTAKE_RESOURCE_MAX (4u << 20)   /* bytes of one stored resource's JSON */
#define INTAKE_RESPONSE_MAX (1u << 20)   /* bytes of a transaction-response */

/* Checks a parsed Bundle. 0, or -1 with err: what is wrong, with err->code the HTTP status
 * (400 not a transaction Bundle, 422 the rules above). */
int intake_bundle_check(const fhir_node *bundle, fhir_error *err);

/* What one transaction did. */
typedef struct intake_tx_result {
    size_t created, matched;     /* entries created / found stored already */
    int64_t referrals[8];        /* new inbox referrals (their numbers) */
    size_t n_referrals;
} intake_tx_result;

/* Checks and stores the Bundle sent by client_id (see top); writes the transaction-response
 * JSON to response. 0, or -1 with err (err->code the HTTP status: 400/412/422, 500 for the
 * store); nothing is stored on error. st must have no open transaction. */
int intake_transaction(store *st, const fhir_node *bundle, const char *client_id, fhir_buf *response,
                       intake_tx_result *res, fhir_error *err);

/* The urgency rank of a ServiceRequest.priority: 0 stat, 1 asap, 2 urgent, 3 routine or absent. */
int intake_urank(const char *priority);

#endif
