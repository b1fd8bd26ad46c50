/* poll_impl — private to the poll_*.c files (nothing else includes it): the state of a source,
 * the table of functions each strategy fills (poll_files.c, poll_search.c, poll_group.c,
 * poll_bulk.c: one file per strategy, in the manner of OpenSMTPD's <iface>_<impl>.c), and the
 * shared parts poll_source.c gives them (scheduling, cursors, search pages, ingest). */
#ifndef POLL_IMPL_H
#define POLL_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_client.h"
#include "poll_source.h"

struct event;

#define POLL_MAX_FILES 10000      /* files taken from a drop folder per poll */
#define POLL_MAX_MEMBERS 1000000  /* Group members read per poll */
#define POLL_CURSOR_MAX 48        /* bytes of a stored instant cursor */

/* One search of a poll (freed with the poll). */
typedef struct poll_op {
    poll_source *p;
    size_t slot;  /* cursor slot (type index for search, 0 for group) */
    size_t type;  /* index in cfg->types */
    long member;  /* -1 when not per member */
    int64_t since_ms; /* the _lastUpdated=ge instant the search asked for; 0 = none */
} poll_op;

/* A strategy. Every poll ends with exactly one poll_end(). */
typedef struct poll_impl {
    int kind;   /* config_source_kind */
    bool http;  /* the source gets an HTTP client (config_source_client) */
    /* Optional: sets up p->state when the source is created. 0, or -1 with err. */
    int (*init)(poll_source *p, fhir_error *err);
    /* Starts one poll. */
    void (*start)(poll_source *p);
    /* Optional: every search started with poll_start_search has ended. */
    void (*searches_done)(poll_source *p);
    /* Optional: more cursors written in poll_commit_cursors' transaction. 0, or -1. */
    int (*more_cursors)(poll_source *p, fhir_error *err);
    /* Optional: drops the per-poll part of p->state (end of a poll). */
    void (*reset)(poll_source *p);
    /* Optional: drops in-flight work and p->state (the source is being freed; p->client is
     * already gone). */
    void (*free)(poll_source *p);
} poll_impl;

extern const poll_impl poll_files_impl, poll_search_impl, poll_group_impl, poll_bulk_impl;

struct poll_source {
    poll_env env;
    const config_source *cfg;
    const poll_impl *impl;
    fhir_client *client;      /* NULL for files */
    struct event *timer;
    struct event *group_timer; /* commits the ingest group POLL_GROUP_IDLE_MS after a page */
    size_t group_n;           /* resources in this source's open ingest group */
    bool busy, paused, done_once;
    /* the poll in progress */
    int pending;              /* searches in flight */
    bool failed;
    const char *fail_reason;  /* the first reason this poll failed for (poll_fail) */
    size_t changed, unchanged, unresolved, deleted, outcome_issues, bulk_issues;
    bool since_ignored;       /* this poll saw data older than it asked for */
    bool full_refresh;        /* this poll reads everything (full_refresh_s) */
    int64_t started_mono;
    /* across polls */
    bool since_ignored_said;  /* logged once per source */
    unsigned failed_in_row;
    char **cursor_old;        /* per slot: the cursor the poll started from (owned) */
    char (*cursor_new)[POLL_CURSOR_MAX]; /* per slot: largest meta.lastUpdated seen */
    int64_t *cursor_new_ms;
    bool *type_ok;            /* per slot: every search of the slot succeeded */
    size_t n_slots;           /* of cursor_new, cursor_new_ms, type_ok */
    poll_op **ops;            /* every op of this poll, freed at the end */
    size_t n_ops, cap_ops;
    void *state;              /* the strategy's own */
};

/* ---- shared parts (poll_source.c) ---------------------------------------------------------- */

void poll_log_err(const char *event, const poll_source *p, const char *msg);
/* The poll fails (p->failed), for reason (one of ADMIN_POLL_FAIL_REASONS, admin.h) unless an
 * earlier failure of the same poll gave one. poll_note_reason only records the reason (a part
 * that fails the poll later, at its end). */
void poll_fail(poll_source *p, const char *reason);
void poll_note_reason(poll_source *p, const char *reason);
/* The reason of a failed HTTP exchange (its fhir_client_fail). */
const char *poll_reason_of(const fhir_client_result *res);
/* Ends the poll: counters to env->done, per-poll state dropped, next poll scheduled. */
void poll_end(poll_source *p);
/* A new op owned by the poll. */
poll_op *poll_op_new(poll_source *p, size_t slot, size_t type, long member);
/* n cursor slots for this poll (every slot ok until a search fails). */
void poll_alloc_slots(poll_source *p, size_t n);
/* The stored cursor of key (else the configured `since`) into slot; NULL when neither.
 * Borrowed until the poll ends. */
const char *poll_initial_cursor(poll_source *p, const char *key, size_t slot);
/* Writes the cursors the finished poll earned (after its data was committed), plus the
 * strategy's more_cursors, in one transaction; p->failed on error. */
void poll_commit_cursors(poll_source *p, size_t nslots, const char *const *keys);
/* Percent-encodes the characters of an instant that matter in a query ('+', ':', ' '). */
void poll_enc_instant(char *out, size_t outlen, const char *v);
/* Counts an HTTP exchange in the metrics. */
void poll_count_result(poll_source *p, const fhir_client_result *res);
/* One resource through env->ingest (inside the caller's transaction). */
int poll_ingest(poll_source *p, const fhir_node *res, fhir_error *err);
/* One deletion through env->remove (inside the caller's transaction), counted. */
int poll_remove(poll_source *p, const char *type, const char *id, fhir_error *err);
/* A resource the cache holds unchanged came back although it is older than the instant (ms)
 * the request asked for: the server ignores _since / _lastUpdated (said once per source).
 * Callers pass only resources ingest found unchanged (a Group export may legitimately send a
 * new member's older data). No-op when since_ms is 0. */
void poll_note_since(poll_source *p, int64_t since_ms, const fhir_node *res);
/* Is a full read due (full_refresh_s)? Sets p->full_refresh; a complete poll then records
 * the time in poll_commit_cursors. Call once at the start of a poll. */
bool poll_full_refresh_due(poll_source *p);
/* The instant of a cursor value in ms, or 0. */
int64_t poll_instant_ms(const char *v);
/* Starts a paged search (each page stored in one transaction, meta.lastUpdated noted in the
 * op's slot); impl->searches_done runs when the last search of the poll ends. 0, or -1
 * (logged, slot marked failed). */
int poll_start_search(poll_source *p, poll_op *o, const char *query);

#endif
