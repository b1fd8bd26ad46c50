/* fhir_log — levelled, structured key=value logs on stderr (or a FILE you choose).
 *
 *   fhir_log(FHIR_LOG_INFO, "poll.done", "endpoint=%s resources=%zu", name, n);
 *   -> ts=2026-11-27T18:00:00.000Z level=info event=poll.done endpoint=ehr resources=12
 *
 * Logs never carry PHI: name patients by their pseudonymous id, never by name, MRN,
 * birth date or address. Values with spaces or quotes are the caller's to quote with
 * fhir_log_quote(). */
#ifndef FHIR_LOG_H
#define FHIR_LOG_H

#include <stdio.h>

typedef enum fhir_log_level {
    FHIR_LOG_DEBUG = 0,
    FHIR_LOG_INFO,
    FHIR_LOG_WARN,
    FHIR_LOG_ERROR,
    FHIR_LOG_OFF,
} fhir_log_level;

void fhir_log_set_level(fhir_log_level lvl);
fhir_log_level fhir_log_get_level(void);
/* Parses "debug|info|warn|error|off"; returns -1 when unknown. */
int fhir_log_level_parse(const char *s, fhir_log_level *out);
/* Where logs go (borrowed; default stderr). */
void fhir_log_set_stream(FILE *f);

void fhir_log(fhir_log_level lvl, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes s as a log-safe value into out (quotes and escapes when needed). Returns out. */
const char *fhir_log_quote(const char *s, char *out, size_t outlen);

#endif
