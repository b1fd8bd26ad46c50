/* fhir_buf — growable byte buffer with a hard cap. */
#include "fhir_buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_alloc.h"
#include "fhir_error.h"

void fhir_buf_init(fhir_buf *b, size_t cap)
{
    memset(b, 0, sizeof *b);
    b->cap = cap;
}

void fhir_buf_free(fhir_buf *b)
{
    free(b->data);
    size_t cap = b->cap;
    memset(b, 0, sizeof *b);
    b->cap = cap;
}

void fhir_buf_reset(fhir_buf *b)
{
    b->len = 0;
    b->overflow = false;
    if (b->data)
        b->data[0] = '\0';
}

static int grow(fhir_buf *b, size_t need)
{
    if (b->cap && need > b->cap) {
        b->overflow = true;
        return -1;
    }
    if (need + 1 <= b->alloc)
        return 0;
    size_t n = b->alloc ? b->alloc : 256;
    while (n < need + 1)
        n *= 2;
    if (b->cap && n > b->cap + 1)
        n = b->cap + 1;
    char *p = fhir_xrealloc(b->data, n);
    b->data = p;
    b->alloc = n;
    return 0;
}

int fhir_buf_append(fhir_buf *b, const void *p, size_t n)
{
    if (b->overflow)
        return -1;
    if (grow(b, b->len + n) < 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int fhir_buf_putc(fhir_buf *b, char c)
{
    if (!b->overflow && b->len + 2 <= b->alloc && (!b->cap || b->len < b->cap)) {
        b->data[b->len++] = c;
        b->data[b->len] = '\0';
        return 0;
    }
    return fhir_buf_append(b, &c, 1);
}
int fhir_buf_puts(fhir_buf *b, const char *s) { return fhir_buf_append(b, s, strlen(s)); }

int fhir_buf_printf(fhir_buf *b, const char *fmt, ...)
{
    if (b->overflow)
        return -1;
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof small)
        return fhir_buf_append(b, small, (size_t)n);
    if (grow(b, b->len + (size_t)n) < 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

const char *fhir_buf_cstr(fhir_buf *b)
{
    if (!b->data && grow(b, 0) < 0)
        return "";
    if (!b->data)
        return "";
    b->data[b->len] = '\0';
    return b->data;
}

char *fhir_buf_steal(fhir_buf *b, size_t *len_out)
{
    fhir_buf_cstr(b);
    char *p = b->data;
    if (len_out)
        *len_out = b->len;
    size_t cap = b->cap;
    memset(b, 0, sizeof *b);
    b->cap = cap;
    if (!p) {
        p = fhir_xcalloc(1, 1);
    }
    return p;
}

int fhir_buf_read_stream(fhir_buf *b, FILE *f, const char *name, fhir_error *err)
{
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (fhir_buf_append(b, chunk, n) < 0)
            return fhir_error_set(err, "%s: larger than %zu bytes", name, b->cap);
    if (ferror(f))
        return fhir_error_set(err, "%s: read error", name);
    return 0;
}

int fhir_buf_read_file(fhir_buf *b, const char *path, fhir_error *err)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return fhir_error_set(err, "%s: %s", path, strerror(errno));
    int rc = fhir_buf_read_stream(b, f, path, err);
    if (f != stdin)
        fclose(f);
    return rc;
}

int fhir_buf_html_escape(fhir_buf *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fhir_buf_puts(b, "&amp;"); break;
        case '<': fhir_buf_puts(b, "&lt;"); break;
        case '>': fhir_buf_puts(b, "&gt;"); break;
        case '"': fhir_buf_puts(b, "&quot;"); break;
        case '\'': fhir_buf_puts(b, "&#39;"); break;
        default: fhir_buf_putc(b, *s);
        }
    }
    return b->overflow ? -1 : 0;
}
