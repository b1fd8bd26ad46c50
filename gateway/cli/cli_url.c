/* cli_url — the admin API base URL through libcurl's URL API (see cli_url.h). */
#include "cli_url.h"

#include <curl/curl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fhir_url.h"

struct cli_url {
    CURLU *h;                 /* the base; its path ends in '/' */
    char origin[CLI_URL_MAX]; /* scheme://host[:port] */
};

bool cli_url_host_is_loopback(const char *host)
{
    return fhir_url_host_is_loopback(host);
}

/* Whether the URL has part p (CURLUE_NO_* when not). */
static bool has_part(CURLU *h, CURLUPart p)
{
    char *v = NULL;
    CURLUcode rc = curl_url_get(h, p, &v, 0);
    curl_free(v);
    return rc == CURLUE_OK;
}

/* Checks the parsed URL h against the rules of cli_url_admin and makes its path a folder;
 * fills origin. NULL when accepted, else why not. */
static const char *admin_rules(CURLU *h, char *origin, size_t n)
{
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    const char *why = NULL;
    if (curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_PATH, &path, 0) != CURLUE_OK)
        why = "not a URL with a host";
    else if (strcasecmp(scheme, "https") &&
             (strcasecmp(scheme, "http") || !cli_url_host_is_loopback(host)))
        why = "only https:// or http:// to a loopback address (127.x, localhost, [::1])";
    else if (has_part(h, CURLUPART_USER) || has_part(h, CURLUPART_PASSWORD))
        why = "no credentials in the URL (the token comes from --token-file or --token-env)";
    else if (has_part(h, CURLUPART_QUERY) || has_part(h, CURLUPART_FRAGMENT))
        why = "no query or fragment in the base URL";
    if (!why) {
        /* a base path is a folder (one trailing '/'): relative API paths go below it */
        size_t pl = strlen(path);
        while (pl && path[pl - 1] == '/')
            pl--;
        char dir[CLI_URL_MAX + 1];
        snprintf(dir, sizeof dir, "%.*s/", (int)pl, path);
        if (curl_url_set(h, CURLUPART_PATH, dir, 0) != CURLUE_OK)
            abort(); /* a path curl itself returned: out of memory */
        curl_url_get(h, CURLUPART_PORT, &port, 0); /* CURLUE_NO_PORT when not in the URL */
        snprintf(origin, n, "%s://%s%s%s", scheme, host, port ? ":" : "", port ? port : "");
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    return why;
}

cli_url *cli_url_admin(const char *url, fhir_error *err)
{
    if (strlen(url) >= CLI_URL_MAX) {
        fhir_error_set(err, "--admin: URL longer than %d bytes", CLI_URL_MAX - 1);
        return NULL;
    }
    cli_url *u = calloc(1, sizeof *u);
    if (!u || !(u->h = curl_url()))
        abort(); /* out of memory */
    CURLUcode rc = curl_url_set(u->h, CURLUPART_URL, url, 0);
    const char *why = rc != CURLUE_OK ? NULL : admin_rules(u->h, u->origin, sizeof u->origin);
    if (rc != CURLUE_OK)
        fhir_error_set(err, "--admin %s: not a URL (%s)", url, curl_url_strerror(rc));
    else if (why)
        fhir_error_set(err, "--admin %s: %s", url, why);
    if (rc != CURLUE_OK || why) {
        cli_url_free(u);
        return NULL;
    }
    return u;
}

void cli_url_free(cli_url *u)
{
    if (!u)
        return;
    curl_url_cleanup(u->h);
    free(u);
}

const char *cli_url_origin(const cli_url *u)
{
    return u->origin;
}

char *cli_url_join(const cli_url *u, const char *rel, fhir_error *err)
{
    CURLU *j = curl_url_dup(u->h);
    if (!j)
        abort();
    char *s = NULL, *out = NULL;
    CURLUcode rc = curl_url_set(j, CURLUPART_URL, rel, 0);
    if (rc == CURLUE_OK)
        rc = curl_url_get(j, CURLUPART_URL, &s, 0);
    if (rc != CURLUE_OK)
        fhir_error_set(err, "cannot join \"%s\" to the admin URL: %s", rel, curl_url_strerror(rc));
    else if (strlen(s) >= CLI_URL_MAX)
        fhir_error_set(err, "admin API URL longer than %d bytes", CLI_URL_MAX - 1);
    else if (!(out = strdup(s)))
        abort();
    curl_free(s);
    curl_url_cleanup(j);
    return out;
}
