/* fhir_hash — FNV-1a, the string hash of cartgate's in-memory tables (prefix fhir_hash).
 *
 * One definition for every table that hashes names, ids or keys (the JSON reader's key
 * index, reference and fact indexes, the grouping maps, the held-patient memo): 32 or 64 bits,
 * over n bytes or up to a NUL, continuing from h (start from FHIR_HASH32_INIT or
 * FHIR_HASH64_INIT, or mix a seed into it). Fast and well spread on short keys; not keyed (no
 * defence against chosen collisions); never stored, so it may change between builds. (The
 * 64-bit tables used to start from 1469598103934665603, the offset basis with its last digit
 * lost.) */
#ifndef FHIR_HASH_H
#define FHIR_HASH_H

#include <stddef.h>
#include <stdint.h>

#define FHIR_HASH32_INIT 2166136261u
#define FHIR_HASH32_PRIME 16777619u
#define FHIR_HASH64_INIT 14695981039346656037ull
#define FHIR_HASH64_PRIME 1099511628211ull

/* h continued over p[0..n); borrows p. */
static inline uint32_t fhir_hash32(uint32_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * FHIR_HASH32_PRIME;
    return h;
}

/* h continued over the bytes of s before its NUL; borrows s. */
static inline uint32_t fhir_hash32_str(uint32_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * FHIR_HASH32_PRIME;
    return h;
}

/* h continued over p[0..n); borrows p. */
static inline uint64_t fhir_hash64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * FHIR_HASH64_PRIME;
    return h;
}

/* h continued over the bytes of s before its NUL; borrows s. */
static inline uint64_t fhir_hash64_str(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * FHIR_HASH64_PRIME;
    return h;
}

#endif
