/* support — helpers shared by the C integration tests: start a process that prints its
 * port on the first stdout line (the reference FHIR server, or anything alike), wait for
 * its /healthz, stop it; small blocking HTTP calls for admin endpoints; run the cartgate
 * binary and capture its output; temporary directories.
 *
 * Every started child gets PR_SET_PDEATHSIG(SIGTERM), so a crashed test never leaves a
 * server behind; tests still call support_stop() in their teardown. */
#ifndef SUPPORT_H
#define SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct support_proc {
    pid_t pid;              /* 0 when not running */
    int port;
    char log_path[512];     /* the child's stderr */
} support_proc;

/* Source tree root: $CARTGATE_SOURCE_DIR or the compile-time default. Borrowed. */
const char *support_source_dir(void);
/* True when the reference server can run (node_modules installed). */
bool support_server_available(void);

/* Starts argv (NULL-terminated; argv[0] looked up in PATH) with stdout on a pipe and
 * stderr to log_path, reads the port from the first stdout line (bounded wait). 0 or -1. */
int support_start_port(support_proc *p, char *const argv[], const char *log_path);
/* Polls scheme://127.0.0.1:port/healthz until 200 (bounded: timeout_ms). 0 or -1.
 * ca_file may be NULL (then TLS verification is off for this readiness probe only). */
int support_wait_healthz(const char *scheme, int port, const char *ca_file, int timeout_ms);
/* Starts `node tests/fhir-server/server.mjs --port 0 ARGS...` and waits for /healthz.
 * args is NULL-terminated (may be NULL). log_path receives the server's stderr. */
int support_server_start(support_proc *p, const char *const *args, const char *log_path);
/* Same for an HTTPS server: ca_file verifies the readiness probe. */
int support_server_start_tls(support_proc *p, const char *const *args, const char *log_path,
                             const char *ca_file);
/* SIGTERM, bounded wait, then SIGKILL. Safe to call twice. */
void support_stop(support_proc *p);

/* Blocking HTTP call (loopback admin endpoints). Returns the status (0 on transport error);
 * *out (may be NULL) receives the malloc'd body, caller frees. body may be NULL. */
long support_http(const char *method, const char *url, const char *body, char **out);

/* Runs argv (NULL-terminated) to completion with a bounded time; stdout/stderr captured
 * into malloc'd strings (caller frees; either pointer may be NULL). Returns the exit status,
 * or -1 when it could not run or was killed. */
int support_run(char *const argv[], char **out, char **err, int timeout_s);

/* Creates a fresh temporary directory into buf (mkdtemp). 0 or -1. */
int support_tmpdir(char *buf, size_t n);
/* rm -rf of a directory made by support_tmpdir. */
void support_rmtree(const char *dir);
/* The whole file at path, NUL-terminated (caller frees), or NULL. */
char *support_read_file(const char *path);
/* Writes s to path. 0 or -1. */
int support_write_file(const char *path, const char *s);

#endif
