//! Operation parameters, from the query string and, for POST, from a `Parameters` body
//! (operations.html#request).

use actix_web::HttpRequest;
use serde_json::Value;

use crate::api::headers::query_pairs;
use crate::error::FhirError;

/// The parameters of one operation call: each name with its value (a string from the query, or
/// the `value[x]` / `resource` of a `Parameters.parameter`).
pub struct OperationParams {
    pairs: Vec<(String, Value)>,
}

impl OperationParams {
    /// The query parameters (without `_format` and `_pretty`) and those of `body` when it is a
    /// Parameters resource.
    pub fn read(req: &HttpRequest, body: Option<&Value>) -> Result<OperationParams, FhirError> {
        let mut pairs: Vec<(String, Value)> = query_pairs(req)?
            .into_iter()
            .filter(|(name, _)| name != "_format" && name != "_pretty")
            .map(|(name, value)| (name, Value::String(value)))
            .collect();
        if let Some(body) = body
            && body["resourceType"] == "Parameters"
        {
            for parameter in body["parameter"].as_array().into_iter().flatten() {
                let Some(name) = parameter["name"].as_str() else {
                    continue;
                };
                let value = parameter.as_object().and_then(|map| {
                    map.iter()
                        .find(|(key, _)| key.starts_with("value") || *key == "resource")
                        .map(|(_, v)| v.clone())
                });
                if let Some(value) = value {
                    pairs.push((name.to_string(), value));
                }
            }
        }
        Ok(OperationParams { pairs })
    }

    pub fn value(&self, name: &str) -> Option<&Value> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A parameter given as text (query) or as a primitive value.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.value(name)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub fn texts(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.as_str().map(str::to_string))
            .collect()
    }

    /// A non-negative integer parameter, or 400.
    pub fn count(&self, name: &str) -> Result<Option<usize>, FhirError> {
        match self.text(name) {
            None => Ok(None),
            Some(text) => text.trim().parse::<usize>().map(Some).map_err(|_| {
                FhirError::invalid(
                    crate::fhir::outcome::Issue::error(
                        "value",
                        format!("The parameter {name} must be a non-negative integer"),
                    )
                    .at(name),
                )
            }),
        }
    }
}
