//! Subscriptions (R4 rest-hook, http://hl7.org/fhir/R4/subscription.html, and the topic-based
//! R4 backport, http://hl7.org/fhir/uv/subscriptions-backport/): what happens in the write
//! transaction. A Subscription is checked when written and recorded in `subscriptions`; every
//! create or update of a watched type that matches writes a notification to the outbox
//! (`subscription_events`) in the same transaction. Activation and delivery run in the background
//! (`service::notifications`).
//!
//! Criteria (`Task?owner=Organization/x&status=requested`) and topic filters are matched with the
//! search engine, restricted to the changed resource's `_id`, so they mean exactly what the same
//! search means.

use serde_json::{Map, Value};

use super::resources::Written;
use super::write_effects::Actor;
use crate::error::FhirError;
use crate::fhir::instant::now_micros;
use crate::fhir::outcome::Issue;
use crate::search::query::Condition;
use crate::search::registry::Registry;
use crate::search::request::parse_request;
use crate::store::AnyConnection;
use crate::store::index::IndexBatch;
use crate::store::search::{SearchSpec, search};
use crate::store::subscriptions as store;

pub const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";

/// A topic this server offers to topic-based subscriptions: which changes of which type it
/// reports.
pub struct Topic {
    pub url: &'static str,
    pub resource_type: &'static str,
    pub title: &'static str,
    pub trigger: Trigger,
}

/// Whether the change from `before` (none: a create) to `after` is an event of a topic.
pub type Trigger = fn(Option<&Map<String, Value>>, &Map<String, Value>) -> bool;

/// The program's topics.
pub const TOPICS: &[Topic] = &[
    Topic {
        url: "http://example.org/fhir/pivot/SubscriptionTopic/referral-status",
        resource_type: "Task",
        title: "Referral status changed: a new referral Task, or a change of its status or business status",
        trigger: referral_status_changed,
    },
    Topic {
        url: "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Task",
        resource_type: "Task",
        title: "SDOHCC Task topic: a Task created or updated, status not draft, intent order",
        trigger: sdohcc_task,
    },
];

fn text<'a>(resource: &'a Map<String, Value>, element: &str) -> Option<&'a str> {
    resource.get(element).and_then(Value::as_str)
}

fn referral_status_changed(
    before: Option<&Map<String, Value>>,
    after: &Map<String, Value>,
) -> bool {
    if text(after, "status") == Some("draft") || !super::referrals::is_referral(after) {
        return false;
    }
    match before {
        None => true,
        Some(before) => {
            text(before, "status") != text(after, "status")
                || before.get("businessStatus") != after.get("businessStatus")
        }
    }
}

fn sdohcc_task(_: Option<&Map<String, Value>>, after: &Map<String, Value>) -> bool {
    text(after, "status") != Some("draft") && text(after, "intent") == Some("order")
}

pub fn topic(url: &str) -> Option<&'static Topic> {
    TOPICS.iter().find(|t| t.url == url)
}

/// What a Subscription watches: the resource type, the search to match (without the type) and
/// the topic, if topic-based.
pub struct Watching {
    pub resource_type: String,
    pub criteria: String,
    pub topic: Option<&'static Topic>,
}

fn unprocessable(expression: &str, message: impl Into<String>) -> FhirError {
    FhirError::Unprocessable(vec![
        Issue::error("not-supported", message).at(expression.to_string()),
    ])
}

/// The filter criteria of a topic-based Subscription (backport extension on `criteria`).
fn filters(subscription: &Map<String, Value>) -> Vec<String> {
    subscription
        .get("_criteria")
        .and_then(|c| c.get("extension"))
        .and_then(Value::as_array)
        .map(|extensions| {
            extensions
                .iter()
                .filter(|e| {
                    e.get("url").and_then(Value::as_str)
                        == Some(&format!("{BACKPORT}/backport-filter-criteria") as &str)
                })
                .filter_map(|e| e.get("valueString").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads what a Subscription watches, refusing criteria the server cannot evaluate.
pub fn watching(
    registry: &Registry,
    subscription: &Map<String, Value>,
) -> Result<Watching, FhirError> {
    let criteria = text(subscription, "criteria").unwrap_or_default().trim();
    if criteria.starts_with("http://") || criteria.starts_with("https://") {
        let Some(topic) = topic(criteria) else {
            return Err(unprocessable(
                "Subscription.criteria",
                format!(
                    "The server offers no topic '{criteria}'; it offers {}",
                    TOPICS.iter().map(|t| t.url).collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        let mut queries = Vec::new();
        for filter in filters(subscription) {
            let query = match filter.split_once('?') {
                Some((resource_type, query)) if resource_type == topic.resource_type => query,
                None if !filter.contains('/') => filter.as_str(),
                _ => {
                    return Err(unprocessable(
                        "Subscription.criteria",
                        format!(
                            "A filter of this topic is a {} search, not '{filter}'",
                            topic.resource_type
                        ),
                    ));
                }
            };
            check_query(registry, topic.resource_type, query)?;
            queries.push(query.to_string());
        }
        return Ok(Watching {
            resource_type: topic.resource_type.to_string(),
            criteria: queries.join("&"),
            topic: Some(topic),
        });
    }
    let (resource_type, query) = criteria.split_once('?').unwrap_or((criteria, ""));
    if !crate::fhir::is_resource_type(resource_type) {
        return Err(unprocessable(
            "Subscription.criteria",
            "The criteria must be a search such as Task?owner=Organization/x, or a topic URL",
        ));
    }
    check_query(registry, resource_type, query)?;
    Ok(Watching {
        resource_type: resource_type.to_string(),
        criteria: query.to_string(),
        topic: None,
    })
}

fn check_query(registry: &Registry, resource_type: &str, query: &str) -> Result<(), FhirError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
        unprocessable(
            "Subscription.criteria",
            "The criteria are not a valid query string",
        )
    })?;
    if let Some((name, _)) = pairs.iter().find(|(name, _)| {
        name.starts_with('_')
            && !matches!(
                name.as_str(),
                "_id" | "_lastUpdated" | "_tag" | "_profile" | "_security" | "_source" | "_has"
            )
            && !name.starts_with("_has:")
    }) {
        return Err(unprocessable(
            "Subscription.criteria",
            format!("'{name}' has no meaning in subscription criteria"),
        ));
    }
    parse_request(registry, resource_type, &pairs, true).map_err(|err| {
        FhirError::Unprocessable(
            err.issues()
                .into_iter()
                .map(|issue| issue.at("Subscription.criteria"))
                .collect(),
        )
    })?;
    Ok(())
}

/// The channel: rest-hook to an http(s) URL, with no payload or FHIR JSON.
fn check_channel(subscription: &Map<String, Value>) -> Result<(), FhirError> {
    let channel = subscription.get("channel").cloned().unwrap_or_default();
    if channel.get("type").and_then(Value::as_str) != Some("rest-hook") {
        return Err(unprocessable(
            "Subscription.channel.type",
            "This server delivers rest-hook subscriptions only",
        ));
    }
    let endpoint = channel
        .get("endpoint")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match reqwest::Url::parse(endpoint) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {}
        _ => {
            return Err(unprocessable(
                "Subscription.channel.endpoint",
                "A rest-hook endpoint is an absolute http or https URL",
            ));
        }
    }
    if let Some(payload) = channel.get("payload").and_then(Value::as_str)
        && !matches!(payload, "application/fhir+json" | "application/json")
    {
        return Err(unprocessable(
            "Subscription.channel.payload",
            "Notifications are sent as application/fhir+json",
        ));
    }
    for header in channel
        .get("header")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if !header
            .as_str()
            .and_then(|h| h.split_once(':'))
            .is_some_and(|(name, _)| {
                !name.trim().is_empty() && name.trim().bytes().all(|b| b.is_ascii_graphic())
            })
        {
            return Err(unprocessable(
                "Subscription.channel.header",
                "Each header is 'Name: value'",
            ));
        }
    }
    Ok(())
}

/// Checks a Subscription a client writes: only an administrator may. A client asks for
/// `requested` (or `off`); the server
/// activates it in the background once the endpoint is allowed. A client that writes back an
/// active (or errored) Subscription unchanged keeps its status; any other change asks again.
pub fn before_store(
    registry: &Registry,
    actor: &Actor,
    before: Option<&str>,
    after: &mut Map<String, Value>,
) -> Result<(), FhirError> {
    if *actor == Actor::Server {
        return Ok(());
    }
    if !actor.is_administrator() {
        // A notification carries data past the per-user policy checks of reads and searches.
        return Err(FhirError::Forbidden(
            "Subscriptions are registered by the program's administrators (a backend service token without fhirUser)".into(),
        ));
    }
    check_channel(after)?;
    watching(registry, after)?;
    let before: Option<Map<String, Value>> = before.and_then(|t| serde_json::from_str(t).ok());
    let status = text(after, "status").unwrap_or_default().to_string();
    let unchanged = before.as_ref().is_some_and(|b| {
        text(b, "status") == Some(status.as_str())
            && b.get("criteria") == after.get("criteria")
            && b.get("_criteria") == after.get("_criteria")
            && b.get("channel") == after.get("channel")
    });
    if status != "off" && !(unchanged && matches!(status.as_str(), "active" | "error")) {
        after.insert("status".into(), Value::String("requested".into()));
        after.shift_remove("error");
    }
    Ok(())
}

/// Records a written (or deleted) Subscription in `subscriptions`; the pending notifications of
/// one that stopped are dropped.
pub fn register(
    conn: &mut AnyConnection,
    registry: &Registry,
    written: &Written,
) -> Result<(), FhirError> {
    let Some(subscription) = written
        .content
        .as_deref()
        .and_then(|c| serde_json::from_str::<Map<String, Value>>(c).ok())
    else {
        store::remove(conn, &written.id)?;
        store::drop_pending(conn, &written.id, "dropped")?;
        return Ok(());
    };
    let status = text(&subscription, "status").unwrap_or_default();
    // The registry in force may no longer read these criteria: then it watches nothing.
    let (resource_type, criteria, topic) = match watching(registry, &subscription) {
        Ok(w) => (w.resource_type, w.criteria, w.topic.map(|t| t.url)),
        Err(_) => (String::new(), String::new(), None),
    };
    store::upsert(conn, &written.id, status, &resource_type, &criteria, topic)?;
    if status != "active" {
        store::drop_pending(conn, &written.id, "dropped")?;
    }
    Ok(())
}

/// Writes a notification for every active Subscription the change of `written` matches.
pub fn enqueue(
    conn: &mut AnyConnection,
    registry: &Registry,
    written: &Written,
    before: Option<&str>,
    batch: Option<&mut IndexBatch>,
) -> Result<(), FhirError> {
    let Some(content) = written.content.as_deref() else {
        return Ok(());
    };
    let watches = store::watching(conn, &written.resource_type)?;
    if watches.is_empty() {
        return Ok(());
    }
    // The criteria are searches: they need this resource's index rows.
    if let Some(batch) = batch
        && !batch.is_empty()
    {
        batch.flush(conn)?;
    }
    let after: Map<String, Value> = serde_json::from_str(content).unwrap_or_default();
    let before: Option<Map<String, Value>> = before.and_then(|t| serde_json::from_str(t).ok());
    let now = now_micros();
    for watch in watches {
        if let Some(url) = &watch.topic {
            let Some(topic) = topic(url) else { continue };
            if !(topic.trigger)(before.as_ref(), &after) {
                continue;
            }
        }
        if matches(
            conn,
            registry,
            &written.resource_type,
            &written.id,
            &watch.criteria,
        )? {
            store::add_event(
                conn,
                &watch.id,
                &written.resource_type,
                &written.id,
                written.version_id,
                now,
            )?;
        }
    }
    Ok(())
}

/// Whether `resource_type/id` (as now indexed) matches `criteria`.
fn matches(
    conn: &mut AnyConnection,
    registry: &Registry,
    resource_type: &str,
    id: &str,
    criteria: &str,
) -> Result<bool, FhirError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(criteria).unwrap_or_default();
    let Ok(request) = parse_request(registry, resource_type, &pairs, true) else {
        // criteria the current search parameters cannot read match nothing
        tracing::warn!(fhir.resource_type = %resource_type, "subscription criteria no longer evaluate");
        return Ok(false);
    };
    let mut conditions = request.conditions;
    conditions.push(Condition::Id(vec![id.to_string()]));
    let spec = SearchSpec {
        types: vec![resource_type.to_string()],
        conditions,
        limit: 1,
        ..Default::default()
    };
    Ok(!search(conn, &spec)?.is_empty())
}
