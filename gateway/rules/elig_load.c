/* elig — criteria loader, compiler and three-valued evaluator. See elig.h and
 * conf/criteria/README.md for the file format. */
#include "elig.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <yajl/yajl_parse.h>

#include "fhir_clock.h"
#include "fhir_json.h"
#include "map_profile.h"

/* ======================================================================================
 * The fact vocabulary (mappings/FACTS.md) comes from the profile module: map_fact_lookup() and
 * map_fact_code_valid(). Facts the eligibility engine added to FACTS.md that the profile does
 * not publish yet are listed here; `cartgate screen` answers them from the profile's own
 * relapse interval (elig_profile_fact). Drop a line once the profile knows the fact.
 * ====================================================================================== */

static const struct {
    const char *name;
    map_fact_type type;
} pending_facts[] = {
    {"relapse_months_after_1l_start", MAP_FACT_NUMBER},
    {"relapse_months_after_1l_end", MAP_FACT_NUMBER},
};

static bool vocab_lookup(const char *name, map_fact_type *type)
{
    if (map_fact_lookup(name, type))
        return true;
    for (size_t i = 0; i < sizeof pending_facts / sizeof pending_facts[0]; i++)
        if (!strcmp(pending_facts[i].name, name)) {
            if (type)
                *type = pending_facts[i].type;
            return true;
        }
    return false;
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

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p)
        abort();
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s);
    char *d = xmalloc(n + 1);
    memcpy(d, s, n + 1);
    return d;
}

/* ======================================================================================
 * A small JSON tree with line numbers (yajl callbacks; the byte offset of each token gives
 * its line), so every validation error can say file:line.
 * ====================================================================================== */

typedef enum jv_kind { JV_NULL, JV_BOOL, JV_NUM, JV_STR, JV_OBJ, JV_ARR } jv_kind;

typedef struct jv jv;
struct jv {
    jv_kind kind;
    int line;
    char *key;    /* member name when the parent is an object */
    char *str;    /* JV_STR; JV_NUM: original text */
    double num;
    bool b;
    jv *first, *last, *next;
    size_t n;
};

#define JP_MAX_DEPTH 64

typedef struct jparse {
    const char *data;
    size_t len;
    size_t line_off; /* newlines counted up to here */
    int line;
    yajl_handle h;
    jv *stack[JP_MAX_DEPTH];
    int depth;
    jv *root;
    char *key;
    char err[256];
} jparse;

static void jv_free(jv *v)
{
    while (v) {
        jv *next = v->next;
        jv_free(v->first);
        free(v->key);
        free(v->str);
        free(v);
        v = next;
    }
}

static int jp_line(jparse *p)
{
    size_t off = yajl_get_bytes_consumed(p->h);
    if (off > p->len)
        off = p->len;
    for (; p->line_off < off; p->line_off++)
        if (p->data[p->line_off] == '\n')
            p->line++;
    /* the offset is just past the token; a token ending a line belongs to that line */
    return p->line;
}

static int jp_add(jparse *p, jv *v)
{
    v->line = jp_line(p);
    if (p->depth == 0) {
        if (p->root) {
            jv_free(v);
            snprintf(p->err, sizeof p->err, "more than one JSON document");
            return 0;
        }
        p->root = v;
    } else {
        jv *parent = p->stack[p->depth - 1];
        if (parent->kind == JV_OBJ) {
            v->key = p->key;
            p->key = NULL;
            if (!v->key)
                v->key = xstrdup("");
        }
        if (parent->last)
            parent->last->next = v;
        else
            parent->first = v;
        parent->last = v;
        parent->n++;
    }
    if (v->kind == JV_OBJ || v->kind == JV_ARR) {
        if (p->depth >= JP_MAX_DEPTH) {
            snprintf(p->err, sizeof p->err, "nesting deeper than %d", JP_MAX_DEPTH);
            return 0;
        }
        p->stack[p->depth++] = v;
    }
    return 1;
}

static jv *jv_new(jv_kind k)
{
    jv *v = xcalloc(1, sizeof *v);
    v->kind = k;
    return v;
}

static int jp_null(void *ctx) { return jp_add(ctx, jv_new(JV_NULL)); }

static int jp_bool(void *ctx, int b)
{
    jv *v = jv_new(JV_BOOL);
    v->b = b != 0;
    return jp_add(ctx, v);
}

static int jp_number(void *ctx, const char *s, size_t n)
{
    jparse *p = ctx;
    jv *v = jv_new(JV_NUM);
    v->str = xmalloc(n + 1);
    memcpy(v->str, s, n);
    v->str[n] = 0;
    char *end;
    errno = 0;
    v->num = strtod(v->str, &end);
    if (*end || errno || !isfinite(v->num)) {
        jv_free(v);
        snprintf(p->err, sizeof p->err, "number out of range");
        return 0;
    }
    return jp_add(p, v);
}

static int jp_string(void *ctx, const unsigned char *s, size_t n)
{
    jparse *p = ctx;
    if (memchr(s, 0, n)) {
        snprintf(p->err, sizeof p->err, "NUL byte in string");
        return 0;
    }
    jv *v = jv_new(JV_STR);
    v->str = xmalloc(n + 1);
    memcpy(v->str, s, n);
    v->str[n] = 0;
    return jp_add(p, v);
}

static int jp_start_map(void *ctx) { return jp_add(ctx, jv_new(JV_OBJ)); }
static int jp_start_array(void *ctx) { return jp_add(ctx, jv_new(JV_ARR)); }

static int jp_end(void *ctx)
{
    jparse *p = ctx;
    p->depth--;
    return 1;
}

static int jp_map_key(void *ctx, const unsigned char *s, size_t n)
{
    jparse *p = ctx;
    jv *obj = p->stack[p->depth - 1];
    for (jv *c = obj->first; c; c = c->next)
        if (strlen(c->key) == n && !memcmp(c->key, s, n)) {
            jp_line(p);
            snprintf(p->err, sizeof p->err, "duplicate key \"%.*s\"", (int)(n > 64 ? 64 : n),
                     (const char *)s);
            return 0;
        }
    free(p->key);
    p->key = xmalloc(n + 1);
    memcpy(p->key, s, n);
    p->key[n] = 0;
    return 1;
}

static const yajl_callbacks jp_callbacks = {
    jp_null, jp_bool, NULL, NULL, jp_number, jp_string,
    jp_start_map, jp_map_key, jp_end, jp_start_array, jp_end,
};

/* Parses data into a tree; on error returns NULL with "<name>:<line>: <what>" in err. */
static jv *jp_parse(const char *name, const char *data, size_t len, fhir_error *err)
{
    size_t ws = 0;
    while (ws < len && (data[ws] == ' ' || data[ws] == '\n' || data[ws] == '\t' ||
                        data[ws] == '\r'))
        ws++;
    if (ws == len) {
        fhir_error_set(err, "%s:1: empty file", name);
        return NULL;
    }
    jparse p;
    memset(&p, 0, sizeof p);
    p.data = data;
    p.len = len;
    p.line = 1;
    p.h = yajl_alloc(&jp_callbacks, NULL, &p);
    if (!p.h)
        abort();
    yajl_status st = yajl_parse(p.h, (const unsigned char *)data, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(p.h);
    if (st != yajl_status_ok) {
        int line = jp_line(&p);
        if (p.err[0]) {
            fhir_error_set(err, "%s:%d: %s", name, line, p.err);
        } else {
            unsigned char *msg = yajl_get_error(p.h, 0, (const unsigned char *)data, len);
            char m[200];
            snprintf(m, sizeof m, "%s", msg ? (const char *)msg : "syntax error");
            for (char *c = m; *c; c++)
                if (*c == '\n')
                    *c = ' ';
            size_t ml = strlen(m);
            while (ml && m[ml - 1] == ' ')
                m[--ml] = 0;
            fhir_error_set(err, "%s:%d: malformed JSON: %s", name, line, m);
            yajl_free_error(p.h, msg);
        }
        yajl_free(p.h);
        jv_free(p.root);
        free(p.key);
        return NULL;
    }
    yajl_free(p.h);
    free(p.key);
    if (!p.root) {
        fhir_error_set(err, "%s:1: empty file", name);
        return NULL;
    }
    return p.root;
}

static const jv *jv_get(const jv *obj, const char *key)
{
    if (!obj || obj->kind != JV_OBJ)
        return NULL;
    for (const jv *c = obj->first; c; c = c->next)
        if (!strcmp(c->key, key))
            return c;
    return NULL;
}

static const char *jv_kind_name(jv_kind k)
{
    static const char *const n[] = {"null", "boolean", "number", "string", "object", "array"};
    return n[k];
}

/* ======================================================================================
 * The compiled rule set.
 * ====================================================================================== */

enum { N_ALL, N_ANY, N_NOT, N_LEAF };
enum {
    OP_LT, OP_LE, OP_GT, OP_GE, OP_EQ, OP_NE, /* number */
    OP_TRUE, OP_FALSE,                         /* bool */
    OP_IN, OP_NOT_IN,                          /* code */
    OP_ANY_OF, OP_ALL_OF, OP_NONE_OF,          /* set */
};
/* Kleene truth values ordered so that AND = min, OR = max, NOT = 2 - x. */
enum { TF = 0, TU = 1, TT = 2, TNA = 3, TNE = 4 };
#define T_ASSUMED 8 /* result came from if_unknown, not from a known fact */
#define OTHER_BIT (1ull << 63)

typedef struct enode {
    uint8_t kind, op;
    int8_t if_unknown;     /* -1, or TF / TT */
    bool active;           /* if_param satisfied */
    uint16_t fact;
    uint16_t nkids;
    uint32_t kids;         /* first index into rs->kids */
    int32_t from, until;   /* in force on days [from, until) */
    double num;
    uint64_t mask;
    int16_t num_param;     /* value from a number parameter, or -1 */
    int16_t if_param;      /* code parameter gating this node, or -1 */
    uint64_t if_mask;      /* allowed parameter value indices */
    const char *label;
    const char *role;
    const char *value_text; /* the criterion's value as written, for descriptions */
    const char *file;
    int line;
} enode;

/* The fields evaluation reads, packed (40 bytes) so the whole rule set stays in cache. */
typedef struct hnode {
    uint8_t kind, op;
    int8_t if_unknown;
    uint8_t active;
    uint16_t fact;
    uint16_t nkids;
    uint32_t kids;
    int32_t from, until;
    double num;
    uint64_t mask;
} hnode;

typedef struct efact {
    const char *name;
    map_fact_type type;
    const char *codes[ELIG_MAX_CODES];
    size_t ncodes;
} efact;

typedef struct eparam {
    const char *name;
    bool is_number;
    const char *values[ELIG_MAX_CODES];
    size_t nvalues;
    double num;
    size_t code;           /* index into values */
    const char *description;
} eparam;

typedef struct eflag {
    uint16_t id;           /* index into rs->flag_ids */
    uint16_t uid;          /* identical "when" trees share one uid: evaluated once per patient */
    uint32_t node;
    const char *message;
} eflag;

typedef struct etiming {
    uint8_t urgency;
    uint32_t node;
    const char *reason;
} etiming;

typedef struct eind {
    const char *key, *product, *indication, *generic, *brand, *description, *file;
    const char *src_doc, *src_rev, *src_url, *src_ref;
    int32_t from, until;
    uint32_t root;
    uint32_t flag0, nflags;
    uint32_t tim0, ntims;
} eind;

struct elig_ruleset {
    eind *inds;
    size_t ninds;
    enode *nodes;
    size_t nnodes, cap_nodes;
    hnode *hot;            /* evaluation copy of nodes (built after loading) */
    uint32_t *kids;
    size_t nkids, cap_kids;
    efact facts[ELIG_MAX_FACTS];
    size_t nfacts;
    uint8_t fact_order[ELIG_MAX_FACTS]; /* fact indices sorted by name */
    const char *flag_ids[ELIG_MAX_FLAGS];
    size_t nflag_ids;
    uint8_t flag_order[ELIG_MAX_FLAGS];
    eflag *flags;
    size_t nflags;
    size_t nuflags;        /* distinct flag conditions */
    etiming *tims;
    size_t ntims;
    eparam *params;
    size_t nparams;
    char **strs;           /* every string the rule set owns */
    size_t nstrs, cap_strs;
    char files_hash[65];   /* hex SHA-256 over the sorted files */
    char overrides[1024];  /* "name=value\n" per override, in order */
    char hash[80];
    char param_text[64];   /* elig_ruleset_param() of a number */
};

typedef struct fval {
    bool known;
    bool b;
    double num;
    uint64_t bits;
    const map_fact *src;
} fval;

struct elig_factset {
    const elig_ruleset *rs;
    fval v[ELIG_MAX_FACTS];
};

struct elig_result {
    size_t ninds, nnodes, nuflags;
    uint8_t *ustate;       /* per distinct flag condition: 0 not evaluated, 1 no, 2 raised */
    uint32_t *usrc;        /* eflag whose node was evaluated for that condition */
    uint8_t best;
    uint8_t urgency;
    int32_t urg_ind;       /* indication that set the urgency, -1 for none */
    int32_t urg_tim;       /* timing rule index (global), -1 = default reason */
    uint64_t miss_all;
    uint64_t flags;
    uint32_t flag_src[ELIG_MAX_FLAGS]; /* eflag index that raised each flag id */
    uint8_t *cat;
    uint64_t *miss;
    int32_t *failed;       /* node index of the failed gate, -1 */
    uint8_t *out;          /* per node result of the last evaluation */
};

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

void elig_ruleset_free(elig_ruleset *rs)
{
    if (!rs)
        return;
    for (size_t i = 0; i < rs->nstrs; i++)
        free(rs->strs[i]);
    free(rs->strs);
    free(rs->inds);
    free(rs->nodes);
    free(rs->hot);
    free(rs->kids);
    free(rs->flags);
    free(rs->tims);
    free(rs->params);
    free(rs);
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
        return lerr(L, v->line, "%s must be a %s, not a %s", what, jv_kind_name(k),
                    jv_kind_name(v->kind));
    return 0;
}

/* Required non-empty string member. */
static int req_str(ld *L, const jv *obj, const char *key, const char *what, const char **out)
{
    const jv *v = jv_get(obj, key);
    if (!v)
        return lerr(L, obj->line, "%s: missing \"%s\"", what, key);
    if (v->kind != JV_STR || !v->str[0])
        return lerr(L, v->line, "%s: \"%s\" must be a non-empty string", what, key);
    *out = rs_str(L->rs, v->str);
    return 0;
}

static int opt_str(ld *L, const jv *obj, const char *key, const char *what, const char **out)
{
    const jv *v = jv_get(obj, key);
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
    const jv *f = jv_get(obj, "effective_from"), *u = jv_get(obj, "effective_until");
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

static int param_find(const elig_ruleset *rs, const char *name)
{
    for (size_t i = 0; i < rs->nparams; i++)
        if (!strcmp(rs->params[i].name, name))
            return (int)i;
    return -1;
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
            const jv *p = jv_get(v, "param");
            if (!p || v->n != 1 || p->kind != JV_STR)
                return lerr(L, v->line, "a parameter value is written {\"param\": \"name\"}");
            int pi = param_find(rs, p->str);
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
                        fname, jv_kind_name(v->kind));
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
                                "not a %s", fname, jv_kind_name(c->kind));
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
    const jv *f = jv_get(v, "fact"), *o = jv_get(v, "op"), *val = jv_get(v, "value");
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
    const jv *iu = jv_get(v, "if_unknown");
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
    const jv *all = jv_get(v, "all"), *any = jv_get(v, "any"), *not = jv_get(v, "not"),
             *fact = jv_get(v, "fact");
    int forms = (all != NULL) + (any != NULL) + (not != NULL) + (fact != NULL);
    if (forms != 1)
        return lerr(L, v->line, "a criterion needs exactly one of \"all\", \"any\", \"not\", "
                                "\"fact\"");
    if (!fact && (jv_get(v, "op") || jv_get(v, "value") || jv_get(v, "if_unknown")))
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
            return lerr(L, jv_get(v, "role")->line,
                        "unknown role \"%s\" (disease age lines prior_therapy disease_status "
                        "exclusion transplant other)", role);
    }
    const jv *note = jv_get(v, "note");
    if (note && note->kind != JV_STR)
        return lerr(L, note->line, "\"note\" must be a string");
    int32_t from, until;
    if (parse_window(L, v, &from, &until))
        return -1;
    rs->nodes[ni].label = label;
    rs->nodes[ni].role = role;
    rs->nodes[ni].from = from;
    rs->nodes[ni].until = until;

    const jv *ip = jv_get(v, "if_param");
    if (ip) {
        const jv *pn = jv_get(ip, "name"), *pin = jv_get(ip, "in");
        if (ip->kind != JV_OBJ || !pn || pn->kind != JV_STR || !pin || pin->kind != JV_ARR ||
            ip->n != 2)
            return lerr(L, ip->line, "\"if_param\" is written {\"name\": \"param\", \"in\": "
                                     "[\"value\", ...]}");
        int pi = param_find(rs, pn->str);
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
    const jv *ps = jv_get(root, "params");
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
        if (param_find(rs, e->name) >= 0)
            return lerr(L, p->line, "parameter \"%s\" declared twice", e->name);
        const jv *def = jv_get(p, "default");
        if (!def)
            return lerr(L, p->line, "parameter \"%s\": missing \"default\"", e->name);
        if (!strcmp(type, "number")) {
            e->is_number = true;
            if (def->kind != JV_NUM)
                return lerr(L, def->line, "parameter \"%s\": default must be a number", e->name);
            e->num = def->num;
        } else if (!strcmp(type, "code")) {
            const jv *vals = jv_get(p, "values");
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

static int load_flag_or_timing(ld *L, const jv *item, bool is_flag)
{
    elig_ruleset *rs = L->rs;
    static const char *const fkeys[] = {"id", "message", "when", "source", "note", NULL};
    static const char *const tkeys[] = {"urgency", "reason", "when", "source", "note", NULL};
    const char *what = is_flag ? "a review flag" : "a timing rule";
    if (want_kind(L, item, JV_OBJ, what) || check_keys(L, item, what, is_flag ? fkeys : tkeys))
        return -1;
    const jv *when = jv_get(item, "when");
    if (!when)
        return lerr(L, item->line, "%s needs \"when\"", what);
    const char *src;
    if (opt_str(L, item, "source", what, &src))
        return -1;
    uint32_t node;
    if (is_flag) {
        const char *id, *msg;
        if (req_str(L, item, "id", what, &id) || req_str(L, item, "message", what, &msg))
            return -1;
        bool idok = true;
        for (const char *c = id; *c; c++)
            idok &= islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '_';
        if (!idok)
            return lerr(L, jv_get(item, "id")->line,
                        "review flag id \"%s\" must be lower-case letters, digits, _", id);
        if (compile_node(L, when, 0, &node))
            return -1;
        size_t fid = rs->nflag_ids;
        for (size_t i = 0; i < rs->nflag_ids; i++)
            if (!strcmp(rs->flag_ids[i], id))
                fid = i;
        if (fid == rs->nflag_ids) {
            if (rs->nflag_ids == ELIG_MAX_FLAGS)
                return lerr(L, item->line, "more than %d review flag ids", ELIG_MAX_FLAGS);
            rs->flag_ids[rs->nflag_ids++] = id;
        }
        rs->flags = xrealloc(rs->flags, (rs->nflags + 1) * sizeof *rs->flags);
        rs->flags[rs->nflags++] =
            (eflag){.id = (uint16_t)fid, .uid = 0, .node = node, .message = msg};
    } else {
        const char *urg, *reason;
        if (req_str(L, item, "urgency", what, &urg) || req_str(L, item, "reason", what, &reason))
            return -1;
        int u = !strcmp(urg, "now") ? ELIG_URGENCY_NOW : !strcmp(urg, "soon") ? ELIG_URGENCY_SOON
                : !strcmp(urg, "review") ? ELIG_URGENCY_REVIEW : -1;
        if (u < 0)
            return lerr(L, jv_get(item, "urgency")->line,
                        "urgency must be \"now\", \"soon\" or \"review\"");
        if (compile_node(L, when, 0, &node))
            return -1;
        rs->tims = xrealloc(rs->tims, (rs->ntims + 1) * sizeof *rs->tims);
        rs->tims[rs->ntims++] = (etiming){(uint8_t)u, node, reason};
    }
    return 0;
}

static int load_criteria(ld *L, const jv *root)
{
    elig_ruleset *rs = L->rs;
    static const char *const top[] = {
        "id", "product", "indication", "diseases", "approval", "source", "effective_from",
        "effective_until", "requires", "review_flags", "timing", "note", NULL};
    if (want_kind(L, root, JV_OBJ, "a criteria file") ||
        check_keys(L, root, "a criteria file", top))
        return -1;
    eind ind;
    memset(&ind, 0, sizeof ind);
    ind.file = L->file;
    const char *id;
    if (req_str(L, root, "id", "criteria", &id))
        return -1;
    const jv *prod = jv_get(root, "product"), *indic = jv_get(root, "indication"),
             *src = jv_get(root, "source"), *req = jv_get(root, "requires");
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
    static const char *const skeys[] = {"document", "revision", "url", "reference", "note", NULL};
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
    if (want_kind(L, src, JV_OBJ, "\"source\"") || check_keys(L, src, "\"source\"", skeys) ||
        req_str(L, src, "document", "source", &ind.src_doc) ||
        req_str(L, src, "revision", "source", &ind.src_rev) ||
        req_str(L, src, "url", "source", &ind.src_url) ||
        opt_str(L, src, "reference", "source", &ind.src_ref))
        return -1;
    {
        int64_t d;
        const char *r = ind.src_rev;
        if (fhir_clock_parse_date(r, &d) != 0 || (strlen(r) != 7 && strlen(r) != 10))
            return lerr(L, jv_get(src, "revision")->line,
                        "source revision must be a date \"YYYY-MM\" or \"YYYY-MM-DD\"");
        if (strncmp(ind.src_url, "https://", 8) && strncmp(ind.src_url, "http://", 7))
            return lerr(L, jv_get(src, "url")->line, "source url must be an http(s) URL");
    }
    if (!key_ok(ind.product, false))
        return lerr(L, jv_get(prod, "key")->line, "product key \"%s\" must be lower-case "
                                                  "letters, digits and '-'", ind.product);
    if (!key_ok(ind.indication, true))
        return lerr(L, jv_get(indic, "key")->line, "indication key \"%s\" must be upper-case "
                                                   "letters, digits and '-'", ind.indication);
    char key[256];
    snprintf(key, sizeof key, "%s:%s", ind.product, ind.indication);
    if (strcmp(key, id))
        return lerr(L, jv_get(root, "id")->line, "id \"%s\" must be \"%s\" (product:indication)",
                    id, key);
    ind.key = id;
    for (size_t i = 0; i < rs->ninds; i++)
        if (!strcmp(rs->inds[i].key, id))
            return lerr(L, jv_get(root, "id")->line, "indication \"%s\" already defined in %s", id,
                        rs->inds[i].file);
    const jv *dis = jv_get(root, "diseases");
    if (!dis || dis->kind != JV_ARR || dis->n == 0)
        return lerr(L, (dis ? dis : root)->line,
                    "\"diseases\" must list the disease concepts the indication covers");
    for (const jv *c = dis->first; c; c = c->next)
        if (c->kind != JV_STR || !vocab_code_valid("diseases", c->str))
            return lerr(L, c->line, "\"%s\" is not a disease concept (mappings/FACTS.md)",
                        c->kind == JV_STR ? c->str : jv_kind_name(c->kind));
    const jv *appr = jv_get(root, "approval");
    if (appr && (appr->kind != JV_STR ||
                 (strcmp(appr->str, "regular") && strcmp(appr->str, "accelerated"))))
        return lerr(L, appr->line, "approval must be \"regular\" or \"accelerated\"");
    if (parse_window(L, root, &ind.from, &ind.until))
        return -1;
    /* requires: the root may not carry its own dates or parameter gate */
    if (req->kind == JV_OBJ && (jv_get(req, "effective_from") || jv_get(req, "effective_until") ||
                                jv_get(req, "if_param")))
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
    const jv *flags = jv_get(root, "review_flags"), *timing = jv_get(root, "timing");
    ind.flag0 = (uint32_t)rs->nflags;
    if (flags) {
        if (want_kind(L, flags, JV_ARR, "\"review_flags\""))
            return -1;
        for (const jv *c = flags->first; c; c = c->next)
            if (load_flag_or_timing(L, c, true))
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

static void apply_params(elig_ruleset *rs)
{
    if (!rs->hot)
        rs->hot = xcalloc(rs->nnodes, sizeof *rs->hot);
    for (size_t i = 0; i < rs->nnodes; i++) {
        enode *n = &rs->nodes[i];
        if (n->num_param >= 0)
            n->num = rs->params[n->num_param].num;
        n->active = n->if_param < 0 || ((n->if_mask >> rs->params[n->if_param].code) & 1);
        rs->hot[i] = (hnode){n->kind, n->op, n->if_unknown, n->active, n->fact, n->nkids,
                             n->kids, n->from, n->until, n->num, n->mask};
    }
}

static void compute_hash(elig_ruleset *rs)
{
    if (!rs->overrides[0]) {
        snprintf(rs->hash, sizeof rs->hash, "sha256:%s", rs->files_hash);
        return;
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    char buf[sizeof rs->files_hash + sizeof rs->overrides + 8];
    int n = snprintf(buf, sizeof buf, "%s\n%s", rs->files_hash, rs->overrides);
    EVP_Digest(buf, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
    char hex[65];
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    snprintf(rs->hash, sizeof rs->hash, "sha256:%s", hex);
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
            jv *root = jp_parse(L.file, s->data, s->len, err);
            if (!root) {
                rc = -1;
                break;
            }
            rc = pass == 0 ? load_params(&L, root) : load_criteria(&L, root);
            jv_free(root);
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
    qsort(rs->inds, rs->ninds, sizeof *rs->inds, cmp_ind);
    for (size_t i = 0; i < rs->nfacts; i++)
        rs->fact_order[i] = (uint8_t)i;
    for (size_t i = 0; i < rs->nflag_ids; i++)
        rs->flag_order[i] = (uint8_t)i;
    sort_rs = rs;
    qsort(rs->fact_order, rs->nfacts, 1, cmp_fact);
    qsort(rs->flag_order, rs->nflag_ids, 1, cmp_flag);
    sort_rs = NULL;
    apply_params(rs);
    dedupe_flags(rs);
    compute_hash(rs);
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

int elig_ruleset_set_param(elig_ruleset *rs, const char *name, const char *value,
                           fhir_error *err)
{
    int pi = param_find(rs, name);
    if (pi < 0)
        return fhir_error_set(err, "unknown criteria parameter \"%s\"", name);
    eparam *p = &rs->params[pi];
    if (p->is_number) {
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (!*value || *end || errno || !isfinite(v))
            return fhir_error_set(err, "parameter \"%s\" needs a number, got \"%s\"", name, value);
        p->num = v;
    } else {
        size_t k;
        for (k = 0; k < p->nvalues; k++)
            if (!strcmp(p->values[k], value))
                break;
        if (k == p->nvalues)
            return fhir_error_set(err, "parameter \"%s\": \"%s\" is not one of its values", name,
                                  value);
        p->code = k;
    }
    size_t ol = strlen(rs->overrides);
    int w = snprintf(rs->overrides + ol, sizeof rs->overrides - ol, "%s=%s\n", name, value);
    if (w < 0 || (size_t)w >= sizeof rs->overrides - ol)
        return fhir_error_set(err, "too many parameter overrides");
    apply_params(rs);
    compute_hash(rs);
    return 0;
}

const char *elig_ruleset_param(const elig_ruleset *rs, const char *name)
{
    int pi = param_find(rs, name);
    if (pi < 0)
        return NULL;
    const eparam *p = &rs->params[pi];
    if (!p->is_number)
        return p->values[p->code];
    /* a per-ruleset scratch buffer: const API, mutable text */
    char *buf = (char *)rs->param_text;
    snprintf(buf, sizeof rs->param_text, "%g", p->num);
    return buf;
}

const char *elig_ruleset_hash(const elig_ruleset *rs) { return rs->hash; }
size_t elig_ruleset_count(const elig_ruleset *rs) { return rs->ninds; }

const char *elig_ruleset_key(const elig_ruleset *rs, size_t i)
{
    return i < rs->ninds ? rs->inds[i].key : NULL;
}

int elig_ruleset_find(const elig_ruleset *rs, const char *key)
{
    for (size_t i = 0; i < rs->ninds; i++)
        if (!strcmp(rs->inds[i].key, key))
            return (int)i;
    return -1;
}

size_t elig_ruleset_fact_count(const elig_ruleset *rs) { return rs->nfacts; }

const char *elig_ruleset_fact_name(const elig_ruleset *rs, size_t i, map_fact_type *type)
{
    if (i >= rs->nfacts)
        return NULL;
    const efact *f = &rs->facts[rs->fact_order[i]];
    if (type)
        *type = f->type;
    return f->name;
}

/* ======================================================================================
 * Facts.
 * ====================================================================================== */

elig_factset *elig_factset_new(const elig_ruleset *rs)
{
    elig_factset *fs = xcalloc(1, sizeof *fs);
    fs->rs = rs;
    return fs;
}

void elig_factset_free(elig_factset *fs) { free(fs); }

void elig_factset_clear(elig_factset *fs)
{
    memset(fs->v, 0, sizeof fs->v);
}

static uint64_t code_mask(const efact *f, const char *code)
{
    if (!code)
        return OTHER_BIT;
    for (size_t i = 0; i < f->ncodes; i++)
        if (!strcmp(f->codes[i], code))
            return 1ull << i;
    return OTHER_BIT;
}

static int set_index(elig_factset *fs, size_t i, const map_fact *mf)
{
    const efact *f = &fs->rs->facts[i];
    fval *v = &fs->v[i];
    memset(v, 0, sizeof *v);
    v->src = mf;
    if (!mf || !mf->known)
        return 0;
    if (mf->type != f->type) {
        v->src = NULL;
        return -1;
    }
    v->known = true;
    switch (f->type) {
    case MAP_FACT_NUMBER:
        if (!isfinite(mf->num)) {
            v->known = false;
            return -1;
        }
        v->num = mf->num;
        break;
    case MAP_FACT_BOOL:
        v->b = mf->b;
        break;
    case MAP_FACT_CODE:
        v->bits = code_mask(f, mf->str);
        break;
    case MAP_FACT_SET:
        for (size_t k = 0; k < mf->nset && k < MAP_FACT_SET_MAX; k++)
            v->bits |= code_mask(f, mf->set[k]);
        break;
    case MAP_FACT_STRING:
        break;
    }
    return 0;
}

void elig_factset_fill(elig_factset *fs, elig_fact_fn fn, void *ud)
{
    for (size_t i = 0; i < fs->rs->nfacts; i++)
        set_index(fs, i, fn(ud, fs->rs->facts[i].name));
}

int elig_factset_set(elig_factset *fs, const char *name, const map_fact *f)
{
    for (size_t i = 0; i < fs->rs->nfacts; i++)
        if (!strcmp(fs->rs->facts[i].name, name))
            return set_index(fs, i, f);
    return -1;
}

/* ======================================================================================
 * The clinical profile as fact source.
 * ====================================================================================== */

void elig_profile_opts_apply(const elig_ruleset *rs, map_profile_opts *o)
{
    const char *anchor = elig_ruleset_param(rs, "lbcl_1l_anchor");
    if (anchor && !strcmp(anchor, "end"))
        o->relapse_anchor_end = 1;
    else if (anchor && !strcmp(anchor, "start"))
        o->relapse_anchor_end = 0;
}

void elig_profile_source_init(elig_profile_source *s, const map_profile *p,
                              const map_profile_opts *o)
{
    s->p = p;
    snprintf(s->anchor, sizeof s->anchor, "%s", o->relapse_anchor_end ? "end" : "start");
}

const map_fact *elig_profile_fact(void *ud, const char *name)
{
    const elig_profile_source *s = ud;
    const map_fact *f = map_profile_fact(s->p, name);
    if (f)
        return f;
    static const char pre[] = "relapse_months_after_1l_";
    if (!strncmp(name, pre, sizeof pre - 1) && !strcmp(name + sizeof pre - 1, s->anchor))
        return map_profile_fact(s->p, "relapse_months_after_1l");
    return NULL;
}

/* ======================================================================================
 * Evaluation (the hot path: no allocation, no string operations).
 * ====================================================================================== */

static inline bool leaf_test(const hnode *n, const fval *f)
{
    switch (n->op) {
    case OP_LT: return f->num < n->num;
    case OP_LE: return f->num <= n->num;
    case OP_GT: return f->num > n->num;
    case OP_GE: return f->num >= n->num;
    case OP_EQ: return f->num == n->num;
    case OP_NE: return f->num != n->num;
    case OP_TRUE: return f->b;
    case OP_FALSE: return !f->b;
    case OP_IN:
    case OP_ANY_OF: return (f->bits & n->mask) != 0;
    case OP_NOT_IN:
    case OP_NONE_OF: return (f->bits & n->mask) == 0;
    case OP_ALL_OF: return (f->bits & n->mask) == n->mask;
    }
    return false;
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
        r = leaf_test(n, f) ? TT : TF;
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
    elig_result *r = xcalloc(1, sizeof *r);
    r->ninds = rs->ninds;
    r->nnodes = rs->nnodes;
    r->cat = xcalloc(rs->ninds, 1);
    r->miss = xcalloc(rs->ninds, sizeof *r->miss);
    r->failed = xcalloc(rs->ninds, sizeof *r->failed);
    r->out = xcalloc(rs->nnodes, 1);
    r->nuflags = rs->nuflags;
    r->ustate = xcalloc(rs->nuflags, 1);
    r->usrc = xcalloc(rs->nuflags, sizeof *r->usrc);
    return r;
}

void elig_result_free(elig_result *r)
{
    if (!r)
        return;
    free(r->cat);
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
    memset(r->ustate, 0, rs->nuflags);
    for (size_t i = 0; i < rs->ninds; i++) {
        const eind *ind = &rs->inds[i];
        r->miss[i] = 0;
        r->failed[i] = -1;
        if (day < ind->from || day >= ind->until) {
            r->cat[i] = ELIG_NOT_IN_FORCE;
            continue;
        }
        uint64_t m = 0;
        int t = eval(rs, fv, day, ind->root, r->out, &m);
        if (t == TNA)
            t = TT;
        uint8_t cat = t == TT ? ELIG_ELIGIBLE : t == TU ? ELIG_POSSIBLY_ELIGIBLE
                                                        : ELIG_NOT_ELIGIBLE;
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
}

elig_category elig_result_category(const elig_result *r) { return (elig_category)r->best; }

elig_category elig_result_ind_category(const elig_result *r, size_t i)
{
    return i < r->ninds ? (elig_category)r->cat[i] : ELIG_NOT_IN_FORCE;
}

static const char *node_label(const elig_ruleset *rs, uint32_t ni)
{
    const enode *n = &rs->nodes[ni];
    return n->label ? n->label : "criteria";
}

const char *elig_result_ind_failed(const elig_ruleset *rs, const elig_result *r, size_t i)
{
    if (i >= r->ninds || r->cat[i] != ELIG_NOT_ELIGIBLE || r->failed[i] < 0)
        return NULL;
    return node_label(rs, (uint32_t)r->failed[i]);
}

uint64_t elig_result_ind_missing(const elig_result *r, size_t i)
{
    return i < r->ninds ? r->miss[i] : 0;
}

size_t elig_result_missing(const elig_ruleset *rs, const elig_result *r, const char **names,
                           size_t max)
{
    size_t n = 0;
    for (size_t k = 0; k < rs->nfacts; k++) {
        uint8_t fi = rs->fact_order[k];
        if (r->miss_all >> fi & 1) {
            if (n < max)
                names[n] = rs->facts[fi].name;
            n++;
        }
    }
    return n;
}

size_t elig_result_flags(const elig_ruleset *rs, const elig_result *r, const char **ids,
                         size_t max)
{
    size_t n = 0;
    for (size_t k = 0; k < rs->nflag_ids; k++) {
        uint8_t fi = rs->flag_order[k];
        if (r->flags >> fi & 1) {
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
