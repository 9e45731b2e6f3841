//! Conditional create, update and delete (http.html#ccreate, #cond-update, #cdelete), and the
//! race that many servers lose: concurrent conditional creates with the same criteria.

use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome, header, send};

backend_tests!(
    conditional_create,
    concurrent_conditional_creates_make_one_resource,
    conditional_update,
    conditional_delete
);

fn patient(value: &str) -> serde_json::Value {
    json!({"resourceType":"Patient","identifier":[{"system":"https://medicaid.example.gov/id","value":value}]})
}

async fn create_if_none_exist(app: &TestApp, value: &str) -> reqwest::Response {
    let request = app
        .request(Method::POST, "Patient")
        .header("Content-Type", "application/fhir+json")
        .header(
            "If-None-Exist",
            format!("identifier=https://medicaid.example.gov/id|{value}"),
        )
        .body(patient(value).to_string());
    send(request).await
}

async fn total(app: &TestApp, query: &str) -> i64 {
    body(app.get(&format!("{query}&_total=accurate")).await).await["total"]
        .as_i64()
        .unwrap_or(-1)
}

async fn conditional_create(app: TestApp) {
    let first = create_if_none_exist(&app, "A-1").await;
    assert_eq!(first.status().as_u16(), 201);
    let id = body(first).await["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let second = create_if_none_exist(&app, "A-1").await;
    assert_eq!(
        second.status().as_u16(),
        200,
        "a match returns the existing resource"
    );
    assert!(header(&second, "location").contains(&format!("/Patient/{id}/_history/1")));
    assert_eq!(body(second).await["id"], id);
    assert_eq!(total(&app, "Patient?identifier=A-1").await, 1);
    // several matches: 412
    app.post("Patient", &patient("B-1")).await;
    app.post("Patient", &patient("B-1")).await;
    expect_outcome(create_if_none_exist(&app, "B-1").await, 412, "conflict").await;
    // criteria the server cannot evaluate are refused, not ignored
    let request = app
        .request(Method::POST, "Patient")
        .header("If-None-Exist", "favourite-colour=blue")
        .json(&patient("C-1"));
    expect_outcome(send(request).await, 400, "not-supported").await;
}

async fn concurrent_conditional_creates_make_one_resource(app: TestApp) {
    let creates = (0..64).map(|_| create_if_none_exist(&app, "RACE-1"));
    let responses = futures::future::join_all(creates).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        63,
        "{statuses:?}"
    );
    assert_eq!(total(&app, "Patient?identifier=RACE-1").await, 1);
}

async fn conditional_update(app: TestApp) {
    let put = |value: &str, body: serde_json::Value| {
        let request = app
            .request(
                Method::PUT,
                &format!("Patient?identifier=https://medicaid.example.gov/id|{value}"),
            )
            .header("Content-Type", "application/fhir+json")
            .body(body.to_string());
        send(request)
    };
    // no match, no id: created with a server id
    let created = put("U-1", patient("U-1")).await;
    assert_eq!(created.status().as_u16(), 201);
    let id = body(created).await["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // one match: that resource is updated
    let mut changed = patient("U-1");
    changed["active"] = json!(true);
    let updated = put("U-1", changed.clone()).await;
    assert_eq!(updated.status().as_u16(), 200);
    let updated = body(updated).await;
    assert_eq!(
        (
            updated["id"].as_str(),
            updated["meta"]["versionId"].as_str()
        ),
        (Some(id.as_str()), Some("2"))
    );
    // one match but another id in the body: 400
    changed["id"] = json!("someone-else");
    expect_outcome(put("U-1", changed).await, 400, "invalid").await;
    // no match with a client id: update as create
    let mut with_id = patient("U-2");
    with_id["id"] = json!("u-2");
    assert_eq!(put("U-2", with_id).await.status().as_u16(), 201);
    assert_eq!(app.get("Patient/u-2").await.status().as_u16(), 200);
    // several matches: 412
    app.post("Patient", &patient("U-3")).await;
    app.post("Patient", &patient("U-3")).await;
    expect_outcome(put("U-3", patient("U-3")).await, 412, "conflict").await;
}

async fn conditional_delete(app: TestApp) {
    app.put(
        "Patient/d-1",
        &json!({"resourceType":"Patient","id":"d-1","identifier":[{"system":"s","value":"D-1"}]}),
    )
    .await;
    let response = app.delete("Patient?identifier=s|D-1").await;
    assert_eq!(response.status().as_u16(), 200);
    expect_outcome(app.get("Patient/d-1").await, 410, "deleted").await;
    assert_eq!(
        app.delete("Patient?identifier=s|D-1")
            .await
            .status()
            .as_u16(),
        200,
        "no match: nothing to do"
    );
    app.post(
        "Patient",
        &json!({"resourceType":"Patient","identifier":[{"system":"s","value":"D-2"}]}),
    )
    .await;
    app.post(
        "Patient",
        &json!({"resourceType":"Patient","identifier":[{"system":"s","value":"D-2"}]}),
    )
    .await;
    expect_outcome(
        app.delete("Patient?identifier=s|D-2").await,
        412,
        "conflict",
    )
    .await;
    assert_eq!(
        total(&app, "Patient?identifier=s|D-2").await,
        2,
        "nothing deleted"
    );
    expect_outcome(app.delete("Patient").await, 400, "required").await;
}
