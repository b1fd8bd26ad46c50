/* map_tables — loads mappings TSV tables and answers per-code lookups (see map_tables.h). */
#include "map_tables.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fhir_alloc.h"
#include "fhir_arena.h"
#include "fhir_datadir.h"
#include "fhir_hash.h"

#define TSV_MAX_BYTES (8u * 1024u * 1024u)
#define TSV_MAX_COLS 12

/* ---- small string -> pointer hash (open addressing, arena-backed keys) ------------------- */

typedef struct hent {
    const char *key;
    void *val;
} hent;

typedef struct hmap {
    hent *e;
    size_t cap; /* power of two */
    size_t n;
} hmap;

static uint64_t hash_str(const char *s)
{
    return fhir_hash64_str(FHIR_HASH64_INIT, s);
}

static void hmap_free(hmap *m)
{
    free(m->e);
    m->e = NULL;
    m->cap = m->n = 0;
}

static void hmap_put_raw(hent *e, size_t cap, const char *key, void *val)
{
    size_t i = (size_t)hash_str(key) & (cap - 1);
    while (e[i].key && strcmp(e[i].key, key))
        i = (i + 1) & (cap - 1);
    e[i].key = key;
    e[i].val = val;
}

/* Returns the previous value for key (NULL when new). Aborts on OOM. */
static void *hmap_put(hmap *m, const char *key, void *val)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        hent *ne = fhir_xcalloc(ncap, sizeof *ne);
        for (size_t i = 0; i < m->cap; i++)
            if (m->e[i].key)
                hmap_put_raw(ne, ncap, m->e[i].key, m->e[i].val);
        free(m->e);
        m->e = ne;
        m->cap = ncap;
    }
    size_t i = (size_t)hash_str(key) & (m->cap - 1);
    while (m->e[i].key && strcmp(m->e[i].key, key))
        i = (i + 1) & (m->cap - 1);
    if (m->e[i].key) {
        void *old = m->e[i].val;
        m->e[i].val = val;
        return old;
    }
    m->e[i].key = key;
    m->e[i].val = val;
    m->n++;
    return NULL;
}

static void *hmap_get(const hmap *m, const char *key)
{
    if (!m->cap || !key)
        return NULL;
    size_t i = (size_t)hash_str(key) & (m->cap - 1);
    while (m->e[i].key) {
        if (!strcmp(m->e[i].key, key))
            return m->e[i].val;
        i = (i + 1) & (m->cap - 1);
    }
    return NULL;
}

/* ---- table rows -------------------------------------------------------------------------- */

typedef struct dx_row {
    map_dx dx;
    char sys[12];
    bool prefix;
    bool override;
    const char *pattern; /* name rows: lower-case pattern */
} dx_row;

typedef struct unit_row {
    const char *group;
    const char *from;
    double factor;
    bool divide; /* "/88.4": value / factor (exact for the published divisors) */
} unit_row;

typedef struct lab_row {
    map_lab_def def;
    const char *group;
} lab_row;

typedef struct name_drug {
    const char *name; /* lower case */
    size_t len;
    const map_drug *drug;
} name_drug;

typedef struct proc_row {
    const char *event;
    const char *product;
    const char *row;
    const char *pattern; /* name rows */
    bool prefix;
} proc_row;

struct map_tables {
    fhir_arena *a;
    hmap dx_code;        /* "sys|CODE" -> dx_row (exact and prefix rows) */
    size_t dx_prefix_max;
    dx_row **dx_names;
    size_t ndx_names;
    hmap labs;           /* "sys|code" -> lab_row */
    unit_row *units;
    size_t nunits;
    hmap answers;        /* "kind|sys|code" -> value string */
    hmap drug_code;      /* rxcui -> map_drug */
    hmap drug_ing;       /* ingredient -> map_drug */
    name_drug *drug_names;
    size_t ndrug_names;
    hmap proc_code;      /* "sys|CODE" -> proc_row */
    proc_row **proc_names;
    size_t nproc_names;
};

static const char *const class_keys[MAP_CLASS_COUNT] = {
    "anti_cd20", "anthracycline", "alkylator", "btki", "bcl2i", "imid",
    "pi", "anti_cd38", "bcma_directed", "cd19_directed", "bispecific", "car_t",
};

const char *map_class_key(map_class c)
{
    if ((int)c < 0 || c >= MAP_CLASS_COUNT)
        return NULL;
    return class_keys[c];
}

int map_class_from_key(const char *key)
{
    if (!key)
        return -1;
    for (int i = 0; i < MAP_CLASS_COUNT; i++)
        if (!strcmp(class_keys[i], key))
            return i;
    return -1;
}

/* Disease concepts and markers a diagnoses.tsv row may name. */
static const char *const dx_concepts[] = {
    "dlbcl_nos", "hgbcl", "pmbcl", "tfl", "fl_3b", "fl", "mcl", "cll_sll", "mzl", "b_all",
    "all_nos", "mm", "pcl", "pcnsl", "hl", "other_heme", "non_heme", "cns_secondary", "hx_car_t",
    "hx_hct", "hx_allo", "hct_ineligible", "hct_refusal", "infection", "ignore", NULL,
};

/* What a lineage- or histology-unspecified code does not say (diagnoses.tsv `unspecified`). */
static const char *const dx_axes[] = {"lineage", "histology", "grade", NULL};

static const char *const proc_events[] = {
    "auto_hct", "allo_hct", "hct", "car_t", "car_t_collection", NULL,
};

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (!strcmp(*list, s))
            return true;
    return false;
}

/* Short key of a coding system: table spelling ("icd10cm") or FHIR URI. NULL when unknown. */
static const char *sys_key(const char *system)
{
    static const struct {
        const char *uri, *key;
        size_t ul, kl;
    } m[] = {
#define SYS(uri, key) {uri, key, sizeof uri - 1, sizeof key - 1}
        SYS(MAP_SYS_ICD10CM, "icd10cm"),
        SYS("http://hl7.org/fhir/sid/icd-10", "icd10cm"),
        SYS("urn:oid:2.16.840.1.113883.6.90", "icd10cm"),
        SYS(MAP_SYS_SNOMED, "snomed"),
        SYS("urn:oid:2.16.840.1.113883.6.96", "snomed"),
        SYS(MAP_SYS_LOINC, "loinc"),
        SYS("urn:oid:2.16.840.1.113883.6.1", "loinc"),
        SYS(MAP_SYS_RXNORM, "rxnorm"),
        SYS("urn:oid:2.16.840.1.113883.6.88", "rxnorm"),
        SYS(MAP_SYS_ICDO3, "icdo3"),
        SYS("urn:oid:2.16.840.1.113883.6.43.1", "icdo3"),
        SYS(MAP_SYS_CPT, "cpt"),
        SYS("urn:oid:2.16.840.1.113883.6.12", "cpt"),
        SYS(MAP_SYS_ICD10PCS, "icd10pcs"),
        SYS("http://www.cms.gov/Medicare/Coding/ICD10PCS", "icd10pcs"),
        SYS("urn:oid:2.16.840.1.113883.6.4", "icd10pcs"),
        SYS(MAP_SYS_HCPCS, "hcpcs"),
        SYS("http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "hcpcs"),
        SYS("urn:oid:2.16.840.1.113883.6.285", "hcpcs"),
#undef SYS
    };
    if (!system)
        return NULL;
    /* the usual URIs differ in their length: compare only the entries of the same length */
    size_t n = strlen(system);
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if ((m[i].ul == n && !memcmp(m[i].uri, system, n)) || (m[i].kl == n && !memcmp(m[i].key, system, n)))
            return m[i].key;
    return NULL;
}

/* Normalises a code: trims spaces, drops dots for ICD-10 systems, upper-cases ICD codes. */
static void norm_code(const char *sys, const char *code, char *out, size_t outlen)
{
    size_t j = 0;
    bool icd = sys && (!strcmp(sys, "icd10cm") || !strcmp(sys, "icd10pcs") || !strcmp(sys, "cpt") ||
                       !strcmp(sys, "hcpcs"));
    bool drop_dot = sys && !strcmp(sys, "icd10cm");
    for (const char *p = code; *p && j + 1 < outlen; p++) {
        unsigned char c = (unsigned char)*p;
        if (isspace(c))
            continue;
        if (drop_dot && c == '.')
            continue;
        out[j++] = icd ? (char)toupper(c) : (char)c;
    }
    out[j] = '\0';
}

static void lower_into(const char *s, char *out, size_t outlen)
{
    size_t j = 0;
    for (; s && *s && j + 1 < outlen; s++)
        out[j++] = (char)tolower((unsigned char)*s);
    out[j] = '\0';
}

/* Name pattern: parts separated by '&'; a part starting with '!' must be absent.
 * text must already be lower case. */
static bool pattern_match(const char *pattern, const char *text)
{
    char part[256];
    const char *p = pattern;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        if (n >= sizeof part)
            n = sizeof part - 1;
        memcpy(part, p, n);
        part[n] = '\0';
        bool neg = part[0] == '!';
        const char *needle = neg ? part + 1 : part;
        bool found = *needle && strstr(text, needle) != NULL;
        if (neg == found)
            return false;
        p = amp ? amp + 1 : p + n;
    }
    return true;
}

/* ---- TSV reading --------------------------------------------------------------------------- */

typedef struct tsv {
    char *data;
    const char *file; /* "diagnoses.tsv" for messages */
    char *cur;
    size_t line;
    char *col[TSV_MAX_COLS];
    size_t ncol;
} tsv;

static int tsv_open(tsv *t, const char *dir, const char *name, fhir_error *err)
{
    char path[4096];
    memset(t, 0, sizeof *t);
    t->file = name;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return fhir_error_set(err, "%s/%s: path too long", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return fhir_error_set(err, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = fhir_xmalloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= TSV_MAX_BYTES) {
                fclose(f);
                free(buf);
                return fhir_error_set(err, "%s: larger than %u bytes", path, TSV_MAX_BYTES);
            }
            cap *= 2;
            char *nb = fhir_xrealloc(buf, cap);
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len - 1, f);
        if (r == 0)
            break;
        len += r;
    }
    bool ioerr = ferror(f);
    fclose(f);
    if (ioerr) {
        free(buf);
        return fhir_error_set(err, "%s: read error", path);
    }
    buf[len] = '\0';
    if (memchr(buf, '\0', len)) {
        free(buf);
        return fhir_error_set(err, "%s: contains a NUL byte", path);
    }
    t->data = t->cur = buf;
    return 0;
}

static void tsv_close(tsv *t)
{
    free(t->data);
    t->data = NULL;
}

/* Next non-comment, non-blank line split into columns. 1 = row, 0 = end. */
static int tsv_next(tsv *t)
{
    while (t->cur && *t->cur) {
        char *line = t->cur;
        char *nl = strchr(line, '\n');
        if (nl) {
            *nl = '\0';
            t->cur = nl + 1;
        } else {
            t->cur = line + strlen(line);
        }
        t->line++;
        size_t L = strlen(line);
        if (L && line[L - 1] == '\r')
            line[--L] = '\0';
        if (!L || line[0] == '#')
            continue;
        t->ncol = 0;
        char *p = line;
        for (;;) {
            char *tab = strchr(p, '\t');
            if (t->ncol < TSV_MAX_COLS)
                t->col[t->ncol] = p;
            t->ncol++;
            if (!tab)
                break;
            *tab = '\0';
            p = tab + 1;
        }
        return 1;
    }
    return 0;
}

static int tsv_header(tsv *t, const char *const *cols, size_t n, fhir_error *err)
{
    if (!tsv_next(t))
        return fhir_error_set(err, "%s:%zu: empty table (no header)", t->file, t->line);
    if (t->ncol != n)
        return fhir_error_set(err, "%s:%zu: header has %zu columns, expected %zu", t->file, t->line,
                              t->ncol, n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(t->col[i], cols[i]))
            return fhir_error_set(err, "%s:%zu: header column %zu is '%s', expected '%s'", t->file,
                                  t->line, i + 1, t->col[i], cols[i]);
    return 0;
}

static int tsv_row_check(tsv *t, size_t n, size_t allow_empty_mask, fhir_error *err)
{
    if (t->ncol != n)
        return fhir_error_set(err, "%s:%zu: %zu columns, expected %zu", t->file, t->line, t->ncol, n);
    for (size_t i = 0; i < n; i++)
        if (!t->col[i][0] && !(allow_empty_mask & ((size_t)1 << i)))
            return fhir_error_set(err, "%s:%zu: column %zu is empty", t->file, t->line, i + 1);
    return 0;
}

static bool parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v))
        return false;
    *out = v;
    return true;
}

static const char *row_ref(map_tables *mt, const tsv *t)
{
    return fhir_arena_sprintf(mt->a, "%s:%zu", t->file, t->line);
}

static char *adup(map_tables *mt, const char *s)
{
    char *r = fhir_arena_strdup(mt->a, s);
    if (!r)
        abort();
    return r;
}

static char *alower(map_tables *mt, const char *s)
{
    char *r = adup(mt, s);
    for (char *p = r; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return r;
}

/* ---- loaders ----------------------------------------------------------------------------- */

/* diagnoses.tsv `unspecified`: "-" or "axis:concept[,concept...]" (e.g. "lineage:b_all"). */
static int parse_unspec(map_tables *mt, const tsv *t, const char *col, map_dx *dx, fhir_error *err)
{
    if (!strcmp(col, "-"))
        return 0;
    const char *colon = strchr(col, ':');
    char axis[16];
    if (!colon || (size_t)(colon - col) >= sizeof axis)
        return fhir_error_set(err, "%s:%zu: unspecified must be '-' or 'axis:concept,...'", t->file,
                              t->line);
    snprintf(axis, sizeof axis, "%.*s", (int)(colon - col), col);
    if (!in_list(dx_axes, axis))
        return fhir_error_set(err, "%s:%zu: unknown unspecified axis '%s' (lineage, histology, grade)",
                              t->file, t->line, axis);
    dx->unspec_axis = adup(mt, axis);
    for (const char *s = colon + 1; *s;) {
        const char *e = strchr(s, ',');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        char c[32];
        if (n == 0 || n >= sizeof c)
            return fhir_error_set(err, "%s:%zu: empty or long concept in unspecified", t->file, t->line);
        snprintf(c, sizeof c, "%.*s", (int)n, s);
        if (!in_list(dx_concepts, c) || dx->nunspec >= MAP_DX_UNSPEC_MAX)
            return fhir_error_set(err, "%s:%zu: unspecified concept '%s' unknown or more than %d", t->file,
                                  t->line, c, MAP_DX_UNSPEC_MAX);
        dx->unspec[dx->nunspec++] = adup(mt, c);
        s += n + (e ? 1 : 0);
    }
    if (!dx->nunspec)
        return fhir_error_set(err, "%s:%zu: unspecified names no concept", t->file, t->line);
    return 0;
}

static int load_diagnoses(map_tables *mt, const char *dir, fhir_error *err)
{
    static const char *const cols[] = {"system", "match", "code", "concept", "override",
                                       "unspecified", "source"};
    tsv t;
    if (tsv_open(&t, dir, "diagnoses.tsv", err))
        return -1;
    int rc = tsv_header(&t, cols, 7, err);
    size_t cap_names = 0;
    while (!rc && tsv_next(&t)) {
        if ((rc = tsv_row_check(&t, 7, 0, err)))
            break;
        const char *sys = t.col[0], *match = t.col[1], *code = t.col[2], *concept = t.col[3];
        bool is_name = !strcmp(sys, "name");
        if (!is_name && !sys_key(sys)) {
            rc = fhir_error_set(err, "%s:%zu: unknown system '%s'", t.file, t.line, sys);
            break;
        }
        if (is_name ? strcmp(match, "contains") : (strcmp(match, "exact") && strcmp(match, "prefix"))) {
            rc = fhir_error_set(err, "%s:%zu: match '%s' not allowed for system '%s'", t.file,
                                t.line, match, sys);
            break;
        }
        if (!in_list(dx_concepts, concept)) {
            rc = fhir_error_set(err, "%s:%zu: unknown concept '%s'", t.file, t.line, concept);
            break;
        }
        if (strcmp(t.col[4], "yes") && strcmp(t.col[4], "no")) {
            rc = fhir_error_set(err, "%s:%zu: override must be yes or no", t.file, t.line);
            break;
        }
        dx_row *r = fhir_arena_calloc(mt->a, sizeof *r);
        if (!r)
            abort();
        r->dx.concept = adup(mt, concept);
        r->dx.row = row_ref(mt, &t);
        if ((rc = parse_unspec(mt, &t, t.col[5], &r->dx, err)))
            break;
        r->prefix = !strcmp(match, "prefix");
        r->override = !strcmp(t.col[4], "yes");
        if (is_name) {
            r->pattern = alower(mt, code);
            if (mt->ndx_names == cap_names) {
                cap_names = cap_names ? cap_names * 2 : 64;
                dx_row **nn = fhir_xrealloc(mt->dx_names, cap_names * sizeof *nn);
                mt->dx_names = nn;
            }
            mt->dx_names[mt->ndx_names++] = r;
            continue;
        }
        const char *sk = sys_key(sys);
        snprintf(r->sys, sizeof r->sys, "%s", sk);
        char nc[64];
        norm_code(sk, code, nc, sizeof nc);
        size_t ncl = strlen(nc);
        if (r->prefix && ncl > mt->dx_prefix_max)
            mt->dx_prefix_max = ncl;
        /* exact and prefix rows share a key space: "P|sys|code" vs "E|sys|code" */
        char *key = fhir_arena_sprintf(mt->a, "%c|%s|%s", r->prefix ? 'P' : 'E', sk, nc);
        if (!key)
            abort();
        if (hmap_put(&mt->dx_code, key, r)) {
            rc = fhir_error_set(err, "%s:%zu: duplicate code %s %s", t.file, t.line, sys, code);
            break;
        }
    }
    tsv_close(&t);
    return rc;
}

static int load_units(map_tables *mt, const char *dir, fhir_error *err)
{
    static const char *const cols[] = {"group", "from", "factor", "source"};
    tsv t;
    if (tsv_open(&t, dir, "units.tsv", err))
        return -1;
    int rc = tsv_header(&t, cols, 4, err);
    size_t cap = 0;
    while (!rc && tsv_next(&t)) {
        if ((rc = tsv_row_check(&t, 4, 1u << 1, err)))
            break;
        double f;
        bool divide = t.col[2][0] == '/';
        if (!parse_double(t.col[2] + divide, &f) || f <= 0) {
            rc = fhir_error_set(err, "%s:%zu: factor '%s' is not a positive number", t.file, t.line,
                                t.col[2]);
            break;
        }
        for (size_t i = 0; i < mt->nunits; i++)
            if (!strcmp(mt->units[i].group, t.col[0]) && !strcmp(mt->units[i].from, t.col[1])) {
                rc = fhir_error_set(err, "%s:%zu: duplicate unit '%s' in group %s", t.file, t.line,
                                    t.col[1], t.col[0]);
                break;
            }
        if (rc)
            break;
        if (mt->nunits == cap) {
            cap = cap ? cap * 2 : 64;
            unit_row *nu = fhir_xrealloc(mt->units, cap * sizeof *nu);
            mt->units = nu;
        }
        mt->units[mt->nunits++] = (unit_row){adup(mt, t.col[0]), adup(mt, t.col[1]), f, divide};
    }
    tsv_close(&t);
    return rc;
}

static bool unit_group_known(const map_tables *mt, const char *group)
{
    for (size_t i = 0; i < mt->nunits; i++)
        if (!strcmp(mt->units[i].group, group))
            return true;
    return false;
}

static int load_labs(map_tables *mt, const char *dir, fhir_error *err)
{
    static const char *const cols[] = {"system", "code", "analyte", "unit", "group", "lo", "hi",
                                       "source"};
    tsv t;
    if (tsv_open(&t, dir, "labs.tsv", err))
        return -1;
    int rc = tsv_header(&t, cols, 8, err);
    while (!rc && tsv_next(&t)) {
        if ((rc = tsv_row_check(&t, 8, 0, err)))
            break;
        const char *sk = sys_key(t.col[0]);
        if (!sk) {
            rc = fhir_error_set(err, "%s:%zu: unknown system '%s'", t.file, t.line, t.col[0]);
            break;
        }
        double lo, hi;
        if (!parse_double(t.col[5], &lo) || !parse_double(t.col[6], &hi) || lo > hi) {
            rc = fhir_error_set(err, "%s:%zu: bad plausible range '%s'..'%s'", t.file, t.line,
                                t.col[5], t.col[6]);
            break;
        }
        if (!unit_group_known(mt, t.col[4])) {
            rc = fhir_error_set(err, "%s:%zu: unit group '%s' not in units.tsv", t.file, t.line,
                                t.col[4]);
            break;
        }
        lab_row *r = fhir_arena_calloc(mt->a, sizeof *r);
        if (!r)
            abort();
        r->def.analyte = adup(mt, t.col[2]);
        r->def.unit = adup(mt, t.col[3]);
        r->def.lo = lo;
        r->def.hi = hi;
        r->def.row = row_ref(mt, &t);
        r->group = adup(mt, t.col[4]);
        char *key = fhir_arena_sprintf(mt->a, "%s|%s", sk, t.col[1]);
        if (!key)
            abort();
        if (hmap_put(&mt->labs, key, r)) {
            rc = fhir_error_set(err, "%s:%zu: duplicate code %s", t.file, t.line, t.col[1]);
            break;
        }
    }
    tsv_close(&t);
    return rc;
}

static int load_observations(map_tables *mt, const char *dir, fhir_error *err)
{
    static const char *const cols[] = {"kind", "system", "code", "value", "source"};
    static const char *const status_values[] = {"response", "stable", "progression",
                                                "undetermined", NULL};
    tsv t;
    if (tsv_open(&t, dir, "observations.tsv", err))
        return -1;
    int rc = tsv_header(&t, cols, 5, err);
    while (!rc && tsv_next(&t)) {
        if ((rc = tsv_row_check(&t, 5, 0, err)))
            break;
        const char *kind = t.col[0], *sk = sys_key(t.col[1]), *val = t.col[3];
        if (!sk) {
            rc = fhir_error_set(err, "%s:%zu: unknown system '%s'", t.file, t.line, t.col[1]);
            break;
        }
        if (!strcmp(kind, "status")) {
            if (!in_list(status_values, val)) {
                rc = fhir_error_set(err, "%s:%zu: unknown status '%s'", t.file, t.line, val);
                break;
            }
        } else if (!strcmp(kind, "ecog") || !strcmp(kind, "karnofsky")) {
            double v;
            double max = kind[0] == 'e' ? 5 : 100;
            if (!parse_double(val, &v) || v < 0 || v > max || v != floor(v)) {
                rc = fhir_error_set(err, "%s:%zu: bad %s value '%s'", t.file, t.line, kind, val);
                break;
            }
        } else {
            rc = fhir_error_set(err, "%s:%zu: unknown kind '%s'", t.file, t.line, kind);
            break;
        }
        char *key = fhir_arena_sprintf(mt->a, "%s|%s|%s", kind, sk, t.col[2]);
        if (!key)
            abort();
        if (hmap_put(&mt->answers, key, adup(mt, val))) {
            rc = fhir_error_set(err, "%s:%zu: duplicate code %s", t.file, t.line, t.col[2]);
            break;
        }
    }
    tsv_close(&t);
    return rc;
}

static int parse_classes(const char *s, unsigned *out)
{
    *out = 0;
    if (!strcmp(s, "-"))
        return 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int c = map_class_from_key(tok);
        if (c < 0)
            return -1;
        *out |= 1u << c;
    }
    return 0;
}

/* Private fields behind map_drug (maint / subst used by the line-of-therapy code via the
 * profile module; exposed through map_drug.role and the helpers below). */
typedef struct drug_ext {
    map_drug d;
    bool maint;
    const char *subst;
} drug_ext;

static int load_drugs(map_tables *mt, const char *dir, fhir_error *err)
{
    static const char *const cols[] = {"kind", "code", "ingredient", "classes", "role",
                                       "maint", "subst", "source"};
    static const char *const roles[] = {"therapy", "steroid", "car_t", "unknown", NULL};
    tsv t;
    if (tsv_open(&t, dir, "drugs.tsv", err))
        return -1;
    int rc = tsv_header(&t, cols, 8, err);
    size_t cap = 0;
    while (!rc && tsv_next(&t)) {
        if ((rc = tsv_row_check(&t, 8, 0, err)))
            break;
        const char *kind = t.col[0], *code = t.col[1], *ing = t.col[2];
        unsigned classes;
        if (parse_classes(t.col[3], &classes)) {
            rc = fhir_error_set(err, "%s:%zu: unknown class in '%s'", t.file, t.line, t.col[3]);
            break;
        }
        if (!in_list(roles, t.col[4])) {
            rc = fhir_error_set(err, "%s:%zu: unknown role '%s'", t.file, t.line, t.col[4]);
            break;
        }
        if (strcmp(t.col[5], "yes") && strcmp(t.col[5], "no")) {
            rc = fhir_error_set(err, "%s:%zu: maint must be yes or no", t.file, t.line);
            break;
        }
        drug_ext *d = hmap_get(&mt->drug_ing, ing);
        if (d) {
            bool same = d->d.classes == classes && !strcmp(d->d.role, t.col[4]) &&
                        d->maint == !strcmp(t.col[5], "yes") &&
                        !strcmp(d->subst ? d->subst : "-", t.col[6]);
            if (!same) {
                rc = fhir_error_set(err,
                                    "%s:%zu: ingredient '%s' has classes/role/maint/subst that "
                                    "differ from its first row %s",
                                    t.file, t.line, ing, d->d.row);
                break;
            }
        } else {
            d = fhir_arena_calloc(mt->a, sizeof *d);
            if (!d)
                abort();
            d->d.ingredient = adup(mt, ing);
            d->d.classes = classes;
            d->d.role = adup(mt, t.col[4]);
            d->d.row = row_ref(mt, &t);
            d->maint = !strcmp(t.col[5], "yes");
            d->subst = strcmp(t.col[6], "-") ? adup(mt, t.col[6]) : NULL;
            hmap_put(&mt->drug_ing, d->d.ingredient, d);
        }
        if (!strcmp(kind, "rxnorm")) {
            for (const char *p = code; *p; p++)
                if (!isdigit((unsigned char)*p)) {
                    rc = fhir_error_set(err, "%s:%zu: RxNorm code '%s' is not numeric", t.file,
                                        t.line, code);
                    break;
                }
            if (rc)
                break;
            if (hmap_put(&mt->drug_code, adup(mt, code), d)) {
                rc = fhir_error_set(err, "%s:%zu: duplicate RxNorm code %s", t.file, t.line, code);
                break;
            }
        } else if (!strcmp(kind, "name")) {
            char *lname = alower(mt, code);
            for (size_t i = 0; i < mt->ndrug_names; i++)
                if (!strcmp(mt->drug_names[i].name, lname)) {
                    rc = fhir_error_set(err, "%s:%zu: duplicate name '%s'", t.file, t.line, code);
                    break;
                }
            if (rc)
                break;
            if (mt->ndrug_names == cap) {
                cap = cap ? cap * 2 : 128;
                name_drug *nn = fhir_xrealloc(mt->drug_names, cap * sizeof *nn);
                mt->drug_names = nn;
            }
            mt->drug_names[mt->ndrug_names++] = (name_drug){lname, strlen(lname), &d->d};
        } else {
            rc = fhir_error_set(err, "%s:%zu: unknown kind '%s'", t.file, t.line, kind);
            break;
        }
    }
    tsv_close(&t);
    if (rc)
        return rc;
    /* Longest names first so "darzalex faspro" wins over "darzalex" and multi-word names over
     * their first word. */
    for (size_t i = 1; i < mt->ndrug_names; i++) {
        name_drug x = mt->drug_names[i];
        size_t j = i;
        while (j > 0 && mt->drug_names[j - 1].len < x.len) {
            mt->drug_names[j] = mt->drug_names[j - 1];
            j--;
        }
        mt->drug_names[j] = x;
    }
    return 0;
}

static int load_procedures(map_tables *mt, const char *dir, fhir_error *err)
{
    static const char *const cols[] = {"system", "match", "code", "event", "product", "source"};
    tsv t;
    if (tsv_open(&t, dir, "procedures.tsv", err))
        return -1;
    int rc = tsv_header(&t, cols, 6, err);
    size_t cap = 0;
    while (!rc && tsv_next(&t)) {
        if ((rc = tsv_row_check(&t, 6, 0, err)))
            break;
        const char *sys = t.col[0], *match = t.col[1], *code = t.col[2];
        bool is_name = !strcmp(sys, "name");
        if (!is_name && !sys_key(sys)) {
            rc = fhir_error_set(err, "%s:%zu: unknown system '%s'", t.file, t.line, sys);
            break;
        }
        if (is_name ? strcmp(match, "contains") : (strcmp(match, "exact") && strcmp(match, "prefix"))) {
            rc = fhir_error_set(err, "%s:%zu: match '%s' not allowed for system '%s'", t.file,
                                t.line, match, sys);
            break;
        }
        if (!in_list(proc_events, t.col[3])) {
            rc = fhir_error_set(err, "%s:%zu: unknown event '%s'", t.file, t.line, t.col[3]);
            break;
        }
        const char *product = NULL;
        if (strcmp(t.col[4], "-")) {
            drug_ext *d = hmap_get(&mt->drug_ing, t.col[4]);
            if (!d || strcmp(d->d.role, "car_t")) {
                rc = fhir_error_set(err, "%s:%zu: product '%s' is not a CAR T ingredient in drugs.tsv",
                                    t.file, t.line, t.col[4]);
                break;
            }
            product = d->d.ingredient;
        }
        proc_row *r = fhir_arena_calloc(mt->a, sizeof *r);
        if (!r)
            abort();
        r->event = adup(mt, t.col[3]);
        r->product = product;
        r->row = row_ref(mt, &t);
        r->prefix = !strcmp(match, "prefix");
        if (is_name) {
            r->pattern = alower(mt, code);
            if (mt->nproc_names == cap) {
                cap = cap ? cap * 2 : 64;
                proc_row **nn = fhir_xrealloc(mt->proc_names, cap * sizeof *nn);
                mt->proc_names = nn;
            }
            mt->proc_names[mt->nproc_names++] = r;
            continue;
        }
        const char *sk = sys_key(sys);
        char nc[64];
        norm_code(sk, code, nc, sizeof nc);
        char *key = fhir_arena_sprintf(mt->a, "%c|%s|%s", r->prefix ? 'P' : 'E', sk, nc);
        if (!key)
            abort();
        if (hmap_put(&mt->proc_code, key, r)) {
            rc = fhir_error_set(err, "%s:%zu: duplicate code %s %s", t.file, t.line, sys, code);
            break;
        }
    }
    tsv_close(&t);
    return rc;
}

map_tables *map_tables_load(const char *dir, fhir_error *err)
{
    if (!dir)
        dir = fhir_datadir_path("mappings");
    map_tables *mt = fhir_xcalloc(1, sizeof *mt);
    mt->a = fhir_arena_new(0);
    if (!mt->a)
        abort();
    if (load_units(mt, dir, err) || load_labs(mt, dir, err) || load_observations(mt, dir, err) ||
        load_drugs(mt, dir, err) || load_diagnoses(mt, dir, err) || load_procedures(mt, dir, err)) {
        fhir_error_prefix(err, "mappings %s", dir);
        map_tables_free(mt);
        return NULL;
    }
    return mt;
}

void map_tables_free(map_tables *mt)
{
    if (!mt)
        return;
    hmap_free(&mt->dx_code);
    hmap_free(&mt->labs);
    hmap_free(&mt->answers);
    hmap_free(&mt->drug_code);
    hmap_free(&mt->drug_ing);
    hmap_free(&mt->proc_code);
    free(mt->dx_names);
    free(mt->units);
    free(mt->drug_names);
    free(mt->proc_names);
    fhir_arena_free(mt->a);
    free(mt);
}

/* ---- lookups ------------------------------------------------------------------------------- */

/* Guesses the system of a bare code: ICD-10 shape (letter + digits) or SNOMED (all digits). */
static const char *guess_sys(const char *code)
{
    if (!code || !*code)
        return NULL;
    if (isalpha((unsigned char)code[0]) && isdigit((unsigned char)code[1]))
        return "icd10cm";
    for (const char *p = code; *p; p++)
        if (!isdigit((unsigned char)*p))
            return NULL;
    return "snomed";
}

static const dx_row *dx_by_name(const map_tables *t, const char *display)
{
    if (!display || !*display)
        return NULL;
    char low[512];
    lower_into(display, low, sizeof low);
    for (size_t i = 0; i < t->ndx_names; i++)
        if (pattern_match(t->dx_names[i]->pattern, low))
            return t->dx_names[i];
    return NULL;
}

/* Lookup keys joined by hand (snprintf was most of a lookup): appends len bytes of s at *w,
 * cut as snprintf cuts at size - 1 bytes; out stays NUL-terminated. */
static void key_put(char *out, size_t size, size_t *w, const char *s, size_t len)
{
    if (*w + len > size - 1)
        len = size - 1 - *w;
    memcpy(out + *w, s, len);
    *w += len;
    out[*w] = '\0';
}

#define KEY_PUT(out, w, s) key_put((out), sizeof(out), (w), (s), strlen(s))

bool map_dx_lookup(const map_tables *t, const char *system, const char *code,
                   const char *display, map_dx *out)
{
    const dx_row *hit = NULL;
    const char *sk = system ? sys_key(system) : guess_sys(code);
    if (sk && code && *code) {
        char nc[64], key[96];
        norm_code(sk, code, nc, sizeof nc);
        size_t w = 0, pre;
        KEY_PUT(key, &w, "E|");
        KEY_PUT(key, &w, sk);
        KEY_PUT(key, &w, "|");
        pre = w;
        KEY_PUT(key, &w, nc);
        hit = hmap_get(&t->dx_code, key);
        if (!hit && !strcmp(sk, "icdo3") && !strchr(nc, '/')) {
            KEY_PUT(key, &w, "/3"); /* "E|icdo3|<nc>/3" */
            hit = hmap_get(&t->dx_code, key);
        }
        key[0] = 'P';
        for (size_t n = strlen(nc); !hit && n > 0; n--) {
            if (n > t->dx_prefix_max)
                continue;
            w = pre;
            key_put(key, sizeof key, &w, nc, n); /* "P|<sk>|<first n of nc>" */
            hit = hmap_get(&t->dx_code, key);
        }
    }
    if (hit && hit->override) {
        const dx_row *nm = dx_by_name(t, display);
        /* only specific name rows override: "lymphoma" text on a DLBCL code must not turn it
         * into other_heme, and a generic non_heme word never overrides a heme code */
        if (nm && nm->override)
            hit = nm;
    }
    if (!hit)
        hit = dx_by_name(t, display);
    if (!hit)
        return false;
    if (out)
        *out = hit->dx;
    return true;
}

const map_lab_def *map_lab_lookup(const map_tables *t, const char *system, const char *code)
{
    const char *sk = sys_key(system ? system : "loinc");
    if (!sk || !code)
        return NULL;
    char key[96];
    size_t w = 0;
    KEY_PUT(key, &w, sk);
    KEY_PUT(key, &w, "|");
    KEY_PUT(key, &w, code);
    const lab_row *r = hmap_get(&t->labs, key);
    return r ? &r->def : NULL;
}

map_lab_status map_lab_normalize(const map_tables *t, const map_lab_def *def, double value,
                                 const char *unit, double *out)
{
    const lab_row *r = (const lab_row *)def; /* def is the first member of lab_row */
    const char *u = unit ? unit : "";
    while (*u == ' ')
        u++;
    const unit_row *hit = NULL;
    for (size_t i = 0; i < t->nunits && !hit; i++) /* first bytes first: a strcmp per row was most of it */
        if (t->units[i].group[0] == r->group[0] && t->units[i].from[0] == u[0] &&
            !strcmp(t->units[i].group, r->group) && !strcmp(t->units[i].from, u))
            hit = &t->units[i];
    for (size_t i = 0; i < t->nunits && !hit; i++)
        if (!strcmp(t->units[i].group, r->group) && !strcasecmp(t->units[i].from, u))
            hit = &t->units[i];
    if (!hit)
        return MAP_LAB_UNIT_UNKNOWN;
    double v = hit->divide ? value / hit->factor : value * hit->factor;
    /* 6 significant digits: removes binary noise (132.6 / 88.4 -> 1.5), keeps lab precision */
    if (v != 0 && isfinite(v)) {
        double mag = pow(10, 5 - (int)floor(log10(fabs(v))));
        v = round(v * mag) / mag;
    }
    if (out)
        *out = v;
    if (v < def->lo || v > def->hi)
        return MAP_LAB_IMPLAUSIBLE;
    return MAP_LAB_OK;
}

const char *map_answer_lookup(const map_tables *t, const char *kind, const char *system,
                              const char *code)
{
    const char *sk = sys_key(system);
    if (!sk || !code || !kind)
        return NULL;
    char key[128];
    size_t w = 0;
    KEY_PUT(key, &w, kind);
    KEY_PUT(key, &w, "|");
    KEY_PUT(key, &w, sk);
    KEY_PUT(key, &w, "|");
    KEY_PUT(key, &w, code);
    return hmap_get(&t->answers, key);
}

const map_drug *map_drug_lookup_code(const map_tables *t, const char *system, const char *code)
{
    if (system && strcmp(sys_key(system) ? sys_key(system) : "", "rxnorm"))
        return NULL;
    if (!code)
        return NULL;
    const drug_ext *d = hmap_get(&t->drug_code, code);
    return d ? &d->d : NULL;
}

static bool is_word(unsigned char c)
{
    return isalnum(c) || c >= 0x80;
}

const map_drug *map_drug_lookup_text(const map_tables *t, const char *text)
{
    if (!text || !*text)
        return NULL;
    char low[512];
    lower_into(text, low, sizeof low);
    for (size_t i = 0; i < t->ndrug_names; i++) {
        const name_drug *nd = &t->drug_names[i];
        for (const char *p = strstr(low, nd->name); p; p = strstr(p + 1, nd->name)) {
            bool left = p == low || !is_word((unsigned char)p[-1]);
            bool right = !is_word((unsigned char)p[nd->len]);
            if (left && right)
                return nd->drug;
        }
    }
    return NULL;
}

unsigned map_drug_classes(const map_tables *t, const char *ingredient)
{
    const drug_ext *d = ingredient ? hmap_get(&t->drug_ing, ingredient) : NULL;
    return d ? d->d.classes : 0;
}

const map_drug *map_drug_by_ingredient(const map_tables *t, const char *ingredient)
{
    const drug_ext *d = ingredient ? hmap_get(&t->drug_ing, ingredient) : NULL;
    return d ? &d->d : NULL;
}

bool map_tables_has_ingredient(const map_tables *t, const char *ingredient)
{
    return ingredient && hmap_get(&t->drug_ing, ingredient) != NULL;
}

bool map_drug_maintenance(const map_drug *d)
{
    return d && ((const drug_ext *)d)->maint;
}

const char *map_drug_subst_group(const map_drug *d)
{
    return d ? ((const drug_ext *)d)->subst : NULL;
}

const char *map_proc_lookup(const map_tables *t, const char *system, const char *code,
                            const char *display, const char **row, const char **product)
{
    const proc_row *hit = NULL;
    const char *sk = system ? sys_key(system) : NULL;
    if (sk && code && *code) {
        char nc[64], key[96];
        norm_code(sk, code, nc, sizeof nc);
        snprintf(key, sizeof key, "E|%s|%s", sk, nc);
        hit = hmap_get(&t->proc_code, key);
        for (size_t n = strlen(nc); !hit && n > 0; n--) {
            snprintf(key, sizeof key, "P|%s|%.*s", sk, (int)n, nc);
            hit = hmap_get(&t->proc_code, key);
        }
    }
    if (!hit && display && *display) {
        char low[512];
        lower_into(display, low, sizeof low);
        for (size_t i = 0; i < t->nproc_names && !hit; i++)
            if (pattern_match(t->proc_names[i]->pattern, low))
                hit = t->proc_names[i];
    }
    if (!hit)
        return NULL;
    if (row)
        *row = hit->row;
    if (product)
        *product = hit->product;
    return hit->event;
}
