/* cartgate version — cartgate and the versions of the libraries it runs on. */
#include <curl/curl.h>
#include <event2/event.h>
#include <libxml/xmlversion.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli_opt.h"
#include "cmd.h"
#include "fhir_datadir.h"
#include "fhir_json.h"
#include "store.h"

void cmd_print_versions(void)
{
    char json[32];
    curl_version_info_data *c = curl_version_info(CURLVERSION_NOW);
    printf(FHIR_JSON_LIB " %s\n", fhir_json_lib_version(json, sizeof json));
    printf("libcurl %s (%s)\n", c->version, c->ssl_version ? c->ssl_version : "no TLS");
    printf("libxml2 %s\n", LIBXML_DOTTED_VERSION);
    printf("libevent %s\n", event_get_version());
    printf("SQLite %s\n", store_sqlite_version());
    printf("OpenSSL %s\n", OpenSSL_version(OPENSSL_VERSION_STRING));
}

/* Where the data files are looked for (fhir_datadir.h) and whether each is there. */
static void print_data_paths(void)
{
    static const char *const items[] = {"criteria", "mappings", "centers.json"};
    printf("data %s (%s)\n", fhir_datadir(NULL), fhir_datadir_why());
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++) {
        const char *p = fhir_datadir_path(items[i]);
        printf("  %-12s %s%s\n", items[i], p, access(p, R_OK) == 0 ? "" : " (missing)");
    }
    printf("  override with $CARTGATE_DATA_DIR, or criteria.dir / mappings.dir / centers.file\n");
}

int cmd_version(int argc, char **argv)
{
    static const cli_cmd cmd = {
        .name = "version",
        .about = "Prints cartgate's version, where it looks for its data files (criteria, mappings, "
                 "center directory) and the versions of the libraries it runs on.",
    };
    int first, rc = cli_parse(&cmd, argc, argv, &first);
    if (rc != CLI_GO)
        return rc;
    printf("cartgate %s\n", CARTGATE_VERSION);
    print_data_paths();
    cmd_print_versions();
    return 0;
}
