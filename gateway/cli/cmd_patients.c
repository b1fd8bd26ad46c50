/* cmd_patients — operator acts on patients, through the daemon's API (--admin URL, or
 * $CARTGATE_ADMIN_URL) with the person's own API token, or on the store directly (--db FILE):
 *   cartgate patients rescreen ID|--all (--admin URL | --db FILE) [--reason TEXT]
 *                              [--actor NAME (--db)] [--token-file F | --token-env VAR]
 *                              [--ca-file F]
 * A patient is screened again by the running daemon on its next pass (the cached resources,
 * today's rules); --all marks everyone with cached data. Through the API the act is audited
 * with the token's owner (one patient: clinician; --all: admin); with --db with --actor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_api.h"
#include "cli_opt.h"
#include "cmd.h"
#include "fhir_json.h"
#include "fhir_suggest.h"
#include "store.h"

typedef struct opts {
    const char *db, *admin, *token_file, *token_env, *ca_file, *actor, *reason;
    bool all, actor_set;
} opts;

#define PATIENTS_BODY_MAX 8192u /* bytes of the {"reason": ...} body sent to the API */

/* Through the API: POST .../patients/{id}/rescreen or .../patients/rescreen. */
static int api_rescreen(const opts *o, const char *pid, fhir_error *err)
{
    cli_api c;
    if (cli_api_open(&c, o->admin, o->token_file, o->token_env, o->ca_file, err))
        return -1;
    char path[128];
    if (pid)
        snprintf(path, sizeof path, "api/v1/patients/%s/rescreen", pid);
    else
        snprintf(path, sizeof path, "api/v1/patients/rescreen");
    fhir_buf body;
    fhir_buf_init(&body, PATIENTS_BODY_MAX);
    fhir_buf_puts(&body, "{");
    if (o->reason) {
        fhir_buf_puts(&body, "\"reason\":");
        fhir_json_write_string(&body, o->reason, strlen(o->reason));
    }
    fhir_buf_puts(&body, "}");
    int rc = -1;
    if (body.overflow) {
        fhir_error_set(err, "--reason is longer than %u bytes", PATIENTS_BODY_MAX - 16);
    } else {
        fhir_buf out;
        fhir_buf_init(&out, CLI_API_RESP_MAX);
        long status;
        char what[96];
        snprintf(what, sizeof what, "patient %s", pid ? pid : "");
        cli_api_about about = {.what = pid ? what : NULL, .conflict = NULL};
        rc = cli_api_call(&c, "POST", path, fhir_buf_cstr(&body), &about, &out, &status, err);
        if (rc == 0) {
            fhir_arena *a = fhir_arena_new(0);
            fhir_node *r = cli_api_parse(a, &out, err);
            int64_t n = 0;
            if (!r)
                rc = -1;
            else if (pid)
                printf("patient %s: queued; the daemon screens it again on its next pass\n", pid);
            else if (fhir_node_int(fhir_node_get(r, "patients"), &n))
                printf("%lld patient(s) queued; the daemon screens them again on its next passes\n", (long long)n);
            else
                rc = fhir_error_set(err, "admin API answer has no \"patients\" count");
            fhir_arena_free(a);
        }
        fhir_buf_free(&out);
    }
    fhir_buf_free(&body);
    cli_api_close(&c);
    return rc;
}

/* On the store: the same marks and audit row as the API, the actor named by --actor. */
static int db_rescreen(const opts *o, const char *pid, fhir_error *err)
{
    store *s = store_open_existing(o->db, 0, err);
    if (!s)
        return -1;
    int rc = 0;
    int64_t n = 0;
    if (pid) {
        char *cat = NULL;
        int known = store_verdict_get(s, pid, NULL, &cat, NULL, err);
        free(cat);
        int64_t cached = known == 1 ? store_resource_count(s, pid) : 0;
        if (known < 0 || cached < 0)
            rc = -1;
        else if (known == 0)
            rc = fhir_error_set(err, "patient %s: never screened (no verdict in %s)", pid, o->db);
        else if (cached == 0)
            rc = fhir_error_set(err, "patient %s: nothing of the patient is cached (store.retention removed it); "
                                     "it is screened again when new data arrives", pid);
    }
    char detail[96];
    store_actor who = {.name = o->actor, .reason = o->reason};
    if (rc == 0)
        rc = store_begin(s, err);
    if (rc == 0) {
        if (pid) {
            rc = store_dirty_mark(s, pid, err);
            snprintf(detail, sizeof detail, "%s", pid);
        } else {
            rc = store_dirty_mark_all(s, &n, err);
            snprintf(detail, sizeof detail, "%lld patients", (long long)n);
        }
        if (rc == 0)
            rc = store_audit_actor(s, &who, pid ? "rescreen" : "rescreen-all", 0, NULL, NULL, detail, err);
        if (rc == 0)
            rc = store_commit(s, err);
        else
            store_rollback(s);
    }
    if (rc == 0 && pid)
        printf("patient %s: queued; the daemon screens it again on its next pass\n", pid);
    else if (rc == 0)
        printf("%lld patient(s) queued; the daemon screens them again on its next passes\n", (long long)n);
    store_close(s);
    return rc;
}

static const char *const actions[] = {"rescreen"};

int cmd_patients(int argc, char **argv)
{
    opts o = {0};
    const cli_cmd cmd = {
        .name = "patients", .args = "ACTION [ID]", .min_args = 1, .max_args = 2,
        .synopsis = "cartgate patients rescreen ID|--all (--admin URL | --db FILE) [options]",
        .about =
            "Operator acts on patients: through the daemon's API (--admin) with your own API\n"
            "token, or on the SQLite store directly (--db). Every act is audited with the person.\n"
            "\n"
            "actions:\n"
            "  rescreen ID      screen one patient again on the daemon's next pass (the cached\n"
            "                   data, today's rules; API: clinician)\n"
            "  rescreen --all   everyone with cached data (API: admin)",
        .notes = "The running daemon does the screening; with --db it picks the marks up from the store.",
        .opts = (const cli_opt[]){
            {.name = "all", .kind = CLI_FLAG, .out = &o.all, .help = "rescreen: every patient with cached data"},
            CLI_API_OPTS(&o.admin, &o.token_file, &o.token_env, &o.ca_file),
            {.name = "db", .kind = CLI_PATH, .out = &o.db, .arg = "FILE",
             .help = "on the SQLite store directly (the daemon screens on its next pass)"},
            {.name = "actor", .kind = CLI_STR, .out = &o.actor, .arg = "NAME", .def = "$USER",
             .help = "with --db: who acts (audited)"},
            {.name = "reason", .kind = CLI_STR, .out = &o.reason, .arg = "TEXT", .help = "why (audited)"},
            {0},
        },
    };
    int first, prc = cli_parse(&cmd, argc, argv, &first);
    if (prc != CLI_GO)
        return prc;
    const char *action = argv[first];
    if (strcmp(action, "rescreen")) {
        const char *s = fhir_suggest(action, actions, sizeof actions / sizeof actions[0]);
        return cli_error(&cmd, "unknown action \"%s\"%s%s%s", action, s ? " (did you mean " : "", s ? s : "",
                         s ? "?)" : "");
    }
    const char *pid = first + 1 < argc ? argv[first + 1] : NULL;
    if (!pid == !o.all)
        return cli_error(&cmd, "rescreen: give a patient id or --all (not both)");
    if (pid) {
        size_t n = strlen(pid);
        bool ok = n > 0 && n <= 64;
        for (size_t i = 0; ok && i < n; i++)
            ok = (pid[i] >= 'A' && pid[i] <= 'Z') || (pid[i] >= 'a' && pid[i] <= 'z') ||
                 (pid[i] >= '0' && pid[i] <= '9') || pid[i] == '-' || pid[i] == '.';
        if (!ok)
            return cli_error(&cmd, "rescreen: not a patient id (1-64 of A-Z a-z 0-9 - .): %s", pid);
    }
    o.actor_set = o.actor != NULL;
    if (!o.actor)
        o.actor = getenv("USER") && *getenv("USER") ? getenv("USER") : "operator";
    const char *usage = cli_api_target(&o.admin, o.db);
    if (usage)
        return cli_error(&cmd, "%s", usage);
    if (o.admin && o.actor_set)
        fprintf(stderr, "cartgate patients rescreen: note: the API records the token's owner; --actor applies only "
                        "with --db\n");
    fhir_error err = {0};
    int rc = o.admin ? api_rescreen(&o, pid, &err) : db_rescreen(&o, pid, &err);
    if (rc)
        fprintf(stderr, "cartgate patients rescreen: %s\n", err.msg);
    return rc ? 1 : 0;
}
