//! Building FHIR responses: resource bodies with their version headers.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder};
use serde_json::Value;

use super::headers::{Format, Return};
use crate::fhir::etag;
use crate::fhir::instant::{Micros, format_http_date};
use crate::fhir::outcome::{Issue, operation_outcome};

/// The body text for `json` in the chosen format.
pub fn body_text(format: Format, json: &str) -> String {
    if format.pretty
        && let Ok(value) = serde_json::from_str::<Value>(json)
        && let Ok(pretty) = serde_json::to_string_pretty(&value)
    {
        return pretty;
    }
    json.to_string()
}

/// A JSON value as a response.
pub fn json(status: StatusCode, format: Format, value: &Value) -> HttpResponse {
    let text = if format.pretty {
        serde_json::to_string_pretty(value).unwrap_or_default()
    } else {
        value.to_string()
    };
    HttpResponse::build(status)
        .content_type(format.content_type)
        .body(text)
}

/// A response about one version of a resource, with `ETag` and `Last-Modified`.
pub fn versioned(status: StatusCode, version_id: i64, last_updated: Micros) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    builder
        .insert_header(("ETag", etag(version_id)))
        .insert_header(("Last-Modified", format_http_date(last_updated)));
    builder
}

/// The body after a write, per `Prefer: return=`.
pub fn write_body(
    mut builder: HttpResponseBuilder,
    format: Format,
    prefer: Return,
    content: Option<&str>,
    message: String,
) -> HttpResponse {
    match (prefer, content) {
        (Return::Minimal, _) => builder.finish(),
        (Return::Representation, Some(content)) => builder
            .content_type(format.content_type)
            .body(body_text(format, content)),
        _ => {
            let outcome = operation_outcome(&[Issue::information(message)]);
            let text = if format.pretty {
                serde_json::to_string_pretty(&outcome).unwrap_or_default()
            } else {
                outcome.to_string()
            };
            builder.content_type(format.content_type).body(text)
        }
    }
}
