/* admin — the admin HTTP API of the daemon (libevent evhttp on the daemon's loop).
 *
 * Bound to config admin.bind (127.0.0.1 by default). Every path except GET /healthz needs
 * "Authorization: Bearer <token>" (the token the environment names; compared in constant
 * time).
 *   GET  /healthz                          liveness, no token
 *   GET  /readyz                           200 once every source has completed a poll
 *   GET  /metrics                          Prometheus text format 0.0.4
 *   GET  /api/v1/patients[?category=C&limit=N&offset=N]   the worklist (latest verdicts)
 *   GET  /api/v1/patients/{id}             profile + verdict + explanation + referrals
 *   GET  /api/v1/referrals[?state=S&limit=N&offset=N]
 *   GET  /api/v1/referrals/{id}
 *   POST /api/v1/referrals/{id}/approve | /cancel | /retry
 * Errors are JSON: {"error":{"status":404,"message":"..."}} with 400, 401, 404, 405 (with
 * Allow), 409 (transition refused) or 500. Responses never go to the logs; the log line of
 * a request carries method, path template, status and duration only (no ids from queries).
 *
 * The API knows the daemon only through admin_env: the store, and callbacks for the counters
 * (/metrics), readiness and the current token. */
#ifndef ADMIN_H
#define ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_error.h"
#include "store.h"

struct event_base;

#define ADMIN_MAX_SOURCES 64 /* sources with counters */
#define ADMIN_MAX_STATUS 24  /* distinct HTTP statuses counted per source */
#define ADMIN_METRICS_MAX (4u << 20) /* bytes of a /metrics answer */

/* The counters of one source. */
typedef struct admin_source_metrics {
    char name[72];
    uint64_t polls_ok, polls_failed;
    uint64_t resources;             /* resources ingested (new or changed) */
    uint64_t unchanged;             /* resources seen again without change */
    uint64_t deleted;               /* cached resources removed (deleted at the source) */
    uint64_t outcome_issues;        /* OperationOutcome issues inside searchset pages */
    uint64_t bulk_issues;           /* issues in bulk manifests' error[] files */
    bool since_ignored;             /* the server was seen ignoring _since / _lastUpdated */
    int64_t last_success_ms;        /* 0 = never */
    long status[ADMIN_MAX_STATUS];  /* HTTP statuses seen (0 = no response) */
    uint64_t status_n[ADMIN_MAX_STATUS];
    size_t n_status;
} admin_source_metrics;

/* The daemon's counters as /metrics shows them (the gauges are read from the store). */
typedef struct admin_metrics {
    admin_source_metrics src[ADMIN_MAX_SOURCES];
    size_t n_src;
    uint64_t patients_screened;
    uint64_t verdicts[4];           /* screenings by elig_category */
    uint64_t screen_errors;
    uint64_t referrals_created;
    uint64_t reloads_ok, reloads_failed;
    int64_t started_ms;
} admin_metrics;

/* The counters of the source called name (a slot is created on first use; the last slot is
 * shared once all are taken). Borrowed from m. */
admin_source_metrics *admin_metrics_source(admin_metrics *m, const char *name);
/* Counts one HTTP status of a source. */
void admin_metrics_count_status(admin_source_metrics *s, long status);

/* What the API may use; everything borrowed until admin_stop. */
typedef struct admin_env {
    struct event_base *base;
    store *st;
    const char *bind;
    long port;            /* 0: any free port (admin_port tells which) */
    void *ud;             /* first argument of the callbacks */
    /* The daemon's counters (borrowed for the duration of one request). */
    const admin_metrics *(*metrics)(void *ud);
    /* true once every source completed a poll; *n_sources gets their number. */
    bool (*ready)(void *ud, size_t *n_sources);
    /* The current admin token (borrowed for the call); NULL refuses every request but
     * /healthz. */
    const char *(*token)(void *ud);
} admin_env;

typedef struct admin admin;

/* Binds and serves on env->base. Caller stops with admin_stop(). NULL with err (address in
 * use ...). */
admin *admin_start(const admin_env *env, fhir_error *err);
/* The bound port. */
int admin_port(const admin *a);
void admin_stop(admin *a);

#endif
