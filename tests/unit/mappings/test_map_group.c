/* Tests for mappings/map_group (grouping by patient across Bundles, NDJSON files and folders)
 * and the shared public data: every Synthea bundle and the bulk NDJSON export profile without
 * error, and their colon, prostate, lung and breast cancers are recognised as non_heme. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fhir_json.h"
#include "map_group.h"
#include "map_profile.h"

static map_tables *T;
static char dir[256];

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

static void write_file(const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void mk_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/cartgate-grouptest-XXXXXX");
    assert_non_null(mkdtemp(dir));
}

static void rm_dir(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static size_t find_patient(map_group *g, const char *id)
{
    for (size_t i = 0; i < map_group_count(g); i++)
        if (!strcmp(map_group_patient_id(g, i), id))
            return i;
    fail_msg("patient %s not grouped", id);
    return 0;
}

static void test_ndjson_folder_grouped_across_files(void **s)
{
    (void)s;
    mk_dir();
    write_file("Patient.000.ndjson",
               "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n{\"resourceType\":\"Patient\",\"id\":\"b\"}\n");
    write_file("Condition.000.ndjson",
               "{\"resourceType\":\"Condition\",\"id\":\"c1\",\"subject\":{\"reference\":\"Patient/b\"},"
               "\"code\":{\"coding\":[{\"system\":\"http://hl7.org/fhir/sid/icd-10-cm\",\"code\":\"C90.00\"}]},"
               "\"onsetDateTime\":\"2022-01-01\"}\n"
               "not json at all\n"
               "{\"resourceType\":\"Condition\",\"id\":\"c2\",\"subject\":{\"reference\":\"https://ehr.example/fhir/Patient/a/_history/3\"},"
               "\"code\":{\"coding\":[{\"system\":\"http://hl7.org/fhir/sid/icd-10-cm\",\"code\":\"C83.10\"}]},"
               "\"onsetDateTime\":\"2022-01-01\"}\n");
    write_file("Medication.000.ndjson",
               "{\"resourceType\":\"Medication\",\"id\":\"ibr\",\"code\":{\"coding\":[{\"system\":"
               "\"http://www.nlm.nih.gov/research/umls/rxnorm\",\"code\":\"1442981\"}]}}\n");
    write_file("MedicationRequest.000.ndjson",
               "{\"resourceType\":\"MedicationRequest\",\"id\":\"m1\",\"status\":\"active\",\"intent\":\"order\","
               "\"subject\":{\"reference\":\"Patient/a\"},\"medicationReference\":{\"reference\":\"Medication/ibr\"},"
               "\"authoredOn\":\"2023-01-01\"}\n"
               "{\"resourceType\":\"MedicationRequest\",\"id\":\"m2\",\"status\":\"active\",\"intent\":\"order\","
               "\"subject\":{\"reference\":\"Patient/zz\"},\"medicationCodeableConcept\":{\"text\":\"ibrutinib\"},"
               "\"authoredOn\":\"2023-01-01\"}\n");
    write_file("Encounter.000.ndjson",
               "{\"resourceType\":\"Encounter\",\"id\":\"e1\",\"subject\":{\"reference\":\"Patient/a\"}}\n");
    write_file("notes.txt", "ignored\n");
    map_group *g = map_group_new(NULL);
    fhir_error err;
    fhir_error_clear(&err);
    if (map_group_add_path(g, dir, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(map_group_count(g), 3); /* a, b and zz (referenced only) */
    assert_int_equal(map_group_bad_lines(g), 1);
    size_t ia = find_patient(g, "a"), n;
    const fhir_node *const *res = map_group_resources(g, ia, &n);
    assert_int_equal(n, 4); /* Patient first, Condition, MedicationRequest, the Medication */
    assert_string_equal(fhir_node_resource_type(res[0]), "Patient");
    map_profile_opts o;
    map_profile_opts_default(&o);
    o.as_of_days = 19500;
    map_profile *p = map_profile_build(T, res, n, &o, &err);
    assert_non_null(p);
    assert_string_equal(map_profile_fact(p, "primary_disease")->str, "mcl");
    assert_true(map_profile_fact(p, "lines")->num == 1);
    assert_string_equal(map_profile_fact(p, "prior_classes")->set[0], "btki");
    map_profile_free(p);
    res = map_group_resources(g, find_patient(g, "b"), &n);
    assert_int_equal(n, 2);
    map_group_free(g);
    rm_dir();
}

static void test_bundle_urn_references(void **s)
{
    (void)s;
    mk_dir();
    write_file("b.json",
               "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":["
               "{\"fullUrl\":\"urn:uuid:1111\",\"resource\":{\"resourceType\":\"Patient\",\"id\":\"pat-1\"}},"
               "{\"fullUrl\":\"urn:uuid:2222\",\"resource\":{\"resourceType\":\"Medication\",\"id\":\"med-9\","
               "\"code\":{\"text\":\"Revlimid\"}}},"
               "{\"fullUrl\":\"urn:uuid:3333\",\"resource\":{\"resourceType\":\"MedicationStatement\",\"id\":\"ms\","
               "\"status\":\"completed\",\"subject\":{\"reference\":\"urn:uuid:1111\"},"
               "\"medicationReference\":{\"reference\":\"urn:uuid:2222\"},\"effectiveDateTime\":\"2023-01-01\"}}]}");
    map_group *g = map_group_new(NULL);
    fhir_error err;
    fhir_error_clear(&err);
    char path[400];
    snprintf(path, sizeof path, "%s/b.json", dir);
    if (map_group_add_path(g, path, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(map_group_count(g), 1);
    assert_string_equal(map_group_patient_id(g, 0), "pat-1");
    size_t n;
    const fhir_node *const *res = map_group_resources(g, 0, &n);
    assert_int_equal(n, 3);
    assert_string_equal(fhir_node_resource_type(res[0]), "Patient");
    map_group_free(g);
    /* a broken file names itself */
    write_file("bad.json", "{\"resourceType\":\"Bundle\",");
    g = map_group_new(NULL);
    snprintf(path, sizeof path, "%s/bad.json", dir);
    assert_int_equal(map_group_add_path(g, path, &err), -1);
    assert_non_null(strstr(err.msg, "bad.json"));
    map_group_free(g);
    rm_dir();
}

/* ---- shared public data ---- */

static int profile_all(map_group *g, int *non_heme_patients)
{
    map_profile_opts o;
    map_profile_opts_default(&o);
    int nh = 0;
    for (size_t i = 0; i < map_group_count(g); i++) {
        size_t n;
        const fhir_node *const *res = map_group_resources(g, i, &n);
        fhir_error err;
        fhir_error_clear(&err);
        map_profile *p = map_profile_build(T, res, n, &o, &err);
        if (!p)
            fail_msg("patient %s: %s", map_group_patient_id(g, i), err.msg);
        const map_fact *d = map_profile_fact(p, "diseases");
        for (size_t k = 0; k < d->nset; k++) {
            if (strcmp(d->set[k], "non_heme"))
                fail_msg("patient %s: unexpected disease %s (%s)", map_group_patient_id(g, i), d->set[k], d->evidence);
            nh++;
        }
        fhir_buf b;
        fhir_buf_init(&b, 1 << 22);
        assert_int_equal(map_profile_write_json(p, &b, 0), 0);
        fhir_arena *a = fhir_arena_new(0);
        if (!fhir_json_parse(a, b.data, b.len, NULL, &err))
            fail_msg("profile JSON of %s: %s", map_group_patient_id(g, i), err.msg);
        fhir_arena_free(a);
        fhir_buf_free(&b);
        map_profile_free(p);
    }
    *non_heme_patients = nh;
    return 0;
}

/* Every cancer Condition in the data maps to non_heme (resolved ones too: the mapping is
 * checked directly, the profile keeps only active diagnoses). */
static int check_cancer_conditions(map_group *g)
{
    int found = 0;
    for (size_t i = 0; i < map_group_count(g); i++) {
        size_t n;
        const fhir_node *const *res = map_group_resources(g, i, &n);
        for (size_t k = 0; k < n; k++) {
            const char *t = fhir_node_resource_type(res[k]);
            if (!t || strcmp(t, "Condition"))
                continue;
            const char *disp = fhir_node_path_str(res[k], "code.coding.display");
            if (!disp || (!strstr(disp, "colon") && !strstr(disp, "prostate") && !strstr(disp, "lung") &&
                          !strstr(disp, "breast")))
                continue;
            if (strstr(disp, "Suspected") ||
                (!strstr(disp, "neoplasm") && !strstr(disp, "Neoplasm") && !strstr(disp, "cancer") &&
                 !strstr(disp, "carcinoma") && !strstr(disp, "Carcinoma")))
                continue; /* polyps, screening findings ... */
            map_dx dx;
            const char *sys = fhir_node_path_str(res[k], "code.coding.system");
            const char *code = fhir_node_path_str(res[k], "code.coding.code");
            if (!map_dx_lookup(T, sys, code, disp, &dx) || strcmp(dx.concept, "non_heme")) {
                if (!strstr(disp, "Neoplasm of prostate")) /* generic "neoplasm": not necessarily malignant */
                    fail_msg("%s %s not non_heme", code, disp);
                continue;
            }
            found++;
            if (getenv("MAP_TEST_VERBOSE"))
                fprintf(stderr, "cancer: %s %s\n", code, disp);
        }
    }
    return found;
}

static void test_shared_synthea_bundles(void **s)
{
    (void)s;
    const char *base = getenv("CARTGATE_SHARED_DATA");
    char path[512];
    struct stat st;
    if (!base || snprintf(path, sizeof path, "%s/synthea-r4-patient-bundles", base) <= 0 ||
        stat(path, &st) != 0) {
        skip();
        return;
    }
    map_group *g = map_group_new(NULL);
    fhir_error err;
    fhir_error_clear(&err);
    if (map_group_add_path(g, path, &err))
        fail_msg("%s", err.msg);
    assert_true(map_group_count(g) >= 12);
    int nh = 0;
    profile_all(g, &nh);
    assert_true(nh >= 3); /* active: lung (Austin), colon (Florentino), prostate (Andy) */
    int cancers = check_cancer_conditions(g);
    if (cancers < 6)
        fail_msg("only %d cancer Conditions recognised", cancers); /* incl. the two resolved colon cancers */
    map_group_free(g);
}

static void test_shared_bulk_ndjson(void **s)
{
    (void)s;
    const char *base = getenv("CARTGATE_SHARED_DATA");
    char path[512];
    struct stat st;
    if (!base || snprintf(path, sizeof path, "%s/bulk-ndjson-synthea", base) <= 0 || stat(path, &st) != 0) {
        skip();
        return;
    }
    static const char *const sub[] = {"10-patients", "100-patients-partial"};
    for (size_t k = 0; k < 2; k++) {
        char p2[600];
        snprintf(p2, sizeof p2, "%s/%s", path, sub[k]);
        if (stat(p2, &st) != 0)
            continue;
        map_group *g = map_group_new(NULL);
        fhir_error err;
        fhir_error_clear(&err);
        if (map_group_add_path(g, p2, &err))
            fail_msg("%s", err.msg);
        assert_true(map_group_count(g) >= 10);
        int nh = 0;
        profile_all(g, &nh);
        if (k == 0) {
            assert_int_equal(map_group_count(g), 13);
            assert_int_equal(nh, 1); /* one patient with NSCLC and breast cancer */
            assert_true(check_cancer_conditions(g) >= 3);
        }
        map_group_free(g);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ndjson_folder_grouped_across_files),
        cmocka_unit_test(test_bundle_urn_references),
        cmocka_unit_test(test_shared_synthea_bundles),
        cmocka_unit_test(test_shared_bulk_ndjson),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
