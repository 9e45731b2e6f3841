//! Registered clients and used client assertions.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::schema::{clients, used_assertions};
use super::{AnyConnection, StoreError};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = clients)]
pub struct Client {
    pub client_id: String,
    pub jwks: String,
    pub scope: String,
    pub fhir_user: Option<String>,
    pub created_at: i64,
}

/// Registers a client, replacing an earlier registration with the same id.
pub fn save(conn: &mut AnyConnection, client: &Client) -> Result<(), StoreError> {
    diesel::delete(clients::table.find(&client.client_id)).execute(conn)?;
    diesel::insert_into(clients::table)
        .values(client)
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut AnyConnection, client_id: &str) -> Result<Option<Client>, StoreError> {
    Ok(clients::table
        .find(client_id)
        .select(Client::as_select())
        .first(conn)
        .optional()?)
}

/// Records an assertion's `jti`; false when it was used before (a replay).
pub fn use_assertion(
    conn: &mut AnyConnection,
    client_id: &str,
    jti: &str,
    expires_at: i64,
    now: i64,
) -> Result<bool, StoreError> {
    diesel::delete(used_assertions::table.filter(used_assertions::expires_at.lt(now)))
        .execute(conn)?;
    let inserted = diesel::insert_into(used_assertions::table)
        .values((
            used_assertions::client_id.eq(client_id),
            used_assertions::jti.eq(jti),
            used_assertions::expires_at.eq(expires_at),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(true),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
        Err(err) => Err(err.into()),
    }
}
