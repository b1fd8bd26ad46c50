/* pwhash — password hashing with scrypt (OpenSSL EVP_PBE_scrypt), a memory-hard KDF.
 *
 * Stored form (PHC string format, self-describing so parameters can be raised later without
 * invalidating existing hashes):
 *     $scrypt$ln=15,r=8,p=3$<salt, base64url>$<key, base64url>
 * Defaults (OWASP Password Storage Cheat Sheet, scrypt row "N=2^15, r=8, p=3"): N = 2^15,
 * r = 8, p = 3 — 32 MiB of memory per hash, 16-byte random salt (RAND_bytes), 32-byte key.
 * Verification recomputes with the parameters in the stored string, refuses parameters
 * outside PWHASH_LN_MIN..PWHASH_LN_MAX / r 1..32 / p 1..16 (a tampered row cannot make a
 * sign-in eat the machine), and compares in constant time (CRYPTO_memcmp).
 *
 * Passwords are never logged or stored in clear; they must be PWHASH_MIN_LEN..PWHASH_MAX_LEN
 * bytes (a caller may ask for more than the minimum). */
#ifndef PWHASH_H
#define PWHASH_H

#include <stdbool.h>
#include <stddef.h>

#include "fhir_error.h"

#define PWHASH_MIN_LEN 12          /* shortest password accepted (NIST SP 800-63B allows 8) */
#define PWHASH_MAX_LEN 1024        /* longest (bounds the KDF input) */
#define PWHASH_SALT_BYTES 16
#define PWHASH_KEY_BYTES 32
#define PWHASH_LN_DEFAULT 15       /* N = 2^15 */
#define PWHASH_R_DEFAULT 8
#define PWHASH_P_DEFAULT 3
#define PWHASH_LN_MIN 10
#define PWHASH_LN_MAX 20
#define PWHASH_MAX_MEM (1024ull * 1024 * 1024) /* maxmem handed to scrypt */
#define PWHASH_STR_MAX 160         /* longest stored string */

typedef struct pwhash_params {
    unsigned ln;   /* log2(N) */
    unsigned r, p;
} pwhash_params;

/* The documented defaults above. */
pwhash_params pwhash_defaults(void);

/* Checks the policy: length min_len..PWHASH_MAX_LEN (min_len < PWHASH_MIN_LEN is raised to
 * it), no NUL, not all one character. 0, or -1 with err saying what is wrong (never the
 * password). */
int pwhash_check_policy(const char *password, size_t min_len, fhir_error *err);

/* Hashes password with params (NULL = defaults) and a fresh salt. Returns the stored string
 * (caller frees) or NULL with err. Does not check the policy. */
char *pwhash_hash(const char *password, const pwhash_params *params, fhir_error *err);

/* Verifies password against a stored string in constant time with respect to the key. true
 * on a match; false on a mismatch or a malformed/out-of-bounds stored string. When
 * needs_rehash is non-NULL it is set when the stored parameters are below the defaults. */
bool pwhash_verify(const char *password, const char *stored, bool *needs_rehash);

/* Parses the parameters of a stored string. 0, or -1 when malformed or out of bounds. */
int pwhash_parse(const char *stored, pwhash_params *out);

#endif
