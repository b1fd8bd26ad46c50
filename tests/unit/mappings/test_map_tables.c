/* Tests for mappings/map_tables: every mapping rule (diagnoses, labs and units, drugs,
 * procedures, coded answers) and loader errors with file:line. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "map_tables.h"

static map_tables *T;

static int setup(void **state)
{
    (void)state;
    fhir_error err;
    fhir_error_clear(&err);
    T = map_tables_load(NULL, &err);
    if (!T) {
        fprintf(stderr, "load: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    map_tables_free(T);
    return 0;
}

static const char *dx(const char *sys, const char *code, const char *display)
{
    map_dx d;
    if (!map_dx_lookup(T, sys, code, display, &d))
        return NULL;
    return d.concept;
}

/* ---- diagnoses ---- */

static void test_dx_icd10_prefix_with_and_without_dot(void **s)
{
    (void)s;
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C83.30", NULL), "dlbcl_nos");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C8330", NULL), "dlbcl_nos");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "c83.38", NULL), "dlbcl_nos");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C83.3A", NULL), "dlbcl_nos");
    assert_null(dx(MAP_SYS_ICD10CM, "C83.2", NULL)); /* not a row; no name */
    assert_null(dx(MAP_SYS_ICD10CM, "E11.9", NULL));
}

static void test_dx_longest_prefix_pcnsl(void **s)
{
    (void)s;
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C83.390", NULL), "pcnsl");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C83.398", NULL), "dlbcl_nos");
    /* historical C83.39: DLBCL unless the text says PCNSL (unconfirmed split: names) */
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C83.39", "Diffuse large B-cell lymphoma, extranodal"), "dlbcl_nos");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C83.39", "Primary central nervous system lymphoma"), "pcnsl");
}

static void test_dx_name_override_on_convention_codes(void **s)
{
    (void)s;
    /* HGBL and transformed FL are coded C83.3x by convention: display decides */
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C83.38", "High-grade B-cell lymphoma with MYC and BCL2 rearrangements"), "hgbcl");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C83.30", "DLBCL transformed from follicular lymphoma"), "tfl");
    /* a generic word never downgrades a specific code */
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C83.30", "lymphoma"), "dlbcl_nos");
    /* C83.0x: SLL by code, MZL by name */
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C83.00", NULL), "cll_sll");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C83.07", "Splenic marginal zone lymphoma"), "mzl");
    /* codes without override keep their concept whatever the text */
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C90.00", "lymphoma"), "mm");
}

static void test_dx_icd10_diseases(void **s)
{
    (void)s;
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C85.20", NULL), "pmbcl");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C82.40", NULL), "fl_3b");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C82.39", NULL), "fl");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C82.0A", NULL), "fl");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C83.10", NULL), "mcl");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C88.4", NULL), "mzl");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C88.40", NULL), "mzl");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C91.10", NULL), "cll_sll");
    /* C91.0x does not say B or T lineage (update-2026-12.md §6): all_nos, B-ALL stays possible */
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C91.00", NULL), "all_nos");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C91.02", "B-cell acute lymphoblastic leukemia"), "b_all");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C91.00", "T-cell acute lymphoblastic leukemia"), "other_heme");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C90.02", NULL), "mm");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C90.10", NULL), "pcl");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C90.20", NULL), "other_heme");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "C79.31", NULL), "cns_secondary");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "Z92.850", NULL), "hx_car_t");
    assert_string_equal(dx(MAP_SYS_ICD10CM, "Z94.84", NULL), "hx_hct");
}

static void test_dx_snomed_and_system_guess(void **s)
{
    (void)s;
    assert_string_equal(dx(MAP_SYS_SNOMED, "109969005", NULL), "dlbcl_nos");
    assert_string_equal(dx(MAP_SYS_SNOMED, "1172704005", NULL), "hgbcl");
    assert_string_equal(dx(MAP_SYS_SNOMED, "444910004", NULL), "pmbcl");
    assert_string_equal(dx(MAP_SYS_SNOMED, "1148845007", NULL), "fl_3b");
    assert_string_equal(dx(MAP_SYS_SNOMED, "92814006", NULL), "cll_sll");
    assert_string_equal(dx(MAP_SYS_SNOMED, "277571004", NULL), "b_all");
    assert_string_equal(dx(MAP_SYS_SNOMED, "109989006", NULL), "mm");
    assert_string_equal(dx(MAP_SYS_SNOMED, "413587002", NULL), "other_heme"); /* smoldering */
    assert_string_equal(dx(MAP_SYS_SNOMED, "276836002", NULL), "pcnsl");
    assert_string_equal(dx(MAP_SYS_SNOMED, "402356004", NULL), "hx_allo");
    /* no system: code shape decides */
    assert_string_equal(dx(NULL, "C83.10", NULL), "mcl");
    assert_string_equal(dx(NULL, "443487006", NULL), "mcl");
    /* ICD-10-CM code under a SNOMED system is not an ICD match */
    assert_null(dx(MAP_SYS_SNOMED, "C8310", NULL));
}

/* Codes that leave the lineage, histology or grade open say so (diagnoses.tsv `unspecified`). */
static void test_dx_unspecified(void **s)
{
    (void)s;
    map_dx d;
    assert_true(map_dx_lookup(T, MAP_SYS_ICD10CM, "C91.02", NULL, &d));
    assert_string_equal(d.concept, "all_nos");
    assert_string_equal(d.unspec_axis, "lineage");
    assert_int_equal(d.nunspec, 1);
    assert_string_equal(d.unspec[0], "b_all");
    assert_true(map_dx_lookup(T, MAP_SYS_ICDO3, "9835/3", NULL, &d));
    assert_string_equal(d.unspec_axis, "lineage");
    assert_true(map_dx_lookup(T, MAP_SYS_SNOMED, "91857003", NULL, &d));
    assert_string_equal(d.concept, "all_nos");
    /* a specific code says nothing is open */
    assert_true(map_dx_lookup(T, MAP_SYS_SNOMED, "277571004", NULL, &d));
    assert_null(d.unspec_axis);
    assert_int_equal(d.nunspec, 0);
    assert_true(map_dx_lookup(T, MAP_SYS_ICD10CM, "C85.18", "B-cell lymphoma, unspecified", &d));
    assert_string_equal(d.concept, "other_heme");
    assert_string_equal(d.unspec_axis, "histology");
    assert_true(d.nunspec >= 6);
    /* a histology name settles it */
    assert_true(map_dx_lookup(T, MAP_SYS_ICD10CM, "C85.18", "Diffuse large B-cell lymphoma", &d));
    assert_string_equal(d.concept, "dlbcl_nos");
    assert_null(d.unspec_axis);
    assert_true(map_dx_lookup(T, MAP_SYS_ICD10CM, "C82.29", NULL, &d));
    assert_string_equal(d.concept, "fl");
    assert_string_equal(d.unspec_axis, "grade");
    assert_string_equal(d.unspec[0], "fl_3b");
}

static void test_dx_icdo3(void **s)
{
    (void)s;
    assert_string_equal(dx(MAP_SYS_ICDO3, "9680/3", NULL), "dlbcl_nos");
    assert_string_equal(dx(MAP_SYS_ICDO3, "9680", NULL), "dlbcl_nos");
    assert_string_equal(dx(MAP_SYS_ICDO3, "9679/3", NULL), "pmbcl");
    assert_string_equal(dx(MAP_SYS_ICDO3, "9732/3", NULL), "mm");
    assert_string_equal(dx(MAP_SYS_ICDO3, "9811/3", NULL), "b_all");
    assert_string_equal(dx(MAP_SYS_ICDO3, "9836/3", NULL), "b_all");
    assert_string_equal(dx(MAP_SYS_ICDO3, "9835/3", NULL), "all_nos"); /* lineage unspecified */
    assert_string_equal(dx(MAP_SYS_ICDO3, "9837/3", NULL), "other_heme"); /* T-ALL */
    assert_string_equal(dx(MAP_SYS_ICDO3, "9680/3", "Double hit lymphoma"), "hgbcl");
}

static void test_dx_names(void **s)
{
    (void)s;
    assert_string_equal(dx(NULL, NULL, "Follicular lymphoma grade 3B"), "fl_3b");
    assert_string_equal(dx(NULL, NULL, "Hodgkin lymphoma, nodular sclerosis"), "hl");
    assert_string_equal(dx(NULL, NULL, "Non-Hodgkin lymphoma"), "other_heme");
    assert_string_equal(dx(NULL, NULL, "Multiple myeloma"), "mm");
    assert_string_equal(dx(NULL, NULL, "Smoldering multiple myeloma"), "other_heme");
    assert_string_equal(dx(NULL, NULL, "Plasma cell leukemia"), "pcl");
    /* solid cancers by name (Synthea displays) */
    assert_string_equal(dx(MAP_SYS_SNOMED, "93761005", "Primary malignant neoplasm of colon"), "non_heme");
    assert_string_equal(dx(MAP_SYS_SNOMED, "254637007", "Non-small cell lung cancer (disorder)"), "non_heme");
    assert_string_equal(dx(MAP_SYS_SNOMED, "92691004", "Carcinoma in situ of prostate (disorder)"), "non_heme");
    assert_string_equal(dx(MAP_SYS_SNOMED, "254837009", "Malignant neoplasm of breast (disorder)"), "non_heme");
    assert_string_equal(dx(MAP_SYS_SNOMED, "162573006", "Suspected lung cancer (situation)"), "ignore");
    assert_null(dx(MAP_SYS_SNOMED, "44054006", "Diabetes"));
    /* markers by name */
    assert_string_equal(dx(NULL, NULL, "Sepsis due to E. coli"), "infection");
    assert_string_equal(dx(NULL, NULL, "Not a transplant candidate (age)"), "hct_ineligible");
    assert_string_equal(dx(NULL, NULL, "Personal history of Chimeric Antigen Receptor T-cell therapy"), "hx_car_t");
}

/* ---- labs and units ---- */

static double conv(const char *loinc, double v, const char *unit, map_lab_status *st)
{
    const map_lab_def *d = map_lab_lookup(T, MAP_SYS_LOINC, loinc);
    assert_non_null(d);
    double out = NAN;
    *st = map_lab_normalize(T, d, v, unit, &out);
    return out;
}

static void test_lab_lookup(void **s)
{
    (void)s;
    const map_lab_def *d = map_lab_lookup(T, MAP_SYS_LOINC, "26499-4");
    assert_non_null(d);
    assert_string_equal(d->analyte, "anc");
    assert_string_equal(d->unit, "10*3/uL");
    assert_string_equal(map_lab_lookup(T, NULL, "751-8")->analyte, "anc");
    assert_string_equal(map_lab_lookup(T, NULL, "777-3")->analyte, "platelets");
    assert_string_equal(map_lab_lookup(T, NULL, "14682-9")->analyte, "creatinine");
    assert_string_equal(map_lab_lookup(T, NULL, "10230-1")->analyte, "lvef");
    assert_string_equal(map_lab_lookup(T, MAP_SYS_SNOMED, "423740007")->analyte, "ecog");
    assert_null(map_lab_lookup(T, NULL, "33944-8")); /* codes.md trap: not a LOINC code */
    assert_null(map_lab_lookup(T, NULL, "0000-0"));
}

static void test_unit_conversions(void **s)
{
    (void)s;
    map_lab_status st;
    assert_true(fabs(conv("26499-4", 1500, "/uL", &st) - 1.5) < 1e-9);
    assert_int_equal(st, MAP_LAB_OK);
    assert_true(fabs(conv("26499-4", 1.5, "10*9/L", &st) - 1.5) < 1e-9);
    assert_true(fabs(conv("26499-4", 1.5, "K/uL", &st) - 1.5) < 1e-9);
    assert_true(fabs(conv("777-3", 150000, "/mm3", &st) - 150) < 1e-9);
    assert_true(fabs(conv("718-7", 120, "g/L", &st) - 12.0) < 1e-9);
    assert_true(fabs(conv("718-7", 7.45, "mmol/L", &st) - 12.00195) < 1e-4);
    assert_true(fabs(conv("14682-9", 88.4, "umol/L", &st) - 1.0) < 1e-4);
    assert_true(fabs(conv("2160-0", 176.8, "µmol/L", &st) - 2.0) < 1e-3);
    assert_true(fabs(conv("1975-2", 17.1, "umol/L", &st) - 1.0) < 1e-4);
    assert_true(fabs(conv("1742-6", 1, "ukat/L", &st) - 60) < 1e-9);
    assert_true(fabs(conv("1920-8", 40, "IU/L", &st) - 40) < 1e-9);
    assert_true(fabs(conv("10230-1", 0.55, "1", &st) - 55) < 1e-9);
    assert_true(fabs(conv("2164-2", 1.5, "mL/s", &st) - 90) < 1e-9);
    assert_true(fabs(conv("29463-7", 154, "[lb_av]", &st) - 69.853) < 1e-3);
    assert_true(fabs(conv("8302-2", 70, "[in_i]", &st) - 177.8) < 1e-9);
    /* case-insensitive fallback */
    assert_true(fabs(conv("2160-0", 1.1, "MG/DL", &st) - 1.1) < 1e-9);
    assert_int_equal(st, MAP_LAB_OK);
}

static void test_unit_unknown_and_implausible(void **s)
{
    (void)s;
    map_lab_status st;
    conv("2160-0", 1.1, NULL, &st);
    assert_int_equal(st, MAP_LAB_UNIT_UNKNOWN);
    conv("2160-0", 1.1, "furlongs", &st);
    assert_int_equal(st, MAP_LAB_UNIT_UNKNOWN);
    /* mCODE's own example: ANC 3000 '10*3/uL' is cells/uL: flagged, not divided */
    double v = conv("26499-4", 3000, "10*3/uL", &st);
    assert_int_equal(st, MAP_LAB_IMPLAUSIBLE);
    assert_true(fabs(v - 3000) < 1e-9);
    /* creatinine 90 mg/dL is really umol/L: flagged */
    conv("2160-0", 90, "mg/dL", &st);
    assert_int_equal(st, MAP_LAB_IMPLAUSIBLE);
    conv("10230-1", 55, "1", &st); /* 5500 % */
    assert_int_equal(st, MAP_LAB_IMPLAUSIBLE);
}

static void test_answers(void **s)
{
    (void)s;
    assert_string_equal(map_answer_lookup(T, "status", MAP_SYS_SNOMED, "271299001"), "progression");
    assert_string_equal(map_answer_lookup(T, "status", MAP_SYS_SNOMED, "268910001"), "response");
    assert_string_equal(map_answer_lookup(T, "status", MAP_SYS_SNOMED, "550991000124107"), "response");
    assert_string_equal(map_answer_lookup(T, "status", MAP_SYS_SNOMED, "359746009"), "stable");
    assert_string_equal(map_answer_lookup(T, "ecog", MAP_SYS_LOINC, "LA9624-3"), "2");
    assert_string_equal(map_answer_lookup(T, "karnofsky", MAP_SYS_LOINC, "LA29177-5"), "80");
    assert_string_equal(map_answer_lookup(T, "karnofsky", MAP_SYS_LOINC, "LA9627-6"), "0");
    assert_string_equal(map_answer_lookup(T, "ecog", MAP_SYS_LOINC, "LA9627-6"), "5");
    assert_null(map_answer_lookup(T, "status", MAP_SYS_SNOMED, "1"));
}

/* ---- drugs ---- */

static void test_drug_codes(void **s)
{
    (void)s;
    const map_drug *d = map_drug_lookup_code(T, MAP_SYS_RXNORM, "121191");
    assert_non_null(d);
    assert_string_equal(d->ingredient, "rituximab");
    assert_true(d->classes & (1u << MAP_CLASS_ANTI_CD20));
    assert_true(map_drug_maintenance(d));
    /* biosimilar and PIN codes map to the ingredient */
    assert_string_equal(map_drug_lookup_code(T, NULL, "2105824")->ingredient, "rituximab");
    assert_string_equal(map_drug_lookup_code(T, NULL, "1114693")->ingredient, "bendamustine");
    assert_string_equal(map_drug_lookup_code(T, NULL, "2375130")->ingredient, "daratumumab");
    assert_string_equal(map_drug_lookup_code(T, NULL, "2536430")->role, "car_t");
    assert_true(map_drug_lookup_code(T, NULL, "2536430")->classes & (1u << MAP_CLASS_BCMA_DIRECTED));
    assert_string_equal(map_drug_lookup_code(T, NULL, "3264")->role, "steroid");
    assert_string_equal(map_drug_subst_group(map_drug_lookup_code(T, NULL, "40048")), "platinum");
    assert_null(map_drug_lookup_code(T, MAP_SYS_SNOMED, "121191"));
    assert_null(map_drug_lookup_code(T, NULL, "314076")); /* lisinopril */
}

static void test_drug_text(void **s)
{
    (void)s;
    assert_string_equal(map_drug_lookup_text(T, "Cisplatin 50 MG/ML Injectable Solution")->ingredient, "cisplatin");
    assert_string_equal(map_drug_lookup_text(T, "REVLIMID 10 MG capsule")->ingredient, "lenalidomide");
    assert_string_equal(map_drug_lookup_text(T, "Darzalex Faspro 1800 mg")->ingredient, "daratumumab");
    assert_string_equal(map_drug_lookup_text(T, "polatuzumab vedotin-piiq")->ingredient, "polatuzumab vedotin");
    const map_drug *gl = map_drug_lookup_text(T, "Columvi (glofitamab-gxbm)");
    assert_string_equal(gl->ingredient, "glofitamab");
    assert_true(gl->classes & (1u << MAP_CLASS_BISPECIFIC));
    assert_true(gl->classes & (1u << MAP_CLASS_ANTI_CD20));
    assert_string_equal(map_drug_lookup_text(T, "Yescarta suspension")->role, "car_t");
    /* whole words only */
    assert_null(map_drug_lookup_text(T, "Xrituximabz"));
    assert_null(map_drug_lookup_text(T, "lisinopril 10 MG Oral Tablet"));
    assert_true(map_tables_has_ingredient(T, "lenalidomide"));
    assert_false(map_tables_has_ingredient(T, "aspirin"));
    assert_int_equal(map_drug_classes(T, "ibrutinib"), 1u << MAP_CLASS_BTKI);
}

/* ---- procedures ---- */

static void test_procedures(void **s)
{
    (void)s;
    const char *row = NULL, *prod = NULL;
    assert_string_equal(map_proc_lookup(T, MAP_SYS_CPT, "38241", NULL, &row, &prod), "auto_hct");
    assert_non_null(row);
    assert_string_equal(map_proc_lookup(T, MAP_SYS_CPT, "38240", NULL, NULL, NULL), "allo_hct");
    assert_string_equal(map_proc_lookup(T, MAP_SYS_CPT, "0540T", NULL, NULL, NULL), "car_t");
    assert_string_equal(map_proc_lookup(T, MAP_SYS_CPT, "38228", NULL, NULL, NULL), "car_t");
    assert_string_equal(map_proc_lookup(T, MAP_SYS_CPT, "38225", NULL, NULL, NULL), "car_t_collection");
    assert_string_equal(map_proc_lookup(T, MAP_SYS_ICD10PCS, "30233Y0", NULL, NULL, NULL), "auto_hct");
    assert_string_equal(map_proc_lookup(T, MAP_SYS_ICD10PCS, "30243G3", NULL, NULL, NULL), "allo_hct");
    prod = NULL;
    assert_string_equal(map_proc_lookup(T, MAP_SYS_ICD10PCS, "XW033H7", NULL, NULL, &prod), "car_t");
    assert_string_equal(prod, "axicabtagene ciloleucel");
    assert_string_equal(map_proc_lookup(T, MAP_SYS_SNOMED, "425983008", NULL, NULL, NULL), "auto_hct");
    assert_string_equal(map_proc_lookup(T, MAP_SYS_SNOMED, "234336002", NULL, NULL, NULL), "hct");
    /* names: unconfirmed codes also by description */
    prod = NULL;
    assert_string_equal(map_proc_lookup(T, NULL, NULL, "Infusion of ciltacabtagene autoleucel", NULL, &prod), "car_t");
    assert_string_equal(prod, "ciltacabtagene autoleucel");
    assert_string_equal(map_proc_lookup(T, NULL, NULL, "Chimeric antigen receptor T-cell harvest", NULL, NULL), "car_t_collection");
    assert_string_equal(map_proc_lookup(T, NULL, NULL, "Autologous stem cell transplant", NULL, NULL), "auto_hct");
    assert_null(map_proc_lookup(T, MAP_SYS_CPT, "99213", "Office visit", NULL, NULL));
}

/* ---- loader errors carry file:line ---- */

static char tmpdir[256];

static void copy_tables(const char *to)
{
    static const char *const files[] = {"diagnoses.tsv", "labs.tsv", "units.tsv", "observations.tsv",
                                        "drugs.tsv", "procedures.tsv", NULL};
    for (const char *const *f = files; *f; f++) {
        char src[512], dst[512];
        snprintf(src, sizeof src, "%s/%s", CARTGATE_MAPPINGS_DIR, *f);
        snprintf(dst, sizeof dst, "%s/%s", to, *f);
        FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
        assert_non_null(in);
        assert_non_null(out);
        char buf[8192];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, in)) > 0)
            fwrite(buf, 1, n, out);
        fclose(in);
        fclose(out);
    }
}

static void append(const char *file, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, file);
    FILE *f = fopen(p, "ab");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int count_lines(const char *file)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, file);
    FILE *f = fopen(p, "rb");
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static void expect_error(const char *file, const char *row, const char *needle)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cartgate-maptest-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    copy_tables(tmpdir);
    int line = count_lines(file) + 1;
    append(file, row);
    fhir_error err;
    fhir_error_clear(&err);
    map_tables *t = map_tables_load(tmpdir, &err);
    assert_null(t);
    char want[64];
    snprintf(want, sizeof want, "%s:%d:", file, line);
    if (!strstr(err.msg, want) || !strstr(err.msg, needle))
        fail_msg("error '%s' lacks '%s' / '%s'", err.msg, want, needle);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    assert_int_equal(system(cmd), 0);
}

static void test_loader_errors(void **s)
{
    (void)s;
    expect_error("diagnoses.tsv", "icd10cm\tprefix\tC99\tnot_a_concept\tno\t-\tx\n", "unknown concept");
    expect_error("diagnoses.tsv", "icd10cm\tprefix\tC833\tdlbcl_nos\tno\t-\tdup\n", "duplicate");
    expect_error("diagnoses.tsv", "icd10cm\tprefix\tC99\tother_heme\tno\tcolour:b_all\tx\n", "unknown unspecified axis");
    expect_error("diagnoses.tsv", "icd10cm\tprefix\tC99\tother_heme\tno\tlineage:zzz\tx\n", "unspecified concept");
    expect_error("diagnoses.tsv", "icd10cm\tprefix\tC99\tother_heme\tno\tlineage\tx\n", "unspecified must be");
    expect_error("diagnoses.tsv", "icd10cm\tprefix\tC99\n", "columns");
    expect_error("labs.tsv", "loinc\t1-1\tanc\t10*3/uL\tcount\t5\t1\tx\n", "plausible range");
    expect_error("labs.tsv", "loinc\t1-1\tanc\t10*3/uL\tnogroup\t0\t1\tx\n", "unit group");
    expect_error("units.tsv", "count\tfoo\tabc\tx\n", "factor");
    expect_error("drugs.tsv", "rxnorm\t999999\trituximab\talkylator\ttherapy\tyes\t-\tx\n", "differ");
    expect_error("drugs.tsv", "rxnorm\t12a\tnewdrug\t-\ttherapy\tno\t-\tx\n", "not numeric");
    expect_error("drugs.tsv", "name\tfoo\tnewdrug\tnot_a_class\ttherapy\tno\t-\tx\n", "unknown class");
    expect_error("procedures.tsv", "cpt\texact\t99999\tcar_t\tnot-a-product\tx\n", "not a CAR T ingredient");
    expect_error("observations.tsv", "ecog\tloinc\tLA0-0\t7\tx\n", "bad ecog value");
}

static void test_loader_missing_dir(void **s)
{
    (void)s;
    fhir_error err;
    fhir_error_clear(&err);
    assert_null(map_tables_load("/nonexistent-cartgate-dir", &err));
    assert_non_null(strstr(err.msg, "cannot open"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dx_icd10_prefix_with_and_without_dot),
        cmocka_unit_test(test_dx_longest_prefix_pcnsl),
        cmocka_unit_test(test_dx_name_override_on_convention_codes),
        cmocka_unit_test(test_dx_icd10_diseases),
        cmocka_unit_test(test_dx_snomed_and_system_guess),
        cmocka_unit_test(test_dx_unspecified),
        cmocka_unit_test(test_dx_icdo3),
        cmocka_unit_test(test_dx_names),
        cmocka_unit_test(test_lab_lookup),
        cmocka_unit_test(test_unit_conversions),
        cmocka_unit_test(test_unit_unknown_and_implausible),
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_drug_codes),
        cmocka_unit_test(test_drug_text),
        cmocka_unit_test(test_procedures),
        cmocka_unit_test(test_loader_errors),
        cmocka_unit_test(test_loader_missing_dir),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
