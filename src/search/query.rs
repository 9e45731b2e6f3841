//! Parsing a search request (`?name:modifier=value&...`) into typed conditions, checked against
//! the registry (search.html). Unknown parameters are reported, not silently dropped: the caller
//! refuses them under `Prefer: handling=strict`.

use std::sync::Arc;

use super::registry::{ParamType, Registry, SearchParam};
use crate::error::FhirError;
use crate::fhir::instant::{Micros, parse_fhir_range};
use crate::fhir::outcome::Issue;
use crate::terminology::{Subsumption, SubsumptionError};

/// Comparison prefixes of number, date and quantity values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

/// One value of a parameter, typed by the parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchValue {
    String(String),
    /// `system|code`: `None` = any system, `Some("")` = no system; `code` `None` = any code.
    Token {
        system: Option<String>,
        code: Option<String>,
    },
    Reference {
        target_type: Option<String>,
        id: Option<String>,
        url: Option<String>,
    },
    Date {
        prefix: Prefix,
        start: Micros,
        end: Micros,
    },
    /// Numbers and quantities: the search value's precision-implied range `[low, high)`.
    Quantity {
        prefix: Prefix,
        value: f64,
        low: f64,
        high: f64,
        system: Option<String>,
        code: Option<String>,
    },
    Uri(String),
    /// `token$value` of a composite parameter; `second` is typed by the second part.
    Composite {
        system: Option<String>,
        code: String,
        second: Box<SearchValue>,
    },
}

/// Modifiers (search.html#modifiers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modifier {
    None,
    Exact,
    Contains,
    Text,
    Not,
    Above,
    Below,
    Identifier,
    OfType,
    /// `:[type]` on a reference parameter.
    Type(String),
}

/// One condition; the conditions of a request are combined with AND, the values of one
/// condition with OR.
#[derive(Debug, Clone)]
pub enum Condition {
    Id(Vec<String>),
    LastUpdated(Vec<SearchValue>),
    Match {
        param: Arc<SearchParam>,
        modifier: Modifier,
        values: Vec<SearchValue>,
    },
    Missing {
        param: Arc<SearchParam>,
        missing: bool,
    },
    /// `param.inner` / `param:Type.inner`: resources whose reference points at a resource of one of
    /// `target_types` satisfying `inner` (one condition per target type, OR-ed).
    Chain {
        param: Arc<SearchParam>,
        targets: Vec<(String, Condition)>,
    },
    /// `_has:Type:param:inner`: resources referenced by a `source_type` resource through
    /// `reference_param` that satisfies `inner`.
    Has {
        source_type: String,
        reference_param: String,
        inner: Box<Condition>,
    },
    /// Any of these (compartment membership through any of several parameters).
    AnyOf(Vec<Condition>),
    /// All of these (a query-constrained scope's parameters).
    AllOf(Vec<Condition>),
}

/// How many levels of chaining and `_has` a request may use.
pub const MAX_CHAIN_DEPTH: usize = 4;

/// Most comma-separated values of one parameter (each becomes an OR of the query).
pub const MAX_VALUES: usize = 500;

fn invalid(param: &str, message: impl Into<String>) -> FhirError {
    FhirError::invalid(Issue::error("value", message).at(param.to_string()))
}

fn unknown(param: &str, message: impl Into<String>) -> FhirError {
    FhirError::invalid(Issue::error("not-supported", message).at(param.to_string()))
}

/// Parses one `name=value` pair for `resource_type` into a condition. An unknown parameter or
/// modifier is an `Err` with issue code `not-supported`; a malformed value is `value`.
pub fn parse_condition(
    registry: &Registry,
    resource_type: &str,
    name: &str,
    value: &str,
    depth: usize,
) -> Result<Condition, FhirError> {
    if depth > MAX_CHAIN_DEPTH {
        return Err(invalid(
            name,
            format!("Chains and _has are limited to {MAX_CHAIN_DEPTH} levels"),
        ));
    }
    if depth == 0 && value.matches(',').count() >= MAX_VALUES {
        return Err(FhirError::invalid(
            Issue::error(
                "too-costly",
                format!("A search parameter may list at most {MAX_VALUES} values"),
            )
            .at(name.to_string()),
        ));
    }
    if let Some(rest) = name.strip_prefix("_has:") {
        return parse_has(registry, resource_type, name, rest, value, depth);
    }
    // Chain: `subject.name`, `subject:Patient.name`
    if let Some((head, tail)) = name.split_once('.') {
        return parse_chain(registry, resource_type, name, head, tail, value, depth);
    }
    let (code, modifier_text) = match name.split_once(':') {
        Some((code, modifier)) => (code, Some(modifier)),
        None => (name, None),
    };
    if code == "_id" {
        if modifier_text.is_some() {
            return Err(unknown(name, "_id takes no modifier"));
        }
        return Ok(Condition::Id(
            value.split(',').map(str::to_string).collect(),
        ));
    }
    if code == "_list" {
        // search.html#list: the resources a List names in its entries, i.e.
        // `_has:List:item:_id=...`; the functional lists (`$current-problems`...) are not kept
        if modifier_text.is_some() {
            return Err(unknown(name, "_list takes no modifier"));
        }
        if value.starts_with('$') {
            return Err(unknown(
                name,
                format!("Functional list '{value}' is not supported; name a List by id"),
            ));
        }
        return Ok(Condition::Has {
            source_type: "List".into(),
            reference_param: "item".into(),
            inner: Box::new(Condition::Id(
                value.split(',').map(str::to_string).collect(),
            )),
        });
    }
    let Some(param) = registry.get(resource_type, code).cloned() else {
        return Err(unknown(
            name,
            format!("Unknown search parameter '{code}' for {resource_type}"),
        ));
    };
    if modifier_text == Some("missing") {
        return match value {
            "true" => Ok(Condition::Missing {
                param,
                missing: true,
            }),
            "false" => Ok(Condition::Missing {
                param,
                missing: false,
            }),
            _ => Err(invalid(name, ":missing takes true or false")),
        };
    }
    if matches!(code, "_text" | "_content") && param.kind == ParamType::String {
        return text_condition(param, modifier_text, name, value);
    }
    if param.kind == ParamType::Token
        && let Some(negate @ ("in" | "not-in")) = modifier_text
    {
        return value_set_condition(param, negate == "not-in", name, value);
    }
    if param.kind == ParamType::Token
        && let Some(direction @ ("above" | "below")) = modifier_text
    {
        let direction = if direction == "above" {
            Subsumption::Ancestors
        } else {
            Subsumption::Descendants
        };
        return subsumption_condition(param, direction, name, value);
    }
    let modifier = parse_modifier(&param, modifier_text, name)?;
    if code == "_lastUpdated" {
        let values = split_values(value)
            .iter()
            .map(|v| parse_date(name, v))
            .collect::<Result<_, _>>()?;
        return Ok(Condition::LastUpdated(values));
    }
    if param.kind == ParamType::Special
        || (param.kind == ParamType::Composite && param.components.len() != 2)
    {
        return Err(unknown(
            name,
            format!(
                "Search parameter '{code}' ({}) is not supported",
                param.kind.as_str()
            ),
        ));
    }
    let values = split_values(value)
        .iter()
        .map(|v| parse_value(&param, &modifier, name, v))
        .collect::<Result<Vec<_>, _>>()?;
    if values.is_empty() {
        return Err(invalid(name, format!("'{name}' has no value")));
    }
    Ok(Condition::Match {
        param,
        modifier,
        values,
    })
}

/// `_text` / `_content` (search/text.rs): every word of a value must start a word of the
/// resource's text; comma-separated values are alternatives.
fn text_condition(
    param: Arc<SearchParam>,
    modifier: Option<&str>,
    name: &str,
    value: &str,
) -> Result<Condition, FhirError> {
    if let Some(modifier) = modifier {
        return Err(unknown(
            name,
            format!(
                "Modifier ':{modifier}' is not supported on '{}'",
                param.code
            ),
        ));
    }
    let mut alternatives = Vec::new();
    for raw in split_values(value) {
        let words = crate::search::text::search_words(&unescape(&raw));
        if words.is_empty() {
            return Err(invalid(
                name,
                format!("'{raw}' has no word to search for (letters or digits, two or more)"),
            ));
        }
        let mut all: Vec<Condition> = words
            .into_iter()
            .map(|word| Condition::Match {
                param: param.clone(),
                modifier: Modifier::None,
                values: vec![SearchValue::String(word)],
            })
            .collect();
        alternatives.push(if all.len() == 1 {
            all.remove(0)
        } else {
            Condition::AllOf(all)
        });
    }
    Ok(if alternatives.len() == 1 {
        alternatives.remove(0)
    } else {
        Condition::AnyOf(alternatives)
    })
}

/// Token `:above` / `:below` (`system|code`, several separated by commas): the code and the codes
/// that subsume it, or that it subsumes, in the code system's hierarchy, as token values.
fn subsumption_condition(
    param: Arc<SearchParam>,
    direction: Subsumption,
    name: &str,
    value: &str,
) -> Result<Condition, FhirError> {
    let mut values = Vec::new();
    for raw in split_values(value) {
        let Some((system, code)) = split_pipe(&raw).filter(|(s, c)| !s.is_empty() && !c.is_empty())
        else {
            return Err(invalid(
                name,
                format!("'{raw}': :above and :below take system|code"),
            ));
        };
        let codes = crate::terminology::terminology()
            .subsumption(&system, &code, direction, MAX_VALUE_SET_CODES)
            .map_err(|error| {
                invalid(
                    name,
                    match error {
                        SubsumptionError::UnknownSystem => {
                            format!("This server holds no hierarchy of the code system '{system}'")
                        }
                        SubsumptionError::UnknownCode => {
                            format!("'{code}' is not a code of '{system}'")
                        }
                        SubsumptionError::TooMany => {
                            format!("'{raw}' has more than {MAX_VALUE_SET_CODES} related codes")
                        }
                    },
                )
            })?;
        for code in codes {
            // as for `:in`: `code` elements are indexed without their implied system
            for system in [system.clone(), String::new()] {
                values.push(SearchValue::Token {
                    system: Some(system),
                    code: Some(code.clone()),
                });
            }
        }
    }
    if values.len() > 2 * MAX_VALUE_SET_CODES {
        return Err(invalid(
            name,
            format!("'{name}' names more than {MAX_VALUE_SET_CODES} codes in all"),
        ));
    }
    Ok(Condition::Match {
        param,
        modifier: Modifier::None,
        values,
    })
}

/// The most codes a value set may have for `:in` / `:not-in`.
const MAX_VALUE_SET_CODES: usize = 1_000;

/// `:in` / `:not-in`: the codes of a value set the server holds, as token values (any of them;
/// with `:not-in`, none of them).
fn value_set_condition(
    param: Arc<SearchParam>,
    negate: bool,
    name: &str,
    url: &str,
) -> Result<Condition, FhirError> {
    let vs = crate::terminology::terminology()
        .value_set(url)
        .ok_or_else(|| {
            invalid(
                name,
                format!("The value set '{url}' is not held by this server"),
            )
        })?;
    let codes = vs.expansion.as_ref().ok_or_else(|| {
        invalid(
            name,
            format!(
                "The value set '{url}' draws on a code system this server does not hold in full"
            ),
        )
    })?;
    if codes.len() > MAX_VALUE_SET_CODES {
        return Err(invalid(
            name,
            format!("The value set '{url}' has more than {MAX_VALUE_SET_CODES} codes"),
        ));
    }
    // `code` elements (Patient.gender) are indexed without a system, which their binding
    // implies: they match by code alone (`|code`).
    let values: Vec<SearchValue> = codes
        .iter()
        .flat_map(|c| {
            [c.system.clone(), String::new()].map(|system| SearchValue::Token {
                system: Some(system),
                code: Some(c.code.clone()),
            })
        })
        .collect();
    if values.is_empty() {
        return Err(invalid(name, format!("The value set '{url}' has no codes")));
    }
    Ok(Condition::Match {
        param,
        modifier: if negate {
            Modifier::Not
        } else {
            Modifier::None
        },
        values,
    })
}

fn parse_modifier(
    param: &SearchParam,
    modifier: Option<&str>,
    name: &str,
) -> Result<Modifier, FhirError> {
    let Some(text) = modifier else {
        return Ok(Modifier::None);
    };
    let allowed = match (param.kind, text) {
        (ParamType::String, "exact") => Modifier::Exact,
        (ParamType::String, "contains") => Modifier::Contains,
        (ParamType::Token, "text") => Modifier::Text,
        (ParamType::Token, "not") => Modifier::Not,
        (ParamType::Token, "of-type") if param.code == "identifier" => Modifier::OfType,
        (ParamType::Uri, "above") => Modifier::Above,
        (ParamType::Uri, "below") => Modifier::Below,
        (ParamType::Reference, "identifier") => Modifier::Identifier,
        (ParamType::Reference, other) if crate::fhir::is_resource_type(other) => {
            if !param.targets.is_empty() && !param.targets.iter().any(|t| t == other) {
                return Err(invalid(
                    name,
                    format!("'{}' cannot refer to {other}", param.code),
                ));
            }
            Modifier::Type(other.to_string())
        }
        _ => {
            return Err(unknown(
                name,
                format!(
                    "Modifier ':{text}' is not supported on '{}' ({})",
                    param.code,
                    param.kind.as_str()
                ),
            ));
        }
    };
    Ok(allowed)
}

/// Splits a value list on unescaped commas; `\,` `\|` `\$` `\\` are kept escaped for the types.
fn split_values(value: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                current.push('\\');
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            ',' => values.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    values.push(current);
    values
}

/// Removes search escapes (`\,` → `,`).
fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            // a trailing backslash escapes nothing: it is itself
            out.push(chars.next().unwrap_or('\\'));
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits on the first unescaped `|`.
fn split_pipe(value: &str) -> Option<(String, String)> {
    let mut escaped = false;
    for (index, c) in value.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '|' if !escaped => {
                return Some((unescape(&value[..index]), unescape(&value[index + 1..])));
            }
            _ => escaped = false,
        }
    }
    None
}

fn parse_prefix(value: &str) -> (Prefix, &str) {
    let prefixes = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];
    for (text, prefix) in prefixes {
        if let Some(rest) = value.strip_prefix(text)
            && rest.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
        {
            return (prefix, rest);
        }
    }
    (Prefix::Eq, value)
}

fn parse_date(name: &str, value: &str) -> Result<SearchValue, FhirError> {
    let (prefix, rest) = parse_prefix(value);
    let (start, end) = parse_fhir_range(rest).ok_or_else(|| {
        invalid(
            name,
            format!("'{value}' is not a date such as 2026-01-31 or ge2026-01-31T10:00:00Z"),
        )
    })?;
    Ok(SearchValue::Date { prefix, start, end })
}

/// A decimal's value and the range its precision implies (search.html#number: `100` is
/// [99.5, 100.5), `1e2` is [50, 150)).
fn parse_number(name: &str, text: &str) -> Result<(f64, f64, f64), FhirError> {
    let bad = || invalid(name, format!("'{text}' is not a number"));
    if text.is_empty()
        || !text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
    {
        return Err(bad());
    }
    let value: f64 = text.parse().map_err(|_| bad())?;
    if !value.is_finite() {
        return Err(bad());
    }
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().map_err(|_| bad())?),
        None => (text, 0),
    };
    let decimals = mantissa
        .split_once('.')
        .map_or(0, |(_, fraction)| fraction.len() as i32);
    let half_step = 0.5 * 10f64.powi(exponent - decimals);
    Ok((value, value - half_step, value + half_step))
}

fn parse_value(
    param: &SearchParam,
    modifier: &Modifier,
    name: &str,
    raw: &str,
) -> Result<SearchValue, FhirError> {
    Ok(match param.kind {
        ParamType::String => SearchValue::String(unescape(raw)),
        ParamType::Uri => SearchValue::Uri(unescape(raw)),
        ParamType::Token => {
            if *modifier == Modifier::Text {
                return Ok(SearchValue::String(unescape(raw)));
            }
            if *modifier == Modifier::OfType {
                // system|code|value
                let parts: Vec<&str> = raw.splitn(3, '|').collect();
                let [system, code, value] = parts.as_slice() else {
                    return Err(invalid(name, ":of-type takes type-system|type-code|value"));
                };
                return Ok(SearchValue::Token {
                    system: Some(format!("{system}|{code}")),
                    code: Some(unescape(value)),
                });
            }
            match split_pipe(raw) {
                Some((system, code)) if system.is_empty() && code.is_empty() => {
                    return Err(invalid(
                        name,
                        "A token needs a code or a system: '|' alone names neither",
                    ));
                }
                Some((system, code)) => SearchValue::Token {
                    system: Some(system),
                    code: (!code.is_empty()).then_some(code),
                },
                None => SearchValue::Token {
                    system: None,
                    code: Some(unescape(raw)),
                },
            }
        }
        ParamType::Reference => {
            if *modifier == Modifier::Identifier {
                return Ok(match split_pipe(raw) {
                    Some((system, code)) => SearchValue::Token {
                        system: Some(system),
                        code: (!code.is_empty()).then_some(code),
                    },
                    None => SearchValue::Token {
                        system: None,
                        code: Some(unescape(raw)),
                    },
                });
            }
            let raw = unescape(raw);
            let forced_type = match modifier {
                Modifier::Type(t) => Some(t.clone()),
                _ => None,
            };
            if raw.contains("://") || raw.starts_with("urn:") {
                let (target_type, id) = super::extract::split_reference(&raw)
                    .map_or((None, None), |(t, i)| (Some(t), Some(i)));
                SearchValue::Reference {
                    target_type: target_type.or(forced_type),
                    id,
                    url: Some(raw.split('|').next().unwrap_or_default().to_string()),
                }
            } else if let Some((target_type, id)) = raw.split_once('/') {
                if !crate::fhir::is_resource_type(target_type) || !crate::fhir::is_valid_id(id) {
                    return Err(invalid(
                        name,
                        format!("'{raw}' is not a reference such as Patient/123"),
                    ));
                }
                SearchValue::Reference {
                    target_type: Some(target_type.to_string()),
                    id: Some(id.to_string()),
                    url: None,
                }
            } else {
                if !crate::fhir::is_valid_id(&raw) {
                    return Err(invalid(name, format!("'{raw}' is not a resource id")));
                }
                let single_target = (param.targets.len() == 1).then(|| param.targets[0].clone());
                SearchValue::Reference {
                    target_type: forced_type.or(single_target),
                    id: Some(raw),
                    url: None,
                }
            }
        }
        ParamType::Date => parse_date(name, raw)?,
        ParamType::Number | ParamType::Quantity => {
            let (prefix, rest) = parse_prefix(raw);
            let mut parts = rest.splitn(3, '|');
            let number = parts.next().unwrap_or_default();
            let system = parts.next().map(unescape).filter(|s| !s.is_empty());
            let code = parts.next().map(unescape).filter(|s| !s.is_empty());
            if param.kind == ParamType::Number && (system.is_some() || code.is_some()) {
                return Err(invalid(name, "a number parameter takes no unit"));
            }
            let (value, low, high) = parse_number(name, number)?;
            SearchValue::Quantity {
                prefix,
                value,
                low,
                high,
                system,
                code,
            }
        }
        ParamType::Composite => {
            let Some((first, second)) = raw.split_once('$') else {
                return Err(invalid(
                    name,
                    format!("'{raw}' is not a composite value such as code$value"),
                ));
            };
            let (system, code) = match split_pipe(first) {
                Some((system, code)) => (Some(system), code),
                None => (None, unescape(first)),
            };
            let Some((second_kind, _)) = param.components.get(1) else {
                return Err(unknown(name, "not supported"));
            };
            let part = SearchParam {
                kind: *second_kind,
                components: Vec::new(),
                ..param.clone()
            };
            let second = parse_value(&part, &Modifier::None, name, second)?;
            SearchValue::Composite {
                system,
                code,
                second: Box::new(second),
            }
        }
        ParamType::Special => return Err(unknown(name, "not supported")),
    })
}

fn parse_chain(
    registry: &Registry,
    resource_type: &str,
    name: &str,
    head: &str,
    tail: &str,
    value: &str,
    depth: usize,
) -> Result<Condition, FhirError> {
    let (code, forced_type) = match head.split_once(':') {
        Some((code, target)) => (code, Some(target)),
        None => (head, None),
    };
    let Some(param) = registry.get(resource_type, code).cloned() else {
        return Err(unknown(
            name,
            format!("Unknown search parameter '{code}' for {resource_type}"),
        ));
    };
    if param.kind != ParamType::Reference {
        return Err(invalid(
            name,
            format!("'{code}' is not a reference parameter, so it cannot be chained"),
        ));
    }
    let candidates: Vec<String> = match forced_type {
        Some(target) if crate::fhir::is_resource_type(target) => vec![target.to_string()],
        Some(target) => return Err(unknown(name, format!("'{target}' is not a resource type"))),
        None if !param.targets.is_empty() => param.targets.clone(),
        None => {
            return Err(invalid(
                name,
                format!("'{code}' can refer to any type; name one, as in {code}:Patient.name"),
            ));
        }
    };
    let mut targets = Vec::new();
    let mut last_error = None;
    for target in candidates {
        match parse_condition(registry, &target, tail, value, depth + 1) {
            Ok(inner) => targets.push((target, inner)),
            Err(err) => last_error = Some(err),
        }
    }
    if targets.is_empty() {
        return Err(
            last_error.unwrap_or_else(|| unknown(name, "no target type has this parameter"))
        );
    }
    Ok(Condition::Chain { param, targets })
}

fn parse_has(
    registry: &Registry,
    resource_type: &str,
    name: &str,
    rest: &str,
    value: &str,
    depth: usize,
) -> Result<Condition, FhirError> {
    // rest = Type:referenceParam:innerName (innerName may itself be _has:...)
    let mut parts = rest.splitn(3, ':');
    let (Some(source_type), Some(reference_param), Some(inner_name)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(name, "_has takes _has:Type:reference:parameter"));
    };
    if !crate::fhir::is_resource_type(source_type) {
        return Err(unknown(
            name,
            format!("'{source_type}' is not a resource type"),
        ));
    }
    let Some(reference) = registry.get(source_type, reference_param) else {
        return Err(unknown(
            name,
            format!("Unknown search parameter '{reference_param}' for {source_type}"),
        ));
    };
    if reference.kind != ParamType::Reference {
        return Err(invalid(
            name,
            format!("'{reference_param}' is not a reference parameter"),
        ));
    }
    if !reference.targets.is_empty() && !reference.targets.iter().any(|t| t == resource_type) {
        return Err(invalid(
            name,
            format!("{source_type}.{reference_param} cannot refer to {resource_type}"),
        ));
    }
    let inner = parse_condition(registry, source_type, inner_name, value, depth + 1)?;
    Ok(Condition::Has {
        source_type: source_type.to_string(),
        reference_param: reference_param.to_string(),
        inner: Box::new(inner),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(resource_type: &str, name: &str, value: &str) -> Result<Condition, FhirError> {
        parse_condition(&Registry::r4(), resource_type, name, value, 0)
    }

    #[test]
    fn values_are_typed_by_the_parameter() {
        let Ok(Condition::Match { values, .. }) =
            parse("Patient", "identifier", "http://x|1\\,2,|3,4")
        else {
            panic!()
        };
        assert_eq!(
            values,
            vec![
                SearchValue::Token {
                    system: Some("http://x".into()),
                    code: Some("1,2".into())
                },
                SearchValue::Token {
                    system: Some(String::new()),
                    code: Some("3".into())
                },
                SearchValue::Token {
                    system: None,
                    code: Some("4".into())
                },
            ]
        );
        let Ok(Condition::Match { values, .. }) = parse(
            "Observation",
            "value-quantity",
            "le5.40|http://unitsofmeasure.org|mg",
        ) else {
            panic!()
        };
        let SearchValue::Quantity {
            prefix,
            low,
            high,
            code,
            ..
        } = &values[0]
        else {
            panic!()
        };
        assert_eq!((*prefix, code.as_deref()), (Prefix::Le, Some("mg")));
        assert!((low - 5.395).abs() < 1e-9 && (high - 5.405).abs() < 1e-9);
        let Ok(Condition::Match { values, .. }) = parse("Observation", "subject", "Patient/1")
        else {
            panic!()
        };
        assert_eq!(
            values[0],
            SearchValue::Reference {
                target_type: Some("Patient".into()),
                id: Some("1".into()),
                url: None
            }
        );
    }

    #[test]
    fn bad_names_and_values_are_told_apart() {
        let code = |r: Result<Condition, FhirError>| match r {
            Err(FhirError::Invalid(issues)) => issues[0].code,
            _ => "ok",
        };
        assert_eq!(code(parse("Patient", "nickname", "x")), "not-supported");
        assert_eq!(code(parse("Patient", "name:above", "x")), "not-supported");
        assert_eq!(code(parse("Patient", "birthdate", "yesterday")), "value");
        assert_eq!(code(parse("Patient", "birthdate", "xx2020")), "value");
        assert_eq!(code(parse("Observation", "value-quantity", "abc")), "value");
        assert_eq!(code(parse("Patient", "name:missing", "maybe")), "value");
        assert_eq!(
            code(parse("Observation", "subject:Patient.name", "x")),
            "ok"
        );
        assert_eq!(
            code(parse("Patient", "_has:Observation:subject:code", "1")),
            "ok"
        );
        assert_eq!(
            code(parse(
                "Patient",
                "_has:Observation:subject:_has:Observation:subject:_has:Observation:subject:_has:Observation:subject:_has:Observation:subject:code",
                "1"
            )),
            "value"
        );
    }

    #[test]
    fn composite_values_pair_a_token_with_a_typed_value() {
        let Ok(Condition::Match { values, .. }) = parse(
            "Observation",
            "code-value-quantity",
            "http://loinc.org|8480-6$lt60",
        ) else {
            panic!()
        };
        let SearchValue::Composite {
            system,
            code,
            second,
        } = &values[0]
        else {
            panic!()
        };
        assert_eq!(
            (system.as_deref(), code.as_str()),
            (Some("http://loinc.org"), "8480-6")
        );
        assert!(
            matches!(**second, SearchValue::Quantity { prefix: Prefix::Lt, value, .. } if value == 60.0)
        );
    }

    fn codes_of(condition: Result<Condition, FhirError>) -> Vec<String> {
        let Ok(Condition::Match { values, .. }) = condition else {
            panic!("{condition:?}")
        };
        let mut codes: Vec<String> = values
            .into_iter()
            .filter_map(|v| match v {
                SearchValue::Token {
                    system: Some(system),
                    code: Some(code),
                } if !system.is_empty() => Some(code),
                _ => None,
            })
            .collect();
        codes.sort();
        codes
    }

    #[test]
    fn above_and_below_walk_the_code_system_hierarchy() {
        let clinical = "http://terminology.hl7.org/CodeSystem/condition-clinical";
        assert_eq!(
            codes_of(parse(
                "Condition",
                "clinical-status:below",
                &format!("{clinical}|inactive")
            )),
            ["inactive", "remission", "resolved"]
        );
        assert_eq!(
            codes_of(parse(
                "Condition",
                "clinical-status:above",
                &format!("{clinical}|resolved")
            )),
            ["inactive", "resolved"]
        );
        // several levels: FAMMEMB > PRN > NPRN > NMTH > NMTHF
        let role = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
        let below = codes_of(parse(
            "RelatedPerson",
            "relationship:below",
            &format!("{role}|FAMMEMB"),
        ));
        assert!(
            ["FAMMEMB", "PRN", "MTH", "NMTH", "NMTHF", "SIB"]
                .iter()
                .all(|c| below.contains(&c.to_string()))
        );
        assert!(!below.contains(&"FRND".to_string()));
        assert_eq!(
            codes_of(parse(
                "RelatedPerson",
                "relationship:above",
                &format!("{role}|NMTHF")
            )),
            [
                "FAMMEMB",
                "MTH",
                "NMTH",
                "NMTHF",
                "PRN",
                "_PersonalRelationshipRoleType"
            ]
        );
    }

    #[test]
    fn above_and_below_need_a_known_hierarchy() {
        let code = |r: Result<Condition, FhirError>| match r {
            Err(FhirError::Invalid(issues)) => issues[0].code,
            _ => "ok",
        };
        assert_eq!(
            code(parse(
                "Condition",
                "code:below",
                "http://snomed.info/sct|404684003"
            )),
            "value"
        );
        assert_eq!(
            code(parse("Condition", "clinical-status:below", "inactive")),
            "value"
        );
        assert_eq!(
            code(parse("Condition", "clinical-status:below", "|inactive")),
            "value"
        );
    }

    #[test]
    fn number_precision_sets_the_range() {
        assert_eq!(parse_number("n", "100").ok(), Some((100.0, 99.5, 100.5)));
        assert_eq!(parse_number("n", "1e2").ok(), Some((100.0, 50.0, 150.0)));
        assert!(parse_number("n", "NaN").is_err());
    }
}
