/* serve_auth — the sign-in routes of the listener (plain server-rendered HTML forms; the web
 * app builds the real pages on top):
 *
 *   GET  /auth/login            the sign-in form (name + password; "Sign in with <provider>"
 *                               when OpenID Connect is configured)              public
 *   POST /auth/login            password sign-in: session cookie, 303 to next   public (Origin checked)
 *   POST /auth/logout           ends the session (CSRF token required)          public
 *   GET  /auth/session          who am I: {"signed_in", "user", "role", "csrf"}  public
 *   GET  /auth/oidc/start       302 to the identity provider (state, nonce, PKCE) public
 *   GET  /auth/oidc/callback    code exchange, ID token checks, session          public
 *
 * Cookies: the session cookie SERVE_SESSION_COOKIE is HttpOnly; Secure; SameSite=Strict;
 * Path=/ with no Max-Age (the server enforces the idle and absolute timeouts). The OpenID
 * Connect attempt is bound to the browser by "cartgate_oidc" (HttpOnly; Secure; SameSite=Lax,
 * so it comes back with the provider's redirect; Path=/auth/oidc; 10 minutes). Because a
 * SameSite=Strict cookie is not sent on the navigation that follows a cross-site redirect,
 * the callback answers with a small page that moves on to the destination itself.
 * `next` is honoured only for local paths (no open redirect). Every success and failure is
 * audited (access.h); the person sees a generic message, the log and the audit the reason. */
#ifndef SERVE_AUTH_H
#define SERVE_AUTH_H

#include "fhir_error.h"
#include "oidc.h"
#include "serve.h"

#define SERVE_OIDC_COOKIE "cartgate_oidc"

/* Registers the sign-in routes on s. o (may be NULL: passwords only) is owned from now on and
 * freed with s; provider_label names it on the sign-in page ("Hospital sign-in" when NULL). */
int serve_auth_add(serve *s, oidc *o, const char *provider_label, fhir_error *err);

/* The route table (tests check every route has a role). */
const serve_route *serve_auth_routes(size_t *n);

#endif
