//! The background side of Subscriptions, on every node: activates requested Subscriptions whose
//! endpoint the administrator allows (a topic-based one once its endpoint accepts the handshake),
//! and sends the notifications of the outbox.
//!
//! Each event is claimed with a lease before it is sent (`store::subscriptions::claim`), so two
//! nodes never send the same one; a node that dies while sending leaves it to be taken again when
//! the lease ends (a notification is sent at least once, and twice only in that case). Per
//! Subscription, events go out one at a time in order. A failed attempt is retried with a
//! doubling delay; after the last attempt the Subscription is set to `error` with the reason.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::search_parameters::RegistryHandle;
use super::subscriptions::{BACKPORT, topic};
use super::write_effects::Actor;
use crate::config::SubscriptionSettings;
use crate::error::FhirError;
use crate::fhir::instant::{Micros, format_instant, now_micros};
use crate::store::Store;
use crate::store::resources as rows;
use crate::store::subscriptions::{self as outbox, Event};

/// How long a claimed event is a node's alone: longer than a delivery attempt can take, short
/// enough that the events of a node that died are soon taken over.
const LEASE: Duration = Duration::from_secs(15);
/// How long one delivery attempt may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Events claimed at once.
const CLAIM: i64 = 16;

/// The delivery loop's configuration.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub settings: SubscriptionSettings,
    /// This server's FHIR base (`.../fhir`) for references in notifications.
    pub fhir_base: String,
}

impl Delivery {
    /// Why `endpoint` may not be called, if it may not.
    fn refusal(&self, endpoint: &str) -> Option<String> {
        let Ok(url) = reqwest::Url::parse(endpoint) else {
            return Some("the endpoint is not a URL".into());
        };
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback && self.settings.subscription_allow_loopback {
            return None;
        }
        let with_port = url
            .port_or_known_default()
            .map(|port| format!("{host}:{port}"))
            .unwrap_or_default();
        let listed = self.settings.subscription_hosts.iter().any(|allowed| {
            let allowed = allowed.trim();
            allowed.eq_ignore_ascii_case(host) || allowed.eq_ignore_ascii_case(&with_port)
        });
        (!listed).then(|| {
            format!(
                "the endpoint host '{host}' is not one the server's administrator allows (--subscription-hosts)"
            )
        })
    }
}

/// Runs until the process ends.
pub async fn run(store: Store, registry: Arc<RegistryHandle>, delivery: Delivery) {
    // https endpoints: rustls with the aws-lc-rs provider (already there for tokens); an error
    // only means another part of the process installed it first.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        // a redirect could lead anywhere, past the allow-list
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot create the HTTP client; no notifications are sent");
            return;
        }
    };
    let poll = Duration::from_millis(delivery.settings.subscription_poll_ms.max(10));
    loop {
        if let Err(err) = activate(&store, &registry, &delivery, &client).await {
            tracing::warn!(error = %err, "subscription activation failed");
        }
        match deliver(&store, &registry, &delivery, &client).await {
            Ok(sent) if sent > 0 => continue,
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "subscription delivery failed"),
        }
        tokio::time::sleep(poll).await;
    }
}

/// Moves requested Subscriptions to `active`, or to `error` when their endpoint is not allowed
/// or, for a topic-based one, does not accept the handshake.
async fn activate(
    store: &Store,
    registry: &Arc<RegistryHandle>,
    delivery: &Delivery,
    client: &reqwest::Client,
) -> Result<(), FhirError> {
    let requested = store
        .read(|conn| Ok::<_, FhirError>(outbox::requested(conn)?))
        .await?;
    for id in requested {
        let key = id.clone();
        let current = store
            .read(move |conn| Ok::<_, FhirError>(rows::current(conn, "Subscription", &key)?))
            .await?;
        let Some(current) = current else { continue };
        let Some(Value::Object(mut subscription)) = current
            .content
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
        else {
            continue;
        };
        if subscription.get("status").and_then(Value::as_str) != Some("requested") {
            continue;
        }
        let channel = subscription.get("channel").cloned().unwrap_or_default();
        let endpoint = channel
            .get("endpoint")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let topic = subscription
            .get("criteria")
            .and_then(Value::as_str)
            .and_then(topic);
        // The handshake is sent before the transaction that records the outcome: nothing is
        // held open while the endpoint answers.
        let verdict = match (delivery.refusal(&endpoint), topic) {
            (Some(reason), _) => Err(reason),
            (None, Some(topic)) => {
                let bundle = handshake_bundle(&delivery.fhir_base, &id, topic.url);
                let mut request = client
                    .post(&endpoint)
                    .header("Content-Type", "application/fhir+json")
                    .body(bundle.to_string());
                for (name, value) in channel_headers(&channel) {
                    request = request.header(name, value);
                }
                match request.send().await {
                    Ok(response) if response.status().is_success() => Ok(()),
                    Ok(response) => Err(format!(
                        "the endpoint answered the handshake with {}",
                        response.status().as_u16()
                    )),
                    Err(_) => Err("the endpoint could not be reached for the handshake".into()),
                }
            }
            (None, None) => Ok(()),
        };
        match verdict {
            Ok(()) => {
                subscription.insert("status".into(), json!("active"));
                subscription.shift_remove("error");
            }
            Err(reason) => {
                subscription.insert("status".into(), json!("error"));
                subscription.insert("error".into(), json!(reason));
            }
        }
        let registry = registry.current();
        let result = store
            .write(move |conn| {
                super::resources::update(
                    conn,
                    &registry,
                    &Actor::Server,
                    &id,
                    subscription,
                    Some(current.version_id),
                    "PUT",
                )
            })
            .await;
        match result {
            // changed meanwhile (by its client, or another node activated it first)
            Ok(_) | Err(FhirError::PreconditionFailed(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// `Name: value` lines of `channel.header`.
fn channel_headers(channel: &Value) -> Vec<(String, String)> {
    channel
        .get("header")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|h| h.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect()
}

/// The handshake of a topic-based Subscription: a notification Bundle without events.
fn handshake_bundle(base: &str, subscription: &str, topic: &str) -> Value {
    let status = json!({
        "resourceType": "Parameters",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"profile": [format!("{BACKPORT}/backport-subscription-status-r4")]},
        "parameter": [
            {"name":"subscription","valueReference":{"reference":format!("{base}/Subscription/{subscription}")}},
            {"name":"topic","valueCanonical":topic},
            {"name":"status","valueCode":"requested"},
            {"name":"type","valueCode":"handshake"},
            {"name":"events-since-subscription-start","valueString":"0"}
        ]
    });
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"profile": [format!("{BACKPORT}/backport-subscription-notification-r4")]},
        "type": "history",
        "timestamp": format_instant(now_micros()),
        "entry": [{
            "fullUrl": format!("urn:uuid:{}", status["id"].as_str().unwrap_or_default()),
            "resource": status,
            "request": {"method":"GET","url":format!("{base}/Subscription/{subscription}/$status")},
            "response": {"status":"200"}
        }]
    })
}

/// Sends the due notifications; returns how many were attempted.
async fn deliver(
    store: &Store,
    registry: &Arc<RegistryHandle>,
    delivery: &Delivery,
    client: &reqwest::Client,
) -> Result<usize, FhirError> {
    let now = now_micros();
    let lease = now + LEASE.as_micros() as Micros;
    let events = store
        .write(move |conn| Ok::<_, FhirError>(outbox::claim(conn, now, lease, CLAIM)?))
        .await?;
    let count = events.len();
    // Different subscriptions' endpoints are called at the same time: a slow one does not hold
    // up the others (each subscription has at most one event in a claim).
    let mut sending = tokio::task::JoinSet::new();
    for event in events {
        let (store, registry, delivery, client) = (
            store.clone(),
            registry.clone(),
            delivery.clone(),
            client.clone(),
        );
        sending.spawn(async move {
            let outcome = attempt(&store, &delivery, &client, &event).await;
            record(&store, &registry, &delivery, event, outcome).await
        });
    }
    // Every attempt is recorded before the next claim (dropping the set would cancel them).
    while let Some(done) = sending.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "a notification could not be recorded"),
            Err(err) => tracing::warn!(error = %err, "a notification task failed"),
        }
    }
    Ok(count)
}

/// What came of one attempt.
enum Outcome {
    Delivered,
    /// The Subscription is no longer active: the event is dropped.
    Dropped,
    Failed(String),
}

/// One notification request, built from the Subscription and the version the event is about.
struct Notification {
    method: reqwest::Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

async fn attempt(
    store: &Store,
    delivery: &Delivery,
    client: &reqwest::Client,
    event: &Event,
) -> Outcome {
    let (event_copy, base) = (event.clone(), delivery.fhir_base.clone());
    let built = store
        .read(move |conn| -> Result<Option<Notification>, FhirError> {
            build(conn, &base, &event_copy)
        })
        .await;
    let notification = match built {
        Ok(Some(notification)) => notification,
        Ok(None) => return Outcome::Dropped,
        Err(err) => return Outcome::Failed(format!("the notification could not be built: {err}")),
    };
    if let Some(reason) = delivery.refusal(&notification.url) {
        return Outcome::Failed(reason);
    }
    let mut request = client.request(notification.method, &notification.url);
    for (name, value) in &notification.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(body) = notification.body {
        request = request
            .header("Content-Type", "application/fhir+json")
            .body(body);
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => Outcome::Delivered,
        Ok(response) => Outcome::Failed(format!(
            "the endpoint answered {}",
            response.status().as_u16()
        )),
        Err(err) if err.is_timeout() => {
            Outcome::Failed("the endpoint did not answer in time".into())
        }
        Err(err) if err.is_connect() => Outcome::Failed("the endpoint could not be reached".into()),
        Err(_) => Outcome::Failed("the request to the endpoint failed".into()),
    }
}

fn build(
    conn: &mut crate::store::AnyConnection,
    base: &str,
    event: &Event,
) -> Result<Option<Notification>, FhirError> {
    let Some(Value::Object(subscription)) =
        rows::current(conn, "Subscription", &event.subscription_id)?
            .and_then(|c| c.content)
            .and_then(|c| serde_json::from_str(&c).ok())
    else {
        return Ok(None);
    };
    if subscription.get("status").and_then(Value::as_str) != Some("active") {
        return Ok(None);
    }
    let channel = subscription.get("channel").cloned().unwrap_or_default();
    let endpoint = channel
        .get("endpoint")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let headers = channel_headers(&channel);
    let payload = channel
        .get("payload")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty());
    let criteria = subscription
        .get("criteria")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let version = rows::version(
        conn,
        &event.resource_type,
        &event.resource_id,
        event.version_id,
    )?
    .and_then(|v| v.content);
    if let Some(topic) = topic(criteria) {
        let bundle = notification_bundle(
            base,
            &event.subscription_id,
            topic.url,
            "event-notification",
            event.event_number,
            &[(event.clone(), version)],
            &payload_content(&channel),
        );
        return Ok(Some(Notification {
            method: reqwest::Method::POST,
            url: endpoint,
            headers,
            body: Some(bundle.to_string()),
        }));
    }
    // R4: without a payload, an empty POST to the endpoint; with one, an update of the resource
    // at the endpoint taken as a FHIR base.
    Ok(Some(match (payload, version) {
        (Some(_), Some(resource)) => Notification {
            method: reqwest::Method::PUT,
            url: format!(
                "{}/{}/{}",
                endpoint.trim_end_matches('/'),
                event.resource_type,
                event.resource_id
            ),
            headers,
            body: Some(resource),
        },
        _ => Notification {
            method: reqwest::Method::POST,
            url: endpoint,
            headers,
            body: None,
        },
    }))
}

/// A topic-based notification: a `history` Bundle whose first entry is the SubscriptionStatus
/// (R4: a Parameters, profile backport-subscription-status-r4) of `kind` (event-notification,
/// query-event), then for each event its focus per the payload content (`empty`, `id-only`,
/// `full-resource`; `resource` is the version the event is about).
pub fn notification_bundle(
    base: &str,
    subscription: &str,
    topic: &str,
    kind: &str,
    since_start: i64,
    events: &[(Event, Option<String>)],
    content: &str,
) -> Value {
    let mut parameters = vec![
        json!({"name":"subscription","valueReference":{"reference":format!("{base}/Subscription/{subscription}")}}),
        json!({"name":"topic","valueCanonical":topic}),
        json!({"name":"status","valueCode":"active"}),
        json!({"name":"type","valueCode":kind}),
        json!({"name":"events-since-subscription-start","valueString":since_start.to_string()}),
    ];
    let mut focus_entries = Vec::new();
    for (event, resource) in events {
        let focus = format!("{base}/{}/{}", event.resource_type, event.resource_id);
        let mut notification_event = vec![
            json!({"name":"event-number","valueString":event.event_number.to_string()}),
            json!({"name":"timestamp","valueInstant":format_instant(event.created_at)}),
        ];
        if content == "empty" {
            parameters.push(json!({"name":"notification-event","part":notification_event}));
            continue;
        }
        notification_event.push(json!({"name":"focus","valueReference":{"reference":focus}}));
        parameters.push(json!({"name":"notification-event","part":notification_event}));
        let mut entry = Map::new();
        entry.insert("fullUrl".into(), json!(focus));
        if content == "full-resource"
            && let Some(resource) = resource
                .as_deref()
                .and_then(|r| serde_json::from_str::<Value>(r).ok())
        {
            entry.insert("resource".into(), resource);
        }
        let (method, url, code) = if event.version_id == 1 {
            ("POST", event.resource_type.clone(), "201")
        } else {
            (
                "PUT",
                format!("{}/{}", event.resource_type, event.resource_id),
                "200",
            )
        };
        entry.insert("request".into(), json!({"method":method,"url":url}));
        entry.insert("response".into(), json!({"status":code}));
        focus_entries.push(Value::Object(entry));
    }
    let status = json!({
        "resourceType": "Parameters",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"profile": [format!("{BACKPORT}/backport-subscription-status-r4")]},
        "parameter": parameters
    });
    let mut entries = vec![json!({
        "fullUrl": format!("urn:uuid:{}", status["id"].as_str().unwrap_or_default()),
        "resource": status,
        "request": {"method":"GET","url":format!("{base}/Subscription/{subscription}/$status")},
        "response": {"status":"200"}
    })];
    entries.extend(focus_entries);
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": {"profile": [format!("{BACKPORT}/backport-subscription-notification-r4")]},
        "type": "history",
        "timestamp": format_instant(now_micros()),
        "entry": entries
    })
}

/// The payload content of a topic-based Subscription's channel (default `id-only`).
pub fn payload_content(channel: &Value) -> String {
    channel
        .pointer("/_payload/extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| {
            e.get("url").and_then(Value::as_str)
                == Some(&format!("{BACKPORT}/backport-payload-content") as &str)
        })
        .and_then(|e| e.get("valueCode").and_then(Value::as_str))
        .unwrap_or("id-only")
        .to_string()
}

/// Records an attempt: delivered, dropped, retried later, or given up with the Subscription
/// set to `error`.
async fn record(
    store: &Store,
    registry: &Arc<RegistryHandle>,
    delivery: &Delivery,
    event: Event,
    outcome: Outcome,
) -> Result<(), FhirError> {
    let settings = delivery.settings.clone();
    let registry = registry.current();
    store
        .write(move |conn| {
            let now = now_micros();
            match outcome {
                Outcome::Delivered => {
                    outbox::finish(conn, &event, "delivered", now, None)?;
                }
                Outcome::Dropped => {
                    outbox::finish(conn, &event, "dropped", now, None)?;
                }
                Outcome::Failed(reason)
                    if (event.attempts as u32) < settings.subscription_max_attempts =>
                {
                    let base = settings.subscription_retry_ms.max(1) as i64 * 1000;
                    let delay = base * (1i64 << (event.attempts.clamp(1, 7) - 1));
                    outbox::finish(conn, &event, "pending", now + delay, Some(&reason))?;
                    tracing::info!(subscription = %event.subscription_id, attempts = event.attempts, reason = %reason, "notification will be retried");
                }
                Outcome::Failed(reason) => {
                    if outbox::finish(conn, &event, "failed", now, Some(&reason))? {
                        fail_subscription(conn, &registry, &event.subscription_id, &reason, event.attempts)?;
                    }
                }
            }
            Ok::<_, FhirError>(())
        })
        .await
}

/// Sets a Subscription to `error` with the reason (which ends its pending notifications).
fn fail_subscription(
    conn: &mut crate::store::AnyConnection,
    registry: &crate::search::registry::Registry,
    id: &str,
    reason: &str,
    attempts: i32,
) -> Result<(), FhirError> {
    let Some(current) = rows::current(conn, "Subscription", id)? else {
        return Ok(());
    };
    let Some(Value::Object(mut subscription)) = current
        .content
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
    else {
        return Ok(());
    };
    subscription.insert("status".into(), json!("error"));
    subscription.insert(
        "error".into(),
        json!(format!(
            "Notification not delivered after {attempts} attempts: {reason}"
        )),
    );
    super::resources::update(
        conn,
        registry,
        &Actor::Server,
        id,
        subscription,
        Some(current.version_id),
        "PUT",
    )?;
    tracing::warn!(subscription = %id, "subscription set to error after repeated delivery failures");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(hosts: &[&str], loopback: bool) -> Delivery {
        Delivery {
            settings: SubscriptionSettings {
                subscription_hosts: hosts.iter().map(|h| h.to_string()).collect(),
                subscription_allow_loopback: loopback,
                ..SubscriptionSettings::default()
            },
            fhir_base: "http://pivot.example.org/fhir".into(),
        }
    }

    #[test]
    fn only_listed_hosts_are_called() {
        let none = delivery(&[], false);
        for endpoint in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://[::1]:9/hook",
            "http://10.0.0.5/hook",
            "https://hooks.example.org/x",
            "not a url",
        ] {
            assert!(none.refusal(endpoint).is_some(), "{endpoint}");
        }
        let loopback = delivery(&[], true);
        assert!(loopback.refusal("http://127.0.0.1:8080/hook").is_none());
        assert!(loopback.refusal("http://[::1]:9/hook").is_none());
        assert!(loopback.refusal("http://LOCALHOST/hook").is_none());
        assert!(loopback.refusal("http://10.0.0.5/hook").is_some());
        let listed = delivery(&["hooks.example.org", "cbo.example.net:8443"], false);
        assert!(listed.refusal("https://hooks.example.org/x").is_none());
        assert!(listed.refusal("https://HOOKS.example.org:443/x").is_none());
        assert!(listed.refusal("https://cbo.example.net:8443/x").is_none());
        assert!(
            listed.refusal("https://cbo.example.net/x").is_some(),
            "other port"
        );
        assert!(
            listed
                .refusal("https://hooks.example.org.evil.test/x")
                .is_some()
        );
        assert!(listed.refusal("http://127.0.0.1/x").is_some());
    }

    #[test]
    fn a_topic_notification_carries_the_event_number() {
        let event = Event {
            pk: 1,
            subscription_id: "s1".into(),
            event_number: 7,
            resource_type: "Task".into(),
            resource_id: "t1".into(),
            version_id: 3,
            attempts: 1,
            created_at: 0,
            lease_until: 0,
        };
        let bundle = notification_bundle(
            "http://x/fhir",
            "s1",
            "http://example.org/topic",
            "event-notification",
            7,
            &[(
                event,
                Some(r#"{"resourceType":"Task","id":"t1"}"#.to_string()),
            )],
            "full-resource",
        );
        assert_eq!(bundle["type"], "history");
        let status = &bundle["entry"][0]["resource"];
        assert_eq!(status["parameter"][4]["valueString"], "7");
        assert_eq!(status["parameter"][5]["part"][0]["valueString"], "7");
        assert_eq!(bundle["entry"][1]["fullUrl"], "http://x/fhir/Task/t1");
        assert_eq!(bundle["entry"][1]["resource"]["id"], "t1");
        assert_eq!(bundle["entry"][1]["request"]["method"], "PUT");
    }
}
