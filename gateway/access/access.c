/* access — users, sign-in, sessions, CSRF, API tokens (see access.h). */
#include "access.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_auth.h"
#include "fhir_clock.h"
#include "fhir_log.h"
#include "pwhash.h"

#define TOKEN_PREFIX "cgt_"
#define TOUCH_EVERY_MS 60000   /* a session's last_seen / a token's last_used is written at most this often */

struct access_ctx {
    store *st;
    access_config cfg;
    char *shared_token;
    char *dummy_hash;          /* scrypt string verified for unknown names (same cost) */
};

static int64_t def64(int64_t v, int64_t d)
{
    return v > 0 ? v : d;
}

access_ctx *access_new(store *st, const access_config *cfg)
{
    access_ctx *a = calloc(1, sizeof *a);
    if (!a)
        abort();
    a->st = st;
    if (cfg)
        a->cfg = *cfg;
    a->cfg.session_idle_s = def64(a->cfg.session_idle_s, 1800);
    a->cfg.session_max_s = def64(a->cfg.session_max_s, 43200);
    a->cfg.lockout_threshold = a->cfg.lockout_threshold > 0 ? a->cfg.lockout_threshold : 5;
    a->cfg.lockout_base_s = def64(a->cfg.lockout_base_s, 30);
    a->cfg.lockout_max_s = def64(a->cfg.lockout_max_s, 900);
    if (a->cfg.password_min_len < PWHASH_MIN_LEN)
        a->cfg.password_min_len = PWHASH_MIN_LEN;
    a->cfg.token_max_days = def64(a->cfg.token_max_days, 3650);
    if (a->cfg.kdf.ln == 0)
        a->cfg.kdf = pwhash_defaults();
    return a;
}

void access_free(access_ctx *a)
{
    if (!a)
        return;
    if (a->shared_token) {
        OPENSSL_cleanse(a->shared_token, strlen(a->shared_token));
        free(a->shared_token);
    }
    free(a->dummy_hash);
    free(a);
}

const access_config *access_get_config(const access_ctx *a)
{
    return &a->cfg;
}

void access_set_shared_token(access_ctx *a, const char *token)
{
    if (a->shared_token) {
        OPENSSL_cleanse(a->shared_token, strlen(a->shared_token));
        free(a->shared_token);
        a->shared_token = NULL;
    }
    if (token && *token && !(a->shared_token = strdup(token)))
        abort();
}

void access_principal_local(access_principal *p, const char *os_user)
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "local:%s", os_user && *os_user ? os_user : "unknown");
    p->role = ROLE_ADMIN;
    p->mask = role_grants(ROLE_ADMIN);
    p->via = ACCESS_VIA_LOCAL;
    snprintf(p->source, sizeof p->source, "local");
}

/* ---- small helpers ------------------------------------------------------------------------ */

static void sha256(const void *data, size_t n, unsigned char out[STORE_SECRET_HASH])
{
    if (EVP_Digest(data, n, out, NULL, EVP_sha256(), NULL) != 1)
        abort();
}

static void random_bytes(unsigned char *b, size_t n)
{
    if (RAND_bytes(b, (int)n) != 1)
        abort(); /* no randomness: a broken invariant, never hand out guessable ids */
}

/* raw 32 bytes -> base64url (43 chars) into out. */
static void b64_32(const unsigned char raw[32], char *out, size_t outn)
{
    char *s = fhir_auth_b64url_encode(raw, 32);
    if (!s)
        abort();
    snprintf(out, outn, "%s", s);
    free(s);
}

/* base64url text of exactly 32 bytes -> raw; 0 or -1. */
static int unb64_32(const char *s, size_t n, unsigned char raw[32])
{
    if (n != 43)
        return -1;
    size_t len = 0;
    unsigned char *d = fhir_auth_b64url_decode(s, n, &len);
    int rc = d && len == 32 ? 0 : -1;
    if (!rc)
        memcpy(raw, d, 32);
    free(d);
    return rc;
}

int access_name_check(const char *name, fhir_error *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= ACCESS_NAME_MAX)
        return fhir_error_set(err, "user name must be 1..%d characters", ACCESS_NAME_MAX - 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '@' && c != '-')
            return fhir_error_set(err, "user name may hold only letters, digits and . _ @ -");
    }
    return 0;
}

static void lower_name(const char *name, char out[ACCESS_NAME_MAX])
{
    size_t i = 0;
    for (; name && name[i] && i + 1 < ACCESS_NAME_MAX; i++)
        out[i] = (char)tolower((unsigned char)name[i]);
    out[i] = 0;
}

store_actor access_actor(const access_principal *p, const char *reason)
{
    store_actor a = {0};
    if (!p)
        return a;
    a.name = p->name;
    a.user_id = p->user_id;
    a.role = p->role > ROLE_PUBLIC ? role_name(p->role) : NULL;
    a.source = p->source[0] ? p->source : NULL;
    a.reason = reason;
    return a;
}

int access_audit(access_ctx *a, const access_principal *p, const char *action, const char *detail,
                 const char *reason, fhir_error *err)
{
    store_actor who = access_actor(p, reason);
    return store_audit_actor(a->st, &who, action, 0, NULL, NULL, detail, err);
}

static void fill_principal(access_principal *p, const store_user *u, role r, access_via via, const char *source)
{
    memset(p, 0, sizeof *p);
    p->user_id = u->id;
    snprintf(p->name, sizeof p->name, "%s", u->name);
    p->role = r;
    p->mask = role_grants(r);
    p->service = u->service;
    p->via = via;
    snprintf(p->source, sizeof p->source, "%s", source ? source : "");
}

/* Runs fn inside one store transaction. */
static int in_tx(access_ctx *a, fhir_error *err, int (*fn)(access_ctx *, void *, fhir_error *), void *ctx)
{
    if (store_begin(a->st, err))
        return -1;
    int rc = fn(a, ctx, err);
    if (rc < 0) {
        store_rollback(a->st);
        return rc;
    }
    if (store_commit(a->st, err))
        return -1;
    return rc;
}

/* ---- users -------------------------------------------------------------------------------- */

typedef struct user_op {
    const char *name, *display, *pw_hash, *low;
    role r;
    bool service, flag;
    const access_principal *by;
} user_op;

/* A change to one existing user: loaded by name, inside one transaction with its audit row. */
typedef int (*user_fn)(access_ctx *a, const store_user *u, void *op, fhir_error *err);

typedef struct with_user_ctx {
    const char *name;
    user_fn fn;
    void *op;
} with_user_ctx;

static int with_user_tx(access_ctx *a, void *ctx, fhir_error *err)
{
    with_user_ctx *w = ctx;
    store_user u;
    int f = store_user_get(a->st, w->name, &u, err);
    if (f <= 0)
        return f < 0 ? -1 : fhir_error_set(err, "no such user: %s", w->name);
    int rc = w->fn(a, &u, w->op, err);
    store_user_free(&u);
    return rc;
}

static int with_user(access_ctx *a, const char *name, user_fn fn, void *op, fhir_error *err)
{
    with_user_ctx w = {name, fn, op};
    return in_tx(a, err, with_user_tx, &w);
}

/* The scrypt string of a new password that passes the policy (NULL password: *hash NULL). */
static int new_hash(access_ctx *a, const char *password, char **hash, fhir_error *err)
{
    *hash = NULL;
    if (!password)
        return 0;
    if (pwhash_check_policy(password, a->cfg.password_min_len, err))
        return -1;
    return (*hash = pwhash_hash(password, &a->cfg.kdf, err)) ? 0 : -1;
}

static int do_user_add(access_ctx *a, void *ctx, fhir_error *err)
{
    user_op *o = ctx;
    store_user u = {.name = (char *)o->name, .display_name = (char *)o->display, .role = (char *)role_name(o->r),
                    .service = o->service, .pw_hash = (char *)o->pw_hash};
    int64_t id;
    if (store_user_add(a->st, &u, &id, err)) {
        if (err && err->code == STORE_CONFLICT) {
            fhir_error_set(err, "user %s exists already", o->name);
            err->code = STORE_CONFLICT;
        }
        return -1;
    }
    char detail[256];
    snprintf(detail, sizeof detail, "user %s added (id %lld, role %s%s%s)", o->name, (long long)id,
             role_name(o->r), o->service ? ", service" : "", o->pw_hash ? ", local password" : "");
    return access_audit(a, o->by, "user-add", detail, NULL, err);
}

int access_user_add(access_ctx *a, const char *name, const char *display_name, role r, bool service,
                    const char *password, const access_principal *by, fhir_error *err)
{
    if (access_name_check(name, err))
        return -1;
    if (r < ROLE_VIEWER || r >= ROLE_N_)
        return fhir_error_set(err, "a user needs a role: viewer, clinician, intake or admin");
    if (service && password)
        return fhir_error_set(err, "a service account signs in with tokens only, not a password");
    char *hash;
    if (new_hash(a, password, &hash, err))
        return -1;
    user_op o = {.name = name, .display = display_name, .pw_hash = hash, .r = r, .service = service, .by = by};
    int rc = in_tx(a, err, do_user_add, &o);
    free(hash);
    return rc;
}

static int do_user_passwd(access_ctx *a, const store_user *u, void *op, fhir_error *err)
{
    user_op *o = op;
    if (u->service && o->pw_hash)
        return fhir_error_set(err, "%s is a service account: tokens only, no password", u->name);
    if (store_user_set_password(a->st, u->id, o->pw_hash, err) < 0 || store_session_delete_user(a->st, u->id, err) < 0 ||
        store_login_clear(a->st, o->low, err))
        return -1;
    char detail[200];
    snprintf(detail, sizeof detail, "password of %s %s; sessions ended", u->name, o->pw_hash ? "set" : "removed");
    return access_audit(a, o->by, "user-passwd", detail, NULL, err);
}

int access_user_passwd(access_ctx *a, const char *name, const char *password, const access_principal *by,
                       fhir_error *err)
{
    char *hash;
    if (new_hash(a, password, &hash, err))
        return -1;
    char low[ACCESS_NAME_MAX];
    lower_name(name, low);
    user_op o = {.pw_hash = hash, .by = by, .low = low};
    int rc = with_user(a, name, do_user_passwd, &o, err);
    free(hash);
    return rc;
}

static int do_user_disable(access_ctx *a, const store_user *u, void *op, fhir_error *err)
{
    user_op *o = op;
    if (store_user_set_disabled(a->st, u->id, o->flag, err) < 0 ||
        (o->flag && store_session_delete_user(a->st, u->id, err) < 0))
        return -1;
    char detail[200];
    snprintf(detail, sizeof detail, "user %s %s", u->name, o->flag ? "disabled; sessions ended" : "enabled");
    return access_audit(a, o->by, o->flag ? "user-disable" : "user-enable", detail, NULL, err);
}

int access_user_disable(access_ctx *a, const char *name, bool disabled, const access_principal *by, fhir_error *err)
{
    user_op o = {.flag = disabled, .by = by};
    return with_user(a, name, do_user_disable, &o, err);
}

static int do_user_role(access_ctx *a, const store_user *u, void *op, fhir_error *err)
{
    user_op *o = op;
    if (store_user_set_role(a->st, u->id, role_name(o->r), err) < 0)
        return -1;
    char detail[200];
    snprintf(detail, sizeof detail, "role of %s: %s -> %s", u->name, u->role, role_name(o->r));
    return access_audit(a, o->by, "user-role", detail, NULL, err);
}

int access_user_set_role(access_ctx *a, const char *name, role r, const access_principal *by, fhir_error *err)
{
    if (r < ROLE_VIEWER || r >= ROLE_N_)
        return fhir_error_set(err, "role must be viewer, clinician, intake or admin");
    user_op o = {.r = r, .by = by};
    return with_user(a, name, do_user_role, &o, err);
}

/* ---- tokens ------------------------------------------------------------------------------- */

typedef struct token_op {
    const char *label;
    role r;
    int64_t ttl_days, id;
    unsigned char hash[STORE_SECRET_HASH];
    const access_principal *by;
} token_op;

static int do_token_create(access_ctx *a, const store_user *u, void *op, fhir_error *err)
{
    token_op *o = op;
    role ur;
    if (role_parse(u->role, &ur))
        return fhir_error_set(err, "user %s has no valid role", u->name);
    if (o->r == ROLE_UNSET)
        o->r = ur;
    if (role_grants(o->r) & ~role_grants(ur))
        return fhir_error_set(err, "a token cannot hold more than its user: %s is %s, not %s", u->name, u->role,
                              role_name(o->r));
    int64_t expires = fhir_clock_now_ms() + o->ttl_days * 86400000LL;
    if (store_token_put(a->st, u->id, o->label, o->hash, role_name(o->r), expires, &o->id, err))
        return -1;
    char detail[300], when[40];
    fhir_clock_format_instant(expires, when, sizeof when);
    snprintf(detail, sizeof detail, "token %lld for %s (role %s, label %.100s, expires %s)", (long long)o->id, u->name,
             role_name(o->r), o->label ? o->label : "-", when);
    return access_audit(a, o->by, "token-create", detail, NULL, err);
}

int access_token_create(access_ctx *a, const char *name, role r, int64_t ttl_days, const char *label,
                        const access_principal *by, char token_out[ACCESS_TOKEN_LEN], int64_t *id_out,
                        fhir_error *err)
{
    if (ttl_days < 1 || ttl_days > a->cfg.token_max_days)
        return fhir_error_set(err, "token lifetime must be 1..%lld days", (long long)a->cfg.token_max_days);
    if (r != ROLE_UNSET && (r < ROLE_VIEWER || r >= ROLE_N_))
        return fhir_error_set(err, "token role must be viewer, clinician, intake or admin");
    unsigned char raw[32];
    random_bytes(raw, sizeof raw);
    char b64[48];
    b64_32(raw, b64, sizeof b64);
    OPENSSL_cleanse(raw, sizeof raw);
    char tok[ACCESS_TOKEN_LEN];
    snprintf(tok, sizeof tok, TOKEN_PREFIX "%s", b64);
    token_op o = {.label = label, .r = r, .ttl_days = ttl_days, .by = by};
    sha256(tok, strlen(tok), o.hash);
    int rc = with_user(a, name, do_token_create, &o, err);
    if (rc == 0) {
        memcpy(token_out, tok, sizeof tok);
        if (id_out)
            *id_out = o.id;
    }
    OPENSSL_cleanse(tok, sizeof tok);
    return rc;
}

static int do_token_revoke(access_ctx *a, const store_user *u, void *op, fhir_error *err)
{
    token_op *o = op;
    int rc = store_token_revoke(a->st, u->id, o->id, err);
    if (rc <= 0)
        return rc < 0 ? -1 : fhir_error_set(err, "user %s has no unrevoked token %lld", u->name, (long long)o->id);
    char detail[200];
    snprintf(detail, sizeof detail, "token %lld of %s revoked", (long long)o->id, u->name);
    return access_audit(a, o->by, "token-revoke", detail, NULL, err);
}

int access_token_revoke(access_ctx *a, const char *name, int64_t id, const access_principal *by, fhir_error *err)
{
    token_op o = {.id = id, .by = by};
    return with_user(a, name, do_token_revoke, &o, err);
}

/* ---- sessions ------------------------------------------------------------------------------- */

/* Opens a session for u (inside the caller's transaction); cookie gets the id. */
static int open_session(access_ctx *a, const store_user *u, const char *source, char *cookie, unsigned char key[32],
                        fhir_error *err)
{
    /* sessions past their timeouts go when a new one comes (the table stays small) */
    int64_t now = fhir_clock_now_ms();
    if (store_session_prune(a->st, now, a->cfg.session_idle_s * 1000, err) < 0)
        return -1;
    random_bytes(key, 32);
    unsigned char h[STORE_SECRET_HASH];
    sha256(key, 32, h);
    int64_t expires = now + a->cfg.session_max_s * 1000;
    if (store_session_put(a->st, h, u->id, source, expires, err) || store_user_touch_login(a->st, u->id, err) < 0)
        return -1;
    b64_32(key, cookie, ACCESS_COOKIE_LEN);
    return 0;
}

static void lockout_delay(const access_ctx *a, int failures, int64_t *delay_s)
{
    *delay_s = 0;
    if (failures < a->cfg.lockout_threshold)
        return;
    int64_t d = a->cfg.lockout_base_s;
    for (int i = a->cfg.lockout_threshold; i < failures && d < a->cfg.lockout_max_s; i++)
        d *= 2;
    *delay_s = d < a->cfg.lockout_max_s ? d : a->cfg.lockout_max_s;
}

typedef struct login_op {
    const char *name, *password, *source;
    char low[ACCESS_NAME_MAX];
    access_principal *out;
    char *cookie;
    int64_t retry_after_s;
    char why[160];
} login_op;

static int do_login_password(access_ctx *a, void *ctx, fhir_error *err)
{
    login_op *o = ctx;
    int64_t now = fhir_clock_now_ms();
    int failures;
    int64_t locked_until;
    if (store_login_get(a->st, o->low, &failures, &locked_until, err))
        return -1;
    store_user u;
    int found = store_user_get(a->st, o->name, &u, err);
    if (found < 0)
        return -1;
    access_principal who;
    memset(&who, 0, sizeof who);
    snprintf(who.name, sizeof who.name, "%s", found ? u.name : "(unknown user)");
    who.user_id = found ? u.id : 0;
    snprintf(who.source, sizeof who.source, "%s", o->source ? o->source : "");
    role r = ROLE_UNSET;
    if (found && role_parse(u.role, &r) == 0)
        who.role = r;
    int result;
    if (locked_until > now) {
        o->retry_after_s = (locked_until - now + 999) / 1000;
        snprintf(o->why, sizeof o->why, "locked after %d failed sign-ins", failures);
        result = ACCESS_LOCKED;
    } else {
        /* the same scrypt work whether or not the name exists */
        const char *stored = found && u.pw_hash ? u.pw_hash : NULL;
        if (!stored) {
            if (!a->dummy_hash && !(a->dummy_hash = pwhash_hash("cartgate-no-such-user", &a->cfg.kdf, err))) {
                if (found)
                    store_user_free(&u);
                return -1;
            }
            stored = a->dummy_hash;
        }
        bool match = pwhash_verify(o->password ? o->password : "", stored, NULL);
        if (!found || !u.pw_hash || !match) {
            snprintf(o->why, sizeof o->why, "%s", !found ? "unknown user" : !u.pw_hash ? "no local password"
                                                                                       : "wrong password");
            result = ACCESS_DENIED;
        } else if (u.disabled) {
            snprintf(o->why, sizeof o->why, "user disabled");
            result = ACCESS_DENIED;
        } else if (u.service) {
            snprintf(o->why, sizeof o->why, "service account");
            result = ACCESS_DENIED;
        } else if (r == ROLE_UNSET) {
            snprintf(o->why, sizeof o->why, "no valid role");
            result = ACCESS_DENIED;
        } else {
            result = ACCESS_OK;
        }
        if (result == ACCESS_DENIED && (!found || !u.pw_hash || !match)) {
            failures++;
            int64_t delay;
            lockout_delay(a, failures, &delay);
            if (store_login_put(a->st, o->low, failures, now, delay ? now + delay * 1000 : 0, err)) {
                if (found)
                    store_user_free(&u);
                return -1;
            }
            if (delay)
                snprintf(o->why + strlen(o->why), sizeof o->why - strlen(o->why),
                         "; %d failures, locked for %lld s", failures, (long long)delay);
        }
    }
    int rc;
    if (result == ACCESS_OK) {
        fill_principal(o->out, &u, r, ACCESS_VIA_SESSION, o->source);
        rc = store_login_clear(a->st, o->low, err) || open_session(a, &u, o->source, o->cookie, o->out->session_key, err) ||
                     access_audit(a, o->out, "sign-in", "password sign-in", NULL, err)
                 ? -1
                 : ACCESS_OK;
    } else {
        char detail[200];
        snprintf(detail, sizeof detail, "password sign-in refused: %s", o->why);
        rc = access_audit(a, &who, "sign-in-failed", detail, NULL, err) ? -1 : result;
    }
    if (found)
        store_user_free(&u);
    return rc;
}

int access_login_password(access_ctx *a, const char *name, const char *password, const char *source,
                          access_principal *out, char *cookie, int64_t *retry_after_s, fhir_error *err)
{
    memset(out, 0, sizeof *out);
    if (retry_after_s)
        *retry_after_s = 0;
    if (!name || !*name || strlen(name) >= ACCESS_NAME_MAX || !password || strlen(password) > PWHASH_MAX_LEN) {
        fhir_error_set(err, "malformed sign-in");
        return ACCESS_DENIED;
    }
    login_op o = {.name = name, .password = password, .source = source, .out = out, .cookie = cookie};
    lower_name(name, o.low);
    int rc = in_tx(a, err, do_login_password, &o);
    if (retry_after_s)
        *retry_after_s = o.retry_after_s;
    if (rc == ACCESS_OK)
        fhir_log(FHIR_LOG_INFO, "access.sign_in", "user=%lld via=password source=%s", (long long)out->user_id,
                 source ? source : "");
    else if (rc > 0) {
        fhir_error_set(err, "%s", o.why);
        fhir_log(FHIR_LOG_WARN, "access.sign_in_failed", "via=password source=%s locked=%s",
                 source ? source : "", rc == ACCESS_LOCKED ? "true" : "false");
    }
    return rc;
}

typedef struct oidc_op {
    const access_oidc_identity *id;
    const char *source;
    access_principal *out;
    char *cookie;
    char why[200];
} oidc_op;

static int do_login_oidc(access_ctx *a, void *ctx, fhir_error *err)
{
    oidc_op *o = ctx;
    const access_oidc_identity *id = o->id;
    store_user u;
    int found = store_user_get_subject(a->st, id->subject, &u, err);
    if (found < 0)
        return -1;
    if (!found) {
        found = store_user_get(a->st, id->name, &u, err);
        if (found < 0)
            return -1;
        if (found && (u.oidc_subject || u.pw_hash || u.service)) {
            snprintf(o->why, sizeof o->why, "the name %.64s belongs to another account", id->name);
            store_user_free(&u);
            found = -2;
        } else if (found && store_user_set_subject(a->st, u.id, id->subject, err) < 0) {
            store_user_free(&u);
            return -1;
        }
    }
    if (found == 0 && !o->why[0]) {
        if (!id->provision)
            snprintf(o->why, sizeof o->why, "unknown user and provisioning is off");
        else if (id->role == ROLE_UNSET)
            snprintf(o->why, sizeof o->why, "no cartgate role in the role claim");
        else {
            store_user nu = {.name = (char *)id->name, .display_name = (char *)id->display_name,
                             .role = (char *)role_name(id->role), .oidc_subject = (char *)id->subject};
            int64_t uid;
            if (store_user_add(a->st, &nu, &uid, err))
                return -1;
            if (store_user_get_id(a->st, uid, &u, err) != 1)
                return -1;
            found = 1;
            char detail[300];
            snprintf(detail, sizeof detail, "user %s provisioned from OpenID Connect (id %lld, role %s)", u.name,
                     (long long)uid, u.role);
            access_principal sys;
            memset(&sys, 0, sizeof sys);
            snprintf(sys.name, sizeof sys.name, "oidc");
            snprintf(sys.source, sizeof sys.source, "%s", o->source ? o->source : "");
            if (access_audit(a, &sys, "user-add", detail, NULL, err)) {
                store_user_free(&u);
                return -1;
            }
        }
    }
    if (found == 1 && !o->why[0]) {
        if (u.disabled)
            snprintf(o->why, sizeof o->why, "user disabled");
        else if (id->role == ROLE_UNSET)
            snprintf(o->why, sizeof o->why, "no cartgate role in the role claim");
        else if (strcmp(u.role, role_name(id->role))) {
            char detail[200];
            snprintf(detail, sizeof detail, "role of %s from the identity provider: %s -> %s", u.name, u.role,
                     role_name(id->role));
            access_principal sys;
            memset(&sys, 0, sizeof sys);
            snprintf(sys.name, sizeof sys.name, "oidc");
            snprintf(sys.source, sizeof sys.source, "%s", o->source ? o->source : "");
            if (store_user_set_role(a->st, u.id, role_name(id->role), err) < 0 ||
                access_audit(a, &sys, "user-role", detail, NULL, err)) {
                store_user_free(&u);
                return -1;
            }
        }
        if (!o->why[0] && id->display_name && (!u.display_name || strcmp(u.display_name, id->display_name)) &&
            store_user_set_display(a->st, u.id, id->display_name, err) < 0) {
            store_user_free(&u);
            return -1;
        }
    }
    int rc;
    if (found == 1 && !o->why[0]) {
        fill_principal(o->out, &u, id->role, ACCESS_VIA_SESSION, o->source);
        rc = open_session(a, &u, o->source, o->cookie, o->out->session_key, err) ||
                     access_audit(a, o->out, "sign-in", "OpenID Connect sign-in", NULL, err)
                 ? -1
                 : ACCESS_OK;
    } else {
        access_principal who;
        memset(&who, 0, sizeof who);
        snprintf(who.name, sizeof who.name, "%s", found == 1 ? u.name : "(unknown user)");
        who.user_id = found == 1 ? u.id : 0;
        snprintf(who.source, sizeof who.source, "%s", o->source ? o->source : "");
        char detail[300];
        snprintf(detail, sizeof detail, "OpenID Connect sign-in refused: %s", o->why);
        rc = access_audit(a, &who, "sign-in-failed", detail, NULL, err) ? -1 : ACCESS_DENIED;
    }
    if (found == 1)
        store_user_free(&u);
    return rc;
}

int access_login_oidc(access_ctx *a, const access_oidc_identity *id, const char *source, access_principal *out,
                      char *cookie, fhir_error *err)
{
    memset(out, 0, sizeof *out);
    if (!id->subject || !*id->subject || access_name_check(id->name, err)) {
        fhir_error_prefix(err, "OpenID Connect identity");
        return ACCESS_DENIED;
    }
    oidc_op o = {.id = id, .source = source, .out = out, .cookie = cookie};
    int rc = in_tx(a, err, do_login_oidc, &o);
    if (rc == ACCESS_OK)
        fhir_log(FHIR_LOG_INFO, "access.sign_in", "user=%lld via=oidc source=%s", (long long)out->user_id,
                 source ? source : "");
    else if (rc > 0) {
        fhir_error_set(err, "%s", o.why);
        fhir_log(FHIR_LOG_WARN, "access.sign_in_failed", "via=oidc source=%s", source ? source : "");
    }
    return rc;
}

int access_check_session(access_ctx *a, const char *cookie, const char *source, access_principal *out,
                         fhir_error *err)
{
    memset(out, 0, sizeof *out);
    unsigned char key[32], h[STORE_SECRET_HASH];
    if (!cookie || unb64_32(cookie, strlen(cookie), key))
        return ACCESS_DENIED;
    sha256(key, 32, h);
    store_session ss;
    int f = store_session_get(a->st, h, &ss, err);
    if (f <= 0)
        return f < 0 ? -1 : ACCESS_DENIED;
    int64_t now = fhir_clock_now_ms();
    if (ss.expires_ms <= now || ss.last_seen_ms + a->cfg.session_idle_s * 1000 <= now) {
        store_session_delete(a->st, h, err);
        return ACCESS_DENIED;
    }
    store_user u;
    f = store_user_get_id(a->st, ss.user_id, &u, err);
    if (f <= 0)
        return f < 0 ? -1 : ACCESS_DENIED;
    role r;
    int rc = ACCESS_DENIED;
    if (!u.disabled && !u.service && role_parse(u.role, &r) == 0) {
        fill_principal(out, &u, r, ACCESS_VIA_SESSION, source);
        memcpy(out->session_key, key, 32);
        rc = ACCESS_OK;
        if (now - ss.last_seen_ms >= TOUCH_EVERY_MS || now - ss.last_seen_ms >= a->cfg.session_idle_s * 100)
            if (store_session_touch(a->st, h, now, err))
                rc = -1;
    }
    OPENSSL_cleanse(key, sizeof key);
    store_user_free(&u);
    return rc;
}

int access_check_bearer(access_ctx *a, const char *token, const char *source, access_principal *out,
                        fhir_error *err)
{
    memset(out, 0, sizeof *out);
    if (!token || !*token)
        return ACCESS_DENIED;
    size_t n = strlen(token);
    if (a->shared_token) {
        size_t m = strlen(a->shared_token);
        unsigned char diff = (unsigned char)(n != m);
        for (size_t i = 0; i < m; i++)
            diff |= (unsigned char)(a->shared_token[i] ^ (i < n ? token[i] : 0));
        if (diff == 0) {
            snprintf(out->name, sizeof out->name, ACCESS_SHARED_SERVICE);
            out->role = ROLE_ADMIN;
            out->mask = role_grants(ROLE_CLINICIAN) | role_grants(ROLE_ADMIN);
            out->service = true;
            out->via = ACCESS_VIA_SHARED;
            snprintf(out->source, sizeof out->source, "%s", source ? source : "");
            return ACCESS_OK;
        }
    }
    if (n != strlen(TOKEN_PREFIX) + 43 || strncmp(token, TOKEN_PREFIX, strlen(TOKEN_PREFIX)))
        return ACCESS_DENIED;
    unsigned char h[STORE_SECRET_HASH];
    sha256(token, n, h);
    store_token t;
    int f = store_token_get(a->st, h, &t, err);
    if (f <= 0)
        return f < 0 ? -1 : ACCESS_DENIED;
    int64_t now = fhir_clock_now_ms();
    if (t.revoked_ms || (t.expires_ms && t.expires_ms <= now))
        return ACCESS_DENIED;
    store_user u;
    f = store_user_get_id(a->st, t.user_id, &u, err);
    if (f <= 0)
        return f < 0 ? -1 : ACCESS_DENIED;
    role tr, ur;
    int rc = ACCESS_DENIED;
    if (!u.disabled && role_parse(t.role, &tr) == 0 && role_parse(u.role, &ur) == 0) {
        fill_principal(out, &u, tr, ACCESS_VIA_TOKEN, source);
        out->mask = role_grants(tr) & role_grants(ur);
        out->token_id = t.id;
        rc = out->mask ? ACCESS_OK : ACCESS_DENIED;
        if (rc == ACCESS_OK && now - t.last_used_ms >= TOUCH_EVERY_MS && store_token_touch(a->st, t.id, now, err))
            rc = -1;
    }
    store_user_free(&u);
    return rc;
}

int access_logout(access_ctx *a, const char *cookie, const access_principal *p, fhir_error *err)
{
    unsigned char key[32], h[STORE_SECRET_HASH];
    if (!cookie || unb64_32(cookie, strlen(cookie), key))
        return 0;
    sha256(key, 32, h);
    OPENSSL_cleanse(key, sizeof key);
    int n = store_session_delete(a->st, h, err);
    if (n < 0)
        return -1;
    if (n > 0 && p) {
        fhir_log(FHIR_LOG_INFO, "access.sign_out", "user=%lld source=%s", (long long)p->user_id,
                 p->source);
        return access_audit(a, p, "sign-out", "session ended by the user", NULL, err);
    }
    return 0;
}

/* ---- CSRF ------------------------------------------------------------------------------------ */

static const char CSRF_LABEL[] = "cartgate-csrf-v1";

void access_csrf_token(const access_principal *p, char out[ACCESS_CSRF_LEN])
{
    out[0] = 0;
    if (!p || p->via != ACCESS_VIA_SESSION)
        return;
    unsigned char mac[32];
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), p->session_key, 32, (const unsigned char *)CSRF_LABEL, sizeof CSRF_LABEL - 1, mac,
              &len) ||
        len != 32)
        abort();
    b64_32(mac, out, ACCESS_CSRF_LEN);
}

bool access_csrf_check(const access_principal *p, const char *token)
{
    if (!p || p->via != ACCESS_VIA_SESSION || !token)
        return false;
    char want[ACCESS_CSRF_LEN];
    access_csrf_token(p, want);
    size_t n = strlen(want);
    if (strlen(token) != n || n == 0)
        return false;
    return CRYPTO_memcmp(want, token, n) == 0;
}
