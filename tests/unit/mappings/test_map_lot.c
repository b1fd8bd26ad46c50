/* Tests for mappings/map_lot: one test per line-of-therapy rule (mappings/README.md). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "fhir_clock.h"
#include "map_lot.h"

static map_tables *T;
static int64_t D0; /* 2023-01-01 */

static int setup(void **state)
{
    (void)state;
    fhir_error err;
    fhir_error_clear(&err);
    T = map_tables_load(NULL, &err);
    D0 = fhir_clock_days_from_civil(2023, 1, 1);
    return T ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    map_tables_free(T);
    return 0;
}

typedef struct plan {
    map_lot_exposure ex[64];
    size_t nex;
    map_lot_event ev[16];
    size_t nev;
    map_lot_params p;
    map_lot_result r;
} plan;

static void plan_init(plan *pl)
{
    memset(pl, 0, sizeof *pl);
    map_lot_params_default(&pl->p);
    pl->p.as_of = D0 + 2000;
}

/* drug given on day d (offset from D0), lasting len days */
static void give(plan *pl, const char *ing, int day, int len)
{
    const map_drug *d = map_drug_by_ingredient(T, ing);
    if (!d)
        fail_msg("unknown ingredient %s", ing);
    pl->ex[pl->nex++] = (map_lot_exposure){.drug = d, .start = D0 + day, .end = D0 + day + (len > 0 ? len - 1 : 0), .ref = ing};
}

/* cycles of a drug every `every` days, n times, starting at day */
static void cycles(plan *pl, const char *ing, int day, int every, int n)
{
    for (int i = 0; i < n; i++)
        give(pl, ing, day + i * every, 1);
}

static void event(plan *pl, map_lot_event_kind k, int day, const char *product)
{
    pl->ev[pl->nev++] = (map_lot_event){k, D0 + day, product ? map_drug_by_ingredient(T, product) : NULL, "Procedure/x"};
}

static void run(plan *pl)
{
    assert_int_equal(map_lot_derive(pl->ex, pl->nex, pl->ev, pl->nev, &pl->p, &pl->r), 0);
}

static bool line_has(const map_lot_line *l, const char *ing)
{
    for (size_t i = 0; i < l->ndrugs; i++)
        if (!strcmp(l->drugs[i], ing))
            return true;
    return false;
}

static void rchop(plan *pl, int day, int n)
{
    static const char *const c[] = {"rituximab", "cyclophosphamide", "doxorubicin", "vincristine", "prednisone"};
    for (size_t i = 0; i < 5; i++)
        cycles(pl, c[i], day, 21, n);
}

/* Rule: a line's drugs are listed as first given; drugs first given on the same day by name,
 * whatever order their records come in (the daemon reads its cache by type and id, the
 * offline screen in file order: one patient, one wording). */
static void test_same_day_order_independent_of_input(void **s)
{
    (void)s;
    plan a, b;
    plan_init(&a);
    rchop(&a, 0, 3);
    give(&a, "lenalidomide", 5, 1); /* a later start keeps its place after the day-0 drugs */
    plan_init(&b);
    for (size_t i = a.nex; i-- > 0;)
        b.ex[b.nex++] = a.ex[i];
    run(&a);
    run(&b);
    assert_int_equal(a.r.nlines, 1);
    assert_int_equal(b.r.nlines, 1);
    /* the steroid joins the line after its chemotherapy (map_lot: steroids never open a line) */
    static const char *const want[] = {"cyclophosphamide", "doxorubicin", "rituximab", "vincristine",
                                       "lenalidomide", "prednisone"};
    assert_int_equal(a.r.lines[0].ndrugs, 6);
    assert_int_equal(b.r.lines[0].ndrugs, 6);
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(a.r.lines[0].drugs[i], want[i]);
        assert_string_equal(b.r.lines[0].drugs[i], want[i]);
    }
    map_lot_result_free(&a.r);
    map_lot_result_free(&b.r);
}

/* Rule: drugs first given within the 28-day window form one regimen. */
static void test_window_forms_one_regimen(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    give(&pl, "rituximab", 0, 1);
    give(&pl, "cyclophosphamide", 1, 1);
    give(&pl, "doxorubicin", 28, 1); /* day 28: still inside the window */
    run(&pl);
    assert_int_equal(pl.r.nlines, 1);
    assert_int_equal(pl.r.lines[0].ndrugs, 3);
    unsigned want = (1u << MAP_CLASS_ANTI_CD20) | (1u << MAP_CLASS_ALKYLATOR) | (1u << MAP_CLASS_ANTHRACYCLINE);
    assert_int_equal(pl.r.lines[0].classes, want);
    map_lot_result_free(&pl.r);
}

/* Rule: a new non-maintenance drug after the window opens a new line. */
static void test_new_drug_after_window(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    give(&pl, "rituximab", 0, 1);
    give(&pl, "cyclophosphamide", 0, 1);
    cycles(&pl, "rituximab", 21, 21, 3);
    give(&pl, "ifosfamide", 29, 1); /* day 29: after the window, not in the regimen */
    run(&pl);
    assert_int_equal(pl.r.nlines, 2);
    assert_string_equal(pl.r.lines[0].end_reason, "new_drug");
    assert_true(line_has(&pl.r.lines[1], "ifosfamide"));
    /* rituximab after day 29 belongs to the second line now? no: it is in the new line only if
     * given again after the new line started; here rituximab cycles continue and are absorbed */
    map_lot_result_free(&pl.r);
}

/* Rule: R-CHOP x6 then relapse treated with R-ICE = 2 lines (classic). */
static void test_rchop_then_rice(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    rchop(&pl, 0, 6);
    give(&pl, "rituximab", 300, 1);
    give(&pl, "ifosfamide", 300, 3);
    give(&pl, "carboplatin", 300, 1);
    give(&pl, "etoposide", 300, 3);
    run(&pl);
    assert_int_equal(pl.r.nlines, 2);
    assert_string_equal(pl.r.lines[0].end_reason, "gap");
    assert_int_equal(pl.r.lines[0].start, D0);
    assert_int_equal(pl.r.lines[0].end, D0 + 105);
    assert_true(line_has(&pl.r.lines[0], "prednisone")); /* steroid inside the regimen */
    assert_true(line_has(&pl.r.lines[1], "carboplatin"));
    map_lot_result_free(&pl.r);
}

/* Rule: a gap longer than the gap window opens a new line even for the same drugs. */
static void test_gap_opens_new_line(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    cycles(&pl, "bendamustine", 0, 28, 6);
    cycles(&pl, "rituximab", 0, 28, 6);
    cycles(&pl, "bendamustine", 140 + 91 + 1, 28, 2); /* gap 92 > 90 days after the last dose */
    cycles(&pl, "rituximab", 140 + 91 + 1, 28, 2);
    run(&pl);
    assert_int_equal(pl.r.nlines, 2);
    assert_string_equal(pl.r.lines[0].end_reason, "gap");
    /* gap exactly 90 days: same line */
    plan p2;
    plan_init(&p2);
    give(&p2, "ibrutinib", 0, 100);
    give(&p2, "ibrutinib", 99 + 90, 30);
    run(&p2);
    assert_int_equal(p2.r.nlines, 1);
    map_lot_result_free(&p2.r);
    map_lot_result_free(&pl.r);
}

/* Rule: duplicate orders of one drug (same day, repeated records) collapse. */
static void test_duplicate_orders_collapse(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    for (int i = 0; i < 4; i++) {
        give(&pl, "lenalidomide", 0, 21);
        give(&pl, "lenalidomide", 0, 21);
        give(&pl, "bortezomib", 0, 1);
    }
    run(&pl);
    assert_int_equal(pl.r.nlines, 1);
    assert_int_equal(pl.r.lines[0].ndrugs, 2);
    map_lot_result_free(&pl.r);
}

/* Rule: steroids never open a line alone. */
static void test_steroid_alone_is_not_a_line(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    give(&pl, "dexamethasone", 0, 4);
    give(&pl, "prednisone", 200, 5);
    run(&pl);
    assert_int_equal(pl.r.nlines, 0);
    map_lot_result_free(&pl.r);
}

/* Rule: continuation of a maintenance drug (rituximab) after R-chemo is the same line. */
static void test_rituximab_maintenance_same_line(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    static const char *const c[] = {"rituximab", "cyclophosphamide", "vincristine", "prednisone"};
    for (size_t i = 0; i < 4; i++)
        cycles(&pl, c[i], 0, 21, 6);
    cycles(&pl, "rituximab", 105 + 56, 56, 12); /* every 8 weeks for ~2 years */
    run(&pl);
    assert_int_equal(pl.r.nlines, 1);
    assert_true(pl.r.lines[0].maintenance);
    map_lot_result_free(&pl.r);
}

/* Rule: MM induction -> (melphalan conditioning) -> ASCT -> lenalidomide maintenance = 1 line. */
static void test_mm_induction_asct_maintenance_one_line(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    pl.p.myeloma = true;
    cycles(&pl, "bortezomib", 0, 21, 4);
    give(&pl, "lenalidomide", 0, 84);
    cycles(&pl, "dexamethasone", 0, 7, 12);
    give(&pl, "melphalan", 148, 1); /* conditioning: 2 days before the transplant */
    event(&pl, MAP_LOT_AUTO_HCT, 150, NULL);
    give(&pl, "lenalidomide", 250, 365); /* maintenance, ~100 days after ASCT */
    run(&pl);
    assert_int_equal(pl.r.nlines, 1);
    assert_true(pl.r.lines[0].auto_hct);
    assert_true(pl.r.lines[0].maintenance);
    assert_true(line_has(&pl.r.lines[0], "melphalan"));
    assert_true(line_has(&pl.r.lines[0], "dexamethasone"));
    map_lot_result_free(&pl.r);
}

/* Rule: VCd -> ASCT -> lenalidomide (not in induction) planned maintenance = same line. */
static void test_maintenance_new_drug_after_hct(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    pl.p.myeloma = true;
    cycles(&pl, "bortezomib", 0, 21, 4);
    cycles(&pl, "cyclophosphamide", 0, 21, 4);
    event(&pl, MAP_LOT_AUTO_HCT, 120, NULL);
    give(&pl, "lenalidomide", 210, 300);
    run(&pl);
    assert_int_equal(pl.r.nlines, 1);
    assert_true(pl.r.lines[0].maintenance);
    /* ...but a non-maintenance drug after the transplant is a new line */
    plan p2;
    plan_init(&p2);
    cycles(&p2, "bortezomib", 0, 21, 4);
    event(&p2, MAP_LOT_AUTO_HCT, 120, NULL);
    give(&p2, "pomalidomide", 210, 60);
    run(&p2);
    assert_int_equal(p2.r.nlines, 2);
    map_lot_result_free(&p2.r);
    map_lot_result_free(&pl.r);
}

/* Rule: each non-tandem HCT starts a new line; a planned tandem within 180 days does not. */
static void test_second_transplant(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    cycles(&pl, "bortezomib", 0, 21, 4);
    event(&pl, MAP_LOT_AUTO_HCT, 100, NULL);
    event(&pl, MAP_LOT_AUTO_HCT, 200, NULL); /* tandem */
    run(&pl);
    assert_int_equal(pl.r.nlines, 1);
    map_lot_result_free(&pl.r);
    plan p2;
    plan_init(&p2);
    cycles(&p2, "bortezomib", 0, 21, 4);
    event(&p2, MAP_LOT_AUTO_HCT, 100, NULL);
    event(&p2, MAP_LOT_ALLO_HCT, 800, NULL); /* years later */
    run(&p2);
    assert_int_equal(p2.r.nlines, 2);
    assert_true(p2.r.lines[1].allo_hct);
    assert_string_equal(p2.r.lines[0].end_reason, "hct");
    map_lot_result_free(&p2.r);
}

/* Rule: salvage (R-ICE) -> ASCT is one line. */
static void test_salvage_then_asct_one_line(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    rchop(&pl, 0, 6);
    cycles(&pl, "ifosfamide", 400, 21, 2);
    cycles(&pl, "carboplatin", 400, 21, 2);
    cycles(&pl, "etoposide", 400, 21, 2);
    give(&pl, "carmustine", 470, 1); /* BEAM conditioning */
    give(&pl, "melphalan", 475, 1);
    event(&pl, MAP_LOT_AUTO_HCT, 477, NULL);
    run(&pl);
    assert_int_equal(pl.r.nlines, 2);
    assert_true(pl.r.lines[1].auto_hct);
    assert_true(line_has(&pl.r.lines[1], "carmustine"));
    map_lot_result_free(&pl.r);
}

/* Rule: CAR T is a line of its own; lymphodepletion (Flu/Cy) and bridging belong to it. */
static void test_car_t_own_line(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    rchop(&pl, 0, 6);
    event(&pl, MAP_LOT_CAR_T_COLLECTION, 300, NULL);
    give(&pl, "polatuzumab vedotin", 310, 1); /* bridging after collection */
    give(&pl, "fludarabine", 335, 3);
    give(&pl, "cyclophosphamide", 335, 3);
    event(&pl, MAP_LOT_CAR_T, 340, "axicabtagene ciloleucel");
    run(&pl);
    assert_int_equal(pl.r.nlines, 2);
    const map_lot_line *c = &pl.r.lines[1];
    assert_true(c->car_t);
    assert_true(line_has(c, "axicabtagene ciloleucel"));
    assert_true(line_has(c, "fludarabine"));
    assert_true(line_has(c, "polatuzumab vedotin"));
    assert_true(c->classes & (1u << MAP_CLASS_CAR_T));
    assert_true(c->classes & (1u << MAP_CLASS_CD19_DIRECTED));
    assert_string_equal(pl.r.lines[0].end_reason, "car_t");
    map_lot_result_free(&pl.r);
}

/* Rule: a CAR T recorded twice (product MedicationAdministration + procedure) is one line,
 * and therapy after CAR T opens a new line even within the window. */
static void test_car_t_duplicate_and_after(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    give(&pl, "idecabtagene vicleucel", 100, 1);
    event(&pl, MAP_LOT_CAR_T, 101, NULL);
    give(&pl, "teclistamab", 110, 1);
    run(&pl);
    assert_int_equal(pl.r.nlines, 2);
    assert_true(pl.r.lines[0].car_t);
    assert_true(pl.r.lines[0].classes & (1u << MAP_CLASS_BCMA_DIRECTED));
    assert_false(pl.r.lines[1].car_t);
    map_lot_result_free(&pl.r);
}

/* Rule: allowed substitution (carboplatin -> cisplatin) stays in the line. */
static void test_platinum_substitution(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    cycles(&pl, "rituximab", 0, 21, 4);
    cycles(&pl, "gemcitabine", 0, 21, 4);
    give(&pl, "carboplatin", 0, 1);
    give(&pl, "cisplatin", 42, 1); /* after the window, same platinum group */
    run(&pl);
    assert_int_equal(pl.r.nlines, 1);
    map_lot_result_free(&pl.r);
}

/* Rule (MM, IMWG): restarting the same regimen after a gap without documented progression is
 * the same line; with progression in between it is a new line. */
static void test_mm_restart_rule(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    pl.p.myeloma = true;
    give(&pl, "lenalidomide", 0, 84);
    give(&pl, "lenalidomide", 84 + 150, 84);
    run(&pl);
    assert_int_equal(pl.r.nlines, 1);
    map_lot_result_free(&pl.r);
    plan p2;
    plan_init(&p2);
    p2.p.myeloma = true;
    int64_t prog[] = {D0 + 150};
    p2.p.progression_days = prog;
    p2.p.nprogression = 1;
    give(&p2, "lenalidomide", 0, 84);
    give(&p2, "lenalidomide", 84 + 150, 84);
    run(&p2);
    assert_int_equal(p2.r.nlines, 2);
    map_lot_result_free(&p2.r);
    /* not myeloma: the gap rule alone applies */
    plan p3;
    plan_init(&p3);
    give(&p3, "lenalidomide", 0, 84);
    give(&p3, "lenalidomide", 84 + 150, 84);
    run(&p3);
    assert_int_equal(p3.r.nlines, 2);
    map_lot_result_free(&p3.r);
}

/* Rule: BTKi then venetoclax (CLL) = 2 lines with the right classes; end reason ongoing. */
static void test_btki_then_venetoclax(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    give(&pl, "ibrutinib", 0, 500);
    give(&pl, "venetoclax", 520, 360);
    give(&pl, "obinutuzumab", 520, 1);
    pl.p.as_of = D0 + 900;
    run(&pl);
    assert_int_equal(pl.r.nlines, 2);
    assert_int_equal(pl.r.lines[0].classes, 1u << MAP_CLASS_BTKI);
    assert_true(pl.r.lines[1].classes & (1u << MAP_CLASS_BCL2I));
    assert_string_equal(pl.r.lines[1].end_reason, "ongoing");
    map_lot_result_free(&pl.r);
}

/* Rule: transplant without preceding therapy in the gap window opens its own line. */
static void test_lone_transplant_is_a_line(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    event(&pl, MAP_LOT_HCT, 10, NULL);
    event(&pl, MAP_LOT_AUTO_HCT, 12, NULL); /* same transplant, typed record */
    run(&pl);
    assert_int_equal(pl.r.nlines, 1);
    assert_true(pl.r.lines[0].auto_hct);
    assert_false(pl.r.lines[0].hct_unspecified);
    map_lot_result_free(&pl.r);
}

/* Open world: therapy documented without agents (an outside statement) is a line of its own
 * when it falls outside every known line, with no drugs and no classes. */
static void test_unknown_agents_line_of_its_own(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    rchop(&pl, 0, 6);
    const map_drug *u = map_drug_lookup_text(T, "Salvage chemotherapy at an outside center");
    assert_non_null(u);
    assert_string_equal(u->role, "unknown");
    pl.ex[pl.nex++] = (map_lot_exposure){.drug = u, .start = D0 + 400, .end = D0 + 500,
                                         .ref = "MedicationStatement/out"};
    give(&pl, "lenalidomide", 700, 21); /* our next line after the outside one */
    run(&pl);
    assert_int_equal(pl.r.nlines, 3);
    assert_true(pl.r.lines[1].unknown_agents);
    assert_int_equal(pl.r.lines[1].ndrugs, 0);
    assert_int_equal(pl.r.lines[1].classes, 0);
    assert_int_equal(pl.r.lines[1].start, D0 + 400);
    assert_false(pl.r.lines[0].unknown_agents);
    assert_false(pl.r.lines[2].unknown_agents);
    assert_true(line_has(&pl.r.lines[2], "lenalidomide"));
    map_lot_result_free(&pl.r);
}

/* ... and part of the known line it falls in (the same regimen recorded again). */
static void test_unknown_agents_inside_a_line(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    rchop(&pl, 0, 6);
    const map_drug *u = map_drug_lookup_text(T, "chemotherapy");
    pl.ex[pl.nex++] = (map_lot_exposure){.drug = u, .start = D0 + 40, .end = D0 + 40,
                                         .ref = "MedicationStatement/dup"};
    run(&pl);
    assert_int_equal(pl.r.nlines, 1);
    assert_true(pl.r.lines[0].unknown_agents);
    assert_int_equal(pl.r.lines[0].ndrugs, 5);
    map_lot_result_free(&pl.r);
}

/* Open world: a drug without an end date makes the line's end a lower bound; restarting the
 * same drug later cannot be told apart from continuing it, so it stays the same line. */
static void test_end_unknown(void **s)
{
    (void)s;
    plan pl;
    plan_init(&pl);
    give(&pl, "ibrutinib", 0, 1);
    pl.ex[pl.nex - 1].end_unknown = true;
    give(&pl, "ibrutinib", 400, 30); /* a later refill record */
    run(&pl);
    assert_int_equal(pl.r.nlines, 1);
    assert_true(pl.r.lines[0].end_unknown);
    assert_int_equal(pl.r.lines[0].end, D0 + 429);
    map_lot_result_free(&pl.r);
    /* without the unknown end the 400-day gap opens a second line */
    plan_init(&pl);
    give(&pl, "ibrutinib", 0, 1);
    give(&pl, "ibrutinib", 400, 30);
    run(&pl);
    assert_int_equal(pl.r.nlines, 2);
    assert_false(pl.r.lines[0].end_unknown);
    map_lot_result_free(&pl.r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_forms_one_regimen),
        cmocka_unit_test(test_new_drug_after_window),
        cmocka_unit_test(test_rchop_then_rice),
        cmocka_unit_test(test_gap_opens_new_line),
        cmocka_unit_test(test_duplicate_orders_collapse),
        cmocka_unit_test(test_steroid_alone_is_not_a_line),
        cmocka_unit_test(test_rituximab_maintenance_same_line),
        cmocka_unit_test(test_mm_induction_asct_maintenance_one_line),
        cmocka_unit_test(test_maintenance_new_drug_after_hct),
        cmocka_unit_test(test_second_transplant),
        cmocka_unit_test(test_salvage_then_asct_one_line),
        cmocka_unit_test(test_car_t_own_line),
        cmocka_unit_test(test_car_t_duplicate_and_after),
        cmocka_unit_test(test_platinum_substitution),
        cmocka_unit_test(test_mm_restart_rule),
        cmocka_unit_test(test_btki_then_venetoclax),
        cmocka_unit_test(test_lone_transplant_is_a_line),
        cmocka_unit_test(test_unknown_agents_line_of_its_own),
        cmocka_unit_test(test_unknown_agents_inside_a_line),
        cmocka_unit_test(test_end_unknown),
        cmocka_unit_test(test_same_day_order_independent_of_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
