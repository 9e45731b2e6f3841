//! `Patient/[id]/$everything` (patient-operation-everything.html), GET or POST (a Parameters
//! body): the patient's whole record the token may read, as a `searchset` Bundle with `_since`,
//! `_type` and `_count` (paged by `next` links).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use super::params::OperationParams;
use crate::api::headers::{negotiate, read_body, require_json_body};
use crate::api::{AppState, response, valid_id};
use crate::auth::Access;
use crate::error::FhirError;
use crate::service::everything::{EverythingInput, everything};

pub async fn patient_everything(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let id = valid_id(&path)?.to_string();
    let format = negotiate(&req)?;
    let body: Option<Value> =
        if req.method() == actix_web::http::Method::POST {
            require_json_body(&req)?;
            match read_body(&req, payload, state.max_body_bytes).await {
                Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|_| {
                    FhirError::bad_request("The body must be a Parameters resource")
                })?),
                // an empty POST: no parameters
                Err(FhirError::Invalid(_)) => None,
                Err(err) => return Err(err),
            }
        } else {
            None
        };
    if let Some(body) = &body
        && body["resourceType"] != "Parameters"
    {
        return Err(FhirError::bad_request(
            "The body must be a Parameters resource",
        ));
    }
    let params = OperationParams::read(&req, body.as_ref())?;
    let pairs: Vec<(String, String)> = ["_since", "_type", "_count", "_cursor", "start", "end"]
        .iter()
        .flat_map(|name| {
            let mut values = params.texts(name);
            if values.is_empty()
                && let Some(text) = params.text(name)
            {
                values.push(text);
            }
            values.into_iter().map(|v| (name.to_string(), v))
        })
        .collect();
    let input = EverythingInput::parse(id, &pairs, state.fhir_base(&req), access)?;
    let registry = state.registry.current();
    let bundle = state
        .store
        .read(move |conn| everything(conn, &registry, &input))
        .await?;
    Ok(HttpResponse::build(StatusCode::OK)
        .content_type(format.content_type)
        .body(response::body_text(format, &bundle)))
}
