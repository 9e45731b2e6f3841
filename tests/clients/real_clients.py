"""Drives a running pivot-fhir server with two real FHIR clients, the SMART Python client
(fhirclient, R4 models) and fhirpy, and checks every answer against fhirclient's R4 models
(strict: an unknown element, a wrong type or a missing required element is an error).

    python real_clients.py http://127.0.0.1:8080/fhir TOKEN
"""

import sys
import uuid

import fhirpy
from fhirclient import client
from fhirclient.models.bundle import Bundle
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.fhirabstractbase import FHIRValidationError
from fhirclient.models.humanname import HumanName
from fhirclient.models.identifier import Identifier
from fhirclient.models.operationoutcome import OperationOutcome
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException

base, token = sys.argv[1], sys.argv[2]
run = uuid.uuid4().hex[:8]
family = f"Rivera{run}"


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def as_r4(resource_json):
    """Parses JSON with fhirclient's R4 models (strict) and returns the model."""
    from fhirclient.models import fhirelementfactory

    kind = resource_json["resourceType"]
    return fhirelementfactory.FHIRElementFactory.instantiate(kind, resource_json)


# --- fhirclient: the SMART client ---------------------------------------------------------
smart = client.FHIRClient(settings={"app_id": "pivot-tests", "api_base": base})
smart.server.session.headers["Authorization"] = f"Bearer {token}"

statement = CapabilityStatement.read_from("metadata", smart.server)
check(statement.fhirVersion == "4.0.1", statement.fhirVersion)
check(any(r.type == "Patient" for r in statement.rest[0].resource), "Patient in metadata")

patient = Patient()
patient.name = [HumanName({"family": family, "given": ["Ana"]})]
patient.identifier = [Identifier({"system": "https://medicaid.example.gov/id", "value": f"MCD-{run}"})]
patient.birthDate = None
created = patient.create(smart.server)
check(created is not None and created["resourceType"] == "Patient", created)
patient_id = created["id"]

read = Patient.read(patient_id, smart.server)
check(read.name[0].family == family, read.as_json())
check(read.meta.versionId == "1", read.meta.as_json())

read.active = True
updated = read.update(smart.server)
check(updated["meta"]["versionId"] == "2", updated)

found = Patient.where(struct={"family": family}).perform_resources(smart.server)
check([p.id for p in found] == [patient_id], [p.id for p in found])
by_identifier = Patient.where(
    struct={"identifier": f"https://medicaid.example.gov/id|MCD-{run}"}
).perform(smart.server)
check(by_identifier.total in (None, 1) and len(by_identifier.entry) == 1, by_identifier.as_json())

# an error comes back as an OperationOutcome the models accept
response = smart.server.session.get(f"{base}/Patient?birthdate=not-a-date")
check(response.status_code == 400, response.status_code)
outcome = OperationOutcome(response.json())
check(outcome.issue[0].severity == "error", outcome.as_json())

# --- fhirpy -------------------------------------------------------------------------------
fhir = fhirpy.SyncFHIRClient(base, authorization=f"Bearer {token}")

organization = fhir.resource("Organization", name=f"Food Bank {run}", active=True)
organization.save()
check(organization.id, "organization id")

observations = []
for n in range(7):
    observation = fhir.resource(
        "Observation",
        status="final",
        category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}]}],
        code={"coding": [{"system": "http://loinc.org", "code": "88122-7"}]},
        subject={"reference": f"Patient/{patient_id}"},
        effectiveDateTime=f"2026-0{1 + n % 9}-15",
        valueCodeableConcept={"coding": [{"system": "http://loinc.org", "code": "LA28397-0"}]},
    )
    observation.save()
    observations.append(observation.id)

# paging: fetch_all follows the `next` links
everything = fhir.resources("Observation").search(subject=f"Patient/{patient_id}").limit(2).fetch_all()
check(sorted(o.id for o in everything) == sorted(observations), [o.id for o in everything])
first = fhir.resources("Observation").search(subject=f"Patient/{patient_id}").sort("-date").first()
check(first["effectiveDateTime"] == "2026-07-15", first["effectiveDateTime"])
count = fhir.resources("Observation").search(subject=f"Patient/{patient_id}").count()
check(count == 7, count)
with_patient = (
    fhir.resources("Observation")
    .search(subject=f"Patient/{patient_id}")
    .include("Observation", "subject")
    .limit(100)
    .fetch_raw()
)
as_r4(dict(with_patient))
check(any(e["search"]["mode"] == "include" for e in with_patient["entry"]), "an included entry")

# read through a reference, update, patch, delete
reference = fhir.reference("Patient", patient_id).to_resource()
check(reference["name"][0]["family"] == family, reference["name"])
reference["gender"] = "female"
reference.save()
check(reference["meta"]["versionId"] == "3", reference["meta"])
reference.patch(birthDate="1990-02-03")
fetched = fhir.reference("Patient", patient_id).to_resource()
check(fetched["birthDate"] == "1990-02-03" and fetched["gender"] == "female", fetched.serialize())

# a transaction through the raw execute call
bundle = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [
        {
            "fullUrl": "urn:uuid:8e1f1c5e-0d5a-4a4b-9d4b-5b1c2a3d4e5f",
            "resource": {"resourceType": "Patient", "name": [{"family": family, "given": ["Luis"]}]},
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "resource": {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "subject": {"reference": "urn:uuid:8e1f1c5e-0d5a-4a4b-9d4b-5b1c2a3d4e5f"},
                "performer": [{"reference": f"Organization/{organization.id}"}],
            },
            "request": {"method": "POST", "url": "ServiceRequest"},
        },
    ],
}
answer = fhir.execute("", method="post", data=bundle)
check(answer["type"] == "transaction-response", answer["type"])
Bundle(answer)
new_patient = answer["entry"][0]["response"]["location"].split("/_history")[0].rsplit("/", 1)[1]
referral = fhir.resources("ServiceRequest").search(subject=f"Patient/{new_patient}").first()
check(referral["performer"][0]["reference"] == f"Organization/{organization.id}", referral.serialize())

# history and the response models
history = fhir.execute(f"Patient/{patient_id}/_history", method="get")
check(len(history["entry"]) == 4, len(history["entry"]))
as_r4(history)

fhir.reference("Patient", new_patient).to_resource().delete()
try:
    Patient.read(new_patient, smart.server)
    raise AssertionError("a deleted patient was read")
except FHIRNotFoundException:
    pass
except Exception as error:  # fhirclient raises HTTPError subclasses by status
    check("410" in str(error) or "404" in str(error), str(error))

# every resource kind touched parses strictly as R4
for kind in ["Patient", "Observation", "Organization", "ServiceRequest"]:
    raw = fhir.execute(kind, method="get", params={"_count": "50"})
    try:
        as_r4(raw)
    except FHIRValidationError as error:
        raise AssertionError(f"{kind} search Bundle is not valid R4: {error}")

print("real clients: all checks passed")
