/* elig_fact — a patient's facts compiled against a rule set, and the clinical profile as the
 * source of those facts. See elig.h. */
#include "elig_int.h"

#include <math.h>
#include <stdio.h>

#include "map_profile.h"

/* ======================================================================================
 * Facts.
 * ====================================================================================== */

elig_factset *elig_factset_new(const elig_ruleset *rs)
{
    elig_factset *fs = fhir_xcalloc(1, sizeof *fs);
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
        v->bound = (int8_t)(mf->bound > 0 ? 1 : mf->bound < 0 ? -1 : 0);
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
        for (size_t k = 0; k < mf->nmaybe && k < MAP_FACT_SET_MAX; k++)
            v->maybe |= code_mask(f, mf->maybe[k]);
        if (mf->open)
            v->maybe = ~0ull;
        v->maybe &= ~v->bits;
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

void elig_factset_fill_profile(elig_factset *fs, elig_profile_source *s)
{
    const elig_ruleset *rs = fs->rs;
    for (size_t i = 0; i < rs->nfacts; i++) {
        int ix = rs->facts[i].profile_ix;
        const map_fact *f = ix >= 0 ? map_profile_fact_at(s->p, (size_t)ix) : NULL;
        set_index(fs, i, f ? f : elig_profile_fact(s, rs->facts[i].name));
    }
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
