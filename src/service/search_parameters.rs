//! The search parameters in force: the official R4 set, the program's (from `profiles/`) and
//! the SearchParameter resources clients stored. A stored SearchParameter takes effect at the
//! next `$reindex`, which also indexes existing resources with it, in a background job that
//! survives restarts and can run on any node. Every node polls a shared version number and
//! reloads its registry when another node changed it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::FhirError;
use crate::fhir::instant::now_micros;
use crate::fhir::outcome::Issue;
use crate::search::extract::extract;
use crate::search::registry::Registry;
use crate::store::jobs::{self, Job};
use crate::store::{AnyConnection, Store, index};

/// The shared version of the search parameter set (`server_state.name`).
const VERSION_KEY: &str = "search-parameters";
/// Resources re-indexed per transaction.
const BATCH: i64 = 200;
/// A running job whose heartbeat is older than this is taken over by another worker.
const STALE_AFTER_MICROS: i64 = 30_000_000;

/// The registry in force on this node, swapped atomically on reload.
pub struct RegistryHandle {
    current: RwLock<Arc<Registry>>,
    version: RwLock<String>,
}

impl RegistryHandle {
    pub fn new(registry: Registry, version: String) -> Self {
        RegistryHandle {
            current: RwLock::new(Arc::new(registry)),
            version: RwLock::new(version),
        }
    }

    pub fn current(&self) -> Arc<Registry> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, registry: Registry, version: String) {
        if let Ok(mut guard) = self.current.write() {
            *guard = Arc::new(registry);
        }
        if let Ok(mut guard) = self.version.write() {
            *guard = version;
        }
    }

    fn version(&self) -> String {
        self.version.read().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Builds the registry: R4, then the program's SearchParameters, then the stored ones.
pub fn load(conn: &mut AnyConnection) -> Result<(Registry, String), FhirError> {
    let mut registry = Registry::r4();
    for definition in crate::fhir::profiles::artefacts_of("SearchParameter") {
        registry.add(&definition);
    }
    let stored = crate::store::search::search(
        conn,
        &crate::store::search::SearchSpec {
            types: vec!["SearchParameter".into()],
            limit: 10_000,
            ..Default::default()
        },
    )?;
    for found in stored {
        if let Some(definition) = found
            .content
            .as_deref()
            .and_then(|c| serde_json::from_str::<Value>(c).ok())
            && definition["status"] != "retired"
        {
            registry.add(&definition);
        }
    }
    let version = jobs::state(conn, VERSION_KEY)?.unwrap_or_default();
    Ok((registry, version))
}

/// Checks a SearchParameter before it is stored: its expression must be one the server can
/// evaluate, or searching with it would silently match nothing.
pub fn check_definition(resource: &serde_json::Map<String, Value>) -> Result<(), FhirError> {
    if resource.get("resourceType").and_then(Value::as_str) != Some("SearchParameter") {
        return Ok(());
    }
    if let Some(expression) = resource.get("expression").and_then(Value::as_str)
        && let Err(err) = crate::fhirpath::parse(expression)
    {
        return Err(FhirError::Unprocessable(vec![
            Issue::error(
                "invalid",
                format!("The expression cannot be evaluated: {err}"),
            )
            .at("SearchParameter.expression"),
        ]));
    }
    Ok(())
}

/// `$reindex`: reloads the search parameters (here and, through the shared version, on every
/// node) and queues a job that re-indexes the resources of `types` (all when empty). Returns the
/// job id.
pub async fn start_reindex(
    store: &Store,
    handle: &RegistryHandle,
    types: Vec<String>,
) -> Result<String, FhirError> {
    let id = uuid::Uuid::new_v4().to_string();
    let job_id = id.clone();
    let (registry, version) = store
        .write(move |conn| {
            let version = uuid::Uuid::new_v4().to_string();
            jobs::set_state(conn, VERSION_KEY, &version)?;
            let (registry, _) = load(conn)?;
            let total = jobs::count_resources(conn, &types)?;
            let now = now_micros();
            jobs::insert(
                conn,
                &Job {
                    id: job_id,
                    kind: "reindex".into(),
                    status: "queued".into(),
                    parameters: json!({ "types": types }).to_string(),
                    cursor: 0,
                    processed: 0,
                    total,
                    message: None,
                    created_at: now,
                    updated_at: now,
                    owner: None,
                    result: None,
                },
            )?;
            Ok::<_, FhirError>((registry, version))
        })
        .await?;
    handle.replace(registry, version);
    Ok(id)
}

/// The background work of a node: follow registry changes made by other nodes, and run queued
/// (or abandoned) re-index jobs. Runs until the process ends.
pub async fn run_background(store: Store, handle: Arc<RegistryHandle>) {
    loop {
        if let Err(err) = follow_registry(&store, &handle).await {
            tracing::warn!(error = %format!("{err:#}"), "cannot check the search parameter version");
        }
        if let Err(err) = store.checkpoint().await {
            tracing::warn!(error = %err, "WAL checkpoint failed");
        }
        match run_one_job(&store, &handle).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %format!("{err:#}"), "re-index job step failed"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow_registry(store: &Store, handle: &RegistryHandle) -> Result<(), FhirError> {
    let shared = store
        .read(|conn| Ok::<_, FhirError>(jobs::state(conn, VERSION_KEY)?.unwrap_or_default()))
        .await?;
    if shared != handle.version() {
        let (registry, version) = store.read(load).await?;
        handle.replace(registry, version);
        tracing::info!("search parameters reloaded");
    }
    Ok(())
}

/// Runs one claimed job to its end (or until it is cancelled); false when there was none.
async fn run_one_job(store: &Store, handle: &RegistryHandle) -> Result<bool, FhirError> {
    let claimed = store
        .write(|conn| Ok::<_, FhirError>(jobs::claim(conn, "reindex", STALE_AFTER_MICROS)?))
        .await?;
    let Some(job) = claimed else { return Ok(false) };
    let types: Vec<String> = serde_json::from_str::<Value>(&job.parameters)
        .ok()
        .and_then(|p| {
            p["types"].as_array().map(|t| {
                t.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    let (mut cursor, mut processed, mut heartbeat) = (job.cursor, job.processed, job.updated_at);
    loop {
        let registry = handle.current();
        let (id, batch_types) = (job.id.clone(), types.clone());
        let step = store
            .write(move |conn| {
                let batch = jobs::resource_keys_after(conn, cursor, &batch_types, BATCH)?;
                let mut last = cursor;
                for (pk, content) in &batch {
                    if let Some(resource) = content
                        .as_deref()
                        .and_then(|c| serde_json::from_str::<Value>(c).ok())
                    {
                        index::clear(conn, *pk)?;
                        index::insert(conn, *pk, &extract(&registry, &resource))?;
                    }
                    last = *pk;
                }
                if !jobs::advance(conn, &id, last, processed + batch.len() as i64, heartbeat)? {
                    // cancelled or taken over by another worker: keep nothing of this batch
                    return Err(FhirError::Conflict(
                        "the job is no longer this worker's".into(),
                    ));
                }
                Ok((batch.len() as i64, last))
            })
            .await;
        let (count, last) = match step {
            Ok(step) => step,
            Err(FhirError::Conflict(_)) => return Ok(true),
            Err(err) => return Err(err),
        };
        cursor = last;
        processed += count;
        heartbeat += 1;
        if count < BATCH {
            let id = job.id.clone();
            store
                .write(move |conn| {
                    Ok::<_, FhirError>(jobs::finish(
                        conn,
                        &id,
                        "completed",
                        Some(format!("{processed} resources re-indexed")),
                    )?)
                })
                .await?;
            tracing::info!(job = %job.id, processed, "re-index completed");
            return Ok(true);
        }
    }
}
