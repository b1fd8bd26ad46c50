/* cartgate check-config — validates a configuration file and reports every error with
 * FILE:LINE, or prints the option reference (Markdown) generated from the option table. */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "config.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: cartgate check-config -c FILE\n"
               "       cartgate check-config --reference\n"
               "Checks FILE and prints every problem as FILE:LINE: what (exit 1 when any);\n"
               "--reference prints the option reference as a Markdown table.\n");
}

int cmd_check_config(int argc, char **argv)
{
    const char *path = NULL;
    bool reference = false;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc)
            path = argv[++i];
        else if (!strcmp(argv[i], "--reference"))
            reference = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (reference) {
        fhir_buf b;
        fhir_buf_init(&b, 0);
        config_write_reference(&b);
        fputs(fhir_buf_cstr(&b), stdout);
        fhir_buf_free(&b);
        return 0;
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    fhir_buf diag;
    fhir_buf_init(&diag, 1u << 20);
    size_t n = 0;
    fhir_error err;
    config *c = config_load(path, &diag, &n, &err);
    if (!c) {
        fputs(fhir_buf_cstr(&diag), stderr);
        fprintf(stderr, "%s: %zu error%s\n", path, n, n == 1 ? "" : "s");
        fhir_buf_free(&diag);
        return 1;
    }
    printf("%s: ok (site %s, %zu source%s, referral mode %s)\n", path, c->site_id, c->n_sources,
           c->n_sources == 1 ? "" : "s", c->referral_mode ? "auto" : "approval");
    for (size_t i = 0; i < c->n_sources; i++)
        printf("  source %s: %s every %lds%s%s\n", c->sources[i].name,
               config_source_kind_name(c->sources[i].kind), c->sources[i].interval_s,
               c->sources[i].base_url ? " " : "",
               c->sources[i].base_url ? c->sources[i].base_url : "");
    config_free(c);
    fhir_buf_free(&diag);
    return 0;
}
