/* route — ZCTA centroid table, origin resolution, center ranking and its explanation. */
#include "route.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_alloc.h"
#include "fhir_clock.h"
#include "fhir_json.h"

#define ZCTA_MAX_LINE 4096
#define ZCTA_MAX_ROWS 200000u
#define EARTH_RADIUS_KM 6371.0

/* ---- ZCTA table --------------------------------------------------------------------- */

typedef struct zrow {
    int zip;
    int line;
    float lat, lon;
} zrow;

struct route_zcta {
    zrow *rows;
    size_t n;
};

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* Splits s in place on tabs into at most max fields; returns the count. */
static size_t split_tabs(char *s, char **f, size_t max)
{
    size_t n = 0;
    while (n < max) {
        f[n++] = s;
        char *t = strchr(s, '\t');
        if (!t)
            break;
        *t = '\0';
        s = t + 1;
    }
    return n;
}

static int parse_zip5(const char *s)
{
    if (strlen(s) < 5)
        return -1;
    int v = 0;
    for (int i = 0; i < 5; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (s[5] && s[5] != '-')
        return -1;
    return v;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

static int zrow_cmp(const void *a, const void *b)
{
    const zrow *x = a, *y = b;
    return (x->zip > y->zip) - (x->zip < y->zip);
}

route_zcta *route_zcta_load(const char *path, fhir_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fhir_error_set(err, "%s: cannot open ZCTA table: %m", path);
        return NULL;
    }
    route_zcta *z = calloc(1, sizeof *z);
    char *line = malloc(ZCTA_MAX_LINE + 2);
    if (!z || !line)
        abort();
    size_t alloc = 0;
    int lineno = 0, col_zip = -1, col_lat = -1, col_lon = -1, ncols = 0;
    int rc = 0;
    while (fgets(line, ZCTA_MAX_LINE + 2, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len > ZCTA_MAX_LINE && line[len - 1] != '\n') {
            rc = fhir_error_set(err, "%s:%d: line longer than %d bytes", path, lineno,
                                ZCTA_MAX_LINE);
            break;
        }
        char *fields[64];
        if (col_zip < 0) {
            size_t nf = split_tabs(line, fields, 64);
            for (size_t i = 0; i < nf; i++) {
                char *h = trim(fields[i]);
                if (i == 0 && !strncmp(h, "\xEF\xBB\xBF", 3))
                    h += 3;
                if (!strcmp(h, "GEOID") || !strcmp(h, "ZCTA5") || !strcmp(h, "ZCTA"))
                    col_zip = (int)i;
                else if (!strcmp(h, "INTPTLAT"))
                    col_lat = (int)i;
                else if (!strcmp(h, "INTPTLONG") || !strcmp(h, "INTPTLON"))
                    col_lon = (int)i;
            }
            ncols = (int)nf;
            if (col_zip < 0 || col_lat < 0 || col_lon < 0) {
                rc = fhir_error_set(err, "%s:%d: header must name the columns GEOID, INTPTLAT "
                                         "and INTPTLONG (tab-separated Census Gazetteer ZCTA "
                                         "format)", path, lineno);
                break;
            }
            continue;
        }
        /* blank lines (the Census file ends with an all-tab line) are skipped */
        bool blank = true;
        for (char *p = line; *p; p++)
            if (!isspace((unsigned char)*p))
                blank = false;
        if (blank)
            continue;
        size_t nf = split_tabs(line, fields, 64);
        if ((int)nf != ncols) {
            rc = fhir_error_set(err, "%s:%d: %zu columns, the header has %d", path, lineno, nf,
                                ncols);
            break;
        }
        int zip = parse_zip5(trim(fields[col_zip]));
        double lat, lon;
        if (zip < 0 || strlen(trim(fields[col_zip])) != 5) {
            rc = fhir_error_set(err, "%s:%d: \"%s\" is not a 5-digit ZCTA code", path, lineno,
                                fields[col_zip]);
            break;
        }
        if (parse_double(trim(fields[col_lat]), &lat) || lat < -90 || lat > 90 ||
            parse_double(trim(fields[col_lon]), &lon) || lon < -180 || lon > 180) {
            rc = fhir_error_set(err, "%s:%d: bad latitude/longitude \"%s\", \"%s\"", path,
                                lineno, fields[col_lat], fields[col_lon]);
            break;
        }
        if (z->n >= ZCTA_MAX_ROWS) {
            rc = fhir_error_set(err, "%s:%d: more than %u rows", path, lineno, ZCTA_MAX_ROWS);
            break;
        }
        if (z->n == alloc) {
            alloc = alloc ? alloc * 2 : 1024;
            z->rows = fhir_xrealloc(z->rows, alloc * sizeof *z->rows);
        }
        z->rows[z->n++] = (zrow){.zip = zip, .line = lineno, .lat = (float)lat, .lon = (float)lon};
    }
    if (!rc && ferror(f))
        rc = fhir_error_set(err, "%s: read error", path);
    if (!rc && col_zip < 0)
        rc = fhir_error_set(err, "%s: empty file (no header)", path);
    fclose(f);
    free(line);
    if (!rc) {
        qsort(z->rows, z->n, sizeof *z->rows, zrow_cmp);
        for (size_t i = 1; i < z->n; i++)
            if (z->rows[i].zip == z->rows[i - 1].zip) {
                int a = z->rows[i].line, b = z->rows[i - 1].line;
                rc = fhir_error_set(err, "%s:%d: ZCTA %05d repeated (also at line %d)", path,
                                    a > b ? a : b, z->rows[i].zip, a > b ? b : a);
                break;
            }
    }
    if (rc) {
        route_zcta_free(z);
        return NULL;
    }
    return z;
}

void route_zcta_free(route_zcta *z)
{
    if (!z)
        return;
    free(z->rows);
    free(z);
}

size_t route_zcta_count(const route_zcta *z)
{
    return z ? z->n : 0;
}

int route_zcta_lookup(const route_zcta *z, const char *zip, double *lat, double *lon)
{
    if (!z || !zip)
        return -1;
    int key = parse_zip5(zip);
    if (key < 0)
        return -1;
    zrow probe = {.zip = key};
    const zrow *r = bsearch(&probe, z->rows, z->n, sizeof *z->rows, zrow_cmp);
    if (!r)
        return -1;
    *lat = r->lat;
    *lon = r->lon;
    return 0;
}

/* ---- origin ------------------------------------------------------------------------- */

int route_resolve_origin(const route_patient_location *p, const route_zcta *zcta,
                         const route_site *site, route_origin *out, fhir_error *err)
{
    memset(out, 0, sizeof *out);
    if (p && p->has_geo && p->lat >= -90 && p->lat <= 90 && p->lon >= -180 && p->lon <= 180) {
        out->source = ROUTE_ORIGIN_GEOLOCATION;
        out->lat = p->lat;
        out->lon = p->lon;
        snprintf(out->note, sizeof out->note, "patient address geolocation");
        return 0;
    }
    char why[120] = "no patient geolocation and no ZIP code";
    if (p && p->zip && p->zip[0]) {
        int z5 = parse_zip5(p->zip);
        if (z5 >= 0) {
            snprintf(out->zip, sizeof out->zip, "%05u", (unsigned)z5 % 100000u);
            if (!zcta)
                snprintf(why, sizeof why, "ZIP %s known but no ZCTA centroid table configured",
                         out->zip);
            else if (route_zcta_lookup(zcta, out->zip, &out->lat, &out->lon) == 0) {
                out->source = ROUTE_ORIGIN_ZIP;
                snprintf(out->note, sizeof out->note, "centroid of ZIP %s (ZCTA table)",
                         out->zip);
                return 0;
            } else
                snprintf(why, sizeof why, "ZIP %s not in the ZCTA centroid table", out->zip);
        } else {
            snprintf(why, sizeof why, "postal code is not a US ZIP code");
        }
    }
    if (site && site->has_location) {
        out->source = ROUTE_ORIGIN_SITE;
        out->lat = site->lat;
        out->lon = site->lon;
        snprintf(out->note, sizeof out->note, "%s; using the referring site's location%s%s",
                 why, site->name ? " " : "", site->name ? site->name : "");
        return 0;
    }
    return fhir_error_set(err, "cannot place the patient: %s, and the referring site has no "
                               "configured location", why);
}

/* ---- ranking ------------------------------------------------------------------------ */

static route_params params_or_default(const route_params *p)
{
    route_params r = p ? *p : (route_params){0};
    if (!(r.detour_factor > 0))
        r.detour_factor = 1.3;
    if (!(r.avg_speed_kmh > 0))
        r.avg_speed_kmh = 80.0;
    if (!(r.stay_near_minutes > 0))
        r.stay_near_minutes = 120.0;
    if (r.stay_near_days <= 0)
        r.stay_near_days = 14;
    return r;
}

double route_distance_km(double lat1, double lon1, double lat2, double lon2)
{
    const double d2r = M_PI / 180.0;
    double dlat = (lat2 - lat1) * d2r, dlon = (lon2 - lon1) * d2r;
    double h = sin(dlat / 2) * sin(dlat / 2) +
               cos(lat1 * d2r) * cos(lat2 * d2r) * sin(dlon / 2) * sin(dlon / 2);
    if (h > 1)
        h = 1;
    return 2 * EARTH_RADIUS_KM * asin(sqrt(h));
}

double route_travel_minutes(double km, const route_params *params)
{
    route_params p = params_or_default(params);
    return km * p.detour_factor / p.avg_speed_kmh * 60.0;
}

static int cand_cmp(const void *a, const void *b)
{
    const route_candidate *x = a, *y = b;
    if (x->payer_demoted != y->payer_demoted)
        return x->payer_demoted ? 1 : -1;
    if (x->travel_minutes < y->travel_minutes)
        return -1;
    if (x->travel_minutes > y->travel_minutes)
        return 1;
    return strcmp(x->center->id, y->center->id);
}

static void fmt_day(int64_t day, char out[16])
{
    int y;
    unsigned m, d;
    fhir_clock_civil_from_days(day, &y, &m, &d);
    snprintf(out, 16, "%04d-%02u-%02u", y, m, d);
}

#define OOM_CHECK(p)                                                                        \
    do {                                                                                    \
        if (!(p))                                                                           \
            return fhir_error_set(err, "route: arena cap reached while ranking centers");   \
    } while (0)

/* A need's product in the words of the reasons: "Yescarta (axi-cel)" with the criteria, else
 * its key. In arena a. */
static const char *product_words(fhir_arena *a, const route_params *p, const route_need *nd)
{
    elig_display d;
    if (!p->rules || !elig_display_of(p->rules, nd->indication, &d))
        return nd->product;
    fhir_buf b;
    fhir_buf_init(&b, ROUTE_EXPLANATION_MAX);
    elig_display_write_product(&d, &b);
    const char *s = b.overflow ? NULL : fhir_arena_strdup(a, fhir_buf_cstr(&b));
    fhir_buf_free(&b);
    return s ? s : nd->product;
}

/* What a candidate's reason sentence is made of (a ranking's candidate, or a stored route's). */
typedef struct reason_parts {
    double km, minutes;       /* written as whole numbers */
    const char *serves;       /* the indications it serves, in words */
    const char *body, *expires; /* the accreditation */
    bool limited, demoted, payers_listed, beyond;
    const char *payer;        /* the patient's payer (set when demoted) */
    double stay_minutes;
    int stay_days;
    bool rest;                /* without the distance, the travel time and the stay near it */
} reason_parts;

/* The one writer of a candidate's reason sentence. */
static void reason_write(const reason_parts *p, fhir_buf *b)
{
    if (p->rest)
        fhir_buf_printf(b, "serves %s", p->serves ? p->serves : "");
    else
        fhir_buf_printf(b, "%.0f km great-circle, about %.0f min by road; serves %s", p->km, p->minutes,
                        p->serves ? p->serves : "");
    fhir_buf_printf(b, "; %s valid through %s", p->body ? p->body : "", p->expires ? p->expires : "");
    if (p->limited)
        fhir_buf_puts(b, "; capacity limited (expect a longer wait, call intake)");
    if (p->demoted)
        fhir_buf_printf(b, "; payer \"%s\" is not on the center's accepted list "
                           "(ranked after centers without a payer mismatch)", p->payer ? p->payer : "");
    else if (!p->payers_listed)
        fhir_buf_puts(b, "; accepted payers not listed (not held against it)");
    if (p->beyond && !p->rest)
        fhir_buf_printf(b, "; beyond %.0f min: the patient will need to stay near the "
                           "center for the %d-day post-infusion monitoring period",
                        p->stay_minutes, p->stay_days);
}

/* What a ranked candidate's reason sentence is made of (payer: the patient's, as given). */
static reason_parts candidate_parts(const route_result *r, const route_candidate *rc, const char *payer)
{
    return (reason_parts){
        .km = rc->distance_km, .minutes = rc->travel_minutes, .serves = rc->serves,
        .body = rc->accreditation->body, .expires = rc->accreditation->expires,
        .limited = rc->center->capacity == CENTERS_LIMITED, .demoted = rc->payer_demoted,
        .payers_listed = rc->center->payers_listed, .payer = payer,
        .beyond = rc->beyond_stay_near, .stay_minutes = r->params.stay_near_minutes,
        .stay_days = r->params.stay_near_days,
    };
}

/* Do two candidates serve the same indications (the needs' keys, in the same order)? */
static bool same_matched(const route_candidate *x, const route_candidate *y)
{
    if (x->n_matched != y->n_matched)
        return false;
    for (size_t k = 0; k < x->n_matched; k++)
        if (x->matched[k] != y->matched[k] && strcmp(x->matched[k], y->matched[k]))
            return false;
    return true;
}

/* The directory's part of a ranking (route.h: route_cache): per center, excluded (why) or a candidate
 * (accreditation, matched indications, serves); in directory order. */
typedef struct rank_fixed {
    route_candidate *cands;     /* center, accreditation, matched, n_matched, serves only */
    size_t n_cands;
    route_exclusion *excl;
    size_t n_excl;
} rank_fixed;

/* Fills f for the needs on day, everything in arena a. 0, or -1 with err (a's cap). */
static int rank_fixed_make(fhir_arena *a, const centers_dir *dir, const route_need *needs, size_t n_needs,
                           int64_t day, const route_params *params, rank_fixed *f, fhir_error *err)
{
    memset(f, 0, sizeof *f);
    size_t n = dir ? dir->n : 0;
    f->cands = fhir_arena_calloc(a, (n + 1) * sizeof *f->cands);
    f->excl = fhir_arena_calloc(a, (n + 1) * sizeof *f->excl);
    OOM_CHECK(f->cands && f->excl);
    char today[16];
    fmt_day(day, today);

    for (size_t i = 0; i < n; i++) {
        const centers_center *c = &dir->centers[i];
        const char *why = NULL;
        if (c->capacity == CENTERS_CLOSED) {
            why = fhir_arena_sprintf(a, "capacity is closed (not accepting referrals)");
        } else {
            const centers_accreditation *acc = centers_valid_accreditation(c, day);
            if (!acc) {
                fhir_buf b;
                fhir_buf_init(&b, ROUTE_REASON_MAX);
                if (c->n_accreditations == 0)
                    fhir_buf_puts(&b, "no accreditation listed");
                else {
                    fhir_buf_printf(&b, "no unexpired accreditation on %s (", today);
                    for (size_t k = 0; k < c->n_accreditations; k++)
                        fhir_buf_printf(&b, "%s%s expired %s", k ? "; " : "",
                                        c->accreditations[k].body, c->accreditations[k].expires);
                    fhir_buf_puts(&b, ")");
                }
                why = fhir_arena_strdup(a, fhir_buf_cstr(&b));
                fhir_buf_free(&b);
            } else {
                route_candidate *rc = &f->cands[f->n_cands];
                rc->matched = fhir_arena_calloc(a, (n_needs + 1) * sizeof *rc->matched);
                OOM_CHECK(rc->matched);
                fhir_buf miss;
                fhir_buf_init(&miss, ROUTE_REASON_MAX);
                for (size_t k = 0; k < n_needs; k++) {
                    const route_need *nd = &needs[k];
                    const char *label = nd->indication ? nd->indication : nd->product;
                    if (!centers_offers_product(c, nd->product))
                        fhir_buf_printf(&miss, "%sdoes not offer %s", miss.len ? "; " : "",
                                        product_words(a, params, nd));
                    else if (nd->disease && !centers_treats_disease(c, nd->disease))
                        fhir_buf_printf(&miss, "%soffers %s but does not list %s",
                                        miss.len ? "; " : "", product_words(a, params, nd),
                                        params->rules ? elig_words(nd->disease) : nd->disease);
                    else
                        rc->matched[rc->n_matched++] = label;
                }
                if (rc->n_matched == 0) {
                    why = fhir_arena_sprintf(a, "serves none of the patient's indications (%s)",
                                             fhir_buf_cstr(&miss));
                    fhir_buf_free(&miss);
                    memset(rc, 0, sizeof *rc);
                } else {
                    fhir_buf_free(&miss);
                    rc->center = c;
                    rc->accreditation = acc;
                    f->n_cands++;
                }
            }
        }
        if (why) {
            OOM_CHECK(why);
            f->excl[f->n_excl].center = c;
            f->excl[f->n_excl].reason = why;
            f->n_excl++;
        }
    }
    /* what each serves, in words (most serve what another does) */
    for (size_t i = 0; i < f->n_cands; i++) {
        route_candidate *rc = &f->cands[i];
        for (size_t k = 0; k < i && !rc->serves; k++)
            if (same_matched(&f->cands[k], rc))
                rc->serves = f->cands[k].serves;
        if (rc->serves)
            continue;
        fhir_buf b;
        fhir_buf_init(&b, ROUTE_EXPLANATION_MAX);
        if (params->rules) /* "Yescarta (axi-cel): large B-cell lymphoma, ..." */
            elig_display_write(params->rules, rc->matched, rc->n_matched, &b);
        else
            for (size_t k = 0; k < rc->n_matched; k++)
                fhir_buf_printf(&b, "%s%s", k ? ", " : "", rc->matched[k]);
        rc->serves = fhir_arena_strdup(a, fhir_buf_cstr(&b));
        fhir_buf_free(&b);
        OOM_CHECK(rc->serves);
    }
    return 0;
}

/* ---- route_cache ---------------------------------------------------------------------- */

typedef struct cache_entry {
    const elig_ruleset *rules;
    int64_t day;
    route_need *needs;        /* copies in the cache's arena */
    size_t n_needs;
    rank_fixed f;
} cache_entry;

struct route_cache {
    const centers_dir *dir;
    fhir_arena *a;
    cache_entry e[ROUTE_CACHE_ENTRIES];
    size_t n;
    size_t hits, fills;
};

route_cache *route_cache_new(const centers_dir *dir)
{
    route_cache *c = fhir_xcalloc(1, sizeof *c);
    c->dir = dir;
    c->a = fhir_arena_new(0);
    return c;
}

void route_cache_free(route_cache *c)
{
    if (!c)
        return;
    fhir_arena_free(c->a);
    free(c);
}

bool route_cache_settle(route_cache *c)
{
    if (!c || c->n < ROUTE_CACHE_ENTRIES)
        return false;
    fhir_arena_reset(c->a);
    memset(c->e, 0, sizeof c->e);
    c->n = 0;
    return true;
}

size_t route_cache_hits(const route_cache *c)
{
    return c ? c->hits : 0;
}

size_t route_cache_fills(const route_cache *c)
{
    return c ? c->fills : 0;
}

static bool str_same(const char *x, const char *y)
{
    return x == y || (x && y && !strcmp(x, y));
}

static bool entry_is(const cache_entry *e, const elig_ruleset *rules, int64_t day, const route_need *needs,
                     size_t n_needs)
{
    if (e->rules != rules || e->day != day || e->n_needs != n_needs)
        return false;
    for (size_t k = 0; k < n_needs; k++)
        if (!str_same(e->needs[k].product, needs[k].product) || !str_same(e->needs[k].disease, needs[k].disease) ||
            !str_same(e->needs[k].indication, needs[k].indication))
            return false;
    return true;
}

static const char *cache_dup(fhir_arena *a, const char *s, bool *oom)
{
    if (!s)
        return NULL;
    const char *d = fhir_arena_strdup(a, s);
    if (!d)
        *oom = true;
    return d;
}

/* The directory's part for the needs: remembered in the cache (when given, for this directory
 * and not full), else made in a. 0, or -1 with err. */
static int rank_fixed_get(fhir_arena *a, const centers_dir *dir, const route_need *needs, size_t n_needs,
                          int64_t day, const route_params *params, rank_fixed *f, fhir_error *err)
{
    route_cache *c = params->cache;
    if (!c || c->dir != dir)
        return rank_fixed_make(a, dir, needs, n_needs, day, params, f, err);
    for (size_t i = 0; i < c->n; i++)
        if (entry_is(&c->e[i], params->rules, day, needs, n_needs)) {
            c->hits++;
            *f = c->e[i].f;
            return 0;
        }
    if (c->n == ROUTE_CACHE_ENTRIES)
        return rank_fixed_make(a, dir, needs, n_needs, day, params, f, err);
    /* the needs' strings are the caller's (a patient's profile): the entry keeps copies, and
     * its matched labels point to those */
    cache_entry *e = &c->e[c->n];
    bool oom = false;
    route_need *own = fhir_arena_calloc(c->a, (n_needs + 1) * sizeof *own);
    if (!own)
        return rank_fixed_make(a, dir, needs, n_needs, day, params, f, err);
    for (size_t k = 0; k < n_needs; k++) {
        own[k] = needs[k];
        own[k].product = cache_dup(c->a, needs[k].product, &oom);
        own[k].disease = cache_dup(c->a, needs[k].disease, &oom);
        own[k].indication = cache_dup(c->a, needs[k].indication, &oom);
    }
    fhir_error ferr;
    fhir_error_clear(&ferr);
    if (oom || rank_fixed_make(c->a, dir, own, n_needs, day, params, &e->f, &ferr))
        return rank_fixed_make(a, dir, needs, n_needs, day, params, f, err);
    e->rules = params->rules;
    e->day = day;
    e->needs = own;
    e->n_needs = n_needs;
    c->n++;
    c->fills++;
    *f = e->f;
    return 0;
}

int route_rank(fhir_arena *a, const centers_dir *dir, const route_origin *origin,
               const route_need *needs, size_t n_needs, const char *payer, int64_t day,
               const route_params *params, route_result *out, fhir_error *err)
{
    memset(out, 0, sizeof *out);
    if (n_needs == 0)
        return fhir_error_set(err, "route: no eligible or possibly eligible indication given");
    out->origin = *origin;
    out->params = params_or_default(params);
    out->day = day;
    rank_fixed f;
    if (rank_fixed_get(a, dir, needs, n_needs, day, &out->params, &f, err))
        return -1;
    out->candidates = fhir_arena_calloc(a, (f.n_cands + 1) * sizeof *out->candidates);
    out->exclusions = fhir_arena_calloc(a, (f.n_excl + 1) * sizeof *out->exclusions);
    OOM_CHECK(out->candidates && out->exclusions);
    memcpy(out->exclusions, f.excl, f.n_excl * sizeof *f.excl);
    out->n_exclusions = f.n_excl;
    for (size_t i = 0; i < f.n_cands; i++) {
        route_candidate *rc = &out->candidates[i];
        *rc = f.cands[i];
        const centers_center *c = rc->center;
        rc->distance_km = route_distance_km(origin->lat, origin->lon, c->lat, c->lon);
        rc->travel_minutes = route_travel_minutes(rc->distance_km, &out->params);
        rc->payer_demoted = c->payers_listed && payer && payer[0] && !centers_accepts_payer(c, payer);
        rc->beyond_stay_near = rc->travel_minutes > out->params.stay_near_minutes;
    }
    out->n_candidates = f.n_cands;
    qsort(out->candidates, out->n_candidates, sizeof *out->candidates, cand_cmp);

    if (!out->params.no_reasons)
        for (size_t i = 0; i < out->n_candidates; i++) {
            route_candidate *rc = &out->candidates[i];
            fhir_buf b;
            fhir_buf_init(&b, ROUTE_EXPLANATION_MAX);
            reason_parts rp = candidate_parts(out, rc, payer);
            reason_write(&rp, &b);
            rc->reason = fhir_arena_strdup(a, fhir_buf_cstr(&b));
            fhir_buf_free(&b);
            OOM_CHECK(rc->reason);
        }
    if (out->n_candidates && payer) {
        out->payer = fhir_arena_strdup(a, payer);
        OOM_CHECK(out->payer);
    }
    return 0;
}

static const char *origin_source_name(route_origin_source s)
{
    switch (s) {
    case ROUTE_ORIGIN_GEOLOCATION: return "geolocation";
    case ROUTE_ORIGIN_ZIP: return "zip";
    case ROUTE_ORIGIN_SITE: return "site";
    }
    return "?";
}

int route_explain_text(const route_result *r, fhir_buf *out)
{
    fhir_buf_printf(out, "Origin: %s (%.4f, %.4f) — %s\n", origin_source_name(r->origin.source),
                    r->origin.lat, r->origin.lon, r->origin.note);
    fhir_buf_printf(out, "Travel time = great-circle km x %.2f detour / %.0f km/h. "
                         "Stay-near threshold %.0f min (%d days after infusion).\n",
                    r->params.detour_factor, r->params.avg_speed_kmh,
                    r->params.stay_near_minutes, r->params.stay_near_days);
    if (r->n_candidates == 0)
        fhir_buf_puts(out, "No center qualifies.\n");
    for (size_t i = 0; i < r->n_candidates; i++) {
        const route_candidate *c = &r->candidates[i];
        fhir_buf_printf(out, "%2zu. %s — %s, %s %s [%s]\n    ", i + 1, c->center->id,
                        c->center->name, c->center->city, c->center->state,
                        centers_capacity_name(c->center->capacity));
        if (c->reason)
            fhir_buf_puts(out, c->reason);
        else { /* ranked without them (route_params.no_reasons) */
            reason_parts rp = candidate_parts(r, c, r->payer);
            reason_write(&rp, out);
        }
        fhir_buf_putc(out, '\n');
    }
    if (r->n_exclusions)
        fhir_buf_puts(out, "Excluded:\n");
    for (size_t i = 0; i < r->n_exclusions; i++)
        fhir_buf_printf(out, "  - %s: %s\n", r->exclusions[i].center->id,
                        r->exclusions[i].reason);
    return out->overflow ? -1 : 0;
}

/* The route's JSON is written with its keys as literals ("\"key\":", ASCII, nothing to
 * escape) and each value once. */
#define JLIT(b, lit) fhir_buf_append((b), (lit), sizeof(lit) - 1)

/* key (a literal with its comma and colon) then the string val */
static void jstr(fhir_buf *b, const char *key, size_t keyn, const char *val)
{
    fhir_buf_append(b, key, keyn);
    fhir_json_write_string(b, val, strlen(val));
}
#define JSTR(b, lit, val) jstr((b), (lit), sizeof(lit) - 1, (val))

/* key then v with prec decimals, as "%.<prec>f" writes it (one append) */
static void jnum(fhir_buf *b, const char *key, size_t keyn, unsigned prec, double v)
{
    char t[128];
    memcpy(t, key, keyn);
    size_t n = fhir_fmt_fixed(t + keyn, 64, v, prec);
    fhir_buf_append(b, t, keyn + (n < 64 ? n : 63));
}
#define JNUM(b, lit, prec, v) jnum((b), (lit), sizeof(lit) - 1, (prec), (v))

/* key then the decimal digits of v (a count: "%.0f" of it) */
static void jint(fhir_buf *b, const char *key, size_t keyn, size_t v)
{
    char d[24];
    size_t i = sizeof d;
    do
        d[--i] = (char)('0' + v % 10);
    while (v /= 10);
    char t[128];
    memcpy(t, key, keyn);
    memcpy(t + keyn, d + i, sizeof d - i);
    fhir_buf_append(b, t, keyn + sizeof d - i);
}
#define JINT(b, lit, v) jint((b), (lit), sizeof(lit) - 1, (v))
#define JBOOL(b, lit, v) ((v) ? JLIT((b), lit "true") : JLIT((b), lit "false"))

int route_explain_write(const route_result *r, fhir_buf *out)
{
    JLIT(out, "{\"origin\":{");
    JSTR(out, "\"source\":", origin_source_name(r->origin.source));
    if (r->origin.zip[0])
        JSTR(out, ",\"zip\":", r->origin.zip);
    JNUM(out, ",\"lat\":", 6, r->origin.lat);
    JNUM(out, ",\"lon\":", 6, r->origin.lon);
    JSTR(out, ",\"note\":", r->origin.note);
    JLIT(out, "},\"assumptions\":{");
    JNUM(out, "\"detour_factor\":", 2, r->params.detour_factor);
    JNUM(out, ",\"avg_speed_kmh\":", 1, r->params.avg_speed_kmh);
    JNUM(out, ",\"stay_near_minutes\":", 0, r->params.stay_near_minutes);
    JNUM(out, ",\"stay_near_days\":", 0, (double)r->params.stay_near_days);
    fhir_buf_putc(out, '}');
    char day[16];
    fmt_day(r->day, day);
    JSTR(out, ",\"evaluated_on\":", day);
    JLIT(out, ",\"candidates\":[");
    /* each candidate's position in "serves" (the words of what it serves, each text once) */
    size_t *at = fhir_xcalloc(r->n_candidates + 1, sizeof *at), n_serves = 0;
    bool any_demoted = false;
    for (size_t i = 0; i < r->n_candidates; i++) {
        const route_candidate *c = &r->candidates[i];
        if (i)
            JINT(out, ",{\"rank\":", i + 1);
        else
            JINT(out, "{\"rank\":", i + 1);
        JSTR(out, ",\"center\":", c->center->id);
        JSTR(out, ",\"name\":", c->center->name);
        JSTR(out, ",\"city\":", c->center->city);
        JSTR(out, ",\"state\":", c->center->state);
        JNUM(out, ",\"distance_km\":", 1, c->distance_km);
        JNUM(out, ",\"travel_minutes\":", 0, c->travel_minutes);
        JSTR(out, ",\"capacity\":", centers_capacity_name(c->center->capacity));
        JLIT(out, ",\"accreditation\":{");
        JSTR(out, "\"body\":", c->accreditation->body);
        JSTR(out, ",\"expires\":", c->accreditation->expires);
        JLIT(out, "},\"indications\":[");
        for (size_t k = 0; k < c->n_matched; k++) {
            if (k)
                fhir_buf_putc(out, ',');
            fhir_json_write_string(out, c->matched[k], strlen(c->matched[k]));
        }
        JBOOL(out, "],\"payer_demoted\":", c->payer_demoted);
        JBOOL(out, ",\"beyond_stay_near\":", c->beyond_stay_near);
        /* what the reason sentence needs besides the fields above (route_json_reason) */
        JNUM(out, ",\"km\":", 0, c->distance_km);
        JBOOL(out, ",\"payers_listed\":", c->center->payers_listed);
        size_t k = 0; /* the first candidate with the same words */
        while (k < i && strcmp(r->candidates[k].serves, c->serves))
            k++;
        at[i] = k == i ? n_serves++ : at[k];
        JINT(out, ",\"serves\":", at[i]);
        fhir_buf_putc(out, '}');
        any_demoted = any_demoted || c->payer_demoted;
    }
    JLIT(out, "],\"excluded\":[");
    for (size_t i = 0; i < r->n_exclusions; i++) {
        if (i)
            fhir_buf_putc(out, ',');
        fhir_buf_putc(out, '{');
        JSTR(out, "\"center\":", r->exclusions[i].center->id);
        JSTR(out, ",\"reason\":", r->exclusions[i].reason);
        fhir_buf_putc(out, '}');
    }
    JLIT(out, "],\"serves\":[");
    for (size_t i = 0, w = 0; i < r->n_candidates; i++)
        if (at[i] == w) { /* the first candidate with these words */
            if (w++)
                fhir_buf_putc(out, ',');
            fhir_json_write_string(out, r->candidates[i].serves, strlen(r->candidates[i].serves));
        }
    fhir_buf_putc(out, ']');
    free(at);
    if (any_demoted && r->payer)
        JSTR(out, ",\"payer\":", r->payer);
    fhir_buf_putc(out, '}');
    return out->overflow ? -1 : 0;
}

fhir_node *route_explain_json(fhir_arena *a, const route_result *r)
{
    fhir_buf b;
    fhir_buf_init(&b, ROUTE_JSON_MAX);
    fhir_error err;
    fhir_node *root = route_explain_write(r, &b) ? NULL : fhir_json_parse(a, b.data, b.len, NULL, &err);
    fhir_buf_free(&b);
    return root;
}

/* a number member as a double (0 when absent or not a number) */
static double num_of(const fhir_node *o, const char *key)
{
    double v = 0;
    const fhir_node *n = fhir_node_get(o, key);
    return n && fhir_node_double(n, &v) ? v : 0;
}

static int json_reason(const fhir_node *route, const fhir_node *cand, bool rest, fhir_buf *out)
{
    const char *stored = fhir_node_str(fhir_node_get(cand, "reason"));
    if (stored) /* written by an older version */
        return fhir_buf_puts(out, stored);
    const fhir_node *si = fhir_node_get(cand, "serves");
    double sv = -1;
    const fhir_node *words = si && fhir_node_double(si, &sv) && sv >= 0
                                 ? fhir_node_at(fhir_node_get(route, "serves"), (size_t)sv)
                                 : NULL;
    const char *capacity = fhir_node_str(fhir_node_get(cand, "capacity"));
    reason_parts rp = {
        .km = num_of(cand, "km"), .minutes = num_of(cand, "travel_minutes"),
        .serves = fhir_node_str(words),
        .body = fhir_node_path_str(cand, "accreditation.body"),
        .expires = fhir_node_path_str(cand, "accreditation.expires"),
        .limited = capacity && !strcmp(capacity, centers_capacity_name(CENTERS_LIMITED)),
        .demoted = fhir_node_bool(fhir_node_get(cand, "payer_demoted"), false),
        .payers_listed = fhir_node_bool(fhir_node_get(cand, "payers_listed"), false),
        .payer = fhir_node_str(fhir_node_get(route, "payer")),
        .beyond = fhir_node_bool(fhir_node_get(cand, "beyond_stay_near"), false),
        .stay_minutes = num_of(fhir_node_get(route, "assumptions"), "stay_near_minutes"),
        .stay_days = (int)num_of(fhir_node_get(route, "assumptions"), "stay_near_days"),
        .rest = rest,
    };
    reason_write(&rp, out);
    return out->overflow ? -1 : 0;
}

int route_json_reason(const fhir_node *route, const fhir_node *cand, fhir_buf *out)
{
    return json_reason(route, cand, false, out);
}

int route_json_reason_rest(const fhir_node *route, const fhir_node *cand, fhir_buf *out)
{
    return json_reason(route, cand, true, out);
}

static bool key_is(const fhir_node *m, const char *k)
{
    size_t n = strlen(k);
    return m->key && m->key_len == n && !memcmp(m->key, k, n);
}

/* members of a stored route that only its reasons need */
static bool helper_key(const fhir_node *m, bool candidate)
{
    return candidate ? key_is(m, "km") || key_is(m, "payers_listed") || key_is(m, "serves")
                     : key_is(m, "serves") || key_is(m, "payer");
}

/* a copy of member m appended to obj under its key */
static fhir_node *copy_member(fhir_arena *a, fhir_node *obj, const fhir_node *m)
{
    fhir_node *v = fhir_node_clone(a, m);
    return v ? fhir_node_append(a, obj, m->key, m->key_len, v) : NULL;
}

fhir_node *route_json_shown(fhir_arena *a, const fhir_node *route)
{
    if (!route || route->kind != FHIR_OBJECT)
        return route ? fhir_node_clone(a, route) : NULL;
    fhir_node *root = fhir_node_new(a, FHIR_OBJECT);
    if (!root)
        return NULL;
    for (const fhir_node *m = fhir_node_first(route); m; m = m->next) {
        if (helper_key(m, false))
            continue;
        if (!key_is(m, "candidates") || m->kind != FHIR_ARRAY) {
            if (!copy_member(a, root, m))
                return NULL;
            continue;
        }
        fhir_node *cands = fhir_node_set_arr(a, root, "candidates");
        if (!cands)
            return NULL;
        for (const fhir_node *c = fhir_node_first(m); c; c = c->next) {
            if (c->kind != FHIR_OBJECT || fhir_node_get(c, "reason")) { /* an older route's */
                if (!fhir_node_append(a, cands, NULL, 0, fhir_node_clone(a, c)))
                    return NULL;
                continue;
            }
            fhir_node *e = fhir_node_new(a, FHIR_OBJECT);
            if (!e)
                return NULL;
            for (const fhir_node *f = fhir_node_first(c); f; f = f->next)
                if (!helper_key(f, true) && !copy_member(a, e, f))
                    return NULL;
            fhir_buf b;
            fhir_buf_init(&b, ROUTE_EXPLANATION_MAX);
            route_json_reason(route, c, &b);
            fhir_node *why = fhir_node_set_str(a, e, "reason", fhir_buf_cstr(&b));
            fhir_buf_free(&b);
            if (!why || !fhir_node_append(a, cands, NULL, 0, e))
                return NULL;
        }
    }
    return root;
}
