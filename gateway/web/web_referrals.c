/* web_referrals — the referrals pages (stuck first, the center's Task history, the payload)
 * and the program dashboard with its CSV (web.h). */
#include "web_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fhir_alloc.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "bser.h"
#include "referral.h"

/* ---- the list ---------------------------------------------------------------------------- */

typedef struct rrow {
    int64_t id, created_ms, updated_ms;
    refer_state state;
    char patient[72], center[128], indications[256], task[32], err[160];
    int stuck;              /* 2 failed or could not be prepared, 1 sent without an answer too
                             * long, 0 no */
    int compose_cause;      /* refer_compose_cause (an open referral not prepared) */
} rrow;

typedef struct rrows {
    rrow *v;
    size_t n, cap;
    int64_t now_ms, stuck_ms;
} rrows;

/* Business days between two times (Monday to Friday), roughly: whole days minus weekends. */
static int64_t business_days(int64_t from_ms, int64_t to_ms)
{
    int64_t d0 = from_ms / 86400000, d1 = to_ms / 86400000, n = 0;
    for (int64_t d = d0 + 1; d <= d1 && n < 10000; d++) {
        int64_t wd = (d + 4) % 7; /* 1970-01-01 was a Thursday: 0 = Sunday */
        if (wd != 0 && wd != 6)
            n++;
    }
    return n;
}

static int rrow_cb(void *ctx, const refer_record *r)
{
    rrows *l = ctx;
    if (l->n == WEB_REFERRALS_MAX)
        return 1;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = fhir_xrealloc(l->v, l->cap * sizeof *l->v);
    }
    rrow *x = &l->v[l->n++];
    memset(x, 0, sizeof *x);
    x->id = r->id;
    x->created_ms = r->created_ms;
    x->updated_ms = r->updated_ms;
    x->state = r->state;
    snprintf(x->patient, sizeof x->patient, "%s", r->patient_id ? r->patient_id : "");
    snprintf(x->center, sizeof x->center, "%s", r->center_id ? r->center_id : "");
    snprintf(x->indications, sizeof x->indications, "%s", r->indications ? r->indications : "");
    snprintf(x->task, sizeof x->task, "%s", r->task_status ? r->task_status : "");
    snprintf(x->err, sizeof x->err, "%s", r->last_error ? r->last_error : "");
    x->compose_cause = refer_state_terminal(r->state) ? REFER_COMPOSE_OK : r->compose_cause;
    x->stuck = r->state == REFER_FAILED || x->compose_cause != REFER_COMPOSE_OK ? 2
               : r->state == REFER_SENT && l->stuck_ms >= 0 &&
                       business_days(r->updated_ms, l->now_ms) >= l->stuck_ms
                   ? 1
                   : 0;
    return 0;
}

static int rrow_cmp(const void *a, const void *b)
{
    const rrow *x = a, *y = b;
    if (x->stuck != y->stuck)
        return y->stuck - x->stuck;
    if (x->state != y->state)
        return (int)x->state - (int)y->state;
    return x->created_ms < y->created_ms ? -1 : x->created_ms > y->created_ms;
}

void web_h_referrals(serve_req *r, void *ud)
{
    web *w = ud;
    int days = w->env.stuck_business_days > 0 ? w->env.stuck_business_days : 3;
    rrows l = {.now_ms = fhir_clock_now_ms(), .stuck_ms = days};
    fhir_error err;
    fhir_error_clear(&err);
    refer_filter rf = {.state = -1, .summary = true};
    const char *cf = serve_query(r, "center");
    if (cf && *cf && strlen(cf) < 128)
        rf.center_id = cf;
    if (refer_list(w->env.st, &rf, rrow_cb, &l, &err) < 0) {
        free(l.v);
        web_page_problem(w, r, 500, "Referrals are not available", err.msg);
        return;
    }
    qsort(l.v, l.n, sizeof *l.v, rrow_cmp);
    fhir_buf b;
    web_page_begin(w, r, &b, "Referrals", "referrals");
    size_t nstuck = 0;
    for (size_t i = 0; i < l.n; i++)
        nstuck += l.v[i].stuck != 0;
    fhir_buf_printf(&b, "<h1>Referrals</h1>\n<p class=\"headline\">%zu referral%s · <span class=\"urg urg-now\">%zu stuck</span> "
                        "(could not be prepared, delivery failed, or sent without the center's answer for %d "
                        "business days)</p>\n",
                    l.n, l.n == 1 ? "" : "s", nstuck, days);
    fhir_buf_puts(&b, "<table class=\"list\" id=\"referrals\"><caption>Stuck first, then by state and age</caption>\n<thead><tr>"
                      "<th scope=\"col\">Referral</th><th scope=\"col\">Patient</th><th scope=\"col\">Center</th>"
                      "<th scope=\"col\">Products</th><th scope=\"col\">State</th><th scope=\"col\">Age</th>"
                      "<th scope=\"col\">Last change</th></tr></thead><tbody>\n");
    fhir_arena *a = fhir_arena_new(0);
    int64_t today = web_today(w);
    for (size_t i = 0; i < l.n; i++) {
        const rrow *x = &l.v[i];
        web_person pp;
        web_person_read(w, a, x->patient, today, &pp);
        char d[16];
        web_day_ms(x->updated_ms, d);
        fhir_buf_printf(&b, "<tr class=\"%s\" data-state=\"%s\"><td><a href=\"/ui/referrals/%lld\">Referral %lld</a></td><td>"
                            "<a href=\"/ui/patients/",
                        x->stuck ? "stuck" : "", refer_state_name(x->state), (long long)x->id, (long long)x->id);
        web_esc(&b, x->patient);
        fhir_buf_puts(&b, "\">");
        web_esc(&b, *pp.name ? pp.name : x->patient);
        fhir_buf_puts(&b, "</a></td><td>");
        web_esc(&b, web_center_name(w, x->center));
        fhir_buf_puts(&b, "</td><td>");
        web_indications_joined(&b, w, x->indications);
        fhir_buf_puts(&b, "</td><td>");
        if (x->stuck)
            fhir_buf_puts(&b, "<strong>Stuck:</strong> ");
        web_esc(&b, web_state_words(refer_state_name(x->state)));
        if (x->compose_cause != REFER_COMPOSE_OK) {
            fhir_buf_puts(&b, "<br><span class=\"sub unprepared\">Could not be prepared: ");
            web_esc(&b, refer_compose_cause_words(x->compose_cause));
            fhir_buf_puts(&b, "</span>");
        } else if (x->state == REFER_FAILED && x->err[0]) {
            fhir_buf_puts(&b, "<br><span class=\"sub\">");
            web_esc(&b, x->err);
            fhir_buf_puts(&b, "</span>");
        }
        fhir_buf_printf(&b, "</td><td class=\"num\">%lld d</td><td>%s</td></tr>\n",
                        (long long)((l.now_ms - x->created_ms) / 86400000), d);
    }
    if (!l.n)
        fhir_buf_puts(&b, "<tr><td colspan=\"7\">No referral yet.</td></tr>\n");
    fhir_buf_puts(&b, "</tbody></table>\n");
    fhir_arena_free(a);
    free(l.v);
    web_page_send(r, &b, 200);
}

/* ---- one referral ------------------------------------------------------------------------ */

/* What happened, in words (the audit's action names are for the log and the API). */
static const char *action_words(const char *action)
{
    static const char *const words[][2] = {
        {"create", "Proposed"},
        {"update", "Proposal updated by a new screening"},
        {"approve", "Approved"},
        {"decline", "Declined"},
        {"worklist-decline", "Taken off the worklist"},
        {"cancel", "Cancelled"},
        {"cancel-requested", "Cancellation asked of the center"},
        {"cancel-request-cleared", "Cancellation request settled"},
        {"cancel-at-center", "Cancelled at the center"},
        {"retry", "Delivery to be tried again"},
        {"payload", "Package prepared"},
        {"compose-failed", "Could not be prepared"},
        {"attempt", "Delivery attempt"},
        {"sending", "Delivery started"},
        {"sent", "Sent to the center"},
        {"dead-letter", "Delivery given up"},
        {"task-update", "The center answered"},
        {"task-observed", "The center's status seen"},
        {"writeback", "Written back to the EHR"},
        {"writeback-failed", "Write-back to the EHR failed"},
    };
    for (size_t i = 0; action && i < sizeof words / sizeof words[0]; i++)
        if (!strcmp(action, words[i][0]))
            return words[i][1];
    return action ? action : "";
}

enum { DETAIL_TOKENS = 32 };

/* The value after "key=" in a referral's create/update detail ("placer=P center=A -> B
 * indications=x,y replaces=7"), and the new value when it is followed by "-> NEW". Tokens point
 * into buf (a copy of the detail, split on spaces). */
typedef struct detail_kv {
    const char *key, *old, *now;
} detail_kv;

static size_t detail_split(char *buf, detail_kv *kv, size_t max)
{
    char *tok[DETAIL_TOKENS];
    size_t nt = 0, n = 0;
    for (char *save = NULL, *t = strtok_r(buf, " ", &save); t && nt < DETAIL_TOKENS;
         t = strtok_r(NULL, " ", &save))
        tok[nt++] = t;
    for (size_t i = 0; i < nt && n < max; i++) {
        char *eq = strchr(tok[i], '=');
        if (!eq)
            return 0; /* not of that shape: the caller shows the text as it is */
        *eq = 0;
        kv[n] = (detail_kv){.key = tok[i], .old = eq + 1, .now = eq + 1};
        if (i + 2 < nt && !strcmp(tok[i + 1], "->")) {
            kv[n].now = tok[i + 2];
            i += 2;
        }
        n++;
    }
    return n;
}

static const detail_kv *detail_get(const detail_kv *kv, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(kv[i].key, key))
            return &kv[i];
    return NULL;
}

/* A proposal's create/update detail in words: the products and the center (and what they were
 * before an update); the placer identifier is for the center's systems, not for this table.
 * Returns false when the detail is not of that shape. */
static bool detail_words(fhir_buf *b, web *w, const char *action, const char *detail)
{
    char buf[1024];
    detail_kv kv[8];
    if (!detail || strlen(detail) >= sizeof buf)
        return false;
    memcpy(buf, detail, strlen(detail) + 1);
    size_t n = detail_split(buf, kv, sizeof kv / sizeof kv[0]);
    const detail_kv *center = detail_get(kv, n, "center"), *ind = detail_get(kv, n, "indications");
    if (!center || !ind)
        return false;
    const detail_kv *rep = detail_get(kv, n, "replaces");
    if (!strcmp(action, "create")) {
        fhir_buf_puts(b, "For ");
        web_indications_joined(b, w, ind->now);
        fhir_buf_puts(b, " at ");
        web_esc(b, web_center_name(w, center->now));
        if (rep) {
            fhir_buf_puts(b, "; replaces referral ");
            web_esc(b, rep->now);
        }
        return true;
    }
    bool same_center = !strcmp(center->old, center->now), same_ind = !strcmp(ind->old, ind->now);
    if (same_center && same_ind) {
        fhir_buf_puts(b, "Same products and center; the clinical summary was refreshed");
        return true;
    }
    if (!same_ind) {
        fhir_buf_puts(b, "Products: ");
        web_indications_joined(b, w, ind->old);
        fhir_buf_puts(b, " → ");
        web_indications_joined(b, w, ind->now);
    }
    if (!same_center) {
        fhir_buf_puts(b, same_ind ? "Center: " : "; center: ");
        web_esc(b, web_center_name(w, center->old));
        fhir_buf_puts(b, " → ");
        web_esc(b, web_center_name(w, center->now));
    }
    return true;
}

/* BSeR Task.businessStatus codes in words (update-2026-12.md §0.4, fhir.md §1.3). */
static const char *business_words(const char *code)
{
    static const char *const words[][2] = {
        {"2.0", "received"},  {"3.0", "accepted"},          {"4.0", "declined"},
        {"5.1.1", "consult scheduled"}, {"5.1.2", "patient did not attend"},
        {"5.1.3", "appointment cancelled"}, {"5.1.4", "interim note"},
        {"5.2", "cancellation requested"}, {"6.0", "fulfilment cancelled"}, {"7.0", "completed"},
    };
    for (size_t i = 0; code && i < sizeof words / sizeof words[0]; i++)
        if (!strcasecmp(code, words[i][0]))
            return words[i][1];
    return NULL;
}

/* The center's Task as it was seen ("Task.status=accepted businessStatus=3.0"): "accepted
 * (BSeR 3.0 accepted)". Returns false when the detail is not of that shape. */
static void when_words(fhir_buf *b, const char *s);

/* "Task.status=accepted businessStatus=3.0[ (at the center 2026-12-07T18:05:57.131Z)]" (a step
 * read from the Task's history names when the center took it) in words. */
static bool task_words(fhir_buf *b, const char *detail)
{
    char st[64], bs[32], at[40] = "";
    if (!detail || sscanf(detail, "Task.status=%63s businessStatus=%31s (at the center %39[^)])", st, bs, at) < 2)
        return false;
    fhir_buf_puts(b, "The center's task is ");
    web_esc(b, st);
    const char *words = business_words(bs);
    if (words && strcmp(words, st)) {
        fhir_buf_puts(b, ": ");
        web_esc(b, words);
    }
    if (strcmp(bs, "-")) { /* "-": none */
        fhir_buf_puts(b, " (BSeR ");
        web_esc(b, bs);
        fhir_buf_puts(b, ")");
    }
    if (at[0]) {
        fhir_buf_puts(b, ", at the center on ");
        when_words(b, at);
    }
    return true;
}

/* The sender's attempt ("status=422 the center refused ...") and the package size ("87099
 * bytes") in words. */
static bool sender_words(fhir_buf *b, const char *action, const char *detail)
{
    long long n;
    int used = 0;
    if (!detail)
        return false;
    if (!strcmp(action, "payload") && sscanf(detail, "%lld bytes%n", &n, &used) == 1 &&
        !detail[used]) {
        fhir_buf_printf(b, "%lld KB (the FHIR Bundle for the center)", (n + 1023) / 1024);
        return true;
    }
    if (!strcmp(action, "attempt") && sscanf(detail, "status=%lld%n", &n, &used) == 1) {
        const char *msg = detail + used;
        while (*msg == ' ')
            msg++;
        if (n == 0)
            fhir_buf_puts(b, "No answer from the center");
        else
            fhir_buf_printf(b, "The center answered HTTP %lld", n);
        if (*msg) {
            fhir_buf_puts(b, ": ");
            web_esc(b, msg);
        }
        return true;
    }
    return false;
}

typedef struct history_ctx {
    web *w;
    fhir_buf *b;
} history_ctx;

static int audit_cb(void *ctx, const store_audit_row *a)
{
    history_ctx *h = ctx;
    fhir_buf *b = h->b;
    fhir_buf_puts(b, "<tr>");
    web_history_cells(b, a, action_words(a->action));
    fhir_buf_puts(b, "<td>");
    if (a->to_state) {
        web_esc(b, web_state_words(a->from_state));
        fhir_buf_puts(b, " → ");
        web_esc(b, web_state_words(a->to_state));
    }
    fhir_buf_puts(b, "</td><td>");
    const char *act = a->action ? a->action : "";
    bool proposal = !strcmp(act, "create") || !strcmp(act, "update");
    bool task = !strcmp(act, "task-update") || !strcmp(act, "task-observed");
    if (a->reason)
        web_esc(b, a->reason);
    else if (!(proposal && detail_words(b, h->w, act, a->detail)) && !(task && task_words(b, a->detail)) &&
             !sender_words(b, act, a->detail))
        web_esc(b, a->detail);
    fhir_buf_puts(b, "</td></tr>\n");
    return 0;
}

/* A FHIR date or date-time in one readable form: "2024-03-10T09:30:00-05:00" -> "2024-03-10
 * 09:30" (the time as the record wrote it), "...Z" -> "... 09:30 UTC"; a date stays as it is. */
static void when_words(fhir_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (n < 16 || s[10] != 'T' || s[13] != ':') {
        web_esc(b, s);
        return;
    }
    char t[32];
    snprintf(t, sizeof t, "%.10s %.5s%s", s, s + 11, s[n - 1] == 'Z' ? " UTC" : "");
    web_esc(b, t);
}

/* The package as readable text: each resource with what it says in a line. */
static void payload_text(fhir_buf *b, const fhir_node *bundle)
{
    fhir_buf_puts(b, "<dl class=\"payload\">\n");
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next) {
        const fhir_node *res = fhir_node_get(e, "resource");
        const char *type = fhir_node_resource_type(res);
        if (!type)
            continue;
        fhir_buf_puts(b, "<dt>");
        web_esc(b, type);
        fhir_buf_puts(b, "</dt><dd>");
        const char *texts[] = {"name", "code.text", "code.coding.display", "status", "priority", "reasonCode.text",
                               "valueString", "valueQuantity.value", "effectiveDateTime", "authoredOn",
                               "businessStatus.text", "name.family", "birthDate", "description", NULL};
        bool any = false;
        const char *shown[sizeof texts / sizeof texts[0]]; /* each text once ("code.text" = display) */
        size_t nshown = 0;
        if (!strncmp(type, "Medication", 10) && strcmp(type, "Medication")) {
            /* a medication row: its drug first, named from the row or the Medication it references */
            fhir_buf_puts(b, "<span class=\"drug\">");
            web_esc(b, bser_medication_name(bundle, res));
            fhir_buf_puts(b, "</span>");
            any = true;
        }
        for (size_t i = 0; texts[i]; i++) {
            const fhir_node *n = fhir_node_path(res, texts[i]);
            if (fhir_node_is(n, FHIR_ARRAY))
                n = fhir_node_first(n);
            const char *s = fhir_node_str(n) ? fhir_node_str(n) : fhir_node_num_text(n);
            if (!s)
                continue;
            bool again = false;
            for (size_t k = 0; k < nshown && !again; k++)
                again = !strcmp(shown[k], s);
            if (again)
                continue;
            shown[nshown++] = s;
            if (any)
                fhir_buf_puts(b, " · ");
            any = true;
            if (!strcmp(texts[i], "effectiveDateTime") || !strcmp(texts[i], "authoredOn") ||
                !strcmp(texts[i], "birthDate"))
                when_words(b, s);
            else
                web_esc(b, s);
        }
        for (const fhir_node *nt = fhir_node_first(fhir_node_get(res, "note")); nt; nt = nt->next) {
            fhir_buf_puts(b, any ? " · note: " : "note: ");
            any = true;
            web_esc(b, fhir_node_str(fhir_node_get(nt, "text")));
        }
        const char *div = fhir_node_path_str(res, "text.div");
        if (!any && div)
            fhir_buf_puts(b, "(narrative)");
        fhir_buf_puts(b, "</dd>\n");
    }
    fhir_buf_puts(b, "</dl>\n");
}

void web_h_referral(serve_req *r, void *ud)
{
    web *w = ud;
    int64_t id;
    fhir_error err;
    fhir_error_clear(&err);
    refer_record rec;
    int f = serve_parse_id(serve_param(r, "id"), &id) ? refer_get(w->env.st, id, &rec, &err) : 0;
    if (f != 1) {
        web_page_problem(w, r, f < 0 ? 500 : 404, "No such referral", f < 0 ? err.msg : "There is no referral with that number.");
        return;
    }
    fhir_arena *a = fhir_arena_new(0);
    web_person pp;
    web_person_read(w, a, rec.patient_id, web_today(w), &pp);
    fhir_buf b;
    char title[64];
    snprintf(title, sizeof title, "Referral %lld", (long long)rec.id);
    web_page_begin(w, r, &b, title, "referrals");
    fhir_buf_printf(&b, "<h1>Referral %lld</h1>\n<dl class=\"facts\"><dt>Patient</dt><dd><a href=\"/ui/patients/", (long long)rec.id);
    web_esc(&b, rec.patient_id);
    fhir_buf_puts(&b, "\">");
    web_esc(&b, *pp.name ? pp.name : rec.patient_id);
    fhir_buf_puts(&b, "</a></dd><dt>Center</dt><dd id=\"ref-center\">");
    web_esc(&b, web_center_name(w, rec.center_id));
    fhir_buf_puts(&b, "</dd><dt>State</dt><dd id=\"ref-state\" data-state=\"");
    web_esc(&b, refer_state_name(rec.state));
    fhir_buf_puts(&b, "\">");
    web_esc(&b, web_state_words(refer_state_name(rec.state)));
    fhir_buf_puts(&b, "</dd><dt>Products</dt><dd id=\"ref-products\">");
    web_indications_joined(&b, w, rec.indications);
    fhir_buf_puts(&b, "</dd><dt>Urgency</dt><dd>");
    web_esc(&b, rec.urgency);
    fhir_buf_puts(&b, "</dd><dt>Identifier sent to the center</dt><dd>");
    web_esc(&b, rec.placer_id);
    fhir_buf_puts(&b, "</dd><dt>The center's task</dt><dd>");
    web_esc(&b, rec.task_status ? rec.task_status : "no answer yet");
    if (rec.business_status) {
        fhir_buf_puts(&b, " (");
        web_esc(&b, rec.business_status);
        fhir_buf_puts(&b, ")");
    }
    fhir_buf_puts(&b, "</dd>");
    if (rec.compose_cause != REFER_COMPOSE_OK) {
        fhir_buf_printf(&b, "<dt>Could not be prepared</dt><dd id=\"ref-unprepared\" data-cause=\"%s\">",
                        refer_compose_cause_name(rec.compose_cause));
        web_esc(&b, rec.compose_error ? rec.compose_error : refer_compose_cause_words(rec.compose_cause));
        if (!refer_state_terminal(rec.state)) {
            fhir_buf_puts(&b, " <a href=\"/ui/patients/");
            web_esc(&b, rec.patient_id);
            fhir_buf_puts(&b, rec.compose_cause == REFER_COMPOSE_CENTER_GONE ? "#act-h\">Choose another center on the "
                                                                              "patient's page</a>"
                                                                            : "#act-h\">Act on the patient's page</a>");
        }
        fhir_buf_puts(&b, "</dd>");
    }
    if (rec.last_error) {
        fhir_buf_puts(&b, "<dt>Last delivery problem</dt><dd>");
        web_esc(&b, rec.last_error);
        fhir_buf_puts(&b, "</dd>");
    }
    fhir_buf_puts(&b, "</dl>\n");
    if (rec.state == REFER_FAILED && web_may(r, ROLE_ADMIN)) {
        fhir_buf_printf(&b, "<form method=\"post\" action=\"/ui/referrals/%lld/retry\">", (long long)rec.id);
        web_csrf_field(&b, r);
        fhir_buf_puts(&b, "<button type=\"submit\">Try the delivery again</button></form>\n");
    }
    fhir_buf_puts(&b, "<h2>History</h2>\n<table class=\"list\" id=\"history\"><thead><tr><th scope=\"col\">Time (UTC)</th>"
                      "<th scope=\"col\">Who</th><th scope=\"col\">What</th><th scope=\"col\">State</th>"
                      "<th scope=\"col\">Reason or detail</th></tr></thead><tbody>\n");
    history_ctx hc = {.w = w, .b = &b};
    store_audit_list(w->env.st, rec.id, 0, 0, audit_cb, &hc, &err);
    fhir_buf_puts(&b, "</tbody></table>\n<h2>What was sent to the center</h2>\n");
    if (!rec.payload) {
        fhir_buf_puts(&b, rec.compose_cause != REFER_COMPOSE_OK ? "<p>No package: it could not be prepared (above).</p>\n"
                                                                : "<p>No package yet.</p>\n");
    } else {
        fhir_error e;
        fhir_json_limits lim = {.max_bytes = strlen(rec.payload) + 1};
        fhir_node *bundle = fhir_json_parse(a, rec.payload, strlen(rec.payload), &lim, &e);
        if (bundle) {
            payload_text(&b, bundle);
            fhir_buf pretty;
            fhir_buf_init(&pretty, WEB_PAGE_MAX / 2);
            fhir_json_write(&pretty, bundle, FHIR_JSON_PRETTY);
            fhir_buf_puts(&b, "<details><summary>The package as JSON (FHIR transaction Bundle)</summary><pre class=\"json\">");
            web_esc(&b, fhir_buf_cstr(&pretty));
            fhir_buf_puts(&b, "</pre></details>\n");
            fhir_buf_free(&pretty);
        }
    }
    refer_record_free(&rec);
    fhir_arena_free(a);
    web_page_send(r, &b, 200);
}

/* ---- the program ------------------------------------------------------------------------- */

static const char *const STAGES[] = {"screened", "candidate", "proposed", "approved", "sent", "accepted",
                                     "scheduled", "completed", "declined", "cancelled", "failed"};
enum { N_STAGES = sizeof STAGES / sizeof STAGES[0], MAX_MONTHS = 120 };

typedef struct program {
    char month[MAX_MONTHS][8];
    int64_t n[MAX_MONTHS][N_STAGES];
    size_t nmonths;
    /* time from relapse documented to referral sent, days, per month of sending */
    int64_t *days[MAX_MONTHS];
    size_t ndays[MAX_MONTHS], capdays[MAX_MONTHS];
    /* by center and outcome */
    char center[64][128];
    int64_t by_center[64][REFER_N_STATES];
    size_t ncenters;
    char code[16][32];
    int64_t code_n[16];
    size_t ncodes;
    /* CDS Hooks: per service the cards shown and the feedback; the override reasons */
    struct {
        char service[64];
        int64_t cards, accepted, overridden;
    } cds[8];
    size_t ncds;
    struct {
        char reason[160];
        int64_t n;
    } ovr[16];
    size_t novr;
} program;

static size_t month_slot(program *p, const char *m)
{
    for (size_t i = 0; i < p->nmonths; i++)
        if (!strcmp(p->month[i], m))
            return i;
    if (p->nmonths == MAX_MONTHS)
        return MAX_MONTHS - 1;
    snprintf(p->month[p->nmonths], sizeof p->month[0], "%.7s", m); /* "YYYY-MM" */
    return p->nmonths++;
}

static int funnel_cb(void *ctx, const char *const *c, int n)
{
    program *p = ctx;
    if (n < 3 || !c[0] || !c[1])
        return 0;
    size_t m = month_slot(p, c[0]);
    for (size_t k = 0; k < N_STAGES; k++)
        if (!strcmp(STAGES[k], c[1]))
            p->n[m][k] += strtoll(c[2] ? c[2] : "0", NULL, 10);
    return 0;
}

static int refs_cb(void *ctx, const char *const *c, int n)
{
    program *p = ctx;
    if (n < 6)
        return 0;
    refer_state st;
    if (c[1] && c[2] && refer_state_parse(c[2], &st) == 0) {
        size_t k = 0;
        while (k < p->ncenters && strcmp(p->center[k], c[1]))
            k++;
        if (k == p->ncenters && p->ncenters < 64)
            snprintf(p->center[p->ncenters++], sizeof p->center[0], "%s", c[1]);
        if (k < 64)
            p->by_center[k][st]++;
    }
    int64_t rd;
    if (c[4] && c[5] && fhir_clock_parse_ymd(c[5], &rd) == 0) {
        int64_t sent_ms = strtoll(c[4], NULL, 10);
        char m[16];
        web_day_ms(sent_ms, m);
        m[7] = 0;
        size_t s = month_slot(p, m);
        if (p->ndays[s] == p->capdays[s]) {
            p->capdays[s] = p->capdays[s] ? p->capdays[s] * 2 : 16;
            p->days[s] = fhir_xrealloc(p->days[s], p->capdays[s] * sizeof *p->days[s]);
        }
        p->days[s][p->ndays[s]++] = sent_ms / 86400000 - rd;
    }
    return 0;
}

static int codes_cb(void *ctx, const char *const *c, int n)
{
    program *p = ctx;
    if (n >= 2 && c[0] && p->ncodes < 16) {
        snprintf(p->code[p->ncodes], sizeof p->code[0], "%s", c[0]);
        p->code_n[p->ncodes++] = strtoll(c[1] ? c[1] : "0", NULL, 10);
    }
    return 0;
}

static int cds_cb(void *ctx, const char *const *c, int n)
{
    program *p = ctx;
    if (n < 4 || !c[0] || !c[1])
        return 0;
    size_t i = 0;
    while (i < p->ncds && strcmp(p->cds[i].service, c[0]))
        i++;
    if (i == p->ncds) {
        if (p->ncds == sizeof p->cds / sizeof p->cds[0])
            return 0;
        snprintf(p->cds[i].service, sizeof p->cds[i].service, "%s", c[0]);
        p->ncds++;
    }
    int64_t v = strtoll(c[3] ? c[3] : "0", NULL, 10);
    if (!strcmp(c[1], "cards"))
        p->cds[i].cards += v;
    else if (!strcmp(c[1], "accepted"))
        p->cds[i].accepted += v;
    else if (!strcmp(c[1], "overridden")) {
        p->cds[i].overridden += v;
        const char *why = c[2] && *c[2] ? c[2] : "no reason given";
        size_t k = 0;
        while (k < p->novr && strcmp(p->ovr[k].reason, why))
            k++;
        if (k == p->novr && p->novr < sizeof p->ovr / sizeof p->ovr[0])
            snprintf(p->ovr[p->novr++].reason, sizeof p->ovr[0].reason, "%s", why);
        if (k < p->novr)
            p->ovr[k].n += v;
    }
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_month(const void *a, const void *b)
{
    return strcmp(a, b);
}

static program *program_load(web *w, fhir_error *err)
{
    program *p = fhir_xcalloc(1, sizeof *p);
    if (store_program_funnel(w->env.st, funnel_cb, p, err) < 0 || store_program_referrals(w->env.st, refs_cb, p, err) < 0 ||
        store_program_declines(w->env.st, codes_cb, p, err) < 0 || store_program_cds(w->env.st, cds_cb, p, err) < 0) {
        for (size_t i = 0; i < MAX_MONTHS; i++)
            free(p->days[i]);
        free(p);
        return NULL;
    }
    /* months in order (the day lists move with their month) */
    for (size_t i = 1; i < p->nmonths; i++)
        for (size_t j = i; j > 0 && cmp_month(p->month[j - 1], p->month[j]) > 0; j--) {
            char t[8];
            memcpy(t, p->month[j], 8);
            memcpy(p->month[j], p->month[j - 1], 8);
            memcpy(p->month[j - 1], t, 8);
            int64_t tn[N_STAGES];
            memcpy(tn, p->n[j], sizeof tn);
            memcpy(p->n[j], p->n[j - 1], sizeof tn);
            memcpy(p->n[j - 1], tn, sizeof tn);
            int64_t *td = p->days[j];
            p->days[j] = p->days[j - 1];
            p->days[j - 1] = td;
            size_t tz = p->ndays[j];
            p->ndays[j] = p->ndays[j - 1];
            p->ndays[j - 1] = tz;
            tz = p->capdays[j];
            p->capdays[j] = p->capdays[j - 1];
            p->capdays[j - 1] = tz;
        }
    for (size_t i = 0; i < p->nmonths; i++)
        if (p->ndays[i])
            qsort(p->days[i], p->ndays[i], sizeof *p->days[i], cmp_i64);
    return p;
}

static void program_free(program *p)
{
    for (size_t i = 0; p && i < MAX_MONTHS; i++)
        free(p->days[i]);
    free(p);
}

static const char *const STAGE_WORDS[] = {"Screened", "Eligible or possibly", "Proposed", "Approved", "Sent",
                                          "Accepted", "Scheduled", "Completed", "Declined by center", "Cancelled",
                                          "Delivery failed"};

static const char *code_words(const char *c)
{
    static const struct {
        const char *k, *w;
    } W[] = {{"not_candidate", "Not a candidate"}, {"patient_declined", "Patient declined"},
             {"referred_elsewhere", "Already referred elsewhere"}, {"hospice", "Hospice or comfort care"},
             {"other", "Other"}};
    for (size_t i = 0; i < sizeof W / sizeof W[0]; i++)
        if (!strcmp(W[i].k, c))
            return W[i].w;
    return c;
}

void web_h_program(serve_req *r, void *ud)
{
    web *w = ud;
    fhir_error err;
    fhir_error_clear(&err);
    program *p = program_load(w, &err);
    if (!p) {
        web_page_problem(w, r, 500, "The program figures are not available", err.msg);
        return;
    }
    fhir_buf b;
    web_page_begin(w, r, &b, "Program", "program");
    fhir_buf_puts(&b, "<h1>Are we referring more patients, sooner?</h1>\n<p><a href=\"/ui/program.csv\" download>Download "
                      "these figures (CSV)</a></p>\n<h2>The funnel by month</h2>\n<div class=\"scroll\" tabindex=\"0\" role=\"region\" "
                      "aria-label=\"The funnel by month\"><table class=\"list\" id=\"funnel\"><thead><tr><th scope=\"col\">Month</th>");
    for (size_t k = 0; k < N_STAGES; k++)
        fhir_buf_printf(&b, "<th scope=\"col\" class=\"num\">%s</th>", STAGE_WORDS[k]);
    fhir_buf_puts(&b, "</tr></thead><tbody>\n");
    for (size_t i = 0; i < p->nmonths; i++) {
        fhir_buf_printf(&b, "<tr><th scope=\"row\">%s</th>", p->month[i]);
        for (size_t k = 0; k < N_STAGES; k++)
            fhir_buf_printf(&b, "<td class=\"num\">%lld</td>", (long long)p->n[i][k]);
        fhir_buf_puts(&b, "</tr>\n");
    }
    if (!p->nmonths)
        fhir_buf_printf(&b, "<tr><td colspan=\"%d\">Nothing screened yet.</td></tr>\n", N_STAGES + 1);
    fhir_buf_puts(&b, "</tbody></table></div>\n<p class=\"note\">Screened and eligible count patients by the month their "
                      "current verdict was written; the referral stages count referrals by the month they first reached "
                      "the stage.</p>\n<h2>Time from relapse documented to referral sent</h2>\n<table class=\"list\" id=\"ttr\">"
                      "<thead><tr><th scope=\"col\">Month sent</th><th scope=\"col\" class=\"num\">Referrals</th>"
                      "<th scope=\"col\" class=\"num\">Median days</th><th scope=\"col\" class=\"num\">Shortest</th>"
                      "<th scope=\"col\" class=\"num\">Longest</th></tr></thead><tbody>\n");
    size_t rows = 0;
    for (size_t i = 0; i < p->nmonths; i++) {
        size_t n = p->ndays[i];
        if (!n)
            continue;
        rows++;
        double med = n % 2 ? (double)p->days[i][n / 2] : ((double)p->days[i][n / 2 - 1] + (double)p->days[i][n / 2]) / 2;
        fhir_buf_printf(&b, "<tr><th scope=\"row\">%s</th><td class=\"num\">%zu</td><td class=\"num\">%.1f</td>"
                            "<td class=\"num\">%lld</td><td class=\"num\">%lld</td></tr>\n",
                        p->month[i], n, med, (long long)p->days[i][0], (long long)p->days[i][n - 1]);
    }
    if (!rows)
        fhir_buf_puts(&b, "<tr><td colspan=\"5\">No referral sent yet.</td></tr>\n");
    fhir_buf_puts(&b, "</tbody></table>\n<h2>Referrals by center and outcome</h2>\n<div class=\"scroll\" tabindex=\"0\" role=\"region\" "
                      "aria-label=\"Referrals by center and outcome\"><table class=\"list\" id=\"centers\"><thead><tr><th scope=\"col\">Center</th>");
    for (int s = 0; s < REFER_N_STATES; s++)
        fhir_buf_printf(&b, "<th scope=\"col\" class=\"num\">%s</th>", web_state_words(refer_state_name((refer_state)s)));
    fhir_buf_puts(&b, "</tr></thead><tbody>\n");
    for (size_t c = 0; c < p->ncenters; c++) {
        fhir_buf_puts(&b, "<tr><th scope=\"row\">");
        web_esc(&b, web_center_name(w, p->center[c]));
        fhir_buf_puts(&b, "</th>");
        for (int s = 0; s < REFER_N_STATES; s++)
            fhir_buf_printf(&b, "<td class=\"num\">%lld</td>", (long long)p->by_center[c][s]);
        fhir_buf_puts(&b, "</tr>\n");
    }
    if (!p->ncenters)
        fhir_buf_printf(&b, "<tr><td colspan=\"%d\">No referral yet.</td></tr>\n", REFER_N_STATES + 1);
    fhir_buf_puts(&b, "</tbody></table></div>\n<h2>Why clinicians declined</h2>\n<table class=\"list\" id=\"declines\"><thead><tr>"
                      "<th scope=\"col\">Reason</th><th scope=\"col\" class=\"num\">Patients</th></tr></thead><tbody>\n");
    for (size_t i = 0; i < p->ncodes; i++)
        fhir_buf_printf(&b, "<tr><th scope=\"row\">%s</th><td class=\"num\">%lld</td></tr>\n", code_words(p->code[i]),
                        (long long)p->code_n[i]);
    if (!p->ncodes)
        fhir_buf_puts(&b, "<tr><td colspan=\"2\">None.</td></tr>\n");
    fhir_buf_puts(&b, "</tbody></table>\n<h2>Cards in the EHR's chart (CDS Hooks)</h2>\n<table class=\"list\" id=\"cds\"><thead>"
                      "<tr><th scope=\"col\">Service</th><th scope=\"col\" class=\"num\">Cards shown</th>"
                      "<th scope=\"col\" class=\"num\">Referral suggested, accepted</th>"
                      "<th scope=\"col\" class=\"num\">Overridden</th></tr></thead><tbody>\n");
    for (size_t i = 0; i < p->ncds; i++) {
        fhir_buf_puts(&b, "<tr><th scope=\"row\">");
        web_esc(&b, !strcmp(p->cds[i].service, "cartgate-car-t") ? "Chart opened (patient-view)"
                    : !strcmp(p->cds[i].service, "cartgate-car-t-order-select") ? "Order entry (order-select)"
                                                                          : p->cds[i].service);
        fhir_buf_printf(&b, "</th><td class=\"num\">%lld</td><td class=\"num\">%lld</td><td class=\"num\">%lld</td></tr>\n",
                        (long long)p->cds[i].cards, (long long)p->cds[i].accepted, (long long)p->cds[i].overridden);
    }
    if (!p->ncds)
        fhir_buf_puts(&b, "<tr><td colspan=\"4\">No card shown yet.</td></tr>\n");
    fhir_buf_puts(&b, "</tbody></table>\n");
    if (p->novr) {
        fhir_buf_puts(&b, "<h3>Why cards were overridden</h3>\n<ul id=\"cds-overrides\">\n");
        for (size_t k = 0; k < p->novr; k++) {
            fhir_buf_puts(&b, "<li>");
            web_esc(&b, p->ovr[k].reason);
            fhir_buf_printf(&b, ": %lld</li>\n", (long long)p->ovr[k].n);
        }
        fhir_buf_puts(&b, "</ul>\n");
    }
    program_free(p);
    web_page_send(r, &b, 200);
}

void web_h_program_csv(serve_req *r, void *ud)
{
    web *w = ud;
    fhir_error err;
    fhir_error_clear(&err);
    program *p = program_load(w, &err);
    if (!p) {
        serve_error(r, 500, err.msg);
        return;
    }
    fhir_buf b;
    fhir_buf_init(&b, WEB_PAGE_MAX);
    fhir_buf_puts(&b, "section,month,key,value\n");
    for (size_t i = 0; i < p->nmonths; i++)
        for (size_t k = 0; k < N_STAGES; k++)
            fhir_buf_printf(&b, "funnel,%s,%s,%lld\n", p->month[i], STAGES[k], (long long)p->n[i][k]);
    for (size_t i = 0; i < p->nmonths; i++)
        if (p->ndays[i]) {
            size_t n = p->ndays[i];
            double med = n % 2 ? (double)p->days[i][n / 2] : ((double)p->days[i][n / 2 - 1] + (double)p->days[i][n / 2]) / 2;
            fhir_buf_printf(&b, "relapse_to_sent_days,%s,count,%zu\nrelapse_to_sent_days,%s,median,%.1f\n", p->month[i], n,
                            p->month[i], med);
        }
    for (size_t c = 0; c < p->ncenters; c++)
        for (int s = 0; s < REFER_N_STATES; s++)
            if (p->by_center[c][s]) {
                fhir_buf_puts(&b, "center,,");
                /* center ids are FHIR-like ids; quote anyway */
                fhir_buf_putc(&b, '"');
                for (const char *q = p->center[c]; *q; q++) {
                    if (*q == '"')
                        fhir_buf_putc(&b, '"');
                    fhir_buf_putc(&b, *q);
                }
                fhir_buf_printf(&b, ":%s\",%lld\n", refer_state_name((refer_state)s), (long long)p->by_center[c][s]);
            }
    for (size_t i = 0; i < p->ncodes; i++)
        fhir_buf_printf(&b, "decline_reason,,%s,%lld\n", p->code[i], (long long)p->code_n[i]);
    for (size_t i = 0; i < p->ncds; i++)
        fhir_buf_printf(&b, "cds,,%s:cards,%lld\ncds,,%s:accepted,%lld\ncds,,%s:overridden,%lld\n", p->cds[i].service,
                        (long long)p->cds[i].cards, p->cds[i].service, (long long)p->cds[i].accepted, p->cds[i].service,
                        (long long)p->cds[i].overridden);
    for (size_t k = 0; k < p->novr; k++) {
        fhir_buf_puts(&b, "cds_override_reason,,\"");
        for (const char *q = p->ovr[k].reason; *q; q++) {
            if (*q == '"')
                fhir_buf_putc(&b, '"');
            fhir_buf_putc(&b, *q);
        }
        fhir_buf_printf(&b, "\",%lld\n", (long long)p->ovr[k].n);
    }
    program_free(p);
    serve_add_header(r, "Content-Disposition", "attachment; filename=\"cartgate-program.csv\"");
    serve_reply(r, 200, "text/csv; charset=utf-8", b.data ? b.data : "", b.len);
    fhir_buf_free(&b);
}
