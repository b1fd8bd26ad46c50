/* Test helpers (header-only, static): make RSA/EC keys with OpenSSL, publish them as JWKs and
 * sign compact JWS with them — the provider's side, so the verifier is checked against an
 * independent signer. */
#ifndef JWS_TEST_H
#define JWS_TEST_H

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_auth.h"

static inline EVP_PKEY *tk_rsa(int bits)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
}

static inline EVP_PKEY *tk_ec(const char *curve)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
}

static inline char *tk_b64_bn(EVP_PKEY *k, const char *param, size_t pad)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(k, param, &bn) != 1)
        abort();
    size_t n = (size_t)BN_num_bytes(bn);
    if (pad > n)
        n = pad;
    unsigned char *buf = calloc(1, n);
    BN_bn2binpad(bn, buf, (int)n);
    char *s = fhir_auth_b64url_encode(buf, n);
    free(buf);
    BN_free(bn);
    return s;
}

/* One JWK object (JSON text) of k; extra is appended inside the object (e.g. ",\"use\":\"enc\""). */
static inline void tk_jwk(EVP_PKEY *k, const char *kid, const char *extra, char *out, size_t outn)
{
    if (EVP_PKEY_is_a(k, "RSA")) {
        char *n = tk_b64_bn(k, OSSL_PKEY_PARAM_RSA_N, 0), *e = tk_b64_bn(k, OSSL_PKEY_PARAM_RSA_E, 0);
        snprintf(out, outn, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"%s}", kid, n, e,
                 extra ? extra : "");
        free(n);
        free(e);
    } else {
        char group[32];
        size_t gl;
        EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &gl);
        size_t len = !strcmp(group, "prime256v1") ? 32 : !strcmp(group, "secp384r1") ? 48 : 66;
        const char *crv = len == 32 ? "P-256" : len == 48 ? "P-384" : "P-521";
        char *x = tk_b64_bn(k, OSSL_PKEY_PARAM_EC_PUB_X, len), *y = tk_b64_bn(k, OSSL_PKEY_PARAM_EC_PUB_Y, len);
        snprintf(out, outn, "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"%s}", kid, crv, x,
                 y, extra ? extra : "");
        free(x);
        free(y);
    }
}

/* Signs header.payload (JSON texts) with alg; caller frees. */
static inline char *tk_sign(EVP_PKEY *k, const char *alg, const char *header, const char *payload)
{
    char *h = fhir_auth_b64url_encode(header, strlen(header)), *p = fhir_auth_b64url_encode(payload, strlen(payload));
    size_t inlen = strlen(h) + 1 + strlen(p);
    char *input = malloc(inlen + 1);
    snprintf(input, inlen + 1, "%s.%s", h, p);
    const char *md = strstr(alg, "256") ? "SHA256" : strstr(alg, "384") ? "SHA384" : "SHA512";
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    if (EVP_DigestSignInit_ex(ctx, &pctx, md, NULL, NULL, k, NULL) != 1)
        abort();
    if (alg[0] == 'P') {
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
    }
    size_t siglen = 0;
    EVP_DigestSign(ctx, NULL, &siglen, (unsigned char *)input, inlen);
    unsigned char *sig = malloc(siglen);
    if (EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)input, inlen) != 1)
        abort();
    EVP_MD_CTX_free(ctx);
    unsigned char raw[132];
    const unsigned char *sigp = sig;
    size_t rawlen = siglen;
    if (alg[0] == 'E') { /* DER -> r||s */
        size_t half = strstr(alg, "256") ? 32 : strstr(alg, "384") ? 48 : 66;
        const unsigned char *d = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &d, (long)siglen);
        BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, (int)half);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + half, (int)half);
        ECDSA_SIG_free(es);
        sigp = raw;
        rawlen = 2 * half;
    }
    char *s = fhir_auth_b64url_encode(sigp, rawlen);
    size_t outn = inlen + 2 + strlen(s);
    char *out = malloc(outn);
    snprintf(out, outn, "%s.%s", input, s);
    free(s);
    free(sig);
    free(input);
    free(h);
    free(p);
    return out;
}

#endif
