//! Checks of an expression against the R4 model before evaluation: the possible FHIR types
//! of each path step are followed from the resource type, and a step that none of them has is
//! an error (`Patient.nmae`, `Observation.valueQuantity`, `(x as Period).unit`). Optionally,
//! order-dependent functions on collections of undefined order are rejected.

use super::parse::Expr;
use super::types::{Namespace, TypeSpec, fhir_is_a};
use super::{FhirPathError, eval::error};
use crate::fhir::structure::{element_keys, is_known_type, is_primitive};

/// What is known statically about a collection.
#[derive(Debug, Clone, Default)]
struct Shape {
    /// The FHIR types its items may have; `None` when unknown (System values, computed or
    /// arbitrary resources), which disables the checks below it.
    types: Option<Vec<String>>,
    /// Its order is undefined (`children()`, `descendants()`).
    unordered: bool,
}

impl Shape {
    fn of(types: Vec<String>) -> Shape {
        // Abstract resource types stand for any resource: nothing to check against.
        if types
            .iter()
            .any(|t| t == "Resource" || t == "DomainResource")
        {
            return Shape::default();
        }
        Shape {
            types: Some(types),
            unordered: false,
        }
    }
}

/// Functions whose result is (a part of) their input, in the input's order.
const PRESERVING: [&str; 12] = [
    "where",
    "first",
    "last",
    "tail",
    "skip",
    "take",
    "single",
    "distinct",
    "intersect",
    "exclude",
    "trace",
    "sort",
];
/// Functions that evaluate their arguments once per input item.
const ITERATING: [&str; 7] = [
    "where",
    "select",
    "all",
    "exists",
    "repeat",
    "aggregate",
    "sort",
];
/// Functions whose result depends on the order of their input.
const ORDERED: [&str; 5] = ["first", "last", "tail", "skip", "take"];

pub(super) fn check(expr: &Expr, root: Option<&str>, ordered: bool) -> Result<(), FhirPathError> {
    let checker = Checker {
        ordered,
        root: root.map(str::to_string),
    };
    let focus = checker
        .root
        .clone()
        .map(|root| Shape::of(vec![root]))
        .unwrap_or_default();
    checker.infer(expr, &focus).map(|_| ())
}

struct Checker {
    ordered: bool,
    root: Option<String>,
}

impl Checker {
    fn members(&self, shape: &Shape, name: &str) -> Result<Shape, FhirPathError> {
        let Some(types) = &shape.types else {
            return Ok(Shape {
                types: None,
                unordered: shape.unordered,
            });
        };
        let mut found = Vec::new();
        for type_name in types {
            if is_primitive(type_name) {
                match name {
                    "extension" => found.push("Extension".to_string()),
                    "id" => found.push("string".to_string()),
                    _ => {}
                }
            } else {
                found.extend(
                    element_keys(type_name, name)
                        .into_iter()
                        .map(|(_, child_type)| child_type),
                );
            }
        }
        if found.is_empty() && !types.is_empty() {
            return Err(error(format!(
                "{} has no element '{name}'",
                types.join(" or ")
            )));
        }
        found.dedup();
        Ok(Shape {
            unordered: shape.unordered,
            ..Shape::of(found)
        })
    }

    fn infer(&self, expr: &Expr, focus: &Shape) -> Result<Shape, FhirPathError> {
        Ok(match expr {
            Expr::This => focus.clone(),
            Expr::Identifier(name) => {
                let selected: Option<Vec<String>> = focus.types.as_ref().map(|types| {
                    types
                        .iter()
                        .filter(|t| fhir_is_a(t, name))
                        .cloned()
                        .collect()
                });
                match selected {
                    Some(types) if !types.is_empty() => Shape {
                        types: Some(types),
                        unordered: focus.unordered,
                    },
                    _ => self.members(focus, name)?,
                }
            }
            Expr::Member(base, name) => {
                let base = self.infer(base, focus)?;
                self.members(&base, name)?
            }
            Expr::Index(base, index) => {
                let base = self.infer(base, focus)?;
                self.infer(index, focus)?;
                if self.ordered && base.unordered {
                    return Err(error("an indexer needs an ordered collection"));
                }
                base
            }
            Expr::Call(base, name, args) => {
                let input = match base {
                    Some(base) => self.infer(base, focus)?,
                    None => focus.clone(),
                };
                self.call(name, &input, args, focus)?
            }
            Expr::Union(left, right) => {
                let (left, right) = (self.infer(left, focus)?, self.infer(right, focus)?);
                let types = match (left.types, right.types) {
                    (Some(mut a), Some(b)) => {
                        a.extend(b);
                        Some(a)
                    }
                    _ => None,
                };
                Shape {
                    types,
                    unordered: left.unordered || right.unordered,
                }
            }
            Expr::As(base, type_name) => {
                self.infer(base, focus)?;
                cast_shape(type_name)
            }
            Expr::Is(base, _) | Expr::Polarity(base, _) => {
                self.infer(base, focus)?;
                Shape::default()
            }
            Expr::Equals(left, right, _)
            | Expr::And(left, right)
            | Expr::Or(left, right)
            | Expr::Binary(left, _, right) => {
                self.infer(left, focus)?;
                self.infer(right, focus)?;
                Shape::default()
            }
            Expr::Env(name) if name == "resource" || name == "rootResource" => self
                .root
                .clone()
                .map(|root| Shape::of(vec![root]))
                .unwrap_or_default(),
            _ => Shape::default(),
        })
    }

    fn call(
        &self,
        name: &str,
        input: &Shape,
        args: &[Expr],
        focus: &Shape,
    ) -> Result<Shape, FhirPathError> {
        if matches!(name, "ofType" | "as" | "is") {
            return Ok(match (name, args) {
                ("is", _) => Shape::default(),
                (_, [Expr::Identifier(type_name)]) => Shape {
                    unordered: input.unordered,
                    ..cast_shape(type_name)
                },
                (_, [Expr::Member(namespace, type_name)]) => match namespace.as_ref() {
                    Expr::Identifier(namespace) => Shape {
                        unordered: input.unordered,
                        ..cast_shape(&format!("{namespace}.{type_name}"))
                    },
                    _ => Shape::default(),
                },
                _ => Shape::default(),
            });
        }
        if self.ordered && input.unordered && ORDERED.contains(&name) {
            return Err(error(format!("{name}() needs an ordered collection")));
        }
        let item_focus = Shape {
            types: input.types.clone(),
            unordered: false,
        };
        let mut results = Vec::with_capacity(args.len());
        for (position, arg) in args.iter().enumerate() {
            let iterates = ITERATING.contains(&name) && !(name == "aggregate" && position == 1)
                || (name == "trace" && position == 1)
                || name == "iif";
            results.push(self.infer(arg, if iterates { &item_focus } else { focus })?);
        }
        Ok(match name {
            _ if PRESERVING.contains(&name) => input.clone(),
            "select" => Shape {
                unordered: input.unordered,
                ..results.into_iter().next().unwrap_or_default()
            },
            "children" | "descendants" => Shape {
                types: None,
                unordered: true,
            },
            "extension" => Shape {
                unordered: input.unordered,
                ..Shape::of(vec!["Extension".into()])
            },
            _ => Shape::default(),
        })
    }
}

/// What `as`/`ofType` leave: items of the named FHIR type.
fn cast_shape(type_name: &str) -> Shape {
    let spec = TypeSpec::parse(type_name);
    if spec.namespace != Some(Namespace::System)
        && (is_primitive(&spec.name) || is_known_type(&spec.name))
    {
        Shape::of(vec![spec.name])
    } else {
        Shape::default()
    }
}
