//! Raw SQL written once for both backends: text with numbered placeholders in the order they
//! appear (`$n` for PostgreSQL, `?n` for SQLite), and the values bound to them. SQLite reads
//! `$n` as a *named* parameter and looks every new name up among the earlier ones: a batch
//! insert of thousands of values then spends most of its time comparing names.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable, Text};

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
        self.text.push_str(&format!("{marker}{}", self.binds.len()));
    }

    pub fn text(&mut self, value: &str) {
        self.bind(Bind::Text(value.to_string()));
    }

    pub fn int(&mut self, value: i64) {
        self.bind(Bind::Int(value));
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
pub fn run<T: QueryableByName<<AnyConnection as Connection>::Backend> + 'static>(
    conn: &mut AnyConnection,
    sql: Sql,
) -> Result<Vec<T>, StoreError> {
    Ok(bound(sql).load::<T>(conn)?)
}

/// The statement with its values bound.
fn bound(
    sql: Sql,
) -> diesel::query_builder::BoxedSqlQuery<
    'static,
    <AnyConnection as Connection>::Backend,
    diesel::query_builder::SqlQuery,
> {
    let mut statement =
        diesel::sql_query(sql.text).into_boxed::<<AnyConnection as Connection>::Backend>();
    for bind in sql.binds {
        statement = match bind {
            Bind::Text(value) => statement.bind::<Text, _>(value),
            Bind::Int(value) => statement.bind::<BigInt, _>(value),
            Bind::Float(value) => statement.bind::<Double, _>(value),
            Bind::NullInt => statement.bind::<Nullable<BigInt>, _>(None::<i64>),
            Bind::NullFloat => statement.bind::<Nullable<Double>, _>(None::<f64>),
            Bind::NullText => statement.bind::<Nullable<Text>, _>(None::<String>),
        };
    }
    statement
}

/// Runs a statement; returns the number of rows it changed.
pub fn execute(conn: &mut AnyConnection, sql: Sql) -> Result<usize, StoreError> {
    Ok(bound(sql).execute(conn)?)
}
