//! `$reindex` (POST `[base]/$reindex` or `[base]/[type]/$reindex`): takes stored SearchParameter
//! resources into use and re-indexes existing resources with them, asynchronously. The answer is
//! 202 Accepted with `Content-Location` naming a job the client polls (`GET [base]/_job/[id]`:
//! 202 with `X-Progress` while it runs, 200 with an OperationOutcome when done) or cancels
//! (`DELETE`).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::api::headers::negotiate;
use crate::api::{AppState, known_type, response};
use crate::auth::Access;
use crate::error::FhirError;
use crate::fhir::outcome::{Issue, Severity, operation_outcome};
use crate::service::search_parameters::start_reindex;
use crate::store::jobs;

pub async fn reindex_all(
    req: HttpRequest,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    access.require_admin()?;
    start(req, state, Vec::new()).await
}

pub async fn reindex_type(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    access.require_admin()?;
    let resource_type = known_type(&path)?.to_string();
    start(req, state, vec![resource_type]).await
}

async fn start(
    req: HttpRequest,
    state: web::Data<AppState>,
    types: Vec<String>,
) -> Result<HttpResponse, FhirError> {
    let format = negotiate(&req)?;
    let id = start_reindex(&state.store, &state.registry, types).await?;
    tracing::info!(operation = "reindex", job = %id, "re-index queued");
    let outcome = operation_outcome(&[Issue::information(format!(
        "Re-index job {id} accepted; poll the Content-Location"
    ))]);
    let mut answer = response::json(StatusCode::ACCEPTED, format, &outcome);
    if let Ok(location) = actix_web::http::header::HeaderValue::from_str(&format!(
        "{}/_job/{id}",
        state.fhir_base(&req)
    )) {
        answer
            .headers_mut()
            .insert(actix_web::http::header::CONTENT_LOCATION, location);
    }
    Ok(answer)
}

pub async fn status(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    access.require_admin()?;
    let format = negotiate(&req)?;
    let id = path.into_inner();
    let lookup = id.clone();
    let Some(job) = state
        .store
        .read(move |conn| Ok::<_, FhirError>(jobs::find(conn, &lookup)?))
        .await?
        // exports have their own status URL
        .filter(|job| job.kind == "reindex")
    else {
        return Err(FhirError::NotFound(format!("No job {id}")));
    };
    let progress = format!("{} of {} resources", job.processed, job.total);
    Ok(match job.status.as_str() {
        "queued" | "running" => {
            let outcome =
                operation_outcome(&[Issue::information(format!("{} ({progress})", job.status))]);
            let mut answer = response::json(StatusCode::ACCEPTED, format, &outcome);
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&progress) {
                answer.headers_mut().insert(
                    actix_web::http::header::HeaderName::from_static("x-progress"),
                    value,
                );
            }
            answer.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("1"),
            );
            answer
        }
        "completed" => response::json(
            StatusCode::OK,
            format,
            &operation_outcome(&[Issue::information(job.message.unwrap_or(progress))]),
        ),
        other => {
            let issue = Issue {
                severity: Severity::Error,
                code: "incomplete",
                diagnostics: format!("The job is {other}: {}", job.message.unwrap_or_default()),
                expression: None,
            };
            response::json(StatusCode::OK, format, &operation_outcome(&[issue]))
        }
    })
}

pub async fn cancel(
    path: web::Path<String>,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    access.require_admin()?;
    let id = path.into_inner();
    let lookup = id.clone();
    let found = state
        .store
        .write(move |conn| {
            let Some(job) = jobs::find(conn, &lookup)?.filter(|job| job.kind == "reindex") else {
                return Ok::<_, FhirError>(false);
            };
            if job.status == "queued" || job.status == "running" {
                jobs::finish(
                    conn,
                    &lookup,
                    "cancelled",
                    Some("cancelled by a client".into()),
                )?;
            }
            Ok(true)
        })
        .await?;
    if !found {
        return Err(FhirError::NotFound(format!("No job {id}")));
    }
    Ok(HttpResponse::Accepted().finish())
}
