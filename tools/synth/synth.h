/* synth — deterministic synthetic oncology cohorts (US Core-shaped FHIR R4) with ground truth.
 *
 * Each patient is generated from its own PRNG stream (splitmix64 of seed and patient index),
 * so patient i is the same whatever N is, and the same seed gives byte-identical output.
 * All dates are relative to opts.as_of_days, never the wall clock.
 *
 * A patient is first drawn as a small clinical "truth" (diagnoses, regimens with lines,
 * responses and progressions, transplants, labs, performance status, residence, payer);
 * the FHIR resources and the ground-truth facts (names from mappings/FACTS.md) are both
 * rendered from that truth, so they cannot drift apart. Noise (alternate units, duplicate
 * orders, contained/referenced Medications, ICD-only or SNOMED-only coding,
 * entered-in-error conditions, stale or missing labs) is applied at rendering time and the
 * ground truth says what the data can and cannot establish.
 *
 * Codes come only from the codes reference (codes.md) (see the tables in synth.c).
 *
 * Ground truth (DIR/ground_truth.ndjson, one object per patient per line):
 *   {"patient": "<Patient.id>", "as_of": "YYYY-MM-DD", "scenario": "<name>",
 *    "facts": {<fact>: <value>, ...},         every fact the data establishes (FACTS.md names
 *                                             and JSON types; sets sorted where order is free)
 *    "unknown": ["<fact>", ...],              facts the data deliberately leaves unknown
 *    "expected_indications": ["axi-cel:LBCL-2L", ...],   label-eligible product:indication
 *    "possible_indications": ["liso-cel:LBCL-2L-TI", ...], possibly eligible (a hard-gate fact
 *                                             is unknown, e.g. hct_ineligible or age)
 *    "expected_category": "eligible|possibly_eligible|not_eligible",
 *    "noise": ["alternate_unit", "icd_only", ...]}       the noise applied to this patient
 * Relapse/refractory facts follow the rules of mappings/README.md applied to the intended
 * timeline; eligibility follows clinical.md §1.1/§1.4 as encoded in conf/criteria/. */
#ifndef SYNTH_H
#define SYNTH_H

/* Byte caps of the generator's buffers. */
#define SYNTH_RESOURCE_MAX (1u << 20)  /* one rendered resource */
#define SYNTH_BUNDLE_MAX (256u << 20)  /* one patient's Bundle (bundle format) */
#define SYNTH_TRUTH_MAX (1u << 20)     /* one patient's ground-truth line */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_buf.h"
#include "fhir_error.h"

typedef enum synth_format {
    SYNTH_FORMAT_NDJSON = 0, /* bulk-export layout: <Type>.000.ndjson, one file per type */
    SYNTH_FORMAT_BUNDLE,     /* one transaction Bundle (PUT entries) per patient file */
} synth_format;

typedef struct synth_opts {
    uint64_t seed;
    size_t patients;
    int64_t as_of_days;   /* days since the epoch; default 2026-11-01 */
    synth_format format;
} synth_opts;

/* seed 1, 100 patients, as of 2026-11-01, NDJSON. */
void synth_opts_default(synth_opts *o);

/* Scenarios (clinical stories) in a fixed order; names are static strings. With
 * N >= synth_scenario_count() every scenario appears at least once (the first patients
 * cycle through all of them, in a seed-dependent rotation). */
size_t synth_scenario_count(void);
const char *synth_scenario_name(size_t i);

/* Receives one generated resource: its type ("Patient", "Condition", ...), id and compact
 * JSON text (no trailing newline). json is borrowed for the duration of the call.
 * Return 0 to continue, non-zero to stop (synth_patient then returns -1). */
typedef int (*synth_sink)(void *ud, const char *type, const char *id, const char *json,
                          size_t len);

/* Generates patient `index` (0-based) of the cohort described by o: calls sink once per
 * resource (Patient first), and writes its ground-truth line (one JSON object, no newline)
 * into gt (appended; gt may be NULL). Scenario name of the patient is stored in
 * *scenario (static string) when scenario is non-NULL. Returns 0, or -1 with err set. */
int synth_patient(const synth_opts *o, size_t index, synth_sink sink, void *ud, fhir_buf *gt,
                  const char **scenario, fhir_error *err);

/* Writes the whole cohort into directory out_dir (created if missing): resources in the
 * chosen format plus ground_truth.ndjson (one line per patient). Returns 0, or -1 with err
 * set (the message names the file). *bytes_out (may be NULL) receives bytes written. */
int synth_write_cohort(const synth_opts *o, const char *out_dir, uint64_t *bytes_out,
                       fhir_error *err);

#endif
