//! Request headers and parameters the FHIR REST API defines: content negotiation, `Prefer`,
//! `If-Match`, conditional reads, and the request body with its size limit.

use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;

use crate::error::FhirError;
use crate::fhir::parse_etag;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";
const JSON: &str = "application/json; charset=utf-8";

/// The response format chosen from `_format`, `Accept` and `_pretty`.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    pub content_type: &'static str,
    pub pretty: bool,
}

/// The query string as (name, value) pairs, percent-decoded.
pub fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, FhirError> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|_| FhirError::bad_request("The query string is not valid form-urlencoded text"))
}

fn query_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Chooses the response format: `_format` wins over `Accept` (http.html#mime-type). Only JSON is
/// produced; a request that accepts nothing else gets 406.
pub fn negotiate(req: &HttpRequest) -> Result<Format, FhirError> {
    let pairs = query_pairs(req)?;
    let pretty = query_value(&pairs, "_pretty") == Some("true");
    if let Some(format) = query_value(&pairs, "_format") {
        let media = format
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        return match media.as_str() {
            "json" | "application/fhir+json" | "application/json+fhir" => Ok(Format {
                content_type: FHIR_JSON,
                pretty,
            }),
            "application/json" => Ok(Format {
                content_type: JSON,
                pretty,
            }),
            _ => Err(FhirError::NotAcceptable(format!(
                "_format '{format}' is not supported; this server produces application/fhir+json"
            ))),
        };
    }
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(Format {
            content_type: FHIR_JSON,
            pretty,
        });
    };
    if accept.trim().is_empty() {
        return Ok(Format {
            content_type: FHIR_JSON,
            pretty,
        });
    }
    let mut best: Option<&'static str> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
        });
        if refused {
            continue;
        }
        match media.as_str() {
            "application/fhir+json" | "application/json+fhir" | "application/*" | "*/*" => {
                return Ok(Format {
                    content_type: FHIR_JSON,
                    pretty,
                });
            }
            "application/json" | "text/json" => best = best.or(Some(JSON)),
            _ => {}
        }
    }
    best.map(|content_type| Format { content_type, pretty }).ok_or_else(|| {
        FhirError::NotAcceptable(format!(
            "Accept '{accept}' names no format this server produces; it produces application/fhir+json"
        ))
    })
}

/// Checks that a request body is JSON: `application/fhir+json` or `application/json` (a missing
/// `Content-Type` is read as JSON). XML and anything else get 415.
pub fn require_json_body(req: &HttpRequest) -> Result<(), FhirError> {
    let Some(content_type) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let content_type = content_type.to_str().unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/fhir+json" | "application/json" | "application/json+fhir" | "" => Ok(()),
        _ => Err(FhirError::UnsupportedMediaType(format!(
            "Content-Type '{content_type}' is not supported; send application/fhir+json"
        ))),
    }
}

/// Reads the whole request body, refusing more than `limit` bytes with 413 without reading the
/// rest into memory.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, FhirError> {
    let too_large = || {
        FhirError::PayloadTooLarge(format!(
            "The request body is larger than the limit of {limit} bytes"
        ))
    };
    if let Some(length) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && length > limit
    {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|err| {
            FhirError::bad_request(format!("The request body could not be read: {err}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    if body.is_empty() {
        return Err(FhirError::bad_request("The request has no body"));
    }
    Ok(body.freeze())
}

/// What the client asked the server to return after a write (`Prefer: return=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    Minimal,
    Representation,
    OperationOutcome,
}

/// `Prefer: return=` (default: representation).
pub fn prefer_return(headers: &HeaderMap) -> Return {
    for value in headers.get_all("prefer").filter_map(|v| v.to_str().ok()) {
        for preference in value.split([',', ';']) {
            match preference.trim().replace(' ', "").as_str() {
                "return=minimal" => return Return::Minimal,
                "return=representation" => return Return::Representation,
                "return=OperationOutcome" => return Return::OperationOutcome,
                _ => {}
            }
        }
    }
    Return::Representation
}

/// The version named by `If-Match`, if any; a value that names no version is a 400.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, FhirError> {
    version_header(headers, "if-match")
}

/// The version named by `If-None-Match` (conditional read), if any. `*` is not a version.
pub fn if_none_match(headers: &HeaderMap) -> Option<i64> {
    headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_etag)
}

fn version_header(headers: &HeaderMap, name: &str) -> Result<Option<i64>, FhirError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(parse_etag)
            .map(Some)
            .ok_or_else(|| {
                FhirError::bad_request(format!("{name} must name a version, as in W/\"3\""))
            }),
    }
}
