/* fhir_meta — lookups over the generated R4 element table (fhir_meta_table.c). */
#include "fhir_meta.h"

#include <ctype.h>
#include <string.h>

static bool valid_type(fhir_meta_type t)
{
    return t >= 0 && (size_t)t < fhir_meta_type_count_;
}

/* Compares the NUL-terminated pool string p with s[0..n) like strcmp. */
static int cmp_name(const char *p, const char *s, size_t n)
{
    size_t i = 0;
    for (; i < n; i++) {
        unsigned char a = (unsigned char)p[i], b = (unsigned char)s[i];
        if (a != b)
            return a < b ? -1 : 1; /* also covers p ending early (a == 0) */
    }
    return p[i] ? 1 : 0;
}

size_t fhir_meta_type_count(void)
{
    return fhir_meta_type_count_;
}

fhir_meta_type fhir_meta_type_find(const char *name, size_t n)
{
    size_t lo = 0, hi = fhir_meta_type_count_;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_name(fhir_meta_pool_ + fhir_meta_types_[mid].name, name, n);
        if (c == 0)
            return (fhir_meta_type)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

const char *fhir_meta_type_name(fhir_meta_type t)
{
    return valid_type(t) ? fhir_meta_pool_ + fhir_meta_types_[t].name : "";
}

fhir_meta_kind fhir_meta_type_kind(fhir_meta_type t)
{
    return valid_type(t) ? (fhir_meta_kind)fhir_meta_types_[t].kind : FHIR_META_COMPLEX;
}

fhir_meta_json fhir_meta_type_json(fhir_meta_type t)
{
    return valid_type(t) ? (fhir_meta_json)fhir_meta_types_[t].json : FHIR_META_JSON_OBJECT;
}

bool fhir_meta_is_resource(fhir_meta_type t)
{
    return valid_type(t) && fhir_meta_types_[t].kind == FHIR_META_RESOURCE;
}

bool fhir_meta_is_any_resource(fhir_meta_type t)
{
    return valid_type(t) && fhir_meta_types_[t].kind == FHIR_META_ABSTRACT_RESOURCE &&
           !strcmp(fhir_meta_pool_ + fhir_meta_types_[t].name, "Resource");
}

size_t fhir_meta_elem_count(fhir_meta_type t)
{
    return valid_type(t) ? fhir_meta_types_[t].n : 0;
}

static void fill(fhir_meta_type t, unsigned order, fhir_meta_type chosen, fhir_meta_elem *out)
{
    const fhir_meta_elem_rec *e = &fhir_meta_elems_[fhir_meta_types_[t].first + order];
    out->name = fhir_meta_pool_ + e->name;
    out->order = order;
    out->flags = e->flags;
    out->ntypes = e->ntypes;
    out->type = chosen >= 0 ? chosen : (e->ntypes ? (fhir_meta_type)fhir_meta_typerefs_[e->types] : -1);
}

bool fhir_meta_elem_at(fhir_meta_type t, unsigned order, fhir_meta_elem *out)
{
    if (!valid_type(t) || order >= fhir_meta_types_[t].n)
        return false;
    fill(t, order, -1, out);
    return true;
}

fhir_meta_type fhir_meta_elem_type_at(fhir_meta_type t, unsigned order, unsigned i)
{
    if (!valid_type(t) || order >= fhir_meta_types_[t].n)
        return -1;
    const fhir_meta_elem_rec *e = &fhir_meta_elems_[fhir_meta_types_[t].first + order];
    return i < e->ntypes ? (fhir_meta_type)fhir_meta_typerefs_[e->types + i] : -1;
}

/* Position (definition order) of the element named s[0..n) in t, or -1. */
static int find_exact(fhir_meta_type t, const char *s, size_t n)
{
    const fhir_meta_type_rec *tr = &fhir_meta_types_[t];
    size_t lo = 0, hi = tr->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        unsigned pos = fhir_meta_sorted_[tr->sorted + mid];
        int c = cmp_name(fhir_meta_pool_ + fhir_meta_elems_[tr->first + pos].name, s, n);
        if (c == 0)
            return (int)pos;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* Does s[0..n) spell the choice suffix of type ty ("Quantity", "DateTime")? */
static bool suffix_is(fhir_meta_type ty, const char *s, size_t n)
{
    const char *tn = fhir_meta_pool_ + fhir_meta_types_[ty].name;
    if (n == 0 || strlen(tn) != n)
        return false;
    if (toupper((unsigned char)tn[0]) != (unsigned char)s[0])
        return false;
    return memcmp(tn + 1, s + 1, n - 1) == 0;
}

bool fhir_meta_lookup(fhir_meta_type t, const char *name, size_t n, fhir_meta_elem *out)
{
    if (!valid_type(t) || n == 0)
        return false;
    int pos = find_exact(t, name, n);
    if (pos >= 0) {
        const fhir_meta_elem_rec *e = &fhir_meta_elems_[fhir_meta_types_[t].first + pos];
        if (e->flags & FHIR_META_CHOICE)
            return false; /* "value" alone is not a valid name for value[x] */
        fill(t, (unsigned)pos, -1, out);
        return true;
    }
    /* Choice: try every split before an upper-case letter ("value|Quantity"). */
    for (size_t i = 1; i < n; i++) {
        if (!isupper((unsigned char)name[i]))
            continue;
        pos = find_exact(t, name, i);
        if (pos < 0)
            continue;
        const fhir_meta_elem_rec *e = &fhir_meta_elems_[fhir_meta_types_[t].first + pos];
        if (!(e->flags & FHIR_META_CHOICE))
            continue;
        for (unsigned k = 0; k < e->ntypes; k++) {
            fhir_meta_type ty = (fhir_meta_type)fhir_meta_typerefs_[e->types + k];
            if (suffix_is(ty, name + i, n - i)) {
                fill(t, (unsigned)pos, ty, out);
                return true;
            }
        }
        return false;
    }
    return false;
}

bool fhir_meta_resolve(const char *path, fhir_meta_elem *out)
{
    const char *dot = strchr(path, '.');
    if (!dot)
        return false;
    fhir_meta_type t = fhir_meta_type_find(path, (size_t)(dot - path));
    if (t < 0)
        return false;
    const char *p = dot + 1;
    for (;;) {
        const char *end = strchr(p, '.');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (!fhir_meta_lookup(t, p, n, out))
            return false;
        if (!end)
            return true;
        t = out->type;
        if (fhir_meta_type_kind(t) == FHIR_META_PRIMITIVE || fhir_meta_is_any_resource(t))
            return false;
        p = end + 1;
    }
}

size_t fhir_meta_choice_suffix(fhir_meta_type t, char *buf, size_t cap)
{
    const char *tn = fhir_meta_type_name(t);
    size_t n = strlen(tn);
    if (cap == 0)
        return n;
    size_t k = n < cap - 1 ? n : cap - 1;
    memcpy(buf, tn, k);
    buf[k] = '\0';
    if (k > 0)
        buf[0] = (char)toupper((unsigned char)buf[0]);
    return n;
}
