//! Conditional create, update and delete (http.html#ccreate, #cond-update, #cdelete): the
//! criteria are a search, evaluated inside the write transaction. Concurrent requests with the
//! same criteria are serialized (SQLite: by its single writer; PostgreSQL: by a transaction-level
//! advisory lock on the type and criteria), so 64 concurrent conditional creates make one resource.

use serde_json::{Map, Value};

use super::resources::{self, Written};
use super::write_effects::Actor;
use crate::error::FhirError;
use crate::fhir::outcome::Issue;
use crate::search::registry::Registry;
use crate::search::request::parse_request;
use crate::store::AnyConnection;
use crate::store::search::{Found, SearchSpec, search};
use crate::store::sql::{Sql, execute};

/// The current resources of `resource_type` matching `criteria` (a query string), at most two:
/// enough to tell none, one and several apart.
pub fn matches(
    conn: &mut AnyConnection,
    registry: &Registry,
    resource_type: &str,
    criteria: &str,
) -> Result<Vec<Found>, FhirError> {
    matches_within(conn, registry, resource_type, criteria, &[])
}

/// `matches`, among the resources that also satisfy `limits` (a token's scope conditions).
pub fn matches_within(
    conn: &mut AnyConnection,
    registry: &Registry,
    resource_type: &str,
    criteria: &str,
    limits: &[crate::search::query::Condition],
) -> Result<Vec<Found>, FhirError> {
    let criteria = criteria.trim_start_matches('?');
    let criteria = criteria
        .strip_prefix(&format!("{resource_type}?"))
        .unwrap_or(criteria);
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(criteria).map_err(|_| {
        FhirError::invalid(Issue::error(
            "invalid",
            "The conditional criteria are not a valid query string",
        ))
    })?;
    if pairs.is_empty() {
        return Err(FhirError::invalid(Issue::error(
            "required",
            "A conditional interaction needs search criteria",
        )));
    }
    // Criteria the server cannot evaluate must not be ignored: that would match too much.
    let request = parse_request(registry, resource_type, &pairs, true)?;
    if let crate::store::AnyConnection::Postgresql(_) = conn {
        let mut sorted = pairs.clone();
        sorted.sort();
        let key = format!(
            "{resource_type}?{}",
            serde_urlencoded::to_string(&sorted).unwrap_or_default()
        );
        let mut sql = Sql::default();
        sql.push("SELECT pg_advisory_xact_lock(hashtext(");
        sql.text(&key);
        sql.push("))");
        execute(conn, sql)?;
    }
    let mut conditions = request.conditions;
    conditions.extend(limits.iter().cloned());
    let spec = SearchSpec {
        types: vec![resource_type.to_string()],
        conditions,
        limit: 2,
        ..Default::default()
    };
    Ok(search(conn, &spec)?)
}

/// The outcome of a create that may have been conditional.
pub enum Created {
    New(Written),
    /// `If-None-Exist` matched this one resource; nothing was written.
    Existing(Found),
}

/// create, or conditional create when `if_none_exist` holds criteria.
pub fn create(
    conn: &mut AnyConnection,
    registry: &Registry,
    actor: &Actor,
    resource: Map<String, Value>,
    if_none_exist: Option<&str>,
) -> Result<Created, FhirError> {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(criteria) = if_none_exist {
        let mut found = matches(conn, registry, &resource_type, criteria)?;
        match found.len() {
            0 => {}
            1 => return Ok(Created::Existing(found.remove(0))),
            _ => {
                return Err(FhirError::PreconditionFailed(format!(
                    "If-None-Exist matches more than one {resource_type}"
                )));
            }
        }
    }
    resources::create(conn, registry, actor, resource).map(Created::New)
}

/// Conditional update: the one match is updated; no match creates (with the body's id, if any).
pub fn update(
    conn: &mut AnyConnection,
    registry: &Registry,
    actor: &Actor,
    criteria: &str,
    mut resource: Map<String, Value>,
    if_match: Option<i64>,
    limits: &[crate::search::query::Condition],
) -> Result<Written, FhirError> {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let body_id = resource
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let found = matches_within(conn, registry, &resource_type, criteria, limits)?;
    match found.as_slice() {
        [] => match body_id {
            Some(id) => {
                if crate::store::resources::current(conn, &resource_type, &id)?
                    .is_some_and(|c| c.deleted == 0)
                {
                    return Err(FhirError::Conflict(format!(
                        "{resource_type}/{id} exists but does not match the criteria"
                    )));
                }
                resources::update(conn, registry, actor, &id, resource, if_match, "PUT")
            }
            None => resources::create(conn, registry, actor, resource),
        },
        [one] => {
            if body_id.as_ref().is_some_and(|id| *id != one.id) {
                return Err(FhirError::invalid(
                    Issue::error("invalid", format!("The resource id does not match {resource_type}/{}, which the criteria select", one.id)).at(format!("{resource_type}.id")),
                ));
            }
            resource.insert("id".into(), Value::String(one.id.clone()));
            resources::update(conn, registry, actor, &one.id, resource, if_match, "PUT")
        }
        _ => Err(FhirError::PreconditionFailed(format!(
            "The criteria match more than one {resource_type}"
        ))),
    }
}

/// Conditional delete of at most one match; returns the deleted id and version.
pub fn delete(
    conn: &mut AnyConnection,
    registry: &Registry,
    actor: &Actor,
    resource_type: &str,
    criteria: &str,
    if_match: Option<i64>,
    limits: &[crate::search::query::Condition],
) -> Result<Option<(String, Written)>, FhirError> {
    let found = matches_within(conn, registry, resource_type, criteria, limits)?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => resources::delete(conn, registry, actor, resource_type, &one.id, if_match)
            .map(|w| w.map(|w| (one.id.clone(), w))),
        _ => Err(FhirError::PreconditionFailed(format!(
            "The criteria match more than one {resource_type}; nothing was deleted"
        ))),
    }
}
