/* fhir_node — the generic resource tree: accessors, path getter, equality, builders. */
#include "fhir_node.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *fhir_node_kind_name(fhir_kind k)
{
    switch (k) {
    case FHIR_NULL: return "null";
    case FHIR_BOOL: return "boolean";
    case FHIR_NUMBER: return "number";
    case FHIR_STRING: return "string";
    case FHIR_OBJECT: return "object";
    case FHIR_ARRAY: return "array";
    }
    return "?";
}

bool fhir_node_key_is(const fhir_node *n, const char *name)
{
    if (!n || !n->key)
        return false;
    size_t l = strlen(name);
    return l == n->key_len && memcmp(n->key, name, l) == 0;
}

/* a[0..l) == b[0..l) for 1 <= l <= 16, with fixed-size loads (no call): the first and the
 * last 8 (or 4) bytes, overlapping when l is not a multiple; both hold l bytes. */
static inline __attribute__((always_inline)) bool eq_short(const char *a, const char *b, size_t l)
{
    if (l >= 8) {
        uint64_t x0, y0, x1, y1;
        memcpy(&x0, a, 8), memcpy(&y0, b, 8);
        memcpy(&x1, a + l - 8, 8), memcpy(&y1, b + l - 8, 8);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    if (l >= 4) {
        uint32_t x0, y0, x1, y1;
        memcpy(&x0, a, 4), memcpy(&y0, b, 4);
        memcpy(&x1, a + l - 4, 4), memcpy(&y1, b + l - 4, 4);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    for (size_t i = 0; i < l; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

static inline __attribute__((always_inline)) const fhir_node *get_n_inline(const fhir_node *obj,
                                                                            const char *name, size_t l)
{
    if (!obj || obj->kind != FHIR_OBJECT)
        return NULL;
    if (!l || l > 16) {
        for (const fhir_node *c = obj->child; c; c = c->next)
            if (c->key_len == l && (!l || c->key[0] == name[0]) && memcmp(c->key, name, l) == 0)
                return c;
        return NULL;
    }
    for (const fhir_node *c = obj->child; c; c = c->next)
        if (c->key_len == l && c->key[0] == name[0] && eq_short(c->key, name, l))
            return c;
    return NULL;
}

const fhir_node *fhir_node_get(const fhir_node *obj, const char *name)
{
    return get_n_inline(obj, name, strlen(name));
}

const fhir_node *fhir_node_at(const fhir_node *arr, size_t i)
{
    if (!arr || arr->kind != FHIR_ARRAY || i >= arr->len)
        return NULL;
    const fhir_node *c = arr->child;
    while (i-- && c)
        c = c->next;
    return c;
}

size_t fhir_node_count(const fhir_node *n)
{
    return n && (n->kind == FHIR_ARRAY || n->kind == FHIR_OBJECT) ? n->len : 0;
}

const fhir_node *fhir_node_first(const fhir_node *n)
{
    return n && (n->kind == FHIR_ARRAY || n->kind == FHIR_OBJECT) ? n->child : NULL;
}

const char *fhir_node_str(const fhir_node *n)
{
    return n && n->kind == FHIR_STRING ? n->text : NULL;
}

const char *fhir_node_num_text(const fhir_node *n)
{
    return n && n->kind == FHIR_NUMBER ? n->text : NULL;
}

bool fhir_node_is(const fhir_node *n, fhir_kind k) { return n && n->kind == k; }

/* A plain decimal ("-12.5": at most 15 digits, no exponent) as strtod reads it: the digits as an
 * integer, exact in a double, divided by an exact power of ten is correctly rounded (one IEEE
 * division), so the same double. false for anything else. */
static bool plain_decimal(const char *s, size_t len, double *out)
{
    static const double p10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    const char *p = s, *e = s + len;
    bool neg = p < e && *p == '-';
    p += neg;
    uint64_t m = 0;
    unsigned digits = 0, frac = 0;
    bool dot = false;
    for (; p < e; p++) {
        if (*p >= '0' && *p <= '9') {
            m = m * 10 + (uint64_t)(*p - '0');
            digits++;
            frac += dot;
        } else if (*p == '.' && !dot && digits) {
            dot = true;
        } else {
            return false;
        }
    }
    if (!digits || digits > 15 || (dot && !frac))
        return false;
    double v = (double)m / p10[frac];
    *out = neg ? -v : v;
    return true;
}

bool fhir_node_double(const fhir_node *n, double *out)
{
    if (!n || (n->kind != FHIR_NUMBER && n->kind != FHIR_STRING) || n->len == 0)
        return false;
    if (plain_decimal(n->text, n->len, out))
        return true;
    char *end;
    errno = 0;
    double v = strtod(n->text, &end);
    if (errno || *end != '\0' || isspace((unsigned char)n->text[0]))
        return false;
    *out = v;
    return true;
}

bool fhir_node_int(const fhir_node *n, int64_t *out)
{
    if (!n || n->kind != FHIR_NUMBER)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(n->text, &end, 10);
    if (errno || *end != '\0')
        return false;
    *out = v;
    return true;
}

bool fhir_node_bool(const fhir_node *n, bool fallback)
{
    return n && n->kind == FHIR_BOOL ? n->boolean : fallback;
}

const fhir_node *fhir_node_path(const fhir_node *n, const char *path)
{
    const char *p = path;
    while (n && *p) {
        const char *seg = p;
        p += strcspn(p, ".["); /* a third of the cost of a byte loop on the usual segments */
        size_t l = (size_t)(p - seg);
        if (l) {
            if (n->kind == FHIR_ARRAY)
                n = n->child; /* first repetition */
            n = get_n_inline(n, seg, l);
        }
        if (*p == '[') {
            char *end;
            unsigned long idx = strtoul(p + 1, &end, 10);
            if (*end != ']')
                return NULL;
            n = fhir_node_at(n, idx);
            p = end + 1;
        }
        if (*p == '.')
            p++;
    }
    return n;
}

const char *fhir_node_path_str(const fhir_node *n, const char *path)
{
    const fhir_node *v = fhir_node_path(n, path);
    if (v && v->kind == FHIR_ARRAY)
        v = v->child;
    return fhir_node_str(v);
}

/* Canonical decimal: sign, significant digits (no leading zeros), decimals after the
 * point once the exponent is applied. Returns false when text is not a JSON number. */
typedef struct decimal {
    bool neg;
    char digits[64];
    size_t ndig;
    long decimals;
} decimal;

static bool decimal_parse(const char *s, decimal *d)
{
    memset(d, 0, sizeof *d);
    if (*s == '-') {
        d->neg = true;
        s++;
    } else if (*s == '+') {
        s++;
    }
    long frac = 0;
    bool seen_digit = false, in_frac = false;
    for (; *s; s++) {
        if (isdigit((unsigned char)*s)) {
            seen_digit = true;
            if (in_frac)
                frac++;
            if (d->ndig == 0 && *s == '0')
                continue; /* leading zero */
            if (d->ndig >= sizeof d->digits)
                return false;
            d->digits[d->ndig++] = *s;
        } else if (*s == '.' && !in_frac) {
            in_frac = true;
        } else {
            break;
        }
    }
    if (!seen_digit)
        return false;
    long e = 0;
    if (*s == 'e' || *s == 'E') {
        char *end;
        e = strtol(s + 1, &end, 10);
        if (end == s + 1)
            return false;
        s = end;
    }
    if (*s)
        return false;
    d->decimals = frac - e;
    if (d->ndig == 0)
        d->neg = false; /* -0 == 0 */
    return true;
}

static bool number_equal(const fhir_node *a, const fhir_node *b, bool by_value)
{
    if (a->len == b->len && memcmp(a->text, b->text, a->len) == 0)
        return true;
    if (!by_value)
        return false;
    decimal x, y;
    if (!decimal_parse(a->text, &x) || !decimal_parse(b->text, &y))
        return false;
    return x.neg == y.neg && x.decimals == y.decimals && x.ndig == y.ndig &&
           memcmp(x.digits, y.digits, x.ndig) == 0;
}

bool fhir_node_equal(const fhir_node *a, const fhir_node *b, bool decimal_by_value)
{
    if (!a || !b)
        return a == b;
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case FHIR_NULL: return true;
    case FHIR_BOOL: return a->boolean == b->boolean;
    case FHIR_NUMBER: return number_equal(a, b, decimal_by_value);
    case FHIR_STRING: return a->len == b->len && memcmp(a->text, b->text, a->len) == 0;
    case FHIR_OBJECT:
    case FHIR_ARRAY:
        if (a->len != b->len)
            return false;
        for (const fhir_node *x = a->child, *y = b->child; x && y; x = x->next, y = y->next) {
            if (a->kind == FHIR_OBJECT &&
                (x->key_len != y->key_len || memcmp(x->key, y->key, x->key_len) != 0))
                return false;
            if (!fhir_node_equal(x, y, decimal_by_value))
                return false;
        }
        return true;
    }
    return false;
}

size_t fhir_node_size(const fhir_node *n)
{
    if (!n)
        return 0;
    size_t s = 1;
    for (const fhir_node *c = fhir_node_first(n); c; c = c->next)
        s += fhir_node_size(c);
    return s;
}

/* (get_n_inline with the name's length known: no strlen, the compare of a fixed size) */
const char *fhir_node_resource_type(const fhir_node *res)
{
    return fhir_node_str(get_n_inline(res, "resourceType", sizeof "resourceType" - 1));
}

const char *fhir_node_resource_id(const fhir_node *res)
{
    return fhir_node_str(get_n_inline(res, "id", sizeof "id" - 1));
}

/* ---- building ------------------------------------------------------------------------ */

fhir_node *fhir_node_new(fhir_arena *a, fhir_kind k)
{
    fhir_node *n = fhir_arena_alloc(a, sizeof *n);
    if (n)
        *n = (fhir_node){.kind = k};
    return n;
}

/* One arena allocation for a scalar node and its NUL-terminated text. */
static fhir_node *new_text(fhir_arena *a, fhir_kind k, const char *s, size_t len)
{
    fhir_node *n = fhir_arena_alloc(a, sizeof *n + len + 1);
    if (!n)
        return NULL;
    char *t = (char *)(n + 1);
    if (len)
        memcpy(t, s, len);
    t[len] = '\0';
    *n = (fhir_node){.kind = k, .len = (uint32_t)len, .text = t};
    return n;
}

fhir_node *fhir_node_new_str(fhir_arena *a, const char *s)
{
    return new_text(a, FHIR_STRING, s, strlen(s));
}

fhir_node *fhir_node_new_strn(fhir_arena *a, const char *s, size_t n)
{
    return new_text(a, FHIR_STRING, s, n);
}

fhir_node *fhir_node_new_num(fhir_arena *a, const char *text, size_t n)
{
    return new_text(a, FHIR_NUMBER, text, n);
}

fhir_node *fhir_node_new_bool(fhir_arena *a, bool v)
{
    fhir_node *n = fhir_node_new(a, FHIR_BOOL);
    if (n)
        n->boolean = v;
    return n;
}

fhir_node *fhir_node_append(fhir_arena *a, fhir_node *parent, const char *key, size_t keyn,
                            fhir_node *child)
{
    if (!parent || !child)
        return NULL;
    if (parent->kind == FHIR_OBJECT) {
        char *k = fhir_arena_strndup(a, key ? key : "", key ? keyn : 0);
        if (!k)
            return NULL;
        child->key = k;
        child->key_len = (uint32_t)keyn;
    }
    child->next = NULL;
    if (parent->last)
        parent->last->next = child;
    else
        parent->child = child;
    parent->last = child;
    parent->len++;
    return child;
}

fhir_node *fhir_node_set(fhir_arena *a, fhir_node *obj, const char *key, fhir_node *val)
{
    return fhir_node_append(a, obj, key, strlen(key), val);
}

fhir_node *fhir_node_set_str(fhir_arena *a, fhir_node *obj, const char *key, const char *val)
{
    return fhir_node_set(a, obj, key, fhir_node_new_str(a, val));
}

fhir_node *fhir_node_set_obj(fhir_arena *a, fhir_node *obj, const char *key)
{
    return fhir_node_set(a, obj, key, fhir_node_new(a, FHIR_OBJECT));
}

fhir_node *fhir_node_set_arr(fhir_arena *a, fhir_node *obj, const char *key)
{
    return fhir_node_set(a, obj, key, fhir_node_new(a, FHIR_ARRAY));
}

fhir_node *fhir_node_clone(fhir_arena *a, const fhir_node *n)
{
    if (!n)
        return NULL;
    fhir_node *c = n->kind == FHIR_STRING || n->kind == FHIR_NUMBER
                       ? new_text(a, n->kind, n->text, n->len)
                       : fhir_node_new(a, n->kind);
    if (!c)
        return NULL;
    c->boolean = n->boolean;
    c->line = n->line;
    for (const fhir_node *ch = fhir_node_first(n); ch; ch = ch->next) {
        fhir_node *cc = fhir_node_clone(a, ch);
        if (!cc || !fhir_node_append(a, c, ch->key, ch->key_len, cc))
            return NULL;
    }
    return c;
}
