//! Type specifiers and the type hierarchy: FHIRPath's `System` types and the R4 model's
//! `FHIR` types (primitives derived from one another, quantities, backbone elements and
//! resources), so that `is`, `as`, `ofType` and `type()` agree.

use crate::fhir::structure::{is_known_type, is_primitive};

/// The FHIRPath system types.
pub const SYSTEM_TYPES: [&str; 9] = [
    "Any", "Boolean", "String", "Integer", "Decimal", "Date", "DateTime", "Time", "Quantity",
];

/// Abstract FHIR types that the element model has no entry for.
const ABSTRACT_TYPES: [&str; 5] = [
    "Base",
    "Element",
    "BackboneElement",
    "SimpleQuantity",
    "MoneyQuantity",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    System,
    Fhir,
}

/// A type specifier as written: an optional namespace and a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSpec {
    pub namespace: Option<Namespace>,
    pub name: String,
}

impl TypeSpec {
    pub fn parse(text: &str) -> TypeSpec {
        match text.split_once('.') {
            Some(("System", name)) => TypeSpec {
                namespace: Some(Namespace::System),
                name: name.to_string(),
            },
            Some(("FHIR", name)) => TypeSpec {
                namespace: Some(Namespace::Fhir),
                name: name.to_string(),
            },
            _ => TypeSpec {
                namespace: None,
                name: text.to_string(),
            },
        }
    }

    /// Whether the name can be checked: an unqualified or `FHIR` name must exist; any
    /// `System` name can (one that does not exist matches nothing).
    pub fn is_known(&self) -> bool {
        let system = SYSTEM_TYPES.contains(&self.name.as_str());
        match self.namespace {
            Some(Namespace::System) => true,
            Some(Namespace::Fhir) => is_fhir_type(&self.name),
            None => system || is_fhir_type(&self.name),
        }
    }
}

pub fn is_fhir_type(name: &str) -> bool {
    is_primitive(name) || is_known_type(name) || ABSTRACT_TYPES.contains(&name)
}

/// The type `name` is derived from in R4 (`code` from `string`, `Age` from `Quantity`,
/// `Patient` from `DomainResource`, ...).
pub fn fhir_parent(name: &str) -> Option<&'static str> {
    Some(match name {
        "code" | "id" | "markdown" => "string",
        "url" | "canonical" | "oid" | "uuid" => "uri",
        "positiveInt" | "unsignedInt" => "integer",
        "Age" | "Count" | "Distance" | "Duration" | "MoneyQuantity" | "SimpleQuantity" => {
            "Quantity"
        }
        "Base" | "Resource" => return None,
        "Element" => "Base",
        "DomainResource" | "Bundle" | "Binary" | "Parameters" => "Resource",
        "BackboneElement" => "Element",
        _ if name.contains('.') => "BackboneElement",
        _ if crate::fhir::is_resource_type(name) => "DomainResource",
        _ => "Element",
    })
}

/// Whether FHIR type `actual` is `wanted` or derives from it.
pub fn fhir_is_a(actual: &str, wanted: &str) -> bool {
    let mut current = Some(actual);
    let mut steps = 0;
    while let Some(name) = current {
        if name == wanted {
            return true;
        }
        steps += 1;
        if steps > 8 {
            return false;
        }
        current = fhir_parent(name);
    }
    false
}

/// The name `type()` reports for a FHIR type (backbone elements by their kind, not path).
pub fn reported_name(type_code: &str) -> &str {
    if type_code.contains('.') {
        "BackboneElement"
    } else {
        type_code
    }
}
