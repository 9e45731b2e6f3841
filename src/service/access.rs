//! Scope limits as search conditions: a `patient/` scope confines every query to the patient's
//! compartment and a query-constrained scope to its query, inside the SQL, so what a token may
//! not see is never read (and answers like a resource that does not exist).

use crate::auth::Grant;
use crate::error::FhirError;
use crate::search::query::Condition;
use crate::search::registry::Registry;
use crate::search::request::{parse_request, patient_compartment};
use crate::store::AnyConnection;
use crate::store::search::{SearchSpec, search};

/// The conditions a grant adds to every query on `resource_type`.
pub fn grant_conditions(registry: &Registry, resource_type: &str, grant: &Grant) -> Result<Vec<Condition>, FhirError> {
    let mut conditions = Vec::new();
    if let Some(patient) = &grant.patient {
        // A type outside the Patient compartment has nothing a patient/ scope can reach.
        conditions.push(patient_compartment(registry, resource_type, patient).unwrap_or(Condition::AnyOf(Vec::new())));
    }
    if !grant.queries.is_empty() {
        let mut alternatives = Vec::new();
        for query in &grant.queries {
            let request = parse_request(registry, resource_type, query, true)
                .map_err(|_| FhirError::Forbidden(format!("The token's scope query for {resource_type} cannot be evaluated")))?;
            alternatives.push(Condition::AllOf(request.conditions));
        }
        conditions.push(Condition::AnyOf(alternatives));
    }
    Ok(conditions)
}

/// Whether the current resource `resource_type/id` is within `grant`.
pub fn visible(conn: &mut AnyConnection, registry: &Registry, resource_type: &str, id: &str, grant: &Grant) -> Result<bool, FhirError> {
    if grant.is_unlimited() {
        return Ok(true);
    }
    let mut conditions = vec![Condition::Id(vec![id.to_string()])];
    conditions.extend(grant_conditions(registry, resource_type, grant)?);
    let spec = SearchSpec { types: vec![resource_type.to_string()], conditions, limit: 1, ..Default::default() };
    Ok(!search(conn, &spec)?.is_empty())
}
