/* Unit tests: the BSeR-shaped transaction Bundle — entries, conditional creates on carried
 * identifiers, placer identifier PLAC, Task wiring, reference rewriting, minimum-necessary
 * Patient, base64 attachments, determinism, response location parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bser.h"
#include "centers.h"
#include "fhir_json.h"

/* All fictional. */
const char *bser_test_patient =
    "{\"resourceType\":\"Patient\",\"id\":\"ehr-pt-1\",\"meta\":{\"versionId\":\"3\"},"
    "\"text\":{\"status\":\"generated\",\"div\":\"<div xmlns=\\\"http://www.w3.org/1999/xhtml\\\">x</div>\"},"
    "\"identifier\":[{\"system\":\"urn:oid:2.16.840.1.113883.19.5\",\"value\":\"MRN-000123\","
    "\"assigner\":{\"reference\":\"Organization/ehr-org\"}}],"
    "\"name\":[{\"family\":\"Testperson\",\"given\":[\"Alex\"]}],\"gender\":\"female\","
    "\"birthDate\":\"1961-04-02\",\"address\":[{\"city\":\"Rochester\",\"state\":\"MN\",\"postalCode\":\"55902\"}],"
    "\"maritalStatus\":{\"text\":\"Married\"},"
    "\"generalPractitioner\":[{\"reference\":\"Practitioner/gp-1\"}]}";
const char *bser_test_coverage =
    "{\"resourceType\":\"Coverage\",\"id\":\"cov-1\",\"status\":\"active\","
    "\"beneficiary\":{\"reference\":\"Patient/ehr-pt-1\"},"
    "\"payor\":[{\"reference\":\"Organization/payer-1\",\"display\":\"Medicare\"}]}";
const char *bser_test_condition =
    "{\"resourceType\":\"Condition\",\"id\":\"cond-1\","
    "\"clinicalStatus\":{\"coding\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/condition-clinical\",\"code\":\"active\"}]},"
    "\"code\":{\"text\":\"Diffuse large B-cell lymphoma\"},"
    "\"subject\":{\"reference\":\"Patient/ehr-pt-1\"},\"encounter\":{\"reference\":\"Encounter/e1\"}}";
const char *bser_test_observation =
    "{\"resourceType\":\"Observation\",\"id\":\"obs-1\",\"status\":\"final\","
    "\"code\":{\"text\":\"ECOG performance status\"},\"subject\":{\"reference\":\"Patient/ehr-pt-1\"},"
    "\"valueInteger\":1,\"contained\":[{\"resourceType\":\"Practitioner\",\"id\":\"x\"}]}";
const char *bser_test_medication =
    "{\"resourceType\":\"MedicationRequest\",\"id\":\"med-1\",\"status\":\"completed\","
    "\"intent\":\"order\",\"medicationCodeableConcept\":{\"text\":\"rituximab\"},"
    "\"subject\":{\"reference\":\"http://ehr.example.org/fhir/Patient/ehr-pt-1\"},"
    "\"requester\":{\"reference\":\"Practitioner/dr-1\"}}";

static const char *dir_json =
    "{\"centers\": [{\"id\": \"lakeshore-chicago\", \"name\": \"Lakeshore (fictional)\","
    " \"fhir\": {\"base\": \"https://fhir.lakeshore.example.org/r4\"},"
    " \"position\": {\"lat\": 41.89, \"lon\": -87.62},"
    " \"address\": {\"line\": [\"250 East Example Street\"], \"city\": \"Chicago\", \"state\": \"IL\", \"postalCode\": \"60611\"},"
    " \"accreditations\": [{\"body\": \"FACT\", \"expires\": \"2030-01-01\"}], \"products\": [\"axi-cel\"],"
    " \"diseases\": [\"dlbcl_nos\"], \"capacity\": \"open\","
    " \"contact\": {\"phone\": \"+1-555-0118\", \"email\": \"cart-intake@lakeshore.example.org\"}}]}";

static fhir_node *P(fhir_arena *a, const char *s)
{
    fhir_error err = {0};
    fhir_node *n = fhir_json_parse(a, s, strlen(s), NULL, &err);
    if (!n)
        fail_msg("fixture: %s", err.msg);
    return n;
}

static fhir_node *build(fhir_arena *a, centers_dir *d, fhir_error *err)
{
    static const fhir_node *cov[1], *obs[1], *med[1];
    cov[0] = P(a, bser_test_coverage);
    obs[0] = P(a, bser_test_observation);
    med[0] = P(a, bser_test_medication);
    bser_input in = {
        .id_system_base = "urn:cartgate:community-1",
        .placer_id = "CG-0123456789abcdef0123456789abcdef",
        .site_id = "community-1",
        .site_name = "Community Hospital (fictional)",
        .center = &d->centers[0],
        .patient_id = "pseudo-42",
        .patient = P(a, bser_test_patient),
        .coverages = cov, .n_coverages = 1,
        .condition = P(a, bser_test_condition),
        .observations = obs, .n_observations = 1,
        .medications = med, .n_medications = 1,
        .reason_text = "Refractory LBCL after first line: CAR T evaluation (axi-cel)",
        .summary_text = "Eligible for axi-cel (LBCL, 2nd line).",
        .verdict_json = "{\"category\":\"eligible\"}",
        .urgency = "urgent",
        .authored_ms = 1795000000000LL,
    };
    return bser_build(a, &in, err);
}

static const fhir_node *entry_of(const fhir_node *bundle, const char *type)
{
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next)
        if (!strcmp(fhir_node_path_str(e, "resource.resourceType"), type))
            return e;
    return NULL;
}

static void test_bundle_shape(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    centers_dir *d = centers_load_mem("dir.json", dir_json, strlen(dir_json), &err);
    assert_non_null(d);
    fhir_node *b = build(a, d, &err);
    if (!b)
        fail_msg("%s", err.msg);
    assert_string_equal(fhir_node_path_str(b, "type"), "transaction");
    assert_int_equal(fhir_node_count(fhir_node_get(b, "entry")), 10);
    /* every entry: POST with ifNoneExist on an identifier the resource carries */
    for (const fhir_node *e = fhir_node_first(fhir_node_get(b, "entry")); e; e = e->next) {
        assert_string_equal(fhir_node_path_str(e, "request.method"), "POST");
        assert_string_equal(fhir_node_path_str(e, "request.url"),
                            fhir_node_path_str(e, "resource.resourceType"));
        const char *q = fhir_node_path_str(e, "request.ifNoneExist");
        assert_non_null(q);
        assert_memory_equal(q, "identifier=", 11);
        bool carried = false;
        for (const fhir_node *id = fhir_node_first(fhir_node_path(e, "resource.identifier"));
             id; id = id->next) {
            char want[512];
            snprintf(want, sizeof want, "identifier=%s|%s", fhir_node_path_str(id, "system"),
                     fhir_node_path_str(id, "value"));
            carried |= !strcmp(want, q);
        }
        assert_true(carried);
        assert_memory_equal(fhir_node_path_str(e, "fullUrl"), "urn:uuid:", 9);
        assert_null(fhir_node_path(e, "resource.id"));
        assert_null(fhir_node_path(e, "resource.meta"));
        assert_null(fhir_node_path(e, "resource.text"));
        assert_null(fhir_node_path(e, "resource.contained"));
    }
    const fhir_node *sr = entry_of(b, "ServiceRequest"), *task = entry_of(b, "Task");
    const fhir_node *pt = entry_of(b, "Patient");
    const char *pt_urn = fhir_node_path_str(pt, "fullUrl");
    assert_string_equal(fhir_node_path_str(sr, "resource.identifier.type.coding.code"), "PLAC");
    assert_string_equal(fhir_node_path_str(sr, "resource.identifier.value"),
                        "CG-0123456789abcdef0123456789abcdef");
    assert_string_equal(fhir_node_path_str(sr, "resource.intent"), "order");
    assert_string_equal(fhir_node_path_str(sr, "resource.priority"), "urgent");
    assert_string_equal(fhir_node_path_str(sr, "resource.subject.reference"), pt_urn);
    assert_string_equal(fhir_node_path_str(sr, "resource.performer.reference"),
                        fhir_node_path_str(entry_of(b, "Organization")->next, "fullUrl"));
    assert_non_null(strstr(fhir_node_path_str(sr, "resource.reasonCode.text"), "axi-cel"));
    assert_string_equal(fhir_node_path_str(sr, "resource.reasonReference.reference"),
                        fhir_node_path_str(entry_of(b, "Condition"), "fullUrl"));
    assert_int_equal(fhir_node_count(fhir_node_path(sr, "resource.supportingInfo")), 3);
    assert_string_equal(fhir_node_path_str(task, "resource.status"), "requested");
    assert_string_equal(fhir_node_path_str(task, "resource.code.coding.code"), "fulfill");
    assert_string_equal(fhir_node_path_str(task, "resource.focus.reference"),
                        fhir_node_path_str(sr, "fullUrl"));
    assert_string_equal(fhir_node_path_str(task, "resource.owner.reference"),
                        fhir_node_path_str(sr, "resource.performer.reference"));
    assert_string_equal(fhir_node_path_str(task, "resource.for.reference"), pt_urn);
    assert_string_equal(fhir_node_path_str(task, "resource.businessStatus.coding.code"), "2.0");
    /* minimum necessary patient: no marital status, no GP; EHR identifier kept + ours */
    assert_null(fhir_node_path(pt, "resource.maritalStatus"));
    assert_null(fhir_node_path(pt, "resource.generalPractitioner"));
    assert_int_equal(fhir_node_count(fhir_node_path(pt, "resource.identifier")), 2);
    assert_string_equal(fhir_node_path_str(pt, "resource.identifier.assigner.display"),
                        "not included in the referral");
    /* references: to the patient rewritten (relative and absolute); others display-only */
    assert_string_equal(fhir_node_path_str(entry_of(b, "Condition"), "resource.subject.reference"), pt_urn);
    assert_null(fhir_node_path(entry_of(b, "Condition"), "resource.encounter.reference"));
    const fhir_node *med = entry_of(b, "MedicationRequest");
    assert_string_equal(fhir_node_path_str(med, "resource.subject.reference"), pt_urn);
    assert_string_equal(fhir_node_path_str(entry_of(b, "Coverage"), "resource.payor.display"),
                        "Medicare");
    /* the summary and the verdict are base64 attachments */
    const fhir_node *doc = entry_of(b, "DocumentReference");
    assert_string_equal(fhir_node_path_str(doc, "resource.content[1].attachment.contentType"),
                        "application/json");
    assert_string_equal(fhir_node_path_str(doc, "resource.content[1].attachment.data"),
                        "eyJjYXRlZ29yeSI6ImVsaWdpYmxlIn0="); /* {"category":"eligible"} */

    /* deterministic: the same input gives the same bytes */
    char *j1 = fhir_json_to_string(b, FHIR_JSON_COMPACT, 0);
    fhir_node *b2 = build(a, d, &err);
    char *j2 = fhir_json_to_string(b2, FHIR_JSON_COMPACT, 0);
    assert_string_equal(j1, j2);
    /* no PHI of the EHR leaks through narrative */
    assert_null(strstr(j1, "xhtml"));
    free(j1);
    free(j2);
    centers_free(d);
    fhir_arena_free(a);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    bser_input in = {0};
    assert_null(bser_build(a, &in, &err));
    assert_non_null(strstr(err.msg, "needs"));
    fhir_arena_free(a);
}

static void test_response_refs(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    const char *req = "{\"entry\":[{\"resource\":{\"resourceType\":\"Patient\"}},"
                      "{\"resource\":{\"resourceType\":\"ServiceRequest\"}},"
                      "{\"resource\":{\"resourceType\":\"Task\"}}]}";
    const char *res = "{\"entry\":[{\"response\":{\"status\":\"201\",\"location\":\"Patient/1/_history/1\"}},"
                      "{\"response\":{\"status\":\"200\",\"location\":\"http://x/fhir/ServiceRequest/abc/_history/2\"}},"
                      "{\"response\":{\"status\":\"201\"},\"resource\":{\"resourceType\":\"Task\",\"id\":\"t9\"}}]}";
    char sr[256], task[256];
    assert_int_equal(bser_response_refs(P(a, req), P(a, res), sr, task, &err), 0);
    assert_string_equal(sr, "ServiceRequest/abc");
    assert_string_equal(task, "Task/t9");
    const char *short_res = "{\"entry\":[{\"response\":{\"status\":\"201\"}}]}";
    assert_int_equal(bser_response_refs(P(a, req), P(a, short_res), sr, task, &err), -1);
    fhir_arena_free(a);
}

/* Medication rows and their drugs: a referenced Medication is copied once (given twice, named
 * relatively and absolutely) and the rows point at its entry; a contained Medication named by
 * "#id" stays contained (other contained resources do not); a reference to a Medication the
 * Bundle lacks keeps only its display; each row's drug is named in plain words. */
static void test_medication_rows_keep_their_drug(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    centers_dir *d = centers_load_mem("dir.json", dir_json, strlen(dir_json), &err);
    assert_non_null(d);
    const fhir_node *med[6], *drugs[2];
    med[0] = P(a, "{\"resourceType\":\"MedicationAdministration\",\"id\":\"ma-1\",\"status\":\"completed\","
                  "\"medicationReference\":{\"reference\":\"Medication/ritux\"},\"effectiveDateTime\":\"2025-01-02\"}");
    med[1] = P(a, "{\"resourceType\":\"MedicationAdministration\",\"id\":\"ma-2\",\"status\":\"completed\","
                  "\"medicationReference\":{\"reference\":\"http://ehr.example.org/fhir/Medication/ritux\","
                  "\"display\":\"Rituxan\"}}");
    med[2] = P(a, "{\"resourceType\":\"MedicationRequest\",\"id\":\"mr-3\",\"status\":\"completed\",\"intent\":\"order\","
                  "\"contained\":[{\"resourceType\":\"Practitioner\",\"id\":\"p\"},{\"resourceType\":\"Medication\","
                  "\"id\":\"c1\",\"meta\":{\"versionId\":\"2\"},\"code\":{\"coding\":[{\"system\":\"http://www.nlm.nih.gov/research/umls/rxnorm\","
                  "\"code\":\"1747556\"},{\"display\":\"venetoclax 100 MG Oral Tablet\"}]}}],"
                  "\"medicationReference\":{\"reference\":\"#c1\"},\"recorder\":{\"reference\":\"#p\"}}");
    med[3] = P(a, "{\"resourceType\":\"MedicationStatement\",\"id\":\"ms-4\",\"status\":\"completed\","
                  "\"medicationReference\":{\"reference\":\"Medication/gone\",\"display\":\"bendamustine\"}}");
    med[4] = P(a, "{\"resourceType\":\"MedicationStatement\",\"id\":\"ms-5\",\"status\":\"completed\","
                  "\"medicationReference\":{\"reference\":\"Medication/gone\"}}");
    med[5] = P(a, "{\"resourceType\":\"MedicationRequest\",\"id\":\"mr-6\",\"status\":\"completed\",\"intent\":\"order\","
                  "\"medicationCodeableConcept\":{\"coding\":[{\"code\":\"x\"},{\"display\":\"polatuzumab vedotin\"}]}}");
    drugs[0] = drugs[1] = P(a, "{\"resourceType\":\"Medication\",\"id\":\"ritux\",\"meta\":{\"versionId\":\"7\"},"
                               "\"code\":{\"text\":\"rituximab\"},\"manufacturer\":{\"reference\":\"Organization/m\"}}");
    bser_input in = {
        .id_system_base = "urn:cartgate:community-1", .placer_id = "CG-0123456789abcdef0123456789abcdef",
        .site_id = "community-1", .center = &d->centers[0], .patient_id = "pseudo-42",
        .patient = P(a, bser_test_patient), .medications = med, .n_medications = 6, .drugs = drugs, .n_drugs = 2,
        .urgency = "routine", .authored_ms = 1795000000000LL,
    };
    fhir_node *b = bser_build(a, &in, &err);
    if (!b)
        fail_msg("%s", err.msg);
    const fhir_node *rows[6], *drug = NULL;
    size_t nrows = 0, ndrugs = 0;
    for (const fhir_node *e = fhir_node_first(fhir_node_get(b, "entry")); e; e = e->next) {
        const char *t = fhir_node_path_str(e, "resource.resourceType");
        if (!strcmp(t, "Medication")) {
            ndrugs++;
            drug = e;
        } else if (!strncmp(t, "Medication", 10)) {
            assert_true(nrows < 6);
            rows[nrows++] = fhir_node_get(e, "resource");
        }
    }
    assert_int_equal(ndrugs, 1);
    assert_int_equal(nrows, 6);
    const char *urn = fhir_node_path_str(drug, "fullUrl");
    assert_string_equal(fhir_node_path_str(drug, "resource.code.text"), "rituximab");
    assert_null(fhir_node_path(drug, "resource.meta"));
    assert_null(fhir_node_path(drug, "resource.id"));
    assert_string_equal(fhir_node_path_str(drug, "request.ifNoneExist"), "identifier=urn:cartgate:community-1:source|Medication.ritux");
    assert_null(fhir_node_path(drug, "resource.manufacturer.reference"));
    assert_string_equal(fhir_node_path_str(rows[0], "medicationReference.reference"), urn);
    assert_string_equal(fhir_node_path_str(rows[1], "medicationReference.reference"), urn);
    assert_string_equal(fhir_node_path_str(rows[1], "medicationReference.display"), "Rituxan");
    /* contained: only the Medication the row names, with its id, without meta */
    assert_int_equal(fhir_node_count(fhir_node_get(rows[2], "contained")), 1);
    assert_string_equal(fhir_node_path_str(rows[2], "contained.resourceType"), "Medication");
    assert_string_equal(fhir_node_path_str(rows[2], "contained.id"), "c1");
    assert_null(fhir_node_path(rows[2], "contained.meta"));
    assert_string_equal(fhir_node_path_str(rows[2], "medicationReference.reference"), "#c1");
    assert_null(fhir_node_path(rows[2], "recorder.reference"));
    assert_null(fhir_node_path(rows[3], "medicationReference.reference"));
    assert_string_equal(fhir_node_path_str(rows[3], "medicationReference.display"), "bendamustine");
    assert_string_equal(fhir_node_path_str(rows[4], "medicationReference.display"), BSER_NOT_INCLUDED);
    /* the drug of each row, in words */
    assert_string_equal(bser_medication_name(b, rows[0]), "rituximab");
    assert_string_equal(bser_medication_name(b, rows[1]), "rituximab");
    assert_string_equal(bser_medication_name(b, rows[2]), "venetoclax 100 MG Oral Tablet");
    assert_string_equal(bser_medication_name(b, rows[3]), "bendamustine");
    assert_string_equal(bser_medication_name(b, rows[4]), BSER_MEDICATION_UNNAMED);
    assert_string_equal(bser_medication_name(b, rows[5]), "polatuzumab vedotin");
    /* as received at a center, references rewritten to "Medication/<id>": found by id too */
    const fhir_node *at_center = P(a, "{\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":{\"resourceType\":"
                                      "\"Medication\",\"id\":\"17\",\"code\":{\"text\":\"tafasitamab\"}}}]}");
    const fhir_node *row = P(a, "{\"resourceType\":\"MedicationRequest\",\"medicationReference\":{\"reference\":\"Medication/17\"}}");
    assert_string_equal(bser_medication_name(at_center, row), "tafasitamab");
    assert_string_equal(bser_medication_name(NULL, row), BSER_MEDICATION_UNNAMED);
    /* a drug that is not a Medication is refused */
    drugs[1] = med[0];
    assert_null(bser_build(a, &in, &err));
    assert_non_null(strstr(err.msg, "Medication"));
    centers_free(d);
    fhir_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bundle_shape),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_response_refs),
        cmocka_unit_test(test_medication_rows_keep_their_drug),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
