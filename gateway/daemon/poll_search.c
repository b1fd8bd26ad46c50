/* poll_search — the `search` strategy: one population search per type since its cursor
 * (poll_source.h). */
#include <stdio.h>
#include <stdlib.h>

#include "poll_impl.h"

static void search_poll(poll_source *p)
{
    size_t nt = p->cfg->types.n;
    poll_alloc_slots(p, nt);
    bool full = poll_full_refresh_due(p);
    for (size_t i = 0; i < nt; i++) {
        char key[160];
        snprintf(key, sizeof key, "lastUpdated:%s", p->cfg->types.v[i]);
        const char *cur = poll_initial_cursor(p, key, i);
        char q[512], enc[128];
        poll_op *o = poll_op_new(p, i, i, -1);
        if (cur && !full) {
            poll_enc_instant(enc, sizeof enc, cur);
            snprintf(q, sizeof q, "%s?_lastUpdated=ge%s&_count=%ld", p->cfg->types.v[i], enc, p->cfg->page_size);
            o->since_ms = poll_instant_ms(cur);
        } else
            snprintf(q, sizeof q, "%s?_count=%ld", p->cfg->types.v[i], p->cfg->page_size);
        poll_start_search(p, o, q);
    }
    if (p->pending == 0)
        p->impl->searches_done(p);
}

/* Every type's search ended: each type that was read completely advances its cursor. */
static void search_finish(poll_source *p)
{
    size_t nt = p->cfg->types.n;
    char **keys = calloc(nt + 1, sizeof *keys);
    if (!keys)
        abort();
    for (size_t i = 0; i < nt; i++) {
        keys[i] = malloc(160);
        if (!keys[i])
            abort();
        snprintf(keys[i], 160, "lastUpdated:%s", p->cfg->types.v[i]);
    }
    poll_commit_cursors(p, nt, (const char *const *)keys);
    for (size_t i = 0; i < nt; i++)
        free(keys[i]);
    free(keys);
    poll_end(p);
}

const poll_impl poll_search_impl = {
    .kind = CONFIG_SOURCE_SEARCH,
    .http = true,
    .start = search_poll,
    .searches_done = search_finish,
};
