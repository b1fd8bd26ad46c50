/* fuzz — the harnesses under tests/fuzz/: each fuzz_<name>.c defines the libFuzzer entry
 * point for one reader that takes bytes from outside (an EHR, a file drop, a center, an
 * operator's file). Built with clang's libFuzzer by scripts/fuzz (-DCARTGATE_FUZZ=ON), and
 * always as a replay program (replay.c) that the test suite runs over the committed seed
 * corpus in tests/fuzz/corpus/<name>/ — under ASan+UBSan in the sanitizer pass.
 *
 * A harness never aborts on bad input: the readers must return an error. What is a defect:
 * a sanitizer report, a crash, a hang (libFuzzer -timeout), or an invariant the harness
 * checks (e.g. what the JSON writer produces parses again). */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>

#define FUZZ_MAX_INPUT (1u << 20) /* bytes: longer inputs are ignored (the readers' own caps
                                   * are tested elsewhere; this keeps runs fast) */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
