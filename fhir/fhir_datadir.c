/* fhir_datadir — the data folder: environment, source tree (development), installed prefix. */
#include "fhir_datadir.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef CARTGATE_INSTALL_DATADIR
#define CARTGATE_INSTALL_DATADIR "/usr/local/share/cartgate"
#endif
#ifndef CARTGATE_INSTALL_DATADIR_REL
#define CARTGATE_INSTALL_DATADIR_REL "share/cartgate"
#endif
#ifndef CARTGATE_INSTALL_BINDIR_REL
#define CARTGATE_INSTALL_BINDIR_REL "bin"
#endif

/* Each item: its name in the installed layout and its place in the source tree. */
static const struct {
    const char *name, *source;
} ITEMS[] = {
    {"criteria", "conf/criteria"},
    {"mappings", "mappings"},
    {"centers.json", "conf/centers.json"},
    {"README-centers.md", "conf/README-centers.md"},
    {"cartgate.conf", "conf/cartgate.conf"},
};
#define N_ITEMS (sizeof ITEMS / sizeof ITEMS[0])

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char dir[FHIR_DATADIR_PATH_MAX];
static char why[FHIR_DATADIR_PATH_MAX + 64];
static char paths[N_ITEMS][FHIR_DATADIR_PATH_MAX];
static fhir_datadir_origin origin_of;

/* snprintf that empties out and returns -1 when the text does not fit. */
__attribute__((format(printf, 3, 4))) static int put(char *out, size_t cap, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int k = vsnprintf(out, cap, f, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= cap) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Removes the last n components of p in place ("/usr/bin", 1 -> "/usr"; "/bin", 1 -> "/"). */
static void up(char *p, int n)
{
    while (n-- > 0) {
        char *s = strrchr(p, '/');
        if (!s)
            return;
        if (s == p)
            s[1] = '\0';
        else
            *s = '\0';
    }
}

#ifdef CARTGATE_BUILD_TREE_DIR
/* True when the folder exe_dir is the build tree or inside it. */
static int in_build_tree(const char *exe_dir)
{
    char build[PATH_MAX];
    if (!realpath(CARTGATE_BUILD_TREE_DIR, build))
        return 0;
    size_t n = strlen(build);
    return !strncmp(exe_dir, build, n) && (exe_dir[n] == '\0' || exe_dir[n] == '/');
}
#endif

static void init(void)
{
    int source = 0;
    const char *env = getenv("CARTGATE_DATA_DIR");
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        up(exe, 1);
    } else {
        exe[0] = '\0';
    }
    if (env && *env) {
        put(dir, sizeof dir, "%s", env);
        put(why, sizeof why, "$CARTGATE_DATA_DIR");
        origin_of = FHIR_DATADIR_ENV;
#ifdef CARTGATE_SOURCE_TREE_DIR
    } else if (exe[0] && in_build_tree(exe)) {
        put(dir, sizeof dir, "%s", CARTGATE_SOURCE_TREE_DIR);
        put(why, sizeof why, "source tree: running from the build tree %s", exe);
        origin_of = FHIR_DATADIR_SOURCE;
        source = 1;
#endif
    } else {
        char prefix[PATH_MAX] = "";
        if (exe[0]) {
            int levels = 1;
            for (const char *c = CARTGATE_INSTALL_BINDIR_REL; *c; c++)
                levels += *c == '/';
            put(prefix, sizeof prefix, "%s", exe);
            up(prefix, levels);
            put(dir, sizeof dir, "%s%s%s", prefix, strcmp(prefix, "/") ? "/" : "",
                     CARTGATE_INSTALL_DATADIR_REL);
        }
        if (prefix[0] && (is_dir(dir) || !is_dir(CARTGATE_INSTALL_DATADIR))) {
            put(why, sizeof why, "installed prefix %s", prefix);
            origin_of = FHIR_DATADIR_PREFIX;
        } else {
            put(dir, sizeof dir, "%s", CARTGATE_INSTALL_DATADIR);
            put(why, sizeof why, "compiled-in install folder");
            origin_of = FHIR_DATADIR_COMPILED;
        }
    }
    /* a path too long is left empty: not found rather than a wrong file */
    for (size_t i = 0; i < N_ITEMS; i++)
        if (!dir[0] || put(paths[i], sizeof paths[i], "%s/%s", dir,
                           source ? ITEMS[i].source : ITEMS[i].name))
            paths[i][0] = '\0';
}

const char *fhir_datadir(fhir_datadir_origin *origin)
{
    pthread_once(&once, init);
    if (origin)
        *origin = origin_of;
    return dir;
}

const char *fhir_datadir_path(const char *name)
{
    pthread_once(&once, init);
    for (size_t i = 0; i < N_ITEMS; i++)
        if (!strcmp(name, ITEMS[i].name))
            return paths[i];
    return NULL;
}

const char *fhir_datadir_why(void)
{
    pthread_once(&once, init);
    return why;
}
