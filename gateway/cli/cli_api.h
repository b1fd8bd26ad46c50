/* cli_api — the operator commands' client of the daemon's admin API (cartgate referrals,
 * cartgate patients): the base URL (cli_url.h), the person's own API token (--token-file,
 * --token-env, else $CARTGATE_TOKEN, else the shared service token in $CARTGATE_ADMIN_TOKEN,
 * audited as "admin-api"), one request at a time through libcurl, and the API's JSON errors
 * turned into messages that name the status and its meaning. */
#ifndef CLI_API_H
#define CLI_API_H

#include "cli_opt.h"
#include "cli_url.h"
#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "fhir_node.h"

#define CLI_API_RESP_MAX (64u << 20) /* bytes of one admin API answer */
#define CLI_API_TOKEN_MAX 4096       /* bytes of an API token */

typedef struct cli_api {
    cli_url *base;                      /* the admin API's base URL */
    char auth[CLI_API_TOKEN_MAX + 32];  /* "Authorization: Bearer ..." */
    const char *ca_file;                /* PEM CA bundle for https (NULL: the system store) */
} cli_api;

/* The options of a command that reaches the daemon's API (cli_opt.h entries): --admin URL,
 * --token-file F, --token-env VAR, --ca-file F, into the const char * variables given. */
#define CLI_API_OPTS(admin, token_file, token_env, ca_file)                                    \
    {.name = "admin", .kind = CLI_STR, .out = (admin), .arg = "URL", .def = "$CARTGATE_ADMIN_URL", \
     .help = "through the daemon's admin API (e.g. http://127.0.0.1:8089;\n"                    \
             "http only to a loopback address, else https)"},                                   \
        {.name = "token-file", .kind = CLI_PATH, .out = (token_file), .arg = "F",               \
         .help = "your API token (first line of F; cartgate users token NAME)"},                \
        {.name = "token-env", .kind = CLI_STR, .out = (token_env), .arg = "VAR",                \
         .def = "CARTGATE_TOKEN, else CARTGATE_ADMIN_TOKEN",                                    \
         .help = "... or from this environment variable (CARTGATE_ADMIN_TOKEN:\n"               \
                 "the shared service token, audited as admin-api)"},                            \
        {.name = "ca-file", .kind = CLI_PATH, .out = (ca_file), .arg = "F",                     \
         .help = "PEM CA bundle for an https --admin URL (default: the system store)"}

/* Either the API (*admin, else $CARTGATE_ADMIN_URL when db is NULL too) or the store (db):
 * NULL when exactly one is chosen, else the usage message (static). */
const char *cli_api_target(const char **admin, const char *db);

/* Opens a connection description: url checked (cli_url_admin), the token read from
 * token_file, else the variable token_env, else $CARTGATE_TOKEN, else $CARTGATE_ADMIN_TOKEN.
 * Strings borrowed until cli_api_close (ca_file may be NULL). 0, or -1 with err (nothing to
 * close then). */
int cli_api_open(cli_api *c, const char *url, const char *token_file, const char *token_env,
                 const char *ca_file, fhir_error *err);
/* Forgets the token and frees the URL. */
void cli_api_close(cli_api *c);

/* What a request is about, for its error messages (each may be NULL). */
typedef struct cli_api_about {
    const char *what;     /* "referral 5": put before the API's message on a 400/403/404/409 */
    const char *conflict; /* a 409's meaning ("illegal state transition") */
} cli_api_about;

/* One request (body: JSON, or NULL). *status is the HTTP status. A 2xx answer returns 0 with
 * the body in out (out's cap: CLI_API_RESP_MAX); anything else is -1 with a message naming the
 * status, its meaning and the API's own message. about may be NULL. */
int cli_api_call(const cli_api *c, const char *method, const char *path, const char *body,
                 const cli_api_about *about, fhir_buf *out, long *status, fhir_error *err);

/* The answer parsed into arena a; NULL with err when it is not JSON. */
fhir_node *cli_api_parse(fhir_arena *a, const fhir_buf *b, fhir_error *err);

#endif
