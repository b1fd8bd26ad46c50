/* fhir_xml — FHIR R4 XML <-> fhir_node tree, on libxml2's SAX2 interface.
 *
 * Reader: a stack of frames follows the open elements. Each FHIR element is resolved in
 * its parent's type through the generated R4 metadata (fhir_meta.h), which says whether it
 * repeats (JSON array), what its type is (primitive JSON kind, complex type, backbone,
 * any resource) and whether it is the XHTML div. Runs of a primitive element are collected
 * and flushed when the next sibling starts (or the parent ends) into "name" and "_name"
 * members, arrays padded with null where needed, exactly as the JSON form has them.
 *
 * Writer: for each object, members are resolved in the type, sorted by definition order
 * (the XML element order) and emitted; "name"/"_name" twins merge into one element.
 * The narrative div is re-parsed with the same hardened parser and re-serialised, so a
 * malformed or foreign div cannot leak into the output. */
#include "fhir_xml.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/SAX2.h>
#include <libxml/entities.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlerror.h>

#include "fhir_alloc.h"
#include "fhir_dl.h"
#include "fhir_meta.h"

/* libxml2 is not linked: with what it loads (ICU's two libraries, libstdc++, liblzma) it cost
 * ~5 ms of CPU at every start of every cartgate process (issue 20), and only XML input or
 * output needs it. The headers give the types; fhir_dl fills this table at the first XML
 * parse, once per process (pthread_once: a worker thread may parse too); the handle stays open
 * for the life of the process. */
#define XML_SONAME "libxml2.so.2"
#define XML_FNS(X)                                                                                 \
    X(xmlCreateMemoryParserCtxt) X(xmlCtxtUseOptions) X(xmlFreeParserCtxt)                         \
    X(xmlGetPredefinedEntity) X(xmlInitParser) X(xmlParseDocument) X(xmlSAX2GetLineNumber)         \
    X(xmlStopParser)
static struct {
#define XML_FN_FIELD(fn) __typeof__(fn) *fn;
    XML_FNS(XML_FN_FIELD)
#undef XML_FN_FIELD
    const char *const *parser_version; /* xmlParserVersion: "20914" */
} xml_lib;
static pthread_once_t xml_once = PTHREAD_ONCE_INIT;
static char xml_lib_error[FHIR_DL_WHY_MAX]; /* after xml_load: why it failed, "" when it did not */

static void xml_load(void)
{
    static const char *const soname[] = {XML_SONAME};
    const fhir_dl_sym syms[] = {
#define XML_FN_SYM(fn) {0, #fn, &xml_lib.fn, false},
        XML_FNS(XML_FN_SYM)
#undef XML_FN_SYM
        {0, "xmlParserVersion", &xml_lib.parser_version, true},
    };
    if (fhir_dl_load("XML support (libxml2)", soname, 1, syms, sizeof syms / sizeof *syms,
                     xml_lib_error) == 0)
        xml_lib.xmlInitParser(); /* global tables; not safe to race on first use */
}

/* The table, loaded at the first call; false with err set when libxml2 cannot be loaded. */
static bool xml_lib_get(fhir_error *err)
{
    pthread_once(&xml_once, xml_load);
    if (xml_lib_error[0]) {
        fhir_error_set(err, "%s", xml_lib_error);
        return false;
    }
    return true;
}

int fhir_xml_lib_version(char *buf, size_t cap, fhir_error *err)
{
    fhir_error_clear(err);
    if (!xml_lib_get(err))
        return -1;
    long v = xml_lib.parser_version && *xml_lib.parser_version
                 ? strtol(*xml_lib.parser_version, NULL, 10) : 0;
    if (v > 0)
        snprintf(buf, cap, "%ld.%ld.%ld", v / 10000, v / 100 % 100, v % 100);
    else
        snprintf(buf, cap, "(unknown)");
    return 0;
}

/* ==== reader ============================================================================ */

enum mode { M_OBJECT, M_PRIMITIVE, M_WRAPPER, M_DIV };

typedef struct item {
    fhir_node *value; /* primitive value node or NULL */
    fhir_node *ext;   /* the "_name" object (id/extension), maybe empty */
    struct item *next;
} item;

typedef struct frame {
    int mode;
    const char *name;   /* element local name (arena copy) for error paths */
    fhir_node *obj;     /* M_OBJECT: the object; M_PRIMITIVE: the "_name" object */
    fhir_meta_type type;
    int last_order;     /* definition position of the previous child element, -1 */
    uint8_t seen[32];   /* positions seen so far (types have <= 255 elements) */
    /* pending run of a primitive child element */
    const char *pend_key;
    unsigned pend_flags;
    unsigned pend_count;
    item *pend_head, *pend_tail;
    /* M_WRAPPER: where the nested resource goes */
    fhir_node *wrap_parent;
    const char *wrap_key;
    bool wrap_repeats;
    bool wrap_done;
    fhir_meta_type wrap_type; /* a concrete resource type, or the abstract Resource */
    /* M_PRIMITIVE: this repetition */
    item *it;
} frame;

typedef struct parser {
    fhir_arena *a;
    fhir_json_limits lim;
    fhir_error *err;
    xmlParserCtxtPtr ctxt;
    bool failed;
    fhir_node *root;
    frame *stack;
    size_t depth, alloc;
    /* XHTML capture */
    bool div_only;        /* parsing a lone div (writer side) */
    size_t div_depth;     /* open elements inside the div, the div included */
    bool tag_open;        /* last start tag not yet closed with '>' */
    fhir_buf div;
    fhir_node *div_parent;
    char *div_result;     /* div_only: malloc'd serialisation */
    size_t div_result_len;
} parser;

static int line_of(parser *p)
{
    return p->ctxt ? xml_lib.xmlSAX2GetLineNumber(p->ctxt) : 0;
}

/* Dotted path of the open elements plus an optional last segment, for messages. */
static void path_of(parser *p, const char *last, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < p->depth && n < cap; i++) {
        if (p->stack[i].mode == M_WRAPPER)
            continue;
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? "." : "", p->stack[i].name);
    }
    if (last && n < cap)
        snprintf(buf + n, cap - n, "%s%s", n ? "." : "", last);
}

static void fail(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(parser *p, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = true;
    char msg[FHIR_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fhir_error_set(p->err, "XML line %d: %s", line_of(p), msg);
    if (p->ctxt)
        xml_lib.xmlStopParser(p->ctxt);
}

static void fail_path(parser *p, const char *last, const char *what)
{
    char path[256];
    path_of(p, last, path, sizeof path);
    fail(p, "%s '%s'", what, path);
}

static void oom(parser *p)
{
    fail(p, "document too large: arena cap of %zu bytes reached", fhir_arena_cap(p->a));
}

static frame *push(parser *p, int mode, const char *name)
{
    if (p->depth >= p->lim.max_depth) {
        fail(p, "nesting deeper than max_depth (%zu)", p->lim.max_depth);
        return NULL;
    }
    if (p->depth == p->alloc) {
        size_t n = p->alloc ? p->alloc * 2 : 32;
        frame *s = fhir_xrealloc(p->stack, n * sizeof *s);
        p->stack = s;
        p->alloc = n;
    }
    frame *f = &p->stack[p->depth++];
    memset(f, 0, sizeof *f);
    f->mode = mode;
    f->name = fhir_arena_strdup(p->a, name);
    f->last_order = -1;
    f->type = -1;
    if (!f->name) {
        oom(p);
        return NULL;
    }
    return f;
}

static bool is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return false;
    return true;
}

/* FHIR decimal / integer lexical forms (which are also valid JSON numbers). */
static bool valid_number(const char *s, size_t n, bool integer)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n)
        return false;
    if (s[i] == '0') {
        i++;
    } else if (s[i] >= '1' && s[i] <= '9') {
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    } else {
        return false;
    }
    if (integer)
        return i == n;
    if (i < n && s[i] == '.') {
        i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t d = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d)
            return false;
    }
    return i == n;
}

/* libxml2 without entity substitution hands '&' inside attribute values over as the
 * character reference "&#38;" (everything else arrives decoded). Returns the decoded
 * copy in the arena (or v itself when there is nothing to decode); *n is updated. */
static const char *attr_decode(parser *p, const char *v, size_t *n)
{
    if (!memchr(v, '&', *n))
        return v;
    char *out = fhir_arena_alloc(p->a, *n + 1);
    if (!out) {
        oom(p);
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < *n; i++) {
        if (v[i] == '&' && i + 5 <= *n && !memcmp(v + i, "&#38;", 5)) {
            out[k++] = '&';
            i += 4;
        } else {
            out[k++] = v[i];
        }
    }
    out[k] = '\0';
    *n = k;
    return out;
}

/* Builds the JSON value of a primitive from its XML value attribute. */
static fhir_node *primitive_value(parser *p, fhir_meta_type t, const char *elname,
                                  const char *v, size_t n)
{
    fhir_meta_json j = fhir_meta_type_json(t);
    if (n > p->lim.max_string) {
        fail(p, "value longer than max_string (%zu bytes)", p->lim.max_string);
        return NULL;
    }
    fhir_node *node = NULL;
    if (j == FHIR_META_JSON_STRING) {
        if (n == 0) {
            fail_path(p, elname, "empty value attribute on");
            return NULL;
        }
        node = fhir_node_new_strn(p->a, v, n);
    } else {
        /* Trim (XML attribute values SHOULD be trimmed; numbers/booleans never hold blanks). */
        while (n && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r'))
            v++, n--;
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\n' || v[n - 1] == '\r'))
            n--;
        if (j == FHIR_META_JSON_BOOL) {
            if (n == 4 && !memcmp(v, "true", 4))
                node = fhir_node_new_bool(p->a, true);
            else if (n == 5 && !memcmp(v, "false", 5))
                node = fhir_node_new_bool(p->a, false);
            else {
                char path[256];
                path_of(p, elname, path, sizeof path);
                fail(p, "'%s': value '%.*s' is not a boolean (true|false)", path, (int)(n > 40 ? 40 : n), v);
                return NULL;
            }
        } else {
            bool integer = strcmp(fhir_meta_type_name(t), "decimal") != 0;
            if (!valid_number(v, n, integer)) {
                char path[256];
                path_of(p, elname, path, sizeof path);
                fail(p, "'%s': value '%.*s' is not a valid %s", path, (int)(n > 40 ? 40 : n), v,
                     fhir_meta_type_name(t));
                return NULL;
            }
            node = fhir_node_new_num(p->a, v, n);
        }
    }
    if (!node)
        oom(p);
    return node;
}

/* Flushes f's pending primitive run into "key" / "_key" members of f->obj. */
static void flush(parser *p, frame *f)
{
    if (!f->pend_head)
        return;
    bool any_value = false, any_ext = false;
    for (item *it = f->pend_head; it; it = it->next) {
        any_value |= it->value != NULL;
        any_ext |= it->ext && it->ext->len > 0;
    }
    const char *key = f->pend_key;
    size_t kn = strlen(key);
    char *ukey = fhir_arena_sprintf(p->a, "_%s", key);
    if (!ukey) {
        oom(p);
        return;
    }
    if (f->pend_flags & FHIR_META_REPEATS) {
        fhir_node *va = NULL, *ea = NULL;
        if (any_value && !(va = fhir_node_new(p->a, FHIR_ARRAY)))
            return oom(p);
        if (any_ext && !(ea = fhir_node_new(p->a, FHIR_ARRAY)))
            return oom(p);
        for (item *it = f->pend_head; it; it = it->next) {
            if (va) {
                fhir_node *v = it->value ? it->value : fhir_node_new(p->a, FHIR_NULL);
                if (!v || !fhir_node_append(p->a, va, NULL, 0, v))
                    return oom(p);
            }
            if (ea) {
                fhir_node *e = it->ext && it->ext->len ? it->ext : fhir_node_new(p->a, FHIR_NULL);
                if (!e || !fhir_node_append(p->a, ea, NULL, 0, e))
                    return oom(p);
            }
        }
        if (va && !fhir_node_append(p->a, f->obj, key, kn, va))
            return oom(p);
        if (ea && !fhir_node_append(p->a, f->obj, ukey, kn + 1, ea))
            return oom(p);
    } else {
        item *it = f->pend_head;
        if (it->value && !fhir_node_append(p->a, f->obj, key, kn, it->value))
            return oom(p);
        if (it->ext && it->ext->len && !fhir_node_append(p->a, f->obj, ukey, kn + 1, it->ext))
            return oom(p);
    }
    f->pend_head = f->pend_tail = NULL;
    f->pend_key = NULL;
    f->pend_count = 0;
}

/* ---- XHTML serialisation (both directions use it) -------------------------------------- */

static void put_escaped(parser *p, const char *s, size_t n, bool attr)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\n': rep = attr ? "&#10;" : NULL; break;
        case '\r': rep = "&#13;"; break;
        case '\t': rep = attr ? "&#9;" : NULL; break;
        default: break;
        }
        if (rep) {
            fhir_buf_append(&p->div, s + run, i - run);
            fhir_buf_puts(&p->div, rep);
            run = i + 1;
        }
    }
    fhir_buf_append(&p->div, s + run, n - run);
}

static void div_close_tag(parser *p)
{
    if (p->tag_open) {
        fhir_buf_putc(&p->div, '>');
        p->tag_open = false;
    }
}

/* Bucket of "prefix:local" in a java.util.HashMap of the given capacity: String.hashCode
 * over UTF-16 code units (names are ASCII; other bytes are taken as-is), spread with
 * h ^ (h >>> 16) as HashMap.hash() does. */
static unsigned java_hash_bucket(const char *prefix, const char *local, unsigned cap)
{
    uint32_t h = 0;
    if (prefix) {
        for (const unsigned char *c = (const unsigned char *)prefix; *c; c++)
            h = h * 31u + *c;
        h = h * 31u + ':';
    }
    for (const unsigned char *c = (const unsigned char *)local; *c; c++)
        h = h * 31u + *c;
    h ^= h >> 16;
    return h & (cap - 1);
}

static void div_start(parser *p, const xmlChar *local, const xmlChar *prefix, int nb_ns,
                      const xmlChar **ns, int nb_attr, const xmlChar **attrs)
{
    if (p->div_depth + p->depth >= p->lim.max_depth) {
        fail(p, "nesting deeper than max_depth (%zu)", p->lim.max_depth);
        return;
    }
    div_close_tag(p);
    fhir_buf_putc(&p->div, '<');
    if (prefix) {
        fhir_buf_puts(&p->div, (const char *)prefix);
        fhir_buf_putc(&p->div, ':');
    }
    fhir_buf_puts(&p->div, (const char *)local);
    for (int i = 0; i < nb_ns; i++) {
        const char *pre = (const char *)ns[2 * i], *uri = (const char *)ns[2 * i + 1];
        fhir_buf_puts(&p->div, pre ? " xmlns:" : " xmlns");
        if (pre)
            fhir_buf_puts(&p->div, pre);
        fhir_buf_puts(&p->div, "=\"");
        put_escaped(p, uri ? uri : "", uri ? strlen(uri) : 0, true);
        fhir_buf_putc(&p->div, '"');
    }
    /* Attribute order: the official JSON narratives come from HL7's Java tooling, which
     * keeps XHTML attributes in a java.util.HashMap; emitting them in that map's iteration
     * order (bucket of the name's hash, then document order) reproduces those strings
     * exactly. Attribute order carries no meaning in XML. */
    int order[64];
    unsigned bucket[64];
    int na = nb_attr < 64 ? nb_attr : 64;
    if (nb_attr > 64) {
        fail(p, "more than 64 attributes on an XHTML element");
        return;
    }
    unsigned cap = 16;
    while ((unsigned)na * 4 > cap * 3)
        cap *= 2;
    for (int i = 0; i < na; i++) {
        const xmlChar **at = attrs + 5 * i;
        bucket[i] = java_hash_bucket((const char *)at[1], (const char *)at[0], cap);
        int j = i;
        while (j > 0 && bucket[order[j - 1]] > bucket[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    for (int k = 0; k < na; k++) {
        const xmlChar **at = attrs + 5 * order[k];
        fhir_buf_putc(&p->div, ' ');
        if (at[1]) {
            fhir_buf_puts(&p->div, (const char *)at[1]);
            fhir_buf_putc(&p->div, ':');
        }
        fhir_buf_puts(&p->div, (const char *)at[0]);
        fhir_buf_puts(&p->div, "=\"");
        size_t vn = (size_t)(at[4] - at[3]);
        const char *v = (const char *)at[3];
        for (size_t i = 0; i < vn; i++) { /* "&#38;" is libxml2's spelling of '&' here */
            if (v[i] == '&' && i + 5 <= vn && !memcmp(v + i, "&#38;", 5)) {
                fhir_buf_puts(&p->div, "&amp;");
                i += 4;
            } else {
                put_escaped(p, v + i, 1, true);
            }
        }
        fhir_buf_putc(&p->div, '"');
    }
    p->tag_open = true;
    p->div_depth++;
}

static void div_end(parser *p, const xmlChar *local, const xmlChar *prefix)
{
    if (p->tag_open) {
        fhir_buf_puts(&p->div, "/>");
        p->tag_open = false;
    } else {
        fhir_buf_puts(&p->div, "</");
        if (prefix) {
            fhir_buf_puts(&p->div, (const char *)prefix);
            fhir_buf_putc(&p->div, ':');
        }
        fhir_buf_puts(&p->div, (const char *)local);
        fhir_buf_putc(&p->div, '>');
    }
    if (p->div.overflow) {
        fail(p, "narrative div longer than max_string (%zu bytes)", p->lim.max_string);
        return;
    }
    if (--p->div_depth > 0)
        return;
    /* The div is complete. */
    if (p->div_only) {
        p->div_result_len = p->div.len;
        p->div_result = fhir_buf_steal(&p->div, NULL);
        return;
    }
    fhir_node *s = fhir_node_new_strn(p->a, p->div.data, p->div.len);
    if (!s || !fhir_node_append(p->a, p->div_parent, "div", 3, s))
        return oom(p);
    fhir_buf_reset(&p->div);
}

/* ---- SAX callbacks --------------------------------------------------------------------- */

static bool check_ns(parser *p, const xmlChar *local, const xmlChar *uri, const char *want)
{
    if (uri && !strcmp((const char *)uri, want))
        return true;
    char path[256];
    path_of(p, (const char *)local, path, sizeof path);
    if (!uri)
        fail(p, "element '%s' has no namespace (expected %s)", path, want);
    else
        fail(p, "element '%s' is in namespace '%s' (expected %s)", path, (const char *)uri, want);
    return false;
}

/* Value of the un-namespaced attribute `name`, or NULL; *n gets its length. */
static const char *attr_get(int nb_attr, const xmlChar **attrs, const char *name, size_t *n)
{
    for (int i = 0; i < nb_attr; i++) {
        const xmlChar **at = attrs + 5 * i;
        if (!at[2] && !strcmp((const char *)at[0], name)) {
            *n = (size_t)(at[4] - at[3]);
            return (const char *)at[3];
        }
    }
    return NULL;
}

/* Adds the XML-attribute elements (id, url) of a complex element to obj in definition
 * order and refuses any other un-namespaced attribute. */
static bool complex_attrs(parser *p, const char *elname, fhir_node *obj, fhir_meta_type t,
                          int nb_attr, const xmlChar **attrs)
{
    /* at most a handful of attributes; emit in definition order */
    int order[8];
    int idx[8];
    int k = 0;
    for (int i = 0; i < nb_attr; i++) {
        const xmlChar **at = attrs + 5 * i;
        if (at[2])
            continue; /* xsi:, xml: and other namespaced attributes carry no FHIR content */
        fhir_meta_elem el;
        const char *an = (const char *)at[0];
        if (!fhir_meta_lookup(t, an, strlen(an), &el) || !(el.flags & FHIR_META_XMLATTR) || k == 8) {
            char path[256];
            path_of(p, elname, path, sizeof path);
            fail(p, "unexpected attribute '%s' on '%s'", an, path);
            return false;
        }
        if ((size_t)(at[4] - at[3]) > p->lim.max_string) {
            fail(p, "attribute longer than max_string (%zu bytes)", p->lim.max_string);
            return false;
        }
        int j = k++;
        while (j > 0 && order[j - 1] > (int)el.order) {
            order[j] = order[j - 1];
            idx[j] = idx[j - 1];
            j--;
        }
        order[j] = (int)el.order;
        idx[j] = i;
    }
    for (int j = 0; j < k; j++) {
        const xmlChar **at = attrs + 5 * idx[j];
        size_t vn = (size_t)(at[4] - at[3]);
        const char *vs = attr_decode(p, (const char *)at[3], &vn);
        if (!vs)
            return false;
        fhir_node *v = fhir_node_new_strn(p->a, vs, vn);
        if (!v || !fhir_node_append(p->a, obj, (const char *)at[0], strlen((const char *)at[0]), v)) {
            oom(p);
            return false;
        }
    }
    return true;
}

/* Starts a resource element (root or inside a wrapper): returns its object. */
static fhir_node *start_resource(parser *p, const xmlChar *local, const xmlChar *uri,
                                 int nb_attr, const xmlChar **attrs)
{
    if (!check_ns(p, local, uri, FHIR_XML_NS))
        return NULL;
    const char *name = (const char *)local;
    fhir_meta_type t = fhir_meta_type_find(name, strlen(name));
    if (!fhir_meta_is_resource(t)) {
        char path[256];
        path_of(p, NULL, path, sizeof path);
        if (path[0])
            fail(p, "'%s' is not a FHIR R4 resource type (in '%s')", name, path);
        else
            fail(p, "root element '%s' is not a FHIR R4 resource type", name);
        return NULL;
    }
    for (int i = 0; i < nb_attr; i++)
        if (!attrs[5 * i + 2]) {
            fail(p, "unexpected attribute '%s' on resource '%s'", (const char *)attrs[5 * i], name);
            return NULL;
        }
    fhir_node *obj = fhir_node_new(p->a, FHIR_OBJECT);
    if (!obj || !fhir_node_set_str(p->a, obj, "resourceType", name)) {
        oom(p);
        return NULL;
    }
    frame *f = push(p, M_OBJECT, name);
    if (!f)
        return NULL;
    f->obj = obj;
    f->type = t;
    return obj;
}

static void on_start(void *ctx, const xmlChar *local, const xmlChar *prefix, const xmlChar *uri,
                     int nb_ns, const xmlChar **ns, int nb_attr, int nb_def, const xmlChar **attrs)
{
    parser *p = ctx;
    (void)nb_def;
    if (p->failed)
        return;
    if (p->div_depth) {
        div_start(p, local, prefix, nb_ns, ns, nb_attr, attrs);
        return;
    }
    if (p->div_only) { /* the lone div's root */
        if (strcmp((const char *)local, "div") != 0 || !uri || strcmp((const char *)uri, FHIR_XHTML_NS)) {
            fail(p, "narrative div must be a <div> in the XHTML namespace (%s)", FHIR_XHTML_NS);
            return;
        }
        div_start(p, local, prefix, nb_ns, ns, nb_attr, attrs);
        return;
    }
    if (p->depth == 0) {
        if (p->root) {
            fail(p, "more than one root element");
            return;
        }
        p->root = start_resource(p, local, uri, nb_attr, attrs);
        return;
    }
    frame *f = &p->stack[p->depth - 1];
    const char *name = (const char *)local;
    if (f->mode == M_WRAPPER) {
        if (f->wrap_done) {
            fail_path(p, NULL, "more than one resource inside");
            return;
        }
        f->wrap_done = true;
        fhir_node *parent = f->wrap_parent;
        const char *key = f->wrap_key;
        bool repeats = f->wrap_repeats;
        fhir_meta_type want = f->wrap_type;
        if (fhir_meta_is_resource(want) && strcmp(name, fhir_meta_type_name(want)) != 0) {
            fail_path(p, NULL, "wrong resource type inside");
            return;
        }
        fhir_node *obj = start_resource(p, local, uri, nb_attr, attrs); /* may move stack */
        if (!obj)
            return;
        if (repeats) {
            if (!fhir_node_append(p->a, parent->last, NULL, 0, obj))
                oom(p);
        } else if (!fhir_node_append(p->a, parent, key, strlen(key), obj)) {
            oom(p);
        }
        return;
    }
    /* M_OBJECT or M_PRIMITIVE: a child element of f->type */
    fhir_meta_elem el;
    if (!fhir_meta_lookup(f->type, name, strlen(name), &el)) {
        if (uri && !strcmp((const char *)uri, FHIR_XML_NS))
            fail_path(p, name, "unknown element");
        else
            check_ns(p, local, uri, FHIR_XML_NS);
        return;
    }
    if (el.flags & FHIR_META_XHTML) {
        if (!uri || strcmp((const char *)uri, FHIR_XHTML_NS) != 0) {
            check_ns(p, local, uri, FHIR_XHTML_NS);
            return;
        }
    } else if (!check_ns(p, local, uri, FHIR_XML_NS)) {
        return;
    }
    if (el.flags & FHIR_META_XMLATTR) {
        char path[256];
        path_of(p, name, path, sizeof path);
        fail(p, "'%s' must be an XML attribute, not an element", path);
        return;
    }
    /* repetition and order */
    bool same = (int)el.order == f->last_order;
    if (same && !(el.flags & FHIR_META_REPEATS)) {
        fail_path(p, name, "element must not repeat:");
        return;
    }
    if (!same && (f->seen[el.order >> 3] & (1u << (el.order & 7)))) {
        fail_path(p, name, (el.flags & FHIR_META_REPEATS) ? "repetitions must be adjacent:"
                                                          : "element must not repeat:");
        return;
    }
    if (!same)
        flush(p, f);
    if (p->failed)
        return;
    f->last_order = (int)el.order;
    f->seen[el.order >> 3] |= (uint8_t)(1u << (el.order & 7));

    fhir_meta_type ct = el.type;
    fhir_meta_kind ck = fhir_meta_type_kind(ct);
    fhir_node *obj = f->obj;

    if (el.flags & FHIR_META_XHTML) {
        p->div_parent = obj;
        fhir_buf_reset(&p->div);
        div_start(p, local, prefix, nb_ns, ns, nb_attr, attrs);
        return;
    }
    if (ck == FHIR_META_PRIMITIVE) {
        size_t vn = 0, in = 0;
        const char *v = attr_get(nb_attr, attrs, "value", &vn);
        for (int i = 0; i < nb_attr; i++) {
            const xmlChar **at = attrs + 5 * i;
            if (!at[2] && strcmp((const char *)at[0], "value") && strcmp((const char *)at[0], "id")) {
                char path[256];
                path_of(p, name, path, sizeof path);
                fail(p, "unexpected attribute '%s' on '%s'", (const char *)at[0], path);
                return;
            }
        }
        const char *id = attr_get(nb_attr, attrs, "id", &in);
        item *it = fhir_arena_calloc(p->a, sizeof *it);
        fhir_node *ext = fhir_node_new(p->a, FHIR_OBJECT);
        if (!it || !ext)
            return oom(p);
        if (v && !(v = attr_decode(p, v, &vn)))
            return;
        if (v && !(it->value = primitive_value(p, ct, name, v, vn)))
            return;
        if (id && !(id = attr_decode(p, id, &in)))
            return;
        if (id) {
            fhir_node *idn = fhir_node_new_strn(p->a, id, in);
            if (!idn || !fhir_node_append(p->a, ext, "id", 2, idn))
                return oom(p);
        }
        it->ext = ext;
        if (!f->pend_head) {
            f->pend_key = fhir_arena_strdup(p->a, name);
            if (!f->pend_key)
                return oom(p);
            f->pend_flags = el.flags;
            f->pend_head = it;
        } else {
            f->pend_tail->next = it;
        }
        f->pend_tail = it;
        f->pend_count++;
        frame *pf = push(p, M_PRIMITIVE, name);
        if (!pf)
            return;
        pf->obj = ext;
        pf->type = ct;
        pf->it = it;
        return;
    }
    if (fhir_meta_is_any_resource(ct) || ck == FHIR_META_RESOURCE) {
        if (nb_attr) {
            fail_path(p, name, "unexpected attribute on");
            return;
        }
        if ((el.flags & FHIR_META_REPEATS) && !same) {
            fhir_node *arr = fhir_node_new(p->a, FHIR_ARRAY);
            if (!arr || !fhir_node_append(p->a, obj, name, strlen(name), arr))
                return oom(p);
        }
        frame *wf = push(p, M_WRAPPER, name);
        if (!wf)
            return;
        wf->wrap_parent = obj;
        wf->wrap_key = wf->name;
        wf->wrap_repeats = (el.flags & FHIR_META_REPEATS) != 0;
        wf->wrap_type = ct;
        return;
    }
    /* complex type or backbone */
    fhir_node *child = fhir_node_new(p->a, FHIR_OBJECT);
    if (!child)
        return oom(p);
    if (!complex_attrs(p, name, child, ct, nb_attr, attrs))
        return;
    if (el.flags & FHIR_META_REPEATS) {
        if (!same) {
            fhir_node *arr = fhir_node_new(p->a, FHIR_ARRAY);
            if (!arr || !fhir_node_append(p->a, obj, name, strlen(name), arr))
                return oom(p);
        }
        if (!fhir_node_append(p->a, obj->last, NULL, 0, child))
            return oom(p);
    } else if (!fhir_node_append(p->a, obj, name, strlen(name), child)) {
        return oom(p);
    }
    frame *cf = push(p, M_OBJECT, name);
    if (!cf)
        return;
    cf->obj = child;
    cf->type = ct;
}

static void on_end(void *ctx, const xmlChar *local, const xmlChar *prefix, const xmlChar *uri)
{
    parser *p = ctx;
    (void)uri;
    if (p->failed)
        return;
    if (p->div_depth) {
        div_end(p, local, prefix);
        return;
    }
    if (p->depth == 0)
        return;
    frame *f = &p->stack[p->depth - 1];
    switch (f->mode) {
    case M_OBJECT:
        flush(p, f);
        if (!p->failed && f->obj->len == 0)
            fail_path(p, NULL, "element has no content:");
        break;
    case M_PRIMITIVE:
        flush(p, f);
        if (!p->failed && !f->it->value && f->obj->len == 0)
            fail_path(p, NULL, "element has neither a value attribute nor extensions:");
        break;
    case M_WRAPPER:
        if (!f->wrap_done)
            fail_path(p, NULL, "no resource inside");
        break;
    default:
        break;
    }
    p->depth--;
}

static void on_text(void *ctx, const xmlChar *ch, int len)
{
    parser *p = ctx;
    if (p->failed)
        return;
    if (p->div_depth) {
        div_close_tag(p);
        put_escaped(p, (const char *)ch, (size_t)len, false);
        if (p->div.overflow)
            fail(p, "narrative div longer than max_string (%zu bytes)", p->lim.max_string);
        return;
    }
    if (is_blank((const char *)ch, (size_t)len))
        return;
    if (p->depth == 0) {
        fail(p, "text outside the root element");
        return;
    }
    frame *f = &p->stack[p->depth - 1];
    if (f->mode == M_PRIMITIVE)
        fail_path(p, NULL, "text content where a primitive belongs (FHIR puts it in the value attribute):");
    else
        fail_path(p, NULL, "unexpected text content in");
}

static void on_internal_subset(void *ctx, const xmlChar *name, const xmlChar *ext_id,
                               const xmlChar *sys_id)
{
    (void)name, (void)ext_id, (void)sys_id;
    fail(ctx, "DOCTYPE is not allowed in FHIR XML (DTDs and entity declarations are refused)");
}

static void on_entity_decl(void *ctx, const xmlChar *name, int type, const xmlChar *public_id,
                           const xmlChar *system_id, xmlChar *content)
{
    (void)type, (void)public_id, (void)system_id, (void)content;
    fail(ctx, "entity declaration '%s' refused (no DTDs or entities in FHIR XML)", (const char *)name);
}

static xmlEntityPtr on_get_entity(void *ctx, const xmlChar *name)
{
    (void)ctx;
    return xml_lib.xmlGetPredefinedEntity(name); /* &lt; &gt; &amp; &quot; &apos; only */
}

#if LIBXML_VERSION >= 21200
static void on_error(void *ctx, const xmlError *e)
#else
static void on_error(void *ctx, xmlErrorPtr e)
#endif
{
    parser *p = ctx;
    if (!e || e->level < XML_ERR_ERROR || p->failed)
        return;
    char msg[300];
    snprintf(msg, sizeof msg, "%s", e->message ? e->message : "error");
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    p->failed = true;
    fhir_error_set(p->err, "XML line %d: not well-formed: %s", e->line, msg);
}

static void init_limits(parser *p, const fhir_json_limits *lim)
{
    if (lim)
        p->lim = *lim;
    fhir_json_limits_default(&p->lim);
}


/* Runs the SAX parse of data into p. Returns 0 or -1 (p->err set). */
static int run(parser *p, const char *data, size_t len)
{
    if (len > p->lim.max_bytes)
        return fhir_error_set(p->err, "XML document of %zu bytes exceeds max_bytes (%zu)", len,
                              p->lim.max_bytes);
    if (len > INT_MAX)
        return fhir_error_set(p->err, "XML document too large");
    if (!xml_lib_get(p->err))
        return -1;
    if (len == 0)
        return fhir_error_set(p->err, "XML: empty document");
    xmlParserCtxtPtr ctxt = xml_lib.xmlCreateMemoryParserCtxt(data, (int)len);
    if (!ctxt)
        return fhir_error_set(p->err, "XML: cannot create parser");
    xml_lib.xmlCtxtUseOptions(ctxt, XML_PARSE_NONET | XML_PARSE_NOCDATA);
    xmlSAXHandler h;
    memset(&h, 0, sizeof h);
    h.initialized = XML_SAX2_MAGIC;
    h.startElementNs = on_start;
    h.endElementNs = on_end;
    h.characters = on_text;
    h.ignorableWhitespace = on_text;
    h.cdataBlock = on_text;
    h.internalSubset = on_internal_subset;
    h.externalSubset = on_internal_subset;
    h.entityDecl = on_entity_decl;
    h.getEntity = on_get_entity;
    h.getParameterEntity = NULL;
    h.serror = on_error;
    memcpy(ctxt->sax, &h, sizeof h);
    ctxt->userData = p;
    ctxt->replaceEntities = 0;
    ctxt->loadsubset = 0;
    ctxt->validate = 0;
    p->ctxt = ctxt;
    xml_lib.xmlParseDocument(ctxt);
    bool wf = ctxt->wellFormed;
    p->ctxt = NULL;
    xml_lib.xmlFreeParserCtxt(ctxt);
    if (p->failed)
        return -1;
    if (!wf)
        return fhir_error_set(p->err, "XML: not well-formed");
    return 0;
}

fhir_node *fhir_xml_parse(fhir_arena *a, const char *data, size_t len,
                          const fhir_json_limits *lim, fhir_error *err)
{
    fhir_error_clear(err);
    parser p;
    memset(&p, 0, sizeof p);
    p.a = a;
    p.err = err;
    init_limits(&p, lim);
    fhir_buf_init(&p.div, p.lim.max_string);
    /* Skip a UTF-8 BOM; libxml2 would accept it too, but keep the position logic simple. */
    int rc = run(&p, data, len);
    fhir_buf_free(&p.div);
    free(p.stack);
    if (rc < 0)
        return NULL;
    if (!p.root) {
        fhir_error_set(err, "XML: no resource element");
        return NULL;
    }
    return p.root;
}

/* Re-serialises a narrative div string through the hardened parser. Returns a malloc'd
 * string (caller frees) or NULL with err set. */
static char *div_normalize(const char *s, size_t n, size_t max_string, size_t *out_len, fhir_error *err)
{
    parser p;
    memset(&p, 0, sizeof p);
    p.err = err;
    p.div_only = true;
    fhir_json_limits lim = {.max_bytes = max_string, .max_string = max_string};
    init_limits(&p, &lim);
    fhir_buf_init(&p.div, p.lim.max_string);
    int rc = run(&p, s, n);
    fhir_buf_free(&p.div);
    free(p.stack);
    if (rc < 0 || !p.div_result) {
        free(p.div_result);
        if (rc == 0)
            fhir_error_set(err, "narrative div is empty");
        return NULL;
    }
    *out_len = p.div_result_len;
    return p.div_result;
}

bool fhir_xml_detect(const char *data, size_t len)
{
    size_t i = 0;
    if (len >= 3 && (unsigned char)data[0] == 0xEF && (unsigned char)data[1] == 0xBB &&
        (unsigned char)data[2] == 0xBF)
        i = 3;
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
        i++;
    return i < len && data[i] == '<';
}

fhir_node *fhir_xml_parse_any(fhir_arena *a, const char *data, size_t len,
                              const fhir_json_limits *lim, fhir_error *err)
{
    if (fhir_xml_detect(data, len))
        return fhir_xml_parse(a, data, len, lim, err);
    return fhir_json_parse(a, data, len, lim, err);
}

fhir_node *fhir_xml_parse_any_file(fhir_arena *a, const char *path,
                                   const fhir_json_limits *lim, fhir_error *err)
{
    return fhir_json_parse_file_with(a, path, lim, fhir_xml_parse_any, err);
}

/* ==== writer ============================================================================ */

typedef struct writer {
    fhir_buf *out;
    bool pretty;
    fhir_error *err;
    char path[512];
    size_t plen;
} writer;

static int wfail(writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int wfail(writer *w, const char *fmt, ...)
{
    char msg[FHIR_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fhir_error_set(w->err, "%s: %s", w->plen ? w->path : "(root)", msg);
    return -1;
}

static size_t path_push(writer *w, const char *seg, size_t n)
{
    size_t old = w->plen, room = sizeof w->path - 1 - w->plen;
    if (w->plen && room) {
        w->path[w->plen++] = '.';
        room--;
    }
    if (n > room)
        n = room;
    memcpy(w->path + w->plen, seg, n);
    w->plen += n;
    w->path[w->plen] = '\0';
    return old;
}

/* Appends a + name[0..n) + b (tags without printf). */
static void put3(writer *w, const char *a, const char *name, size_t n, const char *b)
{
    fhir_buf_puts(w->out, a);
    fhir_buf_append(w->out, name, n);
    fhir_buf_puts(w->out, b);
}

static void path_pop(writer *w, size_t old)
{
    w->plen = old;
    w->path[old] = '\0';
}

static void indent(writer *w, int level)
{
    if (!w->pretty)
        return;
    for (int i = 0; i < level; i++)
        fhir_buf_append(w->out, "  ", 2);
}

static void nl(writer *w)
{
    if (w->pretty)
        fhir_buf_putc(w->out, '\n');
}

/* Attribute-escaped text; refuses characters XML 1.0 cannot carry. */
static int put_attr(writer *w, const char *s, size_t n)
{
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *rep = NULL;
        switch (c) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\n': rep = "&#10;"; break;
        case '\r': rep = "&#13;"; break;
        case '\t': rep = "&#9;"; break;
        default:
            if (c < 0x20)
                return wfail(w, "control character U+%04X cannot be written in XML", c);
        }
        if (rep) {
            fhir_buf_append(w->out, s + run, i - run);
            fhir_buf_puts(w->out, rep);
            run = i + 1;
        }
    }
    fhir_buf_append(w->out, s + run, n - run);
    return 0;
}

typedef struct entry {
    fhir_meta_elem el;
    const char *key; /* element name as spelled (choice included), without '_' */
    size_t keylen;
    const fhir_node *val, *ext;
} entry;

static int write_members(writer *w, const fhir_node *obj, fhir_meta_type t, int level, bool resource);

static int write_resource(writer *w, const fhir_node *obj, int level, bool root)
{
    if (!fhir_node_is(obj, FHIR_OBJECT))
        return wfail(w, "expected a resource object, found %s", fhir_node_kind_name(obj ? obj->kind : FHIR_NULL));
    const char *rt = fhir_node_resource_type(obj);
    if (!rt)
        return wfail(w, "resource without a string resourceType");
    fhir_meta_type t = fhir_meta_type_find(rt, strlen(rt));
    if (!fhir_meta_is_resource(t))
        return wfail(w, "'%s' is not a FHIR R4 resource type", rt);
    size_t old = path_push(w, rt, strlen(rt));
    indent(w, level);
    fhir_buf_printf(w->out, "<%s%s>", rt, root ? " xmlns=\"" FHIR_XML_NS "\"" : "");
    nl(w);
    if (write_members(w, obj, t, level + 1, true) < 0)
        return -1;
    indent(w, level);
    fhir_buf_printf(w->out, "</%s>", rt);
    nl(w);
    path_pop(w, old);
    return 0;
}

static int kind_check(writer *w, const fhir_node *v, fhir_meta_type t)
{
    fhir_kind want;
    switch (fhir_meta_type_json(t)) {
    case FHIR_META_JSON_NUMBER: want = FHIR_NUMBER; break;
    case FHIR_META_JSON_BOOL: want = FHIR_BOOL; break;
    case FHIR_META_JSON_STRING: want = FHIR_STRING; break;
    default: want = FHIR_OBJECT; break;
    }
    if (v->kind != want)
        return wfail(w, "expected %s (%s), found %s", fhir_node_kind_name(want), fhir_meta_type_name(t),
                     fhir_node_kind_name(v->kind));
    return 0;
}

/* Does obj have members that become child elements (not XML attributes) of type t? */
static bool has_children(const fhir_node *obj, fhir_meta_type t)
{
    for (const fhir_node *m = fhir_node_first(obj); m; m = m->next) {
        fhir_meta_elem el;
        const char *k = m->key;
        size_t kn = m->key_len;
        if (kn && k[0] == '_')
            k++, kn--;
        if (!fhir_meta_lookup(t, k, kn, &el) || !(el.flags & FHIR_META_XMLATTR))
            return true;
    }
    return false;
}

/* Writes the XML-attribute members (id, url) of obj. */
static int write_attrs(writer *w, const fhir_node *obj, fhir_meta_type t)
{
    for (const fhir_node *m = fhir_node_first(obj); m; m = m->next) {
        fhir_meta_elem el;
        if (!fhir_meta_lookup(t, m->key, m->key_len, &el) || !(el.flags & FHIR_META_XMLATTR))
            continue;
        if (m->kind != FHIR_STRING) {
            size_t old = path_push(w, m->key, m->key_len);
            int rc = wfail(w, "expected string, found %s", fhir_node_kind_name(m->kind));
            path_pop(w, old);
            return rc;
        }
        put3(w, " ", m->key, m->key_len, "=\"");
        if (put_attr(w, m->text, m->len) < 0)
            return -1;
        fhir_buf_putc(w->out, '"');
    }
    return 0;
}

static int write_primitive(writer *w, const entry *e, const fhir_node *v, const fhir_node *x, int level)
{
    fhir_meta_type t = e->el.type;
    if (v && kind_check(w, v, t) < 0)
        return -1;
    if (x && !fhir_node_is(x, FHIR_OBJECT))
        return wfail(w, "'_%.*s' must be an object, found %s", (int)e->keylen, e->key,
                     fhir_node_kind_name(x->kind));
    if (!v && !x)
        return wfail(w, "null in both '%.*s' and '_%.*s'", (int)e->keylen, e->key, (int)e->keylen, e->key);
    indent(w, level);
    put3(w, "<", e->key, e->keylen, "");
    if (x && write_attrs(w, x, t) < 0)
        return -1;
    if (v) {
        fhir_buf_puts(w->out, " value=\"");
        if (v->kind == FHIR_BOOL)
            fhir_buf_puts(w->out, v->boolean ? "true" : "false");
        else if (put_attr(w, v->text, v->len) < 0)
            return -1;
        fhir_buf_putc(w->out, '"');
    }
    if (x && has_children(x, t)) {
        fhir_buf_putc(w->out, '>');
        nl(w);
        if (write_members(w, x, t, level + 1, false) < 0)
            return -1;
        indent(w, level);
        put3(w, "</", e->key, e->keylen, ">");
    } else {
        fhir_buf_puts(w->out, "/>");
    }
    nl(w);
    return 0;
}

static int write_complex(writer *w, const entry *e, const fhir_node *v, int level)
{
    fhir_meta_type t = e->el.type;
    if (!fhir_node_is(v, FHIR_OBJECT))
        return wfail(w, "expected object (%s), found %s", fhir_meta_type_name(t), fhir_node_kind_name(v->kind));
    if (v->len == 0)
        return wfail(w, "empty object");
    indent(w, level);
    put3(w, "<", e->key, e->keylen, "");
    if (write_attrs(w, v, t) < 0)
        return -1;
    if (has_children(v, t)) {
        fhir_buf_putc(w->out, '>');
        nl(w);
        if (write_members(w, v, t, level + 1, false) < 0)
            return -1;
        indent(w, level);
        put3(w, "</", e->key, e->keylen, ">");
    } else {
        fhir_buf_puts(w->out, "/>");
    }
    nl(w);
    return 0;
}

static int write_entry(writer *w, const entry *e, int level)
{
    bool rep = (e->el.flags & FHIR_META_REPEATS) != 0;
    fhir_meta_type t = e->el.type;
    const fhir_node *v = e->val, *x = e->ext;
    if (x && fhir_meta_type_kind(t) != FHIR_META_PRIMITIVE)
        return wfail(w, "'_%.*s' is only allowed on primitive elements", (int)e->keylen, e->key);
    if (rep) {
        if (v && v->kind != FHIR_ARRAY)
            return wfail(w, "repeating element must be an array, found %s", fhir_node_kind_name(v->kind));
        if (x && x->kind != FHIR_ARRAY)
            return wfail(w, "'_%.*s' must be an array, found %s", (int)e->keylen, e->key,
                         fhir_node_kind_name(x->kind));
        if ((v && v->len == 0) || (x && x->len == 0))
            return wfail(w, "empty array");
        if (v && x && v->len != x->len)
            return wfail(w, "'%.*s' and '_%.*s' differ in length", (int)e->keylen, e->key,
                         (int)e->keylen, e->key);
    } else {
        if (v && v->kind == FHIR_ARRAY)
            return wfail(w, "element does not repeat but is an array");
        if (v && v->kind == FHIR_NULL)
            return wfail(w, "null is only allowed inside primitive arrays");
    }
    if (e->el.flags & FHIR_META_XHTML) {
        if (!v || v->kind != FHIR_STRING)
            return wfail(w, "narrative div must be a string");
        size_t n = 0;
        char *div = div_normalize(v->text, v->len, FHIR_JSON_DEFAULT_MAX_STRING, &n, w->err);
        if (!div)
            return fhir_error_prefix(w->err, "%s", w->path);
        indent(w, level);
        fhir_buf_append(w->out, div, n);
        nl(w);
        free(div);
        return 0;
    }
    size_t count = rep ? (v ? v->len : x->len) : 1;
    const fhir_node *vi = rep && v ? v->child : v;
    const fhir_node *xi = rep && x ? x->child : x;
    for (size_t i = 0; i < count; i++) {
        const fhir_node *cv = vi, *cx = xi;
        if (rep) {
            vi = vi ? vi->next : NULL;
            xi = xi ? xi->next : NULL;
            if (cv && cv->kind == FHIR_NULL)
                cv = NULL;
            if (cx && cx->kind == FHIR_NULL)
                cx = NULL;
        }
        if (fhir_meta_type_kind(t) == FHIR_META_PRIMITIVE) {
            if (write_primitive(w, e, cv, cx, level) < 0)
                return -1;
        } else if (!cv) {
            return wfail(w, "null is only allowed inside primitive arrays");
        } else if (fhir_meta_is_any_resource(t) || fhir_meta_is_resource(t)) {
            indent(w, level);
            put3(w, "<", e->key, e->keylen, ">");
            nl(w);
            if (write_resource(w, cv, level + 1, false) < 0)
                return -1;
            indent(w, level);
            put3(w, "</", e->key, e->keylen, ">");
            nl(w);
        } else if (write_complex(w, e, cv, level) < 0) {
            return -1;
        }
    }
    return 0;
}

static int write_members(writer *w, const fhir_node *obj, fhir_meta_type t, int level, bool resource)
{
    size_t n = fhir_node_count(obj);
    entry stackbuf[32];
    entry *es = n <= 32 ? stackbuf : malloc(n * sizeof *es);
    if (!es)
        abort();
    size_t k = 0;
    int rc = 0;
    for (const fhir_node *m = fhir_node_first(obj); m; m = m->next) {
        const char *key = m->key;
        size_t kn = m->key_len;
        if (resource && fhir_node_key_is(m, "resourceType"))
            continue;
        bool ext = kn > 1 && key[0] == '_';
        if (ext)
            key++, kn--;
        fhir_meta_elem el;
        if (!fhir_meta_lookup(t, key, kn, &el)) {
            rc = wfail(w, "unknown element '%s%.*s' in %s", ext ? "_" : "", (int)kn, key,
                       fhir_meta_type_name(t));
            goto out;
        }
        if (el.flags & FHIR_META_XMLATTR) {
            if (ext) {
                rc = wfail(w, "'_%.*s' is not allowed (XML attribute)", (int)kn, key);
                goto out;
            }
            continue;
        }
        size_t j = 0;
        for (; j < k; j++)
            if (es[j].el.order == el.order)
                break;
        if (j < k) {
            if (es[j].keylen != kn || memcmp(es[j].key, key, kn) != 0) {
                rc = wfail(w, "choice element '%s[x]' given twice ('%.*s' and '%.*s')", el.name,
                           (int)es[j].keylen, es[j].key, (int)kn, key);
                goto out;
            }
        } else {
            es[k].el = el;
            es[k].key = key;
            es[k].keylen = kn;
            es[k].val = es[k].ext = NULL;
            j = k++;
        }
        if (ext)
            es[j].ext = m;
        else
            es[j].val = m;
    }
    /* stable insertion sort by definition order */
    for (size_t i = 1; i < k; i++) {
        entry e = es[i];
        size_t j = i;
        while (j > 0 && es[j - 1].el.order > e.el.order) {
            es[j] = es[j - 1];
            j--;
        }
        es[j] = e;
    }
    for (size_t i = 0; i < k && rc == 0; i++) {
        size_t old = path_push(w, es[i].key, es[i].keylen);
        rc = write_entry(w, &es[i], level);
        if (rc == 0)
            path_pop(w, old);
    }
out:
    if (es != stackbuf)
        free(es);
    return rc;
}

int fhir_xml_write(fhir_buf *out, const fhir_node *n, int flags, fhir_error *err)
{
    fhir_error_clear(err);
    writer w;
    memset(&w, 0, sizeof w);
    w.out = out;
    w.pretty = (flags & FHIR_XML_PRETTY) != 0;
    w.err = err;
    fhir_buf_puts(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    nl(&w);
    if (write_resource(&w, n, 0, true) < 0)
        return -1;
    if (out->overflow)
        return fhir_error_set(err, "XML output exceeds the buffer cap (%zu bytes)", out->cap);
    return 0;
}
