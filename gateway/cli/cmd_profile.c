/* cmd_profile — `cartgate profile [--as-of YYYY-MM-DD] [--json] [--mappings DIR] FILE|DIR...`
 * Reads Bundles / NDJSON / folders of either one patient at a time (map_stream: bounded
 * memory, types the profile never reads skipped before parsing) and prints each patient's
 * clinical profile (readable text, or one JSON object per patient per line) in the order the
 * patients appear in the input (screen_sort keyed by map_stream's order). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_opt.h"
#include "cmd.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_error.h"
#include "map_profile.h"
#include "map_stream.h"
#include "screen_sort.h"

#define PROFILE_OUT_CAP (16u * 1024u * 1024u)
#define PROFILE_ROW_CAP (PROFILE_OUT_CAP + 1024u) /* a row: 'O' + the output, or 'E' + an error */

typedef struct prof_ctx {
    const map_tables *t;
    const map_profile_opts *o;
    bool json;
    screen_sort *rows;     /* by the patient's place in the input */
    fhir_buf out, row;
} prof_ctx;

/* map_stream: one patient -> its profile (or its error) as a row, in input order. */
static int on_patient(void *ud, const char *id, const fhir_node *const *res, size_t n,
                      uint64_t order, fhir_error *err)
{
    prof_ctx *c = ud;
    char key[24];
    snprintf(key, sizeof key, "%016" PRIx64, order);
    fhir_error perr;
    map_profile *p = map_profile_build(c->t, res, n, c->o, &perr);
    fhir_buf_reset(&c->row);
    if (!p) {
        fhir_buf_printf(&c->row, "Ecartgate profile: patient %s: %s", id, perr.msg);
    } else {
        fhir_buf_reset(&c->out);
        int w = c->json ? map_profile_write_json(p, &c->out, 0) : map_profile_write_text(p, &c->out);
        if (w) {
            fhir_buf_printf(&c->row, "Ecartgate profile: patient %s: output larger than %u bytes",
                            map_profile_patient_id(p), PROFILE_OUT_CAP);
        } else {
            fhir_buf_putc(&c->row, 'O');
            fhir_buf_append(&c->row, c->out.data ? c->out.data : "", c->out.len);
        }
        map_profile_free(p);
    }
    return screen_sort_add(c->rows, key, c->row.data, c->row.len, err);
}

/* map_stream met unsorted input and reads it again: forget what was built. */
static void on_restart(void *ud)
{
    screen_sort_clear(((prof_ctx *)ud)->rows);
}

static int print_row(void *ud, const char *key, const char *row, size_t len)
{
    int *rc = ud;
    (void)key;
    if (row[0] == 'E') {
        fprintf(stderr, "%.*s\n", (int)(len - 1), row + 1);
        *rc = 1;
    } else {
        fwrite(row + 1, 1, len - 1, stdout);
        fputc('\n', stdout);
    }
    return 0;
}

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
    prof_ctx c = {.t = t, .o = &o, .json = json, .rows = screen_sort_new(0, NULL)};
    fhir_buf_init(&c.out, PROFILE_OUT_CAP);
    fhir_buf_init(&c.row, PROFILE_ROW_CAP);
    map_stream_stats st;
    if (map_stream_run((const char *const *)argv + first, (size_t)(argc - first), NULL, on_patient,
                       on_restart, &c, &st, &err)) {
        fprintf(stderr, "cartgate profile: %s\n", err.msg);
        rc = 1;
    }
    if (!rc) {
        rc = cmd_report_skipped("profile", (const char *const *)argv + first, (size_t)(argc - first),
                                st.bad_lines, st.orphans, keep_going);
        if (st.files_ignored)
            fprintf(stderr, "cartgate profile: ignored %zu file(s) not named *.json, *.ndjson, "
                            "*.jsonl or *.xml\n", st.files_ignored);
        if (screen_sort_each(c.rows, print_row, &rc, &err)) {
            fprintf(stderr, "cartgate profile: %s\n", err.msg);
            rc = 1;
        }
        if (!screen_sort_count(c.rows))
            fprintf(stderr, "cartgate profile: no patients found\n");
    }
    fhir_buf_free(&c.out);
    fhir_buf_free(&c.row);
    screen_sort_free(c.rows);
    map_tables_free(t);
    if (fflush(stdout) != 0)
        rc = 1;
    return rc;
}
