/* cds — the CDS Hooks service. See cds.h. */
#include "cds.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cds_card.h"
#include "cds_jwt.h"
#include "fhir_alloc.h"
#include "fhir_bin.h"
#include "fhir_buf.h"
#include "fhir_client.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "jose.h"
#include "jwks.h"
#include "oidc.h"
#include "propose.h"
#include "screen.h"

/* ---- the services ---------------------------------------------------------------------------- */

typedef struct prefetch_t {
    const char *key, *query; /* query with {{context.patientId}} */
} prefetch_t;

static const prefetch_t PREFETCH[] = {
    {"patient", "Patient/{{context.patientId}}"},
    {"conditions", "Condition?patient={{context.patientId}}"},
    {"medicationRequests", "MedicationRequest?patient={{context.patientId}}&_include=MedicationRequest:medication"},
    {"medicationAdministrations", "MedicationAdministration?patient={{context.patientId}}&_include=MedicationAdministration:medication"},
    {"medicationStatements", "MedicationStatement?patient={{context.patientId}}&_include=MedicationStatement:medication"},
    {"procedures", "Procedure?patient={{context.patientId}}"},
    {"observations", "Observation?patient={{context.patientId}}"},
    {"coverage", "Coverage?patient={{context.patientId}}"},
};
#define N_PREFETCH (sizeof PREFETCH / sizeof PREFETCH[0])

typedef struct svc {
    const char *id, *hook, *title, *description;
} svc;

static const svc SERVICES[] = {
    {CDS_SERVICE_PATIENT_VIEW, "patient-view", "CAR T-cell therapy candidate",
     "Screens the patient against the FDA labels of the CAR T products and the refer-early guidance; a card "
     "appears only for an eligible or possibly eligible patient or a consult recommendation, with the gates "
     "met, what is missing and a one-click referral proposal."},
    {CDS_SERVICE_ORDER_SELECT, "order-select", "CAR T referral before the next line of therapy",
     "When a new therapy is being ordered for a patient with relapsed or refractory disease, shows whether a "
     "CAR T referral is called for now, before the next line starts."},
};

static const svc *svc_find(const char *id)
{
    for (size_t i = 0; id && i < sizeof SERVICES / sizeof SERVICES[0]; i++)
        if (!strcmp(SERVICES[i].id, id))
            return &SERVICES[i];
    return NULL;
}

/* ---- state ------------------------------------------------------------------------------------- */

typedef struct call call;

struct cds {
    cds_env env;
    char *public_url;
    cds_jwt_client clients[CDS_JWT_MAX_CLIENTS];
    char client_buf[CDS_JWT_MAX_CLIENTS][1024];
    size_t n_clients;
    char **fhir_servers;
    size_t n_fhir_servers;
    char *ca_file;
    long fetch_timeout_ms;
    jwks_cache *jwks;
    call *calls;             /* live asynchronous calls */
    cds_stats stats;
};

typedef enum { K_SERVICE, K_FEEDBACK } call_kind;

struct call {
    cds *c;
    serve_req *r;
    call_kind kind;
    const svc *sv;
    fhir_arena *a;
    char *token;
    char url[1100];          /* the endpoint called: the aud it must carry */
    const cds_jwt_client *client;
    bool refetched;
    /* the hook call */
    const fhir_node *body;
    const char *patient_id;
    const fhir_node **res;
    size_t n, cap;
    bool missing[N_PREFETCH];
    fhir_client *fc;
    struct event *timer;
    struct event *done;      /* the reads ended: finished on the next turn of the loop (a
                              * client's callback must not free the client) */
    int pending;
    bool fetch_failed;
    char fetch_error[FHIR_ERROR_MAX];
    call *next;
};

/* ---- life --------------------------------------------------------------------------------------- */

cds *cds_new(const cds_env *env, const cds_config *cfg, fhir_error *err)
{
    size_t olen;
    if (oidc_check_url("cds.public_url", cfg->public_url, &olen, err))
        return NULL;
    if (cfg->n_clients == 0 || cfg->n_clients > CDS_JWT_MAX_CLIENTS) {
        fhir_error_set(err, "cds.clients: 1 to %d entries", CDS_JWT_MAX_CLIENTS);
        return NULL;
    }
    cds *c = fhir_xcalloc(1, sizeof *c);
    c->env = *env;
    c->public_url = fhir_xstrndup(cfg->public_url, olen);
    for (size_t i = 0; i < cfg->n_clients; i++)
        if (cds_jwt_client_parse(cfg->clients[i], c->client_buf[i], sizeof c->client_buf[i], &c->clients[i], err) ||
            oidc_check_url("the JWKS URL", c->clients[i].jwks_url, NULL, err)) {
            cds_free(c);
            return NULL;
        }
    c->n_clients = cfg->n_clients;
    c->fhir_servers = fhir_xcalloc(cfg->n_fhir_servers + 1, sizeof *c->fhir_servers);
    for (size_t i = 0; i < cfg->n_fhir_servers; i++) {
        if (oidc_check_url("cds.fhir_servers", cfg->fhir_servers[i], NULL, err)) {
            cds_free(c);
            return NULL;
        }
        c->fhir_servers[c->n_fhir_servers++] = fhir_xstrdup(cfg->fhir_servers[i]);
    }
    c->ca_file = cfg->ca_file ? fhir_xstrdup(cfg->ca_file) : NULL;
    c->fetch_timeout_ms = cfg->fetch_timeout_ms > 0 ? cfg->fetch_timeout_ms : 2500;
    c->jwks = jwks_cache_new(env->base, cfg->ca_file, cfg->jwks_ttl_s, 10, 5000);
    return c;
}

static void call_free(call *k)
{
    cds *c = k->c;
    for (call **p = &c->calls; *p; p = &(*p)->next)
        if (*p == k) {
            *p = k->next;
            break;
        }
    jwks_cancel(c->jwks, k);
    fhir_client_free(k->fc); /* pending reads are dropped without their callbacks */
    if (k->timer)
        event_free(k->timer);
    if (k->done)
        event_free(k->done);
    fhir_arena_free(k->a);
    free(k->res);
    free(k->token);
    free(k);
}

/* The listener goes away: its requests are released next, so no callback may touch them. */
static void on_serve_free(void *ud)
{
    cds *c = ud;
    while (c->calls)
        call_free(c->calls);
}

void cds_free(cds *c)
{
    if (!c)
        return;
    on_serve_free(c);
    jwks_cache_free(c->jwks);
    for (size_t i = 0; i < c->n_fhir_servers; i++)
        free(c->fhir_servers[i]);
    free(c->fhir_servers);
    free(c->ca_file);
    free(c->public_url);
    free(c);
}

const cds_stats *cds_get_stats(const cds *c) { return &c->stats; }

/* ---- answers ------------------------------------------------------------------------------------ */

static void answer_error(call *k, int status, const char *msg)
{
    serve_error(k->r, status, msg);
    call_free(k);
}

static void answer_no_cards(call *k, const char *why)
{
    k->c->stats.internal++;
    fhir_log(FHIR_LOG_WARN, "cds.no_cards", "service=%s patient=%s reason=%s", k->sv ? k->sv->id : "-",
             k->patient_id ? k->patient_id : "-", why);
    fhir_buf b;
    fhir_buf_init(&b, 64);
    fhir_buf_puts(&b, "{\"cards\":[]}");
    serve_json(k->r, 200, &b);
    fhir_buf_free(&b);
    call_free(k);
}

static void unauthorized(call *k, const char *why)
{
    k->c->stats.unauthorized++;
    fhir_log(FHIR_LOG_WARN, "cds.unauthorized", "route=%s source=%s reason=%s", serve_route_name(k->r),
             serve_source(k->r), why);
    serve_add_header(k->r, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
    answer_error(k, 401, "the CDS client's JWT was not accepted");
}

/* ---- discovery ------------------------------------------------------------------------------------ */

static void h_discovery(serve_req *r, void *ud)
{
    (void)ud;
    fhir_buf b;
    fhir_buf_init(&b, 16384);
    fhir_buf_puts(&b, "{\"services\":[");
    for (size_t i = 0; i < sizeof SERVICES / sizeof SERVICES[0]; i++) {
        const svc *s = &SERVICES[i];
        if (i)
            fhir_buf_putc(&b, ',');
        fhir_buf_puts(&b, "{\"hook\":");
        fhir_json_write_string(&b, s->hook, strlen(s->hook));
        fhir_buf_puts(&b, ",\"title\":");
        fhir_json_write_string(&b, s->title, strlen(s->title));
        fhir_buf_puts(&b, ",\"description\":");
        fhir_json_write_string(&b, s->description, strlen(s->description));
        fhir_buf_puts(&b, ",\"id\":");
        fhir_json_write_string(&b, s->id, strlen(s->id));
        fhir_buf_puts(&b, ",\"prefetch\":{");
        for (size_t p = 0; p < N_PREFETCH; p++) {
            if (p)
                fhir_buf_putc(&b, ',');
            fhir_json_write_string(&b, PREFETCH[p].key, strlen(PREFETCH[p].key));
            fhir_buf_putc(&b, ':');
            fhir_json_write_string(&b, PREFETCH[p].query, strlen(PREFETCH[p].query));
        }
        fhir_buf_puts(&b, "},\"usageRequirements\":\"Register the EHR's JWT issuer and key set URL in "
                          "cds.clients; grant patient read access in fhirAuthorization or fill the prefetch.\"}");
    }
    fhir_buf_puts(&b, "]}");
    serve_json(r, 200, &b);
    fhir_buf_free(&b);
}

/* ---- authentication ------------------------------------------------------------------------------- */

static void after_auth(call *k);

static void on_keys(void *ud, const jose_jwks *keys, const fhir_error *kerr)
{
    call *k = ud;
    cds *c = k->c;
    if (!keys) {
        unauthorized(k, kerr ? kerr->msg : "no key set");
        return;
    }
    fhir_error err;
    fhir_error_clear(&err);
    fhir_node *claims = NULL;
    int rc = jose_verify(keys, k->token, CDS_JWT_ALGS, k->a, &claims, NULL, &err);
    if (rc == JOSE_UNKNOWN_KID && !k->refetched) {
        k->refetched = true; /* key rotation: the set is fetched again (at most every 10 s) */
        jwks_get(c->jwks, k->client->jwks_url, true, on_keys, k);
        return;
    }
    if (rc == JOSE_UNKNOWN_KID)
        fhir_error_set(&err, "JWT signed with a key the client's key set does not hold (unknown kid)");
    if (rc) {
        unauthorized(k, err.msg);
        return;
    }
    const char *jti = NULL;
    int64_t exp = 0;
    if (cds_jwt_check_claims(claims, k->client, k->url, fhir_clock_now_ms(), &jti, &exp, &err)) {
        unauthorized(k, err.msg);
        return;
    }
    int fresh = store_cds_jti_use(c->env.st, k->client->iss, jti, (exp + CDS_JWT_SKEW_S) * 1000, &err);
    if (fresh < 0) {
        fhir_log(FHIR_LOG_ERROR, "cds.store_failed", "error=%s", err.msg);
        unauthorized(k, "the replay check failed (store)");
        return;
    }
    if (fresh == 0) {
        unauthorized(k, "jti seen before (replay)");
        return;
    }
    after_auth(k);
}

/* Starts a call: the JWT's client, then its key set (asynchronously), then after_auth. */
static void begin(serve_req *r, cds *c, call_kind kind)
{
    call *k = fhir_xcalloc(1, sizeof *k);
    k->c = c;
    k->r = r;
    k->kind = kind;
    k->a = fhir_arena_new(CDS_ARENA_MAX);
    k->next = c->calls;
    c->calls = k;
    k->sv = svc_find(serve_param(r, "id"));
    if (!k->sv) {
        answer_error(k, 404, "no such CDS service");
        return;
    }
    snprintf(k->url, sizeof k->url, "%s%s", c->public_url, serve_path(r));
    const char *auth = serve_header(r, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) || !auth[7]) {
        unauthorized(k, "no bearer JWT");
        return;
    }
    k->token = fhir_xstrdup(auth + 7);
    fhir_error err;
    fhir_error_clear(&err);
    k->client = cds_jwt_pick(c->clients, c->n_clients, jose_peek(k->token, 0, k->a), jose_peek(k->token, 1, k->a),
                             &err);
    if (!k->client) {
        unauthorized(k, err.msg);
        return;
    }
    jwks_get(c->jwks, k->client->jwks_url, false, on_keys, k);
}

/* The head check of the hook routes (serve_route_head_check): what begin() refuses before
 * any key set is fetched (no such service, no bearer JWT, no allow-listed client named in
 * it), so that a request it refuses is never read. Nothing is stored or fetched. */
static bool head_ok(const serve_req *r, void *ud)
{
    cds *c = ud;
    const char *auth = serve_header(r, "Authorization");
    if (!svc_find(serve_param(r, "id")) || !auth || strncasecmp(auth, "Bearer ", 7) || !auth[7])
        return false;
    fhir_arena *a = fhir_arena_new(CDS_ARENA_MAX);
    fhir_error err;
    fhir_error_clear(&err);
    bool ok = cds_jwt_pick(c->clients, c->n_clients, jose_peek(auth + 7, 0, a), jose_peek(auth + 7, 1, a), &err);
    fhir_arena_free(a);
    return ok;
}

static void h_service(serve_req *r, void *ud) { begin(r, ud, K_SERVICE); }
static void h_feedback(serve_req *r, void *ud) { begin(r, ud, K_FEEDBACK); }

/* ---- the hook call ----------------------------------------------------------------------------------- */

static void add_res(call *k, const fhir_node *n)
{
    const char *type = fhir_node_resource_type(n);
    if (!type || !strcmp(type, "OperationOutcome") || k->n >= CDS_MAX_RESOURCES)
        return;
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 64;
        k->res = fhir_xrealloc(k->res, k->cap * sizeof *k->res);
    }
    k->res[k->n++] = n;
}

/* A prefetch value or fetched page: a resource, or a Bundle whose entries are added. */
static void add_value(call *k, const fhir_node *v)
{
    const char *type = fhir_node_resource_type(v);
    if (type && !strcmp(type, "Bundle")) {
        for (const fhir_node *e = fhir_node_first(fhir_node_get(v, "entry")); e; e = e->next) {
            const fhir_node *res = fhir_node_get(e, "resource");
            if (res)
                add_res(k, res);
        }
        return;
    }
    add_res(k, v);
}

/* order-select: is a therapy being ordered? The draft orders the EHR sent (the selected ones
 * when it names them) hold a MedicationRequest whose drug the mapping tables know as
 * antineoplastic therapy (by code or name; a regimen named without its agents counts). An
 * order for anything else (a lab, an antiemetic, a steroid alone) shows no card: the card
 * belongs to the moment before the next line, not to every order. */
static bool selected(const fhir_node *sel, const char *type, const char *id)
{
    if (!fhir_node_first(sel))
        return true; /* no selections: every draft order */
    char ref[256];
    snprintf(ref, sizeof ref, "%s/%s", type, id ? id : "");
    for (const fhir_node *n = fhir_node_first(sel); n; n = n->next)
        if (fhir_node_str(n) && !strcmp(fhir_node_str(n), ref))
            return true;
    return false;
}

static bool is_therapy(const map_drug *d)
{
    return d && d->role && (!strcmp(d->role, "therapy") || !strcmp(d->role, "unknown"));
}

static bool therapy_drug(const map_tables *t, const fhir_node *cc)
{
    const map_drug *d = NULL;
    for (const fhir_node *c = fhir_node_first(fhir_node_get(cc, "coding")); c && !d; c = c->next) {
        const char *sys = fhir_node_str(fhir_node_get(c, "system")), *code = fhir_node_str(fhir_node_get(c, "code"));
        if (code && sys && !strcmp(sys, "http://www.nlm.nih.gov/research/umls/rxnorm"))
            d = map_drug_lookup_code(t, sys, code);
        if (!d && fhir_node_str(fhir_node_get(c, "display")))
            d = map_drug_lookup_text(t, fhir_node_str(fhir_node_get(c, "display")));
    }
    if (!d && fhir_node_str(fhir_node_get(cc, "text")))
        d = map_drug_lookup_text(t, fhir_node_str(fhir_node_get(cc, "text")));
    return is_therapy(d);
}

static bool therapy_ordered(const fhir_node *body, const map_tables *t)
{
    const fhir_node *sel = fhir_node_path(body, "context.selections");
    const fhir_node *draft = fhir_node_path(body, "context.draftOrders");
    for (const fhir_node *e = fhir_node_first(fhir_node_get(draft, "entry")); e; e = e->next) {
        const fhir_node *r = fhir_node_get(e, "resource");
        const char *type = fhir_node_resource_type(r);
        if (!type || strcmp(type, "MedicationRequest") || !selected(sel, type, fhir_node_resource_id(r)))
            continue;
        const fhir_node *cc = fhir_node_get(r, "medicationCodeableConcept");
        if (cc && therapy_drug(t, cc))
            return true;
        /* a referenced Medication: contained, or among the draft orders */
        const char *ref = fhir_node_path_str(r, "medicationReference.reference");
        if (fhir_node_path_str(r, "medicationReference.display")) {
            if (is_therapy(map_drug_lookup_text(t, fhir_node_path_str(r, "medicationReference.display"))))
                return true;
        }
        if (!ref)
            continue;
        const fhir_node *pool[2] = {fhir_node_get(r, "contained"), fhir_node_get(draft, "entry")};
        for (int k = 0; k < 2; k++)
            for (const fhir_node *m = fhir_node_first(pool[k]); m; m = m->next) {
                const fhir_node *med = k ? fhir_node_get(m, "resource") : m;
                const char *mt = fhir_node_resource_type(med), *mid = fhir_node_resource_id(med);
                if (!mt || strcmp(mt, "Medication") || !mid)
                    continue;
                bool match = k == 0 ? (ref[0] == '#' && !strcmp(ref + 1, mid))
                                    : (!strncmp(ref, "Medication/", 11) && !strcmp(ref + 11, mid));
                if (match && therapy_drug(t, fhir_node_get(med, "code")))
                    return true;
            }
    }
    return false;
}

static void screen_and_answer(call *k);

static void on_reads_done(evutil_socket_t fd, short what, void *ud)
{
    (void)fd;
    (void)what;
    call *k = ud;
    if (k->fetch_failed) {
        k->c->stats.precondition++;
        fhir_log(FHIR_LOG_WARN, "cds.fetch_failed", "service=%s patient=%s error=%s", k->sv->id, k->patient_id,
                 k->fetch_error);
        answer_error(k, 412, "the data the screening needs could not be read from fhirServer");
        return;
    }
    screen_and_answer(k);
}

static void fetch_done_one(call *k)
{
    if (--k->pending > 0)
        return;
    event_del(k->timer);
    event_active(k->done, EV_TIMEOUT, 0);
}

static int on_page(void *ud, const fhir_node *bundle, unsigned page_no)
{
    (void)page_no;
    call *k = ud;
    add_value(k, fhir_node_clone(k->a, bundle));
    return 0;
}

static void on_fetched(void *ud, fhir_client_result *res)
{
    call *k = ud;
    if (res->err.msg[0] && !k->fetch_failed) {
        k->fetch_failed = true;
        snprintf(k->fetch_error, sizeof k->fetch_error, "%s", res->err.msg);
    } else if (res->body) {
        add_value(k, fhir_node_clone(k->a, res->body));
    }
    fhir_client_result_free(res);
    fetch_done_one(k);
}

static void on_budget(evutil_socket_t fd, short what, void *ud)
{
    (void)fd;
    (void)what;
    call *k = ud;
    k->c->stats.precondition++;
    fhir_log(FHIR_LOG_WARN, "cds.fetch_failed", "service=%s patient=%s error=%s", k->sv->id, k->patient_id,
             "the time budget (cds.fetch_timeout_ms) ran out");
    answer_error(k, 412, "the data the screening needs could not be read from fhirServer in time");
}

static bool server_allowed(const cds *c, const char *url)
{
    for (size_t i = 0; i < c->n_fhir_servers; i++) {
        size_t l = strlen(c->fhir_servers[i]);
        while (l && c->fhir_servers[i][l - 1] == '/')
            l--;
        if (!strncmp(url, c->fhir_servers[i], l) && (url[l] == 0 || url[l] == '/'))
            return true;
    }
    return false;
}

/* Reads what the prefetch lacks from fhirServer with the call's token. 0 when started (or
 * nothing is missing: then screened at once), -1 after answering 412. */
static void fetch_missing(call *k, size_t n_missing)
{
    cds *c = k->c;
    const fhir_node *fa = fhir_node_get(k->body, "fhirAuthorization");
    const char *server = fhir_node_str(fhir_node_get(k->body, "fhirServer"));
    const char *token = fhir_node_str(fhir_node_get(fa, "access_token"));
    const char *type = fhir_node_str(fhir_node_get(fa, "token_type"));
    const char *why = NULL;
    if (!fa || !token || !*token)
        why = "prefetch incomplete and no fhirAuthorization";
    else if (type && strcasecmp(type, "Bearer"))
        why = "fhirAuthorization.token_type is not Bearer";
    else if (!server || !server_allowed(c, server))
        why = "fhirServer is not one of cds.fhir_servers";
    if (why) {
        c->stats.precondition++;
        fhir_log(FHIR_LOG_INFO, "cds.precondition_failed", "service=%s patient=%s missing=%zu reason=%s", k->sv->id,
                 k->patient_id, n_missing, why);
        answer_error(k, 412, "the prefetch lacks data the screening needs and it cannot be read from fhirServer");
        return;
    }
    fhir_error err;
    fhir_error_clear(&err);
    fhir_client_config cc = {.name = "cds-fhir",
                             .base_url = server,
                             .format = FHIR_FORMAT_JSON,
                             .auth = {.kind = FHIR_AUTH_BEARER, .bearer_token = token},
                             .connect_timeout_ms = c->fetch_timeout_ms,
                             .total_timeout_ms = c->fetch_timeout_ms,
                             .max_concurrent = 4,
                             .ca_file = c->ca_file};
    cc.retry.max_attempts = 1;
    k->fc = fhir_client_new(c->env.base, &cc, &err);
    if (!k->fc) {
        answer_no_cards(k, err.msg);
        return;
    }
    c->stats.fetches++;
    k->timer = evtimer_new(c->env.base, on_budget, k);
    k->done = event_new(c->env.base, -1, 0, on_reads_done, k);
    struct timeval tv = {c->fetch_timeout_ms / 1000, (c->fetch_timeout_ms % 1000) * 1000};
    evtimer_add(k->timer, &tv);
    k->pending = 1; /* held until every read is queued */
    for (size_t i = 0; i < N_PREFETCH; i++) {
        if (!k->missing[i])
            continue;
        char q[512];
        const char *t = PREFETCH[i].query, *tok = strstr(t, "{{context.patientId}}");
        snprintf(q, sizeof q, "%.*s%s%s", (int)(tok - t), t, k->patient_id, tok + strlen("{{context.patientId}}"));
        int rc;
        k->pending++;
        if (strchr(q, '?')) {
            rc = fhir_client_search(k->fc, q, on_page, on_fetched, k, &err);
        } else {
            fhir_client_request rq = {.method = "GET", .path = q};
            rc = fhir_client_send(k->fc, &rq, on_fetched, k, &err);
        }
        if (rc) {
            k->pending--;
            k->fetch_failed = true;
            snprintf(k->fetch_error, sizeof k->fetch_error, "%s", err.msg);
            break;
        }
    }
    fetch_done_one(k);
}

static bool valid_id(const char *s)
{
    if (!s || !*s || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '.'))
            return false;
    return true;
}

static void service_call(call *k)
{
    cds *c = k->c;
    c->stats.calls++;
    size_t blen;
    const char *body = serve_body(k->r, &blen);
    fhir_error err;
    fhir_error_clear(&err);
    k->body = fhir_json_parse(k->a, body, blen, NULL, &err);
    const char *hook = fhir_node_str(fhir_node_get(k->body, "hook"));
    const char *pid = fhir_node_path_str(k->body, "context.patientId");
    if (!k->body || !hook || !fhir_node_str(fhir_node_get(k->body, "hookInstance"))) {
        c->stats.bad_request++;
        answer_error(k, 400, "not a CDS Hooks request (hook and hookInstance are required)");
        return;
    }
    if (strcmp(hook, k->sv->hook)) {
        c->stats.bad_request++;
        answer_error(k, 400, "this service answers another hook");
        return;
    }
    if (!valid_id(pid)) {
        c->stats.bad_request++;
        answer_error(k, 400, "context.patientId is missing or not a FHIR id");
        return;
    }
    k->patient_id = pid;
    const fhir_node *pf = fhir_node_get(k->body, "prefetch");
    size_t n_missing = 0;
    for (size_t i = 0; i < N_PREFETCH; i++) {
        const fhir_node *v = fhir_node_get(pf, PREFETCH[i].key);
        const char *type = fhir_node_resource_type(v);
        if (!v || !type || !strcmp(type, "OperationOutcome")) {
            k->missing[i] = true; /* absent, null, or the client's error: not known */
            n_missing++;
            continue;
        }
        add_value(k, v);
    }
    if (n_missing) {
        fetch_missing(k, n_missing);
        return;
    }
    screen_and_answer(k);
}

/* ---- screening and the card --------------------------------------------------------------------------- */

typedef struct last_closed {
    store *st;
    int64_t id;
} last_closed;

static int take_max(void *ctx, int64_t id, const char *placer)
{
    (void)placer;
    last_closed *l = ctx;
    if (id > l->id)
        l->id = id;
    return 0;
}

typedef struct closed_row {
    char indications[1024], marker[PROPOSE_MARKER_MAX];
    bool by_person;
} closed_row;

static int read_closed(void *ctx, const store_referral *r)
{
    closed_row *o = ctx;
    snprintf(o->indications, sizeof o->indications, "%s", r->indications ? r->indications : "");
    snprintf(o->marker, sizeof o->marker, "%s", r->episode_marker ? r->episode_marker : "");
    o->by_person = !r->ended; /* withdrawn by the screener or superseded: nobody declined */
    return 0;
}

/* Did a person in cartgate decline (or a center decline) the patient's referral for the same
 * indications and disease marker? Then the card waits until the verdict changes. */
static bool declined_for_same(call *k, const elig_ruleset *rs, const screen *sc)
{
    cds *c = k->c;
    fhir_error err;
    fhir_error_clear(&err);
    /* taken off the worklist by a clinician for this very verdict (gateway/web's decline) */
    fhir_buf vj;
    fhir_buf_init(&vj, CDS_VERDICT_JSON_MAX);
    int wl = screen_write_verdict_json(sc, k->patient_id, &vj) == 0
                 ? store_worklist_declined_for(c->env.st, k->patient_id,
                                               elig_category_name(elig_result_category(screen_result(sc))),
                                               fhir_buf_cstr(&vj), &err)
                 : 0;
    fhir_buf_free(&vj);
    if (wl < 0)
        fhir_log(FHIR_LOG_WARN, "cds.store_failed", "patient=%s error=%s", k->patient_id, err.msg);
    if (wl == 1)
        return true;
    last_closed l = {c->env.st, 0};
    if (store_referral_ids(c->env.st, k->patient_id, "cancelled", take_max, &l, &err) < 0 ||
        store_referral_ids(c->env.st, k->patient_id, "declined", take_max, &l, &err) < 0 || l.id == 0)
        return false;
    closed_row row = {{0}, {0}, false};
    if (store_referral_get(c->env.st, l.id, read_closed, &row, &err) <= 0 || !row.by_person)
        return false;
    size_t idx[ELIG_MAX_INDICATIONS];
    size_t n = screen_indications(rs, screen_result(sc), true, idx, ELIG_MAX_INDICATIONS);
    char now[1024] = "", marker[PROPOSE_MARKER_MAX];
    for (size_t i = 0; i < n && i < ELIG_MAX_INDICATIONS; i++) {
        size_t used = strlen(now);
        snprintf(now + used, sizeof now - used, "%s%s", i ? "," : "", elig_ruleset_key(rs, idx[i]));
    }
    propose_episode_marker(screen_profile(sc), marker, sizeof marker);
    return !strcmp(now, row.indications) && !strcmp(marker, row.marker);
}

/* A card was shown: its patient, and the resources it was made from in the store's cache (as
 * the EHR sent them), so accepted feedback can propose the referral from the same data. */
static int remember(call *k, const char *uuid, const char *category, fhir_error *err)
{
    store *st = k->c->env.st;
    if (store_begin(st, err))
        return -1;
    fhir_buf bin;
    fhir_buf_init(&bin, 16u << 20);
    int rc = store_cds_card_put(st, uuid, k->patient_id, k->sv->id, category, err);
    for (size_t i = 0; i < k->n && rc == 0; i++) {
        const char *type = fhir_node_resource_type(k->res[i]), *id = fhir_node_resource_id(k->res[i]);
        if (!type || !valid_id(id))
            continue;
        /* the binary form, as the daemon's poll caches it (fhir_bin.h): the same resource
         * from either is the same bytes */
        fhir_buf_reset(&bin);
        if (fhir_bin_write(&bin, k->res[i]) < 0)
            continue;
        bool is_new = false;
        const char *pid = strcmp(type, "Medication") ? k->patient_id : ""; /* a shared pool */
        rc = store_resource_upsert(st, pid, type, id, bin.data, bin.len, &is_new, err);
    }
    fhir_buf_free(&bin);
    if (rc || store_commit(st, err)) {
        store_rollback(st);
        return -1;
    }
    return 0;
}

static void screen_and_answer(call *k)
{
    cds *c = k->c;
    cds_screening scr = {0};
    c->env.screening(c->env.ud, &scr);
    if (!scr.rules || !scr.tables) {
        answer_no_cards(k, "the rule set is not loaded");
        return;
    }
    bool have_patient = false;
    for (size_t i = 0; i < k->n; i++) {
        const char *t = fhir_node_resource_type(k->res[i]);
        if (t && !strcmp(t, "Patient")) {
            const char *id = fhir_node_resource_id(k->res[i]);
            if (!id || strcmp(id, k->patient_id)) {
                c->stats.bad_request++;
                answer_error(k, 400, "the prefetch's Patient is not context.patientId");
                return;
            }
            have_patient = true;
        }
    }
    if (!have_patient) {
        c->stats.precondition++;
        answer_error(k, 412, "no Patient resource for context.patientId");
        return;
    }
    map_profile_opts o;
    map_profile_opts_default(&o);
    if (scr.as_of_days >= 0)
        o.as_of_days = scr.as_of_days;
    screen *sc = screen_new(scr.tables, scr.rules, &o);
    fhir_error err;
    fhir_error_clear(&err);
    if (screen_patient(sc, k->res, k->n, &err)) {
        screen_free(sc);
        answer_no_cards(k, err.msg);
        return;
    }
    cds_card_input in = {.rules = scr.rules,
                         .facts = screen_facts(sc),
                         .result = screen_result(sc),
                         .patient_id = k->patient_id,
                         .public_url = c->public_url};
    fhir_buf b;
    fhir_buf_init(&b, CDS_RESPONSE_MAX);
    fhir_buf_puts(&b, "{\"cards\":[");
    char uuid[CDS_CARD_UUID_LEN] = "";
    int rc = 1;
    bool order_select = !strcmp(k->sv->hook, "order-select");
    if (cds_card_wanted(scr.rules, screen_result(sc))) {
        if (order_select && !therapy_ordered(k->body, scr.tables))
            fhir_log(FHIR_LOG_DEBUG, "cds.no_card", "patient=%s reason=%s", k->patient_id,
                     "no antineoplastic therapy among the draft orders");
        else if (declined_for_same(k, scr.rules, sc))
            c->stats.suppressed++;
        else
            rc = cds_card_write(&in, &b, uuid);
    }
    fhir_buf_puts(&b, "]}");
    const char *category = elig_category_name(elig_result_category(screen_result(sc)));
    if (rc < 0 || b.overflow) {
        screen_free(sc);
        fhir_buf_free(&b);
        answer_no_cards(k, "the card is larger than CDS_RESPONSE_MAX");
        return;
    }
    if (rc == 0 && remember(k, uuid, category, &err))
        fhir_log(FHIR_LOG_WARN, "cds.store_failed", "patient=%s error=%s", k->patient_id, err.msg);
    if (rc == 0)
        c->stats.cards++;
    fhir_log(FHIR_LOG_INFO, "cds.call", "service=%s patient=%s category=%s card=%s resources=%zu", k->sv->id,
             k->patient_id, category, rc == 0 ? uuid : "none", k->n);
    screen_free(sc);
    serve_json(k->r, 200, &b);
    fhir_buf_free(&b);
    call_free(k);
}

/* ---- feedback --------------------------------------------------------------------------------------------- */

/* The override reason as "code display" text (the Coding the EHR sent), or NULL. */
static const char *override_text(call *k, const fhir_node *item)
{
    const fhir_node *o = fhir_node_get(item, "overrideReason");
    if (!o)
        return NULL;
    const fhir_node *reason = fhir_node_get(o, "reason");
    const char *code = fhir_node_str(fhir_node_get(reason, "code"));
    const char *display = fhir_node_str(fhir_node_get(reason, "display"));
    const char *comment = fhir_node_str(fhir_node_get(o, "userComment"));
    return fhir_arena_sprintf(k->a, "%.64s%s%.200s%s%.500s", code ? code : "", code && display ? " " : "",
                              display ? display : "", comment ? " / " : "", comment ? comment : "");
}

static void feedback_call(call *k)
{
    cds *c = k->c;
    size_t blen;
    const char *body = serve_body(k->r, &blen);
    fhir_error err;
    fhir_error_clear(&err);
    const fhir_node *doc = fhir_json_parse(k->a, body, blen, NULL, &err);
    const fhir_node *items = fhir_node_get(doc, "feedback");
    if (!fhir_node_is(items, FHIR_ARRAY)) {
        c->stats.bad_request++;
        answer_error(k, 400, "not a CDS Hooks feedback request (feedback[] is required)");
        return;
    }
    for (const fhir_node *it = fhir_node_first(items); it; it = it->next) {
        const char *card = fhir_node_str(fhir_node_get(it, "card"));
        const char *outcome = fhir_node_str(fhir_node_get(it, "outcome"));
        if (!card || !*card || strlen(card) > 128 || !outcome ||
            (strcmp(outcome, "accepted") && strcmp(outcome, "overridden"))) {
            c->stats.bad_request++;
            answer_error(k, 400, "each feedback item needs card and outcome (accepted or overridden)");
            return;
        }
    }
    if (store_begin(c->env.st, &err)) {
        answer_no_cards(k, err.msg);
        return;
    }
    char patients[16][128];
    size_t n_accepted = 0;
    int rc = 0;
    for (const fhir_node *it = fhir_node_first(items); it && rc == 0; it = it->next) {
        const char *card = fhir_node_str(fhir_node_get(it, "card"));
        const char *outcome = fhir_node_str(fhir_node_get(it, "outcome"));
        char pid[128] = "";
        int known = store_cds_card_get(c->env.st, card, pid, sizeof pid, &err);
        if (known < 0) {
            rc = -1;
            break;
        }
        fhir_buf sug;
        fhir_buf_init(&sug, 4096);
        for (const fhir_node *a = fhir_node_first(fhir_node_get(it, "acceptedSuggestions")); a; a = a->next) {
            const char *id = fhir_node_str(fhir_node_get(a, "id"));
            if (id)
                fhir_buf_printf(&sug, "%s%.64s", sug.len ? "," : "", id);
        }
        store_cds_feedback f = {.service = k->sv->id,
                                .card = card,
                                .patient_id = known ? pid : NULL,
                                .outcome = outcome,
                                .override_reason = override_text(k, it),
                                .accepted_suggestions = sug.len ? fhir_buf_cstr(&sug) : NULL,
                                .outcome_ts = fhir_node_str(fhir_node_get(it, "outcomeTimestamp"))};
        rc = store_cds_feedback_add(c->env.st, &f, &err);
        fhir_buf_free(&sug);
        fhir_log(FHIR_LOG_INFO, "cds.feedback", "service=%s card=%s outcome=%s patient=%s", k->sv->id, card, outcome,
                 known ? pid : "unknown");
        if (rc == 0 && known && !strcmp(outcome, "accepted") && n_accepted < 16)
            snprintf(patients[n_accepted++], sizeof patients[0], "%s", pid);
    }
    if (rc || store_commit(c->env.st, &err)) {
        store_rollback(c->env.st);
        answer_no_cards(k, err.msg);
        return;
    }
    /* after the commit: the proposal through the daemon's one path */
    for (size_t i = 0; i < n_accepted; i++)
        if (c->env.propose)
            c->env.propose(c->env.ud, patients[i]);
    fhir_buf b;
    fhir_buf_init(&b, 64);
    fhir_buf_puts(&b, "{}");
    serve_json(k->r, 200, &b);
    fhir_buf_free(&b);
    call_free(k);
}

static void after_auth(call *k)
{
    if (k->kind == K_SERVICE)
        service_call(k);
    else
        feedback_call(k);
}

/* ---- routes ------------------------------------------------------------------------------------------------ */

static const serve_route ROUTES[] = {
    {"GET", "/cds-services", ROLE_PUBLIC, h_discovery, SERVE_OWN_AUTH},
    {"POST", "/cds-services/{id}", ROLE_PUBLIC, h_service, SERVE_OWN_AUTH},
    {"POST", "/cds-services/{id}/feedback", ROLE_PUBLIC, h_feedback, SERVE_OWN_AUTH},
};

const serve_route *cds_routes(size_t *n)
{
    *n = sizeof ROUTES / sizeof ROUTES[0];
    return ROUTES;
}

int cds_add_routes(cds *c, serve *s, fhir_error *err)
{
    if (serve_add_routes(s, ROUTES, sizeof ROUTES / sizeof ROUTES[0], c, err))
        return -1;
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++)
        if (!strcmp(ROUTES[i].method, "POST") && serve_route_head_check(s, "POST", ROUTES[i].pattern, head_ok, err))
            return -1;
    serve_on_free(s, on_serve_free, c);
    return 0;
}
