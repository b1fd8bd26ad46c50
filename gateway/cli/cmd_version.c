/* cartgate version — cartgate and the versions of the libraries it runs on; with --pdf, also
 * the PDF renderer's (loaded only then: packet.h), proven by drawing a test page. */
#include <curl/curl.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli_opt.h"
#include "cmd.h"
#include "fhir_datadir.h"
#include "fhir_json.h"
#include "fhir_xml.h"
#include "packet.h"
#include "store.h"

int cmd_print_versions(void)
{
    char json[32];
    curl_version_info_data *c = curl_version_info(CURLVERSION_NOW);
    printf(FHIR_JSON_LIB " %s\n", fhir_json_lib_version(json, sizeof json));
    printf("libcurl %s (%s)\n", c->version, c->ssl_version ? c->ssl_version : "no TLS");
    /* loaded here (the first XML parse would): an image or host missing it fails this */
    char xml[32];
    fhir_error err;
    int missing = fhir_xml_lib_version(xml, sizeof xml, &err) != 0;
    if (!missing)
        printf("libxml2 %s (loaded when XML is first read or written)\n", xml);
    else
        printf("libxml2 missing: %s\n", err.msg);
    printf("libevent %s\n", event_get_version());
    printf("SQLite %s\n", store_sqlite_version());
    printf("OpenSSL %s\n", OpenSSL_version(OPENSSL_VERSION_STRING));
    return missing;
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

/* --pdf FILE: loads the PDF renderer, prints its versions and draws an empty referral packet
 * (every field "not recorded", no patient) to FILE. 0, or 1 with the cause on stderr. */
static int pdf_test_page(const char *path)
{
    static const char doc[] = "{\"kind\": \"" PACKET_KIND "\", \"from\": \"cartgate version --pdf\","
                              " \"to\": \"a test page (no patient)\"}";
    char versions[128];
    fhir_error err;
    if (packet_pdf_renderer(versions, sizeof versions, &err)) {
        fprintf(stderr, "cartgate version: %s\n", err.msg);
        return 1;
    }
    printf("PDF renderer %s (loaded when a PDF is first drawn)\n", versions);
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *pk = fhir_json_parse(a, doc, sizeof doc - 1, NULL, &err);
    int rc = pk ? packet_write_pdf(pk, path, &err) : -1;
    fhir_arena_free(a);
    if (rc) {
        fprintf(stderr, "cartgate version: %s\n", err.msg);
        return 1;
    }
    printf("PDF test page written to %s\n", path);
    return 0;
}

int cmd_version(int argc, char **argv)
{
    const char *pdf = NULL;
    static const char about[] =
        "Prints cartgate's version, where it looks for its data files (criteria, mappings, "
        "center directory) and the versions of the libraries it runs on.";
    const cli_cmd cmd = {
        .name = "version",
        .about = about,
        .opts = (const cli_opt[]){
            {.name = "pdf", .kind = CLI_PATH, .out = &pdf, .arg = "FILE",
             .help = "also load the PDF renderer (pango, cairo: loaded only when a PDF is drawn),\n"
                     "print its versions and draw a test page (no patient) to FILE"},
            {0},
        },
    };
    int first, rc = cli_parse(&cmd, argc, argv, &first);
    if (rc != CLI_GO)
        return rc;
    printf("cartgate %s\n", CARTGATE_VERSION);
    print_data_paths();
    if (cmd_print_versions())
        return 1;
    return pdf ? pdf_test_page(pdf) : 0;
}
