//! The function library: FHIRPath N1 functions, the FHIR R4 additions (`extension()`,
//! `hasValue()`, `resolve()`, `conformsTo()`, ...) and the later functions the official tests
//! use (`sort()`, boundaries, `encode()`, `trim()`, `split()`, `join()`, ...).

use std::collections::{HashSet, VecDeque};

use serde_json::Value;

use super::decimal::{Decimal, MAX_SCALE};
use super::eval::{
    Collection, Engine, MAX_STRING, Result, Vars, error, node_type, single, single_value,
};
use super::ops::{self, Prim};
use super::parse::Expr;
use super::quantity::Quantity;
use super::temporal::{DateTimeValue, TimeValue};
use super::types::{Namespace, TypeSpec, reported_name};
use super::{Item, reference_type, text};
use crate::fhir::structure::is_primitive;

/// The largest compiled regular expression, in bytes: matching time grows with it.
const REGEX_SIZE_LIMIT: usize = 32 << 10;

fn arity(name: &str, args: &[Expr], min: usize, max: usize) -> Result<()> {
    if args.len() < min || args.len() > max {
        let expected = if min == max {
            min.to_string()
        } else {
            format!("{min} to {max}")
        };
        return Err(error(format!(
            "{name}() takes {expected} argument(s), not {}",
            args.len()
        )));
    }
    Ok(())
}

/// The type named by a function argument (`Quantity`, `FHIR.Patient`, ``FHIR.`Patient` ``).
fn type_argument(name: &str, args: &[Expr]) -> Result<String> {
    match args {
        [Expr::Identifier(type_name)] => Ok(type_name.clone()),
        [Expr::Member(base, type_name)] => match base.as_ref() {
            Expr::Identifier(namespace) => Ok(format!("{namespace}.{type_name}")),
            _ => Err(error(format!("{name}() takes a type name"))),
        },
        _ => Err(error(format!("{name}() takes a type name"))),
    }
}

fn bool_item<'a>(value: bool) -> Collection<'a> {
    vec![Item::Bool(value)]
}

fn boolean_of(item: &Item<'_>) -> Option<bool> {
    match ops::prim(item) {
        Some(Prim::Bool(value)) => Some(value),
        _ => None,
    }
}

fn number_of(item: &Item<'_>) -> Option<Decimal> {
    match ops::prim(item) {
        Some(Prim::Integer(value)) => Some(Decimal::from_i64(value)),
        Some(Prim::Decimal(value)) => Some(value),
        _ => None,
    }
}

fn regex(pattern: &str, whole: bool) -> Result<regex_lite::Regex> {
    let pattern = if whole {
        format!("^(?:{pattern})$")
    } else {
        pattern.to_string()
    };
    regex_lite::RegexBuilder::new(&pattern)
        .dot_matches_new_line(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(64)
        .build()
        .map_err(|err| error(format!("invalid regular expression: {err}")))
}

fn to_integer(value: &Prim<'_>) -> Option<i64> {
    match value {
        Prim::Integer(value) => Some(*value),
        Prim::Bool(value) => Some(i64::from(*value)),
        Prim::String(text) => {
            let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            text.parse().ok()
        }
        _ => None,
    }
}

fn to_decimal(value: &Prim<'_>) -> Option<Decimal> {
    match value {
        Prim::Integer(value) => Some(Decimal::from_i64(*value)),
        Prim::Decimal(value) => Some(*value),
        Prim::Bool(value) => Some(Decimal::new(i128::from(*value) * 10, 1)),
        Prim::String(text) => {
            let valid = text.bytes().enumerate().all(|(at, b)| {
                b.is_ascii_digit() || b == b'.' || (at == 0 && (b == b'+' || b == b'-'))
            });
            if valid { Decimal::parse(text) } else { None }
        }
        _ => None,
    }
}

fn to_boolean(value: &Prim<'_>) -> Option<bool> {
    match value {
        Prim::Bool(value) => Some(*value),
        Prim::Integer(1) => Some(true),
        Prim::Integer(0) => Some(false),
        Prim::Decimal(value) if *value == Decimal::ONE => Some(true),
        Prim::Decimal(value) if value.is_zero() => Some(false),
        Prim::String(text) => match text.to_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(true),
            "false" | "f" | "no" | "n" | "0" | "0.0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn to_quantity(value: &Prim<'_>) -> Option<Quantity> {
    match value {
        Prim::Quantity(value) => Some(value.clone()),
        Prim::Integer(_) | Prim::Decimal(_) | Prim::Bool(_) => {
            to_decimal(value).map(|number| Quantity::new(number, "1"))
        }
        Prim::String(text) => Quantity::parse(text),
        _ => None,
    }
}

fn to_date(value: &Prim<'_>) -> Option<DateTimeValue> {
    match value {
        Prim::Date(value) | Prim::DateTime(value) => Some(value.date()),
        Prim::String(text) => DateTimeValue::parse_date(text)
            .or_else(|| DateTimeValue::parse_date_time(text).map(|v| v.date())),
        _ => None,
    }
}

fn to_date_time(value: &Prim<'_>) -> Option<DateTimeValue> {
    match value {
        Prim::Date(value) | Prim::DateTime(value) => Some(*value),
        Prim::String(text) => DateTimeValue::parse_date_time(text),
        _ => None,
    }
}

fn to_time(value: &Prim<'_>) -> Option<TimeValue> {
    match value {
        Prim::Time(value) => Some(*value),
        Prim::String(text) => TimeValue::parse(text),
        _ => None,
    }
}

/// The low (or high) boundary of a decimal to `precision` digits after the point: half a unit
/// of its last digit below (above), cut (rounded) to the precision.
fn decimal_boundary(value: Decimal, precision: u32, high: bool) -> Option<Decimal> {
    if value.is_negative() {
        return decimal_boundary(value.abs(), precision, !high).map(Decimal::negate);
    }
    let half = Decimal::new(5, value.scale() + 1);
    let boundary = if high {
        value.checked_add(half)?
    } else {
        value.checked_sub(half)?
    };
    if precision >= boundary.scale() || high {
        boundary.round(precision)
    } else {
        boundary.truncate_to(precision)
    }
}

impl<'a> Engine<'a> {
    /// Evaluates an argument of a function that does not iterate: against the focus the
    /// function's expression is evaluated in.
    fn argument(
        &self,
        arg: &Expr,
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        self.eval(arg, focus, vars)
    }

    /// The single string an argument gives (`None` when empty).
    fn string_argument(
        &self,
        arg: &Expr,
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Option<String>> {
        let values = self.argument(arg, focus, vars)?;
        match single_value(&values)?.map(ops::prim) {
            None => Ok(None),
            Some(Some(Prim::String(text))) => Ok(Some(text.into_owned())),
            Some(_) => Err(error("expected a string argument")),
        }
    }

    /// The single integer an argument gives (`None` when empty).
    fn integer_argument(
        &self,
        arg: &Expr,
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Option<i64>> {
        let values = self.argument(arg, focus, vars)?;
        match single_value(&values)?.map(ops::prim) {
            None => Ok(None),
            Some(Some(Prim::Integer(value))) => Ok(Some(value)),
            Some(_) => Err(error("expected an integer argument")),
        }
    }

    /// Evaluates `expr` once per item, the item as `$this` and its position as `$index`.
    fn each(
        &self,
        input: &[Item<'a>],
        expr: &Expr,
        vars: Vars<'_, 'a>,
        mut visit: impl FnMut(&Item<'a>, Collection<'a>) -> Result<bool>,
    ) -> Result<()> {
        for (index, item) in input.iter().enumerate() {
            self.spend(1)?;
            let result = self.eval(
                expr,
                std::slice::from_ref(item),
                Vars {
                    index: Some(index),
                    total: vars.total,
                },
            )?;
            if !visit(item, result)? {
                break;
            }
        }
        Ok(())
    }

    fn filter(
        &self,
        input: &[Item<'a>],
        criteria: &Expr,
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        let mut kept = Vec::new();
        self.each(input, criteria, vars, |item, result| {
            if self.truth(&result)? == Some(true) {
                kept.push(item.clone());
            }
            Ok(true)
        })?;
        Ok(kept)
    }

    /// The single string of a string function's input (`None` when empty).
    fn input_string(name: &str, input: &[Item<'a>]) -> Result<Option<String>> {
        match single_value(input)?.map(ops::prim) {
            None => Ok(None),
            Some(Some(Prim::String(text))) => Ok(Some(text.into_owned())),
            Some(_) => Err(error(format!("{name}() applies to strings"))),
        }
    }

    pub(super) fn call(
        &self,
        name: &str,
        input: Collection<'a>,
        args: &[Expr],
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
        explicit_input: bool,
    ) -> Result<Collection<'a>> {
        match name {
            // Called without an input, iif() is a plain conditional over the focus.
            // Called without an input, iif() is a plain conditional in the focus.
            "iif" if !explicit_input => self.conditional(focus, args, vars),
            "empty" | "exists" | "all" | "allTrue" | "anyTrue" | "allFalse" | "anyFalse"
            | "subsetOf" | "supersetOf" | "count" | "distinct" | "isDistinct" | "not" => {
                self.existence(name, input, args, focus, vars)
            }
            "where" | "select" | "repeat" | "ofType" | "as" | "is" | "type" | "aggregate"
            | "sort" | "iif" | "trace" => self.filtering(name, input, args, vars),
            "single" | "first" | "last" | "tail" | "skip" | "take" | "intersect" | "exclude"
            | "union" | "combine" => self.subsetting(name, input, args, focus, vars),
            "toBoolean" | "convertsToBoolean" | "toInteger" | "convertsToInteger" | "toDecimal"
            | "convertsToDecimal" | "toString" | "convertsToString" | "toDate"
            | "convertsToDate" | "toDateTime" | "convertsToDateTime" | "toTime"
            | "convertsToTime" | "toQuantity" | "convertsToQuantity" => {
                self.conversion(name, input, args, focus, vars)
            }
            "indexOf" | "lastIndexOf" | "substring" | "startsWith" | "endsWith" | "contains"
            | "upper" | "lower" | "replace" | "matches" | "matchesFull" | "replaceMatches"
            | "length" | "toChars" | "trim" | "split" | "join" | "encode" | "decode" | "escape"
            | "unescape" => self.strings(name, input, args, focus, vars),
            "abs" | "ceiling" | "exp" | "floor" | "ln" | "log" | "power" | "round" | "sqrt"
            | "truncate" => self.math(name, input, args, focus, vars),
            "lowBoundary" | "highBoundary" | "precision" | "comparable" => {
                self.precision(name, input, args, focus, vars)
            }
            "children" => {
                arity(name, args, 0, 0)?;
                self.children(&input)
            }
            "descendants" => {
                arity(name, args, 0, 0)?;
                self.descendants(&input)
            }
            "now" => {
                arity(name, args, 0, 0)?;
                Ok(vec![Item::DateTime(self.now())])
            }
            "today" => {
                arity(name, args, 0, 0)?;
                Ok(vec![Item::Date(self.now().date())])
            }
            "timeOfDay" => {
                arity(name, args, 0, 0)?;
                let now = self.now();
                Ok(vec![Item::Time(TimeValue {
                    hour: now.hour.unwrap_or(0),
                    minute: now.minute,
                    second: now.second,
                    millisecond: now.millisecond,
                })])
            }
            "extension" | "hasValue" | "getValue" | "resolve" | "conformsTo" | "htmlChecks"
            | "memberOf" | "subsumes" | "subsumedBy" => self.fhir(name, input, args, focus, vars),
            other => Err(error(format!("function {other}() is not supported"))),
        }
    }

    fn existence(
        &self,
        name: &str,
        input: Collection<'a>,
        args: &[Expr],
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        Ok(match name {
            "empty" => {
                arity(name, args, 0, 0)?;
                bool_item(input.is_empty())
            }
            "exists" => {
                arity(name, args, 0, 1)?;
                match args.first() {
                    Some(criteria) => {
                        let mut found = false;
                        self.each(&input, criteria, vars, |_, result| {
                            found = self.truth(&result)? == Some(true);
                            Ok(!found)
                        })?;
                        bool_item(found)
                    }
                    None => bool_item(!input.is_empty()),
                }
            }
            "all" => {
                arity(name, args, 1, 1)?;
                let mut all = true;
                self.each(&input, &args[0], vars, |_, result| {
                    all = self.truth(&result)? == Some(true);
                    Ok(all)
                })?;
                bool_item(all)
            }
            "allTrue" | "anyTrue" | "allFalse" | "anyFalse" => {
                arity(name, args, 0, 0)?;
                let values = input
                    .iter()
                    .map(|item| {
                        boolean_of(item)
                            .ok_or_else(|| error(format!("{name}() applies to booleans")))
                    })
                    .collect::<Result<Vec<bool>>>()?;
                bool_item(match name {
                    "allTrue" => values.iter().all(|v| *v),
                    "anyTrue" => values.iter().any(|v| *v),
                    "allFalse" => values.iter().all(|v| !*v),
                    _ => values.iter().any(|v| !*v),
                })
            }
            "subsetOf" | "supersetOf" => {
                arity(name, args, 1, 1)?;
                let other = self.argument(&args[0], focus, vars)?;
                let (part, whole) = if name == "subsetOf" {
                    (&input, &other)
                } else {
                    (&other, &input)
                };
                let keys = whole
                    .iter()
                    .map(|item| self.key(item))
                    .collect::<Result<HashSet<String>>>()?;
                let mut contained = true;
                for item in part {
                    if !keys.contains(&self.key(item)?) {
                        contained = false;
                        break;
                    }
                }
                bool_item(contained)
            }
            "count" => {
                arity(name, args, 0, 0)?;
                vec![Item::Integer(
                    i64::try_from(input.len()).unwrap_or(i64::MAX),
                )]
            }
            "distinct" => {
                arity(name, args, 0, 0)?;
                self.distinct(input)?
            }
            "isDistinct" => {
                arity(name, args, 0, 0)?;
                let count = input.len();
                bool_item(self.distinct(input)?.len() == count)
            }
            _ => {
                arity(name, args, 0, 0)?;
                self.truth(&input)?
                    .map(|value| Item::Bool(!value))
                    .into_iter()
                    .collect()
            }
        })
    }

    fn filtering(
        &self,
        name: &str,
        input: Collection<'a>,
        args: &[Expr],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        Ok(match name {
            "where" => {
                arity(name, args, 1, 1)?;
                self.filter(&input, &args[0], vars)?
            }
            "select" => {
                arity(name, args, 1, 1)?;
                let mut out = Vec::new();
                self.each(&input, &args[0], vars, |_, result| {
                    self.check_size(out.len() + result.len())?;
                    out.extend(result);
                    Ok(true)
                })?;
                out
            }
            "repeat" => {
                arity(name, args, 1, 1)?;
                let mut out = Vec::new();
                let mut seen = HashSet::new();
                let mut queue: VecDeque<Item<'a>> = input.into();
                while let Some(item) = queue.pop_front() {
                    self.spend(1)?;
                    for found in self.eval(&args[0], std::slice::from_ref(&item), vars)? {
                        if seen.insert(self.key(&found)?) {
                            out.push(found.clone());
                            queue.push_back(found);
                            self.check_size(out.len() + queue.len())?;
                        }
                    }
                }
                out
            }
            "ofType" => {
                let spec = self.type_spec(&type_argument(name, args)?)?;
                input
                    .into_iter()
                    .filter(|item| self.is_type(item, &spec, true))
                    .collect()
            }
            "as" => {
                let spec = self.type_spec(&type_argument(name, args)?)?;
                if input.len() > 1 && !self.compatible() {
                    return Err(error(
                        "as() needs a single item (ofType() filters collections)",
                    ));
                }
                input
                    .into_iter()
                    .filter(|item| self.is_type(item, &spec, true))
                    .collect()
            }
            "is" => {
                let spec = self.type_spec(&type_argument(name, args)?)?;
                match single(&input) {
                    Ok(Some(item)) => bool_item(self.is_type(item, &spec, false)),
                    Ok(None) => Vec::new(),
                    Err(_) if self.compatible() => Vec::new(),
                    Err(err) => return Err(err),
                }
            }
            "type" => {
                arity(name, args, 0, 0)?;
                input
                    .iter()
                    .map(|item| {
                        let (namespace, type_name) = item.type_info();
                        Item::TypeInfo {
                            namespace: namespace.to_string(),
                            name: reported_name(&type_name).to_string(),
                        }
                    })
                    .collect()
            }
            "aggregate" => {
                arity(name, args, 1, 2)?;
                let mut total = match args.get(1) {
                    Some(init) => self.eval(init, &input, vars)?,
                    None => Vec::new(),
                };
                for (index, item) in input.iter().enumerate() {
                    self.spend(1)?;
                    total = self.eval(
                        &args[0],
                        std::slice::from_ref(item),
                        Vars {
                            index: Some(index),
                            total: Some(&total),
                        },
                    )?;
                }
                total
            }
            "sort" => self.sort(input, args, vars)?,
            "iif" => {
                if input.len() > 1 {
                    return Err(error("iif() applies to at most one item"));
                }
                self.conditional(&input, args, vars)?
            }
            _ => {
                arity(name, args, 1, 2)?;
                let label = match args.first() {
                    Some(Expr::String(label)) => label.clone(),
                    _ => String::new(),
                };
                let shown = match args.get(1) {
                    Some(projection) => {
                        let mut shown = Vec::new();
                        self.each(&input, projection, vars, |_, result| {
                            shown.extend(result);
                            Ok(true)
                        })?;
                        shown
                    }
                    None => input.clone(),
                };
                tracing::debug!(target: "fhirpath", label, items = shown.len(), "trace: {:?}", shown.iter().take(10).map(Item::to_text).collect::<Vec<_>>());
                input
            }
        })
    }

    /// `iif(criterion, true-result [, otherwise-result])`, only the chosen branch evaluated.
    fn conditional(
        &self,
        input: &[Item<'a>],
        args: &[Expr],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        arity("iif", args, 2, 3)?;
        let criterion = self.eval(&args[0], input, vars)?;
        let chosen = match single(&criterion)?.map(boolean_of) {
            None => false,
            Some(Some(value)) => value,
            Some(None) => return Err(error("the criterion of iif() must be a boolean")),
        };
        match (chosen, args.get(2)) {
            (true, _) => self.eval(&args[1], input, vars),
            (false, Some(otherwise)) => self.eval(otherwise, input, vars),
            (false, None) => Ok(Vec::new()),
        }
    }

    /// `sort()` by natural order, or by keys (`-key` for descending order).
    fn sort(
        &self,
        input: Collection<'a>,
        args: &[Expr],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        let keys: Vec<(&Expr, bool)> = args
            .iter()
            .map(|arg| match arg {
                Expr::Polarity(inner, true) => (inner.as_ref(), true),
                other => (other, false),
            })
            .collect();
        let mut rows = Vec::with_capacity(input.len());
        for (index, item) in input.into_iter().enumerate() {
            self.spend(1)?;
            let mut values = Vec::with_capacity(keys.len().max(1));
            if keys.is_empty() {
                values.push(Some(item.clone()));
            }
            for (expr, _) in &keys {
                let result = self.eval(
                    expr,
                    std::slice::from_ref(&item),
                    Vars {
                        index: Some(index),
                        total: vars.total,
                    },
                )?;
                values.push(single(&result)?.cloned());
            }
            rows.push((values, item));
        }
        let mut failure = None;
        // Keys of mixed types, or dates of different precisions, have no total order, on which
        // the standard sort may panic: a merge sort only ever gives some order.
        let sorted = merge_sort_by(rows, &mut |(a, _), (b, _)| {
            for (position, (x, y)) in a.iter().zip(b).enumerate() {
                let descending = keys
                    .get(position)
                    .is_some_and(|(_, descending)| *descending);
                let order = match (x, y) {
                    (None, None) => std::cmp::Ordering::Equal,
                    // Items without a key go last (first when descending).
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (Some(x), Some(y)) => match ops::compare(x, y) {
                        Ok(order) => order.unwrap_or(std::cmp::Ordering::Equal),
                        Err(err) => {
                            failure.get_or_insert(err);
                            std::cmp::Ordering::Equal
                        }
                    },
                };
                let order = if descending { order.reverse() } else { order };
                if order.is_ne() {
                    return order;
                }
            }
            std::cmp::Ordering::Equal
        });
        match failure {
            Some(err) => Err(err),
            None => Ok(sorted.into_iter().map(|(_, item)| item).collect()),
        }
    }

    fn subsetting(
        &self,
        name: &str,
        input: Collection<'a>,
        args: &[Expr],
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        let count = |engine: &Self| -> Result<Option<usize>> {
            arity(name, args, 1, 1)?;
            Ok(engine
                .integer_argument(&args[0], focus, vars)?
                .map(|n| usize::try_from(n.max(0)).unwrap_or(0)))
        };
        Ok(match name {
            "single" => {
                arity(name, args, 0, 0)?;
                single(&input)?.cloned().into_iter().collect()
            }
            "first" => {
                arity(name, args, 0, 0)?;
                input.into_iter().take(1).collect()
            }
            "last" => {
                arity(name, args, 0, 0)?;
                input.last().cloned().into_iter().collect()
            }
            "tail" => {
                arity(name, args, 0, 0)?;
                input.into_iter().skip(1).collect()
            }
            "skip" => match count(self)? {
                Some(n) => input.into_iter().skip(n).collect(),
                None => Vec::new(),
            },
            "take" => match count(self)? {
                Some(n) => input.into_iter().take(n).collect(),
                None => Vec::new(),
            },
            _ => {
                arity(name, args, 1, 1)?;
                let other = self.argument(&args[0], focus, vars)?;
                match name {
                    "union" => {
                        let mut all = input;
                        self.check_size(all.len() + other.len())?;
                        all.extend(other);
                        self.distinct(all)?
                    }
                    "combine" => {
                        let mut all = input;
                        self.check_size(all.len() + other.len())?;
                        all.extend(other);
                        all
                    }
                    _ => {
                        let keys = other
                            .iter()
                            .map(|item| self.key(item))
                            .collect::<Result<HashSet<String>>>()?;
                        if name == "intersect" {
                            let mut seen = HashSet::new();
                            let mut kept = Vec::new();
                            for item in input {
                                let key = self.key(&item)?;
                                if keys.contains(&key) && seen.insert(key) {
                                    kept.push(item);
                                }
                            }
                            kept
                        } else {
                            let mut kept = Vec::new();
                            for item in input {
                                if !keys.contains(&self.key(&item)?) {
                                    kept.push(item);
                                }
                            }
                            kept
                        }
                    }
                }
            }
        })
    }

    fn conversion(
        &self,
        name: &str,
        input: Collection<'a>,
        args: &[Expr],
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        let target_unit = if name.ends_with("Quantity") {
            arity(name, args, 0, 1)?;
            match args.first() {
                Some(arg) => match self.string_argument(arg, focus, vars)? {
                    Some(unit) => Some(unit),
                    None => return Ok(Vec::new()),
                },
                None => None,
            }
        } else {
            arity(name, args, 0, 0)?;
            None
        };
        let Some(item) = single_value(&input)? else {
            return Ok(Vec::new());
        };
        let complex = matches!(item, Item::Node { type_code, .. } if !is_primitive(type_code))
            && !name.ends_with("Quantity");
        let value = if complex { None } else { ops::prim(item) };
        let converted: Option<Item<'a>> = value.and_then(|value| {
            match name
                .trim_start_matches("convertsTo")
                .trim_start_matches("to")
            {
                "Boolean" => to_boolean(&value).map(Item::Bool),
                "Integer" => to_integer(&value).map(Item::Integer),
                "Decimal" => to_decimal(&value).map(Item::Decimal),
                "String" => ops::to_text(item).map(Item::String),
                "Date" => to_date(&value).map(Item::Date),
                "DateTime" => to_date_time(&value).map(Item::DateTime),
                "Time" => to_time(&value).map(Item::Time),
                _ => {
                    let quantity = to_quantity(&value)?;
                    match &target_unit {
                        Some(unit) => quantity.convert(unit).map(Item::Quantity),
                        None => Some(Item::Quantity(quantity)),
                    }
                }
            }
        });
        Ok(if name.starts_with("convertsTo") {
            bool_item(converted.is_some())
        } else {
            converted.into_iter().collect()
        })
    }

    fn strings(
        &self,
        name: &str,
        input: Collection<'a>,
        args: &[Expr],
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        if name == "join" {
            arity(name, args, 0, 1)?;
            let separator = match args.first() {
                Some(arg) => self.string_argument(arg, focus, vars)?.unwrap_or_default(),
                None => String::new(),
            };
            let parts = input
                .iter()
                .map(|item| match ops::prim(item) {
                    Some(Prim::String(text)) => Ok(text.into_owned()),
                    _ => Err(error("join() applies to strings")),
                })
                .collect::<Result<Vec<String>>>()?;
            if input.is_empty() {
                return Ok(Vec::new());
            }
            return Ok(vec![self.string(parts.join(&separator))?]);
        }
        let (min, max) = match name {
            "upper" | "lower" | "length" | "toChars" | "trim" => (0, 0),
            "substring" => (1, 2),
            "replace" | "replaceMatches" => (2, 2),
            _ => (1, 1),
        };
        arity(name, args, min, max)?;
        let Some(text) = Self::input_string(name, &input)? else {
            return Ok(Vec::new());
        };
        let mut strings = Vec::with_capacity(args.len());
        if name != "substring" {
            for arg in args {
                match self.string_argument(arg, focus, vars)? {
                    Some(value) => strings.push(value),
                    None => return Ok(Vec::new()),
                }
            }
        }
        let first = strings.first().map(String::as_str).unwrap_or_default();
        let char_index =
            |byte: usize| i64::try_from(text[..byte].chars().count()).unwrap_or(i64::MAX);
        Ok(match name {
            "indexOf" => vec![Item::Integer(text.find(first).map_or(-1, char_index))],
            "lastIndexOf" => vec![Item::Integer(text.rfind(first).map_or(-1, char_index))],
            "substring" => {
                let Some(start) = self.integer_argument(&args[0], focus, vars)? else {
                    return Ok(Vec::new());
                };
                let length = match args.get(1) {
                    Some(arg) => self.integer_argument(arg, focus, vars)?,
                    None => None,
                };
                let chars: Vec<char> = text.chars().collect();
                let Some(start) = usize::try_from(start).ok().filter(|s| *s < chars.len()) else {
                    return Ok(Vec::new());
                };
                let end = match length {
                    Some(length) => start
                        .saturating_add(usize::try_from(length.max(0)).unwrap_or(0))
                        .min(chars.len()),
                    None => chars.len(),
                };
                vec![Item::String(chars[start..end].iter().collect())]
            }
            "startsWith" => bool_item(text.starts_with(first)),
            "endsWith" => bool_item(text.ends_with(first)),
            "contains" => bool_item(text.contains(first)),
            "upper" => vec![self.string(text.to_uppercase())?],
            "lower" => vec![self.string(text.to_lowercase())?],
            "length" => vec![Item::Integer(
                i64::try_from(text.chars().count()).unwrap_or(i64::MAX),
            )],
            "toChars" => {
                self.check_size(text.len())?;
                text.chars().map(|c| Item::String(c.to_string())).collect()
            }
            "trim" => vec![Item::String(text.trim().to_string())],
            "split" => {
                let parts: Vec<&str> = if first.is_empty() {
                    vec![text.as_str()]
                } else {
                    text.split(first).collect()
                };
                self.check_size(parts.len())?;
                parts
                    .into_iter()
                    .map(|part| Item::String(part.to_string()))
                    .collect()
            }
            "replace" => {
                let replacement = strings.get(1).map(String::as_str).unwrap_or_default();
                let occurrences = if first.is_empty() {
                    text.chars().count() + 1
                } else {
                    text.matches(first).count()
                };
                if text
                    .len()
                    .saturating_add(occurrences.saturating_mul(replacement.len()))
                    > MAX_STRING
                {
                    return Err(error("string exceeds its size limit"));
                }
                vec![self.string(text.replace(first, replacement))?]
            }
            "matches" | "matchesFull" => {
                self.spend(text.len() / 64)?;
                bool_item(regex(first, name == "matchesFull")?.is_match(&text))
            }
            "replaceMatches" => {
                if first.is_empty() {
                    return Ok(vec![Item::String(text)]);
                }
                let replacement = strings.get(1).map(String::as_str).unwrap_or_default();
                let pattern = regex(first, false)?;
                self.spend(text.len() / 32)?;
                let occurrences = pattern.find_iter(&text).take(MAX_STRING).count();
                if text
                    .len()
                    .saturating_add(occurrences.saturating_mul(replacement.len().saturating_mul(2)))
                    > MAX_STRING
                {
                    return Err(error("string exceeds its size limit"));
                }
                vec![self.string(pattern.replace_all(&text, replacement).into_owned())?]
            }
            "encode" | "decode" | "escape" | "unescape" => {
                let result = match name {
                    "encode" => text::encode(&text, first),
                    "decode" => text::decode(&text, first),
                    "escape" => text::escape(&text, first),
                    _ => text::unescape(&text, first),
                };
                match result {
                    Some(result) => vec![self.string(result)?],
                    None => return Err(error(format!("{name}() cannot handle '{first}'"))),
                }
            }
            other => return Err(error(format!("function {other}() is not supported"))),
        })
    }

    fn math(
        &self,
        name: &str,
        input: Collection<'a>,
        args: &[Expr],
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        let (min, max) = match name {
            "log" | "power" => (1, 1),
            "round" => (0, 1),
            _ => (0, 0),
        };
        arity(name, args, min, max)?;
        let Some(item) = single_value(&input)? else {
            return Ok(Vec::new());
        };
        let value = ops::prim(item);
        if let (Some(Prim::Quantity(quantity)), "abs") = (&value, name) {
            return Ok(vec![Item::Quantity(Quantity::new(
                quantity.value.abs(),
                quantity.unit.clone(),
            ))]);
        }
        let integer = match value {
            Some(Prim::Integer(value)) => Some(value),
            _ => None,
        };
        let number =
            number_of(item).ok_or_else(|| error(format!("{name}() applies to numbers")))?;
        let (argument, integer_argument) = match args.first() {
            Some(arg) => {
                let values = self.argument(arg, focus, vars)?;
                match single(&values)? {
                    Some(value) => {
                        let whole = match ops::prim(value) {
                            Some(Prim::Integer(value)) => Some(value),
                            _ => None,
                        };
                        (
                            Some(
                                number_of(value)
                                    .ok_or_else(|| error(format!("{name}() takes a number")))?,
                            ),
                            whole,
                        )
                    }
                    None => return Ok(Vec::new()),
                }
            }
            None => (None, None),
        };
        let float = |value: f64| Decimal::from_f64(value).map(Item::Decimal);
        let overflow = || error("arithmetic overflow");
        Ok(match name {
            "abs" => Some(match integer {
                Some(value) => Item::Integer(value.checked_abs().ok_or_else(overflow)?),
                None => Item::Decimal(number.abs()),
            }),
            "ceiling" => Some(Item::Integer(number.ceiling().ok_or_else(overflow)?)),
            "floor" => Some(Item::Integer(number.floor().ok_or_else(overflow)?)),
            "truncate" => Some(Item::Integer(number.trunc().ok_or_else(overflow)?)),
            "exp" => float(number.to_f64().exp()),
            "ln" => float(number.to_f64().ln()),
            "sqrt" => float(number.to_f64().sqrt()),
            "log" => argument.and_then(|base| float(number.to_f64().log(base.to_f64()))),
            "power" => match (integer, integer_argument) {
                (Some(base), Some(exponent)) if exponent >= 0 => u32::try_from(exponent)
                    .ok()
                    .and_then(|e| base.checked_pow(e))
                    .map(Item::Integer),
                _ => argument.and_then(|exponent| float(number.to_f64().powf(exponent.to_f64()))),
            },
            _ => {
                let digits = match argument {
                    Some(digits) => digits
                        .to_i64()
                        .and_then(|d| u32::try_from(d).ok())
                        .filter(|d| *d <= MAX_SCALE)
                        .ok_or_else(|| error("round() takes a precision of 0 to 28"))?,
                    None => 0,
                };
                number.round(digits).map(Item::Decimal)
            }
        }
        .into_iter()
        .collect())
    }

    fn precision(
        &self,
        name: &str,
        input: Collection<'a>,
        args: &[Expr],
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        if name == "comparable" {
            arity(name, args, 1, 1)?;
            let other = self.argument(&args[0], focus, vars)?;
            let (Some(a), Some(b)) = (single(&input)?, single(&other)?) else {
                return Ok(Vec::new());
            };
            return Ok(match (ops::prim(a), ops::prim(b)) {
                (Some(Prim::Quantity(a)), Some(Prim::Quantity(b))) => bool_item(a.comparable(&b)),
                _ => return Err(error("comparable() applies to quantities")),
            });
        }
        let Some(item) = single_value(&input)? else {
            return Ok(Vec::new());
        };
        let value = ops::prim(item)
            .ok_or_else(|| error(format!("{name}() applies to primitive values")))?;
        if name == "precision" {
            arity(name, args, 0, 0)?;
            let digits = match &value {
                Prim::Decimal(value) => value.scale(),
                Prim::Integer(_) => 0,
                Prim::Date(value) | Prim::DateTime(value) => value.precision(),
                Prim::Time(value) => value.precision(),
                _ => return Err(error("precision() applies to numbers, dates and times")),
            };
            return Ok(vec![Item::Integer(i64::from(digits))]);
        }
        arity(name, args, 0, 1)?;
        let precision = match args.first() {
            Some(arg) => match self.integer_argument(arg, focus, vars)? {
                Some(precision) => Some(precision),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let high = name == "highBoundary";
        let digits = |default: u32| precision.map_or(Some(default), |p| u32::try_from(p).ok());
        let decimal = |number: Decimal| {
            digits(8)
                .filter(|d| *d <= MAX_SCALE)
                .and_then(|d| decimal_boundary(number, d, high))
        };
        Ok(match value {
            Prim::Integer(number) => decimal(Decimal::from_i64(number)).map(Item::Decimal),
            Prim::Decimal(number) => decimal(number).map(Item::Decimal),
            Prim::Quantity(quantity) => decimal(quantity.value)
                .map(|value| Item::Quantity(Quantity::new(value, quantity.unit))),
            Prim::Date(date) => digits(8)
                .and_then(|d| date.boundary(d, high, true))
                .map(Item::Date),
            Prim::DateTime(moment) => digits(17)
                .and_then(|d| moment.boundary(d, high, false))
                .map(Item::DateTime),
            Prim::Time(time) => digits(9)
                .and_then(|d| time.boundary(d, high))
                .map(Item::Time),
            _ => {
                return Err(error(format!(
                    "{name}() applies to numbers, quantities, dates and times"
                )));
            }
        }
        .into_iter()
        .collect())
    }

    fn fhir(
        &self,
        name: &str,
        input: Collection<'a>,
        args: &[Expr],
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        Ok(match name {
            "extension" => {
                arity(name, args, 1, 1)?;
                let Some(url) = self.string_argument(&args[0], focus, vars)? else {
                    return Ok(Vec::new());
                };
                self.members(&input, "extension")?
                    .into_iter()
                    .filter(|item| matches!(item, Item::Node { value, .. } if value.get("url").and_then(Value::as_str) == Some(url.as_str())))
                    .collect()
            }
            "hasValue" => {
                arity(name, args, 0, 0)?;
                bool_item(match input.as_slice() {
                    [Item::Node { type_code, .. }] => is_primitive(type_code),
                    [Item::Valueless { .. } | Item::Resolved(_) | Item::TypeInfo { .. }] => false,
                    [_] => true,
                    _ => false,
                })
            }
            "getValue" => {
                arity(name, args, 0, 0)?;
                match input.as_slice() {
                    [item @ Item::Node { type_code, .. }] if is_primitive(type_code) => {
                        ops::prim(item).map(ops::item_of).into_iter().collect()
                    }
                    _ => Vec::new(),
                }
            }
            "resolve" => {
                arity(name, args, 0, 0)?;
                input.iter().filter_map(|item| self.resolve(item)).collect()
            }
            "conformsTo" => {
                arity(name, args, 1, 1)?;
                let Some(url) = self.string_argument(&args[0], focus, vars)? else {
                    return Ok(Vec::new());
                };
                let type_name = url
                    .strip_prefix("http://hl7.org/fhir/StructureDefinition/")
                    .filter(|name| TypeSpec { namespace: Some(Namespace::Fhir), name: (*name).to_string() }.is_known())
                    .ok_or_else(|| error(format!("cannot check conformance to {url}: only the base R4 definitions are known")))?;
                match single(&input)? {
                    Some(item) => bool_item(self.is_type(
                        item,
                        &TypeSpec {
                            namespace: Some(Namespace::Fhir),
                            name: type_name.to_string(),
                        },
                        false,
                    )),
                    None => Vec::new(),
                }
            }
            "htmlChecks" => {
                arity(name, args, 0, 0)?;
                bool_item(true)
            }
            other => {
                return Err(error(format!(
                    "{other}() needs a terminology server, which this evaluator does not have"
                )));
            }
        })
    }

    /// The resource a reference points to: a contained resource (`#id`) or a Bundle entry
    /// (by `fullUrl` or `Type/id`); otherwise only its type, when the reference names one.
    fn resolve(&self, item: &Item<'a>) -> Option<Item<'a>> {
        let Item::Node { value, .. } = item else {
            return None;
        };
        let reference = match value {
            Value::String(text) => text.as_str(),
            Value::Object(map) => map.get("reference").and_then(Value::as_str)?,
            _ => return None,
        };
        if !self.compatible()
            && let Some(root) = self.resource
        {
            let as_node = |resource: &'a Value| Item::Node {
                value: resource,
                type_code: node_type(resource, "Resource").to_string(),
            };
            if let Some(id) = reference.strip_prefix('#') {
                if id.is_empty() {
                    return Some(as_node(root));
                }
                let contained = root
                    .get("contained")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten();
                if let Some(found) = contained
                    .into_iter()
                    .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
                {
                    return Some(as_node(found));
                }
            }
            let entries = root
                .get("entry")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            for entry in entries {
                let Some(resource) = entry.get("resource") else {
                    continue;
                };
                let full_url = entry.get("fullUrl").and_then(Value::as_str);
                let local = match (
                    resource.get("resourceType").and_then(Value::as_str),
                    resource.get("id").and_then(Value::as_str),
                ) {
                    (Some(type_name), Some(id)) => Some(format!("{type_name}/{id}")),
                    _ => None,
                };
                let matches_local = local.as_deref().is_some_and(|local| {
                    reference == local || reference.ends_with(&format!("/{local}"))
                });
                if full_url == Some(reference) || matches_local {
                    return Some(as_node(resource));
                }
            }
        }
        reference_type(reference).map(|type_name| Item::Resolved(type_name.to_string()))
    }
}

/// A stable merge sort that accepts any comparison: where it is not a total order the result is
/// some order of the items, never a panic (unlike the standard sorts).
fn merge_sort_by<T>(
    mut items: Vec<T>,
    compare: &mut impl FnMut(&T, &T) -> std::cmp::Ordering,
) -> Vec<T> {
    if items.len() <= 1 {
        return items;
    }
    let right = items.split_off(items.len() / 2);
    let left = merge_sort_by(items, compare);
    let right = merge_sort_by(right, compare);
    let mut merged = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    while let (Some(l), Some(r)) = (left.peek(), right.peek()) {
        // equal keys keep the left (earlier) item first
        let next = if compare(r, l).is_lt() {
            right.next()
        } else {
            left.next()
        };
        merged.extend(next);
    }
    merged.extend(left);
    merged.extend(right);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sort_is_stable_and_survives_any_comparison() {
        let pairs = vec![(3, 'a'), (1, 'b'), (3, 'c'), (2, 'd'), (1, 'e')];
        let sorted = merge_sort_by(pairs, &mut |x, y| x.0.cmp(&y.0));
        assert_eq!(sorted, [(1, 'b'), (1, 'e'), (2, 'd'), (3, 'a'), (3, 'c')]);
        // no total order at all: some order of the same items, no panic
        let mut flip = false;
        let items: Vec<u32> = (0..500).collect();
        let mut shuffled = merge_sort_by(items, &mut |_, _| {
            flip = !flip;
            if flip {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        shuffled.sort_unstable();
        assert_eq!(shuffled, (0..500).collect::<Vec<u32>>());
    }

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap_or(Decimal::ZERO)
    }

    #[test]
    fn decimal_boundaries_follow_the_written_precision() {
        let low = |value: &str, digits: u32| {
            decimal_boundary(d(value), digits, false).map(|v| v.to_string())
        };
        let high = |value: &str, digits: u32| {
            decimal_boundary(d(value), digits, true).map(|v| v.to_string())
        };
        assert_eq!(low("1.587", 8).as_deref(), Some("1.58650000"));
        assert_eq!(low("1.587", 2).as_deref(), Some("1.58"));
        assert_eq!(low("-1.587", 2).as_deref(), Some("-1.59"));
        assert_eq!(low("-1.587", 0).as_deref(), Some("-2"));
        assert_eq!(high("1.587", 2).as_deref(), Some("1.59"));
        assert_eq!(high("-1.587", 2).as_deref(), Some("-1.58"));
        assert_eq!(low("120", 2).as_deref(), Some("119.50"));
        assert_eq!(high("12.500", 4).as_deref(), Some("12.5005"));
        assert_eq!(low("0.0034", 1).as_deref(), Some("0.0"));
        assert_eq!(high("0.0034", 1).as_deref(), Some("0.0"));
    }
}
