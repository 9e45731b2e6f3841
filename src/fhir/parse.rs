//! Strict parsing of resources sent by clients.
//!
//! The body is read as JSON (keeping every number's original text, so `1.50` stays `1.50`),
//! checked for repeated keys, checked against the R4 element model (`structure`), and finally
//! parsed by fhirbolt's typed model as an independent second reading.

use serde_json::{Map, Value};

use crate::error::FhirError;
use crate::fhir::outcome::Issue;

/// Parses `body` as a resource of `expected_type` (any type when `None`), strictly.
pub fn parse_resource(
    body: &[u8],
    expected_type: Option<&str>,
) -> Result<Map<String, Value>, FhirError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        FhirError::invalid(Issue::error(
            "structure",
            "The request body is not valid UTF-8",
        ))
    })?;
    let value: Value = serde_json::from_str(text).map_err(|err| {
        FhirError::invalid(Issue::error(
            "structure",
            format!("The request body is not valid JSON: {err}"),
        ))
    })?;
    let Value::Object(resource) = value else {
        return Err(FhirError::invalid(Issue::error(
            "structure",
            "The request body is not a JSON object",
        )));
    };
    let resource_type = match resource.get("resourceType") {
        Some(Value::String(name)) => name.as_str(),
        _ => {
            return Err(FhirError::invalid(
                Issue::error("required", "The resource has no resourceType").at("resourceType"),
            ));
        }
    };
    if !crate::fhir::is_resource_type(resource_type) {
        return Err(FhirError::invalid(
            Issue::error("value", format!("Unknown resource type '{resource_type}'"))
                .at("resourceType"),
        ));
    }
    if let Some(expected) = expected_type
        && resource_type != expected
    {
        return Err(FhirError::invalid(
            Issue::error(
                "invalid",
                format!("The resource is a {resource_type}, but the URL names {expected}"),
            )
            .at("resourceType"),
        ));
    }
    if let Some(id) = resource.get("id") {
        match id {
            Value::String(id) if crate::fhir::is_valid_id(id) => {}
            _ => {
                return Err(FhirError::invalid(
                    Issue::error(
                        "value",
                        "The id must be 1 to 64 letters, digits, '-' or '.'",
                    )
                    .at(format!("{resource_type}.id")),
                ));
            }
        }
    }
    if let Some(path) = first_duplicate_key(text) {
        return Err(FhirError::invalid(
            Issue::error(
                "structure",
                format!("The JSON object member '{path}' appears more than once"),
            )
            .at(format!(
                "{resource_type}.{}",
                path.trim_start_matches("resourceType.")
            )),
        ));
    }
    let issues = crate::fhir::structure::check_resource(&resource);
    if !issues.is_empty() {
        return Err(FhirError::Invalid(issues));
    }
    // fhirbolt's typed parse as a second, independent reading of the same structure.
    fhir_r4::check_structure(text).map_err(|err| {
        let path = locate_structure_error(&resource, &err.message);
        let expression = if path.is_empty() {
            resource_type.to_string()
        } else {
            format!("{resource_type}.{path}")
        };
        FhirError::invalid(
            Issue::error(
                "structure",
                format!("Invalid {resource_type} at {expression}: {}", err.message),
            )
            .at(expression),
        )
    })?;
    Ok(resource)
}

/// Finds the element a structure error is about when fhirbolt gives no position: the error goes
/// away (or changes to another element's problem) when the culprit is removed, so descend into
/// the member whose removal does that. Only runs on the error path, with a bounded number of
/// parses.
fn locate_structure_error(resource: &Map<String, Value>, message: &str) -> String {
    const MAX_PARSES: usize = 4000;
    let document = Value::Object(resource.clone());
    let mut path: Vec<PathStep> = Vec::new();
    let mut parses = 0;
    'descend: while let Some(node) = node_at(&document, &path) {
        let children: Vec<PathStep> = match node {
            Value::Object(map) => map
                .keys()
                .filter(|k| *k != "resourceType")
                .cloned()
                .map(PathStep::Key)
                .collect(),
            Value::Array(items) => (0..items.len()).map(PathStep::Index).collect(),
            _ => break,
        };
        for child in children {
            parses += 1;
            if parses > MAX_PARSES {
                break 'descend;
            }
            let mut trial = document.clone();
            let mut child_path = path.clone();
            child_path.push(child.clone());
            remove_at(&mut trial, &child_path);
            let still_failing_the_same_way = match fhir_r4::check_structure(&trial.to_string()) {
                Ok(()) => false,
                Err(err) => err.message == message || err.message.starts_with("missing field"),
            };
            if !still_failing_the_same_way {
                path = child_path;
                continue 'descend;
            }
        }
        break;
    }
    let mut text = String::new();
    for step in path {
        match step {
            PathStep::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(&key);
            }
            PathStep::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn node_at<'a>(value: &'a Value, path: &[PathStep]) -> Option<&'a Value> {
    path.iter().try_fold(value, |node, step| match step {
        PathStep::Key(key) => node.get(key),
        PathStep::Index(index) => node.get(index),
    })
}

fn remove_at(value: &mut Value, path: &[PathStep]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let parent = parent_path.iter().try_fold(value, |node, step| match step {
        PathStep::Key(key) => node.get_mut(key),
        PathStep::Index(index) => node.get_mut(index),
    });
    match (parent, last) {
        (Some(Value::Object(map)), PathStep::Key(key)) => {
            map.shift_remove(key);
        }
        (Some(Value::Array(items)), PathStep::Index(index)) if *index < items.len() => {
            items.remove(*index);
        }
        _ => {}
    }
}

/// The path of the first member whose key repeats a key of the same JSON object (JSON parsers
/// silently keep the last one, which would hide what the client sent).
pub fn first_duplicate_key(text: &str) -> Option<String> {
    // Keys are compared as they are written (FHIR keys never need escapes), without copying.
    enum Frame<'t> {
        Object {
            keys: Vec<&'t str>,
            key: Option<&'t str>,
        },
        Array {
            index: usize,
        },
    }
    fn path_of(stack: &[Frame<'_>], last: &str) -> String {
        let mut path = String::new();
        for frame in stack {
            match frame {
                Frame::Object { key: Some(key), .. } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                Frame::Object { key: None, .. } => {}
                Frame::Array { index } => path.push_str(&format!("[{index}]")),
            }
        }
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(last);
        path
    }
    let bytes = text.as_bytes();
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut expecting_key = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                stack.push(Frame::Object {
                    keys: Vec::new(),
                    key: None,
                });
                expecting_key = true;
            }
            b'[' => {
                stack.push(Frame::Array { index: 0 });
                expecting_key = false;
            }
            b'}' | b']' => {
                stack.pop();
                expecting_key = false;
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array { index }) => *index += 1,
                Some(Frame::Object { .. }) => expecting_key = true,
                None => {}
            },
            b'"' => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && bytes[end] != b'"' {
                    end += if bytes[end] == b'\\' { 2 } else { 1 };
                }
                let string = text.get(start..end.min(bytes.len())).unwrap_or_default();
                i = end;
                if expecting_key {
                    expecting_key = false;
                    let duplicate = match stack.last_mut() {
                        Some(Frame::Object { keys, key }) => {
                            let repeated = keys.contains(&string);
                            keys.push(string);
                            *key = Some(string);
                            repeated
                        }
                        _ => false,
                    };
                    if duplicate {
                        stack.pop();
                        return Some(path_of(&stack, string));
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue_of(body: &str) -> Issue {
        match parse_resource(body.as_bytes(), Some("Patient")) {
            Err(FhirError::Invalid(issues)) => issues
                .into_iter()
                .next()
                .unwrap_or_else(|| Issue::information("none")),
            other => panic!("expected an invalid-resource error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_elements_are_named_by_path() {
        let issue = issue_of(
            r#"{"resourceType":"Patient","name":[{"family":"X"},{"given":["a"],"nickname":"b"}]}"#,
        );
        assert_eq!(
            issue.expression.as_deref(),
            Some("Patient.name[1].nickname")
        );
        let issue =
            issue_of("{\n  \"resourceType\": \"Patient\",\n  \"favouriteColour\": \"red\"\n}");
        assert_eq!(issue.expression.as_deref(), Some("Patient.favouriteColour"));
    }

    #[test]
    fn wrong_json_types_are_named_by_path() {
        let issue = issue_of(r#"{"resourceType":"Patient","active":"yes"}"#);
        assert_eq!(issue.expression.as_deref(), Some("Patient.active"));
        let issue = issue_of(r#"{"resourceType":"Patient","name":{"family":"X"}}"#);
        assert_eq!(issue.expression.as_deref(), Some("Patient.name"));
    }

    #[test]
    fn type_and_id_mismatches_are_rejected() {
        assert_eq!(
            issue_of(r#"{"resourceType":"Observation"}"#)
                .expression
                .as_deref(),
            Some("resourceType")
        );
        assert_eq!(
            issue_of(r#"{"resourceType":"Patient","id":"a/b"}"#)
                .expression
                .as_deref(),
            Some("Patient.id")
        );
        assert_eq!(issue_of(r#"{"id":"a"}"#).code, "required");
        assert_eq!(issue_of("[1]").code, "structure");
        assert_eq!(issue_of("{").code, "structure");
    }

    #[test]
    fn repeated_keys_are_found_with_their_path() {
        assert_eq!(
            first_duplicate_key(r#"{"a":1,"b":{"c":[{"d":1},{"d":2,"e":"x\"y","d":3}]}}"#),
            Some("b.c[1].d".into())
        );
        assert_eq!(first_duplicate_key(r#"{"a":1,"a":2}"#), Some("a".into()));
        assert_eq!(
            first_duplicate_key(r#"{"a":{"x":1},"b":{"x":1},"c":"a"}"#),
            None
        );
    }

    #[test]
    fn decimals_keep_their_text() {
        let parsed = parse_resource(
            br#"{"resourceType":"Observation","status":"final","code":{"text":"w"},"valueQuantity":{"value":1.50}}"#,
            None,
        );
        let text = parsed
            .map(|r| serde_json::to_string(&r).unwrap_or_default())
            .unwrap_or_default();
        assert!(text.contains("1.50"), "{text}");
    }
}
