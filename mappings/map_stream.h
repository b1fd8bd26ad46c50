/* map_stream — every patient of a set of FHIR files (NDJSON, Bundles, single resources, folders
 * of them), one patient at a time and in bounded memory, skipping what the profile never
 * reads before parsing it. The offline counterpart of map_group (which holds the cohort):
 * each patient gets the same resources in the same order map_group would give it.
 *
 *   map_stream_stats st;
 *   map_stream_run(paths, npaths, NULL, on_patient, on_restart, ud, &st, &err);
 *
 * How (mappings/README.md "Streaming"):
 *  - Skipping: a bulk-export file named after a type the profile never reads
 *    (map_profile_reads, "Encounter.000.ndjson"), or listed with such a type in the export's
 *    manifest (a manifest.json in its folder), is not opened; an NDJSON line whose
 *    "resourceType" comes first is dropped on its first bytes; a Bundle is cut into entries by
 *    a cheap scan and only the entries of read types are parsed. Skipped content is not
 *    validated.
 *  - Sorted input (at most MAP_STREAM_MAX_MERGE NDJSON files, each ordered by patient id, as
 *    a per-type bulk export of our synth or per-patient searches give): the files are merged
 *    like sorted runs, one open reader each; one patient's resources are held at a time.
 *  - Anything else: resources are grouped in memory while they fit in the budget; beyond it
 *    every resource is partitioned by a hash of its patient into spill files (one pass), and
 *    each spill file is grouped on its own (split again when it is still too large).
 *  - Medications (shared, referenced by id or fullUrl) go to an on-disk table, whatever the
 *    path, with an index of 16 bytes a key in memory up to MAP_STREAM_MED_INDEX_MAX bytes
 *    (counting the old table while it doubles); when full, the index is written to the
 *    table's file as a run sorted by hash and memory keeps one 8-byte fence per 4 KiB block
 *    of it (1/256 of the runs' bytes; fences and runs together at most
 *    MAP_STREAM_MED_FENCES_MAX, about 134M keys, beyond which the run fails). A lookup tries
 *    memory, then the runs newest first: one block read a run, then the record's. Memory
 *    for the index: MAP_STREAM_MED_INDEX_MAX + the fences + one 4 KiB block.
 *  - A fullUrl reference ("urn:uuid:...") resolves within its own Bundle.
 * When the sorted merge finds input out of order (or a Medication outside a Medication file),
 * it calls on_restart and starts again with grouping: everything delivered before is void.
 */
#ifndef MAP_STREAM_H
#define MAP_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_error.h"
#include "fhir_node.h"

#define MAP_STREAM_BUDGET_DEFAULT (16u << 20) /* bytes of resource trees held at once */
#define MAP_STREAM_MAX_FILE_DEFAULT (256u << 20) /* one JSON file / NDJSON line */
#define MAP_STREAM_READ_BUF (128u << 10)      /* read buffer of each open NDJSON file */
#define MAP_STREAM_MAX_MERGE 64               /* files merged side by side (more: grouping) */
#define MAP_STREAM_MAX_PARTS 256              /* spill files written at once */
#define MAP_STREAM_SPILL_BUF (16u << 10)      /* write buffer of each spill file */
#define MAP_STREAM_MAX_SPLITS 4               /* levels of re-partitioning a spill file */
#define MAP_STREAM_MED_INDEX_MAX (8u << 20)   /* bytes of Medication index slots in memory */
#define MAP_STREAM_MED_FENCES_MAX (4u << 20)  /* bytes of fences and run entries of the index */

typedef enum map_stream_mode {
    MAP_STREAM_AUTO = 0,   /* sorted merge when every input is NDJSON, else grouping */
    MAP_STREAM_SORTED,     /* sorted merge (falls back to grouping like AUTO) */
    MAP_STREAM_GROUPED,    /* grouping: in memory, spilling beyond the budget */
    MAP_STREAM_SPILL,      /* grouping, spilling from the start (tests, benchmarks) */
} map_stream_mode;

typedef struct map_stream_opts {
    size_t budget;          /* bytes of resource trees held at once (0 = default) */
    size_t max_file_bytes;  /* one JSON file / one NDJSON line (0 = default) */
    const char *tmp_dir;    /* spill folder (NULL = $TMPDIR, else /tmp); files are unlinked */
    map_stream_mode mode;
    size_t med_index_max;   /* bytes of Medication index slots in memory (0 = default
                               MAP_STREAM_MED_INDEX_MAX; less than 1 KiB counts as 1 KiB) */
} map_stream_opts;

typedef struct map_stream_stats {
    const char *mode;         /* "sorted", "memory" or "spill": how the patients were grouped */
    size_t files;             /* input files */
    size_t files_skipped;     /* not opened: named (or listed in a manifest) after a type the
                                 profile never reads, and the manifests themselves */
    size_t manifests;         /* bulk export manifests (manifest.json) applied */
    size_t files_ignored;     /* in a folder, not *.json / *.ndjson / *.jsonl / *.xml */
    char first_ignored[256];  /* the first of them (a path), for the report */
    uint64_t bytes;           /* input bytes (files skipped included) */
    uint64_t bytes_skipped;   /* never parsed: skipped files, lines and Bundle entries */
    size_t resources;         /* resources parsed of the types the profile reads */
    size_t skipped;           /* lines and entries dropped on their type before parsing */
    size_t orphans;           /* parsed but without a resolvable patient (not Medications) */
    size_t bad_lines;         /* unparsable NDJSON lines (skipped) */
    size_t patients;          /* delivered */
    size_t restarts;          /* sorted merge abandoned for grouping */
    size_t spill_files;       /* spill files written (partitions, re-partitions) */
    uint64_t spill_bytes;     /* bytes written to spill files */
    size_t peak_held;         /* most bytes of resource trees held at once */
    size_t medications;       /* keys in the Medication table: a Medication stored under its
                                 id and its fullUrl counts twice; a key stored again counts
                                 once while its slot is in memory, again once it went to a run */
    size_t med_runs;          /* Medication index runs written to disk (index full) */
    size_t med_index_peak;    /* most bytes of Medication index slots in memory at once (the
                                 table, and the old one while it doubles) */
} map_stream_stats;

/* One patient: id (Patient.id, or the id its resources reference) and its resources (Patient
 * first when present, the Medications its resources reference appended), all borrowed during
 * the call only; order: the patient's place in the input, ascending in the order map_group
 * lists patients (those with a Patient resource by their first one, then the others by their
 * first resource; see map_stream_order). Return 0 to go on, or -1 with err set to stop. */
typedef int (*map_stream_patient_fn)(void *ud, const char *patient_id,
                                     const fhir_node *const *res, size_t n, uint64_t order,
                                     fhir_error *err);

/* The order of a patient: no_patient (no Patient resource among its resources), then the
 * input file (its index in the run's list of files), then the position of the first
 * resource that counts within that file (document order: an NDJSON line's byte offset, plus
 * the entry's index inside a Bundle). */
#define MAP_STREAM_ORDER_FILE_SHIFT 40
static inline uint64_t map_stream_order(bool no_patient, uint64_t file, uint64_t pos)
{
    return (no_patient ? 1ull << 63 : 0) | (file << MAP_STREAM_ORDER_FILE_SHIFT) |
           (pos & ((1ull << MAP_STREAM_ORDER_FILE_SHIFT) - 1));
}
/* Everything delivered so far is void (the sorted merge met unsorted input); the patients
 * will be delivered again. */
typedef void (*map_stream_restart_fn)(void *ud);

/* Reads paths (files, folders, "-" = one JSON document on stdin) in the order
 * map_group_add_path() would, and calls fn once per patient. o may be NULL (defaults); st
 * receives the counters (may be NULL). Returns 0, or -1 with err set: an unreadable file or
 * a malformed JSON document (named as map_group names it), a spill write error, or fn's
 * error. Bad NDJSON lines are counted, not fatal. */
int map_stream_run(const char *const *paths, size_t npaths, const map_stream_opts *o,
                   map_stream_patient_fn fn, map_stream_restart_fn restart, void *ud,
                   map_stream_stats *st, fhir_error *err);

#endif
