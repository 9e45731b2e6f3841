//! The official FHIR PATCH test cases (fhir-test-cases, r4/patch): every JSON Patch case of
//! json-patch-tests.json and every FHIRPath Patch case of fhir-patch-tests.json (converted once
//! from the official FHIR XML). A case fails the run unless it passes or is in a skip list below.

use pivot_fhir::service::patch::{apply_fhirpath_patch, apply_json_patch};
use serde_json::Value;

/// JSON Patch cases not expected to pass, by `comment`, each with the reason.
const JSON_PATCH_SKIPS: &[(&str, &str)] = &[];

/// FHIRPath Patch cases not expected to pass, by `name`, each with the reason.
const FHIRPATH_PATCH_SKIPS: &[(&str, &str)] = &[];

fn load(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/fixtures/patch/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    match serde_json::from_str(&text) {
        Ok(Value::Array(cases)) => cases,
        other => panic!("{path} is not a JSON array of cases: {other:?}"),
    }
}

/// Runs `cases`, each described by `check` (None: passed), and reports against `skips`.
fn run(
    suite: &str,
    cases: &[Value],
    label: &str,
    skips: &[(&str, &str)],
    check: impl Fn(&Value) -> Option<String>,
) {
    let mut failures = Vec::new();
    let mut passed = 0;
    let mut skipped = 0;
    let mut stale_skips = Vec::new();
    for case in cases {
        let name = case[label].as_str().unwrap_or("(unnamed)");
        let skip = skips.iter().find(|(skipped_name, _)| *skipped_name == name);
        match (check(case), skip) {
            (None, None) => passed += 1,
            (None, Some(_)) => stale_skips.push(name.to_string()),
            (Some(_), Some(_)) => skipped += 1,
            (Some(problem), None) => failures.push(format!("{name}: {problem}")),
        }
    }
    println!(
        "{suite}: {passed} passed, {skipped} skipped, {} failed of {}",
        failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{suite} failures:\n{}",
        failures.join("\n")
    );
    assert!(
        stale_skips.is_empty(),
        "{suite} cases that pass but are skipped: {stale_skips:?}"
    );
    assert_eq!(passed + skipped, cases.len());
}

#[test]
fn json_patch_cases() {
    let cases = load("json-patch-tests.json");
    assert_eq!(cases.len(), 16);
    run("JSON Patch", &cases, "comment", JSON_PATCH_SKIPS, |case| {
        let result = apply_json_patch(&case["doc"], &case["patch"]);
        match (result, case.get("expected"), case.get("error")) {
            (Ok(actual), Some(expected), _) if actual == *expected => None,
            (Ok(actual), Some(expected), _) => Some(format!("expected {expected}, got {actual}")),
            (Err(_), None, Some(_)) => None,
            (Ok(actual), None, Some(error)) => {
                Some(format!("expected the error {error}, got {actual}"))
            }
            (Err(error), _, _) => Some(format!("unexpected error: {error}")),
            (Ok(_), None, None) => Some("the case has neither expected nor error".into()),
        }
    });
}

#[test]
fn fhirpath_patch_cases() {
    let cases = load("fhir-patch-tests.json");
    assert_eq!(cases.len(), 33);
    run(
        "FHIRPath Patch",
        &cases,
        "name",
        FHIRPATH_PATCH_SKIPS,
        |case| {
            let result = apply_fhirpath_patch(&case["input"], &case["diff"]);
            match (result, case.get("output"), case.get("error")) {
                (Ok(actual), Some(expected), _) if actual == *expected => None,
                (Ok(actual), Some(expected), _) => {
                    Some(format!("expected {expected}, got {actual}"))
                }
                // The one official error case states its message; ours says the same.
                (Err(error), None, Some(expected))
                    if error
                        .message
                        .contains(expected.as_str().unwrap_or_default()) =>
                {
                    None
                }
                (Err(error), None, Some(expected)) => {
                    Some(format!("expected the error '{expected}', got '{error}'"))
                }
                (Ok(actual), None, Some(error)) => {
                    Some(format!("expected the error '{error}', got {actual}"))
                }
                (Err(error), _, _) => Some(format!("unexpected error: {error}")),
                (Ok(_), None, None) => Some("the case has neither output nor error".into()),
            }
        },
    );
}
