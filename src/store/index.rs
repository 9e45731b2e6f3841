//! Writing the search index rows of one resource (inside the resource's write transaction),
//! as multi-row INSERTs.

use super::sql::{Bind, Sql, execute};
use super::{AnyConnection, StoreError};
use crate::search::extract::IndexRows;

/// Rows per INSERT statement. Statements are prepared once per connection and cached by their
/// text, so only these few sizes are used (a resource with 13 rows sends 8, 4 and 1).
const CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

const TABLES: &[&str] = &[
    "search_string",
    "search_token",
    "search_reference",
    "search_date",
    "search_quantity",
    "search_uri",
    "search_composite",
];

/// Removes every index row of the resource `pk`.
pub fn clear(conn: &mut AnyConnection, pk: i64) -> Result<(), StoreError> {
    for table in TABLES {
        let mut sql = Sql::default();
        sql.push(&format!("DELETE FROM {table} WHERE resource_pk = "));
        sql.int(pk);
        execute(conn, sql)?;
    }
    Ok(())
}

fn insert_rows(
    conn: &mut AnyConnection,
    table: &str,
    columns: &str,
    rows: Vec<Vec<Bind>>,
) -> Result<(), StoreError> {
    let mut rest = rows.as_slice();
    while !rest.is_empty() {
        let size = CHUNKS
            .iter()
            .copied()
            .find(|size| *size <= rest.len())
            .unwrap_or(1);
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        let mut sql = Sql::default();
        sql.push(&format!("INSERT INTO {table} ({columns}) VALUES "));
        for (index, row) in chunk.iter().enumerate() {
            sql.push(if index == 0 { "(" } else { ", (" });
            for (column, value) in row.iter().enumerate() {
                if column > 0 {
                    sql.push(", ");
                }
                sql.bind(value.clone());
            }
            sql.push(")");
        }
        execute(conn, sql)?;
    }
    Ok(())
}

/// Index rows of several resources, written together: a transaction Bundle sends a few large
/// INSERTs instead of several small ones per entry.
#[derive(Debug, Default)]
pub struct IndexBatch {
    pending: Vec<(i64, IndexRows)>,
}

impl IndexBatch {
    pub fn add(&mut self, pk: i64, rows: IndexRows) {
        self.pending.push((pk, rows));
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Writes everything added so far.
    pub fn flush(&mut self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.pending);
        let refs: Vec<(i64, &IndexRows)> = pending.iter().map(|(pk, rows)| (*pk, rows)).collect();
        insert_many(conn, &refs)
    }
}

/// Writes the index rows of resource `pk` (after `clear` when replacing a version).
pub fn insert(conn: &mut AnyConnection, pk: i64, rows: &IndexRows) -> Result<(), StoreError> {
    insert_many(conn, &[(pk, rows)])
}

fn insert_many(
    conn: &mut AnyConnection,
    resources: &[(i64, &IndexRows)],
) -> Result<(), StoreError> {
    let text = |s: &str| Bind::Text(s.to_string());
    insert_rows(
        conn,
        "search_string",
        "resource_pk, param, normalized, exact",
        resources
            .iter()
            .flat_map(|(pk, rows)| rows.strings.iter().map(move |r| (*pk, r)))
            .map(|(pk, r)| {
                vec![
                    Bind::Int(pk),
                    text(&r.param),
                    text(&r.normalized),
                    text(&r.exact),
                ]
            })
            .collect(),
    )?;
    insert_rows(
        conn,
        "search_token",
        "resource_pk, param, system, code, text",
        resources
            .iter()
            .flat_map(|(pk, rows)| rows.tokens.iter().map(move |r| (*pk, r)))
            .map(|(pk, r)| {
                vec![
                    Bind::Int(pk),
                    text(&r.param),
                    text(&r.system),
                    text(&r.code),
                    text(&r.text),
                ]
            })
            .collect(),
    )?;
    insert_rows(
        conn,
        "search_reference",
        "resource_pk, param, target_type, target_id, url",
        resources
            .iter()
            .flat_map(|(pk, rows)| rows.references.iter().map(move |r| (*pk, r)))
            .map(|(pk, r)| {
                vec![
                    Bind::Int(pk),
                    text(&r.param),
                    text(&r.target_type),
                    text(&r.target_id),
                    text(&r.url),
                ]
            })
            .collect(),
    )?;
    insert_rows(
        conn,
        "search_date",
        "resource_pk, param, start_at, end_at",
        resources
            .iter()
            .flat_map(|(pk, rows)| rows.dates.iter().map(move |r| (*pk, r)))
            .map(|(pk, r)| {
                vec![
                    Bind::Int(pk),
                    text(&r.param),
                    Bind::Int(r.start),
                    Bind::Int(r.end),
                ]
            })
            .collect(),
    )?;
    insert_rows(
        conn,
        "search_quantity",
        "resource_pk, param, low, high, system, code",
        resources
            .iter()
            .flat_map(|(pk, rows)| rows.quantities.iter().map(move |r| (*pk, r)))
            .map(|(pk, r)| {
                vec![
                    Bind::Int(pk),
                    text(&r.param),
                    Bind::Float(r.low),
                    Bind::Float(r.high),
                    text(&r.system),
                    text(&r.code),
                ]
            })
            .collect(),
    )?;
    insert_rows(
        conn,
        "search_uri",
        "resource_pk, param, uri",
        resources
            .iter()
            .flat_map(|(pk, rows)| rows.uris.iter().map(move |r| (*pk, r)))
            .map(|(pk, r)| vec![Bind::Int(pk), text(&r.param), text(&r.uri)])
            .collect(),
    )?;
    insert_rows(
        conn,
        "search_composite",
        "resource_pk, param, system, code, v_system, v_code, low, high, start_at, end_at",
        resources
            .iter()
            .flat_map(|(pk, rows)| rows.composites.iter().map(move |r| (*pk, r)))
            .map(|(pk, r)| {
                vec![
                    Bind::Int(pk),
                    text(&r.param),
                    text(&r.system),
                    text(&r.code),
                    text(&r.v_system),
                    text(&r.v_code),
                    r.low.map_or(Bind::NullFloat, Bind::Float),
                    r.high.map_or(Bind::NullFloat, Bind::Float),
                    r.start.map_or(Bind::NullInt, Bind::Int),
                    r.end.map_or(Bind::NullInt, Bind::Int),
                ]
            })
            .collect(),
    )?;
    Ok(())
}
