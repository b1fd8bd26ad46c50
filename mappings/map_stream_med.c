/* map_stream_med — the Medication table of map_stream (see map_stream_int.h). */
#include "map_stream_int.h"

#include "fhir_alloc.h"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

/* ---- the Medication table ----------------------------------------------------------------
 * Medications are shared: any patient's MedicationRequest may reference one by
 * "Medication/<id>" or by a Bundle fullUrl. They go to a temporary file, one record per key:
 * [u32 key len][key][u64 Medication number][u32 text len][text]; memory holds an index of
 * 16 bytes a key (hash, and offset + record length packed), so a lookup is one pread. A key
 * seen again points at the newer record (as map_group).
 * The index holds at most m->med_max bytes of slots (the old table counted while it
 * doubles). When it is full its slots are written to the same file as a run sorted by hash,
 * memory keeps the first hash of each 4 KiB block of the run (a fence), and the table starts
 * empty. A lookup tries the table, then the runs newest first (the newest record of a key
 * wins): a binary search on the fences, one block read, then the record's read. */

#define MED_LEN_BITS 24 /* record lengths up to 16 MiB ride in the slot; longer: read twice */
#define MED_FIRST 1024  /* slots of the first table (fewer when the cap is smaller) */

static void med_peak(ms *m, size_t bytes)
{
    if (bytes > m->st->med_index_peak)
        m->st->med_index_peak = bytes;
}

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
    m->med_cap = m->med_n = m->med_keys = 0;
    m->nruns = m->nfences = 0;
    m->st->medications = 0;
    return 0;
}

void map_stream_med_close(ms *m)
{
    free(m->med);
    free(m->runs);
    free(m->fences);
    m->med = NULL;
    m->runs = NULL;
    m->fences = NULL;
    m->med_cap = m->med_n = m->nruns = m->capruns = m->nfences = m->capfences = 0;
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

/* 1 when the record of slot s has key k (its number and text then set), 0 when not, -1 on
 * a read error. */
static int med_match(ms *m, const mslot *s, const char *k, size_t kl, uint64_t *no,
                     const char **text, size_t *tl)
{
    const char *rk;
    size_t rkl;
    if (med_read(m, s, &rk, &rkl, no, text, tl))
        return -1;
    return rkl == kl && !memcmp(rk, k, kl);
}

/* Slot of key in the in-memory table (found: with its text in *text, read into the patient
 * arena; else the empty slot where it goes); NULL on a read error. */
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
        int r = med_match(m, s, k, kl, no, text, tl);
        if (r < 0)
            return NULL;
        if (r) {
            *found = true;
            return s;
        }
    }
}

/* Looks key up in run r: 1 found (its record read into the patient arena), 0 not, -1 on a
 * read error. */
static int run_find(ms *m, const medrun *r, const char *k, size_t kl, uint64_t h,
                    uint64_t *no, const char **text, size_t *tl)
{
    const uint64_t *f = m->fences + r->fence0;
    size_t nb = (r->n + MED_PER_BLOCK - 1) / MED_PER_BLOCK;
    size_t lo = 0, hi = nb; /* the first block whose first hash is >= h */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (f[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* the key's hash may end the block before (or, shared by keys, run past a block) */
    for (size_t b = lo ? lo - 1 : 0; b < nb && f[b] <= h; b++) {
        size_t cnt = r->n - b * MED_PER_BLOCK;
        if (cnt > MED_PER_BLOCK)
            cnt = MED_PER_BLOCK;
        if (map_stream_pread_all(m, m->med_fd, m->medblk, cnt * sizeof(mslot),
                                 r->off + (uint64_t)b * MED_BLOCK))
            return -1;
        for (size_t i = 0; i < cnt; i++) {
            if (m->medblk[i].h < h)
                continue;
            if (m->medblk[i].h > h)
                return 0;
            mslot s = m->medblk[i];
            int x = med_match(m, &s, k, kl, no, text, tl);
            if (x)
                return x;
        }
    }
    return 0;
}

/* Looks key up in the runs, newest first: 1 found, 0 not, -1 on a read error. */
static int runs_find(ms *m, const char *k, size_t kl, uint64_t h, uint64_t *no,
                     const char **text, size_t *tl)
{
    for (size_t i = m->nruns; i-- > 0;) {
        int r = run_find(m, &m->runs[i], k, kl, h, no, text, tl);
        if (r)
            return r;
    }
    return 0;
}

static void sift_down(mslot *a, size_t i, size_t n)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && a[c + 1].h > a[c].h)
            c++;
        if (a[c].h <= a[i].h)
            return;
        mslot t = a[i];
        a[i] = a[c];
        a[c] = t;
        i = c;
    }
}

/* Sorts slots by hash in place (heapsort: qsort may take a copy of the table, past the cap). */
static void sort_slots(mslot *a, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift_down(a, i, n);
    for (size_t e = n; e > 1; e--) {
        mslot t = a[0];
        a[0] = a[e - 1];
        a[e - 1] = t;
        sift_down(a, 0, e - 1);
    }
}

/* Writes the in-memory table as a run (sorted by hash) after the records and empties it. */
static int med_spill(ms *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->med_cap; i++)
        if (m->med[i].off)
            m->med[n++] = m->med[i];
    size_t nb = (n + MED_PER_BLOCK - 1) / MED_PER_BLOCK;
    if ((m->nfences + nb) * sizeof *m->fences + (m->nruns + 1) * sizeof *m->runs >
        MAP_STREAM_MED_FENCES_MAX)
        return fhir_error_set(m->err, "Medication table: more than %zu bytes of index fences "
                              "(MAP_STREAM_MED_FENCES_MAX)", (size_t)MAP_STREAM_MED_FENCES_MAX);
    if (m->nruns == m->capruns) {
        m->capruns = m->capruns ? m->capruns * 2 : 8;
        m->runs = xrealloc(m->runs, m->capruns * sizeof *m->runs);
    }
    if (m->nfences + nb > m->capfences) {
        while (m->nfences + nb > m->capfences)
            m->capfences = m->capfences ? m->capfences * 2 : 64;
        if (m->capfences > MAP_STREAM_MED_FENCES_MAX / sizeof *m->fences)
            m->capfences = MAP_STREAM_MED_FENCES_MAX / sizeof *m->fences;
        m->fences = xrealloc(m->fences, m->capfences * sizeof *m->fences);
    }
    sort_slots(m->med, n);
    if (med_flush(m) || map_stream_write_all(m, m->med_fd, m->med, n * sizeof *m->med))
        return -1;
    m->runs[m->nruns++] = (medrun){m->med_end, n, m->nfences};
    for (size_t b = 0; b < nb; b++)
        m->fences[m->nfences++] = m->med[b * MED_PER_BLOCK].h;
    m->med_end += n * sizeof *m->med;
    memset(m->med, 0, m->med_cap * sizeof *m->med);
    m->med_n = 0;
    m->st->med_runs++;
    return 0;
}

/* Makes room for one more key in the in-memory table: doubles it while the old and the new
 * table fit in med_max together; past that writes it as a run (and takes the doubled size
 * once, when it fits alone); at its largest, fills it to 3/4. */
static int med_room(ms *m)
{
    size_t maxslots = 1;
    while (maxslots * 2 * sizeof(mslot) <= m->med_max)
        maxslots *= 2;
    if (!m->med_cap) {
        m->med_cap = maxslots < MED_FIRST ? maxslots : MED_FIRST;
        m->med = fhir_xcalloc(m->med_cap, sizeof *m->med);
        med_peak(m, m->med_cap * sizeof *m->med);
        return 0;
    }
    if ((m->med_n + 1) * 2 <= m->med_cap)
        return 0;
    size_t nc = m->med_cap * 2;
    if ((m->med_cap + nc) * sizeof(mslot) <= m->med_max) {
        mslot *nt = fhir_xcalloc(nc, sizeof *nt);
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
        med_peak(m, (nc + nc / 2) * sizeof(mslot));
        return 0;
    }
    if (nc <= maxslots) { /* the doubled table fits alone: the old one goes to disk first */
        if (med_spill(m))
            return -1;
        free(m->med);
        m->med = fhir_xcalloc(nc, sizeof *m->med);
        m->med_cap = nc;
        med_peak(m, nc * sizeof(mslot));
        return 0;
    }
    if ((m->med_n + 1) * 4 > m->med_cap * 3)
        return med_spill(m);
    return 0;
}

static int med_put(ms *m, const char *k, size_t kl, uint64_t no, const char *text, size_t len)
{
    if (med_room(m))
        return -1;
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
    if (!found) { /* the runs are not searched (a read a run a key): a key already written
                     to a run counts again */
        m->med_n++;
        m->med_keys++;
    }
    s->h = h;
    s->off = ((at << MED_LEN_BITS) | (rl < (1u << MED_LEN_BITS) ? rl : 0)) + 1;
    m->st->medications = m->med_keys;
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
    if (!m->med_cap && !m->nruns)
        return 0;
    const char *keys[2] = {ref, strstr(ref, "Medication/")};
    for (int i = 0; i < 2; i++) {
        if (!keys[i])
            continue;
        size_t kl = strlen(keys[i]);
        bool found = false;
        const char *text;
        size_t tl;
        uint64_t no, h = hash_key(keys[i], kl, 0);
        if (m->med_cap && !med_slot(m, keys[i], kl, h, &found, &no, &text, &tl))
            return -1;
        int r = found ? 1 : runs_find(m, keys[i], kl, h, &no, &text, &tl);
        if (r < 0)
            return -1;
        if (!r)
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
