/* bench_screen — offline screening throughput and peak memory: the streaming path of
 * `cartgate screen` (map_stream -> screen -> screen_sort) against a raw yajl scan of the same
 * bytes (the floor for any yajl-based reader) and against the in-memory path it replaced
 * (map_group holding the cohort -> screen -> rows sorted in memory); "profile" is the path of
 * `cartgate profile --json` (map_stream -> profile JSON -> rows in input order).
 *
 *   bench_screen [PATIENTS=10000 | DIR] [RUNS=5] [PASSES=1] [MODES=raw,memory,stream,profile]
 *
 * A number generates (once) a synth cohort of that many patients (seed 1, NDJSON bulk layout)
 * in /tmp/cartgate-bench-screen-<N>; a path benches that input (e.g. the Synthea bulk export).
 * Each mode runs in a fresh child process (its peak RSS is its own), modes interleaved run by
 * run; a child reads the input PASSES times (for small inputs). Reported: median MB/s over the
 * child's CPU time (user + system: on this shared machine wall time measures the neighbours),
 * the ratio to the raw scan of the same run set, the largest peak RSS, and a checksum of the
 * screen output (memory and stream must agree). */
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <yajl/yajl_parse.h>

#include "elig.h"
#include "fhir_clock.h"
#include "map_group.h"
#include "map_profile.h"
#include "map_stream.h"
#include "screen.h"
#include "screen_sort.h"
#include "synth.h"

#define MAX_RUNS 50

/* ---- the input ------------------------------------------------------------------------- */

typedef struct files {
    char **v;
    size_t n;
    uint64_t bytes;
} files;

static int add_file(void *ud, const char *path, fhir_error *err)
{
    (void)err;
    files *f = ud;
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    f->v = realloc(f->v, (f->n + 1) * sizeof *f->v);
    f->v[f->n++] = strdup(path);
    f->bytes += (uint64_t)st.st_size;
    return 0;
}

/* ---- raw yajl scan (baseline) ------------------------------------------------------------ */

static int nop0(void *c) { (void)c; return 1; }
static int nop_b(void *c, int b) { (void)c; (void)b; return 1; }
static int nop_s(void *c, const char *s, size_t n) { (void)c; (void)s; (void)n; return 1; }
static int nop_us(void *c, const unsigned char *s, size_t n) { (void)c; (void)s; (void)n; return 1; }
static const yajl_callbacks nop_cb = {nop0, nop_b, NULL, NULL, nop_s, nop_us, nop0, nop_us, nop0, nop0, nop0};

static void run_raw(const files *f)
{
    static unsigned char buf[65536];
    for (size_t i = 0; i < f->n; i++) {
        int fd = open(f->v[i], O_RDONLY);
        yajl_handle h = yajl_alloc(&nop_cb, NULL, NULL);
        yajl_config(h, yajl_allow_multiple_values, 1);
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0)
            if (yajl_parse(h, buf, (size_t)n) != yajl_status_ok) {
                fprintf(stderr, "raw scan failed: %s\n", f->v[i]);
                exit(1);
            }
        yajl_complete_parse(h);
        yajl_free(h);
        close(fd);
    }
}

/* ---- screening ----------------------------------------------------------------------------- */

typedef struct ctx {
    screen *sc;
    screen_sort *rows;
    fhir_buf line;
} ctx;

static int on_patient(void *ud, const char *id, const fhir_node *const *res, size_t n,
                      uint64_t order, fhir_error *err)
{
    ctx *c = ud;
    fhir_error perr;
    if (screen_patient(c->sc, res, n, &perr))
        return 0;
    fhir_buf_reset(&c->line);
    screen_write_json(c->sc, id, &c->line);
    return screen_sort_add(c->rows, id, c->line.data, c->line.len, err);
}

static void on_restart(void *ud)
{
    screen_sort_clear(((ctx *)ud)->rows);
}

static int sum_row(void *ud, const char *key, const char *row, size_t len)
{
    /* FNV-1a over 8-byte words (a byte at a time cost 4-6 % of the screen it checks) */
    uint64_t *h = ud;
    (void)key;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, row + i, 8);
        *h = (*h ^ w) * 1099511628211ull;
    }
    for (; i < len; i++)
        *h = (*h ^ (unsigned char)row[i]) * 1099511628211ull;
    *h = (*h ^ '\n') * 1099511628211ull;
    return 0;
}

static int run_screen(const char *dir, bool stream, int passes)
{
    if (stream) { /* what cmd_screen sets for its run */
        mallopt(M_MMAP_THRESHOLD, 8 << 20);
        mallopt(M_TRIM_THRESHOLD, 64 << 20);
    }
    fhir_error err;
    elig_ruleset *rs = elig_load_dir(CARTGATE_SOURCE_DIR "/conf/criteria", &err);
    map_tables *t = rs ? map_tables_load(NULL, &err) : NULL;
    if (!t) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    map_profile_opts o;
    map_profile_opts_default(&o);
    o.as_of_days = fhir_clock_days_from_civil(2026, 11, 1);
    uint64_t h = 1469598103934665603ull;
    size_t patients = 0;
    map_stream_stats st = {0};
    for (int p = 0; p < passes; p++) {
        ctx c = {screen_new(t, rs, &o), screen_sort_new(0, NULL), {0}};
        fhir_buf_init(&c.line, 4u << 20);
        if (stream) {
            const char *paths[] = {dir};
            /* CARTGATE_BENCH_MODE=sorted|memory|spill[:budget bytes] forces a path */
            map_stream_opts so = {0};
            const char *fm = getenv("CARTGATE_BENCH_MODE");
            if (fm && !strncmp(fm, "sorted", 6))
                so.mode = MAP_STREAM_SORTED;
            else if (fm && !strncmp(fm, "memory", 6))
                so.mode = MAP_STREAM_GROUPED;
            else if (fm && !strncmp(fm, "spill", 5))
                so.mode = MAP_STREAM_SPILL;
            if (fm && strchr(fm, ':'))
                so.budget = (size_t)strtoull(strchr(fm, ':') + 1, NULL, 10);
            /* CARTGATE_BENCH_MED_INDEX=bytes caps the Medication index in memory */
            const char *mi = getenv("CARTGATE_BENCH_MED_INDEX");
            if (mi)
                so.med_index_max = (size_t)strtoull(mi, NULL, 10);
            if (map_stream_run(paths, 1, &so, on_patient, on_restart, &c, &st, &err)) {
                fprintf(stderr, "stream: %s\n", err.msg);
                return 1;
            }
        } else {
            map_group *g = map_group_new(NULL);
            if (map_group_add_path(g, dir, &err)) {
                fprintf(stderr, "memory: %s\n", err.msg);
                return 1;
            }
            for (size_t i = 0; i < map_group_count(g); i++) {
                size_t n;
                const fhir_node *const *res = map_group_resources(g, i, &n);
                if (on_patient(&c, map_group_patient_id(g, i), res, n, i, &err))
                    return 1;
            }
            map_group_free(g);
        }
        patients = screen_sort_count(c.rows);
        h = 1469598103934665603ull;
        if (screen_sort_each(c.rows, sum_row, &h, &err))
            return 1;
        screen_sort_free(c.rows);
        screen_free(c.sc);
        fhir_buf_free(&c.line);
    }
    printf("%zu %016llx", patients, (unsigned long long)h);
    if (stream)
        printf(" mode=%s skipped_bytes=%llu spill_files=%zu peak_held=%zu restarts=%zu med_runs=%zu",
               st.mode, (unsigned long long)st.bytes_skipped, st.spill_files, st.peak_held,
               st.restarts, st.med_runs);
    printf("\n");
    map_tables_free(t);
    elig_ruleset_free(rs);
    return 0;
}

/* ---- cartgate profile: map_stream -> profile JSON -> rows in input order ------------------ */

typedef struct pctx {
    const map_tables *t;
    const map_profile_opts *o;
    screen_sort *rows;
    fhir_buf out;
} pctx;

static int on_profile(void *ud, const char *id, const fhir_node *const *res, size_t n,
                      uint64_t order, fhir_error *err)
{
    pctx *c = ud;
    char key[24];
    (void)id;
    snprintf(key, sizeof key, "%016llx", (unsigned long long)order);
    fhir_error perr;
    map_profile *p = map_profile_build(c->t, res, n, c->o, &perr);
    if (!p)
        return 0;
    fhir_buf_reset(&c->out);
    map_profile_write_json(p, &c->out, 0);
    map_profile_free(p);
    return screen_sort_add(c->rows, key, c->out.data ? c->out.data : "", c->out.len, err);
}

static void on_profile_restart(void *ud)
{
    screen_sort_clear(((pctx *)ud)->rows);
}

static int run_profile(const char *dir, int passes)
{
    mallopt(M_MMAP_THRESHOLD, 8 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    fhir_error err;
    map_tables *t = map_tables_load(NULL, &err);
    if (!t) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    map_profile_opts o;
    map_profile_opts_default(&o);
    o.as_of_days = fhir_clock_days_from_civil(2026, 11, 1);
    uint64_t h = 0;
    size_t patients = 0;
    for (int p = 0; p < passes; p++) {
        pctx c = {t, &o, screen_sort_new(0, NULL), {0}};
        fhir_buf_init(&c.out, 16u << 20);
        const char *paths[] = {dir};
        if (map_stream_run(paths, 1, NULL, on_profile, on_profile_restart, &c, NULL, &err)) {
            fprintf(stderr, "profile: %s\n", err.msg);
            return 1;
        }
        patients = screen_sort_count(c.rows);
        h = 1469598103934665603ull;
        if (screen_sort_each(c.rows, sum_row, &h, &err))
            return 1;
        screen_sort_free(c.rows);
        fhir_buf_free(&c.out);
    }
    printf("%zu %016llx\n", patients, (unsigned long long)h);
    map_tables_free(t);
    return 0;
}

/* ---- the parent ------------------------------------------------------------------------- */

#define NMODES 4
static const char *const MODES[NMODES] = {"raw", "memory", "stream", "profile"};

typedef struct result {
    double cpu[MAX_RUNS];
    long rss_kib;
    char out[256];
    bool failed;
} result;

static void child(int mode, const char *dir, int passes, result *r, int run)
{
    int fds[2];
    if (pipe(fds))
        exit(1);
    char pb[16];
    snprintf(pb, sizeof pb, "%d", passes);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        execl("/proc/self/exe", "bench_screen", "--child", MODES[mode], dir, pb, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[256] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    int st;
    struct rusage ru;
    wait4(pid, &st, 0, &ru);
    r->cpu[run] = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                  (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    if (ru.ru_maxrss > r->rss_kib)
        r->rss_kib = ru.ru_maxrss;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        r->failed = true;
    if (n > 0) {
        buf[strcspn(buf, "\n")] = 0;
        snprintf(r->out, sizeof r->out, "%s", buf);
    }
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "--child")) {
        int passes = atoi(argv[4]);
        if (!strcmp(argv[2], "raw")) {
            files f = {0};
            fhir_error err;
            if (map_group_each_file(argv[3], add_file, NULL, &f, &err))
                return 1;
            for (int p = 0; p < passes; p++)
                run_raw(&f);
            printf("-\n");
            return 0;
        }
        if (!strcmp(argv[2], "profile"))
            return run_profile(argv[3], passes);
        return run_screen(argv[3], !strcmp(argv[2], "stream"), passes);
    }
    const char *what = argc > 1 ? argv[1] : "10000";
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    int passes = argc > 3 ? atoi(argv[3]) : 1;
    const char *modes = argc > 4 ? argv[4] : "raw,memory,stream";
    if (runs < 1 || runs > MAX_RUNS || passes < 1) {
        fprintf(stderr, "usage: bench_screen [PATIENTS | DIR] [RUNS 1..50] [PASSES] [MODES]\n");
        return 2;
    }
    char dir[1024];
    if (strchr(what, '/')) {
        snprintf(dir, sizeof dir, "%s", what);
    } else {
        size_t patients = (size_t)strtoul(what, NULL, 10);
        snprintf(dir, sizeof dir, "/tmp/cartgate-bench-screen-%zu", patients);
        char marker[1100];
        snprintf(marker, sizeof marker, "%s/.complete", dir);
        struct stat st;
        if (stat(marker, &st) != 0) {
            synth_opts so;
            synth_opts_default(&so);
            so.seed = 1;
            so.patients = patients;
            fhir_error err;
            if (synth_write_cohort(&so, dir, NULL, &err)) {
                fprintf(stderr, "synth: %s\n", err.msg);
                return 1;
            }
            FILE *m = fopen(marker, "w");
            if (m)
                fclose(m);
        }
    }
    files f = {0};
    fhir_error err;
    if (map_group_each_file(dir, add_file, NULL, &f, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    double mb = (double)f.bytes * passes / 1e6;
    bool on[NMODES];
    for (int m = 0; m < NMODES; m++)
        on[m] = strstr(modes, MODES[m]) != NULL;
    on[0] = true; /* the baseline */
    run_raw(&f); /* warm the page cache */
    static result res[NMODES];
    for (int r = 0; r < runs; r++)
        for (int m = 0; m < NMODES; m++)
            if (on[m])
                child(m, dir, passes, &res[m], r);
    for (int m = 0; m < NMODES; m++)
        if (on[m])
            qsort(res[m].cpu, (size_t)runs, sizeof(double), dcmp);
    double base = res[0].cpu[runs / 2];
    printf("input: %s, %zu files, %.1f MB x %d pass(es); median of %d runs (CPU s of each child)\n",
           dir, f.n, (double)f.bytes / 1e6, passes, runs);
    for (int m = 0; m < NMODES; m++) {
        if (!on[m])
            continue;
        double t = res[m].cpu[runs / 2];
        printf("%-7s %8.3f s %8.1f MB/s  ratio to raw %.2f  peak RSS %7.1f MiB  %s%s\n", MODES[m], t,
               mb / t, base / t, res[m].rss_kib / 1024.0, res[m].failed ? "FAILED " : "", res[m].out);
    }
    return 0;
}
