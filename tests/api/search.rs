//! Search (search.html): each parameter type, modifiers, prefixes, chains, _has, includes,
//! paging and result parameters, checking the exact set of matches.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, body, expect_outcome, send};

backend_tests!(
    string_parameters,
    token_parameters,
    reference_parameters_chains_and_has,
    date_parameters_and_precision,
    quantity_and_number_parameters,
    missing_modifier,
    includes_and_revincludes,
    paging_sorting_and_result_parameters,
    unknown_and_malformed_parameters,
    entry_points,
    composite_parameters,
    token_hierarchy_modifiers,
    full_text_parameters,
);

/// `_text` (narrative) and `_content` (every text of the resource): each word of a value begins
/// a word of the resource, case and accents ignored; commas are OR, `&` is AND.
async fn full_text_parameters(app: TestApp) {
    let div = |text: &str| format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{text}</div>");
    seed(
        &app,
        &[
            json!({"resourceType":"Condition","id":"food","subject":{"reference":"Patient/p"},
                "text":{"status":"generated","div":div("Food insecurity &amp; <b>housing</b> instability")},
                "code":{"text":"Food insecurity"},"note":[{"text":"Referred to the Eastside food bank"}]}),
            json!({"resourceType":"Condition","id":"housing","subject":{"reference":"Patient/p"},
                "text":{"status":"generated","div":div("Homelessness")},
                "code":{"coding":[{"system":"http://snomed.info/sct","code":"32911000","display":"Homeless"}]},
                "note":[{"text":"Staying at a shelter in München"}]}),
            json!({"resourceType":"Condition","id":"plain","subject":{"reference":"Patient/p"},
                "code":{"text":"Transportation insecurity"}}),
            json!({"resourceType":"Patient","id":"p","name":[{"family":"Foodman"}]}),
        ],
    )
    .await;
    assert_eq!(ids(&app, "Condition?_text=housing").await, set(&["food"]));
    assert_eq!(
        ids(&app, "Condition?_text=HOME").await,
        set(&["housing"]),
        "prefix of a word, case-insensitive"
    );
    assert_eq!(
        ids(&app, "Condition?_text=insecurity").await,
        set(&["food"]),
        "_text is the narrative only"
    );
    assert_eq!(
        ids(&app, "Condition?_content=insecurity").await,
        set(&["food", "plain"])
    );
    assert_eq!(
        ids(&app, "Condition?_content=food%20bank").await,
        set(&["food"]),
        "every word must match"
    );
    assert_eq!(
        ids(&app, "Condition?_content=food%20shelter").await,
        set(&[])
    );
    assert_eq!(
        ids(&app, "Condition?_content=bank,shelter").await,
        set(&["food", "housing"]),
        "comma is OR"
    );
    assert_eq!(
        ids(&app, "Condition?_content=munchen").await,
        set(&["housing"]),
        "accents ignored"
    );
    assert_eq!(
        ids(&app, "Condition?_content=homeless").await,
        set(&["housing"]),
        "a coding's display"
    );
    assert_eq!(
        ids(&app, "Condition?_content=insecurity&_text=food").await,
        set(&["food"])
    );
    assert_eq!(
        ids(&app, "Condition?_content=snomed").await,
        set(&[]),
        "code system URLs are not content"
    );
    assert_eq!(ids(&app, "Patient?_content=foodman").await, set(&["p"]));
    assert_eq!(
        ids(&app, "Condition?_text:missing=true").await,
        set(&["plain"])
    );
    // an update replaces the words
    let changed = json!({"resourceType":"Condition","id":"plain","subject":{"reference":"Patient/p"},
        "code":{"text":"Utility shutoff"}});
    seed(&app, std::slice::from_ref(&changed)).await;
    assert_eq!(
        ids(&app, "Condition?_content=transportation").await,
        set(&[])
    );
    assert_eq!(
        ids(&app, "Condition?_content=utility").await,
        set(&["plain"])
    );
    expect_outcome(app.get("Condition?_content=%20-%20").await, 400, "value").await;
    let strict = send(
        app.request(Method::GET, "Condition?_content:exact=food")
            .header("Prefer", "handling=strict"),
    )
    .await;
    expect_outcome(strict, 400, "not-supported").await;
}

/// Token `:above` / `:below` walk the code system's hierarchy (condition-clinical: `inactive`
/// subsumes `remission` and `resolved`; v3 RoleCode: FAMMEMB > PRN > MTH, FAMMEMB > SIB).
async fn token_hierarchy_modifiers(app: TestApp) {
    const CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
    const ROLE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
    let condition = |id: &str, status: &str| {
        json!({"resourceType":"Condition","id":id,"subject":{"reference":"Patient/p"},
            "clinicalStatus":{"coding":[{"system":CLINICAL,"code":status}]},
            "code":{"text":"Food insecurity"}})
    };
    let related = |id: &str, system: &str, code: &str| {
        json!({"resourceType":"RelatedPerson","id":id,"patient":{"reference":"Patient/p"},
            "relationship":[{"coding":[{"system":system,"code":code}]}]})
    };
    seed(
        &app,
        &[
            json!({"resourceType":"Patient","id":"p"}),
            condition("c-active", "active"),
            condition("c-relapse", "relapse"),
            condition("c-inactive", "inactive"),
            condition("c-remission", "remission"),
            condition("c-resolved", "resolved"),
            related("mother", ROLE, "MTH"),
            related("sister", ROLE, "SIB"),
            related("parent", ROLE, "PRN"),
            related("friend", ROLE, "FRND"),
            related("other-system", "urn:other", "MTH"),
        ],
    )
    .await;
    assert_eq!(
        ids(
            &app,
            &format!("Condition?clinical-status:below={CLINICAL}|inactive")
        )
        .await,
        set(&["c-inactive", "c-remission", "c-resolved"])
    );
    assert_eq!(
        ids(
            &app,
            &format!("Condition?clinical-status:below={CLINICAL}|relapse")
        )
        .await,
        set(&["c-relapse"]),
        "a leaf is below itself only"
    );
    assert_eq!(
        ids(
            &app,
            &format!("Condition?clinical-status:above={CLINICAL}|remission")
        )
        .await,
        set(&["c-inactive", "c-remission"])
    );
    assert_eq!(
        ids(
            &app,
            &format!("Condition?clinical-status:below={CLINICAL}|active,{CLINICAL}|resolved")
        )
        .await,
        set(&["c-active", "c-relapse", "c-resolved"]),
        "comma is OR"
    );
    assert_eq!(
        ids(
            &app,
            &format!("RelatedPerson?relationship:below={ROLE}|FAMMEMB")
        )
        .await,
        set(&["mother", "sister", "parent"]),
        "several levels, and only in this system"
    );
    assert_eq!(
        ids(
            &app,
            &format!("RelatedPerson?relationship:below={ROLE}|PRN")
        )
        .await,
        set(&["mother", "parent"])
    );
    assert_eq!(
        ids(
            &app,
            &format!("RelatedPerson?relationship:above={ROLE}|NMTHF")
        )
        .await,
        set(&["mother", "parent"]),
        "NMTHF is below NMTH, MTH, PRN and FAMMEMB"
    );
    // no hierarchy known, no system, or a code a held code system does not have: 400, in
    // both handling modes (ignoring it would widen the answer)
    for query in [
        "Condition?code:below=http://snomed.info/sct|404684003".to_string(),
        "Condition?clinical-status:below=inactive".to_string(),
        "Patient?eligibility-category:below=http://example.org/fhir/pivot/CodeSystem/pivot-eligibility|no-such-code".to_string(),
    ] {
        expect_outcome(app.get(&query).await, 400, "value").await;
    }
}

async fn composite_parameters(app: TestApp) {
    let bp = |id: &str, systolic: i64, diastolic: i64| -> Value {
        json!({"resourceType":"Observation","id":id,"status":"final","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},
            "component":[
                {"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":systolic,"system":"http://unitsofmeasure.org","code":"mm[Hg]"}},
                {"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":diastolic,"system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]})
    };
    seed(&app, &[bp("bp1", 150, 70), bp("bp2", 110, 95),
        json!({"resourceType":"Observation","id":"food","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"88122-7"}]},
               "valueCodeableConcept":{"coding":[{"system":"http://loinc.org","code":"LA28397-0"}]}})]).await;
    assert_eq!(
        ids(
            &app,
            "Observation?component-code-value-quantity=http://loinc.org|8480-6$gt140"
        )
        .await,
        set(&["bp1"])
    );
    // the parts must come from the same component: bp2's 95 is diastolic, not systolic
    assert_eq!(
        ids(
            &app,
            "Observation?component-code-value-quantity=http://loinc.org|8480-6$gt90"
        )
        .await,
        set(&["bp1", "bp2"])
    );
    assert_eq!(
        ids(
            &app,
            "Observation?component-code-value-quantity=http://loinc.org|8462-4$gt90"
        )
        .await,
        set(&["bp2"])
    );
    assert_eq!(
        ids(
            &app,
            "Observation?component-code-value-quantity=8480-6$lt100"
        )
        .await,
        set(&[])
    );
    assert_eq!(
        ids(
            &app,
            "Observation?code-value-concept=http://loinc.org|88122-7$http://loinc.org|LA28397-0"
        )
        .await,
        set(&["food"])
    );
    assert_eq!(
        ids(&app, "Observation?code-value-concept=88122-7$LA28398-8").await,
        set(&[])
    );
    expect_outcome(
        app.get("Observation?code-value-concept=88122-7").await,
        400,
        "value",
    )
    .await;
}

/// The ids matched by a search (entries with search.mode = match).
async fn ids(app: &TestApp, query: &str) -> BTreeSet<String> {
    let response = app.get(query).await;
    assert_eq!(response.status().as_u16(), 200, "{query}");
    let bundle = body(response).await;
    assert_eq!(bundle["type"], "searchset");
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["search"]["mode"] == "match")
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn seed(app: &TestApp, resources: &[Value]) {
    for resource in resources {
        let path = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap_or_default(),
            resource["id"].as_str().unwrap_or_default()
        );
        let status = app.put(&path, resource).await.status().as_u16();
        assert!(status == 201 || status == 200, "{path}: {status}");
    }
}

async fn patients(app: &TestApp) {
    seed(
        app,
        &[
            json!({"resourceType":"Patient","id":"ana","name":[{"family":"Muñoz","given":["Ana"]}],"gender":"female","birthDate":"1990-02-14",
                "identifier":[{"system":"https://medicaid.example.gov/id","value":"MCD-1"}],"active":true,"telecom":[{"system":"email","value":"ana@example.org"}]}),
            json!({"resourceType":"Patient","id":"ben","name":[{"family":"Munro","given":["Ben"]}],"gender":"male","birthDate":"1990",
                "identifier":[{"system":"https://medicaid.example.gov/id","value":"MCD-2"},{"system":"urn:other","value":"MCD-1"}]}),
            json!({"resourceType":"Patient","id":"cy","name":[{"family":"Smith","given":["Cy"],"text":"Cy Smith"}],"gender":"other","birthDate":"2001-12-31"}),
        ],
    )
    .await;
}

async fn string_parameters(app: TestApp) {
    patients(&app).await;
    assert_eq!(
        ids(&app, "Patient?family=mun").await,
        set(&["ana", "ben"]),
        "prefix, case-insensitive"
    );
    assert_eq!(
        ids(&app, "Patient?family=MUNOZ").await,
        set(&["ana"]),
        "accent-insensitive"
    );
    assert_eq!(ids(&app, "Patient?family:exact=Muñoz").await, set(&["ana"]));
    assert_eq!(ids(&app, "Patient?family:exact=muñoz").await, set(&[]));
    assert_eq!(ids(&app, "Patient?name:contains=mit").await, set(&["cy"]));
    assert_eq!(
        ids(&app, "Patient?name=ana,cy").await,
        set(&["ana", "cy"]),
        "comma is OR"
    );
    assert_eq!(
        ids(&app, "Patient?family=mun&given=ben").await,
        set(&["ben"]),
        "& is AND"
    );
    assert_eq!(
        ids(&app, "Patient?name:contains=%25").await,
        set(&[]),
        "LIKE metacharacters are literal"
    );
}

async fn token_parameters(app: TestApp) {
    patients(&app).await;
    assert_eq!(
        ids(
            &app,
            "Patient?identifier=https://medicaid.example.gov/id|MCD-1"
        )
        .await,
        set(&["ana"])
    );
    assert_eq!(
        ids(&app, "Patient?identifier=MCD-1").await,
        set(&["ana", "ben"]),
        "any system"
    );
    assert_eq!(
        ids(&app, "Patient?identifier=urn:other|").await,
        set(&["ben"]),
        "system only"
    );
    assert_eq!(ids(&app, "Patient?gender=female").await, set(&["ana"]));
    assert_eq!(
        ids(&app, "Patient?gender:not=female").await,
        set(&["ben", "cy"])
    );
    assert_eq!(
        ids(&app, "Patient?gender=|female").await,
        set(&["ana"]),
        "a plain code has no system"
    );
    assert_eq!(ids(&app, "Patient?active=true").await, set(&["ana"]));
    assert_eq!(
        ids(&app, "Patient?email=ana@example.org").await,
        set(&["ana"])
    );
    seed(&app, &[json!({"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"88122-7","display":"Worried food would run out"}],"text":"Food worry"}})]).await;
    assert_eq!(
        ids(&app, "Observation?code:text=worried").await,
        set(&["o1"])
    );
    assert_eq!(ids(&app, "Observation?code:text=food").await, set(&["o1"]));
    assert_eq!(
        ids(&app, "Observation?code=http://loinc.org|88122-7").await,
        set(&["o1"])
    );
    assert_eq!(
        ids(&app, "Observation?code=http://snomed.info/sct|88122-7").await,
        set(&[])
    );
}

async fn reference_parameters_chains_and_has(app: TestApp) {
    patients(&app).await;
    seed(
        &app,
        &[
            json!({"resourceType":"Organization","id":"bank","name":"Food Bank"}),
            json!({"resourceType":"Observation","id":"o-ana","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"1"}]},"subject":{"reference":"Patient/ana"}}),
            json!({"resourceType":"Observation","id":"o-ben","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2"}]},"subject":{"reference":"Patient/ben"}}),
            json!({"resourceType":"Observation","id":"o-abs","status":"final","code":{"text":"x"},"subject":{"reference":"http://other.example/fhir/Patient/ana"}}),
            json!({"resourceType":"Task","id":"t1","status":"requested","intent":"order","for":{"reference":"Patient/ana"},"owner":{"reference":"Organization/bank"}}),
        ],
    )
    .await;
    assert_eq!(
        ids(&app, "Observation?subject=Patient/ana").await,
        set(&["o-ana", "o-abs"])
    );
    assert_eq!(
        ids(&app, "Observation?subject:Patient=ben").await,
        set(&["o-ben"])
    );
    assert_eq!(
        ids(&app, "Observation?patient=ana").await,
        set(&["o-ana", "o-abs"]),
        "patient has one target type"
    );
    assert_eq!(
        ids(
            &app,
            "Observation?subject=http://other.example/fhir/Patient/ana"
        )
        .await,
        set(&["o-ana", "o-abs"])
    );
    assert_eq!(
        ids(&app, "Observation?subject:Patient.name=ben").await,
        set(&["o-ben"]),
        "chain"
    );
    assert_eq!(
        ids(
            &app,
            "Observation?patient.identifier=https://medicaid.example.gov/id|MCD-1"
        )
        .await,
        set(&["o-ana", "o-abs"])
    );
    assert_eq!(
        ids(&app, "Task?owner=Organization/bank&status=requested").await,
        set(&["t1"]),
        "a CBO inbox"
    );
    assert_eq!(ids(&app, "Task?owner.name=food").await, set(&["t1"]));
    assert_eq!(
        ids(
            &app,
            "Patient?_has:Observation:subject:code=http://loinc.org|2"
        )
        .await,
        set(&["ben"]),
        "reverse chain"
    );
    assert_eq!(
        ids(&app, "Patient?_has:Task:patient:owner=Organization/bank").await,
        set(&["ana"])
    );
    // _list: the members of a List
    app.put(
        "List/worklist",
        &json!({"resourceType":"List","id":"worklist","status":"current","mode":"working",
                "entry":[{"item":{"reference":"Patient/ana"}},{"item":{"reference":"Patient/cy"}},
                         {"item":{"reference":"Observation/o-ben"}}]}),
    )
    .await;
    assert_eq!(
        ids(&app, "Patient?_list=worklist").await,
        set(&["ana", "cy"])
    );
    assert_eq!(
        ids(&app, "Observation?_list=worklist").await,
        set(&["o-ben"])
    );
    assert_eq!(
        ids(&app, "Patient?_list=worklist&gender=female").await,
        set(&["ana"])
    );
    assert_eq!(ids(&app, "Patient?_list=no-such-list").await, set(&[]));
    expect_outcome(
        app.request(reqwest::Method::GET, "Patient?_list=$current-problems")
            .header("Prefer", "handling=strict")
            .send()
            .await
            .unwrap_or_else(|err| panic!("{err}")),
        400,
        "not-supported",
    )
    .await;
    expect_outcome(app.get("Observation?code.name=x").await, 400, "value").await;
}

async fn date_parameters_and_precision(app: TestApp) {
    patients(&app).await; // ana 1990-02-14, ben 1990 (the whole year), cy 2001-12-31
    assert_eq!(
        ids(&app, "Patient?birthdate=1990-02-14").await,
        set(&["ana"]),
        "ben's year is not within the day"
    );
    assert_eq!(
        ids(&app, "Patient?birthdate=1990").await,
        set(&["ana", "ben"])
    );
    assert_eq!(ids(&app, "Patient?birthdate=1990-02").await, set(&["ana"]));
    assert_eq!(
        ids(&app, "Patient?birthdate=gt1990-06-01").await,
        set(&["ben", "cy"]),
        "ben's year extends past June"
    );
    assert_eq!(
        ids(&app, "Patient?birthdate=lt1990-06-01").await,
        set(&["ana", "ben"])
    );
    assert_eq!(
        ids(&app, "Patient?birthdate=ge2001-12-31").await,
        set(&["cy"])
    );
    assert_eq!(ids(&app, "Patient?birthdate=le1989-12-31").await, set(&[]));
    assert_eq!(
        ids(&app, "Patient?birthdate=sa1990-12-31").await,
        set(&["cy"])
    );
    assert_eq!(
        ids(&app, "Patient?birthdate=eb1990-02-15").await,
        set(&["ana"])
    );
    assert_eq!(ids(&app, "Patient?birthdate=ne1990").await, set(&["cy"]));
    assert_eq!(
        ids(&app, "Patient?birthdate=2001-12-31T23:00:00Z").await,
        set(&[]),
        "a second does not contain cy's whole day"
    );
    seed(&app, &[json!({"resourceType":"Observation","id":"late","status":"final","code":{"text":"x"},"effectiveDateTime":"2001-12-31T23:30:00Z"})]).await;
    assert_eq!(
        ids(&app, "Observation?date=2002-01-01T00:30:00%2B01:00").await,
        set(&["late"]),
        "time zones are honoured"
    );
    assert_eq!(
        ids(&app, "Observation?date=2001-12-31").await,
        set(&["late"])
    );
    assert_eq!(
        ids(&app, "Observation?date=2002-01-01").await,
        set(&[]),
        "UTC day, not the local one"
    );
    assert_eq!(
        ids(&app, "Patient?birthdate=ge1990&birthdate=lt1991").await,
        set(&["ana", "ben"]),
        "a range"
    );
    seed(&app, &[json!({"resourceType":"Encounter","id":"e1","status":"finished","class":{"code":"AMB"},"period":{"start":"2026-01-10","end":"2026-01-12"}}),
                 json!({"resourceType":"Encounter","id":"e2","status":"in-progress","class":{"code":"AMB"},"period":{"start":"2026-02-01"}})]).await;
    assert_eq!(
        ids(&app, "Encounter?date=gt2026-03-01").await,
        set(&["e2"]),
        "an open period extends forever"
    );
    assert_eq!(ids(&app, "Encounter?date=2026-01").await, set(&["e1"]));
    expect_outcome(app.get("Patient?birthdate=1990-13").await, 400, "value").await;
    expect_outcome(app.get("Patient?birthdate=xx1990").await, 400, "value").await;
}

async fn quantity_and_number_parameters(app: TestApp) {
    let observation = |id: &str, value: &str, code: &str| -> Value {
        serde_json::from_str(&format!(r#"{{"resourceType":"Observation","id":"{id}","status":"final","code":{{"text":"w"}},"valueQuantity":{{"value":{value},"system":"http://unitsofmeasure.org","code":"{code}"}}}}"#)).unwrap_or_default()
    };
    seed(
        &app,
        &[
            observation("q1", "5.4", "mg"),
            observation("q2", "5.45", "mg"),
            observation("q3", "100", "kg"),
            observation("q4", "5.4", "g"),
        ],
    )
    .await;
    assert_eq!(
        ids(&app, "Observation?value-quantity=5.4").await,
        set(&["q1", "q4"]),
        "5.4 means [5.35, 5.45)"
    );
    assert_eq!(
        ids(
            &app,
            "Observation?value-quantity=5.4|http://unitsofmeasure.org|mg"
        )
        .await,
        set(&["q1"])
    );
    assert_eq!(
        ids(
            &app,
            "Observation?value-quantity=5.40|http://unitsofmeasure.org|mg"
        )
        .await,
        set(&["q1"])
    );
    assert_eq!(
        ids(&app, "Observation?value-quantity=gt5.4").await,
        set(&["q2", "q3"])
    );
    assert_eq!(
        ids(&app, "Observation?value-quantity=le5.45").await,
        set(&["q1", "q2", "q4"])
    );
    assert_eq!(
        ids(&app, "Observation?value-quantity=ap100||kg").await,
        set(&["q3"])
    );
    assert_eq!(
        ids(&app, "Observation?value-quantity=1e2").await,
        set(&["q3"])
    );
    seed(&app, &[json!({"resourceType":"RiskAssessment","id":"r1","status":"final","subject":{"reference":"Patient/x"},"prediction":[{"probabilityDecimal":0.25}]})]).await;
    assert_eq!(
        ids(&app, "RiskAssessment?probability=gt0.2").await,
        set(&["r1"])
    );
    assert_eq!(
        ids(&app, "RiskAssessment?probability=lt0.2").await,
        set(&[])
    );
    expect_outcome(
        app.get("Observation?value-quantity=lots").await,
        400,
        "value",
    )
    .await;
}

async fn missing_modifier(app: TestApp) {
    patients(&app).await;
    assert_eq!(
        ids(&app, "Patient?email:missing=true").await,
        set(&["ben", "cy"])
    );
    assert_eq!(
        ids(&app, "Patient?email:missing=false").await,
        set(&["ana"])
    );
    assert_eq!(ids(&app, "Patient?birthdate:missing=true").await, set(&[]));
}

async fn includes_and_revincludes(app: TestApp) {
    patients(&app).await;
    seed(
        &app,
        &[
            json!({"resourceType":"Organization","id":"bank","name":"Food Bank"}),
            json!({"resourceType":"ServiceRequest","id":"sr1","status":"active","intent":"order","subject":{"reference":"Patient/ana"},"performer":[{"reference":"Organization/bank"}]}),
            json!({"resourceType":"ServiceRequest","id":"sr2","status":"completed","intent":"order","subject":{"reference":"Patient/ben"}}),
            json!({"resourceType":"Task","id":"t1","status":"requested","intent":"order","focus":{"reference":"ServiceRequest/sr1"},"for":{"reference":"Patient/ana"}}),
        ],
    )
    .await;
    let bundle = body(app.get("ServiceRequest?status=active&_include=ServiceRequest:subject&_include=ServiceRequest:performer").await).await;
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    let modes: BTreeSet<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap_or_default(),
                    e["resource"]["id"].as_str().unwrap_or_default()
                ),
                e["search"]["mode"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("ServiceRequest/sr1", "match"),
        ("Patient/ana", "include"),
        ("Organization/bank", "include"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(modes, expected);
    assert_eq!(bundle["total"], 1, "includes are not counted");
    let bundle = body(
        app.get("ServiceRequest?_id=sr1&_revinclude=Task:focus")
            .await,
    )
    .await;
    let included: Vec<&str> = bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["search"]["mode"] == "include")
                .filter_map(|x| x["resource"]["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(included, vec!["t1"]);
    let bundle = body(
        app.get("Task?_id=t1&_include=Task:focus&_include:iterate=ServiceRequest:performer")
            .await,
    )
    .await;
    let included: BTreeSet<&str> = bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["search"]["mode"] == "include")
                .filter_map(|x| x["resource"]["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(included, ["sr1", "bank"].into_iter().collect());
    expect_outcome(
        app.get("ServiceRequest?_include=ServiceRequest:status")
            .await,
        400,
        "value",
    )
    .await;
}

async fn paging_sorting_and_result_parameters(app: TestApp) {
    for i in 0..7 {
        seed(&app, &[json!({"resourceType":"Patient","id":format!("p{i}"),"name":[{"family":format!("Fam{}", 6 - i)}],"birthDate":format!("200{i}-01-01")})]).await;
    }
    // keyset pages: every match once, and a write between pages does not disturb them
    let mut seen = Vec::new();
    let mut url = format!("{}/Patient?_count=3", app.base);
    let mut pages = 0;
    loop {
        let page = body(app.get(&url).await).await;
        pages += 1;
        seen.extend(
            page["entry"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_string)),
        );
        if pages == 1 {
            app.put(
                "Patient/p0",
                &json!({"resourceType":"Patient","id":"p0","active":false}),
            )
            .await;
            assert!(
                page.get("total").is_none(),
                "no total by default when more pages follow"
            );
        }
        match page["link"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["relation"] == "next").cloned())
        {
            Some(next) => url = next["url"].as_str().unwrap_or_default().to_string(),
            None => {
                let previous = page["link"]
                    .as_array()
                    .and_then(|l| l.iter().find(|x| x["relation"] == "previous").cloned());
                let previous_page = body(
                    app.get(
                        previous
                            .and_then(|p| p["url"].as_str().map(str::to_string))
                            .unwrap_or_default()
                            .as_str(),
                    )
                    .await,
                )
                .await;
                assert_eq!(
                    previous_page["entry"].as_array().map(Vec::len),
                    Some(3),
                    "previous link"
                );
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 7);
    let accurate = body(app.get("Patient?_count=2&_total=accurate").await).await;
    assert_eq!(accurate["total"], 7);
    let count = body(app.get("Patient?_summary=count").await).await;
    assert_eq!(count["total"], 7);
    assert!(count.get("entry").is_none());
    let sorted = body(app.get("Patient?_sort=family&_count=3").await).await;
    let order: Vec<&str> = sorted["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["resource"]["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(order, vec!["p6", "p5", "p4"]);
    let sorted = body(app.get("Patient?_sort=-birthdate&_count=2").await).await;
    let order: Vec<&str> = sorted["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["resource"]["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(order, vec!["p6", "p5"]);
    let elements = body(app.get("Patient?_id=p1&_elements=birthDate").await).await;
    let resource = &elements["entry"][0]["resource"];
    assert_eq!(resource["birthDate"], "2001-01-01");
    assert!(resource.get("name").is_none());
    assert_eq!(resource["meta"]["tag"][0]["code"], "SUBSETTED");
    let summary = body(app.get("Patient?_id=p1&_summary=true").await).await;
    assert!(
        summary["entry"][0]["resource"].get("name").is_some(),
        "name is a summary element"
    );
    assert_eq!(ids(&app, "Patient?_id=p1,p2").await, set(&["p1", "p2"]));
    let since = body(app.get("Patient/p0").await).await["meta"]["lastUpdated"]
        .as_str()
        .unwrap_or_default()
        .replace('+', "%2B");
    assert_eq!(
        ids(&app, &format!("Patient?_lastUpdated=ge{since}")).await,
        set(&["p0"])
    );
}

async fn unknown_and_malformed_parameters(app: TestApp) {
    patients(&app).await;
    let lenient = body(app.get("Patient?favourite-colour=blue&gender=male").await).await;
    let entries = lenient["entry"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["search"]["mode"] == "match")
            .count(),
        1
    );
    let outcome = entries
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .cloned()
        .unwrap_or_default();
    assert_eq!(outcome["resource"]["issue"][0]["severity"], "warning");
    let self_link = lenient["link"][0]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !self_link.contains("favourite"),
        "ignored parameters are left out of the self link: {self_link}"
    );
    assert!(self_link.contains("gender=male"));
    let strict = send(
        app.request(Method::GET, "Patient?favourite-colour=blue")
            .header("Prefer", "handling=strict"),
    )
    .await;
    expect_outcome(strict, 400, "not-supported").await;
    let strict = send(
        app.request(Method::GET, "Patient?name:above=x")
            .header("Prefer", "handling=strict"),
    )
    .await;
    expect_outcome(strict, 400, "not-supported").await;
    expect_outcome(app.get("Patient?_count=-1").await, 400, "value").await;
    assert_eq!(
        app.get("Patient?_count=1000000000").await.status().as_u16(),
        200,
        "a huge _count is capped, not refused"
    );
}

async fn entry_points(app: TestApp) {
    patients(&app).await;
    seed(&app, &[json!({"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/ana"}}),
                 json!({"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/ana"}}),
                 json!({"resourceType":"Condition","id":"c2","subject":{"reference":"Patient/ben"}})]).await;
    let posted = send(
        app.request(Method::POST, "Patient/_search")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("family=mun&gender=female"),
    )
    .await;
    assert_eq!(posted.status().as_u16(), 200);
    let bundle = body(posted).await;
    assert_eq!(bundle["entry"][0]["resource"]["id"], "ana");
    assert_eq!(
        ids(&app, "Patient/ana/Condition").await,
        set(&["c1"]),
        "compartment search"
    );
    assert_eq!(
        ids(&app, "Patient/ana/Observation?code:text=x").await,
        set(&["o1"])
    );
    let system = body(
        app.get(&format!(
            "{}?_type=Observation,Condition&_count=10",
            app.base
        ))
        .await,
    )
    .await;
    assert_eq!(system["entry"].as_array().map(Vec::len), Some(3));
    let system = body(app.get(&format!("{}?_id=ana", app.base)).await).await;
    assert_eq!(system["entry"][0]["resource"]["resourceType"], "Patient");
    expect_outcome(
        app.get(&format!("{}?gender=male", app.base)).await,
        400,
        "not-supported",
    )
    .await;
    expect_outcome(app.get("Patient/ana/Organization").await, 404, "not-found").await;
}
