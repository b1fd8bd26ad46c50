/* fhir_node — the generic FHIR resource tree.
 *
 * A parsed resource is a tree of nodes (object, array, string, number, bool, null) that
 * lives in a fhir_arena owned by whoever ran the parse. Objects keep member order; numbers
 * keep their original text so FHIR decimals keep their precision. The JSON and XML readers
 * both produce this tree. Nodes are read-only for consumers; builders (readers, synth,
 * referral payloads) use the fhir_node_new_* / fhir_node_add_* functions.
 *
 * Ownership: every node and string here is borrowed from its arena and valid until that
 * arena is reset or freed. Nothing here frees memory. */
#ifndef FHIR_NODE_H
#define FHIR_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_arena.h"

typedef enum fhir_kind {
    FHIR_NULL = 0,
    FHIR_BOOL,
    FHIR_NUMBER,
    FHIR_STRING,
    FHIR_OBJECT,
    FHIR_ARRAY,
} fhir_kind;

typedef struct fhir_node fhir_node;
struct fhir_node {
    fhir_kind kind;
    bool boolean;          /* FHIR_BOOL */
    uint32_t len;          /* STRING/NUMBER: byte length of text; OBJECT/ARRAY: child count */
    const char *key;       /* member name when the parent is an object, else NULL */
    uint32_t key_len;
    uint32_t line;         /* 1-based line in the source text when the reader was asked to
                            * record lines (fhir_json_parse_ex, fhir_jsonfile): an object
                            * member's is the line of its key, any other node's the line where
                            * its value starts; 0 = not recorded */
    const char *text;      /* STRING: value (UTF-8, NUL-terminated); NUMBER: original text */
    fhir_node *child;      /* OBJECT/ARRAY: first child */
    fhir_node *last;       /* OBJECT/ARRAY: last child (O(1) append) */
    fhir_node *next;       /* next sibling */
};

/* ---- reading ------------------------------------------------------------------------ */

/* Name of a kind, for messages ("object", "array", ...). Static string. */
const char *fhir_node_kind_name(fhir_kind k);

/* Member of an object by name; NULL when absent or obj is not an object (NULL-safe). */
const fhir_node *fhir_node_get(const fhir_node *obj, const char *name);
/* Element i of an array; NULL when out of range or not an array (NULL-safe). */
const fhir_node *fhir_node_at(const fhir_node *arr, size_t i);
/* Child count for arrays/objects, 0 otherwise (NULL-safe). */
size_t fhir_node_count(const fhir_node *n);

/* Iteration: for (c = fhir_node_first(n); c; c = c->next) over arrays and objects.
 * NULL for scalars and NULL. */
const fhir_node *fhir_node_first(const fhir_node *n);


/* Typed getters; NULL/false/fallback when the node is missing or of another kind. */
const char *fhir_node_str(const fhir_node *n);        /* STRING text */
const char *fhir_node_num_text(const fhir_node *n);   /* NUMBER original text */
bool fhir_node_is(const fhir_node *n, fhir_kind k);
/* Parses a NUMBER (or a numeric STRING) as double; returns false if not numeric. */
bool fhir_node_double(const fhir_node *n, double *out);
/* NUMBER that is an integer within int64; false otherwise. */
bool fhir_node_int(const fhir_node *n, int64_t *out);
/* BOOL value; false when not a boolean (use fhir_node_is to tell apart). */
bool fhir_node_bool(const fhir_node *n, bool fallback);
/* Key equals name (NUL-terminated)? */
bool fhir_node_key_is(const fhir_node *n, const char *name);

/* Dotted path: "valueQuantity.value", "code.coding", "name[1].given[0]".
 * A segment that lands on an array without an index continues with element 0
 * (FHIR's common "first repetition" reading). NULL when any step is absent. */
const fhir_node *fhir_node_path(const fhir_node *n, const char *path);
/* Convenience: fhir_node_str(fhir_node_path(n, path)). */
const char *fhir_node_path_str(const fhir_node *n, const char *path);

/* Deep equality: same kinds, same member order and names, same text.
 * With decimal_by_value, two NUMBERs are equal when they denote the same value with the
 * same number of significant decimals (1.0e0 == 1.0, 1.0 != 1.00, 10 != 10.0). */
bool fhir_node_equal(const fhir_node *a, const fhir_node *b, bool decimal_by_value);

/* Counts nodes in a tree (the node itself included). */
size_t fhir_node_size(const fhir_node *n);

/* Resource conveniences: "resourceType" and "id" of a resource object (NULL if absent). */
const char *fhir_node_resource_type(const fhir_node *res);
const char *fhir_node_resource_id(const fhir_node *res);

/* ---- building (all in arena a; return NULL only when the arena's cap is hit) -------- */

fhir_node *fhir_node_new(fhir_arena *a, fhir_kind k);
fhir_node *fhir_node_new_str(fhir_arena *a, const char *s);            /* copies s */
fhir_node *fhir_node_new_strn(fhir_arena *a, const char *s, size_t n); /* copies s[0..n) */
fhir_node *fhir_node_new_num(fhir_arena *a, const char *text, size_t n); /* copies text */
fhir_node *fhir_node_new_bool(fhir_arena *a, bool v);
/* Appends child to an array or object. For objects key is copied (keyn bytes); for arrays
 * key must be NULL. Does not check for duplicate keys (readers do). Returns child. */
fhir_node *fhir_node_append(fhir_arena *a, fhir_node *parent, const char *key, size_t keyn,
                            fhir_node *child);
/* Object setters: append key -> value (NUL-terminated key). Return the new child. */
fhir_node *fhir_node_set_str(fhir_arena *a, fhir_node *obj, const char *key, const char *val);
fhir_node *fhir_node_set(fhir_arena *a, fhir_node *obj, const char *key, fhir_node *val);
fhir_node *fhir_node_set_obj(fhir_arena *a, fhir_node *obj, const char *key); /* new {} */
fhir_node *fhir_node_set_arr(fhir_arena *a, fhir_node *obj, const char *key); /* new [] */
/* Deep copy of n (and its subtree) into arena a; key is dropped. */
fhir_node *fhir_node_clone(fhir_arena *a, const fhir_node *n);

#endif
