/* map_scan — cheap structural scans of FHIR JSON text. See map_scan.h. */
#include "map_scan.h"

#include <stdint.h>
#include <string.h>

#define BAD SIZE_MAX

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r'))
        i++;
    return i;
}

static size_t skip_bom(const char *s, size_t n)
{
    return n >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3) ? 3 : 0;
}

/* s[i] == '"': index just past the closing quote, or BAD. */
static size_t skip_string(const char *s, size_t n, size_t i)
{
    size_t from = ++i;
    for (;;) {
        const char *q = i < n ? memchr(s + i, '"', n - i) : NULL;
        if (!q)
            return BAD;
        size_t j = (size_t)(q - s), bs = 0;
        while (j - bs > from && s[j - bs - 1] == '\\')
            bs++;
        if (!(bs & 1))
            return j + 1;
        i = j + 1;
    }
}

/* Index just past the JSON value starting at s[i], or BAD. Brackets must match. */
static size_t skip_value(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return BAD;
    char c = s[i];
    if (c == '"')
        return skip_string(s, n, i);
    if (c != '{' && c != '[') {
        size_t j = i;
        while (j < n && s[j] != ',' && s[j] != '}' && s[j] != ']' && s[j] != ' ' &&
               s[j] != '\n' && s[j] != '\t' && s[j] != '\r' && s[j] != ':')
            j++;
        return j > i ? j : BAD;
    }
    char want[MAP_SCAN_MAX_DEPTH];
    size_t d = 0;
    while (i < n) {
        c = s[i];
        if (c == '"') {
            i = skip_string(s, n, i);
            if (i == BAD)
                return BAD;
            continue;
        }
        if (c == '{' || c == '[') {
            if (d == MAP_SCAN_MAX_DEPTH)
                return BAD;
            want[d++] = c == '{' ? '}' : ']';
        } else if (c == '}' || c == ']') {
            if (!d || want[--d] != c)
                return BAD;
            if (!d)
                return i + 1;
        }
        i++;
    }
    return BAD;
}

/* A plain string at s[i] (no escape): its contents. false when not a string or escaped. */
static bool plain_string(const char *s, size_t n, size_t i, size_t end, const char **v,
                         size_t *vl)
{
    if (i >= n || s[i] != '"' || end < i + 2)
        return false;
    *v = s + i + 1;
    *vl = end - i - 2;
    return !memchr(*v, '\\', *vl);
}

/* Walks the members of the object at s[i] == '{'. For each member calls visit(key, value
 * start, value end); returns the index past the object, or BAD. A key with an escape is not
 * scannable (BAD). */
typedef bool (*member_fn)(void *ud, const char *key, size_t kl, const char *s, size_t vb,
                          size_t ve);

static size_t walk_object(const char *s, size_t n, size_t i, member_fn visit, void *ud)
{
    if (i >= n || s[i] != '{')
        return BAD;
    i = skip_ws(s, n, i + 1);
    if (i < n && s[i] == '}')
        return i + 1;
    for (;;) {
        size_t ke = skip_string(s, n, i);
        const char *k;
        size_t kl;
        if (ke == BAD || !plain_string(s, n, i, ke, &k, &kl))
            return BAD;
        i = skip_ws(s, n, ke);
        if (i >= n || s[i] != ':')
            return BAD;
        size_t vb = skip_ws(s, n, i + 1);
        size_t ve = skip_value(s, n, vb);
        if (ve == BAD || !visit(ud, k, kl, s, vb, ve))
            return BAD;
        i = skip_ws(s, n, ve);
        if (i >= n)
            return BAD;
        if (s[i] == '}')
            return i + 1;
        if (s[i] != ',')
            return BAD;
        i = skip_ws(s, n, i + 1);
    }
}

static bool key_is(const char *k, size_t kl, const char *name)
{
    return strlen(name) == kl && !memcmp(k, name, kl);
}

bool map_scan_first_type(const char *s, size_t n, const char **type, size_t *len)
{
    static const char rt[] = "\"resourceType\"";
    size_t i = skip_ws(s, n, skip_bom(s, n));
    if (i >= n || s[i] != '{')
        return false;
    i = skip_ws(s, n, i + 1);
    if (n - i < sizeof rt - 1 || memcmp(s + i, rt, sizeof rt - 1))
        return false;
    i = skip_ws(s, n, i + sizeof rt - 1);
    if (i >= n || s[i] != ':')
        return false;
    i = skip_ws(s, n, i + 1);
    if (i >= n || s[i] != '"')
        return false;
    size_t b = ++i;
    while (i < n && ((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z')))
        i++;
    if (i >= n || s[i] != '"' || i == b)
        return false;
    *type = s + b;
    *len = i - b;
    return true;
}

/* ---- documents and Bundles ------------------------------------------------------------ */

typedef struct top {
    const char *type;      /* resourceType (plain string), NULL when absent */
    size_t type_len;
    size_t entry_b, entry_e; /* "entry" value span, entry_e == 0 when absent */
    bool bad;              /* a reported value was not plain */
} top;

static bool top_member(void *ud, const char *k, size_t kl, const char *s, size_t vb, size_t ve)
{
    top *t = ud;
    if (key_is(k, kl, "resourceType")) {
        if (!plain_string(s, ve, vb, ve, &t->type, &t->type_len))
            t->bad = true;
    } else if (key_is(k, kl, "entry")) {
        t->entry_b = vb;
        t->entry_e = ve;
    }
    return true;
}

typedef struct ent {
    size_t res_b, res_e, url_b, url_e;
    bool bad;
} ent;

static bool entry_member(void *ud, const char *k, size_t kl, const char *s, size_t vb, size_t ve)
{
    ent *e = ud;
    if (key_is(k, kl, "resource")) {
        e->res_b = vb;
        e->res_e = ve;
    } else if (key_is(k, kl, "fullUrl")) {
        const char *u;
        size_t ul;
        if (s[vb] == '"' && !plain_string(s, ve, vb, ve, &u, &ul))
            e->bad = true;
        e->url_b = vb;
        e->url_e = ve;
    }
    return true;
}

int map_scan_doc(const char *s, size_t n, map_scan_entry_fn fn, void *ud, const char **type,
                 size_t *len)
{
    size_t i = skip_ws(s, n, skip_bom(s, n));
    top t = {0};
    size_t end = walk_object(s, n, i, top_member, &t);
    if (end == BAD || t.bad || skip_ws(s, n, end) != n)
        return -1;
    bool bundle = t.type && key_is(t.type, t.type_len, "Bundle");
    if (!bundle) {
        *type = t.type;
        *len = t.type ? t.type_len : 0;
        return 0;
    }
    if (!t.entry_e || s[t.entry_b] != '[')
        return t.entry_e && s[t.entry_b] != 'n' ? -1 : 1; /* no entries (or null) */
    i = skip_ws(s, n, t.entry_b + 1);
    if (i < t.entry_e && s[i] == ']')
        return 1;
    for (;;) {
        size_t ve = skip_value(s, t.entry_e, i);
        if (ve == BAD)
            return -1;
        if (s[i] == '{') {
            ent e = {0};
            if (walk_object(s, ve, i, entry_member, &e) == BAD || e.bad)
                return -1;
            if (e.res_e && s[e.res_b] == '{') {
                map_scan_entry me = {s + e.res_b, e.res_e - e.res_b, NULL, 0, NULL, 0};
                top rt = {0};
                if (walk_object(s, e.res_e, e.res_b, top_member, &rt) == BAD || rt.bad)
                    return -1;
                me.type = rt.type;
                me.type_len = rt.type ? rt.type_len : 0;
                if (e.url_e && s[e.url_b] == '"') {
                    me.url = s + e.url_b + 1;
                    me.url_len = e.url_e - e.url_b - 2;
                }
                fn(ud, &me);
            }
        }
        i = skip_ws(s, n, ve);
        if (i >= t.entry_e)
            return -1;
        if (s[i] == ']')
            return 1;
        if (s[i] != ',')
            return -1;
        i = skip_ws(s, n, i + 1);
    }
}

/* ---- members ----------------------------------------------------------------------------- */

typedef struct want {
    const char *const *names;
    size_t count;
    map_scan_span *out;
} want;

static bool want_member(void *ud, const char *k, size_t kl, const char *s, size_t vb, size_t ve)
{
    want *w = ud;
    for (size_t i = 0; i < w->count; i++)
        if (!w->out[i].p && key_is(k, kl, w->names[i])) {
            w->out[i].p = s + vb;
            w->out[i].len = ve - vb;
        }
    return true;
}

int map_scan_members(const char *s, size_t n, const char *const *names, size_t count,
                     map_scan_span *out)
{
    for (size_t i = 0; i < count; i++)
        out[i] = (map_scan_span){NULL, 0};
    want w = {names, count, out};
    size_t i = skip_ws(s, n, skip_bom(s, n));
    size_t end = walk_object(s, n, i, want_member, &w);
    return end == BAD || skip_ws(s, n, end) != n ? -1 : 0;
}

bool map_scan_string(map_scan_span v, const char **s, size_t *n)
{
    return v.p && v.len >= 2 && plain_string(v.p, v.len, 0, v.len, s, n);
}
