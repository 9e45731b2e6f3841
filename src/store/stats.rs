//! Counts for the metrics endpoint: the subscription outbox and the jobs by kind and status.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};

use super::sql::{Sql, run};
use super::{AnyConnection, StoreError};

#[derive(Debug, Clone, QueryableByName)]
pub struct Count {
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// Notifications waiting in the outbox (`status = 'pending'`), and the others by status.
pub fn outbox(conn: &mut AnyConnection) -> Result<Vec<Count>, StoreError> {
    let mut sql = Sql::default();
    sql.push(
        "SELECT 'outbox' AS kind, status, COUNT(*) AS n FROM subscription_events \
         GROUP BY status ORDER BY status",
    );
    run(conn, sql)
}

/// Asynchronous jobs (reindex, export, …) by kind and status.
pub fn jobs(conn: &mut AnyConnection) -> Result<Vec<Count>, StoreError> {
    let mut sql = Sql::default();
    sql.push(
        "SELECT kind, status, COUNT(*) AS n FROM jobs GROUP BY kind, status ORDER BY kind, status",
    );
    run(conn, sql)
}
