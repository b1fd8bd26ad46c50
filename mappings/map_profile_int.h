/* map_profile_int.h — what the files of the profile builder share (private to mappings/; the
 * public interface is map_profile.h):
 *   map_profile.c   resources -> builder state, patient / diagnosis / lab / payer facts, output
 *   map_therapy.c   lines of therapy, prior therapy, transplant / CAR T history, relapse and
 *                   refractoriness facts
 * The helpers below are small and static inline so each file calls them by their short names.
 */
#ifndef MAP_PROFILE_INT_H
#define MAP_PROFILE_INT_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "map_lot.h"
#include "map_profile.h"

#define PROFILE_ARENA_CAP (64u * 1024u * 1024u)
#define MAX_WARNINGS 64
#define MEMO_SLOTS 64 /* text lookups remembered per patient */
#define ASTR_MAX 2047 /* bytes of one formatted evidence string (longer ones are cut) */
#define FNAME_SLOTS 64 /* F()'s remembered fact names (a power of 2) */

struct map_profile {
    fhir_arena *a;
    const char *patient_id;
    int64_t as_of;
    map_fact facts[MAP_FACT_COUNT];
    map_line *lines;
    size_t nlines;
    map_event *events;     /* arena, date order */
    size_t nevents;
    const char *warnings[MAX_WARNINGS];
    size_t nwarnings;
    fhir_buf fmt;          /* astr's scratch, capped at ASTR_MAX bytes */
    /* F()'s answers by the address of the name asked (the builder names facts with literals and
     * table strings that outlive it): a fact is set a few times per patient, and hashing its
     * name every time was a tenth of the profile */
    const char *fname[FNAME_SLOTS];
    int8_t fidx[FNAME_SLOTS];
};

/* ---- builder state --------------------------------------------------------------------------- */

typedef struct cond {
    const char *concept;
    const char *row;
    const char *code;
    const char *ref;       /* "Condition/c1" */
    const char *id;
    int64_t onset;         /* INT64_MIN when unknown */
    int64_t status_day;    /* recordedDate or onset */
    int state;             /* 0 active, 1 remission, 2 inactive/resolved */
    int code_status;       /* 0 none, 1 remission, 2 relapse (ICD 5th character / "A") */
    bool relapse_status;   /* clinicalStatus relapse / recurrence */
    const char *unspec_axis; /* the code leaves lineage / histology / grade open (map_dx) */
    const char *unspec[MAP_DX_UNSPEC_MAX];
    size_t nunspec;
} cond;

/* A finding that settles (or leaves open) a fact, with its resource (procedure status
 * reasons, cytogenetics reports). */
typedef struct finding {
    const char *what;      /* "hct_ineligible", "hct_refusal", "del17p", "gain1q" ... */
    const char *ref;
    const char *text;
} finding;

typedef struct lab_pick {
    bool have;
    int64_t ms;
    const map_lab_def *def;
    double raw;
    const char *unit;
    const char *ref;
    const char *date;
} lab_pick;

typedef struct dated {
    int64_t day;
    const char *ref;
    const char *what;
} dated;

typedef struct vec {
    void *v;
    size_t n, cap, sz;
} vec;

static inline void *vec_push(vec *v)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 16;
        void *nv = realloc(v->v, v->cap * v->sz);
        if (!nv)
            abort();
        v->v = nv;
    }
    void *slot = (char *)v->v + v->n * v->sz;
    memset(slot, 0, v->sz);
    v->n++;
    return slot;
}

typedef struct builder {
    map_profile *p;
    const map_tables *t;
    const map_profile_opts *o;
    const fhir_node *patient;
    vec meds;      /* const fhir_node * Medication resources */
    vec conds;     /* cond */
    vec ex;        /* map_lot_exposure */
    vec ev;        /* map_lot_event */
    vec prog;      /* dated progression */
    vec resp;      /* dated response */
    lab_pick labs[24];
    size_t nlabs;
    lab_pick ecog, kps;
    vec findings;  /* finding */
    const fhir_node *coverage;
    int64_t coverage_start;
    size_t nresources_seen;
    /* text lookups of this patient (the same drug and procedure names recur on most of a
     * patient's records): map_drug_lookup_text / map_proc_lookup answers by their inputs */
    struct text_memo {
        int kind;                      /* 0 drug by text, 1 procedure */
        const char *sys, *code, *text; /* borrowed from the resources */
        const void *answer;            /* map_drug *, or the procedure event */
        const char *row, *product;
    } memo[MEMO_SLOTS];
    size_t nmemo;
} builder;

static inline const char *astr(map_profile *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline const char *astr(map_profile *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fhir_buf_reset(&p->fmt);
    const char *r;
    if (!fhir_buf_vprintf(&p->fmt, fmt, ap)) {
        r = fhir_arena_strndup(p->a, p->fmt.data ? p->fmt.data : "", p->fmt.len);
    } else { /* longer than ASTR_MAX: the first ASTR_MAX bytes */
        char buf[ASTR_MAX + 1];
        vsnprintf(buf, sizeof buf, fmt, ap);
        r = fhir_arena_strdup(p->a, buf);
    }
    va_end(ap);
    return r ? r : "(evidence dropped: profile memory cap)";
}

/* The strings given, joined into one arena string (as astr(p, "%s%s...") writes them, NULL as
 * "(null)", cut at ASTR_MAX bytes) without printf: for the evidence written for most patients.
 * The list ends with AJOIN_END. */
static const char ajoin_end[] = "";
#define AJOIN_END ajoin_end
static inline const char *ajoin(map_profile *p, ...)
{
    va_list ap;
    size_t n = 0, k = 0, lens[16]; /* the first 16 lengths, not measured twice */
    va_start(ap, p);
    for (const char *s; (s = va_arg(ap, const char *)) != ajoin_end; k++) {
        size_t l = strlen(s ? s : "(null)");
        if (k < 16)
            lens[k] = l;
        n += l;
    }
    va_end(ap);
    if (n > ASTR_MAX)
        n = ASTR_MAX;
    char *r = fhir_arena_alloc(p->a, n + 1);
    if (!r)
        return "(evidence dropped: profile memory cap)";
    size_t w = 0;
    k = 0;
    va_start(ap, p);
    for (const char *s; w < n && (s = va_arg(ap, const char *)) != ajoin_end; k++) {
        s = s ? s : "(null)";
        size_t l = k < 16 ? lens[k] : strlen(s);
        if (l > n - w)
            l = n - w;
        memcpy(r + w, s, l);
        w += l;
    }
    va_end(ap);
    r[n] = '\0';
    return r;
}

/* fhir_buf_printf(b, "%s%s", x, y) without printf: both or, over b's cap, neither. */
static inline void put2(fhir_buf *b, const char *x, const char *y)
{
    x = x ? x : "(null)";
    y = y ? y : "(null)";
    size_t lx = strlen(x), ly = strlen(y);
    if (fhir_buf_reserve(b, lx + ly))
        return;
    fhir_buf_append(b, x, lx);
    fhir_buf_append(b, y, ly);
}

/* The strings given (list ending with AJOIN_END, NULL as "(null)") appended to b as one
 * fhir_buf_printf of "%s%s..." appends them: all, or over b's cap none. */
static inline void putn(fhir_buf *b, ...)
{
    va_list ap;
    size_t n = 0;
    va_start(ap, b);
    for (const char *s; (s = va_arg(ap, const char *)) != ajoin_end;)
        n += strlen(s ? s : "(null)");
    va_end(ap);
    if (fhir_buf_reserve(b, n))
        return;
    va_start(ap, b);
    for (const char *s; (s = va_arg(ap, const char *)) != ajoin_end;)
        fhir_buf_puts(b, s ? s : "(null)");
    va_end(ap);
}

/* v in decimal as printf's "%d" writes it, into out (at least 12 bytes). */
static inline const char *fmt_int(int v, char *out)
{
    char d[12];
    size_t i = sizeof d;
    unsigned u = v < 0 ? 0u - (unsigned)v : (unsigned)v;
    do
        d[--i] = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        d[--i] = '-';
    memcpy(out, d + i, sizeof d - i);
    out[sizeof d - i] = '\0';
    return out;
}

/* fhir_buf_printf(b, "%g", v), with an integer below a million written without printf. */
static inline void put_g(fhir_buf *b, double v)
{
    if (v > -1e6 && v < 1e6 && v == (double)(int)v && (v != 0 || !signbit(v))) {
        char num[12];
        fhir_buf_puts(b, fmt_int((int)v, num));
    } else {
        fhir_buf_printf(b, "%g", v);
    }
}

static inline void warn(map_profile *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void warn(map_profile *p, const char *fmt, ...)
{
    if (p->nwarnings >= MAX_WARNINGS)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    const char *s = fhir_arena_strdup(p->a, buf);
    if (s)
        p->warnings[p->nwarnings++] = s;
}

static inline map_fact *F(map_profile *p, const char *name)
{
    size_t h = (size_t)(((uint64_t)(uintptr_t)name * 0x9E3779B97F4A7C15ull) >> 58) & (FNAME_SLOTS - 1);
    if (p->fname[h] == name)
        return &p->facts[p->fidx[h]];
    int i = map_fact_index(name);
    if (i < 0)
        abort(); /* broken invariant: a name used here is not in FACTS */
    p->fname[h] = name;
    p->fidx[h] = (int8_t)i;
    return &p->facts[i];
}

static inline void set_num(map_profile *p, const char *name, double v, const char *evidence)
{
    map_fact *f = F(p, name);
    f->known = true;
    f->num = v;
    f->evidence = evidence;
}

static inline void set_bool(map_profile *p, const char *name, bool v, const char *evidence)
{
    map_fact *f = F(p, name);
    f->known = true;
    f->b = v;
    f->evidence = evidence;
}

static inline void set_str(map_profile *p, const char *name, const char *v, const char *evidence)
{
    map_fact *f = F(p, name);
    f->known = true;
    f->str = v;
    f->evidence = evidence;
}

static inline void set_unknown(map_profile *p, const char *name, const char *why)
{
    map_fact *f = F(p, name);
    f->known = false;
    f->evidence = why;
}

static inline void set_add(map_profile *p, const char *name, const char *v)
{
    map_fact *f = F(p, name);
    f->known = true;
    for (size_t i = 0; i < f->nset; i++)
        if (!strcmp(f->set[i], v))
            return;
    if (f->nset < MAP_FACT_SET_MAX)
        f->set[f->nset++] = v;
    else
        warn(p, "%s: more than %d members, '%s' dropped", name, MAP_FACT_SET_MAX, v);
}

static inline void set_remove(map_profile *p, const char *name, const char *v)
{
    map_fact *f = F(p, name);
    for (size_t i = 0; i < f->nset; i++)
        if (!strcmp(f->set[i], v)) {
            memmove(&f->set[i], &f->set[i + 1], (f->nset - i - 1) * sizeof f->set[0]);
            f->nset--;
            return;
        }
}

static inline void fmt_day(int64_t day, char *out, size_t n)
{
    int y;
    unsigned m, d;
    fhir_clock_civil_from_days(day, &y, &m, &d);
    if (y < 0 || y > 9999 || n < 11) { /* the usual case by hand: printf was a hot spot */
        snprintf(out, n, "%04d-%02u-%02u", y, m, d);
        return;
    }
    char *o = out;
    *o++ = (char)('0' + y / 1000);
    *o++ = (char)('0' + y / 100 % 10);
    *o++ = (char)('0' + y / 10 % 10);
    *o++ = (char)('0' + y % 10);
    *o++ = '-';
    *o++ = (char)('0' + m / 10 % 10);
    *o++ = (char)('0' + m % 10);
    *o++ = '-';
    *o++ = (char)('0' + d / 10 % 10);
    *o++ = (char)('0' + d % 10);
    *o = '\0';
}

static inline bool concept_is_heme(const char *c)
{
    return map_fact_code_valid("diseases", c) && strcmp(c, "non_heme");
}

static inline double round_to(double v, double step)
{
    return round(v / step) * step;
}

static inline const cond *find_cond(builder *b, const char *concept, int max_state, const cond *exclude)
{
    const cond *best = NULL;
    const cond *c = b->conds.v;
    for (size_t i = 0; i < b->conds.n; i++) {
        if (&c[i] == exclude || strcmp(c[i].concept, concept) || c[i].state > max_state)
            continue;
        if (!best || c[i].onset > best->onset)
            best = &c[i];
    }
    return best;
}

/* map_therapy.c: the therapy facts (lines, prior_*, *_hct, prior_car_t, relapse and
 * refractoriness) from b's exposures, events and disease-status records. */
void map_therapy_facts(builder *b);

#endif
