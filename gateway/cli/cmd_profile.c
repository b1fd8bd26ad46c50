/* cmd_profile — `cartgate profile [--as-of YYYY-MM-DD] [--json] [--mappings DIR] FILE|DIR...`
 * Reads Bundles / NDJSON / folders of either, groups resources by patient and prints each
 * patient's clinical profile (readable text, or one JSON object per patient per line). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_error.h"
#include "map_group.h"
#include "map_profile.h"

#define PROFILE_OUT_CAP (16u * 1024u * 1024u)

static void profile_usage(FILE *f)
{
    fprintf(f,
            "usage: cartgate profile [--as-of YYYY-MM-DD] [--json] [--lookback DAYS]\n"
            "                        [--anchor start|end] [--mappings DIR] FILE|DIR...\n"
            "  Builds the clinical profile of every patient found in FHIR Bundles (JSON), NDJSON\n"
            "  files or folders of either (bulk-export layout: Patient.000.ndjson, ...).\n"
            "  --as-of     evaluation date (default: today)\n"
            "  --json      one JSON object per patient per line (schema: mappings/README.md)\n"
            "  --lookback  lab / ECOG lookback in days (default 90)\n"
            "  --anchor    relapse interval anchor: start (default) or end of line 1\n"
            "  --mappings  terminology table folder (default: the data folder's mappings/;\n"
            "              `cartgate version` shows where that is)\n");
}

int cmd_profile(int argc, char **argv)
{
    map_profile_opts o;
    map_profile_opts_default(&o);
    bool json = false;
    const char *mdir = NULL;
    int first = argc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            profile_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--as-of") && i + 1 < argc) {
            int64_t d;
            const char *v = argv[++i];
            if (fhir_clock_parse_ymd(v, &d) != 0) {
                fprintf(stderr, "cartgate profile: --as-of wants YYYY-MM-DD, got '%s'\n", v);
                return 2;
            }
            o.as_of_days = d;
        } else if (!strcmp(a, "--lookback") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 3650) {
                fprintf(stderr, "cartgate profile: --lookback wants 1..3650 days\n");
                return 2;
            }
            o.lab_lookback_days = (int)v;
        } else if (!strcmp(a, "--anchor") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "start"))
                o.relapse_anchor_end = 0;
            else if (!strcmp(v, "end"))
                o.relapse_anchor_end = 1;
            else {
                fprintf(stderr, "cartgate profile: --anchor wants start or end\n");
                return 2;
            }
        } else if (!strcmp(a, "--mappings") && i + 1 < argc) {
            mdir = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "cartgate profile: unknown option '%s'\n", a);
            profile_usage(stderr);
            return 2;
        } else {
            first = i;
            break;
        }
    }
    if (first >= argc) {
        profile_usage(stderr);
        return 2;
    }
    fhir_error err;
    fhir_error_clear(&err);
    map_tables *t = map_tables_load(mdir, &err);
    if (!t) {
        fprintf(stderr, "cartgate profile: %s\n", err.msg);
        return 1;
    }
    map_group *g = map_group_new(NULL);
    int rc = 0;
    for (int i = first; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "cartgate profile: options go before the files ('%s')\n", argv[i]);
            rc = 2;
            break;
        }
        if (map_group_add_path(g, argv[i], &err)) {
            fprintf(stderr, "cartgate profile: %s\n", err.msg);
            rc = 1;
            break;
        }
    }
    if (!rc) {
        size_t n = map_group_count(g);
        if (map_group_bad_lines(g))
            fprintf(stderr, "cartgate profile: skipped %zu unparsable NDJSON line(s)\n",
                    map_group_bad_lines(g));
        fhir_buf out;
        fhir_buf_init(&out, PROFILE_OUT_CAP);
        for (size_t i = 0; i < n; i++) {
            size_t nr;
            const fhir_node *const *res = map_group_resources(g, i, &nr);
            map_profile *p = map_profile_build(t, res, nr, &o, &err);
            if (!p) {
                fprintf(stderr, "cartgate profile: patient %s: %s\n", map_group_patient_id(g, i),
                        err.msg);
                rc = 1;
                continue;
            }
            fhir_buf_reset(&out);
            int w = json ? map_profile_write_json(p, &out, 0) : map_profile_write_text(p, &out);
            if (w) {
                fprintf(stderr, "cartgate profile: patient %s: output larger than %u bytes\n",
                        map_profile_patient_id(p), PROFILE_OUT_CAP);
                rc = 1;
            } else {
                fwrite(out.data, 1, out.len, stdout);
                fputs(json ? "\n" : "\n", stdout);
            }
            map_profile_free(p);
        }
        fhir_buf_free(&out);
        if (!n)
            fprintf(stderr, "cartgate profile: no patients found\n");
    }
    map_group_free(g);
    map_tables_free(t);
    if (fflush(stdout) != 0)
        rc = 1;
    return rc;
}
