/* daemon — `cartgate run`: one libevent loop that polls the configured sources
 * (poll_source.h), keeps the per-patient resource cache, re-profiles and re-screens every
 * patient whose data changed, turns verdicts into referral proposals (propose.h), drains the
 * referral outbox, follows the centers' Tasks, writes state changes back to the EHR
 * (writeback.h), and serves the admin API (admin.h).
 *
 * Process life: SIGTERM/SIGINT stop new work, let in-flight polls finish (for at most
 * config shutdown_grace_s; an abandoned poll never advanced its cursors) and exit 0.
 * SIGHUP reloads the configuration file, the criteria and the center directory together;
 * an invalid new version is refused (error logged), the running one is kept.
 *
 * Only daemon.c knows the daemon's state: the sources and the admin API get environments
 * of their own (poll_env, admin_env). */
#ifndef DAEMON_H
#define DAEMON_H

/* Byte caps of the daemon's buffers and arenas. */
#define DAEMON_CONFIG_DIAG_MAX (1u << 16)    /* config errors of a load or reload */
#define DAEMON_SCREEN_ARENA_MAX (512u << 20) /* one patient's resources while screening */
#define DAEMON_VERDICT_JSON_MAX (4u << 20)   /* a stored verdict */
#define DAEMON_PROFILE_JSON_MAX (16u << 20)  /* a stored clinical profile */
#define DAEMON_RESOURCE_MAX (16u << 20)      /* one cached resource (its binary form, fhir_bin.h) */
/* A patient's cached records read for one screening, at most (with the Medications they
 * reference, each a pointer in the screening's list): past it, or past DAEMON_SCREEN_ARENA_MAX,
 * the verdict is made from the records read and says so (event=screen.partial). The test hook
 * CARTGATE_TEST_SCREEN_MAX_RESOURCES=N (1 to this) lowers it for `cartgate run`, and
 * CARTGATE_TEST_SCREEN_ARENA_MAX=BYTES (4096 to DAEMON_SCREEN_ARENA_MAX) the arena's cap: tests
 * only (a chart over 512 MiB is not a test fixture). */
#define DAEMON_SCREEN_MAX_RESOURCES 100000
#define DAEMON_RETENTION_INTERVAL_S 3600     /* store.retention applied at start, then this often */
#define DAEMON_NOTIFY_SCAN_S 5               /* stuck / declined referrals and the digest looked for */

/* Descriptors kept from the listener's connections (serve_config.fd_reserve): a base for the
 * store (database, -wal, -shm, temporary files), the loop, the centers and the sign-in client,
 * plus per source its concurrency, download_concurrency and this many for drop files. */
#define DAEMON_FD_RESERVE_BASE 48
#define DAEMON_FD_PER_SOURCE 4
/* The soft descriptor limit taken when the hard one is unlimited. */
#define DAEMON_NOFILE_UNLIMITED 65536

#include "config.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "store.h"

/* The running service (private to daemon.c). */
typedef struct daemon_proc daemon_proc;

/* Loads config_path (and everything it names), opens the store, binds the admin API and
 * schedules the sources. Caller frees with daemon_free(). NULL with err on failure. */
daemon_proc *daemon_new(const char *config_path, fhir_error *err);
void daemon_free(daemon_proc *d);
/* Screens the patients a previous run left marked, then runs the loop until SIGTERM/SIGINT
 * (or daemon_stop). Returns the exit status. */
int daemon_run(daemon_proc *d);
/* Asks the loop to stop (same path as SIGTERM). */
void daemon_stop(daemon_proc *d);
/* check-config's second half: loads what the configuration c names (criteria, center
 * directory, ZIP table, mappings) as `run` does and applies the rules across files (a center
 * endpoint in plain http:// to a host that is not loopback, unless centers.insecure_plain_http).
 * 0, or -1 with every problem appended to diag ("FILE:LINE: what" lines) and the first in err. */
int daemon_check_files(const config *c, fhir_buf *diag, fhir_error *err);
/* SIGHUP path: 0 when the new configuration is in force, -1 (old kept) with err. */
int daemon_reload(daemon_proc *d, fhir_error *err);
/* For a command outside the daemon that reads referrals from the store (cartgate referrals
 * --db): loads config_path's criteria, tables and centers as `run` does and registers the
 * composer of proposals stored without their texts (refer_set_composer) over st (borrowed
 * until daemon_composer_free, which removes it). NULL with err. */
daemon_proc *daemon_composer_new(const char *config_path, store *st, fhir_error *err);
void daemon_composer_free(daemon_proc *d);

#endif
