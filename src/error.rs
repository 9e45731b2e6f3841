//! `FhirError`: the one place where failures become HTTP responses, always as an
//! OperationOutcome. 5xx causes are logged here and never sent to the client.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::fhir::outcome::{Issue, operation_outcome};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    /// The request is malformed: bad JSON, unknown element, bad parameter value (400).
    #[error("invalid request")]
    Invalid(Vec<Issue>),
    /// No valid bearer token (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The token does not allow this (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such resource or route (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The URL names a resource type this server does not know (404).
    #[error("unknown resource type: {0}")]
    UnknownType(String),
    /// The HTTP method is not allowed on this URL (405).
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    /// The `Accept` header or `_format` asks for a format the server does not produce (406).
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    /// The request conflicts with the current state (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The resource was deleted (410); the version of the deletion, if known.
    #[error("gone: {0}")]
    Gone(String, Option<i64>),
    /// `If-Match` named another version, or conditional criteria matched several resources (412).
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// The body is larger than the configured limit (413).
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    /// The body's media type is not one the server reads (415).
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// Well-formed but breaks a rule: profile, business rule (422).
    #[error("unprocessable")]
    Unprocessable(Vec<Issue>),
    /// The database cannot be reached or is overloaded (503).
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A fault of the server (500); the cause is logged, never sent.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

impl FhirError {
    pub fn invalid(issue: Issue) -> Self {
        FhirError::Invalid(vec![issue])
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        FhirError::invalid(Issue::error("invalid", message))
    }

    /// The issues of the OperationOutcome that describes this error.
    pub fn issues(&self) -> Vec<Issue> {
        match self {
            FhirError::Invalid(issues) | FhirError::Unprocessable(issues) => issues.clone(),
            FhirError::NotFound(message) => vec![Issue::error("not-found", message.clone())],
            FhirError::Unauthorized(message) => vec![Issue::error("login", message.clone())],
            FhirError::Forbidden(message) => vec![Issue::error("forbidden", message.clone())],
            FhirError::UnknownType(name) => {
                vec![Issue::error(
                    "not-supported",
                    format!("Unknown resource type '{name}'"),
                )]
            }
            FhirError::MethodNotAllowed(message)
            | FhirError::NotAcceptable(message)
            | FhirError::UnsupportedMediaType(message) => {
                vec![Issue::error("not-supported", message.clone())]
            }
            FhirError::Conflict(message) | FhirError::PreconditionFailed(message) => {
                vec![Issue::error("conflict", message.clone())]
            }
            FhirError::Gone(message, _) => vec![Issue::error("deleted", message.clone())],
            FhirError::PayloadTooLarge(message) => {
                vec![Issue::error("too-costly", message.clone())]
            }
            FhirError::Unavailable(_) => vec![Issue::error(
                "transient",
                "The database is unavailable; try again shortly",
            )],
            FhirError::Internal(_) => vec![Issue::error("exception", "Internal server error")],
        }
    }
}

impl From<StoreError> for FhirError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(message) => FhirError::Unavailable(message),
            StoreError::TimedOut(_) => FhirError::invalid(Issue::error(
                "too-costly",
                "The request ran longer than the server allows; narrow the search",
            )),
            StoreError::Backend(err) => FhirError::Internal(err.into()),
            StoreError::Other(err) => FhirError::Internal(err),
        }
    }
}

impl From<diesel::result::Error> for FhirError {
    fn from(err: diesel::result::Error) -> Self {
        StoreError::from(err).into()
    }
}

impl ResponseError for FhirError {
    fn status_code(&self) -> StatusCode {
        match self {
            FhirError::Invalid(_) => StatusCode::BAD_REQUEST,
            FhirError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            FhirError::Forbidden(_) => StatusCode::FORBIDDEN,
            FhirError::NotFound(_) | FhirError::UnknownType(_) => StatusCode::NOT_FOUND,
            FhirError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            FhirError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            FhirError::Conflict(_) => StatusCode::CONFLICT,
            FhirError::Gone(..) => StatusCode::GONE,
            FhirError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            FhirError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            FhirError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FhirError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            FhirError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            FhirError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            FhirError::Internal(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "internal error")
            }
            FhirError::Unavailable(cause) => tracing::warn!(error = %cause, "database unavailable"),
            _ => tracing::debug!(status = status.as_u16(), "request refused"),
        }
        let mut response = HttpResponse::build(status);
        response.content_type(crate::api::FHIR_JSON);
        if let FhirError::Gone(_, Some(version_id)) = self {
            response.insert_header(("ETag", crate::fhir::etag(*version_id)));
        }
        if let FhirError::Unauthorized(_) = self {
            response.insert_header((
                "WWW-Authenticate",
                "Bearer realm=\"pivot-fhir\", error=\"invalid_token\"",
            ));
        }
        if let FhirError::Unavailable(_) = self {
            response.insert_header(("Retry-After", "5"));
        }
        response.body(operation_outcome(&self.issues()).to_string())
    }
}
