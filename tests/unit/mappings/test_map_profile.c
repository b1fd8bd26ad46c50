/* Tests for mappings/map_profile: facts from FHIR resources, as of a date, three-valued,
 * with provenance. Resources are written inline as JSON arrays. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fhir_clock.h"
#include "fhir_json.h"
#include "map_profile.h"

static map_tables *T;

static int setup(void **state)
{
    (void)state;
    fhir_error err;
    fhir_error_clear(&err);
    T = map_tables_load(NULL, &err);
    return T ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    map_tables_free(T);
    return 0;
}

typedef struct pt {
    fhir_arena *a;
    map_profile *p;
} pt;

#define PATIENT                                                                                   \
    "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"gender\":\"female\",\"birthDate\":\"1956-06-15\"," \
    "\"address\":[{\"use\":\"home\",\"postalCode\":\"02139-1234\",\"extension\":[{\"url\":"       \
    "\"http://hl7.org/fhir/StructureDefinition/geolocation\",\"extension\":[{\"url\":\"latitude\"," \
    "\"valueDecimal\":42.36},{\"url\":\"longitude\",\"valueDecimal\":-71.1}]}]}]}"

static map_profile *build_opts(pt *t, const char *json_array, const char *as_of, int anchor_end)
{
    fhir_error err;
    fhir_error_clear(&err);
    t->a = fhir_arena_new(0);
    fhir_node *arr = fhir_json_parse(t->a, json_array, strlen(json_array), NULL, &err);
    if (!arr)
        fail_msg("test JSON: %s", err.msg);
    const fhir_node *res[128];
    size_t n = 0;
    for (const fhir_node *c = fhir_node_first(arr); c && n < 128; c = c->next)
        res[n++] = c;
    map_profile_opts o;
    map_profile_opts_default(&o);
    assert_int_equal(fhir_clock_parse_date(as_of, &o.as_of_days), 0);
    o.relapse_anchor_end = anchor_end;
    t->p = map_profile_build(T, res, n, &o, &err);
    if (!t->p)
        fail_msg("build: %s", err.msg);
    return t->p;
}

static map_profile *build(pt *t, const char *json_array, const char *as_of)
{
    return build_opts(t, json_array, as_of, 0);
}

static void done(pt *t)
{
    map_profile_free(t->p);
    fhir_arena_free(t->a);
}

static const map_fact *fact(pt *t, const char *name)
{
    const map_fact *f = map_profile_fact(t->p, name);
    if (!f)
        fail_msg("no fact %s", name);
    return f;
}

static void expect_num(pt *t, const char *name, double v)
{
    const map_fact *f = fact(t, name);
    if (!f->known || fabs(f->num - v) > 1e-6)
        fail_msg("%s: known=%d num=%g, want %g (%s)", name, f->known, f->num, v, f->evidence);
}

static void expect_bool(pt *t, const char *name, bool v)
{
    const map_fact *f = fact(t, name);
    if (!f->known || f->b != v)
        fail_msg("%s: known=%d b=%d, want %d (%s)", name, f->known, f->b, v, f->evidence);
}

static void expect_unknown(pt *t, const char *name)
{
    const map_fact *f = fact(t, name);
    if (f->known)
        fail_msg("%s: known (num=%g b=%d str=%s), want unknown (%s)", name, f->num, f->b,
                 f->str ? f->str : "", f->evidence);
    assert_non_null(f->evidence);
}

static void expect_str(pt *t, const char *name, const char *v)
{
    const map_fact *f = fact(t, name);
    if (!f->known || !f->str || strcmp(f->str, v))
        fail_msg("%s: known=%d str=%s, want %s (%s)", name, f->known, f->str ? f->str : "(null)", v,
                 f->evidence);
}

static bool set_has(pt *t, const char *name, const char *v)
{
    const map_fact *f = fact(t, name);
    for (size_t i = 0; i < f->nset; i++)
        if (!strcmp(f->set[i], v))
            return true;
    return false;
}

static void expect_evidence(pt *t, const char *name, const char *needle)
{
    const map_fact *f = fact(t, name);
    if (!f->evidence || !strstr(f->evidence, needle))
        fail_msg("%s evidence '%s' lacks '%s'", name, f->evidence ? f->evidence : "", needle);
}

#define COND(id, sys, code, disp, status, onset)                                                   \
    "{\"resourceType\":\"Condition\",\"id\":\"" id "\",\"subject\":{\"reference\":\"Patient/p1\"}," \
    "\"clinicalStatus\":{\"coding\":[{\"code\":\"" status "\"}]},\"code\":{\"coding\":[{\"system\":\"" sys \
    "\",\"code\":\"" code "\",\"display\":\"" disp "\"}]},\"onsetDateTime\":\"" onset "\"}"
#define ICD "http://hl7.org/fhir/sid/icd-10-cm"
#define SCT "http://snomed.info/sct"
#define RX "http://www.nlm.nih.gov/research/umls/rxnorm"

#define MA(id, rxcode, disp, date)                                                                 \
    "{\"resourceType\":\"MedicationAdministration\",\"id\":\"" id "\",\"status\":\"completed\","     \
    "\"subject\":{\"reference\":\"Patient/p1\"},\"medicationCodeableConcept\":{\"coding\":[{\"system\":\"" RX \
    "\",\"code\":\"" rxcode "\",\"display\":\"" disp "\"}]},\"effectiveDateTime\":\"" date "\"}"

#define STATUS(id, sct, date)                                                                      \
    "{\"resourceType\":\"Observation\",\"id\":\"" id "\",\"status\":\"final\",\"subject\":{\"reference\":\"Patient/p1\"}," \
    "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"97509-4\"}]},"              \
    "\"valueCodeableConcept\":{\"coding\":[{\"system\":\"" SCT "\",\"code\":\"" sct "\"}]},"       \
    "\"effectiveDateTime\":\"" date "\"}"

#define LAB(id, loinc, value, unit, date)                                                          \
    "{\"resourceType\":\"Observation\",\"id\":\"" id "\",\"status\":\"final\",\"subject\":{\"reference\":\"Patient/p1\"}," \
    "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"" loinc "\"}]},"            \
    "\"valueQuantity\":{\"value\":" value ",\"unit\":\"" unit "\",\"system\":\"http://unitsofmeasure.org\",\"code\":\"" unit "\"}," \
    "\"effectiveDateTime\":\"" date "\"}"

/* R-CHOP x6 from 2023-01-02 (every 21 days) as MedicationAdministrations */
#define RCHOP_CYCLE(n, date)                                                                       \
    MA("r" n, "121191", "rituximab", date) "," MA("c" n, "3002", "cyclophosphamide", date) ","    \
    MA("d" n, "3639", "doxorubicin", date) "," MA("v" n, "11202", "vincristine", date) ","        \
    MA("p" n, "8640", "prednisone", date)
#define RCHOP6                                                                                    \
    RCHOP_CYCLE("1", "2023-01-02") "," RCHOP_CYCLE("2", "2023-01-23") "," RCHOP_CYCLE("3", "2023-02-13") "," \
    RCHOP_CYCLE("4", "2023-03-06") "," RCHOP_CYCLE("5", "2023-03-27") "," RCHOP_CYCLE("6", "2023-04-17")

/* ---- demographics ---- */

static void test_demographics_as_of(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "]", "2024-06-14");
    expect_num(&t, "age", 67); /* birthday tomorrow */
    expect_str(&t, "sex", "female");
    expect_bool(&t, "deceased", false);
    expect_str(&t, "postal_code", "02139");
    expect_num(&t, "latitude", 42.36);
    expect_num(&t, "longitude", -71.1);
    assert_string_equal(map_profile_patient_id(t.p), "p1");
    expect_evidence(&t, "age", "Patient/p1 birthDate=1956-06-15");
    done(&t);
    build(&t, "[" PATIENT "]", "2024-06-15");
    expect_num(&t, "age", 68);
    done(&t);
    build(&t, "[{\"resourceType\":\"Patient\",\"id\":\"p2\",\"deceasedDateTime\":\"2024-01-01\"}]", "2024-06-01");
    expect_bool(&t, "deceased", true);
    expect_unknown(&t, "age");
    expect_unknown(&t, "sex");
    expect_unknown(&t, "postal_code");
    done(&t);
    /* death after the evaluation date: not deceased as of then */
    build(&t, "[{\"resourceType\":\"Patient\",\"id\":\"p2\",\"deceasedDateTime\":\"2024-01-01\"}]", "2023-06-01");
    expect_bool(&t, "deceased", false);
    done(&t);
}

static void test_no_patient_uses_subject(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" COND("c1", ICD, "C83.30", "DLBCL", "active", "2023-01-01") "]", "2024-01-01");
    assert_string_equal(map_profile_patient_id(t.p), "p1");
    expect_unknown(&t, "age");
    done(&t);
}

/* ---- diagnoses ---- */

static void test_diagnosis_status_rules(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT ","
              COND("c1", ICD, "C90.00", "Multiple myeloma", "active", "2022-01-01") ","
              "{\"resourceType\":\"Condition\",\"id\":\"c2\",\"subject\":{\"reference\":\"Patient/p1\"},"
              "\"verificationStatus\":{\"coding\":[{\"code\":\"entered-in-error\"}]},"
              "\"code\":{\"coding\":[{\"system\":\"" ICD "\",\"code\":\"C83.10\"}]},\"onsetDateTime\":\"2023-01-01\"},"
              "{\"resourceType\":\"Condition\",\"id\":\"c3\",\"subject\":{\"reference\":\"Patient/p1\"},"
              "\"verificationStatus\":{\"coding\":[{\"code\":\"refuted\"}]},"
              "\"code\":{\"coding\":[{\"system\":\"" ICD "\",\"code\":\"C91.10\"}]},\"onsetDateTime\":\"2023-01-01\"},"
              COND("c4", SCT, "93761005", "Primary malignant neoplasm of colon", "resolved", "2010-01-01") ","
              COND("c5", ICD, "C85.20", "PMBCL", "active", "2030-01-01") "]",
          "2024-01-01");
    const map_fact *d = fact(&t, "diseases");
    assert_true(d->known);
    assert_int_equal(d->nset, 1);
    assert_true(set_has(&t, "diseases", "mm"));
    expect_str(&t, "primary_disease", "mm");
    expect_evidence(&t, "primary_disease", "Condition/c1");
    expect_bool(&t, "pcnsl", false);
    expect_bool(&t, "histology_transformed", false);
    expect_unknown(&t, "cns_involvement");
    done(&t);
}

static void test_transformed_fl(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT ","
              COND("fl", ICD, "C82.10", "Follicular lymphoma grade II", "inactive", "2018-03-01") ","
              COND("dl", ICD, "C83.38", "Diffuse large B-cell lymphoma", "active", "2023-05-01") "]",
          "2024-01-01");
    expect_str(&t, "primary_disease", "tfl");
    expect_bool(&t, "histology_transformed", true);
    assert_true(set_has(&t, "diseases", "tfl"));
    assert_false(set_has(&t, "diseases", "dlbcl_nos"));
    expect_evidence(&t, "primary_disease", "Condition/fl");
    done(&t);
    /* MZL history: transformed, but not "tfl" */
    build(&t, "[" PATIENT ","
              COND("mz", SCT, "763666008", "Splenic MZL", "active", "2019-03-01") ","
              COND("dl", SCT, "109969005", "DLBCL", "active", "2023-05-01") "]",
          "2024-01-01");
    expect_str(&t, "primary_disease", "dlbcl_nos");
    expect_bool(&t, "histology_transformed", true);
    done(&t);
}

static void test_pcnsl_and_cns(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "," COND("c1", ICD, "C83.390", "Primary central nervous system lymphoma", "active", "2023-01-01") ","
              COND("c2", ICD, "C79.31", "Secondary malignant neoplasm of brain", "active", "2023-02-01") "]",
          "2024-01-01");
    expect_str(&t, "primary_disease", "pcnsl");
    expect_bool(&t, "pcnsl", true);
    expect_bool(&t, "cns_involvement", true);
    done(&t);
    build(&t, "[" PATIENT "]", "2024-01-01");
    expect_unknown(&t, "primary_disease");
    expect_unknown(&t, "pcnsl");
    assert_true(fact(&t, "diseases")->known);
    assert_int_equal(fact(&t, "diseases")->nset, 0);
    done(&t);
}

/* ---- therapy ---- */

static void test_rchop_relapse(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "," COND("c1", ICD, "C83.30", "DLBCL", "active", "2022-12-01") "," RCHOP6 ","
              STATUS("s1", "268910001", "2023-06-01") "," STATUS("s2", "271299001", "2023-11-20") "]",
          "2024-01-15");
    expect_num(&t, "lines", 1);
    assert_true(set_has(&t, "prior_classes", "anti_cd20"));
    assert_true(set_has(&t, "prior_classes", "anthracycline"));
    assert_true(set_has(&t, "first_line_classes", "alkylator"));
    assert_true(set_has(&t, "prior_drugs", "prednisone"));
    expect_bool(&t, "relapsed", true);
    expect_bool(&t, "refractory", false);
    expect_bool(&t, "primary_refractory", false);
    expect_num(&t, "relapse_months_after_1l", 10.6); /* 322 days from 2023-01-02 */
    expect_num(&t, "relapse_count", 1);
    expect_evidence(&t, "relapsed", "Observation/s2");
    expect_bool(&t, "lenalidomide_refractory", false);
    const map_line *l = map_profile_line(t.p, 0);
    assert_non_null(l);
    assert_int_equal(l->ndrugs, 5);
    done(&t);
    /* anchor = end of 1L (2023-04-17): 217 days */
    build_opts(&t, "[" PATIENT "," COND("c1", ICD, "C83.30", "DLBCL", "active", "2022-12-01") "," RCHOP6 ","
                   STATUS("s1", "268910001", "2023-06-01") "," STATUS("s2", "271299001", "2023-11-20") "]",
               "2024-01-15", 1);
    expect_num(&t, "relapse_months_after_1l", 7.1);
    done(&t);
}

static void test_primary_refractory(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "," COND("c1", ICD, "C83.30", "DLBCL", "active", "2022-12-01") "," RCHOP6 ","
              STATUS("s1", "271299001", "2023-05-20") "]",
          "2024-01-15");
    expect_bool(&t, "primary_refractory", true);
    expect_bool(&t, "refractory", true);
    expect_unknown(&t, "relapsed"); /* progression with no documented response */
    expect_num(&t, "relapse_months_after_1l", 4.5); /* 138 days */
    done(&t);
}

static void test_no_status_is_unknown(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "," COND("c1", ICD, "C83.30", "DLBCL", "active", "2022-12-01") "," RCHOP6 "]", "2024-01-15");
    expect_unknown(&t, "refractory");
    expect_unknown(&t, "primary_refractory");
    expect_unknown(&t, "relapsed");
    expect_unknown(&t, "relapse_months_after_1l");
    expect_unknown(&t, "relapse_count");
    done(&t);
    /* no therapy at all: zero lines (known), classes empty, refractoriness unknown */
    build(&t, "[" PATIENT "]", "2024-01-15");
    expect_num(&t, "lines", 0);
    assert_true(fact(&t, "prior_classes")->known);
    expect_unknown(&t, "first_line_classes");
    expect_unknown(&t, "refractory");
    done(&t);
}

static void test_therapy_after_as_of_ignored(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "," RCHOP6 "]", "2023-01-10");
    expect_num(&t, "lines", 1);
    const map_line *l = map_profile_line(t.p, 0);
    assert_int_equal(l->end_days, fhir_clock_days_from_civil(2023, 1, 2));
    done(&t);
    build(&t, "[" PATIENT "," RCHOP6 "]", "2022-12-31");
    expect_num(&t, "lines", 0);
    done(&t);
}

static void test_contained_and_referenced_medication(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT ","
              "{\"resourceType\":\"MedicationRequest\",\"id\":\"mr1\",\"status\":\"completed\",\"intent\":\"order\","
              "\"subject\":{\"reference\":\"Patient/p1\"},\"contained\":[{\"resourceType\":\"Medication\",\"id\":\"m\","
              "\"code\":{\"coding\":[{\"system\":\"" RX "\",\"code\":\"1442981\"}]}}],"
              "\"medicationReference\":{\"reference\":\"#m\"},\"authoredOn\":\"2023-01-01\"},"
              "{\"resourceType\":\"Medication\",\"id\":\"ven\",\"code\":{\"text\":\"Venclexta 100 mg tablet\"}},"
              "{\"resourceType\":\"MedicationRequest\",\"id\":\"mr2\",\"status\":\"active\",\"intent\":\"order\","
              "\"subject\":{\"reference\":\"Patient/p1\"},\"medicationReference\":{\"reference\":\"Medication/ven\"},"
              "\"authoredOn\":\"2023-09-01\",\"dispenseRequest\":{\"expectedSupplyDuration\":{\"value\":30,\"unit\":\"days\"}}},"
              "{\"resourceType\":\"MedicationRequest\",\"id\":\"mr3\",\"status\":\"cancelled\",\"intent\":\"order\","
              "\"subject\":{\"reference\":\"Patient/p1\"},\"medicationCodeableConcept\":{\"text\":\"pomalidomide\"},"
              "\"authoredOn\":\"2023-10-01\"}]",
          "2024-01-01");
    expect_num(&t, "lines", 2);
    assert_true(set_has(&t, "prior_classes", "btki"));
    assert_true(set_has(&t, "prior_classes", "bcl2i"));
    assert_false(set_has(&t, "prior_drugs", "pomalidomide")); /* cancelled order */
    const map_line *l = map_profile_line(t.p, 1);
    /* an active order without an end runs to the evaluation date (still given), whatever
     * its supply duration (2023-09-01 .. 2024-01-01) */
    assert_int_equal(l->end_days - l->start_days, 122);
    assert_non_null(strstr(l->evidence, "MedicationRequest/mr2"));
    done(&t);
}

static void test_lenalidomide_refractory_and_hct(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "," COND("c1", ICD, "C90.00", "Multiple myeloma", "active", "2021-01-01") ","
              MA("b1", "358258", "bortezomib", "2021-02-01") "," MA("l1", "342369", "lenalidomide", "2021-02-01") ","
              MA("b2", "358258", "bortezomib", "2021-03-01") "," MA("l2", "342369", "lenalidomide", "2021-03-01") ","
              MA("b3", "358258", "bortezomib", "2021-04-01") "," MA("l3", "342369", "lenalidomide", "2021-04-01") ","
              MA("m1", "6718", "melphalan", "2021-05-20") ","
              "{\"resourceType\":\"Procedure\",\"id\":\"tx\",\"status\":\"completed\",\"subject\":{\"reference\":\"Patient/p1\"},"
              "\"code\":{\"coding\":[{\"system\":\"http://www.ama-assn.org/go/cpt\",\"code\":\"38241\"}]},\"performedDateTime\":\"2021-05-22\"},"
              "{\"resourceType\":\"MedicationStatement\",\"id\":\"ms\",\"status\":\"active\",\"subject\":{\"reference\":\"Patient/p1\"},"
              "\"medicationCodeableConcept\":{\"coding\":[{\"system\":\"" RX "\",\"code\":\"342369\"}]},"
              "\"effectivePeriod\":{\"start\":\"2021-08-15\",\"end\":\"2023-03-01\"}},"
              STATUS("s1", "268910001", "2021-07-01") "," STATUS("s2", "271299001", "2023-02-10") "]",
          "2023-06-01");
    expect_num(&t, "lines", 1); /* VRd -> ASCT -> lenalidomide maintenance */
    const map_line *l = map_profile_line(t.p, 0);
    assert_true(l->has_auto_hct);
    assert_true(l->maintenance);
    expect_bool(&t, "lenalidomide_refractory", true);
    expect_bool(&t, "prior_auto_hct", true);
    expect_bool(&t, "prior_allo_hct", false);
    expect_bool(&t, "prior_car_t", false);
    expect_bool(&t, "relapsed", true);
    expect_bool(&t, "refractory", true);
    expect_bool(&t, "btki_progression", false);
    expect_evidence(&t, "prior_auto_hct", "Procedure/tx");
    /* the timeline: response, transplant, progression, in date order */
    assert_int_equal(map_profile_event_count(t.p), 3);
    const map_event *e0 = map_profile_event(t.p, 0), *e1 = map_profile_event(t.p, 1),
                    *e2 = map_profile_event(t.p, 2);
    assert_int_equal(e0->kind, MAP_EVENT_AUTO_HCT);
    assert_string_equal(e0->ref, "Procedure/tx");
    assert_int_equal(e1->kind, MAP_EVENT_RESPONSE);
    assert_string_equal(e1->ref, "Observation/s1");
    assert_int_equal(e2->kind, MAP_EVENT_PROGRESSION);
    assert_string_equal(e2->ref, "Observation/s2");
    assert_true(e0->day < e1->day && e1->day < e2->day);
    assert_null(map_profile_event(t.p, 3));
    assert_string_equal(map_event_kind_text(e2->kind), "progression or relapse");
    done(&t);
}

static void test_history_codes(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "," COND("h1", ICD, "Z94.84", "Stem cells transplant status", "active", "2022-01-01") ","
              COND("h2", ICD, "Z92.850", "Personal history of CAR T", "active", "2023-01-01") "]",
          "2024-01-01");
    expect_unknown(&t, "prior_auto_hct");
    expect_unknown(&t, "prior_allo_hct");
    expect_bool(&t, "prior_car_t", true);
    done(&t);
}

static void test_relapse_coded_condition(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT ","
              "{\"resourceType\":\"Condition\",\"id\":\"c1\",\"subject\":{\"reference\":\"Patient/p1\"},"
              "\"code\":{\"coding\":[{\"system\":\"" ICD "\",\"code\":\"C90.02\"}]},\"onsetDateTime\":\"2020-01-01\","
              "\"recordedDate\":\"2023-03-01\"}]",
          "2024-01-01");
    expect_str(&t, "primary_disease", "mm");
    expect_bool(&t, "relapsed", true);
    /* relapse with no therapy on record: the treatment was elsewhere, so lines is unknown */
    expect_unknown(&t, "lines");
    expect_evidence(&t, "lines", "outside this record");
    done(&t);
    /* the same with a progression status and no therapy */
    build(&t, "[" PATIENT "," COND("c1", ICD, "C83.30", "DLBCL", "active", "2022-12-01") ","
              STATUS("s1", "271299001", "2023-05-20") "]",
          "2024-01-15");
    expect_unknown(&t, "lines");
    done(&t);
}

/* ---- labs ---- */

static void test_labs_latest_in_lookback(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT ","
              LAB("a1", "26499-4", "2.1", "10*3/uL", "2023-12-01") "," LAB("a2", "751-8", "1.4", "10*3/uL", "2023-12-20") ","
              LAB("a3", "26499-4", "9.9", "10*3/uL", "2024-02-01") "," /* after as-of */
              LAB("k1", "14682-9", "132.6", "umol/L", "2023-12-20") ","
              LAB("pl", "777-3", "95000", "/uL", "2023-12-20") ","
              LAB("old", "718-7", "13", "g/dL", "2023-01-01") "]",
          "2024-01-01");
    expect_num(&t, "anc", 1.4);
    expect_evidence(&t, "anc", "Observation/a2");
    expect_num(&t, "creatinine", 1.5);
    expect_num(&t, "platelets", 95);
    expect_unknown(&t, "hemoglobin"); /* older than 90 days */
    done(&t);
}

static void test_labs_implausible_flagged(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "," LAB("a1", "26499-4", "2.1", "10*3/uL", "2023-11-01") ","
              LAB("a2", "26499-4", "3000", "10*3/uL", "2023-12-01") ","
              "{\"resourceType\":\"Observation\",\"id\":\"cr\",\"status\":\"final\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"2160-0\"}]},"
              "\"valueQuantity\":{\"value\":1.2},\"effectiveDateTime\":\"2023-12-01\"}]",
          "2024-01-01");
    expect_unknown(&t, "anc"); /* latest is implausible: flagged, not guessed, not replaced */
    expect_evidence(&t, "anc", "implausible");
    expect_unknown(&t, "creatinine"); /* no unit */
    assert_true(map_profile_warning_count(t.p) >= 2);
    done(&t);
}

static void test_ecog_and_karnofsky(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT ","
              "{\"resourceType\":\"Observation\",\"id\":\"e1\",\"status\":\"final\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"89247-1\"}]},"
              "\"valueCodeableConcept\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"LA9624-3\"}]},\"effectiveDateTime\":\"2023-12-01\"},"
              "{\"resourceType\":\"Observation\",\"id\":\"k1\",\"status\":\"final\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"89243-0\"}]},"
              "\"valueInteger\":90,\"effectiveDateTime\":\"2023-12-20\"}]",
          "2024-01-01");
    expect_num(&t, "ecog", 2); /* ECOG wins over Karnofsky */
    done(&t);
    build(&t, "[" PATIENT ","
              "{\"resourceType\":\"Observation\",\"id\":\"k1\",\"status\":\"final\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"89243-0\"}]},"
              "\"valueString\":\"60%\",\"effectiveDateTime\":\"2023-12-20\"}]",
          "2024-01-01");
    expect_num(&t, "ecog", 2);
    expect_evidence(&t, "ecog", "Karnofsky=60");
    done(&t);
    build(&t, "[" PATIENT ","
              "{\"resourceType\":\"Observation\",\"id\":\"e1\",\"status\":\"final\",\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"89247-1\"}]},"
              "\"valueString\":\"ECOG 1\",\"effectiveDateTime\":\"2023-12-01\"}]",
          "2024-01-01");
    expect_num(&t, "ecog", 1);
    done(&t);
    build(&t, "[" PATIENT "]", "2024-01-01");
    expect_unknown(&t, "ecog");
    done(&t);
}

static void test_cockcroft_gault_and_payer(void **s)
{
    (void)s;
    pt t;
    /* female 67 y, 70 kg, creatinine 1.0: (140-67)*70/72*0.85 = 60.3 */
    build(&t, "[" PATIENT "," LAB("w", "29463-7", "154.3234", "[lb_av]", "2023-12-01") ","
              LAB("c", "2160-0", "1.0", "mg/dL", "2023-12-01") ","
              "{\"resourceType\":\"Coverage\",\"id\":\"cv\",\"status\":\"active\",\"beneficiary\":{\"reference\":\"Patient/p1\"},"
              "\"payor\":[{\"display\":\"Medicare Part A\"}],\"period\":{\"start\":\"2020-01-01\"}}]",
          "2024-01-01");
    expect_num(&t, "crcl", 60.3);
    expect_evidence(&t, "crcl", "Cockcroft-Gault");
    expect_str(&t, "payer", "Medicare Part A");
    done(&t);
    build(&t, "[" PATIENT "]", "2024-01-01");
    expect_unknown(&t, "payer");
    expect_unknown(&t, "crcl");
    done(&t);
}

/* ---- vocabulary and JSON ---- */

static void test_vocabulary(void **s)
{
    (void)s;
    map_fact_type ty;
    assert_true(map_fact_lookup("lines", &ty));
    assert_int_equal(ty, MAP_FACT_NUMBER);
    assert_true(map_fact_lookup("diseases", &ty));
    assert_int_equal(ty, MAP_FACT_SET);
    assert_false(map_fact_lookup("no_such_fact", NULL));
    assert_true(map_fact_code_valid("diseases", "tfl"));
    assert_false(map_fact_code_valid("diseases", "lymphoma"));
    assert_true(map_fact_code_valid("prior_classes", "bcma_directed"));
    assert_false(map_fact_code_valid("prior_classes", "dlbcl_nos"));
    assert_true(map_fact_code_valid("sex", "female"));
    assert_false(map_fact_code_valid("age", "1"));
    assert_int_equal(map_fact_count(), 47);
    for (size_t i = 0; i < map_fact_count(); i++)
        assert_true(map_fact_lookup(map_fact_name_at(i, NULL), NULL));
    pt t;
    build(&t, "[" PATIENT "]", "2024-01-01");
    assert_null(map_profile_fact(t.p, "no_such_fact"));
    done(&t);
}

static void test_json_output(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "," COND("c1", ICD, "C83.30", "DLBCL", "active", "2022-12-01") "," RCHOP6 ","
              LAB("a2", "26499-4", "3000", "10*3/uL", "2023-12-01") "]",
          "2024-01-01");
    for (int pretty = 0; pretty < 2; pretty++) {
        fhir_buf b;
        fhir_buf_init(&b, 1 << 20);
        assert_int_equal(map_profile_write_json(t.p, &b, pretty), 0);
        fhir_arena *a = fhir_arena_new(0);
        fhir_error err;
        fhir_node *root = fhir_json_parse(a, b.data, b.len, NULL, &err);
        if (!root)
            fail_msg("profile JSON does not parse: %s\n%s", err.msg, b.data);
        assert_string_equal(fhir_node_path_str(root, "patient"), "p1");
        assert_string_equal(fhir_node_path_str(root, "as_of"), "2024-01-01");
        assert_true(fhir_node_bool(fhir_node_path(root, "facts.lines.known"), false));
        double v;
        assert_true(fhir_node_double(fhir_node_path(root, "facts.lines.value"), &v));
        assert_true(v == 1);
        assert_null(fhir_node_path(root, "facts.anc.value"));
        assert_string_equal(fhir_node_path_str(root, "facts.primary_disease.value"), "dlbcl_nos");
        assert_int_equal(fhir_node_count(fhir_node_path(root, "facts")), 47);
        assert_int_equal(fhir_node_count(fhir_node_path(root, "lines[0].drugs")), 5);
        assert_int_equal(fhir_node_count(fhir_node_get(root, "warnings")), 1);
        assert_non_null(fhir_node_get(root, "events")); /* no status recorded: an empty timeline */
        assert_int_equal(fhir_node_count(fhir_node_get(root, "events")), 0);
        if (!pretty)
            assert_null(strchr(b.data, '\n')); /* one line per patient */
        fhir_arena_free(a);
        fhir_buf_free(&b);
    }
    fhir_buf b;
    fhir_buf_init(&b, 1 << 20);
    assert_int_equal(map_profile_write_text(t.p, &b), 0);
    assert_non_null(strstr(b.data, "primary_disease"));
    assert_non_null(strstr(b.data, "line 1"));
    fhir_buf_free(&b);
    done(&t);
}

/* ---- open world (mappings/README.md "Open world") ---- */

#define STMT_TEXT(id, text, start, end, status)                                                    \
    "{\"resourceType\":\"MedicationStatement\",\"id\":\"" id "\",\"status\":\"" status "\","        \
    "\"subject\":{\"reference\":\"Patient/p1\"},\"medicationCodeableConcept\":{\"text\":\"" text "\"}," \
    "\"effectivePeriod\":{\"start\":\"" start "\"" end "}}"

/* Therapy documented without its agents counts as a line: lines at least n, classes open,
 * and "never given" cannot be concluded for lenalidomide or a BTK inhibitor. */
static void test_outside_line_without_agents(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "," COND("c1", ICD, "C91.10", "CLL", "active", "2019-01-01") ","
              MA("i1", "1442981", "ibrutinib", "2021-03-01") "," STATUS("s1", "271299001", "2021-03-20") ","
              STMT_TEXT("o1", "Second-line therapy at an outside cancer center, agent not recorded",
                        "2021-06-01", ",\"end\":\"2022-01-10\"", "completed") ","
              STATUS("s2", "271299001", "2023-05-01") "]",
          "2024-01-01");
    const map_fact *lines = fact(&t, "lines");
    assert_true(lines->known);
    assert_int_equal(lines->num, 2);
    assert_int_equal(lines->bound, MAP_FACT_AT_LEAST);
    assert_non_null(lines->settle);
    assert_non_null(strstr(lines->settle, "MedicationStatement/o1"));
    const map_fact *pc = fact(&t, "prior_classes");
    assert_true(pc->open);
    assert_true(set_has(&t, "prior_classes", "btki"));
    assert_true(map_profile_line(t.p, 1)->unknown_agents);
    assert_int_equal(map_profile_line(t.p, 1)->ndrugs, 0);
    expect_unknown(&t, "lenalidomide_refractory");
    expect_bool(&t, "btki_progression", true);
    done(&t);
    /* a coded drug that is not in the table (supportive care) is not "unknown therapy" */
    build(&t, "[" PATIENT "," COND("c1", ICD, "C91.10", "CLL", "active", "2019-01-01") ","
              "{\"resourceType\":\"MedicationStatement\",\"id\":\"o2\",\"status\":\"completed\","
              "\"subject\":{\"reference\":\"Patient/p1\"},\"medicationCodeableConcept\":{\"coding\":[{\"system\":\"" RX
              "\",\"code\":\"26225\",\"display\":\"ondansetron\"}],\"text\":\"ondansetron for chemotherapy nausea\"},"
              "\"effectiveDateTime\":\"2021-06-01\"}]",
          "2024-01-01");
    expect_num(&t, "lines", 0);
    assert_int_equal(fact(&t, "lines")->bound, MAP_FACT_EXACT);
    assert_false(fact(&t, "prior_classes")->open);
    done(&t);
}

/* A statement without an end date: the line's end is a lower bound; windows from the end are
 * upper bounds or unknown; an active record runs to the evaluation date. */
static void test_statement_without_end_date(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "," COND("c1", ICD, "C90.00", "Multiple myeloma", "active", "2020-01-01") ","
              "{\"resourceType\":\"MedicationStatement\",\"id\":\"len\",\"status\":\"stopped\","
              "\"subject\":{\"reference\":\"Patient/p1\"},\"medicationCodeableConcept\":{\"coding\":[{\"system\":\"" RX
              "\",\"code\":\"342369\"}]},\"effectivePeriod\":{\"start\":\"2020-02-01\"}},"
              STATUS("r1", "268910001", "2020-06-01") "," STATUS("p1", "271299001", "2023-03-01") "]",
          "2024-01-01");
    assert_true(map_profile_line(t.p, 0)->end_unknown);
    expect_unknown(&t, "lenalidomide_refractory");
    expect_evidence(&t, "lenalidomide_refractory", "no end date");
    assert_non_null(strstr(fact(&t, "lenalidomide_refractory")->settle, "stop date"));
    const map_fact *end = fact(&t, "relapse_months_after_1l_end");
    assert_true(end->known);
    assert_int_equal(end->bound, MAP_FACT_AT_MOST);
    expect_unknown(&t, "refractory");
    done(&t);
    /* the same statement active: ongoing, so the progression is on lenalidomide */
    build(&t, "[" PATIENT "," COND("c1", ICD, "C90.00", "Multiple myeloma", "active", "2020-01-01") ","
              "{\"resourceType\":\"MedicationStatement\",\"id\":\"len\",\"status\":\"active\","
              "\"subject\":{\"reference\":\"Patient/p1\"},\"medicationCodeableConcept\":{\"coding\":[{\"system\":\"" RX
              "\",\"code\":\"342369\"}]},\"effectivePeriod\":{\"start\":\"2020-02-01\"}},"
              STATUS("r1", "268910001", "2020-06-01") "," STATUS("p1", "271299001", "2023-03-01") "]",
          "2024-01-01");
    assert_false(map_profile_line(t.p, 0)->end_unknown);
    expect_bool(&t, "lenalidomide_refractory", true);
    done(&t);
}

/* C91.0x does not say B or T lineage: B-ALL stays possible, "lineage" is what is missing. */
static void test_lineage_unspecified(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "," COND("c1", ICD, "C91.00", "Acute lymphoblastic leukemia", "active", "2023-01-01") "]",
          "2024-01-01");
    const map_fact *d = fact(&t, "diseases");
    assert_true(set_has(&t, "diseases", "all_nos"));
    assert_false(set_has(&t, "diseases", "b_all"));
    assert_int_equal(d->nmaybe, 1);
    assert_string_equal(d->maybe[0], "b_all");
    assert_string_equal(d->missing_as, "lineage");
    assert_non_null(strstr(d->settle, "immunophenotype"));
    expect_str(&t, "primary_disease", "all_nos");
    done(&t);
    /* a B-ALL coding of the same Condition settles it */
    build(&t, "[" PATIENT ",{\"resourceType\":\"Condition\",\"id\":\"c1\",\"subject\":{\"reference\":\"Patient/p1\"},"
              "\"code\":{\"coding\":[{\"system\":\"" ICD "\",\"code\":\"C91.00\"},{\"system\":\"" SCT
              "\",\"code\":\"277571004\"}]},\"onsetDateTime\":\"2023-01-01\"}]",
          "2024-01-01");
    assert_true(set_has(&t, "diseases", "b_all"));
    assert_int_equal(fact(&t, "diseases")->nmaybe, 0);
    done(&t);
}

#define ASCT_NOT_DONE(id, reason)                                                                  \
    "{\"resourceType\":\"Procedure\",\"id\":\"" id "\",\"status\":\"not-done\",\"subject\":{\"reference\":\"Patient/p1\"}," \
    "\"code\":{\"coding\":[{\"system\":\"http://www.ama-assn.org/go/cpt\",\"code\":\"38241\"}]},"  \
    "\"statusReason\":{\"text\":\"" reason "\"}}"

/* A transplant not done because it is contraindicated documents ineligibility; a refusal
 * does not (a note for the clinician). */
static void test_transplant_not_done(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT "," COND("c1", ICD, "C83.30", "DLBCL", "active", "2023-01-01") ","
              ASCT_NOT_DONE("x1", "Procedure contraindicated: comorbidities and age") "]",
          "2024-01-01");
    expect_bool(&t, "hct_ineligible", true);
    expect_evidence(&t, "hct_ineligible", "Procedure/x1");
    expect_unknown(&t, "hct_refusal");
    expect_num(&t, "lines", 0); /* a transplant not done is not a line */
    done(&t);
    build(&t, "[" PATIENT "," COND("c1", ICD, "C83.30", "DLBCL", "active", "2023-01-01") ","
              ASCT_NOT_DONE("x1", "Patient declined autologous stem cell transplant") "]",
          "2024-01-01");
    expect_unknown(&t, "hct_ineligible");
    expect_bool(&t, "hct_refusal", true);
    assert_non_null(fact(&t, "hct_ineligible")->settle);
    done(&t);
}

/* Renal function: Cockcroft-Gault with a weight, else CKD-EPI 2021 eGFR, saying which. */
static void test_renal_function(void **s)
{
    (void)s;
    pt t;
    /* female, 67 at 2024-01-01, creatinine 212 umol/L = 2.398 mg/dL, no weight */
    build(&t, "[" PATIENT "," LAB("cr", "14682-9", "212", "umol/L", "2023-12-01") "]", "2024-01-01");
    expect_unknown(&t, "crcl");
    const map_fact *e = fact(&t, "egfr");
    assert_true(e->known);
    /* 142 x (2.398/0.7)^-1.2 x 0.9938^67 x 1.012 */
    double want = 142.0 * pow(2.398190 / 0.7, -1.2) * pow(0.9938, 67) * 1.012;
    assert_true(fabs(e->num - want) < 0.2);
    expect_evidence(&t, "renal_function", "eGFR");
    expect_evidence(&t, "renal_function", "no body weight");
    done(&t);
    build(&t, "[" PATIENT "," LAB("cr", "2160-0", "1.0", "mg/dL", "2023-12-01") ","
              LAB("wt", "29463-7", "60", "kg", "2023-12-01") "]",
          "2024-01-01");
    expect_evidence(&t, "renal_function", "creatinine clearance");
    expect_num(&t, "renal_function", fact(&t, "crcl")->num);
    done(&t);
}

/* IMS/IMWG 2025 high risk from a cytogenetics report in words; never false from silence. */
static void test_myeloma_high_risk(void **s)
{
    (void)s;
    pt t;
    build(&t, "[" PATIENT ",{\"resourceType\":\"Observation\",\"id\":\"fish\",\"status\":\"final\","
              "\"subject\":{\"reference\":\"Patient/p1\"},\"code\":{\"text\":\"Plasma cell FISH\"},"
              "\"valueString\":\"t(4;14) detected; gain of 1q (4 copies); del(17p) not detected\","
              "\"effectiveDateTime\":\"2023-06-01\"}]",
          "2024-01-01");
    expect_bool(&t, "mm_high_risk", true);
    expect_evidence(&t, "mm_high_risk", "Observation/fish");
    done(&t);
    build(&t, "[" PATIENT ",{\"resourceType\":\"Observation\",\"id\":\"fish\",\"status\":\"final\","
              "\"subject\":{\"reference\":\"Patient/p1\"},\"code\":{\"text\":\"Plasma cell FISH\"},"
              "\"valueString\":\"t(4;14) detected, del(17p) negative\",\"effectiveDateTime\":\"2023-06-01\"}]",
          "2024-01-01");
    expect_unknown(&t, "mm_high_risk");
    expect_evidence(&t, "mm_high_risk", "without a 1q gain");
    done(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demographics_as_of),
        cmocka_unit_test(test_no_patient_uses_subject),
        cmocka_unit_test(test_diagnosis_status_rules),
        cmocka_unit_test(test_transformed_fl),
        cmocka_unit_test(test_pcnsl_and_cns),
        cmocka_unit_test(test_rchop_relapse),
        cmocka_unit_test(test_primary_refractory),
        cmocka_unit_test(test_no_status_is_unknown),
        cmocka_unit_test(test_therapy_after_as_of_ignored),
        cmocka_unit_test(test_contained_and_referenced_medication),
        cmocka_unit_test(test_lenalidomide_refractory_and_hct),
        cmocka_unit_test(test_history_codes),
        cmocka_unit_test(test_relapse_coded_condition),
        cmocka_unit_test(test_labs_latest_in_lookback),
        cmocka_unit_test(test_labs_implausible_flagged),
        cmocka_unit_test(test_ecog_and_karnofsky),
        cmocka_unit_test(test_cockcroft_gault_and_payer),
        cmocka_unit_test(test_vocabulary),
        cmocka_unit_test(test_json_output),
        cmocka_unit_test(test_outside_line_without_agents),
        cmocka_unit_test(test_statement_without_end_date),
        cmocka_unit_test(test_lineage_unspecified),
        cmocka_unit_test(test_transplant_not_done),
        cmocka_unit_test(test_renal_function),
        cmocka_unit_test(test_myeloma_high_risk),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
