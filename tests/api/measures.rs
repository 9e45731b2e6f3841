//! `$evaluate-measure` on a small hand-checked data set: ten region-3 recipients, a region-5
//! recipient, a deceased one and an excluded one; referral Tasks closed on days 3, 10 and 40;
//! two deliveries; children and adults for the well-care and BMI measures. Every numerator and
//! denominator is asserted exactly.

use reqwest::Method;
use serde_json::{Value, json};

use crate::attribution::{pivot_entities, recipient};
use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome, header, token_for};
use crate::referrals::as_token;

backend_tests!(measures_on_a_hand_checked_data_set);

const PERIOD: &str = "periodStart=2026-01-01&periodEnd=2026-12-31";
const INSTRUMENT: &str =
    "http://example.org/fhir/pivot/StructureDefinition/pivot-screening-instrument";
const HIGH_RISK: &str = "http://example.org/fhir/pivot/StructureDefinition/pivot-high-risk";
const PIVOT: &str = "http://example.org/fhir/pivot/StructureDefinition";
const CPT: &str = "http://www.ama-assn.org/go/cpt";

async fn put(app: &TestApp, resource: Value) {
    let path = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    );
    let response = app.put(&path, &resource).await;
    let status = response.status().as_u16();
    assert!(
        status == 200 || status == 201,
        "{path}: {}",
        body(response).await
    );
}

fn screen(id: &str, patient: &str, code: &str, date: &str) -> Value {
    json!({"resourceType":"Observation","id":id,"status":"final",
        "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"survey"}]}],
        "code":{"coding":[{"system":"http://loinc.org","code":code}]},
        "subject":{"reference":format!("Patient/{patient}")},"effectiveDateTime":date,
        "valueString":"answered"})
}

fn task(id: &str, patient: &str, status: &str, authored: &str, period: Value) -> Value {
    let mut task = json!({"resourceType":"Task","id":id,"status":status,"intent":"order",
        "code":{"coding":[{"system":"http://hl7.org/fhir/CodeSystem/task-code","code":"fulfill"}]},
        "for":{"reference":format!("Patient/{patient}")},"authoredOn":authored,
        "requester":{"reference":"Organization/pe-3"},"owner":{"reference":"Organization/bank"}});
    if !period.is_null() {
        task["executionPeriod"] = period;
    }
    if matches!(status, "rejected" | "cancelled" | "failed" | "on-hold") {
        task["statusReason"] = json!({"text":"At capacity"});
    }
    task
}

fn encounter(id: &str, patient: &str, code: &str, date: &str) -> Value {
    json!({"resourceType":"Encounter","id":id,"status":"finished",
        "class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},
        "type":[{"coding":[{"system":CPT,"code":code}]}],
        "subject":{"reference":format!("Patient/{patient}")},"period":{"start":date,"end":date}})
}

fn maternity_plan(id: &str, patient: &str, edd: &str, delivery: &str) -> Value {
    json!({"resourceType":"CarePlan","id":id,"status":"active","intent":"plan",
        "extension":[{"url":format!("{PIVOT}/pivot-edd"),"valueDate":edd},
                     {"url":format!("{PIVOT}/pivot-delivery-date"),"valueDate":delivery}],
        "subject":{"reference":format!("Patient/{patient}")}})
}

fn bmi(id: &str, patient: &str, code: &str, date: &str) -> Value {
    json!({"resourceType":"Observation","id":id,"status":"final",
        "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
        "code":{"coding":[{"system":"http://loinc.org","code":code}]},
        "subject":{"reference":format!("Patient/{patient}")},"effectiveDateTime":date,
        "valueQuantity":{"value":22.5,"unit":"kg/m2","system":"http://unitsofmeasure.org","code":"kg/m2"}})
}

async fn set_up(app: &TestApp) {
    pivot_entities(app).await;
    put(
        app,
        json!({"resourceType":"Organization","id":"bank","name":"Food bank"}),
    )
    .await;
    let births = [
        ("p2", "2015-05-05"),
        ("p3", "2004-01-01"),
        ("p4", "2024-01-01"),
        ("p5", "2005-06-01"),
    ];
    for n in 0..10 {
        let id = format!("p{n}");
        let category = if n >= 8 { "maternity" } else { "primary-care" };
        let mut patient = recipient(&id, "39201", category);
        if let Some((_, born)) = births.iter().find(|(p, _)| *p == id) {
            patient["birthDate"] = json!(born);
        }
        if n == 0
            && let Some(list) = patient["extension"].as_array_mut()
        {
            list.push(json!({"url":HIGH_RISK,"valueBoolean":true}));
        }
        put(app, patient).await;
    }
    put(app, recipient("q0", "38801", "primary-care")).await;
    let mut deceased = recipient("dead", "38801", "primary-care");
    deceased["deceasedBoolean"] = json!(true);
    put(app, deceased).await;
    put(app, recipient("dual", "39201", "dual-eligible")).await;

    // screens: p0 is high-risk and was screened 8 months before the end (outside 6 months)
    put(app, screen("s0", "p0", "96777-8", "2026-04-15")).await;
    put(app, screen("s1", "p1", "96777-8", "2026-12-01")).await;
    let mut with_instrument = screen("s2", "p2", "88122-7", "2026-10-01");
    with_instrument["extension"] =
        json!([{"url":INSTRUMENT,"valueCoding":{"system":"http://loinc.org","code":"96777-8"}}]);
    put(app, with_instrument).await;
    let mut derived = screen("s3", "p3", "88122-7", "2026-06-01");
    derived["derivedFrom"] = json!([{"reference":"QuestionnaireResponse/qr-3"}]);
    put(app, derived).await;
    put(app, screen("s4", "p4", "93025-5", "2026-02-01")).await;
    put(app, screen("s5", "p5", "93025-5", "2026-01-15")).await;
    put(app, screen("s6", "p6", "96777-8", "2025-12-15")).await; // 12 months and more
    let mut preliminary = screen("s7", "p7", "96777-8", "2026-11-01");
    preliminary["status"] = json!("preliminary");
    put(app, preliminary).await;
    put(app, screen("s8", "p8", "1234-5", "2026-11-01")).await; // not an instrument
    put(app, screen("sq", "q0", "96777-8", "2026-11-01")).await;
    put(app, screen("sd", "dead", "96777-8", "2026-11-01")).await;
    put(app, screen("sx", "dual", "96777-8", "2026-11-01")).await;

    // referrals: closed after 3, 10 and 40 days, two open; one too recent; one sub-task
    put(app, json!({"resourceType":"Procedure","id":"done","status":"completed","subject":{"reference":"Patient/p1"},"code":{"text":"food"},"performedDateTime":"2026-11-03"})).await;
    let mut t1 = task(
        "t1",
        "p1",
        "completed",
        "2026-11-01",
        json!({"start":"2026-11-02T00:00:00Z","end":"2026-11-04T00:00:00Z"}),
    );
    t1["output"] = json!([{"type":{"coding":[{"system":"http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes","code":"resulting-activity"}]},"valueReference":{"reference":"Procedure/done"}}]);
    put(app, t1).await;
    put(
        app,
        task(
            "t2",
            "p2",
            "rejected",
            "2026-10-01",
            json!({"end":"2026-10-11T00:00:00Z"}),
        ),
    )
    .await;
    put(
        app,
        task(
            "t3",
            "p3",
            "completed",
            "2026-09-01",
            json!({"start":"2026-09-02T00:00:00Z","end":"2026-10-11T00:00:00Z"}),
        ),
    )
    .await;
    put(
        app,
        task(
            "t4",
            "p4",
            "in-progress",
            "2026-09-15",
            json!({"start":"2026-09-16T00:00:00Z"}),
        ),
    )
    .await;
    put(
        app,
        task("t5", "p5", "requested", "2026-11-20", Value::Null),
    )
    .await;
    put(
        app,
        task("t6", "p6", "requested", "2026-12-15", Value::Null),
    )
    .await;
    let mut sub = task(
        "t7",
        "p1",
        "completed",
        "2026-11-01",
        json!({"start":"2026-11-02T00:00:00Z","end":"2026-11-03T00:00:00Z"}),
    );
    sub["partOf"] = json!([{"reference":"Task/t1"}]);
    put(app, sub).await;

    // deliveries: p9 with a first-trimester visit (EDD − 200 d) and a postpartum visit (+20 d);
    // p8 with a late prenatal visit (EDD − 100 d) and a too-early postpartum one (+3 d)
    put(
        app,
        maternity_plan("mat-9", "p9", "2026-06-01", "2026-05-28"),
    )
    .await;
    put(app, encounter("e9a", "p9", "0500F", "2025-11-13")).await;
    put(app, encounter("e9b", "p9", "0503F", "2026-06-17")).await;
    put(
        app,
        maternity_plan("mat-8", "p8", "2026-03-05", "2026-03-01"),
    )
    .await;
    put(app, encounter("e8a", "p8", "0500F", "2025-11-25")).await;
    put(app, encounter("e8b", "p8", "0503F", "2026-03-04")).await;

    // well-care (ages 3-21: p2 aged 11 and p5 aged 21) and BMI
    put(app, encounter("w2", "p2", "99393", "2026-03-01")).await;
    put(app, bmi("b2", "p2", "59576-9", "2026-03-01")).await;
    put(app, bmi("b1", "p1", "39156-5", "2025-06-01")).await;
    put(app, bmi("b3", "p3", "39156-5", "2024-06-01")).await;
}

async fn evaluate(app: &TestApp, measure: &str, query: &str) -> Value {
    let response = app
        .get(&format!(
            "Measure/{measure}/$evaluate-measure?{PERIOD}&{query}"
        ))
        .await;
    assert_eq!(response.status().as_u16(), 200, "{measure}?{query}");
    body(response).await
}

/// (code, count) of a group's populations.
fn counts(group: &Value) -> Vec<(String, i64)> {
    group["population"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|p| {
                    (
                        p["code"]["coding"][0]["code"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        p["count"].as_i64().unwrap_or(-1),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pops(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(c, n)| (c.to_string(), *n)).collect()
}

fn stratum<'v>(group: &'v Value, stratifier: &str, value: &str) -> &'v Value {
    group["stratifier"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["code"][0]["text"] == stratifier))
        .and_then(|s| s["stratum"].as_array())
        .and_then(|list| list.iter().find(|s| s["value"]["text"] == value))
        .unwrap_or(&Value::Null)
}

async fn measures_on_a_hand_checked_data_set(app: TestApp) {
    set_up(&app).await;
    let region3 = "subject=Group/pivot-attribution-pe-3";

    // SDOH screening on the region-3 Group: 10 recipients, 5 screened in time
    let report = evaluate(&app, "pivot-sdoh-screening", region3).await;
    assert_eq!(report["resourceType"], "MeasureReport");
    assert_eq!(report["type"], "summary");
    assert_eq!(
        report["measure"],
        "http://example.org/fhir/pivot/Measure/pivot-sdoh-screening"
    );
    let group = &report["group"][0];
    assert_eq!(
        counts(group),
        pops(&[
            ("initial-population", 10),
            ("denominator", 10),
            ("denominator-exclusion", 0),
            ("numerator", 5)
        ])
    );
    assert_eq!(group["measureScore"]["value"], json!(0.5));
    assert_eq!(
        counts(stratum(group, "eligibility-category", "maternity")),
        pops(&[
            ("initial-population", 2),
            ("denominator", 2),
            ("denominator-exclusion", 0),
            ("numerator", 0)
        ])
    );
    // the whole program: the region-5 recipient screened, the deceased one excluded, the
    // dual eligible not enrolled
    let report = evaluate(&app, "pivot-sdoh-screening", "reportType=summary").await;
    let group = &report["group"][0];
    assert_eq!(
        counts(group),
        pops(&[
            ("initial-population", 12),
            ("denominator", 12),
            ("denominator-exclusion", 1),
            ("numerator", 6)
        ])
    );
    assert_eq!(
        counts(stratum(group, "region", "5")),
        pops(&[
            ("initial-population", 2),
            ("denominator", 2),
            ("denominator-exclusion", 1),
            ("numerator", 1)
        ])
    );
    assert_eq!(
        counts(stratum(group, "attributed-entity", "Organization/pe-3")),
        pops(&[
            ("initial-population", 10),
            ("denominator", 10),
            ("denominator-exclusion", 0),
            ("numerator", 5)
        ])
    );
    // one recipient
    let report = evaluate(&app, "pivot-sdoh-screening", "subject=Patient/p1").await;
    assert_eq!(report["type"], "individual");
    assert_eq!(report["subject"]["reference"], "Patient/p1");
    assert_eq!(
        counts(&report["group"][0]).last(),
        Some(&("numerator".to_string(), 1))
    );
    let report = evaluate(&app, "pivot-sdoh-screening", "subject=Patient/p0").await;
    assert_eq!(
        counts(&report["group"][0]).last(),
        Some(&("numerator".to_string(), 0))
    );
    // subject lists name the recipients
    let report = evaluate(
        &app,
        "pivot-sdoh-screening",
        &format!("{region3}&reportType=subject-list"),
    )
    .await;
    let list_ref = report["group"][0]["population"][3]["subjectResults"]["reference"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches('#')
        .to_string();
    let list = report["contained"]
        .as_array()
        .and_then(|c| c.iter().find(|l| l["id"] == list_ref.as_str()))
        .cloned()
        .unwrap_or_default();
    let mut members: Vec<&str> = list["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["item"]["reference"].as_str())
                .collect()
        })
        .unwrap_or_default();
    members.sort_unstable();
    assert_eq!(
        members,
        vec![
            "Patient/p1",
            "Patient/p2",
            "Patient/p3",
            "Patient/p4",
            "Patient/p5"
        ]
    );

    // referral loop closure: 2 of 5 closed within 30 days; 1 resolved (completed with outcome)
    let report = evaluate(&app, "pivot-referral-loop-closure", region3).await;
    assert_eq!(
        counts(&report["group"][0]),
        pops(&[
            ("initial-population", 5),
            ("denominator", 5),
            ("numerator", 2)
        ])
    );
    assert_eq!(report["group"][0]["measureScore"]["value"], json!(0.4));
    assert_eq!(
        counts(&report["group"][1]),
        pops(&[
            ("initial-population", 5),
            ("denominator", 5),
            ("numerator", 1)
        ])
    );
    // days to closure over the 3 closed: median 10, p90 40
    let report = evaluate(&app, "pivot-referral-days-to-closure", region3).await;
    assert_eq!(
        counts(&report["group"][0]),
        pops(&[("initial-population", 5), ("measure-population", 3)])
    );
    assert_eq!(report["group"][0]["measureScore"]["value"], json!(10.0));
    assert_eq!(report["group"][1]["measureScore"]["value"], json!(40.0));

    // deliveries
    let report = evaluate(&app, "pivot-prenatal-first-trimester", region3).await;
    assert_eq!(
        counts(&report["group"][0]),
        pops(&[
            ("initial-population", 2),
            ("denominator", 2),
            ("denominator-exclusion", 0),
            ("numerator", 1)
        ])
    );
    let report = evaluate(&app, "pivot-postpartum-visit", region3).await;
    assert_eq!(
        counts(&report["group"][0]),
        pops(&[
            ("initial-population", 2),
            ("denominator", 2),
            ("denominator-exclusion", 0),
            ("numerator", 1)
        ])
    );
    // well-care: p2 (11, visited) and p5 (21, not)
    let report = evaluate(&app, "pivot-well-care-3-21", region3).await;
    assert_eq!(
        counts(&report["group"][0]),
        pops(&[
            ("initial-population", 2),
            ("denominator", 2),
            ("numerator", 1)
        ])
    );
    // BMI: child p2 recorded; adults p0 p1 p3 p5 p6 p7 p8 p9, only p1 within the year before
    let report = evaluate(&app, "pivot-bmi-recorded", region3).await;
    assert_eq!(
        counts(&report["group"][0]),
        pops(&[
            ("initial-population", 1),
            ("denominator", 1),
            ("numerator", 1)
        ])
    );
    assert_eq!(
        counts(&report["group"][1]),
        pops(&[
            ("initial-population", 8),
            ("denominator", 8),
            ("denominator-exclusion", 0),
            ("numerator", 1)
        ])
    );

    // POST with Parameters, stored: 201 and a MeasureReport that reads back
    let parameters = json!({"resourceType":"Parameters","parameter":[
        {"name":"periodStart","valueDate":"2026-01-01"},{"name":"periodEnd","valueDate":"2026-12-31"},
        {"name":"subject","valueString":"Group/pivot-attribution-pe-3"},{"name":"persist","valueBoolean":true}]});
    let response = app
        .post(
            "Measure/pivot-sdoh-screening/$evaluate-measure",
            &parameters,
        )
        .await;
    assert_eq!(response.status().as_u16(), 201);
    let location = header(&response, "location");
    let stored = body(response).await;
    assert!(location.contains(&format!(
        "MeasureReport/{}",
        stored["id"].as_str().unwrap_or("?")
    )));
    let read = body(
        app.get(&format!(
            "MeasureReport/{}",
            stored["id"].as_str().unwrap_or_default()
        ))
        .await,
    )
    .await;
    assert_eq!(
        counts(&read["group"][0]).last(),
        Some(&("numerator".to_string(), 5))
    );

    // the CapabilityStatement names the operation on Measure
    let metadata = body(app.get("metadata").await).await;
    let measure = metadata["rest"][0]["resource"]
        .as_array()
        .and_then(|list| list.iter().find(|r| r["type"] == "Measure"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(measure["operation"][0]["name"], "evaluate-measure");

    // bad input: 400, unknown: 404, not computed: 422
    expect_outcome(
        app.get("Measure/pivot-sdoh-screening/$evaluate-measure?periodStart=2026-01-01")
            .await,
        400,
        "required",
    )
    .await;
    expect_outcome(app.get("Measure/pivot-sdoh-screening/$evaluate-measure?periodStart=2026-13-01&periodEnd=2026-12-31").await, 400, "value").await;
    expect_outcome(
        app.get(&format!(
            "Measure/pivot-sdoh-screening/$evaluate-measure?{PERIOD}&reportType=individual"
        ))
        .await,
        400,
        "value",
    )
    .await;
    expect_outcome(
        app.get(&format!(
            "Measure/pivot-sdoh-screening/$evaluate-measure?{PERIOD}&subject=Group/nope"
        ))
        .await,
        404,
        "not-found",
    )
    .await;
    expect_outcome(
        app.get(&format!("Measure/nope/$evaluate-measure?{PERIOD}"))
            .await,
        404,
        "not-found",
    )
    .await;
    expect_outcome(
        app.get(&format!(
            "Measure/pivot-flu-timely/$evaluate-measure?{PERIOD}"
        ))
        .await,
        422,
        "not-supported",
    )
    .await;

    // a Pivot Entity evaluates its own Group; another's reads as unknown; a patient token may not
    let pe3 = token_for(
        &app.data_dir,
        "system/*.rs",
        None,
        Some("Organization/pe-3"),
    );
    let response = as_token(
        &app,
        &pe3,
        Method::GET,
        &format!("Measure/pivot-sdoh-screening/$evaluate-measure?{PERIOD}&{region3}"),
        None,
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        counts(&body(response).await["group"][0]).last(),
        Some(&("numerator".to_string(), 5))
    );
    let response = as_token(&app, &pe3, Method::GET, &format!("Measure/pivot-sdoh-screening/$evaluate-measure?{PERIOD}&subject=Group/pivot-attribution-pe-5"), None).await;
    expect_outcome(response, 404, "not-found").await;
    // without a subject, it counts only its own recipients
    let response = as_token(
        &app,
        &pe3,
        Method::GET,
        &format!("Measure/pivot-sdoh-screening/$evaluate-measure?{PERIOD}"),
        None,
    )
    .await;
    assert_eq!(
        counts(&body(response).await["group"][0]),
        pops(&[
            ("initial-population", 10),
            ("denominator", 10),
            ("denominator-exclusion", 0),
            ("numerator", 5)
        ])
    );
    let patient = token_for(
        &app.data_dir,
        "patient/Measure.rs patient/Observation.rs",
        Some("p1"),
        None,
    );
    let response = as_token(
        &app,
        &patient,
        Method::GET,
        &format!("Measure/pivot-sdoh-screening/$evaluate-measure?{PERIOD}&subject=Patient/p1"),
        None,
    )
    .await;
    expect_outcome(response, 403, "forbidden").await;
}
