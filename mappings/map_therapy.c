/* map_therapy — the therapy facts of a profile: lines of therapy (map_lot), prior classes and
 * drugs, transplant and CAR T history, relapse and refractoriness (three-valued; see
 * mappings/README.md). Part of the profile builder (map_profile_int.h). */
#include "map_profile_int.h"

static int cmp_dated(const void *a, const void *b)
{
    const dated *x = a, *y = b;
    return x->day < y->day ? -1 : (x->day > y->day);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : (x > y);
}

/* First dated event in [lo, hi]; NULL when none. */
static const dated *first_in(const vec *v, int64_t lo, int64_t hi)
{
    const dated *d = v->v;
    for (size_t i = 0; i < v->n; i++)
        if (d[i].day >= lo && d[i].day <= hi)
            return &d[i];
    return NULL;
}

static int cmp_event(const void *a, const void *b)
{
    const map_event *x = a, *y = b;
    if (x->day != y->day)
        return x->day < y->day ? -1 : 1;
    return (int)x->kind - (int)y->kind;
}

/* The profile's timeline: responses and progressions (sorted by the caller's qsort above or
 * not), transplants and CAR T events, in date order. */
static void timeline_events(builder *b)
{
    map_profile *p = b->p;
    size_t n = b->resp.n + b->prog.n + b->ev.n;
    p->nevents = 0;
    p->events = fhir_arena_calloc(p->a, (n ? n : 1) * sizeof *p->events);
    if (!p->events)
        abort();
    const dated *r = b->resp.v, *g = b->prog.v;
    for (size_t i = 0; i < b->resp.n; i++)
        p->events[p->nevents++] = (map_event){MAP_EVENT_RESPONSE, r[i].day, r[i].ref};
    for (size_t i = 0; i < b->prog.n; i++)
        p->events[p->nevents++] = (map_event){MAP_EVENT_PROGRESSION, g[i].day, g[i].ref};
    const map_lot_event *e = b->ev.v;
    for (size_t i = 0; i < b->ev.n; i++) {
        map_event_kind k = e[i].kind == MAP_LOT_AUTO_HCT ? MAP_EVENT_AUTO_HCT
                         : e[i].kind == MAP_LOT_ALLO_HCT ? MAP_EVENT_ALLO_HCT
                         : e[i].kind == MAP_LOT_HCT      ? MAP_EVENT_HCT
                         : e[i].kind == MAP_LOT_CAR_T    ? MAP_EVENT_CAR_T
                                                         : MAP_EVENT_CAR_T_COLLECTION;
        p->events[p->nevents++] = (map_event){k, e[i].day, e[i].ref};
    }
    if (p->nevents > 1)
        qsort(p->events, p->nevents, sizeof *p->events, cmp_event);
}

void map_therapy_facts(builder *b)
{
    map_profile *p = b->p;
    const map_profile_opts *o = b->o;
    const cond *c = b->conds.v;

    /* relapse-coded diagnoses count as progression / response events */
    for (size_t i = 0; i < b->conds.n; i++) {
        if (!concept_is_heme(c[i].concept) || c[i].status_day == INT64_MIN)
            continue;
        if (c[i].code_status == 2 || c[i].relapse_status) {
            dated *d = vec_push(&b->prog);
            d->day = c[i].status_day;
            d->ref = c[i].ref;
            d->what = "relapse";
        } else if (c[i].code_status == 1) {
            dated *d = vec_push(&b->resp);
            d->day = c[i].status_day;
            d->ref = c[i].ref;
            d->what = "remission";
        }
    }
    if (b->prog.n)
        qsort(b->prog.v, b->prog.n, sizeof(dated), cmp_dated);
    if (b->resp.n)
        qsort(b->resp.v, b->resp.n, sizeof(dated), cmp_dated);
    timeline_events(b);
    int64_t *pdays = malloc((b->prog.n ? b->prog.n : 1) * sizeof *pdays);
    if (!pdays)
        abort();
    for (size_t i = 0; i < b->prog.n; i++)
        pdays[i] = ((dated *)b->prog.v)[i].day;
    if (b->prog.n)
        qsort(pdays, b->prog.n, sizeof *pdays, cmp_i64);

    const map_fact *pd = F(p, "primary_disease");
    map_lot_params lp;
    map_lot_params_default(&lp);
    lp.window_days = o->lot_window_days;
    lp.gap_days = o->lot_gap_days;
    lp.as_of = p->as_of;
    lp.myeloma = pd->known && (!strcmp(pd->str, "mm") || !strcmp(pd->str, "pcl"));
    lp.progression_days = pdays;
    lp.nprogression = b->prog.n;
    map_lot_result r;
    map_lot_derive(b->ex.v, b->ex.n, b->ev.v, b->ev.n, &lp, &r);
    free(pdays);

    p->nlines = r.nlines;
    p->lines = fhir_arena_calloc(p->a, (r.nlines ? r.nlines : 1) * sizeof *p->lines);
    if (!p->lines)
        abort();
    fhir_buf ev;
    fhir_buf_init(&ev, 1u << 16);
    for (size_t k = 0; k < r.nlines; k++) {
        const map_lot_line *s = &r.lines[k];
        map_line *l = &p->lines[k];
        l->number = (int)k + 1;
        l->start_days = s->start;
        l->end_days = s->end;
        l->ndrugs = s->ndrugs < MAP_LINE_MAX_DRUGS ? s->ndrugs : MAP_LINE_MAX_DRUGS;
        for (size_t i = 0; i < l->ndrugs; i++)
            l->drugs[i] = s->drugs[i];
        l->classes = s->classes;
        l->has_auto_hct = s->auto_hct;
        l->has_allo_hct = s->allo_hct;
        l->is_car_t = s->car_t;
        l->maintenance = s->maintenance;
        l->unknown_agents = s->unknown_agents;
        l->end_unknown = s->end_unknown;
        l->end_reason = s->end_reason;
        fhir_buf_reset(&ev);
        for (size_t i = 0; i < s->nrefs && i < MAP_LINE_MAX_REFS; i++)
            put2(&ev, i ? " " : "", r.refs[s->first_ref + i]);
        if (s->nrefs > MAP_LINE_MAX_REFS)
            fhir_buf_printf(&ev, " (+%zu more)", s->nrefs - MAP_LINE_MAX_REFS);
        l->evidence = fhir_arena_strdup(p->a, fhir_buf_cstr(&ev));
        if (!l->evidence)
            l->evidence = "(evidence dropped: profile memory cap)";
    }
    map_lot_result_free(&r);

    /* lines, classes, drugs */
    size_t nmeds = b->ex.n;
    int outside = -1; /* first line made only of therapy without agents (it may hide more lines) */
    bool any_unknown = false;
    for (size_t k = 0; k < p->nlines; k++) {
        const map_line *l = &p->lines[k];
        any_unknown |= l->unknown_agents;
        if (outside < 0 && l->unknown_agents && !l->ndrugs && !l->has_auto_hct && !l->has_allo_hct && !l->is_car_t)
            outside = (int)k;
    }
    fhir_buf_reset(&ev);
    for (size_t k = 0; k < p->nlines && k < 12; k++) {
        const map_line *l = &p->lines[k];
        char s1[16], s2[16];
        fmt_day(l->start_days, s1, sizeof s1);
        fmt_day(l->end_days, s2, sizeof s2);
        char num[12];
        putn(&ev, k ? "; " : "", "line ", fmt_int(l->number, num), " ", s1, "..",
             l->end_unknown ? "(end not recorded) " : "", l->end_unknown ? "" : s2, " ", AJOIN_END);
        for (size_t i = 0; i < l->ndrugs; i++)
            put2(&ev, i ? "+" : "", l->drugs[i]);
        if (l->unknown_agents)
            fhir_buf_printf(&ev, "%sagents not recorded", l->ndrugs ? " + " : "");
        if (l->has_auto_hct || l->has_allo_hct)
            fhir_buf_printf(&ev, " -> %s HCT", l->has_auto_hct ? "auto" : "allo");
        if (l->is_car_t && !l->ndrugs)
            fhir_buf_puts(&ev, "CAR T");
        putn(&ev, " [", l->evidence, "]", AJOIN_END);
    }
    if (p->nlines) {
        char last[16], num[12];
        fmt_day(p->lines[p->nlines - 1].end_days, last, sizeof last);
        set_num(p, "lines", (double)p->nlines,
                ajoin(p, fmt_int((int)p->nlines, num), " line", p->nlines == 1 ? "" : "s",
                      outside >= 0 ? " at least" : "", ", last ", p->lines[p->nlines - 1].end_reason &&
                      !strcmp(p->lines[p->nlines - 1].end_reason, "ongoing") ? "ongoing, latest" : "ended",
                      " ", last, ": ", fhir_buf_cstr(&ev), AJOIN_END));
    } else {
        set_num(p, "lines", 0, astr(p, "no antineoplastic therapy recorded (%zu mapped drug exposure(s))", nmeds));
    }
    if (outside >= 0) {
        char s1[16];
        fmt_day(p->lines[outside].start_days, s1, sizeof s1);
        F(p, "lines")->bound = MAP_FACT_AT_LEAST;
        F(p, "lines")->settle = ajoin(p,
                                      "the treatment summary of the therapy recorded without its agents from ",
                                      s1, " (", p->lines[outside].evidence,
                                      "): each regimen with its agents and dates", AJOIN_END);
    }
    F(p, "prior_classes")->known = true;
    F(p, "prior_drugs")->known = true;
    if (any_unknown) {
        const char *why = NULL;
        for (size_t k = 0; k < p->nlines && !why; k++)
            if (p->lines[k].unknown_agents) {
                char s1[16];
                fmt_day(p->lines[k].start_days, s1, sizeof s1);
                why = astr(p, "the regimen (agents and dates) of line %d from %s, recorded without its agents (%s)",
                           p->lines[k].number, s1, p->lines[k].evidence);
            }
        F(p, "prior_classes")->open = F(p, "prior_drugs")->open = true;
        F(p, "prior_classes")->settle = F(p, "prior_drugs")->settle = why;
    }
    fhir_buf_reset(&ev);
    for (size_t k = 0; k < p->nlines; k++) {
        const map_line *l = &p->lines[k];
        for (size_t i = 0; i < l->ndrugs; i++)
            set_add(p, "prior_drugs", l->drugs[i]);
        for (int ci = 0; ci < MAP_CLASS_COUNT; ci++)
            if (l->classes & (1u << ci))
                set_add(p, "prior_classes", map_class_key((map_class)ci));
    }
    /* drugs outside any line (e.g. a lone steroid) are not "therapy received" */
    for (size_t k = 0; k < p->nlines && k < 12; k++) {
        const map_line *l = &p->lines[k];
        char s1[16];
        fmt_day(l->start_days, s1, sizeof s1);
        char num[12];
        putn(&ev, k ? "; " : "", "line ", fmt_int(l->number, num), " (", s1, "): ", AJOIN_END);
        for (size_t i = 0; i < l->ndrugs; i++)
            put2(&ev, i ? "+" : "", l->drugs[i]);
        if (l->unknown_agents)
            fhir_buf_printf(&ev, "%sagents not recorded", l->ndrugs ? " + " : "");
        if (l->has_auto_hct || l->has_allo_hct)
            fhir_buf_printf(&ev, "%s%s HCT", l->ndrugs ? " -> " : "", l->has_auto_hct ? "auto" : "allo");
        if (l->is_car_t && !l->ndrugs)
            fhir_buf_puts(&ev, "CAR T");
    }
    const char *lines_ev = p->nlines ? ajoin(p, fhir_buf_cstr(&ev),
                                             AJOIN_END) : "no antineoplastic therapy recorded";
    F(p, "prior_classes")->evidence = lines_ev;
    F(p, "prior_drugs")->evidence = lines_ev;
    if (p->nlines) {
        F(p, "first_line_classes")->known = true;
        for (int ci = 0; ci < MAP_CLASS_COUNT; ci++)
            if (p->lines[0].classes & (1u << ci))
                set_add(p, "first_line_classes", map_class_key((map_class)ci));
        F(p, "first_line_classes")->evidence = ajoin(p, "line 1: ", p->lines[0].evidence, AJOIN_END);
        if (p->lines[0].unknown_agents) {
            F(p, "first_line_classes")->open = true;
            F(p, "first_line_classes")->settle = F(p, "prior_classes")->settle;
        }
    } else {
        set_unknown(p, "first_line_classes", "no line of therapy");
    }
    fhir_buf_free(&ev);

    /* transplant and CAR T history */
    const map_lot_event *e = b->ev.v;
    const char *auto_ref = NULL, *allo_ref = NULL, *any_ref = NULL, *cart_ref = NULL;
    for (size_t i = 0; i < b->ev.n; i++) {
        if (e[i].kind == MAP_LOT_AUTO_HCT && !auto_ref)
            auto_ref = e[i].ref;
        else if (e[i].kind == MAP_LOT_ALLO_HCT && !allo_ref)
            allo_ref = e[i].ref;
        else if (e[i].kind == MAP_LOT_HCT && !any_ref)
            any_ref = e[i].ref;
        else if (e[i].kind == MAP_LOT_CAR_T && !cart_ref)
            cart_ref = e[i].ref;
    }
    const map_lot_exposure *x = b->ex.v;
    for (size_t i = 0; i < b->ex.n && !cart_ref; i++)
        if (!strcmp(x[i].drug->role, "car_t"))
            cart_ref = x[i].ref;
    const cond *hx_hct = find_cond(b, "hx_hct", 2, NULL);
    const cond *hx_allo = find_cond(b, "hx_allo", 2, NULL);
    const cond *hx_cart = find_cond(b, "hx_car_t", 2, NULL);
    if (!any_ref && hx_hct)
        any_ref = hx_hct->ref;
    if (!allo_ref && hx_allo)
        allo_ref = hx_allo->ref;
    if (auto_ref)
        set_bool(p, "prior_auto_hct", true, ajoin(p, auto_ref, " autologous HCT", AJOIN_END));
    else if (any_ref)
        set_unknown(p, "prior_auto_hct", ajoin(p, any_ref, " transplant of unspecified type", AJOIN_END));
    else
        set_bool(p, "prior_auto_hct", false, "no HCT procedure or transplant status recorded");
    if (allo_ref)
        set_bool(p, "prior_allo_hct", true, ajoin(p, allo_ref, " allogeneic HCT (or GVHD)", AJOIN_END));
    else if (any_ref && !auto_ref)
        set_unknown(p, "prior_allo_hct", ajoin(p, any_ref, " transplant of unspecified type", AJOIN_END));
    else
        set_bool(p, "prior_allo_hct", false, "no allogeneic HCT procedure or GVHD recorded");
    if (cart_ref)
        set_bool(p, "prior_car_t", true, ajoin(p, cart_ref, " CAR T infusion", AJOIN_END));
    else if (hx_cart)
        set_bool(p, "prior_car_t", true, ajoin(p, hx_cart->ref, " ", hx_cart->code, " (", hx_cart->row, ")",
                                               AJOIN_END));
    else
        set_bool(p, "prior_car_t", false, "no CAR T infusion, CAR T product or history code recorded");

    /* relapse / refractoriness (three-valued; see README) */
    const vec *P = &b->prog, *R = &b->resp;
    const dated *pv = P->v, *rv = R->v;
    int rd = o->refractory_days;
    /* relapsed */
    const dated *rel = NULL;
    for (size_t i = 0; i < P->n && !rel; i++) {
        if (!strcmp(pv[i].what, "relapse")) {
            rel = &pv[i];
            break;
        }
        for (size_t j = 0; j < R->n; j++)
            if (rv[j].day < pv[i].day) {
                rel = &pv[i];
                break;
            }
        for (size_t k = 0; k < p->nlines && !rel; k++) {
            const map_line *l = &p->lines[k];
            bool next_before = k + 1 < p->nlines && p->lines[k + 1].start_days <= pv[i].day;
            if (!next_before && !l->end_unknown && pv[i].day > l->end_days + rd && pv[i].day >= l->start_days)
                rel = &pv[i];
        }
    }
    if (rel)
        set_bool(p, "relapsed", true, ajoin(p, rel->ref, " ", rel->what, " documented", AJOIN_END));
    else if (R->n)
        set_bool(p, "relapsed", false, ajoin(p, rv[R->n - 1].ref,
                                             " response documented; no later progression", AJOIN_END));
    else
        set_unknown(p, "relapsed", P->n ? "progression documented only during or right after therapy (no response documented)"
                                        : "no disease status documented");

    if (!p->nlines && P->n) {
        /* Relapse or progression without any recorded therapy: the treatment happened
         * outside this record. Zero lines would be a guess that could exclude a candidate,
         * so the count becomes unknown for a clinician to check. */
        set_unknown(p, "lines", ajoin(p, pv[0].ref, " ", pv[0].what,
                                      " documented but no antineoplastic therapy recorded: prior lines may be outside this record",
                                      AJOIN_END));
    }
    if (!p->nlines) {
        set_unknown(p, "refractory", "no line of therapy");
        set_unknown(p, "primary_refractory", "no line of therapy");
        set_unknown(p, "relapse_months_after_1l", "no line of therapy");
        set_unknown(p, "relapse_months_after_1l_start", "no line of therapy");
        set_unknown(p, "relapse_months_after_1l_end", "no line of therapy");
        set_unknown(p, "relapse_count", "no line of therapy");
    } else {
        for (int which = 0; which < 2; which++) {
            const map_line *l = which ? &p->lines[0] : &p->lines[p->nlines - 1];
            const char *name = which ? "primary_refractory" : "refractory";
            int64_t hi = l->end_days + rd;
            const dated *pp = first_in(P, l->start_days, INT64_MAX); /* first progression after start */
            const dated *rr = first_in(R, l->start_days, INT64_MAX);
            char s1[16], s2[16], s3[16];
            fmt_day(l->start_days, s1, sizeof s1);
            fmt_day(l->end_days, s2, sizeof s2);
            if (pp)
                fmt_day(pp->day, s3, sizeof s3);
            char rds[12], num[12]; /* the two most written sentences without printf */
            fmt_int(rd, rds);
            fmt_int(l->number, num);
            if (pp && pp->day <= hi)
                set_bool(p, name, true, ajoin(p, pp->ref, " ", pp->what, " on ", s3, ", during or <= ", rds,
                                              " days after line ", num, " (", s1, "..", s2, ")", AJOIN_END));
            else if (pp && l->end_unknown) {
                set_unknown(p, name, astr(p, "line %d (from %s) has no recorded end; first progression after it is %s %s on %s",
                                          l->number, s1, pp->ref, pp->what, s3));
                F(p, name)->settle = astr(p, "the end date of line %d (%s)", l->number, l->evidence);
            } else if (pp)
                set_bool(p, name, false, ajoin(p, "first progression after line ", num, " (", s1, "..", s2, ") is ",
                                               pp->ref, " ", pp->what, " on ", s3, ", > ", rds, " days after it",
                                               AJOIN_END));
            else if (rr)
                set_bool(p, name, false, astr(p, "%s response after line %d started (%s..%s); no progression documented since",
                                              rr->ref, l->number, s1, s2));
            else
                set_unknown(p, name, astr(p, "no disease status documented since line %d started (%s)", l->number, s1));
        }
        const map_line *l1 = &p->lines[0];
        const dated *first_prog = first_in(P, l1->start_days, INT64_MAX);
        static const char *const names[] = {"relapse_months_after_1l_start", "relapse_months_after_1l_end"};
        for (int end = 0; end < 2; end++) {
            if (!first_prog) {
                set_unknown(p, names[end], "no progression documented after the start of line 1");
                continue;
            }
            int64_t anchor = end ? l1->end_days : l1->start_days;
            double months = (double)(first_prog->day - anchor) / 30.4375;
            if (months < 0)
                months = 0;
            char s1[16];
            fmt_day(anchor, s1, sizeof s1);
            set_num(p, names[end], round_to(months, 0.1),
                    ajoin(p, first_prog->ref, " ", first_prog->what, ", ", end ? "end" : "start",
                          " of line 1 ", end && l1->end_unknown ? "not recorded, at most months from " : "",
                          s1, AJOIN_END));
            if (end && l1->end_unknown) {
                F(p, names[end])->bound = MAP_FACT_AT_MOST; /* the true end is later: fewer months */
                F(p, names[end])->settle = ajoin(p, "the end date of line 1 (", l1->evidence, ")", AJOIN_END);
            }
        }
        *F(p, "relapse_months_after_1l") = *F(p, o->relapse_anchor_end ? names[1] : names[0]);
        if (P->n || R->n) {
            int count = 0;
            int64_t prev_prog = INT64_MIN;
            for (size_t k = 0; k < p->nlines; k++) {
                const map_line *l = &p->lines[k];
                int64_t lo = l->start_days;
                int64_t hi = k + 1 < p->nlines ? p->lines[k + 1].start_days - 1 : INT64_MAX;
                const dated *pp = first_in(P, lo, hi);
                if (!pp)
                    continue;
                bool relapse = !strcmp(pp->what, "relapse") || pp->day > l->end_days + rd;
                for (size_t j = 0; j < R->n && !relapse; j++)
                    if (rv[j].day < pp->day && rv[j].day > prev_prog && rv[j].day >= lo)
                        relapse = true;
                if (relapse)
                    count++;
                for (size_t j = 0; j < P->n; j++) /* last progression of this line's period */
                    if (pv[j].day >= lo && pv[j].day <= hi)
                        prev_prog = pv[j].day;
            }
            set_num(p, "relapse_count", count,
                    astr(p, "%d relapse(s): progression after a documented response or > %d days after a line, one per line (%zu progression, %zu response records)",
                         count, rd, P->n, R->n));
        } else {
            set_unknown(p, "relapse_count", "no disease status documented");
        }
    }

    /* months from the first autologous transplant to the first progression after it */
    int64_t asct = INT64_MIN;
    const char *asct_ref = NULL;
    for (size_t i = 0; i < b->ev.n; i++)
        if (e[i].kind == MAP_LOT_AUTO_HCT && (asct == INT64_MIN || e[i].day < asct)) {
            asct = e[i].day;
            asct_ref = e[i].ref;
        }
    const dated *after = asct != INT64_MIN ? first_in(P, asct + 1, INT64_MAX) : NULL;
    if (after) {
        char s1[16], s2[16];
        fmt_day(asct, s1, sizeof s1);
        fmt_day(after->day, s2, sizeof s2);
        set_num(p, "relapse_months_after_asct", round_to((double)(after->day - asct) / 30.4375, 0.1),
                ajoin(p, asct_ref, " autologous HCT ", s1, "; ", after->ref, " ", after->what, " on ", s2,
                      AJOIN_END));
    } else {
        set_unknown(p, "relapse_months_after_asct", asct == INT64_MIN ? "no autologous HCT recorded"
                                                                      : "no progression documented after the autologous HCT");
    }

    /* drug-specific refractoriness: episodes of lenalidomide / any BTKi */
    for (int which = 0; which < 2; which++) {
        const char *name = which ? "btki_progression" : "lenalidomide_refractory";
        int64_t ep_start = INT64_MIN, ep_end = INT64_MIN;
        bool ep_open = false;        /* the episode has an exposure without an end date */
        const char *open_ref = NULL; /* ... the record without it */
        const char *unknown_ref = NULL; /* the record whose missing end leaves the answer open */
        const dated *unknown_prog = NULL; /* ... and the progression it leaves open */
        const dated *hit = NULL;
        const char *hit_drug = NULL;
        bool any = false, all_resp = true;
        /* exposures sorted by start */
        size_t n = b->ex.n;
        const map_lot_exposure **sel = malloc((n ? n : 1) * sizeof *sel);
        if (!sel)
            abort();
        size_t ns = 0;
        for (size_t i = 0; i < n; i++) {
            bool m = which ? (x[i].drug->classes & (1u << MAP_CLASS_BTKI)) != 0
                           : !strcmp(x[i].drug->ingredient, "lenalidomide");
            if (m)
                sel[ns++] = &x[i];
        }
        for (size_t i = 1; i < ns; i++) { /* insertion sort by start */
            const map_lot_exposure *t = sel[i];
            size_t j = i;
            while (j > 0 && sel[j - 1]->start > t->start) {
                sel[j] = sel[j - 1];
                j--;
            }
            sel[j] = t;
        }
        for (size_t i = 0; i <= ns && !hit; i++) {
            if (i < ns && ep_end != INT64_MIN && (ep_open || sel[i]->start <= ep_end + o->lot_gap_days)) {
                if (sel[i]->end > ep_end)
                    ep_end = sel[i]->end;
                if (sel[i]->end_unknown) {
                    ep_open = true;
                    open_ref = sel[i]->ref;
                }
                continue;
            }
            if (ep_end != INT64_MIN) { /* close episode */
                any = true;
                const dated *pp = first_in(P, ep_start, ep_end + rd);
                if (pp) {
                    hit = pp;
                    hit_drug = sel[i - 1]->drug->ingredient;
                } else if (ep_open && first_in(P, ep_start, INT64_MAX)) {
                    all_resp = false; /* progression later than the recorded end: the end is unknown */
                    unknown_ref = open_ref;
                    unknown_prog = first_in(P, ep_start, INT64_MAX);
                } else if (!first_in(R, ep_start, INT64_MAX) && !first_in(P, ep_start, INT64_MAX)) {
                    all_resp = false; /* neither a response nor a later progression documented */
                }
            }
            if (i < ns) {
                ep_start = sel[i]->start;
                ep_end = sel[i]->end;
                ep_open = sel[i]->end_unknown;
                open_ref = ep_open ? sel[i]->ref : NULL;
            }
        }
        free(sel);
        const char *drug = which ? "BTK inhibitor" : "lenalidomide";
        if (hit)
            set_bool(p, name, true, astr(p, "%s %s during or <= %d days after %s", hit->ref, hit->what, rd, hit_drug));
        else if (!any && any_unknown) {
            set_unknown(p, name, ajoin(p, "no ", drug,
                                       " recorded, but therapy without recorded agents may have included it",
                                       AJOIN_END));
            F(p, name)->settle = F(p, "prior_classes")->settle;
        } else if (!any)
            set_bool(p, name, false, which ? "no BTK inhibitor recorded" : "no lenalidomide recorded");
        else if (!all_resp && unknown_ref) {
            char s3[16];
            fmt_day(unknown_prog->day, s3, sizeof s3);
            set_unknown(p, name, astr(p, "%s %s has no end date: whether the progression (%s %s on %s) came on or within %d "
                                         "days of it is unknown",
                                      unknown_ref, drug, unknown_prog->ref, unknown_prog->what, s3, rd));
            F(p, name)->settle = ajoin(p, "the stop date of ", drug, " (", unknown_ref, ")", AJOIN_END);
        } else if (all_resp && !any_unknown)
            set_bool(p, name, false, astr(p, "no progression during or <= %d days after any %s episode (response, or first progression later)",
                                          rd, which ? "BTK inhibitor" : "lenalidomide"));
        else if (all_resp) {
            set_unknown(p, name, astr(p, "no progression during or <= %d days after any recorded %s episode, but therapy "
                                         "without recorded agents may have included it", rd, drug));
            F(p, name)->settle = F(p, "prior_classes")->settle;
        } else
            set_unknown(p, name, astr(p, "%s given; no disease status documented since (window %d days)", drug, rd));
    }
}
