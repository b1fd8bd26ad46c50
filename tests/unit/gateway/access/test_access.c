/* Unit tests: users, password sign-in, lockout with a growing delay, sessions (idle and
 * absolute timeouts, sign-out, password change, disabling), CSRF tokens, API tokens (shown
 * once, hashed at rest, role cap, expiry, revocation), the shared service token, OpenID
 * Connect identities (provisioning, linking, role updates, refusals) and the audit rows with
 * the person — on a real SQLite store in a temp dir, with the injectable clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <unistd.h>
#include <cmocka.h>

#include "access.h"
#include "fhir_clock.h"

#define T0 1800000000000LL

static char tmpdir[256];

typedef struct ctx {
    store *st;
    access_ctx *a;
    access_principal admin;
} ctx;

static int setup(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cartgate-access-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    char path[512];
    snprintf(path, sizeof path, "%s/a.db", tmpdir);
    fhir_error err = {0};
    ctx *c = calloc(1, sizeof *c);
    c->st = store_open(path, 0, &err);
    if (!c->st)
        return -1;
    fhir_clock_set_fixed(T0);
    /* cheaper scrypt than the default (test_pwhash checks the defaults) */
    access_config cfg = {.session_idle_s = 900, .session_max_s = 3600, .kdf = {.ln = 11, .r = 8, .p = 1}};
    c->a = access_new(c->st, &cfg);
    access_principal_local(&c->admin, "root");
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    ctx *c = *state;
    access_free(c->a);
    store_close(c->st);
    free(c);
    fhir_clock_set_fixed(-1);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Counts rows with an SQL query on a connection of the test's own (the store keeps its SQL to
 * itself; WAL lets a second reader see every committed change). */
static int64_t count(store *s, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(store_path(s), &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void add(ctx *c, const char *name, role r, const char *pw)
{
    fhir_error err = {0};
    if (access_user_add(c->a, name, NULL, r, false, pw, &c->admin, &err))
        fail_msg("add %s: %s", name, err.msg);
}

static void test_users(void **state)
{
    ctx *c = *state;
    fhir_error err = {0};
    add(c, "dr.ada", ROLE_CLINICIAN, "correct horse battery");
    assert_int_equal(access_user_add(c->a, "DR.ADA", NULL, ROLE_VIEWER, false, "another long password", &c->admin, &err), -1);
    assert_int_equal(err.code, STORE_CONFLICT);
    assert_int_equal(access_user_add(c->a, "bob", NULL, ROLE_VIEWER, false, "short", &c->admin, &err), -1);
    assert_non_null(strstr(err.msg, "at least 12"));
    assert_int_equal(access_user_add(c->a, "bad name", NULL, ROLE_VIEWER, false, NULL, &c->admin, &err), -1);
    assert_int_equal(access_user_add(c->a, "bob", NULL, ROLE_UNSET, false, NULL, &c->admin, &err), -1);
    assert_int_equal(access_user_add(c->a, "svc", NULL, ROLE_VIEWER, true, "a long password here", &c->admin, &err), -1);
    /* the password is stored as scrypt, never in clear */
    assert_int_equal(count(c->st, "SELECT count(*) FROM users WHERE pw_hash LIKE '$scrypt$ln=11,r=8,p=1$%'"), 1);
    assert_int_equal(count(c->st, "SELECT count(*) FROM users WHERE pw_hash LIKE '%horse%'"), 0);
    /* audited with the operator */
    assert_int_equal(count(c->st, "SELECT count(*) FROM audit WHERE action='user-add' AND actor='local:root' "
                                  "AND role='admin' AND source='local' AND referral_id IS NULL"),
                     1);
    assert_int_equal(access_user_set_role(c->a, "dr.ada", ROLE_VIEWER, &c->admin, &err), 0);
    assert_int_equal(access_user_set_role(c->a, "nobody", ROLE_VIEWER, &c->admin, &err), -1);
    assert_int_equal(count(c->st, "SELECT count(*) FROM audit WHERE action='user-role' AND detail LIKE '%clinician -> viewer%'"), 1);
}

static void test_password_sign_in_and_lockout(void **state)
{
    ctx *c = *state;
    fhir_error err = {0};
    add(c, "nurse.kim", ROLE_VIEWER, "correct horse battery");
    access_principal p;
    char cookie[ACCESS_COOKIE_LEN];
    int64_t retry;
    assert_int_equal(access_login_password(c->a, "nurse.kim", "correct horse battery", "10.0.0.5", &p, cookie, &retry, &err), ACCESS_OK);
    assert_int_equal(p.role, ROLE_VIEWER);
    assert_int_equal(p.via, ACCESS_VIA_SESSION);
    assert_string_equal(p.source, "10.0.0.5");
    assert_int_equal(strlen(cookie), 43);
    /* only the hash of the session id is stored */
    assert_int_equal(count(c->st, "SELECT count(*) FROM sessions WHERE length(id_hash) = 32"), 1);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM sessions WHERE id_hash = CAST('%s' AS BLOB)", cookie);
    assert_int_equal(count(c->st, sql), 0);
    /* 5 failures lock the name for 30 s; the right password is then refused too */
    for (int i = 1; i <= 5; i++)
        assert_int_equal(access_login_password(c->a, "nurse.kim", "wrong password!", "10.0.0.6", &p, cookie, &retry, &err),
                         i < 5 ? ACCESS_DENIED : ACCESS_DENIED);
    assert_int_equal(access_login_password(c->a, "nurse.kim", "correct horse battery", "10.0.0.5", &p, cookie, &retry, &err),
                     ACCESS_LOCKED);
    assert_int_equal(retry, 30);
    fhir_clock_advance(29 * 1000);
    assert_int_equal(access_login_password(c->a, "Nurse.Kim", "correct horse battery", "10.0.0.5", &p, cookie, &retry, &err),
                     ACCESS_LOCKED);
    assert_int_equal(retry, 1);
    /* after the delay: another failure doubles it (60 s), then 120 s; never permanent */
    fhir_clock_advance(2 * 1000);
    assert_int_equal(access_login_password(c->a, "nurse.kim", "wrong again!!", "10.0.0.6", &p, cookie, &retry, &err), ACCESS_DENIED);
    assert_int_equal(access_login_password(c->a, "nurse.kim", "x", "10.0.0.6", &p, cookie, &retry, &err), ACCESS_LOCKED);
    assert_int_equal(retry, 60);
    fhir_clock_advance(61 * 1000);
    assert_int_equal(access_login_password(c->a, "nurse.kim", "wrong again!!", "10.0.0.6", &p, cookie, &retry, &err), ACCESS_DENIED);
    assert_int_equal(access_login_password(c->a, "nurse.kim", "x", "10.0.0.6", &p, cookie, &retry, &err), ACCESS_LOCKED);
    assert_int_equal(retry, 120);
    fhir_clock_advance(121 * 1000);
    assert_int_equal(access_login_password(c->a, "nurse.kim", "correct horse battery", "10.0.0.5", &p, cookie, &retry, &err), ACCESS_OK);
    assert_int_equal(count(c->st, "SELECT count(*) FROM login_failures WHERE name='nurse.kim'"), 0);
    /* unknown names lock the same way (no hint which names exist) */
    for (int i = 0; i < 5; i++)
        assert_int_equal(access_login_password(c->a, "ghost", "whatever pw!", "10.0.0.7", &p, cookie, &retry, &err), ACCESS_DENIED);
    assert_int_equal(access_login_password(c->a, "ghost", "whatever pw!", "10.0.0.7", &p, cookie, &retry, &err), ACCESS_LOCKED);
    /* audit: successes and failures with the person (or unknown) and the source */
    assert_int_equal(count(c->st, "SELECT count(*) FROM audit WHERE action='sign-in' AND actor='nurse.kim' AND role='viewer' AND source='10.0.0.5'"), 2);
    assert_true(count(c->st, "SELECT count(*) FROM audit WHERE action='sign-in-failed' AND actor='nurse.kim' AND source='10.0.0.6'") >= 9);
    /* each failure that started a lock says for how long; each attempt refused while locked says so */
    assert_int_equal(count(c->st, "SELECT count(*) FROM audit WHERE action='sign-in-failed' AND detail LIKE '%locked for%'"), 4);
    assert_int_equal(count(c->st, "SELECT count(*) FROM audit WHERE action='sign-in-failed' AND detail LIKE '%locked after%'"), 5);
    assert_int_equal(count(c->st, "SELECT count(*) FROM audit WHERE actor='ghost'"), 0);
    assert_int_equal(count(c->st, "SELECT count(*) FROM audit WHERE actor='(unknown user)' AND source='10.0.0.7'"), 6);
}

static void test_sessions(void **state)
{
    ctx *c = *state;
    fhir_error err = {0};
    add(c, "dr.lee", ROLE_CLINICIAN, "correct horse battery");
    access_principal p, q;
    char cookie[ACCESS_COOKIE_LEN];
    int64_t retry;
    fhir_clock_set_fixed(T0);
    assert_int_equal(access_login_password(c->a, "dr.lee", "correct horse battery", "10.1.1.1", &p, cookie, &retry, &err), ACCESS_OK);
    assert_int_equal(access_check_session(c->a, cookie, "10.1.1.2", &q, &err), ACCESS_OK);
    assert_string_equal(q.name, "dr.lee");
    assert_true(role_allows(q.mask, ROLE_CLINICIAN));
    assert_int_equal(access_check_session(c->a, "garbage", "x", &q, &err), ACCESS_DENIED);
    char other[ACCESS_COOKIE_LEN];
    snprintf(other, sizeof other, "%s", cookie);
    other[5] = other[5] == 'A' ? 'B' : 'A';
    assert_int_equal(access_check_session(c->a, other, "x", &q, &err), ACCESS_DENIED);
    /* idle timeout (900 s): activity every 10 minutes keeps it alive up to the absolute
     * timeout (3600 s), then it ends however active the user is */
    for (int i = 1; i <= 5; i++) {
        fhir_clock_advance(600 * 1000);
        assert_int_equal(access_check_session(c->a, cookie, "10.1.1.2", &q, &err), ACCESS_OK);
    }
    fhir_clock_advance(600 * 1000); /* 3600 s after sign-in */
    assert_int_equal(access_check_session(c->a, cookie, "10.1.1.2", &q, &err), ACCESS_DENIED);
    assert_int_equal(count(c->st, "SELECT count(*) FROM sessions"), 0);
    /* idle (and a sign-in removes the sessions that timed out, read or not) */
    char stale[ACCESS_COOKIE_LEN];
    assert_int_equal(access_login_password(c->a, "dr.lee", "correct horse battery", "10.1.1.1", &p, stale, &retry, &err), ACCESS_OK);
    fhir_clock_advance(3600 * 1000);
    assert_int_equal(count(c->st, "SELECT count(*) FROM sessions"), 1);
    assert_int_equal(access_login_password(c->a, "dr.lee", "correct horse battery", "10.1.1.1", &p, cookie, &retry, &err), ACCESS_OK);
    assert_int_equal(count(c->st, "SELECT count(*) FROM sessions"), 1);
    fhir_clock_advance(899 * 1000);
    assert_int_equal(access_check_session(c->a, cookie, "10.1.1.2", &q, &err), ACCESS_OK);
    fhir_clock_advance(900 * 1000);
    assert_int_equal(access_check_session(c->a, cookie, "10.1.1.2", &q, &err), ACCESS_DENIED);
    /* sign-out */
    assert_int_equal(access_login_password(c->a, "dr.lee", "correct horse battery", "10.1.1.1", &p, cookie, &retry, &err), ACCESS_OK);
    assert_int_equal(access_logout(c->a, cookie, &p, &err), 0);
    assert_int_equal(access_check_session(c->a, cookie, "10.1.1.2", &q, &err), ACCESS_DENIED);
    assert_int_equal(count(c->st, "SELECT count(*) FROM audit WHERE action='sign-out' AND actor='dr.lee'"), 1);
    /* a password change and disabling end every session of the user */
    char c2[ACCESS_COOKIE_LEN];
    assert_int_equal(access_login_password(c->a, "dr.lee", "correct horse battery", "10.1.1.1", &p, cookie, &retry, &err), ACCESS_OK);
    assert_int_equal(access_login_password(c->a, "dr.lee", "correct horse battery", "10.1.1.3", &p, c2, &retry, &err), ACCESS_OK);
    assert_int_equal(access_user_passwd(c->a, "dr.lee", "a new long password", &c->admin, &err), 0);
    assert_int_equal(access_check_session(c->a, cookie, "x", &q, &err), ACCESS_DENIED);
    assert_int_equal(access_check_session(c->a, c2, "x", &q, &err), ACCESS_DENIED);
    assert_int_equal(access_login_password(c->a, "dr.lee", "correct horse battery", "10.1.1.1", &p, cookie, &retry, &err), ACCESS_DENIED);
    assert_int_equal(access_login_password(c->a, "dr.lee", "a new long password", "10.1.1.1", &p, cookie, &retry, &err), ACCESS_OK);
    assert_int_equal(access_user_disable(c->a, "dr.lee", true, &c->admin, &err), 0);
    assert_int_equal(access_check_session(c->a, cookie, "x", &q, &err), ACCESS_DENIED);
    assert_int_equal(access_login_password(c->a, "dr.lee", "a new long password", "10.1.1.1", &p, cookie, &retry, &err), ACCESS_DENIED);
    assert_int_equal(access_user_disable(c->a, "dr.lee", false, &c->admin, &err), 0);
    assert_int_equal(access_login_password(c->a, "dr.lee", "a new long password", "10.1.1.1", &p, cookie, &retry, &err), ACCESS_OK);
}

static void test_csrf(void **state)
{
    ctx *c = *state;
    fhir_error err = {0};
    add(c, "dr.csrf", ROLE_CLINICIAN, "correct horse battery");
    access_principal p, q, r;
    char k1[ACCESS_COOKIE_LEN], k2[ACCESS_COOKIE_LEN];
    int64_t retry;
    assert_int_equal(access_login_password(c->a, "dr.csrf", "correct horse battery", "a", &p, k1, &retry, &err), ACCESS_OK);
    assert_int_equal(access_login_password(c->a, "dr.csrf", "correct horse battery", "a", &q, k2, &retry, &err), ACCESS_OK);
    char t1[ACCESS_CSRF_LEN], t2[ACCESS_CSRF_LEN];
    access_csrf_token(&p, t1);
    access_csrf_token(&q, t2);
    assert_int_equal(strlen(t1), 43);
    assert_string_not_equal(t1, t2);
    /* the token is the same for every request of a session */
    assert_int_equal(access_check_session(c->a, k1, "a", &r, &err), ACCESS_OK);
    assert_true(access_csrf_check(&r, t1));
    assert_false(access_csrf_check(&r, t2));
    assert_false(access_csrf_check(&r, ""));
    assert_false(access_csrf_check(&r, NULL));
    char bad[ACCESS_CSRF_LEN];
    snprintf(bad, sizeof bad, "%s", t1);
    bad[0] = bad[0] == 'A' ? 'B' : 'A';
    assert_false(access_csrf_check(&r, bad));
    /* not a session: no CSRF token */
    access_principal svc;
    access_set_shared_token(c->a, "shared-secret-token");
    assert_int_equal(access_check_bearer(c->a, "shared-secret-token", "b", &svc, &err), ACCESS_OK);
    char t3[ACCESS_CSRF_LEN];
    access_csrf_token(&svc, t3);
    assert_string_equal(t3, "");
    assert_false(access_csrf_check(&svc, t1));
}

static void test_tokens(void **state)
{
    ctx *c = *state;
    fhir_error err = {0};
    add(c, "dr.tok", ROLE_CLINICIAN, "correct horse battery");
    char tok[ACCESS_TOKEN_LEN];
    int64_t id;
    assert_int_equal(access_token_create(c->a, "dr.tok", ROLE_UNSET, 30, "laptop", &c->admin, tok, &id, &err), 0);
    assert_int_equal(strncmp(tok, "cgt_", 4), 0);
    assert_int_equal(strlen(tok), 47);
    /* hashed at rest */
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM api_tokens WHERE hash = CAST('%s' AS BLOB) OR label = '%s'", tok, tok);
    assert_int_equal(count(c->st, sql), 0);
    assert_int_equal(count(c->st, "SELECT count(*) FROM api_tokens WHERE length(hash)=32 AND role='clinician'"), 1);
    access_principal p;
    assert_int_equal(access_check_bearer(c->a, tok, "10.2.2.2", &p, &err), ACCESS_OK);
    assert_string_equal(p.name, "dr.tok");
    assert_int_equal(p.via, ACCESS_VIA_TOKEN);
    assert_true(role_allows(p.mask, ROLE_CLINICIAN));
    assert_int_equal(p.token_id, id);
    /* a viewer token of a clinician acts as a viewer only; more than the user is refused */
    char vt[ACCESS_TOKEN_LEN];
    assert_int_equal(access_token_create(c->a, "dr.tok", ROLE_VIEWER, 30, NULL, &c->admin, vt, NULL, &err), 0);
    assert_int_equal(access_check_bearer(c->a, vt, "x", &p, &err), ACCESS_OK);
    assert_false(role_allows(p.mask, ROLE_CLINICIAN));
    assert_true(role_allows(p.mask, ROLE_VIEWER));
    assert_int_equal(access_token_create(c->a, "dr.tok", ROLE_ADMIN, 30, NULL, &c->admin, vt, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "more than its user"));
    assert_int_equal(access_token_create(c->a, "dr.tok", ROLE_VIEWER, 0, NULL, &c->admin, vt, NULL, &err), -1);
    /* demoting the user demotes the token */
    assert_int_equal(access_user_set_role(c->a, "dr.tok", ROLE_VIEWER, &c->admin, &err), 0);
    assert_int_equal(access_check_bearer(c->a, tok, "x", &p, &err), ACCESS_OK);
    assert_false(role_allows(p.mask, ROLE_CLINICIAN));
    assert_int_equal(access_user_set_role(c->a, "dr.tok", ROLE_CLINICIAN, &c->admin, &err), 0);
    /* disabled user: refused; enabled again: accepted */
    assert_int_equal(access_user_disable(c->a, "dr.tok", true, &c->admin, &err), 0);
    assert_int_equal(access_check_bearer(c->a, tok, "x", &p, &err), ACCESS_DENIED);
    assert_int_equal(access_user_disable(c->a, "dr.tok", false, &c->admin, &err), 0);
    assert_int_equal(access_check_bearer(c->a, tok, "x", &p, &err), ACCESS_OK);
    /* revoked */
    assert_int_equal(access_token_revoke(c->a, "dr.tok", id, &c->admin, &err), 0);
    assert_int_equal(access_check_bearer(c->a, tok, "x", &p, &err), ACCESS_DENIED);
    assert_int_equal(access_token_revoke(c->a, "dr.tok", id, &c->admin, &err), -1);
    /* expiry */
    char et[ACCESS_TOKEN_LEN];
    assert_int_equal(access_token_create(c->a, "dr.tok", ROLE_UNSET, 1, NULL, &c->admin, et, NULL, &err), 0);
    assert_int_equal(access_check_bearer(c->a, et, "x", &p, &err), ACCESS_OK);
    fhir_clock_advance(86400 * 1000LL);
    assert_int_equal(access_check_bearer(c->a, et, "x", &p, &err), ACCESS_DENIED);
    /* garbage */
    assert_int_equal(access_check_bearer(c->a, "cgt_xxx", "x", &p, &err), ACCESS_DENIED);
    assert_int_equal(access_check_bearer(c->a, "", "x", &p, &err), ACCESS_DENIED);
    /* a service account: tokens only, its own name in the audit */
    assert_int_equal(access_user_add(c->a, "ehr-bot", NULL, ROLE_VIEWER, true, NULL, &c->admin, &err), 0);
    char st[ACCESS_TOKEN_LEN];
    assert_int_equal(access_token_create(c->a, "ehr-bot", ROLE_UNSET, 365, "nightly", &c->admin, st, NULL, &err), 0);
    assert_int_equal(access_check_bearer(c->a, st, "10.9.9.9", &p, &err), ACCESS_OK);
    assert_true(p.service);
    assert_int_equal(access_audit(c->a, &p, "test-action", "x", "because", &err), 0);
    assert_int_equal(count(c->st, "SELECT count(*) FROM audit WHERE actor='ehr-bot' AND role='viewer' AND "
                                  "source='10.9.9.9' AND reason='because'"),
                     1);
    assert_int_equal(count(c->st, "SELECT count(*) FROM audit WHERE action IN ('token-create','token-revoke')"), 5);
    /* the shared service token */
    access_set_shared_token(c->a, "the-old-shared-token");
    assert_int_equal(access_check_bearer(c->a, "the-old-shared-token", "127.0.0.1", &p, &err), ACCESS_OK);
    assert_string_equal(p.name, ACCESS_SHARED_SERVICE);
    assert_true(role_allows(p.mask, ROLE_CLINICIAN) && role_allows(p.mask, ROLE_ADMIN));
    assert_false(role_allows(p.mask, ROLE_INTAKE));
    assert_int_equal(access_check_bearer(c->a, "the-old-shared-tokeN", "127.0.0.1", &p, &err), ACCESS_DENIED);
    assert_int_equal(access_check_bearer(c->a, "the-old-shared-token-", "127.0.0.1", &p, &err), ACCESS_DENIED);
    access_set_shared_token(c->a, NULL);
    assert_int_equal(access_check_bearer(c->a, "the-old-shared-token", "127.0.0.1", &p, &err), ACCESS_DENIED);
}

static void test_oidc_identities(void **state)
{
    ctx *c = *state;
    fhir_error err = {0};
    access_principal p;
    char cookie[ACCESS_COOKIE_LEN];
    access_oidc_identity id = {.subject = "https://idp/r u-100", .name = "u-100", .display_name = "Dr Grace",
                               .role = ROLE_CLINICIAN, .provision = true};
    assert_int_equal(access_login_oidc(c->a, &id, "10.3.3.3", &p, cookie, &err), ACCESS_OK);
    assert_int_equal(p.role, ROLE_CLINICIAN);
    assert_int_equal(count(c->st, "SELECT count(*) FROM users WHERE name='u-100' AND pw_hash IS NULL AND "
                                  "display_name='Dr Grace' AND oidc_subject='https://idp/r u-100'"),
                     1);
    access_principal q;
    assert_int_equal(access_check_session(c->a, cookie, "x", &q, &err), ACCESS_OK);
    /* the role follows the identity provider at every sign-in */
    id.role = ROLE_ADMIN;
    assert_int_equal(access_login_oidc(c->a, &id, "10.3.3.3", &p, cookie, &err), ACCESS_OK);
    assert_int_equal(p.role, ROLE_ADMIN);
    assert_int_equal(count(c->st, "SELECT count(*) FROM users WHERE name='u-100' AND role='admin'"), 1);
    assert_int_equal(count(c->st, "SELECT count(*) FROM audit WHERE action='user-role' AND actor='oidc'"), 1);
    /* no mapped role: refused and audited */
    id.role = ROLE_UNSET;
    assert_int_equal(access_login_oidc(c->a, &id, "10.3.3.3", &p, cookie, &err), ACCESS_DENIED);
    assert_non_null(strstr(err.msg, "no cartgate role"));
    /* unknown and no provisioning */
    access_oidc_identity id2 = {.subject = "https://idp/r u-200", .name = "u-200", .role = ROLE_VIEWER};
    assert_int_equal(access_login_oidc(c->a, &id2, "10.3.3.3", &p, cookie, &err), ACCESS_DENIED);
    /* a pre-created user (no password, no subject) is linked by name */
    assert_int_equal(access_user_add(c->a, "u-200", NULL, ROLE_VIEWER, false, NULL, &c->admin, &err), 0);
    assert_int_equal(access_login_oidc(c->a, &id2, "10.3.3.3", &p, cookie, &err), ACCESS_OK);
    assert_int_equal(count(c->st, "SELECT count(*) FROM users WHERE name='u-200' AND oidc_subject='https://idp/r u-200'"), 1);
    /* a local user with a password is never taken over by a same-named identity */
    add(c, "u-300", ROLE_ADMIN, "correct horse battery");
    access_oidc_identity id3 = {.subject = "https://idp/r u-300", .name = "u-300", .role = ROLE_ADMIN, .provision = true};
    assert_int_equal(access_login_oidc(c->a, &id3, "10.3.3.3", &p, cookie, &err), ACCESS_DENIED);
    assert_non_null(strstr(err.msg, "another account"));
    /* disabled */
    assert_int_equal(access_user_disable(c->a, "u-200", true, &c->admin, &err), 0);
    assert_int_equal(access_login_oidc(c->a, &id2, "10.3.3.3", &p, cookie, &err), ACCESS_DENIED);
    assert_int_equal(count(c->st, "SELECT count(*) FROM audit WHERE action='sign-in-failed' AND detail LIKE 'OpenID Connect%'"), 4);
    assert_int_equal(count(c->st, "SELECT count(*) FROM audit WHERE action='sign-in' AND detail='OpenID Connect sign-in'"), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_sign_in_and_lockout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_csrf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oidc_identities, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
