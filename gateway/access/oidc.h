/* oidc — OpenID Connect relying party: hospital sign-in through the hospital's identity
 * provider (Entra ID, Okta, Ping, Keycloak, ...), authorization code flow with PKCE.
 *
 *   discovery  GET <issuer>/.well-known/openid-configuration (the document's issuer must be
 *              the configured one exactly; endpoints https, or http on loopback only)
 *   begin      a fresh state, nonce and PKCE verifier (S256) per attempt, kept here (at most
 *              OIDC_MAX_PENDING, login_ttl_s each) and bound to the browser by a random
 *              binding value the caller sets as a short-lived cookie; the answer is the
 *              authorization URL to redirect to
 *   finish     the callback's state must be pending (one use) and its binding must match;
 *              the code is exchanged at the token endpoint (client_secret_post, or a public
 *              client with PKCE only) and the ID token verified: signature by a key of the
 *              provider's JWKS (RS256/ES256 by default; an unknown kid refetches the JWKS
 *              once, at most every OIDC_JWKS_MIN_REFETCH_S — key rotation), iss exact, aud
 *              holds client_id (azp = client_id when several), exp and iat within the clock
 *              skew, nonce equal to the attempt's
 *   identity   user_claim (default "sub") gives the user name and the subject (issuer +
 *              value) that matches the user across sign-ins; name_claim the display name;
 *              role_claim (default "groups"; a dotted path such as realm_access.roles works)
 *              is mapped by the first role_map entry "GROUP=ROLE" whose group the person has
 *              ("*=ROLE" matches everyone)
 *
 * Network I/O runs on the daemon's event loop through fhir_client (one client per origin);
 * nothing blocks. Time comes from fhir_clock. Tokens never reach the logs. */
#ifndef OIDC_H
#define OIDC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "access.h"
#include "fhir_arena.h"
#include "fhir_error.h"
#include "fhir_node.h"
#include "jose.h"

struct event_base;

#define OIDC_MAX_PENDING 256          /* sign-ins in progress kept at once (oldest evicted) */
#define OIDC_MAX_ROLE_MAP 64
#define OIDC_URL_MAX 2048
#define OIDC_BINDING_LEN 48           /* buffer for the browser binding cookie value */
#define OIDC_JWKS_MIN_REFETCH_S 10

/* Strings are copied by oidc_new(). */
typedef struct oidc_config {
    const char *issuer;             /* exact "iss" */
    const char *client_id;
    const char *client_secret;      /* NULL: public client (PKCE only) */
    const char *redirect_uri;       /* our callback URL as registered at the provider */
    const char *scopes;             /* NULL = "openid profile email"; must hold openid */
    const char *user_claim;         /* NULL = "sub" */
    const char *name_claim;         /* NULL = "name" */
    const char *role_claim;         /* NULL = "groups" */
    const char *const *role_map;    /* "GROUP=ROLE" entries, first match wins */
    size_t n_role_map;
    bool provision;                 /* create unknown users (with a mapped role) */
    int64_t clock_skew_s;           /* 0 = 60 */
    int64_t login_ttl_s;            /* 0 = 600 */
    const char *const *algs;        /* NULL = RS256, ES256 (+ RS384, RS512, ES384, PS256) */
    const char *ca_file;            /* PEM bundle for the provider (NULL = system store) */
} oidc_config;

typedef struct oidc oidc;

/* Validates cfg (issuer and endpoints https or loopback http, redirect URI, role map).
 * base (borrowed) runs the HTTP requests. Caller frees with oidc_free(). */
oidc *oidc_new(struct event_base *base, const oidc_config *cfg, fhir_error *err);
void oidc_free(oidc *o);
/* Starts discovery and the JWKS fetch in the background (sign-ins also start it). */
void oidc_start(oidc *o);
/* true once discovery and the JWKS are loaded. */
bool oidc_ready(const oidc *o);

/* ---- the flow (asynchronous) -------------------------------------------------------------- */

/* begin: url is the authorization URL to redirect to, binding the cookie value to set
 * (both borrowed for the call); on failure url is NULL and err says why. */
typedef void (*oidc_begin_fn)(void *ud, const char *url, const char *binding, const fhir_error *err);
/* Starts a sign-in that returns to return_to (a local path; anything else becomes "/").
 * cb runs once — before oidc_begin returns when discovery is loaded. */
void oidc_begin(oidc *o, const char *return_to, oidc_begin_fn cb, void *ud);

/* finish: on success id holds the identity (borrowed for the call) and return_to the path
 * given to begin; on failure id is NULL and err says why (for the log and the audit; the
 * person sees a generic message). */
typedef void (*oidc_finish_fn)(void *ud, const access_oidc_identity *id, const char *return_to,
                               const fhir_error *err);
/* Handles the callback's query: state, code (or error / error_description from the
 * provider) and the binding cookie. cb runs once, possibly before oidc_finish returns. */
void oidc_finish(oidc *o, const char *state, const char *code, const char *provider_error,
                 const char *binding, oidc_finish_fn cb, void *ud);

/* An URL the daemon may fetch from outside parties (identity provider, an EHR's JWKS or FHIR
 * server): https, or plain http to a loopback host only; no credentials, no spaces. what names
 * it in err. *origin_len (may be NULL) gets the length of scheme://host[:port]. 0, or -1. */
int oidc_check_url(const char *what, const char *url, size_t *origin_len, fhir_error *err);

/* ---- the parts, for tests and the flow ------------------------------------------------------ */

/* Takes a discovery document (borrowed). 0, or -1 with err. */
int oidc_set_discovery(oidc *o, const fhir_node *doc, fhir_error *err);
/* Replaces the key set (takes ownership). */
void oidc_set_jwks(oidc *o, jose_jwks *keys);
/* Borrowed: the endpoints from discovery (NULL before). */
const char *oidc_authorization_endpoint(const oidc *o);
const char *oidc_token_endpoint(const oidc *o);

/* Verifies an ID token against the current key set: 0 with *claims (in arena a),
 * JOSE_UNKNOWN_KID when its kid is not in the set, -1 with err. */
int oidc_verify_id_token(oidc *o, const char *id_token, const char *nonce, fhir_arena *a, fhir_node **claims,
                         fhir_error *err);
/* Maps verified claims to an identity (strings in arena a). 0, or -1 with err (no usable
 * user claim). A person without a mapped role gets ROLE_UNSET (the sign-in is then refused
 * by access_login_oidc, and audited). */
int oidc_map_identity(oidc *o, const fhir_node *claims, fhir_arena *a, access_oidc_identity *id, fhir_error *err);

/* A pending attempt, taken out by its state (one use). */
typedef struct oidc_pending {
    char state[48], nonce[48], verifier[48];
    unsigned char binding_hash[32];
    int64_t created_ms;
    char return_to[256];
} oidc_pending;
/* Removes and returns the attempt of state when its binding matches and it has not
 * expired: 0, or -1 with err. */
int oidc_take_pending(oidc *o, const char *state, const char *binding, oidc_pending *out, fhir_error *err);
/* Number of attempts pending (tests). */
size_t oidc_pending_count(const oidc *o);

#endif
