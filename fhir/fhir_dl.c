/* fhir_dl — optional shared libraries opened on first use (see fhir_dl.h). */
#include "fhir_dl.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

int fhir_dl_load(const char *what, const char *const *sonames, size_t nlibs,
                 const fhir_dl_sym *syms, size_t nsyms, char why[FHIR_DL_WHY_MAX])
{
    void *h[16];
    why[0] = '\0';
    if (nlibs > sizeof h / sizeof *h) {
        snprintf(why, FHIR_DL_WHY_MAX, "%s: too many libraries (%zu)", what, nlibs);
        return -1;
    }
    for (size_t i = 0; i < nlibs; i++) {
        h[i] = dlopen(sonames[i], RTLD_NOW | RTLD_LOCAL);
        if (!h[i]) {
            const char *e = dlerror();
            snprintf(why, FHIR_DL_WHY_MAX, "%s is not installed: %s", what, e ? e : sonames[i]);
            return -1;
        }
    }
    for (size_t i = 0; i < nsyms; i++) {
        const fhir_dl_sym *s = &syms[i];
        if (s->lib < 0 || (size_t)s->lib >= nlibs) {
            snprintf(why, FHIR_DL_WHY_MAX, "%s: %s names no library", what, s->name);
            return -1;
        }
        void *sym = dlsym(h[s->lib], s->name);
        if (!sym && !s->optional) {
            snprintf(why, FHIR_DL_WHY_MAX, "%s is not installed: %s has no %s", what,
                     sonames[s->lib], s->name);
            return -1;
        }
        memcpy(s->slot, &sym, sizeof sym);
    }
    return 0;
}
