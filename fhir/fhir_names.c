/* fhir_names — the common FHIR member names (see fhir_names.h). */
#include "fhir_names.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The table: after a leading NUL, each entry is its index + 1 in one byte, the name, and a NUL,
 * so a pointer to a name says its index in the byte before it, and a NUL two bytes before it
 * marks it as the start of a name (fhir_names_own). Append only: the next entry's byte is the
 * index + 1 of the new name (checked once, table_build); at most FHIR_NAMES_MAX entries. */
static const char pool[] = "\0"
    "\x01" "resourceType\0" "\x02" "id\0" "\x03" "meta\0" "\x04" "versionId\0"
    "\x05" "lastUpdated\0" "\x06" "profile\0" "\x07" "text\0" "\x08" "status\0" "\x09" "div\0"
    "\x0A" "code\0" "\x0B" "system\0" "\x0C" "display\0" "\x0D" "coding\0" "\x0E" "reference\0"
    "\x0F" "subject\0" "\x10" "patient\0" "\x11" "value\0" "\x12" "unit\0" "\x13" "valueQuantity\0"
    "\x14" "valueCodeableConcept\0" "\x15" "valueString\0" "\x16" "valueDateTime\0"
    "\x17" "valueBoolean\0" "\x18" "valueInteger\0" "\x19" "valueDecimal\0" "\x1A" "valueCode\0"
    "\x1B" "valueCoding\0" "\x1C" "valueReference\0" "\x1D" "valuePeriod\0" "\x1E" "valueRange\0"
    "\x1F" "valueRatio\0" "\x20" "effectiveDateTime\0" "\x21" "effectivePeriod\0" "\x22" "issued\0"
    "\x23" "category\0" "\x24" "type\0" "\x25" "url\0" "\x26" "identifier\0" "\x27" "use\0"
    "\x28" "start\0" "\x29" "end\0" "\x2A" "period\0" "\x2B" "name\0" "\x2C" "family\0"
    "\x2D" "given\0" "\x2E" "prefix\0" "\x2F" "suffix\0" "\x30" "telecom\0" "\x31" "gender\0"
    "\x32" "birthDate\0" "\x33" "address\0" "\x34" "line\0" "\x35" "city\0" "\x36" "state\0"
    "\x37" "postalCode\0" "\x38" "country\0" "\x39" "district\0" "\x3A" "extension\0"
    "\x3B" "modifierExtension\0" "\x3C" "medicationCodeableConcept\0" "\x3D" "medicationReference\0"
    "\x3E" "intent\0" "\x3F" "authoredOn\0" "\x40" "dosageInstruction\0" "\x41" "timing\0"
    "\x42" "repeat\0" "\x43" "boundsPeriod\0" "\x44" "frequency\0" "\x45" "periodUnit\0"
    "\x46" "doseAndRate\0" "\x47" "doseQuantity\0" "\x48" "route\0" "\x49" "sequence\0"
    "\x4A" "contained\0" "\x4B" "encounter\0" "\x4C" "performer\0" "\x4D" "actor\0" "\x4E" "date\0"
    "\x4F" "description\0" "\x50" "language\0" "\x51" "conclusion\0" "\x52" "conclusionCode\0"
    "\x53" "result\0" "\x54" "presentedForm\0" "\x55" "contentType\0" "\x56" "data\0"
    "\x57" "title\0" "\x58" "clinicalStatus\0" "\x59" "verificationStatus\0"
    "\x5A" "onsetDateTime\0" "\x5B" "onsetAge\0" "\x5C" "abatementDateTime\0"
    "\x5D" "recordedDate\0" "\x5E" "recorder\0" "\x5F" "asserter\0" "\x60" "bodySite\0"
    "\x61" "stage\0" "\x62" "summary\0" "\x63" "assessment\0" "\x64" "evidence\0" "\x65" "detail\0"
    "\x66" "note\0" "\x67" "authorString\0" "\x68" "time\0" "\x69" "component\0"
    "\x6A" "interpretation\0" "\x6B" "referenceRange\0" "\x6C" "low\0" "\x6D" "high\0"
    "\x6E" "method\0" "\x6F" "specimen\0" "\x70" "hasMember\0" "\x71" "derivedFrom\0"
    "\x72" "focus\0" "\x73" "basedOn\0" "\x74" "partOf\0" "\x75" "reasonCode\0"
    "\x76" "reasonReference\0" "\x77" "requester\0" "\x78" "informationSource\0"
    "\x79" "medication\0" "\x7A" "dosage\0" "\x7B" "context\0" "\x7C" "statusReason\0"
    "\x7D" "occurrenceDateTime\0" "\x7E" "performedDateTime\0" "\x7F" "performedPeriod\0"
    "\x80" "outcome\0" "\x81" "report\0" "\x82" "usedCode\0" "\x83" "beneficiary\0" "\x84" "payor\0"
    "\x85" "subscriber\0" "\x86" "subscriberId\0" "\x87" "relationship\0" "\x88" "class\0"
    "\x89" "order\0" "\x8A" "network\0" "\x8B" "coverage\0" "\x8C" "insurance\0"
    "\x8D" "organization\0" "\x8E" "managingOrganization\0" "\x8F" "generalPractitioner\0"
    "\x90" "maritalStatus\0" "\x91" "multipleBirthBoolean\0" "\x92" "multipleBirthInteger\0"
    "\x93" "deceasedBoolean\0" "\x94" "deceasedDateTime\0" "\x95" "communication\0"
    "\x96" "preferred\0" "\x97" "contact\0" "\x98" "active\0" "\x99" "rank\0" "\x9A" "quantity\0"
    "\x9B" "ingredient\0" "\x9C" "itemCodeableConcept\0" "\x9D" "strength\0" "\x9E" "numerator\0"
    "\x9F" "denominator\0" "\xA0" "form\0" "\xA1" "amount\0" "\xA2" "comparator\0" "\xA3" "answer\0"
    "\xA4" "item\0" "\xA5" "linkId\0" "\xA6" "version\0" "\xA7" "source\0" "\xA8" "security\0"
    "\xA9" "tag\0" "\xAA" "fullUrl\0" "\xAB" "resource\0" "\xAC" "entry\0" "\xAD" "search\0"
    "\xAE" "mode\0" "\xAF" "request\0" "\xB0" "response\0" "\xB1" "total\0" "\xB2" "link\0"
    "\xB3" "relation\0" "\xB4" "valueAttachment\0" "\xB5" "valueTime\0" "\xB6" "valueSampledData\0"
    "\xB7" "assigner\0" "\xB8" "serviceProvider\0" "\xB9" "hospitalization\0" "\xBA" "diagnosis\0"
    "\xBB" "participant\0" "\xBC" "individual\0" "\xBD" "location\0" "\xBE" "priority\0"
    "\xBF" "supportingInfo\0" "\xC0" "servicedDateTime\0" "\xC1" "occurrencePeriod\0"
    "\xC2" "progress\0" "\xC3" "therapy\0" "\xC4" "doNotPerform\0" "\xC5" "subjectStatus\0"
    "\xC6" "collection\0" "\xC7" "collectedDateTime\0" "\xC8" "accession\0" "\xC9" "container\0"
    "\xCA" "processing\0" "\xCB" "condition\0" "\xCC" "onsetPeriod\0" "\xCD" "onsetString\0"
    "\xCE" "abatementPeriod\0" "\xCF" "severity\0" "\xD0" "dispenseRequest\0"
    "\xD1" "substitution\0" "\xD2" "allowed\0" "\xD3" "allowedBoolean\0" "\xD4" "validityPeriod\0"
    "\xD5" "numberOfRepeatsAllowed\0" "\xD6" "expectedSupplyDuration\0"
    "\xD7" "courseOfTherapyType\0" "\xD8" "reported\0" "\xD9" "reportedBoolean\0"
    "\xDA" "dateAsserted\0" "\xDB" "taken\0" "\xDC" "wasNotTaken\0" "\xDD" "author\0"
    "\xDE" "custodian\0" "\xDF" "docStatus\0" "\xE0" "attachment\0" "\xE1" "content\0"
    "\xE2" "format\0" "\xE3" "size\0" "\xE4" "hash\0" "\xE5" "creation\0" "\xE6" "valueSet\0"
    "\xE7" "expression\0" "\xE8" "criticality\0" "\xE9" "reaction\0" "\xEA" "manifestation\0"
    "\xEB" "onset\0" "\xEC" "lotNumber\0" "\xED" "expirationDate\0" "\xEE" "batch\0"
    "\xEF" "count\0" "\xF0" "unitOfMeasure\0";

#define POOL_BYTES (sizeof pool - 1) /* the literal's own final NUL is not an entry */

static uint16_t off[FHIR_NAMES_MAX]; /* where name i starts in pool */
static uint8_t len_of[FHIR_NAMES_MAX];
static size_t count;

/* Name lookup: an open-addressing hash of the table on a cheap hash of a name's length and three
 * of its bytes, built once (the table never changes). */
#define HSLOTS 1024u
static unsigned char hslot[HSLOTS]; /* index + 1; 0 = empty */
static pthread_once_t once = PTHREAD_ONCE_INIT;

static uint32_t name_hash(const char *s, size_t n)
{
    if (!n)
        return 0;
    return ((uint32_t)n * 131u + (unsigned char)s[0] * 31u + (unsigned char)s[n / 2] * 7u +
            (unsigned char)s[n - 1]) & (HSLOTS - 1);
}

static void table_build(void)
{
    _Static_assert(POOL_BYTES < UINT16_MAX, "name table larger than its offsets");
    size_t i = 1;
    while (i < POOL_BYTES) {
        if ((unsigned char)pool[i] != count + 1 || count >= FHIR_NAMES_MAX)
            abort(); /* an entry's index byte is not the next index: the table is broken */
        size_t n = strlen(pool + i + 1);
        if (n == 0 || n > UINT8_MAX)
            abort(); /* the table is broken */
        off[count] = (uint16_t)(i + 1);
        len_of[count] = (uint8_t)n;
        uint32_t h = name_hash(pool + i + 1, n);
        while (hslot[h]) {
            if (!strcmp(pool + off[hslot[h] - 1], pool + i + 1))
                abort(); /* a name listed twice: the table is broken */
            h = (h + 1) & (HSLOTS - 1);
        }
        hslot[h] = (unsigned char)(count + 1);
        count++;
        i += n + 2;
    }
}

size_t fhir_names_count(void)
{
    pthread_once(&once, table_build);
    return count;
}

/* Bytes equal, the first and last eight (or four) at once: the table's names are short. */
static int same(const char *a, const char *b, size_t n)
{
    if (n >= 8) {
        uint64_t x, y, z, w;
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        memcpy(&z, a + n - 8, 8);
        memcpy(&w, b + n - 8, 8);
        return x == y && z == w && (n <= 16 || !memcmp(a + 8, b + 8, n - 16));
    }
    if (n >= 4) {
        uint32_t x, y, z, w;
        memcpy(&x, a, 4);
        memcpy(&y, b, 4);
        memcpy(&z, a + n - 4, 4);
        memcpy(&w, b + n - 4, 4);
        return x == y && z == w;
    }
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

int fhir_names_find(const char *s, size_t n)
{
    pthread_once(&once, table_build);
    if (!s || n == 0 || n > UINT8_MAX)
        return -1;
    for (uint32_t h = name_hash(s, n); hslot[h]; h = (h + 1) & (HSLOTS - 1)) {
        unsigned ix = hslot[h] - 1u;
        if (len_of[ix] == n && same(pool + off[ix], s, n))
            return (int)ix;
    }
    return -1;
}

const char *fhir_names_at(size_t i, uint32_t *len)
{
    pthread_once(&once, table_build);
    if (i >= count)
        return NULL;
    if (len)
        *len = len_of[i];
    return pool + off[i];
}

int fhir_names_own(const char *p)
{
    /* addresses compared as integers: p need not point into the table */
    uintptr_t u = (uintptr_t)p, b = (uintptr_t)pool;
    if (u < b + 2 || u >= b + POOL_BYTES)
        return -1;
    /* a name starts after its index byte (nonzero) and the previous entry's NUL: a pointer
     * into the middle of a name, or at an index byte, has no such pair before it */
    if (p[-2] != '\0' || p[-1] == '\0')
        return -1;
    return (unsigned char)p[-1] - 1;
}
