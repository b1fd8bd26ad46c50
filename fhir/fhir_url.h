/* fhir_url — where a URL goes, for the transport rules: is its host loopback, and is it plain
 * http:// to a host that is not (cleartext across a network). URLs are read with libcurl's URL
 * API (CURLU), never by hand. */
#ifndef FHIR_URL_H
#define FHIR_URL_H

#include <stdbool.h>
#include <stddef.h>

#define FHIR_URL_HOST_MAX 256 /* bytes of a host name handed back by fhir_url_host */

/* True when host (as in a URL: IPv6 literals may keep their brackets) is an IPv4 literal in
 * 127.0.0.0/8, the IPv6 literal ::1, or exactly the name "localhost" (any letter case). Names
 * that merely start like one (127.attacker.example, localhost.example) are not. */
bool fhir_url_host_is_loopback(const char *host);

/* The scheme ("http", "https", lower case) and host of an absolute URL, written into the
 * caller's buffers; false when url is not an absolute URL with a host or a buffer is too
 * small. */
bool fhir_url_host(const char *url, char *scheme, size_t scheme_len, char *host, size_t host_len);

/* True when url is plain http:// to a host that is not loopback (the transport rules refuse
 * it unless an insecure_plain_http option allows it); false for https, loopback http and
 * anything that is not an http(s) URL (other checks name those). */
bool fhir_url_cleartext_remote(const char *url);

#endif
