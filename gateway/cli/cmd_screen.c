/* cmd_screen — `cartgate screen [--as-of DATE] [--json] [--criteria DIR] FILE|DIR...`
 * Offline screening: groups the FHIR resources in Bundles / NDJSON files / folders by patient,
 * builds each patient's clinical profile and evaluates it against the CAR T label criteria.
 * Prints a table (default) or one JSON object per patient per line (schema:
 * conf/criteria/README.md), sorted by patient id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_opt.h"
#include "cmd.h"
#include "elig.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_datadir.h"
#include "fhir_error.h"
#include "map_group.h"
#include "map_profile.h"
#include "screen.h"

#define SCREEN_LINE_CAP (4u * 1024u * 1024u)

typedef struct row {
    char *id;
    char *text[6]; /* patient, category, urgency, products, missing, flags */
    char *json;
} row;

static int cmp_row(const void *a, const void *b)
{
    return strcmp(((const row *)a)->id, ((const row *)b)->id);
}

static char *join(const char *const *v, size_t n, const char *suffix)
{
    fhir_buf b;
    fhir_buf_init(&b, 0);
    for (size_t i = 0; i < n; i++)
        fhir_buf_printf(&b, "%s%s%s", i ? "," : "", v[i], suffix);
    if (n == 0)
        fhir_buf_putc(&b, '-');
    char *s = fhir_buf_steal(&b, NULL);
    return s;
}

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (!d)
        abort();
    memcpy(d, s, n);
    return d;
}

static void fill_row(row *r, const elig_ruleset *rs, const elig_result *res, const char *id)
{
    const char *keys[ELIG_MAX_INDICATIONS];
    size_t idx[ELIG_MAX_INDICATIONS];
    size_t nk = screen_indications(rs, res, true, idx, ELIG_MAX_INDICATIONS);
    for (size_t k = 0; k < nk; k++)
        keys[k] = elig_ruleset_key(rs, idx[k]);
    bool any_eligible = elig_result_category(res) == ELIG_ELIGIBLE;
    const char *miss[ELIG_MAX_FACTS], *flags[ELIG_MAX_FLAGS];
    size_t nm = elig_result_missing(rs, res, miss, ELIG_MAX_FACTS);
    size_t nf = elig_result_flags(rs, res, flags, ELIG_MAX_FLAGS);
    r->text[0] = dupstr(id);
    r->text[1] = dupstr(elig_category_name(elig_result_category(res)));
    r->text[2] = dupstr(elig_urgency_name(elig_result_urgency(res)));
    r->text[3] = join(keys, nk, any_eligible ? "" : "?");
    r->text[4] = join(miss, nm, "");
    r->text[5] = join(flags, nf, "");
}

static void print_table(row *rows, size_t n, const elig_ruleset *rs, const char *as_of,
                        size_t counts[3])
{
    static const char *const head[6] = {"PATIENT", "CATEGORY", "URGENCY", "PRODUCTS",
                                        "MISSING", "REVIEW FLAGS"};
    size_t w[6];
    for (int c = 0; c < 6; c++) {
        w[c] = strlen(head[c]);
        for (size_t i = 0; i < n; i++)
            if (rows[i].text[0] && strlen(rows[i].text[c]) > w[c])
                w[c] = strlen(rows[i].text[c]);
    }
    for (int c = 0; c < 5; c++)
        printf("%-*s  ", (int)w[c], head[c]);
    printf("%s\n", head[5]);
    for (size_t i = 0; i < n; i++) {
        if (!rows[i].text[0])
            continue;
        for (int c = 0; c < 5; c++)
            printf("%-*s  ", (int)w[c], rows[i].text[c]);
        printf("%s\n", rows[i].text[5]);
    }
    printf("\n%zu patient(s): %zu eligible, %zu possibly eligible, %zu not eligible "
           "(as of %s; criteria %s)\n"
           "Products ending in '?' are possibly eligible: check the missing facts. Review flags "
           "never block a referral.\n",
           counts[0] + counts[1] + counts[2], counts[2], counts[1], counts[0], as_of,
           elig_ruleset_hash(rs));
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
    bool json = false;
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
    map_tables *t = map_tables_load(mdir, &err);
    if (!t) {
        fprintf(stderr, "cartgate screen: %s\n", err.msg);
        elig_ruleset_free(rs);
        return 1;
    }
    map_group *g = map_group_new(NULL);
    int rc = 0;
    for (int i = first; i < argc && !rc; i++)
        if (map_group_add_path(g, argv[i], &err)) {
            fprintf(stderr, "cartgate screen: %s\n", err.msg);
            rc = 1;
        }
    if (!rc) {
        if (map_group_bad_lines(g))
            fprintf(stderr, "cartgate screen: skipped %zu unparsable NDJSON line(s)\n",
                    map_group_bad_lines(g));
        size_t n = map_group_count(g);
        row *rows = calloc(n ? n : 1, sizeof *rows);
        if (!rows)
            abort();
        screen *sc = screen_new(t, rs, &o);
        fhir_buf line;
        fhir_buf_init(&line, SCREEN_LINE_CAP);
        size_t counts[3] = {0, 0, 0};
        for (size_t i = 0; i < n; i++) {
            rows[i].id = dupstr(map_group_patient_id(g, i));
            size_t nr;
            const fhir_node *const *resv = map_group_resources(g, i, &nr);
            if (screen_patient(sc, resv, nr, &err)) {
                fprintf(stderr, "cartgate screen: patient %s: %s\n", rows[i].id, err.msg);
                rc = 1;
                continue;
            }
            const elig_result *res = screen_result(sc);
            counts[elig_result_category(res)]++;
            if (json) {
                fhir_buf_reset(&line);
                if (screen_write_json(sc, rows[i].id, &line)) {
                    fprintf(stderr, "cartgate screen: patient %s: output line too long\n",
                            rows[i].id);
                    rc = 1;
                } else {
                    rows[i].json = fhir_buf_steal(&line, NULL);
                }
            } else {
                fill_row(&rows[i], rs, res, rows[i].id);
            }
        }
        fhir_buf_free(&line);
        qsort(rows, n, sizeof *rows, cmp_row);
        if (json) {
            for (size_t i = 0; i < n; i++)
                if (rows[i].json)
                    printf("%s\n", rows[i].json);
        } else {
            int y;
            unsigned m, d;
            char as_of[16];
            fhir_clock_civil_from_days(o.as_of_days, &y, &m, &d);
            snprintf(as_of, sizeof as_of, "%04d-%02u-%02u", y, m, d);
            print_table(rows, n, rs, as_of, counts);
        }
        for (size_t i = 0; i < n; i++) {
            free(rows[i].id);
            free(rows[i].json);
            for (int c = 0; c < 6; c++)
                free(rows[i].text[c]);
        }
        free(rows);
        screen_free(sc);
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "cartgate screen: write error\n");
        rc = 1;
    }
    map_group_free(g);
    map_tables_free(t);
    elig_ruleset_free(rs);
    return rc;
}
