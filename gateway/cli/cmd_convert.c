/* cartgate convert — read a FHIR resource (JSON or XML, detected from the content) and
 * write it back out as JSON or XML, compact or pretty. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "fhir_json.h"
#include "fhir_xml.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: cartgate convert [--to json|xml] [--pretty] FILE|-\n"
               "Reads one FHIR R4 resource (JSON or XML; the format is detected from the\n"
               "content: first non-blank character '<' means XML) and writes it to stdout.\n"
               "  --to json|xml  output format (default json)\n"
               "  --pretty     indent the output\n"
               "  --max-bytes N  refuse inputs larger than N bytes (default 64 MiB)\n");
}

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
    bool to_xml = !strcmp(to, "xml");
    if (!to_xml && strcmp(to, "json") != 0) {
        fprintf(stderr, "cartgate convert: unsupported output format '%s' (json|xml)\n", to);
        return 2;
    }
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
