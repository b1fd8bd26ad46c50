/* fuzz_centers — the treatment-center directory loader (a file an integrator edits). */
#include <stdlib.h>

#include "centers.h"
#include "fhir_error.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT)
        return 0;
    fhir_error err;
    centers_dir *d = centers_load_mem("fuzz-centers.json", (const char *)data, size, &err);
    centers_free(d);
    return 0;
}
