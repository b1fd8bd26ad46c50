/* cds_card — one patient's CDS Hooks card from the screening result. See cds_card.h. */
#include "cds_card.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "fhir_json.h"
#include "screen.h"

#define MAX_IND 64

/* The indications that count for the card: eligible ones, else possibly eligible ones. */
static size_t counted(const elig_ruleset *rs, const elig_result *r, size_t *idx)
{
    size_t n = screen_indications(rs, r, true, idx, MAX_IND);
    return n < MAX_IND ? n : MAX_IND;
}

bool cds_card_wanted(const elig_ruleset *rs, const elig_result *r)
{
    size_t idx[MAX_IND];
    return counted(rs, r, idx) > 0 || elig_result_consult(r) != ELIG_CONSULT_NONE;
}

static bool urgent(const elig_result *r)
{
    return elig_result_urgency(r) == ELIG_URGENCY_NOW || elig_result_consult(r) == ELIG_CONSULT_NOW;
}

void cds_card_uuid(const cds_card_input *in, char out[CDS_CARD_UUID_LEN])
{
    size_t idx[MAX_IND], n = counted(in->rules, in->result, idx);
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    if (!m || EVP_DigestInit_ex(m, EVP_sha256(), NULL) != 1)
        abort();
    const char *parts[] = {"cartgate-cds-card", in->patient_id, elig_category_name(elig_result_category(in->result)),
                           elig_consult_name(elig_result_consult(in->result))};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        EVP_DigestUpdate(m, parts[i], strlen(parts[i]) + 1);
    for (size_t i = 0; i < n; i++) {
        const char *k = elig_ruleset_key(in->rules, idx[i]);
        EVP_DigestUpdate(m, k, strlen(k) + 1);
    }
    unsigned char h[32];
    unsigned hl = 0;
    EVP_DigestFinal_ex(m, h, &hl);
    EVP_MD_CTX_free(m);
    h[6] = (unsigned char)((h[6] & 0x0f) | 0x80); /* version 8: name-based, custom hash (RFC 9562) */
    h[8] = (unsigned char)((h[8] & 0x3f) | 0x80); /* variant 10 */
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[h[i] >> 4];
        out[o++] = hex[h[i] & 15];
    }
    out[o] = 0;
}

/* Characters of UTF-8 text. */
static size_t chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

/* "LBCL-2L" -> "LBCL 2nd line"; "LBCL-2L-TI" -> "LBCL 2nd line, transplant-ineligible". */
static void plain_indication(const char *key, char *out, size_t n)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", key);
    const char *line = "";
    bool ti = false;
    char *d = strchr(buf, '-');
    if (d) {
        *d = 0;
        const char *rest = d + 1;
        if (!strncmp(rest, "2L", 2))
            line = " 2nd line";
        else if (!strncmp(rest, "3L", 2))
            line = " 3rd line";
        else if (!strncmp(rest, "4L", 2))
            line = " 4th line";
        ti = strstr(rest, "TI") != NULL;
    }
    snprintf(out, n, "%s%s%s", buf, line, ti ? ", transplant-ineligible" : "");
}

/* Appends s to a ", "-separated list in out unless it is there already. */
static void list_add(char *out, size_t n, const char *s)
{
    size_t sl = strlen(s);
    for (const char *p = out; (p = strstr(p, s)); p += sl)
        if ((p == out || p[-1] == ' ') && (p[sl] == 0 || p[sl] == ','))
            return;
    size_t l = strlen(out);
    snprintf(out + l, n - l, "%s%s", l ? ", " : "", s);
}

void cds_card_summary(const cds_card_input *in, char *out, size_t n)
{
    size_t idx[MAX_IND], k = counted(in->rules, in->result, idx);
    elig_category cat = elig_result_category(in->result);
    elig_consult con = elig_result_consult(in->result);
    bool now = urgent(in->result);
    if (k == 0) {
        snprintf(out, n, "%s",
                 con == ELIG_CONSULT_NOW ? "Refer now for a CAR T consultation (relapsed or refractory disease)"
                                         : "Consider an early CAR T consultation (relapsed or refractory disease)");
        return;
    }
    char products[400] = "", inds[400] = "";
    for (size_t i = 0; i < k; i++) {
        elig_label l;
        elig_ruleset_label(in->rules, idx[i], &l);
        char pi[128];
        plain_indication(l.indication ? l.indication : "", pi, sizeof pi);
        list_add(products, sizeof products, l.product ? l.product : "?");
        list_add(inds, sizeof inds, pi);
    }
    const char *head = cat == ELIG_ELIGIBLE ? "Eligible for CAR T" : "Possibly eligible for CAR T";
    const char *tail = now ? "refer now" : cat == ELIG_ELIGIBLE ? "consider referral" : "check and consider referral";
    snprintf(out, n, "%s (%s \xc2\xb7 %s) \xe2\x80\x94 %s", head, products, inds, tail);
    if (chars(out) <= CDS_CARD_SUMMARY_MAX)
        return;
    snprintf(out, n, "%s (%s) \xe2\x80\x94 %s", head, products, tail);
    if (chars(out) <= CDS_CARD_SUMMARY_MAX)
        return;
    snprintf(out, n, "%s (%zu label indications) \xe2\x80\x94 %s", head, k, tail);
}

static void jstr(fhir_buf *b, const char *s)
{
    fhir_json_write_string(b, s ? s : "", s ? strlen(s) : 0);
}

/* The explanation lines (elig_result_write_explanation) about indication key, without the
 * key itself: "eligible (Yescarta, ...): eligible. gate: met (...); ... Label: ..." */
static void detail_for(fhir_buf *md, const char *expl, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = expl; p && *p;) {
        const char *nl = strchr(p, '\n');
        while (*p == ' ')
            p++; /* the text form indents each line */
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > kl && !strncmp(p, key, kl) && p[kl] == ' ') {
            fhir_buf_puts(md, "  ");
            fhir_buf_append(md, p + kl + 1, len - kl - 1);
            fhir_buf_puts(md, "\n");
        }
        p = nl ? nl + 1 : NULL;
    }
}

static void markdown(const cds_card_input *in, const size_t *idx, size_t k, fhir_buf *md)
{
    const elig_ruleset *rs = in->rules;
    const elig_result *r = in->result;
    fhir_buf ex;
    fhir_buf_init(&ex, CDS_CARD_MAX_BYTES);
    elig_result_write_explanation(rs, in->facts, r, &ex);
    const char *expl = fhir_buf_cstr(&ex);
    if (k) {
        fhir_buf_puts(md, "**Label indications** (hard gates of the FDA label):\n\n");
        for (size_t i = 0; i < k; i++) {
            elig_label l;
            elig_ruleset_label(rs, idx[i], &l);
            const char *key = elig_ruleset_key(rs, idx[i]);
            elig_category c = elig_result_ind_category(r, idx[i]);
            elig_display d;
            elig_display_of(rs, key, &d);
            fhir_buf_printf(md, "- **%s** (%s) \xe2\x80\x94 %s: %s\n", l.brand ? l.brand : l.product,
                            l.generic ? l.generic : "", d.text,
                            c == ELIG_ELIGIBLE ? "every gate met" : "no gate failed, some facts unknown");
            detail_for(md, expl, key);
        }
    }
    const char *texts[64];
    size_t nt = elig_result_to_request(rs, in->facts, r, texts, 64);
    if (nt) {
        fhir_buf_puts(md, "\n**Missing** (unknown, never counted against the patient) — records to check or request:\n\n");
        for (size_t i = 0; i < nt && i < 64; i++)
            fhir_buf_printf(md, "- %s\n", texts[i]);
    }
    const char *ids[ELIG_MAX_FLAGS];
    size_t nf = elig_result_flags(rs, r, ids, ELIG_MAX_FLAGS);
    if (nf) {
        fhir_buf_puts(md, "\n**Review flags** (trial thresholds; they never block a referral): ");
        for (size_t i = 0; i < nf && i < ELIG_MAX_FLAGS; i++)
            fhir_buf_printf(md, "%s%s", i ? ", " : "", ids[i]);
        fhir_buf_puts(md, "\n");
    }
    const char *tids[16], *reasons[16];
    size_t nc = elig_result_consult_triggers(rs, r, tids, reasons, 16);
    if (nc) {
        fhir_buf_puts(md, "\n**Referral timing**:\n\n");
        for (size_t i = 0; i < nc && i < 16; i++)
            fhir_buf_printf(md, "- %s\n", reasons[i]);
    }
    fhir_buf_free(&ex);
}

int cds_card_write(const cds_card_input *in, fhir_buf *out, char uuid[CDS_CARD_UUID_LEN])
{
    const elig_ruleset *rs = in->rules;
    const elig_result *r = in->result;
    if (!cds_card_wanted(rs, r))
        return 1;
    size_t idx[MAX_IND], k = counted(rs, r, idx);
    char u[CDS_CARD_UUID_LEN], su[CDS_CARD_UUID_LEN + 8];
    cds_card_uuid(in, u);
    if (uuid)
        memcpy(uuid, u, CDS_CARD_UUID_LEN);
    snprintf(su, sizeof su, "%.35s1", u); /* the suggestion's uuid: the card's, last digit changed */
    if (su[35] == u[35])
        su[35] = '2';
    char summary[400];
    cds_card_summary(in, summary, sizeof summary);
    fhir_buf md;
    fhir_buf_init(&md, CDS_CARD_MAX_BYTES / 2);
    markdown(in, idx, k, &md);

    fhir_buf_puts(out, "{\"uuid\":");
    jstr(out, u);
    fhir_buf_puts(out, ",\"summary\":");
    jstr(out, summary);
    fhir_buf_printf(out, ",\"indicator\":\"%s\"", urgent(r) ? "warning" : "info");
    fhir_buf_puts(out, ",\"detail\":");
    jstr(out, fhir_buf_cstr(&md));
    fhir_buf_free(&md);
    /* source: the label of the first indication that counts (a consult-only card: the
     * refer-early guidance has no FDA label; cartgate is the source) */
    elig_label l = {0};
    if (k)
        elig_ruleset_label(rs, idx[0], &l);
    fhir_buf_puts(out, ",\"source\":{\"label\":");
    if (k && l.document) {
        jstr(out, l.document);
        if (l.url) {
            fhir_buf_puts(out, ",\"url\":");
            jstr(out, l.url);
        }
    } else {
        jstr(out, "cartgate CAR T screening (refer-early guidance)");
    }
    fhir_buf_puts(out, "}");
    /* the suggestion: a draft referral for the clinician to sign */
    fhir_buf_puts(out, ",\"suggestions\":[{\"label\":\"Propose a CAR T referral (draft for you to sign)\",\"uuid\":");
    jstr(out, su);
    fhir_buf_puts(out, ",\"isRecommended\":true,\"actions\":[{\"type\":\"create\",\"description\":"
                       "\"Draft referral for CAR T-cell therapy evaluation\",\"resource\":{\"resourceType\":"
                       "\"ServiceRequest\",\"status\":\"draft\",\"intent\":\"proposal\",\"priority\":");
    jstr(out, urgent(r) ? "urgent" : "routine");
    fhir_buf_puts(out, ",\"code\":{\"coding\":[{\"system\":\"http://snomed.info/sct\",\"code\":\"3457005\","
                       "\"display\":\"Patient referral\"}],\"text\":\"Referral for CAR T-cell therapy evaluation\"},"
                       "\"subject\":{\"reference\":");
    char ref[300];
    snprintf(ref, sizeof ref, "Patient/%s", in->patient_id);
    jstr(out, ref);
    fhir_buf_puts(out, "},\"reasonCode\":[{\"text\":");
    jstr(out, summary);
    fhir_buf_puts(out, "}]}}]}],\"selectionBehavior\":\"at-most-one\"");
    /* links: the patient page, plain and as a SMART launch with appContext */
    char url[600], ctx[1200];
    snprintf(url, sizeof url, "%s/ui/patients/%s", in->public_url, in->patient_id);
    fhir_buf c;
    fhir_buf_init(&c, sizeof ctx);
    fhir_buf_puts(&c, "{\"patient\":");
    jstr(&c, in->patient_id);
    fhir_buf_printf(&c, ",\"card\":\"%s\",\"category\":\"%s\",\"consult\":\"%s\",\"indications\":[", u,
                    elig_category_name(elig_result_category(r)), elig_consult_name(elig_result_consult(r)));
    for (size_t i = 0; i < k; i++) {
        if (i)
            fhir_buf_putc(&c, ',');
        jstr(&c, elig_ruleset_key(rs, idx[i]));
    }
    fhir_buf_puts(&c, "]}");
    snprintf(ctx, sizeof ctx, "%s", fhir_buf_cstr(&c));
    fhir_buf_free(&c);
    fhir_buf_puts(out, ",\"links\":[{\"label\":\"Open the CAR T screening in cartgate\",\"url\":");
    jstr(out, url);
    fhir_buf_puts(out, ",\"type\":\"absolute\"},{\"label\":\"CAR T screening (SMART app)\",\"url\":");
    jstr(out, url);
    fhir_buf_puts(out, ",\"type\":\"smart\",\"appContext\":");
    jstr(out, ctx);
    fhir_buf_puts(out, "}]}");
    return out->overflow ? -1 : 0;
}
