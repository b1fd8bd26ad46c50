/* poll_source — discovery strategies of one source (see poll_source.h). */
#include "poll_source.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

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
    char *status_url;
    unsigned status_polls;
    char *auth_header;        /* "Authorization: ..." for bulk requests, or NULL */
};

struct poll_op {
    poll_source *p;
    size_t slot;      /* cursor slot (type index for search, 0 for group) */
    size_t type;
    long member;      /* -1 when not per member */
};

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

static void log_err(const char *event, const poll_source *p, const char *msg)
{
    char q[700];
    fhir_log(FHIR_LOG_WARN, event, "source=%s error=%s", p->cfg->name, fhir_log_quote(msg, q, sizeof q));
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
        fhir_json_limits lim = {.max_bytes = 256u << 20};
        fhir_ndjson *r = fhir_ndjson_new(&lim, file_line, NULL, &fc);
        rc = fhir_ndjson_read_path(r, path, err);
        fhir_ndjson_free(r);
    } else {
        fhir_arena *a = fhir_arena_new(0);
        fhir_json_limits lim = {.max_bytes = 512u << 20};
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
        names[n++] = xstrdup(e->d_name);
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
            char q[700];
            fhir_log(FHIR_LOG_WARN, "files.failed", "source=%s file=%s error=%s", p->cfg->name, names[i],
                     fhir_log_quote(err.msg, q, sizeof q));
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
        p->cursor_old[slot] = xstrdup(p->cfg->since);
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
        p->members[p->n_members++] = xstrdup(ref + 8);
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
 * The $export exchanges run on a libcurl easy handle, one request at a time: the kick-off and
 * the status checks are small, and each NDJSON download is parsed while it arrives (memory
 * bounded by the longest line) into one store transaction per file. The daemon's loop waits
 * between status checks on a timer (Retry-After honoured), but is busy during a download. */

#define BULK_MAX_STATUS_POLLS 5000
#define BULK_MAX_MANIFEST (16u << 20)

typedef struct bulk_resp {
    long status;
    char content_location[2048];
    char retry_after[128];
    fhir_buf body;
    fhir_ndjson *nd;
    fhir_error *err;
    bool nd_failed;
} bulk_resp;

static size_t bulk_header(char *b, size_t sz, size_t n, void *ud)
{
    bulk_resp *r = ud;
    size_t len = sz * n;
    char line[2200];
    size_t k = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, b, k);
    line[k] = 0;
    line[strcspn(line, "\r\n")] = 0;
    if (!strncmp(line, "HTTP/", 5)) {
        r->content_location[0] = r->retry_after[0] = 0;
    } else if (!strncasecmp(line, "content-location:", 17)) {
        const char *v = line + 17;
        while (*v == ' ')
            v++;
        size_t vn = strlen(v) < sizeof r->content_location - 1 ? strlen(v) : sizeof r->content_location - 1;
        memcpy(r->content_location, v, vn);
        r->content_location[vn] = 0;
    } else if (!strncasecmp(line, "retry-after:", 12)) {
        const char *v = line + 12;
        while (*v == ' ')
            v++;
        size_t vn = strlen(v) < sizeof r->retry_after - 1 ? strlen(v) : sizeof r->retry_after - 1;
        memcpy(r->retry_after, v, vn);
        r->retry_after[vn] = 0;
    }
    return len;
}

static size_t bulk_write(char *b, size_t sz, size_t n, void *ud)
{
    bulk_resp *r = ud;
    size_t len = sz * n;
    if (r->nd) {
        if (fhir_ndjson_feed(r->nd, b, len, r->err) != 0) {
            r->nd_failed = true;
            return 0; /* aborts the transfer */
        }
        return len;
    }
    if (fhir_buf_append(&r->body, b, len) < 0)
        return 0;
    return len;
}

/* One request; 0 when a response arrived (any status), -1 with err on transport failure. */
static int bulk_http(poll_source *p, const char *method, const char *url, const char *accept,
                     bool prefer_async, bulk_resp *r, fhir_error *err)
{
    CURL *e = curl_easy_init();
    if (!e)
        return fhir_error_set(err, "curl_easy_init failed");
    struct curl_slist *h = NULL;
    char acc[128];
    snprintf(acc, sizeof acc, "Accept: %s", accept);
    h = curl_slist_append(h, acc);
    if (prefer_async)
        h = curl_slist_append(h, "Prefer: respond-async");
    if (p->auth_header)
        h = curl_slist_append(h, p->auth_header);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, bulk_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, bulk_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, p->cfg->timeout_s * 1000L * 10L); /* downloads are long */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (p->cfg->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, p->cfg->ca_file);
    CURLcode rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    daemon_count_status(daemon_src_metrics_get(p->d, p->cfg->name), r->status);
    if (rc != CURLE_OK && !(r->nd_failed))
        return fhir_error_set(err, "%s: %s", method, curl_easy_strerror(rc));
    if (r->nd_failed)
        return -1;
    return 0;
}

static void bulk_delete_job(poll_source *p)
{
    if (!p->status_url)
        return;
    bulk_resp r = {0};
    fhir_buf_init(&r.body, 1u << 20);
    fhir_error err;
    fhir_error_clear(&err);
    if (bulk_http(p, "DELETE", p->status_url, "application/fhir+json", false, &r, &err) == 0)
        fhir_log(FHIR_LOG_DEBUG, "bulk.deleted", "source=%s status=%ld", p->cfg->name, r.status);
    fhir_buf_free(&r.body);
    free(p->status_url);
    p->status_url = NULL;
}

static void bulk_fail(poll_source *p, const char *msg)
{
    log_err("bulk.failed", p, msg);
    p->failed = true;
    bulk_delete_job(p);
    poll_end(p);
}

typedef struct bulk_line_ctx {
    poll_source *p;
    fhir_error *err;
} bulk_line_ctx;

static int bulk_line(void *ud, const fhir_node *res, size_t line_no)
{
    bulk_line_ctx *c = ud;
    if (daemon_ingest(c->p->d, c->p->cfg->name, res, &c->p->changed, &c->p->unchanged, c->err))
        return fhir_error_prefix(c->err, "line %zu", line_no), 1;
    return 0;
}

/* Downloads and stores one NDJSON output file in one transaction. */
static int bulk_file(poll_source *p, const char *url, fhir_error *err)
{
    if (strncmp(url, p->cfg->base_url, strcspn(p->cfg->base_url + 8, "/") + 8))
        return fhir_error_set(err, "output file on another origin refused");
    if (store_begin(p->d->st, err))
        return -1;
    bulk_line_ctx lc = {.p = p, .err = err};
    fhir_json_limits lim = {.max_bytes = 64u << 20};
    bulk_resp r = {0};
    fhir_buf_init(&r.body, 1);
    r.err = err;
    r.nd = fhir_ndjson_new(&lim, bulk_line, NULL, &lc);
    int rc = bulk_http(p, "GET", url, "application/fhir+ndjson", false, &r, err);
    if (rc == 0 && r.status != 200)
        rc = fhir_error_set(err, "download: HTTP %ld", r.status);
    if (rc == 0)
        rc = fhir_ndjson_finish(r.nd, err);
    fhir_ndjson_free(r.nd);
    fhir_buf_free(&r.body);
    if (rc) {
        store_rollback(p->d->st);
        return -1;
    }
    return store_commit(p->d->st, err);
}

static void bulk_manifest(poll_source *p, const char *text, size_t len)
{
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err;
    fhir_error_clear(&err);
    fhir_node *m = fhir_json_parse(a, text, len, NULL, &err);
    const char *tt = fhir_node_str(fhir_node_get(m, "transactionTime"));
    int64_t ms;
    if (!m || !tt || fhir_clock_parse_instant(tt, &ms) != 0) {
        fhir_arena_free(a);
        bulk_fail(p, m ? "manifest without a valid transactionTime" : err.msg);
        return;
    }
    size_t files = 0;
    for (const fhir_node *o = fhir_node_first(fhir_node_get(m, "output")); o; o = o->next) {
        const char *url = fhir_node_str(fhir_node_get(o, "url"));
        if (!url) {
            fhir_arena_free(a);
            bulk_fail(p, "manifest output without url");
            return;
        }
        size_t before = p->changed;
        if (bulk_file(p, url, &err)) {
            char msg[800];
            snprintf(msg, sizeof msg, "output %zu (%s): %s", files, fhir_node_str(fhir_node_get(o, "type")) ?
                     fhir_node_str(fhir_node_get(o, "type")) : "?", err.msg);
            fhir_arena_free(a);
            bulk_fail(p, msg);
            return;
        }
        fhir_log(FHIR_LOG_INFO, "bulk.file", "source=%s type=%s changed=%zu", p->cfg->name,
                 fhir_node_str(fhir_node_get(o, "type")) ? fhir_node_str(fhir_node_get(o, "type")) : "?",
                 p->changed - before);
        files++;
    }
    if (fhir_node_count(fhir_node_get(m, "error")))
        fhir_log(FHIR_LOG_WARN, "bulk.errors", "source=%s error_files=%zu", p->cfg->name,
                 fhir_node_count(fhir_node_get(m, "error")));
    snprintf(p->cursor_new[0], sizeof p->cursor_new[0], "%s", tt);
    fhir_arena_free(a);
    const char *key = "transactionTime";
    commit_cursors(p, 1, &key); /* every file is stored: the export's time is the next _since */
    bulk_delete_job(p);
    poll_end(p);
}

static void on_bulk_status(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    poll_source *p = arg;
    bulk_resp r = {0};
    fhir_buf_init(&r.body, BULK_MAX_MANIFEST);
    fhir_error err;
    fhir_error_clear(&err);
    if (bulk_http(p, "GET", p->status_url, "application/json", false, &r, &err)) {
        fhir_buf_free(&r.body);
        bulk_fail(p, err.msg);
        return;
    }
    if (r.status == 202 || r.status == 429 || r.status >= 500) {
        int64_t delay = 2000;
        if (r.retry_after[0] && fhir_retry_parse_retry_after(r.retry_after, fhir_clock_now_ms(), &delay) != 0)
            delay = 2000;
        if (delay < 100)
            delay = 100;
        if (delay > 300000)
            delay = 300000;
        fhir_buf_free(&r.body);
        if (++p->status_polls > BULK_MAX_STATUS_POLLS) {
            bulk_fail(p, "export not complete after the status poll limit");
            return;
        }
        struct timeval tv = {.tv_sec = delay / 1000, .tv_usec = (delay % 1000) * 1000};
        evtimer_add(p->bulk_timer, &tv);
        return;
    }
    if (r.status != 200 || r.body.overflow) {
        char msg[200];
        snprintf(msg, sizeof msg, "status request: HTTP %ld%s", r.status, r.body.overflow ? " (manifest too large)" : "");
        fhir_buf_free(&r.body);
        bulk_fail(p, msg);
        return;
    }
    fhir_log(FHIR_LOG_DEBUG, "bulk.complete", "source=%s status_polls=%u", p->cfg->name, p->status_polls);
    bulk_manifest(p, r.body.data ? r.body.data : "", r.body.len);
    fhir_buf_free(&r.body);
}

static void bulk_poll(poll_source *p)
{
    alloc_slots(p, 1);
    const char *cur = initial_cursor(p, "transactionTime", 0);
    fhir_buf u;
    fhir_buf_init(&u, 8192);
    fhir_buf_printf(&u, "%s/Group/%s/$export?_type=", p->cfg->base_url, p->cfg->group_id);
    for (size_t i = 0; i < p->cfg->types.n; i++)
        fhir_buf_printf(&u, "%s%s", i ? "," : "", p->cfg->types.v[i]);
    if (cur) {
        char enc[128];
        enc_instant(enc, sizeof enc, cur);
        fhir_buf_printf(&u, "&_since=%s", enc);
    }
    bulk_resp r = {0};
    fhir_buf_init(&r.body, 1u << 20);
    fhir_error err;
    fhir_error_clear(&err);
    int rc = bulk_http(p, "GET", fhir_buf_cstr(&u), "application/fhir+json", true, &r, &err);
    fhir_buf_free(&u);
    fhir_buf_free(&r.body);
    if (rc) {
        bulk_fail(p, err.msg);
        return;
    }
    if (r.status != 202 || !r.content_location[0]) {
        char msg[200];
        snprintf(msg, sizeof msg, "kick-off: HTTP %ld%s", r.status, r.content_location[0] ? "" : " without Content-Location");
        bulk_fail(p, msg);
        return;
    }
    p->status_url = xstrdup(r.content_location);
    p->status_polls = 0;
    struct timeval tv = {0, 0};
    evtimer_add(p->bulk_timer, &tv);
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

poll_source *poll_source_new(daemon *d, const config_source *cfg, fhir_error *err)
{
    if (cfg->kind == CONFIG_SOURCE_BULK && cfg->auth_kind == CONFIG_AUTH_SMART) {
        fhir_error_set(err, "bulk sources support auth none, bearer and basic (not yet smart)");
        return NULL;
    }
    poll_source *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->d = d;
    p->cfg = cfg;
    daemon_src_metrics_get(d, cfg->name);
    if (cfg->kind == CONFIG_SOURCE_BULK) {
        char *secret = NULL;
        if (cfg->auth_kind == CONFIG_AUTH_BEARER) {
            if (config_read_secret(cfg->auth_token_file, cfg->auth_token_env, &secret, err)) {
                free(p);
                return NULL;
            }
            size_t n = strlen(secret) + 32;
            p->auth_header = malloc(n);
            if (!p->auth_header)
                abort();
            snprintf(p->auth_header, n, "Authorization: Bearer %s", secret);
        } else if (cfg->auth_kind == CONFIG_AUTH_BASIC) {
            if (config_read_secret(cfg->auth_password_file, cfg->auth_password_env, &secret, err)) {
                free(p);
                return NULL;
            }
            size_t n = strlen(cfg->auth_user) + strlen(secret) + 2;
            char *up = malloc(n);
            if (!up)
                abort();
            snprintf(up, n, "%s:%s", cfg->auth_user, secret);
            /* base64 (standard alphabet, padded) */
            static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            size_t ul = strlen(up), ol = 4 * ((ul + 2) / 3);
            p->auth_header = malloc(ol + 32);
            if (!p->auth_header)
                abort();
            char *o = p->auth_header + sprintf(p->auth_header, "Authorization: Basic ");
            for (size_t i = 0; i < ul; i += 3) {
                unsigned v = (unsigned char)up[i] << 16 | (i + 1 < ul ? (unsigned char)up[i + 1] << 8 : 0) |
                             (i + 2 < ul ? (unsigned char)up[i + 2] : 0);
                *o++ = b64[v >> 18 & 63];
                *o++ = b64[v >> 12 & 63];
                *o++ = i + 1 < ul ? b64[v >> 6 & 63] : '=';
                *o++ = i + 2 < ul ? b64[v & 63] : '=';
            }
            *o = 0;
            memset(up, 0, ul);
            free(up);
        }
        if (secret) {
            memset(secret, 0, strlen(secret));
            free(secret);
        }
        p->bulk_timer = evtimer_new(d->base, on_bulk_status, p);
    } else if (cfg->kind != CONFIG_SOURCE_FILES) {
        fhir_client_config cc = {
            .name = cfg->name, .base_url = cfg->base_url, .format = cfg->format ? FHIR_FORMAT_XML : FHIR_FORMAT_JSON,
            .total_timeout_ms = cfg->timeout_s * 1000, .max_concurrent = (unsigned)cfg->concurrency,
            .rate_per_s = cfg->rate_per_s, .max_pages = (unsigned)cfg->max_pages, .ca_file = cfg->ca_file,
        };
        cc.auth.kind = auth_kind(cfg->auth_kind);
        cc.auth.bearer_file = cfg->auth_token_file;
        cc.auth.bearer_env = cfg->auth_token_env;
        cc.auth.basic_user = cfg->auth_user;
        cc.auth.basic_pass_file = cfg->auth_password_file;
        cc.auth.basic_pass_env = cfg->auth_password_env;
        cc.auth.smart_client_id = cfg->auth_client_id;
        cc.auth.smart_key_file = cfg->auth_key_file;
        cc.auth.smart_kid = cfg->auth_kid;
        cc.auth.smart_alg = cfg->auth_alg;
        cc.auth.smart_scope = cfg->auth_scope;
        cc.auth.smart_token_url = cfg->auth_token_url;
        p->client = fhir_client_new(d->base, &cc, err);
        if (!p->client) {
            free(p);
            return NULL;
        }
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

void poll_source_free(poll_source *p)
{
    if (!p)
        return;
    if (p->timer)
        event_free(p->timer);
    if (p->bulk_timer)
        event_free(p->bulk_timer);
    if (p->status_url) {
        /* an export abandoned at shutdown or reload: ask the server to drop the job (its data
         * was never stored and the cursor never advanced, so the next poll starts over) */
        fhir_log(FHIR_LOG_INFO, "bulk.abandoned", "source=%s", p->cfg->name);
        bulk_delete_job(p);
    }
    if (p->auth_header) {
        memset(p->auth_header, 0, strlen(p->auth_header));
        free(p->auth_header);
    }
    fhir_client_free(p->client); /* drops in-flight operations: their cursors never advanced */
    poll_reset(p);
    free(p);
}
