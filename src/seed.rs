//! `pivot-fhir seed --demo`: a small, realistic program to try the server with. Seven regions
//! and their Pivot Entities, three CBOs (food bank, housing agency, transportation), practices
//! and practitioners, care coordinators, a few hundred recipients in the four eligibility
//! categories, SDOH screenings, care teams and care plans, and referrals (ServiceRequest and
//! Task) in every referral Task status. Everything is written through the service layer, so it
//! passes the server's own validation (profiles claimed in `meta.profile`) or the seed fails.
//! Ids are fixed (`demo-…`); a database that already holds the demo program is left as it is
//! (its referrals may have moved on, and a Task cannot move back).

use serde_json::{Map, Value, json};

use crate::error::FhirError;
use crate::store::Store;

const BASE: &str = "http://example.org/fhir/pivot";
const TEMPORARY: &str =
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes";
const BUSINESS: &str = "http://example.org/fhir/pivot/CodeSystem/pivot-task-business-status";

/// Recipients created.
pub const PATIENTS: usize = 280;

/// The referral Task statuses a demo referral takes, in turn (all of SDOHCC's but `received`
/// and `ready`, which a referral Task never has), with a matching business status and reason.
const TASK_STATES: &[(&str, Option<&str>, Option<&str>)] = &[
    ("draft", None, None),
    ("requested", Some("received"), None),
    ("accepted", Some("contacting-recipient"), None),
    ("in-progress", Some("service-scheduled"), None),
    ("completed", Some("service-delivered"), None),
    (
        "rejected",
        Some("no-capacity"),
        Some("No capacity this month"),
    ),
    (
        "cancelled",
        Some("declined-by-recipient"),
        Some("The recipient declined the service"),
    ),
    (
        "on-hold",
        Some("waitlisted"),
        Some("Waiting list for the next intake"),
    ),
    (
        "failed",
        Some("unable-to-contact"),
        Some("Three contact attempts without answer"),
    ),
    ("entered-in-error", None, None),
];

/// The needs referred, with the CBO that serves them and a SNOMED CT service.
const NEEDS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "food-insecurity",
        "Food Insecurity",
        "demo-food-bank",
        "467771000124109",
        "Assistance with application for food pantry program",
    ),
    (
        "housing-instability",
        "Housing Instability",
        "demo-housing-agency",
        "710925007",
        "Provision of housing",
    ),
    (
        "transportation-insecurity",
        "Transportation Insecurity",
        "demo-transport-coop",
        "467681000124101",
        "Assistance with application for transportation program",
    ),
];

const ELIGIBILITY: &[&str] = &["primary-care", "maternity", "plan-first", "foster-care"];
const FAMILY: &[&str] = &[
    "Rivera", "Johnson", "Williams", "Nguyen", "Brown", "Davis", "Garcia", "Miller", "Wilson",
    "Moore", "Taylor", "Anderson", "Thomas", "Jackson", "White", "Harris",
];
const GIVEN_F: &[&str] = &[
    "Ana", "Maria", "Keisha", "Linh", "Grace", "Tamika", "Rosa", "Emily",
];
const GIVEN_M: &[&str] = &[
    "James", "Marcus", "Luis", "Minh", "David", "Andre", "Carlos", "Noah",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Tupelo", "Lee", "38801"),
    ("Greenville", "Washington", "38701"),
    ("Columbus", "Lowndes", "39701"),
    ("Jackson", "Hinds", "39201"),
    ("Meridian", "Lauderdale", "39301"),
    ("Hattiesburg", "Forrest", "39401"),
    ("Gulfport", "Harrison", "39501"),
];

/// A small deterministic generator (xorshift), so every seed is the same program.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items
            .get(self.below(items.len()))
            .copied()
            .unwrap_or_default()
    }
}

fn coding(system: &str, code: &str) -> Value {
    json!({"system": system, "code": code})
}

fn profile(name: &str) -> Value {
    json!({"profile": [format!("{BASE}/StructureDefinition/{name}")]})
}

fn region_extension(region: usize) -> Value {
    json!({"url": format!("{BASE}/StructureDefinition/pivot-region"),
        "valueCoding": {"system": format!("{BASE}/CodeSystem/pivot-region"), "code": region.to_string(), "display": format!("Region {region}")}})
}

/// An NPI with its check digit (Luhn over "80840" and the first nine digits).
fn npi(first_nine: u64) -> String {
    let digits = format!("80840{first_nine:09}");
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
        let d = c.to_digit(10).unwrap_or(0);
        sum += if i % 2 == 0 {
            let doubled = d * 2;
            doubled / 10 + doubled % 10
        } else {
            d
        };
    }
    format!("{first_nine:09}{}", (10 - sum % 10) % 10)
}

fn organization(id: &str, name: &str, kind: &str, region: Option<usize>, extra: Value) -> Value {
    let mut org = json!({"resourceType": "Organization", "id": id, "meta": profile("pivot-organization"),
        "active": true, "name": name,
        "type": [{"coding": [coding(&format!("{BASE}/CodeSystem/pivot-organization-type"), kind)]}]});
    if let Some(region) = region {
        org["extension"] = json!([region_extension(region)]);
    }
    if let (Value::Object(org), Value::Object(extra)) = (&mut org, extra) {
        org.extend(extra);
    }
    org
}

/// The demo program, in an order where every reference points to something already written.
pub fn program() -> Vec<Value> {
    let mut dice = Dice(0x5eed_f0d3);
    let mut out = Vec::new();
    for region in 1..=7 {
        out.push(organization(
            &format!("demo-pivot-entity-{region}"),
            &format!("Region {region} Pivot Entity"),
            "pivot-entity",
            Some(region),
            json!({}),
        ));
    }
    out.push(organization(
        "demo-food-bank",
        "Delta Community Food Bank",
        "cbo",
        Some(4),
        json!({}),
    ));
    out.push(organization(
        "demo-housing-agency",
        "Magnolia Housing Agency",
        "cbo",
        Some(4),
        json!({}),
    ));
    out.push(organization(
        "demo-transport-coop",
        "River Counties Transportation Cooperative",
        "cbo",
        Some(2),
        json!({}),
    ));
    let practices = 4;
    for p in 1..=practices {
        out.push(organization(
            &format!("demo-practice-{p}"),
            &format!("{} Family Medicine", CITIES.get(p * 2 - 1).map_or("Jackson", |c| c.0)),
            "practice",
            Some(p * 2 - 1),
            json!({"identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": npi(100_000_000 + p as u64)}]}),
        ));
    }
    // two doctors per practice, one coordinator per Pivot Entity
    let mut doctors = Vec::new();
    for p in 1..=practices {
        for d in 1..=2 {
            let id = format!("demo-dr-{p}-{d}");
            let family = dice.pick(FAMILY);
            out.push(json!({"resourceType": "Practitioner", "id": id, "active": true,
                "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": npi(200_000_000 + (p * 10 + d) as u64)}],
                "name": [{"family": family, "given": [dice.pick(GIVEN_F)], "prefix": ["Dr."]}]}));
            out.push(json!({"resourceType": "PractitionerRole", "id": format!("{id}-pcp"), "active": true,
                "practitioner": {"reference": format!("Practitioner/{id}")},
                "organization": {"reference": format!("Organization/demo-practice-{p}")},
                "code": [{"coding": [coding("http://nucc.org/provider-taxonomy", "207Q00000X")], "text": "Family Medicine"}]}));
            doctors.push(format!("PractitionerRole/{id}-pcp"));
        }
    }
    for region in 1..=7 {
        let id = format!("demo-coordinator-{region}");
        out.push(
            json!({"resourceType": "Practitioner", "id": id, "active": true,
            "name": [{"family": dice.pick(FAMILY), "given": [dice.pick(GIVEN_M)]}]}),
        );
        out.push(
            json!({"resourceType": "PractitionerRole", "id": format!("{id}-role"), "active": true,
            "practitioner": {"reference": format!("Practitioner/{id}")},
            "organization": {"reference": format!("Organization/demo-pivot-entity-{region}")},
            "code": [{"text": "Care coordinator"}]}),
        );
    }
    let mut referral = 0usize;
    for n in 1..=PATIENTS {
        let region = (n - 1) % 7 + 1;
        let (city, county, zip) = CITIES
            .get(region - 1)
            .copied()
            .unwrap_or(("Jackson", "Hinds", "39201"));
        let female = dice.below(2) == 0;
        let category = ELIGIBILITY
            .get((n - 1) % 4)
            .copied()
            .unwrap_or("primary-care");
        let female = female || category == "maternity";
        let birth_year = match category {
            "foster-care" => 2010 + dice.below(10),
            "maternity" | "plan-first" => 1988 + dice.below(16),
            _ => 1950 + dice.below(60),
        };
        let patient_id = format!("demo-patient-{n}");
        let doctor = doctors.get(n % doctors.len()).cloned().unwrap_or_default();
        out.push(json!({"resourceType": "Patient", "id": patient_id, "meta": profile("pivot-patient"),
            "extension": [
                {"url": format!("{BASE}/StructureDefinition/pivot-eligibility-category"),
                 "valueCoding": coding(&format!("{BASE}/CodeSystem/pivot-eligibility"), category)},
                region_extension(region)],
            "identifier": [{"use": "official", "type": {"coding": [coding("http://terminology.hl7.org/CodeSystem/v2-0203", "MA")]},
                "system": format!("{BASE}/sid/medicaid-id"), "value": format!("MCD{:09}", 100_000 + n)}],
            "active": true,
            "name": [{"use": "official", "family": dice.pick(FAMILY), "given": [if female { dice.pick(GIVEN_F) } else { dice.pick(GIVEN_M) }]}],
            "gender": if female { "female" } else { "male" },
            "birthDate": format!("{birth_year}-{:02}-{:02}", dice.below(12) + 1, dice.below(28) + 1),
            "address": [{"use": "home", "line": [format!("{} Main St", 100 + n)], "city": city, "district": county, "state": "MS", "postalCode": zip}],
            "generalPractitioner": [{"reference": doctor}]}));
        // about two in three are screened; a positive food, housing or transport screen leads to
        // a referral
        if n % 3 == 0 {
            continue;
        }
        // the k-th positive screen: needs vary across the Task statuses
        let k = (n - 1) / 3;
        let need = NEEDS
            .get((k + k / 10) % NEEDS.len())
            .copied()
            .unwrap_or(NEEDS[0]);
        let positive = n % 3 == 1;
        let screening = format!("demo-screening-{n}");
        let (answer, display) = if positive {
            ("LA28397-0", "Often true")
        } else {
            ("LA28398-8", "Never true")
        };
        let mut observation = json!({"resourceType": "Observation", "id": screening, "meta": profile("pivot-sdoh-screening"),
            "extension": [{"url": format!("{BASE}/StructureDefinition/pivot-screening-instrument"), "valueCoding": coding("http://loinc.org", "88121-9")}],
            "status": "final",
            "category": [
                {"coding": [coding("http://terminology.hl7.org/CodeSystem/observation-category", "social-history")]},
                {"coding": [coding("http://terminology.hl7.org/CodeSystem/observation-category", "survey")]},
                {"coding": [coding(TEMPORARY, need.0)]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "88122-7", "display": "Within the past 12 months we worried whether our food would run out before we got money to buy more [U.S. FSS]"}]},
            "subject": {"reference": format!("Patient/{patient_id}")},
            "effectiveDateTime": format!("2026-{:02}-{:02}", 6 + n % 5, 1 + n % 27),
            "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": answer, "display": display}]}});
        if positive {
            observation["interpretation"] = json!([{"coding": [coding("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "POS")]}]);
        }
        out.push(observation);
        if !positive {
            continue;
        }
        let (status, business, reason) = TASK_STATES
            .get(referral % TASK_STATES.len())
            .copied()
            .unwrap_or(TASK_STATES[0]);
        referral += 1;
        let request_id = format!("demo-referral-{n}");
        let authored = format!("2026-{:02}-{:02}T10:00:00Z", 6 + n % 5, 2 + n % 27);
        out.push(json!({"resourceType": "ServiceRequest", "id": request_id, "meta": profile("pivot-sdoh-referral"),
            "extension": [{"url": format!("{BASE}/StructureDefinition/pivot-referral-source"), "valueCoding": coding(&format!("{BASE}/CodeSystem/pivot-referral-source"), "provider")}],
            "status": if status == "draft" { "draft" } else { "active" },
            "intent": "order",
            "category": [{"coding": [{"system": TEMPORARY, "code": need.0, "display": need.1}]}],
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": need.3, "display": need.4}]},
            "subject": {"reference": format!("Patient/{patient_id}")},
            "authoredOn": authored,
            "requester": {"reference": doctor},
            "performer": [{"reference": format!("Organization/{}", need.2)}],
            "reasonReference": [{"reference": format!("Observation/{screening}")}]}));
        let task_id = format!("demo-task-{n}");
        let mut task = json!({"resourceType": "Task", "id": task_id, "meta": profile("pivot-referral-task"),
            "status": status, "intent": "order", "priority": "routine",
            "code": {"coding": [coding("http://hl7.org/fhir/CodeSystem/task-code", "fulfill")]},
            "focus": {"reference": format!("ServiceRequest/{request_id}")},
            "for": {"reference": format!("Patient/{patient_id}")},
            "authoredOn": authored, "lastModified": authored,
            "requester": {"reference": doctor},
            "owner": {"reference": format!("Organization/{}", need.2)}});
        if let Some(code) = business {
            task["businessStatus"] = json!({"coding": [coding(BUSINESS, code)]});
        }
        if let Some(text) = reason {
            task["statusReason"] = json!({"text": text});
        }
        if status == "completed" {
            let procedure = format!("demo-outcome-{n}");
            out.push(json!({"resourceType": "Procedure", "id": procedure, "meta": profile("pivot-outcome-procedure"),
                "status": "completed",
                "category": {"coding": [{"system": TEMPORARY, "code": need.0, "display": need.1}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": need.3, "display": need.4}]},
                "subject": {"reference": format!("Patient/{patient_id}")},
                "basedOn": [{"reference": format!("ServiceRequest/{request_id}")}],
                "performedDateTime": format!("2026-{:02}-{:02}", 6 + n % 5, 3 + n % 25),
                "performer": [{"actor": {"reference": format!("Organization/{}", need.2)}}]}));
            task["output"] = json!([{"type": {"coding": [coding(TEMPORARY, "resulting-activity")]},
                "valueReference": {"reference": format!("Procedure/{procedure}")}}]);
        }
        out.push(task);
        // a care team and an approved, person-centred care plan for every other referred recipient
        if n % 2 == 1 {
            let coordinator = format!("PractitionerRole/demo-coordinator-{region}-role");
            let team = format!("demo-careteam-{n}");
            let role = |code: &str| json!([{"coding": [coding(&format!("{BASE}/CodeSystem/pivot-care-team-role"), code)]}]);
            out.push(json!({"resourceType": "CareTeam", "id": team, "meta": profile("pivot-careteam"), "status": "active",
                "subject": {"reference": format!("Patient/{patient_id}")},
                "participant": [
                    {"role": role("care-coordinator"), "member": {"reference": coordinator}},
                    {"role": role("primary-care-provider"), "member": {"reference": doctor}},
                    {"role": role("recipient"), "member": {"reference": format!("Patient/{patient_id}")}}]}));
            out.push(json!({"resourceType": "CarePlan", "id": format!("demo-careplan-{n}"), "meta": profile("pivot-careplan"),
                "extension": [{"url": format!("{BASE}/StructureDefinition/pivot-careplan-approval"), "extension": [
                    {"url": "approver", "valueReference": {"reference": doctor}},
                    {"url": "date", "valueDateTime": authored}]}],
                "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">Care coordination plan: {}</div>", need.1)},
                "status": "active", "intent": "plan",
                "category": [
                    {"coding": [coding("http://hl7.org/fhir/us/core/CodeSystem/careplan-category", "assess-plan")]},
                    {"coding": [coding(&format!("{BASE}/CodeSystem/pivot-careplan-type"), "care-coordination")]}],
                "title": format!("{} plan", need.1),
                "subject": {"reference": format!("Patient/{patient_id}")},
                "period": {"start": &authored[..10]},
                "author": {"reference": coordinator},
                "contributor": [{"reference": format!("Patient/{patient_id}")}],
                "careTeam": [{"reference": format!("CareTeam/{team}")}],
                "activity": [{"reference": {"reference": format!("ServiceRequest/{request_id}")}}]}));
        }
    }
    out
}

/// Writes the demo program; stops at the first resource the server refuses, naming it. Returns
/// the resources written: none when the demo program is already there.
pub fn seed(store: &Store, registry: &crate::search::registry::Registry) -> anyhow::Result<usize> {
    let present = store
        .blocking(|conn| {
            crate::store::resources::current(conn, "Organization", "demo-pivot-entity-1")
        })
        .map_err(|err: crate::store::StoreError| anyhow::anyhow!("{err}"))?;
    if present.is_some_and(|row| row.deleted == 0) {
        return Ok(0);
    }
    let resources = program();
    let total = resources.len();
    for chunk in resources.chunks(200) {
        let chunk: Vec<Map<String, Value>> = chunk
            .iter()
            .filter_map(|v| v.as_object().cloned())
            .collect();
        store
            .blocking_write(|conn| {
                for resource in chunk {
                    let name = format!(
                        "{}/{}",
                        resource
                            .get("resourceType")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                        resource
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                    );
                    let text = Value::Object(resource).to_string();
                    crate::fhir::parse::parse_resource(text.as_bytes(), None)
                        .and_then(|parsed| crate::import::write_one(conn, registry, parsed))
                        .map_err(|err| {
                            let outcome = crate::fhir::outcome::operation_outcome(&err.issues());
                            FhirError::Internal(anyhow::anyhow!("{name} was refused: {outcome}"))
                        })?;
                }
                Ok::<_, FhirError>(())
            })
            .map_err(|err| match err {
                FhirError::Internal(cause) => cause,
                other => anyhow::anyhow!("{other}"),
            })?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npi_check_digits_are_luhn() {
        // the NPI standard's own example
        assert_eq!(npi(123_456_789), "1234567893");
    }

    #[test]
    fn every_referral_task_status_is_seeded() {
        let program = program();
        for (status, _, _) in TASK_STATES {
            assert!(
                program
                    .iter()
                    .any(|r| r["resourceType"] == "Task" && r["status"] == *status),
                "no Task in {status}"
            );
        }
        for category in ELIGIBILITY {
            assert!(program.iter().any(|r| r["resourceType"] == "Patient"
                && r["extension"][0]["valueCoding"]["code"] == *category));
        }
    }
}
