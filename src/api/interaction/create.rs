//! create: `POST [base]/[type]` (http.html#create).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::api::headers::{negotiate, prefer_return, read_body, require_json_body};
use crate::api::{AppState, known_type, response};
use crate::error::FhirError;
use crate::fhir::parse::parse_resource;
use crate::service;

pub async fn create(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let resource_type = known_type(&path)?.to_string();
    let format = negotiate(&req)?;
    require_json_body(&req)?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let resource = parse_resource(&body, Some(&resource_type))?;
    let registry = state.registry.clone();
    let written = state.store.write(move |conn| service::resources::create(conn, &registry, resource)).await?;
    tracing::info!(interaction = "create", fhir.resource_type = %written.resource_type, fhir.id = %written.id, "created");
    let location = format!("{}/{}/{}/_history/{}", state.fhir_base(&req), written.resource_type, written.id, written.version_id);
    let mut builder = response::versioned(StatusCode::CREATED, written.version_id, written.last_updated);
    builder.insert_header(("Location", location));
    let message = format!("Created {}/{} version {}", written.resource_type, written.id, written.version_id);
    Ok(response::write_body(builder, format, prefer_return(req.headers()), written.content.as_deref(), message))
}
