/* fhir_retry — pure backoff, Retry-After and pacing arithmetic (see fhir_retry.h). */
#include "fhir_retry.h"

#include <ctype.h>
#include <time.h>

#include <curl/curl.h>

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

int fhir_retry_parse_http_date(const char *s, int64_t *ms_out)
{
    if (!s)
        return -1;
    time_t t = curl_getdate(s, NULL);
    if (t == (time_t)-1)
        return -1;
    *ms_out = (int64_t)t * 1000;
    return 0;
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
    int64_t at;
    if (fhir_retry_parse_http_date(p, &at) < 0)
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
