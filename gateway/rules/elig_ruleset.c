/* elig_ruleset — the compiled rule set after loading: parameters (and the hash they change),
 * accessors, free. See elig.h. */
#include "elig_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>

#include <openssl/evp.h>

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
    free(rs->consults);
    free(rs->trigs);
    free(rs->params);
    free(rs);
}

int elig_ruleset_param_index(const elig_ruleset *rs, const char *name)
{
    for (size_t i = 0; i < rs->nparams; i++)
        if (!strcmp(rs->params[i].name, name))
            return (int)i;
    return -1;
}

void elig_ruleset_apply_params(elig_ruleset *rs)
{
    if (!rs->hot)
        rs->hot = fhir_xcalloc(rs->nnodes, sizeof *rs->hot);
    for (size_t i = 0; i < rs->nnodes; i++) {
        enode *n = &rs->nodes[i];
        if (n->num_param >= 0)
            n->num = rs->params[n->num_param].num;
        n->active = n->if_param < 0 || ((n->if_mask >> rs->params[n->if_param].code) & 1);
        rs->hot[i] = (hnode){n->kind, n->op, n->if_unknown, n->active, n->fact, n->nkids,
                             n->kids, n->from, n->until, n->num, n->mask};
    }
}

void elig_ruleset_compute_hash(elig_ruleset *rs)
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

int elig_ruleset_set_param(elig_ruleset *rs, const char *name, const char *value,
                           fhir_error *err)
{
    int pi = elig_ruleset_param_index(rs, name);
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
    elig_ruleset_apply_params(rs);
    elig_ruleset_compute_hash(rs);
    return 0;
}

const char *elig_ruleset_param(const elig_ruleset *rs, const char *name)
{
    int pi = elig_ruleset_param_index(rs, name);
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

int elig_ruleset_enable_pending(elig_ruleset *rs, const char *key, fhir_error *err)
{
    int i = elig_ruleset_find(rs, key);
    if (i < 0)
        return fhir_error_set(err, "no indication \"%s\" in the criteria", key);
    eind *ind = &rs->inds[i];
    if (!ind->pending)
        return fhir_error_set(err, "indication \"%s\" is not pending (its label is in force already)", key);
    if (ind->enabled)
        return 0;
    size_t ol = strlen(rs->overrides);
    int w = snprintf(rs->overrides + ol, sizeof rs->overrides - ol, "enable_pending=%s\n", key);
    if (w < 0 || (size_t)w >= sizeof rs->overrides - ol)
        return fhir_error_set(err, "too many criteria overrides");
    ind->enabled = true;
    elig_ruleset_compute_hash(rs);
    return 0;
}

void elig_ruleset_show_pending(elig_ruleset *rs, bool show) { rs->show_pending = show; }

bool elig_ruleset_is_pending(const elig_ruleset *rs, size_t i)
{
    return i < rs->ninds && rs->inds[i].pending && !rs->inds[i].enabled;
}

size_t elig_ruleset_consult_count(const elig_ruleset *rs) { return rs->nconsults; }

const char *elig_ruleset_hash(const elig_ruleset *rs) { return rs->hash; }
size_t elig_ruleset_count(const elig_ruleset *rs) { return rs->ninds; }

const char *elig_ruleset_key(const elig_ruleset *rs, size_t i)
{
    return i < rs->ninds ? rs->inds[i].key : NULL;
}

int elig_ruleset_label(const elig_ruleset *rs, size_t i, elig_label *out)
{
    memset(out, 0, sizeof *out);
    if (i >= rs->ninds)
        return -1;
    const eind *d = &rs->inds[i];
    out->product = d->product;
    out->indication = d->indication;
    out->generic = d->generic;
    out->brand = d->brand;
    out->document = d->src_doc;
    out->revision = d->src_rev;
    out->url = d->src_url;
    return 0;
}

int elig_ruleset_find(const elig_ruleset *rs, const char *key)
{
    for (size_t i = 0; i < rs->ninds; i++)
        if (!strcmp(rs->inds[i].key, key))
            return (int)i;
    return -1;
}

size_t elig_ruleset_fact_count(const elig_ruleset *rs) { return rs->nfacts; }

int elig_ruleset_fact_index(const elig_ruleset *rs, const char *name)
{
    for (size_t i = 0; name && i < rs->nfacts; i++)
        if (!strcmp(rs->facts[i].name, name))
            return (int)i;
    return -1;
}

const char *elig_ruleset_fact_name(const elig_ruleset *rs, size_t i, map_fact_type *type)
{
    if (i >= rs->nfacts)
        return NULL;
    const efact *f = &rs->facts[rs->fact_order[i]];
    if (type)
        *type = f->type;
    return f->name;
}

