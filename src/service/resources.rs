//! Create, update and delete with versioning: the server assigns `id` (on create),
//! `meta.versionId` and `meta.lastUpdated`, keeps every version, and checks `If-Match`.

use serde_json::{Map, Value, json};

use super::clock::next_timestamp;
use super::write_effects::{self, Actor};
use crate::error::FhirError;
use crate::fhir::instant::{Micros, format_instant};
use crate::search::extract::extract;
use crate::search::registry::Registry;
use crate::store::index::IndexBatch;
use crate::store::resources::{self as rows, NewVersion};
use crate::store::{AnyConnection, index};

/// How many times a write re-reads the current version after losing a race to another writer
/// of the same resource before it gives up with 409.
const MAX_WRITE_ATTEMPTS: usize = 16;

/// The result of a write.
#[derive(Debug, Clone)]
pub struct Written {
    pub resource_type: String,
    pub id: String,
    pub version_id: i64,
    pub last_updated: Micros,
    /// Whether the write made a resource exist that did not (201 rather than 200).
    pub created: bool,
    /// The stored JSON; `None` for a deletion.
    pub content: Option<String>,
}

/// Creates a resource with a new server-assigned id (any id in the body is ignored, per the
/// create interaction).
pub fn create(
    conn: &mut AnyConnection,
    registry: &Registry,
    actor: &Actor,
    mut resource: Map<String, Value>,
) -> Result<Written, FhirError> {
    let resource_type = resource_type_of(&resource)?;
    refuse_server_owned(&resource_type)?;
    super::search_parameters::check_definition(&resource)?;
    write_effects::before_validation(conn, &resource_type, &mut resource)?;
    crate::validation::enforce(&resource)?;
    let id = uuid::Uuid::new_v4().to_string();
    let last_updated = next_timestamp(None);
    write_effects::before_store(
        conn,
        registry,
        actor,
        &resource_type,
        &id,
        None,
        &mut resource,
        last_updated,
    )?;
    let (stamped, content) = stamp(resource, &id, 1, last_updated);
    let new = NewVersion {
        resource_type: &resource_type,
        id: &id,
        version_id: 1,
        last_updated,
        method: "POST",
        content: Some(&content),
    };
    let Some(pk) = rows::insert_first(conn, &new)? else {
        return Err(FhirError::Conflict(format!(
            "{resource_type}/{id} already exists"
        )));
    };
    index::insert(conn, pk, &extract(registry, &stamped))?;
    let written = Written {
        resource_type,
        id,
        version_id: 1,
        last_updated,
        created: true,
        content: Some(content),
    };
    write_effects::after_store(conn, registry, actor, &written, None, None)?;
    Ok(written)
}

/// Updates the resource `resource_type/id`, or creates it with that id (update as create).
/// `if_match` is the version the client expects to replace.
pub fn update(
    conn: &mut AnyConnection,
    registry: &Registry,
    actor: &Actor,
    id: &str,
    resource: Map<String, Value>,
    if_match: Option<i64>,
    method: &str,
) -> Result<Written, FhirError> {
    update_batched(conn, registry, actor, id, resource, if_match, method, None)
}

/// `update`, leaving the index rows in `batch` (when given) for the caller to write later in
/// the same transaction.
#[allow(clippy::too_many_arguments)]
pub fn update_batched(
    conn: &mut AnyConnection,
    registry: &Registry,
    actor: &Actor,
    id: &str,
    resource: Map<String, Value>,
    if_match: Option<i64>,
    method: &str,
    batch: Option<&mut IndexBatch>,
) -> Result<Written, FhirError> {
    let mut resource = resource;
    let resource_type = resource_type_of(&resource)?;
    super::search_parameters::check_definition(&resource)?;
    write_effects::before_validation(conn, &resource_type, &mut resource)?;
    crate::validation::enforce(&resource)?;
    write_version(
        conn,
        registry,
        actor,
        &resource_type,
        id,
        Some(resource),
        if_match,
        method,
        batch,
    )
}

/// Deletes `resource_type/id`, keeping its history. Returns `None` when there was no current
/// resource to delete (deleting is idempotent).
pub fn delete(
    conn: &mut AnyConnection,
    registry: &Registry,
    actor: &Actor,
    resource_type: &str,
    id: &str,
    if_match: Option<i64>,
) -> Result<Option<Written>, FhirError> {
    match rows::current(conn, resource_type, id)? {
        None => {
            if if_match.is_some() {
                return Err(FhirError::PreconditionFailed(format!(
                    "{resource_type}/{id} does not exist"
                )));
            }
            Ok(None)
        }
        Some(current) if current.deleted != 0 && if_match.is_none() => Ok(None),
        Some(_) => write_version(
            conn,
            registry,
            actor,
            resource_type,
            id,
            None,
            if_match,
            "DELETE",
            None,
        )
        .map(Some),
    }
}

/// Writes the next version of `resource_type/id` (`None`: a deletion marker), retrying when a
/// concurrent writer of the same resource commits first, unless the client asked for a
/// specific version with `If-Match`, which then fails with 412.
#[allow(clippy::too_many_arguments)]
fn write_version(
    conn: &mut AnyConnection,
    registry: &Registry,
    actor: &Actor,
    resource_type: &str,
    id: &str,
    mut resource: Option<Map<String, Value>>,
    if_match: Option<i64>,
    method: &str,
    mut batch: Option<&mut IndexBatch>,
) -> Result<Written, FhirError> {
    refuse_server_owned(resource_type)?;
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let current = rows::current(conn, resource_type, id)?;
        if let Some(expected) = if_match {
            match &current {
                Some(current) if current.version_id == expected => {}
                Some(current) => {
                    return Err(FhirError::PreconditionFailed(format!(
                        "If-Match names version {expected}, but the current version of {resource_type}/{id} is {}",
                        current.version_id
                    )));
                }
                None => {
                    return Err(FhirError::PreconditionFailed(format!(
                        "If-Match names version {expected}, but {resource_type}/{id} does not exist"
                    )));
                }
            }
        }
        let (version_id, last_updated) = match &current {
            Some(current) => (
                current.version_id + 1,
                next_timestamp(Some(current.last_updated)),
            ),
            None => (1, next_timestamp(None)),
        };
        let before = current
            .as_ref()
            .filter(|c| c.deleted == 0)
            .and_then(|c| c.content.as_deref());
        match resource.as_mut() {
            Some(resource) => write_effects::before_store(
                conn,
                registry,
                actor,
                resource_type,
                id,
                before,
                resource,
                last_updated,
            )?,
            None => write_effects::before_delete(conn, actor, resource_type, before)?,
        }
        // Stamping is idempotent, so a retry re-stamps the same map instead of keeping a copy.
        let stamped = resource
            .take()
            .map(|resource| stamp(resource, id, version_id, last_updated));
        let content = stamped.as_ref().map(|(_, text)| text.clone());
        let new = NewVersion {
            resource_type,
            id,
            version_id,
            last_updated,
            method,
            content: content.as_deref(),
        };
        let written_pk = match &current {
            Some(current) => {
                rows::replace_current(conn, &new, current.version_id)?.then_some(current.pk)
            }
            None => rows::insert_first(conn, &new)?,
        };
        if let Some(pk) = written_pk {
            if current.is_some() {
                index::clear(conn, pk)?;
            }
            if let Some((value, _)) = &stamped {
                let rows = extract(registry, value);
                match batch.as_deref_mut() {
                    Some(batch) => batch.add(pk, rows),
                    None => index::insert(conn, pk, &rows)?,
                }
            }
            let created = content.is_some() && current.as_ref().is_none_or(|c| c.deleted != 0);
            let written = Written {
                resource_type: resource_type.to_string(),
                id: id.to_string(),
                version_id,
                last_updated,
                created,
                content,
            };
            write_effects::after_store(conn, registry, actor, &written, before, batch)?;
            return Ok(written);
        }
        if if_match.is_some() {
            return Err(FhirError::PreconditionFailed(format!(
                "{resource_type}/{id} was changed by another request; read it again"
            )));
        }
        resource = stamped.and_then(|(value, _)| match value {
            Value::Object(map) => Some(map),
            _ => None,
        });
    }
    Err(FhirError::Conflict(format!(
        "{resource_type}/{id} is being changed by many requests at once; try again"
    )))
}

/// AuditEvent is the server's audit trail (see `service::audit`): clients read it, never write.
fn refuse_server_owned(resource_type: &str) -> Result<(), FhirError> {
    if resource_type == "AuditEvent" {
        return Err(FhirError::MethodNotAllowed(
            "AuditEvent is the server's audit trail: it is written by the server and never changes"
                .into(),
        ));
    }
    Ok(())
}

fn resource_type_of(resource: &Map<String, Value>) -> Result<String, FhirError> {
    match resource.get("resourceType") {
        Some(Value::String(name)) => Ok(name.clone()),
        _ => Err(FhirError::bad_request("The resource has no resourceType")),
    }
}

/// Gives `resource` the server's `id`, `meta.versionId` and `meta.lastUpdated`, keeping the
/// client's other `meta` elements (profile, security, tag, source) and the order of everything
/// else; `resourceType`, `id` and `meta` come first. Returns the resource and its JSON text.
pub fn stamp(
    mut resource: Map<String, Value>,
    id: &str,
    version_id: i64,
    last_updated: Micros,
) -> (Value, String) {
    let mut meta = match resource.shift_remove("meta") {
        Some(Value::Object(meta)) => meta,
        _ => Map::new(),
    };
    meta.shift_remove("versionId");
    meta.shift_remove("lastUpdated");
    let mut stamped_meta = Map::new();
    stamped_meta.insert("versionId".into(), json!(version_id.to_string()));
    stamped_meta.insert("lastUpdated".into(), json!(format_instant(last_updated)));
    stamped_meta.extend(meta);
    let resource_type = resource.shift_remove("resourceType").unwrap_or(Value::Null);
    resource.shift_remove("id");
    let mut stamped = Map::new();
    stamped.insert("resourceType".into(), resource_type);
    stamped.insert("id".into(), json!(id));
    stamped.insert("meta".into(), Value::Object(stamped_meta));
    stamped.extend(resource);
    let value = Value::Object(stamped);
    let text = value.to_string();
    (value, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_puts_server_fields_first_and_keeps_client_meta() {
        let resource: Map<String, Value> = serde_json::from_str(
            r#"{"resourceType":"Patient","active":true,"id":"old","meta":{"versionId":"9","profile":["p"]},"_active":{"id":"x"}}"#,
        )
        .unwrap_or_default();
        let (_, text) = stamp(resource, "new", 2, 0);
        assert_eq!(
            text,
            r#"{"resourceType":"Patient","id":"new","meta":{"versionId":"2","lastUpdated":"1970-01-01T00:00:00.000000Z","profile":["p"]},"active":true,"_active":{"id":"x"}}"#
        );
    }
}

/// A patch document, by format.
#[derive(Debug, Clone)]
pub enum PatchDocument {
    /// RFC 6902 JSON Patch (an array of operations).
    Json(Value),
    /// FHIRPath Patch (a Parameters resource).
    FhirPath(Value),
    /// RFC 7386 JSON Merge Patch (a partial resource), as clients such as fhirpy send it.
    Merge(Value),
}

/// patch: applies `document` to the current version of `resource_type/id` and stores the result
/// as a new version, provided it is still a valid resource of the same type and id (else 422).
pub fn patch(
    conn: &mut AnyConnection,
    registry: &Registry,
    actor: &Actor,
    resource_type: &str,
    id: &str,
    document: &PatchDocument,
    if_match: Option<i64>,
) -> Result<Written, FhirError> {
    // Without If-Match, a concurrent change is not the client's problem: patch the newer version.
    for _ in 0..MAX_WRITE_ATTEMPTS {
        match patch_once(conn, registry, actor, resource_type, id, document, if_match) {
            Err(FhirError::PreconditionFailed(_)) if if_match.is_none() => continue,
            result => return result,
        }
    }
    Err(FhirError::Conflict(format!(
        "{resource_type}/{id} is being changed by many requests at once; try again"
    )))
}

fn patch_once(
    conn: &mut AnyConnection,
    registry: &Registry,
    actor: &Actor,
    resource_type: &str,
    id: &str,
    document: &PatchDocument,
    if_match: Option<i64>,
) -> Result<Written, FhirError> {
    use super::patch::{PatchErrorKind, apply_fhirpath_patch, apply_json_patch, apply_merge_patch};
    let current = rows::current(conn, resource_type, id)?
        .ok_or_else(|| FhirError::NotFound(format!("{resource_type}/{id} is not known")))?;
    let Some(content) = current.content else {
        return Err(FhirError::Gone(
            format!("{resource_type}/{id} was deleted"),
            Some(current.version_id),
        ));
    };
    if let Some(expected) = if_match
        && expected != current.version_id
    {
        return Err(FhirError::PreconditionFailed(format!(
            "If-Match names version {expected}, but the current version of {resource_type}/{id} is {}",
            current.version_id
        )));
    }
    let resource: Value =
        serde_json::from_str(&content).map_err(|err| FhirError::Internal(err.into()))?;
    let patched = match document {
        PatchDocument::Json(operations) => apply_json_patch(&resource, operations),
        PatchDocument::FhirPath(parameters) => apply_fhirpath_patch(&resource, parameters),
        PatchDocument::Merge(changes) => Ok(apply_merge_patch(&resource, changes)),
    }
    .map_err(|err| match err.kind {
        PatchErrorKind::Invalid => FhirError::invalid(err.issue()),
        PatchErrorKind::Unprocessable => FhirError::Unprocessable(vec![err.issue()]),
    })?;
    if patched.get("resourceType") != resource.get("resourceType")
        || patched.get("id") != resource.get("id")
    {
        return Err(FhirError::Unprocessable(vec![
            crate::fhir::outcome::Issue::error(
                "business-rule",
                "A patch may not change the resource type or id",
            ),
        ]));
    }
    // The result must be a resource the server would accept as it stands.
    let text = patched.to_string();
    let mut checked = crate::fhir::parse::parse_resource(text.as_bytes(), Some(resource_type))
        .map_err(|err| match err {
            FhirError::Invalid(issues) => FhirError::Unprocessable(issues),
            other => other,
        })?;
    write_effects::before_validation(conn, resource_type, &mut checked)?;
    crate::validation::enforce(&checked)?;
    write_version(
        conn,
        registry,
        actor,
        resource_type,
        id,
        Some(checked),
        Some(if_match.unwrap_or(current.version_id)),
        "PATCH",
        None,
    )
}
