/* map_stream_sorted — the sorted merge of map_stream (see map_stream_int.h): NDJSON files each
 * ordered by patient id, read side by side like sorted runs, one patient held at a time. */
#include "map_stream_int.h"

#include <errno.h>
#include <stdio.h>

#include "map_profile.h"

/* A cursor's trees live in two arenas: a[cur] holds the patient being collected (reset once
 * that patient is delivered), a[!cur] the resources read ahead, which belong to a later
 * patient. A line goes to a[!cur] unless it names the patient being collected (its id occurs in
 * the text: a guess, checked once parsed; a wrong guess is copied over), so the head read ahead
 * is not copied between arenas for every patient. */
typedef struct cursor {
    const sfile *f;
    lreader r;
    fhir_arena *a[2];
    int cur;
    bool used;             /* advanced while collecting the patient being delivered */
    const fhir_node *head;
    const char *key;
    uint64_t pos;          /* head's rec.pos */
} cursor;

/* Does k (kl > 0 bytes) occur in s? */
static bool occurs(const char *s, size_t n, const char *k, size_t kl)
{
    for (const char *p = s, *end = s + n; (size_t)(end - p) >= kl; p++) {
        p = memchr(p, k[0], (size_t)(end - p) - kl + 1);
        if (!p)
            return false;
        if (!memcmp(p, k, kl))
            return true;
    }
    return false;
}

/* Moves c to its next keyed resource (head NULL at the end). */
static int cur_advance(ms *m, cursor *c)
{
    const char *prev = c->head ? c->key : NULL;
    size_t prev_len = prev ? strlen(prev) : 0;
    c->head = NULL;
    c->used = c->used || prev;
    for (;;) {
        const char *s;
        size_t n;
        int kind = map_stream_next_line(m, &c->r, c->f, &s, &n);
        if (kind <= 0)
            return kind < 0 ? MERGE_FAIL : MERGE_OK;
        bool ahead = prev_len && !occurs(s, n, prev, prev_len);
        fhir_arena *a = c->a[c->cur ^ ahead];
        bool bundle;
        fhir_node *res = kind == LINE_BUNDLE
                             ? NULL
                             : map_stream_parse_kept(m, a, s, n, kind == LINE_READ, &bundle);
        if (kind == LINE_BUNDLE || bundle)
            return MERGE_UNSORTED;
        if (!res)
            continue;
        const char *type = fhir_node_resource_type(res);
        m->st->resources++;
        if (!strcmp(type, "Medication"))
            return MERGE_UNSORTED;
        const char *key = map_stream_key_of(res, type, NULL, a);
        if (!key) {
            m->st->orphans++;
            continue;
        }
        int order = prev ? strcmp(key, prev) : 0;
        if (order < 0)
            return MERGE_UNSORTED;
        if (order > 0 && !ahead) { /* the guess was wrong: a later patient's */
            a = c->a[!c->cur];
            res = fhir_node_clone(a, res);
            key = fhir_arena_strdup(a, key);
            if (!res || !key)
                abort();
        }
        c->head = res;
        c->key = key;
        c->pos = map_stream_pos(m, c->f, c->r.line_off);
        return MERGE_OK;
    }
}

/* Loads a Medication file into the table (any other content: not the sorted layout). */
static int load_medications(ms *m, const sfile *f)
{
    int fd = map_stream_open_file(m, f);
    if (fd < 0)
        return MERGE_FAIL;
    lreader r;
    map_stream_lr_open(&r, fd, m->lim.max_bytes);
    int rc = MERGE_OK;
    for (;;) {
        const char *s;
        size_t n;
        int kind = map_stream_next_line(m, &r, f, &s, &n);
        if (kind <= 0) {
            rc = kind < 0 ? MERGE_FAIL : rc;
            break;
        }
        fhir_arena_reset(m->scratch);
        bool bundle;
        fhir_node *res = kind == LINE_BUNDLE
                             ? NULL
                             : map_stream_parse_kept(m, m->scratch, s, n, kind == LINE_READ, &bundle);
        const char *type = res ? fhir_node_resource_type(res) : NULL;
        if (kind == LINE_BUNDLE || bundle || (type && strcmp(type, "Medication"))) {
            rc = MERGE_UNSORTED;
            break;
        }
        if (!type)
            continue;
        m->st->resources++;
        if (map_stream_med_add(m, res, s, n, NULL, 0)) {
            rc = MERGE_FAIL;
            break;
        }
    }
    map_stream_lr_close(&r);
    fhir_arena_reset(m->scratch);
    return rc;
}

int map_stream_run_sorted(ms *m)
{
    cursor *cs = calloc(m->nfiles ? m->nfiles : 1, sizeof *cs);
    if (!cs)
        abort();
    size_t nc = 0;
    int rc = MERGE_OK;
    rec *v = NULL;
    size_t nv = 0, capv = 0;
    char *key = NULL;
    size_t keycap = 0;
    for (size_t i = 0; i < m->nfiles && rc == MERGE_OK; i++) {
        const sfile *f = &m->files[i];
        if (f->skip)
            continue;
        if (!f->ndjson) {
            rc = MERGE_UNSORTED;
            break;
        }
        if (f->medication) {
            rc = load_medications(m, f);
            continue;
        }
        cursor *c = &cs[nc];
        int fd = map_stream_open_file(m, f);
        if (fd < 0) {
            rc = MERGE_FAIL;
            break;
        }
        c->f = f;
        map_stream_lr_open(&c->r, fd, m->lim.max_bytes);
        c->a[0] = fhir_arena_new(0);
        c->a[1] = fhir_arena_new(0);
        nc++;
        rc = cur_advance(m, c);
    }
    while (rc == MERGE_OK) {
        const char *min = NULL;
        for (size_t i = 0; i < nc; i++)
            if (cs[i].head && (!min || strcmp(cs[i].key, min) < 0))
                min = cs[i].key;
        if (!min)
            break;
        size_t kl = strlen(min) + 1;
        if (kl > keycap)
            key = xrealloc(key, keycap = kl * 2);
        memcpy(key, min, kl);
        nv = 0;
        for (size_t i = 0; i < nc && rc == MERGE_OK; i++)
            while (cs[i].head && !strcmp(cs[i].key, key)) {
                if (nv == capv)
                    v = xrealloc(v, (capv = capv ? capv * 2 : 256) * sizeof *v);
                v[nv] = (rec){key, cs[i].head, NULL, 0, nv, cs[i].pos};
                nv++;
                if ((rc = cur_advance(m, &cs[i])) != MERGE_OK)
                    break;
            }
        if (rc != MERGE_OK)
            break;
        size_t held = 0;
        for (size_t i = 0; i < nc; i++)
            held += fhir_arena_used(cs[i].a[0]) + fhir_arena_used(cs[i].a[1]);
        if (map_stream_deliver(m, key, v, nv, held)) {
            rc = MERGE_FAIL;
            break;
        }
        /* free this patient's trees: the heads read ahead are in the other arenas */
        for (size_t i = 0; i < nc; i++) {
            cursor *c = &cs[i];
            if (!c->used)
                continue;
            fhir_arena_reset(c->a[c->cur]);
            c->cur = !c->cur;
            c->used = false;
        }
    }
    for (size_t i = 0; i < nc; i++) {
        map_stream_lr_close(&cs[i].r);
        fhir_arena_free(cs[i].a[0]);
        fhir_arena_free(cs[i].a[1]);
    }
    free(cs);
    free(v);
    free(key);
    return rc;
}
