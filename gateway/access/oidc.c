/* oidc — OpenID Connect relying party (see oidc.h). */
#include "oidc.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fhir_alloc.h"
#include "fhir_auth.h"
#include "fhir_buf.h"
#include "fhir_client.h"
#include "fhir_clock.h"
#include "fhir_log.h"

#define MAX_CLIENTS 4
#define MAX_WAITERS 64
#define OIDC_BODY_MAX (1u << 20)

typedef struct role_entry {
    char *group;
    role r;
} role_entry;

typedef struct begin_waiter {
    oidc_begin_fn cb;
    void *ud;
    char return_to[256];
} begin_waiter;

typedef struct flow flow;
struct flow {
    oidc *o;
    oidc_finish_fn cb;
    void *ud;
    oidc_pending p;
    char *id_token;
    bool refetched;
    flow *next;          /* waiting for the JWKS */
    flow *all_next, *all_prev;
};

typedef struct origin_client {
    char *origin;
    fhir_client *c;
} origin_client;

struct oidc {
    struct event_base *base;
    char *issuer, *client_id, *client_secret, *redirect_uri, *scopes, *user_claim, *name_claim, *role_claim,
        *ca_file;
    char **algs;
    size_t n_algs;
    role_entry map[OIDC_MAX_ROLE_MAP];
    size_t n_map;
    bool provision;
    int64_t skew_ms, ttl_ms;
    /* discovery + keys */
    char *auth_ep, *token_ep, *jwks_uri;
    jose_jwks *keys;
    int64_t keys_fetched_ms;
    bool disc_inflight, jwks_inflight;
    int64_t disc_failed_ms;
    char disc_error[FHIR_ERROR_MAX];
    begin_waiter waiters[MAX_WAITERS];
    size_t n_waiters;
    flow *jwks_waiters;
    flow *flows;         /* every live flow (freed by oidc_free) */
    origin_client clients[MAX_CLIENTS];
    oidc_pending pending[OIDC_MAX_PENDING];
    size_t n_pending;
};

static const char *const DEFAULT_ALGS[] = {"RS256", "ES256", "RS384", "RS512", "ES384", "PS256", NULL};

/* ---- URLs ------------------------------------------------------------------------------------ */

static bool loopback_host(const char *h, size_t n)
{
    return (n == 9 && !strncasecmp(h, "127.0.0.1", 9)) || (n == 9 && !strncasecmp(h, "localhost", 9)) ||
           (n == 5 && !strncmp(h, "[::1]", 5));
}

int oidc_check_url(const char *what, const char *url, size_t *origin_len, fhir_error *err)
{
    if (!url || !*url)
        return fhir_error_set(err, "%s is missing", what);
    const char *hostp;
    bool https = !strncasecmp(url, "https://", 8);
    if (https)
        hostp = url + 8;
    else if (!strncasecmp(url, "http://", 7))
        hostp = url + 7;
    else
        return fhir_error_set(err, "%s must be an https URL: %.200s", what, url);
    size_t rest = strcspn(hostp, "/?#");
    if (rest == 0)
        return fhir_error_set(err, "%s has no host: %.200s", what, url);
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == '"' || *c == '<' || *c == '>' || *c == '\\')
            return fhir_error_set(err, "%s holds a space or a character not allowed in a URL", what);
    size_t hostlen = rest;
    const char *colon = NULL;
    if (hostp[0] == '[') {
        const char *close = memchr(hostp, ']', rest);
        if (close)
            hostlen = (size_t)(close - hostp) + 1;
    } else if ((colon = memchr(hostp, ':', rest)))
        hostlen = (size_t)(colon - hostp);
    if (!https && !loopback_host(hostp, hostlen))
        return fhir_error_set(err, "%s must use https (plain http only to a loopback address): %.200s", what, url);
    if (memchr(hostp, '@', rest))
        return fhir_error_set(err, "%s must not carry credentials", what);
    if (origin_len)
        *origin_len = (size_t)(hostp - url) + rest;
    return 0;
}

static fhir_client *client_for(oidc *o, const char *url, fhir_error *err)
{
    size_t olen;
    if (oidc_check_url("URL", url, &olen, err))
        return NULL;
    for (size_t i = 0; i < MAX_CLIENTS; i++)
        if (o->clients[i].origin && strlen(o->clients[i].origin) == olen &&
            !strncasecmp(o->clients[i].origin, url, olen))
            return o->clients[i].c;
    size_t slot = MAX_CLIENTS;
    for (size_t i = 0; i < MAX_CLIENTS; i++)
        if (!o->clients[i].origin) {
            slot = i;
            break;
        }
    if (slot == MAX_CLIENTS) {
        fhir_error_set(err, "the identity provider uses more than %d origins", MAX_CLIENTS);
        return NULL;
    }
    char *origin = strndup(url, olen);
    if (!origin)
        abort();
    fhir_client_config cc = {.name = "oidc",
                             .base_url = origin,
                             .format = FHIR_FORMAT_JSON,
                             .connect_timeout_ms = 10000,
                             .total_timeout_ms = 15000,
                             .max_concurrent = 8,
                             .max_response_bytes = OIDC_BODY_MAX,
                             .ca_file = o->ca_file};
    cc.retry.max_attempts = 2;
    fhir_client *c = fhir_client_new(o->base, &cc, err);
    if (!c) {
        free(origin);
        return NULL;
    }
    o->clients[slot].origin = origin;
    o->clients[slot].c = c;
    return c;
}

/* ---- life ------------------------------------------------------------------------------------ */

static void parse_role_map(oidc *o, const oidc_config *cfg, fhir_error *err, int *rc)
{
    for (size_t i = 0; i < cfg->n_role_map && *rc == 0; i++) {
        const char *e = cfg->role_map[i];
        const char *eq = e ? strrchr(e, '=') : NULL;
        role r;
        if (!eq || eq == e || role_parse(eq + 1, &r)) {
            *rc = fhir_error_set(err, "role map entry \"%.100s\": expected GROUP=ROLE with ROLE one of viewer, "
                                      "clinician, intake, admin",
                                 e ? e : "");
            return;
        }
        if (o->n_map == OIDC_MAX_ROLE_MAP) {
            *rc = fhir_error_set(err, "role map: more than %d entries", OIDC_MAX_ROLE_MAP);
            return;
        }
        o->map[o->n_map].group = strndup(e, (size_t)(eq - e));
        if (!o->map[o->n_map].group)
            abort();
        o->map[o->n_map++].r = r;
    }
}

oidc *oidc_new(struct event_base *base, const oidc_config *cfg, fhir_error *err)
{
    if (oidc_check_url("oidc.issuer", cfg->issuer, NULL, err) || oidc_check_url("oidc.redirect_uri", cfg->redirect_uri, NULL, err))
        return NULL;
    if (!cfg->client_id || !*cfg->client_id) {
        fhir_error_set(err, "oidc.client_id is missing");
        return NULL;
    }
    const char *scopes = cfg->scopes ? cfg->scopes : "openid profile email";
    bool has_openid = false;
    for (const char *p = scopes; *p;) {
        size_t n = strcspn(p, " ");
        if (n == 6 && !strncmp(p, "openid", 6))
            has_openid = true;
        p += n;
        while (*p == ' ')
            p++;
    }
    if (!has_openid) {
        fhir_error_set(err, "oidc.scopes must include openid");
        return NULL;
    }
    oidc *o = calloc(1, sizeof *o);
    if (!o)
        abort();
    o->base = base;
    size_t il = strlen(cfg->issuer);
    o->issuer = fhir_xstrdup(cfg->issuer);
    (void)il;
    o->client_id = fhir_xstrdup(cfg->client_id);
    o->client_secret = fhir_xstrdup(cfg->client_secret);
    o->redirect_uri = fhir_xstrdup(cfg->redirect_uri);
    o->scopes = fhir_xstrdup(scopes);
    o->user_claim = fhir_xstrdup(cfg->user_claim ? cfg->user_claim : "sub");
    o->name_claim = fhir_xstrdup(cfg->name_claim ? cfg->name_claim : "name");
    o->role_claim = fhir_xstrdup(cfg->role_claim ? cfg->role_claim : "groups");
    o->ca_file = fhir_xstrdup(cfg->ca_file);
    o->provision = cfg->provision;
    o->skew_ms = (cfg->clock_skew_s > 0 ? cfg->clock_skew_s : 60) * 1000;
    o->ttl_ms = (cfg->login_ttl_s > 0 ? cfg->login_ttl_s : 600) * 1000;
    const char *const *algs = cfg->algs ? cfg->algs : DEFAULT_ALGS;
    for (o->n_algs = 0; algs[o->n_algs]; o->n_algs++)
        ;
    o->algs = calloc(o->n_algs + 1, sizeof *o->algs);
    if (!o->algs)
        abort();
    for (size_t i = 0; i < o->n_algs; i++) {
        if (!strcmp(algs[i], "none") || !strncmp(algs[i], "HS", 2)) {
            fhir_error_set(err, "oidc: algorithm %s is never accepted", algs[i]);
            oidc_free(o);
            return NULL;
        }
        o->algs[i] = fhir_xstrdup(algs[i]);
    }
    int rc = 0;
    parse_role_map(o, cfg, err, &rc);
    if (rc) {
        oidc_free(o);
        return NULL;
    }
    return o;
}

static void flow_free(flow *f)
{
    oidc *o = f->o;
    if (f->all_prev)
        f->all_prev->all_next = f->all_next;
    else
        o->flows = f->all_next;
    if (f->all_next)
        f->all_next->all_prev = f->all_prev;
    free(f->id_token);
    OPENSSL_cleanse(&f->p, sizeof f->p);
    free(f);
}

void oidc_free(oidc *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < MAX_CLIENTS; i++) {
        fhir_client_free(o->clients[i].c); /* drops pending requests without their callbacks */
        free(o->clients[i].origin);
    }
    while (o->flows)
        flow_free(o->flows);
    for (size_t i = 0; i < o->n_map; i++)
        free(o->map[i].group);
    for (size_t i = 0; o->algs && i < o->n_algs; i++)
        free(o->algs[i]);
    free(o->algs);
    if (o->client_secret) {
        OPENSSL_cleanse(o->client_secret, strlen(o->client_secret));
        free(o->client_secret);
    }
    free(o->issuer);
    free(o->client_id);
    free(o->redirect_uri);
    free(o->scopes);
    free(o->user_claim);
    free(o->name_claim);
    free(o->role_claim);
    free(o->ca_file);
    free(o->auth_ep);
    free(o->token_ep);
    free(o->jwks_uri);
    jose_jwks_free(o->keys);
    OPENSSL_cleanse(o->pending, sizeof o->pending);
    free(o);
}

bool oidc_ready(const oidc *o)
{
    return o->auth_ep && o->keys;
}

const char *oidc_authorization_endpoint(const oidc *o)
{
    return o->auth_ep;
}

const char *oidc_token_endpoint(const oidc *o)
{
    return o->token_ep;
}

/* ---- discovery and keys ------------------------------------------------------------------------ */

int oidc_set_discovery(oidc *o, const fhir_node *doc, fhir_error *err)
{
    const char *iss = fhir_node_str(fhir_node_get(doc, "issuer"));
    const char *auth = fhir_node_str(fhir_node_get(doc, "authorization_endpoint"));
    const char *tok = fhir_node_str(fhir_node_get(doc, "token_endpoint"));
    const char *jwks = fhir_node_str(fhir_node_get(doc, "jwks_uri"));
    if (!iss || strcmp(iss, o->issuer))
        return fhir_error_set(err, "discovery: issuer %.200s is not the configured %.200s", iss ? iss : "(none)",
                              o->issuer);
    if (oidc_check_url("discovery authorization_endpoint", auth, NULL, err) ||
        oidc_check_url("discovery token_endpoint", tok, NULL, err) || oidc_check_url("discovery jwks_uri", jwks, NULL, err))
        return -1;
    const fhir_node *rts = fhir_node_get(doc, "response_types_supported");
    if (rts) {
        bool code = false;
        for (const fhir_node *c = fhir_node_first(rts); c; c = c->next)
            if (fhir_node_str(c) && !strcmp(fhir_node_str(c), "code"))
                code = true;
        if (!code)
            return fhir_error_set(err, "discovery: the provider does not offer the authorization code flow");
    }
    const fhir_node *ccm = fhir_node_get(doc, "code_challenge_methods_supported");
    if (ccm) {
        bool s256 = false;
        for (const fhir_node *c = fhir_node_first(ccm); c; c = c->next)
            if (fhir_node_str(c) && !strcmp(fhir_node_str(c), "S256"))
                s256 = true;
        if (!s256)
            return fhir_error_set(err, "discovery: the provider does not offer PKCE with S256");
    }
    free(o->auth_ep);
    free(o->token_ep);
    free(o->jwks_uri);
    o->auth_ep = fhir_xstrdup(auth);
    o->token_ep = fhir_xstrdup(tok);
    o->jwks_uri = fhir_xstrdup(jwks);
    return 0;
}

void oidc_set_jwks(oidc *o, jose_jwks *keys)
{
    jose_jwks_free(o->keys);
    o->keys = keys;
    o->keys_fetched_ms = fhir_clock_now_ms();
}

static void begin_now(oidc *o, const char *return_to, oidc_begin_fn cb, void *ud);
static void fetch_jwks(oidc *o);
static void flow_verify(flow *f);

static void flush_waiters(oidc *o)
{
    size_t n = o->n_waiters;
    begin_waiter w[MAX_WAITERS];
    memcpy(w, o->waiters, n * sizeof w[0]);
    o->n_waiters = 0;
    for (size_t i = 0; i < n; i++)
        begin_now(o, w[i].return_to, w[i].cb, w[i].ud);
}

static void on_discovery(void *ud, fhir_client_result *res)
{
    oidc *o = ud;
    o->disc_inflight = false;
    fhir_error err;
    fhir_error_clear(&err);
    if (res->err.msg[0])
        fhir_error_set(&err, "%s", res->err.msg);
    else if (!res->body)
        fhir_error_set(&err, "discovery: empty answer");
    else
        oidc_set_discovery(o, res->body, &err);
    fhir_client_result_free(res);
    if (err.msg[0]) {
        o->disc_failed_ms = fhir_clock_now_ms();
        snprintf(o->disc_error, sizeof o->disc_error, "%s", err.msg);
        fhir_log(FHIR_LOG_WARN, "oidc.discovery_failed", "error=%s", err.msg);
    } else {
        o->disc_error[0] = 0;
        fhir_log(FHIR_LOG_INFO, "oidc.discovered", "keys=%s", o->keys ? "loaded" : "fetching");
        if (!o->keys)
            fetch_jwks(o);
    }
    flush_waiters(o);
}

static void start_discovery(oidc *o)
{
    if (o->disc_inflight)
        return;
    fhir_error err;
    fhir_buf url;
    fhir_buf_init(&url, OIDC_URL_MAX);
    size_t il = strlen(o->issuer);
    fhir_buf_printf(&url, "%.*s/.well-known/openid-configuration", (int)(il && o->issuer[il - 1] == '/' ? il - 1 : il),
                    o->issuer);
    fhir_client *c = url.overflow ? NULL : client_for(o, fhir_buf_cstr(&url), &err);
    fhir_client_request rq = {.method = "GET", .path = fhir_buf_cstr(&url), .accept = "application/json"};
    if (!c || fhir_client_send(c, &rq, on_discovery, o, &err)) {
        o->disc_failed_ms = fhir_clock_now_ms();
        snprintf(o->disc_error, sizeof o->disc_error, "discovery: %.400s", url.overflow ? "issuer URL too long" : err.msg);
        fhir_buf_free(&url);
        flush_waiters(o);
        return;
    }
    o->disc_inflight = true;
    fhir_buf_free(&url);
}

static void finish_flow(flow *f, const access_oidc_identity *id, const fhir_error *err)
{
    f->cb(f->ud, id, f->p.return_to, err);
    flow_free(f);
}

static void fail_flow(flow *f, const char *fmt, const char *detail)
{
    fhir_error e;
    fhir_error_set(&e, fmt, detail);
    finish_flow(f, NULL, &e);
}

/* The sign-ins waiting for the key set go on (verify again) or fail with why. */
static void resume_jwks_waiters(oidc *o, bool keys_loaded, const char *why)
{
    flow *w = o->jwks_waiters;
    o->jwks_waiters = NULL;
    while (w) {
        flow *next = w->next;
        w->next = NULL;
        if (keys_loaded)
            flow_verify(w);
        else
            fail_flow(w, "JWKS: %s", why);
        w = next;
    }
}

static void on_jwks(void *ud, fhir_client_result *res)
{
    oidc *o = ud;
    o->jwks_inflight = false;
    fhir_error err;
    fhir_error_clear(&err);
    jose_jwks *k = NULL;
    size_t skipped = 0;
    if (res->err.msg[0])
        fhir_error_set(&err, "%s", res->err.msg);
    else
        k = jose_jwks_from_node(res->body, &skipped, &err);
    fhir_client_result_free(res);
    o->keys_fetched_ms = fhir_clock_now_ms();
    if (k) {
        oidc_set_jwks(o, k);
        fhir_log(FHIR_LOG_INFO, "oidc.jwks", "keys=%zu skipped=%zu", jose_jwks_count(k), skipped);
    } else {
        fhir_log(FHIR_LOG_WARN, "oidc.jwks_failed", "error=%s", err.msg);
    }
    resume_jwks_waiters(o, k != NULL, err.msg);
}

static void fetch_jwks(oidc *o)
{
    if (o->jwks_inflight || !o->jwks_uri)
        return;
    fhir_error err;
    fhir_client *c = client_for(o, o->jwks_uri, &err);
    fhir_client_request rq = {.method = "GET", .path = o->jwks_uri, .accept = "application/json"};
    if (!c || fhir_client_send(c, &rq, on_jwks, o, &err)) {
        fhir_log(FHIR_LOG_WARN, "oidc.jwks_failed", "error=%s", err.msg);
        resume_jwks_waiters(o, false, err.msg);
        return;
    }
    o->jwks_inflight = true;
}

void oidc_start(oidc *o)
{
    if (!o->auth_ep)
        start_discovery(o);
    else if (!o->keys)
        fetch_jwks(o);
}

/* ---- begin ----------------------------------------------------------------------------------- */

static void rand_b64(char *out, size_t n)
{
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1)
        abort();
    char *s = fhir_auth_b64url_encode(raw, sizeof raw);
    if (!s)
        abort();
    snprintf(out, n, "%s", s);
    free(s);
    OPENSSL_cleanse(raw, sizeof raw);
}

static void sha256(const void *d, size_t n, unsigned char out[32])
{
    if (EVP_Digest(d, n, out, NULL, EVP_sha256(), NULL) != 1)
        abort();
}

static void add_param(fhir_buf *b, const char *k, const char *v)
{
    char *e = fhir_auth_form_encode(v);
    fhir_buf_printf(b, "&%s=%s", k, e);
    free(e);
}

static void begin_now(oidc *o, const char *return_to, oidc_begin_fn cb, void *ud)
{
    fhir_error err;
    if (!o->auth_ep) {
        fhir_error_set(&err, "the identity provider is not reachable (%s)",
                       o->disc_error[0] ? o->disc_error : "discovery failed");
        cb(ud, NULL, NULL, &err);
        return;
    }
    int64_t now = fhir_clock_now_ms();
    /* drop expired attempts; when still full, the oldest */
    size_t k = 0;
    for (size_t i = 0; i < o->n_pending; i++)
        if (o->pending[i].created_ms + o->ttl_ms > now)
            o->pending[k++] = o->pending[i];
    o->n_pending = k;
    if (o->n_pending == OIDC_MAX_PENDING) {
        memmove(&o->pending[0], &o->pending[1], (OIDC_MAX_PENDING - 1) * sizeof o->pending[0]);
        o->n_pending--;
    }
    oidc_pending *p = &o->pending[o->n_pending++];
    memset(p, 0, sizeof *p);
    rand_b64(p->state, sizeof p->state);
    rand_b64(p->nonce, sizeof p->nonce);
    rand_b64(p->verifier, sizeof p->verifier);
    char binding[OIDC_BINDING_LEN];
    rand_b64(binding, sizeof binding);
    sha256(binding, strlen(binding), p->binding_hash);
    p->created_ms = now;
    snprintf(p->return_to, sizeof p->return_to, "%s",
             return_to && return_to[0] == '/' && return_to[1] != '/' && return_to[1] != '\\' &&
                     strlen(return_to) < sizeof p->return_to
                 ? return_to
                 : "/");
    for (char *c = p->return_to; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            snprintf(p->return_to, sizeof p->return_to, "/");
    unsigned char ch[32];
    sha256(p->verifier, strlen(p->verifier), ch);
    char *challenge = fhir_auth_b64url_encode(ch, sizeof ch);
    fhir_buf url;
    fhir_buf_init(&url, OIDC_URL_MAX + 1024);
    fhir_buf_puts(&url, o->auth_ep);
    fhir_buf_puts(&url, strchr(o->auth_ep, '?') ? "&response_type=code" : "?response_type=code");
    add_param(&url, "client_id", o->client_id);
    add_param(&url, "redirect_uri", o->redirect_uri);
    add_param(&url, "scope", o->scopes);
    add_param(&url, "state", p->state);
    add_param(&url, "nonce", p->nonce);
    add_param(&url, "code_challenge", challenge);
    fhir_buf_puts(&url, "&code_challenge_method=S256");
    free(challenge);
    if (url.overflow) {
        o->n_pending--;
        fhir_error_set(&err, "authorization URL too long");
        cb(ud, NULL, NULL, &err);
    } else {
        cb(ud, fhir_buf_cstr(&url), binding, NULL);
    }
    fhir_buf_free(&url);
    OPENSSL_cleanse(binding, sizeof binding);
}

void oidc_begin(oidc *o, const char *return_to, oidc_begin_fn cb, void *ud)
{
    if (o->auth_ep) {
        begin_now(o, return_to, cb, ud);
        if (!o->keys)
            fetch_jwks(o);
        return;
    }
    /* not discovered yet: wait for discovery (retried at most every 10 s after a failure) */
    if (o->n_waiters == MAX_WAITERS ||
        (!o->disc_inflight && o->disc_failed_ms && fhir_clock_now_ms() - o->disc_failed_ms < 10000)) {
        begin_now(o, return_to, cb, ud);
        return;
    }
    begin_waiter *w = &o->waiters[o->n_waiters++];
    w->cb = cb;
    w->ud = ud;
    snprintf(w->return_to, sizeof w->return_to, "%s", return_to ? return_to : "/");
    start_discovery(o);
}

/* ---- finish ------------------------------------------------------------------------------------- */

size_t oidc_pending_count(const oidc *o)
{
    return o->n_pending;
}

int oidc_take_pending(oidc *o, const char *state, const char *binding, oidc_pending *out, fhir_error *err)
{
    if (!state || !*state)
        return fhir_error_set(err, "callback without state");
    size_t sl = strlen(state);
    for (size_t i = 0; i < o->n_pending; i++) {
        oidc_pending *p = &o->pending[i];
        if (strlen(p->state) != sl || CRYPTO_memcmp(p->state, state, sl))
            continue;
        *out = *p;
        memmove(p, p + 1, (o->n_pending - i - 1) * sizeof *p);
        o->n_pending--;
        if (out->created_ms + o->ttl_ms <= fhir_clock_now_ms())
            return fhir_error_set(err, "sign-in attempt expired (state older than %lld s)",
                                  (long long)(o->ttl_ms / 1000));
        unsigned char bh[32];
        if (!binding || !*binding)
            return fhir_error_set(err, "the browser binding cookie is missing (callback opened in another browser?)");
        sha256(binding, strlen(binding), bh);
        if (CRYPTO_memcmp(bh, out->binding_hash, 32))
            return fhir_error_set(err, "the browser binding cookie does not match the state");
        return 0;
    }
    return fhir_error_set(err, "unknown or already used state");
}

int oidc_verify_id_token(oidc *o, const char *id_token, const char *nonce, fhir_arena *a, fhir_node **claims,
                         fhir_error *err)
{
    if (!o->keys)
        return JOSE_UNKNOWN_KID;
    fhir_node *payload = NULL;
    int rc = jose_verify(o->keys, id_token, (const char *const *)o->algs, a, &payload, NULL, err);
    if (rc)
        return rc;
    const char *iss = fhir_node_str(fhir_node_get(payload, "iss"));
    if (!iss || strcmp(iss, o->issuer))
        return fhir_error_set(err, "ID token: iss %.200s is not the configured issuer", iss ? iss : "(none)");
    size_t naud;
    if (!jose_aud_has(fhir_node_get(payload, "aud"), o->client_id, &naud))
        return fhir_error_set(err, "ID token: aud does not hold our client_id");
    const char *azp = fhir_node_str(fhir_node_get(payload, "azp"));
    if ((naud > 1 || azp) && (!azp || strcmp(azp, o->client_id)))
        return fhir_error_set(err, "ID token: azp is not our client_id");
    if (jose_check_times(payload, fhir_clock_now_ms(), o->skew_ms, "ID token", err))
        return -1;
    const char *tn = fhir_node_str(fhir_node_get(payload, "nonce"));
    size_t nl = nonce ? strlen(nonce) : 0;
    if (!tn || !nl || strlen(tn) != nl || CRYPTO_memcmp(tn, nonce, nl))
        return fhir_error_set(err, "ID token: nonce does not match the sign-in attempt");
    if (!fhir_node_str(fhir_node_get(payload, "sub")))
        return fhir_error_set(err, "ID token: no sub");
    *claims = payload;
    return 0;
}

/* claim by dotted path (objects only) */
static const fhir_node *claim(const fhir_node *claims, const char *path)
{
    const fhir_node *n = claims;
    char seg[128];
    for (const char *p = path; n && *p;) {
        size_t l = strcspn(p, ".");
        if (l >= sizeof seg)
            return NULL;
        memcpy(seg, p, l);
        seg[l] = 0;
        n = fhir_node_get(n, seg);
        p += l;
        if (*p == '.')
            p++;
    }
    return n;
}

static bool has_group(const fhir_node *groups, const char *g)
{
    if (!strcmp(g, "*"))
        return true;
    if (fhir_node_is(groups, FHIR_STRING))
        return !strcmp(fhir_node_str(groups), g);
    for (const fhir_node *c = fhir_node_first(groups); c; c = c->next)
        if (fhir_node_str(c) && !strcmp(fhir_node_str(c), g))
            return true;
    return false;
}

int oidc_map_identity(oidc *o, const fhir_node *claims, fhir_arena *a, access_oidc_identity *id, fhir_error *err)
{
    memset(id, 0, sizeof *id);
    const fhir_node *uc = claim(claims, o->user_claim);
    const char *uv = fhir_node_str(uc);
    char num[32];
    if (!uv && fhir_node_is(uc, FHIR_NUMBER)) {
        snprintf(num, sizeof num, "%s", fhir_node_num_text(uc));
        uv = num;
    }
    if (!uv || !*uv)
        return fhir_error_set(err, "ID token has no usable %s claim (oidc.user_claim)", o->user_claim);
    if (access_name_check(uv, err))
        return fhir_error_prefix(err, "claim %s", o->user_claim);
    if (!strcmp(o->user_claim, "email")) {
        const fhir_node *ev = fhir_node_get(claims, "email_verified");
        if (ev && fhir_node_is(ev, FHIR_BOOL) && !fhir_node_bool(ev, false))
            return fhir_error_set(err, "the email claim is not verified at the identity provider");
    }
    id->name = fhir_arena_strdup(a, uv);
    id->subject = fhir_arena_sprintf(a, "%s %s", o->issuer, uv);
    id->display_name = fhir_node_str(claim(claims, o->name_claim));
    if (id->display_name)
        id->display_name = fhir_arena_strndup(a, id->display_name, strnlen(id->display_name, 200));
    const fhir_node *groups = claim(claims, o->role_claim);
    id->role = ROLE_UNSET;
    for (size_t i = 0; i < o->n_map; i++)
        if (has_group(groups, o->map[i].group)) {
            id->role = o->map[i].r;
            break;
        }
    id->provision = o->provision;
    if (!id->name || !id->subject)
        return fhir_error_set(err, "out of memory for the identity");
    return 0;
}

static void flow_verify(flow *f)
{
    oidc *o = f->o;
    fhir_arena *a = fhir_arena_new(1u << 20);
    fhir_node *claims = NULL;
    fhir_error err;
    fhir_error_clear(&err);
    int rc = oidc_verify_id_token(o, f->id_token, f->p.nonce, a, &claims, &err);
    if (rc == JOSE_UNKNOWN_KID) {
        int64_t since = fhir_clock_now_ms() - o->keys_fetched_ms;
        fhir_arena_free(a);
        if (f->refetched || (o->keys && since < OIDC_JWKS_MIN_REFETCH_S * 1000 && !o->jwks_inflight)) {
            fail_flow(f, "%s", "ID token signed with a key the provider does not publish (unknown kid)");
            return;
        }
        f->refetched = true;
        f->next = o->jwks_waiters;
        o->jwks_waiters = f;
        fhir_log(FHIR_LOG_INFO, "oidc.jwks_refetch", "reason=%s", o->keys ? "unknown_kid" : "no_keys");
        fetch_jwks(o);
        return;
    }
    access_oidc_identity id;
    if (rc == 0)
        rc = oidc_map_identity(o, claims, a, &id, &err);
    if (rc)
        finish_flow(f, NULL, &err);
    else
        finish_flow(f, &id, NULL);
    fhir_arena_free(a);
}

static void on_token(void *ud, fhir_client_result *res)
{
    flow *f = ud;
    if (res->err.msg[0]) {
        char msg[FHIR_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", res->err.msg);
        fhir_client_result_free(res);
        fail_flow(f, "token endpoint: %s", msg);
        return;
    }
    const char *idt = fhir_node_str(fhir_node_get(res->body, "id_token"));
    if (!idt) {
        fhir_client_result_free(res);
        fail_flow(f, "%s", "token endpoint answered without an id_token");
        return;
    }
    f->id_token = fhir_xstrdup(idt);
    fhir_client_result_free(res);
    flow_verify(f);
}

void oidc_finish(oidc *o, const char *state, const char *code, const char *provider_error, const char *binding,
                 oidc_finish_fn cb, void *ud)
{
    flow *f = calloc(1, sizeof *f);
    if (!f)
        abort();
    f->o = o;
    f->cb = cb;
    f->ud = ud;
    f->all_next = o->flows;
    if (o->flows)
        o->flows->all_prev = f;
    o->flows = f;
    fhir_error err;
    snprintf(f->p.return_to, sizeof f->p.return_to, "/");
    if (oidc_take_pending(o, state, binding, &f->p, &err)) {
        finish_flow(f, NULL, &err);
        return;
    }
    if (provider_error) {
        fail_flow(f, "the identity provider refused: %.200s", provider_error);
        return;
    }
    if (!code || !*code || strlen(code) > 4096) {
        fail_flow(f, "%s", "callback without a usable code");
        return;
    }
    if (!o->token_ep) {
        fail_flow(f, "%s", "no token endpoint (discovery not loaded)");
        return;
    }
    fhir_client *c = client_for(o, o->token_ep, &err);
    if (!c) {
        finish_flow(f, NULL, &err);
        return;
    }
    fhir_buf body;
    fhir_buf_init(&body, 16384);
    fhir_buf_puts(&body, "grant_type=authorization_code");
    add_param(&body, "code", code);
    add_param(&body, "redirect_uri", o->redirect_uri);
    add_param(&body, "code_verifier", f->p.verifier);
    add_param(&body, "client_id", o->client_id);
    if (o->client_secret)
        add_param(&body, "client_secret", o->client_secret);
    fhir_client_request rq = {.method = "POST",
                              .path = o->token_ep,
                              .body = fhir_buf_cstr(&body),
                              .body_len = body.len,
                              .content_type = "application/x-www-form-urlencoded",
                              .accept = "application/json",
                              .not_idempotent = true};
    int rc = body.overflow ? fhir_error_set(&err, "token request too long")
                           : fhir_client_send(c, &rq, on_token, f, &err);
    OPENSSL_cleanse(body.data, body.len);
    fhir_buf_free(&body);
    if (rc)
        finish_flow(f, NULL, &err);
}
