/* map_stream_med — the Medication table of map_stream (see map_stream_int.h). */
#include "map_stream_int.h"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

/* ---- the Medication table ----------------------------------------------------------------
 * Medications are shared: any patient's MedicationRequest may reference one by
 * "Medication/<id>" or by a Bundle fullUrl. They go to a temporary file, one record per key:
 * [u32 key len][key][u64 Medication number][u32 text len][text]; memory holds an index of
 * 16 bytes a key (hash, and offset + record length packed), so a lookup is one pread. A key
 * seen again points at the newer record (as map_group). */

#define MED_LEN_BITS 24 /* record lengths up to 16 MiB ride in the slot; longer: read twice */

int map_stream_med_open(ms *m)
{
    if (m->med_fd < 0 && (m->med_fd = map_stream_temp_fd(m)) < 0)
        return -1;
    if (ftruncate(m->med_fd, 0) != 0 || lseek(m->med_fd, 0, SEEK_SET) != 0)
        return fhir_error_set(m->err, "spill file: %s", strerror(errno));
    m->med_end = 0;
    fhir_buf_reset(&m->medw);
    free(m->med);
    m->med = NULL;
    m->med_cap = m->med_n = 0;
    return 0;
}

static int med_flush(ms *m)
{
    if (m->medw.len && map_stream_write_all(m, m->med_fd, m->medw.data, m->medw.len))
        return -1;
    fhir_buf_reset(&m->medw);
    return 0;
}

/* Reads the record a slot points at into the patient arena. */
static int med_read(ms *m, const mslot *s, const char **key, size_t *kl, uint64_t *no,
                    const char **text, size_t *tl)
{
    if (med_flush(m))
        return -1;
    uint64_t off = (s->off - 1) >> MED_LEN_BITS;
    size_t len = (size_t)((s->off - 1) & ((1u << MED_LEN_BITS) - 1));
    if (!len) { /* a long record: its lengths first */
        uint32_t a, b;
        if (map_stream_pread_all(m, m->med_fd, &a, 4, off) ||
            map_stream_pread_all(m, m->med_fd, &b, 4, off + 12 + a))
            return -1;
        len = 16 + (size_t)a + b;
    }
    char *p = fhir_arena_alloc(m->pa, len);
    if (!p)
        abort();
    if (map_stream_pread_all(m, m->med_fd, p, len, off))
        return -1;
    uint32_t a, b;
    memcpy(&a, p, 4);
    memcpy(no, p + 4 + a, 8);
    memcpy(&b, p + 12 + a, 4);
    *key = p + 4;
    *kl = a;
    *text = p + 16 + a;
    *tl = b;
    return 0;
}

/* Slot of key (found: with its text in *text, read into the patient arena; else the empty
 * slot where it goes); NULL on a read error. */
static mslot *med_slot(ms *m, const char *k, size_t kl, uint64_t h, bool *found,
                       uint64_t *no, const char **text, size_t *tl)
{
    *found = false;
    for (size_t j = (size_t)h & (m->med_cap - 1);; j = (j + 1) & (m->med_cap - 1)) {
        mslot *s = &m->med[j];
        if (!s->off)
            return s;
        if (s->h != h)
            continue;
        const char *rk;
        size_t rkl;
        if (med_read(m, s, &rk, &rkl, no, text, tl))
            return NULL;
        if (rkl == kl && !memcmp(rk, k, kl)) {
            *found = true;
            return s;
        }
    }
}

static int med_put(ms *m, const char *k, size_t kl, uint64_t no, const char *text, size_t len)
{
    if ((m->med_n + 1) * 2 > m->med_cap) {
        size_t nc = m->med_cap ? m->med_cap * 2 : 1024;
        mslot *nt = calloc(nc, sizeof *nt);
        if (!nt)
            abort();
        for (size_t i = 0; i < m->med_cap; i++) {
            if (!m->med[i].off)
                continue;
            size_t j = (size_t)m->med[i].h & (nc - 1);
            while (nt[j].off)
                j = (j + 1) & (nc - 1);
            nt[j] = m->med[i];
        }
        free(m->med);
        m->med = nt;
        m->med_cap = nc;
    }
    uint64_t h = hash_key(k, kl, 0);
    bool found;
    const char *old;
    size_t oldl;
    uint64_t oldno;
    mslot *s = med_slot(m, k, kl, h, &found, &oldno, &old, &oldl);
    fhir_arena_reset(m->pa);
    if (!s)
        return -1;
    uint32_t a = (uint32_t)kl, b = (uint32_t)len;
    uint64_t at = m->med_end;
    fhir_buf_append(&m->medw, &a, 4);
    fhir_buf_append(&m->medw, k, kl);
    fhir_buf_append(&m->medw, &no, 8);
    fhir_buf_append(&m->medw, &b, 4);
    fhir_buf_append(&m->medw, text, len);
    if (m->medw.len >= MAP_STREAM_SPILL_BUF && med_flush(m))
        return -1;
    size_t rl = 16 + kl + len;
    m->med_end += rl;
    if (!found)
        m->med_n++;
    s->h = h;
    s->off = ((at << MED_LEN_BITS) | (rl < (1u << MED_LEN_BITS) ? rl : 0)) + 1;
    m->st->medications = m->med_n;
    return 0;
}

/* Stores one Medication (its text: raw, or written from the tree) under "Medication/<id>"
 * and its fullUrl. */
int map_stream_med_add(ms *m, const fhir_node *res, const char *raw, size_t len, const char *url,
                   size_t url_len)
{
    const char *id = fhir_node_resource_id(res);
    if (!id && !url)
        return 0;
    if (!raw) {
        fhir_buf_reset(&m->tmp);
        fhir_json_write(&m->tmp, res, FHIR_JSON_COMPACT);
        raw = m->tmp.data ? m->tmp.data : "";
        len = m->tmp.len;
    }
    uint64_t no = ++m->med_count;
    if (url && med_put(m, url, url_len, no, raw, len))
        return -1;
    if (id) {
        char key[512];
        int kl = snprintf(key, sizeof key, "Medication/%s", id);
        if (kl > 0 && (size_t)kl < sizeof key && med_put(m, key, (size_t)kl, no, raw, len))
            return -1;
    }
    return 0;
}

/* The Medication a reference names, as map_group resolves it (the reference as a fullUrl,
 * else its "Medication/..." tail), parsed into the patient arena. 0 = none, 1 = found (*id:
 * the Medication's number, the same whichever key found it), -1 = error. */
int map_stream_med_find(ms *m, const char *ref, const fhir_node **med, uint64_t *id)
{
    if (!m->med_cap)
        return 0;
    const char *keys[2] = {ref, strstr(ref, "Medication/")};
    for (int i = 0; i < 2; i++) {
        if (!keys[i])
            continue;
        size_t kl = strlen(keys[i]);
        bool found;
        const char *text;
        size_t tl;
        uint64_t no;
        mslot *s = med_slot(m, keys[i], kl, hash_key(keys[i], kl, 0), &found, &no, &text, &tl);
        if (!s)
            return -1;
        if (!found)
            continue;
        fhir_error e;
        fhir_node *n = map_stream_parse(m, m->pa, text, tl, &e);
        if (!n)
            return fhir_error_set(m->err, "Medication table: %s", e.msg);
        *med = n;
        *id = no;
        return 1;
    }
    return 0;
}
