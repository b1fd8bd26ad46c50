/* daemon — `cartgate run`: one libevent loop that polls the configured sources, keeps the
 * per-patient resource cache, re-profiles and re-screens every patient whose data changed,
 * turns verdict changes into referral proposals, drains the referral outbox, follows the
 * centers' Tasks, and serves the admin API (admin.h).
 *
 * Process life: SIGTERM/SIGINT stop new work, let in-flight polls finish (for at most
 * config shutdown_grace_s; an abandoned poll never advanced its cursors) and exit 0.
 * SIGHUP reloads the configuration file, the criteria and the center directory together;
 * an invalid new version is refused (error logged), the running one is kept.
 *
 * The struct is shared by the daemon's own modules (daemon.c, poll_source.c, admin.c); nothing else
 * should reach into it. */
#ifndef DAEMON_H
#define DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "centers.h"
#include "config.h"
#include "elig.h"
#include "fhir_error.h"
#include "fhir_node.h"
#include "map_tables.h"
#include "route.h"
#include "sender.h"
#include "store.h"
#include "writeback.h"

struct event_base;
struct event;
struct evhttp;
struct evhttp_bound_socket;
typedef struct poll_source poll_source;

/* Everything a reload replaces at once. */
typedef struct daemon_rt {
    config *cfg;
    elig_ruleset *rules;
    centers_dir *centers;
    route_zcta *zcta;
    map_tables *tables;
    int64_t as_of_days;   /* -1 = today */
} daemon_rt;

#define DAEMON_MAX_STATUS 24

/* Byte caps of the daemon's buffers and arenas. */
#define DAEMON_CONFIG_DIAG_MAX (1u << 16)     /* config errors of a load or reload */
#define DAEMON_ROUTE_ARENA_MAX (64u << 20)    /* routing one patient's proposal */
#define DAEMON_EXPLANATION_MAX (1u << 20)     /* a verdict's explanation text */
#define DAEMON_REASON_MAX 4096u               /* a referral's reason line */
#define DAEMON_SCREEN_ARENA_MAX (512u << 20)  /* one patient's resources while screening */
#define DAEMON_VERDICT_JSON_MAX (4u << 20)    /* a stored verdict */
#define DAEMON_PROFILE_JSON_MAX (16u << 20)   /* a stored clinical profile */

typedef struct daemon_src_metrics {
    char name[72];
    uint64_t polls_ok, polls_failed;
    uint64_t resources;              /* resources ingested (new or changed) */
    uint64_t unchanged;              /* resources seen again without change */
    int64_t last_success_ms;         /* 0 = never */
    long status[DAEMON_MAX_STATUS];  /* HTTP statuses seen (0 = no response) */
    uint64_t status_n[DAEMON_MAX_STATUS];
    size_t n_status;
} daemon_src_metrics;

typedef struct daemon_metrics {
    daemon_src_metrics src[64];
    size_t n_src;
    uint64_t patients_screened;
    uint64_t verdicts[4];            /* screenings by elig_category */
    uint64_t screen_errors;
    uint64_t referrals_created;
    uint64_t reloads_ok, reloads_failed;
    uint64_t admin_requests;
    int64_t started_ms;
} daemon_metrics;

typedef struct daemon {
    struct event_base *base;
    daemon_rt *rt;
    char *config_path;
    store *st;
    sender *snd;
    writeback *wb;           /* EHR write-back; NULL when referral.writeback is none */
    poll_source **sources;
    size_t n_sources;
    struct event *sig_term, *sig_int, *sig_hup;
    struct event *send_timer, *task_timer, *grace_timer;
    struct evhttp *http;
    struct evhttp_bound_socket *http_sock;
    char *admin_token;
    int admin_port;          /* bound port */
    bool stopping;
    bool ready;              /* every source has completed a poll (or has none) */
    daemon_metrics m;
} daemon;

/* Loads config_path (and everything it names), opens the store, binds the admin API and
 * schedules the sources. Caller frees with daemon_free(). NULL with err on failure. */
daemon *daemon_new(const char *config_path, fhir_error *err);
void daemon_free(daemon *d);
/* Runs the loop until SIGTERM/SIGINT (or daemon_stop). Returns the exit status. */
int daemon_run(daemon *d);
/* Asks the loop to stop (same path as SIGTERM). */
void daemon_stop(daemon *d);
/* SIGHUP path: 0 when the new configuration is in force, -1 (old kept) with err. */
int daemon_reload(daemon *d, fhir_error *err);

/* Metrics slot of a source (created on first use). */
daemon_src_metrics *daemon_src_metrics_get(daemon *d, const char *name);
void daemon_count_status(daemon_src_metrics *m, long status);

/* ---- ingest and screening (used by the sources) -------------------------------------- */

/* Stores one resource (a Bundle is unpacked) into the cache, inside the caller's store
 * transaction. Resources seen before with the same version / lastUpdated are skipped;
 * new or changed ones mark their patient for screening. *changed (may be NULL) is
 * incremented per stored resource. 0, or -1 with err. */
int daemon_ingest(daemon *d, const char *source, const fhir_node *res, size_t *changed,
                  size_t *unchanged, fhir_error *err);
/* Screens every patient marked by daemon_ingest (profile, verdict, referral proposal).
 * Returns how many were screened, -1 on a store error. */
long daemon_screen_pending(daemon *d, fhir_error *err);
/* Screens one patient now (admin API / tests). 0, or -1 with err. */
int daemon_screen_patient(daemon *d, const char *patient_id, fhir_error *err);
/* Called by a source when its poll ended (ok or not): screens pending patients and
 * updates readiness. */
void daemon_poll_finished(daemon *d, poll_source *src, bool ok);

#endif
