/* map_tables — the terminology tables in mappings/ (*.tsv files) (diagnoses, labs, drugs, procedures)
 * and the per-code lookups the clinical profile is built from. Tables are data: one row per
 * code with a `source` column citing the codes reference (codes.md). A bad row is an error
 * naming file:line. */
#ifndef MAP_TABLES_H
#define MAP_TABLES_H

#include <stdbool.h>
#include <stddef.h>

#include "fhir_error.h"

typedef struct map_tables map_tables;

/* Loads every table from dir (NULL = the data folder's mappings/, fhir_datadir.h); errors carry
 * file:line. Caller frees with map_tables_free. */
map_tables *map_tables_load(const char *dir, fhir_error *err);
void map_tables_free(map_tables *t);

/* Therapy classes (bit positions; keys in FACTS.md). */
typedef enum map_class {
    MAP_CLASS_ANTI_CD20 = 0,
    MAP_CLASS_ANTHRACYCLINE,
    MAP_CLASS_ALKYLATOR,
    MAP_CLASS_BTKI,
    MAP_CLASS_BCL2I,
    MAP_CLASS_IMID,
    MAP_CLASS_PI,
    MAP_CLASS_ANTI_CD38,
    MAP_CLASS_BCMA_DIRECTED,
    MAP_CLASS_CD19_DIRECTED,
    MAP_CLASS_BISPECIFIC,
    MAP_CLASS_CAR_T,
    MAP_CLASS_COUNT
} map_class;

/* Class key ("anti_cd20" ...) of a class, static string; NULL when out of range. */
const char *map_class_key(map_class c);
/* Class by key; -1 when unknown. */
int map_class_from_key(const char *key);

/* Coding systems the tables know (FHIR system URIs, codes.md preamble). */
#define MAP_SYS_ICD10CM "http://hl7.org/fhir/sid/icd-10-cm"
#define MAP_SYS_SNOMED "http://snomed.info/sct"
#define MAP_SYS_LOINC "http://loinc.org"
#define MAP_SYS_RXNORM "http://www.nlm.nih.gov/research/umls/rxnorm"
#define MAP_SYS_ICDO3 "http://terminology.hl7.org/CodeSystem/icd-o-3"
#define MAP_SYS_CPT "http://www.ama-assn.org/go/cpt"
#define MAP_SYS_ICD10PCS "http://www.cms.gov/Medicare/Coding/ICD10"
#define MAP_SYS_HCPCS "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
#define MAP_SYS_UCUM "http://unitsofmeasure.org"

/* ---- diagnoses --------------------------------------------------------------------------- */

#define MAP_DX_UNSPEC_MAX 8

typedef struct map_dx {
    const char *concept;   /* disease concept key (FACTS.md) or one of the markers below */
    const char *row;       /* "diagnoses.tsv:12" for provenance */
    /* The code leaves a more specific disease open (diagnoses.tsv column `unspecified`):
     * what it does not say ("lineage", "histology", "grade"; NULL when fully specified) and
     * the disease concepts it may also be (e.g. C91.0x: lineage, b_all). */
    const char *unspec_axis;
    const char *unspec[MAP_DX_UNSPEC_MAX];
    size_t nunspec;
} map_dx;
/* Marker concepts besides the disease keys: "cns_secondary" (secondary CNS involvement),
 * "hx_car_t" (personal history of CAR T), "hx_hct" (stem cell transplant status),
 * "hct_ineligible", "infection". */

/* Maps one coding to a concept. system may be NULL (then the code's shape decides: ICD-10-CM
 * vs SNOMED digits); ICD-10-CM is matched with and without the dot, by the longest table
 * prefix. display (may be NULL) is matched against name rows (`name` system) when the code
 * is unknown or the table marks the code as needing the name. Returns false when unmapped. */
bool map_dx_lookup(const map_tables *t, const char *system, const char *code,
                   const char *display, map_dx *out);

/* ---- labs ---------------------------------------------------------------------------------- */

typedef struct map_lab_def {
    const char *analyte;     /* fact name: "anc", "creatinine", "ecog", "weight" ... */
    const char *unit;        /* canonical UCUM */
    double lo, hi;           /* plausible range in the canonical unit */
    const char *row;
} map_lab_def;

/* Observation code (system NULL = LOINC; SNOMED rows exist for ECOG/Karnofsky) -> analyte
 * definition; NULL when not a known lab. Borrowed from t. */
const map_lab_def *map_lab_lookup(const map_tables *t, const char *system, const char *code);

typedef enum map_lab_status {
    MAP_LAB_OK = 0,
    MAP_LAB_UNIT_UNKNOWN,    /* unit missing or not convertible: value not used */
    MAP_LAB_IMPLAUSIBLE,     /* converted value outside the plausible range: flagged, not used */
} map_lab_status;

/* Converts value in unit (UCUM or common EHR spelling; NULL/"" = missing) to the analyte's
 * canonical unit using units.tsv. *out gets the converted value when status is OK or
 * IMPLAUSIBLE. */
map_lab_status map_lab_normalize(const map_tables *t, const map_lab_def *def, double value,
                                 const char *unit, double *out);

/* ---- drugs ---------------------------------------------------------------------------------- */

typedef struct map_drug {
    const char *ingredient;  /* ingredient key ("lenalidomide") */
    unsigned classes;        /* bit set of map_class */
    const char *role;        /* "therapy", "steroid" (counts only inside a regimen),
                                "lymphodepletion" (fludarabine), "car_t", "supportive" */
    const char *row;
} map_drug;

/* By RxNorm code (system may be NULL = RxNorm), or by text: ingredient, brand or USAN names
 * found as whole words in text (case-insensitive). Returns NULL when unmapped. */
const map_drug *map_drug_lookup_code(const map_tables *t, const char *system, const char *code);
const map_drug *map_drug_lookup_text(const map_tables *t, const char *text);
/* Ingredient key -> classes (0 when unknown). */
unsigned map_drug_classes(const map_tables *t, const char *ingredient);
/* Ingredient key -> its drug row (NULL when unknown). Borrowed from t. */
const map_drug *map_drug_by_ingredient(const map_tables *t, const char *ingredient);
/* Is ingredient a key of drugs.tsv (for validating `prior_drugs` values in criteria)? */
bool map_tables_has_ingredient(const map_tables *t, const char *ingredient);
/* May the drug continue as maintenance in the same line (codes.md §5.3.6)? */
bool map_drug_maintenance(const map_drug *d);
/* Substitution group ("platinum") or NULL (codes.md §5.3.4). Static/borrowed. */
const char *map_drug_subst_group(const map_drug *d);

/* ---- coded observation answers ---------------------------------------------------------------- */

/* kind "status" (mCODE disease status value -> "response" | "stable" | "progression" |
 * "undetermined"), "ecog" / "karnofsky" (LA answer code -> "0".."100"). NULL when unmapped. */
const char *map_answer_lookup(const map_tables *t, const char *kind, const char *system,
                              const char *code);

/* ---- procedures ------------------------------------------------------------------------------- */

/* "auto_hct", "allo_hct", "hct" (type unspecified), "car_t", "car_t_collection" or NULL.
 * Code first (system URI or table key), then display against the name rows. *row gets the
 * table row ("procedures.tsv:12"), *product the CAR T ingredient key when the code names it
 * (else NULL); both may be NULL pointers. Static/borrowed from t. */
const char *map_proc_lookup(const map_tables *t, const char *system, const char *code,
                            const char *display, const char **row, const char **product);

#endif
