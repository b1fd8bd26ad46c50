/* bench_elig — eligibility engine throughput.
 *
 *   bench_elig [RUNS=5] [PATIENTS=2000] [CRITERIA_DIR]     (PATIENTS=0: part 1 only)
 *
 * Part 1 (in process): verdicts per second over the shipped criteria (18 indications) on
 * 10,000 prebuilt fact sets (compiled once, as a daemon keeps them), against
 *   - the same evaluation when every fact is first looked up by name (elig_factset_fill with a
 *     string-keyed lookup, what `cartgate screen` does per patient), and
 *   - evaluation plus writing the explained JSON line.
 * Part 2 (child processes): end-to-end `cartgate screen --json` MB/s on an NDJSON cohort from
 * `cartgate synth` (PATIENTS patients) against plain NDJSON ingest (fhir_ndjson building every
 * resource's tree) of the same files.
 * Every figure is the median of RUNS runs. Part 1 is timed in CPU seconds of this process (a
 * per-core figure that a busy machine does not distort much); part 2 in wall seconds of the
 * child processes. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "elig.h"
#include "fhir_ndjson.h"

#define NSETS 10000

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* CPU time of this process: "per core" throughput even on a busy machine. */
static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, dcmp);
    return v[n / 2];
}

/* ---- generated fact-patients --------------------------------------------------------- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33) % n;
}

typedef struct patient {
    const char *names[48];
    map_fact facts[48];
    size_t n;
} patient;

static map_fact *add(patient *p, const char *name, map_fact_type t)
{
    p->names[p->n] = name;
    map_fact *f = &p->facts[p->n++];
    memset(f, 0, sizeof *f);
    f->known = rnd(12) != 0; /* about 1 in 12 facts unknown */
    f->type = t;
    f->evidence = "bench";
    return f;
}

static void gen(patient *p)
{
    static const char *dis[] = {"dlbcl_nos", "hgbcl", "pmbcl", "tfl", "fl_3b", "fl", "mcl",
                                "cll_sll", "mzl", "b_all", "mm", "hl", "non_heme"};
    static const char *cls[] = {"anti_cd20", "anthracycline", "alkylator", "btki", "bcl2i",
                                "imid", "pi", "anti_cd38"};
    static const char *nums[] = {"ecog", "anc", "alc", "platelets", "hemoglobin", "crcl",
                                 "bilirubin", "ast", "alt", "lvef", "spo2",
                                 "relapse_months_after_1l", "relapse_months_after_1l_start",
                                 "relapse_months_after_1l_end", "relapse_count"};
    static const char *bools[] = {"deceased", "pcnsl", "relapsed", "refractory",
                                  "primary_refractory", "lenalidomide_refractory",
                                  "btki_progression", "hct_ineligible", "active_infection",
                                  "prior_allo_hct", "prior_car_t", "cns_involvement",
                                  "histology_transformed"};
    memset(p, 0, sizeof *p);
    add(p, "age", MAP_FACT_NUMBER)->num = 15 + rnd(75);
    add(p, "lines", MAP_FACT_NUMBER)->num = rnd(5);
    map_fact *d = add(p, "diseases", MAP_FACT_SET);
    d->set[d->nset++] = dis[rnd(13)];
    map_fact *c = add(p, "prior_classes", MAP_FACT_SET);
    for (size_t k = 0; k < 8; k++)
        if (rnd(2))
            c->set[c->nset++] = cls[k];
    map_fact *f1 = add(p, "first_line_classes", MAP_FACT_SET);
    f1->set[f1->nset++] = "anti_cd20";
    for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++)
        add(p, nums[k], MAP_FACT_NUMBER)->num = rnd(100);
    for (size_t k = 0; k < sizeof bools / sizeof bools[0]; k++)
        add(p, bools[k], MAP_FACT_BOOL)->b = rnd(3) == 0;
}

static const map_fact *lookup(void *ud, const char *name)
{
    patient *p = ud;
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->names[i], name))
            return &p->facts[i];
    return NULL;
}

/* ---- part 2 helpers ------------------------------------------------------------------ */

static int ingest_cb(void *ud, const fhir_node *res, size_t line_no, fhir_error *err)
{
    (void)line_no;
    (*(size_t *)ud) += res != NULL;
    return 0;
}

static size_t list_ndjson(const char *dir, char paths[][1024], size_t max, off_t *bytes)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *e;
    *bytes = 0;
    while (d && (e = readdir(d)) && n < max) {
        size_t l = strlen(e->d_name);
        if (l < 7 || strcmp(e->d_name + l - 7, ".ndjson") ||
            !strcmp(e->d_name, "ground_truth.ndjson"))
            continue;
        snprintf(paths[n], 1024, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(paths[n], &st) == 0)
            *bytes += st.st_size;
        n++;
    }
    if (d)
        closedir(d);
    return n;
}

static int run_ingest(const char *dir)
{
    char paths[64][1024];
    off_t bytes;
    size_t n = list_ndjson(dir, paths, 64, &bytes);
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        fhir_ndjson *r = fhir_ndjson_new(NULL, ingest_cb, NULL, &count);
        fhir_error err;
        if (fhir_ndjson_read_path(r, paths[i], &err)) {
            fprintf(stderr, "%s: %s\n", paths[i], err.msg);
            return 1;
        }
        fhir_ndjson_free(r);
    }
    return count ? 0 : 1;
}

/* Runs argv with stdout to /dev/null; returns wall seconds (exits on failure). */
static double timed_exec(char *const argv[])
{
    double t0 = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    double t = now_s() - t0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "bench: %s %s failed\n", argv[0], argv[1]);
        exit(1);
    }
    return t;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--ingest"))
        return run_ingest(argv[2]);
    int runs = argc > 1 ? atoi(argv[1]) : 5;
    int patients = argc > 2 ? atoi(argv[2]) : 2000;
    const char *cdir = argc > 3 ? argv[3] : CARTGATE_SOURCE_DIR "/conf/criteria";
    if (runs < 1 || runs > 50 || patients < 0) {
        fprintf(stderr, "usage: bench_elig [RUNS 1..50] [PATIENTS] [CRITERIA_DIR]\n");
        return 2;
    }
    fhir_error err;
    elig_ruleset *rs = elig_load_dir(cdir, &err);
    if (!rs) {
        fprintf(stderr, "bench_elig: %s\n", err.msg);
        return 1;
    }

    /* ---- part 1 ---- */
    static patient pats[NSETS];
    elig_factset **sets = malloc(NSETS * sizeof *sets);
    for (size_t i = 0; i < NSETS; i++) {
        gen(&pats[i]);
        sets[i] = elig_factset_new(rs);
        elig_factset_fill(sets[i], lookup, &pats[i]);
    }
    elig_result *r = elig_result_new(rs);
    int64_t day = 20780; /* 2026-11-22 */
    const size_t iters = 100; /* 1,000,000 verdicts per run */
    double t_eval[50], t_fill[50], t_json[50];
    size_t cats[3] = {0, 0, 0};
    elig_factset *scratch = elig_factset_new(rs);
    fhir_buf out;
    fhir_buf_init(&out, 1u << 20);
    for (int k = 0; k < runs; k++) {
        double t0 = cpu_s();
        for (size_t it = 0; it < iters; it++)
            for (size_t i = 0; i < NSETS; i++) {
                elig_evaluate(rs, sets[i], day, r);
                cats[elig_result_category(r)]++;
            }
        t_eval[k] = (cpu_s() - t0) / (double)(iters * NSETS);
        t0 = cpu_s();
        for (size_t it = 0; it < iters / 10; it++)
            for (size_t i = 0; i < NSETS; i++) {
                elig_factset_fill(scratch, lookup, &pats[i]);
                elig_evaluate(rs, scratch, day, r);
            }
        t_fill[k] = (cpu_s() - t0) / (double)(iters / 10 * NSETS);
        t0 = cpu_s();
        for (size_t i = 0; i < NSETS; i++) {
            elig_evaluate(rs, sets[i], day, r);
            fhir_buf_reset(&out);
            elig_result_write_json(rs, sets[i], r, "p-bench", &out);
        }
        t_json[k] = (cpu_s() - t0) / (double)NSETS;
    }
    double me = median(t_eval, runs), mf = median(t_fill, runs), mj = median(t_json, runs);
    printf("criteria: %zu indications, %zu facts, %s\n", elig_ruleset_count(rs),
           elig_ruleset_fact_count(rs), elig_ruleset_hash(rs));
    printf("fact sets: %d generated (%zu eligible / %zu possibly / %zu not eligible verdicts)\n",
           NSETS, cats[2], cats[1], cats[0]);
    printf("evaluate, prebuilt fact sets:     %10.0f profiles/s (%.0f ns each)\n", 1 / me,
           me * 1e9);
    printf("lookup by name + evaluate:        %10.0f profiles/s (%.0f ns each)  ratio %.2f\n",
           1 / mf, mf * 1e9, me / mf);
    printf("evaluate + explained JSON line:   %10.0f profiles/s (%.0f ns each)  ratio %.3f\n",
           1 / mj, mj * 1e9, me / mj);
    fhir_buf_free(&out);
    elig_factset_free(scratch);
    for (size_t i = 0; i < NSETS; i++)
        elig_factset_free(sets[i]);
    free(sets);
    elig_result_free(r);
    elig_ruleset_free(rs);

    /* ---- part 2 ---- */
    if (patients == 0)
        return 0; /* part 1 only */
    char self_dir[1024], cartgate[1100], self[1200], cohort[256], npat[32];
    ssize_t l = readlink("/proc/self/exe", self_dir, sizeof self_dir - 1);
    if (l <= 0)
        return 1;
    self_dir[l] = 0;
    snprintf(self, sizeof self, "%s", self_dir);
    *strrchr(self_dir, '/') = 0;
    snprintf(cartgate, sizeof cartgate, "%s/cartgate", self_dir);
    snprintf(cohort, sizeof cohort, "/tmp/cartgate-bench-elig-%d", (int)getpid());
    snprintf(npat, sizeof npat, "%d", patients);
    char *synth[] = {cartgate, "synth", "--seed", "5", "--patients", npat, "--out", cohort,
                     "--as-of", "2026-11-01", NULL};
    timed_exec(synth);
    char paths[64][1024];
    off_t bytes;
    list_ndjson(cohort, paths, 64, &bytes);
    double mb = (double)bytes / (1024.0 * 1024.0);
    char *ingest[] = {self, "--ingest", cohort, NULL};
    char *screen[] = {cartgate, "screen", "--json", "--as-of", "2026-11-01", "--criteria",
                      (char *)cdir, cohort, NULL};
    double t_in[50], t_sc[50];
    timed_exec(ingest); /* warm the page cache */
    for (int k = 0; k < runs; k++) {
        t_in[k] = timed_exec(ingest);
        t_sc[k] = timed_exec(screen);
    }
    double mi = median(t_in, runs), ms = median(t_sc, runs);
    printf("cohort: %d patients, %.1f MB NDJSON (cartgate synth --seed 5)\n", patients, mb);
    printf("plain NDJSON ingest (trees):      %8.1f MB/s\n", mb / mi);
    printf("cartgate screen --json:           %8.1f MB/s  (%.0f patients/s)  ratio %.2f\n",
           mb / ms, patients / ms, mi / ms);
    char *rm[] = {"/bin/rm", "-rf", cohort, NULL};
    timed_exec(rm);
    return 0;
}
