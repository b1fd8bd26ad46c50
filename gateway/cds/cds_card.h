/* cds_card — the CDS Hooks card for one screened patient (CDS Hooks 2.0 card shape, compatible
 * with the 3.0 ballot): made only when the one screening path (screen.h) found the patient
 * eligible or possibly eligible for a label indication in force, or a refer-early consult
 * recommendation (no card for "not eligible": no alert fatigue).
 *
 *   uuid         stable per patient and verdict: a name-based UUID (SHA-256 of the patient id,
 *                the category, the indications that count and the consult recommendation), so
 *                the same verdict shows the same card and a changed verdict a new one
 *   summary      < 140 characters, plain words: "Eligible for CAR T (Yescarta, Breyanzi ·
 *                LBCL-2L) — refer now"
 *   indicator    warning when the timing says refer now (urgency now, or consult refer_now),
 *                info otherwise
 *   detail       Markdown: per indication that counts, its label and the gates met (the
 *                explanation's plain words with the label citation); what is missing and the
 *                records to request; review flags (never blocking); the consult reasons
 *   source       the FDA label of the first indication that counts: label text and DailyMed URL
 *   suggestions  one, "Propose a CAR T referral": action create of a draft ServiceRequest with
 *                intent proposal for the clinician to sign (selectionBehavior at-most-one)
 *   links        absolute and smart, both to <public_url>/ui/patients/<id> (the smart link
 *                with appContext naming the patient and the card)
 * Optional fields are omitted, never null or empty. */
#ifndef CDS_CARD_H
#define CDS_CARD_H

#include <stdbool.h>
#include <stddef.h>

#include "elig.h"
#include "fhir_buf.h"

#define CDS_CARD_SUMMARY_MAX 139  /* characters (bytes: the summary is ASCII but for "·" and "—") */
#define CDS_CARD_MAX_BYTES (256u * 1024u)
#define CDS_CARD_UUID_LEN 37      /* 36 + NUL */

/* What a card is made of; everything borrowed for the call. */
typedef struct cds_card_input {
    const elig_ruleset *rules;
    const elig_factset *facts;
    const elig_result *result;
    const char *patient_id;
    const char *public_url;    /* https://host[:port], no trailing slash */
} cds_card_input;

/* Does the verdict call for a card? (eligible, possibly eligible, or a consult
 * recommendation) */
bool cds_card_wanted(const elig_ruleset *rs, const elig_result *r);
/* The card's uuid (CDS_CARD_UUID_LEN bytes) for the patient and verdict. */
void cds_card_uuid(const cds_card_input *in, char out[CDS_CARD_UUID_LEN]);
/* Appends the card as one JSON object to out and its uuid to uuid (may be NULL). 0; 1 when
 * the verdict calls for no card (nothing written); -1 when out's cap is hit. */
int cds_card_write(const cds_card_input *in, fhir_buf *out, char uuid[CDS_CARD_UUID_LEN]);
/* The summary alone (NUL-terminated, at most CDS_CARD_SUMMARY_MAX characters), for tests. */
void cds_card_summary(const cds_card_input *in, char *out, size_t n);

#endif
