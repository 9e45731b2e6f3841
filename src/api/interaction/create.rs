//! create: `POST [base]/[type]` (http.html#create), and conditional create with
//! `If-None-Exist` (http.html#ccreate).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::api::audit::WriteAudit;
use crate::api::headers::{negotiate, prefer_return, read_body, require_json_body};
use crate::api::{AppState, known_type, response};
use crate::auth::Access;
use crate::auth::scopes::Permission;
use crate::error::FhirError;
use crate::fhir::parse::parse_resource;
use crate::service::access::visible;
use crate::service::conditional::{self, Created};
use crate::service::write_effects::Actor;

pub async fn create(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let resource_type = known_type(&path)?.to_string();
    let grant = access.require(&resource_type, Permission::Create)?;
    let format = negotiate(&req)?;
    require_json_body(&req)?;
    let if_none_exist = req
        .headers()
        .get("if-none-exist")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| FhirError::bad_request("If-None-Exist is not valid text"))?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let resource = parse_resource(&body, Some(&resource_type))?;
    let registry = state.registry.current();
    let audit = WriteAudit::of(&req, &access);
    let created = state
        .store
        .write(move |conn| {
            let created = conditional::create(
                conn,
                &registry,
                &Actor::of(&access),
                resource,
                if_none_exist.as_deref(),
            )?;
            if let Created::New(written) = &created {
                audit.record(conn, "create", written)?;
            }
            let (ty, id) = match &created {
                Created::New(w) => (w.resource_type.clone(), w.id.clone()),
                Created::Existing(f) => (f.resource_type.clone(), f.id.clone()),
            };
            if !visible(conn, &registry, &ty, &id, &grant)? {
                return Err(FhirError::Forbidden(
                    "The resource would be outside the token's reach".into(),
                ));
            }
            Ok(created)
        })
        .await?;
    if matches!(created, Created::New(_)) {
        WriteAudit::done(&req);
    }
    let base = state.fhir_base(&req);
    match created {
        Created::New(written) => {
            tracing::info!(interaction = "create", fhir.resource_type = %written.resource_type, fhir.id = %written.id, "created");
            let location = format!(
                "{base}/{}/{}/_history/{}",
                written.resource_type, written.id, written.version_id
            );
            let mut builder = response::versioned(
                StatusCode::CREATED,
                written.version_id,
                written.last_updated,
            );
            builder.insert_header(("Location", location));
            let message = format!(
                "Created {}/{} version {}",
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
        Created::Existing(found) => {
            let location = format!(
                "{base}/{}/{}/_history/{}",
                found.resource_type, found.id, found.version_id
            );
            let mut builder =
                response::versioned(StatusCode::OK, found.version_id, found.last_updated);
            builder.insert_header(("Location", location));
            let message = format!(
                "{}/{} already matches If-None-Exist; nothing was created",
                found.resource_type, found.id
            );
            Ok(response::write_body(
                builder,
                format,
                prefer_return(req.headers()),
                found.content.as_deref(),
                message,
            ))
        }
    }
}
