/* map_scan — cheap structural scans of FHIR JSON text, so a reader can drop what will not be
 * read before paying for a parse: the resourceType of a resource, and the entries of a Bundle
 * (byte spans and fullUrls) without building a tree. Strings, escapes and bracket nesting are
 * followed; literals and numbers are not validated (the parser does that for what is kept).
 * Names and values the scan reports must be plain (no backslash escape); text that needs
 * more than that is reported as "not scannable" and the caller parses it. */
#ifndef MAP_SCAN_H
#define MAP_SCAN_H

#include <stdbool.h>
#include <stddef.h>

#define MAP_SCAN_MAX_DEPTH 256 /* nesting followed; deeper text is not scannable */

/* The type of the resource object s[0..n) when "resourceType" is its first member (the usual
 * layout of bulk exports): true with *type / *len pointing into s. false otherwise (the text
 * may still be a resource whose type comes later). */
bool map_scan_first_type(const char *s, size_t n, const char **type, size_t *len);

/* One entry of a Bundle: the entry's "resource" object as a span of the scanned text, its
 * type (NULL when the resource has no "resourceType") and its "fullUrl" (url NULL when none).
 * All pointers point into the scanned text. */
typedef struct map_scan_entry {
    const char *res;
    size_t res_len;
    const char *type;
    size_t type_len;
    const char *url;
    size_t url_len;
} map_scan_entry;

/* Called per Bundle entry that has a "resource" object, in document order. */
typedef void (*map_scan_entry_fn)(void *ud, const map_scan_entry *e);

/* Scans the JSON document s[0..n) (a leading UTF-8 BOM allowed): when it is an object whose
 * resourceType is "Bundle", calls fn per entry and returns 1 (nested Bundles are entries like
 * any other: scan their span again); when it is another resource,
 * sets *type / *len (NULL / 0 without a resourceType) and returns 0; returns -1 when the text
 * is not scannable (malformed, deeper than MAP_SCAN_MAX_DEPTH, not an object, an escape in a
 * name or in a value the scan reports); entries delivered before a -1 are void. */
int map_scan_doc(const char *s, size_t n, map_scan_entry_fn fn, void *ud, const char **type,
                 size_t *len);

/* A JSON value as a span of the scanned text (p NULL when absent). */
typedef struct map_scan_span {
    const char *p;
    size_t len;
} map_scan_span;

/* The values of the named top-level members of the object s[0..n) (the first occurrence of
 * each; p NULL when absent). Returns 0, or -1 when the text is not scannable. */
int map_scan_members(const char *s, size_t n, const char *const *names, size_t count,
                     map_scan_span *out);

/* The contents of a span holding a plain string (no escape): true with *s / *n. */
bool map_scan_string(map_scan_span v, const char **s, size_t *n);

#endif
