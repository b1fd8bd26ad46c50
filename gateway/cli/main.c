/* cartgate — CAR T eligibility screening and referral gateway. Entry point: dispatches to
 * the subcommands in gateway/cli/cmd_*.c (each parses its options with cli_opt.h). */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "fhir_suggest.h"

/* One line per subcommand, in the order `cartgate --help` lists them. */
static const cmd_entry commands[] = {
    {"convert", cmd_convert, "convert FHIR resources between JSON and XML (pretty or compact)"},
    {"referrals", cmd_referrals, "list, show, approve, cancel, retry, send and poll referrals"},
    {"patients", cmd_patients, "re-screen one patient or everyone (through the daemon's API or on the store)"},
    {"store", cmd_store, "store upkeep: prune cached resources per store.retention (dry run first)"},
    {"centers", cmd_centers, "rank treatment centers from a ZIP or LAT,LON and explain why"},
    {"fhir", cmd_fhir, "FHIR REST client: get, search (all pages), post, put, transaction"},
    {"run", cmd_run, "run the daemon: poll, screen, refer, serve the admin API (-c FILE)"},
    {"users", cmd_users, "people and services who may use cartgate: add, list, disable, passwd, role, token"},
    {"check-config", cmd_check_config, "validate a daemon configuration file (every error with FILE:LINE)"},
    {"profile", cmd_profile, "print the clinical profile of each patient in Bundles / NDJSON / folders"},
    {"screen", cmd_screen, "screen patients against the CAR T label criteria (table or --json)"},
    {"synth", cmd_synth, "write a deterministic synthetic oncology cohort with ground truth"},
    {"version", cmd_version, "print cartgate and library versions"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: cartgate <command> [options]\n"
               "       cartgate --help | --version\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'cartgate <command> --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(name, "--version") || !strcmp(name, "-V"))
        return cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(name, commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    const char *names[sizeof commands / sizeof commands[0]];
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        names[i] = commands[i].name;
    const char *near = fhir_suggest(name, names, sizeof names / sizeof names[0]);
    if (near)
        fprintf(stderr, "cartgate: unknown command '%s' (did you mean '%s'?)\n\n", name, near);
    else
        fprintf(stderr, "cartgate: unknown command '%s'\n\n", name);
    usage(stderr);
    return 2;
}
