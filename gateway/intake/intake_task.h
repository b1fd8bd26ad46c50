/* intake_task — the intake team's answer to a referral, written into its Task (the one the
 * referring site's cartgate follows, sender.h) with the BSeR business status
 * (TaskBusinessStatusCS, update-2026-12.md §0.4):
 *
 *   accept           Task.status accepted     businessStatus 3.0  "Accepted"
 *   request info     Task.status on-hold      businessStatus kept; the question as a Task.note
 *                    (the site records the change of Task.status in its referral's history)
 *   decline          Task.status rejected     businessStatus 4.0  "Declined"; statusReason coded
 *                    (INTAKE_DECLINE_SYSTEM) with the words
 *   schedule consult Task.status in-progress  businessStatus 5.1.1 "Scheduled"; the consult's
 *                    date and time as a Task.note and in the inbox
 * Each act writes the new Task version (meta.versionId + 1, lastUpdated, lastModified), the
 * inbox row and an audit row with the person and the reason, in one store transaction.
 * A Task already over (rejected, cancelled, completed, failed) takes no act (409). */
#ifndef INTAKE_TASK_H
#define INTAKE_TASK_H

#include <stdint.h>

#include "fhir_error.h"
#include "store.h"

#define INTAKE_DECLINE_SYSTEM "urn:cartgate:intake-decline-reason"
#define INTAKE_TEXT_MAX 1000     /* bytes of a reason or note */

typedef enum intake_act_kind {
    INTAKE_ACT_ACCEPT,
    INTAKE_ACT_INFO,
    INTAKE_ACT_DECLINE,
    INTAKE_ACT_SCHEDULE,
    INTAKE_ACT_CANCEL,  /* by the referring site (PUT of its Task with status cancelled):
                           Task.status cancelled, businessStatus 6.0 */
} intake_act_kind;

typedef struct intake_act_in {
    intake_act_kind kind;
    const char *code;   /* decline: one of intake_decline_codes */
    const char *text;   /* the reason or the question in words (required for info, and for
                           decline "other") */
    const char *when;   /* schedule: "YYYY-MM-DDTHH:MM" (local time of the center) */
    int64_t if_version; /* > 0: the Task must be at this version (If-Match), else 412 */
} intake_act_in;

/* The decline reasons: code and words, NULL-terminated pairs. */
typedef struct intake_decline_reason {
    const char *code, *words;
} intake_decline_reason;
extern const intake_decline_reason intake_decline_reasons[];
/* The words of a decline code, or NULL. Static. */
const char *intake_decline_words(const char *code);
/* The name of an act ("accept", ...). Static. */
const char *intake_act_name(intake_act_kind k);

/* Does the act on inbox referral id for who (borrowed). *task_json_out (may be NULL; caller
 * frees) gets the new Task. 0, or -1 with err (err->code 400 bad input, 404 no such referral,
 * 409 the Task is over, 412 not at if_version, 500 store). */
int intake_act(store *st, int64_t id, const intake_act_in *in, const store_actor *who, char **task_json_out,
               fhir_error *err);

/* A Task.status that ends the referral at the center. */
int intake_task_over(const char *task_status);

#endif
