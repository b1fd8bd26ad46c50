/* fhir_log — levelled, structured logfmt lines on stderr (or a FILE you choose).
 *
 *   fhir_log(FHIR_LOG_INFO, "poll.done", "endpoint=%s resources=%zu", name, n);
 *   -> ts="2026-11-27T18:00:00.000Z" level="info" event="poll.done" endpoint="ehr" resources="12"
 *
 * fmt is a printf format made of key=value pairs separated by single spaces. fhir_log writes
 * every value in double quotes and escapes it (logfmt rules: \" \\ \n \r \t, other control
 * bytes as \u00XX), so nothing a caller passes (a message with spaces, a quote, a newline, a
 * string like `x actor=admin`) can close a value, forge a field or start a new line. Callers
 * never quote. A value runs from its '=' to the next space in fmt that is followed by a key
 * and '=' (keys are [A-Za-z0-9_.-]); text in between stays in the value ("delay=%dms"), and
 * what a conversion produces never splits a value. Text before the first key= is logged as
 * msg="...". A line is at most FHIR_LOG_LINE_MAX bytes: a longer one is cut between two
 * characters of a value, which still closes its quote, and ends with truncated="true".
 *
 * fhir_log_set_format(FHIR_LOG_JSON) writes the same pairs as one JSON object per line (the
 * escapes above are JSON's too; bytes >= 0x80 pass through, so the line is JSON as long as the
 * values are UTF-8).
 *
 * Logs never carry PHI: name patients by their pseudonymous id, never by name, MRN,
 * birth date or address. */
#ifndef FHIR_LOG_H
#define FHIR_LOG_H

#include <stdio.h>

/* Longest line written, newline included. */
#define FHIR_LOG_LINE_MAX 4096u

typedef enum fhir_log_level {
    FHIR_LOG_DEBUG = 0,
    FHIR_LOG_INFO,
    FHIR_LOG_WARN,
    FHIR_LOG_ERROR,
    FHIR_LOG_OFF,
} fhir_log_level;

typedef enum fhir_log_format {
    FHIR_LOG_LOGFMT = 0, /* ts="..." level="info" event="x" key="value" */
    FHIR_LOG_JSON,       /* {"ts":"...","level":"info","event":"x","key":"value"}: one JSON
                          * object per line, every value a string, escaped the same way */
} fhir_log_format;

void fhir_log_set_level(fhir_log_level lvl);
void fhir_log_set_format(fhir_log_format f);
/* Parses "logfmt|json"; returns -1 when unknown. */
int fhir_log_format_parse(const char *s, fhir_log_format *out);
fhir_log_level fhir_log_get_level(void);
/* Parses "debug|info|warn|error|off"; returns -1 when unknown. */
int fhir_log_level_parse(const char *s, fhir_log_level *out);
/* Where logs go (borrowed; default stderr). */
void fhir_log_set_stream(FILE *f);

/* Writes one line: ts, level, event, then the pairs of fmt, every value quoted (see above).
 * The %n conversion is not supported (its argument is skipped). */
void fhir_log(fhir_log_level lvl, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
