#!/usr/bin/env python3
"""Writes the clinician-style vignettes of this folder: NN-name.json (a FHIR R4 collection Bundle
with one patient's record, US Core / mCODE shapes) and expect/NN-name.json (what `cartgate
screen --json` must say, and the label rationale in one sentence).

A development aid only (python3, standard library): the tests read the JSON files. Run it from
anywhere: `python3 tests/vignettes/build_vignettes.py`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fhirkit import Chart, add_days, write_json  # noqa: E402

AS_OF = "2026-12-05"
LABS = "2026-11-20"      # inside the 90-day lab lookback
OUTSIDE = "Outside records: Riverside Regional Cancer Center (scanned consult letter)"

V = []


def vignette(num, slug):
    def wrap(fn):
        V.append((num, slug, fn))
        return fn
    return wrap


def expect(category, products=(), possible=(), missing=(), consult="none", triggers=(),
           flags=(), notes=(), rationale="", as_of=AS_OF, args=(), pending=None, to_request=()):
    e = {"as_of": as_of, "args": list(args), "category": category,
         "products": sorted(products), "possible_products": sorted(possible),
         "missing": sorted(missing), "consult": consult, "consult_triggers": sorted(triggers),
         "review_flags": sorted(flags), "notes": sorted(notes), "rationale": rationale}
    if pending is not None:
        e["pending"] = pending
    if to_request:
        e["to_request"] = list(to_request)
    return e


# common codings (codes.md §1.2, §1.4, §1.5)
DLBCL = [("icd10cm", "C83.38", "Diffuse large B-cell lymphoma, lymph nodes of multiple sites"),
         ("snomed", "109969005", "Diffuse large B-cell malignant lymphoma (disorder)")]
FL2 = [("icd10cm", "C82.18", "Follicular lymphoma grade II, lymph nodes of multiple sites"),
       ("icdo3", "9691/3", "Follicular lymphoma, grade 2")]
MCL = [("icd10cm", "C83.18", "Mantle cell lymphoma, lymph nodes of multiple sites"),
       ("snomed", "443487006", "Mantle cell lymphoma (disorder)")]
CLL = [("icd10cm", "C91.10", "Chronic lymphocytic leukemia of B-cell type not having achieved remission"),
       ("snomed", "92814006", "Chronic lymphoid leukemia, disease (disorder)")]
MM = [("icd10cm", "C90.00", "Multiple myeloma not having achieved remission"),
      ("snomed", "109989006", "Multiple myeloma (disorder)")]
BALL = [("snomed", "277571004", "B-cell acute lymphoblastic leukemia (disorder)"),
        ("icd10cm", "C91.00", "Acute lymphoblastic leukemia not having achieved remission")]
ASCT = [("cpt", "38241", "Hematopoietic progenitor cell (HPC); autologous transplantation"),
        ("snomed", "425983008", "Autologous peripheral blood stem cell transplant")]
RR_TRIG_LBCL = ["lbcl_relapse"]


def lbcl_chart(pid, gender, birth, dx_day, cycle1, relapse_day, regimen="R-CHOP", n=6):
    """DLBCL treated with 6 cycles of R-CHOP, complete response, biopsy-proven relapse."""
    c = Chart(pid)
    c.patient(gender, birth)
    d = c.dx(DLBCL, "Diffuse large B-cell lymphoma, stage IIIA", dx_day)
    last = c.regimen(regimen, cycle1, n, 21, d)
    c.status(add_days(last, 45), "improved", d, "End-of-treatment PET: complete metabolic response")
    c.status(relapse_day, "worsened", d, "Biopsy-proven relapse")
    return c, d, last


def routine(c, weight=82, ecog=1, **labs):
    c.panel(LABS, **labs)
    c.ecog(ecog, LABS)
    if weight:
        c.weight(weight, LABS)


# ---------------------------------------------------------------- large B-cell lymphoma

@vignette(1, "lbcl-relapse-11-months-after-first-line")
def v01():
    c, d, last = lbcl_chart("vig01", "male", "1961-06-20", "2025-07-28", "2025-08-11", "2026-11-12")
    routine(c, weight=84)
    return c, expect("eligible", ["axi-cel:LBCL-2L", "liso-cel:LBCL-2L"], ["liso-cel:LBCL-2L-TI"],
                     ["hct_ineligible"], "refer_now", RR_TRIG_LBCL,
                     rationale="Yescarta and Breyanzi cover large B-cell lymphoma relapsing within 12 months "
                               "of first-line chemoimmunotherapy (here 11.6 months after the last R-CHOP "
                               "dose); the Breyanzi transplant-ineligible route needs documented HSCT "
                               "ineligibility.")


@vignette(2, "lbcl-relapse-12-4-months-after-first-line")
def v02():
    c, d, last = lbcl_chart("vig02", "male", "1963-02-11", "2025-07-01", "2025-07-14", "2026-11-08")
    routine(c, weight=79)
    return c, expect("possibly_eligible", [], ["liso-cel:LBCL-2L-TI"], ["hct_ineligible"],
                     "refer_now", RR_TRIG_LBCL,
                     rationale="A relapse 12.4 months after first-line therapy is outside the 12-month "
                               "second-line window of Yescarta and Breyanzi, leaving only the Breyanzi "
                               "route for patients not eligible for HSCT, which is not documented.")


@vignette(3, "lbcl-primary-refractory")
def v03():
    c = Chart("vig03")
    c.patient("female", "1968-04-02")
    d = c.dx(DLBCL, "DLBCL, GCB type, stage IV", "2026-02-16")
    last = c.regimen("R-CHOP", "2026-03-02", 6, 21, d)
    c.status(add_days(last, 35), "worsened", d, "End-of-treatment PET Deauville 5, new lesions")
    routine(c, weight=61)
    return c, expect("eligible", ["axi-cel:LBCL-2L", "liso-cel:LBCL-2L"], ["liso-cel:LBCL-2L-TI"],
                     ["hct_ineligible"], "refer_now", ["lbcl_refractory"],
                     rationale="Disease refractory to first-line chemoimmunotherapy is on the second-line "
                               "Yescarta and Breyanzi labels.")


@vignette(4, "lbcl-third-line-after-autologous-transplant")
def v04():
    c = Chart("vig04")
    c.patient("male", "1974-09-30")
    d = c.dx(DLBCL, "Diffuse large B-cell lymphoma", "2024-01-03")
    last = c.regimen("R-CHOP", "2024-01-15", 6, 21, d)
    c.status(add_days(last, 40), "improved", d)
    c.status("2025-03-10", "worsened", d, "Relapse, biopsy-proven")
    c.regimen("R-ICE", "2025-03-24", 2, 21, d)
    c.procedure(ASCT, "Autologous stem cell transplant (BEAM conditioning)", "2025-05-20")
    c.status("2025-08-18", "improved", d)
    c.status("2026-10-01", "worsened", d, "Second relapse after autologous transplant")
    routine(c, weight=90)
    return c, expect("eligible", ["axi-cel:LBCL-3L", "liso-cel:LBCL-3L", "tisa-cel:LBCL-3L"], [], [],
                     "refer_now", RR_TRIG_LBCL,
                     rationale="Relapse after two lines of systemic therapy (R-CHOP; R-ICE with autologous "
                               "transplant) meets the third-line large B-cell lymphoma labels.")


@vignette(5, "lbcl-outside-salvage-line-agents-not-recorded")
def v05():
    c = Chart("vig05")
    c.patient("male", "1955-03-11")
    d = c.dx(DLBCL, "Diffuse large B-cell lymphoma", "2023-02-06")
    last = c.regimen("R-CHOP", "2023-02-20", 6, 21, d)
    c.status(add_days(last, 40), "improved", d)
    c.status("2024-09-03", "worsened", d, "Relapse; patient moved care to Riverside")
    c.statement("2024-09-20", "2025-01-15", text="Salvage chemotherapy at Riverside Regional Cancer "
                "Center; agents not recorded", source=OUTSIDE, reason=d)
    c.status("2025-03-17", "improved", d, "PET after outside salvage: complete metabolic response")
    c.status("2026-10-20", "worsened", d, "Second relapse")
    routine(c, weight=77)
    return c, expect("eligible", ["axi-cel:LBCL-3L", "liso-cel:LBCL-3L", "tisa-cel:LBCL-3L"], [], [],
                     "refer_now", RR_TRIG_LBCL,
                     rationale="The outside salvage regimen, agents unrecorded, still counts as a line, so "
                               "the record shows at least two prior lines and meets the third-line labels.")


def ti_chart(pid, gender, birth, reason_text, lvef=None):
    c = Chart(pid)
    c.patient(gender, birth)
    d = c.dx(DLBCL, "Diffuse large B-cell lymphoma", "2024-10-07")
    last = c.regimen("R-mini-CHOP", "2024-10-21", 6, 21, d)
    c.status(add_days(last, 45), "improved", d)
    c.status("2026-08-25", "worsened", d, "Relapse 18 months after R-mini-CHOP")
    c.procedure(ASCT, "Autologous stem cell transplant", status="not-done", reason_text=reason_text)
    routine(c, weight=58, ecog=2)
    if lvef:
        c.lab("lvef", lvef, LABS)
    return c


@vignette(6, "lbcl-transplant-contraindicated-procedure")
def v06():
    c = ti_chart("vig06", "female", "1948-05-14",
                 "Procedure contraindicated: ischemic cardiomyopathy (LVEF 35%) and age", lvef=35)
    return c, expect("eligible", ["liso-cel:LBCL-2L-TI"], [], [], "refer_now", RR_TRIG_LBCL, ["lvef"],
                     rationale="Relapse after first-line chemoimmunotherapy in a patient documented as not "
                               "eligible for HSCT because of comorbidity and age meets the Breyanzi "
                               "transplant-ineligible second-line label; LVEF 35% is for the center to review.")


@vignette(7, "lbcl-transplant-declined-by-patient")
def v07():
    c = ti_chart("vig07", "female", "1950-01-22", "Patient declined autologous stem cell transplant",
                 lvef=58)
    return c, expect("possibly_eligible", [], ["liso-cel:LBCL-2L-TI"], ["hct_ineligible"], "refer_now",
                     RR_TRIG_LBCL, notes=["hct_refusal"],
                     rationale="A documented refusal of transplant is not the label's 'not eligible for "
                               "HSCT due to comorbidities or age', so the Breyanzi route stays open "
                               "pending the clinician's assessment.")


@vignette(8, "lbcl-not-a-transplant-candidate-condition")
def v08():
    c = Chart("vig08")
    c.patient("male", "1945-07-02")
    d = c.dx(DLBCL, "Diffuse large B-cell lymphoma", "2024-09-02")
    last = c.regimen("R-mini-CHOP", "2024-09-16", 6, 21, d)
    c.status(add_days(last, 45), "improved", d)
    c.status("2026-09-29", "worsened", d, "Relapse")
    c.dx([], "Not a transplant candidate (age 81, frailty, CKD stage 3)", "2026-10-05",
         kind="condition")
    c.panel(LABS)
    c.karnofsky(60, LABS)
    c.weight(70, LABS)
    return c, expect("eligible", ["liso-cel:LBCL-2L-TI"], [], [], "refer_now", RR_TRIG_LBCL,
                     rationale="Relapse after first-line chemoimmunotherapy with documented transplant "
                               "ineligibility (age and frailty) meets the Breyanzi transplant-ineligible "
                               "second-line label.")


def pcnsl_chart(pid, first, relapse):
    c = Chart(pid)
    c.patient("female", "1965-03-09")
    d = c.dx([("icd10cm", "C83.390", "Primary central nervous system lymphoma"),
              ("snomed", "276836002", "Primary cerebral lymphoma (disorder)")],
             "Primary CNS lymphoma, diffuse large B-cell type", add_days(first, -14))
    last = c.regimen("R-MTX-AraC", first, 4, 21, d)
    c.status(add_days(last, 40), "improved", d, "MRI: complete response")
    c.status(relapse, "worsened", d, "MRI: relapse in the left frontal lobe")
    c.panel(add_days(relapse, 5))
    c.ecog(1, add_days(relapse, 5))
    c.weight(66, add_days(relapse, 5))
    return c


@vignette(9, "pcnsl-relapse-after-yescarta-label-change")
def v09():
    c = pcnsl_chart("vig09", "2025-09-01", "2026-08-10")
    return c, expect("eligible", ["axi-cel:LBCL-2L"], [], [], "refer_now",
                     ["lbcl_relapse", "pcnsl_diagnosis"], ["cns_involvement"], ["first_line_regimen"],
                     rationale="Since 2026-02-06 the Yescarta label no longer excludes primary CNS "
                               "lymphoma, so a relapse within 12 months of first-line therapy is on label; "
                               "Breyanzi and Kymriah still exclude PCNSL.")


@vignette(10, "pcnsl-relapse-before-yescarta-label-change")
def v10():
    c = pcnsl_chart("vig10", "2025-04-07", "2025-12-15")
    return c, expect("not_eligible", [], [], [], "refer_now", ["lbcl_relapse", "pcnsl_diagnosis"],
                     as_of="2026-01-20",
                     rationale="Before 2026-02-06 every large B-cell lymphoma label excluded primary CNS "
                               "lymphoma, but its first relapse is still a consultation trigger.")


@vignette(11, "hgbl-double-hit-at-diagnosis-responding")
def v11():
    c = Chart("vig11")
    c.patient("male", "1971-12-19")
    d = c.dx([("snomed", "1172704005", "High grade B-cell lymphoma with MYC and BCL2 and/or BCL6 "
               "rearrangements (disorder)"), ("icd10cm", "C83.38", "Diffuse large B-cell lymphoma, "
                                              "lymph nodes of multiple sites")],
             "High-grade B-cell lymphoma with MYC and BCL2 rearrangements (double hit)", "2026-09-01")
    c.regimen("DA-R-EPOCH", "2026-09-08", 4, 21, d)
    c.status("2026-10-15", "improved", d, "Interim PET after 2 cycles: Deauville 2")
    routine(c, weight=88)
    return c, expect("not_eligible", [], [], [], "early_consult", ["hgbcl_diagnosis"],
                     rationale="A double-hit lymphoma responding to first-line therapy is on no CAR T "
                               "label yet, but it is a consult-at-diagnosis trigger.")


@vignette(12, "lbcl-relapse-patient-deceased")
def v12():
    c, d, last = lbcl_chart("vig12", "male", "1958-08-08", "2025-07-28", "2025-08-11", "2026-10-20")
    c.res[0]["deceasedDateTime"] = "2026-11-30"
    return c, expect("not_eligible", [], [], [], "none", [],
                     rationale="A documented death ends screening.")


@vignette(13, "transformed-follicular-lymphoma-early-relapse")
def v13():
    c = Chart("vig13")
    c.patient("female", "1967-10-05")
    c.dx(FL2, "Follicular lymphoma grade 2 (watch and wait)", "2019-04-15", clinical="remission")
    d = c.dx([("icd10cm", "C83.38", "Diffuse large B-cell lymphoma, lymph nodes of multiple sites")],
             "Diffuse large B-cell lymphoma transformed from follicular lymphoma", "2025-10-27")
    last = c.regimen("R-CHOP", "2025-11-10", 6, 21, d)
    c.status(add_days(last, 45), "improved", d)
    c.status("2026-10-26", "worsened", d, "Relapse")
    routine(c, weight=64)
    return c, expect("eligible", ["axi-cel:LBCL-2L", "liso-cel:LBCL-2L"], ["liso-cel:LBCL-2L-TI"],
                     ["hct_ineligible"], "refer_now", ["lbcl_relapse", "lbcl_transformed"],
                     rationale="DLBCL arising from follicular lymphoma relapsing within 12 months of "
                               "first-line chemoimmunotherapy is on the second-line Yescarta and Breyanzi "
                               "labels.")


@vignette(14, "lbcl-first-line-statement-without-end-date")
def v14():
    c = Chart("vig14")
    c.patient("male", "1957-01-30")
    d = c.dx(DLBCL, "Diffuse large B-cell lymphoma", "2025-05-19")
    for drug in ["rituximab", "cyclophosphamide", "doxorubicin", "vincristine", "prednisone"]:
        c.statement("2025-06-02", None, drug=drug, source=OUTSIDE, reason=d,
                    note="R-CHOP given at Riverside; number of cycles and end date not stated")
    c.status("2025-11-10", "improved", d, "PET at our site: complete metabolic response")
    c.status("2026-10-13", "worsened", d, "Relapse")
    routine(c, weight=81)
    return c, expect("possibly_eligible", [], ["axi-cel:LBCL-2L", "liso-cel:LBCL-2L", "liso-cel:LBCL-2L-TI"],
                     ["hct_ineligible", "primary_refractory", "relapse_months_after_1l_end"], "refer_now",
                     RR_TRIG_LBCL, to_request=["end date"],
                     rationale="Without the end date of the outside R-CHOP neither the 12-month window of "
                               "the second-line labels nor refractoriness can be checked, so both stay open.")


def third_line_chart(pid, gender, birth, dx_day, cycle1, relapse1, salvage1, response2, relapse2,
                     relapse2_note=None):
    """DLBCL: R-CHOP x6, complete response, relapse, R-ICE x3, response, second relapse."""
    c = Chart(pid)
    c.patient(gender, birth)
    d = c.dx(DLBCL, "Diffuse large B-cell lymphoma", dx_day)
    last = c.regimen("R-CHOP", cycle1, 6, 21, d)
    c.status(add_days(last, 40), "improved", d)
    c.status(relapse1, "worsened", d)
    c.regimen("R-ICE", salvage1, 3, 21, d)
    c.status(response2, "improved", d)
    c.status(relapse2, "worsened", d, relapse2_note)
    return c, d


THIRD_LINE = ["axi-cel:LBCL-3L", "liso-cel:LBCL-3L", "tisa-cel:LBCL-3L"]


@vignette(15, "lbcl-third-line-cockcroft-gault-59")
def v15():
    c, d = third_line_chart("vig15", "male", "1956-06-01", "2023-03-01", "2023-03-13", "2024-11-04",
                            "2024-11-18", "2025-02-24", "2026-10-06")
    routine(c, weight=80, creatinine=1.30)
    return c, expect("eligible", THIRD_LINE, [], [], "refer_now", RR_TRIG_LBCL, ["renal"],
                     rationale="Third-line large B-cell lymphoma is on label; creatinine clearance 59.8 "
                               "mL/min (Cockcroft-Gault) is below the ZUMA-1 and JULIET value of 60, a "
                               "review flag only.")


@vignette(16, "lbcl-third-line-cockcroft-gault-61")
def v16():
    c, d = third_line_chart("vig16", "male", "1956-06-01", "2023-03-01", "2023-03-13", "2024-11-04",
                            "2024-11-18", "2025-02-24", "2026-10-06")
    routine(c, weight=80, creatinine=1.28)
    return c, expect("eligible", THIRD_LINE, [], [], "refer_now", RR_TRIG_LBCL,
                     rationale="Third-line large B-cell lymphoma is on label; creatinine clearance 60.8 "
                               "mL/min is at the ZUMA-1 threshold, so no renal flag.")


@vignette(17, "lbcl-third-line-creatinine-umol-no-weight")
def v17():
    c, d = third_line_chart("vig17", "male", "1958-02-14", "2023-05-01", "2023-05-15", "2025-01-06",
                            "2025-01-20", "2025-04-28", "2026-10-19")
    c.panel(LABS, creatinine=None, creatinine_si=212, hemoglobin=(118, "g/L"),
            platelets=(165, "10*9/L"), bilirubin=(10, "umol/L"))
    c.ecog(1, LABS)
    return c, expect("eligible", THIRD_LINE, [], [], "refer_now", RR_TRIG_LBCL, ["renal"],
                     rationale="Third-line large B-cell lymphoma is on label; creatinine 212 umol/L "
                               "(2.4 mg/dL) without a body weight gives a CKD-EPI 2021 eGFR of about 29, "
                               "flagged for renal review.")


@vignette(18, "lbcl-third-line-karnofsky-60")
def v18():
    c, d = third_line_chart("vig18", "female", "1960-11-11", "2023-05-01", "2023-05-15", "2025-01-06",
                            "2025-01-20", "2025-04-28", "2026-10-19")
    c.panel(LABS)
    c.karnofsky(60, LABS)
    c.weight(68, LABS)
    return c, expect("eligible", THIRD_LINE, [], [], "refer_now", RR_TRIG_LBCL, ["ecog"],
                     rationale="Third-line large B-cell lymphoma is on label; Karnofsky 60 (ECOG 2) is "
                               "above the ZUMA-1 and JULIET ECOG 0-1 entry criterion, a review flag only.")


@vignette(19, "lbcl-third-line-secondary-cns")
def v19():
    c, d = third_line_chart("vig19", "male", "1966-04-04", "2023-05-01", "2023-05-15", "2025-01-06",
                            "2025-01-20", "2025-04-28", "2026-10-19", "Relapse with leptomeningeal involvement")
    c.dx([("icd10cm", "C79.32", "Secondary malignant neoplasm of cerebral meninges")],
         "Secondary CNS involvement by DLBCL (leptomeningeal)", "2026-10-19", kind="secondary")
    routine(c, weight=75)
    return c, expect("eligible", THIRD_LINE, [], [], "refer_now", RR_TRIG_LBCL, ["cns_involvement"],
                     rationale="Secondary CNS involvement is not a label exclusion; third-line large B-cell "
                               "lymphoma is on label and the CNS disease is flagged for the center.")


@vignette(20, "lbcl-outside-first-line-coded-plus-our-salvage")
def v20():
    c = Chart("vig20")
    c.patient("female", "1962-07-19")
    d = c.dx(DLBCL, "Diffuse large B-cell lymphoma", "2022-09-12")
    for drug in ["rituximab", "cyclophosphamide", "doxorubicin", "vincristine", "prednisone"]:
        c.statement("2022-09-26", "2023-01-09", drug=drug, source=OUTSIDE, reason=d)
    c.status("2023-02-20", "improved", d)
    c.status("2025-06-02", "worsened", d)
    c.regimen("R-ICE", "2025-06-16", 3, 21, d)
    c.status("2025-09-15", "improved", d)
    c.status("2026-10-27", "worsened", d)
    routine(c, weight=70)
    return c, expect("eligible", ["axi-cel:LBCL-3L", "liso-cel:LBCL-3L", "tisa-cel:LBCL-3L"], [], [],
                     "refer_now", RR_TRIG_LBCL,
                     rationale="Outside R-CHOP recorded with coded agents and our R-ICE make two prior "
                               "lines, meeting the third-line large B-cell lymphoma labels.")


# ---------------------------------------------------------------- follicular / marginal zone

def fl_chart(pid, birth, dx_day, br_start, prog):
    c = Chart(pid)
    c.patient("female", birth)
    d = c.dx(FL2, "Follicular lymphoma grade 2, stage III", dx_day)
    last = c.regimen("BR", br_start, 6, 28, d)
    c.status(add_days(last, 50), "improved", d)
    c.status(prog, "worsened", d, "Progression, biopsy: follicular lymphoma grade 2 (no transformation)")
    routine(c, weight=66)
    return c, d


@vignette(21, "fl-third-line")
def v21():
    c = Chart("vig21")
    c.patient("male", "1959-02-27")
    d = c.dx(FL2, "Follicular lymphoma grade 2", "2020-03-09")
    last = c.regimen("BR", "2020-04-06", 6, 28, d)
    c.status(add_days(last, 50), "improved", d)
    c.status("2023-05-15", "worsened", d)
    c.order("lenalidomide", "2023-06-01", "2024-05-15", status="completed", reason=d)
    for day_ in ["2023-06-01", "2023-06-08", "2023-06-15", "2023-06-22", "2023-07-01", "2023-08-01",
                 "2023-09-01", "2023-10-01", "2023-11-01", "2023-12-01"]:
        c.admin("rituximab", day_, d)
    c.status("2023-09-18", "improved", d)
    c.status("2026-10-05", "worsened", d)
    routine(c, weight=85)
    return c, expect("eligible", ["axi-cel:FL-3L", "liso-cel:FL-3L", "tisa-cel:FL-3L"], [], [],
                     "refer_now", ["fl_multiple_relapse", "fl_relapse"],
                     rationale="Relapsed follicular lymphoma after two lines of systemic therapy (BR, then "
                               "lenalidomide-rituximab) meets the three follicular lymphoma labels.")


@vignette(22, "fl-pod24-after-one-line")
def v22():
    c, d = fl_chart("vig22", "1977-08-21", "2024-11-18", "2024-12-02", "2026-08-18")
    return c, expect("not_eligible", [], [], [], "refer_now", ["fl_pod24", "fl_relapse"],
                     rationale="Follicular lymphoma labels need two prior lines; progression 20 months "
                               "after starting first-line BR (POD24) is a refer-now trigger.")


@vignette(23, "fl-late-relapse-after-one-line")
def v23():
    c, d = fl_chart("vig23", "1970-01-13", "2023-06-05", "2023-06-19", "2026-09-21")
    return c, expect("not_eligible", [], [], [], "early_consult", ["fl_relapse"],
                     rationale="One prior line is short of the follicular lymphoma labels; a relapse 39 "
                               "months after first-line therapy (not POD24) calls for an early consult.")


@vignette(24, "fl-outside-second-line-data-absent")
def v24():
    c = Chart("vig24")
    c.patient("female", "1958-05-30")
    d = c.dx(FL2, "Follicular lymphoma grade 1-2", "2020-09-14")
    last = c.regimen("BR", "2020-10-05", 6, 28, d)
    c.status(add_days(last, 50), "improved", d)
    c.status("2023-03-13", "worsened", d)
    c.statement("2023-04-03", "2023-10-30", text="Second-line therapy at outside cancer center",
                source=OUTSIDE, reason=d, absent=True)
    c.status("2024-01-15", "improved", d)
    c.status("2026-09-22", "worsened", d)
    routine(c, weight=59)
    return c, expect("eligible", ["axi-cel:FL-3L", "liso-cel:FL-3L", "tisa-cel:FL-3L"], [], [],
                     "refer_now", ["fl_multiple_relapse", "fl_relapse"], ["renal"],
                     rationale="An outside second line with the agent marked not recorded still counts, "
                               "giving two prior lines for the follicular lymphoma labels; creatinine "
                               "clearance 55.7 mL/min is below the ZUMA/JULIET value of 60, a review flag.")


@vignette(25, "mzl-third-line")
def v25():
    c = Chart("vig25")
    c.patient("female", "1956-12-03")
    d = c.dx([("snomed", "726721002", "Nodal marginal zone B-cell lymphoma (disorder)"),
              ("icd10cm", "C83.08", "Small cell B-cell lymphoma, lymph nodes of multiple sites")],
             "Nodal marginal zone lymphoma", "2021-01-11")
    last = c.regimen("BR", "2021-02-01", 6, 28, d)
    c.status(add_days(last, 50), "improved", d)
    c.status("2023-04-10", "worsened", d)
    c.order("lenalidomide", "2023-05-01", "2024-04-15", status="completed", reason=d)
    for day_ in ["2023-05-01", "2023-05-08", "2023-05-15", "2023-05-22", "2023-06-01", "2023-07-01"]:
        c.admin("rituximab", day_, d)
    c.status("2023-09-11", "improved", d)
    c.status("2026-10-12", "worsened", d)
    routine(c, weight=62)
    return c, expect("eligible", ["liso-cel:MZL"], [], [], "early_consult", ["mzl_relapse"],
                     rationale="Relapsed marginal zone lymphoma after two prior lines of systemic therapy "
                               "meets the Breyanzi MZL label (approved 2025-12-04).")


@vignette(26, "mzl-third-line-before-approval")
def v26():
    c = Chart("vig26")
    c.patient("female", "1956-12-03")
    d = c.dx([("snomed", "726721002", "Nodal marginal zone B-cell lymphoma (disorder)")],
             "Nodal marginal zone lymphoma", "2021-01-11")
    last = c.regimen("BR", "2021-02-01", 6, 28, d)
    c.status(add_days(last, 50), "improved", d)
    c.status("2023-04-10", "worsened", d)
    c.order("lenalidomide", "2023-05-01", "2024-04-15", status="completed", reason=d)
    for day_ in ["2023-05-01", "2023-05-08", "2023-05-15", "2023-05-22"]:
        c.admin("rituximab", day_, d)
    c.status("2023-09-11", "improved", d)
    c.status("2025-10-06", "worsened", d)
    return c, expect("not_eligible", [], [], [], "early_consult", ["mzl_relapse"], as_of="2025-11-15",
                     rationale="Before the Breyanzi MZL approval (2025-12-04) no CAR T label covered "
                               "marginal zone lymphoma.")


@vignette(27, "b-cell-lymphoma-histology-unspecified")
def v27():
    c = Chart("vig27")
    c.patient("male", "1960-03-03")
    d = c.dx([("icd10cm", "C85.18", "Unspecified B-cell lymphoma, lymph nodes of multiple sites")],
             "B-cell lymphoma, unspecified (outside pathology)", "2023-01-09")
    c.regimen("R-CHOP", "2023-01-23", 6, 21, d)
    c.status("2023-06-26", "improved", d)
    c.status("2024-12-02", "worsened", d)
    c.regimen("R-ICE", "2024-12-16", 3, 21, d)
    c.status("2025-03-24", "improved", d)
    c.status("2026-10-05", "worsened", d)
    routine(c, weight=83)
    return c, expect("possibly_eligible", [],
                     ["axi-cel:FL-3L", "axi-cel:LBCL-3L", "brexu-cel:MCL", "liso-cel:FL-3L",
                      "liso-cel:LBCL-3L", "liso-cel:MZL", "tisa-cel:FL-3L", "tisa-cel:LBCL-3L"],
                     ["histology"], "none", [], notes=["no_prior_btki"], to_request=["histology"],
                     rationale="A B-cell lymphoma code without histology cannot be matched to a label, "
                               "so every B-cell lymphoma indication the lines fit stays possible until the "
                               "pathology report names the histology.")


# ---------------------------------------------------------------- mantle cell lymphoma

@vignette(28, "mcl-progression-on-ibrutinib")
def v28():
    c = Chart("vig28")
    c.patient("male", "1960-08-17")
    d = c.dx(MCL, "Mantle cell lymphoma, stage IV", "2022-05-16")
    last = c.regimen("BR", "2022-06-06", 6, 28, d)
    c.status(add_days(last, 50), "improved", d)
    c.status("2024-02-12", "worsened", d)
    c.order("ibrutinib", "2024-02-26", status="active", supply_days=30, reason=d)
    c.status("2024-06-17", "improved", d)
    c.status("2026-10-19", "worsened", d, "Progression on ibrutinib")
    routine(c, weight=78)
    return c, expect("eligible", ["brexu-cel:MCL", "liso-cel:MCL"], [], [], "refer_now",
                     ["mcl_btki_failure", "mcl_relapse"],
                     rationale="Relapsed mantle cell lymphoma is on the Tecartus label, and after two lines "
                               "including a BTK inhibitor also on the Breyanzi MCL label.")


@vignette(29, "mcl-first-relapse-no-btk-inhibitor")
def v29():
    c = Chart("vig29")
    c.patient("male", "1954-02-09")
    d = c.dx(MCL, "Mantle cell lymphoma", "2023-09-11")
    last = c.regimen("BR", "2023-10-02", 6, 28, d)
    c.status(add_days(last, 50), "improved", d)
    c.status("2026-09-14", "worsened", d)
    routine(c, weight=74)
    return c, expect("eligible", ["brexu-cel:MCL"], [], [], "refer_now", ["mcl_diagnosis", "mcl_relapse"],
                     notes=["no_prior_btki"],
                     rationale="The US Tecartus label covers relapsed mantle cell lymphoma without a line "
                               "count or BTK inhibitor rule; Breyanzi needs two lines including a BTK "
                               "inhibitor.")


@vignette(30, "mcl-at-diagnosis-responding")
def v30():
    c = Chart("vig30")
    c.patient("female", "1963-06-25")
    d = c.dx(MCL, "Mantle cell lymphoma, blastoid variant", "2026-09-21")
    c.regimen("BR", "2026-10-12", 2, 28, d)
    c.status("2026-11-23", "improved", d, "Interim CT: partial response")
    routine(c, weight=60)
    return c, expect("not_eligible", [], [], [], "early_consult", ["mcl_diagnosis"],
                     rationale="Mantle cell lymphoma responding to first-line therapy is on no label, but "
                               "NMDP advises a transplant and cellular-therapy consult at diagnosis.")


# ---------------------------------------------------------------- CLL / SLL

@vignette(31, "cll-btki-then-outside-line-agent-not-recorded")
def v31():
    c = Chart("vig31")
    c.patient("male", "1956-04-18")
    d = c.dx(CLL, "Chronic lymphocytic leukemia, Rai stage III", "2019-02-11")
    c.order("ibrutinib", "2021-03-01", "2024-04-30", status="completed", reason=d)
    c.status("2021-09-13", "improved", d)
    c.status("2024-04-15", "worsened", d, "Progression on ibrutinib")
    c.statement("2024-05-20", "2025-06-30", text="Second-line therapy at an outside cancer center, "
                "agent not recorded", source=OUTSIDE, reason=d)
    c.status("2025-08-04", "improved", d)
    c.status("2026-09-28", "worsened", d)
    routine(c, weight=80)
    return c, expect("possibly_eligible", [], ["liso-cel:CLL"], ["prior_classes"], "early_consult",
                     ["cll_relapse"], to_request=["agent"],
                     rationale="Two prior lines and a BTK inhibitor are documented; whether the outside "
                               "line was a BCL-2 inhibitor (required by the Breyanzi CLL label) is unknown, "
                               "not absent.")


@vignette(32, "cll-btki-and-venetoclax-exposed-low-platelets")
def v32():
    c = Chart("vig32")
    c.patient("female", "1952-10-30")
    d = c.dx(CLL, "Chronic lymphocytic leukemia", "2017-05-22")
    c.order("ibrutinib", "2020-01-06", "2023-03-31", status="completed", reason=d)
    c.status("2020-07-06", "improved", d)
    c.status("2023-03-20", "worsened", d, "Progression on ibrutinib")
    c.order("venetoclax", "2023-04-17", "2024-04-15", status="completed", reason=d)
    for day_ in ["2023-04-10", "2023-04-11", "2023-04-17", "2023-05-15", "2023-06-12", "2023-07-10",
                 "2023-08-07", "2023-09-04"]:
        c.admin("obinutuzumab", day_, d)
    c.status("2024-06-03", "improved", d)
    c.status("2026-10-12", "worsened", d)
    routine(c, weight=64, platelets=(28, "10*9/L"))
    return c, expect("eligible", ["liso-cel:CLL"], [], [], "refer_now", ["cll_double_class", "cll_relapse"],
                     ["platelets"],
                     rationale="Relapsed CLL after two lines including a BTK inhibitor and a BCL-2 inhibitor "
                               "meets the Breyanzi CLL label; platelets 28 x10^9/L are for the center to "
                               "review.")


@vignette(33, "cll-richter-transformation")
def v33():
    c = Chart("vig33")
    c.patient("male", "1958-01-08")
    c.dx(CLL, "Chronic lymphocytic leukemia", "2018-03-05")
    c.order("ibrutinib", "2022-01-10", status="active", supply_days=30)
    c.dx(DLBCL, "Richter transformation: diffuse large B-cell lymphoma (clonally related)",
         "2026-10-20")
    routine(c, weight=86)
    return c, expect("possibly_eligible", [], ["axi-cel:LBCL-2L", "liso-cel:LBCL-2L", "liso-cel:LBCL-2L-TI"],
                     ["hct_ineligible", "primary_refractory", "refractory", "relapse_months_after_1l_end",
                      "relapsed"], "refer_now", ["cll_richter", "lbcl_transformed"], notes=["first_line_regimen"],
                     rationale="Richter transformation after one line (ibrutinib) leaves the second-line "
                               "large B-cell lymphoma labels open until the disease status on the BTK "
                               "inhibitor is documented, with a note that line 1 was not "
                               "chemoimmunotherapy; Richter itself is a refer-now trigger (ASTCT CLL 2025).")


# ---------------------------------------------------------------- myeloma

def mm_first_line(c, d, vrd_start, asct_day, maint_start, maint_status="active", maint_end=None,
                  maint_kind="order"):
    c.regimen("VRd", vrd_start, 4, 21, d, skip=("lenalidomide",))
    c.order("lenalidomide", vrd_start, add_days(vrd_start, 83), status="completed", reason=d)
    c.procedure(ASCT, "Autologous stem cell transplant (melphalan 200)", asct_day)
    if maint_kind == "order":
        c.order("lenalidomide", maint_start, maint_end, status=maint_status, supply_days=28, reason=d)
    else:
        c.statement(maint_start, maint_end, status=maint_status, drug="lenalidomide", reason=d)


@vignette(34, "mm-lenalidomide-refractory-first-relapse")
def v34():
    c = Chart("vig34")
    c.patient("male", "1964-05-05")
    d = c.dx(MM, "IgG kappa multiple myeloma, R-ISS II", "2023-01-02")
    mm_first_line(c, d, "2023-01-16", "2023-06-05", "2023-08-01")
    c.status("2023-10-16", "improved", d, "VGPR")
    c.status("2026-06-22", "worsened", d, "Progression on lenalidomide maintenance (rising M-protein)")
    routine(c, weight=88)
    return c, expect("eligible", ["cilta-cel:MM-2L"], [], [], "refer_now",
                     ["mm_len_refractory", "mm_relapse"],
                     rationale="One prior line with a PI and an IMiD and progression on lenalidomide "
                               "maintenance meets the Carvykti label; Abecma needs two lines.")


@vignette(35, "mm-lenalidomide-stopped-without-end-date")
def v35():
    c = Chart("vig35")
    c.patient("female", "1960-09-14")
    d = c.dx(MM, "Multiple myeloma", "2022-01-10")
    mm_first_line(c, d, "2022-01-24", "2022-06-13", "2022-08-08", maint_status="stopped",
                  maint_kind="statement")
    c.status("2022-11-14", "improved", d)
    c.status("2026-08-10", "worsened", d)
    routine(c, weight=70)
    return c, expect("possibly_eligible", [], ["cilta-cel:MM-2L"], ["lenalidomide_refractory"],
                     "early_consult", ["mm_relapse"], to_request=["lenalidomide"],
                     rationale="Lenalidomide was stopped on an unrecorded date, so whether the relapse came "
                               "on or within 60 days of it (Carvykti's lenalidomide-refractory rule) is "
                               "unknown, not false.")


@vignette(36, "mm-outside-induction-regimen-not-recorded")
def v36():
    c = Chart("vig36")
    c.patient("male", "1968-02-22")
    d = c.dx(MM, "Multiple myeloma (diagnosed at St. Mary's Hospital)", "2021-03-01")
    c.statement("2021-03-15", None, text="Induction chemotherapy at St. Mary's Hospital, regimen not "
                "recorded", source="Outside records: St. Mary's Hospital discharge summary", reason=d)
    c.status("2024-05-20", "worsened", d, "Progression; care transferred to our clinic")
    last = c.regimen("DPd", "2024-06-03", 12, 28, d, skip=("pomalidomide",))
    c.order("pomalidomide", "2024-06-03", status="active", supply_days=21, reason=d)
    c.status("2024-10-07", "improved", d)
    c.status("2026-09-14", "worsened", d, "Progression on DPd")
    routine(c, weight=92)
    return c, expect("possibly_eligible", [], ["cilta-cel:MM-2L", "ide-cel:MM-3L"],
                     ["lenalidomide_refractory", "prior_classes"], "early_consult", ["mm_relapse"],
                     to_request=["regimen"],
                     rationale="The unrecorded outside induction counts as a line with unknown agents, so "
                               "proteasome-inhibitor and lenalidomide exposure are unknown rather than "
                               "absent for Abecma and Carvykti.")


@vignette(37, "mm-functional-high-risk-early-relapse")
def v37():
    c = Chart("vig37")
    c.patient("male", "1966-11-28")
    d = c.dx(MM, "Multiple myeloma", "2025-04-21")
    mm_first_line(c, d, "2025-05-05", "2025-09-22", "2025-11-10")
    c.status("2026-01-19", "improved", d)
    c.status("2026-08-24", "worsened", d, "Progression 11 months after ASCT")
    routine(c, weight=77)
    return c, expect("eligible", ["cilta-cel:MM-2L"], [], [], "refer_now",
                     ["mm_fhr_asct", "mm_fhr_first_line", "mm_len_refractory", "mm_relapse"],
                     rationale="Progression on lenalidomide maintenance after one line meets the Carvykti "
                               "label, and relapse within 12 months of ASCT is functional high risk.")


@vignette(38, "mm-high-risk-cytogenetics-at-diagnosis")
def v38():
    c = Chart("vig38")
    c.patient("female", "1969-03-17")
    d = c.dx(MM, "Multiple myeloma, newly diagnosed", "2026-08-03")
    c.finding("Plasma cell FISH panel (CD138-selected bone marrow)",
              "del(17p) detected in 42% of plasma cells", "2026-08-05")
    c.regimen("D-VRd", "2026-08-10", 4, 21, d, skip=("lenalidomide",))
    c.order("lenalidomide", "2026-08-10", status="active", supply_days=21, reason=d)
    c.status("2026-10-19", "improved", d, "Partial response after 3 cycles")
    routine(c, weight=69)
    return c, expect("not_eligible", [], [], [], "early_consult", ["mm_high_risk"],
                     rationale="Newly diagnosed myeloma responding to induction is on no CAR T label, but "
                               "del(17p) is high risk by IMS/IMWG 2025: consult early.")


@vignette(39, "mm-t414-without-1q-result")
def v39():
    c = Chart("vig39")
    c.patient("female", "1969-03-17")
    d = c.dx(MM, "Multiple myeloma, newly diagnosed", "2026-08-03")
    c.finding("Plasma cell FISH panel (CD138-selected bone marrow)", "t(4;14) detected", "2026-08-05")
    c.regimen("D-VRd", "2026-08-10", 4, 21, d, skip=("lenalidomide",))
    c.order("lenalidomide", "2026-08-10", status="active", supply_days=21, reason=d)
    c.status("2026-10-19", "improved", d)
    routine(c, weight=69)
    return c, expect("not_eligible", [], [], [], "none", [],
                     rationale="t(4;14) is high risk by IMS/IMWG 2025 only with 1q gain or del(1p32), "
                               "which the report does not give, so no high-risk trigger fires.")


@vignette(40, "mm-triple-class-second-relapse-creatinine-2-4")
def v40():
    c = Chart("vig40")
    c.patient("male", "1958-06-09")
    d = c.dx(MM, "IgA lambda multiple myeloma", "2021-02-01")
    mm_first_line(c, d, "2021-02-15", "2021-07-06", "2021-09-01", maint_status="completed",
                  maint_end="2023-06-30")
    c.status("2021-11-15", "improved", d)
    c.status("2023-06-19", "worsened", d, "Progression on lenalidomide maintenance")
    c.regimen("DKd", "2023-07-10", 18, 28, d)
    c.status("2023-11-06", "improved", d)
    c.status("2026-09-21", "worsened", d)
    c.panel(LABS, creatinine=2.4)
    c.ecog(1, LABS)
    return c, expect("eligible", ["cilta-cel:MM-2L", "ide-cel:MM-3L"], [], [], "refer_now",
                     ["mm_len_refractory", "mm_relapse"], ["renal"],
                     rationale="Two prior lines with an IMiD, a PI and an anti-CD38 antibody and "
                               "lenalidomide-refractory disease meet the Abecma and Carvykti labels; "
                               "creatinine 2.4 mg/dL without a weight gives a CKD-EPI 2021 eGFR near 29.")


@vignette(41, "mm-four-lines-pending-anito-cel")
def v41():
    c = Chart("vig41")
    c.patient("female", "1957-12-12")
    d = c.dx(MM, "Multiple myeloma", "2019-06-03")
    mm_first_line(c, d, "2019-06-17", "2019-11-04", "2020-01-06", maint_status="completed",
                  maint_end="2021-09-30")
    c.status("2020-03-02", "improved", d)
    c.status("2021-09-20", "worsened", d)
    c.regimen("DKd", "2021-10-11", 20, 28, d)
    c.status("2022-02-07", "improved", d)
    c.status("2023-09-11", "worsened", d)
    c.regimen("KPd", "2023-10-02", 12, 28, d, skip=("pomalidomide",))
    c.order("pomalidomide", "2023-10-02", "2024-09-01", status="completed", reason=d)
    c.status("2024-01-08", "improved", d)
    c.status("2026-10-05", "worsened", d)
    routine(c, weight=63)
    return c, expect("eligible", ["cilta-cel:MM-2L", "ide-cel:MM-3L"], [], [], "refer_now",
                     ["mm_len_refractory", "mm_relapse"], args=["--include-pending"],
                     pending={"eligible": ["anito-cel:MM-4L"], "possibly_eligible": []},
                     rationale="Three prior lines with IMiD, PI and anti-CD38 exposure meet Abecma and "
                               "Carvykti now, and the expected anito-cel gates, which stay pending until "
                               "its label is verified.")


@vignette(42, "mm-lenalidomide-stopped-58-days-before-progression")
def v42():
    c = Chart("vig42")
    c.patient("male", "1962-04-27")
    d = c.dx(MM, "Multiple myeloma", "2022-03-07")
    mm_first_line(c, d, "2022-03-21", "2022-08-08", "2022-10-03", maint_status="completed",
                  maint_end="2025-12-31")
    c.status("2023-01-09", "improved", d)
    c.status("2026-02-27", "worsened", d, "Progression 58 days after stopping lenalidomide")
    routine(c, weight=84)
    return c, expect("eligible", ["cilta-cel:MM-2L"], [], [], "refer_now", ["mm_len_refractory", "mm_relapse"],
                     rationale="Progression 58 days after the last lenalidomide is within the 60-day "
                               "refractoriness window Carvykti's label relies on (CARTITUDE-4).")


@vignette(43, "mm-lenalidomide-stopped-67-days-before-progression")
def v43():
    c = Chart("vig43")
    c.patient("male", "1962-04-27")
    d = c.dx(MM, "Multiple myeloma", "2022-03-07")
    mm_first_line(c, d, "2022-03-21", "2022-08-08", "2022-10-03", maint_status="completed",
                  maint_end="2025-12-31")
    c.status("2023-01-09", "improved", d)
    c.status("2026-03-08", "worsened", d, "Progression 67 days after stopping lenalidomide")
    routine(c, weight=84)
    return c, expect("not_eligible", [], [], [], "early_consult", ["mm_relapse"],
                     rationale="Progression 67 days after the last lenalidomide is outside the 60-day "
                               "refractoriness window, and one line is short of Abecma's two.")


@vignette(44, "smoldering-myeloma")
def v44():
    c = Chart("vig44")
    c.patient("female", "1961-07-07")
    c.dx([("snomed", "413587002", "Smoldering myeloma (disorder)")], "Smoldering multiple myeloma",
         "2025-03-03")
    routine(c, weight=72)
    return c, expect("not_eligible", [], [], [], "none", [],
                     rationale="Smoldering myeloma is not relapsed or refractory multiple myeloma and is on "
                               "no label.")


# ---------------------------------------------------------------- B-ALL

def all_chart(pid, gender, birth, codings, text, relapses):
    c = Chart(pid)
    c.patient(gender, birth)
    d = c.dx(codings, text, "2023-02-06")
    c.regimen("hyper-CVAD", "2023-02-13", 4, 21, d)
    c.status("2023-05-15", "remission", d, "CR, MRD negative")
    for i, r in enumerate(relapses):
        c.status(r, "worsened", d, "Marrow relapse")
        if i + 1 < len(relapses):
            c.admin("blinatumomab", add_days(r, 14), d)
            c.admin("blinatumomab", add_days(r, 56), d)
            c.status(add_days(r, 90), "remission", d, "CR2")
    routine(c, weight=75)
    return c


@vignette(45, "adult-b-all-first-relapse")
def v45():
    c = all_chart("vig45", "male", "1992-05-05", BALL, "B-cell acute lymphoblastic leukemia",
                  ["2026-10-12"])
    return c, expect("eligible", ["brexu-cel:ALL", "obe-cel:ALL"], [], [], "refer_now", ["ball_relapse"],
                     rationale="Relapsed B-cell precursor ALL in an adult meets the Tecartus and Aucatzyl "
                               "labels; Kymriah is for patients up to 25 years.")


@vignette(46, "all-lineage-not-specified")
def v46():
    c = all_chart("vig46", "female", "1985-09-19",
                  [("icd10cm", "C91.00", "Acute lymphoblastic leukemia not having achieved remission")],
                  "Acute lymphoblastic leukemia", ["2026-10-12"])
    return c, expect("possibly_eligible", [], ["brexu-cel:ALL", "obe-cel:ALL"], ["lineage"], "refer_now",
                     ["ball_relapse"], to_request=["lineage"],
                     rationale="ICD-10-CM C91.0x does not say B or T lineage, and the B-ALL labels need B "
                               "lineage: possibly eligible until immunophenotyping is on record; the relapse "
                               "itself calls for referral now.")


@vignette(47, "t-all-relapse")
def v47():
    c = all_chart("vig47", "male", "1990-01-30",
                  [("icdo3", "9837/3", "Precursor T-cell lymphoblastic leukemia"),
                   ("icd10cm", "C91.00", "Acute lymphoblastic leukemia not having achieved remission")],
                  "T-lymphoblastic leukemia", ["2026-10-12"])
    return c, expect("not_eligible", [], [], [], "none", [],
                     rationale="T-cell ALL is not covered by any CAR T label.")


@vignette(48, "b-all-second-relapse-age-25")
def v48():
    c = all_chart("vig48", "male", "2001-06-01", BALL, "B-cell acute lymphoblastic leukemia",
                  ["2024-05-13", "2026-10-12"])
    return c, expect("eligible", ["brexu-cel:ALL", "obe-cel:ALL", "tisa-cel:ALL"], [], [], "refer_now",
                     ["ball_relapse"],
                     rationale="A 25-year-old in second relapse meets Kymriah's 'up to 25 years, second or "
                               "later relapse' as well as the adult Tecartus and Aucatzyl labels.")


@vignette(49, "b-all-second-relapse-age-26")
def v49():
    c = all_chart("vig49", "male", "2000-11-20", BALL, "B-cell acute lymphoblastic leukemia",
                  ["2024-05-13", "2026-10-12"])
    return c, expect("eligible", ["brexu-cel:ALL", "obe-cel:ALL"], [], [], "refer_now", ["ball_relapse"],
                     rationale="At 26 the patient is past Kymriah's age limit of 25 years; the adult "
                               "Tecartus and Aucatzyl labels still apply.")


# ---------------------------------------------------------------- no covered disease

@vignette(50, "hodgkin-lymphoma-relapse")
def v50():
    c = Chart("vig50")
    c.patient("female", "1990-10-10")
    d = c.dx([], "Classical Hodgkin lymphoma, nodular sclerosis", "2024-01-08")
    c.status("2026-09-01", "worsened", d)
    routine(c, weight=60)
    return c, expect("not_eligible", [], [], [], "none", [],
                     rationale="Hodgkin lymphoma is not covered by any CAR T label.")


@vignette(51, "colon-cancer-only")
def v51():
    c = Chart("vig51")
    c.patient("male", "1950-05-05")
    c.dx([], "Malignant neoplasm of sigmoid colon", "2025-02-10")
    routine(c, weight=80)
    return c, expect("not_eligible", [], [], [], "none", [],
                     rationale="No hematologic malignancy is documented.")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(os.path.join(here, "expect"), exist_ok=True)
    for num, slug, fn in V:
        chart, exp = fn()
        name = "%02d-%s" % (num, slug)
        exp = dict({"vignette": name, "patient": chart.pid}, **exp)
        write_json(os.path.join(here, name + ".json"), chart.bundle())
        write_json(os.path.join(here, "expect", name + ".json"), exp)
    print("%d vignettes written to %s" % (len(V), here))


if __name__ == "__main__":
    main()
