/* elig_load — criteria files -> compiled rule set: JSON read by fhir_jsonfile, validation
 * against the fact vocabulary, compilation, FILE:LINE errors. See elig.h and
 * conf/criteria/README.md for the file format. */
#include "elig_int.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>

#include <openssl/evp.h>

#include "fhir_clock.h"
#include "fhir_jsonfile.h"

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
        rs->strs = fhir_xrealloc(rs->strs, rs->cap_strs * sizeof *rs->strs);
    }
    char *d = fhir_xstrdup(s);
    rs->strs[rs->nstrs++] = d;
    return d;
}

/* The provenance entry of a criteria file, written once here for every screen JSON. */
static const char *load_prov(elig_ruleset *rs, const char *key, const char *file, const char *ref)
{
    fhir_buf b;
    fhir_buf_init(&b, 0);
    elig_provenance_json(&b, key, file, ref);
    const char *r = rs_str(rs, fhir_buf_cstr(&b));
    fhir_buf_free(&b);
    return r;
}

/* ======================================================================================
 * Loading and validation.
 * ====================================================================================== */

typedef struct ld {
    elig_ruleset *rs;
    const char *file;      /* owned by rs */
    fhir_jsonfile *f;      /* the file being read: its tree and its errors */
} ld;

/* An error at node `at` (its line by the rule of fhir_jsonfile.h); returns -1. */
#define lerr(L, at, ...) fhir_jsonfile_error((L)->f, (at), __VA_ARGS__)
#define lerr_line(L, line, ...) fhir_jsonfile_error_line((L)->f, (size_t)(line), __VA_ARGS__)

/* v must be an object whose keys are all in keys (NULL-terminated). */
static int want_obj(ld *L, const fhir_node *v, const char *what, const char *const *keys)
{
    if (fhir_jsonfile_want(L->f, v, FHIR_OBJECT, what) || fhir_jsonfile_keys(L->f, v, what, keys))
        return -1;
    return 0;
}

/* Required non-empty string member, copied into the rule set. */
static int req_str(ld *L, const fhir_node *obj, const char *key, const char *what, const char **out)
{
    const char *s;
    if (fhir_jsonfile_str(L->f, obj, key, what, FHIR_JSONFILE_REQUIRED | FHIR_JSONFILE_NONEMPTY,
                          &s) < 0)
        return -1;
    *out = rs_str(L->rs, s);
    return 0;
}

/* Optional non-empty string member (NULL when absent), copied into the rule set. */
static int opt_str(ld *L, const fhir_node *obj, const char *key, const char *what, const char **out)
{
    const char *s = NULL;
    if (fhir_jsonfile_str(L->f, obj, key, what, FHIR_JSONFILE_NONEMPTY, &s) < 0)
        return -1;
    *out = s ? rs_str(L->rs, s) : NULL;
    return 0;
}

static int parse_day(ld *L, const fhir_node *v, const char *what, int32_t *out)
{
    int64_t d;
    if (v->kind != FHIR_STRING || strlen(v->text) != 10 || fhir_clock_parse_date(v->text, &d) != 0)
        return lerr(L, v, "%s must be a date \"YYYY-MM-DD\"", what);
    *out = (int32_t)d;
    return 0;
}

static int parse_window(ld *L, const fhir_node *obj, int32_t *from, int32_t *until)
{
    const fhir_node *f = fhir_node_get(obj, "effective_from");
    const fhir_node *u = fhir_node_get(obj, "effective_until");
    *from = INT32_MIN;
    *until = INT32_MAX;
    if (f && f->kind != FHIR_NULL && parse_day(L, f, "effective_from", from))
        return -1;
    if (u && u->kind != FHIR_NULL && parse_day(L, u, "effective_until", until))
        return -1;
    if (*from >= *until)
        return lerr(L, u ? u : obj, "effective_until must be after effective_from");
    return 0;
}

static int fact_index(ld *L, const fhir_node *at, const char *name, int *out)
{
    elig_ruleset *rs = L->rs;
    for (size_t i = 0; i < rs->nfacts; i++)
        if (!strcmp(rs->facts[i].name, name)) {
            *out = (int)i;
            return 0;
        }
    map_fact_type t;
    if (!vocab_lookup(name, &t))
        return lerr(L, at, "unknown fact \"%s\" (see mappings/FACTS.md)", name);
    if (rs->nfacts == ELIG_MAX_FACTS)
        return lerr(L, at, "more than %d distinct facts", ELIG_MAX_FACTS);
    rs->facts[rs->nfacts].name = rs_str(rs, name);
    rs->facts[rs->nfacts].type = t;
    rs->facts[rs->nfacts].profile_ix = (int8_t)map_fact_index(name); /* not per patient */
    *out = (int)rs->nfacts++;
    return 0;
}

static int code_bit(ld *L, const fhir_node *at, int fact, const char *code, uint64_t *mask)
{
    efact *f = &L->rs->facts[fact];
    if (!vocab_code_valid(f->name, code))
        return lerr(L, at, "\"%s\" is not a valid value of fact \"%s\"", code, f->name);
    for (size_t i = 0; i < f->ncodes; i++)
        if (!strcmp(f->codes[i], code)) {
            *mask |= 1ull << i;
            return 0;
        }
    if (f->ncodes == ELIG_MAX_CODES)
        return lerr(L, at, "more than %d distinct values of fact \"%s\"", ELIG_MAX_CODES,
                    f->name);
    f->codes[f->ncodes] = rs_str(L->rs, code);
    *mask |= 1ull << f->ncodes++;
    return 0;
}


static uint32_t node_alloc(elig_ruleset *rs)
{
    if (rs->nnodes == rs->cap_nodes) {
        rs->cap_nodes = rs->cap_nodes ? rs->cap_nodes * 2 : 256;
        rs->nodes = fhir_xrealloc(rs->nodes, rs->cap_nodes * sizeof *rs->nodes);
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
static int compile_value(ld *L, uint32_t ni, const fhir_node *leaf, const fhir_node *v)
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
            return lerr(L, v, "operator \"%s\" takes no value", op_text(op));
        rs->nodes[ni].value_text = NULL;
        return 0;
    }
    if (!v)
        return lerr(L, leaf, "operator \"%s\" needs a \"value\"", op_text(op));
    if (t == MAP_FACT_NUMBER) {
        if (v->kind == FHIR_OBJECT) {
            const fhir_node *p = fhir_node_get(v, "param");
            if (!p || v->len != 1 || p->kind != FHIR_STRING)
                return lerr(L, v, "a parameter value is written {\"param\": \"name\"}");
            int pi = elig_ruleset_param_index(rs, p->text);
            if (pi < 0)
                return lerr(L, p, "unknown parameter \"%s\" (declare it in params.json)",
                            p->text);
            if (!rs->params[pi].is_number)
                return lerr(L, p, "parameter \"%s\" is not a number", p->text);
            n = &rs->nodes[ni];
            n->num_param = (int16_t)pi;
            n->num = rs->params[pi].num;
            snprintf(text, sizeof text, "%s", p->text);
        } else if (v->kind == FHIR_NUMBER) {
            if (!fhir_node_double(v, &n->num) || !isfinite(n->num))
                return lerr(L, v, "number %s out of range", v->text);
            snprintf(text, sizeof text, "%s", v->text);
        } else {
            return lerr(L, v, "type mismatch: fact \"%s\" is a number, value is %s",
                        fname, fhir_jsonfile_kind_a(v->kind));
        }
    } else if (t == MAP_FACT_CODE || t == MAP_FACT_SET) {
        uint64_t mask = 0;
        if (v->kind == FHIR_STRING) {
            if (code_bit(L, v, fact, v->text, &mask))
                return -1;
            snprintf(text, sizeof text, "%s", v->text);
        } else if (v->kind == FHIR_ARRAY && v->len > 0) {
            size_t tl = 0;
            for (const fhir_node *c = v->child; c; c = c->next) {
                if (c->kind != FHIR_STRING)
                    return lerr(L, c,
                                "type mismatch: values of fact \"%s\" are codes (strings), "
                                "not %s", fname, fhir_jsonfile_kind_a(c->kind));
                if (code_bit(L, c, fact, c->text, &mask))
                    return -1;
                int w = snprintf(text + tl, sizeof text - tl, "%s%s", tl ? "," : "", c->text);
                if (w > 0 && (size_t)w < sizeof text - tl)
                    tl += (size_t)w;
            }
        } else {
            return lerr(L, v,
                        "type mismatch: fact \"%s\" is a %s, value must be a code or a "
                        "non-empty array of codes", fname, type_name(t));
        }
        n = &rs->nodes[ni];
        n->mask = mask;
    }
    rs->nodes[ni].value_text = rs_str(rs, text);
    return 0;
}

static int compile_node(ld *L, const fhir_node *v, int depth, uint32_t *out);

static int compile_leaf(ld *L, const fhir_node *v, uint32_t ni)
{
    elig_ruleset *rs = L->rs;
    const fhir_node *f = fhir_node_get(v, "fact"), *o = fhir_node_get(v, "op");
    const fhir_node *val = fhir_node_get(v, "value");
    if (f->kind != FHIR_STRING)
        return lerr(L, f, "\"fact\" must be a string");
    int fact = 0;
    if (fact_index(L, f, f->text, &fact))
        return -1;
    if (!o)
        return lerr(L, v, "criterion on \"%s\" has no \"op\"", f->text);
    if (o->kind != FHIR_STRING)
        return lerr(L, o, "\"op\" must be a string");
    int op = -1;
    for (size_t i = 0; i < sizeof op_names / sizeof op_names[0]; i++)
        if (!strcmp(op_names[i].name, o->text))
            op = op_names[i].op;
    if (op < 0)
        return lerr(L, o,
                    "unknown operator \"%s\" (use < <= > >= == != is_true is_false in not_in "
                    "any_of all_of none_of)", o->text);
    map_fact_type t = rs->facts[fact].type;
    /* sugar: bool == true/false, code == / != "x" */
    if (t == MAP_FACT_BOOL && (op == OP_EQ || op == OP_NE)) {
        if (!val || val->kind != FHIR_BOOL)
            return lerr(L, val ? val : o,
                        "type mismatch: fact \"%s\" is a bool, compare with true or false",
                        f->text);
        op = ((op == OP_EQ) == val->boolean) ? OP_TRUE : OP_FALSE;
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
        return lerr(L, o, "type mismatch: operator \"%s\" does not apply to %s fact \"%s\"",
                    o->text, type_name(t), f->text);
    enode *n = &rs->nodes[ni];
    n->kind = N_LEAF;
    n->fact = (uint16_t)fact;
    n->op = (uint8_t)op;
    if (compile_value(L, ni, v, val))
        return -1;
    const fhir_node *iu = fhir_node_get(v, "if_unknown");
    if (iu) {
        if (iu->kind != FHIR_BOOL)
            return lerr(L, iu, "\"if_unknown\" must be true or false");
        rs->nodes[ni].if_unknown = iu->boolean ? TT : TF;
    }
    return 0;
}

static int compile_node(ld *L, const fhir_node *v, int depth, uint32_t *out)
{
    elig_ruleset *rs = L->rs;
    if (depth > 32)
        return lerr(L, v, "criteria nested deeper than 32");
    if (want_obj(L, v, "a criterion", node_keys))
        return -1;
    const fhir_node *all = fhir_node_get(v, "all"), *any = fhir_node_get(v, "any");
    const fhir_node *not = fhir_node_get(v, "not"), *fact = fhir_node_get(v, "fact");
    int forms = (all != NULL) + (any != NULL) + (not != NULL) + (fact != NULL);
    if (forms != 1)
        return lerr(L, v, "a criterion needs exactly one of \"all\", \"any\", \"not\", "
                                "\"fact\"");
    if (!fact &&
        (fhir_node_get(v, "op") || fhir_node_get(v, "value") || fhir_node_get(v, "if_unknown")))
        return lerr(L, v, "\"op\", \"value\" and \"if_unknown\" belong to a fact criterion");
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
            return lerr(L, fhir_node_get(v, "role"),
                        "unknown role \"%s\" (disease age lines prior_therapy disease_status "
                        "exclusion transplant other)", role);
    }
    const fhir_node *note = fhir_node_get(v, "note");
    if (note && note->kind != FHIR_STRING)
        return lerr(L, note, "\"note\" must be a string");
    int32_t from, until;
    if (parse_window(L, v, &from, &until))
        return -1;
    rs->nodes[ni].label = label;
    rs->nodes[ni].role = role;
    rs->nodes[ni].from = from;
    rs->nodes[ni].until = until;

    const fhir_node *ip = fhir_node_get(v, "if_param");
    if (ip) {
        const fhir_node *pn = fhir_node_get(ip, "name"), *pin = fhir_node_get(ip, "in");
        if (ip->kind != FHIR_OBJECT || !pn || pn->kind != FHIR_STRING || !pin ||
            pin->kind != FHIR_ARRAY || ip->len != 2)
            return lerr(L, ip, "\"if_param\" is written {\"name\": \"param\", \"in\": "
                                     "[\"value\", ...]}");
        int pi = elig_ruleset_param_index(rs, pn->text);
        if (pi < 0)
            return lerr(L, pn, "unknown parameter \"%s\" (declare it in params.json)",
                        pn->text);
        eparam *p = &rs->params[pi];
        if (p->is_number)
            return lerr(L, pn, "parameter \"%s\" is a number; if_param needs a code "
                                     "parameter", pn->text);
        uint64_t m = 0;
        for (const fhir_node *c = pin->child; c; c = c->next) {
            bool found = false;
            for (size_t k = 0; c->kind == FHIR_STRING && k < p->nvalues; k++)
                if (!strcmp(p->values[k], c->text)) {
                    m |= 1ull << k;
                    found = true;
                }
            if (!found)
                return lerr(L, c, "not a value of parameter \"%s\"", p->name);
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
        const fhir_node *arr = all ? all : any;
        rs->nodes[ni].kind = all ? N_ALL : N_ANY;
        if (fhir_jsonfile_want(L->f, arr, FHIR_ARRAY, all ? "\"all\"" : "\"any\""))
            return -1;
        if (arr->len == 0)
            return lerr(L, arr, "\"%s\" needs at least one criterion", all ? "all" : "any");
        if (arr->len > 256)
            return lerr(L, arr, "more than 256 criteria in one list");
        for (const fhir_node *c = arr->child; c; c = c->next)
            if (compile_node(L, c, depth + 1, &tmp[nk++]))
                return -1;
    }
    if (rs->nkids + nk > rs->cap_kids) {
        rs->cap_kids = (rs->cap_kids + nk) * 2;
        rs->kids = fhir_xrealloc(rs->kids, rs->cap_kids * sizeof *rs->kids);
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

static int load_params(ld *L, const fhir_node *root)
{
    elig_ruleset *rs = L->rs;
    if (fhir_jsonfile_want(L->f, root, FHIR_OBJECT, "params.json"))
        return -1;
    static const char *const top[] = {"params", "note", NULL};
    if (fhir_jsonfile_keys(L->f, root, "params.json", top))
        return -1;
    const fhir_node *ps = fhir_node_get(root, "params");
    if (!ps)
        return lerr(L, root, "params.json: missing \"params\"");
    if (fhir_jsonfile_want(L->f, ps, FHIR_ARRAY, "\"params\""))
        return -1;
    rs->params = fhir_xcalloc(ps->len, sizeof *rs->params);
    static const char *const pkeys[] = {"name", "type", "values", "default", "description",
                                        "source", NULL};
    for (const fhir_node *p = ps->child; p; p = p->next) {
        if (want_obj(L, p, "a parameter", pkeys))
            return -1;
        eparam *e = &rs->params[rs->nparams];
        const char *type = NULL, *src = NULL;
        if (req_str(L, p, "name", "parameter", &e->name) ||
            req_str(L, p, "type", "parameter", &type) ||
            req_str(L, p, "description", "parameter", &e->description) ||
            req_str(L, p, "source", "parameter", &src))
            return -1;
        if (elig_ruleset_param_index(rs, e->name) >= 0)
            return lerr(L, p, "parameter \"%s\" declared twice", e->name);
        const fhir_node *def = fhir_node_get(p, "default");
        if (!def)
            return lerr(L, p, "parameter \"%s\": missing \"default\"", e->name);
        if (!strcmp(type, "number")) {
            e->is_number = true;
            if (def->kind != FHIR_NUMBER)
                return lerr(L, def, "parameter \"%s\": default must be a number", e->name);
            if (!fhir_node_double(def, &e->num) || !isfinite(e->num))
                return lerr(L, def, "parameter \"%s\": default %s is out of range", e->name,
                            def->text);
        } else if (!strcmp(type, "code")) {
            const fhir_node *vals = fhir_node_get(p, "values");
            if (!vals || vals->kind != FHIR_ARRAY || vals->len == 0 || vals->len > ELIG_MAX_CODES)
                return lerr(L, vals ? vals : p,
                            "parameter \"%s\": \"values\" must list the allowed codes", e->name);
            for (const fhir_node *c = vals->child; c; c = c->next) {
                if (c->kind != FHIR_STRING)
                    return lerr(L, c, "parameter values must be strings");
                e->values[e->nvalues++] = rs_str(rs, c->text);
            }
            if (def->kind != FHIR_STRING)
                return lerr(L, def, "parameter \"%s\": default must be a string", e->name);
            bool found = false;
            for (size_t k = 0; k < e->nvalues; k++)
                if (!strcmp(e->values[k], def->text)) {
                    e->code = k;
                    found = true;
                }
            if (!found)
                return lerr(L, def, "parameter \"%s\": default is not one of its values",
                            e->name);
        } else {
            return lerr(L, p, "parameter \"%s\": type must be \"number\" or \"code\"",
                        e->name);
        }
        rs->nparams++;
    }
    return 0;
}

/* A review flag (is_note false) or a note (true): id, message, when. Flags and notes share
 * one id space; an id is either a flag or a note everywhere. */
static int load_flag(ld *L, const fhir_node *item, bool is_note);

static int load_flag_or_timing(ld *L, const fhir_node *item, bool is_flag)
{
    elig_ruleset *rs = L->rs;
    static const char *const tkeys[] = {"urgency", "reason", "when", "source", "note", NULL};
    if (is_flag)
        return load_flag(L, item, false);
    const char *what = "a timing rule";
    if (want_obj(L, item, what, tkeys))
        return -1;
    const fhir_node *when = fhir_node_get(item, "when");
    if (!when)
        return lerr(L, item, "%s needs \"when\"", what);
    const char *src;
    if (opt_str(L, item, "source", what, &src))
        return -1;
    uint32_t node;
    {
        const char *urg = NULL, *reason = NULL;
        if (req_str(L, item, "urgency", what, &urg) || req_str(L, item, "reason", what, &reason))
            return -1;
        int u = !strcmp(urg, "now") ? ELIG_URGENCY_NOW : !strcmp(urg, "soon") ? ELIG_URGENCY_SOON
                : !strcmp(urg, "review") ? ELIG_URGENCY_REVIEW : -1;
        if (u < 0)
            return lerr(L, fhir_node_get(item, "urgency"),
                        "urgency must be \"now\", \"soon\" or \"review\"");
        if (compile_node(L, when, 0, &node))
            return -1;
        rs->tims = fhir_xrealloc(rs->tims, (rs->ntims + 1) * sizeof *rs->tims);
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

static int load_flag(ld *L, const fhir_node *item, bool is_note)
{
    elig_ruleset *rs = L->rs;
    static const char *const fkeys[] = {"id", "message", "when", "source", "note", NULL};
    const char *what = is_note ? "a note" : "a review flag";
    if (want_obj(L, item, what, fkeys))
        return -1;
    const fhir_node *when = fhir_node_get(item, "when");
    if (!when)
        return lerr(L, item, "%s needs \"when\"", what);
    const char *src = NULL, *id = NULL, *msg = NULL;
    if (opt_str(L, item, "source", what, &src) || req_str(L, item, "id", what, &id) ||
        req_str(L, item, "message", what, &msg))
        return -1;
    if (!id_ok(id))
        return lerr(L, fhir_node_get(item, "id"), "%s id \"%s\" must be lower-case letters, digits, _",
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
            return lerr(L, item, "more than %d review flag and note ids", ELIG_MAX_FLAGS);
        rs->flag_is_note[rs->nflag_ids] = is_note;
        rs->flag_ids[rs->nflag_ids++] = id;
    } else if (rs->flag_is_note[fid] != is_note) {
        return lerr(L, fhir_node_get(item, "id"), "\"%s\" is a %s elsewhere: ids of review flags "
                    "and notes must differ", id, is_note ? "review flag" : "note");
    }
    rs->flags = fhir_xrealloc(rs->flags, (rs->nflags + 1) * sizeof *rs->flags);
    rs->flags[rs->nflags++] = (eflag){.id = (uint16_t)fid, .uid = 0, .node = node, .message = msg};
    return 0;
}

/* "source" of a criteria or consult file: document, revision (YYYY-MM[-DD]), http(s) url,
 * optional reference (our provenance) and note. */
static int load_source(ld *L, const fhir_node *src, const char **doc, const char **rev,
                       const char **url, const char **ref)
{
    static const char *const skeys[] = {"document", "revision", "url", "reference", "note", NULL};
    if (want_obj(L, src, "\"source\"", skeys) ||
        req_str(L, src, "document", "source", doc) || req_str(L, src, "revision", "source", rev) ||
        req_str(L, src, "url", "source", url) || opt_str(L, src, "reference", "source", ref))
        return -1;
    int64_t d;
    if (fhir_clock_parse_date(*rev, &d) != 0 || (strlen(*rev) != 7 && strlen(*rev) != 10))
        return lerr(L, fhir_node_get(src, "revision"),
                    "source revision must be a date \"YYYY-MM\" or \"YYYY-MM-DD\"");
    if (strncmp(*url, "https://", 8) && strncmp(*url, "http://", 7))
        return lerr(L, fhir_node_get(src, "url"), "source url must be an http(s) URL");
    return 0;
}

/* A consult file: when to refer for a CAR T consultation, independent of the label gates. */
/* Every element of arr (NULL = none) through fn(L, element, arg); arr must be an array. */
static int load_each(ld *L, const fhir_node *arr, const char *what,
                     int (*fn)(ld *, const fhir_node *, bool), bool arg)
{
    if (!arr)
        return 0;
    if (fhir_jsonfile_want(L->f, arr, FHIR_ARRAY, what))
        return -1;
    for (const fhir_node *c = arr->child; c; c = c->next)
        if (fn(L, c, arg))
            return -1;
    return 0;
}

static int load_consult(ld *L, const fhir_node *root)
{
    elig_ruleset *rs = L->rs;
    static const char *const top[] = {"id", "kind", "description", "applies_to", "source", "triggers",
                                      "note", NULL};
    static const char *const tkeys[] = {"id", "recommendation", "when", "reason", "source", "note", NULL};
    if (fhir_jsonfile_keys(L->f, root, "a consult file", top))
        return -1;
    econsult c;
    memset(&c, 0, sizeof c);
    c.file = L->file;
    if (req_str(L, root, "id", "consult file", &c.key) ||
        req_str(L, root, "description", "consult file", &c.description))
        return -1;
    if (strncmp(c.key, "consult:", 8) || !key_ok(c.key + 8, true))
        return lerr(L, fhir_node_get(root, "id"), "consult id \"%s\" must be \"consult:KEY\" "
                    "(upper-case letters, digits, '-')", c.key);
    for (size_t i = 0; i < rs->nconsults; i++)
        if (!strcmp(rs->consults[i].key, c.key))
            return lerr(L, fhir_node_get(root, "id"), "consult \"%s\" already defined in %s", c.key,
                        rs->consults[i].file);
    const fhir_node *src = fhir_node_get(root, "source"), *app = fhir_node_get(root, "applies_to"),
             *trig = fhir_node_get(root, "triggers");
    if (!src)
        return lerr(L, root, "missing \"source\" (document, revision, url)");
    if (load_source(L, src, &c.src_doc, &c.src_rev, &c.src_url, &c.src_ref))
        return -1;
    if (!app)
        return lerr(L, root, "missing \"applies_to\" (which patients the triggers are about)");
    if (compile_node(L, app, 0, &c.applies))
        return -1;
    if (!trig || trig->kind != FHIR_ARRAY || !trig->len)
        return lerr(L, trig ? trig : root, "\"triggers\" must list at least one trigger");
    c.trig0 = (uint32_t)rs->ntrigs;
    for (const fhir_node *t = trig->child; t; t = t->next) {
        etrig e;
        memset(&e, 0, sizeof e);
        const char *rec = NULL;
        if (want_obj(L, t, "a trigger", tkeys) ||
            req_str(L, t, "id", "trigger", &e.id) || req_str(L, t, "recommendation", "trigger", &rec) ||
            req_str(L, t, "reason", "trigger", &e.reason) || req_str(L, t, "source", "trigger", &e.source))
            return -1;
        if (!id_ok(e.id))
            return lerr(L, fhir_node_get(t, "id"), "trigger id \"%s\" must be lower-case letters, digits, _",
                        e.id);
        for (size_t i = 0; i < rs->ntrigs; i++)
            if (!strcmp(rs->trigs[i].id, e.id))
                return lerr(L, fhir_node_get(t, "id"), "trigger \"%s\" already defined", e.id);
        if (!strcmp(rec, "refer_now"))
            e.rec = ELIG_CONSULT_NOW;
        else if (!strcmp(rec, "early_consult"))
            e.rec = ELIG_CONSULT_EARLY;
        else
            return lerr(L, fhir_node_get(t, "recommendation"),
                        "recommendation must be \"refer_now\" or \"early_consult\"");
        const fhir_node *when = fhir_node_get(t, "when");
        if (!when)
            return lerr(L, t, "a trigger needs \"when\"");
        if (compile_node(L, when, 0, &e.node))
            return -1;
        rs->trigs = fhir_xrealloc(rs->trigs, (rs->ntrigs + 1) * sizeof *rs->trigs);
        rs->trigs[rs->ntrigs++] = e;
    }
    c.ntrig = (uint32_t)rs->ntrigs - c.trig0;
    c.prov = load_prov(rs, c.key, c.file, c.src_ref);
    rs->consults = fhir_xrealloc(rs->consults, (rs->nconsults + 1) * sizeof *rs->consults);
    rs->consults[rs->nconsults++] = c;
    return 0;
}

static int load_criteria(ld *L, const fhir_node *root)
{
    elig_ruleset *rs = L->rs;
    static const char *const top[] = {
        "id", "product", "indication", "diseases", "approval", "source", "effective_from",
        "effective_until", "status", "requires", "review_flags", "notes", "timing", "note", NULL};
    if (fhir_jsonfile_want(L->f, root, FHIR_OBJECT, "a criteria file"))
        return -1;
    const fhir_node *kind = fhir_node_get(root, "kind");
    if (kind) {
        if (kind->kind != FHIR_STRING || strcmp(kind->text, "consult"))
            return lerr(L, kind, "kind must be \"consult\" (criteria files have no kind)");
        return load_consult(L, root);
    }
    if (fhir_jsonfile_keys(L->f, root, "a criteria file", top))
        return -1;
    eind ind;
    memset(&ind, 0, sizeof ind);
    ind.file = L->file;
    const char *id = NULL;
    if (req_str(L, root, "id", "criteria", &id))
        return -1;
    const fhir_node *prod = fhir_node_get(root, "product");
    const fhir_node *indic = fhir_node_get(root, "indication");
    const fhir_node *src = fhir_node_get(root, "source"), *req = fhir_node_get(root, "requires");
    if (!prod)
        return lerr(L, root, "missing \"product\"");
    if (!indic)
        return lerr(L, root, "missing \"indication\"");
    if (!src)
        return lerr(L, root, "missing \"source\" (document, revision, url): every "
                                   "criteria file cites the label it encodes");
    if (!req)
        return lerr(L, root, "missing \"requires\"");
    static const char *const pkeys[] = {"key", "generic", "brand", NULL};
    static const char *const ikeys[] = {"key", "description", "short", NULL};
    if (want_obj(L, prod, "\"product\"", pkeys) ||
        req_str(L, prod, "key", "product", &ind.product) ||
        req_str(L, prod, "generic", "product", &ind.generic) ||
        req_str(L, prod, "brand", "product", &ind.brand))
        return -1;
    if (want_obj(L, indic, "\"indication\"", ikeys) ||
        req_str(L, indic, "key", "indication", &ind.indication) ||
        req_str(L, indic, "description", "indication", &ind.description) ||
        opt_str(L, indic, "short", "indication", &ind.short_text))
        return -1;
    if (ind.short_text) {
        size_t sl = strlen(ind.short_text);
        if (sl > ELIG_SHORT_MAX)
            return lerr(L, fhir_node_get(indic, "short"),
                        "indication \"short\" is %zu bytes, at most %u: a few words a clinician reads "
                        "in a list (the description says the rest)", sl, (unsigned)ELIG_SHORT_MAX);
        if (strpbrk(ind.short_text, "\n\r\t"))
            return lerr(L, fhir_node_get(indic, "short"), "indication \"short\" must be one line");
    } else {
        ind.short_text = ind.description;
    }
    if (load_source(L, src, &ind.src_doc, &ind.src_rev, &ind.src_url, &ind.src_ref))
        return -1;
    if (!key_ok(ind.product, false))
        return lerr(L, fhir_node_get(prod, "key"), "product key \"%s\" must be lower-case "
                                                  "letters, digits and '-'", ind.product);
    if (!key_ok(ind.indication, true))
        return lerr(L, fhir_node_get(indic, "key"), "indication key \"%s\" must be upper-case "
                                                   "letters, digits and '-'", ind.indication);
    char key[256];
    snprintf(key, sizeof key, "%s:%s", ind.product, ind.indication);
    if (strcmp(key, id))
        return lerr(L, fhir_node_get(root, "id"), "id \"%s\" must be \"%s\" (product:indication)",
                    id, key);
    ind.key = id;
    for (size_t i = 0; i < rs->ninds; i++)
        if (!strcmp(rs->inds[i].key, id))
            return lerr(L, fhir_node_get(root, "id"), "indication \"%s\" already defined in %s", id,
                        rs->inds[i].file);
    const fhir_node *dis = fhir_node_get(root, "diseases");
    if (!dis || dis->kind != FHIR_ARRAY || dis->len == 0)
        return lerr(L, dis ? dis : root,
                    "\"diseases\" must list the disease concepts the indication covers");
    for (const fhir_node *c = dis->child; c; c = c->next)
        if (c->kind != FHIR_STRING || !vocab_code_valid("diseases", c->text))
            return lerr(L, c, "\"%s\" is not a disease concept (mappings/FACTS.md)",
                        c->kind == FHIR_STRING ? c->text : fhir_node_kind_name(c->kind));
    const fhir_node *appr = fhir_node_get(root, "approval");
    if (appr && (appr->kind != FHIR_STRING ||
                 (strcmp(appr->text, "regular") && strcmp(appr->text, "accelerated"))))
        return lerr(L, appr, "approval must be \"regular\" or \"accelerated\"");
    if (parse_window(L, root, &ind.from, &ind.until))
        return -1;
    const fhir_node *status = fhir_node_get(root, "status");
    if (status) {
        if (status->kind != FHIR_STRING || strcmp(status->text, "pending"))
            return lerr(L, status, "status must be \"pending\" (a product whose label is not "
                                         "verified yet) or absent");
        if (fhir_node_get(root, "effective_from"))
            return lerr(L, fhir_node_get(root, "effective_from"),
                        "a pending indication has no effective_from: set it when the label is verified "
                        "and remove \"status\"");
        ind.pending = true;
    }
    /* requires: the root may not carry its own dates or parameter gate */
    if (req->kind == FHIR_OBJECT &&
        (fhir_node_get(req, "effective_from") || fhir_node_get(req, "effective_until") ||
         fhir_node_get(req, "if_param")))
        return lerr(L, req, "put effective dates of a whole indication at file level");
    if (compile_node(L, req, 0, &ind.root))
        return -1;
    {
        const enode *r = &rs->nodes[ind.root];
        if (r->kind == N_ALL)
            for (uint32_t k = 0; k < r->nkids; k++)
                if (!rs->nodes[rs->kids[r->kids + k]].label)
                    return lerr_line(L, rs->nodes[rs->kids[r->kids + k]].line,
                                "every top-level gate of \"requires\" needs a \"label\" in "
                                "plain words");
    }
    ind.flag0 = (uint32_t)rs->nflags;
    if (load_each(L, fhir_node_get(root, "review_flags"), "\"review_flags\"",
                  load_flag_or_timing, true) ||
        load_each(L, fhir_node_get(root, "notes"), "\"notes\"", load_flag, true))
        return -1;
    ind.nflags = (uint32_t)rs->nflags - ind.flag0;
    ind.tim0 = (uint32_t)rs->ntims;
    if (load_each(L, fhir_node_get(root, "timing"), "\"timing\"", load_flag_or_timing, false))
        return -1;
    ind.ntims = (uint32_t)rs->ntims - ind.tim0;
    if (rs->ninds == ELIG_MAX_INDICATIONS)
        return lerr(L, root, "more than %d indications", ELIG_MAX_INDICATIONS);
    ind.prov = load_prov(rs, ind.key, ind.file, ind.src_ref);
    rs->inds = fhir_xrealloc(rs->inds, (rs->ninds + 1) * sizeof *rs->inds);
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
    char **sig = fhir_xcalloc(rs->nflags, sizeof *sig);
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

static const fhir_jsonfile_opts file_opts = {.max_bytes = ELIG_MAX_FILE_BYTES};

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
    elig_ruleset *rs = fhir_xcalloc(1, sizeof *rs);
    const elig_source **sorted = fhir_xcalloc(n, sizeof *sorted);
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
            if (pass == 0 && rs->params) {
                rc = fhir_error_set(err, "%s:1: more than one params.json", s->name);
                break;
            }
            fhir_arena *a = fhir_arena_new(ELIG_FILE_ARENA_CAP);
            ld L = {rs, rs_str(rs, s->name), NULL};
            L.f = fhir_jsonfile_parse(a, L.file, s->data, s->len, &file_opts);
            const fhir_node *root = fhir_jsonfile_root(L.f);
            if (root)
                pass == 0 ? load_params(&L, root) : load_criteria(&L, root);
            rc = fhir_jsonfile_result(L.f, err);
            fhir_jsonfile_free(L.f);
            fhir_arena_free(a);
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
        names = fhir_xrealloc(names, (n + 1) * sizeof *names);
        names[n++] = fhir_xstrdup(e->d_name);
    }
    closedir(d);
    if (n) /* qsort with NULL is undefined, even for 0 elements (UBSan) */
        qsort(names, n, sizeof *names, cmp_str);
    elig_source *src = fhir_xcalloc(n, sizeof *src);
    elig_ruleset *rs = NULL;
    size_t loaded = 0;
    int bad = 0;
    for (size_t i = 0; i < n && !bad; i++) {
        size_t pl = strlen(dir) + strlen(names[i]) + 2;
        char *path = fhir_xmalloc(pl);
        snprintf(path, pl, "%s/%s", dir, names[i]);
        src[i].name = path;
        loaded++;
        FILE *f = fopen(path, "rb");
        if (!f) {
            fhir_error_set(err, "%s: %s", path, strerror(errno));
            bad = 1;
            break;
        }
        /* grown to the file's size, not allocated at the cap: every file is held until the
         * ruleset is built, and 27 cap-sized buffers spread the daemon's first heap over 27 MiB
         * of huge pages, each zeroed when first touched (14 of them at every start) */
        fhir_buf fb;
        fhir_buf_init(&fb, ELIG_MAX_FILE_BYTES);
        fhir_error rerr = {0};
        int rc = fhir_buf_read_stream(&fb, f, path, &rerr);
        fclose(f);
        bool over = fb.overflow;
        src[i].data = fhir_buf_steal(&fb, &src[i].len);
        fhir_buf_free(&fb);
        if (over) {
            fhir_error_set(err, "%s:1: file larger than %u bytes", path, ELIG_MAX_FILE_BYTES);
            bad = 1;
        } else if (rc < 0) {
            fhir_error_set(err, "%s: read error", path);
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
