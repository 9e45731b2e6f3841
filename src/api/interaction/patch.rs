//! patch: `PATCH [base]/[type]/[id]` and conditional `PATCH [base]/[type]?criteria`
//! (http.html#patch), with JSON Patch (`application/json-patch+json`) or FHIRPath Patch (a
//! Parameters resource, `application/fhir+json`).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use crate::api::audit::WriteAudit;
use crate::api::headers::{if_match, negotiate, prefer_return, read_body};
use crate::api::{AppState, known_type, response, valid_id};
use crate::auth::Access;
use crate::auth::scopes::Permission;
use crate::error::FhirError;
use crate::fhir::outcome::Issue;
use crate::service::access::{grant_conditions, visible};
use crate::service::resources::{PatchDocument, patch};
use crate::service::write_effects::Actor;

/// Reads the patch document in the format the `Content-Type` names.
pub fn patch_document(req: &HttpRequest, body: &[u8]) -> Result<PatchDocument, FhirError> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let parse = || {
        serde_json::from_slice::<Value>(body).map_err(|err| {
            FhirError::invalid(Issue::error(
                "structure",
                format!("The patch is not valid JSON: {err}"),
            ))
        })
    };
    match media.as_str() {
        "application/json-patch+json" => Ok(PatchDocument::Json(parse()?)),
        "application/merge-patch+json" => merge_patch(parse()?),
        "application/fhir+json" | "application/json" => {
            // a Parameters resource is a FHIRPath Patch; any other object a merge patch
            let document = parse()?;
            if document.get("resourceType").and_then(Value::as_str) == Some("Parameters") {
                let parameters = crate::fhir::parse::parse_resource(body, Some("Parameters"))?;
                Ok(PatchDocument::FhirPath(Value::Object(parameters)))
            } else {
                merge_patch(document)
            }
        }
        _ => Err(FhirError::UnsupportedMediaType(format!(
            "PATCH takes application/json-patch+json (JSON Patch), application/fhir+json (FHIRPath Patch) or application/merge-patch+json, not '{content_type}'"
        ))),
    }
}

fn merge_patch(document: Value) -> Result<PatchDocument, FhirError> {
    if document.is_object() {
        Ok(PatchDocument::Merge(document))
    } else {
        Err(FhirError::invalid(Issue::error(
            "structure",
            "A merge patch is a JSON object (a partial resource)",
        )))
    }
}

pub async fn patch_instance(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let (resource_type, id) = path.into_inner();
    known_type(&resource_type)?;
    valid_id(&id)?;
    run(req, payload, state, access, resource_type, Target::Id(id)).await
}

pub async fn patch_conditional(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let resource_type = known_type(&path)?.to_string();
    let criteria = req.query_string().to_string();
    run(
        req,
        payload,
        state,
        access,
        resource_type,
        Target::Criteria(criteria),
    )
    .await
}

enum Target {
    Id(String),
    Criteria(String),
}

async fn run(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
    resource_type: String,
    target: Target,
) -> Result<HttpResponse, FhirError> {
    let grant = access.require(&resource_type, Permission::Update)?;
    let format = negotiate(&req)?;
    let expected_version = if_match(req.headers())?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let document = patch_document(&req, &body)?;
    let registry = state.registry.current();
    let ty = resource_type.clone();
    let audit = WriteAudit::of(&req, &access);
    let written = state
        .store
        .write(move |conn| {
            let id = match target {
                Target::Id(id) => id,
                Target::Criteria(criteria) => {
                    let limits = grant_conditions(conn, &registry, &ty, &grant)?;
                    let found = crate::service::conditional::matches_within(
                        conn, &registry, &ty, &criteria, &limits,
                    )?;
                    match found.as_slice() {
                        [one] => one.id.clone(),
                        [] => {
                            return Err(FhirError::NotFound(format!(
                                "No {ty} matches the criteria"
                            )));
                        }
                        _ => {
                            return Err(FhirError::PreconditionFailed(format!(
                                "The criteria match more than one {ty}"
                            )));
                        }
                    }
                }
            };
            if !visible(conn, &registry, &ty, &id, &grant)? {
                return Err(FhirError::NotFound(format!("{ty}/{id} is not known")));
            }
            let before = crate::store::resources::current(conn, &ty, &id)?.and_then(|c| c.content);
            let actor = Actor::of(&access);
            let written = patch(
                conn,
                &registry,
                &actor,
                &ty,
                &id,
                &document,
                expected_version,
            )?;
            let after: serde_json::Map<String, Value> = written
                .content
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok())
                .unwrap_or_default();
            crate::service::access::check_writable(
                conn,
                &registry,
                &ty,
                &grant,
                before.as_deref(),
                &after,
            )?;
            if !visible(conn, &registry, &ty, &id, &grant)? {
                return Err(FhirError::Forbidden(
                    "The resource would be outside the token's reach".into(),
                ));
            }
            audit.record(conn, "patch", &written)?;
            Ok(written)
        })
        .await?;
    WriteAudit::done(&req);
    tracing::info!(interaction = "patch", fhir.resource_type = %written.resource_type, fhir.id = %written.id, "patched");
    let builder = response::versioned(StatusCode::OK, written.version_id, written.last_updated);
    let message = format!(
        "Patched {}/{} to version {}",
        written.resource_type, written.id, written.version_id
    );
    Ok(response::write_body(
        builder,
        format,
        prefer_return(req.headers()),
        written.content.as_deref(),
        message,
    ))
}
