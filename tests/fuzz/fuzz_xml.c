/* fuzz_xml — the FHIR XML reader (libxml2 with no network, entities or DTD) and writer.
 * Invariant: what the XML writer produces from an accepted resource is accepted again. */
#include <stdio.h>
#include <stdlib.h>

#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "fhir_json.h"
#include "fhir_xml.h"
#include "fuzz.h"

#define FUZZ_XML_ARENA (64u << 20)
#define FUZZ_XML_OUT (8u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT)
        return 0;
    fhir_arena *a = fhir_arena_new(FUZZ_XML_ARENA);
    fhir_error err;
    fhir_node *n = fhir_xml_parse(a, (const char *)data, size, NULL, &err);
    if (n) {
        fhir_buf x, j;
        fhir_buf_init(&x, FUZZ_XML_OUT);
        fhir_buf_init(&j, FUZZ_XML_OUT);
        if (fhir_xml_write(&x, n, 0, &err) == 0) {
            fhir_arena *b = fhir_arena_new(FUZZ_XML_ARENA);
            if (!fhir_xml_parse(b, x.data ? x.data : "", x.len, NULL, &err)) {
                fprintf(stderr, "fuzz_xml: the writer's output does not parse again: %s\n", err.msg);
                abort();
            }
            fhir_arena_free(b);
        }
        (void)fhir_json_write(&j, n, FHIR_JSON_COMPACT);
        fhir_buf_free(&x);
        fhir_buf_free(&j);
    }
    fhir_arena_free(a);
    return 0;
}
