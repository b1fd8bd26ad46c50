/* packet — the referral packet a center's intake nurse reads: who the patient is, why they
 * are referred (the label verdict in plain words with its citation), the lines of therapy
 * with dates and responses, performance status, recent labs, insurance, the referring
 * clinician and whom to call, and the records still to request.
 *
 * Built once on the referring side (packet_build, from the screening's verdict and profile and
 * the patient's resources) as a small JSON document ("cartgate packet", version 1) that travels
 * in the referral Bundle (DocumentReference attachment application/vnd.cartgate.packet+json,
 * beside its HTML rendering), so a center reads the same packet the site approved. Rendered as
 * HTML, plain text or PDF (cairo + pango) from that document alone: a center's cartgate, the
 * CLI (`cartgate referrals packet ID`) and the web app render the stored document, never the
 * live chart.
 *
 * What it never holds: repository paths, table rows, criteria file names, internal fact
 * names; what it holds is PHI (it is the referral): never log it. */
#ifndef PACKET_H
#define PACKET_H

#include <stddef.h>
#include <stdint.h>

#include "elig.h"
#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "fhir_node.h"
#include "map_profile.h"

#define PACKET_CONTENT_TYPE "application/vnd.cartgate.packet+json"
#define PACKET_KIND "cartgate-packet" /* the document's "kind" */
#define PACKET_MAX_HTML (256u * 1024u) /* byte cap of one rendered HTML packet */
#define PACKET_MAX_TEXT (128u * 1024u) /* byte cap of one rendered text packet */
#define PACKET_MAX_JSON (128u * 1024u) /* byte cap of the packet document */
#define PACKET_MAX_LINES 32            /* lines of therapy listed (most recent kept) */
#define PACKET_MAX_LABS 16

/* The referring clinician (PractitionerRole in the Bundle). */
typedef struct packet_referrer {
    const char *name;    /* "Dr. A. Rivera"; NULL/"" when unknown */
    const char *phone;
    const char *direct;  /* Direct secure-messaging address */
    const char *source;  /* plain words: where the name came from */
} packet_referrer;

typedef struct packet_input {
    const char *site_name, *center_name;
    const char *request;         /* the request line (ServiceRequest.reasonCode.text) */
    const char *urgency;         /* routine | urgent | asap | stat */
    int64_t authored_ms;
    const fhir_node *patient;    /* the EHR Patient (required) */
    const fhir_node *condition;  /* the diagnosis (may be NULL) */
    const fhir_node *const *coverages;
    size_t n_coverages;
    const map_profile *profile;  /* lines, timeline, ECOG and labs (may be NULL) */
    const fhir_node *verdict;    /* the verdict JSON (elig_result_write_json), parsed */
    const elig_ruleset *rules;   /* the criteria of the verdict: its lines name the indications
                                  * in words ("Yescarta (axi-cel): ..."); NULL: by their keys */
    packet_referrer referrer;
    /* pathology and imaging DiagnosticReports (packet_report_kind), newest first, already
     * limited to the lookback; report_lookback_days is said in the packet (0: no limit) */
    const fhir_node *const *reports;
    size_t n_reports;
    int report_lookback_days;
} packet_input;

/* What a DiagnosticReport is for the packet: "pathology" or "imaging", else NULL. By name in
 * its category and code (text and coding displays: pathology, biopsy, cytogenetics, FISH, flow
 * cytometry, bone marrow / radiology, imaging, PET, CT, MRI, tomography): no DiagnosticReport
 * category or report code is confirmed in reference/codes.md, so none is matched by code.
 * Static strings. */
const char *packet_report_kind(const fhir_node *dr);

/* A verdict's review flag or note line in words, without the flag's id: "review flag ID (WHAT):
 * WHY" -> "WHAT: WHY", "note ID: WHY" -> "WHY" (note: the line is a note); the line itself when
 * it is not of that shape. The words are in a (or are the line). */
const char *packet_flag_words(fhir_arena *a, const char *line, bool note);

/* Builds the packet document in arena a (borrowed until the arena is reset). NULL with err
 * when the Patient or the verdict is missing or the arena's cap is hit. */
fhir_node *packet_build(fhir_arena *a, const packet_input *in, fhir_error *err);

/* Renders a packet document (packet_build's, or one read back from a Bundle). A standalone
 * HTML page (no script, no external resource) / readable text. Return 0, or -1 with err when
 * the document is not a packet or out's cap is hit. */
int packet_write_html(const fhir_node *pk, fhir_buf *out, fhir_error *err);
int packet_write_text(const fhir_node *pk, fhir_buf *out, fhir_error *err);

/* Writes a PDF (A4/Letter-neutral: US Letter) laid out with pango to path (created 0600,
 * replaced atomically). Returns 0, or -1 with err; "the PDF renderer is not installed: <the
 * loader's reason>" when pango or cairo cannot be loaded (see packet_pdf_renderer). */
int packet_write_pdf(const fhir_node *pk, const char *path, fhir_error *err);

/* The PDF renderer, pango and cairo, is not linked into cartgate: its libraries (about 30 with
 * their dependencies) are loaded when a PDF is first drawn, once per process and thread-safe,
 * so a process that draws none never maps them. Loads them if not yet and writes their
 * versions ("pango 1.50.12, cairo 1.16.0") into buf (cap bytes); 0, or -1 with err "the PDF
 * renderer is not installed: <the loader's reason>". */
int packet_pdf_renderer(char *buf, size_t cap, fhir_error *err);

/* The packet document inside a referral Bundle (the DocumentReference attachment of type
 * PACKET_CONTENT_TYPE), parsed into arena a. NULL with err when the Bundle carries none
 * (referrals proposed before packets existed) or it does not parse. */
fhir_node *packet_from_bundle(fhir_arena *a, const fhir_node *bundle, fhir_error *err);

#endif
