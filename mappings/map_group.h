/* map_group — groups a stream of FHIR resources (Bundles, single resources, NDJSON lines,
 * possibly many patients and many files) by patient, so each patient's resources can be
 * handed to map_profile_build(). Resources are deep-cloned into the group's own arena.
 *
 * Patient key: Patient.id; for other resources the first of subject / patient / beneficiary
 * (Coverage) / individual references, as "Patient/<id>", a Bundle fullUrl ("urn:uuid:...")
 * of a Patient entry, or an absolute URL ending in Patient/<id>. Resources without a patient
 * (Medication, Organization ...) are kept in a shared pool; a Medication referenced by a
 * patient's medication resources is appended to that patient's array.
 *
 *   map_group *g = map_group_new(NULL);
 *   map_group_add_path(g, "export/", &err);     // file or folder, JSON Bundle or NDJSON
 *   map_group_finish(g);
 *   for (size_t i = 0; i < map_group_count(g); i++) {
 *       size_t n; const fhir_node *const *res = map_group_resources(g, i, &n);
 *       ... map_profile_build(t, res, n, &o, &err) ...
 *   }
 *   map_group_free(g);
 */
#ifndef MAP_GROUP_H
#define MAP_GROUP_H

#include <stdbool.h>
#include <stddef.h>

#include "fhir_arena.h"
#include "fhir_error.h"
#include "fhir_node.h"

typedef struct map_group_opts {
    bool all_types;          /* keep every resource type (default: only the types the
                                profile reads: Patient, Condition, Observation, Medication*,
                                Procedure, Coverage) */
    size_t max_bytes;        /* arena cap for cloned resources; 0 = 4 GiB */
    size_t max_file_bytes;   /* cap for one JSON file / one NDJSON line; 0 = 256 MiB */
} map_group_opts;

typedef struct map_group map_group;

/* o may be NULL (defaults). Caller frees with map_group_free(). */
map_group *map_group_new(const map_group_opts *o);
void map_group_free(map_group *g);

/* Adds one resource (a Bundle is unpacked: its entries are added, fullUrls remembered).
 * The node is cloned; the caller keeps ownership of res. Returns 0, or -1 with err set
 * (cap hit). Must be called before map_group_finish(). */
int map_group_add(map_group *g, const fhir_node *res, fhir_error *err);

/* Adds a path: a JSON file (Bundle or one resource), an NDJSON file (*.ndjson / *.jsonl, or
 * any file whose first non-blank byte starts a resource per line), or a directory (its
 * regular files *.json / *.ndjson / *.jsonl, sorted by name, not recursive; other files
 * are skipped). Errors name the file (and the line for NDJSON). Bad NDJSON lines are
 * counted (map_group_bad_lines) and skipped, not fatal. */
int map_group_add_path(map_group *g, const char *path, fhir_error *err);

/* Resolves references and builds the per-patient arrays. Idempotent; the accessors below
 * call it when needed. Patients come out in order of first appearance. */
void map_group_finish(map_group *g);

/* Patients found (a patient exists when a Patient resource or a reference to it was seen). */
size_t map_group_count(map_group *g);
/* Patient id of patient i (Patient.id, or the id of the reference). Borrowed from g. */
const char *map_group_patient_id(map_group *g, size_t i);
/* Resources of patient i (Patient first when present), borrowed from g, valid until
 * map_group_free(). *n receives the count. */
const fhir_node *const *map_group_resources(map_group *g, size_t i, size_t *n);

/* ---- shared with other readers (map_stream) ---------------------------------------------- */

/* The files a path stands for, in the order map_group_add_path() reads them: "-" (stdin) and
 * a non-folder path as they are, else the folder's regular *.json / *.ndjson / *.jsonl /
 * *.xml files sorted by name (not recursive, at most 100,000). fn is called with each (path
 * valid during the call); a non-zero return stops the walk and is returned (its error in
 * err). ignored (may be NULL) is called with every other regular file of a folder that is not
 * hidden (a dot name), so a caller can say what it did not read. Returns 0, or -1 with err
 * set (a path that does not exist, an unreadable folder). */
typedef int (*map_group_file_fn)(void *ud, const char *path, fhir_error *err);
int map_group_each_file(const char *path, map_group_file_fn fn, map_group_file_fn ignored, void *ud,
                        fhir_error *err);
/* Is the file read as NDJSON (*.ndjson, *.jsonl), not as one JSON document? */
bool map_group_is_ndjson(const char *path);
/* The patient reference of a resource as written: the first of subject / patient /
 * beneficiary / individual .reference; NULL when none. Borrowed from res. */
const char *map_group_patient_ref(const fhir_node *res);
/* The patient id a reference names when it is not a Bundle fullUrl: ".../Patient/<id>" (a
 * "/_history/..." tail dropped); NULL for urn: references and anything else. Copied into a
 * (NULL when a's cap is hit). */
const char *map_group_ref_patient_id(fhir_arena *a, const char *ref);

/* A copy of res into a without the top-level members the profile never reads ("text",
 * "meta"), as map_group keeps resources. NULL when a's cap is hit. */
fhir_node *map_group_clone_lean(fhir_arena *a, const fhir_node *res);

/* What a reader skipped, file by file, for the report of `screen` and `profile` (a second
 * pass over the same paths, made only when a run counted bad lines or orphans): bad_line is
 * called with the file and line number of every NDJSON line that is not a JSON object (the
 * lines map_group and map_stream skip), unresolved with a file and how many of its resources
 * have a urn: patient reference (subject, patient, ...) that names no Patient entry of their
 * Bundle (an NDJSON line is its own document). Nothing of the content is handed out. Either
 * callback may be NULL. Returns the number of bad lines, or -1 with err (an unreadable file
 * or folder, a malformed JSON document). max_line_bytes: as the run's (0 = 256 MiB). */
typedef struct map_group_report {
    void (*bad_line)(void *ud, const char *file, size_t line_no);
    void (*unresolved)(void *ud, const char *file, size_t count);
    void *ud;
    size_t max_line_bytes;
} map_group_report;
long map_group_report_paths(const char *const *paths, size_t n, const map_group_report *r, fhir_error *err);

/* Resources seen / kept / without a resolvable patient, and NDJSON lines skipped. */
size_t map_group_resources_seen(const map_group *g);
size_t map_group_orphans(const map_group *g);
size_t map_group_bad_lines(const map_group *g);
/* Files of the folders given that were not read: not *.json / *.ndjson / *.jsonl / *.xml. */
size_t map_group_files_ignored(const map_group *g);

#endif
