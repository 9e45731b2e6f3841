//! Concurrent writers of one resource: no update is lost, and `If-Match` lets exactly one win.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{TestApp, body, header, send};

backend_tests!(
    concurrent_updates_get_distinct_versions,
    if_match_races_have_one_winner
);

async fn concurrent_updates_get_distinct_versions(app: TestApp) {
    app.put(
        "Patient/busy",
        &json!({"resourceType":"Patient","id":"busy"}),
    )
    .await;
    let writers = (0..32).map(|i| {
        let request = app
            .request(Method::PUT, "Patient/busy")
            .header("Content-Type", "application/fhir+json")
            .body(json!({"resourceType":"Patient","id":"busy","name":[{"text":format!("writer {i}")}]}).to_string());
        async move { send(request).await }
    });
    let responses = futures::future::join_all(writers).await;
    let mut versions = BTreeSet::new();
    for response in responses {
        assert_eq!(response.status().as_u16(), 200);
        versions.insert(header(&response, "etag"));
    }
    assert_eq!(versions.len(), 32, "each update got its own version");
    let history = body(app.get("Patient/busy/_history?_count=100").await).await;
    assert_eq!(history["total"], 33);
    let current = body(app.get("Patient/busy").await).await;
    assert_eq!(current["meta"]["versionId"], "33");
}

async fn if_match_races_have_one_winner(app: TestApp) {
    app.put(
        "Patient/race",
        &json!({"resourceType":"Patient","id":"race"}),
    )
    .await;
    let racers = (0..16).map(|i| {
        let request = app
            .request(Method::PUT, "Patient/race")
            .header("Content-Type", "application/fhir+json")
            .header("If-Match", "W/\"1\"")
            .body(json!({"resourceType":"Patient","id":"race","name":[{"text":format!("racer {i}")}]}).to_string());
        async move { send(request).await.status().as_u16() }
    });
    let statuses = futures::future::join_all(racers).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        15,
        "{statuses:?}"
    );
    let current = body(app.get("Patient/race").await).await;
    assert_eq!(current["meta"]["versionId"], "2");
}
