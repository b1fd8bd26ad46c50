/* Unit tests: scrypt password hashing — the documented parameters, verification, salts,
 * constant-time compare inputs, bounds on stored parameters, policy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pwhash.h"

static void test_defaults_and_verify(void **state)
{
    (void)state;
    pwhash_params d = pwhash_defaults();
    assert_int_equal(d.ln, 15); /* N = 32768 */
    assert_int_equal(d.r, 8);
    assert_int_equal(d.p, 3);
    fhir_error err = {0};
    char *h = pwhash_hash("correct horse battery", NULL, &err);
    assert_non_null(h);
    assert_int_equal(strncmp(h, "$scrypt$ln=15,r=8,p=3$", 22), 0);
    assert_null(strstr(h, "correct"));
    pwhash_params got;
    assert_int_equal(pwhash_parse(h, &got), 0);
    assert_int_equal(got.ln, 15);
    bool rehash = true;
    assert_true(pwhash_verify("correct horse battery", h, &rehash));
    assert_false(rehash);
    assert_false(pwhash_verify("correct horse batterY", h, NULL));
    assert_false(pwhash_verify("", h, NULL));
    /* the same password hashes differently (fresh salt) */
    char *h2 = pwhash_hash("correct horse battery", NULL, &err);
    assert_string_not_equal(h, h2);
    assert_true(pwhash_verify("correct horse battery", h2, NULL));
    free(h);
    free(h2);
}

static void test_parameters(void **state)
{
    (void)state;
    fhir_error err = {0};
    pwhash_params weak = {.ln = 10, .r = 8, .p = 1};
    char *h = pwhash_hash("a quite long password", &weak, &err);
    assert_non_null(h);
    bool rehash = false;
    assert_true(pwhash_verify("a quite long password", h, &rehash));
    assert_true(rehash); /* below the defaults */
    /* a stored string with parameters out of bounds is refused without running scrypt */
    char bad[200];
    const char *rest = strchr(h + 8, '$');
    snprintf(bad, sizeof bad, "$scrypt$ln=30,r=8,p=1%s", rest);
    assert_false(pwhash_verify("a quite long password", bad, NULL));
    snprintf(bad, sizeof bad, "$scrypt$ln=10,r=99,p=1%s", rest);
    assert_false(pwhash_verify("a quite long password", bad, NULL));
    pwhash_params out_of_bounds = {.ln = 40, .r = 8, .p = 1};
    assert_null(pwhash_hash("a quite long password", &out_of_bounds, &err));
    /* malformed strings */
    assert_false(pwhash_verify("x", NULL, NULL));
    assert_false(pwhash_verify("x", "", NULL));
    assert_false(pwhash_verify("x", "$2b$12$abcdefghijklmnopqrstuv", NULL));
    assert_false(pwhash_verify("x", "$scrypt$ln=10,r=8,p=1$$", NULL));
    /* truncated key */
    snprintf(bad, sizeof bad, "%.*s", (int)strlen(h) - 4, h);
    assert_false(pwhash_verify("a quite long password", bad, NULL));
    free(h);
}

static void test_policy(void **state)
{
    (void)state;
    fhir_error err = {0};
    assert_int_equal(pwhash_check_policy("tiny9", 0, &err), -1);
    assert_non_null(strstr(err.msg, "at least 12"));
    assert_null(strstr(err.msg, "tiny9")); /* never echoes the password */
    assert_int_equal(pwhash_check_policy("twelve chars", 0, &err), 0);
    assert_int_equal(pwhash_check_policy("twelve chars", 16, &err), -1);
    assert_int_equal(pwhash_check_policy("aaaaaaaaaaaaaaaa", 0, &err), -1);
    char *big = malloc(PWHASH_MAX_LEN + 2);
    memset(big, 'x', PWHASH_MAX_LEN + 1);
    big[0] = 'y';
    big[PWHASH_MAX_LEN + 1] = 0;
    assert_int_equal(pwhash_check_policy(big, 0, &err), -1);
    free(big);
    assert_int_equal(pwhash_check_policy(NULL, 0, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_verify),
        cmocka_unit_test(test_parameters),
        cmocka_unit_test(test_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
