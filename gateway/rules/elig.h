/* elig — the eligibility engine: CAR T label criteria as data (conf/criteria, one JSON file
 * per product indication), evaluated with Kleene three-valued logic against a patient's facts
 * (mappings/FACTS.md).
 *
 * Per product indication the verdict is eligible (every hard gate met), possibly_eligible
 * (no gate failed, some unknown: the unknown facts are listed) or not_eligible (a gate failed:
 * it is named). A missing fact is unknown, never false, so missing data can never exclude a
 * patient. Review flags (trial thresholds: ECOG, labs, LVEF ...) are reported but never change
 * a category. Timing rules give the referral urgency and its reason.
 *
 *   fhir_error err;
 *   elig_ruleset *rs = elig_load_dir("conf/criteria", &err);     // once; err = "file:line: ..."
 *   elig_factset *fs = elig_factset_new(rs);                       // reusable per patient
 *   elig_result *r = elig_result_new(rs);                          // reusable per patient
 *   elig_factset_fill(fs, lookup, ud);        // one lookup per fact the criteria use
 *   elig_evaluate(rs, fs, as_of_days, r);     // no allocation, no string lookups
 *   elig_result_write_json(rs, fs, r, "patient-id", &buf);
 *
 * The criteria format and the screen JSON schema are documented in conf/criteria/README.md.
 */
#ifndef ELIG_H
#define ELIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_buf.h"
#include "fhir_error.h"
#include "map_fact.h"

/* Limits of one rule set (a load error names the one exceeded). */
#define ELIG_MAX_FACTS 64        /* distinct facts referenced by all criteria */
#define ELIG_MAX_CODES 63        /* distinct codes referenced per code/set fact */
#define ELIG_MAX_FLAGS 64        /* distinct review-flag ids */
#define ELIG_MAX_INDICATIONS 256
#define ELIG_MAX_FILE_BYTES (1024u * 1024u)

/* Answers a fact by name (FACTS.md); NULL or known == false means unknown. The returned fact
 * is borrowed and must stay valid until the result has been written out. */
typedef const map_fact *(*elig_fact_fn)(void *ud, const char *name);

typedef enum elig_category {
    ELIG_NOT_ELIGIBLE = 0,
    ELIG_POSSIBLY_ELIGIBLE = 1,
    ELIG_ELIGIBLE = 2,
    ELIG_NOT_IN_FORCE = 3, /* indication outside its effective dates at the as-of date */
} elig_category;

typedef enum elig_urgency {
    ELIG_URGENCY_NONE = 0,   /* no candidate indication */
    ELIG_URGENCY_REVIEW,     /* possibly eligible: check the missing facts */
    ELIG_URGENCY_SOON,       /* eligible, no timing trigger: refer at the next visit */
    ELIG_URGENCY_NOW,        /* a timing trigger fired: refer before the next line starts */
} elig_urgency;

/* Refer-early recommendation of the consult files (conf/criteria/consult_*.json), independent
 * of the label verdicts: refer for a CAR T consultation now, consult early, or nothing. */
typedef enum elig_consult {
    ELIG_CONSULT_NONE = 0,
    ELIG_CONSULT_EARLY = 1,
    ELIG_CONSULT_NOW = 2,
} elig_consult;

/* Static strings: "none", "early_consult", "refer_now". */
const char *elig_consult_name(elig_consult c);

/* Static strings: "eligible", "possibly_eligible", "not_eligible", "not_in_force". */
const char *elig_category_name(elig_category c);
/* Static strings: "none", "review", "soon", "now". */
const char *elig_urgency_name(elig_urgency u);

/* ---- loading ---------------------------------------------------------------------------- */

typedef struct elig_ruleset elig_ruleset;

/* One criteria file in memory (name is used in errors, in the hash and for sorting). */
typedef struct elig_source {
    const char *name;
    const char *data;
    size_t len;
} elig_source;

/* Loads every *.json file in dir (not recursive); "params.json" declares the parameters.
 * Every file is validated (JSON syntax, keys, fact names and types via the fact vocabulary,
 * operators, code values, sources, dates); the first error is returned as
 * "<path>:<line>: <what>". Caller frees with elig_ruleset_free(). NULL on error. */
elig_ruleset *elig_load_dir(const char *dir, fhir_error *err);
/* Same from buffers (tests). Names ending in "params.json" are parameter files. */
elig_ruleset *elig_load_sources(const elig_source *src, size_t n, fhir_error *err);
void elig_ruleset_free(elig_ruleset *rs);

/* Overrides a parameter declared in params.json ("lbcl_1l_anchor" = "start"). Changes the hash.
 * Returns 0, or -1 with err set (unknown parameter, value not allowed). */
int elig_ruleset_set_param(elig_ruleset *rs, const char *name, const char *value,
                           fhir_error *err);

/* Current value of a parameter as text ("end", "12"); NULL when not declared. The text is
 * valid until the next elig_ruleset_set_param() or elig_ruleset_free(). */
const char *elig_ruleset_param(const elig_ruleset *rs, const char *name);

/* "sha256:<64 hex>" over the sorted file names and contents plus parameter overrides.
 * Borrowed from rs. */
const char *elig_ruleset_hash(const elig_ruleset *rs);

/* Pending products ("status": "pending" in their criteria file: label not verified yet) are
 * not in force. Enabling one by configuration, once its label is verified, makes it count like
 * any other indication and changes the hash. Returns 0, or -1 with err (unknown key, not
 * pending). */
int elig_ruleset_enable_pending(elig_ruleset *rs, const char *key, fhir_error *err);
/* With show set, pending indications that are not enabled are evaluated too, into the
 * result's pending categories (elig_result_pending_category, the "pending" lists of the JSON);
 * they never change the category, flags, urgency or consult. */
void elig_ruleset_show_pending(elig_ruleset *rs, bool show);
/* Is indication i pending and not enabled? */
bool elig_ruleset_is_pending(const elig_ruleset *rs, size_t i);
/* Key of consult file i ("consult:LBCL") and its count; borrowed from rs. */
size_t elig_ruleset_consult_count(const elig_ruleset *rs);

/* Indications, sorted by key ("axi-cel:LBCL-2L"). Strings borrowed from rs. */
size_t elig_ruleset_count(const elig_ruleset *rs);
const char *elig_ruleset_key(const elig_ruleset *rs, size_t i);
/* The product and label of indication i, as its criteria file cites them (strings borrowed
 * from rs; any may be NULL when the file does not say). */
typedef struct elig_label {
    const char *product, *indication; /* "axi-cel", "LBCL-2L" */
    const char *generic, *brand;      /* "axicabtagene ciloleucel", "Yescarta" */
    const char *document, *revision, *url; /* the label: "Yescarta ... US Prescribing Information ...", "2026-02", DailyMed */
} elig_label;
/* 0, or -1 when i is out of range. */
int elig_ruleset_label(const elig_ruleset *rs, size_t i, elig_label *out);
/* Index of an indication key, or -1. */
int elig_ruleset_find(const elig_ruleset *rs, const char *key);

/* ---- indications as people read them ------------------------------------------------------ */

#define ELIG_SHORT_MAX 100u /* bytes of an indication's "short" label (criteria file) */

/* One indication in the words of the pages, the referral and the notifications: the product
 * by brand and key and the indication in a few plain words (indication.short of its criteria
 * file, else its description). Strings borrowed from rs or from the key asked for. */
typedef struct elig_display {
    const char *product; /* "axi-cel"; an unknown key: the key itself */
    const char *brand;   /* "Yescarta"; NULL when not known */
    const char *generic; /* "axicabtagene ciloleucel"; NULL when not known */
    const char *text;    /* "large B-cell lymphoma, third line or later"; unknown: the key */
    bool known;          /* the key is an indication of rs */
} elig_display;
/* The display pieces of key ("axi-cel:LBCL-3L"). NULL-safe: with rs NULL or a key rs does not
 * define, product and text are the key itself (nothing is lost), brand and generic NULL;
 * key NULL gives "". Returns out->known. */
bool elig_display_of(const elig_ruleset *rs, const char *key, elig_display *out);
/* d's product as people read it: "Yescarta (axi-cel)"; a brand that already starts with the
 * product key stands alone; no brand: the key. Not escaped. */
void elig_display_write_product(const elig_display *d, fhir_buf *out);
/* Indication keys as one line of plain text, grouped by product in the order given:
 * "Breyanzi (liso-cel): large B-cell lymphoma, second line; large B-cell lymphoma, second
 * line, transplant-ineligible"; products whose indications read alike share them
 * ("Yescarta (axi-cel), Breyanzi (liso-cel): large B-cell lymphoma, third line or later");
 * groups are separated by " · "; unknown keys are written as they are; repeated keys once.
 * Not escaped (HTML callers escape it). Returns 0, or -1 when out's cap is hit. */
int elig_display_write(const elig_ruleset *rs, const char *const *keys, size_t n, fhir_buf *out);
/* Same for keys joined by ',' ("axi-cel:LBCL-3L,liso-cel:LBCL-3L", as referrals store them). */
int elig_display_write_joined(const elig_ruleset *rs, const char *joined, fhir_buf *out);

/* Facts the criteria reference, sorted by name (borrowed). */
size_t elig_ruleset_fact_count(const elig_ruleset *rs);
const char *elig_ruleset_fact_name(const elig_ruleset *rs, size_t i, map_fact_type *type);

/* ---- facts ------------------------------------------------------------------------------ */

/* A patient's facts compiled against a rule set (numbers, bools and code bit masks indexed
 * like the rule set's facts). Caller frees with elig_factset_free(); valid while rs is. */
typedef struct elig_factset elig_factset;
elig_factset *elig_factset_new(const elig_ruleset *rs);
void elig_factset_free(elig_factset *fs);
/* Asks fn once per referenced fact. The map_fact pointers are kept (borrowed) for
 * explanations. A fact whose type differs from the vocabulary is treated as unknown. */
void elig_factset_fill(elig_factset *fs, elig_fact_fn fn, void *ud);
/* Marks every fact unknown. */
void elig_factset_clear(elig_factset *fs);
/* Sets one fact (f borrowed; NULL = unknown). Returns -1 when name is not referenced by the
 * criteria (nothing to set) or the type differs, else 0. */
int elig_factset_set(elig_factset *fs, const char *name, const map_fact *f);

/* ---- the clinical profile as fact source -------------------------------------------------- */

struct map_profile;
struct map_profile_opts;

/* Lookup over a clinical profile (mappings/map_profile.h) for elig_factset_fill(): the
 * profile's facts, plus the anchor-specific LBCL relapse interval
 * (relapse_months_after_1l_start / _end) answered from the profile's own interval when the
 * profile does not publish it. Fill with elig_profile_source_init(); p is borrowed. */
typedef struct elig_profile_source {
    const struct map_profile *p;
    char anchor[8];        /* "start" | "end": the anchor the profile was built with */
} elig_profile_source;

/* Sets o->relapse_anchor_end from the criteria parameter lbcl_1l_anchor ("end" -> 1,
 * "start" -> 0, "profile" leaves o as it is), so the profile and the criteria agree. */
void elig_profile_opts_apply(const elig_ruleset *rs, struct map_profile_opts *o);
/* Call after elig_profile_opts_apply(), with the options the profile was built with. */
void elig_profile_source_init(elig_profile_source *s, const struct map_profile *p,
                              const struct map_profile_opts *o);
/* An elig_fact_fn: ud is an elig_profile_source. */
const map_fact *elig_profile_fact(void *ud, const char *name);
/* elig_factset_fill(fs, elig_profile_fact, s), with each criteria fact's place in the profile
 * looked up once per factset instead of by name for every patient. */
void elig_factset_fill_profile(elig_factset *fs, elig_profile_source *s);

/* ---- evaluation ------------------------------------------------------------------------- */

typedef struct elig_result elig_result;
/* Caller frees with elig_result_free(); valid while rs is. */
elig_result *elig_result_new(const elig_ruleset *rs);
void elig_result_free(elig_result *r);

/* Evaluates every indication in force at as_of_days (days since the epoch, fhir_clock) into
 * r. Does not allocate. */
void elig_evaluate(const elig_ruleset *rs, const elig_factset *fs, int64_t as_of_days,
                   elig_result *r);

/* How much of the patient's chart the facts were made from: read of the cached records
 * (the daemon reads at most its per-patient cap, gateway/daemon/daemon.h). */
typedef struct elig_records {
    uint64_t read, cached;
} elig_records;
/* Marks r, after elig_evaluate, as made from rec->read of rec->cached records; nothing when
 * read >= cached (or rec is NULL). A partial result's explanation says so first ("Only the
 * first N of M records in this chart were read; the verdict may miss facts.") and its JSON
 * carries "partial":{"read","cached"}. elig_evaluate clears the mark. */
void elig_result_set_records(elig_result *r, const elig_records *rec);
/* Was r made from part of the chart (elig_result_set_records)? out (may be NULL) gets the
 * counts (0, 0 when not partial). */
bool elig_result_partial(const elig_result *r, elig_records *out);

/* Best category over the indications in force. */
elig_category elig_result_category(const elig_result *r);
/* Category of indication i (rule-set order). */
elig_category elig_result_ind_category(const elig_result *r, size_t i);
/* Plain-words label of the hard gate indication i failed (NULL unless not_eligible). */
const char *elig_result_ind_failed(const elig_ruleset *rs, const elig_result *r, size_t i);
/* Does indication i (in force) cover the patient's disease: its disease gate did not fail
 * (eligible, possibly eligible, or not eligible on another gate)? */
bool elig_result_ind_disease_matches(const elig_ruleset *rs, const elig_result *r, size_t i);
/* Facts the failed gate of not_eligible indication i tests (bit k = fact k of the rule set,
 * the order of elig_ruleset_fact_index); 0 unless not_eligible. */
uint64_t elig_result_ind_failed_facts(const elig_ruleset *rs, const elig_result *r, size_t i);
/* Index (bit position) of fact name in the rule set's facts, or -1 when the criteria do not
 * reference it. */
int elig_ruleset_fact_index(const elig_ruleset *rs, const char *name);
/* Unknown facts that keep indication i from a decision (bit i of the rule set's fact order). */
uint64_t elig_result_ind_missing(const elig_result *r, size_t i);
/* Patient-level: what is missing over possibly-eligible indications, sorted and distinct:
 * fact names, or the name a partly known fact gives its unknown part ("lineage") when fs
 * (may be NULL) says so. Returns how many (writes at most max names, borrowed from rs / the
 * facts). */
size_t elig_result_missing(const elig_ruleset *rs, const elig_factset *fs, const elig_result *r,
                           const char **names, size_t max);
/* Records to request: for each missing fact, in plain words, what would settle it (the
 * fact's `settle` text); distinct, in fact-name order. Borrowed from the facts. */
size_t elig_result_to_request(const elig_ruleset *rs, const elig_factset *fs, const elig_result *r,
                              const char **texts, size_t max);
/* Patient-level review flag ids raised by eligible / possibly eligible indications, sorted. */
size_t elig_result_flags(const elig_ruleset *rs, const elig_result *r, const char **ids,
                         size_t max);
/* Patient-level note ids (not threshold breaches: "no_prior_btki", "hct_refusal" ...) raised
 * by eligible / possibly eligible indications, sorted. */
size_t elig_result_notes(const elig_ruleset *rs, const elig_result *r, const char **ids,
                         size_t max);
/* Refer-early recommendation (highest over the raised triggers) and the raised triggers in
 * rule-set order: ids and reasons (borrowed from rs). Returns how many were raised. */
elig_consult elig_result_consult(const elig_result *r);
size_t elig_result_consult_triggers(const elig_ruleset *rs, const elig_result *r, const char **ids,
                                    const char **reasons, size_t max);
/* Category pending indication i would have (elig_ruleset_show_pending); ELIG_NOT_IN_FORCE for
 * indications that are not pending or when pending ones are not shown. */
elig_category elig_result_pending_category(const elig_result *r, size_t i);
elig_urgency elig_result_urgency(const elig_result *r);
/* Reason for the urgency (borrowed from rs; static text for the defaults). */
const char *elig_result_urgency_reason(const elig_ruleset *rs, const elig_result *r);

/* Clinical words for a fact, disease or therapy-class key ("tfl" -> "large B-cell lymphoma
 * transformed from follicular lymphoma"); the key itself when it has none. Static string. */
const char *elig_words(const char *key);

/* ---- one indication, gate by gate (the clinician's page) ---------------------------------- */

typedef enum elig_gate_state {
    ELIG_GATE_FAILED = 0,
    ELIG_GATE_UNKNOWN = 1,
    ELIG_GATE_MET = 2,
} elig_gate_state;
/* One hard gate: its plain-words label, its state and the facts that decided it with their
 * evidence (resources, dates, values) in plain words; all borrowed for the call. */
typedef void (*elig_gate_fn)(void *ud, const char *label, elig_gate_state state, const char *facts);
/* Calls fn for every hard gate of indication i that applied (in criteria order), as the
 * explanation words them, evidence included. Returns how many. */
size_t elig_result_gates(const elig_ruleset *rs, const elig_factset *fs, const elig_result *r, size_t i,
                         elig_gate_fn fn, void *ud);
/* What indication i covers, in the words of its criteria file (borrowed from rs; NULL when i
 * is out of range). */
const char *elig_ruleset_description(const elig_ruleset *rs, size_t i);

/* One JSON object (one line, no trailing newline), schema in conf/criteria/README.md:
 * {"patient","category","products","possible_products","missing","review_flags","notes",
 *  "consult":{"recommendation","triggers","reasons"},["pending":{...}],"urgency",
 *  "explanation","to_request","provenance","ruleset"}. Explanations are plain words with the
 * label citation; resource ids, table rows and criteria files are in "provenance".
 * Deterministic. Returns 0, or -1 when out's cap is hit. */
int elig_result_write_json(const elig_ruleset *rs, const elig_factset *fs,
                           const elig_result *r, const char *patient_id, fhir_buf *out);
/* The same object without "provenance" (criteria files, our references, table rows: for
 * developers, printed by `cartgate screen`): the verdict as the daemon stores it and its API,
 * pages and cards read it. Its other members are byte for byte elig_result_write_json's.
 * Returns 0, or -1 when out's cap is hit. */
int elig_result_write_verdict_json(const elig_ruleset *rs, const elig_factset *fs,
                                   const elig_result *r, const char *patient_id, fhir_buf *out);
/* The keys of the indications whose category is want, in rule-set order, as the JSON array
 * elig_result_write_json writes ("products": ELIG_ELIGIBLE, "possible_products":
 * ELIG_POSSIBLY_ELIGIBLE). Returns 0, or -1 when out's cap is hit. */
int elig_result_write_products(const elig_ruleset *rs, const elig_result *r, elig_category want,
                               fhir_buf *out);
/* A fact's evidence in the words the explanation uses (appended to out): without the groups
 * citing our tables or documents, without record references ("Observation/o1"), codes' concepts
 * named. For pages that show evidence; out should be capped (ELIG_WORDS_MAX). */
#define ELIG_WORDS_MAX (64u << 10)
void elig_plain_words(fhir_buf *out, const char *evidence);
/* Human-readable explanation lines (one per relevant indication), each ending in '\n'. */
int elig_result_write_explanation(const elig_ruleset *rs, const elig_factset *fs,
                                  const elig_result *r, fhir_buf *out);
/* One line of words, borrowed for the call (len bytes, NUL-terminated). */
typedef void (*elig_line_fn)(void *ud, const char *line, size_t len);
/* Calls fn with each explanation line in order: the lines elig_result_write_json's
 * "explanation" holds and elig_result_write_explanation writes (without its indent and
 * newline), from one pass (a caller needing both makes them from these). */
void elig_result_each_line(const elig_ruleset *rs, const elig_factset *fs, const elig_result *r,
                           elig_line_fn fn, void *ud);
/* Calls fn with each raised refer-early trigger in rule-set order, worded as
 * elig_result_write_json's "consult.reasons": "refer_now: <reason> (<source>)". */
void elig_result_each_consult_reason(const elig_ruleset *rs, const elig_result *r, elig_line_fn fn,
                                     void *ud);

#endif
