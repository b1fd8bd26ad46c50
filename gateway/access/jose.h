/* jose — JSON Web Key sets and JWS (compact) signature verification with OpenSSL, for ID
 * tokens of an OpenID provider.
 *
 * Keys: kty RSA (>= 2048 bits; RS256/RS384/RS512/PS256/PS384/PS512) and kty EC (P-256 ES256,
 * P-384 ES384, P-521 ES512). Keys marked "use":"enc" are ignored. A JWS is accepted only
 * when its header alg is in the caller's allow-list, agrees with the key's type (and with the
 * key's own "alg" when the JWK names one), and carries no "crit" header; "none" and the
 * HMAC algorithms are never accepted (a public key is not a secret).
 *
 * Key selection: by "kid" when the header has one; an unknown kid answers JOSE_UNKNOWN_KID so
 * the caller can refetch the provider's JWKS (key rotation) and try once more. Without a kid
 * every key of a matching type is tried. */
#ifndef JOSE_H
#define JOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_arena.h"
#include "fhir_error.h"
#include "fhir_node.h"

#define JOSE_MAX_KEYS 32            /* keys kept from one JWKS */
#define JOSE_MAX_TOKEN (64u * 1024) /* longest compact JWS accepted */
#define JOSE_UNKNOWN_KID 1          /* jose_verify: the kid is not in the set */

typedef struct jose_jwks jose_jwks;

/* Builds a key set from a parsed JWKS document ({"keys":[...]}, borrowed for the call).
 * Keys that cannot be used are skipped (their count is in *skipped, may be NULL); a
 * document without a usable key is an error. Caller frees with jose_jwks_free(). */
jose_jwks *jose_jwks_from_node(const fhir_node *doc, size_t *skipped, fhir_error *err);
/* Same from JSON text. */
jose_jwks *jose_jwks_parse(const char *json, size_t len, size_t *skipped, fhir_error *err);
void jose_jwks_free(jose_jwks *k);
size_t jose_jwks_count(const jose_jwks *k);
/* Does the set hold a key with this kid? */
bool jose_jwks_has_kid(const jose_jwks *k, const char *kid);

/* Verifies a compact JWS (header.payload.signature) with a key of the set. algs is a
 * NULL-terminated allow-list ("RS256", "ES256", ...). On success returns 0 and *payload
 * (and *header when non-NULL) are the parsed JSON objects, in arena a (borrowed until the
 * arena is reset). Returns JOSE_UNKNOWN_KID when the header's kid is not in the set, -1 with
 * err on anything else (malformed, algorithm refused, bad signature). */
int jose_verify(const jose_jwks *keys, const char *compact, const char *const *algs, fhir_arena *a,
                fhir_node **payload, fhir_node **header, fhir_error *err);

/* The "kid" of a compact JWS header, or NULL (copied into arena a). Does not verify. */
const char *jose_peek_kid(const char *compact, fhir_arena *a);
/* The decoded header (part 0) or payload (part 1) of a compact JWS, in arena a, WITHOUT
 * verifying anything: only to choose the key set (iss, jku) before jose_verify. NULL when
 * malformed. */
const fhir_node *jose_peek(const char *compact, int part, fhir_arena *a);

/* ---- claims of a verified token ------------------------------------------------------------ */

/* Does the "aud" claim (a string or an array of strings) hold want? *n gets the number of
 * audiences it names. */
bool jose_aud_has(const fhir_node *aud, const char *want, size_t *n);
/* exp and iat are both required; the token is refused once exp + skew has passed and when
 * iat lies more than skew in the future (now_ms from fhir_clock). what names the token in
 * err ("ID token"). 0, or -1 with err. */
int jose_check_times(const fhir_node *claims, int64_t now_ms, int64_t skew_ms, const char *what, fhir_error *err);

#endif
