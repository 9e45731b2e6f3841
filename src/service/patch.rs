//! FHIR PATCH without HTTP: JSON Patch (RFC 6902) and FHIRPath Patch (fhirpatch.html). Both
//! return a patched copy and leave the input untouched; the caller checks the outcome (structure,
//! `resourceType`, `id`) like any other update. Operations apply in order, each to the result of
//! the previous one, and the first failure fails the whole patch.

use std::fmt;

use serde_json::{Map, Value};

use crate::fhir::outcome::Issue;
use crate::fhir::structure::{element_keys, is_primitive, is_repeating};
use crate::fhirpath::{self, Expr, Item};

/// Whose fault a failed patch is, for the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchErrorKind {
    /// The patch document is malformed: not an operation list, a missing or unknown member, a
    /// bad pointer or expression (400).
    Invalid,
    /// The patch is well formed but does not apply to this resource: a path that matches
    /// nothing (or too much), an index out of range, a failed `test`, a value of the wrong type
    /// (422).
    Unprocessable,
}

/// Where a patch failed: a JSON Pointer (JSON Patch) or a FHIRPath expression (FHIRPath Patch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchLocation {
    Pointer(String),
    FhirPath(String),
}

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PatchError {
    pub kind: PatchErrorKind,
    pub message: String,
    pub location: Option<PatchLocation>,
    /// The failing operation, numbered from 1.
    pub operation: Option<usize>,
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operation {
            Some(number) => write!(f, "Patch operation {number}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl PatchError {
    fn invalid(message: impl Into<String>) -> Self {
        PatchError {
            kind: PatchErrorKind::Invalid,
            message: message.into(),
            location: None,
            operation: None,
        }
    }

    fn unprocessable(message: impl Into<String>) -> Self {
        PatchError {
            kind: PatchErrorKind::Unprocessable,
            message: message.into(),
            location: None,
            operation: None,
        }
    }

    fn at(mut self, location: PatchLocation) -> Self {
        // The innermost location is the most precise one.
        self.location.get_or_insert(location);
        self
    }

    fn in_operation(mut self, number: usize) -> Self {
        self.operation = Some(number);
        self
    }

    /// The OperationOutcome issue for this error: `invalid` for a malformed patch, `processing`
    /// for one that does not apply, with the FHIRPath expression when there is one.
    pub fn issue(&self) -> Issue {
        let code = match self.kind {
            PatchErrorKind::Invalid => "invalid",
            PatchErrorKind::Unprocessable => "processing",
        };
        let issue = Issue::error(code, self.to_string());
        match &self.location {
            Some(PatchLocation::FhirPath(expression)) => issue.at(expression.clone()),
            _ => issue,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON Patch (RFC 6902)

/// Applies a JSON Patch document (an array of operations) to a copy of `resource`.
/// RFC 7386 JSON Merge Patch: members of `patch` replace those of `target`, objects merge
/// recursively, `null` removes. (The result is checked as a resource by the caller.)
pub fn apply_merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(changes) = patch else {
        return patch.clone();
    };
    let mut result = match target {
        Value::Object(members) => members.clone(),
        _ => serde_json::Map::new(),
    };
    for (key, value) in changes {
        if value.is_null() {
            result.remove(key);
        } else {
            let merged = apply_merge_patch(result.get(key).unwrap_or(&Value::Null), value);
            result.insert(key.clone(), merged);
        }
    }
    Value::Object(result)
}

pub fn apply_json_patch(resource: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(operations) = patch else {
        return Err(PatchError::invalid(
            "A JSON Patch document must be a JSON array of operations",
        ));
    };
    let mut document = resource.clone();
    for (number, operation) in (1..).zip(operations) {
        json_operation(&mut document, operation).map_err(|error| error.in_operation(number))?;
    }
    Ok(document)
}

/// A parsed JSON Pointer (RFC 6901) with its text for messages.
struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    fn parse(text: &str) -> Result<Self, PatchError> {
        let located = |message: String| {
            PatchError::invalid(message).at(PatchLocation::Pointer(text.to_string()))
        };
        if text.is_empty() {
            return Ok(Pointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(located(format!(
                "The JSON Pointer '{text}' must be empty or start with '/'"
            )));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    token.push(c);
                    continue;
                }
                // `~1` is `/` and `~0` is `~`, decoded in one pass so `~01` stays `~1`.
                match chars.next() {
                    Some('0') => token.push('~'),
                    Some('1') => token.push('/'),
                    _ => {
                        return Err(located(format!(
                            "The JSON Pointer '{text}' has a '~' not followed by 0 or 1"
                        )));
                    }
                }
            }
            tokens.push(token);
        }
        Ok(Pointer {
            text: text.to_string(),
            tokens,
        })
    }

    /// The pointer to the first `count` tokens, for messages.
    fn prefix_text(&self, count: usize) -> String {
        self.tokens
            .iter()
            .take(count)
            .map(|token| format!("/{}", token.replace('~', "~0").replace('/', "~1")))
            .collect()
    }

    fn location(&self) -> PatchLocation {
        PatchLocation::Pointer(self.text.clone())
    }
}

/// An array index token: `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if valid { token.parse().ok() } else { None }
}

fn pointer_get<'a>(document: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(document, |node, token| match node {
        Value::Object(map) => map.get(token),
        Value::Array(items) => array_index(token).and_then(|index| items.get(index)),
        _ => None,
    })
}

fn pointer_get_mut<'a>(document: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(document, |node, token| match node {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => array_index(token).and_then(|index| items.get_mut(index)),
        _ => None,
    })
}

fn json_operation(document: &mut Value, operation: &Value) -> Result<(), PatchError> {
    let Value::Object(members) = operation else {
        return Err(PatchError::invalid(
            "Each JSON Patch operation must be a JSON object",
        ));
    };
    let Some(op) = members.get("op").and_then(Value::as_str) else {
        return Err(PatchError::invalid(
            "A JSON Patch operation needs an 'op' string",
        ));
    };
    let pointer = |member: &str| -> Result<Pointer, PatchError> {
        match members.get(member) {
            Some(Value::String(text)) => Pointer::parse(text),
            _ => Err(PatchError::invalid(format!(
                "The '{op}' operation needs a '{member}' string (a JSON Pointer)"
            ))),
        }
    };
    // `null` is a legitimate value, so only an absent member is an error.
    let value = || -> Result<Value, PatchError> {
        members
            .get("value")
            .cloned()
            .ok_or_else(|| PatchError::invalid(format!("The '{op}' operation needs a 'value'")))
    };
    let path = pointer("path")?;
    let result = match op {
        "add" => json_add(document, &path, value()?),
        "remove" => json_remove(document, &path).map(drop),
        "replace" => {
            let value = value()?;
            match pointer_get_mut(document, &path.tokens) {
                Some(target) => {
                    *target = value;
                    Ok(())
                }
                None => Err(missing(&path)),
            }
        }
        "move" => {
            let from = pointer("from")?;
            if from.tokens == path.tokens {
                pointer_get(document, &from.tokens)
                    .map(drop)
                    .ok_or_else(|| missing(&from))
            } else if path.tokens.starts_with(&from.tokens) {
                Err(PatchError::invalid(format!(
                    "Cannot move {} into its own child {}",
                    from.text, path.text
                ))
                .at(path.location()))
            } else {
                let moved = json_remove(document, &from)?;
                json_add(document, &path, moved)
            }
        }
        "copy" => {
            let from = pointer("from")?;
            let copied = pointer_get(document, &from.tokens)
                .cloned()
                .ok_or_else(|| missing(&from))?;
            json_add(document, &path, copied)
        }
        "test" => {
            let expected = value()?;
            let actual = pointer_get(document, &path.tokens).ok_or_else(|| missing(&path))?;
            if json_equal(actual, &expected) {
                Ok(())
            } else {
                Err(PatchError::unprocessable(format!(
                    "Test failed: the value at '{}' is not the expected value",
                    path.text
                )))
            }
        }
        other => Err(PatchError::invalid(format!(
            "Unknown JSON Patch operation '{other}' (add, remove, replace, move, copy or test)"
        ))),
    };
    result.map_err(|error| error.at(path.location()))
}

fn missing(pointer: &Pointer) -> PatchError {
    PatchError::unprocessable(format!("The path '{}' does not exist", pointer.text))
        .at(pointer.location())
}

fn json_add(document: &mut Value, path: &Pointer, value: Value) -> Result<(), PatchError> {
    let Some((last, parent_tokens)) = path.tokens.split_last() else {
        *document = value;
        return Ok(());
    };
    let parent_text = || path.prefix_text(parent_tokens.len());
    let Some(parent) = pointer_get_mut(document, parent_tokens) else {
        return Err(PatchError::unprocessable(format!(
            "The path '{}' does not exist (missing objects are not created)",
            parent_text()
        )));
    };
    match parent {
        Value::Object(map) => {
            // An existing member is replaced where it stands.
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) if last == "-" => {
            items.push(value);
            Ok(())
        }
        Value::Array(items) => match array_index(last) {
            Some(index) if index <= items.len() => {
                items.insert(index, value);
                Ok(())
            }
            Some(index) => Err(PatchError::unprocessable(format!(
                "Index {index} is out of range: '{}' has {} items",
                parent_text(),
                items.len()
            ))),
            None => Err(PatchError::unprocessable(format!(
                "'{last}' is not an array index"
            ))),
        },
        _ => Err(PatchError::unprocessable(format!(
            "'{}' is neither an object nor an array",
            parent_text()
        ))),
    }
}

fn json_remove(document: &mut Value, path: &Pointer) -> Result<Value, PatchError> {
    let Some((last, parent_tokens)) = path.tokens.split_last() else {
        return Err(PatchError::unprocessable(
            "The whole document cannot be removed",
        ));
    };
    let removed = match pointer_get_mut(document, parent_tokens) {
        Some(Value::Object(map)) => map.shift_remove(last),
        Some(Value::Array(items)) => array_index(last)
            .filter(|index| *index < items.len())
            .map(|index| items.remove(index)),
        _ => None,
    };
    removed.ok_or_else(|| missing(path))
}

/// JSON equality as RFC 6902 `test` defines it: numbers by value (`1` equals `1.0`), objects
/// regardless of member order.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.to_string(), y.to_string());
            x == y
                || matches!((canonical_number(&x), canonical_number(&y)), (Some(p), Some(q)) if p == q)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, p)| y.get(key).is_some_and(|q| json_equal(p, q)))
        }
        _ => a == b,
    }
}

/// A JSON number as (negative, significant digits, exponent), so equal values compare equal
/// whatever their text (`10`, `1e1`, `10.0`). None for text that is not a JSON number.
fn canonical_number(text: &str) -> Option<(bool, String, i64)> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (
            mantissa,
            exponent
                .strip_prefix('+')
                .unwrap_or(exponent)
                .parse::<i64>()
                .ok()?,
        ),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let mut exponent = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Some((false, String::new(), 0));
    }
    let trimmed = significant.trim_end_matches('0');
    exponent = exponent.checked_add(i64::try_from(significant.len() - trimmed.len()).ok()?)?;
    Some((negative, trimmed.to_string(), exponent))
}

// ---------------------------------------------------------------------------------------------
// FHIRPath Patch

/// Applies a FHIRPath Patch (a `Parameters` resource of `operation` parameters) to a copy of
/// `resource`.
pub fn apply_fhirpath_patch(resource: &Value, parameters: &Value) -> Result<Value, PatchError> {
    let Some(map) = parameters.as_object() else {
        return Err(PatchError::invalid(
            "A FHIRPath Patch must be a Parameters resource",
        ));
    };
    if map.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(PatchError::invalid(
            "A FHIRPath Patch must be a Parameters resource",
        ));
    }
    let entries: &[Value] = match map.get("parameter") {
        None => &[],
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(PatchError::invalid("Parameters.parameter must be an array")),
    };
    let mut current = resource.clone();
    for (number, entry) in (1..).zip(entries) {
        Operation::read(entry)
            .and_then(|operation| operation.apply(&mut current))
            .map_err(|error| error.in_operation(number))?;
    }
    Ok(current)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperationType {
    Add,
    Insert,
    Delete,
    Replace,
    Move,
}

/// One `operation` parameter, read from its parts.
struct Operation<'a> {
    kind: OperationType,
    path: String,
    expr: Expr,
    name: Option<String>,
    value: Option<Given<'a>>,
    index: Option<usize>,
    source: Option<usize>,
    destination: Option<usize>,
}

/// A value as a Parameters part gives it.
enum Given<'a> {
    /// `valueX` (and `_valueX` for a primitive's id and extensions) with its FHIR type.
    Typed {
        type_code: String,
        value: Option<&'a Value>,
        companion: Option<&'a Value>,
    },
    /// `resource`: a whole resource (for `contained`, `Bundle.entry.resource`, ...).
    Resource(&'a Value),
    /// `part`: a complex value given element by element, for types a Parameters value cannot
    /// hold (backbone elements such as `Patient.contact`, `Extension`, ...).
    Parts(&'a [Value]),
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), PatchError> {
    if slot.replace(value).is_some() {
        return Err(PatchError::invalid(format!(
            "The operation has more than one '{name}' part"
        )));
    }
    Ok(())
}

/// The text of a part's `valueString`/`valueCode`/... .
fn part_text(part: &Value, name: &str) -> Result<String, PatchError> {
    part.as_object()
        .and_then(|map| {
            map.iter()
                .find(|(key, value)| key.starts_with("value") && value.is_string())
        })
        .and_then(|(_, value)| value.as_str())
        .map(str::to_string)
        .ok_or_else(|| PatchError::invalid(format!("The '{name}' part needs a string value")))
}

/// A part's `valueInteger`, which must not be negative.
fn part_index(part: &Value, name: &str) -> Result<usize, PatchError> {
    part.as_object()
        .and_then(|map| {
            map.iter()
                .find(|(key, value)| key.starts_with("value") && value.is_number())
        })
        .and_then(|(_, value)| value.as_u64())
        .and_then(|number| usize::try_from(number).ok())
        .ok_or_else(|| {
            PatchError::invalid(format!(
                "The '{name}' part needs a valueInteger of 0 or more"
            ))
        })
}

impl<'a> Operation<'a> {
    fn read(entry: &'a Value) -> Result<Self, PatchError> {
        match entry.get("name").and_then(Value::as_str) {
            Some("operation") => {}
            Some(other) => {
                return Err(PatchError::invalid(format!(
                    "Unexpected parameter '{other}': a FHIRPath Patch holds only 'operation' parameters"
                )));
            }
            None => {
                return Err(PatchError::invalid(
                    "Each parameter of a FHIRPath Patch needs a name",
                ));
            }
        }
        let Some(parts) = entry.get("part").and_then(Value::as_array) else {
            return Err(PatchError::invalid("The operation has no parts"));
        };
        let (mut kind, mut path, mut name, mut value) = (None, None, None, None);
        let (mut index, mut source, mut destination) = (None, None, None);
        for part in parts {
            let Some(part_name) = part.get("name").and_then(Value::as_str) else {
                return Err(PatchError::invalid(
                    "Each part of an operation needs a name",
                ));
            };
            match part_name {
                "type" => set_once(&mut kind, part_text(part, part_name)?, part_name)?,
                "path" => set_once(&mut path, part_text(part, part_name)?, part_name)?,
                "name" => set_once(&mut name, part_text(part, part_name)?, part_name)?,
                "value" => set_once(&mut value, Given::read(part, part_name)?, part_name)?,
                "index" => set_once(&mut index, part_index(part, part_name)?, part_name)?,
                "source" => set_once(&mut source, part_index(part, part_name)?, part_name)?,
                "destination" => {
                    set_once(&mut destination, part_index(part, part_name)?, part_name)?
                }
                other => {
                    return Err(PatchError::invalid(format!(
                        "Unknown operation part '{other}'"
                    )));
                }
            }
        }
        let kind = match kind.as_deref() {
            Some("add") => OperationType::Add,
            Some("insert") => OperationType::Insert,
            Some("delete") => OperationType::Delete,
            Some("replace") => OperationType::Replace,
            Some("move") => OperationType::Move,
            Some(other) => {
                return Err(PatchError::invalid(format!(
                    "Unknown operation type '{other}' (add, insert, delete, replace or move)"
                )));
            }
            None => return Err(PatchError::invalid("The operation has no 'type' part")),
        };
        let Some(path) = path else {
            return Err(PatchError::invalid("The operation has no 'path' part"));
        };
        let expr = fhirpath::parse(&path).map_err(|error| {
            PatchError::invalid(format!("Invalid path: {error}"))
                .at(PatchLocation::FhirPath(path.clone()))
        })?;
        let needed: &[(&str, bool)] = match kind {
            OperationType::Add => &[("name", name.is_some()), ("value", value.is_some())],
            OperationType::Insert => &[("value", value.is_some()), ("index", index.is_some())],
            OperationType::Delete => &[],
            OperationType::Replace => &[("value", value.is_some())],
            OperationType::Move => &[
                ("source", source.is_some()),
                ("destination", destination.is_some()),
            ],
        };
        if let Some((missing, _)) = needed.iter().find(|(_, present)| !present) {
            let kind = format!("{kind:?}").to_lowercase();
            return Err(PatchError::invalid(format!(
                "The {kind} operation needs a '{missing}' part"
            ))
            .at(PatchLocation::FhirPath(path)));
        }
        Ok(Operation {
            kind,
            path,
            expr,
            name,
            value,
            index,
            source,
            destination,
        })
    }

    fn apply(&self, resource: &mut Value) -> Result<(), PatchError> {
        let result = match (self.kind, &self.value) {
            (OperationType::Add, Some(value)) => self.add(resource, value),
            (OperationType::Insert, Some(value)) => self.insert(resource, value),
            (OperationType::Delete, _) => self.delete(resource),
            (OperationType::Replace, Some(value)) => self.replace(resource, value),
            (OperationType::Move, _) => self.move_item(resource),
            // `read` checked the parts each type needs.
            _ => Err(PatchError::invalid("The operation misses a part")),
        };
        result.map_err(|error| error.at(PatchLocation::FhirPath(self.path.clone())))
    }

    fn add(&self, resource: &mut Value, given: &Given<'_>) -> Result<(), PatchError> {
        let name = self.name.as_deref().unwrap_or_default();
        let steps = match matched_nodes(resource, &self.expr)?.as_slice() {
            [] => {
                return Err(PatchError::unprocessable(format!(
                    "No content found at {} when adding",
                    self.path
                )));
            }
            [node] => locate(resource, node)?,
            many => return Err(too_many(&self.path, many.len(), "add")),
        };
        let container_type = type_at(resource, &steps)?;
        let element = choose_element(&container_type, name, given.type_code())?;
        let (value, companion) = given.materialize(&element.type_code)?;
        let container = children_mut(resource, &steps)?;
        add_member(container, &element, value, companion)
    }

    fn insert(&self, resource: &mut Value, given: &Given<'_>) -> Result<(), PatchError> {
        let index = self.index.unwrap_or_default();
        let (steps, element) = self.list(resource)?;
        let (value, companion) = given.materialize(&element.type_code)?;
        let container = children_mut(resource, &steps)?;
        let length = list_length(container, &element.key)?;
        if index > length {
            return Err(PatchError::unprocessable(format!(
                "Index {index} is out of range: the list has {length} items"
            )));
        }
        insert_aligned(container, &element.key, index, value, companion)
    }

    fn delete(&self, resource: &mut Value) -> Result<(), PatchError> {
        let steps = match matched_nodes(resource, &self.expr)?.as_slice() {
            [] => return Ok(()),
            [node] => locate(resource, node)?,
            many => return Err(too_many(&self.path, many.len(), "delete")),
        };
        let Some(slot) = Slot::of(steps)? else {
            return Err(PatchError::unprocessable(
                "The resource itself cannot be deleted by a patch",
            ));
        };
        remove_slot(resource, &slot)
    }

    fn replace(&self, resource: &mut Value, given: &Given<'_>) -> Result<(), PatchError> {
        let steps = match matched_nodes(resource, &self.expr)?.as_slice() {
            [] => {
                return Err(PatchError::unprocessable(format!(
                    "No content found at {} when replacing",
                    self.path
                )));
            }
            [node] => locate(resource, node)?,
            many => return Err(too_many(&self.path, many.len(), "replace")),
        };
        let Some(slot) = Slot::of(steps)? else {
            return Err(PatchError::unprocessable(
                "The resource itself cannot be replaced by a FHIRPath Patch",
            ));
        };
        let parent_type = type_at(resource, &slot.parent)?;
        let current = element_in(&parent_type, &slot.key).ok_or_else(|| {
            PatchError::unprocessable(format!("'{}' is not an element of {parent_type}", slot.key))
        })?;
        // A choice element may change type (valueQuantity → valueString), and so its key.
        let element = if current.choice {
            choose_element(&parent_type, &current.name, given.type_code())?
        } else {
            current
        };
        let (value, companion) = given.materialize(&element.type_code)?;
        let parent = object_at_mut(resource, &slot.parent)?;
        let companion_key = format!("_{}", slot.key);
        match slot.index {
            None => {
                let position = parent
                    .keys()
                    .position(|key| *key == slot.key)
                    .unwrap_or(parent.len());
                parent.shift_remove(&slot.key);
                parent.shift_remove(&companion_key);
                let mut at = position.min(parent.len());
                if !value.is_null() {
                    parent.shift_insert(at, element.key.clone(), value);
                    at += 1;
                }
                if let Some(companion) = companion {
                    parent.shift_insert(
                        at.min(parent.len()),
                        format!("_{}", element.key),
                        companion,
                    );
                }
                Ok(())
            }
            Some(index) => {
                let Some(item) = parent
                    .get_mut(&slot.key)
                    .and_then(Value::as_array_mut)
                    .and_then(|items| items.get_mut(index))
                else {
                    return Err(PatchError::unprocessable(format!(
                        "No content found at {} when replacing",
                        self.path
                    )));
                };
                *item = value;
                set_companion(parent, &slot.key, index, companion)
            }
        }
    }

    fn move_item(&self, resource: &mut Value) -> Result<(), PatchError> {
        let (source, destination) = (
            self.source.unwrap_or_default(),
            self.destination.unwrap_or_default(),
        );
        let (steps, element) = self.list(resource)?;
        let container = children_mut(resource, &steps)?;
        let length = list_length(container, &element.key)?;
        if source >= length || destination >= length {
            return Err(PatchError::unprocessable(format!(
                "Source {source} and destination {destination} must both be below the list's length {length}"
            )));
        }
        let companion_key = format!("_{}", element.key);
        for key in [element.key.as_str(), companion_key.as_str()] {
            if let Some(items) = container.get_mut(key).and_then(Value::as_array_mut) {
                if key == companion_key {
                    pad(items, length);
                }
                if source < items.len() && destination < items.len() {
                    let item = items.remove(source);
                    items.insert(destination, item);
                }
            }
        }
        tidy_companions(container, &element.key);
        Ok(())
    }

    /// The list that `insert` and `move` work on: the path must end in the name of a repeating
    /// element (`Patient.identifier`), whose container must be a single element. The list itself
    /// may be empty or absent.
    fn list(&self, resource: &Value) -> Result<(Vec<Step>, Element), PatchError> {
        let (base, name) = match &self.expr {
            Expr::Member(base, name) => (Some(base.as_ref()), name.as_str()),
            Expr::Identifier(name) => (None, name.as_str()),
            _ => {
                return Err(PatchError::invalid(
                    "The path of an insert or move must end in the name of a list element, such as Patient.identifier",
                ));
            }
        };
        let steps = match base {
            None => Vec::new(),
            Some(base) => match matched_nodes(resource, base)?.as_slice() {
                [] => {
                    return Err(PatchError::unprocessable(format!(
                        "No content found at {}",
                        self.path
                    )));
                }
                [node] => locate(resource, node)?,
                many => return Err(too_many(&self.path, many.len(), "change a list in")),
            },
        };
        let container_type = type_at(resource, &steps)?;
        let element = element_in(&container_type, name).ok_or_else(|| {
            PatchError::unprocessable(format!("'{name}' is not an element of {container_type}"))
        })?;
        if !element.many {
            return Err(PatchError::unprocessable(format!(
                "{container_type}.{name} is not a list (it does not repeat)"
            )));
        }
        Ok((steps, element))
    }
}

fn too_many(path: &str, count: usize, action: &str) -> PatchError {
    PatchError::unprocessable(format!(
        "The path {path} matches {count} elements; it must match exactly one to {action}"
    ))
}

impl<'a> Given<'a> {
    fn read(part: &'a Value, name: &str) -> Result<Self, PatchError> {
        let Some(map) = part.as_object() else {
            return Err(PatchError::invalid(format!(
                "The '{name}' part must be an object"
            )));
        };
        let mut found: Option<Given<'a>> = None;
        let mut companion: Option<(&str, &'a Value)> = None;
        for (key, member) in map {
            let given = if let Some(variant) = key.strip_prefix('_') {
                if variant.starts_with("value") {
                    companion = Some((variant, member));
                }
                continue;
            } else if key == "resource" {
                Given::Resource(member)
            } else if key == "part" {
                match member {
                    Value::Array(parts) => Given::Parts(parts),
                    _ => {
                        return Err(PatchError::invalid(format!(
                            "The parts of '{name}' must be an array"
                        )));
                    }
                }
            } else if key.starts_with("value") {
                let type_code = value_type(key).ok_or_else(|| {
                    PatchError::invalid(format!("'{key}' is not a Parameters value type"))
                })?;
                Given::Typed {
                    type_code,
                    value: Some(member),
                    companion: None,
                }
            } else {
                continue;
            };
            if found.replace(given).is_some() {
                return Err(PatchError::invalid(format!(
                    "The '{name}' part has more than one value"
                )));
            }
        }
        match (found, companion) {
            (
                Some(Given::Typed {
                    type_code, value, ..
                }),
                Some((variant, extension)),
            ) => {
                if value_type(variant).as_deref() != Some(type_code.as_str()) {
                    return Err(PatchError::invalid(format!(
                        "'_{variant}' does not match the value of '{name}'"
                    )));
                }
                Ok(Given::Typed {
                    type_code,
                    value,
                    companion: Some(extension),
                })
            }
            // A primitive given only by its id and extensions.
            (None, Some((variant, extension))) => {
                let type_code = value_type(variant).ok_or_else(|| {
                    PatchError::invalid(format!("'_{variant}' is not a Parameters value type"))
                })?;
                Ok(Given::Typed {
                    type_code,
                    value: None,
                    companion: Some(extension),
                })
            }
            (Some(_), Some((variant, _))) => Err(PatchError::invalid(format!(
                "'_{variant}' has no value to go with in '{name}'"
            ))),
            (Some(given), None) => Ok(given),
            (None, None) => Err(PatchError::invalid(format!(
                "The '{name}' part has no value (value[x], resource or part)"
            ))),
        }
    }

    fn type_code(&self) -> Option<&str> {
        match self {
            Given::Typed { type_code, .. } => Some(type_code),
            Given::Resource(_) => Some("Resource"),
            Given::Parts(_) => None,
        }
    }

    /// The JSON for an element of type `target`, and for a primitive its `_name` companion.
    fn materialize(&self, target: &str) -> Result<(Value, Option<Value>), PatchError> {
        match self {
            Given::Typed {
                type_code,
                value,
                companion,
            } => {
                if !compatible(type_code, target) {
                    return Err(PatchError::unprocessable(format!(
                        "A {type_code} value cannot go in an element of type {target}"
                    )));
                }
                if companion.is_some() && !is_primitive(target) {
                    return Err(PatchError::invalid(format!(
                        "Only a primitive value has a '_value{}' part",
                        capitalize(type_code)
                    )));
                }
                Ok((value.cloned().unwrap_or(Value::Null), companion.cloned()))
            }
            Given::Resource(resource) => {
                let resource_type = resource
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if target == "Resource" || target == resource_type {
                    Ok(((*resource).clone(), None))
                } else {
                    Err(PatchError::unprocessable(format!(
                        "A resource cannot go in an element of type {target}"
                    )))
                }
            }
            Given::Parts(parts) => {
                if is_primitive(target) || target == "Resource" {
                    return Err(PatchError::unprocessable(format!(
                        "An element of type {target} must be given as a value, not as parts"
                    )));
                }
                Ok((build_from_parts(parts, target)?, None))
            }
        }
    }
}

/// The FHIR type of a Parameters `valueX` key (`valueCodeableConcept` → `CodeableConcept`).
fn value_type(key: &str) -> Option<String> {
    element_keys("Parameters.parameter", "value")
        .into_iter()
        .find(|(variant, _)| variant == key)
        .map(|(_, code)| code)
}

fn capitalize(code: &str) -> String {
    let mut chars = code.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// Whether a value of FHIR type `given` may stand in an element of type `target`. Primitives
/// only need the same JSON form (lexical checks are the structure check's job afterwards);
/// complex types must match, except for the Quantity profiles.
fn compatible(given: &str, target: &str) -> bool {
    fn json_form(code: &str) -> u8 {
        match code {
            "boolean" => 0,
            "integer" | "unsignedInt" | "positiveInt" => 1,
            "decimal" => 2,
            _ => 3,
        }
    }
    const QUANTITIES: [&str; 7] = [
        "Quantity",
        "Age",
        "Count",
        "Distance",
        "Duration",
        "MoneyQuantity",
        "SimpleQuantity",
    ];
    if given == target {
        return true;
    }
    match (is_primitive(given), is_primitive(target)) {
        (true, true) => {
            json_form(given) == json_form(target)
                || (json_form(given) == 1 && json_form(target) == 2)
        }
        (false, false) => QUANTITIES.contains(&given) && QUANTITIES.contains(&target),
        _ => false,
    }
}

/// A complex value from `part`s named after its elements, recursively.
fn build_from_parts(parts: &[Value], type_name: &str) -> Result<Value, PatchError> {
    let mut object = Map::new();
    for part in parts {
        let Some(name) = part.get("name").and_then(Value::as_str) else {
            return Err(PatchError::invalid("Each part of a value needs a name"));
        };
        let given = Given::read(part, name)?;
        let element = choose_element(type_name, name, given.type_code())?;
        let (value, companion) = given.materialize(&element.type_code)?;
        add_member(&mut object, &element, value, companion)?;
    }
    if object.is_empty() {
        return Err(PatchError::invalid(format!(
            "A {type_name} value given as parts needs at least one part"
        )));
    }
    Ok(Value::Object(object))
}

/// One element of a type as it appears in JSON.
#[derive(Debug, Clone)]
struct Element {
    /// The element name (`value` for `valueString`).
    name: String,
    /// The JSON key (`valueString`).
    key: String,
    type_code: String,
    many: bool,
    choice: bool,
    /// Every JSON key of the element (all variants of a choice element).
    keys: Vec<String>,
}

/// The element behind a JSON key or element name of `type_name`: a plain element, a choice
/// variant (`deceasedBoolean`), or a choice element's name (`deceased`, then `key` and
/// `type_code` are those of its first variant). A primitive has `id` and `extension` only.
fn element_in(type_name: &str, name: &str) -> Option<Element> {
    if is_primitive(type_name) {
        return match name {
            "id" => Some(plain_element(name, "string", false)),
            "extension" => Some(plain_element(name, "Extension", true)),
            _ => None,
        };
    }
    let keys = element_keys(type_name, name);
    if let Some((key, code)) = keys.first() {
        let choice = key != name;
        return Some(Element {
            name: name.to_string(),
            key: key.clone(),
            type_code: code.clone(),
            many: is_repeating(type_name, name),
            choice,
            keys: keys.iter().map(|(key, _)| key.clone()).collect(),
        });
    }
    // A choice variant: `deceasedBoolean` is `deceased` of type boolean.
    name.char_indices()
        .filter(|(at, c)| *at > 0 && c.is_ascii_uppercase())
        .find_map(|(at, _)| {
            let base = name.get(..at)?;
            let variants = element_keys(type_name, base);
            let (key, code) = variants.iter().find(|(key, _)| key == name)?;
            Some(Element {
                name: base.to_string(),
                key: key.clone(),
                type_code: code.clone(),
                many: is_repeating(type_name, base),
                choice: true,
                keys: variants.iter().map(|(key, _)| key.clone()).collect(),
            })
        })
}

fn plain_element(name: &str, type_code: &str, many: bool) -> Element {
    Element {
        name: name.to_string(),
        key: name.to_string(),
        type_code: type_code.to_string(),
        many,
        choice: false,
        keys: vec![name.to_string()],
    }
}

/// The element `name` of `type_name` for a value of type `given`: for a choice element, the
/// variant of that type (`value` with a Quantity → `valueQuantity`).
fn choose_element(type_name: &str, name: &str, given: Option<&str>) -> Result<Element, PatchError> {
    let element = element_in(type_name, name).ok_or_else(|| {
        PatchError::unprocessable(format!("'{name}' is not an element of {type_name}"))
    })?;
    // A plain element, or a variant named explicitly.
    if !element.choice || element.key == name {
        return Ok(element);
    }
    let Some(given) = given else {
        return Err(PatchError::unprocessable(format!(
            "{type_name}.{name} is a choice element: give its value as value[x] of one of its types"
        )));
    };
    let variants = element_keys(type_name, &element.name);
    let exact = variants.iter().find(|(_, code)| code == given);
    let chosen = exact.or_else(|| {
        match variants
            .iter()
            .filter(|(_, code)| compatible(given, code))
            .collect::<Vec<_>>()
            .as_slice()
        {
            [only] => Some(*only),
            _ => None,
        }
    });
    let Some((key, code)) = chosen else {
        return Err(PatchError::unprocessable(format!(
            "{type_name}.{name} cannot hold a {given} value"
        )));
    };
    Ok(Element {
        key: key.clone(),
        type_code: code.clone(),
        ..element
    })
}

/// Adds `value` as element `element` of `object`: appended to a repeating element, or set if
/// the non-repeating element is absent (the spec's rule for `add`).
fn add_member(
    object: &mut Map<String, Value>,
    element: &Element,
    value: Value,
    companion: Option<Value>,
) -> Result<(), PatchError> {
    if element.many {
        let length = list_length(object, &element.key)?;
        return insert_aligned(object, &element.key, length, value, companion);
    }
    if element
        .keys
        .iter()
        .any(|key| object.contains_key(key) || object.contains_key(&format!("_{key}")))
    {
        return Err(PatchError::unprocessable(format!(
            "'{}' already has a value: add only sets a non-repeating element that is absent (use replace)",
            element.name
        )));
    }
    if !value.is_null() {
        object.insert(element.key.clone(), value);
    }
    if let Some(companion) = companion {
        object.insert(format!("_{}", element.key), companion);
    }
    Ok(())
}

/// The length of the list `key` of `object` (0 when absent).
fn list_length(object: &Map<String, Value>, key: &str) -> Result<usize, PatchError> {
    match object.get(key) {
        None => Ok(0),
        Some(Value::Array(items)) => Ok(items.len()),
        Some(_) => Err(PatchError::unprocessable(format!(
            "'{key}' repeats, but the resource does not hold it as an array"
        ))),
    }
}

/// Inserts into list `key` at `index`, keeping the `_key` companion list aligned.
fn insert_aligned(
    object: &mut Map<String, Value>,
    key: &str,
    index: usize,
    value: Value,
    companion: Option<Value>,
) -> Result<(), PatchError> {
    if value.is_null() && companion.is_none() {
        return Err(PatchError::invalid("The value is empty"));
    }
    let length = list_length(object, key)?;
    let Some(items) = object
        .entry(key)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
    else {
        return Err(PatchError::unprocessable(format!(
            "'{key}' is not an array"
        )));
    };
    items.insert(index.min(length), value);
    let companion_key = format!("_{key}");
    if companion.is_none() && !object.contains_key(&companion_key) {
        return Ok(());
    }
    let Some(companions) = object
        .entry(companion_key)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
    else {
        return Err(PatchError::unprocessable(format!(
            "'_{key}' is not an array"
        )));
    };
    pad(companions, length);
    companions.insert(
        index.min(companions.len()),
        companion.unwrap_or(Value::Null),
    );
    tidy_companions(object, key);
    Ok(())
}

/// Sets the companion of item `index` of list `key` (`None` clears it).
fn set_companion(
    object: &mut Map<String, Value>,
    key: &str,
    index: usize,
    companion: Option<Value>,
) -> Result<(), PatchError> {
    let companion_key = format!("_{key}");
    if companion.is_none() && !object.contains_key(&companion_key) {
        return Ok(());
    }
    let length = list_length(object, key)?;
    let Some(companions) = object
        .entry(companion_key)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
    else {
        return Err(PatchError::unprocessable(format!(
            "'_{key}' is not an array"
        )));
    };
    pad(companions, length);
    if let Some(slot) = companions.get_mut(index) {
        *slot = companion.unwrap_or(Value::Null);
    }
    tidy_companions(object, key);
    Ok(())
}

fn pad(items: &mut Vec<Value>, length: usize) {
    if items.len() < length {
        items.resize(length, Value::Null);
    }
}

/// Drops a companion list with nothing left in it, and an emptied list with its companion.
fn tidy_companions(object: &mut Map<String, Value>, key: &str) {
    let companion_key = format!("_{key}");
    if object
        .get(key)
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        object.shift_remove(key);
        object.shift_remove(&companion_key);
    }
    if object
        .get(&companion_key)
        .and_then(Value::as_array)
        .is_some_and(|items| items.iter().all(Value::is_null))
    {
        object.shift_remove(&companion_key);
    }
}

/// A step of a JSON path from the resource root.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Where an element sits: member `key` of the object at `parent`, item `index` if it repeats.
#[derive(Debug)]
struct Slot {
    parent: Vec<Step>,
    key: String,
    index: Option<usize>,
}

impl Slot {
    /// None for the root.
    fn of(mut steps: Vec<Step>) -> Result<Option<Slot>, PatchError> {
        let slot = match (steps.pop(), steps.pop()) {
            (None, _) => return Ok(None),
            (Some(Step::Key(key)), before) => {
                steps.extend(before);
                Slot {
                    parent: steps,
                    key,
                    index: None,
                }
            }
            (Some(Step::Index(index)), Some(Step::Key(key))) => Slot {
                parent: steps,
                key,
                index: Some(index),
            },
            _ => {
                return Err(PatchError::unprocessable(
                    "The path selects something that is not a FHIR element",
                ));
            }
        };
        Ok(Some(slot))
    }
}

/// The distinct elements `expr` selects in `resource`.
fn matched_nodes<'a>(resource: &'a Value, expr: &Expr) -> Result<Vec<&'a Value>, PatchError> {
    let items = fhirpath::evaluate(expr, resource)
        .map_err(|error| PatchError::invalid(format!("Cannot evaluate the path: {error}")))?;
    let mut nodes: Vec<&'a Value> = Vec::new();
    for item in items {
        let Item::Node { value, .. } = item else {
            return Err(PatchError::unprocessable(
                "The path gives a computed value, not an element of the resource",
            ));
        };
        if !nodes.iter().any(|node| std::ptr::eq(*node, value)) {
            nodes.push(value);
        }
    }
    Ok(nodes)
}

/// The JSON path of `target`, an element borrowed from `root`, found by identity.
fn locate(root: &Value, target: &Value) -> Result<Vec<Step>, PatchError> {
    fn search(node: &Value, target: &Value, path: &mut Vec<Step>) -> bool {
        if std::ptr::eq(node, target) {
            return true;
        }
        match node {
            Value::Object(map) => {
                for (key, child) in map {
                    path.push(Step::Key(key.clone()));
                    if search(child, target, path) {
                        return true;
                    }
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate() {
                    path.push(Step::Index(index));
                    if search(child, target, path) {
                        return true;
                    }
                    path.pop();
                }
            }
            _ => {}
        }
        false
    }
    let mut path = Vec::new();
    if search(root, target, &mut path) {
        Ok(path)
    } else {
        Err(PatchError::unprocessable(
            "The path selects something outside the resource",
        ))
    }
}

fn value_at<'a>(root: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    steps.iter().try_fold(root, |node, step| match step {
        Step::Key(key) => node.get(key),
        Step::Index(index) => node.get(index),
    })
}

fn value_at_mut<'a>(root: &'a mut Value, steps: &[Step]) -> Option<&'a mut Value> {
    steps.iter().try_fold(root, |node, step| match step {
        Step::Key(key) => node.get_mut(key),
        Step::Index(index) => node.get_mut(index),
    })
}

fn object_at_mut<'a>(
    root: &'a mut Value,
    steps: &[Step],
) -> Result<&'a mut Map<String, Value>, PatchError> {
    value_at_mut(root, steps)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| PatchError::unprocessable("The element's parent is not an object"))
}

/// The FHIR type of the element at `steps`, following the element model from the root
/// (a nested resource counts as its own `resourceType`).
fn type_at(root: &Value, steps: &[Step]) -> Result<String, PatchError> {
    let resource_type = |node: &Value| {
        node.get("resourceType")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut type_name = resource_type(root)
        .ok_or_else(|| PatchError::unprocessable("The resource has no resourceType"))?;
    let mut node = root;
    for step in steps {
        node = match step {
            Step::Key(key) => {
                let element = element_in(&type_name, key).ok_or_else(|| {
                    PatchError::unprocessable(format!("'{key}' is not an element of {type_name}"))
                })?;
                type_name = element.type_code;
                node.get(key)
            }
            Step::Index(index) => node.get(index),
        }
        .ok_or_else(|| PatchError::unprocessable("The path leads nowhere"))?;
        if type_name == "Resource" && !node.is_array() {
            type_name = resource_type(node).ok_or_else(|| {
                PatchError::unprocessable("A nested resource has no resourceType")
            })?;
        }
    }
    Ok(type_name)
}

/// The object holding the children of the element at `steps`: the element itself, or for a
/// primitive its `_name` companion (created as needed, aligned with a repeating element).
fn children_mut<'a>(
    root: &'a mut Value,
    steps: &[Step],
) -> Result<&'a mut Map<String, Value>, PatchError> {
    let is_object = value_at(root, steps).is_some_and(Value::is_object);
    if is_object {
        return object_at_mut(root, steps);
    }
    let Some(slot) = Slot::of(steps.to_vec())? else {
        return Err(PatchError::unprocessable("The resource is not an object"));
    };
    let parent = object_at_mut(root, &slot.parent)?;
    let companion_key = format!("_{}", slot.key);
    let companion = match slot.index {
        None => parent
            .entry(companion_key)
            .or_insert_with(|| Value::Object(Map::new())),
        Some(index) => {
            let length = list_length(parent, &slot.key)?;
            let Some(companions) = parent
                .entry(companion_key)
                .or_insert_with(|| Value::Array(Vec::new()))
                .as_array_mut()
            else {
                return Err(PatchError::unprocessable(format!(
                    "'_{}' is not an array",
                    slot.key
                )));
            };
            pad(companions, length.max(index + 1));
            let Some(item) = companions.get_mut(index) else {
                return Err(PatchError::unprocessable(format!(
                    "'_{}' is not aligned with its values",
                    slot.key
                )));
            };
            if item.is_null() {
                *item = Value::Object(Map::new());
            }
            item
        }
    };
    companion
        .as_object_mut()
        .ok_or_else(|| PatchError::unprocessable(format!("'_{}' is not an object", slot.key)))
}

/// Removes the element at `slot` with its companion, then any parent it leaves empty (an empty
/// object is not valid FHIR JSON).
fn remove_slot(root: &mut Value, slot: &Slot) -> Result<(), PatchError> {
    let parent = object_at_mut(root, &slot.parent)?;
    let companion_key = format!("_{}", slot.key);
    match slot.index {
        None => {
            parent.shift_remove(&slot.key);
            parent.shift_remove(&companion_key);
        }
        Some(index) => {
            for key in [slot.key.as_str(), companion_key.as_str()] {
                if let Some(items) = parent.get_mut(key).and_then(Value::as_array_mut)
                    && index < items.len()
                {
                    items.remove(index);
                }
            }
            tidy_companions(parent, &slot.key);
        }
    }
    if parent.is_empty()
        && let Some(outer) = Slot::of(slot.parent.clone())?
    {
        return remove_slot(root, &outer);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn operation(kind: &str, path: &str, extra: Value) -> Value {
        let mut parts = vec![
            json!({"name": "type", "valueCode": kind}),
            json!({"name": "path", "valueString": path}),
        ];
        if let Value::Array(more) = extra {
            parts.extend(more);
        }
        json!({"name": "operation", "part": parts})
    }

    fn fhirpath_patch(operations: Vec<Value>) -> Value {
        json!({"resourceType": "Parameters", "parameter": operations})
    }

    #[test]
    fn pointers_decode_escapes_once() {
        let pointer = Pointer::parse("/a~1b/~01/-").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(pointer.tokens, vec!["a/b", "~1", "-"]);
        assert_eq!(pointer.prefix_text(2), "/a~1b/~01");
        assert!(Pointer::parse("a").is_err());
        assert!(Pointer::parse("/a~2").is_err());
        assert!(Pointer::parse("/a~").is_err());
        assert_eq!(Pointer::parse("").map(|p| p.tokens.len()).ok(), Some(0));
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("10"), Some(10));
        assert_eq!(array_index("-1"), None);
    }

    #[test]
    fn json_patch_keeps_member_order_and_numbers() {
        // Parsed from text: `json!` would turn 2.50 into 2.5.
        let doc: Value = serde_json::from_str(r#"{"a": 1, "b": 2.50, "c": 3}"#).unwrap_or_default();
        let patched = apply_json_patch(
            &doc,
            &json!([{"op": "remove", "path": "/a"}, {"op": "add", "path": "/a", "value": 1.0}]),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            serde_json::to_string(&patched).ok().as_deref(),
            Some(r#"{"b":2.50,"c":3,"a":1.0}"#)
        );
        let tested = apply_json_patch(
            &doc,
            &json!([{"op": "test", "path": "/b", "value": 2.5}, {"op": "test", "path": "/c", "value": 3e0}]),
        );
        assert!(tested.is_ok(), "{tested:?}");
        assert!(
            apply_json_patch(&doc, &json!([{"op": "test", "path": "/c", "value": 3.01}])).is_err()
        );
    }

    #[test]
    fn json_patch_errors_name_the_operation_and_pointer() {
        let doc = json!({"a": [1]});
        let error = apply_json_patch(
            &doc,
            &json!([{"op": "test", "path": "/a/0", "value": 1}, {"op": "remove", "path": "/a/1"}]),
        )
        .err()
        .unwrap_or_else(|| panic!("removing a missing item must fail"));
        assert_eq!(error.operation, Some(2));
        assert_eq!(error.kind, PatchErrorKind::Unprocessable);
        assert_eq!(error.location, Some(PatchLocation::Pointer("/a/1".into())));
        for bad in [
            json!({}),
            json!([1]),
            json!([{"op": "jump", "path": "/a"}]),
            json!([{"op": "add", "path": "/b"}]),
            json!([{"op": "move", "path": "/b"}]),
            json!([{"op": "move", "from": "/a", "path": "/a/0"}]),
            json!([{"op": "add", "path": "/a/01", "value": 1}]),
            json!([{"op": "add", "path": "/a/2", "value": 1}]),
            json!([{"op": "remove", "path": ""}]),
            json!([{"op": "remove", "path": "/a/-"}]),
            json!([{"op": "copy", "from": "/zz", "path": "/b"}]),
        ] {
            assert!(apply_json_patch(&doc, &bad).is_err(), "{bad} should fail");
        }
        let moved = apply_json_patch(&doc, &json!([{"op": "move", "from": "/a", "path": "/a"}]));
        assert_eq!(moved.ok(), Some(doc));
    }

    #[test]
    fn numbers_compare_by_value() {
        for (a, b) in [
            ("10", "1e1"),
            ("1.50", "1.5"),
            ("0", "-0.0"),
            ("120", "1.2E+2"),
            ("0.001", "1e-3"),
        ] {
            assert_eq!(canonical_number(a), canonical_number(b), "{a} = {b}");
        }
        assert_ne!(canonical_number("1"), canonical_number("-1"));
        assert_eq!(canonical_number("1e99999999999999999999999"), None);
    }

    #[test]
    fn choice_elements_take_the_key_of_the_value_type() {
        let observation = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": 1}, "note": [{"text": "n"}]});
        let patched = apply_fhirpath_patch(
            &observation,
            &fhirpath_patch(vec![operation(
                "replace",
                "Observation.value",
                json!([{"name": "value", "valueString": "high"}]),
            )]),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            patched,
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueString": "high", "note": [{"text": "n"}]})
        );
        let keys: Vec<&String> = patched
            .as_object()
            .map(|map| map.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            ["resourceType", "status", "code", "valueString", "note"],
            "the new variant keeps the old place"
        );

        let patient = json!({"resourceType": "Patient"});
        let added = apply_fhirpath_patch(
            &patient,
            &fhirpath_patch(vec![operation(
                "add",
                "Patient",
                json!([{"name": "name", "valueString": "deceased"}, {"name": "value", "valueDateTime": "2020-01-01"}]),
            )]),
        );
        assert_eq!(
            added.ok(),
            Some(json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01"}))
        );
        let twice = apply_fhirpath_patch(
            &json!({"resourceType": "Patient", "deceasedBoolean": true}),
            &fhirpath_patch(vec![operation(
                "add",
                "Patient",
                json!([{"name": "name", "valueString": "deceased"}, {"name": "value", "valueDateTime": "2020-01-01"}]),
            )]),
        );
        assert!(twice.is_err(), "a choice element holds one value");
        let wrong = apply_fhirpath_patch(
            &patient,
            &fhirpath_patch(vec![operation(
                "add",
                "Patient",
                json!([{"name": "name", "valueString": "deceased"}, {"name": "value", "valueQuantity": {"value": 1}}]),
            )]),
        );
        assert_eq!(
            wrong.err().map(|error| error.kind),
            Some(PatchErrorKind::Unprocessable)
        );
    }

    #[test]
    fn primitive_companions_stay_aligned() {
        let patient = json!({"resourceType": "Patient", "name": [{"given": ["A", null, "C"], "_given": [null, {"id": "b"}, null]}]});
        let insert = operation(
            "insert",
            "Patient.name[0].given",
            json!([{"name": "index", "valueInteger": 0}, {"name": "value", "valueString": "Z", "_valueString": {"id": "z"}}]),
        );
        let moved = operation(
            "move",
            "Patient.name[0].given",
            json!([{"name": "source", "valueInteger": 2}, {"name": "destination", "valueInteger": 3}]),
        );
        let patched = apply_fhirpath_patch(&patient, &fhirpath_patch(vec![insert, moved]))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            patched,
            json!({"resourceType": "Patient", "name": [{"given": ["Z", "A", "C", null], "_given": [{"id": "z"}, null, null, {"id": "b"}]}]})
        );
        let deleted = apply_fhirpath_patch(
            &patched,
            &fhirpath_patch(vec![operation(
                "delete",
                "Patient.name[0].given[0]",
                json!([]),
            )]),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            deleted,
            json!({"resourceType": "Patient", "name": [{"given": ["A", "C", null], "_given": [null, null, {"id": "b"}]}]})
        );
        // Replacing a primitive replaces its id and extensions too.
        let replaced = apply_fhirpath_patch(
            &json!({"resourceType": "Patient", "birthDate": "2000", "_birthDate": {"id": "x"}}),
            &fhirpath_patch(vec![operation(
                "replace",
                "Patient.birthDate",
                json!([{"name": "value", "valueDate": "2001"}]),
            )]),
        );
        assert_eq!(
            replaced.ok(),
            Some(json!({"resourceType": "Patient", "birthDate": "2001"}))
        );
    }

    #[test]
    fn extensions_can_be_added_to_primitives_and_backbones() {
        let patient = json!({"resourceType": "Patient", "birthDate": "2000-01-01"});
        let extension = json!([{"name": "name", "valueString": "extension"}, {"name": "value", "part": [
            {"name": "url", "valueUri": "http://example.org/birth-time"},
            {"name": "value", "valueDateTime": "2000-01-01T10:00:00Z"}]}]);
        let patched = apply_fhirpath_patch(
            &patient,
            &fhirpath_patch(vec![operation("add", "Patient.birthDate", extension)]),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            patched,
            json!({"resourceType": "Patient", "birthDate": "2000-01-01", "_birthDate": {"extension": [
                {"url": "http://example.org/birth-time", "valueDateTime": "2000-01-01T10:00:00Z"}]}})
        );
        let contact = json!([{"name": "name", "valueString": "contact"}, {"name": "value", "part": [
            {"name": "relationship", "valueCodeableConcept": {"text": "a"}},
            {"name": "relationship", "valueCodeableConcept": {"text": "b"}},
            {"name": "gender", "valueCode": "other"}]}]);
        let patched = apply_fhirpath_patch(
            &patient,
            &fhirpath_patch(vec![operation("add", "Patient", contact)]),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            patched["contact"],
            json!([{"relationship": [{"text": "a"}, {"text": "b"}], "gender": "other"}])
        );
    }

    #[test]
    fn fhirpath_patch_errors() {
        let patient = json!({"resourceType": "Patient", "name": [{"family": "A"}, {"family": "B"}], "gender": "male"});
        let cases = [
            (json!({"resourceType": "Patient"}), PatchErrorKind::Invalid),
            (
                json!({"resourceType": "Parameters", "parameter": [{"name": "other"}]}),
                PatchErrorKind::Invalid,
            ),
            (
                fhirpath_patch(vec![operation("jump", "Patient", json!([]))]),
                PatchErrorKind::Invalid,
            ),
            (
                fhirpath_patch(vec![operation("delete", "Patient.(", json!([]))]),
                PatchErrorKind::Invalid,
            ),
            (
                fhirpath_patch(vec![operation("replace", "Patient.gender", json!([]))]),
                PatchErrorKind::Invalid,
            ),
            (
                fhirpath_patch(vec![operation("delete", "Patient.name", json!([]))]),
                PatchErrorKind::Unprocessable,
            ),
            (
                fhirpath_patch(vec![operation("delete", "Patient", json!([]))]),
                PatchErrorKind::Unprocessable,
            ),
            (
                fhirpath_patch(vec![operation(
                    "replace",
                    "Patient.birthDate",
                    json!([{"name": "value", "valueDate": "2000"}]),
                )]),
                PatchErrorKind::Unprocessable,
            ),
            (
                fhirpath_patch(vec![operation(
                    "replace",
                    "Patient.gender",
                    json!([{"name": "value", "valueBoolean": true}]),
                )]),
                PatchErrorKind::Unprocessable,
            ),
            (
                fhirpath_patch(vec![operation(
                    "add",
                    "Patient",
                    json!([{"name": "name", "valueString": "gender"}, {"name": "value", "valueCode": "f"}]),
                )]),
                PatchErrorKind::Unprocessable,
            ),
            (
                fhirpath_patch(vec![operation(
                    "add",
                    "Patient",
                    json!([{"name": "name", "valueString": "nickname"}, {"name": "value", "valueString": "x"}]),
                )]),
                PatchErrorKind::Unprocessable,
            ),
            (
                fhirpath_patch(vec![operation(
                    "insert",
                    "Patient.name",
                    json!([{"name": "index", "valueInteger": 3}, {"name": "value", "valueHumanName": {"text": "x"}}]),
                )]),
                PatchErrorKind::Unprocessable,
            ),
            (
                fhirpath_patch(vec![operation(
                    "insert",
                    "Patient.gender",
                    json!([{"name": "index", "valueInteger": 0}, {"name": "value", "valueCode": "x"}]),
                )]),
                PatchErrorKind::Unprocessable,
            ),
            (
                fhirpath_patch(vec![operation(
                    "move",
                    "Patient.name",
                    json!([{"name": "source", "valueInteger": 0}, {"name": "destination", "valueInteger": 2}]),
                )]),
                PatchErrorKind::Unprocessable,
            ),
            (
                fhirpath_patch(vec![operation(
                    "insert",
                    "Patient.name",
                    json!([{"name": "index", "valueInteger": -1}, {"name": "value", "valueHumanName": {"text": "x"}}]),
                )]),
                PatchErrorKind::Invalid,
            ),
        ];
        for (patch, kind) in cases {
            let result = apply_fhirpath_patch(&patient, &patch);
            assert_eq!(
                result.as_ref().err().map(|error| error.kind),
                Some(kind),
                "{patch}: {result:?}"
            );
        }
        let error = apply_fhirpath_patch(
            &patient,
            &fhirpath_patch(vec![operation("delete", "Patient.name", json!([]))]),
        )
        .err()
        .unwrap_or_else(|| panic!("two names cannot be deleted at once"));
        let issue = error.issue();
        assert_eq!(issue.code, "processing");
        assert_eq!(issue.expression.as_deref(), Some("Patient.name"));
        assert!(
            issue.diagnostics.starts_with("Patch operation 1: "),
            "{}",
            issue.diagnostics
        );
    }

    #[test]
    fn lists_can_be_created_and_contained_resources_added() {
        let patient = json!({"resourceType": "Patient"});
        let operations = vec![
            operation(
                "insert",
                "Patient.identifier",
                json!([{"name": "index", "valueInteger": 0}, {"name": "value", "valueIdentifier": {"value": "1"}}]),
            ),
            operation(
                "add",
                "Patient",
                json!([{"name": "name", "valueString": "contained"}, {"name": "value", "resource": {"resourceType": "Organization", "id": "o"}}]),
            ),
            operation(
                "replace",
                "Patient.contained[0].id",
                json!([{"name": "value", "valueId": "o2"}]),
            ),
            operation("delete", "Patient.nothing", json!([])),
        ];
        let patched = apply_fhirpath_patch(&patient, &fhirpath_patch(operations))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            patched,
            json!({"resourceType": "Patient", "identifier": [{"value": "1"}], "contained": [{"resourceType": "Organization", "id": "o2"}]})
        );
    }

    #[test]
    fn malformed_resources_and_patches_fail_without_panicking() {
        let resources = [
            json!(null),
            json!(5),
            json!([{"resourceType": "Patient"}]),
            json!({}),
            json!({"resourceType": "Patient", "name": {"given": "A"}, "_name": 3, "gender": ["x"]}),
            json!({"resourceType": "Patient", "name": [{"given": ["A"], "_given": {"id": "x"}}]}),
            json!({"resourceType": "Nope", "name": [1]}),
        ];
        let value = json!([{"name": "value", "valueHumanName": {"text": "x"}}]);
        let patches = [
            json!([]),
            json!(null),
            json!({"resourceType": "Parameters", "parameter": {}}),
            json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [1, {"name": "type"}]}]}),
            fhirpath_patch(vec![operation(
                "add",
                "Patient",
                json!([{"name": "name", "valueString": "name"}, {"name": "value", "part": []}]),
            )]),
            fhirpath_patch(vec![operation(
                "insert",
                "Patient.name",
                json!([{"name": "index", "valueInteger": 0}, value[0].clone()]),
            )]),
            fhirpath_patch(vec![operation(
                "insert",
                "Patient.name[0].given",
                json!([{"name": "index", "valueInteger": 1}, {"name": "value", "_valueString": {"id": "y"}}]),
            )]),
            fhirpath_patch(vec![operation(
                "move",
                "Patient.name",
                json!([{"name": "source", "valueInteger": 0}, {"name": "destination", "valueInteger": 0}]),
            )]),
            fhirpath_patch(vec![operation(
                "replace",
                "Patient.name.given",
                value.clone(),
            )]),
            fhirpath_patch(vec![operation("replace", "%resource", value.clone())]),
            fhirpath_patch(vec![operation("delete", "Patient.gender", json!([]))]),
            fhirpath_patch(vec![operation("delete", "'text'", json!([]))]),
            fhirpath_patch(vec![operation(
                "add",
                "Patient.name.given",
                json!([{"name": "name", "valueString": "extension"}, {"name": "value", "part": [{"name": "url", "valueUri": "u"}]}]),
            )]),
        ];
        for resource in &resources {
            for patch in &patches {
                // Any outcome will do; the point is reaching it.
                let _ = apply_fhirpath_patch(resource, patch);
                let _ = apply_json_patch(resource, patch);
            }
        }
    }

    #[test]
    fn deleting_the_last_child_removes_the_emptied_parents() {
        let patient = json!({"resourceType": "Patient", "contact": [{"name": {"text": "a"}}, {"gender": "male"}]});
        let patched = apply_fhirpath_patch(
            &patient,
            &fhirpath_patch(vec![operation(
                "delete",
                "Patient.contact[0].name.text",
                json!([]),
            )]),
        );
        assert_eq!(
            patched.ok(),
            Some(json!({"resourceType": "Patient", "contact": [{"gender": "male"}]}))
        );
    }
}
