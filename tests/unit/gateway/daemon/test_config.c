/* Unit tests of gateway/daemon/config: comments, every error kind with file:line, secrets refused in
 * clear, bounds, cross-field rules, defaults, relative paths, the generated reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* Loads text; returns the config (or NULL) and leaves the diagnostics in *diag (caller frees). */
static config *load(const char *text, fhir_buf *diag, size_t *n)
{
    fhir_buf_init(diag, 1u << 20);
    fhir_error err;
    return config_load_mem("t.conf", text, strlen(text), "/etc/cg", diag, n, &err);
}

static bool has_line(fhir_buf *diag, const char *needle)
{
    return diag->len && strstr(fhir_buf_cstr(diag), needle) != NULL;
}

#define MIN_OK "{\"site\":{\"id\":\"s1\"},\"admin\":{\"enabled\":false}}"

static void test_minimal_defaults(void **state)
{
    (void)state;
    fhir_buf d;
    size_t n = 99;
    config *c = load(MIN_OK, &d, &n);
    assert_non_null(c);
    assert_int_equal(n, 0);
    assert_string_equal(c->site_id, "s1");
    assert_string_equal(c->admin_bind, "127.0.0.1");
    assert_int_equal(c->admin_port, 8089);
    assert_int_equal(c->referral_mode, 0);
    assert_string_equal(c->store_path, "cartgate.db"); /* defaults are not resolved */
    assert_false(c->site_has_location);
    assert_int_equal(c->n_sources, 0);
    config_free(c);
    fhir_buf_free(&d);
}

static void test_comments_and_lines(void **state)
{
    (void)state;
    const char *text = "// leading comment\n"
                       "{\n"
                       "  /* a block\n"
                       "     over lines with \"quotes\" and // inside */\n"
                       "  \"site\": {\"id\": \"s1\", \"name\": \"a // not a comment\"},\n"
                       "  \"admin\": {\"enabled\": false},\n"
                       "  \"log\": {\"level\": \"loud\"} // trailing\n"
                       "}\n";
    fhir_buf d;
    size_t n;
    config *c = load(text, &d, &n);
    assert_null(c);
    assert_int_equal(n, 1);
    assert_true(has_line(&d, "t.conf:7: log.level: \"loud\" is not one of"));
    fhir_buf_free(&d);
    /* the same without the error loads, and the string keeps its // */
    const char *ok = "// c\n{\"site\": {\"id\": \"s1\", \"name\": \"a // b /* c */\"}, /* x */ \"admin\": {\"enabled\": false}}";
    c = load(ok, &d, &n);
    assert_non_null(c);
    assert_string_equal(c->site_name, "a // b /* c */");
    config_free(c);
    fhir_buf_free(&d);
}

static void test_every_error_reported(void **state)
{
    (void)state;
    const char *text = "{\n"                                                        /* 1 */
                       "  \"site\": {\"name\": 3},\n"                              /* 2 */
                       "  \"store\": {\"pth\": \"x\"},\n"                          /* 3 */
                       "  \"admin\": {\"port\": 70000, \"token_file\": \"/nonexistent/tok\"},\n" /* 4 */
                       "  \"referral\": {\"mode\": \"sometimes\"},\n"              /* 5 */
                       "  \"as_of\": \"2026-13-01\",\n"                             /* 6 */
                       "  \"sources\": [\n"                                         /* 7 */
                       "    {\"name\": \"a\", \"kind\": \"group\", \"base_url\": \"http://x\",\n" /* 8 */
                       "     \"interval_s\": 0, \"concurrency\": \"4\"},\n"       /* 9 */
                       "    {\"name\": \"a\", \"kind\": \"files\"}\n"             /* 10 */
                       "  ],\n"                                                     /* 11 */
                       "  \"extra\": true\n"                                        /* 12 */
                       "}\n";
    fhir_buf d;
    size_t n;
    config *c = load(text, &d, &n);
    assert_null(c);
    const char *want[] = {
        "t.conf:2: site.name: expected a string, got a number",
        "t.conf:2: site.id: required option missing",
        "t.conf:3: store.pth: unknown option (did you mean \"path\"?)",
        "t.conf:4: admin.port: 70000 is out of bounds [0, 65535]",
        "t.conf:4: admin.token_file: secret file /nonexistent/tok is not a readable file",
        "t.conf:5: referral.mode: \"sometimes\" is not one of approval|auto",
        "t.conf:6: as_of: \"2026-13-01\" is not a date YYYY-MM-DD",
        "t.conf:9: sources[0].interval_s: 0 is out of bounds [1, 86400]",
        "t.conf:9: sources[0].concurrency: expected a number, got a string",
        "t.conf:8: sources[0]: kind group needs group_id",
        "t.conf:8: sources[0].base_url: \"http://x\" is plain http:// to x (not a loopback host): patient data "
        "and credentials would cross the network in clear; use https, or set sources[0].insecure_plain_http "
        "for a private network you control",
        "t.conf:10: sources[1].name: \"a\" is already used by sources[0] (line 8)",
        "t.conf:10: sources[1]: kind files needs dir",
        "t.conf:12: extra: unknown option",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!has_line(&d, want[i]))
            fail_msg("missing diagnostic: %s\ngot:\n%s", want[i], fhir_buf_cstr(&d));
    }
    assert_int_equal(n, sizeof want / sizeof want[0]);
    fhir_buf_free(&d);
}

static void test_syntax_error_line(void **state)
{
    (void)state;
    fhir_buf d;
    size_t n;
    config *c = load("{\n \"site\": {\"id\": \"s1\"},\n \"admin\": {\"enabled\": false,}\n}", &d, &n);
    assert_null(c);
    assert_int_equal(n, 1);
    assert_true(has_line(&d, "t.conf:3: malformed JSON: ")); /* the one reader's wording (fhir_jsonfile) */
    fhir_buf_free(&d);
    c = load("{\"site\": {\"id\": \"a\"},\n\"site\": {\"id\": \"b\"}}", &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "t.conf:2: duplicate key \"site\" (first on line 1)"));
    fhir_buf_free(&d);
    c = load("[1]", &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "must be a JSON object"));
    fhir_buf_free(&d);
}

static void test_secrets_refused_in_clear(void **state)
{
    (void)state;
    const char *text = "{\"site\":{\"id\":\"s1\"},\n"
                       "\"admin\":{\"token\":\"abc\"},\n"
                       "\"sources\":[{\"name\":\"e\",\"kind\":\"search\",\"base_url\":\"https://e\",\n"
                       " \"auth\":{\"kind\":\"basic\",\"user\":\"u\",\"password\":\"p\"},\n"
                       " \"api_key\":\"k\"}]}";
    fhir_buf d;
    size_t n;
    config *c = load(text, &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "t.conf:2: admin.token: secrets are not accepted in the configuration file; use admin.token_file or admin.token_env"));
    assert_true(has_line(&d, "t.conf:4: sources[0].auth.password: secrets are not accepted"));
    assert_true(has_line(&d, "t.conf:5: sources[0].api_key: unknown option, and secrets are not accepted"));
    /* and the refused value never appears in a message */
    assert_null(strstr(fhir_buf_cstr(&d), "abc"));
    fhir_buf_free(&d);
}

static void test_secret_from_file_and_env(void **state)
{
    (void)state;
    char path[] = "/tmp/cg-test-tokenXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "tok-123\r\nsecond\n", 16), 16);
    close(fd);
    char text[512];
    snprintf(text, sizeof text, "{\"site\":{\"id\":\"s1\"},\"admin\":{\"token_file\":\"%s\"}}", path);
    fhir_buf d;
    size_t n;
    config *c = load(text, &d, &n);
    assert_non_null(c);
    char *s = NULL;
    fhir_error err;
    assert_int_equal(config_read_secret(c->admin_token_file, c->admin_token_env, &s, &err), 0);
    assert_string_equal(s, "tok-123");
    free(s);
    config_free(c);
    fhir_buf_free(&d);
    unlink(path);

    setenv("CG_TEST_ADMIN_TOKEN", "from-env", 1);
    c = load("{\"site\":{\"id\":\"s1\"},\"admin\":{\"token_env\":\"CG_TEST_ADMIN_TOKEN\"}}", &d, &n);
    assert_non_null(c);
    assert_int_equal(config_read_secret(NULL, c->admin_token_env, &s, &err), 0);
    assert_string_equal(s, "from-env");
    free(s);
    config_free(c);
    fhir_buf_free(&d);
    unsetenv("CG_TEST_ADMIN_TOKEN");
    c = load("{\"site\":{\"id\":\"s1\"},\"admin\":{\"token_env\":\"CG_TEST_ADMIN_TOKEN\"}}", &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "admin.token_env: environment variable CG_TEST_ADMIN_TOKEN is not set"));
    fhir_buf_free(&d);
    /* the listener without a shared token: people use their own tokens */
    c = load("{\"site\":{\"id\":\"s1\"}}", &d, &n);
    assert_non_null(c);
    assert_true(c->admin_enabled);
    assert_null(c->admin_token_file);
    assert_null(c->admin_token_env);
    config_free(c);
    fhir_buf_free(&d);
}

/* The listener: plain HTTP only on loopback unless said; TLS needs both files; OpenID
 * Connect needs its client, callback and a valid role map. */
static void test_listener_rules(void **state)
{
    (void)state;
    fhir_buf d;
    size_t n;
    config *c = load("{\"site\":{\"id\":\"s1\"},\n\"admin\":{\n \"bind\":\"0.0.0.0\"}}", &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "t.conf:3: admin.bind: plain HTTP on 0.0.0.0 (not a loopback address) is refused"));
    fhir_buf_free(&d);
    c = load("{\"site\":{\"id\":\"s1\"},\"admin\":{\"bind\":\"0.0.0.0\",\"insecure_plain_http\":true}}", &d, &n);
    assert_non_null(c);
    assert_true(c->admin_insecure_plain_http);
    config_free(c);
    fhir_buf_free(&d);
    c = load("{\"site\":{\"id\":\"s1\"},\"admin\":{\"bind\":\"::1\"}}", &d, &n);
    assert_non_null(c);
    config_free(c);
    fhir_buf_free(&d);
    c = load("{\"site\":{\"id\":\"s1\"},\"admin\":{\"bind\":\"10.1.2.3\",\"tls_cert_file\":\"c.pem\"}}", &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "TLS needs both admin.tls_cert_file and admin.tls_key_file"));
    fhir_buf_free(&d);
    c = load("{\"site\":{\"id\":\"s1\"},\n\"oidc\":{\"issuer\":\"https://idp.example\",\n"
             "\"role_map\":[\"oncology=clinician\",\"nurses=boss\"],\"client_secret\":\"x\"}}",
             &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "t.conf:2: oidc: needs oidc.client_id"));
    assert_true(has_line(&d, "oidc: needs oidc.redirect_uri"));
    assert_true(has_line(&d, "oidc.role_map: \"nurses=boss\" is not GROUP=ROLE"));
    assert_true(has_line(&d, "oidc.client_secret: secrets are not accepted"));
    fhir_buf_free(&d);
    c = load("{\"site\":{\"id\":\"s1\"},\"oidc\":{\"client_id\":\"cg\"}}", &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "oidc: the OpenID Connect settings need oidc.issuer"));
    fhir_buf_free(&d);
    c = load("{\"site\":{\"id\":\"s1\"},\"oidc\":{\"issuer\":\"https://idp.example\",\"client_id\":\"cg\","
             "\"redirect_uri\":\"https://cg.example/auth/oidc/callback\",\"role_map\":[\"*=viewer\"]},"
             "\"access\":{\"session_idle_s\":600}}",
             &d, &n);
    assert_non_null(c);
    assert_int_equal(c->oidc_role_map.n, 1);
    assert_true(c->oidc_provision);
    assert_string_equal(c->oidc_user_claim, "sub");
    assert_int_equal(c->access_session_idle_s, 600);
    assert_int_equal(c->access_session_max_s, 43200);
    config_free(c);
    fhir_buf_free(&d);
}

/* Cleartext: plain http:// to a host that is not loopback (base_url, auth.token_url, trusted
 * origins) is refused with FILE:LINE unless the source says insecure_plain_http. */
static void test_cleartext_refused(void **state)
{
    (void)state;
    fhir_buf d;
    size_t n;
    config *c = load("{\"site\":{\"id\":\"s1\"},\"admin\":{\"enabled\":false},\n\"sources\":[\n"
                     " {\"name\":\"a\",\"kind\":\"search\",\"base_url\":\"http://EHR.example:8080/fhir\",\n"
                     "  \"trusted_origins\":[\"http://files.example\",\"https://cdn.example\",\"http://127.0.0.2:9\"],\n"
                     "  \"auth\":{\"kind\":\"smart\",\"client_id\":\"c\",\"key_file\":\"/dev/null\",\n"
                     "   \"token_url\":\"http://auth.example/token\"}}]}",
                     &d, &n);
    assert_null(c);
    const char *want[] = {
        "t.conf:3: sources[0].base_url: \"http://EHR.example:8080/fhir\" is plain http:// to EHR.example (not a "
        "loopback host): patient data and credentials would cross the network in clear; use https, or set "
        "sources[0].insecure_plain_http for a private network you control",
        "t.conf:3: sources[0].trusted_origins: \"http://files.example\" is plain http:// to files.example (not a "
        "loopback host)",
        "t.conf:3: sources[0].auth.token_url: \"http://auth.example/token\" is plain http:// to auth.example (not "
        "a loopback host)",
        "t.conf:5: sources[0].auth.key_file: secret file /dev/null is not a readable file",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!has_line(&d, want[i]))
            fail_msg("missing diagnostic: %s\ngot:\n%s", want[i], fhir_buf_cstr(&d));
    assert_int_equal(n, 4);
    fhir_buf_free(&d);
    /* loopback http, https and the loud option pass */
    const char *good[] = {
        "{\"site\":{\"id\":\"s1\"},\"admin\":{\"enabled\":false},\"sources\":[{\"name\":\"a\",\"kind\":\"search\","
        "\"base_url\":\"http://127.0.0.1:8080/fhir\"},{\"name\":\"b\",\"kind\":\"search\",\"base_url\":"
        "\"http://localhost/fhir\"},{\"name\":\"c\",\"kind\":\"search\",\"base_url\":\"http://[::1]:80/fhir\"},"
        "{\"name\":\"d\",\"kind\":\"search\",\"base_url\":\"https://ehr.example/fhir\"}]}",
        "{\"site\":{\"id\":\"s1\"},\"admin\":{\"enabled\":false},\"sources\":[{\"name\":\"a\",\"kind\":\"search\","
        "\"base_url\":\"http://ehr:8080/fhir\",\"insecure_plain_http\":true,\"trusted_origins\":[\"http://files\"]}]}",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        c = load(good[i], &d, &n);
        if (!c)
            fail_msg("refused: %s", fhir_buf_cstr(&d));
        config_free(c);
        fhir_buf_free(&d);
    }
    /* names that only look like loopback are not */
    c = load("{\"site\":{\"id\":\"s1\"},\"admin\":{\"enabled\":false},\"sources\":[{\"name\":\"a\","
             "\"kind\":\"search\",\"base_url\":\"http://127.0.0.1.evil.example/fhir\"}]}",
             &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "is plain http:// to 127.0.0.1.evil.example (not a loopback host)"));
    fhir_buf_free(&d);
}

/* Secret files and variables that `run` could not use are refused by check-config already:
 * empty, only white space, a blank first line (tokens), a first line or a file too large. */
static void test_secret_files_checked(void **state)
{
    (void)state;
    char dir[] = "/tmp/cg-secrets.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[6][64];
    const char *names[] = {"empty", "spaces", "blankfirst", "longline", "huge", "good"};
    for (int i = 0; i < 6; i++) {
        snprintf(path[i], sizeof path[i], "%s/%s", dir, names[i]);
        FILE *f = fopen(path[i], "w");
        assert_non_null(f);
        if (i == 1)
            fputs("  \t\n\n", f);
        else if (i == 2)
            fputs("\nsecret-on-line-two\n", f);
        else if (i == 3)
            for (int k = 0; k < 17000; k++)
                fputc('a', f);
        else if (i == 4)
            for (int k = 0; k < 70000; k++)
                fputc(k % 64 ? 'b' : '\n', f);
        else if (i == 5)
            fputs("tok\n", f);
        fclose(f);
    }
    char text[4096];
    snprintf(text, sizeof text,
             "{\"site\":{\"id\":\"s1\"},\n"
             "\"admin\":{\"token_file\":\"%s\",\n"
             "  \"tls_cert_file\":\"c.pem\", \"tls_key_file\":\"%s\"},\n"
             "\"sources\":[{\"name\":\"a\",\"kind\":\"search\",\"base_url\":\"https://e.example\",\n"
             " \"auth\":{\"kind\":\"bearer\",\"token_file\":\"%s\"}},\n"
             " {\"name\":\"b\",\"kind\":\"search\",\"base_url\":\"https://e.example\",\n"
             " \"auth\":{\"kind\":\"basic\",\"user\":\"u\",\"password_file\":\"%s\"}},\n"
             " {\"name\":\"c\",\"kind\":\"search\",\"base_url\":\"https://e.example\",\n"
             " \"auth\":{\"kind\":\"smart\",\"client_id\":\"c\",\"key_file\":\"%s\"}},\n"
             " {\"name\":\"d\",\"kind\":\"search\",\"base_url\":\"https://e.example\",\n"
             " \"auth\":{\"kind\":\"bearer\",\"token_env\":\"CG_TEST_EMPTY_SECRET\"}}]}\n",
             path[0], path[1], path[2], path[3], path[4]);
    setenv("CG_TEST_EMPTY_SECRET", "", 1);
    fhir_buf d;
    size_t n;
    config *c = load(text, &d, &n);
    assert_null(c);
    char want[6][512];
    snprintf(want[0], sizeof want[0], "t.conf:2: admin.token_file: secret file %s is empty", path[0]);
    snprintf(want[1], sizeof want[1], "t.conf:3: admin.tls_key_file: secret file %s is empty (only white space)",
             path[1]);
    snprintf(want[2], sizeof want[2],
             "t.conf:5: sources[0].auth.token_file: secret file %s has a blank first line (the secret is the "
             "first line)", path[2]);
    snprintf(want[3], sizeof want[3],
             "t.conf:7: sources[1].auth.password_file: secret file %s has a first line of 17000 bytes, more "
             "than 16384", path[3]);
    snprintf(want[4], sizeof want[4],
             "t.conf:9: sources[2].auth.key_file: secret file %s is 70000 bytes, more than the 65536 a secret "
             "file may hold", path[4]);
    snprintf(want[5], sizeof want[5],
             "t.conf:11: sources[3].auth.token_env: environment variable CG_TEST_EMPTY_SECRET is empty");
    for (size_t i = 0; i < 6; i++)
        if (!has_line(&d, want[i]))
            fail_msg("missing diagnostic: %s\ngot:\n%s", want[i], fhir_buf_cstr(&d));
    assert_int_equal(n, 6);
    fhir_buf_free(&d);
    /* a good token file passes */
    snprintf(text, sizeof text, "{\"site\":{\"id\":\"s1\"},\"admin\":{\"token_file\":\"%s\"}}", path[5]);
    c = load(text, &d, &n);
    if (!c)
        fail_msg("%s", fhir_buf_cstr(&d));
    config_free(c);
    fhir_buf_free(&d);
    unsetenv("CG_TEST_EMPTY_SECRET");
    for (int i = 0; i < 6; i++)
        unlink(path[i]);
    rmdir(dir);
}

static void test_bounds_inclusive(void **state)
{
    (void)state;
    fhir_buf d;
    size_t n;
    config *c = load("{\"site\":{\"id\":\"s1\",\"location\":{\"lat\":90,\"lon\":-180}},\"admin\":{\"enabled\":false,\"port\":65535},"
                     "\"sources\":[{\"name\":\"f\",\"kind\":\"files\",\"dir\":\"drop\",\"interval_s\":86400,"
                     "\"concurrency\":64,\"rate_per_s\":0}]}",
                     &d, &n);
    assert_non_null(c);
    assert_true(c->site_has_location);
    assert_true(c->site_lat == 90.0);
    assert_int_equal(c->sources[0].interval_s, 86400);
    assert_string_equal(c->sources[0].dir, "/etc/cg/drop"); /* relative to the config file */
    assert_int_equal(c->sources[0].types.n, 10);             /* default type list */
    config_free(c);
    fhir_buf_free(&d);
    c = load("{\"site\":{\"id\":\"s1\",\"location\":{\"lat\":90.0001}},\"admin\":{\"enabled\":false},"
             "\"sources\":[{\"name\":\"f\",\"kind\":\"files\",\"dir\":\"/d\",\"concurrency\":65,\"rate_per_s\":-1,"
             "\"interval_s\":1.5,\"types\":[\"Patient\",\"bad type\",3]}]}",
             &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "site.location.lat: 90.0001 is out of bounds [-90, 90]"));
    assert_true(has_line(&d, "sources[0].concurrency: 65 is out of bounds [1, 64]"));
    assert_true(has_line(&d, "sources[0].rate_per_s: -1 is out of bounds [0, 10000]"));
    assert_true(has_line(&d, "sources[0].interval_s: expected an integer, got 1.5"));
    assert_true(has_line(&d, "sources[0].types[2]: expected a non-empty string"));
    assert_true(has_line(&d, "sources[0].types: \"bad type\" is not a resource type name"));
    fhir_buf_free(&d);
}

static void test_auth_rules(void **state)
{
    (void)state;
    fhir_buf d;
    size_t n;
    setenv("CG_TEST_T", "x", 1);
    config *c = load("{\"site\":{\"id\":\"s1\"},\"admin\":{\"enabled\":false},\"sources\":["
                     "{\"name\":\"a\",\"kind\":\"search\",\"base_url\":\"ftp://x\",\"auth\":{\"kind\":\"bearer\"}},"
                     "{\"name\":\"b\",\"kind\":\"bulk\",\"base_url\":\"https://x\",\"group_id\":\"g\",\"auth\":{\"kind\":\"smart\",\"client_id\":\"c\"}},"
                     "{\"name\":\"c d\",\"kind\":\"search\",\"base_url\":\"https://x\",\"auth\":{\"kind\":\"bearer\",\"token_env\":\"CG_TEST_T\"}}]}",
                     &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "sources[0].base_url: \"ftp://x\" is not an http(s) URL"));
    assert_true(has_line(&d, "sources[0].auth: bearer needs exactly one of token_file and token_env"));
    assert_true(has_line(&d, "sources[1].auth: smart needs client_id and key_file"));
    assert_true(has_line(&d, "sources[2].name: \"c d\" must be 1-64 characters"));
    assert_int_equal(n, 4);
    fhir_buf_free(&d);
    unsetenv("CG_TEST_T");
}

static void test_writeback_options(void **state)
{
    (void)state;
    fhir_buf d;
    size_t n = 99;
    /* default: none, no source needed */
    config *c = load(MIN_OK, &d, &n);
    assert_non_null(c);
    assert_int_equal(c->referral_writeback, CONFIG_WRITEBACK_NONE);
    assert_null(c->referral_writeback_source);
    config_free(c);
    fhir_buf_free(&d);

    const char *good = "{\"site\":{\"id\":\"s1\"},\"admin\":{\"enabled\":false},\n"
                       "\"referral\":{\"writeback\":\"task\",\"writeback_source\":\"ehr\"},\n"
                       "\"sources\":[{\"name\":\"ehr\",\"kind\":\"search\","
                       "\"base_url\":\"http://127.0.0.1:1/fhir\",\"types\":[\"Patient\"]}]}";
    c = load(good, &d, &n);
    assert_non_null(c);
    assert_int_equal(n, 0);
    assert_int_equal(c->referral_writeback, CONFIG_WRITEBACK_TASK);
    assert_string_equal(c->referral_writeback_source, "ehr");
    config_free(c);
    fhir_buf_free(&d);

    /* writeback without a source: file:line of the writeback option */
    c = load("{\"site\":{\"id\":\"s1\"},\"admin\":{\"enabled\":false},\n"
             "\n"
             "\"referral\":{\"writeback\":\"communication\"}}",
             &d, &n);
    assert_null(c);
    assert_int_equal(n, 1);
    assert_true(has_line(&d, "t.conf:3: referral.writeback: needs referral.writeback_source"));
    fhir_buf_free(&d);

    /* an unknown source, and an unknown kind */
    c = load("{\"site\":{\"id\":\"s1\"},\"admin\":{\"enabled\":false},\n"
             "\"referral\":{\"writeback\":\"communication\",\"writeback_source\":\"x\"}}",
             &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "t.conf:2: referral.writeback_source: \"x\" is not a configured source"));
    fhir_buf_free(&d);
    c = load("{\"site\":{\"id\":\"s1\"},\"admin\":{\"enabled\":false},\n"
             "\"referral\":{\"writeback\":\"fax\"}}",
             &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "t.conf:2: referral.writeback: \"fax\" is not one of none|communication|task"));
    fhir_buf_free(&d);
}

/* Consult-only proposals and pending products enabled by the site. */
static void test_consult_and_pending_options(void **state)
{
    (void)state;
    fhir_buf d;
    size_t n = 99;
    config *c = load(MIN_OK, &d, &n);
    assert_non_null(c);
    assert_int_equal(c->referral_consult_proposals, 0); /* none */
    assert_int_equal(c->criteria_enable_pending.n, 0);
    config_free(c);
    fhir_buf_free(&d);
    c = load("{\"site\":{\"id\":\"s1\"},\"admin\":{\"enabled\":false},\n"
             "\"criteria\":{\"enable_pending\":[\"anito-cel:MM-4L\"]},\n"
             "\"referral\":{\"consult_proposals\":\"early_consult\"}}",
             &d, &n);
    assert_non_null(c);
    assert_int_equal(n, 0);
    assert_int_equal(c->referral_consult_proposals, 2);
    assert_int_equal(c->criteria_enable_pending.n, 1);
    assert_string_equal(c->criteria_enable_pending.v[0], "anito-cel:MM-4L");
    config_free(c);
    fhir_buf_free(&d);
    c = load("{\"site\":{\"id\":\"s1\"},\"admin\":{\"enabled\":false},\n"
             "\"referral\":{\"consult_proposals\":\"always\"}}",
             &d, &n);
    assert_null(c);
    assert_true(has_line(&d, "t.conf:2: referral.consult_proposals: \"always\" is not one of "
                             "none|refer_now|early_consult"));
    fhir_buf_free(&d);
}

static void test_reference_table(void **state)
{
    (void)state;
    fhir_buf b;
    fhir_buf_init(&b, 0);
    assert_int_equal(config_write_reference(&b), 0);
    const char *t = fhir_buf_cstr(&b);
    assert_non_null(strstr(t, "| option | type | default | allowed | description |"));
    assert_non_null(strstr(t, "| `sources[].kind` | enum | **required** | `search,group,bulk,files` |"));
    assert_non_null(strstr(t, "| `admin.bind` | string | `127.0.0.1` |"));
    assert_non_null(strstr(t, "| `admin.token` | refused |"));
    fhir_buf_free(&b);
}

static void test_missing_file(void **state)
{
    (void)state;
    fhir_buf d;
    fhir_buf_init(&d, 4096);
    size_t n;
    fhir_error err;
    assert_null(config_load("/nonexistent/cartgate.conf", &d, &n, &err));
    assert_int_equal(n, 1);
    assert_non_null(strstr(err.msg, "/nonexistent/cartgate.conf: cannot open"));
    fhir_buf_free(&d);
}

static void test_sample_configs(void **state)
{
    (void)state;
    /* the shipped samples must pass check-config (tokens come from the environment) */
    setenv("CARTGATE_ADMIN_TOKEN", "t", 1);
    setenv("CARTGATE_EHR_TOKEN", "t", 1);
    const char *files[] = {"conf/cartgate.conf", "conf/demo.conf", "docker/cartgate.conf",
                           "docker/compose.conf"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", CARTGATE_SOURCE_DIR, files[i]);
        if (access(path, R_OK) != 0)
            fail_msg("missing %s", path);
        fhir_buf d;
        fhir_buf_init(&d, 1u << 16);
        size_t n;
        fhir_error err;
        config *c = config_load(path, &d, &n, &err);
        if (!c)
            fail_msg("%s", fhir_buf_cstr(&d));
        config_free(c);
        fhir_buf_free(&d);
    }
}


/* What a reload cannot apply is named, what it applies is not. */
static void test_restart_changes(void **state)
{
    (void)state;
    fhir_buf d1, d2, d3;
    size_t n1 = 9, n2 = 9, n3 = 9;
    config *a = load("{\"site\":{\"id\":\"s1\",\"name\":\"A\"},\"admin\":{\"enabled\":false},"
                     "\"store\":{\"path\":\"a.db\",\"retention_days\":30},"
                     "\"notify\":{\"candidates\":\"now\"},"
                     "\"cds\":{\"clients\":[\"ehr https://ehr.example/jwks\"]}}", &d1, &n1);
    config *b = load("{\"site\":{\"id\":\"s1\",\"name\":\"B\"},\"admin\":{\"enabled\":false},"
                     "\"store\":{\"path\":\"b.db\",\"retention_days\":60},"
                     "\"notify\":{\"candidates\":\"review\"},"
                     "\"cds\":{\"clients\":[\"ehr https://ehr.example/jwks2\"],\"fetch_timeout_ms\":900}}", &d2, &n2);
    config *c = load("{\"site\":{\"id\":\"s1\",\"name\":\"C\"},\"admin\":{\"enabled\":false},"
                     "\"store\":{\"path\":\"a.db\",\"retention_days\":90},"
                     "\"notify\":{\"candidates\":\"review\"},"
                     "\"cds\":{\"clients\":[\"ehr https://ehr.example/jwks\"]}}", &d3, &n3);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_int_equal(n1 + n2 + n3, 0);
    char out[256];
    assert_int_equal(config_restart_changes(a, b, out, sizeof out), 3);
    assert_string_equal(out, "store.path,cds.clients,cds.fetch_timeout_ms");
    /* site name, retention and notify.candidates apply at once: nothing to name */
    assert_int_equal(config_restart_changes(a, c, out, sizeof out), 0);
    assert_string_equal(out, "");
    /* a short buffer keeps whole names and still counts them all */
    char small[16];
    assert_int_equal(config_restart_changes(a, b, small, sizeof small), 3);
    assert_string_equal(small, "store.path");
    config_free(a);
    config_free(b);
    config_free(c);
    fhir_buf_free(&d1);
    fhir_buf_free(&d2);
    fhir_buf_free(&d3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_comments_and_lines),
        cmocka_unit_test(test_every_error_reported),
        cmocka_unit_test(test_syntax_error_line),
        cmocka_unit_test(test_cleartext_refused),
        cmocka_unit_test(test_secret_files_checked),
        cmocka_unit_test(test_secrets_refused_in_clear),
        cmocka_unit_test(test_secret_from_file_and_env),
        cmocka_unit_test(test_listener_rules),
        cmocka_unit_test(test_bounds_inclusive),
        cmocka_unit_test(test_auth_rules),
        cmocka_unit_test(test_writeback_options),
        cmocka_unit_test(test_consult_and_pending_options),
        cmocka_unit_test(test_reference_table),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_sample_configs),
        cmocka_unit_test(test_restart_changes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
