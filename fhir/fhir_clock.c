/* fhir_clock — the one injectable clock and civil-date helpers.
 * Date algorithms after H. Hinnant's public-domain "chrono-compatible low-level date
 * algorithms" (days_from_civil / civil_from_days). */
#include "fhir_clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t fixed_ms = -1;

int64_t fhir_clock_now_ms(void)
{
    if (fixed_ms >= 0)
        return fixed_ms;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t fhir_clock_now(void) { return fhir_clock_now_ms() / 1000; }

int64_t fhir_clock_mono_ms(void)
{
    if (fixed_ms >= 0)
        return fixed_ms;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fhir_clock_set_fixed(int64_t now_ms) { fixed_ms = now_ms < 0 ? -1 : now_ms; }

void fhir_clock_advance(int64_t ms)
{
    if (fixed_ms >= 0)
        fixed_ms += ms;
}

int64_t fhir_clock_days_from_civil(int y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void fhir_clock_civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t yy = (int64_t)yoe + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yy + (*m <= 2));
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') /* isdigit's set in every locale, without its table */
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return dm[m - 1];
}

/* Parses the FHIR date/dateTime/instant grammar; fills ms since epoch (UTC). */
static int parse_full(const char *s, int64_t *ms_out)
{
    int y, mo = 1, d = 1, hh = 0, mi = 0, ss = 0, frac_ms = 0, off_min = 0;
    if (digits(s, 4, &y) < 0) /* stops at the NUL of a shorter text */
        return -1;
    const char *p = s + 4;
    if (*p == '-') {
        if (digits(p + 1, 2, &mo) < 0 || mo < 1 || mo > 12)
            return -1;
        p += 3;
        if (*p == '-') {
            if (digits(p + 1, 2, &d) < 0 || d < 1 || d > days_in_month(y, mo))
                return -1;
            p += 3;
            if (*p == 'T') {
                if (digits(p + 1, 2, &hh) < 0 || p[3] != ':' || digits(p + 4, 2, &mi) < 0)
                    return -1;
                p += 6;
                if (*p == ':') {
                    if (digits(p + 1, 2, &ss) < 0)
                        return -1;
                    p += 3;
                    if (*p == '.') {
                        p++;
                        int k = 0, v = 0;
                        while (*p >= '0' && *p <= '9') {
                            if (k < 3)
                                v = v * 10 + (*p - '0');
                            k++;
                            p++;
                        }
                        if (k == 0)
                            return -1;
                        while (k < 3) {
                            v *= 10;
                            k++;
                        }
                        frac_ms = v;
                    }
                }
                if (hh > 24 || mi > 59 || ss > 60)
                    return -1;
                if (*p == 'Z') {
                    p++;
                } else if (*p == '+' || *p == '-') {
                    int oh, om;
                    if (digits(p + 1, 2, &oh) < 0 || p[3] != ':' || digits(p + 4, 2, &om) < 0)
                        return -1;
                    off_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
                    p += 6;
                }
            }
        }
    }
    if (*p != '\0')
        return -1;
    int64_t days = fhir_clock_days_from_civil(y, (unsigned)mo, (unsigned)d);
    int64_t secs = days * 86400 + hh * 3600 + mi * 60 + ss - (int64_t)off_min * 60;
    *ms_out = secs * 1000 + frac_ms;
    return 0;
}

int fhir_clock_parse_date(const char *s, int64_t *days_out)
{
    int64_t ms;
    if (!s || parse_full(s, &ms) < 0)
        return -1;
    /* floor division for dates before 1970 */
    int64_t secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    *days_out = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    return 0;
}

int fhir_clock_parse_ymd(const char *s, int64_t *days_out)
{
    int y, m, d;
    if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-' || digits(s, 4, &y) < 0 ||
        digits(s + 5, 2, &m) < 0 || digits(s + 8, 2, &d) < 0 || m < 1 || m > 12 || d < 1 ||
        d > days_in_month(y, m))
        return -1;
    *days_out = fhir_clock_days_from_civil(y, (unsigned)m, (unsigned)d);
    return 0;
}

int fhir_clock_parse_instant(const char *s, int64_t *ms_out)
{
    if (!s)
        return -1;
    return parse_full(s, ms_out);
}

void fhir_clock_format_instant(int64_t ms, char *out, unsigned outlen)
{
    int64_t secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    int msr = (int)(ms - secs * 1000);
    int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    int64_t rem = secs - days * 86400;
    int y;
    unsigned m, d;
    fhir_clock_civil_from_days(days, &y, &m, &d);
    snprintf(out, outlen, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", y, m, d, (int)(rem / 3600),
             (int)(rem % 3600 / 60), (int)(rem % 60), msr);
}
