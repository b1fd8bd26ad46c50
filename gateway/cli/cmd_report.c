/* cmd_report — what `screen` and `profile` skipped, named file by file (see cmd.h). */
#include <stdio.h>

#include "cmd.h"
#include "map_group.h"

typedef struct report {
    const char *name;
    size_t listed, more;
} report;

static void on_bad_line(void *ud, const char *file, size_t line_no)
{
    report *r = ud;
    if (r->listed < CMD_BAD_LINES_LISTED) {
        fprintf(stderr, "cartgate %s: %s:%zu: line refused: not a JSON object (skipped)\n", r->name, file, line_no);
        r->listed++;
    } else {
        r->more++;
    }
}

static void on_unresolved(void *ud, const char *file, size_t count)
{
    report *r = ud;
    fprintf(stderr, "cartgate %s: %s: %zu resource%s whose patient reference names no patient (a urn:uuid that is "
                    "no Patient of its Bundle): not read\n",
            r->name, file, count, count == 1 ? "" : "s");
}

int cmd_report_skipped(const char *name, const char *const *paths, size_t n, size_t bad_lines, size_t orphans,
                       bool keep_going)
{
    if (!bad_lines && !orphans)
        return 0;
    report r = {.name = name};
    map_group_report mr = {.bad_line = on_bad_line, .unresolved = on_unresolved, .ud = &r};
    fhir_error err;
    fhir_error_clear(&err);
    long bad = map_group_report_paths(paths, n, &mr, &err);
    if (bad < 0)
        fprintf(stderr, "cartgate %s: %s\n", name, err.msg);
    if (r.more)
        fprintf(stderr, "cartgate %s: ... and %zu more refused line%s\n", name, r.more, r.more == 1 ? "" : "s");
    if (bad_lines)
        fprintf(stderr, "cartgate %s: skipped %zu unparsable NDJSON line%s%s\n", name, bad_lines,
                bad_lines == 1 ? "" : "s", keep_going ? " (--keep-going)" : "; exit status 1 (--keep-going accepts them)");
    return bad_lines && !keep_going ? 1 : 0;
}
