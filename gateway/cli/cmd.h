/* cmd — the cartgate subcommands. Each lives in gateway/cli/cmd_<name>.c, declares its
 * options as a cli_opt table (cli_opt.h) and returns the process exit status (0 ok, 1 failure,
 * 2 usage error). argv[0] is the subcommand name. */
#ifndef CMD_H
#define CMD_H

#include <stdbool.h>
#include <stddef.h>

/* Byte caps of the commands' buffers. */
#define CMD_CONFIG_DIAG_MAX (1u << 20)    /* check-config: every config error */
#define CMD_CENTERS_ARENA_MAX (64u << 20) /* centers: directory, ranking */
#define CMD_CENTERS_OUT_MAX (16u << 20)   /* centers: the printed ranking */
#define CMD_REFERRAL_JSON_MAX (1u << 20)  /* referrals --json: one referral */

typedef int (*cmd_fn)(int argc, char **argv);

typedef struct cmd_entry {
    const char *name;
    cmd_fn fn;
    const char *summary;
} cmd_entry;

int cmd_convert(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_centers(int argc, char **argv);
int cmd_referrals(int argc, char **argv);
int cmd_fhir(int argc, char **argv);
int cmd_screen(int argc, char **argv);
int cmd_check_config(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_users(int argc, char **argv);
int cmd_patients(int argc, char **argv);
int cmd_store(int argc, char **argv);

#define CMD_BAD_LINES_LISTED 100 /* screen/profile: refused NDJSON lines named one by one */

/* After a screen or profile run that skipped NDJSON lines (bad_lines) or met resources whose
 * patient reference names no patient (orphans): reads the paths again and names each refused
 * line as "FILE:LINE" (at most CMD_BAD_LINES_LISTED, then how many more) and, per file, how
 * many resources name no patient, on stderr prefixed with "cartgate NAME: ". Returns 1 when
 * any line was refused and keep_going is false (the caller's exit status), else 0. */
int cmd_report_skipped(const char *name, const char *const *paths, size_t n, size_t bad_lines, size_t orphans,
                       bool keep_going);

/* Prints the library versions (the JSON parser, libcurl, libxml2, libevent, SQLite, OpenSSL):
 * 0, or 1 when one cannot be loaded (libxml2 is loaded here; the line says why). */
int cmd_print_versions(void);

#endif
