/* fhir_xml — FHIR R4 XML reader and writer over the fhir_node tree (libxml2).
 *
 * The reader produces exactly the tree the JSON reader produces for the same resource:
 * "resourceType" first, arrays for repeating elements (even with one item), primitives as
 * number/boolean/string per the R4 metadata (fhir_meta.h), primitive id/extension in the
 * "_name" twin (parallel arrays padded with null for repeating primitives), the narrative
 * div as one XHTML string, contained / Bundle.entry.resource as inline objects, decimals
 * keeping their text. The writer emits elements in StructureDefinition order.
 *
 * Hardening: no network (XML_PARSE_NONET), no entity substitution, no DTD loading; a
 * DOCTYPE or entity declaration is refused outright; size/depth/string caps come from
 * fhir_json_limits so both formats share one set of limits. */
#ifndef FHIR_XML_H
#define FHIR_XML_H

#include <stdbool.h>
#include <stddef.h>

#include "fhir_arena.h"
#include "fhir_buf.h"
#include "fhir_error.h"
#include "fhir_json.h"
#include "fhir_node.h"

#define FHIR_XML_NS "http://hl7.org/fhir"
#define FHIR_XHTML_NS "http://www.w3.org/1999/xhtml"

/* Parses one FHIR XML resource. The tree lives in arena a (borrowed, valid until the arena
 * is reset). lim may be NULL for the JSON defaults. On error returns NULL and err says what
 * and where ("line 12: unknown element 'Patient.foo'"). */
fhir_node *fhir_xml_parse(fhir_arena *a, const char *data, size_t len,
                          const fhir_json_limits *lim, fhir_error *err);

/* True when the first non-blank character (after an optional UTF-8 BOM) is '<'. */
bool fhir_xml_detect(const char *data, size_t len);

/* Parses XML or JSON, chosen by fhir_xml_detect(). Same ownership as fhir_xml_parse. */
fhir_node *fhir_xml_parse_any(fhir_arena *a, const char *data, size_t len,
                              const fhir_json_limits *lim, fhir_error *err);
/* Reads the whole of file path ("-" = standard input), at most lim->max_bytes, and parses it
 * as XML or JSON (fhir_xml_parse_any). Same ownership; errors start with the path. */
fhir_node *fhir_xml_parse_any_file(fhir_arena *a, const char *path,
                                   const fhir_json_limits *lim, fhir_error *err);

/* Writer flags. */
enum {
    FHIR_XML_COMPACT = 0,
    FHIR_XML_PRETTY = 1, /* two-space indent, one element per line */
};

/* Appends the XML of resource n (an object with "resourceType") to out, with an XML
 * declaration. Returns 0; -1 with err set when the tree is not valid FHIR for the R4
 * metadata (unknown element, array where one value belongs, wrong primitive kind, bad
 * div) or out's cap is hit. out may hold partial output after an error. */
int fhir_xml_write(fhir_buf *out, const fhir_node *n, int flags, fhir_error *err);

/* libxml2 is loaded (dlopen) at the first XML parse, not linked. This loads it now and writes
 * its version ("2.9.14") into buf: 0, or -1 with err set when it cannot be loaded. */
int fhir_xml_lib_version(char *buf, size_t cap, fhir_error *err);

#endif
