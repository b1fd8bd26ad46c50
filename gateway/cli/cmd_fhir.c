/* cmd_fhir — `cartgate fhir`: curl for FHIR with auth, paging and retries.
 *
 *   cartgate fhir get|search|post|put|transaction --base URL [auth] [options] PATH [--data F|-]
 *
 * get/post/put/transaction print the response body on stdout (pretty, in --format's syntax;
 * --data may be JSON or XML); search prints
 * every resource of every page as NDJSON on stdout and a summary on stderr; OperationOutcome
 * entries of the searchset go to stderr as server warnings, and a truncated result (fewer
 * matches than Bundle.total, a refused next link, a failed page) exits 1 saying why. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_opt.h"
#include "cmd.h"
#include "fhir_client.h"
#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_xml.h"

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

int cmd_fhir(int argc, char **argv)
{
    fhir_client_config cfg = {.name = "cli"};
    fhir_auth_config *au = &cfg.auth;
    const char *data = NULL, *if_none_exist = NULL;
    int format = 0; /* json */
    long long timeout = 0, retries = 0, max_pages = 0, count = 0, max_bytes = 0;
    const cli_cmd cmd = {
        .name = "fhir", .args = "ACTION [PATH]", .min_args = 1, .max_args = 2,
        .synopsis = "cartgate fhir get|search|post|put|transaction --base URL [options] [PATH]",
        .about = "curl for FHIR with auth, paging and retries. PATH is relative to the base:\n"
                 "Patient/1, Patient?name=x, metadata (transaction: no PATH). get, post, put and\n"
                 "transaction print the response body (pretty, in --format's syntax); search\n"
                 "prints every resource of every page as NDJSON, and a summary on stderr.",
        .notes = "One auth method at most: bearer (--auth-bearer-*), HTTP Basic (--auth-basic-*)\n"
                 "or SMART Backend Services (--smart-*).",
        .opts = (const cli_opt[]){
            {.name = "base", .kind = CLI_STR, .out = &cfg.base_url, .arg = "URL", .required = true,
             .help = "FHIR base URL (http or https)"},
            {.name = "auth-bearer-file", .kind = CLI_PATH, .out = &au->bearer_file, .arg = "F",
             .help = "bearer token from the first line of F"},
            {.name = "auth-bearer-env", .kind = CLI_STR, .out = &au->bearer_env, .arg = "VAR",
             .help = "bearer token from environment variable VAR"},
            {.name = "auth-basic-user", .kind = CLI_STR, .out = &au->basic_user, .arg = "U",
             .help = "HTTP Basic user (password: --auth-basic-pass-env)"},
            {.name = "auth-basic-pass-env", .kind = CLI_STR, .out = &au->basic_pass_env,
             .arg = "VAR",
             .help = "HTTP Basic password from environment variable VAR"},
            {.name = "smart-client-id", .kind = CLI_STR, .out = &au->smart_client_id, .arg = "ID",
             .help = "SMART Backend Services client id (with --smart-key, --smart-kid)"},
            {.name = "smart-key", .kind = CLI_PATH, .out = &au->smart_key_file, .arg = "PEM",
             .help = "SMART: private key (RSA >= 2048 bits or EC P-384)"},
            {.name = "smart-kid", .kind = CLI_STR, .out = &au->smart_kid, .arg = "KID",
             .help = "SMART: kid of the registered public key"},
            {.name = "smart-alg", .kind = CLI_STR, .out = &au->smart_alg, .arg = "RS384|ES384",
             .def = "from the key type", .help = "SMART: signing algorithm"},
            {.name = "smart-scope", .kind = CLI_STR, .out = &au->smart_scope, .arg = "S",
             .help = "SMART: scope (default: system read+search on all types)"},
            {.name = "smart-token-url", .kind = CLI_STR, .out = &au->smart_token_url, .arg = "URL",
             .def = "discovered", .help = "SMART: token endpoint"},
            {.name = "format", .kind = CLI_ENUM, .out = &format, .arg = "json|xml", .def = "json",
             .help = "wire format"},
            {.name = "cacert", .kind = CLI_PATH, .out = &cfg.ca_file, .arg = "F",
             .help = "CA bundle for TLS verification (always on)"},
            {.name = "cert", .kind = CLI_PATH, .out = &cfg.cert_file, .arg = "F",
             .help = "client certificate (mTLS), with --key"},
            {.name = "key", .kind = CLI_PATH, .out = &cfg.key_file, .arg = "F",
             .help = "the client certificate's private key"},
            {.name = "timeout", .kind = CLI_INT, .out = &timeout, .arg = "S", .min = 1,
             .max = 86400,
             .def = "60", .help = "per-attempt timeout in seconds"},
            {.name = "retries", .kind = CLI_INT, .out = &retries, .arg = "N", .min = 1, .max = 100,
             .def = "5", .help = "attempts per request incl. the first"},
            {.name = "max-pages", .kind = CLI_INT, .out = &max_pages, .arg = "N", .min = 1,
             .max = 10000000, .def = "1000", .help = "search page cap (hitting it fails)"},
            {.name = "count", .kind = CLI_INT, .out = &count, .arg = "N", .min = 1, .max = 100000,
             .help = "search: add _count=N to the first page"},
            {.name = "max-bytes", .kind = CLI_INT, .out = &max_bytes, .arg = "N", .min = 1,
             .max = 1LL << 40, .def = "64 MiB", .help = "largest response body"},
            {.name = "if-none-exist", .kind = CLI_STR, .out = &if_none_exist, .arg = "Q",
             .help = "post: conditional create"},
            {.name = "data", .kind = CLI_STR, .out = &data, .arg = "FILE|-",
             .help = "request body, JSON or XML (post, put, transaction)"},
            {0},
        },
    };
    int first, prc = cli_parse(&cmd, argc, argv, &first);
    if (prc != CLI_GO)
        return prc;
    const char *verb = argv[first];
    const char *path = first + 1 < argc ? argv[first + 1] : NULL;
    if (strcmp(verb, "get") && strcmp(verb, "search") && strcmp(verb, "post") &&
        strcmp(verb, "put") && strcmp(verb, "transaction"))
        return cli_error(&cmd, "unknown action '%s' (get, search, post, put, transaction)", verb);
    int methods = (au->bearer_file || au->bearer_env) + !!au->basic_user + !!au->smart_client_id;
    if (methods > 1)
        return cli_error(&cmd, "one auth method only (bearer, Basic or SMART)");
    if (au->bearer_file || au->bearer_env)
        au->kind = FHIR_AUTH_BEARER;
    else if (au->basic_user)
        au->kind = FHIR_AUTH_BASIC;
    else if (au->smart_client_id)
        au->kind = FHIR_AUTH_SMART;
    if ((au->basic_pass_env && au->kind != FHIR_AUTH_BASIC) ||
        ((au->smart_key_file || au->smart_kid || au->smart_alg || au->smart_scope ||
          au->smart_token_url) && au->kind != FHIR_AUTH_SMART))
        return cli_error(&cmd, "--auth-basic-pass-env needs --auth-basic-user, and --smart-* "
                               "options need --smart-client-id");
    if (format == 1)
        cfg.format = FHIR_FORMAT_XML;
    cfg.total_timeout_ms = (long)timeout * 1000;
    cfg.retry.max_attempts = (unsigned)retries;
    cfg.max_pages = (unsigned)max_pages;
    cfg.max_response_bytes = (size_t)max_bytes;
    bool is_tx = !strcmp(verb, "transaction");
    if (!path && !is_tx)
        return cli_error(&cmd, "%s: PATH is required", verb);
    bool needs_body = is_tx || !strcmp(verb, "post") || !strcmp(verb, "put");
    if (needs_body != (data != NULL))
        return cli_error(&cmd, "%s: --data %s", verb,
                         needs_body ? "FILE|- is required" : "is only for post, put and transaction");

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
        if (count) {
            size_t n = strlen(path) + 32;
            q = malloc(n);
            if (!q)
                abort();
            snprintf(q, n, "%s%s_count=%lld", path, strchr(path, '?') ? "&" : "?", count);
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
        fhir_node *body = fhir_xml_parse_any_file(a, data, NULL, &err);
        if (!body) {
            fprintf(stderr, "cartgate fhir: %s\n", err.msg);
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
