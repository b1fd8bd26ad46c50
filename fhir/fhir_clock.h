/* fhir_clock — the one injectable clock. All "now" reads in cartgate go through here so
 * tests (ages, lookback windows, token expiry, backoff schedules) are deterministic. */
#ifndef FHIR_CLOCK_H
#define FHIR_CLOCK_H

#include <stdint.h>

/* Wall-clock now in milliseconds since the Unix epoch. */
int64_t fhir_clock_now_ms(void);
/* Seconds since the epoch (fhir_clock_now_ms()/1000). */
int64_t fhir_clock_now(void);
/* Monotonic milliseconds (for timeouts/durations). */
int64_t fhir_clock_mono_ms(void);

/* Tests: pin wall and monotonic time at now_ms (both then advance only via advance()).
 * fhir_clock_set_fixed(-1) returns to the system clock. */
void fhir_clock_set_fixed(int64_t now_ms);
void fhir_clock_advance(int64_t ms);

/* Civil date helpers (UTC, proleptic Gregorian). days_from_civil(1970,1,1) == 0. */
int64_t fhir_clock_days_from_civil(int y, unsigned m, unsigned d);
void fhir_clock_civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d);
/* Parses a FHIR date/dateTime/instant ("2024", "2024-05", "2024-05-17",
 * "2024-05-17T10:00:00+02:00") to days since epoch (UTC date of the instant; partial dates
 * take the first day). Returns 0 on success, -1 when malformed. */
int fhir_clock_parse_date(const char *s, int64_t *days_out);
/* The one strict date parser (configuration, criteria, centers, command lines): exactly
 * "YYYY-MM-DD" (four digits, '-', two digits, '-', two digits, a day that exists) to days
 * since the epoch. No partial dates, times, signs or spaces. Returns 0, or -1 (s may be NULL). */
int fhir_clock_parse_ymd(const char *s, int64_t *days_out);
/* Parses an instant/dateTime with time to ms since epoch; date-only gives midnight UTC. */
int fhir_clock_parse_instant(const char *s, int64_t *ms_out);
/* Formats ms since epoch as "YYYY-MM-DDThh:mm:ss.sssZ" into out (>= 32 bytes). */
void fhir_clock_format_instant(int64_t ms, char *out, unsigned outlen);

#endif
