/* Unit tests: the data folder (fhir_datadir). This test binary runs from the build tree, so
 * without $CARTGATE_DATA_DIR it must get the source tree's layout; with it, the installed
 * layout under that folder. The choice is made once per process: each case runs in a child. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "fhir_datadir.h"

/* Runs fn in a child with CARTGATE_DATA_DIR = env (NULL = unset); returns its exit status. */
static int in_child(const char *env, int (*fn)(void))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (env)
            setenv("CARTGATE_DATA_DIR", env, 1);
        else
            unsetenv("CARTGATE_DATA_DIR");
        _exit(fn());
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

static int expect(const char *item, const char *want)
{
    const char *p = fhir_datadir_path(item);
    if (!p || strcmp(p, want)) {
        fprintf(stderr, "%s: got %s, want %s\n", item, p ? p : "(null)", want);
        return 1;
    }
    return 0;
}

static int source_layout(void)
{
    fhir_datadir_origin o;
    const char *d = fhir_datadir(&o);
    if (o != FHIR_DATADIR_SOURCE || strcmp(d, CARTGATE_SOURCE_DIR) ||
        !strstr(fhir_datadir_why(), "build tree"))
        return 1;
    return expect("criteria", CARTGATE_SOURCE_DIR "/conf/criteria") * 2 +
           expect("mappings", CARTGATE_SOURCE_DIR "/mappings") * 4 +
           expect("centers.json", CARTGATE_SOURCE_DIR "/conf/centers.json") * 8 +
           (fhir_datadir_path("nothing") != NULL) * 16;
}

static int env_layout(void)
{
    fhir_datadir_origin o;
    const char *d = fhir_datadir(&o);
    if (o != FHIR_DATADIR_ENV || strcmp(d, "/opt/cg/share") ||
        strcmp(fhir_datadir_why(), "$CARTGATE_DATA_DIR"))
        return 1;
    return expect("criteria", "/opt/cg/share/criteria") * 2 +
           expect("mappings", "/opt/cg/share/mappings") * 4 +
           expect("centers.json", "/opt/cg/share/centers.json") * 8 +
           expect("cartgate.conf", "/opt/cg/share/cartgate.conf") * 16;
}

static int empty_env_is_unset(void)
{
    fhir_datadir_origin o;
    fhir_datadir(&o);
    return o != FHIR_DATADIR_SOURCE;
}

static void test_source_tree_from_build_tree(void **state)
{
    (void)state;
    assert_int_equal(in_child(NULL, source_layout), 0);
}

static void test_env_installed_layout(void **state)
{
    (void)state;
    assert_int_equal(in_child("/opt/cg/share", env_layout), 0);
    assert_int_equal(in_child("", empty_env_is_unset), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_source_tree_from_build_tree),
        cmocka_unit_test(test_env_installed_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
