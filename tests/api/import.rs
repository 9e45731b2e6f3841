//! `pivot-fhir import`: NDJSON and Bundle files into the server's database through the service
//! layer (validated, indexed), resumable, with one OperationOutcome per failure.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, body};

backend_tests!(import_loads_reports_and_resumes);

fn run_import(app: &TestApp, args: &[&std::path::Path]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pivot-fhir"))
        .arg("import")
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .output()
        .unwrap_or_else(|err| panic!("cannot run pivot-fhir import: {err}"));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn lines(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

async fn import_loads_reports_and_resumes(app: TestApp) {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let ndjson = dir.path().join("patients.ndjson");
    let first = [
        json!({"resourceType":"Patient","id":"i1","active":true}),
        json!({"resourceType":"Patient","id":"i2","unknownElement":1}),
        json!({"resourceType":"Patient","id":"i3","birthDate":"1980-02-30"}),
    ];
    std::fs::write(&ndjson, lines(&first) + "\n").unwrap_or_else(|err| panic!("{err}"));
    let (code, stdout, stderr) = run_import(&app, &[&ndjson]);
    assert_eq!(code, 2, "failures make the exit status 2: {stderr}");
    assert!(
        stderr.contains("resources") && stderr.contains("/s") && stderr.contains("ETA"),
        "{stderr}"
    );
    let failures: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|err| panic!("{err}: {l}")))
        .collect();
    // line 2 (unknown element) and line 4 (blank) fail, each with its OperationOutcome; line 3
    // fails if the server's validation refuses the date, as a REST write would
    let items: Vec<i64> = failures.iter().filter_map(|f| f["item"].as_i64()).collect();
    assert!(items.contains(&2) && items.contains(&4), "{stdout}");
    for failure in &failures {
        assert_eq!(failure["outcome"]["resourceType"], "OperationOutcome");
        assert_eq!(failure["outcome"]["issue"][0]["severity"], "error");
    }
    let rest_says = app
        .put(
            "Patient/i3",
            &json!({"resourceType":"Patient","id":"i3","birthDate":"1980-02-30"}),
        )
        .await
        .status()
        .as_u16();
    assert_eq!(
        items.contains(&3),
        rest_says >= 400,
        "import and REST agree on line 3"
    );
    let read = app.get("Patient/i1").await;
    assert_eq!(read.status().as_u16(), 200);
    assert_eq!(body(read).await["meta"]["versionId"], "1");
    assert_eq!(app.get("Patient/i2").await.status().as_u16(), 404);

    // resumed: only the lines added since are processed; i1 keeps version 1
    let more = [
        json!({"resourceType":"Patient","id":"i5","active":false}),
        json!({"resourceType":"Patient","id":"i6","active":true}),
    ];
    let mut text = std::fs::read_to_string(&ndjson).unwrap_or_default();
    text.push_str(&lines(&more));
    std::fs::write(&ndjson, text).unwrap_or_else(|err| panic!("{err}"));
    let (code, stdout, stderr) = run_import(&app, &[&ndjson]);
    assert_eq!(code, 2, "the earlier failures are still reported: {stderr}");
    assert!(
        stderr.contains("4 of 6 items were done by an earlier run"),
        "{stderr}"
    );
    assert_eq!(stdout.lines().count(), failures.len(), "{stdout}");
    assert_eq!(app.get("Patient/i6").await.status().as_u16(), 200);
    assert_eq!(
        body(app.get("Patient/i1").await).await["meta"]["versionId"],
        "1"
    );

    // a folder with a Bundle whose entries refer to each other by urn:uuid; indexed for search
    let folder = dir.path().join("bundles");
    std::fs::create_dir(&folder).unwrap_or_else(|err| panic!("{err}"));
    let patient_id = "0b6f3c2e-5a1d-4e8f-9c3b-2d7a1e4f5b60";
    let bundle = json!({"resourceType":"Bundle","type":"collection","entry":[
        {"fullUrl": format!("urn:uuid:{patient_id}"), "resource": {"resourceType":"Patient","active":true}},
        {"resource": {"resourceType":"Observation","status":"final","code":{"text":"housing"},
            "subject":{"reference": format!("urn:uuid:{patient_id}")}}}
    ]});
    std::fs::write(folder.join("b.json"), bundle.to_string()).unwrap_or_else(|err| panic!("{err}"));
    let (code, stdout, stderr) = run_import(&app, &[&folder]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let found = body(
        app.get(&format!("Observation?subject=Patient/{patient_id}"))
            .await,
    )
    .await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(
        app.get(&format!("Patient/{patient_id}"))
            .await
            .status()
            .as_u16(),
        200
    );
}
