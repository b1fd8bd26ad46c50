/* cds_jwt — the checks on the JWT a CDS Client (the EHR) signs for every CDS Hooks call
 * (CDS Hooks 2.0 "Trusting CDS Clients"), apart from the signature (jose.h) and the key set
 * (jwks.h):
 *
 *   header   alg RS384 or ES384 (never none or HMAC: jose refuses those), typ JWT when given,
 *            jku, when given, exactly the key set URL configured for the issuer
 *   claims   iss one of the allow-listed clients; aud (string or array) holds the exact URL of
 *            the service called (<public_url>/cds-services/<id>); exp not passed and iat not in
 *            the future, within CDS_JWT_SKEW_S; exp at most CDS_JWT_MAX_LIFETIME_S after iat
 *            (a token good for days is refused); jti present (replay is checked against the
 *            store by the caller)
 * Errors say which check failed (for the log, never the token). */
#ifndef CDS_JWT_H
#define CDS_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_error.h"
#include "fhir_node.h"

#define CDS_JWT_SKEW_S 60
#define CDS_JWT_MAX_LIFETIME_S 3600
#define CDS_JWT_MAX_CLIENTS 32
#define CDS_JWT_MAX_JTI 256       /* bytes of a jti kept against replay */

/* The signature algorithms accepted (NULL-terminated). */
extern const char *const CDS_JWT_ALGS[];

/* One allowed CDS Client: its iss and key set URL (borrowed). */
typedef struct cds_jwt_client {
    const char *iss;
    const char *jwks_url;
} cds_jwt_client;

/* Parses "ISS JWKS_URL" (one space) into out (pointers into buf, n bytes, which receives a
 * copy of entry). 0, or -1 with err. */
int cds_jwt_client_parse(const char *entry, char *buf, size_t n, cds_jwt_client *out, fhir_error *err);

/* The client the (unverified) header and payload name, after the header checks: alg one of
 * CDS_JWT_ALGS, typ JWT when given, iss allow-listed, jku (when given) the client's key set
 * URL. Borrowed from clients; NULL with err. */
const cds_jwt_client *cds_jwt_pick(const cds_jwt_client *clients, size_t n, const fhir_node *header,
                                   const fhir_node *payload, fhir_error *err);

/* The claims of a verified token: iss equals client->iss, aud holds service_url, exp/iat at
 * now_ms (fhir_clock) within the skew and lifetime, jti present. *jti and *exp_s (may be
 * NULL) get the jti (borrowed from claims) and exp. 0, or -1 with err. */
int cds_jwt_check_claims(const fhir_node *claims, const cds_jwt_client *client, const char *service_url,
                         int64_t now_ms, const char **jti, int64_t *exp_s, fhir_error *err);

#endif
