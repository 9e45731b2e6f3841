//! PATCH (http.html#patch): JSON Patch and FHIRPath Patch, on an instance, conditionally, and in
//! Bundles. (The official patch cases themselves run in tests/patch_cases.rs.)

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome, header, send};

backend_tests!(
    json_and_fhirpath_patch,
    patch_results_must_stay_valid,
    patch_in_bundles
);

async fn patch(
    app: &TestApp,
    path: &str,
    content_type: &str,
    document: &Value,
    if_match: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .request(Method::PATCH, path)
        .header("Content-Type", content_type)
        .body(document.to_string());
    if let Some(version) = if_match {
        request = request.header("If-Match", version);
    }
    send(request).await
}

fn replace_birth_date(value: &str) -> Value {
    json!({"resourceType":"Parameters","parameter":[{"name":"operation","part":[
        {"name":"type","valueCode":"replace"},{"name":"path","valueString":"Patient.birthDate"},{"name":"value","valueDate":value}]}]})
}

async fn json_and_fhirpath_patch(app: TestApp) {
    app.put("Patient/pt", &json!({"resourceType":"Patient","id":"pt","birthDate":"1990-01-01","identifier":[{"system":"s","value":"PT-1"}]})).await;
    let operations = json!([{"op":"replace","path":"/birthDate","value":"1991-02-02"},{"op":"add","path":"/name","value":[{"family":"Patched"}]}]);
    let response = patch(
        &app,
        "Patient/pt",
        "application/json-patch+json",
        &operations,
        None,
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(header(&response, "etag"), "W/\"2\"");
    let patched = body(response).await;
    assert_eq!(
        (
            patched["birthDate"].as_str(),
            patched["name"][0]["family"].as_str()
        ),
        (Some("1991-02-02"), Some("Patched"))
    );
    let response = patch(
        &app,
        "Patient/pt",
        "application/fhir+json",
        &replace_birth_date("1992-03-03"),
        Some("W/\"2\""),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        body(app.get("Patient/pt").await).await["birthDate"],
        "1992-03-03"
    );
    // the index follows: the new birth date is searchable
    let found = body(app.get("Patient?birthdate=1992-03-03").await).await;
    assert_eq!(found["entry"].as_array().map(Vec::len), Some(1));
    expect_outcome(
        patch(
            &app,
            "Patient/pt",
            "application/fhir+json",
            &replace_birth_date("1993-01-01"),
            Some("W/\"1\""),
        )
        .await,
        412,
        "conflict",
    )
    .await;
    let conditional = patch(
        &app,
        "Patient?identifier=s|PT-1",
        "application/fhir+json",
        &replace_birth_date("1994-04-04"),
        None,
    )
    .await;
    assert_eq!(conditional.status().as_u16(), 200);
    assert_eq!(body(conditional).await["meta"]["versionId"], "4");
    expect_outcome(
        patch(
            &app,
            "Patient/nobody",
            "application/json-patch+json",
            &operations,
            None,
        )
        .await,
        404,
        "not-found",
    )
    .await;
    let history = body(app.get("Patient/pt/_history").await).await;
    assert_eq!(history["entry"][0]["request"]["method"], "PATCH");
}

async fn patch_results_must_stay_valid(app: TestApp) {
    app.put(
        "Patient/v",
        &json!({"resourceType":"Patient","id":"v","birthDate":"1990-01-01"}),
    )
    .await;
    let bad_value = json!([{"op":"replace","path":"/birthDate","value":"yesterday"}]);
    let outcome = expect_outcome(
        patch(
            &app,
            "Patient/v",
            "application/json-patch+json",
            &bad_value,
            None,
        )
        .await,
        422,
        "value",
    )
    .await;
    assert_eq!(outcome["issue"][0]["expression"][0], "Patient.birthDate");
    let new_id = json!([{"op":"replace","path":"/id","value":"other"}]);
    expect_outcome(
        patch(
            &app,
            "Patient/v",
            "application/json-patch+json",
            &new_id,
            None,
        )
        .await,
        422,
        "business-rule",
    )
    .await;
    let failed_test = json!([{"op":"test","path":"/birthDate","value":"2000-01-01"}]);
    expect_outcome(
        patch(
            &app,
            "Patient/v",
            "application/json-patch+json",
            &failed_test,
            None,
        )
        .await,
        422,
        "processing",
    )
    .await;
    expect_outcome(
        patch(
            &app,
            "Patient/v",
            "application/json-patch+json",
            &json!({"op":"nonsense"}),
            None,
        )
        .await,
        400,
        "invalid",
    )
    .await;
    expect_outcome(
        patch(&app, "Patient/v", "text/plain", &json!([]), None).await,
        415,
        "not-supported",
    )
    .await;
    assert_eq!(
        body(app.get("Patient/v").await).await["meta"]["versionId"],
        "1",
        "nothing was written"
    );
}

async fn patch_in_bundles(app: TestApp) {
    app.put(
        "Patient/b",
        &json!({"resourceType":"Patient","id":"b","birthDate":"1990-01-01","active":true}),
    )
    .await;
    let json_patch = base64::engine::general_purpose::STANDARD
        .encode(json!([{"op":"replace","path":"/active","value":false}]).to_string());
    let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":[
        {"resource":replace_birth_date("2001-01-01"),"request":{"method":"PATCH","url":"Patient/b"}},
        {"resource":{"resourceType":"Binary","contentType":"application/json-patch+json","data":json_patch},"request":{"method":"PATCH","url":"Patient?birthdate=1995-05-05"}},
    ]});
    // the second entry matches nothing: the whole transaction fails
    let response = send(
        app.request(Method::POST, "")
            .header("Content-Type", "application/fhir+json")
            .body(bundle.to_string()),
    )
    .await;
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(
        body(app.get("Patient/b").await).await["birthDate"],
        "1990-01-01"
    );
    let mut bundle = bundle;
    bundle["entry"][1]["request"]["url"] = json!("Patient/c");
    app.put(
        "Patient/c",
        &json!({"resourceType":"Patient","id":"c","active":true}),
    )
    .await;
    let response = send(
        app.request(Method::POST, "")
            .header("Content-Type", "application/fhir+json")
            .body(bundle.to_string()),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let result = body(response).await;
    assert_eq!(result["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(
        body(app.get("Patient/b").await).await["birthDate"],
        "2001-01-01"
    );
    assert_eq!(body(app.get("Patient/c").await).await["active"], false);
}

/// JSON Merge Patch (RFC 7386), as fhirpy sends it: a partial resource; `null` removes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_patch_of_a_partial_resource() {
    for backend in [
        crate::helpers::Backend::Sqlite,
        crate::helpers::Backend::Postgres,
    ] {
        let Some(app) = TestApp::spawn(backend).await else {
            continue;
        };
        app.put(
            "Patient/m",
            &json!({"resourceType":"Patient","id":"m","active":true,"gender":"male",
                    "name":[{"family":"Old","given":["A"]}]}),
        )
        .await;
        for (content_type, body) in [
            (
                "application/merge-patch+json",
                json!({"gender": "female", "active": null}),
            ),
            ("application/json", json!({"birthDate": "1990-02-03"})),
        ] {
            let response = send(
                app.request(reqwest::Method::PATCH, "Patient/m")
                    .header("Content-Type", content_type)
                    .body(body.to_string()),
            )
            .await;
            assert_eq!(response.status().as_u16(), 200, "{content_type}");
        }
        let patient = crate::helpers::body(app.get("Patient/m").await).await;
        assert_eq!(patient["gender"], "female");
        assert!(patient.get("active").is_none());
        assert_eq!(patient["birthDate"], "1990-02-03");
        assert_eq!(patient["name"][0]["family"], "Old");
        assert_eq!(patient["meta"]["versionId"], "3");
        // a result that is not a valid Patient is refused and nothing changes
        let response = send(
            app.request(reqwest::Method::PATCH, "Patient/m")
                .header("Content-Type", "application/merge-patch+json")
                .body(json!({"gender": 7}).to_string()),
        )
        .await;
        assert_eq!(response.status().as_u16(), 422);
        let response = send(
            app.request(reqwest::Method::PATCH, "Patient/m")
                .header("Content-Type", "application/merge-patch+json")
                .body("[1,2]"),
        )
        .await;
        assert_eq!(response.status().as_u16(), 400);
    }
}
