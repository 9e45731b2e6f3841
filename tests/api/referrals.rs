//! The referral Task state machine of the Gravity SDOH IG, enforced by the server: moves by
//! party, refusals (409 naming both statuses, 403 for the wrong party or a field the owner does
//! not own, 422 for a missing reason or outcome), the server-kept executionPeriod, and the
//! ServiceRequest following its Tasks, over update, PATCH and Bundles.

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome, send, token_for};

backend_tests!(
    the_owner_and_the_requester_move_a_referral_along,
    a_rejected_referral_keeps_its_request_open,
    the_requester_cancels_and_the_request_is_revoked,
    illegal_moves_are_refused_everywhere,
    worklists_find_inboxes_open_loops_and_overdue_referrals
);

pub const ORG_TYPE: &str = "http://example.org/fhir/pivot/CodeSystem/pivot-organization-type";
pub const TEMPORARY_CODES: &str =
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes";

/// Tokens of the two parties: the referring clinician (a PractitionerRole of the clinic) and the
/// food bank (a CBO Organization).
pub struct Parties {
    pub clinician: String,
    pub food_bank: String,
}

/// The clinic, its clinician, the food bank, another CBO and a patient.
pub async fn set_up(app: &TestApp) -> Parties {
    for (id, kind) in [("bank", "cbo"), ("pantry", "cbo"), ("clinic", "practice")] {
        let response = app
            .put(
                &format!("Organization/{id}"),
                &json!({"resourceType":"Organization","id":id,"name":id,
            "type":[{"coding":[{"system":ORG_TYPE,"code":kind}]}]}),
            )
            .await;
        assert!(response.status().is_success());
    }
    app.put("PractitionerRole/dr", &json!({"resourceType":"PractitionerRole","id":"dr","organization":{"reference":"Organization/clinic"}})).await;
    app.put(
        "Patient/ana",
        &json!({"resourceType":"Patient","id":"ana","name":[{"family":"Rivera"}]}),
    )
    .await;
    Parties {
        clinician: token_for(
            &app.data_dir,
            "user/*.cruds",
            None,
            Some("PractitionerRole/dr"),
        ),
        food_bank: token_for(
            &app.data_dir,
            "user/*.cruds",
            None,
            Some("Organization/bank"),
        ),
    }
}

/// A referral (ServiceRequest + Task to `owner`) made in one transaction by `token`; returns
/// the ids (service request, task).
pub async fn refer(app: &TestApp, token: &str, owner: &str) -> (String, String) {
    refer_for(app, token, owner, None).await
}

/// `refer`, for the reason of a Condition.
pub async fn refer_for(
    app: &TestApp,
    token: &str,
    owner: &str,
    condition: Option<&str>,
) -> (String, String) {
    let mut bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"fullUrl":"urn:uuid:0b0e9f7c-8d5e-4d1e-9d0a-1f0e8b7c6a51","resource":{"resourceType":"ServiceRequest","status":"active","intent":"order",
            "category":[{"coding":[{"system":TEMPORARY_CODES,"code":"food-insecurity"}]}],
            "code":{"coding":[{"system":"http://snomed.info/sct","code":"467771000124109"}]},
            "subject":{"reference":"Patient/ana"},"requester":{"reference":"PractitionerRole/dr"},
            "performer":[{"reference":format!("Organization/{owner}")}],"authoredOn":"2026-11-20"},
         "request":{"method":"POST","url":"ServiceRequest"}},
        {"resource":{"resourceType":"Task","status":"requested","intent":"order",
            "code":{"coding":[{"system":"http://hl7.org/fhir/CodeSystem/task-code","code":"fulfill"}]},
            "focus":{"reference":"urn:uuid:0b0e9f7c-8d5e-4d1e-9d0a-1f0e8b7c6a51"},"for":{"reference":"Patient/ana"},
            "authoredOn":"2026-11-20","requester":{"reference":"PractitionerRole/dr"},
            "owner":{"reference":format!("Organization/{owner}")}},
         "request":{"method":"POST","url":"Task"}}]});
    if let Some(condition) = condition {
        bundle["entry"][0]["resource"]["reasonReference"] =
            json!([{"reference":format!("Condition/{condition}")}]);
    }
    let response = as_token(app, token, Method::POST, "", Some(bundle)).await;
    assert_eq!(response.status().as_u16(), 200, "the referral transaction");
    let answer = body(response).await;
    let id = |n: usize| {
        answer["entry"][n]["response"]["location"]
            .as_str()
            .and_then(|l| l.split('/').nth_back(2))
            .unwrap_or_default()
            .to_string()
    };
    (id(0), id(1))
}

pub async fn as_token(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let url = if path.is_empty() {
        app.base.clone()
    } else {
        format!("{}/{}", app.base, path.trim_start_matches('/'))
    };
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header("Authorization", format!("Bearer {token}"));
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/fhir+json")
            .body(body.to_string());
    }
    send(request).await
}

/// JSON Patch of a Task by `token`.
pub async fn patch(app: &TestApp, token: &str, task: &str, operations: Value) -> reqwest::Response {
    send(
        reqwest::Client::new()
            .patch(format!("{}/Task/{task}", app.base))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json-patch+json")
            .body(operations.to_string()),
    )
    .await
}

/// Moves `task` to `status` by `token`, with extra JSON Patch operations.
pub async fn move_to(
    app: &TestApp,
    token: &str,
    task: &str,
    status: &str,
    mut extra: Vec<Value>,
) -> reqwest::Response {
    extra.insert(0, json!({"op":"replace","path":"/status","value":status}));
    patch(app, token, task, Value::Array(extra)).await
}

pub fn reason(text: &str) -> Value {
    json!({"op":"add","path":"/statusReason","value":{"text":text}})
}

pub fn business_status(code: &str) -> Value {
    json!({"op":"add","path":"/businessStatus","value":{"coding":[{"system":"http://example.org/fhir/pivot/CodeSystem/pivot-task-business-status","code":code}]}})
}

pub fn outcome_of(procedure: &str) -> Value {
    json!({"op":"add","path":"/output","value":[{"type":{"coding":[{"system":TEMPORARY_CODES,"code":"resulting-activity"}]},
        "valueReference":{"reference":format!("Procedure/{procedure}")}}]})
}

/// The food bank records what it did.
pub async fn record_procedure(app: &TestApp, parties: &Parties, request: &str) -> String {
    let response = as_token(app, &parties.food_bank, Method::POST, "Procedure", Some(json!({"resourceType":"Procedure","status":"completed",
        "code":{"coding":[{"system":"http://snomed.info/sct","code":"710925007"}]},"subject":{"reference":"Patient/ana"},
        "basedOn":[{"reference":format!("ServiceRequest/{request}")}],"performedDateTime":"2026-11-24",
        "performer":[{"actor":{"reference":"Organization/bank"}}]}))).await;
    assert_eq!(response.status().as_u16(), 201, "the Procedure");
    body(response).await["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn status_of(app: &TestApp, path: &str) -> String {
    body(app.get(path).await).await["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn ok(response: reqwest::Response, what: &str) -> Value {
    let status = response.status().as_u16();
    let answer = body(response).await;
    assert_eq!(status, 200, "{what}: {answer}");
    answer
}

async fn the_owner_and_the_requester_move_a_referral_along(app: TestApp) {
    let parties = set_up(&app).await;
    let (request, task) = refer(&app, &parties.clinician, "bank").await;
    // acknowledged: the status stays requested
    ok(
        patch(
            &app,
            &parties.food_bank,
            &task,
            json!([business_status("received")]),
        )
        .await,
        "acknowledge",
    )
    .await;
    let accepted = ok(
        move_to(&app, &parties.food_bank, &task, "accepted", vec![]).await,
        "accept",
    )
    .await;
    assert!(
        accepted["executionPeriod"]["start"].is_string(),
        "{accepted}"
    );
    assert!(accepted["executionPeriod"].get("end").is_none());
    assert!(accepted["lastModified"].is_string());
    ok(
        move_to(&app, &parties.food_bank, &task, "in-progress", vec![]).await,
        "start",
    )
    .await;
    // completion needs an outcome, and one that exists
    expect_outcome(
        move_to(&app, &parties.food_bank, &task, "completed", vec![]).await,
        422,
        "invariant",
    )
    .await;
    expect_outcome(
        move_to(
            &app,
            &parties.food_bank,
            &task,
            "completed",
            vec![outcome_of("nothing-here")],
        )
        .await,
        422,
        "invariant",
    )
    .await;
    let procedure = record_procedure(&app, &parties, &request).await;
    let completed = ok(
        move_to(
            &app,
            &parties.food_bank,
            &task,
            "completed",
            vec![outcome_of(&procedure), business_status("service-delivered")],
        )
        .await,
        "complete",
    )
    .await;
    assert_eq!(
        completed["executionPeriod"]["start"], accepted["executionPeriod"]["start"],
        "the start is kept"
    );
    assert!(completed["executionPeriod"]["end"].is_string());
    // the request followed in the same transaction, and the referrer sees the outcome
    assert_eq!(
        status_of(&app, &format!("ServiceRequest/{request}")).await,
        "completed"
    );
    let seen = body(
        as_token(
            &app,
            &parties.clinician,
            Method::GET,
            &format!("Task?_id={task}&_include=Task:output&_include=Task:focus"),
            None,
        )
        .await,
    )
    .await;
    let mut types: Vec<&str> = seen["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["resource"]["resourceType"].as_str())
                .collect()
        })
        .unwrap_or_default();
    types.sort();
    assert_eq!(types, vec!["Procedure", "ServiceRequest", "Task"]);
    // every status is a version of its own
    let history = body(app.get(&format!("Task/{task}/_history")).await).await;
    let statuses: Vec<&str> = history["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["resource"]["status"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        statuses,
        vec![
            "completed",
            "in-progress",
            "accepted",
            "requested",
            "requested"
        ]
    );
}

async fn a_rejected_referral_keeps_its_request_open(app: TestApp) {
    let parties = set_up(&app).await;
    let (request, task) = refer(&app, &parties.clinician, "bank").await;
    expect_outcome(
        move_to(&app, &parties.food_bank, &task, "rejected", vec![]).await,
        422,
        "invariant",
    )
    .await;
    let rejected = ok(
        move_to(
            &app,
            &parties.food_bank,
            &task,
            "rejected",
            vec![reason("At capacity"), business_status("no-capacity")],
        )
        .await,
        "reject",
    )
    .await;
    assert!(rejected["executionPeriod"]["end"].is_string());
    assert!(rejected["executionPeriod"].get("start").is_none());
    assert_eq!(
        status_of(&app, &format!("ServiceRequest/{request}")).await,
        "active"
    );
    // re-routed with a new Task to another CBO
    let (_, other) = refer(&app, &parties.clinician, "pantry").await;
    assert_eq!(status_of(&app, &format!("Task/{other}")).await, "requested");
}

async fn the_requester_cancels_and_the_request_is_revoked(app: TestApp) {
    let parties = set_up(&app).await;
    let (request, task) = refer(&app, &parties.clinician, "bank").await;
    ok(
        move_to(&app, &parties.food_bank, &task, "accepted", vec![]).await,
        "accept",
    )
    .await;
    expect_outcome(
        move_to(&app, &parties.clinician, &task, "cancelled", vec![]).await,
        422,
        "invariant",
    )
    .await;
    let cancelled = ok(
        move_to(
            &app,
            &parties.clinician,
            &task,
            "cancelled",
            vec![reason("Patient moved away")],
        )
        .await,
        "cancel",
    )
    .await;
    assert!(cancelled["executionPeriod"]["end"].is_string());
    assert_eq!(
        status_of(&app, &format!("ServiceRequest/{request}")).await,
        "revoked"
    );
    // a closed referral stays closed
    let response = move_to(&app, &parties.food_bank, &task, "in-progress", vec![]).await;
    let outcome = expect_outcome(response, 409, "conflict").await;
    let text = outcome.to_string();
    assert!(
        text.contains("'cancelled'") && text.contains("'in-progress'"),
        "{text}"
    );
}

async fn illegal_moves_are_refused_everywhere(app: TestApp) {
    let parties = set_up(&app).await;
    let (_, task) = refer(&app, &parties.clinician, "bank").await;
    // the table has no requested -> completed: 409 naming both statuses
    let outcome = expect_outcome(
        move_to(&app, &parties.food_bank, &task, "completed", vec![]).await,
        409,
        "conflict",
    )
    .await;
    let text = outcome.to_string();
    assert!(
        text.contains("'requested'") && text.contains("'completed'"),
        "{text}"
    );
    // the requester may not accept; the owner may not change what it was asked to do
    expect_outcome(
        move_to(&app, &parties.clinician, &task, "accepted", vec![]).await,
        403,
        "forbidden",
    )
    .await;
    expect_outcome(
        patch(
            &app,
            &parties.food_bank,
            &task,
            json!([{"op":"replace","path":"/focus","value":{"reference":"ServiceRequest/other"}}]),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    // received is an acknowledgement, never a status
    expect_outcome(
        move_to(&app, &parties.food_bank, &task, "received", vec![]).await,
        422,
        "code-invalid",
    )
    .await;
    // another CBO is no party at all (and cannot even see the Task)
    let pantry = token_for(
        &app.data_dir,
        "user/*.cruds",
        None,
        Some("Organization/pantry"),
    );
    assert_eq!(
        move_to(&app, &pantry, &task, "accepted", vec![])
            .await
            .status()
            .as_u16(),
        404
    );
    // the same rules in an update and in a transaction, which keeps nothing
    let mut current = body(app.get(&format!("Task/{task}")).await).await;
    current["status"] = json!("completed");
    expect_outcome(
        as_token(
            &app,
            &parties.food_bank,
            Method::PUT,
            &format!("Task/{task}"),
            Some(current.clone()),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"resource":{"resourceType":"Patient","id":"kept-not","name":[{"family":"X"}]},"request":{"method":"PUT","url":"Patient/kept-not"}},
        {"resource":current,"request":{"method":"PUT","url":format!("Task/{task}")}}]});
    let outcome = expect_outcome(
        as_token(&app, &parties.clinician, Method::POST, "", Some(bundle)).await,
        409,
        "conflict",
    )
    .await;
    assert!(outcome.to_string().contains("Bundle.entry[1]"), "{outcome}");
    assert_eq!(app.get("Patient/kept-not").await.status().as_u16(), 404);
    let patch_entry = json!({"resourceType":"Bundle","type":"batch","entry":[
        {"resource":{"resourceType":"Parameters","parameter":[{"name":"operation","part":[
            {"name":"type","valueCode":"replace"},{"name":"path","valueString":"Task.status"},{"name":"value","valueCode":"accepted"}]}]},
         "request":{"method":"PATCH","url":format!("Task/{task}")}}]});
    let answer = body(
        as_token(
            &app,
            &parties.clinician,
            Method::POST,
            "",
            Some(patch_entry),
        )
        .await,
    )
    .await;
    assert!(
        answer["entry"][0]["response"]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("403")),
        "{answer}"
    );
    assert_eq!(status_of(&app, &format!("Task/{task}")).await, "requested");
    // a new referral starts as requested (or draft), and is the requester's to make
    let new = json!({"resourceType":"Task","status":"accepted","intent":"order","focus":{"reference":"ServiceRequest/x"},
        "code":{"coding":[{"system":"http://hl7.org/fhir/CodeSystem/task-code","code":"fulfill"}]},
        "for":{"reference":"Patient/ana"},"requester":{"reference":"PractitionerRole/dr"},"owner":{"reference":"Organization/bank"}});
    expect_outcome(
        as_token(
            &app,
            &parties.clinician,
            Method::POST,
            "Task",
            Some(new.clone()),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    let mut by_other = new.clone();
    by_other["status"] = json!("requested");
    by_other["requester"] = json!({"reference":"Organization/pantry"});
    expect_outcome(
        as_token(
            &app,
            &parties.clinician,
            Method::POST,
            "Task",
            Some(by_other),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
}

async fn worklists_find_inboxes_open_loops_and_overdue_referrals(app: TestApp) {
    const REGION: &str = "http://example.org/fhir/pivot/StructureDefinition/pivot-region";
    let region_system = "http://example.org/fhir/pivot/CodeSystem/pivot-region";
    for (patient, region) in [("in-3", "3"), ("in-5", "5")] {
        app.put(&format!("Patient/{patient}"), &json!({"resourceType":"Patient","id":patient,
            "extension":[{"url":REGION,"valueCodeableConcept":{"coding":[{"system":region_system,"code":region}]}}]})).await;
    }
    let long_ago = "2026-01-05T10:00:00Z";
    let recently = chrono::Utc::now().format("%Y-%m-%d").to_string();
    // (id, patient, owner, status, authored)
    let tasks = [
        ("old-open", "in-3", "bank", "requested", long_ago),
        ("old-working", "in-3", "pantry", "in-progress", long_ago),
        ("old-closed", "in-3", "bank", "completed", long_ago),
        ("new-open", "in-3", "bank", "requested", recently.as_str()),
        ("old-elsewhere", "in-5", "bank", "accepted", long_ago),
    ];
    for (id, patient, owner, status, authored) in tasks {
        let mut task = json!({"resourceType":"Task","id":id,"status":status,"intent":"order",
            "code":{"coding":[{"system":"http://hl7.org/fhir/CodeSystem/task-code","code":"fulfill"}]},
            "focus":{"reference":"ServiceRequest/sr"},"for":{"reference":format!("Patient/{patient}")},
            "authoredOn":authored,"requester":{"reference":"PractitionerRole/dr"},
            "owner":{"reference":format!("Organization/{owner}")}});
        if status == "completed" {
            task["output"] = json!([{"type":{"coding":[{"system":TEMPORARY_CODES,"code":"resulting-activity"}]},
                "valueCodeableConcept":{"text":"Food delivered"}}]);
        }
        let response = app.put(&format!("Task/{id}"), &task).await;
        assert_eq!(response.status().as_u16(), 201, "{}", body(response).await);
    }
    let ids = |bundle: Value| {
        let mut ids: Vec<String> = bundle["entry"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|x| x["resource"]["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(body(
            app.get("Task?owner=Organization/bank&status=requested")
                .await
        )
        .await),
        vec!["new-open", "old-open"]
    );
    assert_eq!(
        ids(body(
            app.get("Task?requester=PractitionerRole/dr&status:not=completed")
                .await
        )
        .await),
        vec!["new-open", "old-elsewhere", "old-open", "old-working"]
    );
    assert_eq!(
        ids(body(
            app.get("Task?_query=overdue-referrals&patient.region=3")
                .await
        )
        .await),
        vec!["old-open", "old-working"]
    );
    assert_eq!(
        ids(body(app.get("Task?_query=overdue-referrals").await).await),
        vec!["old-elsewhere", "old-open", "old-working"]
    );
    expect_outcome(
        app.get("Task?_query=everything").await,
        400,
        "not-supported",
    )
    .await;
    expect_outcome(
        app.get("Patient?_query=overdue-referrals").await,
        400,
        "not-supported",
    )
    .await;
}

mod closed_loop {
    //! The whole loop over HTTP, with real receivers on loopback standing in for the CBO's and
    //! the EHR's systems, subscribed to the referral-status topic (R4 backport).

    use std::time::Duration;

    use reqwest::Method;
    use serde_json::{Value, json};

    use super::{
        as_token, business_status, move_to, ok, outcome_of, patch, reason, record_procedure,
        refer_for, set_up,
    };
    use crate::helpers::{Backend, body};
    use crate::subscriptions::{Receiver, spawn, subscribe};

    const TOPIC: &str = "http://example.org/fhir/pivot/SubscriptionTopic/referral-status";
    const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        the_loop_closes(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if crate::helpers::postgres_url().is_none() {
            eprintln!("skipped: DATABASE_URL names no PostgreSQL server");
            return;
        }
        the_loop_closes(Backend::Postgres).await;
    }

    fn topic_subscription(filter: &str, endpoint: &str, content: &str) -> Value {
        json!({"resourceType":"Subscription","meta":{"profile":[format!("{BACKPORT}/backport-subscription")]},
            "status":"requested","reason":"Referral updates","criteria":TOPIC,
            "_criteria":{"extension":[{"url":format!("{BACKPORT}/backport-filter-criteria"),"valueString":filter}]},
            "channel":{"type":"rest-hook","endpoint":endpoint,"payload":"application/fhir+json",
                "_payload":{"extension":[{"url":format!("{BACKPORT}/backport-payload-content"),"valueCode":content}]},
                "header":["Authorization: Bearer receiver-secret"]}})
    }

    /// The Bundles a receiver got, in order.
    fn bundles(receiver: &Receiver) -> Vec<Value> {
        receiver
            .received()
            .iter()
            .map(|r| serde_json::from_str(&r.body).unwrap_or_default())
            .collect()
    }

    fn kind(bundle: &Value) -> String {
        parameter(&bundle["entry"][0]["resource"], "type")["valueCode"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The event notifications a receiver got, in order (after the handshake).
    fn notifications(receiver: &Receiver) -> Vec<Value> {
        let all = bundles(receiver);
        assert!(
            all.first().is_none_or(|b| kind(b) == "handshake"),
            "handshake first"
        );
        all.into_iter()
            .filter(|b| kind(b) == "event-notification")
            .collect()
    }

    fn parameter<'v>(status: &'v Value, name: &str) -> &'v Value {
        status["parameter"]
            .as_array()
            .and_then(|p| p.iter().find(|x| x["name"] == name))
            .unwrap_or(&Value::Null)
    }

    /// Event number, focus reference and (full-resource) focus status of a notification.
    fn event(notification: &Value) -> (String, String, String) {
        assert_eq!(notification["resourceType"], "Bundle");
        assert_eq!(notification["type"], "history");
        let status = &notification["entry"][0]["resource"];
        assert_eq!(status["resourceType"], "Parameters");
        assert_eq!(parameter(status, "topic")["valueCanonical"], TOPIC);
        assert_eq!(parameter(status, "type")["valueCode"], "event-notification");
        let since = parameter(status, "events-since-subscription-start")["valueString"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let parts = &parameter(status, "notification-event")["part"];
        let number = parts
            .as_array()
            .and_then(|p| p.iter().find(|x| x["name"] == "event-number"))
            .and_then(|x| x["valueString"].as_str())
            .unwrap_or_default();
        assert_eq!(number, since, "one event per notification");
        let focus = notification["entry"][1]["fullUrl"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let focus_status = notification["entry"][1]["resource"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (since, focus, focus_status)
    }

    async fn wait(receiver: &Receiver, count: usize) -> Vec<Value> {
        // and the handshake
        let got = receiver.wait_for(count + 1).await.len();
        assert!(got > count, "expected {count} notifications, got {got}");
        notifications(receiver)
    }

    async fn the_loop_closes(backend: Backend) {
        let Some(app) = spawn(backend, |_| {}).await else {
            return;
        };
        let parties = set_up(&app).await;
        let (cbo_system, ehr_system) = (Receiver::start(0), Receiver::start(0));
        // the program's administrator registers both systems' subscriptions
        let (_, cbo_subscription) = subscribe(
            &app,
            topic_subscription(
                "Task?owner=Organization/bank",
                &cbo_system.url("/cbo"),
                "id-only",
            ),
        )
        .await;
        assert_eq!(cbo_subscription["status"], "active", "{cbo_subscription}");
        let (_, ehr_subscription) = subscribe(
            &app,
            topic_subscription(
                "Task?requester=PractitionerRole/dr",
                &ehr_system.url("/ehr"),
                "full-resource",
            ),
        )
        .await;
        assert_eq!(ehr_subscription["status"], "active");
        for system in [&cbo_system, &ehr_system] {
            let handshake = &bundles(system)[0];
            assert_eq!(kind(handshake), "handshake");
            assert_eq!(
                parameter(
                    &handshake["entry"][0]["resource"],
                    "events-since-subscription-start"
                )["valueString"],
                "0"
            );
            assert_eq!(system.received()[0].authorization, "Bearer receiver-secret");
        }

        // screening, then the problem it shows
        let screening = ok_created(as_token(&app, &parties.clinician, Method::POST, "Observation", Some(json!({"resourceType":"Observation","status":"final",
            "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"survey"}]}],
            "code":{"coding":[{"system":"http://loinc.org","code":"88122-7"}]},"subject":{"reference":"Patient/ana"},
            "effectiveDateTime":"2026-11-20","valueCodeableConcept":{"coding":[{"system":"http://loinc.org","code":"LA28397-0"}]}}))).await).await;
        let condition = ok_created(as_token(&app, &parties.clinician, Method::POST, "Condition", Some(json!({"resourceType":"Condition",
            "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-category","code":"health-concern"}]}],
            "code":{"coding":[{"system":"http://snomed.info/sct","code":"733423003"}]},"subject":{"reference":"Patient/ana"},
            "evidence":[{"detail":[{"reference":format!("Observation/{screening}")}]}]}))).await).await;
        // the referral, in one transaction
        let (request, task) = refer_for(&app, &parties.clinician, "bank", Some(&condition)).await;
        let focus = format!("/Task/{task}");

        // the CBO is told, and reads what it was sent
        let cbo = wait(&cbo_system, 1).await;
        let (number, told, _) = event(&cbo[0]);
        assert_eq!(number, "1");
        assert!(told.ends_with(&focus), "{told}");
        assert!(cbo[0]["entry"][1].get("resource").is_none(), "id-only");
        assert_eq!(
            cbo_system.received()[0].authorization,
            "Bearer receiver-secret"
        );
        let inbox = body(
            as_token(
                &app,
                &parties.food_bank,
                Method::GET,
                &format!("Task?_id={task}&_include=Task:focus"),
                None,
            )
            .await,
        )
        .await;
        assert_eq!(inbox["entry"].as_array().map(Vec::len), Some(2), "{inbox}");
        let worklist = body(
            as_token(
                &app,
                &parties.food_bank,
                Method::GET,
                "Task?owner=Organization/bank&status=requested",
                None,
            )
            .await,
        )
        .await;
        assert_eq!(worklist["total"], 1, "{worklist}");

        // acknowledged, accepted, in progress, completed with what was done
        ok(
            patch(
                &app,
                &parties.food_bank,
                &task,
                json!([business_status("received")]),
            )
            .await,
            "acknowledge",
        )
        .await;
        ok(
            move_to(&app, &parties.food_bank, &task, "accepted", vec![]).await,
            "accept",
        )
        .await;
        let worklist = body(
            as_token(
                &app,
                &parties.food_bank,
                Method::GET,
                "Task?owner=Organization/bank&status=requested",
                None,
            )
            .await,
        )
        .await;
        assert_eq!(worklist["total"], 0, "no longer in the inbox");
        ok(
            move_to(&app, &parties.food_bank, &task, "in-progress", vec![]).await,
            "start",
        )
        .await;
        let procedure = record_procedure(&app, &parties, &request).await;
        ok(
            move_to(
                &app,
                &parties.food_bank,
                &task,
                "completed",
                vec![outcome_of(&procedure), business_status("service-delivered")],
            )
            .await,
            "complete",
        )
        .await;

        // the referrer was told of every change, in order, and sees the outcome
        let ehr = wait(&ehr_system, 5).await;
        let events: Vec<(String, String, String)> = ehr.iter().map(event).collect();
        assert_eq!(
            events
                .iter()
                .map(|e| (e.0.as_str(), e.2.as_str()))
                .collect::<Vec<_>>(),
            vec![
                ("1", "requested"),
                ("2", "requested"),
                ("3", "accepted"),
                ("4", "in-progress"),
                ("5", "completed")
            ]
        );
        assert!(events.iter().all(|e| e.1.ends_with(&focus)));
        let last = &ehr[4]["entry"][1]["resource"];
        assert_eq!(
            last["output"][0]["valueReference"]["reference"],
            format!("Procedure/{procedure}")
        );
        let outcome = body(
            as_token(
                &app,
                &parties.clinician,
                Method::GET,
                &format!("Task?_id={task}&_include=Task:output"),
                None,
            )
            .await,
        )
        .await;
        assert!(
            outcome
                .to_string()
                .contains(&format!("\"id\":\"{procedure}\"")),
            "{outcome}"
        );
        assert_eq!(
            body(app.get(&format!("ServiceRequest/{request}")).await).await["status"],
            "completed"
        );
        assert_eq!(wait(&cbo_system, 5).await.len(), 5);

        // a second referral the referrer cancels: the CBO hears of both
        let (second_request, second) = refer_for(&app, &parties.clinician, "bank", None).await;
        ok(
            move_to(
                &app,
                &parties.clinician,
                &second,
                "cancelled",
                vec![reason("Resolved elsewhere")],
            )
            .await,
            "cancel",
        )
        .await;
        let cbo = wait(&cbo_system, 7).await;
        assert_eq!(event(&cbo[5]).0, "6");
        assert_eq!(event(&cbo[6]).0, "7");
        assert!(event(&cbo[6]).1.ends_with(&format!("/Task/{second}")));
        assert_eq!(
            body(app.get(&format!("ServiceRequest/{second_request}")).await).await["status"],
            "revoked"
        );

        // a referral to another CBO tells the referrer, not this CBO
        refer_for(&app, &parties.clinician, "pantry", None).await;
        assert_eq!(wait(&ehr_system, 8).await.len(), 8);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            notifications(&cbo_system).len(),
            7,
            "nothing about another CBO's referral"
        );
        assert_eq!(notifications(&ehr_system).len(), 8, "nothing twice");
        assert_eq!(bundles(&ehr_system).len(), 9, "and the handshake, once");

        // missed notifications can be read again ($events)
        let ehr_id = ehr_subscription["id"].as_str().unwrap_or_default();
        let again = body(
            app.get(&format!(
                "Subscription/{ehr_id}/$events?eventsSinceNumber=2&eventsUntilNumber=4"
            ))
            .await,
        )
        .await;
        assert_eq!(again["type"], "history");
        let status = &again["entry"][0]["resource"];
        assert_eq!(parameter(status, "type")["valueCode"], "query-event");
        assert_eq!(
            parameter(status, "events-since-subscription-start")["valueString"],
            "8"
        );
        let numbers: Vec<&str> = status["parameter"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter(|x| x["name"] == "notification-event")
                    .filter_map(|x| x["part"][0]["valueString"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(numbers, vec!["2", "3", "4"]);
        assert_eq!(again["entry"][2]["resource"]["status"], "accepted");
        assert_eq!(
            as_token(
                &app,
                &parties.clinician,
                Method::GET,
                &format!("Subscription/{ehr_id}/$events"),
                None
            )
            .await
            .status()
            .as_u16(),
            403
        );
    }

    async fn ok_created(response: reqwest::Response) -> String {
        let status = response.status().as_u16();
        let created = body(response).await;
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap_or_default().to_string()
    }
}
