/* fhir_names — the member names most frequent in FHIR resources, one shared copy of each.
 *
 * A fixed table of FHIR element names (the most frequent of Synthea and mCODE data first). The
 * binary form (fhir_bin.h) writes a table name as its index in one byte; the JSON readers that
 * share member names across documents (fhir_json_reader, fhir_json_stream) point a table name
 * at the table's own copy, and so does fhir_bin_read. That copy's address alone tells which
 * name it is (fhir_names_own): a writer handed a name read that way compares no bytes.
 *
 * The table is append-only: an index never changes meaning (the binary form stores indices).
 * Ownership: every string here is static, valid for the life of the program; nothing to free.
 * No growable buffer. */
#ifndef FHIR_NAMES_H
#define FHIR_NAMES_H

#include <stddef.h>
#include <stdint.h>

#define FHIR_NAMES_MAX 255 /* indices fit in one byte */

/* Number of names in the table (at most FHIR_NAMES_MAX). */
size_t fhir_names_count(void);

/* Index of the name s[0..n) in the table, or -1 (a hash lookup, every hit checked in full). */
int fhir_names_find(const char *s, size_t n);

/* The table's own copy of name i (static, NUL-terminated), its byte length in *len (len may be
 * NULL); NULL when i is past the table. */
const char *fhir_names_at(size_t i, uint32_t *len);

/* Index of the name when p is the table's own copy of it (as fhir_names_at / fhir_names_find's
 * callers got it), else -1 (any other pointer, NULL included): decided on the address, no bytes
 * of p compared. */
int fhir_names_own(const char *p);

#endif
