//! The program's definitional artefacts from `profiles/` (StructureDefinitions, ValueSets,
//! CodeSystems, SearchParameters, the ImplementationGuide, ...) are stored as resources at
//! start-up, so read and search serve them like any other resource on both backends. Loading is
//! idempotent: an artefact is written only when the stored version differs from the embedded
//! one, so a restart adds no versions and nodes starting together converge.

use serde_json::{Map, Value};

use crate::error::FhirError;
use crate::search::registry::Registry;
use crate::store::AnyConnection;
use crate::store::index::IndexBatch;
use crate::store::resources as rows;

/// The artefact types stored at start-up. The `Organization` records of `profiles/` are
/// deployment data a deployment edits and imports itself, so they are not among them.
pub const LOADED_TYPES: &[&str] = &[
    "CodeSystem",
    "ConceptMap",
    "ImplementationGuide",
    "Measure",
    "NamingSystem",
    "SearchParameter",
    "StructureDefinition",
    "ValueSet",
];

/// Stores every embedded artefact that is missing or changed; returns how many were written.
pub fn load(conn: &mut AnyConnection, registry: &Registry) -> Result<usize, FhirError> {
    let mut written = 0;
    // index rows of all artefacts are written together at the end (fewer round trips)
    let mut batch = IndexBatch::default();
    for artefact in crate::fhir::profiles::artefacts() {
        let Value::Object(resource) = artefact else {
            continue;
        };
        let (Some(resource_type), Some(id)) = (
            resource.get("resourceType").and_then(Value::as_str),
            resource.get("id").and_then(Value::as_str),
        ) else {
            continue;
        };
        if !LOADED_TYPES.contains(&resource_type) {
            continue;
        }
        let (resource_type, id) = (resource_type.to_string(), id.to_string());
        let stored = rows::current(conn, &resource_type, &id)?
            .and_then(|row| row.content)
            .and_then(|content| serde_json::from_str::<Map<String, Value>>(&content).ok());
        if stored.is_some_and(|stored| same_content(&stored, &resource)) {
            continue;
        }
        super::resources::update_batched(
            conn,
            registry,
            &super::write_effects::Actor::Server,
            &id,
            resource,
            None,
            "PUT",
            Some(&mut batch),
        )?;
        written += 1;
    }
    batch.flush(conn)?;
    Ok(written)
}

/// Whether two versions hold the same content, apart from the server's `meta` elements (maps
/// compare without regard to member order).
fn same_content(stored: &Map<String, Value>, embedded: &Map<String, Value>) -> bool {
    let strip = |resource: &Map<String, Value>| {
        let mut resource = resource.clone();
        let empty = match resource.get_mut("meta").and_then(Value::as_object_mut) {
            Some(meta) => {
                meta.shift_remove("versionId");
                meta.shift_remove("lastUpdated");
                meta.is_empty()
            }
            None => false,
        };
        if empty {
            resource.shift_remove("meta");
        }
        Value::Object(resource)
    };
    strip(stored) == strip(embedded)
}
