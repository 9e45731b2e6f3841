//! Resource validation against the R4 base definitions and the program's profiles: cardinality,
//! types and choice types, fixed and pattern values, bindings (required as errors, extensible as
//! warnings) against the value sets the server holds, reference targets, slicing by value or
//! pattern, extension definitions and invariants (FHIRPath `constraint` expressions). Every
//! issue is reported with its severity, code and FHIRPath location.
//!
//! The structure check of `fhir::parse` (unknown elements, JSON types, base cardinality, primitive
//! formats) runs first on every write; the validator adds what the definitions say beyond it.
//! Definitions are compiled once ([`validator`], forced at start-up).

pub mod definitions;
mod profile;

use std::sync::{LazyLock, RwLock};

use rustc_hash::FxHashMap;
use serde_json::Value;

use crate::error::FhirError;
use crate::fhir::outcome::{Issue, Severity};
use crate::fhir::structure::{is_primitive, member_type};
use crate::fhirpath::{Expr, Item, evaluate_constraint, parse};
use crate::terminology::terminology;
pub use profile::Profile;

/// The canonical base of the program's definitions.
pub const PROGRAM_BASE: &str = "http://example.org/fhir/pivot/";

/// The most issues one validation reports.
const MAX_ISSUES: usize = 200;

/// An invariant: a FHIRPath expression that must hold on each element it is defined on.
#[derive(Debug, Clone)]
pub struct Invariant {
    pub key: String,
    pub severity: Severity,
    pub human: String,
    pub expression: Expr,
    /// The profile that defines it (program invariants).
    pub source: Option<String>,
}

impl Invariant {
    pub fn new(
        key: &str,
        severity: &str,
        human: &str,
        expression: &str,
        source: Option<&str>,
    ) -> Option<Invariant> {
        Some(Invariant {
            key: key.to_string(),
            severity: if severity == "error" {
                Severity::Error
            } else {
                Severity::Warning
            },
            human: human.to_string(),
            expression: parse(expression).ok()?,
            source: source.map(str::to_string),
        })
    }

    /// Evaluates the invariant on `value` (of FHIR type `type_code`) inside `resource`.
    fn check(
        &self,
        value: &Value,
        type_code: &str,
        resource: &Value,
        path: &str,
        issues: &mut Vec<Issue>,
    ) {
        let focus = Item::Node {
            value,
            type_code: type_code.to_string(),
        };
        match evaluate_constraint(&self.expression, focus, resource) {
            Ok(items) => {
                let failed = match items.as_slice() {
                    [Item::Bool(false)] => true,
                    [item @ Item::Node { .. }] => item.to_text().as_deref() == Some("false"),
                    _ => false,
                };
                if failed {
                    let mut issue = Issue {
                        severity: self.severity,
                        code: "invariant",
                        diagnostics: format!("{}: {}", self.key, self.human),
                        expression: Some(path.to_string()),
                    };
                    if let Some(source) = &self.source {
                        issue.diagnostics = format!("{} ({source})", issue.diagnostics);
                    }
                    push(issues, issue);
                }
            }
            Err(err) => push(
                issues,
                Issue::warning(
                    "processing",
                    format!("{}: the invariant could not be evaluated: {err}", self.key),
                )
                .at(path),
            ),
        }
    }
}

/// dom-3, natively: its FHIRPath walks all descendants once per contained resource, which
/// is quadratic. A contained resource must be referred to (`#id`) from elsewhere in the
/// resource, or refer to its container (`#`).
fn check_dom3(invariant: &Invariant, resource: &Value, path: &str, issues: &mut Vec<Issue>) {
    let Some(contained) = resource.get("contained").and_then(Value::as_array) else {
        return;
    };
    fn strings<'v>(value: &'v Value, out: &mut rustc_hash::FxHashSet<&'v str>) {
        match value {
            Value::String(text) if text.starts_with('#') => {
                out.insert(text);
            }
            Value::Array(list) => list.iter().for_each(|v| strings(v, out)),
            Value::Object(map) => map.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut all = rustc_hash::FxHashSet::default();
    strings(resource, &mut all);
    for item in contained {
        let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
        let referred = all.contains(format!("#{id}").as_str());
        let refers_back = || {
            let mut own = rustc_hash::FxHashSet::default();
            strings(item, &mut own);
            own.contains("#")
        };
        if !referred && !refers_back() {
            push(
                issues,
                Issue {
                    severity: invariant.severity,
                    code: "invariant",
                    diagnostics: format!("{}: {}", invariant.key, invariant.human),
                    expression: Some(path.to_string()),
                },
            );
        }
    }
}

fn push(issues: &mut Vec<Issue>, issue: Issue) {
    if issues.len() < MAX_ISSUES {
        issues.push(issue);
    }
}

/// Binding strengths that are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strength {
    Required,
    Extensible,
}

/// The compiled definitions.
pub struct Validator {
    profiles: FxHashMap<String, Profile>,
}

static VALIDATOR: LazyLock<Validator> = LazyLock::new(Validator::build);

/// The validator (compiled on first use; `app` compiles it at start-up).
pub fn validator() -> &'static Validator {
    &VALIDATOR
}

/// Compiles the definitions and the terminology now (start-up).
pub fn warm_up() {
    LazyLock::force(&VALIDATOR);
    let _ = terminology();
    let _ = definitions::base();
}

impl Validator {
    fn build() -> Validator {
        let profiles = crate::fhir::profiles::artefacts_of("StructureDefinition")
            .iter()
            .filter_map(Profile::compile)
            .map(|p| (p.url.clone(), p))
            .collect();
        Validator { profiles }
    }

    /// A program profile or extension definition by canonical URL (a `|version` is ignored).
    pub fn profile(&self, url: &str) -> Option<&Profile> {
        self.profiles.get(url.split('|').next().unwrap_or(url))
    }

    /// The program's resource profiles of `resource_type`.
    pub fn profiles_of<'a>(&'a self, resource_type: &'a str) -> impl Iterator<Item = &'a Profile> {
        self.profiles
            .values()
            .filter(move |p| !p.is_extension && p.type_name == resource_type)
    }

    /// Validates `resource` against the base definitions, the program profiles it claims in
    /// `meta.profile`, and `profiles` (canonical URLs, which must be known).
    pub fn validate(&self, resource: &Value, profiles: &[String]) -> Vec<Issue> {
        let mut issues = Vec::new();
        let resource_type = resource["resourceType"].as_str().unwrap_or_default();
        self.walk_resource(resource, resource_type, &mut issues);
        let (mut urls, others): (Vec<String>, Vec<String>) =
            claimed_profiles(resource).partition(|url| url.starts_with(PROGRAM_BASE));
        for url in others {
            if url != format!("http://hl7.org/fhir/StructureDefinition/{resource_type}") {
                push(
                    &mut issues,
                    Issue::information(format!(
                        "The profile {url} is not held here; the resource was not checked against it"
                    ))
                    .at(format!("{resource_type}.meta.profile")),
                );
            }
        }
        urls.extend(profiles.iter().cloned());
        urls.sort();
        urls.dedup();
        for url in urls {
            match self.profile(&url) {
                Some(profile) if profile.type_name == resource_type && !profile.is_extension => {
                    profile.check(self, resource, &mut issues);
                }
                Some(profile) => push(
                    &mut issues,
                    Issue::error(
                        "invalid",
                        format!(
                            "The profile {url} is for {}, not {resource_type}",
                            profile.type_name
                        ),
                    )
                    .at(format!("{resource_type}.meta.profile")),
                ),
                None => push(
                    &mut issues,
                    Issue::error("not-found", format!("The profile {url} is not known here"))
                        .at(format!("{resource_type}.meta.profile")),
                ),
            }
        }
        issues
    }

    /// The base walk: every element's invariants, required bindings, reference targets and
    /// program extension definitions, recursing into contained and nested resources.
    fn walk_resource(&self, resource: &Value, path: &str, issues: &mut Vec<Issue>) {
        let Some(resource_type) = resource["resourceType"].as_str() else {
            return;
        };
        self.walk(resource, resource_type, path, resource, issues);
    }

    fn walk(
        &self,
        value: &Value,
        type_code: &str,
        path: &str,
        root: &Value,
        issues: &mut Vec<Issue>,
    ) {
        let Some(map) = value.as_object() else {
            return;
        };
        let base = definitions::base();
        if let Some(invariants) = base.constraints.get(type_code) {
            for invariant in invariants {
                if invariant.key == "dom-3" {
                    check_dom3(invariant, value, path, issues);
                } else {
                    invariant.check(value, type_code, root, path, issues);
                }
            }
        }
        if type_code == "Extension" {
            self.check_extension(value, path, root, issues);
        }
        let bindings = base.bindings.get(type_code);
        let targets = base.targets.get(type_code);
        for (key, member) in map {
            if key == "resourceType" || key.starts_with('_') {
                continue;
            }
            let Some(member_type) = member_type(type_code, key) else {
                continue;
            };
            let items: Vec<(String, &Value)> = match member {
                Value::Array(list) => list
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{path}.{key}[{i}]"), v))
                    .collect(),
                other => vec![(format!("{path}.{key}"), other)],
            };
            let binding = bindings.and_then(|b| b.get(key));
            let target = targets.and_then(|t| t.get(key));
            for (item_path, item) in items {
                if let Some(vs) = binding {
                    check_binding(
                        vs,
                        Strength::Required,
                        item,
                        &member_type,
                        &item_path,
                        issues,
                    );
                }
                if let Some(allowed) = target {
                    check_target(item, allowed, root, &item_path, issues);
                }
                if member_type == "Resource" && key == "contained" {
                    // a contained resource's references and `%rootResource` are its container's
                    if let Some(contained_type) = item["resourceType"].as_str() {
                        self.walk(item, contained_type, &item_path, root, issues);
                    }
                } else if member_type == "Resource" {
                    self.walk_resource(item, &item_path, issues);
                } else if !is_primitive(&member_type) {
                    self.walk(item, &member_type, &item_path, root, issues);
                }
            }
        }
    }

    /// An extension under the program's base must be one the program defines, and conform to it.
    fn check_extension(
        &self,
        extension: &Value,
        path: &str,
        root: &Value,
        issues: &mut Vec<Issue>,
    ) {
        let Some(url) = extension["url"].as_str() else {
            return;
        };
        if !url.starts_with(PROGRAM_BASE) {
            return;
        }
        match self.profile(url) {
            Some(definition) if definition.is_extension => {
                let element = element_path(path);
                let allowed = definition.contexts.is_empty()
                    || element.contains(".contained")
                    || definition.contexts.iter().any(|c| {
                        *c == element
                            || matches!(c.as_str(), "Element" | "Resource" | "DomainResource")
                    });
                if !allowed {
                    push(
                        issues,
                        Issue::error(
                            "structure",
                            format!(
                                "The extension {url} may be used on {}, not on {element}",
                                definition.contexts.join(", ")
                            ),
                        )
                        .at(path),
                    );
                }
                definition.check_element(self, extension, "Extension", path, root, issues);
            }
            _ => push(
                issues,
                Issue::error(
                    "structure",
                    format!("The extension {url} is not defined by the program"),
                )
                .at(path),
            ),
        }
    }
}

/// The element an extension at `path` extends, without indexes: `CarePlan.activity` for
/// `CarePlan.activity[0].extension[1]`.
fn element_path(path: &str) -> String {
    let parent = path.rsplit_once('.').map_or(path, |(parent, _)| parent);
    let mut out = String::with_capacity(parent.len());
    let mut skipping = false;
    for c in parent.chars() {
        match c {
            '[' => skipping = true,
            ']' => skipping = false,
            _ if !skipping => out.push(c),
            _ => {}
        }
    }
    out
}

/// The canonical URLs in `meta.profile`.
pub fn claimed_profiles(resource: &Value) -> impl Iterator<Item = String> + '_ {
    resource["meta"]["profile"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .map(|p| p.split('|').next().unwrap_or(p).to_string())
}

/// Checks a `code`, `Coding` or `CodeableConcept` against a value set the server holds (value
/// sets it cannot expand are not checked).
pub(crate) fn check_binding(
    vs_url: &str,
    strength: Strength,
    value: &Value,
    type_code: &str,
    path: &str,
    issues: &mut Vec<Issue>,
) {
    let Some(vs) = terminology().value_set(vs_url) else {
        return;
    };
    if vs.expansion.is_none() {
        return;
    }
    let codings: Vec<&Value> = match type_code {
        "code" | "string" | "uri" => {
            let Some(code) = value.as_str() else {
                return;
            };
            if vs.contains(None, code) == Some(true) {
                return;
            }
            report_binding(strength, &format!("'{code}'"), vs_url, path, issues);
            return;
        }
        "Coding" => vec![value],
        "CodeableConcept" => value["coding"].as_array().into_iter().flatten().collect(),
        _ => return,
    };
    let coded: Vec<&Value> = codings
        .into_iter()
        .filter(|c| c["code"].is_string())
        .collect();
    if coded.is_empty() {
        return;
    }
    let inside = coded.iter().any(|c| {
        vs.contains(c["system"].as_str(), c["code"].as_str().unwrap_or_default()) == Some(true)
    });
    if !inside {
        let shown: Vec<String> = coded
            .iter()
            .map(|c| {
                format!(
                    "{}|{}",
                    c["system"].as_str().unwrap_or_default(),
                    c["code"].as_str().unwrap_or_default()
                )
            })
            .collect();
        report_binding(strength, &shown.join(", "), vs_url, path, issues);
    }
}

fn report_binding(
    strength: Strength,
    shown: &str,
    vs_url: &str,
    path: &str,
    issues: &mut Vec<Issue>,
) {
    let issue = match strength {
        Strength::Required => Issue::error(
            "code-invalid",
            format!("{shown} is not in the value set {vs_url} (required binding)"),
        ),
        Strength::Extensible => Issue::warning(
            "code-invalid",
            format!("{shown} is not in the value set {vs_url} (extensible binding)"),
        ),
    };
    push(issues, issue.at(path));
}

/// The resource type a reference points to: its literal `Type/id`, or a contained resource's.
fn reference_target<'v>(reference: &'v Value, root: &'v Value) -> Option<&'v str> {
    let text = reference["reference"].as_str()?;
    if let Some(id) = text.strip_prefix('#') {
        return root["contained"]
            .as_array()?
            .iter()
            .find(|c| c["id"].as_str() == Some(id))?["resourceType"]
            .as_str();
    }
    crate::fhirpath::reference_type(text)
}

/// A Reference must point to one of `allowed` resource types (when its type can be told).
pub(crate) fn check_target(
    reference: &Value,
    allowed: &[String],
    root: &Value,
    path: &str,
    issues: &mut Vec<Issue>,
) {
    if allowed.is_empty() || allowed.iter().any(|t| t == "Resource") {
        return;
    }
    if let Some(target) = reference_target(reference, root)
        && !allowed.iter().any(|t| t == target)
    {
        push(
            issues,
            Issue::error(
                "invalid",
                format!(
                    "A reference to {target} is not allowed here (allowed: {})",
                    allowed.join(", ")
                ),
            )
            .at(format!("{path}.reference")),
        );
    }
}

/// Which resource types must claim a program profile on write (`--require-profiles`), for the
/// whole process.
static REQUIRED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Sets the resource types that must claim a program profile.
pub fn require_profiles(types: &[String]) {
    if let Ok(mut guard) = REQUIRED.write() {
        *guard = types.to_vec();
    }
}

/// Whether an Observation is an SDOH one (category `sdoh` or `social-history`): only those
/// are held to a required Observation profile.
fn is_sdoh_observation(resource: &Value) -> bool {
    resource["category"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["coding"].as_array().into_iter().flatten())
        .any(|c| matches!(c["code"].as_str(), Some("sdoh" | "social-history")))
}

/// Whether `resource` claims one of the program's profiles.
fn claims_program_profile(resource: &serde_json::Map<String, Value>) -> bool {
    resource
        .get("meta")
        .and_then(|m| m.get("profile"))
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .any(|p| p.starts_with(PROGRAM_BASE))
        })
}

/// The issue of a resource that does not claim a program profile although its type must
/// (`--require-profiles`).
pub fn required_profile_issue(resource: &serde_json::Map<String, Value>) -> Option<Issue> {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let required = REQUIRED
        .read()
        .map(|r| r.iter().any(|t| t == resource_type))
        .unwrap_or(false);
    if !required || claims_program_profile(resource) {
        return None;
    }
    if resource_type == "Observation" && !is_sdoh_observation(&Value::Object(resource.clone())) {
        return None;
    }
    let urls: Vec<String> = validator()
        .profiles_of(resource_type)
        .map(|p| p.url.clone())
        .collect();
    Some(
        Issue::error(
            "business-rule",
            format!(
                "This server requires a {resource_type} to claim a program profile in meta.profile (one of: {})",
                urls.join(", ")
            ),
        )
        .at(format!("{resource_type}.meta.profile")),
    )
}

/// The write rule: a resource of a type configured with `--require-profiles` must claim a
/// program profile, and a resource that claims one must conform to it (and to the base
/// definitions). Failures are 422 with every issue found.
pub fn enforce(resource: &serde_json::Map<String, Value>) -> Result<(), FhirError> {
    if let Some(issue) = required_profile_issue(resource) {
        return Err(FhirError::Unprocessable(vec![issue]));
    }
    if !claims_program_profile(resource) {
        return Ok(());
    }
    let issues = validator().validate(&Value::Object(resource.clone()), &[]);
    if issues
        .iter()
        .any(|i| matches!(i.severity, Severity::Error | Severity::Fatal))
    {
        return Err(FhirError::Unprocessable(issues));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
