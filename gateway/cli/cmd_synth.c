/* cmd_synth — `cartgate synth`: writes a deterministic synthetic oncology cohort. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "fhir_clock.h"
#include "fhir_error.h"
#include "synth.h"

static void synth_usage(FILE *f)
{
    fprintf(f,
            "usage: cartgate synth --seed S --patients N --out DIR [--format ndjson|bundle]\n"
            "                      [--as-of YYYY-MM-DD]\n"
            "\n"
            "Writes N synthetic US Core-shaped FHIR R4 patients (lymphoma, leukemia, myeloma\n"
            "and control scenarios) into DIR, plus DIR/ground_truth.ndjson with the facts\n"
            "(mappings/FACTS.md names) and expected eligibility of every patient.\n"
            "Same seed and options give byte-identical output.\n"
            "\n"
            "  --seed S        unsigned 64-bit seed (default 1)\n"
            "  --patients N    number of patients (default 100)\n"
            "  --out DIR       output directory (created if missing)\n"
            "  --format F      ndjson: bulk-export layout, <Type>.000.ndjson (default)\n"
            "                  bundle: one transaction Bundle per patient, <id>.json\n"
            "  --as-of DATE    reference date all timelines end at (default 2026-11-01)\n");
}

static int parse_u64(const char *s, unsigned long long max, unsigned long long *out)
{
    if (!s || !*s || *s == '-')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

int cmd_synth(int argc, char **argv)
{
    synth_opts o;
    synth_opts_default(&o);
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        unsigned long long n;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            synth_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--seed")) {
            if (parse_u64(v, ~0ULL, &n)) {
                fprintf(stderr, "cartgate synth: --seed needs an unsigned integer\n");
                return 2;
            }
            o.seed = n;
            i++;
        } else if (!strcmp(a, "--patients")) {
            if (parse_u64(v, 100000000ULL, &n)) {
                fprintf(stderr, "cartgate synth: --patients needs an integer 0..100000000\n");
                return 2;
            }
            o.patients = (size_t)n;
            i++;
        } else if (!strcmp(a, "--out")) {
            if (!v) {
                fprintf(stderr, "cartgate synth: --out needs a directory\n");
                return 2;
            }
            out = v;
            i++;
        } else if (!strcmp(a, "--format")) {
            if (v && !strcmp(v, "ndjson"))
                o.format = SYNTH_FORMAT_NDJSON;
            else if (v && !strcmp(v, "bundle"))
                o.format = SYNTH_FORMAT_BUNDLE;
            else {
                fprintf(stderr, "cartgate synth: --format must be ndjson or bundle\n");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--as-of")) {
            if (fhir_clock_parse_ymd(v, &o.as_of_days)) {
                fprintf(stderr, "cartgate synth: --as-of needs a date YYYY-MM-DD\n");
                return 2;
            }
            i++;
        } else {
            fprintf(stderr, "cartgate synth: unknown option '%s'\n\n", a);
            synth_usage(stderr);
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "cartgate synth: --out DIR is required\n\n");
        synth_usage(stderr);
        return 2;
    }
    fhir_error err;
    uint64_t bytes = 0;
    int64_t t0 = fhir_clock_mono_ms();
    if (synth_write_cohort(&o, out, &bytes, &err)) {
        fprintf(stderr, "cartgate synth: %s\n", err.msg);
        return 1;
    }
    int64_t ms = fhir_clock_mono_ms() - t0;
    fprintf(stderr, "cartgate synth: %zu patients, %.1f MB in %s (%s) in %.2f s\n", o.patients,
            (double)bytes / 1e6, out, o.format == SYNTH_FORMAT_BUNDLE ? "bundle" : "ndjson",
            (double)ms / 1000.0);
    return 0;
}
