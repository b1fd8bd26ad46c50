/* fhir_ndjson — streaming NDJSON reader. Complete lines inside a chunk are parsed in place;
 * only a line that straddles chunks is copied into the (capped) carry buffer. The arena is
 * reset after every line, so memory is bounded by the longest line. */
#include "fhir_ndjson.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_alloc.h"

struct fhir_ndjson {
    fhir_json_limits lim;
    fhir_ndjson_cb cb;
    fhir_ndjson_err_cb on_error;
    void *ud;
    fhir_arena *arena;
    fhir_buf carry;        /* partial line across chunks */
    fhir_json_reader *rd;  /* one yajl handle for every line */
    int skipping;          /* discarding the rest of an over-long line */
    int stopped;
    size_t line_no;        /* current (1-based) line number */
    fhir_ndjson_stats st;
};

fhir_ndjson *fhir_ndjson_new(const fhir_json_limits *lim, fhir_ndjson_cb cb,
                             fhir_ndjson_err_cb on_error, void *ud)
{
    fhir_ndjson *r = fhir_xcalloc(1, sizeof *r);
    if (lim)
        r->lim = *lim;
    fhir_json_limits_default(&r->lim);
    r->cb = cb;
    r->on_error = on_error;
    r->ud = ud;
    /* the tree of one line is a small multiple of its text; cap it too */
    r->arena = fhir_arena_new(r->lim.max_bytes * 8);
    fhir_buf_init(&r->carry, r->lim.max_bytes);
    r->rd = fhir_json_reader_new(&r->lim);
    return r;
}

void fhir_ndjson_free(fhir_ndjson *r)
{
    if (!r)
        return;
    fhir_arena_free(r->arena);
    fhir_buf_free(&r->carry);
    fhir_json_reader_free(r->rd);
    free(r);
}

const fhir_ndjson_stats *fhir_ndjson_stats_get(const fhir_ndjson *r) { return &r->st; }

/* Handles a bad line: ask the caller whether to skip or stop. */
static int bad_line(fhir_ndjson *r, fhir_error *lerr, fhir_error *err)
{
    if (r->on_error && r->on_error(r->ud, r->line_no, lerr) == 0) {
        r->st.bad++;
        return 0;
    }
    r->stopped = 1;
    if (err)
        *err = *lerr;
    return -1;
}

static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    return 1;
}

static int do_line(fhir_ndjson *r, const char *s, size_t n, fhir_error *err)
{
    if (n && s[n - 1] == '\r')
        n--;
    if (blank(s, n))
        return 0;
    r->st.lines++;
    fhir_error lerr;
    fhir_error_clear(&lerr);
    fhir_node *res = fhir_json_reader_parse(r->rd, r->arena, s, n, &lerr);
    if (!res) {
        fhir_error_prefix(&lerr, "NDJSON line %zu", r->line_no);
        fhir_arena_reset(r->arena);
        return bad_line(r, &lerr, err);
    }
    if (res->kind != FHIR_OBJECT) {
        fhir_arena_reset(r->arena);
        fhir_error_set(&lerr, "NDJSON line %zu: expected a resource object, got %s", r->line_no,
                       fhir_node_kind_name(res->kind));
        return bad_line(r, &lerr, err);
    }
    r->st.ok++;
    fhir_error cb_err;
    fhir_error *e = err ? err : &cb_err; /* the callback's cause goes back to the caller */
    fhir_error_clear(e);
    int stop = r->cb ? r->cb(r->ud, res, r->line_no, e) : 0;
    fhir_arena_reset(r->arena);
    if (stop) {
        r->stopped = 1;
        return -1;
    }
    return 0;
}

int fhir_ndjson_feed(fhir_ndjson *r, const char *data, size_t len, fhir_error *err)
{
    if (r->stopped)
        return fhir_error_set(err, "NDJSON stream already stopped");
    r->st.bytes += len;
    const char *p = data, *end = data + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            /* partial line: keep it for the next chunk */
            if (!r->skipping && fhir_buf_append(&r->carry, p, (size_t)(end - p)) < 0) {
                fhir_error lerr;
                fhir_error_set(&lerr, "NDJSON line %zu: longer than max_bytes (%zu)",
                               r->line_no + 1, r->lim.max_bytes);
                fhir_buf_reset(&r->carry);
                r->skipping = 1;
                r->line_no++;
                r->st.lines++;
                if (bad_line(r, &lerr, err) < 0)
                    return -1;
            }
            return 0;
        }
        size_t n = (size_t)(nl - p);
        if (r->skipping) {
            r->skipping = 0; /* the over-long line ends here; already counted */
            p = nl + 1;
            continue;
        }
        r->line_no++;
        int rc;
        if (r->carry.len) {
            if (fhir_buf_append(&r->carry, p, n) < 0) {
                fhir_error lerr;
                fhir_error_set(&lerr, "NDJSON line %zu: longer than max_bytes (%zu)", r->line_no,
                               r->lim.max_bytes);
                fhir_buf_reset(&r->carry);
                r->st.lines++;
                rc = bad_line(r, &lerr, err);
            } else {
                rc = do_line(r, r->carry.data, r->carry.len, err);
                fhir_buf_reset(&r->carry);
            }
        } else {
            rc = do_line(r, p, n, err);
        }
        if (rc < 0)
            return -1;
        p = nl + 1;
    }
    return 0;
}

int fhir_ndjson_finish(fhir_ndjson *r, fhir_error *err)
{
    if (r->stopped)
        return fhir_error_set(err, "NDJSON stream already stopped");
    if (r->skipping) {
        r->skipping = 0;
        return 0;
    }
    if (r->carry.len) {
        r->line_no++;
        int rc = do_line(r, r->carry.data, r->carry.len, err);
        fhir_buf_reset(&r->carry);
        return rc;
    }
    return 0;
}

int fhir_ndjson_read_file(fhir_ndjson *r, FILE *f, fhir_error *err)
{
    char *chunk = fhir_xmalloc(65536);
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, 65536, f)) > 0)
        if ((rc = fhir_ndjson_feed(r, chunk, n, err)) < 0)
            break;
    if (rc == 0 && ferror(f))
        rc = fhir_error_set(err, "read error: %s", strerror(errno));
    if (rc == 0)
        rc = fhir_ndjson_finish(r, err);
    free(chunk);
    return rc;
}

int fhir_ndjson_read_path(fhir_ndjson *r, const char *path, fhir_error *err)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return fhir_error_set(err, "%s: %s", path, strerror(errno));
    int rc = fhir_ndjson_read_file(r, f, err);
    if (f != stdin)
        fclose(f);
    if (rc < 0 && err && err->msg[0])
        fhir_error_prefix(err, "%s", path);
    return rc;
}
