/* Unit tests: JSON reader limits and bad input, writer, round trips, streaming parse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fhir_json.h"
#include "fhir_names.h"

/* Parses s expecting failure; checks that the message contains want. */
static void expect_error(const char *s, size_t len, const fhir_json_limits *lim, const char *want)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *n = fhir_json_parse(a, s, len, lim, &err);
    if (n)
        fail_msg("expected an error containing '%s'", want);
    if (!strstr(err.msg, want))
        fail_msg("error '%s' lacks '%s'", err.msg, want);
    fhir_arena_free(a);
}

static void test_bad_input(void **state)
{
    (void)state;
    expect_error("", 0, NULL, "empty input");
    expect_error("   \n ", 5, NULL, "premature EOF");
    expect_error("{\"a\":[1,2", 9, NULL, "premature EOF");
    expect_error("{\"a\":\"\xff\xfe\"}", 10, NULL, "UTF8");
    expect_error("{\"a\":1,\"b\":2,\"a\":3}", 19, NULL, "duplicate key \"a\"");
    expect_error("{\"a\":1} {\"b\":2}", 15, NULL, "trailing garbage");
    expect_error("{\"a\":1}\0", 8, NULL, "line 1, byte");
    expect_error("{\"a\":\"x\0y\"}", 11, NULL, "invalid");
    expect_error("{\"a\":\"x\\u0000y\"}", 16, NULL, "NUL");
    expect_error("{'a':1}", 7, NULL, "invalid");
    expect_error("{\"a\":1,}", 8, NULL, "invalid");
    expect_error("{\"a\":1 /* c */}", 15, NULL, "invalid");
    /* position reporting: error on line 3 */
    expect_error("{\n\"a\":1,\n\"a\":2}", 14, NULL, "line 3");
}

/* fhir_json_parse_ex: comments when asked, a line on every node (a member's is its key's),
 * duplicate keys naming the first one's line, failures with their position. */
static void test_parse_ex_lines(void **state)
{
    (void)state;
    const char *t = "// head\n"                       /* 1 */
                    "{\n"                             /* 2 */
                    "  \"a\": 1, /* x\n"              /* 3 */
                    "  y */ \"b\":\n"                 /* 4 */
                    "    [true,\n"                    /* 5 */
                    "     {\"c\": null}],\n"          /* 6 */
                    "  \"d\": \"// not a comment\"\n" /* 7 */
                    "}\n";
    fhir_arena *a = fhir_arena_new(0);
    fhir_json_opts o = {.comments = true, .lines = true};
    fhir_json_failure f;
    fhir_node *r = fhir_json_parse_ex(a, t, strlen(t), &o, &f);
    if (!r)
        fail_msg("%zu: %s", f.line, f.what);
    assert_int_equal(r->line, 2);
    assert_int_equal(fhir_node_get(r, "a")->line, 3);
    const fhir_node *b = fhir_node_get(r, "b");
    assert_int_equal(b->line, 4); /* the key's line, not the bracket's */
    assert_int_equal(fhir_node_at(b, 0)->line, 5);
    assert_int_equal(fhir_node_at(b, 1)->line, 6);
    assert_int_equal(fhir_node_get(fhir_node_at(b, 1), "c")->line, 6);
    assert_string_equal(fhir_node_str(fhir_node_get(r, "d")), "// not a comment");
    assert_int_equal(fhir_node_get(r, "d")->line, 7);
    assert_int_equal(fhir_node_clone(a, b)->line, 4);
    /* without the options: no comments, no lines */
    assert_null(fhir_json_parse_ex(a, t, strlen(t), NULL, &f));
    assert_true(f.syntax);
    assert_int_equal(f.line, 1);
    r = fhir_json_parse_ex(a, "{\n\"a\": 1}", 9, NULL, &f);
    assert_non_null(r);
    assert_int_equal(fhir_node_get(r, "a")->line, 0);
    /* a duplicate names the first one's line; a syntax error its own */
    assert_null(fhir_json_parse_ex(a, "{\"a\": 1,\n\n\"a\": 2}", 17, &o, &f));
    assert_false(f.syntax);
    assert_int_equal(f.line, 3);
    assert_string_equal(f.what, "duplicate key \"a\" (first on line 1)");
    assert_null(fhir_json_parse_ex(a, "{\"a\": 1,\n\"b\": }", 15, &o, &f));
    assert_true(f.syntax);
    assert_int_equal(f.line, 2);
    assert_int_equal(f.byte, 15); /* just past the token that did not fit */
    assert_non_null(strstr(f.what, "unallowed token"));
    assert_null(fhir_json_parse_ex(a, "", 0, &o, &f));
    assert_string_equal(f.what, "empty input: no JSON document");
    fhir_arena_free(a);
    /* large objects: the hash path names the first one's line too */
    char buf[4096];
    size_t n = 0;
    buf[n++] = '{';
    for (int i = 0; i < 40; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\"k%d\":%d\n", i ? "," : "", i, i);
    snprintf(buf + n, sizeof buf - n, ",\"k7\":0}");
    a = fhir_arena_new(0);
    assert_null(fhir_json_parse_ex(a, buf, strlen(buf), &o, &f));
    assert_string_equal(f.what, "duplicate key \"k7\" (first on line 8)");
    assert_int_equal(f.line, 41);
    fhir_arena_free(a);
    char v[32];
    assert_non_null(strchr(fhir_json_lib_version(v, sizeof v), '.'));
}

static void test_duplicate_keys_in_large_object(void **state)
{
    (void)state;
    /* more members than the linear-scan threshold: the hash path must catch duplicates */
    char buf[8192];
    size_t o = 0;
    buf[o++] = '{';
    for (int i = 0; i < 200; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s\"k%d\":%d", i ? "," : "", i, i);
    memcpy(buf + o, "}", 2);
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *n = fhir_json_parse(a, buf, strlen(buf), NULL, &err);
    assert_non_null(n);
    assert_int_equal(fhir_node_count(n), 200);
    fhir_arena_free(a);
    /* overwrite the closing brace with one more member that repeats k137 */
    snprintf(buf + o, sizeof buf - o, ",\"k137\":1}");
    expect_error(buf, strlen(buf), NULL, "duplicate key \"k137\"");
    /* the same key in two different objects is fine */
    fhir_arena *b = fhir_arena_new(0);
    char two[16384];
    size_t t = 0;
    t += (size_t)snprintf(two + t, sizeof two - t, "[");
    for (int obj = 0; obj < 2; obj++) {
        t += (size_t)snprintf(two + t, sizeof two - t, "%s{", obj ? "," : "");
        for (int i = 0; i < 40; i++)
            t += (size_t)snprintf(two + t, sizeof two - t, "%s\"k%d\":%d", i ? "," : "", i, i);
        t += (size_t)snprintf(two + t, sizeof two - t, "}");
    }
    snprintf(two + t, sizeof two - t, "]");
    assert_non_null(fhir_json_parse(b, two, strlen(two), NULL, &err));
    fhir_arena_free(b);
}

static void test_bom_accepted(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    const char *s = "\xEF\xBB\xBF{\"resourceType\":\"Patient\"}";
    fhir_node *n = fhir_json_parse(a, s, strlen(s), NULL, &err);
    assert_non_null(n);
    assert_string_equal(fhir_node_resource_type(n), "Patient");
    fhir_arena_free(a);
}

/* A BOM split across the first pieces of a stream is skipped like a whole one; a prefix of
 * a BOM that is not one reaches the parser (and is an error there, as in a whole parse). */
static void test_stream_bom_split(void **state)
{
    (void)state;
    const char *s = "\xEF\xBB\xBF{\"resourceType\":\"Patient\"}";
    size_t len = strlen(s);
    for (size_t chunk = 1; chunk <= 4; chunk++) {
        fhir_arena *a = fhir_arena_new(0);
        fhir_error err = {0};
        fhir_json_stream *st = fhir_json_stream_new(a, NULL);
        for (size_t o = 0; o < len; o += chunk)
            assert_int_equal(fhir_json_stream_feed(st, s + o, o + chunk > len ? len - o : chunk, &err), 0);
        fhir_node *n = fhir_json_stream_finish(st, &err);
        if (!n)
            fail_msg("pieces of %zu: %s", chunk, err.msg);
        assert_string_equal(fhir_node_resource_type(n), "Patient");
        fhir_json_stream_free(st);
        fhir_arena_free(a);
    }
    const char *bad[] = {"\xEF\xBB{}", "\xEF", "\xEF\xBB\xBF"};
    for (size_t i = 0; i < 3; i++) {
        fhir_arena *a = fhir_arena_new(0);
        fhir_error err = {0};
        fhir_json_stream *st = fhir_json_stream_new(a, NULL);
        int rc = 0;
        for (size_t o = 0; bad[i][o] && rc == 0; o++)
            rc = fhir_json_stream_feed(st, bad[i] + o, 1, &err);
        assert_true(rc != 0 || fhir_json_stream_finish(st, &err) == NULL);
        assert_null(fhir_json_parse(a, bad[i], strlen(bad[i]), NULL, &err));
        fhir_json_stream_free(st);
        fhir_arena_free(a);
    }
}

/* A stream keeps one copy of each member name, in the trees' arena: the entries of a page
 * repeat a few dozen names, and equal names are then one pointer; a repeated member is still
 * refused, including one whose name arrives split across two pieces. */
static void test_stream_shares_names(void **state)
{
    (void)state;
    const char *s = "{\"entry\":[{\"resource\":{\"resourceType\":\"Patient\",\"id\":\"a\"}},"
                    "{\"resource\":{\"resourceType\":\"Patient\",\"id\":\"b\"}}]}";
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_json_stream *st = fhir_json_stream_new(a, NULL);
    assert_int_equal(fhir_json_stream_feed(st, s, strlen(s), &err), 0);
    fhir_node *n = fhir_json_stream_finish(st, &err);
    fhir_json_stream_free(st);
    assert_non_null(n);
    const fhir_node *e0 = fhir_node_first(fhir_node_get(n, "entry"));
    assert_non_null(e0);
    assert_non_null(e0->next);
    const fhir_node *r0 = fhir_node_get(e0, "resource"), *r1 = fhir_node_get(e0->next, "resource");
    assert_non_null(r0);
    assert_non_null(r1);
    assert_string_equal(fhir_node_resource_id(r1), "b"); /* read after the stream is gone */
    assert_ptr_equal(r0->child->key, r1->child->key);
    assert_ptr_equal(r0->child->next->key, r1->child->next->key);
    assert_ptr_equal(e0->child->key, e0->next->child->key);
    fhir_arena_free(a);
    const char *pieces[] = {"{\"id\":\"a\",\"i", "d\":\"b\"}"};
    a = fhir_arena_new(0);
    st = fhir_json_stream_new(a, NULL);
    int rc = 0;
    for (size_t i = 0; i < 2 && rc == 0; i++)
        rc = fhir_json_stream_feed(st, pieces[i], strlen(pieces[i]), &err);
    assert_true(rc != 0 || fhir_json_stream_finish(st, &err) == NULL);
    assert_non_null(strstr(err.msg, "duplicate key"));
    fhir_json_stream_free(st);
    fhir_arena_free(a);
}

/* A stream fed in pieces of any size (1 byte to whole) builds the tree a whole parse builds. */
static void test_stream_pieces(void **state)
{
    (void)state;
    const char *r0 = "{\"resourceType\":\"Patient\",\"id\":\"a\",\"name\":[{\"text\":\"Ren\\u00e9e \\\"R\\\"\"}]}";
    const char *r1 = "{ \"resourceType\" : \"Observation\",\n  \"id\": \"o1\", \"valueQuantity\": {\"value\": 1.50},\n"
                     "  \"contained\": [{\"resource\": {\"id\": \"x\"}}], \"x\": {} }";
    char body[1024];
    snprintf(body, sizeof body,
             "{\"resourceType\":\"Bundle\",\"resource\":{\"id\":\"no\"},\"entry\":[{\"fullUrl\":\"u\",\"resource\":%s},"
             "{\"search\":{\"mode\":\"match\"}},\n {\"resource\" :%s , \"search\":{\"mode\":\"include\"}},"
             "{\"resource\":{}}],\"other\":[{\"resource\":{\"id\":\"no\"}}]}",
             r0, r1);
    size_t len = strlen(body);
    fhir_arena *wa = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *whole = fhir_json_parse(wa, body, len, NULL, &err);
    assert_non_null(whole);
    for (size_t chunk = 1; chunk <= len; chunk = chunk < 16 ? chunk + 1 : chunk * 3) {
        fhir_arena *a = fhir_arena_new(0);
        fhir_json_stream *st = fhir_json_stream_new(a, NULL);
        for (size_t o = 0; o < len; o += chunk)
            assert_int_equal(fhir_json_stream_feed(st, body + o, o + chunk > len ? len - o : chunk, &err), 0);
        fhir_node *b = fhir_json_stream_finish(st, &err);
        if (!b)
            fail_msg("pieces of %zu: %s", chunk, err.msg);
        if (!fhir_node_equal(b, whole, false))
            fail_msg("pieces of %zu: another tree", chunk);
        fhir_json_stream_free(st);
        fhir_arena_free(a);
    }
    fhir_arena_free(wa);
}

/* Strings and keys are strict UTF-8: overlong forms, surrogates and code points above
 * U+10FFFF are refused (the XML reader refuses them too); every well-formed sequence up to
 * four bytes is kept as it is. */
static void test_strict_utf8(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"a\":\"\xC0\xAF\"}",         /* overlong '/' */
        "{\"a\":\"\xC1\xBF\"}",         /* overlong */
        "{\"a\":\"\xE0\x80\xAF\"}",     /* overlong, 3 bytes */
        "{\"a\":\"\xF0\x80\x80\xAF\"}", /* overlong, 4 bytes */
        "{\"a\":\"\xED\xA0\x80\"}",     /* U+D800 */
        "{\"a\":\"\xED\xBF\xBF\"}",     /* U+DFFF */
        "{\"a\":\"\xF4\x90\x80\x80\"}", /* U+110000 */
        "{\"a\":\"\xF5\x80\x80\x80\"}",
        "{\"a\":\"\x80\"}",             /* lone continuation byte */
        "{\"a\":\"\xE2\x82\"}",         /* truncated */
        "{\"\xC0\xAF\":1}",               /* in a key */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_error(bad[i], strlen(bad[i]), NULL, "UTF"); /* ours or yajl's own check */
    const char *good = "{\"a\":\"\xC2\x80 \xDF\xBF \xE0\xA0\x80 \xED\x9F\xBF \xEE\x80\x80 "
                       "\xEF\xBF\xBF \xF0\x90\x80\x80 \xF4\x8F\xBF\xBF\"}";
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *n = fhir_json_parse(a, good, strlen(good), NULL, &err);
    if (!n)
        fail_msg("well-formed UTF-8 refused: %s", err.msg);
    assert_int_equal(strlen(fhir_node_str(fhir_node_get(n, "a"))), strlen(good) - 8); /* less {"a":" and "} */
    fhir_arena_free(a);
}

static void test_deep_nesting(void **state)
{
    (void)state;
    size_t depth = 100000;
    char *s = malloc(depth * 2 + 1);
    memset(s, '[', depth);
    memset(s + depth, ']', depth);
    s[depth * 2] = '\0';
    expect_error(s, depth * 2, NULL, "max_depth (256)");
    /* exactly at the limit is fine */
    fhir_json_limits lim = {.max_depth = 300};
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    assert_non_null(fhir_json_parse(a, s + depth - 300, 600, &lim, &err));
    fhir_arena_free(a);
    free(s);
}

static void test_huge_string_over_cap(void **state)
{
    (void)state;
    size_t n = 100u * 1024u * 1024u;
    char *s = malloc(n + 16);
    memcpy(s, "{\"a\":\"", 6);
    memset(s + 6, 'x', n);
    memcpy(s + 6 + n, "\"}", 3);
    /* defaults: the whole document is over max_bytes */
    expect_error(s, n + 8, NULL, "max_bytes");
    /* a larger document cap: the string cap trips */
    fhir_json_limits lim = {.max_bytes = 256u * 1024u * 1024u};
    expect_error(s, n + 8, &lim, "max_string");
    free(s);
}

static void test_arena_cap(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(4096);
    fhir_error err = {0};
    char buf[20000];
    size_t o = 0;
    buf[o++] = '[';
    for (int i = 0; i < 2000; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%d", i ? "," : "", i);
    memcpy(buf + o, "]", 2);
    assert_null(fhir_json_parse(a, buf, strlen(buf), NULL, &err));
    assert_non_null(strstr(err.msg, "memory cap"));
    fhir_arena_free(a);
}

static void round_trip(const char *s)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *x = fhir_json_parse(a, s, strlen(s), NULL, &err);
    assert_non_null(x);
    for (int flags = 0; flags < 2; flags++) {
        char *out = fhir_json_to_string(x, flags, 0);
        fhir_node *y = fhir_json_parse(a, out, strlen(out), NULL, &err);
        if (!y)
            fail_msg("reparse of %s failed: %s", out, err.msg);
        assert_true(fhir_node_equal(x, y, false));
        free(out);
    }
    fhir_arena_free(a);
}

static void test_writer(void **state)
{
    (void)state;
    round_trip("{\"a\":\"tab\\there \\\"q\\\" \\\\ \\u0001 \\u00e9 \xc3\xa9 \\/\",\"n\":[1.50,-0.0,1e10,3E-2],"
               "\"b\":[true,false,null],\"e\":{},\"ea\":[],\"nested\":{\"x\":[{\"y\":[]}]}}");
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    const char *s = "{\"resourceType\":\"Patient\",\"a\":[1,{\"b\":null}],\"e\":{}}";
    fhir_node *x = fhir_json_parse(a, s, strlen(s), NULL, &err);
    char *pretty = fhir_json_to_string(x, FHIR_JSON_PRETTY, 0);
    assert_string_equal(pretty, "{\n  \"resourceType\": \"Patient\",\n  \"a\": [\n    1,\n    {\n"
                                "      \"b\": null\n    }\n  ],\n  \"e\": {}\n}\n");
    free(pretty);
    char *compact = fhir_json_to_string(x, FHIR_JSON_COMPACT, 0);
    assert_string_equal(compact, s);
    free(compact);
    /* a capped output buffer fails cleanly */
    assert_null(fhir_json_to_string(x, FHIR_JSON_COMPACT, 10));
    fhir_buf b;
    fhir_buf_init(&b, 0);
    fhir_json_write_string(&b, "a\n\x1f", 3);
    assert_string_equal(fhir_buf_cstr(&b), "\"a\\n\\u001f\"");
    fhir_buf_free(&b);
    fhir_arena_free(a);
}

static void test_stream_chunks(void **state)
{
    (void)state;
    const char *s = "{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":{\"resourceType\":\"Patient\",\"id\":\"abc\"}},"
                    "{\"resource\":{\"resourceType\":\"Observation\",\"valueQuantity\":{\"value\":12.340}}}]}";
    size_t len = strlen(s);
    fhir_arena *ref = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *whole = fhir_json_parse(ref, s, len, NULL, &err);
    for (size_t chunk = 1; chunk <= 17; chunk += 4) {
        fhir_arena *a = fhir_arena_new(0);
        fhir_json_stream *st = fhir_json_stream_new(a, NULL);
        for (size_t o = 0; o < len; o += chunk)
            assert_int_equal(fhir_json_stream_feed(st, s + o, o + chunk > len ? len - o : chunk, &err), 0);
        fhir_node *n = fhir_json_stream_finish(st, &err);
        assert_non_null(n);
        assert_true(fhir_node_equal(whole, n, false));
        fhir_json_stream_free(st);
        fhir_arena_free(a);
    }
    /* a stream over max_bytes fails at the feed that crosses it */
    fhir_json_limits lim = {.max_bytes = 50};
    fhir_arena *a = fhir_arena_new(0);
    fhir_json_stream *st = fhir_json_stream_new(a, &lim);
    assert_int_equal(fhir_json_stream_feed(st, s, 40, &err), 0);
    assert_int_equal(fhir_json_stream_feed(st, s + 40, 40, &err), -1);
    assert_non_null(strstr(err.msg, "max_bytes"));
    fhir_json_stream_free(st);
    /* truncated stream */
    st = fhir_json_stream_new(a, NULL);
    assert_int_equal(fhir_json_stream_feed(st, s, 30, &err), 0);
    assert_null(fhir_json_stream_finish(st, &err));
    assert_non_null(strstr(err.msg, "premature EOF"));
    fhir_json_stream_free(st);
    fhir_arena_free(a);
    fhir_arena_free(ref);
}

static void test_parse_file_errors(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    assert_null(fhir_json_parse_file(a, "/nonexistent/x.json", NULL, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/x.json"));
    fhir_arena_free(a);
}

/* fhir_json_reader: one handle across documents; every document, good or bad, gives what
 * fhir_json_parse gives (same trees, same messages), before and after a failure. */
static void test_reader_matches_parse(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "{\"resourceType\":\"Observation\",\"id\":\"o1\",\"valueQuantity\":{\"value\":1.5}}",
        "{\"a\":1} {\"b\":2}", /* two documents on one line */
        "{\"a\":1}{}",
        "{\"a\":1} 12",          /* a number pending at the end */
        "{\"a\":1} \"open",      /* a string pending at the end */
        "{\"a\":[1,2",            /* truncated */
        "12",                     /* a scalar */
        "\"text\"",
        "[1,{\"x\":null}]",
        "\xEF\xBB\xBF{\"bom\":true}",
        "{\"a\":1,\"b\":2,\"a\":3}",
        "{\"a\":\"x\\u0000y\"}",
        "{\"a\":\"\xc3\xa9\xed\xa0\x80\"}", /* a surrogate */
        "{\"\xc0\xaf\":1}",       /* an overlong key */
        "{\"a\":true}  \r\n",
        "",
        "   ",
        "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"name\":[{\"family\":\"X\"}]}",
    };
    fhir_json_reader *r = fhir_json_reader_new(NULL);
    fhir_arena *a = fhir_arena_new(0), *b = fhir_arena_new(0);
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
            size_t n = strlen(docs[i]);
            fhir_error e1 = {0}, e2 = {0};
            fhir_node *want = fhir_json_parse(a, docs[i], n, NULL, &e1);
            fhir_node *got = fhir_json_reader_parse(r, b, docs[i], n, &e2);
            if (!want != !got || (want && !fhir_node_equal(want, got, false)))
                fail_msg("document %zu: reader and parse differ", i);
            if (!want && strcmp(e1.msg, e2.msg))
                fail_msg("document %zu: '%s' vs '%s'", i, e1.msg, e2.msg);
            fhir_arena_reset(a);
            fhir_arena_reset(b);
        }
    /* member names are shared across documents, and outlive an arena reset */
    const char *doc = "{\"code\":{\"text\":\"x\"}}";
    fhir_error e;
    const fhir_node *t1 = fhir_json_reader_parse(r, a, doc, strlen(doc), &e);
    const fhir_node *t2 = fhir_json_reader_parse(r, b, doc, strlen(doc), &e);
    assert_non_null(t1);
    assert_non_null(t2);
    assert_ptr_equal(t1->child->key, t2->child->key);
    fhir_arena_reset(a);
    assert_string_equal(fhir_node_path_str(t2, "code.text"), "x");
    assert_string_equal(t2->child->key, "code");
    fhir_arena_free(a);
    fhir_arena_free(b);
    fhir_json_reader_free(r);
}

/* A reader shares one copy of each name: names that differ in any one byte, at any length, stay
 * apart (two of them in one object are not a duplicate; each tree keeps its own), an equal name
 * is the same pointer in every document, and a common FHIR name is the table's copy. */
static void test_reader_names_apart(void **state)
{
    (void)state;
    fhir_json_reader *r = fhir_json_reader_new(NULL);
    fhir_arena *a = fhir_arena_new(0);
    char k1[48], k2[48], doc[160];
    for (size_t len = 1; len <= 40; len++)
        for (size_t at = 0; at < len; at++) {
            for (size_t i = 0; i < len; i++)
                k1[i] = (char)('a' + (len + i) % 26);
            memcpy(k2, k1, len);
            k2[at] = 'Z'; /* differs from k1 in byte at alone */
            k1[len] = k2[len] = '\0';
            int n = snprintf(doc, sizeof doc, "{\"%s\":1,\"%s\":2}", k1, k2);
            fhir_error e = {0};
            const fhir_node *t = fhir_json_reader_parse(r, a, doc, (size_t)n, &e);
            if (!t)
                fail_msg("length %zu, byte %zu: %s", len, at, e.msg);
            assert_string_equal(t->child->key, k1);
            assert_string_equal(t->child->next->key, k2);
            n = snprintf(doc, sizeof doc, "{\"%s\":3}", k2);
            const fhir_node *u = fhir_json_reader_parse(r, a, doc, (size_t)n, &e);
            assert_non_null(u);
            assert_ptr_equal(u->child->key, t->child->next->key);
            fhir_arena_reset(a);
        }
    const char *res = "{\"resourceType\":\"Patient\",\"id\":\"p\"}";
    fhir_error e = {0};
    const fhir_node *p = fhir_json_reader_parse(r, a, res, strlen(res), &e);
    assert_non_null(p);
    assert_int_equal(fhir_names_own(p->child->key), fhir_names_find("resourceType", 12));
    assert_int_equal(fhir_names_own(p->child->next->key), fhir_names_find("id", 2));
    fhir_arena_free(a);
    fhir_json_reader_free(r);
}

/* Past the reader's table of names (hostile input: every key new), names go to the tree's
 * arena and documents still parse. */
static void test_reader_many_names(void **state)
{
    (void)state;
    fhir_json_reader *r = fhir_json_reader_new(NULL);
    fhir_arena *a = fhir_arena_new(0);
    char doc[64];
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(doc, sizeof doc, "{\"k%05d\":%d,\"k%05d\":1}", i, i, i + 1);
        fhir_error e;
        const fhir_node *t = fhir_json_reader_parse(r, a, doc, (size_t)n, &e);
        assert_non_null(t);
        char k[16];
        snprintf(k, sizeof k, "k%05d", i);
        assert_string_equal(t->child->key, k);
        n = snprintf(doc, sizeof doc, "{\"k%05d\":1,\"k%05d\":2}", i, i);
        assert_null(fhir_json_reader_parse(r, a, doc, (size_t)n, &e));
        assert_non_null(strstr(e.msg, "duplicate key"));
        fhir_arena_reset(a);
    }
    fhir_arena_free(a);
    fhir_json_reader_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_parse_ex_lines),
        cmocka_unit_test(test_duplicate_keys_in_large_object),
        cmocka_unit_test(test_bom_accepted),
        cmocka_unit_test(test_stream_bom_split),
        cmocka_unit_test(test_strict_utf8),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_huge_string_over_cap),
        cmocka_unit_test(test_arena_cap),
        cmocka_unit_test(test_writer),
        cmocka_unit_test(test_stream_chunks),
        cmocka_unit_test(test_parse_file_errors),
        cmocka_unit_test(test_reader_matches_parse),
        cmocka_unit_test(test_reader_many_names),
        cmocka_unit_test(test_reader_names_apart),
        cmocka_unit_test(test_stream_pieces),
        cmocka_unit_test(test_stream_shares_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
