/* fhir_url — loopback and cleartext rules for URLs (see fhir_url.h). */
#include "fhir_url.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool fhir_url_host_is_loopback(const char *host)
{
    if (!host || !*host)
        return false;
    if (!strcasecmp(host, "localhost"))
        return true;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    char lit[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof lit) {
        memcpy(lit, host + 1, n - 2);
        lit[n - 2] = 0;
    } else if (n < sizeof lit) {
        memcpy(lit, host, n + 1);
    } else {
        return false;
    }
    struct in6_addr a6;
    return inet_pton(AF_INET6, lit, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

bool fhir_url_host(const char *url, char *scheme, size_t scheme_len, char *host, size_t host_len)
{
    if (!url || !scheme || !host || !scheme_len || !host_len)
        return false;
    scheme[0] = host[0] = '\0';
    CURLU *h = curl_url();
    if (!h)
        abort();
    char *s = NULL, *hn = NULL;
    bool ok = curl_url_set(h, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
              curl_url_get(h, CURLUPART_SCHEME, &s, 0) == CURLUE_OK &&
              curl_url_get(h, CURLUPART_HOST, &hn, 0) == CURLUE_OK && hn[0] &&
              strlen(s) < scheme_len && strlen(hn) < host_len;
    if (ok) {
        for (size_t i = 0; s[i]; i++)
            scheme[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] + 32 : s[i]);
        scheme[strlen(s)] = '\0';
        snprintf(host, host_len, "%s", hn);
    }
    curl_free(s);
    curl_free(hn);
    curl_url_cleanup(h);
    return ok;
}

bool fhir_url_cleartext_remote(const char *url)
{
    char scheme[16], host[FHIR_URL_HOST_MAX];
    if (!fhir_url_host(url, scheme, sizeof scheme, host, sizeof host))
        return false;
    return !strcmp(scheme, "http") && !fhir_url_host_is_loopback(host);
}
