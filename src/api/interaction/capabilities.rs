//! capabilities: `GET [base]/metadata`, a CapabilityStatement generated from what the code
//! implements (http.html#capabilities).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::api::headers::negotiate;
use crate::api::{AppState, response};
use crate::error::FhirError;
use crate::fhir::RESOURCE_TYPES;

/// The interactions every resource type supports.
pub const TYPE_INTERACTIONS: &[&str] = &["read", "vread", "update", "delete", "history-instance", "history-type", "create"];
/// The interactions of the whole system.
pub const SYSTEM_INTERACTIONS: &[&str] = &["history-system"];

pub async fn capability_statement(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, FhirError> {
    let format = negotiate(&req)?;
    let statement = build(&state.fhir_base(&req), &state.started_at);
    Ok(response::json(StatusCode::OK, format, &statement))
}

/// The CapabilityStatement for a server at `fhir_base`.
pub fn build(fhir_base: &str, date: &str) -> Value {
    let resources: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|resource_type| {
            json!({
                "type": resource_type,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{resource_type}"),
                "interaction": TYPE_INTERACTIONS.iter().map(|code| json!({ "code": code })).collect::<Vec<_>>(),
                "versioning": "versioned",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": false,
                "conditionalRead": "full-support",
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "pivot-fhir",
        "kind": "instance",
        "software": { "name": "pivot-fhir", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "pivot-fhir FHIR R4 server", "url": fhir_base },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": SYSTEM_INTERACTIONS.iter().map(|code| json!({ "code": code })).collect::<Vec<_>>(),
        }],
    })
}
