/* web — the clinician's pages, served by the daemon's one listener (serve.h) under /ui/:
 *   GET  /                               public     303 to /ui/
 *   GET  /ui/assets/{name}               public     the stylesheet and script, embedded in the
 *                                                   binary at build time (gateway/web/assets/;
 *                                                   web_env.assets_dir serves them from disk)
 *   GET  /ui/                            viewer     the worklist: who to refer, most urgent
 *                                                   first, filters, paging (indexed, store.h)
 *   GET  /ui/patients/{id}               viewer     why: gates with evidence and label, what is
 *                                                   missing, flags, consult, timeline (SVG),
 *                                                   labs, ranked centers with every exclusion
 *   POST /ui/patients/{id}/approve       clinician  approve the proposal (center, note)
 *   POST /ui/patients/{id}/decline       clinician  off the list for this verdict, coded reason
 *   POST /ui/referrals/{id}/reroute      clinician  approve the re-route proposal of a sent one
 *   POST /ui/referrals/{id}/retry        admin      a failed delivery tried again
 *   GET  /ui/referrals                   viewer     stuck first, by state, age and center
 *   GET  /ui/referrals/{id}              viewer     the center's Task history, the payload
 *   GET  /ui/program                     viewer     the funnel per month, time to referral,
 *   GET  /ui/program.csv                 viewer     outcomes by center, decline reasons
 *   GET  /ui/intake                      intake     a center's inbox: received referrals by
 *                                                   urgency and age, the clock since received
 *   GET  /ui/intake/{n}                  intake     one referral: the packet, its Task, history
 *   GET  /ui/intake/{n}/packet.pdf       intake     the packet as PDF (to print or fax)
 *   POST /ui/intake/{n}/accept|info|     intake     the answer (intake_task.h): accept, request
 *        decline|schedule                           more information, decline (coded), schedule
 * Pages are HTML built on the server (every value escaped by serve_html_escape), with no
 * inline script or style (the listener's CSP); forms carry the session's CSRF token and
 * answer with a redirect (POST-redirect-GET). Every act goes through the referral room's
 * state machine (refer_do) and is audited with the person and the reason. Names and record
 * numbers appear in pages for signed-in people, never in logs. */
#ifndef WEB_H
#define WEB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "centers.h"
#include "elig.h"
#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "fhir_node.h"
#include "map_profile.h"
#include "map_tables.h"
#include "propose.h"
#include "route.h"
#include "serve.h"
#include "store.h"

#define WEB_PAGE_MAX (8u << 20)     /* bytes of one page */
#define WEB_PAGE_ROWS 50            /* worklist rows per page */
#define WEB_ASSET_MAX (1u << 20)    /* bytes of an asset read from disk */
#define WEB_VISIT_GAP_MS (30ll * 60 * 1000) /* views closer than this are one visit */
#define WEB_REFERRALS_MAX 2000      /* referrals listed on one page */

/* What the daemon runs with now (criteria, tables, centers, the site and its referral
 * policy); borrowed for one request. */
typedef struct web_runtime {
    const elig_ruleset *rules;
    const map_tables *tables;
    propose_opts propose;        /* the site and the referral policy (propose.h) */
    int64_t as_of_days;          /* -1: today */
} web_runtime;

/* What the pages may use; everything borrowed until web_free. */
typedef struct web_env {
    store *st;
    void *ud;                    /* first argument of the callbacks */
    /* The runtime of this moment (reloads swap it between requests). */
    void (*runtime)(void *ud, web_runtime *out);
    /* The patient's cached resources and the Medications they reference, parsed into a
     * (owned by the caller): *out (caller frees the array) and *n; *rec: how many of the
     * patient's cached records were read (fewer past the daemon's per-patient cap). 0, or -1
     * with err (also when a cached record does not decode). */
    int (*resources)(void *ud, const char *patient_id, fhir_arena *a, const fhir_node ***out, size_t *n,
                     elig_records *rec, fhir_error *err);
    const char *assets_dir;      /* NULL: the embedded assets; else served from this folder */
    int stuck_business_days;     /* a sent referral without an answer this long is stuck; 0 = 3 */
    bool intake;                 /* a center (role center): the intake inbox under /ui/intake */
    int intake_waiting_days;     /* an unanswered referral this long is highlighted; 0 = 2 */
} web_env;

typedef struct web web;

/* The pages over env. Caller frees with web_free() after the listener. */
web *web_new(const web_env *env);
/* Registers the routes on s. 0, or -1 with err. */
int web_add_routes(web *w, serve *s, fhir_error *err);
/* The route table (tests check every route has a role). */
const serve_route *web_routes(size_t *n);
void web_free(web *w);

/* ---- parts with their own tests ------------------------------------------------------ */

/* The lines-of-therapy timeline of a profile as an SVG element (width x about 40 px per
 * line): lines as bars with their drugs, responses and progressions as marks, transplant and
 * CAR T lines marked, a line for today (today_days, days since the epoch). Appended to out. */
void web_timeline_svg(fhir_buf *out, const map_profile *p, int64_t today_days, int width);

/* An embedded asset by name ("app.css"): its bytes and content type, or NULL. */
const unsigned char *web_asset(const char *name, size_t *len, const char **content_type);

#endif
