/* fhir_retry — pure backoff, Retry-After and pacing arithmetic (see fhir_retry.h). */
#include "fhir_retry.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fhir_clock.h"

void fhir_retry_policy_default(fhir_retry_policy *p)
{
    if (!p->max_attempts)
        p->max_attempts = FHIR_RETRY_DEFAULT_ATTEMPTS;
    if (p->base_ms <= 0)
        p->base_ms = FHIR_RETRY_DEFAULT_BASE_MS;
    if (p->cap_ms <= 0)
        p->cap_ms = FHIR_RETRY_DEFAULT_CAP_MS;
    if (p->cap_ms < p->base_ms)
        p->cap_ms = p->base_ms;
    if (p->max_retry_after_ms <= 0)
        p->max_retry_after_ms = FHIR_RETRY_DEFAULT_MAX_RETRY_AFTER_MS;
}

bool fhir_retry_status_transient(long s)
{
    return s == 408 || s == 429 || (s >= 500 && s <= 599);
}

static fhir_retry_policy effective(const fhir_retry_policy *p)
{
    fhir_retry_policy q = {0};
    if (p)
        q = *p;
    fhir_retry_policy_default(&q);
    return q;
}

int64_t fhir_retry_backoff_ms(const fhir_retry_policy *p, unsigned retry, uint64_t rnd)
{
    fhir_retry_policy q = effective(p);
    int64_t ceiling = q.base_ms;
    for (unsigned i = 0; i < retry && ceiling < q.cap_ms; i++)
        ceiling *= 2; /* stops before overflow: cap_ms bounds it */
    if (ceiling > q.cap_ms)
        ceiling = q.cap_ms;
    /* uniform in [0, ceiling] inclusive */
    return (int64_t)(rnd % (uint64_t)(ceiling + 1));
}

int64_t fhir_retry_delay_ms(const fhir_retry_policy *p, unsigned retry, uint64_t rnd,
                            int64_t retry_after_ms)
{
    fhir_retry_policy q = effective(p);
    if (retry_after_ms >= 0)
        return retry_after_ms > q.max_retry_after_ms ? q.max_retry_after_ms : retry_after_ms;
    return fhir_retry_backoff_ms(&q, retry, rnd);
}

/* ---- HTTP-date ------------------------------------------------------------------------ */

static int month_index(const char *m)
{
    static const char *const names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (int i = 0; i < 12; i++)
        if (!strncasecmp(m, names[i], 3))
            return i + 1;
    return 0;
}

static int civil_to_ms(int y, int mon, int d, int hh, int mm, int ss, int64_t *out)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mon < 1 || mon > 12 || d < 1 || d > mdays[mon - 1] || hh < 0 || hh > 23 || mm < 0 ||
        mm > 59 || ss < 0 || ss > 60 || y < 1900 || y > 9999)
        return -1;
    int64_t days = fhir_clock_days_from_civil(y, (unsigned)mon, (unsigned)d);
    *out = ((days * 24 + hh) * 60 + mm) * 60000LL + ss * 1000LL;
    return 0;
}

int fhir_retry_parse_http_date(const char *s, int64_t *ms_out)
{
    char wday[16], mon[4], tz[8];
    int d, y, hh, mm, ss, n = 0;
    if (!s)
        return -1;
    while (*s == ' ' || *s == '\t')
        s++;
    /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    if (sscanf(s, "%15[A-Za-z], %2d %3s %4d %2d:%2d:%2d %7s%n", wday, &d, mon, &y, &hh, &mm,
               &ss, tz, &n) == 8 &&
        !strcmp(tz, "GMT")) {
        int m = month_index(mon);
        if (strlen(wday) == 3 && m && s[n] == '\0')
            return civil_to_ms(y, m, d, hh, mm, ss, ms_out);
        return -1;
    }
    /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
    n = 0;
    if (sscanf(s, "%15[A-Za-z], %2d-%3s-%2d %2d:%2d:%2d %7s%n", wday, &d, mon, &y, &hh, &mm,
               &ss, tz, &n) == 8 &&
        !strcmp(tz, "GMT")) {
        int m = month_index(mon);
        if (!m || s[n] != '\0')
            return -1;
        y += y < 70 ? 2000 : 1900; /* RFC 9110: interpret as within 50 years; coarse rule */
        return civil_to_ms(y, m, d, hh, mm, ss, ms_out);
    }
    /* asctime: Sun Nov  6 08:49:37 1994 */
    n = 0;
    if (sscanf(s, "%3s %3s %d %2d:%2d:%2d %4d%n", wday, mon, &d, &hh, &mm, &ss, &y, &n) == 7) {
        int m = month_index(mon);
        if (!m || s[n] != '\0')
            return -1;
        return civil_to_ms(y, m, d, hh, mm, ss, ms_out);
    }
    return -1;
}

int fhir_retry_parse_retry_after(const char *value, int64_t now_ms, int64_t *delay_ms)
{
    if (!value)
        return -1;
    const char *p = value;
    while (*p == ' ' || *p == '\t')
        p++;
    if (isdigit((unsigned char)*p)) {
        int64_t secs = 0;
        while (isdigit((unsigned char)*p)) {
            if (secs > 100000000) /* absurd; still a valid number, clamp */
                secs = 100000000;
            else
                secs = secs * 10 + (*p - '0');
            p++;
        }
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (*p)
            return -1;
        *delay_ms = secs * 1000;
        return 0;
    }
    char buf[64];
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\r' || p[n - 1] == '\n' || p[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    int64_t at;
    if (fhir_retry_parse_http_date(buf, &at) < 0)
        return -1;
    *delay_ms = at > now_ms ? at - now_ms : 0;
    return 0;
}

/* ---- token bucket --------------------------------------------------------------------- */

void fhir_retry_bucket_init(fhir_retry_bucket *b, double rate_per_s, double burst,
                            int64_t now_ms)
{
    b->rate_per_s = rate_per_s;
    if (burst <= 0)
        burst = rate_per_s > 1 ? rate_per_s : 1;
    if (burst < 1)
        burst = 1;
    b->burst = burst;
    b->tokens = burst;
    b->last_ms = now_ms;
}

int64_t fhir_retry_bucket_take(fhir_retry_bucket *b, int64_t now_ms)
{
    if (b->rate_per_s <= 0)
        return 0;
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * b->rate_per_s / 1000.0;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
        b->last_ms = now_ms;
    }
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 0;
    }
    double need_ms = (1.0 - b->tokens) * 1000.0 / b->rate_per_s;
    int64_t wait = (int64_t)need_ms;
    if ((double)wait < need_ms)
        wait++;
    return wait > 0 ? wait : 1;
}
