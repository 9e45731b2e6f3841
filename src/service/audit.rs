//! The audit trail: every FHIR interaction leaves a row (who, which client, what, when, outcome;
//! never resource content), shown to administrators as AuditEvent resources.
//!
//! A successful write records its row in its own transaction (the row exists exactly when the
//! change does). Everything else (reads, searches, refused or failed requests) goes through a
//! bounded queue to a writer that appends in batches; when the queue is full, requests wait
//! rather than lose their rows.

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::auth::Access;
use crate::error::FhirError;
use crate::fhir::instant::{format_instant, now_micros, parse_fhir_range};
use crate::service::resources::Written;
use crate::store::audit::{AuditFilter, AuditRow, append};
use crate::store::{AnyConnection, Store};

const QUEUE_CAPACITY: usize = 10_000;
const BATCH: usize = 1_000;
/// How long the writer collects rows after the first one before appending them: one commit per
/// interval instead of one per request under load (each commit is a WAL append and, on SQLite,
/// the single writer's time).
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// Where rows recorded outside a write's transaction go.
#[derive(Clone)]
pub struct AuditTrail {
    sender: mpsc::Sender<AuditRow>,
}

/// The receiving end, drained by `run_writer`.
pub struct AuditQueue(mpsc::Receiver<AuditRow>);

pub fn trail() -> (AuditTrail, AuditQueue) {
    let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
    (AuditTrail { sender }, AuditQueue(receiver))
}

impl AuditTrail {
    pub async fn record(&self, row: AuditRow) {
        if self.sender.send(row).await.is_err() {
            tracing::error!("audit trail writer stopped; an audit row was not recorded");
        }
    }
}

/// Appends queued rows in batches until every `AuditTrail` is gone and the queue is empty.
pub async fn run_writer(store: Store, AuditQueue(mut receiver): AuditQueue) {
    while let Some(first) = receiver.recv().await {
        let mut rows = vec![first];
        let until = tokio::time::Instant::now() + GATHER;
        while rows.len() < BATCH {
            match tokio::time::timeout_at(until, receiver.recv()).await {
                Ok(Some(row)) => rows.push(row),
                // the interval is over, or every sender is gone (shutdown): append what we have
                Ok(None) | Err(_) => break,
            }
        }
        let mut attempt = 0;
        loop {
            let batch = rows.clone();
            match store.write(move |conn| append(conn, &batch)).await {
                Ok(()) => break,
                Err(err) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(error = %err, rows = rows.len(), attempt, "audit rows not written yet; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                }
                Err(err) => {
                    tracing::error!(error = %err, rows = rows.len(), "audit rows could not be written");
                    break;
                }
            }
        }
    }
}

/// What one request is, for the trail.
#[derive(Debug, Clone, Default)]
pub struct Interaction {
    pub code: &'static str,
    pub action: &'static str,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub version_id: Option<i64>,
    pub query: Option<String>,
}

/// Classifies a request under `/fhir` by method and path (http.html's interactions); `None`
/// for what is not audited (the CapabilityStatement, discovery).
pub fn classify(method: &str, fhir_path: &str, query: &str) -> Option<Interaction> {
    let segments: Vec<&str> = fhir_path.split('/').filter(|s| !s.is_empty()).collect();
    let query = (!query.is_empty()).then(|| query.to_string());
    let at = |code, action, t: Option<&str>, id: Option<&str>| Interaction {
        code,
        action,
        resource_type: t.map(str::to_string),
        resource_id: id.map(str::to_string),
        version_id: None,
        query: query.clone(),
    };
    let write = |method: &str| match method {
        "POST" => Some(("create", "C")),
        "PUT" => Some(("update", "U")),
        "PATCH" => Some(("patch", "U")),
        "DELETE" => Some(("delete", "D")),
        _ => None,
    };
    Some(match (method, segments.as_slice()) {
        (_, ["metadata"]) | (_, [".well-known", ..]) => return None,
        ("GET", []) => at("search-system", "E", None, None),
        ("POST", []) => at("batch", "E", None, None),
        (_, ["_history"]) => at("history-system", "R", None, None),
        (_, [op]) if op.starts_with('$') => at("operation", "E", None, None),
        // Bulk Data export status and files: part of the $export operation
        (_, ["_export", ..]) => at("operation", "E", None, None),
        ("GET", [t]) | ("POST", [t, "_search"]) => at("search-type", "E", Some(t), None),
        (_, [t, "_history"]) => at("history-type", "R", Some(t), None),
        (_, [t, op]) if op.starts_with('$') => at("operation", "E", Some(t), None),
        (_, [t, id, op]) if op.starts_with('$') => at("operation", "E", Some(t), Some(id)),
        ("GET", [t, id]) => at("read", "R", Some(t), Some(id)),
        (_, [t, id, "_history"]) => at("history-instance", "R", Some(t), Some(id)),
        (_, [t, id, "_history", version]) => Interaction {
            version_id: version.parse().ok(),
            ..at("vread", "R", Some(t), Some(id))
        },
        ("GET", [t, id, _compartment]) => at("search-type", "E", Some(t), Some(id)),
        (method, [t]) => {
            let (code, action) = write(method)?;
            at(code, action, Some(t), None)
        }
        (method, [t, id]) => {
            let (code, action) = write(method)?;
            at(code, action, Some(t), Some(id))
        }
        _ => at("operation", "E", None, None),
    })
}

/// Who made a request, as the trail records it.
pub fn who(access: Option<&Access>) -> (String, Option<String>) {
    match access {
        Some(access) => (access.client_id.clone(), access.fhir_user.clone()),
        None => ("unauthenticated".to_string(), None),
    }
}

/// The row of a successful write, to append in the write's own transaction.
pub fn written_row(
    access: &Access,
    interaction: &'static str,
    written: &Written,
    status: u16,
    request_id: Option<String>,
) -> AuditRow {
    let (client_id, fhir_user) = who(Some(access));
    AuditRow {
        seq: 0,
        recorded: now_micros(),
        interaction: interaction.to_string(),
        action: match interaction {
            "create" => "C",
            "delete" => "D",
            _ => "U",
        }
        .to_string(),
        status: i32::from(status),
        client_id,
        fhir_user,
        resource_type: Some(written.resource_type.clone()),
        resource_id: Some(written.id.clone()),
        version_id: Some(written.version_id),
        query: None,
        request_id,
    }
}

/// Appends the rows of a transaction's writes inside it.
pub fn record_in_transaction(conn: &mut AnyConnection, rows: &[AuditRow]) -> Result<(), FhirError> {
    append(conn, rows).map_err(FhirError::from)
}

/// AuditEvent.outcome for an HTTP status.
fn outcome(status: i32) -> &'static str {
    match status {
        500.. => "8",
        400.. => "4",
        _ => "0",
    }
}

/// A trail row as an R4 AuditEvent.
pub fn to_audit_event(row: &AuditRow) -> Value {
    let recorded = format_instant(row.recorded);
    let who = match &row.fhir_user {
        Some(user) => json!({ "reference": user }),
        None => {
            json!({ "identifier": { "system": "urn:pivot-fhir:client-id", "value": row.client_id } })
        }
    };
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": row.seq.to_string(),
        "meta": { "versionId": "1", "lastUpdated": recorded },
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{ "system": "http://hl7.org/fhir/restful-interaction", "code": row.interaction }],
        "action": row.action,
        "recorded": recorded,
        "outcome": outcome(row.status),
        "outcomeDesc": format!("HTTP {}", row.status),
        "agent": [{
            "type": { "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                "code": "humanuser",
            }]},
            "who": who,
            "altId": row.client_id,
            "requestor": true,
        }],
        "source": {
            "observer": { "display": "pivot-fhir" },
            "type": [{
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server",
            }],
        },
    });
    if row.fhir_user.is_none() {
        // a backend service, not a person
        event["agent"][0]["type"]["coding"][0] = json!({
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "AUT",
            "display": "author (originator)",
        });
    }
    let mut entity = serde_json::Map::new();
    if let Some(resource_type) = &row.resource_type {
        let reference = match (&row.resource_id, row.version_id) {
            (Some(id), Some(version)) => Some(format!("{resource_type}/{id}/_history/{version}")),
            (Some(id), None) => Some(format!("{resource_type}/{id}")),
            (None, _) => None,
        };
        if let Some(reference) = reference {
            entity.insert("what".into(), json!({ "reference": reference }));
        }
        entity.insert(
            "type".into(),
            json!({
                "system": "http://hl7.org/fhir/resource-types",
                "code": resource_type,
            }),
        );
    }
    if let Some(query) = &row.query {
        use base64::Engine;
        entity.insert(
            "query".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(query)),
        );
    }
    if !entity.is_empty() {
        event["entity"] = json!([Value::Object(entity)]);
    }
    if let Some(request_id) = &row.request_id {
        event["source"]["site"] = json!(request_id);
    }
    event
}

/// The search parameters the trail answers.
pub const SEARCH_PARAMETERS: &[&str] = &[
    "_id",
    "date",
    "entity",
    "entity-type",
    "agent",
    "altid",
    "subtype",
    "action",
    "outcome",
    "patient",
];

/// The CapabilityStatement's entry for AuditEvent: read and search only.
pub fn capability() -> Value {
    let kinds = [
        ("_id", "token"),
        ("date", "date"),
        ("entity", "reference"),
        ("entity-type", "token"),
        ("agent", "reference"),
        ("altid", "token"),
        ("subtype", "token"),
        ("action", "token"),
        ("outcome", "token"),
        ("patient", "reference"),
    ];
    json!({
        "type": "AuditEvent",
        "profile": "http://hl7.org/fhir/StructureDefinition/AuditEvent",
        "documentation": "The server's audit trail: one AuditEvent per interaction, written by the \
                          server (never resource content), readable by administrators only.",
        "interaction": [{ "code": "read" }, { "code": "search-type" }],
        "versioning": "no-version",
        "readHistory": false,
        "updateCreate": false,
        "searchParam": kinds.iter().map(|(name, kind)| json!({
            "name": name,
            "type": kind,
            "definition": if *name == "_id" {
                "http://hl7.org/fhir/SearchParameter/Resource-id".to_string()
            } else {
                format!("http://hl7.org/fhir/SearchParameter/AuditEvent-{name}")
            },
        })).collect::<Vec<_>>(),
    })
}

/// Reads an AuditEvent search's parameters. Result parameters (`_count`, `_sort`, `_cursor`)
/// are left to the caller.
pub fn filter_of(params: &[(String, String)]) -> Result<AuditFilter, FhirError> {
    let mut filter = AuditFilter::default();
    let bad = |name: &str, value: &str| {
        FhirError::bad_request(format!(
            "AuditEvent search: '{value}' is not a valid {name}"
        ))
    };
    for (name, value) in params {
        match name.as_str() {
            "_id" => filter.seq = Some(value.parse().map_err(|_| bad(name, value))?),
            "date" => {
                let (prefix, rest) = match value.get(..2) {
                    Some(p @ ("eq" | "ge" | "gt" | "le" | "lt")) => (p, &value[2..]),
                    _ => ("eq", value.as_str()),
                };
                let (start, end) = parse_fhir_range(rest).ok_or_else(|| bad(name, value))?;
                filter.recorded.push(match prefix {
                    "ge" => (Some(start), None),
                    "gt" => (Some(end + 1), None),
                    "le" => (None, Some(end)),
                    "lt" => (None, Some(start - 1)),
                    _ => (Some(start), Some(end)),
                });
            }
            "entity" | "patient" => {
                let mut parts = value.trim_end_matches('/').rsplitn(2, '/');
                let (id, resource_type) = (parts.next(), parts.next());
                let resource_type = match (name.as_str(), resource_type) {
                    ("patient", _) => "Patient",
                    (_, Some(t)) => t.rsplit('/').next().unwrap_or(t),
                    (_, None) => return Err(bad("reference (Type/id)", value)),
                };
                filter.resource_type = Some(resource_type.to_string());
                filter.resource_id = id.map(str::to_string);
            }
            "entity-type" => filter.resource_type = Some(value.clone()),
            "agent" => filter.fhir_user = Some(value.clone()),
            "altid" => filter.client_id = Some(value.clone()),
            "subtype" => filter.interactions.extend(
                value
                    .split(',')
                    .map(|v| v.rsplit('|').next().unwrap_or(v).to_string()),
            ),
            "action" => filter.actions.extend(value.split(',').map(str::to_string)),
            "outcome" => {
                for code in value.split(',') {
                    filter.statuses.push(match code {
                        "0" => (100, 399),
                        "4" => (400, 499),
                        "8" | "12" => (500, 599),
                        _ => return Err(bad(name, value)),
                    });
                }
            }
            "_count" | "_sort" | "_cursor" | "_format" => {}
            other => {
                return Err(FhirError::bad_request(format!(
                    "AuditEvent search does not support '{other}'; supported: {}, _count, _sort",
                    SEARCH_PARAMETERS.join(", ")
                )));
            }
        }
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interactions_are_classified_from_method_and_path() {
        let code = |method, path, query| classify(method, path, query).map(|i| i.code);
        assert_eq!(code("GET", "/Patient/1", ""), Some("read"));
        assert_eq!(code("GET", "/Patient/1/_history/2", ""), Some("vread"));
        assert_eq!(code("GET", "/Patient", "name=x"), Some("search-type"));
        assert_eq!(code("POST", "/Patient/_search", ""), Some("search-type"));
        assert_eq!(code("POST", "/Patient", ""), Some("create"));
        assert_eq!(code("PUT", "/Patient/1", ""), Some("update"));
        assert_eq!(code("PATCH", "/Patient/1", ""), Some("patch"));
        assert_eq!(code("DELETE", "/Patient", "identifier=x"), Some("delete"));
        assert_eq!(
            code("GET", "/Patient/1/Observation", ""),
            Some("search-type")
        );
        assert_eq!(
            code("POST", "/SearchParameter/$reindex", ""),
            Some("operation")
        );
        assert_eq!(code("GET", "/_history", ""), Some("history-system"));
        assert_eq!(code("GET", "/metadata", ""), None);
        let vread = classify("GET", "/Patient/1/_history/2", "");
        assert_eq!(vread.and_then(|i| i.version_id), Some(2));
    }

    #[test]
    fn filters_read_dates_and_references() {
        let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let filter = filter_of(&params(&[
            ("entity", "Patient/p1"),
            ("date", "ge2026-01-01"),
        ]));
        let filter = filter.unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(filter.resource_type.as_deref(), Some("Patient"));
        assert_eq!(filter.resource_id.as_deref(), Some("p1"));
        assert!(filter.recorded[0].0.is_some() && filter.recorded[0].1.is_none());
        assert!(filter_of(&params(&[("date", "yesterday")])).is_err());
        assert!(filter_of(&params(&[("name", "x")])).is_err());
        assert!(filter_of(&params(&[("outcome", "7")])).is_err());
    }
}
