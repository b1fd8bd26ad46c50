/* web_intake — a center's intake inbox (web.h): received referrals, the packet, the answer. */
#include "web_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fhir_alloc.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "intake_task.h"
#include "notify.h"
#include "packet.h"

#define INBOX_MAX 500

static const char *priority_words(const char *p, const char **cls)
{
    int r = p ? (!strcmp(p, "stat") ? 0 : !strcmp(p, "asap") ? 1 : !strcmp(p, "urgent") ? 2 : 3) : 3;
    *cls = r <= 1 ? "now" : r == 2 ? "soon" : "review";
    return r == 0 ? "Stat" : r == 1 ? "As soon as possible" : r == 2 ? "Urgent" : "Routine";
}

static const char *task_words(const char *s, const char *bs)
{
    if (!s)
        return "";
    if (!strcmp(s, "received") || !strcmp(s, "requested"))
        return "New, not yet answered";
    if (!strcmp(s, "accepted"))
        return "Accepted";
    if (!strcmp(s, "on-hold"))
        return "More information requested";
    if (!strcmp(s, "rejected"))
        return "Declined";
    if (!strcmp(s, "in-progress"))
        return bs && !strcmp(bs, "5.1.1") ? "Consult scheduled" : "In progress";
    if (!strcmp(s, "cancelled"))
        return "Cancelled by the referring site";
    if (!strcmp(s, "completed"))
        return "Completed";
    return s;
}

/* "2 d 3 h" since ms. */
static void age_words(fhir_buf *b, int64_t from_ms, int64_t now_ms)
{
    int64_t m = (now_ms - from_ms) / 60000;
    if (m < 0)
        m = 0;
    if (m < 60)
        fhir_buf_printf(b, "%lld min", (long long)m);
    else if (m < 24 * 60)
        fhir_buf_printf(b, "%lld h %lld min", (long long)(m / 60), (long long)(m % 60));
    else
        fhir_buf_printf(b, "%lld d %lld h", (long long)(m / 1440), (long long)(m % 1440 / 60));
}

static int waiting_days(web *w)
{
    return w->env.intake_waiting_days > 0 ? w->env.intake_waiting_days : 2;
}

static bool unanswered(const char *s)
{
    return s && (!strcmp(s, "received") || !strcmp(s, "requested"));
}

/* The referral's resources, parsed (into a): the Patient, the ServiceRequest, the Task and a
 * pseudo-Bundle of all of them (for packet_from_bundle). */
typedef struct refres {
    fhir_arena *a;
    const fhir_node *patient, *sr, *task;
    fhir_node *bundle, *entries;
} refres;

static int refres_cb(void *ctx, const store_intake_res *x)
{
    refres *r = ctx;
    if (!*x->json)
        return 0;
    fhir_error e;
    fhir_json_limits lim = {.max_bytes = strlen(x->json) + 1};
    fhir_node *n = fhir_json_parse(r->a, x->json, strlen(x->json), &lim, &e);
    if (!n)
        return 0;
    if (!strcmp(x->type, "Patient") && !r->patient)
        r->patient = n;
    else if (!strcmp(x->type, "ServiceRequest") && !r->sr)
        r->sr = n;
    else if (!strcmp(x->type, "Task") && !r->task)
        r->task = n;
    fhir_node *ent = fhir_node_new(r->a, FHIR_OBJECT);
    fhir_node_set(r->a, ent, "resource", n);
    fhir_node_append(r->a, r->entries, NULL, 0, ent);
    return 0;
}

static void refres_load(web *w, int64_t id, refres *r)
{
    r->bundle = fhir_node_new(r->a, FHIR_OBJECT);
    fhir_node_set_str(r->a, r->bundle, "resourceType", "Bundle");
    r->entries = fhir_node_set_arr(r->a, r->bundle, "entry");
    fhir_error e;
    fhir_error_clear(&e);
    store_intake_res_of_referral(w->env.st, id, refres_cb, r, &e);
}

static void patient_words(fhir_buf *b, const fhir_node *p)
{
    const fhir_node *nm = p ? fhir_node_first(fhir_node_get(p, "name")) : NULL;
    if (!nm) {
        fhir_buf_puts(b, "(no name sent)");
        return;
    }
    const char *text = fhir_node_str(fhir_node_get(nm, "text"));
    if (text) {
        web_esc(b, text);
        return;
    }
    size_t before = b->len;
    for (const fhir_node *g = fhir_node_first(fhir_node_get(nm, "given")); g; g = g->next)
        if (fhir_node_str(g)) {
            if (b->len > before)
                fhir_buf_puts(b, " ");
            web_esc(b, fhir_node_str(g));
        }
    const char *fam = fhir_node_str(fhir_node_get(nm, "family"));
    if (fam) {
        if (b->len > before)
            fhir_buf_puts(b, " ");
        web_esc(b, fam);
    }
}

/* ---- the inbox ------------------------------------------------------------------------------- */

typedef struct inbox_ctx {
    web *w;
    fhir_buf *b;
    int64_t now;
    size_t n, late;
} inbox_ctx;

static int inbox_row(void *ctx, const store_intake_ref *x)
{
    inbox_ctx *c = ctx;
    fhir_buf *b = c->b;
    const char *cls;
    const char *pw = priority_words(x->priority, &cls);
    bool late = unanswered(x->task_status) && notify_business_days(x->received_ms, c->now) >= waiting_days(c->w);
    c->late += late;
    refres rr = {.a = fhir_arena_new(0)};
    refres_load(c->w, x->id, &rr);
    fhir_buf_printf(b, "<tr%s><td class=\"num\"><a href=\"/ui/intake/%lld\">%lld</a></td>"
                       "<td><span class=\"urg urg-%s\">%s</span></td><td>",
                    late ? " class=\"late\"" : "", (long long)x->id, (long long)x->id, cls, pw);
    patient_words(b, rr.patient);
    fhir_buf_puts(b, "</td><td>");
    web_esc(b, rr.sr ? fhir_node_path_str(rr.sr, "reasonCode.text") : NULL);
    char d[16];
    web_day_ms(x->received_ms, d);
    fhir_buf_printf(b, "</td><td>%s</td><td class=\"num\">", d);
    age_words(b, x->received_ms, c->now);
    if (late)
        fhir_buf_printf(b, " <strong class=\"urg urg-now\">waiting over %d business days</strong>", waiting_days(c->w));
    fhir_buf_puts(b, "</td><td>");
    web_esc(b, task_words(x->task_status, x->business_status));
    if (x->consult && *x->consult) {
        fhir_buf_puts(b, "<br><span class=\"sub\">");
        web_esc(b, x->consult);
        fhir_buf_puts(b, "</span>");
    }
    fhir_buf_puts(b, "</td></tr>\n");
    fhir_arena_free(rr.a);
    c->n++;
    return 0;
}

void web_h_intake(serve_req *r, void *ud)
{
    web *w = ud;
    const char *all = serve_query(r, "all");
    bool show_all = all && !strcmp(all, "1");
    fhir_buf b;
    web_page_begin(w, r, &b, "Intake inbox", "intake");
    int64_t n_new = store_intake_ref_count(w->env.st, "received");
    fhir_buf_printf(&b, "<h1>Referrals received</h1>\n<p class=\"headline\">New, not yet answered: %lld · "
                        "highlighted when waiting %d business days or more</p>\n"
                        "<p><a href=\"/ui/intake%s\">%s</a></p>\n",
                    (long long)(n_new > 0 ? n_new : 0), waiting_days(w), show_all ? "" : "?all=1",
                    show_all ? "Show the open referrals only" : "Show every referral, answered ones too");
    fhir_buf_puts(&b, "<table class=\"list\" id=\"inbox\"><caption>Most urgent first, then oldest</caption>\n"
                      "<thead><tr><th scope=\"col\" class=\"num\">No.</th><th scope=\"col\">Urgency</th>"
                      "<th scope=\"col\">Patient</th><th scope=\"col\">Reason for referral</th>"
                      "<th scope=\"col\">Received</th><th scope=\"col\" class=\"num\">Waiting</th>"
                      "<th scope=\"col\">Answer</th></tr></thead>\n<tbody>\n");
    inbox_ctx c = {.w = w, .b = &b, .now = fhir_clock_now_ms()};
    fhir_error e;
    fhir_error_clear(&e);
    if (store_intake_ref_list(w->env.st, !show_all, INBOX_MAX, inbox_row, &c, &e) < 0) {
        fhir_buf_free(&b);
        web_page_problem(w, r, 500, "The inbox is not available", e.msg);
        return;
    }
    if (!c.n)
        fhir_buf_puts(&b, "<tr><td colspan=\"7\">No referral waits for an answer.</td></tr>\n");
    fhir_buf_puts(&b, "</tbody></table>\n");
    web_page_send(r, &b, 200);
}

/* ---- one referral ----------------------------------------------------------------------------- */

typedef struct one {
    bool found;
    int64_t id, received_ms;
    char priority[16], status[32], bs[16], client[128], consult[40];
} one;

static int one_cb(void *ctx, const store_intake_ref *x)
{
    one *o = ctx;
    o->found = true;
    o->id = x->id;
    o->received_ms = x->received_ms;
    snprintf(o->priority, sizeof o->priority, "%s", x->priority ? x->priority : "");
    snprintf(o->status, sizeof o->status, "%s", x->task_status ? x->task_status : "");
    snprintf(o->bs, sizeof o->bs, "%s", x->business_status ? x->business_status : "");
    snprintf(o->client, sizeof o->client, "%s", x->client_id ? x->client_id : "");
    snprintf(o->consult, sizeof o->consult, "%s", x->consult ? x->consult : "");
    return 0;
}

static bool load_one(web *w, serve_req *r, one *o)
{
    int64_t id;
    fhir_error e;
    fhir_error_clear(&e);
    memset(o, 0, sizeof *o);
    if (!serve_parse_id(serve_param(r, "id"), &id) || store_intake_ref_get(w->env.st, id, one_cb, o, &e) != 1) {
        web_page_problem(w, r, 404, "No such referral", "There is no referral with that number in the inbox.");
        return false;
    }
    return true;
}

/* What happened at intake, in words (the audit's action names are for the log and the API). */
static const char *intake_action_words(const char *action)
{
    static const char *const words[][2] = {
        {"intake-received", "Received"},      {"accept", "Accepted"},
        {"request-info", "More information requested"}, {"decline", "Declined"},
        {"schedule", "Consult scheduled"},    {"cancelled-by-site", "Cancelled by the referring site"},
    };
    for (size_t i = 0; action && i < sizeof words / sizeof words[0]; i++)
        if (!strcmp(action, words[i][0]))
            return words[i][1];
    return action ? action : "";
}

static int hist_row(void *ctx, const store_audit_row *a)
{
    fhir_buf *b = ctx;
    fhir_buf_puts(b, "<tr>");
    web_history_cells(b, a, intake_action_words(a->action));
    fhir_buf_puts(b, "<td>");
    web_esc(b, a->reason ? a->reason : a->detail);
    fhir_buf_puts(b, "</td></tr>\n");
    return 0;
}

static void act_form(fhir_buf *b, serve_req *r, int64_t id, const char *act, const char *label)
{
    fhir_buf_printf(b, "<form method=\"post\" class=\"act\" action=\"/ui/intake/%lld/%s\">", (long long)id, act);
    web_csrf_field(b, r);
    (void)label;
}

void web_h_intake_one(serve_req *r, void *ud)
{
    web *w = ud;
    one o;
    if (!load_one(w, r, &o))
        return;
    refres rr = {.a = fhir_arena_new(0)};
    refres_load(w, o.id, &rr);
    char title[64];
    snprintf(title, sizeof title, "Referral %lld", (long long)o.id);
    fhir_buf b;
    web_page_begin(w, r, &b, title, "intake");
    const char *cls;
    const char *pw = priority_words(o.priority[0] ? o.priority : NULL, &cls);
    int64_t now = fhir_clock_now_ms();
    fhir_buf_printf(&b, "<h1>Referral %lld: ", (long long)o.id);
    patient_words(&b, rr.patient);
    fhir_buf_printf(&b, "</h1>\n<p class=\"headline\"><span class=\"urg urg-%s\">%s</span> · <span id=\"answer\">", cls, pw);
    web_esc(&b, task_words(o.status, o.bs));
    fhir_buf_puts(&b, "</span>");
    if (o.consult[0]) {
        fhir_buf_puts(&b, " · consult ");
        web_esc(&b, o.consult);
    }
    char d[16];
    web_day_ms(o.received_ms, d);
    fhir_buf_printf(&b, " · received %s, ", d);
    age_words(&b, o.received_ms, now);
    fhir_buf_puts(&b, " ago · from ");
    web_esc(&b, o.client);
    fhir_buf_puts(&b, "</p>\n");
    const char *done = serve_query(r, "done");
    if (done && strlen(done) < 32) {
        fhir_buf_puts(&b, "<p class=\"note\" role=\"status\" id=\"done\">Recorded: ");
        web_esc(&b, intake_action_words(done));
        fhir_buf_puts(&b, ". The referring site sees it at its next check.</p>\n");
    }
    /* the answer */
    if (!intake_task_over(o.status)) {
        fhir_buf_puts(&b, "<section class=\"actions\" aria-labelledby=\"act-h\"><h2 id=\"act-h\">Answer</h2>\n");
        act_form(&b, r, o.id, "accept", NULL);
        fhir_buf_puts(&b, "<label for=\"acc-note\">Note (optional)</label><input id=\"acc-note\" name=\"text\" maxlength=\"1000\">"
                          "<button type=\"submit\" id=\"do-accept\">Accept</button></form>\n");
        act_form(&b, r, o.id, "schedule", NULL);
        fhir_buf_puts(&b, "<label for=\"sch-when\">Consult date and time</label>"
                          "<input id=\"sch-when\" name=\"when\" type=\"datetime-local\" required>"
                          "<label for=\"sch-note\">Note (optional)</label><input id=\"sch-note\" name=\"text\" maxlength=\"1000\">"
                          "<button type=\"submit\" id=\"do-schedule\">Schedule consult</button></form>\n");
        act_form(&b, r, o.id, "info", NULL);
        fhir_buf_puts(&b, "<label for=\"inf-text\">What is needed</label>"
                          "<input id=\"inf-text\" name=\"text\" required maxlength=\"1000\">"
                          "<button type=\"submit\" id=\"do-info\">Request more information</button></form>\n");
        act_form(&b, r, o.id, "decline", NULL);
        fhir_buf_puts(&b, "<label for=\"dec-code\">Reason</label><select id=\"dec-code\" name=\"code\" required>"
                          "<option value=\"\">Choose…</option>");
        for (size_t i = 0; intake_decline_reasons[i].code; i++)
            fhir_buf_printf(&b, "<option value=\"%s\">%s</option>", intake_decline_reasons[i].code,
                            intake_decline_reasons[i].words);
        fhir_buf_puts(&b, "</select><label for=\"dec-text\">Details</label><input id=\"dec-text\" name=\"text\" maxlength=\"1000\">"
                          "<button type=\"submit\" id=\"do-decline\">Decline</button></form>\n</section>\n");
    }
    /* the packet */
    fhir_buf_printf(&b, "<section aria-labelledby=\"pk-h\"><h2 id=\"pk-h\">Referral packet</h2>\n"
                        "<p><a href=\"/ui/intake/%lld/packet.pdf\">Download the packet as PDF (to print or fax)</a></p>\n",
                    (long long)o.id);
    fhir_error e;
    fhir_error_clear(&e);
    fhir_node *pk = packet_from_bundle(rr.a, rr.bundle, &e);
    fhir_buf txt;
    fhir_buf_init(&txt, WEB_PAGE_MAX / 2);
    if (pk && packet_write_text(pk, &txt, &e) == 0) {
        fhir_buf_puts(&b, "<pre class=\"packet\" tabindex=\"0\">");
        web_esc(&b, fhir_buf_cstr(&txt));
        fhir_buf_puts(&b, "</pre>\n");
    } else {
        fhir_buf_puts(&b, "<p>The referral carries no packet: ");
        web_esc(&b, e.msg);
        fhir_buf_puts(&b, ".</p>\n");
        const char *reason = rr.sr ? fhir_node_path_str(rr.sr, "reasonCode.text") : NULL;
        if (reason) {
            fhir_buf_puts(&b, "<p>Reason for referral: ");
            web_esc(&b, reason);
            fhir_buf_puts(&b, "</p>\n");
        }
    }
    fhir_buf_free(&txt);
    fhir_buf_puts(&b, "</section>\n<section aria-labelledby=\"h-h\"><h2 id=\"h-h\">History</h2>\n"
                      "<table class=\"list\" id=\"history\"><thead><tr><th scope=\"col\">When (UTC)</th><th scope=\"col\">Who</th>"
                      "<th scope=\"col\">What</th><th scope=\"col\">Reason</th></tr></thead><tbody>\n");
    store_intake_audit_list(w->env.st, o.id, hist_row, &b, &e);
    fhir_buf_puts(&b, "</tbody></table></section>\n<p><a href=\"/ui/intake\">Back to the inbox</a></p>\n");
    fhir_arena_free(rr.a);
    web_page_send(r, &b, 200);
}

void web_h_intake_pdf(serve_req *r, void *ud)
{
    web *w = ud;
    one o;
    if (!load_one(w, r, &o))
        return;
    refres rr = {.a = fhir_arena_new(0)};
    refres_load(w, o.id, &rr);
    fhir_error e;
    fhir_error_clear(&e);
    fhir_node *pk = packet_from_bundle(rr.a, rr.bundle, &e);
    char path[] = "/tmp/cartgate-packet-XXXXXX";
    int fd = pk ? mkstemp(path) : -1;
    if (fd >= 0)
        close(fd);
    fhir_buf f;
    fhir_buf_init(&f, WEB_PAGE_MAX);
    int rc = fd >= 0 && packet_write_pdf(pk, path, &e) == 0 && fhir_buf_read_file(&f, path, &e) == 0 ? 0 : -1;
    if (fd >= 0)
        unlink(path);
    fhir_arena_free(rr.a);
    if (rc) {
        fhir_buf_free(&f);
        web_page_problem(w, r, pk ? 500 : 404, "No packet", e.msg[0] ? e.msg : "the packet could not be written");
        return;
    }
    char disp[96];
    snprintf(disp, sizeof disp, "attachment; filename=\"referral-%lld.pdf\"", (long long)o.id);
    serve_add_header(r, "Content-Disposition", disp);
    serve_reply(r, 200, "application/pdf", f.data, f.len);
    fhir_buf_free(&f);
}

static void intake_do(serve_req *r, web *w, intake_act_kind kind)
{
    one o;
    if (!load_one(w, r, &o))
        return;
    const char *when = serve_form(r, "when");
    intake_act_in in = {.kind = kind, .code = serve_form(r, "code"), .text = serve_form(r, "text"), .when = when};
    store_actor who = web_actor(r, NULL, ROLE_INTAKE);
    who.source = serve_source(r);
    fhir_error e;
    fhir_error_clear(&e);
    if (intake_act(w->env.st, o.id, &in, &who, NULL, &e)) {
        web_page_problem(w, r, e.code >= 400 && e.code < 600 ? e.code : 500, "Not recorded", e.msg);
        return;
    }
    fhir_log(FHIR_LOG_INFO, "intake.act", "referral=%lld act=%s user=%lld", (long long)o.id, intake_act_name(kind),
             (long long)(serve_principal(r) ? serve_principal(r)->user_id : 0));
    char loc[96];
    snprintf(loc, sizeof loc, "/ui/intake/%lld?done=%s", (long long)o.id, intake_act_name(kind));
    serve_redirect(r, loc);
}

void web_h_intake_accept(serve_req *r, void *ud) { intake_do(r, ud, INTAKE_ACT_ACCEPT); }
void web_h_intake_info(serve_req *r, void *ud) { intake_do(r, ud, INTAKE_ACT_INFO); }
void web_h_intake_decline(serve_req *r, void *ud) { intake_do(r, ud, INTAKE_ACT_DECLINE); }
void web_h_intake_schedule(serve_req *r, void *ud) { intake_do(r, ud, INTAKE_ACT_SCHEDULE); }
