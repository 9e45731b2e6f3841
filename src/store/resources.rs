//! Rows of the resource store: the current version of each resource (`resources`) and every
//! version ever written (`resource_versions`).

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::BigInt;

use super::schema::{resource_versions, resources};
use super::sql::{Bind, Sql, run};
use super::{AnyConnection, StoreError};
use crate::fhir::instant::Micros;

/// The current version of a resource.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = resources)]
pub struct CurrentRow {
    pub pk: i64,
    pub resource_type: String,
    pub id: String,
    pub version_id: i64,
    pub last_updated: Micros,
    pub deleted: i32,
    pub content: Option<String>,
}

/// One version of a resource; `content` is `None` for a deletion.
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = resource_versions)]
pub struct VersionRow {
    pub resource_type: String,
    pub id: String,
    pub version_id: i64,
    pub last_updated: Micros,
    pub method: String,
    pub content: Option<String>,
}

/// A version about to be written.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = resource_versions)]
pub struct NewVersion<'a> {
    pub resource_type: &'a str,
    pub id: &'a str,
    pub version_id: i64,
    pub last_updated: Micros,
    pub method: &'a str,
    pub content: Option<&'a str>,
}

pub fn current(
    conn: &mut AnyConnection,
    resource_type: &str,
    id: &str,
) -> Result<Option<CurrentRow>, StoreError> {
    Ok(resources::table
        .filter(resources::resource_type.eq(resource_type))
        .filter(resources::id.eq(id))
        .select(CurrentRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn version(
    conn: &mut AnyConnection,
    resource_type: &str,
    id: &str,
    version_id: i64,
) -> Result<Option<VersionRow>, StoreError> {
    Ok(resource_versions::table
        .find((resource_type, id, version_id))
        .select(VersionRow::as_select())
        .first(conn)
        .optional()?)
}

/// Writes the first version of a resource and returns its key. Returns `None`, leaving the
/// transaction usable, when a concurrent transaction created the same resource first (the
/// caller then updates instead).
pub fn insert_first(
    conn: &mut AnyConnection,
    new: &NewVersion<'_>,
) -> Result<Option<i64>, StoreError> {
    let mut sql = Sql::default();
    sql.push("INSERT INTO resources (resource_type, id, version_id, last_updated, deleted, content) VALUES (");
    sql.text(new.resource_type);
    sql.push(", ");
    sql.text(new.id);
    sql.push(", ");
    sql.int(new.version_id);
    sql.push(", ");
    sql.int(new.last_updated);
    sql.push(", ");
    sql.int(i64::from(new.content.is_none()));
    sql.push(", ");
    sql.bind(
        new.content
            .map_or(Bind::NullText, |c| Bind::Text(c.to_string())),
    );
    sql.push(") RETURNING pk");
    let inserted: Result<Vec<Key>, StoreError> = match conn {
        // SQLite has one writer at a time, so nobody can create the row between the caller's
        // read and this insert.
        AnyConnection::Sqlite(_) => run(conn, sql),
        // A savepoint: on PostgreSQL a failed statement would otherwise abort the transaction.
        AnyConnection::Postgresql(_) => conn.transaction(|conn| run::<Key>(conn, sql)),
    };
    match inserted {
        Ok(keys) => {
            insert_version(conn, new)?;
            Ok(keys.first().map(|k| k.pk))
        }
        Err(StoreError::Backend(DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            _,
        ))) => Ok(None),
        Err(err) => Err(err),
    }
}

#[derive(QueryableByName)]
struct Key {
    #[diesel(sql_type = BigInt)]
    pk: i64,
}

/// Replaces the current version, provided it is still `previous_version_id`. Returns `false`
/// when another transaction got there first: the caller re-reads, or answers 412 to `If-Match`.
/// On PostgreSQL the UPDATE waits for a concurrent writer of the same row and then sees its
/// version, so no update is ever lost.
pub fn replace_current(
    conn: &mut AnyConnection,
    new: &NewVersion<'_>,
    previous_version_id: i64,
) -> Result<bool, StoreError> {
    let changed = diesel::update(
        resources::table
            .filter(resources::resource_type.eq(new.resource_type))
            .filter(resources::id.eq(new.id))
            .filter(resources::version_id.eq(previous_version_id)),
    )
    .set((
        resources::version_id.eq(new.version_id),
        resources::last_updated.eq(new.last_updated),
        resources::deleted.eq(i32::from(new.content.is_none())),
        resources::content.eq(new.content),
    ))
    .execute(conn)?;
    if changed == 0 {
        return Ok(false);
    }
    insert_version(conn, new)?;
    Ok(true)
}

fn insert_version(conn: &mut AnyConnection, new: &NewVersion<'_>) -> Result<(), StoreError> {
    diesel::insert_into(resource_versions::table)
        .values(new)
        .execute(conn)?;
    Ok(())
}

/// Where a history page starts: versions strictly older than this one, in history order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryCursor {
    pub last_updated: Micros,
    pub resource_type: String,
    pub id: String,
    pub version_id: i64,
}

impl HistoryCursor {
    pub fn of(row: &VersionRow) -> Self {
        HistoryCursor {
            last_updated: row.last_updated,
            resource_type: row.resource_type.clone(),
            id: row.id.clone(),
            version_id: row.version_id,
        }
    }
}

/// A history request at system, type or instance level.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub resource_type: Option<String>,
    pub id: Option<String>,
    /// Only versions written at or after this time (`_since`).
    pub since: Option<Micros>,
    /// Only versions that were current at some point in `[start, end)` (`_at`).
    pub at: Option<(Micros, Micros)>,
    pub after: Option<HistoryCursor>,
    pub limit: i64,
}

/// Versions matching `query`, newest first.
pub fn history(
    conn: &mut AnyConnection,
    query: &HistoryQuery,
) -> Result<Vec<VersionRow>, StoreError> {
    let mut sql = Sql::for_connection(conn);
    sql.push(
        "SELECT v.resource_type, v.id, v.version_id, v.last_updated, v.method, v.content \
         FROM resource_versions v WHERE 1 = 1",
    );
    if let Some(resource_type) = &query.resource_type {
        sql.push(" AND v.resource_type = ");
        sql.text(resource_type);
    }
    if let Some(id) = &query.id {
        sql.push(" AND v.id = ");
        sql.text(id);
    }
    if let Some(since) = query.since {
        sql.push(" AND v.last_updated >= ");
        sql.int(since);
    }
    if let Some((start, end)) = query.at {
        // current at some point in [start, end): written before the end, and not replaced
        // by a version written at or before the start
        sql.push(" AND v.last_updated < ");
        sql.int(end);
        sql.push(
            " AND NOT EXISTS (SELECT 1 FROM resource_versions n \
             WHERE n.resource_type = v.resource_type AND n.id = v.id \
             AND n.version_id = v.version_id + 1 AND n.last_updated <= ",
        );
        sql.int(start);
        sql.push(")");
    }
    if let Some(cursor) = &query.after {
        sql.push(" AND (v.last_updated, v.resource_type, v.id, v.version_id) < (");
        sql.int(cursor.last_updated);
        sql.push(", ");
        sql.text(&cursor.resource_type);
        sql.push(", ");
        sql.text(&cursor.id);
        sql.push(", ");
        sql.int(cursor.version_id);
        sql.push(")");
    }
    sql.push(" ORDER BY v.last_updated DESC, v.resource_type DESC, v.id DESC, v.version_id DESC");
    sql.limit("LIMIT", query.limit);
    run(conn, sql)
}

/// How many versions an instance has (for the instance history Bundle's `total`).
pub fn version_count(
    conn: &mut AnyConnection,
    resource_type: &str,
    id: &str,
) -> Result<i64, StoreError> {
    Ok(resource_versions::table
        .filter(resource_versions::resource_type.eq(resource_type))
        .filter(resource_versions::id.eq(id))
        .count()
        .get_result(conn)?)
}
