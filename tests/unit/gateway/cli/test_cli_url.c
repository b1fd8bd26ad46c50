/* Unit tests of gateway/cli/cli_url: which hosts are loopback (IP literals and exactly
 * "localhost", never names that start like them), which admin URLs are accepted, the origin,
 * and joining API paths below a base path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "cli_url.h"

static void test_loopback_hosts(void **state)
{
    (void)state;
    const char *yes[] = {"127.0.0.1", "127.1.2.3", "127.255.255.255", "localhost", "LocalHost",
                         "::1", "[::1]", "[0:0:0:0:0:0:0:1]"};
    const char *no[] = {"127.attacker.example", "127.0.0.1.attacker.example", "localhost.example",
                        "localhostx", "xlocalhost", "128.0.0.1", "126.255.255.255", "10.0.0.1",
                        "192.0.2.1", "[::2]", "[::ffff:127.0.0.1]", "0.0.0.0", "", "[", "[]",
                        "127.0.0.1:80", "example.org"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        if (!cli_url_host_is_loopback(yes[i]))
            fail_msg("%s should be loopback", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        if (cli_url_host_is_loopback(no[i]))
            fail_msg("%s should not be loopback", no[i]);
    assert_false(cli_url_host_is_loopback(NULL));
}

static void expect_refused(const char *url, const char *why)
{
    fhir_error err = {0};
    cli_url *u = cli_url_admin(url, &err);
    if (u)
        fail_msg("%s was accepted", url);
    if (!strstr(err.msg, why))
        fail_msg("%s: error '%s' lacks '%s'", url, err.msg, why);
}

static void test_refused(void **state)
{
    (void)state;
    const char *only = "only https:// or http:// to a loopback address";
    expect_refused("http://127.attacker.example", only);
    expect_refused("http://127.attacker.example:8089/", only);
    expect_refused("http://127.0.0.1.attacker.example/", only);
    expect_refused("http://localhost.attacker.example", only);
    expect_refused("http://192.0.2.1:8089", only);
    expect_refused("http://[::ffff:127.0.0.1]:8089", only);
    expect_refused("ftp://127.0.0.1/", only);
    expect_refused("http://user:secret@127.0.0.1:8089", "no credentials in the URL");
    expect_refused("https://token@admin.example.org", "no credentials in the URL");
    expect_refused("http://127.0.0.1:8089/?x=1", "no query or fragment");
    expect_refused("https://admin.example.org/#top", "no query or fragment");
    expect_refused("127.0.0.1:8089", "not a URL");
    expect_refused("", "not a URL");
    expect_refused("http://", "not a URL");
    char longer[CLI_URL_MAX + 10];
    memset(longer, 'a', sizeof longer - 1);
    memcpy(longer, "https://", 8);
    longer[sizeof longer - 1] = 0;
    expect_refused(longer, "longer than");
}

static void expect_join(const char *base, const char *origin, const char *rel, const char *want)
{
    fhir_error err = {0};
    cli_url *u = cli_url_admin(base, &err);
    if (!u)
        fail_msg("%s refused: %s", base, err.msg);
    assert_string_equal(cli_url_origin(u), origin);
    char *s = cli_url_join(u, rel, &err);
    assert_non_null(s);
    assert_string_equal(s, want);
    free(s);
    cli_url_free(u);
}

static void test_accepted_and_joined(void **state)
{
    (void)state;
    expect_join("http://127.0.0.1:8089", "http://127.0.0.1:8089", "api/v1/referrals",
                "http://127.0.0.1:8089/api/v1/referrals");
    expect_join("http://127.0.0.1:8089//", "http://127.0.0.1:8089", "api/v1/referrals?state=sent",
                "http://127.0.0.1:8089/api/v1/referrals?state=sent");
    expect_join("http://localhost:9/", "http://localhost:9", "api/v1/referrals/3/approve",
                "http://localhost:9/api/v1/referrals/3/approve");
    expect_join("http://[::1]:8089", "http://[::1]:8089", "healthz", "http://[::1]:8089/healthz");
    expect_join("http://127.9.9.9", "http://127.9.9.9", "api/v1/referrals",
                "http://127.9.9.9/api/v1/referrals");
    /* https anywhere; a base path is a folder the API paths go below */
    expect_join("https://admin.example.org/cartgate", "https://admin.example.org",
                "api/v1/referrals", "https://admin.example.org/cartgate/api/v1/referrals");
    expect_join("https://admin.example.org:8443/cartgate/", "https://admin.example.org:8443",
                "api/v1/referrals", "https://admin.example.org:8443/cartgate/api/v1/referrals");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loopback_hosts),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_accepted_and_joined),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
