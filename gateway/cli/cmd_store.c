/* cmd_store — upkeep of the SQLite store:
 *   cartgate store prune (-c FILE | --db FILE --days N) (--dry-run | --apply)
 * store.retention: the cached FHIR resources of patients screened without a heme diagnosis (not
 * eligible or possibly eligible, never referred, nothing waiting to be screened) whose cached
 * data has not changed for N days are removed; verdicts, referrals and the audit stay. Prints
 * counts only (no patient is named). The daemon applies the same rule every hour when
 * store.retention_days is set; --apply is audited (actor --actor, default $USER).
 *   cartgate store resource (-c FILE | --db FILE) TYPE/ID
 * one cached resource as JSON (the cache keeps a binary form of it, fhir_bin.h, which the
 * sqlite3 shell shows as bytes): for support, on the operator's terminal, never logged. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_opt.h"
#include "cmd.h"
#include "config.h"
#include "fhir_bin.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "store.h"

#define STORE_SHOW_MAX (64u << 20) /* bytes of one resource printed as JSON */

typedef struct shown {
    fhir_buf out;
    fhir_error err;
    bool bad;
} shown;

static int show_cb(void *ctx, const char *type, const char *id, const void *data, size_t len)
{
    (void)type;
    (void)id;
    shown *s = ctx;
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *n = fhir_bin_or_json_read(NULL, a, data, len, &s->err);
    s->bad = !n || fhir_json_write(&s->out, n, FHIR_JSON_PRETTY) < 0;
    if (n && s->bad)
        fhir_error_set(&s->err, "larger than %u bytes as JSON", STORE_SHOW_MAX);
    fhir_arena_free(a);
    return 1;
}

/* `resource TYPE/ID`: the cached resource as JSON on standard output. 0, or 1 with a cause. */
static int show_resource(const char *db, const char *ref)
{
    const char *slash = strchr(ref, '/');
    if (!slash || slash == ref || !slash[1] || strchr(slash + 1, '/')) {
        fprintf(stderr, "cartgate store resource: \"%s\" is not TYPE/ID (for example Patient/p1)\n", ref);
        return 2;
    }
    char type[128];
    snprintf(type, sizeof type, "%.*s", (int)(slash - ref), ref);
    fhir_error err = {0};
    store *s = store_open_existing(db, 0, &err);
    shown sh = {.bad = false};
    fhir_buf_init(&sh.out, STORE_SHOW_MAX);
    int found = s ? store_resource_get(s, type, slash + 1, show_cb, &sh, &err) : -1;
    int rc = 1;
    if (found < 0)
        fprintf(stderr, "cartgate store resource: %s\n", err.msg);
    else if (found == 0)
        fprintf(stderr, "cartgate store resource: %s is not cached in %s\n", ref, db);
    else if (sh.bad)
        fprintf(stderr, "cartgate store resource: %s: %s\n", ref, sh.err.msg);
    else {
        fwrite(sh.out.data, 1, sh.out.len, stdout);
        rc = 0;
    }
    fhir_buf_free(&sh.out);
    store_close(s);
    return rc;
}

/* The daemon's configuration at path (its errors printed with their file:line), or NULL. The
 * caller frees it. */
static config *load_config(const char *path)
{
    fhir_buf diag;
    fhir_buf_init(&diag, CMD_CONFIG_DIAG_MAX);
    fhir_error err;
    config *c = config_load(path, &diag, NULL, &err);
    if (!c)
        fputs(fhir_buf_cstr(&diag), stderr);
    fhir_buf_free(&diag);
    return c;
}

int cmd_store(int argc, char **argv)
{
    const char *conf = NULL, *db = NULL, *actor = NULL;
    long long days = 0;
    bool dry = false, apply = false;
    const cli_cmd cmd = {
        .name = "store", .args = "ACTION [TYPE/ID]", .min_args = 1, .max_args = 2,
        .synopsis = "cartgate store prune (-c FILE | --db FILE --days N) (--dry-run | --apply)\n"
                    "cartgate store resource (-c FILE | --db FILE) TYPE/ID",
        .about =
            "Store upkeep.\n"
            "\n"
            "actions:\n"
            "  prune   store.retention: remove the cached FHIR resources of patients screened\n"
            "          without a heme diagnosis (not a candidate, never referred) whose data has\n"
            "          not changed for N days. Verdicts, referrals and the audit are kept.\n"
            "          Prints counts only.\n"
            "  resource TYPE/ID   one cached resource as JSON (the cache keeps a compact binary\n"
            "          form that the sqlite3 shell shows as bytes). Patient data: for support\n"
            "          on this terminal only.",
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
    if (!strcmp(argv[first], "resource")) {
        if (first + 1 >= argc)
            return cli_error(&cmd, "resource: give TYPE/ID");
        if (!conf == !db)
            return cli_error(&cmd, "resource: give -c FILE or --db FILE");
        if (dry || apply || days || actor)
            return cli_error(&cmd, "resource: --dry-run, --apply, --days and --actor are for prune");
        config *c = conf ? load_config(conf) : NULL;
        if (conf && !c)
            return 1;
        int rc = show_resource(c ? c->store_path : db, argv[first + 1]);
        config_free(c);
        return rc;
    }
    if (strcmp(argv[first], "prune"))
        return cli_error(&cmd, "unknown action \"%s\" (prune, resource)", argv[first]);
    if (first + 1 < argc)
        return cli_error(&cmd, "prune takes no TYPE/ID");
    if (dry == apply)
        return cli_error(&cmd, "prune: give --dry-run or --apply");
    if (!conf == !db)
        return cli_error(&cmd, "prune: give -c FILE or --db FILE");
    config *c = NULL;
    if (conf) {
        if (!(c = load_config(conf)))
            return 1;
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
