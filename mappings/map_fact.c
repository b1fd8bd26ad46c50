/* map_fact — the fact vocabulary of mappings/FACTS.md: names, types and the closed code lists
 * of code/set facts. See map_fact.h. */
#include "map_fact.h"
#include "fhir_hash.h"

#include <ctype.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "map_tables.h"


typedef struct fact_def {
    const char *name;
    map_fact_type type;
} fact_def;

static const fact_def FACTS[] = {
    {"age", MAP_FACT_NUMBER},
    {"sex", MAP_FACT_CODE},
    {"deceased", MAP_FACT_BOOL},
    {"diseases", MAP_FACT_SET},
    {"primary_disease", MAP_FACT_CODE},
    {"histology_transformed", MAP_FACT_BOOL},
    {"pcnsl", MAP_FACT_BOOL},
    {"cns_involvement", MAP_FACT_BOOL},
    {"lines", MAP_FACT_NUMBER},
    {"prior_classes", MAP_FACT_SET},
    {"prior_drugs", MAP_FACT_SET},
    {"first_line_classes", MAP_FACT_SET},
    {"relapsed", MAP_FACT_BOOL},
    {"refractory", MAP_FACT_BOOL},
    {"primary_refractory", MAP_FACT_BOOL},
    {"relapse_months_after_1l", MAP_FACT_NUMBER},
    {"relapse_months_after_1l_start", MAP_FACT_NUMBER},
    {"relapse_months_after_1l_end", MAP_FACT_NUMBER},
    {"relapse_months_after_asct", MAP_FACT_NUMBER},
    {"relapse_count", MAP_FACT_NUMBER},
    {"lenalidomide_refractory", MAP_FACT_BOOL},
    {"btki_progression", MAP_FACT_BOOL},
    {"mm_high_risk", MAP_FACT_BOOL},
    {"prior_auto_hct", MAP_FACT_BOOL},
    {"prior_allo_hct", MAP_FACT_BOOL},
    {"prior_car_t", MAP_FACT_BOOL},
    {"hct_ineligible", MAP_FACT_BOOL},
    {"hct_refusal", MAP_FACT_BOOL},
    {"ecog", MAP_FACT_NUMBER},
    {"anc", MAP_FACT_NUMBER},
    {"alc", MAP_FACT_NUMBER},
    {"platelets", MAP_FACT_NUMBER},
    {"hemoglobin", MAP_FACT_NUMBER},
    {"creatinine", MAP_FACT_NUMBER},
    {"crcl", MAP_FACT_NUMBER},
    {"egfr", MAP_FACT_NUMBER},
    {"renal_function", MAP_FACT_NUMBER},
    {"bilirubin", MAP_FACT_NUMBER},
    {"ast", MAP_FACT_NUMBER},
    {"alt", MAP_FACT_NUMBER},
    {"lvef", MAP_FACT_NUMBER},
    {"spo2", MAP_FACT_NUMBER},
    {"active_infection", MAP_FACT_BOOL},
    {"postal_code", MAP_FACT_STRING},
    {"latitude", MAP_FACT_NUMBER},
    {"longitude", MAP_FACT_NUMBER},
    {"payer", MAP_FACT_STRING},
};
#define NFACTS (sizeof FACTS / sizeof FACTS[0])
_Static_assert(NFACTS == MAP_FACT_COUNT, "MAP_FACT_COUNT must match the vocabulary");

static const char *const DISEASES[] = {
    "dlbcl_nos", "hgbcl", "pmbcl", "tfl", "fl_3b", "fl", "mcl", "cll_sll", "mzl",
    "b_all", "all_nos", "mm", "pcl", "pcnsl", "hl", "other_heme", "non_heme", NULL,
};
static const char *const SEXES[] = {"male", "female", "other", "unknown", NULL};


static int list_index(const char *const *list, const char *s)
{
    for (int i = 0; list[i]; i++)
        if (!strcmp(list[i], s))
            return i;
    return -1;
}

/* Name -> index: an open-addressing table over the vocabulary, built once (the profile
 * looks facts up by name a few hundred times per patient). */
#define INDEX_SLOTS 128
_Static_assert(NFACTS * 2 <= INDEX_SLOTS, "INDEX_SLOTS must stay at least twice the vocabulary");
static int8_t index_slot[INDEX_SLOTS];
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static size_t name_hash(const char *s)
{
    return fhir_hash32_str(FHIR_HASH32_INIT, s) & (INDEX_SLOTS - 1);
}

static void index_build(void)
{
    memset(index_slot, -1, sizeof index_slot);
    for (size_t i = 0; i < NFACTS; i++) {
        size_t j = name_hash(FACTS[i].name);
        while (index_slot[j] >= 0)
            j = (j + 1) & (INDEX_SLOTS - 1);
        index_slot[j] = (int8_t)i;
    }
}

/* The answers given, by the address of the name asked, per thread: callers name facts with
 * literals and table strings, the same few addresses for every patient, and hashing the name
 * each time was most of a lookup. An entry is checked by content (an address reused for another
 * text is a miss, never a wrong answer). */
#define MEMO_SLOTS 64
static _Thread_local struct {
    const char *name;
    int idx;
} memo[MEMO_SLOTS];

int map_fact_index(const char *name)
{
    if (!name)
        return -1;
    size_t h = (size_t)(((uint64_t)(uintptr_t)name * 0x9E3779B97F4A7C15ull) >> 58) & (MEMO_SLOTS - 1);
    if (memo[h].name == name && !strcmp(FACTS[memo[h].idx].name, name))
        return memo[h].idx;
    pthread_once(&index_once, index_build);
    for (size_t j = name_hash(name); index_slot[j] >= 0; j = (j + 1) & (INDEX_SLOTS - 1))
        if (!strcmp(FACTS[index_slot[j]].name, name)) {
            memo[h].name = name;
            memo[h].idx = index_slot[j];
            return index_slot[j];
        }
    return -1;
}

bool map_fact_lookup(const char *name, map_fact_type *type)
{
    int i = map_fact_index(name);
    if (i < 0)
        return false;
    if (type)
        *type = FACTS[i].type;
    return true;
}

size_t map_fact_count(void)
{
    return NFACTS;
}

const char *map_fact_name_at(size_t i, map_fact_type *type)
{
    if (i >= NFACTS)
        return NULL;
    if (type)
        *type = FACTS[i].type;
    return FACTS[i].name;
}

bool map_fact_code_valid(const char *name, const char *value)
{
    if (!name || !value)
        return false;
    if (!strcmp(name, "diseases") || !strcmp(name, "primary_disease"))
        return list_index(DISEASES, value) >= 0;
    if (!strcmp(name, "sex"))
        return list_index(SEXES, value) >= 0;
    if (!strcmp(name, "prior_classes") || !strcmp(name, "first_line_classes"))
        return map_class_from_key(value) >= 0;
    if (!strcmp(name, "prior_drugs")) {
        /* ingredient keys: lower-case words; check membership with map_tables_has_ingredient */
        if (!*value)
            return false;
        for (const char *p = value; *p; p++)
            if (!(islower((unsigned char)*p) || *p == ' ' || *p == '-'))
                return false;
        return true;
    }
    return false;
}
