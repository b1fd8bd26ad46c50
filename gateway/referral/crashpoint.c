/* crashpoint — the test hook (see crashpoint.h). */
#include "crashpoint.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_log.h"

#define CRASHPOINT_NAME_MAX 64 /* bytes of a point's name */

static bool loaded;
static char point[CRASHPOINT_NAME_MAX];
static long at = 1, seen;

void crashpoint(const char *name)
{
    if (!loaded) {
        loaded = true;
        const char *v = getenv("CARTGATE_TEST_CRASH_AT");
        if (v && *v) {
            const char *colon = strchr(v, ':');
            size_t n = colon ? (size_t)(colon - v) : strlen(v);
            if (n < sizeof point) {
                memcpy(point, v, n);
                point[n] = '\0';
            }
            if (colon)
                at = strtol(colon + 1, NULL, 10);
            if (at < 1)
                at = 1;
        }
    }
    if (!point[0] || strcmp(point, name) || ++seen < at)
        return;
    fhir_log(FHIR_LOG_WARN, "test.crashpoint", "point=%s hit=%ld", name, seen);
    raise(SIGKILL);
}
