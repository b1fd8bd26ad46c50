/* tests/unit/unit_maps.h — shared by unit tests that check which shared libraries a process has
 * mapped (libraries loaded with dlopen on first use: libxml2, the PDF renderer). */
#ifndef UNIT_MAPS_H
#define UNIT_MAPS_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Whether a shared library whose file name starts with name is mapped into this process
 * (false also when /proc/self/maps cannot be read: the caller asserts what it expects). */
static inline bool unit_mapped(const char *name)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return false;
    char line[4096];
    bool found = false;
    while (fgets(line, sizeof line, f)) {
        const char *base = strrchr(line, '/');
        found |= base && !strncmp(base + 1, name, strlen(name));
    }
    fclose(f);
    return found;
}

#endif
