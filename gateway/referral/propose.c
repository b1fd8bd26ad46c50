/* propose — verdict -> indications -> route -> Bundle -> referral (see propose.h). */
#include "propose.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bser.h"
#include "fhir_alloc.h"
#include "fhir_arena.h"
#include "fhir_bin.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "fhir_ref.h"
#include "packet.h"
#include "screen.h"

#define PROPOSE_MAX_EXPLANATION (1u << 20) /* bytes of the clinician summary */
#define PROPOSE_MAX_REASON 4096            /* bytes of ServiceRequest.reasonCode text */
#define PROPOSE_MAX_PAYLOAD (64u << 20)    /* bytes of the transaction Bundle */
#define PROPOSE_MAX_ROUTE (1u << 20)       /* bytes of the route explanation */
#define PROPOSE_ARENA (64u << 20)          /* bytes of the package's trees */

typedef struct cancel_ctx {
    int64_t keep[2];
    int64_t ids[PROPOSE_MAX_CANCELLED];
    size_t n;
} cancel_ctx;

static int cancel_collect(void *ctx, int64_t id, const char *placer_id)
{
    (void)placer_id;
    cancel_ctx *c = ctx;
    if (id == c->keep[0] || id == c->keep[1])
        return 0;
    if (c->n < PROPOSE_MAX_CANCELLED)
        c->ids[c->n++] = id;
    return 0;
}

/* Withdraws the patient's proposals still awaiting approval, except keep_a and keep_b (found
 * by the patient index, ids only): cancelled with ended = withdrawn, which closes no episode.
 * 0, or -1 on a store failure. */
static int cancel_stale(store *s, const char *pid, int64_t keep_a, int64_t keep_b,
                        const char *reason, propose_result *out, fhir_error *err)
{
    cancel_ctx c = {.keep = {keep_a, keep_b}};
    if (refer_patient_ids(s, pid, REFER_PENDING_APPROVAL, cancel_collect, &c, err) < 0)
        return -1;
    for (size_t i = 0; i < c.n; i++) {
        if (refer_withdraw_in_tx(s, c.ids[i], reason, err))
            return -1;
        if (out->n_cancelled < PROPOSE_MAX_CANCELLED)
            out->cancelled[out->n_cancelled++] = c.ids[i];
    }
    return 0;
}

/* ---- episodes ----------------------------------------------------------------------- */

/* One field of a marker: its value after "name=" up to ';' ("?" when unknown). */
static bool marker_field(const char *m, const char *name, char *out, size_t n)
{
    size_t len = strlen(name);
    for (const char *p = m; p && *p;) {
        if (!strncmp(p, name, len) && p[len] == '=') {
            const char *v = p + len + 1, *e = strchr(v, ';');
            size_t vl = e ? (size_t)(e - v) : strlen(v);
            snprintf(out, n, "%.*s", (int)vl, v);
            return true;
        }
        p = strchr(p, ';');
        if (p)
            p++;
    }
    return false;
}

void propose_episode_marker(const map_profile *p, char *out, size_t n)
{
    const map_fact *dis = map_profile_fact(p, "primary_disease");
    const map_fact *rel = map_profile_fact(p, "relapse_count");
    const map_fact *lines = map_profile_fact(p, "lines");
    char r[32] = "?", l[32] = "?";
    if (rel && rel->known)
        snprintf(r, sizeof r, "%.0f", rel->num);
    if (lines && lines->known)
        snprintf(l, sizeof l, "%.0f", lines->num);
    snprintf(out, n, "disease=%s;relapses=%s;lines=%s",
             dis && dis->known && dis->str ? dis->str : "?", r, l);
}

/* a known count in both markers that grew */
static bool count_grew(const char *closed, const char *now, const char *name)
{
    char a[32], b[32];
    if (!marker_field(closed, name, a, sizeof a) || !marker_field(now, name, b, sizeof b) ||
        !strcmp(a, "?") || !strcmp(b, "?"))
        return false;
    return strtol(b, NULL, 10) > strtol(a, NULL, 10);
}

bool propose_episode_new(const char *closed, const char *now)
{
    if (!closed || !now)
        return false;
    char a[64], b[64];
    if (marker_field(closed, "disease", a, sizeof a) && marker_field(now, "disease", b, sizeof b) &&
        strcmp(a, "?") && strcmp(b, "?") && strcmp(a, b))
        return true; /* another disease */
    return count_grew(closed, now, "relapses") || count_grew(closed, now, "lines");
}

/* The small columns of one of the patient's referrals. */
typedef struct ep_row {
    int64_t id, episode, supersedes;
    refer_state state;
    bool auto_mode, cancel_requested;
    char *center, *indications, *ended, *marker;
} ep_row;

typedef struct ep_rows {
    ep_row *v;
    size_t n, cap;
} ep_rows;

static int ep_collect(void *ctx, const refer_record *r)
{
    ep_rows *l = ctx;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->v = fhir_xrealloc(l->v, l->cap * sizeof *l->v);
    }
    ep_row *e = &l->v[l->n++];
    e->id = r->id;
    e->episode = r->episode > 0 ? r->episode : 1;
    e->supersedes = r->supersedes;
    e->state = r->state;
    e->auto_mode = r->mode && !strcmp(r->mode, "auto");
    e->cancel_requested = r->cancel_requested_ms > 0;
    e->center = fhir_xstrdup(r->center_id ? r->center_id : "");
    e->indications = fhir_xstrdup(r->indications ? r->indications : "");
    e->ended = r->ended ? fhir_xstrdup(r->ended) : NULL;
    e->marker = r->episode_marker ? fhir_xstrdup(r->episode_marker) : NULL;
    return 0;
}

static void ep_free(ep_rows *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].center);
        free(l->v[i].indications);
        free(l->v[i].ended);
        free(l->v[i].marker);
    }
    free(l->v);
}

static bool ep_target(const ep_row *e, const char *center, const char *joined)
{
    return !strcmp(e->center, center) && !strcmp(e->indications, joined);
}

/* a re-route proposal still awaiting a person */
static bool ep_pending_reroute(const ep_row *e)
{
    return e->supersedes > 0 && e->state == REFER_PENDING_APPROVAL;
}

/* What the patient's current episode is, from their referrals (derived each time). */
typedef struct episode_view {
    int64_t episode;          /* the current episode (0: the patient has none) */
    bool closed;              /* nothing open and a referral closed by a person or center */
    const ep_row *active;     /* the open referral that counts (NULL: none) */
    const ep_row *reroute;    /* a pending re-route proposal of the active one (NULL: none) */
    const char *marker;       /* the marker the episode opened with (NULL: not recorded) */
    const ep_row *last;       /* the episode's newest row */
    const ep_row *stale;      /* a pending re-route of a referral the center completed */
} episode_view;

/* Was the referral a re-route replaces completed at its center (the patient was seen there:
 * nothing is left to re-route)? */
static bool predecessor_completed(const ep_rows *l, const ep_row *rr)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].id == rr->supersedes)
            return l->v[i].state == REFER_COMPLETED;
    return false;
}

static void episode_of(const ep_rows *l, episode_view *v)
{
    memset(v, 0, sizeof *v);
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].episode > v->episode)
            v->episode = l->v[i].episode;
    if (!v->episode)
        return;
    bool any_open = false, any_closing = false;
    const ep_row *pending_rr = NULL;
    for (size_t i = 0; i < l->n; i++) {
        const ep_row *e = &l->v[i];
        if (e->episode != v->episode)
            continue;
        v->last = e;
        if (!v->marker && e->marker)
            v->marker = e->marker;
        if (refer_state_terminal(e->state)) {
            if (!e->ended)
                any_closing = true; /* declined, completed, or cancelled by a person */
            continue;
        }
        if (ep_pending_reroute(e) && predecessor_completed(l, e)) {
            v->stale = e; /* withdrawn by propose: it keeps nothing open */
            continue;
        }
        any_open = true;
        if (ep_pending_reroute(e))
            pending_rr = e; /* the newest wins */
        else if (!e->cancel_requested)
            v->active = e; /* the newest open one */
    }
    v->closed = !any_open && any_closing;
    if (!v->active && pending_rr)
        v->active = pending_rr; /* what it replaces is over: it is the proposal now */
    else if (pending_rr && pending_rr->supersedes == v->active->id)
        v->reroute = pending_rr;
}

/* A re-route of the active referral to this target that a person turned down. */
static bool reroute_refused(const ep_rows *l, const episode_view *v, const char *center,
                            const char *joined)
{
    for (size_t i = 0; i < l->n; i++) {
        const ep_row *e = &l->v[i];
        if (e->episode == v->episode && e->supersedes == v->active->id &&
            e->state == REFER_CANCELLED && !e->ended && ep_target(e, center, joined))
            return true;
    }
    return false;
}

/* A label category in the words of a referral's reason. */
static const char *category_words(elig_category c)
{
    switch (c) {
    case ELIG_ELIGIBLE: return "meets the FDA label on the data on record";
    case ELIG_POSSIBLY_ELIGIBLE: return "may meet the FDA label; facts still to confirm";
    default: return "label criteria not met on the data on record";
    }
}

static const char *urgency_for(const propose_opts *o, elig_urgency u)
{
    if (u == ELIG_URGENCY_NOW)
        return "urgent";
    return o->urgency_default ? o->urgency_default : "routine";
}

/* The patient's resources the package carries. */
typedef struct package_parts {
    const fhir_node *patient, *condition;
    const fhir_node **cov, **obs, **med, **rep;
    size_t ncov, nobs, nmed, nrep;
} package_parts;

/* A report's day (effective, else issued), or INT64_MIN when it says none. */
static int64_t report_day(const fhir_node *r)
{
    const char *w = fhir_node_path_str(r, "effectiveDateTime");
    if (!w)
        w = fhir_node_path_str(r, "effectivePeriod.start");
    if (!w)
        w = fhir_node_path_str(r, "issued");
    int64_t d;
    return w && fhir_clock_parse_date(w, &d) == 0 ? d : INT64_MIN;
}

static int cmp_report_newest(const void *x, const void *y)
{
    int64_t a = report_day(*(const fhir_node *const *)x), b = report_day(*(const fhir_node *const *)y);
    return a < b ? 1 : a > b ? -1 : 0;
}

/* Pathology and imaging reports for the packet: not entered in error or cancelled, within the
 * lookback from the routing day (a report without a date is kept: its age is unknown), newest
 * first, at most PROPOSE_MAX_REPORTS. */
static bool report_wanted(const propose_opts *o, const fhir_node *r)
{
    const char *st = fhir_node_path_str(r, "status");
    if (st && (!strcmp(st, "entered-in-error") || !strcmp(st, "cancelled") || !strcmp(st, "registered")))
        return false;
    if (!packet_report_kind(r))
        return false;
    int64_t d = report_day(r);
    return o->report_lookback_days <= 0 || d == INT64_MIN || d >= o->day - o->report_lookback_days;
}

static void parts_pick(const propose_opts *o, const propose_input *in, const char *disease_evidence,
                       package_parts *p)
{
    memset(p, 0, sizeof *p);
    p->cov = calloc(in->n_resources + 1, sizeof *p->cov);
    p->obs = calloc(in->n_resources + 1, sizeof *p->obs);
    p->med = calloc(in->n_resources + 1, sizeof *p->med);
    p->rep = calloc(in->n_resources + 1, sizeof *p->rep);
    if (!p->cov || !p->obs || !p->med || !p->rep)
        abort();
    for (size_t i = 0; i < in->n_resources; i++) {
        const fhir_node *r = in->resources[i];
        const char *t = fhir_node_resource_type(r);
        if (!t)
            continue;
        /* by the type's first letter, then its name (a chain of strcmp per record before) */
        switch (t[0]) {
        case 'P':
            if (!strcmp(t, "Patient"))
                p->patient = r;
            break;
        case 'C':
            if (!strcmp(t, "Coverage")) {
                p->cov[p->ncov++] = r;
            } else if (!strcmp(t, "Condition")) {
                char ref[200];
                snprintf(ref, sizeof ref, "Condition/%s", fhir_node_resource_id(r) ? fhir_node_resource_id(r) : "");
                if (!p->condition || strstr(disease_evidence, ref))
                    p->condition = r;
            }
            break;
        case 'O':
            if (!strcmp(t, "Observation"))
                p->obs[p->nobs++] = r;
            break;
        case 'M': /* MedicationRequest and the other Medication* records, not Medication */
            if (!strncmp(t, "Medication", 10) && t[10])
                p->med[p->nmed++] = r;
            break;
        case 'D':
            if (!strcmp(t, "DiagnosticReport") && report_wanted(o, r))
                p->rep[p->nrep++] = r;
            break;
        }
    }
    qsort(p->rep, p->nrep, sizeof *p->rep, cmp_report_newest);
    if (p->nrep > PROPOSE_MAX_REPORTS)
        p->nrep = PROPOSE_MAX_REPORTS;
}

/* The referring clinician: the prescriber named on the patient's most recent therapy order
 * (MedicationRequest.requester.display), else the site's configured default. */
static void pick_referrer(const propose_opts *o, const propose_input *in, packet_referrer *r,
                          char *source, size_t n)
{
    const char *best = NULL, *best_when = NULL;
    for (size_t i = 0; i < in->n_resources; i++) {
        const fhir_node *m = in->resources[i];
        const char *t = fhir_node_resource_type(m);
        if (!t || strcmp(t, "MedicationRequest"))
            continue;
        const char *who = fhir_node_path_str(m, "requester.display");
        const char *when = fhir_node_path_str(m, "authoredOn");
        if (!who || !*who)
            continue;
        if (!best || (when && (!best_when || strcmp(when, best_when) > 0))) {
            best = who;
            best_when = when;
        }
    }
    r->phone = o->referrer_phone;
    r->direct = o->referrer_direct;
    if (best) {
        r->name = best;
        snprintf(source, n, "prescriber of the most recent therapy order%s%.10s%s; phone and Direct "
                            "address of the referring team",
                 best_when ? " (" : "", best_when ? best_when : "", best_when ? ")" : "");
    } else if (o->referrer_name && *o->referrer_name) {
        r->name = o->referrer_name;
        snprintf(source, n, "the site's referring clinician");
    } else {
        r->name = NULL;
        source[0] = '\0';
    }
    r->source = source[0] ? source : NULL;
}

/* What the packet reads of the verdict ("category", "explanation", "consult.reasons",
 * "to_request": elig_result_write_json's members of those names) and the clinician summary
 * (elig_result_write_explanation's text), from one pass over the explanation's lines: the
 * verdict JSON the screening wrote is not parsed again. */
typedef struct verdict_words {
    fhir_arena *a;
    fhir_node *arr; /* the array the next line goes to */
    fhir_buf *text; /* the summary (NULL: none) */
} verdict_words;

static void verdict_line(void *ud, const char *line, size_t len)
{
    verdict_words *w = ud;
    fhir_node_append(w->a, w->arr, NULL, 0, fhir_node_new_strn(w->a, line, len));
    if (w->text) { /* as elig_result_write_explanation writes it */
        fhir_buf_puts(w->text, "  ");
        fhir_buf_append(w->text, line, len);
        fhir_buf_putc(w->text, '\n');
    }
}

/* The verdict's members the packet reads, in arena a (NULL when its cap is hit); the
 * explanation's text appended to expl. */
static fhir_node *verdict_for_packet(fhir_arena *a, const elig_ruleset *rs, const elig_factset *fs,
                                     const elig_result *r, fhir_buf *expl)
{
    fhir_node *v = fhir_node_new(a, FHIR_OBJECT);
    if (!v || !fhir_node_set_str(a, v, "category", elig_category_name(elig_result_category(r))))
        return NULL;
    verdict_words w = {.a = a, .arr = fhir_node_set_arr(a, v, "explanation"), .text = expl};
    if (!w.arr)
        return NULL;
    elig_result_each_line(rs, fs, r, verdict_line, &w);
    fhir_node *c = fhir_node_set_obj(a, v, "consult");
    w = (verdict_words){.a = a, .arr = c ? fhir_node_set_arr(a, c, "reasons") : NULL};
    if (!w.arr)
        return NULL;
    elig_result_each_consult_reason(rs, r, verdict_line, &w);
    fhir_node *req = fhir_node_set_arr(a, v, "to_request");
    const char *texts[ELIG_MAX_FACTS];
    size_t nr = elig_result_to_request(rs, fs, r, texts, ELIG_MAX_FACTS);
    for (size_t k = 0; req && k < nr && k < ELIG_MAX_FACTS; k++)
        fhir_node_append(a, req, NULL, 0, fhir_node_new_str(a, texts[k]));
    return req ? v : NULL;
}

/* The referral packet's document (packet.h) in arena a; NULL on failure (the referral still
 * goes out with the summary text: a packet is never a reason to hold it). Its HTML rendering is
 * made from the document when the Bundle is built (package_html). */
static fhir_node *build_packet(fhir_arena *a, const propose_opts *o, const propose_input *in,
                               const package_parts *parts, const fhir_node *verdict,
                               const centers_center *center, const char *reason, const char *urgency,
                               int64_t authored_ms, packet_referrer *ref, char *source, size_t source_n)
{
    pick_referrer(o, in, ref, source, source_n);
    fhir_error e;
    fhir_error_clear(&e);
    packet_input pi = {
        .site_name = o->site_name && *o->site_name ? o->site_name : o->site_id,
        .center_name = center->name, .request = reason, .urgency = urgency,
        .authored_ms = authored_ms, .patient = parts->patient, .condition = parts->condition,
        .coverages = parts->cov, .n_coverages = parts->ncov, .profile = in->profile,
        .verdict = verdict, .rules = o->rules, .referrer = *ref, .reports = parts->rep, .n_reports = parts->nrep,
        .report_lookback_days = o->report_lookback_days,
    };
    fhir_node *pk = in->verdict_json && verdict ? packet_build(a, &pi, &e) : NULL;
    if (!pk)
        fhir_log(FHIR_LOG_WARN, "referral.packet_failed", "patient=%s error=%s", in->patient_id,
                 e.msg[0] ? e.msg : "packet larger than its cap");
    return pk;
}

/* The HTML and the plain-text renderings of a packet document (the recipe's object, or an
 * older recipe's text), caller frees both; *html NULL when it cannot be made (the Bundle then
 * carries neither document, as when the packet could not be built), *text NULL when only the
 * text could not (the summary is then the explanation). */
static void package_renderings(const fhir_node *packet, const char *patient_id, char **html,
                               char **text)
{
    *html = *text = NULL;
    fhir_arena *a = fhir_arena_new(PROPOSE_ARENA);
    fhir_error e;
    fhir_error_clear(&e);
    fhir_buf h, t;
    fhir_buf_init(&h, PACKET_MAX_HTML);
    fhir_buf_init(&t, PACKET_MAX_TEXT);
    const fhir_node *pk = packet && packet->kind == FHIR_OBJECT ? packet : NULL;
    const char *s = pk ? NULL : fhir_node_str(packet);
    if (s)
        pk = fhir_json_parse(a, s, strlen(s), NULL, &e);
    if (pk && !packet_write_html(pk, &h, &e)) {
        *html = fhir_buf_steal(&h, NULL);
        if (!packet_write_text(pk, &t, &e))
            *text = fhir_buf_steal(&t, NULL);
    }
    if (!*html || !*text)
        fhir_log(FHIR_LOG_WARN, "referral.packet_failed", "patient=%s error=%s", patient_id,
                 e.msg[0] ? e.msg : "packet larger than its cap");
    fhir_buf_free(&h);
    fhir_buf_free(&t);
    fhir_arena_free(a);
}

/* ---- the package: what a proposal keeps, and the Bundle built from it ------------------ */

/* ,"key": (the first member of an object without its comma: first) */
static void put_key(fhir_buf *b, const char *key, bool first)
{
    if (!first)
        fhir_buf_putc(b, ',');
    fhir_json_write_string(b, key, strlen(key));
    fhir_buf_putc(b, ':');
}

/* ,"key":"val" */
static void put_str(fhir_buf *b, const char *key, const char *val, bool first)
{
    put_key(b, key, first);
    fhir_json_write_string(b, val, strlen(val));
}

/* ,"key":"val" when val is set; *first cleared when written */
static void put_opt(fhir_buf *b, const char *key, const char *val, bool *first)
{
    if (!val)
        return;
    put_str(b, key, val, *first);
    *first = false;
}

/* ,"key":["Type/id",...] of each resource ("Type/id" cut at 511 bytes, as it always was). */
static void put_refs(fhir_buf *b, const char *key, const fhir_node *const *v, size_t n)
{
    put_key(b, key, false);
    fhir_buf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        const char *t = fhir_node_resource_type(v[i]), *id = fhir_node_resource_id(v[i]);
        char ref[512];
        size_t tl = t ? strlen(t) : 0, il = id ? strlen(id) : 0, len = 0;
        size_t k = tl < sizeof ref - 1 ? tl : sizeof ref - 1;
        memcpy(ref, t ? t : "", k);
        len = k;
        if (len < sizeof ref - 1)
            ref[len++] = '/';
        k = il < sizeof ref - 1 - len ? il : sizeof ref - 1 - len;
        memcpy(ref + len, id ? id : "", k);
        len += k;
        if (i)
            fhir_buf_putc(b, ',');
        fhir_json_write_string(b, ref, len);
    }
    fhir_buf_putc(b, ']');
}

/* The package recipe (JSON, caller frees): everything the Bundle is built from besides the
 * referral's own columns (placer, site, patient, urgency, summary, verdict) — the patient's
 * resources it carries by type and id in their order, the center and the referrer as they
 * were, the request text, the authored time and the packet document (a JSON object; recipes
 * of older versions hold its text as a string, propose_package_payload reads both; left out
 * when packet is NULL or its text is over PACKET_MAX_JSON). Written straight into its buffer,
 * each part once. NULL when the recipe is over PROPOSE_MAX_PAYLOAD. */
static char *package_recipe(const propose_opts *o, const package_parts *p, const centers_center *ce,
                            const packet_referrer *ref, const char *reason, int64_t authored_ms,
                            const fhir_node *packet, const char *patient_id)
{
    fhir_buf b;
    fhir_buf_init(&b, PROPOSE_MAX_PAYLOAD);
    char ms[32];
    snprintf(ms, sizeof ms, "%lld", (long long)authored_ms);
    fhir_buf_putc(&b, '{');
    put_str(&b, "authored_ms", ms, true);
    put_str(&b, "reason", reason, false);
    put_str(&b, "site_name", o->site_name && *o->site_name ? o->site_name : o->site_id, false);
    put_key(&b, "referrer", false);
    fhir_buf_putc(&b, '{');
    bool first = true;
    put_opt(&b, "name", ref->name, &first);
    put_opt(&b, "phone", ref->phone, &first);
    put_opt(&b, "direct", ref->direct, &first);
    fhir_buf_putc(&b, '}');
    put_key(&b, "center", false);
    fhir_buf_putc(&b, '{');
    put_str(&b, "id", ce->id, true);
    put_str(&b, "name", ce->name, false);
    first = false;
    put_opt(&b, "contact_phone", ce->contact_phone, &first);
    put_opt(&b, "contact_email", ce->contact_email, &first);
    put_key(&b, "address_lines", false);
    fhir_buf_putc(&b, '[');
    for (size_t i = 0; i < ce->n_address_lines; i++) {
        if (i)
            fhir_buf_putc(&b, ',');
        fhir_json_write_string(&b, ce->address_lines[i], strlen(ce->address_lines[i]));
    }
    fhir_buf_putc(&b, ']');
    put_opt(&b, "city", ce->city, &first);
    put_opt(&b, "state", ce->state, &first);
    put_opt(&b, "postal_code", ce->postal_code, &first);
    fhir_buf_putc(&b, '}');
    put_refs(&b, "patient", &p->patient, 1);
    put_refs(&b, "condition", &p->condition, p->condition ? 1 : 0);
    put_refs(&b, "coverages", p->cov, p->ncov);
    put_refs(&b, "observations", p->obs, p->nobs);
    put_refs(&b, "medications", p->med, p->nmed);
    put_refs(&b, "reports", p->rep, p->nrep);
    /* the packet document goes in as the JSON object it is ("packet" last), written once */
    size_t mark = b.len;
    if (packet && !b.overflow) {
        put_key(&b, "packet", false);
        size_t start = b.len;
        if (!fhir_json_write(&b, packet, FHIR_JSON_COMPACT) && b.len - start > PACKET_MAX_JSON) {
            b.len = mark; /* over the packet's cap: the recipe goes without it */
            b.data[b.len] = '\0';
            fhir_log(FHIR_LOG_WARN, "referral.packet_failed", "patient=%s error=%s", patient_id,
                     "packet larger than its cap");
        }
    }
    fhir_buf_putc(&b, '}');
    char *out = b.overflow ? NULL : fhir_buf_steal(&b, NULL);
    fhir_buf_free(&b);
    return out;
}

typedef struct fetched {
    fhir_arena *a;
    const fhir_node *node;
    fhir_error *err;          /* set when the cached bytes do not decode */
} fetched;

static int fetch_cb(void *ctx, const char *type, const char *id, const void *data, size_t len)
{
    fetched *f = ctx;
    fhir_error e;
    fhir_error_clear(&e);
    f->node = fhir_bin_or_json_read(NULL, f->a, data, len, &e);
    if (!f->node) /* never sent without it: the Bundle would silently lack a record */
        fhir_error_set(f->err, "cached %s/%s does not decode (%s)", type ? type : "?", id ? id : "?", e.msg);
    return 0;
}

/* The cached resources a recipe array names, in its order, into a new array (caller frees).
 * One no longer cached (deleted at the source since) is left out, as a newer screening would
 * leave it out; -1 with err on a store failure, a malformed name, or a cached one that does
 * not decode. */
static int recipe_fetch(store *s, fhir_arena *a, const fhir_node *arr, const fhir_node ***out,
                        size_t *n, fhir_error *err)
{
    size_t cnt = fhir_node_count(arr);
    *out = fhir_xcalloc(cnt + 1, sizeof **out);
    *n = 0;
    for (const fhir_node *c = fhir_node_first(arr); c; c = c->next) {
        const char *ref = fhir_node_str(c), *slash = ref ? strchr(ref, '/') : NULL;
        if (!slash)
            return fhir_error_set(err, "the package names a resource without type/id");
        char type[64];
        snprintf(type, sizeof type, "%.*s", (int)(slash - ref), ref);
        fetched f = {.a = a, .err = err};
        int g = store_resource_get(s, type, slash + 1, fetch_cb, &f, err);
        if (g < 0 || (g == 1 && !f.node))
            return -1;
        if (g == 1)
            (*out)[(*n)++] = f.node;
    }
    return 0;
}

/* The Medications the medication rows reference ("Medication/<id>", relative or absolute), as
 * cached now, each once
 * in the order first referenced, into a new array (caller frees). One not cached is left out
 * (the row keeps its reference's display). 0, or -1 with err on a store failure or a cached one
 * that does not decode. */
static int drugs_fetch(store *s, fhir_arena *a, const fhir_node *const *rows, size_t n, const fhir_node ***out,
                       size_t *nout, fhir_error *err)
{
    *out = fhir_xcalloc(n + 1, sizeof **out);
    *nout = 0;
    for (size_t i = 0; i < n; i++) {
        const char *ref = fhir_node_path_str(rows[i], "medicationReference.reference"), *type, *id;
        bool contained;
        if (!fhir_ref_split(a, ref, &type, &id, &contained) || contained || !type ||
            strcmp(type, "Medication")) /* relative "Medication/<id>" or an absolute URL ending so */
            continue;
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++) {
            const char *rk = fhir_node_path_str(rows[k], "medicationReference.reference");
            seen = rk && !strcmp(rk, ref);
        }
        if (seen)
            continue;
        fetched f = {.a = a, .err = err};
        int g = store_resource_get(s, "Medication", id, fetch_cb, &f, err);
        if (g < 0 || (g == 1 && !f.node))
            return -1;
        if (g == 1)
            (*out)[(*nout)++] = f.node;
    }
    return 0;
}

int propose_package_payload(store *s, const refer_record *r, char **payload, fhir_error *err)
{
    *payload = NULL;
    if (!r->package)
        return fhir_error_set(err, "referral %lld has no package", (long long)r->id);
    fhir_arena *a = fhir_arena_new(PROPOSE_ARENA);
    const fhir_node **pat = NULL, **cond = NULL, **cov = NULL, **obs = NULL, **med = NULL, **rep = NULL,
                    **drugs = NULL;
    size_t npat = 0, ncond = 0, ncov = 0, nobs = 0, nmed = 0, nrep = 0, ndrugs = 0;
    char *html = NULL, *summary = NULL, *packet_text = NULL;
    const char **lines = NULL;
    int rc = -1;
    const fhir_node *rc_node = fhir_json_parse(a, r->package, strlen(r->package), NULL, err);
    if (!rc_node)
        goto done;
    if (recipe_fetch(s, a, fhir_node_get(rc_node, "patient"), &pat, &npat, err) ||
        recipe_fetch(s, a, fhir_node_get(rc_node, "condition"), &cond, &ncond, err) ||
        recipe_fetch(s, a, fhir_node_get(rc_node, "coverages"), &cov, &ncov, err) ||
        recipe_fetch(s, a, fhir_node_get(rc_node, "observations"), &obs, &nobs, err) ||
        recipe_fetch(s, a, fhir_node_get(rc_node, "medications"), &med, &nmed, err) ||
        recipe_fetch(s, a, fhir_node_get(rc_node, "reports"), &rep, &nrep, err) ||
        drugs_fetch(s, a, med, nmed, &drugs, &ndrugs, err))
        goto done;
    if (!npat) {
        fhir_error_set(err, "the patient is no longer cached: the package cannot be built");
        goto done;
    }
    const fhir_node *c = fhir_node_get(rc_node, "center");
    const fhir_node *al = fhir_node_get(c, "address_lines");
    size_t nl = fhir_node_count(al);
    lines = fhir_xcalloc(nl + 1, sizeof *lines);
    for (size_t i = 0; i < nl; i++)
        lines[i] = fhir_node_str(fhir_node_at(al, i));
    centers_center ce = {
        .id = fhir_node_str(fhir_node_get(c, "id")), .name = fhir_node_str(fhir_node_get(c, "name")),
        .contact_phone = fhir_node_str(fhir_node_get(c, "contact_phone")),
        .contact_email = fhir_node_str(fhir_node_get(c, "contact_email")),
        .address_lines = lines, .n_address_lines = nl,
        .city = fhir_node_str(fhir_node_get(c, "city")), .state = fhir_node_str(fhir_node_get(c, "state")),
        .postal_code = fhir_node_str(fhir_node_get(c, "postal_code")),
    };
    const char *ms = fhir_node_str(fhir_node_get(rc_node, "authored_ms"));
    /* the packet document: a JSON object (an older recipe: its text as a string) */
    const fhir_node *pk = fhir_node_get(rc_node, "packet");
    if (pk && pk->kind == FHIR_OBJECT)
        packet_text = fhir_json_to_string(pk, FHIR_JSON_COMPACT, PACKET_MAX_JSON);
    const char *packet_json = packet_text ? packet_text : fhir_node_str(pk);
    /* the summary the center reads as text is the packet's: in words, with the label
     * citations; the explanation's lines (criteria keys, record ids) only without a packet */
    if (packet_json)
        package_renderings(pk, r->patient_id, &html, &summary);
    const fhir_node *rf = fhir_node_get(rc_node, "referrer");
    char sysbase[200];
    snprintf(sysbase, sizeof sysbase, "urn:cartgate:%s", r->site_id);
    bser_input bi = {
        .id_system_base = sysbase, .placer_id = r->placer_id, .site_id = r->site_id,
        .site_name = fhir_node_str(fhir_node_get(rc_node, "site_name")),
        .center = &ce, .patient_id = r->patient_id, .patient = npat ? pat[0] : NULL,
        .coverages = cov, .n_coverages = ncov, .condition = ncond ? cond[0] : NULL,
        .observations = obs, .n_observations = nobs, .medications = med,
        .n_medications = nmed, .drugs = drugs, .n_drugs = ndrugs, .reports = rep, .n_reports = nrep,
        .reason_text = fhir_node_str(fhir_node_get(rc_node, "reason")),
        .summary_text = summary ? summary : r->explanation, .verdict_json = r->verdict_json, .urgency = r->urgency,
        .authored_ms = ms ? strtoll(ms, NULL, 10) : 0,
        .referrer_name = fhir_node_str(fhir_node_get(rf, "name")),
        .referrer_phone = fhir_node_str(fhir_node_get(rf, "phone")),
        .referrer_direct = fhir_node_str(fhir_node_get(rf, "direct")),
        .packet_json = html ? packet_json : NULL, .packet_html = html,
    };
    fhir_node *bundle = bser_build(a, &bi, err);
    if (!bundle)
        goto done;
    *payload = fhir_json_to_string(bundle, FHIR_JSON_COMPACT, PROPOSE_MAX_PAYLOAD);
    if (!*payload) {
        fhir_error_set(err, "the package is larger than its cap");
        goto done;
    }
    rc = 0;
done:
    free(pat);
    free(cond);
    free(cov);
    free(obs);
    free(med);
    free(rep);
    free(drugs);
    free(lines);
    free(html);
    free(summary);
    free(packet_text);
    fhir_arena_free(a);
    return rc;
}

static bool all_identified(const fhir_node *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!fhir_node_resource_type(v[i]) || !fhir_node_resource_id(v[i]))
            return false;
    return true;
}

/* Does every resource the package carries have a type and an id (the recipe names them so)? */
static bool parts_identified(const package_parts *p)
{
    return all_identified(&p->patient, 1) && all_identified(&p->condition, p->condition ? 1 : 0) &&
           all_identified(p->cov, p->ncov) && all_identified(p->obs, p->nobs) &&
           all_identified(p->med, p->nmed) && all_identified(p->rep, p->nrep);
}

static void parts_free(package_parts *p)
{
    free(p->cov);
    free(p->obs);
    free(p->med);
    free(p->rep);
}

int propose_withdraw(store *s, const char *patient_id, propose_result *out, fhir_error *err)
{
    memset(out, 0, sizeof *out);
    out->outcome = PROPOSE_NOT_CANDIDATE;
    return cancel_stale(s, patient_id, 0, 0, "nothing of the patient is cached any more", out,
                        err);
}

/* What the patient's episode calls for (decided before anything is built). */
typedef enum ep_action {
    ACT_NONE,          /* outcome already set */
    ACT_CREATE,        /* a new referral (first of an episode, or after withdrawals) */
    ACT_UPDATE,        /* change the active proposal in place (not yet sent) */
    ACT_REROUTE_NEW,   /* a re-route proposal for a person */
    ACT_REROUTE_UPDATE /* change the pending re-route proposal in place */
} ep_action;

/* Decides from the patient's referrals; sets out->outcome/referral_id for ACT_NONE. The
 * episode, predecessor, marker and row to change go to the out parameters. */
static int episode_decide(store *s, const propose_opts *o, const char *pid, const char *center,
                          const char *joined, const char *marker, ep_rows *rows,
                          episode_view *v, ep_action *act, int64_t *episode,
                          int64_t *supersedes, const char **ep_marker, int64_t *row_id,
                          propose_result *out, fhir_error *err)
{
    refer_filter f = {.state = -1, .patient_id = pid, .summary = true};
    if (refer_list(s, &f, ep_collect, rows, err) < 0)
        return -1;
    episode_of(rows, v);
    if (v->stale && refer_withdraw_in_tx(s, v->stale->id,
                                         "the referral it replaces was completed at its center: nothing to re-route",
                                         err))
        return -1;
    *act = ACT_NONE;
    *supersedes = 0;
    *row_id = 0;
    *episode = v->episode ? v->episode : 1;
    *ep_marker = v->marker ? v->marker : marker;
    if (!v->episode) {
        *act = ACT_CREATE;
        return 0;
    }
    if (v->closed) {
        if (!v->marker) {
            /* closed before markers were kept (an adopted database): today's marker is the
             * baseline a later relapse or progression is compared with */
            if (refer_set_marker_in_tx(s, v->last->id, marker, err))
                return -1;
        } else if (propose_episode_new(v->marker, marker)) {
            *act = ACT_CREATE;
            *episode = v->episode + 1;
            *ep_marker = marker;
            return 0;
        }
        out->outcome = PROPOSE_EPISODE_CLOSED;
        out->referral_id = v->last->id;
        return 0;
    }
    const ep_row *a = v->active;
    if (!a) {
        *act = ACT_CREATE; /* every proposal of the episode was withdrawn */
        return 0;
    }
    if (ep_target(a, center, joined)) {
        out->outcome = PROPOSE_EXISTS; /* the same referral (a pending re-route is withdrawn) */
        out->referral_id = a->id;
        return 0;
    }
    bool unsent = a->state == REFER_PENDING_APPROVAL;
    if (!unsent && a->state == REFER_APPROVED && a->auto_mode && o->mode == REFER_MODE_AUTO) {
        int sent = refer_ever_sent(s, a->id, err); /* approved by the standing order only */
        if (sent < 0)
            return -1;
        unsent = !sent;
    }
    if (unsent) {
        *act = ACT_UPDATE;
        *row_id = a->id;
        *supersedes = a->supersedes;
        return 0;
    }
    /* at a center, or approved by a person: a change is a proposal for a person */
    if (v->reroute && ep_target(v->reroute, center, joined)) {
        out->outcome = PROPOSE_EXISTS;
        out->referral_id = v->reroute->id;
        return 0;
    }
    if (reroute_refused(rows, v, center, joined)) {
        out->outcome = PROPOSE_EXISTS; /* a person said no to this re-route */
        out->referral_id = a->id;
        return 0;
    }
    *supersedes = a->id;
    if (v->reroute) {
        *act = ACT_REROUTE_UPDATE;
        *row_id = v->reroute->id;
    } else {
        *act = ACT_REROUTE_NEW;
    }
    return 0;
}

/* The indications a proposal is for and what each needs of a center. */
typedef struct rank_needs {
    const char *inds[ELIG_MAX_INDICATIONS];
    route_need needs[ELIG_MAX_INDICATIONS];
    char products[ELIG_MAX_INDICATIONS][48];
    size_t n;
} rank_needs;

/* Which indications count: screen.h decides (one definition for every caller). */
static void collect_needs(const propose_opts *o, const map_profile *prof, const elig_result *res,
                          bool consult_only, bool with_possible, rank_needs *nd)
{
    size_t idx[ELIG_MAX_INDICATIONS];
    size_t n_idx = consult_only ? screen_consult_indications(o->rules, res, idx, ELIG_MAX_INDICATIONS)
                                : screen_indications(o->rules, res, with_possible, idx, ELIG_MAX_INDICATIONS);
    nd->n = 0;
    const map_fact *dis = map_profile_fact(prof, "primary_disease");
    for (size_t k = 0; k < n_idx; k++) {
        size_t i = idx[k], n = nd->n;
        elig_category ic = elig_result_ind_category(res, i);
        const char *key = elig_ruleset_key(o->rules, i);
        const char *colon = strchr(key, ':');
        snprintf(nd->products[n], sizeof nd->products[n], "%.*s",
                 (int)(colon ? colon - key : (long)strlen(key)), key);
        nd->inds[n] = key;
        nd->needs[n].product = nd->products[n];
        nd->needs[n].disease = dis && dis->known ? dis->str : NULL;
        nd->needs[n].indication = key;
        nd->needs[n].possible = ic != ELIG_ELIGIBLE;
        nd->n++;
    }
}

/* The centers ranked for those needs from the patient's location (or the site's). */
static int rank_centers(const propose_opts *o, const map_profile *prof, const rank_needs *nd, fhir_arena *a,
                        route_result *rr, fhir_error *err)
{
    route_patient_location loc = {0};
    const map_fact *lat = map_profile_fact(prof, "latitude"), *lon = map_profile_fact(prof, "longitude");
    if (lat && lat->known && lon && lon->known) {
        loc.has_geo = true;
        loc.lat = lat->num;
        loc.lon = lon->num;
    }
    const map_fact *zip = map_profile_fact(prof, "postal_code");
    if (zip && zip->known)
        loc.zip = zip->str;
    route_site site = {.has_location = o->site_has_location, .lat = o->site_lat, .lon = o->site_lon,
                       .name = o->site_name};
    route_origin origin;
    const map_fact *payer = map_profile_fact(prof, "payer");
    if (route_resolve_origin(&loc, o->zcta, &site, &origin, err))
        return -1;
    /* the words name the indications; a stored route keeps no reason sentences */
    route_params params = {.rules = o->rules, .no_reasons = true, .cache = o->route_cache};
    return route_rank(a, o->centers, &origin, nd->needs, nd->n, payer && payer->known ? payer->str : NULL,
                      o->day, &params, rr, err);
}

fhir_node *propose_rank(fhir_arena *a, const propose_opts *o, const map_profile *prof, const elig_result *res,
                        fhir_error *err)
{
    rank_needs nd;
    collect_needs(o, prof, res, false, true, &nd);
    if (nd.n == 0 && elig_result_consult(res) != ELIG_CONSULT_NONE)
        collect_needs(o, prof, res, true, true, &nd);
    if (nd.n == 0) {
        fhir_error_set(err, "no indication calls for a center");
        return NULL;
    }
    route_result rr;
    if (rank_centers(o, prof, &nd, a, &rr, err))
        return NULL;
    return route_explain_json(a, &rr);
}

/* Does the verdict call for a proposal? *consult_only: a refer-early recommendation alone
 * makes it (the site chose so: referral.consult_proposals 1 refer_now, 2 early_consult and
 * refer_now). */
static bool proposal_called(const propose_opts *o, const elig_result *res, bool *consult_only)
{
    elig_category cat = elig_result_category(res);
    bool candidate = cat == ELIG_ELIGIBLE || (cat == ELIG_POSSIBLY_ELIGIBLE && o->with_possible);
    elig_consult cons = elig_result_consult(res);
    *consult_only = !candidate && cons != ELIG_CONSULT_NONE && o->consult_proposals > 0 &&
                    (cons == ELIG_CONSULT_NOW || o->consult_proposals == 2);
    return candidate || *consult_only;
}

/* The resources the package carries (the condition the primary disease rests on). */
static void parts_of(const propose_opts *o, const propose_input *in, package_parts *parts)
{
    const map_fact *dis = map_profile_fact(in->profile, "primary_disease");
    parts_pick(o, in, dis && dis->evidence ? dis->evidence : "", parts);
}

/* The request in words (the ServiceRequest's reasonCode.text, the packet, the inboxes). */
static void write_reason(const propose_opts *o, const elig_result *res, bool consult_only, const rank_needs *nd,
                         fhir_buf *reason)
{
    elig_category cat = elig_result_category(res);
    if (consult_only)
        fhir_buf_printf(reason, "CAR T-cell therapy consultation (%s; FDA label: %s) for ",
                        elig_result_consult(res) == ELIG_CONSULT_NOW ? "refer now, relapsed or refractory disease"
                                                                     : "consult early",
                        category_words(cat));
    else
        fhir_buf_printf(reason, "CAR T-cell therapy evaluation (%s) for ", category_words(cat));
    /* "Yescarta (axi-cel), Breyanzi (liso-cel): large B-cell lymphoma, third line or later" */
    elig_display_write(o->rules, nd->inds, nd->n, reason);
}

/* A proposal's three texts for center (rr's pick), authored now: the clinician summary
 * (appended to expl), the route as the referral keeps it (*route_json, NULL when over its
 * cap) and the package recipe (*package); caller frees both. 0, or -1 when the package is over
 * its cap. */
static int texts_compose(fhir_arena *a, const propose_opts *o, const propose_input *in,
                         const package_parts *parts, const route_result *rr, const centers_center *center,
                         const char *reason, const char *urg, fhir_buf *expl, char **route_json,
                         char **package)
{
    *route_json = *package = NULL;
    /* the clinician summary, and the verdict's words the packet reads, in one pass */
    const fhir_node *verdict = verdict_for_packet(a, o->rules, in->facts, in->result, expl);
    int64_t authored = fhir_clock_now_ms();
    packet_referrer referrer;
    char ref_source[160];
    const fhir_node *packet = build_packet(a, o, in, parts, verdict, center, reason, urg, authored, &referrer,
                                           ref_source, sizeof ref_source);
    /* the Bundle itself is built from this when it is shown, approved or sent
     * (propose_package_payload) */
    *package = package_recipe(o, parts, center, &referrer, reason, authored, packet, in->patient_id);
    if (!*package)
        return -1;
    fhir_buf rb; /* the route as the referral keeps it, written once */
    fhir_buf_init(&rb, PROPOSE_MAX_ROUTE);
    *route_json = route_explain_write(rr, &rb) ? NULL : fhir_buf_steal(&rb, NULL);
    fhir_buf_free(&rb);
    return 0;
}

int propose_referral(store *s, const propose_opts *o, const propose_input *in,
                     propose_result *out, fhir_error *err)
{
    memset(out, 0, sizeof *out);
    const char *pid = in->patient_id;
    const elig_result *res = in->result;
    const map_profile *prof = in->profile;
    bool consult_only;
    if (!proposal_called(o, res, &consult_only)) {
        out->outcome = PROPOSE_NOT_CANDIDATE;
        return cancel_stale(s, pid, 0, 0, "verdict no longer makes the patient a candidate", out,
                            err);
    }
    rank_needs nd;
    collect_needs(o, prof, res, consult_only, o->with_possible, &nd);
    const char *const *inds = nd.inds;
    size_t n = nd.n;
    out->n_indications = n;
    if (n == 0) {
        out->outcome = PROPOSE_NO_INDICATION;
        return 0;
    }
    /* the best center */
    fhir_error rerr;
    fhir_error_clear(&rerr);
    fhir_arena *a = fhir_arena_new(PROPOSE_ARENA);
    route_result rr;
    if (rank_centers(o, prof, &nd, a, &rr, &rerr)) {
        out->outcome = PROPOSE_ROUTE_FAILED;
        snprintf(out->detail, sizeof out->detail, "%s", rerr.msg);
        fhir_arena_free(a);
        return 0;
    }
    if (rr.n_candidates == 0) {
        out->outcome = PROPOSE_NO_CENTER;
        fhir_arena_free(a);
        return 0;
    }
    size_t pick = 0;
    if (o->center_id) { /* a person chose among the candidates */
        while (pick < rr.n_candidates && strcmp(rr.candidates[pick].center->id, o->center_id))
            pick++;
        if (pick == rr.n_candidates) {
            out->outcome = PROPOSE_NO_CENTER;
            snprintf(out->detail, sizeof out->detail, "center %s is not among the ranked candidates",
                     o->center_id);
            fhir_arena_free(a);
            return 0;
        }
    }
    const centers_center *center = rr.candidates[pick].center;
    snprintf(out->center_id, sizeof out->center_id, "%s", center->id);
    int rc = -1;
    char *package = NULL, *route_json = NULL;
    fhir_buf expl, reason;
    fhir_buf_init(&expl, PROPOSE_MAX_EXPLANATION);
    fhir_buf_init(&reason, PROPOSE_MAX_REASON);
    package_parts parts = {0};
    ep_rows rows = {0};
    episode_view v;
    char marker[PROPOSE_MARKER_MAX];
    propose_episode_marker(prof, marker, sizeof marker);
    char *joined = refer_join_indications(inds, n, &rerr);
    if (!joined) {
        out->outcome = PROPOSE_NO_PAYLOAD;
        snprintf(out->detail, sizeof out->detail, "%s", rerr.msg);
        rc = 0;
        goto done;
    }
    /* one active referral per patient and episode (propose.h) */
    ep_action act;
    int64_t episode, supersedes, row_id;
    const char *ep_marker;
    if (episode_decide(s, o, pid, center->id, joined, marker, &rows, &v, &act, &episode,
                       &supersedes, &ep_marker, &row_id, out, err))
        goto done;
    out->episode = episode;
    out->supersedes = supersedes;
    if (act == ACT_NONE) {
        /* nothing to build; proposals other than the one kept are taken back */
        int64_t keep = out->outcome == PROPOSE_EXISTS ? out->referral_id : 0;
        int64_t keep2 = v.active ? v.active->id : 0;
        if (cancel_stale(s, pid, keep, keep2, "superseded by a new verdict", out, err))
            goto done;
        rc = 0;
        goto done;
    }
    char placer[REFER_PLACER_MAX];
    if (refer_placer_unique(s, o->site_id, pid, inds, n, center->id, placer, err))
        goto done;
    /* the package's parts */
    parts_of(o, in, &parts);
    const char *urg = urgency_for(o, elig_result_urgency(res));
    snprintf(out->urgency, sizeof out->urgency, "%s", urg);
    if (!parts.patient) {
        out->outcome = PROPOSE_NO_PAYLOAD; /* nothing to send without the Patient */
        rc = 0;
        goto done;
    }
    if (!parts_identified(&parts)) {
        out->outcome = PROPOSE_NO_PAYLOAD; /* what bser_build would refuse to copy */
        snprintf(out->detail, sizeof out->detail, "%s",
                 "referral package: every copied resource needs resourceType and id");
        rc = 0;
        goto done;
    }
    /* the texts: now, or when the row is first read (propose_compose, the same code) */
    if (!o->defer_texts) {
        write_reason(o, res, consult_only, &nd, &reason);
        if (texts_compose(a, o, in, &parts, &rr, center, fhir_buf_cstr(&reason), urg, &expl, &route_json,
                          &package)) {
            out->outcome = PROPOSE_NO_PAYLOAD;
            snprintf(out->detail, sizeof out->detail, "%s", "the package is larger than its cap");
            rc = 0;
            goto done;
        }
    }
    bool reroute = act == ACT_REROUTE_NEW || act == ACT_REROUTE_UPDATE;
    refer_request req = {
        .site_id = o->site_id, .patient_id = pid, .center_id = center->id, .indications = inds,
        .n_indications = n, .urgency = urg, .explanation = o->defer_texts ? NULL : fhir_buf_cstr(&expl),
        .verdict_json = in->verdict_json, .route_json = route_json, .package = package,
        /* a re-route always waits for a person, also under standing orders */
        .mode = reroute ? REFER_MODE_APPROVAL : o->mode, .actor = "screener",
        .episode = episode, .supersedes = supersedes, .episode_marker = ep_marker,
        .placer_id = placer,
    };
    if (act == ACT_UPDATE || act == ACT_REROUTE_UPDATE) {
        if (refer_update_in_tx(s, row_id, &req, err))
            goto done;
        out->referral_id = row_id;
        out->outcome = reroute ? PROPOSE_REROUTE : PROPOSE_UPDATED;
    } else {
        bool created = false;
        if (refer_create_in_tx(s, &req, &out->referral_id, &created, err))
            goto done;
        out->outcome = !created ? PROPOSE_EXISTS : reroute ? PROPOSE_REROUTE : PROPOSE_CREATED;
    }
    /* any other proposal of the patient still awaiting approval is taken back */
    if (cancel_stale(s, pid, out->referral_id, reroute ? supersedes : 0,
                     "superseded by a new verdict", out, err))
        goto done;
    rc = 0;
done:
    ep_free(&rows);
    free(joined);
    parts_free(&parts);
    free(route_json);
    free(package);
    fhir_buf_free(&expl);
    fhir_buf_free(&reason);
    fhir_arena_free(a);
    return rc;
}

int propose_compose(store *s, const propose_env *env, const refer_record *r, refer_compose_cause *cause,
                    fhir_error *err)
{
    refer_compose_cause why_local;
    refer_compose_cause *why = cause ? cause : &why_local;
    *why = REFER_COMPOSE_OTHER;
    if (!r->patient_id || !r->center_id || !r->placer_id)
        return fhir_error_set(err, "referral %lld: no patient, center or placer id", (long long)r->id);
    if (!env->resources || !env->tables || !env->opts.rules || !env->opts.centers) {
        *why = REFER_COMPOSE_NOT_LOADED;
        return fhir_error_set(err, "the criteria, tables or centers are not loaded");
    }
    propose_opts o = env->opts;
    o.center_id = r->center_id; /* the proposal's center, also a person's choice */
    o.defer_texts = false;
    int rc = -1;
    fhir_arena *ra = fhir_arena_new(PROPOSE_ARENA), *a = NULL;
    const fhir_node **res = NULL;
    size_t nres = 0;
    screen *sc = NULL;
    package_parts parts = {0};
    char *route_json = NULL, *package = NULL;
    fhir_buf expl, reason;
    fhir_buf_init(&expl, PROPOSE_MAX_EXPLANATION);
    fhir_buf_init(&reason, PROPOSE_MAX_REASON);
    /* the patient as cached now, screened as the screening did (the same steps) */
    elig_records rec = {0, 0};
    if (env->resources(env->ud, r->patient_id, ra, &res, &nres, &rec, err))
        goto done;
    if (nres == 0) {
        *why = REFER_COMPOSE_NOT_CACHED;
        fhir_error_set(err, "nothing of the patient is cached any more");
        goto done;
    }
    map_profile_opts po;
    map_profile_opts_default(&po);
    if (env->as_of_days >= 0)
        po.as_of_days = env->as_of_days;
    sc = screen_new(env->tables, o.rules, &po);
    if (screen_patient(sc, res, nres, err))
        goto done;
    screen_set_records(sc, &rec); /* the texts say so when made from part of the chart */
    const map_profile *prof = screen_profile(sc);
    const elig_result *vres = screen_result(sc);
    bool consult_only;
    rank_needs nd;
    if (proposal_called(&o, vres, &consult_only))
        collect_needs(&o, prof, vres, consult_only, o.with_possible, &nd);
    else
        nd.n = 0;
    if (nd.n == 0) {
        *why = REFER_COMPOSE_VERDICT_CHANGED;
        fhir_error_set(err, "the verdict no longer calls for this proposal (a re-screen withdraws it)");
        goto done;
    }
    a = fhir_arena_new(PROPOSE_ARENA);
    route_result rr;
    if (rank_centers(&o, prof, &nd, a, &rr, err))
        goto done;
    size_t pick = 0;
    while (pick < rr.n_candidates && strcmp(rr.candidates[pick].center->id, o.center_id))
        pick++;
    if (pick == rr.n_candidates) {
        *why = REFER_COMPOSE_CENTER_GONE;
        fhir_error_set(err, "center %s is no longer among the ranked candidates", o.center_id);
        goto done;
    }
    propose_input in = {.patient_id = r->patient_id, .profile = prof, .facts = screen_facts(sc),
                        .result = vres, .verdict_json = r->verdict_json, .resources = res,
                        .n_resources = nres};
    parts_of(&o, &in, &parts);
    if (!parts.patient || !parts_identified(&parts)) {
        *why = !parts.patient ? REFER_COMPOSE_NOT_CACHED : REFER_COMPOSE_OTHER;
        fhir_error_set(err, "the package's resources are not cached with type and id");
        goto done;
    }
    write_reason(&o, vres, consult_only, &nd, &reason);
    if (texts_compose(a, &o, &in, &parts, &rr, rr.candidates[pick].center, fhir_buf_cstr(&reason),
                      r->urgency ? r->urgency : urgency_for(&o, elig_result_urgency(vres)), &expl,
                      &route_json, &package)) {
        *why = REFER_COMPOSE_TOO_LARGE;
        fhir_error_set(err, "the package is larger than its cap");
        goto done;
    }
    /* 0 stored: another reader stored them first, or a re-screen changed the proposal */
    if (store_referral_set_texts(s, r->id, r->placer_id, fhir_buf_cstr(&expl), route_json, package, err) < 0)
        goto done;
    *why = REFER_COMPOSE_OK;
    rc = 0;
done:
    parts_free(&parts);
    free(route_json);
    free(package);
    fhir_buf_free(&expl);
    fhir_buf_free(&reason);
    screen_free(sc);
    free(res);
    fhir_arena_free(a);
    fhir_arena_free(ra);
    return rc;
}


void propose_log(const char *pid, refer_mode mode, const propose_result *r)
{
    for (size_t i = 0; i < r->n_cancelled; i++)
        fhir_log(FHIR_LOG_INFO, "referral.cancelled", "referral=%lld patient=%s reason=verdict_changed",
                 (long long)r->cancelled[i], pid);
    switch (r->outcome) {
    case PROPOSE_ROUTE_FAILED:
        fhir_log(FHIR_LOG_WARN, "referral.route_failed", "patient=%s error=%s", pid,
                 r->detail);
        break;
    case PROPOSE_NO_CENTER:
        fhir_log(FHIR_LOG_WARN, "referral.no_center", "patient=%s indications=%zu", pid,
                 r->n_indications);
        break;
    case PROPOSE_NO_PAYLOAD:
        if (r->detail[0])
            fhir_log(FHIR_LOG_WARN, "referral.payload_failed", "patient=%s error=%s", pid,
                     r->detail);
        break;
    case PROPOSE_UPDATED:
        fhir_log(FHIR_LOG_INFO, "referral.updated",
                 "referral=%lld patient=%s center=%s indications=%zu urgency=%s",
                 (long long)r->referral_id, pid, r->center_id, r->n_indications, r->urgency);
        break;
    case PROPOSE_REROUTE:
        fhir_log(FHIR_LOG_INFO, "referral.reroute_proposed",
                 "referral=%lld replaces=%lld patient=%s center=%s indications=%zu",
                 (long long)r->referral_id, (long long)r->supersedes, pid, r->center_id,
                 r->n_indications);
        break;
    case PROPOSE_CREATED:
        fhir_log(FHIR_LOG_INFO, "referral.created",
                 "referral=%lld patient=%s center=%s indications=%zu mode=%s urgency=%s",
                 (long long)r->referral_id, pid, r->center_id, r->n_indications,
                 mode == REFER_MODE_AUTO ? "auto" : "approval", r->urgency);
        break;
    default:
        break;
    }
}
