/* fhir_auth — static bearer, HTTP Basic and SMART Backend Services credentials.
 * See fhir_auth.h; the protocol steps follow shared/reference/fhir.md §4. */
#include "fhir_auth.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "fhir_alloc.h"
#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_json.h"
#include "fhir_node.h"
#include "fhir_url.h"


struct fhir_auth {
    fhir_auth_kind kind;
    char *static_header;      /* BEARER / BASIC */
    /* SMART */
    char *client_id;
    char *kid;
    char *scope;
    char *token_url;
    char *audience;
    const char *alg;          /* "RS384" | "ES384" */
    EVP_PKEY *key;
    int assertion_ttl_s;
    int refresh_margin_s;
    char *token_header;       /* "Authorization: Bearer <token>" */
    int64_t token_expiry_ms;
    int64_t token_refresh_ms; /* refresh once now >= this */
    uint64_t generation;
};

static void openssl_cause(fhir_error *err, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "unknown OpenSSL error";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    fhir_error_set(err, "%s: %s", what, buf);
}

/* ---- base64url / form encoding -------------------------------------------------------- */

char *fhir_auth_b64url_encode(const void *data, size_t len)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *p = data;
    char *out = fhir_xmalloc(len / 3 * 4 + 5);
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        out[o++] = tbl[v >> 6 & 63];
        out[o++] = tbl[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        out[o++] = tbl[v >> 6 & 63];
    }
    out[o] = '\0';
    return out;
}

static int b64url_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

unsigned char *fhir_auth_b64url_decode(const char *s, size_t len, size_t *out_len)
{
    if (len % 4 == 1)
        return NULL;
    unsigned char *out = fhir_xmalloc(len / 4 * 3 + 3);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_val(s[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    *out_len = o;
    return out;
}

char *fhir_auth_form_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = fhir_xmalloc(n * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}

/* ---- secrets -------------------------------------------------------------------------- */

/* First line of a file, trimmed; caller frees. */
static char *read_secret_file(const char *path, const char *what, fhir_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fhir_error_set(err, "%s file %s: %s", what, path, strerror(errno));
        return NULL;
    }
    char *buf = fhir_xmalloc(FHIR_AUTH_SECRET_MAX + 1);
    size_t n = fread(buf, 1, FHIR_AUTH_SECRET_MAX, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    buf[n] = '\0';
    char *nl = strpbrk(buf, "\r\n");
    if (nl)
        *nl = '\0';
    else if (more) {
        free(buf);
        fhir_error_set(err, "%s file %s: first line longer than %d bytes", what, path,
                       FHIR_AUTH_SECRET_MAX);
        return NULL;
    }
    char *p = buf;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t len = strlen(p);
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        p[--len] = '\0';
    if (!len) {
        free(buf);
        fhir_error_set(err, "%s file %s is empty", what, path);
        return NULL;
    }
    char *r = fhir_xstrdup(p);
    free(buf);
    return r;
}

static char *read_secret_env(const char *var, const char *what, fhir_error *err)
{
    const char *v = getenv(var);
    if (!v || !*v) {
        fhir_error_set(err, "%s: environment variable %s is not set or empty", what, var);
        return NULL;
    }
    if (strlen(v) > FHIR_AUTH_SECRET_MAX || strpbrk(v, "\r\n")) {
        fhir_error_set(err, "%s: environment variable %s holds a malformed value", what, var);
        return NULL;
    }
    return fhir_xstrdup(v);
}

static bool header_safe(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* ---- keys ------------------------------------------------------------------------------ */

static int load_key(fhir_auth *a, const fhir_auth_config *cfg, fhir_error *err)
{
    BIO *bio = BIO_new_file(cfg->smart_key_file, "r");
    if (!bio) {
        openssl_cause(err, "SMART key file");
        return fhir_error_prefix(err, "%s", cfg->smart_key_file);
    }
    a->key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!a->key) {
        openssl_cause(err, "not a PEM private key");
        return fhir_error_prefix(err, "SMART key %s", cfg->smart_key_file);
    }
    const char *want = cfg->smart_alg;
    bool is_rsa = EVP_PKEY_is_a(a->key, "RSA");
    bool is_ec = EVP_PKEY_is_a(a->key, "EC");
    if (!want)
        want = is_rsa ? "RS384" : is_ec ? "ES384" : NULL;
    if (!want)
        return fhir_error_set(err, "SMART key %s: unsupported key type (need RSA or EC P-384)",
                              cfg->smart_key_file);
    if (!strcmp(want, "RS384")) {
        if (!is_rsa)
            return fhir_error_set(err, "SMART key %s: RS384 needs an RSA key",
                                  cfg->smart_key_file);
        if (EVP_PKEY_get_bits(a->key) < 2048)
            return fhir_error_set(err, "SMART key %s: RSA key has %d bits, need >= 2048",
                                  cfg->smart_key_file, EVP_PKEY_get_bits(a->key));
        a->alg = "RS384";
    } else if (!strcmp(want, "ES384")) {
        char group[64] = "";
        size_t glen = 0;
        if (!is_ec ||
            !EVP_PKEY_get_utf8_string_param(a->key, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                            sizeof group, &glen) ||
            (strcmp(group, "secp384r1") && strcmp(group, "P-384")))
            return fhir_error_set(err, "SMART key %s: ES384 needs an EC key on P-384%s%s",
                                  cfg->smart_key_file, *group ? ", got " : "", group);
        a->alg = "ES384";
    } else {
        return fhir_error_set(err, "SMART: unsupported algorithm '%s' (RS384 or ES384)", want);
    }
    return 0;
}

fhir_auth *fhir_auth_new(const fhir_auth_config *cfg, fhir_error *err)
{
    fhir_auth *a = fhir_xcalloc(1, sizeof *a);
    a->kind = cfg ? cfg->kind : FHIR_AUTH_NONE;
    switch (a->kind) {
    case FHIR_AUTH_NONE:
        return a;
    case FHIR_AUTH_BEARER: {
        char *tok = NULL;
        if (cfg->bearer_token)
            tok = fhir_xstrdup(cfg->bearer_token);
        else if (cfg->bearer_file)
            tok = read_secret_file(cfg->bearer_file, "bearer token", err);
        else if (cfg->bearer_env)
            tok = read_secret_env(cfg->bearer_env, "bearer token", err);
        else
            fhir_error_set(err, "bearer auth needs a token file or an environment variable");
        if (!tok)
            goto fail;
        if (!header_safe(tok)) {
            free(tok);
            fhir_error_set(err, "bearer token holds control characters");
            goto fail;
        }
        size_t n = strlen(tok) + 32;
        a->static_header = fhir_xmalloc(n);
        snprintf(a->static_header, n, "Authorization: Bearer %s", tok);
        free(tok);
        return a;
    }
    case FHIR_AUTH_BASIC: {
        if (!cfg->basic_user || !*cfg->basic_user || strchr(cfg->basic_user, ':')) {
            fhir_error_set(err, "basic auth needs a user name without ':'");
            goto fail;
        }
        char *pass = NULL;
        if (cfg->basic_pass_env)
            pass = read_secret_env(cfg->basic_pass_env, "basic auth password", err);
        else if (cfg->basic_pass_file)
            pass = read_secret_file(cfg->basic_pass_file, "basic auth password", err);
        else
            fhir_error_set(err, "basic auth needs a password environment variable or file");
        if (!pass)
            goto fail;
        fhir_buf b;
        fhir_buf_init(&b, FHIR_AUTH_SECRET_MAX * 2);
        fhir_buf_printf(&b, "%s:%s", cfg->basic_user, pass);
        free(pass);
        /* standard base64 with padding for Basic */
        int blen = 4 * (int)((b.len + 2) / 3);
        unsigned char *enc = fhir_xmalloc((size_t)blen + 1);
        EVP_EncodeBlock(enc, (const unsigned char *)b.data, (int)b.len);
        fhir_buf_free(&b);
        size_t n = (size_t)blen + 32;
        a->static_header = fhir_xmalloc(n);
        snprintf(a->static_header, n, "Authorization: Basic %s", (char *)enc);
        free(enc);
        return a;
    }
    case FHIR_AUTH_SMART:
        if (!cfg->smart_client_id || !*cfg->smart_client_id || !cfg->smart_key_file ||
            !cfg->smart_kid || !*cfg->smart_kid) {
            fhir_error_set(err, "SMART auth needs a client id, a private key file and a kid");
            goto fail;
        }
        a->client_id = fhir_xstrdup(cfg->smart_client_id);
        a->kid = fhir_xstrdup(cfg->smart_kid);
        a->scope = fhir_xstrdup(cfg->smart_scope ? cfg->smart_scope : "system/*.rs");
        a->token_url = fhir_xstrdup(cfg->smart_token_url);
        a->audience = fhir_xstrdup(cfg->smart_audience);
        a->assertion_ttl_s = cfg->smart_assertion_ttl_s > 0 ? cfg->smart_assertion_ttl_s : 300;
        if (a->assertion_ttl_s > 300)
            a->assertion_ttl_s = 300;
        a->refresh_margin_s = cfg->smart_refresh_margin_s > 0 ? cfg->smart_refresh_margin_s : 30;
        if (load_key(a, cfg, err) < 0)
            goto fail;
        return a;
    }
    fhir_error_set(err, "unknown auth kind %d", (int)a->kind);
fail:
    fhir_auth_free(a);
    return NULL;
}

void fhir_auth_free(fhir_auth *a)
{
    if (!a)
        return;
    if (a->static_header) {
        OPENSSL_cleanse(a->static_header, strlen(a->static_header));
        free(a->static_header);
    }
    if (a->token_header) {
        OPENSSL_cleanse(a->token_header, strlen(a->token_header));
        free(a->token_header);
    }
    free(a->client_id);
    free(a->kid);
    free(a->scope);
    free(a->token_url);
    free(a->audience);
    EVP_PKEY_free(a->key);
    free(a);
}

fhir_auth_kind fhir_auth_get_kind(const fhir_auth *a)
{
    return a ? a->kind : FHIR_AUTH_NONE;
}

const char *fhir_auth_smart_alg(const fhir_auth *a)
{
    return a && a->kind == FHIR_AUTH_SMART ? a->alg : NULL;
}

bool fhir_auth_needs_token(const fhir_auth *a, int64_t now_ms)
{
    if (!a || a->kind != FHIR_AUTH_SMART)
        return false;
    return !a->token_header || now_ms >= a->token_refresh_ms;
}

const char *fhir_auth_header(const fhir_auth *a, int64_t now_ms)
{
    if (!a)
        return NULL;
    if (a->kind == FHIR_AUTH_BEARER || a->kind == FHIR_AUTH_BASIC)
        return a->static_header;
    if (a->kind == FHIR_AUTH_SMART && !fhir_auth_needs_token(a, now_ms))
        return a->token_header;
    return NULL;
}

uint64_t fhir_auth_generation(const fhir_auth *a)
{
    return a ? a->generation : 0;
}

void fhir_auth_invalidate(fhir_auth *a)
{
    if (!a || a->kind != FHIR_AUTH_SMART)
        return;
    if (a->token_header) {
        OPENSSL_cleanse(a->token_header, strlen(a->token_header));
        free(a->token_header);
        a->token_header = NULL;
    }
    a->token_expiry_ms = 0;
    a->token_refresh_ms = 0;
    a->generation++;
}

const char *fhir_auth_token_url(const fhir_auth *a)
{
    return a ? a->token_url : NULL;
}

int64_t fhir_auth_token_expiry(const fhir_auth *a)
{
    return a && a->token_header ? a->token_expiry_ms : 0;
}

/* ---- discovery ------------------------------------------------------------------------ */

static bool array_has(const fhir_node *arr, const char *s)
{
    for (const fhir_node *c = fhir_node_first(arr); c; c = c->next)
        if (fhir_node_str(c) && !strcmp(fhir_node_str(c), s))
            return true;
    return false;
}

/* Resolves a relative endpoint against the FHIR base: "/x" keeps the origin, "x" appends. */
static char *resolve_url(const char *base, const char *ref)
{
    if (strstr(ref, "://"))
        return fhir_xstrdup(ref);
    fhir_buf b;
    fhir_buf_init(&b, FHIR_AUTH_URL_MAX);
    if (ref[0] == '/') {
        const char *p = strstr(base, "://");
        const char *end = p ? strchr(p + 3, '/') : NULL;
        size_t n = end ? (size_t)(end - base) : strlen(base);
        fhir_buf_append(&b, base, n);
        fhir_buf_puts(&b, ref);
    } else {
        fhir_buf_puts(&b, base);
        if (b.len && b.data[b.len - 1] != '/')
            fhir_buf_putc(&b, '/');
        fhir_buf_puts(&b, ref);
    }
    fhir_buf_cstr(&b);
    char *r = fhir_buf_steal(&b, NULL);
    return r;
}

/* A discovered token endpoint receives our signed client assertion and hands out the token:
 * it must be on the FHIR server's own host (any port; two loopback hosts count as the same),
 * over https, or plain http only to a loopback host when the base itself is plain http. A
 * token URL configured by hand is not checked here (the configuration's rules apply to it). */
static int discovered_url_check(const char *url, const char *fhir_base, fhir_error *err)
{
    char ts[16], th[FHIR_URL_HOST_MAX], bs[16], bh[FHIR_URL_HOST_MAX];
    if (!fhir_url_host(url, ts, sizeof ts, th, sizeof th) || (strcmp(ts, "https") && strcmp(ts, "http")))
        return fhir_error_set(err, "SMART configuration: token_endpoint \"%.200s\" is not an http(s) URL", url);
    if (!fhir_url_host(fhir_base, bs, sizeof bs, bh, sizeof bh))
        return fhir_error_set(err, "SMART discovery: the FHIR base \"%.200s\" is not a URL", fhir_base);
    bool tl = fhir_url_host_is_loopback(th), bl = fhir_url_host_is_loopback(bh);
    if (strcasecmp(th, bh) && !(tl && bl))
        return fhir_error_set(err, "SMART configuration: token_endpoint \"%.200s\" is not on the FHIR server's host "
                                   "%s: refused (configure the token URL explicitly to use another host)",
                              url, bh);
    if (strcmp(ts, "https") && (!tl || !strcmp(bs, "https")))
        return fhir_error_set(err, "SMART configuration: token_endpoint \"%.200s\" is not https: refused (the "
                                   "client assertion and the access token would cross the network in clear)",
                              url);
    return 0;
}

int fhir_auth_parse_discovery(fhir_auth *a, const char *body, size_t len,
                              const char *fhir_base, fhir_error *err)
{
    fhir_arena *ar = fhir_arena_new(4u * FHIR_AUTH_TOKEN_BODY_MAX);
    fhir_json_limits lim = {.max_bytes = FHIR_AUTH_TOKEN_BODY_MAX};
    int rc = -1;
    fhir_node *doc = fhir_json_parse(ar, body, len, &lim, err);
    if (!doc) {
        fhir_error_prefix(err, "SMART configuration is not JSON");
        goto out;
    }
    const char *te = fhir_node_str(fhir_node_get(doc, "token_endpoint"));
    if (!te || !*te) {
        fhir_error_set(err, "SMART configuration has no token_endpoint");
        goto out;
    }
    const fhir_node *grants = fhir_node_get(doc, "grant_types_supported");
    if (grants && !array_has(grants, "client_credentials")) {
        fhir_error_set(err, "SMART configuration: grant_types_supported lacks "
                            "client_credentials");
        goto out;
    }
    const fhir_node *algs = fhir_node_get(doc, "token_endpoint_auth_signing_alg_values_supported");
    if (algs && !array_has(algs, a->alg)) {
        fhir_error_set(err, "SMART configuration: server does not accept %s client assertions",
                       a->alg);
        goto out;
    }
    char *url = resolve_url(fhir_base, te);
    if (discovered_url_check(url, fhir_base, err)) {
        free(url);
        goto out;
    }
    free(a->token_url);
    a->token_url = url;
    rc = 0;
out:
    fhir_arena_free(ar);
    return rc;
}

/* ---- JWT ------------------------------------------------------------------------------ */

/* Signs data with the key; returns the raw JOSE signature (for ES384: r||s, 96 bytes). */
static unsigned char *sign(fhir_auth *a, const char *data, size_t len, size_t *sig_len,
                           fhir_error *err)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *sig = NULL;
    size_t n = 0;
    if (!ctx)
        abort();
    if (EVP_DigestSignInit(ctx, NULL, EVP_sha384(), NULL, a->key) != 1 ||
        EVP_DigestSign(ctx, NULL, &n, (const unsigned char *)data, len) != 1) {
        openssl_cause(err, "JWT signing failed");
        goto fail;
    }
    sig = fhir_xmalloc(n);
    if (EVP_DigestSign(ctx, sig, &n, (const unsigned char *)data, len) != 1) {
        openssl_cause(err, "JWT signing failed");
        goto fail;
    }
    EVP_MD_CTX_free(ctx);
    ctx = NULL;
    if (!strcmp(a->alg, "ES384")) {
        /* DER ECDSA-Sig-Value -> fixed-width r||s (RFC 7518 §3.4) */
        const unsigned char *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
        if (!es) {
            openssl_cause(err, "ES384: bad DER signature");
            goto fail;
        }
        const BIGNUM *r, *s;
        ECDSA_SIG_get0(es, &r, &s);
        unsigned char *raw = fhir_xmalloc(96);
        if (BN_bn2binpad(r, raw, 48) != 48 || BN_bn2binpad(s, raw + 48, 48) != 48) {
            ECDSA_SIG_free(es);
            free(raw);
            fhir_error_set(err, "ES384: signature component too large");
            goto fail;
        }
        ECDSA_SIG_free(es);
        free(sig);
        sig = raw;
        n = 96;
    }
    *sig_len = n;
    return sig;
fail:
    EVP_MD_CTX_free(ctx);
    free(sig);
    return NULL;
}

static void append_b64(fhir_buf *b, const char *s, size_t n)
{
    char *e = fhir_auth_b64url_encode(s, n);
    fhir_buf_puts(b, e);
    free(e);
}

char *fhir_auth_jwt_assertion(fhir_auth *a, const char *aud, int64_t now_ms, fhir_error *err)
{
    if (!a || a->kind != FHIR_AUTH_SMART) {
        fhir_error_set(err, "JWT assertion requested for non-SMART auth");
        return NULL;
    }
    if (!aud || !*aud) {
        fhir_error_set(err, "JWT assertion needs an audience (token endpoint)");
        return NULL;
    }
    unsigned char rnd[16];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        openssl_cause(err, "jti random");
        return NULL;
    }
    char jti[33];
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(jti + 2 * i, 3, "%02x", rnd[i]);
    int64_t now_s = now_ms / 1000;

    fhir_buf hdr, claims, out;
    fhir_buf_init(&hdr, FHIR_AUTH_JWT_HEADER_MAX);
    fhir_buf_init(&claims, FHIR_AUTH_JWT_CLAIMS_MAX);
    fhir_buf_init(&out, FHIR_AUTH_JWT_MAX);
    fhir_buf_printf(&hdr, "{\"alg\":\"%s\",\"kid\":", a->alg);
    fhir_json_write_string(&hdr, a->kid, strlen(a->kid));
    fhir_buf_puts(&hdr, ",\"typ\":\"JWT\"}");
    fhir_buf_puts(&claims, "{\"iss\":");
    fhir_json_write_string(&claims, a->client_id, strlen(a->client_id));
    fhir_buf_puts(&claims, ",\"sub\":");
    fhir_json_write_string(&claims, a->client_id, strlen(a->client_id));
    fhir_buf_puts(&claims, ",\"aud\":");
    fhir_json_write_string(&claims, aud, strlen(aud));
    fhir_buf_printf(&claims, ",\"iat\":%" PRId64 ",\"exp\":%" PRId64 ",\"jti\":\"%s\"}", now_s,
                    now_s + a->assertion_ttl_s, jti);
    char *res = NULL;
    if (hdr.overflow || claims.overflow) {
        fhir_error_set(err, "JWT claims too large");
        goto out;
    }
    append_b64(&out, hdr.data, hdr.len);
    fhir_buf_putc(&out, '.');
    append_b64(&out, claims.data, claims.len);
    size_t sig_len = 0;
    unsigned char *sig = sign(a, out.data, out.len, &sig_len, err);
    if (!sig)
        goto out;
    fhir_buf_putc(&out, '.');
    append_b64(&out, (const char *)sig, sig_len);
    free(sig);
    if (out.overflow) {
        fhir_error_set(err, "JWT too large");
        goto out;
    }
    fhir_buf_cstr(&out);
    res = fhir_buf_steal(&out, NULL);
out:
    fhir_buf_free(&hdr);
    fhir_buf_free(&claims);
    fhir_buf_free(&out);
    return res;
}

char *fhir_auth_token_request(fhir_auth *a, int64_t now_ms, fhir_error *err)
{
    if (!a || a->kind != FHIR_AUTH_SMART || !a->token_url) {
        fhir_error_set(err, "SMART token request without a token endpoint");
        return NULL;
    }
    char *jwt = fhir_auth_jwt_assertion(a, a->audience ? a->audience : a->token_url, now_ms, err);
    if (!jwt)
        return NULL;
    char *scope = fhir_auth_form_encode(a->scope);
    fhir_buf b;
    fhir_buf_init(&b, FHIR_AUTH_TOKEN_REQUEST_MAX);
    fhir_buf_printf(&b,
                    "grant_type=client_credentials&scope=%s"
                    "&client_assertion_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Aclient-assertion-"
                    "type%%3Ajwt-bearer&client_assertion=%s",
                    scope, jwt);
    free(scope);
    free(jwt);
    if (b.overflow) {
        fhir_buf_free(&b);
        fhir_error_set(err, "token request too large");
        return NULL;
    }
    fhir_buf_cstr(&b);
    return fhir_buf_steal(&b, NULL);
}

int fhir_auth_accept_token(fhir_auth *a, const char *body, size_t len, int64_t now_ms,
                           fhir_error *err)
{
    if (!a || a->kind != FHIR_AUTH_SMART)
        return fhir_error_set(err, "token response for non-SMART auth");
    fhir_arena *ar = fhir_arena_new(4u * FHIR_AUTH_TOKEN_BODY_MAX);
    fhir_json_limits lim = {.max_bytes = FHIR_AUTH_TOKEN_BODY_MAX};
    int rc = -1;
    fhir_node *doc = fhir_json_parse(ar, body, len, &lim, err);
    if (!doc) {
        fhir_error_prefix(err, "token response is not JSON");
        goto out;
    }
    const char *tok = fhir_node_str(fhir_node_get(doc, "access_token"));
    const char *type = fhir_node_str(fhir_node_get(doc, "token_type"));
    if (!tok || !*tok || !header_safe(tok) || strlen(tok) > FHIR_AUTH_SECRET_MAX) {
        fhir_error_set(err, "token response has no usable access_token");
        goto out;
    }
    if (!type || strcasecmp(type, "bearer")) {
        fhir_error_set(err, "token response: token_type '%s' is not bearer",
                       type ? type : "(absent)");
        goto out;
    }
    int64_t expires_in = 300;
    const fhir_node *ei = fhir_node_get(doc, "expires_in");
    if (ei) {
        double d;
        if (!fhir_node_double(ei, &d) || d <= 0 || d > 86400.0 * 365) {
            fhir_error_set(err, "token response: bad expires_in");
            goto out;
        }
        expires_in = (int64_t)(d * 1000.0); /* now in ms */
    } else {
        expires_in *= 1000;
    }
    int64_t margin = (int64_t)a->refresh_margin_s * 1000;
    if (margin > expires_in / 5)
        margin = expires_in / 5;
    if (a->token_header) {
        OPENSSL_cleanse(a->token_header, strlen(a->token_header));
        free(a->token_header);
    }
    size_t n = strlen(tok) + 32;
    a->token_header = fhir_xmalloc(n);
    snprintf(a->token_header, n, "Authorization: Bearer %s", tok);
    a->token_expiry_ms = now_ms + expires_in;
    a->token_refresh_ms = a->token_expiry_ms - margin;
    a->generation++;
    rc = 0;
out:
    fhir_arena_free(ar);
    return rc;
}
