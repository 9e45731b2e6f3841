//! The audit trail's rows: appended in batches, read by administrators' searches.

use diesel::prelude::*;

use super::schema::audit_events;
use super::sql::{Bind, Sql, execute};
use super::{AnyConnection, StoreError};

type Backend = <AnyConnection as Connection>::Backend;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = audit_events)]
pub struct AuditRow {
    /// Assigned by the database (0 before the row is appended).
    pub seq: i64,
    pub recorded: i64,
    /// The FHIR restful interaction (`read`, `search-type`, `transaction`, `operation`, ...).
    pub interaction: String,
    /// AuditEvent.action: C, R, U, D or E.
    pub action: String,
    /// The HTTP status answered.
    pub status: i32,
    pub client_id: String,
    pub fhir_user: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub version_id: Option<i64>,
    /// The search or operation query string; it stays in the database, which only
    /// administrators can read, and never goes to logs.
    pub query: Option<String>,
    pub request_id: Option<String>,
}

/// Appends rows (one statement per 200; diesel's batch insert does not serve both backends).
pub fn append(conn: &mut AnyConnection, rows: &[AuditRow]) -> Result<(), StoreError> {
    // bounded: an id or client id taken from a hostile request must not fail a whole batch
    // on an index's entry size limit
    let cut = |text: &str, most: usize| match text.char_indices().nth(most) {
        Some((at, _)) => text[..at].to_string(),
        None => text.to_string(),
    };
    let optional_text = |value: &Option<String>| {
        value
            .as_deref()
            .map_or(Bind::NullText, |text| Bind::Text(cut(text, 256)))
    };
    for chunk in rows.chunks(200) {
        let mut sql = Sql::for_connection(conn);
        sql.push(
            "INSERT INTO audit_events (recorded, interaction, action, status, client_id, \
             fhir_user, resource_type, resource_id, version_id, query, request_id) VALUES ",
        );
        for (index, row) in chunk.iter().enumerate() {
            sql.push(if index == 0 { "(" } else { ", (" });
            sql.int(row.recorded);
            sql.push(", ");
            sql.text(&row.interaction);
            sql.push(", ");
            sql.text(&row.action);
            sql.push(", ");
            sql.int(i64::from(row.status));
            sql.push(", ");
            sql.text(&cut(&row.client_id, 256));
            for value in [&row.fhir_user, &row.resource_type, &row.resource_id] {
                sql.push(", ");
                sql.bind(optional_text(value));
            }
            sql.push(", ");
            sql.bind(row.version_id.map_or(Bind::NullInt, Bind::Int));
            sql.push(", ");
            sql.bind(
                row.query
                    .as_deref()
                    .map_or(Bind::NullText, |q| Bind::Text(cut(q, 8192))),
            );
            sql.push(", ");
            sql.bind(optional_text(&row.request_id));
            sql.push(")");
        }
        execute(conn, sql)?;
    }
    Ok(())
}

/// What an audit search asks for; every field narrows it.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub seq: Option<i64>,
    /// `recorded` ranges, inclusive microseconds: each `(from, to)` must hold.
    pub recorded: Vec<(Option<i64>, Option<i64>)>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub client_id: Option<String>,
    pub fhir_user: Option<String>,
    pub interactions: Vec<String>,
    pub actions: Vec<String>,
    /// HTTP status ranges (AuditEvent.outcome 0 = 2xx/3xx, 4 = 4xx, 8 = 5xx).
    pub statuses: Vec<(i32, i32)>,
    /// Keyset paging: rows after (or, descending, before) this `(recorded, seq)`.
    pub after: Option<(i64, i64)>,
    pub newest_first: bool,
    pub limit: i64,
}

pub fn search(conn: &mut AnyConnection, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
    let mut query = audit_events::table
        .select(AuditRow::as_select())
        .into_boxed::<Backend>();
    if let Some(seq) = filter.seq {
        query = query.filter(audit_events::seq.eq(seq));
    }
    for (from, to) in &filter.recorded {
        if let Some(from) = from {
            query = query.filter(audit_events::recorded.ge(*from));
        }
        if let Some(to) = to {
            query = query.filter(audit_events::recorded.le(*to));
        }
    }
    if let Some(resource_type) = &filter.resource_type {
        query = query.filter(audit_events::resource_type.eq(resource_type.clone()));
    }
    if let Some(resource_id) = &filter.resource_id {
        query = query.filter(audit_events::resource_id.eq(resource_id.clone()));
    }
    if let Some(client_id) = &filter.client_id {
        query = query.filter(audit_events::client_id.eq(client_id.clone()));
    }
    if let Some(fhir_user) = &filter.fhir_user {
        query = query.filter(audit_events::fhir_user.eq(fhir_user.clone()));
    }
    if !filter.interactions.is_empty() {
        query = query.filter(audit_events::interaction.eq_any(filter.interactions.clone()));
    }
    if !filter.actions.is_empty() {
        query = query.filter(audit_events::action.eq_any(filter.actions.clone()));
    }
    if !filter.statuses.is_empty() {
        let mut any: Box<
            dyn BoxableExpression<audit_events::table, Backend, SqlType = diesel::sql_types::Bool>,
        > = Box::new(diesel::dsl::sql::<diesel::sql_types::Bool>("1 = 0"));
        for (low, high) in &filter.statuses {
            any = Box::new(any.or(audit_events::status.between(*low, *high)));
        }
        query = query.filter(any);
    }
    // in the order things happened: rows read outside a write are appended a moment later
    query = match (filter.after, filter.newest_first) {
        (Some((recorded, seq)), false) => query.filter(
            audit_events::recorded
                .gt(recorded)
                .or(audit_events::recorded
                    .eq(recorded)
                    .and(audit_events::seq.gt(seq))),
        ),
        (Some((recorded, seq)), true) => query.filter(
            audit_events::recorded
                .lt(recorded)
                .or(audit_events::recorded
                    .eq(recorded)
                    .and(audit_events::seq.lt(seq))),
        ),
        (None, _) => query,
    };
    query = if filter.newest_first {
        query.order((audit_events::recorded.desc(), audit_events::seq.desc()))
    } else {
        query.order((audit_events::recorded.asc(), audit_events::seq.asc()))
    };
    Ok(query.limit(filter.limit).load(conn)?)
}
