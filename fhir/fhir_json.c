/* fhir_json — JSON reader on yajl callbacks (building the fhir_node tree in an arena) and a
 * compact/pretty writer. The reader enforces FHIR's rules (no duplicate keys) and per-parse
 * limits so hostile input fails with a clear error instead of growing memory. */
#include "fhir_json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>
#include <yajl/yajl_version.h>

#include "fhir_alloc.h"
#include "fhir_hash.h"
#include "fhir_names.h"

/* Objects with more members than this switch from a linear duplicate-key scan to a hash. */
#define DUP_LINEAR_MAX 16

typedef struct dup_slot {
    const fhir_node *obj;
    const char *key;     /* arena copy: lives as long as the tree */
    uint32_t len;
    uint32_t hash;
    uint32_t line;       /* of the key, when lines are recorded */
} dup_slot;

typedef struct parser {
    fhir_arena *a;
    fhir_json_limits lim;
    fhir_node *root;
    fhir_node **stack;
    size_t depth, stack_alloc;
    const char *key;     /* pending member name (arena copy, or the reader's shared one) */
    uint32_t key_len;
    uint32_t key_line;   /* line of the pending member name */
    char msg[256];       /* our own error (limits, duplicates); empty when yajl's */
    dup_slot *dup;
    size_t dup_cap, dup_used;
    /* line recording (fhir_json_parse_ex with lines): the whole text is fed at once, so
     * yajl's bytes-consumed count is an offset into text */
    bool lines;
    yajl_handle h;
    const char *text;
    size_t text_len;
    size_t scan_pos;     /* newlines before scan_pos are counted in scan_line */
    uint32_t scan_line;
    /* fhir_json_reader: documents parsed so far on this handle (more than one: a second
     * top-level value) and where the root's last token ended in the text fed */
    size_t roots;
    size_t root_end;
    struct interns *in;  /* member names shared across documents (fhir_json_reader), or NULL */
    bool shared_only;    /* every name of this document so far is a shared one: equal names
                          * are the same pointer */
} parser;

/* The member names a fhir_json_reader has seen, shared by the trees it builds (resources repeat
 * a few dozen names): one copy of each, checked once. Bounded (fhir_json.h): past
 * FHIR_JSON_READER_NAMES names or FHIR_JSON_READER_NAME_BYTES of them, further names are
 * copied into the tree's arena as without a reader. */
#define INTERN_SLOTS (2 * FHIR_JSON_READER_NAMES) /* a power of two, at most half full */
#define INTERN_BYTES FHIR_JSON_READER_NAME_BYTES

typedef struct intern_slot {
    uint64_t x, y;       /* the name's bytes as name_words packs them */
    const char *s;       /* NULL = empty slot */
    uint32_t len;
} intern_slot;

typedef struct interns {
    intern_slot slot[INTERN_SLOTS];
    size_t used;
    fhir_arena *a;
} interns;

/* A name's bytes in two words, which with its length tell every name of up to 16 bytes from
 * every other: the first and last eight bytes (overlapping when shorter than 16); below eight,
 * the first and last four; below four, the first, middle and last byte. No byte past k[n). */
static void name_words(const unsigned char *k, size_t n, uint64_t *x, uint64_t *y)
{
    if (n >= 8) {
        memcpy(x, k, 8);
        memcpy(y, k + n - 8, 8);
    } else if (n >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, k, 4);
        memcpy(&hi, k + n - 4, 4);
        *x = lo | (uint64_t)hi << 32;
        *y = 0;
    } else {
        *x = n ? k[0] | (uint32_t)k[n / 2] << 8 | (uint32_t)k[n - 1] << 16 : 0;
        *y = 0;
    }
}

static uint32_t name_hash(uint64_t x, uint64_t y, size_t n)
{
    return (uint32_t)(((x ^ (y * 0x9E3779B97F4A7C15ull) ^ n) * 0xff51afd7ed558ccdull) >> 32);
}

/* The shared copy of name k (packed as x, y), or NULL; *slot is where it would go. */
static const char *intern_find(const interns *in, const unsigned char *k, size_t n, uint64_t x,
                               uint64_t y, size_t *slot)
{
    size_t j = name_hash(x, y, n) & (INTERN_SLOTS - 1);
    for (; in->slot[j].s; j = (j + 1) & (INTERN_SLOTS - 1)) {
        const intern_slot *e = &in->slot[j];
        if (e->x == x && e->y == y && e->len == n &&
            (n <= 16 || !memcmp(e->s + 8, k + 8, n - 16))) /* what lies between the words */
            return e->s;
    }
    *slot = j;
    return NULL;
}

/* A shared copy of a (well-formed) name not seen before: the name table's own copy of a common
 * FHIR name (fhir_names.h), else one in the interns' arena; NULL when the table is full. */
static const char *intern_add(interns *in, size_t slot, uint64_t x, uint64_t y,
                              const unsigned char *k, size_t n)
{
    if (in->used >= INTERN_SLOTS / 2)
        return NULL;
    int ix = fhir_names_find((const char *)k, n);
    const char *c = ix >= 0 ? fhir_names_at((size_t)ix, NULL)
                            : fhir_arena_strndup(in->a, (const char *)k, n);
    if (!c)
        return NULL;
    in->slot[slot] = (intern_slot){x, y, c, (uint32_t)n};
    in->used++;
    return c;
}

void fhir_json_limits_default(fhir_json_limits *lim)
{
    if (!lim->max_bytes)
        lim->max_bytes = FHIR_JSON_DEFAULT_MAX_BYTES;
    if (!lim->max_depth)
        lim->max_depth = FHIR_JSON_DEFAULT_MAX_DEPTH;
    if (!lim->max_string)
        lim->max_string = FHIR_JSON_DEFAULT_MAX_STRING;
}

static int fail(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(parser *p, const char *fmt, ...)
{
    if (!p->msg[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->msg, sizeof p->msg, fmt, ap);
        va_end(ap);
    }
    return 0; /* yajl: cancel */
}

static int out_of_arena(parser *p)
{
    return fail(p, "document exceeds the memory cap of %zu bytes", fhir_arena_cap(p->a));
}

static uint32_t hash_key(const fhir_node *obj, const char *k, size_t n)
{
    return fhir_hash32(FHIR_HASH32_INIT ^ (uint32_t)((uintptr_t)obj >> 4), k, n);
}

/* Line of the token yajl has just read: the line of its last byte (a JSON token never spans
 * lines). Offsets only grow during one yajl_parse call, so counting is linear overall. */
static uint32_t token_line(parser *p)
{
    size_t off = yajl_get_bytes_consumed(p->h);
    if (off > p->text_len)
        off = p->text_len;
    size_t end = off ? off - 1 : 0;
    while (p->scan_pos < end) {
        const char *nl = memchr(p->text + p->scan_pos, '\n', end - p->scan_pos);
        if (!nl) {
            p->scan_pos = end;
            break;
        }
        p->scan_line++;
        p->scan_pos = (size_t)(nl - p->text) + 1;
    }
    return p->scan_line;
}

/* Inserts (obj,key) into the duplicate table; returns the slot of the earlier member with
 * that name, or NULL when there was none. */
static const dup_slot *dup_insert(parser *p, const fhir_node *obj, const char *k, uint32_t n,
                                  uint32_t line)
{
    if ((p->dup_used + 1) * 2 > p->dup_cap) {
        size_t ncap = p->dup_cap ? p->dup_cap * 2 : 256;
        dup_slot *nt = fhir_xcalloc(ncap, sizeof *nt);
        for (size_t i = 0; i < p->dup_cap; i++) {
            if (!p->dup[i].obj)
                continue;
            size_t j = p->dup[i].hash & (ncap - 1);
            while (nt[j].obj)
                j = (j + 1) & (ncap - 1);
            nt[j] = p->dup[i];
        }
        free(p->dup);
        p->dup = nt;
        p->dup_cap = ncap;
    }
    uint32_t h = hash_key(obj, k, n);
    size_t j = h & (p->dup_cap - 1);
    while (p->dup[j].obj) {
        dup_slot *s = &p->dup[j];
        if (s->obj == obj && s->hash == h && s->len == n && memcmp(s->key, k, n) == 0)
            return s;
        j = (j + 1) & (p->dup_cap - 1);
    }
    p->dup[j] = (dup_slot){obj, k, n, h, line};
    p->dup_used++;
    return NULL;
}

/* k is the arena copy of the new member name. Returns true when obj already has a member of
 * that name; *first_line is then the earlier member's line (0 when lines are not recorded). */
static bool is_duplicate(parser *p, const fhir_node *obj, const char *k, uint32_t n,
                         uint32_t *first_line)
{
    if (obj->len < DUP_LINEAR_MAX) {
        for (const fhir_node *c = obj->child; c; c = c->next)
            if (p->shared_only ? c->key == k : (c->key_len == n && memcmp(c->key, k, n) == 0)) {
                *first_line = c->line;
                return true;
            }
        return false;
    }
    if (obj->len == DUP_LINEAR_MAX)
        for (const fhir_node *c = obj->child; c; c = c->next)
            dup_insert(p, obj, c->key, c->key_len, c->line);
    const dup_slot *s = dup_insert(p, obj, k, n, p->key_line);
    if (s)
        *first_line = s->line;
    return s != NULL;
}

/* Links n under the current container (or makes it the root). */
static int add(parser *p, fhir_node *n)
{
    if (!n)
        return out_of_arena(p);
    if (p->depth == 0) {
        if (p->lines)
            n->line = token_line(p);
        p->root = n;
        p->roots++;
        return 1;
    }
    fhir_node *parent = p->stack[p->depth - 1];
    if (parent->kind == FHIR_OBJECT) {
        n->key = p->key;
        n->key_len = p->key_len;
        n->line = p->key_line;
    } else if (p->lines) {
        n->line = token_line(p);
    }
    if (parent->last)
        parent->last->next = n;
    else
        parent->child = n;
    parent->last = n;
    parent->len++;
    return 1;
}

static int cb_null(void *ctx)
{
    parser *p = ctx;
    return add(p, fhir_node_new(p->a, FHIR_NULL));
}

static int cb_boolean(void *ctx, int v)
{
    parser *p = ctx;
    return add(p, fhir_node_new_bool(p->a, v != 0));
}

static int add_text(parser *p, fhir_kind k, const char *s, size_t n)
{
    fhir_node *node = k == FHIR_STRING ? fhir_node_new_strn(p->a, s, n) : fhir_node_new_num(p->a, s, n);
    return node ? add(p, node) : out_of_arena(p);
}

static int cb_number(void *ctx, const char *s, size_t n)
{
    parser *p = ctx;
    if (n > p->lim.max_string)
        return fail(p, "number longer than max_string (%zu bytes)", p->lim.max_string);
    return add_text(p, FHIR_NUMBER, s, n);
}

/* Strict UTF-8 (RFC 3629): the offset of the first byte that does not start a well-formed
 * sequence — overlong forms, UTF-16 surrogates (U+D800..DFFF) and code points above U+10FFFF
 * included — or n when all is well. yajl's own check lets overlong and surrogate forms
 * through, and the XML side (libxml2) refuses them, so one resource could be read in one
 * format and not in the other. */
static size_t utf8_bad_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        for (uint64_t w; i + 8 <= n; i += 8) { /* ASCII, a word at a time */
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
        }
        if (i == n)
            break;
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else
            return i; /* 0x80..0xC1 (continuation or overlong lead), 0xF5..0xFF */
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return i;
        i += len;
    }
    return n;
}

static int cb_string(void *ctx, const unsigned char *s, size_t n)
{
    parser *p = ctx;
    if (n > p->lim.max_string)
        return fail(p, "string longer than max_string (%zu bytes)", p->lim.max_string);
    /* ASCII without NUL, a word at a time; else the checks in their order: NUL, then UTF-8 */
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    size_t i = 0;
    for (uint64_t w; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        if ((w | ((w - ones) & ~w)) & high)
            break;
    }
    while (i < n && s[i] && s[i] < 0x80)
        i++;
    if (i < n) {
        if (memchr(s + i, '\0', n - i))
            return fail(p, "string contains a NUL character");
        size_t bad = i + utf8_bad_at(s + i, n - i);
        if (bad < n)
            return fail(p, "string is not well-formed UTF-8 (byte %zu of the string: overlong form, "
                           "surrogate or invalid sequence)", bad + 1);
    }
    return add_text(p, FHIR_STRING, (const char *)s, n);
}

static int push(parser *p, fhir_kind k)
{
    if (p->depth >= p->lim.max_depth)
        return fail(p, "nesting deeper than max_depth (%zu)", p->lim.max_depth);
    fhir_node *n = fhir_node_new(p->a, k);
    if (!add(p, n))
        return 0;
    if (p->depth == p->stack_alloc) {
        size_t na = p->stack_alloc ? p->stack_alloc * 2 : 32;
        fhir_node **ns = fhir_xrealloc(p->stack, na * sizeof *ns);
        p->stack = ns;
        p->stack_alloc = na;
    }
    p->stack[p->depth++] = n;
    return 1;
}

static int cb_start_map(void *ctx) { return push(ctx, FHIR_OBJECT); }
static int cb_start_array(void *ctx) { return push(ctx, FHIR_ARRAY); }

static int cb_end(void *ctx)
{
    parser *p = ctx;
    if (--p->depth == 0 && p->h)
        p->root_end = yajl_get_bytes_consumed(p->h);
    return 1;
}

static int cb_map_key(void *ctx, const unsigned char *k, size_t n)
{
    parser *p = ctx;
    if (n > p->lim.max_string)
        return fail(p, "key longer than max_string (%zu bytes)", p->lim.max_string);
    const char *name = NULL;
    uint64_t x = 0, y = 0;
    size_t slot = 0;
    if (p->in) { /* a name seen before was checked then */
        name_words(k, n, &x, &y);
        name = intern_find(p->in, k, n, x, y, &slot);
    }
    if (!name) {
        size_t bad = utf8_bad_at(k, n);
        if (bad < n)
            return fail(p, "key is not well-formed UTF-8 (byte %zu of the key)", bad + 1);
        if (p->in)
            name = intern_add(p->in, slot, x, y, k, n);
        /* else the copy first: yajl's buffer is reused, and the duplicate table keeps the name */
        if (!name) {
            p->shared_only = false;
            if (!(name = fhir_arena_strndup(p->a, (const char *)k, n)))
                return out_of_arena(p);
        }
    }
    fhir_node *obj = p->stack[p->depth - 1];
    p->key_line = p->lines ? token_line(p) : 0;
    uint32_t first = 0;
    if (is_duplicate(p, obj, name, (uint32_t)n, &first)) {
        if (first)
            return fail(p, "duplicate key \"%.*s\" (first on line %u)", (int)(n > 80 ? 80 : n),
                        name, (unsigned)first);
        return fail(p, "duplicate key \"%.*s\" (FHIR forbids repeated member names)",
                    (int)(n > 80 ? 80 : n), name);
    }
    p->key = name;
    p->key_len = (uint32_t)n;
    return 1;
}

static const yajl_callbacks callbacks = {
    cb_null, cb_boolean, NULL, NULL, cb_number, cb_string,
    cb_start_map, cb_map_key, cb_end, cb_start_array, cb_end,
};

struct fhir_json_stream {
    parser p;
    yajl_handle h;
    interns *in;       /* the stream's member names: one copy each, in the trees' arena */
    size_t fed;        /* bytes fed so far */
    size_t line;       /* newlines in fully fed chunks */
    int bom;           /* leading bytes matched against the UTF-8 BOM so far (held back,
                        * not yet fed); -1 once decided */
    int failed;
};

static void parser_init(parser *p, fhir_arena *a, const fhir_json_limits *lim)
{
    memset(p, 0, sizeof *p);
    p->a = a;
    if (lim)
        p->lim = *lim;
    fhir_json_limits_default(&p->lim);
}

static void parser_free(parser *p)
{
    free(p->stack);
    free(p->dup);
    p->stack = NULL;
    p->dup = NULL;
}

/* Where and why yajl stopped: line = first_line + the newlines in chunk before the point
 * reached; byte = chunk_off + that point. */
static void describe(yajl_handle h, const parser *p, yajl_status st, const unsigned char *chunk,
                     size_t chunk_len, size_t chunk_off, size_t first_line, fhir_json_failure *f)
{
    size_t consumed = chunk ? yajl_get_bytes_consumed(h) : 0;
    f->line = first_line;
    for (size_t i = 0; i < consumed && i < chunk_len; i++)
        if (chunk[i] == '\n')
            f->line++;
    f->byte = chunk_off + consumed;
    f->syntax = false;
    f->what[0] = '\0';
    if (p->msg[0]) {
        snprintf(f->what, sizeof f->what, "%s", p->msg);
        return;
    }
    f->syntax = true;
    if (st == yajl_status_error) {
        unsigned char *m = yajl_get_error(h, 0, chunk, chunk_len);
        char *t = (char *)m;
        size_t l = strlen(t);
        while (l && (t[l - 1] == '\n' || t[l - 1] == ' '))
            t[--l] = '\0';
        if (!strncmp(t, "parse error: ", 13))
            t += 13;
        snprintf(f->what, sizeof f->what, "%s", t);
        yajl_free_error(h, m);
    }
}

/* The classic message of a failure: "line L, byte B: invalid JSON: what". */
static void failure_to_error(const fhir_json_failure *f, fhir_error *err)
{
    if (!f->syntax)
        fhir_error_set(err, "line %zu, byte %zu: %s", f->line, f->byte, f->what);
    else if (f->what[0])
        fhir_error_set(err, "line %zu, byte %zu: invalid JSON: %s", f->line, f->byte, f->what);
    else
        fhir_error_set(err, "line %zu, byte %zu: invalid JSON", f->line, f->byte);
}

static void report(fhir_json_stream *s, yajl_status st, const unsigned char *chunk, size_t chunk_len,
                   size_t chunk_off, fhir_error *err)
{
    fhir_json_failure f;
    describe(s->h, &s->p, st, chunk, chunk_len, chunk_off, s->line + 1, &f);
    failure_to_error(&f, err);
}

fhir_json_stream *fhir_json_stream_new(fhir_arena *a, const fhir_json_limits *lim)
{
    fhir_json_stream *s = fhir_xcalloc(1, sizeof *s);
    parser_init(&s->p, a, lim);
    if (a) { /* names interned into the trees' own arena: they live exactly as long */
        s->in = fhir_xcalloc(1, sizeof *s->in);
        s->in->a = a;
        s->p.in = s->in;
        s->p.shared_only = true;
    }
    s->h = yajl_alloc(&callbacks, NULL, &s->p);
    if (!s->h)
        abort();
    return s;
}

void fhir_json_stream_free(fhir_json_stream *s)
{
    if (!s)
        return;
    yajl_free(s->h);
    parser_free(&s->p);
    free(s->in);
    free(s);
}

static int feed_raw(fhir_json_stream *s, const char *data, size_t len, fhir_error *err)
{
    if (len > s->p.lim.max_bytes || s->fed > s->p.lim.max_bytes - len) {
        s->failed = 1;
        return fhir_error_set(err, "byte %zu: document exceeds max_bytes (%zu)",
                              s->p.lim.max_bytes, s->p.lim.max_bytes);
    }
    yajl_status st = yajl_parse(s->h, (const unsigned char *)data, len);
    if (st != yajl_status_ok) {
        report(s, st, (const unsigned char *)data, len, s->fed, err);
        s->failed = 1;
        return -1;
    }
    for (const char *q = data, *end = data + len; (q = memchr(q, '\n', (size_t)(end - q))); q++)
        s->line++;
    s->fed += len;
    return 0;
}

static const char UTF8_BOM[3] = {'\xEF', '\xBB', '\xBF'};

/* The bytes held back while they could still be the start of a BOM go to the parser once
 * they turn out not to be one. */
static int flush_bom_prefix(fhir_json_stream *s, fhir_error *err)
{
    size_t k = (size_t)s->bom;
    s->bom = -1;
    return k ? feed_raw(s, UTF8_BOM, k, err) : 0;
}

int fhir_json_stream_feed(fhir_json_stream *s, const char *data, size_t len, fhir_error *err)
{
    if (s->failed)
        return fhir_error_set(err, "JSON stream already failed");
    /* a leading UTF-8 BOM is skipped, also when it arrives split across pieces */
    while (s->bom >= 0 && len) {
        if (data[0] != UTF8_BOM[s->bom]) {
            if (flush_bom_prefix(s, err))
                return -1;
            break;
        }
        data++;
        len--;
        if (++s->bom == 3) {
            s->bom = -1;
            s->fed += 3;
        }
    }
    if (!len)
        return 0;
    return feed_raw(s, data, len, err);
}

fhir_node *fhir_json_stream_finish(fhir_json_stream *s, fhir_error *err)
{
    if (s->failed)
        return fhir_error_set(err, "JSON stream already failed"), NULL;
    if (s->bom > 0 && flush_bom_prefix(s, err)) /* input shorter than a BOM, but began like one */
        return NULL;
    if (s->fed == 0)
        return fhir_error_set(err, "empty input: no JSON document"), NULL;
    yajl_status st = yajl_complete_parse(s->h);
    if (st != yajl_status_ok) {
        report(s, st, NULL, 0, s->fed, err);
        s->failed = 1;
        return NULL;
    }
    if (!s->p.root) {
        fhir_error_set(err, "empty input: no JSON document");
        return NULL;
    }
    return s->p.root;
}

/* One feed of the whole text (after a BOM): yajl never buffers a token across chunks, so
 * memory is the input plus the tree. NULL with *f filled on error. */
static fhir_node *parse_whole(fhir_arena *a, const char *data, size_t len, size_t start,
                              const fhir_json_opts *o, fhir_json_failure *f)
{
    parser p;
    parser_init(&p, a, &o->lim);
    const unsigned char *u = (const unsigned char *)data + start;
    size_t ulen = len - start;
    p.h = yajl_alloc(&callbacks, NULL, &p);
    if (!p.h)
        abort();
    if (o->comments)
        yajl_config(p.h, yajl_allow_comments, 1);
    p.lines = o->lines;
    p.text = (const char *)u;
    p.text_len = ulen;
    p.scan_line = 1;
    fhir_node *root = NULL;
    yajl_status st = yajl_parse(p.h, u, ulen);
    if (st != yajl_status_ok) {
        describe(p.h, &p, st, u, ulen, start, 1, f);
        goto out;
    }
    st = yajl_complete_parse(p.h);
    if (st != yajl_status_ok) {
        /* the document ended too early: the position is the end of the input */
        size_t nl = 1;
        for (const char *q = (const char *)u; (q = memchr(q, '\n', ulen - (size_t)(q - (const char *)u))); q++)
            nl++;
        describe(p.h, &p, st, NULL, 0, len, nl, f);
        goto out;
    }
    if (!p.root) {
        *f = (fhir_json_failure){.line = 1};
        snprintf(f->what, sizeof f->what, "empty input: no JSON document");
        goto out;
    }
    root = p.root;
out:
    yajl_free(p.h);
    parser_free(&p);
    return root;
}

static size_t bom_len(const char *data, size_t len)
{
    return len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
}

fhir_node *fhir_json_parse(fhir_arena *a, const char *data, size_t len,
                           const fhir_json_limits *lim, fhir_error *err)
{
    fhir_json_opts o = {.lim = lim ? *lim : (fhir_json_limits){0}};
    fhir_json_limits_default(&o.lim);
    size_t start = bom_len(data, len);
    if (len - start == 0) {
        fhir_error_set(err, "empty input: no JSON document");
        return NULL;
    }
    if (len > o.lim.max_bytes) {
        fhir_error_set(err, "byte %zu: document of %zu bytes exceeds max_bytes (%zu)",
                       o.lim.max_bytes, len, o.lim.max_bytes);
        return NULL;
    }
    fhir_json_failure f;
    fhir_node *root = parse_whole(a, data, len, start, &o, &f);
    if (!root) {
        if (f.byte == 0 && !f.syntax && !strcmp(f.what, "empty input: no JSON document"))
            fhir_error_set(err, "%s", f.what);
        else
            failure_to_error(&f, err);
    }
    return root;
}

fhir_node *fhir_json_parse_ex(fhir_arena *a, const char *data, size_t len,
                              const fhir_json_opts *opts, fhir_json_failure *fail)
{
    fhir_json_failure scratch;
    fhir_json_failure *f = fail ? fail : &scratch;
    fhir_json_opts o = opts ? *opts : (fhir_json_opts){0};
    fhir_json_limits_default(&o.lim);
    size_t start = bom_len(data, len);
    *f = (fhir_json_failure){.line = 1};
    if (len - start == 0) {
        snprintf(f->what, sizeof f->what, "empty input: no JSON document");
        return NULL;
    }
    if (len > o.lim.max_bytes) {
        f->byte = o.lim.max_bytes;
        snprintf(f->what, sizeof f->what, "document of %zu bytes exceeds max_bytes (%zu)", len,
                 o.lim.max_bytes);
        return NULL;
    }
    return parse_whole(a, data, len, start, &o, f);
}

/* ---- a parser kept across documents --------------------------------------------------- */

struct fhir_json_reader {
    parser p;              /* p.h: the handle (NULL after a document that did not parse) */
    interns in;
};

static void reader_handle(fhir_json_reader *r)
{
    r->p.h = yajl_alloc(&callbacks, NULL, &r->p);
    if (!r->p.h)
        abort();
    yajl_config(r->p.h, yajl_allow_multiple_values, 1);
}

fhir_json_reader *fhir_json_reader_new(const fhir_json_limits *lim)
{
    fhir_json_reader *r = fhir_xcalloc(1, sizeof *r);
    parser_init(&r->p, NULL, lim);
    r->in.a = fhir_arena_new(INTERN_BYTES);
    reader_handle(r);
    return r;
}

void fhir_json_reader_free(fhir_json_reader *r)
{
    if (!r)
        return;
    if (r->p.h)
        yajl_free(r->p.h);
    parser_free(&r->p);
    fhir_arena_free(r->in.a);
    free(r);
}

static bool json_space(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return false;
    return true;
}

/* yajl has no reset: the handle takes documents one after another as a stream of values
 * (yajl_allow_multiple_values). A document is accepted on it only when exactly one object or
 * array was read and nothing but white space follows it, so nothing is left pending in the
 * handle; anything else (errors, limits, a BOM, a scalar, trailing bytes, a truncated document)
 * drops the handle and goes to fhir_json_parse, whose result and message are returned. */
fhir_node *fhir_json_reader_parse(fhir_json_reader *r, fhir_arena *a, const char *data, size_t len,
                                  fhir_error *err)
{
    parser *p = &r->p;
    if (len == 0 || len > p->lim.max_bytes || bom_len(data, len))
        return fhir_json_parse(a, data, len, &p->lim, err);
    if (!p->h)
        reader_handle(r);
    p->a = a;
    p->root = NULL;
    p->depth = 0;
    p->key = NULL;
    p->key_len = 0;
    p->msg[0] = '\0';
    p->roots = 0;
    p->root_end = 0;
    p->in = &r->in;
    p->shared_only = true;
    if (p->dup_used) { /* slots name objects by address: an arena reused would match */
        memset(p->dup, 0, p->dup_cap * sizeof *p->dup);
        p->dup_used = 0;
    }
    yajl_status st = yajl_parse(p->h, (const unsigned char *)data, len);
    if (st == yajl_status_ok && p->roots == 1 && p->depth == 0 &&
        (p->root->kind == FHIR_OBJECT || p->root->kind == FHIR_ARRAY) &&
        json_space(data + p->root_end, len - p->root_end))
        return p->root;
    yajl_free(p->h);
    p->h = NULL;
    return fhir_json_parse(a, data, len, &p->lim, err);
}

fhir_node *fhir_json_parse_file_with(fhir_arena *a, const char *path, const fhir_json_limits *lim,
                                     fhir_parse_fn parse, fhir_error *err)
{
    fhir_json_limits l = lim ? *lim : (fhir_json_limits){0};
    fhir_json_limits_default(&l);
    fhir_buf b;
    fhir_buf_init(&b, l.max_bytes);
    fhir_node *root = NULL;
    if (fhir_buf_read_file(&b, path, err) == 0 &&
        !(root = parse(a, b.data ? b.data : "", b.len, &l, err)))
        fhir_error_prefix(err, "%s", path);
    fhir_buf_free(&b);
    return root;
}

fhir_node *fhir_json_parse_file(fhir_arena *a, const char *path, const fhir_json_limits *lim,
                                fhir_error *err)
{
    return fhir_json_parse_file_with(a, path, lim, fhir_json_parse, err);
}

const char *fhir_json_lib_version(char *buf, size_t n)
{
    int y = yajl_version();
    snprintf(buf, n, "%d.%d.%d", y / 10000, y / 100 % 100, y % 100);
    return buf;
}

/* ---- writer ---------------------------------------------------------------------------- */

/* Does s[0..n) hold nothing to escape (no control character, '"' or '\\')? Eight bytes at a time. */
static bool plain_text(const char *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    size_t i = 0;
    for (uint64_t w; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
        if ((((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b)) & high)
            return false;
    }
    for (; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == '"' || s[i] == '\\')
            return false;
    return true;
}

int fhir_json_write_string(fhir_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (plain_text(s, n)) { /* the common case: one reservation, one copy */
        if (n > SIZE_MAX - 2 || fhir_buf_reserve(out, n + 2) < 0)
            return -1;
        char *p = out->data + out->len;
        p[0] = '"';
        memcpy(p + 1, s, n);
        p[n + 1] = '"';
        p[n + 2] = '\0';
        out->len += n + 2;
        return 0;
    }
    if (fhir_buf_putc(out, '"') < 0)
        return -1;
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        /* eight bytes at a time while none is a control character, '"' or '\\' */
        for (uint64_t w; i + 8 <= n; i += 8) {
            memcpy(&w, s + i, 8);
            const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
            uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
            if ((((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b)) & high)
                break;
        }
        if (i == n)
            break;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (fhir_buf_append(out, s + run, i - run) < 0)
            return -1;
        run = i + 1;
        char esc[7] = {'\\', 0};
        size_t el = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
            esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
            el = 6;
        }
        if (fhir_buf_append(out, esc, el) < 0)
            return -1;
    }
    if (fhir_buf_append(out, s + run, n - run) < 0)
        return -1;
    return fhir_buf_putc(out, '"');
}

static int indent(fhir_buf *out, int level)
{
    static const char spaces[] = "                                                                ";
    if (fhir_buf_putc(out, '\n') < 0)
        return -1;
    size_t n = (size_t)level * 2;
    while (n) {
        size_t k = n < sizeof spaces - 1 ? n : sizeof spaces - 1;
        if (fhir_buf_append(out, spaces, k) < 0)
            return -1;
        n -= k;
    }
    return 0;
}

static int write_node(fhir_buf *out, const fhir_node *n, int pretty, int level)
{
    switch (n->kind) {
    case FHIR_NULL: return fhir_buf_append(out, "null", 4);
    case FHIR_BOOL: return n->boolean ? fhir_buf_append(out, "true", 4) : fhir_buf_append(out, "false", 5);
    case FHIR_NUMBER: return fhir_buf_append(out, n->text, n->len);
    case FHIR_STRING: return fhir_json_write_string(out, n->text, n->len);
    case FHIR_OBJECT:
    case FHIR_ARRAY: {
        int obj = n->kind == FHIR_OBJECT;
        if (fhir_buf_putc(out, obj ? '{' : '[') < 0)
            return -1;
        for (const fhir_node *c = n->child; c; c = c->next) {
            if (c != n->child && fhir_buf_putc(out, ',') < 0)
                return -1;
            if (pretty && indent(out, level + 1) < 0)
                return -1;
            if (obj) {
                if (fhir_json_write_string(out, c->key, c->key_len) < 0 ||
                    fhir_buf_append(out, pretty ? ": " : ":", pretty ? 2 : 1) < 0)
                    return -1;
            }
            if (write_node(out, c, pretty, level + 1) < 0)
                return -1;
        }
        if (pretty && n->child && indent(out, level) < 0)
            return -1;
        return fhir_buf_putc(out, obj ? '}' : ']');
    }
    }
    return -1;
}

int fhir_json_write(fhir_buf *out, const fhir_node *n, int flags)
{
    int pretty = (flags & FHIR_JSON_PRETTY) != 0;
    if (write_node(out, n, pretty, 0) < 0)
        return -1;
    return pretty ? fhir_buf_putc(out, '\n') : 0;
}

char *fhir_json_to_string(const fhir_node *n, int flags, size_t cap)
{
    fhir_buf b;
    fhir_buf_init(&b, cap);
    if (fhir_json_write(&b, n, flags) < 0) {
        fhir_buf_free(&b);
        return NULL;
    }
    return fhir_buf_steal(&b, NULL);
}
