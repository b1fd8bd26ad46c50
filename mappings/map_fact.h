/* map_fact — a typed, three-valued fact with provenance (see mappings/FACTS.md).
 * Shared by the clinical profile (producer) and the eligibility engine (consumer). */
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

/* A fact as answered by a profile. All pointers are borrowed from the profile and valid
 * as long as the profile is. */
typedef struct map_fact {
    bool known;                 /* false = unknown: the data cannot establish it */
    map_fact_type type;
    double num;                 /* NUMBER */
    bool b;                     /* BOOL */
    const char *str;            /* CODE, STRING */
    const char *set[MAP_FACT_SET_MAX]; /* SET members */
    size_t nset;
    const char *evidence;       /* provenance: "Condition/c1 code=C83.30 onset=2024-01-02; ..." */
} map_fact;

#endif
