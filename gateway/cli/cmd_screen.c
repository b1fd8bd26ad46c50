/* cmd_screen — `cartgate screen [--as-of DATE] [--json] [--criteria DIR] FILE|DIR...`
 * Offline screening: reads the FHIR resources in Bundles / NDJSON files / folders one patient at
 * a time (map_stream: bounded memory, types screening never reads skipped before parsing),
 * builds each patient's clinical profile and evaluates it against the CAR T label criteria.
 * Prints a table (default) or one JSON object per patient per line (schema:
 * conf/criteria/README.md), sorted by patient id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h> /* mallopt */
#endif

#include "cli_opt.h"
#include "cmd.h"
#include "elig.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_datadir.h"
#include "fhir_error.h"
#include "map_stream.h"
#include "map_profile.h"
#include "screen.h"
#include "screen_sort.h"

#define ROW_COLS 7 /* patient, category, urgency, consult, products, missing, flags */
#define SCREEN_LINE_CAP (4u * 1024u * 1024u)
#define SCREEN_MMAP_THRESHOLD (8 << 20)  /* malloc: blocks below this come from the heap */
#define SCREEN_TRIM_THRESHOLD (64 << 20) /* malloc: free heap kept up to this much */
#define SCREEN_OUT_BUF (256u << 10)        /* stdout buffer: the rows go out in writes this big */

/* One table row: patient, category, urgency, consult, products, missing, flags,
 * NUL-separated. */
static void row_text(fhir_buf *b, const elig_ruleset *rs, const elig_factset *fs,
                     const elig_result *res, const char *id)
{
    size_t idx[ELIG_MAX_INDICATIONS];
    size_t nk = screen_indications(rs, res, true, idx, ELIG_MAX_INDICATIONS);
    bool any_eligible = elig_result_category(res) == ELIG_ELIGIBLE;
    const char *miss[ELIG_MAX_FACTS], *flags[ELIG_MAX_FLAGS];
    size_t nm = elig_result_missing(rs, fs, res, miss, ELIG_MAX_FACTS);
    if (nm > ELIG_MAX_FACTS)
        nm = ELIG_MAX_FACTS;
    size_t nf = elig_result_flags(rs, res, flags, ELIG_MAX_FLAGS);
    fhir_buf_reset(b);
    fhir_buf_printf(b, "%s%c%s%c%s%c%s%c", id, 0, elig_category_name(elig_result_category(res)), 0,
                    elig_urgency_name(elig_result_urgency(res)), 0,
                    elig_consult_name(elig_result_consult(res)), 0);
    for (size_t k = 0; k < nk; k++)
        fhir_buf_printf(b, "%s%s%s", k ? "," : "", elig_ruleset_key(rs, idx[k]),
                        any_eligible ? "" : "?");
    if (!nk && elig_result_category(res) == ELIG_NOT_ELIGIBLE) {
        /* why, in a few words: the gate the first indication for the diagnosis failed */
        const char *why = NULL, *key = NULL;
        for (size_t i = 0; i < elig_ruleset_count(rs) && !why; i++)
            if (elig_result_ind_category(res, i) == ELIG_NOT_ELIGIBLE &&
                elig_result_ind_disease_matches(rs, res, i)) {
                why = elig_result_ind_failed(rs, res, i);
                key = elig_ruleset_key(rs, i);
            }
        if (why && strlen(why) > 70)
            fhir_buf_printf(b, "- (%s needs: %.67s...)%c", key, why, 0);
        else if (why)
            fhir_buf_printf(b, "- (%s needs: %s)%c", key, why, 0);
        else
            fhir_buf_printf(b, "- (no CAR T indication for the diagnosis on record)%c", 0);
    } else {
        fhir_buf_printf(b, "%s%c", nk ? "" : "-", 0);
    }
    for (size_t k = 0; k < nm; k++)
        fhir_buf_printf(b, "%s%s", k ? "," : "", miss[k]);
    fhir_buf_printf(b, "%s%c", nm ? "" : "-", 0);
    for (size_t k = 0; k < nf; k++)
        fhir_buf_printf(b, "%s%s", k ? "," : "", flags[k]);
    fhir_buf_puts(b, nf ? "" : "-");
}

/* The columns of a row (ROW_COLS, NUL-separated; the row itself is not NUL-terminated). */
static void row_cols(const char *row, size_t len, const char *col[ROW_COLS], int w[ROW_COLS])
{
    const char *p = row, *end = row + len;
    for (int c = 0; c < ROW_COLS; c++) {
        const char *z = p < end ? memchr(p, 0, (size_t)(end - p)) : NULL;
        col[c] = p < end ? p : "";
        w[c] = p < end ? (int)((z ? z : end) - p) : 0;
        p = z ? z + 1 : end;
    }
}

#define SCREEN_MAX_ERRORS 1000 /* patient errors kept for the report */

typedef struct run_ctx {
    screen *sc;
    const elig_ruleset *rs;
    screen_sort *rows;
    bool json;
    fhir_buf line;
    size_t counts[3];
    char **errors;         /* per-patient errors, printed before the output */
    size_t nerrors, more_errors;
} run_ctx;

static void note_error(run_ctx *c, const char *fmt, const char *id, const char *msg)
{
    if (c->nerrors == SCREEN_MAX_ERRORS) {
        c->more_errors++;
        return;
    }
    char buf[1024];
    snprintf(buf, sizeof buf, fmt, id, msg);
    char **ne = realloc(c->errors, (c->nerrors + 1) * sizeof *ne);
    if (!ne || !(ne[c->nerrors] = strdup(buf)))
        abort();
    c->errors = ne;
    c->nerrors++;
}

static void clear_errors(run_ctx *c)
{
    for (size_t i = 0; i < c->nerrors; i++)
        free(c->errors[i]);
    free(c->errors);
    c->errors = NULL;
    c->nerrors = c->more_errors = 0;
}

/* map_stream: one patient -> verdict -> a sorted row. */
static int on_patient(void *ud, const char *id, const fhir_node *const *res, size_t n,
                      uint64_t order, fhir_error *err)
{
    run_ctx *c = ud;
    fhir_error perr;
    if (screen_patient(c->sc, res, n, &perr)) {
        note_error(c, "cartgate screen: patient %s: %s", id, perr.msg);
        return 0;
    }
    const elig_result *r = screen_result(c->sc);
    c->counts[elig_result_category(r)]++;
    fhir_buf_reset(&c->line);
    if (c->json) {
        if (screen_write_json(c->sc, id, &c->line)) {
            note_error(c, "cartgate screen: patient %s: output line too long%s", id, "");
            return 0;
        }
    } else {
        row_text(&c->line, c->rs, screen_facts(c->sc), r, id);
    }
    return screen_sort_add(c->rows, id, c->line.data ? c->line.data : "", c->line.len, err);
}

/* map_stream met unsorted input and reads it again: forget what was screened. */
static void on_restart(void *ud)
{
    run_ctx *c = ud;
    screen_sort_clear(c->rows);
    memset(c->counts, 0, sizeof c->counts);
    clear_errors(c);
}

static int print_json(void *ud, const char *key, const char *row, size_t len)
{
    (void)ud;
    (void)key;
    fwrite(row, 1, len, stdout);
    putchar('\n');
    return 0;
}

static int widen(void *ud, const char *key, const char *row, size_t len)
{
    size_t *w = ud;
    const char *col[ROW_COLS];
    int cw[ROW_COLS];
    (void)key;
    row_cols(row, len, col, cw);
    for (int c = 0; c < ROW_COLS; c++)
        if ((size_t)cw[c] > w[c])
            w[c] = (size_t)cw[c];
    return 0;
}

static int print_row(void *ud, const char *key, const char *row, size_t len)
{
    const size_t *w = ud;
    const char *col[ROW_COLS];
    int cw[ROW_COLS];
    (void)key;
    row_cols(row, len, col, cw);
    for (int c = 0; c < ROW_COLS - 1; c++)
        printf("%.*s%*s  ", cw[c], col[c], (int)w[c] - cw[c], "");
    printf("%.*s\n", cw[ROW_COLS - 1], col[ROW_COLS - 1]);
    return 0;
}

static int print_table(screen_sort *rows, const elig_ruleset *rs, const char *as_of,
                       const size_t counts[3], fhir_error *err)
{
    static const char *const head[ROW_COLS] = {"PATIENT", "CATEGORY", "URGENCY", "CONSULT", "PRODUCTS",
                                        "MISSING", "REVIEW FLAGS"};
    size_t w[ROW_COLS];
    for (int c = 0; c < ROW_COLS; c++)
        w[c] = strlen(head[c]);
    if (screen_sort_each(rows, widen, w, err))
        return -1;
    for (int c = 0; c < ROW_COLS - 1; c++)
        printf("%-*s  ", (int)w[c], head[c]);
    printf("%s\n", head[ROW_COLS - 1]);
    if (screen_sort_each(rows, print_row, w, err))
        return -1;
    printf("\n%zu patient(s): %zu eligible, %zu possibly eligible, %zu not eligible "
           "(as of %s; criteria %s)\n"
           "Products ending in '?' are possibly eligible: check the missing facts. Review flags "
           "never block a referral. CONSULT is the refer-early recommendation (refer_now, "
           "early_consult), independent of the label verdict.\n",
           counts[0] + counts[1] + counts[2], counts[2], counts[1], counts[0], as_of,
           elig_ruleset_hash(rs));
    return 0;
}

static const char *default_criteria_dir(void)
{
    const char *e = getenv("CARTGATE_CRITERIA_DIR");
    if (e && *e)
        return e;
    return fhir_datadir_path("criteria");
}

int cmd_screen(int argc, char **argv)
{
    map_profile_opts o;
    map_profile_opts_default(&o);
    bool json = false, include_pending = false, keep_going = false;
    const char *mdir = NULL, *cdir = NULL;
    const char *params[32];
    cli_list plist = {params, 0, sizeof params / sizeof params[0]};
    const cli_cmd cmd = {
        .name = "screen", .args = "FILE|DIR...", .min_args = 1, .max_args = -1,
        .about = "Screens every patient found in FHIR Bundles (JSON), NDJSON files or folders of\n"
                 "either against the CAR T label criteria.",
        .notes = "Exit status: 0 ok, 1 error (bad criteria, unreadable input), 2 usage.",
        .opts = (const cli_opt[]){
            CLI_OPT_AS_OF(&o.as_of_days, "today",
                          "evaluation date; fix it for reproducible output"),
            CLI_OPT_JSON(&json,
                         "one JSON object per patient per line (schema: conf/criteria/README.md)"),
            {.name = "criteria", .kind = CLI_PATH, .out = &cdir, .arg = "DIR",
             .def = "$CARTGATE_CRITERIA_DIR or the source tree's conf/criteria",
             .help = "criteria folder"},
            {.name = "param", .kind = CLI_LIST, .out = &plist, .arg = "NAME=VALUE",
             .help = "override a criteria parameter (see conf/criteria/params.json),\n"
                     "e.g. --param lbcl_1l_anchor=start"},
            {.name = "keep-going", .kind = CLI_FLAG, .out = &keep_going,
             .help = "exit 0 although NDJSON lines were refused (each is still named FILE:LINE)"},
            {.name = "include-pending", .kind = CLI_FLAG, .out = &include_pending,
             .help = "also show what pending products (label not verified yet, e.g.\n"
                     "anito-cel) would decide, apart: never in the category"},
            CLI_OPT_MAPPINGS(&mdir),
            {0},
        },
    };
    int first;
    int prc = cli_parse(&cmd, argc, argv, &first);
    if (prc != CLI_GO)
        return prc;
    size_t nparams = plist.n;
    for (size_t k = 0; k < nparams; k++)
        if (!strchr(params[k], '='))
            return cli_error(&cmd, "--param: not NAME=VALUE: %s", params[k]);

    fhir_error err;
    fhir_error_clear(&err);
    if (!cdir)
        cdir = default_criteria_dir();
    elig_ruleset *rs = elig_load_dir(cdir, &err);
    if (!rs) {
        fprintf(stderr, "cartgate screen: %s\n", err.msg);
        return 1;
    }
    for (size_t k = 0; k < nparams; k++) {
        char name[128];
        const char *eq = strchr(params[k], '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq - params[k]), params[k]);
        if (elig_ruleset_set_param(rs, name, eq + 1, &err)) {
            fprintf(stderr, "cartgate screen: %s\n", err.msg);
            elig_ruleset_free(rs);
            return 2;
        }
    }
    elig_ruleset_show_pending(rs, include_pending);
    map_tables *t = map_tables_load(mdir, &err);
    if (!t) {
        fprintf(stderr, "cartgate screen: %s\n", err.msg);
        elig_ruleset_free(rs);
        return 1;
    }
    /* patients one at a time (map_stream: bounded memory, skips what screening never reads),
     * screened, rows kept in patient-id order (screen_sort) and printed at the end */
#ifdef __GLIBC__
    /* the per-patient arenas free and take the same blocks again for every patient: keep
     * them in the heap rather than returning them to the kernel and faulting them in again
     * (the peak stays bounded by what map_stream holds) */
    mallopt(M_MMAP_THRESHOLD, SCREEN_MMAP_THRESHOLD);
    mallopt(M_TRIM_THRESHOLD, SCREEN_TRIM_THRESHOLD);
#endif
    run_ctx c = {0};
    c.sc = screen_new(t, rs, &o);
    c.rs = rs;
    c.rows = screen_sort_new(0, NULL);
    c.json = json;
    fhir_buf_init(&c.line, SCREEN_LINE_CAP);
    map_stream_stats st;
    int rc = 0;
    if (map_stream_run((const char *const *)argv + first, (size_t)(argc - first), NULL, on_patient,
                       on_restart, &c, &st, &err)) {
        fprintf(stderr, "cartgate screen: %s\n", err.msg);
        rc = 1;
    }
    int skipped_rc = 0;
    if (!rc) {
        skipped_rc = cmd_report_skipped("screen", (const char *const *)argv + first, (size_t)(argc - first),
                                        st.bad_lines, st.orphans, keep_going);
        if (st.files_ignored)
            fprintf(stderr, "cartgate screen: ignored %zu file(s) not named *.json, *.ndjson, "
                            "*.jsonl or *.xml (first: %s)\n", st.files_ignored, st.first_ignored);
        for (size_t i = 0; i < c.nerrors; i++)
            fprintf(stderr, "%s\n", c.errors[i]);
        if (c.more_errors)
            fprintf(stderr, "cartgate screen: ... and %zu more patient error(s)\n", c.more_errors);
        rc = c.nerrors || skipped_rc ? 1 : 0;
        /* the rows (≈ 6 KB each as JSON) in large writes rather than stdio's 4 KiB for a file */
        static char outbuf[SCREEN_OUT_BUF];
        setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
        int orc;
        if (json) {
            orc = screen_sort_each(c.rows, print_json, NULL, &err);
        } else {
            int y;
            unsigned m, d;
            char as_of[16];
            fhir_clock_civil_from_days(screen_opts(c.sc)->as_of_days, &y, &m, &d);
            snprintf(as_of, sizeof as_of, "%04d-%02u-%02u", y, m, d);
            orc = print_table(c.rows, rs, as_of, c.counts, &err);
        }
        if (orc) {
            fprintf(stderr, "cartgate screen: %s\n", err.msg);
            rc = 1;
        }
    }
    clear_errors(&c);
    fhir_buf_free(&c.line);
    screen_sort_free(c.rows);
    screen_free(c.sc);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "cartgate screen: write error\n");
        rc = 1;
    }
    map_tables_free(t);
    elig_ruleset_free(rs);
    return rc;
}
