//! `Patient/[id]/$everything` (patient-operation-everything.html): the patient's compartment
//! and what it refers to, `_type`, `_since`, `_count` paging, GET and POST, within the token's
//! scopes.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome, send, token_for};

backend_tests!(
    everything_returns_the_compartment_and_references,
    everything_pages_and_filters,
    everything_respects_scopes
);

/// Two patients, each with observations and a condition; p1's observations name a
/// practitioner as performer.
async fn seed(app: &TestApp) {
    for id in ["p1", "p2"] {
        let status = app
            .put(
                &format!("Patient/{id}"),
                &json!({"resourceType":"Patient","id":id,"active":true}),
            )
            .await
            .status();
        assert_eq!(status.as_u16(), 201);
    }
    app.put(
        "Practitioner/dr",
        &json!({"resourceType":"Practitioner","id":"dr","name":[{"family":"Ng"}]}),
    )
    .await;
    app.put(
        "Practitioner/unrelated",
        &json!({"resourceType":"Practitioner","id":"unrelated"}),
    )
    .await;
    for n in 0..5 {
        let observation = json!({
            "resourceType":"Observation","id":format!("o1-{n}"),"status":"final",
            "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code": if n % 2 == 0 {"sdoh"} else {"vital-signs"}}]}],
            "code":{"text":"x"},"subject":{"reference":"Patient/p1"},"performer":[{"reference":"Practitioner/dr"}]});
        app.put(&format!("Observation/o1-{n}"), &observation).await;
    }
    app.put("Observation/o2-0", &json!({"resourceType":"Observation","id":"o2-0","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p2"}})).await;
    app.put(
        "Condition/c1",
        &json!({"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"}}),
    )
    .await;
    app.put(
        "Condition/c2",
        &json!({"resourceType":"Condition","id":"c2","subject":{"reference":"Patient/p2"}}),
    )
    .await;
}

fn ids(bundle: &Value, mode: &str) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == mode)
        .filter_map(|e| {
            Some(format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str()?,
                e["resource"]["id"].as_str()?
            ))
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"].as_array().and_then(|links| {
        links
            .iter()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str().map(str::to_string))
    })
}

async fn everything_returns_the_compartment_and_references(app: TestApp) {
    seed(&app).await;
    let response = app.get("Patient/p1/$everything").await;
    assert_eq!(response.status().as_u16(), 200);
    let bundle = body(response).await;
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(
        ids(&bundle, "match"),
        set(&[
            "Patient/p1",
            "Observation/o1-0",
            "Observation/o1-1",
            "Observation/o1-2",
            "Observation/o1-3",
            "Observation/o1-4",
            "Condition/c1"
        ])
    );
    assert_eq!(
        bundle["entry"][0]["resource"]["id"], "p1",
        "the patient comes first"
    );
    assert_eq!(ids(&bundle, "include"), set(&["Practitioner/dr"]));
    assert!(next_link(&bundle).is_none(), "one page");
    // POST with a Parameters body
    let posted = app
        .post(
            "Patient/p1/$everything",
            &json!({"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Condition"}]}),
        )
        .await;
    assert_eq!(posted.status().as_u16(), 200);
    assert_eq!(ids(&body(posted).await, "match"), set(&["Condition/c1"]));
    expect_outcome(
        app.get("Patient/nobody/$everything").await,
        404,
        "not-found",
    )
    .await;
    let statement = body(app.get("metadata").await).await;
    let patient = statement["rest"][0]["resource"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["type"] == "Patient").cloned())
        .unwrap_or_default();
    assert!(
        patient["operation"]
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o["name"] == "everything"
                && o["definition"]
                    == "http://hl7.org/fhir/OperationDefinition/Patient-everything")),
        "{patient}"
    );
    expect_outcome(
        app.get("Patient/p1/$everything?_type=Nope").await,
        400,
        "value",
    )
    .await;
    expect_outcome(
        app.get("Patient/p1/$everything?_since=yesterday").await,
        400,
        "value",
    )
    .await;
    expect_outcome(
        app.get("Patient/p1/$everything?_count=x").await,
        400,
        "value",
    )
    .await;
}

async fn everything_pages_and_filters(app: TestApp) {
    seed(&app).await;
    // _count pages across types; the pages together are the whole compartment, once each
    let mut seen = BTreeSet::new();
    let mut pages = 0;
    let mut next = Some("Patient/p1/$everything?_count=3".to_string());
    while let Some(url) = next {
        let page = body(app.get(&url).await).await;
        let matched = ids(&page, "match");
        assert!(matched.len() <= 3, "{page}");
        for id in matched {
            assert!(seen.insert(id.clone()), "{id} twice");
        }
        next = next_link(&page);
        pages += 1;
        assert!(pages < 10);
    }
    assert_eq!(pages, 3, "7 resources in pages of 3");
    assert_eq!(seen.len(), 7);
    // _type
    let only = body(
        app.get("Patient/p1/$everything?_type=Patient,Condition")
            .await,
    )
    .await;
    assert_eq!(ids(&only, "match"), set(&["Patient/p1", "Condition/c1"]));
    assert!(
        ids(&only, "include").is_empty(),
        "_type limits included resources too"
    );
    // _since: only what changed after the instant
    let since = body(app.get("Observation/o1-4").await).await["meta"]["lastUpdated"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    app.put("Condition/c1", &json!({"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"},"note":[{"text":"changed"}]})).await;
    let url = format!(
        "Patient/p1/$everything?_since={}",
        since.replace('+', "%2B")
    );
    let changed = body(app.get(&url).await).await;
    assert_eq!(ids(&changed, "match"), set(&["Condition/c1"]), "{changed}");
}

async fn as_token(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    send(
        reqwest::Client::new()
            .request(Method::GET, format!("{}/{path}", app.base))
            .bearer_auth(token),
    )
    .await
}

async fn everything_respects_scopes(app: TestApp) {
    seed(&app).await;
    // a patient/ token reaches its own record only
    let own = token_for(&app.data_dir, "patient/*.rs", Some("p1"), None);
    let mine = body(as_token(&app, &own, "Patient/p1/$everything").await).await;
    assert_eq!(ids(&mine, "match").len(), 7, "{mine}");
    expect_outcome(
        as_token(&app, &own, "Patient/p2/$everything").await,
        404,
        "not-found",
    )
    .await;
    // types the scopes do not name are left out
    let typed = token_for(
        &app.data_dir,
        "patient/Patient.rs patient/Condition.rs",
        Some("p1"),
        None,
    );
    let limited = body(as_token(&app, &typed, "Patient/p1/$everything").await).await;
    assert_eq!(ids(&limited, "match"), set(&["Patient/p1", "Condition/c1"]));
    assert!(ids(&limited, "include").is_empty(), "no Practitioner scope");
    // a query-constrained scope limits its type to its query
    let constrained = token_for(
        &app.data_dir,
        "system/Patient.rs system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|sdoh",
        None,
        None,
    );
    let sdoh = body(as_token(&app, &constrained, "Patient/p1/$everything").await).await;
    assert_eq!(
        ids(&sdoh, "match"),
        set(&[
            "Patient/p1",
            "Observation/o1-0",
            "Observation/o1-2",
            "Observation/o1-4"
        ])
    );
    // no read of Patient: 403
    let no_patient = token_for(&app.data_dir, "system/Observation.rs", None, None);
    expect_outcome(
        as_token(&app, &no_patient, "Patient/p1/$everything").await,
        403,
        "forbidden",
    )
    .await;
}
