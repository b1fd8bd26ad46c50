/* map_lot — line-of-therapy derivation (see map_lot.h and mappings/README.md). */
#include "map_lot.h"

#include <stdlib.h>
#include <string.h>

#include "fhir_alloc.h"

#define DUP_EVENT_DAYS 7

void map_lot_params_default(map_lot_params *p)
{
    memset(p, 0, sizeof *p);
    p->window_days = 28;
    p->gap_days = 90;
    p->tandem_days = 180;
    p->maint_after_hct_days = 180;
    p->conditioning_days = 14;
    p->lymphodepletion_days = 14;
    p->bridging_max_days = 120;
}

typedef struct wline {
    map_lot_line l;
    int64_t window_end;
    int64_t drug_last[24];
    const char **refs;
    size_t *rlen;          /* strlen of each of refs (add_ref compares the length first) */
    size_t nrefs, cap;
} wline;

typedef struct lot {
    const map_lot_params *p;
    wline *lines;
    size_t n, cap;
} lot;

static bool is_role(const map_drug *d, const char *role)
{
    return d && d->role && d->role[0] == role[0] && !strcmp(d->role, role);
}

static bool is_lymphodepleting(const map_drug *d)
{
    return d && (!strcmp(d->ingredient, "fludarabine") || !strcmp(d->ingredient, "cyclophosphamide") ||
                 !strcmp(d->ingredient, "bendamustine"));
}

static wline *new_line(lot *L, int64_t start)
{
    if (L->n == L->cap) {
        L->cap = L->cap ? L->cap * 2 : 8;
        L->lines = fhir_xrealloc(L->lines, L->cap * sizeof *L->lines);
    }
    wline *w = &L->lines[L->n++];
    memset(w, 0, sizeof *w);
    w->l.start = start;
    w->l.end = start;
    w->l.hct_day = INT64_MIN;
    w->window_end = start + L->p->window_days;
    return w;
}

static void add_ref(wline *w, const char *ref)
{
    if (!ref)
        return;
    if (w->nrefs && w->refs[w->nrefs - 1] == ref)
        return; /* the usual repeat: the next drug of the same record */
    /* refs of one line mostly share their type and patient ("MedicationAdministration/p1-ma")
     * and differ at the end: the length and the last byte before the whole text */
    size_t len = strlen(ref);
    for (size_t i = 0; i < w->nrefs; i++)
        if (w->refs[i] == ref || (w->rlen[i] == len && (!len || w->refs[i][len - 1] == ref[len - 1]) &&
                                  !memcmp(w->refs[i], ref, len)))
            return;
    if (w->nrefs == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 8;
        w->refs = fhir_xrealloc(w->refs, w->cap * sizeof *w->refs);
        w->rlen = fhir_xrealloc(w->rlen, w->cap * sizeof *w->rlen);
    }
    w->rlen[w->nrefs] = len;
    w->refs[w->nrefs++] = ref;
}

static int drug_index(const wline *w, const char *ing)
{
    for (size_t i = 0; i < w->l.ndrugs; i++)
        if (w->l.drugs[i] == ing || (w->l.drugs[i][0] == ing[0] && !strcmp(w->l.drugs[i], ing)))
            return (int)i;
    return -1;
}

/* Adds (or extends) a drug in the line. */
static void add_drug(wline *w, const map_lot_exposure *e, bool extend_end)
{
    if (e->end_unknown)
        w->l.end_unknown = true;
    if (is_role(e->drug, "unknown")) { /* agents not recorded: no drug, no class */
        w->l.unknown_agents = true;
        if (e->start < w->l.start)
            w->l.start = e->start;
        if (extend_end && e->end > w->l.end)
            w->l.end = e->end;
        add_ref(w, e->ref);
        return;
    }
    int i = drug_index(w, e->drug->ingredient);
    if (i < 0 && w->l.ndrugs < 24) {
        i = (int)w->l.ndrugs++;
        w->l.drugs[i] = e->drug->ingredient;
        w->drug_last[i] = e->end;
    }
    if (i >= 0 && e->end > w->drug_last[i])
        w->drug_last[i] = e->end;
    w->l.classes |= e->drug->classes;
    if (e->start < w->l.start)
        w->l.start = e->start;
    if (extend_end && e->end > w->l.end)
        w->l.end = e->end;
    add_ref(w, e->ref);
}

typedef struct item {
    int64_t day;
    int kind; /* 0 exposure, 1 hct event, 2 car t event */
    size_t idx;
    const map_lot_exposure *ex; /* kind 0: the exposure (its drug and record break day ties) */
} item;

static int item_cmp(const void *a, const void *b)
{
    const item *x = a, *y = b;
    if (x->day != y->day)
        return x->day < y->day ? -1 : 1;
    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    /* exposures of one day in the same order whatever order the records came in (a line's
     * drugs are listed as first met): by drug, then by record */
    if (x->ex && y->ex) {
        int c = strcmp(x->ex->drug->ingredient, y->ex->drug->ingredient);
        if (!c && x->ex->ref && y->ex->ref)
            c = strcmp(x->ex->ref, y->ex->ref);
        if (c)
            return c;
    }
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

static bool progression_between(const map_lot_params *p, int64_t a, int64_t b)
{
    for (size_t i = 0; i < p->nprogression; i++)
        if (p->progression_days[i] > a && p->progression_days[i] <= b)
            return true;
    return false;
}

static bool subst_in_line(const wline *w, const map_drug *d, const map_lot_exposure *ex, size_t nex)
{
    const char *g = map_drug_subst_group(d);
    if (!g)
        return false;
    for (size_t i = 0; i < nex; i++) {
        const map_drug *o = ex[i].drug;
        const char *og = map_drug_subst_group(o);
        if (og && !strcmp(og, g) && drug_index(w, o->ingredient) >= 0)
            return true;
    }
    return false;
}

static void close_line(wline *w, const char *reason)
{
    if (w && !w->l.end_reason)
        w->l.end_reason = reason;
}

int map_lot_derive(const map_lot_exposure *ex_in, size_t nex, const map_lot_event *ev_in, size_t nev,
                   const map_lot_params *p, map_lot_result *out)
{
    memset(out, 0, sizeof *out);
    lot L = {.p = p};

    /* Events: CAR T products given as medications become CAR T events; dedupe. */
    size_t cap_ev = nev + nex + 1;
    map_lot_event *ev = fhir_xrealloc(NULL, cap_ev * sizeof *ev);
    size_t n_ev = 0;
    for (size_t i = 0; i < nev; i++)
        ev[n_ev++] = ev_in[i];
    for (size_t i = 0; i < nex; i++)
        if (is_role(ex_in[i].drug, "car_t"))
            ev[n_ev++] = (map_lot_event){MAP_LOT_CAR_T, ex_in[i].start, ex_in[i].drug, ex_in[i].ref};
    bool *ev_drop = fhir_xcalloc(n_ev ? n_ev : 1, sizeof *ev_drop);
    for (size_t i = 0; i < n_ev; i++) {
        for (size_t j = 0; j < i && !ev_drop[i]; j++) {
            if (ev_drop[j])
                continue;
            int64_t d = ev[i].day - ev[j].day;
            if (d < 0)
                d = -d;
            if (d > DUP_EVENT_DAYS)
                continue;
            bool hi = ev[i].kind <= MAP_LOT_HCT, hj = ev[j].kind <= MAP_LOT_HCT;
            if (ev[i].kind == ev[j].kind || (hi && hj && ev[i].kind == MAP_LOT_HCT)) {
                if (ev[i].kind == MAP_LOT_CAR_T && !ev[j].product)
                    ev[j].product = ev[i].product;
                ev_drop[i] = true;
            } else if (hi && hj && ev[j].kind == MAP_LOT_HCT) {
                ev[j] = ev[i]; /* typed transplant replaces the untyped duplicate */
                ev_drop[i] = true;
            }
        }
    }

    /* Exposures: copy, flag CAR T assignment (lymphodepletion, bridging) and conditioning. */
    const map_lot_exposure *ex = ex_in;
    long *assign = malloc((nex ? nex : 1) * sizeof *assign); /* CAR T event index or -1 */
    bool *cond = calloc(nex ? nex : 1, sizeof *cond);
    if (!assign || !cond)
        abort();
    for (size_t i = 0; i < nex; i++) {
        assign[i] = -1;
        if (is_role(ex[i].drug, "car_t"))
            continue;
        for (size_t k = 0; k < n_ev; k++) {
            if (ev_drop[k])
                continue;
            if (ev[k].kind == MAP_LOT_CAR_T) {
                int64_t ct = ev[k].day;
                if (is_lymphodepleting(ex[i].drug) && ex[i].start >= ct - p->lymphodepletion_days &&
                    ex[i].start <= ct) {
                    assign[i] = (long)k;
                    break;
                }
                for (size_t c = 0; c < n_ev; c++) {
                    if (ev_drop[c] || ev[c].kind != MAP_LOT_CAR_T_COLLECTION)
                        continue;
                    if (ev[c].day < ct && ev[c].day >= ct - p->bridging_max_days &&
                        ex[i].start > ev[c].day && ex[i].start < ct) {
                        assign[i] = (long)k;
                        break;
                    }
                }
                if (assign[i] >= 0)
                    break;
            } else if (ev[k].kind <= MAP_LOT_HCT) {
                if (ex[i].start <= ev[k].day && ex[i].start >= ev[k].day - p->conditioning_days)
                    cond[i] = true;
            }
        }
    }

    /* Timeline. */
    item *it = fhir_xrealloc(NULL, (nex + n_ev + 1) * sizeof *it);
    size_t nit = 0;
    for (size_t i = 0; i < nex; i++)
        if (assign[i] < 0 && !is_role(ex[i].drug, "car_t") && !is_role(ex[i].drug, "steroid") &&
            !is_role(ex[i].drug, "unknown"))
            it[nit++] = (item){ex[i].start, 0, i, &ex[i]};
    for (size_t k = 0; k < n_ev; k++)
        if (!ev_drop[k] && ev[k].kind != MAP_LOT_CAR_T_COLLECTION)
            it[nit++] = (item){ev[k].day, ev[k].kind == MAP_LOT_CAR_T ? 2 : 1, k, NULL};
    if (nit)
        qsort(it, nit, sizeof *it, item_cmp);

    wline *cur = NULL;
    for (size_t t = 0; t < nit; t++) {
        if (it[t].kind == 2) { /* CAR T: a line of its own */
            const map_lot_event *e = &ev[it[t].idx];
            if (cur)
                close_line(cur, "car_t");
            wline *w = new_line(&L, e->day);
            w->l.car_t = true;
            w->l.classes |= 1u << MAP_CLASS_CAR_T;
            if (e->product) {
                w->l.drugs[w->l.ndrugs] = e->product->ingredient;
                w->drug_last[w->l.ndrugs++] = e->day;
                w->l.classes |= e->product->classes;
            }
            add_ref(w, e->ref);
            for (size_t i = 0; i < nex; i++)
                if (assign[i] == (long)it[t].idx)
                    add_drug(w, &ex[i], false);
            /* another record of the same infusion (medication + procedure) */
            for (size_t i = 0; i < nex; i++)
                if (is_role(ex[i].drug, "car_t") && ex[i].start >= e->day - DUP_EVENT_DAYS &&
                    ex[i].start <= e->day + DUP_EVENT_DAYS) {
                    if (drug_index(w, ex[i].drug->ingredient) < 0 && w->l.ndrugs < 24) {
                        w->l.drugs[w->l.ndrugs] = ex[i].drug->ingredient;
                        w->drug_last[w->l.ndrugs++] = e->day;
                        w->l.classes |= ex[i].drug->classes;
                    }
                    add_ref(w, ex[i].ref);
                }
            cur = NULL; /* therapy after a CAR T infusion opens a new line */
            continue;
        }
        if (it[t].kind == 1) { /* transplant */
            const map_lot_event *e = &ev[it[t].idx];
            bool attach = false;
            if (cur && cur->l.hct_day == INT64_MIN && e->day <= cur->l.end + p->gap_days)
                attach = true; /* planned sequence: induction / salvage -> HCT */
            else if (cur && cur->l.hct_day != INT64_MIN && e->day - cur->l.hct_day <= p->tandem_days)
                attach = true; /* planned tandem */
            if (!attach) {
                if (cur)
                    close_line(cur, "hct");
                cur = new_line(&L, e->day);
            }
            if (cur->l.hct_day == INT64_MIN)
                cur->l.hct_day = e->day;
            if (e->kind == MAP_LOT_AUTO_HCT)
                cur->l.auto_hct = true;
            else if (e->kind == MAP_LOT_ALLO_HCT)
                cur->l.allo_hct = true;
            else
                cur->l.hct_unspecified = true;
            if (e->day > cur->l.end)
                cur->l.end = e->day;
            add_ref(cur, e->ref);
            continue;
        }
        const map_lot_exposure *e = &ex[it[t].idx];
        if (!cur) {
            /* the previous line may be a CAR T line: never extend it */
            cur = new_line(&L, e->start);
            add_drug(cur, e, true);
            continue;
        }
        if (cur->l.end_unknown && drug_index(cur, e->drug->ingredient) >= 0) {
            /* a drug of a line whose end is not recorded: a gap cannot be told */
            add_drug(cur, e, true);
            continue;
        }
        if (e->start > cur->l.end + p->gap_days) {
            bool restart_same = p->myeloma && drug_index(cur, e->drug->ingredient) >= 0 &&
                                !progression_between(p, cur->l.end, e->start);
            if (!restart_same) {
                close_line(cur, "gap");
                cur = new_line(&L, e->start);
            }
            add_drug(cur, e, true);
            continue;
        }
        if (drug_index(cur, e->drug->ingredient) >= 0 || e->start <= cur->window_end) {
            add_drug(cur, e, true);
            continue;
        }
        if (subst_in_line(cur, e->drug, ex, nex)) {
            add_drug(cur, e, true);
            continue;
        }
        if (cond[it[t].idx]) { /* conditioning before a transplant joins the line */
            add_drug(cur, e, true);
            continue;
        }
        if (map_drug_maintenance(e->drug) && cur->l.hct_day != INT64_MIN &&
            e->start >= cur->l.hct_day && e->start <= cur->l.hct_day + p->maint_after_hct_days) {
            add_drug(cur, e, true);
            cur->l.maintenance = true;
            continue;
        }
        close_line(cur, "new_drug");
        cur = new_line(&L, e->start);
        add_drug(cur, e, true);
    }

    /* Steroids join the line they fall inside (they never open one). */
    for (size_t i = 0; i < nex; i++) {
        if (!is_role(ex[i].drug, "steroid") || assign[i] >= 0)
            continue;
        for (size_t k = 0; k < L.n; k++) {
            wline *w = &L.lines[k];
            if (ex[i].start >= w->l.start - 7 && ex[i].start <= w->l.end + 1) {
                add_drug(w, &ex[i], false);
                break;
            }
        }
    }

    /* Therapy without agents (after the known lines are laid out): part of the known line it
     * starts in (from the regimen window before the line's start to its last dose or regimen
     * window, with no progression documented in between), else a line of its own, placed in
     * time order. */
    for (size_t i = 0; i < nex; i++) {
        if (!is_role(ex[i].drug, "unknown"))
            continue;
        wline *host = NULL;
        for (size_t k = 0; k < L.n && !host; k++) {
            wline *w = &L.lines[k];
            int64_t last = w->l.end > w->window_end ? w->l.end : w->window_end;
            if (!w->l.car_t && ex[i].start >= w->l.start - p->window_days && ex[i].start <= last &&
                !progression_between(p, w->l.start, ex[i].start))
                host = w; /* starts while the line goes on, with no progression in between */
        }
        if (!host) {
            host = new_line(&L, ex[i].start);
            size_t k = L.n - 1; /* keep lines sorted by start */
            while (k > 0 && L.lines[k - 1].l.start > ex[i].start) {
                wline tmp = L.lines[k - 1];
                L.lines[k - 1] = L.lines[k];
                L.lines[k] = tmp;
                k--;
            }
            host = &L.lines[k];
            if (k > 0 && L.lines[k - 1].l.end_reason && !strcmp(L.lines[k - 1].l.end_reason, "ongoing"))
                L.lines[k - 1].l.end_reason = NULL;
        }
        add_drug(host, &ex[i], true);
    }

    /* Maintenance by continuation (a maintenance drug of the regimen goes on after the
     * others stopped) and end reasons of the last line. */
    for (size_t k = 0; k < L.n; k++) {
        wline *w = &L.lines[k];
        if (w->l.car_t)
            continue;
        int64_t other_last = INT64_MIN, maint_last = INT64_MIN;
        for (size_t i = 0; i < w->l.ndrugs; i++) {
            const map_lot_exposure *any = NULL;
            for (size_t j = 0; j < nex && !any; j++)
                if (!strcmp(ex[j].drug->ingredient, w->l.drugs[i]))
                    any = &ex[j];
            if (!any || is_role(any->drug, "steroid"))
                continue;
            if (map_drug_maintenance(any->drug)) {
                if (w->drug_last[i] > maint_last)
                    maint_last = w->drug_last[i];
            } else if (w->drug_last[i] > other_last) {
                other_last = w->drug_last[i];
            }
        }
        if (other_last != INT64_MIN && maint_last != INT64_MIN &&
            maint_last > other_last + p->window_days)
            w->l.maintenance = true;
    }
    for (size_t k = 0; k < L.n; k++) {
        wline *w = &L.lines[k];
        if (!w->l.end_reason) {
            if (k + 1 < L.n)
                w->l.end_reason = L.lines[k + 1].l.car_t ? "car_t" : "new_drug";
            else
                w->l.end_reason = (p->as_of && w->l.end >= p->as_of - p->gap_days) ? "ongoing" : "last";
        }
    }

    /* Flatten. */
    out->nlines = L.n;
    out->lines = fhir_xrealloc(NULL, (L.n ? L.n : 1) * sizeof *out->lines);
    size_t total = 0;
    for (size_t k = 0; k < L.n; k++)
        total += L.lines[k].nrefs;
    out->refs = fhir_xrealloc(NULL, (total ? total : 1) * sizeof *out->refs);
    for (size_t k = 0; k < L.n; k++) {
        out->lines[k] = L.lines[k].l;
        out->lines[k].first_ref = out->nrefs;
        out->lines[k].nrefs = L.lines[k].nrefs;
        for (size_t r = 0; r < L.lines[k].nrefs; r++)
            out->refs[out->nrefs++] = L.lines[k].refs[r];
        free(L.lines[k].refs);
        free(L.lines[k].rlen);
    }
    free(L.lines);
    free(it);
    free(assign);
    free(cond);
    free(ev);
    free(ev_drop);
    return 0;
}

void map_lot_result_free(map_lot_result *r)
{
    if (!r)
        return;
    free(r->lines);
    free(r->refs);
    memset(r, 0, sizeof *r);
}
