//! The search parameters the server knows: the official R4 definitions (embedded), and later
//! the program's own. Each expression is compiled once, and split per resource type so that
//! indexing a Patient evaluates only the Patient branches of a shared parameter.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::fhirpath::{Expr, parse};

/// `SearchParameter.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Token,
    Reference,
    Date,
    Number,
    Quantity,
    Uri,
    Composite,
    Special,
}

impl ParamType {
    fn parse(code: &str) -> Option<ParamType> {
        Some(match code {
            "string" => ParamType::String,
            "token" => ParamType::Token,
            "reference" => ParamType::Reference,
            "date" => ParamType::Date,
            "number" => ParamType::Number,
            "quantity" => ParamType::Quantity,
            "uri" => ParamType::Uri,
            "composite" => ParamType::Composite,
            "special" => ParamType::Special,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Date => "date",
            ParamType::Number => "number",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
            ParamType::Composite => "composite",
            ParamType::Special => "special",
        }
    }
}

/// One search parameter as it applies to one resource type.
#[derive(Debug, Clone)]
pub struct SearchParam {
    pub url: String,
    pub code: String,
    pub kind: ParamType,
    /// The expression restricted to this resource type (`None`: not indexable).
    pub expression: Option<Expr>,
    /// Target resource types of a reference parameter.
    pub targets: Vec<String>,
    /// The parts of a composite parameter: each part's type and its expression, relative to
    /// the elements the parameter's own expression selects.
    pub components: Vec<(ParamType, Expr)>,
}

/// Search parameters by resource type and code.
#[derive(Debug, Default)]
pub struct Registry {
    by_type: HashMap<String, BTreeMap<String, Arc<SearchParam>>>,
    /// The type of every parameter by canonical URL (composite components refer to them).
    kinds: HashMap<String, ParamType>,
}

impl Registry {
    /// The official R4 search parameters.
    pub fn r4() -> Registry {
        let mut registry = Registry::default();
        let definitions: Value =
            serde_json::from_str(include_str!("r4-search-parameters.json")).unwrap_or(Value::Null);
        let definitions = definitions.as_array().cloned().unwrap_or_default();
        // Composites name their parts by URL: learn every type first.
        for definition in &definitions {
            registry.learn(definition);
        }
        for definition in &definitions {
            registry.add(definition);
        }
        registry
    }

    fn learn(&mut self, definition: &Value) {
        if let (Some(url), Some(kind)) = (
            definition["url"].as_str(),
            definition["type"].as_str().and_then(ParamType::parse),
        ) {
            self.kinds.insert(url.to_string(), kind);
        }
    }

    /// Adds a SearchParameter (JSON); returns the resource types it was added for.
    pub fn add(&mut self, definition: &Value) -> Vec<String> {
        self.learn(definition);
        let (Some(code), Some(kind)) = (
            definition["code"].as_str(),
            definition["type"].as_str().and_then(ParamType::parse),
        ) else {
            return Vec::new();
        };
        let url = definition["url"].as_str().unwrap_or_default().to_string();
        let targets: Vec<String> = strings(&definition["target"]);
        let parsed = definition["expression"]
            .as_str()
            .and_then(|text| parse(text).ok());
        let components: Vec<(ParamType, Expr)> = definition["component"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let kind = c["definition"]
                    .as_str()
                    .and_then(|url| self.kinds.get(url))
                    .copied()?;
                let expression = parse(c["expression"].as_str()?).ok()?;
                Some((kind, expression))
            })
            .collect();
        // Only two-part composites whose first part is a token are indexed.
        let components = if components.len() == 2 && components[0].0 == ParamType::Token {
            components
        } else {
            Vec::new()
        };
        let mut added = Vec::new();
        for base in strings(&definition["base"]) {
            let types: Vec<&str> = match base.as_str() {
                "Resource" => crate::fhir::RESOURCE_TYPES.to_vec(),
                "DomainResource" => crate::fhir::RESOURCE_TYPES
                    .iter()
                    .copied()
                    .filter(|t| !matches!(*t, "Bundle" | "Binary" | "Parameters"))
                    .collect(),
                other => vec![other],
            };
            for resource_type in types {
                let expression = parsed
                    .as_ref()
                    .and_then(|expr| restrict(expr, resource_type));
                let param = SearchParam {
                    url: url.clone(),
                    code: code.to_string(),
                    kind,
                    expression,
                    targets: targets.clone(),
                    components: components.clone(),
                };
                self.by_type
                    .entry(resource_type.to_string())
                    .or_default()
                    .insert(code.to_string(), Arc::new(param));
                added.push(resource_type.to_string());
            }
        }
        added
    }

    pub fn get(&self, resource_type: &str, code: &str) -> Option<&Arc<SearchParam>> {
        self.by_type.get(resource_type)?.get(code)
    }

    /// Every parameter of a resource type, by code.
    pub fn params_of(&self, resource_type: &str) -> impl Iterator<Item = &Arc<SearchParam>> {
        self.by_type
            .get(resource_type)
            .into_iter()
            .flat_map(|params| params.values())
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The branches of a `|` union that can apply to `resource_type` (those starting with that type
/// or with no type), joined again; `None` when no branch applies.
fn restrict(expr: &Expr, resource_type: &str) -> Option<Expr> {
    let mut branches = Vec::new();
    collect_branches(expr, &mut branches);
    let kept: Vec<Expr> = branches
        .into_iter()
        .filter(|branch| {
            root_type(branch)
                .is_none_or(|t| t == resource_type || t == "Resource" || t == "DomainResource")
        })
        .collect();
    kept.into_iter()
        .reduce(|left, right| Expr::Union(Box::new(left), Box::new(right)))
}

fn collect_branches(expr: &Expr, out: &mut Vec<Expr>) {
    match expr {
        Expr::Union(left, right) => {
            collect_branches(left, out);
            collect_branches(right, out);
        }
        other => out.push(other.clone()),
    }
}

/// The type name a path starts with (`Observation` in `(Observation.value as Quantity)`).
fn root_type(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Identifier(name) if name.chars().next().is_some_and(char::is_uppercase) => Some(name),
        Expr::Member(base, _) | Expr::Index(base, _) | Expr::Is(base, _) | Expr::As(base, _) => {
            root_type(base)
        }
        Expr::Call(Some(base), _, _) => root_type(base),
        Expr::Equals(left, _, _) | Expr::And(left, _) | Expr::Or(left, _) => root_type(left),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_parameters_are_registered_per_type() {
        let registry = Registry::r4();
        let subject = registry.get("Observation", "subject");
        assert!(subject.is_some_and(|p| p.kind == ParamType::Reference && p.expression.is_some()));
        assert!(
            registry
                .get("Patient", "identifier")
                .is_some_and(|p| p.kind == ParamType::Token)
        );
        assert!(registry.get("Patient", "_lastUpdated").is_some());
        assert!(registry.get("Patient", "_id").is_some());
        // `patient` on Observation keeps only the Observation branch of the shared expression
        let patient = registry
            .get("Observation", "patient")
            .and_then(|p| p.expression.clone());
        assert_eq!(
            patient.map(|e| format!("{e:?}").matches("Observation").count()),
            Some(1)
        );
        assert!(registry.params_of("Patient").count() > 20);
    }
}
