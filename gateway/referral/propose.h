/* propose — the one proposal path: a patient's verdict -> the indications that count ->
 * the best center (route.h) -> the BSeR package (bser.h) -> a referral (referral.h), within
 * the patient's episode.
 *
 * Everything runs inside the caller's open store transaction, so the proposal commits with
 * the verdict that caused it (a crash cannot leave a verdict owed its proposal) and nothing
 * is logged before that commit: the caller logs the outcome with propose_log() once it has
 * committed.
 *
 * One active referral per patient and episode. An episode is the stretch of a patient's
 * care one referral is about: it opens with the patient's first proposal and stays open while
 * any of its referrals is open (not declined, completed or cancelled). It closes when its
 * referral is closed by a person or a center — declined, completed, or cancelled by a person
 * (a clinician turning the proposal down, an operator withdrawing a sent referral) — and
 * nothing of it is open any more. Two endings do not close it: a proposal the screener takes
 * back before anyone acted on it (ended = withdrawn: the verdict stopped calling for it, or
 * the patient's data was deleted) and a referral replaced by an approved re-route (ended =
 * superseded). A new episode opens only when a later verdict shows a new disease event
 * against the marker the closed episode opened with (propose_episode_marker: another primary
 * disease, more documented relapses/progressions, or more lines of therapy); the same data
 * screened again, or a new rule set, opens none. Everything is derived from the patient's
 * referral rows on each call (episode, supersedes, ended, episode_marker), nothing is
 * remembered elsewhere, so a crash anywhere leaves a consistent answer.
 *
 *   candidate? (eligible, or possibly eligible when opts.with_possible; or, when the site
 *               chose so, a refer-early consult recommendation alone: opts.consult_proposals)
 *     no  -> withdraw the patient's proposals still pending approval (sent ones stay: a
 *            person decides)
 *     yes -> indications -> route -> the current episode:
 *       none yet                 -> create (episode 1)
 *       closed                   -> new disease event? create (next episode) : nothing
 *                                   (PROPOSE_EPISODE_CLOSED)
 *       open, nothing active     -> create (every earlier proposal was withdrawn)
 *       same center+indications  -> nothing (PROPOSE_EXISTS; a pending re-route is withdrawn)
 *       active not yet sent      -> update it in place (PROPOSE_UPDATED): pending approval,
 *                                   or approved by the standing order (auto) and never sent
 *       active sent, or approved by a person
 *                                -> a re-route proposal for a person (PROPOSE_REROUTE),
 *                                   pending approval also in auto mode, supersedes = the
 *                                   active referral; an existing pending re-route is updated
 *                                   in place; one a person cancelled is not proposed again.
 *                                   Approving it (refer_approve, from the CLI or the API)
 *                                   cancels the active one — at its center through the
 *                                   sender (Task.status cancelled) — and the sender sends
 *                                   the re-route only after that: never two at once.
 *     every other proposal of the patient still pending approval is withdrawn.
 * Placer identifiers are unique per referral (refer_placer_unique), so a center never sees
 * one identifier on two referrals. */
#ifndef PROPOSE_H
#define PROPOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "centers.h"
#include "elig.h"
#include "fhir_arena.h"
#include "fhir_error.h"
#include "fhir_node.h"
#include "map_profile.h"
#include "map_tables.h"
#include "referral.h"
#include "route.h"
#include "store.h"

#define PROPOSE_MAX_CANCELLED 64 /* stale proposals cancelled per patient and verdict */
#define PROPOSE_MARKER_MAX 160   /* bytes of an episode marker */
#define PROPOSE_MAX_REPORTS 20   /* pathology and imaging reports carried by a referral */

/* The site and the referral policy; everything borrowed for the call. */
typedef struct propose_opts {
    const char *site_id, *site_name;
    bool site_has_location;
    double site_lat, site_lon;
    bool with_possible;          /* referral.min_category = possibly_eligible */
    int consult_proposals;       /* referral.consult_proposals: 0 none, 1 refer_now,
                                  * 2 early_consult and refer_now (a refer-early
                                  * recommendation alone makes a proposal) */
    const char *urgency_default; /* NULL: routine */
    refer_mode mode;
    const elig_ruleset *rules;
    const centers_dir *centers;
    const route_zcta *zcta;      /* may be NULL */
    route_cache *route_cache;    /* may be NULL: the directory's part of the rankings
                                  * remembered (route.h; made for centers) */
    int64_t day;                 /* the routing day (days since the epoch) */
    /* the site's referring clinician (site.referrer.*): the default when no order of the
     * patient names its prescriber; phone and Direct address of the referring team */
    const char *referrer_name, *referrer_phone, *referrer_direct;
    int report_lookback_days;    /* referral.report_lookback_days: pathology and imaging
                                  * reports older than this stay out of the packet (0: all) */
    const char *center_id;       /* a person's choice among the ranked candidates (the web
                                  * page's approve and re-route); NULL: the best one. A center
                                  * that is not a candidate gives PROPOSE_NO_CENTER. */
    bool defer_texts;            /* the screening's proposals: decided and stored as ever, but
                                  * without explanation, route_json and package (NULL), which
                                  * propose_compose makes when the row is first read
                                  * (refer_get); false: composed now */
} propose_opts;

/* One screened patient; everything borrowed for the call. */
typedef struct propose_input {
    const char *patient_id;
    const map_profile *profile;
    const elig_factset *facts;
    const elig_result *result;
    const char *verdict_json;          /* elig_result_write_json of result and facts: kept with
                                        * the referral (the packet's words are made from result;
                                        * NULL: no packet) */
    const fhir_node *const *resources; /* the patient's (for the package), as cached in the
                                        * store: the package names them by type and id */
    size_t n_resources;
} propose_input;

typedef enum propose_outcome {
    PROPOSE_NOT_CANDIDATE = 0, /* no referral called for (stale proposals cancelled) */
    PROPOSE_NO_INDICATION,     /* a candidate, but no indication counts */
    PROPOSE_ROUTE_FAILED,      /* detail says why */
    PROPOSE_NO_CENTER,         /* no accredited center offers what is needed */
    PROPOSE_EXISTS,            /* the same referral exists already (any state) */
    PROPOSE_NO_PAYLOAD,        /* the package could not be built (detail; or no Patient) */
    PROPOSE_CREATED,
    PROPOSE_UPDATED,           /* the open proposal (not yet sent) now says this */
    PROPOSE_REROUTE,           /* a re-route proposal for a person (created or changed) */
    PROPOSE_EPISODE_CLOSED,    /* the episode's referral was closed: nothing until a new one */
} propose_outcome;

/* What happened, for propose_log after the commit. */
typedef struct propose_result {
    propose_outcome outcome;
    int64_t referral_id;       /* CREATED, EXISTS, UPDATED, REROUTE, EPISODE_CLOSED */
    int64_t episode;           /* the patient's episode it acted in */
    int64_t supersedes;        /* REROUTE: the referral it would replace */
    char center_id[128];
    size_t n_indications;
    char urgency[16];
    int64_t cancelled[PROPOSE_MAX_CANCELLED];
    size_t n_cancelled;
    char detail[FHIR_ERROR_MAX];
} propose_result;

/* The centers ranked for a patient as a proposal would rank them (eligible and possibly
 * eligible indications, else the refer-early ones), for a page that shows them before any
 * referral: route JSON like a referral's, allocated in `a` (caller owns the arena). NULL with
 * err when no indication calls for a center or routing fails. Reads no store. */
fhir_node *propose_rank(fhir_arena *a, const propose_opts *o, const map_profile *prof, const elig_result *res,
                        fhir_error *err);

/* Proposes (or withdraws) inside the caller's open transaction. 0 with *out filled, or -1
 * with err on a store failure (the caller rolls back what the call wrote). */
int propose_referral(store *s, const propose_opts *o, const propose_input *in,
                     propose_result *out, fhir_error *err);

/* Withdraws the patient's proposals still pending approval when nothing of the patient is
 * cached any more (every resource deleted at the source), inside the caller's open
 * transaction; *out says which (outcome PROPOSE_NOT_CANDIDATE). 0, or -1 with err. */
int propose_withdraw(store *s, const char *patient_id, propose_result *out, fhir_error *err);
/* The episode marker of a profile: "disease=<primary_disease>;relapses=<relapse_count>;
 * lines=<lines>", "?" for what is unknown. out holds n bytes (PROPOSE_MARKER_MAX). */
void propose_episode_marker(const map_profile *p, char *out, size_t n);
/* Does a verdict with marker `now` open a new episode after one closed with marker `closed`?
 * Yes when the primary disease differs (both known), or documented relapses or lines of
 * therapy grew (both known); never on what is unknown. */
bool propose_episode_new(const char *closed, const char *now);
/* Logs what a committed proposal did (referral.created, referral.cancelled, and the reason a
 * candidate got no referral), by the pseudonymous patient id only. */
void propose_log(const char *patient_id, refer_mode mode, const propose_result *r);

/* What composing a proposal's texts after the screening needs: the site and the referral
 * policy as the screening had them (center_id and defer_texts ignored), the terminology
 * tables and the profile's as-of day, and the patient's cached resources with the
 * Medications they reference, in the screening's order (parsed into a, caller frees *out).
 * Everything borrowed for the call. */
typedef struct propose_env {
    propose_opts opts;
    const map_tables *tables;
    int64_t as_of_days; /* -1: today */
    int (*resources)(void *ud, const char *patient_id, fhir_arena *a, const fhir_node ***out,
                     size_t *n, elig_records *rec, fhir_error *err); /* rec: read of cached */
    void *ud;
} propose_env;

/* Composes the explanation, route and package of referral r (the row as stored, without
 * them: refer_texts_pending) with the code and from the inputs propose_referral composes
 * them with when it does not defer: the patient screened now from the cache, the centers
 * ranked, the row's center picked. The patient's data may have changed since the proposal
 * was stored and before the re-screen that updates or withdraws it: the texts then say what
 * the cache says now. Stores them (store_referral_set_texts: only while the row still waits
 * for them and carries the same placer id); authored_ms is the composing time. 0 (also when
 * another reader stored them first), or -1 with err and *cause (may be NULL) saying which:
 * the patient not cached (REFER_COMPOSE_NOT_CACHED), the verdict no longer calling for it
 * (VERDICT_CHANGED), the row's center no longer a candidate (CENTER_GONE), the package's cap
 * (TOO_LARGE), nothing loaded (NOT_LOADED), else OTHER. */
int propose_compose(store *s, const propose_env *env, const refer_record *r, refer_compose_cause *cause,
                    fhir_error *err);

/* The transaction Bundle of a referral whose payload is not stored yet, built from its package
 * (refer_record.package: what the proposal kept) and the patient's resources as cached now:
 * what would be sent. A resource the package names that is no longer cached is left out. The
 * Medications its medication rows reference ("Medication/<id>", the shared pool) come along,
 * each once, as cached now; one not cached leaves the row with its reference's display.
 * *payload: caller frees. 0, or -1 with err (no package, the Patient no longer cached, a cap).
 * refer_get calls it; the sender stores the result before the first send, so what was sent
 * stays what is shown. */
int propose_package_payload(store *s, const refer_record *r, char **payload, fhir_error *err);

#endif
