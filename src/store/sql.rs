//! Raw SQL written once for both backends: text with numbered placeholders in the order they
//! appear (`$n` for PostgreSQL, `?n` for SQLite; a statement as it can be read and checked), and
//! the values bound to them. When it runs, diesel writes the placeholders where `text` has them
//! (`$n` on PostgreSQL, positional `?` on SQLite, which would look each `$n` up by name among the
//! earlier ones: quadratic in a batch insert's values).
//!
//! On SQLite, the prepared statements of the most common query texts stay with each connection
//! (`may_cache`): compiling a search costs about as much as running it.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{LazyLock, Mutex};

use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Double, Nullable, Text, Untyped};

use super::{AnyConnection, StoreError};

#[derive(Debug, Clone)]
pub enum Bind {
    Text(String),
    Int(i64),
    Float(f64),
    NullInt,
    NullFloat,
    NullText,
}

/// SQL text with its bound values.
#[derive(Debug, Default)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
    /// Where each bound value's placeholder stands in `text`.
    placeholders: Vec<Range<usize>>,
    /// Whether PostgreSQL may keep this statement with one plan for all values (see `may_cache`).
    pub one_plan_fits_all: bool,
    /// Written for SQLite, whose planner needs some hints PostgreSQL's does not (and which
    /// would mislead PostgreSQL's).
    pub sqlite: bool,
    /// Whether per-candidate filters should hide their parameter from the value indexes (see
    /// `unindexed_equals`): always on SQLite; on PostgreSQL only when another condition drives.
    pub hint_filters: bool,
    aliases: usize,
}

impl Sql {
    pub fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    pub fn bind(&mut self, bind: Bind) {
        self.binds.push(bind);
        let marker = if self.sqlite { '?' } else { '$' };
        let start = self.text.len();
        self.text.push_str(&format!("{marker}{}", self.binds.len()));
        self.placeholders.push(start..self.text.len());
    }

    pub fn text(&mut self, value: &str) {
        self.bind(Bind::Text(value.to_string()));
    }

    pub fn int(&mut self, value: i64) {
        self.bind(Bind::Int(value));
    }

    /// `LIMIT n` (or `OFFSET n`): the count is written as a literal, not bound. SQLite reads a
    /// bound LIMIT while planning and marks the statement to be compiled again whenever the value
    /// is bound, so a bound count would compile every search twice.
    pub fn limit(&mut self, keyword: &str, count: i64) {
        self.text.push_str(&format!(" {keyword} {count}"));
    }

    pub fn float(&mut self, value: f64) {
        self.bind(Bind::Float(value));
    }

    /// An empty statement written for `conn`'s backend.
    pub fn for_connection(conn: &AnyConnection) -> Sql {
        let sqlite = matches!(conn, AnyConnection::Sqlite(_));
        Sql {
            sqlite,
            hint_filters: sqlite,
            ..Sql::default()
        }
    }

    /// `column = ` for a column whose index SQLite should not choose here: `column || '' = `
    /// on SQLite (an expression no index answers), plain on PostgreSQL.
    pub fn unindexed_equals(&mut self, column: &str) {
        if self.hint_filters {
            self.push(&format!("{column} || '' = "));
        } else {
            self.push(&format!("{column} = "));
        }
    }

    /// A comma-separated list of placeholders for `values`.
    pub fn text_list<'v>(&mut self, values: impl IntoIterator<Item = &'v str>) {
        for (index, value) in values.into_iter().enumerate() {
            if index > 0 {
                self.push(", ");
            }
            self.text(value);
        }
    }

    pub fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }
}

/// Runs a query and loads its rows.
pub fn run<T: QueryableByName<Db> + 'static>(
    conn: &mut AnyConnection,
    sql: Sql,
) -> Result<Vec<T>, StoreError> {
    let cache = may_cache(&sql);
    Ok(Statement { sql, cache }.load::<T>(conn)?)
}

/// Runs a statement; returns the number of rows it changed.
pub fn execute(conn: &mut AnyConnection, sql: Sql) -> Result<usize, StoreError> {
    // Writes (batch inserts of any length) are not kept: each length is another text.
    Ok(Statement { sql, cache: false }.execute(conn)?)
}

type Db = <AnyConnection as Connection>::Backend;

/// Most query texts whose prepared statements connections keep. Texts are admitted first come,
/// up to this bound, so that a client varying its searches cannot grow every connection's cache
/// without end (the server's own queries and the searches clients repeat come first).
const CACHED_TEXTS: usize = 128;

/// Longer texts are not kept: they are rare, and a kept statement holds memory per connection.
const CACHED_TEXT_MAX_LEN: usize = 4096;

/// Whether the connection may keep this query's prepared statement. On SQLite always: there a
/// plan does not depend on the bound values (no statistics tables; a bound `LIKE` pattern makes
/// SQLite compile again by itself). PostgreSQL switches a kept statement to one generic plan
/// after five runs, wrong for values of very different selectivity (a walk of a type in key
/// order, filtered by `status=active`, ran 8 times slower), so there only statements marked
/// `one_plan_fits_all` are kept; planning is most of what a simple search costs it.
fn may_cache(sql: &Sql) -> bool {
    static ADMITTED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);
    if !(sql.sqlite || sql.one_plan_fits_all) || sql.text.len() > CACHED_TEXT_MAX_LEN {
        return false;
    }
    let Ok(mut admitted) = ADMITTED.lock() else {
        return false;
    };
    if admitted.contains(&sql.text) {
        return true;
    }
    admitted.len() < CACHED_TEXTS && admitted.insert(sql.text.clone())
}

/// A statement handed to diesel: the text between the placeholders, with the bound values, so
/// that diesel writes the placeholders and knows the statement may be kept.
struct Statement {
    sql: Sql,
    cache: bool,
}

static NO_INT: Option<i64> = None;
static NO_FLOAT: Option<f64> = None;
static NO_TEXT: Option<String> = None;

impl QueryFragment<Db> for Statement {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Db>) -> QueryResult<()> {
        if !self.cache {
            out.unsafe_to_cache_prepared();
        }
        let text = &self.sql.text;
        let mut written = 0;
        for (placeholder, bind) in self.sql.placeholders.iter().zip(&self.sql.binds) {
            out.push_sql(&text[written..placeholder.start]);
            match bind {
                Bind::Text(value) => out.push_bind_param::<Text, _>(value)?,
                Bind::Int(value) => out.push_bind_param::<BigInt, _>(value)?,
                Bind::Float(value) => out.push_bind_param::<Double, _>(value)?,
                Bind::NullInt => out.push_bind_param::<Nullable<BigInt>, _>(&NO_INT)?,
                Bind::NullFloat => out.push_bind_param::<Nullable<Double>, _>(&NO_FLOAT)?,
                Bind::NullText => out.push_bind_param::<Nullable<Text>, _>(&NO_TEXT)?,
            }
            written = placeholder.end;
        }
        out.push_sql(&text[written..]);
        Ok(())
    }
}

impl QueryId for Statement {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Statement {
    type SqlType = Untyped;
}

impl RunQueryDsl<AnyConnection> for Statement {}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sqlite: bool, text: &str) -> Sql {
        let mut sql = Sql {
            sqlite,
            ..Sql::default()
        };
        sql.push(text);
        sql.text("value");
        sql
    }

    #[test]
    fn kept_statements_are_bounded_and_chosen_per_backend() {
        let first = query(true, "SELECT 'kept-first' WHERE 1 = ");
        assert!(may_cache(&first));
        assert!(!may_cache(&query(false, "SELECT 'kept-pg' WHERE 1 = ")));
        let mut one_plan = query(false, "SELECT 'kept-pg-one-plan' WHERE 1 = ");
        one_plan.one_plan_fits_all = true;
        assert!(may_cache(&one_plan));
        let long = format!("SELECT '{}' WHERE 1 = ", "x".repeat(CACHED_TEXT_MAX_LEN));
        assert!(!may_cache(&query(true, &long)));
        // Other tests admit texts too: count only that admission stops at the bound.
        let admitted = (0..CACHED_TEXTS + 10)
            .filter(|n| may_cache(&query(true, &format!("SELECT 'kept-{n}' WHERE 1 = "))))
            .count();
        assert!(admitted < CACHED_TEXTS);
        assert!(!may_cache(&query(true, "SELECT 'kept-late' WHERE 1 = ")));
        assert!(may_cache(&first), "an admitted text stays admitted");
    }

    #[test]
    fn placeholders_are_recorded_where_they_stand() {
        let mut sql = query(false, "SELECT 1 WHERE a = ");
        sql.push(" AND b = ");
        sql.int(7);
        let spans: Vec<&str> = sql
            .placeholders
            .iter()
            .map(|r| &sql.text[r.clone()])
            .collect();
        assert_eq!(spans, ["$1", "$2"]);
    }
}
