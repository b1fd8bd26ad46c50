/* fhir_auth — credentials for FHIR endpoints: static bearer token (from a file or an
 * environment variable, never from a config file in clear), HTTP Basic (password from an
 * environment variable or a file), and SMART Backend Services (client_credentials with a
 * private_key_jwt client assertion signed RS384 or ES384; shared/reference/fhir.md §4).
 *
 * This module does no I/O on the network: fhir_client drives discovery and the token
 * request over its event loop and feeds the responses back here. All times come from the
 * caller (fhir_clock), so token expiry is testable. */
#ifndef FHIR_AUTH_H
#define FHIR_AUTH_H

/* Byte caps (each buffer fails cleanly at its cap). */
#define FHIR_AUTH_SECRET_MAX 16384u                /* a token or password file */
#define FHIR_AUTH_TOKEN_BODY_MAX (256u * 1024u)    /* a token endpoint's answer */
#define FHIR_AUTH_URL_MAX 8192u                    /* a resolved endpoint URL */
#define FHIR_AUTH_JWT_HEADER_MAX 4096u             /* the assertion's JOSE header */
#define FHIR_AUTH_JWT_CLAIMS_MAX 16384u            /* the assertion's claims */
#define FHIR_AUTH_JWT_MAX 65536u                   /* the signed assertion */
#define FHIR_AUTH_TOKEN_REQUEST_MAX 131072u        /* the token request's form body */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_error.h"

typedef enum fhir_auth_kind {
    FHIR_AUTH_NONE = 0,
    FHIR_AUTH_BEARER,
    FHIR_AUTH_BASIC,
    FHIR_AUTH_SMART,
} fhir_auth_kind;

/* All strings are borrowed for the duration of fhir_auth_new() only (copied). */
typedef struct fhir_auth_config {
    fhir_auth_kind kind;
    /* BEARER: token from the first line of a file, or from an environment variable. */
    const char *bearer_file;
    const char *bearer_env;
    /* BEARER: the token itself, for a token handed to us per request (a CDS Hooks call's
     * fhirAuthorization); copied, never logged. Takes precedence over file and variable. */
    const char *bearer_token;
    /* BASIC: user name, password from an environment variable or the first line of a file. */
    const char *basic_user;
    const char *basic_pass_env;
    const char *basic_pass_file;
    /* SMART Backend Services. */
    const char *smart_client_id;
    const char *smart_key_file;   /* PEM private key (RSA >= 2048 bits, or EC P-384) */
    const char *smart_kid;        /* kid of the registered public key */
    const char *smart_alg;        /* "RS384" | "ES384"; NULL = from the key type */
    const char *smart_scope;      /* NULL = system scope, read+search on all types */
    const char *smart_token_url;  /* NULL = discover via .well-known/smart-configuration */
    const char *smart_audience;   /* JWT aud; NULL = the token endpoint URL (normal case) */
    int smart_assertion_ttl_s;    /* assertion lifetime; 0 = 300; clamped to 1..300 */
    int smart_refresh_margin_s;   /* refresh this long before expiry; 0 = 30 (at most 1/5
                                     of the token lifetime) */
} fhir_auth_config;

typedef struct fhir_auth fhir_auth;

/* Loads secrets and keys now, so a bad file or missing variable fails at start-up with a
 * clear cause. Caller frees with fhir_auth_free(). NULL with err set on failure. */
fhir_auth *fhir_auth_new(const fhir_auth_config *cfg, fhir_error *err);
void fhir_auth_free(fhir_auth *a);

fhir_auth_kind fhir_auth_get_kind(const fhir_auth *a);
/* "RS384" / "ES384" for SMART, NULL otherwise. Static string. */
const char *fhir_auth_smart_alg(const fhir_auth *a);

/* The full header line to send ("Authorization: Bearer ..."/"Authorization: Basic ..."),
 * or NULL when there is none to send (NONE, or SMART without a token valid at now_ms
 * plus the refresh margin). Borrowed, valid until the next call that changes the token. */
const char *fhir_auth_header(const fhir_auth *a, int64_t now_ms);

/* SMART: true when a (new) token must be fetched before the next request at now_ms. */
bool fhir_auth_needs_token(const fhir_auth *a, int64_t now_ms);
/* Increases every time a token is accepted or invalidated; lets a request that got a 401
 * tell whether the token it used is still the current one. */
uint64_t fhir_auth_generation(const fhir_auth *a);
/* Drops the cached token (after a 401). */
void fhir_auth_invalidate(fhir_auth *a);

/* SMART token endpoint: configured, or NULL until discovery succeeded. Borrowed. */
const char *fhir_auth_token_url(const fhir_auth *a);
/* Reads a .well-known/smart-configuration document: takes token_endpoint (a relative one
 * is resolved against fhir_base), checks client_credentials and the signing algorithm
 * when advertised. 0, or -1 with err set. */
int fhir_auth_parse_discovery(fhir_auth *a, const char *body, size_t len,
                              const char *fhir_base, fhir_error *err);

/* Builds the x-www-form-urlencoded token request body with a fresh signed client
 * assertion (aud = audience or token URL, iat = now, exp = now + ttl, unique jti).
 * Caller frees. NULL with err set. */
char *fhir_auth_token_request(fhir_auth *a, int64_t now_ms, fhir_error *err);
/* Accepts a token response body (access_token, token_type bearer, expires_in) received at
 * now_ms; the token is then cached until expiry minus the margin. 0, or -1 with err. */
int fhir_auth_accept_token(fhir_auth *a, const char *body, size_t len, int64_t now_ms,
                           fhir_error *err);
/* When the cached token expires (ms since epoch); 0 when none. */
int64_t fhir_auth_token_expiry(const fhir_auth *a);

/* The signed client assertion alone (header.claims.signature). Caller frees. */
char *fhir_auth_jwt_assertion(fhir_auth *a, const char *aud, int64_t now_ms, fhir_error *err);

/* base64url without padding. Caller frees. decode returns NULL on malformed input and
 * sets *out_len. */
char *fhir_auth_b64url_encode(const void *data, size_t len);
unsigned char *fhir_auth_b64url_decode(const char *s, size_t len, size_t *out_len);

/* Appends s percent-encoded for application/x-www-form-urlencoded. Caller frees. */
char *fhir_auth_form_encode(const char *s);

#endif
