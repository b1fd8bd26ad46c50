/* poll_bulk — the `bulk` strategy: a FHIR Bulk Data export of a Group since the cursor,
 * downloaded and stored as it streams in (poll_source.h). */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_log.h"
#include "fhir_ndjson.h"
#include "fhir_retry.h"
#include "poll_impl.h"

/* The export job of the poll in progress. */
typedef struct bulk_state {
    struct event *bulk_timer;          /* status checks */
    char *status_url;                  /* the export job's, while it exists */
    unsigned status_polls;
    fhir_client_result *bulk_manifest; /* the completed job's manifest (body) */
    const fhir_node *bulk_out;         /* the output being downloaded (in the manifest) */
    size_t bulk_files;
    size_t bulk_changed_before;
    fhir_ndjson *bulk_nd;              /* the output's NDJSON reader */
    fhir_buf bulk_batch;               /* bytes received, not yet stored (capped) */
    fhir_error bulk_err;               /* cause set by the chunk/line callbacks */
} bulk_state;

#define B(p) ((bulk_state *)(p)->state)

/* Every $export exchange is an asynchronous fhir_client operation on the daemon's loop, with
 * the source's auth (bearer, Basic, SMART): the kick-off (202 + Content-Location), the status
 * checks (202 + Retry-After while in progress, waited for on a timer; 429/5xx are retried by
 * the client), the manifest, one streaming GET per output file (in manifest order, one at a
 * time) and the job's DELETE. A file's bytes are collected as they arrive and fed to the
 * NDJSON reader in batches of up to BULK_BATCH_BYTES, each batch's complete lines stored in
 * one short transaction (no transaction stays open while the loop serves others, and the
 * store syncs once per batch, not once per network read). The cursor (the manifest's
 * transactionTime) is written only after every file is stored; a failure on the way leaves
 * it where it was, and the next poll exports the same range again (ingest is idempotent). */

#define BULK_MAX_STATUS_POLLS 5000
#define BULK_MAX_FILE_BYTES ((size_t)2047 << 20) /* per output file */
#define BULK_MAX_LINE_BYTES (64u << 20)
#ifndef BULK_BATCH_BYTES /* overridable at build time to exercise batching in tests */
#define BULK_BATCH_BYTES (1u << 20)
#endif

static void bulk_finish(poll_source *p);

static void bulk_fail(poll_source *p, const char *msg)
{
    poll_log_err("bulk.failed", p, msg);
    p->failed = true;
    bulk_finish(p);
}

static void bulk_file_reset(poll_source *p)
{
    fhir_ndjson_free(B(p)->bulk_nd);
    B(p)->bulk_nd = NULL;
    fhir_buf_free(&B(p)->bulk_batch);
    fhir_client_result_free(B(p)->bulk_manifest);
    B(p)->bulk_manifest = NULL;
    B(p)->bulk_out = NULL;
    B(p)->bulk_files = 0;
}

static void on_bulk_deleted(void *ud, fhir_client_result *res)
{
    poll_source *p = ud;
    poll_count_result(p, res);
    if (res->err.msg[0])
        poll_log_err("bulk.delete_failed", p, res->err.msg);
    else
        fhir_log(FHIR_LOG_DEBUG, "bulk.deleted", "source=%s status=%ld", p->cfg->name, res->status);
    fhir_client_result_free(res);
    poll_end(p);
}

/* Ends the poll: the job (if one was created) is DELETEd first, then poll_end. */
static void bulk_finish(poll_source *p)
{
    bulk_file_reset(p);
    if (!B(p)->status_url) {
        poll_end(p);
        return;
    }
    fhir_client_request del = {.method = "DELETE", .path = B(p)->status_url, .accept_202 = true};
    fhir_error err;
    fhir_error_clear(&err);
    int rc = fhir_client_send(p->client, &del, on_bulk_deleted, p, &err);
    free(B(p)->status_url);
    B(p)->status_url = NULL;
    if (rc) {
        poll_log_err("bulk.delete_failed", p, err.msg);
        poll_end(p);
    }
}

static int bulk_line(void *ud, const fhir_node *res, size_t line_no)
{
    poll_source *p = ud;
    if (poll_ingest(p, res, &B(p)->bulk_err))
        return fhir_error_prefix(&B(p)->bulk_err, "line %zu", line_no), 1;
    return 0;
}

/* Feeds bytes to the NDJSON reader, storing their complete lines in one transaction; with
 * finish, the last line too. 0, or -1 with B(p)->bulk_err set. */
static int bulk_store(poll_source *p, const char *data, size_t len, bool finish)
{
    if (store_begin(p->env.st, &B(p)->bulk_err))
        return -1;
    if ((len && fhir_ndjson_feed(B(p)->bulk_nd, data, len, &B(p)->bulk_err) < 0) ||
        (finish && fhir_ndjson_finish(B(p)->bulk_nd, &B(p)->bulk_err) < 0)) {
        store_rollback(p->env.st);
        if (!B(p)->bulk_err.msg[0])
            fhir_error_set(&B(p)->bulk_err, "NDJSON reader stopped");
        return -1;
    }
    return store_commit(p->env.st, &B(p)->bulk_err) ? -1 : 0;
}

/* One chunk of an output file, as it arrives: batched (bounded), stored when a batch fills. */
static int bulk_chunk(void *ud, const char *data, size_t len)
{
    poll_source *p = ud;
    if (B(p)->bulk_batch.len + len > BULK_BATCH_BYTES) {
        if (B(p)->bulk_batch.len && bulk_store(p, B(p)->bulk_batch.data, B(p)->bulk_batch.len, false))
            return 1;
        fhir_buf_reset(&B(p)->bulk_batch);
        if (len >= BULK_BATCH_BYTES)
            return bulk_store(p, data, len, false) ? 1 : 0;
    }
    if (fhir_buf_append(&B(p)->bulk_batch, data, len) < 0) {
        fhir_error_set(&B(p)->bulk_err, "download batch buffer overflow");
        return 1;
    }
    return 0;
}

static void bulk_next_file(poll_source *p);

static const char *bulk_out_type(const poll_source *p)
{
    const char *t = fhir_node_str(fhir_node_get(B(p)->bulk_out, "type"));
    return t ? t : "?";
}

static void on_bulk_file(void *ud, fhir_client_result *res)
{
    poll_source *p = ud;
    poll_count_result(p, res);
    char msg[900];
    if (res->err.msg[0]) {
        snprintf(msg, sizeof msg, "output %zu (%s): %s", B(p)->bulk_files, bulk_out_type(p),
                 B(p)->bulk_err.msg[0] ? B(p)->bulk_err.msg : res->err.msg);
        fhir_client_result_free(res);
        bulk_fail(p, msg);
        return;
    }
    fhir_client_result_free(res);
    /* the rest of the batch, and the last line (which may lack its newline) */
    int rc = bulk_store(p, B(p)->bulk_batch.data, B(p)->bulk_batch.len, true);
    fhir_buf_reset(&B(p)->bulk_batch);
    if (rc) {
        snprintf(msg, sizeof msg, "output %zu (%s): %s", B(p)->bulk_files, bulk_out_type(p),
                 B(p)->bulk_err.msg[0] ? B(p)->bulk_err.msg : "NDJSON reader stopped");
        bulk_fail(p, msg);
        return;
    }
    fhir_log(FHIR_LOG_INFO, "bulk.file", "source=%s type=%s changed=%zu lines=%zu", p->cfg->name,
             bulk_out_type(p), p->changed - B(p)->bulk_changed_before,
             fhir_ndjson_stats_get(B(p)->bulk_nd)->ok);
    fhir_ndjson_free(B(p)->bulk_nd);
    B(p)->bulk_nd = NULL;
    B(p)->bulk_files++;
    B(p)->bulk_out = B(p)->bulk_out->next;
    bulk_next_file(p);
}

static void bulk_next_file(poll_source *p)
{
    if (!B(p)->bulk_out) {
        const fhir_node *m = B(p)->bulk_manifest->body;
        if (fhir_node_count(fhir_node_get(m, "error")))
            fhir_log(FHIR_LOG_WARN, "bulk.errors", "source=%s error_files=%zu", p->cfg->name,
                     fhir_node_count(fhir_node_get(m, "error")));
        /* every file is stored: the export's time is the next _since */
        const char *key = "transactionTime";
        poll_commit_cursors(p, 1, &key);
        bulk_finish(p);
        return;
    }
    const char *url = fhir_node_str(fhir_node_get(B(p)->bulk_out, "url"));
    if (!url) {
        bulk_fail(p, "manifest output without url");
        return;
    }
    fhir_error_clear(&B(p)->bulk_err);
    fhir_json_limits lim = {.max_bytes = BULK_MAX_LINE_BYTES};
    B(p)->bulk_nd = fhir_ndjson_new(&lim, bulk_line, NULL, p);
    fhir_buf_free(&B(p)->bulk_batch);
    fhir_buf_init(&B(p)->bulk_batch, BULK_BATCH_BYTES);
    B(p)->bulk_changed_before = p->changed;
    fhir_client_stream_request sr = {.url = url, .accept = "application/fhir+ndjson",
                                     .max_bytes = BULK_MAX_FILE_BYTES,
                                     .timeout_ms = p->cfg->timeout_s * 1000L * 10L};
    fhir_error err;
    fhir_error_clear(&err);
    if (fhir_client_get_stream(p->client, &sr, bulk_chunk, on_bulk_file, p, &err)) {
        char msg[900];
        snprintf(msg, sizeof msg, "output %zu (%s): %s", B(p)->bulk_files, bulk_out_type(p), err.msg);
        bulk_fail(p, msg);
    }
}

static void on_bulk_status_done(void *ud, fhir_client_result *res)
{
    poll_source *p = ud;
    poll_count_result(p, res);
    if (res->err.msg[0]) {
        char msg[900];
        snprintf(msg, sizeof msg, "status request: %s", res->err.msg);
        fhir_client_result_free(res);
        bulk_fail(p, msg);
        return;
    }
    if (res->status == 202) {
        int64_t delay = 2000;
        if (!res->retry_after ||
            fhir_retry_parse_retry_after(res->retry_after, fhir_clock_now_ms(), &delay) != 0)
            delay = 2000;
        if (delay < 100)
            delay = 100;
        if (delay > 300000)
            delay = 300000;
        fhir_client_result_free(res);
        if (++B(p)->status_polls > BULK_MAX_STATUS_POLLS) {
            bulk_fail(p, "export not complete after the status poll limit");
            return;
        }
        struct timeval tv = {.tv_sec = delay / 1000, .tv_usec = (delay % 1000) * 1000};
        evtimer_add(B(p)->bulk_timer, &tv);
        return;
    }
    const fhir_node *m = res->body;
    const char *tt = fhir_node_str(fhir_node_get(m, "transactionTime"));
    int64_t ms;
    if (res->status != 200 || !m || !tt || strlen(tt) >= sizeof p->cursor_new[0] ||
        fhir_clock_parse_instant(tt, &ms) != 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "status request: HTTP %ld%s", res->status,
                 res->status == 200 ? " with a manifest without a valid transactionTime" : "");
        fhir_client_result_free(res);
        bulk_fail(p, msg);
        return;
    }
    fhir_log(FHIR_LOG_DEBUG, "bulk.complete", "source=%s status_polls=%u", p->cfg->name, B(p)->status_polls);
    snprintf(p->cursor_new[0], sizeof p->cursor_new[0], "%s", tt);
    B(p)->bulk_manifest = res;
    B(p)->bulk_out = fhir_node_first(fhir_node_get(m, "output"));
    B(p)->bulk_files = 0;
    bulk_next_file(p);
}

static void on_bulk_status(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    poll_source *p = arg;
    fhir_client_request st = {.method = "GET", .path = B(p)->status_url, .accept = "application/json",
                              .accept_202 = true};
    fhir_error err;
    fhir_error_clear(&err);
    if (fhir_client_send(p->client, &st, on_bulk_status_done, p, &err))
        bulk_fail(p, err.msg);
}

static void on_bulk_kickoff(void *ud, fhir_client_result *res)
{
    poll_source *p = ud;
    poll_count_result(p, res);
    if (res->err.msg[0] || res->status != 202 || !res->content_location) {
        char msg[900];
        if (res->err.msg[0])
            snprintf(msg, sizeof msg, "kick-off: %s", res->err.msg);
        else
            snprintf(msg, sizeof msg, "kick-off: HTTP %ld%s", res->status,
                     res->content_location ? "" : " without Content-Location");
        fhir_client_result_free(res);
        bulk_fail(p, msg);
        return;
    }
    B(p)->status_url = poll_xstrdup(res->content_location);
    fhir_client_result_free(res);
    fhir_log(FHIR_LOG_DEBUG, "bulk.started", "source=%s", p->cfg->name);
    B(p)->status_polls = 0;
    struct timeval tv = {0, 0};
    evtimer_add(B(p)->bulk_timer, &tv);
}

static void bulk_poll(poll_source *p)
{
    poll_alloc_slots(p, 1);
    const char *cur = poll_initial_cursor(p, "transactionTime", 0);
    fhir_buf u;
    fhir_buf_init(&u, 8192);
    fhir_buf_printf(&u, "Group/%s/$export?_type=", p->cfg->group_id);
    for (size_t i = 0; i < p->cfg->types.n; i++)
        fhir_buf_printf(&u, "%s%s", i ? "," : "", p->cfg->types.v[i]);
    if (cur) {
        char enc[128];
        poll_enc_instant(enc, sizeof enc, cur);
        fhir_buf_printf(&u, "&_since=%s", enc);
    }
    fhir_client_request kick = {.method = "GET", .path = fhir_buf_cstr(&u), .prefer = "respond-async",
                                .accept_202 = true};
    fhir_error err;
    fhir_error_clear(&err);
    int rc = u.overflow ? fhir_error_set(&err, "kick-off URL too long")
                        : fhir_client_send(p->client, &kick, on_bulk_kickoff, p, &err);
    fhir_buf_free(&u);
    if (rc)
        bulk_fail(p, err.msg);
}

/* An export abandoned at shutdown or reload: ask the server to drop the job (its data was
 * never completely stored and the cursor never advanced, so the next poll starts over). The
 * source's client is going away with the loop's pending work, so this one request runs on a
 * private client and loop, bounded by a short timeout and a single attempt. */
static void bulk_abandon(poll_source *p)
{
    fhir_log(FHIR_LOG_INFO, "bulk.abandoned", "source=%s", p->cfg->name);
    fhir_client_config cc;
    config_source_client(p->cfg, &cc);
    cc.total_timeout_ms = 5000;
    cc.connect_timeout_ms = 2000;
    cc.retry.max_attempts = 1;
    fhir_error err;
    fhir_error_clear(&err);
    fhir_client *c = fhir_client_new(NULL, &cc, &err);
    if (!c) {
        poll_log_err("bulk.delete_failed", p, err.msg);
        return;
    }
    fhir_client_request del = {.method = "DELETE", .path = B(p)->status_url, .accept_202 = true};
    fhir_client_result *r = fhir_client_send_sync(c, &del);
    if (r->err.msg[0])
        poll_log_err("bulk.delete_failed", p, r->err.msg);
    else
        fhir_log(FHIR_LOG_DEBUG, "bulk.deleted", "source=%s status=%ld", p->cfg->name, r->status);
    fhir_client_result_free(r);
    fhir_client_free(c);
}

static int bulk_init(poll_source *p, fhir_error *err)
{
    (void)err;
    p->state = calloc(1, sizeof(bulk_state));
    if (!p->state)
        abort();
    B(p)->bulk_timer = evtimer_new(p->env.base, on_bulk_status, p);
    return 0;
}

static void bulk_free(poll_source *p)
{
    bulk_state *b = B(p);
    if (b->bulk_timer)
        event_free(b->bulk_timer);
    if (b->status_url) {
        bulk_abandon(p);
        free(b->status_url);
    }
    bulk_file_reset(p);
    free(b);
    p->state = NULL;
}

const poll_impl poll_bulk_impl = {
    .kind = CONFIG_SOURCE_BULK,
    .http = true,
    .init = bulk_init,
    .start = bulk_poll,
    .free = bulk_free,
};
