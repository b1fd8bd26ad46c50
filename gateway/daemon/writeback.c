/* writeback — durable outbox of center-driven referral state changes, written to the EHR as
 * Communication or Task resources (conditional creates) on the daemon's loop. */
#include "writeback.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_arena.h"
#include "fhir_client.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "fhir_node.h"
#include "referral.h"

#define WB_SYSTEM "urn:cartgate:writeback"

typedef struct wb_job {
    struct writeback *w;
    int64_t row_id, referral_id;
    char state[32];
    fhir_arena *a;
    struct wb_job *prev, *next;
} wb_job;

struct writeback {
    store *st;
    writeback_opts o;
    fhir_client *client;
    wb_job *jobs;
};

writeback *writeback_new(store *s, const writeback_opts *o, fhir_error *err)
{
    if (!o || !o->source || !o->source->base_url || !o->base ||
        (o->kind != CONFIG_WRITEBACK_COMMUNICATION && o->kind != CONFIG_WRITEBACK_TASK)) {
        fhir_error_set(err, "writeback: a kind, an event base and a source with base_url are required");
        return NULL;
    }
    writeback *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    w->st = s;
    w->o = *o;
    if (!w->o.max_per_pass)
        w->o.max_per_pass = 50;
    fhir_client_config cc;
    config_source_client(o->source, &cc);
    cc.format = FHIR_FORMAT_JSON;
    w->client = fhir_client_new(o->base, &cc, err);
    if (!w->client) {
        fhir_error_prefix(err, "writeback source %s", o->source->name);
        free(w);
        return NULL;
    }
    return w;
}

static void job_unlink_free(wb_job *j)
{
    writeback *w = j->w;
    if (j->prev)
        j->prev->next = j->next;
    else
        w->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    fhir_arena_free(j->a);
    free(j);
}

void writeback_free(writeback *w)
{
    if (!w)
        return;
    fhir_client_free(w->client); /* pending callbacks are dropped; rows stay pending */
    for (wb_job *j = w->jobs, *nx; j; j = nx) {
        nx = j->next;
        fhir_arena_free(j->a);
        free(j);
    }
    free(w);
}

bool writeback_busy(const writeback *w)
{
    return w && w->jobs;
}

/* The state changes written back: made by the sender or a center (operator actions are
 * not), to one of these states. */
static bool written_back(const store_audit_row *a)
{
    static const char *const states[] = {"sent",      "accepted",  "declined", "scheduled",
                                         "completed", "cancelled", "failed"};
    if (a->referral_id <= 0 || !a->to_state || !a->actor)
        return false;
    if (a->from_state && !strcmp(a->from_state, a->to_state))
        return false;
    if (strcmp(a->actor, "sender") && strncmp(a->actor, "center:", 7))
        return false;
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        if (!strcmp(a->to_state, states[i]))
            return true;
    return false;
}

typedef struct collect_ctx {
    store *s;
    int64_t last;
    fhir_error *err;
    bool failed;
} collect_ctx;

static int collect_row(void *ctx, const store_audit_row *a)
{
    collect_ctx *c = ctx;
    if (written_back(a) && store_outbox_add(c->s, a->referral_id, a->to_state, a->id, c->err)) {
        c->failed = true;
        return 1;
    }
    c->last = a->id;
    return 0;
}

/* Copies new center/sender state changes from the audit log into the outbox (one
 * transaction with the cursor). */
static int collect(writeback *w, fhir_error *err)
{
    store *s = w->st;
    if (store_begin(s, err))
        return -1;
    char *cur = NULL;
    if (store_cursor_get(s, "writeback", "audit_id", &cur, err)) {
        store_rollback(s);
        return -1;
    }
    long long after = cur ? atoll(cur) : 0;
    free(cur);
    collect_ctx c = {.s = s, .last = after, .err = err};
    if (store_audit_since(s, after, collect_row, &c, err) < 0 || c.failed)
        goto fail;
    if (c.last != after) {
        char v[32];
        snprintf(v, sizeof v, "%lld", (long long)c.last);
        if (store_cursor_put(s, "writeback", "audit_id", v, err))
            goto fail;
    }
    if (store_commit(s, err) == 0)
        return 0;
fail:
    store_rollback(s);
    return -1;
}

static int row_update(writeback *w, int64_t row_id, const char *status, bool attempt,
                      const char *error, const char *ehr_ref, fhir_error *err)
{
    return store_outbox_update(w->st, row_id, status, attempt, error, ehr_ref, err);
}

static void log_store_failure(const fhir_error *e)
{
    fhir_log(FHIR_LOG_ERROR, "writeback.store_failed", "error=%s", e->msg);
}

/* A permanent failure: the row is kept as failed and an audit row makes it visible. */
static void fail_row(writeback *w, int64_t row_id, int64_t referral_id, const char *state,
                     long status, const char *msg)
{
    fhir_log(FHIR_LOG_WARN, "writeback.failed", "referral=%lld state=%s status=%ld",
             (long long)referral_id, state, status);
    fhir_error e;
    fhir_error_clear(&e);
    char detail[FHIR_ERROR_MAX + 64];
    snprintf(detail, sizeof detail, "write-back of %s to the EHR failed: %s", state, msg);
    if (store_begin(w->st, &e) || row_update(w, row_id, "failed", true, msg, NULL, &e) ||
        store_audit(w->st, "writeback", "writeback-failed", referral_id, NULL, NULL, detail, &e) ||
        store_commit(w->st, &e)) {
        store_rollback(w->st);
        log_store_failure(&e);
    }
}

static bool transient_status(long status)
{
    return status == 0 || status == 408 || status == 429 || status >= 500;
}

static void on_written(void *ud, fhir_client_result *res)
{
    wb_job *j = ud;
    writeback *w = j->w;
    fhir_error e;
    fhir_error_clear(&e);
    if (!res->err.msg[0] && (res->status == 200 || res->status == 201)) {
        const char *ref = res->location;
        if (!ref && res->body)
            ref = fhir_node_path_str(res->body, "id");
        fhir_log(FHIR_LOG_INFO, "writeback.written", "referral=%lld state=%s status=%ld",
                 (long long)j->referral_id, j->state, res->status);
        if (store_begin(w->st, &e) || row_update(w, j->row_id, "done", true, NULL, ref, &e) ||
            store_audit(w->st, "writeback", "writeback", j->referral_id, NULL, NULL,
                        res->status == 201 ? "written to the EHR" : "already in the EHR", &e) ||
            store_commit(w->st, &e)) {
            store_rollback(w->st);
            log_store_failure(&e);
        }
    } else {
        char msg[FHIR_ERROR_MAX + 600];
        char oo[512] = "";
        if (res->body)
            fhir_client_outcome_text(res->body, oo, sizeof oo);
        snprintf(msg, sizeof msg, "HTTP %ld: %s%s%s", res->status,
                 res->err.msg[0] ? res->err.msg : "unexpected answer", oo[0] ? " — " : "", oo);
        if (transient_status(res->status)) {
            fhir_log(FHIR_LOG_WARN, "writeback.transient", "referral=%lld state=%s status=%ld",
                     (long long)j->referral_id, j->state, res->status);
            if (row_update(w, j->row_id, "pending", true, msg, NULL, &e))
                log_store_failure(&e);
        } else {
            fail_row(w, j->row_id, j->referral_id, j->state, res->status, msg);
        }
    }
    fhir_client_result_free(res);
    job_unlink_free(j);
}

/* "system|value" of the payload's ServiceRequest conditional create, split. */
static int sr_identifier(fhir_arena *a, const char *payload, const char **sys,
                         const char **val)
{
    if (!payload)
        return -1;
    fhir_error e;
    fhir_error_clear(&e);
    fhir_node *b = fhir_json_parse(a, payload, strlen(payload), NULL, &e);
    if (!b)
        return -1;
    for (const fhir_node *en = fhir_node_first(fhir_node_get(b, "entry")); en; en = en->next) {
        const char *rt = fhir_node_path_str(en, "resource.resourceType");
        const char *q = fhir_node_path_str(en, "request.ifNoneExist");
        if (!rt || strcmp(rt, "ServiceRequest") || !q || strncmp(q, "identifier=", 11))
            continue;
        const char *bar = strchr(q + 11, '|');
        if (!bar)
            return -1;
        *sys = fhir_arena_sprintf(a, "%.*s", (int)(bar - (q + 11)), q + 11);
        *val = fhir_arena_sprintf(a, "%s", bar + 1);
        return 0;
    }
    return -1;
}

static const char *task_status_for(const char *state)
{
    static const char *const map[][2] = {
        {"sent", "requested"},   {"accepted", "accepted"},   {"declined", "rejected"},
        {"scheduled", "accepted"}, {"completed", "completed"}, {"cancelled", "cancelled"},
        {"failed", "failed"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(map[i][0], state))
            return map[i][1];
    return NULL;
}

static fhir_node *ref_by_identifier(fhir_arena *a, fhir_node *parent, const char *key,
                                    bool array, const char *sys, const char *val)
{
    fhir_node *r = array ? fhir_node_append(a, fhir_node_set_arr(a, parent, key), NULL, 0,
                                            fhir_node_new(a, FHIR_OBJECT))
                         : fhir_node_set_obj(a, parent, key);
    fhir_node_set_str(a, r, "type", "ServiceRequest");
    fhir_node *id = fhir_node_set_obj(a, r, "identifier");
    fhir_node_set_str(a, id, "system", sys);
    fhir_node_set_str(a, id, "value", val);
    return r;
}

/* Builds the resource for one outbox row. NULL with msg on a permanent local problem. */
static fhir_node *build(writeback *w, fhir_arena *a, const refer_record *r, const char *state,
                        const char **type, char *msg, size_t msg_n)
{
    const char *sys = NULL, *val = NULL;
    if (sr_identifier(a, r->payload, &sys, &val)) {
        snprintf(msg, msg_n, "the referral's payload has no ServiceRequest identifier");
        return NULL;
    }
    const centers_center *c = centers_find(w->o.centers, r->center_id);
    const char *center = c && c->name ? c->name : r->center_id;
    char now[40];
    fhir_clock_format_instant(fhir_clock_now_ms(), now, sizeof now);
    const char *text =
        r->business_status && r->business_status[0]
            ? fhir_arena_sprintf(a, "CAR T referral %s to %s: %s (%s)", r->placer_id, center,
                                 state, r->business_status)
            : fhir_arena_sprintf(a, "CAR T referral %s to %s: %s", r->placer_id, center, state);
    fhir_node *res = fhir_node_new(a, FHIR_OBJECT);
    bool task = w->o.kind == CONFIG_WRITEBACK_TASK;
    *type = task ? "Task" : "Communication";
    fhir_node_set_str(a, res, "resourceType", *type);
    fhir_node *ident = fhir_node_append(a, fhir_node_set_arr(a, res, "identifier"), NULL, 0,
                                        fhir_node_new(a, FHIR_OBJECT));
    fhir_node_set_str(a, ident, "system", WB_SYSTEM);
    fhir_node_set_str(a, ident, "value", fhir_arena_sprintf(a, "%s-%s", r->placer_id, state));
    ref_by_identifier(a, res, "basedOn", true, sys, val);
    const char *patient = fhir_arena_sprintf(a, "Patient/%s", r->patient_id);
    if (task) {
        fhir_node_set_str(a, res, "status", task_status_for(state));
        if (r->business_status && r->business_status[0])
            fhir_node_set_str(a, fhir_node_set_obj(a, res, "businessStatus"), "text",
                              r->business_status);
        fhir_node_set_str(a, res, "intent", "order");
        fhir_node_set_str(a, fhir_node_set_obj(a, res, "code"), "text",
                          "CAR T referral status");
        fhir_node_set_str(a, res, "description", text);
        ref_by_identifier(a, res, "focus", false, sys, val);
        fhir_node_set_str(a, fhir_node_set_obj(a, res, "for"), "reference", patient);
        fhir_node_set_str(a, res, "authoredOn", now);
        fhir_node_set_str(a, res, "lastModified", now);
        fhir_node_set_str(a, fhir_node_set_obj(a, res, "owner"), "display", center);
    } else {
        fhir_node_set_str(a, res, "status", "completed");
        fhir_node *cat = fhir_node_append(a, fhir_node_set_arr(a, res, "category"), NULL, 0,
                                          fhir_node_new(a, FHIR_OBJECT));
        fhir_node_set_str(a, cat, "text", "CAR T referral status");
        fhir_node_set_str(a, fhir_node_set_obj(a, res, "subject"), "reference", patient);
        fhir_node_set_str(a, fhir_node_set_obj(a, res, "topic"), "text",
                          fhir_arena_sprintf(a, "CAR T referral %s", state));
        ref_by_identifier(a, res, "about", true, sys, val);
        fhir_node_set_str(a, res, "sent", now);
        fhir_node *pl = fhir_node_append(a, fhir_node_set_arr(a, res, "payload"), NULL, 0,
                                         fhir_node_new(a, FHIR_OBJECT));
        fhir_node_set_str(a, pl, "contentString", text);
    }
    return res;
}

/* Starts the write of one row. */
static void start_row(writeback *w, int64_t row_id, int64_t referral_id, const char *state)
{
    wb_job *j = calloc(1, sizeof *j);
    if (!j)
        abort();
    j->w = w;
    j->row_id = row_id;
    j->referral_id = referral_id;
    snprintf(j->state, sizeof j->state, "%s", state);
    j->a = fhir_arena_new(0);
    refer_record r;
    fhir_error e;
    fhir_error_clear(&e);
    int f = refer_get(w->st, referral_id, &r, &e);
    if (f != 1) {
        if (f < 0)
            log_store_failure(&e);
        else
            fail_row(w, row_id, referral_id, state, 0, "referral not found");
        fhir_arena_free(j->a);
        free(j);
        return;
    }
    const char *type = NULL;
    char msg[300];
    fhir_node *res = build(w, j->a, &r, state, &type, msg, sizeof msg);
    char *ine = res ? fhir_arena_sprintf(j->a, "identifier=%s|%s-%s", WB_SYSTEM, r.placer_id, state)
                    : NULL;
    refer_record_free(&r);
    if (!res) {
        fail_row(w, row_id, referral_id, state, 0, msg);
        fhir_arena_free(j->a);
        free(j);
        return;
    }
    j->next = w->jobs;
    if (w->jobs)
        w->jobs->prev = j;
    w->jobs = j;
    if (fhir_client_create(w->client, type, res, ine, on_written, j, &e)) {
        if (row_update(w, row_id, "pending", true, e.msg, NULL, &e))
            log_store_failure(&e);
        job_unlink_free(j);
    }
}

typedef struct pending_row {
    int64_t id, rid;
    char state[32];
} pending_row;

typedef struct pending_ctx {
    pending_row *rows;
    size_t n, max;
} pending_ctx;

static int pending_cb(void *ctx, int64_t row_id, int64_t referral_id, const char *state)
{
    pending_ctx *c = ctx;
    if (c->n >= c->max)
        return 1;
    c->rows[c->n].id = row_id;
    c->rows[c->n].rid = referral_id;
    snprintf(c->rows[c->n].state, sizeof c->rows[c->n].state, "%s", state ? state : "");
    c->n++;
    return 0;
}

int writeback_pass_start(writeback *w, fhir_error *err)
{
    if (writeback_busy(w))
        return 0;
    if (collect(w, err))
        return -1;
    pending_ctx c = {.rows = calloc(w->o.max_per_pass, sizeof *c.rows), .max = w->o.max_per_pass};
    if (!c.rows)
        abort();
    if (store_outbox_pending(w->st, w->o.max_per_pass, pending_cb, &c, err) < 0) {
        free(c.rows);
        return -1;
    }
    /* rows read first: the writes below update the table */
    for (size_t i = 0; i < c.n; i++)
        start_row(w, c.rows[i].id, c.rows[i].rid, c.rows[i].state);
    free(c.rows);
    return 0;
}
