/* intake_task — the intake team's acts on a referral's Task. See intake_task.h. */
#include "intake_task.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bser.h"
#include "fhir_alloc.h"
#include "fhir_arena.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "intake_bundle.h"

const intake_decline_reason intake_decline_reasons[] = {
    {"not-eligible", "Not eligible for CAR T at this center"},
    {"no-capacity", "No capacity in the time needed"},
    {"insurance", "Insurance not accepted"},
    {"refer-elsewhere", "Better served by another center"},
    {"patient-choice", "Patient declined"},
    {"incomplete", "Information insufficient to decide"},
    {"other", "Other"},
    {NULL, NULL},
};

const char *intake_decline_words(const char *code)
{
    for (size_t i = 0; code && intake_decline_reasons[i].code; i++)
        if (!strcmp(code, intake_decline_reasons[i].code))
            return intake_decline_reasons[i].words;
    return NULL;
}

const char *intake_act_name(intake_act_kind k)
{
    static const char *const N[] = {"accept", "request-info", "decline", "schedule", "cancelled-by-site"};
    return (unsigned)k < 5 ? N[k] : "?";
}

int intake_task_over(const char *s)
{
    return s && (!strcmp(s, "rejected") || !strcmp(s, "cancelled") || !strcmp(s, "completed") || !strcmp(s, "failed") ||
                 !strcmp(s, "entered-in-error"));
}

static int bad(fhir_error *err, int code)
{
    err->code = code;
    return -1;
}

typedef struct row {
    bool found;
    int64_t task_id;
    char status[32], bs[16];
    int64_t version;
    char *json;
} row;

static int ref_cb(void *ctx, const store_intake_ref *r)
{
    row *x = ctx;
    x->found = true;
    x->task_id = r->task_id;
    snprintf(x->status, sizeof x->status, "%s", r->task_status ? r->task_status : "");
    snprintf(x->bs, sizeof x->bs, "%s", r->business_status ? r->business_status : "");
    return 0;
}

static int res_cb(void *ctx, const store_intake_res *r)
{
    row *x = ctx;
    x->version = r->version;
    free(x->json);
    x->json = fhir_xstrdup(r->json);
    return 0;
}

static fhir_node *coding(fhir_arena *a, const char *sys, const char *code, const char *display, const char *text)
{
    fhir_node *cc = fhir_node_new(a, FHIR_OBJECT);
    fhir_node *c = fhir_node_new(a, FHIR_OBJECT);
    fhir_node_set_str(a, c, "system", sys);
    fhir_node_set_str(a, c, "code", code);
    if (display)
        fhir_node_set_str(a, c, "display", display);
    fhir_node_append(a, fhir_node_set_arr(a, cc, "coding"), NULL, 0, c);
    if (text)
        fhir_node_set_str(a, cc, "text", text);
    return cc;
}

/* A valid "YYYY-MM-DDTHH:MM". */
static bool when_ok(const char *w)
{
    int64_t d;
    char day[11];
    if (!w || strlen(w) != 16 || w[10] != 'T' || w[13] != ':')
        return false;
    memcpy(day, w, 10);
    day[10] = 0;
    int h = (w[11] - '0') * 10 + (w[12] - '0'), m = (w[14] - '0') * 10 + (w[15] - '0');
    return fhir_clock_parse_ymd(day, &d) == 0 && w[11] >= '0' && w[11] <= '2' && w[12] >= '0' && w[12] <= '9' &&
           w[14] >= '0' && w[14] <= '5' && w[15] >= '0' && w[15] <= '9' && h < 24 && m < 60;
}

int intake_act(store *st, int64_t id, const intake_act_in *in, const store_actor *who, char **task_json_out,
               fhir_error *err)
{
    if (task_json_out)
        *task_json_out = NULL;
    const char *text = in->text && *in->text ? in->text : NULL;
    if (text && strlen(text) > INTAKE_TEXT_MAX) {
        fhir_error_set(err, "the text is longer than %d characters", INTAKE_TEXT_MAX);
        return bad(err, 400);
    }
    const char *dwords = NULL;
    if (in->kind == INTAKE_ACT_DECLINE) {
        dwords = intake_decline_words(in->code);
        if (!dwords || (!strcmp(in->code, "other") && !text)) {
            fhir_error_set(err, "choose a reason for declining (and describe it when you choose Other)");
            return bad(err, 400);
        }
    }
    if (in->kind == INTAKE_ACT_INFO && !text) {
        fhir_error_set(err, "say what information is needed");
        return bad(err, 400);
    }
    if (in->kind == INTAKE_ACT_SCHEDULE && !when_ok(in->when)) {
        fhir_error_set(err, "give the consult's date and time (YYYY-MM-DD HH:MM)");
        return bad(err, 400);
    }
    if (store_begin(st, err))
        return bad(err, 500);
    row x = {0};
    fhir_arena *a = fhir_arena_new(0);
    int rc = -1;
    int f = store_intake_ref_get(st, id, ref_cb, &x, err);
    if (f <= 0) {
        if (f == 0)
            fhir_error_set(err, "no referral %lld in the inbox", (long long)id);
        bad(err, f == 0 ? 404 : 500);
        goto out;
    }
    if (intake_task_over(x.status)) {
        fhir_error_set(err, "referral %lld is over at this center (Task %s): nothing more to do", (long long)id, x.status);
        bad(err, 409);
        goto out;
    }
    if (store_intake_res_get(st, "Task", x.task_id, res_cb, &x, err) != 1 || !x.json) {
        fhir_error_set(err, "the Task of referral %lld is not stored", (long long)id);
        bad(err, 500);
        goto out;
    }
    if (in->if_version > 0 && in->if_version != x.version) {
        fhir_error_set(err, "the Task is at version %lld, not %lld", (long long)x.version, (long long)in->if_version);
        bad(err, 412);
        goto out;
    }
    fhir_json_limits lim = {.max_bytes = strlen(x.json) + 1};
    const fhir_node *old = fhir_json_parse(a, x.json, strlen(x.json), &lim, err);
    if (!old) {
        bad(err, 500);
        goto out;
    }
    const char *status = NULL, *bs = x.bs[0] ? x.bs : NULL, *bs_display = NULL;
    char consult[40] = "", reason[INTAKE_TEXT_MAX + 200] = "";
    switch (in->kind) {
    case INTAKE_ACT_ACCEPT:
        status = "accepted", bs = "3.0", bs_display = "Accepted";
        snprintf(reason, sizeof reason, "%s", text ? text : "accepted");
        break;
    case INTAKE_ACT_INFO:
        status = "on-hold";
        snprintf(reason, sizeof reason, "More information requested: %s", text);
        break;
    case INTAKE_ACT_DECLINE:
        status = "rejected", bs = "4.0", bs_display = "Declined";
        snprintf(reason, sizeof reason, "%s%s%s", dwords, text ? ": " : "", text ? text : "");
        break;
    case INTAKE_ACT_SCHEDULE:
        status = "in-progress", bs = "5.1.1", bs_display = "Scheduled";
        snprintf(consult, sizeof consult, "%.10s %.5s", in->when, in->when + 11);
        snprintf(reason, sizeof reason, "Consult scheduled for %s%s%s", consult, text ? ": " : "", text ? text : "");
        break;
    case INTAKE_ACT_CANCEL:
        status = "cancelled", bs = "6.0", bs_display = "Fulfillment cancelled";
        snprintf(reason, sizeof reason, "%s", text ? text : "cancelled by the referring site");
        break;
    }
    int64_t now_ms = fhir_clock_now_ms();
    char now[40], ver[24];
    fhir_clock_format_instant(now_ms, now, sizeof now);
    snprintf(ver, sizeof ver, "%lld", (long long)(x.version + 1));
    /* the new Task: members in their order, the changed ones replaced, missing ones appended */
    fhir_node *t = fhir_node_new(a, FHIR_OBJECT);
    bool had_note = false, had_reason = false, had_bs = false, had_lm = false;
    fhir_node *note = fhir_node_new(a, FHIR_OBJECT);
    fhir_node_set_str(a, note, "authorString", who && who->name ? who->name : "intake");
    fhir_node_set_str(a, note, "time", now);
    fhir_node_set_str(a, note, "text", reason);
    fhir_node *sreason = in->kind == INTAKE_ACT_DECLINE
                             ? coding(a, INTAKE_DECLINE_SYSTEM, in->code, dwords, reason)
                             : NULL;
    if (!sreason) {
        sreason = fhir_node_new(a, FHIR_OBJECT);
        fhir_node_set_str(a, sreason, "text", reason);
    }
    fhir_node *bsn = bs ? coding(a, BSER_BUSINESS_STATUS_SYSTEM, bs, bs_display, NULL) : NULL;
    for (const fhir_node *c = fhir_node_first(old); c; c = c->next) {
        if (fhir_node_key_is(c, "meta")) {
            fhir_node *m = fhir_node_set_obj(a, t, "meta");
            fhir_node_set_str(a, m, "versionId", ver);
            fhir_node_set_str(a, m, "lastUpdated", now);
        } else if (fhir_node_key_is(c, "status")) {
            fhir_node_set_str(a, t, "status", status);
        } else if (fhir_node_key_is(c, "statusReason")) {
            fhir_node_set(a, t, "statusReason", sreason);
            had_reason = true;
        } else if (fhir_node_key_is(c, "businessStatus")) {
            fhir_node_set(a, t, "businessStatus", bsn ? bsn : fhir_node_clone(a, c));
            had_bs = true;
        } else if (fhir_node_key_is(c, "lastModified")) {
            fhir_node_set_str(a, t, "lastModified", now);
            had_lm = true;
        } else if (fhir_node_key_is(c, "note")) {
            fhir_node *arr = fhir_node_clone(a, c);
            fhir_node_append(a, arr, NULL, 0, note);
            fhir_node_set(a, t, "note", arr);
            had_note = true;
        } else {
            fhir_node_append(a, t, c->key, c->key_len, fhir_node_clone(a, c));
        }
    }
    if (!had_reason)
        fhir_node_set(a, t, "statusReason", sreason);
    if (!had_bs && bsn)
        fhir_node_set(a, t, "businessStatus", bsn);
    if (!had_lm)
        fhir_node_set_str(a, t, "lastModified", now);
    if (!had_note)
        fhir_node_append(a, fhir_node_set_arr(a, t, "note"), NULL, 0, note);
    char *json = fhir_json_to_string(t, FHIR_JSON_COMPACT, INTAKE_RESOURCE_MAX);
    if (!json) {
        fhir_error_set(err, "the Task outgrew its cap");
        bad(err, 500);
        goto out;
    }
    char detail[300];
    snprintf(detail, sizeof detail, "Task/%lld version %s: status %s businessStatus %s", (long long)x.task_id, ver,
             status, bs ? bs : "-");
    store_actor w = who ? *who : (store_actor){.name = "system"};
    w.reason = reason;
    int wrc = store_intake_res_put(st, x.task_id, 0, x.version + 1, now_ms, json, err) ||
              store_intake_ref_update(st, id, status, bs, reason, consult[0] ? consult : NULL, err) ||
              store_intake_audit(st, &w, intake_act_name(in->kind), id, x.status, status, detail, err);
    if (wrc) {
        free(json);
        bad(err, 500);
        goto out;
    }
    rc = store_commit(st, err);
    if (rc)
        bad(err, 500);
    if (!rc && task_json_out)
        *task_json_out = json;
    else
        free(json);
out:
    if (rc && store_in_transaction(st))
        store_rollback(st);
    free(x.json);
    fhir_arena_free(a);
    return rc;
}
