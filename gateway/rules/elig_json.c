/* elig_json — the criteria files' JSON as a small tree with line numbers (yajl callbacks; the
 * byte offset of each token gives its line), so every validation error can say file:line.
 * See elig_int.h. */
#include "elig_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>

#include <yajl/yajl_parse.h>

#define JP_MAX_DEPTH 64

typedef struct jparse {
    const char *data;
    size_t len;
    size_t line_off; /* newlines counted up to here */
    int line;
    yajl_handle h;
    jv *stack[JP_MAX_DEPTH];
    int depth;
    jv *root;
    char *key;
    char err[256];
} jparse;

void elig_jv_free(jv *v)
{
    while (v) {
        jv *next = v->next;
        elig_jv_free(v->first);
        free(v->key);
        free(v->str);
        free(v);
        v = next;
    }
}

static int jp_line(jparse *p)
{
    size_t off = yajl_get_bytes_consumed(p->h);
    if (off > p->len)
        off = p->len;
    for (; p->line_off < off; p->line_off++)
        if (p->data[p->line_off] == '\n')
            p->line++;
    /* the offset is just past the token; a token ending a line belongs to that line */
    return p->line;
}

static int jp_add(jparse *p, jv *v)
{
    v->line = jp_line(p);
    if (p->depth == 0) {
        if (p->root) {
            elig_jv_free(v);
            snprintf(p->err, sizeof p->err, "more than one JSON document");
            return 0;
        }
        p->root = v;
    } else {
        jv *parent = p->stack[p->depth - 1];
        if (parent->kind == JV_OBJ) {
            v->key = p->key;
            p->key = NULL;
            if (!v->key)
                v->key = xstrdup("");
        }
        if (parent->last)
            parent->last->next = v;
        else
            parent->first = v;
        parent->last = v;
        parent->n++;
    }
    if (v->kind == JV_OBJ || v->kind == JV_ARR) {
        if (p->depth >= JP_MAX_DEPTH) {
            snprintf(p->err, sizeof p->err, "nesting deeper than %d", JP_MAX_DEPTH);
            return 0;
        }
        p->stack[p->depth++] = v;
    }
    return 1;
}

static jv *jv_new(jv_kind k)
{
    jv *v = xcalloc(1, sizeof *v);
    v->kind = k;
    return v;
}

static int jp_null(void *ctx) { return jp_add(ctx, jv_new(JV_NULL)); }

static int jp_bool(void *ctx, int b)
{
    jv *v = jv_new(JV_BOOL);
    v->b = b != 0;
    return jp_add(ctx, v);
}

static int jp_number(void *ctx, const char *s, size_t n)
{
    jparse *p = ctx;
    jv *v = jv_new(JV_NUM);
    v->str = xmalloc(n + 1);
    memcpy(v->str, s, n);
    v->str[n] = 0;
    char *end;
    errno = 0;
    v->num = strtod(v->str, &end);
    if (*end || errno || !isfinite(v->num)) {
        elig_jv_free(v);
        snprintf(p->err, sizeof p->err, "number out of range");
        return 0;
    }
    return jp_add(p, v);
}

static int jp_string(void *ctx, const unsigned char *s, size_t n)
{
    jparse *p = ctx;
    if (memchr(s, 0, n)) {
        snprintf(p->err, sizeof p->err, "NUL byte in string");
        return 0;
    }
    jv *v = jv_new(JV_STR);
    v->str = xmalloc(n + 1);
    memcpy(v->str, s, n);
    v->str[n] = 0;
    return jp_add(p, v);
}

static int jp_start_map(void *ctx) { return jp_add(ctx, jv_new(JV_OBJ)); }
static int jp_start_array(void *ctx) { return jp_add(ctx, jv_new(JV_ARR)); }

static int jp_end(void *ctx)
{
    jparse *p = ctx;
    p->depth--;
    return 1;
}

static int jp_map_key(void *ctx, const unsigned char *s, size_t n)
{
    jparse *p = ctx;
    jv *obj = p->stack[p->depth - 1];
    for (jv *c = obj->first; c; c = c->next)
        if (strlen(c->key) == n && !memcmp(c->key, s, n)) {
            jp_line(p);
            snprintf(p->err, sizeof p->err, "duplicate key \"%.*s\"", (int)(n > 64 ? 64 : n),
                     (const char *)s);
            return 0;
        }
    free(p->key);
    p->key = xmalloc(n + 1);
    memcpy(p->key, s, n);
    p->key[n] = 0;
    return 1;
}

static const yajl_callbacks jp_callbacks = {
    jp_null, jp_bool, NULL, NULL, jp_number, jp_string,
    jp_start_map, jp_map_key, jp_end, jp_start_array, jp_end,
};

jv *elig_jv_parse(const char *name, const char *data, size_t len, fhir_error *err)
{
    size_t ws = 0;
    while (ws < len && (data[ws] == ' ' || data[ws] == '\n' || data[ws] == '\t' ||
                        data[ws] == '\r'))
        ws++;
    if (ws == len) {
        fhir_error_set(err, "%s:1: empty file", name);
        return NULL;
    }
    jparse p;
    memset(&p, 0, sizeof p);
    p.data = data;
    p.len = len;
    p.line = 1;
    p.h = yajl_alloc(&jp_callbacks, NULL, &p);
    if (!p.h)
        abort();
    yajl_status st = yajl_parse(p.h, (const unsigned char *)data, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(p.h);
    if (st != yajl_status_ok) {
        int line = jp_line(&p);
        if (p.err[0]) {
            fhir_error_set(err, "%s:%d: %s", name, line, p.err);
        } else {
            unsigned char *msg = yajl_get_error(p.h, 0, (const unsigned char *)data, len);
            char m[200];
            snprintf(m, sizeof m, "%s", msg ? (const char *)msg : "syntax error");
            for (char *c = m; *c; c++)
                if (*c == '\n')
                    *c = ' ';
            size_t ml = strlen(m);
            while (ml && m[ml - 1] == ' ')
                m[--ml] = 0;
            fhir_error_set(err, "%s:%d: malformed JSON: %s", name, line, m);
            yajl_free_error(p.h, msg);
        }
        yajl_free(p.h);
        elig_jv_free(p.root);
        free(p.key);
        return NULL;
    }
    yajl_free(p.h);
    free(p.key);
    if (!p.root) {
        fhir_error_set(err, "%s:1: empty file", name);
        return NULL;
    }
    return p.root;
}

const jv *elig_jv_get(const jv *obj, const char *key)
{
    if (!obj || obj->kind != JV_OBJ)
        return NULL;
    for (const jv *c = obj->first; c; c = c->next)
        if (!strcmp(c->key, key))
            return c;
    return NULL;
}

const char *elig_jv_kind_name(jv_kind k)
{
    static const char *const n[] = {"null", "boolean", "number", "string", "object", "array"};
    return n[k];
}
