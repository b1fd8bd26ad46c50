/* map_profile — builds the clinical profile of one patient (see map_profile.h, FACTS.md and
 * mappings/README.md for the rules). */
#include "map_profile_int.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_arena.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_ref.h"
#include "map_lot.h"

#define INFECTION_DAYS 30

/* Specificity rank when one Condition carries several codings (lower wins). */
static const char *const DX_RANK[] = {
    "pcnsl", "tfl", "hgbcl", "pmbcl", "fl_3b", "dlbcl_nos", "mcl", "mzl", "cll_sll", "fl",
    "b_all", "all_nos", "pcl", "mm", "hl", "other_heme", "non_heme", NULL,
};

static int list_index(const char *const *list, const char *s)
{
    for (int i = 0; list[i]; i++)
        if (!strcmp(list[i], s))
            return i;
    return -1;
}

/* ---- profile ----------------------------------------------------------------------------------- */

void map_profile_opts_default(map_profile_opts *o)
{
    memset(o, 0, sizeof *o);
    int64_t now = fhir_clock_now();
    o->as_of_days = now >= 0 ? now / 86400 : -((-now + 86399) / 86400);
    o->lab_lookback_days = 90;
    o->lot_window_days = 28;
    o->lot_gap_days = 90;
    o->relapse_anchor_end = 0;
    o->refractory_days = 60;
}

const char *map_profile_patient_id(const map_profile *p)
{
    return p ? p->patient_id : NULL;
}

const map_fact *map_profile_fact(const map_profile *p, const char *name)
{
    int i = map_fact_index(name);
    if (!p || i < 0)
        return NULL;
    return &p->facts[i];
}

const map_fact *map_profile_fact_at(const map_profile *p, size_t i)
{
    return p && i < MAP_FACT_COUNT ? &p->facts[i] : NULL;
}

size_t map_profile_line_count(const map_profile *p)
{
    return p ? p->nlines : 0;
}

const map_line *map_profile_line(const map_profile *p, size_t i)
{
    return p && i < p->nlines ? &p->lines[i] : NULL;
}

size_t map_profile_event_count(const map_profile *p)
{
    return p ? p->nevents : 0;
}

const map_event *map_profile_event(const map_profile *p, size_t i)
{
    return p && i < p->nevents ? &p->events[i] : NULL;
}

const char *map_event_kind_text(map_event_kind k)
{
    switch (k) {
    case MAP_EVENT_RESPONSE: return "response";
    case MAP_EVENT_PROGRESSION: return "progression or relapse";
    case MAP_EVENT_AUTO_HCT: return "autologous stem cell transplant";
    case MAP_EVENT_ALLO_HCT: return "allogeneic stem cell transplant";
    case MAP_EVENT_HCT: return "stem cell transplant";
    case MAP_EVENT_CAR_T: return "CAR T-cell infusion";
    case MAP_EVENT_CAR_T_COLLECTION: return "cell collection for CAR T";
    }
    return "event";
}

size_t map_profile_warning_count(const map_profile *p)
{
    return p ? p->nwarnings : 0;
}

const char *map_profile_warning(const map_profile *p, size_t i)
{
    return p && i < p->nwarnings ? p->warnings[i] : NULL;
}

void map_profile_free(map_profile *p)
{
    if (!p)
        return;
    fhir_arena_free(p->a);
    fhir_buf_free(&p->fmt);
    free(p);
}

static bool date_of(const fhir_node *n, const char *path, int64_t *day)
{
    const char *s = fhir_node_path_str(n, path);
    return s && fhir_clock_parse_date(s, day) == 0;
}

static const char *first_date(const fhir_node *n, const char *const *paths, int64_t *day)
{
    for (; *paths; paths++) {
        const char *s = fhir_node_path_str(n, *paths);
        if (s && fhir_clock_parse_date(s, day) == 0)
            return s;
    }
    return NULL;
}

static const char *res_ref(map_profile *p, const fhir_node *res)
{
    const char *type = fhir_node_resource_type(res), *id = fhir_node_resource_id(res);
    type = type ? type : "?";
    id = id ? id : "?";
    /* one per resource read: joined by hand, not by astr's printf (same bytes) */
    size_t nt = strlen(type), ni = strlen(id);
    char *r = nt + 1 + ni < 2048 ? fhir_arena_alloc(p->a, nt + ni + 2) : NULL;
    if (!r)
        return ajoin(p, type, "/", id, AJOIN_END);
    memcpy(r, type, nt);
    r[nt] = '/';
    memcpy(r + nt + 1, id, ni + 1);
    return r;
}

static bool status_is(const fhir_node *res, const char *path, const char *const *bad)
{
    const char *s = fhir_node_path_str(res, path);
    if (!s)
        return false;
    for (; *bad; bad++)
        if (!strcmp(*bad, s))
            return true;
    return false;
}

/* Code of the first coding of a CodeableConcept at path (e.g. clinicalStatus). */
static const char *cc_code(const fhir_node *res, const char *path)
{
    const fhir_node *cc = fhir_node_path(res, path);
    for (const fhir_node *c = fhir_node_first(fhir_node_get(cc, "coding")); c; c = c->next) {
        const char *code = fhir_node_str(fhir_node_get(c, "code"));
        if (code)
            return code;
    }
    return NULL;
}

/* Last path segment / uuid of a reference ("Patient/1", "urn:uuid:x", "http://h/Patient/1"). */
static const char *ref_tail(const char *ref, const char **type_out, size_t *type_len)
{
    if (!ref)
        return NULL;
    if (!strncmp(ref, "urn:uuid:", 9) || !strncmp(ref, "urn:oid:", 8)) {
        if (type_out)
            *type_out = NULL;
        return strrchr(ref, ':') + 1;
    }
    const char *h = strstr(ref, "/_history/");
    size_t len = h ? (size_t)(h - ref) : strlen(ref);
    const char *slash = NULL;
    for (size_t i = 0; i < len; i++)
        if (ref[i] == '/')
            slash = ref + i;
    if (!slash)
        return NULL;
    if (type_out) {
        const char *ts = slash - 1;
        while (ts > ref && ts[-1] != '/')
            ts--;
        *type_out = ts;
        *type_len = (size_t)(slash - ts);
    }
    return slash + 1;
}

/* ---- diagnoses --------------------------------------------------------------------------------- */

static bool concept_is_disease(const char *c)
{
    return map_fact_code_valid("diseases", c);
}

static int code_status_of(const char *system, const char *code)
{
    if (!code || !system || strcmp(system, MAP_SYS_ICD10CM))
        return 0;
    char nc[16];
    size_t j = 0;
    for (const char *s = code; *s && j + 1 < sizeof nc; s++)
        if (*s != '.')
            nc[j++] = (char)toupper((unsigned char)*s);
    nc[j] = '\0';
    if (j == 5 && (!strncmp(nc, "C90", 3) || !strncmp(nc, "C91", 3))) {
        if (nc[4] == '1')
            return 1;
        if (nc[4] == '2')
            return 2;
    }
    if (j >= 5 && nc[0] == 'C' && nc[1] == '8' && nc[j - 1] == 'A')
        return 1;
    if (!strcmp(nc, "C8841"))
        return 1;
    return 0;
}

/* ---- findings in free text (cytogenetics reports, procedure status reasons) ---------------- */

static void add_finding(builder *b, const char *what, const char *ref, const char *text)
{
    finding *f = vec_push(&b->findings);
    f->what = what;
    f->ref = ref;
    f->text = astr(b->p, "%.200s", text);
}

static bool has_any(const char *low, const char *const *words)
{
    for (; *words; words++)
        if (strstr(low, *words))
            return true;
    return false;
}

/* Myeloma cytogenetics named in a report or diagnosis text (IMS/IMWG 2025 high-risk markers,
 * update-2026-12.md §0.1 item 5). Free text only: our codes reference lists no cytogenetics
 * codes. Each ';'- or ','-separated part (outside parentheses) is read alone, and a part that
 * says "not detected", "negative", "absent", "without" or "no " is skipped. */
static void scan_findings(builder *b, const char *ref, const char *text)
{
    static const struct {
        const char *what;
        const char *const words[10];
    } marks[] = {
        {"del17p", {"del(17p)", "del 17p", "17p deletion", "deletion 17p", "deletion of 17p", "17p-", NULL}},
        {"tp53", {"tp53 mutation", "tp53 mutated", "tp53 deletion", NULL}},
        {"t414", {"t(4;14)", NULL}},
        {"t1416", {"t(14;16)", NULL}},
        {"t1420", {"t(14;20)", NULL}},
        {"gain1q", {"1q gain", "gain of 1q", "gain(1q)", "1q+", "amp(1q)", "1q21 gain", "1q21 amplification", "+1q", NULL}},
        {"biallelic_del1p", {"biallelic del(1p32)", "biallelic 1p32", "homozygous del(1p32)", NULL}},
        {"del1p", {"del(1p32)", "1p32 deletion", "del(1p)", "deletion 1p32", NULL}},
        {"high_risk", {"high-risk cytogenetics", "high risk cytogenetics", "high-risk myeloma",
                       "high risk myeloma", "high-risk multiple myeloma", "high risk multiple myeloma", NULL}},
    };
    static const char *const neg[] = {"not detected", "negative", "absent", "no ", "without", NULL};
    char low[600];
    size_t n = 0;
    for (const char *t = text; *t && n + 1 < sizeof low; t++)
        low[n++] = (char)tolower((unsigned char)*t);
    low[n] = '\0';
    for (char *part = low; *part;) {
        char *end = part;
        for (int depth = 0; *end && (depth > 0 || (*end != ';' && *end != ',')); end++)
            depth += *end == '(' ? 1 : *end == ')' && depth > 0 ? -1 : 0; /* "t(4;14)" is one part */
        char saved = *end;
        *end = '\0';
        if (!has_any(part, neg))
            for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++)
                if (has_any(part, marks[i].words)) {
                    add_finding(b, marks[i].what, ref, text);
                    if (!strcmp(marks[i].what, "biallelic_del1p"))
                        break; /* not also a single del(1p32) */
                }
        *end = saved;
        part = *end ? end + 1 : end;
    }
}

static void add_condition(builder *b, const fhir_node *res)
{
    static const char *const bad_ver[] = {"entered-in-error", "refuted", NULL};
    map_profile *p = b->p;
    const char *ver = cc_code(res, "verificationStatus");
    if (ver && list_index(bad_ver, ver) >= 0)
        return;
    static const char *const onset_paths[] = {"onsetDateTime", "onsetPeriod.start", "recordedDate",
                                              NULL};
    int64_t onset = INT64_MIN, rec = INT64_MIN, abate = INT64_MIN;
    first_date(res, onset_paths, &onset);
    date_of(res, "recordedDate", &rec);
    if (onset != INT64_MIN && onset > p->as_of)
        return; /* not yet diagnosed as of the evaluation date */
    if (onset == INT64_MIN && rec != INT64_MIN && rec > p->as_of)
        return;
    const fhir_node *cc = fhir_node_get(res, "code");
    const char *text = fhir_node_str(fhir_node_get(cc, "text"));
    map_dx best = {0};
    const char *best_code = NULL, *best_sys = NULL;
    int best_rank = 1000;
    int cstatus = 0;
    for (const fhir_node *c = fhir_node_first(fhir_node_get(cc, "coding")); c; c = c->next) {
        const char *sys = fhir_node_str(fhir_node_get(c, "system"));
        const char *code = fhir_node_str(fhir_node_get(c, "code"));
        const char *disp = fhir_node_str(fhir_node_get(c, "display"));
        map_dx dx;
        int cs = code_status_of(sys, code);
        if (cs)
            cstatus = cs;
        /* names: the clinician's text first, then the coding display (rule order decides) */
        char names[600];
        snprintf(names, sizeof names, "%s | %s", text ? text : "", disp ? disp : "");
        if (!map_dx_lookup(b->t, sys, code, names, &dx))
            continue;
        int rank = list_index(DX_RANK, dx.concept);
        if (rank < 0)
            rank = 500; /* markers rank after diseases */
        if (dx.unspec_axis)
            rank += 100; /* a coding that leaves lineage / histology open yields to a specific one */
        if (!strcmp(dx.concept, "ignore"))
            return;
        if (rank < best_rank) {
            best_rank = rank;
            best = dx;
            best_code = code;
            best_sys = sys;
        }
    }
    if (!best.concept && text) {
        map_dx dx;
        if (map_dx_lookup(b->t, NULL, NULL, text, &dx)) {
            if (!strcmp(dx.concept, "ignore"))
                return;
            best = dx;
        }
    }
    if (!best.concept)
        return;
    (void)best_sys;
    cond *c = vec_push(&b->conds);
    c->concept = best.concept;
    c->row = best.row;
    c->code = best_code ? best_code : (text ? text : "?");
    c->ref = res_ref(p, res);
    c->id = fhir_node_resource_id(res);
    c->onset = onset;
    c->status_day = rec != INT64_MIN ? rec : onset;
    c->code_status = cstatus;
    c->unspec_axis = best.unspec_axis;
    c->nunspec = best.nunspec;
    for (size_t i = 0; i < best.nunspec; i++)
        c->unspec[i] = best.unspec[i];
    if (text)
        scan_findings(b, c->ref, text);
    const char *cs = cc_code(res, "clinicalStatus");
    if (!cs || !strcmp(cs, "active") || !strcmp(cs, "recurrence") || !strcmp(cs, "relapse"))
        c->state = 0;
    else if (!strcmp(cs, "remission"))
        c->state = 1;
    else
        c->state = 2;
    if (cs && (!strcmp(cs, "recurrence") || !strcmp(cs, "relapse")))
        c->relapse_status = true;
    if (cs && !strcmp(cs, "remission"))
        c->code_status = c->code_status ? c->code_status : 1;
    static const char *const abate_paths[] = {"abatementDateTime", "abatementPeriod.end",
                                              "abatementPeriod.start", NULL};
    if (first_date(res, abate_paths, &abate) && abate <= p->as_of && c->state == 0)
        c->state = 2;
}

/* ---- medications ------------------------------------------------------------------------------- */

#define MAX_DRUGS_PER_RECORD 6

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

/* The remembered answer for (sys, code, text) of kind (0 drug text, 1 procedure); NULL when
 * not asked yet. */
static struct text_memo *memo_find(builder *b, int kind, const char *sys, const char *code,
                                   const char *text)
{
    for (size_t i = 0; i < b->nmemo; i++) {
        struct text_memo *m = &b->memo[i];
        if (m->kind == kind && same_str(m->sys, sys) && same_str(m->code, code) &&
            same_str(m->text, text))
            return m;
    }
    return NULL;
}

static struct text_memo *memo_add(builder *b)
{
    if (b->nmemo == MEMO_SLOTS)
        return NULL;
    return &b->memo[b->nmemo++];
}

/* map_drug_lookup_text, remembered per patient. */
static const map_drug *drug_text(builder *b, const char *text)
{
    if (!text || !*text)
        return NULL;
    struct text_memo *m = memo_find(b, 0, NULL, NULL, text);
    if (m)
        return m->answer;
    const map_drug *d = map_drug_lookup_text(b->t, text);
    if ((m = memo_add(b)))
        *m = (struct text_memo){0, NULL, NULL, text, d, NULL, NULL};
    return d;
}

/* map_proc_lookup, remembered per patient. */
static const char *proc_lookup(builder *b, const char *sys, const char *code, const char *text,
                               const char **row, const char **product)
{
    struct text_memo *m = memo_find(b, 1, sys, code, text);
    if (!m) {
        const char *ev = map_proc_lookup(b->t, sys, code, text, row, product);
        if ((m = memo_add(b)))
            *m = (struct text_memo){1, sys, code, text, ev, ev ? *row : NULL,
                                    ev ? *product : NULL};
        return ev;
    }
    if (m->answer) {
        *row = m->row;
        *product = m->product;
    }
    return m->answer;
}

static size_t drugs_from_cc(builder *b, const fhir_node *cc, const map_drug **out, size_t n,
                            size_t max)
{
    const map_tables *t = b->t;
    size_t start = n;
    for (const fhir_node *c = fhir_node_first(fhir_node_get(cc, "coding")); c && n < max; c = c->next) {
        const char *sys = fhir_node_str(fhir_node_get(c, "system"));
        const char *code = fhir_node_str(fhir_node_get(c, "code"));
        const map_drug *d = (!sys || !strcmp(sys, MAP_SYS_RXNORM)) ? map_drug_lookup_code(t, NULL, code)
                                                                    : NULL;
        if (d)
            out[n++] = d;
    }
    if (n == start)
        for (const fhir_node *c = fhir_node_first(fhir_node_get(cc, "coding")); c && n < max;
             c = c->next) {
            const map_drug *d = drug_text(b, fhir_node_str(fhir_node_get(c, "display")));
            if (d)
                out[n++] = d;
        }
    if (n == start && n < max) {
        const map_drug *d = drug_text(b, fhir_node_str(fhir_node_get(cc, "text")));
        if (d)
            out[n++] = d;
    }
    /* dedupe */
    size_t w = start;
    for (size_t i = start; i < n; i++) {
        bool dup = false;
        for (size_t j = start; j < w; j++)
            if (out[j] == out[i])
                dup = true;
        if (!dup)
            out[w++] = out[i];
    }
    return w;
}

static const fhir_node *resolve_medication(builder *b, const fhir_node *res, const char *ref)
{
    if (!ref)
        return NULL;
    if (ref[0] == '#')
        return fhir_ref_contained(res, ref);
    const char *type = NULL;
    size_t tl = 0;
    const char *id = ref_tail(ref, &type, &tl);
    if (!id)
        return NULL;
    const fhir_node *const *m = b->meds.v;
    for (size_t i = 0; i < b->meds.n; i++) {
        const char *mid = fhir_node_resource_id(m[i]);
        if (mid && !strcmp(mid, id))
            return m[i];
    }
    return NULL;
}

static bool cc_has_code(const fhir_node *cc)
{
    for (const fhir_node *c = fhir_node_first(fhir_node_get(cc, "coding")); c; c = c->next)
        if (fhir_node_str(fhir_node_get(c, "code")))
            return true;
    return false;
}

static bool data_absent(const fhir_node *n)
{
    for (const fhir_node *e = fhir_node_first(fhir_node_get(n, "extension")); e; e = e->next) {
        const char *url = fhir_node_str(fhir_node_get(e, "url"));
        if (url && strstr(url, "data-absent-reason"))
            return true;
    }
    return false;
}

/* Drugs of a medication record. *uncoded: the medication names no coded drug (text only, a
 * data-absent reason, or nothing): then "therapy without agents" rows (drugs.tsv role
 * `unknown`) may apply; for a coded medication they never do (a coded drug that is not in
 * the table is supportive care, not unknown therapy). */
static size_t drugs_of_record(builder *b, const fhir_node *res, const map_drug **out, bool *uncoded)
{
    size_t n = 0;
    *uncoded = false;
    const fhir_node *cc = fhir_node_get(res, "medicationCodeableConcept");
    if (cc) {
        *uncoded = !cc_has_code(cc) || data_absent(cc);
        return drugs_from_cc(b, cc, out, 0, MAX_DRUGS_PER_RECORD);
    }
    const char *ref = fhir_node_path_str(res, "medicationReference.reference");
    const fhir_node *med = resolve_medication(b, res, ref);
    if (!med) {
        const char *disp = fhir_node_path_str(res, "medicationReference.display");
        const map_drug *d = drug_text(b, disp);
        if (d)
            out[n++] = d;
        *uncoded = true;
        return n;
    }
    *uncoded = !cc_has_code(fhir_node_get(med, "code")) && !fhir_node_get(med, "ingredient");
    n = drugs_from_cc(b, fhir_node_get(med, "code"), out, 0, MAX_DRUGS_PER_RECORD);
    for (const fhir_node *ing = fhir_node_first(fhir_node_get(med, "ingredient"));
         ing && n < MAX_DRUGS_PER_RECORD; ing = ing->next) {
        const fhir_node *icc = fhir_node_get(ing, "itemCodeableConcept");
        if (icc) {
            n = drugs_from_cc(b, icc, out, n, MAX_DRUGS_PER_RECORD);
        } else {
            const char *iref = fhir_node_path_str(ing, "itemReference.reference");
            const fhir_node *im = iref && iref[0] == '#' ? fhir_ref_contained(res, iref)
                                                         : resolve_medication(b, res, iref);
            if (im)
                n = drugs_from_cc(b, fhir_node_get(im, "code"), out, n, MAX_DRUGS_PER_RECORD);
        }
    }
    /* dedupe across code and ingredients */
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < w; j++)
            if (out[j] == out[i])
                dup = true;
        if (!dup)
            out[w++] = out[i];
    }
    return w;
}

/* Does the record give a heme Condition as its reason (reasonReference / reasonCode)? */
static bool reason_is_heme(builder *b, const fhir_node *res)
{
    for (const fhir_node *r = fhir_node_first(fhir_node_get(res, "reasonReference")); r; r = r->next) {
        const char *id = ref_tail(fhir_node_str(fhir_node_get(r, "reference")), NULL, NULL);
        const cond *c = b->conds.v;
        for (size_t i = 0; id && i < b->conds.n; i++)
            if (c[i].id && !strcmp(c[i].id, id) && concept_is_heme(c[i].concept))
                return true;
    }
    for (const fhir_node *r = fhir_node_first(fhir_node_get(res, "reasonCode")); r; r = r->next)
        for (const fhir_node *c = fhir_node_first(fhir_node_get(r, "coding")); c; c = c->next) {
            map_dx dx;
            if (map_dx_lookup(b->t, fhir_node_str(fhir_node_get(c, "system")),
                              fhir_node_str(fhir_node_get(c, "code")), NULL, &dx) &&
                concept_is_heme(dx.concept))
                return true;
        }
    return false;
}

/* One exposure per drug of a medication record. End dates (mappings/README.md "Open world"):
 * an end date or supply duration is the end; an active (or on-hold / in-progress) record
 * without one runs to the evaluation date; any other record without one has an unknown end
 * (end_unknown, end = start as a lower bound). */
static void add_med(builder *b, const fhir_node *res, const char *type)
{
    map_profile *p = b->p;
    int64_t start = INT64_MIN, end = INT64_MIN;
    bool ongoing = false, end_unknown = false;
    if (!strcmp(type, "MedicationRequest")) {
        static const char *const bad[] = {"entered-in-error", "cancelled", "draft", NULL};
        static const char *const bad_intent[] = {"proposal", "plan", NULL};
        static const char *const on[] = {"active", "on-hold", NULL};
        if (status_is(res, "status", bad) || status_is(res, "intent", bad_intent) ||
            fhir_node_bool(fhir_node_get(res, "doNotPerform"), false))
            return;
        static const char *const sp[] = {"dosageInstruction.timing.repeat.boundsPeriod.start",
                                         "authoredOn", "dispenseRequest.validityPeriod.start", NULL};
        if (!first_date(res, sp, &start))
            return;
        if (!date_of(res, "dosageInstruction.timing.repeat.boundsPeriod.end", &end)) {
            double days;
            const fhir_node *dur = fhir_node_path(res, "dispenseRequest.expectedSupplyDuration");
            const char *unit = fhir_node_str(fhir_node_get(dur, "code"));
            if (!unit)
                unit = fhir_node_str(fhir_node_get(dur, "unit"));
            if (status_is(res, "status", on))
                ongoing = true;
            else if (fhir_node_double(fhir_node_get(dur, "value"), &days) && days > 0 && days < 3650 &&
                     (!unit || !strcmp(unit, "d") || !strcmp(unit, "days") || !strcmp(unit, "day")))
                end = start + (int64_t)days - 1;
            else
                end_unknown = true;
        }
    } else if (!strcmp(type, "MedicationAdministration")) {
        static const char *const bad[] = {"entered-in-error", "not-done", NULL};
        static const char *const on[] = {"in-progress", "on-hold", NULL};
        if (status_is(res, "status", bad))
            return;
        static const char *const sp[] = {"effectiveDateTime", "effectivePeriod.start", NULL};
        if (!first_date(res, sp, &start))
            return;
        if (fhir_node_path(res, "effectivePeriod") && !date_of(res, "effectivePeriod.end", &end)) {
            if (status_is(res, "status", on))
                ongoing = true;
            else
                end_unknown = true;
        }
    } else { /* MedicationStatement */
        static const char *const bad[] = {"entered-in-error", "not-taken", "intended", NULL};
        static const char *const on[] = {"active", "on-hold", NULL};
        if (status_is(res, "status", bad))
            return;
        static const char *const sp[] = {"effectiveDateTime", "effectivePeriod.start",
                                         "dateAsserted", NULL};
        if (!first_date(res, sp, &start))
            return;
        if (!fhir_node_get(res, "effectiveDateTime") && !date_of(res, "effectivePeriod.end", &end)) {
            if (status_is(res, "status", on))
                ongoing = true;
            else
                end_unknown = true;
        }
    }
    if (start > p->as_of)
        return;
    if (ongoing)
        end = p->as_of;
    if (end == INT64_MIN || end < start)
        end = start;
    if (end > p->as_of)
        end = p->as_of;
    const map_drug *drugs[MAX_DRUGS_PER_RECORD];
    bool uncoded;
    size_t nd = drugs_of_record(b, res, drugs, &uncoded);
    /* therapy without agents: only from a medication that names no coded drug */
    size_t w = 0;
    for (size_t i = 0; i < nd; i++)
        if (strcmp(drugs[i]->role, "unknown") || uncoded)
            drugs[w++] = drugs[i];
    nd = w;
    if (!nd && uncoded && reason_is_heme(b, res))
        drugs[nd++] = map_drug_by_ingredient(b->t, "unknown agent");
    if (!nd || !drugs[0])
        return;
    const char *ref = res_ref(p, res);
    for (size_t i = 0; i < nd; i++) {
        map_lot_exposure *e = vec_push(&b->ex);
        e->drug = drugs[i];
        e->start = start;
        e->end = end;
        e->end_unknown = end_unknown;
        e->ref = ref;
    }
}

/* ---- procedures -------------------------------------------------------------------------------- */

/* A transplant that was not done, and why (mappings/README.md "Open world"): a reason saying
 * contraindicated / not eligible / comorbidity / age documents ineligibility; a reason saying
 * the patient declined is a refusal, which the label does not count as ineligibility. */
static void hct_not_done(builder *b, const fhir_node *res)
{
    static const char *const inelig[] = {"contraindicat", "not eligible", "ineligib", "not a candidate",
                                         "not candidate", "comorbid", "frail", "too old", "advanced age",
                                         "due to age", "and age", "of age", "poor performance", NULL};
    static const char *const refusal[] = {"declin", "refus", "patient choice", "patient preference",
                                          "patient wish", "does not want", "did not want", "opted",
                                          "chose not", NULL};
    const fhir_node *cc = fhir_node_get(res, "code");
    const char *event = NULL;
    for (const fhir_node *c = fhir_node_first(fhir_node_get(cc, "coding")); c && !event; c = c->next)
        event = map_proc_lookup(b->t, fhir_node_str(fhir_node_get(c, "system")),
                                fhir_node_str(fhir_node_get(c, "code")),
                                fhir_node_str(fhir_node_get(c, "display")), NULL, NULL);
    if (!event)
        event = map_proc_lookup(b->t, NULL, NULL, fhir_node_str(fhir_node_get(cc, "text")), NULL, NULL);
    if (!event || (strcmp(event, "auto_hct") && strcmp(event, "allo_hct") && strcmp(event, "hct")))
        return;
    int64_t day;
    static const char *const dp[] = {"performedDateTime", "performedPeriod.start", NULL};
    if (first_date(res, dp, &day) && day > b->p->as_of)
        return;
    char why[600] = "";
    const fhir_node *sr = fhir_node_get(res, "statusReason");
    size_t w = 0;
    const char *t = fhir_node_str(fhir_node_get(sr, "text"));
    if (t)
        w += (size_t)snprintf(why, sizeof why, "%s", t);
    for (const fhir_node *c = fhir_node_first(fhir_node_get(sr, "coding")); c && w < sizeof why; c = c->next) {
        const char *d = fhir_node_str(fhir_node_get(c, "display"));
        if (d)
            w += (size_t)snprintf(why + w, sizeof why - w, "%s%s", w ? "; " : "", d);
    }
    if (!w)
        return;
    char low[600];
    size_t n = 0;
    for (const char *x = why; *x && n + 1 < sizeof low; x++)
        low[n++] = (char)tolower((unsigned char)*x);
    low[n] = '\0';
    const char *ref = res_ref(b->p, res);
    if (has_any(low, inelig))
        add_finding(b, "hct_ineligible", ref, why);
    if (has_any(low, refusal))
        add_finding(b, "hct_refusal", ref, why);
}

static void add_procedure(builder *b, const fhir_node *res)
{
    static const char *const bad[] = {"entered-in-error", "not-done", "preparation", NULL};
    static const char *const not_done[] = {"not-done", NULL};
    if (status_is(res, "status", not_done)) {
        hct_not_done(b, res);
        return;
    }
    if (status_is(res, "status", bad))
        return;
    static const char *const dp[] = {"performedDateTime", "performedPeriod.start", NULL};
    int64_t day;
    if (!first_date(res, dp, &day) || day > b->p->as_of)
        return;
    const fhir_node *cc = fhir_node_get(res, "code");
    const char *text = fhir_node_str(fhir_node_get(cc, "text"));
    const char *event = NULL, *product = NULL, *row = NULL;
    for (const fhir_node *c = fhir_node_first(fhir_node_get(cc, "coding")); c && !event; c = c->next) {
        const char *sys = fhir_node_str(fhir_node_get(c, "system"));
        const char *code = fhir_node_str(fhir_node_get(c, "code"));
        const char *disp = fhir_node_str(fhir_node_get(c, "display"));
        event = proc_lookup(b, sys, code, disp ? disp : text, &row, &product);
    }
    if (!event && text)
        event = proc_lookup(b, NULL, NULL, text, &row, &product);
    if (!event)
        return;
    map_lot_event *e = vec_push(&b->ev);
    if (!strcmp(event, "auto_hct"))
        e->kind = MAP_LOT_AUTO_HCT;
    else if (!strcmp(event, "allo_hct"))
        e->kind = MAP_LOT_ALLO_HCT;
    else if (!strcmp(event, "hct"))
        e->kind = MAP_LOT_HCT;
    else if (!strcmp(event, "car_t"))
        e->kind = MAP_LOT_CAR_T;
    else
        e->kind = MAP_LOT_CAR_T_COLLECTION;
    e->day = day;
    e->product = product ? map_drug_by_ingredient(b->t, product) : NULL;
    e->ref = res_ref(b->p, res);
}

/* ---- observations ------------------------------------------------------------------------------ */

/* Numeric value and unit of an Observation (valueQuantity, valueInteger, valueString "80%",
 * "ECOG 1"). */
static bool obs_value(const fhir_node *res, double *v, const char **unit)
{
    const fhir_node *q = fhir_node_get(res, "valueQuantity");
    if (q) {
        if (!fhir_node_double(fhir_node_get(q, "value"), v))
            return false;
        const char *sys = fhir_node_str(fhir_node_get(q, "system"));
        const char *code = fhir_node_str(fhir_node_get(q, "code"));
        const char *u = fhir_node_str(fhir_node_get(q, "unit"));
        *unit = (code && (!sys || !strcmp(sys, MAP_SYS_UCUM))) ? code : (u ? u : code);
        return true;
    }
    const fhir_node *i = fhir_node_get(res, "valueInteger");
    if (i && fhir_node_double(i, v)) {
        *unit = NULL;
        return true;
    }
    const char *s = fhir_node_str(fhir_node_get(res, "valueString"));
    if (s) {
        const char *d = s;
        while (*d && !isdigit((unsigned char)*d))
            d++;
        if (!*d)
            return false;
        char *end;
        *v = strtod(d, &end);
        while (*end == ' ')
            end++;
        *unit = *end == '%' ? "%" : NULL;
        return true;
    }
    return false;
}

static int64_t obs_when(const fhir_node *res, int64_t *day, const char **text)
{
    static const char *const dp[] = {"effectiveDateTime", "effectivePeriod.start",
                                     "effectiveInstant", "issued", NULL};
    const char *s = first_date(res, dp, day);
    if (!s)
        return INT64_MIN;
    if (text)
        *text = s;
    int64_t ms;
    if (fhir_clock_parse_instant(s, &ms) == 0)
        return ms;
    return *day * 86400000;
}

static bool focus_is_non_heme(builder *b, const fhir_node *res)
{
    for (const fhir_node *f = fhir_node_first(fhir_node_get(res, "focus")); f; f = f->next) {
        const char *ref = fhir_node_str(fhir_node_get(f, "reference"));
        const char *id = ref_tail(ref, NULL, NULL);
        if (!id)
            continue;
        const cond *c = b->conds.v;
        for (size_t i = 0; i < b->conds.n; i++)
            if (c[i].id && !strcmp(c[i].id, id) && !strcmp(c[i].concept, "non_heme"))
                return true;
    }
    return false;
}

/* The record's ref is made only when the record is kept (an older one is not). */
static void keep_latest(map_profile *p, lab_pick *slot, int64_t ms, const map_lab_def *def, double raw,
                        const char *unit, const fhir_node *res, const char *date)
{
    if (slot->have && slot->ms > ms)
        return;
    const char *ref = res_ref(p, res);
    slot->have = true;
    slot->ms = ms;
    slot->def = def;
    slot->raw = raw;
    slot->unit = unit;
    slot->ref = ref;
    slot->date = date;
}

static void add_observation(builder *b, const fhir_node *res)
{
    map_profile *p = b->p;
    static const char *const bad[] = {"entered-in-error", "cancelled", NULL};
    if (status_is(res, "status", bad))
        return;
    const fhir_node *cc = fhir_node_get(res, "code");
    const map_lab_def *def = NULL;
    bool disease_status = false;
    for (const fhir_node *c = fhir_node_first(fhir_node_get(cc, "coding")); c && !def; c = c->next) {
        const char *sys = fhir_node_str(fhir_node_get(c, "system"));
        const char *code = fhir_node_str(fhir_node_get(c, "code"));
        if (!sys || !code)
            continue;
        if (!strcmp(sys, MAP_SYS_LOINC) && !strcmp(code, "97509-4")) {
            disease_status = true;
            break;
        }
        def = map_lab_lookup(b->t, sys, code);
    }
    int64_t day = INT64_MIN;
    const char *date = NULL;
    int64_t ms = obs_when(res, &day, &date);
    if (!def && !disease_status) {
        /* a report in words (e.g. a plasma-cell FISH panel): cytogenetic findings */
        const char *v = fhir_node_str(fhir_node_get(res, "valueString"));
        if (!v)
            v = fhir_node_path_str(res, "valueCodeableConcept.text");
        if (v && ms != INT64_MIN && day <= p->as_of)
            scan_findings(b, res_ref(p, res), v);
        return;
    }
    if (ms == INT64_MIN || day > p->as_of)
        return;
    if (disease_status) {
        if (focus_is_non_heme(b, res))
            return;
        const char *st = NULL;
        for (const fhir_node *c = fhir_node_first(fhir_node_path(res, "valueCodeableConcept.coding"));
             c && !st; c = c->next)
            st = map_answer_lookup(b->t, "status", fhir_node_str(fhir_node_get(c, "system")),
                                   fhir_node_str(fhir_node_get(c, "code")));
        if (!st)
            return;
        if (!strcmp(st, "progression") || !strcmp(st, "response")) {
            dated *d = vec_push(!strcmp(st, "progression") ? &b->prog : &b->resp);
            d->day = day;
            d->ref = res_ref(p, res);
            d->what = st;
        }
        return;
    }
    if (day < p->as_of - b->o->lab_lookback_days)
        return;
    double v = NAN;
    const char *unit = NULL;
    bool is_ecog = !strcmp(def->analyte, "ecog"), is_kps = !strcmp(def->analyte, "karnofsky");
    if (is_ecog || is_kps) {
        const char *ans = NULL;
        for (const fhir_node *c = fhir_node_first(fhir_node_path(res, "valueCodeableConcept.coding"));
             c && !ans; c = c->next)
            ans = map_answer_lookup(b->t, is_ecog ? "ecog" : "karnofsky",
                                    fhir_node_str(fhir_node_get(c, "system")),
                                    fhir_node_str(fhir_node_get(c, "code")));
        if (ans) {
            v = strtod(ans, NULL);
            unit = is_ecog ? "{score}" : "%";
        } else if (!obs_value(res, &v, &unit)) {
            warn(p, "%s %s without a usable value", res_ref(p, res), def->analyte);
            return;
        }
        keep_latest(p, is_ecog ? &b->ecog : &b->kps, ms, def, v, unit, res, date);
        return;
    }
    if (!obs_value(res, &v, &unit))
        return;
    lab_pick *slot = NULL;
    for (size_t i = 0; i < b->nlabs; i++)
        if (b->labs[i].def->analyte[0] == def->analyte[0] && !strcmp(b->labs[i].def->analyte, def->analyte))
            slot = &b->labs[i];
    if (!slot) {
        if (b->nlabs >= sizeof b->labs / sizeof b->labs[0])
            return;
        slot = &b->labs[b->nlabs++];
        memset(slot, 0, sizeof *slot);
    }
    keep_latest(p, slot, ms, def, v, unit, res, date);
}

/* Evaluates a picked lab: known value, or unknown with the reason (flagged, never guessed). */
static bool lab_value(builder *b, const lab_pick *l, const char *fact, double *out)
{
    map_profile *p = b->p;
    double v;
    map_lab_status st = map_lab_normalize(b->t, l->def, l->raw, l->unit, &v);
    const char *u = l->unit ? l->unit : "(none)";
    if (st == MAP_LAB_UNIT_UNKNOWN) {
        warn(p, "%s %s %g %s: unit not convertible to %s; value not used", l->ref, fact, l->raw, u,
             l->def->unit);
        set_unknown(p, fact,
                    astr(p, "latest %s %s=%g %s (%.10s) has no convertible unit; not used", l->ref,
                         fact, l->raw, u, l->date));
        return false;
    }
    if (st == MAP_LAB_IMPLAUSIBLE) {
        warn(p, "%s %s %g %s = %g %s implausible (plausible %g..%g); value not used", l->ref, fact,
             l->raw, u, v, l->def->unit, l->def->lo, l->def->hi);
        set_unknown(p, fact,
                    astr(p, "latest %s %s=%g %s (%.10s) is implausible (%g %s outside %g..%g); not used",
                         l->ref, fact, l->raw, u, l->date, v, l->def->unit, l->def->lo, l->def->hi));
        return false;
    }
    *out = v;
    return true;
}

/* ---- facts ----------------------------------------------------------------------------------- */

static void patient_facts(builder *b)
{
    map_profile *p = b->p;
    const fhir_node *pt = b->patient;
    const char *pref = pt ? res_ref(p, pt) : NULL;
    if (!pt) {
        static const char *const all[] = {"age", "sex", "deceased", "postal_code", "latitude",
                                          "longitude", NULL};
        for (const char *const *n = all; *n; n++)
            set_unknown(p, *n, "no Patient resource");
        return;
    }
    const char *bd = fhir_node_str(fhir_node_get(pt, "birthDate"));
    int64_t bday;
    if (bd && fhir_clock_parse_date(bd, &bday) == 0) {
        int y1, y2;
        unsigned m1, d1, m2, d2;
        fhir_clock_civil_from_days(bday, &y1, &m1, &d1);
        fhir_clock_civil_from_days(p->as_of, &y2, &m2, &d2);
        int age = y2 - y1 - ((m2 < m1 || (m2 == m1 && d2 < d1)) ? 1 : 0);
        set_num(p, "age", age, ajoin(p, pref, " birthDate=", bd, AJOIN_END));
    } else {
        set_unknown(p, "age", ajoin(p, pref, " has no birthDate", AJOIN_END));
    }
    const char *g = fhir_node_str(fhir_node_get(pt, "gender"));
    if (g && map_fact_code_valid("sex", g))
        set_str(p, "sex", fhir_arena_strdup(p->a, g), ajoin(p, pref, " gender=", g, AJOIN_END));
    else
        set_unknown(p, "sex", ajoin(p, pref, " has no gender", AJOIN_END));
    const fhir_node *db = fhir_node_get(pt, "deceasedBoolean");
    const char *dd = fhir_node_str(fhir_node_get(pt, "deceasedDateTime"));
    int64_t dday;
    if (db && fhir_node_is(db, FHIR_BOOL))
        set_bool(p, "deceased", db->boolean, ajoin(p, pref, " deceasedBoolean=",
                                                   db->boolean ? "true" : "false", AJOIN_END));
    else if (dd && fhir_clock_parse_date(dd, &dday) == 0)
        set_bool(p, "deceased", dday <= p->as_of, ajoin(p, pref, " deceasedDateTime=", dd, AJOIN_END));
    else
        set_bool(p, "deceased", false, ajoin(p, pref, " has no deceased[x] (alive per record)", AJOIN_END));

    /* residence: home address first, else the first address */
    const fhir_node *addr = NULL;
    for (const fhir_node *a = fhir_node_first(fhir_node_get(pt, "address")); a; a = a->next) {
        if (!addr)
            addr = a;
        const char *use = fhir_node_str(fhir_node_get(a, "use"));
        if (use && !strcmp(use, "home")) {
            addr = a;
            break;
        }
    }
    const char *pc = fhir_node_str(fhir_node_get(addr, "postalCode"));
    char zip[6];
    size_t zn = 0;
    for (const char *s = pc; s && *s && zn < 5; s++) {
        if (isdigit((unsigned char)*s))
            zip[zn++] = *s;
        else
            break;
    }
    zip[zn] = '\0';
    if (zn == 5)
        set_str(p, "postal_code", fhir_arena_strdup(p->a, zip), ajoin(p, pref, " address.postalCode",
                                                                      AJOIN_END));
    else
        set_unknown(p, "postal_code", ajoin(p, pref, " has no 5-digit postalCode", AJOIN_END));
    bool lat_ok = false, lon_ok = false;
    double lat = 0, lon = 0;
    for (const fhir_node *e = fhir_node_first(fhir_node_get(addr, "extension")); e; e = e->next) {
        const char *url = fhir_node_str(fhir_node_get(e, "url"));
        if (!url || !strstr(url, "geolocation"))
            continue;
        for (const fhir_node *s = fhir_node_first(fhir_node_get(e, "extension")); s; s = s->next) {
            const char *u = fhir_node_str(fhir_node_get(s, "url"));
            if (u && !strcmp(u, "latitude"))
                lat_ok = fhir_node_double(fhir_node_get(s, "valueDecimal"), &lat) && lat >= -90 && lat <= 90;
            else if (u && !strcmp(u, "longitude"))
                lon_ok = fhir_node_double(fhir_node_get(s, "valueDecimal"), &lon) && lon >= -180 && lon <= 180;
        }
    }
    if (lat_ok && lon_ok) {
        set_num(p, "latitude", lat, ajoin(p, pref, " address geolocation", AJOIN_END));
        set_num(p, "longitude", lon, ajoin(p, pref, " address geolocation", AJOIN_END));
    } else {
        set_unknown(p, "latitude", ajoin(p, pref, " has no address geolocation", AJOIN_END));
        set_unknown(p, "longitude", ajoin(p, pref, " has no address geolocation", AJOIN_END));
    }
}

/* Possible diseases of codes that leave the lineage, histology or grade open (diagnoses.tsv
 * `unspecified`): `maybe` members of diseases, unless another diagnosis establishes them. */
static void unspecified_diseases(builder *b)
{
    static const struct {
        const char *axis, *settle;
    } axes[] = {
        {"lineage", "lineage (B or T) of the lymphoblastic leukemia: the immunophenotype (flow cytometry) "
                    "report, or a lineage-specific diagnosis code (B-cell ALL: SNOMED 277571004, ICD-O-3 "
                    "9811/3-9819/3 or 9836/3)"},
        {"histology", "histology: the pathology report naming the lymphoma subtype (large B-cell, "
                      "follicular, mantle cell, marginal zone ...)"},
        {"grade", "grade: the pathology report giving the follicular lymphoma grade (3A or 3B)"},
    };
    map_profile *p = b->p;
    map_fact *f = F(p, "diseases");
    const cond *c = b->conds.v;
    const char *axis = NULL;
    for (size_t a = 0; a < sizeof axes / sizeof axes[0]; a++)
        for (size_t i = 0; i < b->conds.n; i++) {
            if (!c[i].nunspec || c[i].state > 1 || strcmp(c[i].unspec_axis, axes[a].axis))
                continue;
            for (size_t k = 0; k < c[i].nunspec; k++) {
                bool have = false;
                for (size_t j = 0; j < f->nset; j++)
                    have |= !strcmp(f->set[j], c[i].unspec[k]);
                for (size_t j = 0; j < f->nmaybe; j++)
                    have |= !strcmp(f->maybe[j], c[i].unspec[k]);
                if (!have && f->nmaybe < MAP_FACT_SET_MAX)
                    f->maybe[f->nmaybe++] = c[i].unspec[k];
                if (!have && !axis) {
                    axis = axes[a].axis;
                    f->missing_as = axes[a].axis;
                    f->settle = axes[a].settle;
                }
            }
        }
}

static const finding *find_finding(builder *b, const char *what)
{
    const finding *f = b->findings.v;
    for (size_t i = 0; i < b->findings.n; i++)
        if (!strcmp(f[i].what, what))
            return &f[i];
    return NULL;
}

/* A transplant-eligibility fact (hct_ineligible, hct_refusal): true from an HSCT procedure not
 * done with such a reason (hct_not_done), else from a Condition naming it (diagnoses.tsv
 * markers), else unknown. */
static bool documented(builder *b, const char *name)
{
    map_profile *p = b->p;
    const finding *f = find_finding(b, name);
    const cond *c = find_cond(b, name, 1, NULL);
    if (f)
        set_bool(p, name, true, ajoin(p, f->ref, " transplant not done: \"", f->text, "\"", AJOIN_END));
    else if (c)
        set_bool(p, name, true, ajoin(p, c->ref, " ", c->code, " (", c->row, ")", AJOIN_END));
    return f || c;
}

/* hct_ineligible / hct_refusal. A refusal never makes ineligibility. */
static void transplant_eligibility(builder *b)
{
    map_profile *p = b->p;
    if (!documented(b, "hct_ineligible")) {
        set_unknown(p, "hct_ineligible", "transplant ineligibility not documented");
        F(p, "hct_ineligible")->settle = "the treating physician's note on transplant eligibility (not eligible for HSCT "
                                         "due to comorbidities or age)";
    }
    if (!documented(b, "hct_refusal"))
        set_unknown(p, "hct_refusal", "no refusal of transplant documented");
}

/* mm_high_risk by IMS/IMWG 2025 from cytogenetic findings in words; never false from silence. */
static void myeloma_risk(builder *b)
{
    map_profile *p = b->p;
    static const char *const alone[] = {"del17p", "tp53", "biallelic_del1p", "high_risk", NULL};
    for (const char *const *w = alone; *w; w++) {
        const finding *f = find_finding(b, *w);
        if (f) {
            set_bool(p, "mm_high_risk", true, ajoin(p, f->ref, " \"", f->text, "\"", AJOIN_END));
            return;
        }
    }
    static const char *const trans[] = {"t414", "t1416", "t1420", NULL};
    const finding *t = NULL, *g = find_finding(b, "gain1q");
    if (!g)
        g = find_finding(b, "del1p");
    for (const char *const *w = trans; *w && !t; w++)
        t = find_finding(b, *w);
    if (t && g) {
        set_bool(p, "mm_high_risk", true, ajoin(p, t->ref, " \"", t->text, "\"; ", g->ref, " \"", g->text,
                                                "\"", AJOIN_END));
        return;
    }
    set_unknown(p, "mm_high_risk", t ? ajoin(p, t->ref, " \"", t->text,
                                             "\" without a 1q gain or del(1p32) result", AJOIN_END)
                                     : "no high-risk cytogenetics documented (absence is not proof)");
    F(p, "mm_high_risk")->settle = "the FISH / cytogenetics report (del(17p), TP53, t(4;14), t(14;16), t(14;20), "
                                   "1q gain, del(1p32))";
}

static void diagnosis_facts(builder *b)
{
    map_profile *p = b->p;
    const cond *c = b->conds.v;
    F(p, "diseases")->known = true;
    fhir_buf ev;
    fhir_buf_init(&ev, 4096);
    const cond *primary = NULL;
    int primary_rank = 1000;
    for (size_t i = 0; i < b->conds.n; i++) {
        if (!concept_is_disease(c[i].concept) || c[i].state > 1)
            continue;
        set_add(p, "diseases", c[i].concept);
        char od[16] = "?";
        if (c[i].onset != INT64_MIN)
            fmt_day(c[i].onset, od, sizeof od);
        fhir_buf_printf(&ev, "%s%s code=%s -> %s (%s) onset=%s%s", ev.len ? "; " : "", c[i].ref,
                        c[i].code, c[i].concept, c[i].row, od, c[i].state == 1 ? " remission" : "");
        if (!concept_is_heme(c[i].concept))
            continue;
        if (c[i].nunspec) {
            fhir_buf_printf(&ev, " (%s not specified: ", c[i].unspec_axis);
            for (size_t k = 0; k < c[i].nunspec; k++)
                put2(&ev, k ? "," : "", c[i].unspec[k]);
            fhir_buf_puts(&ev, " possible)");
        }
        /* specific before other_heme / lineage- or histology-unspecified diagnoses */
        int rank = strcmp(c[i].concept, "other_heme") && strcmp(c[i].concept, "all_nos") && !c[i].nunspec ? 0 : 1;
        if (!primary || rank < primary_rank || (rank == primary_rank && c[i].onset > primary->onset)) {
            primary = &c[i];
            primary_rank = rank;
        }
    }
    F(p, "diseases")->evidence = ev.len ? ajoin(p, fhir_buf_cstr(&ev), AJOIN_END)
                                        : "no active cancer diagnosis among the Conditions";
    fhir_buf_free(&ev);
    unspecified_diseases(b);

    if (!primary) {
        set_unknown(p, "primary_disease", "no active heme diagnosis");
        set_unknown(p, "histology_transformed", "no active heme diagnosis");
        set_unknown(p, "pcnsl", "no active heme diagnosis");
    } else {
        const char *pc = primary->concept;
        const char *pev = ajoin(p, primary->ref, " code=", primary->code, " -> ", pc, " (", primary->row, ")",
                                AJOIN_END);
        /* transformation: large-cell lymphoma after an indolent lymphoma (any status) */
        const cond *indolent = NULL;
        if (!strcmp(pc, "dlbcl_nos") || !strcmp(pc, "hgbcl")) {
            static const char *const ind[] = {"fl", "mzl", "cll_sll", NULL};
            for (const char *const *k = ind; *k && !indolent; k++) {
                const cond *x = find_cond(b, *k, 2, primary);
                if (x && (x->onset == INT64_MIN || primary->onset == INT64_MIN || x->onset <= primary->onset))
                    indolent = x;
            }
        }
        if (indolent && !strcmp(indolent->concept, "fl") && !strcmp(pc, "dlbcl_nos")) {
            set_remove(p, "diseases", "dlbcl_nos");
            set_add(p, "diseases", "tfl");
            set_str(p, "primary_disease", "tfl",
                    ajoin(p, pev, "; after ", indolent->ref, " code=", indolent->code,
                          " -> fl (transformed FL)", AJOIN_END));
        } else {
            set_str(p, "primary_disease", pc, pev);
        }
        const char *prim = F(p, "primary_disease")->str;
        if (!strcmp(prim, "tfl"))
            set_bool(p, "histology_transformed", true, F(p, "primary_disease")->evidence);
        else if (indolent)
            set_bool(p, "histology_transformed", true,
                     ajoin(p, pev, " after ", indolent->ref, " code=", indolent->code, " -> ",
                           indolent->concept, AJOIN_END));
        else
            set_bool(p, "histology_transformed", false,
                     ajoin(p, pev, "; no earlier FL/MZL/CLL diagnosis recorded", AJOIN_END));
        const cond *pc_cond = find_cond(b, "pcnsl", 1, NULL);
        if (pc_cond)
            set_bool(p, "pcnsl", true, ajoin(p, pc_cond->ref, " code=", pc_cond->code, " -> pcnsl (",
                                             pc_cond->row, ")", AJOIN_END));
        else
            set_bool(p, "pcnsl", false, ajoin(p, "primary disease ", prim, "; no PCNSL diagnosis",
                                              AJOIN_END));
    }
    const cond *cns = find_cond(b, "cns_secondary", 1, NULL);
    if (cns)
        set_bool(p, "cns_involvement", true, ajoin(p, cns->ref, " code=", cns->code, " (", cns->row, ")",
                                                   AJOIN_END));
    else
        set_unknown(p, "cns_involvement", "no secondary CNS involvement documented (absence is not proof)");
    transplant_eligibility(b);
    myeloma_risk(b);
    const cond *inf = NULL;
    for (size_t i = 0; i < b->conds.n; i++)
        if (!strcmp(c[i].concept, "infection") && c[i].state == 0 &&
            (c[i].onset == INT64_MIN || c[i].onset >= p->as_of - INFECTION_DAYS))
            inf = &c[i];
    if (inf)
        set_bool(p, "active_infection", true, ajoin(p, inf->ref, " ", inf->code, " active (", inf->row, ")",
                                                    AJOIN_END));
    else
        set_unknown(p, "active_infection", "no active infection documented in the last 30 days (absence is not proof)");
}

/* A used lab's evidence, as astr(p, "%s %s=%g %s (%.10s) -> %g %s", ...) writes it, with two
 * printf calls of one number instead of a printf of the whole: most patients have several. */
static const char *lab_evidence(map_profile *p, const lab_pick *l, const char *an, double v)
{
    fhir_buf *f = &p->fmt;
    fhir_buf_reset(f);
    if (l->ref && l->date && l->def->unit) {
        put2(f, l->ref, " ");
        put2(f, an, "=");
        put_g(f, l->raw);
        put2(f, " ", l->unit ? l->unit : "");
        fhir_buf_puts(f, " (");
        fhir_buf_append(f, l->date, strnlen(l->date, 10));
        fhir_buf_puts(f, ") -> ");
        put_g(f, v);
        put2(f, " ", l->def->unit);
        if (!f->overflow) {
            const char *r = fhir_arena_strndup(p->a, f->data ? f->data : "", f->len);
            return r ? r : "(evidence dropped: profile memory cap)";
        }
    }
    return astr(p, "%s %s=%g %s (%.10s) -> %g %s", l->ref, an, l->raw, l->unit ? l->unit : "", l->date, v,
                l->def->unit);
}

static void lab_facts(builder *b)
{
    map_profile *p = b->p;
#define LAB_FACTS(X)                                                                                \
    X("anc") X("alc") X("platelets") X("hemoglobin") X("creatinine") X("crcl") X("egfr") X("bilirubin") \
    X("ast") X("alt") X("lvef") X("spo2")
#define LAB_NAME(n) n,
#define LAB_NONE_90(n) "no " n " result in the 90 days before the evaluation date",
    static const char *const labs[] = {LAB_FACTS(LAB_NAME) NULL};
    /* the same sentences for the default lookback, written once (not per patient) */
    static const char *const none_90[] = {LAB_FACTS(LAB_NONE_90) NULL};
#undef LAB_NONE_90
#undef LAB_NAME
#undef LAB_FACTS
    double weight = NAN;
    const lab_pick *wpick = NULL;
    char days[24];
    snprintf(days, sizeof days, "%d", b->o->lab_lookback_days);
    for (size_t i = 0; labs[i]; i++)
        set_unknown(p, labs[i],
                    b->o->lab_lookback_days == 90
                        ? none_90[i]
                        : ajoin(p, "no ", labs[i], " result in the ", days, " days before the evaluation date",
                                AJOIN_END));
    for (size_t i = 0; i < b->nlabs; i++) {
        const lab_pick *l = &b->labs[i];
        const char *an = l->def->analyte;
        double v;
        if (!strcmp(an, "weight") || !strcmp(an, "height") || !strcmp(an, "wbc")) {
            if (!strcmp(an, "weight") && map_lab_normalize(b->t, l->def, l->raw, l->unit, &v) == MAP_LAB_OK) {
                weight = v;
                wpick = l;
            }
            continue;
        }
        if (!map_fact_lookup(an, NULL))
            continue;
        if (lab_value(b, l, an, &v))
            set_num(p, an, v, lab_evidence(p, l, an, v));
    }
    /* Cockcroft-Gault when no CrCl result */
    const map_fact *crcl = F(p, "crcl"), *cr = F(p, "creatinine"), *age = F(p, "age"), *sex = F(p, "sex");
    if (!crcl->known) {
        if (cr->known && age->known && sex->known && wpick && cr->num > 0 &&
            (!strcmp(sex->str, "male") || !strcmp(sex->str, "female"))) {
            double cg = (140.0 - age->num) * weight / (72.0 * cr->num);
            if (!strcmp(sex->str, "female"))
                cg *= 0.85;
            if (cg < 0)
                cg = 0;
            set_num(p, "crcl", round_to(cg, 0.1),
                    astr(p, "Cockcroft-Gault: age %g, %s, weight %g kg (%s), creatinine %g mg/dL", age->num,
                         sex->str, weight, wpick->ref, cr->num));
        } else if (cr->known) {
            set_unknown(p, "crcl", "no CrCl result; Cockcroft-Gault needs age, male/female sex, weight in lookback and creatinine");
            F(p, "crcl")->settle = "a body weight in the last 90 days (Cockcroft-Gault) or a measured creatinine clearance";
        }
    }
    /* CKD-EPI 2021 (race-free) eGFR when none is reported: needs creatinine, age >= 18 and
     * male/female sex (Inker et al. 2021: 142 x min(Scr/k,1)^a x max(Scr/k,1)^-1.200 x
     * 0.9938^age [x 1.012 female], k 0.7 / 0.9, a -0.241 / -0.302 female / male) */
    const map_fact *eg = F(p, "egfr");
    if (!eg->known && cr->known && cr->num > 0 && age->known && age->num >= 18 && sex->known &&
        (!strcmp(sex->str, "male") || !strcmp(sex->str, "female"))) {
        bool fem = !strcmp(sex->str, "female");
        double k = fem ? 0.7 : 0.9, a = fem ? -0.241 : -0.302, r = cr->num / k;
        double e = 142.0 * pow(r < 1 ? r : 1, a) * pow(r > 1 ? r : 1, -1.200) * pow(0.9938, age->num);
        if (fem)
            e *= 1.012;
        set_num(p, "egfr", round_to(e, 0.1),
                astr(p, "CKD-EPI 2021: creatinine %g mg/dL (%s), age %g, %s", cr->num, cr->evidence, age->num, sex->str));
    }
    /* renal function for review flags: creatinine clearance when known, else eGFR (say which) */
    if (crcl->known)
        set_num(p, "renal_function", crcl->num, astr(p, "creatinine clearance %g mL/min: %s", crcl->num, crcl->evidence));
    else if (eg->known)
        set_num(p, "renal_function", eg->num,
                astr(p, "eGFR %g mL/min/1.73 m2 (no creatinine clearance: %s): %s", eg->num,
                     wpick ? "no Cockcroft-Gault" : "no body weight for Cockcroft-Gault", eg->evidence));
    else {
        set_unknown(p, "renal_function", "no creatinine, creatinine clearance or eGFR result in the lookback");
        F(p, "renal_function")->settle = "a serum creatinine (with a body weight for Cockcroft-Gault)";
    }
    /* ECOG, Karnofsky mapped when ECOG absent (codes.md §2.3 crosswalk) */
    double v;
    if (b->ecog.have) {
        map_lab_status st = map_lab_normalize(b->t, b->ecog.def, b->ecog.raw, b->ecog.unit, &v);
        if (st == MAP_LAB_OK && v == floor(v))
            set_num(p, "ecog", v, astr(p, "%s ECOG=%g (%.10s)", b->ecog.ref, v, b->ecog.date));
        else {
            warn(p, "%s ECOG value %g not in 0..5; not used", b->ecog.ref, b->ecog.raw);
            set_unknown(p, "ecog", astr(p, "latest %s ECOG=%g is not a 0..5 score", b->ecog.ref, b->ecog.raw));
        }
    } else if (b->kps.have) {
        map_lab_status st = map_lab_normalize(b->t, b->kps.def, b->kps.raw, b->kps.unit, &v);
        if (st == MAP_LAB_OK) {
            int e = v >= 90 ? 0 : v >= 70 ? 1 : v >= 50 ? 2 : v >= 30 ? 3 : v >= 10 ? 4 : 5;
            set_num(p, "ecog", e, astr(p, "%s Karnofsky=%g (%.10s) mapped to ECOG %d (codes.md §2.3 crosswalk)",
                                       b->kps.ref, v, b->kps.date, e));
        } else {
            warn(p, "%s Karnofsky value %g not in 0..100; not used", b->kps.ref, b->kps.raw);
            set_unknown(p, "ecog", astr(p, "latest %s Karnofsky=%g is not a 0..100 score", b->kps.ref, b->kps.raw));
        }
    } else {
        set_unknown(p, "ecog", astr(p, "no ECOG or Karnofsky in the %d days before the evaluation date",
                                    b->o->lab_lookback_days));
    }
}

static void payer_fact(builder *b)
{
    map_profile *p = b->p;
    const fhir_node *cov = b->coverage;
    if (!cov) {
        set_unknown(p, "payer", "no active Coverage");
        return;
    }
    const fhir_node *payor = fhir_node_first(fhir_node_get(cov, "payor"));
    const char *name = fhir_node_str(fhir_node_get(payor, "display"));
    if (!name)
        name = fhir_node_path_str(payor, "identifier.value");
    if (!name)
        name = fhir_node_str(fhir_node_get(payor, "reference"));
    if (!name)
        name = fhir_node_path_str(cov, "type.text");
    if (!name)
        name = fhir_node_path_str(cov, "type.coding.display");
    if (!name) {
        set_unknown(p, "payer", ajoin(p, res_ref(p, cov), " names no payor", AJOIN_END));
        return;
    }
    set_str(p, "payer", fhir_arena_strdup(p->a, name), ajoin(p, res_ref(p, cov), " payor", AJOIN_END));
}

static void add_coverage(builder *b, const fhir_node *res)
{
    static const char *const bad[] = {"cancelled", "entered-in-error", "draft", NULL};
    if (status_is(res, "status", bad))
        return;
    int64_t s = INT64_MIN, e = INT64_MIN;
    date_of(res, "period.start", &s);
    date_of(res, "period.end", &e);
    if ((s != INT64_MIN && s > b->p->as_of) || (e != INT64_MIN && e < b->p->as_of))
        return;
    if (!b->coverage || s > b->coverage_start) {
        b->coverage = res;
        b->coverage_start = s;
    }
}

/* ---- build --------------------------------------------------------------------------------------- */

static const char *subject_patient_id(const fhir_node *res)
{
    static const char *const paths[] = {"subject.reference", "patient.reference",
                                        "beneficiary.reference", NULL};
    for (const char *const *pp = paths; *pp; pp++) {
        const char *ref = fhir_node_path_str(res, *pp);
        const char *id = ref_tail(ref, NULL, NULL);
        if (id)
            return id;
    }
    return NULL;
}

/* The resource types map_profile_build() tells apart (res_kind). */
enum { RK_NONE, RK_OTHER, RK_PATIENT, RK_CONDITION, RK_MEDICATION, RK_OBSERVATION, RK_MED_RECORD,
       RK_PROCEDURE, RK_COVERAGE };

/* A resource type's kind: by its first letter, then one or two strcmp (a chain of strcmp per
 * resource and pass was most of the dispatch). */
static int res_kind(const char *type)
{
    switch (type[0]) {
    case 'P':
        return !strcmp(type, "Patient") ? RK_PATIENT : !strcmp(type, "Procedure") ? RK_PROCEDURE : RK_OTHER;
    case 'C':
        return !strcmp(type, "Condition") ? RK_CONDITION : !strcmp(type, "Coverage") ? RK_COVERAGE : RK_OTHER;
    case 'O':
        return !strcmp(type, "Observation") ? RK_OBSERVATION : RK_OTHER;
    case 'M':
        if (strncmp(type, "Medication", 10))
            return RK_OTHER;
        if (!type[10])
            return RK_MEDICATION;
        return !strcmp(type + 10, "Request") || !strcmp(type + 10, "Administration") ||
                       !strcmp(type + 10, "Statement")
                   ? RK_MED_RECORD
                   : RK_OTHER;
    }
    return RK_OTHER;
}

/* What map_profile_build() reads; keep in step with its two passes below. */
static const char *const READ_TYPES[] = {
    "Patient", "Condition", "Observation", "Medication", "MedicationRequest",
    "MedicationAdministration", "MedicationStatement", "Procedure", "Coverage", NULL,
};

bool map_profile_reads(const char *type, size_t len)
{
    if (!type)
        return false;
    for (const char *const *t = READ_TYPES; *t; t++)
        if (strlen(*t) == len && !memcmp(*t, type, len))
            return true;
    return false;
}

/* A zeroed profile, except the member arrays of its facts (set, maybe: 0.5 KB a fact, read only
 * below nset / nmaybe): zeroing all 26 KB with calloc was a tenth of building a profile. */
static map_profile *profile_alloc(void)
{
    map_profile *p = malloc(sizeof *p);
    if (!p)
        abort();
    memset(p, 0, offsetof(map_profile, facts));
    for (size_t i = 0; i < MAP_FACT_COUNT; i++) {
        char *f = (char *)&p->facts[i];
        memset(f, 0, offsetof(map_fact, set));
        memset(f + offsetof(map_fact, nset), 0, offsetof(map_fact, maybe) - offsetof(map_fact, nset));
        memset(f + offsetof(map_fact, nmaybe), 0, sizeof(map_fact) - offsetof(map_fact, nmaybe));
    }
    size_t tail = offsetof(map_profile, facts) + sizeof p->facts;
    memset((char *)p + tail, 0, sizeof *p - tail);
    return p;
}

map_profile *map_profile_build(const map_tables *t, const fhir_node *const *res, size_t n,
                               const map_profile_opts *opts, fhir_error *err)
{
    map_profile_opts defo;
    if (!opts) {
        map_profile_opts_default(&defo);
        opts = &defo;
    }
    if (!t) {
        fhir_error_set(err, "profile: no terminology tables");
        return NULL;
    }
    map_profile *p = profile_alloc();
    p->a = fhir_arena_new(PROFILE_ARENA_CAP);
    if (!p->a)
        abort();
    fhir_buf_init(&p->fmt, ASTR_MAX);
    p->as_of = opts->as_of_days;
    for (size_t i = 0; i < MAP_FACT_COUNT; i++) {
        map_fact_name_at(i, &p->facts[i].type);
        p->facts[i].evidence = "not evaluated";
    }
    builder b = {.p = p, .t = t, .o = opts, .coverage_start = INT64_MIN};
    b.meds.sz = sizeof(const fhir_node *);
    b.conds.sz = sizeof(cond);
    b.ex.sz = sizeof(map_lot_exposure);
    b.ev.sz = sizeof(map_lot_event);
    b.prog.sz = b.resp.sz = sizeof(dated);
    b.findings.sz = sizeof(finding);

    /* pass 1: Patient, Medications, Conditions (needed to resolve the others) */
    const char *pid = NULL;
    unsigned char *kind = malloc(n ? n : 1); /* each resource's res_kind, for pass 2 */
    if (!kind)
        abort();
    for (size_t i = 0; i < n; i++) {
        const char *type = fhir_node_resource_type(res[i]);
        kind[i] = (unsigned char)(type ? res_kind(type) : RK_NONE);
        if (kind[i] == RK_NONE)
            continue;
        if (kind[i] == RK_PATIENT) {
            if (!b.patient)
                b.patient = res[i];
        } else if (kind[i] == RK_MEDICATION) {
            *(const fhir_node **)vec_push(&b.meds) = res[i];
        } else if (kind[i] == RK_CONDITION) {
            add_condition(&b, res[i]);
        }
        if (!pid)
            pid = subject_patient_id(res[i]);
    }
    if (b.patient && fhir_node_resource_id(b.patient))
        pid = fhir_node_resource_id(b.patient);
    if (!pid) {
        fhir_error_set(err, "profile: no Patient resource and no subject reference among %zu resources", n);
        map_profile_free(p);
        free(kind);
        free(b.meds.v);
        free(b.conds.v);
        free(b.findings.v);
        return NULL;
    }
    p->patient_id = fhir_arena_strdup(p->a, pid);
    /* pass 2 */
    for (size_t i = 0; i < n; i++) {
        if (kind[i] == RK_OBSERVATION)
            add_observation(&b, res[i]);
        else if (kind[i] == RK_MED_RECORD)
            add_med(&b, res[i], fhir_node_resource_type(res[i]));
        else if (kind[i] == RK_PROCEDURE)
            add_procedure(&b, res[i]);
        else if (kind[i] == RK_COVERAGE)
            add_coverage(&b, res[i]);
    }
    free(kind);
    patient_facts(&b);
    diagnosis_facts(&b);
    map_therapy_facts(&b);
    lab_facts(&b);
    payer_fact(&b);
    free(b.meds.v);
    free(b.conds.v);
    free(b.ex.v);
    free(b.ev.v);
    free(b.prog.v);
    free(b.resp.v);
    free(b.findings.v);
    return p;
}

/* ---- output ---------------------------------------------------------------------------------------- */

bool map_profile_last_event_day(const map_profile *p, map_event_kind k, char *out, size_t n)
{
    out[0] = '\0';
    bool any = false;
    for (size_t i = 0; i < p->nevents; i++) {
        if (p->events[i].kind != k)
            continue;
        char d[16];
        fmt_day(p->events[i].day, d, sizeof d);
        if (!any || strcmp(d, out) > 0)
            snprintf(out, n, "%s", d);
        any = true;
    }
    return any;
}

static void put_num(fhir_buf *o, double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        fhir_buf_printf(o, "%.0f", v);
    else
        fhir_buf_printf(o, "%.10g", v);
}

static void put_str(fhir_buf *o, const char *s)
{
    fhir_json_write_string(o, s ? s : "", s ? strlen(s) : 0);
}

static void put_value(fhir_buf *o, const map_fact *f)
{
    switch (f->type) {
    case MAP_FACT_NUMBER:
        put_num(o, f->num);
        break;
    case MAP_FACT_BOOL:
        fhir_buf_puts(o, f->b ? "true" : "false");
        break;
    case MAP_FACT_CODE:
    case MAP_FACT_STRING:
        put_str(o, f->str);
        break;
    case MAP_FACT_SET:
        fhir_buf_putc(o, '[');
        for (size_t i = 0; i < f->nset; i++) {
            if (i)
                fhir_buf_putc(o, ',');
            put_str(o, f->set[i]);
        }
        fhir_buf_putc(o, ']');
        break;
    }
}

/* ",<sp>\"key\":<sp>" (sp: "" or " ") */
static void put_key(fhir_buf *o, const char *key, const char *sp)
{
    fhir_buf_putc(o, ',');
    fhir_buf_puts(o, sp);
    fhir_buf_putc(o, '"');
    fhir_buf_puts(o, key);
    fhir_buf_puts(o, "\":");
    fhir_buf_puts(o, sp);
}

int map_profile_write_json(const map_profile *p, fhir_buf *o, int pretty)
{
    const char *nl = pretty ? "\n" : "";
    const char *i1 = pretty ? "  " : "", *i2 = pretty ? "    " : "";
    const char *sp = pretty ? " " : "";
    char day[16];
    fmt_day(p->as_of, day, sizeof day);
    fhir_buf_printf(o, "{%s%s\"patient\":%s", nl, i1, sp);
    put_str(o, p->patient_id);
    fhir_buf_printf(o, ",%s%s\"as_of\":%s\"%s\",%s%s\"facts\":%s{", nl, i1, sp, day, nl, i1, sp);
    /* the facts are most of the text: appended piece by piece, not through printf (a hot spot
     * of the screening job: ~160 formatted writes per patient) */
    for (size_t i = 0; i < MAP_FACT_COUNT; i++) {
        const map_fact *f = &p->facts[i];
        fhir_buf_puts(o, i ? "," : "");
        fhir_buf_puts(o, nl);
        fhir_buf_puts(o, i2);
        fhir_buf_putc(o, '"');
        fhir_buf_puts(o, map_fact_name_at(i, NULL));
        fhir_buf_puts(o, "\":");
        fhir_buf_puts(o, sp);
        fhir_buf_puts(o, f->known ? "{\"known\":true" : "{\"known\":false");
        if (f->known) {
            put_key(o, "value", sp);
            put_value(o, f);
        }
        if (f->known && f->bound) {
            put_key(o, "bound", sp);
            fhir_buf_puts(o, f->bound > 0 ? "\"at_least\"" : "\"at_most\"");
        }
        if (f->open) {
            put_key(o, "open", sp);
            fhir_buf_puts(o, "true");
        }
        if (f->nmaybe) {
            put_key(o, "maybe", sp);
            fhir_buf_putc(o, '[');
            for (size_t k = 0; k < f->nmaybe; k++) {
                if (k)
                    fhir_buf_putc(o, ',');
                put_str(o, f->maybe[k]);
            }
            fhir_buf_putc(o, ']');
        }
        if (f->missing_as) {
            put_key(o, "missing_as", sp);
            put_str(o, f->missing_as);
        }
        put_key(o, "evidence", sp);
        put_str(o, f->evidence);
        if (f->settle) {
            put_key(o, "settle", sp);
            put_str(o, f->settle);
        }
        fhir_buf_putc(o, '}');
    }
    fhir_buf_printf(o, "%s%s},%s%s\"lines\":%s[", nl, i1, nl, i1, sp);
    for (size_t k = 0; k < p->nlines; k++) {
        const map_line *l = &p->lines[k];
        char s1[16], s2[16];
        fmt_day(l->start_days, s1, sizeof s1);
        fmt_day(l->end_days, s2, sizeof s2);
        fhir_buf_printf(o, "%s%s%s{\"number\":%d,%s\"start\":\"%s\",%s\"end\":\"%s\",%s\"drugs\":[",
                        k ? "," : "", nl, i2, l->number, sp, s1, sp, s2, sp);
        for (size_t i = 0; i < l->ndrugs; i++) {
            if (i)
                fhir_buf_putc(o, ',');
            put_str(o, l->drugs[i]);
        }
        fhir_buf_printf(o, "],%s\"classes\":[", sp);
        bool first = true;
        for (int ci = 0; ci < MAP_CLASS_COUNT; ci++)
            if (l->classes & (1u << ci)) {
                fhir_buf_printf(o, "%s\"%s\"", first ? "" : ",", map_class_key((map_class)ci));
                first = false;
            }
        fhir_buf_printf(o, "],%s\"maintenance\":%s,%s\"auto_hct\":%s,%s\"allo_hct\":%s,%s\"car_t\":%s,%s"
                           "\"end_reason\":\"%s\",%s",
                        sp, l->maintenance ? "true" : "false", sp, l->has_auto_hct ? "true" : "false", sp,
                        l->has_allo_hct ? "true" : "false", sp, l->is_car_t ? "true" : "false", sp,
                        l->end_reason ? l->end_reason : "", sp);
        if (l->unknown_agents)
            fhir_buf_printf(o, "\"unknown_agents\":%strue,%s", sp, sp);
        if (l->end_unknown)
            fhir_buf_printf(o, "\"end_unknown\":%strue,%s", sp, sp);
        fhir_buf_puts(o, "\"evidence\":");
        put_str(o, l->evidence);
        fhir_buf_putc(o, '}');
    }
    fhir_buf_printf(o, "%s%s],%s%s\"events\":%s[", p->nlines ? nl : "", p->nlines ? i1 : "", nl, i1, sp);
    for (size_t k = 0; k < p->nevents; k++) {
        const map_event *e = &p->events[k];
        char d[16];
        fmt_day(e->day, d, sizeof d);
        fhir_buf_printf(o, "%s%s%s{\"date\":\"%s\",%s\"kind\":", k ? "," : "", nl, i2, d, sp);
        put_str(o, map_event_kind_text(e->kind));
        fhir_buf_printf(o, ",%s\"evidence\":", sp);
        put_str(o, e->ref ? e->ref : "");
        fhir_buf_putc(o, '}');
    }
    fhir_buf_printf(o, "%s%s],%s%s\"warnings\":%s[", p->nevents ? nl : "", p->nevents ? i1 : "", nl, i1, sp);
    for (size_t i = 0; i < p->nwarnings; i++) {
        fhir_buf_printf(o, "%s%s%s", i ? "," : "", nl, i2);
        put_str(o, p->warnings[i]);
    }
    fhir_buf_printf(o, "%s%s]%s}%s", p->nwarnings ? nl : "", p->nwarnings ? i1 : "", nl,
                    pretty ? "\n" : "");
    return o->overflow ? -1 : 0;
}

int map_profile_write_text(const map_profile *p, fhir_buf *o)
{
    char day[16];
    fmt_day(p->as_of, day, sizeof day);
    fhir_buf_printf(o, "patient %s (as of %s)\n", p->patient_id, day);
    for (size_t i = 0; i < MAP_FACT_COUNT; i++) {
        const map_fact *f = &p->facts[i];
        fhir_buf_printf(o, "  %-24s ", map_fact_name_at(i, NULL));
        if (!f->known) {
            fhir_buf_puts(o, "unknown");
        } else if (f->type == MAP_FACT_SET) {
            if (!f->nset)
                fhir_buf_puts(o, "(none)");
            for (size_t k = 0; k < f->nset; k++)
                put2(o, k ? "," : "", f->set[k]);
            if (f->open)
                fhir_buf_puts(o, " (+ unknown)");
            for (size_t k = 0; k < f->nmaybe; k++)
                put2(o, k ? "," : " (possibly ", f->maybe[k]);
            if (f->nmaybe)
                fhir_buf_putc(o, ')');
        } else if (f->type == MAP_FACT_NUMBER) {
            fhir_buf_printf(o, "%s%g", f->bound > 0 ? ">=" : f->bound < 0 ? "<=" : "", f->num);
        } else if (f->type == MAP_FACT_BOOL) {
            fhir_buf_puts(o, f->b ? "yes" : "no");
        } else {
            fhir_buf_puts(o, f->str ? f->str : "");
        }
        fhir_buf_printf(o, "    <- %s\n", f->evidence ? f->evidence : "");
        if (f->settle)
            fhir_buf_printf(o, "  %-24s settled by: %s\n", "", f->settle);
    }
    for (size_t k = 0; k < p->nlines; k++) {
        const map_line *l = &p->lines[k];
        char s1[16], s2[16];
        fmt_day(l->start_days, s1, sizeof s1);
        fmt_day(l->end_days, s2, sizeof s2);
        fhir_buf_printf(o, "  line %d  %s..%s  ", l->number, s1, s2);
        for (size_t i = 0; i < l->ndrugs; i++)
            put2(o, i ? "+" : "", l->drugs[i]);
        if (l->has_auto_hct)
            fhir_buf_puts(o, l->ndrugs ? " -> auto HCT" : "auto HCT");
        if (l->has_allo_hct)
            fhir_buf_puts(o, l->ndrugs ? " -> allo HCT" : "allo HCT");
        if (l->is_car_t && !l->ndrugs)
            fhir_buf_puts(o, "CAR T");
        if (l->unknown_agents)
            fhir_buf_puts(o, l->ndrugs ? " + agents not recorded" : "agents not recorded");
        fhir_buf_printf(o, "%s%s  end=%s\n", l->maintenance ? "  (maintenance)" : "",
                        l->end_unknown ? "  (end date not recorded)" : "", l->end_reason);
    }
    for (size_t i = 0; i < p->nwarnings; i++)
        fhir_buf_printf(o, "  warning: %s\n", p->warnings[i]);
    return o->overflow ? -1 : 0;
}
