//! `pivot-fhir seed --demo`: the demo program passes the server's validation and gives the
//! worklists something to show: referrals in every Task status, seven Pivot Entities.

use crate::backend_tests;
use crate::helpers::{TestApp, body};

backend_tests!(the_demo_program_is_seeded_once);

fn seed(app: &TestApp) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pivot-fhir"))
        .args(["seed", "--demo"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .unwrap_or_else(|err| panic!("cannot run pivot-fhir seed: {err}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn total(app: &TestApp, query: &str) -> i64 {
    let found = body(app.get(&format!("{query}&_summary=count")).await).await;
    found["total"]
        .as_i64()
        .unwrap_or_else(|| panic!("{query}: {found}"))
}

async fn the_demo_program_is_seeded_once(app: TestApp) {
    let (ok, stderr) = seed(&app);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("seeded the demo program"), "{stderr}");
    assert_eq!(
        total(&app, "Organization?type=http://example.org/fhir/pivot/CodeSystem/pivot-organization-type|pivot-entity").await,
        7
    );
    assert_eq!(
        total(
            &app,
            "Patient?_profile=http://example.org/fhir/pivot/StructureDefinition/pivot-patient"
        )
        .await,
        pivot_fhir::seed::PATIENTS as i64
    );
    for status in [
        "draft",
        "requested",
        "accepted",
        "in-progress",
        "completed",
        "rejected",
        "cancelled",
        "on-hold",
        "failed",
        "entered-in-error",
    ] {
        assert!(
            total(&app, &format!("Task?status={status}")).await >= 1,
            "no {status} Task"
        );
    }
    // the CBO's inbox and a completed loop
    assert!(
        total(
            &app,
            "Task?owner=Organization/demo-food-bank&status=requested"
        )
        .await
            >= 1
    );
    assert!(total(&app, "ServiceRequest?status=completed").await >= 1);
    assert!(total(&app, "CarePlan?status=active").await >= 1);
    assert!(total(&app, "Observation?category=survey").await >= 100);
    // a second run leaves the data as it is
    let (ok, stderr) = seed(&app);
    assert!(ok && stderr.contains("already"), "{stderr}");
}
