//! history at instance, type and system level (http.html#history).

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome};

backend_tests!(
    instance_history_lists_versions_newest_first,
    type_and_system_history_page_with_next_links,
    since_and_at_filter_versions
);

async fn instance_history_lists_versions_newest_first(app: TestApp) {
    app.put(
        "Patient/h",
        &json!({"resourceType":"Patient","id":"h","active":true}),
    )
    .await;
    app.put(
        "Patient/h",
        &json!({"resourceType":"Patient","id":"h","active":false}),
    )
    .await;
    app.delete("Patient/h").await;
    let history = body(app.get("Patient/h/_history").await).await;
    assert_eq!(history["resourceType"], "Bundle");
    assert_eq!(history["type"], "history");
    assert_eq!(history["total"], 3);
    let entries = history["entry"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["request"]["method"], "DELETE");
    assert!(
        entries[0].get("resource").is_none(),
        "a deletion has no resource"
    );
    assert_eq!(entries[0]["response"]["etag"], "W/\"3\"");
    assert_eq!(entries[1]["request"]["method"], "PUT");
    assert_eq!(entries[1]["request"]["url"], "Patient/h");
    assert_eq!(entries[1]["resource"]["meta"]["versionId"], "2");
    assert_eq!(entries[1]["response"]["status"], "200 OK");
    assert_eq!(entries[2]["resource"]["active"], true);
    assert_eq!(entries[2]["response"]["status"], "201 Created");
    assert_eq!(entries[2]["fullUrl"], format!("{}/Patient/h", app.base));
    expect_outcome(app.get("Patient/none/_history").await, 404, "not-found").await;
    expect_outcome(app.get("Patient/h/_history?_count=x").await, 400, "value").await;
}

async fn type_and_system_history_page_with_next_links(app: TestApp) {
    for i in 0..7 {
        app.put(
            &format!("Patient/p{i}"),
            &json!({"resourceType":"Patient","id":format!("p{i}")}),
        )
        .await;
    }
    app.post(
        "Organization",
        &json!({"resourceType":"Organization","name":"Org"}),
    )
    .await;
    let mut seen = Vec::new();
    let mut url = "Patient/_history?_count=3".to_string();
    loop {
        let page = body(app.get(&url).await).await;
        for entry in page["entry"].as_array().cloned().unwrap_or_default() {
            assert_eq!(entry["resource"]["resourceType"], "Patient");
            seen.push(
                entry["resource"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        // a write between pages must not shift the pages
        if seen.len() == 3 {
            app.put(
                "Patient/late",
                &json!({"resourceType":"Patient","id":"late"}),
            )
            .await;
        }
        let next = page["link"]
            .as_array()
            .and_then(|links| links.iter().find(|l| l["relation"] == "next").cloned());
        match next {
            Some(link) => url = link["url"].as_str().unwrap_or_default().to_string(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).rev().map(|i| format!("p{i}")).collect();
    assert_eq!(seen, expected, "every version once, newest first");
    // the program's definitions, stored at start-up, come before this test's writes
    let first = body(app.get("Patient/p0").await).await;
    let since = first["meta"]["lastUpdated"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let system = body(
        app.get(&format!("_history?_since={}", urlencode(&since)))
            .await,
    )
    .await;
    let types: Vec<&str> = system["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["resource"]["resourceType"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(types.len(), 9);
    assert_eq!(types[0], "Patient", "the late write is the newest");
    assert_eq!(types[1], "Organization");
    expect_outcome(
        app.get("Patient/_history?_page=garbage").await,
        400,
        "value",
    )
    .await;
}

async fn since_and_at_filter_versions(app: TestApp) {
    let first = body(
        app.put(
            "Patient/s",
            &json!({"resourceType":"Patient","id":"s","active":true}),
        )
        .await,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = body(
        app.put(
            "Patient/s",
            &json!({"resourceType":"Patient","id":"s","active":false}),
        )
        .await,
    )
    .await;
    let between = |v: &Value| {
        v["meta"]["lastUpdated"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let since = between(&second);
    let url = format!("Patient/s/_history?_since={}", urlencode(&since));
    let history = body(app.get(&url).await).await;
    assert_eq!(history["entry"].as_array().map(Vec::len), Some(1));
    assert_eq!(history["entry"][0]["resource"]["meta"]["versionId"], "2");
    // _at the first version's instant: only version 1 was current then
    let at = between(&first);
    let history = body(
        app.get(&format!("Patient/s/_history?_at={}", urlencode(&at)))
            .await,
    )
    .await;
    let versions: Vec<&str> = history["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["resource"]["meta"]["versionId"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(versions, vec!["1"]);
    expect_outcome(
        app.get("Patient/s/_history?_since=yesterday").await,
        400,
        "value",
    )
    .await;
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}
