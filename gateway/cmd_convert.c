/* cartgate convert — read a FHIR resource and write it back out (JSON; XML in its own
 * module), compact or pretty. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "fhir_json.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: cartgate convert [--to json] [--pretty] FILE|-\n"
               "Reads one FHIR resource (JSON) and writes it to stdout.\n"
               "  --to json    output format (default json)\n"
               "  --pretty     indent the output\n"
               "  --max-bytes N  refuse inputs larger than N bytes (default 64 MiB)\n");
}

int cmd_convert(int argc, char **argv)
{
    const char *path = NULL, *to = "json";
    int pretty = 0;
    fhir_json_limits lim = {0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--pretty")) {
            pretty = 1;
        } else if (!strcmp(argv[i], "--to") && i + 1 < argc) {
            to = argv[++i];
        } else if (!strcmp(argv[i], "--max-bytes") && i + 1 < argc) {
            lim.max_bytes = (size_t)strtoull(argv[++i], NULL, 10);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "cartgate convert: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!path) {
            path = argv[i];
        } else {
            fprintf(stderr, "cartgate convert: only one input file\n");
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    if (strcmp(to, "json") != 0) {
        fprintf(stderr, "cartgate convert: unsupported output format '%s' (json)\n", to);
        return 2;
    }
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *root = fhir_json_parse_file(a, path, &lim, &err);
    if (!root) {
        fprintf(stderr, "cartgate convert: %s\n", err.msg);
        fhir_arena_free(a);
        return 1;
    }
    fhir_buf out;
    fhir_buf_init(&out, 0);
    fhir_json_write(&out, root, pretty ? FHIR_JSON_PRETTY : FHIR_JSON_COMPACT);
    if (!pretty)
        fhir_buf_putc(&out, '\n');
    fwrite(out.data, 1, out.len, stdout);
    fhir_buf_free(&out);
    fhir_arena_free(a);
    return fflush(stdout) == 0 ? 0 : 1;
}
