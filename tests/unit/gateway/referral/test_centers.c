/* Unit tests: center directory loader (the shipped sample, every validation error with its
 * file:line) and the accreditation/product/payer queries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "centers.h"
#include "fhir_clock.h"

#define ONE_CENTER_HEAD                                                                     \
    "{\n"                                                                                   \
    "  \"centers\": [\n"                                                                    \
    "    {\n"                                                                               \
    "      \"id\": \"alpha\",\n"                                                            \
    "      \"name\": \"Alpha (fictional)\",\n"                                              \
    "      \"fhir\": {\"base\": \"https://fhir.alpha.example.org/r4\"},\n"                  \
    "      \"position\": {\"lat\": 44.02, \"lon\": -92.47},\n"                              \
    "      \"address\": {\"city\": \"Rochester\", \"state\": \"MN\", \"postalCode\": \"55902\"},\n"

static const char *good_tail =
    "      \"accreditations\": [{\"body\": \"FACT\", \"expires\": \"2027-01-31\"},\n"
    "                          {\"body\": \"manufacturer:kite\", \"expires\": \"2028-01-31\"}],\n"
    "      \"products\": [\"axi-cel\", \"liso-cel\"],\n"
    "      \"diseases\": [\"dlbcl_nos\", \"fl\"],\n"
    "      \"payers\": [\"Medicare\"],\n"
    "      \"capacity\": \"limited\",\n"
    "      \"contact\": {\"email\": \"intake@alpha.example.org\"}\n"
    "    }\n"
    "  ]\n"
    "}\n";

static centers_dir *load_str(const char *s, fhir_error *err)
{
    return centers_load_mem("mem.json", s, strlen(s), err);
}

static void test_sample_directory_loads(void **state)
{
    (void)state;
    fhir_error err = {0};
    centers_dir *d = centers_load("conf/centers.json", &err);
    assert_non_null(d);
    assert_true(d->n >= 10 && d->n <= 20);
    for (size_t i = 0; i < d->n; i++) {
        const centers_center *c = &d->centers[i];
        assert_non_null(strstr(c->fhir_base, "example.org"));
        assert_non_null(strstr(c->name, "fictional"));
        assert_true(c->lat > 24 && c->lat < 50 && c->lon > -125 && c->lon < -66);
        assert_true(c->n_products > 0 && c->n_accreditations > 0);
        assert_true(c->line > 0);
    }
    /* the sample has one closed center and one whose accreditations have all expired */
    int closed = 0, expired = 0;
    int64_t day = fhir_clock_days_from_civil(2026, 11, 27);
    for (size_t i = 0; i < d->n; i++) {
        closed += d->centers[i].capacity == CENTERS_CLOSED;
        expired += centers_valid_accreditation(&d->centers[i], day) == NULL;
    }
    assert_int_equal(closed, 1);
    assert_int_equal(expired, 1);
    centers_free(d);
}

static void test_queries(void **state)
{
    (void)state;
    char buf[4096];
    snprintf(buf, sizeof buf, "%s%s", ONE_CENTER_HEAD, good_tail);
    fhir_error err = {0};
    centers_dir *d = load_str(buf, &err);
    assert_non_null(d);
    assert_int_equal(d->n, 1);
    const centers_center *c = centers_find(d, "alpha");
    assert_non_null(c);
    assert_null(centers_find(d, "beta"));
    assert_int_equal(c->line, 3);
    assert_int_equal(c->capacity, CENTERS_LIMITED);
    assert_true(centers_offers_product(c, "axi-cel"));
    assert_false(centers_offers_product(c, "ide-cel"));
    assert_true(centers_treats_disease(c, "fl"));
    assert_false(centers_treats_disease(c, "mm"));
    assert_true(c->payers_listed);
    assert_true(centers_accepts_payer(c, "medicare"));
    assert_false(centers_accepts_payer(c, "Aetna"));
    /* FACT preferred while valid; the manufacturer one after FACT expires; none after both */
    const centers_accreditation *a =
        centers_valid_accreditation(c, fhir_clock_days_from_civil(2026, 6, 1));
    assert_non_null(a);
    assert_string_equal(a->body, "FACT");
    a = centers_valid_accreditation(c, fhir_clock_days_from_civil(2027, 1, 31)); /* inclusive */
    assert_string_equal(a->body, "FACT");
    a = centers_valid_accreditation(c, fhir_clock_days_from_civil(2027, 2, 1));
    assert_string_equal(a->body, "manufacturer:kite");
    assert_null(centers_valid_accreditation(c, fhir_clock_days_from_civil(2028, 2, 1)));
    centers_free(d);
}

/* Each broken variant must fail with "mem.json:LINE:" naming the right line and cause. */
static void expect_error(const char *tail, const char *line_prefix, const char *needle)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s%s", ONE_CENTER_HEAD, tail);
    fhir_error err = {0};
    centers_dir *d = load_str(buf, &err);
    if (d)
        fail_msg("expected an error containing \"%s\"", needle);
    if (strncmp(err.msg, line_prefix, strlen(line_prefix)) || !strstr(err.msg, needle))
        fail_msg("error \"%s\" lacks \"%s\" / \"%s\"", err.msg, line_prefix, needle);
}

static void test_errors_carry_file_and_line(void **state)
{
    (void)state;
    /* line 9 = accreditations, 10 = products, ... (see ONE_CENTER_HEAD: 8 lines) */
    expect_error("      \"accreditations\": [{\"body\": \"FACT\", \"expires\": \"2027-02-30\"}],\n"
                 "      \"products\": [\"axi-cel\"], \"diseases\": [\"fl\"], \"capacity\": \"open\",\n"
                 "      \"contact\": {\"phone\": \"+1-555-0100\"} } ] }\n",
                 "mem.json:9:", "not a valid YYYY-MM-DD");
    expect_error("      \"accreditations\": [],\n"
                 "      \"products\": [\"axi-cel\", \"kymriah\"], \"diseases\": [\"fl\"], \"capacity\": \"open\",\n"
                 "      \"contact\": {\"phone\": \"+1-555-0100\"} } ] }\n",
                 "mem.json:10:", "unknown product key");
    expect_error("      \"accreditations\": [],\n"
                 "      \"products\": [\"axi-cel\"], \"diseases\": [\"fl\"],\n"
                 "      \"capacity\": \"full\",\n"
                 "      \"contact\": {\"phone\": \"+1-555-0100\"} } ] }\n",
                 "mem.json:11:", "capacity \"full\"");
    expect_error("      \"accreditations\": [],\n"
                 "      \"products\": [\"axi-cel\"], \"diseases\": [\"lymphoma\"], \"capacity\": \"open\",\n"
                 "      \"contact\": {\"phone\": \"+1-555-0100\"} } ] }\n",
                 "mem.json:10:", "unknown disease key");
    expect_error("      \"accreditations\": [],\n"
                 "      \"products\": [\"axi-cel\"], \"diseases\": [\"fl\"], \"capacity\": \"open\",\n"
                 "      \"contact\": {\"name\": \"x\"} } ] }\n",
                 "mem.json:11:", "phone or an email");
    expect_error("      \"accreditations\": [],\n"
                 "      \"products\": [\"axi-cel\"], \"diseases\": [\"fl\"], \"capacity\": \"open\",\n"
                 "      \"colour\": \"red\",\n"
                 "      \"contact\": {\"phone\": \"+1-555-0100\"} } ] }\n",
                 "mem.json:11:", "unknown field \"colour\"");
    /* a missing required field points at the center object (line 3) */
    expect_error("      \"products\": [\"axi-cel\"], \"diseases\": [\"fl\"], \"capacity\": \"open\",\n"
                 "      \"contact\": {\"phone\": \"+1-555-0100\"} } ] }\n",
                 "mem.json:3:", "\"accreditations\" array is required");
    /* JSON syntax errors keep the parser's position, as FILE:LINE like every other error */
    fhir_error err = {0};
    assert_null(load_str("{\"centers\": [\n{\"id\": }]}", &err));
    assert_non_null(strstr(err.msg, "mem.json:2: malformed JSON"));
}

static void test_bad_values(void **state)
{
    (void)state;
    const char *bad_lat =
        "{\"centers\": [{\"id\": \"a\", \"name\": \"A\", \"fhir\": {\"base\": \"https://x.example.org\"},\n"
        "\"position\": {\"lat\": 123.0, \"lon\": 0},\n"
        "\"address\": {\"city\": \"c\", \"state\": \"s\", \"postalCode\": \"1\"}}]}";
    fhir_error err = {0};
    assert_null(load_str(bad_lat, &err));
    assert_non_null(strstr(err.msg, "mem.json:2:"));
    assert_non_null(strstr(err.msg, "outside"));

    const char *secret =
        "{\"centers\": [{\"id\": \"a\", \"name\": \"A\",\n"
        "\"fhir\": {\"base\": \"https://x.example.org\", \"auth\": {\"type\": \"bearer\", \"token\": \"s3cret\"}}}]}";
    assert_null(load_str(secret, &err));
    assert_non_null(strstr(err.msg, "mem.json:2:"));
    assert_non_null(strstr(err.msg, "unknown field \"token\""));

    const char *dup =
        "{\"centers\": [\n"
        "{\"id\": \"a\", \"name\": \"A\", \"fhir\": {\"base\": \"https://x.example.org\"}, \"position\": {\"lat\": 1, \"lon\": 1},"
        " \"address\": {\"city\": \"c\", \"state\": \"s\", \"postalCode\": \"1\"}, \"accreditations\": [],"
        " \"products\": [\"axi-cel\"], \"diseases\": [\"fl\"], \"capacity\": \"open\", \"contact\": {\"phone\": \"1\"}},\n"
        "{\"id\": \"a\", \"name\": \"A\", \"fhir\": {\"base\": \"https://x.example.org\"}, \"position\": {\"lat\": 1, \"lon\": 1},"
        " \"address\": {\"city\": \"c\", \"state\": \"s\", \"postalCode\": \"1\"}, \"accreditations\": [],"
        " \"products\": [\"axi-cel\"], \"diseases\": [\"fl\"], \"capacity\": \"open\", \"contact\": {\"phone\": \"1\"}}]}";
    assert_null(load_str(dup, &err));
    assert_non_null(strstr(err.msg, "mem.json:3:"));
    assert_non_null(strstr(err.msg, "line 2"));

    assert_null(centers_load("/nonexistent/centers.json", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/centers.json: cannot open"));
}

/* The transport rule: plain http:// center endpoints on hosts that are not loopback are
 * listed with FILE:LINE (the daemon and check-config refuse them unless
 * centers.insecure_plain_http); https and loopback http are not. */
static void test_cleartext_endpoints(void **state)
{
    (void)state;
    const char *text =
        "{\"centers\": [\n"
        "{\"id\": \"a\", \"name\": \"A\", \"fhir\": {\"base\": \"https://x.example.org\"}, \"position\": {\"lat\": 1, \"lon\": 1},"
        " \"address\": {\"city\": \"c\", \"state\": \"s\", \"postalCode\": \"1\"}, \"accreditations\": [],"
        " \"products\": [\"axi-cel\"], \"diseases\": [\"fl\"], \"capacity\": \"open\", \"contact\": {\"phone\": \"1\"}},\n"
        "{\"id\": \"b\", \"name\": \"B\", \"fhir\": {\n"
        "  \"base\": \"http://center.example:8080/fhir\",\n"
        "  \"auth\": {\"type\": \"smart-backend\", \"client_id\": \"c\", \"key_file\": \"k.pem\",\n"
        "           \"token_url\": \"http://auth.center.example/token\"}},\n"
        " \"position\": {\"lat\": 1, \"lon\": 1},"
        " \"address\": {\"city\": \"c\", \"state\": \"s\", \"postalCode\": \"1\"}, \"accreditations\": [],"
        " \"products\": [\"axi-cel\"], \"diseases\": [\"fl\"], \"capacity\": \"open\", \"contact\": {\"phone\": \"1\"}},\n"
        "{\"id\": \"c\", \"name\": \"C\", \"fhir\": {\"base\": \"http://127.0.0.1:9/fhir\"}, \"position\": {\"lat\": 1, \"lon\": 1},"
        " \"address\": {\"city\": \"c\", \"state\": \"s\", \"postalCode\": \"1\"}, \"accreditations\": [],"
        " \"products\": [\"axi-cel\"], \"diseases\": [\"fl\"], \"capacity\": \"open\", \"contact\": {\"phone\": \"1\"}}]}";
    fhir_error err = {0};
    centers_dir *d = load_str(text, &err);
    assert_non_null(d);
    fhir_buf b;
    fhir_buf_init(&b, 1u << 16);
    assert_int_equal(centers_cleartext_endpoints(d, &b), 2);
    assert_string_equal(fhir_buf_cstr(&b),
        "mem.json:4: center \"b\": fhir.base \"http://center.example:8080/fhir\" is plain http:// to "
        "center.example (not a loopback host): referrals would cross the network in clear; use https, or set "
        "centers.insecure_plain_http in the configuration for a private network you control\n"
        "mem.json:6: center \"b\": fhir.auth.token_url \"http://auth.center.example/token\" is plain http:// to "
        "auth.center.example (not a loopback host): referrals would cross the network in clear; use https, or "
        "set centers.insecure_plain_http in the configuration for a private network you control\n");
    fhir_buf_free(&b);
    centers_free(d);
    d = centers_load("conf/centers.json", &err); /* the shipped sample: https everywhere */
    assert_non_null(d);
    assert_int_equal(centers_cleartext_endpoints(d, NULL), 0);
    centers_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_directory_loads),
        cmocka_unit_test(test_queries),
        cmocka_unit_test(test_errors_carry_file_and_line),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_cleartext_endpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
