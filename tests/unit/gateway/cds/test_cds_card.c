/* Unit tests: the CDS Hooks card (gateway/cds/cds_card.h) built from the one screening path on
 * clinician vignettes (tests/vignettes) with the shipped criteria, as of 2026-11-01: an
 * eligible patient's card (summary plain words < 140 characters naming the products, warning
 * for refer-now timing, the label as source, the draft ServiceRequest proposal, both links to
 * the patient page with appContext, a stable uuid per patient and verdict); a possibly eligible
 * patient with many indications (the summary shortened, still < 140); a refer-early consult
 * alone (a card, info); a not-eligible patient without consult (no card). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cds_card.h"
#include "elig.h"
#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "map_profile.h"
#include "screen.h"

static elig_ruleset *rules;
static map_tables *tables;

static int setup(void **state)
{
    (void)state;
    fhir_error err = {0};
    rules = elig_load_dir("conf/criteria", &err);
    if (!rules)
        fail_msg("criteria: %s", err.msg);
    tables = map_tables_load(NULL, &err);
    if (!tables)
        fail_msg("tables: %s", err.msg);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    elig_ruleset_free(rules);
    map_tables_free(tables);
    return 0;
}

typedef struct screened {
    fhir_arena *a;
    screen *sc;
    cds_card_input in;
} screened;

static void screen_vignette(screened *s, const char *file, const char *pid)
{
    char path[256];
    snprintf(path, sizeof path, "tests/vignettes/%s", file);
    fhir_buf b;
    fhir_buf_init(&b, 16u << 20);
    fhir_error err = {0};
    if (fhir_buf_read_file(&b, path, &err))
        fail_msg("%s: %s", path, err.msg);
    s->a = fhir_arena_new(64u << 20);
    fhir_node *bundle = fhir_json_parse(s->a, fhir_buf_cstr(&b), b.len, NULL, &err);
    fhir_buf_free(&b);
    assert_non_null(bundle);
    const fhir_node *res[2000];
    size_t n = 0;
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e && n < 2000; e = e->next)
        res[n++] = fhir_node_get(e, "resource");
    map_profile_opts o;
    map_profile_opts_default(&o);
    o.as_of_days = fhir_clock_days_from_civil(2026, 11, 1);
    s->sc = screen_new(tables, rules, &o);
    assert_int_equal(screen_patient(s->sc, res, n, &err), 0);
    s->in = (cds_card_input){.rules = rules, .facts = screen_facts(s->sc), .result = screen_result(s->sc),
                             .patient_id = pid, .public_url = "https://cartgate.example.org"};
}

static void screened_free(screened *s)
{
    screen_free(s->sc);
    fhir_arena_free(s->a);
}

static size_t chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

/* The card as a parsed tree (arena a). */
static fhir_node *card_of(screened *s, fhir_arena *a, char *uuid)
{
    fhir_buf b;
    fhir_buf_init(&b, CDS_CARD_MAX_BYTES);
    assert_int_equal(cds_card_write(&s->in, &b, uuid), 0);
    fhir_error err = {0};
    fhir_node *c = fhir_json_parse(a, fhir_buf_cstr(&b), b.len, NULL, &err);
    if (!c)
        fail_msg("card is not JSON: %s", err.msg);
    fhir_buf_free(&b);
    return c;
}

static void test_eligible_card(void **state)
{
    (void)state;
    screened s;
    screen_vignette(&s, "03-lbcl-primary-refractory.json", "vig03");
    assert_int_equal(elig_result_category(s.in.result), ELIG_ELIGIBLE);
    assert_true(cds_card_wanted(rules, s.in.result));
    fhir_arena *a = fhir_arena_new(1u << 20);
    char uuid[CDS_CARD_UUID_LEN];
    fhir_node *c = card_of(&s, a, uuid);
    const char *summary = fhir_node_str(fhir_node_get(c, "summary"));
    assert_non_null(summary);
    assert_true(chars(summary) < 140);
    assert_string_equal(summary, "Eligible for CAR T (axi-cel, liso-cel \xc2\xb7 LBCL 2nd line) \xe2\x80\x94 refer now");
    assert_string_equal(fhir_node_str(fhir_node_get(c, "indicator")), "warning");
    assert_string_equal(fhir_node_str(fhir_node_get(c, "uuid")), uuid);
    assert_non_null(strstr(fhir_node_path_str(c, "source.label"), "Yescarta"));
    assert_non_null(strstr(fhir_node_path_str(c, "source.url"), "https://dailymed.nlm.nih.gov/"));
    const char *detail = fhir_node_str(fhir_node_get(c, "detail"));
    assert_non_null(strstr(detail, "**Label indications**"));
    assert_non_null(strstr(detail, "- **Yescarta** (axicabtagene ciloleucel) \xe2\x80\x94 large B-cell lymphoma, second line"));
    assert_null(strstr(detail, "LBCL-2L"));
    assert_non_null(strstr(detail, "every gate met"));
    if (!strstr(detail, "Yescarta (axicabtagene ciloleucel) US Prescribing Information"))
        fail_msg("no label citation in the detail: %s", detail);
    assert_non_null(strstr(detail, "**Referral timing**"));
    /* the suggestion: a draft ServiceRequest proposal for the patient */
    const fhir_node *sug = fhir_node_first(fhir_node_get(c, "suggestions"));
    const fhir_node *act = fhir_node_first(fhir_node_get(sug, "actions"));
    assert_string_equal(fhir_node_str(fhir_node_get(act, "type")), "create");
    const fhir_node *sr = fhir_node_get(act, "resource");
    assert_string_equal(fhir_node_str(fhir_node_get(sr, "resourceType")), "ServiceRequest");
    assert_string_equal(fhir_node_str(fhir_node_get(sr, "intent")), "proposal");
    assert_string_equal(fhir_node_str(fhir_node_get(sr, "status")), "draft");
    assert_string_equal(fhir_node_path_str(sr, "subject.reference"), "Patient/vig03");
    assert_string_equal(fhir_node_str(fhir_node_get(c, "selectionBehavior")), "at-most-one");
    assert_string_not_equal(fhir_node_str(fhir_node_get(sug, "uuid")), uuid);
    /* links: absolute and smart to the patient page; appContext only on the smart one */
    const fhir_node *l1 = fhir_node_first(fhir_node_get(c, "links")), *l2 = l1->next;
    assert_string_equal(fhir_node_str(fhir_node_get(l1, "type")), "absolute");
    assert_string_equal(fhir_node_str(fhir_node_get(l1, "url")), "https://cartgate.example.org/ui/patients/vig03");
    assert_null(fhir_node_get(l1, "appContext"));
    assert_string_equal(fhir_node_str(fhir_node_get(l2, "type")), "smart");
    assert_non_null(strstr(fhir_node_str(fhir_node_get(l2, "appContext")), "\"indications\":[\"axi-cel:LBCL-2L\",\"liso-cel:LBCL-2L\"]"));
    /* stable per patient and verdict; another patient, another card */
    char again[CDS_CARD_UUID_LEN], other[CDS_CARD_UUID_LEN];
    cds_card_uuid(&s.in, again);
    assert_string_equal(again, uuid);
    s.in.patient_id = "vig03b";
    cds_card_uuid(&s.in, other);
    assert_string_not_equal(other, uuid);
    assert_int_equal(uuid[14], '8'); /* version 8 */
    fhir_arena_free(a);
    screened_free(&s);
}

static void test_possible_many_indications(void **state)
{
    (void)state;
    screened s;
    screen_vignette(&s, "27-b-cell-lymphoma-histology-unspecified.json", "vig27");
    assert_int_equal(elig_result_category(s.in.result), ELIG_POSSIBLY_ELIGIBLE);
    fhir_arena *a = fhir_arena_new(1u << 20);
    char uuid[CDS_CARD_UUID_LEN];
    fhir_node *c = card_of(&s, a, uuid);
    const char *summary = fhir_node_str(fhir_node_get(c, "summary"));
    assert_true(chars(summary) < 140);
    assert_true(!strncmp(summary, "Possibly eligible for CAR T (", 29));
    const char *detail = fhir_node_str(fhir_node_get(c, "detail"));
    assert_non_null(strstr(detail, "no gate failed, some facts unknown"));
    assert_non_null(strstr(detail, "**Missing**"));
    fhir_arena_free(a);
    screened_free(&s);
}

static void test_consult_only_and_none(void **state)
{
    (void)state;
    screened s;
    screen_vignette(&s, "23-fl-late-relapse-after-one-line.json", "vig23");
    assert_int_equal(elig_result_category(s.in.result), ELIG_NOT_ELIGIBLE);
    assert_true(cds_card_wanted(rules, s.in.result)); /* early consult */
    fhir_arena *a = fhir_arena_new(1u << 20);
    char uuid[CDS_CARD_UUID_LEN];
    fhir_node *c = card_of(&s, a, uuid);
    assert_string_equal(fhir_node_str(fhir_node_get(c, "summary")),
                        "Consider an early CAR T consultation (relapsed or refractory disease)");
    assert_string_equal(fhir_node_str(fhir_node_get(c, "indicator")), "info");
    assert_null(fhir_node_path_str(c, "source.url"));
    fhir_arena_free(a);
    screened_free(&s);
    /* not eligible and no consult: no card, nothing written */
    screen_vignette(&s, "51-colon-cancer-only.json", "vig51");
    assert_false(cds_card_wanted(rules, s.in.result));
    fhir_buf b;
    fhir_buf_init(&b, 1024);
    assert_int_equal(cds_card_write(&s.in, &b, NULL), 1);
    assert_int_equal(b.len, 0);
    fhir_buf_free(&b);
    screened_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eligible_card),
        cmocka_unit_test(test_possible_many_indications),
        cmocka_unit_test(test_consult_only_and_none),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
