/* Unit tests: ZCTA table (header-detected columns, CRLF, blank lines, errors with
 * file:line; the shared Census copy when present), origin fallbacks, ranking by travel time,
 * exclusions (closed, expired accreditation, product/disease), payer demotion, stay-near. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "centers.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "route.h"

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cartgate-route-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *write_tmp(const char *name, const char *content)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    return path;
}

/* Our own tiny table: Census column names, lat/lon in another order than the original,
 * CRLF line ends and the all-tab trailing line the Census file has. Coordinates are
 * rounded positions we chose for the test, not copied from any file. */
static const char *tiny_table =
    "INTPTLONG\tGEOID\tALAND\tINTPTLAT \r\n"
    "-92.47\t55902\t1\t44.02\r\n"
    "-87.63\t60601\t1\t41.89\r\n"
    "-118.25\t90012\t1\t34.06\r\n"
    "\t\t\t\r\n";

static void test_zcta_tiny_table(void **state)
{
    (void)state;
    fhir_error err = {0};
    route_zcta *z = route_zcta_load(write_tmp("tiny.txt", tiny_table), &err);
    assert_non_null(z);
    assert_int_equal(route_zcta_count(z), 3);
    double lat, lon;
    assert_int_equal(route_zcta_lookup(z, "60601", &lat, &lon), 0);
    assert_true(lat > 41.88 && lat < 41.90 && lon < -87.62 && lon > -87.64);
    assert_int_equal(route_zcta_lookup(z, "55902-1234", &lat, &lon), 0);
    assert_int_equal(route_zcta_lookup(z, "99999", &lat, &lon), -1);
    assert_int_equal(route_zcta_lookup(z, "abcde", &lat, &lon), -1);
    route_zcta_free(z);
}

static void test_zcta_errors(void **state)
{
    (void)state;
    fhir_error err = {0};
    const char *p = write_tmp("bad1.txt", "GEOID\tINTPTLAT\tINTPTLONG\n55902\t44.0\t-92.4\n"
                                          "5590\t44.0\t-92.4\n");
    assert_null(route_zcta_load(p, &err));
    assert_non_null(strstr(err.msg, "bad1.txt:3:"));
    assert_non_null(strstr(err.msg, "5-digit"));
    p = write_tmp("bad2.txt", "GEOID\tINTPTLAT\tINTPTLONG\n55902\t44.0\n");
    assert_null(route_zcta_load(p, &err));
    assert_non_null(strstr(err.msg, "bad2.txt:2:"));
    p = write_tmp("bad3.txt", "GEOID\tLAT\tLON\n55902\t44.0\t-92.4\n");
    assert_null(route_zcta_load(p, &err));
    assert_non_null(strstr(err.msg, "bad3.txt:1: header"));
    p = write_tmp("bad4.txt", "GEOID\tINTPTLAT\tINTPTLONG\n55902\t44.0\t-92.4\n55902\t44.1\t-92.4\n");
    assert_null(route_zcta_load(p, &err));
    assert_non_null(strstr(err.msg, "bad4.txt:3: ZCTA 55902 repeated (also at line 2)"));
    p = write_tmp("bad5.txt", "GEOID\tINTPTLAT\tINTPTLONG\n55902\t94.0\t-92.4\n");
    assert_null(route_zcta_load(p, &err));
    assert_non_null(strstr(err.msg, "bad5.txt:2: bad latitude"));
}

static void test_zcta_shared_census_copy(void **state)
{
    (void)state;
    const char *dir = getenv("CARTGATE_SHARED_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/zcta-centroids/Gaz_zcta_national.txt", dir ? dir : "");
    if (!dir || access(path, R_OK) != 0)
        skip();
    fhir_error err = {0};
    route_zcta *z = route_zcta_load(path, &err);
    if (!z)
        fail_msg("%s", err.msg);
    assert_int_equal(route_zcta_count(z), 33120); /* SOURCES.md: 33,120 ZCTAs */
    double lat, lon;
    assert_int_equal(route_zcta_lookup(z, "10001", &lat, &lon), 0); /* 40.750672, -73.997281 */
    assert_true(lat > 40.7506 && lat < 40.7508 && lon > -73.9974 && lon < -73.9972);
    assert_int_equal(route_zcta_lookup(z, "55905", &lat, &lon), 0); /* 44.055948, -92.525906 */
    assert_true(lat > 44.0559 && lat < 44.0560 && lon > -92.5260 && lon < -92.5258);

    /* nearest center from a real ZIP centroid with the sample directory */
    centers_dir *d = centers_load("conf/centers.json", &err);
    assert_non_null(d);
    route_origin o;
    route_patient_location loc = {.zip = "10001"};
    assert_int_equal(route_resolve_origin(&loc, z, NULL, &o, &err), 0);
    assert_int_equal(o.source, ROUTE_ORIGIN_ZIP);
    fhir_arena *a = fhir_arena_new(0);
    route_need need = {.product = "axi-cel", .disease = "dlbcl_nos", .indication = "axi-cel:lbcl"};
    route_result r;
    assert_int_equal(route_rank(a, d, &o, &need, 1, NULL, fhir_clock_days_from_civil(2026, 11, 27),
                                NULL, &r, &err), 0);
    assert_true(r.n_candidates > 0);
    assert_string_equal(r.candidates[0].center->id, "east-river-nyc");
    assert_true(r.candidates[0].distance_km < 10);
    fhir_arena_free(a);
    centers_free(d);
    route_zcta_free(z);
}

/* A directory of four fictional centers around Rochester MN / Chicago. */
static const char *dir_json =
    "{\"centers\": [\n"
    " {\"id\": \"near-closed\", \"name\": \"N\", \"fhir\": {\"base\": \"https://n.example.org\"},"
    "  \"position\": {\"lat\": 44.03, \"lon\": -92.46}, \"address\": {\"city\": \"Rochester\", \"state\": \"MN\", \"postalCode\": \"55902\"},"
    "  \"accreditations\": [{\"body\": \"FACT\", \"expires\": \"2030-01-01\"}], \"products\": [\"axi-cel\"],"
    "  \"diseases\": [\"dlbcl_nos\"], \"capacity\": \"closed\", \"contact\": {\"phone\": \"1\"}},\n"
    " {\"id\": \"near-expired\", \"name\": \"E\", \"fhir\": {\"base\": \"https://e.example.org\"},"
    "  \"position\": {\"lat\": 44.05, \"lon\": -92.50}, \"address\": {\"city\": \"Rochester\", \"state\": \"MN\", \"postalCode\": \"55902\"},"
    "  \"accreditations\": [{\"body\": \"FACT\", \"expires\": \"2026-11-26\"}], \"products\": [\"axi-cel\"],"
    "  \"diseases\": [\"dlbcl_nos\"], \"capacity\": \"open\", \"contact\": {\"phone\": \"1\"}},\n"
    " {\"id\": \"mid-myeloma\", \"name\": \"M\", \"fhir\": {\"base\": \"https://m.example.org\"},"
    "  \"position\": {\"lat\": 44.97, \"lon\": -93.23}, \"address\": {\"city\": \"Minneapolis\", \"state\": \"MN\", \"postalCode\": \"55455\"},"
    "  \"accreditations\": [{\"body\": \"FACT\", \"expires\": \"2030-01-01\"}], \"products\": [\"ide-cel\"],"
    "  \"diseases\": [\"mm\"], \"capacity\": \"open\", \"contact\": {\"phone\": \"1\"}},\n"
    " {\"id\": \"mid-payers\", \"name\": \"P\", \"fhir\": {\"base\": \"https://p.example.org\"},"
    "  \"position\": {\"lat\": 44.60, \"lon\": -92.90}, \"address\": {\"city\": \"Minneapolis\", \"state\": \"MN\", \"postalCode\": \"55455\"},"
    "  \"accreditations\": [{\"body\": \"FACT\", \"expires\": \"2030-01-01\"}], \"products\": [\"axi-cel\"],"
    "  \"diseases\": [\"dlbcl_nos\"], \"payers\": [\"Medicare\"], \"capacity\": \"open\", \"contact\": {\"phone\": \"1\"}},\n"
    " {\"id\": \"far-chicago\", \"name\": \"C\", \"fhir\": {\"base\": \"https://c.example.org\"},"
    "  \"position\": {\"lat\": 41.89, \"lon\": -87.62}, \"address\": {\"city\": \"Chicago\", \"state\": \"IL\", \"postalCode\": \"60611\"},"
    "  \"accreditations\": [{\"body\": \"FACT\", \"expires\": \"2030-01-01\"}], \"products\": [\"axi-cel\", \"ide-cel\"],"
    "  \"diseases\": [\"dlbcl_nos\", \"mm\"], \"capacity\": \"limited\", \"contact\": {\"phone\": \"1\"}}\n"
    "]}\n";

static const char *find_exclusion(const route_result *r, const char *id)
{
    for (size_t i = 0; i < r->n_exclusions; i++)
        if (!strcmp(r->exclusions[i].center->id, id))
            return r->exclusions[i].reason;
    return NULL;
}

static void test_rank_from_zip(void **state)
{
    (void)state;
    fhir_error err = {0};
    route_zcta *z = route_zcta_load(write_tmp("tiny.txt", tiny_table), &err);
    centers_dir *d = centers_load_mem("dir.json", dir_json, strlen(dir_json), &err);
    assert_non_null(z);
    if (!d)
        fail_msg("%s", err.msg);
    route_origin o;
    route_patient_location loc = {.zip = "55902"};
    assert_int_equal(route_resolve_origin(&loc, z, NULL, &o, &err), 0);
    fhir_arena *a = fhir_arena_new(0);
    route_need need = {.product = "axi-cel", .disease = "dlbcl_nos", .indication = "axi-cel:lbcl_2l"};
    route_result r;
    int64_t today = fhir_clock_days_from_civil(2026, 11, 27);
    assert_int_equal(route_rank(a, d, &o, &need, 1, NULL, today, NULL, &r, &err), 0);
    /* closed and expired (yesterday) are skipped even though nearest; the myeloma-only
     * center serves nothing here */
    assert_int_equal(r.n_candidates, 2);
    assert_string_equal(r.candidates[0].center->id, "mid-payers");
    assert_string_equal(r.candidates[1].center->id, "far-chicago");
    assert_true(r.candidates[0].travel_minutes < r.candidates[1].travel_minutes);
    assert_false(r.candidates[0].beyond_stay_near);  /* ~73 km */
    assert_true(r.candidates[1].beyond_stay_near);   /* ~440 km */
    assert_non_null(strstr(r.candidates[1].reason, "14-day"));
    assert_int_equal(r.n_exclusions, 3);
    assert_non_null(strstr(find_exclusion(&r, "near-closed"), "closed"));
    assert_non_null(strstr(find_exclusion(&r, "near-expired"), "FACT expired 2026-11-26"));
    assert_non_null(strstr(find_exclusion(&r, "mid-myeloma"), "does not offer axi-cel"));

    /* the same on the day it expires: still valid (inclusive) */
    assert_int_equal(route_rank(a, d, &o, &need, 1, NULL, today - 1, NULL, &r, &err), 0);
    assert_string_equal(r.candidates[0].center->id, "near-expired");

    /* a known payer mismatch demotes; an unknown payer does not */
    assert_int_equal(route_rank(a, d, &o, &need, 1, "Aetna", today, NULL, &r, &err), 0);
    assert_string_equal(r.candidates[0].center->id, "far-chicago");
    assert_true(r.candidates[1].payer_demoted);
    assert_int_equal(route_rank(a, d, &o, &need, 1, "medicare", today, NULL, &r, &err), 0);
    assert_string_equal(r.candidates[0].center->id, "mid-payers");

    /* the explanation names the origin and every exclusion, in text and JSON */
    fhir_buf b;
    fhir_buf_init(&b, 1 << 20);
    assert_int_equal(route_explain_text(&r, &b), 0);
    const char *t = fhir_buf_cstr(&b);
    assert_non_null(strstr(t, "centroid of ZIP 55902"));
    assert_non_null(strstr(t, "near-closed: capacity is closed"));
    assert_non_null(strstr(t, "near-expired: no unexpired accreditation"));
    assert_non_null(strstr(t, "mid-myeloma: serves none"));
    fhir_buf_free(&b);
    fhir_node *j = route_explain_json(a, &r);
    assert_non_null(j);
    assert_int_equal(fhir_node_count(fhir_node_get(j, "excluded")), 3);
    assert_string_equal(fhir_node_path_str(j, "candidates[0].center"), "mid-payers");
    assert_string_equal(fhir_node_path_str(j, "origin.source"), "zip");

    /* disease filter: a myeloma need goes to the myeloma centers */
    route_need mm = {.product = "ide-cel", .disease = "mm", .indication = "ide-cel:mm_3l"};
    assert_int_equal(route_rank(a, d, &o, &mm, 1, NULL, today, NULL, &r, &err), 0);
    assert_int_equal(r.n_candidates, 2);
    assert_string_equal(r.candidates[0].center->id, "mid-myeloma");

    /* with the criteria, the reasons name products and indications in words, not keys */
    elig_ruleset *rs = elig_load_dir("conf/criteria", &err);
    if (!rs)
        fail_msg("criteria: %s", err.msg);
    route_params words = {.rules = rs};
    route_need two[2] = {{.product = "axi-cel", .disease = "dlbcl_nos", .indication = "axi-cel:LBCL-3L"},
                         {.product = "liso-cel", .disease = "dlbcl_nos", .indication = "liso-cel:LBCL-3L"}};
    assert_int_equal(route_rank(a, d, &o, two, 2, NULL, today, &words, &r, &err), 0);
    assert_int_equal(r.n_candidates, 2);
    assert_non_null(strstr(r.candidates[0].reason, "; serves Yescarta (axi-cel): large B-cell lymphoma, third line "
                                                   "or later;"));
    assert_null(strstr(r.candidates[0].reason, "LBCL"));
    const char *why = find_exclusion(&r, "mid-myeloma");
    assert_non_null(strstr(why, "does not offer Yescarta (axi-cel)"));
    assert_null(strstr(why, "axi-cel:"));
    /* a center that offers the product but not the disease: the disease in words */
    route_need mmw = {.product = "ide-cel", .disease = "dlbcl_nos", .indication = "ide-cel:MM-3L"};
    assert_int_equal(route_rank(a, d, &o, &mmw, 1, NULL, today, &words, &r, &err), 0);
    why = find_exclusion(&r, "mid-myeloma");
    if (!strstr(why, "offers Abecma (ide-cel) but does not list diffuse large B-cell lymphoma"))
        fail_msg("%s", why);
    elig_ruleset_free(rs);
    fhir_arena_free(a);
    centers_free(d);
    route_zcta_free(z);
}

/* The tiny ZIP table, the test directory (dir_json) and the label criteria, as the ranking
 * tests use them; fixture_free gives them back. */
static void fixture_load(route_zcta **z, centers_dir **d, elig_ruleset **rs)
{
    fhir_error err = {0};
    *z = route_zcta_load(write_tmp("tiny.txt", tiny_table), &err);
    *d = *z ? centers_load_mem("dir.json", dir_json, strlen(dir_json), &err) : NULL;
    *rs = *d ? elig_load_dir("conf/criteria", &err) : NULL;
    if (!*rs)
        fail_msg("%s", err.msg);
}

static void fixture_free(route_zcta *z, centers_dir *d, elig_ruleset *rs)
{
    elig_ruleset_free(rs);
    centers_free(d);
    route_zcta_free(z);
}

/* route_explain_text of a ranking, in arena a (NULL when the ranking fails). */
static const char *ranked_text(fhir_arena *a, const centers_dir *d, const route_origin *o, const route_need *needs,
                               size_t n, const char *payer, int64_t day, const route_params *p)
{
    fhir_error err = {0};
    route_result r;
    if (route_rank(a, d, o, needs, n, payer, day, p, &r, &err))
        return NULL;
    fhir_buf b;
    fhir_buf_init(&b, 1 << 20);
    assert_int_equal(route_explain_text(&r, &b), 0);
    const char *s = fhir_arena_strdup(a, fhir_buf_cstr(&b));
    fhir_buf_free(&b);
    return s;
}

/* The directory's part of a ranking remembered (route_cache): every answer the same as without
 * it, word for word, across origins, payers, needs and days; the needs' strings may die after
 * the call (the cache keeps copies); another day ranks again (accreditations expire); another
 * directory (a reload) is never answered from a cache made for the first. */
static void test_rank_cache(void **state)
{
    (void)state;
    fhir_error err = {0};
    route_zcta *z;
    centers_dir *d;
    elig_ruleset *rs;
    fixture_load(&z, &d, &rs);
    fhir_arena *a = fhir_arena_new(0);
    route_cache *c = route_cache_new(d);
    int64_t today = fhir_clock_days_from_civil(2026, 11, 27);
    const char *zips[] = {"55902", "60601", "90012"};
    const char *payers[] = {NULL, "Aetna", "medicare"};
    for (int words = 0; words < 2; words++) {
        route_params plain = {.rules = words ? rs : NULL}, cached = plain;
        cached.cache = c;
        for (size_t zi = 0; zi < 3; zi++) {
            route_origin o;
            route_patient_location loc = {.zip = zips[zi]};
            assert_int_equal(route_resolve_origin(&loc, z, NULL, &o, &err), 0);
            for (size_t pi = 0; pi < 3; pi++)
                for (int64_t day = today - 1; day <= today; day++)
                    for (int set = 0; set < 3; set++) {
                        /* the strings of the needs, in a buffer overwritten after each call */
                        char buf[4][32];
                        snprintf(buf[0], 32, "%s", set == 1 ? "ide-cel" : "axi-cel");
                        snprintf(buf[1], 32, "%s", set == 1 ? "mm" : "dlbcl_nos");
                        snprintf(buf[2], 32, "%s", set == 1 ? "ide-cel:MM-3L" : "axi-cel:LBCL-3L");
                        snprintf(buf[3], 32, "liso-cel:LBCL-3L");
                        route_need nd[2] = {{.product = buf[0], .disease = buf[1], .indication = buf[2]},
                                            {.product = "liso-cel", .disease = buf[1], .indication = buf[3]}};
                        size_t n = set == 2 ? 2 : 1;
                        const char *want = ranked_text(a, d, &o, nd, n, payers[pi], day, &plain);
                        const char *got = ranked_text(a, d, &o, nd, n, payers[pi], day, &cached);
                        memset(buf, 'x', sizeof buf);
                        assert_non_null(want);
                        assert_non_null(got);
                        assert_string_equal(got, want);
                    }
        }
    }
    /* 2 wordings x 2 days x 3 sets of needs filled it; everything else came from it */
    assert_int_equal(route_cache_fills(c), 12);
    assert_int_equal(route_cache_hits(c), 2 * 3 * 3 * 2 * 3 - 12);

    /* a reload: the closed center opened; the old directory's cache is not used for it */
    char *dir2 = strdup(dir_json);
    char *closed = strstr(dir2, "\"closed\"");
    assert_non_null(closed);
    memcpy(closed, "\"open\"  ", 8);
    centers_dir *d2 = centers_load_mem("dir2.json", dir2, strlen(dir2), &err);
    if (!d2)
        fail_msg("%s", err.msg);
    route_origin o;
    route_patient_location loc = {.zip = "55902"};
    assert_int_equal(route_resolve_origin(&loc, z, NULL, &o, &err), 0);
    route_need need = {.product = "axi-cel", .disease = "dlbcl_nos", .indication = "axi-cel:LBCL-3L"};
    route_params old = {.cache = c};
    route_result r;
    size_t hits = route_cache_hits(c);
    assert_int_equal(route_rank(a, d, &o, &need, 1, NULL, today, &old, &r, &err), 0);
    assert_int_equal(route_cache_hits(c), hits + 1);
    assert_string_equal(r.candidates[0].center->id, "mid-payers");
    assert_int_equal(route_rank(a, d2, &o, &need, 1, NULL, today, &old, &r, &err), 0);
    assert_int_equal(route_cache_hits(c), hits + 1);
    assert_string_equal(r.candidates[0].center->id, "near-closed");
    route_cache *c2 = route_cache_new(d2);
    route_params fresh = {.cache = c2};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(route_rank(a, d2, &o, &need, 1, NULL, today, &fresh, &r, &err), 0);
        assert_string_equal(r.candidates[0].center->id, "near-closed");
        assert_int_equal(r.n_exclusions, 2);
    }
    assert_int_equal(route_cache_fills(c2), 1);
    assert_int_equal(route_cache_hits(c2), 1);
    /* a daemon running for months: once full (days gone by), rankings go without the cache
     * (answers still right), until it is settled between batches; then it remembers again */
    route_cache *c3 = route_cache_new(d2);
    route_params p3 = {.cache = c3};
    assert_false(route_cache_settle(c3));
    for (int64_t k = 0; k < ROUTE_CACHE_ENTRIES + 3; k++) {
        assert_int_equal(route_rank(a, d2, &o, &need, 1, NULL, today + k, &p3, &r, &err), 0);
        assert_string_equal(r.candidates[0].center->id, "near-closed");
    }
    assert_int_equal(route_cache_fills(c3), ROUTE_CACHE_ENTRIES);
    size_t h3 = route_cache_hits(c3);
    assert_int_equal(route_rank(a, d2, &o, &need, 1, NULL, today + ROUTE_CACHE_ENTRIES + 1, &p3, &r, &err), 0);
    assert_int_equal(route_cache_hits(c3), h3); /* not remembered: full */
    assert_true(route_cache_settle(c3));
    assert_false(route_cache_settle(c3));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(route_rank(a, d2, &o, &need, 1, NULL, today + ROUTE_CACHE_ENTRIES + 1, &p3, &r, &err), 0);
        assert_string_equal(r.candidates[0].center->id, "near-closed");
        assert_int_equal(r.n_exclusions, 2);
    }
    assert_int_equal(route_cache_fills(c3), ROUTE_CACHE_ENTRIES + 1);
    assert_int_equal(route_cache_hits(c3), h3 + 1);
    route_cache_free(c3);
    route_cache_free(c2);
    centers_free(d2);
    free(dir2);
    route_cache_free(c);
    fhir_arena_free(a);
    fixture_free(z, d, rs);
}

/* The reason sentence of candidate i of a stored route (route_json_reason), in arena a. */
static const char *stored_reason(fhir_arena *a, const fhir_node *route, size_t i)
{
    fhir_buf b;
    fhir_buf_init(&b, ROUTE_EXPLANATION_MAX);
    assert_int_equal(route_json_reason(route, fhir_node_at(fhir_node_get(route, "candidates"), i), &b), 0);
    const char *s = fhir_arena_strdup(a, fhir_buf_cstr(&b));
    fhir_buf_free(&b);
    return s;
}

/* route_explain_json as a referral stores it: text, read back. */
static const fhir_node *stored(fhir_arena *a, const route_result *r)
{
    char *t = fhir_json_to_string(route_explain_json(a, r), FHIR_JSON_COMPACT, 0);
    assert_non_null(t);
    fhir_error err = {0};
    const fhir_node *n = fhir_json_parse(a, t, strlen(t), NULL, &err);
    free(t);
    assert_non_null(n);
    return n;
}

/* A stored route keeps no candidate's sentence, only what it is made of; the sentence written
 * from that is the one the ranking wrote, word for word: payers listed and accepted, listed and
 * not accepted (demoted, the payer named), not listed; beyond stay-near; capacity limited. The
 * form shown (API, --json) has each candidate's reason last and none of the helper members. */
static void test_stored_route_reasons(void **state)
{
    (void)state;
    fhir_error err = {0};
    route_zcta *z;
    centers_dir *d;
    elig_ruleset *rs;
    fixture_load(&z, &d, &rs);
    route_origin o;
    route_patient_location loc = {.zip = "55902"};
    assert_int_equal(route_resolve_origin(&loc, z, NULL, &o, &err), 0);
    fhir_arena *a = fhir_arena_new(0);
    route_params words = {.rules = rs};
    route_need two[2] = {{.product = "axi-cel", .disease = "dlbcl_nos", .indication = "axi-cel:LBCL-3L"},
                         {.product = "liso-cel", .disease = "dlbcl_nos", .indication = "liso-cel:LBCL-3L"}};
    route_result r;
    int64_t today = fhir_clock_days_from_civil(2026, 11, 27);
    const char *payers[] = {"Aetna", "medicare", NULL};
    for (size_t p = 0; p < 3; p++) {
        assert_int_equal(route_rank(a, d, &o, two, 2, payers[p], today, &words, &r, &err), 0);
        assert_int_equal(r.n_candidates, 2);
        const fhir_node *j = stored(a, &r);
        for (size_t i = 0; i < r.n_candidates; i++) {
            const fhir_node *c = fhir_node_at(fhir_node_get(j, "candidates"), i);
            assert_null(fhir_node_get(c, "reason"));
            assert_string_equal(stored_reason(a, j, i), r.candidates[i].reason);
        }
        /* both serve the same: their words are kept once */
        assert_int_equal(fhir_node_count(fhir_node_get(j, "serves")), 1);
        assert_true(fhir_node_get(j, "payer") == NULL || p == 0);
        const fhir_node *shown = route_json_shown(a, j);
        for (size_t i = 0; i < r.n_candidates; i++) {
            const fhir_node *c = fhir_node_at(fhir_node_get(shown, "candidates"), i);
            assert_string_equal(fhir_node_str(c->last), r.candidates[i].reason);
            assert_string_equal(c->last->key, "reason");
            assert_null(fhir_node_get(c, "km"));
            assert_null(fhir_node_get(c, "serves"));
            assert_null(fhir_node_get(c, "payers_listed"));
        }
        assert_null(fhir_node_get(shown, "serves"));
        assert_null(fhir_node_get(shown, "payer"));
        assert_int_equal(fhir_node_count(fhir_node_get(shown, "excluded")), 3);
        if (p == 0) { /* the sentences as route.c wrote them before routes stopped keeping them */
            assert_string_equal(stored_reason(a, j, 0),
                                "460 km great-circle, about 449 min by road; serves Yescarta (axi-cel): large "
                                "B-cell lymphoma, third line or later; FACT valid through 2030-01-01; capacity "
                                "limited (expect a longer wait, call intake); accepted payers not listed (not "
                                "held against it); beyond 120 min: the patient will need to stay near the center "
                                "for the 14-day post-infusion monitoring period");
            assert_string_equal(stored_reason(a, j, 1),
                                "73 km great-circle, about 71 min by road; serves Yescarta (axi-cel): large "
                                "B-cell lymphoma, third line or later; FACT valid through 2030-01-01; payer "
                                "\"Aetna\" is not on the center's accepted list (ranked after centers without a "
                                "payer mismatch)");
            /* the rest, for a page that says distance, time and lodging beside the name */
            fhir_buf rest;
            fhir_buf_init(&rest, 1 << 16);
            assert_int_equal(route_json_reason_rest(j, fhir_node_at(fhir_node_get(j, "candidates"), 0), &rest), 0);
            assert_string_equal(fhir_buf_cstr(&rest),
                                "serves Yescarta (axi-cel): large B-cell lymphoma, third line or later; FACT "
                                "valid through 2030-01-01; capacity limited (expect a longer wait, call intake); "
                                "accepted payers not listed (not held against it)");
            fhir_buf_free(&rest);
        }
        /* ranked without sentences (as a proposal ranks): none written, the same route kept,
         * the same text explanation */
        fhir_buf t1, t2;
        fhir_buf_init(&t1, 1 << 20);
        fhir_buf_init(&t2, 1 << 20);
        assert_int_equal(route_explain_text(&r, &t1), 0);
        char *kept = fhir_json_to_string(route_explain_json(a, &r), FHIR_JSON_COMPACT, 0);
        route_params bare = {.rules = rs, .no_reasons = true};
        route_result rb;
        assert_int_equal(route_rank(a, d, &o, two, 2, payers[p], today, &bare, &rb, &err), 0);
        assert_null(rb.candidates[0].reason);
        assert_int_equal(route_explain_text(&rb, &t2), 0);
        assert_string_equal(fhir_buf_cstr(&t2), fhir_buf_cstr(&t1));
        char *kept2 = fhir_json_to_string(route_explain_json(a, &rb), FHIR_JSON_COMPACT, 0);
        assert_string_equal(kept2, kept);
        free(kept);
        free(kept2);
        fhir_buf_free(&t1);
        fhir_buf_free(&t2);
        if (p == 1)
            assert_string_equal(stored_reason(a, j, 0),
                                "73 km great-circle, about 71 min by road; serves Yescarta (axi-cel): large "
                                "B-cell lymphoma, third line or later; FACT valid through 2030-01-01");
    }
    /* candidates serving different things: each distinct text once, in order of first use, and
     * every candidate's sentence with its own words (A B B A -> "serves" [A, B]) */
    route_candidate four[4] = {r.candidates[0], r.candidates[1], r.candidates[1], r.candidates[0]};
    const char *words_of[4] = {"words A", "words B", "words B", "words A"};
    for (size_t i = 0; i < 4; i++)
        four[i].serves = words_of[i];
    r.candidates = four;
    r.n_candidates = 4;
    const fhir_node *j4 = stored(a, &r);
    const fhir_node *sv = fhir_node_get(j4, "serves");
    assert_int_equal(fhir_node_count(sv), 2);
    assert_string_equal(fhir_node_str(fhir_node_at(sv, 0)), "words A");
    assert_string_equal(fhir_node_str(fhir_node_at(sv, 1)), "words B");
    for (size_t i = 0; i < 4; i++) {
        char want[64];
        snprintf(want, sizeof want, "; serves %s;", words_of[i]);
        if (!strstr(stored_reason(a, j4, i), want))
            fail_msg("candidate %zu: %s", i, stored_reason(a, j4, i));
    }
    fhir_arena_free(a);
    fixture_free(z, d, rs);
}

/* The route a referral stores, as text. */
static char *route_text(const route_result *r)
{
#ifdef ROUTE_RECORD_OLD /* how the fixture was recorded: the tree, then its text */
    fhir_arena *a = fhir_arena_new(0);
    char *t = fhir_json_to_string(route_explain_json(a, r), FHIR_JSON_COMPACT, 0);
    fhir_arena_free(a);
    return t;
#else
    fhir_buf b;
    fhir_buf_init(&b, ROUTE_JSON_MAX);
    assert_int_equal(route_explain_write(r, &b), 0);
    return fhir_buf_steal(&b, NULL);
#endif
}

/* route_explain_write writes, byte for byte, the text the route's tree made before it was
 * written directly (tests/fixtures/route-explain.txt, recorded from that tree, one route a line):
 * an origin from a ZIP and from coordinates (no "zip"), payers demoted (the route's "payer"),
 * accepted and unknown, exclusions, candidates serving A B B A; and route_explain_json reads
 * it back to the same text. */
static void test_route_text_recorded(void **state)
{
    (void)state;
    fhir_error err = {0};
    route_zcta *z;
    centers_dir *d;
    elig_ruleset *rs;
    fixture_load(&z, &d, &rs);
    fhir_arena *a = fhir_arena_new(0);
    route_params words = {.rules = rs, .no_reasons = true};
    route_need two[2] = {{.product = "axi-cel", .disease = "dlbcl_nos", .indication = "axi-cel:LBCL-3L"},
                         {.product = "liso-cel", .disease = "dlbcl_nos", .indication = "liso-cel:LBCL-3L"}};
    int64_t today = fhir_clock_days_from_civil(2026, 11, 27);
    route_patient_location locs[2] = {{.zip = "55902"}, {.has_geo = true, .lat = 41.9, .lon = -87.7}};
    const char *payers[] = {"Aetna", "medicare", NULL};
    fhir_buf got;
    fhir_buf_init(&got, 1u << 20);
    route_result r;
    for (size_t l = 0; l < 2; l++)
        for (size_t p = 0; p < 3; p++) {
            route_origin o;
            assert_int_equal(route_resolve_origin(&locs[l], z, NULL, &o, &err), 0);
            assert_int_equal(route_rank(a, d, &o, two, 2, payers[p], today, &words, &r, &err), 0);
            char *t = route_text(&r);
            char *back = fhir_json_to_string(route_explain_json(a, &r), FHIR_JSON_COMPACT, 0);
            assert_string_equal(back, t);
            fhir_buf_printf(&got, "%s\n", t);
            free(t);
            free(back);
        }
    route_candidate four[4] = {r.candidates[0], r.candidates[1], r.candidates[1], r.candidates[0]};
    const char *words_of[4] = {"words A", "words B", "words B", "words A"};
    for (size_t i = 0; i < 4; i++)
        four[i].serves = words_of[i];
    r.candidates = four;
    r.n_candidates = 4;
    char *t = route_text(&r);
    fhir_buf_printf(&got, "%s\n", t);
    free(t);
#ifdef ROUTE_RECORD_OLD
    FILE *f = fopen("tests/fixtures/route-explain.txt", "wb");
    assert_non_null(f);
    fputs(fhir_buf_cstr(&got), f);
    fclose(f);
#endif
    fhir_buf want;
    fhir_buf_init(&want, 1u << 20);
    assert_int_equal(fhir_buf_read_file(&want, "tests/fixtures/route-explain.txt", &err), 0);
    assert_int_equal(got.len, want.len);
    assert_memory_equal(got.data, want.data, got.len);
    assert_non_null(strstr(fhir_buf_cstr(&want), "\"payer\":\"Aetna\"")); /* what the cases cover */
    assert_non_null(strstr(fhir_buf_cstr(&want), "\"source\":\"geolocation\""));
    assert_non_null(strstr(fhir_buf_cstr(&want), "\"serves\":[\"words A\",\"words B\"]"));
    fhir_buf_free(&got);
    fhir_buf_free(&want);
    fhir_arena_free(a);
    fixture_free(z, d, rs);
}

/* A route stored by an older version (each candidate with its "reason") keeps its text, and is
 * shown as it is. */
static void test_older_route_reasons(void **state)
{
    (void)state;
    static const char old[] =
        "{\"origin\":{\"source\":\"site\",\"lat\":41.590000,\"lon\":-93.620000,\"note\":\"n\"},"
        "\"assumptions\":{\"detour_factor\":1.30,\"avg_speed_kmh\":80.0,\"stay_near_minutes\":120,"
        "\"stay_near_days\":14},\"evaluated_on\":\"2026-11-01\",\"candidates\":[{\"rank\":1,\"center\":"
        "\"c1\",\"name\":\"C\",\"city\":\"X\",\"state\":\"IA\",\"distance_km\":12.5,\"travel_minutes\":"
        "12,\"capacity\":\"open\",\"accreditation\":{\"body\":\"FACT\",\"expires\":\"2030-01-01\"},"
        "\"indications\":[\"axi-cel:LBCL-3L\"],\"payer_demoted\":false,\"beyond_stay_near\":false,"
        "\"reason\":\"as it was written then\"}],\"excluded\":[{\"center\":\"c2\",\"reason\":\"closed\"}]}";
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    const fhir_node *j = fhir_json_parse(a, old, strlen(old), NULL, &err);
    assert_non_null(j);
    assert_string_equal(stored_reason(a, j, 0), "as it was written then");
    char *t = fhir_json_to_string(route_json_shown(a, j), FHIR_JSON_COMPACT, 0);
    assert_non_null(t);
    assert_string_equal(t, old);
    free(t);
    fhir_arena_free(a);
}

static void test_origin_fallbacks(void **state)
{
    (void)state;
    fhir_error err = {0};
    route_zcta *z = route_zcta_load(write_tmp("tiny.txt", tiny_table), &err);
    route_site site = {.has_location = true, .lat = 43.0, .lon = -91.0, .name = "Home Hospital"};
    route_origin o;
    route_patient_location geo = {.has_geo = true, .lat = 45.0, .lon = -93.0, .zip = "55902"};
    assert_int_equal(route_resolve_origin(&geo, z, &site, &o, &err), 0);
    assert_int_equal(o.source, ROUTE_ORIGIN_GEOLOCATION);
    route_patient_location unknown_zip = {.zip = "99999"};
    assert_int_equal(route_resolve_origin(&unknown_zip, z, &site, &o, &err), 0);
    assert_int_equal(o.source, ROUTE_ORIGIN_SITE);
    assert_non_null(strstr(o.note, "ZIP 99999 not in the ZCTA centroid table"));
    assert_true(o.lat == 43.0);
    route_patient_location nothing = {0};
    assert_int_equal(route_resolve_origin(&nothing, NULL, NULL, &o, &err), -1);
    assert_non_null(strstr(err.msg, "cannot place the patient"));
    route_zcta_free(z);
}

static void test_distance_and_time(void **state)
{
    (void)state;
    /* one degree of latitude is ~111.2 km on the 6371 km sphere */
    double km = route_distance_km(40.0, -90.0, 41.0, -90.0);
    assert_true(km > 111.1 && km < 111.3);
    assert_true(route_distance_km(10, 10, 10, 10) == 0.0);
    /* 80 km at detour 1.3 and 80 km/h = 78 min */
    double m = route_travel_minutes(80.0, NULL);
    assert_true(m > 77.99 && m < 78.01);
    route_params p = {.detour_factor = 1.0, .avg_speed_kmh = 60.0};
    m = route_travel_minutes(60.0, &p);
    assert_true(m > 59.99 && m < 60.01);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zcta_tiny_table),
        cmocka_unit_test(test_zcta_errors),
        cmocka_unit_test(test_stored_route_reasons),
        cmocka_unit_test(test_route_text_recorded),
        cmocka_unit_test(test_older_route_reasons),
        cmocka_unit_test(test_zcta_shared_census_copy),
        cmocka_unit_test(test_rank_from_zip),
        cmocka_unit_test(test_rank_cache),
        cmocka_unit_test(test_origin_fallbacks),
        cmocka_unit_test(test_distance_and_time),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
