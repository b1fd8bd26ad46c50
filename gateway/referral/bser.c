/* bser — builds the BSeR-shaped transaction Bundle of a referral. */
#include "bser.h"

#include "fhir_ref.h"
#include "packet.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_clock.h"

typedef struct ctx {
    fhir_arena *a;
    const bser_input *in;
    const char *patient_src_ref;   /* "Patient/<ehr id>" */
    const char *patient_urn;
    const fhir_node *med_row;      /* the medication row being copied (NULL: another resource) */
    const char **drug_refs;        /* "Medication/<id>" of each drug copied ... */
    const char **drug_urns;        /* ... and its fullUrl */
    size_t n_drugs;
    fhir_error *err;
    bool oom;
} ctx;

static fhir_node *chk(ctx *c, fhir_node *n)
{
    if (!n)
        c->oom = true;
    return n;
}

/* Deterministic urn:uuid from the placer id and an entry label (UUID v4 layout bits set). */
static const char *entry_urn(ctx *c, const char *label)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    if (!m)
        abort();
    EVP_DigestInit_ex(m, EVP_sha256(), NULL);
    EVP_DigestUpdate(m, c->in->placer_id, strlen(c->in->placer_id) + 1);
    EVP_DigestUpdate(m, label, strlen(label));
    EVP_DigestFinal_ex(m, md, &n);
    EVP_MD_CTX_free(m);
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x40);
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);
    char *s = fhir_arena_sprintf(
        c->a, "urn:uuid:%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
        md[0], md[1], md[2], md[3], md[4], md[5], md[6], md[7], md[8], md[9], md[10], md[11],
        md[12], md[13], md[14], md[15]);
    if (!s)
        c->oom = true;
    return s;
}

/* ---- sanitised copy of EHR resources ------------------------------------------------ */

/* Does ref name target ("Type/id"), relative or in the absolute form ".../Type/id"? */
static bool ref_names(const char *ref, const char *target)
{
    if (!ref || !target)
        return false;
    size_t n = strlen(ref), m = strlen(target);
    if (!strcmp(ref, target))
        return true;
    return n > m && ref[n - m - 1] == '/' && !strcmp(ref + n - m, target);
}

/* The contained Medication a medication row names by "#id" in medicationReference, or NULL. */
static const fhir_node *contained_drug(const fhir_node *row)
{
    const fhir_node *m = fhir_ref_contained(row, fhir_node_path_str(row, "medicationReference.reference"));
    const char *t = fhir_node_resource_type(m);
    return t && !strcmp(t, "Medication") ? m : NULL;
}

static fhir_node *copy(ctx *c, const fhir_node *src, int depth);

/* A reference inside a copied resource: to the Bundle's Patient, to a drug the Bundle carries
 * (a copied Medication, or the contained one of the row being copied), else display-only. */
static fhir_node *copy_reference(ctx *c, const fhir_node *src)
{
    fhir_node *o = chk(c, fhir_node_new(c->a, FHIR_OBJECT));
    if (!o)
        return NULL;
    const char *ref = fhir_node_str(fhir_node_get(src, "reference"));
    const char *display = fhir_node_str(fhir_node_get(src, "display"));
    if (ref_names(ref, c->patient_src_ref)) {
        chk(c, fhir_node_set_str(c->a, o, "reference", c->patient_urn));
        return o;
    }
    const char *to = NULL;
    for (size_t i = 0; i < c->n_drugs && !to; i++)
        if (ref_names(ref, c->drug_refs[i]))
            to = c->drug_urns[i];
    const fhir_node *cd = c->med_row && ref && ref[0] == '#' ? contained_drug(c->med_row) : NULL;
    if (cd && !strcmp(fhir_node_resource_id(cd), ref + 1))
        to = ref;
    if (to) {
        chk(c, fhir_node_set_str(c->a, o, "reference", to));
        if (display && display[0])
            chk(c, fhir_node_set_str(c->a, o, "display", display));
        return o;
    }
    chk(c, fhir_node_set_str(c->a, o, "display", display && display[0] ? display : BSER_NOT_INCLUDED));
    return o;
}

/* Appends v to o under m's key unless it came out empty. */
static void put_member(ctx *c, fhir_node *o, const fhir_node *m, fhir_node *v)
{
    if (v && !(v->kind == FHIR_ARRAY && v->len == 0) && !(v->kind == FHIR_OBJECT && v->len == 0))
        chk(c, fhir_node_append(c->a, o, m->key, m->key_len, v));
}

/* The medication row's contained Medication it names by "#id" (its id kept, meta and narrative
 * not), as the row's "contained", when there is one. */
static void keep_contained_drug(ctx *c, const fhir_node *row, fhir_node *o)
{
    const fhir_node *cd = contained_drug(row);
    if (!cd)
        return;
    fhir_node *arr = chk(c, fhir_node_set_arr(c->a, o, "contained"));
    fhir_node *med = chk(c, fhir_node_new(c->a, FHIR_OBJECT));
    if (!arr || !med)
        return;
    for (const fhir_node *m = fhir_node_first(cd); m; m = m->next)
        if (!fhir_node_key_is(m, "meta") && !fhir_node_key_is(m, "text") && !fhir_node_key_is(m, "contained"))
            put_member(c, med, m, copy(c, m, 3));
    chk(c, fhir_node_append(c->a, arr, NULL, 0, med));
}

static fhir_node *copy(ctx *c, const fhir_node *src, int depth)
{
    if (depth > 64)
        return NULL;
    switch (src->kind) {
    case FHIR_OBJECT: {
        if (fhir_node_is(fhir_node_get(src, "reference"), FHIR_STRING))
            return copy_reference(c, src);
        fhir_node *o = chk(c, fhir_node_new(c->a, FHIR_OBJECT));
        if (!o)
            return NULL;
        for (const fhir_node *m = fhir_node_first(src); m; m = m->next) {
            if (fhir_node_key_is(m, "contained")) {
                if (depth == 0 && src == c->med_row)
                    keep_contained_drug(c, src, o);
                continue;
            }
            if (depth == 0 && (fhir_node_key_is(m, "id") || fhir_node_key_is(m, "meta") ||
                               fhir_node_key_is(m, "text")))
                continue;
            put_member(c, o, m, copy(c, m, depth + 1));
        }
        return o;
    }
    case FHIR_ARRAY: {
        fhir_node *arr = chk(c, fhir_node_new(c->a, FHIR_ARRAY));
        if (!arr)
            return NULL;
        for (const fhir_node *m = fhir_node_first(src); m; m = m->next) {
            fhir_node *v = copy(c, m, depth + 1);
            if (v && !(v->kind == FHIR_OBJECT && v->len == 0))
                chk(c, fhir_node_append(c->a, arr, NULL, 0, v));
        }
        return arr;
    }
    default:
        return chk(c, fhir_node_clone(c->a, src));
    }
}

/* ---- small builders ----------------------------------------------------------------- */

static fhir_node *coding(ctx *c, fhir_node *parent_arr, const char *system, const char *code,
                         const char *display)
{
    fhir_node *cd = chk(c, fhir_node_new(c->a, FHIR_OBJECT));
    if (!cd)
        return NULL;
    fhir_node_set_str(c->a, cd, "system", system);
    fhir_node_set_str(c->a, cd, "code", code);
    if (display)
        fhir_node_set_str(c->a, cd, "display", display);
    chk(c, fhir_node_append(c->a, parent_arr, NULL, 0, cd));
    return cd;
}

static fhir_node *identifier(ctx *c, fhir_node *res, const char *system, const char *value,
                             const char *type_code)
{
    fhir_node *arr = (fhir_node *)fhir_node_get(res, "identifier");
    if (!arr)
        arr = chk(c, fhir_node_set_arr(c->a, res, "identifier"));
    fhir_node *id = chk(c, fhir_node_new(c->a, FHIR_OBJECT));
    if (!arr || !id)
        return NULL;
    if (type_code) {
        fhir_node *t = chk(c, fhir_node_set_obj(c->a, id, "type"));
        coding(c, chk(c, fhir_node_set_arr(c->a, t, "coding")), BSER_V2_0203, type_code,
               !strcmp(type_code, "PLAC") ? "Placer Identifier" : NULL);
    }
    fhir_node_set_str(c->a, id, "system", system);
    fhir_node_set_str(c->a, id, "value", value);
    chk(c, fhir_node_append(c->a, arr, NULL, 0, id));
    return id;
}

static fhir_node *ref(ctx *c, fhir_node *obj, const char *key, const char *target)
{
    fhir_node *r = chk(c, fhir_node_set_obj(c->a, obj, key));
    if (r)
        chk(c, fhir_node_set_str(c->a, r, "reference", target));
    return r;
}

static fhir_node *ref_in(ctx *c, fhir_node *arr, const char *target)
{
    fhir_node *r = chk(c, fhir_node_new(c->a, FHIR_OBJECT));
    if (r) {
        chk(c, fhir_node_set_str(c->a, r, "reference", target));
        chk(c, fhir_node_append(c->a, arr, NULL, 0, r));
    }
    return r;
}

/* Appends {fullUrl, resource, request{method POST, url Type, ifNoneExist}} to entries. */
static void add_entry(ctx *c, fhir_node *entries, const char *urn, fhir_node *res,
                      const char *system, const char *value)
{
    fhir_node *e = chk(c, fhir_node_new(c->a, FHIR_OBJECT));
    if (!e || !res)
        return;
    fhir_node_set_str(c->a, e, "fullUrl", urn);
    fhir_node_set(c->a, e, "resource", res);
    fhir_node *rq = chk(c, fhir_node_set_obj(c->a, e, "request"));
    if (!rq)
        return;
    fhir_node_set_str(c->a, rq, "method", "POST");
    fhir_node_set_str(c->a, rq, "url", fhir_node_resource_type(res));
    char *q = fhir_arena_sprintf(c->a, "identifier=%s|%s", system, value);
    if (!q) {
        c->oom = true;
        return;
    }
    fhir_node_set_str(c->a, rq, "ifNoneExist", q);
    chk(c, fhir_node_append(c->a, entries, NULL, 0, e));
}

/* Resource object with resourceType first. */
static fhir_node *resource(ctx *c, const char *type)
{
    fhir_node *r = chk(c, fhir_node_new(c->a, FHIR_OBJECT));
    if (r)
        fhir_node_set_str(c->a, r, "resourceType", type);
    return r;
}

/* A copied EHR resource with its source identifier added; returns the copy. */
static fhir_node *copy_resource(ctx *c, const fhir_node *src, const char *label,
                                fhir_node *entries, const char **urn_out)
{
    const char *type = fhir_node_resource_type(src);
    const char *id = fhir_node_resource_id(src);
    if (!type || !id) {
        fhir_error_set(c->err, "%s: every copied resource needs resourceType and id", label);
        return NULL;
    }
    fhir_node *r = copy(c, src, 0);
    if (!r)
        return NULL;
    const char *system = fhir_arena_sprintf(c->a, "%s:source", c->in->id_system_base);
    const char *value = fhir_arena_sprintf(c->a, "%s.%s", type, id);
    const char *urn = entry_urn(c, value);
    if (!system || !value || !urn) {
        c->oom = true;
        return NULL;
    }
    identifier(c, r, system, value, NULL);
    add_entry(c, entries, urn, r, system, value);
    if (urn_out)
        *urn_out = urn;
    return r;
}

static char *b64(ctx *c, const char *s)
{
    size_t n = strlen(s);
    char *out = fhir_arena_alloc(c->a, 4 * ((n + 2) / 3) + 1);
    if (!out) {
        c->oom = true;
        return NULL;
    }
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    return out;
}

static void attachment(ctx *c, fhir_node *content_arr, const char *type, const char *title,
                       const char *data)
{
    fhir_node *ct = chk(c, fhir_node_new(c->a, FHIR_OBJECT));
    if (!ct)
        return;
    fhir_node *at = chk(c, fhir_node_set_obj(c->a, ct, "attachment"));
    if (!at)
        return;
    fhir_node_set_str(c->a, at, "contentType", type);
    fhir_node_set_str(c->a, at, "data", b64(c, data));
    fhir_node_set_str(c->a, at, "title", title);
    chk(c, fhir_node_append(c->a, content_arr, NULL, 0, ct));
}

/* ---- the Bundle --------------------------------------------------------------------- */

fhir_node *bser_build(fhir_arena *a, const bser_input *in, fhir_error *err)
{
    ctx C = {.a = a, .in = in, .err = err}, *c = &C;
    fhir_error_clear(err);
    if (!in->placer_id || !in->id_system_base || !in->site_id || !in->center || !in->patient ||
        !in->patient_id) {
        fhir_error_set(err, "referral package needs placer id, identifier base, site, center, "
                            "patient and patient id");
        return NULL;
    }
    const char *pt_type = fhir_node_resource_type(in->patient);
    const char *pt_id = fhir_node_resource_id(in->patient);
    if (!pt_type || strcmp(pt_type, "Patient") || !pt_id) {
        fhir_error_set(err, "referral package: the patient resource must be a Patient with an "
                            "id");
        return NULL;
    }
    const char *urgency = in->urgency ? in->urgency : "routine";
    if (strcmp(urgency, "routine") && strcmp(urgency, "urgent") && strcmp(urgency, "asap") &&
        strcmp(urgency, "stat")) {
        fhir_error_set(err, "urgency \"%s\" is not a FHIR request priority", urgency);
        return NULL;
    }
    c->patient_src_ref = fhir_arena_sprintf(a, "Patient/%s", pt_id);
    c->patient_urn = entry_urn(c, "Patient");
    char authored[40];
    fhir_clock_format_instant(in->authored_ms, authored, sizeof authored);
    const char *base = in->id_system_base;
#define SYS(suffix) fhir_arena_sprintf(a, "%s:" suffix, base)

    fhir_node *bundle = resource(c, "Bundle");
    if (!bundle)
        goto oom;
    fhir_node_set_str(a, bundle, "type", "transaction");
    fhir_node *entries = chk(c, fhir_node_set_arr(a, bundle, "entry"));
    if (!entries)
        goto oom;

    /* referring site (requester) */
    const char *site_urn = entry_urn(c, "Organization/site");
    fhir_node *site = resource(c, "Organization");
    if (!site)
        goto oom;
    identifier(c, site, SYS("site"), in->site_id, NULL);
    fhir_node_set(a, site, "active", fhir_node_new_bool(a, true));
    fhir_node_set_str(a, site, "name", in->site_name ? in->site_name : in->site_id);
    add_entry(c, entries, site_urn, site, SYS("site"), in->site_id);

    /* referring clinician (requester when known) */
    const char *requester_urn = site_urn;
    if (in->referrer_name && *in->referrer_name) {
        requester_urn = entry_urn(c, "PractitionerRole");
        fhir_node *pr = resource(c, "PractitionerRole");
        if (!pr)
            goto oom;
        identifier(c, pr, SYS("referrer"), in->placer_id, NULL);
        fhir_node_set(a, pr, "active", fhir_node_new_bool(a, true));
        fhir_node *who = chk(c, fhir_node_set_obj(a, pr, "practitioner"));
        if (!who)
            goto oom;
        fhir_node_set_str(a, who, "display", in->referrer_name);
        ref(c, pr, "organization", site_urn);
        fhir_node *prc = chk(c, fhir_node_set_arr(a, pr, "code"));
        fhir_node *prcc = chk(c, fhir_node_new(a, FHIR_OBJECT));
        if (!prc || !prcc)
            goto oom;
        fhir_node_set_str(a, prcc, "text", "Referring clinician");
        fhir_node_append(a, prc, NULL, 0, prcc);
        if ((in->referrer_phone && *in->referrer_phone) || (in->referrer_direct && *in->referrer_direct)) {
            fhir_node *tl = chk(c, fhir_node_set_arr(a, pr, "telecom"));
            if (!tl)
                goto oom;
            const char *sys[2] = {"phone", "email"};
            const char *val[2] = {in->referrer_phone, in->referrer_direct};
            for (int k = 0; k < 2; k++) {
                if (!val[k] || !*val[k])
                    continue;
                fhir_node *t = chk(c, fhir_node_new(a, FHIR_OBJECT));
                if (!t)
                    goto oom;
                fhir_node_set_str(a, t, "system", sys[k]);
                fhir_node_set_str(a, t, "value", val[k]);
                fhir_node_set_str(a, t, "use", "work");
                fhir_node_append(a, tl, NULL, 0, t);
            }
        }
        add_entry(c, entries, requester_urn, pr, SYS("referrer"), in->placer_id);
    }

    /* center (performer, owner) */
    const centers_center *ce = in->center;
    const char *center_urn = entry_urn(c, "Organization/center");
    fhir_node *org = resource(c, "Organization");
    if (!org)
        goto oom;
    identifier(c, org, "urn:cartgate:center", ce->id, NULL);
    fhir_node_set(a, org, "active", fhir_node_new_bool(a, true));
    fhir_node_set_str(a, org, "name", ce->name);
    fhir_node *tel = chk(c, fhir_node_set_arr(a, org, "telecom"));
    if (ce->contact_phone) {
        fhir_node *t = chk(c, fhir_node_new(a, FHIR_OBJECT));
        fhir_node_set_str(a, t, "system", "phone");
        fhir_node_set_str(a, t, "value", ce->contact_phone);
        fhir_node_set_str(a, t, "use", "work");
        fhir_node_append(a, tel, NULL, 0, t);
    }
    if (ce->contact_email) {
        fhir_node *t = chk(c, fhir_node_new(a, FHIR_OBJECT));
        fhir_node_set_str(a, t, "system", "email");
        fhir_node_set_str(a, t, "value", ce->contact_email);
        fhir_node_set_str(a, t, "use", "work");
        fhir_node_append(a, tel, NULL, 0, t);
    }
    fhir_node *addrs = chk(c, fhir_node_set_arr(a, org, "address"));
    fhir_node *ad = chk(c, fhir_node_new(a, FHIR_OBJECT));
    if (!addrs || !ad)
        goto oom;
    if (ce->n_address_lines) {
        fhir_node *lines = fhir_node_set_arr(a, ad, "line");
        for (size_t i = 0; i < ce->n_address_lines; i++)
            fhir_node_append(a, lines, NULL, 0, fhir_node_new_str(a, ce->address_lines[i]));
    }
    fhir_node_set_str(a, ad, "city", ce->city);
    fhir_node_set_str(a, ad, "state", ce->state);
    fhir_node_set_str(a, ad, "postalCode", ce->postal_code);
    fhir_node_set_str(a, ad, "country", "US");
    fhir_node_append(a, addrs, NULL, 0, ad);
    add_entry(c, entries, center_urn, org, "urn:cartgate:center", ce->id);

    /* Patient: minimum necessary */
    fhir_node *pt = resource(c, "Patient");
    if (!pt)
        goto oom;
    static const char *const keep[] = {"identifier", "active", "name", "telecom", "gender",
                                       "birthDate", "deceasedBoolean", "deceasedDateTime",
                                       "address", NULL};
    for (size_t k = 0; keep[k]; k++) {
        const fhir_node *v = fhir_node_get(in->patient, keep[k]);
        if (v) {
            fhir_node *cp = copy(c, v, 1);
            if (cp)
                fhir_node_set(a, pt, keep[k], cp);
        }
    }
    identifier(c, pt, SYS("patient"), in->patient_id, NULL);
    add_entry(c, entries, c->patient_urn, pt, SYS("patient"), in->patient_id);

    /* Coverage, Condition, Observations, medication history */
    fhir_node *insurance = chk(c, fhir_node_new(a, FHIR_ARRAY));
    fhir_node *support = chk(c, fhir_node_new(a, FHIR_ARRAY));
    if (!insurance || !support)
        goto oom;
    for (size_t i = 0; i < in->n_coverages; i++) {
        const char *urn;
        if (!copy_resource(c, in->coverages[i], "coverage", entries, &urn))
            goto fail;
        ref_in(c, insurance, urn);
    }
    const char *cond_urn = NULL;
    if (in->condition && !copy_resource(c, in->condition, "condition", entries, &cond_urn))
        goto fail;
    for (size_t i = 0; i < in->n_observations; i++) {
        const char *urn;
        if (!copy_resource(c, in->observations[i], "observation", entries, &urn))
            goto fail;
        ref_in(c, support, urn);
    }
    c->drug_refs = fhir_arena_alloc(a, (in->n_drugs + 1) * sizeof *c->drug_refs);
    c->drug_urns = fhir_arena_alloc(a, (in->n_drugs + 1) * sizeof *c->drug_urns);
    if (!c->drug_refs || !c->drug_urns)
        goto oom;
    for (size_t i = 0; i < in->n_drugs; i++) {
        const char *t = fhir_node_resource_type(in->drugs[i]), *id = fhir_node_resource_id(in->drugs[i]);
        if (!t || strcmp(t, "Medication") || !id) {
            fhir_error_set(err, "drug %zu: a referenced drug must be a Medication with an id", i);
            return NULL;
        }
        const char *dref = fhir_arena_sprintf(a, "Medication/%s", id);
        if (!dref)
            goto oom;
        bool seen = false;
        for (size_t k = 0; k < c->n_drugs && !seen; k++)
            seen = !strcmp(c->drug_refs[k], dref);
        if (seen) /* each once */
            continue;
        const char *urn;
        if (!copy_resource(c, in->drugs[i], "drug", entries, &urn))
            goto fail;
        c->drug_refs[c->n_drugs] = dref;
        c->drug_urns[c->n_drugs++] = urn;
    }
    for (size_t i = 0; i < in->n_medications; i++) {
        const char *urn;
        c->med_row = in->medications[i];
        const fhir_node *cp = copy_resource(c, in->medications[i], "medication", entries, &urn);
        c->med_row = NULL;
        if (!cp)
            goto fail;
        ref_in(c, support, urn);
    }
    for (size_t i = 0; i < in->n_reports; i++) {
        const char *urn;
        if (!copy_resource(c, in->reports[i], "diagnostic report", entries, &urn))
            goto fail;
        ref_in(c, support, urn);
    }

    /* DocumentReference: eligibility summary */
    const char *doc_urn = entry_urn(c, "DocumentReference");
    fhir_node *doc = resource(c, "DocumentReference");
    if (!doc)
        goto oom;
    identifier(c, doc, SYS("eligibility-summary"), in->placer_id, NULL);
    fhir_node_set_str(a, doc, "status", "current");
    fhir_node *dtype = chk(c, fhir_node_set_obj(a, doc, "type"));
    fhir_node_set_str(a, dtype, "text", "CAR T eligibility summary");
    ref(c, doc, "subject", c->patient_urn);
    fhir_node_set_str(a, doc, "date", authored);
    fhir_node *author = chk(c, fhir_node_set_arr(a, doc, "author"));
    ref_in(c, author, site_urn);
    fhir_node_set_str(a, doc, "description",
                      "Eligibility screen by cartgate: readable summary and JSON verdict");
    fhir_node *content = chk(c, fhir_node_set_arr(a, doc, "content"));
    if (!content)
        goto oom;
    attachment(c, content, "text/plain; charset=utf-8", "Eligibility summary",
               in->summary_text ? in->summary_text : "(no summary)");
    attachment(c, content, "application/json", "Eligibility verdict (JSON)",
               in->verdict_json ? in->verdict_json : "{}");
    if (in->packet_html)
        attachment(c, content, "text/html; charset=utf-8", "Referral packet", in->packet_html);
    if (in->packet_json)
        attachment(c, content, PACKET_CONTENT_TYPE, "Referral packet (document)", in->packet_json);
    add_entry(c, entries, doc_urn, doc, SYS("eligibility-summary"), in->placer_id);
    ref_in(c, support, doc_urn);

    /* ServiceRequest */
    const char *sr_urn = entry_urn(c, "ServiceRequest");
    fhir_node *sr = resource(c, "ServiceRequest");
    if (!sr)
        goto oom;
    identifier(c, sr, SYS("referral"), in->placer_id, "PLAC");
    fhir_node_set_str(a, sr, "status", "active");
    fhir_node_set_str(a, sr, "intent", "order");
    fhir_node_set_str(a, sr, "priority", urgency);
    fhir_node *code = chk(c, fhir_node_set_obj(a, sr, "code"));
    coding(c, chk(c, fhir_node_set_arr(a, code, "coding")), "http://snomed.info/sct", "3457005",
           "Patient referral");
    fhir_node_set_str(a, code, "text", "Referral for CAR T-cell therapy evaluation");
    ref(c, sr, "subject", c->patient_urn);
    fhir_node_set_str(a, sr, "authoredOn", authored);
    ref(c, sr, "requester", requester_urn);
    ref_in(c, chk(c, fhir_node_set_arr(a, sr, "performer")), center_urn);
    fhir_node *rc = chk(c, fhir_node_set_arr(a, sr, "reasonCode"));
    fhir_node *rcc = chk(c, fhir_node_new(a, FHIR_OBJECT));
    if (!rc || !rcc)
        goto oom;
    fhir_node_set_str(a, rcc, "text",
                      in->reason_text && in->reason_text[0] ? in->reason_text
                                                            : "CAR T-cell therapy evaluation");
    fhir_node_append(a, rc, NULL, 0, rcc);
    if (cond_urn)
        ref_in(c, chk(c, fhir_node_set_arr(a, sr, "reasonReference")), cond_urn);
    if (insurance->len)
        fhir_node_set(a, sr, "insurance", insurance);
    fhir_node_set(a, sr, "supportingInfo", support);
    add_entry(c, entries, sr_urn, sr, SYS("referral"), in->placer_id);

    /* Task */
    const char *task_urn = entry_urn(c, "Task");
    fhir_node *task = resource(c, "Task");
    if (!task)
        goto oom;
    identifier(c, task, SYS("referral-task"), in->placer_id, "PLAC");
    fhir_node_set_str(a, task, "status", "requested");
    fhir_node *bs = chk(c, fhir_node_set_obj(a, task, "businessStatus"));
    coding(c, chk(c, fhir_node_set_arr(a, bs, "coding")), BSER_BUSINESS_STATUS_SYSTEM, "2.0",
           "Service Request Created");
    fhir_node_set_str(a, task, "intent", "order");
    fhir_node_set_str(a, task, "priority", urgency);
    fhir_node *tc = chk(c, fhir_node_set_obj(a, task, "code"));
    coding(c, chk(c, fhir_node_set_arr(a, tc, "coding")), BSER_TASK_CODE_SYSTEM, "fulfill",
           "Fulfill the focal request");
    ref(c, task, "focus", sr_urn);
    ref(c, task, "for", c->patient_urn);
    fhir_node_set_str(a, task, "authoredOn", authored);
    ref(c, task, "requester", site_urn);
    ref(c, task, "owner", center_urn);
    add_entry(c, entries, task_urn, task, SYS("referral-task"), in->placer_id);
#undef SYS
    if (c->oom)
        goto oom;
    return bundle;
oom:
    fhir_error_set(err, "referral package: arena cap reached while building the Bundle");
    return NULL;
fail:
    if (c->oom)
        goto oom;
    return NULL;
}

/* ---- reading a Bundle ------------------------------------------------------------------ */

/* A concept's words: its text, else the first display of its codings. NULL when neither. */
static const char *concept_words(const fhir_node *cc)
{
    const char *t = fhir_node_str(fhir_node_get(cc, "text"));
    if (t && *t)
        return t;
    for (const fhir_node *cd = fhir_node_first(fhir_node_get(cc, "coding")); cd; cd = cd->next) {
        const char *d = fhir_node_str(fhir_node_get(cd, "display"));
        if (d && *d)
            return d;
    }
    return NULL;
}

/* The Medication of bundle a reference names: by fullUrl, else by "Medication/<id>". */
static const fhir_node *bundle_drug(const fhir_node *bundle, const char *ref)
{
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next) {
        const fhir_node *r = fhir_node_get(e, "resource");
        const char *t = fhir_node_resource_type(r), *id = fhir_node_resource_id(r);
        if (!t || strcmp(t, "Medication"))
            continue;
        const char *full = fhir_node_str(fhir_node_get(e, "fullUrl"));
        if (full && !strcmp(full, ref))
            return r;
        if (id && !strncmp(ref, "Medication/", 11) && !strcmp(ref + 11, id))
            return r;
    }
    return NULL;
}

const char *bser_medication_name(const fhir_node *bundle, const fhir_node *row)
{
    const char *w = concept_words(fhir_node_get(row, "medicationCodeableConcept"));
    if (w)
        return w;
    const char *ref = fhir_node_path_str(row, "medicationReference.reference");
    const fhir_node *med = !ref ? NULL : ref[0] == '#' ? contained_drug(row) : bundle_drug(bundle, ref);
    if (med && (w = concept_words(fhir_node_get(med, "code"))))
        return w;
    w = fhir_node_path_str(row, "medicationReference.display");
    if (w && *w && strcmp(w, BSER_NOT_INCLUDED))
        return w;
    return BSER_MEDICATION_UNNAMED;
}

static void put_bounded(char *out, size_t n, const char *a, const char *b)
{
    size_t la = strlen(a), lb = b ? strlen(b) : 0;
    if (la + (b ? 1 + lb : 0) >= n) {
        out[0] = '\0'; /* too long to be a Type/id we could use */
        return;
    }
    memcpy(out, a, la);
    if (b) {
        out[la] = '/';
        memcpy(out + la + 1, b, lb);
        la += 1 + lb;
    }
    out[la] = '\0';
}

/* "[base/]Type/id[/_history/v]" -> "Type/id" */
static void strip_history(const char *loc, char *out, size_t n)
{
    char tmp[512];
    put_bounded(tmp, sizeof tmp, loc, NULL);
    char *h = strstr(tmp, "/_history");
    if (h)
        *h = '\0';
    char *last = strrchr(tmp, '/');
    if (!last) {
        put_bounded(out, n, tmp, NULL);
        return;
    }
    *last = '\0';
    char *type = strrchr(tmp, '/');
    put_bounded(out, n, type ? type + 1 : tmp, last + 1);
}

int bser_response_refs(const fhir_node *request_bundle, const fhir_node *response,
                       char *sr_out, char *task_out, fhir_error *err)
{
    sr_out[0] = task_out[0] = '\0';
    const fhir_node *req = fhir_node_get(request_bundle, "entry");
    const fhir_node *res = fhir_node_get(response, "entry");
    if (fhir_node_count(req) != fhir_node_count(res))
        return fhir_error_set(err, "transaction response has %zu entries for %zu requested",
                              fhir_node_count(res), fhir_node_count(req));
    const fhir_node *q = fhir_node_first(req), *r = fhir_node_first(res);
    for (; q && r; q = q->next, r = r->next) {
        const char *type = fhir_node_path_str(q, "resource.resourceType");
        const char *loc = fhir_node_path_str(r, "response.location");
        if (!loc) {
            /* some servers omit location on a 200 match but return the resource */
            const char *rt = fhir_node_path_str(r, "resource.resourceType");
            const char *id = fhir_node_path_str(r, "resource.id");
            if (rt && id) {
                if (type && !strcmp(type, "ServiceRequest"))
                    put_bounded(sr_out, 256, rt, id);
                else if (type && !strcmp(type, "Task"))
                    put_bounded(task_out, 256, rt, id);
            }
            continue;
        }
        if (type && !strcmp(type, "ServiceRequest"))
            strip_history(loc, sr_out, 256);
        else if (type && !strcmp(type, "Task"))
            strip_history(loc, task_out, 256);
    }
    if (!sr_out[0] || !task_out[0])
        return fhir_error_set(err, "transaction response lacks the ServiceRequest or Task "
                                   "location");
    return 0;
}
