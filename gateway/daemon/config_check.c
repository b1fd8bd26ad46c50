/* config_check — the files a configuration names, loaded as `cartgate run` loads them (see
 * config_check.h). */
#include "config_check.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "centers.h"
#include "elig.h"
#include "fhir_auth.h"
#include "fhir_client.h"
#include "map_tables.h"
#include "route.h"
#include "serve.h"

typedef struct check {
    const config *c;
    fhir_buf *errors, *warnings;
    size_t n_errors;
} check;

/* "FILE:LINE: option: what" into errors (warn: into warnings). */
static void say(check *k, bool warn, const char *option, size_t source, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void say(check *k, bool warn, const char *option, size_t source, const char *fmt, ...)
{
    int line = config_key_line(k->c, option, source);
    if (!line && !strncmp(option, "sources[].", 10))
        line = k->c->sources[source].line;
    if (!line)
        line = 1; /* a default: the object that would hold it starts the file */
    char what[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fhir_buf *b = warn ? k->warnings : k->errors;
    if (!warn)
        k->n_errors++;
    if (!b)
        return;
    if (!strncmp(option, "sources[].", 10))
        fhir_buf_printf(b, "%s:%d: sources[%zu].%s: %s%s\n", k->c->path, line, source, option + 10,
                        warn ? "warning: " : "", what);
    else
        fhir_buf_printf(b, "%s:%d: %s: %s%s\n", k->c->path, line, option, warn ? "warning: " : "", what);
}

static bool is_dir(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A PEM CA bundle: opens and holds at least one certificate. */
static void check_ca_file(check *k, const char *option, size_t source, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        say(k, false, option, source, "%s: %s", path, strerror(errno));
        return;
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!x)
        say(k, false, option, source, "%s: no PEM certificate in the file", path);
    X509_free(x);
}

/* A secret file, read the way the daemon reads it (config_read_secret: the one reader), then
 * forgotten. */
static void check_secret(check *k, const char *option, const char *file)
{
    char *secret = NULL;
    fhir_error err;
    fhir_error_clear(&err);
    if (config_read_secret(file, NULL, &secret, &err))
        say(k, false, option, 0, "%s", err.msg);
    if (secret) {
        memset(secret, 0, strlen(secret));
        free(secret);
    }
}

/* The folder that must hold a file the daemon creates (the store). */
static void check_parent(check *k, const char *option, const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        abort();
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = 0;
    else if (slash)
        *slash = 0;
    else
        strcpy(dir, ".");
    if (!is_dir(dir))
        say(k, true, option, 0, "folder %s does not exist (cartgate run cannot create the database there)", dir);
    else if (access(dir, W_OK | X_OK) != 0)
        say(k, true, option, 0, "folder %s is not writable by this user (cartgate run needs to write there)",
            dir);
    free(dir);
}

static void check_sources(check *k)
{
    const config *c = k->c;
    for (size_t i = 0; i < c->n_sources; i++) {
        const config_source *s = &c->sources[i];
        fhir_error err;
        fhir_error_clear(&err);
        if (s->kind == CONFIG_SOURCE_FILES) {
            if (s->dir && !is_dir(s->dir))
                say(k, true, "sources[].dir", i, "drop folder %s does not exist (the source's polls fail until it does)",
                    s->dir);
            continue;
        }
        if (s->ca_file)
            check_ca_file(k, "sources[].ca_file", i, s->ca_file);
        /* the credentials, loaded as the source's client loads them (secret files, keys) */
        fhir_client_config cc;
        memset(&cc, 0, sizeof cc);
        config_source_client(s, &cc);
        fhir_auth *a = fhir_auth_new(&cc.auth, &err);
        if (!a) {
            const char *opt = s->auth_key_file ? "sources[].auth.key_file"
                              : s->auth_token_file ? "sources[].auth.token_file"
                              : s->auth_password_file ? "sources[].auth.password_file"
                                                      : "sources[].auth.kind";
            say(k, false, opt, i, "%s", err.msg);
        }
        fhir_auth_free(a);
    }
}

size_t config_check_files(const config *c, fhir_buf *errors, fhir_buf *warnings)
{
    check k = {.c = c, .errors = errors, .warnings = warnings};
    fhir_error err;
    fhir_error_clear(&err);
    if (!is_dir(c->criteria_dir)) {
        say(&k, false, "criteria.dir", 0, "%s is not a folder", c->criteria_dir);
    } else {
        elig_ruleset *rs = elig_load_dir(c->criteria_dir, &err);
        if (!rs)
            say(&k, false, "criteria.dir", 0, "%s", err.msg);
        for (size_t i = 0; rs && i < c->criteria_enable_pending.n; i++) {
            fhir_error_clear(&err);
            if (elig_ruleset_enable_pending(rs, c->criteria_enable_pending.v[i], &err))
                say(&k, false, "criteria.enable_pending", 0, "%s", err.msg);
        }
        elig_ruleset_free(rs);
    }
    fhir_error_clear(&err);
    map_tables *t = c->mappings_dir && !is_dir(c->mappings_dir) ? NULL : map_tables_load(c->mappings_dir, &err);
    if (!t)
        say(&k, false, "mappings.dir", 0, "%s", err.msg[0] ? err.msg : "not a folder");
    map_tables_free(t);
    fhir_error_clear(&err);
    centers_dir *cd = centers_load(c->centers_file, &err);
    if (!cd)
        say(&k, false, "centers.file", 0, "%s", err.msg);
    centers_free(cd);
    if (c->zcta_file) {
        fhir_error_clear(&err);
        route_zcta *z = route_zcta_load(c->zcta_file, &err);
        if (!z)
            say(&k, false, "centers.zcta_file", 0, "%s", err.msg);
        route_zcta_free(z);
    }
    if (c->admin_enabled && c->admin_tls_cert_file && c->admin_tls_key_file) {
        fhir_error_clear(&err);
        if (serve_tls_check(c->admin_tls_cert_file, c->admin_tls_key_file, &err))
            say(&k, false, strstr(err.msg, "private key") ? "admin.tls_key_file" : "admin.tls_cert_file", 0, "%s",
                err.msg);
    }
    if (c->oidc_issuer && c->oidc_ca_file)
        check_ca_file(&k, "oidc.ca_file", 0, c->oidc_ca_file);
    if (c->oidc_issuer && c->oidc_client_secret_file)
        check_secret(&k, "oidc.client_secret_file", c->oidc_client_secret_file);
    if (c->admin_enabled && c->admin_token_file)
        check_secret(&k, "admin.token_file", c->admin_token_file);
    if (c->notify_email_url && c->notify_email_ca_file)
        check_ca_file(&k, "notify.email.ca_file", 0, c->notify_email_ca_file);
    if (c->notify_webhook_url && c->notify_webhook_ca_file)
        check_ca_file(&k, "notify.webhook.ca_file", 0, c->notify_webhook_ca_file);
    if (c->notify_email_url && c->notify_email_password_file)
        check_secret(&k, "notify.email.password_file", c->notify_email_password_file);
    if (c->notify_webhook_url && c->notify_webhook_token_file)
        check_secret(&k, "notify.webhook.token_file", c->notify_webhook_token_file);
    check_sources(&k);
    if (c->store_path && strcmp(c->store_path, ":memory:"))
        check_parent(&k, "store.path", c->store_path);
    return k.n_errors;
}
