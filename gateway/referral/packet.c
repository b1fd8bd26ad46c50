/* packet — the referral packet: a small document built from the screening, rendered as HTML,
 * text or PDF (packet.h). */
#include "packet.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cairo-pdf.h>
#include <cairo.h>
#include <openssl/evp.h>
#include <pango/pangocairo.h>
#include <pthread.h>

#include "fhir_clock.h"
#include "fhir_dl.h"
#include "fhir_json.h"

/* ---- small helpers ----------------------------------------------------------------------- */

/* "YYYY-MM-DD" ("%04d-%02u-%02u": by hand for years 0..9999, a common day, else printf). */
static void day_text(int64_t day, char *out, size_t n)
{
    int y;
    unsigned m, d;
    fhir_clock_civil_from_days(day, &y, &m, &d);
    if (y < 0 || y > 9999 || m > 99 || d > 99 || n < 11) {
        snprintf(out, n, "%04d-%02u-%02u", y, m, d);
        return;
    }
    const char t[11] = {(char)('0' + y / 1000), (char)('0' + y / 100 % 10), (char)('0' + y / 10 % 10),
                        (char)('0' + y % 10), '-', (char)('0' + m / 10), (char)('0' + m % 10), '-',
                        (char)('0' + d / 10), (char)('0' + d % 10), '\0'};
    memcpy(out, t, sizeof t);
}

/* The first "(YYYY-MM-DD)" in a profile evidence string (the date of the value). */
static bool evidence_date(const char *ev, char out[11])
{
    for (const char *p = ev ? strchr(ev, '(') : NULL; p; p = strchr(p + 1, '(')) {
        if (strlen(p) >= 12 && isdigit((unsigned char)p[1]) && p[5] == '-' && p[8] == '-' && p[11] == ')') {
            memcpy(out, p + 1, 10);
            out[10] = '\0';
            int64_t d;
            if (!fhir_clock_parse_ymd(out, &d))
                return true;
        }
    }
    return false;
}

static void set_opt(fhir_arena *a, fhir_node *o, const char *k, const char *v)
{
    if (v && *v)
        fhir_node_set_str(a, o, k, v);
}

static const char *codeable_text(const fhir_node *cc)
{
    const char *t = fhir_node_path_str(cc, "text");
    if (t && *t)
        return t;
    for (const fhir_node *c = fhir_node_first(fhir_node_get(cc, "coding")); c; c = c->next) {
        const char *d = fhir_node_path_str(c, "display");
        if (d && *d)
            return d;
    }
    return NULL;
}

/* "Given Family" from Patient.name (official first), or its text. */
static void person_name(const fhir_node *pt, fhir_buf *b)
{
    const fhir_node *best = NULL;
    for (const fhir_node *n = fhir_node_first(fhir_node_get(pt, "name")); n; n = n->next) {
        const char *use = fhir_node_path_str(n, "use");
        if (!best || (use && !strcmp(use, "official")))
            best = n;
    }
    if (!best)
        return;
    const char *text = fhir_node_path_str(best, "text");
    if (text && *text) {
        fhir_buf_puts(b, text);
        return;
    }
    for (const fhir_node *g = fhir_node_first(fhir_node_get(best, "given")); g; g = g->next)
        if (fhir_node_str(g))
            fhir_buf_printf(b, "%s%s", b->len ? " " : "", fhir_node_str(g));
    const char *fam = fhir_node_path_str(best, "family");
    if (fam)
        fhir_buf_printf(b, "%s%s", b->len ? " " : "", fam);
}

/* The medical record number: an identifier typed MR, else the first with a value. */
static const char *patient_mrn(const fhir_node *pt)
{
    const char *first = NULL;
    for (const fhir_node *id = fhir_node_first(fhir_node_get(pt, "identifier")); id; id = id->next) {
        const char *v = fhir_node_path_str(id, "value");
        if (!v)
            continue;
        if (!first)
            first = v;
        for (const fhir_node *c = fhir_node_first(fhir_node_path(id, "type.coding")); c; c = c->next) {
            const char *code = fhir_node_path_str(c, "code");
            if (code && !strcmp(code, "MR"))
                return v;
        }
    }
    return first;
}

static const char *telecom(const fhir_node *res, const char *system)
{
    for (const fhir_node *t = fhir_node_first(fhir_node_get(res, "telecom")); t; t = t->next) {
        const char *s = fhir_node_path_str(t, "system");
        if (s && !strcmp(s, system))
            return fhir_node_path_str(t, "value");
    }
    return NULL;
}

static void address_text(const fhir_node *pt, fhir_buf *b)
{
    const fhir_node *ad = fhir_node_first(fhir_node_get(pt, "address"));
    if (!ad)
        return;
    const char *text = fhir_node_path_str(ad, "text");
    if (text && *text) {
        fhir_buf_puts(b, text);
        return;
    }
    for (const fhir_node *l = fhir_node_first(fhir_node_get(ad, "line")); l; l = l->next)
        if (fhir_node_str(l))
            fhir_buf_printf(b, "%s%s", b->len ? ", " : "", fhir_node_str(l));
    const char *parts[] = {"city", "state", "postalCode"};
    for (size_t i = 0; i < 3; i++) {
        const char *v = fhir_node_path_str(ad, parts[i]);
        if (v && *v)
            fhir_buf_printf(b, "%s%s", b->len ? (i == 2 ? " " : ", ") : "", v);
    }
}

/* o[k] = []; NULL when the arena's cap is hit (packet_build then reports it). */
static fhir_node *arr(fhir_arena *a, fhir_node *o, const char *k)
{
    return fhir_node_set_arr(a, o, k);
}

/* The text without its resource references: " (Observation/x)" and "Observation/x " are
 * provenance for the screen's JSON, not words for a nurse. A reference: a word of letters
 * (more than three, the first capital, the second small, not after a letter or digit), '/',
 * then an id (letters, digits, '-', '.'); dropped with its brackets, or with the spaces after
 * it. Found from the text's '/'s (most lines have none but a URL's); s itself when it has
 * none. */
static const char *strip_refs(fhir_arena *a, const char *s)
{
    const char *slash = s ? strchr(s, '/') : NULL;
    if (!slash)
        return s;
    size_t n = strlen(s), o = 0, cur = 0; /* s[cur..] is not copied yet */
    char *out = NULL;
    for (size_t j = (size_t)(slash - s); j < n;) {
        size_t i = j, k = j + 1; /* the word before the '/' starts at i */
        while (i > 0 && isalpha((unsigned char)s[i - 1]))
            i--;
        bool ref = i >= cur && j > i + 3 && isupper((unsigned char)s[i]) && islower((unsigned char)s[i + 1]) &&
                   (i == 0 || !isalnum((unsigned char)s[i - 1]));
        if (ref) {
            while (k < n && (isalnum((unsigned char)s[k]) || s[k] == '-' || s[k] == '.'))
                k++;
            ref = k > j + 1;
        }
        if (!ref) {
            slash = strchr(s + j + 1, '/');
            j = slash ? (size_t)(slash - s) : n;
            continue;
        }
        if (!out && !(out = fhir_arena_alloc(a, n + 1)))
            return s;
        memcpy(out + o, s + cur, i - cur);
        o += i - cur;
        /* drop it with its brackets, or with the space after it */
        if (o > 0 && out[o - 1] == '(' && k < n && s[k] == ')') {
            o--;
            k++;
            while (o > 0 && out[o - 1] == ' ')
                o--;
        } else {
            while (k < n && s[k] == ' ')
                k++;
        }
        cur = k;
        slash = k < n ? strchr(s + k, '/') : NULL;
        j = slash ? (size_t)(slash - s) : n;
    }
    if (!out)
        return s;
    memcpy(out + o, s + cur, n - cur);
    out[o + n - cur] = '\0';
    return out;
}

static void push_str(fhir_arena *a, fhir_node *array, const char *s)
{
    if (!array)
        return;
    s = strip_refs(a, s);
    fhir_node *v = fhir_node_new_str(a, s ? s : "");
    if (v)
        fhir_node_append(a, array, NULL, 0, v);
}

/* ---- building ------------------------------------------------------------------------------ */

/* Labs the packet lists (profile fact, plain name, unit). */
static const struct lab_row {
    const char *fact, *name, *unit;
} LABS[] = {
    {"anc", "Absolute neutrophil count", "x10^3/uL"},
    {"alc", "Absolute lymphocyte count", "x10^3/uL"},
    {"platelets", "Platelets", "x10^3/uL"},
    {"hemoglobin", "Hemoglobin", "g/dL"},
    {"creatinine", "Creatinine", "mg/dL"},
    {"crcl", "Creatinine clearance (Cockcroft-Gault)", "mL/min"},
    {"egfr", "eGFR", "mL/min/1.73 m2"},
    {"bilirubin", "Total bilirubin", "mg/dL"},
    {"ast", "AST", "U/L"},
    {"alt", "ALT", "U/L"},
    {"lvef", "Left ventricular ejection fraction", "%"},
    {"spo2", "Oxygen saturation", "%"},
};

static void num_text(double v, char *out, size_t n)
{
    if (v == floor(v) && fabs(v) < 1e9)
        fhir_fmt_fixed(out, n, v, 0); /* "%.0f" */
    else
        snprintf(out, n, "%.3g", v);
}

const char *packet_flag_words(fhir_arena *a, const char *line, bool note)
{
    const char *p = line + (note ? 5 : 12);
    while (*p && *p != ' ' && *p != ':')
        p++;
    if (note)
        return *p == ':' ? fhir_arena_strdup(a, p + (p[1] == ' ' ? 2 : 1)) : line;
    if (p[0] != ' ' || p[1] != '(')
        return line;
    const char *close = strstr(p, "): ");
    if (!close)
        return line;
    size_t n = (size_t)(close - (p + 2));
    char *out = fhir_arena_alloc(a, n + strlen(close + 3) + 3);
    if (!out)
        return line;
    memcpy(out, p + 2, n);
    strcpy(out + n, ": ");
    strcpy(out + n + 2, close + 3);
    return out;
}

/* "refer_now: WHY" -> "Refer now: WHY". */
static const char *consult_words(fhir_arena *a, const char *reason)
{
    static const struct {
        const char *key, *words;
    } K[] = {{"refer_now: ", "Refer now: "}, {"early_consult: ", "Early consultation: "}};
    for (size_t i = 0; i < sizeof K / sizeof K[0]; i++) {
        size_t n = strlen(K[i].key);
        if (!strncmp(reason, K[i].key, n)) {
            size_t m = strlen(K[i].words), r = strlen(reason + n);
            char *out = fhir_arena_alloc(a, m + r + 1);
            if (!out)
                return reason;
            memcpy(out, K[i].words, m);
            memcpy(out + m, reason + n, r + 1);
            return out;
        }
    }
    return reason;
}

static void add_lines(fhir_arena *a, fhir_node *pk, const map_profile *p)
{
    fhir_node *lines = arr(a, pk, "lines");
    if (!lines)
        return;
    size_t nl = map_profile_line_count(p), first = nl > PACKET_MAX_LINES ? nl - PACKET_MAX_LINES : 0;
    size_t ne = map_profile_event_count(p);
    for (size_t i = first; i < nl; i++) {
        const map_line *l = map_profile_line(p, i);
        fhir_node *o = fhir_node_new(a, FHIR_OBJECT);
        if (!o)
            return;
        char d1[16], d2[16];
        day_text(l->start_days, d1, sizeof d1);
        day_text(l->end_days, d2, sizeof d2);
        char num[16];
        snprintf(num, sizeof num, "%d", l->number);
        fhir_node_set_str(a, o, "number", num);
        fhir_node_set_str(a, o, "start", d1);
        fhir_node_set_str(a, o, "end", l->end_unknown ? "" : d2);
        fhir_buf t;
        fhir_buf_init(&t, 2048);
        for (size_t k = 0; k < l->ndrugs; k++)
            fhir_buf_printf(&t, "%s%s", k ? " + " : "", l->drugs[k]);
        if (l->unknown_agents)
            fhir_buf_puts(&t, t.len ? " + agents not recorded" : "therapy recorded without its agents");
        if (l->has_auto_hct)
            fhir_buf_puts(&t, t.len ? ", then autologous transplant" : "autologous transplant");
        if (l->has_allo_hct)
            fhir_buf_puts(&t, t.len ? ", then allogeneic transplant" : "allogeneic transplant");
        if (l->is_car_t && !l->ndrugs)
            fhir_buf_puts(&t, "CAR T-cell therapy");
        if (l->maintenance)
            fhir_buf_puts(&t, " (continued as maintenance)");
        fhir_node_set_str(a, o, "therapy", fhir_buf_cstr(&t));
        /* what happened after it started, up to the next line */
        const map_line *next = map_profile_line(p, i + 1);
        fhir_buf_reset(&t);
        for (size_t k = 0; k < ne; k++) {
            const map_event *e = map_profile_event(p, k);
            if (e->day < l->start_days || (next && e->day >= next->start_days))
                continue;
            if (e->kind != MAP_EVENT_RESPONSE && e->kind != MAP_EVENT_PROGRESSION)
                continue;
            char d[16];
            day_text(e->day, d, sizeof d);
            fhir_buf_printf(&t, "%s%s %s", t.len ? "; " : "", map_event_kind_text(e->kind), d);
        }
        fhir_node_set_str(a, o, "response", t.len ? fhir_buf_cstr(&t) : "not documented");
        fhir_buf_free(&t);
        fhir_node_append(a, lines, NULL, 0, o);
    }
    fhir_node *events = arr(a, pk, "events");
    if (!events)
        return;
    for (size_t k = 0; k < ne; k++) {
        const map_event *e = map_profile_event(p, k);
        fhir_node *o = fhir_node_new(a, FHIR_OBJECT);
        if (!o)
            return;
        char d[16];
        day_text(e->day, d, sizeof d);
        fhir_node_set_str(a, o, "date", d);
        fhir_node_set_str(a, o, "what", map_event_kind_text(e->kind));
        fhir_node_append(a, events, NULL, 0, o);
    }
}

static void add_labs(fhir_arena *a, fhir_node *pk, const map_profile *p)
{
    const map_fact *ecog = map_profile_fact(p, "ecog");
    if (ecog && ecog->known) {
        fhir_node *o = fhir_node_set_obj(a, pk, "ecog");
        char v[32], d[11];
        num_text(ecog->num, v, sizeof v);
        if (o) {
            fhir_node_set_str(a, o, "value", v);
            if (evidence_date(ecog->evidence, d))
                fhir_node_set_str(a, o, "date", d);
        }
    }
    fhir_node *labs = arr(a, pk, "labs");
    if (!labs)
        return;
    for (size_t i = 0; i < sizeof LABS / sizeof LABS[0]; i++) {
        const map_fact *f = map_profile_fact(p, LABS[i].fact);
        if (!f || !f->known || f->type != MAP_FACT_NUMBER)
            continue;
        fhir_node *o = fhir_node_new(a, FHIR_OBJECT);
        if (!o)
            return;
        char v[32], d[11];
        num_text(f->num, v, sizeof v);
        fhir_node_set_str(a, o, "name", LABS[i].name);
        fhir_node_set_str(a, o, "value", v);
        fhir_node_set_str(a, o, "unit", LABS[i].unit);
        if (evidence_date(f->evidence, d))
            fhir_node_set_str(a, o, "date", d);
        fhir_node_append(a, labs, NULL, 0, o);
    }
}

/* s after the texts parts[0..n) written one after another; NULL when s does not start so. */
static const char *after_parts(const char *s, const char *const *parts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(parts[i]);
        if (strncmp(s, parts[i], len))
            return NULL;
        s += len;
    }
    return s;
}

/* An explanation line about indications with the indications in words: "axi-cel:LBCL-2L
 * eligible (Yescarta, <description>): eligible. <gates>" -> "Yescarta (axi-cel): <short> —
 * eligible. <gates>"; "a:X,b:Y not_eligible: <why>" -> "<a and b in words> — not met: <why>".
 * The line as it is without rules or when it is not of that shape. In arena a. */
static const char *line_words(fhir_arena *a, const elig_ruleset *rules, const char *s)
{
    const char *sp = strchr(s, ' ');
    char keys[1024];
    if (!rules || !sp || (size_t)(sp - s) >= sizeof keys)
        return s;
    memcpy(keys, s, (size_t)(sp - s));
    keys[sp - s] = 0;
    const char *rest = NULL, *what = "";
    if (!strncmp(sp, " not_eligible: ", 15)) {
        rest = sp + 15;
        what = "not met: ";
    } else {
        elig_label l;
        int i = elig_ruleset_find(rules, keys);
        if (i < 0 || elig_ruleset_label(rules, (size_t)i, &l))
            return s;
        const elig_category cats[] = {ELIG_ELIGIBLE, ELIG_POSSIBLY_ELIGIBLE};
        for (size_t k = 0; k < 2 && !rest; k++) { /* "KEYS CATEGORY (BRAND, DESCRIPTION): " */
            const char *pre[] = {keys, " ", elig_category_name(cats[k]), " (", l.brand ? l.brand : "", ", ",
                                 elig_ruleset_description(rules, (size_t)i), "): "};
            rest = after_parts(s, pre, sizeof pre / sizeof *pre);
        }
    }
    if (!rest)
        return s;
    for (char *k = keys; k && *k;) { /* every key known, else the line stays as written */
        char *comma = strchr(k, ',');
        if (comma)
            *comma = 0;
        elig_display d;
        bool known = elig_display_of(rules, k, &d);
        if (comma)
            *comma = ',';
        if (!known)
            return s;
        k = comma ? comma + 1 : NULL;
    }
    fhir_buf b;
    fhir_buf_init(&b, PACKET_MAX_JSON);
    elig_display_write_joined(rules, keys, &b);
    fhir_buf_printf(&b, " \xe2\x80\x94 %s%s", what, rest);
    const char *out = b.overflow ? NULL : fhir_arena_strdup(a, fhir_buf_cstr(&b));
    fhir_buf_free(&b);
    return out ? out : s;
}

static void add_verdict(fhir_arena *a, fhir_node *pk, const fhir_node *v, const elig_ruleset *rules)
{
    set_opt(a, pk, "category", fhir_node_path_str(v, "category"));
    fhir_node *assess = arr(a, pk, "assessment"), *other = arr(a, pk, "other");
    fhir_node *flags = arr(a, pk, "review_flags"), *notes = arr(a, pk, "notes");
    for (const fhir_node *e = fhir_node_first(fhir_node_get(v, "explanation")); e; e = e->next) {
        const char *s = fhir_node_str(e);
        if (!s)
            continue;
        if (!strncmp(s, "review flag ", 12))
            push_str(a, flags, packet_flag_words(a, s, false));
        else if (!strncmp(s, "note ", 5))
            push_str(a, notes, packet_flag_words(a, s, true));
        else if (!strncmp(s, "consult ", 8) || !strncmp(s, "pending ", 8) ||
                 !strncmp(s, "urgency ", 8) || !strncmp(s, "not the disease of the label", 28))
            continue; /* consult reasons come from "consult", the urgency is the header's;
                         pending labels and labels for other diseases are not the center's */
        else if (strstr(s, " not_eligible"))
            push_str(a, other, line_words(a, rules, s));
        else
            push_str(a, assess, line_words(a, rules, s));
    }
    fhir_node *consult = arr(a, pk, "consult");
    for (const fhir_node *r = fhir_node_first(fhir_node_path(v, "consult.reasons")); r; r = r->next)
        if (fhir_node_str(r))
            push_str(a, consult, consult_words(a, fhir_node_str(r)));
    fhir_node *req = arr(a, pk, "to_request");
    for (const fhir_node *r = fhir_node_first(fhir_node_get(v, "to_request")); r; r = r->next)
        if (fhir_node_str(r))
            push_str(a, req, fhir_node_str(r));
}

/* ---- pathology and imaging reports ---------------------------------------------------------- */

/* Is w a whole word of s (case-insensitive; words are runs of letters and digits)? */
static bool has_word(const char *s, const char *w)
{
    size_t n = strlen(w);
    for (const char *p = s; p && *p; p++) {
        if ((p == s || !isalnum((unsigned char)p[-1])) && !strncasecmp(p, w, n) && !isalnum((unsigned char)p[n]))
            return true;
    }
    return false;
}

static const char *kind_of_text(const char *t)
{
    static const char *const PATH[] = {"pathology", "pathologic", "biopsy", "histology", "histopathology",
                                       "cytogenetics", "cytogenetic", "FISH", "flow cytometry",
                                       "bone marrow", "immunohistochemistry", "karyotype", NULL};
    static const char *const IMG[] = {"radiology", "imaging", "PET", "CT", "PET/CT", "MRI", "tomography",
                                      "scan", NULL};
    if (!t)
        return NULL;
    for (const char *const *w = PATH; *w; w++)
        if (has_word(t, *w))
            return "pathology";
    for (const char *const *w = IMG; *w; w++)
        if (has_word(t, *w))
            return "imaging";
    return NULL;
}

static const char *kind_of_cc(const fhir_node *cc)
{
    const char *k = kind_of_text(fhir_node_str(fhir_node_get(cc, "text")));
    for (const fhir_node *c = fhir_node_first(fhir_node_get(cc, "coding")); c && !k; c = c->next)
        k = kind_of_text(fhir_node_str(fhir_node_get(c, "display")));
    return k;
}

const char *packet_report_kind(const fhir_node *dr)
{
    const char *t = fhir_node_resource_type(dr);
    if (!t || strcmp(t, "DiagnosticReport"))
        return NULL;
    const char *k = NULL;
    for (const fhir_node *c = fhir_node_first(fhir_node_get(dr, "category")); c && !k; c = c->next)
        k = kind_of_cc(c);
    return k ? k : kind_of_cc(fhir_node_get(dr, "code"));
}

static void add_reports(fhir_arena *a, fhir_node *pk, const packet_input *in)
{
    fhir_node *rep = arr(a, pk, "reports");
    if (in->report_lookback_days > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", in->report_lookback_days);
        fhir_node_set_str(a, pk, "report_lookback_days", v);
    }
    for (size_t i = 0; rep && i < in->n_reports; i++) {
        const fhir_node *r = in->reports[i];
        fhir_node *o = fhir_node_new(a, FHIR_OBJECT);
        if (!o)
            return;
        set_opt(a, o, "kind", packet_report_kind(r));
        const char *when = fhir_node_path_str(r, "effectiveDateTime");
        if (!when)
            when = fhir_node_path_str(r, "effectivePeriod.start");
        if (!when)
            when = fhir_node_path_str(r, "issued");
        if (when && strlen(when) >= 10) {
            char d[11];
            memcpy(d, when, 10);
            d[10] = '\0';
            fhir_node_set_str(a, o, "date", d);
        }
        set_opt(a, o, "title", codeable_text(fhir_node_get(r, "code")));
        set_opt(a, o, "status", fhir_node_path_str(r, "status"));
        const char *concl = fhir_node_path_str(r, "conclusion");
        if (!concl)
            concl = codeable_text(fhir_node_first(fhir_node_get(r, "conclusionCode")));
        set_opt(a, o, "conclusion", concl);
        fhir_node_append(a, rep, NULL, 0, o);
    }
}

fhir_node *packet_build(fhir_arena *a, const packet_input *in, fhir_error *err)
{
    fhir_error_clear(err);
    if (!in->patient || !in->verdict) {
        fhir_error_set(err, "referral packet needs the Patient and the verdict");
        return NULL;
    }
    fhir_node *pk = fhir_node_new(a, FHIR_OBJECT);
    if (!pk)
        goto oom;
    fhir_node_set_str(a, pk, "kind", PACKET_KIND);
    fhir_node_set_str(a, pk, "version", "1");
    char when[40];
    fhir_clock_format_instant(in->authored_ms, when, sizeof when);
    when[10] = '\0';
    fhir_node_set_str(a, pk, "authored", when);
    set_opt(a, pk, "from", in->site_name);
    set_opt(a, pk, "to", in->center_name);
    set_opt(a, pk, "request", in->request);
    set_opt(a, pk, "urgency", in->urgency);

    fhir_buf b;
    fhir_buf_init(&b, 4096);
    fhir_node *pt = fhir_node_set_obj(a, pk, "patient");
    if (!pt) {
        fhir_buf_free(&b);
        goto oom;
    }
    person_name(in->patient, &b);
    set_opt(a, pt, "name", fhir_buf_cstr(&b));
    set_opt(a, pt, "birth_date", fhir_node_path_str(in->patient, "birthDate"));
    set_opt(a, pt, "sex", fhir_node_path_str(in->patient, "gender"));
    set_opt(a, pt, "mrn", patient_mrn(in->patient));
    set_opt(a, pt, "phone", telecom(in->patient, "phone"));
    fhir_buf_reset(&b);
    address_text(in->patient, &b);
    set_opt(a, pt, "address", fhir_buf_cstr(&b));
    const map_fact *age = in->profile ? map_profile_fact(in->profile, "age") : NULL;
    if (age && age->known) {
        char v[32];
        num_text(age->num, v, sizeof v);
        fhir_node_set_str(a, pt, "age", v);
    }

    fhir_node *rf = fhir_node_set_obj(a, pk, "referrer");
    if (rf) {
        set_opt(a, rf, "name", in->referrer.name);
        set_opt(a, rf, "phone", in->referrer.phone);
        set_opt(a, rf, "direct", in->referrer.direct);
        set_opt(a, rf, "source", in->referrer.source);
    }

    if (in->condition) {
        fhir_node *dx = fhir_node_set_obj(a, pk, "diagnosis");
        if (dx) {
            const fhir_node *code = fhir_node_get(in->condition, "code");
            set_opt(a, dx, "text", codeable_text(code));
            const fhir_node *c0 = fhir_node_first(fhir_node_get(code, "coding"));
            if (c0 && fhir_node_path_str(c0, "code")) {
                const char *sys = fhir_node_path_str(c0, "system");
                const char *sysname = !sys ? "code"
                                      : strstr(sys, "icd-10") ? "ICD-10-CM"
                                      : strstr(sys, "snomed") ? "SNOMED CT"
                                      : strstr(sys, "icd-o") ? "ICD-O-3"
                                                             : "code";
                fhir_buf_reset(&b);
                fhir_buf_printf(&b, "%s %s", sysname, fhir_node_path_str(c0, "code"));
                fhir_node_set_str(a, dx, "code", fhir_buf_cstr(&b));
            }
            const char *onset = fhir_node_path_str(in->condition, "onsetDateTime");
            if (!onset)
                onset = fhir_node_path_str(in->condition, "recordedDate");
            if (onset && strlen(onset) >= 10) {
                char d[11];
                memcpy(d, onset, 10);
                d[10] = '\0';
                fhir_node_set_str(a, dx, "since", d);
            }
        }
    }

    fhir_node *cov = arr(a, pk, "coverage");
    for (size_t i = 0; cov && i < in->n_coverages; i++) {
        const fhir_node *c = in->coverages[i];
        fhir_node *o = fhir_node_new(a, FHIR_OBJECT);
        if (!o)
            break;
        const fhir_node *payor = fhir_node_first(fhir_node_get(c, "payor"));
        const char *payer = fhir_node_path_str(payor, "display");
        if (!payer)
            payer = fhir_node_path_str(payor, "identifier.value");
        set_opt(a, o, "payer", payer ? payer : codeable_text(fhir_node_get(c, "type")));
        const char *member = fhir_node_path_str(c, "subscriberId");
        if (!member)
            member = fhir_node_path_str(fhir_node_first(fhir_node_get(c, "identifier")), "value");
        set_opt(a, o, "member_id", member);
        const fhir_node *cl = fhir_node_first(fhir_node_get(c, "class"));
        set_opt(a, o, "plan", cl ? (fhir_node_path_str(cl, "name") ? fhir_node_path_str(cl, "name")
                                                                   : fhir_node_path_str(cl, "value"))
                                 : NULL);
        set_opt(a, o, "status", fhir_node_path_str(c, "status"));
        fhir_node_append(a, cov, NULL, 0, o);
    }
    fhir_buf_free(&b);

    add_verdict(a, pk, in->verdict, in->rules);
    add_reports(a, pk, in);
    if (in->profile) {
        add_lines(a, pk, in->profile);
        add_labs(a, pk, in->profile);
    }
    /* every list is there unless the arena's cap cut the building short */
    static const char *const lists[] = {"coverage", "assessment", "other", "review_flags", "notes",
                                        "consult", "to_request", "reports"};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        if (!fhir_node_get(pk, lists[i]))
            goto oom;
    if (in->profile && (!fhir_node_get(pk, "lines") || !fhir_node_get(pk, "events") ||
                        !fhir_node_get(pk, "labs")))
        goto oom;
    return pk;
oom:
    fhir_error_set(err, "referral packet: memory cap reached");
    return NULL;
}

/* ---- reading it back ------------------------------------------------------------------------ */

fhir_node *packet_from_bundle(fhir_arena *a, const fhir_node *bundle, fhir_error *err)
{
    fhir_error_clear(err);
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next) {
        const fhir_node *r = fhir_node_get(e, "resource");
        const char *t = fhir_node_resource_type(r);
        if (!t || strcmp(t, "DocumentReference"))
            continue;
        for (const fhir_node *c = fhir_node_first(fhir_node_get(r, "content")); c; c = c->next) {
            const char *ct = fhir_node_path_str(c, "attachment.contentType");
            const char *data = fhir_node_path_str(c, "attachment.data");
            if (!ct || strcmp(ct, PACKET_CONTENT_TYPE) || !data)
                continue;
            size_t n = strlen(data);
            if (n > 4 * (PACKET_MAX_JSON / 3) + 8) {
                fhir_error_set(err, "referral packet larger than %u bytes", PACKET_MAX_JSON);
                return NULL;
            }
            unsigned char *raw = fhir_arena_alloc(a, n / 4 * 3 + 4);
            if (!raw) {
                fhir_error_set(err, "referral packet: memory cap reached");
                return NULL;
            }
            int m = n % 4 ? -1 : EVP_DecodeBlock(raw, (const unsigned char *)data, (int)n);
            if (m < 0) {
                fhir_error_set(err, "referral packet: attachment is not base64");
                return NULL;
            }
            while (m > 0 && n && data[n - 1] == '=') { /* EVP_DecodeBlock counts padding */
                m--;
                n--;
            }
            fhir_node *pk = fhir_json_parse(a, (const char *)raw, (size_t)m, NULL, err);
            if (!pk) {
                fhir_error_prefix(err, "referral packet");
                return NULL;
            }
            return pk;
        }
    }
    fhir_error_set(err, "the referral carries no packet (proposed before packets were built, "
                        "or not sent by cartgate)");
    return NULL;
}

/* ---- rendering: one walk, three back ends ---------------------------------------------------- */

typedef struct emitter emitter;
struct emitter {
    void (*title)(emitter *e, const char *text, const char *sub);
    void (*heading)(emitter *e, const char *text);
    void (*kv)(emitter *e, const char *label, const char *value);
    void (*para)(emitter *e, const char *text);
    void (*bullet)(emitter *e, const char *text);
    void (*table)(emitter *e, size_t ncols, const char *const *head);
    void (*row)(emitter *e, const char *const *cells);
    void (*table_end)(emitter *e);
    void (*end)(emitter *e);
    fhir_buf *out;
    size_t ncols;
    void *ud;
};

static const char *S(const fhir_node *o, const char *k)
{
    const char *s = fhir_node_path_str(o, k);
    return s && *s ? s : NULL;
}

static const char *urgency_words(const char *u)
{
    if (!u)
        return NULL;
    if (!strcmp(u, "stat") || !strcmp(u, "asap"))
        return "as soon as possible";
    if (!strcmp(u, "urgent"))
        return "urgent";
    return "routine";
}

static const char *category_words(const char *c)
{
    if (!c)
        return NULL;
    if (!strcmp(c, "eligible"))
        return "meets the FDA label criteria on the data on record";
    if (!strcmp(c, "possibly_eligible"))
        return "possibly meets the FDA label criteria: some facts are not on record (see records "
               "to request)";
    if (!strcmp(c, "not_eligible"))
        return "label criteria not met on record; referred for a consultation on refer-early "
               "grounds";
    return c;
}

static void list_section(emitter *e, const fhir_node *pk, const char *key, const char *heading)
{
    const fhir_node *l = fhir_node_get(pk, key);
    if (!fhir_node_count(l))
        return;
    e->heading(e, heading);
    for (const fhir_node *x = fhir_node_first(l); x; x = x->next)
        if (fhir_node_str(x))
            e->bullet(e, fhir_node_str(x));
}

static int walk(const fhir_node *pk, emitter *e, fhir_error *err)
{
    const char *kind = S(pk, "kind");
    if (!kind || strcmp(kind, PACKET_KIND)) {
        fhir_error_set(err, "not a referral packet");
        return -1;
    }
    char sub[512];
    snprintf(sub, sizeof sub, "From %s to %s, %s%s%s", S(pk, "from") ? S(pk, "from") : "the referring site",
             S(pk, "to") ? S(pk, "to") : "the center", S(pk, "authored") ? S(pk, "authored") : "",
             S(pk, "urgency") ? " · urgency: " : "", S(pk, "urgency") ? urgency_words(S(pk, "urgency")) : "");
    e->title(e, "Referral for CAR T-cell therapy evaluation", sub);

    const fhir_node *pt = fhir_node_get(pk, "patient");
    e->heading(e, "Patient");
    e->kv(e, "Name", S(pt, "name") ? S(pt, "name") : "not recorded");
    char dob[96];
    snprintf(dob, sizeof dob, "%s%s%s%s", S(pt, "birth_date") ? S(pt, "birth_date") : "not recorded",
             S(pt, "age") ? " (age " : "", S(pt, "age") ? S(pt, "age") : "", S(pt, "age") ? ")" : "");
    e->kv(e, "Date of birth", dob);
    if (S(pt, "sex"))
        e->kv(e, "Sex", S(pt, "sex"));
    if (S(pt, "mrn"))
        e->kv(e, "MRN (referring site)", S(pt, "mrn"));
    if (S(pt, "phone"))
        e->kv(e, "Phone", S(pt, "phone"));
    if (S(pt, "address"))
        e->kv(e, "Address", S(pt, "address"));

    e->heading(e, "Request");
    if (S(pk, "request"))
        e->kv(e, "Reason", S(pk, "request"));
    if (S(pk, "category"))
        e->kv(e, "Screening", category_words(S(pk, "category")));
    const fhir_node *dx = fhir_node_get(pk, "diagnosis");
    if (dx) {
        char d[512];
        snprintf(d, sizeof d, "%s%s%s%s", S(dx, "text") ? S(dx, "text") : "diagnosis on record",
                 S(dx, "code") ? " (" : "", S(dx, "code") ? S(dx, "code") : "", S(dx, "code") ? ")" : "");
        e->kv(e, "Diagnosis", d);
        if (S(dx, "since"))
            e->kv(e, "Diagnosed", S(dx, "since"));
    }

    const fhir_node *rf = fhir_node_get(pk, "referrer");
    e->heading(e, "Referring clinician (whom to call)");
    e->kv(e, "Name", S(rf, "name") ? S(rf, "name") : "not recorded: call the referring site");
    if (S(rf, "phone"))
        e->kv(e, "Phone", S(rf, "phone"));
    if (S(rf, "direct"))
        e->kv(e, "Direct address", S(rf, "direct"));
    if (S(rf, "source"))
        e->kv(e, "Source", S(rf, "source"));

    list_section(e, pk, "assessment", "Eligibility by the FDA label");
    list_section(e, pk, "consult", "Refer-early recommendation");
    list_section(e, pk, "to_request", "Records still to request");
    list_section(e, pk, "review_flags", "For the treating center to review (do not block referral)");
    list_section(e, pk, "notes", "Notes");

    const fhir_node *lines = fhir_node_get(pk, "lines");
    e->heading(e, "Lines of therapy");
    if (!fhir_node_count(lines)) {
        e->para(e, "No systemic therapy on record at the referring site.");
    } else {
        static const char *const H[] = {"Line", "Started", "Last given", "Therapy", "Response / progression"};
        e->table(e, 5, H);
        for (const fhir_node *l = fhir_node_first(lines); l; l = l->next) {
            const char *c[5] = {S(l, "number"), S(l, "start"), S(l, "end") ? S(l, "end") : "not recorded",
                                S(l, "therapy"), S(l, "response")};
            e->row(e, c);
        }
        e->table_end(e);
    }
    const fhir_node *ev = fhir_node_get(pk, "events");
    if (fhir_node_count(ev)) {
        static const char *const H[] = {"Date", "Event"};
        e->heading(e, "Timeline");
        e->table(e, 2, H);
        for (const fhir_node *x = fhir_node_first(ev); x; x = x->next) {
            const char *c[2] = {S(x, "date"), S(x, "what")};
            e->row(e, c);
        }
        e->table_end(e);
    }

    const fhir_node *reps = fhir_node_get(pk, "reports");
    e->heading(e, "Pathology and imaging reports");
    if (!fhir_node_count(reps)) {
        char p[320];
        snprintf(p, sizeof p, "No pathology or imaging report %s%s%s at the referring site: request the diagnostic "
                              "biopsy report (with FISH or cytogenetics) and the most recent PET/CT.",
                 S(pk, "report_lookback_days") ? "in the last " : "on record",
                 S(pk, "report_lookback_days") ? S(pk, "report_lookback_days") : "",
                 S(pk, "report_lookback_days") ? " days" : "");
        e->para(e, p);
    } else {
        static const char *const H[] = {"Date", "Report and finding"};
        e->table(e, 2, H);
        for (const fhir_node *x = fhir_node_first(reps); x; x = x->next) {
            char what[1400];
            const char *k = S(x, "kind");
            snprintf(what, sizeof what, "%s: %s%s%s. Finding: %s", k && !strcmp(k, "imaging") ? "Imaging" : "Pathology",
                     S(x, "title") ? S(x, "title") : "report",
                     S(x, "status") && strcmp(S(x, "status"), "final") ? " — " : "",
                     S(x, "status") && strcmp(S(x, "status"), "final") ? S(x, "status") : "",
                     S(x, "conclusion") ? S(x, "conclusion") : "none in the report: ask for it");
            const char *c[2] = {S(x, "date") ? S(x, "date") : "date not recorded", what};
            e->row(e, c);
        }
        e->table_end(e);
    }

    e->heading(e, "Performance status and recent labs");
    const fhir_node *ecog = fhir_node_get(pk, "ecog");
    if (ecog) {
        char v[96];
        snprintf(v, sizeof v, "%s%s%s", S(ecog, "value") ? S(ecog, "value") : "?",
                 S(ecog, "date") ? " on " : "", S(ecog, "date") ? S(ecog, "date") : "");
        e->kv(e, "ECOG", v);
    } else {
        e->kv(e, "ECOG", "not recorded in the last 90 days");
    }
    const fhir_node *labs = fhir_node_get(pk, "labs");
    if (fhir_node_count(labs)) {
        static const char *const H[] = {"Test", "Value", "Date"};
        e->table(e, 3, H);
        for (const fhir_node *x = fhir_node_first(labs); x; x = x->next) {
            char v[96];
            snprintf(v, sizeof v, "%s %s", S(x, "value") ? S(x, "value") : "", S(x, "unit") ? S(x, "unit") : "");
            const char *c[3] = {S(x, "name"), v, S(x, "date") ? S(x, "date") : ""};
            e->row(e, c);
        }
        e->table_end(e);
    } else {
        e->para(e, "No laboratory results in the last 90 days at the referring site.");
    }

    e->heading(e, "Insurance");
    const fhir_node *cov = fhir_node_get(pk, "coverage");
    if (!fhir_node_count(cov))
        e->para(e, "No coverage on record: ask the referring site.");
    for (const fhir_node *c = fhir_node_first(cov); c; c = c->next) {
        char v[512];
        snprintf(v, sizeof v, "%s%s%s%s%s%s%s", S(c, "payer") ? S(c, "payer") : "payer not recorded",
                 S(c, "plan") ? ", plan " : "", S(c, "plan") ? S(c, "plan") : "",
                 S(c, "member_id") ? ", member id " : "", S(c, "member_id") ? S(c, "member_id") : "",
                 S(c, "status") ? ", " : "", S(c, "status") ? S(c, "status") : "");
        e->bullet(e, v);
    }
    list_section(e, pk, "other", "Other indications considered (not met)");
    e->para(e, "Screened by cartgate against the FDA labels cited above. Label criteria are the "
               "gates; trial thresholds are listed for review and never block a referral. A fact "
               "not on record is unknown, not absent.");
    e->end(e);
    return 0;
}

/* -- HTML -- */

static void h_title(emitter *e, const char *t, const char *sub)
{
    fhir_buf_puts(e->out, "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>");
    fhir_buf_html_escape(e->out, t);
    fhir_buf_puts(e->out,
                  "</title>\n<style>\n"
                  "body{font-family:system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;margin:2rem auto;"
                  "max-width:60rem;color:#1a1a1a;line-height:1.4}\n"
                  "h1{font-size:1.4rem;margin-bottom:.2rem}h2{font-size:1.1rem;border-bottom:1px solid #999;"
                  "margin-top:1.4rem}\n.sub{color:#444;margin-top:0}\n"
                  "dl{display:grid;grid-template-columns:14rem 1fr;gap:.2rem 1rem;margin:.4rem 0}"
                  "dt{font-weight:600}dd{margin:0}\n"
                  "table{border-collapse:collapse;width:100%}th,td{border:1px solid #bbb;padding:.25rem .4rem;"
                  "text-align:left;vertical-align:top}th{background:#eee}\n"
                  "@media print{body{margin:0}}\n</style>\n</head>\n<body>\n<main>\n<h1>");
    fhir_buf_html_escape(e->out, t);
    fhir_buf_puts(e->out, "</h1>\n<p class=\"sub\">");
    fhir_buf_html_escape(e->out, sub);
    fhir_buf_puts(e->out, "</p>\n");
    e->ncols = 0; /* ncols doubles as "a <dl> or <ul> is open": 1 dl, 2 ul */
}

static void h_close(emitter *e)
{
    if (e->ncols == 1)
        fhir_buf_puts(e->out, "</dl>\n");
    else if (e->ncols == 2)
        fhir_buf_puts(e->out, "</ul>\n");
    e->ncols = 0;
}

static void h_heading(emitter *e, const char *t)
{
    h_close(e);
    fhir_buf_puts(e->out, "<h2>");
    fhir_buf_html_escape(e->out, t);
    fhir_buf_puts(e->out, "</h2>\n");
}

static void h_kv(emitter *e, const char *k, const char *v)
{
    if (e->ncols != 1) {
        h_close(e);
        fhir_buf_puts(e->out, "<dl>\n");
        e->ncols = 1;
    }
    fhir_buf_puts(e->out, "<dt>");
    fhir_buf_html_escape(e->out, k);
    fhir_buf_puts(e->out, "</dt><dd>");
    fhir_buf_html_escape(e->out, v);
    fhir_buf_puts(e->out, "</dd>\n");
}

static void h_para(emitter *e, const char *t)
{
    h_close(e);
    fhir_buf_puts(e->out, "<p>");
    fhir_buf_html_escape(e->out, t);
    fhir_buf_puts(e->out, "</p>\n");
}

static void h_bullet(emitter *e, const char *t)
{
    if (e->ncols != 2) {
        h_close(e);
        fhir_buf_puts(e->out, "<ul>\n");
        e->ncols = 2;
    }
    fhir_buf_puts(e->out, "<li>");
    fhir_buf_html_escape(e->out, t);
    fhir_buf_puts(e->out, "</li>\n");
}

static void h_table(emitter *e, size_t n, const char *const *head)
{
    h_close(e);
    fhir_buf_puts(e->out, "<table>\n<thead><tr>");
    for (size_t i = 0; i < n; i++) {
        fhir_buf_puts(e->out, "<th scope=\"col\">");
        fhir_buf_html_escape(e->out, head[i]);
        fhir_buf_puts(e->out, "</th>");
    }
    fhir_buf_puts(e->out, "</tr></thead>\n<tbody>\n");
    *(size_t *)e->ud = n;
}

static void h_row(emitter *e, const char *const *cells)
{
    size_t n = *(size_t *)e->ud;
    fhir_buf_puts(e->out, "<tr>");
    for (size_t i = 0; i < n; i++) {
        fhir_buf_puts(e->out, "<td>");
        fhir_buf_html_escape(e->out, cells[i] ? cells[i] : "");
        fhir_buf_puts(e->out, "</td>");
    }
    fhir_buf_puts(e->out, "</tr>\n");
}

static void h_table_end(emitter *e)
{
    fhir_buf_puts(e->out, "</tbody>\n</table>\n");
}

static void h_end(emitter *e)
{
    h_close(e);
    fhir_buf_puts(e->out, "</main>\n</body>\n</html>\n");
}

int packet_write_html(const fhir_node *pk, fhir_buf *out, fhir_error *err)
{
    size_t cols = 0;
    emitter e = {h_title, h_heading, h_kv, h_para, h_bullet, h_table, h_row, h_table_end, h_end,
                 out, 0, &cols};
    if (walk(pk, &e, err))
        return -1;
    if (out->overflow) {
        fhir_error_set(err, "referral packet: HTML larger than its cap");
        return -1;
    }
    return 0;
}

/* -- text -- */

static void t_title(emitter *e, const char *t, const char *sub)
{
    fhir_buf_printf(e->out, "%s\n%s\n", t, sub);
}

static void t_heading(emitter *e, const char *t)
{
    fhir_buf_printf(e->out, "\n%s\n", t);
    for (size_t i = strlen(t); i; i--)
        fhir_buf_putc(e->out, '-');
    fhir_buf_putc(e->out, '\n');
}

static void t_kv(emitter *e, const char *k, const char *v)
{
    fhir_buf_printf(e->out, "%-22s %s\n", k, v);
}

static void t_para(emitter *e, const char *t)
{
    fhir_buf_printf(e->out, "%s\n", t);
}

static void t_bullet(emitter *e, const char *t)
{
    fhir_buf_printf(e->out, "- %s\n", t);
}

static void t_table(emitter *e, size_t n, const char *const *head)
{
    *(size_t *)e->ud = n;
    for (size_t i = 0; i < n; i++)
        fhir_buf_printf(e->out, "%s%s", i ? " | " : "", head[i]);
    fhir_buf_putc(e->out, '\n');
}

static void t_row(emitter *e, const char *const *cells)
{
    size_t n = *(size_t *)e->ud;
    for (size_t i = 0; i < n; i++)
        fhir_buf_printf(e->out, "%s%s", i ? " | " : "", cells[i] ? cells[i] : "");
    fhir_buf_putc(e->out, '\n');
}

static void t_nothing(emitter *e)
{
    (void)e;
}

int packet_write_text(const fhir_node *pk, fhir_buf *out, fhir_error *err)
{
    size_t cols = 0;
    emitter e = {t_title, t_heading, t_kv, t_para, t_bullet, t_table, t_row, t_nothing, t_nothing,
                 out, 0, &cols};
    if (walk(pk, &e, err))
        return -1;
    if (out->overflow) {
        fhir_error_set(err, "referral packet: text larger than its cap");
        return -1;
    }
    return 0;
}

/* -- PDF (cairo + pango) --
 * pango and cairo are not linked: with what they load (glib, harfbuzz, freetype, fontconfig,
 * pixman, X11, png ...) they are about 30 shared libraries, ~12 ms of CPU at every start of
 * every cartgate process, for a PDF that few processes draw (issue 20). The headers give the
 * types; fhir_dl fills this table when a PDF is first drawn, once per process
 * (pthread_once: the listener's thread and any other may draw one). Each function is looked up in the library that exports it; the handles stay open for the life of
 * the process (glib must never be unloaded), also when a later library fails to load. */
#define PDF_LIBS(X)                                                                                \
    X(PDF_CAIRO, "libcairo.so.2")                                                                  \
    X(PDF_GOBJECT, "libgobject-2.0.so.0")                                                          \
    X(PDF_PANGO, "libpango-1.0.so.0")                                                              \
    X(PDF_PANGOCAIRO, "libpangocairo-1.0.so.0")
#define PDF_FNS(X)                                                                                 \
    X(PDF_CAIRO, cairo_create) X(PDF_CAIRO, cairo_destroy) X(PDF_CAIRO, cairo_line_to)             \
    X(PDF_CAIRO, cairo_move_to) X(PDF_CAIRO, cairo_pdf_surface_create_for_stream)                  \
    X(PDF_CAIRO, cairo_pdf_surface_set_metadata) X(PDF_CAIRO, cairo_set_line_width)                \
    X(PDF_CAIRO, cairo_set_source_rgb) X(PDF_CAIRO, cairo_show_page) X(PDF_CAIRO, cairo_status)    \
    X(PDF_CAIRO, cairo_status_to_string) X(PDF_CAIRO, cairo_stroke)                                \
    X(PDF_CAIRO, cairo_surface_destroy) X(PDF_CAIRO, cairo_surface_finish)                         \
    X(PDF_CAIRO, cairo_surface_status) X(PDF_CAIRO, cairo_version_string)                          \
    X(PDF_GOBJECT, g_object_unref)                                                                 \
    X(PDF_PANGO, pango_font_description_free) X(PDF_PANGO, pango_font_description_from_string)     \
    X(PDF_PANGO, pango_layout_get_size) X(PDF_PANGO, pango_layout_set_font_description)            \
    X(PDF_PANGO, pango_layout_set_text) X(PDF_PANGO, pango_layout_set_width)                       \
    X(PDF_PANGO, pango_layout_set_wrap) X(PDF_PANGO, pango_version_string)                         \
    X(PDF_PANGOCAIRO, pango_cairo_create_layout) X(PDF_PANGOCAIRO, pango_cairo_show_layout)

enum {
#define PDF_LIB_ENUM(id, soname) id,
    PDF_LIBS(PDF_LIB_ENUM)
#undef PDF_LIB_ENUM
    PDF_NLIBS
};

/* the functions, typed by the headers' own declarations */
static struct {
#define PDF_FN_FIELD(lib, fn) __typeof__(fn) *fn;
    PDF_FNS(PDF_FN_FIELD)
#undef PDF_FN_FIELD
} pdf_lib;
static pthread_once_t pdf_lib_once = PTHREAD_ONCE_INIT;
static char pdf_lib_error[FHIR_DL_WHY_MAX]; /* after pdf_lib_load: why it failed, "" when it did not */

static void pdf_lib_load(void)
{
    static const char *const soname[PDF_NLIBS] = {
#define PDF_LIB_NAME(id, name) [id] = name,
        PDF_LIBS(PDF_LIB_NAME)
#undef PDF_LIB_NAME
    };
    const fhir_dl_sym syms[] = {
#define PDF_FN_SYM(lib, fn) {lib, #fn, &pdf_lib.fn, false},
        PDF_FNS(PDF_FN_SYM)
#undef PDF_FN_SYM
    };
    fhir_dl_load("the PDF renderer", soname, PDF_NLIBS, syms, sizeof syms / sizeof *syms,
                 pdf_lib_error);
}

/* The table, loaded at the first call; NULL with err when a library or function is missing. */
static bool pdf_lib_get(fhir_error *err)
{
    pthread_once(&pdf_lib_once, pdf_lib_load);
    if (pdf_lib_error[0]) {
        fhir_error_set(err, "%s", pdf_lib_error);
        return false;
    }
    return true;
}

int packet_pdf_renderer(char *buf, size_t cap, fhir_error *err)
{
    fhir_error_clear(err);
    if (!pdf_lib_get(err))
        return -1;
    snprintf(buf, cap, "pango %s, cairo %s", pdf_lib.pango_version_string(), pdf_lib.cairo_version_string());
    return 0;
}

typedef struct pdf {
    cairo_t *cr;
    PangoFontDescription *body, *bold, *big, *h2;
    double y, top, bottom, left, width;
    size_t ncols;
    double colw[8];
} pdf;

#define PDF_W 612.0 /* US Letter, points */
#define PDF_H 792.0
#define PDF_MARGIN 50.0

static PangoLayout *pdf_layout(pdf *p, const char *text, PangoFontDescription *font, double width)
{
    PangoLayout *l = pdf_lib.pango_cairo_create_layout(p->cr);
    pdf_lib.pango_layout_set_font_description(l, font);
    pdf_lib.pango_layout_set_width(l, (int)(width * PANGO_SCALE));
    pdf_lib.pango_layout_set_wrap(l, PANGO_WRAP_WORD_CHAR);
    pdf_lib.pango_layout_set_text(l, text ? text : "", -1);
    return l;
}

static double pdf_height(PangoLayout *l)
{
    int w, h;
    pdf_lib.pango_layout_get_size(l, &w, &h);
    return (double)h / PANGO_SCALE;
}

static void pdf_room(pdf *p, double h)
{
    if (p->y + h > p->bottom && p->y > p->top) {
        pdf_lib.cairo_show_page(p->cr);
        p->y = p->top;
    }
}

static void pdf_block(pdf *p, const char *text, PangoFontDescription *font, double indent,
                      double before, double after)
{
    PangoLayout *l = pdf_layout(p, text, font, p->width - indent);
    double h = pdf_height(l);
    p->y += before;
    pdf_room(p, h);
    pdf_lib.cairo_move_to(p->cr, p->left + indent, p->y);
    pdf_lib.pango_cairo_show_layout(p->cr, l);
    p->y += h + after;
    pdf_lib.g_object_unref(l);
}

static void p_title(emitter *e, const char *t, const char *sub)
{
    pdf *p = e->ud;
    pdf_block(p, t, p->big, 0, 0, 2);
    pdf_block(p, sub, p->body, 0, 0, 4);
}

static void p_heading(emitter *e, const char *t)
{
    pdf *p = e->ud;
    pdf_room(p, 70); /* keep a heading with what follows */
    pdf_block(p, t, p->h2, 0, 8, 1);
    pdf_lib.cairo_set_line_width(p->cr, 0.6);
    pdf_lib.cairo_move_to(p->cr, p->left, p->y);
    pdf_lib.cairo_line_to(p->cr, p->left + p->width, p->y);
    pdf_lib.cairo_stroke(p->cr);
    p->y += 3;
}

static void p_kv(emitter *e, const char *k, const char *v)
{
    pdf *p = e->ud;
    double kw = 150;
    PangoLayout *lk = pdf_layout(p, k, p->bold, kw - 6), *lv = pdf_layout(p, v, p->body, p->width - kw);
    double h = fmax(pdf_height(lk), pdf_height(lv));
    pdf_room(p, h);
    pdf_lib.cairo_move_to(p->cr, p->left, p->y);
    pdf_lib.pango_cairo_show_layout(p->cr, lk);
    pdf_lib.cairo_move_to(p->cr, p->left + kw, p->y);
    pdf_lib.pango_cairo_show_layout(p->cr, lv);
    p->y += h + 1;
    pdf_lib.g_object_unref(lk);
    pdf_lib.g_object_unref(lv);
}

static void p_para(emitter *e, const char *t)
{
    pdf *p = e->ud;
    pdf_block(p, t, p->body, 0, 2, 2);
}

static void p_bullet(emitter *e, const char *t)
{
    pdf *p = e->ud;
    PangoLayout *dot = pdf_layout(p, "\u2022", p->body, 10);
    double y0 = p->y;
    pdf_block(p, t, p->body, 12, 0, 2);
    /* the bullet goes beside the first line of the block (after a page break: the new top) */
    pdf_lib.cairo_move_to(p->cr, p->left, p->y < y0 ? p->top : y0);
    pdf_lib.pango_cairo_show_layout(p->cr, dot);
    pdf_lib.g_object_unref(dot);
}

static void p_cells(pdf *p, const char *const *cells, PangoFontDescription *font)
{
    PangoLayout *l[8];
    double h = 0;
    for (size_t i = 0; i < p->ncols; i++) {
        l[i] = pdf_layout(p, cells[i] ? cells[i] : "", font, p->colw[i] - 6);
        h = fmax(h, pdf_height(l[i]));
    }
    pdf_room(p, h + 3);
    double x = p->left;
    for (size_t i = 0; i < p->ncols; i++) {
        pdf_lib.cairo_move_to(p->cr, x, p->y);
        pdf_lib.pango_cairo_show_layout(p->cr, l[i]);
        x += p->colw[i];
        pdf_lib.g_object_unref(l[i]);
    }
    p->y += h + 2;
    pdf_lib.cairo_set_line_width(p->cr, 0.3);
    pdf_lib.cairo_move_to(p->cr, p->left, p->y);
    pdf_lib.cairo_line_to(p->cr, p->left + p->width, p->y);
    pdf_lib.cairo_stroke(p->cr);
    p->y += 2;
}

static void p_table(emitter *e, size_t n, const char *const *head)
{
    pdf *p = e->ud;
    static const double W2[] = {0.2, 0.8}, W3[] = {0.5, 0.3, 0.2}, W5[] = {0.06, 0.155, 0.155, 0.33, 0.30};
    const double *w = n == 2 ? W2 : n == 3 ? W3 : W5;
    p->ncols = n > 5 ? 5 : n;
    for (size_t i = 0; i < p->ncols; i++)
        p->colw[i] = w[i] * p->width;
    p->y += 2;
    p_cells(p, head, p->bold);
}

static void p_row(emitter *e, const char *const *cells)
{
    pdf *p = e->ud;
    p_cells(p, cells, p->body);
}

static void p_table_end(emitter *e)
{
    pdf *p = e->ud;
    p->y += 4;
}

static void p_end(emitter *e)
{
    (void)e;
}

static cairo_status_t pdf_write(void *closure, const unsigned char *data, unsigned int len)
{
    return fwrite(data, 1, len, closure) == len ? CAIRO_STATUS_SUCCESS : CAIRO_STATUS_WRITE_ERROR;
}

int packet_write_pdf(const fhir_node *pk, const char *path, fhir_error *err)
{
    fhir_error_clear(err);
    if (!pdf_lib_get(err))
        return -1;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        fhir_error_set(err, "%s: path too long", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!f) {
        fhir_error_set(err, "%s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    cairo_surface_t *surf = pdf_lib.cairo_pdf_surface_create_for_stream(pdf_write, f, PDF_W, PDF_H);
    pdf_lib.cairo_pdf_surface_set_metadata(surf, CAIRO_PDF_METADATA_TITLE, "Referral for CAR T-cell therapy evaluation");
    pdf_lib.cairo_pdf_surface_set_metadata(surf, CAIRO_PDF_METADATA_CREATOR, "cartgate");
    pdf P = {.cr = pdf_lib.cairo_create(surf), .top = PDF_MARGIN, .bottom = PDF_H - PDF_MARGIN,
             .left = PDF_MARGIN, .width = PDF_W - 2 * PDF_MARGIN};
    P.y = P.top;
    P.body = pdf_lib.pango_font_description_from_string("Sans 9");
    P.bold = pdf_lib.pango_font_description_from_string("Sans Bold 9");
    P.h2 = pdf_lib.pango_font_description_from_string("Sans Bold 11");
    P.big = pdf_lib.pango_font_description_from_string("Sans Bold 15");
    pdf_lib.cairo_set_source_rgb(P.cr, 0.1, 0.1, 0.1);
    emitter e = {p_title, p_heading, p_kv, p_para, p_bullet, p_table, p_row, p_table_end, p_end,
                 NULL, 0, &P};
    int rc = walk(pk, &e, err);
    pdf_lib.cairo_show_page(P.cr);
    cairo_status_t st = pdf_lib.cairo_status(P.cr);
    pdf_lib.cairo_destroy(P.cr);
    pdf_lib.cairo_surface_finish(surf);
    if (st == CAIRO_STATUS_SUCCESS)
        st = pdf_lib.cairo_surface_status(surf);
    pdf_lib.cairo_surface_destroy(surf);
    pdf_lib.pango_font_description_free(P.body);
    pdf_lib.pango_font_description_free(P.bold);
    pdf_lib.pango_font_description_free(P.h2);
    pdf_lib.pango_font_description_free(P.big);
    if (!rc && st != CAIRO_STATUS_SUCCESS) {
        fhir_error_set(err, "%s: PDF: %s", path, pdf_lib.cairo_status_to_string(st));
        rc = -1;
    }
    if (fflush(f) || fsync(fileno(f))) {
        if (!rc)
            fhir_error_set(err, "%s: %s", tmp, strerror(errno));
        rc = -1;
    }
    if (fclose(f) && !rc) {
        fhir_error_set(err, "%s: %s", tmp, strerror(errno));
        rc = -1;
    }
    if (!rc && rename(tmp, path)) {
        fhir_error_set(err, "%s: %s", path, strerror(errno));
        rc = -1;
    }
    if (rc)
        unlink(tmp);
    return rc;
}
