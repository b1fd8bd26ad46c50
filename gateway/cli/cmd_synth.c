/* cmd_synth — `cartgate synth`: writes a deterministic synthetic oncology cohort. */
#include <stdio.h>

#include "cli_opt.h"
#include "cmd.h"
#include "fhir_clock.h"
#include "fhir_error.h"
#include "synth.h"

int cmd_synth(int argc, char **argv)
{
    synth_opts o;
    synth_opts_default(&o);
    const char *out = NULL;
    long long patients = (long long)o.patients;
    int format = o.format == SYNTH_FORMAT_BUNDLE; /* index in "ndjson|bundle" */
    const cli_cmd cmd = {
        .name = "synth",
        .about = "Writes N synthetic US Core-shaped FHIR R4 patients (lymphoma, leukemia, myeloma\n"
                 "and control scenarios) into DIR, plus DIR/ground_truth.ndjson with the facts\n"
                 "(mappings/FACTS.md names) and expected eligibility of every patient.\n"
                 "Same seed and options give byte-identical output.",
        .opts = (const cli_opt[]){
            {.name = "seed", .kind = CLI_U64, .out = &o.seed, .arg = "S", .def = "1",
             .help = "unsigned 64-bit seed"},
            {.name = "patients", .kind = CLI_INT, .out = &patients, .arg = "N", .min = 0,
             .max = 100000000, .def = "100", .help = "number of patients"},
            {.name = "out", .kind = CLI_PATH, .out = &out, .arg = "DIR", .required = true,
             .help = "output directory (created if missing)"},
            {.name = "format", .kind = CLI_ENUM, .out = &format, .arg = "ndjson|bundle",
             .def = "ndjson",
             .help = "ndjson: bulk-export layout, <Type>.000.ndjson\n"
                     "bundle: one transaction Bundle per patient, <id>.json"},
            CLI_OPT_AS_OF(&o.as_of_days, "2026-11-01", "reference date all timelines end at"),
            {0},
        },
    };
    int first, rc = cli_parse(&cmd, argc, argv, &first);
    if (rc != CLI_GO)
        return rc;
    o.patients = (size_t)patients;
    o.format = format ? SYNTH_FORMAT_BUNDLE : SYNTH_FORMAT_NDJSON;
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
