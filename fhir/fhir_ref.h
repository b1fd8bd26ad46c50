/* fhir_ref — FHIR references: split "Type/id", and resolve references inside a Bundle
 * (urn:uuid: fullUrls, relative "Type/id", absolute URLs ending in Type/id). */
#ifndef FHIR_REF_H
#define FHIR_REF_H

#include <stdbool.h>
#include <stddef.h>

#include "fhir_arena.h"
#include "fhir_node.h"

/* Splits a literal reference into type and id (both copied into arena a; borrowed until
 * reset). Accepts "Patient/123", "Patient/123/_history/4", and absolute
 * "https://x/fhir/Patient/123". urn:uuid:/urn:oid: give type NULL and id = the whole urn.
 * "#id" (contained) gives type NULL and id "id" with *contained = true.
 * Returns false when ref is not a reference of any of these shapes. */
bool fhir_ref_split(fhir_arena *a, const char *ref, const char **type, const char **id,
                    bool *contained);

/* True when id is a FHIR R4 logical id: 1 to 64 of [A-Za-z0-9-.] (R4 "id" datatype). A
 * resource whose id fails this rule is not stored (it could forge a log line or cut a URL). */
bool fhir_id_valid(const char *id);

typedef struct fhir_ref_index fhir_ref_index;

/* Index of a Bundle's entries for O(1) resolution. Lives in arena a (borrowed until reset);
 * nothing to free. Returns NULL only at the arena cap. */
fhir_ref_index *fhir_ref_index_build(fhir_arena *a, const fhir_node *bundle);

/* Resolves ref (a string such as "urn:uuid:...", "Patient/1", "http://x/Patient/1") to the
 * entry's resource; NULL when not in the bundle. Borrowed from the bundle's arena. */
const fhir_node *fhir_ref_resolve(const fhir_ref_index *idx, const char *ref);

/* Resolves a "#id" reference against res.contained; NULL when absent. */
const fhir_node *fhir_ref_contained(const fhir_node *res, const char *ref);

#endif
