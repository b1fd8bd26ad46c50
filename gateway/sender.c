/* sender — outbox drain with recovery, and the Task poller. */
#include "sender.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bser.h"
#include "fhir_client.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "referral.h"

#define RESPONSE_KEEP_BYTES (64u * 1024u)

typedef struct center_client {
    char *center_id;
    fhir_client *client;
} center_client;

struct sender {
    store *st;
    sender_opts o;
    center_client *clients;
    size_t n_clients;
};

sender *sender_new(store *s, const sender_opts *opts, fhir_error *err)
{
    if (!opts || !opts->centers) {
        fhir_error_set(err, "sender: a center directory is required");
        return NULL;
    }
    sender *snd = calloc(1, sizeof *snd);
    if (!snd)
        abort();
    snd->st = s;
    snd->o = *opts;
    if (!snd->o.backoff_base_ms)
        snd->o.backoff_base_ms = 2000;
    if (!snd->o.backoff_cap_ms)
        snd->o.backoff_cap_ms = 5 * 60 * 1000;
    if (!snd->o.timeout_ms)
        snd->o.timeout_ms = 30000;
    snd->clients = calloc(opts->centers->n + 1, sizeof *snd->clients);
    if (!snd->clients)
        abort();
    return snd;
}

void sender_free(sender *snd)
{
    if (!snd)
        return;
    for (size_t i = 0; i < snd->n_clients; i++) {
        fhir_client_free(snd->clients[i].client);
        free(snd->clients[i].center_id);
    }
    free(snd->clients);
    free(snd);
}

static fhir_client *client_for(sender *snd, const centers_center *c, fhir_error *err)
{
    for (size_t i = 0; i < snd->n_clients; i++)
        if (!strcmp(snd->clients[i].center_id, c->id))
            return snd->clients[i].client;
    fhir_client_config cfg = {
        .name = c->id,
        .base_url = c->fhir_base,
        .format = FHIR_FORMAT_JSON,
        .total_timeout_ms = snd->o.timeout_ms,
        .connect_timeout_ms = snd->o.timeout_ms < 10000 ? snd->o.timeout_ms : 10000,
        .max_concurrent = 1,
        .retry = snd->o.retry,
        .ca_file = snd->o.ca_file,
    };
    switch (c->auth.type) {
    case CENTERS_AUTH_NONE:
        cfg.auth.kind = FHIR_AUTH_NONE;
        break;
    case CENTERS_AUTH_BEARER:
        cfg.auth.kind = FHIR_AUTH_BEARER;
        cfg.auth.bearer_file = c->auth.token_file;
        cfg.auth.bearer_env = c->auth.token_env;
        break;
    case CENTERS_AUTH_SMART_BACKEND:
        cfg.auth.kind = FHIR_AUTH_SMART;
        cfg.auth.smart_client_id = c->auth.client_id;
        cfg.auth.smart_key_file = c->auth.key_file;
        cfg.auth.smart_kid = c->auth.key_id;
        cfg.auth.smart_scope = c->auth.scope;
        cfg.auth.smart_token_url = c->auth.token_url;
        break;
    }
    fhir_client *cl = fhir_client_new(NULL, &cfg, err);
    if (!cl) {
        fhir_error_prefix(err, "center %s", c->id);
        return NULL;
    }
    center_client *cc = &snd->clients[snd->n_clients++];
    cc->center_id = strdup(c->id);
    if (!cc->center_id)
        abort();
    cc->client = cl;
    return cl;
}

static bool transient_status(long status)
{
    return status == 0 || status == 408 || status == 429 || status >= 500;
}

static int64_t backoff_ms(const sender *snd, int attempts)
{
    int64_t d = snd->o.backoff_base_ms;
    for (int i = 0; i < attempts && d < snd->o.backoff_cap_ms; i++)
        d *= 2;
    return d < snd->o.backoff_cap_ms ? d : snd->o.backoff_cap_ms;
}

/* Response text kept for the operator: the JSON body, capped. Caller frees. */
static char *response_text(const fhir_client_result *res)
{
    if (!res->body)
        return NULL;
    return fhir_json_to_string(res->body, FHIR_JSON_COMPACT, RESPONSE_KEEP_BYTES);
}

/* "system|value" of the PLAC identifier of the payload's entry of `type`. */
static int payload_identifier(const fhir_node *bundle, const char *type, char *out, size_t n)
{
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next) {
        const char *rt = fhir_node_path_str(e, "resource.resourceType");
        if (!rt || strcmp(rt, type))
            continue;
        const char *q = fhir_node_path_str(e, "request.ifNoneExist");
        if (q && !strncmp(q, "identifier=", 11)) {
            snprintf(out, n, "%s", q + 11);
            return 0;
        }
    }
    return -1;
}

/* URL-encodes the characters of an identifier token that matter in a query string. */
static void query_escape(const char *s, char *out, size_t n)
{
    size_t j = 0;
    for (; *s && j + 4 < n; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '|' || ch == '&' || ch == '#' || ch == '+' || ch == ' ' || ch == '%' ||
            ch == '?') {
            snprintf(out + j, n - j, "%%%02X", ch);
            j += 3;
        } else {
            out[j++] = (char)ch;
        }
    }
    out[j] = '\0';
}

/* Searches `type` at the center by identifier. 1 found (ref_out = "Type/id"), 0 absent,
 * -1 failed (status in *status_out, message in err). */
static int find_at_center(fhir_client *cl, const char *type, const char *ident, char *ref_out,
                          size_t ref_n, long *status_out, fhir_error *err)
{
    char esc[600], path[800];
    query_escape(ident, esc, sizeof esc);
    snprintf(path, sizeof path, "%s?identifier=%s", type, esc);
    fhir_client_request rq = {.method = "GET", .path = path};
    fhir_client_result *res = fhir_client_send_sync(cl, &rq);
    *status_out = res->status;
    int rc;
    if (res->err.msg[0] || res->status != 200) {
        fhir_error_set(err, "search %s: %s", path,
                       res->err.msg[0] ? res->err.msg : "unexpected status");
        rc = -1;
    } else {
        size_t n = 0;
        const char *id = NULL;
        for (const fhir_node *e = fhir_node_first(fhir_node_get(res->body, "entry")); e;
             e = e->next) {
            const char *mode = fhir_node_path_str(e, "search.mode");
            if (mode && strcmp(mode, "match"))
                continue;
            n++;
            id = fhir_node_path_str(e, "resource.id");
        }
        if (n > 1) {
            *status_out = 412;
            fhir_error_set(err, "%zu %s resources at the center carry identifier %s", n, type,
                           ident);
            rc = -1;
        } else if (n == 1 && id) {
            snprintf(ref_out, ref_n, "%s/%s", type, id);
            rc = 1;
        } else {
            rc = 0;
        }
    }
    fhir_client_result_free(res);
    return rc;
}

typedef struct due {
    int64_t id;
    refer_state state;
    char center[128];
    int attempts;
    int64_t next_ms;
} due;

typedef struct due_list {
    due *v;
    size_t n, alloc;
} due_list;

static int collect_due(void *ctx, const refer_record *r)
{
    due_list *l = ctx;
    if (l->n == l->alloc) {
        l->alloc = l->alloc ? l->alloc * 2 : 64;
        l->v = realloc(l->v, l->alloc * sizeof *l->v);
        if (!l->v)
            abort();
    }
    due *d = &l->v[l->n++];
    d->id = r->id;
    d->state = r->state;
    snprintf(d->center, sizeof d->center, "%s", r->center_id);
    d->attempts = r->attempts;
    d->next_ms = r->next_attempt_ms;
    return 0;
}

typedef struct blocked {
    char **ids;
    size_t n;
} blocked;

static bool is_blocked(const blocked *b, const char *id)
{
    for (size_t i = 0; i < b->n; i++)
        if (!strcmp(b->ids[i], id))
            return true;
    return false;
}

static void block(blocked *b, const char *id)
{
    if (is_blocked(b, id))
        return;
    b->ids = realloc(b->ids, (b->n + 1) * sizeof *b->ids);
    if (!b->ids || !(b->ids[b->n] = strdup(id)))
        abort();
    b->n++;
}

/* Records a transient failure and blocks the center for the rest of the pass. */
static int transient(sender *snd, const due *d, long status, const char *msg, char *resp,
                     blocked *b, sender_stats *st, fhir_error *err)
{
    int64_t next = fhir_clock_now_ms() + backoff_ms(snd, d->attempts);
    st->transient++;
    block(b, d->center);
    fhir_log(FHIR_LOG_WARN, "referral.transient", "referral=%lld center=%s status=%ld",
             (long long)d->id, d->center, status);
    int rc = refer_record_attempt(snd->st, d->id, (int)status, msg, resp, next, err);
    free(resp);
    return rc;
}

static int deliver(sender *snd, const due *d, const centers_center *c, blocked *b,
                   sender_stats *st, fhir_error *err)
{
    refer_record r;
    int f = refer_get(snd->st, d->id, &r, err);
    if (f != 1)
        return f == 0 ? 0 : -1;
    int rc = 0;
    fhir_arena *a = fhir_arena_new(0);
    fhir_error perr = {0};
    fhir_node *payload = r.payload ? fhir_json_parse(a, r.payload, strlen(r.payload), NULL,
                                                     &perr)
                                   : NULL;
    char sr_ident[512], task_ident[512];
    if (!payload || payload_identifier(payload, "ServiceRequest", sr_ident, sizeof sr_ident) ||
        payload_identifier(payload, "Task", task_ident, sizeof task_ident)) {
        char msg[FHIR_ERROR_MAX + 64];
        snprintf(msg, sizeof msg, "payload unusable: %s",
                 !r.payload ? "none stored" : perr.msg[0] ? perr.msg
                                                           : "no ServiceRequest/Task identifier");
        if (r.state == REFER_APPROVED && !r.payload) {
            st->waiting++; /* the screener has not attached it yet */
            goto out;
        }
        if (r.state == REFER_APPROVED &&
            refer_transition(snd->st, r.id, REFER_SENDING, "sender", NULL, err)) {
            rc = -1;
            goto out;
        }
        st->failed++;
        rc = refer_mark_failed(snd->st, r.id, 0, msg, NULL, err);
        goto out;
    }
    fhir_error cerr = {0};
    fhir_client *cl = client_for(snd, c, &cerr);
    if (!cl) {
        if (r.state == REFER_APPROVED &&
            refer_transition(snd->st, r.id, REFER_SENDING, "sender", NULL, err)) {
            rc = -1;
            goto out;
        }
        st->failed++;
        rc = refer_mark_failed(snd->st, r.id, 0, cerr.msg, NULL, err);
        goto out;
    }

    if (r.state == REFER_SENDING) {
        /* possibly already there: look before resending */
        char sr_ref[300] = "", task_ref[300] = "";
        long status = 0;
        fhir_error serr = {0};
        int found = find_at_center(cl, "ServiceRequest", sr_ident, sr_ref, sizeof sr_ref,
                                   &status, &serr);
        if (found == 1)
            found = find_at_center(cl, "Task", task_ident, task_ref, sizeof task_ref, &status,
                                   &serr);
        if (found < 0) {
            if (transient_status(status)) {
                rc = transient(snd, d, status, serr.msg, NULL, b, st, err);
            } else {
                st->failed++;
                rc = refer_mark_failed(snd->st, r.id, (int)status, serr.msg, NULL, err);
            }
            goto out;
        }
        if (found == 1) {
            st->recovered++;
            fhir_log(FHIR_LOG_INFO, "referral.recovered", "referral=%lld center=%s",
                     (long long)r.id, c->id);
            rc = refer_mark_sent(snd->st, r.id, sr_ref, task_ref,
                                 "found at the center by placer identifier before resending",
                                 err);
            goto out;
        }
    } else if (refer_transition(snd->st, r.id, REFER_SENDING, "sender", NULL, err)) {
        rc = -1;
        goto out;
    }

    /* send the frozen payload */
    fhir_client_request rq = {.method = "POST", .path = "", .body = r.payload,
                              .body_len = strlen(r.payload)};
    fhir_client_result *res = fhir_client_send_sync(cl, &rq);
    char sr_ref[256], task_ref[256];
    fhir_error berr = {0};
    if (!res->err.msg[0] && res->status == 200 &&
        bser_response_refs(payload, res->body, sr_ref, task_ref, &berr) == 0) {
        st->sent++;
        fhir_log(FHIR_LOG_INFO, "referral.sent", "referral=%lld center=%s", (long long)r.id,
                 c->id);
        rc = refer_mark_sent(snd->st, r.id, sr_ref, task_ref, NULL, err);
    } else {
        long status = res->status;
        char msg[FHIR_ERROR_MAX + 600];
        char oo[512] = "";
        if (res->body)
            fhir_client_outcome_text(res->body, oo, sizeof oo);
        snprintf(msg, sizeof msg, "HTTP %ld: %s%s%s", status,
                 res->err.msg[0] ? res->err.msg : berr.msg[0] ? berr.msg : "unexpected answer",
                 oo[0] ? " — " : "", oo);
        char *resp = response_text(res);
        if (status == 200 || transient_status(status)) {
            /* 200 without usable locations is ambiguous too: search next pass */
            rc = transient(snd, d, status, msg, resp, b, st, err);
        } else {
            st->failed++;
            fhir_log(FHIR_LOG_WARN, "referral.failed", "referral=%lld center=%s status=%ld",
                     (long long)r.id, c->id, status);
            rc = refer_mark_failed(snd->st, r.id, (int)status, msg, resp, err);
            free(resp);
        }
    }
    fhir_client_result_free(res);
out:
    fhir_arena_free(a);
    refer_record_free(&r);
    return rc;
}

int sender_pass(sender *snd, sender_stats *st, fhir_error *err)
{
    due_list l = {0};
    /* recovery first: everything left in `sending`, then the approved queue */
    if (refer_each(snd->st, REFER_SENDING, NULL, collect_due, &l, err) < 0 ||
        refer_each(snd->st, REFER_APPROVED, NULL, collect_due, &l, err) < 0) {
        free(l.v);
        return -1;
    }
    blocked b = {0};
    int rc = 0;
    int64_t now = fhir_clock_now_ms();
    for (size_t i = 0; i < l.n && rc == 0; i++) {
        const due *d = &l.v[i];
        if (is_blocked(&b, d->center) || d->next_ms > now) {
            st->waiting++;
            continue;
        }
        const centers_center *c = centers_find(snd->o.centers, d->center);
        if (!c) {
            char msg[300];
            snprintf(msg, sizeof msg, "center \"%s\" is not in the directory", d->center);
            if (d->state == REFER_APPROVED &&
                refer_transition(snd->st, d->id, REFER_SENDING, "sender", NULL, err)) {
                rc = -1;
                break;
            }
            st->failed++;
            rc = refer_mark_failed(snd->st, d->id, 0, msg, NULL, err);
            continue;
        }
        rc = deliver(snd, d, c, &b, st, err);
    }
    for (size_t i = 0; i < b.n; i++)
        free(b.ids[i]);
    free(b.ids);
    free(l.v);
    return rc;
}

static int collect_open(void *ctx, const refer_record *r)
{
    if (r->state == REFER_SENT || r->state == REFER_ACCEPTED || r->state == REFER_SCHEDULED)
        return collect_due(ctx, r);
    return 0;
}

int sender_poll(sender *snd, sender_stats *st, fhir_error *err)
{
    due_list l = {0};
    if (refer_each(snd->st, -1, NULL, collect_open, &l, err) < 0) {
        free(l.v);
        return -1;
    }
    int rc = 0;
    blocked b = {0};
    for (size_t i = 0; i < l.n && rc == 0; i++) {
        const due *d = &l.v[i];
        const centers_center *c = centers_find(snd->o.centers, d->center);
        if (!c || is_blocked(&b, d->center))
            continue;
        refer_record r;
        if (refer_get(snd->st, d->id, &r, err) != 1)
            continue;
        fhir_error cerr = {0};
        fhir_client *cl = client_for(snd, c, &cerr);
        if (!cl || !r.center_task_ref) {
            refer_record_free(&r);
            continue;
        }
        fhir_client_request rq = {.method = "GET", .path = r.center_task_ref};
        fhir_client_result *res = fhir_client_send_sync(cl, &rq);
        if (res->err.msg[0] || res->status != 200 || !res->body) {
            block(&b, d->center);
            fhir_log(FHIR_LOG_WARN, "referral.poll_failed", "referral=%lld center=%s status=%ld",
                     (long long)r.id, c->id, res->status);
        } else {
            st->polled++;
            const char *status = fhir_node_path_str(res->body, "status");
            const char *bs = NULL;
            for (const fhir_node *cd = fhir_node_first(fhir_node_path(res->body,
                                                                      "businessStatus.coding"));
                 cd; cd = cd->next) {
                const char *sys = fhir_node_path_str(cd, "system");
                if (!sys || !strcmp(sys, BSER_BUSINESS_STATUS_SYSTEM)) {
                    bs = fhir_node_path_str(cd, "code");
                    break;
                }
            }
            bool changed = false;
            rc = refer_apply_task(snd->st, r.id, status, bs, &changed, err);
            if (changed)
                st->changed++;
        }
        fhir_client_result_free(res);
        refer_record_free(&r);
    }
    for (size_t i = 0; i < b.n; i++)
        free(b.ids[i]);
    free(b.ids);
    free(l.v);
    return rc;
}

int64_t sender_outstanding(store *s, fhir_error *err)
{
    int64_t counts[REFER_N_STATES];
    if (refer_count_by_state(s, counts, err))
        return -1;
    return counts[REFER_APPROVED] + counts[REFER_SENDING];
}
