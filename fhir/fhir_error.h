/* fhir_error — a human-readable error that travels back to the user.
 * Every recoverable failure in cartgate fills one of these; nothing aborts on bad input. */
#ifndef FHIR_ERROR_H
#define FHIR_ERROR_H

#include <stddef.h>

#define FHIR_ERROR_MAX 512

typedef struct fhir_error {
    char msg[FHIR_ERROR_MAX]; /* empty string when no error */
    int code;                 /* module-specific code (e.g. HTTP status); 0 when unused */
} fhir_error;

/* Clears err (NULL is allowed). */
void fhir_error_clear(fhir_error *err);

/* printf-style; err may be NULL. Always returns -1 so callers can `return fhir_error_set(...)`. */
int fhir_error_set(fhir_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message: "<prefix>: <old message>". Returns -1. */
int fhir_error_prefix(fhir_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
