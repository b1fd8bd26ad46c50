/* access — who is acting: users and their roles, password sign-in with lockout, sessions,
 * CSRF tokens, per-user API tokens, the shared service token, and the audit actor.
 *
 * Sessions: the id is 256 random bits (RAND_bytes), given to the browser once as the cookie
 * value (base64url, ACCESS_COOKIE_LEN - 1 characters) and stored only as its SHA-256. A
 * session ends at the first of: its idle timeout (no request for session_idle_s), its
 * absolute timeout (session_max_s after sign-in), sign-out, a password change, the user
 * being disabled. Reads never need a new sign-in.
 * CSRF: the token of a session is HMAC-SHA256(session id, "cartgate-csrf-v1"), so it needs no
 * storage, dies with the session and cannot be computed from anything the server stores.
 * Every state-changing request authenticated by a cookie must carry it (serve.h).
 * Lockout: after lockout_threshold failed sign-ins for one name (existing or not, so the
 * answer tells nothing about which names exist), the name is locked for lockout_base_s,
 * doubling with every further failure up to lockout_max_s; never permanent. A success
 * clears the count. An unknown name costs the same scrypt work as a known one.
 * API tokens: "cgt_" + 256 random bits (base64url), shown once, stored as SHA-256, with a
 * label, a role (at most the owner's), an expiry (required, at most token_max_days) and
 * revocation. A token acts with the roles both it and its owner hold at the time of use.
 * Service accounts (users with service set) hold tokens only; their name is their audit
 * name. The shared admin token of older configurations (admin.token_file) is a service
 * principal named ACCESS_SHARED_SERVICE holding viewer, clinician and admin.
 *
 * Every change here (users, passwords, roles, tokens, sign-in success and failure, sign-out)
 * appends an audit row with the acting person; logs carry user ids, never names.
 * Time comes from fhir_clock. */
#ifndef ACCESS_H
#define ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_error.h"
#include "pwhash.h"
#include "role.h"
#include "store.h"
#include "store.h"

#define ACCESS_NAME_MAX 128        /* longest user name (bytes) */
#define ACCESS_COOKIE_LEN 48       /* buffer for a session cookie value (43 chars + NUL) */
#define ACCESS_TOKEN_LEN 52        /* buffer for an API token ("cgt_" + 43 chars + NUL) */
#define ACCESS_CSRF_LEN 48         /* buffer for a CSRF token */
#define ACCESS_SOURCE_MAX 64       /* source address text */
#define ACCESS_SHARED_SERVICE "admin-api"

typedef struct access_config {
    int64_t session_idle_s;     /* 0 = 1800 */
    int64_t session_max_s;      /* 0 = 43200 */
    int lockout_threshold;      /* 0 = 5 */
    int64_t lockout_base_s;     /* 0 = 30 */
    int64_t lockout_max_s;      /* 0 = 900 */
    size_t password_min_len;    /* 0 = PWHASH_MIN_LEN */
    int64_t token_max_days;     /* 0 = 3650 */
    pwhash_params kdf;          /* scrypt for new hashes; zero = pwhash_defaults() */
} access_config;

typedef enum access_via {
    ACCESS_VIA_NONE = 0,
    ACCESS_VIA_SESSION,      /* browser cookie (CSRF token required to change state) */
    ACCESS_VIA_TOKEN,        /* per-user API token */
    ACCESS_VIA_SHARED,       /* the shared service token */
    ACCESS_VIA_LOCAL,        /* the command line on the machine (cartgate users ...) */
} access_via;

/* The acting principal of one request. */
typedef struct access_principal {
    int64_t user_id;                    /* 0 for the shared service token / local CLI */
    char name[ACCESS_NAME_MAX];
    role role;                          /* the role acted in (audit, display) */
    role_mask mask;                     /* what it may do */
    bool service;
    access_via via;
    int64_t token_id;                   /* ACCESS_VIA_TOKEN */
    char source[ACCESS_SOURCE_MAX];     /* peer address */
    unsigned char session_key[32];      /* ACCESS_VIA_SESSION: the raw id (CSRF key) */
} access_principal;

typedef struct access_ctx access_ctx;

/* Borrows st (must outlive the handle). Caller frees with access_free(). */
access_ctx *access_new(store *st, const access_config *cfg);
void access_free(access_ctx *a);
/* Effective configuration (defaults filled). Borrowed. */
const access_config *access_get_config(const access_ctx *a);
/* The shared service token (copied; NULL removes it). */
void access_set_shared_token(access_ctx *a, const char *token);

/* The local operator at the command line (for the audit of `cartgate users ...`): name is
 * the operating-system user, role admin, via LOCAL. */
void access_principal_local(access_principal *p, const char *os_user);

/* ---- users (each change audited with `by`) ------------------------------------------------- */

/* Adds a user. password may be NULL (no local password: OpenID Connect only, or a service).
 * Names: 1..ACCESS_NAME_MAX-1 bytes of [A-Za-z0-9._@-]. err->code STORE_CONFLICT when taken. */
int access_user_add(access_ctx *a, const char *name, const char *display_name, role r, bool service,
                    const char *password, const access_principal *by, fhir_error *err);
/* Sets (or with NULL removes) the local password; ends the user's sessions. */
int access_user_passwd(access_ctx *a, const char *name, const char *password, const access_principal *by,
                       fhir_error *err);
/* Disables (ends sessions; tokens are refused while disabled) or enables. */
int access_user_disable(access_ctx *a, const char *name, bool disabled, const access_principal *by, fhir_error *err);
int access_user_set_role(access_ctx *a, const char *name, role r, const access_principal *by, fhir_error *err);

/* Creates an API token for user name with role r (at most the user's own; ROLE_UNSET = the
 * user's role), valid for ttl_days (1..token_max_days). *token_out (ACCESS_TOKEN_LEN) is the
 * secret, to be shown once. */
int access_token_create(access_ctx *a, const char *name, role r, int64_t ttl_days, const char *label,
                        const access_principal *by, char token_out[ACCESS_TOKEN_LEN], int64_t *id_out,
                        fhir_error *err);
/* Revokes token id of user name. 0, or -1 (no such token of that user). */
int access_token_revoke(access_ctx *a, const char *name, int64_t id, const access_principal *by, fhir_error *err);

/* ---- sign-in -------------------------------------------------------------------------------- */

typedef enum access_result {
    ACCESS_OK = 0,
    ACCESS_DENIED = 1,   /* wrong name/password, disabled, no role, expired, revoked ... */
    ACCESS_LOCKED = 2,   /* too many failures: *retry_after_s says when to try again */
} access_result;

/* Password sign-in from source. On ACCESS_OK *out is the principal and cookie (>=
 * ACCESS_COOKIE_LEN bytes) the new session id. -1 on a store error. The failure reason goes
 * to the audit and err (for the log), never to the person signing in. */
int access_login_password(access_ctx *a, const char *name, const char *password, const char *source,
                          access_principal *out, char *cookie, int64_t *retry_after_s, fhir_error *err);

/* An identity asserted by a verified OpenID Connect ID token (oidc.h). */
typedef struct access_oidc_identity {
    const char *subject;       /* "<issuer> <claim value>": matches a user across sign-ins */
    const char *name;          /* user name for a new user (the claim value) */
    const char *display_name;  /* may be NULL */
    role role;                 /* mapped from the role claim; ROLE_UNSET = no cartgate role */
    bool provision;            /* create the user when unknown */
} access_oidc_identity;

/* Matches (by subject; else an existing user of that name that has neither a subject nor a
 * local password, which is then linked) or provisions the user, sets its role to the mapped
 * one, and opens a session. ACCESS_DENIED (with err saying why) when there is no role, the
 * user is disabled or unknown without provisioning. */
int access_login_oidc(access_ctx *a, const access_oidc_identity *id, const char *source, access_principal *out,
                      char *cookie, fhir_error *err);

/* Checks a session cookie value: ACCESS_OK with *out, or ACCESS_DENIED (unknown, expired,
 * user disabled). Extends the idle timeout. -1 on a store error. */
int access_check_session(access_ctx *a, const char *cookie, const char *source, access_principal *out,
                         fhir_error *err);
/* Checks a bearer token (per-user API token or the shared service token). */
int access_check_bearer(access_ctx *a, const char *token, const char *source, access_principal *out,
                        fhir_error *err);
/* Ends the session of cookie (audited as sign-out when p is non-NULL). */
int access_logout(access_ctx *a, const char *cookie, const access_principal *p, fhir_error *err);

/* ---- CSRF and the audit --------------------------------------------------------------------- */

/* The CSRF token of a session principal into out (ACCESS_CSRF_LEN); empty for others. */
void access_csrf_token(const access_principal *p, char out[ACCESS_CSRF_LEN]);
/* true when token is the principal's CSRF token (constant time); false for non-sessions. */
bool access_csrf_check(const access_principal *p, const char *token);

/* The audit actor of p (strings borrowed from p and reason). */
store_actor access_actor(const access_principal *p, const char *reason);
/* Appends an audit row for p (no referral). */
int access_audit(access_ctx *a, const access_principal *p, const char *action, const char *detail,
                 const char *reason, fhir_error *err);

/* Validates a user name; 0 or -1 with err. */
int access_name_check(const char *name, fhir_error *err);

#endif
