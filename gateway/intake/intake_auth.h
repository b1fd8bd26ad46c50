/* intake_auth — who may send referrals to this center: SMART Backend Services (client
 * credentials with a signed client assertion, RFC 7523) against our token endpoint.
 *
 * Registered clients: "CLIENT_ID JWKS_FILE" (the referring site's public keys, read at start).
 * A token request (grant_type=client_credentials, client_assertion_type=...jwt-bearer,
 * client_assertion=JWS) is granted when the assertion
 *   - is signed RS384 or ES384 (never none or HMAC) by a key of the client's JWKS,
 *   - has iss = sub = a registered client_id,
 *   - has aud naming exactly our token URL,
 *   - has exp not passed (INTAKE_AUTH_SKEW_S) and at most INTAKE_AUTH_MAX_LIFETIME_S ahead,
 *   - has a jti never seen before from that client (kept in the store until exp).
 * The answer is a random bearer token (32 bytes, base64url) valid ttl_s; only its SHA-256 is
 * stored (store_intake_token_*), so tokens survive a restart of the center. Errors say which
 * check failed (never the assertion). */
#ifndef INTAKE_AUTH_H
#define INTAKE_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "fhir_error.h"
#include "store.h"

#define INTAKE_AUTH_MAX_CLIENTS 64
#define INTAKE_AUTH_SKEW_S 60
#define INTAKE_AUTH_MAX_LIFETIME_S 300
#define INTAKE_AUTH_CLIENT_MAX 128   /* bytes of a client_id */
#define INTAKE_AUTH_TOKEN_MAX 64     /* bytes of an access token's text */

typedef struct intake_auth intake_auth;

/* clients: "CLIENT_ID JWKS_FILE" entries (each JWKS file read now); token_url: the exact
 * audience of the assertions; ttl_s: lifetime of an access token (0 = 300). Caller frees with
 * intake_auth_free(). NULL with err naming the entry. */
intake_auth *intake_auth_new(const char *const *clients, size_t n, const char *token_url, int ttl_s,
                             fhir_error *err);
void intake_auth_free(intake_auth *a);
/* The token URL (borrowed). */
const char *intake_auth_token_url(const intake_auth *a);
int intake_auth_ttl(const intake_auth *a);

/* Checks a client assertion; on success issues a token: token_out (INTAKE_AUTH_TOKEN_MAX
 * bytes) and client_out (INTAKE_AUTH_CLIENT_MAX bytes). 0, or -1 with err (err->code 401:
 * the client or its assertion is refused; 500: the store failed). */
int intake_auth_grant(intake_auth *a, store *st, const char *assertion, char *token_out, char *client_out,
                      fhir_error *err);
/* The client of a bearer token: 1 (client_out, INTAKE_AUTH_CLIENT_MAX bytes), 0 unknown or
 * expired, -1 with err. */
int intake_auth_check(intake_auth *a, store *st, const char *token, char *client_out, fhir_error *err);

#endif
