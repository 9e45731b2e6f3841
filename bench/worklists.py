#!/usr/bin/env python3
"""Referral worklists on a database with many referrals.

Loads PATIENTS patients (regions 1-7) and TASKS referral Tasks (50 CBOs as owners, 200 referring
PractitionerRoles, statuses mixed, authored over the last 120 days) through transaction Bundles,
then times each worklist search (median and worst of RUNS runs).

usage: bench/worklists.py BASE_URL TOKEN [TASKS [--loaded]]
(--loaded: the data is already there; only time the searches)
"""

import json
import random
import statistics
import sys
import time
import urllib.request

base, token = sys.argv[1].rstrip("/"), sys.argv[2]
TASKS = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
PATIENTS = max(TASKS // 10, 1)
RUNS = 20
REGION = "http://example.org/fhir/pivot/StructureDefinition/pivot-region"
STATUSES = ["requested"] * 2 + ["accepted", "in-progress", "on-hold"] + ["completed"] * 4 + [
    "rejected", "cancelled", "failed"]
random.seed(7)


def call(method, path, body=None):
    request = urllib.request.Request(
        f"{base}/{path}", method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read() or b"null")


def transaction(entries):
    call("POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": entries})


def put(resource):
    return {"resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}}


def task(n):
    status = random.choice(STATUSES)
    authored = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                             time.gmtime(time.time() - random.uniform(0, 120) * 86400))
    resource = {"resourceType": "Task", "id": f"t{n}", "status": status, "intent": "order",
                "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                     "code": "fulfill"}]},
                "focus": {"reference": f"ServiceRequest/sr{n}"},
                "for": {"reference": f"Patient/p{n % PATIENTS}"}, "authoredOn": authored,
                "requester": {"reference": f"PractitionerRole/dr{n % 200}"},
                "owner": {"reference": f"Organization/cbo{n % 50}"}}
    if status == "completed":
        resource["output"] = [{"type": {"coding": [{
            "system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes",
            "code": "resulting-activity"}]}, "valueCodeableConcept": {"text": "Service delivered"}}]
    if status in ("rejected", "cancelled", "failed", "on-hold"):
        resource["statusReason"] = {"text": "reason"}
    return put(resource)


started = time.time()
LOAD = "--loaded" not in sys.argv
for first in range(0, PATIENTS if LOAD else 0, 500):
    transaction([put({"resourceType": "Patient", "id": f"p{n}", "extension": [{
        "url": REGION, "valueCodeableConcept": {"coding": [{
            "system": "http://example.org/fhir/pivot/CodeSystem/pivot-region",
            "code": str(n % 7 + 1)}]}}]}) for n in range(first, min(first + 500, PATIENTS))])
for first in range(0, TASKS if LOAD else 0, 500):
    transaction([task(n) for n in range(first, min(first + 500, TASKS))])
if LOAD:
    print(f"loaded {PATIENTS} patients and {TASKS} referral Tasks in {time.time() - started:.0f} s")

queries = [
    "Task?owner=Organization/cbo7&status=requested",
    "Task?owner=Organization/cbo7&status=requested&_include=Task:focus",
    "Task?requester=PractitionerRole/dr42&status:not=completed",
    "Task?requester=PractitionerRole/dr42&status=requested,accepted,in-progress,on-hold",
    "Task?_query=overdue-referrals&patient.region=3",
    "Task?_query=overdue-referrals&owner=Organization/cbo7",
]
print("first page (20): median / worst of", RUNS, "runs; then the count with _total=accurate")
for query in queries:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        call("GET", query)
        times.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    total = call("GET", query + "&_total=accurate&_count=0").get("total")
    count_ms = (time.perf_counter() - t0) * 1000
    print(f"{statistics.median(times):7.1f} / {max(times):7.1f} ms   {total:>6} matches "
          f"(counted in {count_ms:6.0f} ms)   {query}")
