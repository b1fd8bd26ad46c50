/* config_check — what check-config adds to config_load: every file and folder the
 * configuration names is opened and loaded the way `cartgate run` loads it (criteria folder
 * and the pending indications it enables, mapping tables, center directory, ZCTA table, the
 * listener's TLS certificate and key, the sources' credentials and CA bundles, the OpenID
 * Connect client secret), so a configuration that check-config calls ok does not make run
 * fail on a file. Each problem is one line "FILE:LINE: option: what", LINE being the line of
 * the option that names the file (for a default, the line of the object that would hold it). */
#ifndef CONFIG_CHECK_H
#define CONFIG_CHECK_H

#include <stddef.h>

#include "config.h"
#include "fhir_buf.h"

/* Appends one line per error to errors and per warning (what run survives but will not work
 * as meant: a drop folder or the store's folder that does not exist yet) to warnings (either
 * may be NULL). Returns the number of errors. */
size_t config_check_files(const config *c, fhir_buf *errors, fhir_buf *warnings);

#endif
