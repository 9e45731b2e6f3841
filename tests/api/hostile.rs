//! The hostile-input catalogue: what a careless or malicious client can send. Each case gets a
//! 4xx with an OperationOutcome or a bounded, correct answer; never a 5xx, a panic or a hang.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, body, send};

backend_tests!(
    hostile_bodies,
    metacharacters_in_every_parameter_type,
    hostile_paths_and_result_parameters,
    exploding_includes_and_chains_are_bounded
);

/// Sends `request`; asserts no 5xx and, for an error, an OperationOutcome. Returns the status.
async fn answered(what: &str, request: reqwest::RequestBuilder) -> (u16, Value) {
    let started = Instant::now();
    let response = send(request).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert!(status < 500, "{what}: {status} {text}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{what}: took {:?}",
        started.elapsed()
    );
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(value["resourceType"], "OperationOutcome", "{what}: {text}");
    }
    (status, value)
}

fn post_text(app: &TestApp, path: &str, text: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
    app.request(Method::POST, path)
        .header("Content-Type", "application/fhir+json")
        .body(text)
}

async fn hostile_bodies(app: TestApp) {
    let deep = format!(
        "{{\"resourceType\":\"Patient\",\"extension\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (status, _) = answered("deep nesting", post_text(&app, "Patient", deep)).await;
    assert_eq!(status, 400);

    let (status, _) = answered(
        "invalid UTF-8",
        post_text(
            &app,
            "Patient",
            b"{\"resourceType\":\"Patient\",\"gender\":\"\xff\xfe\"}".to_vec(),
        ),
    )
    .await;
    assert_eq!(status, 400);

    // found by fuzzing: the structure parser panicked on an element holding `resourceType`
    let (status, _) = answered(
        "resourceType inside an element",
        post_text(
            &app,
            "Organization",
            r#"{"resourceType":"Organization","name":"x","address":[{"resourceType":"Organization","country":"CH"}]}"#,
        ),
    )
    .await;
    assert_eq!(status, 400);

    let (status, _) = answered(
        "duplicate keys",
        post_text(
            &app,
            "Patient",
            r#"{"resourceType":"Patient","active":true,"active":false}"#,
        ),
    )
    .await;
    assert_eq!(status, 400);

    for number in [
        "1e400",
        "-1e400",
        "123456789012345678901234567890.5",
        "1e-400",
    ] {
        let text = format!(
            r#"{{"resourceType":"Observation","status":"final","code":{{"text":"x"}},"valueQuantity":{{"value":{number}}}}}"#
        );
        answered(number, post_text(&app, "Observation", text)).await;
    }
    // a huge but legal resource: 20,000 names, a 4 MB string
    let names: Vec<Value> = (0..20_000)
        .map(|n| json!({"family": format!("F{n}")}))
        .collect();
    let many = json!({"resourceType":"Patient","name":names});
    let (status, _) = answered(
        "20,000 names",
        app.request(Method::POST, "Patient")
            .header("Content-Type", "application/fhir+json")
            .body(many.to_string()),
    )
    .await;
    assert_eq!(status, 201);
    let long = json!({"resourceType":"Patient","name":[{"family":"x".repeat(4_000_000)}]});
    let (status, _) = answered(
        "4 MB string",
        app.request(Method::POST, "Patient")
            .header("Content-Type", "application/fhir+json")
            .body(long.to_string()),
    )
    .await;
    assert_eq!(status, 201);
    // still found by a long prefix, and by a long identifier (values are indexed cut alike)
    let (_, found) = answered(
        "long prefix",
        app.request(Method::GET, &format!("Patient?name={}", "x".repeat(300))),
    )
    .await;
    assert_eq!(found["entry"].as_array().map_or(0, Vec::len), 1);
    let identifier = "i".repeat(1_000);
    let patient =
        json!({"resourceType":"Patient","identifier":[{"system":"urn:long","value":identifier}]});
    assert_eq!(app.post("Patient", &patient).await.status().as_u16(), 201);
    let (_, found) = answered(
        "long identifier",
        app.request(
            Method::GET,
            &format!("Patient?identifier=urn:long|{identifier}"),
        ),
    )
    .await;
    assert_eq!(found["entry"].as_array().map_or(0, Vec::len), 1);

    for (what, text) in [
        ("empty body", ""),
        ("JSON null", "null"),
        ("array", "[]"),
        ("string", "\"Patient\""),
        ("truncated", r#"{"resourceType":"Patient","#),
        ("BOM", "\u{feff}{\"resourceType\":\"Patient\"}"),
        (
            "NUL in string",
            "{\"resourceType\":\"Patient\",\"gender\":\"ma\\u0000le\"}",
        ),
        (
            "lone surrogate",
            r#"{"resourceType":"Patient","gender":"\ud800"}"#,
        ),
        ("resourceType number", r#"{"resourceType":7}"#),
        (
            "unknown resourceType",
            r#"{"resourceType":"../../etc/passwd"}"#,
        ),
    ] {
        let (status, _) = answered(what, post_text(&app, "Patient", text)).await;
        assert!((400..500).contains(&status), "{what}: {status}");
    }
    // XML is not read at all (so no entity expansion)
    let xml = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><Patient xmlns="http://hl7.org/fhir"><id value="&lol2;"/></Patient>"#;
    let (status, _) = answered(
        "XML with entities",
        app.request(Method::POST, "Patient")
            .header("Content-Type", "application/fhir+xml")
            .body(xml),
    )
    .await;
    assert_eq!(status, 415);
    // a Bundle whose entries are each hostile
    let bundle = json!({"resourceType":"Bundle","type":"batch","entry":[
        {"request":{"method":"GET","url":"../../../etc/passwd"}},
        {"request":{"method":"GET","url":"Patient?name=%'--"}},
        {"request":{"method":"POST","url":"Patient"},"resource":{"resourceType":"Patient","birthDate":"not-a-date"}},
        {"request":{"method":"BREW","url":"Patient"}},
        {"request":{"method":"PUT","url":"Patient/a%2Fb"},"resource":{"resourceType":"Patient","id":"a/b"}},
    ]});
    answered(
        "hostile batch",
        app.request(Method::POST, "")
            .header("Content-Type", "application/fhir+json")
            .body(bundle.to_string()),
    )
    .await;
}

async fn metacharacters_in_every_parameter_type(app: TestApp) {
    app.put(
        "Patient/plain",
        &json!({"resourceType":"Patient","id":"plain","name":[{"family":"Plain"}],
                "identifier":[{"system":"urn:s","value":"v1"}],"birthDate":"1990-01-01"}),
    )
    .await;
    app.put(
        "Observation/o",
        &json!({"resourceType":"Observation","id":"o","status":"final","code":{"text":"c"},
                "subject":{"reference":"Patient/plain"},"valueQuantity":{"value":5}}),
    )
    .await;
    let hostile = [
        "%",
        "_",
        "%25",
        "'",
        "''",
        "\"",
        "\\",
        "%_",
        "'; DROP TABLE resources; --",
        "\0",
        "*",
        "[",
        "]",
        "^",
        "$",
        "(",
        "|",
        "||",
        "|%",
        "%|%",
        "x,y,%",
        "${x}",
        "\u{202e}",
    ];
    let params = [
        "Patient?name=",
        "Patient?name:exact=",
        "Patient?name:contains=",
        "Patient?identifier=",
        "Patient?identifier=urn:s|",
        "Patient?identifier:of-type=",
        "Patient?_id=",
        "Patient?birthdate=",
        "Patient?gender:not=",
        "Patient?_text=",
        "Observation?subject=",
        "Observation?subject:Patient.name=",
        "Observation?value-quantity=",
        "Observation?code=",
        "Observation?code:text=",
        "Patient?_has:Observation:subject:code=",
        "Patient?_profile=",
        "Patient?_tag=",
        "Patient?_lastUpdated=",
        "Patient?_sort=",
        "Patient?_elements=",
        "Patient?_include=",
        "Patient?_count=",
        "Patient?_summary=",
        "Patient?_total=",
        "Patient?_type=",
        "ValueSet?url:below=",
    ];
    for param in params {
        for value in hostile {
            let encoded: String = url_encode(value);
            let path = format!("{param}{encoded}");
            let (status, bundle) = answered(&path, app.request(Method::GET, &path)).await;
            if status == 200 && !param.contains("_has") && !param.contains(":not=") {
                // a metacharacter never widens a match: nothing here matches "plain"
                let ids: Vec<&str> = bundle["entry"]
                    .as_array()
                    .map(|e| {
                        e.iter()
                            .filter(|e| e["search"]["mode"] == "match")
                            .filter_map(|e| e["resource"]["id"].as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                let harmless = matches!(
                    param,
                    "Patient?_sort="
                        | "Patient?_elements="
                        | "Patient?_include="
                        | "Patient?_count="
                        | "Patient?_summary="
                        | "Patient?_total="
                        | "Patient?_text="
                        | "Patient?_type="
                );
                if !harmless {
                    assert!(ids.is_empty(), "{path} matched {ids:?}");
                }
            }
        }
    }
    // the data is still there
    let (status, _) = answered("after", app.request(Method::GET, "Patient/plain")).await;
    assert_eq!(status, 200);
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn hostile_paths_and_result_parameters(app: TestApp) {
    for path in [
        "Patient/..%2F..%2Fetc%2Fpasswd",
        "Patient/%2E%2E",
        "Patient/a%00b",
        "Patient/%F0%9F%92%A9",
        "Patient/x'%20OR%20'1'='1",
        "Patient/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "..%2F..%2Fetc%2Fpasswd/1",
        "Patient/1/_history/99999999999999999999999",
        "Patient/1/_history/-1",
        "Patient/1/_history/x",
        "Patient?_count=1000000000",
        "Patient?_count=-1",
        "Patient?_count=99999999999999999999999",
        "Patient?_since=9999-99-99",
        "Patient/_history?_count=1000000000",
        "_history?_since=0000-01-01T00:00:00Z",
        "Patient?birthdate=ge99999-01-01",
        "Patient?birthdate=ge1000000000",
        "Patient?_lastUpdated=gt2020-13-45",
        "Observation?value-quantity=1e400",
        "Observation?value-quantity=NaN",
        "Observation?value-quantity=-inf",
        "Patient?_cursor=%27%3B--",
        "Patient?name=a&name=b&name=c&name=d&name=e&name=f&name=g&name=h",
    ] {
        answered(path, app.request(Method::GET, path)).await;
    }
    let put = json!({"resourceType":"Patient","id":"..%2Fx"});
    let (status, _) = answered(
        "PUT traversal",
        app.request(Method::PUT, "Patient/..%2Fx")
            .header("Content-Type", "application/fhir+json")
            .body(put.to_string()),
    )
    .await;
    assert_eq!(status, 400);
    // a billion is capped, and the Bundle says so
    let (status, bundle) = answered(
        "_count",
        app.request(Method::GET, "Patient?_count=1000000000"),
    )
    .await;
    assert_eq!(status, 200);
    let next_or_self = bundle["link"][0]["url"].as_str().unwrap_or_default();
    assert!(!next_or_self.contains("1000000000"), "{next_or_self}");
    // many parameters, many values: refused as too costly, not a database error
    let many: String = (0..2_000).map(|n| format!("name=n{n}&")).collect();
    let (status, outcome) = answered(
        "2,000 parameters",
        app.request(Method::GET, &format!("Patient?{many}")),
    )
    .await;
    assert_eq!(
        (status, outcome["issue"][0]["code"].as_str()),
        (400, Some("too-costly"))
    );
    let values: Vec<String> = (0..5_000).map(|n| format!("n{n}")).collect();
    let (status, _) = answered(
        "5,000 values",
        app.request(Method::GET, &format!("Patient?name={}", values.join(","))),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = answered(
        "400 values",
        app.request(
            Method::GET,
            &format!("Patient?name={}", values[..400].join(",")),
        ),
    )
    .await;
    assert_eq!(status, 200);
    let long_value = "a".repeat(60_000);
    answered(
        "a 60 kB value",
        app.request(Method::GET, &format!("Patient?name={long_value}")),
    )
    .await;
}

async fn exploding_includes_and_chains_are_bounded(app: TestApp) {
    // a reference cycle: every Patient links the next, the last links the first
    let count = 60;
    let entries: Vec<Value> = (0..count)
        .map(|n| {
            json!({"resource":{"resourceType":"Patient","id":format!("c{n}"),
                    "link":[{"other":{"reference":format!("Patient/c{}", (n + 1) % count)},"type":"seealso"}]},
                   "request":{"method":"PUT","url":format!("Patient/c{n}")}})
        })
        .collect();
    let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":entries});
    assert_eq!(app.post("", &bundle).await.status().as_u16(), 200);
    for query in [
        "Patient?_id=c0&_include:iterate=Patient:link",
        "Patient?_id=c0&_include:iterate=*&_revinclude:iterate=*",
        "Patient?_revinclude:iterate=Patient:link&_include:iterate=Patient:link",
        "Patient?link:Patient.link:Patient.link:Patient.link:Patient.link=Patient/c5",
        "Patient?_has:Patient:link:_has:Patient:link:_has:Patient:link:_id=c3",
    ] {
        let (status, bundle) = answered(query, app.request(Method::GET, query)).await;
        if status == 200 {
            let entries = bundle["entry"].as_array().map_or(0, Vec::len);
            assert!(entries <= count + 1, "{query}: {entries} entries");
        }
    }
    let (status, bundle) = answered(
        "iterate around the cycle",
        app.request(Method::GET, "Patient?_id=c0&_include:iterate=Patient:link"),
    )
    .await;
    assert_eq!(status, 200);
    // every member of the cycle once, or a limit named in an OperationOutcome entry
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    let outcome_named = entries
        .iter()
        .any(|e| e["resource"]["resourceType"] == "OperationOutcome");
    assert!(
        entries.len() == count || outcome_named,
        "{} entries",
        entries.len()
    );
}

/// A client that sends its request head slowly is cut off, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_time_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn(crate::helpers::Backend::Sqlite)
        .await
        .unwrap_or_else(|| panic!("server did not start"));
    let address = app.root.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&address)
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let started = Instant::now();
    let _ = slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
    // never finish the head; the server must give up on its own
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the server waited more than 30 s for a request head"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // meanwhile others are served
    let (status, _) = answered("after a slow client", app.request(Method::GET, "metadata")).await;
    assert_eq!(status, 200);
    let _ = body;
}

/// On PostgreSQL a statement that runs past the statement timeout is cancelled and becomes a
/// `too-costly` answer, not a connection held for minutes or a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_statements_are_cancelled() {
    use actix_web::ResponseError;
    use diesel::connection::SimpleConnection;
    use pivot_fhir::error::FhirError;
    use pivot_fhir::store::{Store, StoreError};
    let Some(app) = TestApp::spawn(crate::helpers::Backend::Postgres).await else {
        eprintln!("skipped: DATABASE_URL names no PostgreSQL server");
        return;
    };
    let store = Store::open_with_timeout(&app.database_url, 1, Duration::from_millis(500))
        .unwrap_or_else(|err| panic!("{err:#}"));
    let started = Instant::now();
    let result: Result<(), StoreError> =
        store.blocking(|conn| Ok(conn.batch_execute("SELECT pg_sleep(5)")?));
    assert!(started.elapsed() < Duration::from_secs(4));
    let Err(err) = result else {
        panic!("pg_sleep(5) was not cancelled")
    };
    assert!(matches!(err, StoreError::TimedOut(_)), "{err:?}");
    let answer = FhirError::from(err);
    assert_eq!(answer.status_code().as_u16(), 400);
    assert_eq!(answer.issues()[0].code, "too-costly");
    // the connection is still usable afterwards
    let again: Result<(), StoreError> = store.blocking(|conn| Ok(conn.batch_execute("SELECT 1")?));
    assert!(again.is_ok(), "{again:?}");
}
