/* poll_bulk — the `bulk` strategy: a FHIR Bulk Data export of a Group since the cursor,
 * downloaded and stored as it streams in (poll_source.h). */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_alloc.h"
#include "fhir_buf.h"
#include "fhir_clock.h"
#include "fhir_log.h"
#include "fhir_ndjson.h"
#include "fhir_retry.h"
#include "poll_impl.h"

/* Every $export exchange is an asynchronous fhir_client operation on the daemon's loop, with
 * the source's auth (bearer, Basic, SMART): the kick-off (202 + Content-Location), the status
 * checks (202 + Retry-After while in progress, waited for on a timer; 429/5xx are retried by
 * the client), the manifest, one streaming GET per file (download_concurrency at a time) and
 * the job's DELETE.
 *
 * One job at a time: the job's status URL is kept in the cursors ("job") from the kick-off
 * until its DELETE, so a daemon restarted after a crash resumes the job instead of starting a
 * second one; a kick-off the server refuses because a job is already running (429, or an
 * OperationOutcome saying so) is retried per Retry-After for up to busy_wait_s.
 *
 * The files of the manifest: error[] (NDJSON of OperationOutcome: an issue of severity error
 * or fatal fails the types it names, or every type when it names none; other issues are
 * logged and counted), output[] (resources; an output of type OperationOutcome is read like an
 * error file) and deleted[] (transaction Bundles of DELETE entries: removed from the cache).
 * With requiresAccessToken false they are fetched without credentials, from any origin. A
 * file's bytes are collected as they arrive and fed to the NDJSON reader in batches of up to
 * BULK_BATCH_BYTES, each batch's complete lines stored in one short transaction. A file that
 * fails is downloaded again from the start (BULK_FILE_ATTEMPTS in all, ingest is idempotent);
 * a file that keeps failing fails its type (error and deleted files: every type).
 *
 * Cursors are per type ("transactionTime:<Type>", the manifest's transactionTime) and move
 * only for the types read completely; the kick-off asks for the oldest of them (data of the
 * other types that comes again is recognised unchanged). The poll is complete, releasing its
 * patients for screening, only when every type was. */

#define BULK_MAX_STATUS_POLLS 5000
#define BULK_MAX_FILE_BYTES ((size_t)2047 << 20) /* per output file */
#define BULK_MAX_LINE_BYTES (64u << 20)
#ifndef BULK_BATCH_BYTES /* overridable at build time to exercise batching in tests */
#define BULK_BATCH_BYTES (1u << 20)
#endif
#define BULK_FILE_ATTEMPTS 3      /* downloads of one file, the first included */
#define BULK_MAX_FILES 100000     /* files of one manifest */
#define BULK_ISSUE_LOG_MAX 20     /* error issues logged per poll (all are counted) */
#define BULK_BUSY_DEFAULT_MS 30000 /* wait when a refusal carries no Retry-After */
#define BULK_CURSOR_JOB "job"     /* the running job's status URL ("" = none) */
#define BULK_CURSOR_JOB_SINCE "job_since"

typedef enum bulk_file_kind { BF_ERROR, BF_OUTPUT, BF_DELETED } bulk_file_kind;

typedef struct bulk_file {
    poll_source *p;
    bulk_file_kind kind;
    const char *url;        /* in the manifest */
    const char *type;       /* output type (in the manifest), "?" when absent */
    size_t index;           /* in its manifest list */
    unsigned attempts;
    bool done;
    fhir_ndjson *nd;
    fhir_buf batch;         /* bytes received, not yet stored (capped) */
    fhir_error err;         /* cause set by the chunk/line callbacks */
    size_t changed_before;
    struct event *retry_timer;
} bulk_file;

/* The export job of the poll in progress. */
typedef struct bulk_state {
    struct event *timer;               /* status checks and kick-off retries */
    bool timer_kicks;                  /* the timer starts a kick-off (else a status check) */
    char *status_url;                  /* the export job's, while it exists */
    bool resumed;                      /* the job was started by an earlier run */
    unsigned status_polls;
    char since[POLL_CURSOR_MAX];       /* the job's _since ("" = none) */
    int64_t since_ms;
    int64_t busy_since_mono;           /* first refused kick-off of this poll (0 = none) */
    fhir_client_result *manifest;      /* the completed job's manifest (body) */
    bool no_auth;                      /* requiresAccessToken false */
    bulk_file *files;
    size_t n_files, next_file, running, finished;
    bool pumping;                      /* inside bulk_pump's loop (no re-entry) */
    bool all_types_failed;             /* an error or deleted file could not be read */
    unsigned issues_logged;
} bulk_state;

#define B(p) ((bulk_state *)(p)->state)

static void bulk_finish(poll_source *p);
static void bulk_pump(poll_source *p);

static void bulk_fail(poll_source *p, const char *reason, const char *msg)
{
    poll_log_err("bulk.failed", p, msg);
    poll_fail(p, reason);
    bulk_finish(p);
}

/* The cursor slot of a resource type, or -1 when the source does not read it. */
static long type_slot(const poll_source *p, const char *type)
{
    for (size_t i = 0; type && i < p->cfg->types.n; i++)
        if (!strcmp(p->cfg->types.v[i], type))
            return (long)i;
    return -1;
}

static void fail_type(poll_source *p, const char *type)
{
    long s = type_slot(p, type);
    if (s >= 0)
        p->type_ok[s] = false;
}

static void fail_all_types(poll_source *p)
{
    B(p)->all_types_failed = true;
    for (size_t i = 0; i < p->cfg->types.n; i++)
        p->type_ok[i] = false;
}

/* Writes (or clears, url NULL) the running job in the cursors, in its own transaction. */
static void job_remember(poll_source *p, const char *url, const char *since)
{
    store *st = p->env.st;
    fhir_error err;
    fhir_error_clear(&err);
    if (store_begin(st, &err) == 0) {
        if (store_cursor_put(st, p->cfg->name, BULK_CURSOR_JOB, url ? url : "", &err) == 0 &&
            store_cursor_put(st, p->cfg->name, BULK_CURSOR_JOB_SINCE, since ? since : "", &err) == 0 &&
            store_commit(st, &err) == 0)
            return;
        store_rollback(st);
    }
    poll_log_err("bulk.job_cursor_failed", p, err.msg);
}

static void file_reset(bulk_file *f)
{
    fhir_ndjson_free(f->nd);
    f->nd = NULL;
    fhir_buf_free(&f->batch);
}

static void bulk_files_free(poll_source *p)
{
    bulk_state *b = B(p);
    for (size_t i = 0; i < b->n_files; i++) {
        file_reset(&b->files[i]);
        if (b->files[i].retry_timer)
            event_free(b->files[i].retry_timer);
    }
    free(b->files);
    b->files = NULL;
    b->n_files = b->next_file = b->running = b->finished = 0;
    fhir_client_result_free(b->manifest);
    b->manifest = NULL;
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
    job_remember(p, NULL, NULL);
    poll_end(p);
}

/* Ends the poll: the job (if one was created) is DELETEd first, then poll_end. */
static void bulk_finish(poll_source *p)
{
    bulk_files_free(p);
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
        job_remember(p, NULL, NULL);
        poll_end(p);
    }
}

/* ---- the lines of the three kinds of files --------------------------------------------------- */

static const char *issue_text(const fhir_node *is)
{
    const char *t = fhir_node_path_str(is, "details.text");
    if (!t)
        t = fhir_node_str(fhir_node_get(is, "diagnostics"));
    if (!t)
        t = fhir_node_path_str(is, "details.coding.display");
    return t ? t : "";
}

/* Does s name the resource type t as a word ("Condition", "Condition.code", "Condition: x")? */
static bool names_type(const char *s, const char *t)
{
    size_t n = strlen(t);
    for (const char *q = s ? strstr(s, t) : NULL; q; q = strstr(q + 1, t)) {
        bool start = q == s || !((q[-1] >= 'A' && q[-1] <= 'Z') || (q[-1] >= 'a' && q[-1] <= 'z'));
        char e = q[n];
        bool end = !((e >= 'A' && e <= 'Z') || (e >= 'a' && e <= 'z'));
        if (start && end)
            return true;
    }
    return false;
}

/* One OperationOutcome of an error file: every issue counted; an error or fatal one fails
 * the types it names (in expression, location, text or diagnostics), or all. */
static void error_outcome(bulk_file *f, const fhir_node *oo)
{
    poll_source *p = f->p;
    bulk_state *b = B(p);
    for (const fhir_node *is = fhir_node_first(fhir_node_get(oo, "issue")); is; is = is->next) {
        p->bulk_issues++;
        const char *sev = fhir_node_str(fhir_node_get(is, "severity"));
        const char *code = fhir_node_str(fhir_node_get(is, "code"));
        bool fatal = sev && (!strcmp(sev, "error") || !strcmp(sev, "fatal"));
        char types[512] = "";
        size_t k = 0;
        for (size_t t = 0; t < p->cfg->types.n; t++) {
            const char *ty = p->cfg->types.v[t];
            bool named = names_type(issue_text(is), ty) ||
                         names_type(fhir_node_str(fhir_node_get(is, "diagnostics")), ty);
            for (const fhir_node *e = fhir_node_first(fhir_node_get(is, "expression")); e && !named;
                 e = e->next)
                named = names_type(fhir_node_str(e), ty);
            for (const fhir_node *e = fhir_node_first(fhir_node_get(is, "location")); e && !named;
                 e = e->next)
                named = names_type(fhir_node_str(e), ty);
            if (!named)
                continue;
            if (fatal)
                p->type_ok[t] = false;
            int w = snprintf(types + k, sizeof types - k, "%s%s", k ? "," : "", ty);
            if (w > 0 && (size_t)w < sizeof types - k)
                k += (size_t)w;
        }
        if (fatal && !types[0])
            fail_all_types(p);
        if (b->issues_logged++ < BULK_ISSUE_LOG_MAX) {
            fhir_log(fatal ? FHIR_LOG_WARN : FHIR_LOG_INFO, "bulk.error_issue",
                     "source=%s severity=%s code=%s types=%s fails=%s text=%s", p->cfg->name,
                     sev ? sev : "unknown", code ? code : "unknown", types[0] ? types : "all",
                     fatal ? "yes" : "no", issue_text(is));
        }
    }
}

/* "Condition/x", "http://h/fhir/Condition/x", "Condition/x/_history/2" -> type and id. */
static bool split_ref(const char *url, char *type, size_t tn, char *id, size_t in)
{
    if (!url)
        return false;
    const char *h = strstr(url, "/_history");
    size_t len = h ? (size_t)(h - url) : strlen(url);
    const char *slash = NULL;
    for (const char *q = url; q < url + len; q++)
        if (*q == '/')
            slash = q;
    if (!slash || slash == url)
        return false;
    const char *ts = slash - 1;
    while (ts > url && ts[-1] != '/')
        ts--;
    size_t tl = (size_t)(slash - ts), il = len - (size_t)(slash + 1 - url);
    if (!tl || !il || tl >= tn || il >= in)
        return false;
    memcpy(type, ts, tl);
    type[tl] = 0;
    memcpy(id, slash + 1, il);
    id[il] = 0;
    return type[0] >= 'A' && type[0] <= 'Z';
}

static int deleted_bundle(bulk_file *f, const fhir_node *bundle)
{
    poll_source *p = f->p;
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next) {
        const char *method = fhir_node_path_str(e, "request.method");
        char type[64], id[128];
        if (!method || strcmp(method, "DELETE") ||
            !split_ref(fhir_node_path_str(e, "request.url"), type, sizeof type, id, sizeof id))
            continue;
        if (poll_remove(p, type, id, &f->err))
            return 1;
    }
    return 0;
}

static int file_line(void *ud, const fhir_node *res, size_t line_no, fhir_error *err)
{
    bulk_file *f = ud;
    poll_source *p = f->p;
    (void)err; /* &f->err: file_store feeds the reader with it */
    const char *rt = fhir_node_resource_type(res);
    if (f->kind == BF_ERROR || (rt && !strcmp(rt, "OperationOutcome"))) {
        error_outcome(f, res);
        return 0;
    }
    if (f->kind == BF_DELETED)
        return deleted_bundle(f, res) ? (fhir_error_prefix(&f->err, "line %zu", line_no), 1) : 0;
    size_t unchanged = p->unchanged;
    if (poll_ingest(p, res, &f->err))
        return fhir_error_prefix(&f->err, "line %zu", line_no), 1;
    if (p->unchanged > unchanged) /* sent again although older than asked for */
        poll_note_since(p, B(p)->since_ms, res);
    return 0;
}

/* Feeds bytes to the file's NDJSON reader, storing their complete lines in one transaction;
 * with finish, the last line too. 0, or -1 with f->err set. */
static int file_store(bulk_file *f, const char *data, size_t len, bool finish)
{
    store *st = f->p->env.st;
    if (store_begin(st, &f->err))
        return -1;
    if ((len && fhir_ndjson_feed(f->nd, data, len, &f->err) < 0) ||
        (finish && fhir_ndjson_finish(f->nd, &f->err) < 0)) {
        store_rollback(st);
        if (!f->err.msg[0])
            fhir_error_set(&f->err, "NDJSON reader stopped");
        return -1;
    }
    return store_commit(st, &f->err) ? -1 : 0;
}

/* One chunk of a file, as it arrives: batched (bounded), stored when a batch fills. */
static int file_chunk(void *ud, const char *data, size_t len)
{
    bulk_file *f = ud;
    if (f->batch.len + len > BULK_BATCH_BYTES) {
        if (f->batch.len && file_store(f, f->batch.data, f->batch.len, false))
            return 1;
        fhir_buf_reset(&f->batch);
        if (len >= BULK_BATCH_BYTES)
            return file_store(f, data, len, false) ? 1 : 0;
    }
    if (fhir_buf_append(&f->batch, data, len) < 0) {
        fhir_error_set(&f->err, "download batch buffer overflow");
        return 1;
    }
    return 0;
}

/* ---- downloads ------------------------------------------------------------------------------- */

static const char *kind_name(bulk_file_kind k)
{
    return k == BF_ERROR ? "error" : k == BF_DELETED ? "deleted" : "output";
}

static void file_start(bulk_file *f);

/* A file is done with (read, or failed for good). */
static void file_finished(bulk_file *f, const char *failure, const char *reason)
{
    poll_source *p = f->p;
    bulk_state *b = B(p);
    file_reset(f);
    f->done = true;
    b->running--;
    b->finished++;
    if (failure) {
        char msg[1100];
        snprintf(msg, sizeof msg, "%s %zu (%s) after %u attempt%s: %s", kind_name(f->kind),
                 f->index, f->type, f->attempts, f->attempts == 1 ? "" : "s", failure);
        poll_log_err("bulk.file_failed", p, msg);
        poll_note_reason(p, reason);
        if (f->kind == BF_OUTPUT)
            fail_type(p, f->type);
        else
            fail_all_types(p); /* what failed, or what was deleted, is unknown */
    }
    bulk_pump(p);
}

static void on_file_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    file_start(arg);
}

static void on_file(void *ud, fhir_client_result *res)
{
    bulk_file *f = ud;
    poll_source *p = f->p;
    poll_count_result(p, res);
    char cause[FHIR_ERROR_MAX];
    cause[0] = 0;
    const char *reason = "ingest";
    if (res->err.msg[0]) {
        snprintf(cause, sizeof cause, "%s", f->err.msg[0] ? f->err.msg : res->err.msg);
        reason = f->err.msg[0] ? "ingest" : poll_reason_of(res);
    }
    fhir_client_result_free(res);
    /* the rest of the batch, and the last line (which may lack its newline) */
    if (!cause[0] && file_store(f, f->batch.data, f->batch.len, true))
        snprintf(cause, sizeof cause, "%s", f->err.msg[0] ? f->err.msg : "NDJSON reader stopped");
    if (!cause[0]) {
        fhir_log(FHIR_LOG_INFO, "bulk.file", "source=%s kind=%s type=%s changed=%zu lines=%zu attempt=%u",
                 p->cfg->name, kind_name(f->kind), f->type, p->changed - f->changed_before,
                 fhir_ndjson_stats_get(f->nd)->ok, f->attempts);
        file_finished(f, NULL, NULL);
        return;
    }
    file_reset(f);
    if (f->attempts < BULK_FILE_ATTEMPTS) {
        fhir_log(FHIR_LOG_WARN, "bulk.file_retry", "source=%s kind=%s type=%s attempt=%u error=%s",
                 p->cfg->name, kind_name(f->kind), f->type, f->attempts,
                 cause);
        if (!f->retry_timer)
            f->retry_timer = evtimer_new(p->env.base, on_file_retry, f);
        struct timeval tv = {.tv_sec = 1L << (f->attempts - 1)};
        evtimer_add(f->retry_timer, &tv);
        return;
    }
    file_finished(f, cause, reason);
}

static void file_start(bulk_file *f)
{
    poll_source *p = f->p;
    f->attempts++;
    fhir_error_clear(&f->err);
    fhir_json_limits lim = {.max_bytes = BULK_MAX_LINE_BYTES};
    f->nd = fhir_ndjson_new(&lim, file_line, NULL, f);
    fhir_buf_init(&f->batch, BULK_BATCH_BYTES);
    f->changed_before = p->changed;
    fhir_client_stream_request sr = {.url = f->url, .accept = "application/fhir+ndjson",
                                     .max_bytes = BULK_MAX_FILE_BYTES,
                                     .timeout_ms = p->cfg->timeout_s * 1000L * 10L,
                                     .no_auth = B(p)->no_auth};
    fhir_error err;
    fhir_error_clear(&err);
    if (fhir_client_get_stream(p->client, &sr, file_chunk, on_file, f, &err)) {
        f->attempts = BULK_FILE_ATTEMPTS; /* refused before sending (another origin): for good */
        file_finished(f, err.msg, "other");
    }
}

/* Starts files while fewer than download_concurrency run; when every file is done, the
 * cursors of the types read completely are written and the job is DELETEd. */
static void bulk_pump(poll_source *p)
{
    bulk_state *b = B(p);
    if (b->pumping)
        return; /* a file refused at once, from the loop below: it goes on from there */
    b->pumping = true;
    while (b->next_file < b->n_files && b->running < (size_t)p->cfg->download_concurrency) {
        bulk_file *f = &b->files[b->next_file++];
        b->running++;
        file_start(f);
    }
    b->pumping = false;
    if (b->finished < b->n_files || b->running)
        return;
    size_t nt = p->cfg->types.n;
    bool complete = true;
    for (size_t i = 0; i < nt; i++)
        complete = complete && p->type_ok[i];
    if (!complete)
        poll_fail(p, "incomplete"); /* the types read completely still advance (a file's
                                      * failure noted its own reason first) */
    char **keys = calloc(nt + 1, sizeof *keys);
    if (!keys)
        abort();
    for (size_t i = 0; i < nt; i++) {
        keys[i] = malloc(POLL_CURSOR_MAX + 80);
        if (!keys[i])
            abort();
        snprintf(keys[i], POLL_CURSOR_MAX + 80, "transactionTime:%s", p->cfg->types.v[i]);
    }
    poll_commit_cursors(p, nt, (const char *const *)keys);
    for (size_t i = 0; i < nt; i++)
        free(keys[i]);
    free(keys);
    bulk_finish(p);
}

static void add_files(poll_source *p, const fhir_node *list, bulk_file_kind kind)
{
    bulk_state *b = B(p);
    size_t i = 0;
    for (const fhir_node *o = fhir_node_first(list); o; o = o->next, i++) {
        if (b->n_files >= BULK_MAX_FILES)
            return;
        bulk_file *f = &b->files[b->n_files++];
        memset(f, 0, sizeof *f);
        f->p = p;
        f->kind = kind;
        f->index = i;
        f->url = fhir_node_str(fhir_node_get(o, "url"));
        f->type = fhir_node_str(fhir_node_get(o, "type"));
        if (!f->type)
            f->type = "?";
        if (kind == BF_OUTPUT && !strcmp(f->type, "OperationOutcome"))
            f->kind = BF_ERROR;
    }
}

static void bulk_manifest(poll_source *p, fhir_client_result *res)
{
    bulk_state *b = B(p);
    const fhir_node *m = res->body;
    const char *tt = fhir_node_str(fhir_node_get(m, "transactionTime"));
    for (size_t i = 0; i < p->cfg->types.n; i++)
        snprintf(p->cursor_new[i], sizeof p->cursor_new[i], "%s", tt);
    b->manifest = res;
    b->no_auth = !fhir_node_bool(fhir_node_get(m, "requiresAccessToken"), true);
    size_t n = fhir_node_count(fhir_node_get(m, "error")) + fhir_node_count(fhir_node_get(m, "output")) +
               fhir_node_count(fhir_node_get(m, "deleted"));
    if (n > BULK_MAX_FILES)
        n = BULK_MAX_FILES;
    b->files = calloc(n + 1, sizeof *b->files);
    if (!b->files)
        abort();
    add_files(p, fhir_node_get(m, "error"), BF_ERROR);
    add_files(p, fhir_node_get(m, "output"), BF_OUTPUT);
    add_files(p, fhir_node_get(m, "deleted"), BF_DELETED);
    for (size_t i = 0; i < b->n_files; i++)
        if (!b->files[i].url) {
            bulk_fail(p, "parse", "manifest entry without url");
            return;
        }
    fhir_log(FHIR_LOG_INFO, "bulk.manifest",
             "source=%s output=%zu error=%zu deleted=%zu requires_access_token=%s since=%s",
             p->cfg->name, fhir_node_count(fhir_node_get(m, "output")),
             fhir_node_count(fhir_node_get(m, "error")), fhir_node_count(fhir_node_get(m, "deleted")),
             b->no_auth ? "false" : "true", b->since[0] ? b->since : "none");
    bulk_pump(p);
}

/* ---- kick-off and status --------------------------------------------------------------------- */

static void bulk_kickoff(poll_source *p);

static void on_bulk_status_done(void *ud, fhir_client_result *res)
{
    poll_source *p = ud;
    bulk_state *b = B(p);
    poll_count_result(p, res);
    if (res->status == 404 && b->resumed) {
        /* the job of an earlier run is gone: start a new one */
        fhir_client_result_free(res);
        fhir_log(FHIR_LOG_INFO, "bulk.resume_gone", "source=%s", p->cfg->name);
        free(b->status_url);
        b->status_url = NULL;
        b->resumed = false;
        job_remember(p, NULL, NULL);
        bulk_kickoff(p);
        return;
    }
    if (res->err.msg[0]) {
        char msg[900];
        snprintf(msg, sizeof msg, "status request: %s", res->err.msg);
        const char *reason = poll_reason_of(res);
        fhir_client_result_free(res);
        bulk_fail(p, reason, msg);
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
        if (++b->status_polls > BULK_MAX_STATUS_POLLS) {
            bulk_fail(p, "timeout", "export not complete after the status poll limit");
            return;
        }
        b->timer_kicks = false;
        struct timeval tv = {.tv_sec = delay / 1000, .tv_usec = (delay % 1000) * 1000};
        evtimer_add(b->timer, &tv);
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
        const char *reason = res->status == 200 ? "parse" : "other";
        fhir_client_result_free(res);
        bulk_fail(p, reason, msg);
        return;
    }
    fhir_log(FHIR_LOG_DEBUG, "bulk.complete", "source=%s status_polls=%u", p->cfg->name, b->status_polls);
    bulk_manifest(p, res);
}

static void on_bulk_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    poll_source *p = arg;
    if (B(p)->timer_kicks) {
        bulk_kickoff(p);
        return;
    }
    fhir_client_request st = {.method = "GET", .path = B(p)->status_url, .accept = "application/json",
                              .accept_202 = true};
    fhir_error err;
    fhir_error_clear(&err);
    if (fhir_client_send(p->client, &st, on_bulk_status_done, p, &err))
        bulk_fail(p, "other", err.msg);
}

static void start_status(poll_source *p)
{
    B(p)->status_polls = 0;
    B(p)->timer_kicks = false;
    struct timeval tv = {0, 0};
    evtimer_add(B(p)->timer, &tv);
}

/* A kick-off refused because a job is already running: 429, or an error whose
 * OperationOutcome says so (Oracle Health allows one job per client). */
static bool job_running(const fhir_client_result *res)
{
    if (res->status == 429)
        return true;
    if (res->status < 400 || !res->err.msg[0])
        return false;
    char low[FHIR_ERROR_MAX];
    size_t n = 0;
    for (const char *c = res->err.msg; *c && n + 1 < sizeof low; c++)
        low[n++] = (char)((*c >= 'A' && *c <= 'Z') ? *c + 32 : *c);
    low[n] = 0;
    static const char *const words[] = {"already running", "already in progress",
                                        "already exists", "concurrent", "one export",
                                        "in progress", "too many"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strstr(low, words[i]))
            return true;
    return false;
}

static void on_bulk_kickoff(void *ud, fhir_client_result *res)
{
    poll_source *p = ud;
    bulk_state *b = B(p);
    poll_count_result(p, res);
    if (job_running(res)) {
        int64_t now = fhir_clock_mono_ms();
        if (!b->busy_since_mono)
            b->busy_since_mono = now;
        int64_t waited = now - b->busy_since_mono;
        int64_t delay = BULK_BUSY_DEFAULT_MS;
        if (res->retry_after &&
            fhir_retry_parse_retry_after(res->retry_after, fhir_clock_now_ms(), &delay) != 0)
            delay = BULK_BUSY_DEFAULT_MS;
        if (delay < 1000)
            delay = 1000;
        if (delay > 300000)
            delay = 300000;
        fhir_log(FHIR_LOG_WARN, "bulk.busy",
                 "source=%s status=%ld waited_ms=%lld retry_in_ms=%lld error=%s", p->cfg->name,
                 res->status, (long long)waited, (long long)delay,
                 res->err.msg);
        if (waited + delay > (int64_t)p->cfg->busy_wait_s * 1000) {
            char msg[FHIR_ERROR_MAX + 200];
            snprintf(msg, sizeof msg, "kick-off refused for %lld s: the server is running another "
                     "export job (%s)", (long long)(waited / 1000), res->err.msg);
            fhir_client_result_free(res);
            bulk_fail(p, "timeout", msg);
            return;
        }
        fhir_client_result_free(res);
        b->timer_kicks = true;
        struct timeval tv = {.tv_sec = delay / 1000, .tv_usec = (delay % 1000) * 1000};
        evtimer_add(b->timer, &tv);
        return;
    }
    if (res->err.msg[0] || res->status != 202 || !res->content_location) {
        char msg[900];
        if (res->err.msg[0])
            snprintf(msg, sizeof msg, "kick-off: %s", res->err.msg);
        else
            snprintf(msg, sizeof msg, "kick-off: HTTP %ld%s", res->status,
                     res->content_location ? "" : " without Content-Location");
        const char *reason = res->err.msg[0] ? poll_reason_of(res) : "other";
        fhir_client_result_free(res);
        bulk_fail(p, reason, msg);
        return;
    }
    b->status_url = fhir_xstrdup(res->content_location);
    fhir_client_result_free(res);
    job_remember(p, b->status_url, b->since);
    fhir_log(FHIR_LOG_INFO, "bulk.started", "source=%s since=%s full_refresh=%s", p->cfg->name,
             b->since[0] ? b->since : "none", p->full_refresh ? "true" : "false");
    start_status(p);
}

static void bulk_kickoff(poll_source *p)
{
    bulk_state *b = B(p);
    fhir_buf u;
    fhir_buf_init(&u, 8192);
    fhir_buf_printf(&u, "Group/%s/$export?_type=", p->cfg->group_id);
    for (size_t i = 0; i < p->cfg->types.n; i++)
        fhir_buf_printf(&u, "%s%s", i ? "," : "", p->cfg->types.v[i]);
    if (b->since[0]) {
        char enc[128];
        poll_enc_instant(enc, sizeof enc, b->since);
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
        bulk_fail(p, "other", err.msg);
}

/* The cursor of type slot i: its own, else the single cursor of older versions, else the
 * configured since. Borrowed until the poll ends (NULL: none). */
static const char *type_cursor(poll_source *p, size_t i, const char *legacy)
{
    char key[POLL_CURSOR_MAX + 80];
    snprintf(key, sizeof key, "transactionTime:%s", p->cfg->types.v[i]);
    char *v = NULL;
    fhir_error err;
    fhir_error_clear(&err);
    if (store_cursor_get(p->env.st, p->cfg->name, key, &v, &err) == 0 && v && v[0]) {
        p->cursor_old[i] = v;
        return v;
    }
    free(v);
    if (legacy) {
        p->cursor_old[i] = fhir_xstrdup(legacy);
        return p->cursor_old[i];
    }
    return p->cfg->since ? (p->cursor_old[i] = fhir_xstrdup(p->cfg->since)) : NULL;
}

static void bulk_poll(poll_source *p)
{
    bulk_state *b = B(p);
    size_t nt = p->cfg->types.n;
    poll_alloc_slots(p, nt);
    b->busy_since_mono = 0;
    b->issues_logged = 0;
    b->all_types_failed = false;
    b->since[0] = 0;
    b->since_ms = 0;
    fhir_error err;
    fhir_error_clear(&err);
    /* a job of an earlier run that was never DELETEd: resumed, never a second one */
    char *job = NULL, *job_since = NULL;
    store_cursor_get(p->env.st, p->cfg->name, BULK_CURSOR_JOB, &job, &err);
    store_cursor_get(p->env.st, p->cfg->name, BULK_CURSOR_JOB_SINCE, &job_since, &err);
    char *legacy = NULL;
    store_cursor_get(p->env.st, p->cfg->name, "transactionTime", &legacy, &err);
    bool full = poll_full_refresh_due(p);
    /* the oldest type cursor (a type without one: everything) */
    int64_t oldest = 0;
    const char *since = NULL;
    bool all = full;
    for (size_t i = 0; i < nt; i++) {
        const char *c = type_cursor(p, i, legacy && legacy[0] ? legacy : NULL);
        int64_t ms = poll_instant_ms(c);
        if (!ms)
            all = true;
        else if (!oldest || ms < oldest) {
            oldest = ms;
            since = c;
        }
    }
    if (!all && since && strlen(since) < sizeof b->since) {
        snprintf(b->since, sizeof b->since, "%s", since);
        b->since_ms = oldest;
    }
    free(legacy);
    if (job && job[0]) {
        b->status_url = job;
        b->resumed = true;
        if (job_since && strlen(job_since) < sizeof b->since) {
            snprintf(b->since, sizeof b->since, "%s", job_since);
            b->since_ms = poll_instant_ms(job_since);
        }
        free(job_since);
        fhir_log(FHIR_LOG_INFO, "bulk.resumed", "source=%s since=%s", p->cfg->name,
                 b->since[0] ? b->since : "none");
        start_status(p);
        return;
    }
    free(job);
    free(job_since);
    b->resumed = false;
    bulk_kickoff(p);
}

/* An export abandoned at shutdown or reload: ask the server to drop the job (its data was
 * never completely stored and the cursors never advanced, so the next poll starts over). The
 * source's client is going away with the loop's pending work, so this one request runs on a
 * private client and loop, bounded by a short timeout and a single attempt. Once the job is
 * gone it is forgotten; when the DELETE fails the next run resumes it. */
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
    if (r->err.msg[0] && r->status != 404) {
        poll_log_err("bulk.delete_failed", p, r->err.msg);
    } else {
        fhir_log(FHIR_LOG_DEBUG, "bulk.deleted", "source=%s status=%ld", p->cfg->name, r->status);
        job_remember(p, NULL, NULL);
    }
    fhir_client_result_free(r);
    fhir_client_free(c);
}

static int bulk_init(poll_source *p, fhir_error *err)
{
    (void)err;
    p->state = calloc(1, sizeof(bulk_state));
    if (!p->state)
        abort();
    B(p)->timer = evtimer_new(p->env.base, on_bulk_timer, p);
    return 0;
}

static void bulk_reset(poll_source *p)
{
    bulk_files_free(p);
}

static void bulk_free(poll_source *p)
{
    bulk_state *b = B(p);
    if (b->timer)
        event_free(b->timer);
    if (b->status_url) {
        bulk_abandon(p);
        free(b->status_url);
    }
    bulk_files_free(p);
    free(b);
    p->state = NULL;
}

const poll_impl poll_bulk_impl = {
    .kind = CONFIG_SOURCE_BULK,
    .http = true,
    .init = bulk_init,
    .start = bulk_poll,
    .reset = bulk_reset,
    .free = bulk_free,
};
