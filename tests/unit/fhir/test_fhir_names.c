/* Unit tests: the shared table of common FHIR member names (fhir_names) — every name found at
 * its index and its copy recognized by address alone (and nothing else: other copies, pointers
 * into the middle of a name or at its index byte, NULL), names near a table name not found, and
 * the indices the binary form stores kept where they were (append only). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fhir_names.h"

static void test_every_name(void **state)
{
    (void)state;
    size_t n = fhir_names_count();
    assert_true(n > 200 && n <= FHIR_NAMES_MAX);
    for (size_t i = 0; i < n; i++) {
        uint32_t len = 0;
        const char *s = fhir_names_at(i, &len);
        assert_non_null(s);
        assert_int_equal(len, strlen(s));
        assert_int_equal(fhir_names_find(s, len), (int)i);
        assert_int_equal(fhir_names_own(s), (int)i);
        char *copy = strdup(s);
        assert_int_equal(fhir_names_find(copy, len), (int)i); /* by bytes */
        assert_int_equal(fhir_names_own(copy), -1);           /* not by address */
        free(copy);
        for (uint32_t k = 1; k <= len; k++) /* into the name, and its end */
            assert_int_equal(fhir_names_own(s + k), -1);
        assert_int_equal(fhir_names_own(s - 1), -1); /* its index byte */
        /* one byte changed anywhere, or one byte more or fewer: another name or none */
        char v[300];
        memcpy(v, s, len);
        for (uint32_t k = 0; k < len; k++) {
            v[k] ^= 0x20;
            int f = fhir_names_find(v, len);
            assert_true(f < 0 || strcmp(fhir_names_at((size_t)f, NULL), s) != 0);
            v[k] ^= 0x20;
        }
        assert_true(fhir_names_find(s, len - 1) != (int)i);
        v[len] = 'x';
        assert_true(fhir_names_find(v, len + 1) != (int)i);
    }
    assert_null(fhir_names_at(n, NULL));
    assert_int_equal(fhir_names_own(NULL), -1);
    assert_int_equal(fhir_names_find("", 0), -1);
    assert_int_equal(fhir_names_find(NULL, 0), -1);
    assert_int_equal(fhir_names_find("x-custom-name", 13), -1);
}

/* The binary form stores these indices: the table only grows at its end. */
static void test_indices_kept(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int ix;
    } kept[] = {{"resourceType", 0}, {"id", 1},       {"code", 9},        {"system", 10},
                {"url", 36},         {"extension", 57}, {"unitOfMeasure", 239}};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        assert_int_equal(fhir_names_find(kept[i].name, strlen(kept[i].name)), kept[i].ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_name),
        cmocka_unit_test(test_indices_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
