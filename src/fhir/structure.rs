//! The structure check of R4 JSON (json.html): every member is an element of its type, arrays
//! exactly where the cardinality is `*`, primitives of the right JSON type and lexical form,
//! one value per choice element, mandatory elements present, no empty objects or nulls.
//! Every problem is reported with its FHIRPath location, not only the first.
//!
//! The element model is generated from the official StructureDefinitions by
//! `scripts/generate-r4-model.py` and embedded in the binary.

use std::collections::HashMap;

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::outcome::Issue;

/// The most issues one check reports.
const MAX_ISSUES: usize = 100;

struct ElementDef {
    many: bool,
    /// Part of the `_summary=true` view.
    summary: bool,
    type_code: String,
    /// For a choice element's variant (`valueQuantity`), the element name (`value[x]`).
    choice: Option<String>,
}

struct TypeDef {
    elements: FxHashMap<String, ElementDef>,
    /// Choice elements by their base name (`value`): each variant's JSON key and type.
    choices: FxHashMap<String, Vec<(String, String)>>,
    /// What each element name stands for in JSON: its key and type, or each choice variant's.
    keys: FxHashMap<String, Vec<(String, String)>>,
    /// Mandatory elements: for a choice element, each of its variant names.
    required: Vec<(String, Vec<String>)>,
}

struct Model {
    types: FxHashMap<String, TypeDef>,
    primitives: FxHashSet<String>,
}

static MODEL: LazyLock<Model> = LazyLock::new(load_model);

fn load_model() -> Model {
    let raw: Value = serde_json::from_str(include_str!("r4-model.json")).unwrap_or(Value::Null);
    let primitives: FxHashSet<String> = raw["primitives"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut types = FxHashMap::default();
    if let Some(all) = raw["types"].as_object() {
        for (type_name, def) in all {
            let mut elements = FxHashMap::default();
            let mut choices = FxHashMap::default();
            let mut keys: FxHashMap<String, Vec<(String, String)>> = FxHashMap::default();
            let mut required = Vec::new();
            let Some(raw_elements) = def["elements"].as_object() else {
                continue;
            };
            for (name, spec) in raw_elements {
                let min = spec[0].as_u64().unwrap_or(0);
                let many = spec[1].as_str() == Some("*");
                let summary = spec[3].as_u64() == Some(1);
                let codes: Vec<String> = spec[2]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(prefix) = name.strip_suffix("[x]") {
                    let variants: Vec<String> = codes
                        .iter()
                        .map(|code| format!("{prefix}{}", capitalize(code)))
                        .collect();
                    for (variant, code) in variants.iter().zip(&codes) {
                        elements.insert(
                            variant.clone(),
                            ElementDef {
                                many,
                                summary,
                                type_code: code.clone(),
                                choice: Some(name.clone()),
                            },
                        );
                    }
                    let pairs: Vec<(String, String)> = variants
                        .iter()
                        .cloned()
                        .zip(codes.iter().cloned())
                        .collect();
                    keys.insert(prefix.to_string(), pairs.clone());
                    choices.insert(prefix.to_string(), pairs);
                    if min > 0 {
                        required.push((name.clone(), variants));
                    }
                } else {
                    let type_code = codes.first().cloned().unwrap_or_else(|| "string".into());
                    keys.insert(name.clone(), vec![(name.clone(), type_code.clone())]);
                    elements.insert(
                        name.clone(),
                        ElementDef {
                            many,
                            summary,
                            type_code,
                            choice: None,
                        },
                    );
                    if min > 0 {
                        required.push((name.clone(), vec![name.clone()]));
                    }
                }
            }
            types.insert(
                type_name.clone(),
                TypeDef {
                    elements,
                    choices,
                    keys,
                    required,
                },
            );
        }
    }
    Model { types, primitives }
}

fn capitalize(code: &str) -> String {
    let mut chars = code.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// Checks a resource (an object with a known `resourceType`) and returns its problems.
pub fn check_resource(resource: &Map<String, Value>) -> Vec<Issue> {
    let mut issues = Vec::new();
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if MODEL.types.contains_key(resource_type) {
        check_object(resource, resource_type, resource_type, &mut issues);
    } else {
        issues.push(
            Issue::error("value", format!("Unknown resource type '{resource_type}'"))
                .at("resourceType"),
        );
    }
    issues
}

/// The JSON keys and types an element name stands for in `type_name`: one for an ordinary
/// element, one per variant for a choice element (`value` → `valueQuantity`, `valueString`, ...).
/// Empty when the type has no such element.
pub fn element_keys(type_name: &str, name: &str) -> Vec<(String, String)> {
    element_keys_ref(type_name, name).to_vec()
}

/// `element_keys` without copying: the model lives for the whole run.
pub fn element_keys_ref(type_name: &str, name: &str) -> &'static [(String, String)] {
    MODEL
        .types
        .get(type_name)
        .and_then(|def| def.keys.get(name))
        .map_or(&[], Vec::as_slice)
}

/// Whether the element `name` of `type_name` repeats (cardinality `*`); for a choice element
/// (`value`), whether its variants do. False when the type has no such element.
pub fn is_repeating(type_name: &str, name: &str) -> bool {
    let Some(def) = MODEL.types.get(type_name) else {
        return false;
    };
    if let Some(element) = def.elements.get(name) {
        return element.many;
    }
    def.choices
        .get(name)
        .and_then(|variants| variants.first())
        .and_then(|(key, _)| def.elements.get(key))
        .is_some_and(|e| e.many)
}

/// Whether the top-level member `key` of a `type_name` resource is in its summary
/// (`_summary=true`); `_key` primitive extensions follow their element.
pub fn is_summary_member(type_name: &str, key: &str) -> bool {
    let name = key.strip_prefix('_').unwrap_or(key);
    MODEL
        .types
        .get(type_name)
        .and_then(|def| def.elements.get(name))
        .is_some_and(|e| e.summary)
}

/// The type of the element stored under the JSON member `key` of a `type_name` (a choice
/// variant such as `valueQuantity` gives its own type); `None` for unknown members.
pub fn member_type(type_name: &str, key: &str) -> Option<String> {
    MODEL
        .types
        .get(type_name)?
        .elements
        .get(key)
        .map(|element| element.type_code.clone())
}

/// Whether `type_code` is a FHIR primitive type.
pub fn is_primitive(type_code: &str) -> bool {
    MODEL.primitives.contains(type_code)
}

/// Whether `name` is a known resource type or datatype of the model.
pub fn is_known_type(name: &str) -> bool {
    MODEL.types.contains_key(name)
}

fn report(issues: &mut Vec<Issue>, issue: Issue) {
    if issues.len() < MAX_ISSUES {
        issues.push(issue);
    }
}

fn check_object(map: &Map<String, Value>, type_name: &str, path: &str, issues: &mut Vec<Issue>) {
    let Some(def) = MODEL.types.get(type_name) else {
        return;
    };
    if map.is_empty() {
        report(
            issues,
            Issue::error(
                "structure",
                "An element must have a value or children (ele-1); this object is empty",
            )
            .at(path),
        );
        return;
    }
    let is_resource = MODEL.types.contains_key(type_name)
        && map.contains_key("resourceType")
        && path_is_resource_root(type_name);
    let mut choices_seen: HashMap<&str, &str> = HashMap::new();
    for (key, value) in map {
        if key == "resourceType" && is_resource {
            continue;
        }
        let (name, is_extension_part) = match key.strip_prefix('_') {
            Some(name) => (name, true),
            None => (key.as_str(), false),
        };
        let member_path = format!("{path}.{name}");
        let Some(element) = def.elements.get(name) else {
            report(
                issues,
                Issue::error(
                    "structure",
                    format!("Unknown element '{key}' in {type_name}"),
                )
                .at(format!("{path}.{key}")),
            );
            continue;
        };
        if let Some(choice) = &element.choice
            && let Some(other) = choices_seen.insert(choice.as_str(), name)
            && other != name
        {
            report(
                issues,
                Issue::error(
                    "structure",
                    format!(
                        "Only one of {other} and {name} may be present ({choice} has one value)"
                    ),
                )
                .at(&member_path),
            );
        }
        let primitive = MODEL.primitives.contains(&element.type_code);
        if is_extension_part {
            if !primitive {
                report(
                    issues,
                    Issue::error(
                        "structure",
                        format!("'{key}' is only allowed for primitive elements"),
                    )
                    .at(&member_path),
                );
                continue;
            }
            check_primitive_extension_part(value, element.many, &member_path, issues);
            continue;
        }
        let has_extension_part = map.contains_key(&format!("_{name}"));
        match (element.many, value) {
            (true, Value::Array(items)) => {
                if items.is_empty() {
                    report(
                        issues,
                        Issue::error("structure", "Arrays must not be empty").at(&member_path),
                    );
                }
                for (index, item) in items.iter().enumerate() {
                    let item_path = format!("{member_path}[{index}]");
                    if item.is_null() && primitive && has_extension_part {
                        continue; // aligned with an extension in the `_name` array
                    }
                    check_value(item, &element.type_code, primitive, &item_path, issues);
                }
            }
            (true, _) => report(
                issues,
                Issue::error(
                    "structure",
                    format!("{name} repeats, so it must be a JSON array"),
                )
                .at(&member_path),
            ),
            (false, Value::Array(_)) => report(
                issues,
                Issue::error(
                    "structure",
                    format!("{name} has at most one value, so it must not be an array"),
                )
                .at(&member_path),
            ),
            (false, value) => {
                check_value(value, &element.type_code, primitive, &member_path, issues)
            }
        }
    }
    for (name, variants) in &def.required {
        let present = variants
            .iter()
            .any(|variant| map.contains_key(variant) || map.contains_key(&format!("_{variant}")));
        if !present {
            report(
                issues,
                Issue::error(
                    "required",
                    format!("{type_name}.{name} is required (minimum cardinality 1)"),
                )
                .at(format!("{path}.{}", name.trim_end_matches("[x]"))),
            );
        }
    }
}

/// Backbone types are named by path (`Patient.contact`); resource types are plain names.
fn path_is_resource_root(type_name: &str) -> bool {
    !type_name.contains('.')
}

fn check_value(
    value: &Value,
    type_code: &str,
    primitive: bool,
    path: &str,
    issues: &mut Vec<Issue>,
) {
    if primitive {
        if let Err(message) = check_primitive(value, type_code) {
            report(issues, Issue::error("value", message).at(path));
        }
        return;
    }
    let Value::Object(map) = value else {
        report(
            issues,
            Issue::error("structure", format!("Expected a JSON object ({type_code})")).at(path),
        );
        return;
    };
    if type_code == "Resource" {
        match map.get("resourceType").and_then(Value::as_str) {
            Some(inner)
                if crate::fhir::is_resource_type(inner) && MODEL.types.contains_key(inner) =>
            {
                check_object(map, inner, path, issues);
            }
            Some(inner) => report(
                issues,
                Issue::error("value", format!("Unknown resource type '{inner}'"))
                    .at(format!("{path}.resourceType")),
            ),
            None => report(
                issues,
                Issue::error("required", "A contained resource needs a resourceType")
                    .at(format!("{path}.resourceType")),
            ),
        }
        return;
    }
    check_object(map, type_code, path, issues);
}

/// `_name`: the id and extensions of a primitive (an object, or an array aligned with the values).
fn check_primitive_extension_part(value: &Value, many: bool, path: &str, issues: &mut Vec<Issue>) {
    let check_one = |item: &Value, item_path: &str, issues: &mut Vec<Issue>| match item {
        Value::Object(map) => {
            for (key, member) in map {
                match key.as_str() {
                    "id" => {
                        if let Err(message) = check_primitive(member, "string") {
                            report(
                                issues,
                                Issue::error("value", message).at(format!("{item_path}.id")),
                            );
                        }
                    }
                    "extension" => match member {
                        Value::Array(extensions) => {
                            for (index, extension) in extensions.iter().enumerate() {
                                check_value(
                                    extension,
                                    "Extension",
                                    false,
                                    &format!("{item_path}.extension[{index}]"),
                                    issues,
                                );
                            }
                        }
                        _ => report(
                            issues,
                            Issue::error("structure", "extension must be an array")
                                .at(format!("{item_path}.extension")),
                        ),
                    },
                    other => report(
                        issues,
                        Issue::error(
                            "structure",
                            format!("Unknown element '{other}' in a primitive's extension part"),
                        )
                        .at(format!("{item_path}.{other}")),
                    ),
                }
            }
        }
        _ => report(
            issues,
            Issue::error(
                "structure",
                "A primitive's extension part must be an object",
            )
            .at(item_path),
        ),
    };
    match (many, value) {
        (true, Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                if !item.is_null() {
                    check_one(item, &format!("{path}[{index}]"), issues);
                }
            }
        }
        (false, item) if !item.is_array() => check_one(item, path, issues),
        _ => report(
            issues,
            Issue::error(
                "structure",
                "The extension part must have the shape of its value (array or object)",
            )
            .at(path),
        ),
    }
}

/// Lexical forms of the date and time primitives (datatypes.html#primitive), checked by hand:
/// they are on the hot path of every write.
mod lexical {
    fn digits(bytes: &[u8], at: usize, count: usize) -> Option<u32> {
        let part = bytes.get(at..at + count)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    }

    /// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`; returns how many bytes it used.
    fn date_prefix(bytes: &[u8]) -> Option<usize> {
        let year = digits(bytes, 0, 4)?;
        if year == 0 {
            return None;
        }
        if bytes.get(4) != Some(&b'-') {
            return Some(4);
        }
        let month = digits(bytes, 5, 2)?;
        if !(1..=12).contains(&month) {
            return None;
        }
        if bytes.get(7) != Some(&b'-') {
            return Some(7);
        }
        let day = digits(bytes, 8, 2)?;
        (1..=31).contains(&day).then_some(10)
    }

    /// `hh:mm:ss(.fraction)?`; returns how many bytes it used.
    fn clock(bytes: &[u8]) -> Option<usize> {
        let (hour, minute, second) = (
            digits(bytes, 0, 2)?,
            digits(bytes, 3, 2)?,
            digits(bytes, 6, 2)?,
        );
        if bytes.get(2) != Some(&b':')
            || bytes.get(5) != Some(&b':')
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        if bytes.get(8) != Some(&b'.') {
            return Some(8);
        }
        let fraction = bytes
            .get(9..)?
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        (fraction > 0).then_some(9 + fraction)
    }

    /// `Z` or `+hh:mm` / `-hh:mm` (up to 14:00), and nothing after it.
    fn zone(bytes: &[u8]) -> bool {
        match bytes {
            [b'Z'] => true,
            [b'+' | b'-', rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
                match (digits(rest, 0, 2), digits(rest, 3, 2)) {
                    (Some(h), Some(m)) => (h <= 13 && m <= 59) || (h == 14 && m == 0),
                    _ => false,
                }
            }
            _ => false,
        }
    }

    pub fn is_date(text: &str) -> bool {
        date_prefix(text.as_bytes()) == Some(text.len())
    }

    pub fn is_date_time(text: &str) -> bool {
        let bytes = text.as_bytes();
        match date_prefix(bytes) {
            Some(used) if used == bytes.len() => true,
            Some(10) if bytes.get(10) == Some(&b'T') => {
                let rest = &bytes[11..];
                clock(rest).is_some_and(|used| zone(&rest[used..]))
            }
            _ => false,
        }
    }

    pub fn is_instant(text: &str) -> bool {
        let bytes = text.as_bytes();
        date_prefix(bytes) == Some(10) && bytes.get(10) == Some(&b'T') && is_date_time(text)
    }

    pub fn is_time(text: &str) -> bool {
        clock(text.as_bytes()) == Some(text.len())
    }

    /// `[^\s]+( [^\s]+)*`
    pub fn is_code(text: &str) -> bool {
        !text.is_empty()
            && !text.starts_with(' ')
            && !text.ends_with(' ')
            && !text.contains("  ")
            && !text.chars().any(|c| c.is_whitespace() && c != ' ')
    }

    /// `urn:oid:[0-2](\.(0|[1-9][0-9]*))+`
    pub fn is_oid(text: &str) -> bool {
        let Some(rest) = text.strip_prefix("urn:oid:") else {
            return false;
        };
        let mut arcs = rest.split('.');
        let first_ok = matches!(arcs.next(), Some("0" | "1" | "2"));
        let mut count = 0;
        let rest_ok = arcs.all(|arc| {
            count += 1;
            !arc.is_empty()
                && arc.bytes().all(|b| b.is_ascii_digit())
                && (arc == "0" || !arc.starts_with('0'))
        });
        first_ok && count > 0 && rest_ok
    }

    /// `urn:uuid:` and a lower-case UUID.
    pub fn is_uuid(text: &str) -> bool {
        let Some(rest) = text.strip_prefix("urn:uuid:") else {
            return false;
        };
        rest.len() == 36
            && rest.bytes().enumerate().all(|(i, b)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    b == b'-'
                } else {
                    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
                }
            })
    }

    pub fn is_base64(text: &str) -> bool {
        text.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') || b.is_ascii_whitespace()
        })
    }
}

/// Checks one primitive value's JSON type and lexical form (datatypes.html#primitive).
fn check_primitive(value: &Value, type_code: &str) -> Result<(), String> {
    match type_code {
        "boolean" => value
            .is_boolean()
            .then_some(())
            .ok_or_else(|| "Expected a JSON boolean (true or false)".to_string()),
        "integer" | "unsignedInt" | "positiveInt" => {
            let Some(number) = value.as_i64().filter(|n| i32::try_from(*n).is_ok()) else {
                return Err(format!(
                    "Expected a whole JSON number within 32 bits ({type_code})"
                ));
            };
            match type_code {
                "unsignedInt" if number < 0 => Err("unsignedInt must not be negative".into()),
                "positiveInt" if number < 1 => Err("positiveInt must be 1 or more".into()),
                _ => Ok(()),
            }
        }
        "decimal" => value
            .is_number()
            .then_some(())
            .ok_or_else(|| "Expected a JSON number (decimal)".to_string()),
        _ => {
            let Some(text) = value.as_str() else {
                return Err(format!("Expected a JSON string ({type_code})"));
            };
            // datatypes.html#string: no character below U+0020 but tab, CR and LF
            if text
                .chars()
                .any(|c| c < ' ' && !matches!(c, '\t' | '\r' | '\n'))
            {
                return Err(format!(
                    "A {type_code} must not contain control characters (below U+0020 other than tab, CR, LF)"
                ));
            }
            let valid = match type_code {
                "id" => crate::fhir::is_valid_id(text),
                "date" => lexical::is_date(text),
                "dateTime" => lexical::is_date_time(text),
                "instant" => lexical::is_instant(text),
                "time" => lexical::is_time(text),
                "code" => lexical::is_code(text),
                "oid" => lexical::is_oid(text),
                "uuid" => lexical::is_uuid(text),
                "base64Binary" => lexical::is_base64(text),
                "uri" | "url" | "canonical" => {
                    !text.is_empty() && !text.chars().any(char::is_whitespace)
                }
                _ => !text.is_empty(),
            };
            if valid {
                Ok(())
            } else {
                Err(format!("'{}' is not a valid {type_code}", truncate(text)))
            }
        }
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Vec<(String, String)> {
        let value: Map<String, Value> = serde_json::from_str(json).unwrap_or_default();
        check_resource(&value)
            .into_iter()
            .map(|issue| (issue.code.to_string(), issue.expression.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn a_valid_patient_has_no_issues() {
        let issues = check(
            r#"{"resourceType":"Patient","id":"p1","meta":{"profile":["http://x/y"]},"active":true,
            "name":[{"family":"Doe","given":["Jane",null],"_given":[null,{"extension":[{"url":"http://x","valueString":"v"}]}]}],
            "birthDate":"1990-02-03","_birthDate":{"id":"b"},"deceasedBoolean":false,
            "contact":[{"name":{"text":"Mom"}}],"contained":[{"resourceType":"Organization","id":"o","name":"Org"}]}"#,
        );
        assert!(issues.is_empty(), "{issues:?}");
    }

    #[test]
    fn structural_problems_are_all_reported_with_paths() {
        let issues = check(
            r#"{"resourceType":"Patient","name":{"family":"X"},"active":"yes","birthDate":"1990-13-01",
            "gender":" male","nickname":"x","deceasedBoolean":true,"deceasedDateTime":"2020","contact":[{}],
            "telecom":[],"contained":[{"resourceType":"Nope"}],"multipleBirthInteger":1.5}"#,
        );
        let paths: Vec<&str> = issues.iter().map(|(_, path)| path.as_str()).collect();
        for expected in [
            "Patient.name",
            "Patient.active",
            "Patient.birthDate",
            "Patient.gender",
            "Patient.nickname",
            "Patient.deceasedDateTime",
            "Patient.contact[0]",
            "Patient.telecom",
            "Patient.contained[0].resourceType",
            "Patient.multipleBirthInteger",
        ] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {paths:?}"
            );
        }
    }

    #[test]
    fn mandatory_elements_and_choices_are_checked() {
        let issues = check(r#"{"resourceType":"Observation","code":{"text":"x"}}"#);
        assert_eq!(
            issues,
            vec![("required".to_string(), "Observation.status".to_string())]
        );
        let issues = check(
            r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50,"unit":"kg"}}"#,
        );
        assert!(issues.is_empty(), "{issues:?}");
        let issues = check(
            r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueFoo":1}"#,
        );
        assert_eq!(
            issues,
            vec![("structure".to_string(), "Observation.valueFoo".to_string())]
        );
    }

    #[test]
    fn date_and_time_forms_are_exact() {
        for ok in ["2026", "2026-11", "2026-11-25"] {
            assert!(lexical::is_date(ok), "{ok}");
        }
        for bad in [
            "26",
            "2026-1",
            "2026-13",
            "2026-11-32",
            "2026-11-25T10:00:00Z",
            "0000",
            "2026-11-25 ",
        ] {
            assert!(!lexical::is_date(bad), "{bad}");
        }
        for ok in [
            "2026",
            "2026-11-25T10:00:00Z",
            "2026-11-25T10:00:00.123+05:30",
            "2026-11-25T23:59:60-14:00",
        ] {
            assert!(lexical::is_date_time(ok), "{ok}");
        }
        for bad in [
            "2026-11-25T10:00Z",
            "2026-11-25T10:00:00",
            "2026-11-25T24:00:00Z",
            "2026-11-25T10:00:00+15:00",
            "2026-11-25T10:00:00.Z",
            "2026-11T10:00:00Z",
        ] {
            assert!(!lexical::is_date_time(bad), "{bad}");
        }
        assert!(
            lexical::is_instant("2026-11-25T10:00:00.5Z") && !lexical::is_instant("2026-11-25")
        );
        assert!(lexical::is_time("10:00:00.25") && !lexical::is_time("10:00"));
        assert!(
            lexical::is_oid("urn:oid:2.16.840.1")
                && !lexical::is_oid("urn:oid:3.1")
                && !lexical::is_oid("urn:oid:1.02")
        );
        assert!(
            lexical::is_uuid("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a")
                && !lexical::is_uuid("urn:uuid:61EBE359-bfdc-4613-8bf2-c5e300945f0a")
        );
        assert!(
            lexical::is_code("a b")
                && !lexical::is_code("a  b")
                && !lexical::is_code(" a")
                && !lexical::is_code("a\tb")
        );
    }

    #[test]
    fn primitive_forms_follow_the_spec() {
        assert!(check_primitive(&Value::from("2026-11-25T10:00:00Z"), "instant").is_ok());
        assert!(check_primitive(&Value::from("2026-11-25T10:00:00"), "instant").is_err());
        assert!(check_primitive(&Value::from("2026-11-25T10:00:00+14:00"), "dateTime").is_ok());
        assert!(check_primitive(&Value::from("2026-11-25T10:00"), "dateTime").is_err());
        assert!(check_primitive(&Value::from("urn:oid:1.2.3"), "oid").is_ok());
        assert!(check_primitive(&Value::from("a b"), "uri").is_err());
        assert!(check_primitive(&Value::from(""), "string").is_err());
        assert!(check_primitive(&Value::from(0), "positiveInt").is_err());
        assert!(check_primitive(&Value::from(3_000_000_000_i64), "integer").is_err());
    }
}
