/* cartgate run — the daemon (gateway/daemon/daemon.h). */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "daemon.h"
#include "fhir_log.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: cartgate run -c FILE\n"
               "Runs the daemon: polls the configured sources, screens changed patients, proposes\n"
               "and delivers referrals, serves the admin API. SIGTERM/SIGINT stop cleanly (in-flight\n"
               "polls finish first), SIGHUP reloads the configuration, criteria and centers.\n"
               "Check a configuration first with: cartgate check-config -c FILE\n");
}

int cmd_run(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
            path = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    setvbuf(stderr, NULL, _IOLBF, 0);
    fhir_error err;
    fhir_error_clear(&err);
    daemon *d = daemon_new(path, &err);
    if (!d) {
        fhir_log(FHIR_LOG_ERROR, "daemon.failed", "error=%s", err.msg);
        fprintf(stderr, "cartgate run: %s\n", err.msg);
        return 1;
    }
    int rc = daemon_run(d);
    daemon_free(d);
    return rc;
}
