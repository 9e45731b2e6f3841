//! delete: `DELETE [base]/[type]/[id]` (http.html#delete). The history is kept; a read then
//! answers 410 Gone. Deleting what does not exist succeeds and changes nothing.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::api::audit::WriteAudit;
use crate::api::headers::{Return, if_match, negotiate, prefer_return};
use crate::api::{AppState, known_type, response, valid_id};
use crate::auth::Access;
use crate::auth::scopes::Permission;
use crate::error::FhirError;
use crate::service::access::visible;
use crate::service::write_effects::Actor;

pub async fn delete(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let (resource_type, id) = path.into_inner();
    known_type(&resource_type)?;
    let grant = access.require(&resource_type, Permission::Delete)?;
    valid_id(&id)?;
    let format = negotiate(&req)?;
    let expected_version = if_match(req.headers())?;
    let (ty, target) = (resource_type.clone(), id.clone());
    let registry = state.registry.current();
    let audit = WriteAudit::of(&req, &access);
    let deleted = state
        .store
        .write(move |conn| {
            if !visible(conn, &registry, &ty, &target, &grant)? {
                return Ok(None); // outside the token's reach: as if it did not exist
            }
            let actor = Actor::of(&access);
            let deleted = crate::service::resources::delete(
                conn,
                &registry,
                &actor,
                &ty,
                &target,
                expected_version,
            )?;
            if let Some(written) = &deleted {
                audit.record(conn, "delete", written)?;
            }
            Ok::<_, FhirError>(deleted)
        })
        .await?;
    WriteAudit::done(&req);
    let prefer = match prefer_return(req.headers()) {
        Return::Minimal => Return::Minimal,
        _ => Return::OperationOutcome,
    };
    Ok(match deleted {
        Some(written) => {
            tracing::info!(interaction = "delete", fhir.resource_type = %resource_type, fhir.id = %id, "deleted");
            let status = if prefer == Return::Minimal {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::OK
            };
            let builder = response::versioned(status, written.version_id, written.last_updated);
            let message = format!(
                "Deleted {resource_type}/{id}; the deletion is version {}",
                written.version_id
            );
            response::write_body(builder, format, prefer, None, message)
        }
        None => {
            let status = if prefer == Return::Minimal {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::OK
            };
            let message = format!(
                "{resource_type}/{id} does not exist or is already deleted; nothing changed"
            );
            response::write_body(HttpResponse::build(status), format, prefer, None, message)
        }
    })
}

/// Conditional delete: `DELETE [base]/[type]?criteria` (http.html#cdelete); one match at most.
pub async fn conditional_delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let resource_type = known_type(&path)?.to_string();
    let grant = access.require(&resource_type, Permission::Delete)?;
    let format = negotiate(&req)?;
    let expected_version = if_match(req.headers())?;
    let criteria = req.query_string().to_string();
    let registry = state.registry.current();
    let ty = resource_type.clone();
    let audit = WriteAudit::of(&req, &access);
    let deleted = state
        .store
        .write(move |conn| {
            let limits = crate::service::access::grant_conditions(conn, &registry, &ty, &grant)?;
            let deleted = crate::service::conditional::delete(
                conn,
                &registry,
                &Actor::of(&access),
                &ty,
                &criteria,
                expected_version,
                &limits,
            )?;
            if let Some((_, written)) = &deleted {
                audit.record(conn, "delete", written)?;
            }
            Ok::<_, FhirError>(deleted)
        })
        .await?;
    WriteAudit::done(&req);
    let prefer = match prefer_return(req.headers()) {
        Return::Minimal => Return::Minimal,
        _ => Return::OperationOutcome,
    };
    let status = if prefer == Return::Minimal {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::OK
    };
    Ok(match deleted {
        Some((id, written)) => {
            tracing::info!(interaction = "conditional-delete", fhir.resource_type = %resource_type, fhir.id = %id, "deleted");
            let builder = response::versioned(status, written.version_id, written.last_updated);
            response::write_body(
                builder,
                format,
                prefer,
                None,
                format!("Deleted {resource_type}/{id}"),
            )
        }
        None => response::write_body(
            HttpResponse::build(status),
            format,
            prefer,
            None,
            format!("No {resource_type} matches; nothing was deleted"),
        ),
    })
}
