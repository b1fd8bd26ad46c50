/* Open-world property over synthetic cohorts (the real `cartgate synth`, the real profile and
 * rules through screen.h): hiding any one resource of a patient never turns an eligible or
 * possibly eligible patient into not_eligible, unless that resource was the evidence of the
 * hard gate that now fails (the diagnosis, the line of therapy, the progression record ...
 * cited by the facts that gate tests before the resource was hidden).
 *
 * Evidence of a gate: the resource's reference ("Condition/c1") appears in the original
 * evidence of a fact the failed gate tests, or in the evidence of an original line of therapy
 * when that fact derives from the lines; a Medication counts through the records that
 * reference it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "elig.h"
#include "fhir_clock.h"
#include "fhir_node.h"
#include "map_group.h"
#include "map_profile.h"
#include "screen.h"
#include "support.h"

#define AS_OF "2026-11-01"

static char tmp[512];
static const char *bin;

static int setup(void **state)
{
    (void)state;
    bin = getenv("CARTGATE_BIN");
    return bin && support_tmpdir(tmp, sizeof tmp) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (tmp[0])
        support_rmtree(tmp);
    return 0;
}

static bool contains(const char *hay, const char *ref)
{
    if (!hay || !ref)
        return false;
    size_t n = strlen(ref);
    for (const char *p = strstr(hay, ref); p; p = strstr(p + 1, ref)) {
        char c = p[n]; /* "Condition/c1" must not match "Condition/c10" */
        if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') && c != '-' &&
            c != '.' && c != '_')
            return true;
    }
    return false;
}

/* Facts derived from the lines of therapy (their evidence is the lines'). */
static bool therapy_fact(const char *name)
{
    static const char *const t[] = {"lines", "prior_classes", "prior_drugs", "first_line_classes",
                                    "relapsed", "refractory", "primary_refractory",
                                    "relapse_months_after_1l", "relapse_months_after_1l_start",
                                    "relapse_months_after_1l_end", "relapse_count",
                                    "lenalidomide_refractory", "btki_progression", NULL};
    for (const char *const *p = t; *p; p++)
        if (!strcmp(*p, name))
            return true;
    return false;
}

typedef struct origin {
    const map_profile *p;      /* the full record's profile */
    const fhir_node *const *res;
    size_t n;
} origin;

/* Was ref (or, for a Medication, a record referencing it) evidence of one of the facts? */
static bool is_evidence(const origin *o, const elig_ruleset *rs, uint64_t facts, const char *ref,
                        const fhir_node *hidden)
{
    const char *refs[64];
    size_t nrefs = 0;
    char buf[64][200];
    refs[nrefs++] = ref;
    const char *type = fhir_node_resource_type(hidden), *id = fhir_node_resource_id(hidden);
    if (type && !strcmp(type, "Medication") && id) {
        char want[200];
        snprintf(want, sizeof want, "Medication/%s", id);
        for (size_t i = 0; i < o->n && nrefs < 64; i++) {
            const char *r = fhir_node_path_str(o->res[i], "medicationReference.reference");
            const char *t = fhir_node_resource_type(o->res[i]);
            if (r && t && !strcmp(r, want)) {
                snprintf(buf[nrefs], sizeof buf[0], "%s/%s", t, fhir_node_resource_id(o->res[i]));
                refs[nrefs] = buf[nrefs];
                nrefs++;
            }
        }
    }
    for (size_t k = 0; k < elig_ruleset_fact_count(rs); k++) {
        const char *name = elig_ruleset_fact_name(rs, k, NULL);
        int bit = elig_ruleset_fact_index(rs, name);
        if (bit < 0 || !(facts >> bit & 1))
            continue;
        const map_fact *f = map_profile_fact(o->p, name);
        for (size_t r = 0; r < nrefs; r++) {
            if (f && contains(f->evidence, refs[r]))
                return true;
            if (!strcmp(name, "age") || !strcmp(name, "deceased") || !strcmp(name, "sex"))
                if (!strncmp(refs[r], "Patient/", 8))
                    return true;
            if (therapy_fact(name))
                for (size_t l = 0; l < map_profile_line_count(o->p); l++)
                    if (contains(map_profile_line(o->p, l)->evidence, refs[r]))
                        return true;
        }
    }
    return false;
}

static void test_hiding_one_resource(void **state)
{
    (void)state;
    /* two synthetic cohorts, then the clinician-style vignettes (outside statements, missing
     * end dates, unspecified codes) as of their usual evaluation date */
    static const struct {
        const char *seed, *patients, *as_of;
    } cohorts[] = {{"5", "90", AS_OF}, {"29", "90", AS_OF}, {NULL, NULL, "2026-12-05"}};
    char cdir[700];
    snprintf(cdir, sizeof cdir, "%s/conf/criteria", support_source_dir());
    fhir_error err;
    elig_ruleset *rs = elig_load_dir(cdir, &err);
    if (!rs)
        fail_msg("criteria: %s", err.msg);
    map_tables *t = map_tables_load(NULL, &err);
    assert_non_null(t);
    size_t patients = 0, candidates = 0, hidden = 0, excluded_by_evidence = 0, violations = 0;
    for (size_t c = 0; c < sizeof cohorts / sizeof cohorts[0]; c++) {
        int64_t day;
        assert_int_equal(fhir_clock_parse_date(cohorts[c].as_of, &day), 0);
        map_profile_opts o;
        map_profile_opts_default(&o);
        o.as_of_days = day;
        char out[700];
        if (cohorts[c].seed) {
            snprintf(out, sizeof out, "%s/cohort%zu", tmp, c);
            char *argv[] = {(char *)bin, "synth", "--seed", (char *)cohorts[c].seed, "--patients",
                            (char *)cohorts[c].patients, "--out", out, "--as-of", AS_OF, NULL};
            char *e = NULL;
            if (support_run(argv, NULL, &e, 300) != 0)
                fail_msg("cartgate synth: %s", e ? e : "");
            free(e);
        } else {
            snprintf(out, sizeof out, "%s/tests/vignettes", support_source_dir());
        }
        map_group *g = map_group_new(NULL);
        assert_int_equal(map_group_add_path(g, out, &err), 0);
        screen *full = screen_new(t, rs, &o), *less = screen_new(t, rs, &o);
        for (size_t i = 0; i < map_group_count(g); i++) {
            size_t n;
            const fhir_node *const *res = map_group_resources(g, i, &n);
            if (screen_patient(full, res, n, &err))
                continue;
            patients++;
            const elig_result *r0 = screen_result(full);
            elig_category c0 = elig_result_category(r0);
            if (c0 != ELIG_ELIGIBLE && c0 != ELIG_POSSIBLY_ELIGIBLE)
                continue;
            candidates++;
            uint8_t before[ELIG_MAX_INDICATIONS];
            for (size_t k = 0; k < elig_ruleset_count(rs); k++)
                before[k] = (uint8_t)elig_result_ind_category(r0, k);
            const fhir_node **sub = malloc((n ? n : 1) * sizeof *sub);
            assert_non_null(sub);
            origin org = {screen_profile(full), res, n};
            for (size_t h = 0; h < n; h++) {
                size_t m = 0;
                for (size_t j = 0; j < n; j++)
                    if (j != h)
                        sub[m++] = res[j];
                if (screen_patient(less, sub, m, &err))
                    continue; /* nothing left to screen (only the Patient was there) */
                hidden++;
                const elig_result *r1 = screen_result(less);
                if (elig_result_category(r1) != ELIG_NOT_ELIGIBLE)
                    continue;
                char ref[200];
                snprintf(ref, sizeof ref, "%s/%s", fhir_node_resource_type(res[h]),
                         fhir_node_resource_id(res[h]) ? fhir_node_resource_id(res[h]) : "?");
                bool ok = true;
                for (size_t k = 0; k < elig_ruleset_count(rs); k++) {
                    if (before[k] != ELIG_ELIGIBLE && before[k] != ELIG_POSSIBLY_ELIGIBLE)
                        continue;
                    uint64_t facts = elig_result_ind_failed_facts(rs, r1, k);
                    if (!is_evidence(&org, rs, facts, ref, res[h])) {
                        fprintf(stderr, "%s: hiding %s excluded %s (fails '%s')\n",
                                map_group_patient_id(g, i), ref, elig_ruleset_key(rs, k),
                                elig_result_ind_failed(rs, r1, k));
                        ok = false;
                    }
                }
                if (ok)
                    excluded_by_evidence++;
                else
                    violations++;
            }
            free(sub);
        }
        screen_free(full);
        screen_free(less);
        map_group_free(g);
    }
    fprintf(stderr,
            "hide-one-resource: %zu patients, %zu candidates, %zu records hidden one at a time, "
            "%zu exclusions by hiding the gate's own evidence, %zu violations\n",
            patients, candidates, hidden, excluded_by_evidence, violations);
    assert_true(candidates > 20);
    assert_true(hidden > 500);
    assert_int_equal(violations, 0);
    map_tables_free(t);
    elig_ruleset_free(rs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hiding_one_resource),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
