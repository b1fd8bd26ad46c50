/* config — the daemon's configuration file (`cartgate run -c FILE`).
 *
 * One JSON file; // and / * * / comments are allowed outside strings. Every option is declared
 * once, in the option table of config.c (name, type, default, bounds, help); the loader, the
 * checker (`cartgate check-config`) and the README reference (`check-config --reference`) are
 * all driven by that table.
 *
 * The loader reports EVERY problem it finds, each as "FILE:LINE: what": syntax errors,
 * unknown keys (with a "did you mean" when close), wrong types, values out of bounds or not
 * in the allowed set, missing required options, cross-field rules (a `group` source needs a
 * group_id ...), duplicate source names. Secrets are never taken from the file: options such
 * as `token` or `password` are refused ("use token_file or token_env"); a *_file must exist
 * and an *_env variable must be set. Relative paths are resolved against the directory of the
 * config file. */
#ifndef CONFIG_H
#define CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_buf.h"
#include "fhir_error.h"

#define CONFIG_SECRET_FILE_MAX (64u * 1024u) /* bytes of a secret file (a token, a PEM key) */

typedef enum config_source_kind {
    CONFIG_SOURCE_SEARCH = 0,
    CONFIG_SOURCE_GROUP,
    CONFIG_SOURCE_BULK,
    CONFIG_SOURCE_FILES,
} config_source_kind;

typedef enum config_auth_kind {
    CONFIG_AUTH_NONE = 0,
    CONFIG_AUTH_BEARER,
    CONFIG_AUTH_BASIC,
    CONFIG_AUTH_SMART,
} config_auth_kind;

typedef enum config_writeback {
    CONFIG_WRITEBACK_NONE = 0,
    CONFIG_WRITEBACK_COMMUNICATION,
    CONFIG_WRITEBACK_TASK,
} config_writeback;

typedef struct config_strlist {
    char **v;
    size_t n;
} config_strlist;

/* One EHR endpoint (or file-drop folder). Strings are owned by the config. */
typedef struct config_source {
    char *name;
    int kind;              /* config_source_kind */
    char *base_url;
    bool insecure_plain_http; /* plain http:// base, token URL, trusted origins off loopback */
    int format;            /* 0 json, 1 xml */
    long interval_s;       /* poll schedule */
    long concurrency;      /* requests in flight */
    double rate_per_s;     /* request starts per second; 0 = unlimited */
    long timeout_s;        /* per request attempt */
    long page_size;        /* _count */
    long max_pages;        /* search page cap */
    char *group_id;        /* group and bulk */
    char *dir;             /* files */
    config_strlist types;  /* resource types read (_type for bulk) */
    char *since;           /* first poll starts here (instant); NULL = everything */
    long full_refresh_s;   /* read everything again after this long; 0 = never */
    long retry_s;          /* first delay after a failed poll (doubled per failure in a row) */
    config_strlist trusted_origins; /* other origins read with the source's credentials */
    long download_concurrency; /* bulk: files downloaded at once */
    long busy_wait_s;      /* bulk: how long to wait for the server's running export */
    char *ca_file;
    int auth_kind;         /* config_auth_kind */
    char *auth_token_file, *auth_token_env;
    char *auth_user, *auth_password_file, *auth_password_env;
    char *auth_client_id, *auth_key_file, *auth_kid, *auth_alg, *auth_scope, *auth_token_url;
    int line;              /* line of the source's object in the file */
} config_source;

typedef struct config {
    char *path;            /* the file loaded */
    char *site_id, *site_name;
    char *referrer_name, *referrer_phone, *referrer_direct; /* site.referrer.* */
    double site_lat, site_lon;
    bool site_has_location;
    char *store_path;
    long store_busy_timeout_ms;
    long store_retention_days; /* prune non-heme patients' cached resources after; 0 = never */
    int log_level;         /* fhir_log_level */
    int log_format;        /* fhir_log_format (index in "logfmt|json") */
    bool admin_enabled;
    char *admin_bind;
    long admin_port;
    char *admin_token_file, *admin_token_env;   /* the shared service token ("admin-api") */
    char *admin_tls_cert_file, *admin_tls_key_file; /* TLS on the listener (both or neither) */
    bool admin_insecure_plain_http; /* plain HTTP on a non-loopback bind (behind a TLS proxy) */
    long admin_max_connections;
    int admin_bind_line;   /* line of admin.bind in the file (0 = absent) */
    long access_session_idle_s, access_session_max_s;
    long access_token_max_days;
    /* OpenID Connect sign-in (oidc.h); off while oidc_issuer is NULL */
    char *oidc_issuer, *oidc_client_id, *oidc_client_secret_file, *oidc_client_secret_env;
    char *oidc_redirect_uri, *oidc_scopes, *oidc_user_claim, *oidc_name_claim, *oidc_role_claim;
    char *oidc_ca_file, *oidc_label;
    config_strlist oidc_role_map;   /* "GROUP=ROLE" */
    bool oidc_provision;
    int oidc_line;         /* line of oidc.issuer in the file (0 = absent) */
    /* CDS Hooks service (cds.h); off unless cds_enabled */
    bool cds_enabled;
    char *cds_public_url, *cds_ca_file;
    config_strlist cds_clients;      /* "ISS JWKS_URL" */
    config_strlist cds_fhir_servers; /* fhirServer base URLs we may read from */
    long cds_fetch_timeout_ms, cds_jwks_ttl_s;
    int cds_line;          /* line of cds.enabled in the file (0 = absent) */
    /* cartgate at a CAR T center (intake.h): role 1 = center serves /fhir and the inbox */
    int role;              /* 0 site, 1 center */
    char *intake_public_url;
    config_strlist intake_clients;   /* "CLIENT_ID JWKS_FILE" */
    long intake_token_ttl_s, intake_waiting_business_days, intake_max_body_mib;
    char *criteria_dir;
    config_strlist criteria_enable_pending; /* pending indications enabled (label verified) */
    char *mappings_dir;    /* terminology tables; NULL = the built-in folder */
    char *centers_file, *zcta_file;
    bool centers_insecure_plain_http; /* plain http:// center endpoints off loopback */
    int referral_mode;     /* refer_mode: 0 approval, 1 auto */
    int referral_min_category; /* 0 eligible, 1 possibly_eligible */
    int referral_consult_proposals; /* 0 none, 1 refer_now, 2 early_consult (elig_consult order) */
    int referral_report_lookback_days; /* pathology/imaging reports in the packet (0: all) */
    char *referral_urgency_default;
    long referral_send_interval_s;
    long referral_retry_min_ms, referral_retry_max_s; /* sender backoff after transient failures */
    long referral_task_poll_s;
    int referral_writeback; /* config_writeback: 0 none, 1 communication, 2 task */
    char *referral_writeback_source; /* name of a source (the EHR endpoint written to) */
    int referral_writeback_line;     /* line of referral.writeback in the file (0 = absent) */
    /* notifications (notify.h); off unless a channel's url is set */
    char *notify_public_url;
    int notify_candidates;  /* off|review|soon|now: 0..3 (elig_urgency order) */
    long notify_stuck_business_days, notify_digest_hour, notify_retry_s, notify_max_attempts;
    char *notify_email_url, *notify_email_from, *notify_email_user;
    config_strlist notify_email_to;
    char *notify_email_password_file, *notify_email_password_env, *notify_email_ca_file;
    char *notify_webhook_url, *notify_webhook_token_file, *notify_webhook_token_env, *notify_webhook_ca_file;
    char *as_of;           /* "YYYY-MM-DD" demo override, NULL = today */
    long shutdown_grace_s;
    config_source *sources;
    size_t n_sources;
    struct config_keyline *keylines; /* the line of every scalar option set in the file */
    size_t n_keylines;
} config;

/* Loads and validates FILE. On success returns the config (caller frees with config_free()).
 * On failure returns NULL; every problem found is appended to diag (one "FILE:LINE: what"
 * line each, when diag is non-NULL), *n_errors (may be NULL) gets their count and err the
 * first one followed by "(and N more)". */
config *config_load(const char *path, fhir_buf *diag, size_t *n_errors, fhir_error *err);
/* Same from memory; name is used in messages and relative paths resolve against base_dir
 * (NULL = current directory). */
config *config_load_mem(const char *name, const char *text, size_t len, const char *base_dir,
                        fhir_buf *diag, size_t *n_errors, fhir_error *err);
void config_free(config *c);

/* Reads a secret: the first line of file (trailing CR/LF removed), else the value of the
 * environment variable env. Exactly one of them should be set. Caller frees *out.
 * 0, or -1 with err (names the file or variable, never the secret). */
int config_read_secret(const char *file, const char *env, char **out, fhir_error *err);

/* The options that differ between a and b and that a reload does not apply (store, listener,
 * sign-in, CDS, intake, notices: built at start), as "store.path,cds.clients" in out (truncated
 * to cap; borrowed a and b). Returns how many differ. */
size_t config_restart_changes(const config *a, const config *b, char *out, size_t cap);

/* The line of the file where option name ("criteria.dir", "sources[].ca_file") was set, for
 * the source at index `source` (main options: any value); 0 when the file does not set it
 * (a default). */
int config_key_line(const config *c, const char *name, size_t source);

/* The option reference as a Markdown table (generated from the option table). */
int config_write_reference(fhir_buf *out);

/* The fhir_client settings of a source: endpoint, format, timeouts, concurrency, rate, page
 * cap, CA file and auth. Strings are borrowed from cfg. Used by the poll strategies and the
 * EHR write-back. */
struct fhir_client_config;
void config_source_client(const config_source *cfg, struct fhir_client_config *cc);

/* Static strings. */
const char *config_source_kind_name(int kind);
const char *config_auth_kind_name(int kind);

#endif
