/* cartgate version — cartgate and the versions of the libraries it runs on. */
#include <curl/curl.h>
#include <event2/event.h>
#include <libxml/xmlversion.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <yajl/yajl_version.h>

#include "cli_opt.h"
#include "cmd.h"
#include "store.h"

void cmd_print_versions(void)
{
    int y = yajl_version();
    curl_version_info_data *c = curl_version_info(CURLVERSION_NOW);
    printf("yajl %d.%d.%d\n", y / 10000, y / 100 % 100, y % 100);
    printf("libcurl %s (%s)\n", c->version, c->ssl_version ? c->ssl_version : "no TLS");
    printf("libxml2 %s\n", LIBXML_DOTTED_VERSION);
    printf("libevent %s\n", event_get_version());
    printf("SQLite %s\n", store_sqlite_version());
    printf("OpenSSL %s\n", OpenSSL_version(OPENSSL_VERSION_STRING));
}

int cmd_version(int argc, char **argv)
{
    static const cli_cmd cmd = {
        .name = "version",
        .about = "Prints the cartgate version and the versions of the libraries it runs on.",
    };
    int first, rc = cli_parse(&cmd, argc, argv, &first);
    if (rc != CLI_GO)
        return rc;
    printf("cartgate %s\n", CARTGATE_VERSION);
    cmd_print_versions();
    return 0;
}
