/* bench_xml — FHIR XML parse throughput to the resource tree (fhir_xml_parse) against JSON
 * parse throughput (fhir_json_parse) for the same resources: the official R4 example pairs
 * in $CARTGATE_SHARED_DATA/fhir-r4-examples (default ../shared/data relative to the repo).
 * Also times the writers (tree -> XML, tree -> JSON). Each timed run is a forked child so
 * its peak RSS is measured alone.
 *
 *   bench_xml [RUNS=5] [PASSES=20] [DATA_DIR]
 *
 * One run parses every example PASSES times (arena reset per document). Prints the median
 * of RUNS for each mode: MB/s of its own input, resources/s, the XML/JSON ratio in
 * resources/s (the same resources), and each mode's peak RSS. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fhir_json.h"
#include "fhir_xml.h"

typedef struct doc {
    char *xml, *json;
    size_t xml_len, json_len;
} doc;

static doc *docs;
static size_t ndocs;

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (!b)
        abort();
    *len = fread(b, 1, (size_t)n, f);
    b[*len] = '\0';
    fclose(f);
    return b;
}

static void load(const char *dir)
{
    char path[8192], line[1024];
    snprintf(path, sizeof path, "%s/index.tsv", dir);
    FILE *idx = fopen(path, "r");
    if (!idx) {
        fprintf(stderr, "bench_xml: %s not found (set CARTGATE_SHARED_DATA or pass DATA_DIR)\n", path);
        exit(1);
    }
    size_t alloc = 0;
    while (fgets(line, sizeof line, idx)) {
        char *tab = strchr(line, '\t');
        if (!tab || !strncmp(line, "basename\t", 9))
            continue;
        *tab = '\0';
        if (ndocs == alloc) {
            alloc = alloc ? alloc * 2 : 512;
            docs = realloc(docs, alloc * sizeof *docs);
            if (!docs)
                abort();
        }
        doc *d = &docs[ndocs];
        snprintf(path, sizeof path, "%s/xml/%s.xml", dir, line);
        d->xml = slurp(path, &d->xml_len);
        snprintf(path, sizeof path, "%s/json/%s.json", dir, line);
        d->json = slurp(path, &d->json_len);
        if (!d->xml || !d->json) {
            fprintf(stderr, "bench_xml: cannot read pair %s\n", line);
            exit(1);
        }
        ndocs++;
    }
    fclose(idx);
}

enum mode { PARSE_JSON, PARSE_XML, WRITE_JSON, WRITE_XML, NMODES };
static const char *mode_name[] = {"parse JSON", "parse XML", "write JSON", "write XML"};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The timed body (in the child). Returns seconds; *bytes gets the bytes processed. */
static double body(int mode, int passes, double *bytes)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_arena *trees = fhir_arena_new(0);
    fhir_buf out;
    fhir_buf_init(&out, 0);
    fhir_error err;
    fhir_node **pre = NULL;
    if (mode == WRITE_JSON || mode == WRITE_XML) { /* trees are built outside the clock */
        pre = calloc(ndocs, sizeof *pre);
        for (size_t i = 0; i < ndocs; i++)
            pre[i] = fhir_json_parse(trees, docs[i].json, docs[i].json_len, NULL, &err);
    }
    double b = 0, t0 = now();
    for (int p = 0; p < passes; p++) {
        for (size_t i = 0; i < ndocs; i++) {
            fhir_node *n = NULL;
            switch (mode) {
            case PARSE_JSON:
                n = fhir_json_parse(a, docs[i].json, docs[i].json_len, NULL, &err);
                b += (double)docs[i].json_len;
                break;
            case PARSE_XML:
                n = fhir_xml_parse(a, docs[i].xml, docs[i].xml_len, NULL, &err);
                b += (double)docs[i].xml_len;
                break;
            case WRITE_JSON:
                fhir_buf_reset(&out);
                n = fhir_json_write(&out, pre[i], FHIR_JSON_COMPACT) == 0 ? pre[i] : NULL;
                b += (double)out.len;
                break;
            case WRITE_XML:
                fhir_buf_reset(&out);
                n = fhir_xml_write(&out, pre[i], FHIR_XML_COMPACT, &err) == 0 ? pre[i] : NULL;
                b += (double)out.len;
                break;
            }
            if (!n) {
                fprintf(stderr, "bench_xml: %s failed on document %zu: %s\n", mode_name[mode], i, err.msg);
                exit(1);
            }
            fhir_arena_reset(a);
        }
    }
    double t = now() - t0;
    fhir_buf_free(&out);
    free(pre);
    fhir_arena_free(trees);
    fhir_arena_free(a);
    *bytes = b;
    return t;
}

typedef struct result {
    double secs, bytes;
    long rss_kib;
} result;

static result run_child(int mode, int passes)
{
    int fd[2];
    if (pipe(fd) != 0) {
        perror("pipe");
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        close(fd[0]);
        double bytes = 0, secs = body(mode, passes, &bytes);
        double msg[2] = {secs, bytes};
        if (write(fd[1], msg, sizeof msg) != (ssize_t)sizeof msg)
            _exit(1);
        _exit(0);
    }
    close(fd[1]);
    double msg[2] = {0, 0};
    ssize_t got = read(fd[0], msg, sizeof msg);
    close(fd[0]);
    int st = 0;
    struct rusage ru;
    wait4(pid, &st, 0, &ru);
    if (got != (ssize_t)sizeof msg || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "bench_xml: child for %s failed\n", mode_name[mode]);
        exit(1);
    }
    return (result){msg[0], msg[1], ru.ru_maxrss};
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 5;
    int passes = argc > 2 ? atoi(argv[2]) : 20;
    char dir[2048];
    if (argc > 3) {
        snprintf(dir, sizeof dir, "%s", argv[3]);
    } else {
        const char *s = getenv("CARTGATE_SHARED_DATA");
        snprintf(dir, sizeof dir, "%s/fhir-r4-examples", s && *s ? s : "../shared/data");
    }
    if (runs < 1 || passes < 1) {
        fprintf(stderr, "usage: bench_xml [RUNS>=1] [PASSES>=1] [DATA_DIR]\n");
        return 2;
    }
    load(dir);
    double xml_bytes = 0, json_bytes = 0;
    for (size_t i = 0; i < ndocs; i++)
        xml_bytes += (double)docs[i].xml_len, json_bytes += (double)docs[i].json_len;
    printf("bench_xml: %zu resources, %.2f MB XML, %.2f MB JSON, %d passes per run, %d runs\n", ndocs,
           xml_bytes / 1e6, json_bytes / 1e6, passes, runs);

    /* Modes are interleaved run by run, so a busy machine slows all of them alike. */
    double med_rps[NMODES], med_mbs[NMODES];
    long max_rss[NMODES] = {0};
    double *rps = calloc((size_t)runs * NMODES, sizeof *rps), *mbs = calloc((size_t)runs * NMODES, sizeof *mbs);
    for (int r = 0; r < runs; r++)
        for (int m = 0; m < NMODES; m++) {
            result res = run_child(m, passes);
            rps[m * runs + r] = (double)ndocs * passes / res.secs;
            mbs[m * runs + r] = res.bytes / 1e6 / res.secs;
            if (res.rss_kib > max_rss[m])
                max_rss[m] = res.rss_kib;
        }
    for (int m = 0; m < NMODES; m++) {
        qsort(rps + m * runs, (size_t)runs, sizeof *rps, cmp_double);
        qsort(mbs + m * runs, (size_t)runs, sizeof *mbs, cmp_double);
        med_rps[m] = rps[m * runs + runs / 2];
        med_mbs[m] = mbs[m * runs + runs / 2];
        printf("  %-10s %8.1f MB/s  %9.0f resources/s  peak RSS %.1f MiB\n", mode_name[m], med_mbs[m],
               med_rps[m], (double)max_rss[m] / 1024.0);
    }
    printf("ratio XML/JSON parse (resources/s): %.2f\n", med_rps[PARSE_XML] / med_rps[PARSE_JSON]);
    printf("ratio XML/JSON write (resources/s): %.2f\n", med_rps[WRITE_XML] / med_rps[WRITE_JSON]);
    free(rps);
    free(mbs);
    for (size_t i = 0; i < ndocs; i++)
        free(docs[i].xml), free(docs[i].json);
    free(docs);
    return 0;
}
