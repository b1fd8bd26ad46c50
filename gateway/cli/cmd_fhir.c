/* cmd_fhir — `cartgate fhir`: curl for FHIR with auth, paging and retries.
 *
 *   cartgate fhir get|search|post|put|transaction --base URL [auth] [options] PATH [--data F|-]
 *
 * get/post/put/transaction print the response body on stdout (pretty, in --format's syntax;
 * --data may be JSON or XML); search prints
 * every resource of every page as NDJSON on stdout and a summary on stderr; OperationOutcome
 * entries of the searchset go to stderr as server warnings, and a truncated result (fewer
 * matches than Bundle.total, a refused next link, a failed page) exits 1 saying why. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "fhir_client.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_xml.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cartgate fhir get|search|post|put|transaction --base URL [options] PATH\n"
            "  PATH                      relative to the base: Patient/1, Patient?name=x, metadata\n"
            "                            (transaction: no PATH)\n"
            "auth (one of):\n"
            "  --auth-bearer-file F      bearer token from the first line of F\n"
            "  --auth-bearer-env VAR     bearer token from environment variable VAR\n"
            "  --auth-basic-user U --auth-basic-pass-env VAR   HTTP Basic\n"
            "  --smart-client-id ID --smart-key PEM --smart-kid KID [--smart-alg RS384|ES384]\n"
            "      [--smart-scope S] [--smart-token-url URL]   SMART Backend Services\n"
            "options:\n"
            "  --format json|xml         wire format (default json)\n"
            "  --cacert F                CA bundle for TLS verification (always on)\n"
            "  --cert F --key F          client certificate (mTLS)\n"
            "  --timeout S               per-attempt timeout in seconds (default 60)\n"
            "  --retries N               attempts per request incl. the first (default 5)\n"
            "  --max-pages N             search page cap (default 1000; hitting it fails)\n"
            "  --count N                 search: add _count=N to the first page\n"
            "  --max-bytes N             largest response body (default 64 MiB)\n"
            "  --if-none-exist Q         post: conditional create\n"
            "  --data FILE|-             request body (post, put, transaction)\n");
}

typedef struct search_out {
    size_t resources;
    int write_error;
} search_out;

static int print_page(void *ud, const fhir_node *bundle, unsigned page_no)
{
    search_out *so = ud;
    fhir_buf b;
    fhir_buf_init(&b, 0);
    for (const fhir_node *e = fhir_node_first(fhir_node_get(bundle, "entry")); e; e = e->next) {
        const fhir_node *r = fhir_node_get(e, "resource");
        if (!r)
            continue;
        /* searchset OperationOutcomes are messages, not results (the client reports them) */
        const char *mode = fhir_node_path_str(e, "search.mode");
        const char *rt = fhir_node_resource_type(r);
        if (mode ? !strcmp(mode, "outcome") : (rt && !strcmp(rt, "OperationOutcome")))
            continue;
        fhir_buf_reset(&b);
        fhir_json_write(&b, r, FHIR_JSON_COMPACT);
        fhir_buf_putc(&b, '\n');
        if (fwrite(b.data, 1, b.len, stdout) != b.len)
            so->write_error = 1;
        so->resources++;
    }
    fhir_buf_free(&b);
    return so->write_error;
}

/* Reads FILE or "-" (stdin) and parses JSON or XML (detected from the content). */
static fhir_node *read_body(fhir_arena *a, const char *path, fhir_error *err)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fhir_error_set(err, "cannot open");
        return NULL;
    }
    fhir_buf b;
    fhir_buf_init(&b, FHIR_JSON_DEFAULT_MAX_BYTES);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (fhir_buf_append(&b, chunk, n) < 0)
            break;
    bool rerr = ferror(f);
    if (f != stdin)
        fclose(f);
    fhir_node *res = NULL;
    if (rerr)
        fhir_error_set(err, "read error");
    else if (b.overflow)
        fhir_error_set(err, "larger than %u bytes", FHIR_JSON_DEFAULT_MAX_BYTES);
    else
        res = fhir_xml_parse_any(a, b.data ? b.data : "", b.len, NULL, err);
    fhir_buf_free(&b);
    return res;
}

enum {
    OPT_BASE = 256, OPT_BEARER_FILE, OPT_BEARER_ENV, OPT_BASIC_USER, OPT_BASIC_PASS_ENV,
    OPT_SMART_ID, OPT_SMART_KEY, OPT_SMART_KID, OPT_SMART_ALG, OPT_SMART_SCOPE,
    OPT_SMART_TOKEN_URL, OPT_FORMAT, OPT_CACERT, OPT_CERT, OPT_KEY, OPT_TIMEOUT, OPT_RETRIES,
    OPT_MAX_PAGES, OPT_COUNT, OPT_DATA, OPT_MAX_BYTES, OPT_IF_NONE_EXIST, OPT_HELP,
};

static bool parse_ulong(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int cmd_fhir(int argc, char **argv)
{
    static const struct option opts[] = {
        {"base", required_argument, NULL, OPT_BASE},
        {"auth-bearer-file", required_argument, NULL, OPT_BEARER_FILE},
        {"auth-bearer-env", required_argument, NULL, OPT_BEARER_ENV},
        {"auth-basic-user", required_argument, NULL, OPT_BASIC_USER},
        {"auth-basic-pass-env", required_argument, NULL, OPT_BASIC_PASS_ENV},
        {"smart-client-id", required_argument, NULL, OPT_SMART_ID},
        {"smart-key", required_argument, NULL, OPT_SMART_KEY},
        {"smart-kid", required_argument, NULL, OPT_SMART_KID},
        {"smart-alg", required_argument, NULL, OPT_SMART_ALG},
        {"smart-scope", required_argument, NULL, OPT_SMART_SCOPE},
        {"smart-token-url", required_argument, NULL, OPT_SMART_TOKEN_URL},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"cacert", required_argument, NULL, OPT_CACERT},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"retries", required_argument, NULL, OPT_RETRIES},
        {"max-pages", required_argument, NULL, OPT_MAX_PAGES},
        {"count", required_argument, NULL, OPT_COUNT},
        {"max-bytes", required_argument, NULL, OPT_MAX_BYTES},
        {"if-none-exist", required_argument, NULL, OPT_IF_NONE_EXIST},
        {"data", required_argument, NULL, OPT_DATA},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *verb = argv[1];
    if (strcmp(verb, "get") && strcmp(verb, "search") && strcmp(verb, "post") &&
        strcmp(verb, "put") && strcmp(verb, "transaction")) {
        fprintf(stderr, "cartgate fhir: unknown action '%s'\n", verb);
        usage(stderr);
        return 2;
    }
    fhir_client_config cfg = {.name = "cli"};
    const char *data = NULL, *if_none_exist = NULL, *format = "json";
    unsigned long count = 0, v;
    bool have_count = false;
    optind = 2;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case OPT_BASE: cfg.base_url = optarg; break;
        case OPT_BEARER_FILE: cfg.auth.kind = FHIR_AUTH_BEARER; cfg.auth.bearer_file = optarg; break;
        case OPT_BEARER_ENV: cfg.auth.kind = FHIR_AUTH_BEARER; cfg.auth.bearer_env = optarg; break;
        case OPT_BASIC_USER: cfg.auth.kind = FHIR_AUTH_BASIC; cfg.auth.basic_user = optarg; break;
        case OPT_BASIC_PASS_ENV: cfg.auth.basic_pass_env = optarg; break;
        case OPT_SMART_ID: cfg.auth.kind = FHIR_AUTH_SMART; cfg.auth.smart_client_id = optarg; break;
        case OPT_SMART_KEY: cfg.auth.smart_key_file = optarg; break;
        case OPT_SMART_KID: cfg.auth.smart_kid = optarg; break;
        case OPT_SMART_ALG: cfg.auth.smart_alg = optarg; break;
        case OPT_SMART_SCOPE: cfg.auth.smart_scope = optarg; break;
        case OPT_SMART_TOKEN_URL: cfg.auth.smart_token_url = optarg; break;
        case OPT_FORMAT: format = optarg; break;
        case OPT_CACERT: cfg.ca_file = optarg; break;
        case OPT_CERT: cfg.cert_file = optarg; break;
        case OPT_KEY: cfg.key_file = optarg; break;
        case OPT_DATA: data = optarg; break;
        case OPT_IF_NONE_EXIST: if_none_exist = optarg; break;
        case OPT_TIMEOUT:
            if (!parse_ulong(optarg, 1, 86400, &v)) goto bad_num;
            cfg.total_timeout_ms = (long)v * 1000;
            break;
        case OPT_RETRIES:
            if (!parse_ulong(optarg, 1, 100, &v)) goto bad_num;
            cfg.retry.max_attempts = (unsigned)v;
            break;
        case OPT_MAX_PAGES:
            if (!parse_ulong(optarg, 1, 10000000, &v)) goto bad_num;
            cfg.max_pages = (unsigned)v;
            break;
        case OPT_COUNT:
            if (!parse_ulong(optarg, 1, 100000, &count)) goto bad_num;
            have_count = true;
            break;
        case OPT_MAX_BYTES:
            if (!parse_ulong(optarg, 1, (unsigned long)1 << 40, &v)) goto bad_num;
            cfg.max_response_bytes = (size_t)v;
            break;
        case OPT_HELP: usage(stdout); return 0;
        default:
            fprintf(stderr, "cartgate fhir: unknown or incomplete option '%s'\n", argv[optind - 1]);
            return 2;
        bad_num:
            fprintf(stderr, "cartgate fhir: bad number '%s' for %s\n", optarg, argv[optind - 1]);
            return 2;
        }
    }
    if (!cfg.base_url) {
        fprintf(stderr, "cartgate fhir: --base URL is required\n");
        return 2;
    }
    if ((cfg.auth.basic_pass_env && cfg.auth.kind != FHIR_AUTH_BASIC) ||
        ((cfg.auth.smart_key_file || cfg.auth.smart_kid || cfg.auth.smart_alg ||
          cfg.auth.smart_scope || cfg.auth.smart_token_url) &&
         cfg.auth.kind != FHIR_AUTH_SMART)) {
        fprintf(stderr, "cartgate fhir: --auth-basic-pass-env needs --auth-basic-user, and "
                        "--smart-* options need --smart-client-id (one auth method only)\n");
        return 2;
    }
    if (!strcmp(format, "xml"))
        cfg.format = FHIR_FORMAT_XML;
    else if (strcmp(format, "json")) {
        fprintf(stderr, "cartgate fhir: --format must be json or xml\n");
        return 2;
    }
    const char *path = NULL;
    if (optind < argc)
        path = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "cartgate fhir: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    bool is_tx = !strcmp(verb, "transaction");
    if (!path && !is_tx) {
        fprintf(stderr, "cartgate fhir %s: PATH is required\n", verb);
        return 2;
    }
    bool needs_body = is_tx || !strcmp(verb, "post") || !strcmp(verb, "put");
    if (needs_body != (data != NULL)) {
        fprintf(stderr, "cartgate fhir %s: --data %s\n", verb,
                needs_body ? "FILE|- is required" : "is only for post, put and transaction");
        return 2;
    }

    fhir_error err = {{0}, 0};
    fhir_client *c = fhir_client_new(NULL, &cfg, &err);
    if (!c) {
        fprintf(stderr, "cartgate fhir: %s\n", err.msg);
        return 1;
    }
    int rc = 1;
    fhir_arena *a = fhir_arena_new(0);
    int64_t t0 = fhir_clock_mono_ms();
    fhir_client_result *res = NULL;
    if (!strcmp(verb, "search")) {
        char *q = NULL;
        if (have_count) {
            size_t n = strlen(path) + 32;
            q = malloc(n);
            if (!q)
                abort();
            snprintf(q, n, "%s%s_count=%lu", path, strchr(path, '?') ? "&" : "?", count);
        }
        search_out so = {0};
        res = fhir_client_search_sync(c, q ? q : path, print_page, &so);
        free(q);
        fflush(stdout);
        const fhir_client_stats *st = &res->stats;
        fprintf(stderr,
                "search: pages=%u resources=%zu attempts=%u retries=%u auth_retries=%u "
                "token_fetches=%u bytes=%" PRIu64 " elapsed_ms=%" PRId64 "%s%s\n",
                st->pages, so.resources, st->attempts, st->retries, st->auth_retries,
                fhir_client_stats_get(c)->token_fetches, st->bytes_in,
                fhir_clock_mono_ms() - t0, res->err.msg[0] ? " error=" : "",
                res->err.msg[0] ? res->err.msg : "");
        for (const char *w = res->warnings; w && *w;) {
            size_t n = strcspn(w, "\n");
            fprintf(stderr, "cartgate fhir search: server warning: %.*s\n", (int)n, w);
            w += n + (w[n] == '\n');
        }
        if (res->err.msg[0])
            fprintf(stderr, "cartgate fhir search: incomplete result (%zu resources printed): %s\n",
                    so.resources, res->err.msg);
        rc = res->err.msg[0] || so.write_error ? 1 : 0;
        goto out;
    }
    fhir_client_request req = {.path = path ? path : ""};
    if (needs_body) {
        fhir_node *body = read_body(a, data, &err);
        if (!body) {
            fprintf(stderr, "cartgate fhir: %s: %s\n", data, err.msg);
            goto out;
        }
        req.resource = body;
        req.method = !strcmp(verb, "put") ? "PUT" : "POST";
        req.if_none_exist = if_none_exist;
        /* a plain create is not idempotent: retried only when surely not processed */
        req.not_idempotent = !strcmp(verb, "post") && !if_none_exist;
    } else {
        req.method = "GET";
    }
    res = fhir_client_send_sync(c, &req);
    if (res->body) {
        fhir_buf b;
        fhir_buf_init(&b, 0);
        fhir_error werr = {{0}, 0};
        int wrc = -1;
        if (cfg.format == FHIR_FORMAT_XML)
            wrc = fhir_xml_write(&b, res->body, FHIR_XML_PRETTY, &werr);
        if (wrc < 0) { /* JSON, or XML the writer refused: show the tree as JSON */
            fhir_buf_reset(&b);
            fhir_json_write(&b, res->body, FHIR_JSON_PRETTY);
        }
        fwrite(b.data, 1, b.len, stdout);
        fhir_buf_free(&b);
    }
    fprintf(stderr, "%s: status=%ld attempts=%u retries=%u%s%s%s%s\n", verb, res->status,
            res->stats.attempts, res->stats.retries, res->location ? " location=" : "",
            res->location ? res->location : "", res->err.msg[0] ? " error=" : "",
            res->err.msg[0] ? res->err.msg : "");
    rc = res->err.msg[0] ? 1 : 0;
out:
    fhir_client_result_free(res);
    fhir_arena_free(a);
    fhir_client_free(c);
    return rc;
}
