/* cmd_profile — `cartgate profile [--as-of YYYY-MM-DD] [--json] [--mappings DIR] FILE|DIR...`
 * Reads Bundles / NDJSON / folders of either, groups resources by patient and prints each
 * patient's clinical profile (readable text, or one JSON object per patient per line). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_opt.h"
#include "cmd.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_error.h"
#include "map_group.h"
#include "map_profile.h"

#define PROFILE_OUT_CAP (16u * 1024u * 1024u)

int cmd_profile(int argc, char **argv)
{
    map_profile_opts o;
    map_profile_opts_default(&o);
    bool json = false, keep_going = false;
    const char *mdir = NULL;
    long long lookback = o.lab_lookback_days;
    const cli_cmd cmd = {
        .name = "profile", .args = "FILE|DIR...", .min_args = 1, .max_args = -1,
        .about = "Builds the clinical profile of every patient found in FHIR Bundles (JSON), NDJSON\n"
                 "files or folders of either (bulk-export layout: Patient.000.ndjson, ...).",
        .opts = (const cli_opt[]){
            CLI_OPT_AS_OF(&o.as_of_days, "today", "evaluation date"),
            CLI_OPT_JSON(&json,
                         "one JSON object per patient per line (schema: mappings/README.md)"),
            {.name = "lookback", .kind = CLI_INT, .out = &lookback, .arg = "DAYS", .min = 1,
             .max = 3650, .def = "90", .help = "lab / ECOG lookback in days"},
            {.name = "anchor", .kind = CLI_ENUM, .out = &o.relapse_anchor_end, .arg = "start|end",
             .def = "start", .help = "relapse interval anchor: start or end of line 1"},
            CLI_OPT_MAPPINGS(&mdir),
            {.name = "keep-going", .kind = CLI_FLAG, .out = &keep_going,
             .help = "exit 0 although NDJSON lines were refused (each is still named FILE:LINE)"},
            {0},
        },
    };
    int first, rc = cli_parse(&cmd, argc, argv, &first);
    if (rc != CLI_GO)
        return rc;
    rc = 0;
    o.lab_lookback_days = (int)lookback;
    fhir_error err;
    fhir_error_clear(&err);
    map_tables *t = map_tables_load(mdir, &err);
    if (!t) {
        fprintf(stderr, "cartgate profile: %s\n", err.msg);
        return 1;
    }
    map_group *g = map_group_new(NULL);
    for (int i = first; i < argc; i++) {
        if (map_group_add_path(g, argv[i], &err)) {
            fprintf(stderr, "cartgate profile: %s\n", err.msg);
            rc = 1;
            break;
        }
    }
    if (!rc) {
        size_t n = map_group_count(g);
        rc = cmd_report_skipped("profile", (const char *const *)argv + first, (size_t)(argc - first),
                                map_group_bad_lines(g), map_group_orphans(g), keep_going);
        if (map_group_files_ignored(g))
            fprintf(stderr, "cartgate profile: ignored %zu file(s) not named *.json, *.ndjson, "
                            "*.jsonl or *.xml\n", map_group_files_ignored(g));
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
