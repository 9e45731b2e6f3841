//! A FHIRPath evaluator (FHIRPath N1 with the FHIR R4 additions) over JSON resources, typed by
//! the R4 element model.
//!
//! Elements stay references into the resource ([`Item::Node`], typed by their FHIR type);
//! literals and computed values are System values (Boolean, String, Integer, Decimal, Date,
//! DateTime, Time, Quantity). FHIR primitives convert to System values where an operator or
//! function needs one, so `Patient.birthDate < today()` works while `Patient.active.is(Boolean)`
//! stays false, as the specification requires.
//!
//! [`evaluate`] and [`evaluate_on`] read expressions the way R4 search parameter definitions
//! need (see [`Options::search_compatible`]); [`evaluate_with`] follows the specification and
//! can check expressions against the model first.

mod check;
mod decimal;
mod eval;
mod functions;
mod ops;
mod parse;
mod quantity;
mod temporal;
mod text;
mod types;

use serde_json::Value;

pub use decimal::Decimal;
pub use parse::{BinaryOp, Expr, parse};
pub use quantity::Quantity;
pub use temporal::{DateTimeValue, TimeValue};

/// One item of a FHIRPath collection.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    /// An element of the resource, with its FHIR type (a type code, or a backbone path such as
    /// `Patient.contact`).
    Node {
        value: &'a Value,
        type_code: String,
    },
    Bool(bool),
    String(String),
    /// What `resolve()` knows of a reference it cannot find in the resource: the type it
    /// points to.
    Resolved(String),
    Integer(i64),
    Decimal(Decimal),
    Date(DateTimeValue),
    DateTime(DateTimeValue),
    Time(TimeValue),
    Quantity(Quantity),
    /// A primitive element that has extensions but no value: `extension` is its `_name` JSON
    /// part.
    Valueless {
        extension: &'a Value,
        type_code: String,
    },
    /// The result of `type()`.
    TypeInfo {
        namespace: String,
        name: String,
    },
}

impl Item<'_> {
    /// The namespace (`System` or `FHIR`) and name of the item's type.
    pub fn type_info(&self) -> (&'static str, String) {
        match self {
            Item::Node { value, type_code } => (
                "FHIR",
                types::reported_name(eval::node_type(value, type_code)).to_string(),
            ),
            Item::Valueless { type_code, .. } => ("FHIR", type_code.clone()),
            Item::Resolved(type_name) => ("FHIR", type_name.clone()),
            Item::Bool(_) => ("System", "Boolean".into()),
            Item::String(_) => ("System", "String".into()),
            Item::Integer(_) => ("System", "Integer".into()),
            Item::Decimal(_) => ("System", "Decimal".into()),
            Item::Date(_) => ("System", "Date".into()),
            Item::DateTime(_) => ("System", "DateTime".into()),
            Item::Time(_) => ("System", "Time".into()),
            Item::Quantity(_) => ("System", "Quantity".into()),
            Item::TypeInfo { .. } => ("System", "Any".into()),
        }
    }

    /// The item as `toString()` gives it; `None` for elements that are not primitives.
    pub fn to_text(&self) -> Option<String> {
        ops::to_text(self)
    }
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath: {0}")]
pub struct FhirPathError(pub String);

/// How an expression is evaluated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// The readings R4 search parameter definitions rely on: `as` on a collection of several
    /// items filters it like `ofType()` (`Observation.component.value as Quantity`), type names
    /// ignore case (`as(DateTime)` selects `dateTime` elements), a criterion that gives several
    /// items counts as true, `resolve()` only names the target type of a reference, and the
    /// result leaves out primitive elements that have no value (only extensions).
    pub search_compatible: bool,
    /// Checks the expression against the R4 model before evaluating it (what FHIRPath engines
    /// call strict or compile-time checking): a path that no element can have
    /// (`Patient.nmae`, `Observation.valueQuantity`) is an error instead of empty.
    pub semantic_checks: bool,
    /// With `semantic_checks`, also rejects order-dependent functions (`first()`, `skip()`,
    /// indexers, ...) on collections whose order is not defined (`children()`,
    /// `descendants()`).
    pub check_ordered_functions: bool,
}

impl Options {
    const SEARCH: Options = Options {
        search_compatible: true,
        semantic_checks: false,
        check_ordered_functions: false,
    };
}

/// Evaluates `expr` on `resource` (a JSON resource), returning the resulting collection.
/// Search parameter readings apply ([`Options::search_compatible`]).
pub fn evaluate<'a>(expr: &Expr, resource: &'a Value) -> Result<Vec<Item<'a>>, FhirPathError> {
    evaluate_with(expr, Some(resource), &Options::SEARCH)
}

/// Evaluates `expr` with `focus` as the input collection (for relative expressions such as the
/// components of a composite search parameter). Search parameter readings apply.
pub fn evaluate_on<'a>(
    expr: &Expr,
    focus: &[Item<'a>],
    resource: &'a Value,
) -> Result<Vec<Item<'a>>, FhirPathError> {
    let engine = eval::Engine::new(Some(resource), focus.to_vec(), Options::SEARCH);
    engine.run(expr, focus).map(without_valueless)
}

/// Evaluates `expr` with `focus` as the input collection and `resource` as `%resource`,
/// following the specification: how invariants (`constraint.expression`) are evaluated on an
/// element.
pub fn evaluate_constraint<'a>(
    expr: &Expr,
    focus: Item<'a>,
    resource: &'a Value,
) -> Result<Vec<Item<'a>>, FhirPathError> {
    let focus = vec![focus];
    let engine = eval::Engine::new(Some(resource), focus.clone(), Options::default());
    engine.run(expr, &focus)
}

fn without_valueless(mut items: Vec<Item<'_>>) -> Vec<Item<'_>> {
    items.retain(|item| !matches!(item, Item::Valueless { .. }));
    items
}

/// Evaluates `expr` on `resource` (or on nothing: an empty input, for expressions made of
/// literals) with the given options.
pub fn evaluate_with<'a>(
    expr: &Expr,
    resource: Option<&'a Value>,
    options: &Options,
) -> Result<Vec<Item<'a>>, FhirPathError> {
    let focus: Vec<Item<'a>> = resource.map(eval::root_item).into_iter().collect();
    if options.semantic_checks {
        check::check(
            expr,
            resource.map(eval::resource_type).as_deref(),
            options.check_ordered_functions,
        )?;
    }
    let engine = eval::Engine::new(resource, focus.clone(), *options);
    let items = engine.run(expr, &focus)?;
    Ok(if options.search_compatible {
        without_valueless(items)
    } else {
        items
    })
}

/// `Patient` from `Patient/1`, `http://x/fhir/Patient/1` or `Patient/1/_history/2`.
pub fn reference_type(reference: &str) -> Option<&str> {
    let path = reference.split(['?', '#']).next().unwrap_or_default();
    let parts: Vec<&str> = path.split('/').collect();
    let at = parts
        .iter()
        .rposition(|part| crate::fhir::is_resource_type(part))?;
    (at + 1 < parts.len()).then(|| parts[at])
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

    /// The results of a conformant evaluation as `toString()` texts.
    fn strict(expression: &str, resource: &Value) -> Result<Vec<String>, FhirPathError> {
        let expr = parse(expression)?;
        let items = evaluate_with(&expr, Some(resource), &Options::default())?;
        Ok(items
            .iter()
            .map(|item| item.to_text().unwrap_or_else(|| format!("{item:?}")))
            .collect())
    }

    #[test]
    fn search_parameter_expressions_evaluate() {
        let observation = json!({"resourceType":"Observation","status":"final","code":{"text":"c"},
            "subject":{"reference":"Patient/1"},"valueQuantity":{"value":1.5},
            "component":[{"code":{"text":"a"},"valueCodeableConcept":{"text":"x"}},{"code":{"text":"b"},"valueQuantity":{"value":2}}]});
        assert_eq!(
            texts(
                "Observation.subject.where(resolve() is Patient)",
                &observation
            ),
            vec![r#"Reference:{"reference":"Patient/1"}"#]
        );
        assert!(
            texts(
                "Observation.subject.where(resolve() is Group)",
                &observation
            )
            .is_empty()
        );
        assert_eq!(
            texts(
                "(Observation.value as Quantity) | (Observation.component.value as Quantity)",
                &observation
            )
            .len(),
            2
        );
        assert_eq!(
            texts("Observation.value.as(Quantity)", &observation).len(),
            1
        );
        assert_eq!(texts("(Observation.value as CodeableConcept) | (Observation.component.value as CodeableConcept)", &observation).len(), 1);
        assert!(
            texts("Patient.name", &observation).is_empty(),
            "other types' paths give nothing"
        );
        let patient = json!({"resourceType":"Patient","deceasedBoolean":true,"telecom":[{"system":"phone","value":"1"},{"system":"email","value":"a@b"}]});
        assert_eq!(
            texts("Patient.telecom.where(system='email')", &patient),
            vec![r#"ContactPoint:{"system":"email","value":"a@b"}"#]
        );
        assert_eq!(
            texts(
                "Patient.deceased.exists() and Patient.deceased != false",
                &patient
            ),
            vec!["Bool(true)"]
        );
        let bundle = json!({"resourceType":"Bundle","type":"document","entry":[{"resource":{"resourceType":"Composition","status":"final"}}]});
        assert_eq!(texts("Bundle.entry[0].resource", &bundle).len(), 1);
        assert_eq!(
            texts("Bundle.entry[0].resource.status", &bundle),
            vec![r#"code:"final""#]
        );
        assert_eq!(
            texts(
                "Resource.meta.tag",
                &json!({"resourceType":"Patient","meta":{"tag":[{"code":"t"}]}})
            )
            .len(),
            1
        );
    }

    #[test]
    fn references_name_their_type() {
        assert_eq!(reference_type("Patient/1"), Some("Patient"));
        assert_eq!(
            reference_type("https://x.org/fhir/Patient/1/_history/2"),
            Some("Patient")
        );
        assert_eq!(reference_type("urn:uuid:1234"), None);
        assert_eq!(reference_type("Patient"), None);
    }

    #[test]
    fn conformant_evaluation_follows_the_specification() {
        let patient = json!({"resourceType":"Patient","birthDate":"1974-12-25","_birthDate":{"extension":[{"url":"http://x/bt","valueDateTime":"1974-12-25T14:35:45-05:00"}]},
            "name":[{"given":["Peter","James"]},{"given":[null,"Jim"],"_given":[{"extension":[{"url":"http://x/s","valueString":"v"}]}]}],
            "contained":[{"resourceType":"Organization","id":"o1","name":"Org"}],"managingOrganization":{"reference":"#o1"}});
        assert_eq!(
            strict("Patient.birthDate + 1 year", &patient),
            Ok(vec!["1975-12-25".into()])
        );
        assert_eq!(
            strict("Patient.birthDate.extension('http://x/bt').value", &patient),
            Ok(vec!["1974-12-25T14:35:45-05:00".into()])
        );
        assert_eq!(
            strict("Patient.name.given.select(hasValue())", &patient),
            Ok(vec![
                "true".into(),
                "true".into(),
                "false".into(),
                "true".into()
            ])
        );
        assert_eq!(
            strict("Patient.managingOrganization.resolve().name", &patient),
            Ok(vec!["Org".into()])
        );
        assert_eq!(
            strict("(1 | 2 | 2).count() + 0.5", &patient),
            Ok(vec!["2.5".into()])
        );
        assert_eq!(
            strict("Patient.name.given.where($this.length() > 3)", &patient),
            Ok(vec!["Peter".into(), "James".into()])
        );
        assert!(
            strict("Patient.name.as(HumanName)", &patient).is_err(),
            "as needs a single item"
        );
        assert!(
            strict("Patient.name.given.startsWith('P')", &patient).is_err(),
            "functions on strings need one string"
        );
        assert_eq!(
            strict("@2012-04-15 = @2012-04-15T10:00:00", &patient),
            Ok(vec![])
        );
        assert_eq!(
            strict("4 'g' ~ 4040 'mg'", &patient),
            Ok(vec!["true".into()])
        );
    }

    #[test]
    fn fhir_elements_keep_their_types_and_text() {
        let patient = json!({"resourceType":"Patient","meta":{"lastUpdated":"2024-01-01T10:00:00.123456+00:00"},
            "name":[{"given":[null,"Jim"],"_given":[{"extension":[{"url":"http://x/s","valueString":"v"}]}]}]});
        assert_eq!(
            strict("meta.lastUpdated.toString()", &patient),
            Ok(vec!["2024-01-01T10:00:00.123456+00:00".into()])
        );
        assert_eq!(
            strict(
                "meta.lastUpdated > @2023 and meta.lastUpdated < now()",
                &patient
            ),
            Ok(vec!["true".into()])
        );
        assert_eq!(
            strict(
                "name.given.last().type().namespace + '.' + name.given.last().type().name",
                &patient
            ),
            Ok(vec!["FHIR.string".into()])
        );
        assert_eq!(strict("name.given.count()", &patient), Ok(vec!["2".into()]));
        assert_eq!(
            strict("name.given.first().extension.value", &patient),
            Ok(vec!["v".into()])
        );
        assert_eq!(
            texts("Patient.name.given", &patient),
            vec![r#"string:"Jim""#],
            "search readings leave valueless primitives out"
        );
        assert_eq!(
            strict("%ext-x & '|' & %vs-y", &patient),
            Ok(vec![
                "http://hl7.org/fhir/StructureDefinition/x|http://hl7.org/fhir/ValueSet/y".into()
            ])
        );
        assert!(
            strict("name.given.memberOf('http://x/vs')", &patient).is_err(),
            "terminology is not available"
        );
    }

    #[test]
    fn semantic_checks_reject_impossible_paths() {
        let observation = json!({"resourceType":"Observation","status":"final","code":{"text":"c"},"valueQuantity":{"value":1.5,"unit":"kg"}});
        let options = Options {
            semantic_checks: true,
            ..Options::default()
        };
        let run = |expression: &str| {
            parse(expression).and_then(|expr| {
                evaluate_with(&expr, Some(&observation), &options).map(|items| items.len())
            })
        };
        assert_eq!(run("Observation.value.unit"), Ok(1));
        assert!(run("Observation.valueQuantity.unit").is_err());
        assert!(run("(Observation.value as Period).unit").is_err());
        assert!(run("Observation.code.txt").is_err());
        assert!(run("Patient.name").is_err());
        assert_eq!(run("Observation.children().text"), Ok(1));
    }

    #[test]
    fn hostile_evaluations_end_with_an_error() {
        let patient = json!({"resourceType":"Patient","name":[{"given":["a","b"]}]});
        let options = Options::default();
        let blow_up = "(1|2|3|4|5|6|7|8|9|10|11|12|13|14|15|16|17|18|19|20|21|22|23|24|25|26|27|28|29|30).aggregate($total.combine($total), 1).count()";
        let expr = parse(blow_up).unwrap_or(Expr::Empty);
        assert!(evaluate_with(&expr, Some(&patient), &options).is_err());
        let doubling = parse("(1|2|3|4|5|6|7|8|9|10).repeat($this + 1)").unwrap_or(Expr::Empty);
        assert!(evaluate_with(&doubling, Some(&patient), &options).is_err());
        let long = parse("(1|2|3|4|5|6|7|8|9|10|11|12|13|14|15|16|17|18|19|20|21|22|23|24|25|26|27|28|29|30).aggregate($total & $total, 'ab')").unwrap_or(Expr::Empty);
        assert!(evaluate_with(&long, Some(&patient), &options).is_err());
        let regex = parse("'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!'.matches('(a+)+$')")
            .unwrap_or(Expr::Empty);
        assert_eq!(
            evaluate_with(&regex, Some(&patient), &options).map(|items| items.len()),
            Ok(1)
        );
    }

    #[test]
    fn the_deepest_accepted_expressions_fit_a_small_stack() {
        let shapes: [fn(usize) -> String; 7] = [
            |n| format!("{}1{}", "(1|2).select(".repeat(n), ")".repeat(n)),
            |n| format!("{}1{}", "iif(true, ".repeat(n), ")".repeat(n)),
            |n| format!("{}1{}", "(1|2).sort(".repeat(n), ")".repeat(n)),
            |n| format!("{}1{}", "1+(".repeat(n), ")".repeat(n)),
            |n| format!("{}1", "-".repeat(n)),
            |n| vec!["1"; n].join("+"),
            |n| format!("Patient{}", ".name".repeat(n)),
        ];
        for make in shapes {
            let deepest = (1..400)
                .take_while(|n| parse(&make(*n)).is_ok())
                .last()
                .unwrap_or(1);
            let text = make(deepest);
            // 1 MiB, half a default thread stack, in whatever build the tests run.
            let run = std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || {
                    let patient = json!({"resourceType":"Patient","name":[{"given":["a"]}]});
                    let options = Options {
                        semantic_checks: true,
                        check_ordered_functions: true,
                        ..Options::default()
                    };
                    let _ = parse(&text)
                        .and_then(|expr| evaluate_with(&expr, Some(&patient), &options));
                    let _ = parse(&text)
                        .and_then(|expr| evaluate_with(&expr, Some(&patient), &Options::default()));
                });
            assert!(run.is_ok_and(|handle| handle.join().is_ok()));
        }
    }
}
