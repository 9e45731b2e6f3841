//! Terminology operations on the value sets and code systems the server holds
//! (terminology-service.html): `ValueSet/$expand` (`filter`, `offset`, `count`),
//! `ValueSet/$validate-code` and `CodeSystem/$lookup`, at type level (by `url` / `system`) and,
//! for value sets, at instance level (a stored ValueSet, expanded with the code systems held).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::params::OperationParams;
use crate::api::headers::{negotiate, read_body, require_json_body};
use crate::api::{AppState, response, valid_id};
use crate::auth::Access;
use crate::auth::scopes::Permission;
use crate::error::FhirError;
use crate::fhir::instant::{format_instant, now_micros};
use crate::fhir::outcome::Issue;
use crate::service::access::visible;
use crate::store::resources as rows;
use crate::terminology::{ValueSet, expansion_resource, terminology};

/// The most codes one `$expand` page holds.
const MAX_COUNT: usize = 1_000;

pub async fn expand_type(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    access.require("ValueSet", Permission::Read)?;
    let params = params(&req, payload, &state).await?;
    let (resource, vs) = value_set_by_params(&params)?;
    expand(&req, &params, &resource, &vs)
}

pub async fn expand_instance(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let grant = access.require("ValueSet", Permission::Read)?;
    let params = params(&req, payload, &state).await?;
    let resource = stored_value_set(&state, path.into_inner(), grant).await?;
    let vs = terminology().value_set_of(&resource).ok_or_else(|| {
        FhirError::Unprocessable(vec![Issue::error(
            "not-supported",
            "The ValueSet has no url",
        )])
    })?;
    expand(&req, &params, &resource, &vs)
}

pub async fn validate_code_type(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    access.require("ValueSet", Permission::Read)?;
    let params = params(&req, payload, &state).await?;
    let (_, vs) = value_set_by_params(&params)?;
    validate_code(&req, &params, &vs)
}

pub async fn validate_code_instance(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let grant = access.require("ValueSet", Permission::Read)?;
    let params = params(&req, payload, &state).await?;
    let resource = stored_value_set(&state, path.into_inner(), grant).await?;
    let vs = terminology().value_set_of(&resource).ok_or_else(|| {
        FhirError::Unprocessable(vec![Issue::error(
            "not-supported",
            "The ValueSet has no url",
        )])
    })?;
    validate_code(&req, &params, &vs)
}

pub async fn lookup(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    access.require("CodeSystem", Permission::Read)?;
    let format = negotiate(&req)?;
    let params = params(&req, payload, &state).await?;
    let (system, code) = match params.value("coding") {
        Some(coding) => (
            coding["system"].as_str().map(str::to_string),
            coding["code"].as_str().map(str::to_string),
        ),
        None => (params.text("system"), params.text("code")),
    };
    let (Some(system), Some(code)) = (system, code) else {
        return Err(FhirError::invalid(Issue::error(
            "required",
            "$lookup needs system and code (or coding)",
        )));
    };
    let cs = terminology()
        .code_system(&system)
        .ok_or_else(|| FhirError::NotFound(format!("The code system {system} is not held here")))?;
    let concept = cs.concept(&code).ok_or_else(|| {
        FhirError::NotFound(format!(
            "The code '{code}' is not in the code system {system}"
        ))
    })?;
    let mut parameters = vec![
        json!({ "name": "name", "valueString": cs.name.clone().unwrap_or_else(|| system.clone()) }),
    ];
    if let Some(version) = &cs.version {
        parameters.push(json!({ "name": "version", "valueString": version }));
    }
    if let Some(display) = &concept.display {
        parameters.push(json!({ "name": "display", "valueString": display }));
    }
    if let Some(definition) = &concept.definition {
        parameters.push(json!({ "name": "definition", "valueString": definition }));
    }
    for property in &concept.properties {
        let mut part = vec![json!({ "name": "code", "valueCode": property["code"] })];
        if let Some((key, value)) = property
            .as_object()
            .and_then(|m| m.iter().find(|(k, _)| k.starts_with("value")))
        {
            part.push(json!({ "name": "value", key.clone(): value }));
        }
        parameters.push(json!({ "name": "property", "part": part }));
    }
    for child in &concept.children {
        parameters.push(json!({ "name": "property", "part": [
            { "name": "code", "valueCode": "child" },
            { "name": "value", "valueCode": child },
        ]}));
    }
    let answer = json!({ "resourceType": "Parameters", "parameter": parameters });
    Ok(response::json(StatusCode::OK, format, &answer))
}

fn expand(
    req: &HttpRequest,
    params: &OperationParams,
    resource: &Value,
    vs: &ValueSet,
) -> Result<HttpResponse, FhirError> {
    let format = negotiate(req)?;
    let offset = params.count("offset")?.unwrap_or(0);
    let count = params.count("count")?.map(|c| c.min(MAX_COUNT));
    let filter = params.text("filter");
    let expanded = expansion_resource(
        resource,
        vs,
        filter.as_deref(),
        offset,
        count,
        &format_instant(now_micros()),
    )
    .ok_or_else(|| {
        FhirError::Unprocessable(vec![Issue::error(
            "too-costly",
            format!(
                "{} draws on a code system this server does not hold in full, so it cannot be expanded",
                vs.url
            ),
        )])
    })?;
    Ok(response::json(StatusCode::OK, format, &expanded))
}

fn validate_code(
    req: &HttpRequest,
    params: &OperationParams,
    vs: &ValueSet,
) -> Result<HttpResponse, FhirError> {
    let format = negotiate(req)?;
    let mut candidates: Vec<(Option<String>, String, Option<String>)> = Vec::new();
    if let Some(code) = params.text("code") {
        candidates.push((params.text("system"), code, params.text("display")));
    }
    let codings: Vec<&Value> = match (params.value("coding"), params.value("codeableConcept")) {
        (Some(coding), _) => vec![coding],
        (None, Some(concept)) => concept["coding"].as_array().into_iter().flatten().collect(),
        _ => Vec::new(),
    };
    for coding in codings {
        if let Some(code) = coding["code"].as_str() {
            candidates.push((
                coding["system"].as_str().map(str::to_string),
                code.to_string(),
                coding["display"].as_str().map(str::to_string),
            ));
        }
    }
    if candidates.is_empty() {
        return Err(FhirError::invalid(Issue::error(
            "required",
            "$validate-code needs code (with system), coding or codeableConcept",
        )));
    }
    let mut parameters = Vec::new();
    let mut result = false;
    let mut message = None;
    for (system, code, display) in &candidates {
        match vs.contains(system.as_deref(), code) {
            None => {
                return Err(FhirError::Unprocessable(vec![Issue::error(
                    "too-costly",
                    format!(
                        "{} cannot be expanded here, so membership cannot be decided",
                        vs.url
                    ),
                )]));
            }
            Some(true) => {
                result = true;
                let known = vs.display(system.as_deref(), code).map(str::to_string);
                if let (Some(given), Some(known)) = (display, &known)
                    && !given.eq_ignore_ascii_case(known)
                {
                    message = Some(format!(
                        "The display '{given}' is not the display of {code}, '{known}'"
                    ));
                }
                if let Some(known) = known {
                    parameters.push(json!({ "name": "display", "valueString": known }));
                }
                break;
            }
            Some(false) => {
                message = Some(format!(
                    "{}{code} is not in the value set {}",
                    system
                        .as_deref()
                        .map(|s| format!("{s}|"))
                        .unwrap_or_default(),
                    vs.url
                ));
            }
        }
    }
    if result && message.as_deref().is_some_and(|m| m.contains("is not in")) {
        message = None;
    }
    parameters.insert(0, json!({ "name": "result", "valueBoolean": result }));
    if let Some(message) = message {
        parameters.push(json!({ "name": "message", "valueString": message }));
    }
    let answer = json!({ "resourceType": "Parameters", "parameter": parameters });
    Ok(response::json(StatusCode::OK, format, &answer))
}

/// The value set named by `url` (or given whole as `valueSet`).
fn value_set_by_params(params: &OperationParams) -> Result<(Value, ValueSet), FhirError> {
    if let Some(resource) = params.value("valueSet").filter(|v| v.is_object()) {
        let vs = terminology().value_set_of(resource).ok_or_else(|| {
            FhirError::invalid(Issue::error("required", "The valueSet has no url"))
        })?;
        return Ok((resource.clone(), vs));
    }
    let Some(url) = params.text("url") else {
        return Err(FhirError::invalid(Issue::error(
            "required",
            "Name the value set with url (or call the operation on a ValueSet instance)",
        )));
    };
    let vs = terminology()
        .value_set(&url)
        .cloned()
        .ok_or_else(|| FhirError::NotFound(format!("The value set {url} is not held here")))?;
    let resource = crate::fhir::profiles::artefacts_of("ValueSet")
        .into_iter()
        .find(|r| r["url"].as_str() == Some(vs.url.as_str()))
        .unwrap_or_else(
            || json!({ "resourceType": "ValueSet", "url": vs.url, "status": "active" }),
        );
    Ok((resource, vs))
}

async fn stored_value_set(
    state: &web::Data<AppState>,
    id: String,
    grant: crate::auth::Grant,
) -> Result<Value, FhirError> {
    valid_id(&id)?;
    let registry = state.registry.current();
    let target = id.clone();
    let row = state
        .store
        .read_point(move |conn| {
            if !grant.is_unlimited() && !visible(conn, &registry, "ValueSet", &target, &grant)? {
                return Ok(None);
            }
            Ok::<_, FhirError>(rows::current(conn, "ValueSet", &target)?)
        })
        .await?;
    row.and_then(|row| row.content)
        .and_then(|content| serde_json::from_str(&content).ok())
        .ok_or_else(|| FhirError::NotFound(format!("ValueSet/{id} is not known")))
}

/// The parameters of a GET (query) or POST (query and a Parameters body).
async fn params(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
) -> Result<OperationParams, FhirError> {
    if req.method() != actix_web::http::Method::POST {
        return OperationParams::read(req, None);
    }
    require_json_body(req)?;
    let body = read_body(req, payload, state.max_body_bytes).await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|err| FhirError::bad_request(format!("The body is not JSON: {err}")))?;
    if value["resourceType"] != "Parameters" {
        return Err(FhirError::bad_request(
            "The body of a POST must be a Parameters resource",
        ));
    }
    OperationParams::read(req, Some(&value))
}
