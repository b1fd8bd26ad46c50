/* centers — loader and queries for the treatment-center directory. */
#include "centers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fhir_alloc.h"
#include "fhir_clock.h"
#include "fhir_jsonfile.h"
#include "fhir_node.h"
#include "fhir_url.h"

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

/* ---- loading: fhir_jsonfile gives every node its line and keeps the errors ------------- */

typedef struct loader {
    fhir_jsonfile *f;
    fhir_arena *arena;
} loader;

static int str_field(loader *L, const fhir_node *obj, const char *key, const char *where,
                     bool required, const char **out)
{
    unsigned fl = required ? FHIR_JSONFILE_REQUIRED | FHIR_JSONFILE_NONEMPTY : 0;
    return fhir_jsonfile_str(L->f, obj, key, where, fl, out) < 0 ? -1 : 0;
}

static int get_str_array(loader *L, const fhir_node *obj, const char *key, const char *where,
                         bool required, bool (*known)(const char *), const char *vocab,
                         const char *const **out, size_t *n_out, bool *present)
{
    const fhir_node *v = NULL;
    unsigned fl = required ? FHIR_JSONFILE_REQUIRED | FHIR_JSONFILE_NONEMPTY : 0;
    int rc = fhir_jsonfile_array(L->f, obj, key, where, fl, &v);
    *out = NULL;
    *n_out = 0;
    if (present)
        *present = rc == 1;
    if (rc <= 0)
        return rc;
    const char **arr = fhir_arena_calloc(L->arena, (fhir_node_count(v) + 1) * sizeof *arr);
    size_t n = 0;
    for (const fhir_node *c = fhir_node_first(v); c; c = c->next) {
        if (!fhir_node_is(c, FHIR_STRING) || !c->text[0])
            return fhir_jsonfile_error(L->f, c, "%s: every \"%s\" entry must be a non-empty string",
                                       where, key);
        if (known && !known(c->text))
            return fhir_jsonfile_error(L->f, c, "%s: unknown %s \"%s\" in \"%s\"", where, vocab,
                                       c->text, key);
        for (size_t j = 0; j < n; j++)
            if (!strcmp(arr[j], c->text))
                return fhir_jsonfile_error(L->f, c, "%s: \"%s\" listed twice in \"%s\"", where,
                                           c->text, key);
        arr[n++] = c->text;
    }
    *out = arr;
    *n_out = n;
    return 0;
}

static int load_auth(loader *L, const fhir_node *fhir, const char *where, centers_auth *a)
{
    const fhir_node *an = NULL;
    memset(a, 0, sizeof *a);
    int rc = fhir_jsonfile_object(L->f, fhir, "auth", where, 0, &an);
    if (rc <= 0)
        return rc;
    static const char *const keys[] = {"type", "token_file", "token_env", "client_id",
                                       "token_url", "key_file", "key_id", "scope", NULL};
    static const char *const types[] = {"none", "bearer", "smart-backend", NULL};
    static const centers_auth_type type_of[] = {CENTERS_AUTH_NONE, CENTERS_AUTH_BEARER,
                                                CENTERS_AUTH_SMART_BACKEND};
    int t;
    if (fhir_jsonfile_keys(L->f, an, where, keys) ||
        fhir_jsonfile_enum(L->f, an, "type", where, FHIR_JSONFILE_REQUIRED, types, &t) < 0)
        return -1;
    a->type = type_of[t];
    if (a->type == CENTERS_AUTH_BEARER) {
        if (str_field(L, an, "token_file", where, false, &a->token_file) ||
            str_field(L, an, "token_env", where, false, &a->token_env))
            return -1;
        if (!a->token_file == !a->token_env)
            return fhir_jsonfile_error(L->f, an, "%s: bearer auth needs exactly one of "
                                       "\"token_file\" or \"token_env\" (secrets never go in this "
                                       "file)", where);
    } else if (a->type == CENTERS_AUTH_SMART_BACKEND) {
        if (str_field(L, an, "client_id", where, true, &a->client_id) ||
            str_field(L, an, "token_url", where, true, &a->token_url) ||
            str_field(L, an, "key_file", where, true, &a->key_file) ||
            str_field(L, an, "key_id", where, false, &a->key_id) ||
            str_field(L, an, "scope", where, false, &a->scope))
            return -1;
        a->token_url_line = (int)fhir_node_get(an, "token_url")->line;
    }
    return 0;
}

/* A member that must be an object (or array), with a hint of what it holds. */
static const fhir_node *need(loader *L, const fhir_node *o, const char *key, fhir_kind k,
                             const char *where, const char *hint)
{
    const fhir_node *v = fhir_node_get(o, key);
    if (v && fhir_node_is(v, k))
        return v;
    fhir_jsonfile_error(L->f, v ? v : o, "%s: \"%s\" %s is required %s", where, key,
                        k == FHIR_OBJECT ? "object" : "array", hint);
    return NULL;
}

static int load_center(loader *L, const fhir_node *o, size_t idx, centers_center *c)
{
    char where[160];
    snprintf(where, sizeof where, "center #%zu", idx + 1);
    memset(c, 0, sizeof *c);
    c->line = (int)o->line;
    if (!fhir_node_is(o, FHIR_OBJECT))
        return fhir_jsonfile_error(L->f, o, "%s must be an object", where);
    static const char *const keys[] = {"id", "name", "fhir", "position", "address",
                                       "accreditations", "products", "diseases", "payers",
                                       "capacity", "contact", "comment", NULL};
    if (str_field(L, o, "id", where, true, &c->id))
        return -1;
    for (const char *p = c->id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return fhir_jsonfile_error(L->f, fhir_node_get(o, "id"),
                                       "%s: id \"%s\" may only use a-z, 0-9, '-' and '_'", where,
                                       c->id);
    snprintf(where, sizeof where, "center \"%s\"", c->id);
    if (fhir_jsonfile_keys(L->f, o, where, keys) || str_field(L, o, "name", where, true, &c->name))
        return -1;

    const fhir_node *fh = need(L, o, "fhir", FHIR_OBJECT, where, "(base, auth)");
    static const char *const fkeys[] = {"base", "auth", NULL};
    if (!fh || fhir_jsonfile_keys(L->f, fh, where, fkeys) ||
        str_field(L, fh, "base", where, true, &c->fhir_base))
        return -1;
    c->fhir_base_line = (int)fhir_node_get(fh, "base")->line;
    if (strncmp(c->fhir_base, "https://", 8) && strncmp(c->fhir_base, "http://", 7))
        return fhir_jsonfile_error(L->f, fhir_node_get(fh, "base"),
                                   "%s: fhir base \"%s\" must be an http(s) URL", where,
                                   c->fhir_base);
    if (load_auth(L, fh, where, &c->auth))
        return -1;

    const fhir_node *pos = need(L, o, "position", FHIR_OBJECT, where, "(lat, lon)");
    static const char *const pkeys[] = {"lat", "lon", NULL};
    if (!pos || fhir_jsonfile_keys(L->f, pos, where, pkeys) ||
        fhir_jsonfile_num(L->f, pos, "lat", where, FHIR_JSONFILE_REQUIRED, -90, 90, &c->lat) < 0 ||
        fhir_jsonfile_num(L->f, pos, "lon", where, FHIR_JSONFILE_REQUIRED, -180, 180, &c->lon) < 0)
        return -1;

    const fhir_node *ad = need(L, o, "address", FHIR_OBJECT, where, "(city, state, postalCode)");
    static const char *const akeys[] = {"line", "city", "state", "postalCode", NULL};
    if (!ad || fhir_jsonfile_keys(L->f, ad, where, akeys) ||
        get_str_array(L, ad, "line", where, false, NULL, NULL, &c->address_lines,
                      &c->n_address_lines, NULL) ||
        str_field(L, ad, "city", where, true, &c->city) ||
        str_field(L, ad, "state", where, true, &c->state) ||
        str_field(L, ad, "postalCode", where, true, &c->postal_code))
        return -1;

    const fhir_node *acc = need(L, o, "accreditations", FHIR_ARRAY, where, "(may be empty)");
    if (!acc)
        return -1;
    c->accreditations = fhir_arena_calloc(L->arena,
                                          (fhir_node_count(acc) + 1) * sizeof *c->accreditations);
    for (const fhir_node *e = fhir_node_first(acc); e; e = e->next) {
        centers_accreditation *a = &c->accreditations[c->n_accreditations];
        static const char *const ckeys[] = {"body", "scope", "expires", NULL};
        if (!fhir_node_is(e, FHIR_OBJECT))
            return fhir_jsonfile_error(L->f, e, "%s: each accreditation must be an object", where);
        a->line = (int)e->line;
        if (fhir_jsonfile_keys(L->f, e, where, ckeys) ||
            str_field(L, e, "body", where, true, &a->body) ||
            str_field(L, e, "scope", where, false, &a->scope) ||
            str_field(L, e, "expires", where, true, &a->expires))
            return -1;
        if (fhir_clock_parse_ymd(a->expires, &a->expires_day))
            return fhir_jsonfile_error(L->f, fhir_node_get(e, "expires"),
                                       "%s: accreditation expiry \"%s\" is not a valid YYYY-MM-DD "
                                       "date", where, a->expires);
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

    static const char *const caps[] = {"open", "limited", "closed", NULL};
    int cap;
    if (fhir_jsonfile_enum(L->f, o, "capacity", where, FHIR_JSONFILE_REQUIRED, caps, &cap) < 0)
        return -1;
    c->capacity = (centers_capacity)cap;

    const fhir_node *ct = need(L, o, "contact", FHIR_OBJECT, where, "(phone or email)");
    static const char *const ctkeys[] = {"name", "phone", "email", NULL};
    if (!ct || fhir_jsonfile_keys(L->f, ct, where, ctkeys) ||
        str_field(L, ct, "name", where, false, &c->contact_name) ||
        str_field(L, ct, "phone", where, false, &c->contact_phone) ||
        str_field(L, ct, "email", where, false, &c->contact_email))
        return -1;
    if (!c->contact_phone && !c->contact_email)
        return fhir_jsonfile_error(L->f, ct, "%s: contact needs a phone or an email", where);
    return 0;
}

static int load_dir(loader *L, const fhir_node *root, centers_dir *d)
{
    static const char *const rkeys[] = {"version", "comment", "centers", NULL};
    if (!fhir_node_is(root, FHIR_OBJECT))
        return fhir_jsonfile_error(L->f, root, "top level must be an object with a \"centers\" "
                                   "array");
    if (fhir_jsonfile_keys(L->f, root, "top level", rkeys))
        return -1;
    const fhir_node *arr = fhir_node_get(root, "centers");
    if (!arr || !fhir_node_is(arr, FHIR_ARRAY))
        return fhir_jsonfile_error(L->f, arr ? arr : root, "\"centers\" must be an array");
    if (fhir_node_count(arr) > CENTERS_MAX_CENTERS)
        return fhir_jsonfile_error(L->f, arr, "more than %u centers", CENTERS_MAX_CENTERS);
    const fhir_node *ver = fhir_node_get(root, "version");
    int64_t v;
    if (ver && (!fhir_node_int(ver, &v) || v != 1))
        return fhir_jsonfile_error(L->f, ver, "\"version\" must be 1 (the only schema version so "
                                   "far)");
    d->centers = fhir_xcalloc(fhir_node_count(arr) + 1, sizeof *d->centers);
    size_t i = 0;
    for (const fhir_node *o = fhir_node_first(arr); o; o = o->next, i++) {
        if (load_center(L, o, i, &d->centers[i]))
            return -1;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(d->centers[j].id, d->centers[i].id))
                return fhir_jsonfile_error(L->f, fhir_node_get(o, "id"),
                                           "center id \"%s\" is also used by the center at line %d",
                                           d->centers[i].id, d->centers[j].line);
        d->n = i + 1;
    }
    return 0;
}

static const fhir_jsonfile_opts file_opts = {.max_bytes = CENTERS_MAX_BYTES, .key_word = "field"};

/* Takes f (freed here) whose tree lives in d's arena. */
static centers_dir *load(centers_dir *d, fhir_jsonfile *f, fhir_error *err)
{
    d->path = fhir_arena_strdup(d->arena, fhir_jsonfile_name(f));
    loader L = {.f = f, .arena = d->arena};
    const fhir_node *root = fhir_jsonfile_root(f);
    if (root)
        load_dir(&L, root, d);
    int rc = fhir_jsonfile_result(f, err);
    fhir_jsonfile_free(f);
    if (rc) {
        centers_free(d);
        return NULL;
    }
    return d;
}

static centers_dir *dir_new(void)
{
    centers_dir *d = fhir_xcalloc(1, sizeof *d);
    d->arena = fhir_arena_new(0);
    return d;
}

centers_dir *centers_load_mem(const char *name, const char *data, size_t len, fhir_error *err)
{
    fhir_error_clear(err);
    centers_dir *d = dir_new();
    return load(d, fhir_jsonfile_parse(d->arena, name, data, len, &file_opts), err);
}

centers_dir *centers_load(const char *path, fhir_error *err)
{
    fhir_error_clear(err);
    centers_dir *d = dir_new();
    return load(d, fhir_jsonfile_read(d->arena, path, &file_opts), err);
}

void centers_free(centers_dir *d)
{
    if (!d)
        return;
    free(d->centers);
    fhir_arena_free(d->arena);
    free(d);
}

static size_t cleartext(const centers_dir *d, const centers_center *c, const char *what,
                        const char *url, int line, fhir_buf *diag)
{
    if (!url || !fhir_url_cleartext_remote(url))
        return 0;
    char scheme[16], host[FHIR_URL_HOST_MAX];
    fhir_url_host(url, scheme, sizeof scheme, host, sizeof host);
    if (diag)
        fhir_buf_printf(diag, "%s:%d: center \"%s\": %s \"%s\" is plain http:// to %s (not a loopback "
                        "host): referrals would cross the network in clear; use https, or set "
                        "centers.insecure_plain_http in the configuration for a private network you "
                        "control\n", d->path, line, c->id, what, url, host);
    return 1;
}

size_t centers_cleartext_endpoints(const centers_dir *d, fhir_buf *diag)
{
    size_t n = 0;
    for (size_t i = 0; d && i < d->n; i++) {
        const centers_center *c = &d->centers[i];
        n += cleartext(d, c, "fhir.base", c->fhir_base, c->fhir_base_line, diag);
        n += cleartext(d, c, "fhir.auth.token_url", c->auth.token_url, c->auth.token_url_line, diag);
    }
    return n;
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

static bool listed(const char *const *v, size_t n, const char *s,
                   int (*cmp)(const char *, const char *))
{
    for (size_t i = 0; s && i < n; i++)
        if (!cmp(v[i], s))
            return true;
    return false;
}

bool centers_offers_product(const centers_center *c, const char *product)
{
    return listed(c->products, c->n_products, product, strcmp);
}

bool centers_treats_disease(const centers_center *c, const char *disease)
{
    return listed(c->diseases, c->n_diseases, disease, strcmp);
}

bool centers_accepts_payer(const centers_center *c, const char *payer)
{
    return listed(c->payers, c->n_payers, payer, strcasecmp);
}
