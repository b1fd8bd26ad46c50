/* cmd_store — upkeep of the SQLite store:
 *   cartgate store prune (-c FILE | --db FILE --days N) (--dry-run | --apply)
 * store.retention: the cached FHIR resources of patients screened without a heme diagnosis (not
 * eligible or possibly eligible, never referred, nothing waiting to be screened) whose cached
 * data has not changed for N days are removed; verdicts, referrals and the audit stay. Prints
 * counts only (no patient is named). The daemon applies the same rule every hour when
 * store.retention_days is set; --apply is audited (actor --actor, default $USER). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_opt.h"
#include "cmd.h"
#include "config.h"
#include "fhir_clock.h"
#include "store.h"

int cmd_store(int argc, char **argv)
{
    const char *conf = NULL, *db = NULL, *actor = NULL;
    long long days = 0;
    bool dry = false, apply = false;
    const cli_cmd cmd = {
        .name = "store", .args = "ACTION", .min_args = 1, .max_args = 1,
        .synopsis = "cartgate store prune (-c FILE | --db FILE --days N) (--dry-run | --apply)",
        .about =
            "Store upkeep.\n"
            "\n"
            "actions:\n"
            "  prune   store.retention: remove the cached FHIR resources of patients screened\n"
            "          without a heme diagnosis (not a candidate, never referred) whose data has\n"
            "          not changed for N days. Verdicts, referrals and the audit are kept.\n"
            "          Prints counts only.",
        .notes = "The daemon applies store.retention_days by itself every hour.",
        .opts = (const cli_opt[]){
            CLI_OPT_CONFIG(&conf, false, "the daemon's configuration (store.path, store.retention_days)"),
            {.name = "db", .kind = CLI_PATH, .out = &db, .arg = "FILE", .help = "the SQLite store (instead of -c)"},
            {.name = "days", .kind = CLI_INT, .out = &days, .arg = "N", .min = 1, .max = 36500,
             .def = "store.retention_days", .help = "unchanged for at least N days"},
            {.name = "dry-run", .kind = CLI_FLAG, .out = &dry, .help = "count what would be removed"},
            {.name = "apply", .kind = CLI_FLAG, .out = &apply, .help = "remove it (audited)"},
            {.name = "actor", .kind = CLI_STR, .out = &actor, .arg = "NAME", .def = "$USER",
             .help = "--apply: who acts (audited)"},
            {0},
        },
    };
    int first, prc = cli_parse(&cmd, argc, argv, &first);
    if (prc != CLI_GO)
        return prc;
    if (strcmp(argv[first], "prune"))
        return cli_error(&cmd, "unknown action \"%s\" (prune)", argv[first]);
    if (dry == apply)
        return cli_error(&cmd, "prune: give --dry-run or --apply");
    if (!conf == !db)
        return cli_error(&cmd, "prune: give -c FILE or --db FILE");
    config *c = NULL;
    if (conf) {
        fhir_buf diag;
        fhir_buf_init(&diag, CMD_CONFIG_DIAG_MAX);
        fhir_error err;
        c = config_load(conf, &diag, NULL, &err);
        if (!c) {
            fputs(fhir_buf_cstr(&diag), stderr);
            fhir_buf_free(&diag);
            return 1;
        }
        fhir_buf_free(&diag);
        db = c->store_path;
        if (!days)
            days = c->store_retention_days;
    }
    if (days <= 0) {
        config_free(c);
        return cli_error(&cmd, "prune: --days N is needed (store.retention_days is 0: keep everything)");
    }
    if (!actor)
        actor = getenv("USER") && *getenv("USER") ? getenv("USER") : "operator";
    fhir_error err = {0};
    store *s = store_open_existing(db, 0, &err);
    int rc = s ? 0 : -1;
    store_prune_counts n = {0};
    int64_t cutoff = fhir_clock_now_ms() - (int64_t)days * 86400000;
    if (rc == 0)
        rc = store_begin(s, &err);
    if (rc == 0) {
        rc = store_retention_prune(s, cutoff, apply, &n, &err);
        char detail[160];
        snprintf(detail, sizeof detail, "store.retention %lld days: %lld patients, %lld resources", days,
                 (long long)n.patients, (long long)n.resources);
        store_actor who = {.name = actor};
        if (rc == 0 && apply && n.resources > 0)
            rc = store_audit_actor(s, &who, "retention-prune", 0, NULL, NULL, detail, &err);
        if (rc == 0)
            rc = store_commit(s, &err);
        else
            store_rollback(s);
    }
    if (rc == 0)
        printf("%s: %lld patient(s) without a heme diagnosis, unchanged for %lld days: %lld cached resource(s) %s\n",
               db, (long long)n.patients, days, (long long)n.resources, apply ? "removed" : "would be removed (dry run)");
    else
        fprintf(stderr, "cartgate store prune: %s\n", err.msg);
    store_close(s);
    config_free(c);
    return rc ? 1 : 0;
}
