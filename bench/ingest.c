/* bench_ingest — NDJSON ingest throughput: cartgate's streaming NDJSON reader (building a
 * tree per resource and reading a few fields) against a raw yajl callback scan that builds
 * nothing, in the same run on the same file. Each timed run is a forked child so its peak
 * RSS is measured alone.
 *
 *   bench_ingest [MB=256] [RUNS=5] [FILE=/tmp/cartgate-bench-ingest.ndjson]
 *
 * Prints MB/s for both (median of RUNS), the ratio, and each mode's peak RSS. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <yajl/yajl_parse.h>

#include "fhir_ndjson.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_rand(void)
{
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Deterministic lab Observations (US Core laboratory shape). */
static void generate(const char *path, size_t mb)
{
    static const struct { const char *loinc, *display, *unit; int lo, hi; } labs[] = {
        {"2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 50, 300},
        {"751-8", "Neutrophils [#/volume] in Blood by Automated count", "10*3/uL", 50, 900},
        {"777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 2000, 45000},
        {"718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 700, 1800},
        {"1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL", 10, 300},
    };
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    size_t target = mb * 1024 * 1024, written = 0;
    for (uint64_t i = 0; written < target; i++) {
        uint64_t r = next_rand();
        int k = (int)(r % 5);
        int v = labs[k].lo + (int)((r >> 8) % (uint64_t)(labs[k].hi - labs[k].lo));
        int n = fprintf(f,
            "{\"resourceType\":\"Observation\",\"id\":\"lab-%llu\",\"meta\":{\"lastUpdated\":\"2026-0%d-1%dT08:%02d:00Z\","
            "\"profile\":[\"http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab\"]},"
            "\"status\":\"final\",\"category\":[{\"coding\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/observation-category\","
            "\"code\":\"laboratory\",\"display\":\"Laboratory\"}]}],\"code\":{\"coding\":[{\"system\":\"http://loinc.org\","
            "\"code\":\"%s\",\"display\":\"%s\"}]},\"subject\":{\"reference\":\"Patient/p%llu\"},"
            "\"effectiveDateTime\":\"2026-0%d-1%dT07:%02d:00Z\",\"valueQuantity\":{\"value\":%d.%02d,\"unit\":\"%s\","
            "\"system\":\"http://unitsofmeasure.org\",\"code\":\"%s\"}}\n",
            (unsigned long long)i, 1 + (int)((r >> 20) % 9), (int)((r >> 24) % 10), (int)((r >> 28) % 60),
            labs[k].loinc, labs[k].display, (unsigned long long)(r >> 32) % 100000,
            1 + (int)((r >> 20) % 9), (int)((r >> 24) % 10), (int)((r >> 28) % 60), v / 100, v % 100,
            labs[k].unit, labs[k].unit);
        written += (size_t)n;
    }
    fclose(f);
}

/* ---- baseline: raw yajl scan, builds nothing ----------------------------------------- */
static int nop0(void *c) { (void)c; return 1; }
static int nop_b(void *c, int b) { (void)c; (void)b; return 1; }
static int nop_s(void *c, const char *s, size_t n) { (void)c; (void)s; (void)n; return 1; }
static int nop_us(void *c, const unsigned char *s, size_t n) { (void)c; (void)s; (void)n; return 1; }
static const yajl_callbacks nop_cb = {nop0, nop_b, NULL, NULL, nop_s, nop_us, nop0, nop_us, nop0, nop0, nop0};

static size_t run_raw(const char *path)
{
    int fd = open(path, O_RDONLY);
    yajl_handle h = yajl_alloc(&nop_cb, NULL, NULL);
    yajl_config(h, yajl_allow_multiple_values, 1);
    static unsigned char buf[65536];
    ssize_t n;
    size_t total = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        if (yajl_parse(h, buf, (size_t)n) != yajl_status_ok) {
            fprintf(stderr, "raw scan failed\n");
            exit(1);
        }
        total += (size_t)n;
    }
    yajl_complete_parse(h);
    yajl_free(h);
    close(fd);
    return total;
}

/* ---- cartgate: NDJSON reader building a tree per line, reading a few fields ---------- */
typedef struct acc {
    size_t n;
    double sum;
    size_t creat;
} acc;

static int on_obs(void *ud, const fhir_node *res, size_t line, fhir_error *err)
{
    (void)line;
    acc *a = ud;
    const char *code = fhir_node_path_str(res, "code.coding.code");
    const char *subj = fhir_node_path_str(res, "subject.reference");
    double v;
    if (fhir_node_double(fhir_node_path(res, "valueQuantity.value"), &v))
        a->sum += v;
    if (code && !strcmp(code, "2160-0") && subj)
        a->creat++;
    a->n++;
    return 0;
}

static size_t run_cartgate(const char *path)
{
    acc a = {0};
    fhir_ndjson *r = fhir_ndjson_new(NULL, on_obs, NULL, &a);
    fhir_error err = {0};
    if (fhir_ndjson_read_path(r, path, &err) != 0) {
        fprintf(stderr, "ndjson failed: %s\n", err.msg);
        exit(1);
    }
    size_t bytes = fhir_ndjson_stats_get(r)->bytes;
    fhir_ndjson_free(r);
    if (a.n == 0)
        exit(1);
    return bytes;
}

/* Runs one mode in a child; returns seconds, and the child's peak RSS in KiB. */
static double timed(int mode, const char *path, long *rss_kib)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid == 0) {
        /* a fresh process image, so its peak RSS is the reader's alone */
        execl("/proc/self/exe", "bench_ingest", "--child", mode == 0 ? "raw" : "cartgate", path,
              (char *)NULL);
        _exit(127);
    }
    int st;
    struct rusage ru;
    wait4(pid, &st, 0, &ru);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "bench child failed\n");
        exit(1);
    }
    *rss_kib = ru.ru_maxrss;
    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--child")) {
        if (!strcmp(argv[2], "raw"))
            run_raw(argv[3]);
        else
            run_cartgate(argv[3]);
        return 0;
    }
    size_t mb = argc > 1 ? (size_t)atoi(argv[1]) : 256;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    const char *path = argc > 3 ? argv[3] : "/tmp/cartgate-bench-ingest.ndjson";
    if (runs < 1 || runs > 50 || mb < 1) {
        fprintf(stderr, "usage: bench_ingest [MB>=1] [RUNS 1..50] [FILE]\n");
        return 2;
    }
    generate(path, mb);
    struct stat st;
    stat(path, &st);
    double size_mb = (double)st.st_size / (1024.0 * 1024.0);
    run_raw(path); /* warm the page cache */
    double t_raw[50], t_cg[50];
    long rss_raw = 0, rss_cg = 0, r;
    for (int i = 0; i < runs; i++) {
        t_raw[i] = timed(0, path, &r);
        if (r > rss_raw)
            rss_raw = r;
        t_cg[i] = timed(1, path, &r);
        if (r > rss_cg)
            rss_cg = r;
    }
    qsort(t_raw, (size_t)runs, sizeof(double), dcmp);
    qsort(t_cg, (size_t)runs, sizeof(double), dcmp);
    double m_raw = t_raw[runs / 2], m_cg = t_cg[runs / 2];
    printf("input: %.1f MB NDJSON lab Observations, %d runs (median)\n", size_mb, runs);
    printf("raw yajl scan:        %8.1f MB/s  peak RSS %6.1f MiB\n", size_mb / m_raw, rss_raw / 1024.0);
    printf("cartgate NDJSON+tree: %8.1f MB/s  peak RSS %6.1f MiB\n", size_mb / m_cg, rss_cg / 1024.0);
    printf("ratio (cartgate/raw): %.2f\n", m_raw / m_cg);
    if (!getenv("CARTGATE_BENCH_KEEP"))
        unlink(path);
    return 0;
}
