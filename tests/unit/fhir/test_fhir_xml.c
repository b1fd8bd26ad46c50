/* Tests for fhir_xml: conformance against the official R4 JSON/XML example pairs, round
 * trips, hand-written cases for every mapping rule, bad input, and hardening (XXE,
 * billion laughs, DOCTYPE, limits). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../unit_maps.h"

#include <dirent.h>
#include <stdbool.h>
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

/* ---- mapping rules on hand-written resources ---------------------------------------- */

#define NS "xmlns=\"http://hl7.org/fhir\""

/* Parses xml and json and asserts equal trees; then JSON -> XML -> tree equal too. */
static void assert_same(const char *xml, const char *json)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *x = fhir_xml_parse(a, xml, strlen(xml), NULL, &err);
    if (!x)
        fail_msg("xml: %s", err.msg);
    fhir_node *j = fhir_json_parse(a, json, strlen(json), NULL, &err);
    if (!j)
        fail_msg("json: %s", err.msg);
    char diff[600] = "", path[512] = "";
    if (first_diff(x, j, path, sizeof path, diff, sizeof diff))
        fail_msg("xml vs json: %s", diff);
    fhir_buf out;
    fhir_buf_init(&out, 0);
    assert_int_equal(fhir_xml_write(&out, j, FHIR_XML_COMPACT, &err), 0);
    fhir_node *r = fhir_xml_parse(a, out.data, out.len, NULL, &err);
    if (!r)
        fail_msg("re-read of '%s': %s", out.data, err.msg);
    path[0] = '\0';
    if (first_diff(r, j, path, sizeof path, diff, sizeof diff))
        fail_msg("round trip: %s\n%s", diff, out.data);
    fhir_buf_free(&out);
    fhir_arena_free(a);
}

static void test_primitives(void **state)
{
    (void)state;
    assert_same("<Patient " NS "><id value=\"p1\"/><active value=\"true\"/>"
                "<name><family value=\"Chalmers\"/><given value=\"Peter\"/></name>"
                "<birthDate id=\"314159\" value=\"1974-12-25\"><extension url=\"http://x/birthTime\">"
                "<valueDateTime value=\"1974-12-25T14:35:45-05:00\"/></extension></birthDate>"
                "<multipleBirthInteger value=\"2\"/></Patient>",
                "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"active\":true,"
                "\"name\":[{\"family\":\"Chalmers\",\"given\":[\"Peter\"]}],"
                "\"birthDate\":\"1974-12-25\",\"_birthDate\":{\"id\":\"314159\",\"extension\":"
                "[{\"url\":\"http://x/birthTime\",\"valueDateTime\":\"1974-12-25T14:35:45-05:00\"}]},"
                "\"multipleBirthInteger\":2}");
    /* repeating primitive with gaps: null pads both arrays */
    assert_same("<Patient " NS "><name><given value=\"A\"/>"
                "<given id=\"g2\"><extension url=\"u\"><valueString value=\"x\"/></extension></given>"
                "<given value=\"C\"/></name></Patient>",
                "{\"resourceType\":\"Patient\",\"name\":[{\"given\":[\"A\",null,\"C\"],"
                "\"_given\":[null,{\"id\":\"g2\",\"extension\":[{\"url\":\"u\",\"valueString\":\"x\"}]},null]}]}");
    /* extension-only primitive: only the _ member */
    assert_same("<Patient " NS "><gender><extension url=\"u\"><valueCode value=\"x\"/></extension></gender></Patient>",
                "{\"resourceType\":\"Patient\",\"_gender\":{\"extension\":[{\"url\":\"u\",\"valueCode\":\"x\"}]}}");
    /* decimals keep their text; escapes in attributes */
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    const char *xml = "<Observation " NS "><status value=\"final\"/><code><text value=\"a &amp; b &lt;c&gt; &#10;&quot;\"/></code>"
                      "<valueQuantity><value value=\"1.50\"/></valueQuantity></Observation>";
    fhir_node *o = fhir_xml_parse(a, xml, strlen(xml), NULL, &err);
    assert_non_null(o);
    assert_string_equal(fhir_node_num_text(fhir_node_path(o, "valueQuantity.value")), "1.50");
    assert_string_equal(fhir_node_path_str(o, "code.text"), "a & b <c> \n\"");
    fhir_arena_free(a);
}

static void test_nested_resources_and_div(void **state)
{
    (void)state;
    assert_same("<Bundle " NS "><type value=\"collection\"/><entry><fullUrl value=\"urn:uuid:1\"/>"
                "<resource><Patient><id value=\"a\"/><contained><Organization><id value=\"o\"/>"
                "<name value=\"Org\"/></Organization></contained></Patient></resource></entry>"
                "<entry><resource><Observation><status value=\"final\"/><code><text value=\"t\"/></code>"
                "</Observation></resource></entry></Bundle>",
                "{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":[{\"fullUrl\":\"urn:uuid:1\","
                "\"resource\":{\"resourceType\":\"Patient\",\"id\":\"a\",\"contained\":[{\"resourceType\":"
                "\"Organization\",\"id\":\"o\",\"name\":\"Org\"}]}},{\"resource\":{\"resourceType\":"
                "\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"t\"}}}]}");
    assert_same("<Patient " NS "><text><status value=\"generated\"/>"
                "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p class=\"c\">a &amp; b<br/>&lt;x&gt;</p></div></text></Patient>",
                "{\"resourceType\":\"Patient\",\"text\":{\"status\":\"generated\",\"div\":"
                "\"<div xmlns=\\\"http://www.w3.org/1999/xhtml\\\"><p class=\\\"c\\\">a &amp; b<br/>&lt;x&gt;</p></div>\"}}");
}

/* The writer puts elements in definition order whatever the JSON member order. */
static void test_writer_order(void **state)
{
    (void)state;
    const char *json = "{\"gender\":\"male\",\"name\":[{\"given\":[\"B\"],\"family\":\"A\"}],"
                       "\"id\":\"x\",\"resourceType\":\"Patient\",\"active\":false}";
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *j = fhir_json_parse(a, json, strlen(json), NULL, &err);
    assert_non_null(j);
    fhir_buf out;
    fhir_buf_init(&out, 0);
    assert_int_equal(fhir_xml_write(&out, j, FHIR_XML_COMPACT, &err), 0);
    assert_string_equal(out.data, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Patient " NS ">"
                                  "<id value=\"x\"/><active value=\"false\"/><name><family value=\"A\"/>"
                                  "<given value=\"B\"/></name><gender value=\"male\"/></Patient>");
    fhir_buf_free(&out);
    fhir_arena_free(a);
}

/* ---- bad input ---------------------------------------------------------------------- */

static void expect_xml_error(const char *xml, const char *needle)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *n = fhir_xml_parse(a, xml, strlen(xml), NULL, &err);
    if (n)
        fail_msg("accepted: %s", xml);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' does not mention '%s'", err.msg, needle);
    printf("  refused as expected: %s\n", err.msg);
    fhir_arena_free(a);
}

static void test_bad_input(void **state)
{
    (void)state;
    expect_xml_error("<Patient " NS "><id value=\"x\"></Patient>", "not well-formed");
    expect_xml_error("", "empty document");
    expect_xml_error("<Patient xmlns=\"http://example.org\"><id value=\"x\"/></Patient>", "namespace");
    expect_xml_error("<Patient><id value=\"x\"/></Patient>", "no namespace");
    expect_xml_error("<Patient " NS "><foo value=\"x\"/></Patient>", "unknown element 'Patient.foo'");
    expect_xml_error("<Patient " NS "><name><fmaily value=\"x\"/></name></Patient>",
                     "unknown element 'Patient.name.fmaily'");
    expect_xml_error("<Patient " NS "><gender value=\"male\"/><gender value=\"female\"/></Patient>",
                     "must not repeat: 'Patient.gender'");
    expect_xml_error("<Observation " NS "><valueString value=\"a\"/><valueBoolean value=\"true\"/></Observation>",
                     "must not repeat");
    expect_xml_error("<Patient " NS "><gender>male</gender></Patient>", "text content where a primitive belongs");
    expect_xml_error("<Patient " NS "><active value=\"yes\"/></Patient>", "not a boolean");
    expect_xml_error("<Observation " NS "><valueQuantity><value value=\"1,5\"/></valueQuantity></Observation>",
                     "not a valid decimal");
    expect_xml_error("<Patient " NS "><multipleBirthInteger value=\"2.0\"/></Patient>", "not a valid integer");
    expect_xml_error("<Foo " NS "/>", "not a FHIR R4 resource type");
    expect_xml_error("<Patient " NS "><name/></Patient>", "no content");
    expect_xml_error("<Patient " NS "><active/></Patient>", "neither a value");
    expect_xml_error("<Patient " NS "><name><id value=\"x\"/></name></Patient>", "must be an XML attribute");
    expect_xml_error("<Patient " NS "><contained/></Patient>", "no resource inside");
    expect_xml_error("<Patient " NS "><text><status value=\"generated\"/><div>x</div></text></Patient>",
                     "namespace");
    expect_xml_error("<Patient " NS "><name><family value=\"a\"/></name><active value=\"true\"/>"
                     "<name><family value=\"b\"/></name></Patient>", "repetitions must be adjacent");
    expect_xml_error("<Patient " NS "><id value=\"&nope;\"/></Patient>", "not well-formed");
}

static void expect_write_error(const char *json, const char *needle)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *j = fhir_json_parse(a, json, strlen(json), NULL, &err);
    assert_non_null(j);
    fhir_buf out;
    fhir_buf_init(&out, 0);
    assert_int_equal(fhir_xml_write(&out, j, 0, &err), -1);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' does not mention '%s'", err.msg, needle);
    printf("  write refused as expected: %s\n", err.msg);
    fhir_buf_free(&out);
    fhir_arena_free(a);
}

static void test_writer_errors(void **state)
{
    (void)state;
    expect_write_error("{\"resourceType\":\"Patient\",\"name\":[{\"fmaily\":\"x\"}]}",
                       "Patient.name: unknown element 'fmaily'");
    expect_write_error("{\"resourceType\":\"Patient\",\"gender\":[\"male\"]}", "Patient.gender");
    expect_write_error("{\"resourceType\":\"Patient\",\"name\":{\"family\":\"x\"}}", "must be an array");
    expect_write_error("{\"resourceType\":\"Patient\",\"active\":\"true\"}", "expected boolean");
    expect_write_error("{\"resourceType\":\"Nope\"}", "not a FHIR R4 resource type");
    expect_write_error("{\"id\":\"x\"}", "resourceType");
    expect_write_error("{\"resourceType\":\"Patient\",\"text\":{\"status\":\"generated\",\"div\":\"<p>x</p>\"}}",
                       "XHTML");
    expect_write_error("{\"resourceType\":\"Patient\",\"text\":{\"status\":\"generated\",\"div\":"
                       "\"<!DOCTYPE div [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><div xmlns='http://www.w3.org/1999/xhtml'>&x;</div>\"}}",
                       "DOCTYPE");
    expect_write_error("{\"resourceType\":\"Observation\",\"valueString\":\"a\",\"valueBoolean\":true}",
                       "given twice");
}

/* ---- hardening ---------------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_xxe(void **state)
{
    (void)state;
    double t0 = now_ms();
    expect_xml_error("<?xml version=\"1.0\"?>\n<!DOCTYPE Patient [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n"
                     "<Patient " NS "><id value=\"&x;\"/></Patient>",
                     "DOCTYPE is not allowed");
    expect_xml_error("<!DOCTYPE Patient SYSTEM \"http://127.0.0.1:1/evil.dtd\"><Patient " NS "/>",
                     "DOCTYPE is not allowed");
    expect_xml_error("<!DOCTYPE Patient [<!ENTITY % p SYSTEM \"file:///etc/passwd\"> %p;]><Patient " NS "/>",
                     "DOCTYPE is not allowed");
    printf("  XXE payloads refused in %.2f ms\n", now_ms() - t0);
}

static void test_billion_laughs(void **state)
{
    (void)state;
    const char *bomb =
        "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n"
        " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
        " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
        " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
        " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
        " <!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">\n"
        " <!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">\n"
        " <!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">\n"
        " <!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">\n"
        " <!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">\n"
        "]>\n<Patient " NS "><id value=\"&lol9;\"/></Patient>";
    double t0 = now_ms();
    expect_xml_error(bomb, "DOCTYPE is not allowed");
    printf("  billion laughs refused in %.2f ms\n", now_ms() - t0);
}

static void test_limits(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    /* depth: extensions nested 300 deep */
    fhir_buf b;
    fhir_buf_init(&b, 0);
    fhir_buf_puts(&b, "<Patient " NS ">");
    for (int i = 0; i < 300; i++)
        fhir_buf_puts(&b, "<extension url=\"u\">");
    fhir_buf_puts(&b, "<valueString value=\"x\"/>");
    for (int i = 0; i < 300; i++)
        fhir_buf_puts(&b, "</extension>");
    fhir_buf_puts(&b, "</Patient>");
    assert_null(fhir_xml_parse(a, b.data, b.len, NULL, &err));
    assert_non_null(strstr(err.msg, "max_depth"));
    printf("  %s\n", err.msg);
    /* a caller's smaller max_depth applies (libxml2 itself also stops at 256 levels) */
    fhir_json_limits lim = {.max_depth = 50};
    fhir_buf_reset(&b);
    fhir_buf_puts(&b, "<Patient " NS ">");
    for (int i = 0; i < 100; i++)
        fhir_buf_puts(&b, "<extension url=\"u\">");
    fhir_buf_puts(&b, "<valueString value=\"x\"/>");
    for (int i = 0; i < 100; i++)
        fhir_buf_puts(&b, "</extension>");
    fhir_buf_puts(&b, "</Patient>");
    assert_non_null(fhir_xml_parse(a, b.data, b.len, NULL, &err));
    assert_null(fhir_xml_parse(a, b.data, b.len, &lim, &err));
    assert_non_null(strstr(err.msg, "max_depth (50)"));
    /* size */
    lim = (fhir_json_limits){.max_bytes = 100};
    assert_null(fhir_xml_parse(a, b.data, b.len, &lim, &err));
    assert_non_null(strstr(err.msg, "max_bytes"));
    /* one value longer than max_string */
    lim = (fhir_json_limits){.max_string = 8};
    const char *x = "<Patient " NS "><id value=\"0123456789\"/></Patient>";
    assert_null(fhir_xml_parse(a, x, strlen(x), &lim, &err));
    assert_non_null(strstr(err.msg, "max_string"));
    /* arena cap */
    fhir_arena *small = fhir_arena_new(4096);
    fhir_buf_reset(&b);
    fhir_buf_puts(&b, "<Patient " NS "><name>");
    for (int i = 0; i < 1000; i++)
        fhir_buf_puts(&b, "<given value=\"abcdefgh\"/>");
    fhir_buf_puts(&b, "</name></Patient>");
    assert_null(fhir_xml_parse(small, b.data, b.len, NULL, &err));
    assert_non_null(strstr(err.msg, "cap"));
    fhir_arena_free(small);
    fhir_buf_free(&b);
    fhir_arena_free(a);
}

static void test_detect(void **state)
{
    (void)state;
    assert_true(fhir_xml_detect("\xEF\xBB\xBF  \n<Patient/>", 14));
    assert_true(fhir_xml_detect("<?xml version='1.0'?>", 21));
    assert_false(fhir_xml_detect("  {\"a\":1}", 9));
    assert_false(fhir_xml_detect("", 0));
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    const char *j = "{\"resourceType\":\"Patient\",\"id\":\"j\"}";
    const char *x = "<Patient " NS "><id value=\"j\"/></Patient>";
    assert_true(fhir_node_equal(fhir_xml_parse_any(a, j, strlen(j), NULL, &err),
                                fhir_xml_parse_any(a, x, strlen(x), NULL, &err), true));
    fhir_arena_free(a);
}

/* Every prefix (step 7) and single-byte corruptions of a real example: no crash, and
 * either a tree or an error message (run under ASan in scripts/test). */
static void test_truncated_and_corrupted(void **state)
{
    (void)state;
    const char *base = shared_dir();
    char path[4096];
    if (!base)
        skip();
    snprintf(path, sizeof path, "%s/fhir-r4-examples/xml/bundle-transaction.xml", base);
    size_t len = 0;
    char *xs = read_file(path, &len);
    if (!xs)
        skip();
    fhir_arena *a = fhir_arena_new(0);
    int ok = 0, refused = 0;
    for (size_t n = 0; n < len; n += 7) {
        fhir_error err = {0};
        fhir_arena_reset(a);
        if (fhir_xml_parse(a, xs, n, NULL, &err))
            ok++;
        else {
            assert_true(err.msg[0] != '\0');
            refused++;
        }
    }
    static const char junk[] = {'<', '>', '&', '"', '\0', 'x', '/', '\xff'};
    for (size_t i = 0; i < len; i += 13) {
        char save = xs[i];
        xs[i] = junk[i % sizeof junk];
        fhir_error err = {0};
        fhir_arena_reset(a);
        fhir_node *n = fhir_xml_parse(a, xs, len, NULL, &err);
        if (n) {
            fhir_buf out;
            fhir_buf_init(&out, 0);
            fhir_xml_write(&out, n, 0, &err); /* may fail on a corrupted value; must not crash */
            fhir_buf_free(&out);
            ok++;
        } else {
            assert_true(err.msg[0] != '\0');
            refused++;
        }
        xs[i] = save;
    }
    printf("  truncated/corrupted inputs: %d parsed, %d refused with an error\n", ok, refused);
    free(xs);
    fhir_arena_free(a);
}

/* libxml2 is not linked: a process maps it (and ICU) only once it reads XML, so this test runs
 * first. Writing needs no libxml2 unless a narrative div is re-parsed. */
static void test_libxml2_loaded_on_first_parse(void **state)
{
    (void)state;
    if (unit_mapped("libxml2.so"))
        fail_msg("libxml2 is mapped before any XML was read");
    static const char doc[] = "<Patient xmlns=\"http://hl7.org/fhir\"><id value=\"p1\"/></Patient>";
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err;
    fhir_node *n = fhir_xml_parse(a, doc, sizeof doc - 1, NULL, &err);
    assert_non_null(n);
    assert_string_equal(fhir_node_str(fhir_node_get(n, "id")), "p1");
    if (!unit_mapped("libxml2.so"))
        fail_msg("libxml2 is not mapped after an XML parse");
    char v[32];
    assert_int_equal(fhir_xml_lib_version(v, sizeof v, &err), 0);
    assert_true(v[0] >= '2' && v[0] <= '9' && strchr(v, '.'));
    fhir_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_libxml2_loaded_on_first_parse),
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_primitives),
        cmocka_unit_test(test_nested_resources_and_div),
        cmocka_unit_test(test_writer_order),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_xxe),
        cmocka_unit_test(test_billion_laughs),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_truncated_and_corrupted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
