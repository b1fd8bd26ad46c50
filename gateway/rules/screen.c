/* screen — one patient's resources -> profile -> verdict -> JSON. See screen.h. */
#include "screen.h"

#include <stdlib.h>
#include <string.h>

#define SCREEN_JSON_RESERVE 8192 /* bytes reserved in a verdict's buffer before writing it */

struct screen {
    const map_tables *t;
    const elig_ruleset *rs;
    map_profile_opts o;
    map_profile *p;        /* last patient's profile, NULL when none */
    elig_factset *fs;
    elig_result *res;
};

screen *screen_new(const map_tables *t, const elig_ruleset *rs, const map_profile_opts *o)
{
    screen *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->t = t;
    s->rs = rs;
    if (o)
        s->o = *o;
    else
        map_profile_opts_default(&s->o);
    elig_profile_opts_apply(rs, &s->o); /* the profile's 1L anchor follows the criteria */
    s->fs = elig_factset_new(rs);
    s->res = elig_result_new(rs);
    return s;
}

void screen_free(screen *s)
{
    if (!s)
        return;
    map_profile_free(s->p);
    elig_result_free(s->res);
    elig_factset_free(s->fs);
    free(s);
}

int screen_patient(screen *s, const fhir_node *const *res, size_t n, fhir_error *err)
{
    map_profile_free(s->p);
    s->p = map_profile_build(s->t, res, n, &s->o, err);
    if (!s->p)
        return -1;
    elig_profile_source src;
    elig_profile_source_init(&src, s->p, &s->o);
    elig_factset_fill_profile(s->fs, &src);
    elig_evaluate(s->rs, s->fs, s->o.as_of_days, s->res);
    return 0;
}

void screen_set_records(screen *s, const elig_records *rec)
{
    if (s->p)
        elig_result_set_records(s->res, rec);
}

const map_profile *screen_profile(const screen *s) { return s->p; }
const elig_factset *screen_facts(const screen *s) { return s->p ? s->fs : NULL; }
const elig_result *screen_result(const screen *s) { return s->p ? s->res : NULL; }
const map_profile_opts *screen_opts(const screen *s) { return &s->o; }

typedef int (*json_writer)(const elig_ruleset *, const elig_factset *, const elig_result *,
                           const char *, fhir_buf *);

static int write_with(const screen *s, const char *patient_id, fhir_buf *out, json_writer w)
{
    if (!s->p)
        return -1;
    /* a verdict is ~6 KB: allocated once rather than doubled up from 256 bytes (each doubling
     * copies what is written), when out's cap leaves the room */
    if (!out->overflow && (!out->cap || out->cap - out->len >= SCREEN_JSON_RESERVE))
        fhir_buf_reserve(out, SCREEN_JSON_RESERVE);
    return w(s->rs, s->fs, s->res, patient_id, out);
}

int screen_write_json(const screen *s, const char *patient_id, fhir_buf *out)
{
    return write_with(s, patient_id, out, elig_result_write_json);
}

int screen_write_verdict_json(const screen *s, const char *patient_id, fhir_buf *out)
{
    return write_with(s, patient_id, out, elig_result_write_verdict_json);
}

int screen_summarize(const screen *s, screen_summary *out, fhir_buf *products, fhir_buf *possible)
{
    memset(out, 0, sizeof *out);
    if (!s->p)
        return -1;
    const elig_result *r = s->res;
    const char *u = elig_urgency_name(elig_result_urgency(r));
    const char *c = elig_consult_name(elig_result_consult(r));
    out->urgency = u ? u : "";
    out->consult = c ? c : "";
    const map_fact *d = map_profile_fact(s->p, "primary_disease");
    if (d && d->known) {
        if (d->type != MAP_FACT_CODE && d->type != MAP_FACT_STRING)
            return -1;
        out->disease = d->str ? d->str : "";
    }
    map_profile_last_event_day(s->p, MAP_EVENT_PROGRESSION, out->relapse_day, sizeof out->relapse_day);
    const char *names[ELIG_MAX_FACTS];
    size_t nm = elig_result_missing(s->rs, s->fs, r, names, ELIG_MAX_FACTS);
    out->missing = nm < ELIG_MAX_FACTS ? nm : ELIG_MAX_FACTS;
    if (elig_result_write_products(s->rs, r, ELIG_ELIGIBLE, products) ||
        elig_result_write_products(s->rs, r, ELIG_POSSIBLY_ELIGIBLE, possible))
        return -1;
    return 0;
}

size_t screen_indications(const elig_ruleset *rs, const elig_result *r, bool with_possible,
                          size_t *idx, size_t max)
{
    elig_category best = elig_result_category(r);
    elig_category want;
    if (best == ELIG_ELIGIBLE)
        want = ELIG_ELIGIBLE; /* an eligible patient counts for what it is eligible for */
    else if (best == ELIG_POSSIBLY_ELIGIBLE && with_possible)
        want = ELIG_POSSIBLY_ELIGIBLE;
    else
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < elig_ruleset_count(rs); i++)
        if (elig_result_ind_category(r, i) == want) {
            if (n < max)
                idx[n] = i;
            n++;
        }
    return n;
}

size_t screen_consult_indications(const elig_ruleset *rs, const elig_result *r, size_t *idx,
                                  size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < elig_ruleset_count(rs); i++)
        if (elig_result_ind_disease_matches(rs, r, i)) {
            if (n < max)
                idx[n] = i;
            n++;
        }
    return n;
}
