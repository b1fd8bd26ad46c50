/* support — process and HTTP helpers for the C integration tests (see support.h). */
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#ifndef CARTGATE_SOURCE_DIR
#define CARTGATE_SOURCE_DIR "."
#endif

const char *support_source_dir(void)
{
    const char *s = getenv("CARTGATE_SOURCE_DIR");
    return s && *s ? s : CARTGATE_SOURCE_DIR;
}

bool support_server_available(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fhir-server/node_modules/@medplum/fhir-router",
             support_source_dir());
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int support_start_port(support_proc *p, char *const argv[], const char *log_path)
{
    memset(p, 0, sizeof *p);
    snprintf(p->log_path, sizeof p->log_path, "%s", log_path ? log_path : "/dev/null");
    /* stdout goes to a file next to the log (a pipe closed early would make a later
     * stdout write fail in the child) */
    char out_path[600];
    if (log_path)
        snprintf(out_path, sizeof out_path, "%s.stdout", log_path);
    else
        snprintf(out_path, sizeof out_path, "/tmp/cartgate-support-%d.stdout", (int)getpid());
    int of = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (of < 0)
        return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(of);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        int lf = open(p->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (lf >= 0) {
            dup2(lf, 2);
            close(lf);
        }
        dup2(of, 1);
        close(of);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(of);
    p->pid = pid;
    char line[64] = "";
    int64_t deadline = now_ms() + 30000;
    while (now_ms() < deadline) {
        FILE *f = fopen(out_path, "r");
        bool got = false;
        if (f) {
            got = fgets(line, sizeof line, f) && strchr(line, '\n');
            fclose(f);
        }
        if (got)
            break;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            p->pid = 0;
            break;
        }
        usleep(50 * 1000);
    }
    if (!log_path)
        unlink(out_path);
    p->port = atoi(line);
    if (p->port <= 0 || p->port > 65535) {
        fprintf(stderr, "support: child did not print a port (got '%s'); see %s\n", line,
                p->log_path);
        support_stop(p);
        return -1;
    }
    return 0;
}

static size_t sink(char *d, size_t s, size_t n, void *ud)
{
    (void)d;
    (void)ud;
    return s * n;
}

int support_wait_healthz(const char *scheme, int port, const char *ca_file, int timeout_ms)
{
    char url[128];
    snprintf(url, sizeof url, "%s://127.0.0.1:%d/healthz", scheme, port);
    int64_t deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        CURL *e = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 2000L);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        if (ca_file)
            curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
        else
            curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        long code = 0;
        if (curl_easy_perform(e) == CURLE_OK)
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(e);
        if (code == 200)
            return 0;
        usleep(100 * 1000);
    }
    return -1;
}

static int server_start(support_proc *p, const char *const *args, const char *log_path,
                        const char *scheme, const char *ca_file)
{
    char script[1024];
    snprintf(script, sizeof script, "%s/tests/fhir-server/server.mjs", support_source_dir());
    const char *argv[64];
    size_t n = 0;
    argv[n++] = "node";
    argv[n++] = script;
    argv[n++] = "--port";
    argv[n++] = "0";
    for (size_t i = 0; args && args[i] && n < 63; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    if (support_start_port(p, (char *const *)argv, log_path) < 0)
        return -1;
    if (support_wait_healthz(scheme, p->port, ca_file, 60000) < 0) {
        fprintf(stderr, "support: server on port %d not healthy; see %s\n", p->port, p->log_path);
        support_stop(p);
        return -1;
    }
    return 0;
}

int support_server_start(support_proc *p, const char *const *args, const char *log_path)
{
    return server_start(p, args, log_path, "http", NULL);
}

int support_server_start_tls(support_proc *p, const char *const *args, const char *log_path,
                             const char *ca_file)
{
    return server_start(p, args, log_path, "https", ca_file);
}

void support_stop(support_proc *p)
{
    if (!p || p->pid <= 0)
        return;
    kill(p->pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
            p->pid = 0;
            return;
        }
        usleep(50 * 1000);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

typedef struct membuf {
    char *data;
    size_t len;
} membuf;

static size_t collect(char *d, size_t s, size_t n, void *ud)
{
    membuf *m = ud;
    size_t k = s * n;
    char *nd = realloc(m->data, m->len + k + 1);
    if (!nd)
        return 0;
    m->data = nd;
    memcpy(m->data + m->len, d, k);
    m->len += k;
    m->data[m->len] = '\0';
    return k;
}

long support_http(const char *method, const char *url, const char *body, char **out)
{
    CURL *e = curl_easy_init();
    membuf m = {0};
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &m);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    long code = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    if (out)
        *out = m.data ? m.data : strdup("");
    else
        free(m.data);
    return code;
}

static char *slurp_fd(int fd, membuf *m, bool *eof)
{
    char buf[65536];
    ssize_t k = read(fd, buf, sizeof buf);
    if (k <= 0) {
        *eof = true;
        return m->data;
    }
    collect(buf, 1, (size_t)k, m);
    return m->data;
}

int support_run(char *const argv[], char **out, char **err, int timeout_s)
{
    int po[2], pe[2];
    if (pipe(po) < 0)
        return -1;
    if (pipe(pe) < 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    membuf mo = {0}, me = {0};
    bool eo = false, ee = false;
    int64_t deadline = now_ms() + (int64_t)timeout_s * 1000;
    bool killed = false;
    while (!eo || !ee) {
        int left = (int)(deadline - now_ms());
        if (left <= 0) {
            kill(pid, SIGKILL);
            killed = true;
            break;
        }
        struct pollfd pfd[2] = {{.fd = eo ? -1 : po[0], .events = POLLIN},
                                {.fd = ee ? -1 : pe[0], .events = POLLIN}};
        if (poll(pfd, 2, left) < 0 && errno != EINTR)
            break;
        if (!eo && (pfd[0].revents & (POLLIN | POLLHUP)))
            slurp_fd(po[0], &mo, &eo);
        if (!ee && (pfd[1].revents & (POLLIN | POLLHUP)))
            slurp_fd(pe[0], &me, &ee);
    }
    close(po[0]);
    close(pe[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (out)
        *out = mo.data ? mo.data : strdup("");
    else
        free(mo.data);
    if (err)
        *err = me.data ? me.data : strdup("");
    else
        free(me.data);
    if (killed || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

int support_tmpdir(char *buf, size_t n)
{
    const char *t = getenv("TMPDIR");
    snprintf(buf, n, "%s/cartgate-it-XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(buf) ? 0 : -1;
}

void support_rmtree(const char *dir)
{
    if (!dir || !*dir || strncmp(dir, "/tmp/", 5) != 0 || strstr(dir, ".."))
        return; /* only our own temporary directories */
    char *argv[] = {"rm", "-rf", (char *)dir, NULL};
    support_run(argv, NULL, NULL, 60);
}

char *support_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    membuf m = {0};
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        if (collect(buf, 1, n, &m) != n)
            break;
    fclose(f);
    return m.data ? m.data : strdup("");
}

int support_write_file(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    size_t n = strlen(s);
    int rc = fwrite(s, 1, n, f) == n ? 0 : -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}
