//! The evaluator: navigation over the resource, operators, variables and the work limits that
//! keep client expressions and data from exhausting time or memory.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use super::ops::{self, Prim};
use super::parse::{BinaryOp, Expr};
use super::temporal::DateTimeValue;
use super::types::{Namespace, TypeSpec, fhir_is_a};
use super::{FhirPathError, Item, Options};
use crate::fhir::structure::{element_keys_ref, is_primitive, member_type};

pub(super) type Collection<'a> = Vec<Item<'a>>;
pub(super) type Result<T> = std::result::Result<T, FhirPathError>;

/// Units of work one evaluation may spend (items produced, strings built, iterations).
const MAX_WORK: usize = 2_000_000;
/// The most items one collection may hold.
const MAX_ITEMS: usize = 100_000;
/// The deepest nesting of evaluations (arguments within arguments, operands within operands):
/// enough for any real expression, and within a 2 MiB thread stack even in debug builds.
const MAX_NESTING: usize = 40;
/// The longest string an evaluation may build, in bytes.
pub(super) const MAX_STRING: usize = 1 << 20;

pub(super) fn error(message: impl Into<String>) -> FhirPathError {
    FhirPathError(message.into())
}

/// The resource's type, `Resource` when it has none.
pub(super) fn resource_type(resource: &Value) -> String {
    resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource")
        .to_string()
}

pub(super) fn root_item(resource: &Value) -> Item<'_> {
    Item::Node {
        value: resource,
        type_code: resource_type(resource),
    }
}

/// The actual type of a node: a contained or entry resource (typed `Resource`) by its
/// `resourceType`.
pub(super) fn node_type<'v>(value: &'v Value, type_code: &'v str) -> &'v str {
    if type_code == "Resource" || type_code == "DomainResource" {
        value
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or(type_code)
    } else {
        type_code
    }
}

/// `$index` and `$total` inside iterating functions.
#[derive(Clone, Copy, Default)]
pub(super) struct Vars<'v, 'a> {
    pub index: Option<usize>,
    pub total: Option<&'v [Item<'a>]>,
}

pub(super) struct Engine<'a> {
    pub(super) options: Options,
    pub(super) resource: Option<&'a Value>,
    context: Collection<'a>,
    work: Cell<usize>,
    /// How deeply evaluations are nested right now.
    depth: Cell<usize>,
    /// The `_name` part of primitive elements met so far, by the address of their value.
    extensions: RefCell<HashMap<usize, &'a Value>>,
    now: OnceCell<DateTimeValue>,
}

fn address(value: &Value) -> usize {
    std::ptr::from_ref(value) as usize
}

impl<'a> Engine<'a> {
    pub(super) fn new(
        resource: Option<&'a Value>,
        context: Collection<'a>,
        options: Options,
    ) -> Engine<'a> {
        Engine {
            options,
            resource,
            context,
            work: Cell::new(0),
            depth: Cell::new(0),
            extensions: RefCell::new(HashMap::new()),
            now: OnceCell::new(),
        }
    }

    pub(super) fn run(&self, expr: &Expr, focus: &[Item<'a>]) -> Result<Collection<'a>> {
        self.eval(expr, focus, Vars::default())
    }

    pub(super) fn compatible(&self) -> bool {
        self.options.search_compatible
    }

    /// Counts `units` of work, failing once the evaluation has done too much.
    pub(super) fn spend(&self, units: usize) -> Result<()> {
        let total = self.work.get().saturating_add(units);
        self.work.set(total);
        if total > MAX_WORK {
            Err(error("evaluation exceeds its work limit"))
        } else {
            Ok(())
        }
    }

    /// Checks the size of a collection about to be built.
    pub(super) fn check_size(&self, items: usize) -> Result<()> {
        if items > MAX_ITEMS {
            Err(error("collection exceeds its size limit"))
        } else {
            self.spend(items)
        }
    }

    pub(super) fn string(&self, text: String) -> Result<Item<'a>> {
        if text.len() > MAX_STRING {
            return Err(error("string exceeds its size limit"));
        }
        self.spend(text.len() / 64 + 1)?;
        Ok(Item::String(text))
    }

    /// The moment `now()`, `today()` and `timeOfDay()` refer to, fixed for one evaluation.
    pub(super) fn now(&self) -> DateTimeValue {
        *self.now.get_or_init(DateTimeValue::now)
    }

    /// Evaluates `expr` with `focus` as its input. Chains (`a.b.where(c).d`, `x | y | z`,
    /// `1 + 2 + 3`, `p and q and r`) are evaluated in a loop, so only real nesting (arguments,
    /// parenthesized operands) deepens the stack, and that is bounded.
    pub(super) fn eval(
        &self,
        expr: &Expr,
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        let depth = self.depth.get();
        if depth >= MAX_NESTING {
            return Err(error("expression nested too deeply to evaluate"));
        }
        self.depth.set(depth + 1);
        let result = self.eval_node(expr, focus, vars);
        self.depth.set(depth);
        let result = result?;
        self.check_size(result.len())?;
        Ok(result)
    }

    fn eval_node(
        &self,
        expr: &Expr,
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        Ok(match expr {
            Expr::This => focus.to_vec(),
            Expr::Variable(name) => match name.as_str() {
                "index" => vars
                    .index
                    .and_then(|i| i64::try_from(i).ok())
                    .map(Item::Integer)
                    .into_iter()
                    .collect(),
                "total" => vars.total.map(<[Item<'a>]>::to_vec).unwrap_or_default(),
                other => return Err(error(format!("unknown variable ${other}"))),
            },
            Expr::Env(name) => self.environment(name)?,
            Expr::String(text) => vec![Item::String(text.clone())],
            Expr::Bool(value) => vec![Item::Bool(*value)],
            Expr::Number(text) => vec![ops::number_literal(text)?],
            Expr::Empty => Vec::new(),
            Expr::Date(value) => vec![Item::Date(*value)],
            Expr::DateTime(value) => vec![Item::DateTime(*value)],
            Expr::Time(value) => vec![Item::Time(*value)],
            Expr::Quantity(value) => vec![Item::Quantity(value.clone())],
            Expr::Identifier(name) => self.identifier(name, focus)?,
            Expr::Call(None, name, args) => {
                self.call(name, focus.to_vec(), args, focus, vars, false)?
            }
            Expr::Member(..) | Expr::Index(..) | Expr::Call(Some(_), ..) => {
                self.path(expr, focus, vars)?
            }
            Expr::Union(..) => self.union(expr, focus, vars)?,
            Expr::Binary(..) => self.binary_chain(expr, focus, vars)?,
            Expr::And(..) | Expr::Or(..) => self.logic_chain(expr, focus, vars)?,
            Expr::Equals(..) | Expr::Is(..) | Expr::As(..) | Expr::Polarity(..) => {
                self.operator(expr, focus, vars)?
            }
        })
    }

    #[inline(never)]
    fn identifier(&self, name: &str, focus: &[Item<'a>]) -> Result<Collection<'a>> {
        // A type name at the start of a path selects the focus (`Patient.name` on a Patient).
        let selects = |item: &Item<'a>| {
            name.starts_with(|c: char| c.is_ascii_uppercase()) && self.is_named_type(item, name)
        };
        if focus.iter().any(selects) {
            Ok(focus.iter().filter(|item| selects(item)).cloned().collect())
        } else {
            self.members(focus, name)
        }
    }

    /// A chain of member accesses, indexers and function calls, from its start.
    #[inline(never)]
    fn path(&self, expr: &Expr, focus: &[Item<'a>], vars: Vars<'_, 'a>) -> Result<Collection<'a>> {
        let mut steps = Vec::new();
        let mut start = expr;
        while let Expr::Member(base, _) | Expr::Index(base, _) | Expr::Call(Some(base), ..) = start
        {
            steps.push(start);
            start = base;
        }
        let mut items = self.eval(start, focus, vars)?;
        for step in steps.into_iter().rev() {
            items = match step {
                Expr::Member(_, name) => self.members(&items, name)?,
                Expr::Index(_, index) => {
                    let index = self.eval(index, focus, vars)?;
                    match single(&index)?.map(ops::prim) {
                        None => Vec::new(),
                        Some(Some(Prim::Integer(position))) => usize::try_from(position)
                            .ok()
                            .and_then(|p| items.get(p).cloned())
                            .into_iter()
                            .collect(),
                        Some(_) => return Err(error("an index must be an integer")),
                    }
                }
                Expr::Call(_, name, args) => self.call(name, items, args, focus, vars, true)?,
                _ => return Err(error("unexpected path step")),
            };
            self.check_size(items.len())?;
        }
        Ok(items)
    }

    /// `a | b | c`: every branch, repeated items removed.
    #[inline(never)]
    fn union(&self, expr: &Expr, focus: &[Item<'a>], vars: Vars<'_, 'a>) -> Result<Collection<'a>> {
        let mut branches = Vec::new();
        let mut start = expr;
        while let Expr::Union(left, right) = start {
            branches.push(right.as_ref());
            start = left;
        }
        let mut items = self.eval(start, focus, vars)?;
        for branch in branches.into_iter().rev() {
            let more = self.eval(branch, focus, vars)?;
            self.check_size(items.len() + more.len())?;
            items.extend(more);
        }
        self.distinct(items)
    }

    /// A left-nested chain of operators without variants of their own (`1 + 2 - 3`).
    #[inline(never)]
    fn binary_chain(
        &self,
        expr: &Expr,
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        let mut operations = Vec::new();
        let mut start = expr;
        while let Expr::Binary(left, op, right) = start {
            operations.push((*op, right.as_ref()));
            start = left;
        }
        let mut items = self.eval(start, focus, vars)?;
        for (op, right) in operations.into_iter().rev() {
            let right = self.eval(right, focus, vars)?;
            items = self.binary(items, op, right)?;
        }
        Ok(items)
    }

    /// A left-nested chain of `and`/`or` (three-valued logic; a decided side skips the other).
    #[inline(never)]
    fn logic_chain(
        &self,
        expr: &Expr,
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        let mut operations = Vec::new();
        let mut start = expr;
        loop {
            let (is_and, left, right) = match start {
                Expr::And(left, right) => (true, left, right),
                Expr::Or(left, right) => (false, left, right),
                _ => break,
            };
            operations.push((is_and, right.as_ref()));
            start = left;
        }
        let mut value = self.truth(&self.eval(start, focus, vars)?)?;
        for (is_and, right) in operations.into_iter().rev() {
            // false and x = false; true or x = true, whatever x is.
            if value == Some(!is_and) {
                continue;
            }
            let other = self.truth(&self.eval(right, focus, vars)?)?;
            value = match (is_and, value, other) {
                (true, _, Some(false)) => Some(false),
                (true, Some(true), Some(true)) => Some(true),
                (false, _, Some(true)) => Some(true),
                (false, Some(false), Some(false)) => Some(false),
                _ => None,
            };
        }
        Ok(boolean_result(value))
    }

    #[inline(never)]
    fn operator(
        &self,
        expr: &Expr,
        focus: &[Item<'a>],
        vars: Vars<'_, 'a>,
    ) -> Result<Collection<'a>> {
        Ok(match expr {
            Expr::Equals(left, right, negate) => {
                let (left, right) = (
                    self.eval(left, focus, vars)?,
                    self.eval(right, focus, vars)?,
                );
                boolean_result(ops::equal_collections(&left, &right).map(|equal| equal != *negate))
            }
            Expr::Is(base, type_name) => {
                let spec = self.type_spec(type_name)?;
                let base = self.eval(base, focus, vars)?;
                match base.as_slice() {
                    [] => Vec::new(),
                    [item] => vec![Item::Bool(self.is_type(item, &spec, false))],
                    _ => return Err(error("'is' needs a single item")),
                }
            }
            Expr::As(base, type_name) => {
                let spec = self.type_spec(type_name)?;
                let base = self.eval(base, focus, vars)?;
                if base.len() > 1 && !self.compatible() {
                    return Err(error(
                        "'as' needs a single item (ofType() filters collections)",
                    ));
                }
                base.into_iter()
                    .filter(|item| self.is_type(item, &spec, true))
                    .collect()
            }
            Expr::Polarity(operand, negative) => {
                let operand = self.eval(operand, focus, vars)?;
                match single_value(&operand)? {
                    None => Vec::new(),
                    Some(item) => vec![ops::polarity(item, *negative)?],
                }
            }
            _ => return Err(error("unexpected operator")),
        })
    }

    fn binary(
        &self,
        left: Collection<'a>,
        op: BinaryOp,
        right: Collection<'a>,
    ) -> Result<Collection<'a>> {
        Ok(match op {
            BinaryOp::Xor => match (self.truth(&left)?, self.truth(&right)?) {
                (Some(a), Some(b)) => vec![Item::Bool(a != b)],
                _ => Vec::new(),
            },
            BinaryOp::Implies => match (self.truth(&left)?, self.truth(&right)?) {
                (Some(false), _) | (_, Some(true)) => vec![Item::Bool(true)],
                (Some(true), Some(false)) => vec![Item::Bool(false)],
                _ => Vec::new(),
            },
            BinaryOp::In | BinaryOp::Contains => {
                let (element, collection) = if op == BinaryOp::In {
                    (&left, &right)
                } else {
                    (&right, &left)
                };
                match single(element)? {
                    None => Vec::new(),
                    Some(element) => vec![Item::Bool(
                        collection
                            .iter()
                            .any(|item| ops::equal(element, item) == Some(true)),
                    )],
                }
            }
            BinaryOp::Equivalent => vec![Item::Bool(ops::equivalent_collections(&left, &right))],
            BinaryOp::NotEquivalent => {
                vec![Item::Bool(!ops::equivalent_collections(&left, &right))]
            }
            BinaryOp::Concatenate => {
                let text = |items: &[Item<'a>]| -> Result<String> {
                    match single_value(items)? {
                        None => Ok(String::new()),
                        Some(item) => match ops::prim(item) {
                            Some(Prim::String(text)) => Ok(text.into_owned()),
                            _ => Err(error("'&' needs strings")),
                        },
                    }
                };
                let joined = text(&left)? + &text(&right)?;
                vec![self.string(joined)?]
            }
            BinaryOp::Less
            | BinaryOp::LessOrEqual
            | BinaryOp::Greater
            | BinaryOp::GreaterOrEqual => {
                let (Some(a), Some(b)) = (single_value(&left)?, single_value(&right)?) else {
                    return Ok(Vec::new());
                };
                let Some(order) = ops::compare(a, b)? else {
                    return Ok(Vec::new());
                };
                let result = match op {
                    BinaryOp::Less => order.is_lt(),
                    BinaryOp::LessOrEqual => order.is_le(),
                    BinaryOp::Greater => order.is_gt(),
                    _ => order.is_ge(),
                };
                vec![Item::Bool(result)]
            }
            _ => {
                let (Some(a), Some(b)) = (single_value(&left)?, single_value(&right)?) else {
                    return Ok(Vec::new());
                };
                let result = ops::arithmetic(op, a, b)?;
                if let Some(Item::String(text)) = &result {
                    self.string(text.clone())?;
                }
                result.into_iter().collect()
            }
        })
    }

    fn environment(&self, name: &str) -> Result<Collection<'a>> {
        let text = |value: &str| vec![Item::String(value.to_string())];
        Ok(match name {
            "resource" | "rootResource" => self.resource.map(root_item).into_iter().collect(),
            "context" => self.context.clone(),
            "ucum" => text("http://unitsofmeasure.org"),
            "sct" => text("http://snomed.info/sct"),
            "loinc" => text("http://loinc.org"),
            _ => {
                if let Some(name) = name.strip_prefix("vs-") {
                    text(&format!("http://hl7.org/fhir/ValueSet/{name}"))
                } else if let Some(name) = name.strip_prefix("ext-") {
                    text(&format!("http://hl7.org/fhir/StructureDefinition/{name}"))
                } else {
                    return Err(error(format!("unknown environment variable %{name}")));
                }
            }
        })
    }

    /// The boolean a collection stands for where one is expected: empty is unknown, one
    /// Boolean is itself, any other single item is true, several items are an error.
    pub(super) fn truth(&self, items: &[Item<'_>]) -> Result<Option<bool>> {
        match items {
            [] => Ok(None),
            [item] => Ok(Some(match ops::prim(item) {
                Some(Prim::Bool(value)) => value,
                _ => true,
            })),
            _ if self.compatible() => Ok(Some(true)),
            _ => Err(error("expected a single boolean, found several items")),
        }
    }

    /// A type specifier that must name a known type.
    pub(super) fn type_spec(&self, text: &str) -> Result<TypeSpec> {
        let spec = TypeSpec::parse(text);
        if spec.is_known() || self.compatible() {
            Ok(spec)
        } else {
            Err(error(format!("unknown type {text}")))
        }
    }

    /// Whether a node or resolved reference is of the FHIR type `name` (or derives from it).
    fn is_named_type(&self, item: &Item<'a>, name: &str) -> bool {
        match item {
            Item::Node { value, type_code } => fhir_is_a(node_type(value, type_code), name),
            Item::Resolved(type_name) => fhir_is_a(type_name, name),
            _ => false,
        }
    }

    /// `is` (and, with `exact_primitive`, `as`/`ofType`: a FHIR primitive only matches its own
    /// type, so `code` elements are not `string`s there).
    pub(super) fn is_type(&self, item: &Item<'a>, spec: &TypeSpec, exact_primitive: bool) -> bool {
        let loose = self.compatible();
        match item {
            Item::Node { value, type_code }
            | Item::Valueless {
                extension: value,
                type_code,
            } => {
                if spec.namespace == Some(Namespace::System) {
                    return false;
                }
                let actual = node_type(value, type_code);
                if actual == spec.name || (loose && actual.eq_ignore_ascii_case(&spec.name)) {
                    return true;
                }
                !(exact_primitive && is_primitive(actual)) && fhir_is_a(actual, &spec.name)
            }
            Item::Resolved(type_name) => {
                spec.namespace != Some(Namespace::System) && fhir_is_a(type_name, &spec.name)
            }
            Item::TypeInfo { .. } => false,
            system => {
                if spec.namespace == Some(Namespace::Fhir) {
                    return false;
                }
                let (_, name) = system.type_info();
                name == spec.name
                    || spec.name == "Any"
                    || (loose && name.eq_ignore_ascii_case(&spec.name))
            }
        }
    }

    /// Removes repeated items (by equality), keeping the first of each.
    pub(super) fn distinct(&self, items: Collection<'a>) -> Result<Collection<'a>> {
        let mut seen = std::collections::HashSet::new();
        let mut kept = Vec::with_capacity(items.len());
        for item in items {
            if seen.insert(self.key(&item)?) {
                kept.push(item);
            }
        }
        Ok(kept)
    }

    /// The equality key of an item (equal items share keys).
    pub(super) fn key(&self, item: &Item<'a>) -> Result<String> {
        let key = ops::key(item);
        self.spend(key.len() / 64 + 1)?;
        Ok(key)
    }

    /// The `_name` part (id and extensions) of a primitive element, when it has one.
    pub(super) fn extension_part(&self, item: &Item<'a>) -> Option<&'a Value> {
        match item {
            Item::Node { value, type_code } if is_primitive(type_code) => {
                self.extensions.borrow().get(&address(value)).copied()
            }
            Item::Valueless { extension, .. } => Some(extension),
            _ => None,
        }
    }

    /// The children called `name` of each item (a choice element gives every variant present).
    pub(super) fn members(&self, items: &[Item<'a>], name: &str) -> Result<Collection<'a>> {
        let mut out = Vec::new();
        for item in items {
            match item {
                Item::Node { value, type_code } if !is_primitive(type_code) => {
                    let actual = node_type(value, type_code);
                    for (key, child_type) in element_keys_ref(actual, name) {
                        self.push_children(value, key, child_type, &mut out)?;
                    }
                }
                Item::Node { .. } | Item::Valueless { .. } => {
                    if let Some(part) = self.extension_part(item) {
                        match name {
                            "extension" => {
                                self.push_children(part, "extension", "Extension", &mut out)?
                            }
                            "id" => self.push_children(part, "id", "string", &mut out)?,
                            _ => {}
                        }
                    }
                }
                Item::TypeInfo {
                    namespace,
                    name: type_name,
                } => match name {
                    "namespace" => out.push(Item::String(namespace.clone())),
                    "name" => out.push(Item::String(type_name.clone())),
                    _ => {}
                },
                _ => {}
            }
        }
        Ok(out)
    }

    /// The element `key` of the JSON object `parent`, typed `child_type`, with the `_key` part
    /// of primitives (which may stand alone when the value is missing).
    fn push_children(
        &self,
        parent: &'a Value,
        key: &str,
        child_type: &str,
        out: &mut Collection<'a>,
    ) -> Result<()> {
        let child = parent.get(key);
        let part = if is_primitive(child_type) {
            parent.get(format!("_{key}"))
        } else {
            None
        };
        let node = |value: &'a Value| Item::Node {
            value,
            type_code: child_type.to_string(),
        };
        let valueless = |extension: &'a Value| Item::Valueless {
            extension,
            type_code: child_type.to_string(),
        };
        match child {
            Some(Value::Array(children)) => {
                self.check_size(out.len() + children.len())?;
                for (position, value) in children.iter().enumerate() {
                    let part = part.and_then(|p| p.get(position)).filter(|p| p.is_object());
                    match (value, part) {
                        (Value::Null, Some(part)) => out.push(valueless(part)),
                        (Value::Null, None) => {}
                        (value, part) => {
                            if let Some(part) = part {
                                self.extensions.borrow_mut().insert(address(value), part);
                            }
                            out.push(node(value));
                        }
                    }
                }
            }
            Some(Value::Null) | None => match part {
                Some(Value::Array(parts)) => {
                    out.extend(parts.iter().filter(|p| p.is_object()).map(valueless))
                }
                Some(part @ Value::Object(_)) => out.push(valueless(part)),
                _ => {}
            },
            Some(value) => {
                if let Some(part @ Value::Object(_)) = part {
                    self.extensions.borrow_mut().insert(address(value), part);
                }
                out.push(node(value));
            }
        }
        self.spend(1)
    }

    /// Every child element of each item, in document order.
    pub(super) fn children(&self, items: &[Item<'a>]) -> Result<Collection<'a>> {
        let mut out = Vec::new();
        for item in items {
            match item {
                Item::Node {
                    value: value @ Value::Object(map),
                    type_code,
                } if !is_primitive(type_code) => {
                    let actual = node_type(value, type_code);
                    for key in map.keys() {
                        let name = key.strip_prefix('_').unwrap_or(key);
                        // A `_name` part goes with its value, unless it stands alone.
                        if key.starts_with('_') && map.contains_key(name) {
                            continue;
                        }
                        if let Some(child_type) = member_type(actual, name) {
                            self.push_children(value, name, &child_type, &mut out)?;
                        }
                    }
                }
                Item::Node { .. } | Item::Valueless { .. } => {
                    if let Some(part) = self.extension_part(item) {
                        self.push_children(part, "id", "string", &mut out)?;
                        self.push_children(part, "extension", "Extension", &mut out)?;
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    pub(super) fn descendants(&self, items: &[Item<'a>]) -> Result<Collection<'a>> {
        let mut out = Vec::new();
        let mut queue: VecDeque<Item<'a>> = self.children(items)?.into();
        while let Some(item) = queue.pop_front() {
            queue.extend(self.children(std::slice::from_ref(&item))?);
            out.push(item);
            self.check_size(out.len() + queue.len())?;
        }
        Ok(out)
    }
}

/// The only item of a collection (`None` when empty); several items are an error.
pub(super) fn single<'c, 'a>(items: &'c [Item<'a>]) -> Result<Option<&'c Item<'a>>> {
    match items {
        [] => Ok(None),
        [item] => Ok(Some(item)),
        _ => Err(error("expected a single item, found several")),
    }
}

/// Like [`single`], a primitive element without a value (only extensions) counting as empty.
pub(super) fn single_value<'c, 'a>(items: &'c [Item<'a>]) -> Result<Option<&'c Item<'a>>> {
    Ok(single(items)?.filter(|item| !matches!(item, Item::Valueless { .. })))
}

pub(super) fn boolean_result<'a>(value: Option<bool>) -> Collection<'a> {
    value.map(Item::Bool).into_iter().collect()
}
