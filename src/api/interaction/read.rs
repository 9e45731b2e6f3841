//! read `GET [base]/[type]/[id]` and vread `GET [base]/[type]/[id]/_history/[vid]`
//! (http.html#read, #vread), with conditional reads by `If-None-Match` and `If-Modified-Since`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::api::headers::{Format, if_none_match, negotiate};
use crate::api::{AppState, known_type, response, valid_id};
use crate::auth::Access;
use crate::auth::scopes::Permission;
use crate::error::FhirError;
use crate::fhir::instant::{Micros, parse_http_date};
use crate::service::access::visible;
use crate::store::resources as rows;

pub async fn read(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let (resource_type, id) = path.into_inner();
    known_type(&resource_type)?;
    valid_id(&id)?;
    let grant = access.require(&resource_type, Permission::Read)?;
    let format = negotiate(&req)?;
    let (ty, target) = (resource_type.clone(), id.clone());
    let registry = state.registry.current();
    let current = state
        .store
        .read_point(move |conn| {
            // Outside the token's reach reads exactly like a resource that does not exist.
            if !grant.is_unlimited() && !visible(conn, &registry, &ty, &target, &grant)? {
                return Ok(None);
            }
            let mut row = rows::current(conn, &ty, &target)?;
            // attribution Groups show their members from the attribution table
            if ty == "Group"
                && let Some(row) = row.as_mut()
                && let Some(content) = &row.content
            {
                row.content = Some(crate::service::attribution::complete_group(conn, content)?);
            }
            Ok::<_, FhirError>(row)
        })
        .await?;
    let Some(current) = current else {
        return Err(FhirError::NotFound(format!(
            "{resource_type}/{id} is not known"
        )));
    };
    let Some(content) = current.content else {
        return Err(FhirError::Gone(
            format!("{resource_type}/{id} was deleted"),
            Some(current.version_id),
        ));
    };
    Ok(resource_response(
        &req,
        format,
        &content,
        current.version_id,
        current.last_updated,
    ))
}

pub async fn vread(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let (resource_type, id, version) = path.into_inner();
    known_type(&resource_type)?;
    valid_id(&id)?;
    let grant = access.require(&resource_type, Permission::Read)?;
    let format = negotiate(&req)?;
    let Ok(version_id) = version.parse::<i64>() else {
        return Err(FhirError::NotFound(format!(
            "{resource_type}/{id} has no version '{version}'"
        )));
    };
    let (ty, target) = (resource_type.clone(), id.clone());
    let registry = state.registry.current();
    let row = state
        .store
        .read_point(move |conn| {
            if !grant.is_unlimited() && !visible(conn, &registry, &ty, &target, &grant)? {
                return Ok(None);
            }
            Ok::<_, FhirError>(rows::version(conn, &ty, &target, version_id)?)
        })
        .await?;
    let Some(row) = row else {
        return Err(FhirError::NotFound(format!(
            "{resource_type}/{id} has no version {version_id}"
        )));
    };
    let Some(content) = row.content else {
        return Err(FhirError::Gone(
            format!("Version {version_id} of {resource_type}/{id} is its deletion"),
            Some(version_id),
        ));
    };
    Ok(resource_response(
        &req,
        format,
        &content,
        row.version_id,
        row.last_updated,
    ))
}

fn resource_response(
    req: &HttpRequest,
    format: Format,
    content: &str,
    version_id: i64,
    last_updated: Micros,
) -> HttpResponse {
    if not_modified(req.headers(), version_id, last_updated) {
        return response::versioned(StatusCode::NOT_MODIFIED, version_id, last_updated).finish();
    }
    let mut builder = response::versioned(StatusCode::OK, version_id, last_updated);
    builder.content_type(format.content_type);
    if req.method() == actix_web::http::Method::HEAD {
        return builder.finish();
    }
    builder.body(response::body_text(format, content))
}

/// Conditional read: `If-None-Match` naming the current version, or `If-Modified-Since` not
/// older than the last change (HTTP dates have whole seconds).
fn not_modified(headers: &HeaderMap, version_id: i64, last_updated: Micros) -> bool {
    if headers.contains_key(header::IF_NONE_MATCH) {
        return if_none_match(headers) == Some(version_id);
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .is_some_and(|since| last_updated.div_euclid(1_000_000) * 1_000_000 <= since)
}
