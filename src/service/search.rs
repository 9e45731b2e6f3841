//! Search execution without HTTP: parses the parameters, runs the query and its includes in
//! one database session, and renders the `searchset` Bundle. Used by the search interactions
//! and by GET entries of batch and transaction Bundles.

use serde_json::{Map, Value, json};

use super::access::{grant_conditions, visible};
use crate::auth::Access;
use crate::auth::scopes::{Context, Permission};
use crate::error::FhirError;
use crate::fhir::instant::{format_instant, now_micros};
use crate::fhir::outcome::{Issue, operation_outcome};
use crate::search::registry::Registry;
use crate::search::request::{
    Include, MAX_INCLUDED, SearchRequest, Summary, Total, parse_request, patient_compartment,
};
use crate::store::AnyConnection;
use crate::store::search::{Found, SearchSpec, count, included, revincluded, search};

/// A search to run.
#[derive(Debug, Clone)]
pub struct SearchInput {
    /// The type searched (`None`: a system search).
    pub resource_type: Option<String>,
    pub params: Vec<(String, String)>,
    /// Patient compartment search: the patient's id.
    pub compartment_patient: Option<String>,
    /// `Prefer: handling=strict`.
    pub strict: bool,
    /// The FHIR base URL for `fullUrl` and links.
    pub base: String,
    /// The request path below the base, for links (e.g. `/Patient`).
    pub path: String,
    /// What the caller may see.
    pub access: Access,
}

/// Runs `input` and returns the searchset Bundle as JSON text.
pub fn execute(
    conn: &mut AnyConnection,
    registry: &Registry,
    input: &SearchInput,
) -> Result<String, FhirError> {
    let resource_type = input.resource_type.clone();
    let params = &input.params;
    let strict = input.strict;
    // A system search reads its parameters as those every type has (Resource's).
    let parse_type = resource_type
        .clone()
        .unwrap_or_else(|| "Patient".to_string());
    let mut request = parse_request(registry, &parse_type, params, strict)?;
    if resource_type.is_none()
        && request.conditions.iter().any(|c| !is_common_condition(c))
        && request.types.len() != 1
    {
        return Err(FhirError::invalid(Issue::error(
            "not-supported",
            "A system search takes only parameters every type has (_id, _lastUpdated, _tag, _profile, _security, _source); name one type with _type for others",
        )));
    }
    if resource_type.is_none() && request.types.len() == 1 {
        request = parse_request(registry, &request.types[0].clone(), params, strict)?;
    }
    let types = match &resource_type {
        Some(t) => vec![t.clone()],
        None => request.types.clone(),
    };
    // Scope limits become conditions of the query itself.
    if types.is_empty() {
        if !input.access.unrestricted
            && !input.access.scopes.iter().any(|s| {
                s.resource_type.is_none()
                    && s.grants(Permission::Search)
                    && s.context != Context::Patient
            })
        {
            return Err(FhirError::Forbidden("A search across all types needs a user/*.rs or system/*.rs scope; name the types with _type".into()));
        }
    } else {
        let grants = types
            .iter()
            .map(|t| input.access.require(t, Permission::Search))
            .collect::<Result<Vec<_>, _>>()?;
        if types.len() > 1 && grants.iter().any(|g| !g.is_unlimited()) {
            return Err(FhirError::Forbidden(
                "The token's scopes limit these types differently; search them one at a time"
                    .into(),
            ));
        }
        if let Some(grant) = grants.first() {
            request
                .conditions
                .extend(grant_conditions(conn, registry, &types[0], grant)?);
        }
    }
    if let Some(patient) = &input.compartment_patient {
        let Some(condition) = patient_compartment(registry, &types[0], patient) else {
            return Err(FhirError::NotFound(format!(
                "{} is not in the Patient compartment",
                types[0]
            )));
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
    // `_count=0` asks how many, not which (clients such as fhirpy count this way)
    let want_total = summary_count || request.total == Total::Accurate || request.count == 0;
    let total = if want_total {
        Some(count(conn, &spec)?)
    } else {
        None
    };
    let (mut matches, extra, capped) = if summary_count {
        (Vec::new(), Vec::new(), false)
    } else {
        let matches = search(conn, &spec)?;
        let page: Vec<Found> = matches
            .iter()
            .take(usize::try_from(request.count).unwrap_or(0))
            .cloned()
            .collect();
        let (extra, capped) =
            collect_includes(conn, &page, &request.includes, &request.revincludes)?;
        let extra = visible_only(conn, registry, &input.access, extra)?;
        (matches, extra, capped)
    };
    let has_more = matches.len() as i64 > request.count;
    matches.truncate(usize::try_from(request.count).unwrap_or(0));
    let first_page =
        request.after_pk.is_none() && request.before_pk.is_none() && request.offset == 0;
    let mut extra = extra;
    for found in matches.iter_mut().chain(extra.iter_mut()) {
        // attribution Groups show their members from the attribution table
        if found.resource_type == "Group"
            && let Some(content) = &found.content
        {
            found.content = Some(super::attribution::complete_group(conn, content)?);
        }
    }
    let total = total.or_else(|| {
        (request.total == Total::Estimate && first_page && !has_more)
            .then_some(matches.len() as i64)
    });
    bundle(
        &input.base,
        &input.path,
        &request,
        &matches,
        &extra,
        total,
        has_more,
        capped,
    )
}

/// Keeps the included resources the caller may read.
fn visible_only(
    conn: &mut AnyConnection,
    registry: &Registry,
    access: &Access,
    found: Vec<Found>,
) -> Result<Vec<Found>, FhirError> {
    if access.unrestricted {
        return Ok(found);
    }
    let mut kept = Vec::with_capacity(found.len());
    for resource in found {
        let Ok(grant) = access.require(&resource.resource_type, Permission::Read) else {
            continue;
        };
        if visible(
            conn,
            registry,
            &resource.resource_type,
            &resource.id,
            &grant,
        )? {
            kept.push(resource);
        }
    }
    Ok(kept)
}

/// Conditions a system search can evaluate on any type.
fn is_common_condition(condition: &crate::search::query::Condition) -> bool {
    use crate::search::query::Condition;
    match condition {
        Condition::Id(_) | Condition::LastUpdated(_) => true,
        Condition::Match { param, .. } | Condition::Missing { param, .. } => {
            param.code.starts_with('_')
        }
        _ => false,
    }
}

/// How many rounds `:iterate` follows references (a cycle ends sooner: nothing new is found).
const MAX_ITERATE_LEVELS: usize = 32;

/// Follows `_include` and `_revinclude` from the page, `:iterate` until nothing new is found,
/// adding at most `MAX_INCLUDED` resources in at most `MAX_ITERATE_LEVELS` rounds; returns
/// whether a limit cut the list.
fn collect_includes(
    conn: &mut AnyConnection,
    page: &[Found],
    includes: &[Include],
    revincludes: &[Include],
) -> Result<(Vec<Found>, bool), FhirError> {
    let mut seen: std::collections::HashSet<i64> = page.iter().map(|f| f.pk).collect();
    let mut extra: Vec<Found> = Vec::new();
    let mut frontier: Vec<Found> = page.to_vec();
    let mut capped = false;
    for level in 0..MAX_ITERATE_LEVELS {
        let mut next = Vec::new();
        for include in includes.iter().filter(|i| level == 0 || i.iterate) {
            let sources: Vec<i64> = frontier
                .iter()
                .filter(|f| include.source_type == "*" || f.resource_type == include.source_type)
                .map(|f| f.pk)
                .collect();
            let remaining = MAX_INCLUDED - extra.len() as i64;
            if remaining <= 0 {
                capped = true;
                break;
            }
            let found = included(
                conn,
                &sources,
                include.param.as_deref(),
                include.target_type.as_deref(),
                remaining + 1,
            )?;
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
            let targets: Vec<(String, String)> = frontier
                .iter()
                .map(|f| (f.resource_type.clone(), f.id.clone()))
                .collect();
            let remaining = MAX_INCLUDED - extra.len() as i64;
            if remaining <= 0 {
                capped = true;
                break;
            }
            let found = revincluded(
                conn,
                &targets,
                &include.source_type,
                include.param.as_deref(),
                remaining + 1,
            )?;
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
            return Ok((extra, capped));
        }
        frontier = next;
    }
    let more_to_follow = includes.iter().chain(revincludes).any(|i| i.iterate);
    Ok((extra, capped || more_to_follow))
}

/// An absolute link to `path` below `base` with the query `pairs`.
pub fn link(base: &str, path: &str, pairs: &[(String, String)]) -> String {
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{query}")
    }
}

#[allow(clippy::too_many_arguments)]
fn bundle(
    base: &str,
    path: &str,
    request: &SearchRequest,
    matches: &[Found],
    extra: &[Found],
    total: Option<i64>,
    has_more: bool,
    capped: bool,
) -> Result<String, FhirError> {
    let mut links = vec![json!({ "relation": "self", "url": link(base, path, &request.used) })];
    if request.sort.is_empty() {
        if has_more && let Some(last) = matches.last() {
            let mut pairs = request.used.clone();
            pairs.push(("_cursor".into(), last.pk.to_string()));
            links.push(json!({ "relation": "next", "url": link(base, path, &pairs) }));
        }
        if (request.after_pk.is_some() || request.before_pk.is_some())
            && let Some(first) = matches.first()
        {
            let mut pairs = request.used.clone();
            pairs.push(("_before".into(), first.pk.to_string()));
            links.push(json!({ "relation": "previous", "url": link(base, path, &pairs) }));
        }
    } else {
        if has_more {
            let mut pairs = request.used.clone();
            pairs.push((
                "_offset".into(),
                (request.offset + request.count).to_string(),
            ));
            links.push(json!({ "relation": "next", "url": link(base, path, &pairs) }));
        }
        if request.offset > 0 {
            let mut pairs = request.used.clone();
            pairs.push((
                "_offset".into(),
                (request.offset - request.count).max(0).to_string(),
            ));
            links.push(json!({ "relation": "previous", "url": link(base, path, &pairs) }));
        }
    }
    // Entries are spliced as text: a stored resource is already JSON and is only parsed when
    // _summary or _elements reshape it.
    let mut entries: Vec<String> = Vec::with_capacity(matches.len() + extra.len() + 1);
    for (found, mode) in matches
        .iter()
        .map(|f| (f, "match"))
        .chain(extra.iter().map(|f| (f, "include")))
    {
        let Some(content) = &found.content else {
            continue;
        };
        let resource = if needs_shaping(request) {
            shape(content, request)?.to_string()
        } else {
            content.clone()
        };
        let full_url = Value::String(format!("{base}/{}/{}", found.resource_type, found.id));
        entries.push(format!(
            r#"{{"fullUrl":{full_url},"resource":{resource},"search":{{"mode":"{mode}"}}}}"#
        ));
    }
    let mut issues = request.ignored.clone();
    if capped {
        issues.push(Issue::warning(
            "too-costly",
            format!(
                "_include/_revinclude stopped at a limit ({MAX_INCLUDED} resources, \
                 {MAX_ITERATE_LEVELS} rounds of :iterate): the included resources are incomplete"
            ),
        ));
    }
    if !issues.is_empty() {
        entries.push(
            json!({ "resource": operation_outcome(&issues), "search": { "mode": "outcome" } })
                .to_string(),
        );
    }
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    bundle.insert(
        "meta".into(),
        json!({ "lastUpdated": format_instant(now_micros()) }),
    );
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
    matches!(
        request.summary,
        Some(Summary::True | Summary::Text | Summary::Data)
    ) || !request.elements.is_empty()
}

/// The resource as the request wants it: whole, summarized (`_summary`) or reduced to
/// `_elements`, marked SUBSETTED when anything was left out.
fn shape(content: &str, request: &SearchRequest) -> Result<Value, FhirError> {
    let mut resource: Value =
        serde_json::from_str(content).map_err(|err| FhirError::Internal(err.into()))?;
    // which members of an element of a type to keep: (type, member) -> keep?
    type Keep = Box<dyn Fn(&str, &str) -> bool>;
    let keep: Option<Keep> = match (request.summary, request.elements.is_empty()) {
        (Some(Summary::True), _) => Some(Box::new(|ty: &str, key: &str| {
            crate::fhir::structure::is_summary_member(ty, key)
        })),
        (Some(Summary::Text), _) => Some(Box::new(|_: &str, key: &str| {
            matches!(key, "text" | "id" | "meta")
        })),
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
        let resource_type = map
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
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
