/* bench_synth — synthetic cohort generation speed against the cost of just writing the same
 * bytes, measured in the same run.
 *
 *   bench_synth [PATIENTS=20000] [RUNS=5] [DIR=/tmp/cartgate-bench-synth]
 *
 * Each run times, interleaved:
 *   raw write  — the baseline: fwrite of as many bytes as the cohort has, from a 1 MiB
 *                buffer, into one file in DIR (the floor for any generator that writes);
 *   generate   — synth_patient for every patient into a sink that discards the text
 *                (generation and JSON rendering, no I/O);
 *   synth      — synth_write_cohort: the whole `cartgate synth --format ndjson` path.
 * Reports the median of each in process CPU seconds (the machine is shared; wall time
 * measures the neighbours) with MB/s and patients/s, and synth/raw-write as the ratio. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "synth.h"

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int discard_sink(void *ud, const char *type, const char *id, const char *json, size_t len)
{
    (void)type;
    (void)id;
    (void)json;
    *(uint64_t *)ud += len + 1;
    return 0;
}

int main(int argc, char **argv)
{
    size_t patients = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 20000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    const char *dir = argc > 3 ? argv[3] : "/tmp/cartgate-bench-synth";
    if (patients == 0 || runs < 1 || runs > 99) {
        fprintf(stderr, "usage: bench_synth [PATIENTS] [RUNS] [DIR]\n");
        return 2;
    }
    mkdir(dir, 0755);
    char cohort[4096], raw[4096];
    snprintf(cohort, sizeof cohort, "%s/cohort", dir);
    snprintf(raw, sizeof raw, "%s/raw.bin", dir);
    synth_opts o;
    synth_opts_default(&o);
    o.patients = patients;
    o.seed = 1;
    double t_raw[99], t_gen[99], t_syn[99];
    uint64_t bytes = 0;
    char *block = malloc(1u << 20);
    if (!block)
        return 1;
    memset(block, 'x', 1u << 20);
    for (int r = 0; r < runs; r++) {
        fhir_error err;
        double t0 = cpu_s();
        if (synth_write_cohort(&o, cohort, &bytes, &err)) {
            fprintf(stderr, "bench_synth: %s\n", err.msg);
            return 1;
        }
        t_syn[r] = cpu_s() - t0;

        t0 = cpu_s();
        uint64_t gen_bytes = 0;
        fhir_buf gt;
        fhir_buf_init(&gt, 1u << 20);
        for (size_t i = 0; i < patients; i++) {
            fhir_buf_reset(&gt);
            if (synth_patient(&o, i, discard_sink, &gen_bytes, &gt, NULL, &err)) {
                fprintf(stderr, "bench_synth: %s\n", err.msg);
                return 1;
            }
        }
        fhir_buf_free(&gt);
        t_gen[r] = cpu_s() - t0;

        t0 = cpu_s();
        FILE *f = fopen(raw, "wb");
        if (!f) {
            perror(raw);
            return 1;
        }
        for (uint64_t left = bytes; left > 0;) {
            size_t n = left > (1u << 20) ? (1u << 20) : (size_t)left;
            if (fwrite(block, 1, n, f) != n) {
                perror(raw);
                return 1;
            }
            left -= n;
        }
        fclose(f);
        t_raw[r] = cpu_s() - t0;
        unlink(raw);
    }
    free(block);
    double mr = median(t_raw, runs), mg = median(t_gen, runs), ms = median(t_syn, runs);
    double mb = (double)bytes / 1e6;
    printf("bench_synth: %zu patients, %.1f MB NDJSON + ground truth, %d runs (median CPU s)\n",
           patients, mb, runs);
    printf("  raw write : %7.3f s  %8.1f MB/s\n", mr, mb / mr);
    printf("  generate  : %7.3f s  %8.1f MB/s  %9.0f patients/s (no I/O)\n", mg, mb / mg,
           (double)patients / mg);
    printf("  synth     : %7.3f s  %8.1f MB/s  %9.0f patients/s\n", ms, mb / ms,
           (double)patients / ms);
    printf("  ratio synth / raw write (time): %.2f\n", ms / mr);
    return 0;
}
