/* fhir_dl — optional shared libraries opened on first use (prefix fhir_dl).
 *
 * Libraries that only some work needs (libxml2 for XML, pango/cairo for a PDF) are not linked:
 * each costs every cartgate process its loading at start (issue 20). Their headers give the
 * types; fhir_dl_load opens the libraries and fills a table of function pointers once, when
 * the work first needs it (the caller runs it under pthread_once). */
#ifndef FHIR_DL_H
#define FHIR_DL_H

#include <stdbool.h>
#include <stddef.h>

#define FHIR_DL_WHY_MAX 512 /* bytes of the reason a load failed, NUL included */

/* One symbol: looked up in sonames[lib]; its address is copied into *slot (a function- or
 * data-pointer field of the caller's table). An optional one that is missing leaves *slot
 * NULL instead of failing the load. */
typedef struct fhir_dl_sym {
    int lib;
    const char *name;
    void *slot;
    bool optional;
} fhir_dl_sym;

/* Opens sonames[0..nlibs) (RTLD_NOW | RTLD_LOCAL) and fills every slot of syms[0..nsyms).
 * The handles stay open for the life of the process, also when a later library or symbol
 * fails (a library such as glib must never be unloaded). Returns 0, or -1 with why (caller's
 * buffer of FHIR_DL_WHY_MAX bytes) set to "<what> is not installed: <the loader's reason>" or
 * "<what> is not installed: <soname> has no <symbol>". Borrows every argument. */
int fhir_dl_load(const char *what, const char *const *sonames, size_t nlibs,
                 const fhir_dl_sym *syms, size_t nsyms, char why[FHIR_DL_WHY_MAX]);

#endif
