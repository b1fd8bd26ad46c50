/* replay — runs a harness's LLVMFuzzerTestOneInput over files and folders given on the command
 * line (a seed corpus, or a crash file), one call per file, in name order. The test suite uses
 * it so the corpus replays under the sanitizer build without libFuzzer (see fuzz.h).
 * Exit status: 0 all inputs ran (at least one), 1 an input could not be read or none found. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fhir_alloc.h"
#include "fuzz.h"

static int run_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: %s: cannot open\n", path);
        return -1;
    }
    unsigned char *buf = fhir_xmalloc(FUZZ_MAX_INPUT);
    size_t len = fread(buf, 1, FUZZ_MAX_INPUT, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        fprintf(stderr, "replay: %s: read error\n", path);
        return -1;
    }
    /* an exact-size copy, so ASan catches a read one byte past the input */
    unsigned char *in = fhir_xmalloc(len ? len : 1);
    memcpy(in, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(in, len);
    free(in);
    (*n)++;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_path(const char *path, size_t *n)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "replay: %s: not found\n", path);
        return -1;
    }
    if (!S_ISDIR(sb.st_mode))
        return run_file(path, n);
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "replay: %s: cannot open folder\n", path);
        return -1;
    }
    char **names = NULL;
    size_t nn = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        names = fhir_xreallocarray(names, nn + 1, sizeof *names);
        names[nn++] = fhir_xstrdup(e->d_name);
    }
    closedir(d);
    qsort(names, nn, sizeof *names, cmp_names);
    int rc = 0;
    for (size_t i = 0; i < nn; i++) {
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", path, names[i]);
        if (rc == 0 && run_path(full, n))
            rc = -1;
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    size_t n = 0;
    for (int i = 1; i < argc; i++)
        if (run_path(argv[i], &n))
            return 1;
    if (n == 0) {
        fprintf(stderr, "replay: no input found\n");
        return 1;
    }
    printf("replay: %zu input(s) ran\n", n);
    return 0;
}
