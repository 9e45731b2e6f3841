//! The audit trail: every interaction leaves an AuditEvent (who, client, what, when, outcome,
//! never content); writes record it in their own transaction; only administrators read it.

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome, send, token_for};

backend_tests!(
    every_interaction_is_audited_without_content,
    a_failed_transaction_leaves_no_write_rows,
    only_administrators_read_the_trail
);

async fn as_token(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}/{path}", app.base))
        .header("Authorization", format!("Bearer {token}"));
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/fhir+json")
            .body(body.to_string());
    }
    send(request).await
}

/// The trail's AuditEvents matching `query`, waiting briefly for rows that are queued.
async fn trail(app: &TestApp, query: &str, at_least: usize) -> Vec<Value> {
    for _ in 0..50 {
        let bundle = body(app.get(&format!("AuditEvent?{query}&_count=1000")).await).await;
        let events: Vec<Value> = bundle["entry"]
            .as_array()
            .map(|entries| entries.iter().map(|e| e["resource"].clone()).collect())
            .unwrap_or_default();
        if events.len() >= at_least {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("fewer than {at_least} audit events for {query}");
}

fn subtypes(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e["subtype"][0]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

async fn every_interaction_is_audited_without_content(app: TestApp) {
    let clinician = token_for(
        &app.data_dir,
        "user/*.cruds",
        None,
        Some("Practitioner/dr-a"),
    );
    let patient = json!({"resourceType":"Patient","id":"p1","name":[{"family":"Quiñonez-Secret"}]});
    assert_eq!(
        as_token(&app, &clinician, Method::PUT, "Patient/p1", Some(patient))
            .await
            .status()
            .as_u16(),
        201
    );
    assert_eq!(
        as_token(&app, &clinician, Method::GET, "Patient/p1", None)
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        as_token(&app, &clinician, Method::GET, "Patient/p1/_history/1", None)
            .await
            .status()
            .as_u16(),
        200
    );
    let search = as_token(
        &app,
        &clinician,
        Method::GET,
        "Patient?family=Quinonez",
        None,
    )
    .await;
    assert_eq!(search.status().as_u16(), 200);
    let update = json!({"resourceType":"Patient","id":"p1","active":true});
    assert_eq!(
        as_token(&app, &clinician, Method::PUT, "Patient/p1", Some(update))
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        as_token(&app, &clinician, Method::DELETE, "Patient/p1", None)
            .await
            .status()
            .as_u16(),
        200
    );
    // a refused request is audited too, with its outcome
    let nobody = send(reqwest::Client::new().get(format!("{}/Patient/p1", app.base))).await;
    assert_eq!(nobody.status().as_u16(), 401);

    let events = trail(&app, "entity=Patient/p1", 6).await;
    assert_eq!(
        subtypes(&events),
        ["update", "read", "vread", "update", "delete", "read"],
        "{events:#?}"
    );
    let created = &events[0];
    assert_eq!(created["resourceType"], "AuditEvent");
    assert_eq!(created["action"], "U");
    assert_eq!(created["outcome"], "0");
    assert_eq!(created["agent"][0]["who"]["reference"], "Practitioner/dr-a");
    assert_eq!(created["agent"][0]["altId"], "test-client");
    assert_eq!(created["agent"][0]["requestor"], true);
    assert_eq!(
        created["entity"][0]["what"]["reference"],
        "Patient/p1/_history/1"
    );
    assert_eq!(events[4]["action"], "D");
    assert_eq!(
        events[4]["entity"][0]["what"]["reference"],
        "Patient/p1/_history/3"
    );
    let refused = &events[5];
    assert_eq!(refused["outcome"], "4");
    assert_eq!(refused["outcomeDesc"], "HTTP 401");
    assert_eq!(refused["agent"][0]["altId"], "unauthenticated");

    // the search: its query is kept (base64, as AuditEvent.entity.query is), in the database only
    let searches = trail(&app, "subtype=search-type&entity-type=Patient", 1).await;
    let query = searches[0]["entity"][0]["query"]
        .as_str()
        .unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(query)
        .unwrap_or_default();
    assert_eq!(String::from_utf8_lossy(&decoded), "family=Quinonez");

    // never the content
    let everything = body(app.get("AuditEvent?_count=1000").await)
        .await
        .to_string();
    assert!(
        !everything.contains("Secret"),
        "resource content in the trail"
    );

    // search by agent, client, action, outcome and date; paging; read by id
    assert_eq!(trail(&app, "agent=Practitioner/dr-a", 6).await.len(), 6);
    assert_eq!(trail(&app, "action=D", 1).await.len(), 1);
    assert_eq!(trail(&app, "outcome=4&entity=Patient/p1", 1).await.len(), 1);
    assert_eq!(
        trail(
            &app,
            "date=ge2020-01-01&altid=test-client&entity=Patient/p1",
            5
        )
        .await
        .len(),
        5
    );
    let none = body(app.get("AuditEvent?date=lt2020-01-01").await).await;
    assert!(none["entry"].as_array().is_none_or(|e| e.is_empty()));
    let page = body(app.get("AuditEvent?entity=Patient/p1&_count=2").await).await;
    let next = page["link"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["relation"] == "next"))
        .and_then(|l| l["url"].as_str())
        .unwrap_or_default()
        .to_string();
    let second = body(app.get(&next).await).await;
    assert_eq!(
        second["entry"][0]["resource"]["subtype"][0]["code"],
        "vread"
    );
    assert_eq!(second["entry"][0]["resource"]["id"], events[2]["id"]);
    let id = events[0]["id"].as_str().unwrap_or_default();
    let read = body(app.get(&format!("AuditEvent/{id}")).await).await;
    assert_eq!(read, events[0]);
    expect_outcome(app.get("AuditEvent?family=x").await, 400, "invalid").await;
}

async fn a_failed_transaction_leaves_no_write_rows(app: TestApp) {
    let failing = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"resource":{"resourceType":"Patient","id":"t1"},"request":{"method":"PUT","url":"Patient/t1"}},
        {"resource":{"resourceType":"Patient","id":"t2"},"request":{"method":"PUT","url":"Patient/t2"},},
        {"request":{"method":"DELETE","url":"Patient/t3"}},
        {"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"}},
         "request":{"method":"PUT","url":"Observation/o1"},
         "fullUrl":"urn:uuid:0d8c6f39-3a7f-4a4b-a83a-5f4e0e0e0e01"},
        {"request":{"method":"GET","url":"Patient/t1"},"resource":{"resourceType":"Patient"}},
    ]});
    let response = app.post("", &failing).await;
    assert_eq!(response.status().as_u16(), 400);
    let succeeding = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"resource":{"resourceType":"Patient","id":"t1"},"request":{"method":"PUT","url":"Patient/t1"}},
        {"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},
    ]});
    assert_eq!(app.post("", &succeeding).await.status().as_u16(), 200);
    let transactions = trail(&app, "subtype=transaction", 2).await;
    assert_eq!(transactions[0]["outcome"], "4");
    assert_eq!(transactions[1]["outcome"], "0");
    let writes = trail(&app, "entity-type=Patient&subtype=create,update", 2).await;
    assert_eq!(subtypes(&writes), ["update", "create"]);
    assert_eq!(
        writes[0]["entity"][0]["what"]["reference"],
        "Patient/t1/_history/1"
    );
    assert_eq!(trail(&app, "entity=Patient/t2", 0).await.len(), 0);
}

async fn only_administrators_read_the_trail(app: TestApp) {
    app.put("Patient/p", &json!({"resourceType":"Patient","id":"p"}))
        .await;
    for (scope, patient, user) in [
        ("patient/*.rs", Some("p"), None),
        ("system/Patient.rs", None, None),
        ("system/AuditEvent.rs?action=R", None, None),
        ("system/*.rs", None, Some("Organization/food-bank")),
    ] {
        let token = token_for(&app.data_dir, scope, patient, user);
        let response = as_token(&app, &token, Method::GET, "AuditEvent", None).await;
        assert_eq!(response.status().as_u16(), 403, "{scope}");
    }
    let auditor = token_for(&app.data_dir, "system/AuditEvent.rs", None, None);
    assert_eq!(
        as_token(&app, &auditor, Method::GET, "AuditEvent", None)
            .await
            .status()
            .as_u16(),
        200
    );
    // nobody writes it
    let event = json!({"resourceType":"AuditEvent","type":{"code":"rest"},"recorded":"2026-01-01T00:00:00Z",
        "agent":[{"requestor":true}],"source":{"observer":{"display":"x"}}});
    expect_outcome(app.post("AuditEvent", &event).await, 405, "not-supported").await;
    expect_outcome(app.put("AuditEvent/1", &event).await, 405, "not-supported").await;
    expect_outcome(app.delete("AuditEvent/1").await, 405, "not-supported").await;
    let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"resource":event,"request":{"method":"POST","url":"AuditEvent"}}]});
    assert_eq!(app.post("", &bundle).await.status().as_u16(), 405);
    // the CapabilityStatement says so
    let metadata = body(app.get("metadata").await).await;
    let audit = metadata["rest"][0]["resource"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["type"] == "AuditEvent"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        audit["interaction"],
        json!([{"code":"read"},{"code":"search-type"}])
    );
}
