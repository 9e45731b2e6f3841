//! create, read, vread, update, delete (http.html).

use serde_json::json;

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome, header};

backend_tests!(
    create_assigns_id_and_version,
    read_returns_the_stored_resource,
    update_makes_new_versions_and_can_create,
    update_checks_the_id,
    if_match_guards_updates,
    delete_then_read_is_gone,
    conditional_read,
    prefer_controls_the_write_response,
    decimals_and_primitive_extensions_round_trip,
);

async fn create_assigns_id_and_version(app: TestApp) {
    let response = app.post("Patient", &json!({"resourceType":"Patient","id":"ignored","meta":{"versionId":"9"},"active":true})).await;
    assert_eq!(response.status().as_u16(), 201);
    let location = header(&response, "location");
    let etag = header(&response, "etag");
    assert_eq!(etag, "W/\"1\"");
    assert!(!header(&response, "last-modified").is_empty());
    let created = body(response).await;
    let id = created["id"].as_str().unwrap_or_default().to_string();
    assert_ne!(id, "ignored", "the server assigns the id on create");
    assert_eq!(location, format!("{}/Patient/{id}/_history/1", app.base));
    assert_eq!(created["meta"]["versionId"], "1");
    assert!(
        created["meta"]["lastUpdated"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(created["active"], true);
}

async fn read_returns_the_stored_resource(app: TestApp) {
    let created = body(
        app.post(
            "Observation",
            &json!({"resourceType":"Observation","status":"final","code":{"text":"x"}}),
        )
        .await,
    )
    .await;
    let id = created["id"].as_str().unwrap_or_default();
    let response = app.get(&format!("Observation/{id}")).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(header(&response, "etag"), "W/\"1\"");
    assert!(header(&response, "content-type").starts_with("application/fhir+json"));
    assert_eq!(body(response).await, created);
    expect_outcome(
        app.get("Observation/does-not-exist").await,
        404,
        "not-found",
    )
    .await;
    expect_outcome(app.get("Observation/bad_id!").await, 400, "value").await;
    expect_outcome(app.get("Patientx/1").await, 404, "not-supported").await;
    // vread of the first version, and of one that does not exist
    let response = app.get(&format!("Observation/{id}/_history/1")).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(body(response).await, created);
    expect_outcome(
        app.get(&format!("Observation/{id}/_history/2")).await,
        404,
        "not-found",
    )
    .await;
    expect_outcome(
        app.get(&format!("Observation/{id}/_history/x")).await,
        404,
        "not-found",
    )
    .await;
}

async fn update_makes_new_versions_and_can_create(app: TestApp) {
    let patient = json!({"resourceType":"Patient","id":"p-1","active":true});
    let response = app.put("Patient/p-1", &patient).await;
    assert_eq!(response.status().as_u16(), 201, "update as create");
    assert_eq!(
        header(&response, "location"),
        format!("{}/Patient/p-1/_history/1", app.base)
    );
    let response = app
        .put(
            "Patient/p-1",
            &json!({"resourceType":"Patient","id":"p-1","active":false}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(header(&response, "etag"), "W/\"2\"");
    let updated = body(response).await;
    assert_eq!(updated["active"], false);
    assert_eq!(updated["meta"]["versionId"], "2");
    let first = body(app.get("Patient/p-1/_history/1").await).await;
    assert_eq!(first["active"], true);
    assert!(
        first["meta"]["lastUpdated"].as_str() < updated["meta"]["lastUpdated"].as_str(),
        "lastUpdated increases"
    );
}

async fn update_checks_the_id(app: TestApp) {
    let outcome = expect_outcome(
        app.put(
            "Patient/p-2",
            &json!({"resourceType":"Patient","id":"other"}),
        )
        .await,
        400,
        "invalid",
    )
    .await;
    assert_eq!(outcome["issue"][0]["expression"][0], "Patient.id");
    expect_outcome(
        app.put("Patient/p-2", &json!({"resourceType":"Patient"}))
            .await,
        400,
        "required",
    )
    .await;
    let outcome = expect_outcome(
        app.put(
            "Patient/p-2",
            &json!({"resourceType":"Observation","id":"p-2"}),
        )
        .await,
        400,
        "invalid",
    )
    .await;
    assert_eq!(outcome["issue"][0]["expression"][0], "resourceType");
    expect_outcome(app.get("Patient/p-2").await, 404, "not-found").await;
}

async fn if_match_guards_updates(app: TestApp) {
    app.put("Patient/m", &json!({"resourceType":"Patient","id":"m"}))
        .await;
    let stale = app
        .request(reqwest::Method::PUT, "Patient/m")
        .header("If-Match", "W/\"2\"")
        .json(&json!({"resourceType":"Patient","id":"m","active":true}));
    expect_outcome(crate::helpers::send(stale).await, 412, "conflict").await;
    let current = app
        .request(reqwest::Method::PUT, "Patient/m")
        .header("If-Match", "W/\"1\"")
        .json(&json!({"resourceType":"Patient","id":"m","active":true}));
    let response = crate::helpers::send(current).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(header(&response, "etag"), "W/\"2\"");
    let garbage = app
        .request(reqwest::Method::PUT, "Patient/m")
        .header("If-Match", "yesterday")
        .json(&json!({"resourceType":"Patient","id":"m"}));
    expect_outcome(crate::helpers::send(garbage).await, 400, "invalid").await;
    let missing = app
        .request(reqwest::Method::PUT, "Patient/nobody")
        .header("If-Match", "W/\"1\"")
        .json(&json!({"resourceType":"Patient","id":"nobody"}));
    expect_outcome(crate::helpers::send(missing).await, 412, "conflict").await;
    let delete_stale = app
        .request(reqwest::Method::DELETE, "Patient/m")
        .header("If-Match", "W/\"1\"");
    expect_outcome(crate::helpers::send(delete_stale).await, 412, "conflict").await;
}

async fn delete_then_read_is_gone(app: TestApp) {
    app.put(
        "Condition/c",
        &json!({"resourceType":"Condition","id":"c","subject":{"reference":"Patient/x"}}),
    )
    .await;
    let response = app.delete("Condition/c").await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(header(&response, "etag"), "W/\"2\"");
    assert_eq!(body(response).await["resourceType"], "OperationOutcome");
    let gone = app.get("Condition/c").await;
    assert_eq!(header(&gone, "etag"), "W/\"2\"");
    expect_outcome(gone, 410, "deleted").await;
    expect_outcome(app.get("Condition/c/_history/2").await, 410, "deleted").await;
    assert_eq!(
        app.get("Condition/c/_history/1").await.status().as_u16(),
        200,
        "old versions stay readable"
    );
    // deleting again, or deleting what never existed, succeeds and changes nothing
    assert_eq!(app.delete("Condition/c").await.status().as_u16(), 200);
    assert_eq!(app.delete("Condition/never").await.status().as_u16(), 200);
    let history = body(app.get("Condition/c/_history").await).await;
    assert_eq!(history["total"], 2);
    // a delete with Prefer: return=minimal has no body
    app.put(
        "Condition/d",
        &json!({"resourceType":"Condition","id":"d","subject":{"reference":"Patient/x"}}),
    )
    .await;
    let minimal = crate::helpers::send(
        app.request(reqwest::Method::DELETE, "Condition/d")
            .header("Prefer", "return=minimal"),
    )
    .await;
    assert_eq!(minimal.status().as_u16(), 204);
    // re-creating a deleted resource continues its history
    let response = app
        .put(
            "Condition/c",
            &json!({"resourceType":"Condition","id":"c","subject":{"reference":"Patient/y"}}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(header(&response, "etag"), "W/\"3\"");
}

async fn conditional_read(app: TestApp) {
    let response = app
        .put("Patient/cr", &json!({"resourceType":"Patient","id":"cr"}))
        .await;
    let last_modified = header(&response, "last-modified");
    let request = app
        .request(reqwest::Method::GET, "Patient/cr")
        .header("If-None-Match", "W/\"1\"");
    let response = crate::helpers::send(request).await;
    assert_eq!(response.status().as_u16(), 304);
    assert_eq!(header(&response, "etag"), "W/\"1\"");
    let request = app
        .request(reqwest::Method::GET, "Patient/cr")
        .header("If-None-Match", "W/\"0\"");
    assert_eq!(crate::helpers::send(request).await.status().as_u16(), 200);
    let request = app
        .request(reqwest::Method::GET, "Patient/cr")
        .header("If-Modified-Since", &last_modified);
    assert_eq!(crate::helpers::send(request).await.status().as_u16(), 304);
    let request = app
        .request(reqwest::Method::GET, "Patient/cr")
        .header("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT");
    assert_eq!(crate::helpers::send(request).await.status().as_u16(), 200);
}

async fn prefer_controls_the_write_response(app: TestApp) {
    let patient = json!({"resourceType":"Patient","active":true});
    let minimal = app
        .request(reqwest::Method::POST, "Patient")
        .header("Prefer", "return=minimal")
        .json(&patient);
    let response = crate::helpers::send(minimal).await;
    assert_eq!(response.status().as_u16(), 201);
    assert!(!header(&response, "location").is_empty());
    assert!(response.text().await.unwrap_or_default().is_empty());
    let outcome = app
        .request(reqwest::Method::POST, "Patient")
        .header("Prefer", "return=OperationOutcome")
        .json(&patient);
    let response = crate::helpers::send(outcome).await;
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(body(response).await["resourceType"], "OperationOutcome");
    let representation = app
        .request(reqwest::Method::POST, "Patient")
        .header("Prefer", "return=representation")
        .json(&patient);
    assert_eq!(
        body(crate::helpers::send(representation).await).await["resourceType"],
        "Patient"
    );
}

async fn decimals_and_primitive_extensions_round_trip(app: TestApp) {
    let text = r#"{"resourceType":"Observation","id":"dec","status":"final","code":{"text":"w"},"valueQuantity":{"value":1.50,"_value":{"extension":[{"url":"http://x","valueDecimal":0.000}]}},"component":[{"code":{"text":"big"},"valueQuantity":{"value":123456789012345678901234567890.123456789}}]}"#;
    let request = app
        .request(reqwest::Method::PUT, "Observation/dec")
        .header("Content-Type", "application/fhir+json")
        .body(text);
    assert_eq!(crate::helpers::send(request).await.status().as_u16(), 201);
    let stored = app
        .get("Observation/dec")
        .await
        .text()
        .await
        .unwrap_or_default();
    assert!(stored.contains(r#""value":1.50"#), "{stored}");
    assert!(stored.contains(r#""valueDecimal":0.000"#), "{stored}");
    assert!(
        stored.contains("123456789012345678901234567890.123456789"),
        "{stored}"
    );
}
