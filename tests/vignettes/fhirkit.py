"""Small FHIR R4 builder for the clinician-style vignettes (US Core / mCODE shapes).

Only a development aid: `build_vignettes.py` uses it to (re)write the Bundles and expectation
files in this folder. The tests read the JSON files, never this code. Every code used here is
one of ../../../shared/reference/codes.md (the codes reference); anything else is free text.
"""
import datetime
import json
import uuid

SYS = {
    "icd10cm": "http://hl7.org/fhir/sid/icd-10-cm",
    "snomed": "http://snomed.info/sct",
    "icdo3": "http://terminology.hl7.org/CodeSystem/icd-o-3",
    "loinc": "http://loinc.org",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "cpt": "http://www.ama-assn.org/go/cpt",
    "icd10pcs": "http://www.cms.gov/Medicare/Coding/ICD10",
    "ucum": "http://unitsofmeasure.org",
}
PROFILE = {
    "patient": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient",
                "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-patient"],
    "primary": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition"],
    "secondary": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-secondary-cancer-condition"],
    "condition": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-condition-problems-health-concerns"],
    "medadmin": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-related-medication-administration"],
    "medreq": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-related-medication-request"],
    "lab": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab"],
    "ecog": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-ecog-performance-status"],
    "karnofsky": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-karnofsky-performance-status"],
    "status": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-disease-status"],
    "weight": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-body-weight"],
    "procedure": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-procedure"],
}

# RxNorm ingredient codes (codes.md §3)
RX = {
    "rituximab": "121191", "obinutuzumab": "974779", "cyclophosphamide": "3002",
    "doxorubicin": "3639", "vincristine": "11202", "prednisone": "8640", "etoposide": "4179",
    "bendamustine": "134547", "ibrutinib": "1442981", "acalabrutinib": "1986808",
    "zanubrutinib": "2262435", "pirtobrutinib": "2629338", "venetoclax": "1747556",
    "lenalidomide": "342369", "pomalidomide": "1369713", "thalidomide": "10432",
    "bortezomib": "358258", "carfilzomib": "1302966", "ixazomib": "1723735",
    "daratumumab": "1721947", "isatuximab": "2282018", "dexamethasone": "3264",
    "melphalan": "6718", "cytarabine": "3041", "cisplatin": "2555", "gemcitabine": "12574",
    "oxaliplatin": "32592", "ifosfamide": "5657", "carboplatin": "40048",
    "fludarabine": "24698", "methotrexate": "6851", "blinatumomab": "1597258",
    "inotuzumab ozogamicin": "1942950",
}
REGIMENS = {
    "R-CHOP": ["rituximab", "cyclophosphamide", "doxorubicin", "vincristine", "prednisone"],
    "R-mini-CHOP": ["rituximab", "cyclophosphamide", "doxorubicin", "vincristine", "prednisone"],
    "DA-R-EPOCH": ["rituximab", "etoposide", "prednisone", "vincristine", "cyclophosphamide",
                   "doxorubicin"],
    "R-ICE": ["rituximab", "ifosfamide", "carboplatin", "etoposide"],
    "BR": ["bendamustine", "rituximab"],
    "R-MTX-AraC": ["rituximab", "methotrexate", "cytarabine"],
    "VRd": ["bortezomib", "lenalidomide", "dexamethasone"],
    "D-VRd": ["daratumumab", "bortezomib", "lenalidomide", "dexamethasone"],
    "DKd": ["daratumumab", "carfilzomib", "dexamethasone"],
    "DPd": ["daratumumab", "pomalidomide", "dexamethasone"],
    "KPd": ["carfilzomib", "pomalidomide", "dexamethasone"],
    "Ven-O": ["venetoclax", "obinutuzumab"],
    "FCR": ["fludarabine", "cyclophosphamide", "rituximab"],
    "hyper-CVAD": ["cyclophosphamide", "vincristine", "doxorubicin", "dexamethasone"],
    "R2": ["lenalidomide", "rituximab"],
}
# LOINC lab codes (codes.md §2.1, §2.2): key -> (code, display, default unit)
LAB = {
    "anc": ("751-8", "Neutrophils [#/volume] in Blood by Automated count", "10*3/uL"),
    "alc": ("731-0", "Lymphocytes [#/volume] in Blood by Automated count", "10*3/uL"),
    "platelets": ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL"),
    "hemoglobin": ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL"),
    "creatinine": ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL"),
    "creatinine_si": ("14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "umol/L"),
    "egfr": ("98979-8", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, "
             "Plasma or Blood by Creatinine-based formula (CKD-EPI 2021)", "mL/min/{1.73_m2}"),
    "bilirubin": ("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL"),
    "ast": ("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L"),
    "alt": ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L"),
    "lvef": ("18043-0", "Left ventricular Ejection fraction by US", "%"),
    "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%"),
}
STATUS = {  # mCODE CancerDiseaseStatus values (codes.md §2.4)
    "improved": ("268910001", "Patient's condition improved (finding)"),
    "stable": ("359746009", "Patient's condition stable (finding)"),
    "worsened": ("271299001", "Patient's condition worsened (finding)"),
    "remission": ("550991000124107", "Malignant neoplasm in full remission (disorder)"),
}
OURS = "Community Hospital Oncology Clinic"
NS = uuid.UUID("6c1b7a52-8a0e-4c61-9f55-3a4c2b0d9e11")


def day(s):
    return datetime.date.fromisoformat(s)


def add_days(s, n):
    return (day(s) + datetime.timedelta(days=n)).isoformat()


def cycles(start, n, every):
    return [add_days(start, i * every) for i in range(n)]


def coding(sys, code, display=None):
    c = {"system": SYS[sys], "code": code}
    if display:
        c["display"] = display
    return c


class Chart:
    """One patient's record: Patient plus resources, written as one collection Bundle."""

    def __init__(self, pid):
        self.pid = pid
        self.res = []
        self.n = 0

    def _id(self, kind):
        self.n += 1
        return "%s-%s%d" % (self.pid, kind, self.n)

    def _add(self, r):
        self.res.append(r)
        return r

    def subj(self):
        return {"reference": "Patient/" + self.pid}

    def patient(self, gender, birth, zip_code="53703", deceased=None):
        r = {"resourceType": "Patient", "id": self.pid, "meta": {"profile": PROFILE["patient"]},
             "identifier": [{"system": "urn:example:community-hospital:mrn", "value": "MRN-" + self.pid}],
             "gender": gender, "birthDate": birth,
             "address": [{"use": "home", "state": "WI", "postalCode": zip_code}]}
        if deceased:
            r["deceasedDateTime"] = deceased
        return self._add(r)

    def dx(self, codings, text, onset, clinical="active", recorded=None, kind="primary", note=None):
        """codings: [(system, code, display)]; clinical: active|recurrence|relapse|remission|..."""
        r = {"resourceType": "Condition", "id": self._id("dx"), "meta": {"profile": PROFILE[kind]},
             "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                            "code": clinical}]},
             "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                                "code": "confirmed"}]},
             "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                       "code": "problem-list-item"}]}],
             "code": {"coding": [coding(*c) for c in codings], "text": text},
             "subject": self.subj(), "onsetDateTime": onset,
             "recordedDate": recorded or onset}
        if not codings:
            del r["code"]["coding"]
        if note:
            r["note"] = [{"text": note}]
        return self._add(r)

    def _med(self, drug):
        return {"coding": [coding("rxnorm", RX[drug], drug)], "text": drug}

    def admin(self, drug, when, reason=None):
        r = {"resourceType": "MedicationAdministration", "id": self._id("ma"),
             "meta": {"profile": PROFILE["medadmin"]}, "status": "completed",
             "medicationCodeableConcept": self._med(drug), "subject": self.subj(),
             "effectiveDateTime": when}
        if reason:
            r["reasonReference"] = [{"reference": "Condition/" + reason["id"]}]
        return self._add(r)

    def regimen(self, name, start, n, every, reason=None, skip=()):
        """Day-1 administrations of every drug of a regimen for n cycles."""
        days = cycles(start, n, every)
        for d in days:
            for drug in REGIMENS[name]:
                if drug not in skip:
                    self.admin(drug, d, reason)
        return days[-1]

    def order(self, drug, start, end=None, status="active", supply_days=None, reason=None):
        r = {"resourceType": "MedicationRequest", "id": self._id("mr"),
             "meta": {"profile": PROFILE["medreq"]}, "status": status, "intent": "order",
             "medicationCodeableConcept": self._med(drug), "subject": self.subj(),
             "authoredOn": start}
        rep = {"boundsPeriod": {"start": start}}
        if end:
            rep["boundsPeriod"]["end"] = end
        r["dosageInstruction"] = [{"text": "as directed", "timing": {"repeat": rep}}]
        if supply_days:
            r["dispenseRequest"] = {"expectedSupplyDuration": {"value": supply_days, "unit": "days",
                                                               "system": SYS["ucum"], "code": "d"}}
        if reason:
            r["reasonReference"] = [{"reference": "Condition/" + reason["id"]}]
        return self._add(r)

    def statement(self, start=None, end=None, status="completed", drug=None, text=None,
                  source=None, reason=None, note=None, absent=False, asserted=None):
        """MedicationStatement; text only (no coding) when drug is None."""
        r = {"resourceType": "MedicationStatement", "id": self._id("ms"), "status": status,
             "subject": self.subj()}
        if drug:
            r["medicationCodeableConcept"] = self._med(drug)
        else:
            cc = {"text": text}
            if absent:
                cc["extension"] = [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                                    "valueCode": "unknown"}]
            r["medicationCodeableConcept"] = cc
        if start and end:
            r["effectivePeriod"] = {"start": start, "end": end}
        elif start:
            r["effectivePeriod"] = {"start": start}
        r["dateAsserted"] = asserted or start
        if source:
            r["informationSource"] = {"display": source}
        if reason:
            r["reasonReference"] = [{"reference": "Condition/" + reason["id"]}]
        if note:
            r["note"] = [{"text": note}]
        return self._add(r)

    def status(self, when, value, focus=None, note=None):
        code, disp = STATUS[value]
        r = {"resourceType": "Observation", "id": self._id("ds"), "meta": {"profile": PROFILE["status"]},
             "status": "final",
             "code": {"coding": [coding("loinc", "97509-4", "Cancer Disease Progression")]},
             "subject": self.subj(), "effectiveDateTime": when,
             "valueCodeableConcept": {"coding": [coding("snomed", code, disp)]}}
        if focus:
            r["focus"] = [{"reference": "Condition/" + focus["id"]}]
        if note:
            r["note"] = [{"text": note}]
        return self._add(r)

    def lab(self, key, value, when, unit=None):
        code, disp, dunit = LAB[key]
        u = unit or dunit
        r = {"resourceType": "Observation", "id": self._id("lab"), "meta": {"profile": PROFILE["lab"]},
             "status": "final",
             "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                       "code": "laboratory"}]}],
             "code": {"coding": [coding("loinc", code, disp)]}, "subject": self.subj(),
             "effectiveDateTime": when,
             "valueQuantity": {"value": value, "unit": u, "system": SYS["ucum"], "code": u}}
        return self._add(r)

    def panel(self, when, **over):
        """A routine pre-visit panel: CBC with differential, chemistry, LFTs."""
        vals = {"anc": 3.4, "alc": 1.1, "platelets": 214, "hemoglobin": 12.6, "creatinine": 0.9,
                "bilirubin": 0.6, "ast": 24, "alt": 21}
        vals.update(over)
        for k, v in vals.items():
            if v is None:
                continue
            if isinstance(v, tuple):
                self.lab(k, v[0], when, v[1])
            else:
                self.lab(k, v, when)

    def ecog(self, score, when):
        return self._add({"resourceType": "Observation", "id": self._id("ecog"),
                          "meta": {"profile": PROFILE["ecog"]}, "status": "final",
                          "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                                    "code": "survey"}]}],
                          "code": {"coding": [coding("loinc", "89247-1", "ECOG Performance Status score")]},
                          "subject": self.subj(), "effectiveDateTime": when, "valueInteger": score})

    def karnofsky(self, score, when):
        return self._add({"resourceType": "Observation", "id": self._id("kps"),
                          "meta": {"profile": PROFILE["karnofsky"]}, "status": "final",
                          "code": {"coding": [coding("loinc", "89243-0", "Karnofsky Performance Status score")]},
                          "subject": self.subj(), "effectiveDateTime": when, "valueInteger": score})

    def weight(self, value, when, unit="kg"):
        return self._add({"resourceType": "Observation", "id": self._id("wt"),
                          "meta": {"profile": PROFILE["weight"]}, "status": "final",
                          "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                                    "code": "vital-signs"}]}],
                          "code": {"coding": [coding("loinc", "29463-7", "Body weight")]},
                          "subject": self.subj(), "effectiveDateTime": when,
                          "valueQuantity": {"value": value, "unit": unit, "system": SYS["ucum"], "code": unit}})

    def finding(self, code_text, value_text, when):
        """A free-text report observation (e.g. a plasma-cell FISH panel); no code invented."""
        return self._add({"resourceType": "Observation", "id": self._id("rep"), "status": "final",
                          "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                                    "code": "laboratory"}]}],
                          "code": {"text": code_text}, "subject": self.subj(),
                          "effectiveDateTime": when, "valueString": value_text})

    def procedure(self, codings, text, when=None, status="completed", reason_text=None, note=None):
        r = {"resourceType": "Procedure", "id": self._id("pr"), "meta": {"profile": PROFILE["procedure"]},
             "status": status, "code": {"coding": [coding(*c) for c in codings], "text": text},
             "subject": self.subj()}
        if when:
            r["performedDateTime"] = when
        if reason_text:
            r["statusReason"] = {"text": reason_text}
        if note:
            r["note"] = [{"text": note}]
        return self._add(r)

    def bundle(self):
        entries = []
        for r in self.res:
            full = "urn:uuid:" + str(uuid.uuid5(NS, r["resourceType"] + "/" + r["id"]))
            entries.append({"fullUrl": full, "resource": r})
        return {"resourceType": "Bundle", "id": self.pid, "type": "collection", "entry": entries}


def write_json(path, obj):
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")
