/* elig_display — indications as people read them: brand, product and a short plain label
 * instead of the criteria keys ("axi-cel:LBCL-3L"). See elig.h. */
#include "elig_int.h"

#include <string.h>

#include "fhir_alloc.h"

bool elig_display_of(const elig_ruleset *rs, const char *key, elig_display *out)
{
    memset(out, 0, sizeof *out);
    int i = rs && key ? elig_ruleset_find(rs, key) : -1;
    if (i < 0) {
        out->product = out->text = key ? key : "";
        return false;
    }
    const eind *d = &rs->inds[i];
    out->product = d->product;
    out->brand = d->brand;
    out->generic = d->generic;
    out->text = d->short_text ? d->short_text : d->description;
    out->known = true;
    return true;
}

void elig_display_write_product(const elig_display *d, fhir_buf *out)
{
    size_t pl = strlen(d->product);
    if (!d->brand || !*d->brand) {
        fhir_buf_puts(out, d->product);
    } else if (!strncmp(d->brand, d->product, pl)) {
        fhir_buf_puts(out, d->brand);
    } else {
        fhir_buf_printf(out, "%s (%s)", d->brand, d->product);
    }
}

/* One product (or one unknown key) and its distinct indication texts, in order. */
typedef struct dgroup {
    elig_display d;   /* of the group's first key */
    const char **texts;
    size_t n;
    bool done;
} dgroup;

static bool same_texts(const dgroup *a, const dgroup *b)
{
    if (!a->d.known || !b->d.known || a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->texts[i], b->texts[i]))
            return false;
    return true;
}

/* The group of d's product (an unknown key: of that key), or ng. */
static size_t find_group(const dgroup *g, size_t ng, const elig_display *d)
{
    size_t j = 0;
    while (j < ng && !(g[j].d.known == d->known && !strcmp(g[j].d.product, d->product)))
        j++;
    return j;
}

int elig_display_write(const elig_ruleset *rs, const char *const *keys, size_t n, fhir_buf *out)
{
    if (n == 0)
        return out->overflow ? -1 : 0;
    dgroup *g = fhir_xcalloc(n, sizeof *g);
    const char **texts = fhir_xcalloc(n, sizeof *texts); /* each group's texts, a slice of n */
    size_t ng = 0;
    for (size_t k = 0; k < n; k++) {
        elig_display d;
        elig_display_of(rs, keys[k], &d);
        size_t j = find_group(g, ng, &d);
        if (j == ng)
            g[ng++].d = d;
        if (d.known)
            g[j].n++; /* keys of the group: room for its texts */
    }
    /* each group's texts: a slice of texts, filled in key order, each text once */
    size_t off = 0;
    for (size_t j = 0; j < ng; j++) {
        g[j].texts = texts + off;
        off += g[j].n;
        g[j].n = 0;
    }
    for (size_t k = 0; k < n; k++) {
        elig_display d;
        if (!elig_display_of(rs, keys[k], &d))
            continue;
        dgroup *x = &g[find_group(g, ng, &d)];
        bool dup = false;
        for (size_t t = 0; t < x->n && !dup; t++)
            dup = !strcmp(x->texts[t], d.text);
        if (!dup)
            x->texts[x->n++] = d.text;
    }
    bool first = true;
    for (size_t j = 0; j < ng; j++) {
        if (g[j].done)
            continue;
        if (!first)
            fhir_buf_puts(out, " · ");
        first = false;
        g[j].done = true;
        if (!g[j].d.known) {
            fhir_buf_puts(out, g[j].d.product);
            continue;
        }
        elig_display_write_product(&g[j].d, out);
        for (size_t h = j + 1; h < ng; h++)
            if (!g[h].done && same_texts(&g[j], &g[h])) {
                fhir_buf_puts(out, ", ");
                elig_display_write_product(&g[h].d, out);
                g[h].done = true;
            }
        fhir_buf_puts(out, ": ");
        for (size_t t = 0; t < g[j].n; t++)
            fhir_buf_printf(out, "%s%s", t ? "; " : "", g[j].texts[t]);
    }
    free(texts);
    free(g);
    return out->overflow ? -1 : 0;
}

int elig_display_write_joined(const elig_ruleset *rs, const char *joined, fhir_buf *out)
{
    size_t n = 0;
    for (const char *p = joined; p && *p; p++)
        n += *p == ',';
    if (!joined || !*joined)
        return out->overflow ? -1 : 0;
    n++;
    char *copy = fhir_xstrdup(joined);
    const char **keys = fhir_xcalloc(n, sizeof *keys);
    size_t k = 0;
    for (char *p = copy; p && k < n;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = 0;
        if (*p)
            keys[k++] = p;
        p = comma ? comma + 1 : NULL;
    }
    int rc = elig_display_write(rs, keys, k, out);
    free(keys);
    free(copy);
    return rc;
}
