/* intake — the BSeR recipient endpoint of a center and its notices. See intake.h. */
#include "intake.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fhir_alloc.h"
#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "intake_auth.h"
#include "intake_bundle.h"
#include "intake_task.h"

#define FHIR_JSON_TYPE "application/fhir+json; charset=utf-8"

struct intake {
    intake_env env;
    intake_auth *auth;
    char *public_url;
    int waiting_days;
    size_t max_body;               /* of a Bundle POSTed to /fhir (the listener's cap is 1 MiB) */
    intake_stats stats;
};

/* ---- answers ------------------------------------------------------------------------------- */

/* An OperationOutcome with one error issue (code: invalid, not-found, security, conflict,
 * processing, login). */
static void oo(serve_req *r, int status, const char *code, const char *msg)
{
    fhir_buf b;
    fhir_buf_init(&b, 8192);
    fhir_buf_printf(&b, "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":\"error\",\"code\":\"%s\","
                        "\"diagnostics\":",
                    code);
    fhir_json_write_string(&b, msg, strlen(msg));
    fhir_buf_puts(&b, "}]}\n");
    serve_reply(r, status, FHIR_JSON_TYPE, b.data, b.len);
    fhir_buf_free(&b);
}

static const char *oo_code(int status)
{
    switch (status) {
    case 401: return "login";
    case 403: return "forbidden";
    case 404: return "not-found";
    case 409: return "conflict";
    case 412: return "conflict";
    case 500: return "exception";
    default: return status == 422 ? "processing" : "invalid";
    }
}

static void oo_err(serve_req *r, const fhir_error *e)
{
    int st = e->code >= 400 && e->code < 600 ? e->code : 500;
    oo(r, st, oo_code(st), e->msg[0] ? e->msg : "failed");
}

/* The referring site of the request (client_out INTAKE_AUTH_CLIENT_MAX), or answers 401. */
static bool site_of(intake *in, serve_req *r, char *client_out)
{
    const char *h = serve_header(r, "Authorization");
    fhir_error e;
    fhir_error_clear(&e);
    int f = 0;
    if (h && !strncasecmp(h, "Bearer ", 7))
        f = intake_auth_check(in->auth, in->env.st, h + 7, client_out, &e);
    if (f == 1)
        return true;
    if (f < 0) {
        oo_err(r, &e);
        return false;
    }
    in->stats.unauthorized++;
    serve_add_header(r, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
    oo(r, 401, "login",
       h ? "the access token is unknown or expired: get a new one at the token endpoint (SMART Backend Services)"
         : "no access token: referring sites authenticate with SMART Backend Services at /fhir/auth/token");
    return false;
}

/* The head check of the site routes (serve_route_head_check): a bearer token of a registered
 * site, as site_of() reads it; a store error is left to site_of() (500). Counts nothing. */
static bool site_head_ok(const serve_req *r, void *ud)
{
    intake *in = ud;
    const char *h = serve_header(r, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7))
        return false;
    char client[INTAKE_AUTH_CLIENT_MAX];
    fhir_error e;
    fhir_error_clear(&e);
    return intake_auth_check(in->auth, in->env.st, h + 7, client, &e) != 0;
}

/* ---- discovery ---------------------------------------------------------------------------- */

static void h_metadata(serve_req *r, void *ud)
{
    intake *in = ud;
    char now[40];
    fhir_clock_format_instant(fhir_clock_now_ms(), now, sizeof now);
    fhir_buf b;
    fhir_buf_init(&b, 16384);
    fhir_buf_printf(&b,
                    "{\"resourceType\":\"CapabilityStatement\",\"status\":\"active\",\"date\":\"%s\",\"kind\":\"instance\","
                    "\"software\":{\"name\":\"cartgate\",\"version\":\"%s\"},"
                    "\"implementation\":{\"description\":\"cartgate at a CAR T center: BSeR referral recipient\"},"
                    "\"fhirVersion\":\"4.0.1\",\"format\":[\"json\"],"
                    "\"rest\":[{\"mode\":\"server\",\"security\":{\"service\":[{\"coding\":[{\"system\":"
                    "\"http://terminology.hl7.org/CodeSystem/restful-security-service\",\"code\":\"SMART-on-FHIR\"}]}],"
                    "\"extension\":[{\"url\":\"http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris\","
                    "\"extension\":[{\"url\":\"token\",\"valueUri\":",
                    now, CARTGATE_VERSION);
    fhir_json_write_string(&b, intake_auth_token_url(in->auth), strlen(intake_auth_token_url(in->auth)));
    fhir_buf_puts(&b, "}]}]},\"interaction\":[{\"code\":\"transaction\"}],\"resource\":[");
    static const char *const TYPES[] = {"ServiceRequest", "Task"};
    for (size_t i = 0; i < 2; i++)
        fhir_buf_printf(&b,
                        "%s{\"type\":\"%s\",\"interaction\":[{\"code\":\"read\"},{\"code\":\"search-type\"},"
                        "{\"code\":\"history-instance\"}%s],"
                        "\"versioning\":\"versioned\",\"conditionalCreate\":true,"
                        "\"searchParam\":[{\"name\":\"identifier\",\"type\":\"token\"},"
                        "{\"name\":\"_lastUpdated\",\"type\":\"date\"},{\"name\":\"_count\",\"type\":\"number\"}]}",
                        i ? "," : "", TYPES[i], i ? ",{\"code\":\"update\"}" : "");
    fhir_buf_puts(&b, "]}]}\n");
    serve_reply(r, 200, FHIR_JSON_TYPE, b.data, b.len);
    fhir_buf_free(&b);
}

static void h_smart(serve_req *r, void *ud)
{
    intake *in = ud;
    fhir_buf b;
    fhir_buf_init(&b, 4096);
    fhir_buf_puts(&b, "{\"token_endpoint\":");
    fhir_json_write_string(&b, intake_auth_token_url(in->auth), strlen(intake_auth_token_url(in->auth)));
    fhir_buf_puts(&b, ",\"grant_types_supported\":[\"client_credentials\"],"
                      "\"token_endpoint_auth_methods_supported\":[\"private_key_jwt\"],"
                      "\"token_endpoint_auth_signing_alg_values_supported\":[\"RS384\",\"ES384\"],"
                      "\"scopes_supported\":[\"system/ServiceRequest.rs\",\"system/Task.rsu\",\"system/*.c\"],"
                      "\"capabilities\":[\"client-confidential-asymmetric\"]}\n");
    serve_reply(r, 200, "application/json", b.data, b.len);
    fhir_buf_free(&b);
}

static void token_error(serve_req *r, int status, const char *code, const char *msg)
{
    fhir_buf b;
    fhir_buf_init(&b, 4096);
    fhir_buf_printf(&b, "{\"error\":\"%s\",\"error_description\":", code);
    fhir_json_write_string(&b, msg, strlen(msg));
    fhir_buf_puts(&b, "}\n");
    serve_reply(r, status, "application/json", b.data, b.len);
    fhir_buf_free(&b);
}

static void h_token(serve_req *r, void *ud)
{
    intake *in = ud;
    const char *gt = serve_form(r, "grant_type");
    const char *at = serve_form(r, "client_assertion_type");
    const char *as = serve_form(r, "client_assertion");
    if (!gt || strcmp(gt, "client_credentials")) {
        in->stats.unauthorized++;
        token_error(r, 400, "unsupported_grant_type", "grant_type must be client_credentials");
        return;
    }
    if (!at || strcmp(at, "urn:ietf:params:oauth:client-assertion-type:jwt-bearer") || !as) {
        in->stats.unauthorized++;
        token_error(r, 400, "invalid_request",
                    "a signed client assertion is required (client_assertion_type "
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer)");
        return;
    }
    char tok[INTAKE_AUTH_TOKEN_MAX], client[INTAKE_AUTH_CLIENT_MAX];
    fhir_error e;
    fhir_error_clear(&e);
    if (intake_auth_grant(in->auth, in->env.st, as, tok, client, &e)) {
        if (e.code == 500) {
            token_error(r, 500, "server_error", "the token could not be stored");
            return;
        }
        in->stats.unauthorized++;
        fhir_log(FHIR_LOG_WARN, "intake.token_refused", "source=%s", serve_source(r));
        token_error(r, 401, "invalid_client", e.msg);
        return;
    }
    in->stats.tokens++;
    fhir_log(FHIR_LOG_INFO, "intake.token", "client=%s ttl_s=%d", client, intake_auth_ttl(in->auth));
    const char *scope = serve_form(r, "scope");
    fhir_buf b;
    fhir_buf_init(&b, 4096);
    fhir_buf_printf(&b, "{\"access_token\":\"%s\",\"token_type\":\"bearer\",\"expires_in\":%d,\"scope\":", tok,
                    intake_auth_ttl(in->auth));
    const char *sc = scope && *scope && strlen(scope) < 1024 ? scope : "system/*.c system/ServiceRequest.rs system/Task.rsu";
    fhir_json_write_string(&b, sc, strlen(sc));
    fhir_buf_puts(&b, "}\n");
    serve_reply(r, 200, "application/json", b.data, b.len);
    fhir_buf_free(&b);
}

/* ---- notices ------------------------------------------------------------------------------- */

typedef struct ref_info {
    bool found;
    char priority[16], status[32];
    int64_t received_ms;
} ref_info;

static int ref_info_cb(void *ctx, const store_intake_ref *r)
{
    ref_info *x = ctx;
    x->found = true;
    snprintf(x->priority, sizeof x->priority, "%s", r->priority ? r->priority : "routine");
    snprintf(x->status, sizeof x->status, "%s", r->task_status ? r->task_status : "");
    x->received_ms = r->received_ms;
    return 0;
}

/* One notice about referral id (its number, urgency and the inbox link; never PHI). */
static int notice(intake *in, int64_t id, const char *priority, bool waiting, fhir_error *err)
{
    if (!in->env.nt)
        return 0;
    char key[64], summary[160], link[64];
    snprintf(key, sizeof key, "intake-%s:%lld", waiting ? "waiting" : "new", (long long)id);
    if (waiting)
        snprintf(summary, sizeof summary, "CAR T referral no. %lld (%s) waiting %d business days or more without an answer",
                 (long long)id, priority, in->waiting_days);
    else
        snprintf(summary, sizeof summary, "new CAR T referral no. %lld (%s) received", (long long)id, priority);
    snprintf(link, sizeof link, "/ui/intake/%lld", (long long)id);
    const char *keys[1] = {key};
    notify_notice n = {.kind = waiting ? "intake_waiting" : "intake_new_referral", .keys = keys, .n_keys = 1,
                       .urgency = priority, .summary = summary, .link_path = link};
    int64_t queued = 0;
    if (notify_post(in->env.nt, in->env.st, &n, &queued, err))
        return -1;
    if (queued)
        notify_kick(in->env.nt);
    return 0;
}

typedef struct scan_ctx {
    int64_t ids[256];
    char prio[256][16];
    bool waiting[256];
    size_t n;
    int64_t now;
    int days;
} scan_ctx;

static int scan_cb(void *ctx, const store_intake_ref *r)
{
    scan_ctx *c = ctx;
    if (c->n == sizeof c->ids / sizeof c->ids[0])
        return 1;
    c->ids[c->n] = r->id;
    snprintf(c->prio[c->n], sizeof c->prio[0], "%s", r->priority ? r->priority : "routine");
    /* unanswered: received (or on hold for more information) */
    bool open = r->task_status && (!strcmp(r->task_status, "received") || !strcmp(r->task_status, "requested"));
    c->waiting[c->n] = open && notify_business_days(r->received_ms, c->now) >= c->days;
    c->n++;
    return 0;
}

int intake_scan(intake *in, fhir_error *err)
{
    if (!in->env.nt)
        return 0;
    scan_ctx *c = fhir_xcalloc(1, sizeof *c);
    c->now = fhir_clock_now_ms();
    c->days = in->waiting_days;
    int rc = 0;
    if (store_intake_ref_list(in->env.st, true, 256, scan_cb, c, err) < 0)
        rc = -1;
    for (size_t i = 0; !rc && i < c->n; i++)
        if (notice(in, c->ids[i], c->prio[i], false, err) || (c->waiting[i] && notice(in, c->ids[i], c->prio[i], true, err)))
            rc = -1;
    free(c);
    return rc;
}

/* ---- the FHIR interactions ------------------------------------------------------------------ */

const char *const intake_refuse_reasons[INTAKE_N_REFUSE] = {"not_json", "not_transaction", "invalid",
                                                             "ambiguous_identifier", "too_large"};

/* Counts a refused POST /fhir by its HTTP status (the parse failure is not_json). */
static void count_refused(intake *in, int status, bool not_json)
{
    size_t i = not_json ? 0 : status == 400 ? 1 : status == 412 ? 3 : status == 413 ? 4 : 2;
    in->stats.refused++;
    in->stats.refused_by[i]++;
}

/* A Bundle over the cap (serve.h): refused unread, nothing stored. */
static void h_too_large(serve_req *r, void *ud)
{
    intake *in = ud;
    count_refused(in, 413, false);
    fhir_log(FHIR_LOG_WARN, "intake.refused", "status=413 max_body_mib=%zu", in->max_body >> 20);
    char msg[160];
    snprintf(msg, sizeof msg, "the Bundle is larger than this center accepts (%zu MiB, intake.max_body_mib)",
             in->max_body >> 20);
    oo(r, 413, "too-long", msg);
}

static void h_post(serve_req *r, void *ud)
{
    intake *in = ud;
    char client[INTAKE_AUTH_CLIENT_MAX];
    if (!site_of(in, r, client))
        return;
    size_t len = 0;
    const char *body = serve_body(r, &len);
    fhir_error e;
    fhir_error_clear(&e);
    fhir_arena *a = fhir_arena_new(0);
    fhir_json_limits lim = {.max_bytes = len + 1};
    const fhir_node *bundle = body && len ? fhir_json_parse(a, body, len, &lim, &e) : NULL;
    if (!bundle) {
        fhir_arena_free(a);
        count_refused(in, 400, true);
        char msg[FHIR_ERROR_MAX + 40];
        snprintf(msg, sizeof msg, "the body is not JSON: %s", len ? e.msg : "empty");
        fhir_log(FHIR_LOG_WARN, "intake.refused", "client=%s status=400", client);
        oo(r, 400, "invalid", msg);
        return;
    }
    fhir_buf resp;
    fhir_buf_init(&resp, INTAKE_RESPONSE_MAX);
    intake_tx_result res;
    int rc = intake_transaction(in->env.st, bundle, client, &resp, &res, &e);
    fhir_arena_free(a);
    if (rc) {
        fhir_buf_free(&resp);
        if (e.code != 500)
            count_refused(in, e.code, false);
        fhir_log(e.code == 500 ? FHIR_LOG_ERROR : FHIR_LOG_WARN, "intake.refused", "client=%s status=%d", client,
                 e.code);
        oo_err(r, &e);
        return;
    }
    if (res.n_referrals)
        in->stats.received += res.n_referrals;
    else
        in->stats.repeated++;
    for (size_t i = 0; i < res.n_referrals; i++) {
        ref_info x = {0};
        fhir_error ne;
        fhir_error_clear(&ne);
        store_intake_ref_get(in->env.st, res.referrals[i], ref_info_cb, &x, &ne);
        fhir_log(FHIR_LOG_INFO, "intake.received", "client=%s referral=%lld priority=%s", client,
                 (long long)res.referrals[i], x.priority);
        if (x.found && notice(in, res.referrals[i], x.priority, false, &ne))
            fhir_log(FHIR_LOG_ERROR, "intake.notice_failed", "referral=%lld error=%s", (long long)res.referrals[i], ne.msg);
    }
    if (!res.n_referrals)
        fhir_log(FHIR_LOG_INFO, "intake.repeat", "client=%s matched=%zu created=%zu", client, res.matched, res.created);
    serve_reply(r, 200, FHIR_JSON_TYPE, resp.data, resp.len);
    fhir_buf_free(&resp);
}

/* The type of the route ("/fhir/Task..." -> "Task"). */
static const char *route_type(serve_req *r)
{
    const char *p = serve_route_name(r);
    return strncmp(p, "/fhir/Task", 10) ? "ServiceRequest" : "Task";
}

typedef struct read_ctx {
    const char *client;
    fhir_buf *b;
    size_t n;
    bool first, foreign;
    int64_t version;
    const char *base;
} read_ctx;

static int read_cb(void *ctx, const store_intake_res *x)
{
    read_ctx *c = ctx;
    if (strcmp(x->client_id, c->client) || !*x->json) {
        c->foreign = true;
        return 0;
    }
    c->version = x->version;
    c->n++;
    if (!c->base) { /* a read: the resource itself */
        fhir_buf_puts(c->b, x->json);
        return 0;
    }
    fhir_buf_printf(c->b, "%s{\"fullUrl\":\"%s/%s/%lld\",\"resource\":%s,\"search\":{\"mode\":\"match\"}}",
                    c->n > 1 ? "," : "", c->base, x->type, (long long)x->id, x->json);
    return 0;
}

/* The prologue of a read of one resource: the site's token (answered when refused), the
 * route's type and the id (404 when not one of ours). false when already answered. */
static bool site_read(intake *in, serve_req *r, char client[INTAKE_AUTH_CLIENT_MAX], const char **type,
                      int64_t *id)
{
    if (!site_of(in, r, client))
        return false;
    *type = route_type(r);
    if (!serve_parse_id(serve_param(r, "id"), id)) {
        oo(r, 404, "not-found", "no such resource");
        return false;
    }
    return true;
}

static void h_read(serve_req *r, void *ud)
{
    intake *in = ud;
    char client[INTAKE_AUTH_CLIENT_MAX];
    const char *type;
    int64_t id;
    if (!site_read(in, r, client, &type, &id))
        return;
    fhir_buf b;
    fhir_buf_init(&b, INTAKE_PAGE_MAX);
    read_ctx c = {.client = client, .b = &b};
    fhir_error e;
    fhir_error_clear(&e);
    int f = store_intake_res_get(in->env.st, type, id, read_cb, &c, &e);
    if (f < 0) {
        fhir_buf_free(&b);
        oo(r, 500, "exception", e.msg);
        return;
    }
    if (!c.n) {
        fhir_buf_free(&b);
        char msg[120];
        snprintf(msg, sizeof msg, "%s/%lld is not here", type, (long long)id);
        oo(r, 404, "not-found", msg);
        return;
    }
    char etag[40];
    snprintf(etag, sizeof etag, "W/\"%lld\"", (long long)c.version);
    serve_add_header(r, "ETag", etag);
    serve_reply(r, 200, FHIR_JSON_TYPE, b.data, b.len);
    fhir_buf_free(&b);
}

/* _count, when given, lowers *limit (a whole number of at least min; 400 otherwise). false when
 * already answered. */
static bool count_limit(serve_req *r, long min, int64_t *limit)
{
    const char *cnt = serve_query(r, "_count");
    if (!cnt)
        return true;
    char *end;
    long n = strtol(cnt, &end, 10);
    if (!*cnt || *end || n < min) {
        oo(r, 400, "invalid", min > 0 ? "_count must be a number of 1 or more" : "_count must be a number");
        return false;
    }
    if (n < *limit)
        *limit = n;
    return true;
}

/* A version of the resource as a history entry (newest first): POST for its first version,
 * PUT for the others (the site's transaction created it; the intake team or the site changed
 * it since). */
static int history_cb(void *ctx, const store_intake_res *x)
{
    read_ctx *c = ctx;
    if (strcmp(x->client_id, c->client)) {
        c->foreign = true;
        return 0;
    }
    c->n++;
    char when[40], url[64];
    fhir_clock_format_instant(x->updated_ms, when, sizeof when);
    bool first = x->version <= 1;
    if (first)
        snprintf(url, sizeof url, "%s", x->type);
    else
        snprintf(url, sizeof url, "%s/%lld", x->type, (long long)x->id);
    fhir_buf_printf(c->b, "%s{\"fullUrl\":\"%s/%s/%lld\",\"resource\":%s,\"request\":{\"method\":\"%s\","
                    "\"url\":\"%s\"},\"response\":{\"status\":\"%s\",\"etag\":\"W/\\\"%lld\\\"\","
                    "\"lastModified\":\"%s\"}}",
                    c->n > 1 ? "," : "", c->base, x->type, (long long)x->id, x->json, first ? "POST" : "PUT", url,
                    first ? "201" : "200", (long long)x->version, when);
    return 0;
}


/* GET /fhir/{Task|ServiceRequest}/{id}/_history[?_count=N]: the resource's versions, newest
 * first (a history Bundle), to the site that sent it; so a site that reads its Task after two
 * changes still learns both (accepted, then scheduled). */
static void h_history(serve_req *r, void *ud)
{
    intake *in = ud;
    char client[INTAKE_AUTH_CLIENT_MAX];
    const char *type;
    int64_t id;
    if (!site_read(in, r, client, &type, &id))
        return;
    int64_t limit = INTAKE_SEARCH_MAX;
    if (!count_limit(r, 1, &limit))
        return;
    char base[512];
    snprintf(base, sizeof base, "%s/fhir", in->public_url);
    fhir_buf b;
    fhir_buf_init(&b, INTAKE_PAGE_MAX);
    fhir_buf_puts(&b, "{\"resourceType\":\"Bundle\",\"type\":\"history\",\"entry\":[");
    read_ctx c = {.client = client, .b = &b, .base = base};
    fhir_error e;
    fhir_error_clear(&e);
    int64_t n = store_intake_res_history(in->env.st, type, id, limit, history_cb, &c, &e);
    if (n < 0) {
        fhir_buf_free(&b);
        oo(r, 500, "exception", e.msg);
        return;
    }
    if (!c.n) { /* absent, or another site's: the same answer (nothing is told about it) */
        fhir_buf_free(&b);
        char msg[120];
        snprintf(msg, sizeof msg, "%s/%lld is not here", type, (long long)id);
        oo(r, 404, "not-found", msg);
        return;
    }
    fhir_buf_printf(&b, "],\"total\":%zu}\n", c.n);
    if (b.overflow) {
        fhir_buf_free(&b);
        oo(r, 500, "too-costly", "the history is too large: ask for fewer versions (_count)");
        return;
    }
    serve_reply(r, 200, FHIR_JSON_TYPE, b.data, b.len);
    fhir_buf_free(&b);
}

/* _lastUpdated=[gt|ge|lt|le|eq]INSTANT-or-DATE into [*from, *to]. 0, or -1. */
static int last_updated(const char *v, int64_t *from, int64_t *to)
{
    char pre[3] = "eq";
    if (strlen(v) > 2 && v[0] >= 'a' && v[0] <= 'z' && v[1] >= 'a' && v[1] <= 'z') {
        memcpy(pre, v, 2);
        v += 2;
    }
    int64_t ms, days, lo, hi;
    if (strlen(v) == 10 && fhir_clock_parse_ymd(v, &days) == 0) {
        lo = days * 86400000;
        hi = lo + 86400000 - 1;
    } else if (fhir_clock_parse_instant(v, &ms) == 0) {
        lo = hi = ms;
    } else {
        return -1;
    }
    if (!strcmp(pre, "gt"))
        *from = hi + 1 > *from ? hi + 1 : *from;
    else if (!strcmp(pre, "ge") || !strcmp(pre, "sa"))
        *from = lo > *from ? lo : *from;
    else if (!strcmp(pre, "lt") || !strcmp(pre, "eb"))
        *to = lo - 1;
    else if (!strcmp(pre, "le"))
        *to = hi;
    else if (!strcmp(pre, "eq"))
        *from = lo, *to = hi;
    else
        return -1;
    return 0;
}

static void h_search(serve_req *r, void *ud)
{
    intake *in = ud;
    char client[INTAKE_AUTH_CLIENT_MAX];
    if (!site_of(in, r, client))
        return;
    const char *type = route_type(r);
    const char *ident = serve_query(r, "identifier");
    const char *lu = serve_query(r, "_lastUpdated");
    int64_t from = 0, to = 0, limit = INTAKE_SEARCH_MAX;
    if (lu && last_updated(lu, &from, &to)) {
        oo(r, 400, "invalid", "_lastUpdated must be [gt|ge|lt|le|eq] followed by a FHIR instant or date");
        return;
    }
    if (!count_limit(r, 0, &limit))
        return;
    char base[512];
    snprintf(base, sizeof base, "%s/fhir", in->public_url);
    fhir_buf b;
    fhir_buf_init(&b, INTAKE_PAGE_MAX);
    fhir_buf_puts(&b, "{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"entry\":[");
    read_ctx c = {.client = client, .b = &b, .base = base};
    fhir_error e;
    fhir_error_clear(&e);
    int64_t n = 0;
    if (ident) {
        char sys[512] = "", *val;
        const char *bar = strchr(ident, '|');
        if (bar && (size_t)(bar - ident) < sizeof sys) {
            memcpy(sys, ident, (size_t)(bar - ident));
            sys[bar - ident] = 0;
            val = (char *)bar + 1;
        } else {
            val = (char *)ident;
        }
        if (limit)
            n = store_intake_res_by_ident(in->env.st, type, bar ? sys : NULL, val, 0, read_cb, &c, &e);
    } else if (limit) {
        n = store_intake_res_since(in->env.st, type, from, to, 0, read_cb, &c, &e);
    }
    if (n < 0) {
        fhir_buf_free(&b);
        oo(r, 500, "exception", e.msg);
        return;
    }
    (void)from;
    fhir_buf_printf(&b, "],\"total\":%zu}\n", c.n);
    if (b.overflow) {
        fhir_buf_free(&b);
        oo(r, 500, "too-costly", "the answer is too large: narrow the search (_lastUpdated)");
        return;
    }
    serve_reply(r, 200, FHIR_JSON_TYPE, b.data, b.len);
    fhir_buf_free(&b);
}

typedef struct owner_ctx {
    int64_t ref_id;
    char client[INTAKE_AUTH_CLIENT_MAX];
} owner_ctx;

static int owner_cb(void *ctx, const store_intake_ref *x)
{
    owner_ctx *o = ctx;
    o->ref_id = x->id;
    snprintf(o->client, sizeof o->client, "%s", x->client_id);
    return 0;
}

/* PUT /fhir/Task/{id}: the referring site cancels its referral. */
static void h_put_task(serve_req *r, void *ud)
{
    intake *in = ud;
    char client[INTAKE_AUTH_CLIENT_MAX];
    if (!site_of(in, r, client))
        return;
    int64_t id;
    owner_ctx o = {0};
    fhir_error e;
    fhir_error_clear(&e);
    if (!serve_parse_id(serve_param(r, "id"), &id) || store_intake_ref_by_task(in->env.st, id, owner_cb, &o, &e) != 1 ||
        strcmp(o.client, client)) {
        oo(r, 404, "not-found", "no such Task of yours here");
        return;
    }
    size_t len = 0;
    const char *body = serve_body(r, &len);
    fhir_arena *a = fhir_arena_new(0);
    fhir_json_limits lim = {.max_bytes = len + 1};
    const fhir_node *t = body && len ? fhir_json_parse(a, body, len, &lim, &e) : NULL;
    const char *rt = t ? fhir_node_resource_type(t) : NULL, *rid = t ? fhir_node_resource_id(t) : NULL;
    const char *status = t ? fhir_node_str(fhir_node_get(t, "status")) : NULL;
    char want_id[32];
    snprintf(want_id, sizeof want_id, "%lld", (long long)id);
    if (!rt || strcmp(rt, "Task") || (rid && strcmp(rid, want_id))) {
        fhir_arena_free(a);
        oo(r, 400, "invalid", "the body must be this Task (resourceType Task, the same id)");
        return;
    }
    if (!status || strcmp(status, "cancelled")) {
        fhir_arena_free(a);
        oo(r, 422, "business-rule", "a referring site may only cancel its referral here (Task.status cancelled); "
                                    "the center's intake team answers the rest");
        return;
    }
    fhir_arena_free(a);
    intake_act_in act = {.kind = INTAKE_ACT_CANCEL};
    const char *im = serve_header(r, "If-Match");
    if (im) {
        const char *q = strchr(im, '"');
        act.if_version = q ? strtoll(q + 1, NULL, 10) : strtoll(im, NULL, 10);
        if (act.if_version <= 0) {
            oo(r, 412, "conflict", "If-Match must name a version (W/\"N\")");
            return;
        }
    }
    store_actor who = {.name = client, .role = "referring-site", .source = serve_source(r)};
    char *json = NULL;
    if (intake_act(in->env.st, o.ref_id, &act, &who, &json, &e)) {
        oo_err(r, &e);
        return;
    }
    fhir_log(FHIR_LOG_INFO, "intake.cancelled", "client=%s referral=%lld", client, (long long)o.ref_id);
    serve_reply(r, 200, FHIR_JSON_TYPE, json, strlen(json));
    free(json);
}

/* ---- routes -------------------------------------------------------------------------------- */

static const serve_route ROUTES[] = {
    {"GET", "/fhir/metadata", ROLE_PUBLIC, h_metadata, SERVE_OWN_AUTH},
    {"GET", "/fhir/.well-known/smart-configuration", ROLE_PUBLIC, h_smart, SERVE_OWN_AUTH},
    {"POST", "/fhir/auth/token", ROLE_PUBLIC, h_token, SERVE_OWN_AUTH},
    {"POST", "/fhir", ROLE_PUBLIC, h_post, SERVE_OWN_AUTH},
    {"GET", "/fhir/ServiceRequest", ROLE_PUBLIC, h_search, SERVE_OWN_AUTH},
    {"GET", "/fhir/ServiceRequest/{id}", ROLE_PUBLIC, h_read, SERVE_OWN_AUTH},
    {"GET", "/fhir/Task", ROLE_PUBLIC, h_search, SERVE_OWN_AUTH},
    {"GET", "/fhir/Task/{id}", ROLE_PUBLIC, h_read, SERVE_OWN_AUTH},
    {"GET", "/fhir/ServiceRequest/{id}/_history", ROLE_PUBLIC, h_history, SERVE_OWN_AUTH},
    {"GET", "/fhir/Task/{id}/_history", ROLE_PUBLIC, h_history, SERVE_OWN_AUTH},
    {"PUT", "/fhir/Task/{id}", ROLE_PUBLIC, h_put_task, SERVE_OWN_AUTH},
};

const serve_route *intake_routes(size_t *n)
{
    *n = sizeof ROUTES / sizeof ROUTES[0];
    return ROUTES;
}

intake *intake_new(const intake_env *env, const intake_config *cfg, fhir_error *err)
{
    char token_url[600];
    const char *pu = cfg->public_url ? cfg->public_url : "";
    size_t pl = strlen(pu);
    while (pl && pu[pl - 1] == '/')
        pl--;
    snprintf(token_url, sizeof token_url, "%.*s/fhir/auth/token", (int)pl, pu);
    intake_auth *au = intake_auth_new(cfg->clients, cfg->n_clients, token_url, cfg->token_ttl_s, err);
    if (!au)
        return NULL;
    intake *in = fhir_xcalloc(1, sizeof *in);
    in->env = *env;
    in->auth = au;
    in->public_url = fhir_xmalloc(pl + 1);
    memcpy(in->public_url, pu, pl);
    in->public_url[pl] = 0;
    in->waiting_days = cfg->waiting_business_days > 0 ? cfg->waiting_business_days : 2;
    in->max_body = cfg->max_body_bytes ? cfg->max_body_bytes : INTAKE_BODY_DEFAULT;
    return in;
}

void intake_free(intake *in)
{
    if (!in)
        return;
    intake_auth_free(in->auth);
    free(in->public_url);
    free(in);
}

int intake_add_routes(intake *in, serve *s, fhir_error *err)
{
    if (serve_add_routes(s, ROUTES, sizeof ROUTES / sizeof ROUTES[0], in, err))
        return -1;
    /* the site routes refuse a request without a site's token before its body is read */
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++)
        if (ROUTES[i].fn != h_metadata && ROUTES[i].fn != h_smart && ROUTES[i].fn != h_token &&
            serve_route_head_check(s, ROUTES[i].method, ROUTES[i].pattern, site_head_ok, err))
            return -1;
    return serve_route_body_cap(s, "POST", "/fhir", in->max_body, h_too_large, err);
}

const intake_stats *intake_get_stats(const intake *in)
{
    return &in->stats;
}
