/* Unit tests: arena, capped buffer, resource tree accessors, path getter, builders,
 * equality (decimals by value and precision), references. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_json.h"
#include "fhir_node.h"
#include "fhir_ref.h"

static fhir_node *parse(fhir_arena *a, const char *s)
{
    fhir_error err = {0};
    fhir_node *n = fhir_json_parse(a, s, strlen(s), NULL, &err);
    if (!n)
        fail_msg("parse failed: %s", err.msg);
    return n;
}

/* fhir_node_double reads plain decimals itself (integer / power of ten): the same double as
 * strtod for every decimal it takes, and strtod's answer (or refusal) for the rest. */
static void check_double(fhir_arena *a, const char *text)
{
    fhir_node *n = fhir_node_new_num(a, text, strlen(text));
    char *end;
    double want = strtod(text, &end);
    bool ok_want = *end == '\0' && text[0] && text[0] != ' ';
    double got = 0;
    bool ok = fhir_node_double(n, &got);
    assert_int_equal(ok, ok_want);
    if (ok && memcmp(&got, &want, sizeof got))
        fail_msg("%s: %.17g, strtod %.17g", text, got, want);
}

static void test_double_plain_decimals(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    static const char *const fixed[] = {
        "0", "-0", "0.0", "-0.0", "1", "007", "12.5", "-12.5", "0.1", "0.3", "2.675", "1.005",
        "999999999999999", "0.000000000000001", "123456789012345", "1234567890123456", "9007199254740993",
        "1.", ".5", "-", "1e5", "1.5e-3", "+5", "1.2.3", "12a", "80%", "0x10", "inf", "nan", "1,5",
        "4.35", "132.6", "88.4", "3.14159265358979",
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_double(a, fixed[i]);
    uint64_t x = 88172645463325252ull; /* xorshift: any digits, any point, either sign */
    for (int k = 0; k < 200000; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        char t[32];
        size_t nd = 1 + x % 17, point = (x >> 8) % (nd + 1), o = 0;
        if (x >> 63)
            t[o++] = '-';
        uint64_t y = x;
        for (size_t d = 0; d < nd; d++) {
            if (d == point && d)
                t[o++] = '.';
            y = y * 6364136223846793005ull + 1442695040888963407ull;
            t[o++] = (char)('0' + (y >> 33) % 10);
        }
        t[o] = '\0';
        check_double(a, t);
    }
    fhir_arena_free(a);
}

static void test_arena_cap_and_reset(void **state)
{
    (void)state;
    /* the cap is exact, within one block and across blocks, and again after a reset: every
     * allocation that fits is given (the bytes handed out counted, rounded to eight), the
     * first that does not is refused */
    static const size_t caps[] = {1000, 65536, 200000, 300003};
    static const size_t sizes[] = {8, 24, 1000, 4096};
    for (size_t ci = 0; ci < sizeof caps / sizeof caps[0]; ci++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            fhir_arena *c = fhir_arena_new(caps[ci]);
            for (int round = 0; round < 2; round++) {
                size_t got = 0;
                while (fhir_arena_alloc(c, sizes[si] - round)) /* 7, 23, ...: rounded up */
                    got++;
                assert_int_equal(got, caps[ci] / sizes[si]);
                assert_int_equal(fhir_arena_used(c), got * sizes[si]);
                size_t left = caps[ci] - got * sizes[si];
                if (left >= 8) { /* what is left below the size still fits */
                    assert_non_null(fhir_arena_alloc(c, left & ~(size_t)7));
                    assert_int_equal(fhir_arena_used(c), caps[ci] & ~(size_t)7);
                }
                assert_null(fhir_arena_alloc(c, 8 + (caps[ci] & 7)));
                fhir_arena_reset(c);
                assert_int_equal(fhir_arena_used(c), 0);
            }
            fhir_arena_free(c);
        }
    fhir_arena *a = fhir_arena_new(1000);
    assert_non_null(fhir_arena_alloc(a, 900));
    assert_null(fhir_arena_alloc(a, 200)); /* over the cap */
    assert_true(fhir_arena_used(a) <= 1000);
    fhir_arena_reset(a);
    assert_int_equal(fhir_arena_used(a), 0);
    char *s = fhir_arena_strdup(a, "hello");
    assert_string_equal(s, "hello");
    assert_string_equal(fhir_arena_sprintf(a, "%d-%s", 7, "x"), "7-x");
    fhir_arena_free(a);

    /* uncapped arena spanning many blocks keeps every allocation intact */
    a = fhir_arena_new(0);
    char *ptrs[2000];
    for (int i = 0; i < 2000; i++) {
        ptrs[i] = fhir_arena_alloc(a, 1000);
        memset(ptrs[i], i & 0xff, 1000);
    }
    for (int i = 0; i < 2000; i++)
        assert_int_equal((unsigned char)ptrs[i][999], i & 0xff);
    fhir_arena_reset(a);
    assert_non_null(fhir_arena_alloc(a, 10));
    fhir_arena_free(a);
}

static void test_buf_cap(void **state)
{
    (void)state;
    fhir_buf b;
    fhir_buf_init(&b, 10);
    assert_int_equal(fhir_buf_puts(&b, "12345"), 0);
    assert_int_equal(fhir_buf_printf(&b, "%d", 6789), 0);
    assert_string_equal(fhir_buf_cstr(&b), "123456789");
    assert_int_equal(fhir_buf_puts(&b, "ab"), -1);
    assert_true(b.overflow);
    assert_int_equal(fhir_buf_putc(&b, 'x'), -1); /* sticky */
    fhir_buf_reset(&b);
    assert_false(b.overflow);
    assert_int_equal(fhir_buf_puts(&b, "0123456789"), 0);
    size_t len;
    char *s = fhir_buf_steal(&b, &len);
    assert_int_equal(len, 10);
    assert_string_equal(s, "0123456789");
    free(s);
    fhir_buf_free(&b);
}

static void test_accessors(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *r = parse(a, "{\"resourceType\":\"Observation\",\"id\":\"o1\",\"status\":\"final\","
                            "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"2160-0\"},"
                            "{\"code\":\"x\"}]},\"valueQuantity\":{\"value\":1.20,\"unit\":\"mg/dL\"},"
                            "\"flag\":true,\"n\":null,\"big\":12345678901}");
    assert_string_equal(fhir_node_resource_type(r), "Observation");
    assert_string_equal(fhir_node_resource_id(r), "o1");
    assert_string_equal(fhir_node_num_text(fhir_node_path(r, "valueQuantity.value")), "1.20");
    double v;
    assert_true(fhir_node_double(fhir_node_path(r, "valueQuantity.value"), &v));
    assert_true(v > 1.19 && v < 1.21);
    assert_string_equal(fhir_node_path_str(r, "code.coding.code"), "2160-0");
    assert_string_equal(fhir_node_path_str(r, "code.coding[1].code"), "x");
    assert_null(fhir_node_path(r, "code.coding[2].code"));
    assert_null(fhir_node_path(r, "nope.deeper"));
    assert_int_equal(fhir_node_count(fhir_node_path(r, "code.coding")), 2);
    assert_string_equal(fhir_node_str(fhir_node_get(fhir_node_at(fhir_node_path(r, "code.coding"), 1), "code")), "x");
    assert_true(fhir_node_bool(fhir_node_get(r, "flag"), false));
    assert_true(fhir_node_is(fhir_node_get(r, "n"), FHIR_NULL));
    int64_t big;
    assert_true(fhir_node_int(fhir_node_get(r, "big"), &big));
    assert_true(big == 12345678901LL);
    assert_false(fhir_node_int(fhir_node_path(r, "valueQuantity.value"), &big));
    /* member order is kept */
    const char *order[] = {"resourceType", "id", "status", "code", "valueQuantity", "flag", "n", "big"};
    size_t i = 0;
    for (const fhir_node *c = fhir_node_first(r); c; c = c->next, i++)
        assert_true(fhir_node_key_is(c, order[i]));
    assert_int_equal(i, 8);
    /* NULL-safety */
    assert_null(fhir_node_get(NULL, "x"));
    assert_null(fhir_node_str(NULL));
    assert_int_equal(fhir_node_count(NULL), 0);
    fhir_arena_free(a);
}

static void test_builders_and_clone(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *p = fhir_node_new(a, FHIR_OBJECT);
    fhir_node_set_str(a, p, "resourceType", "Patient");
    fhir_node_set_str(a, p, "id", "p1");
    fhir_node *names = fhir_node_set_arr(a, p, "name");
    fhir_node *n0 = fhir_node_append(a, names, NULL, 0, fhir_node_new(a, FHIR_OBJECT));
    fhir_node_set_str(a, n0, "family", "Quote\"d");
    fhir_node_set(a, p, "active", fhir_node_new_bool(a, true));
    fhir_node_set(a, p, "n", fhir_node_new_num(a, "1.50", 4));
    char *s = fhir_json_to_string(p, FHIR_JSON_COMPACT, 0);
    assert_string_equal(s, "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"name\":[{\"family\":\"Quote\\\"d\"}],"
                           "\"active\":true,\"n\":1.50}");
    free(s);
    fhir_arena *b = fhir_arena_new(0);
    fhir_node *c = fhir_node_clone(b, p);
    fhir_arena_free(a);
    assert_string_equal(fhir_node_path_str(c, "name.family"), "Quote\"d");
    assert_int_equal(fhir_node_size(c), 8);
    fhir_arena_free(b);
}

static void test_equal_decimals(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    struct { const char *x, *y; bool strict, by_value; } cases[] = {
        {"1.0", "1.0", true, true},
        {"1.0e0", "1.0", false, true},
        {"1.0", "1.00", false, false},
        {"10", "10.0", false, false},
        {"100e-2", "1.00", false, true},
        {"-0", "0", false, true},
        {"0.5", "5e-1", false, true},
        {"0.5", "-0.5", false, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fhir_node *x = fhir_node_new_num(a, cases[i].x, strlen(cases[i].x));
        fhir_node *y = fhir_node_new_num(a, cases[i].y, strlen(cases[i].y));
        assert_int_equal(fhir_node_equal(x, y, false), cases[i].strict);
        if (fhir_node_equal(x, y, true) != cases[i].by_value)
            fail_msg("%s vs %s by value", cases[i].x, cases[i].y);
    }
    fhir_node *o1 = parse(a, "{\"a\":1,\"b\":[1,2]}");
    fhir_node *o2 = parse(a, "{\"b\":[1,2],\"a\":1}");
    fhir_node *o3 = parse(a, "{\"a\":1,\"b\":[1,2]}");
    assert_false(fhir_node_equal(o1, o2, true)); /* order matters */
    assert_true(fhir_node_equal(o1, o3, false));
    fhir_arena_free(a);
}

static void test_ref_split(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    const char *t, *id;
    bool cont;
    assert_true(fhir_ref_split(a, "Patient/123", &t, &id, &cont));
    assert_string_equal(t, "Patient");
    assert_string_equal(id, "123");
    assert_false(cont);
    assert_true(fhir_ref_split(a, "Observation/o-1/_history/4", &t, &id, NULL));
    assert_string_equal(t, "Observation");
    assert_string_equal(id, "o-1");
    assert_true(fhir_ref_split(a, "https://ehr.example.org/fhir/Patient/abc.1", &t, &id, NULL));
    assert_string_equal(t, "Patient");
    assert_string_equal(id, "abc.1");
    assert_true(fhir_ref_split(a, "urn:uuid:0b6c0b28-0d3c-4e2b-8d43-2d1c0b4f9c1a", &t, &id, NULL));
    assert_null(t);
    assert_string_equal(id, "urn:uuid:0b6c0b28-0d3c-4e2b-8d43-2d1c0b4f9c1a");
    assert_true(fhir_ref_split(a, "#med1", &t, &id, &cont));
    assert_true(cont);
    assert_string_equal(id, "med1");
    assert_false(fhir_ref_split(a, "patient/1", &t, &id, NULL));
    assert_false(fhir_ref_split(a, "", &t, &id, NULL));
    assert_false(fhir_ref_split(a, "foo/Patient/1", &t, &id, NULL));
    assert_false(fhir_ref_split(a, "Patient/", &t, &id, NULL));
    fhir_arena_free(a);
}

static void test_ref_resolve(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *b = parse(a,
        "{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":["
        "{\"fullUrl\":\"urn:uuid:11111111-1111-1111-1111-111111111111\",\"resource\":{\"resourceType\":\"Patient\",\"id\":\"p1\"}},"
        "{\"fullUrl\":\"https://ehr.example.org/fhir/Medication/m1\",\"resource\":{\"resourceType\":\"Medication\",\"id\":\"m1\"}},"
        "{\"resource\":{\"resourceType\":\"Condition\",\"id\":\"c1\"}},"
        "{\"resource\":{\"resourceType\":\"MedicationRequest\",\"id\":\"mr1\",\"contained\":[{\"resourceType\":\"Medication\",\"id\":\"cm\"}]}}]}");
    fhir_ref_index *idx = fhir_ref_index_build(a, b);
    assert_non_null(idx);
    assert_string_equal(fhir_node_resource_id(fhir_ref_resolve(idx, "urn:uuid:11111111-1111-1111-1111-111111111111")), "p1");
    assert_string_equal(fhir_node_resource_id(fhir_ref_resolve(idx, "Patient/p1")), "p1");
    assert_string_equal(fhir_node_resource_id(fhir_ref_resolve(idx, "Medication/m1")), "m1");
    assert_string_equal(fhir_node_resource_id(fhir_ref_resolve(idx, "https://ehr.example.org/fhir/Medication/m1")), "m1");
    assert_string_equal(fhir_node_resource_id(fhir_ref_resolve(idx, "Condition/c1/_history/2")), "c1");
    assert_null(fhir_ref_resolve(idx, "Condition/c2"));
    assert_null(fhir_ref_resolve(idx, "urn:uuid:22222222-1111-1111-1111-111111111111"));
    const fhir_node *mr = fhir_ref_resolve(idx, "MedicationRequest/mr1");
    assert_string_equal(fhir_node_resource_id(fhir_ref_contained(mr, "#cm")), "cm");
    assert_null(fhir_ref_contained(mr, "#zz"));
    fhir_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_cap_and_reset),
        cmocka_unit_test(test_buf_cap),
        cmocka_unit_test(test_accessors),
        cmocka_unit_test(test_builders_and_clone),
        cmocka_unit_test(test_equal_decimals),
        cmocka_unit_test(test_double_plain_decimals),
        cmocka_unit_test(test_ref_split),
        cmocka_unit_test(test_ref_resolve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
