/* fhir_log — structured key=value logs. */
#include "fhir_log.h"

#include <stdarg.h>
#include <string.h>

#include "fhir_clock.h"

static fhir_log_level min_level = FHIR_LOG_INFO;
static FILE *log_stream;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

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

void fhir_log(fhir_log_level lvl, const char *event, const char *fmt, ...)
{
    if (lvl < min_level || lvl >= FHIR_LOG_OFF)
        return;
    FILE *f = log_stream ? log_stream : stderr;
    char ts[40];
    fhir_clock_format_instant(fhir_clock_now_ms(), ts, sizeof ts);
    char line[2048];
    int n = snprintf(line, sizeof line, "ts=%s level=%s event=%s", ts, level_names[lvl], event);
    if (n < 0)
        return;
    if (fmt && *fmt && (size_t)n < sizeof line - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n >= sizeof line - 1)
        n = (int)sizeof line - 2; /* truncated */
    line[n++] = '\n';
    fwrite(line, 1, (size_t)n, f);
    fflush(f);
}

const char *fhir_log_quote(const char *s, char *out, size_t outlen)
{
    if (!outlen)
        return out;
    if (!s)
        s = "";
    int need = *s == '\0';
    for (const char *p = s; *p; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20)
            need = 1;
    size_t o = 0;
    if (!need) {
        snprintf(out, outlen, "%s", s);
        return out;
    }
    if (o + 1 < outlen)
        out[o++] = '"';
    for (const char *p = s; *p && o + 3 < outlen; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            out[o++] = ' ';
        } else {
            out[o++] = (char)c;
        }
    }
    if (o + 1 < outlen)
        out[o++] = '"';
    out[o] = '\0';
    return out;
}
