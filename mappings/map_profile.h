/* map_profile — the clinical profile of one patient, built from that patient's FHIR resources
 * and evaluated as of a given date. Facts are named by mappings/FACTS.md; each is known (with a
 * value and provenance) or unknown. Lines of therapy follow mappings/README.md.
 *
 * Typical use:
 *   fhir_error err;
 *   map_tables *t = map_tables_load(NULL, &err);               // once, at start-up
 *   map_profile_opts o; map_profile_opts_default(&o);          // as_of = today (fhir_clock)
 *   map_profile *p = map_profile_build(t, res, n, &o, &err);   // per patient
 *   const map_fact *f = map_profile_fact(p, "lines");          // f->known, f->num, f->evidence
 *   map_profile_free(p);
 *   map_tables_free(t);
 */
#ifndef MAP_PROFILE_H
#define MAP_PROFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_buf.h"
#include "fhir_error.h"
#include "fhir_node.h"
#include "map_fact.h"
#include "map_tables.h" /* map_tables_load / map_tables_free and the per-code lookups */

/* ---- options ------------------------------------------------------------------------- */

typedef struct map_profile_opts {
    int64_t as_of_days;      /* evaluation date, days since the epoch (fhir_clock) */
    int lab_lookback_days;   /* labs / ECOG older than this before as_of are ignored (90) */
    int lot_window_days;     /* regimen-defining window after a line's first drug (28) */
    int lot_gap_days;        /* gap with no regimen drug that ends a line (90) */
    int relapse_anchor_end;  /* relapse_months_after_1l from: 0 = start of 1L, 1 = end (0) */
    int refractory_days;     /* progression on or within this many days after a line = refractory (60) */
} map_profile_opts;

/* Defaults above; as_of_days = today from fhir_clock_now(). */
void map_profile_opts_default(map_profile_opts *o);

/* ---- building ------------------------------------------------------------------------ */

typedef struct map_profile map_profile;

/* Builds the profile of ONE patient from that patient's resources (array of resource nodes,
 * any order: Patient, Condition, Observation, MedicationRequest / MedicationAdministration /
 * MedicationStatement, Medication, Procedure, Coverage; other types are ignored). Contained
 * Medications ("#id") and referenced ones ("Medication/id", "urn:uuid:..." present in the
 * array) are resolved. The profile copies what it keeps: resources may be freed afterwards.
 * o NULL = defaults. Returns NULL with err set only on out-of-memory-like failures or a
 * missing Patient resource AND no subject reference; bad data yields unknown facts.
 * Caller frees with map_profile_free(). */
map_profile *map_profile_build(const map_tables *t, const fhir_node *const *resources, size_t n,
                               const map_profile_opts *o, fhir_error *err);
void map_profile_free(map_profile *p);

/* The resource types map_profile_build() reads: Patient, Condition, Observation, Medication,
 * MedicationRequest, MedicationAdministration, MedicationStatement, Procedure, Coverage. The
 * one list readers use to drop every other type before parsing it (type: len bytes, not
 * necessarily NUL-terminated). */
bool map_profile_reads(const char *type, size_t len);

/* Patient.id (or the id taken from the subject references when the Patient resource is
 * absent). Borrowed from p. */
const char *map_profile_patient_id(const map_profile *p);

/* The fact by name (borrowed from p). Returns NULL only when name is not in the vocabulary;
 * an unestablished fact comes back with known == false (and evidence saying why, when there
 * is something to say, e.g. "no ECOG or Karnofsky in lookback"). */
const map_fact *map_profile_fact(const map_profile *p, const char *name);
/* The fact at index i of the vocabulary (map_fact_index), borrowed; NULL when i is out of range. */
const map_fact *map_profile_fact_at(const map_profile *p, size_t i);

/* ---- lines of therapy ------------------------------------------------------------------ */

#define MAP_LINE_MAX_DRUGS 24
/* Resource references a line's evidence lists before "(+N more)". */
#define MAP_LINE_MAX_REFS 64

typedef struct map_line {
    int number;                 /* 1-based */
    int64_t start_days;         /* days since epoch */
    int64_t end_days;           /* last administration / event day of the line */
    const char *drugs[MAP_LINE_MAX_DRUGS]; /* ingredient keys, first-given order */
    size_t ndrugs;
    unsigned classes;           /* bit set of map_class (map_tables.h) */
    bool has_auto_hct;          /* planned sequence included an autologous HCT */
    bool has_allo_hct;
    bool is_car_t;              /* CAR T line (lymphodepletion and bridging folded in) */
    bool maintenance;           /* line continued as maintenance (subset of the regimen) */
    bool unknown_agents;        /* therapy recorded without its agents belongs to the line */
    bool end_unknown;           /* a drug of the line has no end date: end_days is a lower bound */
    const char *end_reason;     /* "new_drug", "gap", "hct", "car_t", "ongoing", "last" */
    const char *evidence;       /* resource ids that make up the line */
} map_line;

/* Number of derived lines (== the `lines` fact when known) and line i (0-based, borrowed). */
size_t map_profile_line_count(const map_profile *p);
const map_line *map_profile_line(const map_profile *p, size_t i);

/* Dated clinical events of the timeline (responses, progressions/relapses, transplants,
 * CAR T), the ones the line and relapse facts were derived from; in date order. */
typedef enum map_event_kind {
    MAP_EVENT_RESPONSE = 0,  /* response or remission documented */
    MAP_EVENT_PROGRESSION,   /* progression or relapse documented */
    MAP_EVENT_AUTO_HCT,
    MAP_EVENT_ALLO_HCT,
    MAP_EVENT_HCT,           /* transplant of unspecified type */
    MAP_EVENT_CAR_T,         /* CAR T infusion */
    MAP_EVENT_CAR_T_COLLECTION,
} map_event_kind;

typedef struct map_event {
    map_event_kind kind;
    int64_t day;             /* days since epoch */
    const char *ref;         /* "Observation/o1" (borrowed from the profile) */
} map_event;

/* Borrowed from the profile, valid until map_profile_free. */
size_t map_profile_event_count(const map_profile *p);
const map_event *map_profile_event(const map_profile *p, size_t i);
/* Plain words for a kind ("response", "progression or relapse", "autologous transplant" ...). */
const char *map_event_kind_text(map_event_kind k);
/* The date of the latest event of kind k as the profile JSON writes it (the greatest
 * "YYYY-MM-DD" text) into out (n >= 16 bytes). false (out "") when there is none. */
bool map_profile_last_event_day(const map_profile *p, map_event_kind k, char *out, size_t n);

/* ---- output ---------------------------------------------------------------------------- */

/* JSON of the whole profile into out (one object; pretty = FHIR_JSON_PRETTY layout, else one
 * line without a trailing newline). Schema: mappings/README.md "Profile JSON".
 *   {"patient":"id","as_of":"YYYY-MM-DD",
 *    "facts":{"age":{"known":true,"value":67,"evidence":"Patient/p1 birthDate=..."},
 *             "ecog":{"known":false,"evidence":"..."}, ...},
 *    "lines":[{"number":1,"start":"...","end":"...","drugs":[...],"classes":[...],
 *              "maintenance":false,"auto_hct":false,"allo_hct":false,"car_t":false,
 *              "end_reason":"new_drug","evidence":"..."}],
 *    "warnings":["Observation/o9 ANC 3000 10*3/uL implausible", ...]}
 * Returns 0, or -1 when out's cap is hit. */
int map_profile_write_json(const map_profile *p, fhir_buf *out, int pretty);

/* Readable multi-line text for `cartgate profile` (no PHI beyond what the facts hold). */
int map_profile_write_text(const map_profile *p, fhir_buf *out);

/* Warnings raised while building (implausible values, unknown units ...), borrowed. */
size_t map_profile_warning_count(const map_profile *p);
const char *map_profile_warning(const map_profile *p, size_t i);

#endif
