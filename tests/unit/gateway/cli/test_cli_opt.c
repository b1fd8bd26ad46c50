/* Unit tests of gateway/cli/cli_opt: flags and values of every kind, options mixed with
 * positional arguments, missing values, bad numbers and dates, unknown options with "did you
 * mean", old spellings, required options, positional counts, --help generated from the table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_opt.h"
#include "fhir_clock.h"

/* The table of a made-up command and where its values go. */
typedef struct vals {
    bool json;
    const char *db;
    long long passes;
    uint64_t seed;
    double speed;
    int64_t day;
    int format;
    const char *params_v[3];
    cli_list params;
} vals;

static void init_vals(vals *v)
{
    memset(v, 0, sizeof *v);
    v->passes = 1;
    v->day = -1;
    v->params = (cli_list){v->params_v, 0, 3};
}

typedef struct run {
    int rc, first;
    char *out, *err;
    char *argv[32];
    int argc;
} run;

/* Runs cli_parse_io over the words of line (space-separated) for the test command. */
static void parse(run *r, vals *v, bool db_required, const char *line)
{
    const cli_opt opts[] = {
        {.name = "json", .kind = CLI_FLAG, .out = &v->json, .help = "one JSON object a line"},
        {.name = "db", .short_name = 'd', .kind = CLI_PATH, .out = &v->db, .arg = "FILE",
         .help = "the SQLite store", .required = db_required},
        {.name = "passes", .kind = CLI_INT, .out = &v->passes, .arg = "N", .min = 1,
         .max = 100, .def = "1", .help = "send passes"},
        {.name = "seed", .kind = CLI_U64, .out = &v->seed, .arg = "S", .help = "the seed"},
        {.name = "speed", .kind = CLI_NUM, .out = &v->speed, .arg = "KMH", .min = 1, .max = 300,
         .help = "average speed\nby road"},
        {.name = "as-of", .kind = CLI_DATE, .out = &v->day, .arg = "YYYY-MM-DD",
         .old_name = "date", .def = "today", .help = "evaluation date"},
        {.name = "format", .kind = CLI_ENUM, .out = &v->format, .arg = "ndjson|bundle",
         .help = "output layout"},
        {.name = "param", .kind = CLI_LIST, .out = &v->params, .arg = "NAME=VALUE",
         .help = "override a parameter"},
        {.name = "secret", .kind = CLI_FLAG, .out = &v->json},
        {0},
    };
    const cli_cmd cmd = {.name = "demo", .args = "FILE...", .min_args = 1, .max_args = 2,
                         .about = "Demonstrates the option table.", .notes = "Exit status: 0 ok.",
                         .opts = opts};
    static char buf[1024];
    snprintf(buf, sizeof buf, "demo %s", line);
    r->argc = 0;
    for (char *t = strtok(buf, " "); t && r->argc < 31; t = strtok(NULL, " "))
        r->argv[r->argc++] = t;
    r->argv[r->argc] = NULL;
    size_t ol = 0, el = 0;
    FILE *out = open_memstream(&r->out, &ol), *err = open_memstream(&r->err, &el);
    assert_non_null(out);
    assert_non_null(err);
    r->first = -1;
    r->rc = cli_parse_io(&cmd, r->argc, r->argv, &r->first, out, err);
    fclose(out);
    fclose(err);
}

static void done(run *r)
{
    free(r->out);
    free(r->err);
}

static void test_values_of_every_kind(void **state)
{
    (void)state;
    vals v;
    init_vals(&v);
    run r;
    parse(&r, &v, false,
          "--json -d x.db --passes 7 --seed 18446744073709551615 --speed=80.5 "
          "--as-of 2024-02-29 --format bundle --param a=1 --param b=2 in.ndjson");
    assert_int_equal(r.rc, CLI_GO);
    assert_string_equal(r.err, "");
    assert_true(v.json);
    assert_string_equal(v.db, "x.db");
    assert_int_equal(v.passes, 7);
    assert_true(v.seed == UINT64_MAX);
    assert_true(v.speed > 80.49 && v.speed < 80.51);
    assert_int_equal(v.day, fhir_clock_days_from_civil(2024, 2, 29));
    assert_int_equal(v.format, 1);
    assert_int_equal(v.params.n, 2);
    assert_string_equal(v.params.v[1], "b=2");
    assert_int_equal(r.argc - r.first, 1);
    assert_string_equal(r.argv[r.first], "in.ndjson");
    done(&r);
}

static void test_defaults_untouched_and_mixed_order(void **state)
{
    (void)state;
    vals v;
    init_vals(&v);
    run r;
    parse(&r, &v, false, "a.json --json b.json");
    assert_int_equal(r.rc, CLI_GO);
    assert_true(v.json);
    assert_null(v.db);
    assert_int_equal(v.passes, 1);
    assert_int_equal(v.day, -1);
    assert_int_equal(r.argc - r.first, 2);
    assert_string_equal(r.argv[r.first], "a.json");
    assert_string_equal(r.argv[r.first + 1], "b.json");
    done(&r);
    /* "--" ends the options: a file named like an option */
    init_vals(&v);
    parse(&r, &v, false, "-- --json");
    assert_int_equal(r.rc, CLI_GO);
    assert_false(v.json);
    assert_string_equal(r.argv[r.first], "--json");
    done(&r);
}

static void expect_error(const char *line, const char *want)
{
    vals v;
    init_vals(&v);
    run r;
    parse(&r, &v, false, line);
    assert_int_equal(r.rc, 2);
    assert_string_equal(r.out, "");
    if (!strstr(r.err, want))
        fail_msg("'%s': stderr '%s' lacks '%s'", line, r.err, want);
    /* every usage error ends with the synopsis and the way to the help */
    assert_non_null(strstr(r.err, "\nusage: cartgate demo [options] FILE...\n"));
    assert_non_null(strstr(r.err, "Run 'cartgate demo --help' for every option.\n"));
    done(&r);
}

static void test_bad_values(void **state)
{
    (void)state;
    expect_error("--as-of 2026-13-01 f",
                 "cartgate demo: --as-of: not a date (YYYY-MM-DD): 2026-13-01\n");
    expect_error("--as-of 2023-02-29 f", "--as-of: not a date (YYYY-MM-DD): 2023-02-29");
    expect_error("--as-of 2024-05 f", "not a date (YYYY-MM-DD): 2024-05\n");
    expect_error("--as-of 2024-05-17T10:00:00Z f", "not a date (YYYY-MM-DD)");
    expect_error("--passes 0 f", "cartgate demo: --passes: not a whole number from 1 to 100: 0\n");
    expect_error("--passes 101 f", "--passes: not a whole number from 1 to 100: 101");
    expect_error("--passes 3x f", "--passes: not a whole number from 1 to 100: 3x");
    expect_error("--passes= f", "--passes: not a whole number from 1 to 100: \n");
    expect_error("--seed -1 f", "--seed: not a whole number from 0 to 18446744073709551615: -1");
    expect_error("--seed 18446744073709551616 f", "--seed: not a whole number");
    expect_error("--speed 0.5 f", "--speed: not a number from 1 to 300: 0.5");
    expect_error("--speed nan f", "--speed: not a number from 1 to 300: nan");
    expect_error("--format xml f", "--format: not one of ndjson|bundle: xml");
    expect_error("--format bundl f", "--format: not one of ndjson|bundle: bundl");
    expect_error("--db= f", "--db: empty path");
    expect_error("--param a --param b --param c --param d f", "--param: given more than 3 times");
}

static void test_missing_and_unknown(void **state)
{
    (void)state;
    expect_error("f --passes", "cartgate demo: --passes: missing value (N)\n");
    expect_error("f -d", "cartgate demo: --db: missing value (FILE)\n");
    expect_error("--jsno f", "cartgate demo: unknown option --jsno (did you mean --json?)\n");
    expect_error("--pases=3 f", "unknown option --pases (did you mean --passes?)\n");
    expect_error("--frobnicate f", "cartgate demo: unknown option --frobnicate\n");
    expect_error("-x f", "cartgate demo: unknown option -x\n");
    expect_error("--json=yes f", "cartgate demo: --json: takes no value\n");
    expect_error("--help=1 f", "--help: takes no value");
    expect_error("--s f", "cartgate demo: --s is ambiguous: --seed --speed --secret\n");
    /* positional counts */
    expect_error("--json", "cartgate demo: missing FILE...\n");
    expect_error("a b c", "cartgate demo: unexpected argument 'c'\n");
}

static void test_required_prefix_and_old_spelling(void **state)
{
    (void)state;
    vals v;
    init_vals(&v);
    run r;
    parse(&r, &v, true, "f");
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "cartgate demo: --db FILE is required\n"));
    assert_non_null(strstr(r.err, "usage: cartgate demo --db FILE [options] FILE...\n"));
    done(&r);
    /* an unambiguous prefix is the option (getopt_long) */
    init_vals(&v);
    parse(&r, &v, true, "--js --db=x f");
    assert_int_equal(r.rc, CLI_GO);
    assert_true(v.json);
    done(&r);
    /* the old spelling still works, with a note */
    init_vals(&v);
    parse(&r, &v, false, "--date 2026-11-27 f");
    assert_int_equal(r.rc, CLI_GO);
    assert_int_equal(v.day, fhir_clock_days_from_civil(2026, 11, 27));
    assert_string_equal(r.err, "cartgate demo: note: --date is deprecated, use --as-of\n");
    done(&r);
}

static void test_help_from_the_table(void **state)
{
    (void)state;
    vals v;
    init_vals(&v);
    run r;
    parse(&r, &v, false, "--json -h");
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.err, "");
    const char *want =
        "usage: cartgate demo [options] FILE...\n"
        "Demonstrates the option table.\n"
        "\n"
        "options:\n"
        "      --json              one JSON object a line\n"
        "  -d, --db FILE           the SQLite store\n"
        "      --passes N          send passes (default: 1)\n"
        "      --seed S            the seed\n"
        "      --speed KMH         average speed\n"
        "                          by road\n"
        "      --as-of YYYY-MM-DD  evaluation date (default: today)\n"
        "      --format ndjson|bundle\n"
        "                          output layout\n"
        "      --param NAME=VALUE  override a parameter (repeatable)\n"
        "  -h, --help              print this help\n"
        "\n"
        "Exit status: 0 ok.\n";
    assert_string_equal(r.out, want);
    /* hidden entries (no help) and old spellings are not listed */
    assert_null(strstr(r.out, "secret"));
    assert_null(strstr(r.out, "--date"));
    done(&r);
    init_vals(&v);
    parse(&r, &v, false, "--help");
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.out, want);
    done(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_of_every_kind),
        cmocka_unit_test(test_defaults_untouched_and_mixed_order),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_missing_and_unknown),
        cmocka_unit_test(test_required_prefix_and_old_spelling),
        cmocka_unit_test(test_help_from_the_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
