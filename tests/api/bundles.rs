//! batch and transaction Bundles (http.html#transaction, bundle.html#transaction).

use std::path::Path;

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome, send};

backend_tests!(
    transaction_rewrites_references_and_answers_in_order,
    failed_transaction_leaves_nothing_behind,
    conditional_references_and_entries,
    duplicate_entries_fail,
    batch_entries_are_independent,
    synthea_bundles_load_and_read_back,
    official_example_bundles,
);

async fn post_bundle(app: &TestApp, bundle: &Value) -> reqwest::Response {
    send(
        app.request(Method::POST, "")
            .header("Content-Type", "application/fhir+json")
            .body(bundle.to_string()),
    )
    .await
}

fn entry(full_url: &str, method: &str, url: &str, resource: Value) -> Value {
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": method, "url": url}})
}

async fn count(app: &TestApp, query: &str) -> i64 {
    let separator = if query.contains('?') { '&' } else { '?' };
    body(app.get(&format!("{query}{separator}_total=accurate")).await).await["total"]
        .as_i64()
        .unwrap_or(-1)
}

async fn transaction_rewrites_references_and_answers_in_order(app: TestApp) {
    app.put(
        "Patient/to-delete",
        &json!({"resourceType":"Patient","id":"to-delete"}),
    )
    .await;
    let patient = "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a";
    let condition = "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059";
    let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
        entry("urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", "GET", "ServiceRequest/sr-1", Value::Null),
        entry(condition, "POST", "Condition", json!({"resourceType":"Condition","subject":{"reference":patient},
            "extension":[{"url":"http://example.org/focus","valueReference":{"reference":patient}}],
            "evidence":[{"detail":[{"reference":"#obs"}]}],
            "contained":[{"resourceType":"Observation","id":"obs","status":"final","code":{"text":"x"},"subject":{"reference":patient}}]})),
        entry(patient, "POST", "Patient", json!({"resourceType":"Patient","name":[{"family":"Rivera"}],
            "text":{"status":"generated","div":format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"{patient}\">self</a></div>")}})),
        entry("http://example.org/fhir/ServiceRequest/sr-1", "PUT", "ServiceRequest/sr-1", json!({"resourceType":"ServiceRequest","id":"sr-1","status":"active","intent":"order",
            "subject":{"reference":patient},"reasonReference":[{"reference":condition}]})),
        entry("urn:uuid:5a3c0a52-ec0e-4d6f-8c2a-2b1a7e4d5f10", "DELETE", "Patient/to-delete", Value::Null),
    ]});
    let bundle_entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    let mut bundle = bundle;
    bundle["entry"][0]
        .as_object_mut()
        .map(|e| e.remove("resource"));
    bundle["entry"][4]
        .as_object_mut()
        .map(|e| e.remove("resource"));
    assert_eq!(bundle_entries.len(), 5);
    let response = post_bundle(&app, &bundle).await;
    assert_eq!(response.status().as_u16(), 200);
    let result = body(response).await;
    assert_eq!(result["type"], "transaction-response");
    let statuses: Vec<&str> = result["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["response"]["status"].as_str())
                .collect()
        })
        .unwrap_or_default();
    // request order; the GET ran after the PUT (GETs come last), so it sees sr-1
    assert_eq!(
        statuses,
        vec![
            "200 OK",
            "201 Created",
            "201 Created",
            "201 Created",
            "200 OK"
        ]
    );
    assert_eq!(result["entry"][0]["resource"]["id"], "sr-1");
    expect_outcome(app.get("Patient/to-delete").await, 410, "deleted").await;
    let patient_location = result["entry"][2]["response"]["location"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let patient_id = patient_location
        .split("/Patient/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string();
    let condition_location = result["entry"][1]["response"]["location"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let stored = body(
        app.get(
            condition_location
                .split("/_history")
                .next()
                .unwrap_or_default(),
        )
        .await,
    )
    .await;
    let expected = format!("Patient/{patient_id}");
    assert_eq!(stored["subject"]["reference"], expected);
    assert_eq!(
        stored["extension"][0]["valueReference"]["reference"], expected,
        "references in extensions"
    );
    assert_eq!(
        stored["contained"][0]["subject"]["reference"], expected,
        "references in contained resources"
    );
    assert_eq!(
        stored["evidence"][0]["detail"][0]["reference"], "#obs",
        "local references stay"
    );
    let request = body(app.get("ServiceRequest/sr-1").await).await;
    assert_eq!(request["subject"]["reference"], expected);
    let condition_id = condition_location
        .split("/Condition/")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_default();
    assert_eq!(
        request["reasonReference"][0]["reference"],
        format!("Condition/{condition_id}")
    );
    let patient = body(app.get(&format!("Patient/{patient_id}")).await).await;
    assert!(
        patient["text"]["div"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("href=\"Patient/{patient_id}\""))),
        "narrative links"
    );
    // the written resources are searchable and in history like single writes
    assert_eq!(
        count(&app, &format!("Condition?subject=Patient/{patient_id}")).await,
        1
    );
    let history = body(app.get(&format!("Patient/{patient_id}/_history")).await).await;
    assert_eq!(history["total"], 1);
}

async fn failed_transaction_leaves_nothing_behind(app: TestApp) {
    // the program's definitions are stored at start-up, before this test's requests
    let since = pivot_fhir::fhir::instant::format_instant(pivot_fhir::fhir::instant::now_micros());
    let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
        entry("urn:uuid:11111111-1111-4111-8111-111111111111", "POST", "Patient", json!({"resourceType":"Patient","name":[{"family":"Ghost"}]})),
        entry("urn:uuid:22222222-2222-4222-8222-222222222222", "PUT", "Organization/o1", json!({"resourceType":"Organization","id":"o1","name":"Org"})),
        entry("urn:uuid:33333333-3333-4333-8333-333333333333", "PUT", "Patient/p9", json!({"resourceType":"Patient","id":"p9"})),
    ]});
    let mut failing = bundle.clone();
    failing["entry"][2]["request"]["ifMatch"] = json!("W/\"4\"");
    let outcome = expect_outcome(post_bundle(&app, &failing).await, 412, "conflict").await;
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| d.starts_with("Bundle.entry[2]")),
        "{outcome}"
    );
    assert_eq!(count(&app, "Patient?family=ghost").await, 0);
    assert_eq!(app.get("Organization/o1").await.status().as_u16(), 404);
    let history = body(app.get(&format!("_history?_since={since}")).await).await;
    assert!(
        history["entry"].as_array().is_none_or(Vec::is_empty),
        "no version was kept"
    );
    // a structurally invalid resource in the last entry: 400 naming it, nothing kept
    let mut invalid = bundle.clone();
    invalid["entry"][2]["resource"]["birthDate"] = json!("not a date");
    let outcome = expect_outcome(post_bundle(&app, &invalid).await, 400, "value").await;
    assert_eq!(
        outcome["issue"][0]["expression"][0],
        "Bundle.entry[2].resource.birthDate"
    );
    assert_eq!(count(&app, "Patient?family=ghost").await, 0);
    // the same bundle without the failure commits
    assert_eq!(post_bundle(&app, &bundle).await.status().as_u16(), 200);
    assert_eq!(count(&app, "Patient?family=ghost").await, 1);
}

async fn conditional_references_and_entries(app: TestApp) {
    app.put("Patient/known", &json!({"resourceType":"Patient","id":"known","identifier":[{"system":"https://medicaid.example.gov/id","value":"MCD-9"}]})).await;
    let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
        entry("urn:uuid:44444444-4444-4444-8444-444444444444", "POST", "Observation", json!({"resourceType":"Observation","status":"final","code":{"text":"x"},
            "subject":{"reference":"Patient?identifier=https://medicaid.example.gov/id|MCD-9"}})),
    ]});
    let result = body(post_bundle(&app, &bundle).await).await;
    let location = result["entry"][0]["response"]["location"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let stored = body(
        app.get(location.split("/_history").next().unwrap_or_default())
            .await,
    )
    .await;
    assert_eq!(stored["subject"]["reference"], "Patient/known");
    let mut unmatched = bundle.clone();
    unmatched["entry"][0]["resource"]["subject"]["reference"] =
        json!("Patient?identifier=https://medicaid.example.gov/id|NOPE");
    expect_outcome(post_bundle(&app, &unmatched).await, 412, "conflict").await;
    // ifNoneExist: the second run matches and creates nothing; references follow the match
    let create = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"fullUrl":"urn:uuid:55555555-5555-4555-8555-555555555555","resource":{"resourceType":"Organization","name":"Bank","identifier":[{"system":"npi","value":"123"}]},
         "request":{"method":"POST","url":"Organization","ifNoneExist":"identifier=npi|123"}},
        entry("urn:uuid:66666666-6666-4666-8666-666666666666", "POST", "Task", json!({"resourceType":"Task","status":"requested","intent":"order",
            "owner":{"reference":"urn:uuid:55555555-5555-4555-8555-555555555555"}})),
    ]});
    let first = body(post_bundle(&app, &create).await).await;
    assert_eq!(first["entry"][0]["response"]["status"], "201 Created");
    let second = body(post_bundle(&app, &create).await).await;
    assert_eq!(second["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(
        first["entry"][0]["response"]["location"],
        second["entry"][0]["response"]["location"]
    );
    assert_eq!(count(&app, "Organization?identifier=npi|123").await, 1);
    let org_id = first["entry"][0]["response"]["location"]
        .as_str()
        .and_then(|l| l.split("/Organization/").nth(1))
        .and_then(|r| r.split('/').next())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        count(&app, &format!("Task?owner=Organization/{org_id}")).await,
        2
    );
}

async fn duplicate_entries_fail(app: TestApp) {
    let twice_full_url = json!({"resourceType":"Bundle","type":"transaction","entry":[
        entry("urn:uuid:77777777-7777-4777-8777-777777777777", "POST", "Patient", json!({"resourceType":"Patient"})),
        entry("urn:uuid:77777777-7777-4777-8777-777777777777", "POST", "Patient", json!({"resourceType":"Patient"})),
    ]});
    expect_outcome(post_bundle(&app, &twice_full_url).await, 400, "invalid").await;
    let twice_written = json!({"resourceType":"Bundle","type":"transaction","entry":[
        entry("http://x/Patient/a", "PUT", "Patient/a", json!({"resourceType":"Patient","id":"a"})),
        entry("http://y/Patient/a", "PUT", "Patient/a", json!({"resourceType":"Patient","id":"a","active":true})),
    ]});
    let outcome = expect_outcome(post_bundle(&app, &twice_written).await, 400, "invalid").await;
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| d.contains("more than one entry"))
    );
    assert_eq!(app.get("Patient/a").await.status().as_u16(), 404);
    let not_a_bundle = json!({"resourceType":"Bundle","type":"collection"});
    expect_outcome(post_bundle(&app, &not_a_bundle).await, 400, "value").await;
    let app_limit = TestApp::spawn_with(crate::helpers::Backend::Sqlite, |s| {
        s.max_bundle_entries = 1
    })
    .await;
    if let Some(small) = app_limit {
        expect_outcome(post_bundle(&small, &twice_written).await, 413, "too-costly").await;
    }
}

async fn batch_entries_are_independent(app: TestApp) {
    let batch = json!({"resourceType":"Bundle","type":"batch","entry":[
        entry("urn:uuid:88888888-8888-4888-8888-888888888888", "PUT", "Patient/b1", json!({"resourceType":"Patient","id":"b1"})),
        entry("urn:uuid:99999999-9999-4999-8999-999999999999", "PUT", "Patient/b2", json!({"resourceType":"Patient","id":"mismatch"})),
        {"request":{"method":"GET","url":"Patient/b1"}},
        {"request":{"method":"GET","url":"Patient?_id=b1"}},
        {"request":{"method":"GET","url":"Patient/missing"}},
    ]});
    let response = post_bundle(&app, &batch).await;
    assert_eq!(response.status().as_u16(), 200);
    let result = body(response).await;
    assert_eq!(result["type"], "batch-response");
    let statuses: Vec<&str> = result["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["response"]["status"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        statuses,
        vec![
            "201 Created",
            "400 Bad Request",
            "200 OK",
            "200 OK",
            "404 Not Found"
        ]
    );
    assert_eq!(
        result["entry"][1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(result["entry"][2]["resource"]["id"], "b1");
    assert_eq!(result["entry"][3]["resource"]["type"], "searchset");
    assert_eq!(app.get("Patient/b1").await.status().as_u16(), 200);
}

async fn synthea_bundles_load_and_read_back(app: TestApp) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthea");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files.iter().take(3) {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let bundle: Value = serde_json::from_str(&text).unwrap_or_default();
        let sent = bundle["entry"].as_array().map(Vec::len).unwrap_or(0);
        let response = send(
            app.request(Method::POST, "")
                .header("Content-Type", "application/fhir+json")
                .header("Prefer", "return=minimal")
                .body(text),
        )
        .await;
        assert_eq!(response.status().as_u16(), 200, "{}", file.display());
        let result = body(response).await;
        let entries = result["entry"].as_array().cloned().unwrap_or_default();
        assert_eq!(entries.len(), sent);
        assert!(
            entries
                .iter()
                .all(|e| e["response"]["status"] == "201 Created")
        );
        // every created resource reads back, with its references rewritten to ids on this server
        for created in entries.iter().take(40) {
            let location = created["response"]["location"].as_str().unwrap_or_default();
            let read = app
                .get(location.split("/_history").next().unwrap_or_default())
                .await;
            assert_eq!(read.status().as_u16(), 200);
            let text = read.text().await.unwrap_or_default();
            assert!(
                !text.contains("urn:uuid:"),
                "a urn:uuid reference survived: {location}"
            );
        }
        let patient = bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["resource"]["resourceType"] == "Patient")
            .cloned()
            .unwrap_or_default();
        let family = patient["resource"]["name"][0]["family"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let found = body(
            app.get(&format!(
                "Patient?family:exact={family}&_revinclude=Encounter:patient&_count=1"
            ))
            .await,
        )
        .await;
        let encounters = bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["resource"]["resourceType"] == "Encounter")
            .count();
        let included = found["entry"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|x| x["search"]["mode"] == "include")
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(
            included, encounters,
            "{family}: every Encounter points at the patient"
        );
    }
}

async fn official_example_bundles(app: TestApp) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bundles");
    for (file, expected) in [
        ("Bundle-hla-1.json", 200),
        ("Bundle-xds.json", 200),
        ("Bundle-bundle-request-medsallergies.json", 200),
        ("Bundle-bundle-request-simplesummary.json", 200),
        // a PUT to another server's absolute URL cannot be done here
        ("Bundle-ussg-fht.json", 400),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        let response = send(
            app.request(Method::POST, "")
                .header("Content-Type", "application/fhir+json")
                .body(text),
        )
        .await;
        assert_eq!(response.status().as_u16(), expected, "{file}");
        let result = body(response).await;
        if expected == 200 {
            assert!(
                result["type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("-response")),
                "{file}"
            );
            let statuses: Vec<String> = result["entry"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(|x| x["response"]["status"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                statuses.iter().all(|s| !s.starts_with('5')),
                "{file}: {statuses:?}"
            );
        }
    }
}
