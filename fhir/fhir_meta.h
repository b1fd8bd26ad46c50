/* fhir_meta — FHIR R4 element metadata (which elements repeat, their types, primitive JSON
 * kinds, choice types, XML attributes, element order), generated from the official R4
 * StructureDefinitions by fhir/gen/gen_meta.cjs into fhir/fhir_meta_table.c.
 *
 * A "type" is a primitive type ("string", "decimal"), a complex type ("Quantity"), a
 * resource ("Patient"; the abstract "Resource"/"DomainResource" too) or a BackboneElement
 * named by its path ("Patient.contact", "Bundle.entry"). Elements of a type are numbered in
 * definition order, which is the XML element order. Primitive types list only their `id`
 * and `extension` elements (what goes into the JSON `_name` object).
 *
 * Everything here is static, read-only data: no allocation, no ownership, thread-safe. */
#ifndef FHIR_META_H
#define FHIR_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum fhir_meta_kind {
    FHIR_META_PRIMITIVE = 0,
    FHIR_META_COMPLEX = 1,
    FHIR_META_RESOURCE = 2,          /* concrete resource type */
    FHIR_META_BACKBONE = 3,          /* BackboneElement / inline Element, named by path */
    FHIR_META_ABSTRACT_RESOURCE = 4, /* Resource, DomainResource */
} fhir_meta_kind;

/* How a value of the type is represented in JSON. */
typedef enum fhir_meta_json {
    FHIR_META_JSON_STRING = 0,
    FHIR_META_JSON_NUMBER = 1, /* integer, decimal, positiveInt, unsignedInt */
    FHIR_META_JSON_BOOL = 2,
    FHIR_META_JSON_OBJECT = 3, /* complex types, backbones, resources */
} fhir_meta_json;

enum {
    FHIR_META_REPEATS = 1, /* max > 1: JSON array, repeated XML element */
    FHIR_META_CHOICE = 2,  /* value[x]: name is "value", the type is a suffix */
    FHIR_META_XMLATTR = 4, /* XML attribute, not element (Element.id, Extension.url) */
    FHIR_META_XHTML = 8,   /* Narrative.div: XHTML element, JSON string */
};

/* A type index (0 .. fhir_meta_type_count()-1), or -1 for "none". */
typedef int fhir_meta_type;

/* The result of resolving an element name within a type. */
typedef struct fhir_meta_elem {
    const char *name;    /* element name without [x] ("value" for value[x]); static */
    unsigned order;      /* position in the type's definition order (XML order) */
    unsigned flags;      /* FHIR_META_* bits */
    fhir_meta_type type; /* the element's type; for a choice, the one the name selected */
    unsigned ntypes;     /* number of allowed types (> 1 only for choices) */
} fhir_meta_elem;

/* Number of types in the table. */
size_t fhir_meta_type_count(void);
/* Type by exact name ("Patient", "Quantity", "dateTime", "Patient.contact"); -1 if none.
 * Binary search. */
fhir_meta_type fhir_meta_type_find(const char *name, size_t n);
/* Name of a type (static string); "" for an invalid index. */
const char *fhir_meta_type_name(fhir_meta_type t);
fhir_meta_kind fhir_meta_type_kind(fhir_meta_type t);
fhir_meta_json fhir_meta_type_json(fhir_meta_type t);
/* True for a concrete resource type ("Patient"), false for "Resource" and everything else. */
bool fhir_meta_is_resource(fhir_meta_type t);
/* True for the abstract "Resource" type: the element holds any resource (contained,
 * Bundle.entry.resource, Parameters.parameter.resource). */
bool fhir_meta_is_any_resource(fhir_meta_type t);
/* Number of elements of a type (0 for an invalid index). */
size_t fhir_meta_elem_count(fhir_meta_type t);

/* The element at definition position `order` of type t; false when out of range. For a
 * choice, out->type is the first allowed type. */
bool fhir_meta_elem_at(fhir_meta_type t, unsigned order, fhir_meta_elem *out);
/* The i-th allowed type of element `order` of type t (choices list several); -1 if none. */
fhir_meta_type fhir_meta_elem_type_at(fhir_meta_type t, unsigned order, unsigned i);

/* Resolves a JSON key / XML element name in type t: exact names ("gender"), and choice
 * names ("valueQuantity" -> element value[x] with type Quantity). Binary search. A leading
 * '_' is NOT stripped (callers handle the JSON primitive-extension twin). False when the
 * name is not an element of t. */
bool fhir_meta_lookup(fhir_meta_type t, const char *name, size_t n, fhir_meta_elem *out);

/* Resolves a dotted path of element names starting at a type name:
 * "Patient.contact.name.given", "Bundle.entry.resource", "Questionnaire.item.item.text",
 * "Observation.valueQuantity.value". False when any step is unknown (or steps through a
 * primitive or resource-valued element). */
bool fhir_meta_resolve(const char *path, fhir_meta_elem *out);

/* Suffix of a choice element name for a type: writes "Quantity" for Quantity and
 * "DateTime" for dateTime into buf (cap bytes, NUL-terminated); returns its length. */
size_t fhir_meta_choice_suffix(fhir_meta_type t, char *buf, size_t cap);

/* ---- generated data (fhir_meta_table.c); internal to fhir_meta.c -------------------- */
typedef struct fhir_meta_type_rec {
    uint32_t name;   /* offset in fhir_meta_pool_ */
    uint16_t first;  /* first element in fhir_meta_elems_ */
    uint16_t n;      /* element count */
    uint16_t sorted; /* first entry in fhir_meta_sorted_ */
    uint8_t kind;    /* fhir_meta_kind */
    uint8_t json;    /* fhir_meta_json */
} fhir_meta_type_rec;

typedef struct fhir_meta_elem_rec {
    uint32_t name;  /* offset in fhir_meta_pool_ */
    uint16_t types; /* first entry in fhir_meta_typerefs_ */
    uint8_t ntypes;
    uint8_t flags;
} fhir_meta_elem_rec;

extern const char fhir_meta_pool_[];
extern const size_t fhir_meta_pool_size_;
extern const fhir_meta_type_rec fhir_meta_types_[];
extern const size_t fhir_meta_type_count_;
extern const fhir_meta_elem_rec fhir_meta_elems_[];
extern const size_t fhir_meta_elem_count_;
extern const uint8_t fhir_meta_sorted_[];
extern const uint16_t fhir_meta_typerefs_[];

#endif
