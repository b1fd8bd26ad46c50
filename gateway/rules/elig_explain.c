/* elig_explain — plain-words explanations of a result and the screen JSON (schema in
 * conf/criteria/README.md). See elig.h. */
#include "elig_int.h"

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
 * Explanations and JSON.
 * ====================================================================================== */

static void put_value(fhir_buf *b, const efact *f, const fval *v)
{
    const map_fact *mf = v->src;
    switch (f->type) {
    case MAP_FACT_NUMBER:
        fhir_buf_printf(b, "%g", v->num);
        break;
    case MAP_FACT_BOOL:
        fhir_buf_puts(b, v->b ? "true" : "false");
        break;
    case MAP_FACT_CODE:
    case MAP_FACT_STRING:
        fhir_buf_puts(b, mf && mf->str ? mf->str : "?");
        break;
    case MAP_FACT_SET:
        if (!mf || mf->nset == 0) {
            fhir_buf_puts(b, "none");
            break;
        }
        for (size_t k = 0; k < mf->nset && k < MAP_FACT_SET_MAX; k++) {
            if (k)
                fhir_buf_putc(b, '+');
            fhir_buf_puts(b, mf->set[k] ? mf->set[k] : "?");
        }
        break;
    }
}

/* Writes the facts that decided node ni ("lines=1 [evidence]"), comma-separated. */
static void describe(const elig_ruleset *rs, const elig_factset *fs, const uint8_t *out,
                     uint32_t ni, bool evidence, fhir_buf *b, bool *first)
{
    const enode *n = &rs->nodes[ni];
    int res = out[ni] & 7;
    if (res == TNA || res == TNE)
        return;
    if (n->kind == N_LEAF) {
        const efact *f = &rs->facts[n->fact];
        const fval *v = &fs->v[n->fact];
        if (!*first)
            fhir_buf_puts(b, ", ");
        *first = false;
        if (!v->known) {
            if (out[ni] & T_ASSUMED)
                fhir_buf_printf(b, "%s not documented (treated as %s)", f->name,
                                ((out[ni] & 7) == TT) == (n->op != OP_FALSE) ? "present"
                                                                             : "absent");
            else
                fhir_buf_printf(b, "%s unknown", f->name);
        } else {
            fhir_buf_printf(b, "%s=", f->name);
            put_value(b, f, v);
        }
        if (evidence && v->src && v->src->evidence && v->src->evidence[0])
            fhir_buf_printf(b, " [%s]", v->src->evidence);
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
        describe(rs, fs, out, c, evidence, b, first);
        if ((n->kind == N_ALL && res == TF) || (n->kind == N_ANY && res == TT))
            break; /* the first deciding child is enough */
    }
}

static bool gate_is_disease(const elig_ruleset *rs, uint32_t ni)
{
    const char *role = rs->nodes[ni].role;
    return role && !strcmp(role, "disease");
}

/* Writes the explanation of eligible / possibly eligible indication i (no newline). */
static void explain_ind(const elig_ruleset *rs, const elig_factset *fs, const elig_result *r,
                        size_t i, fhir_buf *b)
{
    const eind *ind = &rs->inds[i];
    const enode *root = &rs->nodes[ind->root];
    fhir_buf_printf(b, "%s %s:", ind->key, elig_category_name((elig_category)r->cat[i]));
    { /* eligible or possibly eligible: every gate with its facts */
        uint32_t ng = root->kind == N_ALL ? root->nkids : 1;
        bool sep = false;
        for (uint32_t k = 0; k < ng; k++) {
            uint32_t g = root->kind == N_ALL ? rs->kids[root->kids + k] : ind->root;
            int gr = r->out[g] & 7;
            if (gr == TNA || gr == TNE)
                continue;
            bool first = true;
            fhir_buf_printf(b, "%s %s %s (", sep ? ";" : "", node_label(rs, g),
                            gr == TT ? "met" : "unknown");
            sep = true;
            describe(rs, fs, r->out, g, gr == TU, b, &first);
            fhir_buf_putc(b, ')');
        }
    }
    fhir_buf_printf(b, " | source: %s, rev. %s", ind->src_doc, ind->src_rev);
}

/* Calls emit(line) for each explanation line; lines are built in tmp. */
typedef void (*line_fn)(void *ud, const char *line, size_t len);

static void explain(const elig_ruleset *rs, const elig_factset *fs, const elig_result *r,
                    line_fn emit, void *ud)
{
    fhir_buf b;
    fhir_buf_init(&b, 64 * 1024);
    /* indications excluded by their disease gate are summarised on one line; other
     * not_eligible indications failing the same gate on the same facts share a line */
    int first_dis = -1;
    char **fails = xcalloc(rs->ninds, sizeof *fails);
    for (size_t i = 0; i < rs->ninds; i++)
        if (r->cat[i] == ELIG_NOT_ELIGIBLE && !gate_is_disease(rs, (uint32_t)r->failed[i])) {
            bool first = true;
            fhir_buf_reset(&b);
            fhir_buf_printf(&b, "fails '%s' (", node_label(rs, (uint32_t)r->failed[i]));
            describe(rs, fs, r->out, (uint32_t)r->failed[i], true, &b, &first);
            fhir_buf_putc(&b, ')');
            fails[i] = xstrdup(fhir_buf_cstr(&b));
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
            explain_ind(rs, fs, r, i, &b);
            emit(ud, fhir_buf_cstr(&b), b.len);
            continue;
        }
        if (!fails[i][0])
            continue; /* already written with an earlier indication */
        size_t same = 0;
        for (size_t j = i; j < rs->ninds; j++)
            if (fails[j] && !strcmp(fails[j], fails[i])) {
                fhir_buf_printf(&b, "%s%s", same ? "," : "", rs->inds[j].key);
                same++;
            }
        fhir_buf_printf(&b, " not_eligible: %s", fails[i]);
        if (same == 1)
            fhir_buf_printf(&b, " | source: %s, rev. %s", rs->inds[i].src_doc,
                            rs->inds[i].src_rev);
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
                fhir_buf_printf(&b, "%s%s", sep ? "," : " ", rs->inds[i].key);
                sep = true;
            }
        bool first = true;
        fhir_buf_puts(&b, " (");
        describe(rs, fs, r->out, (uint32_t)r->failed[first_dis], true, &b, &first);
        fhir_buf_putc(&b, ')');
        emit(ud, fhir_buf_cstr(&b), b.len);
    }
    for (size_t k = 0; k < rs->nflag_ids; k++) {
        uint8_t fi = rs->flag_order[k];
        if (!(r->flags >> fi & 1))
            continue;
        const eflag *fl = &rs->flags[r->flag_src[fi]];
        bool first = true;
        fhir_buf_reset(&b);
        fhir_buf_printf(&b, "review flag %s (", rs->flag_ids[fi]);
        describe(rs, fs, r->out, fl->node, false, &b, &first);
        fhir_buf_printf(&b, "): %s", fl->message);
        emit(ud, fhir_buf_cstr(&b), b.len);
    }
    fhir_buf_reset(&b);
    fhir_buf_printf(&b, "urgency %s: %s", elig_urgency_name((elig_urgency)r->urgency),
                    elig_result_urgency_reason(rs, r));
    if (r->urg_ind >= 0)
        fhir_buf_printf(&b, " (%s)", rs->inds[r->urg_ind].key);
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
    explain(rs, fs, r, emit_text, out);
    return out->overflow ? -1 : 0;
}

static void json_key(fhir_buf *out, const char *k)
{
    fhir_buf_putc(out, ',');
    fhir_json_write_string(out, k, strlen(k));
    fhir_buf_putc(out, ':');
}

int elig_result_write_json(const elig_ruleset *rs, const elig_factset *fs,
                           const elig_result *r, const char *patient_id, fhir_buf *out)
{
    fhir_buf_puts(out, "{\"patient\":");
    fhir_json_write_string(out, patient_id ? patient_id : "", patient_id ? strlen(patient_id) : 0);
    json_key(out, "category");
    const char *c = elig_category_name((elig_category)r->best);
    fhir_json_write_string(out, c, strlen(c));
    for (int pass = 0; pass < 2; pass++) {
        json_key(out, pass == 0 ? "products" : "possible_products");
        uint8_t want = pass == 0 ? ELIG_ELIGIBLE : ELIG_POSSIBLY_ELIGIBLE;
        fhir_buf_putc(out, '[');
        bool sep = false;
        for (size_t i = 0; i < rs->ninds; i++)
            if (r->cat[i] == want) {
                if (sep)
                    fhir_buf_putc(out, ',');
                sep = true;
                fhir_json_write_string(out, rs->inds[i].key, strlen(rs->inds[i].key));
            }
        fhir_buf_putc(out, ']');
    }
    json_key(out, "missing");
    fhir_buf_putc(out, '[');
    const char *names[ELIG_MAX_FACTS];
    size_t nm = elig_result_missing(rs, r, names, ELIG_MAX_FACTS);
    for (size_t k = 0; k < nm; k++) {
        if (k)
            fhir_buf_putc(out, ',');
        fhir_json_write_string(out, names[k], strlen(names[k]));
    }
    fhir_buf_putc(out, ']');
    json_key(out, "review_flags");
    fhir_buf_putc(out, '[');
    const char *ids[ELIG_MAX_FLAGS];
    size_t nf = elig_result_flags(rs, r, ids, ELIG_MAX_FLAGS);
    for (size_t k = 0; k < nf; k++) {
        if (k)
            fhir_buf_putc(out, ',');
        fhir_json_write_string(out, ids[k], strlen(ids[k]));
    }
    fhir_buf_putc(out, ']');
    json_key(out, "urgency");
    const char *u = elig_urgency_name((elig_urgency)r->urgency);
    fhir_json_write_string(out, u, strlen(u));
    json_key(out, "explanation");
    fhir_buf_putc(out, '[');
    json_lines jl = {out, true};
    explain(rs, fs, r, emit_json, &jl);
    fhir_buf_putc(out, ']');
    json_key(out, "ruleset");
    fhir_json_write_string(out, rs->hash, strlen(rs->hash));
    fhir_buf_putc(out, '}');
    return out->overflow ? -1 : 0;
}
