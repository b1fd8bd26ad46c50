/* cartgate convert — read a FHIR resource (JSON or XML, detected from the content) and
 * write it back out as JSON or XML, compact or pretty. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_opt.h"
#include "cmd.h"
#include "fhir_json.h"
#include "fhir_xml.h"

/* Reads the whole input ("-" = stdin), refusing more than max bytes. Caller frees. */
static char *read_input(const char *path, size_t max, size_t *len, fhir_error *err)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fhir_error_set(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    fhir_buf b;
    fhir_buf_init(&b, max);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (fhir_buf_append(&b, chunk, n) < 0)
            break;
    bool bad = ferror(f) != 0;
    if (f != stdin)
        fclose(f);
    if (b.overflow || bad) {
        if (b.overflow)
            fhir_error_set(err, "%s: input larger than %zu bytes (see --max-bytes)", path, max);
        else
            fhir_error_set(err, "%s: read error", path);
        fhir_buf_free(&b);
        return NULL;
    }
    return fhir_buf_steal(&b, len); /* NUL-terminated */
}

int cmd_convert(int argc, char **argv)
{
    int to = 0; /* json */
    bool pretty = false;
    long long max_bytes = 0;
    const cli_opt opts[] = {
        {.name = "to", .kind = CLI_ENUM, .out = &to, .arg = "json|xml", .def = "json",
         .help = "output format"},
        {.name = "pretty", .kind = CLI_FLAG, .out = &pretty, .help = "indent the output"},
        {.name = "max-bytes", .kind = CLI_INT, .out = &max_bytes, .arg = "N", .min = 1,
         .max = 1LL << 40, .def = "64 MiB", .help = "refuse inputs larger than N bytes"},
        {0},
    };
    const cli_cmd cmd = {
        .name = "convert", .args = "FILE|-", .min_args = 1, .max_args = 1,
        .about = "Reads one FHIR R4 resource (JSON or XML; the format is detected from the\n"
                 "content: first non-blank character '<' means XML) and writes it to stdout.",
        .opts = opts,
    };
    int first, rc = cli_parse(&cmd, argc, argv, &first);
    if (rc != CLI_GO)
        return rc;
    const char *path = argv[first];
    bool to_xml = to == 1;
    fhir_json_limits lim = {.max_bytes = (size_t)max_bytes};
    fhir_json_limits_default(&lim);
    fhir_error err = {0};
    size_t len = 0;
    char *data = read_input(path, lim.max_bytes, &len, &err);
    if (!data) {
        fprintf(stderr, "cartgate convert: %s\n", err.msg);
        return 1;
    }
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = fhir_xml_parse_any(a, data, len, &lim, &err);
    free(data);
    if (!root) {
        fprintf(stderr, "cartgate convert: %s: %s\n", path, err.msg);
        fhir_arena_free(a);
        return 1;
    }
    fhir_buf out;
    fhir_buf_init(&out, 0);
    if (to_xml) {
        if (fhir_xml_write(&out, root, pretty ? FHIR_XML_PRETTY : FHIR_XML_COMPACT, &err) < 0) {
            fprintf(stderr, "cartgate convert: %s: cannot write XML: %s\n", path, err.msg);
            fhir_buf_free(&out);
            fhir_arena_free(a);
            return 1;
        }
    } else {
        fhir_json_write(&out, root, pretty ? FHIR_JSON_PRETTY : FHIR_JSON_COMPACT);
    }
    if (!pretty)
        fhir_buf_putc(&out, '\n');
    fwrite(out.data, 1, out.len, stdout);
    fhir_buf_free(&out);
    fhir_arena_free(a);
    return fflush(stdout) == 0 ? 0 : 1;
}
