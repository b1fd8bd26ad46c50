/* map_stream_int.h — what the files of map_stream share (private to mappings/; the public
 * interface is map_stream.h):
 *   map_stream.c         input files, line reading, patient keys, delivery, map_stream_run
 *   map_stream_med.c     the Medication table (on disk, index in memory)
 *   map_stream_sorted.c  the sorted merge of NDJSON files
 *   map_stream_group.c   grouping in memory and in spill files
 */
#ifndef MAP_STREAM_INT_H
#define MAP_STREAM_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_hash.h"
#include "fhir_json.h"
#include "map_stream.h"

#define BUNDLE_MAX_DEPTH 3 /* as map_group: Bundles nested deeper are not unpacked */

static inline void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

static inline uint64_t hash_key(const char *s, size_t n, uint64_t seed)
{
    uint64_t h = fhir_hash64(FHIR_HASH64_INIT ^ (seed * 0x9E3779B97F4A7C15ull), s, n);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static inline bool is_type(const char *t, size_t tl, const char *name)
{
    return t && strlen(name) == tl && !memcmp(t, name, tl);
}

/* ---- input files ------------------------------------------------------------------------ */

typedef struct sfile {
    char *path;
    bool ndjson;
    bool skip;             /* named after a type the profile never reads (or a manifest's) */
    bool medication;       /* named after Medication (bulk layout) */
    bool manifest;         /* a bulk export's manifest: read for the types, not as FHIR */
    uint64_t size;
} sfile;

typedef struct rec {
    const char *key;       /* patient id */
    const fhir_node *res;  /* the tree (parsed when the patient is delivered) */
    const char *raw;       /* held text (grouping), NULL in the sorted merge */
    size_t len;
    size_t seq;
    uint64_t pos;          /* map_stream_order(false, file, position in the file) */
} rec;

typedef struct spill {
    int fd;
    char *buf;
    size_t n;
    uint64_t size;
} spill;

typedef struct mslot {
    uint64_t h;
    uint64_t off;          /* (record offset << MED_LEN_BITS | record length) + 1; 0 = empty */
} mslot;

typedef struct medrun {
    uint64_t off;          /* file offset of its slots (sorted by hash) */
    size_t n;              /* slots */
    size_t fence0;         /* its first fence in ms.fences: one a MED_BLOCK of slots */
} medrun;

#define MED_BLOCK 4096u    /* a run is read a block at a time */
#define MED_PER_BLOCK (MED_BLOCK / sizeof(mslot))

typedef struct medsel {
    const char *ref;       /* medicationReference.reference (borrowed from the resource) */
    uint64_t id;           /* the number of the Medication it names; 0 = none */
} medsel;

typedef struct ms {
    map_stream_opts o;
    map_stream_stats *st;
    fhir_error *err;
    map_stream_patient_fn fn;
    map_stream_restart_fn restart;
    void *ud;
    fhir_json_limits lim;
    fhir_json_reader *jr;  /* one parser handle for every resource text (fhir_json_reader) */
    sfile *files;
    size_t nfiles;
    char *stdin_doc;       /* "-" read once (grouping may read the input twice) */
    size_t stdin_len;
    bool have_stdin;
    /* Medication table */
    int med_fd;
    uint64_t med_end;
    uint64_t med_count;    /* Medications stored (numbers records of the same resource) */
    fhir_buf medw;         /* records not yet written (flushed before any read) */
    mslot *med;
    size_t med_cap, med_n; /* slots of the in-memory table, keys in it */
    size_t med_max;        /* bytes of slots in memory at most (o.med_index_max) */
    size_t med_keys;       /* keys stored (st->medications) */
    medrun *runs;          /* index runs on disk, oldest first */
    size_t nruns, capruns;
    uint64_t *fences;      /* the first hash of each block of each run */
    size_t nfences, capfences;
    mslot medblk[MED_PER_BLOCK]; /* one block of a run */
    /* grouping */
    fhir_arena *hold;      /* texts held for grouping (memory mode, one spill file) */
    fhir_arena *scratch;   /* one line or document being looked at */
    fhir_arena *pa;        /* the patient being delivered: its trees, its Medications */
    rec *recs;
    size_t nrecs, caprecs;
    bool spilling;
    spill *parts;
    size_t nparts;
    /* delivery */
    const fhir_node **arr;
    size_t narr, caparr;
    struct medsel *medsel;     /* references of the patient being assembled */
    size_t nmedsel, capmedsel;
    fhir_buf tmp;
} ms;

/* A pull reader of lines over a file descriptor. Lines longer than max are reported as
 * too long (and skipped) instead of growing the buffer past max. */
typedef struct lreader {
    int fd;
    char *buf;
    size_t cap, beg, end, scan, max;
    bool eof, skipping;
    uint64_t buf_off;      /* file offset of buf[0] */
    uint64_t line_off;     /* file offset of the line returned last */
} lreader;

typedef struct alias {
    const char *url;       /* fullUrl of a Patient entry of the current Bundle */
    size_t url_len;
    const char *id;
} alias;

typedef struct scope {
    alias *v;
    size_t n, cap;
} scope;

/* LINE_READ: "resourceType" first and read by the profile; LINE_PARSE: the type is not first
 * (the parser says). */
enum { LINE_BLANK, LINE_SKIP, LINE_READ, LINE_PARSE, LINE_BUNDLE };

enum { MERGE_OK = 0, MERGE_FAIL = -1, MERGE_UNSORTED = 1 };

enum { GROUP_OK = 0, GROUP_FAIL = -1, GROUP_OVER = 1 };

/* ---- map_stream.c: inputs, keys, delivery ------------------------------------------------- */

/* One resource's JSON text into a (the reader kept across texts). */
static inline fhir_node *map_stream_parse(ms *m, fhir_arena *a, const char *s, size_t n,
                                          fhir_error *err)
{
    return fhir_json_reader_parse(m->jr, a, s, n, err);
}

void map_stream_lr_open(lreader *r, int fd, size_t max);
void map_stream_lr_close(lreader *r);
/* 1 = a line in *s / *n (valid until the next call), 2 = a line longer than max (skipped),
 * 0 = end of file, -1 = read error (errno). */
int map_stream_lr_next(lreader *r, const char **s, size_t *n);
/* open(2) of an input file; -1 with m->err set. */
int map_stream_open_file(ms *m, const sfile *f);
/* A whole JSON file (or stdin's copy); caller frees *out unless it is m->stdin_doc. */
int map_stream_read_doc(ms *m, const sfile *f, char **out, size_t *len);
/* An unlinked temporary file; -1 with m->err set. */
int map_stream_temp_fd(ms *m);
int map_stream_write_all(ms *m, int fd, const void *p, size_t n);
int map_stream_pread_all(ms *m, int fd, void *p, size_t n, uint64_t off);
/* The patient id of a resource from its tree, or from its text (1, 0 none, -1 cannot tell). */
const char *map_stream_key_of(const fhir_node *res, const char *type, const scope *sc,
                              fhir_arena *a);
int map_stream_key_scan(const char *raw, size_t len, const char *type, size_t tl,
                        const scope *sc, fhir_arena *a, const char **key);
/* LINE_* of an NDJSON line (a trailing CR dropped from *n); counts what it skips. */
int map_stream_line_kind(ms *m, const char *s, size_t *n);
/* The next line of r worth a look: its LINE_READ, LINE_PARSE or LINE_BUNDLE, 0 at the end, or
 * -1 with m->err set (a read error, named after f). Blank lines are passed over; lines too
 * long and lines of types never read are counted. */
int map_stream_next_line(ms *m, lreader *r, const sfile *f, const char **s, size_t *n);
/* A line of a type the profile reads, parsed into a; NULL when dropped (*bundle: unpack it). */
fhir_node *map_stream_parse_kept(ms *m, fhir_arena *a, const char *s, size_t n, bool sniffed,
                                 bool *bundle);
/* One patient's resources (records in input order) to the consumer, as map_group orders
 * them; held: bytes of trees and text held meanwhile (for the peak). */
int map_stream_deliver(ms *m, const char *key, const rec *v, size_t n, size_t held);
/* rec.pos of a position in input file f (an index into m->files). */
static inline uint64_t map_stream_pos(const ms *m, const sfile *f, uint64_t at)
{
    return map_stream_order(false, (uint64_t)(f - m->files), at);
}
/* Counters start again for another pass over the input. */
void map_stream_begin_pass(ms *m);

/* ---- map_stream_med.c: the Medication table ------------------------------------------------ */

/* Empties the table (creating its file the first time). */
int map_stream_med_open(ms *m);
/* Frees the index (the file stays open: map_stream_run closes it). */
void map_stream_med_close(ms *m);
int map_stream_med_add(ms *m, const fhir_node *res, const char *raw, size_t len,
                       const char *url, size_t url_len);
int map_stream_med_find(ms *m, const char *ref, const fhir_node **med, uint64_t *id);

/* ---- map_stream_sorted.c / map_stream_group.c -------------------------------------------- */

/* MERGE_OK, MERGE_FAIL (m->err set) or MERGE_UNSORTED (start again with grouping). */
int map_stream_run_sorted(ms *m);
/* GROUP_OK or GROUP_FAIL; spill_now: partition from the start. */
int map_stream_run_grouped(ms *m, bool spill_now);

#endif
