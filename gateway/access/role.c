/* role — the role table (see role.h). */
#include "role.h"

#include <string.h>

static const char *const names[ROLE_N_] = {"unset", "public", "viewer", "clinician", "intake", "admin"};

/* What holding each role grants. Read rows as "a <row> may act where <columns> is needed". */
static const role_mask grants[ROLE_N_] = {
    [ROLE_UNSET] = 0,
    [ROLE_PUBLIC] = 0,
    [ROLE_VIEWER] = ROLE_BIT(ROLE_VIEWER),
    [ROLE_CLINICIAN] = ROLE_BIT(ROLE_VIEWER) | ROLE_BIT(ROLE_CLINICIAN),
    [ROLE_INTAKE] = ROLE_BIT(ROLE_INTAKE),
    [ROLE_ADMIN] = ROLE_BIT(ROLE_VIEWER) | ROLE_BIT(ROLE_ADMIN),
};

const char *role_name(role r)
{
    return (unsigned)r < ROLE_N_ ? names[r] : "unset";
}

int role_parse(const char *name, role *out)
{
    if (!name)
        return -1;
    for (int r = ROLE_VIEWER; r < ROLE_N_; r++)
        if (!strcmp(name, names[r])) {
            *out = (role)r;
            return 0;
        }
    return -1;
}

role_mask role_grants(role r)
{
    return (unsigned)r < ROLE_N_ ? grants[r] : 0;
}

bool role_allows(role_mask have, role need)
{
    if (need == ROLE_PUBLIC)
        return true;
    if (need <= ROLE_PUBLIC || need >= ROLE_N_)
        return false;
    return (have & ROLE_BIT(need)) != 0;
}

role role_primary(role_mask mask)
{
    static const role order[] = {ROLE_ADMIN, ROLE_CLINICIAN, ROLE_INTAKE, ROLE_VIEWER};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (mask & ROLE_BIT(order[i]))
            return order[i];
    return ROLE_UNSET;
}
