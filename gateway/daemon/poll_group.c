/* poll_group — the `group` strategy: the members of a Group, then each member's data since
 * the cursor; members never seen before in full (poll_source.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_alloc.h"
#include "fhir_log.h"
#include "poll_impl.h"

/* The members read by the poll in progress. */
typedef struct group_state {
    char **members;
    bool *member_new; /* no member cursor yet: read in full */
    size_t n_members;
} group_state;

static void group_reset(poll_source *p)
{
    group_state *g = p->state;
    for (size_t i = 0; i < g->n_members; i++)
        free(g->members[i]);
    free(g->members);
    free(g->member_new);
    memset(g, 0, sizeof *g);
}

static void group_finish(poll_source *p)
{
    const char *key = "lastUpdated";
    poll_commit_cursors(p, 1, &key);
    poll_end(p);
}

/* Inside the cursor transaction: members whose data is now stored are no longer new. */
static int group_member_cursors(poll_source *p, fhir_error *err)
{
    group_state *g = p->state;
    for (size_t i = 0; i < g->n_members; i++) {
        if (!g->member_new[i] || !p->type_ok[0])
            continue;
        char key[300];
        snprintf(key, sizeof key, "member:%s", g->members[i]);
        if (store_cursor_put(p->env.st, p->cfg->name, key, "1", err))
            return -1;
    }
    return 0;
}

static void group_members_start(poll_source *p)
{
    group_state *g = p->state;
    const char *cur = p->full_refresh ? NULL : p->cursor_old[0];
    int64_t cur_ms = poll_instant_ms(cur);
    char enc[128] = "";
    if (cur)
        poll_enc_instant(enc, sizeof enc, cur);
    for (size_t m = 0; m < g->n_members; m++) {
        for (size_t t = 0; t < p->cfg->types.n; t++) {
            const char *type = p->cfg->types.v[t];
            if (!strcmp(type, "Medication") || !strcmp(type, "Group"))
                continue; /* not patient-compartment searches: see below */
            char q[600];
            int k = !strcmp(type, "Patient")
                        ? snprintf(q, sizeof q, "Patient?_id=%s", g->members[m])
                        : snprintf(q, sizeof q, "%s?patient=%s", type, g->members[m]);
            poll_op *o = poll_op_new(p, 0, t, (long)m);
            if (cur && !g->member_new[m]) {
                k += snprintf(q + k, sizeof q - (size_t)k, "&_lastUpdated=ge%s", enc);
                o->since_ms = cur_ms;
            }
            snprintf(q + k, sizeof q - (size_t)k, "&_count=%ld", p->cfg->page_size);
            if (poll_start_search(p, o, q))
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
        poll_op *o = poll_op_new(p, 0, t, -1);
        if (cur) {
            snprintf(q + k, sizeof q - (size_t)k, "&_lastUpdated=ge%s", enc);
            o->since_ms = cur_ms;
        }
        poll_start_search(p, o, q);
    }
    if (p->pending == 0)
        group_finish(p);
}

static void on_group(void *ud, fhir_client_result *res)
{
    poll_op *o = ud;
    poll_source *p = o->p;
    group_state *g = p->state;
    poll_count_result(p, res);
    p->pending--;
    if (res->err.msg[0] || !res->body) {
        poll_log_err("poll.group_failed", p, res->err.msg[0] ? res->err.msg : "empty Group");
        poll_fail(p, res->err.msg[0] ? poll_reason_of(res) : "parse");
        fhir_client_result_free(res);
        poll_end(p);
        return;
    }
    size_t cap = fhir_node_count(fhir_node_get(res->body, "member"));
    if (cap > POLL_MAX_MEMBERS)
        cap = POLL_MAX_MEMBERS;
    g->members = calloc(cap + 1, sizeof *g->members);
    g->member_new = calloc(cap + 1, sizeof *g->member_new);
    if (!g->members || !g->member_new)
        abort();
    for (const fhir_node *m = fhir_node_first(fhir_node_get(res->body, "member")); m && g->n_members < cap;
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
        store_cursor_get(p->env.st, p->cfg->name, key, &v, &err);
        g->member_new[g->n_members] = v == NULL;
        free(v);
        g->members[g->n_members++] = fhir_xstrdup(ref + 8);
    }
    fhir_client_result_free(res);
    fhir_log(FHIR_LOG_DEBUG, "poll.group", "source=%s members=%zu", p->cfg->name, g->n_members);
    group_members_start(p);
}

static void group_poll(poll_source *p)
{
    poll_alloc_slots(p, 1);
    poll_initial_cursor(p, "lastUpdated", 0);
    poll_full_refresh_due(p);
    fhir_error err;
    fhir_error_clear(&err);
    poll_op *o = poll_op_new(p, 0, 0, -1);
    if (fhir_client_read(p->client, "Group", p->cfg->group_id, on_group, o, &err)) {
        poll_log_err("poll.group_failed", p, err.msg);
        poll_fail(p, "other");
        poll_end(p);
        return;
    }
    p->pending++;
}

static int group_init(poll_source *p, fhir_error *err)
{
    (void)err;
    p->state = calloc(1, sizeof(group_state));
    if (!p->state)
        abort();
    return 0;
}

static void group_free(poll_source *p)
{
    free(p->state);
    p->state = NULL;
}

const poll_impl poll_group_impl = {
    .kind = CONFIG_SOURCE_GROUP,
    .http = true,
    .init = group_init,
    .start = group_poll,
    .searches_done = group_finish,
    .more_cursors = group_member_cursors,
    .reset = group_reset,
    .free = group_free,
};
