/* fuzz_config — the configuration loader (an operator's file): every problem must come back
 * as FILE:LINE messages, never a crash. Relative paths resolve against a folder that does
 * not exist, so nothing outside the input is read through them. */
#include <stdlib.h>

#include "config.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "fuzz.h"

#define FUZZ_CONFIG_DIAG (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT)
        return 0;
    fhir_buf diag;
    fhir_buf_init(&diag, FUZZ_CONFIG_DIAG);
    size_t n_errors = 0;
    fhir_error err;
    config *c = config_load_mem("fuzz.conf", (const char *)data, size, "/nonexistent-cartgate-fuzz",
                                &diag, &n_errors, &err);
    config_free(c);
    fhir_buf_free(&diag);
    return 0;
}
