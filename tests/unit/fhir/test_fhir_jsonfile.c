/* Unit tests: fhir_jsonfile — the line rule, comments, every getter's message, the allowed-keys
 * check with "did you mean", the capped error list, reading files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "fhir_jsonfile.h"

static fhir_arena *arena;

static int setup(void **state)
{
    (void)state;
    arena = fhir_arena_new(0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fhir_arena_free(arena);
    return 0;
}

static fhir_jsonfile *parse(const char *text, const fhir_jsonfile_opts *o)
{
    return fhir_jsonfile_parse(arena, "f.json", text, strlen(text), o);
}

/* The only error of f is want. */
static void only_error(const fhir_jsonfile *f, const char *want)
{
    if (fhir_jsonfile_error_count(f) != 1)
        fail_msg("%zu errors, first '%s'; want '%s'", fhir_jsonfile_error_count(f),
                 fhir_jsonfile_error_text(f, 0) ? fhir_jsonfile_error_text(f, 0) : "", want);
    assert_string_equal(fhir_jsonfile_error_text(f, 0), want);
}

static const char *doc = "{\n"                                          /* 1 */
                         "  \"name\": \"x\", \"empty\": \"\",\n"        /* 2 */
                         "  \"n\": 2.5, \"i\": 7, \"big\": 1e400,\n"    /* 3 */
                         "  \"flag\": true, \"nul\": null,\n"           /* 4 */
                         "  \"list\":\n"                                /* 5 */
                         "    [1,\n"                                    /* 6 */
                         "     {\"k\": 1}],\n"                          /* 7 */
                         "  \"obj\": {\"kind\": \"blue\"},\n"           /* 8 */
                         "  \"none\": []\n"                             /* 9 */
                         "}\n";

/* The rule: a member's line is its key's; an element's where it starts; a missing key names
 * the object that should hold it. */
static void test_line_rule(void **state)
{
    (void)state;
    fhir_jsonfile *f = parse(doc, NULL);
    const fhir_node *r = fhir_jsonfile_root(f);
    assert_non_null(r);
    assert_int_equal(fhir_jsonfile_error_count(f), 0);
    const fhir_node *list;
    assert_int_equal(fhir_jsonfile_array(f, r, "list", "doc", 0, &list), 1);
    assert_int_equal(list->line, 5); /* the key's line, the bracket is on 6 */
    assert_int_equal(fhir_node_at(list, 0)->line, 6);
    const fhir_node *el = fhir_node_at(list, 1);
    assert_int_equal(el->line, 7);
    const char *s;
    /* missing in the root (line 1), in a member object (its key's line 8), in an element (7) */
    assert_int_equal(fhir_jsonfile_str(f, r, "absent", "doc", FHIR_JSONFILE_REQUIRED, &s), -1);
    assert_int_equal(fhir_jsonfile_str(f, fhir_node_get(r, "obj"), "id", "obj", FHIR_JSONFILE_REQUIRED, &s), -1);
    assert_int_equal(fhir_jsonfile_str(f, el, "id", "item", FHIR_JSONFILE_REQUIRED, &s), -1);
    assert_int_equal(fhir_jsonfile_error_count(f), 3);
    assert_string_equal(fhir_jsonfile_error_text(f, 0), "f.json:1: doc: missing \"absent\"");
    assert_string_equal(fhir_jsonfile_error_text(f, 1), "f.json:8: obj: missing \"id\"");
    assert_string_equal(fhir_jsonfile_error_text(f, 2), "f.json:7: item: missing \"id\"");
    /* optional and absent: 0, *out untouched */
    s = "kept";
    assert_int_equal(fhir_jsonfile_str(f, r, "absent", "doc", 0, &s), 0);
    assert_string_equal(s, "kept");
    fhir_jsonfile_free(f);
}

static void test_getters(void **state)
{
    (void)state;
    fhir_jsonfile *f = parse(doc, NULL);
    const fhir_node *r = fhir_jsonfile_root(f);
    const char *s = NULL;
    double d = 0;
    int64_t i = 0;
    bool b = false;
    int e = -1;
    const fhir_node *n = NULL;
    assert_int_equal(fhir_jsonfile_str(f, r, "name", "doc", FHIR_JSONFILE_REQUIRED, &s), 1);
    assert_string_equal(s, "x");
    assert_int_equal(fhir_jsonfile_str(f, r, "empty", "doc", 0, &s), 1);
    assert_string_equal(s, "");
    assert_int_equal(fhir_jsonfile_num(f, r, "n", "doc", 0, 0, 3, &d), 1);
    assert_true(d == 2.5);
    assert_int_equal(fhir_jsonfile_int(f, r, "i", "doc", 0, 0, 10, &i), 1);
    assert_int_equal(i, 7);
    assert_int_equal(fhir_jsonfile_bool(f, r, "flag", "doc", 0, &b), 1);
    assert_true(b);
    static const char *const colours[] = {"red", "blue", NULL};
    assert_int_equal(fhir_jsonfile_enum(f, fhir_node_get(r, "obj"), "kind", "obj", 0, colours, &e), 1);
    assert_int_equal(e, 1);
    assert_int_equal(fhir_jsonfile_object(f, r, "obj", "doc", 0, &n), 1);
    assert_int_equal(fhir_jsonfile_array(f, r, "none", "doc", 0, &n), 1);
    assert_int_equal(fhir_jsonfile_error_count(f), 0);
    fhir_jsonfile_free(f);

    /* each failure: its message, at the member's line */
    struct {
        int rc;
        const char *want;
    } cases[8];
    f = parse(doc, NULL);
    r = fhir_jsonfile_root(f);
    cases[0].rc = fhir_jsonfile_str(f, r, "empty", "doc", FHIR_JSONFILE_NONEMPTY, &s);
    cases[0].want = "f.json:2: doc: \"empty\" must not be empty";
    cases[1].rc = fhir_jsonfile_str(f, r, "n", "doc", 0, &s);
    cases[1].want = "f.json:3: doc: \"n\" must be a string, not a number";
    cases[2].rc = fhir_jsonfile_num(f, r, "n", "doc", 0, -1, 1, &d);
    cases[2].want = "f.json:3: doc: \"n\" = 2.5 is outside [-1, 1]";
    cases[3].rc = fhir_jsonfile_int(f, r, "n", "doc", 0, 0, 10, &i);
    cases[3].want = "f.json:3: doc: \"n\" must be an integer, not 2.5";
    cases[4].rc = fhir_jsonfile_int(f, r, "i", "doc", 0, 8, 10, &i);
    cases[4].want = "f.json:3: doc: \"i\" = 7 is outside [8, 10]";
    cases[5].rc = fhir_jsonfile_bool(f, r, "nul", "doc", 0, &b);
    cases[5].want = "f.json:4: doc: \"nul\" must be true or false, not null";
    static const char *const two[] = {"red", "green", NULL};
    cases[6].rc = fhir_jsonfile_enum(f, fhir_node_get(r, "obj"), "kind", "obj", 0, two, &e);
    cases[6].want = "f.json:8: obj: kind \"blue\" is not one of red, green";
    cases[7].rc = fhir_jsonfile_array(f, r, "none", "doc", FHIR_JSONFILE_NONEMPTY, &n);
    cases[7].want = "f.json:9: doc: \"none\" must not be empty";
    for (size_t k = 0; k < 8; k++) {
        assert_int_equal(cases[k].rc, -1);
        assert_string_equal(fhir_jsonfile_error_text(f, k), cases[k].want);
    }
    assert_int_equal(fhir_jsonfile_num(f, r, "big", "doc", 0, -1e300, 1e300, &d), -1);
    assert_string_equal(fhir_jsonfile_error_text(f, 8), "f.json:3: doc: \"big\" = 1e400 is outside [-1e+300, 1e+300]");
    assert_int_equal(fhir_jsonfile_object(f, r, "list", "doc", 0, &n), -1);
    assert_string_equal(fhir_jsonfile_error_text(f, 9), "f.json:5: doc: \"list\" must be an object, not an array");
    assert_int_equal(fhir_jsonfile_want(f, fhir_node_at(fhir_node_get(r, "list"), 0), FHIR_OBJECT, "an item"), -1);
    assert_string_equal(fhir_jsonfile_error_text(f, 10), "f.json:6: an item must be an object, not a number");
    assert_int_equal(fhir_jsonfile_want(f, r, FHIR_OBJECT, "the file"), 0);
    fhir_error err;
    assert_int_equal(fhir_jsonfile_result(f, &err), -1);
    assert_string_equal(err.msg, "f.json:2: doc: \"empty\" must not be empty (and 10 more)");
    fhir_jsonfile_free(f);
}

static void test_keys_did_you_mean(void **state)
{
    (void)state;
    fhir_jsonfile_opts o = {.key_word = "field"};
    fhir_jsonfile *f = parse("{\"nmae\": 1,\n \"colour\": 2, \"id\": 3}", &o);
    static const char *const allowed[] = {"id", "name", "color", "zip", NULL};
    assert_int_equal(fhir_jsonfile_keys(f, fhir_jsonfile_root(f), "a center", allowed), -1);
    assert_int_equal(fhir_jsonfile_error_count(f), 2);
    assert_string_equal(fhir_jsonfile_error_text(f, 0),
                        "f.json:1: unknown field \"nmae\" in a center (did you mean \"name\"?)");
    assert_string_equal(fhir_jsonfile_error_text(f, 1),
                        "f.json:2: unknown field \"colour\" in a center (did you mean \"color\"?)");
    fhir_jsonfile_free(f);
    f = parse("{\"whatever\": 1}", NULL);
    assert_int_equal(fhir_jsonfile_keys(f, fhir_jsonfile_root(f), "x", allowed), -1);
    only_error(f, "f.json:1: unknown key \"whatever\" in x");
    fhir_jsonfile_free(f);
    f = parse("{\"id\": 1}", NULL);
    assert_int_equal(fhir_jsonfile_keys(f, fhir_jsonfile_root(f), "x", allowed), 0);
    assert_int_equal(fhir_jsonfile_result(f, NULL), 0);
    fhir_jsonfile_free(f);
}

static void test_syntax_and_file_errors(void **state)
{
    (void)state;
    fhir_jsonfile *f = parse("{\n\"a\": 1,\n\"b\": }", NULL);
    assert_null(fhir_jsonfile_root(f));
    assert_non_null(strstr(fhir_jsonfile_error_text(f, 0), "f.json:3: malformed JSON: "));
    fhir_jsonfile_free(f);
    /* comments only when asked */
    const char *c = "// c\n{\"a\": /* b */ 1}\n";
    f = parse(c, NULL);
    assert_non_null(strstr(fhir_jsonfile_error_text(f, 0), "f.json:1: malformed JSON"));
    fhir_jsonfile_free(f);
    fhir_jsonfile_opts o = {.comments = true};
    f = parse(c, &o);
    assert_non_null(fhir_jsonfile_root(f));
    assert_int_equal(fhir_node_get(fhir_jsonfile_root(f), "a")->line, 2);
    fhir_jsonfile_free(f);
    f = parse("{\"a\": 1,\n\"a\": 2}", NULL);
    only_error(f, "f.json:2: duplicate key \"a\" (first on line 1)");
    fhir_jsonfile_free(f);
    f = parse(" \n\t", NULL);
    only_error(f, "f.json:1: empty file");
    fhir_jsonfile_free(f);
    o = (fhir_jsonfile_opts){.max_bytes = 4};
    f = parse("{\"a\": 1}", &o);
    only_error(f, "f.json: file larger than 4 bytes");
    fhir_jsonfile_free(f);
    /* nesting deeper than the cap */
    char deep[2 * FHIR_JSONFILE_MAX_DEPTH + 8];
    memset(deep, '[', FHIR_JSONFILE_MAX_DEPTH + 1);
    memset(deep + FHIR_JSONFILE_MAX_DEPTH + 1, ']', FHIR_JSONFILE_MAX_DEPTH + 1);
    deep[2 * FHIR_JSONFILE_MAX_DEPTH + 2] = '\0';
    f = parse(deep, NULL);
    assert_non_null(strstr(fhir_jsonfile_error_text(f, 0), "nesting deeper than max_depth"));
    fhir_jsonfile_free(f);

    f = fhir_jsonfile_read(arena, "/nonexistent/x.json", NULL);
    assert_null(fhir_jsonfile_root(f));
    assert_string_equal(fhir_jsonfile_error_text(f, 0), "/nonexistent/x.json: cannot open: No such file or directory");
    fhir_jsonfile_free(f);
    char path[] = "/tmp/test_fhir_jsonfile_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\n\"a\": [1, 2]}\n", 15), 15);
    close(fd);
    f = fhir_jsonfile_read(arena, path, NULL);
    assert_int_equal(fhir_node_get(fhir_jsonfile_root(f), "a")->line, 2);
    assert_string_equal(fhir_jsonfile_name(f), path);
    fhir_jsonfile_free(f);
    o = (fhir_jsonfile_opts){.max_bytes = 10};
    f = fhir_jsonfile_read(arena, path, &o);
    assert_null(fhir_jsonfile_root(f));
    char want[128];
    snprintf(want, sizeof want, "%s: file larger than 10 bytes", path);
    only_error(f, want);
    fhir_jsonfile_free(f);
    unlink(path);
}

/* Past FHIR_JSONFILE_MAX_ERRORS errors are counted, not kept, and said so. */
static void test_error_cap(void **state)
{
    (void)state;
    fhir_jsonfile *f = parse("{}", NULL);
    for (size_t i = 0; i < FHIR_JSONFILE_MAX_ERRORS + 5; i++)
        assert_int_equal(fhir_jsonfile_error_line(f, i + 1, "error %zu", i), -1);
    assert_int_equal(fhir_jsonfile_error_count(f), FHIR_JSONFILE_MAX_ERRORS + 5);
    assert_null(fhir_jsonfile_error_text(f, FHIR_JSONFILE_MAX_ERRORS));
    fhir_buf b;
    fhir_buf_init(&b, 1u << 20);
    fhir_jsonfile_write_errors(f, &b);
    const char *t = fhir_buf_cstr(&b);
    assert_non_null(strstr(t, "f.json:1: error 0\nf.json:2: error 1\n"));
    assert_non_null(strstr(t, "f.json:200: error 199\nf.json: ... 5 more errors not shown\n"));
    assert_null(strstr(t, "error 200"));
    fhir_buf_free(&b);
    assert_int_equal(fhir_jsonfile_error(f, NULL, "no line"), -1);
    fhir_jsonfile_free(f);
    f = parse("{}", NULL);
    fhir_jsonfile_error(f, NULL, "about the file");
    only_error(f, "f.json: about the file");
    fhir_jsonfile_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_rule),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_keys_did_you_mean),
        cmocka_unit_test(test_syntax_and_file_errors),
        cmocka_unit_test(test_error_cap),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
