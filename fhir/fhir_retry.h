/* fhir_retry — pure retry decisions for the HTTP client: which failures are transient,
 * capped exponential backoff with full jitter, Retry-After parsing (delta-seconds, or an
 * HTTP-date read by libcurl), and a token bucket for request pacing. Nothing here reads a clock or a random
 * source: callers pass "now" and the random draw, so every schedule is reproducible. */
#ifndef FHIR_RETRY_H
#define FHIR_RETRY_H

#include <stdbool.h>
#include <stdint.h>

typedef struct fhir_retry_policy {
    unsigned max_attempts;      /* total attempts including the first; 0 = default (5) */
    int64_t base_ms;            /* first backoff ceiling; 0 = default (500 ms) */
    int64_t cap_ms;             /* largest backoff ceiling; 0 = default (30 s) */
    int64_t max_retry_after_ms; /* longest Retry-After honoured; 0 = default (300 s) */
} fhir_retry_policy;

#define FHIR_RETRY_DEFAULT_ATTEMPTS 5u
#define FHIR_RETRY_DEFAULT_BASE_MS 500
#define FHIR_RETRY_DEFAULT_CAP_MS 30000
#define FHIR_RETRY_DEFAULT_MAX_RETRY_AFTER_MS 300000

/* Fills zero fields of *p with the defaults. */
void fhir_retry_policy_default(fhir_retry_policy *p);

/* True for HTTP statuses worth retrying: 408, 429 and every 5xx. Other 4xx are permanent;
 * 1xx-3xx are not failures. */
bool fhir_retry_status_transient(long http_status);

/* Full-jitter backoff before retry number `retry` (0 = the wait after the first failed
 * attempt): uniform in [0, min(cap, base * 2^retry)] using the 64-bit random draw rnd. */
int64_t fhir_retry_backoff_ms(const fhir_retry_policy *p, unsigned retry, uint64_t rnd);

/* Parses a Retry-After header value: delta-seconds ("120") or an HTTP-date, relative to
 * now_ms (ms since the epoch, from fhir_clock). A date in the past gives 0. Returns 0 with
 * *delay_ms set, or -1 when the value is malformed. */
int fhir_retry_parse_retry_after(const char *value, int64_t now_ms, int64_t *delay_ms);

/* Parses an HTTP-date to ms since the epoch with libcurl's curl_getdate(): the three RFC 9110
 * forms (IMF-fixdate, RFC 850, asctime) and the looser forms curl accepts (other zones,
 * out-of-range days rolled over). A lenient reading only changes how long a retry waits, and
 * that wait is capped by max_retry_after_ms. Returns 0, or -1 when curl cannot read it. */
int fhir_retry_parse_http_date(const char *s, int64_t *ms_out);

/* Chooses the wait before retry number `retry`: the server's Retry-After when given
 * (retry_after_ms >= 0, capped at max_retry_after_ms), else the jittered backoff. */
int64_t fhir_retry_delay_ms(const fhir_retry_policy *p, unsigned retry, uint64_t rnd,
                            int64_t retry_after_ms);

/* Token bucket: at most rate_per_s requests per second on average, bursts up to burst. */
typedef struct fhir_retry_bucket {
    double rate_per_s; /* <= 0: unlimited */
    double burst;      /* bucket size (>= 1) */
    double tokens;
    int64_t last_ms;   /* time of the last refill */
} fhir_retry_bucket;

/* burst <= 0 means max(1, rate_per_s). The bucket starts full at now_ms. */
void fhir_retry_bucket_init(fhir_retry_bucket *b, double rate_per_s, double burst,
                            int64_t now_ms);
/* Takes one token at now_ms and returns 0, or returns the ms to wait until one is
 * available (nothing taken). Unlimited buckets always return 0. */
int64_t fhir_retry_bucket_take(fhir_retry_bucket *b, int64_t now_ms);

#endif
