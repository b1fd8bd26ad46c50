/* Integration tests of fhir_client against the reference FHIR server (tests/fhir-server)
 * on a random loopback port: paging, retries under injected faults, Retry-After,
 * conditional create after an "after" fault, byte cap, permanent errors, SMART Backend
 * Services (RS384 and ES384, refusals, refresh, one retry after a 401), TLS verification
 * with a certificate made here, the `cartgate fhir` CLI, and complete reads: truncated paging
 * fails, searchset OperationOutcome warnings reach the caller, next links and bulk files on
 * another origin (refused naming it, followed when trusted, pre-signed files without a token).
 * Assertions use the client's recorded retry schedule and the server's counters, never
 * wall time. Skips when the server's node_modules are not installed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <event2/event.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "fhir_client.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "fhir_ndjson.h"
#include "support.h"

#define N_PATIENTS 1000

static char tmp[512];
static support_proc srv;  /* plain server, seeded with N_PATIENTS Patients */
static char base[128];
static char admin[128];
static char alt_origin[128]; /* the server's second origin (--alt-port) */

/* ---- helpers -------------------------------------------------------------------------- */

static uint64_t counter_random(void *ud)
{
    uint64_t *x = ud;
    *x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
    return *x >> 11;
}

static uint64_t rng_state = 42;

static fhir_client_config test_config(const char *url)
{
    fhir_client_config cfg = {
        .name = "test",
        .base_url = url,
        .retry = {.max_attempts = 8, .base_ms = 5, .cap_ms = 50},
        .random = counter_random,
        .random_ud = &rng_state,
        .max_concurrent = 4,
    };
    return cfg;
}

static fhir_client *client_or_fail(const fhir_client_config *cfg)
{
    fhir_error err = {0};
    fhir_client *c = fhir_client_new(NULL, cfg, &err);
    if (!c)
        fail_msg("fhir_client_new: %s", err.msg);
    return c;
}

static void set_faults(const char *json)
{
    char url[256];
    snprintf(url, sizeof url, "%s/faults", admin);
    char *out = NULL;
    long st = support_http("POST", url, json, &out);
    if (st != 200)
        fail_msg("setting faults failed (%ld): %s", st, out);
    free(out);
}

static void clear_faults(void)
{
    char url[256];
    snprintf(url, sizeof url, "%s/faults", admin);
    assert_int_equal(support_http("DELETE", url, NULL, NULL), 200);
}

/* Reads one integer from the server's /admin/stats by a dotted path. */
static long admin_stat(const char *admin_base, const char *path)
{
    char url[256];
    snprintf(url, sizeof url, "%s/stats", admin_base);
    char *out = NULL;
    assert_int_equal(support_http("GET", url, NULL, &out), 200);
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *doc = fhir_json_parse(a, out, strlen(out), NULL, &err);
    assert_non_null(doc);
    int64_t v = 0;
    const fhir_node *n = doc;
    /* path segments may contain spaces ("GET 200"), so walk by '.' only */
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *seg = strtok(buf, "."); seg && n; seg = strtok(NULL, "."))
        n = fhir_node_get(n, seg);
    if (n)
        fhir_node_int(n, &v);
    fhir_arena_free(a);
    free(out);
    return (long)v;
}

static void reset_stats(const char *admin_base)
{
    char url[256];
    snprintf(url, sizeof url, "%s/stats", admin_base);
    assert_int_equal(support_http("DELETE", url, NULL, NULL), 200);
}

typedef struct idset {
    char **ids;
    size_t n, cap;
} idset;

static int collect_ids(void *ud, const fhir_node *bundle, unsigned page_no)
{
    idset *s = ud;
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next) {
        const char *id = fhir_node_resource_id(fhir_node_get(e, "resource"));
        if (!id)
            continue;
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 256;
            s->ids = realloc(s->ids, s->cap * sizeof *s->ids);
        }
        s->ids[s->n++] = strdup(id);
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static size_t distinct(idset *s)
{
    if (!s->n)
        return 0;
    qsort(s->ids, s->n, sizeof *s->ids, cmp_str);
    size_t d = 1;
    for (size_t i = 1; i < s->n; i++)
        if (strcmp(s->ids[i], s->ids[i - 1]))
            d++;
    return d;
}

static void idset_free(idset *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->ids[i]);
    free(s->ids);
    memset(s, 0, sizeof *s);
}

static fhir_node *parse_or_fail(fhir_arena *a, const char *s)
{
    fhir_error err = {0};
    fhir_node *n = fhir_json_parse(a, s, strlen(s), NULL, &err);
    if (!n)
        fail_msg("bad JSON in test: %s", err.msg);
    return n;
}

/* ---- group setup ---------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (!support_server_available())
        return 0; /* tests skip */
    fhir_log_set_level(FHIR_LOG_WARN);
    if (support_tmpdir(tmp, sizeof tmp) < 0)
        return -1;
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/seed", tmp);
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/patients.ndjson", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    for (int i = 0; i < N_PATIENTS; i++)
        fprintf(f, "{\"resourceType\":\"Patient\",\"id\":\"pt-%04d\",\"active\":true,"
                   "\"identifier\":[{\"system\":\"urn:test:mrn\",\"value\":\"%d\"}]}\n", i, i);
    fclose(f);
    char log[600];
    snprintf(log, sizeof log, "%s/server.log", tmp);
    const char *args[] = {"--seed", dir, "--fault-seed", "7", "--alt-port", "0", NULL};
    if (support_server_start(&srv, args, log) < 0)
        return -1;
    snprintf(base, sizeof base, "http://127.0.0.1:%d/fhir", srv.port);
    snprintf(admin, sizeof admin, "http://127.0.0.1:%d/admin", srv.port);
    /* the alt port is the second line of the server's stdout */
    snprintf(path, sizeof path, "%s.stdout", log);
    f = fopen(path, "r");
    char line[64] = "";
    int alt = 0;
    if (f && fgets(line, sizeof line, f) && fgets(line, sizeof line, f))
        alt = atoi(line);
    if (f)
        fclose(f);
    if (alt <= 0)
        return -1;
    snprintf(alt_origin, sizeof alt_origin, "http://127.0.0.1:%d", alt);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    support_stop(&srv);
    if (tmp[0])
        support_rmtree(tmp);
    return 0;
}

#define NEED_SERVER()                                                                      \
    do {                                                                                   \
        if (!support_server_available())                                                   \
            skip();                                                                        \
    } while (0)

/* ---- paging --------------------------------------------------------------------------- */

static void test_paging_1000_at_37(void **state)
{
    (void)state;
    NEED_SERVER();
    clear_faults();
    fhir_client_config cfg = test_config(base);
    fhir_client *c = client_or_fail(&cfg);
    idset ids = {0};
    fhir_client_result *r = fhir_client_search_sync(c, "Patient?_count=37", collect_ids, &ids);
    if (r->err.msg[0])
        fail_msg("search: %s", r->err.msg);
    assert_int_equal(ids.n, N_PATIENTS);
    assert_int_equal(distinct(&ids), N_PATIENTS);
    assert_int_equal(r->stats.pages, (N_PATIENTS + 36) / 37); /* 28 */
    assert_int_equal(r->stats.resources, N_PATIENTS);
    assert_int_equal(r->stats.retries, 0);
    assert_int_equal(r->stats.attempts, r->stats.pages);
    fhir_client_result_free(r);
    idset_free(&ids);

    /* a page cap below the page count is an error, never a silent truncation */
    fhir_client_config capped = test_config(base);
    capped.max_pages = 3;
    fhir_client *c2 = client_or_fail(&capped);
    r = fhir_client_search_sync(c2, "Patient?_count=37", collect_ids, &ids);
    assert_non_null(strstr(r->err.msg, "page cap"));
    assert_int_equal(r->stats.pages, 3);
    assert_int_equal(ids.n, 3 * 37);
    fhir_client_result_free(r);
    idset_free(&ids);
    fhir_client_free(c2);
    fhir_client_free(c);
}

/* The next page is asked for before the current one is handed over: while the caller holds
 * page k, the server answers page k+1 (its counter, polled from inside the callback, reaches
 * k+1), never more than one page ahead; pages still arrive in order and complete. A caller
 * that stops the search drops the page asked ahead: nothing more is delivered. */
typedef struct ahead_state {
    idset ids;
    unsigned pages, seen_ahead, stop_at;
    long max_answered_over; /* most pages answered beyond the one held */
} ahead_state;

static int ahead_cb(void *ud, const fhir_node *bundle, unsigned page_no)
{
    ahead_state *st = ud;
    st->pages++;
    assert_int_equal(page_no, st->pages);
    collect_ids(&st->ids, bundle, page_no);
    long answered = 0;
    const unsigned last = (N_PATIENTS + 36) / 37;
    for (int i = 0; i < 400 && page_no < last && st->stop_at == 0; i++) { /* at most ~4 s */
        answered = admin_stat(admin, "fhir.total");
        if (answered >= (long)page_no + 1)
            break;
        usleep(10000);
    }
    if (page_no < last && st->stop_at == 0 && answered >= (long)page_no + 1)
        st->seen_ahead++;
    if (answered - (long)page_no > st->max_answered_over)
        st->max_answered_over = answered - (long)page_no;
    return st->stop_at && page_no == st->stop_at;
}

static void test_paging_asks_ahead(void **state)
{
    (void)state;
    NEED_SERVER();
    clear_faults();
    reset_stats(admin);
    fhir_client_config cfg = test_config(base);
    fhir_client *c = client_or_fail(&cfg);
    ahead_state st = {0};
    fhir_client_result *r = fhir_client_search_sync(c, "Patient?_count=37", ahead_cb, &st);
    if (r->err.msg[0])
        fail_msg("search: %s", r->err.msg);
    const unsigned last = (N_PATIENTS + 36) / 37;
    assert_int_equal(st.pages, last);
    assert_int_equal(st.seen_ahead, last - 1); /* every page but the last */
    assert_int_equal(st.max_answered_over, 1);
    assert_int_equal(st.ids.n, N_PATIENTS);
    assert_int_equal(distinct(&st.ids), N_PATIENTS);
    assert_int_equal(admin_stat(admin, "fhir.total"), last);
    fhir_client_result_free(r);
    idset_free(&st.ids);

    /* stopped at page 2: page 3, asked for ahead, is dropped and never delivered */
    reset_stats(admin);
    ahead_state st2 = {.stop_at = 2};
    r = fhir_client_search_sync(c, "Patient?_count=37", ahead_cb, &st2);
    assert_non_null(strstr(r->err.msg, "stopped by caller after page 2"));
    assert_int_equal(st2.pages, 2);
    assert_int_equal(st2.ids.n, 2 * 37);
    assert_int_equal(r->stats.pages, 2);
    fhir_client_result_free(r);
    idset_free(&st2.ids);
    /* the client goes on serving other requests after the drop */
    idset ids = {0};
    r = fhir_client_search_sync(c, "Patient?_count=500", collect_ids, &ids);
    if (r->err.msg[0])
        fail_msg("search after a stop: %s", r->err.msg);
    assert_int_equal(ids.n, N_PATIENTS);
    fhir_client_result_free(r);
    idset_free(&ids);
    fhir_client_free(c);
}

static void test_paging_under_faults(void **state)
{
    (void)state;
    NEED_SERVER();
    /* 10% answered 500 plus 10% connection resets, on GETs (seeded, reproducible) */
    set_faults("{\"seed\":11,\"rules\":[{\"mode\":\"status\",\"status\":500,\"rate\":0.1,"
               "\"methods\":\"GET\"},{\"mode\":\"reset\",\"rate\":0.1,\"methods\":\"GET\"}]}");
    reset_stats(admin);
    fhir_client_config cfg = test_config(base);
    fhir_client *c = client_or_fail(&cfg);
    idset ids = {0};
    fhir_client_result *r = fhir_client_search_sync(c, "Patient?_count=37", collect_ids, &ids);
    clear_faults();
    if (r->err.msg[0])
        fail_msg("search under faults: %s", r->err.msg);
    assert_int_equal(ids.n, N_PATIENTS);
    assert_int_equal(distinct(&ids), N_PATIENTS);
    long injected = admin_stat(admin, "faults.injected");
    assert_true(injected > 0);
    /* every injected 500 cost exactly one retry, recorded with its cause. A reset on a
     * reused keep-alive connection may be re-sent once by libcurl itself (its "connection
     * died" rule, idempotent GETs here), so client-visible network retries can be fewer
     * than the resets injected, never more. */
    unsigned s500 = 0, snet = 0;
    for (unsigned i = 0; i < r->stats.schedule_len && i < FHIR_CLIENT_SCHEDULE_MAX; i++) {
        assert_true(r->stats.schedule_ms[i] >= 0 && r->stats.schedule_ms[i] <= 50);
        if (r->stats.schedule_status[i] == 500)
            s500++;
        else if (r->stats.schedule_status[i] == 0)
            snet++;
        else
            fail_msg("unexpected retry cause %ld", r->stats.schedule_status[i]);
    }
    assert_int_equal(r->stats.schedule_len, r->stats.retries);
    assert_int_equal(r->stats.retries, s500 + snet);
    long n500 = admin_stat(admin, "faults.by_mode.status");
    long nreset = admin_stat(admin, "faults.by_mode.reset");
    assert_true(n500 > 0 && nreset > 0);
    assert_int_equal(s500, n500);
    assert_true(snet <= nreset);
    fhir_client_result_free(r);
    idset_free(&ids);
    fhir_client_free(c);
}

/* ---- Retry-After ---------------------------------------------------------------------- */

static void test_retry_after_honoured(void **state)
{
    (void)state;
    NEED_SERVER();
    set_faults("{\"rules\":[{\"mode\":\"429\",\"every\":1,\"limit\":2,\"retry_after\":1}]}");
    fhir_client_config cfg = test_config(base);
    fhir_client *c = client_or_fail(&cfg);
    fhir_client_request req = {.path = "Patient/pt-0001"};
    fhir_client_result *r = fhir_client_send_sync(c, &req);
    if (r->err.msg[0])
        fail_msg("read: %s", r->err.msg);
    assert_int_equal(r->status, 200);
    assert_string_equal(fhir_node_resource_id(r->body), "pt-0001");
    assert_int_equal(r->stats.attempts, 3);
    assert_int_equal(r->stats.schedule_len, 2);
    /* the server's Retry-After: 1 replaces the 5..50 ms backoff */
    assert_int_equal(r->stats.schedule_ms[0], 1000);
    assert_int_equal(r->stats.schedule_ms[1], 1000);
    assert_int_equal(r->stats.schedule_status[0], 429);
    fhir_client_result_free(r);

    /* HTTP-date form: a date ~2 s ahead, read against the clock */
    set_faults("{\"rules\":[{\"mode\":\"429\",\"every\":1,\"limit\":1,\"retry_after\":2,"
               "\"retry_after_date\":true}]}");
    r = fhir_client_send_sync(c, &req);
    clear_faults();
    if (r->err.msg[0])
        fail_msg("read: %s", r->err.msg);
    assert_int_equal(r->stats.schedule_len, 1);
    assert_true(r->stats.schedule_ms[0] > 50 && r->stats.schedule_ms[0] <= 2000);
    fhir_client_result_free(r);
    fhir_client_free(c);
}

/* ---- conditional create after an "after" fault ---------------------------------------- */

static void test_conditional_create_after_fault(void **state)
{
    (void)state;
    NEED_SERVER();
    /* the first POST is performed, then answered 500 */
    set_faults("{\"rules\":[{\"mode\":\"after\",\"status\":500,\"every\":1,\"limit\":1,"
               "\"methods\":\"POST\"}]}");
    fhir_client_config cfg = test_config(base);
    fhir_client *c = client_or_fail(&cfg);
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *org = parse_or_fail(a, "{\"resourceType\":\"Organization\",\"identifier\":[{"
                                      "\"system\":\"urn:test:org\",\"value\":\"after-1\"}],"
                                      "\"name\":\"After fault\"}");
    fhir_client_request req = {.method = "POST", .path = "Organization", .resource = org,
                               .if_none_exist = "identifier=urn:test:org|after-1"};
    fhir_client_result *r = fhir_client_send_sync(c, &req);
    clear_faults();
    if (r->err.msg[0])
        fail_msg("conditional create: %s", r->err.msg);
    assert_int_equal(r->stats.attempts, 2);
    assert_int_equal(r->stats.schedule_len, 1);
    assert_int_equal(r->stats.schedule_status[0], 500);
    assert_int_equal(r->status, 200); /* the retry matched the resource made by attempt 1 */
    fhir_client_result_free(r);

    idset ids = {0};
    r = fhir_client_search_sync(c, "Organization?identifier=urn:test:org|after-1", collect_ids,
                                &ids);
    if (r->err.msg[0])
        fail_msg("search: %s", r->err.msg);
    assert_int_equal(ids.n, 1);
    fhir_client_result_free(r);
    idset_free(&ids);

    /* a transaction with conditional entries, performed and then answered 500, is re-sent
     * and still leaves exactly one of each resource */
    set_faults("{\"rules\":[{\"mode\":\"after\",\"status\":500,\"every\":1,\"limit\":1,"
               "\"methods\":\"POST\"}]}");
    fhir_node *tx = parse_or_fail(
        a, "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":["
           "{\"fullUrl\":\"urn:uuid:7f0c7a5e-0000-4000-8000-000000000001\",\"resource\":{"
           "\"resourceType\":\"Organization\",\"identifier\":[{\"system\":\"urn:test:org\","
           "\"value\":\"tx-1\"}],\"name\":\"Tx org\"},\"request\":{\"method\":\"POST\","
           "\"url\":\"Organization\",\"ifNoneExist\":\"identifier=urn:test:org|tx-1\"}},"
           "{\"fullUrl\":\"urn:uuid:7f0c7a5e-0000-4000-8000-000000000002\",\"resource\":{"
           "\"resourceType\":\"Location\",\"identifier\":[{\"system\":\"urn:test:tx\","
           "\"value\":\"tx-p1\"}],\"managingOrganization\":{\"reference\":"
           "\"urn:uuid:7f0c7a5e-0000-4000-8000-000000000001\"}},\"request\":{\"method\":\"POST\","
           "\"url\":\"Location\",\"ifNoneExist\":\"identifier=urn:test:tx|tx-p1\"}}]}");
    fhir_client_request txr = {.method = "POST", .path = "", .resource = tx};
    r = fhir_client_send_sync(c, &txr);
    clear_faults();
    if (r->err.msg[0])
        fail_msg("transaction: %s", r->err.msg);
    assert_int_equal(r->stats.attempts, 2);
    assert_string_equal(fhir_node_path_str(r->body, "type"), "transaction-response");
    fhir_client_result_free(r);
    const char *queries[] = {"Organization?identifier=urn:test:org|tx-1",
                             "Location?identifier=urn:test:tx|tx-p1"};
    for (int i = 0; i < 2; i++) {
        r = fhir_client_search_sync(c, queries[i], collect_ids, &ids);
        if (r->err.msg[0])
            fail_msg("search: %s", r->err.msg);
        assert_int_equal(ids.n, 1);
        fhir_client_result_free(r);
        idset_free(&ids);
    }

    /* a plain create (not idempotent) is not re-sent after an ambiguous 500 */
    set_faults("{\"rules\":[{\"mode\":\"after\",\"status\":500,\"every\":1,\"limit\":1,"
               "\"methods\":\"POST\"}]}");
    fhir_node *org2 = parse_or_fail(a, "{\"resourceType\":\"Organization\",\"identifier\":[{"
                                       "\"system\":\"urn:test:org\",\"value\":\"plain-1\"}]}");
    fhir_client_request plain = {.method = "POST", .path = "Organization", .resource = org2,
                                 .not_idempotent = true};
    r = fhir_client_send_sync(c, &plain);
    clear_faults();
    assert_int_equal(r->status, 500);
    assert_int_equal(r->stats.attempts, 1);
    assert_non_null(strstr(r->err.msg, "HTTP 500"));
    fhir_client_result_free(r);
    fhir_arena_free(a);
    fhir_client_free(c);
}

/* ---- caps and permanent errors -------------------------------------------------------- */

static void test_byte_cap(void **state)
{
    (void)state;
    NEED_SERVER();
    clear_faults();
    fhir_client_config cfg = test_config(base);
    cfg.max_response_bytes = 4096;
    fhir_client *c = client_or_fail(&cfg);
    fhir_client_result *r = fhir_client_search_sync(c, "Patient?_count=200", NULL, NULL);
    assert_non_null(strstr(r->err.msg, "exceeds the 4096-byte limit"));
    assert_int_equal(r->stats.attempts, 1);
    assert_int_equal(r->stats.retries, 0);
    assert_int_equal(r->stats.pages, 0);
    fhir_client_result_free(r);
    /* the same client still works for a small response (clean abort, no stuck state) */
    fhir_client_request req = {.path = "Patient/pt-0002"};
    r = fhir_client_send_sync(c, &req);
    if (r->err.msg[0])
        fail_msg("read after cap: %s", r->err.msg);
    assert_string_equal(fhir_node_resource_id(r->body), "pt-0002");
    fhir_client_result_free(r);
    fhir_client_free(c);
}

static void test_permanent_400_not_retried(void **state)
{
    (void)state;
    NEED_SERVER();
    clear_faults();
    reset_stats(admin);
    fhir_client_config cfg = test_config(base);
    fhir_client *c = client_or_fail(&cfg);
    fhir_arena *a = fhir_arena_new(0);
    /* invalid against base R4: the server validates and answers 400 + OperationOutcome */
    fhir_node *bad = parse_or_fail(a, "{\"resourceType\":\"Patient\",\"birthDate\":\"yesterday\"}");
    fhir_client_request req = {.method = "POST", .path = "Patient", .resource = bad,
                               .if_none_exist = "identifier=urn:test:mrn|never"};
    fhir_client_result *r = fhir_client_send_sync(c, &req);
    assert_int_equal(r->status, 400);
    assert_int_equal(r->err.code, 400);
    assert_int_equal(r->stats.attempts, 1);
    assert_int_equal(r->stats.retries, 0);
    assert_non_null(strstr(r->err.msg, "HTTP 400"));
    assert_true(strlen(r->err.msg) > strlen("POST Patient: HTTP 400: ")); /* OO text carried */
    assert_int_equal(admin_stat(admin, "fhir.by_method.POST"), 1);
    fhir_client_result_free(r);

    /* an injected 400 on a read: one attempt, no schedule */
    set_faults("{\"rules\":[{\"mode\":\"status\",\"status\":400,\"every\":1,\"limit\":1}]}");
    fhir_client_request rd = {.path = "Patient/pt-0003"};
    r = fhir_client_send_sync(c, &rd);
    clear_faults();
    assert_int_equal(r->status, 400);
    assert_int_equal(r->stats.attempts, 1);
    assert_int_equal(r->stats.schedule_len, 0);
    fhir_client_result_free(r);

    /* an XML endpoint asks for application/fhir+xml; this server speaks JSON only and
     * answers 406 with an OperationOutcome, which is permanent and carried to the user */
    fhir_client_config xcfg = test_config(base);
    xcfg.format = FHIR_FORMAT_XML;
    fhir_client *xc = client_or_fail(&xcfg);
    fhir_client_request xr = {.path = "Patient/pt-0003"};
    r = fhir_client_send_sync(xc, &xr);
    assert_int_equal(r->status, 406);
    assert_int_equal(r->stats.attempts, 1);
    assert_non_null(strstr(r->err.msg, "JSON only"));
    fhir_client_result_free(r);
    fhir_client_free(xc);

    /* 404 is permanent too */
    fhir_client_request nf = {.path = "Patient/does-not-exist"};
    r = fhir_client_send_sync(c, &nf);
    assert_int_equal(r->status, 404);
    assert_int_equal(r->stats.attempts, 1);
    fhir_client_result_free(r);
    fhir_arena_free(a);
    fhir_client_free(c);
}

/* ---- concurrency and the async API ---------------------------------------------------- */

typedef struct multi_state {
    unsigned done, ok;
} multi_state;

static void count_done(void *ud, fhir_client_result *r)
{
    multi_state *m = ud;
    m->done++;
    if (!r->err.msg[0] && r->status == 200 && fhir_node_resource_id(r->body))
        m->ok++;
    fhir_client_result_free(r);
}

static void test_concurrent_reads(void **state)
{
    (void)state;
    NEED_SERVER();
    clear_faults();
    fhir_client_config cfg = test_config(base);
    cfg.max_concurrent = 16;
    fhir_client *c = client_or_fail(&cfg);
    multi_state m = {0};
    for (int i = 0; i < 200; i++) {
        char id[16];
        snprintf(id, sizeof id, "pt-%04d", i);
        fhir_error err = {0};
        assert_int_equal(fhir_client_read(c, "Patient", id, count_done, &m, &err), 0);
    }
    for (int guard = 0; m.done < 200 && guard < 1000000; guard++)
        event_base_loop(fhir_client_base(c), EVLOOP_ONCE);
    assert_int_equal(m.done, 200);
    assert_int_equal(m.ok, 200);
    assert_int_equal(fhir_client_stats_get(c)->operations, 200);
    fhir_client_free(c);

    /* with a request rate limit, queued requests wait on the pacing timer and all finish */
    cfg.rate_per_s = 100;
    c = client_or_fail(&cfg);
    m = (multi_state){0};
    for (int i = 0; i < 60; i++) {
        fhir_error err = {0};
        assert_int_equal(fhir_client_read(c, "Patient", "pt-0005", count_done, &m, &err), 0);
    }
    for (int guard = 0; m.done < 60 && guard < 1000000; guard++)
        event_base_loop(fhir_client_base(c), EVLOOP_ONCE);
    assert_int_equal(m.ok, 60);
    fhir_client_free(c);
}

/* ---- SMART Backend Services ----------------------------------------------------------- */

static void write_keypair(const char *type, const char *param, const char *priv,
                          const char *pub)
{
    EVP_PKEY *k = !strcmp(type, "RSA") ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
                                       : EVP_PKEY_Q_keygen(NULL, NULL, "EC", param);
    assert_non_null(k);
    FILE *f = fopen(priv, "w");
    assert_non_null(f);
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    f = fopen(pub, "w");
    assert_non_null(f);
    PEM_write_PUBKEY(f, k);
    fclose(f);
    EVP_PKEY_free(k);
}

/* ---- bulk $export: 202 headers, streaming GET, bearer auth ------------------------------ */

typedef struct stream_count {
    fhir_ndjson *nd;
    fhir_error err;
    size_t chunks;
    size_t bytes;
    size_t stop_after; /* return non-zero once this many bytes were seen; 0 = never */
} stream_count;

static int count_line(void *ud, const fhir_node *res, size_t line_no, fhir_error *err)
{
    (void)line_no;
    size_t *n = ud;
    if (fhir_node_resource_type(res) && !strcmp(fhir_node_resource_type(res), "Patient"))
        (*n)++;
    return 0;
}

static int count_chunk(void *ud, const char *data, size_t len)
{
    stream_count *sc = ud;
    sc->chunks++;
    sc->bytes += len;
    if (sc->nd && fhir_ndjson_feed(sc->nd, data, len, &sc->err) < 0)
        return 1;
    return sc->stop_after && sc->bytes >= sc->stop_after;
}

typedef struct stream_wait {
    bool done;
    fhir_client_result *res;
} stream_wait;

static void stream_done(void *ud, fhir_client_result *r)
{
    stream_wait *w = ((stream_wait **)ud)[1];
    w->res = r;
    w->done = true;
}

/* ud layout for the shared callbacks: [0] = stream_count, [1] = stream_wait */
static int count_chunk_ud(void *ud, const char *data, size_t len)
{
    return count_chunk(((void **)ud)[0], data, len);
}

static fhir_client_result *stream_sync(fhir_client *c, const fhir_client_stream_request *req,
                                       stream_count *sc)
{
    stream_wait w = {0};
    void *ud[2] = {sc, &w};
    fhir_error err = {0};
    if (fhir_client_get_stream(c, req, count_chunk_ud, stream_done, ud, &err) < 0)
        fail_msg("get_stream refused: %s", err.msg);
    for (int i = 0; i < 1000000 && !w.done; i++)
        event_base_loop(fhir_client_base(c), EVLOOP_ONCE);
    assert_true(w.done);
    return w.res;
}

static void test_smart(void **state)
{
    (void)state;
    NEED_SERVER();
    char rsa[700], rsa_pub[700], ec[700], ec_pub[700], other[700], other_pub[700], log[700];
    snprintf(rsa, sizeof rsa, "%s/rsa.pem", tmp);
    snprintf(rsa_pub, sizeof rsa_pub, "%s/rsa.pub.pem", tmp);
    snprintf(ec, sizeof ec, "%s/ec.pem", tmp);
    snprintf(ec_pub, sizeof ec_pub, "%s/ec.pub.pem", tmp);
    snprintf(other, sizeof other, "%s/other.pem", tmp);
    snprintf(other_pub, sizeof other_pub, "%s/other.pub.pem", tmp);
    snprintf(log, sizeof log, "%s/smart.log", tmp);
    write_keypair("RSA", NULL, rsa, rsa_pub);
    write_keypair("EC", "P-384", ec, ec_pub);
    write_keypair("RSA", NULL, other, other_pub);
    char seed[700];
    snprintf(seed, sizeof seed, "%s/seed", tmp);
    const char *args[] = {"--smart-client", "cartgate-it", "--smart-public-key", rsa_pub,
                          "--smart-public-key", ec_pub, "--seed", seed, NULL};
    support_proc s;
    assert_int_equal(support_server_start(&s, args, log), 0);
    char sbase[128], sadmin[128];
    snprintf(sbase, sizeof sbase, "http://127.0.0.1:%d/fhir", s.port);
    snprintf(sadmin, sizeof sadmin, "http://127.0.0.1:%d/admin", s.port);

    /* without auth: refused, 401 is permanent without SMART */
    fhir_client_config plain = test_config(sbase);
    fhir_client *c = client_or_fail(&plain);
    fhir_client_request rd = {.path = "Patient/pt-0001"};
    fhir_client_result *r = fhir_client_send_sync(c, &rd);
    assert_int_equal(r->status, 401);
    assert_int_equal(r->stats.attempts, 1);
    fhir_client_result_free(r);
    fhir_client_free(c);

    const char *algs[][2] = {{rsa, "RS384"}, {ec, "ES384"}};
    for (int i = 0; i < 2; i++) {
        fhir_client_config cfg = test_config(sbase);
        cfg.auth = (fhir_auth_config){.kind = FHIR_AUTH_SMART, .smart_client_id = "cartgate-it",
                                      .smart_key_file = algs[i][0], .smart_kid = "k1",
                                      .smart_alg = algs[i][1],
                                      .smart_scope = "system/Patient.rs"};
        c = client_or_fail(&cfg);
        r = fhir_client_send_sync(c, &rd);
        if (r->err.msg[0])
            fail_msg("%s: %s", algs[i][1], r->err.msg);
        assert_int_equal(r->status, 200);
        assert_int_equal(fhir_client_stats_get(c)->token_fetches, 1);
        fhir_client_result_free(r);
        /* the cached token serves the next requests */
        r = fhir_client_send_sync(c, &rd);
        assert_int_equal(r->status, 200);
        assert_int_equal(fhir_client_stats_get(c)->token_fetches, 1);
        fhir_client_result_free(r);
        fhir_client_free(c);
    }

    /* refusals: wrong key, wrong aud, expired assertion */
    struct { const char *what, *key, *aud; int64_t clock_shift_ms; } bad[] = {
        {"wrong key", other, NULL, 0},
        {"wrong aud", rsa, "https://elsewhere.example/token", 0},
        {"expired assertion", rsa, NULL, -3600 * 1000},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fhir_client_config cfg = test_config(sbase);
        cfg.auth = (fhir_auth_config){.kind = FHIR_AUTH_SMART, .smart_client_id = "cartgate-it",
                                      .smart_key_file = bad[i].key, .smart_kid = "k1",
                                      .smart_audience = bad[i].aud};
        c = client_or_fail(&cfg);
        if (bad[i].clock_shift_ms)
            fhir_clock_set_fixed(fhir_clock_now_ms() + bad[i].clock_shift_ms);
        reset_stats(sadmin);
        r = fhir_client_send_sync(c, &rd);
        fhir_clock_set_fixed(-1);
        if (!strstr(r->err.msg, "SMART token request refused") ||
            !strstr(r->err.msg, "invalid_client"))
            fail_msg("%s: unexpected '%s'", bad[i].what, r->err.msg);
        assert_int_equal(r->status, 401);
        assert_int_equal(r->stats.attempts, 0); /* the FHIR request was never sent */
        assert_int_equal(admin_stat(sadmin, "fhir.by_method_type.GET Patient"), 0);
        assert_int_equal(admin_stat(sadmin, "token.total"), 1);
        fhir_client_result_free(r);
        fhir_client_free(c);
    }

    /* expiry handling on the injectable clock: past expiry a new token is fetched first */
    fhir_client_config cfg = test_config(sbase);
    cfg.auth = (fhir_auth_config){.kind = FHIR_AUTH_SMART, .smart_client_id = "cartgate-it",
                                  .smart_key_file = rsa, .smart_kid = "k1"};
    c = client_or_fail(&cfg);
    /* the token is obtained while the client's clock reads 290 s ago (the assertion's exp
     * is still in the server's future); back on the real clock, that 300 s token is
     * inside its refresh margin, so the next request first fetches a new one */
    fhir_clock_set_fixed(fhir_clock_now_ms() - 290 * 1000);
    r = fhir_client_send_sync(c, &rd);
    fhir_clock_set_fixed(-1);
    assert_int_equal(r->status, 200);
    fhir_client_result_free(r);
    assert_int_equal(fhir_client_stats_get(c)->token_fetches, 1);
    r = fhir_client_send_sync(c, &rd);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->stats.auth_retries, 0);
    assert_int_equal(fhir_client_stats_get(c)->token_fetches, 2);
    fhir_client_result_free(r);

    /* server-side expiry: the 401 triggers exactly one retry with a fresh token */
    char url[256];
    snprintf(url, sizeof url, "%s/tokens/expire", sadmin);
    assert_int_equal(support_http("POST", url, "{}", NULL), 200);
    r = fhir_client_send_sync(c, &rd);
    if (r->err.msg[0])
        fail_msg("after server expiry: %s", r->err.msg);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->stats.attempts, 2);
    assert_int_equal(r->stats.auth_retries, 1);
    assert_int_equal(fhir_client_stats_get(c)->token_fetches, 3);
    fhir_client_result_free(r);

    /* the streaming GET uses the same token flow: a 401 before any byte gets one retry */
    assert_int_equal(support_http("POST", url, "{}", NULL), 200);
    {
        stream_count sc = {0};
        fhir_client_stream_request sr = {.url = "Patient/pt-0001",
                                         .accept = "application/fhir+json"};
        r = stream_sync(c, &sr, &sc);
        if (r->err.msg[0])
            fail_msg("stream after server expiry: %s", r->err.msg);
        assert_int_equal(r->status, 200);
        assert_int_equal(r->stats.auth_retries, 1);
        assert_int_equal(r->stats.attempts, 2);
        assert_true(sc.bytes > 0);
        assert_non_null(strstr(r->content_type, "application/fhir+json"));
        assert_int_equal(fhir_client_stats_get(c)->token_fetches, 4);
        fhir_client_result_free(r);
    }

    /* a 401 that persists: one auth retry, then the 401 is returned (no loop) */
    snprintf(url, sizeof url, "%s/faults", sadmin);
    assert_int_equal(support_http("POST", url,
                                  "{\"rules\":[{\"mode\":\"status\",\"status\":401,\"every\":1}]}",
                                  NULL), 200);
    r = fhir_client_send_sync(c, &rd);
    support_http("DELETE", url, NULL, NULL);
    assert_int_equal(r->status, 401);
    assert_int_equal(r->stats.attempts, 2);
    assert_int_equal(r->stats.auth_retries, 1);
    assert_int_equal(fhir_client_stats_get(c)->token_fetches, 5);
    fhir_client_result_free(r);
    fhir_client_free(c);

    /* a token request that fails after the endpoint checked its assertion (a reset after the
     * answer, a 503 after the check) is sent again with a fresh assertion: the endpoint accepts
     * an assertion's jti once, so re-sending the same one would be refused as a replay */
    const char *token_faults[] = {
        "{\"rules\":[{\"endpoint\":\"token\",\"mode\":\"after-reset\",\"every\":1,\"limit\":1}]}",
        "{\"rules\":[{\"endpoint\":\"token\",\"mode\":\"after\",\"status\":503,\"every\":1,"
        "\"limit\":1}]}",
    };
    const char *fault_row[] = {"token.by_status.reset", "token.by_status.503"};
    for (int i = 0; i < 2; i++) {
        c = client_or_fail(&cfg);
        reset_stats(sadmin);
        assert_int_equal(support_http("POST", url, token_faults[i], NULL), 200);
        r = fhir_client_send_sync(c, &rd);
        support_http("DELETE", url, NULL, NULL);
        if (r->err.msg[0])
            fail_msg("token fault %d: %s", i, r->err.msg);
        assert_int_equal(r->status, 200);
        /* the fault fired once, on a request the endpoint had accepted */
        assert_int_equal(admin_stat(sadmin, "faults.injected"), 1);
        assert_int_equal(admin_stat(sadmin, fault_row[i]), 1);
        assert_int_equal(admin_stat(sadmin, "token.by_status.401"), 0);
        assert_int_equal(admin_stat(sadmin, "token.by_status.200"), 1);
        assert_int_equal(fhir_client_stats_get(c)->token_fetches, 2);
        fhir_client_result_free(r);
        fhir_client_free(c);
    }
    support_stop(&s);
}

/* ---- TLS ------------------------------------------------------------------------------ */

static void test_tls_verification(void **state)
{
    (void)state;
    NEED_SERVER();
    char cert[700], key[700], log[700];
    snprintf(cert, sizeof cert, "%s/tls-cert.pem", tmp);
    snprintf(key, sizeof key, "%s/tls-key.pem", tmp);
    snprintf(log, sizeof log, "%s/tls.log", tmp);
    char *argv[] = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert,
                    NULL};
    char *err = NULL;
    int rc = support_run(argv, NULL, &err, 60);
    if (rc != 0)
        fail_msg("openssl req failed: %s", err);
    free(err);
    const char *args[] = {"--tls-cert", cert, "--tls-key", key, NULL};
    support_proc s;
    assert_int_equal(support_server_start_tls(&s, args, log, cert), 0);
    char sbase[128];
    snprintf(sbase, sizeof sbase, "https://127.0.0.1:%d/fhir", s.port);

    fhir_client_config cfg = test_config(sbase);
    fhir_client *c = client_or_fail(&cfg);
    fhir_client_request md = {.path = "metadata"};
    fhir_client_result *r = fhir_client_send_sync(c, &md);
    assert_int_equal(r->status, 0);
    assert_true(r->err.msg[0] != '\0');
    assert_int_equal(r->stats.attempts, 1); /* a verification failure is not retried */
    fhir_client_result_free(r);
    fhir_client_free(c);

    cfg.ca_file = cert;
    c = client_or_fail(&cfg);
    r = fhir_client_send_sync(c, &md);
    if (r->err.msg[0])
        fail_msg("with CA: %s", r->err.msg);
    assert_int_equal(r->status, 200);
    assert_string_equal(fhir_node_resource_type(r->body), "CapabilityStatement");
    fhir_client_result_free(r);
    fhir_client_free(c);
    support_stop(&s);

    /* mTLS: a server that requires a client certificate signed by a CA made here */
    char ca[700], ca_key[700], ck[700], csr[700], cc[700];
    snprintf(ca, sizeof ca, "%s/ca.pem", tmp);
    snprintf(ca_key, sizeof ca_key, "%s/ca.key", tmp);
    snprintf(ck, sizeof ck, "%s/client.key", tmp);
    snprintf(csr, sizeof csr, "%s/client.csr", tmp);
    snprintf(cc, sizeof cc, "%s/client.pem", tmp);
    char *mk_ca[] = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                     "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
                     "-keyout", ca_key, "-out", ca, NULL};
    char *mk_csr[] = {"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=cartgate-client",
                      "-keyout", ck, "-out", csr, NULL};
    char *sign[] = {"openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                    "-CAcreateserial", "-days", "1", "-out", cc, NULL};
    char **steps[] = {mk_ca, mk_csr, sign};
    for (int i = 0; i < 3; i++) {
        err = NULL;
        if (support_run(steps[i], NULL, &err, 60) != 0)
            fail_msg("openssl step %d failed: %s", i, err);
        free(err);
    }
    char mlog[700];
    snprintf(mlog, sizeof mlog, "%s/mtls.log", tmp);
    char script[1024];
    snprintf(script, sizeof script, "%s/tests/fhir-server/server.mjs", support_source_dir());
    char *margv[] = {"node", script, "--port", "0", "--tls-cert", cert, "--tls-key", key,
                     "--tls-client-ca", ca, NULL};
    assert_int_equal(support_start_port(&s, margv, mlog), 0);
    snprintf(sbase, sizeof sbase, "https://127.0.0.1:%d/fhir", s.port);
    fhir_client_config mcfg = test_config(sbase);
    mcfg.ca_file = cert;
    mcfg.cert_file = cc;
    mcfg.key_file = ck;
    /* generous attempts: the server may still be loading (503) right after printing its port */
    mcfg.retry = (fhir_retry_policy){.max_attempts = 60, .base_ms = 100, .cap_ms = 500};
    c = client_or_fail(&mcfg);
    r = fhir_client_send_sync(c, &md);
    if (r->err.msg[0])
        fail_msg("mTLS with a client certificate: %s", r->err.msg);
    assert_int_equal(r->status, 200);
    fhir_client_result_free(r);
    fhir_client_free(c);
    /* the same server without a client certificate: refused */
    mcfg.cert_file = mcfg.key_file = NULL;
    mcfg.retry = (fhir_retry_policy){.max_attempts = 2, .base_ms = 5, .cap_ms = 5};
    c = client_or_fail(&mcfg);
    r = fhir_client_send_sync(c, &md);
    assert_true(r->err.msg[0] != '\0');
    assert_int_equal(r->status, 0);
    fhir_client_result_free(r);
    fhir_client_free(c);
    support_stop(&s);
}

/* Freeing a client with requests in flight, queued and waiting to retry releases
 * everything without calling their callbacks (checked under ASan's leak checker). */
static bool client_freed;

static void not_after_free(void *ud, fhir_client_result *r)
{
    (void)ud;
    fhir_client_result_free(r);
    if (client_freed)
        fail_msg("callback after fhir_client_free");
}

static void test_free_with_pending(void **state)
{
    (void)state;
    NEED_SERVER();
    set_faults("{\"rules\":[{\"mode\":\"status\",\"status\":503,\"every\":3}]}");
    fhir_client_config cfg = test_config(base);
    cfg.retry.base_ms = 10000; /* retries wait on timers */
    cfg.retry.cap_ms = 10000;
    fhir_client *c = client_or_fail(&cfg);
    fhir_error err = {0};
    for (int i = 0; i < 12; i++)
        assert_int_equal(fhir_client_read(c, "Patient", "pt-0001", not_after_free, NULL, &err), 0);
    assert_int_equal(fhir_client_search(c, "Patient?_count=5", NULL, not_after_free, NULL, &err), 0);
    for (int i = 0; i < 40; i++)
        event_base_loop(fhir_client_base(c), EVLOOP_ONCE | EVLOOP_NONBLOCK);
    /* with 503 on every third request and 10 s backoff, some reads wait on retry timers */
    assert_true(fhir_client_stats_get(c)->operations < 13);
    client_freed = true;
    fhir_client_free(c);
    client_freed = false;
    clear_faults();
}

static void test_bulk_export_stream_bearer(void **state)
{
    (void)state;
    NEED_SERVER();
    char seed[700], tokfile[700], log[700];
    snprintf(seed, sizeof seed, "%s/seed", tmp);
    snprintf(tokfile, sizeof tokfile, "%s/bearer.txt", tmp);
    snprintf(log, sizeof log, "%s/bulk.log", tmp);
    assert_int_equal(support_write_file(tokfile, "s3cret-bulk-token\n"), 0);
    const char *args[] = {"--seed", seed, "--token", "s3cret-bulk-token", "--bulk-delay-ms",
                          "600", NULL};
    support_proc s;
    assert_int_equal(support_server_start(&s, args, log), 0);
    char bbase[128], badmin[128];
    snprintf(bbase, sizeof bbase, "http://127.0.0.1:%d/fhir", s.port);
    snprintf(badmin, sizeof badmin, "http://127.0.0.1:%d/admin", s.port);

    /* without the token: the kick-off is refused (401, not retried) */
    fhir_client_config plain = test_config(bbase);
    fhir_client *c = client_or_fail(&plain);
    fhir_client_request kick = {.path = "Patient/$export?_type=Patient", .prefer = "respond-async",
                                .accept_202 = true};
    fhir_client_result *r = fhir_client_send_sync(c, &kick);
    assert_int_equal(r->status, 401);
    assert_int_equal(r->stats.attempts, 1);
    assert_non_null(r->err.msg[0] ? r->err.msg : NULL);
    fhir_client_result_free(r);
    fhir_client_free(c);

    fhir_client_config cfg = test_config(bbase);
    cfg.auth = (fhir_auth_config){.kind = FHIR_AUTH_BEARER, .bearer_file = tokfile};
    c = client_or_fail(&cfg);
    r = fhir_client_send_sync(c, &kick);
    if (r->err.msg[0])
        fail_msg("kick-off: %s", r->err.msg);
    assert_int_equal(r->status, 202);
    assert_int_equal(r->stats.attempts, 1);
    assert_int_equal(r->stats.retries, 0);
    assert_non_null(r->content_location);
    assert_string_equal(fhir_client_result_header(r, "Content-Location"), r->content_location);
    assert_non_null(strstr(r->content_location, "/fhir/$export-status/"));
    char status_url[FHIR_CLIENT_HEADER_MAX + 1];
    snprintf(status_url, sizeof status_url, "%s", r->content_location);
    fhir_client_result_free(r);

    /* status polling: 202 + X-Progress + Retry-After while in progress (never retried by the
     * client itself), then 200 + the manifest */
    fhir_client_request st = {.path = status_url, .accept = "application/json", .accept_202 = true};
    unsigned in_progress = 0;
    fhir_arena *ma = fhir_arena_new(0);
    fhir_node *manifest = NULL;
    for (int i = 0; i < 100 && !manifest; i++) {
        r = fhir_client_send_sync(c, &st);
        if (r->err.msg[0])
            fail_msg("status: %s", r->err.msg);
        assert_int_equal(r->stats.attempts, 1);
        if (r->status == 202) {
            in_progress++;
            assert_non_null(r->x_progress);
            assert_non_null(fhir_client_result_header(r, "retry-after"));
            assert_string_equal(r->retry_after, "1");
            usleep(150 * 1000);
        } else {
            assert_int_equal(r->status, 200);
            assert_non_null(r->body);
            fhir_buf b;
            fhir_buf_init(&b, 1u << 20);
            fhir_json_write(&b, r->body, FHIR_JSON_COMPACT);
            manifest = parse_or_fail(ma, fhir_buf_cstr(&b));
            fhir_buf_free(&b);
            assert_non_null(r->expires);
        }
        fhir_client_result_free(r);
    }
    assert_non_null(manifest);
    assert_true(in_progress >= 1);
    assert_true(fhir_node_bool(fhir_node_get(manifest, "requiresAccessToken"), false));
    const fhir_node *out = fhir_node_first(fhir_node_get(manifest, "output"));
    assert_non_null(out);
    const char *file_url = fhir_node_str(fhir_node_get(out, "url"));
    assert_non_null(file_url);

    /* the file, streamed chunk by chunk into the NDJSON reader: every Patient */
    size_t patients = 0;
    fhir_json_limits lim = {.max_bytes = 1u << 20};
    stream_count sc = {.nd = fhir_ndjson_new(&lim, count_line, NULL, &patients)};
    fhir_client_stream_request sr = {.url = file_url};
    r = stream_sync(c, &sr, &sc);
    if (r->err.msg[0])
        fail_msg("download: %s", r->err.msg);
    assert_int_equal(fhir_ndjson_finish(sc.nd, &sc.err), 0);
    fhir_ndjson_free(sc.nd);
    assert_int_equal(r->status, 200);
    assert_null(r->body);
    assert_int_equal(patients, N_PATIENTS);
    assert_true(sc.chunks >= 2);
    assert_int_equal((size_t)r->stats.bytes_in, sc.bytes);
    assert_non_null(r->content_type);
    assert_non_null(strstr(r->content_type, "application/fhir+ndjson"));
    fhir_client_result_free(r);

    /* a 503 before any byte is retried (and the stream is then complete) */
    char url[256];
    snprintf(url, sizeof url, "%s/faults", badmin);
    assert_int_equal(support_http("POST", url,
                                  "{\"rules\":[{\"mode\":\"status\",\"status\":503,"
                                  "\"path\":\"$export-file\",\"limit\":1}]}", NULL), 200);
    memset(&sc, 0, sizeof sc);
    r = stream_sync(c, &sr, &sc);
    support_http("DELETE", url, NULL, NULL);
    if (r->err.msg[0])
        fail_msg("download after reset: %s", r->err.msg);
    assert_int_equal(r->stats.attempts, 2);
    assert_int_equal(r->stats.retries, 1);
    assert_int_equal(r->stats.schedule_status[0], 503);
    assert_int_equal(r->status, 200);
    fhir_client_result_free(r);

    /* the byte cap aborts the transfer; the callback saw at most the cap */
    memset(&sc, 0, sizeof sc);
    fhir_client_stream_request capped = {.url = file_url, .max_bytes = 5000};
    r = stream_sync(c, &capped, &sc);
    assert_non_null(strstr(r->err.msg, "exceeds the 5000-byte limit"));
    assert_true(sc.bytes <= 5000);
    assert_int_equal(r->stats.attempts, 1);
    fhir_client_result_free(r);

    /* the callback stops the stream */
    memset(&sc, 0, sizeof sc);
    sc.stop_after = 1;
    r = stream_sync(c, &sr, &sc);
    assert_non_null(strstr(r->err.msg, "stopped by the chunk callback"));
    assert_int_equal(sc.chunks, 1);
    assert_int_equal(r->stats.attempts, 1);
    fhir_client_result_free(r);

    /* another origin is refused before anything is sent (the token must not leak) */
    fhir_error err = {0};
    fhir_client_stream_request foreign = {.url = "http://127.0.0.2:9/fhir/$export-file/x/1.ndjson"};
    assert_int_equal(fhir_client_get_stream(c, &foreign, count_chunk_ud, stream_done, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "origin"));

    /* without the token the file is refused: the error body is not streamed */
    fhir_client *nc = client_or_fail(&plain);
    memset(&sc, 0, sizeof sc);
    r = stream_sync(nc, &sr, &sc);
    assert_int_equal(r->status, 401);
    assert_int_equal(sc.bytes, 0);
    assert_non_null(strstr(r->err.msg, "HTTP 401"));
    fhir_client_result_free(r);
    fhir_client_free(nc);

    /* DELETE of the job: 202, then the status URL is gone */
    fhir_client_request del = {.method = "DELETE", .path = status_url, .accept_202 = true};
    r = fhir_client_send_sync(c, &del);
    if (r->err.msg[0])
        fail_msg("delete: %s", r->err.msg);
    assert_int_equal(r->status, 202);
    fhir_client_result_free(r);
    r = fhir_client_send_sync(c, &st);
    assert_int_equal(r->status, 404);
    fhir_client_result_free(r);

    fhir_arena_free(ma);
    fhir_client_free(c);
    support_stop(&s);
}

/* A loopback HTTP peer that sends a 200 header and part of the promised body, then closes:
 * the streaming GET must report the truncation and not re-send (bytes were handed over). */
static void test_stream_no_retry_after_first_byte(void **state)
{
    (void)state;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(ls >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(ls, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(ls, 8), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(ls, (struct sockaddr *)&sa, &sl), 0);
    int port = ntohs(sa.sin_port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(30); /* bounded even if the parent dies */
        for (int n = 0; n < 4; n++) {
            int cs = accept(ls, NULL, NULL);
            if (cs < 0)
                _exit(1);
            char buf[4096];
            ssize_t got = recv(cs, buf, sizeof buf, 0);
            (void)got;
            const char *resp = "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+ndjson\r\n"
                               "Content-Length: 1000\r\n\r\n{\"resourceType\":\"Patient\",\"id\":\"a\"}\n";
            ssize_t w = send(cs, resp, strlen(resp), 0);
            (void)w;
            close(cs);
        }
        _exit(0);
    }
    close(ls);
    char b[128];
    snprintf(b, sizeof b, "http://127.0.0.1:%d/fhir", port);
    fhir_client_config cfg = test_config(b);
    fhir_client *c = client_or_fail(&cfg);
    stream_count sc = {0};
    char u[200];
    snprintf(u, sizeof u, "%s/$export-file/j/1.ndjson", b);
    fhir_client_stream_request sr = {.url = u};
    fhir_client_result *r = stream_sync(c, &sr, &sc);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    assert_non_null(strstr(r->err.msg, "not retried"));
    assert_int_equal(r->stats.attempts, 1);
    assert_int_equal(r->stats.retries, 0);
    assert_true(sc.bytes > 0);
    fhir_client_result_free(r);
    fhir_client_free(c);
}

/* ---- complete reads: truncation, searchset warnings, origins -------------------------- */

static void set_quirks(const char *json)
{
    char url[256];
    snprintf(url, sizeof url, "%s/quirks", admin);
    char *out = NULL;
    long st = support_http(json ? "POST" : "DELETE", url, json, &out);
    if (st != 200)
        fail_msg("setting quirks failed (%ld): %s", st, out);
    free(out);
}

/* Faults cleared, the quirks set, a client on the base with the test config in *cfg. */
static fhir_client *quirk_client(const char *quirks, fhir_client_config *cfg)
{
    clear_faults();
    set_quirks(quirks);
    *cfg = test_config(base);
    return client_or_fail(cfg);
}

/* A page without a next link while Bundle.total says more fails the search, naming the counts;
 * count-only searches (no entries by design) do not. */
static void test_search_truncated_fails(void **state)
{
    (void)state;
    NEED_SERVER();
    fhir_client_config cfg;
    fhir_client *c =
        quirk_client("{\"search_truncate\":{\"page\":3,\"types\":[\"Patient\"]}}", &cfg);
    idset ids = {0};
    fhir_client_result *r = fhir_client_search_sync(c, "Patient?_count=100", collect_ids, &ids);
    assert_string_equal(r->err.msg, "search incomplete: 300 of 1000 matches received "
                                    "(Bundle.total) and page 3 has no next link");
    assert_int_equal(r->stats.pages, 3);
    assert_int_equal(ids.n, 300);
    fhir_client_result_free(r);
    idset_free(&ids);

    r = fhir_client_search_sync(c, "Patient?_summary=count", NULL, NULL);
    if (r->err.msg[0])
        fail_msg("_summary=count: %s", r->err.msg);
    fhir_client_result_free(r);
    r = fhir_client_search_sync(c, "Patient?_count=0", NULL, NULL);
    if (r->err.msg[0])
        fail_msg("_count=0: %s", r->err.msg);
    fhir_client_result_free(r);

    /* the same search once the server pages to the end again */
    set_quirks(NULL);
    r = fhir_client_search_sync(c, "Patient?_count=100", collect_ids, &ids);
    if (r->err.msg[0])
        fail_msg("clean search: %s", r->err.msg);
    assert_int_equal(ids.n, N_PATIENTS);
    fhir_client_result_free(r);
    idset_free(&ids);
    fhir_client_free(c);
}

/* OperationOutcome entries inside a searchset: counted, kept once per distinct text for the
 * caller, and not counted as matches against Bundle.total. */
static void test_search_outcome_warnings(void **state)
{
    (void)state;
    NEED_SERVER();
    fhir_client_config cfg;
    fhir_client *c = quirk_client("{\"search_warning\":{\"text\":\"parameter active is not "
                                  "indexed; results may be slow\"}}", &cfg);
    idset ids = {0};
    fhir_client_result *r = fhir_client_search_sync(c, "Patient?active=true&_count=250",
                                                    collect_ids, &ids);
    set_quirks(NULL);
    if (r->err.msg[0])
        fail_msg("search with warnings: %s", r->err.msg);
    assert_int_equal(r->stats.pages, 4);
    assert_int_equal(r->stats.outcome_issues, 4);
    assert_non_null(r->warnings);
    assert_string_equal(r->warnings, "warning informational: parameter active is not indexed; "
                                     "results may be slow\n");
    assert_int_equal(ids.n, N_PATIENTS);
    assert_int_equal(fhir_client_stats_get(c)->outcome_issues, 4);
    fhir_client_result_free(r);
    idset_free(&ids);

    r = fhir_client_search_sync(c, "Patient?active=true&_count=250", NULL, NULL);
    assert_null(r->warnings);
    assert_int_equal(r->stats.outcome_issues, 0);
    fhir_client_result_free(r);
    fhir_client_free(c);
}

/* Paging links on another origin: refused by default, naming that origin; followed when the
 * origin is configured as trusted. Log labels of absolute URLs show a path template. */
static void test_next_link_origins(void **state)
{
    (void)state;
    NEED_SERVER();
    fhir_client_config cfg;
    fhir_client *c = quirk_client("{\"paging_origin\":{\"origin\":\"alt\"}}", &cfg);
    idset ids = {0};
    fhir_client_result *r = fhir_client_search_sync(c, "Patient?_count=400", collect_ids, &ids);
    char want[400];
    snprintf(want, sizeof want, "search page 1: next link on origin %s refused: not the "
             "endpoint's origin %s", alt_origin, base);
    *strrchr(want, '/') = '\0'; /* base without /fhir */
    assert_string_equal(r->err.msg, want);
    assert_int_equal(ids.n, 400);
    fhir_client_result_free(r);
    idset_free(&ids);
    fhir_client_free(c);

    const char *trusted[] = {alt_origin};
    cfg.trusted_origins = trusted;
    cfg.n_trusted_origins = 1;
    c = client_or_fail(&cfg);
    r = fhir_client_search_sync(c, "Patient?_count=400", collect_ids, &ids);
    set_quirks(NULL);
    if (r->err.msg[0])
        fail_msg("search with a trusted origin: %s", r->err.msg);
    assert_int_equal(r->stats.pages, 3);
    assert_int_equal(distinct(&ids), N_PATIENTS);
    fhir_client_result_free(r);
    idset_free(&ids);

    /* an absolute URL on the trusted origin: the label is the origin plus a path template */
    char u[300];
    snprintf(u, sizeof u, "%s/fhir/Patient/nosuchpatient?x=1", alt_origin);
    fhir_client_request rq = {.path = u};
    r = fhir_client_send_sync(c, &rq);
    assert_int_equal(r->status, 404);
    snprintf(want, sizeof want, "GET %s/fhir/Patient/{}: HTTP 404", alt_origin);
    if (strncmp(r->err.msg, want, strlen(want)))
        fail_msg("label: %s (want %s...)", r->err.msg, want);
    fhir_client_result_free(r);
    fhir_client_free(c);

    /* a bad trusted origin is a configuration error */
    const char *bad[] = {"ftp://127.0.0.1"};
    cfg.trusted_origins = bad;
    fhir_error err = {0};
    assert_null(fhir_client_new(NULL, &cfg, &err));
    assert_string_equal(err.msg, "trusted origin 'ftp://127.0.0.1' is not an http(s) URL");
}

/* Bulk files with requiresAccessToken false on another origin (pre-signed URLs): fetched
 * without the Authorization header (the server answers 400 when one is sent), refused when
 * the caller did not say no_auth, and never over http when the endpoint is https. */
static void test_stream_no_auth_off_origin(void **state)
{
    (void)state;
    NEED_SERVER();
    clear_faults();
    set_quirks("{\"bulk_files\":{\"origin\":\"alt\",\"requires_access_token\":false}}");
    char tokfile[700];
    snprintf(tokfile, sizeof tokfile, "%s/bearer-noauth.txt", tmp);
    assert_int_equal(support_write_file(tokfile, "a-token-that-must-not-leave\n"), 0);
    fhir_client_config cfg = test_config(base);
    cfg.auth = (fhir_auth_config){.kind = FHIR_AUTH_BEARER, .bearer_file = tokfile};
    fhir_client *c = client_or_fail(&cfg);
    fhir_client_request kick = {.path = "Patient/$export?_type=Patient", .prefer = "respond-async",
                                .accept_202 = true};
    fhir_client_result *r = fhir_client_send_sync(c, &kick);
    assert_int_equal(r->status, 202);
    char status_url[FHIR_CLIENT_HEADER_MAX + 1];
    snprintf(status_url, sizeof status_url, "%s", r->content_location);
    fhir_client_result_free(r);
    fhir_client_request st = {.path = status_url, .accept = "application/json", .accept_202 = true};
    fhir_arena *ma = fhir_arena_new(0);
    char file_url[1024] = "";
    for (int i = 0; i < 100 && !file_url[0]; i++) {
        r = fhir_client_send_sync(c, &st);
        if (r->err.msg[0])
            fail_msg("status: %s", r->err.msg);
        if (r->status == 200) {
            assert_false(fhir_node_bool(fhir_node_get(r->body, "requiresAccessToken"), true));
            const fhir_node *out = fhir_node_first(fhir_node_get(r->body, "output"));
            snprintf(file_url, sizeof file_url, "%s", fhir_node_str(fhir_node_get(out, "url")));
        } else {
            usleep(100 * 1000);
        }
        fhir_client_result_free(r);
    }
    set_quirks(NULL);
    assert_int_equal(strncmp(file_url, alt_origin, strlen(alt_origin)), 0);

    /* with the endpoint's auth: refused before anything is sent, naming the origin */
    fhir_error err = {0};
    fhir_client_stream_request sr = {.url = file_url};
    assert_int_equal(fhir_client_get_stream(c, &sr, count_chunk_ud, stream_done, NULL, &err), -1);
    char want[400];
    snprintf(want, sizeof want, "URL on origin %s refused", alt_origin);
    if (strncmp(err.msg, want, strlen(want)))
        fail_msg("refusal: %s", err.msg);

    /* no_auth: downloaded; the server would answer 400 to an Authorization header */
    reset_stats(admin);
    size_t patients = 0;
    fhir_json_limits lim = {.max_bytes = 1u << 20};
    stream_count sc = {.nd = fhir_ndjson_new(&lim, count_line, NULL, &patients)};
    sr.no_auth = true;
    r = stream_sync(c, &sr, &sc);
    if (r->err.msg[0])
        fail_msg("no_auth download: %s", r->err.msg);
    assert_int_equal(fhir_ndjson_finish(sc.nd, &sc.err), 0);
    fhir_ndjson_free(sc.nd);
    assert_int_equal(patients, N_PATIENTS);
    assert_int_equal(admin_stat(admin, "files.by_status.200"), 1);
    assert_int_equal(admin_stat(admin, "files.by_status.400"), 0);
    fhir_client_result_free(r);

    /* a bad signature: the error names the origin and a path template, not the URL */
    char bad[1100];
    snprintf(bad, sizeof bad, "%.*s?sig=0", (int)strcspn(file_url, "?"), file_url);
    memset(&sc, 0, sizeof sc);
    fhir_client_stream_request bsr = {.url = bad, .no_auth = true};
    r = stream_sync(c, &bsr, &sc);
    assert_int_equal(r->status, 403);
    snprintf(want, sizeof want, "GET %s/files/{}/{}: HTTP 403", alt_origin);
    if (strncmp(r->err.msg, want, strlen(want)))
        fail_msg("label: %s (want %s...)", r->err.msg, want);
    fhir_client_result_free(r);

    fhir_client_request del = {.method = "DELETE", .path = status_url, .accept_202 = true};
    r = fhir_client_send_sync(c, &del);
    assert_int_equal(r->status, 202);
    fhir_client_result_free(r);
    fhir_client_free(c);
    fhir_arena_free(ma);

    /* an https endpoint never fetches a file over plain http, token or not */
    fhir_client_config hc = test_config("https://127.0.0.1:1/fhir");
    c = client_or_fail(&hc);
    fhir_client_stream_request plain = {.url = file_url, .no_auth = true};
    assert_int_equal(fhir_client_get_stream(c, &plain, count_chunk_ud, stream_done, NULL, &err),
                     -1);
    snprintf(want, sizeof want, "streaming GET: URL on origin %s refused: plain http while the "
             "endpoint uses https", alt_origin);
    assert_string_equal(err.msg, want);
    fhir_client_free(c);
}

/* ---- the CLI -------------------------------------------------------------------------- */

static void test_cli_search(void **state)
{
    (void)state;
    NEED_SERVER();
    clear_faults();
    const char *bin = getenv("CARTGATE_BIN");
    if (!bin)
        skip();
    char *argv[] = {(char *)bin, "fhir", "search", "--base", base, "--count", "37", "Patient",
                    NULL};
    char *out = NULL, *err = NULL;
    int rc = support_run(argv, &out, &err, 120);
    if (rc != 0)
        fail_msg("cartgate fhir search exited %d: %s", rc, err);
    size_t lines = 0;
    for (char *p = out; *p; p++)
        if (*p == '\n')
            lines++;
    assert_int_equal(lines, N_PATIENTS);
    assert_non_null(strstr(err, "pages=28 resources=1000"));
    free(out);
    free(err);

    /* usage errors exit 2; a permanent HTTP error exits 1 with the status in the message */
    char *bad[] = {(char *)bin, "fhir", "get", "Patient/1", NULL};
    assert_int_equal(support_run(bad, NULL, NULL, 30), 2);
    char *nf[] = {(char *)bin, "fhir", "get", "--base", base, "Patient/nope", NULL};
    rc = support_run(nf, NULL, &err, 30);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(err, "HTTP 404"));
    free(err);
}

/* Origins: normalised (lower case, default port), only absolute http(s) URLs. */
static void test_url_origin(void **state)
{
    (void)state;
    char o[64];
    assert_string_equal(fhir_client_url_origin("HTTPS://EHR.Example.org/fhir/P?x=1", o, sizeof o),
                        "https://ehr.example.org:443");
    assert_string_equal(fhir_client_url_origin("http://127.0.0.1/a", o, sizeof o),
                        "http://127.0.0.1:80");
    assert_string_equal(fhir_client_url_origin("http://127.0.0.1:8080", o, sizeof o),
                        "http://127.0.0.1:8080");
    assert_string_equal(fhir_client_url_origin("http://u:p@files.example:81/x", o, sizeof o),
                        "http://files.example:81");
    assert_null(fhir_client_url_origin("ftp://files.example/x", o, sizeof o));
    assert_null(fhir_client_url_origin("Patient/1", o, sizeof o));
    assert_null(fhir_client_url_origin("https://a-very-long-host-name.example.org/", o, 20));
}

/* `cartgate fhir search` on a truncated result: exit 1 and the reason on stderr; searchset
 * warnings on stderr, never among the resources on stdout. */
static void test_cli_search_incomplete(void **state)
{
    (void)state;
    NEED_SERVER();
    clear_faults();
    const char *bin = getenv("CARTGATE_BIN");
    if (!bin)
        skip();
    set_quirks("{\"search_truncate\":{\"page\":2,\"types\":[\"Patient\"]},"
               "\"search_warning\":{\"text\":\"results may be incomplete\"}}");
    char *argv[] = {(char *)bin, "fhir", "search", "--base", base, "--count", "300", "Patient",
                    NULL};
    char *out = NULL, *err = NULL;
    int rc = support_run(argv, &out, &err, 120);
    set_quirks(NULL);
    assert_int_equal(rc, 1);
    size_t lines = 0;
    for (char *p = out; *p; p++)
        if (*p == '\n')
            lines++;
    assert_int_equal(lines, 600);
    assert_null(strstr(out, "OperationOutcome"));
    if (!strstr(err, "cartgate fhir search: server warning: warning informational: results may "
                     "be incomplete\n") ||
        !strstr(err, "cartgate fhir search: incomplete result (600 resources printed): search "
                     "incomplete: 600 of 1000 matches received (Bundle.total) and page 2 has "
                     "no next link\n"))
        fail_msg("stderr: %s", err);
    free(out);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paging_1000_at_37),
        cmocka_unit_test(test_paging_asks_ahead),
        cmocka_unit_test(test_paging_under_faults),
        cmocka_unit_test(test_retry_after_honoured),
        cmocka_unit_test(test_conditional_create_after_fault),
        cmocka_unit_test(test_byte_cap),
        cmocka_unit_test(test_permanent_400_not_retried),
        cmocka_unit_test(test_concurrent_reads),
        cmocka_unit_test(test_smart),
        cmocka_unit_test(test_tls_verification),
        cmocka_unit_test(test_cli_search),
        cmocka_unit_test(test_free_with_pending),
        cmocka_unit_test(test_bulk_export_stream_bearer),
        cmocka_unit_test(test_stream_no_retry_after_first_byte),
        cmocka_unit_test(test_search_truncated_fails),
        cmocka_unit_test(test_search_outcome_warnings),
        cmocka_unit_test(test_next_link_origins),
        cmocka_unit_test(test_stream_no_auth_off_origin),
        cmocka_unit_test(test_cli_search_incomplete),
        cmocka_unit_test(test_url_origin),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
