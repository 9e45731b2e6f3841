//! The closed-loop referral workflow of the Gravity SDOH Clinical Care IG (Task for referral
//! management, program profile `pivot-referral-task`), enforced by the server on every write of
//! a referral Task: a `fulfill` Task whose `focus` is a ServiceRequest.
//!
//! - Status moves follow the IG's table, each by its party: the owner (`Task.owner`, the CBO)
//!   accepts, rejects, starts, holds, completes or fails; the requester (`Task.requester`)
//!   cancels a requested Task and marks one entered-in-error; either cancels once accepted. A move
//!   the table lacks is 409 naming both statuses; a move by the other party is 403.
//! - A party is the token's `fhirUser` equal to the Task's reference, or sharing its
//!   organization (a PractitionerRole counts as its Organization). An administrator (see
//!   `Actor`) acts for either party.
//! - The owner may change only the elements it owns (status, statusReason, businessStatus,
//!   output, note; the server's meta, lastModified and executionPeriod).
//! - `received` and `ready` are never a referral Task's status (acknowledge with
//!   `businessStatus = received`); rejected, failed, cancelled and on-hold say why
//!   (`statusReason.text`); completed reports what was done (`output` of type
//!   `resulting-activity`, a Procedure that exists or a code); nothing is reported before
//!   acceptance.
//! - The server keeps `executionPeriod` (start: first acceptance; end: first closed status) and
//!   `lastModified`, and moves the ServiceRequest along in the same transaction: `completed`
//!   when its last open Task completes, `revoked` when the requester cancels.

use serde_json::{Map, Value, json};

use super::resources::{self, Written};
use super::write_effects::Actor;
use crate::error::FhirError;
use crate::fhir::instant::{Micros, format_instant};
use crate::fhir::outcome::Issue;
use crate::search::registry::Registry;
use crate::search::request::parse_request;
use crate::store::AnyConnection;
use crate::store::index::IndexBatch;
use crate::store::resources as rows;
use crate::store::search::{SearchSpec, search};

const TEMPORARY_CODES: &str =
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes";

/// Statuses of a referral that is still being worked on.
pub const OPEN: [&str; 5] = ["draft", "requested", "accepted", "in-progress", "on-hold"];

/// The elements the owner of a referral may change.
const OWNER_ELEMENTS: [&str; 9] = [
    "meta",
    "status",
    "statusReason",
    "businessStatus",
    "output",
    "note",
    "lastModified",
    "executionPeriod",
    "text",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Party {
    Owner,
    Requester,
}

impl Party {
    fn name(self) -> &'static str {
        match self {
            Party::Owner => "owner",
            Party::Requester => "requester",
        }
    }
}

/// Who may move a referral Task from `from` to `to`; `None` when the IG's table has no such move.
fn allowed(from: &str, to: &str) -> Option<&'static [Party]> {
    use Party::{Owner, Requester};
    match (from, to) {
        (_, "entered-in-error") => Some(&[Requester]),
        ("draft", "requested") => Some(&[Requester]),
        ("requested", "accepted" | "rejected") => Some(&[Owner]),
        ("requested", "cancelled") => Some(&[Requester]),
        ("accepted", "in-progress" | "on-hold" | "completed" | "failed") => Some(&[Owner]),
        ("in-progress", "on-hold" | "completed" | "failed") => Some(&[Owner]),
        ("on-hold", "in-progress" | "completed" | "failed") => Some(&[Owner]),
        ("accepted" | "in-progress" | "on-hold", "cancelled") => Some(&[Requester, Owner]),
        _ => None,
    }
}

/// Whether a Task is a referral: a `fulfill` Task (the code the IG fixes) whose focus is a
/// ServiceRequest. Other Tasks (lab workflow, financial) keep FHIR's general rules.
pub fn is_referral(task: &Map<String, Value>) -> bool {
    let fulfill = task
        .get("code")
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .is_some_and(|codings| {
            codings.iter().any(|c| {
                c.get("system").and_then(Value::as_str)
                    == Some("http://hl7.org/fhir/CodeSystem/task-code")
                    && c.get("code").and_then(Value::as_str) == Some("fulfill")
            })
        });
    fulfill && reference(task, "focus").is_some_and(|r| r.starts_with("ServiceRequest/"))
}

/// `Type/id` of the reference in `element`, from a relative or absolute reference.
fn reference(resource: &Map<String, Value>, element: &str) -> Option<String> {
    let text = resource.get(element)?.get("reference")?.as_str()?;
    relative(text)
}

fn relative(text: &str) -> Option<String> {
    let path = text.split(['?', '#']).next().unwrap_or_default();
    let path = path.split("/_history/").next().unwrap_or_default();
    let mut parts = path.rsplit('/');
    let id = parts.next()?;
    let resource_type = parts.next()?;
    (crate::fhir::is_resource_type(resource_type) && crate::fhir::is_valid_id(id))
        .then(|| format!("{resource_type}/{id}"))
}

fn status(task: &Map<String, Value>) -> &str {
    task.get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// A reference and the organization it acts for (a PractitionerRole's Organization).
fn identities(conn: &mut AnyConnection, target: &str) -> Result<Vec<String>, FhirError> {
    let mut found = vec![target.to_string()];
    if let Some(id) = target.strip_prefix("PractitionerRole/")
        && let Some(content) = rows::current(conn, "PractitionerRole", id)?.and_then(|c| c.content)
        && let Ok(Value::Object(role)) = serde_json::from_str::<Value>(&content)
        && let Some(organization) = reference(&role, "organization")
    {
        found.push(organization);
    }
    Ok(found)
}

/// Which parties of `task` the actor is.
fn parties(
    conn: &mut AnyConnection,
    actor: &Actor,
    task: &Map<String, Value>,
) -> Result<Vec<Party>, FhirError> {
    let user = match actor {
        Actor::Server | Actor::Administrator => {
            return Ok(vec![Party::Requester, Party::Owner]);
        }
        Actor::Unidentified => return Ok(Vec::new()),
        Actor::User(user) => match relative(user) {
            Some(user) => user,
            None => return Ok(Vec::new()),
        },
    };
    let mine = identities(conn, &user)?;
    let mut found = Vec::new();
    for (party, element) in [(Party::Requester, "requester"), (Party::Owner, "owner")] {
        if let Some(theirs) = reference(task, element) {
            let theirs = identities(conn, &theirs)?;
            if theirs.iter().any(|t| mine.contains(t)) {
                found.push(party);
            }
        }
    }
    Ok(found)
}

fn transition_error(from: &str, to: &str) -> FhirError {
    FhirError::Conflict(format!(
        "task-transition: a referral Task cannot move from '{from}' to '{to}'"
    ))
}

fn rule(key: &str, message: &str, expression: &str) -> FhirError {
    FhirError::Unprocessable(vec![
        Issue::error("invariant", format!("{key}: {message}")).at(expression.to_string()),
    ])
}

/// Checks a referral Task about to be stored and fills in what the server keeps.
pub fn before_store(
    conn: &mut AnyConnection,
    actor: &Actor,
    id: &str,
    before: Option<&str>,
    after: &mut Map<String, Value>,
    at: Micros,
) -> Result<(), FhirError> {
    let before: Option<Map<String, Value>> =
        before.and_then(|text| serde_json::from_str(text).ok());
    if !is_referral(after) && !before.as_ref().is_some_and(is_referral) {
        return Ok(());
    }
    let to = status(after).to_string();
    if to == "received" || to == "ready" {
        return Err(FhirError::Unprocessable(vec![
            Issue::error(
                "code-invalid",
                format!(
                    "A referral Task's status is never '{to}'; acknowledge receipt with businessStatus 'received' while the status stays 'requested'"
                ),
            )
            .at("Task.status"),
        ]));
    }
    match &before {
        None => check_create(conn, actor, id, after, &to)?,
        Some(before) => check_move(conn, actor, id, before, after, &to)?,
    }
    check_content(conn, before.as_ref(), after, &to)?;
    keep_server_elements(actor, before.as_ref(), after, &to, at);
    Ok(())
}

fn check_create(
    conn: &mut AnyConnection,
    actor: &Actor,
    id: &str,
    task: &Map<String, Value>,
    to: &str,
) -> Result<(), FhirError> {
    if actor.is_administrator() {
        // Loading referrals from another system may bring any status.
        return Ok(());
    }
    if !parties(conn, actor, task)?.contains(&Party::Requester) {
        return Err(FhirError::Forbidden(format!(
            "task-actor: only the requester may create the referral Task/{id}"
        )));
    }
    if to != "draft" && to != "requested" {
        return Err(FhirError::Conflict(format!(
            "task-transition: a new referral Task starts as 'draft' or 'requested', not '{to}'"
        )));
    }
    Ok(())
}

fn check_move(
    conn: &mut AnyConnection,
    actor: &Actor,
    id: &str,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    to: &str,
) -> Result<(), FhirError> {
    let from = status(before);
    // The parties are those of the stored Task: a change cannot make its author a party.
    let mine = parties(conn, actor, before)?;
    if mine.is_empty() {
        return Err(FhirError::Forbidden(format!(
            "task-actor: only the owner or the requester of the referral Task/{id} may change it"
        )));
    }
    if from != to {
        let Some(movers) = allowed(from, to) else {
            return Err(transition_error(from, to));
        };
        if !movers.iter().any(|p| mine.contains(p)) {
            return Err(FhirError::Forbidden(format!(
                "task-actor: only the {} may move a referral Task from '{from}' to '{to}'",
                movers
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
    }
    if !mine.contains(&Party::Requester) {
        let changed = before
            .keys()
            .chain(after.keys())
            .find(|key| {
                !matches!(key.as_str(), "resourceType" | "id")
                    && !OWNER_ELEMENTS.contains(&key.trim_start_matches('_'))
                    && before.get(*key) != after.get(*key)
            })
            .cloned();
        if let Some(key) = changed {
            return Err(FhirError::Forbidden(format!(
                "task-actor: the owner of a referral may change only {}, not '{key}'",
                OWNER_ELEMENTS[1..6].join(", ")
            )));
        }
    }
    Ok(())
}

/// The program's rules on what a referral Task in a status carries.
fn check_content(
    conn: &mut AnyConnection,
    before: Option<&Map<String, Value>>,
    task: &Map<String, Value>,
    to: &str,
) -> Result<(), FhirError> {
    if matches!(to, "rejected" | "failed" | "cancelled" | "on-hold")
        && task
            .get("statusReason")
            .and_then(|r| r.get("text"))
            .and_then(Value::as_str)
            .is_none_or(|t| t.trim().is_empty())
    {
        return Err(rule(
            "pivot-task-1",
            &format!("a referral Task that is {to} says why (statusReason.text)"),
            "Task.statusReason",
        ));
    }
    let outputs = task
        .get("output")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if matches!(to, "draft" | "requested") && !outputs.is_empty() {
        return Err(rule(
            "pivot-task-3",
            "nothing is reported (output) before the performer accepts the referral",
            "Task.output",
        ));
    }
    if to == "completed" {
        let activities: Vec<&Value> = outputs
            .iter()
            .filter(|o| {
                o.pointer("/type/coding")
                    .and_then(Value::as_array)
                    .is_some_and(|codings| {
                        codings.iter().any(|c| {
                            c.get("system").and_then(Value::as_str) == Some(TEMPORARY_CODES)
                                && c.get("code").and_then(Value::as_str)
                                    == Some("resulting-activity")
                        })
                    })
            })
            .collect();
        if activities.is_empty() {
            return Err(rule(
                "pivot-task-2",
                "a completed referral reports what was done: an output of type resulting-activity",
                "Task.output",
            ));
        }
        let newly_completed = before.is_none_or(|b| status(b) != "completed");
        for (index, activity) in activities.iter().enumerate() {
            let Some(target) = activity
                .pointer("/valueReference/reference")
                .and_then(Value::as_str)
            else {
                if activity.get("valueCodeableConcept").is_some() {
                    continue;
                }
                return Err(rule(
                    "pivot-task-2",
                    "a resulting-activity output is a Procedure reference or a procedure code",
                    &format!("Task.output[{index}]"),
                ));
            };
            let Some(procedure) = relative(target).filter(|r| r.starts_with("Procedure/")) else {
                return Err(rule(
                    "pivot-task-2",
                    "a resulting-activity output references a Procedure",
                    &format!("Task.output[{index}].valueReference"),
                ));
            };
            if newly_completed {
                let procedure_id = procedure.trim_start_matches("Procedure/");
                let exists =
                    rows::current(conn, "Procedure", procedure_id)?.is_some_and(|c| c.deleted == 0);
                if !exists {
                    return Err(rule(
                        "pivot-task-2",
                        &format!("the reported {procedure} does not exist"),
                        &format!("Task.output[{index}].valueReference"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `executionPeriod` and `lastModified` are the server's: the stored period is kept, its start
/// set at the first acceptance and its end at the first closed status.
fn keep_server_elements(
    actor: &Actor,
    before: Option<&Map<String, Value>>,
    task: &mut Map<String, Value>,
    to: &str,
    at: Micros,
) {
    let now = format_instant(at);
    let mut period = match before {
        Some(before) => before.get("executionPeriod").cloned(),
        // an administrator loading referrals keeps their history
        None if actor.is_administrator() => task.get("executionPeriod").cloned(),
        None => None,
    }
    .and_then(|p| p.as_object().cloned())
    .unwrap_or_default();
    let started = matches!(
        to,
        "accepted" | "in-progress" | "on-hold" | "completed" | "failed"
    );
    if started && !period.contains_key("start") {
        period.insert("start".into(), json!(now));
    }
    if !OPEN.contains(&to) && to != "entered-in-error" && !period.contains_key("end") {
        period.insert("end".into(), json!(now));
    }
    if period.is_empty() {
        task.shift_remove("executionPeriod");
    } else {
        task.insert("executionPeriod".into(), Value::Object(period));
    }
    if before.is_some() || !actor.is_administrator() || !task.contains_key("lastModified") {
        task.insert("lastModified".into(), json!(now));
    }
}

/// A referral Task may be deleted only by its requester (the owner closes it instead).
pub fn before_delete(
    conn: &mut AnyConnection,
    actor: &Actor,
    before: Option<&str>,
) -> Result<(), FhirError> {
    let Some(task) = before.and_then(|t| serde_json::from_str::<Map<String, Value>>(t).ok()) else {
        return Ok(());
    };
    if is_referral(&task) && !parties(conn, actor, &task)?.contains(&Party::Requester) {
        return Err(FhirError::Forbidden(
            "task-actor: only the requester may delete a referral Task; the owner closes it with a status".into(),
        ));
    }
    Ok(())
}

/// After a referral Task is stored: its ServiceRequest follows (completed when no Task on it is
/// open any more, revoked when the requester cancels).
pub fn after_store(
    conn: &mut AnyConnection,
    registry: &Registry,
    actor: &Actor,
    written: &Written,
    before: Option<&str>,
    batch: Option<&mut IndexBatch>,
) -> Result<(), FhirError> {
    let Some(task) = written
        .content
        .as_deref()
        .and_then(|t| serde_json::from_str::<Map<String, Value>>(t).ok())
    else {
        return Ok(());
    };
    let Some(focus) = reference(&task, "focus").filter(|r| r.starts_with("ServiceRequest/")) else {
        return Ok(());
    };
    let from = before
        .and_then(|t| serde_json::from_str::<Map<String, Value>>(t).ok())
        .map(|b| status(&b).to_string());
    let to = status(&task);
    if from.as_deref() == Some(to) {
        return Ok(());
    }
    let next = match to {
        "completed" => {
            if let Some(batch) = batch {
                batch.flush(conn)?;
            }
            if other_open_tasks(conn, registry, &focus, &written.id)? {
                return Ok(());
            }
            "completed"
        }
        "cancelled" if parties(conn, actor, &task)?.contains(&Party::Requester) => "revoked",
        _ => return Ok(()),
    };
    let id = focus.trim_start_matches("ServiceRequest/");
    let Some(current) = rows::current(conn, "ServiceRequest", id)?.filter(|c| c.deleted == 0)
    else {
        return Ok(());
    };
    let Some(Value::Object(mut request)) = current
        .content
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
    else {
        return Ok(());
    };
    // Only a request still in force follows its Tasks.
    if !matches!(status(&request), "draft" | "active" | "on-hold") {
        return Ok(());
    }
    request.insert("status".into(), json!(next));
    resources::update(
        conn,
        registry,
        &Actor::Server,
        id,
        request,
        Some(current.version_id),
        "PUT",
    )?;
    Ok(())
}

/// Whether another Task on `focus` is still open.
fn other_open_tasks(
    conn: &mut AnyConnection,
    registry: &Registry,
    focus: &str,
    task_id: &str,
) -> Result<bool, FhirError> {
    let pairs = vec![
        ("focus".to_string(), focus.to_string()),
        ("status".to_string(), OPEN.join(",")),
    ];
    let request = parse_request(registry, "Task", &pairs, true)?;
    let spec = SearchSpec {
        types: vec!["Task".to_string()],
        conditions: request.conditions,
        limit: 2,
        ..Default::default()
    };
    Ok(search(conn, &spec)?.iter().any(|found| found.id != task_id))
}

/// The named query `_query=overdue-referrals` on Task: Tasks still open (requested, accepted,
/// in-progress, on-hold) authored more than `overdue_days` days before `now`. It combines with
/// other parameters, e.g. `patient.region=3` for a region's worklist. It does not add
/// `code=fulfill`: nearly every Task of the program is a referral, and that condition would
/// drive the query through all of them.
pub fn named_query(
    resource_type: Option<&str>,
    params: Vec<(String, String)>,
    overdue_days: u32,
    now: Micros,
) -> Result<Vec<(String, String)>, FhirError> {
    let Some(position) = params.iter().position(|(name, _)| name == "_query") else {
        return Ok(params);
    };
    let mut params = params;
    let (_, name) = params.remove(position);
    if name != "overdue-referrals" || resource_type != Some("Task") {
        return Err(FhirError::invalid(
            Issue::error(
                "not-supported",
                format!("Unknown named query '{name}'; Task supports _query=overdue-referrals"),
            )
            .at("_query"),
        ));
    }
    let cutoff = now - i64::from(overdue_days) * 86_400 * 1_000_000;
    let cutoff = format_instant(cutoff);
    // seconds are precise enough, and keep the value a valid dateTime in links
    let cutoff = format!("{}Z", cutoff.split('.').next().unwrap_or_default());
    params.push(("status".into(), OPEN[1..].join(",")));
    params.push(("authored-on".into(), format!("lt{cutoff}")));
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_igs() {
        assert_eq!(allowed("requested", "accepted"), Some(&[Party::Owner][..]));
        assert_eq!(allowed("requested", "completed"), None);
        assert_eq!(allowed("completed", "in-progress"), None);
        assert_eq!(
            allowed("in-progress", "cancelled"),
            Some(&[Party::Requester, Party::Owner][..])
        );
        assert_eq!(
            allowed("completed", "entered-in-error"),
            Some(&[Party::Requester][..])
        );
        assert_eq!(
            relative("http://x/fhir/Organization/a"),
            Some("Organization/a".into())
        );
        assert_eq!(relative("urn:uuid:1"), None);
    }
}
