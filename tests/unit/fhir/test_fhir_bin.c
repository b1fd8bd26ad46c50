/* Unit tests: the binary form of a tree (fhir_bin) — the same tree back (kinds, member order
 * and names, texts, numbers as written), the same bytes for the same tree whatever the JSON's
 * whitespace, member names outside the table, every truncation and corruption refused with a
 * cause (never a crash), the version checked, and JSON text still read by
 * fhir_bin_or_json_read. The shared Synthea/mCODE bundles round-trip when present. */
#define _GNU_SOURCE /* memmem */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fhir_arena.h"
#include "fhir_bin.h"
#include "fhir_buf.h"
#include "fhir_json.h"
#include "fhir_names.h"
#include "fhir_node.h"

static fhir_node *parse(fhir_arena *a, const char *s)
{
    fhir_error err = {0};
    fhir_node *n = fhir_json_parse(a, s, strlen(s), NULL, &err);
    if (!n)
        fail_msg("parse failed: %s", err.msg);
    return n;
}

/* n written, read back: an equal tree whose JSON is the same text. */
static void round_trip(const fhir_node *n, fhir_buf *bin)
{
    fhir_buf_reset(bin);
    assert_int_equal(fhir_bin_write(bin, n), 0);
    assert_true(fhir_bin_is(bin->data, bin->len));
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *back = fhir_bin_read(a, bin->data, bin->len, &err);
    if (!back)
        fail_msg("read back failed: %s", err.msg);
    assert_true(fhir_node_equal(n, back, false));
    char *j1 = fhir_json_to_string(n, FHIR_JSON_COMPACT, 0), *j2 = fhir_json_to_string(back, FHIR_JSON_COMPACT, 0);
    assert_string_equal(j1, j2);
    free(j1);
    free(j2);
    fhir_arena_free(a);
}

static const char SAMPLE[] =
    "{\"resourceType\":\"Observation\",\"id\":\"o1\",\"meta\":{\"versionId\":\"3\"},"
    "\"status\":\"final\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"2160-0\","
    "\"display\":\"Creatinine \\\"serum\\\" \\u00e9\\u4e2d\"}]},\"valueQuantity\":{\"value\":1.20,"
    "\"unit\":\"mg/dL\"},\"x-custom-name\":[true,false,null,-0.5e-3,12345678901234567890,\"\"],"
    "\"empty\":{},\"none\":[],\"nested\":[[[{\"a\":[{}]}]]],\"" "\xc3\xa9l\xc3\xa9ment" "\":\"v\"}";

static void test_round_trip_sample(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_buf bin;
    fhir_buf_init(&bin, 1u << 20);
    fhir_node *n = parse(a, SAMPLE);
    round_trip(n, &bin);
    /* numbers keep their text; strings their bytes; names in and outside the table */
    fhir_arena *b = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *back = fhir_bin_read(b, bin.data, bin.len, &err);
    assert_non_null(back);
    assert_string_equal(fhir_node_num_text(fhir_node_path(back, "valueQuantity.value")), "1.20");
    assert_string_equal(fhir_node_num_text(fhir_node_at(fhir_node_get(back, "x-custom-name"), 4)),
                        "12345678901234567890");
    assert_string_equal(fhir_node_path_str(back, "code.coding.display"),
                        "Creatinine \"serum\" \xc3\xa9\xe4\xb8\xad");
    assert_string_equal(fhir_node_path_str(back, "\xc3\xa9l\xc3\xa9ment"), "v");
    /* a common code system in one byte: its text and length as written */
    const fhir_node *sys = fhir_node_path(back, "code.coding.system");
    assert_string_equal(fhir_node_str(sys), "http://loinc.org");
    assert_int_equal(sys->len, 16);
    assert_null(memmem(bin.data, bin.len, "loinc", 5));
    assert_int_equal(fhir_node_count(fhir_node_get(back, "x-custom-name")), 6);
    assert_int_equal(fhir_node_count(fhir_node_get(back, "empty")), 0);
    const fhir_node *last = fhir_node_get(back, "nested");
    assert_ptr_equal(last->last, last->child); /* one child: first and last the same */
    /* a table name is one byte: the common names make it smaller than the JSON */
    assert_true(bin.len < strlen(SAMPLE));
    fhir_arena_free(b);
    fhir_buf_free(&bin);
    fhir_arena_free(a);
}

/* Table names are written by their index whether the writer finds them by their bytes (a tree
 * of fhir_json_parse: arena copies) or by the address of the shared copy (a reader's tree, a
 * tree read back): the same bytes all three ways. */
static void test_names_by_address(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_buf x, y, z;
    fhir_buf_init(&x, 1u << 20);
    fhir_buf_init(&y, 1u << 20);
    fhir_buf_init(&z, 1u << 20);
    fhir_json_reader *r = fhir_json_reader_new(NULL);
    fhir_error err = {0};
    fhir_node *shared = fhir_json_reader_parse(r, a, SAMPLE, strlen(SAMPLE), &err);
    assert_non_null(shared);
    assert_int_equal(fhir_bin_write(&x, parse(a, SAMPLE)), 0);
    assert_int_equal(fhir_bin_write(&y, shared), 0);
    assert_int_equal(x.len, y.len);
    assert_memory_equal(x.data, y.data, x.len);
    fhir_node *back = fhir_bin_read(a, x.data, x.len, &err);
    assert_non_null(back);
    assert_true(fhir_names_own(back->child->key) >= 0); /* "resourceType": the table's copy */
    assert_int_equal(fhir_bin_write(&z, back), 0);
    assert_int_equal(x.len, z.len);
    assert_memory_equal(x.data, z.data, x.len);
    fhir_json_reader_free(r);
    fhir_buf_free(&x);
    fhir_buf_free(&y);
    fhir_buf_free(&z);
    fhir_arena_free(a);
}

static void test_same_tree_same_bytes(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_buf x, y;
    fhir_buf_init(&x, 1u << 20);
    fhir_buf_init(&y, 1u << 20);
    assert_int_equal(fhir_bin_write(&x, parse(a, "{\"resourceType\":\"Patient\",\"id\":\"p\",\"active\":true}")), 0);
    assert_int_equal(fhir_bin_write(&y, parse(a, " {\n  \"resourceType\" : \"Patient\",\n  \"id\": \"p\", \"active\" :true }\n")), 0);
    assert_int_equal(x.len, y.len);
    assert_memory_equal(x.data, y.data, x.len);
    fhir_buf_reset(&y);
    assert_int_equal(fhir_bin_write(&y, parse(a, "{\"resourceType\":\"Patient\",\"id\":\"p\",\"active\":false}")), 0);
    assert_true(x.len != y.len || memcmp(x.data, y.data, x.len));
    fhir_buf_free(&x);
    fhir_buf_free(&y);
    fhir_arena_free(a);
}

static void test_refuses_damage(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_buf bin;
    fhir_buf_init(&bin, 1u << 20);
    assert_int_equal(fhir_bin_write(&bin, parse(a, SAMPLE)), 0);
    fhir_arena *r = fhir_arena_new(0);
    fhir_error err = {0};
    /* every truncation is refused with a cause */
    for (size_t n = 0; n < bin.len; n++) {
        fhir_arena_reset(r);
        err.msg[0] = '\0';
        assert_null(fhir_bin_read(r, bin.data, n, &err));
        assert_true(err.msg[0] != '\0');
    }
    /* a byte more, another version, JSON text, an unknown tag */
    char *copy = malloc(bin.len + 1);
    memcpy(copy, bin.data, bin.len);
    copy[bin.len] = 0;
    assert_null(fhir_bin_read(r, copy, bin.len + 1, &err));
    assert_non_null(strstr(err.msg, "after"));
    copy[1] = FHIR_BIN_VERSION + 1;
    assert_null(fhir_bin_read(r, copy, bin.len, &err));
    assert_non_null(strstr(err.msg, "version"));
    assert_false(fhir_bin_is("{\"a\":1}", 7));
    assert_null(fhir_bin_read(r, "{\"a\":1}", 7, &err));
    static const char tag[] = {(char)FHIR_BIN_MAGIC, FHIR_BIN_VERSION, 9};
    assert_null(fhir_bin_read(r, tag, sizeof tag, &err));
    assert_non_null(strstr(err.msg, "tag"));
    /* every single byte flipped: refused or read, never out of bounds (ASan watches) */
    for (size_t i = 2; i < bin.len; i++) {
        memcpy(copy, bin.data, bin.len);
        copy[i] = (char)~copy[i];
        fhir_arena_reset(r);
        (void)fhir_bin_read(r, copy, bin.len, &err);
    }
    /* a value index past the table */
    static const char badvalue[] = {(char)FHIR_BIN_MAGIC, FHIR_BIN_VERSION, 7, (char)0xFE};
    assert_null(fhir_bin_read(r, badvalue, sizeof badvalue, &err));
    assert_non_null(strstr(err.msg, "value"));
    /* a name index past the table */
    static const char badname[] = {(char)FHIR_BIN_MAGIC, FHIR_BIN_VERSION, 5, 1, (char)0xFE, 0};
    assert_null(fhir_bin_read(r, badname, sizeof badname, &err));
    assert_non_null(strstr(err.msg, "name"));
    /* a child count larger than the bytes left */
    static const char count[] = {(char)FHIR_BIN_MAGIC, FHIR_BIN_VERSION, 6, (char)0xFF, (char)0xFF, 0x7F};
    assert_null(fhir_bin_read(r, count, sizeof count, &err));
    free(copy);
    fhir_arena_free(r);
    fhir_buf_free(&bin);
    fhir_arena_free(a);
}

static void test_depth_and_cap(void **state)
{
    (void)state;
    /* arrays nested deeper than the reader's limit are refused, one within it is read */
    fhir_buf bin;
    fhir_buf_init(&bin, 1u << 20);
    for (int deep = 0; deep < 2; deep++) {
        size_t levels = deep ? FHIR_BIN_MAX_DEPTH + 1 : FHIR_BIN_MAX_DEPTH;
        fhir_buf_reset(&bin);
        fhir_buf_putc(&bin, (char)FHIR_BIN_MAGIC);
        fhir_buf_putc(&bin, FHIR_BIN_VERSION);
        for (size_t i = 0; i < levels; i++) {
            fhir_buf_putc(&bin, 6);
            fhir_buf_putc(&bin, 1);
        }
        fhir_buf_putc(&bin, 0);
        fhir_arena *r = fhir_arena_new(0);
        fhir_error err = {0};
        fhir_node *n = fhir_bin_read(r, bin.data, bin.len, &err);
        if (deep) {
            assert_null(n);
            assert_non_null(strstr(err.msg, "deep"));
        } else {
            assert_non_null(n);
        }
        fhir_arena_free(r);
    }
    /* the writer stops at its buffer's cap; the reader at its arena's */
    fhir_arena *a = fhir_arena_new(0);
    fhir_buf small;
    fhir_buf_init(&small, 40);
    assert_int_equal(fhir_bin_write(&small, parse(a, SAMPLE)), -1);
    assert_true(small.overflow);
    fhir_buf_reset(&bin);
    assert_int_equal(fhir_bin_write(&bin, parse(a, SAMPLE)), 0);
    fhir_arena *tiny = fhir_arena_new(64);
    fhir_error err = {0};
    assert_null(fhir_bin_read(tiny, bin.data, bin.len, &err));
    assert_non_null(strstr(err.msg, "cap"));
    fhir_arena_free(tiny);
    fhir_buf_free(&small);
    fhir_buf_free(&bin);
    fhir_arena_free(a);
}

static void test_json_or_bin(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *j = fhir_bin_or_json_read(NULL, a, SAMPLE, strlen(SAMPLE), &err);
    assert_non_null(j);
    fhir_json_reader *rd = fhir_json_reader_new(NULL);
    assert_non_null(fhir_bin_or_json_read(rd, a, SAMPLE, strlen(SAMPLE), &err));
    fhir_buf bin;
    fhir_buf_init(&bin, 1u << 20);
    assert_int_equal(fhir_bin_write(&bin, j), 0);
    fhir_node *b = fhir_bin_or_json_read(rd, a, bin.data, bin.len, &err);
    assert_non_null(b);
    assert_true(fhir_node_equal(j, b, false));
    assert_null(fhir_bin_or_json_read(NULL, a, "{\"a\":", 5, &err)); /* JSON errors as before */
    fhir_json_reader_free(rd);
    fhir_buf_free(&bin);
    fhir_arena_free(a);
}

/* Every Bundle of the shared Synthea and mCODE folders, when present: each resource as the
 * daemon caches it round-trips. */
static void test_shared_bundles(void **state)
{
    (void)state;
    const char *base = getenv("CARTGATE_SHARED_DATA");
    static const char *const dirs[] = {"synthea-r4-patient-bundles", "mcode-oncology", "fhir-r4-examples"};
    size_t files = 0, resources = 0;
    fhir_buf bin;
    fhir_buf_init(&bin, 64u << 20);
    for (size_t d = 0; base && d < sizeof dirs / sizeof dirs[0]; d++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", base, dirs[d]);
        DIR *dir = opendir(path);
        if (!dir)
            continue;
        struct dirent *e;
        while ((e = readdir(dir)) && files < 60) {
            size_t nl = strlen(e->d_name);
            if (nl < 6 || strcmp(e->d_name + nl - 5, ".json"))
                continue;
            char file[8192];
            snprintf(file, sizeof file, "%s/%s", path, e->d_name);
            fhir_arena *a = fhir_arena_new(0);
            fhir_error err = {0};
            fhir_node *root = fhir_json_parse_file(a, file, NULL, &err);
            if (root) {
                files++;
                const fhir_node *entries = fhir_node_get(root, "entry");
                if (entries) {
                    for (const fhir_node *en = fhir_node_first(entries); en; en = en->next, resources++)
                        round_trip(fhir_node_get(en, "resource") ? fhir_node_get(en, "resource") : en, &bin);
                } else {
                    round_trip(root, &bin);
                    resources++;
                }
            }
            fhir_arena_free(a);
        }
        closedir(dir);
    }
    fhir_buf_free(&bin);
    if (!files)
        skip();
    print_message("round-tripped %zu resources of %zu files\n", resources, files);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_sample), cmocka_unit_test(test_same_tree_same_bytes),
        cmocka_unit_test(test_refuses_damage),    cmocka_unit_test(test_depth_and_cap),
        cmocka_unit_test(test_json_or_bin),       cmocka_unit_test(test_shared_bundles),
        cmocka_unit_test(test_names_by_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
