/* cli_url — the base URL of the daemon's admin API as the operator CLI uses it, handled with
 * libcurl's URL API (CURLU) rather than by hand: parsing, the scheme rule (http only to a
 * loopback host, so the bearer token never crosses a network in clear; https anywhere),
 * joining an API path onto the base, and the origin named in messages. */
#ifndef CLI_URL_H
#define CLI_URL_H

#include <stdbool.h>

#include "fhir_error.h"

#define CLI_URL_MAX 2048 /* bytes of a base URL, and of a joined URL */

typedef struct cli_url cli_url;

/* Parses an admin API base URL: http or https; no user name, password, query or fragment;
 * plain http only when the host is loopback (cli_url_host_is_loopback). A base path is kept
 * (https://proxy.example/cartgate/ + api/v1/... = https://proxy.example/cartgate/api/v1/...).
 * Caller frees with cli_url_free; NULL with err set when refused. */
cli_url *cli_url_admin(const char *url, fhir_error *err);
void cli_url_free(cli_url *u);

/* "scheme://host[:port]" of the base; borrowed until cli_url_free. */
const char *cli_url_origin(const cli_url *u);

/* rel (a relative reference such as "api/v1/referrals?state=sent") resolved against the
 * base. Caller frees (free); NULL with err set. */
char *cli_url_join(const cli_url *u, const char *rel, fhir_error *err);

/* True when host (as in a URL: IPv6 literals may keep their brackets) is an IPv4 literal in
 * 127.0.0.0/8, the IPv6 literal ::1, or exactly the name "localhost" (any letter case). Names
 * that merely start like one (127.attacker.example, localhost.example) are not. */
bool cli_url_host_is_loopback(const char *host);

#endif
