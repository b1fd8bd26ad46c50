/* cds_jwt — claim and header checks of the CDS Client's JWT. See cds_jwt.h. */
#include "cds_jwt.h"

#include <stdio.h>
#include <string.h>

#include "jose.h"

const char *const CDS_JWT_ALGS[] = {"RS384", "ES384", NULL};

int cds_jwt_client_parse(const char *entry, char *buf, size_t n, cds_jwt_client *out, fhir_error *err)
{
    memset(out, 0, sizeof *out);
    if (!entry || strlen(entry) >= n)
        return fhir_error_set(err, "cds.clients entry missing or too long");
    snprintf(buf, n, "%s", entry);
    char *sp = strchr(buf, ' ');
    if (!sp || sp == buf || !sp[1] || strchr(sp + 1, ' '))
        return fhir_error_set(err, "cds.clients entry \"%.200s\" is not \"ISS JWKS_URL\"", entry);
    *sp = 0;
    out->iss = buf;
    out->jwks_url = sp + 1;
    return 0;
}

const cds_jwt_client *cds_jwt_pick(const cds_jwt_client *clients, size_t n, const fhir_node *header,
                                   const fhir_node *payload, fhir_error *err)
{
    if (!header || !payload)
        fhir_error_set(err, "not a compact JWS");
    if (!header || !payload)
        return NULL;
    const char *alg = fhir_node_str(fhir_node_get(header, "alg"));
    bool ok = false;
    for (size_t i = 0; alg && CDS_JWT_ALGS[i]; i++)
        if (!strcmp(alg, CDS_JWT_ALGS[i]))
            ok = true;
    if (!ok) {
        fhir_error_set(err, "algorithm %.32s is not accepted (RS384, ES384)", alg ? alg : "(none)");
        return NULL;
    }
    const fhir_node *typ = fhir_node_get(header, "typ");
    if (typ && (!fhir_node_str(typ) || strcmp(fhir_node_str(typ), "JWT"))) {
        fhir_error_set(err, "typ is not JWT");
        return NULL;
    }
    const char *iss = fhir_node_str(fhir_node_get(payload, "iss"));
    const cds_jwt_client *c = NULL;
    for (size_t i = 0; iss && i < n && !c; i++)
        if (!strcmp(clients[i].iss, iss))
            c = &clients[i];
    if (!c) {
        fhir_error_set(err, "iss %.200s is not an allowed CDS client", iss ? iss : "(none)");
        return NULL;
    }
    const fhir_node *jku = fhir_node_get(header, "jku");
    if (jku && (!fhir_node_str(jku) || strcmp(fhir_node_str(jku), c->jwks_url))) {
        fhir_error_set(err, "jku is not the key set configured for iss %.200s", iss);
        return NULL;
    }
    return c;
}

int cds_jwt_check_claims(const fhir_node *claims, const cds_jwt_client *client, const char *service_url,
                         int64_t now_ms, const char **jti, int64_t *exp_s, fhir_error *err)
{
    const char *iss = fhir_node_str(fhir_node_get(claims, "iss"));
    if (!iss || strcmp(iss, client->iss))
        return fhir_error_set(err, "iss %.200s is not %.200s", iss ? iss : "(none)", client->iss);
    size_t naud;
    if (!jose_aud_has(fhir_node_get(claims, "aud"), service_url, &naud))
        return fhir_error_set(err, "aud does not name this service (%.200s)", service_url);
    if (jose_check_times(claims, now_ms, CDS_JWT_SKEW_S * 1000, "JWT", err))
        return -1;
    int64_t exp = 0, iat = 0;
    fhir_node_int(fhir_node_get(claims, "exp"), &exp);
    fhir_node_int(fhir_node_get(claims, "iat"), &iat);
    if (exp - iat > CDS_JWT_MAX_LIFETIME_S)
        return fhir_error_set(err, "JWT valid for %lld s (at most %d)", (long long)(exp - iat), CDS_JWT_MAX_LIFETIME_S);
    const char *j = fhir_node_str(fhir_node_get(claims, "jti"));
    if (!j || !*j || strlen(j) >= CDS_JWT_MAX_JTI)
        return fhir_error_set(err, "JWT: no usable jti");
    if (jti)
        *jti = j;
    if (exp_s)
        *exp_s = exp;
    return 0;
}
