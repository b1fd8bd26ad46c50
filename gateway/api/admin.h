/* admin — the admin HTTP API of the daemon (libevent evhttp on the daemon's loop).
 *
 * Bound to config admin.bind (127.0.0.1 by default). Every path except GET /healthz needs
 * "Authorization: Bearer <token>" (token from admin.token_file / admin.token_env).
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
 * a request carries method, path template, status and duration only (no ids from queries). */
#ifndef ADMIN_H
#define ADMIN_H

/* Byte caps of answers built whole. */
#define ADMIN_ERROR_MAX 8192u        /* a JSON error */
#define ADMIN_METRICS_MAX (4u << 20) /* /metrics */
#define ADMIN_HEALTH_MAX 256u        /* /healthz, /readyz */

#include "daemon.h"
#include "fhir_error.h"

/* Binds and serves on d->base. 0, or -1 with err (address in use ...). */
int admin_start(daemon *d, fhir_error *err);
void admin_stop(daemon *d);

#endif
