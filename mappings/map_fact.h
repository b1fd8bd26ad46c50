/* map_fact — a typed, three-valued fact with provenance, and the vocabulary of fact names
 * (mappings/FACTS.md). Shared by the clinical profile (producer) and the eligibility engine
 * (consumer). */
#ifndef MAP_FACT_H
#define MAP_FACT_H

#include <stdbool.h>
#include <stddef.h>

typedef enum map_fact_type {
    MAP_FACT_NUMBER = 0,
    MAP_FACT_BOOL,
    MAP_FACT_CODE,
    MAP_FACT_SET,
    MAP_FACT_STRING,
} map_fact_type;

#define MAP_FACT_SET_MAX 32
/* Number of facts in the vocabulary (FACTS.md); checked against the table in map_fact.c. */
#define MAP_FACT_COUNT 47

/* Partly known numbers (open world, FACTS.md): the true value is num exactly, at least num
 * (a count with outside therapy whose lines are not recorded) or at most num (an interval
 * whose end date is not recorded). */
typedef enum map_fact_bound {
    MAP_FACT_EXACT = 0,
    MAP_FACT_AT_LEAST = 1,
    MAP_FACT_AT_MOST = -1,
} map_fact_bound;

/* A fact as answered by a profile. All pointers are borrowed from the profile and valid
 * as long as the profile is. */
typedef struct map_fact {
    bool known;                 /* false = unknown: the data cannot establish it */
    map_fact_type type;
    double num;                 /* NUMBER */
    map_fact_bound bound;       /* NUMBER: exact, or a lower / upper bound */
    bool b;                     /* BOOL */
    const char *str;            /* CODE, STRING */
    const char *set[MAP_FACT_SET_MAX]; /* SET members (established) */
    size_t nset;
    bool open;                  /* SET: members not listed may be present (unknown) */
    const char *maybe[MAP_FACT_SET_MAX]; /* SET: possible members, not established */
    size_t nmaybe;
    const char *missing_as;     /* name listed under "missing" when a test on the partly known
                                   part stays unknown ("lineage"); NULL = the fact name */
    const char *settle;         /* plain words: the record that would settle what is unknown */
    const char *evidence;       /* provenance: "Condition/c1 code=C83.30 onset=2024-01-02; ..." */
} map_fact;

/* ---- the vocabulary (FACTS.md) -------------------------------------------------------- */

/* Index of fact name in FACTS.md order (0 .. MAP_FACT_COUNT-1), or -1 (name NULL or unknown). */
int map_fact_index(const char *name);

/* For the criteria loader: is name a fact, and of which type? (type may be NULL) */
bool map_fact_lookup(const char *name, map_fact_type *type);
/* Closed code lists for CODE/SET facts (diseases, primary_disease, sex, prior_classes,
 * first_line_classes, prior_drugs): is value allowed for fact name? false for other facts. */
bool map_fact_code_valid(const char *name, const char *value);
/* Iteration over the vocabulary in FACTS.md order: i in [0, map_fact_count()).
 * Static strings. */
size_t map_fact_count(void);
const char *map_fact_name_at(size_t i, map_fact_type *type);

#endif
