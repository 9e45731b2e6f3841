//! Round trip of the official HL7 R4 examples and the program's own fixtures: nothing may be
//! lost: elements, extensions, primitive extensions (`_field`), decimal precision.

use std::path::Path;

use reqwest::Method;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{TestApp, send};

backend_tests!(official_and_program_examples_round_trip);

/// Official examples that break the R4 rules themselves, with the element they get wrong: the
/// server must refuse them and say where.
const INVALID_EXAMPLES: &[(&str, &str)] = &[
    // Questionnaire.item.linkId is 1..1, but nested items of this example have none.
    (
        "bundle-questionnaire.json",
        "Questionnaire.item[0].item[0].linkId",
    ),
];

/// A resource with the server-managed `meta.versionId` and `meta.lastUpdated` removed (and
/// `meta` itself when nothing else is in it).
fn without_server_meta(mut resource: Value) -> Value {
    if let Some(map) = resource.as_object_mut() {
        let empty = match map.get_mut("meta").and_then(Value::as_object_mut) {
            Some(meta) => {
                meta.shift_remove("versionId");
                meta.shift_remove("lastUpdated");
                meta.is_empty()
            }
            None => false,
        };
        if empty {
            map.shift_remove("meta");
        }
    }
    resource
}

async fn official_and_program_examples_round_trip(app: TestApp) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut failures = Vec::new();
    let mut count = 0;
    for folder in ["hl7-examples", "r4-examples", "program"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(folder))
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let Ok(original) = serde_json::from_str::<Value>(&text) else {
                failures.push(format!("{}: not JSON", file.display()));
                continue;
            };
            let resource_type = original["resourceType"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let (method, path) = match original["id"].as_str() {
                Some(id) => (Method::PUT, format!("{resource_type}/{id}")),
                None => (Method::POST, resource_type.clone()),
            };
            let response = send(
                app.request(method, &path)
                    .header("Content-Type", "application/fhir+json")
                    .body(text.clone()),
            )
            .await;
            let status = response.status().as_u16();
            let file_name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if let Some((_, expression)) =
                INVALID_EXAMPLES.iter().find(|(name, _)| *name == file_name)
            {
                let outcome = response.text().await.unwrap_or_default();
                if status != 400 || !outcome.contains(expression) {
                    failures.push(format!(
                        "{file_name}: expected 400 naming {expression}, got {status} {outcome}"
                    ));
                }
                continue;
            }
            if resource_type == "AuditEvent" {
                // the server's audit trail: clients read it, never write it
                if status != 405 {
                    failures.push(format!("{file_name}: expected 405, got {status}"));
                }
                continue;
            }
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if status != 200 && status != 201 {
                let outcome = response.text().await.unwrap_or_default();
                failures.push(format!("{}: {status} {outcome}", file.display()));
                continue;
            }
            let read_path = location
                .split("/_history")
                .next()
                .unwrap_or_default()
                .to_string();
            let stored: Value = send(app.request(Method::GET, &read_path))
                .await
                .json()
                .await
                .unwrap_or_default();
            let mut expected = without_server_meta(original.clone());
            if original["id"].is_null()
                && let (Some(map), Some(id)) = (expected.as_object_mut(), stored["id"].as_str())
            {
                map.insert("id".into(), Value::from(id));
            }
            let actual = without_server_meta(stored);
            if actual != expected {
                failures.push(format!("{}: changed in the round trip", file.display()));
            }
            count += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the examples failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(count >= 290, "only {count} examples ran");
}
