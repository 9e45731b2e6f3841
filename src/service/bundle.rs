//! batch and transaction Bundles (http.html#transaction, bundle.html#transaction).
//!
//! A transaction runs in one database transaction: all of it or nothing. Its entries are
//! processed DELETE, POST, PUT/PATCH, then GET/HEAD; ids are assigned to created resources up
//! front, so every reference to an entry's `fullUrl` (`urn:uuid:`, `urn:oid:` or absolute) is
//! rewritten to `Type/id` wherever it occurs in the other resources, and conditional references
//! (`Patient?identifier=...`) are resolved to the one resource they match. Responses come back
//! in request order. A batch runs each entry on its own; one failing entry does not affect the
//! others.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::access::visible;
use super::conditional::{self, Created};
use super::resources::{self, Written};
use super::write_effects::Actor;
use crate::auth::Access;
use crate::auth::scopes::Permission;
use crate::error::FhirError;
use crate::fhir::etag;
use crate::fhir::instant::{format_instant, now_micros};
use crate::fhir::outcome::{Issue, operation_outcome};
use crate::search::registry::Registry;
use crate::store::AnyConnection;
use crate::store::index::IndexBatch;
use crate::store::resources as rows;

/// What each entry's response carries besides its status (`Prefer: return=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    Minimal,
    Full,
    Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    Delete,
    Post,
    Put,
    Patch,
    Get,
    Head,
}

impl Method {
    /// Processing order within a transaction.
    fn rank(self) -> u8 {
        match self {
            Method::Delete => 0,
            Method::Post => 1,
            Method::Put | Method::Patch => 2,
            Method::Get | Method::Head => 3,
        }
    }
}

/// One parsed entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub index: usize,
    pub full_url: Option<String>,
    pub method: Method,
    /// The request URL relative to the base, e.g. `Patient/1` or `Patient?identifier=x|1`.
    pub url: String,
    pub resource: Option<Map<String, Value>>,
    pub if_none_exist: Option<String>,
    pub if_match: Option<i64>,
    pub if_none_match: Option<i64>,
}

/// An entry's answer.
#[derive(Debug, Clone)]
pub struct EntryResponse {
    pub status: String,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// JSON text of the resource, when one is returned.
    pub resource: Option<String>,
    pub outcome: Option<Value>,
}

/// The path and query of an entry URL: `Type`, `Type/id`, `Type/id/_history/vid`, each with an
/// optional `?query`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    resource_type: String,
    id: Option<String>,
    version: Option<String>,
    query: Option<String>,
}

fn entry_error(index: usize, message: impl Into<String>) -> FhirError {
    FhirError::invalid(
        Issue::error(
            "invalid",
            format!("Bundle.entry[{index}]: {}", message.into()),
        )
        .at(format!("Bundle.entry[{index}]")),
    )
}

/// Adds the entry's position to an error, keeping its status.
pub fn at_entry(err: FhirError, index: usize) -> FhirError {
    let prefix = |message: String| {
        if message.starts_with("Bundle.entry[") {
            message
        } else {
            format!("Bundle.entry[{index}]: {message}")
        }
    };
    match err {
        FhirError::Invalid(issues) => FhirError::Invalid(locate(issues, index)),
        FhirError::Unprocessable(issues) => FhirError::Unprocessable(locate(issues, index)),
        FhirError::NotFound(m) => FhirError::NotFound(prefix(m)),
        FhirError::Conflict(m) => FhirError::Conflict(prefix(m)),
        FhirError::Gone(m, v) => FhirError::Gone(prefix(m), v),
        FhirError::PreconditionFailed(m) => FhirError::PreconditionFailed(prefix(m)),
        FhirError::MethodNotAllowed(m) => FhirError::MethodNotAllowed(prefix(m)),
        FhirError::UnknownType(t) => FhirError::invalid(
            Issue::error(
                "not-supported",
                format!("Bundle.entry[{index}]: unknown resource type '{t}'"),
            )
            .at(format!("Bundle.entry[{index}]")),
        ),
        other => other,
    }
}

fn locate(issues: Vec<Issue>, index: usize) -> Vec<Issue> {
    issues
        .into_iter()
        .map(|mut issue| {
            if issue.diagnostics.starts_with("Bundle.entry[") {
                return issue;
            }
            issue.diagnostics = format!("Bundle.entry[{index}]: {}", issue.diagnostics);
            issue.expression = Some(match issue.expression {
                // `Patient.name[0]` of the entry's resource
                Some(expression) if !expression.starts_with('_') && expression.contains('.') => {
                    format!(
                        "Bundle.entry[{index}].resource.{}",
                        expression
                            .split_once('.')
                            .map_or(expression.as_str(), |(_, rest)| rest)
                    )
                }
                _ => format!("Bundle.entry[{index}]"),
            });
            issue
        })
        .collect()
}

fn parse_target(index: usize, url: &str, base: &str) -> Result<Target, FhirError> {
    let is_absolute = url.split('?').next().unwrap_or_default().contains("://");
    let relative = if is_absolute {
        url.strip_prefix(base)
            .map(|rest| rest.trim_start_matches('/'))
            .ok_or_else(|| entry_error(index, format!("'{url}' is not on this server")))?
    } else {
        url.trim_start_matches('/')
    };
    let (path, query) = match relative.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (relative, None),
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let known = |t: &str| {
        crate::fhir::is_resource_type(t)
            .then(|| t.to_string())
            .ok_or_else(|| FhirError::UnknownType(t.to_string()))
    };
    let valid = |id: &str| {
        crate::fhir::is_valid_id(id)
            .then(|| id.to_string())
            .ok_or_else(|| entry_error(index, format!("'{id}' is not a valid id")))
    };
    match parts.as_slice() {
        [t] => Ok(Target {
            resource_type: known(t)?,
            id: None,
            version: None,
            query,
        }),
        [t, id] => Ok(Target {
            resource_type: known(t)?,
            id: Some(valid(id)?),
            version: None,
            query,
        }),
        [t, id, "_history", version] => Ok(Target {
            resource_type: known(t)?,
            id: Some(valid(id)?),
            version: Some((*version).to_string()),
            query,
        }),
        _ => Err(entry_error(
            index,
            format!("'{url}' is not a URL this server handles in a Bundle"),
        )),
    }
}

/// Reads the entries of a batch or transaction Bundle.
pub fn parse_entries(
    bundle: &Map<String, Value>,
    max_entries: usize,
) -> Result<Vec<Entry>, FhirError> {
    let entries = bundle
        .get("entry")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if entries.len() > max_entries {
        return Err(FhirError::PayloadTooLarge(format!(
            "The Bundle has {} entries; the limit is {max_entries}",
            entries.len()
        )));
    }
    let mut parsed = Vec::with_capacity(entries.len());
    let mut full_urls = HashSet::new();
    for (index, entry) in entries.iter().enumerate() {
        let request = entry
            .get("request")
            .ok_or_else(|| entry_error(index, "the entry has no request"))?;
        let method = match request.get("method").and_then(Value::as_str) {
            Some("GET") => Method::Get,
            Some("HEAD") => Method::Head,
            Some("POST") => Method::Post,
            Some("PUT") => Method::Put,
            Some("PATCH") => Method::Patch,
            Some("DELETE") => Method::Delete,
            other => {
                return Err(entry_error(
                    index,
                    format!("unsupported request.method {other:?}"),
                ));
            }
        };
        let url = request
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| entry_error(index, "the entry has no request.url"))?
            .to_string();
        let full_url = entry
            .get("fullUrl")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(full_url) = &full_url
            && !full_urls.insert(full_url.clone())
        {
            return Err(entry_error(
                index,
                format!("fullUrl '{full_url}' is used by more than one entry"),
            ));
        }
        let resource = entry.get("resource").and_then(Value::as_object).cloned();
        if matches!(method, Method::Post | Method::Put | Method::Patch) && resource.is_none() {
            return Err(entry_error(
                index,
                "a POST, PUT or PATCH entry needs a resource",
            ));
        }
        let version = |name: &str| -> Result<Option<i64>, FhirError> {
            match request.get(name).and_then(Value::as_str) {
                None => Ok(None),
                Some(value) => crate::fhir::parse_etag(value).map(Some).ok_or_else(|| {
                    entry_error(index, format!("request.{name} must name a version"))
                }),
            }
        };
        parsed.push(Entry {
            index,
            full_url,
            method,
            url,
            resource,
            if_none_exist: request
                .get("ifNoneExist")
                .and_then(Value::as_str)
                .map(str::to_string),
            if_match: version("ifMatch")?,
            if_none_match: version("ifNoneMatch")?,
        });
    }
    Ok(parsed)
}

/// Runs a whole transaction on `conn` (inside the caller's database transaction). Returns the
/// responses in request order, or the first failure (which must roll everything back).
pub fn transaction(
    conn: &mut AnyConnection,
    registry: &Registry,
    base: &str,
    mut entries: Vec<Entry>,
    representation: Representation,
    access: &Access,
) -> Result<Vec<EntryResponse>, FhirError> {
    // 1. Where each write goes: ids for creates, matches for conditional creates and updates.
    let mut targets: HashMap<usize, Target> = HashMap::new();
    let mut identities: HashMap<String, String> = HashMap::new(); // fullUrl -> Type/id
    let mut existing: HashMap<usize, crate::store::search::Found> = HashMap::new();
    let mut written_targets: HashSet<String> = HashSet::new();
    for entry in &entries {
        let index = entry.index;
        let mut target = parse_target(index, &entry.url, base)?;
        if let Some(resource) = &entry.resource
            && matches!(entry.method, Method::Post | Method::Put)
            && resource.get("resourceType").and_then(Value::as_str)
                != Some(target.resource_type.as_str())
        {
            return Err(entry_error(
                index,
                format!("the resource is not a {}", target.resource_type),
            ));
        }
        match entry.method {
            Method::Post => {
                if let Some(criteria) = &entry.if_none_exist {
                    let mut found =
                        conditional::matches(conn, registry, &target.resource_type, criteria)
                            .map_err(|e| at_entry(e, index))?;
                    match found.len() {
                        0 => {}
                        1 => {
                            let one = found.remove(0);
                            target.id = Some(one.id.clone());
                            existing.insert(index, one);
                        }
                        _ => {
                            return Err(at_entry(
                                FhirError::PreconditionFailed(
                                    "ifNoneExist matches more than one resource".into(),
                                ),
                                index,
                            ));
                        }
                    }
                }
                if target.id.is_none() {
                    target.id = Some(uuid::Uuid::new_v4().to_string());
                }
            }
            Method::Put | Method::Patch | Method::Delete if target.query.is_some() => {
                let criteria = target.query.clone().unwrap_or_default();
                let found = conditional::matches(conn, registry, &target.resource_type, &criteria)
                    .map_err(|e| at_entry(e, index))?;
                match found.as_slice() {
                    [] if entry.method == Method::Put => {
                        let body_id = entry
                            .resource
                            .as_ref()
                            .and_then(|r| r.get("id"))
                            .and_then(Value::as_str)
                            .map(str::to_string);
                        target.id =
                            Some(body_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()));
                    }
                    [] => {}
                    [one] => target.id = Some(one.id.clone()),
                    _ => {
                        return Err(at_entry(
                            FhirError::PreconditionFailed(
                                "the criteria match more than one resource".into(),
                            ),
                            index,
                        ));
                    }
                }
            }
            Method::Put | Method::Patch | Method::Delete if target.id.is_none() => {
                return Err(entry_error(
                    index,
                    "the URL must name a resource (Type/id) or carry criteria",
                ));
            }
            _ => {}
        }
        if matches!(
            entry.method,
            Method::Post | Method::Put | Method::Patch | Method::Delete
        ) && let Some(id) = &target.id
            && !existing.contains_key(&index)
        {
            let key = format!("{}/{id}", target.resource_type);
            if !written_targets.insert(key.clone()) {
                return Err(entry_error(
                    index,
                    format!("{key} is written by more than one entry"),
                ));
            }
            if let Some(full_url) = &entry.full_url {
                identities.insert(full_url.clone(), key);
            }
        } else if let (Some(full_url), Some(id)) = (&entry.full_url, &target.id) {
            identities.insert(full_url.clone(), format!("{}/{id}", target.resource_type));
        }
        targets.insert(index, target);
    }
    // 2. Rewrite references to entries, and resolve conditional references.
    let mut resolved: HashMap<String, String> = HashMap::new();
    for entry in &mut entries {
        if let Some(resource) = &mut entry.resource {
            let mut value = Value::Object(std::mem::take(resource));
            rewrite(
                conn,
                registry,
                &mut value,
                &identities,
                &mut resolved,
                entry.index,
            )?;
            if let Value::Object(map) = value {
                *resource = map;
            }
        }
    }
    // 3. Execute in the prescribed order; answer in request order.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|i| (entries[*i].method.rank(), *i));
    let mut responses: Vec<Option<EntryResponse>> = vec![None; entries.len()];
    let mut batch = IndexBatch::default();
    for position in order {
        let entry = &entries[position];
        let target = targets
            .get(&entry.index)
            .cloned()
            .ok_or_else(|| entry_error(entry.index, "no target"))?;
        let response = execute(
            conn,
            registry,
            base,
            entry,
            &target,
            existing.get(&entry.index),
            representation,
            access,
            Some(&mut batch),
        )
        .map_err(|e| at_entry(e, entry.index))?;
        responses[position] = Some(response);
    }
    batch.flush(conn)?;
    Ok(responses.into_iter().flatten().collect())
}

/// Runs one entry of a batch (inside its own database transaction).
pub fn batch_entry(
    conn: &mut AnyConnection,
    registry: &Registry,
    base: &str,
    entry: &Entry,
    representation: Representation,
    access: &Access,
) -> Result<EntryResponse, FhirError> {
    let mut target = parse_target(entry.index, &entry.url, base)?;
    if entry.method == Method::Post {
        if let Some(criteria) = &entry.if_none_exist {
            let grant = access.require(&target.resource_type, Permission::Create)?;
            if !grant.is_unlimited() {
                return Err(FhirError::Forbidden(
                    "Conditional create needs an unrestricted scope".into(),
                ));
            }
            let resource = entry.resource.clone().unwrap_or_default();
            return Ok(
                match conditional::create(
                    conn,
                    registry,
                    &Actor::of(access),
                    resource,
                    Some(criteria),
                )? {
                    Created::New(written) => written_response(base, &written, representation),
                    Created::Existing(found) => existing_response(base, &found, representation),
                },
            );
        }
        target.id = Some(uuid::Uuid::new_v4().to_string());
    }
    if matches!(entry.method, Method::Put | Method::Patch | Method::Delete)
        && target.query.is_some()
    {
        let criteria = target.query.clone().unwrap_or_default();
        let found = conditional::matches(conn, registry, &target.resource_type, &criteria)?;
        match found.as_slice() {
            [] if entry.method == Method::Put => {
                let body_id = entry
                    .resource
                    .as_ref()
                    .and_then(|r| r.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                target.id = Some(body_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()));
            }
            [] => {}
            [one] => target.id = Some(one.id.clone()),
            _ => {
                return Err(FhirError::PreconditionFailed(
                    "the criteria match more than one resource".into(),
                ));
            }
        }
    }
    if let Some(resource) = &entry.resource
        && matches!(entry.method, Method::Post | Method::Put)
        && resource.get("resourceType").and_then(Value::as_str)
            != Some(target.resource_type.as_str())
    {
        return Err(entry_error(
            entry.index,
            format!("the resource is not a {}", target.resource_type),
        ));
    }
    execute(
        conn,
        registry,
        base,
        entry,
        &target,
        None,
        representation,
        access,
        None,
    )
}

#[allow(clippy::too_many_arguments)]
fn execute(
    conn: &mut AnyConnection,
    registry: &Registry,
    base: &str,
    entry: &Entry,
    target: &Target,
    existing: Option<&crate::store::search::Found>,
    representation: Representation,
    access: &Access,
    mut batch: Option<&mut IndexBatch>,
) -> Result<EntryResponse, FhirError> {
    let resource_type = target.resource_type.as_str();
    // Reads, searches and scope checks below need the index rows written so far.
    let needs_index = matches!(entry.method, Method::Get | Method::Head)
        || !access
            .require(resource_type, Permission::Read)
            .map(|g| g.is_unlimited())
            .unwrap_or(false)
        || !access.unrestricted && access.fhir_user.is_some();
    if needs_index
        && let Some(batch) = batch.as_deref_mut()
        && !batch.is_empty()
    {
        batch.flush(conn)?;
    }
    let permission = match (entry.method, &target.id) {
        (Method::Post, _) => Permission::Create,
        (Method::Put | Method::Patch, _) => Permission::Update,
        (Method::Delete, _) => Permission::Delete,
        (Method::Get | Method::Head, Some(_)) => Permission::Read,
        (Method::Get | Method::Head, None) => Permission::Search,
    };
    let grant = access.require(resource_type, permission)?;
    let outside = || FhirError::Forbidden("The resource would be outside the token's reach".into());
    if let (Some(id), Method::Put | Method::Patch | Method::Get | Method::Head) =
        (&target.id, entry.method)
        && rows::current(conn, resource_type, id)?.is_some_and(|c| c.deleted == 0)
        && !visible(conn, registry, resource_type, id, &grant)?
    {
        return Err(FhirError::NotFound(format!(
            "{resource_type}/{id} is not known"
        )));
    }
    let response = execute_allowed(
        conn,
        registry,
        base,
        entry,
        target,
        existing,
        representation,
        access,
        batch.as_deref_mut(),
    )?;
    if !grant.is_unlimited()
        && let Some(batch) = batch
    {
        batch.flush(conn)?;
    }
    if matches!(entry.method, Method::Post | Method::Put | Method::Patch)
        && let Some(id) = &target.id
        && !visible(conn, registry, resource_type, id, &grant)?
    {
        return Err(outside());
    }
    Ok(response)
}

#[allow(clippy::too_many_arguments)]
fn execute_allowed(
    conn: &mut AnyConnection,
    registry: &Registry,
    base: &str,
    entry: &Entry,
    target: &Target,
    existing: Option<&crate::store::search::Found>,
    representation: Representation,
    access: &Access,
    batch: Option<&mut IndexBatch>,
) -> Result<EntryResponse, FhirError> {
    let resource_type = target.resource_type.as_str();
    let actor = Actor::of(access);
    match entry.method {
        Method::Post => {
            if let Some(found) = existing {
                return Ok(existing_response(base, found, representation));
            }
            let id = target.id.clone().unwrap_or_default();
            let mut resource = entry.resource.clone().unwrap_or_default();
            resource.insert("id".into(), Value::String(id.clone()));
            let written = resources::update_batched(
                conn, registry, &actor, &id, resource, None, "POST", batch,
            )?;
            Ok(written_response(base, &written, representation))
        }
        Method::Put => {
            let id = target.id.clone().unwrap_or_default();
            let mut resource = entry.resource.clone().unwrap_or_default();
            match resource.get("id").and_then(Value::as_str) {
                Some(body_id) if body_id != id => {
                    return Err(entry_error(
                        entry.index,
                        format!("the resource id '{body_id}' does not match the URL id '{id}'"),
                    ));
                }
                Some(_) => {}
                None if target.query.is_some() => {
                    resource.insert("id".into(), Value::String(id.clone()));
                }
                None => {
                    return Err(entry_error(
                        entry.index,
                        "an updated resource must carry the id of the URL",
                    ));
                }
            }
            let written = resources::update_batched(
                conn,
                registry,
                &actor,
                &id,
                resource,
                entry.if_match,
                "PUT",
                batch,
            )?;
            Ok(written_response(base, &written, representation))
        }
        Method::Patch => {
            let Some(id) = &target.id else {
                return Err(FhirError::NotFound(format!(
                    "No {resource_type} matches the criteria"
                )));
            };
            let document = patch_document(entry)?;
            let written = resources::patch(
                conn,
                registry,
                &actor,
                resource_type,
                id,
                &document,
                entry.if_match,
            )?;
            Ok(written_response(base, &written, representation))
        }
        Method::Delete => {
            let nothing = EntryResponse {
                status: "204 No Content".into(),
                location: None,
                etag: None,
                last_modified: None,
                resource: None,
                outcome: None,
            };
            let Some(id) = &target.id else {
                return Ok(nothing);
            };
            if !visible(
                conn,
                registry,
                resource_type,
                id,
                &access.require(resource_type, Permission::Delete)?,
            )? {
                return Ok(nothing);
            }
            Ok(
                match resources::delete(conn, registry, &actor, resource_type, id, entry.if_match)?
                {
                    Some(written) => EntryResponse {
                        status: "200 OK".into(),
                        location: None,
                        etag: Some(etag(written.version_id)),
                        last_modified: Some(format_instant(written.last_updated)),
                        resource: None,
                        outcome: (representation == Representation::Outcome).then(|| {
                            operation_outcome(&[Issue::information(format!(
                                "Deleted {resource_type}/{id}"
                            ))])
                        }),
                    },
                    None => EntryResponse {
                        status: "204 No Content".into(),
                        location: None,
                        etag: None,
                        last_modified: None,
                        resource: None,
                        outcome: None,
                    },
                },
            )
        }
        Method::Get | Method::Head => read_entry(conn, registry, base, entry, target, access),
    }
}

/// A PATCH entry's document: a Parameters resource (FHIRPath Patch) or a Binary holding a JSON
/// Patch (http.html#patch, "PATCH in Bundles").
fn patch_document(entry: &Entry) -> Result<resources::PatchDocument, FhirError> {
    use base64::Engine;
    let resource = entry.resource.clone().unwrap_or_default();
    match resource.get("resourceType").and_then(Value::as_str) {
        Some("Parameters") => Ok(resources::PatchDocument::FhirPath(Value::Object(resource))),
        Some("Binary") => {
            let content_type = resource
                .get("contentType")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !content_type.starts_with("application/json-patch+json") {
                return Err(entry_error(
                    entry.index,
                    "a Binary PATCH entry must have contentType application/json-patch+json",
                ));
            }
            let data = resource
                .get("data")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|_| entry_error(entry.index, "Binary.data is not base64"))?;
            let operations = serde_json::from_slice(&bytes)
                .map_err(|_| entry_error(entry.index, "Binary.data is not a JSON Patch"))?;
            Ok(resources::PatchDocument::Json(operations))
        }
        _ => Err(entry_error(
            entry.index,
            "a PATCH entry's resource must be a Parameters (FHIRPath Patch) or a Binary (JSON Patch)",
        )),
    }
}

fn read_entry(
    conn: &mut AnyConnection,
    registry: &Registry,
    base: &str,
    entry: &Entry,
    target: &Target,
    access: &Access,
) -> Result<EntryResponse, FhirError> {
    let with_body = entry.method == Method::Get;
    let resource_type = &target.resource_type;
    match (&target.id, &target.version) {
        (None, _) => {
            let params: Vec<(String, String)> =
                serde_urlencoded::from_str(target.query.as_deref().unwrap_or_default())
                    .map_err(|_| entry_error(entry.index, "the query is not valid"))?;
            let input = super::search::SearchInput {
                resource_type: Some(resource_type.clone()),
                params,
                compartment_patient: None,
                strict: false,
                base: base.to_string(),
                path: format!("/{resource_type}"),
                access: access.clone(),
            };
            let bundle = super::search::execute(conn, registry, &input)?;
            Ok(EntryResponse {
                status: "200 OK".into(),
                location: None,
                etag: None,
                last_modified: None,
                resource: with_body.then_some(bundle),
                outcome: None,
            })
        }
        (Some(id), version) => {
            let (version_id, last_updated, content) = match version {
                None => {
                    let current = rows::current(conn, resource_type, id)?.ok_or_else(|| {
                        FhirError::NotFound(format!("{resource_type}/{id} is not known"))
                    })?;
                    (current.version_id, current.last_updated, current.content)
                }
                Some(version) => {
                    let version_id: i64 = version.parse().map_err(|_| {
                        FhirError::NotFound(format!(
                            "{resource_type}/{id} has no version '{version}'"
                        ))
                    })?;
                    let row =
                        rows::version(conn, resource_type, id, version_id)?.ok_or_else(|| {
                            FhirError::NotFound(format!(
                                "{resource_type}/{id} has no version {version_id}"
                            ))
                        })?;
                    (row.version_id, row.last_updated, row.content)
                }
            };
            let Some(content) = content else {
                return Err(FhirError::Gone(
                    format!("{resource_type}/{id} was deleted"),
                    Some(version_id),
                ));
            };
            if entry.if_none_match == Some(version_id) {
                return Ok(EntryResponse {
                    status: "304 Not Modified".into(),
                    location: None,
                    etag: Some(etag(version_id)),
                    last_modified: Some(format_instant(last_updated)),
                    resource: None,
                    outcome: None,
                });
            }
            Ok(EntryResponse {
                status: "200 OK".into(),
                location: None,
                etag: Some(etag(version_id)),
                last_modified: Some(format_instant(last_updated)),
                resource: with_body.then_some(content),
                outcome: None,
            })
        }
    }
}

fn written_response(
    base: &str,
    written: &Written,
    representation: Representation,
) -> EntryResponse {
    let location = format!(
        "{base}/{}/{}/_history/{}",
        written.resource_type, written.id, written.version_id
    );
    EntryResponse {
        status: if written.created {
            "201 Created".into()
        } else {
            "200 OK".into()
        },
        location: Some(location),
        etag: Some(etag(written.version_id)),
        last_modified: Some(format_instant(written.last_updated)),
        resource: if representation == Representation::Full {
            written.content.clone()
        } else {
            None
        },
        outcome: (representation == Representation::Outcome).then(|| {
            operation_outcome(&[Issue::information(format!(
                "Wrote {}/{} version {}",
                written.resource_type, written.id, written.version_id
            ))])
        }),
    }
}

fn existing_response(
    base: &str,
    found: &crate::store::search::Found,
    representation: Representation,
) -> EntryResponse {
    EntryResponse {
        status: "200 OK".into(),
        location: Some(format!(
            "{base}/{}/{}/_history/{}",
            found.resource_type, found.id, found.version_id
        )),
        etag: Some(etag(found.version_id)),
        last_modified: Some(format_instant(found.last_updated)),
        resource: if representation == Representation::Full {
            found.content.clone()
        } else {
            None
        },
        outcome: (representation == Representation::Outcome).then(|| {
            operation_outcome(&[Issue::information(
                "ifNoneExist matched an existing resource; nothing was created",
            )])
        }),
    }
}

/// Rewrites, in place, every reference to a Bundle entry (by its `fullUrl`) to `Type/id`, in
/// `reference` elements, uri-typed values and narrative links, at any depth (extensions and
/// contained resources included); resolves conditional references `Type?criteria` to the one
/// resource they match.
fn rewrite(
    conn: &mut AnyConnection,
    registry: &Registry,
    value: &mut Value,
    identities: &HashMap<String, String>,
    resolved: &mut HashMap<String, String>,
    index: usize,
) -> Result<(), FhirError> {
    match value {
        Value::Object(map) => {
            for (key, member) in map.iter_mut() {
                if key == "reference"
                    && let Value::String(reference) = member
                {
                    if let Some(identity) = identities.get(reference.as_str()) {
                        *reference = identity.clone();
                    } else if let Some((resource_type, criteria)) = reference.split_once('?')
                        && crate::fhir::is_resource_type(resource_type)
                    {
                        let key = reference.clone();
                        if let Some(identity) = resolved.get(&key) {
                            *reference = identity.clone();
                        } else {
                            let found =
                                conditional::matches(conn, registry, resource_type, criteria)
                                    .map_err(|e| at_entry(e, index))?;
                            let identity = match found.as_slice() {
                                [one] => format!("{resource_type}/{}", one.id),
                                [] => {
                                    return Err(at_entry(
                                        FhirError::PreconditionFailed(format!(
                                            "the conditional reference '{key}' matches no resource"
                                        )),
                                        index,
                                    ));
                                }
                                _ => {
                                    return Err(at_entry(
                                        FhirError::PreconditionFailed(format!(
                                            "the conditional reference '{key}' matches more than one resource"
                                        )),
                                        index,
                                    ));
                                }
                            };
                            resolved.insert(key, identity.clone());
                            *reference = identity;
                        }
                    }
                } else if key == "div"
                    && let Value::String(html) = member
                {
                    for (full_url, identity) in identities {
                        if html.contains(full_url.as_str()) {
                            *html = html
                                .replace(&format!("\"{full_url}\""), &format!("\"{identity}\""));
                        }
                    }
                } else {
                    rewrite(conn, registry, member, identities, resolved, index)?;
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                rewrite(conn, registry, item, identities, resolved, index)?;
            }
        }
        Value::String(text) => {
            if let Some(identity) = identities.get(text.as_str()) {
                *text = identity.clone();
            }
        }
        _ => {}
    }
    Ok(())
}

/// The response Bundle (`transaction-response` or `batch-response`) as JSON text.
pub fn response_bundle(kind: &str, base: &str, responses: &[EntryResponse]) -> String {
    let entries: Vec<String> = responses
        .iter()
        .map(|r| {
            let mut response = Map::new();
            response.insert("status".into(), json!(r.status));
            if let Some(location) = &r.location {
                response.insert("location".into(), json!(location));
            }
            if let Some(etag) = &r.etag {
                response.insert("etag".into(), json!(etag));
            }
            if let Some(last_modified) = &r.last_modified {
                response.insert("lastModified".into(), json!(last_modified));
            }
            if let Some(outcome) = &r.outcome {
                response.insert("outcome".into(), outcome.clone());
            }
            let response = Value::Object(response).to_string();
            match (&r.resource, &r.location) {
                (Some(resource), Some(location)) => {
                    let full_url = Value::String(
                        location
                            .split("/_history")
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                    format!(
                        r#"{{"fullUrl":{full_url},"resource":{resource},"response":{response}}}"#
                    )
                }
                (Some(resource), None) => {
                    format!(r#"{{"resource":{resource},"response":{response}}}"#)
                }
                _ => format!(r#"{{"response":{response}}}"#),
            }
        })
        .collect();
    let head = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": { "lastUpdated": format_instant(now_micros()) },
        "type": kind,
        "link": [{ "relation": "self", "url": base }],
    })
    .to_string();
    let mut text = head;
    text.pop();
    text.push_str(",\"entry\":[");
    text.push_str(&entries.join(","));
    text.push_str("]}");
    text
}

/// The response entry of a batch entry that failed.
pub fn failed_entry(err: &FhirError) -> EntryResponse {
    use actix_web::ResponseError;
    let status = err.status_code();
    EntryResponse {
        status: format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        ),
        location: None,
        etag: None,
        last_modified: None,
        resource: None,
        outcome: Some(operation_outcome(&err.issues())),
    }
}
