/* centers — the directory of CAR T treatment centers (conf/centers.json).
 *
 * Schema: conf/README-centers.md. The loader checks every field and reports the first error
 * as "FILE:LINE: what is wrong". Everything a loaded directory holds (strings, arrays) lives
 * in the directory's own arena and is valid until centers_free(). */
#ifndef CENTERS_H
#define CENTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_error.h"

typedef enum centers_capacity {
    CENTERS_OPEN = 0,
    CENTERS_LIMITED,
    CENTERS_CLOSED,
} centers_capacity;

typedef enum centers_auth_type {
    CENTERS_AUTH_NONE = 0,
    CENTERS_AUTH_BEARER,        /* static token from token_file or token_env */
    CENTERS_AUTH_SMART_BACKEND, /* SMART Backend Services: client_id, token_url, key_file */
} centers_auth_type;

typedef struct centers_auth {
    centers_auth_type type;
    const char *token_file, *token_env;              /* bearer */
    const char *client_id, *token_url, *key_file;    /* smart-backend */
    const char *key_id, *scope;                      /* smart-backend, optional */
    int token_url_line;                              /* line of token_url in the file */
} centers_auth;

typedef struct centers_accreditation {
    const char *body;     /* "FACT", "manufacturer:kite", ... */
    const char *scope;    /* free text, e.g. "immune effector cells" */
    const char *expires;  /* "YYYY-MM-DD" as written */
    int64_t expires_day;  /* days since epoch; valid through that day inclusive */
    int line;
} centers_accreditation;

typedef struct centers_center {
    const char *id;
    const char *name;
    const char *fhir_base;
    int fhir_base_line;            /* line of fhir.base in the file */
    centers_auth auth;
    double lat, lon;
    const char *const *address_lines;
    size_t n_address_lines;
    const char *city, *state, *postal_code;
    centers_accreditation *accreditations;
    size_t n_accreditations;
    const char *const *products;   /* product keys, see centers_product_known() */
    size_t n_products;
    const char *const *diseases;   /* disease concept keys from mappings/FACTS.md */
    size_t n_diseases;
    const char *const *payers;     /* NULL/0 = not stated (never demotes) */
    size_t n_payers;
    bool payers_listed;
    centers_capacity capacity;
    const char *contact_name, *contact_phone, *contact_email;
    int line;                      /* line of the center's object in the file */
} centers_center;

typedef struct centers_dir {
    fhir_arena *arena;
    const char *path;
    centers_center *centers;
    size_t n;
} centers_dir;

/* Loads and validates a directory file. Caller frees with centers_free(). NULL on error with
 * err = "path:line: cause". */
centers_dir *centers_load(const char *path, fhir_error *err);
/* Same, from a buffer; name is used in messages. Caller frees. */
centers_dir *centers_load_mem(const char *name, const char *data, size_t len, fhir_error *err);
void centers_free(centers_dir *d);

/* The transport rule: every plain http:// endpoint of the directory (a center's fhir.base or
 * SMART token_url) on a host that is not loopback, one "FILE:LINE: what" line each appended to
 * diag (may be NULL). Returns how many; the daemon refuses a directory with any unless the
 * configuration's centers.insecure_plain_http allows them. */
size_t centers_cleartext_endpoints(const centers_dir *d, fhir_buf *diag);

/* Borrowed from d; NULL when absent. */
const centers_center *centers_find(const centers_dir *d, const char *id);

/* An accreditation still valid on `day` (days since epoch): a FACT one when there is one
 * (body starting with "FACT"), else the one expiring last; NULL when every accreditation
 * has expired. Borrowed from the center. */
const centers_accreditation *centers_valid_accreditation(const centers_center *c, int64_t day);

bool centers_offers_product(const centers_center *c, const char *product);
bool centers_treats_disease(const centers_center *c, const char *disease);
/* true when the center lists payers and `payer` is among them (case-insensitive);
 * callers check payers_listed first: an unlisted center accepts "unknown". */
bool centers_accepts_payer(const centers_center *c, const char *payer);

/* Vocabulary checks (static lists). */
bool centers_product_known(const char *key);
bool centers_disease_known(const char *key);
/* "open" / "limited" / "closed". Static string. */
const char *centers_capacity_name(centers_capacity c);

#endif
