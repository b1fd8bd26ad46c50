/* Unit tests for the eligibility engine (gateway/rules/elig.h) against the shipped criteria in
 * conf/criteria: every indication gets an eligible patient, a near miss failing exactly one
 * hard gate and a possibly-eligible patient missing one fact; property tests over a generated
 * cohort of fact-patients; loader errors with file:line; parameters, effective dates, hash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "elig.h"
#include "fhir_clock.h"

/* ---- fact-patients ------------------------------------------------------------------- */

#define TP_MAX 64

typedef struct tp {
    char names[TP_MAX][48];
    map_fact facts[TP_MAX];
    char strs[TP_MAX][MAP_FACT_SET_MAX][24];
    size_t n;
} tp;

static map_fact *tp_slot(tp *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->names[i], name))
            return &p->facts[i];
    assert_true(p->n < TP_MAX);
    snprintf(p->names[p->n], sizeof p->names[0], "%s", name);
    memset(&p->facts[p->n], 0, sizeof p->facts[0]);
    return &p->facts[p->n++];
}

static void tp_num(tp *p, const char *name, double v)
{
    map_fact *f = tp_slot(p, name);
    memset(f, 0, sizeof *f);
    f->known = true;
    f->type = MAP_FACT_NUMBER;
    f->num = v;
    f->evidence = "test";
}

static void tp_bool(tp *p, const char *name, bool v)
{
    map_fact *f = tp_slot(p, name);
    memset(f, 0, sizeof *f);
    f->known = true;
    f->type = MAP_FACT_BOOL;
    f->b = v;
}

/* Comma-separated members ("" = empty set). */
static void tp_set(tp *p, const char *name, const char *csv)
{
    map_fact *f = tp_slot(p, name);
    size_t idx = (size_t)(f - p->facts);
    memset(f, 0, sizeof *f);
    f->known = true;
    f->type = MAP_FACT_SET;
    const char *s = csv;
    while (*s) {
        const char *e = strchr(s, ',');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        snprintf(p->strs[idx][f->nset], sizeof p->strs[0][0], "%.*s", (int)l, s);
        f->set[f->nset] = p->strs[idx][f->nset];
        f->nset++;
        s += l;
        if (*s == ',')
            s++;
    }
}

static void tp_str_code(tp *p, const char *name, const char *v)
{
    map_fact *f = tp_slot(p, name);
    size_t idx = (size_t)(f - p->facts);
    memset(f, 0, sizeof *f);
    f->known = true;
    f->type = MAP_FACT_CODE;
    snprintf(p->strs[idx][0], sizeof p->strs[0][0], "%s", v);
    f->str = p->strs[idx][0];
}

static void tp_del(tp *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->names[i], name)) {
            memmove(&p->names[i], &p->names[i + 1], (p->n - i - 1) * sizeof p->names[0]);
            memmove(&p->facts[i], &p->facts[i + 1], (p->n - i - 1) * sizeof p->facts[0]);
            memmove(&p->strs[i], &p->strs[i + 1], (p->n - i - 1) * sizeof p->strs[0]);
            p->n--;
            /* set pointers moved with their strings */
            for (size_t k = i; k < p->n; k++)
                for (size_t m = 0; m < p->facts[k].nset; m++)
                    p->facts[k].set[m] = p->strs[k][m];
            return;
        }
}

static void tp_copy(tp *dst, const tp *src)
{
    memcpy(dst, src, sizeof *dst);
    for (size_t k = 0; k < dst->n; k++)
        for (size_t m = 0; m < dst->facts[k].nset; m++)
            dst->facts[k].set[m] = dst->strs[k][m];
}

static const map_fact *tp_lookup(void *ud, const char *name)
{
    tp *p = ud;
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->names[i], name))
            return &p->facts[i];
    return NULL;
}

/* A patient with everything documented and unremarkable: no disease, no therapy. */
static void tp_base(tp *p)
{
    memset(p, 0, sizeof *p);
    tp_num(p, "age", 60);
    tp_bool(p, "deceased", false);
    tp_set(p, "diseases", "");
    tp_bool(p, "pcnsl", false);
    tp_bool(p, "cns_involvement", false);
    tp_bool(p, "histology_transformed", false);
    tp_num(p, "lines", 0);
    tp_set(p, "prior_classes", "");
    tp_set(p, "first_line_classes", "anti_cd20,anthracycline,alkylator");
    tp_bool(p, "relapsed", false);
    tp_bool(p, "refractory", false);
    tp_bool(p, "primary_refractory", false);
    tp_num(p, "relapse_count", 0);
    tp_bool(p, "lenalidomide_refractory", false);
    tp_bool(p, "btki_progression", false);
    tp_bool(p, "prior_auto_hct", false);
    tp_bool(p, "prior_allo_hct", false);
    tp_bool(p, "prior_car_t", false);
    tp_bool(p, "hct_ineligible", false);
    tp_num(p, "ecog", 1);
    tp_num(p, "anc", 2.5);
    tp_num(p, "alc", 1.2);
    tp_num(p, "platelets", 180);
    tp_num(p, "hemoglobin", 12);
    tp_num(p, "crcl", 85);
    tp_num(p, "renal_function", 85);
    tp_num(p, "bilirubin", 0.7);
    tp_num(p, "ast", 25);
    tp_num(p, "alt", 22);
    tp_num(p, "lvef", 60);
    tp_num(p, "spo2", 97);
    tp_bool(p, "active_infection", false);
}

/* ---- fixture ------------------------------------------------------------------------- */

typedef struct fx {
    elig_ruleset *rs;
    elig_factset *fs;
    elig_result *r;
} fx;

static int64_t day(const char *s)
{
    int64_t d;
    assert_int_equal(fhir_clock_parse_date(s, &d), 0);
    return d;
}

static const char *criteria_dir(void)
{
    static char path[1024];
    const char *src = getenv("CARTGATE_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/conf/criteria", src ? src : ".");
    return path;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    fhir_error err;
    f->rs = elig_load_dir(criteria_dir(), &err);
    if (!f->rs) {
        fprintf(stderr, "load: %s\n", err.msg);
        free(f);
        return -1;
    }
    f->fs = elig_factset_new(f->rs);
    f->r = elig_result_new(f->rs);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    if (!f)
        return 0;
    elig_result_free(f->r);
    elig_factset_free(f->fs);
    elig_ruleset_free(f->rs);
    free(f);
    return 0;
}

#define AS_OF "2026-11-27"

static void run(fx *f, tp *p, const char *as_of)
{
    elig_factset_fill(f->fs, tp_lookup, p);
    elig_evaluate(f->rs, f->fs, day(as_of), f->r);
}

static elig_category cat_of(fx *f, const char *key)
{
    int i = elig_ruleset_find(f->rs, key);
    assert_true(i >= 0);
    return elig_result_ind_category(f->r, (size_t)i);
}

static bool missing_has(fx *f, const char *key, const char *fact)
{
    int i = elig_ruleset_find(f->rs, key);
    uint64_t m = elig_result_ind_missing(f->r, (size_t)i);
    /* patient-level list is sorted names; check there and that the indication misses it */
    const char *names[ELIG_MAX_FACTS];
    size_t nm = elig_result_missing(f->rs, f->fs, f->r, names, ELIG_MAX_FACTS);
    bool found = false;
    for (size_t k = 0; k < nm; k++)
        found |= !strcmp(names[k], fact);
    return found && m != 0;
}

static bool flag_has(fx *f, const char *id)
{
    const char *ids[ELIG_MAX_FLAGS];
    size_t n = elig_result_flags(f->rs, f->r, ids, ELIG_MAX_FLAGS);
    for (size_t k = 0; k < n; k++)
        if (!strcmp(ids[k], id))
            return true;
    return false;
}

/* ---- the per-indication cases -------------------------------------------------------- */

typedef struct icase {
    const char *key;
    void (*eligible)(tp *p);
    void (*near_miss)(tp *p);      /* changes exactly one fact */
    const char *failed_gate;       /* substring of the failed gate's label */
    const char *remove;            /* fact whose removal makes it possibly eligible */
} icase;

static void e_tisa_all(tp *p)
{
    tp_num(p, "age", 19);
    tp_set(p, "diseases", "b_all");
    tp_num(p, "lines", 2);
    tp_bool(p, "refractory", true);
}
static void n_age30(tp *p) { tp_num(p, "age", 30); }
static void e_tisa_lbcl(tp *p)
{
    tp_set(p, "diseases", "dlbcl_nos");
    tp_num(p, "lines", 2);
    tp_bool(p, "relapsed", true);
    tp_num(p, "relapse_count", 1);
}
static void n_pmbcl(tp *p) { tp_set(p, "diseases", "pmbcl"); }
static void e_fl(tp *p)
{
    tp_set(p, "diseases", "fl");
    tp_num(p, "lines", 3);
    tp_bool(p, "refractory", true);
    tp_set(p, "prior_classes", "anti_cd20,alkylator");
}
static void n_lines1(tp *p) { tp_num(p, "lines", 1); }
static void e_axi_2l(tp *p)
{
    tp_set(p, "diseases", "dlbcl_nos");
    tp_num(p, "lines", 1);
    tp_bool(p, "relapsed", true);
    tp_num(p, "relapse_count", 1);
    tp_num(p, "relapse_months_after_1l_end", 7);
    tp_num(p, "relapse_months_after_1l_start", 12.5);
    tp_set(p, "first_line_classes", "anti_cd20,anthracycline,alkylator");
}
static void n_late(tp *p) { tp_num(p, "relapse_months_after_1l_end", 15); }
static void e_axi_3l(tp *p)
{
    tp_set(p, "diseases", "pmbcl");
    tp_num(p, "lines", 2);
    tp_bool(p, "refractory", true);
}
static void n_age17(tp *p) { tp_num(p, "age", 17); }
static void e_axi_fl(tp *p)
{
    e_fl(p);
    tp_bool(p, "refractory", false);
    tp_bool(p, "relapsed", true);
}
static void n_dead(tp *p) { tp_bool(p, "deceased", true); }
static void e_mcl(tp *p)
{
    tp_set(p, "diseases", "mcl");
    tp_num(p, "lines", 1);
    tp_bool(p, "relapsed", true);
    tp_set(p, "prior_classes", "anti_cd20,alkylator,btki");
}
static void n_not_rr(tp *p) { tp_bool(p, "relapsed", false); }
static void e_brexu_all(tp *p)
{
    tp_num(p, "age", 40);
    tp_set(p, "diseases", "b_all");
    tp_num(p, "lines", 1);
    tp_bool(p, "relapsed", true);
}
static void e_liso_2l(tp *p)
{
    tp_set(p, "diseases", "fl_3b");
    tp_num(p, "lines", 1);
    tp_bool(p, "primary_refractory", true);
    tp_bool(p, "refractory", true);
}
static void n_pcnsl(tp *p) { tp_bool(p, "pcnsl", true); }
static void e_liso_ti(tp *p)
{
    tp_num(p, "age", 79);
    tp_set(p, "diseases", "dlbcl_nos");
    tp_num(p, "lines", 1);
    tp_bool(p, "relapsed", true);
    tp_num(p, "relapse_months_after_1l_end", 20);
    tp_bool(p, "hct_ineligible", true);
}
static void n_hct_ok(tp *p) { tp_bool(p, "hct_ineligible", false); }
static void e_liso_3l(tp *p)
{
    tp_set(p, "diseases", "tfl");
    tp_bool(p, "histology_transformed", true);
    tp_num(p, "lines", 3);
    tp_bool(p, "relapsed", true);
}
static void e_cll(tp *p)
{
    tp_set(p, "diseases", "cll_sll");
    tp_num(p, "lines", 2);
    tp_set(p, "prior_classes", "btki,bcl2i,anti_cd20");
    tp_bool(p, "refractory", true);
}
static void n_btki_only(tp *p) { tp_set(p, "prior_classes", "btki,anti_cd20"); }
static void e_liso_fl(tp *p)
{
    tp_set(p, "diseases", "fl");
    tp_num(p, "lines", 2);
    tp_bool(p, "relapsed", true);
    tp_set(p, "prior_classes", "anti_cd20,alkylator");
}
static void e_liso_mcl(tp *p)
{
    e_mcl(p);
    tp_num(p, "lines", 2);
    tp_bool(p, "btki_progression", true);
}
static void n_no_btki(tp *p) { tp_set(p, "prior_classes", "anti_cd20,alkylator"); }
static void e_mzl(tp *p)
{
    tp_set(p, "diseases", "mzl");
    tp_num(p, "lines", 2);
    tp_bool(p, "relapsed", true);
}
static void e_ide(tp *p)
{
    tp_set(p, "diseases", "mm");
    tp_num(p, "lines", 3);
    tp_set(p, "prior_classes", "imid,pi,anti_cd38,alkylator");
    tp_bool(p, "refractory", true);
}
static void n_no_cd38(tp *p) { tp_set(p, "prior_classes", "imid,pi,alkylator"); }
static void e_cilta(tp *p)
{
    tp_set(p, "diseases", "mm");
    tp_num(p, "lines", 1);
    tp_set(p, "prior_classes", "imid,pi");
    tp_bool(p, "lenalidomide_refractory", true);
    tp_bool(p, "relapsed", true);
}
static void n_len_sens(tp *p) { tp_bool(p, "lenalidomide_refractory", false); }
static void e_obe(tp *p)
{
    tp_num(p, "age", 30);
    tp_set(p, "diseases", "b_all");
    tp_num(p, "lines", 2);
    tp_bool(p, "refractory", true);
}
static void n_mm(tp *p) { tp_set(p, "diseases", "mm"); }

static const icase cases[] = {
    {"tisa-cel:ALL", e_tisa_all, n_age30, "25 years of age or younger", "age"},
    {"tisa-cel:LBCL-3L", e_tisa_lbcl, n_pmbcl, "large B-cell lymphoma histology", "lines"},
    {"tisa-cel:FL-3L", e_fl, n_lines1, "at least 2 prior lines", "diseases"},
    {"axi-cel:LBCL-2L", e_axi_2l, n_late, "within 12 months", "relapse_months_after_1l_end"},
    {"axi-cel:LBCL-3L", e_axi_3l, n_age17, "adult", "refractory"},
    {"axi-cel:FL-3L", e_axi_fl, n_dead, "patient alive", "age"},
    {"brexu-cel:MCL", e_mcl, n_not_rr, "relapsed or refractory", "diseases"},
    {"brexu-cel:ALL", e_brexu_all, n_age17, "adult", "age"},
    {"liso-cel:LBCL-2L", e_liso_2l, n_pcnsl, "not primary CNS lymphoma", "primary_refractory"},
    {"liso-cel:LBCL-2L-TI", e_liso_ti, n_hct_ok, "not eligible for HSCT", "hct_ineligible"},
    {"liso-cel:LBCL-3L", e_liso_3l, n_lines1, "at least 2 prior lines", "lines"},
    {"liso-cel:CLL", e_cll, n_btki_only, "BTK inhibitor and BCL-2 inhibitor", "prior_classes"},
    {"liso-cel:FL-3L", e_liso_fl, n_lines1, "at least 2 prior lines", "relapsed"},
    {"liso-cel:MCL", e_liso_mcl, n_no_btki, "prior BTK inhibitor", "prior_classes"},
    {"liso-cel:MZL", e_mzl, n_lines1, "at least 2 prior lines", "lines"},
    {"ide-cel:MM-3L", e_ide, n_no_cd38, "triple-class", "prior_classes"},
    {"cilta-cel:MM-2L", e_cilta, n_len_sens, "refractory to lenalidomide",
     "lenalidomide_refractory"},
    {"obe-cel:ALL", e_obe, n_mm, "acute lymphoblastic leukemia", "refractory"},
};
#define NCASES (sizeof cases / sizeof cases[0])

static void test_all_indications_loaded(void **state)
{
    fx *f = *state;
    /* the 16 label rows of clinical.md §1.1 give 18 product:indication keys (Breyanzi LBCL
     * has three alternatives: 2L, 2L transplant-ineligible, 3L+), plus one pending product
     * (anito-cel, label not verified: not in force) */
    assert_int_equal(elig_ruleset_count(f->rs), 19);
    assert_int_equal(NCASES, 18);
    for (size_t i = 0; i < NCASES; i++) {
        assert_true(elig_ruleset_find(f->rs, cases[i].key) >= 0);
        assert_false(elig_ruleset_is_pending(f->rs, (size_t)elig_ruleset_find(f->rs, cases[i].key)));
    }
    int anito = elig_ruleset_find(f->rs, "anito-cel:MM-4L");
    assert_true(anito >= 0);
    assert_true(elig_ruleset_is_pending(f->rs, (size_t)anito));
    assert_int_equal(elig_ruleset_consult_count(f->rs), 7);
    assert_non_null(strstr(elig_ruleset_hash(f->rs), "sha256:"));
    assert_int_equal(strlen(elig_ruleset_hash(f->rs)), 7 + 64);
}

static void test_eligible(void **state)
{
    fx *f = *state;
    for (size_t i = 0; i < NCASES; i++) {
        tp p;
        tp_base(&p);
        cases[i].eligible(&p);
        run(f, &p, AS_OF);
        if (cat_of(f, cases[i].key) != ELIG_ELIGIBLE)
            fail_msg("%s: expected eligible, got %s", cases[i].key,
                     elig_category_name(cat_of(f, cases[i].key)));
        assert_int_equal(elig_result_category(f->r), ELIG_ELIGIBLE);
        assert_int_equal(elig_result_urgency(f->r), ELIG_URGENCY_NOW);
        /* an unremarkable patient raises no review flag */
        const char *ids[ELIG_MAX_FLAGS];
        size_t nf = elig_result_flags(f->rs, f->r, ids, ELIG_MAX_FLAGS);
        if (nf)
            fail_msg("%s: unexpected review flag %s", cases[i].key, ids[0]);
    }
}

static void test_near_miss(void **state)
{
    fx *f = *state;
    for (size_t i = 0; i < NCASES; i++) {
        tp p;
        tp_base(&p);
        cases[i].eligible(&p);
        cases[i].near_miss(&p);
        run(f, &p, AS_OF);
        int idx = elig_ruleset_find(f->rs, cases[i].key);
        if (cat_of(f, cases[i].key) != ELIG_NOT_ELIGIBLE)
            fail_msg("%s near miss: expected not_eligible, got %s", cases[i].key,
                     elig_category_name(cat_of(f, cases[i].key)));
        const char *gate = elig_result_ind_failed(f->rs, f->r, (size_t)idx);
        assert_non_null(gate);
        if (!strstr(gate, cases[i].failed_gate))
            fail_msg("%s near miss: failed gate '%s', expected '%s'", cases[i].key, gate,
                     cases[i].failed_gate);
        /* the explanation names the gate */
        fhir_buf b;
        fhir_buf_init(&b, 0);
        assert_int_equal(elig_result_write_explanation(f->rs, f->fs, f->r, &b), 0);
        /* the explanation names the gate, or lists the indication among those whose
         * disease does not match */
        const char *x = fhir_buf_cstr(&b);
        const char *dis = strstr(x, "not the disease of the label for");
        if (!strstr(x, gate) && !(dis && strstr(dis, cases[i].key)))
            fail_msg("%s: explanation does not name the failed gate:\n%s", cases[i].key, x);
        fhir_buf_free(&b);
    }
}

static void test_possibly_eligible(void **state)
{
    fx *f = *state;
    for (size_t i = 0; i < NCASES; i++) {
        tp p;
        tp_base(&p);
        cases[i].eligible(&p);
        tp_del(&p, cases[i].remove);
        run(f, &p, AS_OF);
        if (cat_of(f, cases[i].key) != ELIG_POSSIBLY_ELIGIBLE)
            fail_msg("%s without %s: expected possibly_eligible, got %s", cases[i].key,
                     cases[i].remove, elig_category_name(cat_of(f, cases[i].key)));
        if (!missing_has(f, cases[i].key, cases[i].remove))
            fail_msg("%s: missing list lacks %s", cases[i].key, cases[i].remove);
        assert_true(elig_result_category(f->r) >= ELIG_POSSIBLY_ELIGIBLE);
    }
}

/* ---- dates, parameters, flags, output ------------------------------------------------ */

static void test_pcnsl_label_change(void **state)
{
    fx *f = *state;
    tp p;
    tp_base(&p);
    tp_set(&p, "diseases", "pcnsl");
    tp_bool(&p, "pcnsl", true);
    tp_num(&p, "lines", 2);
    tp_bool(&p, "relapsed", true);
    run(f, &p, "2026-02-05");
    assert_int_equal(cat_of(f, "axi-cel:LBCL-3L"), ELIG_NOT_ELIGIBLE);
    run(f, &p, "2026-02-06");
    assert_int_equal(cat_of(f, "axi-cel:LBCL-3L"), ELIG_ELIGIBLE);
    assert_int_equal(cat_of(f, "liso-cel:LBCL-3L"), ELIG_NOT_ELIGIBLE);
    assert_int_equal(cat_of(f, "tisa-cel:LBCL-3L"), ELIG_NOT_ELIGIBLE);
    /* DLBCL with documented CNS primary is excluded by Kymriah even though DLBCL matches */
    tp_set(&p, "diseases", "dlbcl_nos");
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "tisa-cel:LBCL-3L"), ELIG_NOT_ELIGIBLE);
    size_t tisa = (size_t)elig_ruleset_find(f->rs, "tisa-cel:LBCL-3L");
    assert_non_null(strstr(elig_result_ind_failed(f->rs, f->r, tisa), "primary CNS"));
}

static void test_effective_from(void **state)
{
    fx *f = *state;
    tp p;
    tp_base(&p);
    e_mzl(&p);
    run(f, &p, "2025-12-03");
    assert_int_equal(cat_of(f, "liso-cel:MZL"), ELIG_NOT_IN_FORCE);
    assert_int_equal(elig_result_category(f->r), ELIG_NOT_ELIGIBLE);
    run(f, &p, "2025-12-04");
    assert_int_equal(cat_of(f, "liso-cel:MZL"), ELIG_ELIGIBLE);
}

static void test_anchor_parameter(void **state)
{
    fx *f = *state;
    tp p;
    tp_base(&p);
    e_axi_2l(&p); /* 7 months from end of 1L, 12.5 from start */
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "axi-cel:LBCL-2L"), ELIG_ELIGIBLE);
    char h0[128];
    snprintf(h0, sizeof h0, "%s", elig_ruleset_hash(f->rs));
    fhir_error err;
    assert_int_equal(elig_ruleset_set_param(f->rs, "lbcl_1l_anchor", "start", &err), 0);
    assert_string_not_equal(h0, elig_ruleset_hash(f->rs));
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "axi-cel:LBCL-2L"), ELIG_NOT_ELIGIBLE);
    assert_int_equal(cat_of(f, "liso-cel:LBCL-2L"), ELIG_NOT_ELIGIBLE);
    /* still possibly eligible through the transplant-ineligible alternative when unknown */
    tp_del(&p, "hct_ineligible");
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "liso-cel:LBCL-2L-TI"), ELIG_POSSIBLY_ELIGIBLE);
    assert_int_equal(elig_result_urgency(f->r), ELIG_URGENCY_NOW);
    assert_int_equal(elig_ruleset_set_param(f->rs, "lbcl_2l_relapse_window_months", "13", &err), 0);
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "axi-cel:LBCL-2L"), ELIG_ELIGIBLE);
    assert_int_equal(elig_ruleset_set_param(f->rs, "lbcl_1l_anchor", "profile", &err), 0);
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "axi-cel:LBCL-2L"), ELIG_POSSIBLY_ELIGIBLE);
    assert_true(missing_has(f, "axi-cel:LBCL-2L", "relapse_months_after_1l"));
    assert_int_equal(elig_ruleset_set_param(f->rs, "lbcl_1l_anchor", "middle", &err), -1);
    assert_non_null(strstr(err.msg, "middle"));
    assert_int_equal(elig_ruleset_set_param(f->rs, "nope", "1", &err), -1);
    assert_int_equal(elig_ruleset_set_param(f->rs, "lbcl_2l_relapse_window_months", "x", &err), -1);
}

static void test_review_flags_reported(void **state)
{
    fx *f = *state;
    tp p;
    tp_base(&p);
    e_axi_3l(&p);
    tp_num(&p, "ecog", 3);
    tp_num(&p, "renal_function", 25);
    tp_bool(&p, "active_infection", true);
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "axi-cel:LBCL-3L"), ELIG_ELIGIBLE);
    assert_true(flag_has(f, "ecog"));
    assert_true(flag_has(f, "renal"));
    assert_true(flag_has(f, "active_infection"));
    assert_false(flag_has(f, "lvef"));
    fhir_buf b;
    fhir_buf_init(&b, 0);
    elig_result_write_json(f->rs, f->fs, f->r, "p-flags", &b);
    const char *j = fhir_buf_cstr(&b);
    assert_non_null(strstr(j, "\"review_flags\":[\"active_infection\",\"ecog\",\"renal\"]"));
    assert_non_null(strstr(j, "review flag ecog (ECOG 3 (test))"));
    assert_non_null(strstr(j, "review flag renal (renal function (mL/min) 25"));
    fhir_buf_free(&b);
}

static void test_json_shape_and_determinism(void **state)
{
    fx *f = *state;
    tp p;
    tp_base(&p);
    e_liso_ti(&p);
    tp_del(&p, "hct_ineligible");
    run(f, &p, AS_OF);
    fhir_buf a, b;
    fhir_buf_init(&a, 0);
    fhir_buf_init(&b, 0);
    assert_int_equal(elig_result_write_json(f->rs, f->fs, f->r, "pt-1", &a), 0);
    run(f, &p, AS_OF);
    assert_int_equal(elig_result_write_json(f->rs, f->fs, f->r, "pt-1", &b), 0);
    assert_string_equal(fhir_buf_cstr(&a), fhir_buf_cstr(&b));
    const char *j = fhir_buf_cstr(&a);
    assert_non_null(strstr(j, "{\"patient\":\"pt-1\",\"category\":\"possibly_eligible\","
                              "\"products\":[],\"possible_products\":[\"liso-cel:LBCL-2L-TI\"],"
                              "\"missing\":[\"hct_ineligible\"],\"review_flags\":[],\"notes\":[],"
                              "\"consult\":{\"recommendation\":"));
    assert_non_null(strstr(j, "]},\"urgency\":\"now\",\"explanation\":["));
    assert_non_null(strstr(j, "],\"to_request\":["));
    assert_non_null(strstr(j, "],\"provenance\":["));
    assert_non_null(strstr(j, "\"ruleset\":\"sha256:"));
    assert_null(strchr(j, '\n'));
    /* the verdict as the daemon stores it: the same bytes without the "provenance" member */
    fhir_buf v;
    fhir_buf_init(&v, 0);
    assert_int_equal(elig_result_write_verdict_json(f->rs, f->fs, f->r, "pt-1", &v), 0);
    const char *pv = strstr(j, ",\"provenance\":["), *rs = strstr(j, ",\"ruleset\":");
    assert_non_null(pv);
    assert_non_null(rs);
    assert_true(rs > pv);
    size_t head = (size_t)(pv - j);
    assert_int_equal(v.len, a.len - (size_t)(rs - pv));
    assert_memory_equal(v.data, j, head);
    assert_string_equal(fhir_buf_cstr(&v) + head, rs);
    assert_null(strstr(fhir_buf_cstr(&v), "provenance"));
    fhir_buf_free(&v);
    fhir_buf_free(&a);
    fhir_buf_free(&b);
}

/* What a clinician reads names no record: the references in a fact's evidence stay in
 * "provenance" only. */
static void test_explanation_without_record_references(void **state)
{
    fx *f = *state;
    tp p;
    tp_base(&p);
    e_liso_ti(&p);
    map_fact *h = tp_slot(&p, "hct_ineligible");
    memset(h, 0, sizeof *h);
    h->type = MAP_FACT_BOOL;
    h->evidence = "Observation/o1 performance note; weight 50 kg (Observation/o66), seen "
                  "(Procedure/p-1.2 biopsy) with N/A (diagnoses.tsv:3)";
    run(f, &p, AS_OF);
    assert_int_equal(elig_result_category(f->r), ELIG_POSSIBLY_ELIGIBLE);
    fhir_buf v, full;
    fhir_buf_init(&v, 0);
    fhir_buf_init(&full, 0);
    assert_int_equal(elig_result_write_verdict_json(f->rs, f->fs, f->r, "pt-1", &v), 0);
    assert_int_equal(elig_result_write_json(f->rs, f->fs, f->r, "pt-1", &full), 0);
    const char *j = fhir_buf_cstr(&v);
    assert_non_null(strstr(j, "(performance note; weight 50 kg, seen (biopsy) with N/A"));
    assert_null(strstr(j, "Observation/"));
    assert_null(strstr(j, "Procedure/"));
    assert_null(strstr(j, "diagnoses.tsv"));
    /* the developers' copy keeps them */
    assert_non_null(strstr(fhir_buf_cstr(&full), "Observation/o1 performance note; weight 50 kg (Observation/o66)"));
    fhir_buf_free(&v);
    fhir_buf_free(&full);
}

static void test_no_heme_disease(void **state)
{
    fx *f = *state;
    tp p;
    tp_base(&p);
    tp_set(&p, "diseases", "non_heme");
    run(f, &p, AS_OF);
    assert_int_equal(elig_result_category(f->r), ELIG_NOT_ELIGIBLE);
    assert_int_equal(elig_result_urgency(f->r), ELIG_URGENCY_NONE);
    /* a documented non-heme disease excludes on the disease gate even when every other
     * fact is unknown, and the explanation says so on one line */
    tp only;
    memset(&only, 0, sizeof only);
    tp_set(&only, "diseases", "non_heme");
    tp_bool(&only, "deceased", true);
    run(f, &only, AS_OF);
    assert_int_equal(elig_result_category(f->r), ELIG_NOT_ELIGIBLE);
    for (size_t i = 0; i < elig_ruleset_count(f->rs); i++) {
        if (elig_ruleset_is_pending(f->rs, i))
            continue; /* not in force */
        const char *g = elig_result_ind_failed(f->rs, f->r, i);
        assert_non_null(g);
        assert_null(strstr(g, "alive"));
    }
    fhir_buf b;
    fhir_buf_init(&b, 0);
    elig_result_write_explanation(f->rs, f->fs, f->r, &b);
    assert_non_null(strstr(fhir_buf_cstr(&b), "not the disease of the label for axi-cel:FL-3L,"));
    assert_null(strstr(fhir_buf_cstr(&b), "alive"));
    fhir_buf_free(&b);
    /* a deceased lymphoma patient: one shared line for every indication failing 'alive' */
    e_tisa_lbcl(&p);
    tp_bool(&p, "deceased", true);
    run(f, &p, AS_OF);
    assert_int_equal(elig_result_category(f->r), ELIG_NOT_ELIGIBLE);
    fhir_buf_init(&b, 0);
    elig_result_write_explanation(f->rs, f->fs, f->r, &b);
    const char *x = fhir_buf_cstr(&b);
    const char *alive = strstr(x, "not_eligible: fails 'patient alive' (deceased: yes");
    assert_non_null(alive);
    assert_null(strstr(alive + strlen("not_eligible: fails"), "fails 'patient alive'"));
    assert_non_null(strstr(x, "axi-cel:LBCL-2L,axi-cel:LBCL-3L,liso-cel:LBCL-2L,"));
    fhir_buf_free(&b);
    /* nothing known at all: possibly eligible everywhere, never excluded */
    tp empty;
    memset(&empty, 0, sizeof empty);
    run(f, &empty, AS_OF);
    assert_int_equal(elig_result_category(f->r), ELIG_POSSIBLY_ELIGIBLE);
    for (size_t i = 0; i < elig_ruleset_count(f->rs); i++)
        assert_int_equal(elig_result_ind_category(f->r, i),
                         elig_ruleset_is_pending(f->rs, i) ? ELIG_NOT_IN_FORCE : ELIG_POSSIBLY_ELIGIBLE);
}

static void test_type_mismatch_fact_is_unknown(void **state)
{
    fx *f = *state;
    tp p;
    tp_base(&p);
    e_axi_3l(&p);
    /* a profile bug delivering lines as a bool must not exclude: the fact counts as unknown */
    tp_bool(&p, "lines", true);
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "axi-cel:LBCL-3L"), ELIG_POSSIBLY_ELIGIBLE);
}

/* ---- property tests over a generated cohort ------------------------------------------- */

static uint64_t rng_state;
static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33) % n;
}

static const char *const g_diseases[] = {"dlbcl_nos", "hgbcl", "pmbcl", "tfl", "fl_3b", "fl",
                                         "mcl", "cll_sll", "mzl", "b_all", "mm", "pcnsl", "hl",
                                         "non_heme"};
static const char *const g_classes[] = {"anti_cd20", "anthracycline", "alkylator", "btki",
                                        "bcl2i", "imid", "pi", "anti_cd38", "bcma_directed"};

static void gen_patient(tp *p)
{
    tp_base(p);
    tp_num(p, "age", 10 + rnd(80));
    tp_set(p, "diseases", g_diseases[rnd(14)]);
    tp_num(p, "lines", rnd(5));
    char cls[256] = "";
    for (size_t k = 0; k < 9; k++)
        if (rnd(2)) {
            if (cls[0])
                strcat(cls, ",");
            strcat(cls, g_classes[k]);
        }
    tp_set(p, "prior_classes", cls);
    tp_set(p, "first_line_classes", rnd(2) ? "anti_cd20,anthracycline" : "anti_cd20");
    tp_bool(p, "relapsed", rnd(3) != 0);
    tp_bool(p, "refractory", rnd(2));
    tp_bool(p, "primary_refractory", rnd(4) == 0);
    tp_num(p, "relapse_count", rnd(3));
    tp_num(p, "relapse_months_after_1l_end", rnd(30));
    tp_num(p, "relapse_months_after_1l_start", 6 + rnd(30));
    tp_bool(p, "lenalidomide_refractory", rnd(2));
    tp_bool(p, "btki_progression", rnd(2));
    tp_bool(p, "hct_ineligible", rnd(2));
    tp_bool(p, "pcnsl", rnd(10) == 0);
    tp_bool(p, "deceased", rnd(20) == 0);
    /* drop a few facts at random */
    for (int k = rnd(4); k > 0; k--)
        tp_del(p, p->names[rnd((uint32_t)p->n)]);
}

typedef struct abn {
    const char *fact;
    bool is_bool;
    double v;
} abn;

static const abn abnormal[] = {
    {"ecog", false, 4}, {"anc", false, 0.1}, {"platelets", false, 10}, {"alc", false, 0.02},
    {"crcl", false, 15}, {"bilirubin", false, 6}, {"ast", false, 600}, {"alt", false, 600},
    {"lvef", false, 25}, {"spo2", false, 84}, {"hemoglobin", false, 6},
    {"active_infection", true, 1}, {"prior_allo_hct", true, 1}, {"cns_involvement", true, 1},
    {"prior_car_t", true, 1},
};

static void snapshot(fx *f, uint8_t *cats)
{
    for (size_t i = 0; i < elig_ruleset_count(f->rs); i++)
        cats[i] = (uint8_t)elig_result_ind_category(f->r, i);
}

static void test_property_missing_never_excludes(void **state)
{
    fx *f = *state;
    rng_state = 42;
    size_t eligible_patients = 0, removals = 0;
    for (int n = 0; n < 3000; n++) {
        tp p;
        gen_patient(&p);
        run(f, &p, AS_OF);
        uint8_t before[ELIG_MAX_INDICATIONS];
        snapshot(f, before);
        bool elig = elig_result_category(f->r) == ELIG_ELIGIBLE;
        eligible_patients += elig;
        for (size_t k = 0; k < p.n; k++) {
            tp q;
            tp_copy(&q, &p);
            tp_del(&q, p.names[k]);
            run(f, &q, AS_OF);
            removals++;
            if (elig && elig_result_category(f->r) == ELIG_NOT_ELIGIBLE)
                fail_msg("patient %d: removing %s made an eligible patient not_eligible", n,
                         p.names[k]);
            /* per indication: a candidate never becomes not_eligible by losing a fact */
            for (size_t i = 0; i < elig_ruleset_count(f->rs); i++)
                if (before[i] != ELIG_NOT_ELIGIBLE &&
                    elig_result_ind_category(f->r, i) == ELIG_NOT_ELIGIBLE)
                    fail_msg("patient %d: removing %s excluded %s", n, p.names[k],
                             elig_ruleset_key(f->rs, i));
        }
    }
    /* the generated cohort must actually contain eligible patients */
    assert_true(eligible_patients > 100);
    assert_true(removals > 10000);
}

static void test_property_flags_never_change_category(void **state)
{
    fx *f = *state;
    rng_state = 7;
    size_t raised = 0;
    for (int n = 0; n < 3000; n++) {
        tp p;
        gen_patient(&p);
        run(f, &p, AS_OF);
        uint8_t before[ELIG_MAX_INDICATIONS];
        snapshot(f, before);
        elig_category cat = elig_result_category(f->r);
        for (size_t k = 0; k < sizeof abnormal / sizeof abnormal[0]; k++) {
            tp q;
            tp_copy(&q, &p);
            if (abnormal[k].is_bool)
                tp_bool(&q, abnormal[k].fact, true);
            else
                tp_num(&q, abnormal[k].fact, abnormal[k].v);
            run(f, &q, AS_OF);
            if (elig_result_category(f->r) != cat)
                fail_msg("patient %d: abnormal %s changed the category", n, abnormal[k].fact);
            for (size_t i = 0; i < elig_ruleset_count(f->rs); i++)
                assert_int_equal(before[i], elig_result_ind_category(f->r, i));
            const char *ids[ELIG_MAX_FLAGS];
            raised += elig_result_flags(f->rs, f->r, ids, ELIG_MAX_FLAGS) > 0;
        }
    }
    assert_true(raised > 1000); /* the abnormalities are seen as flags */
}

/* ---- loader errors ------------------------------------------------------------------- */

#define LINES_OK "\"label\": \"l\", \"fact\": \"lines\", \"op\": \">=\", \"value\": 2"

static const char *params_json =
    "{\"params\": [{\"name\": \"w\", \"type\": \"number\", \"default\": 12,\n"
    " \"description\": \"d\", \"source\": \"s\"}]}\n";

/* A valid criteria file; "@@" marks where a test splices a line (line 12). */
static char *criteria_with(const char *line12, const char *source_block)
{
    static char buf[4096];
    snprintf(buf, sizeof buf,
             "{\n"                                                          /* 1 */
             "  \"id\": \"x-cel:LBCL-3L\",\n"                               /* 2 */
             "  \"product\": {\"key\": \"x-cel\", \"generic\": \"g\", \"brand\": \"B\"},\n"
             "  \"indication\": {\"key\": \"LBCL-3L\", \"description\": \"d\"},\n"
             "  \"diseases\": [\"dlbcl_nos\"],\n"                           /* 5 */
             "%s"                                                           /* 6-7 */
             "  \"requires\": {\"all\": [\n"                                /* 8 */
             "    {\"label\": \"adult\", \"fact\": \"age\", \"op\": \">=\", \"value\": 18},\n"
             "    {\"label\": \"window\", \"fact\": \"relapse_months_after_1l\", \"op\": \"<=\",\n"
             "     \"value\": {\"param\": \"w\"}},\n"                       /* 11 */
             "%s\n"                                                         /* 12 */
             "  ]}\n"
             "}\n",
             source_block, line12);
    return buf;
}

#define SOURCE_OK                                                                          \
    "  \"source\": {\"document\": \"PI\", \"revision\": \"2026-02\",\n"                   \
    "              \"url\": \"https://example.org/pi\"},\n"

static void expect_error(const char *text, const char *want_prefix, const char *want)
{
    elig_source src[2] = {{"conf/criteria/params.json", params_json, strlen(params_json)},
                          {"conf/criteria/x.json", text, strlen(text)}};
    fhir_error err;
    elig_ruleset *rs = elig_load_sources(src, 2, &err);
    if (rs) {
        elig_ruleset_free(rs);
        fail_msg("expected error '%s'", want);
    }
    if (strncmp(err.msg, want_prefix, strlen(want_prefix)) || !strstr(err.msg, want))
        fail_msg("error '%s' does not start with '%s' and contain '%s'", err.msg, want_prefix,
                 want);
}

static void test_loader_valid_fixture(void **state)
{
    (void)state;
    const char *t = criteria_with("    {" LINES_OK "}", SOURCE_OK);
    elig_source src[2] = {{"params.json", params_json, strlen(params_json)},
                          {"x.json", t, strlen(t)}};
    fhir_error err;
    elig_ruleset *rs = elig_load_sources(src, 2, &err);
    if (!rs)
        fail_msg("valid fixture failed: %s", err.msg);
    assert_int_equal(elig_ruleset_count(rs), 1);
    /* the hash does not depend on the order files are given in */
    char h[128];
    snprintf(h, sizeof h, "%s", elig_ruleset_hash(rs));
    elig_ruleset_free(rs);
    elig_source rev[2] = {src[1], src[0]};
    rs = elig_load_sources(rev, 2, &err);
    assert_non_null(rs);
    assert_string_equal(h, elig_ruleset_hash(rs));
    elig_ruleset_free(rs);
    /* ... but on every byte of the content */
    char t2[4096];
    snprintf(t2, sizeof t2, "%s", t);
    strstr(t2, "\"description\": \"d\"")[16] = 'D';
    src[1].data = t2;
    rs = elig_load_sources(src, 2, &err);
    assert_non_null(rs);
    assert_string_not_equal(h, elig_ruleset_hash(rs));
    elig_ruleset_free(rs);
}

/* A criterion on line 12 of an otherwise valid file must fail with want at x.json:12. */
static void bad_leaf(const char *criterion, const char *want)
{
    char line[512];
    snprintf(line, sizeof line, "    {%s}", criterion);
    expect_error(criteria_with(line, SOURCE_OK), "conf/criteria/x.json:12: ", want);
}

static void test_loader_errors(void **state)
{
    (void)state;
    bad_leaf("\"label\": \"l\", \"fact\": \"lines\", \"op\": \">=\", \"value\": ",
             "malformed JSON");
    bad_leaf("\"label\": \"l\", \"fact\": \"agee\", \"op\": \">=\", \"value\": 2",
             "unknown fact \"agee\"");
    bad_leaf("\"label\": \"l\", \"fact\": \"lines\", \"op\": \"=>\", \"value\": 2",
             "unknown operator \"=>\"");
    bad_leaf("\"label\": \"l\", \"fact\": \"lines\", \"op\": \">=\", \"value\": \"two\"",
             "type mismatch");
    bad_leaf("\"label\": \"l\", \"fact\": \"diseases\", \"op\": \">=\", \"value\": 2",
             "type mismatch: operator \">=\" does not apply to set");
    bad_leaf("\"label\": \"l\", \"fact\": \"relapsed\", \"op\": \"==\", \"value\": 1",
             "type mismatch");
    bad_leaf("\"label\": \"l\", \"fact\": \"diseases\", \"op\": \"any_of\", \"value\": [\"dlbcl\"]",
             "\"dlbcl\" is not a valid value of fact \"diseases\"");
    bad_leaf(LINES_OK ", \"value\": 3", "duplicate key");
    bad_leaf("\"label\": \"l\", \"fact\": \"lines\", \"opp\": \">=\", \"value\": 2",
             "unknown key \"opp\"");
    bad_leaf("\"fact\": \"lines\", \"op\": \">=\", \"value\": 2", "needs a \"label\"");
    bad_leaf("\"label\": \"l\", \"fact\": \"lines\", \"op\": \">=\", \"value\": {\"param\": \"x\"}",
             "unknown parameter \"x\"");
    /* missing source: reported at the object that lacks it */
    expect_error(criteria_with("    {" LINES_OK "}", ""), "conf/criteria/x.json:1: ",
                 "missing \"source\"");
    expect_error(criteria_with("    {" LINES_OK "}",
                               "  \"source\": {\"document\": \"PI\",\n"
                               "              \"url\": \"https://example.org/pi\"},\n"),
                 "conf/criteria/x.json:6: ", "missing \"revision\"");
    expect_error(criteria_with("    {" LINES_OK "}",
                               "  \"source\": {\"document\": \"PI\", \"revision\": \"soon\",\n"
                               "              \"url\": \"https://example.org/pi\"},\n"),
                 "conf/criteria/x.json:6: ", "revision must be a date");
    expect_error("{\"id\": 1,,}", "conf/criteria/x.json:1: ", "malformed JSON");
    expect_error("", "conf/criteria/x.json:1: ", "empty");
}

static void test_load_dir_missing(void **state)
{
    (void)state;
    fhir_error err;
    assert_null(elig_load_dir("/nonexistent/criteria", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/criteria"));
}

/* A criteria directory read whole: a copy of conf/criteria loads to the same ruleset hash; a
 * file one byte past ELIG_MAX_FILE_BYTES is refused by name, and a file at the cap is read to
 * its end (the reader grows to the file, it is not cut short). */
static void test_load_dir_file_sizes(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/cartgate-elig-XXXXXX";
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp '%s'/*.json '%s'/", criteria_dir(), dir);
    assert_int_equal(system(cmd), 0);
    fhir_error err;
    elig_ruleset *want = elig_load_dir(criteria_dir(), &err);
    assert_non_null(want);
    elig_ruleset *got = elig_load_dir(dir, &err);
    assert_non_null(got);
    assert_string_equal(elig_ruleset_hash(got), elig_ruleset_hash(want));
    elig_ruleset_free(got);

    /* at the cap: a criteria file padded with spaces to exactly ELIG_MAX_FILE_BYTES bytes
     * still loads (and changes nothing the rules read: same hash is not required, the bytes
     * differ, but it must load) */
    char path[1200];
    snprintf(path, sizeof path, "%s/zz-pad.json", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    const char *body = "{}";
    for (size_t i = 0; i + 2 < ELIG_MAX_FILE_BYTES; i++)
        fputc(' ', f);
    fputs(body, f);
    fclose(f);
    got = elig_load_dir(dir, &err);
    if (got) { /* "{}" may not be a valid criteria file; what matters is how it is read */
        elig_ruleset_free(got);
    } else {
        assert_null(strstr(err.msg, "larger than"));
        assert_non_null(strstr(err.msg, "zz-pad.json"));
    }
    /* one byte past the cap */
    f = fopen(path, "ab");
    assert_non_null(f);
    fputc(' ', f);
    fclose(f);
    assert_null(elig_load_dir(dir, &err));
    char wantmsg[1400];
    snprintf(wantmsg, sizeof wantmsg, "%s:1: file larger than %u bytes", path, ELIG_MAX_FILE_BYTES);
    assert_string_equal(err.msg, wantmsg);

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    elig_ruleset_free(want);
}

/* ---- open world, notes, consult, pending ------------------------------------------- */

static map_fact *tp_fact(tp *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->names[i], name))
            return &p->facts[i];
    fail_msg("no fact %s", name);
    return NULL;
}

static bool notes_have(fx *f, const char *id)
{
    const char *ids[ELIG_MAX_FLAGS];
    size_t n = elig_result_notes(f->rs, f->r, ids, ELIG_MAX_FLAGS);
    for (size_t k = 0; k < n; k++)
        if (!strcmp(ids[k], id))
            return true;
    return false;
}

/* Partly known facts (mappings/FACTS.md "Open world") make a test unknown, never false. */
static void test_open_world_facts(void **state)
{
    fx *f = *state;
    tp p;
    /* "at least 2 lines" meets ">= 2" and fails "== 1" (one more than allowed is certain) */
    tp_base(&p);
    e_axi_3l(&p);
    tp_fact(&p, "lines")->bound = MAP_FACT_AT_LEAST;
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "axi-cel:LBCL-3L"), ELIG_ELIGIBLE);
    assert_int_equal(cat_of(f, "axi-cel:LBCL-2L"), ELIG_NOT_ELIGIBLE);
    /* "at least 1 line" leaves ">= 2" open */
    tp_num(&p, "lines", 1);
    tp_fact(&p, "lines")->bound = MAP_FACT_AT_LEAST;
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "axi-cel:LBCL-3L"), ELIG_POSSIBLY_ELIGIBLE);
    assert_true(missing_has(f, "axi-cel:LBCL-3L", "lines"));
    /* an open set: BTKi seen, a BCL-2 inhibitor neither seen nor excluded */
    tp_base(&p);
    e_cll(&p);
    n_btki_only(&p);
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "liso-cel:CLL"), ELIG_NOT_ELIGIBLE);
    tp_fact(&p, "prior_classes")->open = true;
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "liso-cel:CLL"), ELIG_POSSIBLY_ELIGIBLE);
    assert_true(missing_has(f, "liso-cel:CLL", "prior_classes"));
    /* a possible disease (lineage not said) names what is missing */
    tp_base(&p);
    e_brexu_all(&p);
    tp_set(&p, "diseases", "all_nos");
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "brexu-cel:ALL"), ELIG_NOT_ELIGIBLE);
    map_fact *d = tp_fact(&p, "diseases");
    d->maybe[0] = "b_all";
    d->nmaybe = 1;
    d->missing_as = "lineage";
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "brexu-cel:ALL"), ELIG_POSSIBLY_ELIGIBLE);
    assert_true(missing_has(f, "brexu-cel:ALL", "lineage"));
    assert_false(missing_has(f, "brexu-cel:ALL", "diseases"));
    /* an upper bound: at most 16 months from the end of line 1 leaves "<= 12" open, at most
     * 10 meets it */
    tp_base(&p);
    e_axi_2l(&p);
    tp_num(&p, "relapse_months_after_1l_end", 16);
    tp_fact(&p, "relapse_months_after_1l_end")->bound = MAP_FACT_AT_MOST;
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "axi-cel:LBCL-2L"), ELIG_POSSIBLY_ELIGIBLE);
    tp_num(&p, "relapse_months_after_1l_end", 10);
    tp_fact(&p, "relapse_months_after_1l_end")->bound = MAP_FACT_AT_MOST;
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "axi-cel:LBCL-2L"), ELIG_ELIGIBLE);
}

/* Notes are not review flags: no_prior_btki for Tecartus MCL (a ZUMA-2 requirement the US
 * label does not have). */
static void test_notes_apart_from_flags(void **state)
{
    fx *f = *state;
    tp p;
    tp_base(&p);
    e_mcl(&p);
    tp_set(&p, "prior_classes", "anti_cd20,alkylator");
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "brexu-cel:MCL"), ELIG_ELIGIBLE);
    assert_true(notes_have(f, "no_prior_btki"));
    assert_false(flag_has(f, "no_prior_btki"));
    fhir_buf b;
    fhir_buf_init(&b, 0);
    elig_result_write_json(f->rs, f->fs, f->r, "p-notes", &b);
    assert_non_null(strstr(fhir_buf_cstr(&b), "\"notes\":[\"no_prior_btki\"]"));
    assert_non_null(strstr(fhir_buf_cstr(&b), "note no_prior_btki: "));
    fhir_buf_free(&b);
}

/* Refer-early triggers give a consult recommendation beside the label verdict. */
static void test_consult_recommendation(void **state)
{
    fx *f = *state;
    tp p;
    tp_base(&p);
    e_axi_2l(&p);
    tp_str_code(&p, "primary_disease", "dlbcl_nos");
    run(f, &p, AS_OF);
    assert_int_equal(elig_result_consult(f->r), ELIG_CONSULT_NOW);
    const char *ids[16], *why[16];
    size_t n = elig_result_consult_triggers(f->rs, f->r, ids, why, 16);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], "lbcl_relapse");
    assert_non_null(strstr(why[0], "relapse"));
    /* a relapse 20 months after first line: no longer on the 2L label, still refer now */
    n_late(&p);
    tp_num(&p, "relapse_months_after_1l_end", 20);
    run(f, &p, AS_OF);
    assert_int_equal(cat_of(f, "axi-cel:LBCL-2L"), ELIG_NOT_ELIGIBLE);
    assert_int_equal(elig_result_consult(f->r), ELIG_CONSULT_NOW);
    /* nothing relapsed, nothing high-risk: none; deceased: none */
    tp_bool(&p, "relapsed", false);
    tp_num(&p, "relapse_count", 0);
    run(f, &p, AS_OF);
    assert_int_equal(elig_result_consult(f->r), ELIG_CONSULT_NONE);
    e_axi_2l(&p);
    tp_bool(&p, "deceased", true);
    run(f, &p, AS_OF);
    assert_int_equal(elig_result_consult(f->r), ELIG_CONSULT_NONE);
    /* high-risk myeloma at diagnosis: early consult */
    tp_base(&p);
    tp_set(&p, "diseases", "mm");
    tp_str_code(&p, "primary_disease", "mm");
    tp_num(&p, "lines", 1);
    tp_bool(&p, "mm_high_risk", true);
    run(f, &p, AS_OF);
    assert_int_equal(elig_result_category(f->r), ELIG_NOT_ELIGIBLE);
    assert_int_equal(elig_result_consult(f->r), ELIG_CONSULT_EARLY);
    assert_string_equal(elig_consult_name(ELIG_CONSULT_EARLY), "early_consult");
}

/* A pending product is not in force; shown on request; counted once enabled. */
static void test_pending_product(void **state)
{
    (void)state;
    fhir_error err;
    elig_ruleset *rs = elig_load_dir(criteria_dir(), &err);
    assert_non_null(rs);
    elig_factset *fs = elig_factset_new(rs);
    elig_result *r = elig_result_new(rs);
    tp p;
    tp_base(&p);
    e_ide(&p);
    elig_factset_fill(fs, tp_lookup, &p);
    int a = elig_ruleset_find(rs, "anito-cel:MM-4L");
    assert_true(a >= 0);
    elig_evaluate(rs, fs, day(AS_OF), r);
    assert_int_equal(elig_result_ind_category(r, (size_t)a), ELIG_NOT_IN_FORCE);
    assert_int_equal(elig_result_pending_category(r, (size_t)a), ELIG_NOT_IN_FORCE);
    char h0[128];
    snprintf(h0, sizeof h0, "%s", elig_ruleset_hash(rs));
    elig_ruleset_show_pending(rs, true);
    elig_evaluate(rs, fs, day(AS_OF), r);
    assert_int_equal(elig_result_ind_category(r, (size_t)a), ELIG_NOT_IN_FORCE);
    assert_int_equal(elig_result_pending_category(r, (size_t)a), ELIG_ELIGIBLE);
    assert_string_equal(h0, elig_ruleset_hash(rs)); /* showing changes no verdict */
    fhir_buf b;
    fhir_buf_init(&b, 0);
    elig_result_write_json(rs, fs, r, "p-pend", &b);
    assert_non_null(strstr(fhir_buf_cstr(&b), "\"pending\":{\"eligible\":[\"anito-cel:MM-4L\"]"));
    assert_null(strstr(fhir_buf_cstr(&b), "\"products\":[\"anito-cel"));
    fhir_buf_free(&b);
    assert_int_equal(elig_ruleset_enable_pending(rs, "ide-cel:MM-3L", &err), -1);
    assert_non_null(strstr(err.msg, "not pending"));
    assert_int_equal(elig_ruleset_enable_pending(rs, "nope:X", &err), -1);
    assert_int_equal(elig_ruleset_enable_pending(rs, "anito-cel:MM-4L", &err), 0);
    assert_string_not_equal(h0, elig_ruleset_hash(rs));
    elig_evaluate(rs, fs, day(AS_OF), r);
    assert_int_equal(elig_result_ind_category(r, (size_t)a), ELIG_ELIGIBLE);
    elig_result_free(r);
    elig_factset_free(fs);
    elig_ruleset_free(rs);
}

/* Loader errors of notes, pending files and consult files. */
static void test_loader_errors_new_keys(void **state)
{
    (void)state;
    const char *crit = criteria_with("    {" LINES_OK "}", SOURCE_OK);
    char t[6000];
    /* status must be "pending" and a pending file has no effective_from */
    snprintf(t, sizeof t, "%.*s  \"status\": \"maybe\",\n%s", 2, crit, crit + 2);
    expect_error(t, "conf/criteria/x.json:2: ", "status must be \"pending\"");
    snprintf(t, sizeof t, "%.*s  \"status\": \"pending\",\n  \"effective_from\": \"2026-01-01\",\n%s", 2, crit,
             crit + 2);
    expect_error(t, "conf/criteria/x.json:3: ", "a pending indication has no effective_from");
    /* an id cannot be a review flag here and a note there */
    snprintf(t, sizeof t, "%.*s  \"review_flags\": [{\"id\": \"x\", \"when\": {\"fact\": \"age\", \"op\": \">\", "
             "\"value\": 90}, \"message\": \"m\"}],\n  \"notes\": [{\"id\": \"x\", \"when\": {\"fact\": \"age\", "
             "\"op\": \">\", \"value\": 91}, \"message\": \"m\"}],\n%s", 2, crit, crit + 2);
    expect_error(t, "conf/criteria/x.json:3: ", "ids of review flags and notes must differ");
    /* consult files */
    const char *c1 = "{\n  \"id\": \"consult:X\",\n  \"kind\": \"consult\",\n  \"description\": \"d\",\n"
                     "  \"applies_to\": {\"fact\": \"age\", \"op\": \">=\", \"value\": 18},\n" SOURCE_OK
                     "  \"triggers\": [{\"id\": \"t1\", \"recommendation\": \"soonish\", \"when\": {\"fact\": "
                     "\"relapsed\", \"op\": \"is_true\"}, \"reason\": \"r\", \"source\": \"s\"}]\n}\n";
    expect_error(c1, "conf/criteria/x.json:8: ", "recommendation must be \"refer_now\" or \"early_consult\"");
    const char *c2 = "{\n  \"id\": \"consult:X\",\n  \"kind\": \"consult\",\n  \"description\": \"d\",\n"
                     "  \"applies_to\": {\"fact\": \"age\", \"op\": \">=\", \"value\": 18},\n" SOURCE_OK
                     "  \"triggers\": []\n}\n";
    expect_error(c2, "conf/criteria/x.json:8: ", "at least one trigger");
    const char *c3 = "{\n  \"id\": \"x-cel:LBCL-3L\",\n  \"kind\": \"advice\"\n}\n";
    expect_error(c3, "conf/criteria/x.json:3: ", "kind must be \"consult\"");
    const char *c4 = "{\n  \"id\": \"consult:X\",\n  \"kind\": \"consult\",\n  \"description\": \"d\",\n"
                     "  \"applies_to\": {\"fact\": \"age\", \"op\": \">=\", \"value\": 18},\n" SOURCE_OK
                     "  \"triggers\": [{\"id\": \"t1\", \"recommendation\": \"refer_now\", \"when\": {\"fact\": "
                     "\"relapsed\", \"op\": \"is_true\"}, \"reason\": \"r\", \"source\": \"s\"},\n"
                     "               {\"id\": \"t1\", \"recommendation\": \"refer_now\", \"when\": {\"fact\": "
                     "\"relapsed\", \"op\": \"is_true\"}, \"reason\": \"r\", \"source\": \"s\"}]\n}\n";
    expect_error(c4, "conf/criteria/x.json:9: ", "trigger \"t1\" already defined");
}

/* Indications as people read them: brand, product and the short label of the file. */
static void test_display(void **state)
{
    fx *f = *state;
    elig_display d;
    assert_true(elig_display_of(f->rs, "axi-cel:LBCL-3L", &d));
    assert_string_equal(d.product, "axi-cel");
    assert_string_equal(d.brand, "Yescarta");
    assert_string_equal(d.generic, "axicabtagene ciloleucel");
    assert_string_equal(d.text, "large B-cell lymphoma, third line or later");
    assert_true(elig_display_of(f->rs, "liso-cel:LBCL-2L-TI", &d));
    assert_string_equal(d.text, "large B-cell lymphoma, second line, transplant-ineligible");
    /* unknown keys, no rule set, no key: the key itself, nothing lost */
    assert_false(elig_display_of(f->rs, "zz-cel:XX-9L", &d));
    assert_string_equal(d.product, "zz-cel:XX-9L");
    assert_string_equal(d.text, "zz-cel:XX-9L");
    assert_null(d.brand);
    assert_null(d.generic);
    assert_false(elig_display_of(NULL, "axi-cel:LBCL-3L", &d));
    assert_string_equal(d.text, "axi-cel:LBCL-3L");
    assert_false(elig_display_of(f->rs, NULL, &d));
    assert_string_equal(d.text, "");
    /* every indication file carries its own short label: no key, not the description */
    for (size_t i = 0; i < elig_ruleset_count(f->rs); i++) {
        const char *key = elig_ruleset_key(f->rs, i);
        assert_true(elig_display_of(f->rs, key, &d));
        assert_string_not_equal(d.text, elig_ruleset_description(f->rs, i));
        assert_true(strlen(d.text) <= ELIG_SHORT_MAX);
        assert_null(strstr(d.text, key));
        if (strchr(strchr(key, ':') + 1, '-')) /* "LBCL-3L"; "CLL" is the disease's own name */
            assert_null(strstr(d.text, strchr(key, ':') + 1));
    }

    fhir_buf b;
    fhir_buf_init(&b, 4096);
    /* products whose indications read alike share them */
    const char *k1[] = {"axi-cel:LBCL-3L", "liso-cel:LBCL-3L", "tisa-cel:LBCL-3L"};
    assert_int_equal(elig_display_write(f->rs, k1, 3, &b), 0);
    assert_string_equal(fhir_buf_cstr(&b), "Yescarta (axi-cel), Breyanzi (liso-cel), Kymriah (tisa-cel): "
                                           "large B-cell lymphoma, third line or later");
    /* several indications of one product are grouped under it, in the order given */
    fhir_buf_reset(&b);
    const char *k2[] = {"liso-cel:LBCL-2L", "axi-cel:LBCL-2L", "liso-cel:LBCL-2L-TI"};
    assert_int_equal(elig_display_write(f->rs, k2, 3, &b), 0);
    assert_string_equal(fhir_buf_cstr(&b),
                        "Breyanzi (liso-cel): large B-cell lymphoma, second line (refractory or relapse within 12 "
                        "months); large B-cell lymphoma, second line, transplant-ineligible · Yescarta (axi-cel): "
                        "large B-cell lymphoma, second line (refractory or relapse within 12 months)");
    /* unknown keys stay as they are; a repeated key once */
    fhir_buf_reset(&b);
    assert_int_equal(elig_display_write_joined(f->rs, "cilta-cel:MM-2L,zz:Q,cilta-cel:MM-2L", &b), 0);
    assert_string_equal(fhir_buf_cstr(&b),
                        "Carvykti (cilta-cel): multiple myeloma, second line or later, refractory to lenalidomide · zz:Q");
    fhir_buf_reset(&b);
    assert_int_equal(elig_display_write_joined(NULL, "a:B,c:D", &b), 0);
    assert_string_equal(fhir_buf_cstr(&b), "a:B · c:D");
    fhir_buf_reset(&b);
    assert_int_equal(elig_display_write_joined(f->rs, "", &b), 0);
    assert_int_equal(b.len, 0);
    /* a brand that starts with the product key is not repeated */
    fhir_buf_reset(&b);
    assert_int_equal(elig_display_write_joined(f->rs, "anito-cel:MM-4L", &b), 0);
    assert_string_equal(fhir_buf_cstr(&b), "anito-cel (no US brand name recorded): multiple myeloma, fourth line "
                                           "or later (expected wording, label pending)");
    /* the cap */
    fhir_buf small;
    fhir_buf_init(&small, 16);
    assert_int_equal(elig_display_write(f->rs, k1, 3, &small), -1);
    fhir_buf_free(&small);
    fhir_buf_free(&b);
}

/* indication.short: optional (the description stands in), one line, bounded, a string. */
static void test_loader_short(void **state)
{
    (void)state;
    const char *crit = criteria_with("    {" LINES_OK "}", SOURCE_OK);
    const char *at = "\"description\": \"d\"";
    size_t pre = (size_t)(strstr(crit, at) - crit) + strlen(at);
    char t[6000];
    /* absent: the description */
    elig_source src[2] = {{"params.json", params_json, strlen(params_json)}, {"x.json", crit, strlen(crit)}};
    fhir_error err;
    elig_ruleset *rs = elig_load_sources(src, 2, &err);
    if (!rs)
        fail_msg("%s", err.msg);
    elig_display d;
    assert_true(elig_display_of(rs, "x-cel:LBCL-3L", &d));
    assert_string_equal(d.text, "d");
    assert_string_equal(d.brand, "B");
    elig_ruleset_free(rs);
    /* present */
    snprintf(t, sizeof t, "%.*s, \"short\": \"large B-cell lymphoma\"%s", (int)pre, crit, crit + pre);
    src[1].data = t;
    src[1].len = strlen(t);
    rs = elig_load_sources(src, 2, &err);
    if (!rs)
        fail_msg("%s", err.msg);
    assert_true(elig_display_of(rs, "x-cel:LBCL-3L", &d));
    assert_string_equal(d.text, "large B-cell lymphoma");
    elig_ruleset_free(rs);
    /* invalid: empty, not a string, two lines, too long, a misspelt key */
    snprintf(t, sizeof t, "%.*s, \"short\": \"\"%s", (int)pre, crit, crit + pre);
    expect_error(t, "conf/criteria/x.json:4: ", "short");
    snprintf(t, sizeof t, "%.*s, \"short\": 3%s", (int)pre, crit, crit + pre);
    expect_error(t, "conf/criteria/x.json:4: ", "short");
    snprintf(t, sizeof t, "%.*s, \"short\": \"a\\nb\"%s", (int)pre, crit, crit + pre);
    expect_error(t, "conf/criteria/x.json:4: ", "indication \"short\" must be one line");
    char longs[160];
    memset(longs, 'x', sizeof longs - 1);
    longs[sizeof longs - 1] = 0;
    snprintf(t, sizeof t, "%.*s, \"short\": \"%s\"%s", (int)pre, crit, longs, crit + pre);
    expect_error(t, "conf/criteria/x.json:4: ", "is 159 bytes, at most 100");
    snprintf(t, sizeof t, "%.*s, \"shrt\": \"x\"%s", (int)pre, crit, crit + pre);
    expect_error(t, "conf/criteria/x.json:4: ", "shrt");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_indications_loaded),
        cmocka_unit_test(test_eligible),
        cmocka_unit_test(test_near_miss),
        cmocka_unit_test(test_possibly_eligible),
        cmocka_unit_test(test_pcnsl_label_change),
        cmocka_unit_test(test_effective_from),
        cmocka_unit_test(test_review_flags_reported),
        cmocka_unit_test(test_json_shape_and_determinism),
        cmocka_unit_test(test_explanation_without_record_references),
        cmocka_unit_test(test_no_heme_disease),
        cmocka_unit_test(test_type_mismatch_fact_is_unknown),
        cmocka_unit_test(test_property_missing_never_excludes),
        cmocka_unit_test(test_property_flags_never_change_category),
        cmocka_unit_test(test_open_world_facts),
        cmocka_unit_test(test_notes_apart_from_flags),
        cmocka_unit_test(test_consult_recommendation),
        cmocka_unit_test(test_pending_product),
        cmocka_unit_test(test_display),
        cmocka_unit_test(test_anchor_parameter), /* last: it changes parameters */
    };
    const struct CMUnitTest loader[] = {
        cmocka_unit_test(test_loader_valid_fixture),
        cmocka_unit_test(test_loader_errors),
        cmocka_unit_test(test_loader_errors_new_keys),
        cmocka_unit_test(test_loader_short),
        cmocka_unit_test(test_load_dir_missing),
        cmocka_unit_test(test_load_dir_file_sizes),
    };
    int rc = cmocka_run_group_tests_name("elig", tests, setup, teardown);
    rc |= cmocka_run_group_tests_name("elig_loader", loader, NULL, NULL);
    return rc;
}
