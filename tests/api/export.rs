//! Bulk Data `$export` (http://hl7.org/fhir/uv/bulkdata/export.html): kick-off, polling, the
//! manifest, NDJSON files equal to what search returns, `_type`, `_since`, `_typeFilter`,
//! Patient and Group level, cancellation, retention, scopes, a job that survives a restart,
//! and a round trip into an empty server.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Client, Method, Response};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, TestApp, body, expect_outcome, header, postgres_url, send, token_for,
};

/// Test servers look for export jobs every 50 ms.
async fn spawn(backend: Backend, retention_seconds: u64) -> Option<TestApp> {
    TestApp::spawn_with(backend, |settings| {
        settings.exports.export_poll_ms = 50;
        settings.exports.export_retention_seconds = retention_seconds;
    })
    .await
}

crate::each_backend!(
    system_export_equals_search,
    type_since_and_type_filter,
    patient_and_group_level,
    refusals_cancel_and_owners,
    files_are_deleted_after_retention,
    export_round_trips_into_an_empty_server,
    a_queued_job_survives_a_restart,
    a_dead_nodes_job_is_taken_over_after_its_lease,
    a_large_group_is_exported_once_per_resource,
);

const SDOH: &str = "http://terminology.hl7.org/CodeSystem/observation-category|sdoh";

fn observation(id: &str, patient: Option<&str>, category: &str) -> Value {
    let mut resource = json!({
        "resourceType":"Observation","id":id,"status":"final",
        "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":category}]}],
        "code":{"coding":[{"system":"http://loinc.org","code":"88122-7"}]},
    });
    if let Some(patient) = patient {
        resource["subject"] = json!({ "reference": format!("Patient/{patient}") });
    }
    resource
}

/// Three patients, observations (two SDOH), conditions, a practitioner, and an observation of
/// nobody (outside every compartment).
async fn seed(app: &TestApp) {
    for id in ["p1", "p2", "p3"] {
        let status = app
            .put(
                &format!("Patient/{id}"),
                &json!({"resourceType":"Patient","id":id,"name":[{"family":format!("Family-{id}")}]}),
            )
            .await
            .status()
            .as_u16();
        assert_eq!(status, 201);
    }
    app.put(
        "Practitioner/dr",
        &json!({"resourceType":"Practitioner","id":"dr"}),
    )
    .await;
    for (id, patient, category) in [
        ("o1", Some("p1"), "sdoh"),
        ("o2", Some("p1"), "vital-signs"),
        ("o3", Some("p2"), "sdoh"),
        ("o4", Some("p3"), "vital-signs"),
        ("o5", None, "vital-signs"),
    ] {
        let status = app
            .put(
                &format!("Observation/{id}"),
                &observation(id, patient, category),
            )
            .await
            .status()
            .as_u16();
        assert_eq!(status, 201);
    }
    for (id, patient) in [("c1", "p1"), ("c2", "p2")] {
        app.put(
            &format!("Condition/{id}"),
            &json!({"resourceType":"Condition","id":id,"subject":{"reference":format!("Patient/{patient}")}}),
        )
        .await;
    }
}

async fn as_token(token: &str, method: Method, url: &str) -> Response {
    send(
        Client::new()
            .request(method, url)
            .bearer_auth(token)
            .header("Accept", "application/fhir+json")
            .header("Prefer", "respond-async"),
    )
    .await
}

/// Kicks off `path` and returns the status URL.
async fn kick_off(app: &TestApp, path: &str) -> String {
    let response = send(
        app.request(Method::GET, path)
            .header("Accept", "application/fhir+json")
            .header("Prefer", "respond-async"),
    )
    .await;
    let status = response.status().as_u16();
    let location = header(&response, "content-location");
    assert_eq!(status, 202, "{}", body(response).await);
    assert!(location.contains("/fhir/_export/"), "{location}");
    location
}

/// Polls `url` until the export completes; returns the manifest.
async fn wait_for(app: &TestApp, url: &str) -> Value {
    for _ in 0..300 {
        let response = app.get(url).await;
        match response.status().as_u16() {
            202 => {
                assert!(!header(&response, "x-progress").is_empty());
                assert!(!header(&response, "retry-after").is_empty());
            }
            200 => {
                assert!(header(&response, "content-type").starts_with("application/json"));
                assert!(!header(&response, "expires").is_empty());
                return body(response).await;
            }
            other => panic!(
                "status {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the export did not complete")
}

/// Downloads every output of `manifest`: type → resources.
async fn download(app: &TestApp, manifest: &Value) -> BTreeMap<String, Vec<Value>> {
    let mut files = BTreeMap::new();
    for output in manifest["output"].as_array().into_iter().flatten() {
        let url = output["url"].as_str().unwrap_or_default();
        let response = app.get(url).await;
        assert_eq!(response.status().as_u16(), 200, "{url}");
        assert_eq!(header(&response, "content-type"), "application/fhir+ndjson");
        let text = response.text().await.unwrap_or_default();
        let resources: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
            .collect();
        let resource_type = output["type"].as_str().unwrap_or_default().to_string();
        assert_eq!(
            Some(resources.len() as u64),
            output["count"].as_u64(),
            "{resource_type}"
        );
        assert!(
            resources
                .iter()
                .all(|r| r["resourceType"] == resource_type.as_str()),
            "{resource_type}"
        );
        files.insert(resource_type, resources);
    }
    files
}

fn counts(manifest: &Value) -> BTreeMap<String, u64> {
    manifest["output"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            (
                o["type"].as_str().unwrap_or_default().to_string(),
                o["count"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn ids(resources: &[Value]) -> BTreeSet<String> {
    resources
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect()
}

/// How many resources a search finds.
async fn search_total(app: &TestApp, query: &str) -> u64 {
    let separator = if query.contains('?') { '&' } else { '?' };
    let bundle = body(app.get(&format!("{query}{separator}_summary=count")).await).await;
    bundle["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("{bundle}"))
}

async fn system_export_equals_search(backend: Backend) {
    let Some(app) = spawn(backend, 3600).await else {
        return;
    };
    seed(&app).await;
    let status_url = kick_off(&app, "$export?_outputFormat=application/fhir%2Bndjson").await;
    let manifest = wait_for(&app, &status_url).await;
    assert!(
        manifest["transactionTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(
        manifest["request"]
            .as_str()
            .is_some_and(|r| r.ends_with("/fhir/$export?_outputFormat=application/fhir%2Bndjson")),
        "{manifest}"
    );
    assert_eq!(manifest["requiresAccessToken"], true);
    assert_eq!(manifest["error"], json!([]));
    let files = download(&app, &manifest).await;
    // every type the server holds, each with as many resources as a search finds
    for (resource_type, resources) in &files {
        assert_eq!(
            resources.len() as u64,
            search_total(&app, resource_type).await,
            "{resource_type}"
        );
    }
    for resource_type in ["Patient", "Observation", "Condition", "Practitioner"] {
        assert!(
            files.contains_key(resource_type),
            "{resource_type}: {manifest}"
        );
    }
    assert_eq!(
        ids(&files["Observation"]),
        ["o1", "o2", "o3", "o4", "o5"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    // the program's definitions the server holds are exported too
    assert!(files.contains_key("StructureDefinition"));
    let job = status_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        app.data_dir
            .join("exports")
            .join(&job)
            .join("Patient.ndjson")
            .exists()
    );
    // the CapabilityStatement declares the operations
    let statement = body(app.get("metadata").await).await;
    assert!(statement["instantiates"].as_array().is_some_and(|i| {
        i.iter()
            .any(|u| u == "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data")
    }));
    assert!(
        statement["rest"][0]["operation"]
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o["name"] == "export"
                && o["definition"]
                    == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"))
    );
    for (resource_type, definition) in [
        (
            "Patient",
            "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
        ),
        (
            "Group",
            "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
        ),
    ] {
        let entry = statement["rest"][0]["resource"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["type"] == resource_type).cloned())
            .unwrap_or_default();
        assert!(
            entry["operation"].as_array().is_some_and(|ops| ops
                .iter()
                .any(|o| o["name"] == "export" && o["definition"] == definition)),
            "{entry}"
        );
    }
}

async fn type_since_and_type_filter(backend: Backend) {
    let Some(app) = spawn(backend, 3600).await else {
        return;
    };
    seed(&app).await;
    // _type: only those types
    let manifest = wait_for(
        &app,
        &kick_off(&app, "$export?_type=Observation,Patient").await,
    )
    .await;
    assert_eq!(
        counts(&manifest),
        BTreeMap::from([("Observation".to_string(), 5), ("Patient".to_string(), 3)])
    );
    // _since: only what changed after it
    let since = body(app.get("Condition/c2").await).await["meta"]["lastUpdated"]
        .as_str()
        .unwrap_or_default()
        .replace('+', "%2B");
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.put("Observation/o4", &observation("o4", Some("p3"), "sdoh"))
        .await;
    app.put("Patient/p4", &json!({"resourceType":"Patient","id":"p4"}))
        .await;
    let manifest = wait_for(
        &app,
        &kick_off(
            &app,
            &format!("$export?_type=Observation,Patient,Condition&_since={since}"),
        )
        .await,
    )
    .await;
    assert_eq!(
        counts(&manifest),
        BTreeMap::from([("Observation".to_string(), 1), ("Patient".to_string(), 1)])
    );
    let files = download(&app, &manifest).await;
    assert_eq!(files["Observation"][0]["id"], "o4");
    // _typeFilter: an Observation search; other types unfiltered
    let filter = format!("Observation?category={SDOH}");
    let url = format!(
        "$export?_type=Observation,Condition&_typeFilter={}",
        urlencode(&filter)
    );
    let manifest = wait_for(&app, &kick_off(&app, &url).await).await;
    let expected = search_total(&app, &format!("Observation?category={}", urlencode(SDOH))).await;
    assert_eq!(expected, 3);
    assert_eq!(
        counts(&manifest),
        BTreeMap::from([
            ("Observation".to_string(), expected),
            ("Condition".to_string(), 2)
        ])
    );
    let files = download(&app, &manifest).await;
    assert_eq!(
        ids(&files["Observation"]),
        ["o1", "o3", "o4"].iter().map(|s| s.to_string()).collect()
    );
    // two filters of one type: either matches (o2 is vital-signs of p1)
    let url = format!(
        "$export?_type=Observation&_typeFilter={},{}",
        urlencode(&filter),
        urlencode("Observation?subject=Patient/p1,Patient/p2")
    );
    let manifest = wait_for(&app, &kick_off(&app, &url).await).await;
    let files = download(&app, &manifest).await;
    assert_eq!(
        ids(&files["Observation"]),
        ["o1", "o2", "o3", "o4"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("x", text)])
        .unwrap_or_default()
        .trim_start_matches("x=")
        .to_string()
}

async fn patient_and_group_level(backend: Backend) {
    let Some(app) = spawn(backend, 3600).await else {
        return;
    };
    seed(&app).await;
    // Patient level: patients and their compartments; the observation of nobody and the
    // practitioner stay out
    let manifest = wait_for(&app, &kick_off(&app, "Patient/$export").await).await;
    assert_eq!(
        counts(&manifest),
        BTreeMap::from([
            ("Condition".to_string(), 2),
            ("Observation".to_string(), 4),
            ("Patient".to_string(), 3)
        ])
    );
    let files = download(&app, &manifest).await;
    assert!(!ids(&files["Observation"]).contains("o5"));
    // Group level: the active members only
    app.put(
        "Group/g",
        &json!({"resourceType":"Group","id":"g","type":"person","actual":true,"member":[
            {"entity":{"reference":"Patient/p1"}},
            {"entity":{"reference":"Patient/p2"},"inactive":true}
        ]}),
    )
    .await;
    let manifest = wait_for(&app, &kick_off(&app, "Group/g/$export").await).await;
    // the Group is in its member's compartment too (Group.member)
    assert_eq!(
        counts(&manifest),
        BTreeMap::from([
            ("Condition".to_string(), 1),
            ("Group".to_string(), 1),
            ("Observation".to_string(), 2),
            ("Patient".to_string(), 1)
        ])
    );
    let files = download(&app, &manifest).await;
    assert_eq!(files["Patient"][0]["id"], "p1");
    assert_eq!(
        ids(&files["Observation"]),
        ["o1", "o2"].iter().map(|s| s.to_string()).collect()
    );
    let manifest = wait_for(
        &app,
        &kick_off(&app, "Group/g/$export?_type=Observation").await,
    )
    .await;
    assert_eq!(
        counts(&manifest),
        BTreeMap::from([("Observation".to_string(), 2)])
    );
    // not a compartment type, an unknown group
    let practitioner = send(
        app.request(Method::GET, "Group/g/$export?_type=Practitioner")
            .header("Prefer", "respond-async"),
    )
    .await;
    expect_outcome(practitioner, 400, "invalid").await;
    let missing = send(
        app.request(Method::GET, "Group/nobody/$export")
            .header("Prefer", "respond-async"),
    )
    .await;
    expect_outcome(missing, 404, "not-found").await;
}

/// A token of another client, signed by the server's key.
fn token_of(app: &TestApp, client_id: &str, scope: &str) -> String {
    let key = pivot_fhir::auth::keys::load_or_create(&app.data_dir)
        .unwrap_or_else(|err| panic!("{err:#}"));
    let request = pivot_fhir::auth::token::TokenRequest {
        client_id: client_id.into(),
        scope: scope.into(),
        patient: None,
        fhir_user: None,
        lifetime_seconds: 600,
    };
    pivot_fhir::auth::token::issue(&key, "pivot-fhir", "pivot-fhir", &request)
        .unwrap_or_else(|err| panic!("{err:#}"))
}

async fn refusals_cancel_and_owners(backend: Backend) {
    let Some(app) = spawn(backend, 3600).await else {
        return;
    };
    seed(&app).await;
    // no Prefer: respond-async
    let synchronous = send(app.request(Method::GET, "$export")).await;
    let outcome = expect_outcome(synchronous, 400, "invalid").await;
    assert!(outcome.to_string().contains("respond-async"));
    for (query, code) in [
        ("$export?_outputFormat=text/csv", "invalid"),
        ("$export?_type=Nope", "invalid"),
        ("$export?_since=last-week", "invalid"),
        (
            "$export?_type=Observation&_typeFilter=Observation%3Fnope%3D1",
            "not-supported",
        ),
        (
            "$export?_type=Observation&_typeFilter=Condition%3Fsubject%3DPatient/p1",
            "invalid",
        ),
        (
            "$export?_type=Observation&_typeFilter=Observation%3F_sort%3Ddate",
            "invalid",
        ),
        ("$export?patient=Patient/p1", "not-supported"),
    ] {
        let response = send(
            app.request(Method::GET, query)
                .header("Prefer", "respond-async"),
        )
        .await;
        expect_outcome(response, 400, code).await;
    }
    // scopes: system read scopes only, per type
    let base = &app.base;
    for scope in ["patient/*.rs", "user/*.rs", "system/Patient.cruds"] {
        let token = if scope.starts_with("patient/") {
            token_for(&app.data_dir, scope, Some("p1"), None)
        } else {
            token_of(&app, "analyst", scope)
        };
        let url = if scope.starts_with("system/") {
            format!("{base}/$export?_type=Observation")
        } else {
            format!("{base}/$export")
        };
        expect_outcome(as_token(&token, Method::GET, &url).await, 403, "forbidden").await;
    }
    // an analyst with system/Observation.rs exports Observations only (without _type too)
    let analyst = token_of(&app, "analyst", "system/Observation.rs");
    let started = as_token(&analyst, Method::GET, &format!("{base}/$export")).await;
    assert_eq!(started.status().as_u16(), 202);
    let status_url = header(&started, "content-location");
    let mut manifest = Value::Null;
    for _ in 0..300 {
        let response = as_token(&analyst, Method::GET, &status_url).await;
        if response.status().as_u16() == 200 {
            manifest = body(response).await;
            break;
        }
        assert_eq!(response.status().as_u16(), 202);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        counts(&manifest),
        BTreeMap::from([("Observation".to_string(), 5)])
    );
    let file_url = manifest["output"][0]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        as_token(&analyst, Method::GET, &file_url)
            .await
            .status()
            .as_u16(),
        200
    );
    // another client sees neither the job nor its files; an administrator does; nobody
    // without a token
    let other = token_of(&app, "someone-else", "system/*.rs");
    expect_outcome(
        as_token(&other, Method::GET, &status_url).await,
        404,
        "not-found",
    )
    .await;
    expect_outcome(
        as_token(&other, Method::GET, &file_url).await,
        404,
        "not-found",
    )
    .await;
    expect_outcome(
        as_token(&other, Method::DELETE, &status_url).await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(
        app.get(&file_url).await.status().as_u16(),
        200,
        "administrator"
    );
    let anonymous = send(Client::new().get(&file_url)).await;
    assert_eq!(anonymous.status().as_u16(), 401);
    // a query-constrained system scope limits what is exported
    let sdoh_only = token_of(
        &app,
        "analyst",
        &format!("system/Observation.rs?category={SDOH}"),
    );
    let started = as_token(
        &sdoh_only,
        Method::GET,
        &format!("{base}/$export?_type=Observation"),
    )
    .await;
    let status_url = header(&started, "content-location");
    let manifest = wait_for(&app, &status_url).await;
    assert_eq!(
        counts(&manifest),
        BTreeMap::from([("Observation".to_string(), 2)])
    );
    // cancel: 202, then the job and its files are gone
    let job = status_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(app.data_dir.join("exports").join(&job).exists());
    let cancelled = as_token(&sdoh_only, Method::DELETE, &status_url).await;
    assert_eq!(cancelled.status().as_u16(), 202);
    expect_outcome(app.get(&status_url).await, 404, "not-found").await;
    expect_outcome(app.delete(&status_url).await, 404, "not-found").await;
    assert!(!app.data_dir.join("exports").join(&job).exists());
    // cancelling a job before it is done
    let running = kick_off(&app, "$export").await;
    assert_eq!(app.delete(&running).await.status().as_u16(), 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    expect_outcome(app.get(&running).await, 404, "not-found").await;
    let job = running.rsplit('/').next().unwrap_or_default().to_string();
    assert!(!app.data_dir.join("exports").join(&job).exists());
}

async fn files_are_deleted_after_retention(backend: Backend) {
    let Some(app) = spawn(backend, 2).await else {
        return;
    };
    seed(&app).await;
    let status_url = kick_off(&app, "$export?_type=Patient").await;
    let manifest = wait_for(&app, &status_url).await;
    let file_url = manifest["output"][0]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let job = status_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let dir = app.data_dir.join("exports").join(&job);
    assert!(dir.exists());
    let mut gone = false;
    for _ in 0..100 {
        if app.get(&status_url).await.status().as_u16() == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the export outlived its retention");
    assert_eq!(app.get(&file_url).await.status().as_u16(), 404);
    assert!(!dir.exists(), "the files are deleted");
}

async fn export_round_trips_into_an_empty_server(backend: Backend) {
    let Some(source) = spawn(backend, 3600).await else {
        return;
    };
    seed(&source).await;
    source
        .put(
            "Encounter/e1",
            &json!({"resourceType":"Encounter","id":"e1","status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"subject":{"reference":"Patient/p1"}}),
        )
        .await;
    let types = "Patient,Practitioner,Observation,Condition,Encounter";
    let manifest = wait_for(
        &source,
        &kick_off(&source, &format!("$export?_type={types}")).await,
    )
    .await;
    let files = download(&source, &manifest).await;
    let Some(target) = spawn(backend, 3600).await else {
        return;
    };
    for resource_type in types.split(',') {
        assert_eq!(search_total(&target, resource_type).await, 0);
    }
    // each file as one transaction of PUTs
    for (resource_type, resources) in &files {
        let entries: Vec<Value> = resources
            .iter()
            .map(|r| {
                json!({
                    "resource": r,
                    "request": { "method": "PUT", "url": format!("{resource_type}/{}", r["id"].as_str().unwrap_or_default()) }
                })
            })
            .collect();
        let response = target
            .post(
                "",
                &json!({"resourceType":"Bundle","type":"transaction","entry":entries}),
            )
            .await;
        assert_eq!(response.status().as_u16(), 200, "{}", body(response).await);
    }
    for resource_type in types.split(',') {
        assert_eq!(
            search_total(&target, resource_type).await,
            search_total(&source, resource_type).await,
            "{resource_type}"
        );
    }
    let mut original = body(source.get("Observation/o1").await).await;
    let mut copied = body(target.get("Observation/o1").await).await;
    original["meta"] = Value::Null;
    copied["meta"] = Value::Null;
    assert_eq!(original, copied);
    // and the copy exports the same again
    let again = wait_for(
        &target,
        &kick_off(&target, &format!("$export?_type={types}")).await,
    )
    .await;
    assert_eq!(counts(&again), counts(&manifest));
}

/// A server process that can be killed.
struct Node {
    child: Child,
    base: String,
}

impl Node {
    async fn start(database_url: &str, data_dir: &std::path::Path, workers: &str) -> Node {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        let child = Command::new(env!("CARGO_BIN_EXE_pivot-fhir"))
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                database_url,
                "--export-workers",
                workers,
                "--export-poll-ms",
                "50",
                "--data-dir",
            ])
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start the server: {err}"));
        let node = Node {
            child,
            base: format!("http://127.0.0.1:{port}/fhir"),
        };
        for _ in 0..200 {
            if reqwest::get(format!("http://127.0.0.1:{port}/health/ready"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not become ready");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL: no shutdown
        let _ = self.child.wait();
    }
}

async fn a_queued_job_survives_a_restart(backend: Backend) {
    // no server in this process has installed the TLS crypto provider the HTTP client needs
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let data = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let (database_url, schema) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", data.path().join("restart.db").display()),
            None,
        ),
        Backend::Postgres => {
            use diesel::connection::SimpleConnection;
            use diesel::{Connection, PgConnection};
            let Some(url) = postgres_url() else { return };
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            let mut conn = PgConnection::establish(&url).unwrap_or_else(|err| panic!("{err}"));
            conn.batch_execute(&format!("CREATE SCHEMA {schema}"))
                .unwrap_or_else(|err| panic!("{err}"));
            let separator = if url.contains('?') { '&' } else { '?' };
            (
                format!("{url}{separator}options=-c%20search_path%3D{schema}"),
                Some((url, schema)),
            )
        }
    };
    let token = token_for(data.path(), "system/*.cruds", None, None);
    // a node that takes kick-offs but runs no exports, killed with the job queued
    let first = Node::start(&database_url, data.path(), "0").await;
    for n in 0..30 {
        let response = send(
            Client::new()
                .put(format!("{}/Patient/r{n}", first.base))
                .bearer_auth(&token)
                .header("Content-Type", "application/fhir+json")
                .body(json!({"resourceType":"Patient","id":format!("r{n}")}).to_string()),
        )
        .await;
        assert_eq!(response.status().as_u16(), 201);
    }
    let started = as_token(
        &token,
        Method::GET,
        &format!("{}/$export?_type=Patient", first.base),
    )
    .await;
    assert_eq!(started.status().as_u16(), 202);
    let job = header(&started, "content-location")
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let queued = as_token(
        &token,
        Method::GET,
        &format!("{}/_export/{job}", first.base),
    )
    .await;
    assert_eq!(queued.status().as_u16(), 202);
    assert_eq!(header(&queued, "x-progress"), "queued");
    drop(first);
    // a new node picks the job up
    let second = Node::start(&database_url, data.path(), "1").await;
    let mut manifest = Value::Null;
    for _ in 0..300 {
        let response = as_token(
            &token,
            Method::GET,
            &format!("{}/_export/{job}", second.base),
        )
        .await;
        if response.status().as_u16() == 200 {
            manifest = body(response).await;
            break;
        }
        assert_eq!(response.status().as_u16(), 202);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        counts(&manifest),
        BTreeMap::from([("Patient".to_string(), 30)])
    );
    let url = manifest["output"][0]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let text = as_token(&token, Method::GET, &url)
        .await
        .text()
        .await
        .unwrap_or_default();
    assert_eq!(text.lines().count(), 30);
    drop(second);
    if let Some((url, schema)) = schema {
        use diesel::connection::SimpleConnection;
        use diesel::{Connection, PgConnection};
        if let Ok(mut conn) = PgConnection::establish(&url) {
            let _ = conn.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

/// Sets columns of the job row, as a node that died mid-job left it.
fn set_job(store: &pivot_fhir::store::Store, id: &str, assignments: &str) {
    use diesel::RunQueryDsl;
    let sql = format!("UPDATE jobs SET {assignments} WHERE id = '{id}'");
    store
        .blocking_write(|conn| {
            diesel::sql_query(&sql).execute(conn)?;
            Ok::<_, pivot_fhir::store::StoreError>(())
        })
        .unwrap_or_else(|err| panic!("{err}"));
}

async fn a_dead_nodes_job_is_taken_over_after_its_lease(backend: Backend) {
    // this node takes kick-offs but runs no exports
    let Some(app) = TestApp::spawn_with(backend, |settings| {
        settings.exports.export_workers = 0;
    })
    .await
    else {
        return;
    };
    seed(&app).await;
    let status_url = kick_off(&app, "$export?_type=Patient,Observation").await;
    let job = status_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    // another node was running it, had finished Patient, and died in Observation
    let dir = app.data_dir.join("exports").join(&job);
    std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("{err}"));
    let patients = body(app.get("Patient?_count=100").await).await;
    let lines: Vec<String> = patients["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"].to_string())
        .collect();
    assert_eq!(lines.len(), 3);
    std::fs::write(dir.join("Patient.ndjson"), lines.join("\n") + "\n")
        .unwrap_or_else(|err| panic!("{err}"));
    std::fs::write(dir.join("Observation.ndjson.dead.part"), "{\"half\":")
        .unwrap_or_else(|err| panic!("{err}"));
    let store = pivot_fhir::store::Store::open(&app.database_url, 2)
        .unwrap_or_else(|err| panic!("{err:#}"));
    let far_future = pivot_fhir::fhir::instant::now_micros() + 3_600_000_000;
    set_job(
        &store,
        &job,
        &format!(
            "status = 'running', cursor = 1, processed = 3, \
             result = '[{{\"type\":\"Patient\",\"count\":3}}]', updated_at = {far_future}"
        ),
    );
    // a second node with a 1-second lease
    let mut settings = pivot_fhir::Settings::new("127.0.0.1:0", app.database_url.clone());
    settings.data_dir = Some(app.data_dir.clone());
    settings.workers = Some(1);
    settings.db_pool_size = 2;
    settings.exports.export_poll_ms = 50;
    settings.exports.export_lease_seconds = 1;
    let second = pivot_fhir::Application::build(&settings)
        .unwrap_or_else(|err| panic!("the second node did not start: {err:#}"));
    let second_handle = second.handle();
    tokio::spawn(second.run_until_stopped());
    // while the lease is held, nobody else runs the job
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = app.get(&status_url).await;
    assert_eq!(held.status().as_u16(), 202);
    assert_eq!(
        header(&held, "x-progress"),
        "1 of 2 types done, 3 resources"
    );
    let by_state = store
        .blocking(|conn| pivot_fhir::store::jobs::count_by_state(conn, "export"))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(by_state, vec![("running".to_string(), 1)]);
    // the lease runs out (its node is dead): the second node goes on from Observation
    let expired = pivot_fhir::fhir::instant::now_micros() - 60_000_000;
    set_job(&store, &job, &format!("updated_at = {expired}"));
    let manifest = wait_for(&app, &status_url).await;
    assert_eq!(
        counts(&manifest),
        BTreeMap::from([("Observation".to_string(), 5), ("Patient".to_string(), 3)])
    );
    let files = download(&app, &manifest).await;
    assert_eq!(files["Patient"].len(), 3);
    assert!(
        !dir.join("Observation.ndjson.dead.part").exists(),
        "leftovers removed"
    );
    let by_state = store
        .blocking(|conn| pivot_fhir::store::jobs::count_by_state(conn, "export"))
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(by_state, vec![("completed".to_string(), 1)]);
    second_handle.stop(false).await;
}

async fn a_large_group_is_exported_once_per_resource(backend: Backend) {
    let Some(app) = spawn(backend, 3600).await else {
        return;
    };
    // more members than one query takes (200), and an appointment of two members that fall
    // in different chunks
    let entries: Vec<Value> = (0..620)
        .map(|n| {
            json!({"resource":{"resourceType":"Patient","id":format!("m{n}")},
                   "request":{"method":"PUT","url":format!("Patient/m{n}")}})
        })
        .collect();
    let response = app
        .post(
            "",
            &json!({"resourceType":"Bundle","type":"transaction","entry":entries}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    app.put(
        "Patient/outsider",
        &json!({"resourceType":"Patient","id":"outsider"}),
    )
    .await;
    app.put(
        "Appointment/a1",
        &json!({"resourceType":"Appointment","id":"a1","status":"booked","participant":[
            {"actor":{"reference":"Patient/m3"},"status":"accepted"},
            {"actor":{"reference":"Patient/m610"},"status":"accepted"}]}),
    )
    .await;
    let members: Vec<Value> = (0..620)
        .map(|n| json!({"entity":{"reference":format!("Patient/m{n}")}}))
        .collect();
    app.put(
        "Group/big",
        &json!({"resourceType":"Group","id":"big","type":"person","actual":true,"member":members}),
    )
    .await;
    let manifest = wait_for(
        &app,
        &kick_off(&app, "Group/big/$export?_type=Patient,Appointment").await,
    )
    .await;
    assert_eq!(
        counts(&manifest),
        BTreeMap::from([("Appointment".to_string(), 1), ("Patient".to_string(), 620)])
    );
    let files = download(&app, &manifest).await;
    assert!(!ids(&files["Patient"]).contains("outsider"));
}
