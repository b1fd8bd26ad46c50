/* web_int.h — what the files of the web room share (private to gateway/web/; the public
 * interface is web.h):
 *   web.c            routes, the page shell, assets, the worklist
 *   web_patient.c    the patient page and the acts on it
 *   web_timeline.c   the lines-of-therapy timeline (SVG)
 *   web_referrals.c  the referrals pages and the program dashboard
 *   web_intake.c     a center's intake inbox (role center)
 *   web_assets.c     the embedded assets (the generated arrays: web_assets_data.c) */
#ifndef WEB_INT_H
#define WEB_INT_H

#include "web.h"

/* One embedded asset (web_assets_data.c, generated; the table ends with a NULL name). */
typedef struct web_asset_entry {
    const char *name, *content_type;
    const unsigned char *data;
    size_t len;
} web_asset_entry;
extern const web_asset_entry web_asset_table[];

struct web {
    web_env env;
};

/* A patient as a page shows them: from the cached Patient resource (strings in the arena
 * given to web_person; "" when not recorded). */
typedef struct web_person {
    const char *name, *mrn, *sex, *birth;
    int age;                     /* -1 unknown */
} web_person;

/* The page shell: head, header (site, nav with `active` marked, the signed-in person and
 * sign-out), then <main>. */
void web_page_begin(web *w, serve_req *r, fhir_buf *b, const char *title, const char *active);
/* Closes the shell and answers 200 (500 when the page outgrew WEB_PAGE_MAX). */
void web_page_send(serve_req *r, fhir_buf *b, int status);
/* A short page saying what went wrong, in words, with a way back. */
void web_page_problem(web *w, serve_req *r, int status, const char *title, const char *msg);
/* The escaped text of s ("" for NULL). */
void web_esc(fhir_buf *b, const char *s);
/* The CSRF hidden field of the signed-in person's session. */
void web_csrf_field(fhir_buf *b, serve_req *r);
/* true when the principal may act in role need. */
bool web_may(serve_req *r, role need);
/* The audit actor of the request's principal, with reason. */
store_actor web_actor(serve_req *r, const char *reason, role need);
/* Today, days since the epoch (the runtime's as-of date when set). */
int64_t web_today(web *w);
/* "2026-06-15" of day. out holds 11 bytes. */
void web_day(int64_t day, char out[16]);
/* "2026-06-15" of a time in ms. */
void web_day_ms(int64_t ms, char out[16]);
/* The first three cells of a history row (an audit row): the time in UTC ("2026-06-15
 * 09:30:12"), who, and `what` (the action in words; its name in data-action). */
void web_history_cells(fhir_buf *b, const store_audit_row *a, const char *what);
/* Reads the cached Patient resource. 1 found, 0 not (a cached one that does not decode: 0
 * with a name saying so, never an empty one that reads as "no name recorded"). */
int web_person_read(web *w, fhir_arena *a, const char *patient_id, int64_t today, web_person *out);
/* The name of a center of the directory in force (its id when the directory has none). */
const char *web_center_name(web *w, const char *id);
/* Referral states in words ("sent, awaiting the center's answer"). Static. */
const char *web_state_words(const char *state);
/* The criteria in force (NULL when the daemon gives none); borrowed for the request. */
const elig_ruleset *web_rules(web *w);
/* Indication keys as people read them, escaped: "Yescarta (axi-cel), Breyanzi (liso-cel):
 * large B-cell lymphoma, third line or later" (elig_display_write); "" for none. */
void web_indications(fhir_buf *b, web *w, const char *const *keys, size_t n);
/* Same for a stored comma-joined list of keys ("axi-cel:LBCL-3L,liso-cel:LBCL-3L"). */
void web_indications_joined(fhir_buf *b, web *w, const char *joined);
/* Same for a JSON array of keys (a verdict's "products"). */
void web_indications_json(fhir_buf *b, web *w, const char *json);

/* pages (handlers) */
void web_h_patient(serve_req *r, void *ud);
void web_h_approve(serve_req *r, void *ud);
void web_h_decline(serve_req *r, void *ud);
void web_h_reroute(serve_req *r, void *ud);
void web_h_retry(serve_req *r, void *ud);
void web_h_referrals(serve_req *r, void *ud);
void web_h_referral(serve_req *r, void *ud);
void web_h_program(serve_req *r, void *ud);
void web_h_program_csv(serve_req *r, void *ud);
/* web_intake.c: a center's intake inbox */
void web_h_intake(serve_req *r, void *ud);
void web_h_intake_one(serve_req *r, void *ud);
void web_h_intake_pdf(serve_req *r, void *ud);
void web_h_intake_accept(serve_req *r, void *ud);
void web_h_intake_info(serve_req *r, void *ud);
void web_h_intake_decline(serve_req *r, void *ud);
void web_h_intake_schedule(serve_req *r, void *ud);

#endif
