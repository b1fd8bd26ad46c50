/* fuzz_ndjson — the NDJSON reader (bulk export files, file drops) fed in pieces whose sizes
 * come from the input; bad lines are skipped as the daemon does. Invariant: every non-blank
 * line is either delivered or counted bad. */
#include <stdio.h>
#include <stdlib.h>

#include "fhir_error.h"
#include "fhir_json.h"
#include "fhir_ndjson.h"
#include "fhir_node.h"
#include "fuzz.h"

static int on_res(void *ud, const fhir_node *res, size_t line_no, fhir_error *err)
{
    (void)ud;
    (void)line_no;
    (void)fhir_node_resource_type(res);
    return 0;
}

static int on_bad(void *ud, size_t line_no, const fhir_error *err)
{
    (void)ud;
    (void)line_no;
    (void)err;
    return 0; /* skip and go on */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT)
        return 0;
    fhir_json_limits lim;
    fhir_json_limits_default(&lim);
    lim.max_bytes = 64u << 10; /* small line cap: the over-long-line path is exercised too */
    fhir_ndjson *r = fhir_ndjson_new(&lim, on_res, on_bad, NULL);
    fhir_error err;
    size_t step = size ? (size_t)(data[size - 1] % 64u) + 1 : 1;
    int rc = 0;
    for (size_t off = 0; off < size && rc == 0; off += step)
        rc = fhir_ndjson_feed(r, (const char *)data + off, off + step <= size ? step : size - off, &err);
    if (rc == 0)
        rc = fhir_ndjson_finish(r, &err);
    const fhir_ndjson_stats *st = fhir_ndjson_stats_get(r);
    if (rc == 0 && st->ok + st->bad != st->lines) {
        fprintf(stderr, "fuzz_ndjson: %zu lines, %zu delivered, %zu bad\n", st->lines, st->ok, st->bad);
        abort();
    }
    fhir_ndjson_free(r);
    return 0;
}
