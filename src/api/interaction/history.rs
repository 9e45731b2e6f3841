//! history at instance, type and system level (http.html#history): `history` Bundles, newest
//! first, with `_count`, `_since` and `_at`, paged by a cursor so pages stay correct while
//! resources are written.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::api::headers::{negotiate, query_pairs};
use crate::api::{AppState, known_type, response, valid_id};
use crate::auth::Access;
use crate::auth::scopes::{Context, Permission};
use crate::error::FhirError;
use crate::fhir::etag;
use crate::fhir::instant::{format_instant, now_micros, parse_fhir_range};
use crate::fhir::outcome::Issue;
use crate::service::search::link;
use crate::store::resources::{self as rows, HistoryCursor, HistoryQuery, VersionRow};

pub const DEFAULT_COUNT: i64 = 50;
pub const MAX_COUNT: i64 = 1000;

pub async fn system_history(
    req: HttpRequest,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    if !access.unrestricted
        && !access.scopes.iter().any(|s| {
            s.resource_type.is_none() && s.context != Context::Patient && s.grants(Permission::Read)
        })
    {
        return Err(FhirError::Forbidden(
            "System history needs a user/*.read or system/*.read scope".into(),
        ));
    }
    history(req, state, None, None).await
}

pub async fn type_history(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let resource_type = known_type(&path)?.to_string();
    if !access
        .require(&resource_type, Permission::Read)?
        .is_unlimited()
    {
        return Err(FhirError::Forbidden(format!(
            "The token's scopes limit {resource_type}; read the history of single resources instead"
        )));
    }
    history(req, state, Some(resource_type), None).await
}

pub async fn instance_history(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let (resource_type, id) = path.into_inner();
    known_type(&resource_type)?;
    valid_id(&id)?;
    let grant = access.require(&resource_type, Permission::Read)?;
    if !grant.is_unlimited() {
        let (registry, ty, target) = (state.registry.current(), resource_type.clone(), id.clone());
        let visible = state
            .store
            .read(move |conn| {
                crate::service::access::visible(conn, &registry, &ty, &target, &grant)
            })
            .await?;
        if !visible {
            return Err(FhirError::NotFound(format!(
                "{resource_type}/{id} is not known"
            )));
        }
    }
    history(req, state, Some(resource_type), Some(id)).await
}

async fn history(
    req: HttpRequest,
    state: web::Data<AppState>,
    resource_type: Option<String>,
    id: Option<String>,
) -> Result<HttpResponse, FhirError> {
    let format = negotiate(&req)?;
    let pairs = query_pairs(&req)?;
    let mut query = HistoryQuery {
        resource_type: resource_type.clone(),
        id: id.clone(),
        limit: DEFAULT_COUNT,
        ..Default::default()
    };
    for (name, value) in &pairs {
        match name.as_str() {
            "_count" => {
                let count: i64 = value.parse().ok().filter(|c| *c >= 0).ok_or_else(|| {
                    FhirError::invalid(
                        Issue::error("value", "_count must be a whole number of 0 or more")
                            .at("_count"),
                    )
                })?;
                query.limit = count.min(MAX_COUNT);
            }
            "_since" => {
                let (start, _) = parse_fhir_range(value).ok_or_else(|| {
                    FhirError::invalid(
                        Issue::error(
                            "value",
                            "_since must be a FHIR instant such as 2026-01-31T12:00:00Z",
                        )
                        .at("_since"),
                    )
                })?;
                query.since = Some(start);
            }
            "_at" => {
                query.at = Some(parse_fhir_range(value).ok_or_else(|| {
                    FhirError::invalid(
                        Issue::error("value", "_at must be a FHIR date or dateTime").at("_at"),
                    )
                })?);
            }
            "_page" => {
                query.after = Some(parse_cursor(value).ok_or_else(|| {
                    FhirError::invalid(
                        Issue::error("value", "_page is not a page token this server issued")
                            .at("_page"),
                    )
                })?);
            }
            _ => {}
        }
    }
    let page_size = query.limit;
    let mut fetch = query.clone();
    fetch.limit = page_size + 1;
    let (rows, total) = state
        .store
        .read(move |conn| {
            let mut rows = rows::history(conn, &fetch)?;
            let total = match (
                &fetch.resource_type,
                &fetch.id,
                fetch.since,
                fetch.at,
                &fetch.after,
            ) {
                (Some(ty), Some(id), None, None, None) => Some(rows::version_count(conn, ty, id)?),
                _ => None,
            };
            rows.truncate(usize::try_from(fetch.limit).unwrap_or(usize::MAX));
            Ok::<_, FhirError>((rows, total))
        })
        .await?;
    if let (Some(ty), Some(id), Some(0)) = (&resource_type, &id, total) {
        return Err(FhirError::NotFound(format!("{ty}/{id} is not known")));
    }
    let has_next = rows.len() as i64 > page_size;
    let rows = &rows[..rows.len().min(usize::try_from(page_size).unwrap_or(0))];
    let base = state.fhir_base(&req);
    let path = req
        .path()
        .strip_prefix("/fhir")
        .unwrap_or(req.path())
        .to_string();
    let kept: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "_page")
        .cloned()
        .collect();
    let self_url = link(&base, &path, &pairs);
    let mut links = vec![json!({ "relation": "self", "url": self_url })];
    if has_next && let Some(last) = rows.last() {
        let mut next = kept.clone();
        next.push(("_page".into(), format_cursor(&HistoryCursor::of(last))));
        links.push(json!({ "relation": "next", "url": link(&base, &path, &next) }));
    }
    let entries: Vec<Value> = rows.iter().map(|row| entry(&base, row)).collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "meta": { "lastUpdated": format_instant(now_micros()) },
        "type": "history",
    });
    if let (Some(total), Some(map)) = (total, bundle.as_object_mut()) {
        map.insert("total".into(), json!(total));
    }
    if let Some(map) = bundle.as_object_mut() {
        map.insert("link".into(), Value::Array(links));
        map.insert("entry".into(), Value::Array(entries));
    }
    Ok(response::json(StatusCode::OK, format, &bundle))
}

fn entry(base: &str, row: &VersionRow) -> Value {
    let url = format!("{}/{}", row.resource_type, row.id);
    let (request_url, status) = match (row.method.as_str(), row.version_id) {
        ("POST", _) => (row.resource_type.clone(), "201 Created"),
        ("DELETE", _) => (url.clone(), "204 No Content"),
        (_, 1) => (url.clone(), "201 Created"),
        _ => (url.clone(), "200 OK"),
    };
    let mut entry = json!({ "fullUrl": format!("{base}/{url}") });
    if let (Some(content), Some(map)) = (&row.content, entry.as_object_mut())
        && let Ok(resource) = serde_json::from_str::<Value>(content)
    {
        map.insert("resource".into(), resource);
    }
    if let Some(map) = entry.as_object_mut() {
        map.insert(
            "request".into(),
            json!({ "method": row.method, "url": request_url }),
        );
        map.insert(
            "response".into(),
            json!({ "status": status, "etag": etag(row.version_id), "lastModified": format_instant(row.last_updated) }),
        );
    }
    entry
}

/// Page tokens: `lastUpdated_version_type_id` (ids never contain `_`).
fn format_cursor(cursor: &HistoryCursor) -> String {
    format!(
        "{}_{}_{}_{}",
        cursor.last_updated, cursor.version_id, cursor.resource_type, cursor.id
    )
}

fn parse_cursor(token: &str) -> Option<HistoryCursor> {
    let mut parts = token.splitn(4, '_');
    let last_updated = parts.next()?.parse().ok()?;
    let version_id = parts.next()?.parse().ok()?;
    let resource_type = parts.next()?.to_string();
    let id = parts.next()?.to_string();
    (crate::fhir::is_resource_type(&resource_type) && crate::fhir::is_valid_id(&id)).then_some(
        HistoryCursor {
            last_updated,
            resource_type,
            id,
            version_id,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let cursor = HistoryCursor {
            last_updated: 1_700_000_000_000_001,
            resource_type: "Patient".into(),
            id: "a.b-c".into(),
            version_id: 3,
        };
        assert_eq!(parse_cursor(&format_cursor(&cursor)), Some(cursor));
        assert_eq!(parse_cursor("1_2_Nope_x"), None);
        assert_eq!(parse_cursor("x"), None);
    }
}
