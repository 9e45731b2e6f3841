//! `$events` (`GET [base]/Subscription/[id]/$events`, subscriptions backport
//! OperationDefinition backport-subscription-events): the notifications a topic-based
//! Subscription has generated, numbered `eventsSinceNumber` to `eventsUntilNumber` (default: the
//! last 100), as a `history` Bundle whose SubscriptionStatus is of type `query-event`. A
//! subscriber that missed notifications (its endpoint was down past the retries) recovers them
//! here. Administrators only, as for registering Subscriptions.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use crate::api::headers::{negotiate, query_pairs};
use crate::api::{AppState, response, valid_id};
use crate::auth::Access;
use crate::auth::scopes::Permission;
use crate::error::FhirError;
use crate::fhir::outcome::Issue;
use crate::service::notifications::{notification_bundle, payload_content};
use crate::service::subscriptions::topic;
use crate::service::write_effects::Actor;
use crate::store::resources as rows;
use crate::store::subscriptions as outbox;

/// Most events in one answer.
const MOST: i64 = 100;

pub async fn events(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let id = path.into_inner();
    valid_id(&id)?;
    access.require("Subscription", Permission::Read)?;
    if !Actor::of(&access).is_administrator() {
        return Err(FhirError::Forbidden(
            "Subscription events are read by the program's administrators".into(),
        ));
    }
    let format = negotiate(&req)?;
    let mut since = None;
    let mut until = None;
    let mut content = None;
    for (name, value) in query_pairs(&req)? {
        let number = || {
            value
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    FhirError::invalid(
                        Issue::error("value", format!("{name} is an event number"))
                            .at(name.clone()),
                    )
                })
        };
        match name.as_str() {
            "eventsSinceNumber" => since = Some(number()?),
            "eventsUntilNumber" => until = Some(number()?),
            "content" if matches!(value.as_str(), "empty" | "id-only" | "full-resource") => {
                content = Some(value.clone())
            }
            "_format" | "_pretty" => {}
            _ => {
                return Err(FhirError::invalid(
                    Issue::error(
                        "not-supported",
                        format!("$events takes no parameter '{name}'"),
                    )
                    .at(name.clone()),
                ));
            }
        }
    }
    let base = state.fhir_base(&req);
    let bundle = state
        .store
        .read(move |conn| {
            let Some(Value::Object(subscription)) = rows::current(conn, "Subscription", &id)?
                .and_then(|c| c.content)
                .and_then(|c| serde_json::from_str(&c).ok())
            else {
                return Err(FhirError::NotFound(format!(
                    "Subscription/{id} is not known"
                )));
            };
            let Some(topic) = subscription
                .get("criteria")
                .and_then(Value::as_str)
                .and_then(topic)
            else {
                return Err(FhirError::Unprocessable(vec![Issue::error(
                    "not-supported",
                    "$events is for topic-based Subscriptions",
                )]));
            };
            let channel = subscription.get("channel").cloned().unwrap_or_default();
            let content = content.unwrap_or_else(|| payload_content(&channel));
            let count = outbox::event_count(conn, &id)?;
            let until = until.unwrap_or(count).min(count);
            let since = since.unwrap_or((until - MOST + 1).max(1));
            let mut events = Vec::new();
            for event in outbox::events_between(conn, &id, since, until, MOST)? {
                let version = if content == "full-resource" {
                    rows::version(
                        conn,
                        &event.resource_type,
                        &event.resource_id,
                        event.version_id,
                    )?
                    .and_then(|v| v.content)
                } else {
                    None
                };
                events.push((event, version));
            }
            Ok(notification_bundle(
                &base,
                &id,
                topic.url,
                "query-event",
                count,
                &events,
                &content,
            ))
        })
        .await?;
    Ok(response::json(StatusCode::OK, format, &bundle))
}
