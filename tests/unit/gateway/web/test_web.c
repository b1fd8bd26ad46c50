/* Unit tests of the web room: the route table (every route with the role it must need), HTML
 * escaping of what pages show from records, the lines-of-therapy SVG of a fixed profile
 * (vignette 04: R-CHOP, then salvage with an autologous transplant; a response, a
 * progression, the transplant), and the worklist's paging, filters and declines on a real SQLite store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fhir_clock.h"
#include "fhir_json.h"
#include "map_profile.h"
#include "map_tables.h"
#include "role.h"
#include "store.h"
#include "web_int.h"

static const struct {
    const char *method, *pattern;
    role need;
} WANT[] = {
    {"GET", "/", ROLE_PUBLIC},
    {"GET", "/ui/assets/{name}", ROLE_PUBLIC},
    {"GET", "/ui/", ROLE_VIEWER},
    {"GET", "/ui/patients/{id}", ROLE_VIEWER},
    {"POST", "/ui/patients/{id}/approve", ROLE_CLINICIAN},
    {"POST", "/ui/patients/{id}/decline", ROLE_CLINICIAN},
    {"POST", "/ui/patients/{id}/reroute", ROLE_CLINICIAN},
    {"POST", "/ui/referrals/{id}/retry", ROLE_ADMIN},
    {"GET", "/ui/referrals", ROLE_VIEWER},
    {"GET", "/ui/referrals/{id}", ROLE_VIEWER},
    {"GET", "/ui/program", ROLE_VIEWER},
    {"GET", "/ui/program.csv", ROLE_VIEWER},
    {"GET", "/ui/intake", ROLE_INTAKE},
    {"GET", "/ui/intake/{id}", ROLE_INTAKE},
    {"GET", "/ui/intake/{id}/packet.pdf", ROLE_INTAKE},
    {"POST", "/ui/intake/{id}/accept", ROLE_INTAKE},
    {"POST", "/ui/intake/{id}/info", ROLE_INTAKE},
    {"POST", "/ui/intake/{id}/decline", ROLE_INTAKE},
    {"POST", "/ui/intake/{id}/schedule", ROLE_INTAKE},
};

static void test_routes_roles(void **state)
{
    (void)state;
    size_t n;
    const serve_route *r = web_routes(&n);
    assert_int_equal(n, sizeof WANT / sizeof WANT[0]);
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t k = 0; k < n; k++)
            if (!strcmp(WANT[k].method, r[i].method) && !strcmp(WANT[k].pattern, r[i].pattern)) {
                found = true;
                if (WANT[k].need != r[i].need)
                    fail_msg("%s %s needs %s, should need %s", r[i].method, r[i].pattern, role_name(r[i].need),
                             role_name(WANT[k].need));
            }
        if (!found)
            fail_msg("route %s %s is not in the role table of this test", r[i].method, r[i].pattern);
        /* pages send anonymous browsers to sign in; only the redirect and assets are public */
        if (r[i].need != ROLE_PUBLIC)
            assert_true(r[i].flags & SERVE_HTML);
    }
    fhir_error err = {0};
    assert_int_equal(serve_check_routes(r, n, &err), 0);
}

static void test_assets_embedded(void **state)
{
    (void)state;
    size_t len = 0;
    const char *ct = NULL;
    const unsigned char *css = web_asset("app.css", &len, &ct);
    assert_non_null(css);
    assert_true(len > 100);
    assert_string_equal(ct, "text/css; charset=utf-8");
    /* the bytes are the file's */
    char path[512];
    snprintf(path, sizeof path, "%s/gateway/web/assets/app.css", CARTGATE_SOURCE_DIR);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc(len + 1);
    assert_int_equal(fread(buf, 1, len + 1, f), len);
    fclose(f);
    assert_memory_equal(buf, css, len);
    free(buf);
    assert_non_null(web_asset("app.js", &len, &ct));
    assert_string_equal(ct, "text/javascript; charset=utf-8");
    assert_null(web_asset("../CMakeLists.txt", &len, &ct));
}

static char dir[] = "/tmp/cartgate-web-XXXXXX";

static store *fresh_store(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fhir_error err = {0};
    store *s = store_open(path, 0, &err);
    if (!s)
        fail_msg("store_open: %s", err.msg);
    return s;
}

/* What a page shows from a record is escaped: a name and an identifier with markup. */
static void test_escaping(void **state)
{
    (void)state;
    store *st = fresh_store("esc.db");
    fhir_error err = {0};
    static const char patient[] =
        "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"name\":[{\"given\":"
        "[\"<script>alert(1)</script>\"],\"family\":\"O'Brien & \\\"Co\\\"\"}],"
        "\"identifier\":[{\"value\":\"<b>7</b>\"}],\"birthDate\":\"1960-06-15\"}";
    assert_int_equal(store_resource_put(st, "p1", "Patient", "p1", patient, sizeof patient - 1,
                                        &err),
                     0);
    web_env env = {.st = st};
    web *w = web_new(&env);
    fhir_arena *a = fhir_arena_new(0);
    web_person pp;
    assert_int_equal(web_person_read(w, a, "p1", fhir_clock_days_from_civil(2026, 6, 15), &pp), 1);
    assert_int_equal(pp.age, 66);
    fhir_buf b;
    fhir_buf_init(&b, 4096);
    web_esc(&b, pp.name);
    fhir_buf_putc(&b, '|');
    web_esc(&b, pp.mrn);
    fhir_buf_putc(&b, '|');
    web_indications_json(&b, w, "[\"<i>:x\\\"\",\"axi-cel:LBCL-2L\"]");
    /* no criteria here: the keys as they are, escaped */
    assert_string_equal(fhir_buf_cstr(&b),
                        "&lt;script&gt;alert(1)&lt;/script&gt; O&#39;Brien &amp; &quot;Co&quot;|&lt;b&gt;7&lt;/b&gt;|"
                        "&lt;i&gt;:x&quot; · axi-cel:LBCL-2L");
    fhir_buf_free(&b);
    fhir_arena_free(a);
    web_free(w);
    store_close(st);
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void test_timeline_svg(void **state)
{
    (void)state;
    fhir_error err = {0};
    map_tables *t = map_tables_load(CARTGATE_MAPPINGS_DIR, &err);
    assert_non_null(t);
    fhir_arena *a = fhir_arena_new(0);
    char path[512];
    snprintf(path, sizeof path, "%s/tests/vignettes/04-lbcl-third-line-after-autologous-transplant.json",
             CARTGATE_SOURCE_DIR);
    fhir_node *bundle = fhir_json_parse_file(a, path, NULL, &err);
    assert_non_null(bundle);
    const fhir_node *res[256];
    size_t n = 0;
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e && n < 256; e = e->next)
        res[n++] = fhir_node_get(e, "resource");
    map_profile_opts o;
    map_profile_opts_default(&o);
    int64_t today = fhir_clock_days_from_civil(2025, 6, 1);
    o.as_of_days = today;
    map_profile *p = map_profile_build(t, res, n, &o, &err);
    assert_non_null(p);
    assert_int_equal(map_profile_line_count(p), 2);
    size_t ne = map_profile_event_count(p);
    assert_true(ne >= 2);
    fhir_buf b;
    fhir_buf_init(&b, 1 << 20);
    web_timeline_svg(&b, p, today, 960);
    const char *svg = fhir_buf_cstr(&b);
    assert_true(!strncmp(svg, "<svg ", 5));
    assert_true(strlen(svg) > 6 && !strcmp(svg + strlen(svg) - 6, "</svg>"));
    assert_int_equal(count(svg, "<rect class=\"bar\""), 1);     /* R-CHOP */
    assert_int_equal(count(svg, "<rect class=\"bar hct\""), 1); /* salvage with the transplant */
    assert_non_null(strstr(svg, "Line 1: cyclophosphamide + doxorubicin + rituximab + vincristine + prednisone"));
    assert_non_null(strstr(svg, "Line 2: carboplatin + etoposide + ifosfamide + rituximab (autologous transplant)"));
    assert_non_null(strstr(svg, "<title>Line 1, 2024-01-15 to 2024-04-29</title>"));
    assert_int_equal(count(svg, "class=\"mark resp\""), 1);
    assert_int_equal(count(svg, "class=\"mark prog\""), 1);
    assert_non_null(strstr(svg, "<title>response 2024-06-08</title>"));
    assert_non_null(strstr(svg, "<title>progression or relapse 2025-03-10</title>"));
    /* one mark per event of the profile (the transplant too) */
    assert_int_equal(count(svg, "class=\"mark "), ne);
    /* today is the right-most thing drawn: its x is past the end of line 2 */
    const char *tl = strstr(svg, "<line class=\"today\" x1=\"");
    assert_non_null(tl);
    double xt = atof(tl + strlen("<line class=\"today\" x1=\""));
    const char *bar2 = strstr(svg, "<rect class=\"bar hct\" x=\"");
    double x2 = atof(bar2 + strlen("<rect class=\"bar hct\" x=\""));
    const char *w2 = strstr(bar2, "width=\"");
    double wd = atof(w2 + 7);
    assert_true(xt > x2 + wd);
    assert_true(xt <= 960);
    fhir_buf_free(&b);
    map_profile_free(p);
    fhir_arena_free(a);
    map_tables_free(t);
}

/* ---- the worklist over the store ------------------------------------------------------------ */

static void put_verdict(store *st, int i, const char *cat, const char *urgency, const char *relapse)
{
    char pid[32], vj[512], pj[512];
    snprintf(pid, sizeof pid, "p%05d", i);
    snprintf(vj, sizeof vj,
             "{\"patient\":\"%s\",\"category\":\"%s\",\"products\":%s,\"possible_products\":[],\"missing\":[\"ecog\"],"
             "\"consult\":{\"recommendation\":\"none\"},\"urgency\":\"%s\"}",
             pid, cat, !strcmp(cat, "eligible") ? "[\"axi-cel:LBCL-2L\"]" : "[]", urgency);
    snprintf(pj, sizeof pj,
             "{\"facts\":{\"primary_disease\":{\"known\":true,\"value\":\"%s\"}},\"events\":["
             "{\"date\":\"2020-01-01\",\"kind\":\"progression or relapse\"}%s%s%s]}",
             i % 3 ? "dlbcl_nos" : "mm", relapse ? ",{\"date\":\"" : "", relapse ? relapse : "", relapse ? "\",\"kind\":\"progression or relapse\"}" : "");
    fhir_error err = {0};
    assert_int_equal(store_verdict_put(st, pid, "h", cat, pj, vj, &err), 0);
}

typedef struct seen {
    char ids[64][16];
    size_t n;
} seen;

static int seen_cb(void *ctx, const store_worklist_row *r)
{
    seen *s = ctx;
    if (s->n < 64)
        snprintf(s->ids[s->n++], 16, "%s", r->patient_id);
    return 0;
}

static void test_worklist_paging(void **state)
{
    (void)state;
    store *st = fresh_store("wl.db");
    fhir_error err = {0};
    /* 10,000 patients: every 4th eligible now, every 4th+1 possibly (review), the rest not */
    assert_int_equal(store_begin(st, &err), 0);
    for (int i = 0; i < 10000; i++) {
        char rel[16];
        snprintf(rel, sizeof rel, "2026-%02d-%02d", 1 + i % 12, 1 + i % 28);
        if (i % 4 == 0)
            put_verdict(st, i, "eligible", "now", rel);
        else if (i % 4 == 1)
            put_verdict(st, i, "possibly_eligible", "review", NULL);
        else
            put_verdict(st, i, "not_eligible", "none", NULL);
    }
    assert_int_equal(store_commit(st, &err), 0);
    store_worklist_filter all = {0};
    assert_int_equal(store_worklist_count(st, &all, &err), 5000);
    int64_t c[4];
    assert_int_equal(store_worklist_counts(st, c, &err), 0);
    assert_int_equal(c[0], 2500);
    assert_int_equal(c[1], 2500);
    /* pages: urgent first, then the earliest relapse, then id; no row twice over 3 pages */
    seen s1 = {0}, s2 = {0};
    assert_int_equal(store_worklist_page(st, &all, 50, 0, seen_cb, &s1, &err), 50);
    assert_int_equal(store_worklist_page(st, &all, 50, 50, seen_cb, &s2, &err), 50);
    for (size_t i = 0; i < 50; i++)
        for (size_t k = 0; k < 50; k++)
            assert_string_not_equal(s1.ids[i], s2.ids[k]);
    store_worklist_row row;
    memset(&row, 0, sizeof row);
    /* the first row is an urgent one with the earliest last relapse (2026-01-01: i % 12 == 0
     * and i % 28 == 0 and i % 4 == 0: i = 0) */
    assert_string_equal(s1.ids[0], "p00000");
    seen last = {0};
    assert_int_equal(store_worklist_page(st, &all, 50, 4990, seen_cb, &last, &err), 10);
    /* filters */
    store_worklist_filter fe = {.category = "eligible"};
    assert_int_equal(store_worklist_count(st, &fe, &err), 2500);
    store_worklist_filter fd = {.disease = "mm"};
    assert_int_equal(store_worklist_count(st, &fd, &err), 1667); /* i % 3 == 0 among i % 4 in {0, 1} */
    store_worklist_filter fs = {.state = "none"};
    assert_int_equal(store_worklist_count(st, &fs, &err), 5000);
    store_worklist_filter fs2 = {.state = "sent"};
    assert_int_equal(store_worklist_count(st, &fs2, &err), 0);
    /* a decline takes the patient off for this verdict; audited; a changed verdict brings them back */
    store_actor who = {.name = "dr.a", .user_id = 3, .role = "clinician", .reason = "Patient declined"};
    assert_int_equal(store_worklist_decline(st, "p00000", "patient_declined", &who, &err), 0);
    assert_int_equal(store_worklist_count(st, &all, &err), 4999);
    assert_int_equal(store_audit_count(st, 0), 1);
    /* the CDS service asks the same with a verdict line it made itself: the same category,
     * products, possible products and consult match (other fields may differ); another not */
    const char *same = "{\"patient\":\"p00000\",\"category\":\"eligible\",\"products\":[\"axi-cel:LBCL-2L\"],"
                       "\"possible_products\":[],\"missing\":[],\"consult\":{\"recommendation\":\"none\"},\"urgency\":\"soon\"}";
    const char *other = "{\"patient\":\"p00000\",\"category\":\"eligible\",\"products\":[\"liso-cel:LBCL-2L\"],"
                        "\"possible_products\":[],\"consult\":{\"recommendation\":\"none\"}}";
    assert_int_equal(store_worklist_declined_for(st, "p00000", "eligible", same, &err), 1);
    assert_int_equal(store_worklist_declined_for(st, "p00000", "eligible", other, &err), 0);
    assert_int_equal(store_worklist_declined_for(st, "p00000", "possibly_eligible", same, &err), 0);
    assert_int_equal(store_worklist_declined_for(st, "p00004", "eligible", same, &err), 0);
    put_verdict(st, 0, "eligible", "now", "2026-01-01"); /* the same verdict written again */
    assert_int_equal(store_worklist_count(st, &all, &err), 4999);
    put_verdict(st, 0, "possibly_eligible", "review", NULL); /* changed */
    assert_int_equal(store_worklist_count(st, &all, &err), 5000);
    /* a patient never screened cannot be declined */
    assert_int_equal(store_worklist_decline(st, "nobody", "other", &who, &err), -1);
    assert_int_equal(err.code, 404);
    /* new since my last visit: the previous visit is remembered across views */
    int64_t prev = -1;
    assert_int_equal(store_worklist_visit(st, 3, 1000, 100, &prev, &err), 0);
    assert_int_equal(prev, 0);
    assert_int_equal(store_worklist_visit(st, 3, 1050, 100, &prev, &err), 0);
    assert_int_equal(prev, 0); /* the same visit */
    assert_int_equal(store_worklist_visit(st, 3, 5000, 100, &prev, &err), 0);
    assert_int_equal(prev, 1050);
    store_close(st);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_roles),
        cmocka_unit_test(test_assets_embedded),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_timeline_svg),
        cmocka_unit_test(test_worklist_paging),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
