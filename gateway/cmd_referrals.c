/* cmd_referrals — operator control of referrals, working on the store directly:
 *   cartgate referrals list    --db FILE [--state S] [--center ID] [--json]
 *   cartgate referrals show    --db FILE ID
 *   cartgate referrals approve --db FILE ID [--actor NAME]
 *   cartgate referrals cancel  --db FILE ID [--actor NAME] [--reason TEXT]
 *   cartgate referrals retry   --db FILE ID [--actor NAME]
 *   cartgate referrals send    --db FILE --centers FILE [--until-idle] [--passes N]
 *                              [--interval-ms MS] [--attempts N] [--backoff-ms MS]
 *   cartgate referrals poll    --db FILE --centers FILE
 *   cartgate referrals seed-demo --db FILE --centers FILE --center ID --count N [--auto]
 *        (fictional patients with complete payloads, for demos and delivery tests) */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bser.h"
#include "centers.h"
#include "cmd.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "referral.h"
#include "sender.h"
#include "store.h"

typedef struct opts {
    const char *db, *centers, *state, *center, *actor, *reason;
    bool json, until_idle, auto_mode;
    long passes, interval_ms, attempts, backoff_ms, count;
} opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cartgate referrals <action> --db FILE [options]\n"
            "  list [--state S] [--center ID] [--json]   referrals, oldest first\n"
            "  show ID                                   one referral with its audit trail\n"
            "  approve ID [--actor NAME]                 pending_approval -> approved\n"
            "  cancel ID [--actor NAME] [--reason TEXT]  -> cancelled\n"
            "  retry ID [--actor NAME]                   failed -> approved\n"
            "  send --centers FILE [--until-idle] [--passes N] [--interval-ms MS]\n"
            "       [--attempts N] [--backoff-ms MS]     deliver approved referrals\n"
            "  poll --centers FILE                       follow the centers' Tasks\n"
            "  seed-demo --centers FILE --center ID --count N [--auto]\n"
            "                                            fictional referrals with payloads\n");
}

static int parse(int argc, char **argv, opts *o)
{
    static const struct option lo[] = {
        {"db", required_argument, NULL, 'd'},          {"centers", required_argument, NULL, 'c'},
        {"state", required_argument, NULL, 's'},       {"center", required_argument, NULL, 'C'},
        {"actor", required_argument, NULL, 'a'},       {"reason", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},              {"until-idle", no_argument, NULL, 'u'},
        {"passes", required_argument, NULL, 'p'},      {"interval-ms", required_argument, NULL, 'i'},
        {"attempts", required_argument, NULL, 'A'},    {"backoff-ms", required_argument, NULL, 'b'},
        {"count", required_argument, NULL, 'n'},       {"auto", no_argument, NULL, 'U'},
        {"help", no_argument, NULL, 'h'},              {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    o->interval_ms = 1000;
    o->passes = 1;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'd': o->db = optarg; break;
        case 'c': o->centers = optarg; break;
        case 's': o->state = optarg; break;
        case 'C': o->center = optarg; break;
        case 'a': o->actor = optarg; break;
        case 'r': o->reason = optarg; break;
        case 'j': o->json = true; break;
        case 'u': o->until_idle = true; break;
        case 'p': o->passes = atol(optarg); break;
        case 'i': o->interval_ms = atol(optarg); break;
        case 'A': o->attempts = atol(optarg); break;
        case 'b': o->backoff_ms = atol(optarg); break;
        case 'n': o->count = atol(optarg); break;
        case 'U': o->auto_mode = true; break;
        case 'h': usage(stdout); exit(0);
        default: return -1;
        }
    }
    if (!o->actor)
        o->actor = getenv("USER") ? getenv("USER") : "operator";
    return 0;
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
        fhir_buf b;
        fhir_buf_init(&b, 1u << 20);
        fhir_buf_printf(&b, "{\"id\":%lld,\"placer_id\":", (long long)r->id);
        fhir_json_write_string(&b, r->placer_id, strlen(r->placer_id));
        fhir_buf_puts(&b, ",\"patient_id\":");
        fhir_json_write_string(&b, r->patient_id, strlen(r->patient_id));
        fhir_buf_puts(&b, ",\"center_id\":");
        fhir_json_write_string(&b, r->center_id, strlen(r->center_id));
        fhir_buf_printf(&b, ",\"state\":\"%s\",\"mode\":\"%s\",\"urgency\":\"%s\",\"attempts\":%d,"
                            "\"updated\":\"%s\",\"indications\":",
                        refer_state_name(r->state), r->mode, r->urgency, r->attempts, upd);
        fhir_json_write_string(&b, r->indications, strlen(r->indications));
        if (r->last_error) {
            fhir_buf_puts(&b, ",\"last_error\":");
            fhir_json_write_string(&b, r->last_error, strlen(r->last_error));
        }
        fhir_buf_puts(&b, "}\n");
        fputs(fhir_buf_cstr(&b), stdout);
        fhir_buf_free(&b);
    } else {
        printf("%-5lld %-17s %-24s %-14s %-8s %2d  %s%s%s\n", (long long)r->id,
               refer_state_name(r->state), r->center_id, r->patient_id, r->urgency, r->attempts,
               r->indications, r->last_error ? "  last error: " : "",
               r->last_error ? r->last_error : "");
    }
    return 0;
}

static int print_audit(void *ctx, int64_t ts, const char *actor, const char *action,
                       const char *from, const char *to, const char *detail)
{
    (void)ctx;
    char t[40];
    fmt_ms(ts, t, sizeof t);
    printf("  %s  %-12s %-14s %s -> %s%s%s\n", t, actor, action, from ? from : "-",
           to ? to : "-", detail ? "  " : "", detail ? detail : "");
    return 0;
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
    return store_audit_each(s, id, print_audit, NULL, err) < 0 ? -1 : 0;
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

/* ---- seed-demo: fictional patients with complete payloads --------------------------- */

static int seed_demo(store *s, const opts *o, fhir_error *err)
{
    if (!o->centers || !o->center || o->count <= 0)
        return fhir_error_set(err, "seed-demo needs --centers FILE --center ID --count N");
    centers_dir *dir = centers_load(o->centers, err);
    if (!dir)
        return -1;
    const centers_center *c = centers_find(dir, o->center);
    if (!c) {
        centers_free(dir);
        return fhir_error_set(err, "center \"%s\" is not in %s", o->center, o->centers);
    }
    static const char *const given[] = {"Avery", "Blake", "Casey", "Devon", "Emery", "Finley"};
    static const char *const family[] = {"Samplewood", "Testington", "Placeholder", "Exampleton"};
    int rc = 0;
    for (long i = 0; i < o->count && rc == 0; i++) {
        fhir_arena *a = fhir_arena_new(0);
        char pid[64], json[2048];
        snprintf(pid, sizeof pid, "demo-%s-%04ld", c->id, i + 1);
        snprintf(json, sizeof json,
                 "{\"resourceType\":\"Patient\",\"id\":\"%s\",\"identifier\":[{\"system\":"
                 "\"urn:cartgate:demo:mrn\",\"value\":\"DEMO-%06ld\"}],\"name\":[{\"family\":"
                 "\"%s\",\"given\":[\"%s\"]}],\"gender\":\"%s\",\"birthDate\":\"%d-0%ld-1%ld\","
                 "\"address\":[{\"city\":\"Rochester\",\"state\":\"MN\",\"postalCode\":\"55902\"}]}",
                 pid, i + 1, family[i % 4], given[i % 6], i % 2 ? "female" : "male",
                 1950 + (int)(i % 30), 1 + i % 9, i % 10);
        fhir_node *pt = fhir_json_parse(a, json, strlen(json), NULL, err);
        snprintf(json, sizeof json,
                 "{\"resourceType\":\"Condition\",\"id\":\"cond-%s\",\"clinicalStatus\":"
                 "{\"coding\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/"
                 "condition-clinical\",\"code\":\"relapse\"}]},\"code\":{\"text\":\"Diffuse "
                 "large B-cell lymphoma\"},\"subject\":{\"reference\":\"Patient/%s\"}}",
                 pid, pid);
        fhir_node *cond = pt ? fhir_json_parse(a, json, strlen(json), NULL, err) : NULL;
        if (!pt || !cond) {
            fhir_arena_free(a);
            rc = -1;
            break;
        }
        const char *ind[] = {"axi-cel:lbcl_2l"};
        char placer[REFER_PLACER_MAX];
        if (refer_placer_id("demo-site", pid, ind, 1, c->id, placer, err)) {
            fhir_arena_free(a);
            rc = -1;
            break;
        }
        bser_input in = {
            .id_system_base = "urn:cartgate:demo-site", .placer_id = placer,
            .site_id = "demo-site", .site_name = "Demo Community Hospital (fictional)",
            .center = c, .patient_id = pid, .patient = pt, .condition = cond,
            .reason_text = "Refractory LBCL after first line: CAR T evaluation (axi-cel)",
            .summary_text = "Demo referral (fictional patient): eligible for axi-cel, LBCL 2L.",
            .verdict_json = "{\"category\":\"eligible\",\"demo\":true}", .urgency = "urgent",
            .authored_ms = fhir_clock_now_ms(),
        };
        fhir_node *b = bser_build(a, &in, err);
        char *payload = b ? fhir_json_to_string(b, FHIR_JSON_COMPACT, 0) : NULL;
        if (!payload) {
            fhir_arena_free(a);
            rc = -1;
            break;
        }
        refer_request rq = {
            .site_id = "demo-site", .patient_id = pid, .center_id = c->id,
            .indications = ind, .n_indications = 1, .urgency = "urgent",
            .explanation = in.summary_text, .verdict_json = in.verdict_json,
            .payload = payload, .mode = o->auto_mode ? REFER_MODE_AUTO : REFER_MODE_APPROVAL,
            .actor = "seed-demo",
        };
        int64_t id;
        rc = refer_create(s, &rq, &id, NULL, err);
        free(payload);
        fhir_arena_free(a);
    }
    centers_free(dir);
    if (rc == 0)
        printf("seeded=%ld center=%s\n", o->count, o->center);
    return rc;
}

int cmd_referrals(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *action = argv[1];
    opts o;
    if (parse(argc - 1, argv + 1, &o)) {
        usage(stderr);
        return 2;
    }
    if (!o.db) {
        fprintf(stderr, "cartgate referrals: --db FILE is required\n");
        return 2;
    }
    bool needs_id = !strcmp(action, "show") || !strcmp(action, "approve") ||
                    !strcmp(action, "cancel") || !strcmp(action, "retry");
    int64_t id = 0;
    if (needs_id) {
        char *end = NULL;
        const char *arg = optind < argc - 1 ? argv[1 + optind] : NULL;
        if (arg)
            id = strtoll(arg, &end, 10);
        if (!arg || !end || *end || id <= 0) {
            fprintf(stderr, "cartgate referrals %s: needs a referral id\n", action);
            return 2;
        }
    }
    fhir_error err = {0};
    store *s = store_open(o.db, 0, &err);
    if (!s) {
        fprintf(stderr, "cartgate referrals: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    if (!strcmp(action, "list")) {
        int filter = -1;
        if (o.state) {
            refer_state st;
            if (refer_state_parse(o.state, &st)) {
                fprintf(stderr, "cartgate referrals: unknown state \"%s\"\n", o.state);
                store_close(s);
                return 2;
            }
            filter = (int)st;
        }
        if (!o.json)
            printf("%-5s %-17s %-24s %-14s %-8s %2s  %s\n", "id", "state", "center", "patient",
                   "urgency", "n", "indications");
        rc = refer_each(s, filter, o.center, print_row, &o, &err) < 0 ? -1 : 0;
    } else if (!strcmp(action, "show")) {
        rc = show(s, id, &err);
    } else if (!strcmp(action, "approve")) {
        rc = refer_approve(s, id, o.actor, &err);
    } else if (!strcmp(action, "cancel")) {
        rc = refer_cancel(s, id, o.actor, o.reason, &err);
    } else if (!strcmp(action, "retry")) {
        rc = refer_retry(s, id, o.actor, &err);
    } else if (!strcmp(action, "send")) {
        rc = run_send(s, &o, false, &err);
    } else if (!strcmp(action, "poll")) {
        rc = run_send(s, &o, true, &err);
    } else if (!strcmp(action, "seed-demo")) {
        rc = seed_demo(s, &o, &err);
    } else {
        fprintf(stderr, "cartgate referrals: unknown action \"%s\"\n", action);
        store_close(s);
        usage(stderr);
        return 2;
    }
    if (rc == 0 && needs_id && strcmp(action, "show"))
        printf("referral %lld: %s done\n", (long long)id, action);
    if (rc)
        fprintf(stderr, "cartgate referrals %s: %s\n", action, err.msg);
    store_close(s);
    return rc ? 1 : 0;
}
