/* screen — one patient's screening: FHIR resources -> clinical profile (mappings/) -> verdict
 * (elig) -> screen JSON. The only screening path: the daemon, `cartgate screen` and any later
 * caller (CDS Hooks) go through it, so the profile options, the 1L anchor the criteria ask for
 * and "which indications count" are decided here once.
 *
 *   map_profile_opts o; map_profile_opts_default(&o); o.as_of_days = ...;
 *   screen *s = screen_new(tables, rules, &o);      // reusable for many patients
 *   screen_patient(s, res, n, &err);                 // replaces the previous patient
 *   elig_result_category(screen_result(s));
 *   screen_write_json(s, "patient-id", &buf);
 *   screen_free(s);
 */
#ifndef SCREEN_H
#define SCREEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "elig.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "fhir_node.h"
#include "map_profile.h"

typedef struct screen screen;

/* t and rs are borrowed and must outlive the screen. o: the profile options (NULL = defaults,
 * as of today by fhir_clock); the screen applies the criteria's lbcl_1l_anchor to its copy,
 * so the profile and the criteria agree. Caller frees with screen_free(). */
screen *screen_new(const map_tables *t, const elig_ruleset *rs, const map_profile_opts *o);
void screen_free(screen *s);

/* Screens one patient from that patient's resources (borrowed during the call only: the
 * profile copies what it keeps). Frees the previous patient's profile first. Returns 0, or
 * -1 with err set (no Patient and no subject reference among the resources). */
int screen_patient(screen *s, const fhir_node *const *res, size_t n, fhir_error *err);

/* Marks the last screened patient's result as made from rec->read of the rec->cached records
 * of the chart (elig_result_set_records: the explanation and the JSON say so); nothing when
 * all were read. Call after screen_patient(); the next one clears it. */
void screen_set_records(screen *s, const elig_records *rec);

/* The last screened patient's profile, facts and result; borrowed until the next
 * screen_patient() or screen_free(). NULL before the first successful screen_patient(). */
const map_profile *screen_profile(const screen *s);
const elig_factset *screen_facts(const screen *s);
const elig_result *screen_result(const screen *s);
/* The options the profile was built with (as of date, anchor). Borrowed from s. */
const map_profile_opts *screen_opts(const screen *s);

/* The last patient's verdict as one line of screen JSON (conf/criteria/README.md) appended to
 * out under patient_id. Returns 0, or -1 when out's cap is hit (or nothing was screened). */
int screen_write_json(const screen *s, const char *patient_id, fhir_buf *out);
/* The same without the developers' "provenance" (elig_result_write_verdict_json): the verdict
 * as stored. Returns 0, or -1 when out's cap is hit (or nothing was screened). */
int screen_write_verdict_json(const screen *s, const char *patient_id, fhir_buf *out);

/* The last patient's values the clinician's worklist is made of, typed as the patient's screen
 * JSON and profile JSON carry them: the urgency and consult recommendation names, the primary
 * disease (NULL: unknown), the latest progression or relapse documented (relapse_day "":
 * none), how many facts "missing" lists, and the "products" / "possible_products" arrays as
 * the screen JSON writes them (appended to products and possible, the caller's buffers).
 * Strings borrowed until the next screen_patient(). Returns 0; -1 when nothing was screened,
 * a buffer's cap is hit, or the primary disease is not a plain code (then read the JSON). */
typedef struct screen_summary {
    const char *urgency, *consult, *disease;
    char relapse_day[16];
    size_t missing;
} screen_summary;
int screen_summarize(const screen *s, screen_summary *out, fhir_buf *products, fhir_buf *possible);

/* Which indications count for a verdict: when the patient is eligible, the indications it is
 * eligible for; otherwise, with with_possible, the possibly eligible ones; else none. Writes
 * at most max rule-set indices (elig_ruleset_key) into idx in rule-set order and returns how
 * many count. */
size_t screen_indications(const elig_ruleset *rs, const elig_result *r, bool with_possible,
                          size_t *idx, size_t max);

/* When a refer-early recommendation alone makes a referral proposal (daemon configuration
 * referral.consult_proposals): the indications in force whose disease the patient has, in
 * rule-set order (at most max indices into idx); returns how many. */
size_t screen_consult_indications(const elig_ruleset *rs, const elig_result *r, size_t *idx,
                                  size_t max);

#endif
