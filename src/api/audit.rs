//! The audit trail over HTTP: the middleware that records every FHIR interaction, the helper
//! write handlers use to record inside their transaction, and the read-only AuditEvent
//! endpoints for administrators.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::api::headers::negotiate;
use crate::api::{AppState, response, valid_id};
use crate::auth::Access;
use crate::auth::scopes::Permission;
use crate::error::FhirError;
use crate::service::audit::{self, classify, filter_of, to_audit_event, who};
use crate::service::bundle::{EntryResponse, Method};
use crate::service::resources::Written;
use crate::store::AnyConnection;
use crate::store::audit::{AuditRow, search};

/// Set on a request whose write recorded its audit row in its own transaction.
#[derive(Clone, Copy)]
struct RecordedInTransaction;

/// Set by a handler that knows the interaction better than its method and path tell (a POST
/// to the base is a batch or a transaction).
#[derive(Clone, Copy)]
struct InteractionIs(&'static str);

/// Names the interaction of `req` for the trail.
pub fn interaction_is(req: &HttpRequest, code: &'static str) {
    req.extensions_mut().insert(InteractionIs(code));
}

/// What a write handler needs to record its row inside the write's transaction.
#[derive(Clone)]
pub struct WriteAudit {
    access: Access,
    request_id: Option<String>,
}

impl WriteAudit {
    pub fn of(req: &HttpRequest, access: &Access) -> Self {
        WriteAudit {
            access: access.clone(),
            request_id: request_id(req),
        }
    }

    /// Appends the row of `written` (call inside the write's transaction).
    pub fn record(
        &self,
        conn: &mut AnyConnection,
        interaction: &'static str,
        written: &Written,
    ) -> Result<(), FhirError> {
        self.record_all(conn, &[(interaction, written)])
    }

    pub fn record_all(
        &self,
        conn: &mut AnyConnection,
        writes: &[(&'static str, &Written)],
    ) -> Result<(), FhirError> {
        let rows: Vec<AuditRow> = writes
            .iter()
            .map(|(interaction, written)| {
                let status = if written.created { 201 } else { 200 };
                audit::written_row(
                    &self.access,
                    interaction,
                    written,
                    status,
                    self.request_id.clone(),
                )
            })
            .collect();
        audit::record_in_transaction(conn, &rows)
    }

    /// Appends a transaction Bundle's row and one row per entry that wrote (inside it).
    pub fn record_transaction(
        &self,
        conn: &mut AnyConnection,
        requests: &[(Method, String)],
        responses: &[EntryResponse],
    ) -> Result<(), FhirError> {
        let (client_id, fhir_user) = who(Some(&self.access));
        let mut rows = vec![AuditRow {
            seq: 0,
            recorded: crate::fhir::instant::now_micros(),
            interaction: "transaction".into(),
            action: "E".into(),
            status: 200,
            client_id,
            fhir_user,
            resource_type: None,
            resource_id: None,
            version_id: None,
            query: None,
            request_id: self.request_id.clone(),
        }];
        rows.extend(self.entry_rows(requests, responses));
        audit::record_in_transaction(conn, &rows)
    }

    /// Appends the rows of Bundle entries that wrote (inside their transaction).
    pub fn record_entries(
        &self,
        conn: &mut AnyConnection,
        requests: &[(Method, String)],
        responses: &[EntryResponse],
    ) -> Result<(), FhirError> {
        let rows = self.entry_rows(requests, responses);
        if rows.is_empty() {
            return Ok(());
        }
        audit::record_in_transaction(conn, &rows)
    }

    fn entry_rows(
        &self,
        requests: &[(Method, String)],
        responses: &[EntryResponse],
    ) -> Vec<AuditRow> {
        let (client_id, fhir_user) = who(Some(&self.access));
        requests
            .iter()
            .zip(responses)
            .filter_map(|((method, url), response)| {
                let (interaction, action) = match method {
                    Method::Post => ("create", "C"),
                    Method::Put => ("update", "U"),
                    Method::Patch => ("patch", "U"),
                    Method::Delete => ("delete", "D"),
                    _ => return None,
                };
                // where it wrote: `Type/id/_history/version`, else (a deletion) the entry URL
                let written = response.location.as_deref().unwrap_or(url);
                let (path, query) = written.split_once('?').unwrap_or((written, ""));
                let parts: Vec<&str> = path.rsplit('/').take(4).collect();
                let (version, id, resource_type) = match parts.as_slice() {
                    [version, "_history", id, resource_type] => {
                        (version.parse().ok(), Some(*id), *resource_type)
                    }
                    [id, resource_type, ..] => (None, Some(*id), *resource_type),
                    [resource_type] => (None, None, *resource_type),
                    _ => return None,
                };
                Some(AuditRow {
                    seq: 0,
                    recorded: crate::fhir::instant::now_micros(),
                    interaction: interaction.into(),
                    action: action.into(),
                    status: response
                        .status
                        .split(' ')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(200),
                    client_id: client_id.clone(),
                    fhir_user: fhir_user.clone(),
                    resource_type: Some(resource_type.to_string()),
                    resource_id: id.map(str::to_string),
                    version_id: version,
                    query: (!query.is_empty()).then(|| query.to_string()),
                    request_id: self.request_id.clone(),
                })
            })
            .collect()
    }

    /// Tells the middleware the rows are written (call after the transaction committed).
    pub fn done(req: &HttpRequest) {
        req.extensions_mut().insert(RecordedInTransaction);
    }
}

fn request_id(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(128).collect())
}

/// Middleware body: records the interaction a response answered, unless its write already did.
pub async fn record<B: MessageBody>(response: &ServiceResponse<B>) {
    let req = response.request();
    let Some(fhir_path) = req.path().strip_prefix("/fhir") else {
        return;
    };
    if req.extensions().get::<RecordedInTransaction>().is_some() {
        return;
    }
    let Some(mut interaction) = classify(req.method().as_str(), fhir_path, req.query_string())
    else {
        return;
    };
    if let Some(InteractionIs(code)) = req.extensions().get::<InteractionIs>() {
        interaction.code = code;
    }
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return;
    };
    let (client_id, fhir_user) = who(req.extensions().get::<Access>());
    let row = AuditRow {
        seq: 0,
        recorded: crate::fhir::instant::now_micros(),
        interaction: interaction.code.to_string(),
        action: interaction.action.to_string(),
        status: i32::from(response.status().as_u16()),
        client_id,
        fhir_user,
        resource_type: interaction.resource_type,
        resource_id: interaction.resource_id,
        version_id: interaction.version_id,
        query: interaction.query,
        request_id: request_id(req),
    };
    state.audit.record(row).await;
}

/// Only a token that reaches everything (no patient, query or program-role limit) may read the
/// trail.
fn require_administrator(access: &Access, permission: Permission) -> Result<(), FhirError> {
    let grant = access.require("AuditEvent", permission)?;
    if grant.is_unlimited() {
        Ok(())
    } else {
        Err(FhirError::Forbidden(
            "The audit trail is for administrators (a system/ or user/ scope without limits)"
                .into(),
        ))
    }
}

/// `GET /fhir/AuditEvent?...`: the trail, oldest first (`_sort=-date`: newest first), paged by
/// a keyset cursor.
pub async fn search_trail(
    req: HttpRequest,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    require_administrator(&access, Permission::Search)?;
    let format = negotiate(&req)?;
    let params: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|_| FhirError::bad_request("The query string is not form-encoded"))?;
    let mut filter = filter_of(&params)?;
    let value = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let count: i64 = match value("_count") {
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| FhirError::bad_request(format!("_count '{text}' is not a count")))?,
        None => 50,
    }
    .min(1000);
    filter.newest_first = match value("_sort") {
        None | Some("date") | Some("_id") => false,
        Some("-date") | Some("-_id") => true,
        Some(other) => {
            return Err(FhirError::bad_request(format!(
                "AuditEvent search sorts by date or -date, not '{other}'"
            )));
        }
    };
    filter.after = match value("_cursor") {
        Some(text) => Some(
            text.split_once('.')
                .and_then(|(recorded, seq)| Some((recorded.parse().ok()?, seq.parse().ok()?)))
                .ok_or_else(|| FhirError::bad_request("_cursor is not a cursor of this server"))?,
        ),
        None => None,
    };
    filter.limit = count + 1;
    let query_filter = filter.clone();
    let mut rows = state
        .store
        .read(move |conn| search(conn, &query_filter).map_err(FhirError::from))
        .await?;
    let more = rows.len() as i64 > count;
    rows.truncate(count as usize);
    let base = state.fhir_base(&req);
    let kept: Vec<(String, String)> = params
        .iter()
        .filter(|(name, _)| name != "_cursor")
        .cloned()
        .collect();
    let link = |cursor: Option<(i64, i64)>| {
        let mut pairs = kept.clone();
        if let Some((recorded, seq)) = cursor {
            pairs.push(("_cursor".into(), format!("{recorded}.{seq}")));
        }
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        format!("{base}/AuditEvent?{query}")
    };
    let mut links = vec![json!({ "relation": "self", "url": link(filter.after) })];
    if more && let Some(last) = rows.last() {
        links.push(json!({ "relation": "next", "url": link(Some((last.recorded, last.seq))) }));
    }
    let entries: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            json!({
                "fullUrl": format!("{base}/AuditEvent/{}", row.seq),
                "resource": to_audit_event(row),
                "search": { "mode": "match" },
            })
        })
        .collect();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries,
    });
    Ok(response::json(StatusCode::OK, format, &bundle))
}

/// `GET /fhir/AuditEvent/[id]`.
pub async fn read_trail(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    require_administrator(&access, Permission::Read)?;
    let format = negotiate(&req)?;
    let id = valid_id(&path)?.to_string();
    let not_found = || FhirError::NotFound(format!("AuditEvent/{id} is not known"));
    let seq: i64 = id.parse().map_err(|_| not_found())?;
    let filter = crate::store::audit::AuditFilter {
        seq: Some(seq),
        limit: 1,
        ..Default::default()
    };
    let row = state
        .store
        .read(move |conn| search(conn, &filter).map_err(FhirError::from))
        .await?
        .into_iter()
        .next()
        .ok_or_else(not_found)?;
    Ok(response::json(
        StatusCode::OK,
        format,
        &to_audit_event(&row),
    ))
}

/// Any other interaction on AuditEvent: the trail is written by the server only and never
/// changes.
pub async fn refuse_change(req: HttpRequest) -> Result<HttpResponse, FhirError> {
    Err(FhirError::MethodNotAllowed(format!(
        "{} is not allowed on {}: the audit trail is written by the server and never changes",
        req.method(),
        req.path()
    )))
}

/// Registers the middleware's recording on `ServiceRequest`s (used by `app.rs`).
pub fn path_is_audited(req: &ServiceRequest) -> bool {
    req.path().starts_with("/fhir")
}
