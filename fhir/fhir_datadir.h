/* fhir_datadir — where cartgate's data files are: the criteria, the mapping tables, the center
 * directory and the sample configuration. Installed layout: <datadir>/criteria/,
 * <datadir>/mappings/, <datadir>/centers.json, <datadir>/README-centers.md,
 * <datadir>/cartgate.conf (the documented sample).
 *
 * The data folder is, in this order:
 *   1. $CARTGATE_DATA_DIR (installed layout);
 *   2. the source tree, only when the running executable lives in the build tree it was built
 *      in (development; compiled in only with -DCARTGATE_SOURCE_TREE_FALLBACK=ON);
 *   3. <prefix>/share/cartgate, where <prefix> is the executable's folder's parent
 *      (/usr/bin/cartgate -> /usr/share/cartgate), so an installed tree can be moved;
 *   4. the install data folder compiled in (CMAKE_INSTALL_PREFIX/share/cartgate) when 3 does
 *      not exist or the executable's path cannot be read.
 * Configuration options (criteria.dir, mappings.dir, centers.file) and command-line options
 * override single items. Computed once per process (thread-safe). */
#ifndef FHIR_DATADIR_H
#define FHIR_DATADIR_H

/* Longest path this module builds (longer ones are cut and the item is not found). */
#define FHIR_DATADIR_PATH_MAX 4096u

typedef enum fhir_datadir_origin {
    FHIR_DATADIR_ENV,      /* $CARTGATE_DATA_DIR */
    FHIR_DATADIR_SOURCE,   /* the source tree (running from the build tree) */
    FHIR_DATADIR_PREFIX,   /* relative to the installed prefix */
    FHIR_DATADIR_COMPILED, /* the compiled-in install data folder */
} fhir_datadir_origin;

/* The data folder (for FHIR_DATADIR_SOURCE: the source tree's root); origin may be NULL.
 * Borrowed: valid for the whole process. */
const char *fhir_datadir(fhir_datadir_origin *origin);

/* The path of one data item: "criteria", "mappings", "centers.json", "README-centers.md" or
 * "cartgate.conf"; NULL for any other name. Borrowed: valid for the whole process. */
const char *fhir_datadir_path(const char *name);

/* Why that folder, in a few words (e.g. "installed prefix /usr", "$CARTGATE_DATA_DIR",
 * "source tree: running from the build tree /src/build"). Borrowed: process lifetime. */
const char *fhir_datadir_why(void);

#endif
