/* cmd_referrals — operator control of referrals, through the daemon's API (--admin URL, or
 * $CARTGATE_ADMIN_URL) with the person's own API token, or on the store directly (--db FILE):
 *   cartgate referrals list|show|approve|decline|cancel|retry --admin URL [--token-file F |
 *                              --token-env VAR] [--ca-file F] [--reason TEXT] ...
 *   cartgate referrals list    --db FILE [--state S] [--center ID] [--json]
 *   cartgate referrals show    --db FILE ID
 *   cartgate referrals approve --db FILE ID [--actor NAME] [--reason TEXT]
 *   cartgate referrals decline --db FILE ID --reason TEXT [--actor NAME]
 *   cartgate referrals cancel  --db FILE ID [--actor NAME] [--reason TEXT]
 *   cartgate referrals retry   --db FILE ID [--actor NAME]
 *   cartgate referrals send    --db FILE --centers FILE [--until-idle] [--passes N]
 *                              [--interval-ms MS] [--attempts N] [--backoff-ms MS]
 *   cartgate referrals poll    --db FILE --centers FILE
 * Through the API the act is audited with the token's owner (`cartgate users token`; the
 * token comes from --token-file, --token-env, else $CARTGATE_TOKEN, else the shared service
 * token in $CARTGATE_ADMIN_TOKEN, audited as "admin-api"). Referrals are created by the
 * daemon's screening (cartgate run); tests and demos feed it a `cartgate synth` cohort. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "centers.h"
#include "cli_api.h"
#include "cli_opt.h"
#include "cmd.h"
#include "daemon.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_suggest.h"
#include "packet.h"
#include "referral.h"
#include "sender.h"
#include "store.h"

typedef struct opts {
    const char *db, *centers, *state, *center, *actor, *reason, *config;
    const char *admin, *token_file, *token_env, *ca_file, *pdf;
    bool json, until_idle, actor_set, html;
    long long passes, interval_ms, attempts, backoff_ms;
} opts;

#define REFERRALS_LINE_MAX (1u << 20) /* bytes of one --json line of list --db */

/* obj[key] = v as a JSON number. */
static void set_int(fhir_arena *a, fhir_node *obj, const char *key, long long v)
{
    char t[32];
    int n = snprintf(t, sizeof t, "%lld", v);
    fhir_node_set(a, obj, key, fhir_node_new_num(a, t, (size_t)n));
}

static void fmt_ms(int64_t ms, char *out, size_t n)
{
    if (ms <= 0) {
        snprintf(out, n, "-");
        return;
    }
    fhir_clock_format_instant(ms, out, (unsigned)n);
}

static int print_row(void *ctx, const refer_record *r)
{
    const opts *o = ctx;
    char upd[40];
    fmt_ms(r->updated_ms, upd, sizeof upd);
    if (o->json) {
        /* the same keys, in the same order, as ever */
        fhir_arena *a = fhir_arena_new(0);
        fhir_node *j = fhir_node_new(a, FHIR_OBJECT);
        set_int(a, j, "id", r->id);
        fhir_node_set_str(a, j, "placer_id", r->placer_id);
        fhir_node_set_str(a, j, "patient_id", r->patient_id);
        fhir_node_set_str(a, j, "center_id", r->center_id);
        fhir_node_set_str(a, j, "state", refer_state_name(r->state));
        fhir_node_set_str(a, j, "mode", r->mode ? r->mode : "");
        fhir_node_set_str(a, j, "urgency", r->urgency ? r->urgency : "");
        set_int(a, j, "attempts", r->attempts);
        fhir_node_set_str(a, j, "updated", upd);
        fhir_node_set_str(a, j, "indications", r->indications ? r->indications : "");
        if (r->last_error)
            fhir_node_set_str(a, j, "last_error", r->last_error);
        if (r->compose_cause != REFER_COMPOSE_OK) {
            fhir_node_set_str(a, j, "compose_cause", refer_compose_cause_name(r->compose_cause));
            if (r->compose_error)
                fhir_node_set_str(a, j, "compose_error", r->compose_error);
        }
        char *line = fhir_json_to_string(j, FHIR_JSON_COMPACT, REFERRALS_LINE_MAX);
        fhir_arena_free(a);
        if (!line) {
            fprintf(stderr, "cartgate referrals: referral %lld: JSON line larger than %u bytes\n",
                    (long long)r->id, REFERRALS_LINE_MAX);
            return -1;
        }
        printf("%s\n", line);
        free(line);
    } else {
        printf("%-5lld %-17s %-24s %-14s %-8s %2d  %s%s%s%s%s\n", (long long)r->id,
               refer_state_name(r->state), r->center_id, r->patient_id, r->urgency, r->attempts,
               r->indications, r->compose_cause != REFER_COMPOSE_OK ? "  could not be prepared: " : "",
               r->compose_cause != REFER_COMPOSE_OK ? refer_compose_cause_name(r->compose_cause) : "",
               r->last_error ? "  last error: " : "", r->last_error ? r->last_error : "");
    }
    return 0;
}

/* One line of an audit trail: time, who (with role, user id and source address when a person
 * or service acted through the API), action, states, detail and reason. */
static void print_trail(const char *time, const char *actor, long long user_id, const char *role,
                        const char *source, const char *action, const char *from, const char *to,
                        const char *detail, const char *reason)
{
    printf("  %s  %-12s %-14s %s -> %s", time, actor ? actor : "-", action ? action : "-",
           from && *from ? from : "-", to && *to ? to : "-");
    if (role && *role)
        printf("  [%s%s", role, user_id > 0 || (source && *source) ? "" : "]");
    if (user_id > 0)
        printf(", user %lld%s", user_id, source && *source ? "" : "]");
    if (source && *source)
        printf(", from %s]", source);
    if (detail && *detail && !(reason && !strcmp(detail, reason)))
        printf("  %s", detail);
    if (reason && *reason)
        printf("  reason: %s", reason);
    printf("\n");
}

static int print_audit(void *ctx, const store_audit_row *row)
{
    (void)ctx;
    char t[40];
    fmt_ms(row->ts_ms, t, sizeof t);
    print_trail(t, row->actor, (long long)row->user_id, row->role, row->source, row->action, row->from_state,
                row->to_state, row->detail, row->reason);
    return 0;
}

/* Why a referral has no Bundle to show: not composed yet (the screening stores proposals
 * without their package: -c composes it), or it could not be built. */
static void no_package(const refer_record *r, fhir_error *err)
{
    if (refer_texts_pending(r))
        fhir_error_set(err, "referral %lld has no package yet: it is composed when first read "
                            "(give -c with the daemon's configuration, or read it through --admin)",
                       (long long)r->id);
    else
        fhir_error_set(err, "referral %lld has no package yet", (long long)r->id);
}

static int show(store *s, int64_t id, fhir_error *err)
{
    refer_record r;
    int f = refer_get(s, id, &r, err);
    if (f != 1) {
        if (f == 0)
            fhir_error_set(err, "referral %lld does not exist", (long long)id);
        return -1;
    }
    char c[40], u[40], n[40];
    fmt_ms(r.created_ms, c, sizeof c);
    fmt_ms(r.updated_ms, u, sizeof u);
    fmt_ms(r.next_attempt_ms, n, sizeof n);
    printf("referral %lld\n  placer id    %s\n  state        %s\n  mode         %s\n"
           "  site         %s\n  patient      %s\n  center       %s\n  indications  %s\n"
           "  urgency      %s\n  created      %s\n  updated      %s\n  attempts     %d "
           "(next %s)\n",
           (long long)r.id, r.placer_id, refer_state_name(r.state), r.mode, r.site_id,
           r.patient_id, r.center_id, r.indications, r.urgency, c, u, r.attempts, n);
    printf("  episode      %lld\n", (long long)r.episode);
    if (r.supersedes > 0)
        printf("  replaces     referral %lld (a re-route: approving it cancels that one at its "
               "center first)\n", (long long)r.supersedes);
    if (r.cancel_requested_ms > 0)
        printf("  cancelling   at its center (%s)\n",
               r.ended && !strcmp(r.ended, REFER_ENDED_SUPERSEDED) ? "a re-route that replaces it was approved"
                                                                    : "a person cancelled it");
    if (r.ended)
        printf("  ended        %s\n", r.ended);
    if (r.compose_cause != REFER_COMPOSE_OK)
        printf("  not prepared %s: %s\n", refer_compose_cause_name(r.compose_cause),
               r.compose_error ? r.compose_error : "");
    if (r.last_error)
        printf("  last error   %s (status %d)\n", r.last_error, r.last_status);
    if (r.last_response)
        printf("  last response %.2000s\n", r.last_response);
    if (r.center_sr_ref)
        printf("  at center    %s, %s\n", r.center_sr_ref, r.center_task_ref ? r.center_task_ref : "-");
    if (r.task_status)
        printf("  center Task  status=%s businessStatus=%s\n", r.task_status,
               r.business_status ? r.business_status : "-");
    printf("  payload      %s\n", r.payload ? "stored" : "not yet attached");
    if (r.explanation)
        printf("  summary      %s\n", r.explanation);
    printf("audit:\n");
    refer_record_free(&r);
    return store_audit_list(s, id, 0, 0, print_audit, NULL, err) < 0 ? -1 : 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int run_send(store *s, const opts *o, bool poll, fhir_error *err)
{
    if (!o->centers)
        return fhir_error_set(err, "--centers FILE is required");
    centers_dir *dir = centers_load(o->centers, err);
    if (!dir)
        return -1;
    sender_opts so = {.centers = dir, .backoff_base_ms = o->backoff_ms};
    so.retry.max_attempts = o->attempts > 0 ? (unsigned)o->attempts : 0;
    sender *snd = sender_new(s, &so, err);
    if (!snd) {
        centers_free(dir);
        return -1;
    }
    int rc = 0;
    sender_stats total = {0};
    long max_passes = o->passes > 0 ? o->passes : 1;
    for (long pass = 0; rc == 0; pass++) {
        sender_stats st = {0};
        rc = poll ? sender_poll(snd, &st, err) : sender_pass(snd, &st, err);
        total.sent += st.sent;
        total.recovered += st.recovered;
        total.transient += st.transient;
        total.failed += st.failed;
        total.polled += st.polled;
        total.changed += st.changed;
        if (rc)
            break;
        if (poll)
            break;
        int64_t left = sender_outstanding(s, err);
        if (left < 0) {
            rc = -1;
            break;
        }
        if (left == 0 || (!o->until_idle && pass + 1 >= max_passes))
            break;
        sleep_ms(o->interval_ms);
    }
    if (poll)
        printf("polled=%u changed=%u\n", total.polled, total.changed);
    else
        printf("sent=%u recovered=%u transient=%u failed=%u outstanding=%lld\n", total.sent,
               total.recovered, total.transient, total.failed,
               (long long)sender_outstanding(s, err));
    sender_free(snd);
    centers_free(dir);
    return rc;
}

/* ---- through the daemon's admin API (cli_api.h) ----------------------------------------- */

/* One request about referral id (0: none): the API's errors name it. */
static int api_call(const cli_api *c, const char *method, const char *path, const char *body, int64_t id,
                    fhir_buf *out, long *status, fhir_error *err)
{
    char what[48];
    snprintf(what, sizeof what, "referral %lld", (long long)id);
    cli_api_about about = {.what = id > 0 ? what : NULL, .conflict = "illegal state transition"};
    return cli_api_call(c, method, path, body, &about, out, status, err);
}

static const char *jstr(const fhir_node *n, const char *name)
{
    const char *s = fhir_node_str(fhir_node_get(n, name));
    return s ? s : "";
}

static long jint(const fhir_node *n, const char *name)
{
    int64_t v = 0;
    return fhir_node_int(fhir_node_get(n, name), &v) ? (long)v : 0;
}

static int api_list(const cli_api *c, const opts *o, fhir_error *err)
{
    char path[256] = "api/v1/referrals";
    if (o->state) {
        refer_state st;
        if (refer_state_parse(o->state, &st))
            return fhir_error_set(err, "unknown state \"%s\"", o->state);
        snprintf(path, sizeof path, "api/v1/referrals?state=%s", refer_state_name(st));
    }
    fhir_buf b;
    fhir_buf_init(&b, CLI_API_RESP_MAX);
    long status;
    int rc = api_call(c, "GET", path, NULL, 0, &b, &status, err);
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = rc ? NULL : cli_api_parse(a, &b, err);
    const fhir_node *arr = fhir_node_get(root, "referrals");
    if (!rc && !fhir_node_is(arr, FHIR_ARRAY))
        rc = root ? fhir_error_set(err, "admin API answer has no \"referrals\" array") : -1;
    if (!rc && o->json && !o->center) {
        fputs(fhir_buf_cstr(&b), stdout); /* the API's JSON as is */
    } else if (!rc && o->json) {
        /* --center filters on our side: the same shape, only that center's referrals */
        fhir_node *out = fhir_node_new(a, FHIR_OBJECT), *list = out ? fhir_node_set_arr(a, out, "referrals") : NULL;
        size_t n = 0;
        for (const fhir_node *r = fhir_node_first(arr); r && list; r = r->next)
            if (!strcmp(jstr(r, "center"), o->center) && fhir_node_append(a, list, NULL, 0, fhir_node_clone(a, r)))
                n++;
        if (list)
            set_int(a, out, "count", (long long)n);
        char *s = list ? fhir_json_to_string(out, FHIR_JSON_COMPACT, 0) : NULL;
        if (!s)
            rc = fhir_error_set(err, "out of memory");
        else
            printf("%s\n", s);
        free(s);
    } else if (!rc) {
        printf("%-5s %-17s %-24s %-14s %-8s %2s  %s\n", "id", "state", "center", "patient", "urgency", "n",
               "indications");
        for (const fhir_node *r = fhir_node_first(arr); r; r = r->next) {
            if (o->center && strcmp(jstr(r, "center"), o->center))
                continue;
            const char *le = fhir_node_str(fhir_node_get(r, "last_error"));
            const char *cc = fhir_node_str(fhir_node_get(r, "compose_cause"));
            printf("%-5ld %-17s %-24s %-14s %-8s %2ld  %s%s%s%s%s\n", jint(r, "id"), jstr(r, "state"),
                   jstr(r, "center"), jstr(r, "patient"), jstr(r, "urgency"), jint(r, "attempts"),
                   jstr(r, "indications"), cc ? "  could not be prepared: " : "", cc ? cc : "",
                   le ? "  last error: " : "", le ? le : "");
        }
    }
    fhir_arena_free(a);
    fhir_buf_free(&b);
    return rc;
}

/* `packet ID`: the referral packet inside a stored payload, as text, HTML, its JSON document,
 * or a PDF file. */
static int print_packet(const char *payload, size_t len, const opts *o, fhir_error *err)
{
    fhir_arena *a = fhir_arena_new(0);
    int rc = -1;
    fhir_node *bundle = fhir_json_parse(a, payload, len, NULL, err);
    fhir_node *pk = bundle ? packet_from_bundle(a, bundle, err) : NULL;
    if (pk && o->pdf) {
        rc = packet_write_pdf(pk, o->pdf, err);
        if (!rc)
            printf("referral packet written to %s\n", o->pdf);
    } else if (pk && o->json) {
        char *s = fhir_json_to_string(pk, FHIR_JSON_PRETTY, PACKET_MAX_JSON);
        if (s) {
            printf("%s\n", s);
            rc = 0;
        } else {
            fhir_error_set(err, "referral packet larger than its cap");
        }
        free(s);
    } else if (pk) {
        fhir_buf b;
        fhir_buf_init(&b, o->html ? PACKET_MAX_HTML : PACKET_MAX_TEXT);
        rc = o->html ? packet_write_html(pk, &b, err) : packet_write_text(pk, &b, err);
        if (!rc)
            fputs(fhir_buf_cstr(&b), stdout);
        fhir_buf_free(&b);
    }
    fhir_arena_free(a);
    return rc;
}

static void print_or_dash(const char *label, const char *v)
{
    printf("  %-12s %s\n", label, v && *v ? v : "-");
}

static int api_one(const cli_api *c, const opts *o, const char *action, int64_t id, fhir_error *err)
{
    char path[128];
    bool show = !strcmp(action, "show");
    if (!strcmp(action, "payload") || !strcmp(action, "packet")) {
        /* the stored transaction Bundle, as the API gives it */
        snprintf(path, sizeof path, "api/v1/referrals/%lld/payload", (long long)id);
        fhir_buf pb;
        fhir_buf_init(&pb, CLI_API_RESP_MAX);
        long pstatus;
        int prc = api_call(c, "GET", path, NULL, id, &pb, &pstatus, err);
        if (!prc && !strcmp(action, "packet"))
            prc = print_packet(fhir_buf_cstr(&pb), pb.len, o, err);
        else if (!prc)
            printf("%s\n", fhir_buf_cstr(&pb));
        fhir_buf_free(&pb);
        return prc;
    }
    if (show)
        snprintf(path, sizeof path, "api/v1/referrals/%lld", (long long)id);
    else
        snprintf(path, sizeof path, "api/v1/referrals/%lld/%s", (long long)id, action);
    fhir_buf b;
    fhir_buf_init(&b, CLI_API_RESP_MAX);
    long status;
    char *body = NULL;
    if (!show) {
        /* {"reason": ...} (or {}) */
        fhir_arena *ba = fhir_arena_new(0);
        fhir_node *j = fhir_node_new(ba, FHIR_OBJECT);
        if (o->reason)
            fhir_node_set_str(ba, j, "reason", o->reason);
        body = fhir_json_to_string(j, FHIR_JSON_COMPACT, 0);
        fhir_arena_free(ba);
        if (!body)
            return fhir_error_set(err, "out of memory");
    }
    int rc = api_call(c, show ? "GET" : "POST", path, body, id, &b, &status, err);
    free(body);
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *r = rc ? NULL : cli_api_parse(a, &b, err);
    if (!rc && !r)
        rc = -1;
    if (!rc && o->json) {
        fputs(fhir_buf_cstr(&b), stdout);
    } else if (!rc && !show) {
        printf("referral %lld: %s done (state %s)\n", (long long)id, action, jstr(r, "state"));
    } else if (!rc) {
        printf("referral %ld\n", jint(r, "id"));
        print_or_dash("placer id", jstr(r, "placer_id"));
        print_or_dash("state", jstr(r, "state"));
        print_or_dash("mode", jstr(r, "mode"));
        print_or_dash("patient", jstr(r, "patient"));
        print_or_dash("center", jstr(r, "center"));
        print_or_dash("indications", jstr(r, "indications"));
        print_or_dash("urgency", jstr(r, "urgency"));
        print_or_dash("created", jstr(r, "created"));
        print_or_dash("updated", jstr(r, "updated"));
        printf("  attempts     %ld\n", jint(r, "attempts"));
        const char *cc = fhir_node_str(fhir_node_get(r, "compose_cause"));
        if (cc)
            printf("  not prepared %s: %s\n", cc, jstr(r, "compose_error"));
        const char *le = fhir_node_str(fhir_node_get(r, "last_error"));
        if (le)
            printf("  last error   %s (status %ld)\n", le, jint(r, "last_status"));
        const char *lr = fhir_node_str(fhir_node_get(r, "last_response"));
        if (lr)
            printf("  last response %.2000s\n", lr);
        const char *sr = fhir_node_str(fhir_node_get(r, "center_service_request"));
        if (sr)
            printf("  at center    %s, %s\n", sr, *jstr(r, "center_task") ? jstr(r, "center_task") : "-");
        const char *ts = fhir_node_str(fhir_node_get(r, "task_status"));
        if (ts)
            printf("  center Task  status=%s businessStatus=%s\n", ts,
                   *jstr(r, "business_status") ? jstr(r, "business_status") : "-");
        long pb = jint(r, "payload_bytes");
        if (pb > 0)
            printf("  payload      stored (%ld bytes)\n", pb);
        else
            printf("  payload      not yet attached\n");
        const char *ex = fhir_node_str(fhir_node_get(r, "explanation"));
        if (ex)
            printf("  summary      %s\n", ex);
        printf("audit:\n");
        for (const fhir_node *e = fhir_node_first(fhir_node_get(r, "audit")); e; e = e->next) {
            int64_t uid = 0;
            fhir_node_int(fhir_node_get(e, "user_id"), &uid);
            print_trail(jstr(e, "time"), jstr(e, "actor"), (long long)uid, jstr(e, "role"), jstr(e, "source"),
                        jstr(e, "action"), jstr(e, "from"), jstr(e, "to"), jstr(e, "detail"), jstr(e, "reason"));
        }
    }
    fhir_arena_free(a);
    fhir_buf_free(&b);
    return rc;
}

static int run_admin(const cli_cmd *cmd, const opts *o, const char *action, int64_t id)
{
    fhir_error err = {0};
    cli_api c;
    if (!strcmp(action, "send") || !strcmp(action, "poll"))
        return cli_error(cmd, "%s: needs --db FILE (not available through the admin API)", action);
    if (cli_api_open(&c, o->admin, o->token_file, o->token_env, o->ca_file, &err)) {
        fprintf(stderr, "cartgate referrals %s: %s\n", action, err.msg);
        return 1;
    }
    if (o->actor_set && strcmp(action, "list") && strcmp(action, "show"))
        fprintf(stderr, "cartgate referrals %s: note: the API records the token's owner; --actor applies only "
                        "with --db\n", action);
    int rc = !strcmp(action, "list") ? api_list(&c, o, &err) : api_one(&c, o, action, id, &err);
    cli_api_close(&c);
    if (rc)
        fprintf(stderr, "cartgate referrals %s: %s\n", action, err.msg);
    return rc ? 1 : 0;
}

static const char *const actions[] = {"list",  "show",  "payload", "packet", "approve",
                                      "decline", "cancel", "retry", "send",    "poll"};

int cmd_referrals(int argc, char **argv)
{
    opts o = {.passes = 1, .interval_ms = 1000};
    const cli_cmd cmd = {
        .name = "referrals", .args = "ACTION [ID]", .min_args = 1, .max_args = 2,
        .synopsis = "cartgate referrals ACTION [ID] (--admin URL | --db FILE) [options]",
        .about =
            "Operator control of referrals: through the daemon's API (--admin) with your own\n"
            "API token, or on the SQLite store directly (--db). list, show, approve, decline,\n"
            "cancel and retry work with either; send and poll need --db. Through the API every\n"
            "act is audited with the token's owner, role and address.\n"
            "\n"
            "actions:\n"
            "  list [--state S] [--center ID] [--json]   referrals, oldest first\n"
            "  show ID                                   one referral with its audit trail\n"
            "  payload ID                                the Bundle sent (or to be sent) to the\n"
            "                                            center, as stored\n"
            "  packet ID [--html | --json | --pdf FILE]  the referral packet the center reads:\n"
            "                                            readable text, HTML, its JSON document,\n"
            "                                            or a PDF (for centers taking faxes)\n"
            "  approve ID [--actor NAME] [--reason TEXT] pending_approval -> approved\n"
            "  decline ID --reason TEXT [--actor NAME]   a proposal declined (-> cancelled)\n"
            "  cancel ID [--actor NAME] [--reason TEXT]  -> cancelled\n"
            "  retry ID [--actor NAME]                   failed -> approved\n"
            "  send --centers FILE [--until-idle] [--passes N] [--interval-ms MS]\n"
            "       [--attempts N] [--backoff-ms MS]     deliver approved referrals\n"
            "  poll --centers FILE                       follow the centers' Tasks",
        .notes = "Referrals are proposed by the daemon's screening (cartgate run).",
        .opts = (const cli_opt[]){
            CLI_API_OPTS(&o.admin, &o.token_file, &o.token_env, &o.ca_file),
            {.name = "db", .kind = CLI_PATH, .out = &o.db, .arg = "FILE",
             .help = "on the SQLite store directly (no daemon needed)"},
            CLI_OPT_CONFIG(&o.config, false,
                           "with --db: the daemon's configuration, to compose the summary, route\n"
                           "and package of a proposal the screening stored without them (they are\n"
                           "made when first read, then kept)"),
            CLI_OPT_JSON(&o.json, "list: one JSON object a line (--db), or the API's JSON as is\n"
                                  "(--admin); show --admin: the API's JSON"),
            {.name = "html", .kind = CLI_FLAG, .out = &o.html, .help = "packet: as an HTML page"},
            {.name = "pdf", .kind = CLI_PATH, .out = &o.pdf, .arg = "FILE",
             .help = "packet: write a PDF to FILE (created 0600, replaced atomically)"},
            {.name = "state", .kind = CLI_STR, .out = &o.state, .arg = "S",
             .help = "list: only referrals in state S"},
            {.name = "center", .kind = CLI_STR, .out = &o.center, .arg = "ID",
             .help = "list: only referrals to center ID"},
            {.name = "actor", .kind = CLI_STR, .out = &o.actor, .arg = "NAME", .def = "$USER",
             .help = "approve, decline, cancel, retry with --db: who acts (audited)"},
            {.name = "reason", .kind = CLI_STR, .out = &o.reason, .arg = "TEXT",
             .help = "approve, decline (required), cancel, retry: why (audited)"},
            CLI_OPT_CENTERS(&o.centers, NULL, "send, poll: the center directory"),
            {.name = "until-idle", .kind = CLI_FLAG, .out = &o.until_idle,
             .help = "send: repeat passes until nothing is outstanding"},
            {.name = "passes", .kind = CLI_INT, .out = &o.passes, .arg = "N", .min = 1,
             .max = 1000000, .def = "1", .help = "send: at most N passes"},
            {.name = "interval-ms", .kind = CLI_INT, .out = &o.interval_ms, .arg = "MS", .min = 1,
             .max = 3600000, .def = "1000", .help = "send: pause between passes"},
            {.name = "attempts", .kind = CLI_INT, .out = &o.attempts, .arg = "N", .min = 1,
             .max = 1000, .def = "5",
             .help = "send: HTTP attempts per request, the first included"},
            {.name = "backoff-ms", .kind = CLI_INT, .out = &o.backoff_ms, .arg = "MS", .min = 1,
             .max = 86400000, .def = "2000", .help = "send: backoff after a transient failure"},
            {0},
        },
    };
    int first, prc = cli_parse(&cmd, argc, argv, &first);
    if (prc != CLI_GO)
        return prc;
    const char *action = argv[first];
    bool known = false;
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
        known |= !strcmp(action, actions[i]);
    if (!known) {
        const char *s = fhir_suggest(action, actions, sizeof actions / sizeof actions[0]);
        return cli_error(&cmd, "unknown action \"%s\"%s%s%s", action, s ? " (did you mean " : "",
                         s ? s : "", s ? "?)" : "");
    }
    o.actor_set = o.actor != NULL;
    if (!o.actor)
        o.actor = getenv("USER") ? getenv("USER") : "operator";
    const char *usage = cli_api_target(&o.admin, o.db);
    if (usage)
        return cli_error(&cmd, "%s", usage);
    refer_act act = REFER_ACT_APPROVE;
    bool is_act = refer_act_parse(action, &act) == 0;
    bool is_packet = !strcmp(action, "packet");
    bool needs_id = !strcmp(action, "show") || !strcmp(action, "payload") || is_packet || is_act;
    if ((o.html || o.pdf) && !is_packet)
        return cli_error(&cmd, "--html and --pdf are for the packet action");
    if (is_packet && (o.html + o.json + (o.pdf != NULL)) > 1)
        return cli_error(&cmd, "packet: choose one of --html, --json, --pdf FILE");
    if (is_act && act == REFER_ACT_DECLINE && (!o.reason || !*o.reason))
        return cli_error(&cmd, "decline: needs --reason TEXT");
    int64_t id = 0;
    const char *idarg = first + 1 < argc ? argv[first + 1] : NULL;
    if (needs_id) {
        char *end = NULL;
        if (idarg)
            id = strtoll(idarg, &end, 10);
        if (!idarg || !end || *end || id <= 0)
            return cli_error(&cmd, "%s: needs a referral id%s%s", action, idarg ? ", not " : "",
                             idarg ? idarg : "");
    } else if (idarg) {
        return cli_error(&cmd, "%s: unexpected argument '%s'", action, idarg);
    }
    if (o.admin)
        return run_admin(&cmd, &o, action, id);
    fhir_error err = {0};
    store *s = store_open_existing(o.db, 0, &err);
    if (!s) {
        fprintf(stderr, "cartgate referrals: %s\n", err.msg);
        return 1;
    }
    daemon_proc *composer = NULL;
    if (o.config && !(composer = daemon_composer_new(o.config, s, &err))) {
        fprintf(stderr, "cartgate referrals: %s\n", err.msg);
        store_close(s);
        return 1;
    }
    int rc = 0;
    if (!strcmp(action, "list")) {
        int filter = -1;
        if (o.state) {
            refer_state st;
            if (refer_state_parse(o.state, &st)) {
                store_close(s);
                return cli_error(&cmd, "--state: unknown state: %s", o.state);
            }
            filter = (int)st;
        }
        if (!o.json)
            printf("%-5s %-17s %-24s %-14s %-8s %2s  %s\n", "id", "state", "center", "patient",
                   "urgency", "n", "indications");
        rc = refer_each(s, filter, o.center, print_row, &o, &err) < 0 ? -1 : 0;
    } else if (!strcmp(action, "show")) {
        rc = show(s, id, &err);
    } else if (!strcmp(action, "payload")) {
        refer_record r;
        int f = refer_get(s, id, &r, &err);
        if (f == 0)
            fhir_error_set(&err, "referral %lld does not exist", (long long)id);
        else if (f == 1 && !r.payload)
            no_package(&r, &err);
        else if (f == 1)
            printf("%s\n", r.payload);
        rc = f == 1 && r.payload ? 0 : -1;
        if (f == 1)
            refer_record_free(&r);
    } else if (is_packet) {
        refer_record r;
        int f = refer_get(s, id, &r, &err);
        if (f == 0)
            fhir_error_set(&err, "referral %lld does not exist", (long long)id);
        else if (f == 1 && !r.payload)
            no_package(&r, &err);
        rc = f == 1 && r.payload ? print_packet(r.payload, strlen(r.payload), &o, &err) : -1;
        if (f == 1)
            refer_record_free(&r);
    } else if (is_act) {
        store_actor who = {.name = o.actor, .reason = o.reason};
        rc = refer_do(s, id, act, &who, &err);
    } else if (!strcmp(action, "send")) {
        rc = run_send(s, &o, false, &err);
    } else {
        rc = run_send(s, &o, true, &err);
    }
    if (rc == 0 && needs_id && strcmp(action, "show") && strcmp(action, "payload") && !is_packet)
        printf("referral %lld: %s done\n", (long long)id, action);
    if (rc)
        fprintf(stderr, "cartgate referrals %s: %s\n", action, err.msg);
    daemon_composer_free(composer);
    store_close(s);
    return rc ? 1 : 0;
}
