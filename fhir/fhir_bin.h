/* fhir_bin — a compact binary form of a fhir_node tree, for the daemon's resource cache.
 *
 * A resource is parsed from JSON once, when it arrives; the cache keeps it in this form, and
 * every later reader (the screening job, the referral package, the pages) gets the same tree
 * back without a second JSON parse: no lexing, no escapes, no UTF-8 checks (the text was
 * checked when it was parsed), member names of common FHIR elements in one byte, and every
 * string read in place from one copy of the bytes. The same tree in, the same bytes out, so a
 * resource sent again unchanged is recognized whatever its whitespace.
 *
 * Layout (version 1): FHIR_BIN_MAGIC, FHIR_BIN_VERSION, then one node. A node is a tag byte
 * (0 null, 1 false, 2 true, 3 number, 4 string, 5 object, 6 array); a number or string is
 * followed by its byte length (LEB128) and its bytes and a NUL; an object or array by its child
 * count (LEB128) and the children; an object's child is its member name then the node. A member
 * name is one byte: below 0xFF an index into the fixed table of FHIR element names of
 * fhir_names.h (append-only: an index never changes meaning), 0xFF followed by the name's
 * length, bytes and NUL. Not an interchange format: only this program writes and reads it.
 *
 * Ownership: writers append to the caller's buffer; a read tree lives in the caller's arena
 * (its strings in one copy of the bytes, in the same arena; table names and values static). */
#ifndef FHIR_BIN_H
#define FHIR_BIN_H

#include <stdbool.h>
#include <stddef.h>

#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "fhir_json.h"
#include "fhir_node.h"

#define FHIR_BIN_MAGIC 0xFB     /* first byte: never the first byte of JSON text (nor UTF-8) */
#define FHIR_BIN_VERSION 1
#define FHIR_BIN_MAX_DEPTH FHIR_JSON_DEFAULT_MAX_DEPTH /* nesting read back, as the reader's */

/* Appends the binary form of the tree n to out (within out's cap; the caller resets out).
 * 0, or -1 when the cap was hit (out->overflow set). */
int fhir_bin_write(fhir_buf *out, const fhir_node *n);

/* Are these bytes the binary form (rather than JSON text)? */
bool fhir_bin_is(const void *data, size_t len);

/* The tree the binary form holds, in arena a (the bytes are copied into a once; the tree's
 * strings point into that copy): valid until a is reset. NULL with err set when the bytes are
 * not a well-formed binary form of this version, or the arena's cap is hit. */
fhir_node *fhir_bin_read(fhir_arena *a, const void *data, size_t len, fhir_error *err);

/* A cached resource either way: the binary form (fhir_bin_is), else JSON text parsed with rd
 * (may be NULL: fhir_json_parse with limits of len bytes). Ownership as the reader used. */
fhir_node *fhir_bin_or_json_read(fhir_json_reader *rd, fhir_arena *a, const void *data, size_t len,
                                 fhir_error *err);

#endif
