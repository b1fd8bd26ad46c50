/* web — routes, the page shell, the assets and the worklist (web.h). */
#include "web_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access.h"
#include "fhir_alloc.h"
#include "fhir_bin.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "referral.h"
#include "role.h"

/* ---- small helpers ---------------------------------------------------------------------- */

void web_esc(fhir_buf *b, const char *s)
{
    if (s)
        serve_html_escape(b, s);
}

bool web_may(serve_req *r, role need)
{
    const access_principal *p = serve_principal(r);
    return p && (p->mask & ROLE_BIT(need));
}

store_actor web_actor(serve_req *r, const char *reason, role need)
{
    const access_principal *p = serve_principal(r);
    store_actor who = access_actor(p, reason);
    who.role = role_grants(p->role) & ROLE_BIT(need) ? role_name(p->role) : role_name(need);
    return who;
}

void web_csrf_field(fhir_buf *b, serve_req *r)
{
    const access_principal *p = serve_principal(r);
    if (!p || p->via != ACCESS_VIA_SESSION)
        return;
    char tok[ACCESS_CSRF_LEN];
    access_csrf_token(p, tok);
    fhir_buf_puts(b, "<input type=\"hidden\" name=\"csrf\" value=\"");
    web_esc(b, tok);
    fhir_buf_puts(b, "\">");
}

int64_t web_today(web *w)
{
    web_runtime rt;
    memset(&rt, 0, sizeof rt);
    rt.as_of_days = -1;
    if (w->env.runtime)
        w->env.runtime(w->env.ud, &rt);
    return rt.as_of_days >= 0 ? rt.as_of_days : fhir_clock_now() / 86400;
}

void web_day(int64_t day, char out[16])
{
    int y;
    unsigned m, d;
    fhir_clock_civil_from_days(day, &y, &m, &d);
    snprintf(out, 16, "%04d-%02u-%02u", y, m, d);
}

void web_day_ms(int64_t ms, char out[16])
{
    web_day(ms / 86400000, out);
}

void web_history_cells(fhir_buf *b, const store_audit_row *a, const char *what)
{
    char t[40];
    fhir_clock_format_instant(a->ts_ms, t, sizeof t);
    if (strlen(t) >= 19) { /* 2026-06-15T09:30:12.345Z -> 2026-06-15 09:30:12 */
        t[10] = ' ';
        t[19] = 0;
    }
    fhir_buf_puts(b, "<td>");
    web_esc(b, t);
    fhir_buf_puts(b, "</td><td>");
    web_esc(b, a->actor);
    fhir_buf_puts(b, "</td><td data-action=\"");
    web_esc(b, a->action);
    fhir_buf_puts(b, "\">");
    web_esc(b, what);
    fhir_buf_puts(b, "</td>");
}

const char *web_center_name(web *w, const char *id)
{
    web_runtime rt;
    memset(&rt, 0, sizeof rt);
    if (w->env.runtime)
        w->env.runtime(w->env.ud, &rt);
    const centers_center *c = rt.propose.centers && id ? centers_find(rt.propose.centers, id) : NULL;
    return c && c->name ? c->name : id ? id : "";
}

const char *web_state_words(const char *st)
{
    static const struct {
        const char *k, *w;
    } W[] = {
        {"pending_approval", "awaiting approval"}, {"approved", "approved, being sent"},
        {"sending", "being sent"}, {"sent", "sent, awaiting the center"}, {"accepted", "accepted by the center"},
        {"declined", "declined by the center"}, {"scheduled", "consult scheduled"},
        {"completed", "completed"}, {"cancelled", "cancelled"}, {"failed", "delivery failed"},
    };
    for (size_t i = 0; st && i < sizeof W / sizeof W[0]; i++)
        if (!strcmp(W[i].k, st))
            return W[i].w;
    return st ? st : "not referred";
}

const elig_ruleset *web_rules(web *w)
{
    web_runtime rt;
    memset(&rt, 0, sizeof rt);
    if (w->env.runtime)
        w->env.runtime(w->env.ud, &rt);
    return rt.rules;
}

/* The plain text of elig_display_write, escaped. */
static void display_esc(fhir_buf *b, const fhir_buf *t)
{
    if (t->len)
        web_esc(b, fhir_buf_cstr((fhir_buf *)t));
}

void web_indications(fhir_buf *b, web *w, const char *const *keys, size_t n)
{
    fhir_buf t;
    fhir_buf_init(&t, WEB_PAGE_MAX);
    elig_display_write(web_rules(w), keys, n, &t);
    display_esc(b, &t);
    fhir_buf_free(&t);
}

void web_indications_joined(fhir_buf *b, web *w, const char *joined)
{
    fhir_buf t;
    fhir_buf_init(&t, WEB_PAGE_MAX);
    elig_display_write_joined(web_rules(w), joined, &t);
    display_esc(b, &t);
    fhir_buf_free(&t);
}

void web_indications_json(fhir_buf *b, web *w, const char *json)
{
    if (!json || !*json)
        return;
    fhir_arena *a = fhir_arena_new(0);
    fhir_error e;
    fhir_json_limits lim = {.max_bytes = strlen(json) + 1};
    const fhir_node *arr = fhir_json_parse(a, json, strlen(json), &lim, &e);
    size_t n = 0;
    for (const fhir_node *x = arr ? fhir_node_first(arr) : NULL; x; x = x->next)
        n += fhir_node_str(x) != NULL;
    const char **keys = fhir_xcalloc(n ? n : 1, sizeof *keys);
    n = 0;
    for (const fhir_node *x = arr ? fhir_node_first(arr) : NULL; x; x = x->next)
        if (fhir_node_str(x))
            keys[n++] = fhir_node_str(x);
    web_indications(b, w, keys, n);
    free(keys);
    fhir_arena_free(a);
}

/* ---- the patient's demographics (pages only; never logged) -------------------------------- */

typedef struct person_ctx {
    fhir_arena *a;
    const fhir_node *res;
} person_ctx;

static int person_cb(void *ctx, const char *type, const char *id, const void *data, size_t len)
{
    (void)type;
    (void)id;
    person_ctx *c = ctx;
    fhir_error e;
    c->res = fhir_bin_or_json_read(NULL, c->a, data, len, &e);
    return 1;
}

int web_person_read(web *w, fhir_arena *a, const char *pid, int64_t today, web_person *out)
{
    memset(out, 0, sizeof *out);
    out->name = out->mrn = out->sex = out->birth = "";
    out->age = -1;
    person_ctx c = {.a = a};
    fhir_error e;
    fhir_error_clear(&e);
    int f = store_resource_get(w->env.st, "Patient", pid, person_cb, &c, &e);
    if (f == 1 && !c.res) { /* cached but damaged: not "no name recorded" (screen.failed says which) */
        out->name = "(patient record unreadable: the cached Patient does not decode)";
        return 0;
    }
    if (f != 1)
        return 0;
    const fhir_node *nm = fhir_node_first(fhir_node_get(c.res, "name"));
    if (nm) {
        const char *text = fhir_node_str(fhir_node_get(nm, "text"));
        if (text) {
            out->name = text;
        } else {
            fhir_buf b;
            fhir_buf_init(&b, 512);
            for (const fhir_node *g = fhir_node_first(fhir_node_get(nm, "given")); g; g = g->next)
                if (fhir_node_str(g))
                    fhir_buf_printf(&b, "%s%s", b.len ? " " : "", fhir_node_str(g));
            const char *fam = fhir_node_str(fhir_node_get(nm, "family"));
            if (fam)
                fhir_buf_printf(&b, "%s%s", b.len ? " " : "", fam);
            out->name = fhir_arena_strdup(a, fhir_buf_cstr(&b));
            fhir_buf_free(&b);
        }
    }
    /* the medical record number: an identifier typed MR, else the first one */
    const char *first_id = NULL;
    for (const fhir_node *id = fhir_node_first(fhir_node_get(c.res, "identifier")); id; id = id->next) {
        const char *v = fhir_node_str(fhir_node_get(id, "value"));
        if (!v)
            continue;
        if (!first_id)
            first_id = v;
        for (const fhir_node *cd = fhir_node_first(fhir_node_path(id, "type.coding")); cd; cd = cd->next)
            if (fhir_node_str(fhir_node_get(cd, "code")) && !strcmp(fhir_node_str(fhir_node_get(cd, "code")), "MR")) {
                out->mrn = v;
                break;
            }
        if (*out->mrn)
            break;
    }
    if (!*out->mrn && first_id)
        out->mrn = first_id;
    const char *g = fhir_node_str(fhir_node_get(c.res, "gender"));
    out->sex = g && !strcmp(g, "female") ? "F" : g && !strcmp(g, "male") ? "M" : g ? g : "";
    const char *bd = fhir_node_str(fhir_node_get(c.res, "birthDate"));
    int64_t bdays;
    if (bd && fhir_clock_parse_ymd(bd, &bdays) == 0) {
        out->birth = bd;
        int by, ty;
        unsigned bm, bdd, tm, td;
        fhir_clock_civil_from_days(bdays, &by, &bm, &bdd);
        fhir_clock_civil_from_days(today, &ty, &tm, &td);
        out->age = ty - by - ((tm < bm || (tm == bm && td < bdd)) ? 1 : 0);
    }
    return 1;
}

/* ---- the shell -------------------------------------------------------------------------- */

void web_page_begin(web *w, serve_req *r, fhir_buf *b, const char *title, const char *active)
{
    fhir_buf_init(b, WEB_PAGE_MAX);
    fhir_buf_puts(b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>");
    web_esc(b, title);
    fhir_buf_puts(b, " — cartgate</title><link rel=\"stylesheet\" href=\"/ui/assets/app.css\">"
                     "<script src=\"/ui/assets/app.js\" defer></script></head>\n<body>\n"
                     "<a class=\"skip\" href=\"#main\">Skip to content</a>\n<header class=\"top\">"
                     "<span class=\"site\"><a href=\"/ui/\">cartgate</a>");
    /* the site's name of this moment: a reload may change it (and frees the old configuration) */
    web_runtime rt = {0};
    if (w->env.runtime)
        w->env.runtime(w->env.ud, &rt);
    if (rt.propose.site_name && *rt.propose.site_name) {
        fhir_buf_puts(b, " · ");
        web_esc(b, rt.propose.site_name);
    }
    fhir_buf_puts(b, "</span>\n<nav aria-label=\"Main\"><ul>");
    static const struct {
        const char *key, *href, *label;
    } NAV[] = {{"worklist", "/ui/", "Worklist"}, {"referrals", "/ui/referrals", "Referrals"},
               {"program", "/ui/program", "Program"}};
    /* the site's pages only for those who may read them (an intake nurse at a center may not) */
    for (size_t i = 0; (!w->env.intake || web_may(r, ROLE_VIEWER)) && i < sizeof NAV / sizeof NAV[0]; i++)
        fhir_buf_printf(b, "<li><a href=\"%s\"%s>%s</a></li>", NAV[i].href,
                        active && !strcmp(active, NAV[i].key) ? " aria-current=\"page\"" : "", NAV[i].label);
    if (w->env.intake)
        fhir_buf_printf(b, "<li><a href=\"/ui/intake\"%s>Intake inbox</a></li>",
                        active && !strcmp(active, "intake") ? " aria-current=\"page\"" : "");
    fhir_buf_puts(b, "</ul></nav>\n<div class=\"who\">");
    const access_principal *p = serve_principal(r);
    if (p) {
        store_user u;
        fhir_error e;
        fhir_error_clear(&e);
        bool have = p->user_id > 0 && store_user_get_id(w->env.st, p->user_id, &u, &e) == 1;
        fhir_buf_puts(b, "<span class=\"person\">");
        web_esc(b, have && u.display_name && *u.display_name ? u.display_name : p->name);
        fhir_buf_printf(b, "</span> <span class=\"role\">(%s)</span>", role_name(p->role));
        if (have)
            store_user_free(&u);
        if (p->via == ACCESS_VIA_SESSION) {
            fhir_buf_puts(b, "<form method=\"post\" action=\"/auth/logout\" class=\"inline\">");
            web_csrf_field(b, r);
            fhir_buf_puts(b, "<button type=\"submit\" class=\"link\">Sign out</button></form>");
        }
    }
    fhir_buf_puts(b, "</div></header>\n<main id=\"main\">\n");
}

void web_page_send(serve_req *r, fhir_buf *b, int status)
{
    fhir_buf_puts(b, "</main>\n</body></html>\n");
    if (b->overflow)
        serve_error(r, 500, "page too large");
    else
        serve_reply(r, status, "text/html; charset=utf-8", b->data, b->len);
    fhir_buf_free(b);
}

void web_page_problem(web *w, serve_req *r, int status, const char *title, const char *msg)
{
    fhir_buf b;
    web_page_begin(w, r, &b, title, NULL);
    fhir_buf_puts(&b, "<h1>");
    web_esc(&b, title);
    fhir_buf_puts(&b, "</h1>\n<p role=\"alert\">");
    web_esc(&b, msg);
    fhir_buf_puts(&b, "</p>\n<p><a href=\"/ui/\">Back to the worklist</a></p>\n");
    web_page_send(r, &b, status);
}

/* ---- assets ------------------------------------------------------------------------------- */

static void h_asset(serve_req *r, void *ud)
{
    web *w = ud;
    const char *name = serve_param(r, "name");
    size_t len = 0;
    const char *ct = NULL;
    const unsigned char *data = name ? web_asset(name, &len, &ct) : NULL;
    if (!data) {
        serve_error(r, 404, "no such asset");
        return;
    }
    if (w->env.assets_dir) { /* development: the file on disk, read on every request */
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", w->env.assets_dir, name);
        fhir_buf f;
        fhir_buf_init(&f, WEB_ASSET_MAX);
        fhir_error e;
        if (fhir_buf_read_file(&f, path, &e)) {
            fhir_buf_free(&f);
            serve_error(r, 404, "asset not found in the development folder");
            return;
        }
        serve_add_header(r, "Cache-Control", "no-store");
        serve_reply(r, 200, ct, f.data ? f.data : "", f.len);
        fhir_buf_free(&f);
        return;
    }
    serve_add_header(r, "Cache-Control", "private, max-age=300");
    serve_reply(r, 200, ct, (const char *)data, len);
}

static void h_root(serve_req *r, void *ud)
{
    web *w = ud;
    serve_redirect(r, w->env.intake ? "/ui/intake" : "/ui/");
}

/* ---- the worklist --------------------------------------------------------------------------- */

typedef struct wl_page {
    web *w;
    fhir_buf *b;
    fhir_arena *a;
    int64_t today;
    size_t n;
} wl_page;

static const char *urgency_words(const store_worklist_row *r, const char **cls)
{
    const char *u = r->urgency ? r->urgency : "";
    const char *c = r->consult ? r->consult : "";
    if (!strcmp(u, "now") || !strcmp(c, "refer_now")) {
        *cls = "now";
        return "Refer now";
    }
    if (!strcmp(u, "soon")) {
        *cls = "soon";
        return "Soon";
    }
    if (!strcmp(u, "review")) {
        *cls = "review";
        return "Review";
    }
    *cls = "consult";
    return !strcmp(c, "early_consult") ? "Consult early" : "—";
}

static const char *category_words(const char *cat)
{
    if (!cat)
        return "";
    if (!strcmp(cat, "eligible"))
        return "eligible";
    if (!strcmp(cat, "possibly_eligible"))
        return "possibly eligible";
    if (!strcmp(cat, "not_eligible"))
        return "not eligible by label";
    return "no label in force";
}

static int wl_row_cb(void *ctx, const store_worklist_row *row)
{
    wl_page *pg = ctx;
    fhir_buf *b = pg->b;
    web_person pp;
    web_person_read(pg->w, pg->a, row->patient_id, pg->today, &pp);
    const char *cls;
    const char *uw = urgency_words(row, &cls);
    fhir_buf_printf(b, "<tr><td><span class=\"urg urg-%s\">%s</span></td><td><a href=\"/ui/patients/", cls, uw);
    web_esc(b, row->patient_id);
    fhir_buf_puts(b, "\">");
    web_esc(b, *pp.name ? pp.name : "(no name recorded)");
    fhir_buf_puts(b, "</a></td><td>");
    web_esc(b, pp.mrn);
    fhir_buf_puts(b, "</td><td class=\"num\">");
    if (pp.age >= 0)
        fhir_buf_printf(b, "%d", pp.age);
    fhir_buf_puts(b, "</td><td>");
    web_esc(b, row->disease ? elig_words(row->disease) : "not recorded");
    fhir_buf_puts(b, "<br><span class=\"sub\">");
    web_esc(b, category_words(row->category));
    fhir_buf_puts(b, "</span></td><td>");
    size_t before = b->len;
    web_indications_json(b, pg->w, row->products);
    if (row->possible && strcmp(row->possible, "[]")) {
        fhir_buf_puts(b, b->len > before ? "<br><span class=\"sub\">possibly: " : "<span class=\"sub\">possibly: ");
        web_indications_json(b, pg->w, row->possible);
        fhir_buf_puts(b, "</span>");
    }
    if (b->len == before)
        fhir_buf_puts(b, row->consult ? "consultation" : "");
    fhir_buf_puts(b, "</td><td class=\"num\">");
    int64_t rd;
    if (row->relapse_day && fhir_clock_parse_ymd(row->relapse_day, &rd) == 0)
        fhir_buf_printf(b, "%lld d", (long long)(pg->today - rd));
    else
        fhir_buf_puts(b, "—");
    fhir_buf_printf(b, "</td><td class=\"num\">%lld</td><td>", (long long)row->missing);
    web_esc(b, web_state_words(row->ref_state));
    fhir_buf_puts(b, "</td></tr>\n");
    pg->n++;
    return 0;
}

static void disease_option(void *ctx, const char *d)
{
    void **c = ctx;
    fhir_buf *b = c[0];
    const char *sel = c[1];
    fhir_buf_puts(b, "<option value=\"");
    web_esc(b, d);
    fhir_buf_printf(b, "\"%s>", sel && !strcmp(sel, d) ? " selected" : "");
    web_esc(b, elig_words(d));
    fhir_buf_puts(b, "</option>");
}

/* A query parameter that must be one of the allowed values (NULL otherwise or absent). */
static const char *q_enum(serve_req *r, const char *name, const char *const *allowed)
{
    const char *v = serve_query(r, name);
    for (size_t i = 0; v && allowed[i]; i++)
        if (!strcmp(v, allowed[i]))
            return allowed[i];
    return NULL;
}

static void select_options(fhir_buf *b, const char *const *vals, const char *const *labels, const char *sel)
{
    for (size_t i = 0; vals[i]; i++)
        fhir_buf_printf(b, "<option value=\"%s\"%s>%s</option>", vals[i], sel && !strcmp(sel, vals[i]) ? " selected" : "",
                        labels[i]);
}

/* A link to another page of the list with the same filters. */
static void page_link(fhir_buf *b, const store_worklist_filter *f, bool fresh, long page, const char *label)
{
    fhir_buf_printf(b, "<a href=\"/ui/?page=%ld", page);
    if (f->category)
        fhir_buf_printf(b, "&amp;category=%s", f->category);
    if (f->disease) {
        fhir_buf_puts(b, "&amp;disease=");
        web_esc(b, f->disease);
    }
    if (f->state)
        fhir_buf_printf(b, "&amp;state=%s", f->state);
    if (fresh)
        fhir_buf_puts(b, "&amp;new=1");
    fhir_buf_printf(b, "\">%s</a>", label);
}

static void h_worklist(serve_req *r, void *ud)
{
    web *w = ud;
    static const char *const CATS[] = {"eligible", "possibly_eligible", "consult", NULL};
    static const char *const CAT_LABELS[] = {"Eligible", "Possibly eligible", "Consult suggested only"};
    static const char *const STATES[] = {"none", "pending_approval", "approved", "sending", "sent", "accepted",
                                         "scheduled", "failed", "cancelled", "declined", "completed", NULL};
    static const char *const STATE_LABELS[] = {"Not referred", "Awaiting approval", "Approved", "Being sent",
                                               "Sent, awaiting the center", "Accepted", "Consult scheduled",
                                               "Delivery failed", "Cancelled", "Declined by the center",
                                               "Completed"};
    store_worklist_filter f = {.category = q_enum(r, "category", CATS), .state = q_enum(r, "state", STATES)};
    const char *disease = serve_query(r, "disease");
    if (disease && *disease && strlen(disease) < 64)
        f.disease = disease;
    const char *nw = serve_query(r, "new");
    bool fresh = nw && !strcmp(nw, "1");
    const char *pg = serve_query(r, "page");
    long page = pg ? strtol(pg, NULL, 10) : 1;
    if (page < 1 || page > 1000000)
        page = 1;
    fhir_error err;
    fhir_error_clear(&err);
    const access_principal *p = serve_principal(r);
    int64_t prev = 0;
    if (p && p->user_id > 0 &&
        store_worklist_visit(w->env.st, p->user_id, fhir_clock_now_ms(), WEB_VISIT_GAP_MS, &prev, &err)) {
        web_page_problem(w, r, 500, "The worklist is not available", err.msg);
        return;
    }
    if (fresh)
        f.changed_after_ms = prev > 0 ? prev : 1;
    int64_t counts[4];
    int64_t total = store_worklist_count(w->env.st, &f, &err);
    if (total < 0 || store_worklist_counts(w->env.st, counts, &err)) {
        web_page_problem(w, r, 500, "The worklist is not available", err.msg);
        return;
    }
    fhir_buf b;
    web_page_begin(w, r, &b, "Worklist", "worklist");
    fhir_buf_printf(&b, "<h1>Who to refer</h1>\n<p class=\"headline\"><span class=\"urg urg-now\">Refer now %lld</span> · "
                        "Possibly eligible %lld · Consult suggested %lld · Sent, awaiting an answer %lld</p>\n",
                    (long long)counts[0], (long long)counts[1], (long long)counts[2], (long long)counts[3]);
    fhir_buf_puts(&b, "<form method=\"get\" action=\"/ui/\" class=\"filters\" role=\"search\" aria-label=\"Filter the worklist\">"
                      "<label for=\"f-category\">Verdict</label><select id=\"f-category\" name=\"category\">"
                      "<option value=\"\">Any</option>");
    select_options(&b, CATS, CAT_LABELS, f.category);
    fhir_buf_puts(&b, "</select><label for=\"f-disease\">Disease</label><select id=\"f-disease\" name=\"disease\">"
                      "<option value=\"\">Any</option>");
    void *dc[2] = {&b, (void *)f.disease};
    store_worklist_diseases(w->env.st, disease_option, dc, &err);
    fhir_buf_puts(&b, "</select><label for=\"f-state\">Referral</label><select id=\"f-state\" name=\"state\">"
                      "<option value=\"\">Any</option>");
    select_options(&b, STATES, STATE_LABELS, f.state);
    fhir_buf_printf(&b, "</select><label class=\"check\"><input type=\"checkbox\" name=\"new\" value=\"1\"%s> New since my "
                        "last visit</label><button type=\"submit\">Apply</button> <a href=\"/ui/\">Clear</a></form>\n",
                    fresh ? " checked" : "");
    if (fresh) {
        char d[16];
        if (prev > 0) {
            web_day_ms(prev, d);
            fhir_buf_printf(&b, "<p class=\"note\">Changed since your last visit on %s.</p>\n", d);
        } else {
            fhir_buf_puts(&b, "<p class=\"note\">This is your first visit: everything is new.</p>\n");
        }
    }
    long pages = total ? (long)((total + WEB_PAGE_ROWS - 1) / WEB_PAGE_ROWS) : 1;
    if (page > pages)
        page = pages;
    fhir_buf_printf(&b, "<table class=\"list\" id=\"worklist\"><caption>%lld patient%s, page %ld of %ld</caption>\n"
                        "<thead><tr><th scope=\"col\">Urgency</th><th scope=\"col\">Patient</th><th scope=\"col\">MRN</th>"
                        "<th scope=\"col\">Age</th><th scope=\"col\">Diagnosis · verdict</th><th scope=\"col\">Products</th>"
                        "<th scope=\"col\" title=\"Days since the last relapse or progression was documented\">Since relapse</th>"
                        "<th scope=\"col\" title=\"Facts missing for a decision\">Missing</th>"
                        "<th scope=\"col\">Referral</th></tr></thead>\n<tbody>\n",
                    (long long)total, total == 1 ? "" : "s", page, pages);
    fhir_arena *a = fhir_arena_new(0);
    wl_page ctx = {.w = w, .b = &b, .a = a, .today = web_today(w)};
    int64_t n = store_worklist_page(w->env.st, &f, WEB_PAGE_ROWS, (int64_t)(page - 1) * WEB_PAGE_ROWS, wl_row_cb,
                                    &ctx, &err);
    fhir_arena_free(a);
    if (n < 0) {
        fhir_buf_free(&b);
        web_page_problem(w, r, 500, "The worklist is not available", err.msg);
        return;
    }
    if (n == 0)
        fhir_buf_puts(&b, "<tr><td colspan=\"9\">No patient matches.</td></tr>\n");
    fhir_buf_puts(&b, "</tbody></table>\n<nav class=\"pages\" aria-label=\"Pages\">");
    if (page > 1)
        page_link(&b, &f, fresh, page - 1, "Previous page");
    if (page < pages)
        page_link(&b, &f, fresh, page + 1, "Next page");
    fhir_buf_puts(&b, "</nav>\n");
    web_page_send(r, &b, 200);
}

/* ---- routes ------------------------------------------------------------------------------- */

static const serve_route ROUTES[] = {
    {"GET", "/", ROLE_PUBLIC, h_root, 0},
    {"GET", "/ui/assets/{name}", ROLE_PUBLIC, h_asset, 0},
    {"GET", "/ui/", ROLE_VIEWER, h_worklist, SERVE_HTML},
    {"GET", "/ui/patients/{id}", ROLE_VIEWER, web_h_patient, SERVE_HTML},
    {"POST", "/ui/patients/{id}/approve", ROLE_CLINICIAN, web_h_approve, SERVE_HTML},
    {"POST", "/ui/patients/{id}/decline", ROLE_CLINICIAN, web_h_decline, SERVE_HTML},
    {"POST", "/ui/patients/{id}/reroute", ROLE_CLINICIAN, web_h_reroute, SERVE_HTML},
    {"POST", "/ui/referrals/{id}/retry", ROLE_ADMIN, web_h_retry, SERVE_HTML},
    {"GET", "/ui/referrals", ROLE_VIEWER, web_h_referrals, SERVE_HTML},
    {"GET", "/ui/referrals/{id}", ROLE_VIEWER, web_h_referral, SERVE_HTML},
    {"GET", "/ui/program", ROLE_VIEWER, web_h_program, SERVE_HTML},
    {"GET", "/ui/program.csv", ROLE_VIEWER, web_h_program_csv, SERVE_HTML},
    {"GET", "/ui/intake", ROLE_INTAKE, web_h_intake, SERVE_HTML},
    {"GET", "/ui/intake/{id}", ROLE_INTAKE, web_h_intake_one, SERVE_HTML},
    {"GET", "/ui/intake/{id}/packet.pdf", ROLE_INTAKE, web_h_intake_pdf, SERVE_HTML},
    {"POST", "/ui/intake/{id}/accept", ROLE_INTAKE, web_h_intake_accept, SERVE_HTML},
    {"POST", "/ui/intake/{id}/info", ROLE_INTAKE, web_h_intake_info, SERVE_HTML},
    {"POST", "/ui/intake/{id}/decline", ROLE_INTAKE, web_h_intake_decline, SERVE_HTML},
    {"POST", "/ui/intake/{id}/schedule", ROLE_INTAKE, web_h_intake_schedule, SERVE_HTML},
};

const serve_route *web_routes(size_t *n)
{
    *n = sizeof ROUTES / sizeof ROUTES[0];
    return ROUTES;
}

web *web_new(const web_env *env)
{
    web *w = fhir_xcalloc(1, sizeof *w);
    w->env = *env;
    return w;
}

int web_add_routes(web *w, serve *s, fhir_error *err)
{
    return serve_add_routes(s, ROUTES, sizeof ROUTES / sizeof ROUTES[0], w, err);
}

void web_free(web *w)
{
    free(w);
}
