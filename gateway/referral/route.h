/* route — choose treatment centers for a patient and explain every choice.
 *
 * Origin: the patient's own geolocation (Patient.address geolocation extension) if known,
 * else the centroid of the patient's ZIP code from a ZCTA centroid table (US Census
 * Gazetteer format; columns found by header name), else the referring site's configured
 * location. Every fallback is named in the result.
 *
 * Travel time estimate (documented in conf/README-centers.md):
 *   minutes = great-circle km (haversine, mean Earth radius 6371.0 km) x detour_factor
 *             / avg_speed_kmh x 60
 * Defaults: detour_factor 1.3, avg_speed_kmh 80 (our planning assumptions, configurable).
 * A patient whose estimated travel time to a center exceeds stay_near_minutes (default 120,
 * the REMS-era "within 2 hours" wording; clinical.md §3.4) is flagged: they will need
 * lodging near the center for the 2-week post-infusion monitoring period. */
#ifndef ROUTE_H
#define ROUTE_H

/* Byte caps of the texts a ranking builds. */
#define ROUTE_REASON_MAX 1024u       /* why a center is excluded / what it misses */
#define ROUTE_EXPLANATION_MAX 2048u  /* why a candidate ranks where it does */
#define ROUTE_JSON_MAX (1u << 20)    /* bytes of route_explain_json's text */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "centers.h"
#include "elig.h"
#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "fhir_node.h"

/* ---- ZCTA centroid table ------------------------------------------------------------ */

typedef struct route_zcta route_zcta;

/* Loads a tab-separated Gazetteer ZCTA file; the header must name GEOID (or ZCTA5),
 * INTPTLAT and INTPTLONG (any order, surrounding spaces ignored). Blank lines are skipped;
 * any other malformed row is an error "path:line: cause". Caller frees with
 * route_zcta_free(). */
route_zcta *route_zcta_load(const char *path, fhir_error *err);
void route_zcta_free(route_zcta *z);
size_t route_zcta_count(const route_zcta *z);
/* 0 and the coordinates in *lat, *lon when the 5-digit zip is in the table, -1 otherwise. zip may carry a
 * ZIP+4 suffix ("55905-1234"); only the first five digits are used. */
int route_zcta_lookup(const route_zcta *z, const char *zip, double *lat, double *lon);

/* ---- origin ------------------------------------------------------------------------- */

typedef enum route_origin_source {
    ROUTE_ORIGIN_GEOLOCATION = 0, /* patient geolocation extension / explicit LAT,LON */
    ROUTE_ORIGIN_ZIP,             /* centroid of the patient's ZIP */
    ROUTE_ORIGIN_SITE,            /* referring site's configured location */
} route_origin_source;

typedef struct route_origin {
    route_origin_source source;
    double lat, lon;
    char zip[6];        /* set when source == ZIP (or when a ZIP was given but not found) */
    char note[160];     /* why this source was used ("ZIP 12345 not in table, ...") */
} route_origin;

typedef struct route_patient_location {
    bool has_geo;
    double lat, lon;
    const char *zip;     /* NULL when unknown */
} route_patient_location;

typedef struct route_site {
    bool has_location;
    double lat, lon;
    const char *name;    /* for the explanation */
} route_site;

/* Picks the origin in the order geolocation -> ZIP centroid -> site. zcta may be NULL.
 * Returns 0, or -1 with err when no origin can be determined. */
int route_resolve_origin(const route_patient_location *p, const route_zcta *zcta,
                         const route_site *site, route_origin *out, fhir_error *err);

/* ---- ranking ------------------------------------------------------------------------ */

/* What a ranking makes of the directory alone for a set of needs on a day (which centers
 * are excluded and why, which indications each other one serves, in words), remembered
 * across rankings: only the distances, the payer and the order depend on the patient.
 * Bound to one directory and ruleset: a reload (another directory) needs a new cache; a
 * ranking with another directory does not use it. */
typedef struct route_cache route_cache;
/* Caller frees with route_cache_free() before (or with) dir. */
route_cache *route_cache_new(const centers_dir *dir);
void route_cache_free(route_cache *c);
/* Sets of (day, ruleset, needs) a cache remembers; once full, rankings go without it until
 * route_cache_settle empties it. */
#define ROUTE_CACHE_ENTRIES 64
/* At a point where no ranking result made with the cache is alive (the daemon: before each
 * screening batch): a full cache is emptied, so that the days and needs that come next are
 * remembered again (a daemon running for months fills it with days gone by). true when it
 * was emptied. */
bool route_cache_settle(route_cache *c);
/* The rankings answered from the cache, and those that filled it (tests, logs). */
size_t route_cache_hits(const route_cache *c);
size_t route_cache_fills(const route_cache *c);

typedef struct route_params {
    double detour_factor;     /* road km per great-circle km; 0 = 1.3 */
    double avg_speed_kmh;     /* 0 = 80 */
    double stay_near_minutes; /* 0 = 120 */
    int stay_near_days;       /* 0 = 14 (post-infusion monitoring, clinical.md §3.4) */
    const elig_ruleset *rules; /* borrowed: names the indications in the reasons in plain words
                                * ("Yescarta (axi-cel): ..."); NULL = by their keys */
    bool no_reasons;           /* candidates get no reason sentence (reason NULL): a referral
                                * keeps none, route_json_reason writes it when shown */
    route_cache *cache;        /* borrowed, may be NULL: the directory's part of the ranking
                                * from there (the result then borrows strings from the cache
                                * too: valid while both the arena and the cache are) */
} route_params;

/* One indication the patient is eligible or possibly eligible for. */
typedef struct route_need {
    const char *product;    /* product key, e.g. "axi-cel" */
    const char *disease;    /* disease key (FACTS.md) or NULL when unknown */
    const char *indication; /* the full "product:indication" key, for the explanation */
    bool possible;          /* possibly eligible (needs review) rather than eligible */
} route_need;

typedef struct route_candidate {
    const centers_center *center;             /* borrowed from the directory */
    const centers_accreditation *accreditation; /* the valid one with the latest expiry */
    double distance_km;                       /* great-circle */
    double travel_minutes;                    /* estimate, see above */
    bool payer_demoted;                       /* center lists payers and the patient's is not */
    bool beyond_stay_near;                    /* travel_minutes > stay_near_minutes */
    const char **matched;                     /* indications the center can serve */
    size_t n_matched;
    const char *serves;                       /* the matched indications in words */
    const char *reason;                       /* one-sentence explanation (NULL with
                                               * route_params.no_reasons) */
} route_candidate;

typedef struct route_exclusion {
    const centers_center *center;
    const char *reason;
} route_exclusion;

typedef struct route_result {
    route_origin origin;
    route_params params;
    int64_t day;                 /* evaluation date (days since epoch) */
    route_candidate *candidates; /* ranked best first */
    size_t n_candidates;
    route_exclusion *exclusions; /* in directory order */
    size_t n_exclusions;
    const char *payer;           /* the patient's payer as given (NULL: unknown) */
} route_result;

/* Ranks the directory's centers for the needs. payer may be NULL (unknown). day = the
 * evaluation date (days since epoch, from fhir_clock). All result arrays and strings live
 * in arena a (borrowed, valid until the arena is reset). Returns 0; -1 with err on arena
 * exhaustion or when n_needs == 0. */
int route_rank(fhir_arena *a, const centers_dir *dir, const route_origin *origin,
               const route_need *needs, size_t n_needs, const char *payer, int64_t day,
               const route_params *params, route_result *out, fhir_error *err);

/* Great-circle distance in km (haversine). */
double route_distance_km(double lat1, double lon1, double lat2, double lon2);
/* Minutes for a great-circle distance under params (NULL = defaults). */
double route_travel_minutes(double km, const route_params *params);

/* Human-readable explanation (origin, assumptions, ranked list, exclusions) appended to out. */
int route_explain_text(const route_result *r, fhir_buf *out);
/* The same as a JSON object, the form a referral keeps, written compact into out (the text a
 * referral stores, made without a tree): a candidate carries its fields, not its reason
 * sentence, plus what the sentence needs besides them — "km" (the distance as the sentence
 * rounds it), "payers_listed", "serves" (an index into the route's "serves": the words of the
 * indications it serves, each distinct text once) and, when a candidate was demoted for it,
 * the route's "payer". route_json_reason writes the sentence; route_json_shown gives the form
 * people and the API see. Exclusions keep their "reason". 0, or -1 when out's cap is hit. */
int route_explain_write(const route_result *r, fhir_buf *out);
/* That text read into a tree in arena a (borrowed). NULL when it is over ROUTE_JSON_MAX or
 * the arena's cap is hit. */
fhir_node *route_explain_json(fhir_arena *a, const route_result *r);
/* Appends the reason sentence of candidate cand of route (a tree of route_explain_json, as
 * stored): the text route_rank gave the candidate. A candidate of a route stored by an older
 * version keeps its "reason": that text. 0, or -1 when out's cap is hit. */
int route_json_reason(const fhir_node *route, const fhir_node *cand, fhir_buf *out);
/* The same sentence without the distance, the travel time and the stay near the center (for a
 * page that says them beside the center's name): "serves ...; <accreditation> ...". A stored
 * "reason" of an older version comes whole. 0, or -1 when out's cap is hit. */
int route_json_reason_rest(const fhir_node *route, const fhir_node *cand, fhir_buf *out);
/* Route as shown (the admin API, `cartgate centers --json`): a copy in arena a (borrowed)
 * without the members only the reasons need, each candidate with its "reason" last. An older
 * route (candidates with their reason) is copied as it is. NULL when the arena's cap is hit. */
fhir_node *route_json_shown(fhir_arena *a, const fhir_node *route);

#endif
