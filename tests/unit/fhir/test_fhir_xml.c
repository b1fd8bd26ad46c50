/* Tests for fhir_xml: conformance against the official R4 JSON/XML example pairs, round
 * trips, hand-written cases for every mapping rule, bad input, and hardening (XXE,
 * billion laughs, DOCTYPE, limits). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fhir_json.h"
#include "fhir_xml.h"

/* ---- helpers ------------------------------------------------------------------------ */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = '\0';
    *len = got;
    return buf;
}

/* Describes the first difference between two trees into buf (for failure messages). */
static bool first_diff(const fhir_node *a, const fhir_node *b, char *path, size_t plen,
                       char *buf, size_t cap)
{
    if (fhir_node_equal(a, b, true))
        return false;
    if (!a || !b || a->kind != b->kind || (a->kind != FHIR_OBJECT && a->kind != FHIR_ARRAY)) {
        char sa[120] = "", sb[120] = "";
        size_t off = 0;
        if (a && b && a->kind == b->kind && a->kind == FHIR_STRING)
            while (off < a->len && off < b->len && a->text[off] == b->text[off])
                off++;
        off = off > 20 ? off - 20 : 0;
        if (a && (a->kind == FHIR_STRING || a->kind == FHIR_NUMBER))
            snprintf(sa, sizeof sa, " @%zu '%.60s'", off, a->text + off);
        if (b && (b->kind == FHIR_STRING || b->kind == FHIR_NUMBER))
            snprintf(sb, sizeof sb, " '%.60s'", b->text + off);
        snprintf(buf, cap, "%s: %s%s vs %s%s", path, a ? fhir_node_kind_name(a->kind) : "absent", sa,
                 b ? fhir_node_kind_name(b->kind) : "absent", sb);
        return true;
    }
    const fhir_node *x = a->child, *y = b->child;
    for (size_t i = 0; x || y; i++) {
        size_t n = strlen(path);
        if (a->kind == FHIR_OBJECT) {
            if (!x || !y || x->key_len != y->key_len || memcmp(x->key, y->key, x->key_len)) {
                snprintf(buf, cap, "%s: member #%zu is '%.*s' vs '%.*s'", path, i, x ? (int)x->key_len : 0,
                         x ? x->key : "", y ? (int)y->key_len : 0, y ? y->key : "");
                return true;
            }
            snprintf(path + n, plen - n, ".%.*s", (int)x->key_len, x->key);
        } else {
            snprintf(path + n, plen - n, "[%zu]", i);
        }
        if (first_diff(x, y, path, plen, buf, cap))
            return true;
        path[n] = '\0';
        x = x ? x->next : NULL;
        y = y ? y->next : NULL;
    }
    snprintf(buf, cap, "%s: differs (length)", path);
    return true;
}

static const char *shared_dir(void)
{
    const char *d = getenv("CARTGATE_SHARED_DATA");
    return d && *d ? d : NULL;
}

/* ---- conformance ---------------------------------------------------------------------- */

static void test_examples(void **state)
{
    (void)state;
    const char *base = shared_dir();
    char path[4096];
    if (!base)
        skip();
    snprintf(path, sizeof path, "%s/fhir-r4-examples/index.tsv", base);
    FILE *idx = fopen(path, "r");
    if (!idx)
        skip();
    char line[1024];
    int total = 0, pass_read = 0, pass_round = 0, pass_xml_round = 0;
    fhir_arena *a = fhir_arena_new(0);
    while (fgets(line, sizeof line, idx)) {
        char *tab = strchr(line, '\t');
        if (!tab || !strncmp(line, "basename\t", 9))
            continue;
        *tab = '\0';
        total++;
        size_t jl = 0, xl = 0;
        snprintf(path, sizeof path, "%s/fhir-r4-examples/json/%s.json", base, line);
        char *js = read_file(path, &jl);
        snprintf(path, sizeof path, "%s/fhir-r4-examples/xml/%s.xml", base, line);
        char *xs = read_file(path, &xl);
        assert_non_null(js);
        assert_non_null(xs);
        fhir_arena_reset(a);
        fhir_error err = {0};
        fhir_node *jt = fhir_json_parse(a, js, jl, NULL, &err);
        assert_non_null(jt);
        fhir_node *xt = fhir_xml_parse(a, xs, xl, NULL, &err);
        char diff[600], dpath[512] = "";
        /* 1. XML -> tree equals JSON -> tree */
        if (!xt)
            printf("FAIL read  %s: %s\n", line, err.msg);
        else if (first_diff(xt, jt, dpath, sizeof dpath, diff, sizeof diff))
            printf("FAIL read  %s: xml vs json at %s\n", line, diff);
        else
            pass_read++;
        /* 2. JSON -> XML -> JSON */
        fhir_buf out;
        fhir_buf_init(&out, 0);
        if (fhir_xml_write(&out, jt, FHIR_XML_PRETTY, &err) < 0) {
            printf("FAIL write %s: %s\n", line, err.msg);
        } else {
            fhir_node *rt = fhir_xml_parse(a, out.data, out.len, NULL, &err);
            dpath[0] = '\0';
            if (!rt)
                printf("FAIL round %s: re-read: %s\n", line, err.msg);
            else if (first_diff(rt, jt, dpath, sizeof dpath, diff, sizeof diff))
                printf("FAIL round %s: %s\n", line, diff);
            else
                pass_round++;
        }
        /* 3. XML -> tree -> XML (compact) -> tree */
        if (xt) {
            fhir_buf_reset(&out);
            fhir_node *rt = NULL;
            if (fhir_xml_write(&out, xt, FHIR_XML_COMPACT, &err) == 0)
                rt = fhir_xml_parse(a, out.data, out.len, NULL, &err);
            if (rt && fhir_node_equal(rt, xt, true))
                pass_xml_round++;
            else
                printf("FAIL xmlrt %s: %s\n", line, rt ? "tree differs" : err.msg);
        }
        fhir_buf_free(&out);
        free(js);
        free(xs);
    }
    fclose(idx);
    fhir_arena_free(a);
    printf("fhir-r4-examples: %d pairs; XML==JSON %d/%d; JSON->XML->JSON %d/%d; XML->XML %d/%d\n",
           total, pass_read, total, pass_round, total, pass_xml_round, total);
    assert_true(total > 0);
    assert_int_equal(pass_read, total);
    assert_int_equal(pass_round, total);
    assert_int_equal(pass_xml_round, total);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
