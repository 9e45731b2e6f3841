//! Operability: the OpenAPI document (served and committed), `/metrics`, `X-Request-Id`.

use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{TestApp, body, header, send};

backend_tests!(
    the_committed_openapi_document_is_what_the_server_serves,
    metrics_count_requests_and_show_the_database,
    request_ids_are_echoed_or_generated
);

/// `openapi/openapi.json` is generated: with `PIVOT_UPDATE_OPENAPI=1` this test rewrites it.
async fn the_committed_openapi_document_is_what_the_server_serves(app: TestApp) {
    let response = send(app.client.get(format!("{}/openapi.json", app.root))).await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(header(&response, "content-type").starts_with("application/json"));
    let served = response.text().await.unwrap_or_default();
    assert_eq!(served, pivot_fhir::openapi::document_json());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json");
    if std::env::var("PIVOT_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &served).unwrap_or_else(|err| panic!("cannot write {path:?}: {err}"));
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == served,
        "openapi/openapi.json is stale: regenerate it with \
         `PIVOT_UPDATE_OPENAPI=1 cargo test --test api operability` (or `pivot-fhir openapi > openapi/openapi.json`)"
    );
    let document: serde_json::Value = serde_json::from_str(&served).unwrap_or_default();
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["paths"]["/fhir/{type}/{id}"]["put"].is_object());
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
}

fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
}

async fn metrics_count_requests_and_show_the_database(app: TestApp) {
    let patient = json!({"resourceType":"Patient","id":"m1","active":true});
    assert_eq!(app.put("Patient/m1", &patient).await.status().as_u16(), 201);
    for _ in 0..3 {
        assert_eq!(app.get("Patient/m1").await.status().as_u16(), 200);
    }
    assert_eq!(app.get("Patient/absent").await.status().as_u16(), 404);
    let metrics_url = format!("{}/metrics", app.root);
    // no token needed, like /health
    let response = send(reqwest::Client::new().get(&metrics_url)).await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(header(&response, "content-type").starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap_or_default();
    let read_ok =
        "pivot_http_requests_total{interaction=\"read\",resource_type=\"Patient\",status=\"200\"}";
    assert_eq!(sample(&text, read_ok), Some(3.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "pivot_http_requests_total{interaction=\"read\",resource_type=\"Patient\",status=\"404\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "pivot_http_requests_total{interaction=\"update\",resource_type=\"Patient\",status=\"201\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "pivot_http_request_duration_seconds_count{interaction=\"read\"}"
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &text,
            "pivot_http_request_duration_seconds_bucket{interaction=\"read\",le=\"+Inf\"}"
        ),
        Some(4.0)
    );
    assert_eq!(sample(&text, "pivot_database_up"), Some(1.0));
    assert_eq!(
        sample(&text, "pivot_subscription_outbox_pending"),
        Some(0.0)
    );
    assert!(
        sample(&text, "pivot_db_pool_max_connections{pool=\"readers\"}").is_some_and(|n| n >= 1.0)
    );
    assert!(text.contains("# TYPE pivot_jobs gauge"));
    // the counters move
    assert_eq!(app.get("Patient/m1").await.status().as_u16(), 200);
    let again = send(reqwest::Client::new().get(&metrics_url))
        .await
        .text()
        .await
        .unwrap_or_default();
    assert_eq!(sample(&again, read_ok), Some(4.0));
    // a job shows by kind and status
    let started = send(app.request(Method::POST, "Patient/$reindex")).await;
    assert_eq!(started.status().as_u16(), 202, "{}", body(started).await);
    let jobs = send(reqwest::Client::new().get(&metrics_url))
        .await
        .text()
        .await
        .unwrap_or_default();
    assert!(
        jobs.lines()
            .any(|l| l.starts_with("pivot_jobs{kind=\"reindex\"")),
        "{jobs}"
    );
    // every line is a comment or `name{labels} value`
    for line in jobs.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.rsplit(' ')
                .next()
                .is_some_and(|v| v.parse::<f64>().is_ok()),
            "{line}"
        );
    }
}

async fn request_ids_are_echoed_or_generated(app: TestApp) {
    let given = send(
        app.request(Method::GET, "metadata")
            .header("X-Request-Id", "trace-42"),
    )
    .await;
    assert_eq!(header(&given, "x-request-id"), "trace-42");
    let generated = app.get("Patient/none").await;
    assert_eq!(generated.status().as_u16(), 404);
    assert_eq!(header(&generated, "x-request-id").len(), 36);
    let forged = send(
        app.request(Method::GET, "metadata")
            .header("X-Request-Id", "a b c"),
    )
    .await;
    let id = header(&forged, "x-request-id");
    assert!(!id.is_empty() && id != "a b c");
    let health = send(app.client.get(format!("{}/health/ready", app.root))).await;
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(body(health).await["database"], "up");
}

backend_tests!(concurrent_reindex_calls_all_succeed);

/// Found by the API fuzz run: two first `$reindex` calls at once both inserted the shared
/// search-parameter version on PostgreSQL, and one answered 500.
async fn concurrent_reindex_calls_all_succeed(app: TestApp) {
    let calls = (0..8).map(|i| {
        let path = if i % 2 == 0 {
            "Patient/$reindex"
        } else {
            "$reindex"
        };
        send(app.request(Method::POST, path))
    });
    for response in futures::future::join_all(calls).await {
        assert_eq!(response.status().as_u16(), 202, "{}", body(response).await);
    }
}
