//! update: `PUT [base]/[type]/[id]`, including update-as-create with the client's id
//! (http.html#update).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use crate::api::audit::WriteAudit;
use crate::api::headers::{if_match, negotiate, prefer_return, read_body, require_json_body};
use crate::api::{AppState, known_type, response, valid_id};
use crate::auth::Access;
use crate::auth::scopes::Permission;
use crate::error::FhirError;
use crate::fhir::outcome::Issue;
use crate::fhir::parse::parse_resource;
use crate::service;
use crate::service::access::visible;
use crate::service::write_effects::Actor;
use crate::store::resources as rows;

pub async fn update(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let (resource_type, id) = path.into_inner();
    known_type(&resource_type)?;
    let grant = access.require(&resource_type, Permission::Update)?;
    valid_id(&id)?;
    let format = negotiate(&req)?;
    require_json_body(&req)?;
    let expected_version = if_match(req.headers())?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let resource = parse_resource(&body, Some(&resource_type))?;
    match resource.get("id") {
        Some(Value::String(body_id)) if *body_id == id => {}
        Some(_) => {
            return Err(FhirError::invalid(
                Issue::error(
                    "invalid",
                    format!("The resource id does not match the URL id '{id}'"),
                )
                .at(format!("{resource_type}.id")),
            ));
        }
        None => {
            return Err(FhirError::invalid(
                Issue::error(
                    "required",
                    "An updated resource must carry the id of the URL",
                )
                .at(format!("{resource_type}.id")),
            ));
        }
    }
    let registry = state.registry.current();
    let ty = resource_type.clone();
    let audit = WriteAudit::of(&req, &access);
    let written = state
        .store
        .write(move |conn| {
            // Neither the version replaced nor the new one may be outside the token's reach.
            let before = rows::current(conn, &ty, &id)?.filter(|c| c.deleted == 0);
            if before.is_some() && !visible(conn, &registry, &ty, &id, &grant)? {
                return Err(FhirError::NotFound(format!("{ty}/{id} is not known")));
            }
            crate::service::access::check_writable(
                conn,
                &registry,
                &ty,
                &grant,
                before.and_then(|c| c.content).as_deref(),
                &resource,
            )?;
            let written = service::resources::update(
                conn,
                &registry,
                &Actor::of(&access),
                &id,
                resource,
                expected_version,
                "PUT",
            )?;
            if !visible(conn, &registry, &ty, &id, &grant)? {
                return Err(FhirError::Forbidden(
                    "The resource would be outside the token's reach".into(),
                ));
            }
            audit.record(conn, "update", &written)?;
            Ok(written)
        })
        .await?;
    WriteAudit::done(&req);
    tracing::info!(interaction = "update", fhir.resource_type = %written.resource_type, fhir.id = %written.id, "updated");
    Ok(answer(&req, &state, format, &written))
}

/// Conditional update: `PUT [base]/[type]?criteria` (http.html#cond-update).
pub async fn conditional_update(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let resource_type = known_type(&path)?.to_string();
    let grant = access.require(&resource_type, Permission::Update)?;
    let format = negotiate(&req)?;
    require_json_body(&req)?;
    let expected_version = if_match(req.headers())?;
    let criteria = req.query_string().to_string();
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let resource = parse_resource(&body, Some(&resource_type))?;
    let registry = state.registry.current();
    let resource_type_in = resource_type.clone();
    let audit = WriteAudit::of(&req, &access);
    let written = state
        .store
        .write(move |conn| {
            let resource_type = resource_type_in;
            let limits =
                crate::service::access::grant_conditions(conn, &registry, &resource_type, &grant)?;
            let written = crate::service::conditional::update(
                conn,
                &registry,
                &Actor::of(&access),
                &criteria,
                resource,
                expected_version,
                &limits,
            )?;
            if !visible(conn, &registry, &written.resource_type, &written.id, &grant)? {
                return Err(FhirError::Forbidden(
                    "The resource would be outside the token's reach".into(),
                ));
            }
            audit.record(conn, "update", &written)?;
            Ok(written)
        })
        .await?;
    WriteAudit::done(&req);
    tracing::info!(interaction = "conditional-update", fhir.resource_type = %written.resource_type, fhir.id = %written.id, "updated");
    Ok(answer(&req, &state, format, &written))
}

/// The answer to an update: 201 when it created the resource, else 200, with `Location`.
fn answer(
    req: &HttpRequest,
    state: &AppState,
    format: crate::api::headers::Format,
    written: &service::resources::Written,
) -> HttpResponse {
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut builder = response::versioned(status, written.version_id, written.last_updated);
    builder.insert_header((
        "Location",
        format!(
            "{}/{}/{}/_history/{}",
            state.fhir_base(req),
            written.resource_type,
            written.id,
            written.version_id
        ),
    ));
    let message = format!(
        "Wrote {}/{} version {}",
        written.resource_type, written.id, written.version_id
    );
    response::write_body(
        builder,
        format,
        prefer_return(req.headers()),
        written.content.as_deref(),
        message,
    )
}
