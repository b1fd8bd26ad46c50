/* cartgate convert — read a FHIR resource (JSON or XML, detected from the content) and
 * write it back out as JSON or XML, compact or pretty. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_opt.h"
#include "cmd.h"
#include "fhir_json.h"
#include "fhir_xml.h"

int cmd_convert(int argc, char **argv)
{
    int to = 0; /* json */
    bool pretty = false;
    long long max_bytes = 0;
    const cli_cmd cmd = {
        .name = "convert", .args = "FILE|-", .min_args = 1, .max_args = 1,
        .about = "Reads one FHIR R4 resource (JSON or XML; the format is detected from the\n"
                 "content: first non-blank character '<' means XML) and writes it to stdout.",
        .opts = (const cli_opt[]){
            {.name = "to", .kind = CLI_ENUM, .out = &to, .arg = "json|xml", .def = "json",
             .help = "output format"},
            {.name = "pretty", .kind = CLI_FLAG, .out = &pretty, .help = "indent the output"},
            {.name = "max-bytes", .kind = CLI_INT, .out = &max_bytes, .arg = "N", .min = 1,
             .max = 1LL << 40, .def = "64 MiB", .help = "refuse inputs larger than N bytes"},
            {0},
        },
    };
    int first, rc = cli_parse(&cmd, argc, argv, &first);
    if (rc != CLI_GO)
        return rc;
    const char *path = argv[first];
    bool to_xml = to == 1;
    fhir_json_limits lim = {.max_bytes = (size_t)max_bytes};
    fhir_error err = {0};
    fhir_arena *a = fhir_arena_new(0);
    fhir_node *root = fhir_xml_parse_any_file(a, path, &lim, &err);
    if (!root) {
        fprintf(stderr, "cartgate convert: %s\n", err.msg);
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
