#!/usr/bin/env python3
"""$evaluate-measure over a large population.

Loads the seven Pivot Entities (profiles/Organization-pivot-region-*.json), PATIENTS recipients
(regions 1-7, mixed eligibility categories, 10% high-risk, 2% dual eligible), an SDOH screening
Observation for 60% of them (dated over the last 18 months), a BMI for half of them and
PATIENTS / 5 referral Tasks (statuses mixed, closed ones with an executionPeriod) through
transaction Bundles, then times summary evaluations (median and worst of RUNS runs).

usage: bench/measures.py BASE_URL TOKEN [PATIENTS] [--parts=LIST] [--from=N]
--parts: any of organizations, patients, screens, bmi, tasks, evaluate (default: all); loaders of
different parts may run at the same time. --from: the first patient to load (to resume).
"""

import datetime
import glob
import json
import os
import random
import statistics
import sys
import time
import urllib.request

base, token = sys.argv[1].rstrip("/"), sys.argv[2]
PATIENTS = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3].isdigit() else 100_000
TASKS = PATIENTS // 5
RUNS = 3
PIVOT = "http://example.org/fhir/pivot"
CATEGORIES = ["primary-care"] * 6 + ["maternity", "plan-first", "foster-care"]
TODAY = datetime.date.today()
random.seed(11)
PARTS = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--parts=")),
             ["organizations", "patients", "screens", "bmi", "tasks", "evaluate"])
FIRST = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--from=")), 0)


def call(method, path, body=None):
    request = urllib.request.Request(
        f"{base}/{path}", method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
    with urllib.request.urlopen(request, timeout=1200) as response:
        return json.loads(response.read() or b"null")


def transaction(entries):
    call("POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": entries})


def put(resource):
    return {"resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}


def day(days_ago):
    return (TODAY - datetime.timedelta(days=days_ago)).isoformat()


def patient(n):
    category = "dual-eligible" if n % 50 == 0 else random.choice(CATEGORIES)
    extensions = [
        {"url": f"{PIVOT}/StructureDefinition/pivot-region",
         "valueCoding": {"system": f"{PIVOT}/CodeSystem/pivot-region", "code": str(n % 7 + 1)}},
        {"url": f"{PIVOT}/StructureDefinition/pivot-eligibility-category",
         "valueCoding": {"system": f"{PIVOT}/CodeSystem/pivot-eligibility", "code": category}}]
    if n % 10 == 3:
        extensions.append({"url": f"{PIVOT}/StructureDefinition/pivot-high-risk", "valueBoolean": True})
    born = day(random.randint(365, 80 * 365))
    return put({"resourceType": "Patient", "id": f"p{n}", "extension": extensions,
                "name": [{"family": f"F{n}"}], "gender": random.choice(["female", "male"]),
                "birthDate": born})


def screen(n):
    return put({"resourceType": "Observation", "id": f"s{n}", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                          "code": "survey"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "96777-8"}]},
                "subject": {"reference": f"Patient/p{n}"},
                "effectiveDateTime": day(random.randint(0, 540)), "valueString": "done"})


def bmi(n):
    return put({"resourceType": "Observation", "id": f"b{n}", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                          "code": "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "39156-5"}]},
                "subject": {"reference": f"Patient/p{n}"}, "effectiveDateTime": day(random.randint(0, 700)),
                "valueQuantity": {"value": 24.1, "unit": "kg/m2", "system": "http://unitsofmeasure.org",
                                  "code": "kg/m2"}})


def task(n):
    authored = random.randint(0, 360)
    status = random.choice(["requested", "accepted", "in-progress", "completed", "completed",
                            "rejected", "cancelled"])
    resource = {"resourceType": "Task", "id": f"t{n}", "status": status, "intent": "order",
                "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
                "for": {"reference": f"Patient/p{random.randrange(PATIENTS)}"}, "authoredOn": day(authored),
                "requester": {"reference": "Organization/pivot-region-3"},
                "owner": {"reference": f"Organization/cbo{n % 50}"}}
    if status in ("completed", "rejected", "cancelled"):
        closed = max(authored - random.randint(1, 60), 0)
        resource["executionPeriod"] = {"end": day(closed) + "T12:00:00Z"}
        if status != "completed":
            resource["statusReason"] = {"text": "reason"}
        else:
            resource["output"] = [{"type": {"coding": [{
                "system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes",
                "code": "resulting-activity"}]}, "valueCodeableConcept": {"text": "Service delivered"}}]
    return put(resource)


def batches(make, count, size=500, start=0):
    for first in range(start, count, size):
        transaction([make(n) for n in range(first, min(first + size, count))])


started = time.time()
if "organizations" in PARTS:
    here = os.path.dirname(os.path.abspath(__file__))
    organizations = [json.load(open(f)) for f in
                     sorted(glob.glob(os.path.join(here, "..", "profiles", "Organization-pivot-region-*.json")))]
    transaction([put(o) for o in organizations])
if "patients" in PARTS:
    batches(patient, PATIENTS, start=FIRST)
    print(f"loaded {PATIENTS - FIRST} patients in {time.time() - started:.0f} s", flush=True)
if "screens" in PARTS:
    batches(lambda n: screen(n * 5 // 3), PATIENTS * 3 // 5)
    print(f"loaded {PATIENTS * 3 // 5} screens in {time.time() - started:.0f} s", flush=True)
if "bmi" in PARTS:
    batches(lambda n: bmi(n * 2), PATIENTS // 2)
if "tasks" in PARTS:
    batches(task, TASKS)
    print(f"loaded {TASKS} tasks in {time.time() - started:.0f} s", flush=True)
if "evaluate" not in PARTS:
    sys.exit(0)

start, end = day(365), day(0)
evaluations = [
    ("pivot-sdoh-screening", ""),
    ("pivot-sdoh-screening", "&subject=Group/pivot-attribution-pivot-region-3"),
    ("pivot-referral-loop-closure", ""),
    ("pivot-referral-days-to-closure", ""),
    ("pivot-bmi-recorded", ""),
]
print(f"summary reports, period {start} to {end}: median / worst of {RUNS} runs")
for measure, extra in evaluations:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        report = call("GET", f"Measure/{measure}/$evaluate-measure?periodStart={start}&periodEnd={end}"
                             f"&reportType=summary{extra}")
        times.append(time.perf_counter() - t0)
    group = report["group"][0]
    counts = {p["code"]["coding"][0]["code"]: p["count"] for p in group["population"]}
    print(f"{statistics.median(times):6.2f} / {max(times):6.2f} s   {measure}{extra}   {counts}", flush=True)
