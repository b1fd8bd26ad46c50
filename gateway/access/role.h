/* role — the roles of cartgate and what each one may do (the role table).
 *
 *   viewer     read the worklist, patients and referrals
 *   clinician  viewer + approve, decline, re-route, dismiss (clinical acts)
 *   intake     the center side: the intake inbox (accept, decline, schedule); no site data
 *   admin      viewer + retry, users, tokens, settings (not a clinician: approving a referral
 *              is a clinical act and needs the clinician role)
 *
 * Every HTTP route names the role it needs (serve.h); ROLE_PUBLIC marks the few routes that
 * need nobody (health, sign-in). ROLE_UNSET is the zero value on purpose, so a route that
 * forgot to say is refused when it is registered.
 *
 * A principal holds a set of roles (a mask): a person has one role; the shared service token
 * of the admin API (admin.token_file) holds viewer, clinician and admin so automation written
 * against it keeps working, with its own name in the audit. */
#ifndef ROLE_H
#define ROLE_H

#include <stdbool.h>

typedef enum role {
    ROLE_UNSET = 0,   /* never valid on a route */
    ROLE_PUBLIC,      /* no authentication */
    ROLE_VIEWER,
    ROLE_CLINICIAN,
    ROLE_INTAKE,
    ROLE_ADMIN,
    ROLE_N_
} role;

/* A set of granted roles. */
typedef unsigned role_mask;

#define ROLE_BIT(r) (1u << (unsigned)(r))

/* "viewer", "clinician", "intake", "admin", "public", "unset". Static string. */
const char *role_name(role r);
/* Parses one of the four roles a person can hold; -1 for anything else ("public" and
 * "unset" included). */
int role_parse(const char *name, role *out);
/* The roles a holder of r is granted (the role table). */
role_mask role_grants(role r);
/* May a principal holding mask act on a route that needs `need`? PUBLIC: always;
 * UNSET: never. */
bool role_allows(role_mask have, role need);
/* The highest single role in mask (admin > clinician > intake > viewer), for display and the
 * audit; ROLE_UNSET when empty. */
role role_primary(role_mask mask);

#endif
