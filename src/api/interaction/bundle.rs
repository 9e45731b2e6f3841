//! batch/transaction: `POST [base]` with a Bundle (http.html#transaction).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use crate::api::audit::WriteAudit;
use crate::api::headers::{Return, negotiate, prefer_return, read_body, require_json_body};
use crate::api::{AppState, response};
use crate::auth::Access;
use crate::error::FhirError;
use crate::fhir::outcome::Issue;
use crate::fhir::parse::parse_resource;
use crate::service::bundle::{self, Representation};

pub async fn batch_or_transaction(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let format = negotiate(&req)?;
    require_json_body(&req)?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let parsed = parse_resource(&body, Some("Bundle"))?;
    let kind = parsed
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind != "transaction" && kind != "batch" {
        return Err(FhirError::invalid(
            Issue::error(
                "value",
                format!("POST to the base takes a transaction or batch Bundle, not '{kind}'"),
            )
            .at("Bundle.type"),
        ));
    }
    crate::api::audit::interaction_is(
        &req,
        if kind == "transaction" {
            "transaction"
        } else {
            "batch"
        },
    );
    let entries = bundle::parse_entries(&parsed, state.max_bundle_entries)?;
    drop(parsed);
    let representation = match prefer_return(req.headers()) {
        Return::Minimal => Representation::Minimal,
        Return::Representation => Representation::Full,
        Return::OperationOutcome => Representation::Outcome,
    };
    let base = state.fhir_base(&req);
    let registry = state.registry.current();
    let count = entries.len();
    let text = if kind == "transaction" {
        let transaction_base = base.clone();
        let audit = WriteAudit::of(&req, &access);
        let requests: Vec<(bundle::Method, String)> =
            entries.iter().map(|e| (e.method, e.url.clone())).collect();
        let responses = state
            .store
            .write_alone(move |conn| {
                let responses = bundle::transaction(
                    conn,
                    &registry,
                    &transaction_base,
                    entries,
                    representation,
                    &access,
                )?;
                audit.record_transaction(conn, &requests, &responses)?;
                Ok::<_, FhirError>(responses)
            })
            .await?;
        WriteAudit::done(&req);
        tracing::info!(
            interaction = "transaction",
            entries = count,
            "transaction committed"
        );
        bundle::response_bundle("transaction-response", &base, &responses)
    } else {
        let mut responses = Vec::with_capacity(count);
        let audit = WriteAudit::of(&req, &access);
        for entry in entries {
            let (registry, entry_base, entry_access, audit) = (
                registry.clone(),
                base.clone(),
                access.clone(),
                audit.clone(),
            );
            let result = state
                .store
                .write(move |conn| {
                    let response = bundle::batch_entry(
                        conn,
                        &registry,
                        &entry_base,
                        &entry,
                        representation,
                        &entry_access,
                    )
                    .map_err(|e| bundle::at_entry(e, entry.index))?;
                    audit.record_entries(
                        conn,
                        &[(entry.method, entry.url.clone())],
                        std::slice::from_ref(&response),
                    )?;
                    Ok::<_, FhirError>(response)
                })
                .await;
            responses.push(result.unwrap_or_else(|err| bundle::failed_entry(&err)));
        }
        tracing::info!(interaction = "batch", entries = count, "batch processed");
        bundle::response_bundle("batch-response", &base, &responses)
    };
    Ok(HttpResponse::build(StatusCode::OK)
        .content_type(format.content_type)
        .body(response::body_text(format, &text)))
}
