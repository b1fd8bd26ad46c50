/* Unit tests: fhir_alloc_heap_setup advises the heap onto transparent huge pages (the next
 * allocations are carved from memory the kernel reports as THP-eligible), and the never-fail
 * allocators return usable memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fhir_alloc.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#endif

/* The kernel's THP mode: "always", "madvise", "never", or "" when unknown. */
static void thp_mode(char *out, size_t n)
{
    out[0] = '\0';
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f)
        return;
    char line[128];
    if (fgets(line, sizeof line, f)) {
        char *a = strchr(line, '['), *b = a ? strchr(a, ']') : NULL;
        if (a && b && (size_t)(b - a - 1) < n) {
            memcpy(out, a + 1, (size_t)(b - a - 1));
            out[b - a - 1] = '\0';
        }
    }
    fclose(f);
}

#ifndef UNDER_ASAN
/* THPeligible of the mapping holding address p in /proc/self/smaps: 1, 0, or -1 not found. */
static int thp_eligible(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[512];
    int inside = 0, r = -1;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = a >= lo && a < hi;
            continue;
        }
        int v;
        if (inside && sscanf(line, "THPeligible: %d", &v) == 1) {
            r = v;
            break;
        }
    }
    fclose(f);
    return r;
}
#endif

static void heap_on_huge_pages(void **state)
{
    (void)state;
#if !defined(__linux__) || !defined(__GLIBC__)
    skip();
#else
    char mode[32];
    thp_mode(mode, sizeof mode);
    size_t advised = fhir_alloc_heap_setup(16u << 20, 32u << 20, 64u << 20);
    assert_true(advised >= (15u << 20));
#ifdef UNDER_ASAN
    /* ASan's allocator ignores mallopt and keeps freed blocks in quarantine: the next block
     * is not carved from the advised memory */
    skip();
#else
    if (strcmp(mode, "madvise") != 0 && strcmp(mode, "always") != 0)
        skip(); /* THP off (or unknown): nothing to see, and nothing changes */
    /* a block from the heap's top, which the advised memory now is */
    char *p = fhir_xmalloc(4u << 20);
    memset(p, 1, 4u << 20);
    int eligible = thp_eligible(p + (2u << 20));
    free(p);
    if (eligible < 0)
        skip(); /* a kernel whose smaps does not say (THPeligible: Linux 5.0 and later) */
    assert_int_equal(eligible, 1);
#endif
#endif
}

static void below_reserve_minimum_nothing_advised(void **state)
{
    (void)state;
    /* a reserve under 4 MiB, or one the trim threshold would hand back: not worth it */
    assert_int_equal(fhir_alloc_heap_setup(1u << 20, 32u << 20, 64u << 20), 0);
    assert_int_equal(fhir_alloc_heap_setup(16u << 20, 32u << 20, 8u << 20), 0);
}

static void never_fail_allocators(void **state)
{
    (void)state;
    char *s = fhir_xstrndup("abcdef", 3);
    assert_string_equal(s, "abc");
    free(s);
    int *v = fhir_xcalloc(4, sizeof *v);
    assert_int_equal(v[0] | v[1] | v[2] | v[3], 0);
    v = fhir_xreallocarray(v, 1000, sizeof *v);
    v[999] = 7;
    assert_int_equal(v[999], 7);
    free(v);
    assert_null(fhir_xstrdup(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(below_reserve_minimum_nothing_advised),
        cmocka_unit_test(heap_on_huge_pages),
        cmocka_unit_test(never_fail_allocators),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
