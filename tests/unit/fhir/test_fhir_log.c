/* Unit tests of fhir/fhir_log: levels, the line format, every value quoted and escaped so a
 * value cannot forge a field or a line, printf conversions, truncation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <inttypes.h>
#include <unistd.h>

#include "fhir_clock.h"
#include "fhir_json.h"
#include "fhir_log.h"
#include "fhir_node.h"

/* ---- a strict logfmt reader for the checks ---------------------------------------------- */

#define MAXF 32

typedef struct fields {
    size_t n;
    char key[MAXF][64];
    char val[MAXF][FHIR_LOG_LINE_MAX];
} fields;

/* Reads one line of `key="value"` pairs separated by single spaces; unescapes values.
 * Returns 0, or -1 when the line is not exactly that. */
static int parse_line(const char *s, fields *f)
{
    f->n = 0;
    while (*s && *s != '\n') {
        if (f->n == MAXF)
            return -1;
        size_t k = 0;
        while (*s && *s != '=' && *s != ' ' && *s != '"' && k < 63)
            f->key[f->n][k++] = *s++;
        f->key[f->n][k] = '\0';
        if (!k || *s++ != '=' || *s++ != '"')
            return -1;
        size_t v = 0;
        for (;;) {
            char c = *s++;
            if (c == '\0' || c == '\n')
                return -1;
            if (c == '"')
                break;
            if (c == '\\') {
                char e = *s++;
                if (e == 'n') c = '\n';
                else if (e == 'r') c = '\r';
                else if (e == 't') c = '\t';
                else if (e == '"' || e == '\\') c = e;
                else if (e == 'u') {
                    unsigned x;
                    if (sscanf(s, "%4x", &x) != 1)
                        return -1;
                    c = (char)x;
                    s += 4;
                } else
                    return -1;
            }
            f->val[f->n][v++] = c;
        }
        f->val[f->n][v] = '\0';
        f->n++;
        if (*s == ' ')
            s++;
        else if (*s && *s != '\n')
            return -1;
    }
    return *s == '\n' && s[1] == '\0' ? 0 : -1;
}

static const char *field(const fields *f, const char *key)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->key[i], key))
            return f->val[i];
    return NULL;
}

/* ---- capture ------------------------------------------------------------------------------ */

static char path[] = "/tmp/cartgate-log-XXXXXX";
static FILE *cap;

static int setup(void **state)
{
    (void)state;
    strcpy(path, "/tmp/cartgate-log-XXXXXX");
    cap = fdopen(mkstemp(path), "w+");
    fhir_log_set_stream(cap);
    fhir_log_set_level(FHIR_LOG_INFO);
    fhir_clock_set_fixed(0);
    return cap ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    fhir_log_set_stream(NULL);
    fhir_clock_set_fixed(-1);
    fclose(cap);
    remove(path);
    return 0;
}

/* Everything written since the last call (static buffer). */
static const char *captured(void)
{
    static char buf[4 * FHIR_LOG_LINE_MAX];
    fflush(cap);
    rewind(cap);
    size_t n = fread(buf, 1, sizeof buf - 1, cap);
    buf[n] = '\0';
    rewind(cap);
    if (ftruncate(fileno(cap), 0) != 0)
        fail_msg("ftruncate");
    return buf;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_levels_and_format(void **state)
{
    (void)state;
    fhir_log_level l;
    assert_int_equal(fhir_log_level_parse("warn", &l), 0);
    assert_int_equal(l, FHIR_LOG_WARN);
    assert_int_equal(fhir_log_level_parse("loud", &l), -1);
    fhir_log(FHIR_LOG_DEBUG, "hidden", "x=1");
    assert_string_equal(captured(), "");
    fhir_log(FHIR_LOG_WARN, "poll.fail", "endpoint=%s status=%d", "ehr", 503);
    assert_string_equal(captured(), "ts=\"1970-01-01T00:00:00.000Z\" level=\"warn\" "
                                    "event=\"poll.fail\" endpoint=\"ehr\" status=\"503\"\n");
    fhir_log(FHIR_LOG_INFO, "daemon.stop", NULL);
    assert_string_equal(captured(), "ts=\"1970-01-01T00:00:00.000Z\" level=\"info\" "
                                    "event=\"daemon.stop\"\n");
}

/* A value carrying a newline, quotes and `key=` text cannot add a field or a line. */
static void test_values_cannot_forge(void **state)
{
    (void)state;
    const char *evil[] = {
        "x\nts=\"2030-01-01T00:00:00.000Z\" level=\"error\" event=\"admin.grant\" actor=\"root\"",
        "x\" actor=\"root",
        "x actor=root",
        "x\\\" actor=\\\"root",
        "\r\n\t\x01\x7f end",
        "",
    };
    fields f;
    for (size_t i = 0; i < sizeof evil / sizeof evil[0]; i++) {
        fhir_log(FHIR_LOG_ERROR, "referral.approve", "referral=%d actor=%s reason=%s", 7, evil[i],
                 evil[i]);
        const char *out = captured();
        if (count_lines(out) != 1 || parse_line(out, &f) != 0)
            fail_msg("value %zu broke the line: %s", i, out);
        assert_int_equal(f.n, 6);
        assert_string_equal(field(&f, "event"), "referral.approve");
        assert_string_equal(field(&f, "level"), "error");
        assert_string_equal(field(&f, "referral"), "7");
        assert_string_equal(field(&f, "actor"), evil[i]); /* round-trips exactly */
        assert_string_equal(field(&f, "reason"), evil[i]);
    }
    /* the event name itself is a value too */
    fhir_log(FHIR_LOG_INFO, "a b\nlevel=\"error\"", "x=%d", 1);
    const char *out = captured();
    assert_int_equal(count_lines(out), 1);
    assert_int_equal(parse_line(out, &f), 0);
    assert_int_equal(f.n, 4);
    assert_string_equal(field(&f, "level"), "info");
    fhir_log(FHIR_LOG_INFO, "ctl", "v=%s", "\x01");
    assert_non_null(strstr(captured(), "v=\"\\u0001\""));
}

/* Literal text belongs to the value it stands in; conversions never split values. */
static void test_values_and_conversions(void **state)
{
    (void)state;
    fields f;
    fhir_log(FHIR_LOG_INFO, "e", "note=in-flight polls abandoned; cursors not advanced");
    assert_int_equal(parse_line(captured(), &f), 0);
    assert_string_equal(field(&f, "note"), "in-flight polls abandoned; cursors not advanced");
    fhir_log(FHIR_LOG_INFO, "e", "delay=%dms path=%s/%s pct=%d%% a=b=c", 250, "x y", "z", 5);
    assert_int_equal(parse_line(captured(), &f), 0);
    assert_int_equal(f.n, 7);
    assert_string_equal(field(&f, "delay"), "250ms");
    assert_string_equal(field(&f, "path"), "x y/z");
    assert_string_equal(field(&f, "pct"), "5%");
    assert_string_equal(field(&f, "a"), "b=c");
    fhir_log(FHIR_LOG_INFO, "e", "hello %s", "world");
    assert_int_equal(parse_line(captured(), &f), 0);
    assert_string_equal(field(&f, "msg"), "hello world");

    size_t z = 42;
    long long ll = -9000000000LL;
    int64_t i64 = INT64_MIN;
    unsigned char uc = 200;
    short sh = -3;
    const char *volatile none = NULL; /* glibc prints (null); so does fhir_log */
    fhir_log(FHIR_LOG_INFO, "e",
             "z=%zu ll=%lld i64=%" PRId64 " u=%u x=%x X=%#X o=%o c=%c f=%.2f g=%g w=%5d|"
             " star=%*d prec=%.3s sp=%.*s hh=%hhu h=%hd l=%ld ul=%lu n=%s",
             z, ll, i64, 7u, 255u, 255u, 8u, 'Q', 3.14159, 0.5, 42, 4, 7, "abcdef", 2, "xyz", uc,
             sh, -5L, 6UL, none);
    const char *out = captured();
    if (parse_line(out, &f) != 0)
        fail_msg("unparsable: %s", out);
    assert_string_equal(field(&f, "z"), "42");
    assert_string_equal(field(&f, "ll"), "-9000000000");
    assert_string_equal(field(&f, "i64"), "-9223372036854775808");
    assert_string_equal(field(&f, "u"), "7");
    assert_string_equal(field(&f, "x"), "ff");
    assert_string_equal(field(&f, "X"), "0XFF");
    assert_string_equal(field(&f, "o"), "10");
    assert_string_equal(field(&f, "c"), "Q");
    assert_string_equal(field(&f, "f"), "3.14");
    assert_string_equal(field(&f, "g"), "0.5");
    assert_string_equal(field(&f, "w"), "   42|");
    assert_string_equal(field(&f, "star"), "   7");
    assert_string_equal(field(&f, "prec"), "abc");
    assert_string_equal(field(&f, "sp"), "xy");
    assert_string_equal(field(&f, "hh"), "200");
    assert_string_equal(field(&f, "h"), "-3");
    assert_string_equal(field(&f, "l"), "-5");
    assert_string_equal(field(&f, "ul"), "6");
    assert_string_equal(field(&f, "n"), "(null)");
}

/* An over-long line is cut inside a value, still closes it, and says so. */
static void test_truncation(void **state)
{
    (void)state;
    char *big = malloc(3 * FHIR_LOG_LINE_MAX);
    assert_non_null(big);
    for (size_t i = 0; i < 3 * FHIR_LOG_LINE_MAX - 1; i++)
        big[i] = i % 7 == 0 ? '\n' : 'a'; /* escapes make it longer still */
    big[3 * FHIR_LOG_LINE_MAX - 1] = '\0';
    fields f;
    fhir_log(FHIR_LOG_WARN, "big", "a=%s b=%s", big, "after");
    const char *out = captured();
    assert_int_equal(count_lines(out), 1);
    assert_true(strlen(out) <= FHIR_LOG_LINE_MAX);
    assert_int_equal(parse_line(out, &f), 0);
    assert_string_equal(field(&f, "truncated"), "true");
    assert_null(field(&f, "b"));
    assert_true(strlen(field(&f, "a")) > 1000);
    assert_int_equal(memcmp(field(&f, "a"), big, strlen(field(&f, "a"))), 0);
    /* cut between two pairs: a long value earlier and many short pairs after */
    big[FHIR_LOG_LINE_MAX - 200] = '\0';
    for (int k = 0; k < 40; k++) {
        fhir_log(FHIR_LOG_WARN, "big", "a=%s k1=%d k2=%d k3=%d k4=%d k5=%d k6=%d", big + k * 3,
                 1, 2, 3, 4, 5, 6);
        out = captured();
        assert_int_equal(count_lines(out), 1);
        assert_true(strlen(out) <= FHIR_LOG_LINE_MAX);
        if (parse_line(out, &f) != 0)
            fail_msg("cut %d unparsable: %s", k, out + strlen(out) - 80);
    }
    free(big);
}

/* log.format json: the same pairs as one JSON object per line that a JSON reader accepts,
 * forged values included, and a cut line still one valid object that says so. */
static void test_json_format(void **state)
{
    (void)state;
    fhir_log_set_format(FHIR_LOG_JSON);
    fhir_log(FHIR_LOG_INFO, "referral.approved", "referral=%d actor=%s note=%s", 7,
             "x actor=\"admin\"\n{\"event\":\"forged\"}", "tab\there \x01 \xc3\xa9");
    const char *out = captured();
    assert_int_equal(count_lines(out), 1);
    fhir_arena *a = fhir_arena_new(0);
    fhir_error err = {0};
    fhir_node *n = fhir_json_parse(a, out, strlen(out), NULL, &err);
    if (!n)
        fail_msg("not JSON (%s): %s", err.msg, out);
    assert_string_equal(fhir_node_str(fhir_node_get(n, "level")), "info");
    assert_string_equal(fhir_node_str(fhir_node_get(n, "event")), "referral.approved");
    assert_string_equal(fhir_node_str(fhir_node_get(n, "referral")), "7");
    assert_string_equal(fhir_node_str(fhir_node_get(n, "actor")), "x actor=\"admin\"\n{\"event\":\"forged\"}");
    assert_string_equal(fhir_node_str(fhir_node_get(n, "note")), "tab\there \x01 \xc3\xa9");
    assert_non_null(fhir_node_str(fhir_node_get(n, "ts")));
    /* a line over the cap: cut, still one object, marked */
    char *big = malloc(3 * FHIR_LOG_LINE_MAX);
    assert_non_null(big);
    memset(big, 'b', 3 * FHIR_LOG_LINE_MAX - 1);
    big[3 * FHIR_LOG_LINE_MAX - 1] = '\0';
    fhir_log(FHIR_LOG_WARN, "big", "a=%s b=%s", big, "after");
    out = captured();
    assert_int_equal(count_lines(out), 1);
    assert_true(strlen(out) <= FHIR_LOG_LINE_MAX);
    n = fhir_json_parse(a, out, strlen(out), NULL, &err);
    if (!n)
        fail_msg("cut line not JSON (%s)", err.msg);
    assert_string_equal(fhir_node_str(fhir_node_get(n, "truncated")), "true");
    assert_null(fhir_node_get(n, "b"));
    free(big);
    fhir_arena_free(a);
    fhir_log_set_format(FHIR_LOG_LOGFMT);
    assert_int_equal(fhir_log_format_parse("json", &(fhir_log_format){0}), 0);
    assert_int_equal(fhir_log_format_parse("xml", &(fhir_log_format){0}), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_levels_and_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_values_cannot_forge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_values_and_conversions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_format, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
