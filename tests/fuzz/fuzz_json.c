/* fuzz_json — the JSON reader (fhir_json_parse, and the streaming reader fed in pieces whose
 * sizes come from the input) and the JSON writer. Invariants: both readers accept the same
 * inputs; what the writer produces from an accepted input is accepted again and written the
 * same way a second time; a resource the XML writer accepts reads back from XML (one resource
 * is never readable in one format and not in the other). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "fhir_json.h"
#include "fhir_xml.h"
#include "fuzz.h"

#define FUZZ_JSON_ARENA (64u << 20)
#define FUZZ_JSON_OUT (8u << 20)

static void fail(const char *what, const uint8_t *data, size_t size)
{
    fprintf(stderr, "fuzz_json: invariant broken: %s (input %zu bytes)\n", what, size);
    (void)data;
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT)
        return 0;
    fhir_json_limits lim;
    fhir_json_limits_default(&lim);
    fhir_arena *a = fhir_arena_new(FUZZ_JSON_ARENA);
    fhir_error err;
    fhir_node *whole = fhir_json_parse(a, (const char *)data, size, &lim, &err);

    /* the same bytes through the streaming reader, in pieces of one byte and of 2..17 bytes
     * chosen by the input itself (so a BOM or a UTF-8 sequence split across pieces is
     * exercised); both must agree with the whole-document reader */
    size_t steps[2] = {1, size ? (size_t)(data[size - 1] % 16u) + 2 : 2};
    for (int k = 0; k < 2; k++) {
        size_t step = steps[k];
        fhir_arena *sa = fhir_arena_new(FUZZ_JSON_ARENA);
        fhir_json_stream *st = fhir_json_stream_new(sa, &lim);
        fhir_error serr;
        fhir_error_clear(&serr);
        int fed = 0;
        for (size_t off = 0; off < size && fed == 0; off += step)
            fed = fhir_json_stream_feed(st, (const char *)data + off,
                                        off + step <= size ? step : size - off, &serr);
        fhir_node *streamed = fed == 0 ? fhir_json_stream_finish(st, &serr) : NULL;
        if ((whole != NULL) != (streamed != NULL)) {
            fprintf(stderr, "fuzz_json: whole: %s; streamed (pieces of %zu): %s\n",
                    whole ? "accepted" : err.msg, step, streamed ? "accepted" : serr.msg);
            fail("the whole and the streaming reader disagree", data, size);
        }
        fhir_json_stream_free(st);
        fhir_arena_free(sa);
    }
    if (whole) {
        fhir_buf w1, w2;
        fhir_buf_init(&w1, FUZZ_JSON_OUT);
        fhir_buf_init(&w2, FUZZ_JSON_OUT);
        if (fhir_json_write(&w1, whole, FHIR_JSON_COMPACT) == 0) {
            fhir_arena *b = fhir_arena_new(FUZZ_JSON_ARENA);
            fhir_node *again = fhir_json_parse(b, w1.data ? w1.data : "", w1.len, &lim, &err);
            if (!again)
                fail("the writer's output does not parse again", data, size);
            if (fhir_json_write(&w2, again, FHIR_JSON_COMPACT) != 0 || w1.len != w2.len ||
                memcmp(w1.data, w2.data, w1.len) != 0)
                fail("writing the parsed output again differs", data, size);
            fhir_arena_free(b);
        }
        fhir_buf x;
        fhir_buf_init(&x, FUZZ_JSON_OUT);
        if (fhir_xml_write(&x, whole, 0, &err) == 0) {
            fhir_arena *b = fhir_arena_new(FUZZ_JSON_ARENA);
            if (!fhir_xml_parse(b, x.data ? x.data : "", x.len, &lim, &err)) {
                fprintf(stderr, "fuzz_json: XML of an accepted resource: %s\n", err.msg);
                fail("the XML written from an accepted resource does not read back", data, size);
            }
            fhir_arena_free(b);
        }
        fhir_buf_free(&x);
        fhir_buf_free(&w1);
        fhir_buf_free(&w2);
    }
    fhir_arena_free(a);
    return 0;
}
