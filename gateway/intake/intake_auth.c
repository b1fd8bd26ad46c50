/* intake_auth — SMART Backend Services token endpoint of a center. See intake_auth.h. */
#include "intake_auth.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_alloc.h"
#include "fhir_arena.h"
#include "fhir_auth.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "jose.h"

#define JWKS_FILE_MAX (256u * 1024u)

typedef struct client {
    char *id;
    jose_jwks *keys;
} client;

struct intake_auth {
    client v[INTAKE_AUTH_MAX_CLIENTS];
    size_t n;
    char *token_url;
    int ttl_s;
};

static const char *const ALGS[] = {"RS384", "ES384", NULL};

intake_auth *intake_auth_new(const char *const *clients, size_t n, const char *token_url, int ttl_s,
                             fhir_error *err)
{
    if (n > INTAKE_AUTH_MAX_CLIENTS) {
        fhir_error_set(err, "intake.clients: at most %d clients", INTAKE_AUTH_MAX_CLIENTS);
        return NULL;
    }
    intake_auth *a = fhir_xcalloc(1, sizeof *a);
    a->token_url = fhir_xstrdup(token_url ? token_url : "");
    a->ttl_s = ttl_s > 0 ? ttl_s : 300;
    for (size_t i = 0; i < n; i++) {
        const char *sp = strchr(clients[i], ' ');
        if (!sp || sp == clients[i] || !sp[1] || strchr(sp + 1, ' ') ||
            (size_t)(sp - clients[i]) >= INTAKE_AUTH_CLIENT_MAX) {
            fhir_error_set(err, "intake.clients: \"%.200s\" is not \"CLIENT_ID JWKS_FILE\"", clients[i]);
            intake_auth_free(a);
            return NULL;
        }
        fhir_buf b;
        fhir_buf_init(&b, JWKS_FILE_MAX);
        if (fhir_buf_read_file(&b, sp + 1, err)) {
            fhir_buf_free(&b);
            fhir_error_prefix(err, "intake.clients: the key set of %.*s", (int)(sp - clients[i]), clients[i]);
            intake_auth_free(a);
            return NULL;
        }
        jose_jwks *k = jose_jwks_parse(b.data ? b.data : "", b.len, NULL, err);
        fhir_buf_free(&b);
        if (!k) {
            fhir_error_prefix(err, "intake.clients: %s", sp + 1);
            intake_auth_free(a);
            return NULL;
        }
        a->v[a->n].id = fhir_xmalloc((size_t)(sp - clients[i]) + 1);
        memcpy(a->v[a->n].id, clients[i], (size_t)(sp - clients[i]));
        a->v[a->n].id[sp - clients[i]] = 0;
        a->v[a->n].keys = k;
        a->n++;
    }
    return a;
}

void intake_auth_free(intake_auth *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++) {
        free(a->v[i].id);
        jose_jwks_free(a->v[i].keys);
    }
    free(a->token_url);
    free(a);
}

const char *intake_auth_token_url(const intake_auth *a)
{
    return a->token_url;
}

int intake_auth_ttl(const intake_auth *a)
{
    return a->ttl_s;
}

/* A refusal of the client or its assertion (401). */
#define REFUSE(...)                                                                              \
    do {                                                                                         \
        fhir_error_set(err, __VA_ARGS__);                                                        \
        err->code = 401;                                                                         \
    } while (0)

static void sha256(const char *s, unsigned char out[STORE_SECRET_HASH])
{
    if (EVP_Digest(s, strlen(s), out, NULL, EVP_sha256(), NULL) != 1)
        abort();
}

int intake_auth_grant(intake_auth *a, store *st, const char *assertion, char *token_out, char *client_out,
                      fhir_error *err)
{
    token_out[0] = client_out[0] = 0;
    if (!assertion || !*assertion || strlen(assertion) > JOSE_MAX_TOKEN) {
        REFUSE("no client assertion");
        return -1;
    }
    fhir_arena *ar = fhir_arena_new(0);
    int rc = -1;
    const fhir_node *pl = jose_peek(assertion, 1, ar);
    const char *iss = pl ? fhir_node_str(fhir_node_get(pl, "iss")) : NULL;
    const client *c = NULL;
    for (size_t i = 0; iss && i < a->n && !c; i++)
        if (!strcmp(a->v[i].id, iss))
            c = &a->v[i];
    if (!pl) {
        REFUSE("the client assertion is not a compact JWS");
        goto out;
    }
    if (!c) {
        REFUSE("unknown client %.200s (not registered in intake.clients)", iss ? iss : "(none)");
        goto out;
    }
    fhir_node *claims = NULL;
    fhir_error verr;
    fhir_error_clear(&verr);
    int v = jose_verify(c->keys, assertion, ALGS, ar, &claims, NULL, &verr);
    if (v != 0) {
        char msg[FHIR_ERROR_MAX + 64];
        snprintf(msg, sizeof msg, "%s", v == JOSE_UNKNOWN_KID ? "the key id is not in the client's key set" : verr.msg);
        REFUSE("bad client assertion: %.300s", msg);
        goto out;
    }
    const char *sub = fhir_node_str(fhir_node_get(claims, "sub"));
    if (!sub || strcmp(sub, c->id)) {
        REFUSE("bad client assertion: sub %.200s is not the client id (iss = sub = client_id)", sub ? sub : "(none)");
        goto out;
    }
    size_t naud = 0;
    if (!jose_aud_has(fhir_node_get(claims, "aud"), a->token_url, &naud)) {
        REFUSE("wrong audience: the assertion's aud must be this token URL (%.300s)", a->token_url);
        goto out;
    }
    int64_t exp = 0, now_s = fhir_clock_now_ms() / 1000;
    if (!fhir_node_int(fhir_node_get(claims, "exp"), &exp)) {
        REFUSE("bad client assertion: no exp");
        goto out;
    }
    if (exp + INTAKE_AUTH_SKEW_S < now_s) {
        REFUSE("bad client assertion: expired");
        goto out;
    }
    if (exp > now_s + INTAKE_AUTH_MAX_LIFETIME_S + INTAKE_AUTH_SKEW_S) {
        REFUSE("bad client assertion: exp more than 5 minutes ahead");
        goto out;
    }
    const char *jti = fhir_node_str(fhir_node_get(claims, "jti"));
    if (!jti || !*jti || strlen(jti) > 256) {
        REFUSE("bad client assertion: no usable jti");
        goto out;
    }
    char iss_key[INTAKE_AUTH_CLIENT_MAX + 16];
    snprintf(iss_key, sizeof iss_key, "intake:%s", c->id);
    int fresh = store_cds_jti_use(st, iss_key, jti, (exp + INTAKE_AUTH_SKEW_S) * 1000, err);
    if (fresh < 0) {
        err->code = 500;
        goto out;
    }
    if (fresh == 0) {
        REFUSE("bad client assertion: jti %.100s was used before (replay)", jti);
        goto out;
    }
    unsigned char raw[32], hash[STORE_SECRET_HASH];
    if (RAND_bytes(raw, sizeof raw) != 1)
        abort(); /* no randomness: never hand out guessable tokens */
    char *t = fhir_auth_b64url_encode(raw, sizeof raw);
    if (!t)
        abort();
    snprintf(token_out, INTAKE_AUTH_TOKEN_MAX, "%s", t);
    free(t);
    sha256(token_out, hash);
    if (store_intake_token_put(st, hash, c->id, fhir_clock_now_ms() + (int64_t)a->ttl_s * 1000, err)) {
        err->code = 500;
        token_out[0] = 0;
        goto out;
    }
    snprintf(client_out, INTAKE_AUTH_CLIENT_MAX, "%s", c->id);
    rc = 0;
out:
    fhir_arena_free(ar);
    return rc;
}

int intake_auth_check(intake_auth *a, store *st, const char *token, char *client_out, fhir_error *err)
{
    (void)a;
    client_out[0] = 0;
    if (!token || !*token || strlen(token) >= INTAKE_AUTH_TOKEN_MAX)
        return 0;
    unsigned char hash[STORE_SECRET_HASH];
    sha256(token, hash);
    return store_intake_token_get(st, hash, client_out, INTAKE_AUTH_CLIENT_MAX, err);
}
