/* cartgate run — the daemon (gateway/daemon/daemon.h). */
#include <stdio.h>
#include <sys/stat.h>

#include "cli_opt.h"
#include "cmd.h"
#include "daemon.h"
#include "fhir_alloc.h"
#include "fhir_log.h"

/* The daemon's heap (fhir_alloc_heap_setup): every search page's tree, every patient's screening
 * arena and SQLite's page cache are taken from it and given back, again and again */
#define RUN_HEAP_RESERVE (30u << 20)   /* the first 30 MiB of heap on transparent huge pages */
#define RUN_MMAP_THRESHOLD (32u << 20) /* blocks below this come from the heap */
#define RUN_TRIM_THRESHOLD (64u << 20) /* free heap kept for reuse up to this much */

int cmd_run(int argc, char **argv)
{
    const char *path = NULL;
    const cli_cmd cmd = {
        .name = "run",
        .about = "Runs the daemon: polls the configured sources, screens changed patients, proposes\n"
                 "and delivers referrals, serves the admin API. SIGTERM/SIGINT stop cleanly (in-flight\n"
                 "polls finish first), SIGHUP reloads the configuration, criteria and centers.",
        .notes = "Check a configuration first with: cartgate check-config -c FILE",
        .opts = (const cli_opt[]){
            CLI_OPT_CONFIG(&path, true, "the daemon configuration"),
            {0},
        },
    };
    int first, rc = cli_parse(&cmd, argc, argv, &first);
    if (rc != CLI_GO)
        return rc;
    setvbuf(stderr, NULL, _IOLBF, 0);
    /* everything the daemon creates (store, its journals, spill files) is for its own user
     * only: the store holds demographics (the systemd unit sets UMask=0077 as well) */
    umask(077);
    size_t huge = fhir_alloc_heap_setup(RUN_HEAP_RESERVE, RUN_MMAP_THRESHOLD, RUN_TRIM_THRESHOLD);
    fhir_log(FHIR_LOG_DEBUG, "daemon.heap", "huge_page_advised_bytes=%zu", huge);
    fhir_error err;
    fhir_error_clear(&err);
    daemon_proc *d = daemon_new(path, &err);
    if (!d) {
        fhir_log(FHIR_LOG_ERROR, "daemon.failed", "error=%s", err.msg);
        fprintf(stderr, "cartgate run: %s\n", err.msg);
        return 1;
    }
    rc = daemon_run(d);
    daemon_free(d);
    return rc;
}
