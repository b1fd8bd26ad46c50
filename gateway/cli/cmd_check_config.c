/* cartgate check-config — validates a configuration file and reports every error with
 * FILE:LINE, or prints the option reference (Markdown) generated from the option table. */
#include <stdio.h>

#include "cli_opt.h"
#include "cmd.h"
#include "config.h"

int cmd_check_config(int argc, char **argv)
{
    const char *path = NULL;
    bool reference = false;
    const cli_cmd cmd = {
        .name = "check-config",
        .synopsis = "cartgate check-config -c FILE\ncartgate check-config --reference",
        .about = "Checks FILE and prints every problem as FILE:LINE: what (exit 1 when any).",
        .opts = (const cli_opt[]){
            CLI_OPT_CONFIG(&path, false, "the configuration file to check"),
            {.name = "reference", .kind = CLI_FLAG, .out = &reference,
             .help = "print the option reference as a Markdown table"},
            {0},
        },
    };
    int first, rc = cli_parse(&cmd, argc, argv, &first);
    if (rc != CLI_GO)
        return rc;
    if (reference) {
        fhir_buf b;
        fhir_buf_init(&b, 0);
        config_write_reference(&b);
        fputs(fhir_buf_cstr(&b), stdout);
        fhir_buf_free(&b);
        return 0;
    }
    if (!path)
        return cli_error(&cmd, "--config FILE or --reference is required");
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
