/* jose — JWKS and JWS verification (see jose.h). */
#include "jose.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_alloc.h"
#include "fhir_auth.h"
#include "fhir_json.h"

typedef enum key_type { KT_RSA, KT_EC } key_type;

typedef struct jose_key {
    char *kid;        /* NULL when the JWK has none */
    char *alg;        /* the JWK's own alg, or NULL */
    key_type kty;
    int ec_bits;      /* 256, 384, 521 */
    EVP_PKEY *pkey;
} jose_key;

struct jose_jwks {
    jose_key keys[JOSE_MAX_KEYS];
    size_t n;
};

/* An algorithm we verify: its digest, key type, PSS padding, EC curve size. */
typedef struct alg_info {
    const char *name;
    key_type kty;
    bool pss;
    int ec_bits;
    const char *md;
} alg_info;

static const alg_info ALGS[] = {
    {"RS256", KT_RSA, false, 0, "SHA256"}, {"RS384", KT_RSA, false, 0, "SHA384"},
    {"RS512", KT_RSA, false, 0, "SHA512"}, {"PS256", KT_RSA, true, 0, "SHA256"},
    {"PS384", KT_RSA, true, 0, "SHA384"},  {"PS512", KT_RSA, true, 0, "SHA512"},
    {"ES256", KT_EC, false, 256, "SHA256"}, {"ES384", KT_EC, false, 384, "SHA384"},
    {"ES512", KT_EC, false, 521, "SHA512"},
};

static const alg_info *alg_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof ALGS / sizeof ALGS[0]; i++)
        if (!strcmp(ALGS[i].name, name))
            return &ALGS[i];
    return NULL;
}

static BIGNUM *b64_bn(const char *s)
{
    if (!s)
        return NULL;
    size_t n = 0;
    unsigned char *raw = fhir_auth_b64url_decode(s, strlen(s), &n);
    if (!raw || n == 0 || n > 1024) {
        free(raw);
        return NULL;
    }
    BIGNUM *bn = BN_bin2bn(raw, (int)n, NULL);
    free(raw);
    return bn;
}

static EVP_PKEY *fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1)
        if (EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
            pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *rsa_key(const fhir_node *jwk)
{
    BIGNUM *n = b64_bn(fhir_node_str(fhir_node_get(jwk, "n")));
    BIGNUM *e = b64_bn(fhir_node_str(fhir_node_get(jwk, "e")));
    EVP_PKEY *pkey = NULL;
    if (n && e && BN_num_bits(n) >= 2048 && BN_num_bits(n) <= 16384) {
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
            pkey = fromdata("RSA", bld);
        OSSL_PARAM_BLD_free(bld);
    }
    BN_free(n);
    BN_free(e);
    return pkey;
}

static EVP_PKEY *ec_key(const fhir_node *jwk, int *bits)
{
    const char *crv = fhir_node_str(fhir_node_get(jwk, "crv"));
    const char *group;
    size_t len;
    if (crv && !strcmp(crv, "P-256"))
        group = "prime256v1", len = 32, *bits = 256;
    else if (crv && !strcmp(crv, "P-384"))
        group = "secp384r1", len = 48, *bits = 384;
    else if (crv && !strcmp(crv, "P-521"))
        group = "secp521r1", len = 66, *bits = 521;
    else
        return NULL;
    const char *xs = fhir_node_str(fhir_node_get(jwk, "x"));
    const char *ys = fhir_node_str(fhir_node_get(jwk, "y"));
    if (!xs || !ys)
        return NULL;
    size_t xn = 0, yn = 0;
    unsigned char *x = fhir_auth_b64url_decode(xs, strlen(xs), &xn);
    unsigned char *y = fhir_auth_b64url_decode(ys, strlen(ys), &yn);
    EVP_PKEY *pkey = NULL;
    if (x && y && xn == len && yn == len) {
        unsigned char pub[1 + 2 * 66];
        pub[0] = 0x04; /* uncompressed point */
        memcpy(pub + 1, x, len);
        memcpy(pub + 1 + len, y, len);
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 1 + 2 * len))
            pkey = fromdata("EC", bld); /* the provider checks the point is on the curve */
        OSSL_PARAM_BLD_free(bld);
    }
    free(x);
    free(y);
    return pkey;
}

jose_jwks *jose_jwks_from_node(const fhir_node *doc, size_t *skipped, fhir_error *err)
{
    const fhir_node *keys = fhir_node_get(doc, "keys");
    if (!fhir_node_is(keys, FHIR_ARRAY)) {
        fhir_error_set(err, "JWKS: no \"keys\" array");
        return NULL;
    }
    jose_jwks *k = calloc(1, sizeof *k);
    if (!k)
        abort();
    size_t skip = 0;
    for (const fhir_node *j = fhir_node_first(keys); j; j = j->next) {
        const char *kty = fhir_node_str(fhir_node_get(j, "kty"));
        const char *use = fhir_node_str(fhir_node_get(j, "use"));
        if (k->n == JOSE_MAX_KEYS || !kty || (use && strcmp(use, "sig"))) {
            skip++;
            continue;
        }
        jose_key *key = &k->keys[k->n];
        memset(key, 0, sizeof *key);
        if (!strcmp(kty, "RSA")) {
            key->kty = KT_RSA;
            key->pkey = rsa_key(j);
        } else if (!strcmp(kty, "EC")) {
            key->kty = KT_EC;
            key->pkey = ec_key(j, &key->ec_bits);
        }
        const char *alg = fhir_node_str(fhir_node_get(j, "alg"));
        const alg_info *ai = alg ? alg_find(alg) : NULL;
        if (!key->pkey || (alg && (!ai || ai->kty != key->kty || (ai->kty == KT_EC && ai->ec_bits != key->ec_bits)))) {
            EVP_PKEY_free(key->pkey);
            skip++;
            continue;
        }
        key->kid = fhir_xstrdup(fhir_node_str(fhir_node_get(j, "kid")));
        key->alg = fhir_xstrdup(alg);
        k->n++;
    }
    if (skipped)
        *skipped = skip;
    if (k->n == 0) {
        jose_jwks_free(k);
        fhir_error_set(err, "JWKS: no usable signing key (RSA >= 2048 bits or EC P-256/384/521)");
        return NULL;
    }
    return k;
}

jose_jwks *jose_jwks_parse(const char *json, size_t len, size_t *skipped, fhir_error *err)
{
    fhir_arena *a = fhir_arena_new(4u << 20);
    fhir_json_limits lim = {.max_bytes = 1u << 20, .max_depth = 16};
    fhir_node *doc = fhir_json_parse(a, json, len, &lim, err);
    jose_jwks *k = doc ? jose_jwks_from_node(doc, skipped, err) : NULL;
    if (!doc)
        fhir_error_prefix(err, "JWKS");
    fhir_arena_free(a);
    return k;
}

void jose_jwks_free(jose_jwks *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++) {
        EVP_PKEY_free(k->keys[i].pkey);
        free(k->keys[i].kid);
        free(k->keys[i].alg);
    }
    free(k);
}

size_t jose_jwks_count(const jose_jwks *k)
{
    return k ? k->n : 0;
}

bool jose_jwks_has_kid(const jose_jwks *k, const char *kid)
{
    for (size_t i = 0; k && kid && i < k->n; i++)
        if (k->keys[i].kid && !strcmp(k->keys[i].kid, kid))
            return true;
    return false;
}

/* Raw r||s (JWS) -> DER ECDSA-Sig-Value (OpenSSL). Caller frees *der (OPENSSL_free). */
static int ecdsa_raw_to_der(const unsigned char *sig, size_t n, int bits, unsigned char **der, size_t *dern)
{
    size_t half = (size_t)(bits + 7) / 8;
    if (n != 2 * half)
        return -1;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL);
    BIGNUM *s = BN_bin2bn(sig + half, (int)half, NULL);
    if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return -1;
    }
    *der = NULL;
    int len = i2d_ECDSA_SIG(es, der);
    ECDSA_SIG_free(es);
    if (len <= 0)
        return -1;
    *dern = (size_t)len;
    return 0;
}

static bool verify_with(const jose_key *key, const alg_info *ai, const char *input, size_t inlen,
                        const unsigned char *sig, size_t sign)
{
    if (key->kty != ai->kty || (ai->kty == KT_EC && key->ec_bits != ai->ec_bits))
        return false;
    if (key->alg && strcmp(key->alg, ai->name))
        return false;
    unsigned char *der = NULL;
    size_t dern = 0;
    if (ai->kty == KT_EC) {
        if (ecdsa_raw_to_der(sig, sign, ai->ec_bits, &der, &dern))
            return false;
        sig = der;
        sign = dern;
    }
    bool ok = false;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    if (md && EVP_DigestVerifyInit_ex(md, &pctx, ai->md, NULL, NULL, key->pkey, NULL) == 1) {
        bool padded = true;
        if (ai->pss)
            padded = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
                     EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
        ok = padded && EVP_DigestVerify(md, sig, sign, (const unsigned char *)input, inlen) == 1;
    }
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    return ok;
}

/* Decodes one base64url JSON segment into arena a. */
static fhir_node *segment_json(fhir_arena *a, const char *s, size_t n, const char *what, fhir_error *err)
{
    size_t len = 0;
    unsigned char *raw = fhir_auth_b64url_decode(s, n, &len);
    if (!raw) {
        fhir_error_set(err, "JWS %s: not base64url", what);
        return NULL;
    }
    fhir_json_limits lim = {.max_bytes = JOSE_MAX_TOKEN, .max_depth = 16};
    fhir_node *node = fhir_json_parse(a, (const char *)raw, len, &lim, err);
    free(raw);
    if (!node) {
        fhir_error_prefix(err, "JWS %s", what);
        return NULL;
    }
    if (!fhir_node_is(node, FHIR_OBJECT)) {
        fhir_error_set(err, "JWS %s: not a JSON object", what);
        return NULL;
    }
    return node;
}

/* Splits header.payload.signature; 0 or -1. */
static int split3(const char *c, size_t *d1, size_t *d2, size_t *len)
{
    *len = strnlen(c, JOSE_MAX_TOKEN + 1);
    if (*len > JOSE_MAX_TOKEN)
        return -1;
    const char *a = memchr(c, '.', *len);
    if (!a)
        return -1;
    const char *b = memchr(a + 1, '.', *len - (size_t)(a + 1 - c));
    if (!b || memchr(b + 1, '.', *len - (size_t)(b + 1 - c)))
        return -1;
    *d1 = (size_t)(a - c);
    *d2 = (size_t)(b - c);
    return 0;
}

const fhir_node *jose_peek(const char *compact, int part, fhir_arena *a)
{
    size_t d1, d2, len;
    if (!compact || split3(compact, &d1, &d2, &len))
        return NULL;
    fhir_error e;
    if (part == 0)
        return segment_json(a, compact, d1, "header", &e);
    return segment_json(a, compact + d1 + 1, d2 - d1 - 1, "payload", &e);
}

const char *jose_peek_kid(const char *compact, fhir_arena *a)
{
    const char *kid = fhir_node_str(fhir_node_get(jose_peek(compact, 0, a), "kid"));
    return kid ? fhir_arena_strdup(a, kid) : NULL;
}

bool jose_aud_has(const fhir_node *aud, const char *want, size_t *n)
{
    bool found = false;
    *n = 0;
    if (fhir_node_is(aud, FHIR_STRING)) {
        *n = 1;
        return !strcmp(fhir_node_str(aud), want);
    }
    if (!fhir_node_is(aud, FHIR_ARRAY))
        return false;
    for (const fhir_node *c = fhir_node_first(aud); c; c = c->next) {
        (*n)++;
        if (fhir_node_str(c) && !strcmp(fhir_node_str(c), want))
            found = true;
    }
    return found;
}

int jose_check_times(const fhir_node *claims, int64_t now_ms, int64_t skew_ms, const char *what, fhir_error *err)
{
    int64_t exp, iat;
    if (!fhir_node_int(fhir_node_get(claims, "exp"), &exp))
        return fhir_error_set(err, "%s: no exp", what);
    if (exp * 1000 + skew_ms <= now_ms)
        return fhir_error_set(err, "%s expired (exp %lld, now %lld, skew %lld s)", what, (long long)exp,
                              (long long)(now_ms / 1000), (long long)(skew_ms / 1000));
    if (!fhir_node_int(fhir_node_get(claims, "iat"), &iat))
        return fhir_error_set(err, "%s: no iat", what);
    if (iat * 1000 > now_ms + skew_ms)
        return fhir_error_set(err, "%s issued in the future (iat %lld, now %lld)", what, (long long)iat,
                              (long long)(now_ms / 1000));
    return 0;
}

int jose_verify(const jose_jwks *keys, const char *compact, const char *const *algs, fhir_arena *a,
                fhir_node **payload, fhir_node **header, fhir_error *err)
{
    size_t d1, d2, len;
    if (!compact || split3(compact, &d1, &d2, &len))
        return fhir_error_set(err, "JWS: not a compact serialization (three base64url parts, at most %u bytes)",
                              JOSE_MAX_TOKEN);
    fhir_node *h = segment_json(a, compact, d1, "header", err);
    if (!h)
        return -1;
    const char *alg = fhir_node_str(fhir_node_get(h, "alg"));
    if (!alg)
        return fhir_error_set(err, "JWS header: no alg");
    bool allowed = false;
    for (size_t i = 0; algs && algs[i]; i++)
        if (!strcmp(algs[i], alg))
            allowed = true;
    const alg_info *ai = alg_find(alg);
    if (!allowed || !ai)
        return fhir_error_set(err, "JWS: algorithm %.32s is not accepted", alg);
    if (fhir_node_get(h, "crit"))
        return fhir_error_set(err, "JWS: critical header extensions are not supported");
    const fhir_node *kidn = fhir_node_get(h, "kid");
    const char *kid = fhir_node_str(kidn);
    if (kidn && !kid)
        return fhir_error_set(err, "JWS header: kid is not a string");
    if (kid && !jose_jwks_has_kid(keys, kid))
        return JOSE_UNKNOWN_KID;
    size_t sign = 0;
    unsigned char *sig = fhir_auth_b64url_decode(compact + d2 + 1, len - d2 - 1, &sign);
    if (!sig || sign == 0) {
        free(sig);
        return fhir_error_set(err, "JWS: signature is not base64url");
    }
    bool ok = false;
    for (size_t i = 0; keys && i < keys->n && !ok; i++) {
        const jose_key *k = &keys->keys[i];
        if (kid && (!k->kid || strcmp(k->kid, kid)))
            continue;
        ok = verify_with(k, ai, compact, d2, sig, sign);
    }
    free(sig);
    if (!ok)
        return fhir_error_set(err, "JWS: signature does not verify (%s%s%.64s)", alg, kid ? ", kid " : "",
                              kid ? kid : "");
    fhir_node *p = segment_json(a, compact + d1 + 1, d2 - d1 - 1, "payload", err);
    if (!p)
        return -1;
    *payload = p;
    if (header)
        *header = h;
    return 0;
}
