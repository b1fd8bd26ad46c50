/* intake_bundle — checks and stores a referral Bundle at a center. See intake_bundle.h. */
#include "intake_bundle.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crashpoint.h"
#include "fhir_alloc.h"
#include "fhir_arena.h"
#include "fhir_clock.h"
#include "fhir_json.h"

typedef struct ent {
    const fhir_node *res;
    const char *type, *full_url, *rid;
    char *ident_sys, *ident_val; /* from request.ifNoneExist (NULL: none) */
    int64_t id, version;
    bool existing;
    char ref[160];               /* "Type/id" once known */
} ent;

typedef struct bundle {
    ent *v;
    size_t n;
} bundle;

static int bad(fhir_error *err, int code)
{
    err->code = code;
    return -1;
}

/* The entry a reference names, or NULL. */
static const ent *resolve(const bundle *b, const char *ref)
{
    for (size_t i = 0; i < b->n; i++) {
        const ent *e = &b->v[i];
        if (e->full_url && !strcmp(e->full_url, ref))
            return e;
        size_t tl = strlen(e->type);
        if (e->rid && !strncmp(ref, e->type, tl) && ref[tl] == '/' && !strcmp(ref + tl + 1, e->rid))
            return e;
    }
    return NULL;
}

/* Every "reference" string under n resolves (path: where n is, for the message). */
static int refs_resolve(const bundle *b, const fhir_node *n, char *path, size_t cap, size_t len, fhir_error *err)
{
    if (n->kind != FHIR_OBJECT && n->kind != FHIR_ARRAY)
        return 0;
    for (const fhir_node *c = fhir_node_first(n); c; c = c->next) {
        size_t l = len;
        if (c->key && l + c->key_len + 2 < cap) {
            path[l++] = '.';
            memcpy(path + l, c->key, c->key_len);
            l += c->key_len;
            path[l] = 0;
        }
        if (c->key && fhir_node_key_is(c, "reference") && c->kind == FHIR_STRING) {
            const char *r = c->text;
            if (r[0] != '#' && !resolve(b, r)) {
                fhir_error_set(err, "reference \"%.200s\" at %s does not resolve within the Bundle", r, path);
                return bad(err, 422);
            }
        } else if (refs_resolve(b, c, path, cap, l, err)) {
            return -1;
        }
        path[len] = 0;
    }
    return 0;
}

/* "identifier=[system|]value" -> copies (caller frees); 0, or -1 when another form. */
static int parse_if_none_exist(const char *q, char **sys, char **val)
{
    *sys = *val = NULL;
    if (strncmp(q, "identifier=", 11) || !q[11] || strchr(q + 11, '&'))
        return -1;
    const char *t = q + 11, *bar = strchr(t, '|');
    if (bar) {
        if (!bar[1])
            return -1;
        *sys = fhir_xmalloc((size_t)(bar - t) + 1);
        memcpy(*sys, t, (size_t)(bar - t));
        (*sys)[bar - t] = 0;
        *val = fhir_xstrdup(bar + 1);
    } else {
        *val = fhir_xstrdup(t);
    }
    return 0;
}

static void bundle_free(bundle *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->v[i].ident_sys);
        free(b->v[i].ident_val);
    }
    free(b->v);
    b->v = NULL;
    b->n = 0;
}

/* Reads and checks the entries into b. 0, or -1 with err (code set). */
static int bundle_read(const fhir_node *bundle_node, bundle *b, fhir_error *err)
{
    memset(b, 0, sizeof *b);
    const char *rt = fhir_node_resource_type(bundle_node);
    if (!rt || strcmp(rt, "Bundle")) {
        fhir_error_set(err, "the body is not a Bundle (resourceType %.64s)", rt ? rt : "missing");
        return bad(err, 400);
    }
    const char *type = fhir_node_str(fhir_node_get(bundle_node, "type"));
    if (!type || strcmp(type, "transaction")) {
        fhir_error_set(err, "Bundle.type must be transaction (is %.64s)", type ? type : "missing");
        return bad(err, 400);
    }
    const fhir_node *entries = fhir_node_get(bundle_node, "entry");
    size_t n = fhir_node_count(entries);
    if (!n) {
        fhir_error_set(err, "the Bundle has no entries");
        return bad(err, 422);
    }
    if (n > INTAKE_BUNDLE_MAX_ENTRIES) {
        fhir_error_set(err, "the Bundle has %zu entries (at most %d)", n, INTAKE_BUNDLE_MAX_ENTRIES);
        return bad(err, 422);
    }
    b->v = fhir_xcalloc(n, sizeof *b->v);
    size_t i = 0;
    for (const fhir_node *e = fhir_node_first(entries); e; e = e->next, i++) {
        ent *x = &b->v[b->n++];
        x->res = fhir_node_get(e, "resource");
        x->type = x->res ? fhir_node_resource_type(x->res) : NULL;
        if (!x->type) {
            fhir_error_set(err, "entry %zu has no resource with a resourceType", i);
            return bad(err, 422);
        }
        x->full_url = fhir_node_str(fhir_node_get(e, "fullUrl"));
        x->rid = fhir_node_resource_id(x->res);
        const char *method = fhir_node_path_str(e, "request.method");
        const char *url = fhir_node_path_str(e, "request.url");
        if (!method || strcmp(method, "POST")) {
            fhir_error_set(err, "entry %zu (%s): request.method must be POST (only creates are accepted), is %.16s", i,
                           x->type, method ? method : "missing");
            return bad(err, 422);
        }
        if (!url || strcmp(url, x->type)) {
            fhir_error_set(err, "entry %zu (%s): request.url must be %s", i, x->type, x->type);
            return bad(err, 422);
        }
        const char *ine = fhir_node_path_str(e, "request.ifNoneExist");
        if (ine && parse_if_none_exist(ine, &x->ident_sys, &x->ident_val)) {
            fhir_error_set(err, "entry %zu (%s): ifNoneExist \"%.200s\" is not supported (only identifier=system|value)",
                           i, x->type, ine);
            return bad(err, 422);
        }
        for (size_t k = 0; x->full_url && k + 1 < b->n; k++)
            if (b->v[k].full_url && !strcmp(b->v[k].full_url, x->full_url)) {
                fhir_error_set(err, "entries %zu and %zu share the fullUrl %.200s", k, i, x->full_url);
                return bad(err, 422);
            }
    }
    size_t n_sr = 0, n_task = 0;
    for (i = 0; i < b->n; i++) {
        n_sr += !strcmp(b->v[i].type, "ServiceRequest");
        n_task += !strcmp(b->v[i].type, "Task");
    }
    if (!n_sr || !n_task) {
        fhir_error_set(err, "the Bundle has %s: a referral needs a ServiceRequest and a Task",
                       !n_sr && !n_task ? "neither a ServiceRequest nor a Task"
                       : !n_sr          ? "no ServiceRequest"
                                        : "no Task");
        return bad(err, 422);
    }
    char path[512];
    for (i = 0; i < b->n; i++) {
        const ent *x = &b->v[i];
        if (!strcmp(x->type, "Task")) {
            const char *focus = fhir_node_path_str(x->res, "focus.reference");
            const ent *f = focus ? resolve(b, focus) : NULL;
            if (!f || strcmp(f->type, "ServiceRequest")) {
                fhir_error_set(err, "entry %zu (Task): Task.focus must reference a ServiceRequest of the Bundle", i);
                return bad(err, 422);
            }
        }
        snprintf(path, sizeof path, "%s", x->type);
        if (refs_resolve(b, x->res, path, sizeof path, strlen(path), err)) {
            fhir_error_prefix(err, "entry %zu (%s)", i, x->type);
            return bad(err, 422);
        }
    }
    return 0;
}

int intake_bundle_check(const fhir_node *bundle_node, fhir_error *err)
{
    bundle b;
    int rc = bundle_read(bundle_node, &b, err);
    bundle_free(&b);
    return rc;
}

int intake_urank(const char *p)
{
    if (!p)
        return 3;
    return !strcmp(p, "stat") ? 0 : !strcmp(p, "asap") ? 1 : !strcmp(p, "urgent") ? 2 : 3;
}

/* ---- storing ----------------------------------------------------------------------------------- */

typedef struct found {
    int64_t id, version, n;
} found;

static int found_cb(void *ctx, const store_intake_res *r)
{
    found *f = ctx;
    if (!f->n++) {
        f->id = r->id;
        f->version = r->version;
    }
    return 0;
}

/* A copy of n with every reference that names an entry rewritten to its "Type/id". */
static fhir_node *rewrite(fhir_arena *a, const bundle *b, const fhir_node *n)
{
    if (n->kind != FHIR_OBJECT && n->kind != FHIR_ARRAY)
        return fhir_node_clone(a, n);
    fhir_node *out = fhir_node_new(a, n->kind);
    for (const fhir_node *c = fhir_node_first(n); c; c = c->next) {
        fhir_node *v;
        const ent *e = NULL;
        if (c->key && fhir_node_key_is(c, "reference") && c->kind == FHIR_STRING && (e = resolve(b, c->text)))
            v = fhir_node_new_str(a, e->ref);
        else
            v = rewrite(a, b, c);
        fhir_node_append(a, out, c->key, c->key ? c->key_len : 0, v);
    }
    return out;
}

/* The resource as stored: id, meta (versionId 1, lastUpdated), references rewritten, a
 * requested Task received. */
static fhir_node *as_stored(fhir_arena *a, const bundle *b, const ent *x, const char *now)
{
    fhir_node *r = rewrite(a, b, x->res);
    fhir_node *out = fhir_node_new(a, FHIR_OBJECT);
    bool is_task = !strcmp(x->type, "Task");
    char id[32];
    snprintf(id, sizeof id, "%lld", (long long)x->id);
    for (const fhir_node *c = fhir_node_first(r); c; c = c->next) {
        if (fhir_node_key_is(c, "id") || fhir_node_key_is(c, "meta"))
            continue;
        if (is_task && fhir_node_key_is(c, "status") && c->kind == FHIR_STRING && !strcmp(c->text, "requested")) {
            fhir_node_set_str(a, out, "status", "received");
            continue;
        }
        fhir_node_append(a, out, c->key, c->key_len, fhir_node_clone(a, c));
        if (fhir_node_key_is(c, "resourceType")) {
            fhir_node_set_str(a, out, "id", id);
            fhir_node *meta = fhir_node_set_obj(a, out, "meta");
            fhir_node_set_str(a, meta, "versionId", "1");
            fhir_node_set_str(a, meta, "lastUpdated", now);
        }
    }
    return out;
}

static int store_identifiers(store *st, const ent *x, fhir_error *err)
{
    for (const fhir_node *i = fhir_node_first(fhir_node_get(x->res, "identifier")); i; i = i->next) {
        const char *v = fhir_node_str(fhir_node_get(i, "value"));
        if (v && store_intake_ident_add(st, x->id, x->type, fhir_node_str(fhir_node_get(i, "system")), v, err))
            return -1;
    }
    if (x->ident_val && store_intake_ident_add(st, x->id, x->type, x->ident_sys, x->ident_val, err))
        return -1;
    return 0;
}

static int tx_body(store *st, bundle *b, const char *client_id, fhir_buf *response, intake_tx_result *res,
                   fhir_error *err)
{
    int64_t now_ms = fhir_clock_now_ms();
    char now[40];
    fhir_clock_format_instant(now_ms, now, sizeof now);
    /* 1. which entries are stored already (ifNoneExist), ids for the others */
    for (size_t i = 0; i < b->n; i++) {
        ent *x = &b->v[i];
        if (x->ident_val) {
            found f = {0};
            if (store_intake_res_by_ident(st, x->type, x->ident_sys, x->ident_val, 2, found_cb, &f, err) < 0)
                return bad(err, 500);
            if (f.n > 1) {
                fhir_error_set(err, "entry %zu (%s): %lld stored resources carry identifier %.200s", i, x->type,
                               (long long)f.n, x->ident_val);
                return bad(err, 412);
            }
            if (f.n == 1) {
                x->existing = true;
                x->id = f.id;
                x->version = f.version;
            }
        }
        if (!x->existing) {
            if (store_intake_res_new(st, x->type, client_id, &x->id, err))
                return bad(err, 500);
            x->version = 1;
        }
        snprintf(x->ref, sizeof x->ref, "%s/%lld", x->type, (long long)x->id);
    }
    /* 2. one inbox referral per new Task */
    for (size_t i = 0; i < b->n; i++) {
        ent *x = &b->v[i];
        if (x->existing || strcmp(x->type, "Task"))
            continue;
        const ent *sr = resolve(b, fhir_node_path_str(x->res, "focus.reference"));
        const char *prio = fhir_node_str(fhir_node_get(sr->res, "priority"));
        const char *ts = fhir_node_str(fhir_node_get(x->res, "status"));
        const char *bs = NULL;
        for (const fhir_node *c = fhir_node_first(fhir_node_path(x->res, "businessStatus.coding")); c && !bs; c = c->next)
            bs = fhir_node_str(fhir_node_get(c, "code"));
        store_intake_ref r = {.client_id = client_id, .sr_id = sr->id, .task_id = x->id, .priority = prio,
                              .urank = intake_urank(prio), .task_status = !ts || !strcmp(ts, "requested") ? "received" : ts,
                              .business_status = bs ? bs : "2.0", .received_ms = now_ms};
        int64_t rid;
        if (store_intake_ref_add(st, &r, &rid, err))
            return bad(err, 500);
        if (res->n_referrals < sizeof res->referrals / sizeof res->referrals[0])
            res->referrals[res->n_referrals++] = rid;
        store_actor who = {.name = client_id, .role = "referring-site"};
        char detail[200];
        snprintf(detail, sizeof detail, "received from %s: ServiceRequest/%lld, Task/%lld", client_id,
                 (long long)sr->id, (long long)x->id);
        if (store_intake_audit(st, &who, "intake-received", rid, NULL, r.task_status, detail, err))
            return bad(err, 500);
        /* the referral's number on its resources (the Bundle's other new resources too) */
        for (size_t k = 0; k < b->n; k++)
            if (!b->v[k].existing)
                b->v[k].version = -rid; /* marker: written with this referral below */
    }
    /* 3. write the new resources */
    fhir_arena *a = fhir_arena_new(0);
    for (size_t i = 0; i < b->n; i++) {
        ent *x = &b->v[i];
        if (x->existing) {
            res->matched++;
            continue;
        }
        int64_t rid = x->version < 0 ? -x->version : 0;
        x->version = 1;
        fhir_node *r = as_stored(a, b, x, now);
        char *json = fhir_json_to_string(r, FHIR_JSON_COMPACT, INTAKE_RESOURCE_MAX);
        if (!json) {
            fhir_arena_free(a);
            fhir_error_set(err, "entry %zu (%s) is larger than %u bytes", i, x->type, INTAKE_RESOURCE_MAX);
            return bad(err, 422);
        }
        int rc = store_intake_res_put(st, x->id, rid, 1, now_ms, json, err) || store_identifiers(st, x, err);
        free(json);
        if (rc) {
            fhir_arena_free(a);
            return bad(err, 500);
        }
        res->created++;
    }
    fhir_arena_free(a);
    /* 4. the transaction-response */
    fhir_buf_printf(response, "{\"resourceType\":\"Bundle\",\"type\":\"transaction-response\",\"entry\":[");
    for (size_t i = 0; i < b->n; i++) {
        const ent *x = &b->v[i];
        fhir_buf_printf(response,
                        "%s{\"response\":{\"status\":\"%s\",\"location\":\"%s/_history/%lld\",\"etag\":\"W/\\\"%lld\\\"\","
                        "\"lastModified\":\"%s\"}}",
                        i ? "," : "", x->existing ? "200 OK" : "201 Created", x->ref, (long long)x->version,
                        (long long)x->version, now);
    }
    fhir_buf_puts(response, "]}");
    if (response->overflow) {
        fhir_error_set(err, "the transaction-response is larger than its cap");
        return bad(err, 500);
    }
    return 0;
}

int intake_transaction(store *st, const fhir_node *bundle_node, const char *client_id, fhir_buf *response,
                       intake_tx_result *res, fhir_error *err)
{
    memset(res, 0, sizeof *res);
    bundle b;
    if (bundle_read(bundle_node, &b, err)) {
        bundle_free(&b);
        return -1;
    }
    if (store_begin(st, err)) {
        bundle_free(&b);
        return bad(err, 500);
    }
    size_t mark = response->len;
    int rc = tx_body(st, &b, client_id, response, res, err);
    if (rc == 0)
        crashpoint("intake.writing");
    if (rc == 0 && store_commit(st, err))
        rc = bad(err, 500);
    if (rc == 0)
        crashpoint("intake.stored");
    if (rc) {
        if (store_in_transaction(st))
            store_rollback(st);
        response->len = mark;
        memset(res, 0, sizeof *res);
    }
    bundle_free(&b);
    return rc;
}
