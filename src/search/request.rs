//! A whole search request: the result parameters (`_count`, `_sort`, `_include`, `_total`,
//! `_summary`, `_elements`, paging) and the conditions, with the parameters the server did not
//! use (reported back, and refused under `Prefer: handling=strict`).

use super::query::{Condition, SearchValue, parse_condition};
use super::registry::{ParamType, Registry};
use crate::error::FhirError;
use crate::fhir::outcome::Issue;
use crate::store::search::SortKey;

/// Page size without `_count` (as HAPI FHIR and most servers).
pub const DEFAULT_COUNT: i64 = 20;
pub const MAX_COUNT: i64 = 1000;
/// Most search parameters in one request (each becomes a condition of the query).
pub const MAX_CONDITIONS: usize = 100;
/// The most resources `_include` and `_revinclude` add to one page.
pub const MAX_INCLUDED: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    None,
    Estimate,
    Accurate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    True,
    Text,
    Data,
    Count,
    False,
}

/// `_include` / `_revinclude`: `source_type:param[:target_type]`, `*` for every parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub source_type: String,
    pub param: Option<String>,
    pub target_type: Option<String>,
    pub iterate: bool,
}

#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub conditions: Vec<Condition>,
    pub sort: Vec<SortKey>,
    pub count: i64,
    pub after_pk: Option<i64>,
    pub before_pk: Option<i64>,
    pub offset: i64,
    pub total: Total,
    pub summary: Option<Summary>,
    pub elements: Vec<String>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    /// `_type` of a system search.
    pub types: Vec<String>,
    /// The parameters used, for the `self` link (paging parameters excluded).
    pub used: Vec<(String, String)>,
    /// Parameters ignored (lenient handling), each with the reason.
    pub ignored: Vec<Issue>,
}

fn number(name: &str, value: &str) -> Result<i64, FhirError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            FhirError::invalid(
                Issue::error(
                    "value",
                    format!("{name} must be a whole number of 0 or more"),
                )
                .at(name.to_string()),
            )
        })
}

/// Parses the parameters of a search on `resource_type` (for a system search, the parameters
/// are read as those of `Resource`, valid on every type).
pub fn parse_request(
    registry: &Registry,
    resource_type: &str,
    params: &[(String, String)],
    strict: bool,
) -> Result<SearchRequest, FhirError> {
    let mut request = SearchRequest {
        conditions: Vec::new(),
        sort: Vec::new(),
        count: DEFAULT_COUNT,
        after_pk: None,
        before_pk: None,
        offset: 0,
        total: Total::Estimate,
        summary: None,
        elements: Vec::new(),
        includes: Vec::new(),
        revincludes: Vec::new(),
        types: Vec::new(),
        used: Vec::new(),
        ignored: Vec::new(),
    };
    for (name, value) in params {
        if name.contains('\0') || value.contains('\0') {
            // no database stores it in text, and no FHIR value contains it
            return Err(FhirError::invalid(
                Issue::error("value", "Search parameters must not contain NUL characters")
                    .at(name.replace('\0', "")),
            ));
        }
        let keep = match name.as_str() {
            "_format" | "_pretty" => true,
            "_count" => {
                // larger pages are cut to MAX_COUNT, and the links say the size served
                request.count = number(name, value)?.min(MAX_COUNT);
                request.used.push((name.clone(), request.count.to_string()));
                false
            }
            "_cursor" => {
                request.after_pk = Some(number(name, value)?);
                false
            }
            "_before" => {
                request.before_pk = Some(number(name, value)?);
                false
            }
            "_offset" => {
                request.offset = number(name, value)?.min(1_000_000);
                false
            }
            "_total" => {
                request.total = match value.as_str() {
                    "none" => Total::None,
                    "estimate" => Total::Estimate,
                    "accurate" => Total::Accurate,
                    _ => {
                        return Err(FhirError::invalid(
                            Issue::error("value", "_total takes none, estimate or accurate")
                                .at("_total"),
                        ));
                    }
                };
                true
            }
            "_summary" => {
                request.summary = Some(match value.as_str() {
                    "true" => Summary::True,
                    "text" => Summary::Text,
                    "data" => Summary::Data,
                    "count" => Summary::Count,
                    "false" => Summary::False,
                    _ => {
                        return Err(FhirError::invalid(
                            Issue::error(
                                "value",
                                "_summary takes true, text, data, count or false",
                            )
                            .at("_summary"),
                        ));
                    }
                });
                true
            }
            "_elements" => {
                request.elements.extend(
                    value
                        .split(',')
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty()),
                );
                true
            }
            "_type" => {
                for resource_type in value.split(',') {
                    if !crate::fhir::is_resource_type(resource_type) {
                        return Err(FhirError::invalid(
                            Issue::error(
                                "value",
                                format!("Unknown resource type '{resource_type}' in _type"),
                            )
                            .at("_type"),
                        ));
                    }
                    request.types.push(resource_type.to_string());
                }
                true
            }
            "_sort" => {
                for key in value.split(',') {
                    let (descending, code) = match key.strip_prefix('-') {
                        Some(code) => (true, code),
                        None => (false, key),
                    };
                    let sort = match code {
                        "_lastUpdated" => SortKey::LastUpdated { descending },
                        "_id" => SortKey::Id { descending },
                        _ => match registry.get(resource_type, code) {
                            Some(param)
                                if !matches!(
                                    param.kind,
                                    ParamType::Composite | ParamType::Special
                                ) =>
                            {
                                SortKey::Param {
                                    code: code.to_string(),
                                    kind: param.kind,
                                    descending,
                                }
                            }
                            _ => {
                                let issue = Issue::error(
                                    "not-supported",
                                    format!("Cannot sort by '{code}'"),
                                )
                                .at("_sort");
                                if strict {
                                    return Err(FhirError::invalid(issue));
                                }
                                request.ignored.push(Issue {
                                    severity: crate::fhir::outcome::Severity::Warning,
                                    ..issue
                                });
                                continue;
                            }
                        },
                    };
                    request.sort.push(sort);
                }
                true
            }
            "_include" | "_include:iterate" | "_revinclude" | "_revinclude:iterate" => {
                let iterate = name.ends_with(":iterate");
                let include = parse_include(registry, name, value, iterate)?;
                if name.starts_with("_include") {
                    request.includes.push(include);
                } else {
                    request.revincludes.push(include);
                }
                true
            }
            _ => match parse_condition(registry, resource_type, name, value, 0) {
                Ok(_) if request.conditions.len() >= MAX_CONDITIONS => {
                    return Err(FhirError::invalid(Issue::error(
                        "too-costly",
                        format!("A search may have at most {MAX_CONDITIONS} parameters"),
                    )));
                }
                Ok(condition) => {
                    request.conditions.push(condition);
                    true
                }
                Err(FhirError::Invalid(issues))
                    if !strict && issues.iter().all(|i| i.code == "not-supported") =>
                {
                    request
                        .ignored
                        .extend(issues.into_iter().map(|issue| Issue {
                            severity: crate::fhir::outcome::Severity::Warning,
                            diagnostics: format!("{} (parameter ignored)", issue.diagnostics),
                            ..issue
                        }));
                    false
                }
                Err(err) => return Err(err),
            },
        };
        if keep {
            request.used.push((name.clone(), value.clone()));
        }
    }
    Ok(request)
}

fn parse_include(
    registry: &Registry,
    name: &str,
    value: &str,
    iterate: bool,
) -> Result<Include, FhirError> {
    let bad =
        |message: String| FhirError::invalid(Issue::error("value", message).at(name.to_string()));
    let parts: Vec<&str> = value.split(':').collect();
    let (source_type, param, target_type) = match parts.as_slice() {
        ["*"] => {
            return Ok(Include {
                source_type: "*".into(),
                param: None,
                target_type: None,
                iterate,
            });
        }
        [source, param] => (*source, *param, None),
        [source, param, target] => (*source, *param, Some(*target)),
        _ => return Err(bad(format!("'{value}' is not Type:parameter[:targetType]"))),
    };
    if !crate::fhir::is_resource_type(source_type) {
        return Err(bad(format!("'{source_type}' is not a resource type")));
    }
    if let Some(target) = target_type
        && !crate::fhir::is_resource_type(target)
    {
        return Err(bad(format!("'{target}' is not a resource type")));
    }
    let param = if param == "*" {
        None
    } else {
        match registry.get(source_type, param) {
            Some(p) if p.kind == ParamType::Reference => Some(param.to_string()),
            _ => {
                return Err(bad(format!(
                    "'{param}' is not a reference parameter of {source_type}"
                )));
            }
        }
    };
    Ok(Include {
        source_type: source_type.to_string(),
        param,
        target_type: target_type.map(str::to_string),
        iterate,
    })
}

/// The member parameters of each type in the Patient compartment.
static MEMBERS: std::sync::LazyLock<std::collections::HashMap<String, Vec<String>>> =
    std::sync::LazyLock::new(|| {
        serde_json::from_str(include_str!("patient-compartment.json")).unwrap_or_default()
    });

/// The types in the Patient compartment, Patient first, the others in name order.
pub fn patient_compartment_types() -> Vec<String> {
    let mut types: Vec<String> = MEMBERS
        .keys()
        .filter(|t| *t != "Patient")
        .cloned()
        .collect();
    types.sort();
    types.insert(0, "Patient".to_string());
    types
}

/// The conditions placing a resource of `resource_type` in the compartment of
/// `Patient/{patient_id}` (compartmentdefinition-patient): any of its member parameters refers
/// to the patient. `None` when the type is not in the compartment.
pub fn patient_compartment(
    registry: &Registry,
    resource_type: &str,
    patient_id: &str,
) -> Option<Condition> {
    if resource_type == "Patient" {
        return Some(Condition::Id(vec![patient_id.to_string()]));
    }
    let params = MEMBERS.get(resource_type)?;
    let conditions: Vec<Condition> = params
        .iter()
        .filter_map(|code| registry.get(resource_type, code).cloned())
        .filter(|param| param.kind == ParamType::Reference)
        .map(|param| Condition::Match {
            param,
            modifier: super::query::Modifier::None,
            values: vec![SearchValue::Reference {
                target_type: Some("Patient".into()),
                id: Some(patient_id.to_string()),
                url: None,
            }],
        })
        .collect();
    Some(Condition::AnyOf(conditions))
}

/// The conditions placing a resource of `resource_type` in the compartment of one of
/// `patient_ids` (`None`: of any patient that exists). `None` when the type is not in the
/// compartment.
pub fn patients_compartment(
    registry: &Registry,
    resource_type: &str,
    patient_ids: Option<&[String]>,
) -> Option<Condition> {
    if resource_type == "Patient" {
        return Some(match patient_ids {
            Some(ids) => Condition::Id(ids.to_vec()),
            None => Condition::AllOf(Vec::new()),
        });
    }
    let params = MEMBERS.get(resource_type)?;
    let conditions: Vec<Condition> = params
        .iter()
        .filter_map(|code| registry.get(resource_type, code).cloned())
        .filter(|param| param.kind == ParamType::Reference)
        .map(|param| match patient_ids {
            Some(ids) => Condition::Match {
                param,
                modifier: super::query::Modifier::None,
                values: ids
                    .iter()
                    .map(|id| SearchValue::Reference {
                        target_type: Some("Patient".into()),
                        id: Some(id.clone()),
                        url: None,
                    })
                    .collect(),
            },
            // refers to a Patient that exists: a chain to any current Patient
            None => Condition::Chain {
                param,
                targets: vec![("Patient".to_string(), Condition::AllOf(Vec::new()))],
            },
        })
        .collect();
    Some(Condition::AnyOf(conditions))
}
