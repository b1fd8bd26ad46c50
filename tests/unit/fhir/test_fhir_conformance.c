/* Conformance on public data (skipped when $CARTGATE_SHARED_DATA is absent):
 * every official R4 JSON example parses and round-trips (compact and pretty) to an equal
 * tree; every Synthea Bundle parses and round-trips, and its references resolve; every
 * line of the bulk NDJSON parses. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "fhir_json.h"
#include "fhir_ndjson.h"
#include "fhir_ref.h"

static const char *data_dir(const char *sub, char *out, size_t n)
{
    const char *base = getenv("CARTGATE_SHARED_DATA");
    if (!base)
        base = "../shared/data";
    snprintf(out, n, "%s/%s", base, sub);
    struct stat st;
    return stat(out, &st) == 0 && S_ISDIR(st.st_mode) ? out : NULL;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted list of files in dir ending with ext (caller frees each and the array). */
static char **list(const char *dir, const char *ext, size_t *n)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    char **v = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name), el = strlen(ext);
        if (l <= el || strcmp(e->d_name + l - el, ext))
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 64;
            v = realloc(v, cap * sizeof *v);
        }
        v[cnt] = malloc(strlen(dir) + l + 2);
        sprintf(v[cnt++], "%s/%s", dir, e->d_name);
    }
    closedir(d);
    qsort(v, cnt, sizeof *v, cmp);
    *n = cnt;
    return v;
}

static int round_trips(fhir_arena *a, const fhir_node *x, const char *path)
{
    for (int flags = 0; flags < 2; flags++) {
        char *out = fhir_json_to_string(x, flags, 0);
        fhir_error err = {0};
        fhir_node *y = fhir_json_parse(a, out, strlen(out), NULL, &err);
        free(out);
        if (!y || !fhir_node_equal(x, y, false)) {
            print_error("%s: round trip (%s) failed: %s\n", path, flags ? "pretty" : "compact", err.msg);
            return 0;
        }
    }
    return 1;
}

static void test_r4_examples(void **state)
{
    (void)state;
    char dir[1024];
    if (!data_dir("fhir-r4-examples/json", dir, sizeof dir))
        skip();
    size_t n, ok = 0;
    char **files = list(dir, ".json", &n);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) {
        fhir_arena *a = fhir_arena_new(0);
        fhir_error err = {0};
        fhir_node *x = fhir_json_parse_file(a, files[i], NULL, &err);
        if (!x)
            print_error("%s\n", err.msg);
        else if (fhir_node_resource_type(x) && round_trips(a, x, files[i]))
            ok++;
        fhir_arena_free(a);
        free(files[i]);
    }
    free(files);
    print_message("R4 JSON examples: %zu/%zu parse and round-trip\n", ok, n);
    assert_int_equal(ok, n);
}

static void test_synthea_bundles(void **state)
{
    (void)state;
    char dir[1024];
    if (!data_dir("synthea-r4-patient-bundles", dir, sizeof dir))
        skip();
    size_t n, ok = 0, refs = 0, resolved = 0;
    char **files = list(dir, ".json", &n);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) {
        fhir_arena *a = fhir_arena_new(0);
        fhir_error err = {0};
        fhir_node *b = fhir_json_parse_file(a, files[i], NULL, &err);
        if (!b) {
            print_error("%s\n", err.msg);
        } else if (round_trips(a, b, files[i])) {
            ok++;
            /* every urn:uuid subject/patient reference must resolve inside the Bundle */
            fhir_ref_index *idx = fhir_ref_index_build(a, b);
            for (const fhir_node *e = fhir_node_first(fhir_node_get(b, "entry")); e; e = e->next) {
                const fhir_node *res = fhir_node_get(e, "resource");
                const char *ref = fhir_node_path_str(res, "subject.reference");
                if (!ref)
                    ref = fhir_node_path_str(res, "patient.reference");
                if (ref && !strncmp(ref, "urn:uuid:", 9)) {
                    refs++;
                    const fhir_node *p = fhir_ref_resolve(idx, ref);
                    if (p && !strcmp(fhir_node_resource_type(p), "Patient"))
                        resolved++;
                }
            }
        }
        fhir_arena_free(a);
        free(files[i]);
    }
    free(files);
    print_message("Synthea bundles: %zu/%zu parse and round-trip; %zu/%zu patient references resolve\n",
                  ok, n, resolved, refs);
    assert_int_equal(ok, n);
    assert_true(refs > 1000);
    assert_int_equal(resolved, refs);
}

static int count_cb(void *ud, const fhir_node *res, size_t line, fhir_error *err)
{
    (void)line;
    if (fhir_node_resource_type(res) || fhir_node_count(res) > 0)
        (*(size_t *)ud)++;
    return 0;
}

static void test_bulk_ndjson(void **state)
{
    (void)state;
    const char *subs[] = {"bulk-ndjson-synthea/10-patients", "bulk-ndjson-synthea/100-patients-partial"};
    size_t total = 0, files_seen = 0;
    for (size_t s = 0; s < 2; s++) {
        char dir[1024];
        if (!data_dir(subs[s], dir, sizeof dir))
            continue;
        size_t n;
        char **files = list(dir, ".ndjson", &n);
        for (size_t i = 0; i < n; i++) {
            size_t count = 0;
            fhir_ndjson *r = fhir_ndjson_new(NULL, count_cb, NULL, &count);
            fhir_error err = {0};
            if (fhir_ndjson_read_path(r, files[i], &err) != 0)
                fail_msg("%s", err.msg);
            assert_int_equal(fhir_ndjson_stats_get(r)->bad, 0);
            assert_int_equal(count, fhir_ndjson_stats_get(r)->ok);
            total += count;
            files_seen++;
            fhir_ndjson_free(r);
            free(files[i]);
        }
        free(files);
    }
    if (!files_seen)
        skip();
    print_message("bulk NDJSON: %zu lines parsed in %zu files\n", total, files_seen);
    assert_true(total > 7000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_r4_examples),
        cmocka_unit_test(test_synthea_bundles),
        cmocka_unit_test(test_bulk_ndjson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
