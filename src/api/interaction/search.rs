//! search: `GET [base]/[type]?`, `POST [base]/[type]/_search`, system search `GET [base]?`
//! and Patient compartment search `GET [base]/Patient/[id]/[type]?` (search.html, http.html#search).
//! The result is a `searchset` Bundle with `self`, `next` and `previous` links that page by key,
//! so pages stay correct while resources are written.

use crate::api::headers::{negotiate, query_pairs, read_body};
use crate::api::{AppState, known_type, valid_id};
use crate::auth::Access;
use crate::error::FhirError;
use crate::service::search::{SearchInput, execute};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

pub async fn search_type(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let resource_type = known_type(&path)?.to_string();
    let params = query_pairs(&req)?;
    run(req, state, access, Some(resource_type), params, None).await
}

/// `POST [type]/_search`: parameters in a form-encoded body and/or the query string.
pub async fn search_type_post(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let resource_type = known_type(&path)?.to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(FhirError::UnsupportedMediaType(
            "POST _search takes application/x-www-form-urlencoded parameters".into(),
        ));
    }
    let mut params = query_pairs(&req)?;
    let body = match read_body(&req, payload, state.max_body_bytes).await {
        Ok(body) => body,
        Err(FhirError::Invalid(_)) => web::Bytes::new(), // an empty body: no parameters
        Err(err) => return Err(err),
    };
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| FhirError::bad_request("The body is not form-urlencoded"))?;
    params.extend(form);
    run(req, state, access, Some(resource_type), params, None).await
}

pub async fn search_system(
    req: HttpRequest,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let params = query_pairs(&req)?;
    run(req, state, access, None, params, None).await
}

pub async fn search_compartment(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let (compartment, id, resource_type) = path.into_inner();
    if compartment != "Patient" {
        return Err(FhirError::NotFound(format!(
            "Compartment search is supported for Patient, not {compartment}"
        )));
    }
    valid_id(&id)?;
    known_type(&resource_type)?;
    let params = query_pairs(&req)?;
    run(req, state, access, Some(resource_type), params, Some(id)).await
}

fn strict_handling(req: &HttpRequest) -> bool {
    req.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.replace(' ', "").contains("handling=strict"))
}

async fn run(
    req: HttpRequest,
    state: web::Data<AppState>,
    access: Access,
    resource_type: Option<String>,
    params: Vec<(String, String)>,
    compartment_patient: Option<String>,
) -> Result<HttpResponse, FhirError> {
    let format = negotiate(&req)?;
    let params = crate::service::referrals::named_query(
        resource_type.as_deref(),
        params,
        state.referral_overdue_days,
        crate::fhir::instant::now_micros(),
    )?;
    let path = req.path().strip_prefix("/fhir").unwrap_or(req.path());
    let path = path.strip_suffix("/_search").unwrap_or(path).to_string();
    let input = SearchInput {
        resource_type,
        params,
        compartment_patient,
        strict: strict_handling(&req),
        base: state.fhir_base(&req),
        path,
        access,
    };
    let registry = state.registry.current();
    let bundle = state
        .store
        .read_point(move |conn| execute(conn, &registry, &input))
        .await?;
    Ok(HttpResponse::build(StatusCode::OK)
        .content_type(format.content_type)
        .body(crate::api::response::body_text(format, &bundle)))
}
