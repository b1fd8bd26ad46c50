/* fuzz_criteria — the criteria loader: the input is one criteria file loaded beside the
 * project's params.json (conf/criteria); when it loads, the rule set's explanation of an
 * empty patient is written too (every reference the loader accepted must resolve). */
#include <stdio.h>
#include <stdlib.h>

#include "elig.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "fuzz.h"

#ifndef CARTGATE_SOURCE_DIR
#define CARTGATE_SOURCE_DIR "."
#endif

static char *params;
static size_t params_len;

static void load_params(void)
{
    if (params)
        return;
    FILE *f = fopen(CARTGATE_SOURCE_DIR "/conf/criteria/params.json", "rb");
    if (!f) {
        fprintf(stderr, "fuzz_criteria: %s/conf/criteria/params.json missing\n", CARTGATE_SOURCE_DIR);
        abort();
    }
    static char buf[1u << 16];
    params_len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    params = buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT)
        return 0;
    load_params();
    elig_source src[2] = {
        {.name = "params.json", .data = params, .len = params_len},
        {.name = "fuzz.json", .data = (const char *)data, .len = size},
    };
    fhir_error err;
    elig_ruleset *rs = elig_load_sources(src, 2, &err);
    if (rs)
        (void)elig_ruleset_hash(rs);
    elig_ruleset_free(rs);
    return 0;
}
