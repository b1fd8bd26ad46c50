/* bser — the referral package: a FHIR R4 transaction Bundle shaped after HL7 BSeR
 * (shared/reference/fhir.md §1.2, §1.5).
 *
 * Entries, each a conditional create (request.ifNoneExist = "identifier=system|value" on an
 * identifier the Bundle itself carries, so a resend never duplicates anything):
 *   Organization (referring site) · PractitionerRole (referring clinician, requester, when
 *   known) · Organization (center, performer/owner) ·
 *   Patient (minimum necessary: identifier, name, telecom, gender, birthDate, address) ·
 *   Coverage* · Condition (diagnosis) · Observation* · Medication* (the drugs the medication
 *   history references, each once) · Medication{Request,Statement,Administration}* (medication
 *   history) · DocumentReference (eligibility summary: readable
 *   text, the JSON verdict, and the referral packet as its document and HTML, as base64
 *   attachments) · ServiceRequest (placer identifier type
 *   v2-0203#PLAC, status active, intent order, code SNOMED 3457005 "Patient referral" as in
 *   BSeR's example, reasonCode.text, reasonReference, priority from urgency, requester,
 *   performer = center, insurance, supportingInfo) · Task (code task-code#fulfill, focus =
 *   the ServiceRequest, for = Patient, owner = center, status requested, intent order,
 *   businessStatus 2.0 "Service Request Created").
 *
 * Copied EHR resources lose id, meta, text (narrative) and contained resources — except the
 * contained Medication a medication row names by "#id", which stays contained (without its
 * meta and narrative) so the row keeps its drug; references to the patient point at the
 * Bundle's Patient, a medication row's medicationReference "Medication/<id>" (or an absolute
 * URL ending so) at the Bundle's copy of that Medication when it is given (display kept);
 * every other reference becomes display-only (the center cannot resolve the EHR's ids): its
 * display, else BSER_NOT_INCLUDED. fullUrls are urn:uuid values derived from the placer
 * identifier, so the same referral always yields the same Bundle. */
#ifndef BSER_H
#define BSER_H

#include <stddef.h>
#include <stdint.h>

#include "centers.h"
#include "fhir_arena.h"
#include "fhir_error.h"
#include "fhir_node.h"

/* Identifier systems used in the Bundle. */
#define BSER_TASK_CODE_SYSTEM "http://hl7.org/fhir/CodeSystem/task-code"
#define BSER_BUSINESS_STATUS_SYSTEM "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
#define BSER_V2_0203 "http://terminology.hl7.org/CodeSystem/v2-0203"
/* The display a reference to something the Bundle does not carry gets when it had none. */
#define BSER_NOT_INCLUDED "not included in the referral"
/* What a medication row's drug is called when nothing in the record names it. */
#define BSER_MEDICATION_UNNAMED "medication not named in the record"

typedef struct bser_input {
    const char *id_system_base;  /* e.g. "urn:cartgate:community-1"; identifiers use
                                    <base>:referral, :referral-task, :patient, :source, :site,
                                    :eligibility-summary; centers use urn:cartgate:center */
    const char *placer_id;       /* refer_placer_id() */
    const char *site_id, *site_name;
    const centers_center *center;
    const char *patient_id;      /* pseudonymous id (our identifier on the Patient) */
    const fhir_node *patient;    /* the EHR Patient resource (required) */
    const fhir_node *const *coverages;
    size_t n_coverages;
    const fhir_node *condition;  /* the diagnosis Condition (may be NULL) */
    const fhir_node *const *observations;
    size_t n_observations;
    const fhir_node *const *medications;
    size_t n_medications;
    /* the Medications the medication rows reference ("Medication/<id>"), each once: copied
     * before the rows, whose references then point at the copies; a referenced one not given
     * leaves the row's reference display-only */
    const fhir_node *const *drugs;
    size_t n_drugs;
    const fhir_node *const *reports; /* pathology and imaging DiagnosticReports */
    size_t n_reports;
    const char *reason_text;     /* ServiceRequest.reasonCode.text, e.g. "Relapsed LBCL: CAR T
                                    evaluation (axi-cel, liso-cel)" */
    const char *summary_text;    /* readable eligibility summary */
    const char *verdict_json;    /* machine-readable verdict */
    const char *urgency;         /* routine | urgent | asap | stat */
    int64_t authored_ms;         /* ServiceRequest/Task authoredOn */
    /* the referring clinician: a PractitionerRole (practitioner by name, the site as its
     * organization, phone and Direct address as telecom) that becomes the ServiceRequest's
     * requester; NULL name: the requester stays the site Organization */
    const char *referrer_name, *referrer_phone, *referrer_direct;
    /* the referral packet (packet.h): its document and HTML rendering, attached to the
     * eligibility summary DocumentReference when given */
    const char *packet_json, *packet_html;
} bser_input;

/* Builds the transaction Bundle in arena a (borrowed, valid until the arena is reset).
 * NULL with err when an input is missing or malformed, or the arena's cap is hit. */
fhir_node *bser_build(fhir_arena *a, const bser_input *in, fhir_error *err);

/* The drug of a medication row (MedicationRequest/-Administration/-Statement) in plain words,
 * as a clinician reads it: medicationCodeableConcept (text, else a coding's display), else the
 * Medication its medicationReference names — contained ("#id") or an entry of bundle (by
 * fullUrl or "Medication/<id>"; bundle may be NULL) — by code (text, else a coding's display),
 * else medicationReference.display, else BSER_MEDICATION_UNNAMED. Never a raw reference.
 * Borrowed from row, bundle or static storage. */
const char *bser_medication_name(const fhir_node *bundle, const fhir_node *row);

/* From a transaction-response Bundle, the "Type/id" of the ServiceRequest and Task entries
 * (matched by position against the request Bundle). Strings are written to sr_out/task_out
 * (each >= 256 bytes). Returns 0, or -1 with err when the response does not match. */
int bser_response_refs(const fhir_node *request_bundle, const fhir_node *response,
                       char *sr_out, char *task_out, fhir_error *err);

#endif
