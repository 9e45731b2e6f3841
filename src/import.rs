//! `pivot-fhir import PATH...`: loads NDJSON files (one resource a line) and Bundle JSON files
//! (each entry's resource), or folders of them, into the configured database through the same
//! service functions as the REST API, so validation, search indexing, referral effects and
//! Subscription notifications apply. A resource with an id is written as an update (update as
//! create), so importing twice changes nothing but the version; one without an id is created.
//!
//! Progress (resources, rate, ETA) goes to stderr. Each chunk of items commits together with
//! the file's progress row (`import_files`), so after an interruption the next run continues
//! after the last committed item; failures (`import_failures`) are kept with their
//! OperationOutcome and all of them are reported at the end: nothing is skipped silently.

use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use diesel::Connection;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use serde_json::{Map, Value, json};

use crate::error::FhirError;
use crate::fhir::outcome::{Issue, operation_outcome};
use crate::service::write_effects::Actor;
use crate::store::sql::{Sql, execute, run};
use crate::store::{AnyConnection, Store, StoreError};

/// Items committed together (with their progress row).
const CHUNK: usize = 200;

/// What happened to one file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileReport {
    pub path: String,
    pub total: u64,
    /// Items processed before this run (an earlier, interrupted or completed run).
    pub skipped: u64,
    pub written: u64,
    pub failed: u64,
}

/// A failed item: where, and why as an OperationOutcome.
#[derive(Debug, Clone, QueryableByName)]
pub struct Failure {
    #[diesel(sql_type = Text)]
    pub path: String,
    #[diesel(sql_type = BigInt)]
    pub item: i64,
    #[diesel(sql_type = Text)]
    pub outcome: String,
}

#[derive(QueryableByName)]
struct Progress {
    #[diesel(sql_type = BigInt)]
    done: i64,
}

/// The files named by `paths`: files as given, folders' `*.ndjson`, `*.jsonl` and `*.json`
/// files (recursively, in name order).
pub fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            anyhow::bail!("{} is neither a file nor a folder", path.display());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("ndjson" | "jsonl" | "json")
        ) {
            found.push(path);
        }
    }
    Ok(())
}

/// A resource read from a file, or why it could not be read.
type Item = Result<Map<String, Value>, FhirError>;

/// The items of a file: NDJSON lines (blank lines count, as failures say which line), or a
/// Bundle's entries. A Bundle's `urn:uuid:` fullUrls become ids, and references to them become
/// `Type/id`, so entries may refer to each other.
enum Items {
    Lines(std::io::Lines<std::io::BufReader<std::fs::File>>),
    Entries(std::vec::IntoIter<Result<Map<String, Value>, FhirError>>),
}

impl Iterator for Items {
    type Item = Result<Map<String, Value>, FhirError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Items::Lines(lines) => Some(match lines.next()? {
                Ok(line) if line.trim().is_empty() => Err(FhirError::invalid(Issue::error(
                    "structure",
                    "Empty line: each NDJSON line holds one resource",
                ))),
                Ok(line) => crate::fhir::parse::parse_resource(line.as_bytes(), None),
                Err(err) => Err(FhirError::invalid(Issue::error(
                    "structure",
                    format!("The line cannot be read: {err}"),
                ))),
            }),
            Items::Entries(entries) => entries.next(),
        }
    }
}

/// Whether a file is a Bundle (a JSON object whose first non-blank character is `{` and that is
/// not one resource a line): `.json` files are Bundles, the rest NDJSON.
fn is_bundle(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some("json")
}

fn open(path: &Path) -> anyhow::Result<(u64, Items)> {
    let name = path.display();
    if is_bundle(path) {
        let text =
            std::fs::read(path).map_err(|err| anyhow::anyhow!("cannot read {name}: {err}"))?;
        let bundle = crate::fhir::parse::parse_resource(&text, Some("Bundle")).map_err(|err| {
            let diagnostics: Vec<String> = err
                .issues()
                .iter()
                .map(|issue| operation_outcome(std::slice::from_ref(issue)).to_string())
                .collect();
            anyhow::anyhow!("{name} is not a Bundle: {}", diagnostics.join("; "))
        })?;
        let entries = bundle_entries(bundle);
        Ok((entries.len() as u64, Items::Entries(entries.into_iter())))
    } else {
        let file = std::fs::File::open(path)
            .map_err(|err| anyhow::anyhow!("cannot read {name}: {err}"))?;
        let total = std::io::BufReader::new(file).lines().count() as u64;
        let file = std::fs::File::open(path)
            .map_err(|err| anyhow::anyhow!("cannot read {name}: {err}"))?;
        Ok((total, Items::Lines(std::io::BufReader::new(file).lines())))
    }
}

fn bundle_entries(bundle: Map<String, Value>) -> Vec<Result<Map<String, Value>, FhirError>> {
    let entries = match bundle.get("entry") {
        Some(Value::Array(entries)) => entries.clone(),
        _ => Vec::new(),
    };
    // urn:uuid:X → Type/X, so entries can refer to each other
    let mut identities = std::collections::HashMap::new();
    for entry in &entries {
        if let (Some(full_url), Some(resource_type)) = (
            entry.get("fullUrl").and_then(Value::as_str),
            entry
                .pointer("/resource/resourceType")
                .and_then(Value::as_str),
        ) && let Some(uuid) = full_url.strip_prefix("urn:uuid:")
            && crate::fhir::is_valid_id(uuid)
        {
            identities.insert(
                full_url.to_string(),
                (resource_type.to_string(), uuid.to_string()),
            );
        }
    }
    entries
        .into_iter()
        .map(|entry| {
            let full_url = entry
                .get("fullUrl")
                .and_then(Value::as_str)
                .map(str::to_string);
            let Some(Value::Object(mut resource)) = entry.get("resource").cloned() else {
                return Err(FhirError::invalid(Issue::error(
                    "required",
                    "The entry holds no resource",
                )));
            };
            if let Some((_, id)) = full_url.as_ref().and_then(|u| identities.get(u))
                && !resource.contains_key("id")
            {
                resource.insert("id".into(), Value::String(id.clone()));
            }
            let mut value = Value::Object(resource);
            rewrite_references(&mut value, &identities);
            let text = value.to_string();
            crate::fhir::parse::parse_resource(text.as_bytes(), None)
        })
        .collect()
}

fn rewrite_references(
    value: &mut Value,
    identities: &std::collections::HashMap<String, (String, String)>,
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "reference"
                    && let Value::String(reference) = child
                    && let Some((ty, id)) = identities.get(reference.as_str())
                {
                    *reference = format!("{ty}/{id}");
                } else {
                    rewrite_references(child, identities);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_references(item, identities)),
        _ => {}
    }
}

/// Writes one resource as the REST API would: update (as create) with its id, else create.
pub fn write_one(
    conn: &mut AnyConnection,
    registry: &crate::search::registry::Registry,
    resource: Map<String, Value>,
) -> Result<(), FhirError> {
    let id = resource
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string);
    match id {
        Some(id) => crate::service::resources::update(
            conn,
            registry,
            &Actor::Server,
            &id,
            resource,
            None,
            "PUT",
        )
        .map(drop),
        None => {
            crate::service::resources::create(conn, registry, &Actor::Server, resource).map(drop)
        }
    }
}

fn progress_of(conn: &mut AnyConnection, path: &str) -> Result<i64, StoreError> {
    let mut sql = Sql::default();
    sql.push("SELECT done FROM import_files WHERE path = ");
    sql.text(path);
    Ok(run::<Progress>(conn, sql)?.first().map_or(0, |p| p.done))
}

fn record(
    conn: &mut AnyConnection,
    path: &str,
    done: i64,
    written: i64,
    failures: &[(i64, String)],
) -> Result<(), StoreError> {
    let now = crate::fhir::instant::now_micros();
    let mut sql = Sql::default();
    sql.push("INSERT INTO import_files (path, done, written, failed, updated_at) VALUES (");
    sql.text(path);
    sql.push(", ");
    sql.int(done);
    sql.push(", ");
    sql.int(written);
    sql.push(", ");
    sql.int(failures.len() as i64);
    sql.push(", ");
    sql.int(now);
    sql.push(
        ") ON CONFLICT (path) DO UPDATE SET done = excluded.done, \
         written = import_files.written + excluded.written, \
         failed = import_files.failed + excluded.failed, updated_at = excluded.updated_at",
    );
    execute(conn, sql)?;
    for (item, outcome) in failures {
        let mut sql = Sql::default();
        sql.push("INSERT INTO import_failures (path, item, outcome) VALUES (");
        sql.text(path);
        sql.push(", ");
        sql.int(*item);
        sql.push(", ");
        sql.text(outcome);
        sql.push(") ON CONFLICT (path, item) DO UPDATE SET outcome = excluded.outcome");
        execute(conn, sql)?;
    }
    Ok(())
}

/// The failures recorded for `paths`, in file and item order.
pub fn failures(conn: &mut AnyConnection, paths: &[String]) -> Result<Vec<Failure>, StoreError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::default();
    sql.push("SELECT path, item, outcome FROM import_failures WHERE path IN (");
    sql.text_list(paths.iter().map(String::as_str));
    sql.push(") ORDER BY path, item");
    run(conn, sql)
}

/// Forgets the progress and failures of `paths` (`--restart`).
pub fn forget(conn: &mut AnyConnection, paths: &[String]) -> Result<(), StoreError> {
    for table in ["import_files", "import_failures"] {
        let mut sql = Sql::default();
        sql.push(&format!("DELETE FROM {table} WHERE path IN ("));
        sql.text_list(paths.iter().map(String::as_str));
        sql.push(")");
        execute(conn, sql)?;
    }
    Ok(())
}

/// Progress on stderr: at most a few lines a second.
struct Meter {
    started: Instant,
    last: Instant,
    total: u64,
    done: u64,
    failed: u64,
}

impl Meter {
    fn show(&mut self, name: &str, force: bool) {
        if !force && self.last.elapsed().as_millis() < 500 {
            return;
        }
        self.last = Instant::now();
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / seconds;
        let eta = if rate > 0.0 {
            format!("{:.0}s", self.total.saturating_sub(self.done) as f64 / rate)
        } else {
            "?".into()
        };
        let percent = if self.total == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        };
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r{name}: {}/{} resources ({percent:.0}%), {rate:.0}/s, ETA {eta}, {} failed   ",
            self.done, self.total, self.failed
        );
        if force {
            let _ = writeln!(err);
        }
    }
}

/// Imports `file` into `store`, continuing after the items an earlier run committed.
pub fn import_file(
    store: &Store,
    registry: &crate::search::registry::Registry,
    file: &Path,
) -> anyhow::Result<FileReport> {
    let canonical = std::fs::canonicalize(file)
        .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", file.display()))?
        .display()
        .to_string();
    let (total, items) = open(file)?;
    let already = store
        .blocking(|conn| progress_of(conn, &canonical))
        .map_err(|err| anyhow::anyhow!("cannot read the import progress: {err}"))?;
    let already = u64::try_from(already).unwrap_or(0);
    let mut report = FileReport {
        path: canonical.clone(),
        total,
        skipped: already.min(total),
        ..FileReport::default()
    };
    let mut meter = Meter {
        started: Instant::now(),
        last: Instant::now(),
        total: total.saturating_sub(already),
        done: 0,
        failed: 0,
    };
    let name = file.display().to_string();
    let mut items = items.enumerate().skip(already as usize).peekable();
    while items.peek().is_some() {
        let chunk: Vec<(usize, Item)> = items.by_ref().take(CHUNK).collect();
        let last = chunk.last().map_or(0, |(index, _)| *index as i64 + 1);
        let outcome = store.blocking_write(|conn| {
            let mut written = 0i64;
            let mut failed: Vec<(i64, String)> = Vec::new();
            for (index, item) in chunk {
                // each resource in a savepoint: a failure undoes only its own writes
                let result = item.and_then(|resource| {
                    conn.transaction::<_, FhirError, _>(|conn| write_one(conn, registry, resource))
                });
                match result {
                    Ok(()) => written += 1,
                    Err(err) => failed.push((
                        index as i64 + 1,
                        operation_outcome(&err.issues()).to_string(),
                    )),
                }
            }
            record(conn, &canonical, last, written, &failed)?;
            Ok::<_, FhirError>((written, failed.len() as u64))
        });
        let (written, failed) =
            outcome.map_err(|err| anyhow::anyhow!("the database refused the import: {err}"))?;
        report.written += written as u64;
        report.failed += failed;
        meter.done = report.written + report.failed;
        meter.failed = report.failed;
        meter.show(&name, false);
    }
    meter.show(&name, true);
    Ok(report)
}

/// A failure as one NDJSON line of the summary: the OperationOutcome, its first issue's
/// expression led by the file and item.
pub fn failure_line(failure: &Failure) -> String {
    let outcome: Value = serde_json::from_str(&failure.outcome).unwrap_or_else(|_| json!({}));
    json!({"file": failure.path, "item": failure.item, "outcome": outcome}).to_string()
}
