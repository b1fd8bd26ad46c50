/* poll_source — discovery strategies of one source (see poll_source.h). */
#include "poll_source.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "fhir_alloc.h"
#include "fhir_buf.h"
#include "fhir_client.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "fhir_ndjson.h"
#include "fhir_retry.h"

#define POLL_MAX_FILES 10000
#define POLL_MAX_MEMBERS 1000000

typedef struct poll_op poll_op;

struct poll_source {
    daemon *d;
    const config_source *cfg; /* borrowed from the daemon's config (see daemon.c) */
    fhir_client *client;
    struct event *timer;
    bool busy, paused, done_once;
    /* the poll in progress */
    int pending;
    bool failed;
    size_t changed, unchanged;
    int64_t started_mono;
    char **cursor_old;        /* per type (search) or [0] (group) */
    char (*cursor_new)[48];   /* largest meta.lastUpdated seen */
    int64_t *cursor_new_ms;
    bool *type_ok;
    char **members;           /* group */
    bool *member_new;
    size_t n_members;
    poll_op **ops;            /* every op of this poll, freed at the end */
    size_t n_ops, cap_ops;
    /* bulk */
    struct event *bulk_timer;
    char *status_url;         /* the export job's, while it exists */
    unsigned status_polls;
    fhir_client_result *bulk_manifest; /* the completed job's manifest (body) */
    const fhir_node *bulk_out;         /* the output being downloaded (in the manifest) */
    size_t bulk_files;
    size_t bulk_changed_before;
    fhir_ndjson *bulk_nd;              /* the output's NDJSON reader */
    fhir_buf bulk_batch;               /* bytes received, not yet stored (capped) */
    fhir_error bulk_err;               /* cause set by the chunk/line callbacks */
};

struct poll_op {
    poll_source *p;
    size_t slot;      /* cursor slot (type index for search, 0 for group) */
    size_t type;
    long member;      /* -1 when not per member */
};

static void log_err(const char *event, const poll_source *p, const char *msg)
{
    fhir_log(FHIR_LOG_WARN, event, "source=%s error=%s", p->cfg->name, msg);
}

const char *poll_source_name(const poll_source *p)
{
    return p->cfg->name;
}
bool poll_source_busy(const poll_source *p)
{
    return p->busy;
}
bool poll_source_done_once(const poll_source *p)
{
    return p->done_once;
}

static void schedule(poll_source *p, long seconds)
{
    if (p->paused)
        return;
    struct timeval tv = {.tv_sec = seconds};
    evtimer_add(p->timer, &tv);
}

static void poll_reset(poll_source *p)
{
    size_t nt = p->cfg->types.n;
    if (p->cursor_old)
        for (size_t i = 0; i < nt; i++)
            free(p->cursor_old[i]);
    free(p->cursor_old);
    free(p->cursor_new);
    free(p->cursor_new_ms);
    free(p->type_ok);
    for (size_t i = 0; i < p->n_members; i++)
        free(p->members[i]);
    free(p->members);
    free(p->member_new);
    for (size_t i = 0; i < p->n_ops; i++)
        free(p->ops[i]);
    free(p->ops);
    p->cursor_old = NULL;
    p->cursor_new = NULL;
    p->cursor_new_ms = NULL;
    p->type_ok = NULL;
    p->members = NULL;
    p->member_new = NULL;
    p->n_members = 0;
    p->ops = NULL;
    p->n_ops = p->cap_ops = 0;
    p->pending = 0;
    p->failed = false;
    p->changed = p->unchanged = 0;
}

static void poll_end(poll_source *p)
{
    daemon_src_metrics *m = daemon_src_metrics_get(p->d, p->cfg->name);
    m->resources += p->changed;
    m->unchanged += p->unchanged;
    if (p->failed)
        m->polls_failed++;
    else {
        m->polls_ok++;
        m->last_success_ms = fhir_clock_now_ms();
        p->done_once = true;
    }
    fhir_log(p->failed ? FHIR_LOG_WARN : FHIR_LOG_INFO, "poll.done",
             "source=%s kind=%s result=%s changed=%zu unchanged=%zu ms=%lld", p->cfg->name,
             config_source_kind_name(p->cfg->kind), p->failed ? "failed" : "ok", p->changed, p->unchanged,
             (long long)(fhir_clock_mono_ms() - p->started_mono));
    poll_reset(p);
    p->busy = false;
    schedule(p, p->cfg->interval_s);
    daemon_poll_finished(p->d, p, !p->failed);
}

static poll_op *op_new(poll_source *p, size_t slot, size_t type, long member)
{
    if (p->n_ops == p->cap_ops) {
        p->cap_ops = p->cap_ops ? p->cap_ops * 2 : 16;
        poll_op **n = realloc(p->ops, p->cap_ops * sizeof *n);
        if (!n)
            abort();
        p->ops = n;
    }
    poll_op *o = calloc(1, sizeof *o);
    if (!o)
        abort();
    o->p = p;
    o->slot = slot;
    o->type = type;
    o->member = member;
    p->ops[p->n_ops++] = o;
    return o;
}

/* ---- files ------------------------------------------------------------------------------- */

typedef struct file_ctx {
    poll_source *p;
    fhir_error *err;
} file_ctx;

static int file_line(void *ud, const fhir_node *res, size_t line_no)
{
    file_ctx *f = ud;
    if (daemon_ingest(f->p->d, f->p->cfg->name, res, &f->p->changed, &f->p->unchanged, f->err))
        return fhir_error_prefix(f->err, "line %zu", line_no), 1;
    return 0;
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n > m && !strcmp(s + n - m, suf);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ensure_dir(const char *path)
{
    if (mkdir(path, 0750) == 0 || errno == EEXIST)
        return 0;
    return -1;
}

static void move_to(const char *dir, const char *sub, const char *name, const char *note)
{
    char from[4096], to[4096];
    snprintf(from, sizeof from, "%s/%s", dir, name);
    snprintf(to, sizeof to, "%s/%s", dir, sub);
    ensure_dir(to);
    snprintf(to, sizeof to, "%s/%s/%s", dir, sub, name);
    if (rename(from, to) != 0)
        fhir_log(FHIR_LOG_ERROR, "files.move_failed", "file=%s to=%s errno=%d", name, sub, errno);
    if (note) {
        char ep[4200];
        snprintf(ep, sizeof ep, "%s.error", to);
        FILE *f = fopen(ep, "w");
        if (f) {
            fprintf(f, "%s\n", note);
            fclose(f);
        }
    }
}

static int file_process(poll_source *p, const char *path, fhir_error *err)
{
    store *st = p->d->st;
    if (store_begin(st, err))
        return -1;
    int rc = 0;
    file_ctx fc = {.p = p, .err = err};
    if (has_suffix(path, ".ndjson") || has_suffix(path, ".jsonl")) {
        fhir_json_limits lim = {.max_bytes = POLL_DROP_LINE_MAX};
        fhir_ndjson *r = fhir_ndjson_new(&lim, file_line, NULL, &fc);
        rc = fhir_ndjson_read_path(r, path, err);
        fhir_ndjson_free(r);
    } else {
        fhir_arena *a = fhir_arena_new(0);
        fhir_json_limits lim = {.max_bytes = POLL_DROP_BUNDLE_MAX};
        fhir_node *n = fhir_json_parse_file(a, path, &lim, err);
        rc = n ? daemon_ingest(p->d, p->cfg->name, n, &p->changed, &p->unchanged, err) : -1;
        fhir_arena_free(a);
    }
    if (rc) {
        store_rollback(st);
        return -1;
    }
    return store_commit(st, err);
}

static void files_poll(poll_source *p)
{
    const char *dir = p->cfg->dir;
    DIR *dh = opendir(dir);
    if (!dh) {
        char msg[600];
        snprintf(msg, sizeof msg, "cannot open drop folder: %s", strerror(errno));
        log_err("files.failed", p, msg);
        p->failed = true;
        poll_end(p);
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(dh)) && n < POLL_MAX_FILES) {
        if (e->d_name[0] == '.')
            continue;
        if (!has_suffix(e->d_name, ".json") && !has_suffix(e->d_name, ".ndjson") &&
            !has_suffix(e->d_name, ".jsonl"))
            continue;
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(full, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn)
                abort();
            names = nn;
        }
        names[n++] = fhir_xstrdup(e->d_name);
    }
    closedir(dh);
    if (n)
        qsort(names, n, sizeof *names, cmp_str);
    size_t done = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", dir, names[i]);
        fhir_error err;
        fhir_error_clear(&err);
        size_t before = p->changed;
        if (file_process(p, full, &err) == 0) {
            move_to(dir, "done", names[i], NULL);
            done++;
            fhir_log(FHIR_LOG_INFO, "files.done", "source=%s file=%s changed=%zu", p->cfg->name, names[i],
                     p->changed - before);
        } else {
            p->changed = before;
            move_to(dir, "failed", names[i], err.msg);
            bad++;
            fhir_log(FHIR_LOG_WARN, "files.failed", "source=%s file=%s error=%s", p->cfg->name, names[i],
                     err.msg);
        }
        free(names[i]);
    }
    /* screening waits for the whole drop: a bulk export writes one file per type, and a
     * patient screened between Condition.ndjson and MedicationAdministration.ndjson would get
     * a verdict (and maybe a proposal) from half of its data */
    free(names);
    /* a bad file is reported (and kept in failed/), not a failed poll */
    poll_end(p);
}

/* ---- HTTP helpers --------------------------------------------------------------------- */

/* Appends the value URL-encoded enough for an instant ('+' and ':' are the risks). */
static void enc_instant(char *out, size_t outlen, const char *v)
{
    size_t k = 0;
    for (const char *s = v; *s && k + 4 < outlen; s++) {
        if (*s == '+' || *s == ':' || *s == ' ') {
            k += (size_t)snprintf(out + k, outlen - k, "%%%02X", (unsigned char)*s);
        } else
            out[k++] = *s;
    }
    out[k] = 0;
}

static void note_last_updated(poll_source *p, size_t slot, const fhir_node *res)
{
    const char *lu = fhir_node_path_str(res, "meta.lastUpdated");
    int64_t ms;
    if (!lu || strlen(lu) >= sizeof p->cursor_new[0] || fhir_clock_parse_instant(lu, &ms) != 0)
        return;
    if (!p->cursor_new[slot][0] || ms > p->cursor_new_ms[slot]) {
        snprintf(p->cursor_new[slot], sizeof p->cursor_new[slot], "%s", lu);
        p->cursor_new_ms[slot] = ms;
    }
}

/* One search page: stored in one transaction. */
static int on_page(void *ud, const fhir_node *bundle, unsigned page_no)
{
    poll_op *o = ud;
    poll_source *p = o->p;
    (void)page_no;
    fhir_error err;
    fhir_error_clear(&err);
    if (store_begin(p->d->st, &err)) {
        log_err("poll.store_failed", p, err.msg);
        return 1;
    }
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next) {
        const fhir_node *r = fhir_node_get(e, "resource");
        if (!r)
            continue;
        const char *mode = fhir_node_path_str(e, "search.mode");
        if (mode && !strcmp(mode, "outcome"))
            continue;
        if (daemon_ingest(p->d, p->cfg->name, r, &p->changed, &p->unchanged, &err)) {
            store_rollback(p->d->st);
            log_err("poll.store_failed", p, err.msg);
            return 1;
        }
        note_last_updated(p, o->slot, r);
    }
    if (store_commit(p->d->st, &err)) {
        log_err("poll.store_failed", p, err.msg);
        return 1;
    }
    return 0;
}

static void count_result(poll_source *p, const fhir_client_result *res)
{
    daemon_count_status(daemon_src_metrics_get(p->d, p->cfg->name), res->status);
}

/* Writes the cursors the finished poll earned (after its data was committed). */
static void commit_cursors(poll_source *p, size_t nslots, const char *const *keys)
{
    fhir_error err;
    fhir_error_clear(&err);
    if (store_begin(p->d->st, &err)) {
        log_err("poll.cursor_failed", p, err.msg);
        p->failed = true;
        return;
    }
    for (size_t i = 0; i < nslots; i++) {
        if (!p->type_ok[i] || !p->cursor_new[i][0])
            continue;
        if (store_cursor_put(p->d->st, p->cfg->name, keys[i], p->cursor_new[i], &err)) {
            store_rollback(p->d->st);
            log_err("poll.cursor_failed", p, err.msg);
            p->failed = true;
            return;
        }
    }
    /* group: members whose data is now stored are no longer new */
    for (size_t i = 0; i < p->n_members; i++) {
        if (!p->member_new[i] || !p->type_ok[0])
            continue;
        char key[300];
        snprintf(key, sizeof key, "member:%s", p->members[i]);
        if (store_cursor_put(p->d->st, p->cfg->name, key, "1", &err)) {
            store_rollback(p->d->st);
            p->failed = true;
            return;
        }
    }
    if (store_commit(p->d->st, &err)) {
        log_err("poll.cursor_failed", p, err.msg);
        p->failed = true;
    }
}

static void search_finish(poll_source *p)
{
    size_t nt = p->cfg->types.n;
    char **keys = calloc(nt, sizeof *keys);
    if (!keys)
        abort();
    for (size_t i = 0; i < nt; i++) {
        keys[i] = malloc(160);
        if (!keys[i])
            abort();
        snprintf(keys[i], 160, "lastUpdated:%s", p->cfg->types.v[i]);
    }
    commit_cursors(p, nt, (const char *const *)keys);
    for (size_t i = 0; i < nt; i++)
        free(keys[i]);
    free(keys);
    poll_end(p);
}

static void on_search_done(void *ud, fhir_client_result *res)
{
    poll_op *o = ud;
    poll_source *p = o->p;
    count_result(p, res);
    if (res->err.msg[0]) {
        char msg[800];
        snprintf(msg, sizeof msg, "%s: %s", p->cfg->types.v[o->type], res->err.msg);
        log_err("poll.search_failed", p, msg);
        p->failed = true;
        p->type_ok[o->slot] = false;
    }
    fhir_client_result_free(res);
    if (--p->pending > 0)
        return;
    if (p->cfg->kind == CONFIG_SOURCE_GROUP) {
        const char *key = "lastUpdated";
        commit_cursors(p, 1, &key);
        poll_end(p);
    } else
        search_finish(p);
}

static int start_search(poll_source *p, poll_op *o, const char *query)
{
    fhir_error err;
    fhir_error_clear(&err);
    if (fhir_client_search(p->client, query, on_page, on_search_done, o, &err)) {
        log_err("poll.search_failed", p, err.msg);
        p->failed = true;
        p->type_ok[o->slot] = false;
        return -1;
    }
    p->pending++;
    return 0;
}

static void alloc_slots(poll_source *p, size_t n)
{
    p->cursor_old = calloc(p->cfg->types.n + 1, sizeof *p->cursor_old);
    p->cursor_new = calloc(n, sizeof *p->cursor_new);
    p->cursor_new_ms = calloc(n, sizeof *p->cursor_new_ms);
    p->type_ok = calloc(n, sizeof *p->type_ok);
    if (!p->cursor_old || !p->cursor_new || !p->cursor_new_ms || !p->type_ok)
        abort();
    for (size_t i = 0; i < n; i++)
        p->type_ok[i] = true;
}

static const char *initial_cursor(poll_source *p, const char *key, size_t slot)
{
    fhir_error err;
    char *v = NULL;
    if (store_cursor_get(p->d->st, p->cfg->name, key, &v, &err) == 0 && v) {
        p->cursor_old[slot] = v;
        return v;
    }
    free(v);
    if (p->cfg->since) {
        p->cursor_old[slot] = fhir_xstrdup(p->cfg->since);
        return p->cursor_old[slot];
    }
    return NULL;
}

/* ---- search ----------------------------------------------------------------------------- */

static void search_poll(poll_source *p)
{
    size_t nt = p->cfg->types.n;
    alloc_slots(p, nt);
    for (size_t i = 0; i < nt; i++) {
        char key[160];
        snprintf(key, sizeof key, "lastUpdated:%s", p->cfg->types.v[i]);
        const char *cur = initial_cursor(p, key, i);
        char q[512], enc[128];
        if (cur) {
            enc_instant(enc, sizeof enc, cur);
            snprintf(q, sizeof q, "%s?_lastUpdated=ge%s&_count=%ld", p->cfg->types.v[i], enc, p->cfg->page_size);
        } else
            snprintf(q, sizeof q, "%s?_count=%ld", p->cfg->types.v[i], p->cfg->page_size);
        start_search(p, op_new(p, i, i, -1), q);
    }
    if (p->pending == 0)
        search_finish(p);
}

/* ---- group -------------------------------------------------------------------------------- */

static void group_members_start(poll_source *p)
{
    const char *cur = p->cursor_old[0];
    char enc[128] = "";
    if (cur)
        enc_instant(enc, sizeof enc, cur);
    for (size_t m = 0; m < p->n_members; m++) {
        for (size_t t = 0; t < p->cfg->types.n; t++) {
            const char *type = p->cfg->types.v[t];
            if (!strcmp(type, "Medication") || !strcmp(type, "Group"))
                continue; /* not patient-compartment searches: see below */
            char q[600];
            int k = !strcmp(type, "Patient")
                        ? snprintf(q, sizeof q, "Patient?_id=%s", p->members[m])
                        : snprintf(q, sizeof q, "%s?patient=%s", type, p->members[m]);
            if (cur && !p->member_new[m])
                k += snprintf(q + k, sizeof q - (size_t)k, "&_lastUpdated=ge%s", enc);
            snprintf(q + k, sizeof q - (size_t)k, "&_count=%ld", p->cfg->page_size);
            if (start_search(p, op_new(p, 0, t, (long)m), q))
                break;
        }
        if (p->failed)
            break;
    }
    /* Medications referenced by the members' medication resources are not in any patient's
     * compartment: one population search (EHRs that refuse it fail the poll visibly) */
    for (size_t t = 0; t < p->cfg->types.n && !p->failed; t++) {
        if (strcmp(p->cfg->types.v[t], "Medication"))
            continue;
        char q[300];
        int k = snprintf(q, sizeof q, "Medication?_count=%ld", p->cfg->page_size);
        if (cur)
            snprintf(q + k, sizeof q - (size_t)k, "&_lastUpdated=ge%s", enc);
        start_search(p, op_new(p, 0, t, -1), q);
    }
    if (p->pending == 0) {
        const char *key = "lastUpdated";
        commit_cursors(p, 1, &key);
        poll_end(p);
    }
}

static void on_group(void *ud, fhir_client_result *res)
{
    poll_op *o = ud;
    poll_source *p = o->p;
    count_result(p, res);
    p->pending--;
    if (res->err.msg[0] || !res->body) {
        log_err("poll.group_failed", p, res->err.msg[0] ? res->err.msg : "empty Group");
        fhir_client_result_free(res);
        p->failed = true;
        poll_end(p);
        return;
    }
    size_t cap = fhir_node_count(fhir_node_get(res->body, "member"));
    if (cap > POLL_MAX_MEMBERS)
        cap = POLL_MAX_MEMBERS;
    p->members = calloc(cap + 1, sizeof *p->members);
    p->member_new = calloc(cap + 1, sizeof *p->member_new);
    if (!p->members || !p->member_new)
        abort();
    for (const fhir_node *m = fhir_node_first(fhir_node_get(res->body, "member")); m && p->n_members < cap;
         m = m->next) {
        if (fhir_node_bool(fhir_node_get(m, "inactive"), false))
            continue;
        const char *ref = fhir_node_path_str(m, "entity.reference");
        if (!ref || strncmp(ref, "Patient/", 8) || !ref[8] || strlen(ref) > 72)
            continue;
        bool ok = true;
        for (const char *c = ref + 8; *c; c++)
            if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' ||
                  *c == '.'))
                ok = false;
        if (!ok)
            continue;
        char key[300];
        snprintf(key, sizeof key, "member:%s", ref + 8);
        char *v = NULL;
        fhir_error err;
        store_cursor_get(p->d->st, p->cfg->name, key, &v, &err);
        p->member_new[p->n_members] = v == NULL;
        free(v);
        p->members[p->n_members++] = fhir_xstrdup(ref + 8);
    }
    fhir_client_result_free(res);
    fhir_log(FHIR_LOG_DEBUG, "poll.group", "source=%s members=%zu", p->cfg->name, p->n_members);
    group_members_start(p);
}

static void group_poll(poll_source *p)
{
    alloc_slots(p, 1);
    initial_cursor(p, "lastUpdated", 0);
    fhir_error err;
    fhir_error_clear(&err);
    poll_op *o = op_new(p, 0, 0, -1);
    if (fhir_client_read(p->client, "Group", p->cfg->group_id, on_group, o, &err)) {
        log_err("poll.group_failed", p, err.msg);
        p->failed = true;
        poll_end(p);
        return;
    }
    p->pending++;
}


/* ---- bulk ------------------------------------------------------------------------------------
 * Every $export exchange is an asynchronous fhir_client operation on the daemon's loop, with
 * the source's auth (bearer, Basic, SMART): the kick-off (202 + Content-Location), the status
 * checks (202 + Retry-After while in progress, waited for on a timer; 429/5xx are retried by
 * the client), the manifest, one streaming GET per output file (in manifest order, one at a
 * time) and the job's DELETE. A file's bytes are collected as they arrive and fed to the
 * NDJSON reader in batches of up to BULK_BATCH_BYTES, each batch's complete lines stored in
 * one short transaction (no transaction stays open while the loop serves others, and the
 * store syncs once per batch, not once per network read). The cursor (the manifest's transactionTime) is written only
 * after every file is stored; a failure on the way leaves it where it was, and the next poll
 * exports the same range again (ingest is idempotent). */

#define BULK_MAX_STATUS_POLLS 5000
#define BULK_MAX_FILE_BYTES ((size_t)2047 << 20) /* per output file */
#define BULK_MAX_LINE_BYTES (64u << 20)
#ifndef BULK_BATCH_BYTES /* overridable at build time to exercise batching in tests */
#define BULK_BATCH_BYTES (1u << 20)
#endif

static void bulk_finish(poll_source *p);

static void bulk_fail(poll_source *p, const char *msg)
{
    log_err("bulk.failed", p, msg);
    p->failed = true;
    bulk_finish(p);
}

static void bulk_file_reset(poll_source *p)
{
    fhir_ndjson_free(p->bulk_nd);
    p->bulk_nd = NULL;
    fhir_buf_free(&p->bulk_batch);
    fhir_client_result_free(p->bulk_manifest);
    p->bulk_manifest = NULL;
    p->bulk_out = NULL;
    p->bulk_files = 0;
}

static void on_bulk_deleted(void *ud, fhir_client_result *res)
{
    poll_source *p = ud;
    count_result(p, res);
    if (res->err.msg[0])
        log_err("bulk.delete_failed", p, res->err.msg);
    else
        fhir_log(FHIR_LOG_DEBUG, "bulk.deleted", "source=%s status=%ld", p->cfg->name, res->status);
    fhir_client_result_free(res);
    poll_end(p);
}

/* Ends the poll: the job (if one was created) is DELETEd first, then poll_end. */
static void bulk_finish(poll_source *p)
{
    bulk_file_reset(p);
    if (!p->status_url) {
        poll_end(p);
        return;
    }
    fhir_client_request del = {.method = "DELETE", .path = p->status_url, .accept_202 = true};
    fhir_error err;
    fhir_error_clear(&err);
    int rc = fhir_client_send(p->client, &del, on_bulk_deleted, p, &err);
    free(p->status_url);
    p->status_url = NULL;
    if (rc) {
        log_err("bulk.delete_failed", p, err.msg);
        poll_end(p);
    }
}

static int bulk_line(void *ud, const fhir_node *res, size_t line_no)
{
    poll_source *p = ud;
    if (daemon_ingest(p->d, p->cfg->name, res, &p->changed, &p->unchanged, &p->bulk_err))
        return fhir_error_prefix(&p->bulk_err, "line %zu", line_no), 1;
    return 0;
}

/* Feeds bytes to the NDJSON reader, storing their complete lines in one transaction; with
 * finish, the last line too. 0, or -1 with p->bulk_err set. */
static int bulk_store(poll_source *p, const char *data, size_t len, bool finish)
{
    if (store_begin(p->d->st, &p->bulk_err))
        return -1;
    if ((len && fhir_ndjson_feed(p->bulk_nd, data, len, &p->bulk_err) < 0) ||
        (finish && fhir_ndjson_finish(p->bulk_nd, &p->bulk_err) < 0)) {
        store_rollback(p->d->st);
        if (!p->bulk_err.msg[0])
            fhir_error_set(&p->bulk_err, "NDJSON reader stopped");
        return -1;
    }
    return store_commit(p->d->st, &p->bulk_err) ? -1 : 0;
}

/* One chunk of an output file, as it arrives: batched (bounded), stored when a batch fills. */
static int bulk_chunk(void *ud, const char *data, size_t len)
{
    poll_source *p = ud;
    if (p->bulk_batch.len + len > BULK_BATCH_BYTES) {
        if (p->bulk_batch.len && bulk_store(p, p->bulk_batch.data, p->bulk_batch.len, false))
            return 1;
        fhir_buf_reset(&p->bulk_batch);
        if (len >= BULK_BATCH_BYTES)
            return bulk_store(p, data, len, false) ? 1 : 0;
    }
    if (fhir_buf_append(&p->bulk_batch, data, len) < 0) {
        fhir_error_set(&p->bulk_err, "download batch buffer overflow");
        return 1;
    }
    return 0;
}

static void bulk_next_file(poll_source *p);

static const char *bulk_out_type(const poll_source *p)
{
    const char *t = fhir_node_str(fhir_node_get(p->bulk_out, "type"));
    return t ? t : "?";
}

static void on_bulk_file(void *ud, fhir_client_result *res)
{
    poll_source *p = ud;
    count_result(p, res);
    char msg[900];
    if (res->err.msg[0]) {
        snprintf(msg, sizeof msg, "output %zu (%s): %s", p->bulk_files, bulk_out_type(p),
                 p->bulk_err.msg[0] ? p->bulk_err.msg : res->err.msg);
        fhir_client_result_free(res);
        bulk_fail(p, msg);
        return;
    }
    fhir_client_result_free(res);
    /* the rest of the batch, and the last line (which may lack its newline) */
    int rc = bulk_store(p, p->bulk_batch.data, p->bulk_batch.len, true);
    fhir_buf_reset(&p->bulk_batch);
    if (rc) {
        snprintf(msg, sizeof msg, "output %zu (%s): %s", p->bulk_files, bulk_out_type(p),
                 p->bulk_err.msg[0] ? p->bulk_err.msg : "NDJSON reader stopped");
        bulk_fail(p, msg);
        return;
    }
    fhir_log(FHIR_LOG_INFO, "bulk.file", "source=%s type=%s changed=%zu lines=%zu", p->cfg->name,
             bulk_out_type(p), p->changed - p->bulk_changed_before,
             fhir_ndjson_stats_get(p->bulk_nd)->ok);
    fhir_ndjson_free(p->bulk_nd);
    p->bulk_nd = NULL;
    p->bulk_files++;
    p->bulk_out = p->bulk_out->next;
    bulk_next_file(p);
}

static void bulk_next_file(poll_source *p)
{
    if (!p->bulk_out) {
        const fhir_node *m = p->bulk_manifest->body;
        if (fhir_node_count(fhir_node_get(m, "error")))
            fhir_log(FHIR_LOG_WARN, "bulk.errors", "source=%s error_files=%zu", p->cfg->name,
                     fhir_node_count(fhir_node_get(m, "error")));
        /* every file is stored: the export's time is the next _since */
        const char *key = "transactionTime";
        commit_cursors(p, 1, &key);
        bulk_finish(p);
        return;
    }
    const char *url = fhir_node_str(fhir_node_get(p->bulk_out, "url"));
    if (!url) {
        bulk_fail(p, "manifest output without url");
        return;
    }
    fhir_error_clear(&p->bulk_err);
    fhir_json_limits lim = {.max_bytes = BULK_MAX_LINE_BYTES};
    p->bulk_nd = fhir_ndjson_new(&lim, bulk_line, NULL, p);
    fhir_buf_free(&p->bulk_batch);
    fhir_buf_init(&p->bulk_batch, BULK_BATCH_BYTES);
    p->bulk_changed_before = p->changed;
    fhir_client_stream_request sr = {.url = url, .accept = "application/fhir+ndjson",
                                     .max_bytes = BULK_MAX_FILE_BYTES,
                                     .timeout_ms = p->cfg->timeout_s * 1000L * 10L};
    fhir_error err;
    fhir_error_clear(&err);
    if (fhir_client_get_stream(p->client, &sr, bulk_chunk, on_bulk_file, p, &err)) {
        char msg[900];
        snprintf(msg, sizeof msg, "output %zu (%s): %s", p->bulk_files, bulk_out_type(p), err.msg);
        bulk_fail(p, msg);
    }
}

static void on_bulk_status_done(void *ud, fhir_client_result *res)
{
    poll_source *p = ud;
    count_result(p, res);
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
        if (++p->status_polls > BULK_MAX_STATUS_POLLS) {
            bulk_fail(p, "export not complete after the status poll limit");
            return;
        }
        struct timeval tv = {.tv_sec = delay / 1000, .tv_usec = (delay % 1000) * 1000};
        evtimer_add(p->bulk_timer, &tv);
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
    fhir_log(FHIR_LOG_DEBUG, "bulk.complete", "source=%s status_polls=%u", p->cfg->name, p->status_polls);
    snprintf(p->cursor_new[0], sizeof p->cursor_new[0], "%s", tt);
    p->bulk_manifest = res;
    p->bulk_out = fhir_node_first(fhir_node_get(m, "output"));
    p->bulk_files = 0;
    bulk_next_file(p);
}

static void on_bulk_status(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    poll_source *p = arg;
    fhir_client_request st = {.method = "GET", .path = p->status_url, .accept = "application/json",
                              .accept_202 = true};
    fhir_error err;
    fhir_error_clear(&err);
    if (fhir_client_send(p->client, &st, on_bulk_status_done, p, &err))
        bulk_fail(p, err.msg);
}

static void on_bulk_kickoff(void *ud, fhir_client_result *res)
{
    poll_source *p = ud;
    count_result(p, res);
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
    p->status_url = fhir_xstrdup(res->content_location);
    fhir_client_result_free(res);
    fhir_log(FHIR_LOG_DEBUG, "bulk.started", "source=%s", p->cfg->name);
    p->status_polls = 0;
    struct timeval tv = {0, 0};
    evtimer_add(p->bulk_timer, &tv);
}

static void bulk_poll(poll_source *p)
{
    alloc_slots(p, 1);
    const char *cur = initial_cursor(p, "transactionTime", 0);
    fhir_buf u;
    fhir_buf_init(&u, POLL_EXPORT_URL_MAX);
    fhir_buf_printf(&u, "Group/%s/$export?_type=", p->cfg->group_id);
    for (size_t i = 0; i < p->cfg->types.n; i++)
        fhir_buf_printf(&u, "%s%s", i ? "," : "", p->cfg->types.v[i]);
    if (cur) {
        char enc[128];
        enc_instant(enc, sizeof enc, cur);
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

/* ---- scheduling ------------------------------------------------------------------------------ */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    poll_source *p = arg;
    if (p->busy || p->paused)
        return;
    p->busy = true;
    p->started_mono = fhir_clock_mono_ms();
    fhir_log(FHIR_LOG_DEBUG, "poll.start", "source=%s kind=%s", p->cfg->name, config_source_kind_name(p->cfg->kind));
    switch (p->cfg->kind) {
    case CONFIG_SOURCE_FILES:
        files_poll(p);
        break;
    case CONFIG_SOURCE_SEARCH:
        search_poll(p);
        break;
    case CONFIG_SOURCE_GROUP:
        group_poll(p);
        break;
    case CONFIG_SOURCE_BULK:
        bulk_poll(p);
        break;
    default:
        p->failed = true;
        poll_end(p);
        break;
    }
}

void poll_source_kick(poll_source *p)
{
    if (p->busy || p->paused)
        return;
    evtimer_del(p->timer);
    struct timeval tv = {0, 0};
    evtimer_add(p->timer, &tv);
}

void poll_source_pause(poll_source *p)
{
    p->paused = true;
    evtimer_del(p->timer);
}

static fhir_auth_kind auth_kind(int k)
{
    switch (k) {
    case CONFIG_AUTH_BEARER: return FHIR_AUTH_BEARER;
    case CONFIG_AUTH_BASIC: return FHIR_AUTH_BASIC;
    case CONFIG_AUTH_SMART: return FHIR_AUTH_SMART;
    default: return FHIR_AUTH_NONE;
    }
}

void poll_source_client_config(const config_source *cfg, fhir_client_config *cc)
{
    *cc = (fhir_client_config){
        .name = cfg->name, .base_url = cfg->base_url, .format = cfg->format ? FHIR_FORMAT_XML : FHIR_FORMAT_JSON,
        .total_timeout_ms = cfg->timeout_s * 1000, .max_concurrent = (unsigned)cfg->concurrency,
        .rate_per_s = cfg->rate_per_s, .max_pages = (unsigned)cfg->max_pages, .ca_file = cfg->ca_file,
    };
    if (cfg->kind == CONFIG_SOURCE_BULK)
        cc->format = FHIR_FORMAT_JSON; /* kick-off answers and manifests are JSON */
    cc->auth.kind = auth_kind(cfg->auth_kind);
    cc->auth.bearer_file = cfg->auth_token_file;
    cc->auth.bearer_env = cfg->auth_token_env;
    cc->auth.basic_user = cfg->auth_user;
    cc->auth.basic_pass_file = cfg->auth_password_file;
    cc->auth.basic_pass_env = cfg->auth_password_env;
    cc->auth.smart_client_id = cfg->auth_client_id;
    cc->auth.smart_key_file = cfg->auth_key_file;
    cc->auth.smart_kid = cfg->auth_kid;
    cc->auth.smart_alg = cfg->auth_alg;
    cc->auth.smart_scope = cfg->auth_scope;
    cc->auth.smart_token_url = cfg->auth_token_url;
}

poll_source *poll_source_new(daemon *d, const config_source *cfg, fhir_error *err)
{
    poll_source *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->d = d;
    p->cfg = cfg;
    daemon_src_metrics_get(d, cfg->name);
    if (cfg->kind != CONFIG_SOURCE_FILES) {
        fhir_client_config cc;
        poll_source_client_config(cfg, &cc);
        p->client = fhir_client_new(d->base, &cc, err);
        if (!p->client) {
            free(p);
            return NULL;
        }
        if (cfg->kind == CONFIG_SOURCE_BULK)
            p->bulk_timer = evtimer_new(d->base, on_bulk_status, p);
    } else if (ensure_dir(cfg->dir) != 0) {
        fhir_error_set(err, "drop folder %s: %s", cfg->dir, strerror(errno));
        free(p);
        return NULL;
    }
    p->timer = evtimer_new(d->base, on_timer, p);
    struct timeval tv = {0, 0};
    evtimer_add(p->timer, &tv);
    fhir_log(FHIR_LOG_INFO, "source.ready", "source=%s kind=%s interval_s=%ld types=%zu", cfg->name,
             config_source_kind_name(cfg->kind), cfg->interval_s, cfg->types.n);
    return p;
}

/* An export abandoned at shutdown or reload: ask the server to drop the job (its data was
 * never completely stored and the cursor never advanced, so the next poll starts over). The
 * source's client is going away with the loop's pending work, so this one request runs on a
 * private client and loop, bounded by a short timeout and a single attempt. */
static void bulk_abandon(poll_source *p)
{
    fhir_log(FHIR_LOG_INFO, "bulk.abandoned", "source=%s", p->cfg->name);
    fhir_client_config cc;
    poll_source_client_config(p->cfg, &cc);
    cc.total_timeout_ms = 5000;
    cc.connect_timeout_ms = 2000;
    cc.retry.max_attempts = 1;
    fhir_error err;
    fhir_error_clear(&err);
    fhir_client *c = fhir_client_new(NULL, &cc, &err);
    if (!c) {
        log_err("bulk.delete_failed", p, err.msg);
        return;
    }
    fhir_client_request del = {.method = "DELETE", .path = p->status_url, .accept_202 = true};
    fhir_client_result *r = fhir_client_send_sync(c, &del);
    if (r->err.msg[0])
        log_err("bulk.delete_failed", p, r->err.msg);
    else
        fhir_log(FHIR_LOG_DEBUG, "bulk.deleted", "source=%s status=%ld", p->cfg->name, r->status);
    fhir_client_result_free(r);
    fhir_client_free(c);
}

void poll_source_free(poll_source *p)
{
    if (!p)
        return;
    if (p->timer)
        event_free(p->timer);
    if (p->bulk_timer)
        event_free(p->bulk_timer);
    fhir_client_free(p->client); /* drops in-flight operations: their cursors never advanced */
    p->client = NULL;
    if (p->status_url) {
        bulk_abandon(p);
        free(p->status_url);
    }
    bulk_file_reset(p);
    poll_reset(p);
    free(p);
}
