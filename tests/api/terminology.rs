//! Terminology for the value sets the server holds: `ValueSet/$expand` (filter, paging),
//! `ValueSet/$validate-code`, `CodeSystem/$lookup`, and token search with `:in` / `:not-in`.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome};

backend_tests!(
    expand_filters_and_pages,
    validate_code_and_lookup,
    token_in_and_not_in_match_exact_sets,
);

const REGION: &str = "http://example.org/fhir/pivot/ValueSet/pivot-region";
const SDOH: &str = "http://example.org/fhir/pivot/ValueSet/pivot-sdoh-category";
const SDOHCC: &str =
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes";

fn codes(expanded: &Value) -> Vec<String> {
    expanded["expansion"]["contains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["code"].as_str().map(str::to_string))
        .collect()
}

fn parameter<'v>(parameters: &'v Value, name: &str) -> &'v Value {
    parameters["parameter"]
        .as_array()
        .and_then(|list| list.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

async fn expand_filters_and_pages(app: TestApp) {
    let all = body(app.get(&format!("ValueSet/$expand?url={REGION}")).await).await;
    assert_eq!(all["resourceType"], "ValueSet");
    assert_eq!(all["expansion"]["total"], 7);
    assert_eq!(codes(&all), ["1", "2", "3", "4", "5", "6", "7"]);
    assert_eq!(all["expansion"]["contains"][2]["display"], "Region 3");
    assert!(all.get("compose").is_none());
    // paging: offset and count, total of the whole expansion
    let page = body(
        app.get(&format!("ValueSet/$expand?url={REGION}&offset=2&count=3"))
            .await,
    )
    .await;
    assert_eq!(codes(&page), ["3", "4", "5"]);
    assert_eq!(page["expansion"]["total"], 7);
    assert_eq!(page["expansion"]["offset"], 2);
    let past = body(
        app.get(&format!("ValueSet/$expand?url={REGION}&offset=7"))
            .await,
    )
    .await;
    assert!(codes(&past).is_empty());
    // filter on code and display, case-insensitive
    let filtered = body(
        app.get(&format!("ValueSet/$expand?url={REGION}&filter=region%205"))
            .await,
    )
    .await;
    assert_eq!(codes(&filtered), ["5"]);
    assert_eq!(filtered["expansion"]["total"], 1);
    // a value set defined by a property filter, at instance level, and by POST
    let included = body(app.get("ValueSet/pivot-eligibility-category/$expand").await).await;
    assert_eq!(
        codes(&included).into_iter().collect::<BTreeSet<_>>(),
        ["foster-care", "maternity", "plan-first", "primary-care"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": "http://example.org/fhir/pivot/ValueSet/pivot-excluded-category"},
        {"name": "filter", "valueString": "LONG"}]});
    let excluded = body(app.post("ValueSet/$expand", &params).await).await;
    assert_eq!(codes(&excluded), ["long-term-care"]);
    // a client's value set, expanded with the code systems held
    let mine = json!({"resourceType": "ValueSet", "id": "mine", "url": "urn:test:vs:mine", "status": "active",
        "compose": {"include": [{"system": "http://example.org/fhir/pivot/CodeSystem/pivot-region", "concept": [{"code": "2"}, {"code": "6"}]}]}});
    assert_eq!(app.put("ValueSet/mine", &mine).await.status().as_u16(), 201);
    let expanded = body(app.get("ValueSet/mine/$expand").await).await;
    assert_eq!(codes(&expanded), ["2", "6"]);
    assert_eq!(expanded["expansion"]["contains"][1]["display"], "Region 6");
    // all of LOINC is not held: too costly; unknown value sets and bad paging are errors
    let loinc = json!({"resourceType": "ValueSet", "id": "loinc", "url": "urn:test:vs:loinc", "status": "active",
        "compose": {"include": [{"system": "http://loinc.org"}]}});
    app.put("ValueSet/loinc", &loinc).await;
    expect_outcome(app.get("ValueSet/loinc/$expand").await, 422, "too-costly").await;
    expect_outcome(
        app.get("ValueSet/$expand?url=urn:nope").await,
        404,
        "not-found",
    )
    .await;
    expect_outcome(app.get("ValueSet/nope/$expand").await, 404, "not-found").await;
    expect_outcome(
        app.get(&format!("ValueSet/$expand?url={REGION}&count=-1"))
            .await,
        400,
        "value",
    )
    .await;
    expect_outcome(app.get("ValueSet/$expand").await, 400, "required").await;
}

async fn validate_code_and_lookup(app: TestApp) {
    let system = "http://example.org/fhir/pivot/CodeSystem/pivot-region";
    let yes = body(
        app.get(&format!(
            "ValueSet/$validate-code?url={REGION}&system={system}&code=3"
        ))
        .await,
    )
    .await;
    assert_eq!(yes["resourceType"], "Parameters");
    assert_eq!(parameter(&yes, "result")["valueBoolean"], true);
    assert_eq!(parameter(&yes, "display")["valueString"], "Region 3");
    let no = body(
        app.get(&format!(
            "ValueSet/$validate-code?url={REGION}&system={system}&code=9"
        ))
        .await,
    )
    .await;
    assert_eq!(parameter(&no, "result")["valueBoolean"], false);
    assert!(
        parameter(&no, "message")["valueString"]
            .as_str()
            .is_some_and(|m| m.contains("not in"))
    );
    let wrong_system = body(
        app.get(&format!(
            "ValueSet/$validate-code?url={REGION}&system=urn:x&code=3"
        ))
        .await,
    )
    .await;
    assert_eq!(parameter(&wrong_system, "result")["valueBoolean"], false);
    // a coding, by POST, at instance level; a wrong display is said
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": system, "code": "4", "display": "Region Four"}}]});
    let coded = body(
        app.post("ValueSet/pivot-region/$validate-code", &params)
            .await,
    )
    .await;
    assert_eq!(parameter(&coded, "result")["valueBoolean"], true);
    assert!(
        parameter(&coded, "message")["valueString"]
            .as_str()
            .is_some_and(|m| m.contains("Region 4"))
    );
    let concept = json!({"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": REGION},
        {"name": "codeableConcept", "valueCodeableConcept": {"coding": [{"system": "urn:x", "code": "1"}, {"system": system, "code": "1"}]}}]});
    let checked = body(app.post("ValueSet/$validate-code", &concept).await).await;
    assert_eq!(parameter(&checked, "result")["valueBoolean"], true);
    expect_outcome(
        app.get(&format!("ValueSet/$validate-code?url={REGION}"))
            .await,
        400,
        "required",
    )
    .await;
    // $lookup: display, definition and properties
    let eligibility = "http://example.org/fhir/pivot/CodeSystem/pivot-eligibility";
    let found = body(
        app.get(&format!(
            "CodeSystem/$lookup?system={eligibility}&code=dual-eligible"
        ))
        .await,
    )
    .await;
    assert_eq!(parameter(&found, "name")["valueString"], "PivotEligibility");
    assert_eq!(
        parameter(&found, "display")["valueString"],
        "Dual Medicare–Medicaid eligible"
    );
    assert_eq!(
        parameter(&found, "property")["part"][1]["valueCode"],
        "excluded"
    );
    expect_outcome(
        app.get(&format!(
            "CodeSystem/$lookup?system={eligibility}&code=nope"
        ))
        .await,
        404,
        "not-found",
    )
    .await;
    expect_outcome(
        app.get("CodeSystem/$lookup?system=urn:nope&code=x").await,
        404,
        "not-found",
    )
    .await;
    expect_outcome(app.get("CodeSystem/$lookup?code=x").await, 400, "required").await;
}

async fn ids(app: &TestApp, query: &str) -> BTreeSet<String> {
    let bundle = body(app.get(query).await).await;
    assert_eq!(bundle["resourceType"], "Bundle", "{query}: {bundle}");
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["resource"]["id"].as_str().map(str::to_string))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn token_in_and_not_in_match_exact_sets(app: TestApp) {
    let observation = |id: &str, categories: Value| json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "q"}, "category": categories});
    let category = |system: &str, code: &str| json!({"coding": [{"system": system, "code": code}]});
    let survey = category(
        "http://terminology.hl7.org/CodeSystem/observation-category",
        "survey",
    );
    for (id, categories) in [
        (
            "food",
            json!([survey.clone(), category(SDOHCC, "food-insecurity")]),
        ),
        ("housing", json!([category(SDOHCC, "housing-instability")])),
        ("survey", json!([survey.clone()])),
        (
            "other-system",
            json!([category("urn:other", "food-insecurity")]),
        ),
        (
            "not-a-domain",
            json!([category(SDOHCC, "resulting-activity")]),
        ),
    ] {
        assert_eq!(
            app.put(&format!("Observation/{id}"), &observation(id, categories))
                .await
                .status()
                .as_u16(),
            201
        );
    }
    let mut none = observation("none", Value::Null);
    none.as_object_mut().map(|o| o.shift_remove("category"));
    app.put("Observation/none", &none).await;
    assert_eq!(
        ids(&app, &format!("Observation?category:in={SDOH}")).await,
        set(&["food", "housing"])
    );
    assert_eq!(
        ids(&app, &format!("Observation?category:not-in={SDOH}")).await,
        set(&["survey", "other-system", "not-a-domain", "none"])
    );
    assert_eq!(
        ids(&app, &format!("Observation?category:in={SDOH}&category=http://terminology.hl7.org/CodeSystem/observation-category|survey")).await,
        set(&["food"])
    );
    // a base R4 value set the server holds
    for (id, gender) in [("f", "female"), ("m", "male"), ("u", "unknown")] {
        app.put(
            &format!("Patient/{id}"),
            &json!({"resourceType": "Patient", "id": id, "gender": gender}),
        )
        .await;
    }
    app.put("Patient/x", &json!({"resourceType": "Patient", "id": "x"}))
        .await;
    assert_eq!(
        ids(
            &app,
            "Patient?gender:in=http://hl7.org/fhir/ValueSet/administrative-gender"
        )
        .await,
        set(&["f", "m", "u"])
    );
    assert_eq!(
        ids(
            &app,
            "Patient?gender:not-in=http://hl7.org/fhir/ValueSet/administrative-gender"
        )
        .await,
        set(&["x"])
    );
    expect_outcome(
        app.get("Observation?category:in=urn:nope").await,
        400,
        "value",
    )
    .await;
    expect_outcome(
        app.get("Observation?status:in=urn:test:vs:loinc").await,
        400,
        "value",
    )
    .await;
}
