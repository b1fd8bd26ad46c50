/* bench_client — fhir_client reads against the reference FHIR server on loopback.
 *
 *   bench_client [--source DIR] [--reads N] [--runs R] [--conc N (default 16)]
 *
 * Starts `node tests/fhir-server/server.mjs --port 0` seeded with 100 Patients, then per
 * run measures N reads of Patient/{id} in three modes:
 *   easy   baseline: one blocking curl_easy handle reused (keep-alive), sequential
 *   seq    fhir_client, one request in flight (synchronous wrapper)
 *   conc16 fhir_client, 16 requests in flight on one event loop
 * and reports the median over R runs (>= 5) of requests/s, the client's CPU time per
 * request (getrusage) and the server's CPU time per request (/proc/<pid>/stat), plus the
 * ratios client/server CPU and conc16/seq throughput. */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "fhir_client.h"
#include "fhir_log.h"

#define MAX_RUNS 50

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_self_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime of pid from /proc/<pid>/stat, in seconds */
static double cpu_pid_s(pid_t pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* comm may hold spaces */
    if (!p)
        return 0;
    unsigned long ut = 0, st = 0;
    /* fields after ")": state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static pid_t server_pid;
static char tmpdir[] = "/tmp/cartgate-bench-XXXXXX";
static int tmpdir_made;

static void stop_server(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
        server_pid = 0;
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (tmpdir_made)
        if (system(cmd) != 0)
            fprintf(stderr, "bench_client: could not remove %s\n", tmpdir);
}

static int start_server(const char *src)
{
    if (!mkdtemp(tmpdir))
        return -1;
    tmpdir_made = 1;
    atexit(stop_server);
    char seed[256], out[256], script[1024];
    snprintf(seed, sizeof seed, "%s/seed.ndjson", tmpdir);
    snprintf(out, sizeof out, "%s/port", tmpdir);
    snprintf(script, sizeof script, "%s/tests/fhir-server/server.mjs", src);
    FILE *f = fopen(seed, "w");
    if (!f)
        return -1;
    for (int i = 0; i < 100; i++)
        fprintf(f, "{\"resourceType\":\"Patient\",\"id\":\"b-%03d\",\"active\":true,"
                   "\"name\":[{\"family\":\"Bench\",\"given\":[\"P%d\"]}],"
                   "\"gender\":\"unknown\",\"birthDate\":\"1960-01-01\"}\n", i, i);
    fclose(f);
    int of = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(of, 1);
        int dn = open("/dev/null", O_WRONLY);
        dup2(dn, 2);
        /* the Node.js scripts/bootstrap installed for the server, when it did */
        char path[4096];
        snprintf(path, sizeof path, "%s/tests/fhir-server/runtime/bin:%s", src,
                 getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
        setenv("PATH", path, 1);
        execlp("node", "node", script, "--port", "0", "--seed", seed, (char *)NULL);
        _exit(127);
    }
    close(of);
    server_pid = pid;
    for (int i = 0; i < 600; i++) {
        f = fopen(out, "r");
        int port = 0;
        if (f) {
            char line[32];
            if (fgets(line, sizeof line, f) && strchr(line, '\n'))
                port = atoi(line);
            fclose(f);
        }
        if (port > 0) {
            /* wait for /healthz */
            char url[128];
            snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", port);
            for (int k = 0; k < 600; k++) {
                CURL *e = curl_easy_init();
                curl_easy_setopt(e, CURLOPT_URL, url);
                curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
                long code = 0;
                if (curl_easy_perform(e) == CURLE_OK)
                    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
                curl_easy_cleanup(e);
                if (code == 200)
                    return port;
                usleep(100000);
            }
            return -1;
        }
        usleep(100000);
    }
    return -1;
}

typedef struct sample {
    double rps, client_us, server_us;
} sample;

static size_t sink(char *d, size_t s, size_t n, void *ud)
{
    (void)d;
    (void)ud;
    return s * n;
}

static int run_easy(const char *base, int n, sample *out)
{
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/fhir+json");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
    char url[256];
    double c0 = cpu_self_s(), s0 = cpu_pid_s(server_pid), t0 = now_s();
    int fails = 0;
    for (int i = 0; i < n; i++) {
        snprintf(url, sizeof url, "%s/Patient/b-%03d", base, i % 100);
        curl_easy_setopt(e, CURLOPT_URL, url);
        long code = 0;
        if (curl_easy_perform(e) != CURLE_OK ||
            (curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code), code != 200))
            fails++;
    }
    double t = now_s() - t0, c = cpu_self_s() - c0, s = cpu_pid_s(server_pid) - s0;
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    out->rps = n / t;
    out->client_us = c / n * 1e6;
    out->server_us = s / n * 1e6;
    return fails;
}

static int run_seq(fhir_client *c, int n, sample *out)
{
    char path[64];
    int fails = 0;
    double c0 = cpu_self_s(), s0 = cpu_pid_s(server_pid), t0 = now_s();
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "Patient/b-%03d", i % 100);
        fhir_client_request req = {.path = path};
        fhir_client_result *r = fhir_client_send_sync(c, &req);
        if (r->err.msg[0] || !r->body)
            fails++;
        fhir_client_result_free(r);
    }
    double t = now_s() - t0, cp = cpu_self_s() - c0, s = cpu_pid_s(server_pid) - s0;
    out->rps = n / t;
    out->client_us = cp / n * 1e6;
    out->server_us = s / n * 1e6;
    return fails;
}

typedef struct conc_state {
    int done, fails;
} conc_state;

static void conc_done(void *ud, fhir_client_result *r)
{
    conc_state *st = ud;
    st->done++;
    if (r->err.msg[0] || !r->body)
        st->fails++;
    fhir_client_result_free(r);
}

static int run_conc(fhir_client *c, int n, sample *out)
{
    conc_state st = {0};
    double c0 = cpu_self_s(), s0 = cpu_pid_s(server_pid), t0 = now_s();
    char id[16];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof id, "b-%03d", i % 100);
        fhir_error err = {{0}, 0};
        if (fhir_client_read(c, "Patient", id, conc_done, &st, &err) < 0)
            st.fails++, st.done++;
    }
    while (st.done < n)
        event_base_loop(fhir_client_base(c), EVLOOP_ONCE);
    double t = now_s() - t0, cp = cpu_self_s() - c0, s = cpu_pid_s(server_pid) - s0;
    out->rps = n / t;
    out->client_us = cp / n * 1e6;
    out->server_us = s / n * 1e6;
    return st.fails;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static sample med(sample *s, int runs)
{
    double a[MAX_RUNS], b[MAX_RUNS], c[MAX_RUNS];
    for (int i = 0; i < runs; i++) {
        a[i] = s[i].rps;
        b[i] = s[i].client_us;
        c[i] = s[i].server_us;
    }
    sample m = {median(a, runs), median(b, runs), median(c, runs)};
    return m;
}

int main(int argc, char **argv)
{
    const char *src = getenv("CARTGATE_SOURCE_DIR");
    int reads = 2000, runs = 5, conc = 16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--source") && i + 1 < argc)
            src = argv[++i];
        else if (!strcmp(argv[i], "--reads") && i + 1 < argc)
            reads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--conc") && i + 1 < argc)
            conc = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_client [--source DIR] [--reads N] [--runs R>=5] [--conc N]\n");
            return 2;
        }
    }
    if (!src)
        src = CARTGATE_SOURCE_DIR;
    if (reads < 100 || runs < 5 || runs > MAX_RUNS) {
        fprintf(stderr, "bench_client: need --reads >= 100 and 5 <= --runs <= %d\n", MAX_RUNS);
        return 2;
    }
    fhir_log_set_level(FHIR_LOG_ERROR);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int port = start_server(src);
    if (port < 0) {
        fprintf(stderr, "bench_client: reference server did not start (npm ci in "
                        "tests/fhir-server?)\n");
        return 1;
    }
    char base[128];
    snprintf(base, sizeof base, "http://127.0.0.1:%d/fhir", port);

    fhir_error err = {{0}, 0};
    fhir_client_config seq_cfg = {.name = "bench", .base_url = base, .max_concurrent = 1};
    fhir_client_config conc_cfg = {.name = "bench", .base_url = base,
                                   .max_concurrent = (unsigned)(conc > 0 ? conc : 16)};
    fhir_client *cs = fhir_client_new(NULL, &seq_cfg, &err);
    fhir_client *cc = cs ? fhir_client_new(NULL, &conc_cfg, &err) : NULL;
    if (!cs || !cc) {
        fprintf(stderr, "bench_client: %s\n", err.msg);
        return 1;
    }
    /* warm-up: JIT of the server, connections */
    sample warm;
    run_easy(base, 300, &warm);
    run_seq(cs, 300, &warm);
    run_conc(cc, 300, &warm);

    sample se[MAX_RUNS], ss[MAX_RUNS], sc[MAX_RUNS];
    int fails = 0;
    for (int r = 0; r < runs; r++) {
        fails += run_easy(base, reads, &se[r]);
        fails += run_seq(cs, reads, &ss[r]);
        fails += run_conc(cc, reads, &sc[r]);
    }
    sample me = med(se, runs), ms = med(ss, runs), mc = med(sc, runs);
    printf("bench_client: %d reads x %d runs (median), loopback reference server (node)\n",
           reads, runs);
    printf("%-28s %10s %14s %14s %12s\n", "mode", "req/s", "client us/req", "server us/req",
           "client/server");
    char conc_name[40];
    snprintf(conc_name, sizeof conc_name, "fhir_client %d in flight", conc);
    const char *names[] = {"curl_easy sequential (base)", "fhir_client sequential", conc_name};
    sample *ms3[] = {&me, &ms, &mc};
    for (int i = 0; i < 3; i++)
        printf("%-28s %10.0f %14.1f %14.1f %12.3f\n", names[i], ms3[i]->rps, ms3[i]->client_us,
               ms3[i]->server_us, ms3[i]->server_us > 0 ? ms3[i]->client_us / ms3[i]->server_us : 0);
    printf("ratios: seq fhir_client/curl_easy client CPU = %.2f; concurrent/seq throughput = %.2f\n",
           me.client_us > 0 ? ms.client_us / me.client_us : 0, ms.rps > 0 ? mc.rps / ms.rps : 0);
    printf("failed requests: %d\n", fails);
    fhir_client_free(cs);
    fhir_client_free(cc);
    curl_global_cleanup();
    return fails ? 1 : 0;
}
