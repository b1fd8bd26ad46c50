/* fhir_buf — growable byte buffer with a hard cap. */
#include "fhir_buf.h"

#include <errno.h>
#include <math.h>
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
    /* the usual case first: it fits in what is allocated and under the cap */
    if (!b->overflow && n < b->alloc - b->len && (!b->cap || n <= b->cap - b->len)) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
    }
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

int fhir_buf_reserve(fhir_buf *b, size_t n)
{
    if (b->overflow)
        return -1;
    return grow(b, b->len + n);
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
int fhir_buf_puts(fhir_buf *b, const char *s)
{
    size_t n = strlen(s);
    /* fhir_buf_append's usual case here (no second call): the text and its NUL in one copy */
    if (!b->overflow && n < b->alloc - b->len && (!b->cap || n <= b->cap - b->len)) {
        memcpy(b->data + b->len, s, n + 1);
        b->len += n;
        return 0;
    }
    return fhir_buf_append(b, s, n);
}

/* Appends the decimal digits of u, after a '-' when neg. */
static int put_dec(fhir_buf *b, unsigned long long u, bool neg)
{
    char d[24];
    size_t i = sizeof d;
    do
        d[--i] = (char)('0' + u % 10);
    while (u /= 10);
    if (neg)
        d[--i] = '-';
    return fhir_buf_append(b, d + i, sizeof d - i);
}

static int put_int(fhir_buf *b, long long v)
{
    return put_dec(b, v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v, v < 0);
}

/* "%g" of v when 1e-4 <= |v| < 1e6 and the sixth significant digit is not a near tie (the
 * value scaled to six digits is more than 1e-6 away from .5): six digits rounded, trailing zeros
 * dropped, as printf writes them. false when printf must decide (and for NaN, infinities,
 * other magnitudes). */
static bool fast_g(double v, char *out, size_t *len)
{
    static const double p10[] = {1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6,
                                 1e7, 1e8, 1e9};
    double a = fabs(v);
    if (!(a >= 1e-4 && a < 1e6))
        return false;
    int e = -4; /* 10^e <= a < 10^(e+1), up to the rounding of the constants (checked below) */
    while (e < 5 && a >= p10[e + 5])
        e++;
    double x = a * p10[4 + 5 - e], fl = floor(x);
    if (fabs(x - fl - 0.5) < 1e-6)
        return false;
    double m = x - fl < 0.5 ? fl : fl + 1;
    if (m < 1e5 || m >= 1e6)
        return false;
    char dig[6];
    unsigned long u = (unsigned long)m;
    for (int i = 5; i >= 0; i--, u /= 10)
        dig[i] = (char)('0' + u % 10);
    size_t o = 0;
    if (v < 0)
        out[o++] = '-';
    int nd = 6; /* significant digits left after dropping trailing zeros of the fraction */
    int point = e + 1; /* digits before the decimal point (<= 0: "0." and zeros first) */
    while (nd > (point > 0 ? point : 0) && dig[nd - 1] == '0')
        nd--;
    if (point > 0) {
        memcpy(out + o, dig, (size_t)point);
        o += (size_t)point;
        if (nd > point) {
            out[o++] = '.';
            memcpy(out + o, dig + point, (size_t)(nd - point));
            o += (size_t)(nd - point);
        }
    } else {
        out[o++] = '0';
        out[o++] = '.';
        for (int z = 0; z < -point; z++)
            out[o++] = '0';
        memcpy(out + o, dig, (size_t)nd);
        o += (size_t)nd;
    }
    *len = o;
    return true;
}

/* "%.<prec>f" of v (prec <= 6) when |v| * 10^prec < 1e9 and the value scaled to prec digits
 * is more than 1e-6 away from a tie (.5): rounded as printf rounds it (the exact binary value
 * decides; the scaling's error is below 2^-23 there, so only a near tie could round the other
 * way). false when printf must decide (and for NaN, infinities, larger magnitudes). */
static bool fast_f(double v, unsigned prec, char *out, size_t *len)
{
    static const double p10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6};
    if (prec > 6)
        return false;
    double x = fabs(v) * p10[prec];
    if (!(x < 1e9)) /* also false for NaN */
        return false;
    double fl = floor(x);
    if (fabs(x - fl - 0.5) < 1e-6)
        return false;
    unsigned long long m = (unsigned long long)(x - fl < 0.5 ? fl : fl + 1);
    char dig[24];
    size_t nd = 0;
    do
        dig[nd++] = (char)('0' + m % 10);
    while (m /= 10);
    while (nd <= prec) /* at least one digit before the point */
        dig[nd++] = '0';
    size_t o = 0;
    if (signbit(v)) /* printf keeps the sign of a negative value that rounds to zero */
        out[o++] = '-';
    for (size_t i = nd; i-- > prec;)
        out[o++] = dig[i];
    if (prec) {
        out[o++] = '.';
        for (size_t i = prec; i-- > 0;)
            out[o++] = dig[i];
    }
    *len = o;
    return true;
}

size_t fhir_fmt_fixed(char *out, size_t size, double v, unsigned prec)
{
    char d[64];
    size_t n;
    if (prec > 60 || !fast_f(v, prec, d, &n))
        return (size_t)snprintf(out, size, "%.*f", (int)prec, v);
    if (size == 0)
        return n;
    size_t k = n < size - 1 ? n : size - 1;
    memcpy(out, d, k);
    out[k] = '\0';
    return n;
}

/* What vsnprintf would append for the common conversions, without its cost: %s, %.<n>s, %c,
 * %d, %u, %ld, %zu, %% and %g (integral values below 10^6 by hand, others through snprintf),
 * %.<n>f (fast_f, else snprintf).
 * 1 when fmt has anything else (flags, widths, other conversions, a NULL string): nothing
 * consumed from the caller's point of view, the caller formats with vsnprintf. */
static int fast_vprintf(fhir_buf *b, const char *fmt, va_list ap, int *rc)
{
    for (const char *f = fmt; (f = strchr(f, '%')); f++) { /* check first: ap is used once */
        f++;
        if (*f == '.') {
            unsigned prec = 0;
            for (f++; *f >= '0' && *f <= '9'; f++)
                prec = prec < 100 ? prec * 10 + (unsigned)(*f - '0') : prec;
            if (*f != 's' && (*f != 'f' || prec > 6))
                return 1;
        } else if (*f == 'z' || *f == 'l') {
            if (f[1] != (*f == 'z' ? 'u' : 'd'))
                return 1;
            f++;
        } else if (!strchr("sdcug%", *f) || !*f) {
            return 1;
        }
    }
    va_list aq;
    va_copy(aq, ap);
    size_t start = b->len;
    int r = 0;
    const char *f = fmt;
    while (!r && *f) {
        const char *pct = strchr(f, '%');
        size_t lit = pct ? (size_t)(pct - f) : strlen(f);
        if (lit)
            r = fhir_buf_append(b, f, lit);
        if (!pct || r)
            break;
        f = pct + 1;
        size_t prec = (size_t)-1;
        if (*f == '.') {
            prec = 0;
            for (f++; *f >= '0' && *f <= '9'; f++)
                prec = prec * 10 + (size_t)(*f - '0');
        }
        switch (*f) {
        case '%':
            r = fhir_buf_putc(b, '%');
            break;
        case 's': {
            const char *v = va_arg(aq, const char *);
            if (!v) { /* vsnprintf's own words for NULL */
                va_end(aq);
                b->len = start;
                if (b->data)
                    b->data[start] = '\0';
                return 1;
            }
            r = fhir_buf_append(b, v, prec == (size_t)-1 ? strlen(v) : strnlen(v, prec));
            break;
        }
        case 'c':
            r = fhir_buf_putc(b, (char)va_arg(aq, int));
            break;
        case 'd':
            r = put_int(b, va_arg(aq, int));
            break;
        case 'u':
            r = put_dec(b, va_arg(aq, unsigned), false);
            break;
        case 'l':
            f++;
            r = put_int(b, va_arg(aq, long));
            break;
        case 'z':
            f++;
            r = put_dec(b, va_arg(aq, size_t), false);
            break;
        case 'f': { /* only with a precision (the check above) */
            double v = va_arg(aq, double);
            char d[64];
            size_t n;
            if (!fast_f(v, (unsigned)prec, d, &n))
                n = (size_t)snprintf(d, sizeof d, "%.*f", (int)prec, v); /* prec <= 6 */
            if (n >= sizeof d) { /* a magnitude printf writes longer: it formats it all */
                va_end(aq);
                b->len = start;
                if (b->data)
                    b->data[start] = '\0';
                return 1;
            }
            r = fhir_buf_append(b, d, n);
            break;
        }
        case 'g': {
            double v = va_arg(aq, double);
            char d[64];
            size_t n;
            if (v > -1e6 && v < 1e6 && v == (double)(long long)v && (v != 0 || !signbit(v))) {
                r = put_int(b, (long long)v);
            } else if (fast_g(v, d, &n)) {
                r = fhir_buf_append(b, d, n);
            } else {
                n = (size_t)snprintf(d, sizeof d, "%g", v);
                r = fhir_buf_append(b, d, n);
            }
            break;
        }
        }
        f++;
    }
    va_end(aq);
    if (r) { /* over the cap: nothing appended, as vsnprintf's path does */
        b->len = start;
        if (b->data)
            b->data[start] = '\0';
    }
    *rc = r;
    return 0;
}

int fhir_buf_vprintf(fhir_buf *b, const char *fmt, va_list ap)
{
    if (b->overflow)
        return -1;
    int rc;
    if (!fast_vprintf(b, fmt, ap, &rc))
        return rc;
    char small[256];
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(small, sizeof small, fmt, aq);
    va_end(aq);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof small)
        return fhir_buf_append(b, small, (size_t)n);
    if (grow(b, b->len + (size_t)n) < 0)
        return -1;
    va_copy(aq, ap);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, aq);
    va_end(aq);
    b->len += (size_t)n;
    return 0;
}

int fhir_buf_printf(fhir_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fhir_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
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
