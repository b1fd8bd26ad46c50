/* fhir_jsonfile — hand-edited JSON files with a line on every node and a list of
 * FILE:LINE errors (see fhir_jsonfile.h for the line rule). Parsing is fhir_json's. */
#include "fhir_jsonfile.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_alloc.h"
#include "fhir_json.h"
#include "fhir_suggest.h"

struct fhir_jsonfile {
    char *name;
    const fhir_node *root;
    const char *key_word;
    size_t n_errors;                          /* all, past the cap too */
    char *errors[FHIR_JSONFILE_MAX_ERRORS];   /* the first ones, malloc'd */
};

static fhir_jsonfile *jf_new(const char *name, const fhir_jsonfile_opts *o)
{
    fhir_jsonfile *f = fhir_xcalloc(1, sizeof *f);
    f->name = fhir_xstrdup(name ? name : "-");
    f->key_word = o && o->key_word ? o->key_word : "key";
    return f;
}

static size_t max_bytes(const fhir_jsonfile_opts *o)
{
    return o && o->max_bytes ? o->max_bytes : FHIR_JSONFILE_DEFAULT_MAX_BYTES;
}

void fhir_jsonfile_free(fhir_jsonfile *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_errors && i < FHIR_JSONFILE_MAX_ERRORS; i++)
        free(f->errors[i]);
    free(f->name);
    free(f);
}

const fhir_node *fhir_jsonfile_root(const fhir_jsonfile *f)
{
    return f->root;
}

const char *fhir_jsonfile_name(const fhir_jsonfile *f)
{
    return f->name;
}

/* ---- errors ------------------------------------------------------------------------------ */

static void record(fhir_jsonfile *f, size_t line, const char *fmt, va_list ap)
{
    if (f->n_errors < FHIR_JSONFILE_MAX_ERRORS) {
        char full[FHIR_ERROR_MAX];
        int n = line > 0 ? snprintf(full, sizeof full, "%s:%zu: ", f->name, line)
                         : snprintf(full, sizeof full, "%s: ", f->name);
        if (n >= 0 && (size_t)n < sizeof full)
            vsnprintf(full + n, sizeof full - (size_t)n, fmt, ap);
        f->errors[f->n_errors] = fhir_xstrdup(full);
    }
    f->n_errors++;
}

int fhir_jsonfile_error(fhir_jsonfile *f, const fhir_node *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record(f, at ? at->line : 0, fmt, ap);
    va_end(ap);
    return -1;
}

int fhir_jsonfile_error_line(fhir_jsonfile *f, size_t line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record(f, line, fmt, ap);
    va_end(ap);
    return -1;
}

size_t fhir_jsonfile_error_count(const fhir_jsonfile *f)
{
    return f->n_errors;
}

const char *fhir_jsonfile_error_text(const fhir_jsonfile *f, size_t i)
{
    return i < f->n_errors && i < FHIR_JSONFILE_MAX_ERRORS ? f->errors[i] : NULL;
}

int fhir_jsonfile_result(const fhir_jsonfile *f, fhir_error *err)
{
    if (!f->n_errors)
        return 0;
    if (f->n_errors > 1)
        return fhir_error_set(err, "%s (and %zu more)", f->errors[0], f->n_errors - 1);
    return fhir_error_set(err, "%s", f->errors[0]);
}

void fhir_jsonfile_write_errors(const fhir_jsonfile *f, fhir_buf *out)
{
    for (size_t i = 0; i < f->n_errors && i < FHIR_JSONFILE_MAX_ERRORS; i++)
        fhir_buf_printf(out, "%s\n", f->errors[i]);
    if (f->n_errors > FHIR_JSONFILE_MAX_ERRORS)
        fhir_buf_printf(out, "%s: ... %zu more errors not shown\n", f->name,
                        f->n_errors - FHIR_JSONFILE_MAX_ERRORS);
}

/* ---- reading ------------------------------------------------------------------------------ */

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return false;
    return true;
}

fhir_jsonfile *fhir_jsonfile_parse(fhir_arena *a, const char *name, const char *text, size_t len,
                                   const fhir_jsonfile_opts *opts)
{
    fhir_jsonfile *f = jf_new(name, opts);
    size_t cap = max_bytes(opts);
    if (len > cap) {
        fhir_jsonfile_error_line(f, 0, "file larger than %zu bytes", cap);
        return f;
    }
    if (blank(text, len)) {
        fhir_jsonfile_error_line(f, 1, "empty file");
        return f;
    }
    fhir_json_opts jo = {
        .lim = {.max_bytes = cap, .max_depth = FHIR_JSONFILE_MAX_DEPTH},
        .comments = opts && opts->comments,
        .lines = true,
    };
    fhir_json_failure why;
    f->root = fhir_json_parse_ex(a, text, len, &jo, &why);
    if (!f->root) {
        if (why.syntax)
            fhir_jsonfile_error_line(f, why.line, "malformed JSON%s%s", why.what[0] ? ": " : "",
                                     why.what);
        else
            fhir_jsonfile_error_line(f, why.line, "%s", why.what);
    }
    return f;
}

fhir_jsonfile *fhir_jsonfile_read(fhir_arena *a, const char *path, const fhir_jsonfile_opts *opts)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fhir_jsonfile *f = jf_new(path, opts);
        fhir_jsonfile_error_line(f, 0, "cannot open: %s", strerror(errno));
        return f;
    }
    fhir_buf b;
    fhir_buf_init(&b, max_bytes(opts));
    fhir_error err;
    int rc = fhir_buf_read_stream(&b, fp, path, &err);
    fclose(fp);
    fhir_jsonfile *f;
    if (rc == 0) {
        f = fhir_jsonfile_parse(a, path, b.data ? b.data : "", b.len, opts);
    } else {
        f = jf_new(path, opts);
        if (b.overflow)
            fhir_jsonfile_error_line(f, 0, "file larger than %zu bytes", max_bytes(opts));
        else
            fhir_jsonfile_error_line(f, 0, "read error");
    }
    fhir_buf_free(&b);
    return f;
}

/* ---- values ------------------------------------------------------------------------------- */

const char *fhir_jsonfile_kind_a(fhir_kind k)
{
    switch (k) {
    case FHIR_NULL: return "null";
    case FHIR_BOOL: return "a boolean";
    case FHIR_NUMBER: return "a number";
    case FHIR_STRING: return "a string";
    case FHIR_OBJECT: return "an object";
    case FHIR_ARRAY: return "an array";
    }
    return "?";
}

int fhir_jsonfile_want(fhir_jsonfile *f, const fhir_node *node, fhir_kind k, const char *what)
{
    if (node->kind == k)
        return 0;
    return fhir_jsonfile_error(f, node, "%s must be %s, not %s", what, fhir_jsonfile_kind_a(k),
                               fhir_jsonfile_kind_a(node->kind));
}

int fhir_jsonfile_keys(fhir_jsonfile *f, const fhir_node *obj, const char *what,
                       const char *const *allowed)
{
    size_t n = 0;
    while (allowed[n])
        n++;
    int rc = 0;
    for (const fhir_node *c = fhir_node_first(obj); c; c = c->next) {
        bool ok = false;
        for (size_t i = 0; i < n && !ok; i++)
            ok = fhir_node_key_is(c, allowed[i]);
        if (ok)
            continue;
        const char *near = fhir_suggest(c->key, allowed, n);
        if (near)
            rc = fhir_jsonfile_error(f, c, "unknown %s \"%s\" in %s (did you mean \"%s\"?)",
                                     f->key_word, c->key, what, near);
        else
            rc = fhir_jsonfile_error(f, c, "unknown %s \"%s\" in %s", f->key_word, c->key, what);
    }
    return rc;
}

/* The member key of obj when it is there and of kind k. Else NULL, and *rc says why: -1 after
 * recording a wrong kind (want names the kind in the message) or a missing required member,
 * 0 for an absent optional one. */
static const fhir_node *typed(fhir_jsonfile *f, const fhir_node *obj, const char *key,
                              const char *what, unsigned flags, fhir_kind k, const char *want,
                              int *rc)
{
    const fhir_node *v = fhir_node_get(obj, key);
    *rc = 0;
    if (!v) {
        if (flags & FHIR_JSONFILE_REQUIRED)
            *rc = fhir_jsonfile_error(f, obj, "%s: missing \"%s\"", what, key);
        return NULL;
    }
    if (v->kind != k) {
        *rc = fhir_jsonfile_error(f, v, "%s: \"%s\" must be %s, not %s", what, key, want,
                                  fhir_jsonfile_kind_a(v->kind));
        return NULL;
    }
    return v;
}

int fhir_jsonfile_str(fhir_jsonfile *f, const fhir_node *obj, const char *key, const char *what,
                      unsigned flags, const char **out)
{
    int rc;
    const fhir_node *v = typed(f, obj, key, what, flags, FHIR_STRING, "a string", &rc);
    if (!v)
        return rc;
    if ((flags & FHIR_JSONFILE_NONEMPTY) && !v->text[0])
        return fhir_jsonfile_error(f, v, "%s: \"%s\" must not be empty", what, key);
    *out = v->text;
    return 1;
}

static int out_of_range(fhir_jsonfile *f, const fhir_node *v, const char *key, const char *what,
                        double lo, double hi)
{
    return fhir_jsonfile_error(f, v, "%s: \"%s\" = %s is outside [%g, %g]", what, key, v->text, lo,
                               hi);
}

int fhir_jsonfile_num(fhir_jsonfile *f, const fhir_node *obj, const char *key, const char *what,
                      unsigned flags, double lo, double hi, double *out)
{
    int rc;
    const fhir_node *v = typed(f, obj, key, what, flags, FHIR_NUMBER, "a number", &rc);
    if (!v)
        return rc;
    double d;
    if (!fhir_node_double(v, &d) || !isfinite(d) || d < lo || d > hi)
        return out_of_range(f, v, key, what, lo, hi);
    *out = d;
    return 1;
}

int fhir_jsonfile_int(fhir_jsonfile *f, const fhir_node *obj, const char *key, const char *what,
                      unsigned flags, int64_t lo, int64_t hi, int64_t *out)
{
    int rc;
    const fhir_node *v = typed(f, obj, key, what, flags, FHIR_NUMBER, "an integer", &rc);
    if (!v)
        return rc;
    int64_t x;
    if (strpbrk(v->text, ".eE"))
        return fhir_jsonfile_error(f, v, "%s: \"%s\" must be an integer, not %s", what, key,
                                   v->text);
    if (!fhir_node_int(v, &x) || x < lo || x > hi) /* not within int64 or the bounds */
        return out_of_range(f, v, key, what, (double)lo, (double)hi);
    *out = x;
    return 1;
}

int fhir_jsonfile_bool(fhir_jsonfile *f, const fhir_node *obj, const char *key, const char *what,
                       unsigned flags, bool *out)
{
    int rc;
    const fhir_node *v = typed(f, obj, key, what, flags, FHIR_BOOL, "true or false", &rc);
    if (!v)
        return rc;
    *out = v->boolean;
    return 1;
}

int fhir_jsonfile_enum(fhir_jsonfile *f, const fhir_node *obj, const char *key, const char *what,
                       unsigned flags, const char *const *values, int *out)
{
    const char *s = NULL;
    int rc = fhir_jsonfile_str(f, obj, key, what, flags, &s);
    if (rc <= 0)
        return rc;
    for (int i = 0; values[i]; i++)
        if (!strcmp(values[i], s)) {
            *out = i;
            return 1;
        }
    char list[FHIR_ERROR_MAX / 2];
    size_t used = 0;
    list[0] = '\0';
    for (int i = 0; values[i] && used < sizeof list; i++) {
        int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", values[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    return fhir_jsonfile_error(f, fhir_node_get(obj, key), "%s: %s \"%s\" is not one of %s", what,
                               key, s, list);
}

static int container(fhir_jsonfile *f, const fhir_node *obj, const char *key, const char *what,
                     unsigned flags, fhir_kind k, const fhir_node **out)
{
    int rc;
    const fhir_node *v = typed(f, obj, key, what, flags, k, fhir_jsonfile_kind_a(k), &rc);
    if (!v)
        return rc;
    if ((flags & FHIR_JSONFILE_NONEMPTY) && v->len == 0)
        return fhir_jsonfile_error(f, v, "%s: \"%s\" must not be empty", what, key);
    *out = v;
    return 1;
}

int fhir_jsonfile_array(fhir_jsonfile *f, const fhir_node *obj, const char *key, const char *what,
                        unsigned flags, const fhir_node **out)
{
    return container(f, obj, key, what, flags, FHIR_ARRAY, out);
}

int fhir_jsonfile_object(fhir_jsonfile *f, const fhir_node *obj, const char *key,
                         const char *what, unsigned flags, const fhir_node **out)
{
    return container(f, obj, key, what, flags, FHIR_OBJECT, out);
}
