/* pwhash — scrypt password hashing (see pwhash.h). */
#include "pwhash.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_auth.h"

pwhash_params pwhash_defaults(void)
{
    return (pwhash_params){.ln = PWHASH_LN_DEFAULT, .r = PWHASH_R_DEFAULT, .p = PWHASH_P_DEFAULT};
}

int pwhash_check_policy(const char *password, size_t min_len, fhir_error *err)
{
    if (min_len < PWHASH_MIN_LEN)
        min_len = PWHASH_MIN_LEN;
    if (!password)
        return fhir_error_set(err, "no password given");
    size_t n = strnlen(password, PWHASH_MAX_LEN + 1);
    if (n < min_len)
        return fhir_error_set(err, "password too short: at least %zu characters", min_len);
    if (n > PWHASH_MAX_LEN)
        return fhir_error_set(err, "password too long: at most %d bytes", PWHASH_MAX_LEN);
    bool same = true;
    for (size_t i = 1; i < n; i++)
        if (password[i] != password[0])
            same = false;
    if (same)
        return fhir_error_set(err, "password is one character repeated");
    return 0;
}

static bool params_ok(const pwhash_params *p)
{
    return p->ln >= PWHASH_LN_MIN && p->ln <= PWHASH_LN_MAX && p->r >= 1 && p->r <= 32 && p->p >= 1 &&
           p->p <= 16;
}

static int derive(const char *password, const unsigned char *salt, size_t saltlen, const pwhash_params *p,
                  unsigned char key[PWHASH_KEY_BYTES])
{
    size_t n = strnlen(password, PWHASH_MAX_LEN + 1);
    if (n > PWHASH_MAX_LEN)
        return -1;
    return EVP_PBE_scrypt(password, n, salt, saltlen, (uint64_t)1 << p->ln, p->r, p->p, PWHASH_MAX_MEM, key,
                          PWHASH_KEY_BYTES) == 1
               ? 0
               : -1;
}

char *pwhash_hash(const char *password, const pwhash_params *params, fhir_error *err)
{
    pwhash_params p = params ? *params : pwhash_defaults();
    if (!params_ok(&p)) {
        fhir_error_set(err, "scrypt parameters out of bounds");
        return NULL;
    }
    unsigned char salt[PWHASH_SALT_BYTES], key[PWHASH_KEY_BYTES];
    if (RAND_bytes(salt, sizeof salt) != 1) {
        fhir_error_set(err, "no randomness for the salt (RAND_bytes failed)");
        return NULL;
    }
    if (derive(password, salt, sizeof salt, &p, key)) {
        fhir_error_set(err, "scrypt failed (EVP_PBE_scrypt)");
        return NULL;
    }
    char *s64 = fhir_auth_b64url_encode(salt, sizeof salt);
    char *k64 = fhir_auth_b64url_encode(key, sizeof key);
    OPENSSL_cleanse(key, sizeof key);
    char *out = malloc(PWHASH_STR_MAX);
    if (!s64 || !k64 || !out)
        abort();
    snprintf(out, PWHASH_STR_MAX, "$scrypt$ln=%u,r=%u,p=%u$%s$%s", p.ln, p.r, p.p, s64, k64);
    free(s64);
    free(k64);
    return out;
}

/* Splits a stored string; salt and key point into stored. */
static int split(const char *stored, pwhash_params *p, const char **salt, size_t *saltn, const char **key,
                 size_t *keyn)
{
    if (!stored || strncmp(stored, "$scrypt$", 8) || strlen(stored) >= PWHASH_STR_MAX)
        return -1;
    unsigned ln, r, pp;
    int used = 0;
    if (sscanf(stored + 8, "ln=%2u,r=%2u,p=%2u$%n", &ln, &r, &pp, &used) != 3 || used == 0)
        return -1;
    p->ln = ln;
    p->r = r;
    p->p = pp;
    if (!params_ok(p))
        return -1;
    *salt = stored + 8 + used;
    const char *dollar = strchr(*salt, '$');
    if (!dollar)
        return -1;
    *saltn = (size_t)(dollar - *salt);
    *key = dollar + 1;
    *keyn = strlen(*key);
    return *saltn && *keyn ? 0 : -1;
}

int pwhash_parse(const char *stored, pwhash_params *out)
{
    const char *s, *k;
    size_t sn, kn;
    return split(stored, out, &s, &sn, &k, &kn);
}

bool pwhash_verify(const char *password, const char *stored, bool *needs_rehash)
{
    pwhash_params p;
    const char *s64, *k64;
    size_t sn, kn;
    if (needs_rehash)
        *needs_rehash = false;
    if (!password || split(stored, &p, &s64, &sn, &k64, &kn))
        return false;
    size_t saltlen = 0, keylen = 0;
    unsigned char *salt = fhir_auth_b64url_decode(s64, sn, &saltlen);
    unsigned char *want = fhir_auth_b64url_decode(k64, kn, &keylen);
    unsigned char got[PWHASH_KEY_BYTES];
    bool ok = false;
    if (salt && want && saltlen >= 8 && keylen == PWHASH_KEY_BYTES && derive(password, salt, saltlen, &p, got) == 0) {
        ok = CRYPTO_memcmp(got, want, PWHASH_KEY_BYTES) == 0;
        OPENSSL_cleanse(got, sizeof got);
    }
    free(salt);
    free(want);
    if (ok && needs_rehash) {
        pwhash_params d = pwhash_defaults();
        *needs_rehash = p.ln < d.ln || p.r < d.r || p.p < d.p;
    }
    return ok;
}
