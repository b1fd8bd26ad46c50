/* elig_eval — Kleene three-valued evaluation of a rule set against a factset, and the result's
 * accessors. See elig.h. */
#include "elig_int.h"

/* ======================================================================================
 * Evaluation (the hot path: no allocation, no string operations).
 * ====================================================================================== */

/* One test on a known fact, three-valued: a partly known fact (mappings/FACTS.md "Open
 * world") gives TU where its unknown part could decide, never TF. */
static inline int leaf_test(const hnode *n, const fval *f)
{
    if (f->bound) { /* the true value is >= num (bound +1) or <= num (bound -1) */
        double v = f->num, x = n->num;
        bool lo = f->bound > 0;
        switch (n->op) {
        case OP_LT: return lo ? (v >= x ? TF : TU) : (v < x ? TT : TU);
        case OP_LE: return lo ? (v > x ? TF : TU) : (v <= x ? TT : TU);
        case OP_GT: return lo ? (v > x ? TT : TU) : (v <= x ? TF : TU);
        case OP_GE: return lo ? (v >= x ? TT : TU) : (v < x ? TF : TU);
        case OP_EQ: return (lo ? v > x : v < x) ? TF : TU;
        case OP_NE: return (lo ? v > x : v < x) ? TT : TU;
        default: break;
        }
    }
    uint64_t m = n->mask, have = f->bits & m, may = f->maybe & m;
    switch (n->op) {
    case OP_LT: return f->num < n->num ? TT : TF;
    case OP_LE: return f->num <= n->num ? TT : TF;
    case OP_GT: return f->num > n->num ? TT : TF;
    case OP_GE: return f->num >= n->num ? TT : TF;
    case OP_EQ: return f->num == n->num ? TT : TF;
    case OP_NE: return f->num != n->num ? TT : TF;
    case OP_TRUE: return f->b ? TT : TF;
    case OP_FALSE: return !f->b ? TT : TF;
    case OP_IN:
    case OP_ANY_OF: return have ? TT : may ? TU : TF;
    case OP_NOT_IN:
    case OP_NONE_OF: return have ? TF : may ? TU : TT;
    case OP_ALL_OF: return have == m ? TT : (have | may) == m ? TU : TF;
    }
    return TF;
}

static int eval(const elig_ruleset *rs, const fval *fv, int32_t day, uint32_t ni, uint8_t *out,
                uint64_t *miss);

/* A leaf, or a node out of force (TNA). Inlined into the loops below. */
static inline int eval_leaf(const hnode *n, const fval *fv, uint32_t ni, uint8_t *out,
                            uint64_t *miss)
{
    const fval *f = &fv[n->fact];
    int r;
    if (!f->known) {
        if (n->if_unknown >= 0) {
            out[ni] = (uint8_t)(n->if_unknown | T_ASSUMED);
            return n->if_unknown;
        }
        *miss |= 1ull << n->fact;
        r = TU;
    } else {
        r = leaf_test(n, f);
        if (r == TU)
            *miss |= 1ull << n->fact;
    }
    out[ni] = (uint8_t)r;
    return r;
}

static inline int eval_child(const elig_ruleset *rs, const fval *fv, int32_t day, uint32_t ni,
                             uint8_t *out, uint64_t *miss)
{
    const hnode *n = &rs->hot[ni];
    if (n->kind == N_LEAF && n->active && day >= n->from && day < n->until)
        return eval_leaf(n, fv, ni, out, miss);
    return eval(rs, fv, day, ni, out, miss);
}

/* Marks the children after k as not evaluated (short-circuit), for the explanations. */
static inline void skip_rest(const elig_ruleset *rs, const hnode *n, uint32_t k, uint8_t *out)
{
    for (uint32_t j = k + 1; j < n->nkids; j++)
        out[rs->kids[n->kids + j]] = TNE;
}

static int eval(const elig_ruleset *rs, const fval *fv, int32_t day, uint32_t ni, uint8_t *out,
                uint64_t *miss)
{
    const hnode *n = &rs->hot[ni];
    int r;
    if (!n->active || day < n->from || day >= n->until) {
        out[ni] = TNA;
        return TNA;
    }
    switch (n->kind) {
    case N_LEAF:
        return eval_leaf(n, fv, ni, out, miss);
    case N_ALL: {
        uint64_t m = 0;
        bool any = false;
        r = TT;
        for (uint32_t k = 0; k < n->nkids; k++) {
            int c = eval_child(rs, fv, day, rs->kids[n->kids + k], out, &m);
            if (c == TNA)
                continue;
            any = true;
            if (c < r)
                r = c;
            if (c == TF) {
                skip_rest(rs, n, k, out);
                break;
            }
        }
        if (!any)
            r = TNA;
        else if (r == TU)
            *miss |= m;
        break;
    }
    case N_ANY: {
        uint64_t m = 0;
        bool any = false;
        r = TF;
        for (uint32_t k = 0; k < n->nkids; k++) {
            int c = eval_child(rs, fv, day, rs->kids[n->kids + k], out, &m);
            if (c == TNA)
                continue;
            any = true;
            if (c > r)
                r = c;
            if (c == TT) {
                skip_rest(rs, n, k, out);
                break;
            }
        }
        if (!any)
            r = TNA;
        else if (r == TU)
            *miss |= m;
        break;
    }
    default: { /* N_NOT */
        int c = eval_child(rs, fv, day, rs->kids[n->kids], out, miss);
        r = c == TNA ? TNA : 2 - c;
        break;
    }
    }
    out[ni] = (uint8_t)r;
    return r;
}

elig_result *elig_result_new(const elig_ruleset *rs)
{
    elig_result *r = fhir_xcalloc(1, sizeof *r);
    r->ninds = rs->ninds;
    r->nnodes = rs->nnodes;
    r->cat = fhir_xcalloc(rs->ninds, 1);
    r->pend = fhir_xcalloc(rs->ninds, 1);
    r->trig = fhir_xcalloc(rs->ntrigs, 1);
    r->miss = fhir_xcalloc(rs->ninds, sizeof *r->miss);
    r->failed = fhir_xcalloc(rs->ninds, sizeof *r->failed);
    r->out = fhir_xcalloc(rs->nnodes, 1);
    r->nuflags = rs->nuflags;
    r->ustate = fhir_xcalloc(rs->nuflags, 1);
    r->usrc = fhir_xcalloc(rs->nuflags, sizeof *r->usrc);
    return r;
}

void elig_result_set_records(elig_result *r, const elig_records *rec)
{
    bool partial = rec && rec->read < rec->cached;
    r->rec_read = partial ? rec->read : 0;
    r->rec_cached = partial ? rec->cached : 0;
}

bool elig_result_partial(const elig_result *r, elig_records *out)
{
    if (out)
        *out = (elig_records){r->rec_read, r->rec_cached};
    return r->rec_read < r->rec_cached;
}

void elig_result_free(elig_result *r)
{
    if (!r)
        return;
    free(r->cat);
    free(r->pend);
    free(r->trig);
    free(r->miss);
    free(r->failed);
    free(r->out);
    free(r->ustate);
    free(r->usrc);
    free(r);
}

void elig_evaluate(const elig_ruleset *rs, const elig_factset *fs, int64_t as_of_days,
                   elig_result *r)
{
    int32_t day = as_of_days < INT32_MIN ? INT32_MIN
                  : as_of_days > INT32_MAX - 1 ? INT32_MAX - 1 : (int32_t)as_of_days;
    const fval *fv = fs->v;
    /* r->out is written for every node evaluated below; children skipped by a short circuit
     * are marked TNE, and nothing reads nodes of unevaluated subtrees */
    r->best = ELIG_NOT_ELIGIBLE;
    r->urgency = ELIG_URGENCY_NONE;
    r->urg_ind = -1;
    r->urg_tim = -1;
    r->miss_all = 0;
    r->flags = 0;
    r->rec_read = r->rec_cached = 0; /* every record read unless the caller says otherwise */
    memset(r->ustate, 0, rs->nuflags);
    for (size_t i = 0; i < rs->ninds; i++) {
        const eind *ind = &rs->inds[i];
        r->miss[i] = 0;
        r->failed[i] = -1;
        r->pend[i] = ELIG_NOT_IN_FORCE;
        if (day < ind->from || day >= ind->until) {
            r->cat[i] = ELIG_NOT_IN_FORCE;
            continue;
        }
        bool pending = ind->pending && !ind->enabled;
        if (pending && !rs->show_pending) {
            r->cat[i] = ELIG_NOT_IN_FORCE;
            continue;
        }
        uint64_t m = 0;
        int t = eval(rs, fv, day, ind->root, r->out, &m);
        if (t == TNA)
            t = TT;
        uint8_t cat = t == TT ? ELIG_ELIGIBLE : t == TU ? ELIG_POSSIBLY_ELIGIBLE
                                                        : ELIG_NOT_ELIGIBLE;
        if (pending) { /* shown apart; never the category, flags, urgency */
            r->pend[i] = cat;
            r->cat[i] = ELIG_NOT_IN_FORCE;
            continue;
        }
        r->cat[i] = cat;
        if (cat > r->best)
            r->best = cat;
        if (cat == ELIG_NOT_ELIGIBLE) {
            const enode *root = &rs->nodes[ind->root];
            r->failed[i] = (int32_t)ind->root;
            if (root->kind == N_ALL)
                for (uint32_t k = 0; k < root->nkids; k++)
                    if ((r->out[rs->kids[root->kids + k]] & 7) == TF) {
                        r->failed[i] = (int32_t)rs->kids[root->kids + k];
                        break;
                    }
            continue;
        }
        r->miss[i] = cat == ELIG_POSSIBLY_ELIGIBLE ? m : 0;
        r->miss_all |= r->miss[i];
        for (uint32_t k = 0; k < ind->nflags; k++) {
            const eflag *fl = &rs->flags[ind->flag0 + k];
            uint64_t fm = 0;
            if (r->flags >> fl->id & 1)
                continue; /* raised already by an earlier indication */
            uint8_t st = r->ustate[fl->uid];
            if (!st) {
                st = eval(rs, fv, day, fl->node, r->out, &fm) == TT ? 2 : 1;
                r->ustate[fl->uid] = st;
                r->usrc[fl->uid] = ind->flag0 + k;
            }
            if (st == 2) {
                r->flags |= 1ull << fl->id;
                r->flag_src[fl->id] = r->usrc[fl->uid];
            }
        }
        uint8_t u = cat == ELIG_ELIGIBLE ? ELIG_URGENCY_SOON : ELIG_URGENCY_REVIEW;
        int32_t tim = -1;
        for (uint32_t k = 0; k < ind->ntims; k++) {
            const etiming *tm = &rs->tims[ind->tim0 + k];
            uint64_t tmm = 0;
            if (eval(rs, fv, day, tm->node, r->out, &tmm) == TT) {
                if (tm->urgency > u) {
                    u = tm->urgency;
                    tim = (int32_t)(ind->tim0 + k);
                }
                break;
            }
        }
        if (u > r->urgency) {
            r->urgency = u;
            r->urg_ind = (int32_t)i;
            r->urg_tim = tim;
        }
    }
    /* refer-early triggers: independent of the label verdicts */
    r->consult = ELIG_CONSULT_NONE;
    memset(r->trig, 0, rs->ntrigs);
    for (size_t c = 0; c < rs->nconsults; c++) {
        const econsult *cs = &rs->consults[c];
        uint64_t m = 0;
        if (eval(rs, fv, day, cs->applies, r->out, &m) != TT)
            continue;
        for (uint32_t k = 0; k < cs->ntrig; k++) {
            const etrig *t = &rs->trigs[cs->trig0 + k];
            if (eval(rs, fv, day, t->node, r->out, &m) == TT) {
                r->trig[cs->trig0 + k] = 1;
                if (t->rec > r->consult)
                    r->consult = t->rec;
            }
        }
    }
}

elig_category elig_result_category(const elig_result *r) { return (elig_category)r->best; }

elig_category elig_result_ind_category(const elig_result *r, size_t i)
{
    return i < r->ninds ? (elig_category)r->cat[i] : ELIG_NOT_IN_FORCE;
}


const char *elig_result_ind_failed(const elig_ruleset *rs, const elig_result *r, size_t i)
{
    if (i >= r->ninds || r->cat[i] != ELIG_NOT_ELIGIBLE || r->failed[i] < 0)
        return NULL;
    return node_label(rs, (uint32_t)r->failed[i]);
}

bool elig_result_ind_disease_matches(const elig_ruleset *rs, const elig_result *r, size_t i)
{
    if (i >= r->ninds || r->cat[i] == ELIG_NOT_IN_FORCE)
        return false;
    if (r->cat[i] != ELIG_NOT_ELIGIBLE)
        return true;
    const char *role = r->failed[i] >= 0 ? rs->nodes[r->failed[i]].role : NULL;
    return !role || strcmp(role, "disease");
}

static uint64_t leaves(const elig_ruleset *rs, uint32_t ni)
{
    const enode *n = &rs->nodes[ni];
    if (n->kind == N_LEAF)
        return 1ull << n->fact;
    uint64_t m = 0;
    for (uint32_t k = 0; k < n->nkids; k++)
        m |= leaves(rs, rs->kids[n->kids + k]);
    return m;
}

uint64_t elig_result_ind_failed_facts(const elig_ruleset *rs, const elig_result *r, size_t i)
{
    if (i >= r->ninds || r->cat[i] != ELIG_NOT_ELIGIBLE || r->failed[i] < 0)
        return 0;
    return leaves(rs, (uint32_t)r->failed[i]);
}

uint64_t elig_result_ind_missing(const elig_result *r, size_t i)
{
    return i < r->ninds ? r->miss[i] : 0;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

size_t elig_result_missing(const elig_ruleset *rs, const elig_factset *fs, const elig_result *r,
                           const char **names, size_t max)
{
    const char *all[ELIG_MAX_FACTS];
    size_t n = 0;
    for (size_t k = 0; k < rs->nfacts; k++) {
        uint8_t fi = rs->fact_order[k];
        if (!(r->miss_all >> fi & 1))
            continue;
        const map_fact *mf = fs ? fs->v[fi].src : NULL;
        /* a partly known fact names its unknown part ("lineage"); an unknown one its name */
        const char *name = mf && mf->known && mf->missing_as ? mf->missing_as : rs->facts[fi].name;
        bool dup = false;
        for (size_t j = 0; j < n; j++)
            dup |= !strcmp(all[j], name);
        if (!dup)
            all[n++] = name;
    }
    qsort(all, n, sizeof all[0], cmp_cstr);
    for (size_t k = 0; k < n && k < max; k++)
        names[k] = all[k];
    return n;
}

size_t elig_result_to_request(const elig_ruleset *rs, const elig_factset *fs, const elig_result *r,
                              const char **texts, size_t max)
{
    size_t n = 0;
    for (size_t k = 0; k < rs->nfacts && fs; k++) {
        uint8_t fi = rs->fact_order[k];
        const map_fact *mf = fs->v[fi].src;
        if (!(r->miss_all >> fi & 1) || !mf || !mf->settle)
            continue;
        bool dup = false;
        for (size_t j = 0; j < n && j < max; j++)
            dup |= !strcmp(texts[j], mf->settle);
        if (dup)
            continue;
        if (n < max)
            texts[n] = mf->settle;
        n++;
    }
    return n;
}

size_t elig_result_notes(const elig_ruleset *rs, const elig_result *r, const char **ids,
                         size_t max)
{
    size_t n = 0;
    for (size_t k = 0; k < rs->nflag_ids; k++) {
        uint8_t fi = rs->flag_order[k];
        if ((r->flags >> fi & 1) && rs->flag_is_note[fi]) {
            if (n < max)
                ids[n] = rs->flag_ids[fi];
            n++;
        }
    }
    return n;
}

elig_consult elig_result_consult(const elig_result *r) { return (elig_consult)r->consult; }

size_t elig_result_consult_triggers(const elig_ruleset *rs, const elig_result *r, const char **ids,
                                    const char **reasons, size_t max)
{
    size_t n = 0;
    for (size_t k = 0; k < rs->ntrigs; k++)
        if (r->trig[k]) {
            if (n < max) {
                if (ids)
                    ids[n] = rs->trigs[k].id;
                if (reasons)
                    reasons[n] = rs->trigs[k].reason;
            }
            n++;
        }
    return n;
}

elig_category elig_result_pending_category(const elig_result *r, size_t i)
{
    return i < r->ninds ? (elig_category)r->pend[i] : ELIG_NOT_IN_FORCE;
}

size_t elig_result_flags(const elig_ruleset *rs, const elig_result *r, const char **ids,
                         size_t max)
{
    size_t n = 0;
    for (size_t k = 0; k < rs->nflag_ids; k++) {
        uint8_t fi = rs->flag_order[k];
        if ((r->flags >> fi & 1) && !rs->flag_is_note[fi]) {
            if (n < max)
                ids[n] = rs->flag_ids[fi];
            n++;
        }
    }
    return n;
}

elig_urgency elig_result_urgency(const elig_result *r) { return (elig_urgency)r->urgency; }

const char *elig_result_urgency_reason(const elig_ruleset *rs, const elig_result *r)
{
    if (r->urg_tim >= 0)
        return rs->tims[r->urg_tim].reason;
    switch (r->urgency) {
    case ELIG_URGENCY_SOON:
        return "eligible on label; no timing trigger documented: refer at the next visit";
    case ELIG_URGENCY_REVIEW:
        return "possibly eligible: check the missing facts, then decide on referral";
    default:
        return "no CAR T label indication matches";
    }
}
