//! Bulk Data `$export` (http://hl7.org/fhir/uv/bulkdata/export.html, STU2): kick-off at system
//! (`[base]/$export`), Patient (`[base]/Patient/$export`) and Group
//! (`[base]/Group/[id]/$export`) level with `Prefer: respond-async`, answered 202 with a
//! `Content-Location` to poll (`[base]/_export/[id]`: 202 with `X-Progress` while it runs, 200
//! with the manifest when done, `DELETE` cancels); the NDJSON files are served from
//! `[base]/_export/[id]/[type].ndjson`. Only the client that started an export, or an
//! administrator, may poll, download or cancel it; to others it does not exist.

use std::io::Read;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::params::OperationParams;
use crate::api::headers::{negotiate, read_body, require_json_body};
use crate::api::{AppState, response, valid_id};
use crate::auth::Access;
use crate::error::FhirError;
use crate::fhir::instant::format_http_date;
use crate::fhir::outcome::{Issue, Severity, operation_outcome};
use crate::service::export::{self, ExportConfig, KickOff, Level};
use crate::store::jobs::{self, Job};

/// Seconds a client should wait between polls.
const RETRY_AFTER_SECONDS: &str = "2";

pub async fn export_system(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    kick_off(req, payload, state, access, Level::System, None).await
}

pub async fn export_patients(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    kick_off(req, payload, state, access, Level::Patient, None).await
}

pub async fn export_group(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let group = valid_id(&path)?.to_string();
    kick_off(req, payload, state, access, Level::Group, Some(group)).await
}

async fn kick_off(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
    level: Level,
    group: Option<String>,
) -> Result<HttpResponse, FhirError> {
    let format = negotiate(&req)?;
    let asynchronous = req
        .headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split([',', ';']).any(|p| p.trim() == "respond-async"));
    if !asynchronous {
        return Err(FhirError::invalid(Issue::error(
            "invalid",
            "$export runs asynchronously: send the header Prefer: respond-async",
        )));
    }
    let body = if req.method() == actix_web::http::Method::POST {
        require_json_body(&req)?;
        match read_body(&req, payload, state.max_body_bytes).await {
            Ok(bytes) => {
                let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
                    FhirError::bad_request("The body must be a Parameters resource")
                })?;
                if value["resourceType"] != "Parameters" {
                    return Err(FhirError::bad_request(
                        "The body must be a Parameters resource",
                    ));
                }
                Some(value)
            }
            Err(FhirError::Invalid(_)) => None,
            Err(err) => return Err(err),
        }
    } else {
        None
    };
    let params = OperationParams::read(&req, body.as_ref())?;
    let mut pairs = Vec::new();
    for name in [
        "_outputFormat",
        "_since",
        "_type",
        "_typeFilter",
        "patient",
        "_elements",
        "includeAssociatedData",
        "_until",
    ] {
        let mut values = params.texts(name);
        if values.is_empty()
            && let Some(text) = params.text(name)
        {
            values.push(text);
        }
        if values.is_empty() && params.value(name).is_some() {
            // a non-text value (such as a patient reference): still a parameter given
            values.push(String::new());
        }
        pairs.extend(values.into_iter().map(|v| (name.to_string(), v)));
    }
    let kick_off = KickOff::from_pairs(&pairs);
    let fhir_base = state.fhir_base(&req);
    let path = req.path().strip_prefix("/fhir").unwrap_or(req.path());
    let request = if req.query_string().is_empty() {
        format!("{fhir_base}{path}")
    } else {
        format!("{fhir_base}{path}?{}", req.query_string())
    };
    let registry = state.registry.current();
    let id = state
        .store
        .write(move |conn| {
            export::start(
                conn,
                &registry,
                &access,
                level,
                group.as_deref(),
                &kick_off,
                request,
            )
        })
        .await?;
    tracing::info!(operation = "export", job = %id, "export queued");
    let outcome = operation_outcome(&[Issue::information(format!(
        "Export {id} accepted; poll the Content-Location"
    ))]);
    let mut answer = response::json(StatusCode::ACCEPTED, format, &outcome);
    if let Ok(location) = HeaderValue::from_str(&format!("{fhir_base}/_export/{id}")) {
        answer
            .headers_mut()
            .insert(header::CONTENT_LOCATION, location);
    }
    Ok(answer)
}

/// The export `id` if `access` may see it: its own client's, or any for an administrator.
async fn owned_job(state: &AppState, access: &Access, id: String) -> Result<Job, FhirError> {
    let lookup = id.clone();
    let job = state
        .store
        .read(move |conn| Ok::<_, FhirError>(jobs::find(conn, &lookup)?))
        .await?;
    match job {
        Some(job)
            if job.kind == export::KIND
                && job.status != "cancelled"
                && (job.owner.as_deref() == Some(access.client_id.as_str())
                    || access.require_admin().is_ok()) =>
        {
            Ok(job)
        }
        _ => Err(FhirError::NotFound(format!("No export {id}"))),
    }
}

pub async fn status(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    config: web::Data<ExportConfig>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let job = owned_job(&state, &access, path.into_inner()).await?;
    let params = export::parameters(&job)?;
    let format = negotiate(&req)?;
    match job.status.as_str() {
        "queued" | "running" => {
            let progress = if job.status == "queued" {
                "queued".to_string()
            } else {
                format!(
                    "{} of {} types done, {} resources",
                    job.cursor, job.total, job.processed
                )
            };
            let mut answer = HttpResponse::Accepted().finish();
            if let Ok(value) = HeaderValue::from_str(&progress) {
                answer
                    .headers_mut()
                    .insert(header::HeaderName::from_static("x-progress"), value);
            }
            answer.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
            Ok(answer)
        }
        "completed" => {
            let fhir_base = state.fhir_base(&req);
            let output: Vec<Value> = export::outputs(&job)
                .iter()
                .map(|o| {
                    json!({
                        "type": o.resource_type,
                        "url": format!("{fhir_base}/_export/{}/{}", job.id, export::file_name(&o.resource_type)),
                        "count": o.count,
                    })
                })
                .collect();
            let manifest = json!({
                "transactionTime": params.transaction_time,
                "request": params.request,
                "requiresAccessToken": true,
                "output": output,
                "error": [],
            });
            let retention = i64::try_from(config.retention.as_micros()).unwrap_or(i64::MAX);
            let mut answer =
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(if format.pretty {
                        serde_json::to_string_pretty(&manifest).unwrap_or_default()
                    } else {
                        manifest.to_string()
                    });
            if let Ok(value) =
                HeaderValue::from_str(&format_http_date(job.updated_at.saturating_add(retention)))
            {
                answer.headers_mut().insert(header::EXPIRES, value);
            }
            Ok(answer)
        }
        _ => {
            let issue = Issue {
                severity: Severity::Error,
                code: "exception",
                diagnostics: format!(
                    "The export failed: {}",
                    job.message.unwrap_or_else(|| "unknown cause".into())
                ),
                expression: None,
            };
            Ok(response::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                format,
                &operation_outcome(&[issue]),
            ))
        }
    }
}

pub async fn cancel(
    path: web::Path<String>,
    state: web::Data<AppState>,
    config: web::Data<ExportConfig>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let job = owned_job(&state, &access, path.into_inner()).await?;
    let id = job.id.clone();
    state
        .store
        .write(move |conn| {
            jobs::finish(
                conn,
                &id,
                "cancelled",
                Some("cancelled by the client".into()),
            )?;
            Ok::<_, FhirError>(())
        })
        .await?;
    // a worker still on it stops at its next lease renewal and deletes what it wrote since
    export::remove_files(&config.job_dir(&job.id));
    tracing::info!(job = %job.id, "export cancelled");
    let outcome = operation_outcome(&[Issue::information(format!(
        "Export {} cancelled; its files are deleted",
        job.id
    ))]);
    Ok(response::json(
        StatusCode::ACCEPTED,
        crate::api::headers::Format {
            content_type: crate::api::FHIR_JSON,
            pretty: false,
        },
        &outcome,
    ))
}

pub async fn file(
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    config: web::Data<ExportConfig>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let (id, name) = path.into_inner();
    let job = owned_job(&state, &access, id).await?;
    let listed = job.status == "completed"
        && export::outputs(&job)
            .iter()
            .any(|o| export::file_name(&o.resource_type) == name);
    if !listed {
        return Err(FhirError::NotFound(format!(
            "No file {name} in this export"
        )));
    }
    let path = config.job_dir(&job.id).join(&name);
    let file = std::fs::File::open(&path)
        .map_err(|_| FhirError::NotFound(format!("No file {name} in this export")))?;
    // read in chunks on the blocking pool, so a large file neither fills memory nor holds a
    // worker thread
    let stream = futures_util::stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let read = actix_web::rt::task::spawn_blocking(move || {
            let mut buffer = vec![0u8; 256 * 1024];
            let n = file.read(&mut buffer)?;
            buffer.truncate(n);
            Ok::<_, std::io::Error>((file, buffer))
        })
        .await;
        match read {
            Ok(Ok((_, buffer))) if buffer.is_empty() => None,
            Ok(Ok((file, buffer))) => Some((Ok(web::Bytes::from(buffer)), Some(file))),
            Ok(Err(err)) => Some((Err(err), None)),
            Err(err) => Some((Err(std::io::Error::other(err.to_string())), None)),
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/fhir+ndjson")
        .streaming(stream))
}
