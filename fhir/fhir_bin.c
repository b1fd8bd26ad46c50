/* fhir_bin — the binary form of a fhir_node tree (see fhir_bin.h). */
#include "fhir_bin.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_names.h"

enum { T_NULL, T_FALSE, T_TRUE, T_NUMBER, T_STRING, T_OBJECT, T_ARRAY, T_VALUE };

/* The values of "system" and "url" members most often repeated in EHR data (code systems,
 * extension URLs), in one byte after T_VALUE (version 1; append only, at most 255 entries):
 * about a fifth of a cached resource's bytes in Synthea-style data. */
static const char *const values[] = {
    "http://loinc.org", "http://snomed.info/sct", "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://unitsofmeasure.org", "http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10",
    "http://terminology.hl7.org/CodeSystem/icd-o-3", "http://www.ama-assn.org/go/cpt",
    "http://www.cms.gov/Medicare/Coding/ICD10", "http://hl7.org/fhir/sid/cvx",
    "http://terminology.hl7.org/CodeSystem/observation-category",
    "http://terminology.hl7.org/CodeSystem/condition-clinical",
    "http://terminology.hl7.org/CodeSystem/condition-ver-status",
    "http://terminology.hl7.org/CodeSystem/condition-category",
    "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
    "http://terminology.hl7.org/CodeSystem/v2-0203", "http://terminology.hl7.org/CodeSystem/v2-0074",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
    "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
    "http://terminology.hl7.org/CodeSystem/diagnosis-role",
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
    "http://terminology.hl7.org/CodeSystem/coverage-class",
    "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
    "http://terminology.hl7.org/CodeSystem/dose-rate-type",
    "http://terminology.hl7.org/CodeSystem/data-absent-reason", "http://hl7.org/fhir/sid/us-npi",
    "http://hl7.org/fhir/sid/us-ssn", "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
    "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
    "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
    "http://hl7.org/fhir/StructureDefinition/geolocation", "urn:ietf:bcp:47",
    "urn:oid:2.16.840.1.113883.6.238", "ombCategory", "text", "latitude", "longitude",
    "http://synthetichealth.github.io/synthea/disability-adjusted-life-years",
    "http://synthetichealth.github.io/synthea/quality-adjusted-life-years",
    "https://github.com/synthetichealth/synthea",
};

#define NVALUES (sizeof values / sizeof values[0])

#define NAME_INLINE 0xFF

/* Member names: the table of fhir_names.h (an index below NAME_INLINE in one byte). */
static const char *name_at[FHIR_NAMES_MAX]; /* the table's own copies (fhir_names_at) */
static uint32_t name_len[FHIR_NAMES_MAX];
static size_t nnames;
static uint8_t value_len[NVALUES];
static pthread_once_t honce = PTHREAD_ONCE_INIT;
static int sys_ix = -1, url_ix = -1; /* the names "system" and "url" in the table (hash_build) */

static void hash_build(void)
{
    _Static_assert(FHIR_NAMES_MAX <= NAME_INLINE, "member name table larger than one byte");
    nnames = fhir_names_count();
    for (size_t i = 0; i < nnames; i++)
        name_at[i] = fhir_names_at(i, &name_len[i]);
    _Static_assert(NVALUES <= 255, "value table larger than one byte");
    for (size_t i = 0; i < NVALUES; i++) {
        size_t n = strlen(values[i]);
        if (n > UINT8_MAX)
            abort(); /* the table is broken */
        for (size_t j = 0; j < i; j++)
            if (!strcmp(values[j], values[i]))
                abort(); /* a value listed twice: the table is broken */
        value_len[i] = (uint8_t)n;
    }
    sys_ix = fhir_names_find("system", 6);
    url_ix = fhir_names_find("url", 3);
    if (sys_ix < 0 || url_ix < 0)
        abort(); /* the name table lost them: broken */
}

/* The value table's index of s (a "system" or "url" member's text), or -1. */
static int value_index(const char *s, size_t n)
{
    for (size_t i = 0; i < NVALUES; i++)
        if (value_len[i] == n && !memcmp(values[i], s, n))
            return (int)i;
    return -1;
}

/* Writers below fill reserved room directly: at most this many bytes besides a text's own. */
#define NODE_ROOM (1 + 1 + 5 + 1 + 1 + 5 + 1) /* name byte, inline name's length and NUL, tag,
                                                * length, NUL */

static char *put_len(char *p, size_t v)
{
    while (v >= 0x80) {
        *p++ = (char)(unsigned char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    *p++ = (char)(unsigned char)v;
    return p;
}

static char *put_text(char *p, const char *s, size_t n)
{
    p = put_len(p, n);
    memcpy(p, s, n);
    p[n] = '\0';
    return p + n + 1;
}

/* One node (with its member name when key is set): a scalar whole, a container its tag and
 * child count (write_node writes the children); the room is reserved per node. */
static inline __attribute__((always_inline)) int write_item(fhir_buf *out, const fhir_node *n,
                                                            const fhir_node *key)
{
    size_t text = n->kind == FHIR_NUMBER || n->kind == FHIR_STRING ? (n->text ? n->len : 0) : 0;
    int ix = -1;
    size_t kl = 0;
    if (key) {
        kl = key->key ? key->key_len : 0;
        ix = fhir_names_own(key->key); /* a name read or interned as the table's copy */
        if (ix < 0)
            ix = fhir_names_find(key->key, kl);
    }
    size_t room = NODE_ROOM + text + (ix < 0 ? kl : 0);
    if (text > UINT32_MAX)
        return -1;
    /* room (and the NUL after it) already there and under the cap, or reserved */
    if ((room >= out->alloc - out->len || (out->cap && room > out->cap - out->len) || out->overflow) &&
        fhir_buf_reserve(out, room) < 0)
        return -1;
    char *p = out->data + out->len;
    if (key) {
        if (ix >= 0) {
            *p++ = (char)(unsigned char)ix;
        } else {
            *p++ = (char)NAME_INLINE;
            p = put_text(p, key->key ? key->key : "", kl);
        }
    }
    int vx = -1;
    if (key && ix >= 0 && n->kind == FHIR_STRING && n->text && (ix == sys_ix || ix == url_ix))
        vx = value_index(n->text, n->len);
    switch (n->kind) {
    case FHIR_NULL: *p++ = T_NULL; break;
    case FHIR_BOOL: *p++ = n->boolean ? T_TRUE : T_FALSE; break;
    case FHIR_NUMBER:
    case FHIR_STRING:
        if (vx >= 0) {
            *p++ = T_VALUE;
            *p++ = (char)(unsigned char)vx;
            break;
        }
        *p++ = n->kind == FHIR_NUMBER ? T_NUMBER : T_STRING;
        p = put_text(p, n->text ? n->text : "", text);
        break;
    case FHIR_OBJECT:
    case FHIR_ARRAY: {
        size_t cnt = 0;
        for (const fhir_node *c = n->child; c; c = c->next)
            cnt++;
        *p++ = n->kind == FHIR_OBJECT ? T_OBJECT : T_ARRAY;
        p = put_len(p, cnt);
        break;
    }
    default: return -1;
    }
    out->len = (size_t)(p - out->data);
    return 0;
}

/* One node and its subtree: a scalar child written in place, only a container child costs a
 * call. */
static int write_node(fhir_buf *out, const fhir_node *n, const fhir_node *key)
{
    if (write_item(out, n, key) < 0)
        return -1;
    if (n->kind != FHIR_OBJECT && n->kind != FHIR_ARRAY)
        return 0;
    for (const fhir_node *c = n->child; c; c = c->next) {
        const fhir_node *k = n->kind == FHIR_OBJECT ? c : NULL;
        if ((c->kind == FHIR_OBJECT || c->kind == FHIR_ARRAY ? write_node(out, c, k)
                                                              : write_item(out, c, k)) < 0)
            return -1;
    }
    return 0;
}

int fhir_bin_write(fhir_buf *out, const fhir_node *n)
{
    pthread_once(&honce, hash_build);
    if (fhir_buf_putc(out, (char)FHIR_BIN_MAGIC) < 0 || fhir_buf_putc(out, FHIR_BIN_VERSION) < 0 ||
        write_node(out, n, NULL) < 0)
        return -1;
    out->data[out->len] = '\0';
    return 0;
}

bool fhir_bin_is(const void *data, size_t len)
{
    return data && len >= 2 && ((const unsigned char *)data)[0] == FHIR_BIN_MAGIC;
}

/* ---- reading ------------------------------------------------------------------------ */

typedef struct bin_rd {
    fhir_arena *a;
    const char *p, *end; /* the arena's copy */
    fhir_error *err;
    bool failed;
} bin_rd;

static void *bad(bin_rd *r, const char *what)
{
    if (!r->failed)
        fhir_error_set(r->err, "cached resource (binary form): %s", what);
    r->failed = true;
    return NULL;
}

/* A length of more than one byte (or none: truncated). */
static bool get_len_long(bin_rd *r, size_t *v)
{
    size_t x = 0;
    for (unsigned shift = 0; shift < 35; shift += 7) {
        if (r->p >= r->end)
            return false;
        unsigned char b = (unsigned char)*r->p++;
        x |= (size_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

/* A length: one byte (below 0x80) the usual case, read in place. */
static inline __attribute__((always_inline)) bool get_len(bin_rd *r, size_t *v)
{
    if (r->p < r->end && !((unsigned char)*r->p & 0x80)) {
        *v = (unsigned char)*r->p++;
        return true;
    }
    return get_len_long(r, v);
}

/* A length-prefixed, NUL-terminated text in place: its start, or NULL. */
static inline __attribute__((always_inline)) const char *get_text(bin_rd *r, uint32_t *len)
{
    size_t n;
    if (!get_len(r, &n) || n >= (size_t)(r->end - r->p) || n > UINT32_MAX || r->p[n] != '\0')
        return bad(r, "a text runs past its end");
    const char *s = r->p;
    r->p += n + 1;
    *len = (uint32_t)n;
    return s;
}

/* Reads one scalar node of tag t (already taken) into *n; any other tag is refused. */
static inline __attribute__((always_inline)) bool read_scalar(bin_rd *r, fhir_node *n, unsigned char t)
{
    switch (t) {
    case T_NULL: n->kind = FHIR_NULL; return true;
    case T_FALSE:
    case T_TRUE: n->kind = FHIR_BOOL; n->boolean = t == T_TRUE; return true;
    case T_VALUE: {
        if (r->p >= r->end)
            return bad(r, "truncated"), false;
        unsigned char v = (unsigned char)*r->p++;
        if (v >= NVALUES)
            return bad(r, "a value outside the table"), false;
        n->kind = FHIR_STRING;
        n->text = values[v];
        n->len = value_len[v];
        return true;
    }
    case T_NUMBER:
    case T_STRING:
        n->kind = t == T_NUMBER ? FHIR_NUMBER : FHIR_STRING;
        n->text = get_text(r, &n->len);
        return n->text != NULL;
    default: return bad(r, "an unknown tag"), false;
    }
}

/* Reads the children of a container of tag t (taken, its count not yet) into *n. */
static bool read_kids(bin_rd *r, fhir_node *n, unsigned char t, unsigned depth);

/* Reads one node into *n (allocated by the caller: children of one parent are one block);
 * a scalar is read in place, only a container costs a call. */
static inline __attribute__((always_inline)) bool read_one(bin_rd *r, fhir_node *n, unsigned depth)
{
    if (r->p >= r->end)
        return bad(r, "truncated"), false;
    unsigned char t = (unsigned char)*r->p++;
    if (t == T_OBJECT || t == T_ARRAY)
        return read_kids(r, n, t, depth);
    return read_scalar(r, n, t);
}

static bool read_kids(bin_rd *r, fhir_node *n, unsigned char t, unsigned depth)
{
    n->kind = t == T_OBJECT ? FHIR_OBJECT : FHIR_ARRAY;
    size_t cnt;
    if (!get_len(r, &cnt) || cnt > (size_t)(r->end - r->p) || cnt > UINT32_MAX)
        return bad(r, "a child count runs past the end"), false;
    if (depth >= FHIR_BIN_MAX_DEPTH)
        return bad(r, "nested too deeply"), false;
    n->len = (uint32_t)cnt;
    if (!cnt)
        return true;
    fhir_node *kids = fhir_arena_alloc(r->a, cnt * sizeof *kids);
    if (!kids)
        return bad(r, "larger than its memory cap"), false;
    const size_t names = nnames; /* not read again after each store into a node */
    for (size_t i = 0; i < cnt; i++) {
        fhir_node *c = &kids[i];
        *c = (fhir_node){.next = i + 1 < cnt ? &kids[i + 1] : NULL};
        if (t == T_OBJECT) {
            if (r->p >= r->end)
                return bad(r, "truncated"), false;
            unsigned char k = (unsigned char)*r->p++;
            if (k < names) {
                c->key = name_at[k];
                c->key_len = name_len[k];
            } else if (k == NAME_INLINE) {
                if (!(c->key = get_text(r, &c->key_len)))
                    return false;
            } else {
                return bad(r, "a member name outside the table"), false;
            }
        }
        if (!read_one(r, c, depth + 1))
            return false;
    }
    n->child = &kids[0];
    n->last = &kids[cnt - 1];
    return true;
}

fhir_node *fhir_bin_read(fhir_arena *a, const void *data, size_t len, fhir_error *err)
{
    if (!fhir_bin_is(data, len))
        return fhir_error_set(err, "cached resource: not the binary form"), NULL;
    const unsigned char *b = data;
    if (b[1] != FHIR_BIN_VERSION)
        return fhir_error_set(err, "cached resource: binary form version %u, this program reads %u", b[1],
                              FHIR_BIN_VERSION),
               NULL;
    pthread_once(&honce, hash_build); /* name_len */
    fhir_node *root = len - 2 < SIZE_MAX - sizeof *root ? fhir_arena_alloc(a, sizeof *root + len - 2) : NULL;
    if (!root) /* one allocation: the root, then the copy of the bytes */
        return fhir_error_set(err, "cached resource larger than its memory cap"), NULL;
    char *copy = (char *)(root + 1);
    memcpy(copy, b + 2, len - 2);
    *root = (fhir_node){0};
    bin_rd r = {.a = a, .p = copy, .end = copy + (len - 2), .err = err};
    if (!read_one(&r, root, 0))
        return NULL;
    if (r.p != r.end)
        return bad(&r, "bytes after the resource");
    return root;
}

fhir_node *fhir_bin_or_json_read(fhir_json_reader *rd, fhir_arena *a, const void *data, size_t len,
                                 fhir_error *err)
{
    if (fhir_bin_is(data, len))
        return fhir_bin_read(a, data, len, err);
    if (rd)
        return fhir_json_reader_parse(rd, a, data, len, err);
    fhir_json_limits lim = {.max_bytes = len + 1};
    return fhir_json_parse(a, data, len, &lim, err);
}
