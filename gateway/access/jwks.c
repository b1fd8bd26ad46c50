/* jwks — outside signers' key sets, fetched and cached by URL. See jwks.h. */
#include "jwks.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fhir_alloc.h"
#include "fhir_client.h"
#include "fhir_clock.h"
#include "fhir_log.h"
#include "oidc.h"

typedef struct waiter {
    jwks_ready_fn fn;
    void *ud;
    size_t slot;
    bool used;
} waiter;

typedef struct entry {
    char *url;
    char *origin;
    fhir_client *client;
    jose_jwks *keys;
    int64_t fetched_ms;      /* last successful fetch */
    int64_t tried_ms;        /* last fetch started */
    int64_t used_ms;
    bool inflight;
    struct jwks_cache *owner; /* the cache and slot, for the fetch's callback */
    size_t slot;
} entry;

struct jwks_cache {
    struct event_base *base;
    char *ca_file;
    int64_t ttl_ms, min_refetch_ms;
    long timeout_ms;
    entry e[JWKS_MAX_URLS];
    waiter w[JWKS_MAX_WAITERS];
    uint64_t fetches;
};

jwks_cache *jwks_cache_new(struct event_base *base, const char *ca_file, int64_t ttl_s, int64_t min_refetch_s,
                           long timeout_ms)
{
    jwks_cache *c = fhir_xcalloc(1, sizeof *c);
    c->base = base;
    c->ca_file = ca_file ? fhir_xstrdup(ca_file) : NULL;
    c->ttl_ms = (ttl_s > 0 ? ttl_s : 3600) * 1000;
    c->min_refetch_ms = (min_refetch_s > 0 ? min_refetch_s : 10) * 1000;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    return c;
}

static void entry_clear(entry *e)
{
    fhir_client_free(e->client); /* a fetch in flight is dropped without its callback */
    jose_jwks_free(e->keys);
    free(e->url);
    free(e->origin);
    memset(e, 0, sizeof *e);
}

void jwks_cache_free(jwks_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < JWKS_MAX_URLS; i++)
        entry_clear(&c->e[i]);
    free(c->ca_file);
    free(c);
}

uint64_t jwks_fetches(const jwks_cache *c) { return c->fetches; }

void jwks_cancel(jwks_cache *c, void *ud)
{
    for (size_t i = 0; i < JWKS_MAX_WAITERS; i++)
        if (c->w[i].used && c->w[i].ud == ud)
            c->w[i].used = false;
}

/* Runs the waiters of slot (each once). */
static void resume(jwks_cache *c, size_t slot, const fhir_error *err)
{
    entry *e = &c->e[slot];
    for (size_t i = 0; i < JWKS_MAX_WAITERS; i++) {
        waiter *w = &c->w[i];
        if (!w->used || w->slot != slot)
            continue;
        w->used = false;
        w->fn(w->ud, e->keys, e->keys ? NULL : err);
    }
}

static void on_jwks(void *ud, fhir_client_result *res)
{
    entry *e = ud;
    jwks_cache *c = e->owner;
    size_t slot = e->slot;
    e->inflight = false;
    fhir_error err;
    fhir_error_clear(&err);
    jose_jwks *k = NULL;
    size_t skipped = 0;
    if (res->err.msg[0])
        fhir_error_set(&err, "key set %.200s: %s", e->url, res->err.msg);
    else if (!res->body)
        fhir_error_set(&err, "key set %.200s: empty answer", e->url);
    else if (!(k = jose_jwks_from_node(res->body, &skipped, &err)))
        fhir_error_prefix(&err, "key set %.200s", e->url);
    fhir_client_result_free(res);
    if (k) {
        jose_jwks_free(e->keys);
        e->keys = k;
        e->fetched_ms = fhir_clock_now_ms();
        c->fetches++;
        fhir_log(FHIR_LOG_INFO, "jwks.fetched", "url=%s keys=%zu skipped=%zu", e->url, jose_jwks_count(k), skipped);
    } else {
        fhir_log(FHIR_LOG_WARN, "jwks.fetch_failed", "url=%s error=%s", e->url, err.msg);
    }
    resume(c, slot, &err);
}

static size_t slot_for(jwks_cache *c, const char *url)
{
    size_t free_slot = JWKS_MAX_URLS, oldest = 0;
    for (size_t i = 0; i < JWKS_MAX_URLS; i++) {
        if (c->e[i].url && !strcmp(c->e[i].url, url))
            return i;
        if (!c->e[i].url && free_slot == JWKS_MAX_URLS)
            free_slot = i;
        if (c->e[i].url && !c->e[i].inflight && c->e[i].used_ms < c->e[oldest].used_ms)
            oldest = i;
    }
    if (free_slot == JWKS_MAX_URLS) {
        if (c->e[oldest].inflight)
            return JWKS_MAX_URLS;
        entry_clear(&c->e[oldest]);
        free_slot = oldest;
    }
    c->e[free_slot].url = fhir_xstrdup(url);
    return free_slot;
}

void jwks_get(jwks_cache *c, const char *url, bool force, jwks_ready_fn fn, void *ud)
{
    fhir_error err;
    fhir_error_clear(&err);
    size_t olen;
    if (oidc_check_url("the key set URL", url, &olen, &err)) {
        fn(ud, NULL, &err);
        return;
    }
    size_t slot = slot_for(c, url);
    if (slot == JWKS_MAX_URLS) {
        fhir_error_set(&err, "more than %d key sets are being fetched at once", JWKS_MAX_URLS);
        fn(ud, NULL, &err);
        return;
    }
    entry *e = &c->e[slot];
    int64_t now = fhir_clock_now_ms();
    e->used_ms = now;
    bool fresh = e->keys && now - e->fetched_ms < c->ttl_ms;
    bool may_refetch = !e->tried_ms || now - e->tried_ms >= c->min_refetch_ms;
    if (!e->inflight && (fresh || (e->keys && !may_refetch)) && !(force && may_refetch)) {
        fn(ud, e->keys, NULL);
        return;
    }
    if (!e->inflight && !may_refetch && !e->keys) {
        fhir_error_set(&err, "key set %.200s: the last fetch failed, not tried again yet", url);
        fn(ud, NULL, &err);
        return;
    }
    size_t wi = JWKS_MAX_WAITERS;
    for (size_t i = 0; i < JWKS_MAX_WAITERS; i++)
        if (!c->w[i].used) {
            wi = i;
            break;
        }
    if (wi == JWKS_MAX_WAITERS) {
        fhir_error_set(&err, "too many requests waiting for key sets");
        fn(ud, NULL, &err);
        return;
    }
    c->w[wi] = (waiter){.fn = fn, .ud = ud, .slot = slot, .used = true};
    if (e->inflight)
        return;
    if (!e->client) {
        e->origin = fhir_xstrndup(url, olen);
        fhir_client_config cc = {.name = "jwks",
                                 .base_url = e->origin,
                                 .format = FHIR_FORMAT_JSON,
                                 .connect_timeout_ms = c->timeout_ms,
                                 .total_timeout_ms = c->timeout_ms,
                                 .max_concurrent = 2,
                                 .max_response_bytes = JWKS_BODY_MAX,
                                 .ca_file = c->ca_file};
        cc.retry.max_attempts = 1;
        e->client = fhir_client_new(c->base, &cc, &err);
        if (!e->client) {
            c->w[wi].used = false;
            fn(ud, e->keys, e->keys ? NULL : &err);
            return;
        }
    }
    e->owner = c;
    e->slot = slot;
    fhir_client_request rq = {.method = "GET", .path = url, .accept = "application/json"};
    e->tried_ms = now;
    if (fhir_client_send(e->client, &rq, on_jwks, e, &err)) {
        fhir_log(FHIR_LOG_WARN, "jwks.fetch_failed", "url=%s error=%s", url, err.msg);
        resume(c, slot, &err);
        return;
    }
    e->inflight = true;
}
