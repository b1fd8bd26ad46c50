/* cmd_centers — `cartgate centers --near ZIP|LAT,LON [--product KEY] [--disease KEY]
 * [--payer NAME] [--date YYYY-MM-DD] [--json] [--centers FILE] [--zcta FILE]`:
 * ranks the center directory from a location and explains every inclusion and exclusion. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "centers.h"
#include "cmd.h"
#include "fhir_clock.h"
#include "fhir_datadir.h"
#include "fhir_json.h"
#include "route.h"

static const char *const all_products[] = {"tisa-cel", "axi-cel", "brexu-cel", "liso-cel",
                                           "ide-cel", "cilta-cel", "obe-cel"};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cartgate centers --near ZIP|LAT,LON [options]\n"
            "  --near ZIP|LAT,LON   patient origin: a 5-digit ZIP (needs --zcta) or coordinates\n"
            "  --product KEY        only centers offering KEY (tisa-cel axi-cel brexu-cel\n"
            "                       liso-cel ide-cel cilta-cel obe-cel); default: any product\n"
            "  --disease KEY        only centers listing this disease key (mappings/FACTS.md)\n"
            "  --payer NAME         patient's payer; centers listing payers without it rank lower\n"
            "  --date YYYY-MM-DD    evaluation date for accreditation expiry (default: today)\n"
            "  --centers FILE       center directory (default: the data folder's centers.json;\n"
            "                       `cartgate version` shows where that is)\n"
            "  --zcta FILE          ZCTA centroid table (Census Gazetteer format; default:\n"
            "                       $CARTGATE_ZCTA)\n"
            "  --detour F --speed KMH --stay-near MIN   travel-time assumptions (1.3, 80, 120)\n"
            "  --json               machine-readable output\n");
}

int cmd_centers(int argc, char **argv)
{
    static const struct option opts[] = {
        {"near", required_argument, NULL, 'n'},   {"product", required_argument, NULL, 'p'},
        {"disease", required_argument, NULL, 'd'}, {"payer", required_argument, NULL, 'y'},
        {"date", required_argument, NULL, 't'},   {"centers", required_argument, NULL, 'c'},
        {"zcta", required_argument, NULL, 'z'},   {"json", no_argument, NULL, 'j'},
        {"detour", required_argument, NULL, 'D'}, {"speed", required_argument, NULL, 'S'},
        {"stay-near", required_argument, NULL, 'N'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *near = NULL, *product = NULL, *disease = NULL, *payer = NULL, *date = NULL;
    const char *centers_path = fhir_datadir_path("centers.json"), *zcta_path = getenv("CARTGATE_ZCTA");
    bool json = false;
    route_params params = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n': near = optarg; break;
        case 'p': product = optarg; break;
        case 'd': disease = optarg; break;
        case 'y': payer = optarg; break;
        case 't': date = optarg; break;
        case 'c': centers_path = optarg; break;
        case 'z': zcta_path = optarg; break;
        case 'j': json = true; break;
        case 'D': params.detour_factor = atof(optarg); break;
        case 'S': params.avg_speed_kmh = atof(optarg); break;
        case 'N': params.stay_near_minutes = atof(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!near || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (product && !centers_product_known(product)) {
        fprintf(stderr, "cartgate centers: unknown product key \"%s\"\n", product);
        return 2;
    }
    if (disease && !centers_disease_known(disease)) {
        fprintf(stderr, "cartgate centers: unknown disease key \"%s\"\n", disease);
        return 2;
    }
    int64_t day = fhir_clock_now() / 86400;
    if (date && fhir_clock_parse_date(date, &day)) {
        fprintf(stderr, "cartgate centers: --date \"%s\" is not a date\n", date);
        return 2;
    }

    fhir_error err;
    fhir_error_clear(&err);
    route_patient_location loc = {0};
    const char *comma = strchr(near, ',');
    if (comma) {
        char *end;
        loc.lat = strtod(near, &end);
        if (end != comma) {
            fprintf(stderr, "cartgate centers: --near \"%s\" is not LAT,LON\n", near);
            return 2;
        }
        loc.lon = strtod(comma + 1, &end);
        if (*end || loc.lat < -90 || loc.lat > 90 || loc.lon < -180 || loc.lon > 180) {
            fprintf(stderr, "cartgate centers: --near \"%s\" is not LAT,LON\n", near);
            return 2;
        }
        loc.has_geo = true;
    } else {
        loc.zip = near;
    }

    int rc = 1;
    route_zcta *zcta = NULL;
    centers_dir *dir = NULL;
    fhir_arena *a = fhir_arena_new(CMD_CENTERS_ARENA_MAX);
    if (!loc.has_geo) {
        if (!zcta_path) {
            fprintf(stderr, "cartgate centers: --near ZIP needs a ZCTA table (--zcta FILE or "
                            "$CARTGATE_ZCTA)\n");
            rc = 2;
            goto out;
        }
        if (!(zcta = route_zcta_load(zcta_path, &err)))
            goto fail;
    }
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
        fhir_node *j = route_explain_json(a, &res);
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
