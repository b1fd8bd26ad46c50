/* elig_explain — plain-words explanations of a result and the screen JSON (schema in
 * conf/criteria/README.md). See elig.h. */
#include "elig_int.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "fhir_hash.h"
#include "fhir_json.h"

const char *elig_category_name(elig_category c)
{
    switch (c) {
    case ELIG_NOT_ELIGIBLE: return "not_eligible";
    case ELIG_POSSIBLY_ELIGIBLE: return "possibly_eligible";
    case ELIG_ELIGIBLE: return "eligible";
    case ELIG_NOT_IN_FORCE: return "not_in_force";
    }
    return "?";
}

const char *elig_consult_name(elig_consult c)
{
    switch (c) {
    case ELIG_CONSULT_NONE: return "none";
    case ELIG_CONSULT_EARLY: return "early_consult";
    case ELIG_CONSULT_NOW: return "refer_now";
    }
    return "?";
}

const char *elig_urgency_name(elig_urgency u)
{
    switch (u) {
    case ELIG_URGENCY_NONE: return "none";
    case ELIG_URGENCY_REVIEW: return "review";
    case ELIG_URGENCY_SOON: return "soon";
    case ELIG_URGENCY_NOW: return "now";
    }
    return "?";
}

/* ======================================================================================
 * Explanations (plain words, label citations) and JSON. Explanations speak to a clinician:
 * facts by their clinical names and values, the label with its revision and DailyMed link,
 * resource ids a clinician can open in the EHR. Table rows, criteria files and our reference
 * go to "provenance" (developers).
 * ====================================================================================== */

/* Clinical names of facts and of disease / class codes. */
static const struct {
    const char *key, *words;
} WORDS[] = {
    {"age", "age"}, {"sex", "sex"}, {"deceased", "deceased"}, {"diseases", "diagnoses"},
    {"primary_disease", "main diagnosis"}, {"histology_transformed", "transformed histology"},
    {"pcnsl", "primary CNS lymphoma"}, {"cns_involvement", "secondary CNS involvement"},
    {"lines", "prior lines of therapy"}, {"prior_classes", "prior therapy classes"},
    {"prior_drugs", "prior drugs"}, {"first_line_classes", "first-line therapy classes"},
    {"relapsed", "relapse after a response"}, {"refractory", "refractory to the last line"},
    {"primary_refractory", "refractory to the first line"},
    {"relapse_months_after_1l", "months from first-line therapy to progression"},
    {"relapse_months_after_1l_start", "months from the start of first-line therapy to progression"},
    {"relapse_months_after_1l_end", "months from the end of first-line therapy to progression"},
    {"relapse_months_after_asct", "months from autologous transplant to progression"},
    {"relapse_count", "documented relapses"}, {"lenalidomide_refractory", "lenalidomide-refractory"},
    {"btki_progression", "progression on or after a BTK inhibitor"},
    {"mm_high_risk", "high-risk myeloma (IMS/IMWG 2025)"},
    {"prior_auto_hct", "prior autologous transplant"}, {"prior_allo_hct", "prior allogeneic transplant"},
    {"prior_car_t", "prior CAR T therapy"}, {"hct_ineligible", "documented transplant ineligibility"},
    {"hct_refusal", "transplant declined by the patient"}, {"ecog", "ECOG"},
    {"anc", "ANC (x10^3/uL)"}, {"alc", "ALC (x10^3/uL)"}, {"platelets", "platelets (x10^3/uL)"},
    {"hemoglobin", "hemoglobin (g/dL)"}, {"creatinine", "creatinine (mg/dL)"},
    {"crcl", "creatinine clearance (mL/min)"}, {"egfr", "eGFR (mL/min/1.73 m2)"},
    {"renal_function", "renal function (mL/min)"}, {"bilirubin", "bilirubin (mg/dL)"},
    {"ast", "AST (U/L)"}, {"alt", "ALT (U/L)"}, {"lvef", "LVEF (%)"}, {"spo2", "SpO2 (%)"},
    {"active_infection", "active infection"},
    /* disease and class codes */
    {"dlbcl_nos", "diffuse large B-cell lymphoma"}, {"hgbcl", "high-grade B-cell lymphoma"},
    {"pmbcl", "primary mediastinal large B-cell lymphoma"},
    {"tfl", "large B-cell lymphoma transformed from follicular lymphoma"},
    {"fl_3b", "follicular lymphoma grade 3B"}, {"fl", "follicular lymphoma"},
    {"mcl", "mantle cell lymphoma"}, {"cll_sll", "CLL/SLL"}, {"mzl", "marginal zone lymphoma"},
    {"b_all", "B-cell acute lymphoblastic leukemia"},
    {"all_nos", "acute lymphoblastic leukemia, lineage not specified"}, {"mm", "multiple myeloma"},
    {"pcl", "plasma cell leukemia"}, {"hl", "Hodgkin lymphoma"},
    {"other_heme", "another hematologic malignancy"}, {"non_heme", "a non-hematologic cancer"},
    {"anti_cd20", "anti-CD20 antibody"}, {"anthracycline", "anthracycline"}, {"alkylator", "alkylator"},
    {"btki", "BTK inhibitor"}, {"bcl2i", "BCL-2 inhibitor"}, {"imid", "IMiD"},
    {"pi", "proteasome inhibitor"}, {"anti_cd38", "anti-CD38 antibody"},
    {"bcma_directed", "BCMA-directed therapy"}, {"cd19_directed", "CD19-directed therapy"},
    {"bispecific", "bispecific antibody"}, {"car_t", "CAR T"},
};

/* WORDS by key: open addressing on a hash of the key (a scan of the table per fact and code
 * named was a tenth of the screen JSON), built once. */
#define WORDS_SLOTS 256
static int16_t words_slot[WORDS_SLOTS];
static pthread_once_t words_once = PTHREAD_ONCE_INIT;

static size_t words_hash(const char *s)
{
    return fhir_hash32_str(FHIR_HASH32_INIT, s) & (WORDS_SLOTS - 1);
}

static void words_build(void)
{
    for (size_t j = 0; j < WORDS_SLOTS; j++)
        words_slot[j] = -1;
    for (size_t i = sizeof WORDS / sizeof WORDS[0]; i-- > 0;) { /* the first of equal keys wins */
        size_t j = words_hash(WORDS[i].key);
        while (words_slot[j] >= 0 && strcmp(WORDS[words_slot[j]].key, WORDS[i].key))
            j = (j + 1) & (WORDS_SLOTS - 1);
        words_slot[j] = (int16_t)i;
    }
}

static const char *words(const char *key)
{
    if (!key)
        return "?";
    pthread_once(&words_once, words_build);
    for (size_t j = words_hash(key); words_slot[j] >= 0; j = (j + 1) & (WORDS_SLOTS - 1))
        if (!strcmp(WORDS[words_slot[j]].key, key))
            return WORDS[words_slot[j]].words;
    return key;
}

const char *elig_words(const char *key)
{
    return words(key);
}

/* Appends each string in turn (NULL written as printf's "%s" writes it): the explanation's
 * lines are mostly labels and codes joined by fixed words, and formatting them with printf
 * was a tenth of offline screening. */
static const char put_end[] = "";
#define PUT(b, ...) put_strs((b), __VA_ARGS__, put_end)
static void put_strs(fhir_buf *b, ...)
{
    va_list ap;
    va_start(ap, b);
    for (const char *s; (s = va_arg(ap, const char *)) != put_end;)
        fhir_buf_puts(b, s ? s : "(null)");
    va_end(ap);
}

/* Length of the record reference ("Observation/p1-ds19") starting at p, followed by a space,
 * ';', ')' or the end: one of the resource types the profile reads, '/', an id
 * ([A-Za-z0-9.-]{1,64}, FHIR's id). 0 when p holds none. */
static size_t ref_at(const char *p)
{
    static const char *const types[] = {"Condition", "Observation", "Procedure", "DiagnosticReport",
                                        "MedicationAdministration", "MedicationRequest", "MedicationStatement",
                                        "Medication", "Patient", "Coverage", "Encounter", "DocumentReference"};
    if (*p < 'A' || *p > 'Z')
        return 0;
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        size_t tl = strlen(types[t]);
        if (strncmp(p, types[t], tl) || p[tl] != '/')
            continue;
        size_t n = 0;
        const char *id = p + tl + 1;
        while (n < 65 && ((id[n] >= 'a' && id[n] <= 'z') || (id[n] >= 'A' && id[n] <= 'Z') ||
                          (id[n] >= '0' && id[n] <= '9') || id[n] == '-' || id[n] == '.'))
            n++;
        if (n >= 1 && n <= 64 && (!id[n] || id[n] == ' ' || id[n] == ';' || id[n] == ')'))
            return tl + 1 + n;
    }
    return 0;
}

/* Evidence without table rows, reference documents or record references: drops
 * parenthesised groups that cite a file ("(diagnoses.tsv:162)", "(codes.md §2.3 crosswalk)")
 * and the references of the records behind a value ("Observation/ds19 response after line
 * 1 started" -> "response after line 1 started": they are in "provenance"), and names the
 * concept a code maps to in words ("-> dlbcl_nos" -> "-> diffuse large B-cell lymphoma"). */
static void put_plain(fhir_buf *b, const char *ev)
{
    for (const char *p = ev; p && *p;) {
        if (p == ev || p[-1] == ' ' || p[-1] == '(') {
            size_t r = ref_at(p);
            if (r) {
                p += r;
                if (*p == ' ')
                    p++;
                continue;
            }
        }
        if (p[0] == '-' && p[1] == '>' && p[2] == ' ') {
            char key[40];
            size_t n = 0;
            const char *k = p + 3;
            while (n + 1 < sizeof key && ((k[n] >= 'a' && k[n] <= 'z') || (k[n] >= '0' && k[n] <= '9') || k[n] == '_'))
                n++;
            memcpy(key, k, n);
            key[n] = 0;
            if (n && strcmp(words(key), key)) {
                PUT(b, "-> ", words(key));
                p = k + n;
                continue;
            }
        }
        if (*p == '(' || (*p == ' ' && p[1] == '(')) {
            const char *open = *p == '(' ? p : p + 1;
            const char *close = strchr(open, ')');
            if (close) {
                size_t n = (size_t)(close - open);
                bool cites = false;
                for (size_t i = 0; i + 3 < n && !cites; i++)
                    if (open[i] == '.' && (!strncmp(open + i, ".tsv", 4) || !strncmp(open + i, ".md", 3) ||
                                           !strncmp(open + i, ".json", 5)))
                        cites = true;
                if (cites || ref_at(open + 1) + 1 == n) { /* or "(Observation/o66)" */
                    p = close + 1;
                    continue;
                }
            }
        }
        /* this byte, and those up to where a test above could hold again (a reference starts
         * after a space or '(') */
        size_t n = *p == '(' ? 1 : 1 + strcspn(p + 1, "-( ");
        if (p[n] == ' ' && p[n + 1] != '(')
            n++; /* the space itself, then the word after it is tested */
        fhir_buf_append(b, p, n);
        p += n;
    }
}

void elig_plain_words(fhir_buf *out, const char *evidence)
{
    put_plain(out, evidence);
}

/* The lines of the `lines` evidence without their record lists ("[MedicationAdministration/a1 ...]"). */
static void put_lines(fhir_buf *b, const char *ev)
{
    for (const char *p = ev; *p;) {
        if (*p == '[') {
            const char *close = strchr(p, ']');
            if (close) {
                p = close + 1;
                while (b->len && b->data[b->len - 1] == ' ')
                    b->len--;
                continue;
            }
        }
        size_t n = 1 + strcspn(p + 1, "[");
        fhir_buf_append(b, p, n);
        p += n;
    }
}

static void put_value(fhir_buf *b, const efact *f, const fval *v)
{
    const map_fact *mf = v->src;
    switch (f->type) {
    case MAP_FACT_NUMBER:
        if (!strcmp(f->name, "lines") && mf && mf->evidence && strchr(mf->evidence, ':')) {
            /* "3 lines, last ended 2026-08-14" */
            const char *c = strchr(mf->evidence, ':');
            fhir_buf_append(b, mf->evidence, (size_t)(c - mf->evidence));
            break;
        }
        fhir_buf_printf(b, "%s %s%g", words(f->name), v->bound > 0 ? "at least " : v->bound < 0 ? "at most " : "",
                        v->num);
        break;
    case MAP_FACT_BOOL:
        PUT(b, words(f->name), ": ", v->b ? "yes" : "no");
        break;
    case MAP_FACT_CODE:
    case MAP_FACT_STRING:
        PUT(b, words(f->name), ": ", words(mf && mf->str ? mf->str : "?"));
        break;
    case MAP_FACT_SET:
        PUT(b, words(f->name), ": ");
        if (!mf || mf->nset == 0)
            fhir_buf_puts(b, "none recorded");
        for (size_t k = 0; mf && k < mf->nset && k < MAP_FACT_SET_MAX; k++)
            PUT(b, k ? ", " : "", words(mf->set[k]));
        if (mf && mf->open)
            fhir_buf_puts(b, ", others not recorded");
        for (size_t k = 0; mf && k < mf->nmaybe && k < MAP_FACT_SET_MAX; k++)
            PUT(b, k ? ", " : "; possibly ", words(mf->maybe[k]));
        break;
    }
}

/* Writes the facts that decided node ni in plain words, comma-separated; with evidence, an
 * unknown or partly known fact says why and what would settle it. used collects the facts
 * named (for provenance). */
static void describe(const elig_ruleset *rs, const elig_factset *fs, const uint8_t *out,
                     uint32_t ni, bool evidence, fhir_buf *b, bool *first, uint64_t *used)
{
    const enode *n = &rs->nodes[ni];
    int res = out[ni] & 7;
    if (res == TNA || res == TNE)
        return;
    if (n->kind == N_LEAF) {
        const efact *f = &rs->facts[n->fact];
        const fval *v = &fs->v[n->fact];
        if (!*first)
            fhir_buf_puts(b, "; ");
        *first = false;
        if (used)
            *used |= 1ull << n->fact;
        if (!v->known) {
            if (out[ni] & T_ASSUMED)
                PUT(b, words(f->name), " not documented (taken as ",
                    ((out[ni] & 7) == TT) == (n->op != OP_FALSE) ? "present" : "absent", ")");
            else
                PUT(b, words(f->name), " unknown");
        } else {
            put_value(b, f, v);
        }
        const map_fact *mf = v->src;
        bool partial = res == TU || !v->known;
        if ((evidence || partial) && mf && mf->evidence && mf->evidence[0] && !(out[ni] & T_ASSUMED)) {
            fhir_buf_puts(b, " (");
            const char *colon = strchr(mf->evidence, ':');
            if (!strcmp(f->name, "lines") && v->known && colon)
                put_lines(b, colon + 2); /* the lines in words; their records are in provenance */
            else
                put_plain(b, mf->evidence);
            if (partial && mf->settle) {
                fhir_buf_puts(b, "; would be settled by ");
                fhir_buf_puts(b, mf->settle);
            }
            fhir_buf_putc(b, ')');
        }
        return;
    }
    for (uint32_t k = 0; k < n->nkids; k++) {
        uint32_t c = rs->kids[n->kids + k];
        int cr = out[c] & 7;
        if (cr == TNA || cr == TNE)
            continue;
        bool take;
        if (n->kind == N_NOT)
            take = true;
        else if (res == TU)
            take = cr == TU;
        else if (n->kind == N_ALL)
            take = res == TT || cr == TF;
        else
            take = res == TF || cr == TT;
        if (!take)
            continue;
        describe(rs, fs, out, c, evidence, b, first, used);
        if ((n->kind == N_ALL && res == TF) || (n->kind == N_ANY && res == TT))
            break; /* the first deciding child is enough */
    }
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static bool gate_is_disease(const elig_ruleset *rs, uint32_t ni)
{
    const char *role = rs->nodes[ni].role;
    return role && !strcmp(role, "disease");
}

static void cite(fhir_buf *b, const char *doc, const char *rev, const char *url)
{
    PUT(b, " Label: ", doc, ", revised ", rev, ", ", url);
}

static const char *cat_words(uint8_t c)
{
    return c == ELIG_ELIGIBLE ? "eligible" : c == ELIG_POSSIBLY_ELIGIBLE ? "possibly eligible" : "not eligible";
}

/* The hard gates of indication i that applied, in criteria order: fn(ud, gate node, result).
 * Returns how many. */
static size_t each_gate(const elig_ruleset *rs, const elig_result *r, size_t i, void (*fn)(void *, uint32_t, int),
                        void *ud)
{
    const eind *ind = &rs->inds[i];
    const enode *root = &rs->nodes[ind->root];
    uint32_t ng = root->kind == N_ALL ? root->nkids : 1;
    size_t n = 0;
    for (uint32_t k = 0; k < ng; k++) {
        uint32_t g = root->kind == N_ALL ? rs->kids[root->kids + k] : ind->root;
        int gr = r->out[g] & 7;
        if (gr == TNA || gr == TNE)
            continue;
        fn(ud, g, gr);
        n++;
    }
    return n;
}

/* One gate on the explanation line: "; label: met (facts)". */
typedef struct ind_line {
    const elig_ruleset *rs;
    const elig_factset *fs;
    const elig_result *r;
    fhir_buf *b;
    uint64_t *used;
    bool sep;
} ind_line;

static void ind_gate(void *ud, uint32_t g, int gr)
{
    ind_line *l = ud;
    bool first = true;
    PUT(l->b, l->sep ? "; " : " ", node_label(l->rs, g), ": ", gr == TT ? "met" : gr == TU ? "unknown" : "not met");
    l->sep = true;
    size_t before = l->b->len;
    fhir_buf_puts(l->b, " (");
    describe(l->rs, l->fs, l->r->out, g, false, l->b, &first, l->used);
    if (first) /* nothing to say */
        l->b->len = before;
    else
        fhir_buf_putc(l->b, ')');
}

/* Explanation of eligible / possibly eligible indication i (no newline): every gate with its
 * facts in plain words, then the label. */
static void explain_ind(const elig_ruleset *rs, const elig_factset *fs, const elig_result *r,
                        size_t i, uint8_t cat, fhir_buf *b, uint64_t *used)
{
    const eind *ind = &rs->inds[i];
    PUT(b, ind->key, " ", elig_category_name((elig_category)cat), " (", ind->brand, ", ", ind->description, "): ",
        cat_words(cat), ind->pending ? " if its expected label is approved" : "", ".");
    ind_line l = {rs, fs, r, b, used, false};
    each_gate(rs, r, i, ind_gate, &l);
    fhir_buf_putc(b, '.');
    cite(b, ind->src_doc, ind->src_rev, ind->src_url);
}

/* One gate for elig_result_gates: its facts with their evidence. */
typedef struct gate_out {
    const elig_ruleset *rs;
    const elig_factset *fs;
    const elig_result *r;
    fhir_buf *b;
    elig_gate_fn fn;
    void *ud;
} gate_out;

static void gate_emit(void *ud, uint32_t g, int gr)
{
    gate_out *o = ud;
    bool first = true;
    fhir_buf_reset(o->b);
    describe(o->rs, o->fs, o->r->out, g, true, o->b, &first, NULL);
    o->fn(o->ud, node_label(o->rs, g), gr == TT ? ELIG_GATE_MET : gr == TU ? ELIG_GATE_UNKNOWN : ELIG_GATE_FAILED,
          fhir_buf_cstr(o->b));
}

size_t elig_result_gates(const elig_ruleset *rs, const elig_factset *fs, const elig_result *r, size_t i,
                         elig_gate_fn fn, void *ud)
{
    if (i >= rs->ninds)
        return 0;
    fhir_buf b;
    fhir_buf_init(&b, 64 * 1024);
    gate_out o = {rs, fs, r, &b, fn, ud};
    size_t n = each_gate(rs, r, i, gate_emit, &o);
    fhir_buf_free(&b);
    return n;
}

const char *elig_ruleset_description(const elig_ruleset *rs, size_t i)
{
    return i < rs->ninds ? rs->inds[i].description : NULL;
}

/* n in words' digits, thousands grouped ("120,000"). */
static void put_count(fhir_buf *b, uint64_t n)
{
    char d[32];
    int len = snprintf(d, sizeof d, "%llu", (unsigned long long)n);
    for (int i = 0; i < len; i++) {
        if (i && (len - i) % 3 == 0)
            fhir_buf_putc(b, ',');
        fhir_buf_putc(b, d[i]);
    }
}

static void explain(const elig_ruleset *rs, const elig_factset *fs, const elig_result *r,
                    elig_line_fn emit, void *ud, uint64_t *used)
{
    fhir_buf b;
    fhir_buf_init(&b, 64 * 1024);
    fhir_buf_reserve(&b, 4096); /* the usual longest line, allocated once (not grown by doubling) */
    if (r->rec_read < r->rec_cached) { /* first: what follows was decided on part of the chart */
        fhir_buf_puts(&b, "Only the first ");
        put_count(&b, r->rec_read);
        fhir_buf_puts(&b, " of ");
        put_count(&b, r->rec_cached);
        fhir_buf_puts(&b, " records in this chart were read; the verdict may miss facts.");
        emit(ud, fhir_buf_cstr(&b), b.len);
        fhir_buf_reset(&b);
    }
    /* indications excluded by their disease gate are summarised on one line; other
     * not_eligible indications failing the same gate on the same facts share a line */
    int first_dis = -1;
    char **fails = fhir_xcalloc(rs->ninds, sizeof *fails);
    for (size_t i = 0; i < rs->ninds; i++)
        if (r->cat[i] == ELIG_NOT_ELIGIBLE && !gate_is_disease(rs, (uint32_t)r->failed[i])) {
            bool first = true;
            fhir_buf_reset(&b);
            PUT(&b, "fails '", node_label(rs, (uint32_t)r->failed[i]), "' (");
            describe(rs, fs, r->out, (uint32_t)r->failed[i], true, &b, &first, used);
            fhir_buf_putc(&b, ')');
            fails[i] = fhir_xstrdup(fhir_buf_cstr(&b));
        }
    for (size_t i = 0; i < rs->ninds; i++) {
        if (r->cat[i] == ELIG_NOT_IN_FORCE)
            continue;
        if (r->cat[i] == ELIG_NOT_ELIGIBLE && !fails[i]) {
            if (first_dis < 0)
                first_dis = (int)i;
            continue;
        }
        fhir_buf_reset(&b);
        if (!fails[i]) {
            explain_ind(rs, fs, r, i, r->cat[i], &b, used);
            emit(ud, fhir_buf_cstr(&b), b.len);
            continue;
        }
        if (!fails[i][0])
            continue; /* already written with an earlier indication */
        size_t same = 0;
        for (size_t j = i; j < rs->ninds; j++)
            if (fails[j] && !strcmp(fails[j], fails[i])) {
                PUT(&b, same ? "," : "", rs->inds[j].key);
                same++;
            }
        PUT(&b, " not_eligible: ", fails[i], ".");
        if (same == 1)
            cite(&b, rs->inds[i].src_doc, rs->inds[i].src_rev, rs->inds[i].src_url);
        for (size_t j = i + 1; j < rs->ninds; j++)
            if (fails[j] && !strcmp(fails[j], fails[i]))
                fails[j][0] = 0;
        emit(ud, fhir_buf_cstr(&b), b.len);
    }
    for (size_t i = 0; i < rs->ninds; i++)
        free(fails[i]);
    free(fails);
    if (first_dis >= 0) {
        fhir_buf_reset(&b);
        fhir_buf_puts(&b, "not the disease of the label for");
        bool sep = false;
        for (size_t i = 0; i < rs->ninds; i++)
            if (r->cat[i] == ELIG_NOT_ELIGIBLE && gate_is_disease(rs, (uint32_t)r->failed[i])) {
                PUT(&b, sep ? "," : " ", rs->inds[i].key);
                sep = true;
            }
        bool first = true;
        fhir_buf_puts(&b, " (");
        describe(rs, fs, r->out, (uint32_t)r->failed[first_dis], true, &b, &first, used);
        fhir_buf_putc(&b, ')');
        emit(ud, fhir_buf_cstr(&b), b.len);
    }
    /* pending products (shown only on request): what they would decide */
    for (size_t i = 0; i < rs->ninds; i++) {
        if (r->pend[i] == ELIG_NOT_IN_FORCE)
            continue;
        fhir_buf_reset(&b);
        fhir_buf_puts(&b, "pending (label not verified, not counted): ");
        if (r->pend[i] == ELIG_NOT_ELIGIBLE) {
            PUT(&b, rs->inds[i].key, " would be not eligible.");
            cite(&b, rs->inds[i].src_doc, rs->inds[i].src_rev, rs->inds[i].src_url);
        } else {
            explain_ind(rs, fs, r, i, r->pend[i], &b, used);
        }
        emit(ud, fhir_buf_cstr(&b), b.len);
    }
    for (size_t k = 0; k < rs->nflag_ids; k++) {
        uint8_t fi = rs->flag_order[k];
        if (!(r->flags >> fi & 1))
            continue;
        const eflag *fl = &rs->flags[r->flag_src[fi]];
        bool first = true;
        fhir_buf_reset(&b);
        if (rs->flag_is_note[fi]) {
            PUT(&b, "note ", rs->flag_ids[fi], ": ", fl->message);
        } else {
            PUT(&b, "review flag ", rs->flag_ids[fi], " (");
            describe(rs, fs, r->out, fl->node, true, &b, &first, used); /* the value says which measure */
            PUT(&b, "): ", fl->message);
        }
        emit(ud, fhir_buf_cstr(&b), b.len);
    }
    bool any_trig = false;
    for (size_t k = 0; k < rs->ntrigs; k++)
        if (r->trig[k]) {
            const etrig *t = &rs->trigs[k];
            fhir_buf_reset(&b);
            PUT(&b, "consult ", elig_consult_name((elig_consult)t->rec), ": ", t->reason, " (", t->source, ")");
            emit(ud, fhir_buf_cstr(&b), b.len);
            any_trig = true;
        }
    if (!any_trig && rs->nconsults) {
        fhir_buf_reset(&b);
        fhir_buf_puts(&b, "consult none: no refer-early trigger is documented");
        emit(ud, fhir_buf_cstr(&b), b.len);
    }
    const char *req[ELIG_MAX_FACTS];
    size_t nr = elig_result_to_request(rs, fs, r, req, ELIG_MAX_FACTS);
    for (size_t k = 0; k < nr && k < ELIG_MAX_FACTS; k++) {
        fhir_buf_reset(&b);
        PUT(&b, "record to request: ", req[k]);
        emit(ud, fhir_buf_cstr(&b), b.len);
    }
    fhir_buf_reset(&b);
    PUT(&b, "urgency ", elig_urgency_name((elig_urgency)r->urgency), ": ", elig_result_urgency_reason(rs, r));
    if (r->urg_ind >= 0)
        PUT(&b, " (", rs->inds[r->urg_ind].key, ")");
    emit(ud, fhir_buf_cstr(&b), b.len);
    fhir_buf_free(&b);
}

typedef struct json_lines {
    fhir_buf *out;
    bool first;
} json_lines;

static void emit_json(void *ud, const char *line, size_t len)
{
    json_lines *j = ud;
    if (!j->first)
        fhir_buf_putc(j->out, ',');
    j->first = false;
    fhir_json_write_string(j->out, line, len);
}

static void emit_text(void *ud, const char *line, size_t len)
{
    fhir_buf *out = ud;
    fhir_buf_puts(out, "  ");
    fhir_buf_append(out, line, len);
    fhir_buf_putc(out, '\n');
}

int elig_result_write_explanation(const elig_ruleset *rs, const elig_factset *fs,
                                  const elig_result *r, fhir_buf *out)
{
    explain(rs, fs, r, emit_text, out, NULL);
    return out->overflow ? -1 : 0;
}

void elig_result_each_line(const elig_ruleset *rs, const elig_factset *fs, const elig_result *r,
                           elig_line_fn fn, void *ud)
{
    explain(rs, fs, r, fn, ud, NULL);
}

void elig_result_each_consult_reason(const elig_ruleset *rs, const elig_result *r, elig_line_fn fn,
                                     void *ud)
{
    fhir_buf b;
    fhir_buf_init(&b, 0);
    for (size_t k = 0; k < rs->ntrigs; k++)
        if (r->trig[k]) {
            fhir_buf_reset(&b);
            PUT(&b, elig_consult_name((elig_consult)rs->trigs[k].rec), ": ", rs->trigs[k].reason, " (",
                rs->trigs[k].source, ")");
            fn(ud, fhir_buf_cstr(&b), b.len);
        }
    fhir_buf_free(&b);
}

static void json_key(fhir_buf *out, const char *k)
{
    fhir_buf_putc(out, ',');
    fhir_json_write_string(out, k, strlen(k));
    fhir_buf_putc(out, ':');
}

static void json_strs(fhir_buf *out, const char *const *v, size_t n)
{
    fhir_buf_putc(out, '[');
    for (size_t k = 0; k < n; k++) {
        if (k)
            fhir_buf_putc(out, ',');
        fhir_json_write_string(out, v[k], strlen(v[k]));
    }
    fhir_buf_putc(out, ']');
}

static void json_str(fhir_buf *out, const char *s)
{
    fhir_json_write_string(out, s ? s : "", s ? strlen(s) : 0);
}

static void json_cats(fhir_buf *out, const elig_ruleset *rs, const uint8_t *cats, uint8_t want)
{
    fhir_buf_putc(out, '[');
    bool sep = false;
    for (size_t i = 0; i < rs->ninds; i++)
        if (cats[i] == want) {
            if (sep)
                fhir_buf_putc(out, ',');
            sep = true;
            json_str(out, rs->inds[i].key);
        }
    fhir_buf_putc(out, ']');
}

int elig_result_write_products(const elig_ruleset *rs, const elig_result *r, elig_category want,
                               fhir_buf *out)
{
    json_cats(out, rs, r->cat, (uint8_t)want);
    return out->overflow ? -1 : 0;
}

void elig_provenance_json(fhir_buf *out, const char *key, const char *file, const char *ref)
{
    fhir_buf tmp;
    fhir_buf_init(&tmp, 0);
    PUT(&tmp, key, ": ", base_name(file), "; ", ref ? ref : "(no reference)");
    fhir_json_write_string(out, tmp.data ? tmp.data : "", tmp.len);
    fhir_buf_free(&tmp);
}

/* One provenance entry "key: file; reference" (developers, written at load), comma-separated
 * in out. */
static void put_provenance(fhir_buf *out, bool *sep, const char *prov)
{
    if (*sep)
        fhir_buf_putc(out, ',');
    *sep = true;
    fhir_buf_puts(out, prov);
}

/* The "provenance" array (developers): the criteria files and our references of the
 * indications the explanation discusses and of the raised refer-early triggers, then the
 * evidence behind each fact it used (bit i of used: fact i). */
static void put_provenance_list(fhir_buf *out, const elig_ruleset *rs, const elig_factset *fs,
                                const elig_result *r, uint64_t used)
{
    /* developers: criteria files, our reference, table rows behind each fact named above */
    fhir_buf_putc(out, '[');
    bool sep = false;
    fhir_buf p;
    fhir_buf_init(&p, 0);
    for (size_t i = 0; i < rs->ninds; i++) {
        /* the indications the explanation discusses (not those excluded by their disease) */
        bool shown = r->pend[i] != ELIG_NOT_IN_FORCE || r->cat[i] == ELIG_ELIGIBLE ||
                     r->cat[i] == ELIG_POSSIBLY_ELIGIBLE ||
                     (r->cat[i] == ELIG_NOT_ELIGIBLE && !gate_is_disease(rs, (uint32_t)r->failed[i]));
        if (shown)
            put_provenance(out, &sep, rs->inds[i].prov);
    }
    for (size_t c = 0; c < rs->nconsults; c++) {
        bool fired = false;
        for (uint32_t k = 0; k < rs->consults[c].ntrig; k++)
            fired |= r->trig[rs->consults[c].trig0 + k] != 0;
        if (fired)
            put_provenance(out, &sep, rs->consults[c].prov);
    }
    for (size_t k = 0; k < rs->nfacts; k++) {
        uint8_t fi = rs->fact_order[k];
        const map_fact *mf = fs->v[fi].src;
        if (!(used >> fi & 1) || !mf || !mf->evidence)
            continue;
        fhir_buf_reset(&p);
        PUT(&p, rs->facts[fi].name, ": ", mf->evidence);
        if (sep)
            fhir_buf_putc(out, ',');
        sep = true;
        fhir_json_write_string(out, p.data, p.len);
    }
    fhir_buf_free(&p);
    fhir_buf_putc(out, ']');
}

/* The screen JSON, with or without the developers' "provenance" member. */
static int write_json(const elig_ruleset *rs, const elig_factset *fs, const elig_result *r,
                      const char *patient_id, bool provenance, fhir_buf *out)
{
    fhir_buf_puts(out, "{\"patient\":");
    json_str(out, patient_id);
    json_key(out, "category");
    json_str(out, elig_category_name((elig_category)r->best));
    json_key(out, "products");
    json_cats(out, rs, r->cat, ELIG_ELIGIBLE);
    json_key(out, "possible_products");
    json_cats(out, rs, r->cat, ELIG_POSSIBLY_ELIGIBLE);
    const char *names[ELIG_MAX_FACTS];
    size_t nm = elig_result_missing(rs, fs, r, names, ELIG_MAX_FACTS);
    json_key(out, "missing");
    json_strs(out, names, nm < ELIG_MAX_FACTS ? nm : ELIG_MAX_FACTS);
    const char *ids[ELIG_MAX_FLAGS];
    size_t nf = elig_result_flags(rs, r, ids, ELIG_MAX_FLAGS);
    json_key(out, "review_flags");
    json_strs(out, ids, nf < ELIG_MAX_FLAGS ? nf : ELIG_MAX_FLAGS);
    nf = elig_result_notes(rs, r, ids, ELIG_MAX_FLAGS);
    json_key(out, "notes");
    json_strs(out, ids, nf < ELIG_MAX_FLAGS ? nf : ELIG_MAX_FLAGS);
    json_key(out, "consult");
    fhir_buf_puts(out, "{\"recommendation\":");
    json_str(out, elig_consult_name((elig_consult)r->consult));
    fhir_buf_puts(out, ",\"triggers\":[");
    bool sep = false;
    for (size_t k = 0; k < rs->ntrigs; k++)
        if (r->trig[k]) {
            if (sep)
                fhir_buf_putc(out, ',');
            sep = true;
            json_str(out, rs->trigs[k].id);
        }
    fhir_buf_puts(out, "],\"reasons\":[");
    json_lines jr = {out, true};
    elig_result_each_consult_reason(rs, r, emit_json, &jr);
    fhir_buf_puts(out, "]}");
    if (rs->show_pending) {
        json_key(out, "pending");
        fhir_buf_puts(out, "{\"eligible\":");
        json_cats(out, rs, r->pend, ELIG_ELIGIBLE);
        fhir_buf_puts(out, ",\"possibly_eligible\":");
        json_cats(out, rs, r->pend, ELIG_POSSIBLY_ELIGIBLE);
        fhir_buf_puts(out, ",\"not_eligible\":");
        json_cats(out, rs, r->pend, ELIG_NOT_ELIGIBLE);
        fhir_buf_putc(out, '}');
    }
    if (r->rec_read < r->rec_cached) {
        json_key(out, "partial");
        fhir_buf_printf(out, "{\"read\":%llu,\"cached\":%llu}", (unsigned long long)r->rec_read,
                        (unsigned long long)r->rec_cached);
    }
    json_key(out, "urgency");
    json_str(out, elig_urgency_name((elig_urgency)r->urgency));
    json_key(out, "explanation");
    fhir_buf_putc(out, '[');
    json_lines jl = {out, true};
    uint64_t used = 0;
    explain(rs, fs, r, emit_json, &jl, &used);
    fhir_buf_putc(out, ']');
    const char *req[ELIG_MAX_FACTS];
    size_t nr = elig_result_to_request(rs, fs, r, req, ELIG_MAX_FACTS);
    json_key(out, "to_request");
    json_strs(out, req, nr < ELIG_MAX_FACTS ? nr : ELIG_MAX_FACTS);
    if (provenance) {
        json_key(out, "provenance");
        put_provenance_list(out, rs, fs, r, used);
    }
    json_key(out, "ruleset");
    json_str(out, rs->hash);
    fhir_buf_putc(out, '}');
    return out->overflow ? -1 : 0;
}

int elig_result_write_json(const elig_ruleset *rs, const elig_factset *fs,
                           const elig_result *r, const char *patient_id, fhir_buf *out)
{
    return write_json(rs, fs, r, patient_id, true, out);
}

int elig_result_write_verdict_json(const elig_ruleset *rs, const elig_factset *fs,
                                   const elig_result *r, const char *patient_id, fhir_buf *out)
{
    return write_json(rs, fs, r, patient_id, false, out);
}
