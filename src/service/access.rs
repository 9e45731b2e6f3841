//! Scope limits as search conditions: a `patient/` scope confines every query to the patient's
//! compartment and a query-constrained scope to its query, inside the SQL, so what a token may
//! not see is never read (and answers like a resource that does not exist).

use serde_json::{Map, Value};

use crate::auth::Grant;
use crate::auth::policy::{Policy, Role, substitute};
use crate::error::FhirError;
use crate::search::query::Condition;
use crate::search::registry::Registry;
use crate::search::request::{parse_request, patient_compartment};
use crate::store::AnyConnection;
use crate::store::search::{SearchSpec, search};

/// The program role of a token's user: the first role whose `fhirUser` search matches.
fn role_of<'p>(
    conn: &mut AnyConnection,
    registry: &Registry,
    policy: &'p Policy,
    fhir_user: &str,
) -> Result<Option<&'p Role>, FhirError> {
    for role in &policy.roles {
        let user_search = substitute(&role.fhir_user, fhir_user);
        let Some((resource_type, criteria)) = user_search.split_once('?') else {
            continue;
        };
        if !fhir_user.starts_with(&format!("{resource_type}/")) {
            continue;
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(criteria).unwrap_or_default();
        let Ok(request) = parse_request(registry, resource_type, &pairs, true) else {
            continue;
        };
        let spec = SearchSpec {
            types: vec![resource_type.to_string()],
            conditions: request.conditions,
            limit: 1,
            ..Default::default()
        };
        if !search(conn, &spec)?.is_empty() {
            return Ok(Some(role));
        }
    }
    Ok(None)
}

/// The elements a token's program role may change in a `resource_type` (`None`: no limit).
pub fn writable_elements(
    conn: &mut AnyConnection,
    registry: &Registry,
    resource_type: &str,
    grant: &Grant,
) -> Result<Option<Vec<String>>, FhirError> {
    let Some((fhir_user, policy)) = &grant.fhir_user else {
        return Ok(None);
    };
    Ok(role_of(conn, registry, policy, fhir_user)?
        .and_then(|role| role.writable_elements.get(resource_type).cloned()))
}

/// Refuses an update that changes elements the token's role may not change.
pub fn check_writable(
    conn: &mut AnyConnection,
    registry: &Registry,
    resource_type: &str,
    grant: &Grant,
    before: Option<&str>,
    after: &Map<String, Value>,
) -> Result<(), FhirError> {
    let Some(allowed) = writable_elements(conn, registry, resource_type, grant)? else {
        return Ok(());
    };
    let before: Map<String, Value> = before
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|key| {
            !matches!(key.as_str(), "resourceType" | "id")
                && !allowed.iter().any(|a| a == key.trim_start_matches('_'))
        })
        .filter(|key| before.get(*key) != after.get(*key))
        .collect();
    match changed.first() {
        None => Ok(()),
        Some(key) => Err(FhirError::Forbidden(format!(
            "This role may change only {} of a {resource_type}, not '{key}'",
            allowed.join(", ")
        ))),
    }
}

/// The conditions a grant adds to every query on `resource_type`.
pub fn grant_conditions(
    conn: &mut AnyConnection,
    registry: &Registry,
    resource_type: &str,
    grant: &Grant,
) -> Result<Vec<Condition>, FhirError> {
    let mut conditions = Vec::new();
    if let Some((fhir_user, policy)) = &grant.fhir_user
        && let Some(role) = role_of(conn, registry, policy, fhir_user)?
    {
        let reach = role
            .reach
            .get(resource_type)
            .or_else(|| role.reach.get("*"));
        match reach {
            None => conditions.push(Condition::AnyOf(Vec::new())),
            Some(query) if query.is_empty() => {}
            Some(query) => {
                let pairs: Vec<(String, String)> =
                    serde_urlencoded::from_str(&substitute(query, fhir_user)).unwrap_or_default();
                match parse_request(registry, resource_type, &pairs, true) {
                    Ok(request) => conditions.push(Condition::AllOf(request.conditions)),
                    // the role's search does not apply to this type: nothing of it is in reach
                    Err(_) => conditions.push(Condition::AnyOf(Vec::new())),
                }
            }
        }
    }
    if let Some(patient) = &grant.patient {
        // A type outside the Patient compartment has nothing a patient/ scope can reach.
        conditions.push(
            patient_compartment(registry, resource_type, patient)
                .unwrap_or(Condition::AnyOf(Vec::new())),
        );
    }
    if !grant.queries.is_empty() {
        let mut alternatives = Vec::new();
        for query in &grant.queries {
            let request = parse_request(registry, resource_type, query, true).map_err(|_| {
                FhirError::Forbidden(format!(
                    "The token's scope query for {resource_type} cannot be evaluated"
                ))
            })?;
            alternatives.push(Condition::AllOf(request.conditions));
        }
        conditions.push(Condition::AnyOf(alternatives));
    }
    Ok(conditions)
}

/// Whether the current resource `resource_type/id` is within `grant`.
pub fn visible(
    conn: &mut AnyConnection,
    registry: &Registry,
    resource_type: &str,
    id: &str,
    grant: &Grant,
) -> Result<bool, FhirError> {
    if grant.is_unlimited() {
        return Ok(true);
    }
    let mut conditions = vec![Condition::Id(vec![id.to_string()])];
    conditions.extend(grant_conditions(conn, registry, resource_type, grant)?);
    let spec = SearchSpec {
        types: vec![resource_type.to_string()],
        conditions,
        limit: 1,
        ..Default::default()
    };
    Ok(!search(conn, &spec)?.is_empty())
}
