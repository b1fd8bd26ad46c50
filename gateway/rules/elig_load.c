/* elig_load — criteria files -> compiled rule set: JSON (elig_json.c), validation against the
 * fact vocabulary, compilation, FILE:LINE errors. See elig.h and conf/criteria/README.md for
 * the file format. */
#include "elig_int.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#include <openssl/evp.h>

#include "fhir_clock.h"

/* ======================================================================================
 * The fact vocabulary (mappings/FACTS.md) comes from the profile module: map_fact_lookup() and
 * map_fact_code_valid().
 * ====================================================================================== */

static bool vocab_lookup(const char *name, map_fact_type *type)
{
    return map_fact_lookup(name, type);
}

static bool vocab_code_valid(const char *name, const char *value)
{
    return map_fact_code_valid(name, value);
}

static const char *type_name(map_fact_type t)
{
    switch (t) {
    case MAP_FACT_NUMBER: return "number";
    case MAP_FACT_BOOL: return "bool";
    case MAP_FACT_CODE: return "code";
    case MAP_FACT_SET: return "set";
    case MAP_FACT_STRING: return "string";
    }
    return "?";
}

static const char *rs_str(elig_ruleset *rs, const char *s)
{
    if (rs->nstrs == rs->cap_strs) {
        rs->cap_strs = rs->cap_strs ? rs->cap_strs * 2 : 256;
        rs->strs = xrealloc(rs->strs, rs->cap_strs * sizeof *rs->strs);
    }
    char *d = xstrdup(s);
    rs->strs[rs->nstrs++] = d;
    return d;
}

/* ======================================================================================
 * Loading and validation.
 * ====================================================================================== */

typedef struct ld {
    elig_ruleset *rs;
    const char *file;      /* owned by rs */
    fhir_error *err;
} ld;

static int lerr(ld *L, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int lerr(ld *L, int line, const char *fmt, ...)
{
    char m[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return fhir_error_set(L->err, "%s:%d: %s", L->file, line, m);
}

/* Checks that every key of obj is one of allowed (NULL-terminated). */
static int check_keys(ld *L, const jv *obj, const char *what, const char *const *allowed)
{
    for (const jv *c = obj->first; c; c = c->next) {
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++)
            if (!strcmp(allowed[i], c->key))
                ok = true;
        if (!ok)
            return lerr(L, c->line, "unknown key \"%s\" in %s", c->key, what);
    }
    return 0;
}

static int want_kind(ld *L, const jv *v, jv_kind k, const char *what)
{
    if (v->kind != k)
        return lerr(L, v->line, "%s must be a %s, not a %s", what, elig_jv_kind_name(k),
                    elig_jv_kind_name(v->kind));
    return 0;
}

/* Required non-empty string member. */
static int req_str(ld *L, const jv *obj, const char *key, const char *what, const char **out)
{
    const jv *v = elig_jv_get(obj, key);
    if (!v)
        return lerr(L, obj->line, "%s: missing \"%s\"", what, key);
    if (v->kind != JV_STR || !v->str[0])
        return lerr(L, v->line, "%s: \"%s\" must be a non-empty string", what, key);
    *out = rs_str(L->rs, v->str);
    return 0;
}

static int opt_str(ld *L, const jv *obj, const char *key, const char *what, const char **out)
{
    const jv *v = elig_jv_get(obj, key);
    *out = NULL;
    if (!v)
        return 0;
    if (v->kind != JV_STR || !v->str[0])
        return lerr(L, v->line, "%s: \"%s\" must be a non-empty string", what, key);
    *out = rs_str(L->rs, v->str);
    return 0;
}

static int parse_day(ld *L, const jv *v, const char *what, int32_t *out)
{
    int64_t d;
    if (v->kind != JV_STR || strlen(v->str) != 10 || fhir_clock_parse_date(v->str, &d) != 0)
        return lerr(L, v->line, "%s must be a date \"YYYY-MM-DD\"", what);
    *out = (int32_t)d;
    return 0;
}

static int parse_window(ld *L, const jv *obj, int32_t *from, int32_t *until)
{
    const jv *f = elig_jv_get(obj, "effective_from"), *u = elig_jv_get(obj, "effective_until");
    *from = INT32_MIN;
    *until = INT32_MAX;
    if (f && f->kind != JV_NULL && parse_day(L, f, "effective_from", from))
        return -1;
    if (u && u->kind != JV_NULL && parse_day(L, u, "effective_until", until))
        return -1;
    if (*from >= *until)
        return lerr(L, (u ? u : obj)->line, "effective_until must be after effective_from");
    return 0;
}

static int fact_index(ld *L, const jv *at, const char *name, int *out)
{
    elig_ruleset *rs = L->rs;
    for (size_t i = 0; i < rs->nfacts; i++)
        if (!strcmp(rs->facts[i].name, name)) {
            *out = (int)i;
            return 0;
        }
    map_fact_type t;
    if (!vocab_lookup(name, &t))
        return lerr(L, at->line, "unknown fact \"%s\" (see mappings/FACTS.md)", name);
    if (rs->nfacts == ELIG_MAX_FACTS)
        return lerr(L, at->line, "more than %d distinct facts", ELIG_MAX_FACTS);
    rs->facts[rs->nfacts].name = rs_str(rs, name);
    rs->facts[rs->nfacts].type = t;
    *out = (int)rs->nfacts++;
    return 0;
}

static int code_bit(ld *L, const jv *at, int fact, const char *code, uint64_t *mask)
{
    efact *f = &L->rs->facts[fact];
    if (!vocab_code_valid(f->name, code))
        return lerr(L, at->line, "\"%s\" is not a valid value of fact \"%s\"", code, f->name);
    for (size_t i = 0; i < f->ncodes; i++)
        if (!strcmp(f->codes[i], code)) {
            *mask |= 1ull << i;
            return 0;
        }
    if (f->ncodes == ELIG_MAX_CODES)
        return lerr(L, at->line, "more than %d distinct values of fact \"%s\"", ELIG_MAX_CODES,
                    f->name);
    f->codes[f->ncodes] = rs_str(L->rs, code);
    *mask |= 1ull << f->ncodes++;
    return 0;
}


static uint32_t node_alloc(elig_ruleset *rs)
{
    if (rs->nnodes == rs->cap_nodes) {
        rs->cap_nodes = rs->cap_nodes ? rs->cap_nodes * 2 : 256;
        rs->nodes = xrealloc(rs->nodes, rs->cap_nodes * sizeof *rs->nodes);
    }
    enode *n = &rs->nodes[rs->nnodes];
    memset(n, 0, sizeof *n);
    n->if_unknown = -1;
    n->active = true;
    n->from = INT32_MIN;
    n->until = INT32_MAX;
    n->num_param = -1;
    n->if_param = -1;
    return (uint32_t)rs->nnodes++;
}

static const struct {
    const char *name;
    int op;
} op_names[] = {
    {"<", OP_LT}, {"<=", OP_LE}, {">", OP_GT}, {">=", OP_GE}, {"==", OP_EQ}, {"!=", OP_NE},
    {"is_true", OP_TRUE}, {"is_false", OP_FALSE}, {"in", OP_IN}, {"not_in", OP_NOT_IN},
    {"any_of", OP_ANY_OF}, {"all_of", OP_ALL_OF}, {"none_of", OP_NONE_OF},
};

static const char *op_text(int op)
{
    for (size_t i = 0; i < sizeof op_names / sizeof op_names[0]; i++)
        if (op_names[i].op == op)
            return op_names[i].name;
    return "?";
}

static const char *const node_keys[] = {
    "all", "any", "not", "fact", "op", "value", "label", "role", "note", "effective_from",
    "effective_until", "if_param", "if_unknown", NULL};
static const char *const roles[] = {
    "disease", "age", "lines", "prior_therapy", "disease_status", "exclusion", "transplant",
    "other", NULL};

/* Builds the leaf's value from v (after the op is known). */
static int compile_value(ld *L, uint32_t ni, const jv *leaf, const jv *v)
{
    elig_ruleset *rs = L->rs;
    enode *n = &rs->nodes[ni];
    int fact = n->fact, op = n->op;
    map_fact_type t = rs->facts[fact].type;
    const char *fname = rs->facts[fact].name;
    char text[512];
    text[0] = 0;

    if (op == OP_TRUE || op == OP_FALSE) {
        if (v)
            return lerr(L, v->line, "operator \"%s\" takes no value", op_text(op));
        rs->nodes[ni].value_text = NULL;
        return 0;
    }
    if (!v)
        return lerr(L, leaf->line, "operator \"%s\" needs a \"value\"", op_text(op));
    if (t == MAP_FACT_NUMBER) {
        if (v->kind == JV_OBJ) {
            const jv *p = elig_jv_get(v, "param");
            if (!p || v->n != 1 || p->kind != JV_STR)
                return lerr(L, v->line, "a parameter value is written {\"param\": \"name\"}");
            int pi = elig_ruleset_param_index(rs, p->str);
            if (pi < 0)
                return lerr(L, p->line, "unknown parameter \"%s\" (declare it in params.json)",
                            p->str);
            if (!rs->params[pi].is_number)
                return lerr(L, p->line, "parameter \"%s\" is not a number", p->str);
            n = &rs->nodes[ni];
            n->num_param = (int16_t)pi;
            n->num = rs->params[pi].num;
            snprintf(text, sizeof text, "%s", p->str);
        } else if (v->kind == JV_NUM) {
            n->num = v->num;
            snprintf(text, sizeof text, "%s", v->str);
        } else {
            return lerr(L, v->line, "type mismatch: fact \"%s\" is a number, value is a %s",
                        fname, elig_jv_kind_name(v->kind));
        }
    } else if (t == MAP_FACT_CODE || t == MAP_FACT_SET) {
        uint64_t mask = 0;
        if (v->kind == JV_STR) {
            if (code_bit(L, v, fact, v->str, &mask))
                return -1;
            snprintf(text, sizeof text, "%s", v->str);
        } else if (v->kind == JV_ARR && v->n > 0) {
            size_t tl = 0;
            for (const jv *c = v->first; c; c = c->next) {
                if (c->kind != JV_STR)
                    return lerr(L, c->line,
                                "type mismatch: values of fact \"%s\" are codes (strings), "
                                "not a %s", fname, elig_jv_kind_name(c->kind));
                if (code_bit(L, c, fact, c->str, &mask))
                    return -1;
                int w = snprintf(text + tl, sizeof text - tl, "%s%s", tl ? "," : "", c->str);
                if (w > 0 && (size_t)w < sizeof text - tl)
                    tl += (size_t)w;
            }
        } else {
            return lerr(L, v->line,
                        "type mismatch: fact \"%s\" is a %s, value must be a code or a "
                        "non-empty array of codes", fname, type_name(t));
        }
        n = &rs->nodes[ni];
        n->mask = mask;
    }
    rs->nodes[ni].value_text = rs_str(rs, text);
    return 0;
}

static int compile_node(ld *L, const jv *v, int depth, uint32_t *out);

static int compile_leaf(ld *L, const jv *v, uint32_t ni)
{
    elig_ruleset *rs = L->rs;
    const jv *f = elig_jv_get(v, "fact"), *o = elig_jv_get(v, "op"), *val = elig_jv_get(v, "value");
    if (f->kind != JV_STR)
        return lerr(L, f->line, "\"fact\" must be a string");
    int fact = 0;
    if (fact_index(L, f, f->str, &fact))
        return -1;
    if (!o)
        return lerr(L, v->line, "criterion on \"%s\" has no \"op\"", f->str);
    if (o->kind != JV_STR)
        return lerr(L, o->line, "\"op\" must be a string");
    int op = -1;
    for (size_t i = 0; i < sizeof op_names / sizeof op_names[0]; i++)
        if (!strcmp(op_names[i].name, o->str))
            op = op_names[i].op;
    if (op < 0)
        return lerr(L, o->line,
                    "unknown operator \"%s\" (use < <= > >= == != is_true is_false in not_in "
                    "any_of all_of none_of)", o->str);
    map_fact_type t = rs->facts[fact].type;
    /* sugar: bool == true/false, code == / != "x" */
    if (t == MAP_FACT_BOOL && (op == OP_EQ || op == OP_NE)) {
        if (!val || val->kind != JV_BOOL)
            return lerr(L, (val ? val : o)->line,
                        "type mismatch: fact \"%s\" is a bool, compare with true or false",
                        f->str);
        op = ((op == OP_EQ) == val->b) ? OP_TRUE : OP_FALSE;
        val = NULL;
    } else if (t == MAP_FACT_CODE && (op == OP_EQ || op == OP_NE)) {
        op = op == OP_EQ ? OP_IN : OP_NOT_IN;
    }
    bool ok;
    switch (t) {
    case MAP_FACT_NUMBER: ok = op <= OP_NE; break;
    case MAP_FACT_BOOL: ok = op == OP_TRUE || op == OP_FALSE; break;
    case MAP_FACT_CODE: ok = op == OP_IN || op == OP_NOT_IN; break;
    case MAP_FACT_SET: ok = op == OP_ANY_OF || op == OP_ALL_OF || op == OP_NONE_OF; break;
    default: ok = false; break;
    }
    if (!ok)
        return lerr(L, o->line, "type mismatch: operator \"%s\" does not apply to %s fact \"%s\"",
                    o->str, type_name(t), f->str);
    enode *n = &rs->nodes[ni];
    n->kind = N_LEAF;
    n->fact = (uint16_t)fact;
    n->op = (uint8_t)op;
    if (compile_value(L, ni, v, val))
        return -1;
    const jv *iu = elig_jv_get(v, "if_unknown");
    if (iu) {
        if (iu->kind != JV_BOOL)
            return lerr(L, iu->line, "\"if_unknown\" must be true or false");
        rs->nodes[ni].if_unknown = iu->b ? TT : TF;
    }
    return 0;
}

static int compile_node(ld *L, const jv *v, int depth, uint32_t *out)
{
    elig_ruleset *rs = L->rs;
    if (depth > 32)
        return lerr(L, v->line, "criteria nested deeper than 32");
    if (want_kind(L, v, JV_OBJ, "a criterion"))
        return -1;
    if (check_keys(L, v, "a criterion", node_keys))
        return -1;
    const jv *all = elig_jv_get(v, "all"), *any = elig_jv_get(v, "any"), *not = elig_jv_get(v, "not"),
             *fact = elig_jv_get(v, "fact");
    int forms = (all != NULL) + (any != NULL) + (not != NULL) + (fact != NULL);
    if (forms != 1)
        return lerr(L, v->line, "a criterion needs exactly one of \"all\", \"any\", \"not\", "
                                "\"fact\"");
    if (!fact && (elig_jv_get(v, "op") || elig_jv_get(v, "value") || elig_jv_get(v, "if_unknown")))
        return lerr(L, v->line, "\"op\", \"value\" and \"if_unknown\" belong to a fact criterion");
    uint32_t ni = node_alloc(rs);
    int line = v->line;
    rs->nodes[ni].line = line;
    rs->nodes[ni].file = L->file;

    const char *label, *role;
    if (opt_str(L, v, "label", "criterion", &label) || opt_str(L, v, "role", "criterion", &role))
        return -1;
    if (role) {
        bool ok = false;
        for (size_t i = 0; roles[i]; i++)
            ok |= !strcmp(roles[i], role);
        if (!ok)
            return lerr(L, elig_jv_get(v, "role")->line,
                        "unknown role \"%s\" (disease age lines prior_therapy disease_status "
                        "exclusion transplant other)", role);
    }
    const jv *note = elig_jv_get(v, "note");
    if (note && note->kind != JV_STR)
        return lerr(L, note->line, "\"note\" must be a string");
    int32_t from, until;
    if (parse_window(L, v, &from, &until))
        return -1;
    rs->nodes[ni].label = label;
    rs->nodes[ni].role = role;
    rs->nodes[ni].from = from;
    rs->nodes[ni].until = until;

    const jv *ip = elig_jv_get(v, "if_param");
    if (ip) {
        const jv *pn = elig_jv_get(ip, "name"), *pin = elig_jv_get(ip, "in");
        if (ip->kind != JV_OBJ || !pn || pn->kind != JV_STR || !pin || pin->kind != JV_ARR ||
            ip->n != 2)
            return lerr(L, ip->line, "\"if_param\" is written {\"name\": \"param\", \"in\": "
                                     "[\"value\", ...]}");
        int pi = elig_ruleset_param_index(rs, pn->str);
        if (pi < 0)
            return lerr(L, pn->line, "unknown parameter \"%s\" (declare it in params.json)",
                        pn->str);
        eparam *p = &rs->params[pi];
        if (p->is_number)
            return lerr(L, pn->line, "parameter \"%s\" is a number; if_param needs a code "
                                     "parameter", pn->str);
        uint64_t m = 0;
        for (const jv *c = pin->first; c; c = c->next) {
            bool found = false;
            for (size_t k = 0; c->kind == JV_STR && k < p->nvalues; k++)
                if (!strcmp(p->values[k], c->str)) {
                    m |= 1ull << k;
                    found = true;
                }
            if (!found)
                return lerr(L, c->line, "not a value of parameter \"%s\"", p->name);
        }
        rs->nodes[ni].if_param = (int16_t)pi;
        rs->nodes[ni].if_mask = m;
    }

    if (fact)
        return compile_leaf(L, v, ni) ? -1 : (*out = ni, 0);

    uint32_t tmp[256];
    size_t nk = 0;
    if (not) {
        rs->nodes[ni].kind = N_NOT;
        if (compile_node(L, not, depth + 1, &tmp[0]))
            return -1;
        nk = 1;
    } else {
        const jv *arr = all ? all : any;
        rs->nodes[ni].kind = all ? N_ALL : N_ANY;
        if (want_kind(L, arr, JV_ARR, all ? "\"all\"" : "\"any\""))
            return -1;
        if (arr->n == 0)
            return lerr(L, arr->line, "\"%s\" needs at least one criterion", all ? "all" : "any");
        if (arr->n > 256)
            return lerr(L, arr->line, "more than 256 criteria in one list");
        for (const jv *c = arr->first; c; c = c->next)
            if (compile_node(L, c, depth + 1, &tmp[nk++]))
                return -1;
    }
    if (rs->nkids + nk > rs->cap_kids) {
        rs->cap_kids = (rs->cap_kids + nk) * 2;
        rs->kids = xrealloc(rs->kids, rs->cap_kids * sizeof *rs->kids);
    }
    rs->nodes[ni].kids = (uint32_t)rs->nkids;
    rs->nodes[ni].nkids = (uint16_t)nk;
    memcpy(rs->kids + rs->nkids, tmp, nk * sizeof *tmp);
    rs->nkids += nk;
    *out = ni;
    return 0;
}

static bool key_ok(const char *s, bool upper)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!(isdigit(c) || c == '-' || (upper ? isupper(c) : islower(c))))
            return false;
    }
    return true;
}

static int load_params(ld *L, const jv *root)
{
    elig_ruleset *rs = L->rs;
    if (want_kind(L, root, JV_OBJ, "params.json"))
        return -1;
    static const char *const top[] = {"params", "note", NULL};
    if (check_keys(L, root, "params.json", top))
        return -1;
    const jv *ps = elig_jv_get(root, "params");
    if (!ps)
        return lerr(L, root->line, "params.json: missing \"params\"");
    if (want_kind(L, ps, JV_ARR, "\"params\""))
        return -1;
    rs->params = xcalloc(ps->n, sizeof *rs->params);
    static const char *const pkeys[] = {"name", "type", "values", "default", "description",
                                        "source", NULL};
    for (const jv *p = ps->first; p; p = p->next) {
        if (want_kind(L, p, JV_OBJ, "a parameter") || check_keys(L, p, "a parameter", pkeys))
            return -1;
        eparam *e = &rs->params[rs->nparams];
        const char *type, *src;
        if (req_str(L, p, "name", "parameter", &e->name) ||
            req_str(L, p, "type", "parameter", &type) ||
            req_str(L, p, "description", "parameter", &e->description) ||
            req_str(L, p, "source", "parameter", &src))
            return -1;
        if (elig_ruleset_param_index(rs, e->name) >= 0)
            return lerr(L, p->line, "parameter \"%s\" declared twice", e->name);
        const jv *def = elig_jv_get(p, "default");
        if (!def)
            return lerr(L, p->line, "parameter \"%s\": missing \"default\"", e->name);
        if (!strcmp(type, "number")) {
            e->is_number = true;
            if (def->kind != JV_NUM)
                return lerr(L, def->line, "parameter \"%s\": default must be a number", e->name);
            e->num = def->num;
        } else if (!strcmp(type, "code")) {
            const jv *vals = elig_jv_get(p, "values");
            if (!vals || vals->kind != JV_ARR || vals->n == 0 || vals->n > ELIG_MAX_CODES)
                return lerr(L, (vals ? vals : p)->line,
                            "parameter \"%s\": \"values\" must list the allowed codes", e->name);
            for (const jv *c = vals->first; c; c = c->next) {
                if (c->kind != JV_STR)
                    return lerr(L, c->line, "parameter values must be strings");
                e->values[e->nvalues++] = rs_str(rs, c->str);
            }
            if (def->kind != JV_STR)
                return lerr(L, def->line, "parameter \"%s\": default must be a string", e->name);
            bool found = false;
            for (size_t k = 0; k < e->nvalues; k++)
                if (!strcmp(e->values[k], def->str)) {
                    e->code = k;
                    found = true;
                }
            if (!found)
                return lerr(L, def->line, "parameter \"%s\": default is not one of its values",
                            e->name);
        } else {
            return lerr(L, p->line, "parameter \"%s\": type must be \"number\" or \"code\"",
                        e->name);
        }
        rs->nparams++;
    }
    return 0;
}

/* A review flag (is_note false) or a note (true): id, message, when. Flags and notes share
 * one id space; an id is either a flag or a note everywhere. */
static int load_flag(ld *L, const jv *item, bool is_note);

static int load_flag_or_timing(ld *L, const jv *item, bool is_flag)
{
    elig_ruleset *rs = L->rs;
    static const char *const tkeys[] = {"urgency", "reason", "when", "source", "note", NULL};
    if (is_flag)
        return load_flag(L, item, false);
    const char *what = "a timing rule";
    if (want_kind(L, item, JV_OBJ, what) || check_keys(L, item, what, tkeys))
        return -1;
    const jv *when = elig_jv_get(item, "when");
    if (!when)
        return lerr(L, item->line, "%s needs \"when\"", what);
    const char *src;
    if (opt_str(L, item, "source", what, &src))
        return -1;
    uint32_t node;
    {
        const char *urg, *reason;
        if (req_str(L, item, "urgency", what, &urg) || req_str(L, item, "reason", what, &reason))
            return -1;
        int u = !strcmp(urg, "now") ? ELIG_URGENCY_NOW : !strcmp(urg, "soon") ? ELIG_URGENCY_SOON
                : !strcmp(urg, "review") ? ELIG_URGENCY_REVIEW : -1;
        if (u < 0)
            return lerr(L, elig_jv_get(item, "urgency")->line,
                        "urgency must be \"now\", \"soon\" or \"review\"");
        if (compile_node(L, when, 0, &node))
            return -1;
        rs->tims = xrealloc(rs->tims, (rs->ntims + 1) * sizeof *rs->tims);
        rs->tims[rs->ntims++] = (etiming){(uint8_t)u, node, reason};
    }
    return 0;
}

static bool id_ok(const char *id)
{
    bool ok = *id != 0;
    for (const char *c = id; *c; c++)
        ok &= islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '_';
    return ok;
}

static int load_flag(ld *L, const jv *item, bool is_note)
{
    elig_ruleset *rs = L->rs;
    static const char *const fkeys[] = {"id", "message", "when", "source", "note", NULL};
    const char *what = is_note ? "a note" : "a review flag";
    if (want_kind(L, item, JV_OBJ, what) || check_keys(L, item, what, fkeys))
        return -1;
    const jv *when = elig_jv_get(item, "when");
    if (!when)
        return lerr(L, item->line, "%s needs \"when\"", what);
    const char *src, *id, *msg;
    if (opt_str(L, item, "source", what, &src) || req_str(L, item, "id", what, &id) ||
        req_str(L, item, "message", what, &msg))
        return -1;
    if (!id_ok(id))
        return lerr(L, elig_jv_get(item, "id")->line, "%s id \"%s\" must be lower-case letters, digits, _",
                    is_note ? "note" : "review flag", id);
    uint32_t node;
    if (compile_node(L, when, 0, &node))
        return -1;
    size_t fid = rs->nflag_ids;
    for (size_t i = 0; i < rs->nflag_ids; i++)
        if (!strcmp(rs->flag_ids[i], id))
            fid = i;
    if (fid == rs->nflag_ids) {
        if (rs->nflag_ids == ELIG_MAX_FLAGS)
            return lerr(L, item->line, "more than %d review flag and note ids", ELIG_MAX_FLAGS);
        rs->flag_is_note[rs->nflag_ids] = is_note;
        rs->flag_ids[rs->nflag_ids++] = id;
    } else if (rs->flag_is_note[fid] != is_note) {
        return lerr(L, elig_jv_get(item, "id")->line, "\"%s\" is a %s elsewhere: ids of review flags "
                    "and notes must differ", id, is_note ? "review flag" : "note");
    }
    rs->flags = xrealloc(rs->flags, (rs->nflags + 1) * sizeof *rs->flags);
    rs->flags[rs->nflags++] = (eflag){.id = (uint16_t)fid, .uid = 0, .node = node, .message = msg};
    return 0;
}

/* "source" of a criteria or consult file: document, revision (YYYY-MM[-DD]), http(s) url,
 * optional reference (our provenance) and note. */
static int load_source(ld *L, const jv *src, const char **doc, const char **rev, const char **url,
                       const char **ref)
{
    static const char *const skeys[] = {"document", "revision", "url", "reference", "note", NULL};
    if (want_kind(L, src, JV_OBJ, "\"source\"") || check_keys(L, src, "\"source\"", skeys) ||
        req_str(L, src, "document", "source", doc) || req_str(L, src, "revision", "source", rev) ||
        req_str(L, src, "url", "source", url) || opt_str(L, src, "reference", "source", ref))
        return -1;
    int64_t d;
    if (fhir_clock_parse_date(*rev, &d) != 0 || (strlen(*rev) != 7 && strlen(*rev) != 10))
        return lerr(L, elig_jv_get(src, "revision")->line,
                    "source revision must be a date \"YYYY-MM\" or \"YYYY-MM-DD\"");
    if (strncmp(*url, "https://", 8) && strncmp(*url, "http://", 7))
        return lerr(L, elig_jv_get(src, "url")->line, "source url must be an http(s) URL");
    return 0;
}

/* A consult file: when to refer for a CAR T consultation, independent of the label gates. */
static int load_consult(ld *L, const jv *root)
{
    elig_ruleset *rs = L->rs;
    static const char *const top[] = {"id", "kind", "description", "applies_to", "source", "triggers",
                                      "note", NULL};
    static const char *const tkeys[] = {"id", "recommendation", "when", "reason", "source", "note", NULL};
    if (check_keys(L, root, "a consult file", top))
        return -1;
    econsult c;
    memset(&c, 0, sizeof c);
    c.file = L->file;
    if (req_str(L, root, "id", "consult file", &c.key) ||
        req_str(L, root, "description", "consult file", &c.description))
        return -1;
    if (strncmp(c.key, "consult:", 8) || !key_ok(c.key + 8, true))
        return lerr(L, elig_jv_get(root, "id")->line, "consult id \"%s\" must be \"consult:KEY\" "
                    "(upper-case letters, digits, '-')", c.key);
    for (size_t i = 0; i < rs->nconsults; i++)
        if (!strcmp(rs->consults[i].key, c.key))
            return lerr(L, elig_jv_get(root, "id")->line, "consult \"%s\" already defined in %s", c.key,
                        rs->consults[i].file);
    const jv *src = elig_jv_get(root, "source"), *app = elig_jv_get(root, "applies_to"),
             *trig = elig_jv_get(root, "triggers");
    if (!src)
        return lerr(L, root->line, "missing \"source\" (document, revision, url)");
    if (load_source(L, src, &c.src_doc, &c.src_rev, &c.src_url, &c.src_ref))
        return -1;
    if (!app)
        return lerr(L, root->line, "missing \"applies_to\" (which patients the triggers are about)");
    if (compile_node(L, app, 0, &c.applies))
        return -1;
    if (!trig || trig->kind != JV_ARR || !trig->n)
        return lerr(L, (trig ? trig : root)->line, "\"triggers\" must list at least one trigger");
    c.trig0 = (uint32_t)rs->ntrigs;
    for (const jv *t = trig->first; t; t = t->next) {
        etrig e;
        memset(&e, 0, sizeof e);
        const char *rec;
        if (want_kind(L, t, JV_OBJ, "a trigger") || check_keys(L, t, "a trigger", tkeys) ||
            req_str(L, t, "id", "trigger", &e.id) || req_str(L, t, "recommendation", "trigger", &rec) ||
            req_str(L, t, "reason", "trigger", &e.reason) || req_str(L, t, "source", "trigger", &e.source))
            return -1;
        if (!id_ok(e.id))
            return lerr(L, elig_jv_get(t, "id")->line, "trigger id \"%s\" must be lower-case letters, digits, _",
                        e.id);
        for (size_t i = 0; i < rs->ntrigs; i++)
            if (!strcmp(rs->trigs[i].id, e.id))
                return lerr(L, elig_jv_get(t, "id")->line, "trigger \"%s\" already defined", e.id);
        if (!strcmp(rec, "refer_now"))
            e.rec = ELIG_CONSULT_NOW;
        else if (!strcmp(rec, "early_consult"))
            e.rec = ELIG_CONSULT_EARLY;
        else
            return lerr(L, elig_jv_get(t, "recommendation")->line,
                        "recommendation must be \"refer_now\" or \"early_consult\"");
        const jv *when = elig_jv_get(t, "when");
        if (!when)
            return lerr(L, t->line, "a trigger needs \"when\"");
        if (compile_node(L, when, 0, &e.node))
            return -1;
        rs->trigs = xrealloc(rs->trigs, (rs->ntrigs + 1) * sizeof *rs->trigs);
        rs->trigs[rs->ntrigs++] = e;
    }
    c.ntrig = (uint32_t)rs->ntrigs - c.trig0;
    rs->consults = xrealloc(rs->consults, (rs->nconsults + 1) * sizeof *rs->consults);
    rs->consults[rs->nconsults++] = c;
    return 0;
}

static int load_criteria(ld *L, const jv *root)
{
    elig_ruleset *rs = L->rs;
    static const char *const top[] = {
        "id", "product", "indication", "diseases", "approval", "source", "effective_from",
        "effective_until", "status", "requires", "review_flags", "notes", "timing", "note", NULL};
    if (want_kind(L, root, JV_OBJ, "a criteria file"))
        return -1;
    const jv *kind = elig_jv_get(root, "kind");
    if (kind) {
        if (kind->kind != JV_STR || strcmp(kind->str, "consult"))
            return lerr(L, kind->line, "kind must be \"consult\" (criteria files have no kind)");
        return load_consult(L, root);
    }
    if (check_keys(L, root, "a criteria file", top))
        return -1;
    eind ind;
    memset(&ind, 0, sizeof ind);
    ind.file = L->file;
    const char *id;
    if (req_str(L, root, "id", "criteria", &id))
        return -1;
    const jv *prod = elig_jv_get(root, "product"), *indic = elig_jv_get(root, "indication"),
             *src = elig_jv_get(root, "source"), *req = elig_jv_get(root, "requires");
    if (!prod)
        return lerr(L, root->line, "missing \"product\"");
    if (!indic)
        return lerr(L, root->line, "missing \"indication\"");
    if (!src)
        return lerr(L, root->line, "missing \"source\" (document, revision, url): every "
                                   "criteria file cites the label it encodes");
    if (!req)
        return lerr(L, root->line, "missing \"requires\"");
    static const char *const pkeys[] = {"key", "generic", "brand", NULL};
    static const char *const ikeys[] = {"key", "description", NULL};
    if (want_kind(L, prod, JV_OBJ, "\"product\"") || check_keys(L, prod, "\"product\"", pkeys) ||
        req_str(L, prod, "key", "product", &ind.product) ||
        req_str(L, prod, "generic", "product", &ind.generic) ||
        req_str(L, prod, "brand", "product", &ind.brand))
        return -1;
    if (want_kind(L, indic, JV_OBJ, "\"indication\"") ||
        check_keys(L, indic, "\"indication\"", ikeys) ||
        req_str(L, indic, "key", "indication", &ind.indication) ||
        req_str(L, indic, "description", "indication", &ind.description))
        return -1;
    if (load_source(L, src, &ind.src_doc, &ind.src_rev, &ind.src_url, &ind.src_ref))
        return -1;
    if (!key_ok(ind.product, false))
        return lerr(L, elig_jv_get(prod, "key")->line, "product key \"%s\" must be lower-case "
                                                  "letters, digits and '-'", ind.product);
    if (!key_ok(ind.indication, true))
        return lerr(L, elig_jv_get(indic, "key")->line, "indication key \"%s\" must be upper-case "
                                                   "letters, digits and '-'", ind.indication);
    char key[256];
    snprintf(key, sizeof key, "%s:%s", ind.product, ind.indication);
    if (strcmp(key, id))
        return lerr(L, elig_jv_get(root, "id")->line, "id \"%s\" must be \"%s\" (product:indication)",
                    id, key);
    ind.key = id;
    for (size_t i = 0; i < rs->ninds; i++)
        if (!strcmp(rs->inds[i].key, id))
            return lerr(L, elig_jv_get(root, "id")->line, "indication \"%s\" already defined in %s", id,
                        rs->inds[i].file);
    const jv *dis = elig_jv_get(root, "diseases");
    if (!dis || dis->kind != JV_ARR || dis->n == 0)
        return lerr(L, (dis ? dis : root)->line,
                    "\"diseases\" must list the disease concepts the indication covers");
    for (const jv *c = dis->first; c; c = c->next)
        if (c->kind != JV_STR || !vocab_code_valid("diseases", c->str))
            return lerr(L, c->line, "\"%s\" is not a disease concept (mappings/FACTS.md)",
                        c->kind == JV_STR ? c->str : elig_jv_kind_name(c->kind));
    const jv *appr = elig_jv_get(root, "approval");
    if (appr && (appr->kind != JV_STR ||
                 (strcmp(appr->str, "regular") && strcmp(appr->str, "accelerated"))))
        return lerr(L, appr->line, "approval must be \"regular\" or \"accelerated\"");
    if (parse_window(L, root, &ind.from, &ind.until))
        return -1;
    const jv *status = elig_jv_get(root, "status");
    if (status) {
        if (status->kind != JV_STR || strcmp(status->str, "pending"))
            return lerr(L, status->line, "status must be \"pending\" (a product whose label is not "
                                         "verified yet) or absent");
        if (elig_jv_get(root, "effective_from"))
            return lerr(L, elig_jv_get(root, "effective_from")->line,
                        "a pending indication has no effective_from: set it when the label is verified "
                        "and remove \"status\"");
        ind.pending = true;
    }
    /* requires: the root may not carry its own dates or parameter gate */
    if (req->kind == JV_OBJ && (elig_jv_get(req, "effective_from") || elig_jv_get(req, "effective_until") ||
                                elig_jv_get(req, "if_param")))
        return lerr(L, req->line, "put effective dates of a whole indication at file level");
    if (compile_node(L, req, 0, &ind.root))
        return -1;
    {
        const enode *r = &rs->nodes[ind.root];
        if (r->kind == N_ALL)
            for (uint32_t k = 0; k < r->nkids; k++)
                if (!rs->nodes[rs->kids[r->kids + k]].label)
                    return lerr(L, rs->nodes[rs->kids[r->kids + k]].line,
                                "every top-level gate of \"requires\" needs a \"label\" in "
                                "plain words");
    }
    const jv *flags = elig_jv_get(root, "review_flags"), *timing = elig_jv_get(root, "timing");
    ind.flag0 = (uint32_t)rs->nflags;
    if (flags) {
        if (want_kind(L, flags, JV_ARR, "\"review_flags\""))
            return -1;
        for (const jv *c = flags->first; c; c = c->next)
            if (load_flag_or_timing(L, c, true))
                return -1;
    }
    const jv *notes = elig_jv_get(root, "notes");
    if (notes) {
        if (want_kind(L, notes, JV_ARR, "\"notes\""))
            return -1;
        for (const jv *c = notes->first; c; c = c->next)
            if (load_flag(L, c, true))
                return -1;
    }
    ind.nflags = (uint32_t)rs->nflags - ind.flag0;
    ind.tim0 = (uint32_t)rs->ntims;
    if (timing) {
        if (want_kind(L, timing, JV_ARR, "\"timing\""))
            return -1;
        for (const jv *c = timing->first; c; c = c->next)
            if (load_flag_or_timing(L, c, false))
                return -1;
    }
    ind.ntims = (uint32_t)rs->ntims - ind.tim0;
    if (rs->ninds == ELIG_MAX_INDICATIONS)
        return lerr(L, root->line, "more than %d indications", ELIG_MAX_INDICATIONS);
    rs->inds = xrealloc(rs->inds, (rs->ninds + 1) * sizeof *rs->inds);
    rs->inds[rs->ninds++] = ind;
    return 0;
}

/* Structural signature of a criterion (everything evaluation depends on). */
static void signature(const elig_ruleset *rs, uint32_t ni, fhir_buf *b)
{
    const enode *n = &rs->nodes[ni];
    fhir_buf_printf(b, "(%d %d %d %d %d %ld %ld %.17g %llx %d %d %llx", n->kind, n->op,
                    n->if_unknown, n->kind == N_LEAF ? (int)n->fact : -1, n->num_param,
                    (long)n->from, (long)n->until, n->num, (unsigned long long)n->mask,
                    n->if_param, n->nkids, (unsigned long long)n->if_mask);
    if (n->kind == N_LEAF)
        fhir_buf_printf(b, " %s", rs->facts[n->fact].name);
    for (uint32_t k = 0; k < n->nkids; k++)
        signature(rs, rs->kids[n->kids + k], b);
    fhir_buf_putc(b, ')');
}

static void dedupe_flags(elig_ruleset *rs)
{
    char **sig = xcalloc(rs->nflags, sizeof *sig);
    for (size_t i = 0; i < rs->nflags; i++) {
        fhir_buf b;
        fhir_buf_init(&b, 0);
        signature(rs, rs->flags[i].node, &b);
        sig[i] = fhir_buf_steal(&b, NULL);
        size_t j;
        for (j = 0; j < i; j++)
            if (!strcmp(sig[i], sig[j]))
                break;
        rs->flags[i].uid = j < i ? rs->flags[j].uid : (uint16_t)rs->nuflags++;
    }
    for (size_t i = 0; i < rs->nflags; i++)
        free(sig[i]);
    free(sig);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static bool is_params_file(const char *name)
{
    return !strcmp(base_name(name), "params.json");
}

static int cmp_src(const void *a, const void *b)
{
    const elig_source *x = *(const elig_source *const *)a, *y = *(const elig_source *const *)b;
    return strcmp(base_name(x->name), base_name(y->name));
}

static int cmp_ind(const void *a, const void *b)
{
    return strcmp(((const eind *)a)->key, ((const eind *)b)->key);
}

static const elig_ruleset *sort_rs;
static int cmp_fact(const void *a, const void *b)
{
    return strcmp(sort_rs->facts[*(const uint8_t *)a].name,
                  sort_rs->facts[*(const uint8_t *)b].name);
}
static int cmp_flag(const void *a, const void *b)
{
    return strcmp(sort_rs->flag_ids[*(const uint8_t *)a], sort_rs->flag_ids[*(const uint8_t *)b]);
}

elig_ruleset *elig_load_sources(const elig_source *src, size_t n, fhir_error *err)
{
    fhir_error_clear(err);
    elig_ruleset *rs = xcalloc(1, sizeof *rs);
    const elig_source **sorted = xcalloc(n, sizeof *sorted);
    for (size_t i = 0; i < n; i++)
        sorted[i] = &src[i];
    qsort(sorted, n, sizeof *sorted, cmp_src);

    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        abort();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    int rc = 0;
    size_t ncriteria = 0;
    /* parameters first (criteria refer to them), then the criteria in name order */
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        for (size_t i = 0; i < n && rc == 0; i++) {
            const elig_source *s = sorted[i];
            if (is_params_file(s->name) != (pass == 0))
                continue;
            ld L = {rs, rs_str(rs, s->name), err};
            if (pass == 0 && rs->params) {
                rc = lerr(&L, 1, "more than one params.json");
                break;
            }
            if (s->len > ELIG_MAX_FILE_BYTES) {
                rc = lerr(&L, 1, "file larger than %u bytes", ELIG_MAX_FILE_BYTES);
                break;
            }
            jv *root = elig_jv_parse(L.file, s->data, s->len, err);
            if (!root) {
                rc = -1;
                break;
            }
            rc = pass == 0 ? load_params(&L, root) : load_criteria(&L, root);
            elig_jv_free(root);
            ncriteria += pass == 1;
        }
    }
    if (rc == 0 && ncriteria == 0)
        rc = fhir_error_set(err, "no criteria files");
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            const elig_source *s = sorted[i];
            char head[64];
            int hl = snprintf(head, sizeof head, "%zu\n", s->len);
            EVP_DigestUpdate(md, base_name(s->name), strlen(base_name(s->name)) + 1);
            EVP_DigestUpdate(md, head, (size_t)hl);
            EVP_DigestUpdate(md, s->data, s->len);
        }
        unsigned char d[32];
        unsigned int dl = 0;
        EVP_DigestFinal_ex(md, d, &dl);
        for (unsigned i = 0; i < 32; i++)
            snprintf(rs->files_hash + 2 * i, 3, "%02x", d[i]);
    }
    EVP_MD_CTX_free(md);
    free(sorted);
    if (rc) {
        elig_ruleset_free(rs);
        return NULL;
    }
    if (rs->ninds) /* qsort's pointer must not be NULL, even for no elements */
        qsort(rs->inds, rs->ninds, sizeof *rs->inds, cmp_ind);
    for (size_t i = 0; i < rs->nfacts; i++)
        rs->fact_order[i] = (uint8_t)i;
    for (size_t i = 0; i < rs->nflag_ids; i++)
        rs->flag_order[i] = (uint8_t)i;
    sort_rs = rs;
    if (rs->nfacts)
        qsort(rs->fact_order, rs->nfacts, 1, cmp_fact);
    if (rs->nflag_ids)
        qsort(rs->flag_order, rs->nflag_ids, 1, cmp_flag);
    sort_rs = NULL;
    elig_ruleset_apply_params(rs);
    dedupe_flags(rs);
    elig_ruleset_compute_hash(rs);
    return rs;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

elig_ruleset *elig_load_dir(const char *dir, fhir_error *err)
{
    DIR *d = opendir(dir);
    if (!d) {
        fhir_error_set(err, "%s: cannot open criteria directory: %s", dir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json") || e->d_name[0] == '.')
            continue;
        names = xrealloc(names, (n + 1) * sizeof *names);
        names[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    elig_source *src = xcalloc(n, sizeof *src);
    elig_ruleset *rs = NULL;
    size_t loaded = 0;
    int bad = 0;
    for (size_t i = 0; i < n && !bad; i++) {
        size_t pl = strlen(dir) + strlen(names[i]) + 2;
        char *path = xmalloc(pl);
        snprintf(path, pl, "%s/%s", dir, names[i]);
        src[i].name = path;
        loaded++;
        FILE *f = fopen(path, "rb");
        if (!f) {
            fhir_error_set(err, "%s: %s", path, strerror(errno));
            bad = 1;
            break;
        }
        char *buf = xmalloc(ELIG_MAX_FILE_BYTES + 1);
        size_t len = fread(buf, 1, ELIG_MAX_FILE_BYTES + 1, f);
        int ferr = ferror(f);
        fclose(f);
        src[i].data = buf;
        src[i].len = len;
        if (ferr) {
            fhir_error_set(err, "%s: read error", path);
            bad = 1;
        } else if (len > ELIG_MAX_FILE_BYTES) {
            fhir_error_set(err, "%s:1: file larger than %u bytes", path, ELIG_MAX_FILE_BYTES);
            bad = 1;
        }
    }
    if (!bad)
        rs = elig_load_sources(src, n, err);
    for (size_t i = 0; i < loaded; i++) {
        free((char *)src[i].name);
        free((char *)src[i].data);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(src);
    return rs;
}
