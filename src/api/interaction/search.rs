//! search: `GET [base]/[type]?`, `POST [base]/[type]/_search`, system search `GET [base]?`
//! and Patient compartment search `GET [base]/Patient/[id]/[type]?` (search.html, http.html#search).
//! The result is a `searchset` Bundle with `self`, `next` and `previous` links that page by key,
//! so pages stay correct while resources are written.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use crate::api::headers::{negotiate, query_pairs, read_body};
use crate::api::{AppState, known_type, valid_id};
use crate::error::FhirError;
use crate::fhir::instant::{format_instant, now_micros};
use crate::fhir::outcome::{Issue, operation_outcome};
use crate::search::request::{Include, MAX_INCLUDED, SearchRequest, Summary, Total, parse_request, patient_compartment};
use crate::store::search::{Found, SearchSpec, count, included, revincluded, search};

pub async fn search_type(req: HttpRequest, path: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, FhirError> {
    let resource_type = known_type(&path)?.to_string();
    let params = query_pairs(&req)?;
    run(req, state, Some(resource_type), params, None).await
}

/// `POST [type]/_search`: parameters in a form-encoded body and/or the query string.
pub async fn search_type_post(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, FhirError> {
    let resource_type = known_type(&path)?.to_string();
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(FhirError::UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters".into()));
    }
    let mut params = query_pairs(&req)?;
    let body = match read_body(&req, payload, state.max_body_bytes).await {
        Ok(body) => body,
        Err(FhirError::Invalid(_)) => web::Bytes::new(), // an empty body: no parameters
        Err(err) => return Err(err),
    };
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).map_err(|_| FhirError::bad_request("The body is not form-urlencoded"))?;
    params.extend(form);
    run(req, state, Some(resource_type), params, None).await
}

pub async fn search_system(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, FhirError> {
    let params = query_pairs(&req)?;
    run(req, state, None, params, None).await
}

pub async fn search_compartment(req: HttpRequest, path: web::Path<(String, String, String)>, state: web::Data<AppState>) -> Result<HttpResponse, FhirError> {
    let (compartment, id, resource_type) = path.into_inner();
    if compartment != "Patient" {
        return Err(FhirError::NotFound(format!("Compartment search is supported for Patient, not {compartment}")));
    }
    valid_id(&id)?;
    known_type(&resource_type)?;
    let params = query_pairs(&req)?;
    run(req, state, Some(resource_type), params, Some(id)).await
}

fn strict_handling(req: &HttpRequest) -> bool {
    req.headers().get_all("prefer").filter_map(|v| v.to_str().ok()).any(|v| v.replace(' ', "").contains("handling=strict"))
}

async fn run(
    req: HttpRequest,
    state: web::Data<AppState>,
    resource_type: Option<String>,
    params: Vec<(String, String)>,
    compartment_patient: Option<String>,
) -> Result<HttpResponse, FhirError> {
    let format = negotiate(&req)?;
    let strict = strict_handling(&req);
    // A system search reads its parameters as those every type has (Resource's).
    let parse_type = resource_type.clone().unwrap_or_else(|| "Patient".to_string());
    let mut request = parse_request(&state.registry.current(), &parse_type, &params, strict)?;
    if resource_type.is_none() && request.conditions.iter().any(|c| !is_common_condition(c)) && request.types.len() != 1 {
        return Err(FhirError::invalid(Issue::error("not-supported", "A system search takes only parameters every type has (_id, _lastUpdated, _tag, _profile, _security, _source); name one type with _type for others")));
    }
    if resource_type.is_none() && request.types.len() == 1 {
        request = parse_request(&state.registry.current(), &request.types[0].clone(), &params, strict)?;
    }
    let types = match &resource_type {
        Some(t) => vec![t.clone()],
        None => request.types.clone(),
    };
    if let Some(patient) = &compartment_patient {
        let Some(condition) = patient_compartment(&state.registry.current(), &types[0], patient) else {
            return Err(FhirError::NotFound(format!("{} is not in the Patient compartment", types[0])));
        };
        request.conditions.push(condition);
    }
    let spec = SearchSpec {
        types,
        conditions: request.conditions.clone(),
        sort: request.sort.clone(),
        after_pk: request.after_pk,
        before_pk: request.before_pk,
        offset: request.offset,
        limit: request.count + 1,
    };
    let summary_count = request.summary == Some(Summary::Count);
    let want_total = summary_count || request.total == Total::Accurate;
    let includes = request.includes.clone();
    let revincludes = request.revincludes.clone();
    let (mut matches, total, extra, capped) = state
        .store
        .read(move |conn| {
            let total = if want_total { Some(count(conn, &spec)?) } else { None };
            if summary_count {
                return Ok::<_, FhirError>((Vec::new(), total, Vec::new(), false));
            }
            let matches = search(conn, &spec)?;
            let page: Vec<Found> = matches.iter().take(usize::try_from(spec.limit - 1).unwrap_or(0)).cloned().collect();
            let (extra, capped) = collect_includes(conn, &page, &includes, &revincludes)?;
            Ok((matches, total, extra, capped))
        })
        .await?;
    let has_more = matches.len() as i64 > request.count;
    matches.truncate(usize::try_from(request.count).unwrap_or(0));
    let first_page = request.after_pk.is_none() && request.before_pk.is_none() && request.offset == 0;
    let total = total.or_else(|| (request.total == Total::Estimate && first_page && !has_more).then_some(matches.len() as i64));
    let base = state.fhir_base(&req);
    let bundle = bundle(&base, &req, &request, &matches, &extra, total, has_more, capped)?;
    Ok(HttpResponse::build(StatusCode::OK).content_type(format.content_type).body(crate::api::response::body_text(format, &bundle)))
}

/// Conditions a system search can evaluate on any type.
fn is_common_condition(condition: &crate::search::query::Condition) -> bool {
    use crate::search::query::Condition;
    match condition {
        Condition::Id(_) | Condition::LastUpdated(_) => true,
        Condition::Match { param, .. } | Condition::Missing { param, .. } => param.code.starts_with('_'),
        _ => false,
    }
}

/// Follows `_include` and `_revinclude` from the page, `:iterate` up to three levels, adding at
/// most `MAX_INCLUDED` resources; returns whether that limit cut the list.
fn collect_includes(
    conn: &mut crate::store::AnyConnection,
    page: &[Found],
    includes: &[Include],
    revincludes: &[Include],
) -> Result<(Vec<Found>, bool), FhirError> {
    let mut seen: std::collections::HashSet<i64> = page.iter().map(|f| f.pk).collect();
    let mut extra: Vec<Found> = Vec::new();
    let mut frontier: Vec<Found> = page.to_vec();
    let mut capped = false;
    for level in 0..3 {
        let mut next = Vec::new();
        for include in includes.iter().filter(|i| level == 0 || i.iterate) {
            let sources: Vec<i64> = frontier.iter().filter(|f| include.source_type == "*" || f.resource_type == include.source_type).map(|f| f.pk).collect();
            let remaining = MAX_INCLUDED - extra.len() as i64;
            if remaining <= 0 {
                capped = true;
                break;
            }
            let found = included(conn, &sources, include.param.as_deref(), include.target_type.as_deref(), remaining + 1)?;
            if found.len() as i64 > remaining {
                capped = true;
            }
            for f in found {
                if seen.insert(f.pk) && (extra.len() as i64) < MAX_INCLUDED {
                    next.push(f.clone());
                    extra.push(f);
                }
            }
        }
        for include in revincludes.iter().filter(|i| level == 0 || i.iterate) {
            let targets: Vec<(String, String)> = frontier.iter().map(|f| (f.resource_type.clone(), f.id.clone())).collect();
            let remaining = MAX_INCLUDED - extra.len() as i64;
            if remaining <= 0 {
                capped = true;
                break;
            }
            let found = revincluded(conn, &targets, &include.source_type, include.param.as_deref(), remaining + 1)?;
            if found.len() as i64 > remaining {
                capped = true;
            }
            for f in found {
                if seen.insert(f.pk) && (extra.len() as i64) < MAX_INCLUDED {
                    next.push(f.clone());
                    extra.push(f);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    Ok((extra, capped))
}

fn link(base: &str, path: &str, pairs: &[(String, String)]) -> String {
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    if query.is_empty() { format!("{base}{path}") } else { format!("{base}{path}?{query}") }
}

#[allow(clippy::too_many_arguments)]
fn bundle(
    base: &str,
    req: &HttpRequest,
    request: &SearchRequest,
    matches: &[Found],
    extra: &[Found],
    total: Option<i64>,
    has_more: bool,
    capped: bool,
) -> Result<String, FhirError> {
    let path = req.path().strip_prefix("/fhir").unwrap_or(req.path());
    let path = path.strip_suffix("/_search").unwrap_or(path);
    let mut links = vec![json!({ "relation": "self", "url": link(base, path, &request.used) })];
    if request.sort.is_empty() {
        if has_more && let Some(last) = matches.last() {
            let mut pairs = request.used.clone();
            pairs.push(("_cursor".into(), last.pk.to_string()));
            links.push(json!({ "relation": "next", "url": link(base, path, &pairs) }));
        }
        if (request.after_pk.is_some() || request.before_pk.is_some()) && let Some(first) = matches.first() {
            let mut pairs = request.used.clone();
            pairs.push(("_before".into(), first.pk.to_string()));
            links.push(json!({ "relation": "previous", "url": link(base, path, &pairs) }));
        }
    } else {
        if has_more {
            let mut pairs = request.used.clone();
            pairs.push(("_offset".into(), (request.offset + request.count).to_string()));
            links.push(json!({ "relation": "next", "url": link(base, path, &pairs) }));
        }
        if request.offset > 0 {
            let mut pairs = request.used.clone();
            pairs.push(("_offset".into(), (request.offset - request.count).max(0).to_string()));
            links.push(json!({ "relation": "previous", "url": link(base, path, &pairs) }));
        }
    }
    // Entries are spliced as text: a stored resource is already JSON and is only parsed when
    // _summary or _elements reshape it.
    let mut entries: Vec<String> = Vec::with_capacity(matches.len() + extra.len() + 1);
    for (found, mode) in matches.iter().map(|f| (f, "match")).chain(extra.iter().map(|f| (f, "include"))) {
        let Some(content) = &found.content else { continue };
        let resource = if needs_shaping(request) { shape(content, request)?.to_string() } else { content.clone() };
        let full_url = Value::String(format!("{base}/{}/{}", found.resource_type, found.id));
        entries.push(format!(r#"{{"fullUrl":{full_url},"resource":{resource},"search":{{"mode":"{mode}"}}}}"#));
    }
    let mut issues = request.ignored.clone();
    if capped {
        issues.push(Issue::warning("too-costly", format!("_include/_revinclude added only the first {MAX_INCLUDED} resources")));
    }
    if !issues.is_empty() {
        entries.push(json!({ "resource": operation_outcome(&issues), "search": { "mode": "outcome" } }).to_string());
    }
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    bundle.insert("meta".into(), json!({ "lastUpdated": format_instant(now_micros()) }));
    bundle.insert("type".into(), json!("searchset"));
    if let Some(total) = total {
        bundle.insert("total".into(), json!(total));
    }
    bundle.insert("link".into(), Value::Array(links));
    let mut text = Value::Object(bundle).to_string();
    if !entries.is_empty() {
        text.pop(); // the closing brace
        text.push_str(",\"entry\":[");
        text.push_str(&entries.join(","));
        text.push_str("]}");
    }
    Ok(text)
}

fn needs_shaping(request: &SearchRequest) -> bool {
    matches!(request.summary, Some(Summary::True | Summary::Text | Summary::Data)) || !request.elements.is_empty()
}

/// The resource as the request wants it: whole, summarized (`_summary`) or reduced to
/// `_elements`, marked SUBSETTED when anything was left out.
fn shape(content: &str, request: &SearchRequest) -> Result<Value, FhirError> {
    let mut resource: Value = serde_json::from_str(content).map_err(|err| FhirError::Internal(err.into()))?;
    let keep: Option<Box<dyn Fn(&str, &str) -> bool>> = match (request.summary, request.elements.is_empty()) {
        (Some(Summary::True), _) => Some(Box::new(|ty: &str, key: &str| crate::fhir::structure::is_summary_member(ty, key))),
        (Some(Summary::Text), _) => Some(Box::new(|_: &str, key: &str| matches!(key, "text" | "id" | "meta"))),
        (Some(Summary::Data), _) => Some(Box::new(|_: &str, key: &str| key != "text")),
        (_, false) => {
            let elements = request.elements.clone();
            Some(Box::new(move |_: &str, key: &str| {
                let name = key.strip_prefix('_').unwrap_or(key);
                matches!(name, "id" | "meta") || elements.iter().any(|e| e == name)
            }))
        }
        _ => None,
    };
    if let (Some(keep), Some(map)) = (keep, resource.as_object_mut()) {
        let resource_type = map.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_string();
        let before = map.len();
        map.retain(|key, _| key == "resourceType" || keep(&resource_type, key));
        if map.len() < before {
            let meta = map.entry("meta").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                let tags = meta.entry("tag").or_insert_with(|| json!([]));
                if let Some(tags) = tags.as_array_mut() {
                    tags.push(json!({ "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED", "display": "Resource encoded in summary mode" }));
                }
            }
        }
    }
    Ok(resource)
}
