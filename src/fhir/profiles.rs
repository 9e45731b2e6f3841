//! The program's own artefacts from `profiles/` (StructureDefinitions, ValueSets, CodeSystems,
//! SearchParameters, ...), embedded at build time.

use serde_json::Value;

include!(concat!(env!("OUT_DIR"), "/profiles.rs"));

/// Every embedded artefact as JSON (files that are not valid JSON objects are skipped; a test
/// checks there are none).
pub fn artefacts() -> Vec<Value> {
    PROFILE_FILES
        .iter()
        .filter_map(|(_, text)| serde_json::from_str::<Value>(text).ok())
        .filter(Value::is_object)
        .collect()
}

/// The embedded artefacts of one resource type.
pub fn artefacts_of(resource_type: &str) -> Vec<Value> {
    artefacts()
        .into_iter()
        .filter(|a| a["resourceType"] == resource_type)
        .collect()
}
