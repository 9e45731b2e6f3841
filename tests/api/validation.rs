//! Profiles and validation: the program's definitions are served; writes claiming a program
//! profile are validated against it (422 with every issue, nothing stored); `$validate` at type
//! and instance level with `profile` and `mode`; base R4 rules (invariants, required bindings,
//! reference targets) and the official examples.

use std::path::Path;

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome};

backend_tests!(
    program_definitions_are_served_and_named,
    program_patient_rules_are_enforced_on_write,
    program_rules_of_tasks_and_screenings,
    validate_operation_modes_and_profiles,
    base_r4_rules_and_official_examples,
    transactions_refuse_nonconforming_entries,
);

const BASE: &str = "http://example.org/fhir/pivot";

fn sd(id: &str) -> String {
    format!("{BASE}/StructureDefinition/{id}")
}

/// A Patient that conforms to pivot-patient, with `eligibility` as its category.
fn program_patient(id: &str, eligibility: &str) -> Value {
    json!({
        "resourceType": "Patient", "id": id,
        "meta": {"profile": [sd("pivot-patient")]},
        "extension": [
            {"url": sd("pivot-eligibility-category"), "valueCoding": {"system": format!("{BASE}/CodeSystem/pivot-eligibility"), "code": eligibility}},
            {"url": sd("pivot-region"), "valueCoding": {"system": format!("{BASE}/CodeSystem/pivot-region"), "code": "3"}}
        ],
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MA"}]},
            "system": format!("{BASE}/sid/medicaid-id"), "value": format!("MCD{id}0001").to_uppercase().replace('-', "")}],
        "name": [{"family": "Rivera", "given": ["Ana"]}],
        "gender": "female", "birthDate": "1994-07-12",
        "address": [{"postalCode": "99999"}] // a ZIP the residence map does not know: the region is the client's
    })
}

fn referral_task(id: &str) -> Value {
    json!({
        "resourceType": "Task", "id": id,
        "meta": {"profile": [sd("pivot-referral-task")]},
        "status": "requested", "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
        "focus": {"reference": "ServiceRequest/sr-1"},
        "for": {"reference": "Patient/p-1"},
        "authoredOn": "2026-10-01T10:00:00Z", "lastModified": "2026-10-01T10:00:00Z",
        "requester": {"reference": "Organization/clinic"},
        "owner": {"reference": "Organization/food-bank"}
    })
}

fn screening(id: &str) -> Value {
    json!({
        "resourceType": "Observation", "id": id,
        "meta": {"profile": [sd("pivot-sdoh-screening")]},
        "extension": [{"url": sd("pivot-screening-instrument"), "valueCoding": {"system": "http://loinc.org", "code": "88121-9"}}],
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}]},
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "social-history"}]},
            {"coding": [{"system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes", "code": "food-insecurity"}]}
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "88122-7"}]},
        "subject": {"reference": "Patient/p-1"},
        "effectiveDateTime": "2026-10-01T09:30:00-05:00",
        "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA28397-0"}]}
    })
}

/// The issues of an OperationOutcome as "severity code expression diagnostics" lines.
fn issues(outcome: &Value) -> Vec<String> {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            format!(
                "{} {} {} {}",
                i["severity"].as_str().unwrap_or_default(),
                i["code"].as_str().unwrap_or_default(),
                i["expression"][0].as_str().unwrap_or_default(),
                i["diagnostics"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn has(outcome: &Value, parts: &[&str]) -> bool {
    issues(outcome)
        .iter()
        .any(|line| parts.iter().all(|p| line.contains(p)))
}

fn errors(outcome: &Value) -> Vec<String> {
    issues(outcome)
        .into_iter()
        .filter(|l| l.starts_with("error") || l.starts_with("fatal"))
        .collect()
}

/// Writes `resource` with PUT and expects 422 naming an issue with all of `parts`; checks that
/// nothing was stored.
async fn refused(app: &TestApp, resource: &Value, parts: &[&str]) -> Value {
    let path = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    );
    let response = app.put(&path, resource).await;
    assert_eq!(response.status().as_u16(), 422, "{path}");
    let outcome = body(response).await;
    assert!(
        has(&outcome, parts),
        "{parts:?} not in {:#?}",
        issues(&outcome)
    );
    assert_eq!(
        app.get(&path).await.status().as_u16(),
        404,
        "nothing stored"
    );
    outcome
}

async fn accepted(app: &TestApp, resource: &Value) {
    let path = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    );
    let response = app.put(&path, resource).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 201, "{path}: {text}");
}

async fn program_definitions_are_served_and_named(app: TestApp) {
    let url = sd("pivot-patient");
    let found = body(app.get(&format!("StructureDefinition?url={url}")).await).await;
    assert_eq!(found["entry"].as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(found["entry"][0]["resource"]["id"], "pivot-patient");
    let region = body(app.get("ValueSet/pivot-region").await).await;
    assert_eq!(region["url"], format!("{BASE}/ValueSet/pivot-region"));
    let cs = body(
        app.get("CodeSystem?url=http://example.org/fhir/pivot/CodeSystem/pivot-eligibility")
            .await,
    )
    .await;
    assert_eq!(cs["entry"][0]["resource"]["id"], "pivot-eligibility");
    let params = body(app.get("SearchParameter/pivot-patient-region").await).await;
    assert_eq!(params["resourceType"], "SearchParameter");
    let ig = body(app.get("ImplementationGuide/pivot").await).await;
    assert_eq!(ig["packageId"], "example.fhir.pivot");
    let history = body(app.get("StructureDefinition/pivot-patient/_history").await).await;
    assert_eq!(history["total"], 1, "loaded once");
    // the profiles in profiles/ are all served
    let count = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("StructureDefinition-")
                })
                .count()
        })
        .unwrap_or(0);
    let all = body(app.get("StructureDefinition?_summary=count").await).await;
    assert_eq!(all["total"].as_u64(), Some(count as u64));
    let metadata = body(app.get("metadata").await).await;
    assert_eq!(
        metadata["implementationGuide"][0],
        format!("{BASE}/ImplementationGuide/pivot")
    );
    let patient = metadata["rest"][0]["resource"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["type"] == "Patient"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(patient["supportedProfile"], json!([url]));
    let task = metadata["rest"][0]["resource"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["type"] == "Task"))
        .cloned()
        .unwrap_or_default();
    assert!(
        task["supportedProfile"]
            .to_string()
            .contains("pivot-referral-task")
    );
}

async fn program_patient_rules_are_enforced_on_write(app: TestApp) {
    accepted(&app, &program_patient("ok-1", "maternity")).await;
    // invariant: dual-eligible and long-term-care recipients are not eligible
    let outcome = refused(
        &app,
        &program_patient("dual-1", "dual-eligible"),
        &["error invariant", "pivot-pat-2"],
    )
    .await;
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    refused(
        &app,
        &program_patient("ltc-1", "long-term-care"),
        &["error invariant", "pivot-pat-2"],
    )
    .await;
    // cardinality: the region extension is 1..1
    let mut patient = program_patient("noregion-1", "maternity");
    patient["extension"].as_array_mut().map(|e| e.remove(1));
    refused(
        &app,
        &patient,
        &["required", "Patient.extension", "slice region"],
    )
    .await;
    // cardinality of a base element made mandatory: birthDate 1..1
    let mut patient = program_patient("nobirth-1", "maternity");
    patient.as_object_mut().map(|p| p.shift_remove("birthDate"));
    refused(&app, &patient, &["required", "Patient.birthDate"]).await;
    // slicing by value: the Medicaid identifier is found by its system
    let mut patient = program_patient("noid-1", "maternity");
    patient["identifier"][0]["system"] = json!("urn:other");
    refused(&app, &patient, &["required", "slice medicaidId"]).await;
    // pattern inside a slice: the Medicaid identifier's type is v2-0203#MA
    let mut patient = program_patient("type-1", "maternity");
    patient["identifier"][0]["type"]["coding"][0]["code"] = json!("MR");
    refused(
        &app,
        &patient,
        &["value", "Patient.identifier[0].type", "pattern"],
    )
    .await;
    // required binding in an extension definition (pivot-region)
    let mut patient = program_patient("region-9", "maternity");
    patient["extension"][1]["valueCoding"]["code"] = json!("9");
    refused(
        &app,
        &patient,
        &[
            "code-invalid",
            "Patient.extension[1].valueCoding",
            "pivot-region",
        ],
    )
    .await;
    // types of an extension's value[x]: Coding only
    let mut patient = program_patient("vcode-1", "maternity");
    patient["extension"][1] = json!({"url": sd("pivot-region"), "valueCode": "3"});
    refused(&app, &patient, &["structure", "valueCode"]).await;
    // an extension under the program's base must be defined by it
    let mut patient = program_patient("ext-1", "maternity");
    if let Some(extensions) = patient["extension"].as_array_mut() {
        extensions.push(json!({"url": sd("pivot-unknown"), "valueString": "x"}));
    }
    refused(&app, &patient, &["structure", "pivot-unknown"]).await;
    // an extension is used only where its definition allows (pivot-edd is for CarePlan)
    let mut patient = program_patient("ctx-1", "maternity");
    if let Some(extensions) = patient["extension"].as_array_mut() {
        extensions.push(json!({"url": sd("pivot-edd"), "valueDate": "2027-01-01"}));
    }
    refused(
        &app,
        &patient,
        &["structure", "Patient.extension[2]", "CarePlan"],
    )
    .await;
    // every issue is reported, not only the first
    let mut patient = program_patient("many-1", "dual-eligible");
    patient.as_object_mut().map(|p| p.shift_remove("gender"));
    let outcome = refused(&app, &patient, &["pivot-pat-2"]).await;
    assert!(
        has(&outcome, &["required", "Patient.gender"]),
        "{:#?}",
        issues(&outcome)
    );
    // nothing claimed: no program rules
    accepted(&app, &json!({"resourceType": "Patient", "id": "plain-1"})).await;
    // the same rules apply to updates and patches
    let mut update = program_patient("ok-1", "hcbs-waiver");
    update["id"] = json!("ok-1");
    let response = app.put("Patient/ok-1", &update).await;
    assert_eq!(response.status().as_u16(), 422);
    let stored = body(app.get("Patient/ok-1").await).await;
    assert_eq!(
        stored["meta"]["versionId"], "1",
        "the update was not stored"
    );
}

async fn program_rules_of_tasks_and_screenings(app: TestApp) {
    accepted(&app, &referral_task("t-ok")).await;
    // fixed value
    let mut task = referral_task("t-intent");
    task["intent"] = json!("plan");
    refused(&app, &task, &["value", "Task.intent"]).await;
    // pattern
    let mut task = referral_task("t-code");
    task["code"]["coding"][0]["code"] = json!("approve");
    refused(&app, &task, &["value", "Task.code", "pattern"]).await;
    // the referral Task's owner is an Organization and its focus a ServiceRequest: the
    // reference targets and the program invariant pivot-task-5 both say so
    let mut task = referral_task("t-owner");
    task["owner"] = json!({"reference": "Practitioner/dr"});
    let outcome = refused(
        &app,
        &task,
        &["invalid", "Task.owner.reference", "Practitioner"],
    )
    .await;
    assert!(
        has(&outcome, &["error invariant", "pivot-task-5"]),
        "{:#?}",
        issues(&outcome)
    );
    let mut task = referral_task("t-focus");
    task["focus"] = json!({"reference": "CarePlan/cp"});
    refused(&app, &task, &["error invariant", "pivot-task-5"]).await;
    // required binding on a status (pivot-referral-task-status leaves out `ready`)
    let mut task = referral_task("t-ready");
    task["status"] = json!("ready");
    refused(&app, &task, &["code-invalid", "Task.status"]).await;
    // extensible binding: a warning, and the write succeeds
    let mut task = referral_task("t-business");
    task["businessStatus"] = json!({"coding": [{"system": "urn:local", "code": "x"}]});
    accepted(&app, &task).await;
    let checked = body(app.post("Task/$validate", &task).await).await;
    assert!(
        has(
            &checked,
            &["warning", "code-invalid", "Task.businessStatus"]
        ),
        "{:#?}",
        issues(&checked)
    );
    assert!(errors(&checked).is_empty(), "{:#?}", errors(&checked));
    // program invariant with a status rule
    let mut task = referral_task("t-reason");
    task["status"] = json!("rejected");
    refused(&app, &task, &["error invariant", "pivot-task-1"]).await;
    // screenings
    accepted(&app, &screening("o-ok")).await;
    let mut obs = screening("o-instrument");
    obs.as_object_mut().map(|o| o.shift_remove("extension"));
    refused(&app, &obs, &["error invariant", "pivot-sdoh-obs-2"]).await;
    let mut obs = screening("o-survey");
    obs["category"].as_array_mut().map(|c| c.remove(0));
    refused(&app, &obs, &["required", "slice survey"]).await;
    let mut obs = screening("o-domain");
    obs["category"][2]["coding"][0]["code"] = json!("not-a-domain");
    refused(
        &app,
        &obs,
        &[
            "code-invalid",
            "Observation.category[2]",
            "pivot-sdoh-category",
        ],
    )
    .await;
    let mut obs = screening("o-value");
    obs.as_object_mut()
        .map(|o| o.shift_remove("valueCodeableConcept"));
    obs["valuePeriod"] = json!({"start": "2026-01-01"});
    refused(&app, &obs, &["structure", "valuePeriod"]).await;
    let mut obs = screening("o-body");
    obs["bodySite"] = json!({"text": "arm"});
    refused(
        &app,
        &obs,
        &["structure", "Observation.bodySite", "at most 0"],
    )
    .await;
}

async fn validate_operation_modes_and_profiles(app: TestApp) {
    // type level, raw resource: all OK
    let ok = body(
        app.post("Patient/$validate", &program_patient("v-1", "maternity"))
            .await,
    )
    .await;
    assert_eq!(ok["resourceType"], "OperationOutcome");
    assert!(errors(&ok).is_empty(), "{:#?}", issues(&ok));
    // Parameters with resource and profile: a plain Patient checked against pivot-patient
    let plain = json!({"resourceType": "Patient", "name": [{"family": "Lee"}]});
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": plain},
        {"name": "profile", "valueUri": sd("pivot-patient")}]});
    let response = app.post("Patient/$validate", &params).await;
    assert_eq!(response.status().as_u16(), 200);
    let checked = body(response).await;
    assert!(
        has(&checked, &["error", "required", "slice medicaidId"]),
        "{:#?}",
        issues(&checked)
    );
    assert!(has(&checked, &["error", "required", "Patient.birthDate"]));
    // the profile as a query parameter; an unknown profile is an error issue
    let checked = body(
        app.post(
            &format!("Patient/$validate?profile={}", sd("pivot-nope")),
            &plain,
        )
        .await,
    )
    .await;
    assert!(
        has(&checked, &["error", "not-found", "pivot-nope"]),
        "{:#?}",
        issues(&checked)
    );
    // structure problems are reported too
    let checked = body(
        app.post(
            "Patient/$validate",
            &json!({"resourceType": "Patient", "nmae": "x"}),
        )
        .await,
    )
    .await;
    assert!(!errors(&checked).is_empty());
    // mode=update needs an id
    let checked = body(app.post("Patient/$validate?mode=update", &plain).await).await;
    assert!(
        has(&checked, &["error", "required", "Patient.id"]),
        "{:#?}",
        issues(&checked)
    );
    // instance level: the stored resource, against a profile
    accepted(
        &app,
        &json!({"resourceType": "Patient", "id": "stored-1", "gender": "female"}),
    )
    .await;
    let checked = body(
        app.get(&format!(
            "Patient/stored-1/$validate?profile={}",
            sd("pivot-patient")
        ))
        .await,
    )
    .await;
    assert!(
        has(
            &checked,
            &["error", "required", "slice eligibilityCategory"]
        ),
        "{:#?}",
        issues(&checked)
    );
    // instance level, mode=update: the id must be the URL's
    let mut other = program_patient("other-id", "maternity");
    other["id"] = json!("other-id");
    let checked = body(
        app.post("Patient/stored-1/$validate?mode=update", &other)
            .await,
    )
    .await;
    assert!(
        has(&checked, &["error", "invalid", "Patient.id"]),
        "{:#?}",
        issues(&checked)
    );
    let mut same = program_patient("stored-1", "maternity");
    same["id"] = json!("stored-1");
    let checked = body(
        app.post("Patient/stored-1/$validate?mode=update", &same)
            .await,
    )
    .await;
    assert!(errors(&checked).is_empty(), "{:#?}", issues(&checked));
    // mode=delete: an existing resource can be deleted; an unknown one is 404
    let checked = body(
        app.post(
            "Patient/stored-1/$validate?mode=delete",
            &json!({"resourceType": "Parameters"}),
        )
        .await,
    )
    .await;
    assert_eq!(checked["issue"][0]["severity"], "information");
    expect_outcome(
        app.get("Patient/missing/$validate?mode=delete").await,
        404,
        "not-found",
    )
    .await;
    // a bad mode is a 400; mode=delete at type level is a 400
    expect_outcome(
        app.post("Patient/$validate?mode=bogus", &plain).await,
        400,
        "value",
    )
    .await;
    expect_outcome(
        app.post("Patient/$validate?mode=delete", &plain).await,
        400,
        "invalid",
    )
    .await;
    // $validate stores nothing
    let none = body(app.get("Patient?_id=v-1").await).await;
    assert!(none["entry"].is_null(), "{none}");
}

async fn base_r4_rules_and_official_examples(app: TestApp) {
    // base invariant per-1 on a Period
    let patient = json!({"resourceType": "Patient", "address": [{"period": {"start": "2020-01-01", "end": "2019-01-01"}}]});
    let checked = body(app.post("Patient/$validate", &patient).await).await;
    assert!(
        has(
            &checked,
            &["error invariant", "Patient.address[0].period", "per-1"]
        ),
        "{:#?}",
        issues(&checked)
    );
    // a resource's own invariant: pat-1 on Patient.contact
    let patient = json!({"resourceType": "Patient", "contact": [{"gender": "male"}]});
    let checked = body(app.post("Patient/$validate", &patient).await).await;
    assert!(
        has(
            &checked,
            &["error invariant", "Patient.contact[0]", "pat-1"]
        ),
        "{:#?}",
        issues(&checked)
    );
    // dom-3: a contained resource must be referenced
    let patient = json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "o", "name": "x"}]});
    let checked = body(app.post("Patient/$validate", &patient).await).await;
    assert!(
        has(&checked, &["error invariant", "dom-3"]),
        "{:#?}",
        issues(&checked)
    );
    let patient = json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization", "id": "o", "name": "x"}], "managingOrganization": {"reference": "#o"}});
    let checked = body(app.post("Patient/$validate", &patient).await).await;
    assert!(errors(&checked).is_empty(), "{:#?}", issues(&checked));
    // required base binding (administrative-gender) and reference target types
    let patient = json!({"resourceType": "Patient", "gender": "female", "managingOrganization": {"reference": "Practitioner/x"},
        "link": [{"other": {"reference": "Patient/y"}, "type": "seealso"}]});
    let checked = body(app.post("Patient/$validate", &patient).await).await;
    assert!(
        has(
            &checked,
            &[
                "error",
                "invalid",
                "Patient.managingOrganization.reference",
                "Practitioner"
            ]
        ),
        "{:#?}",
        issues(&checked)
    );
    assert_eq!(errors(&checked).len(), 1, "{:#?}", issues(&checked));
    let observation = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "no-such"}]}],
        "referenceRange": [{"text": "normal"}]});
    let checked = body(app.post("Observation/$validate", &observation).await).await;
    assert!(
        errors(&checked).is_empty(),
        "observation-category is preferred, not required: {:#?}",
        issues(&checked)
    );
    let request = json!({"resourceType": "ServiceRequest", "status": "bogus", "intent": "order", "subject": {"reference": "Patient/p"}});
    let checked = body(app.post("ServiceRequest/$validate", &request).await).await;
    assert!(!errors(&checked).is_empty());
    // the ext-1 invariant of every extension
    let patient = json!({"resourceType": "Patient", "extension": [{"url": "http://x.org/e", "valueString": "a",
        "extension": [{"url": "b", "valueString": "c"}]}]});
    let checked = body(app.post("Patient/$validate", &patient).await).await;
    assert!(
        has(
            &checked,
            &["error invariant", "Patient.extension[0]", "ext-1"]
        ),
        "{:#?}",
        issues(&checked)
    );
    // official examples validate clean over HTTP
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hl7-examples");
    for name in [
        "patient-example.json",
        "observation-example.json",
        "careteam-example.json",
        "questionnaireresponse-example-bluebook.json",
        "consent-example.json",
    ] {
        let text =
            std::fs::read_to_string(root.join(name)).unwrap_or_else(|err| panic!("{name}: {err}"));
        let example: Value = serde_json::from_str(&text).unwrap_or_default();
        let ty = example["resourceType"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let checked = body(app.post(&format!("{ty}/$validate"), &example).await).await;
        assert!(
            errors(&checked).is_empty(),
            "{name}: {:#?}",
            errors(&checked)
        );
    }
}

async fn transactions_refuse_nonconforming_entries(app: TestApp) {
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "Kept?"}]}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": program_patient("tx-dual", "dual-eligible"), "request": {"method": "PUT", "url": "Patient/tx-dual"}}
    ]});
    let response = app.post("", &bundle).await;
    assert_eq!(response.status().as_u16(), 422);
    let outcome = body(response).await;
    assert!(has(&outcome, &["pivot-pat-2"]), "{outcome}");
    let all = body(app.get("Patient?_summary=count").await).await;
    assert_eq!(all["total"], 0, "nothing of the transaction was stored");
}

/// A server process of its own: `--require-profiles` is a setting of the whole process.
struct Process {
    child: std::process::Child,
    base: String,
    client: reqwest::Client,
}

impl Process {
    async fn start(database_url: &str, data_dir: &Path, extra: &[&str]) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pivot-fhir"))
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                database_url,
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start the server: {err}"));
        let token = crate::helpers::token_for(data_dir, "system/*.cruds", None, None);
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let process = Process {
            child,
            base: format!("http://127.0.0.1:{port}/fhir"),
            client: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap_or_default(),
        };
        for _ in 0..400 {
            if reqwest::get(format!("http://127.0.0.1:{port}/health/ready"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return process;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the server did not become ready");
    }

    async fn post(&self, path: &str, resource: &Value) -> reqwest::Response {
        crate::helpers::send(
            self.client
                .post(format!("{}/{path}", self.base))
                .header("Content-Type", "application/fhir+json")
                .body(resource.to_string()),
        )
        .await
    }

    async fn get(&self, path: &str) -> Value {
        body(crate::helpers::send(self.client.get(format!("{}/{path}", self.base))).await).await
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_profiles_and_idempotent_loading() {
    let data = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let url = format!("sqlite://{}", data.path().join("pivot.db").display());
    let server = Process::start(
        &url,
        data.path(),
        &["--require-profiles", "Patient,Task,Observation"],
    )
    .await;
    let plain = server
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "Lee"}]}),
        )
        .await;
    assert_eq!(plain.status().as_u16(), 422);
    let outcome = body(plain).await;
    assert!(
        has(
            &outcome,
            &["business-rule", "Patient.meta.profile", "pivot-patient"]
        ),
        "{outcome}"
    );
    assert_eq!(
        server
            .post("Patient", &program_patient("req-1", "maternity"))
            .await
            .status()
            .as_u16(),
        201
    );
    // an Observation is held to it only when it is an SDOH one
    let vitals = json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"}});
    assert_eq!(
        server.post("Observation", &vitals).await.status().as_u16(),
        201
    );
    let mut sdoh = vitals.clone();
    sdoh["category"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "social-history"}]}]);
    assert_eq!(
        server.post("Observation", &sdoh).await.status().as_u16(),
        422
    );
    assert_eq!(
        server
            .post("Observation", &screening("s-1"))
            .await
            .status()
            .as_u16(),
        201
    );
    // $validate in create mode says so too
    let checked = body(
        server
            .post(
                "Patient/$validate?mode=create",
                &json!({"resourceType": "Patient"}),
            )
            .await,
    )
    .await;
    assert!(has(&checked, &["error", "business-rule"]), "{checked}");
    // not for other types
    assert_eq!(
        server
            .post(
                "Organization",
                &json!({"resourceType": "Organization", "name": "x"})
            )
            .await
            .status()
            .as_u16(),
        201
    );
    // inside a transaction Bundle: 422 and nothing kept
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Organization", "name": "kept?"}, "request": {"method": "POST", "url": "Organization"}},
        {"resource": {"resourceType": "Task", "status": "requested", "intent": "order"}, "request": {"method": "POST", "url": "Task"}}]});
    assert_eq!(server.post("", &bundle).await.status().as_u16(), 422);
    assert_eq!(server.get("Organization?_summary=count").await["total"], 1);
    server.stop();
    // a restart stores no new versions of the definitions
    let server = Process::start(&url, data.path(), &[]).await;
    assert_eq!(
        server
            .get("StructureDefinition/pivot-patient/_history")
            .await["total"],
        1
    );
    assert_eq!(
        server
            .post("Patient", &json!({"resourceType": "Patient"}))
            .await
            .status()
            .as_u16(),
        201
    );
    server.stop();
}
