//! Two server nodes over one PostgreSQL database keep the guarantees of one: no lost update
//! under If-Match, one resource per conditional create, and a SearchParameter made active
//! through one node is used by the other.

use std::time::Duration;

use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use crate::helpers::{Backend, Node, TestApp, body, header, send};

async fn two_nodes() -> Option<(TestApp, Node)> {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        eprintln!("skipped: DATABASE_URL names no PostgreSQL server");
        return None;
    };
    let other = app.another_node();
    Some((app, other))
}

/// A request to node `n % 2`.
fn on(app: &TestApp, other: &Node, n: usize, method: Method, path: &str) -> RequestBuilder {
    if n.is_multiple_of(2) {
        app.request(method, path)
    } else {
        other.request(method, path)
    }
}

/// Eight writers, half through each node, each add their own identifier by read, modify and
/// `If-Match` write, retrying on 412: every identifier is in the final version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn if_match_read_modify_write_loses_nothing_across_nodes() {
    let Some((app, other)) = two_nodes().await else {
        return;
    };
    let created = app
        .put(
            "Patient/shared",
            &json!({"resourceType":"Patient","id":"shared"}),
        )
        .await;
    assert_eq!(created.status().as_u16(), 201);
    let writers = 8;
    let (app, other) = (&app, &other);
    let runs = (0..writers).map(|n| async move {
        let mut conflicts = 0;
        loop {
            let read = send(on(app, other, n, Method::GET, "Patient/shared")).await;
            let etag = header(&read, "etag");
            let mut patient = body(read).await;
            let identifiers = patient["identifier"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut identifiers = identifiers;
            identifiers.push(json!({"system":"urn:writer","value":format!("w{n}")}));
            patient["identifier"] = Value::Array(identifiers);
            let written = send(
                on(app, other, n + 1, Method::PUT, "Patient/shared")
                    .header("Content-Type", "application/fhir+json")
                    .header("If-Match", etag)
                    .body(patient.to_string()),
            )
            .await;
            match written.status().as_u16() {
                200 => return conflicts,
                412 | 409 => conflicts += 1,
                other => panic!("writer {n}: {other} {}", body(written).await),
            }
            assert!(conflicts < 200, "writer {n} never got through");
        }
    });
    let conflicts: usize = futures::future::join_all(runs).await.into_iter().sum();
    let last = body(app.get("Patient/shared").await).await;
    let mut values: Vec<String> = last["identifier"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|id| id["value"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    values.sort();
    let expected: Vec<String> = (0..writers).map(|n| format!("w{n}")).collect();
    assert_eq!(values, expected, "{conflicts} conflicts");
    // one version per successful write, none skipped or repeated
    assert_eq!(last["meta"]["versionId"], (writers + 1).to_string());
    let history = body(
        other
            .request(Method::GET, "Patient/shared/_history")
            .send()
            .await
            .unwrap_or_else(|err| panic!("{err}")),
    )
    .await;
    assert_eq!(history["total"], writers + 1);
}

/// Concurrent conditional creates with one `If-None-Exist`, spread over both nodes, make one
/// resource; the others are answered with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conditional_creates_across_nodes_make_one_resource() {
    let Some((app, other)) = two_nodes().await else {
        return;
    };
    let (app, other) = (&app, &other);
    let patient = json!({"resourceType":"Patient",
        "identifier":[{"system":"urn:medicaid","value":"M-2-NODES"}]});
    let creates = (0..16).map(|n| {
        let patient = patient.clone();
        async move {
            let response = send(
                on(app, other, n, Method::POST, "Patient")
                    .header("Content-Type", "application/fhir+json")
                    .header("If-None-Exist", "identifier=urn:medicaid|M-2-NODES")
                    .body(patient.to_string()),
            )
            .await;
            let status = response.status().as_u16();
            let location = header(&response, "location");
            (status, location)
        }
    });
    let answers = futures::future::join_all(creates).await;
    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(status, _)| *status == 201 || *status == 200),
        "{answers:?}"
    );
    let found =
        body(send(other.request(Method::GET, "Patient?identifier=urn:medicaid|M-2-NODES")).await)
            .await;
    assert_eq!(found["total"], 1, "{found}");
}

/// A SearchParameter created and re-indexed through one node is used by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_search_parameter_reindexed_on_one_node_works_on_the_other() {
    let Some((app, other)) = two_nodes().await else {
        return;
    };
    let url = "https://pivot-fhir.example.org/fhir/StructureDefinition/test-county";
    for (id, county) in [("p1", "Hinds"), ("p2", "Rankin")] {
        let patient = json!({"resourceType":"Patient","id":id,
            "extension":[{"url":url,"valueString":county}]});
        assert_eq!(
            app.put(&format!("Patient/{id}"), &patient)
                .await
                .status()
                .as_u16(),
            201
        );
    }
    let definition = json!({"resourceType":"SearchParameter",
        "url":"https://pivot-fhir.example.org/fhir/SearchParameter/test-county","name":"TestCounty",
        "status":"active","description":"The patient's county","code":"test-county","base":["Patient"],
        "type":"string","expression":format!("Patient.extension('{url}').value")});
    assert_eq!(
        app.post("SearchParameter", &definition)
            .await
            .status()
            .as_u16(),
        201
    );
    let started = send(app.request(Method::POST, "$reindex")).await;
    assert_eq!(started.status().as_u16(), 202);
    let job = header(&started, "content-location");
    let mut finished = false;
    for _ in 0..200 {
        // polled through the other node: the job's state is in the database
        if send(other.request(Method::GET, &job[job.find("_job").unwrap_or(0)..]))
            .await
            .status()
            .as_u16()
            == 200
        {
            finished = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(finished, "the re-index job did not finish");
    // the other node follows the shared registry version within its poll interval
    let mut answer = Value::Null;
    for _ in 0..50 {
        let response = send(
            other
                .request(Method::GET, "Patient?test-county=rank")
                .header("Prefer", "handling=strict"),
        )
        .await;
        if response.status().as_u16() == 200 {
            answer = body(response).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer["total"], 1, "{answer}");
    assert_eq!(answer["entry"][0]["resource"]["id"], "p2");
}
