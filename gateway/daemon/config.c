/* config — table-driven configuration loader and checker (see config.h). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fhir_alloc.h"
#include "fhir_arena.h"
#include "fhir_auth.h"
#include "fhir_client.h"
#include "fhir_clock.h"
#include "fhir_datadir.h"
#include "fhir_jsonfile.h"
#include "fhir_log.h"
#include "fhir_suggest.h"
#include "fhir_url.h"
#include "oidc.h"
#include "role.h"
#include "serve.h"

#define CONFIG_MAX_BYTES (1024u * 1024u)
#define CONFIG_ARENA_CAP (16u * CONFIG_MAX_BYTES) /* the parsed tree of one file */
#define CONFIG_MAX_SOURCES 64

/* ---- the option table --------------------------------------------------------------------- */

typedef enum opt_type {
    OT_STR,      /* string */
    OT_PATH,     /* string, relative to the config file's directory */
    OT_SECRET_FILE, /* path of a file holding a secret (must exist) */
    OT_SECRET_ENV,  /* name of an environment variable holding a secret (must be set) */
    OT_INT,
    OT_NUM,
    OT_BOOL,
    OT_ENUM,     /* string from a |-separated list, stored as its index */
    OT_DATE,     /* YYYY-MM-DD */
    OT_INSTANT,  /* FHIR instant / date */
    OT_STRLIST,  /* array of strings */
    OT_OBJ,      /* a section */
    OT_OBJLIST,  /* array of sections (sources) */
    OT_CLEAR,    /* a secret in clear: always refused */
} opt_type;

enum { SC_MAIN = 0, SC_SOURCE = 1 };

typedef struct opt {
    const char *name;  /* dotted path; "sources[]." prefix for per-source options */
    opt_type type;
    int scope;
    size_t off;
    const char *def;   /* default as text; NULL = none */
    double min, max;   /* numbers: bounds (inclusive) */
    const char *values; /* enums: "a|b|c"; clear secrets: the replacement option */
    bool required;
    const char *help;
} opt;

/* A default inside the data folder (fhir_datadir.h: installed prefix, $CARTGATE_DATA_DIR or,
 * running from the build tree, the source tree), resolved when applied. */
#define DATA_DEF "<data>/"
#define M(f) SC_MAIN, offsetof(config, f)
#define S(f) SC_SOURCE, offsetof(config_source, f)
#define NO 0, 0, NULL

static const opt OPTS[] = {
    {"site", OT_OBJ, SC_MAIN, 0, NULL, NO, true, "The referring site (this hospital)."},
    {"site.id", OT_STR, M(site_id), NULL, NO, true,
     "Site identifier: part of every referral's placer identifier. Never change it once referrals exist."},
    {"site.name", OT_STR, M(site_name), "", NO, false, "Site name shown in referrals."},
    {"site.referrer", OT_OBJ, SC_MAIN, 0, NULL, NO, false,
     "The referring clinician named in referral packets when no therapy order of the patient names "
     "its prescriber, and the referring team's contact for the center."},
    {"site.referrer.name", OT_STR, M(referrer_name), "", NO, false,
     "Name (e.g. \"Dr. A. Rivera, hematology-oncology\")."},
    {"site.referrer.phone", OT_STR, M(referrer_phone), "", NO, false,
     "Phone the center calls about a referral."},
    {"site.referrer.direct", OT_STR, M(referrer_direct), "", NO, false,
     "Direct secure-messaging address."},
    {"site.location", OT_OBJ, SC_MAIN, 0, NULL, NO, false,
     "Where the site is; the routing origin when a patient has no geolocation or known ZIP."},
    {"site.location.lat", OT_NUM, M(site_lat), NULL, -90, 90, NULL, false, "Latitude (decimal degrees)."},
    {"site.location.lon", OT_NUM, M(site_lon), NULL, -180, 180, NULL, false, "Longitude (decimal degrees)."},
    {"store", OT_OBJ, SC_MAIN, 0, NULL, NO, false, "The SQLite store."},
    {"store.path", OT_PATH, M(store_path), "cartgate.db", NO, false,
     "Database file (WAL mode; keep it on a local disk and back it up)."},
    {"store.busy_timeout_ms", OT_INT, M(store_busy_timeout_ms), "5000", 1, 600000, NULL, false,
     "How long a writer waits for the database lock."},
    {"store.retention_days", OT_INT, M(store_retention_days), "0", 0, 36500, NULL, false,
     "Remove the cached FHIR resources of patients screened without a heme diagnosis (not eligible, never referred) once none of them changed for this many days; checked hourly. 0 = keep everything. Verdicts, referrals and the audit are never removed; cartgate store prune --dry-run shows what would go."},
    {"log", OT_OBJ, SC_MAIN, 0, NULL, NO, false, "Logging (one line per event on stderr, every value quoted, never PHI)."},
    {"log.level", OT_ENUM, M(log_level), "info", 0, 0, "debug|info|warn|error|off", false,
     "Least severe level written."},
    {"log.format", OT_ENUM, M(log_format), "logfmt", 0, 0, "logfmt|json", false,
     "logfmt: ts=\"...\" level=\"info\" event=\"...\" key=\"value\"; json: the same pairs as one JSON object per line."},
    {"admin", OT_OBJ, SC_MAIN, 0, NULL, NO, false,
     "The daemon's one HTTP listener: health, metrics, the JSON API (worklist, referrals, audit) and sign-in. People authenticate with their own API token (cartgate users token) or a session; every route needs a role."},
    {"admin.enabled", OT_BOOL, M(admin_enabled), "true", NO, false, "Run the listener."},
    {"admin.bind", OT_STR, M(admin_bind), "127.0.0.1", NO, false,
     "Address to listen on. Plain HTTP is accepted only on a loopback address: another address needs admin.tls_cert_file and admin.tls_key_file (or admin.insecure_plain_http behind a TLS proxy)."},
    {"admin.port", OT_INT, M(admin_port), "8089", 0, 65535, NULL, false,
     "TCP port (0 = any free port; the chosen one is logged as event=admin.listen)."},
    {"admin.tls_cert_file", OT_PATH, M(admin_tls_cert_file), NULL, NO, false,
     "PEM certificate chain of the listener: TLS 1.2 or later, reloaded on SIGHUP."},
    {"admin.tls_key_file", OT_SECRET_FILE, M(admin_tls_key_file), NULL, NO, false,
     "PEM private key of the certificate (with admin.tls_cert_file)."},
    {"admin.insecure_plain_http", OT_BOOL, M(admin_insecure_plain_http), "false", NO, false,
     "Allow plain HTTP on a non-loopback admin.bind: only for a TLS proxy on another host, never for browsers across a network."},
    {"admin.max_connections", OT_INT, M(admin_max_connections), "256", 1, 100000, NULL, false,
     "Connections served at once: lowered at start to what the file descriptor limit leaves beyond those kept for the store and the sources; at the cap the oldest connection with no request being answered is closed for a new one."},
    {"admin.token_file", OT_SECRET_FILE, M(admin_token_file), NULL, NO, false,
     "Optional shared service token for automation (first line of the file): acts as the service \"admin-api\" (viewer, clinician, admin) and is audited under that name. People use their own tokens."},
    {"admin.token_env", OT_SECRET_ENV, M(admin_token_env), NULL, NO, false,
     "Environment variable holding the shared service token (instead of admin.token_file)."},
    {"admin.token", OT_CLEAR, SC_MAIN, 0, NULL, 0, 0, "admin.token_file or admin.token_env", false,
     "Refused: secrets never appear in the file."},
    {"access", OT_OBJ, SC_MAIN, 0, NULL, NO, false, "Sign-in sessions and API tokens."},
    {"access.session_idle_s", OT_INT, M(access_session_idle_s), "1800", 60, 86400, NULL, false,
     "A session ends after this long without a request."},
    {"access.session_max_s", OT_INT, M(access_session_max_s), "43200", 300, 604800, NULL, false,
     "A session ends this long after sign-in, used or not."},
    {"access.token_max_days", OT_INT, M(access_token_max_days), "3650", 1, 36500, NULL, false,
     "Longest validity of an API token."},
    {"oidc", OT_OBJ, SC_MAIN, 0, NULL, NO, false,
     "Hospital sign-in with OpenID Connect (authorization code flow with PKCE); off unless oidc.issuer is set."},
    {"oidc.issuer", OT_STR, M(oidc_issuer), NULL, NO, false,
     "Issuer URL exactly as in the provider's discovery document (https, or http on loopback)."},
    {"oidc.client_id", OT_STR, M(oidc_client_id), NULL, NO, false, "Client id registered at the provider."},
    {"oidc.client_secret_file", OT_SECRET_FILE, M(oidc_client_secret_file), NULL, NO, false,
     "File holding the client secret (absent: a public client, PKCE only)."},
    {"oidc.client_secret_env", OT_SECRET_ENV, M(oidc_client_secret_env), NULL, NO, false,
     "Environment variable holding the client secret."},
    {"oidc.client_secret", OT_CLEAR, SC_MAIN, 0, NULL, 0, 0, "oidc.client_secret_file or oidc.client_secret_env",
     false, "Refused."},
    {"oidc.redirect_uri", OT_STR, M(oidc_redirect_uri), NULL, NO, false,
     "Our callback URL as registered at the provider: https://HOST[:PORT]/auth/oidc/callback."},
    {"oidc.scopes", OT_STR, M(oidc_scopes), "openid profile email", NO, false, "Scopes asked for (must hold openid)."},
    {"oidc.user_claim", OT_STR, M(oidc_user_claim), "sub", NO, false,
     "Claim naming the user (matched across sign-ins together with the issuer)."},
    {"oidc.name_claim", OT_STR, M(oidc_name_claim), "name", NO, false, "Claim with the display name."},
    {"oidc.role_claim", OT_STR, M(oidc_role_claim), "groups", NO, false,
     "Claim holding the person's groups (a dotted path such as realm_access.roles works)."},
    {"oidc.role_map", OT_STRLIST, M(oidc_role_map), NULL, NO, false,
     "\"GROUP=ROLE\" entries (ROLE: viewer, clinician, intake, admin), first match wins; \"*=ROLE\" matches everyone. A person with no match is refused."},
    {"oidc.provision", OT_BOOL, M(oidc_provision), "true", NO, false,
     "Create a user on first sign-in (with the mapped role); false: only users added beforehand."},
    {"oidc.ca_file", OT_PATH, M(oidc_ca_file), NULL, NO, false, "PEM CA bundle for the provider (default: system store)."},
    {"oidc.label", OT_STR, M(oidc_label), "Hospital sign-in", NO, false, "Name of the provider on the sign-in page."},
    {"role", OT_ENUM, M(role), "site", 0, 0, "site|center", false,
     "site: a referring hospital (reads its EHR, screens, refers). center: cartgate at a CAR T center, receiving referrals from sites' cartgate on the listener (/fhir, SMART Backend Services) with the intake inbox (/ui/intake) for the intake team; needs admin.enabled and the intake section."},
    {"intake", OT_OBJ, SC_MAIN, 0, NULL, NO, false,
     "A center's side (role center): who may send referrals and how long one may wait for an answer."},
    {"intake.public_url", OT_STR, M(intake_public_url), NULL, NO, false,
     "Our base URL as referring sites call it (https://HOST[:PORT], no path): their FHIR base is <public_url>/fhir and their client assertions' aud must be <public_url>/fhir/auth/token."},
    {"intake.clients", OT_STRLIST, M(intake_clients), "", NO, false,
     "Registered referring sites: \"CLIENT_ID JWKS_FILE\" entries (their public keys, a file relative to this configuration file; assertions signed RS384 or ES384)."},
    {"intake.token_ttl_s", OT_INT, M(intake_token_ttl_s), "300", 60, 3600, NULL, false,
     "Lifetime of an access token issued to a referring site."},
    {"intake.max_body_mib", OT_INT, M(intake_max_body_mib), "32", 1, 256, NULL, false,
     "Largest referral Bundle a site may POST to /fhir, in MiB (the pathology and imaging reports it carries may hold their documents; every other route keeps the listener's 1 MiB). A larger one is refused with an OperationOutcome (413) and nothing is stored."},
    {"intake.waiting_business_days", OT_INT, M(intake_waiting_business_days), "2", 1, 60, NULL, false,
     "A referral received and not yet answered for this many business days is highlighted in the inbox and noticed (notify) once."},
    {"cds", OT_OBJ, SC_MAIN, 0, NULL, NO, false,
     "CDS Hooks 2.0 service on the listener (/cds-services): the EHR shows a CAR T card when a candidate's chart is opened (patient-view) or an order is selected (order-select). Each call is authenticated by the EHR's signed JWT, not by a person."},
    {"cds.enabled", OT_BOOL, M(cds_enabled), "false", NO, false, "Serve /cds-services (needs admin.enabled)."},
    {"cds.public_url", OT_STR, M(cds_public_url), NULL, NO, false,
     "Our base URL as the EHR calls it (https://HOST[:PORT], no path): the JWT's aud must be <public_url>/cds-services/<id>, and cards link to <public_url>/ui/patients/<id>."},
    {"cds.clients", OT_STRLIST, M(cds_clients), "", NO, false,
     "The EHRs allowed to call, one \"ISS JWKS_URL\" entry each: the JWT's iss exactly, and the URL of its key set (a jku header must name the same URL). RS384 and ES384 signatures."},
    {"cds.fhir_servers", OT_STRLIST, M(cds_fhir_servers), "", NO, false,
     "FHIR base URLs a call's fhirServer may name: data the prefetch lacks is read from there with the call's fhirAuthorization token; another server is never contacted (answer 412 when the data is missing)."},
    {"cds.fetch_timeout_ms", OT_INT, M(cds_fetch_timeout_ms), "2500", 100, 60000, NULL, false,
     "Time budget for reading missing data from the fhirServer in one call."},
    {"cds.jwks_ttl_s", OT_INT, M(cds_jwks_ttl_s), "3600", 10, 86400, NULL, false,
     "How long a fetched key set is used before it is fetched again (an unknown kid refetches it at once, at most every 10 s)."},
    {"cds.ca_file", OT_PATH, M(cds_ca_file), NULL, NO, false,
     "PEM CA bundle for the EHRs' key sets and FHIR servers (default: system store)."},
    {"criteria", OT_OBJ, SC_MAIN, 0, NULL, NO, false, "Eligibility criteria."},
    {"criteria.dir", OT_PATH, M(criteria_dir), DATA_DEF "criteria", NO, false,
     "Folder of criteria files (one JSON file per product indication, consult_*.json refer-early triggers, plus params.json)."},
    {"criteria.enable_pending", OT_STRLIST, M(criteria_enable_pending), "", NO, false,
     "Pending product indications (criteria files with \"status\": \"pending\", e.g. anito-cel:MM-4L) to count like approved ones once the label is verified on DailyMed; changes the rule-set hash."},
    {"mappings", OT_OBJ, SC_MAIN, 0, NULL, NO, false, "Terminology tables of the clinical profile."},
    {"mappings.dir", OT_PATH, M(mappings_dir), DATA_DEF "mappings", NO, false,
     "Folder of the mapping TSV files."},
    {"centers", OT_OBJ, SC_MAIN, 0, NULL, NO, false, "Treatment center directory and routing."},
    {"centers.file", OT_PATH, M(centers_file), DATA_DEF "centers.json", NO, false,
     "Center directory (conf/README-centers.md)."},
    {"centers.zcta_file", OT_PATH, M(zcta_file), NULL, NO, false,
     "ZIP centroid table (Census Gazetteer ZCTA, tab-separated); optional."},
    {"centers.insecure_plain_http", OT_BOOL, M(centers_insecure_plain_http), "false", NO, false,
     "Allow plain http:// center endpoints (fhir.base, token_url) on hosts that are not loopback: referrals with patient data then cross the network in clear. Only for a private network you control (containers); refused otherwise."},
    {"referral", OT_OBJ, SC_MAIN, 0, NULL, NO, false, "Referral creation and delivery."},
    {"referral.mode", OT_ENUM, M(referral_mode), "approval", 0, 0, "approval|auto", false,
     "approval: a clinician approves each proposal; auto: standing orders, approved on creation."},
    {"referral.min_category", OT_ENUM, M(referral_min_category), "possibly_eligible", 0, 0,
     "eligible|possibly_eligible", false,
     "Least certain verdict that creates a referral proposal."},
    {"referral.consult_proposals", OT_ENUM, M(referral_consult_proposals), "none", 0, 0,
     "none|refer_now|early_consult", false,
     "Whether a refer-early consult recommendation alone (no label indication at referral.min_category) creates a referral proposal: none, refer_now only, or early_consult and refer_now. The proposal names the indications whose disease the patient has, as possible."},
    {"referral.report_lookback_days", OT_INT, M(referral_report_lookback_days), "730", 0, 36500, NULL, false,
     "Pathology and imaging reports (DiagnosticReport) newer than this go into the referral packet and Bundle, newest first (at most 20); 0 = all. Reports without a date are kept."},
    {"referral.urgency", OT_ENUM, SC_MAIN, offsetof(config, referral_urgency_default), "routine", 0, 0,
     "routine|urgent|asap|stat", false, "FHIR priority when the verdict gives no timing trigger."},
    {"referral.send_interval_s", OT_INT, M(referral_send_interval_s), "5", 1, 3600, NULL, false,
     "How often the outbox is drained."},
    {"referral.retry_min_ms", OT_INT, M(referral_retry_min_ms), "2000", 10, 600000, NULL, false,
     "After a transient delivery failure (no answer, a reset, 408, 429, 5xx) a referral is sent again after this long at the earliest, doubled per failed attempt up to referral.retry_max_s; the rest of that center's queue waits meanwhile."},
    {"referral.retry_max_s", OT_INT, M(referral_retry_max_s), "300", 1, 86400, NULL, false,
     "Longest wait between two delivery attempts of a referral to a center that keeps failing."},
    {"referral.task_poll_s", OT_INT, M(referral_task_poll_s), "60", 1, 86400, NULL, false,
     "How often the centers' Tasks of open referrals are read."},
    {"referral.writeback", OT_ENUM, M(referral_writeback), "none", 0, 0, "none|communication|task", false,
     "Write every center-driven state change back to the EHR as a Communication or a Task (conditional create, durable outbox); none: nothing is written."},
    {"referral.writeback_source", OT_STR, M(referral_writeback_source), NULL, NO, false,
     "Name of the source whose base_url and auth are the EHR endpoint written to; required when referral.writeback is not none."},
    {"notify", OT_OBJ, SC_MAIN, 0, NULL, NO, false,
     "Notices to the navigator without PHI (a count, an urgency and a link, never a name, MRN or birth date) by email and/or webhook: new candidates, stuck and declined referrals, a daily digest. Off unless notify.email.url or notify.webhook.url is set; changes apply at the next start."},
    {"notify.public_url", OT_STR, M(notify_public_url), NULL, NO, false,
     "Base of the links in notices (https://cartgate.hospital.example): they point to <public_url>/ui/ and /ui/referrals. Required with a channel."},
    {"notify.candidates", OT_ENUM, M(notify_candidates), "now", 0, 0, "off|review|soon|now", false,
     "A notice at once when patients become candidates with at least this urgency (now: a timing trigger fired; soon: eligible; review: possibly eligible); off: none."},
    {"notify.stuck_business_days", OT_INT, M(notify_stuck_business_days), "3", 0, 60, NULL, false,
     "A sent referral without an answer from the center for this many business days (Monday to Friday) is stuck (a failed one always is); 0 = only failed ones."},
    {"notify.digest_hour", OT_INT, M(notify_digest_hour), "7", -1, 23, NULL, false,
     "Hour (local time) of the daily digest of counts by category; -1 = no digest."},
    {"notify.retry_s", OT_INT, M(notify_retry_s), "30", 1, 3600, NULL, false,
     "A failed delivery is tried again after this long, doubled per attempt."},
    {"notify.max_attempts", OT_INT, M(notify_max_attempts), "8", 1, 100, NULL, false,
     "Attempts per notice before it is given up (logged and counted)."},
    {"notify.email", OT_OBJ, SC_MAIN, 0, NULL, NO, false, "Email through SMTP, always over TLS."},
    {"notify.email.url", OT_STR, M(notify_email_url), NULL, NO, false,
     "smtps://HOST[:PORT] (TLS from the start) or smtp://HOST[:PORT] (STARTTLS required: a server without it is refused)."},
    {"notify.email.from", OT_STR, M(notify_email_from), NULL, NO, false, "Sender address."},
    {"notify.email.to", OT_STRLIST, M(notify_email_to), NULL, NO, false, "Recipient addresses (1 to 32)."},
    {"notify.email.user", OT_STR, M(notify_email_user), NULL, NO, false, "SMTP AUTH user (absent: no AUTH)."},
    {"notify.email.password_file", OT_SECRET_FILE, M(notify_email_password_file), NULL, NO, false,
     "File holding the SMTP password."},
    {"notify.email.password_env", OT_SECRET_ENV, M(notify_email_password_env), NULL, NO, false,
     "Environment variable holding the SMTP password."},
    {"notify.email.password", OT_CLEAR, SC_MAIN, 0, NULL, 0, 0,
     "notify.email.password_file or notify.email.password_env", false, "Refused."},
    {"notify.email.ca_file", OT_PATH, M(notify_email_ca_file), NULL, NO, false,
     "PEM CA bundle for the mail server (default: system store)."},
    {"notify.webhook", OT_OBJ, SC_MAIN, 0, NULL, NO, false, "A JSON POST per notice."},
    {"notify.webhook.url", OT_STR, M(notify_webhook_url), NULL, NO, false,
     "https URL (http only to a loopback address) that receives {\"site\", \"event\", \"count\", \"urgency\", \"text\", \"link\", \"time\"} (the digest adds \"counts\")."},
    {"notify.webhook.token_file", OT_SECRET_FILE, M(notify_webhook_token_file), NULL, NO, false,
     "File holding a bearer token sent as Authorization (absent: none)."},
    {"notify.webhook.token_env", OT_SECRET_ENV, M(notify_webhook_token_env), NULL, NO, false,
     "Environment variable holding the bearer token."},
    {"notify.webhook.token", OT_CLEAR, SC_MAIN, 0, NULL, 0, 0,
     "notify.webhook.token_file or notify.webhook.token_env", false, "Refused."},
    {"notify.webhook.ca_file", OT_PATH, M(notify_webhook_ca_file), NULL, NO, false,
     "PEM CA bundle for the webhook's server (default: system store)."},
    {"as_of", OT_DATE, M(as_of), NULL, NO, false,
     "Evaluation date override (YYYY-MM-DD) for demos and tests; absent = today."},
    {"shutdown_grace_s", OT_INT, M(shutdown_grace_s), "30", 0, 3600, NULL, false,
     "On SIGTERM, how long in-flight polls may run before they are abandoned (their cursors are not advanced)."},
    {"sources", OT_OBJLIST, SC_MAIN, 0, NULL, NO, false, "EHR endpoints and file drops (array of objects)."},
    {"sources[].name", OT_STR, S(name), NULL, NO, true,
     "Unique name ([A-Za-z0-9_-]); names cursors, logs and metrics."},
    {"sources[].kind", OT_ENUM, S(kind), NULL, 0, 0, "search|group|bulk|files", true,
     "Discovery strategy: population searches, Group members then per-patient searches, Group $export, or a folder of drops."},
    {"sources[].base_url", OT_STR, S(base_url), NULL, NO, false,
     "FHIR base URL (https; plain http only to a loopback host unless insecure_plain_http); required except for files."},
    {"sources[].insecure_plain_http", OT_BOOL, S(insecure_plain_http), "false", NO, false,
     "Allow a plain http:// base_url, auth.token_url or trusted origin on a host that is not loopback: patient data and credentials then cross the network in clear. Only for a private network you control (containers); refused otherwise."},
    {"sources[].format", OT_ENUM, S(format), "json", 0, 0, "json|xml", false, "Wire format."},
    {"sources[].interval_s", OT_INT, S(interval_s), "300", 1, 86400, NULL, false, "Poll schedule."},
    {"sources[].concurrency", OT_INT, S(concurrency), "4", 1, 64, NULL, false, "Requests in flight."},
    {"sources[].rate_per_s", OT_NUM, S(rate_per_s), "0", 0, 10000, NULL, false,
     "Request starts per second (0 = unlimited)."},
    {"sources[].timeout_s", OT_INT, S(timeout_s), "60", 1, 3600, NULL, false, "Per request attempt."},
    {"sources[].page_size", OT_INT, S(page_size), "200", 1, 1000, NULL, false, "_count of searches."},
    {"sources[].max_pages", OT_INT, S(max_pages), "10000", 1, 1000000, NULL, false,
     "Search page cap (hitting it is an error, never a silent truncation)."},
    {"sources[].group_id", OT_STR, S(group_id), NULL, NO, false, "Group id (group and bulk)."},
    {"sources[].dir", OT_PATH, S(dir), NULL, NO, false,
     "Drop folder (files): *.json Bundles and *.ndjson files; each is moved to done/ or failed/."},
    {"sources[].types", OT_STRLIST, S(types),
     "Patient,Condition,Observation,MedicationRequest,MedicationAdministration,MedicationStatement,Medication,Procedure,Coverage,DiagnosticReport",
     NO, false, "Resource types read (bulk: _type). group: Medication is read with one population search, the others per member. DiagnosticReport is not screened: pathology and imaging reports go into the referral packet."},
    {"sources[].since", OT_INSTANT, S(since), NULL, NO, false,
     "Where the first poll starts (FHIR instant); absent = all data."},
    {"sources[].full_refresh_s", OT_INT, S(full_refresh_s), "0", 0, 31536000, NULL, false,
     "Read everything again (no _since / _lastUpdated) once the last complete full read is older than this; 0 = never. For EHRs whose bulk export is not incremental."},
    {"sources[].retry_s", OT_INT, S(retry_s), "30", 1, 86400, NULL, false,
     "After a failed poll the next one starts after retry_s, doubled for every further failure in a row, at most interval_s."},
    {"sources[].trusted_origins", OT_STRLIST, S(trusted_origins), NULL, NO, false,
     "Other origins (scheme://host[:port]) whose search next links and bulk files are read with this source's credentials; by default only the base URL's origin is. Bulk files with requiresAccessToken false are read from any origin, without credentials."},
    {"sources[].download_concurrency", OT_INT, S(download_concurrency), "1", 1, 16, NULL, false,
     "bulk: output files downloaded at once."},
    {"sources[].busy_wait_s", OT_INT, S(busy_wait_s), "900", 0, 86400, NULL, false,
     "bulk: how long a poll waits (per Retry-After) while the server refuses a new export because one is already running (429 or an OperationOutcome saying so) before the poll fails; a second job is never started."},
    {"sources[].ca_file", OT_PATH, S(ca_file), NULL, NO, false, "PEM CA bundle (default: system store)."},
    {"sources[].auth", OT_OBJ, SC_SOURCE, 0, NULL, NO, false, "Credentials for the endpoint."},
    {"sources[].auth.kind", OT_ENUM, S(auth_kind), "none", 0, 0, "none|bearer|basic|smart", false,
     "none, static bearer token, HTTP Basic, or SMART Backend Services."},
    {"sources[].auth.token_file", OT_SECRET_FILE, S(auth_token_file), NULL, NO, false,
     "bearer: file whose first line is the token."},
    {"sources[].auth.token_env", OT_SECRET_ENV, S(auth_token_env), NULL, NO, false,
     "bearer: environment variable holding the token."},
    {"sources[].auth.token", OT_CLEAR, SC_SOURCE, 0, NULL, 0, 0,
     "sources[].auth.token_file or sources[].auth.token_env", false, "Refused."},
    {"sources[].auth.user", OT_STR, S(auth_user), NULL, NO, false, "basic: user name."},
    {"sources[].auth.password_file", OT_SECRET_FILE, S(auth_password_file), NULL, NO, false,
     "basic: file holding the password."},
    {"sources[].auth.password_env", OT_SECRET_ENV, S(auth_password_env), NULL, NO, false,
     "basic: environment variable holding the password."},
    {"sources[].auth.password", OT_CLEAR, SC_SOURCE, 0, NULL, 0, 0,
     "sources[].auth.password_file or sources[].auth.password_env", false, "Refused."},
    {"sources[].auth.client_secret", OT_CLEAR, SC_SOURCE, 0, NULL, 0, 0,
     "sources[].auth.key_file (SMART uses a signed assertion)", false, "Refused."},
    {"sources[].auth.client_id", OT_STR, S(auth_client_id), NULL, NO, false, "smart: client id."},
    {"sources[].auth.key_file", OT_SECRET_FILE, S(auth_key_file), NULL, NO, false,
     "smart: PEM private key (RSA >= 2048 or EC P-384)."},
    {"sources[].auth.kid", OT_STR, S(auth_kid), NULL, NO, false, "smart: kid of the registered public key."},
    {"sources[].auth.alg", OT_ENUM, SC_SOURCE, offsetof(config_source, auth_alg), NULL, 0, 0,
     "RS384|ES384", false, "smart: signing algorithm (default: from the key)."},
    {"sources[].auth.scope", OT_STR, S(auth_scope), NULL, NO, false,
     "smart: requested scope (default: system read/search)."},
    {"sources[].auth.token_url", OT_STR, S(auth_token_url), NULL, NO, false,
     "smart: token endpoint (default: discovered via .well-known/smart-configuration)."},
};
#define N_OPTS (sizeof OPTS / sizeof OPTS[0])

/* Enum options stored as strings rather than indexes (their value is used as text). */
static bool enum_as_string(const opt *o)
{
    return !strcmp(o->name, "referral.urgency") || !strcmp(o->name, "sources[].auth.alg");
}

static const opt *opt_find(const char *name)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (!strcmp(OPTS[i].name, name))
            return &OPTS[i];
    return NULL;
}

static int enum_index(const char *values, const char *v)
{
    int idx = 0;
    size_t vl = strlen(v);
    for (const char *p = values;; idx++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == vl && !strncmp(p, v, n))
            return idx;
        if (!bar)
            return -1;
        p = bar + 1;
    }
}

/* ---- storing values -------------------------------------------------------------------- */

static void *field(void *base, const opt *o)
{
    return (char *)base + o->off;
}

static void set_str(void *base, const opt *o, const char *v)
{
    char **p = field(base, o);
    free(*p);
    *p = fhir_xstrdup(v);
}

static void strlist_free(config_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void strlist_push(config_strlist *l, const char *s)
{
    char **nv = fhir_xrealloc(l->v, (l->n + 1) * sizeof *nv);
    l->v = nv;
    l->v[l->n++] = fhir_xstrdup(s);
}

static char *resolve_path(const char *base_dir, const char *p)
{
    if (!p || p[0] == '/' || !base_dir || !base_dir[0] || !strcmp(base_dir, "."))
        return fhir_xstrdup(p);
    size_t n = strlen(base_dir) + strlen(p) + 2;
    char *r = fhir_xmalloc(n);
    snprintf(r, n, "%s/%s", base_dir, p);
    return r;
}

static void apply_default(void *base, const opt *o)
{
    if (!o->def)
        return;
    switch (o->type) {
    case OT_PATH:
        if (!strncmp(o->def, DATA_DEF, strlen(DATA_DEF))) {
            const char *p = fhir_datadir_path(o->def + strlen(DATA_DEF));
            set_str(base, o, p ? p : o->def);
            break;
        }
        set_str(base, o, o->def);
        break;
    case OT_STR:
    case OT_DATE:
    case OT_INSTANT:
        set_str(base, o, o->def);
        break;
    case OT_INT:
        *(long *)field(base, o) = strtol(o->def, NULL, 10);
        break;
    case OT_NUM:
        *(double *)field(base, o) = strtod(o->def, NULL);
        break;
    case OT_BOOL:
        *(bool *)field(base, o) = !strcmp(o->def, "true");
        break;
    case OT_ENUM:
        if (enum_as_string(o))
            set_str(base, o, o->def);
        else
            *(int *)field(base, o) = enum_index(o->values, o->def);
        break;
    case OT_STRLIST: {
        config_strlist *l = field(base, o);
        strlist_free(l);
        const char *p = o->def;
        while (*p) {
            const char *c = strchr(p, ',');
            size_t n = c ? (size_t)(c - p) : strlen(p);
            char tmp[128];
            snprintf(tmp, sizeof tmp, "%.*s", (int)n, p);
            strlist_push(l, tmp);
            if (!c)
                break;
            p = c + 1;
        }
        break;
    }
    default:
        break;
    }
}

static void apply_defaults(void *base, int scope)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (OPTS[i].scope == scope && OPTS[i].type != OT_OBJ && OPTS[i].type != OT_OBJLIST &&
            OPTS[i].type != OT_CLEAR)
            apply_default(base, &OPTS[i]);
}

/* ---- walking the tree ------------------------------------------------------------------- */

/* Where an option was set (config_key_line). */
struct config_keyline {
    const char *name; /* the option table's name (static) */
    size_t source;    /* index of the source for sources[] options */
    int line;
};

static void note_line(config *c, const opt *o, int line)
{
    c->keylines = fhir_xrealloc(c->keylines, (c->n_keylines + 1) * sizeof *c->keylines);
    c->keylines[c->n_keylines++] = (struct config_keyline){
        o->name, o->scope == SC_SOURCE && c->n_sources ? c->n_sources - 1 : 0, line};
}

/* Options a reload does not apply (the listener, the store, sign-in, the CDS service, the
 * center's intake and notices are built once at start); prefixes of OPTS names. */
static const char *const RESTART_ONLY[] = {"store.path", "store.busy_timeout_ms", "admin.bind",
                                           "admin.port", "admin.enabled", "admin.tls_cert_file",
                                           "admin.tls_key_file", "admin.insecure_plain_http",
                                           "admin.max_connections", "access.", "oidc.", "cds.",
                                           "intake.", "notify.", "role"};

static bool restart_only(const char *name)
{
    if (!strcmp(name, "notify.candidates")) /* read at each screening */
        return false;
    for (size_t i = 0; i < sizeof RESTART_ONLY / sizeof RESTART_ONLY[0]; i++)
        if (!strncmp(name, RESTART_ONLY[i], strlen(RESTART_ONLY[i])))
            return true;
    return false;
}

static bool same_text(const char *p, const char *q)
{
    return p == q || (p && q && !strcmp(p, q));
}

static bool same_value(const config *a, const config *b, const opt *o)
{
    const void *x = (const char *)a + o->off, *y = (const char *)b + o->off;
    switch (o->type) {
    case OT_INT:
        return *(const long *)x == *(const long *)y;
    case OT_NUM:
        return *(const double *)x == *(const double *)y;
    case OT_BOOL:
        return *(const bool *)x == *(const bool *)y;
    case OT_ENUM:
        if (!enum_as_string(o))
            return *(const int *)x == *(const int *)y;
        return same_text(*(char *const *)x, *(char *const *)y);
    case OT_STR:
    case OT_PATH:
    case OT_SECRET_FILE:
    case OT_SECRET_ENV:
    case OT_DATE:
    case OT_INSTANT:
        return same_text(*(char *const *)x, *(char *const *)y);
    case OT_STRLIST: {
        const config_strlist *l = x, *m = y;
        if (l->n != m->n)
            return false;
        for (size_t i = 0; i < l->n; i++)
            if (strcmp(l->v[i], m->v[i]))
                return false;
        return true;
    }
    default:
        return true; /* sections, clear secrets: nothing of their own */
    }
}

size_t config_restart_changes(const config *a, const config *b, char *out, size_t cap)
{
    size_t n = 0, len = 0;
    if (cap)
        out[0] = 0;
    for (size_t i = 0; i < sizeof OPTS / sizeof OPTS[0]; i++) {
        const opt *o = &OPTS[i];
        if (o->scope != SC_MAIN || !restart_only(o->name) || same_value(a, b, o))
            continue;
        n++;
        int w = snprintf(out + len, cap > len ? cap - len : 0, "%s%s", len ? "," : "", o->name);
        if (w > 0 && len + (size_t)w < cap)
            len += (size_t)w;
        else if (cap)
            out[len] = 0; /* whole names only */
    }
    return n;
}

int config_key_line(const config *c, const char *name, size_t source)
{
    bool src = !strncmp(name, "sources[].", 10);
    for (size_t i = c->n_keylines; i-- > 0;)
        if (!strcmp(c->keylines[i].name, name) && (!src || c->keylines[i].source == source))
            return c->keylines[i].line;
    return 0;
}

typedef struct walk {
    fhir_jsonfile *d;
    const char *base_dir;
    config *cfg;
} walk;

/* Closest option name with the same parent prefix. */
static const char *suggest(const char *prefix, const char *key)
{
    size_t pl = strlen(prefix);
    const char *best = NULL;
    size_t bestd = 3;
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *n = OPTS[i].name;
        if (strncmp(n, prefix, pl) || strchr(n + pl, '.'))
            continue;
        if (OPTS[i].type == OT_CLEAR)
            continue;
        size_t dd = fhir_suggest_distance(n + pl, key);
        if (dd < bestd) {
            bestd = dd;
            best = n + pl;
        }
    }
    return best;
}

static bool looks_secret(const char *key)
{
    static const char *words[] = {"token", "password", "secret", "passwd", "apikey", "api_key"};
    size_t kl = strlen(key);
    if ((kl > 5 && !strcmp(key + kl - 5, "_file")) || (kl > 4 && !strcmp(key + kl - 4, "_env")))
        return false;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strstr(key, words[i]))
            return true;
    return false;
}

static void walk_object(walk *w, const fhir_node *obj, const char *prefix, void *base);

/* A PEM key (admin.tls_key_file, sources[].auth.key_file) is read whole; the other secret
 * files (tokens, passwords, client secrets) by their first line. */
static bool is_key_file(const char *name)
{
    size_t n = strlen(name);
    return n >= 8 && !strcmp(name + n - 8, "key_file");
}

/* What check-config refuses in a secret file, so that `run` does not fail on it later: not a
 * readable regular file, empty, larger than CONFIG_SECRET_FILE_MAX, or (a token or password
 * file) a blank first line or one longer than FHIR_AUTH_SECRET_MAX. 0, or -1 with why. */
static int secret_file_check(const char *path, bool key, char *why, size_t n)
{
    struct stat st;
    FILE *f = NULL;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || !(f = fopen(path, "rb"))) {
        snprintf(why, n, "is not a readable file");
        return -1;
    }
    int rc = -1;
    if (st.st_size == 0)
        snprintf(why, n, "is empty");
    else if ((unsigned long long)st.st_size > CONFIG_SECRET_FILE_MAX)
        snprintf(why, n, "is %lld bytes, more than the %u a secret file may hold", (long long)st.st_size,
                 CONFIG_SECRET_FILE_MAX);
    else {
        char *buf = fhir_xmalloc(CONFIG_SECRET_FILE_MAX + 1);
        size_t len = fread(buf, 1, CONFIG_SECRET_FILE_MAX, f);
        buf[len] = 0;
        size_t first = strcspn(buf, "\r\n");
        bool blank = true, blank_first = true;
        for (size_t i = 0; i < len; i++)
            if (!isspace((unsigned char)buf[i])) {
                blank = false;
                if (i < first)
                    blank_first = false;
            }
        if (blank)
            snprintf(why, n, "is empty (only white space)");
        else if (!key && blank_first)
            snprintf(why, n, "has a blank first line (the secret is the first line)");
        else if (!key && first > FHIR_AUTH_SECRET_MAX)
            snprintf(why, n, "has a first line of %zu bytes, more than %u", first, FHIR_AUTH_SECRET_MAX);
        else
            rc = 0;
        free(buf);
    }
    fclose(f);
    return rc;
}

static void walk_value(walk *w, const opt *o, const fhir_node *v, const char *full, void *base)
{
    fhir_jsonfile *d = w->d;
    switch (o->type) {
    case OT_CLEAR:
        fhir_jsonfile_error(d, v, "%s: secrets are not accepted in the configuration file; use %s", full,
             o->values);
        return;
    case OT_OBJ:
        if (v->kind != FHIR_OBJECT) {
            fhir_jsonfile_error(d, v, "%s: expected an object, got %s", full, fhir_jsonfile_kind_a(v->kind));
            return;
        }
        {
            char pre[128];
            snprintf(pre, sizeof pre, "%s.", o->name);
            walk_object(w, v, pre, base);
        }
        return;
    case OT_OBJLIST: {
        if (v->kind != FHIR_ARRAY) {
            fhir_jsonfile_error(d, v, "%s: expected an array of objects, got %s", full, fhir_jsonfile_kind_a(v->kind));
            return;
        }
        size_t i = 0;
        for (const fhir_node *e = v->child; e; e = e->next, i++) {
            if (e->kind != FHIR_OBJECT) {
                fhir_jsonfile_error(d, e, "%s[%zu]: expected an object, got %s", full, i, fhir_jsonfile_kind_a(e->kind));
                continue;
            }
            if (w->cfg->n_sources >= CONFIG_MAX_SOURCES) {
                fhir_jsonfile_error(d, e, "%s: more than %d sources", full, CONFIG_MAX_SOURCES);
                return;
            }
            config_source *ns = fhir_xrealloc(w->cfg->sources, (w->cfg->n_sources + 1) * sizeof *ns);
            w->cfg->sources = ns;
            config_source *s = &ns[w->cfg->n_sources++];
            memset(s, 0, sizeof *s);
            s->line = e->line;
            s->kind = -1; /* required: no default */
            apply_defaults(s, SC_SOURCE);
            walk_object(w, e, "sources[].", s);
        }
        return;
    }
    default:
        break;
    }
    /* scalars */
    note_line(w->cfg, o, (int)v->line);
    switch (o->type) {
    case OT_STR:
    case OT_PATH:
    case OT_SECRET_FILE:
    case OT_SECRET_ENV:
    case OT_DATE:
    case OT_INSTANT:
    case OT_ENUM:
        if (v->kind != FHIR_STRING) {
            fhir_jsonfile_error(d, v, "%s: expected a string, got %s", full, fhir_jsonfile_kind_a(v->kind));
            return;
        }
        if (!v->text[0] && o->type != OT_STR) {
            fhir_jsonfile_error(d, v, "%s: must not be empty", full);
            return;
        }
        break;
    case OT_INT:
    case OT_NUM:
        if (v->kind != FHIR_NUMBER) {
            fhir_jsonfile_error(d, v, "%s: expected a number, got %s", full, fhir_jsonfile_kind_a(v->kind));
            return;
        }
        break;
    case OT_BOOL:
        if (v->kind != FHIR_BOOL) {
            fhir_jsonfile_error(d, v, "%s: expected true or false, got %s", full, fhir_jsonfile_kind_a(v->kind));
            return;
        }
        break;
    case OT_STRLIST:
        if (v->kind != FHIR_ARRAY) {
            fhir_jsonfile_error(d, v, "%s: expected an array of strings, got %s", full, fhir_jsonfile_kind_a(v->kind));
            return;
        }
        break;
    default:
        break;
    }
    switch (o->type) {
    case OT_STR:
        set_str(base, o, v->text);
        if (o->scope == SC_MAIN && o->off == offsetof(config, admin_bind))
            ((config *)base)->admin_bind_line = v->line;
        if (o->scope == SC_MAIN && o->off == offsetof(config, oidc_issuer))
            ((config *)base)->oidc_line = v->line;
        if (o->scope == SC_MAIN && o->off == offsetof(config, cds_enabled))
            ((config *)base)->cds_line = v->line;
        break;
    case OT_PATH: {
        char **p = field(base, o);
        free(*p);
        *p = resolve_path(w->base_dir, v->text);
        break;
    }
    case OT_SECRET_FILE: {
        char *path = resolve_path(w->base_dir, v->text);
        char why[128];
        if (secret_file_check(path, is_key_file(o->name), why, sizeof why))
            fhir_jsonfile_error(d, v, "%s: secret file %s %s", full, path, why);
        char **p = field(base, o);
        free(*p);
        *p = path;
        break;
    }
    case OT_SECRET_ENV: {
        const char *val = getenv(v->text);
        if (!val)
            fhir_jsonfile_error(d, v, "%s: environment variable %s is not set", full, v->text);
        else if (!val[0])
            fhir_jsonfile_error(d, v, "%s: environment variable %s is empty", full, v->text);
        else if (strlen(val) > FHIR_AUTH_SECRET_MAX)
            fhir_jsonfile_error(d, v, "%s: environment variable %s holds more than %u bytes", full, v->text,
                                FHIR_AUTH_SECRET_MAX);
        set_str(base, o, v->text);
        break;
    }
    case OT_DATE: {
        int64_t day;
        if (fhir_clock_parse_ymd(v->text, &day) != 0) {
            fhir_jsonfile_error(d, v, "%s: \"%s\" is not a date YYYY-MM-DD", full, v->text);
            return;
        }
        set_str(base, o, v->text);
        break;
    }
    case OT_INSTANT: {
        int64_t ms;
        if (fhir_clock_parse_instant(v->text, &ms) != 0) {
            fhir_jsonfile_error(d, v, "%s: \"%s\" is not a FHIR instant", full, v->text);
            return;
        }
        set_str(base, o, v->text);
        break;
    }
    case OT_ENUM: {
        int idx = enum_index(o->values, v->text);
        if (idx < 0) {
            fhir_jsonfile_error(d, v, "%s: \"%s\" is not one of %s", full, v->text, o->values);
            return;
        }
        if (enum_as_string(o))
            set_str(base, o, v->text);
        else
            *(int *)field(base, o) = idx;
        if (o->scope == SC_MAIN && o->off == offsetof(config, referral_writeback))
            ((config *)base)->referral_writeback_line = v->line;
        break;
    }
    case OT_INT: {
        char *end;
        errno = 0;
        long long x = strtoll(v->text, &end, 10);
        if (*end || errno) {
            fhir_jsonfile_error(d, v, "%s: expected an integer, got %s", full, v->text);
            return;
        }
        if ((double)x < o->min || (double)x > o->max) {
            fhir_jsonfile_error(d, v, "%s: %lld is out of bounds [%.0f, %.0f]", full, x, o->min, o->max);
            return;
        }
        *(long *)field(base, o) = (long)x;
        break;
    }
    case OT_NUM: {
        double x = strtod(v->text, NULL);
        if (!isfinite(x) || x < o->min || x > o->max) {
            fhir_jsonfile_error(d, v, "%s: %s is out of bounds [%g, %g]", full, v->text, o->min, o->max);
            return;
        }
        *(double *)field(base, o) = x;
        if (!strcmp(o->name, "site.location.lat") || !strcmp(o->name, "site.location.lon"))
            w->cfg->site_has_location = true;
        break;
    }
    case OT_BOOL:
        *(bool *)field(base, o) = v->boolean;
        break;
    case OT_STRLIST: {
        config_strlist *l = field(base, o);
        strlist_free(l);
        size_t i = 0;
        for (const fhir_node *e = v->child; e; e = e->next, i++) {
            if (e->kind != FHIR_STRING || !e->text[0]) {
                fhir_jsonfile_error(d, e, "%s[%zu]: expected a non-empty string, got %s", full, i,
                     e->kind == FHIR_STRING ? "\"\"" : fhir_jsonfile_kind_a(e->kind));
                continue;
            }
            const char *sp = o->scope == SC_MAIN && o->off == offsetof(config, intake_clients) ? strchr(e->text, ' ')
                                                                                              : NULL;
            if (sp && sp[1] && sp[1] != '/') { /* "CLIENT_ID JWKS_FILE": the file beside the configuration */
                char *path = resolve_path(w->base_dir, sp + 1);
                size_t n = (size_t)(sp - e->text) + strlen(path) + 2;
                char *entry = fhir_xmalloc(n);
                snprintf(entry, n, "%.*s %s", (int)(sp - e->text), e->text, path);
                strlist_push(l, entry);
                free(entry);
                free(path);
            } else {
                strlist_push(l, e->text);
            }
        }
        break;
    }
    default:
        break;
    }
}

static void walk_object(walk *w, const fhir_node *obj, const char *prefix, void *base)
{
    fhir_jsonfile *d = w->d;
    /* the display name of this instance: sources[] becomes sources[i] */
    for (const fhir_node *m = obj->child; m; m = m->next) {
        char name[160];
        snprintf(name, sizeof name, "%s%s", prefix, m->key);
        char full[180];
        if (!strncmp(name, "sources[].", 10))
            snprintf(full, sizeof full, "sources[%zu].%s", w->cfg->n_sources - 1, name + 10);
        else
            snprintf(full, sizeof full, "%s", name);
        const opt *o = opt_find(name);
        if (!o) {
            const char *s = suggest(prefix, m->key);
            if (looks_secret(m->key))
                fhir_jsonfile_error(d, m, "%s: unknown option, and secrets are not accepted in the "
                     "configuration file (use a *_file or *_env option)", full);
            else if (s)
                fhir_jsonfile_error(d, m, "%s: unknown option (did you mean \"%s\"?)", full, s);
            else
                fhir_jsonfile_error(d, m, "%s: unknown option", full);
            continue;
        }
        if (m->kind == FHIR_NULL && !o->required && o->type != OT_CLEAR)
            continue; /* null = keep the default */
        walk_value(w, o, m, full, base);
    }
    /* required options of this object */
    size_t pl = strlen(prefix);
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *n = OPTS[i].name;
        if (!OPTS[i].required || strncmp(n, prefix, pl) || strchr(n + pl, '.'))
            continue;
        bool present = false;
        for (const fhir_node *m = obj->child; m; m = m->next)
            if (!strcmp(m->key, n + pl) && m->kind != FHIR_NULL)
                present = true;
        if (!present) {
            if (!strncmp(n, "sources[].", 10))
                fhir_jsonfile_error(d, obj, "sources[%zu].%s: required option missing", w->cfg->n_sources - 1,
                     n + 10);
            else
                fhir_jsonfile_error(d, obj, "%s: required option missing", n);
        }
    }
}

/* ---- cross-field rules ---------------------------------------------------------------------- */

static bool valid_name(const char *s)
{
    if (!s || !*s || strlen(s) > 64)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
            return false;
    return true;
}

/* The listener (serve.h) and OpenID Connect sign-in (oidc.h). */
static void check_listener(config *c, fhir_jsonfile *d, int root_line)
{
    int bl = c->admin_bind_line > 0 ? c->admin_bind_line : root_line;
    bool tls = c->admin_tls_cert_file || c->admin_tls_key_file;
    if (tls && (!c->admin_tls_cert_file || !c->admin_tls_key_file))
        fhir_jsonfile_error_line(d, bl, "admin: TLS needs both admin.tls_cert_file and admin.tls_key_file");
    if (c->admin_enabled && !tls && !c->admin_insecure_plain_http && !serve_is_loopback(c->admin_bind))
        fhir_jsonfile_error_line(d, bl, "admin.bind: plain HTTP on %s (not a loopback address) is refused: set admin.tls_cert_file "
             "and admin.tls_key_file, or bind to 127.0.0.1 behind a TLS proxy (admin.insecure_plain_http "
             "only for a proxy on another host)", c->admin_bind);
    int ol = c->oidc_line > 0 ? c->oidc_line : root_line;
    if (!c->oidc_issuer) {
        if (c->oidc_client_id || c->oidc_redirect_uri || c->oidc_role_map.n || c->oidc_client_secret_file ||
            c->oidc_client_secret_env)
            fhir_jsonfile_error_line(d, root_line, "oidc: the OpenID Connect settings need oidc.issuer");
        return;
    }
    if (!c->oidc_client_id)
        fhir_jsonfile_error_line(d, ol, "oidc: needs oidc.client_id");
    if (!c->oidc_redirect_uri)
        fhir_jsonfile_error_line(d, ol, "oidc: needs oidc.redirect_uri (our /auth/oidc/callback URL)");
    if (c->oidc_client_secret_file && c->oidc_client_secret_env)
        fhir_jsonfile_error_line(d, ol, "oidc: set only one of oidc.client_secret_file and oidc.client_secret_env");
    if (c->oidc_role_map.n == 0)
        fhir_jsonfile_error_line(d, ol, "oidc: needs oidc.role_map (\"GROUP=ROLE\" entries): nobody could sign in");
    for (size_t i = 0; i < c->oidc_role_map.n; i++) {
        const char *eq = strchr(c->oidc_role_map.v[i], '=');
        role r;
        if (!eq || eq == c->oidc_role_map.v[i] || role_parse(eq + 1, &r))
            fhir_jsonfile_error_line(d, ol, "oidc.role_map: \"%s\" is not GROUP=ROLE with ROLE one of viewer, clinician, intake, admin",
                 c->oidc_role_map.v[i]);
    }
}

/* Plain http:// to a host that is not loopback carries patient data and credentials in clear:
 * refused unless the source says insecure_plain_http. */
static void check_cleartext(fhir_jsonfile *d, const config_source *s, size_t i, const char *what, const char *url)
{
    if (s->insecure_plain_http || !fhir_url_cleartext_remote(url))
        return;
    char scheme[16], host[FHIR_URL_HOST_MAX];
    fhir_url_host(url, scheme, sizeof scheme, host, sizeof host);
    fhir_jsonfile_error_line(d, s->line, "sources[%zu].%s: \"%s\" is plain http:// to %s (not a loopback host): "
         "patient data and credentials would cross the network in clear; use https, or set "
         "sources[%zu].insecure_plain_http for a private network you control", i, what, url, host, i);
}

/* The CDS Hooks service (cds.h). */
static void check_cds(config *c, fhir_jsonfile *d, int root_line)
{
    if (!c->cds_enabled)
        return;
    int l = c->cds_line > 0 ? c->cds_line : root_line;
    fhir_error e;
    if (!c->admin_enabled)
        fhir_jsonfile_error_line(d, l, "cds.enabled: the CDS Hooks service runs on the listener: needs admin.enabled");
    size_t olen;
    if (!c->cds_public_url)
        fhir_jsonfile_error_line(d, l, "cds: needs cds.public_url (our base URL as the EHR calls it)");
    else if (oidc_check_url("cds.public_url", c->cds_public_url, &olen, &e))
        fhir_jsonfile_error_line(d, l, "%s", e.msg);
    else if (c->cds_public_url[olen] && strcmp(c->cds_public_url + olen, "/"))
        fhir_jsonfile_error_line(d, l, "cds.public_url: no path, only https://HOST[:PORT]");
    if (c->cds_clients.n == 0)
        fhir_jsonfile_error_line(d, l, "cds: needs cds.clients (\"ISS JWKS_URL\" entries): no EHR could call");
    for (size_t i = 0; i < c->cds_clients.n; i++) {
        const char *v = c->cds_clients.v[i], *sp = strchr(v, ' ');
        if (!sp || sp == v || strchr(sp + 1, ' ') || oidc_check_url("the JWKS URL", sp + 1, NULL, &e))
            fhir_jsonfile_error_line(d, l, "cds.clients: \"%s\" is not \"ISS JWKS_URL\" (one space; https URL)", v);
    }
    for (size_t i = 0; i < c->cds_fhir_servers.n; i++)
        if (oidc_check_url("cds.fhir_servers", c->cds_fhir_servers.v[i], NULL, &e))
            fhir_jsonfile_error_line(d, l, "%s", e.msg);
}

/* A center (role center, intake.h): the listener, our public URL and at least one site. */
static void check_intake(config *c, fhir_jsonfile *d, int root_line)
{
    if (c->role != 1)
        return;
    int l = config_key_line(c, "role", 0);
    l = l > 0 ? l : root_line;
    int pl = config_key_line(c, "intake.public_url", 0), cl = config_key_line(c, "intake.clients", 0);
    fhir_error e;
    size_t olen;
    if (!c->admin_enabled)
        fhir_jsonfile_error_line(d, l, "role center: referrals arrive on the listener: needs admin.enabled");
    if (!c->intake_public_url)
        fhir_jsonfile_error_line(d, l, "role center: needs intake.public_url (our base URL as referring sites call it)");
    else if (oidc_check_url("intake.public_url", c->intake_public_url, &olen, &e))
        fhir_jsonfile_error_line(d, pl > 0 ? pl : l, "%s", e.msg);
    else if (c->intake_public_url[olen] && strcmp(c->intake_public_url + olen, "/"))
        fhir_jsonfile_error_line(d, pl > 0 ? pl : l, "intake.public_url: no path, only https://HOST[:PORT]");
    if (c->intake_clients.n == 0)
        fhir_jsonfile_error_line(d, l, "role center: needs intake.clients (\"CLIENT_ID JWKS_FILE\" entries): no site could send");
    for (size_t i = 0; i < c->intake_clients.n; i++) {
        const char *v = c->intake_clients.v[i], *sp = strchr(v, ' ');
        if (!sp || sp == v || !sp[1] || strchr(sp + 1, ' '))
            fhir_jsonfile_error_line(d, cl > 0 ? cl : l,
                                     "intake.clients: \"%s\" is not \"CLIENT_ID JWKS_FILE\" (one space)", v);
    }
}

/* Notifications: a link base with any channel, TLS for email, a webhook in clear only on
 * loopback, one secret source each. */
static void check_notify(config *c, fhir_jsonfile *d, int root_line)
{
    int el = config_key_line(c, "notify.email.url", 0), wl = config_key_line(c, "notify.webhook.url", 0);
    if (!c->notify_email_url && !c->notify_webhook_url) {
        if (c->notify_email_to.n || c->notify_email_from || c->notify_public_url)
            fhir_jsonfile_error_line(d, root_line, "notify: the notification settings need notify.email.url or notify.webhook.url");
        return;
    }
    if (!c->notify_public_url)
        fhir_jsonfile_error_line(d, el ? el : wl, "notify: needs notify.public_url (the base of the links in notices)");
    else if (strncmp(c->notify_public_url, "https://", 8) && strncmp(c->notify_public_url, "http://", 7))
        fhir_jsonfile_error_line(d, config_key_line(c, "notify.public_url", 0), "notify.public_url: \"%s\" is not an http(s) URL",
             c->notify_public_url);
    if (c->notify_email_url) {
        if (strncmp(c->notify_email_url, "smtps://", 8) && strncmp(c->notify_email_url, "smtp://", 7))
            fhir_jsonfile_error_line(d, el, "notify.email.url: \"%s\" is not smtps:// or smtp:// (STARTTLS)", c->notify_email_url);
        if (!c->notify_email_from)
            fhir_jsonfile_error_line(d, el, "notify.email: needs from");
        if (c->notify_email_to.n == 0 || c->notify_email_to.n > 32)
            fhir_jsonfile_error_line(d, el, "notify.email: needs 1 to 32 addresses in to");
        if (c->notify_email_password_file && c->notify_email_password_env)
            fhir_jsonfile_error_line(d, el, "notify.email: set only one of password_file and password_env");
        if ((c->notify_email_password_file || c->notify_email_password_env) && !c->notify_email_user)
            fhir_jsonfile_error_line(d, el, "notify.email: a password needs user");
    }
    if (c->notify_webhook_url) {
        char scheme[16], host[FHIR_URL_HOST_MAX];
        if (!fhir_url_host(c->notify_webhook_url, scheme, sizeof scheme, host, sizeof host) ||
            (strcmp(scheme, "http") && strcmp(scheme, "https")))
            fhir_jsonfile_error_line(d, wl, "notify.webhook.url: \"%s\" is not an http(s) URL", c->notify_webhook_url);
        else if (fhir_url_cleartext_remote(c->notify_webhook_url))
            fhir_jsonfile_error_line(d, wl, "notify.webhook.url: plain http to %s (not a loopback host) is refused: use https",
                 host);
        if (c->notify_webhook_token_file && c->notify_webhook_token_env)
            fhir_jsonfile_error_line(d, wl, "notify.webhook: set only one of token_file and token_env");
    }
}

static void check_rules(config *c, fhir_jsonfile *d, int root_line)
{
    if (c->referral_writeback != CONFIG_WRITEBACK_NONE) {
        int line = c->referral_writeback_line > 0 ? c->referral_writeback_line : root_line;
        if (!c->referral_writeback_source) {
            fhir_jsonfile_error_line(d, line, "referral.writeback: needs referral.writeback_source (the EHR source written to)");
        } else {
            const config_source *ws = NULL;
            for (size_t i = 0; i < c->n_sources; i++)
                if (c->sources[i].name && !strcmp(c->sources[i].name, c->referral_writeback_source))
                    ws = &c->sources[i];
            if (!ws)
                fhir_jsonfile_error_line(d, line, "referral.writeback_source: \"%s\" is not a configured source",
                     c->referral_writeback_source);
            else if (!ws->base_url)
                fhir_jsonfile_error_line(d, line, "referral.writeback_source: source \"%s\" has no base_url",
                     c->referral_writeback_source);
        }
    }
    if (c->admin_token_file && c->admin_token_env)
        fhir_jsonfile_error_line(d, root_line, "admin: set only one of admin.token_file and admin.token_env");
    check_listener(c, d, root_line);
    check_cds(c, d, root_line);
    check_intake(c, d, root_line);
    check_notify(c, d, root_line);
    for (size_t i = 0; i < c->n_sources; i++) {
        config_source *s = &c->sources[i];
        if (s->name && !valid_name(s->name))
            fhir_jsonfile_error_line(d, s->line, "sources[%zu].name: \"%s\" must be 1-64 characters [A-Za-z0-9_-]", i,
                 s->name);
        for (size_t j = 0; j < i; j++)
            if (s->name && c->sources[j].name && !strcmp(s->name, c->sources[j].name))
                fhir_jsonfile_error_line(d, s->line, "sources[%zu].name: \"%s\" is already used by sources[%zu] (line %d)",
                     i, s->name, j, c->sources[j].line);
        if (s->kind == CONFIG_SOURCE_FILES) {
            if (!s->dir)
                fhir_jsonfile_error_line(d, s->line, "sources[%zu]: kind files needs dir", i);
        } else if (s->kind >= 0) {
            if (!s->base_url)
                fhir_jsonfile_error_line(d, s->line, "sources[%zu]: kind %s needs base_url", i,
                     config_source_kind_name(s->kind));
            else if (strncmp(s->base_url, "http://", 7) && strncmp(s->base_url, "https://", 8))
                fhir_jsonfile_error_line(d, s->line, "sources[%zu].base_url: \"%s\" is not an http(s) URL", i, s->base_url);
            else
                check_cleartext(d, s, i, "base_url", s->base_url);
            if ((s->kind == CONFIG_SOURCE_GROUP || s->kind == CONFIG_SOURCE_BULK) && !s->group_id)
                fhir_jsonfile_error_line(d, s->line, "sources[%zu]: kind %s needs group_id", i,
                     config_source_kind_name(s->kind));
        }
        for (size_t t = 0; t < s->trusted_origins.n; t++) {
            const char *o = s->trusted_origins.v[t];
            char norm[300];
            const char *rest = strstr(o, "://");
            rest = rest ? rest + 3 + strcspn(rest + 3, "/?#") : NULL;
            if (!fhir_client_url_origin(o, norm, sizeof norm) || !rest ||
                (*rest && strcmp(rest, "/")))
                fhir_jsonfile_error_line(d, s->line, "sources[%zu].trusted_origins: \"%s\" is not an origin "
                     "(scheme://host[:port], http or https)", i, o);
            else
                check_cleartext(d, s, i, "trusted_origins", o);
        }
        if (s->types.n == 0)
            fhir_jsonfile_error_line(d, s->line, "sources[%zu].types: must name at least one resource type", i);
        for (size_t t = 0; t < s->types.n; t++) {
            const char *ty = s->types.v[t];
            bool ok = isupper((unsigned char)ty[0]);
            for (const char *p = ty; *p; p++)
                ok = ok && isalpha((unsigned char)*p);
            if (!ok)
                fhir_jsonfile_error_line(d, s->line, "sources[%zu].types: \"%s\" is not a resource type name", i, ty);
        }
        switch (s->auth_kind) {
        case CONFIG_AUTH_BEARER:
            if (!s->auth_token_file == !s->auth_token_env)
                fhir_jsonfile_error_line(d, s->line, "sources[%zu].auth: bearer needs exactly one of token_file and token_env", i);
            break;
        case CONFIG_AUTH_BASIC:
            if (!s->auth_user)
                fhir_jsonfile_error_line(d, s->line, "sources[%zu].auth: basic needs user", i);
            if (!s->auth_password_file == !s->auth_password_env)
                fhir_jsonfile_error_line(d, s->line,
                     "sources[%zu].auth: basic needs exactly one of password_file and password_env", i);
            break;
        case CONFIG_AUTH_SMART:
            if (!s->auth_client_id || !s->auth_key_file)
                fhir_jsonfile_error_line(d, s->line, "sources[%zu].auth: smart needs client_id and key_file", i);
            if (s->auth_token_url)
                check_cleartext(d, s, i, "auth.token_url", s->auth_token_url);
            break;
        default:
            break;
        }
    }
}

/* ---- public ----------------------------------------------------------------------------- */

const char *config_source_kind_name(int kind)
{
    static const char *n[] = {"search", "group", "bulk", "files"};
    return kind >= 0 && kind < 4 ? n[kind] : "?";
}

const char *config_auth_kind_name(int kind)
{
    static const char *n[] = {"none", "bearer", "basic", "smart"};
    return kind >= 0 && kind < 4 ? n[kind] : "?";
}

/* Frees the strings and lists a config (scope SC_MAIN) or a source (SC_SOURCE) owns. */
static void fields_free(void *base, int scope)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt *o = &OPTS[i];
        if (o->scope != scope)
            continue;
        switch (o->type) {
        case OT_STR: case OT_PATH: case OT_SECRET_FILE: case OT_SECRET_ENV: case OT_DATE:
        case OT_INSTANT:
            free(*(char **)field(base, o));
            break;
        case OT_ENUM:
            if (enum_as_string(o))
                free(*(char **)field(base, o));
            break;
        case OT_STRLIST:
            strlist_free(field(base, o));
            break;
        default:
            break;
        }
    }
}

void config_free(config *c)
{
    if (!c)
        return;
    fields_free(c, SC_MAIN);
    for (size_t i = 0; i < c->n_sources; i++)
        fields_free(&c->sources[i], SC_SOURCE);
    free(c->sources);
    free(c->keylines);
    free(c->path);
    free(c);
}

static const fhir_jsonfile_opts file_opts = {.max_bytes = CONFIG_MAX_BYTES, .comments = true};

/* Walks a read file into a config; every problem goes to f's list, which is then reported. */
static config *config_from(fhir_jsonfile *f, fhir_arena *a, const char *base_dir,
                           fhir_buf *diagbuf, size_t *n_errors, fhir_error *err)
{
    config *c = NULL;
    const fhir_node *root = fhir_jsonfile_root(f);
    if (root && root->kind != FHIR_OBJECT) {
        fhir_jsonfile_error(f, root, "the configuration must be a JSON object");
    } else if (root) {
        c = fhir_xcalloc(1, sizeof *c);
        c->path = fhir_xstrdup(fhir_jsonfile_name(f));
        apply_defaults(c, SC_MAIN);
        /* defaults of PATH options are absolute or relative to the working directory */
        walk w = {.d = f, .base_dir = base_dir, .cfg = c};
        walk_object(&w, root, "", c);
        check_rules(c, f, (int)root->line);
    }
    if (n_errors)
        *n_errors = fhir_jsonfile_error_count(f);
    if (fhir_jsonfile_result(f, err)) {
        if (diagbuf)
            fhir_jsonfile_write_errors(f, diagbuf);
        config_free(c);
        c = NULL;
    }
    fhir_jsonfile_free(f);
    fhir_arena_free(a);
    return c;
}

config *config_load_mem(const char *name, const char *text, size_t len, const char *base_dir,
                        fhir_buf *diagbuf, size_t *n_errors, fhir_error *err)
{
    fhir_error_clear(err);
    fhir_arena *a = fhir_arena_new(CONFIG_ARENA_CAP);
    fhir_jsonfile *f = fhir_jsonfile_parse(a, name ? name : "config", text, len, &file_opts);
    return config_from(f, a, base_dir, diagbuf, n_errors, err);
}

config *config_load(const char *path, fhir_buf *diagbuf, size_t *n_errors, fhir_error *err)
{
    fhir_error_clear(err);
    char *dir = fhir_xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        strcpy(dir, ".");
    fhir_arena *a = fhir_arena_new(CONFIG_ARENA_CAP);
    config *c = config_from(fhir_jsonfile_read(a, path, &file_opts), a, dir, diagbuf, n_errors,
                            err);
    free(dir);
    return c;
}

int config_read_secret(const char *file, const char *env, char **out, fhir_error *err)
{
    *out = NULL;
    if (file) {
        FILE *f = fopen(file, "r");
        if (!f)
            return fhir_error_set(err, "secret file %s: %s", file, strerror(errno));
        char line[4096];
        if (!fgets(line, sizeof line, f)) {
            fclose(f);
            return fhir_error_set(err, "secret file %s is empty", file);
        }
        fclose(f);
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0])
            return fhir_error_set(err, "secret file %s: first line is empty", file);
        *out = fhir_xstrdup(line);
        return 0;
    }
    if (env) {
        const char *v = getenv(env);
        if (!v || !*v)
            return fhir_error_set(err, "environment variable %s is not set", env);
        *out = fhir_xstrdup(v);
        return 0;
    }
    return fhir_error_set(err, "no secret configured (neither a file nor an environment variable)");
}

static const char *type_name(const opt *o)
{
    switch (o->type) {
    case OT_STR: return "string";
    case OT_PATH: return "path";
    case OT_SECRET_FILE: return "path (secret file)";
    case OT_SECRET_ENV: return "env var name";
    case OT_INT: return "integer";
    case OT_NUM: return "number";
    case OT_BOOL: return "boolean";
    case OT_ENUM: return "enum";
    case OT_DATE: return "date";
    case OT_INSTANT: return "instant";
    case OT_STRLIST: return "string[]";
    case OT_OBJ: return "object";
    case OT_OBJLIST: return "object[]";
    case OT_CLEAR: return "refused";
    }
    return "?";
}

int config_write_reference(fhir_buf *out)
{
    fhir_buf_puts(out, "| option | type | default | allowed | description |\n"
                       "|---|---|---|---|---|\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt *o = &OPTS[i];
        char allowed[160] = "";
        if (o->type == OT_INT || o->type == OT_NUM)
            snprintf(allowed, sizeof allowed, "%g … %g", o->min, o->max);
        else if (o->type == OT_ENUM) {
            snprintf(allowed, sizeof allowed, "`%s`", o->values);
            for (char *p = allowed; *p; p++)
                if (*p == '|')
                    *p = ',';
        } else if (o->type == OT_CLEAR)
            snprintf(allowed, sizeof allowed, "use %s", o->values);
        const char *def = o->def;
        char defbuf[200] = "";
        if (def) {
            snprintf(defbuf, sizeof defbuf, "`%s`", def);
        } else if (o->required)
            snprintf(defbuf, sizeof defbuf, "**required**");
        fhir_buf_printf(out, "| `%s` | %s | %s | %s | %s |\n", o->name, type_name(o), defbuf,
                        allowed, o->help);
    }
    return out->overflow ? -1 : 0;
}

/* ---- a source's HTTP client ------------------------------------------------------------ */

static fhir_auth_kind client_auth_kind(int k)
{
    switch (k) {
    case CONFIG_AUTH_BEARER: return FHIR_AUTH_BEARER;
    case CONFIG_AUTH_BASIC: return FHIR_AUTH_BASIC;
    case CONFIG_AUTH_SMART: return FHIR_AUTH_SMART;
    default: return FHIR_AUTH_NONE;
    }
}

void config_source_client(const config_source *cfg, fhir_client_config *cc)
{
    *cc = (fhir_client_config){
        .name = cfg->name, .base_url = cfg->base_url,
        .format = cfg->format ? FHIR_FORMAT_XML : FHIR_FORMAT_JSON,
        .total_timeout_ms = cfg->timeout_s * 1000, .max_concurrent = (unsigned)cfg->concurrency,
        .rate_per_s = cfg->rate_per_s, .max_pages = (unsigned)cfg->max_pages,
        .ca_file = cfg->ca_file,
    };
    if (cfg->kind == CONFIG_SOURCE_BULK)
        cc->format = FHIR_FORMAT_JSON; /* kick-off answers and manifests are JSON */
    cc->auth.kind = client_auth_kind(cfg->auth_kind);
    cc->auth.bearer_file = cfg->auth_token_file;
    cc->auth.bearer_env = cfg->auth_token_env;
    cc->auth.basic_user = cfg->auth_user;
    cc->auth.basic_pass_file = cfg->auth_password_file;
    cc->auth.basic_pass_env = cfg->auth_password_env;
    cc->auth.smart_client_id = cfg->auth_client_id;
    cc->auth.smart_key_file = cfg->auth_key_file;
    cc->auth.smart_kid = cfg->auth_kid;
    cc->auth.smart_alg = cfg->auth_alg;
    cc->auth.smart_scope = cfg->auth_scope;
    cc->auth.smart_token_url = cfg->auth_token_url;
    cc->trusted_origins = (const char *const *)cfg->trusted_origins.v;
    cc->n_trusted_origins = cfg->trusted_origins.n;
}
