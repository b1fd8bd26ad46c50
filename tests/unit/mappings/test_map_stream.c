/* Tests for mappings/map_stream (patients one at a time, in bounded memory): every patient gets
 * the same profile as with map_group (the in-memory path) on synth cohorts (sorted NDJSON,
 * shuffled NDJSON, Bundles) and on the shared Synthea data, through the sorted merge, memory
 * grouping and spill files; the spill path bounds what it holds (more spill files under a
 * smaller cap); types the profile never reads are skipped before parsing; errors keep their
 * cause; and the process's peak RSS on the unsorted path stays within the budget plus a
 * fixed overhead. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "map_group.h"
#include "map_profile.h"
#include "map_stream.h"
#include "synth.h"

static map_tables *T;
static char dir[256];
static map_profile_opts O;

static int setup(void **state)
{
    (void)state;
    fhir_error err;
    T = map_tables_load(NULL, &err);
    map_profile_opts_default(&O);
    int64_t d;
    if (fhir_clock_parse_date("2026-11-01", &d))
        return -1;
    O.as_of_days = d;
    snprintf(dir, sizeof dir, "/tmp/cartgate-streamtest-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    return T ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    map_tables_free(T);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- patients as "id\tprofile JSON" lines, sorted ----------------------------------------- */

typedef struct oid {
    uint64_t order;   /* map_stream's order; map_group's patient index */
    char *id;
} oid;

typedef struct out {
    char **v;
    size_t n, cap;
    oid *ids;         /* the patients in delivery order with their order */
    size_t restarts;  /* on_restart calls */
    size_t fail_at;   /* the callback fails at this patient (1-based; 0 = never) */
} out;

static void out_add(out *o, const char *id, const fhir_node *const *res, size_t n,
                    uint64_t order)
{
    fhir_error err;
    map_profile *p = map_profile_build(T, res, n, &O, &err);
    fhir_buf b;
    fhir_buf_init(&b, 0);
    fhir_buf_printf(&b, "%s\t", id);
    if (p)
        map_profile_write_json(p, &b, 0);
    else
        fhir_buf_printf(&b, "error: %s", err.msg);
    map_profile_free(p);
    /* and the array itself: same resources, same order */
    fhir_buf_puts(&b, "\t");
    for (size_t i = 0; i < n; i++) {
        const char *t = fhir_node_resource_type(res[i]), *rid = fhir_node_resource_id(res[i]);
        fhir_buf_printf(&b, "%s/%s ", t ? t : "?", rid ? rid : "?");
    }
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 256;
        o->v = realloc(o->v, o->cap * sizeof *o->v);
        o->ids = realloc(o->ids, o->cap * sizeof *o->ids);
        assert_non_null(o->v);
        assert_non_null(o->ids);
    }
    o->ids[o->n] = (oid){order, strdup(id)};
    o->v[o->n++] = fhir_buf_steal(&b, NULL);
}

static void out_free(out *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->v[i]);
        free(o->ids[i].id);
    }
    free(o->v);
    free(o->ids);
    memset(o, 0, sizeof *o);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int on_patient(void *ud, const char *id, const fhir_node *const *res, size_t n,
                      uint64_t order, fhir_error *err)
{
    out *o = ud;
    if (o->fail_at && o->n + 1 == o->fail_at)
        return fhir_error_set(err, "stopped by the consumer at patient %s", id);
    out_add(o, id, res, n, order);
    return 0;
}

static void on_restart(void *ud)
{
    out *o = ud;
    for (size_t i = 0; i < o->n; i++) {
        free(o->v[i]);
        free(o->ids[i].id);
    }
    o->n = 0;
    o->restarts++;
}

/* The reference: map_group over the same paths. */
static void by_group(const char *const *paths, size_t np, out *o)
{
    map_group *g = map_group_new(NULL);
    fhir_error err;
    for (size_t i = 0; i < np; i++)
        if (map_group_add_path(g, paths[i], &err))
            fail_msg("map_group %s: %s", paths[i], err.msg);
    for (size_t i = 0; i < map_group_count(g); i++) {
        size_t n;
        const fhir_node *const *res = map_group_resources(g, i, &n);
        out_add(o, map_group_patient_id(g, i), res, n, i);
    }
    map_group_free(g);
    qsort(o->v, o->n, sizeof *o->v, cmp_str);
}

static void by_stream(const char *const *paths, size_t np, map_stream_mode mode, size_t budget,
                      out *o, map_stream_stats *st)
{
    map_stream_opts so = {.budget = budget, .mode = mode};
    fhir_error err;
    if (map_stream_run(paths, np, &so, on_patient, on_restart, o, st, &err))
        fail_msg("map_stream: %s", err.msg);
    qsort(o->v, o->n, sizeof *o->v, cmp_str);
}

static int cmp_oid(const void *a, const void *b)
{
    const oid *x = a, *y = b;
    return (x->order > y->order) - (x->order < y->order);
}

/* a: map_stream, b: map_group. The same patients with the same arrays and profiles, and a's
 * patients sorted by their order are in b's order (how `cartgate profile` prints them). */
static void assert_same(const out *a, const out *b, const char *what)
{
    if (a->n != b->n)
        fail_msg("%s: %zu patients, map_group %zu", what, a->n, b->n);
    oid *s = malloc((a->n ? a->n : 1) * sizeof *s);
    assert_non_null(s);
    memcpy(s, a->ids, a->n * sizeof *s);
    qsort(s, a->n, sizeof *s, cmp_oid);
    for (size_t i = 0; i < a->n; i++) {
        if (i && s[i].order == s[i - 1].order)
            fail_msg("%s: patients %s and %s have the same order", what, s[i - 1].id, s[i].id);
        if (strcmp(s[i].id, b->ids[i].id))
            fail_msg("%s: patient %zu in order is %s, map_group's is %s", what, i, s[i].id,
                     b->ids[i].id);
    }
    free(s);
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i])) {
            size_t k = 0;
            while (a->v[i][k] == b->v[i][k])
                k++;
            size_t from = k > 120 ? k - 120 : 0;
            fail_msg("%s: patient %zu differs at byte %zu:\n  stream ...%.300s\n  group  ...%.300s",
                     what, i, k, a->v[i] + from, b->v[i] + from);
        }
}

/* Streams paths in every mode and compares with map_group. Returns the stats of the AUTO
 * run in *auto_st. */
static void check_all_modes(const char *const *paths, size_t np, const char *what,
                            map_stream_stats *auto_st)
{
    out ref = {0};
    by_group(paths, np, &ref);
    assert_true(ref.n > 0);
    static const struct {
        map_stream_mode mode;
        size_t budget;
        const char *name;
    } runs[] = {
        {MAP_STREAM_AUTO, 0, "auto"},
        {MAP_STREAM_GROUPED, 0, "memory"},
        {MAP_STREAM_GROUPED, 64u << 10, "memory over budget -> spill"},
        {MAP_STREAM_SPILL, 256u << 10, "spill"},
    };
    size_t memory_peak = 0;
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        out o = {0};
        map_stream_stats st;
        by_stream(paths, np, runs[r].mode, runs[r].budget, &o, &st);
        char w[256];
        snprintf(w, sizeof w, "%s (%s, mode %s)", what, runs[r].name, st.mode);
        assert_same(&o, &ref, w);
        assert_int_equal(st.patients, ref.n);
        if (runs[r].mode == MAP_STREAM_SPILL)
            assert_string_equal(st.mode, "spill");
        if (runs[r].mode == MAP_STREAM_GROUPED && !runs[r].budget)
            memory_peak = st.peak_held;
        if (runs[r].mode == MAP_STREAM_GROUPED && runs[r].budget) /* spills when over it */
            assert_string_equal(st.mode, memory_peak > runs[r].budget ? "spill" : "memory");
        if (r == 0 && auto_st)
            *auto_st = st;
        out_free(&o);
    }
    out_free(&ref);
}

static void synth_cohort(const char *sub, size_t patients, synth_format fmt, char *path,
                         size_t cap)
{
    snprintf(path, cap, "%s/%s", dir, sub);
    struct stat sb;
    if (stat(path, &sb) == 0)
        return;
    synth_opts so;
    synth_opts_default(&so);
    so.patients = patients;
    so.format = fmt;
    so.seed = 7;
    fhir_error err;
    if (synth_write_cohort(&so, path, NULL, &err))
        fail_msg("synth: %s", err.msg);
}

static void test_synth_sorted_ndjson(void **state)
{
    (void)state;
    char p[512];
    synth_cohort("sorted", 120, SYNTH_FORMAT_NDJSON, p, sizeof p);
    const char *paths[] = {p};
    map_stream_stats st;
    check_all_modes(paths, 1, "synth NDJSON", &st);
    /* the bulk layout of our synth is sorted by patient: merged, nothing restarted or spilled */
    assert_string_equal(st.mode, "sorted");
    assert_int_equal(st.restarts, 0);
    assert_int_equal(st.spill_files, 0);
}

/* Copies src (NDJSON) to dst with its lines in reverse order. */
static void reverse_lines(const char *src, const char *dst)
{
    FILE *f = fopen(src, "rb");
    assert_non_null(f);
    char **lines = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    while ((got = getline(&line, &lcap, f)) > 0) {
        if (n == cap)
            lines = realloc(lines, (cap = cap ? cap * 2 : 256) * sizeof *lines);
        lines[n++] = strdup(line);
    }
    free(line);
    fclose(f);
    FILE *o = fopen(dst, "wb");
    assert_non_null(o);
    for (size_t i = n; i-- > 0;) {
        fputs(lines[i], o);
        if (lines[i][strlen(lines[i]) - 1] != '\n')
            fputc('\n', o);
        free(lines[i]);
    }
    free(lines);
    fclose(o);
}

static void test_synth_unsorted_ndjson(void **state)
{
    (void)state;
    char p[512], q[512];
    synth_cohort("sorted", 120, SYNTH_FORMAT_NDJSON, p, sizeof p);
    snprintf(q, sizeof q, "%s/reversed", dir);
    mkdir(q, 0700);
    static const char *const types[] = {"Patient", "Condition", "Observation", "Medication",
                                        "MedicationRequest", "MedicationAdministration",
                                        "MedicationStatement", "Procedure", "Coverage"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char s[600], d[600];
        snprintf(s, sizeof s, "%s/%s.000.ndjson", p, types[i]);
        snprintf(d, sizeof d, "%s/%s.000.ndjson", q, types[i]);
        if (access(s, R_OK) == 0)
            reverse_lines(s, d);
    }
    const char *paths[] = {q};
    map_stream_stats st;
    check_all_modes(paths, 1, "reversed synth NDJSON", &st);
    /* the merge sees the order break, restarts once, and groups in memory */
    assert_int_equal(st.restarts, 1);
    assert_string_equal(st.mode, "memory");
}

static void test_synth_bundles(void **state)
{
    (void)state;
    char p[512];
    synth_cohort("bundles", 40, SYNTH_FORMAT_BUNDLE, p, sizeof p);
    const char *paths[] = {p};
    map_stream_stats st;
    check_all_modes(paths, 1, "synth Bundles", &st);
    assert_string_equal(st.mode, "memory");
    assert_int_equal(st.restarts, 0);
}

/* The unsorted path bounds what it holds: under a cap smaller than the cohort the resources
 * are spread over spill files, a smaller cap gives more of them, and what is held at once
 * stays within the cap (plus one patient's trees) while holding the cohort takes far more. */
static void test_spill_bounds_memory(void **state)
{
    (void)state;
    char p[512];
    synth_cohort("sorted", 120, SYNTH_FORMAT_NDJSON, p, sizeof p);
    const char *paths[] = {p};
    map_stream_stats whole, big, small;
    out o = {0};
    by_stream(paths, 1, MAP_STREAM_GROUPED, 64u << 20, &o, &whole);
    out_free(&o);
    assert_string_equal(whole.mode, "memory");
    assert_int_equal(whole.spill_files, 0);
    size_t cap_big = whole.peak_held / 3, cap_small = whole.peak_held / 12;
    by_stream(paths, 1, MAP_STREAM_GROUPED, cap_big, &o, &big);
    out_free(&o);
    by_stream(paths, 1, MAP_STREAM_GROUPED, cap_small, &o, &small);
    out_free(&o);
    assert_string_equal(big.mode, "spill");
    assert_string_equal(small.mode, "spill");
    assert_true(big.spill_files > 1);
    assert_true(small.spill_files > big.spill_files);
    assert_true(small.spill_bytes > 0);
    const size_t one_patient = 512u << 10;
    assert_true(big.peak_held <= cap_big + one_patient);
    assert_true(small.peak_held <= cap_small + one_patient);
    assert_true(small.peak_held < big.peak_held);
    assert_true(big.peak_held < whole.peak_held);
}

/* ---- resident memory of the unsorted path ------------------------------------------------- */

#if defined(__SANITIZE_ADDRESS__)
#define RSS_MEASURABLE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RSS_MEASURABLE 0
#endif
#endif
#ifndef RSS_MEASURABLE
#define RSS_MEASURABLE 1
#endif

/* What the process holds besides the budget's resource trees, at most: the spill files' write
 * buffers (MAP_STREAM_MAX_PARTS x MAP_STREAM_SPILL_BUF) and 4 MiB for the read buffer, the
 * Medication index, parser state and allocator slack (measured: 2.3-2.6 MiB in all). */
#define RSS_OVERHEAD_KIB (MAP_STREAM_MAX_PARTS * (MAP_STREAM_SPILL_BUF >> 10) + (4u << 10))

typedef struct rss_run {
    long grown_kib;       /* VmHWM during the run minus VmRSS before it */
    size_t spill_files, patients;
    char mode[16];
    int status;           /* 0, or 77 when the peak cannot be reset (no clear_refs) */
} rss_run;

static long status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static int count_patient(void *ud, const char *id, const fhir_node *const *res, size_t n,
                         uint64_t order, fhir_error *err)
{
    (void)id, (void)res, (void)n, (void)err;
    (*(size_t *)ud)++;
    return 0;
}

static void count_restart(void *ud)
{
    *(size_t *)ud = 0;
}

/* Streams paths in a child process (its memory is its own) with this budget; the child resets
 * its peak RSS (/proc/self/clear_refs "5") after trimming the allocator, so the peak measures
 * the run alone. Patients are only counted: nothing is kept. */
static rss_run rss_child(const char *const *paths, size_t np, size_t budget)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        rss_run r = {0};
        malloc_trim(0);
        FILE *c = fopen("/proc/self/clear_refs", "w");
        if (!c || fputs("5", c) < 0 || fclose(c) != 0) {
            r.status = 77;
        } else {
            long before = status_kib("VmRSS");
            map_stream_opts so = {.budget = budget, .mode = MAP_STREAM_GROUPED};
            map_stream_stats st;
            fhir_error err;
            size_t patients = 0;
            if (map_stream_run(paths, np, &so, count_patient, count_restart, &patients, &st, &err))
                r.status = 1;
            r.grown_kib = status_kib("VmHWM") - before;
            r.spill_files = st.spill_files;
            r.patients = patients;
            snprintf(r.mode, sizeof r.mode, "%s", st.mode ? st.mode : "?");
        }
        ssize_t w = write(fds[1], &r, sizeof r);
        _exit(w == (ssize_t)sizeof r ? 0 : 1);
    }
    close(fds[1]);
    rss_run r;
    ssize_t got = read(fds[0], &r, sizeof r);
    close(fds[0]);
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    assert_int_equal(got, (ssize_t)sizeof r);
    return r;
}

/* The unsorted path bounds the process's resident memory, not only its own count of held
 * trees: with a small budget the run spills and its peak RSS stays within the budget plus a
 * fixed overhead, a smaller budget spills into more files, while grouping the same cohort in
 * memory grows the process by far more (so the measure can tell them apart). */
static void test_spill_bounds_rss(void **state)
{
    (void)state;
    if (!RSS_MEASURABLE)
        skip(); /* AddressSanitizer's quarantine keeps freed memory resident */
    char p[512];
    synth_cohort("rss", 2000, SYNTH_FORMAT_NDJSON, p, sizeof p);
    const char *paths[] = {p};
    rss_run whole = rss_child(paths, 1, (size_t)1 << 30);
    if (whole.status == 77)
        skip();
    assert_int_equal(whole.status, 0);
    assert_string_equal(whole.mode, "memory");
    assert_int_equal(whole.patients, 2000);
    const size_t small_cap = 1u << 20, big_cap = 4u << 20;
    rss_run big = rss_child(paths, 1, big_cap), small = rss_child(paths, 1, small_cap);
    assert_int_equal(big.status, 0);
    assert_int_equal(small.status, 0);
    assert_string_equal(big.mode, "spill");
    assert_string_equal(small.mode, "spill");
    assert_int_equal(big.patients, 2000);
    assert_int_equal(small.patients, 2000);
    assert_true(small.spill_files > big.spill_files);
    print_message("peak RSS growth: in memory %ld KiB, cap %zu KiB %ld KiB (%zu spill files), "
                  "cap %zu KiB %ld KiB (%zu spill files)\n", whole.grown_kib, big_cap >> 10,
                  big.grown_kib, big.spill_files, small_cap >> 10, small.grown_kib, small.spill_files);
    long bound_small = (long)(small_cap >> 10) + RSS_OVERHEAD_KIB;
    long bound_big = (long)(big_cap >> 10) + RSS_OVERHEAD_KIB;
    if (small.grown_kib > bound_small || big.grown_kib > bound_big)
        fail_msg("peak RSS grew %ld KiB (cap %zu KiB) and %ld KiB (cap %zu KiB); bounds %ld and %ld KiB",
                 small.grown_kib, small_cap >> 10, big.grown_kib, big_cap >> 10, bound_small, bound_big);
    if (whole.grown_kib <= 2 * bound_big)
        fail_msg("grouping the cohort in memory grew only %ld KiB: the cohort is too small to tell",
                 whole.grown_kib);
}

static void test_shared_synthea(void **state)
{
    (void)state;
    const char *base = getenv("CARTGATE_SHARED_DATA");
    char bulk[600], bundles[600];
    snprintf(bulk, sizeof bulk, "%s/bulk-ndjson-synthea/10-patients", base ? base : "");
    snprintf(bundles, sizeof bundles, "%s/synthea-r4-patient-bundles", base ? base : "");
    if (!base || access(bulk, R_OK) || access(bundles, R_OK))
        skip();
    const char *p1[] = {bulk};
    map_stream_stats st;
    check_all_modes(p1, 1, "Synthea bulk export", &st);
    /* DocumentReference, Encounter ... are never opened */
    assert_true(st.files_skipped >= 5);
    assert_true(st.bytes_skipped * 2 > st.bytes);
    const char *p2[] = {bundles};
    check_all_modes(p2, 1, "Synthea patient Bundles", &st);
    assert_true(st.skipped > 0); /* Claim / ExplanationOfBenefit entries never parsed */
    assert_true(st.bytes_skipped > 0);
}

static void write_file(const char *name, const char *text)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_skip_and_errors(void **state)
{
    (void)state;
    char sub[512];
    snprintf(sub, sizeof sub, "%s/small", dir);
    mkdir(sub, 0700);
    write_file("small/Encounter.000.ndjson", "not even JSON\n");
    write_file("small/mixed.ndjson",
               "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n"
               "{\"resourceType\":\"Encounter\",\"id\":\"e1\", this is not parsed\n"
               "{\"id\":\"c1\",\"resourceType\":\"Condition\",\"subject\":{\"reference\":\"Patient/a\"}}\n"
               "{broken\n"
               "\n"
               "{\"resourceType\":\"Observation\",\"id\":\"o1\"}\n");
    const char *paths[] = {sub};
    out o = {0};
    map_stream_stats st;
    by_stream(paths, 1, MAP_STREAM_AUTO, 0, &o, &st);
    assert_int_equal(o.n, 1);
    assert_int_equal(st.files_skipped, 1);
    assert_int_equal(st.skipped, 1);      /* the Encounter line, on its first bytes */
    assert_int_equal(st.bad_lines, 1);    /* "{broken" */
    assert_int_equal(st.orphans, 1);      /* the Observation without a subject */
    assert_int_equal(st.resources, 3);
    out_free(&o);
    map_group *g = map_group_new(NULL);
    fhir_error err;
    assert_int_equal(map_group_add_path(g, sub, &err), 0);
    /* map_group parses the Encounter line too (and finds it broken) */
    assert_int_equal(map_group_bad_lines(g), 3);
    map_group_free(g);

    /* a malformed JSON file fails like map_group, naming the file */
    write_file("bad.json", "{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":{\"resourceType\":"
                           "\"Patient\",\"id\":\"x\"}},]}");
    char bad[600];
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    const char *pb[] = {bad};
    map_stream_stats st2;
    assert_int_equal(map_stream_run(pb, 1, NULL, on_patient, on_restart, &o, &st2, &err), -1);
    char want[800];
    g = map_group_new(NULL);
    fhir_error gerr;
    assert_int_equal(map_group_add_path(g, bad, &gerr), -1);
    map_group_free(g);
    snprintf(want, sizeof want, "%s", gerr.msg);
    assert_string_equal(err.msg, want);

    /* the consumer's error is the run's error, with its cause */
    char p[512];
    synth_cohort("sorted", 120, SYNTH_FORMAT_NDJSON, p, sizeof p);
    const char *ps[] = {p};
    for (int mode = MAP_STREAM_AUTO; mode <= MAP_STREAM_SPILL; mode++) {
        out f = {.fail_at = 3};
        map_stream_opts so = {.mode = (map_stream_mode)mode, .budget = 256u << 10};
        assert_int_equal(map_stream_run(ps, 1, &so, on_patient, on_restart, &f, NULL, &err), -1);
        assert_non_null(strstr(err.msg, "stopped by the consumer at patient"));
        out_free(&f);
    }
}

/* Bundles: fullUrl references resolve within the Bundle; a Medication reached by fullUrl and
 * by id is one Medication (appended once); nested Bundles are unpacked. */
static void test_bundle_references(void **state)
{
    (void)state;
    char sub[512];
    snprintf(sub, sizeof sub, "%s/refs", dir);
    mkdir(sub, 0700);
    write_file("refs/a.json",
               "{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":["
               "{\"fullUrl\":\"urn:uuid:r1\",\"resource\":{\"resourceType\":\"MedicationRequest\","
               "\"id\":\"r1\",\"subject\":{\"reference\":\"urn:uuid:p\"},"
               "\"medicationReference\":{\"reference\":\"urn:uuid:m\"},\"authoredOn\":\"2024-01-02\"}},"
               "{\"fullUrl\":\"urn:uuid:m\",\"resource\":{\"resourceType\":\"Medication\",\"id\":\"m1\","
               "\"code\":{\"coding\":[{\"system\":\"http://www.nlm.nih.gov/research/umls/rxnorm\","
               "\"code\":\"121191\"}]}}},"
               "{\"fullUrl\":\"urn:uuid:r2\",\"resource\":{\"resourceType\":\"MedicationRequest\","
               "\"id\":\"r2\",\"subject\":{\"reference\":\"urn:uuid:p\"},"
               "\"medicationReference\":{\"reference\":\"Medication/m1\"},\"authoredOn\":\"2024-02-02\"}},"
               "{\"fullUrl\":\"urn:uuid:e\",\"resource\":{\"resourceType\":\"Claim\",\"id\":\"c\","
               "\"patient\":{\"reference\":\"urn:uuid:p\"}}},"
               "{\"resource\":{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":"
               "{\"resourceType\":\"Condition\",\"id\":\"c2\",\"subject\":{\"reference\":"
               "\"Patient/q\"}}}]}},"
               "{\"fullUrl\":\"urn:uuid:p\",\"resource\":{\"resourceType\":\"Patient\",\"id\":\"p\","
               "\"birthDate\":\"1960-01-01\"}}]}");
    write_file("refs/b.ndjson",
               "{\"resourceType\":\"Patient\",\"id\":\"q\"}\n"
               "{\"resourceType\":\"MedicationRequest\",\"id\":\"r3\",\"subject\":{\"reference\":"
               "\"Patient/q\"},\"medicationReference\":{\"reference\":\"Medication/m1\"}}\n"
               "{\"resourceType\":\"Patient\",\"id\":\"q\",\"gender\":\"female\"}\n");
    const char *paths[] = {sub};
    map_stream_stats st;
    check_all_modes(paths, 1, "references", &st);
    out o = {0};
    by_stream(paths, 1, MAP_STREAM_AUTO, 0, &o, &st);
    assert_int_equal(o.n, 2);
    /* p: its two requests and the one Medication; q: both Patients (the last first) */
    assert_non_null(strstr(o.v[0], "\tPatient/p MedicationRequest/r1 Medication/m1 MedicationRequest/r2 "));
    assert_non_null(strstr(o.v[1], "\tPatient/q Patient/q Condition/c2 MedicationRequest/r3 Medication/m1 "));
    assert_int_equal(st.skipped, 1); /* the Claim */
    out_free(&o);
}

/* ---- the Medication index beyond its cap ------------------------------------------------- */

#define MEDS 3000   /* Medications m0..m2999, one patient each (p0..p2999), px: an unknown one */
#define MEDS_AGAIN 100 /* m0..m99 stored again, later, with other contents */

typedef struct medseen {
    char *med[MEDS + 1];  /* each patient's Medications (compact JSON, '|' between) */
    size_t patients;
} medseen;

static int on_med_patient(void *ud, const char *id, const fhir_node *const *res, size_t n,
                          uint64_t order, fhir_error *err)
{
    (void)order;
    (void)err;
    medseen *s = ud;
    size_t i = !strcmp(id, "px") ? MEDS : (size_t)strtoul(id + 1, NULL, 10);
    assert_true(i <= MEDS);
    fhir_buf b;
    fhir_buf_init(&b, 0);
    for (size_t j = 0; j < n; j++) {
        const char *t = fhir_node_resource_type(res[j]);
        if (t && !strcmp(t, "Medication")) {
            fhir_json_write(&b, res[j], FHIR_JSON_COMPACT);
            fhir_buf_puts(&b, "|");
        }
    }
    free(s->med[i]);
    s->med[i] = fhir_buf_steal(&b, NULL);
    s->patients++;
    return 0;
}

static void on_med_restart(void *ud)
{
    ((medseen *)ud)->patients = 0; /* the sorted merge met p10 after p9: all again */
}

static void med_run(const char *sub, map_stream_mode mode, size_t cap, medseen *s,
                    map_stream_stats *st)
{
    memset(s, 0, sizeof *s);
    const char *paths[] = {sub};
    map_stream_opts so = {.mode = mode, .med_index_max = cap};
    fhir_error err;
    if (map_stream_run(paths, 1, &so, on_med_patient, on_med_restart, s, st, &err))
        fail_msg("map_stream: %s", err.msg);
    assert_int_equal(s->patients, MEDS + 1);
}

/* With a 1 KiB cap the Medication index goes to disk in runs (its slots in memory never over
 * the cap) and every reference still resolves to the newest record of its key, as with the
 * default cap (one table in memory); a key nobody stored resolves to nothing. */
static void test_med_index_runs(void **state)
{
    (void)state;
    char sub[512];
    snprintf(sub, sizeof sub, "%s/medruns", dir);
    mkdir(sub, 0700);
    fhir_buf meds, reqs, pats;
    fhir_buf_init(&meds, 0);
    fhir_buf_init(&reqs, 0);
    fhir_buf_init(&pats, 0);
    for (int i = 0; i < MEDS + MEDS_AGAIN; i++)
        fhir_buf_printf(&meds, "{\"resourceType\":\"Medication\",\"id\":\"m%d\",\"code\":{\"text\":"
                        "\"%s-%d\"}}\n", i % MEDS, i < MEDS ? "first" : "again", i % MEDS);
    for (int i = 0; i <= MEDS; i++) {
        char pid[16];
        snprintf(pid, sizeof pid, i < MEDS ? "p%d" : "px", i);
        fhir_buf_printf(&pats, "{\"resourceType\":\"Patient\",\"id\":\"%s\"}\n", pid);
        fhir_buf_printf(&reqs, "{\"resourceType\":\"MedicationRequest\",\"id\":\"r%d\",\"subject\":"
                        "{\"reference\":\"Patient/%s\"},\"medicationReference\":{\"reference\":"
                        "\"Medication/%s%d\"}}\n", i, pid, i < MEDS ? "m" : "nope", i);
    }
    fhir_buf_putc(&meds, '\0');
    fhir_buf_putc(&reqs, '\0');
    fhir_buf_putc(&pats, '\0');
    write_file("medruns/Medication.ndjson", meds.data);
    write_file("medruns/MedicationRequest.ndjson", reqs.data);
    write_file("medruns/Patient.ndjson", pats.data);
    fhir_buf_free(&meds);
    fhir_buf_free(&reqs);
    fhir_buf_free(&pats);

    static medseen big, small;
    map_stream_stats bst, sst;
    med_run(sub, MAP_STREAM_GROUPED, 0, &big, &bst);
    assert_int_equal(bst.med_runs, 0);
    assert_int_equal(bst.medications, MEDS);
    static const map_stream_mode modes[] = {MAP_STREAM_GROUPED, MAP_STREAM_AUTO};
    for (size_t k = 0; k < 2; k++) {
        med_run(sub, modes[k], 1024, &small, &sst);
        assert_true(sst.med_runs >= 10);
        assert_true(sst.med_index_peak > 0);
        assert_true(sst.med_index_peak <= 1024);
        /* m0..m99 stored again count again when their first slot went to a run */
        assert_true(sst.medications > MEDS && sst.medications <= MEDS + MEDS_AGAIN);
        for (int i = 0; i < MEDS; i++) {
            char want[80];
            snprintf(want, sizeof want, "{\"resourceType\":\"Medication\",\"id\":\"m%d\",\"code\":"
                     "{\"text\":\"%s-%d\"}}|", i, i < MEDS_AGAIN ? "again" : "first", i);
            assert_non_null(small.med[i]);
            if (strcmp(small.med[i], want))
                fail_msg("p%d: %s, want %s", i, small.med[i], want);
            assert_string_equal(big.med[i], small.med[i]);
        }
        assert_string_equal(small.med[MEDS], ""); /* Medication/nope */
        assert_string_equal(big.med[MEDS], "");
        for (int i = 0; i <= MEDS; i++)
            free(small.med[i]);
    }
    for (int i = 0; i <= MEDS; i++)
        free(big.med[i]);
}

/* The order of patients: those with a Patient resource by their first one, then those known
 * only from references by their first resource, across files, lines and Bundle entries, in
 * every mode (check_all_modes compares the order with map_group's). */
static void test_patient_order(void **state)
{
    (void)state;
    char sub[512];
    snprintf(sub, sizeof sub, "%s/order", dir);
    mkdir(sub, 0700);
    /* files are read in name order: a.ndjson, b.json, c.ndjson */
    write_file("order/a.ndjson",
               "{\"resourceType\":\"Condition\",\"id\":\"c1\",\"subject\":{\"reference\":\"Patient/z\"}}\n"
               "{\"resourceType\":\"Condition\",\"id\":\"c2\",\"subject\":{\"reference\":\"Patient/m\"}}\n"
               "{\"resourceType\":\"Patient\",\"id\":\"q\"}\n"
               "{\"resourceType\":\"Condition\",\"id\":\"c3\",\"subject\":{\"reference\":\"Patient/y\"}}\n");
    write_file("order/b.json",
               "{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":["
               "{\"resource\":{\"resourceType\":\"Condition\",\"id\":\"c4\",\"subject\":{\"reference\":\"Patient/x\"}}},"
               "{\"resource\":{\"resourceType\":\"Patient\",\"id\":\"y\"}},"
               "{\"resource\":{\"resourceType\":\"Patient\",\"id\":\"b\"}}]}");
    write_file("order/c.ndjson",
               "{\"resourceType\":\"Patient\",\"id\":\"m\"}\n"
               "{\"resourceType\":\"Condition\",\"id\":\"c5\",\"subject\":{\"reference\":\"Patient/a\"}}\n"
               "{\"resourceType\":\"Patient\",\"id\":\"q\"}\n");
    const char *paths[] = {sub};
    out ref = {0};
    by_group(paths, 1, &ref);
    /* map_group's order, spelled out: Patients q, y, b, m; then z, x, a by first reference */
    static const char *const want[] = {"q", "y", "b", "m", "z", "x", "a"};
    assert_int_equal(ref.n, 7);
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(ref.ids[i].id, want[i]);
    out_free(&ref);
    check_all_modes(paths, 1, "order", NULL);
    /* and with the NDJSON file alone, where the sorted merge does not apply (unsorted ids) */
    char one[600];
    snprintf(one, sizeof one, "%s/a.ndjson", sub);
    const char *p1[] = {one};
    check_all_modes(p1, 1, "order, one file", NULL);
}

/* A bulk export's manifest.json gives the types of files whose names do not: those of types
 * the profile never reads are not opened, and the manifest is not read as FHIR. A file named
 * manifest.json that is a FHIR resource is read as one. */
static void test_bulk_manifest(void **state)
{
    (void)state;
    char sub[512];
    snprintf(sub, sizeof sub, "%s/manifest", dir);
    mkdir(sub, 0700);
    write_file("manifest/manifest.json",
               "{\"transactionTime\":\"2026-11-01T00:00:00Z\",\"request\":\"https://ehr/$export\","
               "\"requiresAccessToken\":true,\"output\":["
               "{\"type\":\"Patient\",\"url\":\"https://ehr/files/1.ndjson\"},"
               "{\"type\":\"Condition\",\"url\":\"https://ehr/files/2.ndjson?sig=abc\"},"
               "{\"type\":\"DocumentReference\",\"url\":\"https://ehr/files/3.ndjson\"}],"
               "\"error\":[{\"type\":\"OperationOutcome\",\"url\":\"https://ehr/files/4.ndjson\"}]}");
    write_file("manifest/1.ndjson", "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n");
    write_file("manifest/2.ndjson",
               "{\"resourceType\":\"Condition\",\"id\":\"c1\",\"subject\":{\"reference\":\"Patient/a\"}}\n");
    /* never opened: read, each of these lines would count as unparsable */
    write_file("manifest/3.ndjson", "not even JSON\n{broken\n");
    write_file("manifest/4.ndjson", "not even JSON\n");
    const char *paths[] = {sub};
    for (int mode = MAP_STREAM_AUTO; mode <= MAP_STREAM_SPILL; mode++) {
        out o = {0};
        map_stream_stats st;
        by_stream(paths, 1, (map_stream_mode)mode, 0, &o, &st);
        assert_int_equal(o.n, 1);
        assert_non_null(strstr(o.v[0], "\tPatient/a Condition/c1 "));
        assert_int_equal(st.manifests, 1);
        assert_int_equal(st.files_skipped, 3); /* 3.ndjson, 4.ndjson and the manifest */
        assert_int_equal(st.bad_lines, 0);
        assert_int_equal(st.orphans, 0);
        out_free(&o);
    }
    /* without the manifest the unread files are opened (their lines refused) */
    char mp[600];
    snprintf(mp, sizeof mp, "%s/manifest.json", sub);
    unlink(mp);
    out o = {0};
    map_stream_stats st;
    by_stream(paths, 1, MAP_STREAM_AUTO, 0, &o, &st);
    assert_int_equal(o.n, 1);
    assert_int_equal(st.manifests, 0);
    assert_int_equal(st.bad_lines, 3);
    out_free(&o);
    /* a FHIR resource named manifest.json is read as FHIR */
    write_file("manifest/manifest.json", "{\"resourceType\":\"Patient\",\"id\":\"m\"}");
    by_stream(paths, 1, MAP_STREAM_AUTO, 0, &o, &st);
    assert_int_equal(o.n, 2);
    assert_int_equal(st.manifests, 0);
    out_free(&o);
}

/* map_group keeps the cause when its memory cap stops an NDJSON file. */
static void test_group_cap_keeps_cause(void **state)
{
    (void)state;
    char p[512];
    synth_cohort("sorted", 120, SYNTH_FORMAT_NDJSON, p, sizeof p);
    map_group_opts go = {.max_bytes = 64u << 10};
    map_group *g = map_group_new(&go);
    fhir_error err;
    assert_int_equal(map_group_add_path(g, p, &err), -1);
    /* the file, once, then the cause */
    char want[600];
    snprintf(want, sizeof want, "%s/", p);
    assert_memory_equal(err.msg, want, strlen(want));
    assert_non_null(strstr(err.msg, ".ndjson: resource grouping: memory cap of 65536 bytes reached"));
    assert_null(strstr(strstr(err.msg, ".ndjson: ") + 9, ".ndjson"));
    map_group_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synth_sorted_ndjson),
        cmocka_unit_test(test_synth_unsorted_ndjson),
        cmocka_unit_test(test_synth_bundles),
        cmocka_unit_test(test_spill_bounds_memory),
        cmocka_unit_test(test_spill_bounds_rss),
        cmocka_unit_test(test_shared_synthea),
        cmocka_unit_test(test_skip_and_errors),
        cmocka_unit_test(test_bundle_references),
        cmocka_unit_test(test_med_index_runs),
        cmocka_unit_test(test_patient_order),
        cmocka_unit_test(test_bulk_manifest),
        cmocka_unit_test(test_group_cap_keeps_cause),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
