/* cli_api — the operator commands' admin API client (see cli_api.h). */
#include "cli_api.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fhir_json.h"

/* The token: the first line of token_file, else the variable. 0, or -1 with err. */
static int read_token(cli_api *c, const char *token_file, const char *token_env, fhir_error *err)
{
    char tok[CLI_API_TOKEN_MAX + 2] = "";
    if (token_file) {
        FILE *f = fopen(token_file, "r");
        if (!f)
            return fhir_error_set(err, "--token-file %s: cannot open", token_file);
        if (!fgets(tok, sizeof tok, f))
            tok[0] = 0;
        fclose(f);
    } else {
        /* --token-env, else the person's own token, else the shared service token */
        const char *var = token_env;
        if (!var)
            var = getenv("CARTGATE_TOKEN") && *getenv("CARTGATE_TOKEN") ? "CARTGATE_TOKEN" : "CARTGATE_ADMIN_TOKEN";
        const char *v = getenv(var);
        if (!v || !*v)
            return fhir_error_set(err, "no API token: set %s (your token: cartgate users token NAME) or use "
                                       "--token-file F / --token-env VAR",
                                  token_env ? var : "CARTGATE_TOKEN");
        if (strlen(v) > CLI_API_TOKEN_MAX)
            return fhir_error_set(err, "admin token in %s is longer than %d bytes", var, CLI_API_TOKEN_MAX);
        snprintf(tok, sizeof tok, "%s", v);
    }
    size_t n = strlen(tok);
    while (n && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' ' || tok[n - 1] == '\t'))
        tok[--n] = 0;
    if (n == 0)
        return fhir_error_set(err, "admin token is empty%s%s", token_file ? " in " : "",
                              token_file ? token_file : "");
    if (n > CLI_API_TOKEN_MAX)
        return fhir_error_set(err, "admin token is longer than %d bytes", CLI_API_TOKEN_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)tok[i] < 0x21 || tok[i] == 0x7f)
            return fhir_error_set(err, "admin token contains a space or control character");
    snprintf(c->auth, sizeof c->auth, "Authorization: Bearer %s", tok);
    memset(tok, 0, sizeof tok);
    return 0;
}

const char *cli_api_target(const char **admin, const char *db)
{
    const char *env = getenv("CARTGATE_ADMIN_URL");
    if (!db && !*admin && env && *env)
        *admin = env;
    if (db && *admin)
        return "use either --db FILE or --admin URL, not both";
    if (!db && !*admin)
        return "--admin URL (or $CARTGATE_ADMIN_URL) or --db FILE is required";
    return NULL;
}

int cli_api_open(cli_api *c, const char *url, const char *token_file, const char *token_env,
                 const char *ca_file, fhir_error *err)
{
    memset(c, 0, sizeof *c);
    c->ca_file = ca_file;
    if (!(c->base = cli_url_admin(url, err)))
        return -1;
    if (read_token(c, token_file, token_env, err)) {
        cli_api_close(c);
        return -1;
    }
    return 0;
}

void cli_api_close(cli_api *c)
{
    memset(c->auth, 0, sizeof c->auth);
    cli_url_free(c->base);
    c->base = NULL;
}

static size_t api_write(char *p, size_t size, size_t nmemb, void *ud)
{
    fhir_buf *b = ud;
    size_t n = size * nmemb;
    if (fhir_buf_append(b, p, n) != 0 || b->overflow)
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    return n;
}

/* The "message" of the API's {"error":{...}} body, or a short excerpt of the body; arena a. */
static const char *api_error_message(fhir_arena *a, const fhir_buf *b)
{
    fhir_error e = {0};
    fhir_node *n = b->len ? fhir_json_parse(a, b->data, b->len, NULL, &e) : NULL;
    const char *m = fhir_node_path_str(n, "error.message");
    if (m)
        return m;
    return b->len ? fhir_arena_sprintf(a, "%.200s", b->data) : "(empty body)";
}

int cli_api_call(const cli_api *c, const char *method, const char *path, const char *body,
                 const cli_api_about *about, fhir_buf *out, long *status, fhir_error *err)
{
    *status = 0;
    static bool inited;
    if (!inited) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return fhir_error_set(err, "curl_global_init failed");
        inited = true;
    }
    char *url = cli_url_join(c->base, path, err);
    if (!url)
        return -1;
    CURL *h = curl_easy_init();
    if (!h) {
        free(url);
        return fhir_error_set(err, "curl_easy_init failed");
    }
    struct curl_slist *hd = curl_slist_append(NULL, c->auth);
    hd = curl_slist_append(hd, "Accept: application/json");
    if (body)
        hd = curl_slist_append(hd, "Content-Type: application/json");
    if (c->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    char ebuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, api_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 120000L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)CLI_API_RESP_MAX);
    if (!strcmp(method, "POST")) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
    }
    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    if (cc != CURLE_OK) {
        const char *why = *ebuf ? ebuf : curl_easy_strerror(cc);
        if (cc == CURLE_COULDNT_CONNECT)
            fhir_error_set(err, "cannot connect to the admin API at %s (is the daemon running?): %s",
                           cli_url_origin(c->base), why);
        else if ((cc == CURLE_WRITE_ERROR && out->overflow) || cc == CURLE_FILESIZE_EXCEEDED)
            fhir_error_set(err, "admin API answer larger than %u bytes", CLI_API_RESP_MAX);
        else
            fhir_error_set(err, "admin API %s %s: %s", method, url, why);
        free(url);
        return -1;
    }
    free(url);
    if (*status >= 200 && *status < 300)
        return 0;
    fhir_arena *a = fhir_arena_new(0);
    const char *m = api_error_message(a, out);
    char what[160] = "";
    if (about && about->what)
        snprintf(what, sizeof what, "%s: ", about->what);
    switch (*status) {
    case 401:
        fhir_error_set(err, "401 Unauthorized: the admin API refused the token (check --token-file / "
                            "--token-env): %s", m);
        break;
    case 403:
        fhir_error_set(err, "403 Forbidden: %s%s", what, m);
        break;
    case 400:
        fhir_error_set(err, "400 Bad Request: %s%s", what, m);
        break;
    case 404:
        fhir_error_set(err, "404 Not Found: %s%s", what, m);
        break;
    case 409:
        fhir_error_set(err, "409 Conflict: %s%s%s%s", what, about && about->conflict ? about->conflict : "",
                       about && about->conflict ? ": " : "", m);
        break;
    default:
        fhir_error_set(err, "HTTP %ld from the admin API (%s %s): %s", *status, method, path, m);
    }
    fhir_arena_free(a);
    return -1;
}

fhir_node *cli_api_parse(fhir_arena *a, const fhir_buf *b, fhir_error *err)
{
    fhir_node *n = fhir_json_parse(a, b->len ? b->data : "", b->len, NULL, err);
    if (!n)
        fhir_error_prefix(err, "admin API answer is not JSON: ");
    return n;
}
