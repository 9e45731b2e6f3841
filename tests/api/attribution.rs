//! Attribution to Pivot Entities: the region follows the residence, the attributed entity
//! follows the region, and each Pivot Entity's Group shows its members with periods; excluded
//! recipients are not attributed; a Pivot Entity reads its own Group only.

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome, token_for};
use crate::referrals::{ORG_TYPE, as_token};

backend_tests!(
    attribution_follows_the_address,
    excluded_recipients_are_not_attributed
);

pub const REGION: &str = "http://example.org/fhir/pivot/StructureDefinition/pivot-region";
pub const ATTRIBUTED: &str =
    "http://example.org/fhir/pivot/StructureDefinition/pivot-attributed-entity";
pub const ELIGIBILITY: &str =
    "http://example.org/fhir/pivot/StructureDefinition/pivot-eligibility-category";

/// The Pivot Entities of regions 3 and 5.
pub async fn pivot_entities(app: &TestApp) {
    for region in ["3", "5"] {
        let id = format!("pe-{region}");
        let response = app
            .put(
                &format!("Organization/{id}"),
                &json!({"resourceType":"Organization","id":id,"name":id,"active":true,
                    "extension":[{"url":REGION,"valueCoding":{"system":"http://example.org/fhir/pivot/CodeSystem/pivot-region","code":region}}],
                    "type":[{"coding":[{"system":ORG_TYPE,"code":"pivot-entity"}]}]}),
            )
            .await;
        assert!(response.status().is_success());
    }
}

/// A recipient living at `zip`, in `category`, with optional extra content.
pub fn recipient(id: &str, zip: &str, category: &str) -> Value {
    json!({"resourceType":"Patient","id":id,"name":[{"family":id}],"gender":"female","birthDate":"1990-01-01",
        "extension":[{"url":ELIGIBILITY,"valueCoding":{"system":"http://example.org/fhir/pivot/CodeSystem/pivot-eligibility","code":category}}],
        "address":[{"use":"home","postalCode":zip}]})
}

fn extension(resource: &Value, url: &str) -> Option<Value> {
    resource["extension"]
        .as_array()
        .and_then(|list| list.iter().find(|e| e["url"] == url))
        .cloned()
}

fn region_of(resource: &Value) -> Value {
    extension(resource, REGION).unwrap_or_default()["valueCoding"]["code"].clone()
}

fn entity_of(resource: &Value) -> Value {
    extension(resource, ATTRIBUTED).unwrap_or_default()["valueReference"]["reference"].clone()
}

fn members(group: &Value) -> Vec<(String, bool, bool)> {
    group["member"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|m| {
                    (
                        m["entity"]["reference"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        m["period"]["start"].is_string(),
                        m["period"]["end"].is_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn attribution_follows_the_address(app: TestApp) {
    pivot_entities(&app).await;
    let response = app
        .put("Patient/ana", &recipient("ana", "39201", "primary-care"))
        .await;
    assert_eq!(response.status().as_u16(), 201);
    let ana = body(app.get("Patient/ana").await).await;
    assert_eq!(region_of(&ana), "3");
    assert_eq!(entity_of(&ana), "Organization/pe-3");
    let group = body(app.get("Group/pivot-attribution-pe-3").await).await;
    assert_eq!(group["managingEntity"]["reference"], "Organization/pe-3");
    assert_eq!(group["quantity"], 1);
    assert_eq!(members(&group), vec![("Patient/ana".into(), true, false)]);

    // she moves to region 5: the old region extension is overridden by the residence
    let mut moved = ana.clone();
    moved["address"] = json!([{"use":"home","postalCode":"38801"}]);
    let response = app.put("Patient/ana", &moved).await;
    assert_eq!(response.status().as_u16(), 200);
    let ana = body(app.get("Patient/ana").await).await;
    assert_eq!(region_of(&ana), "5");
    assert_eq!(entity_of(&ana), "Organization/pe-5");
    let old = body(app.get("Group/pivot-attribution-pe-3").await).await;
    assert_eq!(old["quantity"], 0);
    assert_eq!(members(&old), vec![("Patient/ana".into(), true, true)]);
    assert_eq!(old["member"][0]["inactive"], true);
    let new = body(app.get("Group/pivot-attribution-pe-5").await).await;
    assert_eq!(members(&new), vec![("Patient/ana".into(), true, false)]);
    assert_eq!(
        new["member"][0]["period"]["start"],
        old["member"][0]["period"]["end"]
    );
    // an unrelated change keeps the membership as it is
    let mut renamed = ana.clone();
    renamed["name"] = json!([{"family":"Rivera"}]);
    app.put("Patient/ana", &renamed).await;
    let new = body(app.get("Group/pivot-attribution-pe-5").await).await;
    assert_eq!(members(&new), vec![("Patient/ana".into(), true, false)]);

    // each Pivot Entity reads its own Group and recipients only
    let pe3 = token_for(
        &app.data_dir,
        "system/*.rs",
        None,
        Some("Organization/pe-3"),
    );
    let pe5 = token_for(
        &app.data_dir,
        "system/*.rs",
        None,
        Some("Organization/pe-5"),
    );
    expect_outcome(
        as_token(&app, &pe3, Method::GET, "Patient/ana", None).await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(
        as_token(&app, &pe5, Method::GET, "Patient/ana", None)
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        as_token(
            &app,
            &pe3,
            Method::GET,
            "Group/pivot-attribution-pe-3",
            None
        )
        .await
        .status()
        .as_u16(),
        200
    );
    expect_outcome(
        as_token(
            &app,
            &pe3,
            Method::GET,
            "Group/pivot-attribution-pe-5",
            None,
        )
        .await,
        404,
        "not-found",
    )
    .await;
    let found = body(as_token(&app, &pe5, Method::GET, "Group", None).await).await;
    let entries = found["entry"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{found}");
    assert_eq!(entries[0]["resource"]["id"], "pivot-attribution-pe-5");
    assert_eq!(
        members(&entries[0]["resource"]),
        vec![("Patient/ana".into(), true, false)]
    );
    // the Groups are the server's
    let response = app
        .put("Group/pivot-attribution-pe-5", &json!({"resourceType":"Group","id":"pivot-attribution-pe-5","type":"person","actual":true}))
        .await;
    expect_outcome(response, 403, "forbidden").await;
    expect_outcome(
        app.delete("Group/pivot-attribution-pe-5").await,
        403,
        "forbidden",
    )
    .await;
    // a county maps too
    let mut by_county = recipient("ben", "00000", "foster-care");
    by_county["address"] = json!([{"use":"home","district":"Lee County"}]);
    app.put("Patient/ben", &by_county).await;
    let ben = body(app.get("Patient/ben").await).await;
    assert_eq!(region_of(&ben), "5");
    // deleting a recipient ends the membership
    app.delete("Patient/ben").await;
    let group = body(app.get("Group/pivot-attribution-pe-5").await).await;
    assert_eq!(group["quantity"], 1);
}

async fn excluded_recipients_are_not_attributed(app: TestApp) {
    pivot_entities(&app).await;
    app.put("Patient/dual", &recipient("dual", "39201", "dual-eligible"))
        .await;
    let dual = body(app.get("Patient/dual").await).await;
    assert!(extension(&dual, ATTRIBUTED).is_none(), "{dual}");
    assert_eq!(region_of(&dual), "3");

    app.put("Patient/cruz", &recipient("cruz", "39202", "maternity"))
        .await;
    let cruz = body(app.get("Patient/cruz").await).await;
    assert!(extension(&cruz, ATTRIBUTED).is_some());
    // Medicare coverage found later (an MC identifier): the membership is closed
    let mut medicare = cruz.clone();
    medicare["identifier"] = json!([{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MC"}]},"system":"urn:example:medicare","value":"1EG4TE5MK73"}]);
    app.put("Patient/cruz", &medicare).await;
    let cruz = body(app.get("Patient/cruz").await).await;
    assert!(extension(&cruz, ATTRIBUTED).is_none(), "{cruz}");
    // a waiver category added to a recipient excludes her too
    app.put("Patient/dee", &recipient("dee", "39201", "plan-first"))
        .await;
    let mut waiver = body(app.get("Patient/dee").await).await;
    if let Some(list) = waiver["extension"].as_array_mut() {
        list.push(json!({"url":ELIGIBILITY,"valueCoding":{"system":"http://example.org/fhir/pivot/CodeSystem/pivot-eligibility","code":"hcbs-waiver"}}));
    }
    app.put("Patient/dee", &waiver).await;

    let group = body(app.get("Group/pivot-attribution-pe-3").await).await;
    assert_eq!(group["quantity"], 0);
    assert_eq!(
        members(&group),
        vec![
            ("Patient/cruz".into(), true, true),
            ("Patient/dee".into(), true, true)
        ]
    );
    let attributed = body(app.get("Patient?attributed-entity=Organization/pe-3").await).await;
    assert_eq!(attributed["entry"].as_array().map_or(0, Vec::len), 0);
}
