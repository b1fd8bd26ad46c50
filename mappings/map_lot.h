/* map_lot — lines of therapy from dated drug exposures and transplant / CAR T events.
 * Pure logic (no FHIR): the profile feeds it; unit tests drive it directly. Rules:
 * mappings/README.md "Lines of therapy" (after codes.md §5.3). */
#ifndef MAP_LOT_H
#define MAP_LOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "map_tables.h"

typedef struct map_lot_exposure {
    const map_drug *drug;   /* from map_tables (ingredient, classes, role); role "unknown":
                               therapy documented without its agents (a line of its own
                               unless it falls inside a known line) */
    int64_t start;          /* days since epoch */
    int64_t end;            /* last day given (== start for a single administration) */
    const char *ref;        /* "MedicationAdministration/a1" for provenance */
    bool end_unknown;       /* no end date recorded: the true end is end or later */
} map_lot_exposure;

typedef enum map_lot_event_kind {
    MAP_LOT_AUTO_HCT = 0,
    MAP_LOT_ALLO_HCT,
    MAP_LOT_HCT,            /* transplant of unspecified type */
    MAP_LOT_CAR_T,          /* CAR T infusion */
    MAP_LOT_CAR_T_COLLECTION,
} map_lot_event_kind;

typedef struct map_lot_event {
    map_lot_event_kind kind;
    int64_t day;
    const map_drug *product; /* CAR T product when known, else NULL */
    const char *ref;
} map_lot_event;

typedef struct map_lot_params {
    int window_days;         /* regimen-defining window (28) */
    int gap_days;            /* gap that ends a line (90) */
    int tandem_days;         /* second HCT within this many days of the first = same line (180) */
    int maint_after_hct_days;/* maintenance drug starting within this after HCT = same line (180) */
    int conditioning_days;   /* drug started within this before an HCT = conditioning (14) */
    int lymphodepletion_days;/* fludarabine/cyclophosphamide/bendamustine this close before CAR T (14) */
    int bridging_max_days;   /* collection this far before infusion opens a bridging window (120) */
    bool myeloma;            /* IMWG refinements (restart without progression = same line) */
    int64_t as_of;           /* for end_reason "ongoing" */
    const int64_t *progression_days; /* sorted; for the myeloma restart rule */
    size_t nprogression;
} map_lot_params;

/* Fills defaults (as_of = 0, myeloma false, no progression days). */
void map_lot_params_default(map_lot_params *p);

/* One derived line. drugs/refs point into the caller's exposures/tables. */
typedef struct map_lot_line {
    int64_t start, end;
    const char *drugs[24];
    size_t ndrugs;
    unsigned classes;
    bool auto_hct, allo_hct, hct_unspecified, car_t, maintenance;
    bool unknown_agents;     /* therapy without recorded agents belongs to the line */
    bool end_unknown;        /* a drug of the line has no end date: end is a lower bound */
    int64_t hct_day;         /* first HCT day, or INT64_MIN */
    const char *end_reason;  /* "new_drug" "gap" "hct" "car_t" "ongoing" "last" */
    size_t first_ref, nrefs; /* range into map_lot_result.refs */
} map_lot_line;

typedef struct map_lot_result {
    map_lot_line *lines;
    size_t nlines;
    const char **refs;       /* provenance refs of each line, contiguous per line */
    size_t nrefs;
} map_lot_result;

/* Derives lines. Inputs are not modified (copied and sorted internally). Caller frees the
 * result with map_lot_result_free(). Returns 0 (aborts only on out-of-memory). */
int map_lot_derive(const map_lot_exposure *ex, size_t nex, const map_lot_event *ev, size_t nev,
                   const map_lot_params *p, map_lot_result *out);
void map_lot_result_free(map_lot_result *r);

#endif
