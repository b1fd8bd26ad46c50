/* bench_profile — clinical profiles built per second from an NDJSON synth cohort, and the
 * share of time spent parsing vs profiling. Baseline in the same run: a bare streaming NDJSON
 * parse of the same files (fhir_ndjson, no grouping).
 *
 *   bench_profile [PATIENTS=10000] [RUNS=5] [DIR=/tmp/cartgate-bench-profile]
 *
 * The cohort is generated once with the synth library (seed 1, NDJSON bulk layout) when DIR
 * does not already hold one of that size. Each run times, in order:
 *   raw parse  — fhir_ndjson over every *.ndjson file, trees built and discarded;
 *   group      — map_group_add_path(DIR) + map_group_finish (parse, clone, group by patient);
 *   profile    — map_profile_build + map_profile_write_json for every patient.
 * Prints the median of each (process CPU seconds) and the derived rates, plus total wall time. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fhir_clock.h"
#include "fhir_ndjson.h"
#include "map_group.h"
#include "map_profile.h"
#include "synth.h"

/* Process CPU time (user + system): on a shared, loaded machine wall time measures the
 * neighbours; CPU time still includes page faults and kernel work done for us. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : (x > y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int count_cb(void *ud, const fhir_node *res, size_t line, fhir_error *err)
{
    (void)res;
    (void)line;
    (*(size_t *)ud)++;
    return 0;
}

static size_t raw_parse(const char *dir)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 7 || strcmp(de->d_name + l - 7, ".ndjson") || !strncmp(de->d_name, "ground_truth", 12))
            continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        fhir_ndjson *r = fhir_ndjson_new(NULL, count_cb, NULL, &n);
        fhir_error err;
        if (fhir_ndjson_read_path(r, p, &err))
            fprintf(stderr, "%s: %s\n", p, err.msg);
        fhir_ndjson_free(r);
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    size_t patients = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 10000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    const char *dir = argc > 3 ? argv[3] : "/tmp/cartgate-bench-profile";
    if (runs < 1 || runs > 50 || patients < 1) {
        fprintf(stderr, "usage: bench_profile [PATIENTS] [RUNS 1..50] [DIR]\n");
        return 2;
    }
    char marker[1024];
    snprintf(marker, sizeof marker, "%s/.bench-patients-%zu", dir, patients);
    struct stat st;
    fhir_error err;
    fhir_error_clear(&err);
    if (stat(marker, &st) != 0) {
        synth_opts so;
        synth_opts_default(&so);
        so.seed = 1;
        so.patients = patients;
        so.format = SYNTH_FORMAT_NDJSON;
        uint64_t bytes = 0;
        double t0 = now_s();
        if (synth_write_cohort(&so, dir, &bytes, &err)) {
            fprintf(stderr, "synth: %s\n", err.msg);
            return 1;
        }
        printf("generated %zu patients, %.1f MB in %.2f s\n", patients, (double)bytes / 1e6, now_s() - t0);
        FILE *m = fopen(marker, "w");
        if (m)
            fclose(m);
    }
    map_tables *t = map_tables_load(NULL, &err);
    if (!t) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    map_profile_opts o;
    map_profile_opts_default(&o);
    o.as_of_days = fhir_clock_days_from_civil(2026, 11, 1);

    double traw[50], tgroup[50], tprof[50];
    size_t nres = 0, npat = 0, bytes_json = 0;
    double wall0 = wall_s();
    for (int r = 0; r < runs; r++) {
        double t0 = now_s();
        nres = raw_parse(dir);
        traw[r] = now_s() - t0;

        t0 = now_s();
        map_group *g = map_group_new(NULL);
        if (map_group_add_path(g, dir, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        map_group_finish(g);
        tgroup[r] = now_s() - t0;

        t0 = now_s();
        npat = map_group_count(g);
        fhir_buf out;
        fhir_buf_init(&out, 1u << 24);
        bytes_json = 0;
        for (size_t i = 0; i < npat; i++) {
            size_t n;
            const fhir_node *const *res = map_group_resources(g, i, &n);
            map_profile *p = map_profile_build(t, res, n, &o, &err);
            if (!p) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            fhir_buf_reset(&out);
            map_profile_write_json(p, &out, 0);
            bytes_json += out.len;
            map_profile_free(p);
        }
        fhir_buf_free(&out);
        tprof[r] = now_s() - t0;
        map_group_free(g);
        fprintf(stderr, "run %d: raw %.3f s, group %.3f s, profile %.3f s\n", r + 1, traw[r], tgroup[r], tprof[r]);
    }
    double wall = wall_s() - wall0;
    double a = median(traw, runs), b = median(tgroup, runs), c = median(tprof, runs);
    printf("(times are process CPU seconds, median of %d runs; wall time of all runs %.1f s)\n", runs, wall);
    printf("cohort: %zu patients, %zu resources (dir %s), %zu bytes of profile JSON\n", npat, nres, dir, bytes_json);
    printf("raw NDJSON parse (baseline): %.3f s  %.0f resources/s\n", a, (double)nres / a);
    printf("parse + group:               %.3f s  %.0f resources/s  (%.2fx the bare parse)\n", b,
           (double)nres / b, b / a);
    printf("profile + JSON:              %.3f s  %.0f profiles/s\n", c, (double)npat / c);
    printf("end to end:                  %.3f s  %.0f profiles/s; parsing %.0f%%, profiling %.0f%%\n",
           b + c, (double)npat / (b + c), 100 * b / (b + c), 100 * c / (b + c));
    map_tables_free(t);
    return 0;
}
