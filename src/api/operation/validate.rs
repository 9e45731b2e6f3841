//! `$validate` (resource-operation-validate.html): `POST [base]/[type]/$validate` and
//! `POST|GET [base]/[type]/[id]/$validate`, with `profile` and `mode` (create, update, delete).
//! The body is the resource itself or a Parameters resource with `resource`, `profile` and
//! `mode`. The answer is 200 with an OperationOutcome listing every issue found.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use super::params::OperationParams;
use crate::api::headers::{negotiate, read_body, require_json_body};
use crate::api::{AppState, known_type, response, valid_id};
use crate::auth::Access;
use crate::auth::scopes::Permission;
use crate::error::FhirError;
use crate::fhir::outcome::{Issue, operation_outcome};
use crate::service::access::visible;
use crate::store::resources as rows;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No mode: is the resource valid?
    Any,
    Create,
    Update,
    Delete,
}

pub async fn validate_type(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let resource_type = known_type(&path)?.to_string();
    access.require(&resource_type, Permission::Read)?;
    let format = negotiate(&req)?;
    require_json_body(&req)?;
    let body = read_body(&req, payload, state.max_body_bytes).await?;
    let (resource, params) = resource_and_params(&req, &body)?;
    let mode = mode_of(&params)?;
    if mode == Mode::Delete {
        return Err(FhirError::bad_request(
            "mode=delete needs an instance: POST [type]/[id]/$validate",
        ));
    }
    let Some(resource) = resource else {
        return Err(FhirError::bad_request(
            "Send the resource to validate as the body or as the Parameters' resource",
        ));
    };
    let mut issues = Vec::new();
    if mode == Mode::Update && resource.get("id").is_none() {
        issues.push(
            Issue::error("required", "A resource to update needs an id")
                .at(format!("{resource_type}.id")),
        );
    }
    issues.extend(check(&resource, &resource_type, &params, mode));
    Ok(response::json(
        StatusCode::OK,
        format,
        &operation_outcome(&issues),
    ))
}

pub async fn validate_instance(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let (resource_type, id) = path.into_inner();
    known_type(&resource_type)?;
    valid_id(&id)?;
    let grant = access.require(&resource_type, Permission::Read)?;
    let format = negotiate(&req)?;
    let body = if req.method() == actix_web::http::Method::POST
        && req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .is_none_or(|v| v.to_str().unwrap_or("0") != "0")
    {
        require_json_body(&req)?;
        Some(read_body(&req, payload, state.max_body_bytes).await?)
    } else {
        None
    };
    let (sent, params) = match &body {
        Some(body) => resource_and_params(&req, body)?,
        None => (None, OperationParams::read(&req, None)?),
    };
    let mode = mode_of(&params)?;
    let (ty, target) = (resource_type.clone(), id.clone());
    let registry = state.registry.current();
    let stored = state
        .store
        .read_point(move |conn| {
            if !grant.is_unlimited() && !visible(conn, &registry, &ty, &target, &grant)? {
                return Ok(None);
            }
            Ok::<_, FhirError>(rows::current(conn, &ty, &target)?)
        })
        .await?
        .and_then(|row| row.content)
        .and_then(|content| serde_json::from_str::<Value>(&content).ok());
    let mut issues = Vec::new();
    let resource = match (mode, sent, stored) {
        (Mode::Delete, _, None) | (Mode::Any | Mode::Update, None, None) => {
            return Err(FhirError::NotFound(format!(
                "{resource_type}/{id} is not known"
            )));
        }
        (Mode::Delete, _, Some(_)) => {
            // Deleting has no preconditions beyond existing (references are not enforced).
            issues.push(Issue::information(format!(
                "{resource_type}/{id} can be deleted"
            )));
            return Ok(response::json(
                StatusCode::OK,
                format,
                &operation_outcome(&issues),
            ));
        }
        (Mode::Create, _, _) => {
            return Err(FhirError::bad_request(
                "mode=create validates a new resource: POST [type]/$validate",
            ));
        }
        (_, Some(sent), _) => sent,
        (_, None, Some(stored)) => stored,
    };
    if mode == Mode::Update && resource.get("id").and_then(Value::as_str) != Some(id.as_str()) {
        issues.push(
            Issue::error(
                "invalid",
                format!("The resource's id must be {id}, the id in the URL"),
            )
            .at(format!("{resource_type}.id")),
        );
    }
    issues.extend(check(&resource, &resource_type, &params, mode));
    Ok(response::json(
        StatusCode::OK,
        format,
        &operation_outcome(&issues),
    ))
}

/// The structure check, then the validator, then (for create and update) the write rules.
fn check(
    resource: &Value,
    resource_type: &str,
    params: &OperationParams,
    mode: Mode,
) -> Vec<Issue> {
    let text = resource.to_string();
    let parsed = match crate::fhir::parse::parse_resource(text.as_bytes(), Some(resource_type)) {
        Ok(parsed) => parsed,
        Err(FhirError::Invalid(issues)) | Err(FhirError::Unprocessable(issues)) => return issues,
        Err(other) => return other.issues(),
    };
    let profiles = params.texts("profile");
    let mut issues = crate::validation::validator().validate(resource, &profiles);
    if matches!(mode, Mode::Create | Mode::Update) {
        issues.extend(crate::validation::required_profile_issue(&parsed));
    }
    issues
}

/// The resource (the body itself, or the Parameters' `resource`) and the parameters.
fn resource_and_params(
    req: &HttpRequest,
    body: &[u8],
) -> Result<(Option<Value>, OperationParams), FhirError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| FhirError::bad_request(format!("The body is not JSON: {err}")))?;
    if value["resourceType"] == "Parameters" {
        let params = OperationParams::read(req, Some(&value))?;
        let resource = params.value("resource").cloned();
        return Ok((resource, params));
    }
    Ok((Some(value), OperationParams::read(req, None)?))
}

fn mode_of(params: &OperationParams) -> Result<Mode, FhirError> {
    match params.text("mode").as_deref() {
        None => Ok(Mode::Any),
        Some("create") => Ok(Mode::Create),
        Some("update") => Ok(Mode::Update),
        Some("delete") => Ok(Mode::Delete),
        Some(other) => Err(FhirError::invalid(
            Issue::error(
                "value",
                format!("Unknown mode '{other}': use create, update or delete"),
            )
            .at("mode"),
        )),
    }
}
