//! Subscriptions in force and their outbox of notifications (`subscriptions`,
//! `subscription_events`). Events are claimed with a lease: on PostgreSQL with
//! `FOR UPDATE SKIP LOCKED`, so several nodes never take the same event; on SQLite the one
//! writer serializes the claims.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};

use super::sql::{Bind, Sql, execute, run};
use super::{AnyConnection, StoreError};
use crate::fhir::instant::Micros;

/// A subscription as the write path needs it.
#[derive(Debug, Clone, QueryableByName)]
pub struct Watch {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub criteria: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub topic: Option<String>,
}

/// Records the subscription `id` as it now stands (keeping its event count).
pub fn upsert(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
    resource_type: &str,
    criteria: &str,
    topic: Option<&str>,
) -> Result<(), StoreError> {
    let mut sql = Sql::default();
    sql.push("INSERT INTO subscriptions (id, status, resource_type, criteria, topic) VALUES (");
    sql.text(id);
    sql.push(", ");
    sql.text(status);
    sql.push(", ");
    sql.text(resource_type);
    sql.push(", ");
    sql.text(criteria);
    sql.push(", ");
    sql.bind(topic.map_or(Bind::NullText, |t| Bind::Text(t.to_string())));
    sql.push(
        ") ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
         resource_type = excluded.resource_type, criteria = excluded.criteria, topic = excluded.topic",
    );
    execute(conn, sql)?;
    Ok(())
}

pub fn remove(conn: &mut AnyConnection, id: &str) -> Result<(), StoreError> {
    let mut sql = Sql::default();
    sql.push("DELETE FROM subscriptions WHERE id = ");
    sql.text(id);
    execute(conn, sql)?;
    Ok(())
}

/// The active subscriptions watching `resource_type`.
pub fn watching(conn: &mut AnyConnection, resource_type: &str) -> Result<Vec<Watch>, StoreError> {
    let mut sql = Sql::default();
    sql.push("SELECT id, criteria, topic FROM subscriptions WHERE resource_type = ");
    sql.text(resource_type);
    sql.push(" AND status = 'active'");
    run(conn, sql)
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

/// Subscriptions waiting to be activated.
pub fn requested(conn: &mut AnyConnection) -> Result<Vec<String>, StoreError> {
    let mut sql = Sql::default();
    sql.push("SELECT id FROM subscriptions WHERE status = 'requested' ORDER BY id LIMIT 50");
    Ok(run::<Id>(conn, sql)?.into_iter().map(|r| r.id).collect())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    events: i64,
}

/// Adds a notification of `resource_type/id` version `version_id` to the outbox of
/// `subscription`; returns its event number.
pub fn add_event(
    conn: &mut AnyConnection,
    subscription: &str,
    resource_type: &str,
    id: &str,
    version_id: i64,
    now: Micros,
) -> Result<i64, StoreError> {
    let mut sql = Sql::default();
    sql.push("UPDATE subscriptions SET events = events + 1 WHERE id = ");
    sql.text(subscription);
    sql.push(" RETURNING events");
    let number = run::<Count>(conn, sql)?
        .first()
        .map(|c| c.events)
        .ok_or_else(|| {
            StoreError::Other(anyhow::anyhow!("subscription {subscription} vanished"))
        })?;
    let mut sql = Sql::default();
    sql.push(
        "INSERT INTO subscription_events (subscription_id, event_number, resource_type, \
         resource_id, version_id, status, next_attempt_at, created_at) VALUES (",
    );
    sql.text(subscription);
    sql.push(", ");
    sql.int(number);
    sql.push(", ");
    sql.text(resource_type);
    sql.push(", ");
    sql.text(id);
    sql.push(", ");
    sql.int(version_id);
    sql.push(", 'pending', ");
    sql.int(now);
    sql.push(", ");
    sql.int(now);
    sql.push(")");
    execute(conn, sql)?;
    Ok(number)
}

/// An event claimed for delivery.
#[derive(Debug, Clone, QueryableByName)]
pub struct Event {
    #[diesel(sql_type = BigInt)]
    pub pk: i64,
    #[diesel(sql_type = Text)]
    pub subscription_id: String,
    #[diesel(sql_type = BigInt)]
    pub event_number: i64,
    #[diesel(sql_type = Text)]
    pub resource_type: String,
    #[diesel(sql_type = Text)]
    pub resource_id: String,
    #[diesel(sql_type = BigInt)]
    pub version_id: i64,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = BigInt)]
    pub created_at: i64,
    /// The lease this claim holds; results are recorded only while it is still the event's.
    #[diesel(sql_type = BigInt)]
    pub lease_until: i64,
}

/// Takes up to `limit` due events for delivery until `lease_until`. Per subscription only the
/// oldest pending event is due, so notifications arrive in order even across retries.
pub fn claim(
    conn: &mut AnyConnection,
    now: Micros,
    lease_until: Micros,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let postgres = matches!(conn, AnyConnection::Postgresql(_));
    let mut sql = Sql::default();
    sql.push("UPDATE subscription_events SET attempts = attempts + 1, lease_until = ");
    sql.int(lease_until);
    sql.push(
        " WHERE pk IN (SELECT e.pk FROM subscription_events e WHERE e.status = 'pending' \
         AND e.next_attempt_at <= ",
    );
    sql.int(now);
    sql.push(" AND e.lease_until < ");
    sql.int(now);
    sql.push(
        " AND NOT EXISTS (SELECT 1 FROM subscription_events p WHERE \
         p.subscription_id = e.subscription_id AND p.status = 'pending' AND p.pk < e.pk) \
         ORDER BY e.pk",
    );
    sql.limit("LIMIT", limit);
    if postgres {
        sql.push(" FOR UPDATE SKIP LOCKED");
    }
    sql.push(
        ") RETURNING pk, subscription_id, event_number, resource_type, resource_id, version_id, \
         attempts, created_at, lease_until",
    );
    run(conn, sql)
}

/// Records the end of a delivery attempt while the claim still holds: `status` delivered,
/// failed or dropped, or pending again from `next_attempt_at`.
pub fn finish(
    conn: &mut AnyConnection,
    event: &Event,
    status: &str,
    next_attempt_at: Micros,
    error: Option<&str>,
) -> Result<bool, StoreError> {
    let mut sql = Sql::default();
    sql.push("UPDATE subscription_events SET status = ");
    sql.text(status);
    sql.push(", lease_until = 0, next_attempt_at = ");
    sql.int(next_attempt_at);
    sql.push(", last_error = ");
    sql.bind(error.map_or(Bind::NullText, |e| Bind::Text(e.to_string())));
    sql.push(" WHERE pk = ");
    sql.int(event.pk);
    sql.push(" AND lease_until = ");
    sql.int(event.lease_until);
    Ok(execute(conn, sql)? == 1)
}

/// Ends every pending event of a subscription that is no longer active.
pub fn drop_pending(
    conn: &mut AnyConnection,
    subscription: &str,
    status: &str,
) -> Result<(), StoreError> {
    let mut sql = Sql::default();
    sql.push("UPDATE subscription_events SET status = ");
    sql.text(status);
    sql.push(" WHERE subscription_id = ");
    sql.text(subscription);
    sql.push(" AND status = 'pending'");
    execute(conn, sql)?;
    Ok(())
}

/// The events of a subscription numbered `from` to `to` (inclusive), at most `limit`, in order,
/// whatever became of them.
pub fn events_between(
    conn: &mut AnyConnection,
    subscription: &str,
    from: i64,
    to: i64,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let mut sql = Sql::default();
    sql.push(
        "SELECT pk, subscription_id, event_number, resource_type, resource_id, version_id, \
         attempts, created_at, lease_until FROM subscription_events WHERE subscription_id = ",
    );
    sql.text(subscription);
    sql.push(" AND event_number >= ");
    sql.int(from);
    sql.push(" AND event_number <= ");
    sql.int(to);
    sql.push(" ORDER BY event_number");
    sql.limit("LIMIT", limit);
    run(conn, sql)
}

/// Events generated so far for a subscription.
pub fn event_count(conn: &mut AnyConnection, subscription: &str) -> Result<i64, StoreError> {
    let mut sql = Sql::default();
    sql.push("SELECT events FROM subscriptions WHERE id = ");
    sql.text(subscription);
    Ok(run::<Count>(conn, sql)?
        .first()
        .map(|c| c.events)
        .unwrap_or(0))
}
