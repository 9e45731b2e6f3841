//! Job rows and the shared server state.

use diesel::prelude::*;

use super::schema::{jobs, resources, server_state};
use super::{AnyConnection, StoreError};
use crate::fhir::instant::{Micros, now_micros};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = jobs)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub parameters: String,
    pub cursor: i64,
    pub processed: i64,
    pub total: i64,
    pub message: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
    /// The client that started the job (exports).
    pub owner: Option<String>,
    /// What the job has produced so far (exports: the finished output files, JSON).
    pub result: Option<String>,
}

pub fn insert(conn: &mut AnyConnection, job: &Job) -> Result<(), StoreError> {
    diesel::insert_into(jobs::table).values(job).execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut AnyConnection, id: &str) -> Result<Option<Job>, StoreError> {
    Ok(jobs::table
        .find(id)
        .select(Job::as_select())
        .first(conn)
        .optional()?)
}

/// Records progress; returns false when the job is no longer this worker's (cancelled, or
/// taken over after a stale heartbeat).
pub fn advance(
    conn: &mut AnyConnection,
    id: &str,
    cursor: i64,
    processed: i64,
    heartbeat: Micros,
) -> Result<bool, StoreError> {
    let changed = diesel::update(
        jobs::table
            .filter(jobs::id.eq(id))
            .filter(jobs::status.eq("running"))
            .filter(jobs::updated_at.eq(heartbeat)),
    )
    .set((
        jobs::cursor.eq(cursor),
        jobs::processed.eq(processed),
        jobs::updated_at.eq(heartbeat + 1),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

pub fn finish(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
    message: Option<String>,
) -> Result<(), StoreError> {
    diesel::update(jobs::table.find(id))
        .set((
            jobs::status.eq(status),
            jobs::message.eq(message),
            jobs::updated_at.eq(now_micros()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Takes a queued job, or a running one whose worker stopped beating for `stale_after`
/// microseconds; returns it with the heartbeat this worker now owns.
pub fn claim(
    conn: &mut AnyConnection,
    kind: &str,
    stale_after: Micros,
) -> Result<Option<Job>, StoreError> {
    let now = now_micros();
    let candidates: Vec<Job> = jobs::table
        .filter(jobs::kind.eq(kind))
        .filter(
            jobs::status.eq("queued").or(jobs::status
                .eq("running")
                .and(jobs::updated_at.lt(now - stale_after))),
        )
        .select(Job::as_select())
        .limit(5)
        .load(conn)?;
    for mut job in candidates {
        let taken = diesel::update(
            jobs::table
                .filter(jobs::id.eq(&job.id))
                .filter(jobs::updated_at.eq(job.updated_at))
                .filter(jobs::status.eq(&job.status)),
        )
        .set((jobs::status.eq("running"), jobs::updated_at.eq(now)))
        .execute(conn)?;
        if taken == 1 {
            job.status = "running".into();
            job.updated_at = now;
            return Ok(Some(job));
        }
    }
    Ok(None)
}

/// Resource keys after `cursor`, in order, at most `limit`, of the given types (all if empty).
pub fn resource_keys_after(
    conn: &mut AnyConnection,
    cursor: i64,
    types: &[String],
    limit: i64,
) -> Result<Vec<(i64, Option<String>)>, StoreError> {
    let mut query = resources::table
        .filter(resources::pk.gt(cursor))
        .filter(resources::deleted.eq(0))
        .select((resources::pk, resources::content))
        .order(resources::pk)
        .limit(limit)
        .into_boxed();
    if !types.is_empty() {
        query = query.filter(resources::resource_type.eq_any(types.to_vec()));
    }
    Ok(query.load(conn)?)
}

pub fn count_resources(conn: &mut AnyConnection, types: &[String]) -> Result<i64, StoreError> {
    let mut query = resources::table
        .filter(resources::deleted.eq(0))
        .count()
        .into_boxed();
    if !types.is_empty() {
        query = query.filter(resources::resource_type.eq_any(types.to_vec()));
    }
    Ok(query.get_result(conn)?)
}

pub fn state(conn: &mut AnyConnection, name: &str) -> Result<Option<String>, StoreError> {
    Ok(server_state::table
        .find(name)
        .select(server_state::value)
        .first(conn)
        .optional()?)
}

pub fn set_state(conn: &mut AnyConnection, name: &str, value: &str) -> Result<(), StoreError> {
    // One statement: an update-then-insert lets two concurrent first writers (two `$reindex`
    // calls on PostgreSQL) both insert, and one fails on the primary key.
    let mut sql = super::sql::Sql::default();
    sql.push("INSERT INTO server_state (name, value) VALUES (");
    sql.text(name);
    sql.push(", ");
    sql.text(value);
    sql.push(") ON CONFLICT (name) DO UPDATE SET value = excluded.value");
    super::sql::execute(conn, sql)?;
    Ok(())
}

/// Records an export's progress and renews its lease: only while the job is still running
/// under the lease `heartbeat` this worker holds. Returns the new lease, or `None` when the
/// job is no longer this worker's (cancelled, or taken over after its lease ran out).
pub fn checkpoint(
    conn: &mut AnyConnection,
    id: &str,
    cursor: i64,
    processed: i64,
    result: Option<&str>,
    heartbeat: Micros,
) -> Result<Option<Micros>, StoreError> {
    // strictly later than the lease held, also when the clock has not moved on
    let renewed = now_micros().max(heartbeat + 1);
    let changed = diesel::update(
        jobs::table
            .filter(jobs::id.eq(id))
            .filter(jobs::status.eq("running"))
            .filter(jobs::updated_at.eq(heartbeat)),
    )
    .set((
        jobs::cursor.eq(cursor),
        jobs::processed.eq(processed),
        jobs::result.eq(result),
        jobs::updated_at.eq(renewed),
    ))
    .execute(conn)?;
    Ok((changed == 1).then_some(renewed))
}

/// Ends a job this worker holds under `heartbeat`; false when it is no longer its own.
pub fn finish_held(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
    result: Option<&str>,
    message: Option<&str>,
    heartbeat: Micros,
) -> Result<bool, StoreError> {
    let changed = diesel::update(
        jobs::table
            .filter(jobs::id.eq(id))
            .filter(jobs::status.eq("running"))
            .filter(jobs::updated_at.eq(heartbeat)),
    )
    .set((
        jobs::status.eq(status),
        jobs::result.eq(result),
        jobs::message.eq(message),
        jobs::updated_at.eq(now_micros().max(heartbeat + 1)),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Jobs of `kind` that ended (completed, failed, cancelled) before `before`.
pub fn ended_before(
    conn: &mut AnyConnection,
    kind: &str,
    before: Micros,
) -> Result<Vec<String>, StoreError> {
    Ok(jobs::table
        .filter(jobs::kind.eq(kind))
        .filter(jobs::status.eq_any(["completed", "failed", "cancelled"]))
        .filter(jobs::updated_at.lt(before))
        .select(jobs::id)
        .limit(100)
        .load(conn)?)
}

pub fn delete(conn: &mut AnyConnection, id: &str) -> Result<(), StoreError> {
    diesel::delete(jobs::table.find(id)).execute(conn)?;
    Ok(())
}

/// How many jobs of `kind` are in each state (for monitoring).
pub fn count_by_state(
    conn: &mut AnyConnection,
    kind: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(jobs::table
        .filter(jobs::kind.eq(kind))
        .group_by(jobs::status)
        .select((jobs::status, diesel::dsl::count_star()))
        .order(jobs::status)
        .load(conn)?)
}
