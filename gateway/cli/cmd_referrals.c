/* cmd_referrals — operator control of referrals, through the daemon's admin API
 * (--admin URL, or $CARTGATE_ADMIN_URL) or on the store directly (--db FILE):
 *   cartgate referrals list|show|approve|cancel|retry --admin URL [--token-file F |
 *                              --token-env VAR] ...   (same options as below)
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
#include <curl/curl.h>
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
    const char *admin, *token_file, *token_env;
    bool json, until_idle, auto_mode, actor_set;
    long passes, interval_ms, attempts, backoff_ms, count;
} opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cartgate referrals <action> (--admin URL | --db FILE) [options]\n"
            "  --admin URL        through the daemon's admin API (http://127.0.0.1:8089;\n"
            "                     loopback http or https); default $CARTGATE_ADMIN_URL\n"
            "  --token-file F     bearer token of the admin API (first line of F)\n"
            "  --token-env VAR    ... or from this variable (default CARTGATE_ADMIN_TOKEN)\n"
            "  --db FILE          on the SQLite store directly (no daemon needed)\n"
            "  list, show, approve, cancel, retry work with either; send, poll and\n"
            "  seed-demo need --db. --json prints the API's JSON as is.\n"
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
        {"admin", required_argument, NULL, 'D'},       {"token-file", required_argument, NULL, 'T'},
        {"token-env", required_argument, NULL, 'E'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
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
        case 'a': o->actor = optarg; o->actor_set = true; break;
        case 'D': o->admin = optarg; break;
        case 'T': o->token_file = optarg; break;
        case 'E': o->token_env = optarg; break;
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
        fhir_buf_init(&b, CMD_REFERRAL_JSON_MAX);
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

/* ---- through the daemon's admin API ---------------------------------------------------- */

#define ADMIN_RESP_MAX (64u << 20) /* bytes of one admin API answer */
#define ADMIN_TOKEN_MAX 4096

typedef struct api_conn {
    char base[1024]; /* URL without trailing '/' */
    char auth[ADMIN_TOKEN_MAX + 32];
} api_conn;

/* http:// only to loopback (the token must not cross a network in clear), https:// anywhere. */
static int api_check_url(const char *url, api_conn *c, fhir_error *err)
{
    size_t n = strlen(url);
    while (n && url[n - 1] == '/')
        n--;
    if (n == 0 || n >= sizeof c->base)
        return fhir_error_set(err, "--admin: bad URL \"%s\"", url);
    bool ok = !strncmp(url, "https://", 8);
    if (!ok && !strncmp(url, "http://", 7)) {
        const char *h = url + 7;
        static const char *const loop[] = {"127.", "localhost", "[::1]"};
        for (size_t i = 0; i < sizeof loop / sizeof loop[0] && !ok; i++) {
            size_t l = strlen(loop[i]);
            if (!strncmp(h, loop[i], l) && (loop[i][l - 1] == '.' || h[l] == ':' || h[l] == '/' || !h[l]))
                ok = true;
        }
    }
    if (!ok)
        return fhir_error_set(err, "--admin %s: only https:// or http:// to a loopback address "
                                   "(127.x, localhost, [::1])", url);
    memcpy(c->base, url, n);
    c->base[n] = 0;
    return 0;
}

static int api_token(const opts *o, api_conn *c, fhir_error *err)
{
    char tok[ADMIN_TOKEN_MAX + 2] = "";
    if (o->token_file) {
        FILE *f = fopen(o->token_file, "r");
        if (!f)
            return fhir_error_set(err, "--token-file %s: cannot open", o->token_file);
        if (!fgets(tok, sizeof tok, f))
            tok[0] = 0;
        fclose(f);
    } else {
        const char *var = o->token_env ? o->token_env : "CARTGATE_ADMIN_TOKEN";
        const char *v = getenv(var);
        if (!v || !*v)
            return fhir_error_set(err, "no admin token: set %s or use --token-file F / --token-env VAR",
                                  var);
        if (strlen(v) > ADMIN_TOKEN_MAX)
            return fhir_error_set(err, "admin token in %s is longer than %d bytes", var, ADMIN_TOKEN_MAX);
        snprintf(tok, sizeof tok, "%s", v);
    }
    size_t n = strlen(tok);
    while (n && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' ' || tok[n - 1] == '\t'))
        tok[--n] = 0;
    if (n == 0)
        return fhir_error_set(err, "admin token is empty%s%s", o->token_file ? " in " : "",
                              o->token_file ? o->token_file : "");
    if (n > ADMIN_TOKEN_MAX)
        return fhir_error_set(err, "admin token is longer than %d bytes", ADMIN_TOKEN_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)tok[i] < 0x21 || tok[i] == 0x7f)
            return fhir_error_set(err, "admin token contains a space or control character");
    snprintf(c->auth, sizeof c->auth, "Authorization: Bearer %s", tok);
    memset(tok, 0, sizeof tok);
    return 0;
}

static size_t api_write(char *p, size_t size, size_t nmemb, void *ud)
{
    fhir_buf *b = ud;
    size_t n = size * nmemb;
    if (fhir_buf_append(b, p, n) != 0 || b->overflow)
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    return n;
}

/* The "message" of the API's {"error":{...}} body, or a short excerpt of the body; arena a. */
static const char *api_error_message(fhir_arena *a, const fhir_buf *b)
{
    fhir_error e = {0};
    fhir_node *n = b->len ? fhir_json_parse(a, b->data, b->len, NULL, &e) : NULL;
    const char *m = fhir_node_path_str(n, "error.message");
    if (m)
        return m;
    return b->len ? fhir_arena_sprintf(a, "%.200s", b->data) : "(empty body)";
}

/* One request; *status is the HTTP status. 2xx returns 0 with the body in out; anything else
 * is an error whose message names the status and its meaning. id > 0 names the referral. */
static int api_call(const api_conn *c, const char *method, const char *path, int64_t id,
                    fhir_buf *out, long *status, fhir_error *err)
{
    static bool inited;
    if (!inited) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return fhir_error_set(err, "curl_global_init failed");
        inited = true;
    }
    char url[2048];
    snprintf(url, sizeof url, "%s%s", c->base, path);
    CURL *h = curl_easy_init();
    if (!h)
        return fhir_error_set(err, "curl_easy_init failed");
    struct curl_slist *hd = curl_slist_append(NULL, c->auth);
    hd = curl_slist_append(hd, "Accept: application/json");
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, api_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 120000L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)ADMIN_RESP_MAX);
    if (!strcmp(method, "POST")) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    }
    CURLcode cc = curl_easy_perform(h);
    *status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    if (cc != CURLE_OK) {
        const char *why = *ebuf ? ebuf : curl_easy_strerror(cc);
        if (cc == CURLE_COULDNT_CONNECT)
            return fhir_error_set(err, "cannot connect to the admin API at %s (is the daemon running?): %s",
                                  c->base, why);
        if ((cc == CURLE_WRITE_ERROR && out->overflow) || cc == CURLE_FILESIZE_EXCEEDED)
            return fhir_error_set(err, "admin API answer larger than %u bytes", ADMIN_RESP_MAX);
        return fhir_error_set(err, "admin API %s %s: %s", method, url, why);
    }
    if (*status >= 200 && *status < 300)
        return 0;
    fhir_arena *a = fhir_arena_new(0);
    const char *m = api_error_message(a, out);
    char what[64] = "";
    if (id > 0)
        snprintf(what, sizeof what, "referral %lld: ", (long long)id);
    switch (*status) {
    case 401:
        fhir_error_set(err, "401 Unauthorized: the admin API refused the token (check --token-file / "
                            "--token-env): %s", m);
        break;
    case 404:
        fhir_error_set(err, "404 Not Found: %s%s", what, id > 0 ? "no such referral" : m);
        break;
    case 409:
        fhir_error_set(err, "409 Conflict: %sillegal state transition: %s", what, m);
        break;
    default:
        fhir_error_set(err, "HTTP %ld from the admin API (%s %s): %s", *status, method, path, m);
    }
    fhir_arena_free(a);
    return -1;
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

static fhir_node *api_parse(fhir_arena *a, const fhir_buf *b, fhir_error *err)
{
    fhir_node *n = fhir_json_parse(a, b->len ? b->data : "", b->len, NULL, err);
    if (!n)
        fhir_error_prefix(err, "admin API answer is not JSON: ");
    return n;
}

static int api_list(const api_conn *c, const opts *o, fhir_error *err)
{
    char path[256] = "/api/v1/referrals";
    if (o->state) {
        refer_state st;
        if (refer_state_parse(o->state, &st))
            return fhir_error_set(err, "unknown state \"%s\"", o->state);
        snprintf(path, sizeof path, "/api/v1/referrals?state=%s", refer_state_name(st));
    }
    fhir_buf b;
    fhir_buf_init(&b, ADMIN_RESP_MAX);
    long status;
    int rc = api_call(c, "GET", path, 0, &b, &status, err);
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = rc ? NULL : api_parse(a, &b, err);
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
        char cnt[32];
        snprintf(cnt, sizeof cnt, "%zu", n);
        char *s = list ? (fhir_node_set(a, out, "count", fhir_node_new_num(a, cnt, strlen(cnt))),
                          fhir_json_to_string(out, FHIR_JSON_COMPACT, 0))
                       : NULL;
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
            printf("%-5ld %-17s %-24s %-14s %-8s %2ld  %s%s%s\n", jint(r, "id"), jstr(r, "state"),
                   jstr(r, "center"), jstr(r, "patient"), jstr(r, "urgency"), jint(r, "attempts"),
                   jstr(r, "indications"), le ? "  last error: " : "", le ? le : "");
        }
    }
    fhir_arena_free(a);
    fhir_buf_free(&b);
    return rc;
}

static void print_or_dash(const char *label, const char *v)
{
    printf("  %-12s %s\n", label, v && *v ? v : "-");
}

static int api_one(const api_conn *c, const opts *o, const char *action, int64_t id, fhir_error *err)
{
    char path[128];
    bool show = !strcmp(action, "show");
    if (show)
        snprintf(path, sizeof path, "/api/v1/referrals/%lld", (long long)id);
    else
        snprintf(path, sizeof path, "/api/v1/referrals/%lld/%s", (long long)id, action);
    fhir_buf b;
    fhir_buf_init(&b, ADMIN_RESP_MAX);
    long status;
    int rc = api_call(c, show ? "GET" : "POST", path, id, &b, &status, err);
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *r = rc ? NULL : api_parse(a, &b, err);
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
        printf("audit: not served by the admin API (cartgate referrals show --db FILE %lld)\n", (long long)id);
    }
    fhir_arena_free(a);
    fhir_buf_free(&b);
    return rc;
}

static int run_admin(const opts *o, const char *action, int64_t id)
{
    fhir_error err = {0};
    api_conn c;
    bool known = !strcmp(action, "list") || !strcmp(action, "show") || !strcmp(action, "approve") ||
                 !strcmp(action, "cancel") || !strcmp(action, "retry");
    if (!known) {
        if (!strcmp(action, "send") || !strcmp(action, "poll") || !strcmp(action, "seed-demo"))
            fprintf(stderr, "cartgate referrals %s: needs --db FILE (not available through the admin API)\n",
                    action);
        else
            fprintf(stderr, "cartgate referrals: unknown action \"%s\"\n", action);
        return 2;
    }
    if (api_check_url(o->admin, &c, &err) || api_token(o, &c, &err)) {
        fprintf(stderr, "cartgate referrals %s: %s\n", action, err.msg);
        return 1;
    }
    if ((o->actor_set || o->reason) && strcmp(action, "list") && strcmp(action, "show"))
        fprintf(stderr, "cartgate referrals %s: note: the admin API records the actor \"admin-api\"; "
                        "--actor/--reason apply only with --db\n", action);
    int rc = !strcmp(action, "list") ? api_list(&c, o, &err) : api_one(&c, o, action, id, &err);
    memset(c.auth, 0, sizeof c.auth);
    if (rc)
        fprintf(stderr, "cartgate referrals %s: %s\n", action, err.msg);
    return rc ? 1 : 0;
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
    if (!o.db && !o.admin && getenv("CARTGATE_ADMIN_URL") && *getenv("CARTGATE_ADMIN_URL"))
        o.admin = getenv("CARTGATE_ADMIN_URL");
    if (o.db && o.admin) {
        fprintf(stderr, "cartgate referrals: use either --db FILE or --admin URL, not both\n");
        return 2;
    }
    if (!o.db && !o.admin) {
        fprintf(stderr, "cartgate referrals: --admin URL (or $CARTGATE_ADMIN_URL) or --db FILE is required\n");
        usage(stderr);
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
    if (o.admin)
        return run_admin(&o, action, id);
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
