/* poll_files — the `files` strategy: a drop folder of JSON / NDJSON files (poll_source.h). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fhir_alloc.h"
#include "fhir_arena.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "fhir_ndjson.h"
#include "poll_impl.h"

typedef struct file_ctx {
    poll_source *p;
} file_ctx;

static int file_line(void *ud, const fhir_node *res, size_t line_no, fhir_error *err)
{
    file_ctx *f = ud;
    if (poll_ingest(f->p, res, err)) /* the reader returns with this cause */
        return fhir_error_prefix(err, "line %zu", line_no), 1;
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
    store *st = p->env.st;
    if (store_begin(st, err))
        return -1;
    int rc = 0;
    file_ctx fc = {.p = p};
    if (has_suffix(path, ".ndjson") || has_suffix(path, ".jsonl")) {
        fhir_json_limits lim = {.max_bytes = 256u << 20};
        fhir_ndjson *r = fhir_ndjson_new(&lim, file_line, NULL, &fc);
        rc = fhir_ndjson_read_path(r, path, err);
        fhir_ndjson_free(r);
    } else {
        fhir_arena *a = fhir_arena_new(0);
        fhir_json_limits lim = {.max_bytes = 512u << 20};
        fhir_node *n = fhir_json_parse_file(a, path, &lim, err);
        rc = n ? poll_ingest(p, n, err) : -1;
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
        poll_log_err("files.failed", p, msg);
        poll_fail(p, "files");
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
        names[n++] = fhir_xstrdup(e->d_name);
    }
    closedir(dh);
    if (n)
        qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", dir, names[i]);
        fhir_error err;
        fhir_error_clear(&err);
        size_t before = p->changed, unresolved = p->unresolved;
        if (file_process(p, full, &err) == 0) {
            move_to(dir, "done", names[i], NULL);
            fhir_log(FHIR_LOG_INFO, "files.done", "source=%s file=%s changed=%zu", p->cfg->name, names[i],
                     p->changed - before);
            if (p->unresolved > unresolved) /* by source, file and count: never the references */
                fhir_log(FHIR_LOG_WARN, "files.unresolved", "source=%s file=%s count=%zu", p->cfg->name, names[i],
                         p->unresolved - unresolved);
        } else {
            p->changed = before;
            p->unresolved = unresolved;
            move_to(dir, "failed", names[i], err.msg);
            fhir_log(FHIR_LOG_WARN, "files.failed", "source=%s file=%s error=%s", p->cfg->name, names[i],
                     err.msg);
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

static int files_init(poll_source *p, fhir_error *err)
{
    if (ensure_dir(p->cfg->dir) != 0)
        return fhir_error_set(err, "drop folder %s: %s", p->cfg->dir, strerror(errno));
    return 0;
}

const poll_impl poll_files_impl = {
    .kind = CONFIG_SOURCE_FILES,
    .http = false,
    .init = files_init,
    .start = files_poll,
};
