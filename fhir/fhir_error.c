/* fhir_error — see fhir_error.h. */
#include "fhir_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void fhir_error_clear(fhir_error *err)
{
    if (err) {
        err->msg[0] = '\0';
        err->code = 0;
    }
}

int fhir_error_set(fhir_error *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int fhir_error_prefix(fhir_error *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char old[FHIR_ERROR_MAX];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n < 0 || !old[0])
        return -1;
    /* append ": <old>" by hand, truncating silently (snprintf would warn on truncation) */
    size_t o = (size_t)n < sizeof err->msg ? (size_t)n : sizeof err->msg - 1;
    const char *parts[2] = {": ", old};
    for (int k = 0; k < 2; k++)
        for (const char *q = parts[k]; *q && o + 1 < sizeof err->msg; q++)
            err->msg[o++] = *q;
    err->msg[o] = '\0';
    return -1;
}
