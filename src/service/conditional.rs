//! Conditional create, update and delete (http.html#ccreate, #cond-update, #cdelete): the
//! criteria are a search, evaluated inside the write transaction. Concurrent requests with the
//! same criteria are serialized (SQLite: by its single writer; PostgreSQL: by a transaction-level
//! advisory lock on the type and criteria), so 64 concurrent conditional creates make one resource.

use crate::error::FhirError;
use crate::fhir::outcome::Issue;
use crate::search::registry::Registry;
use crate::search::request::parse_request;
use crate::store::search::{Found, SearchSpec, search};
use crate::store::sql::{Sql, execute};
use crate::store::AnyConnection;

/// The current resources of `resource_type` matching `criteria` (a query string), at most two:
/// enough to tell none, one and several apart.
pub fn matches(conn: &mut AnyConnection, registry: &Registry, resource_type: &str, criteria: &str) -> Result<Vec<Found>, FhirError> {
    let criteria = criteria.trim_start_matches('?');
    let criteria = criteria.strip_prefix(&format!("{resource_type}?")).unwrap_or(criteria);
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(criteria)
        .map_err(|_| FhirError::invalid(Issue::error("invalid", "The conditional criteria are not a valid query string")))?;
    if pairs.is_empty() {
        return Err(FhirError::invalid(Issue::error("required", "A conditional interaction needs search criteria")));
    }
    // Criteria the server cannot evaluate must not be ignored: that would match too much.
    let request = parse_request(registry, resource_type, &pairs, true)?;
    if let crate::store::AnyConnection::Postgresql(_) = conn {
        let mut sorted = pairs.clone();
        sorted.sort();
        let key = format!("{resource_type}?{}", serde_urlencoded::to_string(&sorted).unwrap_or_default());
        let mut sql = Sql::default();
        sql.push("SELECT pg_advisory_xact_lock(hashtext(");
        sql.text(&key);
        sql.push("))");
        execute(conn, sql)?;
    }
    let spec = SearchSpec { types: vec![resource_type.to_string()], conditions: request.conditions, limit: 2, ..Default::default() };
    Ok(search(conn, &spec)?)
}
