/* synth — deterministic synthetic oncology cohorts with ground truth (see synth.h).
 *
 * Codes: every code below is taken from the codes reference (codes.md) (section given per
 * table). Nothing here is invented; drugs whose RXCUI codes.md marks UNCONFIRMED are not used.
 * ZIP centroids: US Census Bureau 2020 Gazetteer ZCTA file (INTPTLAT/INTPTLONG), a handful
 * of rows, as a residence sample. */
#include "synth.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "fhir_clock.h"
#include "fhir_json.h"

/* ---- PRNG: xoshiro256** seeded by splitmix64 ------------------------------------------ */

typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void rng_seed(rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ULL);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

/* Uniform in [0, n). */
static uint32_t rng_below(rng *r, uint32_t n)
{
    return n ? (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32) : 0;
}
/* Uniform in [lo, hi]. */
static int rng_int(rng *r, int lo, int hi) { return lo + (int)rng_below(r, (uint32_t)(hi - lo + 1)); }
static bool rng_pct(rng *r, int pct) { return (int)rng_below(r, 100) < pct; }

/* ---- code tables (codes.md) ------------------------------------------------------------ */

#define SYS_ICD10CM "http://hl7.org/fhir/sid/icd-10-cm"
#define SYS_SNOMED "http://snomed.info/sct"
#define SYS_LOINC "http://loinc.org"
#define SYS_RXNORM "http://www.nlm.nih.gov/research/umls/rxnorm"
#define SYS_ICDO3 "http://terminology.hl7.org/CodeSystem/icd-o-3"
#define SYS_CPT "http://www.ama-assn.org/go/cpt"
#define SYS_ICD10PCS "http://www.cms.gov/Medicare/Coding/ICD10"
#define SYS_UCUM "http://unitsofmeasure.org"

typedef struct code3 {
    const char *code, *display;
} code3;

/* Diagnosis codings per disease concept (codes.md §1.2 ICD-10-CM, §1.5 SNOMED CT,
 * §1.4 ICD-O-3). Empty lists mean "this system cannot express the concept alone". */
typedef struct dx_def {
    const char *concept;
    const char *text;
    code3 icd[3];
    code3 sct[3];
    code3 icdo[2];
} dx_def;

static const dx_def DX[] = {
    {"dlbcl_nos", "Diffuse large B-cell lymphoma",
     {{"C83.30", "Diffuse large B-cell lymphoma, unspecified site"},
      {"C83.38", "Diffuse large B-cell lymphoma, lymph nodes of multiple sites"},
      {"C83.32", "Diffuse large B-cell lymphoma, intrathoracic lymph nodes"}},
     {{"109969005", "Diffuse large B-cell malignant lymphoma (disorder)"}},
     {{"9680/3", "Malignant lymphoma, large B-cell, diffuse, NOS"}}},
    /* HGBL has no ICD-10-CM code; by convention it is coded C83.3x and told apart by name
     * (codes.md §1.2), which the diagnosis table honours (name override on C83.3). */
    {"hgbcl", "High-grade B-cell lymphoma with MYC and BCL2 rearrangements",
     {{"C83.30", "Diffuse large B-cell lymphoma, unspecified site"},
      {"C83.38", "Diffuse large B-cell lymphoma, lymph nodes of multiple sites"}},
     {{"1172704005", "High grade B-cell lymphoma with MYC and BCL2 and/or BCL6 rearrangements (disorder)"},
      {"277617004", "High grade B-cell lymphoma (disorder)"}},
     {{0, 0}}},
    {"pmbcl", "Primary mediastinal large B-cell lymphoma",
     {{"C85.20", "Mediastinal (thymic) large B-cell lymphoma, unspecified site"},
      {"C85.22", "Mediastinal (thymic) large B-cell lymphoma, intrathoracic lymph nodes"}},
     {{"444910004", "Primary mediastinal (thymic) large B-cell lymphoma (disorder)"}},
     {{"9679/3", "Mediastinal large B-cell lymphoma"}}},
    /* transformed FL: no combination code; DLBCL code plus a name saying so (codes.md §1.2) */
    {"tfl", "Diffuse large B-cell lymphoma transformed from follicular lymphoma",
     {{"C83.30", "Diffuse large B-cell lymphoma, unspecified site"},
      {"C83.38", "Diffuse large B-cell lymphoma, lymph nodes of multiple sites"}},
     {{"109969005", "Diffuse large B-cell malignant lymphoma (disorder)"}},
     {{"9680/3", "Malignant lymphoma, large B-cell, diffuse, NOS"}}},
    {"fl_3b", "Follicular lymphoma grade 3B",
     {{"C82.40", "Follicular lymphoma grade IIIb, unspecified site"},
      {"C82.48", "Follicular lymphoma grade IIIb, lymph nodes of multiple sites"}},
     {{"1148845007", "Follicular lymphoma grade 3b (disorder)"}},
     {{0, 0}}},
    {"fl", "Follicular lymphoma",
     {{"C82.00", "Follicular lymphoma grade I, unspecified site"},
      {"C82.10", "Follicular lymphoma grade II, unspecified site"},
      {"C82.90", "Follicular lymphoma, unspecified, unspecified site"}},
     {{"308121000", "Follicular lymphoma (disorder)"}},
     {{"9690/3", "Follicular lymphoma, NOS"}, {"9695/3", "Follicular lymphoma, grade 1"}}},
    {"mcl", "Mantle cell lymphoma",
     {{"C83.10", "Mantle cell lymphoma, unspecified site"},
      {"C83.18", "Mantle cell lymphoma, lymph nodes of multiple sites"}},
     {{"443487006", "Mantle cell lymphoma (disorder)"}},
     {{"9673/3", "Mantle cell lymphoma"}}},
    {"cll_sll", "Chronic lymphocytic leukemia",
     {{"C91.10", "Chronic lymphocytic leukemia of B-cell type not having achieved remission"}},
     {{"92814006", "Chronic lymphoid leukemia, disease (disorder)"}},
     {{"9823/3", "B-cell chronic lymphocytic leukemia/small lymphocytic lymphoma"}}},
    {"mzl", "Marginal zone lymphoma",
     {{"C88.4", "Extranodal marginal zone B-cell lymphoma of mucosa-associated lymphoid tissue [MALT-lymphoma]"}},
     {{"447100004", "Marginal zone lymphoma (disorder)"},
      {"763666008", "Splenic marginal zone B-cell lymphoma (disorder)"},
      {"726721002", "Nodal marginal zone B-cell lymphoma (disorder)"}},
     {{"9699/3", "Marginal zone B-cell lymphoma, NOS"}}},
    {"b_all", "B-cell acute lymphoblastic leukemia",
     /* ICD-10-CM C91.0x does not separate B from T (codes.md §1.2): only used with SNOMED */
     {{"C91.00", "Acute lymphoblastic leukemia not having achieved remission"}},
     {{"277571004", "B-cell acute lymphoblastic leukemia (disorder)"}},
     {{"9811/3", "B-lymphoblastic leukemia/lymphoma, NOS"}}},
    {"mm", "Multiple myeloma",
     {{"C90.00", "Multiple myeloma not having achieved remission"}},
     {{"109989006", "Multiple myeloma (disorder)"}},
     {{"9732/3", "Multiple myeloma"}}},
    {"pcl", "Plasma cell leukemia",
     {{"C90.10", "Plasma cell leukemia not having achieved remission"}},
     {{"95210003", "Plasma cell leukemia, disease (disorder)"}},
     {{"9733/3", "Plasma cell leukemia"}}},
    {"pcnsl", "Primary central nervous system lymphoma",
     {{"C83.390", "Primary central nervous system lymphoma"}},
     {{"276836002", "Primary cerebral lymphoma (disorder)"},
      {"734066005", "Diffuse large B-cell lymphoma of central nervous system (disorder)"}},
     {{0, 0}}},
    /* Hodgkin and solid tumours: codes.md lists no code for them, so text only (the
     * diagnosis table matches them by name) */
    {"hl", "Classical Hodgkin lymphoma", {{0, 0}}, {{0, 0}}, {{0, 0}}},
    {"other_heme", "Burkitt lymphoma",
     {{"C83.70", "Burkitt lymphoma, unspecified site"}},
     {{0, 0}},
     {{"9687/3", "Burkitt lymphoma, NOS"}}},
    {"non_heme", "Malignant neoplasm", {{0, 0}}, {{0, 0}}, {{0, 0}}},
};
#define NDX (sizeof DX / sizeof DX[0])

static const dx_def *dx_find(const char *concept)
{
    for (size_t i = 0; i < NDX; i++)
        if (!strcmp(DX[i].concept, concept))
            return &DX[i];
    return NULL;
}

static size_t code3_count(const code3 *c, size_t max)
{
    size_t n = 0;
    while (n < max && c[n].code)
        n++;
    return n;
}

/* Therapy class bits (FACTS.md keys, same order as map_class in mappings/map_tables.h). */
enum {
    C_ANTI_CD20 = 1u << 0,
    C_ANTHRA = 1u << 1,
    C_ALKYL = 1u << 2,
    C_BTKI = 1u << 3,
    C_BCL2I = 1u << 4,
    C_IMID = 1u << 5,
    C_PI = 1u << 6,
    C_CD38 = 1u << 7,
    C_BCMA = 1u << 8,
    C_CD19 = 1u << 9,
    C_BISPEC = 1u << 10,
    C_CAR_T = 1u << 11,
};
static const char *const CLASS_KEYS[] = {
    "anti_cd20", "anthracycline", "alkylator", "btki",          "bcl2i",      "imid",
    "pi",        "anti_cd38",     "bcma_directed", "cd19_directed", "bispecific", "car_t",
};
#define NCLASS 12

/* Drugs (codes.md §3 and §3.2). oral: given as continuous oral therapy. steroid: never
 * opens a line alone. */
typedef struct drug_def {
    const char *key, *rxcui, *brand;
    unsigned classes;
    bool oral;
    bool steroid;
} drug_def;

static const drug_def DRUGS[] = {
    {"rituximab", "121191", "Rituxan", C_ANTI_CD20, false, false},
    {"obinutuzumab", "974779", "Gazyva", C_ANTI_CD20, false, false},
    {"cyclophosphamide", "3002", "Cytoxan", C_ALKYL, false, false},
    {"doxorubicin", "3639", "Adriamycin", C_ANTHRA, false, false},
    {"vincristine", "11202", NULL, 0, false, false},
    {"prednisone", "8640", NULL, 0, true, true},
    {"etoposide", "4179", NULL, 0, false, false},
    {"bendamustine", "134547", "Treanda", C_ALKYL, false, false},
    {"ibrutinib", "1442981", "Imbruvica", C_BTKI, true, false},
    {"acalabrutinib", "1986808", "Calquence", C_BTKI, true, false},
    {"zanubrutinib", "2262435", "Brukinsa", C_BTKI, true, false},
    {"venetoclax", "1747556", "Venclexta", C_BCL2I, true, false},
    {"lenalidomide", "342369", "Revlimid", C_IMID, true, false},
    {"pomalidomide", "1369713", "Pomalyst", C_IMID, true, false},
    {"bortezomib", "358258", "Velcade", C_PI, false, false},
    {"carfilzomib", "1302966", "Kyprolis", C_PI, false, false},
    {"daratumumab", "1721947", "Darzalex", C_CD38, false, false},
    {"melphalan", "6718", NULL, C_ALKYL, false, false},
    {"dexamethasone", "3264", NULL, 0, true, true},
    {"cytarabine", "3041", NULL, 0, false, false},
    {"gemcitabine", "12574", NULL, 0, false, false},
    {"oxaliplatin", "32592", NULL, 0, false, false},
    {"ifosfamide", "5657", NULL, C_ALKYL, false, false},
    {"carboplatin", "40048", NULL, 0, false, false},
    {"blinatumomab", "1597258", "Blincyto", C_BISPEC | C_CD19, false, false},
    {"fludarabine", "24698", NULL, 0, false, false},
    {"brentuximab vedotin", "1147320", "Adcetris", 0, false, false},
    {"methotrexate", "6851", NULL, 0, false, false},
};
#define NDRUG (sizeof DRUGS / sizeof DRUGS[0])

static const drug_def *drug_find(const char *key)
{
    for (size_t i = 0; i < NDRUG; i++)
        if (!strcmp(DRUGS[i].key, key))
            return &DRUGS[i];
    abort(); /* broken invariant: scenario names a drug not in the table */
}

/* Labs (codes.md §2.1–§2.3). alt_* = an alternate coding/unit some EHRs send; factor
 * converts canonical -> alternate value. */
typedef struct lab_def {
    const char *fact, *loinc, *display, *unit, *category;
    double lo, hi;   /* generated range (canonical unit) */
    int decimals;    /* decimals in the canonical rendering */
    const char *alt_loinc, *alt_display, *alt_unit;
    double alt_factor;
    int alt_decimals;
} lab_def;

static const lab_def LABS[] = {
    {"anc", "26499-4", "Neutrophils [#/volume] in Blood", "10*3/uL", "laboratory", 0.8, 6.5, 2,
     "751-8", "Neutrophils [#/volume] in Blood by Automated count", "10*9/L", 1.0, 2},
    {"alc", "731-0", "Lymphocytes [#/volume] in Blood by Automated count", "10*3/uL", "laboratory",
     0.2, 2.5, 2, NULL, NULL, "10*9/L", 1.0, 2},
    {"platelets", "777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL",
     "laboratory", 40, 380, 0, NULL, NULL, "10*9/L", 1.0, 0},
    {"hemoglobin", "718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", "laboratory", 8.0, 15.5,
     1, NULL, NULL, "g/L", 10.0, 0},
    {"creatinine", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "laboratory",
     0.6, 1.9, 2, "14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "umol/L", 88.4, 0},
    {"bilirubin", "1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL",
     "laboratory", 0.3, 1.8, 1, "14631-6", "Bilirubin.total [Moles/volume] in Serum or Plasma",
     "umol/L", 17.1, 0},
    {"ast", "1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
     "U/L", "laboratory", 12, 85, 0, NULL, NULL, NULL, 0, 0},
    {"alt", "1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
     "U/L", "laboratory", 10, 90, 0, NULL, NULL, NULL, 0, 0},
    {"lvef", "10230-1", "Left ventricular Ejection fraction", "%", "imaging", 38, 68, 0,
     "18043-0", "Left ventricular Ejection fraction by US", NULL, 0, 0},
    {"spo2", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%",
     "vital-signs", 89, 100, 0, NULL, NULL, NULL, 0, 0},
};
#define NLAB (sizeof LABS / sizeof LABS[0])
enum { LAB_ANC = 0, LAB_ALC, LAB_PLT, LAB_HGB, LAB_CREAT, LAB_BILI, LAB_AST, LAB_ALT, LAB_LVEF, LAB_SPO2 };

/* Real ZIPs with Census 2020 ZCTA centroids. */
static const struct zip_def {
    const char *zip;
    double lat, lon;
} ZIPS[] = {
    {"10032", 40.838824, -73.942846}, {"02115", 42.336342, -71.104176},
    {"19104", 39.958719, -75.199069}, {"30322", 33.794492, -84.32657},
    {"33136", 25.787182, -80.204722}, {"35233", 33.508748, -86.801964},
    {"43210", 40.005435, -83.023227}, {"46202", 39.784102, -86.163477},
    {"48109", 42.289187, -83.70878},  {"53226", 43.049005, -88.04223},
    {"55905", 44.055948, -92.525906}, {"60637", 41.781621, -87.599876},
    {"63110", 38.625794, -90.266998}, {"64108", 39.084895, -94.58647},
    {"73104", 35.47523, -97.503918},  {"75390", 32.814164, -96.84065},
    {"77030", 29.706787, -95.401748}, {"80045", 39.747876, -104.838313},
    {"84112", 40.765074, -111.841491}, {"85054", 33.678527, -111.941099},
    {"87106", 35.05792, -106.621262}, {"90095", 34.071312, -118.443545},
    {"97239", 45.492443, -122.692457}, {"98109", 47.631863, -122.344267},
    {"40202", 38.256783, -85.754048}, {"52242", 41.661777, -91.548347},
    {"59101", 45.613054, -108.390305}, {"83702", 43.676435, -116.152104},
    {"04101", 43.662607, -70.257949}, {"05401", 44.476621, -73.209998},
    {"05837", 44.662982, -71.805063}, {"12473", 42.258166, -74.041007},
    {"16244", 40.792176, -79.276658}, {"21523", 39.481678, -79.079493},
    {"26554", 39.465392, -80.109845}, {"30625", 33.520284, -83.33353},
    {"35953", 33.809618, -86.229742}, {"40823", 36.957891, -82.990311},
    {"45761", 39.42576, -82.075255},  {"49643", 44.639739, -85.828941},
    {"54494", 44.340837, -89.73492},  {"58321", 48.200714, -98.344818},
    {"62360", 39.816263, -91.263432}, {"66860", 38.12728, -96.165629},
    {"71999", 34.127458, -93.059067}, {"76308", 33.852942, -98.54073},
    {"80754", 40.723113, -103.666956}, {"88003", 32.280653, -106.745944},
    {"95412", 38.713421, -123.349777},
};
#define NZIP (sizeof ZIPS / sizeof ZIPS[0])

static const char *const PAYERS[] = {"Medicare", "Medicaid", "Aetna", "UnitedHealthcare",
                                     "Blue Cross Blue Shield", "Cigna", "Humana"};
static const char *const GIVEN_F[] = {"Mary", "Linda", "Patricia", "Susan", "Maria", "Aisha",
                                      "Mei", "Grace", "Rosa", "Emily", "Olivia", "Nadia"};
static const char *const GIVEN_M[] = {"James", "Robert", "John", "Michael", "David", "Jose",
                                      "Wei", "Kwame", "Samuel", "Daniel", "Ethan", "Omar"};
static const char *const FAMILY[] = {"Smith", "Johnson", "Williams", "Garcia", "Miller", "Davis",
                                     "Nguyen", "Patel", "Okafor", "Kowalski", "Hernandez",
                                     "Thompson", "Lee", "Walker", "Rossi", "Cohen"};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the clinical truth of one patient -------------------------------------------------- */

#define MAX_REG 12
#define MAX_EVT 8
#define MAX_PROC 4
#define MAX_COND 6
#define MAX_DRUG_IN_REG 8

enum { EVT_RESPONSE = 1, EVT_PROGRESSION };
enum { PROC_AUTO_HCT = 1, PROC_ALLO_HCT, PROC_CAR_T };
enum { STYLE_REQUEST = 0, STYLE_ADMIN, STYLE_STATEMENT };

typedef struct reg {
    int line;                 /* 1-based line this regimen belongs to */
    int64_t start, end;       /* first and last dose day */
    int cycles, cycle_len;    /* IV: doses on start + k*cycle_len; oral: continuous */
    const char *drug[MAX_DRUG_IN_REG];
    int ndrug;
    bool ongoing;             /* still active at as_of (no end) */
    bool maintenance;
    bool lymphodepletion;     /* part of the CAR T line */
} reg;

typedef struct evt {
    int64_t day;
    int type;
} evt;

typedef struct proc {
    int64_t day;
    int type;
} proc;

typedef struct cond {
    const char *concept;      /* disease concept key or "cns_secondary" */
    int64_t onset;
    const char *clinical;     /* condition-clinical code, NULL when entered-in-error */
    const char *verification; /* condition-ver-status code */
    bool counts;              /* an active, confirmed diagnosis the profile must see */
} cond;

typedef struct truth {
    const char *scenario;
    char pid[32];
    int64_t as_of;
    bool female;
    int64_t birth;            /* days */
    bool has_birth;
    int age;
    const char *zip;
    double lat, lon;
    bool geo;
    const char *payer;
    cond cond[MAX_COND];
    int ncond;
    const char *primary;      /* primary heme disease concept, NULL when none */
    bool transformed;
    reg reg[MAX_REG];
    int nreg;
    evt evt[MAX_EVT];
    int nevt;
    proc proc[MAX_PROC];
    int nproc;
    /* labs: value in canonical unit, or NaN when not emitted */
    double lab[NLAB];
    int lab_variant[NLAB];    /* 0 canonical, 1 alternate code/unit, 2 stale only,
                                 3 implausible magnitude, 4 stale + fresh */
    double weight;            /* kg, NaN when absent */
    int ecog;                 /* -1 when absent */
    bool ecog_as_kps;
    bool ecog_stale;
    bool cart_product;        /* the CAR T procedure code names the product */
    int64_t deceased;         /* day of death, or INT64_MIN when alive */
    /* expected eligibility (label terms) */
    const char *expect[12];
    int nexpect;
    const char *possible[12];
    int npossible;
    const char *noise[16];
    int nnoise;
} truth;

static void add_noise(truth *t, const char *tag)
{
    if (t->nnoise < (int)NELEM(t->noise))
        t->noise[t->nnoise++] = tag;
}

static reg *add_reg(truth *t, int line, int64_t start, int cycles, int cycle_len,
                    const char *const *drugs)
{
    if (t->nreg >= MAX_REG)
        abort();
    reg *r = &t->reg[t->nreg++];
    memset(r, 0, sizeof *r);
    r->line = line;
    r->start = start;
    r->cycles = cycles;
    r->cycle_len = cycle_len;
    r->end = start + (int64_t)(cycles - 1) * cycle_len;
    for (; drugs[r->ndrug]; r->ndrug++)
        r->drug[r->ndrug] = drugs[r->ndrug];
    return r;
}

static void add_evt(truth *t, int64_t day, int type)
{
    if (t->nevt >= MAX_EVT)
        abort();
    t->evt[t->nevt].day = day;
    t->evt[t->nevt].type = type;
    t->nevt++;
}

static void add_proc(truth *t, int64_t day, int type)
{
    if (t->nproc >= MAX_PROC)
        abort();
    t->proc[t->nproc].day = day;
    t->proc[t->nproc].type = type;
    t->nproc++;
}

static cond *add_cond(truth *t, const char *concept, int64_t onset)
{
    if (t->ncond >= MAX_COND)
        abort();
    cond *c = &t->cond[t->ncond++];
    c->concept = concept;
    c->onset = onset;
    c->clinical = "active";
    c->verification = "confirmed";
    c->counts = true;
    return c;
}

/* US approval date of each product:indication in its current wording (clinical.md §1.1;
 * where the reference gives only the month, the 1st, or the day it calls UNCONFIRMED).
 * Before that date the indication is not on the label, so it is not expected. */
static const struct approval {
    const char *pi;
    int y, m, d;
} APPROVALS[] = {
    {"tisa-cel:ALL", 2017, 8, 30},     {"tisa-cel:LBCL-3L", 2018, 5, 1},
    {"tisa-cel:FL-3L", 2022, 5, 27},   {"axi-cel:LBCL-2L", 2022, 4, 1},
    {"axi-cel:LBCL-3L", 2017, 10, 18}, {"axi-cel:FL-3L", 2021, 3, 5},
    {"brexu-cel:MCL", 2020, 7, 24},    {"brexu-cel:ALL", 2021, 10, 1},
    {"liso-cel:LBCL-3L", 2021, 2, 5},  {"liso-cel:LBCL-2L", 2022, 6, 24},
    {"liso-cel:LBCL-2L-TI", 2022, 6, 24}, {"liso-cel:CLL", 2024, 3, 14},
    {"liso-cel:FL-3L", 2024, 5, 15},   {"liso-cel:MCL", 2024, 5, 30},
    {"liso-cel:MZL", 2025, 12, 4},     {"ide-cel:MM-3L", 2024, 4, 4},
    {"cilta-cel:MM-2L", 2024, 4, 5},   {"obe-cel:ALL", 2024, 11, 8},
};

static bool approved(const truth *t, const char *pi)
{
    for (size_t i = 0; i < sizeof APPROVALS / sizeof APPROVALS[0]; i++)
        if (!strcmp(APPROVALS[i].pi, pi))
            return t->as_of >= fhir_clock_days_from_civil(APPROVALS[i].y, (unsigned)APPROVALS[i].m,
                                                          (unsigned)APPROVALS[i].d);
    abort(); /* broken invariant: a scenario names an unknown indication */
}

static void expect(truth *t, const char *pi)
{
    if (approved(t, pi) && t->nexpect < (int)NELEM(t->expect))
        t->expect[t->nexpect++] = pi;
}

static void possible(truth *t, const char *pi)
{
    if (approved(t, pi) && t->npossible < (int)NELEM(t->possible))
        t->possible[t->npossible++] = pi;
}

/* Regimens (codes.md §5.1 components, restricted to drugs with confirmed codes). */
static const char *const R_CHOP[] = {"rituximab", "cyclophosphamide", "doxorubicin",
                                     "vincristine", "prednisone", NULL};
static const char *const DA_R_EPOCH[] = {"rituximab", "etoposide", "prednisone", "vincristine",
                                         "cyclophosphamide", "doxorubicin", NULL};
static const char *const R_ICE[] = {"rituximab", "ifosfamide", "carboplatin", "etoposide", NULL};
static const char *const R_GEMOX[] = {"rituximab", "gemcitabine", "oxaliplatin", NULL};
static const char *const BR[] = {"bendamustine", "rituximab", NULL};
static const char *const R_CVP[] = {"rituximab", "cyclophosphamide", "vincristine", "prednisone",
                                    NULL};
static const char *const R2[] = {"lenalidomide", "rituximab", NULL};
static const char *const IBRU[] = {"ibrutinib", NULL};
static const char *const ACALA[] = {"acalabrutinib", NULL};
static const char *const ZANU[] = {"zanubrutinib", NULL};
static const char *const VEN_O[] = {"venetoclax", "obinutuzumab", NULL};
static const char *const FCR[] = {"fludarabine", "cyclophosphamide", "rituximab", NULL};
static const char *const VRD[] = {"bortezomib", "lenalidomide", "dexamethasone", NULL};
static const char *const MEL[] = {"melphalan", NULL};
static const char *const LEN[] = {"lenalidomide", NULL};
static const char *const DPD[] = {"daratumumab", "pomalidomide", "dexamethasone", NULL};
static const char *const KD[] = {"carfilzomib", "dexamethasone", NULL};
static const char *const HCVAD[] = {"cyclophosphamide", "vincristine", "doxorubicin",
                                    "dexamethasone", "methotrexate", "cytarabine", NULL};
static const char *const BLINA[] = {"blinatumomab", NULL};
static const char *const FLU_CY[] = {"fludarabine", "cyclophosphamide", NULL};
static const char *const R_MTX[] = {"rituximab", "methotrexate", NULL};
static const char *const R_ARAC[] = {"rituximab", "cytarabine", NULL};
static const char *const BV_DOXO[] = {"brentuximab vedotin", "doxorubicin", NULL};

/* ---- scenarios ----------------------------------------------------------------------------- */

typedef void (*scen_fn)(truth *t, rng *r);

typedef struct scen_def {
    const char *name;
    scen_fn fn;
    int weight;
} scen_def;

/* Common building blocks. Day arithmetic is in days since the epoch. */

/* R-CHOP-like first line of n cycles (21 days) starting at s; returns its last dose day. */
static int64_t line_iv(truth *t, int line, int64_t s, int cycles, const char *const *drugs)
{
    reg *g = add_reg(t, line, s, cycles, 21, drugs);
    return g->end;
}

static int64_t line_oral(truth *t, int line, int64_t s, int64_t e, const char *const *drugs,
                         bool ongoing)
{
    reg *g = add_reg(t, line, s, 1, 1, drugs);
    g->end = e;
    g->cycles = 0;
    g->ongoing = ongoing;
    return e;
}

static void adult(truth *t, rng *r, int lo, int hi)
{
    t->age = rng_int(r, lo, hi);
}

/* LBCL after first-line R-CHOP with an early relapse (< 12 months from 1L start). */
static void lbcl_early(truth *t, rng *r, const char *concept)
{
    adult(t, r, 35, 82);
    int64_t prog = t->as_of - rng_int(r, 14, 60);
    int64_t s1 = prog - rng_int(r, 220, 300); /* relapse 7-10 months after 1L start */
    add_cond(t, concept, s1 - rng_int(r, 10, 25));
    int64_t e1 = line_iv(t, 1, s1, 6, R_CHOP);
    add_evt(t, e1 + rng_int(r, 20, 35), EVT_RESPONSE);
    add_evt(t, prog, EVT_PROGRESSION);
    /* one line, relapsed: transplant ineligibility is not coded, so 2L-TI stays possible */
    possible(t, "liso-cel:LBCL-2L-TI");
}

static void s_lbcl_early_relapse(truth *t, rng *r)
{
    lbcl_early(t, r, "dlbcl_nos");
    expect(t, "axi-cel:LBCL-2L");
    expect(t, "liso-cel:LBCL-2L");
}

static void s_hgbcl_early_relapse(truth *t, rng *r)
{
    lbcl_early(t, r, "hgbcl");
    expect(t, "axi-cel:LBCL-2L");
    expect(t, "liso-cel:LBCL-2L");
}

static void s_lbcl_late_relapse(truth *t, rng *r)
{
    adult(t, r, 40, 84);
    int64_t prog = t->as_of - rng_int(r, 14, 60);
    int64_t s1 = prog - rng_int(r, 560, 900); /* > 14 months after the end of 1L */
    add_cond(t, "dlbcl_nos", s1 - rng_int(r, 10, 25));
    int64_t e1 = line_iv(t, 1, s1, 6, R_CHOP);
    add_evt(t, e1 + rng_int(r, 20, 35), EVT_RESPONSE);
    add_evt(t, prog, EVT_PROGRESSION);
    possible(t, "liso-cel:LBCL-2L-TI"); /* transplant ineligibility is not coded */
}

static void s_lbcl_primary_refractory(truth *t, rng *r)
{
    adult(t, r, 30, 80);
    int64_t s1 = t->as_of - rng_int(r, 100, 150);
    add_cond(t, "dlbcl_nos", s1 - rng_int(r, 10, 25));
    int cycles = rng_int(r, 3, 4);
    int64_t e1 = line_iv(t, 1, s1, cycles, R_CHOP);
    add_evt(t, e1 + rng_int(r, 7, 18), EVT_PROGRESSION); /* on therapy / right after */
    possible(t, "liso-cel:LBCL-2L-TI");
    expect(t, "axi-cel:LBCL-2L");
    expect(t, "liso-cel:LBCL-2L");
}

static void s_lbcl_3l_asct(truth *t, rng *r)
{
    adult(t, r, 30, 70);
    int64_t s1 = t->as_of - rng_int(r, 1300, 1700);
    add_cond(t, "dlbcl_nos", s1 - rng_int(r, 10, 25));
    int64_t e1 = line_iv(t, 1, s1, 6, R_CHOP);
    add_evt(t, e1 + 30, EVT_RESPONSE);
    int64_t p1 = s1 + rng_int(r, 540, 700); /* late first relapse */
    add_evt(t, p1, EVT_PROGRESSION);
    int64_t s2 = p1 + rng_int(r, 10, 20);
    int64_t e2 = line_iv(t, 2, s2, 3, R_ICE);
    int64_t hct = e2 + rng_int(r, 30, 45);
    add_proc(t, hct, PROC_AUTO_HCT);
    add_evt(t, hct + 90, EVT_RESPONSE);
    add_evt(t, hct + rng_int(r, 200, 320), EVT_PROGRESSION);
    expect(t, "tisa-cel:LBCL-3L");
    expect(t, "axi-cel:LBCL-3L");
    expect(t, "liso-cel:LBCL-3L");
}

static void s_lbcl_3l(truth *t, rng *r)
{
    adult(t, r, 45, 85);
    int64_t s1 = t->as_of - rng_int(r, 1000, 1300);
    add_cond(t, "dlbcl_nos", s1 - rng_int(r, 10, 25));
    int64_t e1 = line_iv(t, 1, s1, 6, R_CHOP);
    add_evt(t, e1 + 30, EVT_RESPONSE);
    int64_t p1 = s1 + rng_int(r, 450, 600);
    add_evt(t, p1, EVT_PROGRESSION);
    int64_t s2 = p1 + rng_int(r, 10, 20);
    int64_t e2 = line_iv(t, 2, s2, 4, R_GEMOX);
    add_evt(t, e2 + rng_int(r, 10, 40), EVT_PROGRESSION); /* refractory to 2L */
    expect(t, "tisa-cel:LBCL-3L");
    expect(t, "axi-cel:LBCL-3L");
    expect(t, "liso-cel:LBCL-3L");
}

static void s_pmbcl_3l(truth *t, rng *r)
{
    adult(t, r, 20, 50);
    int64_t s1 = t->as_of - rng_int(r, 900, 1200);
    add_cond(t, "pmbcl", s1 - rng_int(r, 10, 25));
    int64_t e1 = line_iv(t, 1, s1, 6, DA_R_EPOCH);
    add_evt(t, e1 + 30, EVT_RESPONSE);
    int64_t p1 = s1 + rng_int(r, 420, 560);
    add_evt(t, p1, EVT_PROGRESSION);
    int64_t e2 = line_iv(t, 2, p1 + 14, 3, R_ICE);
    add_evt(t, e2 + rng_int(r, 10, 40), EVT_PROGRESSION);
    expect(t, "axi-cel:LBCL-3L");
    expect(t, "liso-cel:LBCL-3L");
}

static void s_tfl(truth *t, rng *r)
{
    adult(t, r, 45, 82);
    int64_t sf = t->as_of - rng_int(r, 1800, 2600);
    add_cond(t, "fl", sf - rng_int(r, 15, 40));
    int64_t e1 = line_iv(t, 1, sf, 6, BR);
    add_evt(t, e1 + 40, EVT_RESPONSE);
    int64_t tr = t->as_of - rng_int(r, 200, 260); /* transformation */
    add_evt(t, tr, EVT_PROGRESSION);
    t->cond[0].clinical = "inactive"; /* FL history stays on the problem list */
    t->cond[0].counts = false;
    add_cond(t, "tfl", tr + 5);
    t->transformed = true;
    int64_t e2 = line_iv(t, 2, tr + 20, 6, R_CHOP);
    add_evt(t, e2 + rng_int(r, 10, 30), EVT_PROGRESSION); /* refractory to R-CHOP */
    expect(t, "tisa-cel:LBCL-3L");
    expect(t, "axi-cel:LBCL-3L");
    expect(t, "liso-cel:LBCL-3L");
}

static void s_fl_3b(truth *t, rng *r)
{
    adult(t, r, 40, 80);
    int64_t s1 = t->as_of - rng_int(r, 1000, 1300);
    add_cond(t, "fl_3b", s1 - 20);
    int64_t e1 = line_iv(t, 1, s1, 6, R_CHOP);
    add_evt(t, e1 + 30, EVT_RESPONSE);
    int64_t p1 = s1 + rng_int(r, 480, 620);
    add_evt(t, p1, EVT_PROGRESSION);
    int64_t e2 = line_iv(t, 2, p1 + 14, 3, R_ICE);
    add_evt(t, e2 + rng_int(r, 10, 40), EVT_PROGRESSION);
    expect(t, "liso-cel:LBCL-3L");
}

static void s_fl_3l(truth *t, rng *r)
{
    adult(t, r, 45, 85);
    int64_t s1 = t->as_of - rng_int(r, 1700, 2400);
    add_cond(t, "fl", s1 - 30);
    int64_t e1 = line_iv(t, 1, s1, 6, BR);
    add_evt(t, e1 + 40, EVT_RESPONSE);
    int64_t p1 = s1 + rng_int(r, 700, 1000);
    add_evt(t, p1, EVT_PROGRESSION);
    int64_t s2 = p1 + 20;
    int64_t e2 = line_oral(t, 2, s2, s2 + 330, R2, false);
    add_evt(t, e2 + 60 + rng_int(r, 30, 90), EVT_PROGRESSION);
    expect(t, "tisa-cel:FL-3L");
    expect(t, "axi-cel:FL-3L");
    expect(t, "liso-cel:FL-3L");
}

static void s_fl_1l(truth *t, rng *r)
{
    adult(t, r, 40, 85);
    int64_t s1 = t->as_of - rng_int(r, 400, 900);
    add_cond(t, "fl", s1 - 30);
    int64_t e1 = line_iv(t, 1, s1, 6, BR);
    add_evt(t, e1 + 40, EVT_RESPONSE);
}

static void s_mcl_btki(truth *t, rng *r)
{
    adult(t, r, 55, 85);
    int64_t s1 = t->as_of - rng_int(r, 1200, 1600);
    add_cond(t, "mcl", s1 - 20);
    int64_t e1 = line_iv(t, 1, s1, 6, BR);
    add_evt(t, e1 + 30, EVT_RESPONSE);
    int64_t p1 = s1 + rng_int(r, 500, 700);
    add_evt(t, p1, EVT_PROGRESSION);
    int64_t s2 = p1 + 15;
    int64_t p2 = t->as_of - rng_int(r, 10, 40);
    line_oral(t, 2, s2, p2, rng_pct(r, 50) ? IBRU : ZANU, false);
    add_evt(t, p2, EVT_PROGRESSION); /* progression on the BTK inhibitor */
    expect(t, "brexu-cel:MCL");
    expect(t, "liso-cel:MCL");
}

static void s_mcl_1l_relapse(truth *t, rng *r)
{
    adult(t, r, 50, 85);
    int64_t s1 = t->as_of - rng_int(r, 600, 900);
    add_cond(t, "mcl", s1 - 20);
    int64_t e1 = line_iv(t, 1, s1, 6, BR);
    add_evt(t, e1 + 30, EVT_RESPONSE);
    add_evt(t, t->as_of - rng_int(r, 10, 40), EVT_PROGRESSION);
    expect(t, "brexu-cel:MCL");
}

static void s_cll_btki_ven(truth *t, rng *r)
{
    adult(t, r, 55, 88);
    int64_t s1 = t->as_of - rng_int(r, 1400, 2000);
    add_cond(t, "cll_sll", s1 - rng_int(r, 100, 400));
    int64_t p1 = s1 + rng_int(r, 700, 1000);
    line_oral(t, 1, s1, p1, rng_pct(r, 50) ? IBRU : ACALA, false);
    add_evt(t, s1 + 180, EVT_RESPONSE);
    add_evt(t, p1, EVT_PROGRESSION);
    int64_t s2 = p1 + 20;
    int64_t p2 = t->as_of - rng_int(r, 10, 40);
    line_oral(t, 2, s2, p2, VEN_O, false);
    add_evt(t, s2 + 150, EVT_RESPONSE);
    add_evt(t, p2, EVT_PROGRESSION);
    expect(t, "liso-cel:CLL");
}

static void s_cll_btki_only(truth *t, rng *r)
{
    adult(t, r, 55, 88);
    int64_t s1 = t->as_of - rng_int(r, 1300, 1800);
    add_cond(t, "cll_sll", s1 - rng_int(r, 100, 400));
    int64_t e1 = line_iv(t, 1, s1, 6, FCR);
    (void)e1;
    add_evt(t, s1 + 200, EVT_RESPONSE);
    int64_t p1 = s1 + rng_int(r, 700, 900);
    add_evt(t, p1, EVT_PROGRESSION);
    int64_t p2 = t->as_of - rng_int(r, 10, 40);
    line_oral(t, 2, p1 + 15, p2, ACALA, false);
    add_evt(t, p2, EVT_PROGRESSION);
}

static void s_mzl_3l(truth *t, rng *r)
{
    adult(t, r, 50, 85);
    int64_t s1 = t->as_of - rng_int(r, 1500, 2000);
    add_cond(t, "mzl", s1 - 30);
    int64_t e1 = line_iv(t, 1, s1, 6, R_CVP);
    add_evt(t, e1 + 30, EVT_RESPONSE);
    int64_t p1 = s1 + rng_int(r, 600, 800);
    add_evt(t, p1, EVT_PROGRESSION);
    int64_t e2 = line_iv(t, 2, p1 + 20, 6, BR);
    add_evt(t, e2 + 30, EVT_RESPONSE);
    add_evt(t, t->as_of - rng_int(r, 10, 40), EVT_PROGRESSION);
    expect(t, "liso-cel:MZL");
}

static void all_two_relapses(truth *t, rng *r)
{
    int64_t s1 = t->as_of - rng_int(r, 700, 900);
    add_cond(t, "b_all", s1 - 7);
    int64_t e1 = line_iv(t, 1, s1, 8, HCVAD);
    add_evt(t, s1 + 35, EVT_RESPONSE);
    int64_t p1 = e1 + rng_int(r, 150, 250);
    add_evt(t, p1, EVT_PROGRESSION);
    int64_t e2 = line_iv(t, 2, p1 + 10, 2, BLINA);
    (void)e2;
    add_evt(t, p1 + 60, EVT_RESPONSE);
    add_evt(t, t->as_of - rng_int(r, 10, 40), EVT_PROGRESSION);
}

static void s_ball_child(truth *t, rng *r)
{
    t->age = rng_int(r, 6, 17);
    all_two_relapses(t, r);
    expect(t, "tisa-cel:ALL");
}

static void s_ball_adult(truth *t, rng *r)
{
    adult(t, r, 28, 75);
    int64_t s1 = t->as_of - rng_int(r, 400, 700);
    add_cond(t, "b_all", s1 - 7);
    int64_t e1 = line_iv(t, 1, s1, 8, HCVAD);
    add_evt(t, s1 + 35, EVT_RESPONSE);
    if (rng_pct(r, 50)) /* consolidation with an allogeneic HCT in first remission */
        add_proc(t, e1 + rng_int(r, 30, 50), PROC_ALLO_HCT);
    add_evt(t, t->as_of - rng_int(r, 10, 40), EVT_PROGRESSION);
    expect(t, "brexu-cel:ALL");
    expect(t, "obe-cel:ALL");
}

/* VRd x4 -> melphalan + ASCT -> lenalidomide maintenance: one line (IMWG). */
static int64_t mm_first_line(truth *t, rng *r, int64_t s1, int64_t maint_end, bool ongoing)
{
    int64_t e1 = line_iv(t, 1, s1, 4, VRD);
    int64_t hct = e1 + rng_int(r, 30, 45);
    reg *m = add_reg(t, 1, hct - 2, 1, 1, MEL);
    (void)m;
    add_proc(t, hct, PROC_AUTO_HCT);
    add_evt(t, hct + 80, EVT_RESPONSE);
    int64_t ms = hct + rng_int(r, 60, 80);
    reg *g = add_reg(t, 1, ms, 1, 1, LEN);
    g->cycles = 0;
    g->end = maint_end;
    g->ongoing = ongoing;
    g->maintenance = true;
    return ms;
}

static void s_mm_len_refractory(truth *t, rng *r)
{
    adult(t, r, 45, 75);
    int64_t s1 = t->as_of - rng_int(r, 900, 1300);
    add_cond(t, "mm", s1 - 20);
    int64_t prog = t->as_of - rng_int(r, 10, 45);
    mm_first_line(t, r, s1, prog, false);
    add_evt(t, prog, EVT_PROGRESSION);
    expect(t, "cilta-cel:MM-2L");
}

static void s_mm_triple_class(truth *t, rng *r)
{
    adult(t, r, 50, 78);
    int64_t s1 = t->as_of - rng_int(r, 1700, 2100);
    add_cond(t, "mm", s1 - 20);
    int64_t p1 = s1 + rng_int(r, 800, 1000);
    mm_first_line(t, r, s1, p1, false);
    add_evt(t, p1, EVT_PROGRESSION);
    int64_t s2 = p1 + 15;
    int64_t e2 = line_iv(t, 2, s2, 10, DPD);
    add_evt(t, s2 + 90, EVT_RESPONSE);
    int64_t p2 = e2 + rng_int(r, 5, 30);
    add_evt(t, p2, EVT_PROGRESSION);
    int64_t s3 = p2 + 15;
    int64_t e3 = line_iv(t, 3, s3, 6, KD);
    int64_t p3 = e3 + rng_int(r, 5, 30);
    if (p3 >= t->as_of)
        p3 = t->as_of - 3;
    add_evt(t, p3, EVT_PROGRESSION);
    expect(t, "ide-cel:MM-3L");
    expect(t, "cilta-cel:MM-2L");
}

static void s_mm_1l_remission(truth *t, rng *r)
{
    adult(t, r, 45, 75);
    int64_t s1 = t->as_of - rng_int(r, 500, 900);
    add_cond(t, "mm", s1 - 20);
    mm_first_line(t, r, s1, t->as_of, true);
}

static void s_pcl(truth *t, rng *r)
{
    adult(t, r, 45, 75);
    int64_t s1 = t->as_of - rng_int(r, 200, 300);
    add_cond(t, "pcl", s1 - 10);
    int64_t e1 = line_iv(t, 1, s1, 4, KD);
    add_evt(t, e1 + 20, EVT_RESPONSE);
}

static void s_pcnsl(truth *t, rng *r)
{
    adult(t, r, 45, 80);
    int64_t s1 = t->as_of - rng_int(r, 700, 1000);
    add_cond(t, "pcnsl", s1 - 15);
    int64_t e1 = line_iv(t, 1, s1, 6, R_MTX);
    add_evt(t, e1 + 30, EVT_RESPONSE);
    int64_t p1 = s1 + rng_int(r, 400, 520);
    add_evt(t, p1, EVT_PROGRESSION);
    int64_t e2 = line_iv(t, 2, p1 + 14, 4, R_ARAC);
    add_evt(t, e2 + rng_int(r, 10, 40), EVT_PROGRESSION);
    /* Yescarta's PCNSL limitation was removed Feb 6, 2026 (clinical.md §1.1 row 5). */
    if (t->as_of >= fhir_clock_days_from_civil(2026, 2, 6))
        expect(t, "axi-cel:LBCL-3L");
}

static void s_hl(truth *t, rng *r)
{
    adult(t, r, 20, 60);
    int64_t s1 = t->as_of - rng_int(r, 500, 800);
    add_cond(t, "hl", s1 - 20);
    int64_t e1 = line_iv(t, 1, s1, 6, BV_DOXO);
    add_evt(t, e1 + 30, EVT_RESPONSE);
    add_evt(t, t->as_of - rng_int(r, 10, 40), EVT_PROGRESSION);
}

static void s_prior_car_t(truth *t, rng *r)
{
    adult(t, r, 35, 75);
    int64_t s1 = t->as_of - rng_int(r, 700, 900);
    add_cond(t, "dlbcl_nos", s1 - 20);
    int64_t e1 = line_iv(t, 1, s1, 6, R_CHOP);
    add_evt(t, e1 + 30, EVT_RESPONSE);
    int64_t p1 = s1 + rng_int(r, 230, 300); /* early relapse */
    add_evt(t, p1, EVT_PROGRESSION);
    int64_t inf = p1 + rng_int(r, 45, 60);
    reg *ld = add_reg(t, 2, inf - 5, 3, 1, FLU_CY); /* lymphodepletion days -5..-3 */
    ld->lymphodepletion = true;
    add_proc(t, inf, PROC_CAR_T);
    add_evt(t, inf + 30, EVT_RESPONSE);
    add_evt(t, t->as_of - rng_int(r, 10, 40), EVT_PROGRESSION);
    /* prior CAR T and prior CD19 therapy are review flags, not label exclusions */
    expect(t, "tisa-cel:LBCL-3L");
    expect(t, "axi-cel:LBCL-3L");
    expect(t, "liso-cel:LBCL-3L");
}

static void s_dlbcl_1l_remission(truth *t, rng *r)
{
    adult(t, r, 35, 85);
    int64_t s1 = t->as_of - rng_int(r, 300, 1000);
    add_cond(t, "dlbcl_nos", s1 - 20);
    int64_t e1 = line_iv(t, 1, s1, 6, R_CHOP);
    add_evt(t, e1 + 30, EVT_RESPONSE);
}

static void s_dlbcl_new(truth *t, rng *r)
{
    adult(t, r, 35, 85);
    add_cond(t, "dlbcl_nos", t->as_of - rng_int(r, 5, 25));
}

static void s_dlbcl_cns(truth *t, rng *r)
{
    lbcl_early(t, r, "dlbcl_nos");
    add_cond(t, "cns_secondary", t->as_of - rng_int(r, 5, 12));
    expect(t, "axi-cel:LBCL-2L");
    expect(t, "liso-cel:LBCL-2L");
}

static void s_lbcl_no_birthdate(truth *t, rng *r)
{
    lbcl_early(t, r, "dlbcl_nos");
    t->has_birth = false; /* age unknown: every label needs an adult */
    add_noise(t, "no_birthdate");
    possible(t, "axi-cel:LBCL-2L");
    possible(t, "liso-cel:LBCL-2L");
}

/* Relapsed LBCL who died before the evaluation date: no referral. */
static void s_lbcl_deceased(truth *t, rng *r)
{
    lbcl_early(t, r, "dlbcl_nos");
    t->npossible = 0;           /* every label needs a living patient */
    t->deceased = t->as_of - 1; /* after the last labs (they are >= 1 day old) */
}

static void s_other_heme(truth *t, rng *r)
{
    adult(t, r, 20, 70);
    int64_t s1 = t->as_of - rng_int(r, 100, 300);
    add_cond(t, "other_heme", s1 - 10);
    line_iv(t, 1, s1, 4, HCVAD);
}

static void s_non_heme(truth *t, rng *r)
{
    adult(t, r, 40, 85);
    add_cond(t, "non_heme", t->as_of - rng_int(r, 100, 2000));
}

static void s_no_cancer(truth *t, rng *r)
{
    adult(t, r, 18, 90);
}

static void s_error_dx(truth *t, rng *r)
{
    adult(t, r, 30, 80);
    cond *c = add_cond(t, "dlbcl_nos", t->as_of - rng_int(r, 30, 300));
    c->clinical = NULL;
    c->verification = "entered-in-error";
    c->counts = false;
    cond *d = add_cond(t, "mm", t->as_of - rng_int(r, 30, 300));
    d->verification = "refuted";
    d->clinical = "inactive";
    d->counts = false;
}

static const scen_def SCEN[] = {
    {"lbcl_early_relapse", s_lbcl_early_relapse, 8},
    {"hgbcl_early_relapse", s_hgbcl_early_relapse, 2},
    {"lbcl_late_relapse", s_lbcl_late_relapse, 5},
    {"lbcl_primary_refractory", s_lbcl_primary_refractory, 5},
    {"lbcl_3l_asct", s_lbcl_3l_asct, 3},
    {"lbcl_3l", s_lbcl_3l, 4},
    {"pmbcl_3l", s_pmbcl_3l, 2},
    {"tfl_after_fl", s_tfl, 3},
    {"fl_3b_3l", s_fl_3b, 2},
    {"fl_3l", s_fl_3l, 4},
    {"fl_1l_remission", s_fl_1l, 3},
    {"mcl_after_btki", s_mcl_btki, 3},
    {"mcl_first_relapse", s_mcl_1l_relapse, 2},
    {"cll_btki_then_venetoclax", s_cll_btki_ven, 3},
    {"cll_btki_only", s_cll_btki_only, 2},
    {"mzl_3l", s_mzl_3l, 2},
    {"ball_child_second_relapse", s_ball_child, 2},
    {"ball_adult_relapsed", s_ball_adult, 2},
    {"mm_len_refractory_1l", s_mm_len_refractory, 4},
    {"mm_triple_class_3l", s_mm_triple_class, 4},
    {"mm_1l_remission", s_mm_1l_remission, 3},
    {"pcl", s_pcl, 1},
    {"pcnsl_3l", s_pcnsl, 1},
    {"hodgkin", s_hl, 2},
    {"lbcl_prior_car_t", s_prior_car_t, 2},
    {"dlbcl_1l_remission", s_dlbcl_1l_remission, 4},
    {"dlbcl_newly_diagnosed", s_dlbcl_new, 2},
    {"dlbcl_secondary_cns", s_dlbcl_cns, 1},
    {"lbcl_no_birthdate", s_lbcl_no_birthdate, 1},
    {"lbcl_deceased", s_lbcl_deceased, 1},
    {"other_heme", s_other_heme, 1},
    {"non_heme_cancer", s_non_heme, 8},
    {"no_cancer", s_no_cancer, 10},
    {"dx_entered_in_error", s_error_dx, 2},
};
#define NSCEN (sizeof SCEN / sizeof SCEN[0])

size_t synth_scenario_count(void) { return NSCEN; }
const char *synth_scenario_name(size_t i) { return i < NSCEN ? SCEN[i].name : NULL; }

void synth_opts_default(synth_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->patients = 100;
    o->as_of_days = fhir_clock_days_from_civil(2026, 11, 1);
    o->format = SYNTH_FORMAT_NDJSON;
}

/* ---- drawing a patient ------------------------------------------------------------------- */

static double round_to(double v, int decimals)
{
    double f = 1;
    for (int i = 0; i < decimals; i++)
        f *= 10;
    return floor(v * f + 0.5) / f;
}

static int whole_years(int64_t birth, int64_t on)
{
    int by, oy;
    unsigned bm, bd, om, od;
    fhir_clock_civil_from_days(birth, &by, &bm, &bd);
    fhir_clock_civil_from_days(on, &oy, &om, &od);
    int a = oy - by;
    if (om < bm || (om == bm && od < bd))
        a--;
    return a;
}

static void draw(const synth_opts *o, size_t index, truth *t)
{
    memset(t, 0, sizeof *t);
    rng r;
    rng_seed(&r, o->seed, (uint64_t)index + 1);
    t->as_of = o->as_of_days;
    snprintf(t->pid, sizeof t->pid, "p%06zu-%04x", index,
             (unsigned)((o->seed * 0x9e3779b97f4a7c15ULL) >> 48));

    size_t si;
    if (index < NSCEN) {
        si = (index + (size_t)(o->seed % NSCEN)) % NSCEN;
    } else {
        int total = 0;
        for (size_t i = 0; i < NSCEN; i++)
            total += SCEN[i].weight;
        int pick = (int)rng_below(&r, (uint32_t)total);
        for (si = 0; si < NSCEN; si++) {
            pick -= SCEN[si].weight;
            if (pick < 0)
                break;
        }
    }
    t->scenario = SCEN[si].name;
    t->female = rng_pct(&r, 48);
    t->has_birth = true;
    t->ecog = -1;
    t->deceased = INT64_MIN;
    t->weight = NAN;
    for (size_t i = 0; i < NLAB; i++)
        t->lab[i] = NAN;

    SCEN[si].fn(t, &r);

    /* birth date: exactly t->age whole years at as_of */
    int ay;
    unsigned am, ad;
    fhir_clock_civil_from_days(t->as_of, &ay, &am, &ad);
    int64_t latest = fhir_clock_days_from_civil(ay - t->age, am, ad);       /* turns age today */
    int64_t earliest = fhir_clock_days_from_civil(ay - t->age - 1, am, ad) + 1;
    t->birth = earliest + rng_int(&r, 0, (int)(latest - earliest));
    if (whole_years(t->birth, t->as_of) != t->age)
        abort();

    const struct zip_def *z = &ZIPS[rng_below(&r, NZIP)];
    t->zip = z->zip;
    t->lat = z->lat;
    t->lon = z->lon;
    t->geo = rng_pct(&r, 60);
    t->payer = t->age >= 65 ? (rng_pct(&r, 80) ? "Medicare" : PAYERS[rng_below(&r, NELEM(PAYERS))])
                            : PAYERS[1 + rng_below(&r, NELEM(PAYERS) - 1)];

    /* a primary heme disease = the most recent counting heme diagnosis */
    int64_t best = INT64_MIN;
    for (int i = 0; i < t->ncond; i++) {
        const cond *c = &t->cond[i];
        if (!c->counts || !strcmp(c->concept, "non_heme") || !strcmp(c->concept, "cns_secondary"))
            continue;
        if (c->onset >= best) {
            best = c->onset;
            t->primary = c->concept;
        }
    }
    if (t->transformed)
        t->primary = "tfl";

    /* labs and performance status */
    bool oncology = t->ncond > 0;
    bool labs_missing = rng_pct(&r, oncology ? 8 : 30);
    if (labs_missing)
        add_noise(t, "no_labs");
    for (size_t i = 0; i < NLAB && !labs_missing; i++) {
        const lab_def *L = &LABS[i];
        if ((i == LAB_LVEF && !rng_pct(&r, 40)) || (i == LAB_SPO2 && !rng_pct(&r, 50)))
            continue;
        double v = L->lo + (L->hi - L->lo) * (double)rng_below(&r, 10001) / 10000.0;
        t->lab[i] = round_to(v, L->decimals);
        int roll = rng_int(&r, 0, 99);
        if (roll < 18 && (L->alt_unit || L->alt_loinc))
            t->lab_variant[i] = 1;
        else if (roll < 24)
            t->lab_variant[i] = 2;
        else if (roll < 26 && i == LAB_ANC)
            t->lab_variant[i] = 3;
        else if (roll < 36)
            t->lab_variant[i] = 4;
    }
    if (rng_pct(&r, 85))
        t->weight = round_to(48 + 60 * (double)rng_below(&r, 1001) / 1000.0, 1);
    if (rng_pct(&r, oncology ? 85 : 40)) {
        t->ecog = rng_int(&r, 0, 2);
        if (rng_pct(&r, 20))
            t->ecog_as_kps = true;
        else if (rng_pct(&r, 8))
            t->ecog_stale = true;
    }
}

/* ---- rendering ------------------------------------------------------------------------------ */

typedef struct render {
    const synth_opts *o;
    truth *t;
    rng r;                 /* noise stream, independent of the truth stream */
    fhir_buf res;          /* current resource JSON */
    synth_sink sink;
    void *ud;
    int seq;               /* resource counter for ids */
    fhir_error *err;
    int failed;
} render;

static void b_puts(render *R, const char *s) { fhir_buf_puts(&R->res, s); }

static void b_printf(render *R, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void b_printf(render *R, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp)
        abort(); /* broken invariant: all generated fragments are short */
    fhir_buf_append(&R->res, tmp, (size_t)n);
}

static void fmt_day(int64_t day, char out[11])
{
    int y;
    unsigned m, d;
    fhir_clock_civil_from_days(day, &y, &m, &d);
    if (y < 0 || y > 9999)
        abort(); /* broken invariant: generated dates are between 1900 and 2100 */
    out[0] = (char)('0' + y / 1000);
    out[1] = (char)('0' + y / 100 % 10);
    out[2] = (char)('0' + y / 10 % 10);
    out[3] = (char)('0' + y % 10);
    out[4] = '-';
    out[5] = (char)('0' + m / 10);
    out[6] = (char)('0' + m % 10);
    out[7] = '-';
    out[8] = (char)('0' + d / 10);
    out[9] = (char)('0' + d % 10);
    out[10] = 0;
}

/* Writes a JSON number with up to `dec` decimals, trailing zeros kept as FHIR decimals do. */
static void b_num(render *R, double v, int dec)
{
    b_printf(R, "%.*f", dec, v);
}

static void b_coding(render *R, const char *sys, const char *code, const char *display)
{
    b_printf(R, "{\"system\":\"%s\",\"code\":\"%s\"", sys, code);
    if (display)
        b_printf(R, ",\"display\":\"%s\"", display);
    b_puts(R, "}");
}

static void b_subject(render *R)
{
    b_printf(R, ",\"subject\":{\"reference\":\"Patient/%s\"}", R->t->pid);
}

static int begin(render *R, const char *type, char *id, size_t idn, const char *tag)
{
    snprintf(id, idn, "%s-%s%d", R->t->pid, tag, ++R->seq);
    fhir_buf_reset(&R->res);
    b_printf(R, "{\"resourceType\":\"%s\",\"id\":\"%s\"", type, id);
    return 0;
}

static void finish(render *R, const char *type, const char *id)
{
    b_puts(R, "}");
    if (R->failed)
        return;
    if (R->res.overflow) {
        R->failed = 1;
        fhir_error_set(R->err, "synth: resource %s/%s exceeds the buffer cap", type, id);
        return;
    }
    if (R->sink(R->ud, type, id, fhir_buf_cstr(&R->res), R->res.len)) {
        R->failed = 1;
        if (!R->err->msg[0])
            fhir_error_set(R->err, "synth: output stopped at %s/%s", type, id);
    }
}

static void emit_patient(render *R)
{
    truth *t = R->t;
    char id[64];
    fhir_buf_reset(&R->res);
    snprintf(id, sizeof id, "%s", t->pid);
    b_printf(R, "{\"resourceType\":\"Patient\",\"id\":\"%s\"", t->pid);
    b_puts(R, ",\"meta\":{\"profile\":[\"http://hl7.org/fhir/us/core/StructureDefinition/"
              "us-core-patient\"]}");
    b_printf(R,
             ",\"identifier\":[{\"use\":\"usual\",\"type\":{\"coding\":[{\"system\":"
             "\"http://terminology.hl7.org/CodeSystem/v2-0203\",\"code\":\"MR\",\"display\":"
             "\"Medical record number\"}]},\"system\":\"urn:oid:2.16.840.1.113883.3.9999.1\","
             "\"value\":\"MRN%08u\"}]",
             (unsigned)(rng_next(&R->r) % 100000000u));
    const char *given = t->female ? GIVEN_F[rng_below(&R->r, NELEM(GIVEN_F))]
                                  : GIVEN_M[rng_below(&R->r, NELEM(GIVEN_M))];
    const char *family = FAMILY[rng_below(&R->r, NELEM(FAMILY))];
    b_printf(R, ",\"name\":[{\"use\":\"official\",\"family\":\"%s\",\"given\":[\"%s\"]}]", family,
             given);
    b_printf(R, ",\"gender\":\"%s\"", t->female ? "female" : "male");
    if (t->has_birth) {
        char d[11];
        fmt_day(t->birth, d);
        b_printf(R, ",\"birthDate\":\"%s\"", d);
    }
    if (t->deceased != INT64_MIN) {
        char dd[11];
        fmt_day(t->deceased, dd);
        b_printf(R, ",\"deceasedDateTime\":\"%s\"", dd);
    } else {
        b_puts(R, ",\"deceasedBoolean\":false");
    }
    b_puts(R, ",\"address\":[{");
    if (t->geo)
        b_printf(R,
                 "\"extension\":[{\"url\":\"http://hl7.org/fhir/StructureDefinition/geolocation\","
                 "\"extension\":[{\"url\":\"latitude\",\"valueDecimal\":%.6f},{\"url\":"
                 "\"longitude\",\"valueDecimal\":%.6f}]}],",
                 t->lat, t->lon);
    b_printf(R, "\"use\":\"home\",\"line\":[\"%u %s Street\"],\"postalCode\":\"%s\","
                "\"country\":\"US\"}]",
             (unsigned)(1 + rng_below(&R->r, 9000)), FAMILY[rng_below(&R->r, NELEM(FAMILY))],
             t->zip);
    finish(R, "Patient", id);
}

static void emit_coverage(render *R)
{
    char id[64];
    begin(R, "Coverage", id, sizeof id, "cov");
    b_puts(R, ",\"status\":\"active\"");
    b_printf(R, ",\"beneficiary\":{\"reference\":\"Patient/%s\"}", R->t->pid);
    b_printf(R, ",\"payor\":[{\"display\":\"%s\"}]", R->t->payer);
    finish(R, "Coverage", id);
}

/* Coding choice per Condition: 0 ICD + SNOMED, 1 ICD only, 2 SNOMED only, 3 ICD + ICD-O-3. */
static void emit_condition(render *R, const cond *c)
{
    truth *t = R->t;
    char id[64], d[11];
    begin(R, "Condition", id, sizeof id, "c");
    if (c->clinical)
        b_printf(R, ",\"clinicalStatus\":{\"coding\":[{\"system\":\"http://terminology.hl7.org/"
                    "CodeSystem/condition-clinical\",\"code\":\"%s\"}]}",
                 c->clinical);
    b_printf(R, ",\"verificationStatus\":{\"coding\":[{\"system\":\"http://terminology.hl7.org/"
                "CodeSystem/condition-ver-status\",\"code\":\"%s\"}]}",
             c->verification);
    b_puts(R, ",\"category\":[{\"coding\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/"
              "condition-category\",\"code\":\"problem-list-item\"}]}]");
    if (!strcmp(c->concept, "cns_secondary")) {
        b_puts(R, ",\"code\":{\"coding\":[");
        b_coding(R, SYS_ICD10CM, "C79.31", "Secondary malignant neoplasm of brain");
        b_puts(R, "],\"text\":\"Secondary malignant neoplasm of brain\"}");
    } else {
        const dx_def *dx = dx_find(c->concept);
        size_t ni = code3_count(dx->icd, 3), ns = code3_count(dx->sct, 3),
               no = code3_count(dx->icdo, 2);
        int choice = (int)rng_below(&R->r, 4);
        if (!ni)
            choice = 2;
        if (!ns && choice == 2)
            choice = 1;
        if (choice == 1 && !strcmp(c->concept, "b_all"))
            choice = 0; /* ICD-10-CM alone cannot say B-lineage */
        if (choice == 3 && !no)
            choice = 1;
        if (!ni && !ns)
            choice = -1; /* no code in codes.md: text only */
        b_puts(R, choice < 0 ? ",\"code\":{" : ",\"code\":{\"coding\":[");
        bool first = true;
        if (choice >= 0 && choice != 2 && ni) {
            const code3 *k = &dx->icd[rng_below(&R->r, (uint32_t)ni)];
            bool nodot = rng_pct(&R->r, 15);
            char code[16];
            size_t j = 0;
            for (const char *p = k->code; *p && j + 1 < sizeof code; p++)
                if (!(nodot && *p == '.'))
                    code[j++] = *p;
            code[j] = 0;
            b_coding(R, SYS_ICD10CM, code, k->display);
            first = false;
            if (nodot)
                add_noise(t, "icd_without_dot");
        }
        if ((choice == 0 || choice == 2) && ns) {
            const code3 *k = &dx->sct[rng_below(&R->r, (uint32_t)ns)];
            if (!first)
                b_puts(R, ",");
            b_coding(R, SYS_SNOMED, k->code, k->display);
            first = false;
        }
        if (choice == 3) {
            const code3 *k = &dx->icdo[rng_below(&R->r, (uint32_t)no)];
            if (!first)
                b_puts(R, ",");
            b_coding(R, SYS_ICDO3, k->code, k->display);
            first = false;
        }
        static const char *const NON_HEME_TEXT[] = {
            "Malignant neoplasm of colon", "Carcinoma of breast", "Prostate cancer",
            "Non-small cell lung cancer"};
        const char *text = dx->text;
        if (!strcmp(c->concept, "non_heme"))
            text = NON_HEME_TEXT[rng_below(&R->r, NELEM(NON_HEME_TEXT))];
        b_printf(R, "%s\"text\":\"%s\"}", choice < 0 ? "" : "],", text);
        if (choice == 1)
            add_noise(t, "icd_only");
        else if (choice == 2)
            add_noise(t, "snomed_only");
    }
    b_subject(R);
    fmt_day(c->onset, d);
    b_printf(R, ",\"onsetDateTime\":\"%s\",\"recordedDate\":\"%s\"", d, d);
    finish(R, "Condition", id);
}

/* medicationCodeableConcept, contained Medication, referenced Medication or brand text. */
static void emit_medication_field(render *R, const drug_def *dd, int how, const char *medref)
{
    switch (how) {
    case 1: /* contained */
        b_puts(R, ",\"contained\":[{\"resourceType\":\"Medication\",\"id\":\"med\",\"code\":{"
                  "\"coding\":[");
        b_coding(R, SYS_RXNORM, dd->rxcui, dd->key);
        b_printf(R, "],\"text\":\"%s\"}}]", dd->key);
        b_puts(R, ",\"medicationReference\":{\"reference\":\"#med\"}");
        break;
    case 2: /* referenced */
        b_printf(R, ",\"medicationReference\":{\"reference\":\"Medication/%s\"}", medref);
        break;
    case 3: /* brand name text only */
        b_printf(R, ",\"medicationCodeableConcept\":{\"text\":\"%s\"}", dd->brand);
        break;
    default:
        b_puts(R, ",\"medicationCodeableConcept\":{\"coding\":[");
        b_coding(R, SYS_RXNORM, dd->rxcui, dd->key);
        b_printf(R, "],\"text\":\"%s\"}", dd->key);
        break;
    }
}

static void emit_reg_drug(render *R, const reg *g, const drug_def *dd)
{
    truth *t = R->t;
    char d1[11], d2[11], id[64], medid[64];
    int how = 0;
    int roll = (int)rng_below(&R->r, 100);
    if (roll < 12)
        how = 1;
    else if (roll < 22)
        how = 2;
    else if (roll < 28 && dd->brand)
        how = 3;
    if (how == 1)
        add_noise(t, "contained_medication");
    else if (how == 2)
        add_noise(t, "referenced_medication");
    else if (how == 3)
        add_noise(t, "brand_text_only");
    medid[0] = 0;
    if (how == 2) {
        /* the Medication resource itself */
        begin(R, "Medication", medid, sizeof medid, "med");
        if (rng_pct(&R->r, 30)) { /* product named in text, ingredient coded */
            b_printf(R, ",\"code\":{\"text\":\"%s\"}", dd->brand ? dd->brand : dd->key);
            b_puts(R, ",\"ingredient\":[{\"itemCodeableConcept\":{\"coding\":[");
            b_coding(R, SYS_RXNORM, dd->rxcui, dd->key);
            b_puts(R, "]},\"isActive\":true}]");
            add_noise(t, "medication_ingredient_only");
        } else {
            b_puts(R, ",\"code\":{\"coding\":[");
            b_coding(R, SYS_RXNORM, dd->rxcui, dd->key);
            b_printf(R, "],\"text\":\"%s\"}", dd->key);
        }
        finish(R, "Medication", medid);
    }
    int style;
    if (g->cycles == 0)
        style = rng_pct(&R->r, 65) ? STYLE_REQUEST : STYLE_STATEMENT;
    else
        style = rng_pct(&R->r, 55) ? STYLE_ADMIN : STYLE_REQUEST;
    fmt_day(g->start, d1);
    fmt_day(g->end, d2);
    if (style == STYLE_ADMIN) {
        for (int k = 0; k < g->cycles; k++) {
            char dk[11];
            fmt_day(g->start + (int64_t)k * g->cycle_len, dk);
            begin(R, "MedicationAdministration", id, sizeof id, "ma");
            b_puts(R, ",\"status\":\"completed\"");
            emit_medication_field(R, dd, how, medid);
            b_subject(R);
            if (rng_pct(&R->r, 30))
                b_printf(R, ",\"effectiveDateTime\":\"%sT09:30:00-05:00\"", dk);
            else
                b_printf(R, ",\"effectiveDateTime\":\"%s\"", dk);
            finish(R, "MedicationAdministration", id);
        }
        if (!rng_pct(&R->r, 15))
            return;
        /* the order behind the administrations as well: one exposure, not a new drug */
        style = STYLE_REQUEST;
        add_noise(t, "order_and_administration");
    }
    int copies = 1;
    if (style == STYLE_REQUEST && rng_pct(&R->r, 8)) {
        copies = 2;
        add_noise(t, "duplicate_order");
    }
    for (int k = 0; k < copies; k++) {
        if (style == STYLE_STATEMENT) {
            begin(R, "MedicationStatement", id, sizeof id, "ms");
            b_printf(R, ",\"status\":\"%s\"", g->ongoing ? "active" : "completed");
            emit_medication_field(R, dd, how, medid);
            b_subject(R);
            if (g->ongoing)
                b_printf(R, ",\"effectivePeriod\":{\"start\":\"%s\"}", d1);
            else
                b_printf(R, ",\"effectivePeriod\":{\"start\":\"%s\",\"end\":\"%s\"}", d1, d2);
            finish(R, "MedicationStatement", id);
        } else {
            begin(R, "MedicationRequest", id, sizeof id, "mr");
            b_printf(R, ",\"status\":\"%s\",\"intent\":\"order\"",
                     g->ongoing ? "active" : "completed");
            b_puts(R, ",\"category\":[{\"coding\":[{\"system\":\"http://terminology.hl7.org/"
                      "CodeSystem/medicationrequest-category\",\"code\":\"outpatient\"}]}]");
            emit_medication_field(R, dd, how, medid);
            b_subject(R);
            b_printf(R, ",\"authoredOn\":\"%s\"", d1);
            if (g->ongoing)
                b_printf(R, ",\"dosageInstruction\":[{\"timing\":{\"repeat\":{\"boundsPeriod\":"
                            "{\"start\":\"%s\"}}}}]",
                         d1);
            else
                b_printf(R, ",\"dosageInstruction\":[{\"timing\":{\"repeat\":{\"boundsPeriod\":"
                            "{\"start\":\"%s\",\"end\":\"%s\"}}}}]",
                         d1, d2);
            finish(R, "MedicationRequest", id);
        }
    }
}

static void emit_procedure(render *R, const proc *p)
{
    char id[64], d[11];
    begin(R, "Procedure", id, sizeof id, "pr");
    b_puts(R, ",\"status\":\"completed\",\"code\":{\"coding\":[");
    int v = (int)rng_below(&R->r, 2);
    switch (p->type) {
    case PROC_AUTO_HCT: /* codes.md §4.1 CPT 38241 (S), §4.4 SNOMED 425983008 (C) */
        if (v == 0)
            b_coding(R, SYS_CPT, "38241",
                     "Hematopoietic progenitor cell (HPC); autologous transplantation");
        else
            b_coding(R, SYS_SNOMED, "425983008",
                     "Autologous peripheral blood stem cell transplant");
        b_puts(R, "],\"text\":\"Autologous stem cell transplant\"}");
        break;
    case PROC_ALLO_HCT:
        b_coding(R, SYS_SNOMED, "425843001", "Allogeneic peripheral blood stem cell transplant");
        b_puts(R, "],\"text\":\"Allogeneic stem cell transplant\"}");
        break;
    default: /* codes.md §4.1 CPT 38228 (S, from 2025; 0540T before) / §4.3 ICD-10-PCS
              * XW033H7 (C, from Oct 2021; XW033C3 before) */
        if (v == 0 && p->day >= fhir_clock_days_from_civil(2025, 1, 1))
            b_coding(R, SYS_CPT, "38228", "CAR-T cell administration, autologous");
        else if (v == 0)
            b_coding(R, SYS_CPT, "0540T", "CAR-T cell administration, autologous");
        else if (p->day < fhir_clock_days_from_civil(2021, 10, 1))
            b_coding(R, SYS_ICD10PCS, "XW033C3",
                     "Introduction of engineered autologous chimeric antigen receptor t-cell "
                     "immunotherapy into peripheral vein, percutaneous approach, new technology "
                     "group 3");
        else {
            R->t->cart_product = true;
            b_coding(R, SYS_ICD10PCS, "XW033H7",
                     "Introduction of Axicabtagene Ciloleucel Immunotherapy into Peripheral "
                     "Vein, Percutaneous Approach, New Technology Group 7");
        }
        b_puts(R, "],\"text\":\"CAR T-cell infusion (axicabtagene ciloleucel)\"}");
        break;
    }
    b_subject(R);
    fmt_day(p->day, d);
    b_printf(R, ",\"performedDateTime\":\"%s\"", d);
    finish(R, "Procedure", id);
}

static void emit_disease_status(render *R, const evt *e)
{
    char id[64], d[11];
    begin(R, "Observation", id, sizeof id, "ds");
    b_puts(R, ",\"meta\":{\"profile\":[\"http://hl7.org/fhir/us/mcode/StructureDefinition/"
              "mcode-cancer-disease-status\"]}");
    b_puts(R, ",\"status\":\"final\",\"code\":{\"coding\":[");
    b_coding(R, SYS_LOINC, "97509-4", "Cancer Disease Progression");
    b_puts(R, "]}");
    b_subject(R);
    fmt_day(e->day, d);
    b_printf(R, ",\"effectiveDateTime\":\"%s\"", d);
    b_puts(R, ",\"valueCodeableConcept\":{\"coding\":[");
    if (e->type == EVT_PROGRESSION)
        b_coding(R, SYS_SNOMED, "271299001", "Patient's condition worsened (finding)");
    else if (rng_pct(&R->r, 50))
        b_coding(R, SYS_SNOMED, "268910001", "Patient's condition improved (finding)");
    else
        b_coding(R, SYS_SNOMED, "550991000124107", "Malignant neoplasm in full remission (disorder)");
    b_puts(R, "]}");
    finish(R, "Observation", id);
}

static void emit_quantity_obs(render *R, const char *category, const char *loinc,
                              const char *display, const char *loinc2, const char *display2,
                              int64_t day, double value, int dec, const char *unit)
{
    char id[64], d[11];
    begin(R, "Observation", id, sizeof id, "o");
    b_printf(R, ",\"status\":\"final\",\"category\":[{\"coding\":[{\"system\":\"http://"
                "terminology.hl7.org/CodeSystem/observation-category\",\"code\":\"%s\"}]}]",
             category);
    b_puts(R, ",\"code\":{\"coding\":[");
    b_coding(R, SYS_LOINC, loinc, display);
    if (loinc2) {
        b_puts(R, ",");
        b_coding(R, SYS_LOINC, loinc2, display2);
    }
    b_printf(R, "],\"text\":\"%s\"}", display);
    b_subject(R);
    fmt_day(day, d);
    b_printf(R, ",\"effectiveDateTime\":\"%s\"", d);
    b_puts(R, ",\"valueQuantity\":{\"value\":");
    b_num(R, value, dec);
    b_printf(R, ",\"unit\":\"%s\",\"system\":\"%s\",\"code\":\"%s\"}", unit, SYS_UCUM, unit);
    finish(R, "Observation", id);
}

/* Labs: value/unit as rendered, and the canonical value the profile must derive. */
static void emit_labs(render *R)
{
    truth *t = R->t;
    for (size_t i = 0; i < NLAB; i++) {
        if (isnan(t->lab[i]))
            continue;
        const lab_def *L = &LABS[i];
        int64_t fresh = t->as_of - rng_int(&R->r, 1, 20);
        int64_t stale = t->as_of - rng_int(&R->r, 200, 500);
        double v = t->lab[i];
        const char *loinc2 = i == LAB_SPO2 ? "2708-6" : NULL;
        const char *disp2 = i == LAB_SPO2 ? "Oxygen saturation in Arterial blood" : NULL;
        switch (t->lab_variant[i]) {
        case 1: { /* alternate code and/or unit */
            const char *code = L->alt_loinc ? L->alt_loinc : L->loinc;
            const char *disp = L->alt_loinc ? L->alt_display : L->display;
            const char *unit = L->alt_unit ? L->alt_unit : L->unit;
            double f = L->alt_unit ? L->alt_factor : 1.0;
            int dec = L->alt_unit ? L->alt_decimals : L->decimals;
            double av = round_to(v * f, dec);
            t->lab[i] = av / f; /* what the profile derives from the rendered value */
            emit_quantity_obs(R, L->category, code, disp, loinc2, disp2, fresh, av, dec, unit);
            add_noise(t, "alternate_unit");
            break;
        }
        case 2: /* stale only: outside the lookback => unknown */
            emit_quantity_obs(R, L->category, L->loinc, L->display, loinc2, disp2, stale, v,
                              L->decimals, L->unit);
            add_noise(t, "stale_lab");
            break;
        case 3: /* ANC in cells/uL under 10*3/uL: implausible => flagged, unknown */
            emit_quantity_obs(R, L->category, L->loinc, L->display, loinc2, disp2, fresh,
                              round_to(v * 1000, 0), 0, L->unit);
            add_noise(t, "implausible_magnitude");
            break;
        case 4: /* an older value outside the lookback, then the current one */
            emit_quantity_obs(R, L->category, L->loinc, L->display, loinc2, disp2, stale,
                              round_to(v * 0.8, L->decimals), L->decimals, L->unit);
            emit_quantity_obs(R, L->category, L->loinc, L->display, loinc2, disp2, fresh, v,
                              L->decimals, L->unit);
            break;
        default:
            emit_quantity_obs(R, L->category, L->loinc, L->display, loinc2, disp2, fresh, v,
                              L->decimals, L->unit);
            break;
        }
    }
    if (!isnan(t->weight)) {
        int64_t day = t->as_of - rng_int(&R->r, 1, 30);
        if (rng_pct(&R->r, 20)) {
            double lb = round_to(t->weight / 0.45359237, 1);
            t->weight = lb * 0.45359237;
            emit_quantity_obs(R, "vital-signs", "29463-7", "Body weight", NULL, NULL, day, lb, 1,
                              "[lb_av]");
            add_noise(t, "weight_in_pounds");
        } else {
            emit_quantity_obs(R, "vital-signs", "29463-7", "Body weight", NULL, NULL, day,
                              t->weight, 1, "kg");
        }
    }
    if (t->ecog >= 0) {
        static const char *const LA_ECOG[] = {"LA9622-7", "LA9623-5", "LA9624-3"};
        static const int KPS[] = {100, 80, 60};
        static const char *const LA_KPS[] = {"LA29175-9", "LA29177-5", "LA29179-1"};
        char id[64], d[11];
        begin(R, "Observation", id, sizeof id, "ps");
        b_puts(R, ",\"status\":\"final\",\"category\":[{\"coding\":[{\"system\":\"http://"
                  "terminology.hl7.org/CodeSystem/observation-category\",\"code\":\"survey\"}]}]");
        int64_t day = t->ecog_stale ? t->as_of - rng_int(&R->r, 200, 400)
                                    : t->as_of - rng_int(&R->r, 1, 25);
        if (t->ecog_as_kps) {
            b_puts(R, ",\"code\":{\"coding\":[");
            b_coding(R, SYS_LOINC, "89243-0", "Karnofsky Performance Status score");
            b_puts(R, "]}");
            b_subject(R);
            fmt_day(day, d);
            b_printf(R, ",\"effectiveDateTime\":\"%s\",\"valueInteger\":%d", d, KPS[t->ecog]);
            b_puts(R, ",\"interpretation\":[{\"coding\":[");
            b_coding(R, SYS_LOINC, LA_KPS[t->ecog], NULL);
            b_puts(R, "]}]");
            add_noise(t, "karnofsky_only");
        } else {
            b_puts(R, ",\"code\":{\"coding\":[");
            b_coding(R, SYS_LOINC, "89247-1", "ECOG Performance Status score");
            b_puts(R, "]}");
            b_subject(R);
            fmt_day(day, d);
            b_printf(R, ",\"effectiveDateTime\":\"%s\",\"valueInteger\":%d", d, t->ecog);
            b_puts(R, ",\"interpretation\":[{\"coding\":[");
            b_coding(R, SYS_LOINC, LA_ECOG[t->ecog], NULL);
            b_puts(R, "]}]");
            if (t->ecog_stale)
                add_noise(t, "stale_ecog");
        }
        finish(R, "Observation", id);
    } else {
        add_noise(t, "no_ecog");
    }
}

static int64_t rng_int64(rng *r, int lo, int hi) { return (int64_t)rng_int(r, lo, hi); }

/* Pathology and imaging reports for the referral packet: the diagnostic biopsy at diagnosis
 * and, after a documented progression, the re-biopsy and a PET/CT. Category and code are
 * text only (no DiagnosticReport category or report code is confirmed in codes.md, so none is
 * made up); the packet matches them by name. No random draws: the rest of the cohort is the
 * same with or without them (ids too: they come last). */
static const char *path_finding(const char *concept)
{
    if (!strcmp(concept, "hgbcl"))
        return "FISH: MYC and BCL2 rearrangements detected.";
    if (!strcmp(concept, "dlbcl_nos") || !strcmp(concept, "tfl") || !strcmp(concept, "pmbcl") ||
        !strcmp(concept, "fl_3b") || !strcmp(concept, "pcnsl"))
        return "CD20 positive. FISH: MYC rearrangement not detected; BCL2 rearrangement not detected.";
    if (!strcmp(concept, "mcl"))
        return "CD5 and cyclin D1 positive. FISH: t(11;14) detected.";
    if (!strcmp(concept, "fl") || !strcmp(concept, "mzl"))
        return "CD20 positive. FISH: t(14;18) status as reported by the laboratory.";
    if (!strcmp(concept, "mm") || !strcmp(concept, "pcl"))
        return "Clonal plasma cells in the marrow. FISH/cytogenetics: t(4;14) not detected; del(17p) not detected.";
    if (!strcmp(concept, "b_all"))
        return "B-lymphoblasts; CD19 positive by flow cytometry. Cytogenetics: BCR::ABL1 not detected.";
    if (!strcmp(concept, "cll"))
        return "CD5 and CD23 positive by flow cytometry. FISH: del(17p) not detected.";
    return NULL;
}

static void emit_report(render *R, const char *category, const char *title, int64_t day, const char *conclusion)
{
    char id[64], d[11];
    begin(R, "DiagnosticReport", id, sizeof id, "dr");
    b_printf(R, ",\"status\":\"final\",\"category\":[{\"text\":\"%s\"}],\"code\":{\"text\":\"%s\"}", category,
             title);
    b_subject(R);
    fmt_day(day, d);
    b_printf(R, ",\"effectiveDateTime\":\"%s\",\"issued\":\"%sT12:00:00Z\",\"conclusion\":\"%s\"", d, d,
             conclusion);
    finish(R, "DiagnosticReport", id);
}

static void emit_reports(render *R)
{
    truth *t = R->t;
    const cond *dxc = NULL;
    for (int i = 0; i < t->ncond && !dxc; i++)
        if (t->cond[i].counts && t->primary && !strcmp(t->cond[i].concept, t->primary))
            dxc = &t->cond[i];
    const char *finding = dxc ? path_finding(dxc->concept) : NULL;
    const dx_def *dx = dxc ? dx_find(dxc->concept) : NULL;
    if (!dxc || !finding || !dx)
        return;
    bool marrow = !strcmp(dxc->concept, "mm") || !strcmp(dxc->concept, "pcl") || !strcmp(dxc->concept, "b_all") ||
                  !strcmp(dxc->concept, "cll");
    char text[512];
    snprintf(text, sizeof text, "%s. %s", dx->text, finding);
    emit_report(R, "Pathology", marrow ? "Bone marrow biopsy, pathology report" : "Lymph node biopsy, pathology report",
                dxc->onset, text);
    int64_t last = INT64_MIN;
    for (int i = 0; i < t->nevt; i++)
        if (t->evt[i].type == EVT_PROGRESSION && t->evt[i].day > last)
            last = t->evt[i].day;
    if (last == INT64_MIN)
        return;
    snprintf(text, sizeof text, "Relapsed %s. %s", dx->text, finding);
    emit_report(R, "Pathology", marrow ? "Bone marrow biopsy at relapse, pathology report"
                                       : "Biopsy at relapse, pathology report",
                last - 7, text);
    if (!strcmp(dxc->concept, "b_all") || !strcmp(dxc->concept, "cll"))
        return;
    emit_report(R, "Radiology", "PET/CT skull base to mid-thigh", last,
                marrow ? "New FDG-avid lytic bone lesions: progressive disease."
                       : "New and enlarging FDG-avid nodal disease (Deauville 5): progressive disease.");
}

static void emit_all(render *R)
{
    truth *t = R->t;
    emit_patient(R);
    emit_coverage(R);
    for (int i = 0; i < t->ncond; i++)
        emit_condition(R, &t->cond[i]);
    /* noise: an entered-in-error diagnosis of another disease in some oncology patients */
    if (t->primary && rng_pct(&R->r, 10)) {
        cond c = {"mcl", t->as_of - rng_int64(&R->r, 100, 400), NULL, "entered-in-error", false};
        if (!strcmp(t->primary, "mcl"))
            c.concept = "mzl";
        emit_condition(R, &c);
        add_noise(t, "entered_in_error_condition");
    }
    for (int i = 0; i < t->nreg; i++) {
        const reg *g = &t->reg[i];
        for (int k = 0; k < g->ndrug; k++)
            emit_reg_drug(R, g, drug_find(g->drug[k]));
    }
    for (int i = 0; i < t->nproc; i++)
        emit_procedure(R, &t->proc[i]);
    for (int i = 0; i < t->nevt; i++)
        emit_disease_status(R, &t->evt[i]);
    emit_labs(R);
    emit_reports(R);
}

/* ---- ground truth ------------------------------------------------------------------------ */

typedef struct gt_line {
    int n;
    int64_t start, end; /* days */
    unsigned classes;
    bool has_len, has_btki;
} gt_line;

static void gt_set(fhir_buf *b, bool *first, const char *name, const char *const *items, size_t n)
{
    fhir_buf_printf(b, "%s\"%s\":[", *first ? "" : ",", name);
    for (size_t i = 0; i < n; i++)
        fhir_buf_printf(b, "%s\"%s\"", i ? "," : "", items[i]);
    fhir_buf_puts(b, "]");
    *first = false;
}

static void gt_num(fhir_buf *b, bool *first, const char *name, double v)
{
    fhir_buf_printf(b, "%s\"%s\":%.10g", *first ? "" : ",", name, v);
    *first = false;
}

static void gt_bool(fhir_buf *b, bool *first, const char *name, bool v)
{
    fhir_buf_printf(b, "%s\"%s\":%s", *first ? "" : ",", name, v ? "true" : "false");
    *first = false;
}

static void gt_str(fhir_buf *b, bool *first, const char *name, const char *v)
{
    fhir_buf_printf(b, "%s\"%s\":\"%s\"", *first ? "" : ",", name, v);
    *first = false;
}

/* Adds key to a set of static strings unless present. */
static void set_add(const char **set, size_t *n, size_t max, const char *key)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(set[i], key))
            return;
    if (*n < max)
        set[(*n)++] = key;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void write_truth(const truth *t, fhir_buf *b)
{
    char d[11];
    const char *unknown[48];
    size_t nunk = 0;
    fmt_day(t->as_of, d);
    fhir_buf_printf(b, "{\"patient\":\"%s\",\"as_of\":\"%s\",\"scenario\":\"%s\",\"facts\":{",
                    t->pid, d, t->scenario);
    bool first = true;

    if (t->has_birth)
        gt_num(b, &first, "age", t->age);
    else
        unknown[nunk++] = "age";
    gt_str(b, &first, "sex", t->female ? "female" : "male");
    gt_bool(b, &first, "deceased", t->deceased != INT64_MIN);

    /* diagnoses */
    const char *dis[8];
    size_t ndis = 0;
    bool cns = false;
    for (int i = 0; i < t->ncond; i++) {
        const cond *c = &t->cond[i];
        if (!c->counts)
            continue;
        if (!strcmp(c->concept, "cns_secondary")) {
            cns = true;
            continue;
        }
        const char *k = c->concept;
        if (t->transformed && !strcmp(k, "dlbcl_nos"))
            k = "tfl";
        set_add(dis, &ndis, 8, k);
    }
    qsort(dis, ndis, sizeof dis[0], cmp_str);
    gt_set(b, &first, "diseases", dis, ndis);
    if (t->primary)
        gt_str(b, &first, "primary_disease", t->primary);
    else
        unknown[nunk++] = "primary_disease";
    if (t->primary)
        gt_bool(b, &first, "histology_transformed", t->transformed);
    else
        unknown[nunk++] = "histology_transformed";
    if (t->primary)
        gt_bool(b, &first, "pcnsl", !strcmp(t->primary, "pcnsl"));
    else
        unknown[nunk++] = "pcnsl";
    if (cns)
        gt_bool(b, &first, "cns_involvement", true);
    else
        unknown[nunk++] = "cns_involvement";

    /* lines of therapy */
    gt_line L[8];
    int nl = 0;
    const char *drugs[32];
    size_t ndrugs = 0;
    unsigned all_classes = 0;
    for (int i = 0; i < t->nreg; i++) {
        const reg *g = &t->reg[i];
        if (g->line > nl) {
            for (int k = nl; k < g->line; k++) {
                memset(&L[k], 0, sizeof L[k]);
                L[k].n = k + 1;
                L[k].start = INT64_MAX;
                L[k].end = INT64_MIN;
            }
            nl = g->line;
        }
        gt_line *l = &L[g->line - 1];
        if (g->start < l->start)
            l->start = g->start;
        int64_t end = g->ongoing ? t->as_of : g->end;
        if (end > l->end)
            l->end = end;
        for (int k = 0; k < g->ndrug; k++) {
            const drug_def *dd = drug_find(g->drug[k]);
            l->classes |= dd->classes;
            if (!strcmp(dd->key, "lenalidomide"))
                l->has_len = true;
            if (dd->classes & C_BTKI)
                l->has_btki = true;
            set_add(drugs, &ndrugs, 32, dd->key);
        }
    }
    for (int i = 0; i < t->nproc; i++) {
        const proc *p = &t->proc[i];
        if (p->type != PROC_CAR_T)
            continue;
        /* the CAR T infusion belongs to the line its lymphodepletion opened */
        for (int k = 0; k < nl; k++)
            if (p->day >= L[k].start && p->day <= L[k].start + 28) {
                L[k].classes |= C_CAR_T;
                if (p->day > L[k].end)
                    L[k].end = p->day;
            }
    }
    for (int i = 0; i < t->nproc; i++) {
        const proc *p = &t->proc[i];
        if (p->type == PROC_CAR_T) {
            if (t->cart_product) { /* the code names the product (ICD-10-PCS XW033H7) */
                for (int k = 0; k < nl; k++)
                    if (L[k].classes & C_CAR_T)
                        L[k].classes |= C_CD19;
                set_add(drugs, &ndrugs, 32, "axicabtagene ciloleucel");
            }
            continue;
        }
        /* a transplant joins the line it follows (planned sequence) and extends its end */
        for (int k = nl - 1; k >= 0; k--)
            if (L[k].start <= p->day) {
                if (p->day > L[k].end)
                    L[k].end = p->day;
                break;
            }
    }
    for (int k = 0; k < nl; k++)
        all_classes |= L[k].classes;
    gt_num(b, &first, "lines", nl);
    const char *cls[NCLASS];
    size_t ncls = 0;
    for (int c = 0; c < NCLASS; c++)
        if (all_classes & (1u << c))
            cls[ncls++] = CLASS_KEYS[c];
    gt_set(b, &first, "prior_classes", cls, ncls);
    qsort(drugs, ndrugs, sizeof drugs[0], cmp_str);
    gt_set(b, &first, "prior_drugs", drugs, ndrugs);
    if (nl > 0) {
        ncls = 0;
        for (int c = 0; c < NCLASS; c++)
            if (L[0].classes & (1u << c))
                cls[ncls++] = CLASS_KEYS[c];
        gt_set(b, &first, "first_line_classes", cls, ncls);
    } else {
        unknown[nunk++] = "first_line_classes";
    }

    /* response / progression, as mappings/README.md "Relapse and refractoriness" defines
     * them, applied to the intended timeline */
    evt ev[MAX_EVT];
    memcpy(ev, t->evt, sizeof ev);
    int nev = t->nevt;
    for (int i = 1; i < nev; i++) /* insertion sort by day */
        for (int j = i; j > 0 && ev[j].day < ev[j - 1].day; j--) {
            evt tmp = ev[j];
            ev[j] = ev[j - 1];
            ev[j - 1] = tmp;
        }
    /* relapsed: a progression after a response, or > 60 days after the line it follows */
    bool rel = false, any_resp = false;
    for (int i = 0; i < nev; i++) {
        if (ev[i].type == EVT_RESPONSE) {
            any_resp = true;
            continue;
        }
        for (int j = 0; j < i; j++)
            rel |= ev[j].type == EVT_RESPONSE;
        for (int k = 0; k < nl; k++) {
            bool next_before = k + 1 < nl && L[k + 1].start <= ev[i].day;
            if (!next_before && ev[i].day >= L[k].start && ev[i].day > L[k].end + 60)
                rel = true;
        }
    }
    if (rel || any_resp)
        gt_bool(b, &first, "relapsed", rel);
    else
        unknown[nunk++] = "relapsed";
    if (nl > 0) {
        for (int which = 0; which < 2; which++) {
            const gt_line *l = which ? &L[0] : &L[nl - 1];
            int64_t fp = INT64_MIN;
            bool resp_after = false;
            for (int i = 0; i < nev; i++) {
                if (ev[i].day < l->start)
                    continue;
                if (ev[i].type == EVT_PROGRESSION && fp == INT64_MIN)
                    fp = ev[i].day;
                if (ev[i].type == EVT_RESPONSE)
                    resp_after = true;
            }
            const char *name = which ? "primary_refractory" : "refractory";
            if (fp != INT64_MIN)
                gt_bool(b, &first, name, fp <= l->end + 60);
            else if (resp_after)
                gt_bool(b, &first, name, false);
            else
                unknown[nunk++] = name;
        }
        int64_t first_prog = INT64_MIN;
        for (int i = 0; i < nev && first_prog == INT64_MIN; i++)
            if (ev[i].type == EVT_PROGRESSION && ev[i].day >= L[0].start)
                first_prog = ev[i].day;
        if (first_prog != INT64_MIN) {
            /* months = days / 30.4375, rounded to 0.1, floored at 0; default anchor: start */
            double from_start = (double)(first_prog - L[0].start) / 30.4375;
            double from_end = (double)(first_prog - L[0].end) / 30.4375;
            gt_num(b, &first, "relapse_months_after_1l", round_to(fmax(from_start, 0), 1));
            gt_num(b, &first, "relapse_months_after_1l_start", round_to(fmax(from_start, 0), 1));
            gt_num(b, &first, "relapse_months_after_1l_end", round_to(fmax(from_end, 0), 1));
        } else {
            unknown[nunk++] = "relapse_months_after_1l";
            unknown[nunk++] = "relapse_months_after_1l_start";
            unknown[nunk++] = "relapse_months_after_1l_end";
        }
        if (nev > 0) { /* one relapse at most per line period */
            int count = 0;
            int64_t prev = INT64_MIN;
            for (int k = 0; k < nl; k++) {
                int64_t lo = L[k].start, hi = k + 1 < nl ? L[k + 1].start - 1 : INT64_MAX;
                int64_t pp = INT64_MIN;
                for (int i = 0; i < nev && pp == INT64_MIN; i++)
                    if (ev[i].type == EVT_PROGRESSION && ev[i].day >= lo && ev[i].day <= hi)
                        pp = ev[i].day;
                if (pp == INT64_MIN)
                    continue;
                bool r = pp > L[k].end + 60;
                for (int i = 0; i < nev && !r; i++)
                    r = ev[i].type == EVT_RESPONSE && ev[i].day < pp && ev[i].day > prev &&
                        ev[i].day >= lo;
                count += r;
                for (int i = 0; i < nev; i++)
                    if (ev[i].type == EVT_PROGRESSION && ev[i].day >= lo && ev[i].day <= hi)
                        prev = ev[i].day;
            }
            gt_num(b, &first, "relapse_count", count);
        } else {
            unknown[nunk++] = "relapse_count";
        }
    } else {
        unknown[nunk++] = "refractory";
        unknown[nunk++] = "primary_refractory";
        unknown[nunk++] = "relapse_months_after_1l";
        unknown[nunk++] = "relapse_months_after_1l_start";
        unknown[nunk++] = "relapse_months_after_1l_end";
        unknown[nunk++] = "relapse_count";
    }
    /* lenalidomide / BTKi: exposure episodes (gaps <= 90 days merged); true with a
     * progression during or <= 60 days after one; false when never given or every episode
     * has a later status; unknown otherwise */
    for (int which = 0; which < 2; which++) {
        int64_t es[MAX_REG], ee[MAX_REG];
        int ne = 0;
        for (int i = 0; i < t->nreg; i++) {
            const reg *g = &t->reg[i];
            bool m = false;
            for (int j = 0; j < g->ndrug; j++)
                m |= which ? (drug_find(g->drug[j])->classes & C_BTKI) != 0
                           : !strcmp(g->drug[j], "lenalidomide");
            if (!m)
                continue;
            es[ne] = g->start;
            ee[ne] = g->ongoing ? t->as_of : g->end;
            ne++;
        }
        for (int i = 1; i < ne; i++) /* sort by start */
            for (int j = i; j > 0 && es[j] < es[j - 1]; j--) {
                int64_t x = es[j]; es[j] = es[j - 1]; es[j - 1] = x;
                x = ee[j]; ee[j] = ee[j - 1]; ee[j - 1] = x;
            }
        bool hit = false, all_status = true;
        for (int i = 0; i < ne && !hit;) {
            int64_t s0 = es[i], e0 = ee[i];
            int j = i + 1;
            while (j < ne && es[j] <= e0 + 90) {
                if (ee[j] > e0)
                    e0 = ee[j];
                j++;
            }
            bool later = false;
            for (int k = 0; k < nev; k++) {
                if (ev[k].type == EVT_PROGRESSION && ev[k].day >= s0 && ev[k].day <= e0 + 60)
                    hit = true;
                if (ev[k].day >= s0)
                    later = true;
            }
            if (!hit && !later)
                all_status = false;
            i = j;
        }
        const char *name = which ? "btki_progression" : "lenalidomide_refractory";
        if (hit || ne == 0 || all_status)
            gt_bool(b, &first, name, hit);
        else
            unknown[nunk++] = name;
    }
    bool auto_hct = false, allo = false, cart = false;
    for (int i = 0; i < t->nproc; i++) {
        auto_hct |= t->proc[i].type == PROC_AUTO_HCT;
        allo |= t->proc[i].type == PROC_ALLO_HCT;
        cart |= t->proc[i].type == PROC_CAR_T;
    }
    gt_bool(b, &first, "prior_auto_hct", auto_hct);
    gt_bool(b, &first, "prior_allo_hct", allo);
    gt_bool(b, &first, "prior_car_t", cart);
    unknown[nunk++] = "hct_ineligible";

    /* performance status and labs */
    if (t->ecog >= 0 && !t->ecog_stale)
        gt_num(b, &first, "ecog", t->ecog);
    else
        unknown[nunk++] = "ecog";
    for (size_t i = 0; i < NLAB; i++) {
        bool known = !isnan(t->lab[i]) && t->lab_variant[i] != 2 && t->lab_variant[i] != 3;
        if (known)
            gt_num(b, &first, LABS[i].fact, t->lab[i]);
        else
            unknown[nunk++] = LABS[i].fact;
        if (i == LAB_CREAT) {
            /* Cockcroft-Gault: ((140 - age) x weight) / (72 x Cr), x 0.85 for women */
            if (known && t->has_birth && !isnan(t->weight)) {
                double crcl = (140.0 - t->age) * t->weight / (72.0 * t->lab[i]);
                if (t->female)
                    crcl *= 0.85;
                gt_num(b, &first, "crcl", round_to(crcl, 1)); /* mL/min to 0.1 */
            } else {
                unknown[nunk++] = "crcl";
            }
        }
    }
    unknown[nunk++] = "active_infection";
    gt_str(b, &first, "postal_code", t->zip);
    if (t->geo) {
        gt_num(b, &first, "latitude", t->lat);
        gt_num(b, &first, "longitude", t->lon);
    } else {
        unknown[nunk++] = "latitude";
        unknown[nunk++] = "longitude";
    }
    gt_str(b, &first, "payer", t->payer);
    fhir_buf_puts(b, "},\"unknown\":[");
    for (size_t i = 0; i < nunk; i++)
        fhir_buf_printf(b, "%s\"%s\"", i ? "," : "", unknown[i]);
    fhir_buf_puts(b, "],\"expected_indications\":[");
    for (int i = 0; i < t->nexpect; i++)
        fhir_buf_printf(b, "%s\"%s\"", i ? "," : "", t->expect[i]);
    fhir_buf_puts(b, "],\"possible_indications\":[");
    for (int i = 0; i < t->npossible; i++)
        fhir_buf_printf(b, "%s\"%s\"", i ? "," : "", t->possible[i]);
    const char *cat = t->nexpect ? "eligible" : t->npossible ? "possibly_eligible" : "not_eligible";
    fhir_buf_printf(b, "],\"expected_category\":\"%s\",\"noise\":[", cat);
    const char *nz[16];
    size_t nnz = 0;
    for (int i = 0; i < t->nnoise; i++)
        set_add(nz, &nnz, 16, t->noise[i]);
    qsort(nz, nnz, sizeof nz[0], cmp_str);
    for (size_t i = 0; i < nnz; i++)
        fhir_buf_printf(b, "%s\"%s\"", i ? "," : "", nz[i]);
    fhir_buf_puts(b, "]}");
}

/* ---- public API ---------------------------------------------------------------------------- */

int synth_patient(const synth_opts *o, size_t index, synth_sink sink, void *ud, fhir_buf *gt,
                  const char **scenario, fhir_error *err)
{
    fhir_error_clear(err);
    truth t;
    draw(o, index, &t);
    render R;
    memset(&R, 0, sizeof R);
    R.o = o;
    R.t = &t;
    rng_seed(&R.r, o->seed ^ 0x5bd1e995u, (uint64_t)index + 1);
    fhir_buf_init(&R.res, SYNTH_RESOURCE_MAX);
    R.sink = sink;
    R.ud = ud;
    fhir_error local;
    fhir_error_clear(&local);
    R.err = err ? err : &local;
    emit_all(&R);
    fhir_buf_free(&R.res);
    if (R.failed)
        return -1;
    if (gt) {
        write_truth(&t, gt);
        if (gt->overflow)
            return fhir_error_set(err, "synth: ground truth of %s exceeds the buffer cap", t.pid);
    }
    if (scenario)
        *scenario = t.scenario;
    return 0;
}

/* ---- writing a cohort ------------------------------------------------------------------------- */

static const char *const TYPES[] = {"Patient",   "Coverage",   "Condition",
                                    "Medication", "MedicationRequest", "MedicationAdministration",
                                    "MedicationStatement", "Procedure", "Observation",
                                    "DiagnosticReport"};
#define NTYPES (sizeof TYPES / sizeof TYPES[0])

typedef struct writer {
    const synth_opts *o;
    const char *dir;
    FILE *f[NTYPES];
    char *fbuf[NTYPES];
    fhir_buf bundle;
    size_t nentries;
    uint64_t bytes;
    uint64_t uuid_state;
    fhir_error *err;
} writer;

static int type_index(const char *type)
{
    for (size_t i = 0; i < NTYPES; i++)
        if (!strcmp(TYPES[i], type))
            return (int)i;
    return -1;
}

static FILE *open_out(writer *w, const char *name, char **vbuf, fhir_error *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", w->dir, name) >= (int)sizeof path) {
        fhir_error_set(err, "synth: output path too long: %s/%s", w->dir, name);
        return NULL;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        fhir_error_set(err, "synth: cannot create %s: %s", path, strerror(errno));
        return NULL;
    }
    if (vbuf) {
        *vbuf = malloc(1u << 20);
        if (!*vbuf)
            abort();
        setvbuf(f, *vbuf, _IOFBF, 1u << 20);
    }
    return f;
}

static int ndjson_sink(void *ud, const char *type, const char *id, const char *json, size_t len)
{
    writer *w = ud;
    int ti = type_index(type);
    if (ti < 0)
        abort();
    if (!w->f[ti]) {
        char name[128];
        snprintf(name, sizeof name, "%s.000.ndjson", type);
        w->f[ti] = open_out(w, name, &w->fbuf[ti], w->err);
        if (!w->f[ti])
            return -1;
    }
    if (fwrite(json, 1, len, w->f[ti]) != len || fputc('\n', w->f[ti]) == EOF)
        return fhir_error_set(w->err, "synth: write %s.000.ndjson: %s", type, strerror(errno)),
               -1;
    w->bytes += len + 1;
    (void)id;
    return 0;
}

static int bundle_sink(void *ud, const char *type, const char *id, const char *json, size_t len)
{
    writer *w = ud;
    uint64_t a = splitmix64(&w->uuid_state), b = splitmix64(&w->uuid_state);
    fhir_buf_printf(&w->bundle,
                    "%s{\"fullUrl\":\"urn:uuid:%08x-%04x-4%03x-%04x-%012llx\",\"resource\":",
                    w->nentries ? "," : "", (unsigned)(a >> 32), (unsigned)(a >> 16) & 0xffffu,
                    (unsigned)a & 0xfffu, (unsigned)(0x8000u | ((b >> 48) & 0x3fffu)),
                    (unsigned long long)(b & 0xffffffffffffULL));
    fhir_buf_append(&w->bundle, json, len);
    fhir_buf_printf(&w->bundle, ",\"request\":{\"method\":\"PUT\",\"url\":\"%s/%s\"}}", type, id);
    w->nentries++;
    if (w->bundle.overflow)
        return fhir_error_set(w->err, "synth: bundle for %s exceeds the buffer cap", id), -1;
    return 0;
}

static int make_dir(const char *dir, fhir_error *err)
{
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path)
        return fhir_error_set(err, "synth: bad output directory '%s'", dir);
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] == '/' || path[i] == 0) {
            char c = path[i];
            path[i] = 0;
            if (mkdir(path, 0755) != 0 && errno != EEXIST)
                return fhir_error_set(err, "synth: cannot create directory %s: %s", path,
                                      strerror(errno));
            path[i] = c;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return fhir_error_set(err, "synth: %s is not a directory", dir);
    return 0;
}

int synth_write_cohort(const synth_opts *o, const char *out_dir, uint64_t *bytes_out,
                       fhir_error *err)
{
    fhir_error_clear(err);
    if (make_dir(out_dir, err))
        return -1;
    writer w;
    memset(&w, 0, sizeof w);
    w.o = o;
    w.dir = out_dir;
    w.err = err;
    w.uuid_state = o->seed ^ 0x243f6a8885a308d3ULL;
    fhir_buf_init(&w.bundle, SYNTH_BUNDLE_MAX);
    char *gtvbuf = NULL;
    FILE *gtf = open_out(&w, "ground_truth.ndjson", &gtvbuf, err);
    int rc = gtf ? 0 : -1;
    fhir_buf gt;
    fhir_buf_init(&gt, SYNTH_TRUTH_MAX);
    for (size_t i = 0; rc == 0 && i < o->patients; i++) {
        fhir_buf_reset(&gt);
        if (o->format == SYNTH_FORMAT_BUNDLE) {
            fhir_buf_reset(&w.bundle);
            w.nentries = 0;
            fhir_buf_puts(&w.bundle, "{\"resourceType\":\"Bundle\",\"type\":\"transaction\","
                                     "\"entry\":[");
            rc = synth_patient(o, i, bundle_sink, &w, &gt, NULL, err);
            if (rc)
                break;
            fhir_buf_puts(&w.bundle, "]}\n");
            /* file name = patient id (first resource is the Patient) */
            char name[96];
            const char *p = strstr(fhir_buf_cstr(&gt), "\"patient\":\"");
            if (!p)
                abort();
            p += 11;
            size_t k = 0;
            while (p[k] && p[k] != '"' && k < 80)
                k++;
            snprintf(name, sizeof name, "%.*s.json", (int)k, p);
            FILE *f = open_out(&w, name, NULL, err);
            if (!f) {
                rc = -1;
                break;
            }
            size_t blen = w.bundle.len;
            if (fwrite(fhir_buf_cstr(&w.bundle), 1, blen, f) != blen || fclose(f) != 0) {
                rc = fhir_error_set(err, "synth: write %s/%s: %s", out_dir, name,
                                    strerror(errno));
                break;
            }
            w.bytes += blen;
        } else {
            rc = synth_patient(o, i, ndjson_sink, &w, &gt, NULL, err);
            if (rc)
                break;
        }
        fhir_buf_putc(&gt, '\n');
        if (fwrite(gt.data, 1, gt.len, gtf) != gt.len)
            rc = fhir_error_set(err, "synth: write ground_truth.ndjson: %s", strerror(errno));
        w.bytes += gt.len;
    }
    for (size_t i = 0; i < NTYPES; i++) {
        if (w.f[i] && fclose(w.f[i]) != 0 && rc == 0)
            rc = fhir_error_set(err, "synth: close %s.000.ndjson: %s", TYPES[i], strerror(errno));
        free(w.fbuf[i]);
    }
    if (gtf && fclose(gtf) != 0 && rc == 0)
        rc = fhir_error_set(err, "synth: close ground_truth.ndjson: %s", strerror(errno));
    free(gtvbuf);
    fhir_buf_free(&gt);
    fhir_buf_free(&w.bundle);
    if (bytes_out)
        *bytes_out = w.bytes;
    return rc;
}
