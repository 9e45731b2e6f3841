//! Index values of a resource, extracted at write time by evaluating each search parameter's
//! FHIRPath expression and turning the resulting elements into rows by parameter type
//! (search.html#ptypes).

use serde_json::Value;

use super::registry::{ParamType, Registry};
use crate::fhir::instant::{Micros, parse_fhir_range};
use crate::fhirpath::{Item, evaluate, reference_type};

/// The open ends of a date range.
pub const DATE_MIN: Micros = i64::MIN;
pub const DATE_MAX: Micros = i64::MAX;

#[derive(Debug, Clone, PartialEq)]
pub struct StringRow {
    pub param: String,
    /// Lower case, accents removed: what default and `:contains` searches compare.
    pub normalized: String,
    pub exact: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    pub param: String,
    /// `""` when the element has no system.
    pub system: String,
    pub code: String,
    /// Normalized display or text, for `:text`.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceRow {
    pub param: String,
    pub target_type: String,
    pub target_id: String,
    /// The reference as written when it is absolute or canonical (else `""`).
    pub url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DateRow {
    pub param: String,
    /// `[start, end)` in microseconds; open ends are `DATE_MIN` / `DATE_MAX`.
    pub start: Micros,
    pub end: Micros,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuantityRow {
    pub param: String,
    pub low: f64,
    pub high: f64,
    pub system: String,
    pub code: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UriRow {
    pub param: String,
    pub uri: String,
}

/// One pair of a composite parameter: a token and a second value of the part's type.
#[derive(Debug, Clone, PartialEq)]
pub struct CompositeRow {
    pub param: String,
    pub system: String,
    pub code: String,
    pub v_system: String,
    pub v_code: String,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub start: Option<Micros>,
    pub end: Option<Micros>,
}

/// Everything a resource contributes to the search index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexRows {
    pub composites: Vec<CompositeRow>,
    pub strings: Vec<StringRow>,
    pub tokens: Vec<TokenRow>,
    pub references: Vec<ReferenceRow>,
    pub dates: Vec<DateRow>,
    pub quantities: Vec<QuantityRow>,
    pub uris: Vec<UriRow>,
}

/// Extracts the index rows of `resource` for every parameter of its type.
pub fn extract(registry: &Registry, resource: &Value) -> IndexRows {
    let mut rows = IndexRows::default();
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut text_words: Vec<(&str, Vec<String>)> = Vec::new();
    for param in registry.params_of(resource_type) {
        match param.code.as_str() {
            // columns of the resource row
            "_id" | "_lastUpdated" => continue,
            "_text" => {
                text_words.push(("_text", super::text::narrative_words(resource)));
                continue;
            }
            "_content" => {
                text_words.push(("_content", super::text::content_words(resource)));
                continue;
            }
            _ => {}
        }
        let Some(expression) = &param.expression else {
            continue;
        };
        let Ok(items) = evaluate(expression, resource) else {
            continue;
        };
        if param.kind == ParamType::Composite {
            add_composites(&mut rows, &param.code, &param.components, &items, resource);
            continue;
        }
        for item in &items {
            add_item(&mut rows, &param.code, param.kind, item);
        }
    }
    bound_indexed_text(&mut rows);
    dedup(&mut rows.strings);
    dedup(&mut rows.tokens);
    dedup(&mut rows.references);
    dedup(&mut rows.dates);
    dedup(&mut rows.quantities);
    dedup(&mut rows.uris);
    dedup(&mut rows.composites);
    // distinct and bounded already
    for (param, words) in text_words {
        rows.strings.extend(words.into_iter().map(|word| StringRow {
            param: param.into(),
            normalized: word.clone(),
            exact: word,
        }));
    }
    rows
}

/// For each element the composite selects, pairs every token of its first part with every
/// value of its second part.
fn add_composites(
    rows: &mut IndexRows,
    param: &str,
    components: &[(ParamType, crate::fhirpath::Expr)],
    items: &[Item<'_>],
    resource: &Value,
) {
    let [(_, first), (second_kind, second)] = components else {
        return;
    };
    for item in items {
        let focus = std::slice::from_ref(item);
        let mut tokens = IndexRows::default();
        for part in crate::fhirpath::evaluate_on(first, focus, resource).unwrap_or_default() {
            add_item(&mut tokens, param, ParamType::Token, &part);
        }
        let mut values = IndexRows::default();
        for part in crate::fhirpath::evaluate_on(second, focus, resource).unwrap_or_default() {
            add_item(&mut values, param, *second_kind, &part);
        }
        let mut seconds: Vec<CompositeRow> = Vec::new();
        let blank = CompositeRow {
            param: param.into(),
            system: String::new(),
            code: String::new(),
            v_system: String::new(),
            v_code: String::new(),
            low: None,
            high: None,
            start: None,
            end: None,
        };
        seconds.extend(
            values
                .tokens
                .iter()
                .filter(|t| !t.code.is_empty())
                .map(|t| CompositeRow {
                    v_system: t.system.clone(),
                    v_code: t.code.clone(),
                    ..blank.clone()
                }),
        );
        seconds.extend(values.strings.iter().map(|s| CompositeRow {
            v_code: s.normalized.clone(),
            ..blank.clone()
        }));
        seconds.extend(values.references.iter().map(|r| CompositeRow {
            v_system: r.target_type.clone(),
            v_code: r.target_id.clone(),
            ..blank.clone()
        }));
        seconds.extend(values.quantities.iter().map(|q| CompositeRow {
            v_system: q.system.clone(),
            v_code: q.code.clone(),
            low: Some(q.low),
            high: Some(q.high),
            ..blank.clone()
        }));
        seconds.extend(values.dates.iter().map(|d| CompositeRow {
            start: Some(d.start),
            end: Some(d.end),
            ..blank.clone()
        }));
        for token in tokens.tokens.iter().filter(|t| !t.code.is_empty()) {
            for second in &seconds {
                rows.composites.push(CompositeRow {
                    system: token.system.clone(),
                    code: token.code.clone(),
                    ..second.clone()
                });
            }
        }
    }
}

/// Most characters of a text value kept in an indexed column: a B-tree entry has a size limit
/// (about 2.7 kB on PostgreSQL), and a client may send megabytes in one element. Searches cut
/// their values the same way (`store::search`), so matching stays exact up to this length.
pub const MAX_INDEXED_CHARS: usize = 200;

/// `text` cut to `MAX_INDEXED_CHARS` characters.
pub fn indexed_text(text: &str) -> &str {
    match text.char_indices().nth(MAX_INDEXED_CHARS) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

fn bound(text: &mut String) {
    let keep = indexed_text(text).len();
    text.truncate(keep);
}

fn bound_indexed_text(rows: &mut IndexRows) {
    for row in &mut rows.strings {
        bound(&mut row.normalized);
    }
    for row in &mut rows.tokens {
        bound(&mut row.system);
        bound(&mut row.code);
        bound(&mut row.text);
    }
    for row in &mut rows.references {
        bound(&mut row.target_type);
        bound(&mut row.target_id);
    }
    for row in &mut rows.uris {
        bound(&mut row.uri);
    }
    for row in &mut rows.composites {
        bound(&mut row.system);
        bound(&mut row.code);
        bound(&mut row.v_system);
        bound(&mut row.v_code);
    }
}

/// Removes repeated rows, keeping the first of each. Small sets (nearly every resource) compare
/// directly; large ones (a resource with thousands of values) go through a hash of each row's
/// text, so a hostile resource cannot make this quadratic.
fn dedup<T: PartialEq + std::fmt::Debug>(rows: &mut Vec<T>) {
    if rows.len() <= 64 {
        let mut unique: Vec<T> = Vec::with_capacity(rows.len());
        for row in rows.drain(..) {
            if !unique.contains(&row) {
                unique.push(row);
            }
        }
        *rows = unique;
        return;
    }
    let mut seen = rustc_hash::FxHashSet::default();
    rows.retain(|row| seen.insert(format!("{row:?}")));
}

/// Lower case with diacritics removed, for accent- and case-insensitive string search.
pub fn normalize(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    use unicode_normalization::char::is_combining_mark;
    text.nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

fn text_of(value: &Value) -> Option<&str> {
    value.as_str()
}

fn add_item(rows: &mut IndexRows, param: &str, kind: ParamType, item: &Item<'_>) {
    let (value, type_code) = match item {
        Item::Node { value, type_code } => (*value, type_code.as_str()),
        Item::Bool(b) => {
            if kind == ParamType::Token {
                rows.tokens.push(TokenRow {
                    param: param.into(),
                    system: String::new(),
                    code: b.to_string(),
                    text: String::new(),
                });
            }
            return;
        }
        _ => return,
    };
    match kind {
        ParamType::String => add_strings(rows, param, value, type_code),
        ParamType::Token => add_tokens(rows, param, value, type_code),
        ParamType::Reference => add_reference(rows, param, value, type_code),
        ParamType::Date => add_date(rows, param, value, type_code),
        ParamType::Number | ParamType::Quantity => add_quantity(rows, param, value, type_code),
        ParamType::Uri => {
            if let Some(uri) = text_of(value) {
                rows.uris.push(UriRow {
                    param: param.into(),
                    uri: uri.to_string(),
                });
            }
        }
        ParamType::Composite | ParamType::Special => {}
    }
}

fn push_string(rows: &mut IndexRows, param: &str, text: &str) {
    if !text.is_empty() {
        rows.strings.push(StringRow {
            param: param.into(),
            normalized: normalize(text),
            exact: text.to_string(),
        });
    }
}

fn add_strings(rows: &mut IndexRows, param: &str, value: &Value, type_code: &str) {
    let parts: &[&str] = match type_code {
        "HumanName" => &["text", "family", "given", "prefix", "suffix"],
        "Address" => &[
            "text",
            "line",
            "city",
            "district",
            "state",
            "postalCode",
            "country",
        ],
        _ => &[],
    };
    if parts.is_empty() {
        match value {
            Value::String(text) => push_string(rows, param, text),
            Value::Object(map) => {
                for member in map.values() {
                    if let Value::String(text) = member {
                        push_string(rows, param, text);
                    }
                }
            }
            _ => {}
        }
        return;
    }
    for part in parts {
        match value.get(*part) {
            Some(Value::String(text)) => push_string(rows, param, text),
            Some(Value::Array(items)) => {
                for text in items.iter().filter_map(Value::as_str) {
                    push_string(rows, param, text);
                }
            }
            _ => {}
        }
    }
}

fn coding_row(param: &str, coding: &Value) -> Option<TokenRow> {
    let code = coding.get("code").and_then(Value::as_str)?;
    Some(TokenRow {
        param: param.into(),
        system: coding
            .get("system")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        code: code.to_string(),
        text: coding
            .get("display")
            .and_then(Value::as_str)
            .map(normalize)
            .unwrap_or_default(),
    })
}

fn add_tokens(rows: &mut IndexRows, param: &str, value: &Value, type_code: &str) {
    match type_code {
        "Coding" => rows.tokens.extend(coding_row(param, value)),
        "CodeableConcept" => {
            let text = value
                .get("text")
                .and_then(Value::as_str)
                .map(normalize)
                .unwrap_or_default();
            for coding in value
                .get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(mut row) = coding_row(param, coding) {
                    if row.text.is_empty() {
                        row.text.clone_from(&text);
                    }
                    rows.tokens.push(row);
                }
            }
            if !text.is_empty() {
                // :text matches CodeableConcept.text even without codings.
                rows.tokens.push(TokenRow {
                    param: param.into(),
                    system: String::new(),
                    code: String::new(),
                    text,
                });
            }
        }
        "Identifier" => {
            if let Some(code) = value.get("value").and_then(Value::as_str) {
                let type_text = value
                    .pointer("/type/text")
                    .and_then(Value::as_str)
                    .map(normalize)
                    .unwrap_or_default();
                rows.tokens.push(TokenRow {
                    param: param.into(),
                    system: value
                        .get("system")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    code: code.to_string(),
                    text: type_text,
                });
                // :of-type (type system|type code|value) is kept as a token of its own.
                for coding in value
                    .pointer("/type/coding")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(type_code) = coding.get("code").and_then(Value::as_str) {
                        let type_system = coding
                            .get("system")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        rows.tokens.push(TokenRow {
                            param: format!("{param}:of-type"),
                            system: format!("{type_system}|{type_code}"),
                            code: code.to_string(),
                            text: String::new(),
                        });
                    }
                }
            }
        }
        "ContactPoint" => {
            if let Some(code) = value.get("value").and_then(Value::as_str) {
                let system = value
                    .get("system")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                rows.tokens.push(TokenRow {
                    param: param.into(),
                    system: system.to_string(),
                    code: code.to_string(),
                    text: String::new(),
                });
            }
        }
        _ => match value {
            Value::String(code) => rows.tokens.push(TokenRow {
                param: param.into(),
                system: String::new(),
                code: code.clone(),
                text: String::new(),
            }),
            Value::Bool(b) => rows.tokens.push(TokenRow {
                param: param.into(),
                system: String::new(),
                code: b.to_string(),
                text: String::new(),
            }),
            _ => {}
        },
    }
}

/// Splits a reference into type and id: `Patient/1`, `http://host/fhir/Patient/1`,
/// `Patient/1/_history/2`. Versions are ignored.
pub fn split_reference(reference: &str) -> Option<(String, String)> {
    let target_type = reference_type(reference)?;
    let path = reference.split(['?', '#']).next().unwrap_or_default();
    let parts: Vec<&str> = path.split('/').collect();
    let at = parts.iter().rposition(|part| *part == target_type)?;
    let id = parts.get(at + 1)?;
    crate::fhir::is_valid_id(id).then(|| (target_type.to_string(), (*id).to_string()))
}

fn add_reference(rows: &mut IndexRows, param: &str, value: &Value, type_code: &str) {
    let reference = match value {
        Value::String(uri) => Some(uri.as_str()), // canonical or uri
        Value::Object(map) => map.get("reference").and_then(Value::as_str),
        _ => None,
    };
    if type_code == "Reference"
        && let Some(identifier) = value.get("identifier")
    {
        add_tokens(
            rows,
            &format!("{param}:identifier"),
            identifier,
            "Identifier",
        );
    }
    let Some(reference) = reference else { return };
    if reference.starts_with('#') {
        return; // contained: not searchable across resources
    }
    let is_absolute = reference.contains("://") || reference.starts_with("urn:");
    let canonical = reference.split('|').next().unwrap_or(reference);
    match split_reference(canonical) {
        Some((target_type, target_id)) => rows.references.push(ReferenceRow {
            param: param.into(),
            target_type,
            target_id,
            url: if is_absolute {
                canonical.to_string()
            } else {
                String::new()
            },
        }),
        None => rows.references.push(ReferenceRow {
            param: param.into(),
            target_type: String::new(),
            target_id: String::new(),
            url: canonical.to_string(),
        }),
    }
}

fn range_of(value: Option<&Value>) -> Option<(Micros, Micros)> {
    value.and_then(Value::as_str).and_then(parse_fhir_range)
}

fn add_date(rows: &mut IndexRows, param: &str, value: &Value, type_code: &str) {
    let range = match type_code {
        "Period" => {
            let start = range_of(value.get("start")).map(|r| r.0);
            let end = range_of(value.get("end")).map(|r| r.1);
            (start.is_some() || end.is_some())
                .then(|| (start.unwrap_or(DATE_MIN), end.unwrap_or(DATE_MAX)))
        }
        "Timing" => {
            let events: Vec<(Micros, Micros)> = value
                .get("event")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| range_of(Some(e)))
                .collect();
            let bounds = value.pointer("/repeat/boundsPeriod").map(|p| {
                (
                    range_of(p.get("start")).map_or(DATE_MIN, |r| r.0),
                    range_of(p.get("end")).map_or(DATE_MAX, |r| r.1),
                )
            });
            let all: Vec<(Micros, Micros)> = events.into_iter().chain(bounds).collect();
            (!all.is_empty()).then(|| {
                (
                    all.iter().map(|r| r.0).min().unwrap_or(DATE_MIN),
                    all.iter().map(|r| r.1).max().unwrap_or(DATE_MAX),
                )
            })
        }
        _ => range_of(Some(value)),
    };
    if let Some((start, end)) = range {
        rows.dates.push(DateRow {
            param: param.into(),
            start,
            end,
        });
    }
}

fn number(value: Option<&Value>) -> Option<f64> {
    value.and_then(Value::as_f64)
}

fn add_quantity(rows: &mut IndexRows, param: &str, value: &Value, type_code: &str) {
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match type_code {
        "Range" => {
            let low = value.get("low");
            let high = value.get("high");
            let (Some(lo), Some(hi)) = (
                number(low.and_then(|l| l.get("value"))).or(Some(f64::NEG_INFINITY)),
                number(high.and_then(|h| h.get("value"))).or(Some(f64::INFINITY)),
            ) else {
                return;
            };
            if lo.is_infinite() && hi.is_infinite() {
                return;
            }
            let unit_source = low.or(high).cloned().unwrap_or(Value::Null);
            rows.quantities.push(QuantityRow {
                param: param.into(),
                low: lo,
                high: hi,
                system: unit_source
                    .get("system")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                code: unit_source
                    .get("code")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        "Money" => {
            if let Some(amount) = number(value.get("value")) {
                rows.quantities.push(QuantityRow {
                    param: param.into(),
                    low: amount,
                    high: amount,
                    system: "urn:iso:std:iso:4217".into(),
                    code: text("currency"),
                });
            }
        }
        _ if value.is_object() => {
            if let Some(amount) = number(value.get("value")) {
                let code = if value.get("code").is_some() {
                    text("code")
                } else {
                    text("unit")
                };
                rows.quantities.push(QuantityRow {
                    param: param.into(),
                    low: amount,
                    high: amount,
                    system: text("system"),
                    code,
                });
            }
        }
        _ => {
            if let Some(amount) = value.as_f64() {
                rows.quantities.push(QuantityRow {
                    param: param.into(),
                    low: amount,
                    high: amount,
                    system: String::new(),
                    code: String::new(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patient_indexes_names_identifiers_dates_and_references() {
        let registry = Registry::r4();
        let rows = extract(
            &registry,
            &json!({"resourceType":"Patient","id":"p","name":[{"family":"Muñoz","given":["Ana"]}],"birthDate":"1990-02",
                "identifier":[{"system":"urn:mcd","value":"123"}],"gender":"female","managingOrganization":{"reference":"Organization/o1"},
                "telecom":[{"system":"email","value":"a@b.org"}],"active":true}),
        );
        assert!(
            rows.strings
                .iter()
                .any(|r| r.param == "family" && r.normalized == "munoz" && r.exact == "Muñoz")
        );
        assert!(
            rows.strings
                .iter()
                .any(|r| r.param == "name" && r.normalized == "ana")
        );
        assert!(
            rows.tokens
                .iter()
                .any(|r| r.param == "identifier" && r.system == "urn:mcd" && r.code == "123")
        );
        assert!(
            rows.tokens
                .iter()
                .any(|r| r.param == "gender" && r.code == "female")
        );
        assert!(
            rows.tokens
                .iter()
                .any(|r| r.param == "email" && r.code == "a@b.org")
        );
        assert!(
            rows.tokens
                .iter()
                .any(|r| r.param == "active" && r.code == "true")
        );
        assert!(rows.references.iter().any(|r| r.param == "organization"
            && r.target_type == "Organization"
            && r.target_id == "o1"));
        let birth = rows.dates.iter().find(|r| r.param == "birthdate").cloned();
        assert_eq!(birth.map(|r| (r.start, r.end)), parse_fhir_range("1990-02"));
    }

    #[test]
    fn an_observation_indexes_quantities_and_codes() {
        let registry = Registry::r4();
        let rows = extract(
            &registry,
            &json!({"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8480-6","display":"Systolic"}],"text":"BP"},
                "subject":{"reference":"Patient/p"},"effectivePeriod":{"start":"2026-01-01"},"valueQuantity":{"value":120.5,"system":"http://unitsofmeasure.org","code":"mm[Hg]"}}),
        );
        assert!(
            rows.tokens
                .iter()
                .any(|r| r.param == "code" && r.code == "8480-6" && r.text == "systolic")
        );
        assert!(
            rows.references
                .iter()
                .any(|r| r.param == "patient" && r.target_id == "p")
        );
        assert!(
            rows.references
                .iter()
                .any(|r| r.param == "subject" && r.target_type == "Patient")
        );
        assert!(
            rows.quantities
                .iter()
                .any(|r| r.param == "value-quantity" && r.low == 120.5 && r.code == "mm[Hg]")
        );
        assert!(
            rows.dates
                .iter()
                .any(|r| r.param == "date" && r.end == DATE_MAX)
        );
        assert!(
            rows.composites
                .iter()
                .any(|r| r.param == "code-value-quantity"
                    && r.code == "8480-6"
                    && r.low == Some(120.5)
                    && r.v_code == "mm[Hg]")
        );
    }

    #[test]
    fn references_split_into_type_and_id() {
        assert_eq!(
            split_reference("Patient/1"),
            Some(("Patient".into(), "1".into()))
        );
        assert_eq!(
            split_reference("http://x/fhir/Patient/1/_history/3"),
            Some(("Patient".into(), "1".into()))
        );
        assert_eq!(split_reference("urn:uuid:0b2e"), None);
        assert_eq!(normalize("ÉLODIE Ñú"), "elodie nu");
    }
}
