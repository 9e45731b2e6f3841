use std::path::Path;

use serde_json::Value;

use super::*;

/// Official examples that break the R4 rules themselves, with the reason.
const INVALID_EXAMPLES: &[(&str, &str)] = &[
    (
        "codesystem-example.json",
        "the code chol-mass is defined twice (csd-1)",
    ),
    (
        "devicemetric-example.json",
        "DeviceMetric.parent refers to a DeviceDefinition; R4 allows Device only",
    ),
    (
        "deviceusestatement-example.json",
        "DeviceUseStatement.reasonReference refers to a Procedure, which R4 does not allow",
    ),
    (
        "medicationrequest0301.json",
        "MedicationRequest.dispenseRequest.performer refers to a Practitioner; R4 allows Organization only",
    ),
    (
        "Observation-clinical-gender.json",
        "Observation.performer refers to an Encounter, which R4 does not allow",
    ),
];

fn errors(resource: &Value) -> Vec<String> {
    validator()
        .validate(resource, &[])
        .into_iter()
        .filter(|i| {
            matches!(i.severity, Severity::Error | Severity::Fatal) || i.code == "processing"
        })
        .map(|i| {
            format!(
                "{} {} @{}",
                i.code,
                i.diagnostics,
                i.expression.unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn base_invariants_all_parse() {
    assert!(
        definitions::base().unparsed.is_empty(),
        "{:?}",
        definitions::base().unparsed
    );
}

#[test]
fn official_examples_validate_clean_against_the_base() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut failures = Vec::new();
    let mut count = 0;
    for folder in ["hl7-examples", "r4-examples"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(folder))
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for file in files {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if INVALID_EXAMPLES.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let Ok(resource) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            count += 1;
            for error in errors(&resource) {
                failures.push(format!("{name}: {error}"));
            }
        }
    }
    assert!(count > 250, "{count}");
    assert!(
        failures.is_empty(),
        "{} errors:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn program_fixtures_conform_to_the_profiles_they_claim() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/program");
    let mut failures = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(root)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let Ok(resource) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        for issue in validator().validate(&resource, &[]) {
            failures.push(format!(
                "{}: {:?} {} {} @{}",
                file.display(),
                issue.severity,
                issue.code,
                issue.diagnostics,
                issue.expression.unwrap_or_default()
            ));
        }
    }
    let errors: Vec<&String> = failures.iter().filter(|f| f.contains(": Error ")).collect();
    assert!(errors.is_empty(), "{}", failures.join("\n"));
}
