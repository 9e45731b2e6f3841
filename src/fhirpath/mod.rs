//! A FHIRPath evaluator over JSON resources, typed by the R4 element model. It covers the part
//! of FHIRPath that the R4 search parameter expressions and the program's profiles use: paths,
//! choice elements, `|`, `where`, `resolve() is T`, `as`/`ofType`/`is`, `exists`, `first`,
//! `empty`, `not`, indexers, `=`/`!=`, `and`/`or`, literals and `%resource`.

mod parse;

use serde_json::Value;

pub use parse::{Expr, parse};

use crate::fhir::structure::element_keys;

/// One item of a FHIRPath collection.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    /// An element of the resource, with its FHIR type (a type code, or a backbone path such as
    /// `Patient.contact`).
    Node { value: &'a Value, type_code: String },
    Bool(bool),
    String(String),
    /// What `resolve()` knows of a reference without a database: the type it points to.
    Resolved(String),
}

impl Item<'_> {
    fn as_text(&self) -> Option<String> {
        match self {
            Item::Node { value: Value::String(s), .. } => Some(s.clone()),
            Item::Node { value: Value::Bool(b), .. } | Item::Bool(b) => Some(b.to_string()),
            Item::Node { value: Value::Number(n), .. } => Some(n.to_string()),
            Item::String(s) => Some(s.clone()),
            _ => None,
        }
    }

    fn is_type(&self, name: &str) -> bool {
        match self {
            Item::Node { type_code, value } => {
                type_code.eq_ignore_ascii_case(name)
                    || ((type_code == "Resource" || type_code == "DomainResource") && value.get("resourceType").and_then(Value::as_str) == Some(name))
            }
            Item::Resolved(type_name) => type_name == name,
            Item::Bool(_) => name.eq_ignore_ascii_case("boolean"),
            Item::String(_) => name.eq_ignore_ascii_case("string"),
        }
    }
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath: {0}")]
pub struct FhirPathError(pub String);

/// Evaluates `expr` on `resource` (a JSON resource), returning the resulting collection.
pub fn evaluate<'a>(expr: &Expr, resource: &'a Value) -> Result<Vec<Item<'a>>, FhirPathError> {
    let root = Item::Node { value: resource, type_code: resource_type(resource) };
    let context = Context { resource: root.clone() };
    eval(expr, &[root], &context)
}

/// Evaluates `expr` with `focus` as the input collection (for relative expressions such as the
/// components of a composite search parameter).
pub fn evaluate_on<'a>(expr: &Expr, focus: &[Item<'a>], resource: &'a Value) -> Result<Vec<Item<'a>>, FhirPathError> {
    let context = Context { resource: Item::Node { value: resource, type_code: resource_type(resource) } };
    eval(expr, focus, &context)
}

fn resource_type(resource: &Value) -> String {
    resource.get("resourceType").and_then(Value::as_str).unwrap_or("Resource").to_string()
}

struct Context<'a> {
    resource: Item<'a>,
}

fn eval<'a>(expr: &Expr, focus: &[Item<'a>], context: &Context<'a>) -> Result<Vec<Item<'a>>, FhirPathError> {
    Ok(match expr {
        Expr::This => focus.to_vec(),
        Expr::Env(name) => match name.as_str() {
            "resource" | "rootResource" | "context" => vec![context.resource.clone()],
            other => return Err(FhirPathError(format!("unknown environment variable %{other}"))),
        },
        Expr::String(text) => vec![Item::String(text.clone())],
        Expr::Bool(value) => vec![Item::Bool(*value)],
        Expr::Number(text) => vec![Item::String(text.clone())],
        Expr::Identifier(name) => {
            // A type name at the start of a path filters the focus (`Patient.name` on a Patient).
            let starts_with_type = name.chars().next().is_some_and(char::is_uppercase)
                && focus.iter().any(|item| item.is_type(name));
            if starts_with_type { focus.iter().filter(|item| item.is_type(name)).cloned().collect() } else { members(focus, name) }
        }
        Expr::Member(base, name) => {
            let base = eval(base, focus, context)?;
            members(&base, name)
        }
        Expr::Index(base, index) => {
            let base = eval(base, focus, context)?;
            let index = eval(index, focus, context)?;
            let position = index.first().and_then(Item::as_text).and_then(|t| t.parse::<usize>().ok());
            position.and_then(|p| base.get(p).cloned()).into_iter().collect()
        }
        Expr::Union(left, right) => {
            let mut items = eval(left, focus, context)?;
            items.extend(eval(right, focus, context)?);
            items
        }
        Expr::Equals(left, right, negate) => {
            let left = eval(left, focus, context)?;
            let right = eval(right, focus, context)?;
            if left.is_empty() || right.is_empty() {
                return Ok(Vec::new());
            }
            let equal = left.len() == right.len() && left.iter().zip(&right).all(|(a, b)| a.as_text().is_some() && a.as_text() == b.as_text());
            vec![Item::Bool(equal != *negate)]
        }
        Expr::And(left, right) => {
            let left = truth(&eval(left, focus, context)?);
            let right = truth(&eval(right, focus, context)?);
            match (left, right) {
                (Some(false), _) | (_, Some(false)) => vec![Item::Bool(false)],
                (Some(true), Some(true)) => vec![Item::Bool(true)],
                _ => Vec::new(),
            }
        }
        Expr::Or(left, right) => {
            let left = truth(&eval(left, focus, context)?);
            let right = truth(&eval(right, focus, context)?);
            match (left, right) {
                (Some(true), _) | (_, Some(true)) => vec![Item::Bool(true)],
                (Some(false), Some(false)) => vec![Item::Bool(false)],
                _ => Vec::new(),
            }
        }
        Expr::Is(base, type_name) => {
            let base = eval(base, focus, context)?;
            match base.as_slice() {
                [] => Vec::new(),
                [item] => vec![Item::Bool(item.is_type(type_name))],
                _ => return Err(FhirPathError("'is' needs a single item".into())),
            }
        }
        Expr::As(base, type_name) => {
            let base = eval(base, focus, context)?;
            base.into_iter().filter(|item| item.is_type(type_name)).collect()
        }
        Expr::Call(base, name, args) => {
            let input = match base {
                Some(base) => eval(base, focus, context)?,
                None => focus.to_vec(),
            };
            call(name, &input, args, context)?
        }
    })
}

/// The single boolean value of a collection (empty: unknown).
fn truth(items: &[Item<'_>]) -> Option<bool> {
    match items {
        [] => None,
        [Item::Bool(b)] | [Item::Node { value: Value::Bool(b), .. }] => Some(*b),
        _ => Some(true),
    }
}

fn call<'a>(name: &str, input: &[Item<'a>], args: &[Expr], context: &Context<'a>) -> Result<Vec<Item<'a>>, FhirPathError> {
    let type_argument = || match args {
        [Expr::Identifier(type_name)] => Ok(type_name.clone()),
        _ => Err(FhirPathError(format!("{name}() takes a type name"))),
    };
    Ok(match name {
        "where" => {
            let [criteria] = args else { return Err(FhirPathError("where() takes one argument".into())) };
            let mut kept = Vec::new();
            for item in input {
                if truth(&eval(criteria, std::slice::from_ref(item), context)?) == Some(true) {
                    kept.push(item.clone());
                }
            }
            kept
        }
        "exists" => {
            if let [criteria] = args {
                let mut found = false;
                for item in input {
                    if truth(&eval(criteria, std::slice::from_ref(item), context)?) == Some(true) {
                        found = true;
                        break;
                    }
                }
                vec![Item::Bool(found)]
            } else {
                vec![Item::Bool(!input.is_empty())]
            }
        }
        "empty" => vec![Item::Bool(input.is_empty())],
        "not" => truth(input).map(|b| vec![Item::Bool(!b)]).unwrap_or_default(),
        "first" => input.first().cloned().into_iter().collect(),
        "last" => input.last().cloned().into_iter().collect(),
        "count" => vec![Item::String(input.len().to_string())],
        "as" | "ofType" => {
            let type_name = type_argument()?;
            input.iter().filter(|item| item.is_type(&type_name)).cloned().collect()
        }
        "is" => {
            let type_name = type_argument()?;
            match input {
                [item] => vec![Item::Bool(item.is_type(&type_name))],
                _ => Vec::new(),
            }
        }
        "resolve" => input.iter().filter_map(resolve).collect(),
        "extension" => {
            let [Expr::String(url)] = args else { return Err(FhirPathError("extension() takes a URL string".into())) };
            members(input, "extension")
                .into_iter()
                .filter(|item| matches!(item, Item::Node { value, .. } if value.get("url").and_then(Value::as_str) == Some(url.as_str())))
                .collect()
        }
        other => return Err(FhirPathError(format!("function {other}() is not supported"))),
    })
}

/// The type a reference points to, from its `reference` (relative, absolute or canonical).
fn resolve<'a>(item: &Item<'a>) -> Option<Item<'a>> {
    let Item::Node { value, .. } = item else { return None };
    let reference = match value {
        Value::String(text) => text.as_str(),
        Value::Object(map) => map.get("reference").and_then(Value::as_str)?,
        _ => return None,
    };
    reference_type(reference).map(|t| Item::Resolved(t.to_string()))
}

/// `Patient` from `Patient/1`, `http://x/fhir/Patient/1` or `Patient/1/_history/2`.
pub fn reference_type(reference: &str) -> Option<&str> {
    let path = reference.split(['?', '#']).next().unwrap_or_default();
    let parts: Vec<&str> = path.split('/').collect();
    let at = parts.iter().rposition(|part| crate::fhir::is_resource_type(part))?;
    (at + 1 < parts.len()).then(|| parts[at])
}

/// The children called `name` of each item (a choice element gives every variant present).
fn members<'a>(items: &[Item<'a>], name: &str) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    for item in items {
        let Item::Node { value, type_code } = item else { continue };
        let type_code = if type_code == "Resource" || type_code == "DomainResource" {
            value.get("resourceType").and_then(Value::as_str).unwrap_or(type_code)
        } else {
            type_code.as_str()
        };
        for (key, child_type) in element_keys(type_code, name) {
            match value.get(&key) {
                Some(Value::Array(children)) => {
                    out.extend(children.iter().filter(|c| !c.is_null()).map(|c| Item::Node { value: c, type_code: child_type.clone() }));
                }
                Some(Value::Null) | None => {}
                Some(child) => out.push(Item::Node { value: child, type_code: child_type.clone() }),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(expression: &str, resource: &Value) -> Vec<String> {
        let expr = parse(expression).unwrap_or_else(|err| panic!("{expression}: {err}"));
        evaluate(&expr, resource)
            .unwrap_or_else(|err| panic!("{expression}: {err}"))
            .iter()
            .map(|item| match item {
                Item::Node { value, type_code } => format!("{type_code}:{value}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn search_parameter_expressions_evaluate() {
        let observation = json!({"resourceType":"Observation","status":"final","code":{"text":"c"},
            "subject":{"reference":"Patient/1"},"valueQuantity":{"value":1.5},
            "component":[{"code":{"text":"a"},"valueCodeableConcept":{"text":"x"}},{"code":{"text":"b"},"valueQuantity":{"value":2}}]});
        assert_eq!(texts("Observation.subject.where(resolve() is Patient)", &observation), vec![r#"Reference:{"reference":"Patient/1"}"#]);
        assert!(texts("Observation.subject.where(resolve() is Group)", &observation).is_empty());
        assert_eq!(texts("(Observation.value as Quantity) | (Observation.component.value as Quantity)", &observation).len(), 2);
        assert_eq!(texts("Observation.value.as(Quantity)", &observation).len(), 1);
        assert_eq!(texts("(Observation.value as CodeableConcept) | (Observation.component.value as CodeableConcept)", &observation).len(), 1);
        assert!(texts("Patient.name", &observation).is_empty(), "other types' paths give nothing");
        let patient = json!({"resourceType":"Patient","deceasedBoolean":true,"telecom":[{"system":"phone","value":"1"},{"system":"email","value":"a@b"}]});
        assert_eq!(texts("Patient.telecom.where(system='email')", &patient), vec![r#"ContactPoint:{"system":"email","value":"a@b"}"#]);
        assert_eq!(texts("Patient.deceased.exists() and Patient.deceased != false", &patient), vec!["Bool(true)"]);
        let bundle = json!({"resourceType":"Bundle","type":"document","entry":[{"resource":{"resourceType":"Composition","status":"final"}}]});
        assert_eq!(texts("Bundle.entry[0].resource", &bundle).len(), 1);
        assert_eq!(texts("Bundle.entry[0].resource.status", &bundle), vec![r#"code:"final""#]);
    }

    #[test]
    fn references_name_their_type() {
        assert_eq!(reference_type("Patient/1"), Some("Patient"));
        assert_eq!(reference_type("https://x.org/fhir/Patient/1/_history/2"), Some("Patient"));
        assert_eq!(reference_type("urn:uuid:1234"), None);
        assert_eq!(reference_type("Patient"), None);
    }
}
