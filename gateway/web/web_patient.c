/* web_patient — the patient page (why the patient is on the list, what to do) and the acts
 * on it: approve, decline with a coded reason, re-route; every act through refer_do and the
 * one proposal path (propose.h), audited with the person (web.h). */
#include "web_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access.h"
#include "fhir_alloc.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "packet.h"
#include "referral.h"
#include "role.h"
#include "route.h"
#include "screen.h"

#define VERDICT_JSON_MAX (4u << 20)
#define PAYLOAD_MAX (64u << 20)

/* ---- the patient screened now (the one screening path, screen.h) ---------------------------- */

typedef struct pview {
    fhir_arena *a;
    const fhir_node **res;
    size_t nres;
    web_runtime rt;
    screen *sc;
    fhir_buf vj;
    const fhir_node *verdict;   /* the screen JSON, parsed */
} pview;

static void pview_free(pview *v)
{
    screen_free(v->sc);
    free(v->res);
    fhir_buf_free(&v->vj);
    fhir_arena_free(v->a);
    memset(v, 0, sizeof *v);
}

/* 1 screened, 0 nothing cached for the patient, -1 error (err). */
static int pview_load(web *w, const char *pid, pview *v, fhir_error *err)
{
    memset(v, 0, sizeof *v);
    v->a = fhir_arena_new(0);
    fhir_buf_init(&v->vj, VERDICT_JSON_MAX);
    v->rt.as_of_days = -1;
    if (w->env.runtime)
        w->env.runtime(w->env.ud, &v->rt);
    if (!v->rt.rules || !v->rt.tables || !w->env.resources)
        return fhir_error_set(err, "the criteria are not loaded");
    elig_records rec = {0, 0};
    if (w->env.resources(w->env.ud, pid, v->a, &v->res, &v->nres, &rec, err))
        return -1;
    if (v->nres == 0)
        return 0;
    map_profile_opts o;
    map_profile_opts_default(&o);
    if (v->rt.as_of_days >= 0)
        o.as_of_days = v->rt.as_of_days;
    v->sc = screen_new(v->rt.tables, v->rt.rules, &o);
    if (screen_patient(v->sc, v->res, v->nres, err))
        return -1;
    screen_set_records(v->sc, &rec); /* the page says when it was made from part of the chart */
    if (screen_write_verdict_json(v->sc, pid, &v->vj))
        return fhir_error_set(err, "the verdict is too large");
    fhir_error e;
    fhir_json_limits lim = {.max_bytes = v->vj.len + 1};
    v->verdict = fhir_json_parse(v->a, v->vj.data, v->vj.len, &lim, &e);
    return 1;
}

/* ---- the patient's referrals ------------------------------------------------------------------ */

typedef struct pref {
    int64_t id, supersedes, created_ms;
    refer_state state;
    char center[128];
    char task[32];
    int compose_cause;                          /* refer_compose_cause: not prepared, why */
    char compose_error[REFER_COMPOSE_ERROR_MAX]; /* in words */
} pref;

typedef struct prefs {
    pref v[64];
    size_t n;
    char *latest_route; /* the latest referral's route_json (prefs_read); caller frees */
} prefs;

static int pref_cb(void *ctx, const refer_record *r)
{
    prefs *l = ctx;
    pref *p = &l->v[l->n < 64 ? l->n++ : 63];
    p->id = r->id;
    p->supersedes = r->supersedes;
    p->created_ms = r->created_ms;
    p->state = r->state;
    snprintf(p->center, sizeof p->center, "%s", r->center_id ? r->center_id : "");
    snprintf(p->task, sizeof p->task, "%s", r->task_status ? r->task_status : "");
    p->compose_cause = r->compose_cause;
    snprintf(p->compose_error, sizeof p->compose_error, "%s", r->compose_error ? r->compose_error : "");
    return 0;
}

static int prefs_load(web *w, const char *pid, prefs *l, fhir_error *err)
{
    l->n = 0;
    refer_filter rf = {.state = -1, .patient_id = pid, .summary = true};
    return refer_list(w->env.st, &rf, pref_cb, l, err) < 0 ? -1 : 0;
}

/* The same, then each referral not yet sent (pending approval, approved) and the latest read
 * in full: their texts composed when nobody has yet (refer_get), or why they could not be
 * (compose_cause), and the latest one's route kept. */
static int prefs_read(web *w, const char *pid, prefs *l, fhir_error *err)
{
    if (prefs_load(w, pid, l, err))
        return -1;
    for (size_t i = 0; i < l->n; i++) {
        pref *p = &l->v[i];
        bool latest = i + 1 == l->n;
        if (!latest && p->state != REFER_PENDING_APPROVAL && p->state != REFER_APPROVED)
            continue;
        refer_record rec;
        if (refer_get(w->env.st, p->id, &rec, err) != 1)
            continue;
        p->state = rec.state; /* a proposal the composer withdrew */
        p->compose_cause = rec.compose_cause;
        snprintf(p->compose_error, sizeof p->compose_error, "%s", rec.compose_error ? rec.compose_error : "");
        if (latest && rec.route_json)
            l->latest_route = fhir_xstrdup(rec.route_json);
        refer_record_free(&rec);
    }
    return 0;
}

static void prefs_free(prefs *l)
{
    if (l)
        free(l->latest_route);
    free(l);
}

/* An open referral of the patient that could not be prepared (the latest first). */
static const pref *prefs_unprepared(const prefs *l)
{
    for (size_t i = l->n; i-- > 0;)
        if (l->v[i].compose_cause != REFER_COMPOSE_OK && !refer_state_terminal(l->v[i].state))
            return &l->v[i];
    return NULL;
}

/* The proposal awaiting approval (not a re-route), the pending re-route, the one at a center. */
static const pref *prefs_find(const prefs *l, int kind)
{
    for (size_t i = l->n; i-- > 0;) {
        const pref *p = &l->v[i];
        if (kind == 0 && p->state == REFER_PENDING_APPROVAL && !p->supersedes)
            return p;
        if (kind == 1 && p->state == REFER_PENDING_APPROVAL && p->supersedes)
            return p;
        if (kind == 2 && (p->state == REFER_SENT || p->state == REFER_ACCEPTED || p->state == REFER_SCHEDULED))
            return p;
        if (kind == 3 && p->state == REFER_FAILED)
            return p;
    }
    return NULL;
}

/* ---- pieces of the page ------------------------------------------------------------------------- */

#define WEB_CENTERS_SHOWN 3u /* ranked centers in view on the patient page; the rest folded */

/* Evidence in words, as the explanation says it (elig_plain_words): no table or document
 * citations, no record references. */
static void plain(fhir_buf *b, const char *ev)
{
    if (!ev)
        return;
    fhir_buf w;
    fhir_buf_init(&w, ELIG_WORDS_MAX);
    elig_plain_words(&w, ev);
    web_esc(b, fhir_buf_cstr(&w));
    fhir_buf_free(&w);
}

typedef struct gate_ctx {
    fhir_buf *b;
} gate_ctx;

static void gate_row(void *ud, const char *label, elig_gate_state st, const char *facts)
{
    gate_ctx *g = ud;
    static const char *const ICON[] = {"✗", "?", "✓"};
    static const char *const WORD[] = {"not met", "unknown", "met"};
    static const char *const CLS[] = {"failed", "unknown", "met"};
    fhir_buf_printf(g->b, "<tr class=\"gate-%s\"><td><span aria-hidden=\"true\">%s</span> %s</td><td>", CLS[st], ICON[st],
                    WORD[st]);
    web_esc(g->b, label);
    fhir_buf_puts(g->b, "</td><td>");
    plain(g->b, facts);
    fhir_buf_puts(g->b, "</td></tr>\n");
}

static void indication_block(fhir_buf *b, const elig_ruleset *rs, const elig_factset *fs, const elig_result *res,
                             size_t i, elig_category cat)
{
    elig_label lb;
    memset(&lb, 0, sizeof lb);
    elig_ruleset_label(rs, i, &lb);
    const char *brand = lb.brand, *desc = elig_ruleset_description(rs, i), *doc = lb.document, *rev = lb.revision,
               *url = lb.url;
    elig_display d;
    elig_display_of(rs, elig_ruleset_key(rs, i), &d);
    fhir_buf_printf(b, "<section class=\"ind\" aria-labelledby=\"ind-%zu\"><h3 id=\"ind-%zu\">", i, i);
    fhir_buf pw;
    fhir_buf_init(&pw, WEB_PAGE_MAX);
    elig_display_write_product(&d, &pw);
    web_esc(b, pw.len ? fhir_buf_cstr(&pw) : brand);
    fhir_buf_free(&pw);
    fhir_buf_puts(b, " — ");
    web_esc(b, d.text);
    fhir_buf_printf(b, " <span class=\"cat cat-%s\">%s</span></h3>\n<p class=\"desc\">",
                    cat == ELIG_ELIGIBLE ? "eligible" : cat == ELIG_POSSIBLY_ELIGIBLE ? "possible" : "not",
                    cat == ELIG_ELIGIBLE ? "eligible" : cat == ELIG_POSSIBLY_ELIGIBLE ? "possibly eligible" : "not eligible");
    web_esc(b, desc);
    fhir_buf_puts(b, "</p>\n<table class=\"gates\"><thead><tr><th scope=\"col\">Result</th><th scope=\"col\">Label "
                     "requirement</th><th scope=\"col\">Evidence (record, date, value)</th></tr></thead><tbody>\n");
    gate_ctx g = {b};
    elig_result_gates(rs, fs, res, i, gate_row, &g);
    fhir_buf_puts(b, "</tbody></table>\n<p class=\"cite\">Label: ");
    web_esc(b, doc);
    fhir_buf_puts(b, ", revised ");
    web_esc(b, rev);
    if (url && (!strncmp(url, "https://", 8) || !strncmp(url, "http://", 7))) {
        fhir_buf_puts(b, " — <a href=\"");
        web_esc(b, url);
        fhir_buf_puts(b, "\" rel=\"noreferrer\">DailyMed</a>");
    }
    fhir_buf_puts(b, "</p></section>\n");
}

static void str_list(fhir_buf *b, const fhir_node *arr, const char *prefix_filter, size_t skip)
{
    for (const fhir_node *n = fhir_node_first(arr); n; n = n->next) {
        const char *s = fhir_node_str(n);
        if (!s || (prefix_filter && strncmp(s, prefix_filter, strlen(prefix_filter))))
            continue;
        fhir_buf_puts(b, "<li>");
        plain(b, s + (prefix_filter ? skip : 0));
        fhir_buf_puts(b, "</li>\n");
    }
}

static const char *const LAB_FACTS[] = {"ecog", "anc", "alc", "platelets", "hemoglobin", "creatinine", "crcl", "egfr",
                                        "bilirubin", "ast", "alt", "lvef", "spo2", NULL};

static void labs_block(fhir_buf *b, const map_profile *p)
{
    fhir_buf_puts(b, "<table class=\"labs\"><thead><tr><th scope=\"col\">Measure</th><th scope=\"col\">Value</th>"
                     "<th scope=\"col\">Record and date</th></tr></thead><tbody>\n");
    for (size_t i = 0; LAB_FACTS[i]; i++) {
        const map_fact *f = map_profile_fact(p, LAB_FACTS[i]);
        if (!f)
            continue;
        fhir_buf_puts(b, "<tr><th scope=\"row\">");
        web_esc(b, elig_words(LAB_FACTS[i]));
        fhir_buf_puts(b, "</th><td class=\"num\">");
        if (f->known)
            fhir_buf_printf(b, "%g", f->num);
        else
            fhir_buf_puts(b, "not recorded");
        fhir_buf_puts(b, "</td><td>");
        plain(b, f->evidence);
        fhir_buf_puts(b, "</td></tr>\n");
    }
    fhir_buf_puts(b, "</tbody></table>\n");
}

/* The centers of the route the proposal was made with (or, before any referral, ranked now
 * the same way; `why_none` says why none are when ranking was not possible): candidates
 * ranked, exclusions. */
static void centers_block(web *w, fhir_buf *b, const fhir_node *route, bool ranked_now, const char *why_none)
{
    const fhir_node *cands = fhir_node_get(route, "candidates");
    if (!route || !cands) {
        fhir_buf_puts(b, "<p>No center ranked");
        if (why_none && *why_none) {
            fhir_buf_puts(b, ": ");
            web_esc(b, why_none);
        }
        fhir_buf_puts(b, ".</p>\n");
        return;
    }
    if (ranked_now)
        fhir_buf_puts(b, "<p class=\"note\">No referral yet: the centers a referral would go to, ranked today "
                         "(nearest suitable first).</p>\n");
    if (!fhir_node_first(cands))
        fhir_buf_puts(b, "<p>No accredited center in the directory offers what this patient needs.</p>\n");
    const char *origin_note = fhir_node_path_str(route, "origin.note");
    if (fhir_node_first(cands))
        fhir_buf_puts(b, "<ol class=\"centers\">\n");
    size_t nc = fhir_node_count(cands), k = 0;
    for (const fhir_node *c = fhir_node_first(cands); c; c = c->next, k++) {
        /* the first few in view; the rest, farther or serving less, one click away */
        if (k == WEB_CENTERS_SHOWN && nc > WEB_CENTERS_SHOWN + 1)
            fhir_buf_printf(b, "</ol>\n<details class=\"more-centers\"><summary>%zu more center%s, "
                               "farther away or serving fewer of the products</summary>\n"
                               "<ol class=\"centers\" start=\"%zu\">\n",
                            nc - k, nc - k == 1 ? "" : "s", k + 1);
        int64_t mins = 0;
        const fhir_node *tm = fhir_node_get(c, "travel_minutes");
        double dm = 0;
        if (tm && fhir_node_double(tm, &dm))
            mins = (int64_t)(dm + 0.5);
        fhir_buf_puts(b, "<li><strong>");
        web_esc(b, fhir_node_str(fhir_node_get(c, "name")));
        fhir_buf_puts(b, "</strong>, ");
        web_esc(b, fhir_node_str(fhir_node_get(c, "city")));
        fhir_buf_puts(b, " ");
        web_esc(b, fhir_node_str(fhir_node_get(c, "state")));
        double km = 0;
        fhir_node_double(fhir_node_get(c, "km"), &km);
        fhir_buf_printf(b, " — about %lld h %02lld min by road (%.0f km)", (long long)(mins / 60),
                        (long long)(mins % 60), km);
        if (fhir_node_bool(fhir_node_get(c, "beyond_stay_near"), false)) {
            double days = 0;
            fhir_node_double(fhir_node_path(route, "assumptions.stay_near_days"), &days);
            if (days >= 1)
                fhir_buf_printf(b, "; the patient will need lodging near the center for the %.0f-day "
                                   "post-infusion monitoring", days);
            else
                fhir_buf_puts(b, "; the patient will need lodging near the center for the monitoring weeks");
        }
        fhir_buf_puts(b, "<br><span class=\"sub\">");
        fhir_buf why;
        fhir_buf_init(&why, ROUTE_EXPLANATION_MAX);
        route_json_reason_rest(route, c, &why); /* the time, distance and lodging said above */
        web_esc(b, fhir_buf_cstr(&why));
        fhir_buf_free(&why);
        fhir_buf_puts(b, "</span></li>\n");
    }
    if (fhir_node_first(cands))
        fhir_buf_puts(b, nc > WEB_CENTERS_SHOWN + 1 ? "</ol></details>\n" : "</ol>\n");
    const fhir_node *ex = fhir_node_get(route, "excluded");
    if (fhir_node_first(ex)) {
        fhir_buf_puts(b, "<h3>Excluded centers</h3>\n<ul class=\"excluded\">\n");
        for (const fhir_node *e = fhir_node_first(ex); e; e = e->next) {
            fhir_buf_puts(b, "<li>");
            web_esc(b, web_center_name(w, fhir_node_str(fhir_node_get(e, "center"))));
            fhir_buf_puts(b, ": ");
            web_esc(b, fhir_node_str(fhir_node_get(e, "reason")));
            fhir_buf_puts(b, "</li>\n");
        }
        fhir_buf_puts(b, "</ul>\n");
    }
    if (origin_note && *origin_note) {
        fhir_buf_puts(b, "<p class=\"note\">Travel from: ");
        web_esc(b, origin_note);
        fhir_buf_puts(b, "</p>\n");
    }
}

/* The center chooser of a form: the ranked candidates, `selected` (or the first) chosen. */
static void center_select(fhir_buf *b, const fhir_node *route, const char *selected, const char *except,
                          const char *id)
{
    fhir_buf_printf(b, "<label for=\"%s\">Center</label><select id=\"%s\" name=\"center\">", id, id);
    bool first = true;
    for (const fhir_node *c = fhir_node_first(fhir_node_get(route, "candidates")); c; c = c->next) {
        const char *cid = fhir_node_str(fhir_node_get(c, "center"));
        if (!cid || (except && !strcmp(cid, except)))
            continue;
        bool sel = selected ? !strcmp(selected, cid) : first;
        first = false;
        fhir_buf_puts(b, "<option value=\"");
        web_esc(b, cid);
        fhir_buf_printf(b, "\"%s>", sel ? " selected" : "");
        web_esc(b, fhir_node_str(fhir_node_get(c, "name")));
        fhir_buf_puts(b, "</option>");
    }
    fhir_buf_puts(b, "</select>");
}

static const struct {
    const char *code, *words;
} DECLINE[] = {
    {"not_candidate", "Not a candidate"},
    {"patient_declined", "Patient declined"},
    {"referred_elsewhere", "Already referred elsewhere"},
    {"hospice", "Hospice or comfort care"},
    {"other", "Other"},
};

static void actions_block(web *w, serve_req *r, fhir_buf *b, const char *pid, const prefs *l, const fhir_node *route)
{
    if (!web_may(r, ROLE_CLINICIAN) && !web_may(r, ROLE_ADMIN))
        return;
    const pref *pending = prefs_find(l, 0), *reroute = prefs_find(l, 1), *atc = prefs_find(l, 2), *failed = prefs_find(l, 3);
    const pref *unprep = prefs_unprepared(l);
    fhir_buf_puts(b, "<section class=\"actions\" aria-labelledby=\"act-h\"><h2 id=\"act-h\">Act</h2>\n");
    if (unprep) { /* why its summary, route and package are missing, and what to do */
        fhir_buf_printf(b, "<div class=\"unprepared\" id=\"unprepared\" role=\"alert\" data-cause=\"%s\" "
                           "data-referral=\"%lld\"><p><strong>Referral %lld (",
                        refer_compose_cause_name(unprep->compose_cause), (long long)unprep->id, (long long)unprep->id);
        web_esc(b, web_state_words(refer_state_name(unprep->state)));
        fhir_buf_puts(b, ") could not be prepared.</strong> ");
        web_esc(b, unprep->compose_error[0] ? unprep->compose_error : refer_compose_cause_words(unprep->compose_cause));
        fhir_buf_puts(b, "</p>");
        if (unprep->compose_cause == REFER_COMPOSE_CENTER_GONE)
            fhir_buf_puts(b, fhir_node_first(fhir_node_get(route, "candidates"))
                                 ? "<p>The centers ranked today are below; choose one here.</p>"
                                 : "<p>No center is ranked for this patient today.</p>");
        fhir_buf_puts(b, "</div>\n");
    }
    /* an approved referral (not sent) whose center is no longer a candidate: re-route it */
    const pref *gone = unprep && unprep->state == REFER_APPROVED && unprep->compose_cause == REFER_COMPOSE_CENTER_GONE &&
                               fhir_node_first(fhir_node_get(route, "candidates"))
                           ? unprep
                           : NULL;
    if (web_may(r, ROLE_CLINICIAN)) {
        if (pending) {
            fhir_buf_puts(b, "<form method=\"post\" class=\"act\" action=\"/ui/patients/");
            web_esc(b, pid);
            fhir_buf_puts(b, "/approve\">");
            web_csrf_field(b, r);
            fhir_buf_printf(b, "<input type=\"hidden\" name=\"referral\" value=\"%lld\"><h3>Approve the referral</h3>",
                            (long long)pending->id);
            center_select(b, route, pending->center, NULL, "approve-center");
            fhir_buf_puts(b, "<label for=\"approve-note\">Note to the center (optional)</label>"
                             "<textarea id=\"approve-note\" name=\"note\" rows=\"2\" maxlength=\"1000\"></textarea>"
                             "<button type=\"submit\" class=\"primary\">Approve and send</button></form>\n");
        }
        if (reroute) {
            fhir_buf_puts(b, "<form method=\"post\" class=\"act\" action=\"/ui/patients/");
            web_esc(b, pid);
            fhir_buf_printf(b, "/reroute\">");
            web_csrf_field(b, r);
            fhir_buf_printf(b, "<input type=\"hidden\" name=\"referral\" value=\"%lld\"><h3>Re-route proposed</h3>"
                               "<p>The screener proposes sending this patient to ",
                            (long long)reroute->id);
            web_esc(b, web_center_name(w, reroute->center));
            fhir_buf_printf(b, " instead (referral %lld). Approving cancels the referral at the first center, then "
                               "sends this one.</p><button type=\"submit\">Approve the re-route</button></form>\n",
                            (long long)reroute->supersedes);
        } else if (gone && !atc) {
            fhir_buf_puts(b, "<form method=\"post\" class=\"act\" id=\"reroute-unprepared\" action=\"/ui/patients/");
            web_esc(b, pid);
            fhir_buf_puts(b, "/reroute\">");
            web_csrf_field(b, r);
            fhir_buf_puts(b, "<h3>Re-route to another center</h3><p>Referral ");
            fhir_buf_printf(b, "%lld to ", (long long)gone->id);
            web_esc(b, web_center_name(w, gone->center));
            fhir_buf_puts(b, " was approved but cannot be sent there. It goes to the center chosen here instead.</p>");
            center_select(b, route, NULL, gone->center, "reroute-center");
            fhir_buf_puts(b, "<label for=\"reroute-reason\">Reason</label><input id=\"reroute-reason\" name=\"reason\" "
                             "maxlength=\"500\" required value=\"center no longer a candidate\">"
                             "<button type=\"submit\">Re-route</button></form>\n");
        } else if (atc && fhir_node_count(fhir_node_get(route, "candidates")) > 1) {
            fhir_buf_puts(b, "<form method=\"post\" class=\"act\" action=\"/ui/patients/");
            web_esc(b, pid);
            fhir_buf_puts(b, "/reroute\">");
            web_csrf_field(b, r);
            fhir_buf_puts(b, "<h3>Re-route to another center</h3><p>Cancels the referral at ");
            web_esc(b, web_center_name(w, atc->center));
            fhir_buf_puts(b, " and sends it to the center chosen here.</p>");
            center_select(b, route, NULL, atc->center, "reroute-center");
            fhir_buf_puts(b, "<label for=\"reroute-reason\">Reason</label><input id=\"reroute-reason\" name=\"reason\" "
                             "maxlength=\"500\" required><button type=\"submit\">Re-route</button></form>\n");
        }
        fhir_buf_puts(b, "<form method=\"post\" class=\"act\" action=\"/ui/patients/");
        web_esc(b, pid);
        fhir_buf_puts(b, "/decline\">");
        web_csrf_field(b, r);
        fhir_buf_puts(b, "<h3>Decline</h3><p>Takes the patient off the worklist until the verdict changes.</p>"
                         "<fieldset><legend>Reason</legend>");
        for (size_t i = 0; i < sizeof DECLINE / sizeof DECLINE[0]; i++)
            fhir_buf_printf(b, "<label class=\"radio\"><input type=\"radio\" name=\"code\" value=\"%s\"%s> %s</label>",
                            DECLINE[i].code, i == 0 ? " required" : "", DECLINE[i].words);
        fhir_buf_puts(b, "</fieldset><label for=\"decline-text\">Details (required for Other)</label>"
                         "<input id=\"decline-text\" name=\"text\" maxlength=\"500\">"
                         "<button type=\"submit\">Decline</button></form>\n");
    }
    if (failed && web_may(r, ROLE_ADMIN)) {
        fhir_buf_printf(b, "<form method=\"post\" class=\"act\" action=\"/ui/referrals/%lld/retry\">", (long long)failed->id);
        web_csrf_field(b, r);
        fhir_buf_puts(b, "<h3>Delivery failed</h3><button type=\"submit\">Try the delivery again</button></form>\n");
    }
    fhir_buf_puts(b, "</section>\n");
}

static const char *done_words(const char *done)
{
    if (!done)
        return NULL;
    if (!strcmp(done, "approved"))
        return "Approved: the referral is on its way to the center.";
    if (!strcmp(done, "rerouted"))
        return "Re-route approved: the first center's referral is cancelled, then the new one is sent.";
    return NULL;
}

typedef struct route_ctx {
    char *route_json;
} route_ctx;

void web_h_patient(serve_req *r, void *ud)
{
    web *w = ud;
    const char *pid = serve_param(r, "id");
    if (!serve_id_ok(pid)) {
        web_page_problem(w, r, 400, "No such patient", "That is not a patient identifier.");
        return;
    }
    fhir_error err;
    fhir_error_clear(&err);
    pview v;
    int f = pview_load(w, pid, &v, &err);
    if (f <= 0) {
        pview_free(&v);
        if (f == 0)
            web_page_problem(w, r, 404, "No such patient", "Nothing is recorded for this patient.");
        else
            web_page_problem(w, r, 500, "The patient page is not available", err.msg);
        return;
    }
    prefs *l = fhir_xcalloc(1, sizeof *l);
    if (prefs_read(w, pid, l, &err)) {
        prefs_free(l);
        pview_free(&v);
        web_page_problem(w, r, 500, "The patient page is not available", err.msg);
        return;
    }
    /* the route of the latest referral */
    const fhir_node *route = NULL;
    if (l->latest_route) {
        fhir_error e;
        fhir_json_limits lim = {.max_bytes = strlen(l->latest_route) + 1};
        route = fhir_json_parse(v.a, l->latest_route, strlen(l->latest_route), &lim, &e);
    }
    /* no referral yet: the centers ranked now, the way a proposal would rank them */
    bool ranked_now = false;
    char why_none[FHIR_ERROR_MAX] = "";
    if (!route) {
        propose_opts po = v.rt.propose;
        po.rules = v.rt.rules;
        fhir_error e;
        fhir_error_clear(&e);
        route = propose_rank(v.a, &po, screen_profile(v.sc), screen_result(v.sc), &e);
        ranked_now = route != NULL && !l->n;
        if (!route)
            snprintf(why_none, sizeof why_none, "%s", e.msg);
    }
    int64_t today = web_today(w);
    web_person pp;
    web_person_read(w, v.a, pid, today, &pp);
    const map_profile *prof = screen_profile(v.sc);
    const elig_factset *fs = screen_facts(v.sc);
    const elig_result *res = screen_result(v.sc);
    const elig_ruleset *rs = v.rt.rules;
    elig_category cat = elig_result_category(res);

    fhir_buf b;
    web_page_begin(w, r, &b, *pp.name ? pp.name : "Patient", "worklist");
    const char *msg = done_words(serve_query(r, "done"));
    if (msg) {
        fhir_buf_puts(&b, "<p class=\"flash\" role=\"status\">");
        web_esc(&b, msg);
        fhir_buf_puts(&b, "</p>\n");
    }
    fhir_buf_puts(&b, "<h1>");
    web_esc(&b, *pp.name ? pp.name : "(no name recorded)");
    fhir_buf_puts(&b, "</h1>\n<p class=\"demo\">MRN ");
    web_esc(&b, *pp.mrn ? pp.mrn : "not recorded");
    if (pp.age >= 0)
        fhir_buf_printf(&b, " · %d %s", pp.age, pp.sex);
    if (*pp.birth) {
        fhir_buf_puts(&b, " · born ");
        web_esc(&b, pp.birth);
    }
    const map_fact *dis = map_profile_fact(prof, "primary_disease");
    fhir_buf_puts(&b, " · ");
    web_esc(&b, dis && dis->known ? elig_words(dis->str) : "diagnosis not recorded");
    fhir_buf_puts(&b, "</p>\n");

    /* the verdict in one line */
    static const char *const CATW[] = {"NOT ELIGIBLE by label", "POSSIBLY ELIGIBLE", "ELIGIBLE", "NO LABEL IN FORCE"};
    static const char *const CATC[] = {"not", "possible", "eligible", "not"};
    fhir_buf_printf(&b, "<section class=\"verdict verdict-%s\" aria-label=\"Verdict\"><p class=\"big\">%s", CATC[cat],
                    CATW[cat]);
    const fhir_node *prods = fhir_node_get(v.verdict, cat == ELIG_ELIGIBLE ? "products" : "possible_products");
    if (fhir_node_first(prods)) {
        fhir_buf_puts(&b, " — ");
        const char *keys[ELIG_MAX_INDICATIONS];
        size_t nk = 0;
        for (const fhir_node *n = fhir_node_first(prods); n && nk < ELIG_MAX_INDICATIONS; n = n->next)
            if (fhir_node_str(n))
                keys[nk++] = fhir_node_str(n);
        web_indications(&b, w, keys, nk);
    }
    fhir_buf_puts(&b, "</p>\n");
    if (elig_result_partial(res, NULL)) { /* the explanation's first line says how much was read */
        const char *first = fhir_node_str(fhir_node_first(fhir_node_get(v.verdict, "explanation")));
        fhir_buf_puts(&b, "<p class=\"partial\" role=\"alert\"><strong>");
        web_esc(&b, first ? first : "Not every record in this chart was read; the verdict may miss facts.");
        fhir_buf_puts(&b, "</strong></p>\n");
    }
    const char *ureason = elig_result_urgency_reason(rs, res);
    elig_urgency urg = elig_result_urgency(res);
    if (urg != ELIG_URGENCY_NONE) {
        fhir_buf_printf(&b, "<p><strong>Urgency: %s.</strong> ", urg == ELIG_URGENCY_NOW ? "refer now" :
                                                             urg == ELIG_URGENCY_SOON ? "refer at the next visit" : "review");
        web_esc(&b, ureason);
        fhir_buf_puts(&b, "</p>\n");
    }
    const fhir_node *cons = fhir_node_get(v.verdict, "consult");
    const char *rec = fhir_node_str(fhir_node_get(cons, "recommendation"));
    if (rec && strcmp(rec, "none")) {
        fhir_buf_printf(&b, "<p><strong>Consult recommendation: %s.</strong></p><ul class=\"consult\">",
                        !strcmp(rec, "refer_now") ? "refer for a CAR T consultation now" : "consult early");
        for (const fhir_node *n = fhir_node_first(fhir_node_get(cons, "reasons")); n; n = n->next) {
            const char *s = fhir_node_str(n);
            const char *c = s ? strchr(s, ':') : NULL;
            fhir_buf_puts(&b, "<li>");
            plain(&b, c ? c + 2 : s);
            fhir_buf_puts(&b, "</li>");
        }
        fhir_buf_puts(&b, "</ul>\n");
    }
    fhir_buf_puts(&b, "</section>\n");

    actions_block(w, r, &b, pid, l, route);

    fhir_buf_puts(&b, "<section aria-labelledby=\"tl-h\"><h2 id=\"tl-h\">Lines of therapy</h2>\n<div class=\"tl\" tabindex=\"0\" role=\"region\" aria-label=\"Timeline\">");
    web_timeline_svg(&b, prof, today, 960);
    fhir_buf_puts(&b, "</div>\n<p class=\"legend\"><span class=\"lg bar\"></span> line of therapy "
                      "<span class=\"lg hct\"></span> with transplant <span class=\"lg cart\"></span> CAR T "
                      "<span class=\"lg resp\"></span> response <span class=\"lg prog\"></span> progression or relapse</p>\n"
                      "</section>\n");

    /* the label gates */
    fhir_buf_puts(&b, "<section aria-labelledby=\"gates-h\"><h2 id=\"gates-h\">Label gates</h2>\n");
    size_t nind = elig_ruleset_count(rs), shown = 0;
    for (int pass = ELIG_ELIGIBLE; pass >= ELIG_POSSIBLY_ELIGIBLE; pass--)
        for (size_t i = 0; i < nind; i++)
            if (elig_result_ind_category(res, i) == (elig_category)pass) {
                indication_block(&b, rs, fs, res, i, (elig_category)pass);
                shown++;
            }
    size_t n_other = 0;
    for (size_t i = 0; i < nind; i++)
        if (elig_result_ind_category(res, i) == ELIG_NOT_ELIGIBLE && elig_result_ind_disease_matches(rs, res, i))
            n_other++;
    if (!shown)
        fhir_buf_puts(&b, "<p>No label indication is met or possibly met.</p>\n");
    if (n_other) {
        fhir_buf_printf(&b, "<details><summary>%zu indication%s for this disease not met</summary>\n", n_other,
                        n_other == 1 ? "" : "s");
        for (size_t i = 0; i < nind; i++)
            if (elig_result_ind_category(res, i) == ELIG_NOT_ELIGIBLE && elig_result_ind_disease_matches(rs, res, i))
                indication_block(&b, rs, fs, res, i, ELIG_NOT_ELIGIBLE);
        fhir_buf_puts(&b, "</details>\n");
    }
    fhir_buf_puts(&b, "</section>\n");

    /* what is missing */
    const fhir_node *missing = fhir_node_get(v.verdict, "missing"), *toreq = fhir_node_get(v.verdict, "to_request");
    if (fhir_node_first(missing) || fhir_node_first(toreq)) {
        fhir_buf_puts(&b, "<section aria-labelledby=\"miss-h\"><h2 id=\"miss-h\">What is missing and whom to ask</h2>\n");
        if (fhir_node_first(missing)) {
            fhir_buf_puts(&b, "<p>Not documented: ");
            bool first = true;
            for (const fhir_node *n = fhir_node_first(missing); n; n = n->next) {
                if (!first)
                    fhir_buf_puts(&b, ", ");
                first = false;
                web_esc(&b, elig_words(fhir_node_str(n)));
            }
            fhir_buf_puts(&b, ".</p>\n");
        }
        if (fhir_node_first(toreq)) {
            fhir_buf_puts(&b, "<p>Records to request (from the treating team or the outside center):</p><ul>\n");
            str_list(&b, toreq, NULL, 0);
            fhir_buf_puts(&b, "</ul>\n");
        }
        fhir_buf_puts(&b, "</section>\n");
    }
    /* review flags and notes */
    const fhir_node *expl = fhir_node_get(v.verdict, "explanation");
    fhir_buf_puts(&b, "<section aria-labelledby=\"flags-h\"><h2 id=\"flags-h\">Review flags (for the treating center; they "
                      "do not block)</h2>\n<ul class=\"flags\">\n");
    size_t before = b.len;
    for (int note = 0; note < 2; note++) /* the flags, then the notes; in words, as the packet */
        for (const fhir_node *n = fhir_node_first(expl); n; n = n->next) {
            const char *s = fhir_node_str(n);
            if (!s || strncmp(s, note ? "note " : "review flag ", note ? 5 : 12))
                continue;
            fhir_buf_puts(&b, "<li>");
            plain(&b, packet_flag_words(v.a, s, note));
            fhir_buf_puts(&b, "</li>\n");
        }
    if (b.len == before)
        fhir_buf_puts(&b, "<li>None raised.</li>\n");
    fhir_buf_puts(&b, "</ul></section>\n");

    fhir_buf_puts(&b, "<section aria-labelledby=\"labs-h\"><h2 id=\"labs-h\">Recent labs and performance status</h2>\n");
    labs_block(&b, prof);
    fhir_buf_puts(&b, "</section>\n<section aria-labelledby=\"centers-h\"><h2 id=\"centers-h\">Centers</h2>\n");
    centers_block(w, &b, route, ranked_now, why_none);
    fhir_buf_puts(&b, "</section>\n<section aria-labelledby=\"refs-h\"><h2 id=\"refs-h\">Referrals</h2>\n");
    if (!l->n) {
        fhir_buf_puts(&b, "<p>None yet.</p>\n");
    } else {
        fhir_buf_puts(&b, "<table class=\"list\"><thead><tr><th scope=\"col\">Referral</th><th scope=\"col\">Created</th>"
                          "<th scope=\"col\">Center</th><th scope=\"col\">State</th></tr></thead><tbody>\n");
        for (size_t i = l->n; i-- > 0;) {
            char d[16];
            web_day_ms(l->v[i].created_ms, d);
            fhir_buf_printf(&b, "<tr><td><a href=\"/ui/referrals/%lld\">Referral %lld</a>%s</td><td>%s</td><td>",
                            (long long)l->v[i].id, (long long)l->v[i].id, l->v[i].supersedes ? " (re-route)" : "", d);
            web_esc(&b, web_center_name(w, l->v[i].center));
            fhir_buf_puts(&b, "</td><td>");
            web_esc(&b, web_state_words(refer_state_name(l->v[i].state)));
            fhir_buf_puts(&b, "</td></tr>\n");
        }
        fhir_buf_puts(&b, "</tbody></table>\n");
    }
    fhir_buf_puts(&b, "</section>\n");
    prefs_free(l);
    pview_free(&v);
    web_page_send(r, &b, 200);
}

/* ---- acts ------------------------------------------------------------------------------------- */

/* After an act: back to the page (POST-redirect-GET). */
static void back_to(serve_req *r, const char *pid, const char *done)
{
    char loc[200];
    snprintf(loc, sizeof loc, "/ui/patients/%s?done=%s", pid, done);
    serve_redirect(r, loc);
}

static void act_failed(web *w, serve_req *r, const fhir_error *err)
{
    int st = err->code == 400 || err->code == 404 || err->code == 409 ? err->code : 500;
    web_page_problem(w, r, st, st == 409 ? "That is no longer possible" : "The act did not go through", err->msg);
}

/* The note to the center goes into the package's ServiceRequest (refer_set_payload allows it
 * until the referral is first sent). 0, or -1 with err. */
static int add_note(store *st, int64_t id, const char *note, fhir_error *err)
{
    refer_record rec;
    if (refer_get(st, id, &rec, err) != 1)
        return -1;
    int rc = 0;
    if (rec.payload) {
        fhir_arena *a = fhir_arena_new(0);
        fhir_error e;
        fhir_json_limits lim = {.max_bytes = PAYLOAD_MAX};
        fhir_node *bundle = fhir_json_parse(a, rec.payload, strlen(rec.payload), &lim, &e);
        fhir_node *sr = NULL;
        for (fhir_node *en = bundle ? (fhir_node *)fhir_node_first(fhir_node_get(bundle, "entry")) : NULL; en && !sr;
             en = en->next) {
            fhir_node *res = (fhir_node *)fhir_node_get(en, "resource");
            if (fhir_node_resource_type(res) && !strcmp(fhir_node_resource_type(res), "ServiceRequest"))
                sr = res;
        }
        if (sr) {
            fhir_node *notes = (fhir_node *)fhir_node_get(sr, "note");
            if (!notes)
                notes = fhir_node_set_arr(a, sr, "note");
            fhir_node *n = fhir_node_append(a, notes, NULL, 0, fhir_node_new(a, FHIR_OBJECT));
            fhir_node_set_str(a, n, "text", note);
            char *out = fhir_json_to_string(bundle, FHIR_JSON_COMPACT, PAYLOAD_MAX);
            rc = out ? refer_set_payload(st, id, out, err) : fhir_error_set(err, "the package is too large");
            free(out);
        }
        fhir_arena_free(a);
    }
    refer_record_free(&rec);
    return rc;
}

/* The patient screened now, proposed again with the center a person chose (the one proposal
 * path). 0 and *out, or -1 with err (err->code 409 when the center is not a candidate). */
static int propose_with_center(web *w, const char *pid, const char *center, propose_result *out, fhir_error *err)
{
    pview v;
    int f = pview_load(w, pid, &v, err);
    if (f <= 0) {
        pview_free(&v);
        if (f == 0) {
            fhir_error_set(err, "nothing is recorded for this patient");
            err->code = 404;
        }
        return -1;
    }
    propose_opts o = v.rt.propose;
    o.rules = v.rt.rules;
    o.center_id = center;
    propose_input in = {.patient_id = pid, .profile = screen_profile(v.sc), .facts = screen_facts(v.sc),
                        .result = screen_result(v.sc), .verdict_json = fhir_buf_cstr(&v.vj),
                        .resources = v.res, .n_resources = v.nres};
    int rc = store_begin(w->env.st, err);
    if (rc == 0)
        rc = propose_referral(w->env.st, &o, &in, out, err);
    if (rc == 0)
        rc = store_commit(w->env.st, err);
    else
        store_rollback(w->env.st);
    pview_free(&v);
    if (rc == 0)
        propose_log(pid, o.mode, out);
    if (rc == 0 && out->outcome == PROPOSE_NO_CENTER) {
        fhir_error_set(err, "%s", out->detail[0] ? out->detail : "that center is not among the ranked candidates");
        err->code = 409;
        return -1;
    }
    return rc;
}

/* The referral of the form field `name`, which must belong to the patient. */
static int form_referral(serve_req *r, const char *field, const char *pid, web *w, refer_record *rec, fhir_error *err)
{
    int64_t id;
    if (!serve_parse_id(serve_form(r, field), &id)) {
        fhir_error_set(err, "the form names no referral");
        err->code = 400;
        return -1;
    }
    int f = refer_get(w->env.st, id, rec, err);
    if (f == 1 && strcmp(rec->patient_id, pid)) {
        refer_record_free(rec);
        f = 0;
    }
    if (f == 0) {
        fhir_error_set(err, "no such referral for this patient");
        err->code = 404;
    }
    return f == 1 ? 0 : -1;
}

void web_h_approve(serve_req *r, void *ud)
{
    web *w = ud;
    const char *pid = serve_param(r, "id");
    fhir_error err;
    fhir_error_clear(&err);
    refer_record rec;
    if (!serve_id_ok(pid) || form_referral(r, "referral", pid, w, &rec, &err)) {
        if (!err.msg[0])
            fhir_error_set(&err, "no such patient");
        act_failed(w, r, &err);
        return;
    }
    int64_t id = rec.id;
    const char *center = serve_form(r, "center");
    const char *note = serve_form(r, "note");
    bool other_center = center && *center && strcmp(center, rec.center_id);
    refer_record_free(&rec);
    if (other_center) {
        propose_result pr;
        if (propose_with_center(w, pid, center, &pr, &err)) {
            act_failed(w, r, &err);
            return;
        }
        if (pr.referral_id != id || (pr.outcome != PROPOSE_UPDATED && pr.outcome != PROPOSE_EXISTS)) {
            fhir_error_set(&err, "the proposal changed while you looked at it; look again");
            err.code = 409;
            act_failed(w, r, &err);
            return;
        }
    }
    if (note && *note && add_note(w->env.st, id, note, &err)) {
        act_failed(w, r, &err);
        return;
    }
    store_actor who = web_actor(r, note && *note ? note : "approved in the web app", ROLE_CLINICIAN);
    if (refer_do(w->env.st, id, REFER_ACT_APPROVE, &who, &err)) {
        act_failed(w, r, &err);
        return;
    }
    back_to(r, pid, "approved");
}

void web_h_decline(serve_req *r, void *ud)
{
    web *w = ud;
    const char *pid = serve_param(r, "id");
    const char *code = serve_form(r, "code");
    const char *text = serve_form(r, "text");
    const char *words = NULL;
    for (size_t i = 0; code && i < sizeof DECLINE / sizeof DECLINE[0]; i++)
        if (!strcmp(code, DECLINE[i].code))
            words = DECLINE[i].words;
    if (!serve_id_ok(pid) || !words || (!strcmp(code, "other") && (!text || !*text))) {
        web_page_problem(w, r, 400, "Say why",
                         "Choose a reason for declining (and describe it when you choose Other).");
        return;
    }
    char reason[700];
    snprintf(reason, sizeof reason, "%s%s%s", words, text && *text ? ": " : "", text && *text ? text : "");
    fhir_error err;
    fhir_error_clear(&err);
    store_actor who = web_actor(r, reason, ROLE_CLINICIAN);
    if (store_worklist_decline(w->env.st, pid, code, &who, &err)) {
        act_failed(w, r, &err);
        return;
    }
    /* the proposal awaiting approval is declined with the same reason (closes the episode) */
    prefs *l = fhir_xcalloc(1, sizeof *l);
    const pref *pending = prefs_load(w, pid, l, &err) == 0 ? prefs_find(l, 0) : NULL;
    int rc = pending ? refer_do(w->env.st, pending->id, REFER_ACT_DECLINE, &who, &err) : 0;
    free(l);
    if (rc) {
        act_failed(w, r, &err);
        return;
    }
    fhir_log(FHIR_LOG_INFO, "web.decline", "patient=%s code=%s user=%lld", pid, code,
             (long long)(serve_principal(r) ? serve_principal(r)->user_id : 0));
    serve_redirect(r, "/ui/?declined=1");
}

void web_h_reroute(serve_req *r, void *ud)
{
    web *w = ud;
    const char *pid = serve_param(r, "id");
    fhir_error err;
    fhir_error_clear(&err);
    if (!serve_id_ok(pid)) {
        web_page_problem(w, r, 400, "No such patient", "That is not a patient identifier.");
        return;
    }
    int64_t id = 0;
    const char *reason = serve_form(r, "reason");
    if (serve_form(r, "referral")) { /* the screener's re-route proposal */
        refer_record rec;
        if (form_referral(r, "referral", pid, w, &rec, &err)) {
            act_failed(w, r, &err);
            return;
        }
        id = rec.supersedes && rec.state == REFER_PENDING_APPROVAL ? rec.id : 0;
        refer_record_free(&rec);
        if (!id) {
            fhir_error_set(&err, "that referral is not a re-route awaiting approval");
            err.code = 409;
            act_failed(w, r, &err);
            return;
        }
    } else { /* a person's choice of another center */
        const char *center = serve_form(r, "center");
        propose_result pr;
        if (!center || !*center || !reason || !*reason) {
            web_page_problem(w, r, 400, "Choose a center", "Choose the center and say why.");
            return;
        }
        if (propose_with_center(w, pid, center, &pr, &err)) {
            act_failed(w, r, &err);
            return;
        }
        if (pr.outcome == PROPOSE_UPDATED) {
            /* approved by the standing order and never sent: it now goes to that center */
            char st[32];
            if (store_referral_state(w->env.st, pr.referral_id, st, sizeof st, &err) == 1 &&
                !strcmp(st, refer_state_name(REFER_APPROVED))) {
                back_to(r, pid, "rerouted");
                return;
            }
        }
        if (pr.outcome != PROPOSE_REROUTE) {
            fhir_error_set(&err, "no referral at a center to re-route (the proposal is %s)",
                           pr.outcome == PROPOSE_UPDATED ? "not sent yet: approve it with the center instead" : "unchanged");
            err.code = 409;
            act_failed(w, r, &err);
            return;
        }
        id = pr.referral_id;
    }
    store_actor who = web_actor(r, reason && *reason ? reason : "re-route approved in the web app", ROLE_CLINICIAN);
    if (refer_do(w->env.st, id, REFER_ACT_APPROVE, &who, &err)) {
        act_failed(w, r, &err);
        return;
    }
    back_to(r, pid, "rerouted");
}

void web_h_retry(serve_req *r, void *ud)
{
    web *w = ud;
    int64_t id;
    fhir_error err;
    fhir_error_clear(&err);
    if (!serve_parse_id(serve_param(r, "id"), &id)) {
        web_page_problem(w, r, 400, "No such referral", "That is not a referral number.");
        return;
    }
    store_actor who = web_actor(r, "delivery retried in the web app", ROLE_ADMIN);
    if (refer_do(w->env.st, id, REFER_ACT_RETRY, &who, &err)) {
        act_failed(w, r, &err);
        return;
    }
    char loc[64];
    snprintf(loc, sizeof loc, "/ui/referrals/%lld", (long long)id);
    serve_redirect(r, loc);
}
