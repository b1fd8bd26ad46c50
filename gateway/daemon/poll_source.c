/* poll_source — the shared parts of the poll strategies: life of a source, scheduling,
 * cursors, paged searches, ingest (see poll_source.h; the strategies are poll_<kind>.c). */
#include "poll_source.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crashpoint.h"
#include "fhir_alloc.h"
#include "fhir_clock.h"
#include "fhir_log.h"
#include "poll_impl.h"

void poll_log_err(const char *event, const poll_source *p, const char *msg)
{
    fhir_log(FHIR_LOG_WARN, event, "source=%s error=%s", p->cfg->name, msg);
}

void poll_note_reason(poll_source *p, const char *reason)
{
    if (!p->fail_reason)
        p->fail_reason = reason;
}

void poll_fail(poll_source *p, const char *reason)
{
    poll_note_reason(p, reason);
    p->failed = true;
}

const char *poll_reason_of(const fhir_client_result *res)
{
    switch (res->fail) {
    case FHIR_FAIL_STOPPED:
        return "ingest"; /* our page or chunk callback stopped it: storing what arrived failed */
    case FHIR_FAIL_NONE:
        return "other";
    default:
        return fhir_client_fail_name(res->fail);
    }
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
        for (size_t i = 0; i < nt + 1; i++)
            free(p->cursor_old[i]);
    free(p->cursor_old);
    free(p->cursor_new);
    free(p->cursor_new_ms);
    free(p->type_ok);
    for (size_t i = 0; i < p->n_ops; i++)
        free(p->ops[i]);
    free(p->ops);
    p->cursor_old = NULL;
    p->cursor_new = NULL;
    p->cursor_new_ms = NULL;
    p->type_ok = NULL;
    p->n_slots = 0;
    p->ops = NULL;
    p->n_ops = p->cap_ops = 0;
    p->pending = 0;
    p->failed = false;
    p->fail_reason = NULL;
    p->changed = p->unchanged = p->unresolved = p->deleted = p->outcome_issues = p->bulk_issues = 0;
    p->since_ignored = p->full_refresh = false;
    if (p->impl->reset)
        p->impl->reset(p);
}

/* A complete poll: the patients the source holds (from this poll, and from earlier polls
 * that failed) are released for screening. 0, or -1 (logged). */
static int release_held(poll_source *p)
{
    store *st = p->env.st;
    fhir_error err;
    fhir_error_clear(&err);
    if (store_begin(st, &err) == 0) {
        if (store_held_release(st, p->cfg->name, &err) == 0 && store_commit(st, &err) == 0)
            return 0;
        store_rollback(st);
    }
    poll_log_err("poll.release_failed", p, err.msg);
    return -1;
}

/* The pages of the ingest group are lost (rolled back): no cursor of the poll may advance
 * (the group may hold pages of every slot). */
static void group_dropped(poll_source *p)
{
    if (p->type_ok)
        for (size_t i = 0; i < p->n_slots; i++)
            p->type_ok[i] = false;
}

/* store_group_lost_fn: another use of the store could not commit the group. */
static void on_group_lost(void *owner, const char *msg)
{
    poll_source *p = owner;
    poll_log_err("poll.store_failed", p, msg);
    group_dropped(p);
    poll_fail(p, "store");
}

/* Commits the source's ingest group if open: 0, or -1 (logged, the poll failed). */
static int group_finish(poll_source *p)
{
    evtimer_del(p->group_timer);
    fhir_error err;
    fhir_error_clear(&err);
    if (store_group_flush(p->env.st, p, &err) >= 0)
        return 0;
    on_group_lost(p, err.msg);
    return -1;
}

static void on_group_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    group_finish(arg);
}

void poll_end(poll_source *p)
{
    group_finish(p);
    if (!p->failed && release_held(p))
        poll_fail(p, "store");
    if (p->unresolved) /* counts only: the references themselves may carry identifiers */
        fhir_log(FHIR_LOG_WARN, "ingest.unresolved", "source=%s count=%zu note=%s", p->cfg->name, p->unresolved,
                 "patient references that name no patient (stored, never screened)");
    poll_result r = {.ok = !p->failed,
                     .fail_reason = p->failed ? (p->fail_reason ? p->fail_reason : "other") : NULL,
                     .changed = p->changed, .unchanged = p->unchanged, .unresolved = p->unresolved,
                     .deleted = p->deleted, .outcome_issues = p->outcome_issues,
                     .bulk_issues = p->bulk_issues, .since_ignored = p->since_ignored};
    if (r.ok)
        p->done_once = true;
    int64_t held = store_held_count(p->env.st, p->cfg->name);
    long long ms = (long long)(fhir_clock_mono_ms() - p->started_mono);
    if (p->failed)
        fhir_log(FHIR_LOG_WARN, "poll.done",
                 "source=%s kind=%s result=failed reason=%s changed=%zu unchanged=%zu deleted=%zu held=%lld "
                 "full_refresh=%s ms=%lld",
                 p->cfg->name, config_source_kind_name(p->cfg->kind), r.fail_reason, p->changed, p->unchanged,
                 p->deleted, (long long)(held < 0 ? 0 : held), p->full_refresh ? "true" : "false", ms);
    else
        fhir_log(FHIR_LOG_INFO, "poll.done",
                 "source=%s kind=%s result=ok changed=%zu unchanged=%zu deleted=%zu held=%lld full_refresh=%s "
                 "ms=%lld",
                 p->cfg->name, config_source_kind_name(p->cfg->kind), p->changed, p->unchanged, p->deleted,
                 (long long)(held < 0 ? 0 : held), p->full_refresh ? "true" : "false", ms);
    /* after a failure: retry_s, doubled per failure in a row, at most interval_s */
    long next = p->cfg->interval_s;
    if (p->failed) {
        unsigned k = p->failed_in_row < 16 ? p->failed_in_row : 16;
        long long d = (long long)p->cfg->retry_s << k;
        p->failed_in_row++;
        if (d < next)
            next = (long)d;
    } else {
        p->failed_in_row = 0;
    }
    poll_reset(p);
    p->busy = false;
    schedule(p, next);
    p->env.done(p->env.ud, p, &r);
}

poll_op *poll_op_new(poll_source *p, size_t slot, size_t type, long member)
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

int poll_ingest(poll_source *p, const fhir_node *res, fhir_error *err)
{
    return p->env.ingest(p->env.ud, p->cfg->name, res, &p->changed, &p->unchanged, &p->unresolved, err);
}

int poll_remove(poll_source *p, const char *type, const char *id, fhir_error *err)
{
    bool found = false;
    if (p->env.remove(p->env.ud, p->cfg->name, type, id, &found, err))
        return -1;
    if (found)
        p->deleted++;
    return 0;
}

int64_t poll_instant_ms(const char *v)
{
    int64_t ms;
    return v && fhir_clock_parse_instant(v, &ms) == 0 ? ms : 0;
}

void poll_note_since(poll_source *p, int64_t since_ms, const fhir_node *res)
{
    if (!since_ms || p->since_ignored)
        return;
    int64_t lu = poll_instant_ms(fhir_node_path_str(res, "meta.lastUpdated"));
    if (!lu || lu >= since_ms)
        return;
    p->since_ignored = true;
    if (p->since_ignored_said)
        return;
    p->since_ignored_said = true;
    fhir_log(FHIR_LOG_WARN, "source.since_ignored",
             "source=%s kind=%s note=%s", p->cfg->name, config_source_kind_name(p->cfg->kind),
             "the server returns data older than the _since or _lastUpdated asked for; every "
             "poll reads everything and unchanged resources are recognised against the cache");
}

bool poll_full_refresh_due(poll_source *p)
{
    p->full_refresh = false;
    if (p->cfg->full_refresh_s <= 0)
        return false;
    char *v = NULL;
    fhir_error err;
    fhir_error_clear(&err);
    if (store_cursor_get(p->env.st, p->cfg->name, "fullRefresh", &v, &err))
        return false;
    int64_t last = v ? strtoll(v, NULL, 10) : 0;
    free(v);
    p->full_refresh = !last || fhir_clock_now_ms() - last >= (int64_t)p->cfg->full_refresh_s * 1000;
    return p->full_refresh;
}

void poll_count_result(poll_source *p, const fhir_client_result *res)
{
    if (p->env.count_status)
        p->env.count_status(p->env.ud, p->cfg->name, res->status);
}

/* ---- cursors ------------------------------------------------------------------------------- */

void poll_enc_instant(char *out, size_t outlen, const char *v)
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

void poll_alloc_slots(poll_source *p, size_t n)
{
    p->cursor_old = calloc(p->cfg->types.n + 1, sizeof *p->cursor_old);
    p->cursor_new = calloc(n, sizeof *p->cursor_new);
    p->cursor_new_ms = calloc(n, sizeof *p->cursor_new_ms);
    p->type_ok = calloc(n, sizeof *p->type_ok);
    if (!p->cursor_old || !p->cursor_new || !p->cursor_new_ms || !p->type_ok)
        abort();
    p->n_slots = n;
    for (size_t i = 0; i < n; i++)
        p->type_ok[i] = true;
}

const char *poll_initial_cursor(poll_source *p, const char *key, size_t slot)
{
    fhir_error err;
    char *v = NULL;
    if (store_cursor_get(p->env.st, p->cfg->name, key, &v, &err) == 0 && v) {
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

void poll_commit_cursors(poll_source *p, size_t nslots, const char *const *keys)
{
    store *st = p->env.st;
    if (group_finish(p))
        return;
    fhir_error err;
    fhir_error_clear(&err);
    if (store_begin(st, &err)) {
        poll_log_err("poll.cursor_failed", p, err.msg);
        poll_fail(p, "store");
        return;
    }
    for (size_t i = 0; i < nslots; i++) {
        if (!p->type_ok[i] || !p->cursor_new[i][0])
            continue;
        if (store_cursor_put(st, p->cfg->name, keys[i], p->cursor_new[i], &err)) {
            store_rollback(st);
            poll_log_err("poll.cursor_failed", p, err.msg);
            poll_fail(p, "store");
            return;
        }
    }
    if (p->impl->more_cursors && p->impl->more_cursors(p, &err)) {
        store_rollback(st);
        poll_fail(p, "store");
        return;
    }
    bool all_ok = !p->failed;
    for (size_t i = 0; i < nslots; i++)
        all_ok = all_ok && p->type_ok[i];
    if (p->full_refresh && all_ok) {
        char now[32];
        snprintf(now, sizeof now, "%lld", (long long)fhir_clock_now_ms());
        if (store_cursor_put(st, p->cfg->name, "fullRefresh", now, &err)) {
            store_rollback(st);
            poll_log_err("poll.cursor_failed", p, err.msg);
            poll_fail(p, "store");
            return;
        }
    }
    if (store_commit(st, &err)) {
        poll_log_err("poll.cursor_failed", p, err.msg);
        poll_fail(p, "store");
    }
}

/* ---- paged searches (search and group) ---------------------------------------------------- */

/* One search page: stored in the source's ingest group (store_group_begin), which commits
 * at POLL_GROUP_RESOURCES here, else later (group_finish, the idle timer, another use of the
 * store). A page that cannot be stored rolls the whole group back. */
static int on_page(void *ud, const fhir_node *bundle, unsigned page_no)
{
    poll_op *o = ud;
    poll_source *p = o->p;
    store *st = p->env.st;
    (void)page_no;
    fhir_error err;
    fhir_error_clear(&err);
    evtimer_del(p->group_timer);
    int opened = store_group_begin(st, p, on_group_lost, &err);
    if (opened < 0) {
        poll_log_err("poll.store_failed", p, err.msg);
        return 1;
    }
    if (opened)
        p->group_n = 0;
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next) {
        const fhir_node *r = fhir_node_get(e, "resource");
        if (!r)
            continue;
        const char *mode = fhir_node_path_str(e, "search.mode");
        if (mode && !strcmp(mode, "outcome"))
            continue;
        size_t unchanged = p->unchanged;
        if (poll_ingest(p, r, &err)) {
            store_rollback(st);
            group_dropped(p);
            poll_log_err("poll.store_failed", p, err.msg);
            return 1;
        }
        p->group_n++;
        note_last_updated(p, o->slot, r);
        if (p->unchanged > unchanged) /* sent again although older than asked for */
            poll_note_since(p, o->since_ms, r);
    }
    bool full = p->group_n >= POLL_GROUP_RESOURCES;
    if (store_group_end(st, full, &err)) {
        group_dropped(p);
        poll_log_err("poll.store_failed", p, err.msg);
        return 1;
    }
    if (!full) {
        struct timeval tv = {.tv_sec = POLL_GROUP_IDLE_MS / 1000,
                             .tv_usec = (POLL_GROUP_IDLE_MS % 1000) * 1000};
        evtimer_add(p->group_timer, &tv);
    }
    crashpoint("poll.page");
    return 0;
}

static void on_search_done(void *ud, fhir_client_result *res)
{
    poll_op *o = ud;
    poll_source *p = o->p;
    poll_count_result(p, res);
    p->outcome_issues += res->stats.outcome_issues;
    if (res->err.msg[0]) {
        char msg[800];
        snprintf(msg, sizeof msg, "%s: %s", p->cfg->types.v[o->type], res->err.msg);
        poll_log_err("poll.search_failed", p, msg);
        poll_fail(p, poll_reason_of(res));
        p->type_ok[o->slot] = false;
    }
    fhir_client_result_free(res);
    if (--p->pending > 0)
        return;
    p->impl->searches_done(p);
}

int poll_start_search(poll_source *p, poll_op *o, const char *query)
{
    fhir_error err;
    fhir_error_clear(&err);
    if (fhir_client_search(p->client, query, on_page, on_search_done, o, &err)) {
        poll_log_err("poll.search_failed", p, err.msg);
        poll_fail(p, "other");
        p->type_ok[o->slot] = false;
        return -1;
    }
    p->pending++;
    return 0;
}

/* ---- scheduling and life -------------------------------------------------------------------- */

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
    p->impl->start(p);
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

static const poll_impl *const impls[] = {
    &poll_search_impl, &poll_group_impl, &poll_bulk_impl, &poll_files_impl,
};

poll_source *poll_source_new(const poll_env *env, const config_source *cfg, fhir_error *err)
{
    const poll_impl *impl = NULL;
    for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++)
        if (impls[i]->kind == cfg->kind)
            impl = impls[i];
    if (!impl) {
        fhir_error_set(err, "unknown source kind %d", cfg->kind);
        return NULL;
    }
    poll_source *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->env = *env;
    p->cfg = cfg;
    p->impl = impl;
    if (impl->http) {
        fhir_client_config cc;
        config_source_client(cfg, &cc);
        p->client = fhir_client_new(env->base, &cc, err);
        if (!p->client) {
            free(p);
            return NULL;
        }
    }
    if (impl->init && impl->init(p, err)) {
        fhir_client_free(p->client);
        free(p);
        return NULL;
    }
    p->timer = evtimer_new(env->base, on_timer, p);
    p->group_timer = evtimer_new(env->base, on_group_timer, p);
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
    if (p->group_timer) { /* pages stored so far commit (no cursor moves): the store must not
                           * keep a group of a source that is gone */
        fhir_error err;
        store_group_flush(p->env.st, p, &err);
        event_free(p->group_timer);
    }
    if (p->timer)
        event_free(p->timer);
    fhir_client_free(p->client); /* drops in-flight operations: their cursors never advanced */
    p->client = NULL;
    poll_reset(p);
    if (p->impl->free)
        p->impl->free(p);
    free(p);
}
