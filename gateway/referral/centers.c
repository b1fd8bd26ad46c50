/* centers — loader and queries for the treatment-center directory. */
#include "centers.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yajl/yajl_parse.h>

#include "fhir_alloc.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_node.h"

#define CENTERS_MAX_BYTES (8u * 1024u * 1024u)
#define CENTERS_MAX_CENTERS 10000u

static const char *const product_keys[] = {
    "tisa-cel", "axi-cel", "brexu-cel", "liso-cel", "ide-cel", "cilta-cel", "obe-cel",
};

/* Disease concept keys of mappings/FACTS.md. */
static const char *const disease_keys[] = {
    "dlbcl_nos", "hgbcl", "pmbcl", "tfl", "fl_3b", "fl", "mcl", "cll_sll", "mzl",
    "b_all", "mm", "pcl", "pcnsl", "hl", "other_heme",
};

bool centers_product_known(const char *key)
{
    for (size_t i = 0; key && i < sizeof product_keys / sizeof product_keys[0]; i++)
        if (!strcmp(key, product_keys[i]))
            return true;
    return false;
}

bool centers_disease_known(const char *key)
{
    for (size_t i = 0; key && i < sizeof disease_keys / sizeof disease_keys[0]; i++)
        if (!strcmp(key, disease_keys[i]))
            return true;
    return false;
}

const char *centers_capacity_name(centers_capacity c)
{
    switch (c) {
    case CENTERS_OPEN: return "open";
    case CENTERS_LIMITED: return "limited";
    case CENTERS_CLOSED: return "closed";
    }
    return "?";
}

/* ---- line index: the fhir_node tree carries no positions, so a second yajl pass records
 * the line of every value in document (pre-)order, which is the order of the tree. ------- */

typedef struct line_index {
    const char *data;
    size_t scanned;  /* bytes scanned for newlines so far */
    int line;        /* line at `scanned` */
    yajl_handle h;
    int *lines;
    size_t n, alloc;
    bool oom;
} line_index;

static int li_value(void *ctx)
{
    line_index *li = ctx;
    size_t pos = yajl_get_bytes_consumed(li->h);
    if (pos > 0)
        pos--; /* last byte of the token */
    while (li->scanned < pos) {
        if (li->data[li->scanned] == '\n')
            li->line++;
        li->scanned++;
    }
    if (li->n == li->alloc) {
        size_t na = li->alloc ? li->alloc * 2 : 256;
        int *nl = realloc(li->lines, na * sizeof *nl);
        if (!nl) {
            li->oom = true;
            return 0;
        }
        li->lines = nl;
        li->alloc = na;
    }
    li->lines[li->n++] = li->line;
    return 1;
}
static int li_null(void *ctx) { return li_value(ctx); }
static int li_bool(void *ctx, int b) { (void)b; return li_value(ctx); }
static int li_num(void *ctx, const char *s, size_t n) { (void)s; (void)n; return li_value(ctx); }
static int li_str(void *ctx, const unsigned char *s, size_t n) { (void)s; (void)n; return li_value(ctx); }
static int li_key(void *ctx, const unsigned char *s, size_t n) { (void)ctx; (void)s; (void)n; return 1; }
static int li_start(void *ctx) { return li_value(ctx); }
static int li_end(void *ctx) { (void)ctx; return 1; }

static const yajl_callbacks li_callbacks = {
    li_null, li_bool, NULL, NULL, li_num, li_str, li_start, li_key, li_end, li_start, li_end,
};

/* Returns 0 and fills li->lines; -1 when the pass failed (then lines are unknown). */
static int line_index_build(line_index *li, const char *data, size_t len)
{
    memset(li, 0, sizeof *li);
    if (len >= 3 && !memcmp(data, "\xEF\xBB\xBF", 3)) {
        data += 3;
        len -= 3;
    }
    li->data = data;
    li->line = 1;
    li->h = yajl_alloc(&li_callbacks, NULL, li);
    if (!li->h)
        abort();
    int rc = 0;
    if (yajl_parse(li->h, (const unsigned char *)data, len) != yajl_status_ok ||
        yajl_complete_parse(li->h) != yajl_status_ok)
        rc = -1;
    yajl_free(li->h);
    li->h = NULL;
    if (li->oom)
        abort();
    return rc;
}

/* Pre-order walk that pairs each tree node with its line. */
typedef struct node_line {
    const fhir_node *node;
    int line;
} node_line;

typedef struct loader {
    const char *name;
    fhir_arena *arena;
    node_line *map;
    size_t n_map;
    fhir_error *err;
} loader;

static void map_walk(const fhir_node *n, const int *lines, size_t n_lines, node_line *map,
                     size_t *i)
{
    if (*i < n_lines) {
        map[*i].node = n;
        map[*i].line = lines[*i];
    }
    (*i)++;
    for (const fhir_node *c = fhir_node_first(n); c; c = c->next)
        map_walk(c, lines, n_lines, map, i);
}

static int line_of(const loader *L, const fhir_node *n)
{
    for (size_t i = 0; n && i < L->n_map; i++)
        if (L->map[i].node == n)
            return L->map[i].line;
    return 0;
}

__attribute__((format(printf, 3, 4)))
static int fail(loader *L, const fhir_node *at, const char *fmt, ...)
{
    char msg[FHIR_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = line_of(L, at);
    if (line > 0)
        return fhir_error_set(L->err, "%s:%d: %s", L->name, line, msg);
    return fhir_error_set(L->err, "%s: %s", L->name, msg);
}

/* ---- field readers ------------------------------------------------------------------ */

static int check_keys(loader *L, const fhir_node *obj, const char *where,
                      const char *const *allowed)
{
    for (const fhir_node *c = fhir_node_first(obj); c; c = c->next) {
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++)
            if (fhir_node_key_is(c, allowed[i]))
                ok = true;
        if (!ok)
            return fail(L, c, "%s: unknown field \"%.*s\"", where, (int)c->key_len, c->key);
    }
    return 0;
}

static int get_str(loader *L, const fhir_node *obj, const char *key, const char *where,
                   bool required, const char **out)
{
    const fhir_node *v = fhir_node_get(obj, key);
    *out = NULL;
    if (!v) {
        if (required)
            return fail(L, obj, "%s: missing required field \"%s\"", where, key);
        return 0;
    }
    if (!fhir_node_is(v, FHIR_STRING))
        return fail(L, v, "%s: \"%s\" must be a string, not %s", where, key,
                    fhir_node_kind_name(v->kind));
    if (!v->text[0] && required)
        return fail(L, v, "%s: \"%s\" must not be empty", where, key);
    *out = v->text;
    return 0;
}

static int get_str_array(loader *L, const fhir_node *obj, const char *key, const char *where,
                         bool required, bool (*known)(const char *), const char *vocab,
                         const char *const **out, size_t *n_out, bool *present)
{
    const fhir_node *v = fhir_node_get(obj, key);
    *out = NULL;
    *n_out = 0;
    if (present)
        *present = v != NULL;
    if (!v) {
        if (required)
            return fail(L, obj, "%s: missing required field \"%s\"", where, key);
        return 0;
    }
    if (!fhir_node_is(v, FHIR_ARRAY))
        return fail(L, v, "%s: \"%s\" must be an array of strings", where, key);
    if (required && fhir_node_count(v) == 0)
        return fail(L, v, "%s: \"%s\" must not be empty", where, key);
    const char **arr = fhir_arena_calloc(L->arena, (fhir_node_count(v) + 1) * sizeof *arr);
    size_t n = 0;
    for (const fhir_node *c = fhir_node_first(v); c; c = c->next) {
        if (!fhir_node_is(c, FHIR_STRING) || !c->text[0])
            return fail(L, c, "%s: every \"%s\" entry must be a non-empty string", where, key);
        if (known && !known(c->text))
            return fail(L, c, "%s: unknown %s \"%s\" in \"%s\"", where, vocab, c->text, key);
        for (size_t j = 0; j < n; j++)
            if (!strcmp(arr[j], c->text))
                return fail(L, c, "%s: \"%s\" listed twice in \"%s\"", where, c->text, key);
        arr[n++] = c->text;
    }
    *out = arr;
    *n_out = n;
    return 0;
}

static int get_coord(loader *L, const fhir_node *obj, const char *key, const char *where,
                     double lo, double hi, double *out)
{
    const fhir_node *v = fhir_node_get(obj, key);
    if (!v)
        return fail(L, obj, "%s: missing required field \"%s\"", where, key);
    if (!fhir_node_is(v, FHIR_NUMBER) || !fhir_node_double(v, out))
        return fail(L, v, "%s: \"%s\" must be a number", where, key);
    if (!(*out >= lo && *out <= hi))
        return fail(L, v, "%s: \"%s\" = %s is outside [%g, %g]", where, key, v->text, lo, hi);
    return 0;
}

static int load_auth(loader *L, const fhir_node *fhir, const char *where, centers_auth *a)
{
    const fhir_node *an = fhir_node_get(fhir, "auth");
    memset(a, 0, sizeof *a);
    if (!an)
        return 0;
    if (!fhir_node_is(an, FHIR_OBJECT))
        return fail(L, an, "%s: \"auth\" must be an object", where);
    static const char *const keys[] = {"type", "token_file", "token_env", "client_id",
                                       "token_url", "key_file", "key_id", "scope", NULL};
    if (check_keys(L, an, where, keys))
        return -1;
    const char *type;
    if (get_str(L, an, "type", where, true, &type))
        return -1;
    if (!strcmp(type, "none")) {
        a->type = CENTERS_AUTH_NONE;
    } else if (!strcmp(type, "bearer")) {
        a->type = CENTERS_AUTH_BEARER;
        if (get_str(L, an, "token_file", where, false, &a->token_file) ||
            get_str(L, an, "token_env", where, false, &a->token_env))
            return -1;
        if (!a->token_file == !a->token_env)
            return fail(L, an, "%s: bearer auth needs exactly one of \"token_file\" or "
                               "\"token_env\" (secrets never go in this file)", where);
    } else if (!strcmp(type, "smart-backend")) {
        a->type = CENTERS_AUTH_SMART_BACKEND;
        if (get_str(L, an, "client_id", where, true, &a->client_id) ||
            get_str(L, an, "token_url", where, true, &a->token_url) ||
            get_str(L, an, "key_file", where, true, &a->key_file) ||
            get_str(L, an, "key_id", where, false, &a->key_id) ||
            get_str(L, an, "scope", where, false, &a->scope))
            return -1;
    } else {
        return fail(L, fhir_node_get(an, "type"),
                    "%s: auth type \"%s\" is not one of none, bearer, smart-backend", where,
                    type);
    }
    return 0;
}

static int load_center(loader *L, const fhir_node *o, size_t idx, centers_center *c)
{
    char where[160];
    snprintf(where, sizeof where, "center #%zu", idx + 1);
    memset(c, 0, sizeof *c);
    c->line = line_of(L, o);
    if (!fhir_node_is(o, FHIR_OBJECT))
        return fail(L, o, "%s must be an object", where);
    static const char *const keys[] = {"id", "name", "fhir", "position", "address",
                                       "accreditations", "products", "diseases", "payers",
                                       "capacity", "contact", "comment", NULL};
    if (get_str(L, o, "id", where, true, &c->id))
        return -1;
    for (const char *p = c->id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return fail(L, fhir_node_get(o, "id"),
                        "%s: id \"%s\" may only use a-z, 0-9, '-' and '_'", where, c->id);
    snprintf(where, sizeof where, "center \"%s\"", c->id);
    if (check_keys(L, o, where, keys) || get_str(L, o, "name", where, true, &c->name))
        return -1;

    const fhir_node *fh = fhir_node_get(o, "fhir");
    if (!fh || !fhir_node_is(fh, FHIR_OBJECT))
        return fail(L, fh ? fh : o, "%s: \"fhir\" object (base, auth) is required", where);
    static const char *const fkeys[] = {"base", "auth", NULL};
    if (check_keys(L, fh, where, fkeys) || get_str(L, fh, "base", where, true, &c->fhir_base))
        return -1;
    if (strncmp(c->fhir_base, "https://", 8) && strncmp(c->fhir_base, "http://", 7))
        return fail(L, fhir_node_get(fh, "base"), "%s: fhir base \"%s\" must be an http(s) URL",
                    where, c->fhir_base);
    if (load_auth(L, fh, where, &c->auth))
        return -1;

    const fhir_node *pos = fhir_node_get(o, "position");
    if (!pos || !fhir_node_is(pos, FHIR_OBJECT))
        return fail(L, pos ? pos : o, "%s: \"position\" object (lat, lon) is required", where);
    static const char *const pkeys[] = {"lat", "lon", NULL};
    if (check_keys(L, pos, where, pkeys) ||
        get_coord(L, pos, "lat", where, -90, 90, &c->lat) ||
        get_coord(L, pos, "lon", where, -180, 180, &c->lon))
        return -1;

    const fhir_node *ad = fhir_node_get(o, "address");
    if (!ad || !fhir_node_is(ad, FHIR_OBJECT))
        return fail(L, ad ? ad : o, "%s: \"address\" object is required", where);
    static const char *const akeys[] = {"line", "city", "state", "postalCode", NULL};
    if (check_keys(L, ad, where, akeys) ||
        get_str_array(L, ad, "line", where, false, NULL, NULL, &c->address_lines,
                      &c->n_address_lines, NULL) ||
        get_str(L, ad, "city", where, true, &c->city) ||
        get_str(L, ad, "state", where, true, &c->state) ||
        get_str(L, ad, "postalCode", where, true, &c->postal_code))
        return -1;

    const fhir_node *acc = fhir_node_get(o, "accreditations");
    if (!acc || !fhir_node_is(acc, FHIR_ARRAY))
        return fail(L, acc ? acc : o, "%s: \"accreditations\" array is required (may be empty)",
                    where);
    c->accreditations = fhir_arena_calloc(L->arena,
                                          (fhir_node_count(acc) + 1) * sizeof *c->accreditations);
    for (const fhir_node *e = fhir_node_first(acc); e; e = e->next) {
        centers_accreditation *a = &c->accreditations[c->n_accreditations];
        static const char *const ckeys[] = {"body", "scope", "expires", NULL};
        if (!fhir_node_is(e, FHIR_OBJECT))
            return fail(L, e, "%s: each accreditation must be an object", where);
        a->line = line_of(L, e);
        if (check_keys(L, e, where, ckeys) || get_str(L, e, "body", where, true, &a->body) ||
            get_str(L, e, "scope", where, false, &a->scope) ||
            get_str(L, e, "expires", where, true, &a->expires))
            return -1;
        if (fhir_clock_parse_ymd(a->expires, &a->expires_day))
            return fail(L, fhir_node_get(e, "expires"),
                        "%s: accreditation expiry \"%s\" is not a valid YYYY-MM-DD date", where,
                        a->expires);
        c->n_accreditations++;
    }

    bool present;
    if (get_str_array(L, o, "products", where, true, centers_product_known,
                      "product key (tisa-cel axi-cel brexu-cel liso-cel ide-cel cilta-cel "
                      "obe-cel)",
                      &c->products, &c->n_products, NULL) ||
        get_str_array(L, o, "diseases", where, true, centers_disease_known,
                      "disease key (see mappings/FACTS.md)", &c->diseases, &c->n_diseases,
                      NULL) ||
        get_str_array(L, o, "payers", where, false, NULL, NULL, &c->payers, &c->n_payers,
                      &present))
        return -1;
    c->payers_listed = present;

    const char *cap;
    if (get_str(L, o, "capacity", where, true, &cap))
        return -1;
    if (!strcmp(cap, "open"))
        c->capacity = CENTERS_OPEN;
    else if (!strcmp(cap, "limited"))
        c->capacity = CENTERS_LIMITED;
    else if (!strcmp(cap, "closed"))
        c->capacity = CENTERS_CLOSED;
    else
        return fail(L, fhir_node_get(o, "capacity"),
                    "%s: capacity \"%s\" is not one of open, limited, closed", where, cap);

    const fhir_node *ct = fhir_node_get(o, "contact");
    if (!ct || !fhir_node_is(ct, FHIR_OBJECT))
        return fail(L, ct ? ct : o, "%s: \"contact\" object is required", where);
    static const char *const ctkeys[] = {"name", "phone", "email", NULL};
    if (check_keys(L, ct, where, ctkeys) ||
        get_str(L, ct, "name", where, false, &c->contact_name) ||
        get_str(L, ct, "phone", where, false, &c->contact_phone) ||
        get_str(L, ct, "email", where, false, &c->contact_email))
        return -1;
    if (!c->contact_phone && !c->contact_email)
        return fail(L, ct, "%s: contact needs a phone or an email", where);
    return 0;
}

centers_dir *centers_load_mem(const char *name, const char *data, size_t len, fhir_error *err)
{
    fhir_error_clear(err);
    if (len > CENTERS_MAX_BYTES) {
        fhir_error_set(err, "%s: file is larger than %u bytes", name, CENTERS_MAX_BYTES);
        return NULL;
    }
    centers_dir *d = fhir_xcalloc(1, sizeof *d);
    d->arena = fhir_arena_new(0);
    d->path = fhir_arena_strdup(d->arena, name);
    loader L = {.name = d->path, .arena = d->arena, .err = err};

    fhir_error perr;
    fhir_error_clear(&perr);
    fhir_node *root = fhir_json_parse(d->arena, data, len, NULL, &perr);
    if (!root) {
        fhir_error_set(err, "%s: %s", name, perr.msg);
        centers_free(d);
        return NULL;
    }
    line_index li;
    if (line_index_build(&li, data, len) == 0 && li.n == fhir_node_size(root)) {
        L.map = fhir_xcalloc(li.n, sizeof *L.map);
        size_t i = 0;
        map_walk(root, li.lines, li.n, L.map, &i);
        L.n_map = li.n;
    }
    free(li.lines);

    int rc = 0;
    const fhir_node *arr = fhir_node_get(root, "centers");
    static const char *const rkeys[] = {"version", "comment", "centers", NULL};
    if (!fhir_node_is(root, FHIR_OBJECT)) {
        rc = fail(&L, root, "top level must be an object with a \"centers\" array");
    } else if (check_keys(&L, root, "top level", rkeys)) {
        rc = -1;
    } else if (!arr || !fhir_node_is(arr, FHIR_ARRAY)) {
        rc = fail(&L, arr ? arr : root, "\"centers\" must be an array");
    } else if (fhir_node_count(arr) > CENTERS_MAX_CENTERS) {
        rc = fail(&L, arr, "more than %u centers", CENTERS_MAX_CENTERS);
    } else {
        const fhir_node *ver = fhir_node_get(root, "version");
        int64_t v;
        if (ver && (!fhir_node_int(ver, &v) || v != 1))
            rc = fail(&L, ver, "\"version\" must be 1 (the only schema version so far)");
        d->centers = fhir_xcalloc(fhir_node_count(arr) + 1, sizeof *d->centers);
        size_t i = 0;
        for (const fhir_node *o = fhir_node_first(arr); !rc && o; o = o->next, i++) {
            rc = load_center(&L, o, i, &d->centers[i]);
            if (rc)
                break;
            for (size_t j = 0; j < i; j++)
                if (!strcmp(d->centers[j].id, d->centers[i].id)) {
                    rc = fail(&L, fhir_node_get(o, "id"),
                              "center id \"%s\" is also used by the center at line %d",
                              d->centers[i].id, d->centers[j].line);
                    break;
                }
            d->n = i + 1;
        }
    }
    free(L.map);
    if (rc) {
        centers_free(d);
        return NULL;
    }
    return d;
}

centers_dir *centers_load(const char *path, fhir_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fhir_error_set(err, "%s: cannot open: %m", path);
        return NULL;
    }
    size_t cap = CENTERS_MAX_BYTES + 1, len = 0;
    char *buf = fhir_xmalloc(cap);
    len = fread(buf, 1, cap, f);
    int rd_err = ferror(f);
    fclose(f);
    if (rd_err) {
        free(buf);
        fhir_error_set(err, "%s: read error", path);
        return NULL;
    }
    centers_dir *d = centers_load_mem(path, buf, len, err);
    free(buf);
    return d;
}

void centers_free(centers_dir *d)
{
    if (!d)
        return;
    free(d->centers);
    fhir_arena_free(d->arena);
    free(d);
}

const centers_center *centers_find(const centers_dir *d, const char *id)
{
    for (size_t i = 0; d && id && i < d->n; i++)
        if (!strcmp(d->centers[i].id, id))
            return &d->centers[i];
    return NULL;
}

const centers_accreditation *centers_valid_accreditation(const centers_center *c, int64_t day)
{
    const centers_accreditation *best = NULL;
    for (size_t i = 0; i < c->n_accreditations; i++) {
        const centers_accreditation *a = &c->accreditations[i];
        if (a->expires_day < day)
            continue;
        bool fact = !strncmp(a->body, "FACT", 4), best_fact = best && !strncmp(best->body, "FACT", 4);
        if (!best || (fact && !best_fact) ||
            (fact == best_fact && a->expires_day > best->expires_day))
            best = a;
    }
    return best;
}

bool centers_offers_product(const centers_center *c, const char *product)
{
    for (size_t i = 0; product && i < c->n_products; i++)
        if (!strcmp(c->products[i], product))
            return true;
    return false;
}

bool centers_treats_disease(const centers_center *c, const char *disease)
{
    for (size_t i = 0; disease && i < c->n_diseases; i++)
        if (!strcmp(c->diseases[i], disease))
            return true;
    return false;
}

bool centers_accepts_payer(const centers_center *c, const char *payer)
{
    for (size_t i = 0; payer && i < c->n_payers; i++)
        if (!strcasecmp(c->payers[i], payer))
            return true;
    return false;
}
