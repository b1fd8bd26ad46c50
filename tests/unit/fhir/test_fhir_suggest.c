/* Unit tests of fhir/fhir_suggest: the edit distance (with swaps) and which candidate, if any,
 * is offered for a word. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "fhir_suggest.h"

static void test_distance(void **state)
{
    (void)state;
    assert_int_equal(fhir_suggest_distance("json", "json"), 0);
    assert_int_equal(fhir_suggest_distance("jsno", "json"), 1);  /* swap */
    assert_int_equal(fhir_suggest_distance("jsn", "json"), 1);   /* insertion */
    assert_int_equal(fhir_suggest_distance("jsoon", "json"), 1); /* deletion */
    assert_int_equal(fhir_suggest_distance("jsan", "json"), 1);  /* substitution */
    assert_int_equal(fhir_suggest_distance("", "db"), 2);
    assert_int_equal(fhir_suggest_distance("kitten", "sitting"), 3);
    char lng[FHIR_SUGGEST_MAX_LEN + 2];
    memset(lng, 'a', sizeof lng - 1);
    lng[sizeof lng - 1] = 0;
    assert_true(fhir_suggest_distance(lng, "a") == SIZE_MAX);
}

static void test_suggest(void **state)
{
    (void)state;
    const char *c[] = {"screen", "profile", "synth", "convert", "check-config", "db", "dd"};
    assert_string_equal(fhir_suggest("scren", c, 7), "screen");
    assert_string_equal(fhir_suggest("sytnh", c, 7), "synth");
    assert_string_equal(fhir_suggest("check-confg", c, 7), "check-config");
    assert_string_equal(fhir_suggest("chekc-cnofig", c, 7), "check-config");
    assert_string_equal(fhir_suggest("bd", c, 7), "db"); /* the first of equally near ones */
    assert_null(fhir_suggest("xyz", c, 7));
    assert_null(fhir_suggest("prof", c, 7)); /* 3 edits for a 4-letter word: too far */
    assert_null(fhir_suggest("", c, 7));
    assert_null(fhir_suggest("screen", c, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distance),
        cmocka_unit_test(test_suggest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
