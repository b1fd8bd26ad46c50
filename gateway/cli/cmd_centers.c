/* cmd_centers — `cartgate centers --near ZIP|LAT,LON [--product KEY] [--disease KEY]
 * [--payer NAME] [--as-of YYYY-MM-DD] [--json] [--centers FILE] [--zcta FILE]`:
 * ranks the center directory from a location and explains every inclusion and exclusion. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "centers.h"
#include "cli_opt.h"
#include "cmd.h"
#include "fhir_clock.h"
#include "fhir_datadir.h"
#include "fhir_json.h"
#include "route.h"

static const char *const all_products[] = {"tisa-cel", "axi-cel", "brexu-cel", "liso-cel",
                                           "ide-cel", "cilta-cel", "obe-cel"};

int cmd_centers(int argc, char **argv)
{
    const char *near = NULL, *product = NULL, *disease = NULL, *payer = NULL;
    const char *centers_path = fhir_datadir_path("centers.json"), *zcta_path = getenv("CARTGATE_ZCTA");
    bool json = false;
    int64_t day = fhir_clock_now() / 86400;
    route_params params = {0};
    const cli_cmd cmd = {
        .name = "centers",
        .about = "Ranks the center directory from a location and explains every inclusion and\n"
                 "exclusion.",
        .opts = (const cli_opt[]){
            {.name = "near", .kind = CLI_STR, .out = &near, .arg = "ZIP|LAT,LON", .required = true,
             .help = "patient origin: a 5-digit ZIP (needs --zcta) or coordinates"},
            {.name = "product", .kind = CLI_STR, .out = &product, .arg = "KEY",
             .def = "any product",
             .help = "only centers offering KEY (tisa-cel axi-cel brexu-cel\n"
                     "liso-cel ide-cel cilta-cel obe-cel)"},
            {.name = "disease", .kind = CLI_STR, .out = &disease, .arg = "KEY",
             .help = "only centers listing this disease key (mappings/FACTS.md)"},
            {.name = "payer", .kind = CLI_STR, .out = &payer, .arg = "NAME",
             .help = "patient's payer; centers listing payers without it rank lower"},
            {.name = "as-of", .kind = CLI_DATE, .out = &day, .arg = "YYYY-MM-DD",
             .old_name = "date",
             .def = "today", .help = "evaluation date for accreditation expiry"},
            CLI_OPT_CENTERS(&centers_path, "conf/centers.json", "center directory"),
            {.name = "zcta", .kind = CLI_PATH, .out = &zcta_path, .arg = "FILE",
             .def = "$CARTGATE_ZCTA", .help = "ZCTA centroid table (Census Gazetteer format)"},
            {.name = "detour", .kind = CLI_NUM, .out = &params.detour_factor, .arg = "F", .min = 1,
             .max = 10, .def = "1.3", .help = "road km per great-circle km"},
            {.name = "speed", .kind = CLI_NUM, .out = &params.avg_speed_kmh, .arg = "KMH", .min = 1,
             .max = 300, .def = "80", .help = "average speed by road"},
            {.name = "stay-near", .kind = CLI_NUM, .out = &params.stay_near_minutes, .arg = "MIN",
             .min = 1, .max = 1440, .def = "120",
             .help = "travel time beyond which the patient must stay near the center"},
            CLI_OPT_JSON(&json, "machine-readable output"),
            {0},
        },
    };
    int first, rc = cli_parse(&cmd, argc, argv, &first);
    if (rc != CLI_GO)
        return rc;
    if (product && !centers_product_known(product))
        return cli_error(&cmd, "--product: unknown product key: %s", product);
    if (disease && !centers_disease_known(disease))
        return cli_error(&cmd, "--disease: unknown disease key: %s", disease);

    fhir_error err;
    fhir_error_clear(&err);
    route_patient_location loc = {0};
    const char *comma = strchr(near, ',');
    if (comma) {
        char *end;
        loc.lat = strtod(near, &end);
        if (end != comma)
            return cli_error(&cmd, "--near: not LAT,LON: %s", near);
        loc.lon = strtod(comma + 1, &end);
        if (*end || loc.lat < -90 || loc.lat > 90 || loc.lon < -180 || loc.lon > 180)
            return cli_error(&cmd, "--near: not LAT,LON: %s", near);
        loc.has_geo = true;
    } else {
        loc.zip = near;
        if (!zcta_path)
            return cli_error(&cmd, "--near ZIP needs a ZCTA table (--zcta FILE or $CARTGATE_ZCTA)");
    }

    rc = 1;
    route_zcta *zcta = NULL;
    centers_dir *dir = NULL;
    fhir_arena *a = fhir_arena_new(CMD_CENTERS_ARENA_MAX);
    if (!loc.has_geo && !(zcta = route_zcta_load(zcta_path, &err)))
        goto fail;
    if (!(dir = centers_load(centers_path, &err)))
        goto fail;
    route_origin origin;
    if (route_resolve_origin(&loc, zcta, NULL, &origin, &err))
        goto fail;

    route_need needs[7];
    size_t n_needs = 0;
    for (size_t i = 0; i < 7; i++)
        if (!product || !strcmp(product, all_products[i]))
            needs[n_needs++] = (route_need){.product = all_products[i], .disease = disease,
                                            .indication = all_products[i]};
    route_result res;
    if (route_rank(a, dir, &origin, needs, n_needs, payer, day, &params, &res, &err))
        goto fail;
    fhir_buf out;
    fhir_buf_init(&out, CMD_CENTERS_OUT_MAX);
    if (json) {
        fhir_node *j = route_json_shown(a, route_explain_json(a, &res));
        if (!j || fhir_json_write(&out, j, FHIR_JSON_PRETTY)) {
            fhir_buf_free(&out);
            fhir_error_set(&err, "output too large");
            goto fail;
        }
    } else {
        route_explain_text(&res, &out);
    }
    fwrite(out.data, 1, out.len, stdout);
    fhir_buf_free(&out);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "cartgate centers: %s\n", err.msg);
    rc = 1;
out:
    centers_free(dir);
    route_zcta_free(zcta);
    fhir_arena_free(a);
    return rc;
}
