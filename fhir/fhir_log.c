/* fhir_log — structured logfmt lines; every value quoted and escaped here (see fhir_log.h). */
#include "fhir_log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fhir_clock.h"

static fhir_log_level min_level = FHIR_LOG_INFO;
static FILE *log_stream;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};
static fhir_log_format out_format = FHIR_LOG_LOGFMT;

void fhir_log_set_format(fhir_log_format f) { out_format = f; }

int fhir_log_format_parse(const char *s, fhir_log_format *out)
{
    if (s && !strcmp(s, "logfmt"))
        *out = FHIR_LOG_LOGFMT;
    else if (s && !strcmp(s, "json"))
        *out = FHIR_LOG_JSON;
    else
        return -1;
    return 0;
}

void fhir_log_set_level(fhir_log_level lvl) { min_level = lvl; }
fhir_log_level fhir_log_get_level(void) { return min_level; }
void fhir_log_set_stream(FILE *f) { log_stream = f; }

int fhir_log_level_parse(const char *s, fhir_log_level *out)
{
    for (int i = 0; i <= FHIR_LOG_OFF; i++)
        if (!strcmp(s, level_names[i])) {
            *out = (fhir_log_level)i;
            return 0;
        }
    return -1;
}

/* ---- the line being written -------------------------------------------------------------- */

/* Written after a cut: the open value's closing quote (when one is open), the marker, '\n'.
 * The JSON form's is the longer and sets the room kept for it. */
#define TAIL " truncated=\"true\"\n"
#define TAIL_JSON ",\"truncated\":\"true\"}\n"

typedef struct line {
    char buf[FHIR_LOG_LINE_MAX];
    size_t n;
    bool cut;      /* something did not fit: nothing more is written but the tail */
    bool in_value; /* between the quotes of a value */
    bool json;     /* {"key":"value",...} instead of key="value" ... */
} line;

/* Room for content: the tail (closing quote, truncation marker, newline) always fits. */
#define ROOM (FHIR_LOG_LINE_MAX - sizeof TAIL_JSON - 1)

static void put_raw(line *l, const char *s, size_t n)
{
    if (l->cut)
        return;
    if (l->n + n > ROOM) {
        l->cut = true;
        return;
    }
    memcpy(l->buf + l->n, s, n);
    l->n += n;
}

/* Appends s[0..n) escaped for the inside of a quoted value; an escape is never split. */
static void put_escaped(line *l, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n && !l->cut; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[6] = {'\\', 0, 0, 0, 0, 0};
        size_t en = 2;
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default:
            if (c >= 0x20 && c != 0x7f) {
                put_raw(l, s + i, 1);
                continue;
            }
            e[1] = 'u'; e[2] = '0'; e[3] = '0'; e[4] = hex[c >> 4]; e[5] = hex[c & 15];
            en = 6;
        }
        put_raw(l, e, en);
    }
}

/* Opens a value, all or nothing: ` key="` (no space first on an empty line), or in JSON
 * `,"key":"` (`{"key":"` first). Keys are [A-Za-z0-9_.-]: nothing to escape in either. */
static void open_value(line *l, const char *key, size_t klen)
{
    const char *pre = l->json ? (l->n ? ",\"" : "{\"") : (l->n ? " " : "");
    const char *post = l->json ? "\":\"" : "=\"";
    size_t np = strlen(pre), nq = strlen(post);
    if (l->cut || l->n + np + klen + nq > ROOM) {
        l->cut = true;
        return;
    }
    put_raw(l, pre, np);
    put_raw(l, key, klen);
    put_raw(l, post, nq);
    l->in_value = true;
}

static void close_value(line *l)
{
    if (l->cut)
        return;
    l->buf[l->n++] = '"'; /* ROOM keeps a byte for it */
    l->in_value = false;
}

static void put_pair(line *l, const char *key, const char *val)
{
    open_value(l, key, strlen(key));
    put_escaped(l, val, strlen(val));
    close_value(l);
}

static bool key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

/* Length of "key=" at p (the key's length), or 0 when p does not start a pair. */
static size_t pair_key(const char *p)
{
    size_t k = 0;
    while (key_char(p[k]))
        k++;
    return k && p[k] == '=' ? k : 0;
}

/* ---- one printf conversion -------------------------------------------------------------- */

/* Formats the conversion starting at *pp ('%' already consumed) with the next argument(s)
 * into out; advances *pp past it. Integer lengths are normalised to intmax_t so that one
 * snprintf call per conversion type covers every length modifier. */
static void convert(const char **pp, va_list *ap, char *out, size_t outn)
{
    const char *p = *pp;
    char spec[64];
    size_t sn = 0;
    spec[sn++] = '%';
    while (*p && strchr("-+ #0'", *p) && sn < 16)
        spec[sn++] = *p++;
    if (*p == '*') {
        sn += (size_t)snprintf(spec + sn, sizeof spec - sn, "%d", va_arg(*ap, int));
        p++;
    } else {
        while (*p >= '0' && *p <= '9' && sn < 32)
            spec[sn++] = *p++;
    }
    if (*p == '.') {
        spec[sn++] = *p++;
        if (*p == '*') {
            int prec = va_arg(*ap, int);
            sn += (size_t)snprintf(spec + sn, sizeof spec - sn, "%d", prec < 0 ? 0 : prec);
            p++;
        } else {
            while (*p >= '0' && *p <= '9' && sn < 48)
                spec[sn++] = *p++;
        }
    }
    char len[3] = {0};
    if ((p[0] == 'h' && p[1] == 'h') || (p[0] == 'l' && p[1] == 'l')) {
        len[0] = p[0];
        len[1] = p[1];
        p += 2;
    } else if (*p && strchr("hljztL", *p)) {
        len[0] = *p++;
    }
    char conv = *p ? *p++ : '\0';
    *pp = p;
    out[0] = '\0';
    switch (conv) {
    case 'd': case 'i': {
        intmax_t v;
        if (!strcmp(len, "hh")) v = (signed char)va_arg(*ap, int);
        else if (!strcmp(len, "h")) v = (short)va_arg(*ap, int);
        else if (!strcmp(len, "l")) v = va_arg(*ap, long);
        else if (!strcmp(len, "ll")) v = va_arg(*ap, long long);
        else if (!strcmp(len, "j")) v = va_arg(*ap, intmax_t);
        else if (!strcmp(len, "z") || !strcmp(len, "t")) v = va_arg(*ap, ptrdiff_t);
        else v = va_arg(*ap, int);
        spec[sn++] = 'j';
        spec[sn++] = conv;
        spec[sn] = '\0';
        snprintf(out, outn, spec, v);
        return;
    }
    case 'u': case 'o': case 'x': case 'X': {
        uintmax_t v;
        if (!strcmp(len, "hh")) v = (unsigned char)va_arg(*ap, unsigned);
        else if (!strcmp(len, "h")) v = (unsigned short)va_arg(*ap, unsigned);
        else if (!strcmp(len, "l")) v = va_arg(*ap, unsigned long);
        else if (!strcmp(len, "ll")) v = va_arg(*ap, unsigned long long);
        else if (!strcmp(len, "j")) v = va_arg(*ap, uintmax_t);
        else if (!strcmp(len, "z")) v = va_arg(*ap, size_t);
        else if (!strcmp(len, "t")) v = (uintmax_t)va_arg(*ap, ptrdiff_t);
        else v = va_arg(*ap, unsigned);
        spec[sn++] = 'j';
        spec[sn++] = conv;
        spec[sn] = '\0';
        snprintf(out, outn, spec, v);
        return;
    }
    case 'e': case 'E': case 'f': case 'F': case 'g': case 'G': case 'a': case 'A':
        if (!strcmp(len, "L"))
            spec[sn++] = 'L';
        spec[sn++] = conv;
        spec[sn] = '\0';
        if (!strcmp(len, "L"))
            snprintf(out, outn, spec, va_arg(*ap, long double));
        else
            snprintf(out, outn, spec, va_arg(*ap, double));
        return;
    case 'c':
        spec[sn++] = 'c';
        spec[sn] = '\0';
        snprintf(out, outn, spec, va_arg(*ap, int));
        return;
    case 's': {
        const char *s = va_arg(*ap, const char *);
        spec[sn++] = 's';
        spec[sn] = '\0';
        snprintf(out, outn, spec, s ? s : "(null)");
        return;
    }
    case 'p':
        snprintf(out, outn, "%p", va_arg(*ap, void *));
        return;
    case 'n':
        (void)va_arg(*ap, void *);
        return;
    case '%':
        snprintf(out, outn, "%%");
        return;
    default: /* unknown conversion: the rest of the arguments cannot be read safely */
        *pp = p + strlen(p);
        return;
    }
}

/* Writes the pairs of fmt: keys as written, every value quoted and escaped. */
static void put_fmt(line *l, const char *fmt, va_list *ap)
{
    char conv[FHIR_LOG_LINE_MAX];
    const char *p = fmt;
    while (*p && !l->cut) {
        size_t k = pair_key(p);
        if (k) {
            open_value(l, p, k);
            p += k + 1;
        } else {
            open_value(l, "msg", 3);
        }
        for (;;) {
            const char *lit = p;
            while (*p && *p != '%' && !(*p == ' ' && pair_key(p + 1)))
                p++;
            put_escaped(l, lit, (size_t)(p - lit));
            if (*p != '%')
                break;
            p++;
            convert(&p, ap, conv, sizeof conv);
            put_escaped(l, conv, strlen(conv));
        }
        close_value(l);
        if (*p == ' ')
            p++;
    }
}

void fhir_log(fhir_log_level lvl, const char *event, const char *fmt, ...)
{
    if (lvl < min_level || lvl >= FHIR_LOG_OFF)
        return;
    FILE *f = log_stream ? log_stream : stderr;
    char ts[40];
    fhir_clock_format_instant(fhir_clock_now_ms(), ts, sizeof ts);
    line l;
    l.n = 0;
    l.cut = l.in_value = false;
    l.json = out_format == FHIR_LOG_JSON;
    put_pair(&l, "ts", ts);
    put_pair(&l, "level", level_names[lvl]);
    put_pair(&l, "event", event ? event : "");
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        put_fmt(&l, fmt, &ap);
        va_end(ap);
    }
    if (l.cut) {
        if (l.in_value)
            l.buf[l.n++] = '"';
        const char *tail = l.json ? TAIL_JSON : TAIL;
        memcpy(l.buf + l.n, tail, strlen(tail));
        l.n += strlen(tail);
    } else {
        if (l.json)
            l.buf[l.n++] = '}';
        l.buf[l.n++] = '\n';
    }
    fwrite(l.buf, 1, l.n, f);
    fflush(f);
}
