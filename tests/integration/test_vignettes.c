/* The clinician-style vignettes (tests/vignettes/NN-name.json, one patient's FHIR Bundle each)
 * through the real `cartgate screen --json`, compared with expect/NN-name.json: category,
 * products, possible products, missing facts, review flags, notes, consult recommendation and
 * its triggers, pending verdicts (--include-pending) and the records to request. Every verdict
 * is also checked for explanations a clinician can check: a label citation with a DailyMed
 * link for each candidate indication, and no repository paths or table rows (those belong to
 * the "provenance" field). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fhir_arena.h"
#include "fhir_json.h"
#include "fhir_node.h"
#include "support.h"

#define MAX_VIGNETTES 256
#define MIN_VIGNETTES 40

static const char *bin;
static char vdir[600];

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "[a,b,c]" of a JSON array of strings (sorted), into out. */
static void arr_text(const fhir_node *arr, char *out, size_t n)
{
    const char *v[64];
    size_t k = 0;
    for (const fhir_node *c = fhir_node_first(arr); c && k < 64; c = c->next)
        v[k++] = fhir_node_str(c) ? fhir_node_str(c) : "?";
    qsort(v, k, sizeof v[0], cmp_str);
    size_t w = (size_t)snprintf(out, n, "[");
    for (size_t i = 0; i < k && w < n; i++)
        w += (size_t)snprintf(out + w, n - w, "%s%s", i ? "," : "", v[i]);
    if (w < n)
        snprintf(out + w, n - w, "]");
}

/* Compares one array-valued key; appends a line to msg when it differs. */
static bool same_array(const char *what, const fhir_node *want, const fhir_node *got, char *msg,
                       size_t n)
{
    char a[2048], b[2048];
    arr_text(want, a, sizeof a);
    arr_text(got, b, sizeof b);
    if (!strcmp(a, b))
        return true;
    size_t l = strlen(msg);
    snprintf(msg + l, n - l, "\n    %s: want %s, got %s", what, a, b);
    return false;
}

static bool same_str(const char *what, const char *want, const char *got, char *msg, size_t n)
{
    if (want && got && !strcmp(want, got))
        return true;
    size_t l = strlen(msg);
    snprintf(msg + l, n - l, "\n    %s: want %s, got %s", what, want ? want : "(none)",
             got ? got : "(none)");
    return false;
}

/* Checks that the verdict's explanation speaks to a clinician: no repository paths or table
 * rows, and a DailyMed link in the line of every candidate indication. */
static bool readable(const fhir_node *v, char *msg, size_t n)
{
    static const char *const banned[] = {".tsv", ".md", "conf/", "mappings/", "shared/reference",
                                         ".json", NULL};
    bool ok = true;
    const fhir_node *ex = fhir_node_get(v, "explanation");
    for (const fhir_node *c = fhir_node_first(ex); c; c = c->next) {
        const char *s = fhir_node_str(c);
        for (const char *const *b = banned; s && *b; b++)
            if (strstr(s, *b)) {
                size_t l = strlen(msg);
                snprintf(msg + l, n - l, "\n    explanation cites '%s': %.160s", *b, s);
                ok = false;
            }
    }
    static const char *const keys[] = {"products", "possible_products", NULL};
    for (const char *const *k = keys; *k; k++)
        for (const fhir_node *p = fhir_node_first(fhir_node_get(v, *k)); p; p = p->next) {
            const char *id = fhir_node_str(p);
            bool cited = false;
            for (const fhir_node *c = fhir_node_first(ex); c && id; c = c->next) {
                const char *s = fhir_node_str(c);
                if (s && strstr(s, id) && strstr(s, "https://dailymed.nlm.nih.gov/"))
                    cited = true;
            }
            if (!cited) {
                size_t l = strlen(msg);
                snprintf(msg + l, n - l, "\n    no explanation line cites the label of %s", id ? id : "?");
                ok = false;
            }
        }
    if (!fhir_node_get(v, "provenance")) {
        size_t l = strlen(msg);
        snprintf(msg + l, n - l, "\n    no provenance field");
        ok = false;
    }
    return ok;
}

static bool contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] && (hay[i] | 0x20) == (needle[i] | 0x20))
            i++;
        if (i == n)
            return true;
    }
    return false;
}

/* Every expected "to_request" word appears (case-insensitive) in some records-to-request line. */
static bool requests(const fhir_node *want, const fhir_node *v, char *msg, size_t n)
{
    bool ok = true;
    for (const fhir_node *w = fhir_node_first(want); w; w = w->next) {
        const char *word = fhir_node_str(w);
        bool found = false;
        for (const fhir_node *c = fhir_node_first(fhir_node_get(v, "to_request")); c && word; c = c->next)
            if (fhir_node_str(c) && contains_ci(fhir_node_str(c), word))
                found = true;
        if (!found) {
            size_t l = strlen(msg);
            snprintf(msg + l, n - l, "\n    to_request names nothing about '%s'", word ? word : "?");
            ok = false;
        }
    }
    return ok;
}

static bool check_one(const char *name, size_t *counted)
{
    char epath[900], bpath[900];
    snprintf(epath, sizeof epath, "%s/expect/%s.json", vdir, name);
    snprintf(bpath, sizeof bpath, "%s/%s.json", vdir, name);
    char *etext = support_read_file(epath);
    assert_non_null(etext);
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err;
    const fhir_node *e = fhir_json_parse(a, etext, strlen(etext), NULL, &err);
    if (!e)
        fail_msg("%s: %s", epath, err.msg);
    const char *as_of = fhir_node_str(fhir_node_get(e, "as_of"));
    const char *rationale = fhir_node_str(fhir_node_get(e, "rationale"));
    assert_non_null(as_of);
    if (!rationale || strlen(rationale) < 20)
        fail_msg("%s: a one-sentence label rationale is required", epath);
    char *argv[16];
    size_t k = 0;
    argv[k++] = (char *)bin;
    argv[k++] = "screen";
    argv[k++] = "--json";
    argv[k++] = "--as-of";
    argv[k++] = (char *)as_of;
    for (const fhir_node *x = fhir_node_first(fhir_node_get(e, "args")); x && k < 13; x = x->next)
        argv[k++] = (char *)fhir_node_str(x);
    argv[k++] = bpath;
    argv[k] = NULL;
    char *out = NULL, *errs = NULL;
    int rc = support_run(argv, &out, &errs, 120);
    if (rc != 0)
        fail_msg("%s: cartgate screen exited %d: %s", name, rc, errs ? errs : "");
    const fhir_node *v = fhir_json_parse(a, out, strlen(out), NULL, &err);
    if (!v)
        fail_msg("%s: screen output: %s", name, err.msg);
    char msg[8192] = "";
    bool ok = true;
    ok &= same_str("category", fhir_node_str(fhir_node_get(e, "category")),
                   fhir_node_str(fhir_node_get(v, "category")), msg, sizeof msg);
    static const char *const arrays[] = {"products", "possible_products", "missing", "review_flags",
                                         "notes", NULL};
    for (const char *const *key = arrays; *key; key++)
        ok &= same_array(*key, fhir_node_get(e, *key), fhir_node_get(v, *key), msg, sizeof msg);
    const fhir_node *consult = fhir_node_get(v, "consult");
    ok &= same_str("consult", fhir_node_str(fhir_node_get(e, "consult")),
                   fhir_node_str(fhir_node_get(consult, "recommendation")), msg, sizeof msg);
    ok &= same_array("consult triggers", fhir_node_get(e, "consult_triggers"),
                     fhir_node_get(consult, "triggers"), msg, sizeof msg);
    const fhir_node *pend = fhir_node_get(e, "pending");
    if (pend) {
        const fhir_node *gp = fhir_node_get(v, "pending");
        ok &= same_array("pending eligible", fhir_node_get(pend, "eligible"),
                         fhir_node_get(gp, "eligible"), msg, sizeof msg);
        ok &= same_array("pending possibly_eligible", fhir_node_get(pend, "possibly_eligible"),
                         fhir_node_get(gp, "possibly_eligible"), msg, sizeof msg);
    } else if (fhir_node_get(v, "pending")) {
        strcat(msg, "\n    a pending verdict without --include-pending");
        ok = false;
    }
    ok &= requests(fhir_node_get(e, "to_request"), v, msg, sizeof msg);
    ok &= readable(v, msg, sizeof msg);
    if (!ok)
        fprintf(stderr, "vignette %s (%s):%s\n", name, rationale, msg);
    (*counted)++;
    free(out);
    free(errs);
    free(etext);
    fhir_arena_free(a);
    return ok;
}

static void test_vignettes(void **state)
{
    (void)state;
    char edir[700];
    snprintf(edir, sizeof edir, "%s/expect", vdir);
    DIR *d = opendir(edir);
    assert_non_null(d);
    static char names[MAX_VIGNETTES][256];
    size_t n = 0;
    for (struct dirent *de; (de = readdir(d)) && n < MAX_VIGNETTES;) {
        size_t l = strlen(de->d_name);
        static const char suf[] = ".json";
        if (l > sizeof suf - 1 && !strcmp(de->d_name + l - (sizeof suf - 1), suf))
            snprintf(names[n++], sizeof names[0], "%.*s", (int)(l - (sizeof suf - 1)), de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
    size_t counted = 0, failed = 0;
    for (size_t i = 0; i < n; i++)
        if (!check_one(names[i], &counted))
            failed++;
    fprintf(stderr, "vignettes: %zu run, %zu as expected, %zu differ\n", counted, counted - failed,
            failed);
    assert_true(counted >= MIN_VIGNETTES);
    assert_int_equal(failed, 0);
}

int main(void)
{
    bin = getenv("CARTGATE_BIN");
    if (!bin) {
        fprintf(stderr, "CARTGATE_BIN not set\n");
        return 1;
    }
    snprintf(vdir, sizeof vdir, "%s/tests/vignettes", support_source_dir());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vignettes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
