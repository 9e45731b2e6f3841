//! What a write does besides storing the version, inside the same database transaction: the one
//! place the write path (`service::resources`) calls into, for every create, update, PATCH and
//! delete, whether it comes alone or in a batch or transaction Bundle.
//!
//! - `before_store` / `before_delete` may refuse the write or complete the resource the server
//!   keeps parts of (workflow rules: the referral Task state machine, Subscription activation).
//! - `after_store` runs once the version and its index rows are written: follow-up writes (the
//!   ServiceRequest of a referral) and the Subscription outbox. Anything else that must commit or
//!   roll back with the write (an audit record) belongs here too.

use serde_json::{Map, Value};

use super::resources::Written;
use super::{attribution, referrals, subscriptions};
use crate::auth::Access;
use crate::auth::scopes::Context;
use crate::error::FhirError;
use crate::fhir::instant::Micros;
use crate::search::registry::Registry;
use crate::store::AnyConnection;
use crate::store::index::IndexBatch;

/// Who makes a write, as far as the program's workflow rules are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The server's own writes (a ServiceRequest following its Task, a Subscription activated
    /// or failed): an administrator whose changes are taken as they are.
    Server,
    /// `--auth none`, and a backend service token without a
    /// `fhirUser` (only `system/` scopes): acts for whichever party a workflow step needs, but
    /// still only along the moves the workflow allows.
    Administrator,
    /// A token's `fhirUser` (`Organization/food-bank`, `PractitionerRole/dr-a`): its party in a
    /// referral is decided from the Task's owner and requester.
    User(String),
    /// A `user/` or `patient/` token that names no `fhirUser`: no party in any referral.
    Unidentified,
}

impl Actor {
    /// Whether the actor may act for any party of a workflow.
    pub fn is_administrator(&self) -> bool {
        matches!(self, Actor::Server | Actor::Administrator)
    }

    pub fn of(access: &Access) -> Actor {
        if access.unrestricted {
            return Actor::Administrator;
        }
        if let Some(user) = &access.fhir_user {
            return Actor::User(user.clone());
        }
        if !access.scopes.is_empty() && access.scopes.iter().all(|s| s.context == Context::System) {
            Actor::Administrator
        } else {
            Actor::Unidentified
        }
    }
}

/// Before a resource is validated: completes what the server derives from it (a Patient's
/// region from the residence and the Pivot Entity it is attributed to).
pub fn before_validation(
    conn: &mut AnyConnection,
    resource_type: &str,
    resource: &mut Map<String, Value>,
) -> Result<(), FhirError> {
    if resource_type == "Patient" {
        attribution::enrich_patient(conn, resource)?;
    }
    Ok(())
}

/// Before `resource_type/id` is stored as `after` (replacing `before`, the current content if
/// any): refuses what the workflow does not allow and fills in what the server maintains.
/// `at` is the new version's `meta.lastUpdated`.
#[allow(clippy::too_many_arguments)]
pub fn before_store(
    conn: &mut AnyConnection,
    registry: &Registry,
    actor: &Actor,
    resource_type: &str,
    id: &str,
    before: Option<&str>,
    after: &mut Map<String, Value>,
    at: Micros,
) -> Result<(), FhirError> {
    if attribution::is_attribution_group(resource_type, id) && *actor != Actor::Server {
        return Err(FhirError::Forbidden(
            "Attribution Groups are maintained by the server from the recipients' residence".into(),
        ));
    }
    match resource_type {
        "Task" => referrals::before_store(conn, actor, id, before, after, at),
        "Subscription" => subscriptions::before_store(registry, actor, before, after),
        _ => Ok(()),
    }
}

/// Before `resource_type/id` (currently `before`) is deleted.
pub fn before_delete(
    conn: &mut AnyConnection,
    actor: &Actor,
    resource_type: &str,
    before: Option<&str>,
) -> Result<(), FhirError> {
    if resource_type == "Group"
        && before.is_some_and(|content| content.contains(attribution::GROUP_PROFILE))
        && *actor != Actor::Server
    {
        return Err(FhirError::Forbidden(
            "Attribution Groups are maintained by the server from the recipients' residence".into(),
        ));
    }
    match resource_type {
        "Task" => referrals::before_delete(conn, actor, before),
        "Subscription" if !actor.is_administrator() => Err(FhirError::Forbidden(
            "Subscriptions are ended by the program's administrators".into(),
        )),
        _ => Ok(()),
    }
}

/// After `written` is stored (its index rows in `batch` when the caller defers them): writes
/// that follow from it, in the same transaction.
pub fn after_store(
    conn: &mut AnyConnection,
    registry: &Registry,
    actor: &Actor,
    written: &Written,
    before: Option<&str>,
    batch: Option<&mut IndexBatch>,
) -> Result<(), FhirError> {
    let mut batch = batch;
    if written.resource_type == "Task" {
        referrals::after_store(conn, registry, actor, written, before, batch.as_deref_mut())?;
    }
    if written.resource_type == "Subscription" {
        subscriptions::register(conn, registry, written)?;
    }
    if written.resource_type == "Patient" {
        attribution::after_patient_write(
            conn,
            registry,
            &written.id,
            written.content.as_deref(),
            written.last_updated,
        )?;
    }
    subscriptions::enqueue(conn, registry, written, before, batch)
}
