//! Bulk Data `$export` (http://hl7.org/fhir/uv/bulkdata/ STU2) without HTTP: checking a
//! kick-off request into a job row, and the background worker that runs jobs into one NDJSON
//! file per type under the data folder.
//!
//! Jobs live in the `jobs` table, so they survive restarts. A node claims a queued job (or one
//! whose lease ran out: its node died) with a compare-and-set on the row and renews the lease
//! after every batch; a worker that finds its lease gone stops. Each type is written to a
//! file of the worker's own and renamed into place once complete, then recorded in the job's
//! `result`, so a job taken over goes on with the first type not recorded and no file ever
//! holds a half-written type.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::access::grant_conditions;
use super::search_parameters::RegistryHandle;
use crate::auth::Access;
use crate::auth::scopes::{Context, Permission};
use crate::error::FhirError;
use crate::fhir::instant::{Micros, format_instant, now_micros};
use crate::fhir::outcome::Issue;
use crate::search::query::{Condition, parse_condition};
use crate::search::registry::Registry;
use crate::search::request::{parse_request, patient_compartment_types, patients_compartment};
use crate::store::jobs::{self, Job};
use crate::store::search::{SearchSpec, search};
use crate::store::{AnyConnection, Store};

/// The `jobs.kind` of exports.
pub const KIND: &str = "export";
/// Resources read and written per batch (each batch renews the lease).
const BATCH: i64 = 1000;
/// Group members per query (each is an OR of the query; SQLite limits expression depth).
const MEMBER_CHUNK: usize = 200;
/// The output formats a client may ask for; all mean newline-delimited FHIR JSON.
pub const OUTPUT_FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// Where and how this node keeps export jobs.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// `[data dir]/exports`: one folder per job.
    pub dir: PathBuf,
    pub retention: Duration,
    pub lease: Duration,
    pub poll: Duration,
    pub workers: usize,
}

impl ExportConfig {
    pub fn new(data_dir: &Path, settings: &crate::config::ExportSettings) -> Self {
        ExportConfig {
            dir: data_dir.join("exports"),
            retention: Duration::from_secs(settings.export_retention_seconds),
            lease: Duration::from_secs(settings.export_lease_seconds.max(1)),
            poll: Duration::from_millis(settings.export_poll_ms.max(10)),
            workers: settings.export_workers,
        }
    }

    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
}

/// Which resources a kick-off asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Level {
    /// `[base]/$export`: everything.
    System,
    /// `[base]/Patient/$export`: every patient and their compartments.
    Patient,
    /// `[base]/Group/[id]/$export`: the group's patients and their compartments.
    Group,
}

/// A job's parameters, fixed at kick-off (`jobs.parameters`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportJob {
    pub level: Level,
    /// The types to export, in order (the job's cursor is an index into it).
    pub types: Vec<String>,
    /// Group level: the member patients' ids.
    #[serde(default)]
    pub members: Vec<String>,
    pub since: Option<String>,
    /// `_typeFilter` queries per type (any of them).
    #[serde(default)]
    pub type_filters: BTreeMap<String, Vec<String>>,
    /// The token's query-constrained scopes per type (any of them).
    #[serde(default)]
    pub scope_queries: BTreeMap<String, Vec<Vec<(String, String)>>>,
    /// The kick-off URL, for the manifest.
    pub request: String,
    pub transaction_time: String,
}

/// One finished output file (`jobs.result`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Output {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub count: i64,
}

/// The kick-off parameters as the client sent them.
#[derive(Debug, Default)]
pub struct KickOff {
    pub output_format: Option<String>,
    pub since: Option<String>,
    pub types: Vec<String>,
    pub type_filters: Vec<String>,
    /// Parameters this server does not support (refused).
    pub unsupported: Vec<String>,
}

impl KickOff {
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        let mut kick_off = KickOff::default();
        for (name, value) in pairs {
            match name.as_str() {
                "_outputFormat" => kick_off.output_format = Some(value.clone()),
                "_since" => kick_off.since = Some(value.clone()),
                "_type" => kick_off.types.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string),
                ),
                "_typeFilter" => kick_off.type_filters.extend(split_type_filters(value)),
                "patient" | "_elements" | "includeAssociatedData" | "_until" => {
                    kick_off.unsupported.push(name.clone())
                }
                _ => {}
            }
        }
        kick_off
    }
}

/// Splits a `_typeFilter` value at the commas that start another `Type?query` (a comma inside
/// a query separates values of one parameter).
fn split_type_filters(value: &str) -> Vec<String> {
    let mut filters: Vec<String> = Vec::new();
    for part in value.split(',') {
        let starts_query = part
            .split_once('?')
            .is_some_and(|(t, _)| crate::fhir::is_resource_type(t.trim()));
        match filters.last_mut() {
            Some(last) if !starts_query => {
                last.push(',');
                last.push_str(part);
            }
            _ => filters.push(part.trim_start().to_string()),
        }
    }
    filters
}

fn invalid(parameter: &str, message: impl Into<String>) -> FhirError {
    FhirError::invalid(Issue::error("invalid", message).at(parameter.to_string()))
}

/// The token's query constraints for exporting `resource_type` (empty: none), or 403 when no
/// `system/` scope lets it read the type: bulk export is for backend services.
pub fn export_grant(
    access: &Access,
    resource_type: &str,
) -> Result<Vec<Vec<(String, String)>>, FhirError> {
    if access.unrestricted {
        return Ok(Vec::new());
    }
    let granting: Vec<_> = access
        .scopes
        .iter()
        .filter(|s| {
            s.context == Context::System
                && s.applies_to(resource_type)
                && s.grants(Permission::Read)
        })
        .collect();
    if granting.is_empty() {
        return Err(FhirError::Forbidden(format!(
            "Bulk export of {resource_type} needs a system/{resource_type}.read (or system/*.rs) scope"
        )));
    }
    Ok(if granting.iter().all(|s| !s.query.is_empty()) {
        granting.iter().map(|s| s.query.clone()).collect()
    } else {
        Vec::new()
    })
}

/// Checks a kick-off and stores its job; returns the job id. `group`: the Group's id (group
/// level); `request`: the kick-off URL.
pub fn start(
    conn: &mut AnyConnection,
    registry: &Registry,
    access: &Access,
    level: Level,
    group: Option<&str>,
    kick_off: &KickOff,
    request: String,
) -> Result<String, FhirError> {
    if let Some(name) = kick_off.unsupported.first() {
        return Err(FhirError::invalid(
            Issue::error(
                "not-supported",
                format!("{name} is not supported by this server"),
            )
            .at(name.clone()),
        ));
    }
    if let Some(format) = &kick_off.output_format
        && !OUTPUT_FORMATS.contains(&format.as_str())
    {
        return Err(invalid(
            "_outputFormat",
            format!(
                "_outputFormat '{format}' is not supported; use {}",
                OUTPUT_FORMATS.join(", ")
            ),
        ));
    }
    if let Some(since) = &kick_off.since
        && (since.len() < 20 || crate::fhir::instant::parse_fhir_range(since).is_none())
    {
        return Err(invalid(
            "_since",
            "_since must be an instant such as 2026-11-01T00:00:00Z",
        ));
    }
    for name in &kick_off.types {
        if !crate::fhir::is_resource_type(name) {
            return Err(invalid("_type", format!("'{name}' is not a resource type")));
        }
    }
    // the types this level covers
    let candidates: Vec<String> = match level {
        // every type (one the server holds none of costs an indexed lookup when the job runs,
        // where listing the types held would scan every resource at kick-off)
        Level::System => crate::fhir::RESOURCE_TYPES
            .iter()
            .filter(|t| **t != "AuditEvent")
            .map(|t| t.to_string())
            .collect(),
        Level::Patient | Level::Group => patient_compartment_types(),
    };
    let mut scope_queries = BTreeMap::new();
    let types: Vec<String> = if kick_off.types.is_empty() {
        // every type of the level the token may export
        let allowed: Vec<String> = candidates
            .into_iter()
            .filter(|t| match export_grant(access, t) {
                Ok(queries) => {
                    if !queries.is_empty() {
                        scope_queries.insert(t.clone(), queries);
                    }
                    true
                }
                Err(_) => false,
            })
            .collect();
        if allowed.is_empty() && !access.unrestricted && !has_system_read(access) {
            return Err(FhirError::Forbidden(
                "Bulk export needs system/ read scopes (system/*.read or system/[type].rs)".into(),
            ));
        }
        allowed
    } else {
        let mut types = Vec::new();
        for name in &kick_off.types {
            if level != Level::System && !candidates.contains(name) {
                return Err(invalid(
                    "_type",
                    format!("{name} is not in the Patient compartment"),
                ));
            }
            let queries = export_grant(access, name)?;
            if !queries.is_empty() {
                scope_queries.insert(name.clone(), queries);
            }
            if !types.contains(name) {
                types.push(name.clone());
            }
        }
        types
    };
    let mut type_filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for filter in &kick_off.type_filters {
        let (resource_type, query) = filter
            .split_once('?')
            .ok_or_else(|| invalid("_typeFilter", "_typeFilter values are Type?query"))?;
        if !crate::fhir::is_resource_type(resource_type) {
            return Err(invalid(
                "_typeFilter",
                format!("'{resource_type}' is not a resource type"),
            ));
        }
        if !types.iter().any(|t| t == resource_type) {
            return Err(invalid(
                "_typeFilter",
                format!("_typeFilter names {resource_type}, which this export does not include"),
            ));
        }
        filter_conditions(registry, resource_type, query)?;
        type_filters
            .entry(resource_type.to_string())
            .or_default()
            .push(query.to_string());
    }
    let members = match (level.clone(), group) {
        (Level::Group, Some(group)) => group_members(conn, registry, access, group)?,
        _ => Vec::new(),
    };
    let job = ExportJob {
        level,
        types,
        members,
        since: kick_off.since.clone(),
        type_filters,
        scope_queries,
        request,
        transaction_time: format_instant(now_micros()),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_micros();
    jobs::insert(
        conn,
        &Job {
            id: id.clone(),
            kind: KIND.into(),
            status: "queued".into(),
            parameters: serde_json::to_string(&job)
                .map_err(|err| FhirError::Internal(err.into()))?,
            cursor: 0,
            processed: 0,
            total: job.types.len() as i64,
            message: None,
            created_at: now,
            updated_at: now,
            owner: Some(access.client_id.clone()),
            result: None,
        },
    )?;
    Ok(id)
}

fn has_system_read(access: &Access) -> bool {
    access
        .scopes
        .iter()
        .any(|s| s.context == Context::System && s.grants(Permission::Read))
}

/// The conditions of one `_typeFilter` query (search parameters only), or 400.
fn filter_conditions(
    registry: &Registry,
    resource_type: &str,
    query: &str,
) -> Result<Vec<Condition>, FhirError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
        invalid(
            "_typeFilter",
            "The _typeFilter query is not form-urlencoded",
        )
    })?;
    if let Some((name, _)) = pairs.iter().find(|(name, _)| {
        matches!(
            name.as_str(),
            "_include"
                | "_revinclude"
                | "_sort"
                | "_count"
                | "_summary"
                | "_elements"
                | "_total"
                | "_contained"
        )
    }) {
        return Err(invalid(
            "_typeFilter",
            format!("{name} cannot be used in a _typeFilter"),
        ));
    }
    Ok(parse_request(registry, resource_type, &pairs, true)?.conditions)
}

/// The active Patient members of `Group/[id]` (404 when the token cannot read it).
fn group_members(
    conn: &mut AnyConnection,
    registry: &Registry,
    access: &Access,
    id: &str,
) -> Result<Vec<String>, FhirError> {
    let queries = export_grant(access, "Group")?;
    let grant = crate::auth::Grant {
        patient: None,
        queries,
        fhir_user: None,
    };
    let mut conditions = vec![Condition::Id(vec![id.to_string()])];
    conditions.extend(grant_conditions(conn, registry, "Group", &grant)?);
    let found = search(
        conn,
        &SearchSpec {
            types: vec!["Group".into()],
            conditions,
            limit: 1,
            ..Default::default()
        },
    )?;
    let Some(group) = found
        .first()
        .and_then(|f| f.content.as_deref())
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
    else {
        return Err(FhirError::NotFound(format!("Group/{id} is not known")));
    };
    let mut members = Vec::new();
    for member in group["member"].as_array().into_iter().flatten() {
        if member["inactive"] == Value::Bool(true) {
            continue;
        }
        let Some(reference) = member["entity"]["reference"].as_str() else {
            continue;
        };
        // `Patient/x`, or an absolute URL ending in it
        let mut parts = reference.rsplit('/');
        if let (Some(patient), Some("Patient")) = (parts.next(), parts.next())
            && crate::fhir::is_valid_id(patient)
            && !members.iter().any(|m| m == patient)
        {
            members.push(patient.to_string());
        }
    }
    Ok(members)
}

/// The finished outputs recorded in a job.
pub fn outputs(job: &Job) -> Vec<Output> {
    job.result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default()
}

pub fn parameters(job: &Job) -> Result<ExportJob, FhirError> {
    serde_json::from_str(&job.parameters).map_err(|err| FhirError::Internal(err.into()))
}

/// The file of one type's output.
pub fn file_name(resource_type: &str) -> String {
    format!("{resource_type}.ndjson")
}

/// The background work of a node: run export jobs (`workers` at a time) and delete those past
/// their retention. Runs until the process ends.
pub async fn run(store: Store, registry: Arc<RegistryHandle>, config: ExportConfig) {
    // dropped with this task (shutdown), which stops the workers too
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.workers {
        let (store, registry, config) = (store.clone(), registry.clone(), config.clone());
        workers.spawn(async move {
            loop {
                match run_one(&store, &registry, &config).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(err) => {
                        tracing::warn!(error = %format!("{err:#}"), "export job step failed")
                    }
                }
                tokio::time::sleep(config.poll).await;
            }
        });
    }
    loop {
        if let Err(err) = remove_expired(&store, &config).await {
            tracing::warn!(error = %format!("{err:#}"), "cannot remove expired exports");
        }
        tokio::time::sleep(config.poll).await;
    }
}

/// Deletes the files and rows of jobs that ended longer ago than the retention period.
async fn remove_expired(store: &Store, config: &ExportConfig) -> Result<(), FhirError> {
    let before = now_micros() - i64::try_from(config.retention.as_micros()).unwrap_or(i64::MAX);
    let expired = store
        .read(move |conn| Ok::<_, FhirError>(jobs::ended_before(conn, KIND, before)?))
        .await?;
    for id in expired {
        remove_files(&config.job_dir(&id));
        let job = id.clone();
        store
            .write(move |conn| Ok::<_, FhirError>(jobs::delete(conn, &job)?))
            .await?;
        tracing::info!(job = %id, "export expired and deleted");
    }
    Ok(())
}

pub fn remove_files(dir: &Path) {
    if dir.exists()
        && let Err(err) = std::fs::remove_dir_all(dir)
    {
        tracing::warn!(error = %err, dir = %dir.display(), "cannot delete export files");
    }
}

/// Runs one claimed job until it ends or is no longer this worker's; false when there was none.
async fn run_one(
    store: &Store,
    registry: &RegistryHandle,
    config: &ExportConfig,
) -> Result<bool, FhirError> {
    let lease = i64::try_from(config.lease.as_micros()).unwrap_or(i64::MAX);
    let claimed = store
        .write(move |conn| Ok::<_, FhirError>(jobs::claim(conn, KIND, lease)?))
        .await?;
    let Some(job) = claimed else { return Ok(false) };
    tracing::info!(job = %job.id, resumed_at = job.cursor, "export job claimed");
    let dir = config.job_dir(&job.id);
    match export(store, registry, &dir, &job).await {
        Ok(()) => {}
        Err(Lost) => {
            // cancelled (its files go) or taken over by another node (which keeps them)
            let id = job.id.clone();
            let current = store
                .read(move |conn| Ok::<_, FhirError>(jobs::find(conn, &id)?))
                .await?;
            if current.is_none_or(|j| j.status == "cancelled") {
                remove_files(&dir);
            }
            tracing::info!(job = %job.id, "export job given up: cancelled or taken over");
        }
    }
    Ok(true)
}

/// The job is no longer this worker's, or could not go on (recorded as failed).
struct Lost;

async fn export(
    store: &Store,
    registry: &RegistryHandle,
    dir: &Path,
    job: &Job,
) -> Result<(), Lost> {
    let mut heartbeat = job.updated_at;
    let params = match parameters(job) {
        Ok(params) => params,
        Err(_) => {
            fail(store, job, heartbeat, "the job's parameters cannot be read").await;
            return Err(Lost);
        }
    };
    let mut done = outputs(job);
    let mut processed: i64 = done.iter().map(|o| o.count).sum();
    let start = usize::try_from(job.cursor).unwrap_or(0);
    for (index, resource_type) in params.types.iter().enumerate().skip(start) {
        let file = dir.join(file_name(resource_type));
        // this worker's own file until the type is complete
        let part = dir.join(format!(
            "{}.{}.part",
            file_name(resource_type),
            uuid::Uuid::new_v4().simple()
        ));
        if let Err(err) = std::fs::create_dir_all(dir) {
            tracing::error!(error = %err, "cannot create the export folder");
            fail(store, job, heartbeat, "the export files cannot be written").await;
            return Err(Lost);
        }
        let mut written: i64 = 0;
        let mut after: Option<i64> = None;
        let mut chunk = 0usize;
        // group members in several chunks: a resource of two members is written once
        let mut seen: HashSet<i64> = HashSet::new();
        loop {
            let step = {
                let (registry, params, part) = (registry.current(), params.clone(), part.clone());
                let resource_type = resource_type.clone();
                let carried = std::mem::take(&mut seen);
                store
                    .read(move |conn| {
                        write_batch(
                            conn,
                            &registry,
                            &params,
                            &resource_type,
                            (chunk, after),
                            carried,
                            &part,
                        )
                    })
                    .await
            };
            let batch = match step {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::error!(job = %job.id, error = %format!("{err:#}"), "export batch failed");
                    let _ = std::fs::remove_file(&part);
                    fail(
                        store,
                        job,
                        heartbeat,
                        "the export failed; see the server log",
                    )
                    .await;
                    return Err(Lost);
                }
            };
            seen = batch.seen;
            written += batch.written;
            heartbeat = match renew(store, job, index, processed + written, &done, heartbeat).await
            {
                Some(renewed) => renewed,
                None => {
                    let _ = std::fs::remove_file(&part);
                    return Err(Lost);
                }
            };
            match batch.next {
                Next::After(pk) => after = Some(pk),
                Next::Chunk => {
                    chunk += 1;
                    after = None;
                }
                Next::Done => break,
            }
        }
        if written > 0 {
            if let Err(err) = std::fs::rename(&part, &file) {
                tracing::error!(error = %err, "cannot move an export file into place");
                fail(store, job, heartbeat, "the export files cannot be written").await;
                return Err(Lost);
            }
            done.push(Output {
                resource_type: resource_type.clone(),
                count: written,
            });
        } else {
            let _ = std::fs::remove_file(&part);
        }
        processed += written;
        heartbeat = match renew(store, job, index + 1, processed, &done, heartbeat).await {
            Some(renewed) => renewed,
            None => return Err(Lost),
        };
    }
    // leftovers of workers that died mid-type
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(".part") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let result = serde_json::to_string(&done).unwrap_or_else(|_| "[]".into());
    let id = job.id.clone();
    let finished = store
        .write(move |conn| {
            Ok::<_, FhirError>(jobs::finish_held(
                conn,
                &id,
                "completed",
                Some(&result),
                None,
                heartbeat,
            )?)
        })
        .await;
    match finished {
        Ok(true) => {
            tracing::info!(job = %job.id, resources = processed, "export completed");
            Ok(())
        }
        _ => Err(Lost),
    }
}

async fn renew(
    store: &Store,
    job: &Job,
    cursor: usize,
    processed: i64,
    done: &[Output],
    heartbeat: Micros,
) -> Option<Micros> {
    let id = job.id.clone();
    let result = serde_json::to_string(done).unwrap_or_else(|_| "[]".into());
    store
        .write(move |conn| {
            Ok::<_, FhirError>(jobs::checkpoint(
                conn,
                &id,
                cursor as i64,
                processed,
                Some(&result),
                heartbeat,
            )?)
        })
        .await
        .ok()
        .flatten()
}

async fn fail(store: &Store, job: &Job, heartbeat: Micros, message: &'static str) {
    let id = job.id.clone();
    let _ = store
        .write(move |conn| {
            Ok::<_, FhirError>(jobs::finish_held(
                conn,
                &id,
                "failed",
                None,
                Some(message),
                heartbeat,
            )?)
        })
        .await;
}

/// Where the walk of a type goes on.
enum Next {
    After(i64),
    /// The next chunk of group members.
    Chunk,
    Done,
}

struct Batch {
    written: i64,
    next: Next,
    /// Keys written so far (groups of several member chunks only).
    seen: HashSet<i64>,
}

/// Reads one batch of `resource_type` after key `after` and appends it to `part`.
fn write_batch(
    conn: &mut AnyConnection,
    registry: &Registry,
    params: &ExportJob,
    resource_type: &str,
    (chunk, after): (usize, Option<i64>),
    mut seen: HashSet<i64>,
    part: &Path,
) -> Result<Batch, FhirError> {
    let members: Option<&[String]> = match params.level {
        Level::Group => Some(
            params
                .members
                .chunks(MEMBER_CHUNK)
                .nth(chunk)
                .unwrap_or_default(),
        ),
        _ => None,
    };
    let chunks = params.members.len().div_ceil(MEMBER_CHUNK);
    if params.level == Level::Group && members.is_none_or(<[String]>::is_empty) {
        return Ok(Batch {
            written: 0,
            next: Next::Done,
            seen,
        });
    }
    let mut conditions = Vec::new();
    if params.level != Level::System {
        conditions.push(
            patients_compartment(registry, resource_type, members)
                .unwrap_or(Condition::AnyOf(Vec::new())),
        );
    }
    if let Some(since) = &params.since {
        conditions.push(parse_condition(
            registry,
            resource_type,
            "_lastUpdated",
            &format!("gt{since}"),
            0,
        )?);
    }
    if let Some(filters) = params.type_filters.get(resource_type) {
        let mut alternatives = Vec::new();
        for query in filters {
            alternatives.push(Condition::AllOf(filter_conditions(
                registry,
                resource_type,
                query,
            )?));
        }
        conditions.push(Condition::AnyOf(alternatives));
    }
    if let Some(queries) = params.scope_queries.get(resource_type) {
        let grant = crate::auth::Grant {
            patient: None,
            queries: queries.clone(),
            fhir_user: None,
        };
        conditions.extend(grant_conditions(conn, registry, resource_type, &grant)?);
    }
    let found = search(
        conn,
        &SearchSpec {
            types: vec![resource_type.to_string()],
            conditions,
            after_pk: after,
            limit: BATCH,
            ..Default::default()
        },
    )?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .map_err(|err| FhirError::Internal(err.into()))?;
    let mut text = String::new();
    let mut written = 0;
    for resource in &found {
        let Some(content) = &resource.content else {
            continue;
        };
        if chunks > 1 && !seen.insert(resource.pk) {
            continue;
        }
        if content.contains('\n') {
            // one resource per line
            let value: Value =
                serde_json::from_str(content).map_err(|err| FhirError::Internal(err.into()))?;
            text.push_str(&value.to_string());
        } else {
            text.push_str(content);
        }
        text.push('\n');
        written += 1;
    }
    file.write_all(text.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|err| FhirError::Internal(err.into()))?;
    let next = match found.last() {
        Some(last) if found.len() as i64 == BATCH => Next::After(last.pk),
        _ if params.level == Level::Group && chunk + 1 < chunks => Next::Chunk,
        _ => Next::Done,
    };
    Ok(Batch {
        written,
        next,
        seen,
    })
}

#[cfg(test)]
mod tests {
    use super::split_type_filters;

    #[test]
    fn type_filters_split_only_where_a_query_starts() {
        assert_eq!(
            split_type_filters("Observation?category=a,b,Condition?subject=Patient/p1"),
            vec![
                "Observation?category=a,b".to_string(),
                "Condition?subject=Patient/p1".to_string()
            ]
        );
        assert_eq!(
            split_type_filters("Observation?code=x"),
            vec!["Observation?code=x".to_string()]
        );
    }
}
