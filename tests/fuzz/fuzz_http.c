/* fuzz_http — the request side of the one listener (gateway/serve): the input is written as is
 * to a TCP connection on 127.0.0.1 to a real listener on this process's event loop (libevent's
 * HTTP parser, then serve's own reading of the request: route and {param} matching, percent
 * decoding, query and form fields, cookies, the Authorization header, Origin and CSRF checks,
 * the body, JSON errors) with a few routes of every role and the sign-in routes; the client
 * then half-closes and reads the answer until the listener closes. The listener, its store (a
 * temporary folder) and the shared token "fuzz-token" (seeds use it to reach the handlers
 * behind a role) live for the whole run. A run is bounded: FUZZ_HTTP_MAX_INPUT bytes, at most
 * FUZZ_HTTP_MAX_TURNS turns of the loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "access.h"
#include "fhir_buf.h"
#include "fuzz.h"
#include "serve.h"
#include "serve_auth.h"
#include "store.h"

#define FUZZ_HTTP_MAX_INPUT (64u << 10) /* bytes written per connection */
#define FUZZ_HTTP_MAX_TURNS 4000        /* loop turns per input (each waits at most 1 ms) */

static struct event_base *base;
static serve *srv;
static int port;

static void h_public(serve_req *r, void *ud)
{
    (void)ud;
    serve_reply(r, 200, "text/plain", "ok\n", 3);
}

/* reads everything a handler may read from the request and echoes its size */
static void h_read(serve_req *r, void *ud)
{
    (void)ud;
    fhir_buf b;
    fhir_buf_init(&b, 1u << 16);
    const char *id = serve_param(r, "id");
    const char *q = serve_query(r, "q");
    const char *f = serve_form(r, "reason");
    size_t blen = 0;
    (void)serve_body(r, &blen);
    const char *c = serve_cookie(r, "cg_session");
    fhir_buf_printf(&b, "{\"id\":%zu,\"q\":%zu,\"form\":%zu,\"body\":%zu,\"cookie\":%d,\"route\":%zu}",
                    id ? strlen(id) : 0, q ? strlen(q) : 0, f ? strlen(f) : 0, blen, c != NULL,
                    strlen(serve_route_name(r)));
    serve_json(r, 200, &b);
    fhir_buf_free(&b);
}

static const serve_route ROUTES[] = {
    {"GET", "/f/public", ROLE_PUBLIC, h_public, 0},
    {"GET", "/f/items/{id}", ROLE_VIEWER, h_read, 0},
    {"GET", "/f/page/{id}", ROLE_VIEWER, h_read, SERVE_HTML},
    {"POST", "/f/items/{id}/act", ROLE_CLINICIAN, h_read, 0},
    {"PUT", "/f/files/*", ROLE_ADMIN, h_read, 0},
};

static void setup(void)
{
    char dir[] = "/tmp/cg-fuzz-http.XXXXXX";
    if (!mkdtemp(dir))
        abort();
    char path[300];
    snprintf(path, sizeof path, "%s/f.db", dir);
    fhir_error err = {0};
    store *st = store_open(path, 0, &err);
    if (!st) {
        fprintf(stderr, "fuzz_http: store: %s\n", err.msg);
        abort();
    }
    access_config ac = {.kdf = {.ln = 10, .r = 8, .p = 1}};
    access_ctx *acc = access_new(st, &ac);
    access_set_shared_token(acc, "fuzz-token");
    base = event_base_new();
    serve_config c = {.bind = "127.0.0.1", .max_body_bytes = 65536, .max_connections = 64};
    srv = serve_new(base, acc, &c, &err);
    if (!srv || serve_add_routes(srv, ROUTES, sizeof ROUTES / sizeof ROUTES[0], NULL, &err) ||
        serve_auth_add(srv, NULL, NULL, &err) || serve_start(srv, &err)) {
        fprintf(stderr, "fuzz_http: listener: %s\n", err.msg);
        abort();
    }
    port = serve_port(srv);
    /* the listener, access and store live until the process ends (libFuzzer never returns) */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_HTTP_MAX_INPUT)
        return 0;
    if (!srv)
        setup();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        abort();
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        abort(); /* the kernel accepts into the backlog without the loop */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    size_t sent = 0;
    bool eof = false, shut = false;
    char buf[4096];
    for (int turn = 0; turn < FUZZ_HTTP_MAX_TURNS && !eof; turn++) {
        if (sent < size) {
            ssize_t k = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (k > 0)
                sent += (size_t)k;
            else if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                sent = size; /* the listener closed on us */
        }
        if (sent >= size && !shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 1) > 0) {
            ssize_t k = recv(fd, buf, sizeof buf, 0);
            if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
                eof = true;
        }
    }
    close(fd);
    for (int i = 0; i < 8; i++) /* the listener sees the close and lets the connection go */
        event_base_loop(base, EVLOOP_NONBLOCK);
    return 0;
}
