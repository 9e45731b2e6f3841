//! Values and operators: the System value of an item (FHIR primitives and quantities
//! converted), equality, equivalence, ordering, arithmetic and text forms.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use super::decimal::Decimal;
use super::eval::{Result, error};
use super::parse::BinaryOp;
use super::quantity::{Quantity, date_unit};
use super::temporal::{DateTimeValue, TimeValue};
use super::{Item, types};

/// A System value.
#[derive(Debug, Clone)]
pub(super) enum Prim<'x> {
    Bool(bool),
    Integer(i64),
    Decimal(Decimal),
    String(Cow<'x, str>),
    Date(DateTimeValue),
    DateTime(DateTimeValue),
    Time(TimeValue),
    Quantity(Quantity),
}

const QUANTITY_TYPES: [&str; 6] = [
    "Quantity",
    "Age",
    "Count",
    "Distance",
    "Duration",
    "SimpleQuantity",
];
const UCUM: &str = "http://unitsofmeasure.org";

/// The System value of an item: literals as they are, FHIR primitives and quantities
/// converted; `None` for other elements.
pub(super) fn prim<'x>(item: &'x Item<'_>) -> Option<Prim<'x>> {
    Some(match item {
        Item::Bool(value) => Prim::Bool(*value),
        Item::String(text) => Prim::String(Cow::Borrowed(text)),
        Item::Integer(value) => Prim::Integer(*value),
        Item::Decimal(value) => Prim::Decimal(*value),
        Item::Date(value) => Prim::Date(*value),
        Item::DateTime(value) => Prim::DateTime(*value),
        Item::Time(value) => Prim::Time(*value),
        Item::Quantity(value) => Prim::Quantity(value.clone()),
        Item::Node { value, type_code } => return node_prim(value, type_code),
        _ => return None,
    })
}

fn node_prim<'x>(value: &'x Value, type_code: &str) -> Option<Prim<'x>> {
    Some(match (type_code, value) {
        ("boolean", Value::Bool(value)) => Prim::Bool(*value),
        ("integer" | "positiveInt" | "unsignedInt" | "integer64", Value::Number(number)) => {
            Prim::Integer(number.as_i64()?)
        }
        ("decimal", Value::Number(number)) => Prim::Decimal(Decimal::parse(&number.to_string())?),
        ("date", Value::String(text)) => {
            DateTimeValue::parse_date(text).map_or(Prim::String(Cow::Borrowed(text)), Prim::Date)
        }
        ("dateTime" | "instant", Value::String(text)) => DateTimeValue::parse_date_time(text)
            .map_or(Prim::String(Cow::Borrowed(text)), Prim::DateTime),
        ("time", Value::String(text)) => {
            TimeValue::parse(text).map_or(Prim::String(Cow::Borrowed(text)), Prim::Time)
        }
        (_, Value::String(text)) if crate::fhir::structure::is_primitive(type_code) => {
            Prim::String(Cow::Borrowed(text))
        }
        (_, Value::Object(_)) if QUANTITY_TYPES.contains(&type_code) => {
            Prim::Quantity(node_quantity(value)?)
        }
        _ => return None,
    })
}

/// A FHIR Quantity as a System quantity: its UCUM code, else its unit text.
fn node_quantity(value: &Value) -> Option<Quantity> {
    let number = Decimal::parse(&value.get("value")?.as_number()?.to_string())?;
    let code = value.get("code").and_then(Value::as_str);
    let system = value.get("system").and_then(Value::as_str);
    let unit = match (system, code) {
        (Some(UCUM) | None, Some(code)) => code,
        _ => value
            .get("unit")
            .and_then(Value::as_str)
            .or(code)
            .unwrap_or("1"),
    };
    Some(Quantity::new(number, unit))
}

/// An item holding a System value.
pub(super) fn item_of<'a>(value: Prim<'_>) -> Item<'a> {
    match value {
        Prim::Bool(value) => Item::Bool(value),
        Prim::Integer(value) => Item::Integer(value),
        Prim::Decimal(value) => Item::Decimal(value),
        Prim::String(text) => Item::String(text.into_owned()),
        Prim::Date(value) => Item::Date(value),
        Prim::DateTime(value) => Item::DateTime(value),
        Prim::Time(value) => Item::Time(value),
        Prim::Quantity(value) => Item::Quantity(value),
    }
}

pub(super) fn number_literal<'a>(text: &str) -> Result<Item<'a>> {
    if text.contains('.') {
        Decimal::parse(text)
            .map(Item::Decimal)
            .ok_or_else(|| error(format!("invalid number {text}")))
    } else {
        text.parse()
            .map(Item::Integer)
            .map_err(|_| error(format!("integer {text} is out of range")))
    }
}

pub(super) fn text_of(value: &Prim<'_>) -> String {
    match value {
        Prim::Bool(value) => value.to_string(),
        Prim::Integer(value) => value.to_string(),
        Prim::Decimal(value) => value.to_string(),
        Prim::String(text) => text.to_string(),
        Prim::Date(value) | Prim::DateTime(value) => value.to_string(),
        Prim::Time(value) => value.to_string(),
        Prim::Quantity(value) => value.to_string(),
    }
}

/// `toString()` of an item; `None` for elements that are not primitives. A FHIR primitive
/// written as a JSON string keeps its text (an instant's microseconds, `+00:00`).
pub(super) fn to_text(item: &Item<'_>) -> Option<String> {
    if is_complex_node(item) {
        return None;
    }
    if let Item::Node {
        value: Value::String(text),
        ..
    } = item
    {
        return Some(text.clone());
    }
    prim(item).map(|value| text_of(&value))
}

fn is_complex_node(item: &Item<'_>) -> bool {
    matches!(item, Item::Node { type_code, .. } if !crate::fhir::structure::is_primitive(type_code))
}

fn as_decimal(value: &Prim<'_>) -> Option<Decimal> {
    match value {
        Prim::Integer(value) => Some(Decimal::from_i64(*value)),
        Prim::Decimal(value) => Some(*value),
        _ => None,
    }
}

/// `=` on two items: `None` when undecidable (dates of different precision, quantities of
/// incompatible units).
pub(super) fn equal(a: &Item<'_>, b: &Item<'_>) -> Option<bool> {
    match (prim(a), prim(b)) {
        (Some(x), Some(y)) => equal_values(&x, &y),
        (None, None) => Some(match (a, b) {
            (Item::Node { value: x, .. }, Item::Node { value: y, .. }) => x == y,
            (Item::Resolved(x), Item::Resolved(y)) => x == y,
            (
                Item::TypeInfo {
                    namespace: n1,
                    name: x,
                },
                Item::TypeInfo {
                    namespace: n2,
                    name: y,
                },
            ) => n1 == n2 && x == y,
            (Item::Valueless { extension: x, .. }, Item::Valueless { extension: y, .. }) => {
                std::ptr::eq(*x, *y)
            }
            _ => false,
        }),
        _ => Some(false),
    }
}

fn equal_values(a: &Prim<'_>, b: &Prim<'_>) -> Option<bool> {
    if let (Some(x), Some(y)) = (as_decimal(a), as_decimal(b)) {
        return Some(x == y);
    }
    match (a, b) {
        (Prim::Bool(x), Prim::Bool(y)) => Some(x == y),
        (Prim::String(x), Prim::String(y)) => Some(x == y),
        (Prim::Date(x) | Prim::DateTime(x), Prim::Date(y) | Prim::DateTime(y)) => {
            x.compare(y).map(Ordering::is_eq)
        }
        (Prim::Time(x), Prim::Time(y)) => x.compare(y).map(Ordering::is_eq),
        (Prim::Quantity(x), Prim::Quantity(y)) => x.compare(y).map(Ordering::is_eq),
        _ => Some(false),
    }
}

/// `=` on collections: empty when either is empty, false when sizes differ, else item by item
/// in order.
pub(super) fn equal_collections(left: &[Item<'_>], right: &[Item<'_>]) -> Option<bool> {
    if left.is_empty() || right.is_empty() {
        return None;
    }
    if left.len() != right.len() {
        return Some(false);
    }
    let mut undecided = false;
    for (a, b) in left.iter().zip(right) {
        match equal(a, b) {
            Some(false) => return Some(false),
            None => undecided = true,
            Some(true) => {}
        }
    }
    if undecided { None } else { Some(true) }
}

fn normalize_text(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// `~` on two items.
pub(super) fn equivalent(a: &Item<'_>, b: &Item<'_>) -> bool {
    match (prim(a), prim(b)) {
        (Some(x), Some(y)) => {
            if let (Some(x), Some(y)) = (as_decimal(&x), as_decimal(&y)) {
                return x.equivalent(y);
            }
            match (x, y) {
                (Prim::String(x), Prim::String(y)) => normalize_text(&x) == normalize_text(&y),
                (Prim::Quantity(x), Prim::Quantity(y)) => x.equivalent(&y),
                (x, y) => equal_values(&x, &y) == Some(true),
            }
        }
        _ => equal(a, b) == Some(true),
    }
}

/// `~` on collections: the same items in any order; two empty collections are equivalent.
pub(super) fn equivalent_collections(left: &[Item<'_>], right: &[Item<'_>]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let mut used = vec![false; right.len()];
    left.iter().all(|a| {
        let found = right
            .iter()
            .enumerate()
            .position(|(at, b)| !used[at] && equivalent(a, b));
        found.map(|at| used[at] = true).is_some()
    })
}

/// Order of two items: `None` when undecidable; an error when they cannot be compared.
pub(super) fn compare(a: &Item<'_>, b: &Item<'_>) -> Result<Option<Ordering>> {
    let (Some(x), Some(y)) = (prim(a), prim(b)) else {
        return Err(error("only primitive values can be compared"));
    };
    if let (Some(x), Some(y)) = (as_decimal(&x), as_decimal(&y)) {
        return Ok(Some(x.compare(y)));
    }
    Ok(match (&x, &y) {
        (Prim::String(x), Prim::String(y)) => Some(x.cmp(y)),
        (Prim::Date(x) | Prim::DateTime(x), Prim::Date(y) | Prim::DateTime(y)) => x.compare(y),
        (Prim::Time(x), Prim::Time(y)) => x.compare(y),
        (Prim::Quantity(x), Prim::Quantity(y)) => x.compare(y),
        _ => {
            return Err(error(format!(
                "cannot compare {} with {}",
                kind(&x),
                kind(&y)
            )));
        }
    })
}

fn kind(value: &Prim<'_>) -> &'static str {
    match value {
        Prim::Bool(_) => "Boolean",
        Prim::Integer(_) => "Integer",
        Prim::Decimal(_) => "Decimal",
        Prim::String(_) => "String",
        Prim::Date(_) => "Date",
        Prim::DateTime(_) => "DateTime",
        Prim::Time(_) => "Time",
        Prim::Quantity(_) => "Quantity",
    }
}

/// Unary `-` (or `+`) of a number or quantity.
pub(super) fn polarity<'a>(item: &Item<'_>, negative: bool) -> Result<Item<'a>> {
    Ok(match prim(item) {
        Some(Prim::Integer(value)) => Item::Integer(if negative {
            value
                .checked_neg()
                .ok_or_else(|| error("integer overflow"))?
        } else {
            value
        }),
        Some(Prim::Decimal(value)) => Item::Decimal(if negative { value.negate() } else { value }),
        Some(Prim::Quantity(value)) => Item::Quantity(if negative {
            Quantity::new(value.value.negate(), value.unit)
        } else {
            value
        }),
        _ => return Err(error("a sign applies to numbers and quantities only")),
    })
}

fn overflow() -> super::FhirPathError {
    error("arithmetic overflow")
}

/// Arithmetic operators on two single items; `Ok(None)` for an empty result (division by
/// zero, incompatible units, dates out of range).
pub(super) fn arithmetic<'a>(op: BinaryOp, a: &Item<'_>, b: &Item<'_>) -> Result<Option<Item<'a>>> {
    let (Some(x), Some(y)) = (prim(a), prim(b)) else {
        return Err(error("arithmetic needs primitive values"));
    };
    if let (Prim::Integer(p), Prim::Integer(q)) = (&x, &y) {
        let (p, q) = (*p, *q);
        return Ok(match op {
            BinaryOp::Add => Some(Item::Integer(p.checked_add(q).ok_or_else(overflow)?)),
            BinaryOp::Subtract => Some(Item::Integer(p.checked_sub(q).ok_or_else(overflow)?)),
            BinaryOp::Multiply => Some(Item::Integer(p.checked_mul(q).ok_or_else(overflow)?)),
            BinaryOp::Div => p.checked_div(q).map(Item::Integer),
            BinaryOp::Mod => p.checked_rem(q).map(Item::Integer),
            _ => Decimal::from_i64(p)
                .checked_div(Decimal::from_i64(q))
                .map(Item::Decimal),
        });
    }
    if let (Some(p), Some(q)) = (as_decimal(&x), as_decimal(&y)) {
        let result = match op {
            BinaryOp::Add => Some(p.checked_add(q).ok_or_else(overflow)?),
            BinaryOp::Subtract => Some(p.checked_sub(q).ok_or_else(overflow)?),
            BinaryOp::Multiply => Some(p.checked_mul(q).ok_or_else(overflow)?),
            BinaryOp::Divide => p.checked_div(q),
            BinaryOp::Div => p.checked_div_trunc(q),
            _ => p.checked_rem(q),
        };
        return Ok(result.map(Item::Decimal));
    }
    let undefined = || {
        error(format!(
            "{op:?} is not defined for {} and {}",
            kind(&x),
            kind(&y)
        ))
    };
    Ok(match (op, &x, &y) {
        (BinaryOp::Add, Prim::String(p), Prim::String(q)) => Some(Item::String(format!("{p}{q}"))),
        (BinaryOp::Add | BinaryOp::Subtract, Prim::Quantity(p), Prim::Quantity(q)) => {
            p.add(q, op == BinaryOp::Subtract).map(Item::Quantity)
        }
        (BinaryOp::Multiply | BinaryOp::Divide, Prim::Quantity(p), Prim::Quantity(q)) => {
            p.multiply(q, op == BinaryOp::Divide).map(Item::Quantity)
        }
        (BinaryOp::Multiply | BinaryOp::Divide, Prim::Quantity(p), number)
            if as_decimal(number).is_some() =>
        {
            let factor = as_decimal(number).ok_or_else(undefined)?;
            let value = if op == BinaryOp::Multiply {
                Some(p.value.checked_mul(factor).ok_or_else(overflow)?)
            } else {
                p.value.checked_div(factor)
            };
            value.map(|value| Item::Quantity(Quantity::new(value, p.unit.clone())))
        }
        (BinaryOp::Multiply, number, Prim::Quantity(q)) if as_decimal(number).is_some() => {
            let factor = as_decimal(number).ok_or_else(undefined)?;
            Some(Item::Quantity(Quantity::new(
                q.value.checked_mul(factor).ok_or_else(overflow)?,
                q.unit.clone(),
            )))
        }
        (
            BinaryOp::Add | BinaryOp::Subtract,
            Prim::Date(_) | Prim::DateTime(_) | Prim::Time(_),
            Prim::Quantity(q),
        ) => {
            let unit = date_unit(&q.unit)
                .ok_or_else(|| error(format!("cannot move a date or time by '{}'", q.unit)))?;
            let amount = q.value.trunc().ok_or_else(overflow)?;
            let amount = if op == BinaryOp::Subtract {
                amount.checked_neg().ok_or_else(overflow)?
            } else {
                amount
            };
            match x {
                Prim::Date(date) => date.add(amount, unit).map(Item::Date),
                Prim::DateTime(moment) => moment.add(amount, unit).map(Item::DateTime),
                Prim::Time(time) => {
                    Some(Item::Time(time.add(amount, unit).ok_or_else(|| {
                        error(format!("cannot move a time by '{}'", q.unit))
                    })?))
                }
                _ => None,
            }
        }
        _ => return Err(undefined()),
    })
}

/// A text equal for equal items (for `distinct()`, `|` and other set operations).
pub(super) fn key(item: &Item<'_>) -> String {
    if is_complex_node(item)
        && let Item::Node { value, .. } = item
    {
        return format!("j:{}", serde_json::to_string(value).unwrap_or_default());
    }
    match prim(item) {
        Some(Prim::Bool(value)) => format!("b:{value}"),
        Some(value @ (Prim::Integer(_) | Prim::Decimal(_))) => format!(
            "n:{}",
            as_decimal(&value)
                .map(Decimal::normalized)
                .unwrap_or(Decimal::ZERO)
        ),
        Some(Prim::String(text)) => format!("s:{text}"),
        Some(Prim::Date(value) | Prim::DateTime(value)) => {
            let mut value = if value.has_time() {
                value.to_utc().unwrap_or(value)
            } else {
                value
            };
            if value.second.is_some() && value.millisecond.is_none() {
                value.millisecond = Some(0);
            }
            format!("d:{value}")
        }
        Some(Prim::Time(mut value)) => {
            if value.second.is_some() && value.millisecond.is_none() {
                value.millisecond = Some(0);
            }
            format!("t:{value}")
        }
        Some(Prim::Quantity(value)) => format!("q:{} {}", value.value.normalized(), value.unit),
        None => match item {
            Item::Resolved(type_name) => format!("r:{type_name}"),
            Item::TypeInfo { namespace, name } => format!("i:{namespace}.{name}"),
            Item::Valueless { extension, .. } => format!("v:{:p}", *extension),
            other => format!("?:{}", types::reported_name(&other.type_info().1)),
        },
    }
}
