/* fhir_hash: the published FNV-1a vectors, and continuing a hash equals hashing the whole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fhir_hash.h"

/* Reference values of FNV-1a (Fowler, Noll, Vo: the FNV test suite, fnv-0.1 "test_vector"). */
static void test_vectors(void **state)
{
    (void)state;
    assert_int_equal(fhir_hash32(FHIR_HASH32_INIT, "", 0), 0x811c9dc5u);
    assert_int_equal(fhir_hash32_str(FHIR_HASH32_INIT, "a"), 0xe40c292cu);
    assert_int_equal(fhir_hash32_str(FHIR_HASH32_INIT, "foobar"), 0xbf9cf968u);
    assert_true(fhir_hash64(FHIR_HASH64_INIT, "", 0) == 0xcbf29ce484222325ull);
    assert_true(fhir_hash64_str(FHIR_HASH64_INIT, "a") == 0xaf63dc4c8601ec8cull);
    assert_true(fhir_hash64_str(FHIR_HASH64_INIT, "foobar") == 0x85944171f73967e8ull);
}

static void test_continue_and_lengths(void **state)
{
    (void)state;
    const char s[] = "Patient/p1\0Observation";
    /* the length form reads past a NUL, the string form stops at it */
    uint32_t whole = fhir_hash32(FHIR_HASH32_INIT, s, sizeof s - 1);
    uint32_t parts = fhir_hash32(fhir_hash32(FHIR_HASH32_INIT, s, 11), s + 11, sizeof s - 12);
    assert_int_equal(whole, parts);
    assert_int_equal(fhir_hash32(FHIR_HASH32_INIT, s, 10), fhir_hash32_str(FHIR_HASH32_INIT, s));
    assert_int_not_equal(whole, fhir_hash32_str(FHIR_HASH32_INIT, s));
    uint64_t w64 = fhir_hash64(FHIR_HASH64_INIT, s, sizeof s - 1);
    assert_true(w64 == fhir_hash64(fhir_hash64(FHIR_HASH64_INIT, s, 5), s + 5, sizeof s - 6));
    assert_true(fhir_hash64(FHIR_HASH64_INIT, s, 10) == fhir_hash64_str(FHIR_HASH64_INIT, s));
    /* bytes above 0x7f hash as unsigned (a signed char would differ) */
    assert_int_equal(fhir_hash32_str(FHIR_HASH32_INIT, "\xc3\xa9"),
                     (((FHIR_HASH32_INIT ^ 0xc3u) * FHIR_HASH32_PRIME) ^ 0xa9u) * FHIR_HASH32_PRIME);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_continue_and_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
