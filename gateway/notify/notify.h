/* notify — telling the navigator (and, later, a center's intake team) without PHI: email through
 * SMTP with TLS (libcurl: smtps://, or smtp:// with STARTTLS required) and/or a webhook POST of
 * JSON. A notice carries a count, an urgency, plain words and a link to the web app
 * (<public_url>/ui/ or /ui/referrals), never a name, MRN, birth date, address or patient id.
 *
 * Events are recorded by a key (store_notify_event), so each is noticed at most once; the new
 * events of one call make one notice per channel, queued in the store (notify_notices). A
 * worker thread with its own store handle sends the due notices: claimed ('sending') before
 * the exchange, 'sent' after, retried with doubling backoff (retry_s, 2 retry_s, ...) up to
 * max_attempts, then 'failed'; a notice left 'sending' by a crash is marked 'unknown' at the
 * next start and not sent again (at most once). Failures are logged (event=notify.failed,
 * the error only) and counted (notify_get_stats).
 *
 * The daemon's events (notify_scan, notify_screened): new candidates at or above an urgency
 * (immediate, after each screening batch); referrals stuck (failed, approved but not prepared:
 * referral.h refer_compose_cause, or sent without an answer for stuck_business_days business
 * days) and declined (on the next scan, every few seconds);
 * a daily digest of counts by category at digest_hour (local time of the injectable clock,
 * fhir_clock; at a center the intake inbox's counts instead). Other rooms (web, a center's intake) post their own with notify_post. */
#ifndef NOTIFY_H
#define NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_error.h"
#include "store.h"

#define NOTIFY_BODY_MAX 4096u          /* bytes of a notice's JSON, and of an email's text */
#define NOTIFY_ERROR_BODY_MAX 2048u    /* bytes of a webhook's answer kept for the error */
#define NOTIFY_BATCH 16                /* notices sent per worker pass */
#define NOTIFY_MAX_RECIPIENTS 32

/* What the daemon's configuration says (strings borrowed until notify_free). */
typedef struct notify_config {
    const char *site_id;           /* named in every notice (not PHI) */
    const char *public_url;        /* base of the links: https://cartgate.hospital.example */
    /* email: smtps://HOST[:PORT] (TLS from the start) or smtp://HOST[:PORT] (STARTTLS, required) */
    const char *email_url;
    const char *email_from;
    const char *const *email_to;
    size_t n_email_to;
    const char *email_user;        /* SMTP AUTH user (NULL: none) */
    const char *email_password;    /* read from its file or variable by the caller */
    const char *email_ca_file;     /* PEM CA bundle (NULL: the system store) */
    /* webhook: https (http only to a loopback host) */
    const char *webhook_url;
    const char *webhook_token;     /* "Authorization: Bearer ..." (NULL: none) */
    const char *webhook_ca_file;
    /* events */
    int stuck_business_days;       /* a sent referral unanswered this long is stuck (0 = never) */
    int digest_hour;               /* 0..23 local time; -1 = no digest */
    bool center;                   /* cartgate at a center (role center): the digest is the
                                      intake inbox's (referrals by Task status and those waiting
                                      for a first answer, counts only), linked to /ui/intake */
    /* delivery */
    int retry_s;                   /* first retry after this long, doubled per attempt */
    int max_attempts;
    int timeout_s;                 /* per exchange */
} notify_config;

/* Counters (notify_get_stats), by channel: [0] email, [1] webhook. */
typedef struct notify_stats {
    uint64_t sent[2], failed[2], retried[2];
    uint64_t unknown; /* interrupted while sending, not sent again */
} notify_stats;

typedef struct notify notify;

/* The notifier on the store file store_path (its worker opens its own handle there) with cfg
 * (strings copied). The worker starts at once. NULL with err (a bad URL, no channel ...).
 * Caller frees with notify_free(). */
notify *notify_new(const char *store_path, const notify_config *cfg, fhir_error *err);
/* Stops the worker (an exchange in flight finishes, at most timeout_s) and frees. NULL-safe. */
void notify_free(notify *n);

/* One notice about the events named by keys (each noticed once, ever): how many of them are
 * new decides the count; none new, nothing is queued. kind: "urgent_candidates",
 * "referral_stuck", "referral_declined", "digest", or another room's ("new_referral" ...);
 * summary: plain words after the count ("new urgent CAR T candidate(s)"), never PHI;
 * link_path: "/ui/" or "/ui/referrals"; urgency may be NULL. st is the caller's handle (its
 * own transaction unless one is open). *queued (may be NULL) gets the count. 0, or -1. */
typedef struct notify_notice {
    const char *kind;
    const char *const *keys;
    size_t n_keys;
    const char *urgency;
    const char *summary;
    const char *link_path;
} notify_notice;
int notify_post(notify *n, store *st, const notify_notice *what, int64_t *queued, fhir_error *err);

/* After a screening batch: n_new patients became candidates at or above the configured
 * urgency (keys: one per patient and verdict, e.g. "candidate:<pid>:<ms>"), the most urgent
 * being `urgency`. */
int notify_screened(notify *n, store *st, const char *const *keys, size_t n_new, const char *urgency,
                    fhir_error *err);
/* Stuck and declined referrals, and the digest when its hour has come (now: fhir_clock).
 * 0, or -1 with err. */
int notify_scan(notify *n, store *st, fhir_error *err);

/* Wakes the worker (a notice was queued). */
void notify_kick(notify *n);
/* A copy of the counters. */
void notify_get_stats(notify *n, notify_stats *out);
/* How many business days (Monday to Friday) of the local calendar lie between from_ms and
 * to_ms (whole days; used for "sent without an answer for N business days"). */
int notify_business_days(int64_t from_ms, int64_t to_ms);

#endif
