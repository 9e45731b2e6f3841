//! Custom SearchParameter resources take effect through `$reindex`, which also indexes the
//! resources already stored; the job is asynchronous and pollable.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome, header, send};

backend_tests!(a_new_search_parameter_works_after_reindex);

fn patient(id: &str, region: &str) -> serde_json::Value {
    json!({"resourceType":"Patient","id":id,"extension":[{"url":"https://pivot-fhir.example.org/fhir/StructureDefinition/test-region","valueCode":region}]})
}

async fn a_new_search_parameter_works_after_reindex(app: TestApp) {
    app.put("Patient/r1", &patient("r1", "region-3")).await;
    app.put("Patient/r2", &patient("r2", "region-5")).await;
    let bad = json!({"resourceType":"SearchParameter","url":"https://x/bad","name":"bad","status":"active","description":"x","code":"bad","base":["Patient"],"type":"token","expression":"Patient.("});
    expect_outcome(app.post("SearchParameter", &bad).await, 422, "invalid").await;
    let definition = json!({
        "resourceType":"SearchParameter","url":"https://pivot-fhir.example.org/fhir/SearchParameter/test-region","name":"TestRegion",
        "status":"active","description":"The patient's region","code":"test-region","base":["Patient"],"type":"token",
        "expression":"Patient.extension('https://pivot-fhir.example.org/fhir/StructureDefinition/test-region').value"});
    assert_eq!(
        app.post("SearchParameter", &definition)
            .await
            .status()
            .as_u16(),
        201
    );
    // not in force before $reindex
    let strict = send(
        app.request(Method::GET, "Patient?test-region=region-3")
            .header("Prefer", "handling=strict"),
    )
    .await;
    expect_outcome(strict, 400, "not-supported").await;
    let started = send(app.request(Method::POST, "$reindex")).await;
    assert_eq!(started.status().as_u16(), 202);
    let job = header(&started, "content-location");
    assert!(job.contains("/_job/"), "{job}");
    let mut done = false;
    for _ in 0..100 {
        let status = app.get(&job).await;
        match status.status().as_u16() {
            202 => assert!(!header(&status, "x-progress").is_empty()),
            200 => {
                let outcome = body(status).await;
                assert_eq!(outcome["issue"][0]["severity"], "information", "{outcome}");
                done = true;
                break;
            }
            other => panic!("job status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "the re-index job did not finish");
    let found = body(app.get("Patient?test-region=region-3").await).await;
    let ids: Vec<&str> = found["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["resource"]["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids, vec!["r1"], "existing resources were indexed");
    app.put("Patient/r3", &patient("r3", "region-3")).await;
    let found = body(app.get("Patient?test-region=region-3").await).await;
    assert_eq!(
        found["entry"].as_array().map(Vec::len),
        Some(2),
        "new writes use it too"
    );
    let statement = body(app.get("metadata").await).await;
    let listed = statement["rest"][0]["resource"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == "Patient")
        .any(|r| {
            r["searchParam"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x["name"] == "test-region"))
        });
    assert!(listed, "the CapabilityStatement lists it");
    expect_outcome(app.get("_job/no-such-job").await, 404, "not-found").await;
}
