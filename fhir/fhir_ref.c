/* fhir_ref — reference splitting and Bundle-local resolution (FHIR R4 Bundle rules:
 * a reference resolves against entry.fullUrl; relative "Type/id" also matches entries by
 * resourceType + id, or fullUrls that end in "/Type/id"). */
#include "fhir_ref.h"
#include "fhir_hash.h"

#include <stdint.h>
#include <string.h>

static bool is_type_name(const char *s, size_t n)
{
    if (n == 0 || s[0] < 'A' || s[0] > 'Z')
        return false;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9')))
            return false;
    return true;
}

static bool is_id(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
            return false;
    return true;
}

/* Finds the trailing "Type/id" of s (ignoring a trailing "/_history/vid"). */
static bool tail_type_id(const char *s, size_t len, const char **t, size_t *tn, const char **i,
                         size_t *in)
{
    const char *h = NULL;
    for (const char *q = s; (q = strstr(q, "/_history/")); q++)
        h = q;
    if (h)
        len = (size_t)(h - s);
    const char *slash = NULL;
    for (size_t k = len; k > 0; k--)
        if (s[k - 1] == '/') {
            slash = s + k - 1;
            break;
        }
    if (!slash)
        return false;
    const char *id = slash + 1;
    size_t idn = (size_t)(s + len - id);
    const char *ts = slash;
    while (ts > s && ts[-1] != '/')
        ts--;
    size_t typen = (size_t)(slash - ts);
    if (!is_type_name(ts, typen) || !is_id(id, idn))
        return false;
    *t = ts;
    *tn = typen;
    *i = id;
    *in = idn;
    return true;
}

bool fhir_id_valid(const char *id)
{
    if (!id)
        return false;
    size_t n = 0;
    for (const char *p = id; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.';
        if (!ok || n == 64)
            return false;
    }
    return n > 0;
}

bool fhir_ref_split(fhir_arena *a, const char *ref, const char **type, const char **id,
                    bool *contained)
{
    *type = NULL;
    *id = NULL;
    if (contained)
        *contained = false;
    if (!ref || !*ref)
        return false;
    if (ref[0] == '#') {
        if (!is_id(ref + 1, strlen(ref + 1)))
            return false;
        *id = fhir_arena_strdup(a, ref + 1);
        if (contained)
            *contained = true;
        return *id != NULL;
    }
    if (!strncmp(ref, "urn:uuid:", 9) || !strncmp(ref, "urn:oid:", 8)) {
        *id = fhir_arena_strdup(a, ref);
        return *id != NULL;
    }
    const char *t, *i;
    size_t tn, in;
    if (!tail_type_id(ref, strlen(ref), &t, &tn, &i, &in))
        return false;
    /* a relative reference must be exactly Type/id[/_history/v] */
    if (!strstr(ref, "://") && t != ref)
        return false;
    *type = fhir_arena_strndup(a, t, tn);
    *id = fhir_arena_strndup(a, i, in);
    return *type && *id;
}

/* ---- Bundle index ------------------------------------------------------------------------ */

typedef struct slot {
    const char *key; /* fullUrl or "Type/id" */
    size_t len;
    const fhir_node *res;
} slot;

struct fhir_ref_index {
    slot *slots;
    size_t cap; /* power of two */
};

static uint64_t hash(const char *s, size_t n)
{
    return fhir_hash64(FHIR_HASH64_INIT, s, n);
}

static void put(fhir_ref_index *x, const char *k, size_t n, const fhir_node *res)
{
    size_t j = hash(k, n) & (x->cap - 1);
    while (x->slots[j].key) {
        if (x->slots[j].len == n && !memcmp(x->slots[j].key, k, n))
            return; /* first entry wins */
        j = (j + 1) & (x->cap - 1);
    }
    x->slots[j] = (slot){k, n, res};
}

static const fhir_node *find(const fhir_ref_index *x, const char *k, size_t n)
{
    size_t j = hash(k, n) & (x->cap - 1);
    while (x->slots[j].key) {
        if (x->slots[j].len == n && !memcmp(x->slots[j].key, k, n))
            return x->slots[j].res;
        j = (j + 1) & (x->cap - 1);
    }
    return NULL;
}

fhir_ref_index *fhir_ref_index_build(fhir_arena *a, const fhir_node *bundle)
{
    fhir_ref_index *x = fhir_arena_calloc(a, sizeof *x);
    if (!x)
        return NULL;
    size_t n = fhir_node_count(fhir_node_get(bundle, "entry"));
    x->cap = 16;
    while (x->cap < n * 4)
        x->cap *= 2;
    x->slots = fhir_arena_calloc(a, x->cap * sizeof *x->slots);
    if (!x->slots)
        return NULL;
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next) {
        const fhir_node *res = fhir_node_get(e, "resource");
        if (!res)
            continue;
        const fhir_node *fu = fhir_node_get(e, "fullUrl");
        if (fu && fu->kind == FHIR_STRING) {
            put(x, fu->text, fu->len, res);
            const char *t, *i;
            size_t tn, in;
            if (tail_type_id(fu->text, fu->len, &t, &tn, &i, &in))
                put(x, t, (size_t)(i + in - t), res);
        }
        const char *type = fhir_node_resource_type(res), *id = fhir_node_resource_id(res);
        if (type && id) {
            char *k = fhir_arena_sprintf(a, "%s/%s", type, id);
            if (!k)
                return NULL;
            put(x, k, strlen(k), res);
        }
    }
    return x;
}

const fhir_node *fhir_ref_resolve(const fhir_ref_index *idx, const char *ref)
{
    if (!idx || !ref)
        return NULL;
    size_t n = strlen(ref);
    const fhir_node *r = find(idx, ref, n);
    if (r)
        return r;
    /* absolute URL or versioned reference: fall back to its Type/id tail */
    const char *t, *i;
    size_t tn, in;
    if (strncmp(ref, "urn:", 4) && tail_type_id(ref, n, &t, &tn, &i, &in))
        return find(idx, t, (size_t)(i + in - t));
    return NULL;
}

const fhir_node *fhir_ref_contained(const fhir_node *res, const char *ref)
{
    if (!ref || ref[0] != '#')
        return NULL;
    for (const fhir_node *c = fhir_node_first(fhir_node_get(res, "contained")); c; c = c->next) {
        const char *id = fhir_node_resource_id(c);
        if (id && !strcmp(id, ref + 1))
            return c;
    }
    return NULL;
}
