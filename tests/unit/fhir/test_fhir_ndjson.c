/* Unit tests: streaming NDJSON reader — chunking, blank lines, CRLF, a broken line in the
 * middle (skip or stop, counted), over-long lines, stopping from the callback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "fhir_ndjson.h"

typedef struct seen {
    char ids[64][16];
    size_t lines[64];
    size_t n;
    size_t stop_after; /* 0 = never */
    size_t errors;
    int skip;
    size_t err_lines[8];
} seen;

static int on_res(void *ud, const fhir_node *res, size_t line_no, fhir_error *err)
{
    seen *s = ud;
    const char *id = fhir_node_resource_id(res);
    snprintf(s->ids[s->n], sizeof s->ids[0], "%s", id ? id : "?");
    s->lines[s->n] = line_no;
    s->n++;
    return s->stop_after && s->n >= s->stop_after;
}

static int on_err(void *ud, size_t line_no, const fhir_error *err)
{
    seen *s = ud;
    assert_non_null(strstr(err->msg, "NDJSON line"));
    if (s->errors < 8)
        s->err_lines[s->errors] = line_no;
    s->errors++;
    return s->skip ? 0 : 1;
}

static const char *INPUT =
    "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n"
    "\n"
    "{\"resourceType\":\"Patient\",\"id\":\"b\"}\r\n"
    "{\"resourceType\":\"Patient\",\"id\":\"c\",\n"   /* broken line 4 */
    "{\"resourceType\":\"Patient\",\"id\":\"d\"}\n"
    "{\"resourceType\":\"Patient\",\"id\":\"e\"}";      /* no final newline */

static void feed_in_chunks(fhir_ndjson *r, const char *s, size_t chunk, int expect_rc)
{
    fhir_error err = {0};
    size_t len = strlen(s);
    int rc = 0;
    for (size_t o = 0; o < len && rc == 0; o += chunk)
        rc = fhir_ndjson_feed(r, s + o, o + chunk > len ? len - o : chunk, &err);
    if (rc == 0)
        rc = fhir_ndjson_finish(r, &err);
    assert_int_equal(rc, expect_rc);
}

static void test_skip_broken_line(void **state)
{
    (void)state;
    for (size_t chunk = 1; chunk < 200; chunk += 7) {
        seen s = {.skip = 1};
        fhir_ndjson *r = fhir_ndjson_new(NULL, on_res, on_err, &s);
        feed_in_chunks(r, INPUT, chunk, 0);
        assert_int_equal(s.n, 4);
        assert_string_equal(s.ids[0], "a");
        assert_string_equal(s.ids[1], "b");
        assert_string_equal(s.ids[2], "d");
        assert_string_equal(s.ids[3], "e");
        assert_int_equal(s.lines[2], 5);
        assert_int_equal(s.lines[3], 6);
        assert_int_equal(s.errors, 1);
        assert_int_equal(s.err_lines[0], 4);
        const fhir_ndjson_stats *st = fhir_ndjson_stats_get(r);
        assert_int_equal(st->ok, 4);
        assert_int_equal(st->bad, 1);
        assert_int_equal(st->lines, 5);
        assert_int_equal(st->bytes, strlen(INPUT));
        fhir_ndjson_free(r);
    }
}

static void test_stop_on_broken_line(void **state)
{
    (void)state;
    seen s = {.skip = 0};
    fhir_ndjson *r = fhir_ndjson_new(NULL, on_res, on_err, &s);
    fhir_error err = {0};
    assert_int_equal(fhir_ndjson_feed(r, INPUT, strlen(INPUT), &err), -1);
    assert_non_null(strstr(err.msg, "NDJSON line 4"));
    assert_int_equal(s.n, 2);
    fhir_ndjson_free(r);
    /* without an error callback the stream stops too */
    seen s2 = {0};
    r = fhir_ndjson_new(NULL, on_res, NULL, &s2);
    assert_int_equal(fhir_ndjson_feed(r, INPUT, strlen(INPUT), &err), -1);
    assert_int_equal(s2.n, 2);
    fhir_ndjson_free(r);
}

static void test_callback_stop(void **state)
{
    (void)state;
    seen s = {.skip = 1, .stop_after = 1};
    fhir_ndjson *r = fhir_ndjson_new(NULL, on_res, on_err, &s);
    fhir_error err = {0};
    assert_int_equal(fhir_ndjson_feed(r, INPUT, strlen(INPUT), &err), -1);
    assert_string_equal(err.msg, "");
    assert_int_equal(s.n, 1);
    fhir_ndjson_free(r);
}

/* A callback that stops with a cause: the feed, the finish and the file reader return it
 * (the file reader with the path in front), not an empty error. */
static int stop_with_cause(void *ud, const fhir_node *res, size_t line_no, fhir_error *err)
{
    size_t *calls = ud;
    (*calls)++;
    const char *id = fhir_node_resource_id(res);
    if (id && !strcmp(id, "d"))
        return fhir_error_set(err, "line %zu: no room for %s", line_no, id), 1;
    return 0;
}

static void test_callback_cause(void **state)
{
    (void)state;
    size_t calls = 0;
    fhir_ndjson *r = fhir_ndjson_new(NULL, stop_with_cause, on_err, &calls);
    fhir_error err = {0};
    const char *in = "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n"
                     "{\"resourceType\":\"Patient\",\"id\":\"d\"}\n"
                     "{\"resourceType\":\"Patient\",\"id\":\"e\"}\n";
    assert_int_equal(fhir_ndjson_feed(r, in, strlen(in), &err), -1);
    assert_string_equal(err.msg, "line 2: no room for d");
    assert_int_equal(calls, 2);
    fhir_ndjson_free(r);

    /* the last line, without a newline, stops in finish */
    calls = 0;
    r = fhir_ndjson_new(NULL, stop_with_cause, on_err, &calls);
    fhir_error_clear(&err);
    const char *tail = "{\"resourceType\":\"Patient\",\"id\":\"d\"}";
    assert_int_equal(fhir_ndjson_feed(r, tail, strlen(tail), &err), 0);
    assert_int_equal(fhir_ndjson_finish(r, &err), -1);
    assert_string_equal(err.msg, "line 1: no room for d");
    fhir_ndjson_free(r);

    char path[] = "/tmp/cartgate-ndjson-cause-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, in, strlen(in)), (ssize_t)strlen(in));
    close(fd);
    calls = 0;
    r = fhir_ndjson_new(NULL, stop_with_cause, on_err, &calls);
    fhir_error_clear(&err);
    assert_int_equal(fhir_ndjson_read_path(r, path, &err), -1);
    char want[256];
    snprintf(want, sizeof want, "%s: line 2: no room for d", path);
    assert_string_equal(err.msg, want);
    fhir_ndjson_free(r);
    unlink(path);
}

static void test_long_line_and_non_object(void **state)
{
    (void)state;
    fhir_json_limits lim = {.max_bytes = 64};
    char in[512];
    snprintf(in, sizeof in,
             "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n"
             "{\"resourceType\":\"Patient\",\"id\":\"0123456789012345678901234567890123456789\"}\n"
             "[1,2]\n"
             "{\"resourceType\":\"Patient\",\"id\":\"z\"}\n");
    for (size_t chunk = 3; chunk < 300; chunk += 50) {
        seen s = {.skip = 1};
        fhir_ndjson *r = fhir_ndjson_new(&lim, on_res, on_err, &s);
        feed_in_chunks(r, in, chunk, 0);
        assert_int_equal(s.n, 2);
        assert_string_equal(s.ids[1], "z");
        assert_int_equal(s.lines[1], 4);
        assert_int_equal(s.errors, 2);
        assert_int_equal(s.err_lines[0], 2);
        assert_int_equal(s.err_lines[1], 3);
        fhir_ndjson_free(r);
    }
}

static void test_read_file(void **state)
{
    (void)state;
    char path[] = "/tmp/cartgate-ndjson-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    /* ~3 MB: many chunk boundaries */
    for (int i = 0; i < 30000; i++)
        fprintf(f, "{\"resourceType\":\"Observation\",\"id\":\"o%d\",\"valueQuantity\":{\"value\":%d.5}}\n", i, i);
    fclose(f);
    size_t count = 0;
    fhir_ndjson *r = fhir_ndjson_new(NULL, NULL, NULL, &count);
    fhir_error err = {0};
    assert_int_equal(fhir_ndjson_read_path(r, path, &err), 0);
    assert_int_equal(fhir_ndjson_stats_get(r)->ok, 30000);
    fhir_ndjson_free(r);
    unlink(path);
    r = fhir_ndjson_new(NULL, NULL, NULL, NULL);
    assert_int_equal(fhir_ndjson_read_path(r, "/nonexistent.ndjson", &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent.ndjson"));
    fhir_ndjson_free(r);
}

/* Lines fed in chunks of any size give the trees of the lines parsed alone (a BOM, CR and the
 * white space around an object ignored). */
typedef struct trees_seen {
    fhir_arena *a;
    const fhir_node *want[3];
    size_t n;
} trees_seen;

static int on_seen(void *ud, const fhir_node *res, size_t line_no, fhir_error *err)
{
    (void)line_no;
    (void)err;
    trees_seen *k = ud;
    assert_true(k->n < 3);
    assert_true(fhir_node_equal(res, k->want[k->n], false));
    k->n++;
    return 0;
}

static void test_chunks_same_trees(void **state)
{
    (void)state;
    const char *in = "\xEF\xBB\xBF{\"resourceType\":\"Patient\",\"id\":\"a\"}\n"
                     "  { \"resourceType\" : \"Patient\", \"id\":\"b\", \"name\":[{\"text\":\"Ren\\u00e9e\"}]} \t\r\n"
                     "\n"
                     "{\"resourceType\":\"Observation\",\"id\":\"c\",\"meta\":{\"versionId\":\"1\"},\"valueQuantity\":{\"value\":1.50}}";
    const char *lines[] = {
        "{\"resourceType\":\"Patient\",\"id\":\"a\"}",
        "{ \"resourceType\" : \"Patient\", \"id\":\"b\", \"name\":[{\"text\":\"Ren\\u00e9e\"}]}",
        "{\"resourceType\":\"Observation\",\"id\":\"c\",\"meta\":{\"versionId\":\"1\"},\"valueQuantity\":{\"value\":1.50}}",
    };
    trees_seen k = {.a = fhir_arena_new(0)};
    fhir_error e = {0};
    for (size_t i = 0; i < 3; i++)
        assert_non_null(k.want[i] = fhir_json_parse(k.a, lines[i], strlen(lines[i]), NULL, &e));
    for (size_t chunk = 1; chunk < 200; chunk += 5) {
        k.n = 0;
        fhir_ndjson *r = fhir_ndjson_new(NULL, on_seen, NULL, &k);
        feed_in_chunks(r, in, chunk, 0);
        assert_int_equal(k.n, 3);
        fhir_ndjson_free(r);
    }
    fhir_arena_free(k.a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_skip_broken_line),
        cmocka_unit_test(test_stop_on_broken_line),
        cmocka_unit_test(test_callback_stop),
        cmocka_unit_test(test_callback_cause),
        cmocka_unit_test(test_long_line_and_non_object),
        cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_chunks_same_trees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
