/* fuzz_bser — what a center answers to a referral: the input is parsed as the
 * transaction-response Bundle and matched against a fixed request Bundle (ServiceRequest and
 * Task entries) the way the sender does after a POST. */
#include <stdio.h>
#include <stdlib.h>

#include "bser.h"
#include "fhir_arena.h"
#include "fhir_error.h"
#include "fhir_json.h"
#include "fuzz.h"

#define FUZZ_BSER_ARENA (64u << 20)

static const char REQUEST[] =
    "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":["
    "{\"fullUrl\":\"urn:uuid:0b6f3a52-0000-4000-8000-000000000001\",\"resource\":{\"resourceType\":\"Patient\"},"
    "\"request\":{\"method\":\"POST\",\"url\":\"Patient\"}},"
    "{\"fullUrl\":\"urn:uuid:0b6f3a52-0000-4000-8000-000000000002\",\"resource\":{\"resourceType\":"
    "\"ServiceRequest\",\"status\":\"active\",\"intent\":\"order\"},"
    "\"request\":{\"method\":\"POST\",\"url\":\"ServiceRequest\"}},"
    "{\"fullUrl\":\"urn:uuid:0b6f3a52-0000-4000-8000-000000000003\",\"resource\":{\"resourceType\":\"Task\","
    "\"status\":\"requested\",\"intent\":\"order\"},\"request\":{\"method\":\"POST\",\"url\":\"Task\"}}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT)
        return 0;
    fhir_arena *a = fhir_arena_new(FUZZ_BSER_ARENA);
    fhir_error err;
    fhir_node *req = fhir_json_parse(a, REQUEST, sizeof REQUEST - 1, NULL, &err);
    if (!req) {
        fprintf(stderr, "fuzz_bser: the fixed request does not parse: %s\n", err.msg);
        abort();
    }
    fhir_node *resp = fhir_json_parse(a, (const char *)data, size, NULL, &err);
    if (resp) {
        char sr[256], task[256];
        (void)bser_response_refs(req, resp, sr, task, &err);
    }
    fhir_arena_free(a);
    return 0;
}
