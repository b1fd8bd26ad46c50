/* Unit tests: the referral packet — the document built from a verdict and the patient's
 * resources (sections sorted from the explanation, resource references removed from the words,
 * referrer, coverage), its HTML (escaped, no script), text and PDF renderings, and the round
 * trip through a referral Bundle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "../../unit_maps.h"

#include "bser.h"
#include "centers.h"
#include "fhir_json.h"
#include "packet.h"

/* All fictional. */
static const char *patient_json =
    "{\"resourceType\":\"Patient\",\"id\":\"ehr-pt-1\","
    "\"identifier\":[{\"system\":\"urn:oid:1.2\",\"value\":\"X-1\"},"
    "{\"type\":{\"coding\":[{\"code\":\"MR\"}]},\"system\":\"urn:oid:1.3\",\"value\":\"MRN-000123\"}],"
    "\"name\":[{\"use\":\"nickname\",\"given\":[\"Lexi\"]},{\"use\":\"official\",\"family\":\"Test<person>\",\"given\":[\"Alex\",\"J\"]}],"
    "\"telecom\":[{\"system\":\"email\",\"value\":\"a@example.org\"},{\"system\":\"phone\",\"value\":\"+1-555-0100\"}],"
    "\"gender\":\"female\",\"birthDate\":\"1961-04-02\","
    "\"address\":[{\"line\":[\"1 Example Road\"],\"city\":\"Rochester\",\"state\":\"MN\",\"postalCode\":\"55902\"}]}";
static const char *condition_json =
    "{\"resourceType\":\"Condition\",\"id\":\"c1\",\"code\":{\"coding\":[{\"system\":"
    "\"http://hl7.org/fhir/sid/icd-10-cm\",\"code\":\"C83.30\",\"display\":\"DLBCL, unspecified site\"}]},"
    "\"subject\":{\"reference\":\"Patient/ehr-pt-1\"},\"onsetDateTime\":\"2025-09-02T10:00:00Z\"}";
static const char *coverage_json =
    "{\"resourceType\":\"Coverage\",\"id\":\"cov-1\",\"status\":\"active\",\"subscriberId\":\"M123\","
    "\"payor\":[{\"display\":\"Medicare\"}],\"class\":[{\"value\":\"A\",\"name\":\"Part A\"}]}";
static const char *verdict_json =
    "{\"patient\":\"pseudo-42\",\"category\":\"eligible\","
    "\"explanation\":["
    "\"axi-cel:LBCL-2L eligible (Yescarta, adult LBCL): eligible. Label: Yescarta US Prescribing Information, section 1, revised 2026-02, https://dailymed.nlm.nih.gov/x?setid=1\","
    "\"axi-cel:LBCL-3L not_eligible: fails 'at least 2 prior lines of systemic therapy' (1 line).\","
    "\"not the disease of the label for brexu-cel:MCL (diagnoses: DLBCL (Condition/c1 code=C83.30 -> dlbcl_nos))\","
    "\"urgency now: relapsed LBCL\","
    "\"review flag lvef (LVEF 40 % (Observation/o-9) on record): LVEF below 45% (ZUMA-1); not a label restriction\","
    "\"note hct_refusal: the patient declined a transplant\","
    "\"consult refer_now: x (y)\"],"
    "\"consult\":{\"recommendation\":\"refer_now\",\"reasons\":[\"refer_now: relapsed LBCL: refer now (NMDP/ASTCT)\"]},"
    "\"to_request\":[\"an echocardiogram report\"]}";

static fhir_node *P(fhir_arena *a, const char *s)
{
    fhir_error err = {0};
    fhir_node *n = fhir_json_parse(a, s, strlen(s), NULL, &err);
    if (!n)
        fail_msg("fixture: %s", err.msg);
    return n;
}

static fhir_node *build(fhir_arena *a)
{
    static const fhir_node *cov[1];
    cov[0] = P(a, coverage_json);
    packet_input in = {
        .site_name = "Community Hospital (fictional)", .center_name = "Lakeshore (fictional)",
        .request = "CAR T evaluation (eligible): axi-cel:LBCL-2L", .urgency = "urgent",
        .authored_ms = 1795000000000LL, .patient = P(a, patient_json),
        .condition = P(a, condition_json), .coverages = cov, .n_coverages = 1,
        .verdict = P(a, verdict_json),
        .referrer = {.name = "Dr. A. Rivera", .phone = "+1-555-0142", .direct = "r@direct.example.org",
                     .source = "the site's referring clinician"},
    };
    fhir_error err = {0};
    fhir_node *pk = packet_build(a, &in, &err);
    if (!pk)
        fail_msg("packet_build: %s", err.msg);
    return pk;
}

static void test_document(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *pk = build(a);
    assert_string_equal(fhir_node_path_str(pk, "kind"), "cartgate-packet");
    assert_string_equal(fhir_node_path_str(pk, "patient.name"), "Alex J Test<person>"); /* official */
    assert_string_equal(fhir_node_path_str(pk, "patient.mrn"), "MRN-000123");           /* typed MR */
    assert_string_equal(fhir_node_path_str(pk, "patient.phone"), "+1-555-0100");
    assert_string_equal(fhir_node_path_str(pk, "patient.address"), "1 Example Road, Rochester, MN 55902");
    assert_string_equal(fhir_node_path_str(pk, "diagnosis.text"), "DLBCL, unspecified site");
    assert_string_equal(fhir_node_path_str(pk, "diagnosis.code"), "ICD-10-CM C83.30");
    assert_string_equal(fhir_node_path_str(pk, "diagnosis.since"), "2025-09-02");
    assert_string_equal(fhir_node_path_str(pk, "coverage[0].payer"), "Medicare");
    assert_string_equal(fhir_node_path_str(pk, "coverage[0].member_id"), "M123");
    assert_string_equal(fhir_node_path_str(pk, "coverage[0].plan"), "Part A");
    assert_string_equal(fhir_node_path_str(pk, "referrer.name"), "Dr. A. Rivera");
    /* the explanation sorted into sections; the disease-mismatch, urgency and consult lines dropped */
    assert_int_equal(fhir_node_count(fhir_node_get(pk, "assessment")), 1);
    assert_int_equal(fhir_node_count(fhir_node_get(pk, "other")), 1);
    assert_int_equal(fhir_node_count(fhir_node_get(pk, "notes")), 1);
    assert_string_equal(fhir_node_path_str(pk, "notes[0]"), "the patient declined a transplant");
    /* a review flag in words, without its resource reference */
    assert_string_equal(fhir_node_path_str(pk, "review_flags[0]"),
                        "LVEF 40 % on record: LVEF below 45% (ZUMA-1); not a label restriction");
    assert_string_equal(fhir_node_path_str(pk, "consult[0]"), "Refer now: relapsed LBCL: refer now (NMDP/ASTCT)");
    assert_string_equal(fhir_node_path_str(pk, "to_request[0]"), "an echocardiogram report");
    fhir_arena_free(a);
}

/* The packet's arena cap is an error for the caller, never an abort of the daemon. */
static void test_arena_cap(void **state)
{
    (void)state;
    fhir_arena *in_a = fhir_arena_new(0);
    packet_input in = {.site_name = "s", .center_name = "c", .authored_ms = 1795000000000LL,
                       .patient = P(in_a, patient_json), .condition = P(in_a, condition_json),
                       .verdict = P(in_a, verdict_json)};
    for (size_t cap = 256; cap <= 8192; cap *= 2) {
        fhir_arena *a = fhir_arena_new(cap);
        fhir_error err = {0};
        fhir_node *pk = packet_build(a, &in, &err);
        if (!pk)
            assert_string_equal(err.msg, "referral packet: memory cap reached");
        fhir_arena_free(a);
    }
    fhir_arena *a = fhir_arena_new(512);
    fhir_error err = {0};
    assert_null(packet_build(a, &in, &err));
    assert_string_equal(err.msg, "referral packet: memory cap reached");
    fhir_arena_free(a);
    fhir_arena_free(in_a);
}

/* Pathology and imaging reports: told apart by name (no code is confirmed), carried with
 * date, title and finding, rendered in a section; an unrelated report is neither. */
static void test_reports(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    const fhir_node *path = P(a, "{\"resourceType\":\"DiagnosticReport\",\"id\":\"d1\",\"status\":\"final\","
                                 "\"category\":[{\"text\":\"Pathology\"}],\"code\":{\"text\":\"Lymph node biopsy\"},"
                                 "\"effectiveDateTime\":\"2026-08-20\",\"conclusion\":\"DLBCL. FISH: MYC not rearranged.\"}");
    const fhir_node *img = P(a, "{\"resourceType\":\"DiagnosticReport\",\"id\":\"d2\",\"status\":\"preliminary\","
                                "\"code\":{\"coding\":[{\"display\":\"PET/CT skull base to mid-thigh\"}]},"
                                "\"issued\":\"2026-09-01T08:00:00Z\",\"conclusion\":\"Deauville 5\"}");
    const fhir_node *echo = P(a, "{\"resourceType\":\"DiagnosticReport\",\"id\":\"d3\",\"status\":\"final\","
                                 "\"code\":{\"text\":\"Basic metabolic panel\"}}");
    const fhir_node *obs = P(a, "{\"resourceType\":\"Observation\",\"id\":\"o\",\"code\":{\"text\":\"biopsy\"}}");
    const fhir_node *fishing = P(a, "{\"resourceType\":\"DiagnosticReport\",\"id\":\"d4\",\"code\":{\"text\":\"Fishing license scanner\"}}");
    assert_string_equal(packet_report_kind(path), "pathology");
    assert_string_equal(packet_report_kind(img), "imaging");
    assert_null(packet_report_kind(echo));
    assert_null(packet_report_kind(obs));      /* only DiagnosticReports */
    assert_null(packet_report_kind(fishing)); /* whole words: neither FISH nor scan */
    const fhir_node *reps[2] = {img, path};
    packet_input in = {.site_name = "s", .center_name = "c", .authored_ms = 1795000000000LL,
                       .patient = P(a, patient_json), .verdict = P(a, verdict_json), .reports = reps,
                       .n_reports = 2, .report_lookback_days = 730};
    fhir_error err = {0};
    fhir_node *pk = packet_build(a, &in, &err);
    if (!pk)
        fail_msg("packet_build: %s", err.msg);
    assert_string_equal(fhir_node_path_str(pk, "reports[0].kind"), "imaging");
    assert_string_equal(fhir_node_path_str(pk, "reports[0].date"), "2026-09-01");
    assert_string_equal(fhir_node_path_str(pk, "reports[1].title"), "Lymph node biopsy");
    assert_string_equal(fhir_node_path_str(pk, "reports[1].conclusion"), "DLBCL. FISH: MYC not rearranged.");
    fhir_buf t;
    fhir_buf_init(&t, 1u << 20);
    assert_int_equal(packet_write_text(pk, &t, &err), 0);
    const char *txt = fhir_buf_cstr(&t);
    assert_non_null(strstr(txt, "Pathology and imaging reports"));
    assert_non_null(strstr(txt, "Imaging: PET/CT skull base to mid-thigh — preliminary"));
    assert_non_null(strstr(txt, "Pathology: Lymph node biopsy. Finding: DLBCL. FISH: MYC not rearranged."));
    /* none: the packet says what to ask for, and over what span */
    packet_input none = in;
    none.n_reports = 0;
    pk = packet_build(a, &none, &err);
    fhir_buf_reset(&t);
    assert_int_equal(packet_write_text(pk, &t, &err), 0);
    assert_non_null(strstr(fhir_buf_cstr(&t), "No pathology or imaging report in the last 730 days"));
    fhir_buf_free(&t);
    fhir_arena_free(a);
}

/* pango and cairo are not linked: a process maps them only once it draws a PDF (or asks for the
 * renderer's versions), so this test runs first. */
static void test_renderer_loaded_on_first_use(void **state)
{
    (void)state;
    static const char *const libs[] = {"libpangocairo-1.0.so", "libpango-1.0.so", "libcairo.so",
                                       "libgobject-2.0.so", "libfontconfig.so", "libharfbuzz.so"};
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++)
        if (unit_mapped(libs[i]))
            fail_msg("%s is mapped before any PDF is drawn", libs[i]);
    char v[128];
    fhir_error err = {0};
    assert_int_equal(packet_pdf_renderer(v, sizeof v, &err), 0);
    assert_true(!strncmp(v, "pango 1.", 8));
    assert_non_null(strstr(v, ", cairo 1."));
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) /* with their dependencies */
        if (!unit_mapped(libs[i]))
            fail_msg("%s is not mapped after the renderer was loaded", libs[i]);
    /* once per process: the same table again */
    char v2[128];
    assert_int_equal(packet_pdf_renderer(v2, sizeof v2, &err), 0);
    assert_string_equal(v, v2);
}

static void test_renderings(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *pk = build(a);
    fhir_error err = {0};
    fhir_buf b;
    fhir_buf_init(&b, PACKET_MAX_HTML);
    assert_int_equal(packet_write_html(pk, &b, &err), 0);
    const char *h = fhir_buf_cstr(&b);
    assert_true(!strncmp(h, "<!doctype html>", 15));
    assert_non_null(strstr(h, "Alex J Test&lt;person&gt;")); /* escaped */
    assert_null(strstr(h, "Test<person>"));
    assert_null(strstr(h, "<script"));
    assert_non_null(strstr(h, "<h2>Lines of therapy</h2>\n<p>No systemic therapy on record"));
    assert_non_null(strstr(h, "US Prescribing Information"));
    assert_null(strstr(h, "Observation/"));
    fhir_buf_reset(&b);
    assert_int_equal(packet_write_text(pk, &b, &err), 0);
    assert_non_null(strstr(fhir_buf_cstr(&b), "Referring clinician (whom to call)\n"));
    assert_non_null(strstr(fhir_buf_cstr(&b), "No systemic therapy on record"));
    /* a cap that is too small is an error, not a truncated packet */
    fhir_buf small;
    fhir_buf_init(&small, 100);
    assert_int_equal(packet_write_html(pk, &small, &err), -1);
    assert_non_null(strstr(err.msg, "larger than its cap"));
    fhir_buf_free(&small);
    /* not a packet */
    assert_int_equal(packet_write_text(P(a, "{\"kind\":\"other\"}"), &b, &err), -1);
    assert_string_equal(err.msg, "not a referral packet");
    fhir_buf_free(&b);

    char path[] = "/tmp/cg-packet-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(packet_write_pdf(pk, path, &err), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    FILE *f = fopen(path, "rb");
    char head[5] = {0};
    assert_int_equal(fread(head, 1, 4, f), 4);
    fclose(f);
    assert_string_equal(head, "%PDF");
    unlink(path);
    assert_int_equal(packet_write_pdf(pk, "/nonexistent-dir/p.pdf", &err), -1);
    assert_non_null(strstr(err.msg, "No such file or directory"));
    fhir_arena_free(a);
}

static const char *dir_json =
    "{\"centers\": [{\"id\": \"lakeshore-chicago\", \"name\": \"Lakeshore (fictional)\","
    " \"fhir\": {\"base\": \"https://fhir.lakeshore.example.org/r4\"},"
    " \"position\": {\"lat\": 41.89, \"lon\": -87.62},"
    " \"address\": {\"line\": [\"250 East Example Street\"], \"city\": \"Chicago\", \"state\": \"IL\", \"postalCode\": \"60611\"},"
    " \"accreditations\": [{\"body\": \"FACT\", \"expires\": \"2030-01-01\"}], \"products\": [\"axi-cel\"],"
    " \"diseases\": [\"dlbcl_nos\"], \"capacity\": \"open\","
    " \"contact\": {\"phone\": \"+1-555-0118\", \"email\": \"cart-intake@lakeshore.example.org\"}}]}";

static void test_bundle_round_trip(void **state)
{
    (void)state;
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *pk = build(a);
    fhir_error err = {0};
    centers_dir *d = centers_load_mem("dir.json", dir_json, strlen(dir_json), &err);
    if (!d)
        fail_msg("centers: %s", err.msg);
    char *pj = fhir_json_to_string(pk, FHIR_JSON_COMPACT, PACKET_MAX_JSON);
    bser_input in = {
        .id_system_base = "urn:cartgate:community-1", .placer_id = "CG-0123",
        .site_id = "community-1", .site_name = "Community Hospital (fictional)",
        .center = &d->centers[0], .patient_id = "pseudo-42", .patient = P(a, patient_json),
        .summary_text = "x", .verdict_json = verdict_json, .urgency = "urgent",
        .authored_ms = 1795000000000LL, .referrer_name = "Dr. A. Rivera",
        .referrer_phone = "+1-555-0142", .packet_json = pj, .packet_html = "<!doctype html>",
    };
    fhir_node *bundle = bser_build(a, &in, &err);
    assert_non_null(bundle);
    /* the requester is the referring clinician's PractitionerRole at the site */
    const fhir_node *sr = NULL, *pr = NULL;
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next) {
        const char *t = fhir_node_path_str(e, "resource.resourceType");
        if (!strcmp(t, "ServiceRequest"))
            sr = e;
        else if (!strcmp(t, "PractitionerRole"))
            pr = e;
    }
    assert_non_null(sr);
    assert_non_null(pr);
    assert_string_equal(fhir_node_path_str(sr, "resource.requester.reference"), fhir_node_path_str(pr, "fullUrl"));
    assert_string_equal(fhir_node_path_str(pr, "resource.practitioner.display"), "Dr. A. Rivera");
    assert_string_equal(fhir_node_path_str(pr, "resource.telecom[0].value"), "+1-555-0142");
    assert_null(fhir_node_path(pr, "resource.telecom[1]")); /* no Direct address given */
    /* ... and the packet comes back out of the Bundle as it went in */
    char *s = fhir_json_to_string(bundle, FHIR_JSON_COMPACT, 0);
    fhir_node *again = packet_from_bundle(a, P(a, s), &err);
    assert_non_null(again);
    assert_true(fhir_node_equal(again, pk, false));
    /* without a referrer the site Organization requests, as before */
    in.referrer_name = NULL;
    bundle = bser_build(a, &in, &err);
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next)
        assert_string_not_equal(fhir_node_path_str(e, "resource.resourceType"), "PractitionerRole");
    /* a Bundle without a packet says so */
    in.packet_json = NULL;
    bundle = bser_build(a, &in, &err);
    assert_null(packet_from_bundle(a, bundle, &err));
    assert_non_null(strstr(err.msg, "carries no packet"));
    free(s);
    free(pj);
    centers_free(d);
    fhir_arena_free(a);
}

/* With the criteria, the assessment names each indication in words (brand, product, short
 * label) instead of its key; a line not of the explanation's shape stays as written. */
static void test_indications_in_words(void **state)
{
    (void)state;
    fhir_error err = {0};
    elig_ruleset *rs = elig_load_dir("conf/criteria", &err);
    if (!rs)
        fail_msg("criteria: %s", err.msg);
    int i = elig_ruleset_find(rs, "axi-cel:LBCL-2L");
    assert_true(i >= 0);
    fhir_arena *a = fhir_arena_new(0);
    fhir_buf v;
    fhir_buf_init(&v, 1u << 16);
    fhir_buf_puts(&v, "{\"patient\":\"pseudo-42\",\"category\":\"eligible\",\"explanation\":[");
    char line[2048];
    snprintf(line, sizeof line, "axi-cel:LBCL-2L eligible (Yescarta, %s): eligible. adult: met (age 64).",
             elig_ruleset_description(rs, (size_t)i));
    fhir_json_write_string(&v, line, strlen(line));
    snprintf(line, sizeof line, "axi-cel:LBCL-2L possibly_eligible (Yescarta, %s): possibly eligible. lines: unknown.",
             elig_ruleset_description(rs, (size_t)i));
    fhir_buf_putc(&v, ',');
    fhir_json_write_string(&v, line, strlen(line));
    snprintf(line, sizeof line, "axi-cel:LBCL-2L eligible (Yescarta, %s): eligible. adult: met (age 64).",
             elig_ruleset_description(rs, (size_t)i));
    fhir_buf_puts(&v, ",\"axi-cel:LBCL-3L,liso-cel:LBCL-3L not_eligible: fails 'at least 2 prior lines' (1 line).\","
                      "\"zz-cel:Q eligible (Z, z): eligible.\"]}");
    static const fhir_node *cov[1];
    cov[0] = P(a, coverage_json);
    packet_input in = {
        .site_name = "Community Hospital (fictional)", .center_name = "Lakeshore (fictional)",
        .request = "r", .urgency = "urgent", .authored_ms = 1795000000000LL, .patient = P(a, patient_json),
        .coverages = cov, .n_coverages = 1, .verdict = P(a, fhir_buf_cstr(&v)), .rules = rs,
        .referrer = {.name = "Dr. A. Rivera", .source = "s"},
    };
    fhir_node *pk = packet_build(a, &in, &err);
    if (!pk)
        fail_msg("packet_build: %s", err.msg);
    assert_string_equal(fhir_node_path_str(pk, "assessment[0]"),
                        "Yescarta (axi-cel): large B-cell lymphoma, second line (refractory or relapse within 12 "
                        "months) \xe2\x80\x94 eligible. adult: met (age 64).");
    assert_string_equal(fhir_node_path_str(pk, "assessment[1]"),
                        "Yescarta (axi-cel): large B-cell lymphoma, second line (refractory or relapse within 12 "
                        "months) \xe2\x80\x94 possibly eligible. lines: unknown.");
    assert_string_equal(fhir_node_path_str(pk, "assessment[2]"), "zz-cel:Q eligible (Z, z): eligible.");
    assert_string_equal(fhir_node_path_str(pk, "other[0]"),
                        "Yescarta (axi-cel), Breyanzi (liso-cel): large B-cell lymphoma, third line or later "
                        "\xe2\x80\x94 not met: fails 'at least 2 prior lines' (1 line).");
    /* without the criteria: as written */
    in.rules = NULL;
    pk = packet_build(a, &in, &err);
    assert_non_null(pk);
    assert_string_equal(fhir_node_path_str(pk, "assessment[0]"), line);
    fhir_buf_free(&v);
    fhir_arena_free(a);
    elig_ruleset_free(rs);
}

/* References are dropped from the words wherever they stand (start, end, in brackets, after a
 * URL's '/'s, one after another); what only looks like one stays. The expected texts are what
 * the byte-by-byte scan this replaced made of the same lines. */
static void test_references_removed(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"Observation/o-1 first, then words", "first, then words"},
        {"creatinine 1.5 mg/dL (Observation/o-2) on 2026-01-02", "creatinine 1.5 mg/dL on 2026-01-02"},
        {"values (  Observation/o-3) and (Observation/o-4 ) kept", "values (  ) and () kept"},
        {"see https://dailymed.nlm.nih.gov/dailymed/drugInfo.cfm?setid=9b7 and DiagnosticReport/dr.7   then",
         "see https://dailymed.nlm.nih.gov/dailymed/drugInfo.cfm?setid=9b7 and then"},
        {"xObservation/o-5, 2Condition/c1, Abc/x, AB/x, Abcd/ end",
         "xObservation/o-5, 2Condition/c1, Abc/x, AB/x, Abcd/ end"},
        {"MedicationRequest/mr-1/Patient/p1 (Condition/c1)", "/"},
        {"trailing Observation/o-9", "trailing "},
        {"mL/min and a/b and Word/", "mL/min and a/b and Word/"},
    };
    size_t n = sizeof cases / sizeof *cases;
    fhir_arena *a = fhir_arena_new(0);
    fhir_buf v;
    fhir_buf_init(&v, 1u << 16);
    fhir_buf_puts(&v, "{\"category\":\"eligible\",\"explanation\":[],\"to_request\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            fhir_buf_putc(&v, ',');
        fhir_json_write_string(&v, cases[i][0], strlen(cases[i][0]));
    }
    fhir_buf_puts(&v, "]}");
    fhir_error err = {0};
    packet_input in = {.site_name = "s", .center_name = "c", .request = "r", .urgency = "routine",
                       .patient = P(a, patient_json), .verdict = P(a, fhir_buf_cstr(&v))};
    fhir_node *pk = packet_build(a, &in, &err);
    if (!pk)
        fail_msg("packet_build: %s", err.msg);
    const fhir_node *req = fhir_node_get(pk, "to_request");
    assert_int_equal(fhir_node_count(req), n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(fhir_node_str(fhir_node_at(req, i)), cases[i][1]);
    fhir_buf_free(&v);
    fhir_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_renderer_loaded_on_first_use), /* first: nothing drawn yet */
        cmocka_unit_test(test_document),
        cmocka_unit_test(test_arena_cap),
        cmocka_unit_test(test_reports),
        cmocka_unit_test(test_renderings),
        cmocka_unit_test(test_bundle_round_trip),
        cmocka_unit_test(test_indications_in_words),
        cmocka_unit_test(test_references_removed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
