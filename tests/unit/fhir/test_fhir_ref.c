/* Unit tests: FHIR ids (the R4 id rule used on ingest) and reference splitting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "fhir_arena.h"
#include "fhir_ref.h"

static void test_id_rule(void **state)
{
    (void)state;
    char max[66];
    memset(max, 'a', 64);
    max[64] = '\0';
    assert_true(fhir_id_valid("p000001-fa8c"));
    assert_true(fhir_id_valid("A.b-9"));
    assert_true(fhir_id_valid(max));
    max[64] = 'a';
    max[65] = '\0';
    assert_false(fhir_id_valid(max)); /* 65 characters */
    static const char *const bad[] = {"", "a b", "a\nlevel=error", "a/b", "a%00", "a_b", "é",
                                      "a\"b", "a\tb", "#a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (fhir_id_valid(bad[i]))
            fail_msg("'%s' taken as a FHIR id", bad[i]);
    assert_false(fhir_id_valid(NULL));
}

static void test_split(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    const char *type, *id;
    bool contained;
    assert_true(fhir_ref_split(a, "Patient/123/_history/4", &type, &id, &contained));
    assert_string_equal(type, "Patient");
    assert_string_equal(id, "123");
    assert_true(fhir_ref_split(a, "#med1", &type, &id, &contained));
    assert_true(contained);
    assert_string_equal(id, "med1");
    fhir_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_rule),
        cmocka_unit_test(test_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
