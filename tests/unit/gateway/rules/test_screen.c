/* Unit tests for the one screening path (gateway/rules/screen.h): which indications count for
 * a verdict (eligible -> only the eligible ones; possibly -> the possible ones when asked;
 * otherwise none); screen_patient() on real resources gives the same verdict JSON as the
 * profile and engine called step by step, for both 1L anchors of the shipped criteria; the
 * streaming path (map_stream, every way it groups) gives the same verdicts as the in-memory
 * path (map_group) on synth cohorts and the shared Synthea data; screen_sort hands rows back
 * in id order from memory and from spilled runs; a verdict made from part of the chart
 * (screen_set_records) says so in its JSON and first explanation line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "elig.h"
#include "fhir_clock.h"
#include "map_group.h"
#include "map_stream.h"
#include "screen.h"
#include "screen_sort.h"
#include "synth.h"

/* ---- which indications count ----------------------------------------------------------- */

/* Indication <product>:LBCL-3L requiring the criteria in req (a JSON array of criteria). */
static char *criteria(const char *product, const char *req)
{
    char *b = malloc(2048);
    assert_non_null(b);
    snprintf(b, 2048,
             "{\"id\": \"%s:LBCL-3L\",\n"
             " \"product\": {\"key\": \"%s\", \"generic\": \"g\", \"brand\": \"B\"},\n"
             " \"indication\": {\"key\": \"LBCL-3L\", \"description\": \"d\"},\n"
             " \"diseases\": [\"dlbcl_nos\"],\n"
             " \"source\": {\"document\": \"PI\", \"revision\": \"2026-02\",\n"
             "             \"url\": \"https://example.org/pi\"},\n"
             " \"requires\": {\"all\": %s}}\n",
             product, product, req);
    return b;
}

typedef struct two {
    elig_ruleset *rs;
    elig_factset *fs;
    elig_result *r;
    int a, b; /* indices of a-cel and b-cel */
} two;

/* a-cel needs lines >= 2; b-cel needs lines >= 2 and ecog <= 1. */
static void two_load(two *t)
{
    char *a = criteria("a-cel", "[{\"label\": \"l\", \"fact\": \"lines\", \"op\": \">=\", "
                                "\"value\": 2}]");
    char *b = criteria("b-cel", "[{\"label\": \"l\", \"fact\": \"lines\", \"op\": \">=\", "
                                "\"value\": 2},\n"
                                "  {\"label\": \"e\", \"fact\": \"ecog\", \"op\": \"<=\", "
                                "\"value\": 1}]");
    elig_source src[2] = {{"a.json", a, strlen(a)}, {"b.json", b, strlen(b)}};
    fhir_error err;
    t->rs = elig_load_sources(src, 2, &err);
    free(a);
    free(b);
    if (!t->rs)
        fail_msg("criteria: %s", err.msg);
    t->fs = elig_factset_new(t->rs);
    t->r = elig_result_new(t->rs);
    t->a = elig_ruleset_find(t->rs, "a-cel:LBCL-3L");
    t->b = elig_ruleset_find(t->rs, "b-cel:LBCL-3L");
    assert_true(t->a >= 0 && t->b >= 0);
}

static void two_free(two *t)
{
    elig_result_free(t->r);
    elig_factset_free(t->fs);
    elig_ruleset_free(t->rs);
}

/* Evaluates the patient with the given lines / ecog (< 0 = unknown) and returns the
 * indications that count as a bit set (bit 0 a-cel, bit 1 b-cel). */
static unsigned counted(two *t, double lines, double ecog, bool with_possible)
{
    map_fact fl = {.known = lines >= 0, .type = MAP_FACT_NUMBER, .num = lines};
    map_fact fe = {.known = ecog >= 0, .type = MAP_FACT_NUMBER, .num = ecog};
    elig_factset_clear(t->fs);
    assert_int_equal(elig_factset_set(t->fs, "lines", &fl), 0);
    assert_int_equal(elig_factset_set(t->fs, "ecog", &fe), 0);
    elig_evaluate(t->rs, t->fs, 20000, t->r);
    size_t idx[ELIG_MAX_INDICATIONS];
    size_t n = screen_indications(t->rs, t->r, with_possible, idx, ELIG_MAX_INDICATIONS);
    unsigned bits = 0;
    for (size_t k = 0; k < n; k++) {
        if (k)
            assert_true(idx[k] > idx[k - 1]); /* rule-set order */
        bits |= (int)idx[k] == t->a ? 1u : (int)idx[k] == t->b ? 2u : 4u;
    }
    return bits;
}

static void test_indications_that_count(void **state)
{
    (void)state;
    two t;
    two_load(&t);
    for (int wp = 0; wp < 2; wp++) {
        /* eligible for both */
        assert_int_equal(counted(&t, 3, 0, wp), 3);
        /* eligible for a-cel, possibly for b-cel: only what it is eligible for */
        assert_int_equal(elig_result_ind_category(t.r, (size_t)t.a), ELIG_ELIGIBLE);
        assert_int_equal(counted(&t, 2, -1, wp), 1);
        assert_int_equal(elig_result_ind_category(t.r, (size_t)t.b), ELIG_POSSIBLY_ELIGIBLE);
        /* eligible for a-cel, not for b-cel */
        assert_int_equal(counted(&t, 2, 3, wp), 1);
        /* not eligible for either */
        assert_int_equal(counted(&t, 1, 0, wp), 0);
    }
    /* possibly eligible for both: counted only when possible verdicts are asked for */
    assert_int_equal(counted(&t, -1, 0, true), 3);
    assert_int_equal(elig_result_category(t.r), ELIG_POSSIBLY_ELIGIBLE);
    assert_int_equal(counted(&t, -1, 0, false), 0);
    /* max bounds what is written, not the count */
    size_t idx[1];
    counted(&t, 3, 0, false);
    assert_int_equal(screen_indications(t.rs, t.r, false, idx, 1), 2);
    assert_int_equal((int)idx[0], t.a < t.b ? t.a : t.b);
    two_free(&t);
}

/* ---- screen_patient == the steps by hand ------------------------------------------------ */

static void by_hand(const map_tables *tb, const elig_ruleset *rs, map_profile_opts o,
                    const fhir_node *const *res, size_t n, const char *pid, fhir_buf *out)
{
    fhir_error err;
    elig_profile_opts_apply(rs, &o);
    map_profile *p = map_profile_build(tb, res, n, &o, &err);
    if (!p)
        fail_msg("profile: %s", err.msg);
    elig_factset *fs = elig_factset_new(rs);
    elig_result *r = elig_result_new(rs);
    elig_profile_source src;
    elig_profile_source_init(&src, p, &o);
    elig_factset_fill(fs, elig_profile_fact, &src);
    elig_evaluate(rs, fs, o.as_of_days, r);
    assert_int_equal(elig_result_write_json(rs, fs, r, pid, out), 0);
    elig_result_free(r);
    elig_factset_free(fs);
    map_profile_free(p);
}

static void test_screen_matches_steps(void **state)
{
    (void)state;
    fhir_error err;
    elig_ruleset *rs = elig_load_dir("conf/criteria", &err);
    if (!rs)
        fail_msg("criteria: %s", err.msg);
    map_tables *tb = map_tables_load(NULL, &err);
    if (!tb)
        fail_msg("tables: %s", err.msg);
    map_group *g = map_group_new(NULL);
    assert_int_equal(map_group_add_path(g, "tests/fixtures/demo-dlbcl-bundle.json", &err), 0);
    assert_true(map_group_count(g) >= 1);
    int64_t day;
    assert_int_equal(fhir_clock_parse_date("2026-11-01", &day), 0);
    static const char *const anchors[] = {"start", "end"};
    size_t seen_eligible = 0;
    for (int k = 0; k < 2; k++) {
        assert_int_equal(elig_ruleset_set_param(rs, "lbcl_1l_anchor", anchors[k], &err), 0);
        map_profile_opts o;
        map_profile_opts_default(&o);
        o.as_of_days = day;
        o.relapse_anchor_end = !k; /* the screen must override this from the criteria */
        screen *s = screen_new(tb, rs, &o);
        assert_null(screen_result(s));
        assert_int_equal(screen_opts(s)->relapse_anchor_end, k);
        for (size_t i = 0; i < map_group_count(g); i++) {
            size_t n;
            const fhir_node *const *res = map_group_resources(g, i, &n);
            const char *pid = map_group_patient_id(g, i);
            assert_int_equal(screen_patient(s, res, n, &err), 0);
            assert_string_equal(map_profile_patient_id(screen_profile(s)), pid);
            fhir_buf a, b;
            fhir_buf_init(&a, 1u << 20);
            fhir_buf_init(&b, 1u << 20);
            assert_int_equal(screen_write_json(s, pid, &a), 0);
            by_hand(tb, rs, o, res, n, pid, &b);
            assert_string_equal(fhir_buf_cstr(&a), fhir_buf_cstr(&b));
            seen_eligible += elig_result_category(screen_result(s)) != ELIG_NOT_ELIGIBLE;
            fhir_buf_free(&a);
            fhir_buf_free(&b);
        }
        /* a patient without any patient reference is an error, not a verdict */
        assert_int_not_equal(screen_patient(s, NULL, 0, &err), 0);
        assert_true(err.msg[0] != 0);
        assert_null(screen_result(s));
        fhir_buf out;
        fhir_buf_init(&out, 1024);
        assert_int_equal(screen_write_json(s, "x", &out), -1);
        fhir_buf_free(&out);
        screen_free(s);
    }
    assert_true(seen_eligible > 0); /* the fixture is a candidate: the verdicts are not empty */
    map_group_free(g);
    map_tables_free(tb);
    elig_ruleset_free(rs);
}

/* ---- a verdict made from part of the chart says so ------------------------------------- */

/* screen_set_records with fewer read than cached: the verdict JSON carries "partial" and its
 * explanation (and the clinician's text) starts with the sentence saying so, the rest as
 * before; all read (or none said) changes nothing; the next screen_patient clears it. */
static void test_partial_records(void **state)
{
    (void)state;
    fhir_error err;
    elig_ruleset *rs = elig_load_dir("conf/criteria", &err);
    if (!rs)
        fail_msg("criteria: %s", err.msg);
    map_tables *tb = map_tables_load(NULL, &err);
    if (!tb)
        fail_msg("tables: %s", err.msg);
    map_group *g = map_group_new(NULL);
    assert_int_equal(map_group_add_path(g, "tests/fixtures/demo-dlbcl-bundle.json", &err), 0);
    size_t n;
    const fhir_node *const *res = map_group_resources(g, 0, &n);
    const char *pid = map_group_patient_id(g, 0);
    map_profile_opts o;
    map_profile_opts_default(&o);
    assert_int_equal(fhir_clock_parse_date("2026-11-01", &o.as_of_days), 0);
    screen *s = screen_new(tb, rs, &o);
    fhir_buf whole, part, again, ex;
    fhir_buf_init(&whole, 1u << 20);
    fhir_buf_init(&part, 1u << 20);
    fhir_buf_init(&again, 1u << 20);
    fhir_buf_init(&ex, 1u << 20);
    assert_int_equal(screen_patient(s, res, n, &err), 0);
    screen_set_records(s, &(elig_records){n, n}); /* all read: nothing said */
    assert_false(elig_result_partial(screen_result(s), NULL));
    assert_int_equal(screen_write_verdict_json(s, pid, &whole), 0);
    screen_set_records(s, &(elig_records){100000, 120000});
    elig_records got;
    assert_true(elig_result_partial(screen_result(s), &got));
    assert_int_equal(got.read, 100000);
    assert_int_equal(got.cached, 120000);
    assert_int_equal(screen_write_verdict_json(s, pid, &part), 0);
    static const char line[] =
        "Only the first 100,000 of 120,000 records in this chart were read; the verdict may miss facts.";
    const char *w = fhir_buf_cstr(&whole), *p = fhir_buf_cstr(&part);
    assert_non_null(strstr(p, ",\"partial\":{\"read\":100000,\"cached\":120000},\"urgency\":"));
    assert_null(strstr(w, "\"partial\""));
    assert_null(strstr(w, "Only the first"));
    char first[256];
    snprintf(first, sizeof first, "\"explanation\":[\"%s\",", line);
    assert_non_null(strstr(p, first));
    /* the rest of the verdict is the whole chart's: without the member and the line, the same */
    char *strip = strdup(p);
    char *m = strstr(strip, ",\"partial\":");
    char *u = strstr(m, ",\"urgency\":");
    memmove(m, u, strlen(u) + 1);
    char *l = strstr(strip, line);
    memmove(l, l + strlen(line) + 3, strlen(l + strlen(line) + 3) + 1); /* the line, quote, comma, quote */
    assert_string_equal(strip, w);
    free(strip);
    assert_int_equal(elig_result_write_explanation(rs, screen_facts(s), screen_result(s), &ex), 0);
    assert_true(!strncmp(fhir_buf_cstr(&ex), "  ", 2) && !strncmp(fhir_buf_cstr(&ex) + 2, line, sizeof line - 1));
    /* the next patient (the same one again) starts whole */
    assert_int_equal(screen_patient(s, res, n, &err), 0);
    assert_false(elig_result_partial(screen_result(s), NULL));
    assert_int_equal(screen_write_verdict_json(s, pid, &again), 0);
    assert_string_equal(fhir_buf_cstr(&again), w);
    fhir_buf_free(&whole);
    fhir_buf_free(&part);
    fhir_buf_free(&again);
    fhir_buf_free(&ex);
    screen_free(s);
    map_group_free(g);
    map_tables_free(tb);
    elig_ruleset_free(rs);
}

/* ---- streaming vs in memory: the same verdicts ------------------------------------------- */

typedef struct verdicts {
    screen *sc;
    screen_sort *rows;
    fhir_buf line;
} verdicts;

static int verdict_row(void *ud, const char *id, const fhir_node *const *res, size_t n,
                       uint64_t order, fhir_error *err)
{
    verdicts *v = ud;
    fhir_buf_reset(&v->line);
    fhir_error perr;
    if (screen_patient(v->sc, res, n, &perr))
        fhir_buf_printf(&v->line, "error: %s", perr.msg);
    else
        assert_int_equal(screen_write_json(v->sc, id, &v->line), 0);
    return screen_sort_add(v->rows, id, v->line.data ? v->line.data : "", v->line.len, err);
}

static void verdicts_restart(void *ud)
{
    screen_sort_clear(((verdicts *)ud)->rows);
}

static int append_row(void *ud, const char *key, const char *row, size_t len)
{
    fhir_buf *b = ud;
    fhir_buf_printf(b, "%s\t%.*s\n", key, (int)len, row);
    return 0;
}

/* All verdict lines for the input, sorted by patient id: through map_group when mode < 0,
 * else through map_stream in that mode. The sorter spills (small cap) so its merge is used. */
static char *all_verdicts(const elig_ruleset *rs, const map_tables *tb, const char *path,
                          int mode, size_t budget, size_t *patients)
{
    map_profile_opts o;
    map_profile_opts_default(&o);
    assert_int_equal(fhir_clock_parse_date("2026-11-01", &o.as_of_days), 0);
    verdicts v = {screen_new(tb, rs, &o), screen_sort_new(16u << 10, NULL), {0}};
    fhir_buf_init(&v.line, 4u << 20);
    fhir_error err;
    if (mode < 0) {
        map_group *g = map_group_new(NULL);
        assert_int_equal(map_group_add_path(g, path, &err), 0);
        for (size_t i = 0; i < map_group_count(g); i++) {
            size_t n;
            const fhir_node *const *res = map_group_resources(g, i, &n);
            assert_int_equal(verdict_row(&v, map_group_patient_id(g, i), res, n, i, &err), 0);
        }
        map_group_free(g);
    } else {
        map_stream_opts so = {.mode = (map_stream_mode)mode, .budget = budget};
        const char *paths[] = {path};
        if (map_stream_run(paths, 1, &so, verdict_row, verdicts_restart, &v, NULL, &err))
            fail_msg("map_stream %s: %s", path, err.msg);
    }
    *patients = screen_sort_count(v.rows);
    fhir_buf all;
    fhir_buf_init(&all, 0);
    assert_int_equal(screen_sort_each(v.rows, append_row, &all, &err), 0);
    fhir_buf_free(&v.line);
    screen_sort_free(v.rows);
    screen_free(v.sc);
    char *r = fhir_buf_steal(&all, NULL);
    return r ? r : strdup("");
}

static void same_verdicts(const elig_ruleset *rs, const map_tables *tb, const char *path)
{
    size_t n_ref, n;
    char *ref = all_verdicts(rs, tb, path, -1, 0, &n_ref);
    assert_true(n_ref > 0);
    static const struct {
        map_stream_mode mode;
        size_t budget;
    } runs[] = {{MAP_STREAM_AUTO, 0}, {MAP_STREAM_GROUPED, 0}, {MAP_STREAM_SPILL, 256u << 10}};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        char *got = all_verdicts(rs, tb, path, (int)runs[r].mode, runs[r].budget, &n);
        if (strcmp(got, ref))
            fail_msg("%s: streaming (mode %d) and in-memory verdicts differ", path,
                     (int)runs[r].mode);
        assert_int_equal(n, n_ref);
        free(got);
    }
    free(ref);
}

static void test_stream_and_memory_agree(void **state)
{
    (void)state;
    fhir_error err;
    elig_ruleset *rs = elig_load_dir("conf/criteria", &err);
    map_tables *tb = map_tables_load(NULL, &err);
    assert_non_null(rs);
    assert_non_null(tb);
    char dir[] = "/tmp/cartgate-screentest-XXXXXX";
    assert_non_null(mkdtemp(dir));
    synth_opts so;
    synth_opts_default(&so);
    so.patients = 150;
    so.seed = 11;
    char p[600];
    snprintf(p, sizeof p, "%s/ndjson", dir);
    assert_int_equal(synth_write_cohort(&so, p, NULL, &err), 0);
    same_verdicts(rs, tb, p);
    so.patients = 40;
    so.format = SYNTH_FORMAT_BUNDLE;
    snprintf(p, sizeof p, "%s/bundles", dir);
    assert_int_equal(synth_write_cohort(&so, p, NULL, &err), 0);
    same_verdicts(rs, tb, p);
    same_verdicts(rs, tb, "tests/fixtures/demo-dlbcl-bundle.json");
    const char *base = getenv("CARTGATE_SHARED_DATA");
    if (base) {
        static const char *const sub[] = {"bulk-ndjson-synthea/10-patients",
                                          "synthea-r4-patient-bundles"};
        for (size_t i = 0; i < 2; i++) {
            snprintf(p, sizeof p, "%s/%s", base, sub[i]);
            if (access(p, R_OK) == 0)
                same_verdicts(rs, tb, p);
        }
    }
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    map_tables_free(tb);
    elig_ruleset_free(rs);
}

/* ---- screen_sort ----------------------------------------------------------------------- */

static int collect(void *ud, const char *key, const char *row, size_t len)
{
    fhir_buf *b = ud;
    assert_int_equal(len, strlen(key) + 2);
    fhir_buf_printf(b, "%s|", key);
    return 0;
}

static int collect_rows(void *ud, const char *key, const char *row, size_t len)
{
    fhir_buf_printf(ud, "%s=%.*s|", key, (int)len, row);
    return 0;
}

static void test_sort_rows(void **state)
{
    (void)state;
    fhir_error err;
    for (int small = 0; small < 2; small++) {
        /* 2000 keys added in a scrambled order; rows hold a NUL byte */
        screen_sort *s = screen_sort_new(small ? 1024 : 0, NULL);
        for (unsigned i = 0; i < 2000; i++) {
            char key[32], row[40];
            snprintf(key, sizeof key, "p%05u", (i * 7919u) % 2000u);
            size_t kl = strlen(key);
            memcpy(row, key, kl);
            row[kl] = 0;
            row[kl + 1] = 'x';
            assert_int_equal(screen_sort_add(s, key, row, kl + 2, &err), 0);
        }
        assert_int_equal(screen_sort_count(s), 2000);
        if (small)
            assert_true(screen_sort_runs(s) > 10);
        else
            assert_int_equal(screen_sort_runs(s), 0);
        for (int again = 0; again < 2; again++) { /* may be read twice (table widths, rows) */
            fhir_buf b;
            fhir_buf_init(&b, 0);
            assert_int_equal(screen_sort_each(s, collect, &b, &err), 0);
            const char *t = fhir_buf_cstr(&b);
            for (unsigned i = 0; i < 2000; i++) {
                char want[16];
                snprintf(want, sizeof want, "p%05u|", i);
                assert_memory_equal(t + 7 * i, want, 7);
            }
            fhir_buf_free(&b);
        }
        screen_sort_clear(s);
        assert_int_equal(screen_sort_count(s), 0);
        screen_sort_free(s);
    }
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* More runs than are merged at once: one temporary file holds them all (one descriptor),
 * merged in a pass first, in order, equal keys in the order added; rows added after a read
 * join the next one. */
static void test_sort_many_runs(void **state)
{
    (void)state;
    fhir_error err;
    int fds_before = open_fds();
    screen_sort *s = screen_sort_new(256, NULL);
    const unsigned n = 12000; /* ~ 20 bytes a record, ~ 13 a run: ~ 900 runs, one merge pass */
    for (unsigned i = 0; i < n; i++) {
        char key[32], row[32];
        snprintf(key, sizeof key, "p%05u", (i * 7919u) % (n / 2)); /* every key twice */
        snprintf(row, sizeof row, "%u", i);
        assert_int_equal(screen_sort_add(s, key, row, strlen(row), &err), 0);
    }
    assert_true(screen_sort_runs(s) > 8 * (size_t)SCREEN_SORT_MAX_MERGE);
    if (fds_before > 0)
        assert_true(open_fds() <= fds_before + 1);
    for (int again = 0; again < 2; again++) {
        if (again) /* a late row joins the next read */
            assert_int_equal(screen_sort_add(s, "p99999", "late", 4, &err), 0);
        fhir_buf b;
        fhir_buf_init(&b, 0);
        assert_int_equal(screen_sort_each(s, collect_rows, &b, &err), 0);
        fhir_buf want;
        fhir_buf_init(&want, 0);
        for (unsigned k = 0; k < n / 2; k++) {
            /* the two rows of key k, in the order they were added */
            unsigned first = n, second = n;
            for (unsigned i = 0; i < n; i++)
                if ((i * 7919u) % (n / 2) == k) {
                    if (first == n)
                        first = i;
                    else
                        second = i;
                }
            fhir_buf_printf(&want, "p%05u=%u|p%05u=%u|", k, first, k, second);
        }
        if (again)
            fhir_buf_puts(&want, "p99999=late|");
        assert_string_equal(fhir_buf_cstr(&b), fhir_buf_cstr(&want));
        fhir_buf_free(&b);
        fhir_buf_free(&want);
    }
    screen_sort_free(s);
}

/* Rows added in key order (the sorted merge's case) are written as they come, one run continuing
 * the other; a row out of order afterwards still lands in its place (after equal keys). */
static void test_sort_in_order(void **state)
{
    (void)state;
    fhir_error err;
    screen_sort *s = screen_sort_new(512, NULL);
    const unsigned n = 3000;
    for (unsigned i = 0; i < n; i++) {
        char key[32], row[32];
        snprintf(key, sizeof key, "p%05u", i / 2); /* every key twice, in order */
        snprintf(row, sizeof row, "%u", i);
        assert_int_equal(screen_sort_add(s, key, row, strlen(row), &err), 0);
    }
    assert_true(screen_sort_runs(s) > 10);
    for (int again = 0; again < 2; again++) {
        if (again) /* out of order: the rows from here on are sorted again */
            assert_int_equal(screen_sort_add(s, "p00001", "late", 4, &err), 0);
        fhir_buf b, want;
        fhir_buf_init(&b, 0);
        fhir_buf_init(&want, 0);
        assert_int_equal(screen_sort_each(s, collect_rows, &b, &err), 0);
        for (unsigned i = 0; i < n; i++) {
            fhir_buf_printf(&want, "p%05u=%u|", i / 2, i);
            if (again && i == 3)
                fhir_buf_puts(&want, "p00001=late|");
        }
        assert_string_equal(fhir_buf_cstr(&b), fhir_buf_cstr(&want));
        fhir_buf_free(&b);
        fhir_buf_free(&want);
    }
    screen_sort_free(s);
}

/* Rows in key order under the default cap (a sorted input, `cartgate screen`'s usual case) are
 * written on in chunks of SCREEN_SORT_CHUNK: what is held stays below a chunk and a row; they
 * come back in order, twice; a row out of order after the chunks still merges into its place
 * (after the equal key), and a row larger than a chunk goes through too. */
static void test_sort_in_order_chunks(void **state)
{
    (void)state;
    fhir_error err;
    screen_sort *s = screen_sort_new(0, NULL);
    const unsigned n = 4000;
    char row[600];
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof key, "p%05u", i);
        int w = snprintf(row, sizeof row, "%u:", i);
        memset(row + w, 'a' + (char)(i % 26), sizeof row - (size_t)w);
        assert_int_equal(screen_sort_add(s, key, row, sizeof row, &err), 0);
        total += sizeof row;
        assert_true(screen_sort_held(s) < SCREEN_SORT_CHUNK + sizeof row + 64);
    }
    assert_true(total > 8 * (size_t)SCREEN_SORT_CHUNK);
    assert_true(screen_sort_runs(s) >= 8);
    char *big = malloc(SCREEN_SORT_CHUNK + 100);
    assert_non_null(big);
    memset(big, 'B', SCREEN_SORT_CHUNK + 100);
    assert_int_equal(screen_sort_add(s, "p99998", big, SCREEN_SORT_CHUNK + 100, &err), 0);
    for (int again = 0; again < 3; again++) {
        if (again == 1) /* out of order: joins the next read in its place */
            assert_int_equal(screen_sort_add(s, "p00002", "late", 4, &err), 0);
        fhir_buf b, want;
        fhir_buf_init(&b, 0);
        fhir_buf_init(&want, 0);
        assert_int_equal(screen_sort_each(s, collect_rows, &b, &err), 0);
        for (unsigned i = 0; i < n; i++) {
            int w = snprintf(row, sizeof row, "%u:", i);
            memset(row + w, 'a' + (char)(i % 26), sizeof row - (size_t)w);
            fhir_buf_printf(&want, "p%05u=%.*s|", i, (int)sizeof row, row);
            if (again && i == 2)
                fhir_buf_puts(&want, "p00002=late|");
        }
        fhir_buf_printf(&want, "p99998=%.*s|", (int)SCREEN_SORT_CHUNK + 100, big);
        assert_int_equal(b.len, want.len);
        assert_memory_equal(b.data, want.data, want.len);
        fhir_buf_free(&b);
        fhir_buf_free(&want);
    }
    free(big);
    screen_sort_free(s);
}

/* No temporary file can be made (the folder does not exist): rows in key order are kept in
 * memory up to the cap as before the chunks, and come back in order; past the cap, the spill
 * reports the folder. */
static void test_sort_in_order_no_tmp(void **state)
{
    (void)state;
    fhir_error err;
    screen_sort *s = screen_sort_new(2 * SCREEN_SORT_CHUNK, "/nonexistent/cartgate-no-such-dir");
    char row[1000];
    memset(row, 'r', sizeof row);
    unsigned n = 0;
    const size_t rec = 4 + 6 + 1 + 4 + sizeof row; /* a record as the sorter keeps it */
    for (; (n + 1) * rec <= 2 * SCREEN_SORT_CHUNK; n++) {
        char key[32];
        snprintf(key, sizeof key, "p%05u", n);
        assert_int_equal(screen_sort_add(s, key, row, sizeof row, &err), 0);
    }
    assert_true(screen_sort_held(s) > SCREEN_SORT_CHUNK);
    assert_int_equal(screen_sort_runs(s), 0);
    fhir_buf b;
    fhir_buf_init(&b, 0);
    assert_int_equal(screen_sort_each(s, collect_rows, &b, &err), 0);
    assert_int_equal(b.len, n * (6 + 1 + sizeof row + 1));
    for (unsigned i = 0; i < n; i++) {
        char want[16];
        snprintf(want, sizeof want, "p%05u=", i);
        assert_memory_equal(b.data + i * (6 + 1 + sizeof row + 1), want, 7);
    }
    fhir_buf_free(&b);
    int rc = 0;
    for (unsigned i = n; i < n + 200 && !rc; i++) {
        char key[32];
        snprintf(key, sizeof key, "p%05u", i);
        rc = screen_sort_add(s, key, row, sizeof row, &err);
    }
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err.msg, "cartgate-no-such-dir"));
    screen_sort_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_indications_that_count),
        cmocka_unit_test(test_screen_matches_steps),
        cmocka_unit_test(test_partial_records),
        cmocka_unit_test(test_stream_and_memory_agree),
        cmocka_unit_test(test_sort_rows),
        cmocka_unit_test(test_sort_many_runs),
        cmocka_unit_test(test_sort_in_order),
        cmocka_unit_test(test_sort_in_order_chunks),
        cmocka_unit_test(test_sort_in_order_no_tmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
