/* jwks — key sets (JWKS) of outside signers, fetched by URL on the event loop and cached, for
 * verifying their JWS with jose.h (the EHR's CDS Hooks JWT, cds.h).
 *
 * Per URL: the last key set fetched and when. A key set is used for at most ttl_s; after that
 * it is fetched again (the old one is kept and used when the refetch fails, so a signer's
 * short outage does not lock it out). Rotation: a token whose kid the cached set does not hold
 * asks for a refetch (force), honoured at most once per min_refetch_s per URL, so a stream of
 * tokens with made-up kids cannot make us hammer the signer. Concurrent requests for one URL
 * share one fetch. URLs must be https (plain http only to a loopback host: tests). Time comes
 * from fhir_clock; nothing blocks. */
#ifndef JWKS_H
#define JWKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fhir_error.h"
#include "jose.h"

struct event_base;

#define JWKS_MAX_URLS 32        /* key sets cached at once (the oldest unused is evicted) */
#define JWKS_MAX_WAITERS 256    /* requests waiting for fetches at once */
#define JWKS_BODY_MAX (256u * 1024u)

typedef struct jwks_cache jwks_cache;

/* base (borrowed) runs the fetches; ca_file (copied, may be NULL: the system store) verifies
 * https; ttl_s 0 = 3600, min_refetch_s 0 = 10, timeout_ms 0 = 5000 per fetch. Caller frees
 * with jwks_cache_free() (pending waiters are dropped without their callbacks). */
jwks_cache *jwks_cache_new(struct event_base *base, const char *ca_file, int64_t ttl_s, int64_t min_refetch_s,
                           long timeout_ms);
void jwks_cache_free(jwks_cache *c);

/* keys: the URL's key set (borrowed until control returns to the event loop), or NULL with
 * err saying why (fetch failed, no usable key). */
typedef void (*jwks_ready_fn)(void *ud, const jose_jwks *keys, const fhir_error *err);
/* Gets the key set of url: from the cache when it is fresh and force is false (fn then runs
 * before jwks_get returns), else after a fetch (force: the token's kid was unknown). */
void jwks_get(jwks_cache *c, const char *url, bool force, jwks_ready_fn fn, void *ud);
/* Drops every waiter whose ud is ud (its request went away); their callbacks never run. */
void jwks_cancel(jwks_cache *c, void *ud);
/* Key sets fetched so far (tests and metrics). */
uint64_t jwks_fetches(const jwks_cache *c);

#endif
