//! capabilities: `GET [base]/metadata`, a CapabilityStatement generated from what the code
//! implements (http.html#capabilities).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::api::headers::negotiate;
use crate::api::{AppState, response};
use crate::error::FhirError;
use crate::fhir::RESOURCE_TYPES;
use crate::search::registry::{ParamType, Registry};

/// The interactions every resource type supports.
pub const TYPE_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];
/// The interactions of the whole system.
pub const SYSTEM_INTERACTIONS: &[&str] =
    &["transaction", "batch", "history-system", "search-system"];

pub async fn capability_statement(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let format = negotiate(&req)?;
    let fhir_base = state.fhir_base(&req);
    let mut statement = build(&fhir_base, &state.started_at, &state.registry.current());
    statement["rest"][0]["security"] = super::smart::security(&state.auth, &fhir_base);
    Ok(response::json(StatusCode::OK, format, &statement))
}

/// The CapabilityStatement for a server at `fhir_base`.
pub fn build(fhir_base: &str, date: &str, registry: &Registry) -> Value {
    let profiles = program_profiles();
    let resources: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|resource_type| {
            if *resource_type == "AuditEvent" {
                return crate::service::audit::capability();
            }
            let search_params: Vec<Value> = registry
                .params_of(resource_type)
                .filter(|p| p.kind != ParamType::Special && (p.kind != ParamType::Composite || p.components.len() == 2))
                .map(|p| {
                    let mut param = json!({ "name": p.code, "definition": p.url, "type": p.kind.as_str() });
                    if let Some(documentation) = search_documentation(&p.code) {
                        param["documentation"] = json!(documentation);
                    }
                    param
                })
                .collect();
            let references: Vec<String> = registry
                .params_of(resource_type)
                .filter(|p| p.kind == ParamType::Reference)
                .map(|p| format!("{resource_type}:{}", p.code))
                .collect();
            let mut supported: Vec<String> = profiles
                .iter()
                .filter(|(ty, _)| ty == resource_type)
                .map(|(_, url)| url.clone())
                .collect();
            let mut entry = json!({
                "type": resource_type,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{resource_type}"),
                "interaction": TYPE_INTERACTIONS.iter().map(|code| json!({ "code": code })).collect::<Vec<_>>(),
                "versioning": "versioned",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "full-support",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchInclude": std::iter::once("*".to_string()).chain(references.iter().cloned()).collect::<Vec<_>>(),
                "searchRevInclude": references,
                "searchParam": search_params,
            });
            if *resource_type == "Subscription" {
                // R4 backport: the topics a topic-based Subscription may name
                use crate::service::subscriptions::{BACKPORT, TOPICS};
                entry["extension"] = TOPICS
                    .iter()
                    .map(|topic| json!({
                        "url": format!("{BACKPORT}/capabilitystatement-subscriptiontopic-canonical"),
                        "valueCanonical": topic.url,
                    }))
                    .collect();
                supported.push(format!("{BACKPORT}/backport-subscription"));
            }
            let operations = type_operations(resource_type);
            if !operations.is_empty() {
                entry["operation"] = json!(operations);
            }
            // FHIR JSON has no empty arrays
            if !supported.is_empty() {
                entry["supportedProfile"] = json!(supported);
            }
            entry
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "pivot-fhir",
        "kind": "instance",
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "software": { "name": "pivot-fhir", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "pivot-fhir FHIR R4 server", "url": fhir_base },
        "fhirVersion": "4.0.1",
        "implementationGuide": crate::fhir::profiles::artefacts_of("ImplementationGuide")
            .iter()
            .filter_map(|ig| ig["url"].as_str().map(str::to_string))
            .collect::<Vec<_>>(),
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": SYSTEM_INTERACTIONS.iter().map(|code| json!({ "code": code })).collect::<Vec<_>>(),
            "operation": [
                { "name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate" },
                { "name": "expand", "definition": "http://hl7.org/fhir/OperationDefinition/ValueSet-expand" },
                { "name": "validate-code", "definition": "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code" },
                { "name": "lookup", "definition": "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup" },
                { "name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export" },
            ],
            "searchParam": [
                { "name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id" },
                { "name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated" },
                { "name": "_type", "type": "token" },
            ],
        }],
    })
}

/// The operations on one resource type (`CapabilityStatement.rest.resource.operation`).
fn type_operations(resource_type: &str) -> Vec<Value> {
    match resource_type {
        "Patient" => vec![
            json!({ "name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything" }),
            json!({ "name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export" }),
        ],
        "Group" => vec![
            json!({ "name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export" }),
        ],
        "Measure" => vec![json!({
            "name": "evaluate-measure",
            "definition": "http://hl7.org/fhir/OperationDefinition/Measure-evaluate-measure",
            "documentation": "Computed natively for the program measures (see README): periodStart, periodEnd, subject (Patient or Group), reportType individual | subject-list | summary, persist=true stores the MeasureReport; stratified by region, attributed-entity and eligibility-category"
        })],
        _ => Vec::new(),
    }
}

/// The program's resource profiles (not its extensions): (resource type, canonical URL).
fn program_profiles() -> Vec<(String, String)> {
    crate::fhir::profiles::artefacts_of("StructureDefinition")
        .iter()
        .filter(|sd| sd["kind"] == "resource" && sd["derivation"] == "constraint")
        .filter_map(|sd| {
            Some((
                sd["type"].as_str()?.to_string(),
                sd["url"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// How the server reads the parameters whose matching the specification leaves to it.
fn search_documentation(code: &str) -> Option<&'static str> {
    match code {
        "_text" => Some(
            "Words of the narrative: each word of the value must begin a word of the narrative \
             (case and accents ignored); comma-separated values are alternatives.",
        ),
        "_content" => Some(
            "Words of any text of the resource (narrative, names, displays, notes; not ids, \
             references or URLs): each word of the value must begin one of them (case and \
             accents ignored); comma-separated values are alternatives.",
        ),
        _ => None,
    }
}
