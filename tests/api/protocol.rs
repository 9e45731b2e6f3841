//! The protocol around the interactions: formats, media types, strict parsing, limits, routes,
//! health and the CapabilityStatement.

use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, body, expect_outcome, header, send};

backend_tests!(
    content_negotiation,
    strict_parsing_names_the_element,
    unknown_routes_and_methods,
    health_and_capabilities
);

async fn content_negotiation(app: TestApp) {
    app.put("Patient/f", &json!({"resourceType":"Patient","id":"f"}))
        .await;
    for accept in [
        "application/fhir+json",
        "application/json",
        "*/*",
        "text/html,application/xhtml+xml,*/*;q=0.8",
    ] {
        let response = send(
            app.request(Method::GET, "Patient/f")
                .header("Accept", accept),
        )
        .await;
        assert_eq!(response.status().as_u16(), 200, "{accept}");
    }
    let response = send(
        app.request(Method::GET, "Patient/f")
            .header("Accept", "application/json"),
    )
    .await;
    assert!(header(&response, "content-type").starts_with("application/json"));
    expect_outcome(
        send(
            app.request(Method::GET, "Patient/f")
                .header("Accept", "application/fhir+xml"),
        )
        .await,
        406,
        "not-supported",
    )
    .await;
    expect_outcome(app.get("Patient/f?_format=xml").await, 406, "not-supported").await;
    let response = send(
        app.request(Method::GET, "Patient/f?_format=json")
            .header("Accept", "application/fhir+xml"),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200, "_format wins over Accept");
    let pretty = app
        .get("Patient/f?_pretty=true")
        .await
        .text()
        .await
        .unwrap_or_default();
    assert!(pretty.contains("\n  \"id\""), "{pretty}");
    let xml = app
        .request(Method::POST, "Patient")
        .header("Content-Type", "application/fhir+xml")
        .body("<Patient xmlns=\"http://hl7.org/fhir\"/>");
    expect_outcome(send(xml).await, 415, "not-supported").await;
    let plain = app
        .request(Method::POST, "Patient")
        .header("Content-Type", "text/plain")
        .body("{}");
    expect_outcome(send(plain).await, 415, "not-supported").await;
}

async fn strict_parsing_names_the_element(app: TestApp) {
    // the program's definitions are stored at start-up, before this test's requests
    let since = pivot_fhir::fhir::instant::format_instant(pivot_fhir::fhir::instant::now_micros());
    let cases = [
        (
            json!({"resourceType":"Patient","name":[{"family":"X","nickname":"Y"}]}),
            "structure",
            "Patient.name[0].nickname",
        ),
        (
            json!({"resourceType":"Patient","active":"yes"}),
            "value",
            "Patient.active",
        ),
        (
            json!({"resourceType":"Patient","name":{"family":"X"}}),
            "structure",
            "Patient.name",
        ),
        (
            json!({"resourceType":"Patient","birthDate":"1990-02-30x"}),
            "value",
            "Patient.birthDate",
        ),
        (
            json!({"resourceType":"Observation","code":{"text":"x"}}),
            "required",
            "Observation.status",
        ),
        (
            json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueString":"a","valueBoolean":true}),
            "structure",
            "Observation.valueBoolean",
        ),
        (
            json!({"resourceType":"Patient","contained":[{"resourceType":"Organization","foo":1}]}),
            "structure",
            "Patient.contained[0].foo",
        ),
    ];
    for (resource, code, expression) in cases {
        let ty = resource["resourceType"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let outcome = expect_outcome(app.post(&ty, &resource).await, 400, code).await;
        let expressions: Vec<&str> = outcome["issue"]
            .as_array()
            .map(|i| {
                i.iter()
                    .filter_map(|x| x["expression"][0].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            expressions.contains(&expression),
            "{expression} not in {outcome}"
        );
    }
    let mismatch = expect_outcome(
        app.post("Patient", &json!({"resourceType":"Observation"}))
            .await,
        400,
        "invalid",
    )
    .await;
    assert_eq!(mismatch["issue"][0]["expression"][0], "resourceType");
    for raw in [
        &b"{not json"[..],
        b"[]",
        b"\xff\xfe{}",
        b"{\"resourceType\":\"Patient\",\"active\":true,\"active\":false}",
    ] {
        let request = app
            .request(Method::POST, "Patient")
            .header("Content-Type", "application/fhir+json")
            .body(raw.to_vec());
        let response = send(request).await;
        assert_eq!(
            response.status().as_u16(),
            400,
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
    let empty = app
        .request(Method::POST, "Patient")
        .header("Content-Type", "application/fhir+json");
    expect_outcome(send(empty).await, 400, "invalid").await;
    // nothing was stored by any of these
    let history = body(app.get(&format!("_history?_since={since}")).await).await;
    assert!(
        history["entry"].as_array().is_none_or(Vec::is_empty),
        "{history}"
    );
}

async fn unknown_routes_and_methods(app: TestApp) {
    expect_outcome(
        send(app.request(Method::POST, "Patient/1")).await,
        405,
        "not-supported",
    )
    .await;
    expect_outcome(
        send(app.request(Method::DELETE, "metadata")).await,
        405,
        "not-supported",
    )
    .await;
    expect_outcome(
        app.get("Patient/1/_history/1/extra").await,
        404,
        "not-found",
    )
    .await;
    expect_outcome(
        send(app.client.get(format!("{}/nothing-here", app.root))).await,
        404,
        "not-found",
    )
    .await;
    expect_outcome(
        app.post("Unknown", &json!({"resourceType":"Unknown"}))
            .await,
        404,
        "not-supported",
    )
    .await;
}

async fn health_and_capabilities(app: TestApp) {
    let live = send(app.client.get(format!("{}/health", app.root))).await;
    assert_eq!(live.status().as_u16(), 200);
    let ready = send(app.client.get(format!("{}/health/ready", app.root))).await;
    assert_eq!(ready.status().as_u16(), 200);
    let statement = body(app.get("metadata").await).await;
    assert_eq!(statement["resourceType"], "CapabilityStatement");
    assert_eq!(statement["fhirVersion"], "4.0.1");
    assert_eq!(statement["kind"], "instance");
    assert_eq!(statement["implementation"]["url"], app.base);
    let resources = statement["rest"][0]["resource"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(resources.len(), 146);
    let patient = resources
        .iter()
        .find(|r| r["type"] == "Patient")
        .cloned()
        .unwrap_or_default();
    let interactions: Vec<&str> = patient["interaction"]
        .as_array()
        .map(|i| i.iter().filter_map(|x| x["code"].as_str()).collect())
        .unwrap_or_default();
    for code in [
        "read",
        "vread",
        "update",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    ] {
        assert!(interactions.contains(&code), "{code}");
    }
    assert_eq!(patient["versioning"], "versioned");
    assert_eq!(patient["conditionalCreate"], true);
    assert_eq!(patient["conditionalDelete"], "single");
    let params: Vec<&str> = patient["searchParam"]
        .as_array()
        .map(|p| p.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    for name in [
        "identifier",
        "name",
        "birthdate",
        "_id",
        "_lastUpdated",
        "organization",
    ] {
        assert!(params.contains(&name), "{name} missing from {params:?}");
    }
    assert!(
        patient["searchRevInclude"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == "Patient:organization"))
    );
    assert_eq!(patient["updateCreate"], true);
    let system: Vec<&str> = statement["rest"][0]["interaction"]
        .as_array()
        .map(|i| i.iter().filter_map(|x| x["code"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        system,
        vec!["transaction", "batch", "history-system", "search-system"]
    );
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = TestApp::spawn_with(Backend::Sqlite, |settings| settings.max_body_bytes = 1024).await;
    let Some(app) = app else {
        panic!("server did not start")
    };
    let big = json!({"resourceType":"Patient","name":[{"family": "x".repeat(2000)}]});
    expect_outcome(app.post("Patient", &big).await, 413, "too-costly").await;
    let chunked = app
        .request(Method::POST, "Patient")
        .header("Content-Type", "application/fhir+json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(vec![
            Ok::<_, std::io::Error>(big.to_string()),
        ])));
    expect_outcome(send(chunked).await, 413, "too-costly").await;
    assert_eq!(
        app.post("Patient", &json!({"resourceType":"Patient"}))
            .await
            .status()
            .as_u16(),
        201
    );
}

#[test]
fn non_loopback_addresses_and_unknown_schemes_are_refused() {
    let settings = pivot_fhir::Settings::new("0.0.0.0:8080", "sqlite://x.db");
    assert!(
        settings.bind_address().is_ok(),
        "with authorization any address is allowed"
    );
    let mut open = pivot_fhir::Settings::new("0.0.0.0:8080", "sqlite://x.db");
    open.auth = pivot_fhir::auth::AuthMode::None;
    let error = open
        .bind_address()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("refusing to listen on 0.0.0.0:8080 with --auth none"),
        "{error}"
    );
    open.bind = "[::1]:0".into();
    assert!(open.bind_address().is_ok());
    let error = pivot_fhir::store::Store::open("mysql://localhost/db", 1)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("unsupported scheme \"mysql\""), "{error}");
}
