//! `Patient/[id]/$everything` without HTTP (patient-operation-everything.html): the patient,
//! every resource of its compartment and the resources those refer to, as a `searchset`
//! Bundle paged by (type, key). Each type is searched with the caller's scope limits as
//! conditions of the query, so what the token may not see is never read; types it may not
//! search are left out.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::access::{grant_conditions, visible};
use crate::auth::Access;
use crate::auth::scopes::Permission;
use crate::error::FhirError;
use crate::fhir::instant::{format_instant, now_micros};
use crate::fhir::outcome::{Issue, operation_outcome};
use crate::search::query::parse_condition;
use crate::search::registry::Registry;
use crate::search::request::{
    DEFAULT_COUNT, MAX_COUNT, MAX_INCLUDED, patient_compartment, patient_compartment_types,
};
use crate::store::AnyConnection;
use crate::store::search::{Found, SearchSpec, included, search};

/// What `$everything` was asked.
#[derive(Debug, Clone)]
pub struct EverythingInput {
    pub patient: String,
    /// `_since`: only resources changed after this instant (as given).
    pub since: Option<String>,
    /// `_type`: only these types (empty: all).
    pub types: Vec<String>,
    pub count: i64,
    /// Paging: continue at this type, after this key.
    pub cursor: Option<(String, i64)>,
    /// `start` / `end` were given (not applied: reported in the Bundle).
    pub care_dates_ignored: bool,
    /// The FHIR base URL for `fullUrl` and links.
    pub base: String,
    pub access: Access,
}

impl EverythingInput {
    /// Reads the operation's parameters: `_since`, `_type` (comma separated, repeatable),
    /// `_count`, the paging `_cursor` (`Type:key`), `start` and `end`.
    pub fn parse(
        patient: String,
        params: &[(String, String)],
        base: String,
        access: Access,
    ) -> Result<Self, FhirError> {
        let mut input = EverythingInput {
            patient,
            since: None,
            types: Vec::new(),
            count: DEFAULT_COUNT,
            cursor: None,
            care_dates_ignored: false,
            base,
            access,
        };
        for (name, value) in params {
            match name.as_str() {
                "_since" => {
                    if crate::fhir::instant::parse_fhir_range(value).is_none() || value.len() < 20 {
                        return Err(FhirError::invalid(
                            Issue::error(
                                "value",
                                "_since must be an instant such as 2026-11-01T00:00:00Z",
                            )
                            .at("_since"),
                        ));
                    }
                    input.since = Some(value.clone());
                }
                "_type" => {
                    for name in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                        if !crate::fhir::is_resource_type(name) {
                            return Err(FhirError::invalid(
                                Issue::error("value", format!("'{name}' is not a resource type"))
                                    .at("_type"),
                            ));
                        }
                        input.types.push(name.to_string());
                    }
                }
                "_count" => {
                    let count = value.trim().parse::<i64>().ok().filter(|n| *n > 0);
                    let Some(count) = count else {
                        return Err(FhirError::invalid(
                            Issue::error("value", "_count must be a whole number of 1 or more")
                                .at("_count"),
                        ));
                    };
                    input.count = count.min(MAX_COUNT);
                }
                "_cursor" => {
                    let cursor = value
                        .split_once(':')
                        .and_then(|(t, pk)| Some((t.to_string(), pk.parse::<i64>().ok()?)))
                        .filter(|(t, _)| crate::fhir::is_resource_type(t));
                    let Some(cursor) = cursor else {
                        return Err(FhirError::invalid(
                            Issue::error(
                                "value",
                                "_cursor is not a paging position of this server",
                            )
                            .at("_cursor"),
                        ));
                    };
                    input.cursor = Some(cursor);
                }
                "start" | "end" => input.care_dates_ignored = true,
                _ => {}
            }
        }
        Ok(input)
    }

    /// The query parameters that reproduce this request (for links), without paging.
    fn used(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        if let Some(since) = &self.since {
            pairs.push(("_since".to_string(), since.clone()));
        }
        if !self.types.is_empty() {
            pairs.push(("_type".to_string(), self.types.join(",")));
        }
        pairs.push(("_count".to_string(), self.count.to_string()));
        pairs
    }
}

/// Runs `$everything` and returns the `searchset` Bundle as JSON text. 404 when the patient
/// does not exist or is outside what the token may read.
pub fn everything(
    conn: &mut AnyConnection,
    registry: &Registry,
    input: &EverythingInput,
) -> Result<String, FhirError> {
    let grant = input.access.require("Patient", Permission::Read)?;
    let mut conditions = vec![crate::search::query::Condition::Id(vec![
        input.patient.clone(),
    ])];
    conditions.extend(grant_conditions(conn, registry, "Patient", &grant)?);
    let patient = SearchSpec {
        types: vec!["Patient".to_string()],
        conditions,
        limit: 1,
        ..Default::default()
    };
    if search(conn, &patient)?.is_empty() {
        return Err(FhirError::NotFound(format!(
            "Patient/{} is not known",
            input.patient
        )));
    }
    let compartment = patient_compartment_types();
    // the types to walk, in a fixed order: the patient first
    let types: Vec<String> = compartment
        .iter()
        .filter(|t| input.types.is_empty() || input.types.contains(t))
        .filter(|t| input.access.require(t, Permission::Search).is_ok())
        .cloned()
        .collect();
    let start = match &input.cursor {
        Some((cursor_type, _)) => types
            .iter()
            .position(|t| t == cursor_type)
            .unwrap_or(types.len()),
        None => 0,
    };
    let limit = input.count;
    let mut page: Vec<Found> = Vec::new();
    let mut has_more = false;
    for (index, resource_type) in types.iter().enumerate().skip(start) {
        let after_pk = match &input.cursor {
            Some((cursor_type, pk)) if cursor_type == resource_type => Some(*pk),
            _ => None,
        };
        let room = limit - page.len() as i64;
        let spec = type_spec(
            conn,
            registry,
            input,
            resource_type,
            after_pk,
            room.max(0) + 1,
        )?;
        let found = search(conn, &spec)?;
        let taken = usize::try_from(room.max(0)).unwrap_or(0);
        if found.len() > taken {
            has_more = true;
        }
        page.extend(found.into_iter().take(taken));
        if page.len() as i64 >= limit {
            // is there anything in the types still to come?
            if !has_more {
                for later in types.iter().skip(index + 1) {
                    let probe = type_spec(conn, registry, input, later, None, 1)?;
                    if !search(conn, &probe)?.is_empty() {
                        has_more = true;
                        break;
                    }
                }
            }
            break;
        }
    }
    let extra = referenced(conn, registry, input, &page, &compartment)?;
    render(input, &page, &extra, has_more)
}

/// The search for `resource_type`'s part of the compartment, with the scope limits.
fn type_spec(
    conn: &mut AnyConnection,
    registry: &Registry,
    input: &EverythingInput,
    resource_type: &str,
    after_pk: Option<i64>,
    limit: i64,
) -> Result<SearchSpec, FhirError> {
    let mut conditions = Vec::new();
    conditions.push(
        patient_compartment(registry, resource_type, &input.patient)
            .unwrap_or(crate::search::query::Condition::AnyOf(Vec::new())),
    );
    if let Some(since) = &input.since {
        conditions.push(parse_condition(
            registry,
            resource_type,
            "_lastUpdated",
            &format!("gt{since}"),
            0,
        )?);
    }
    let grant = input.access.require(resource_type, Permission::Search)?;
    conditions.extend(grant_conditions(conn, registry, resource_type, &grant)?);
    Ok(SearchSpec {
        types: vec![resource_type.to_string()],
        conditions,
        after_pk,
        limit,
        ..Default::default()
    })
}

/// The resources the page refers to that are outside the Patient compartment (practitioners,
/// organizations, medications, locations...), those the caller may read and `_type` allows.
fn referenced(
    conn: &mut AnyConnection,
    registry: &Registry,
    input: &EverythingInput,
    page: &[Found],
    compartment: &[String],
) -> Result<Vec<Found>, FhirError> {
    let pks: Vec<i64> = page.iter().map(|f| f.pk).collect();
    let mut seen: HashSet<i64> = pks.iter().copied().collect();
    let mut kept = Vec::new();
    for found in included(conn, &pks, None, None, MAX_INCLUDED)? {
        if compartment.contains(&found.resource_type)
            || (!input.types.is_empty() && !input.types.contains(&found.resource_type))
            || !seen.insert(found.pk)
        {
            continue;
        }
        let Ok(grant) = input.access.require(&found.resource_type, Permission::Read) else {
            continue;
        };
        if visible(conn, registry, &found.resource_type, &found.id, &grant)? {
            kept.push(found);
        }
    }
    Ok(kept)
}

fn render(
    input: &EverythingInput,
    page: &[Found],
    extra: &[Found],
    has_more: bool,
) -> Result<String, FhirError> {
    let path = format!("/Patient/{}/$everything", input.patient);
    let used = input.used();
    let mut links = vec![json!({
        "relation": "self",
        "url": super::search::link(&input.base, &path, &used),
    })];
    if has_more && let Some(last) = page.last() {
        let mut pairs = used.clone();
        pairs.push((
            "_cursor".to_string(),
            format!("{}:{}", last.resource_type, last.pk),
        ));
        links.push(json!({
            "relation": "next",
            "url": super::search::link(&input.base, &path, &pairs),
        }));
    }
    let mut entries: Vec<String> = Vec::with_capacity(page.len() + extra.len() + 1);
    for (found, mode) in page
        .iter()
        .map(|f| (f, "match"))
        .chain(extra.iter().map(|f| (f, "include")))
    {
        let Some(content) = &found.content else {
            continue;
        };
        let full_url = Value::String(format!(
            "{}/{}/{}",
            input.base, found.resource_type, found.id
        ));
        entries.push(format!(
            r#"{{"fullUrl":{full_url},"resource":{content},"search":{{"mode":"{mode}"}}}}"#
        ));
    }
    if input.care_dates_ignored {
        let outcome = operation_outcome(&[Issue::warning(
            "not-supported",
            "start and end are not applied: the whole record is returned",
        )]);
        entries.push(json!({ "resource": outcome, "search": { "mode": "outcome" } }).to_string());
    }
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    bundle.insert(
        "meta".into(),
        json!({ "lastUpdated": format_instant(now_micros()) }),
    );
    bundle.insert("type".into(), json!("searchset"));
    bundle.insert("link".into(), Value::Array(links));
    let mut text = Value::Object(bundle).to_string();
    if !entries.is_empty() {
        text.pop();
        text.push_str(",\"entry\":[");
        text.push_str(&entries.join(","));
        text.push_str("]}");
    }
    Ok(text)
}
