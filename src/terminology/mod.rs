//! Terminology for the value sets and code systems the server holds: the program's (from
//! `profiles/`) and the R4 value sets its required bindings use (from the specification, embedded
//! as expansions), with the subsumption hierarchies of the specification's code systems (generated
//! `r4-hierarchies.json`). Built once at start-up; `$expand`, `$validate-code`, `$lookup`, token
//! `:in` / `:not-in` / `:above` / `:below` search and the validator's binding checks all read it.

use std::sync::LazyLock;

use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{Value, json};

/// A code of an expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

/// A code system's concept.
#[derive(Debug, Clone)]
pub struct Concept {
    pub code: String,
    pub display: Option<String>,
    pub definition: Option<String>,
    /// `CodeSystem.concept.property` as stored.
    pub properties: Vec<Value>,
    /// Codes of the concepts it contains (`is-a` hierarchy).
    pub children: Vec<String>,
}

/// A code system with its concepts.
#[derive(Debug, Clone)]
pub struct CodeSystem {
    pub url: String,
    pub name: Option<String>,
    pub version: Option<String>,
    pub concepts: Vec<Concept>,
    index: FxHashMap<String, usize>,
}

impl CodeSystem {
    pub fn concept(&self, code: &str) -> Option<&Concept> {
        self.index.get(code).and_then(|&at| self.concepts.get(at))
    }
}

/// A value set and, when it can be computed from what the server holds, its expansion.
#[derive(Debug, Clone)]
pub struct ValueSet {
    pub url: String,
    pub version: Option<String>,
    /// `None`: it draws on a code system the server does not hold in full (all of LOINC).
    pub expansion: Option<Vec<Code>>,
    members: FxHashSet<(String, String)>,
}

impl ValueSet {
    /// Whether `system|code` is in the value set (`None`: unknown, no expansion). Without a
    /// system, any system matches.
    pub fn contains(&self, system: Option<&str>, code: &str) -> Option<bool> {
        let expansion = self.expansion.as_ref()?;
        Some(match system {
            Some(system) => self
                .members
                .contains(&(system.to_string(), code.to_string())),
            None => expansion.iter().any(|c| c.code == code),
        })
    }

    /// The display of `system|code` in the expansion.
    pub fn display(&self, system: Option<&str>, code: &str) -> Option<&str> {
        self.expansion
            .iter()
            .flatten()
            .find(|c| c.code == code && system.is_none_or(|s| s == c.system))
            .and_then(|c| c.display.as_deref())
    }
}

/// Every code system and value set the server holds.
pub struct Terminology {
    code_systems: FxHashMap<String, CodeSystem>,
    value_sets: FxHashMap<String, ValueSet>,
    hierarchies: FxHashMap<String, Hierarchy>,
}

/// The `is-a` links of one code system, both ways.
#[derive(Debug, Default)]
struct Hierarchy {
    parents: FxHashMap<String, Vec<String>>,
    children: FxHashMap<String, Vec<String>>,
}

impl Hierarchy {
    fn link(&mut self, code: &str, parent: &str) {
        self.parents
            .entry(code.to_string())
            .or_default()
            .push(parent.to_string());
        self.children
            .entry(parent.to_string())
            .or_default()
            .push(code.to_string());
    }
}

/// Which way `:above` / `:below` walk a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsumption {
    /// The code and every code that subsumes it (`:above`).
    Ancestors,
    /// The code and every code it subsumes (`:below`).
    Descendants,
}

/// Why a code's relatives cannot be listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubsumptionError {
    /// The server knows no hierarchy of this code system.
    UnknownSystem,
    /// The code system is held in full and has no such code.
    UnknownCode,
    /// More relatives than a search may list.
    TooMany,
}

static TERMINOLOGY: LazyLock<Terminology> = LazyLock::new(Terminology::build);

/// The server's terminology (built on first use; `app` builds it at start-up).
pub fn terminology() -> &'static Terminology {
    &TERMINOLOGY
}

impl Terminology {
    fn build() -> Terminology {
        let mut code_systems = FxHashMap::default();
        for resource in crate::fhir::profiles::artefacts_of("CodeSystem") {
            if let Some(cs) = code_system_of(&resource) {
                code_systems.insert(cs.url.clone(), cs);
            }
        }
        let hierarchies = hierarchies_of(&code_systems);
        let mut terminology = Terminology {
            code_systems,
            value_sets: FxHashMap::default(),
            hierarchies,
        };
        let program = crate::fhir::profiles::artefacts_of("ValueSet");
        // A value set may include another: expand again until every one is known.
        for _ in 0..4 {
            for resource in &program {
                if let Some(vs) = terminology.value_set_of(resource) {
                    terminology.value_sets.insert(vs.url.clone(), vs);
                }
            }
        }
        for (url, codes) in crate::validation::definitions::base_value_sets() {
            let expansion: Vec<Code> = codes
                .into_iter()
                .map(|(system, code)| Code {
                    system,
                    code,
                    display: None,
                })
                .collect();
            terminology
                .value_sets
                .entry(url.clone())
                .or_insert_with(|| make_value_set(url, None, Some(expansion)));
        }
        terminology
    }

    pub fn code_system(&self, url: &str) -> Option<&CodeSystem> {
        self.code_systems.get(strip_version(url))
    }

    pub fn value_set(&self, url: &str) -> Option<&ValueSet> {
        self.value_sets.get(strip_version(url))
    }

    /// `code` and its ancestors or descendants in `system` (at most `limit` codes), for token
    /// `:above` / `:below`. A code system held in full must have the code; of the
    /// specification's code systems only the hierarchy is held, so any code is accepted there
    /// (one outside the hierarchy has no relatives).
    pub fn subsumption(
        &self,
        system: &str,
        code: &str,
        direction: Subsumption,
        limit: usize,
    ) -> Result<Vec<String>, SubsumptionError> {
        let system = strip_version(system);
        if let Some(cs) = self.code_systems.get(system)
            && cs.concept(code).is_none()
        {
            return Err(SubsumptionError::UnknownCode);
        }
        let Some(hierarchy) = self.hierarchies.get(system) else {
            // a flat code system held in full: the code alone
            return if self.code_systems.contains_key(system) {
                Ok(vec![code.to_string()])
            } else {
                Err(SubsumptionError::UnknownSystem)
            };
        };
        let links = match direction {
            Subsumption::Ancestors => &hierarchy.parents,
            Subsumption::Descendants => &hierarchy.children,
        };
        let mut found = vec![code.to_string()];
        let mut seen: FxHashSet<&str> = FxHashSet::default();
        seen.insert(code);
        let mut at = 0;
        while let Some(current) = found.get(at).cloned() {
            at += 1;
            for next in links.get(&current).into_iter().flatten() {
                if seen.insert(next) {
                    if found.len() >= limit {
                        return Err(SubsumptionError::TooMany);
                    }
                    found.push(next.clone());
                }
            }
        }
        Ok(found)
    }

    /// Expands a ValueSet resource (the program's or a client's) with the code systems held;
    /// `expansion` is `None` when it draws on a code system not held in full or on an unknown
    /// value set.
    pub fn value_set_of(&self, resource: &Value) -> Option<ValueSet> {
        let url = resource["url"].as_str()?.to_string();
        let expansion = self.expand_compose(&resource["compose"]);
        Some(make_value_set(
            url,
            resource["version"].as_str().map(str::to_string),
            expansion,
        ))
    }

    fn expand_compose(&self, compose: &Value) -> Option<Vec<Code>> {
        let mut codes: Vec<Code> = Vec::new();
        for include in compose["include"].as_array()? {
            codes.extend(self.expand_include(include)?);
        }
        if let Some(excludes) = compose["exclude"].as_array() {
            let mut removed = FxHashSet::default();
            for exclude in excludes {
                for code in self.expand_include(exclude)? {
                    removed.insert((code.system, code.code));
                }
            }
            codes.retain(|c| !removed.contains(&(c.system.clone(), c.code.clone())));
        }
        let mut seen = FxHashSet::default();
        codes.retain(|c| seen.insert((c.system.clone(), c.code.clone())));
        Some(codes)
    }

    fn expand_include(&self, include: &Value) -> Option<Vec<Code>> {
        let mut codes: Option<Vec<Code>> = None;
        if let Some(system) = include["system"].as_str() {
            let held = self.code_system(system);
            let display_of = |code: &str| {
                held.and_then(|cs| cs.concept(code))
                    .and_then(|c| c.display.clone())
            };
            codes = Some(match include["concept"].as_array() {
                Some(concepts) => concepts
                    .iter()
                    .filter_map(|c| {
                        let code = c["code"].as_str()?;
                        Some(Code {
                            system: system.to_string(),
                            code: code.to_string(),
                            display: c["display"]
                                .as_str()
                                .map(str::to_string)
                                .or_else(|| display_of(code)),
                        })
                    })
                    .collect(),
                None => {
                    let cs = held?;
                    let filters = include["filter"].as_array();
                    cs.concepts
                        .iter()
                        .filter(|concept| {
                            filters
                                .into_iter()
                                .flatten()
                                .all(|f| matches_filter(cs, concept, f))
                        })
                        .map(|concept| Code {
                            system: system.to_string(),
                            code: concept.code.clone(),
                            display: concept.display.clone(),
                        })
                        .collect()
                }
            });
        }
        if let Some(refs) = include["valueSet"].as_array() {
            for reference in refs {
                let other = self.value_set(reference.as_str()?)?.expansion.clone()?;
                codes = Some(match codes {
                    None => other,
                    Some(mine) => mine
                        .into_iter()
                        .filter(|c| {
                            other
                                .iter()
                                .any(|o| o.system == c.system && o.code == c.code)
                        })
                        .collect(),
                });
            }
        }
        codes
    }
}

/// A `compose.include.filter`: `property = value` on a concept property; `=`, `in`, `is-a`
/// and `descendent-of` on codes.
fn matches_filter(cs: &CodeSystem, concept: &Concept, filter: &Value) -> bool {
    let (Some(property), Some(op), Some(value)) = (
        filter["property"].as_str(),
        filter["op"].as_str(),
        filter["value"].as_str(),
    ) else {
        return false;
    };
    if property == "concept" || property == "code" {
        return match op {
            "=" => concept.code == value,
            "in" => value.split(',').any(|v| v.trim() == concept.code),
            "is-a" => concept.code == value || descends(cs, value, &concept.code),
            "descendent-of" => descends(cs, value, &concept.code),
            _ => false,
        };
    }
    op == "="
        && concept.properties.iter().any(|p| {
            p["code"] == property
                && ["valueCode", "valueString", "valueBoolean", "valueInteger"]
                    .iter()
                    .any(|k| match &p[*k] {
                        Value::String(s) => s == value,
                        Value::Null => false,
                        // a boolean or number matches its JSON text (`true`, `3`)
                        Value::Bool(b) => value == if *b { "true" } else { "false" },
                        Value::Number(n) => n.to_string() == value,
                        _ => false,
                    })
        })
}

/// Whether `code` is below `ancestor` in the code system's hierarchy.
fn descends(cs: &CodeSystem, ancestor: &str, code: &str) -> bool {
    let mut pending: Vec<&str> = vec![ancestor];
    let mut seen = FxHashSet::default();
    while let Some(current) = pending.pop() {
        if !seen.insert(current) {
            continue;
        }
        for child in cs
            .concept(current)
            .map(|c| c.children.as_slice())
            .unwrap_or_default()
        {
            if child == code {
                return true;
            }
            pending.push(child);
        }
    }
    false
}

fn make_value_set(url: String, version: Option<String>, expansion: Option<Vec<Code>>) -> ValueSet {
    let members = expansion
        .iter()
        .flatten()
        .map(|c| (c.system.clone(), c.code.clone()))
        .collect();
    ValueSet {
        url,
        version,
        expansion,
        members,
    }
}

fn code_system_of(resource: &Value) -> Option<CodeSystem> {
    fn walk(list: &Value, concepts: &mut Vec<Concept>) -> Vec<String> {
        let mut codes = Vec::new();
        for c in list.as_array().into_iter().flatten() {
            let Some(code) = c["code"].as_str() else {
                continue;
            };
            let at = concepts.len();
            concepts.push(Concept {
                code: code.to_string(),
                display: c["display"].as_str().map(str::to_string),
                definition: c["definition"].as_str().map(str::to_string),
                properties: c["property"].as_array().cloned().unwrap_or_default(),
                children: Vec::new(),
            });
            let children = walk(&c["concept"], concepts);
            if let Some(concept) = concepts.get_mut(at) {
                concept.children = children;
            }
            codes.push(code.to_string());
        }
        codes
    }
    let url = resource["url"].as_str()?.to_string();
    let mut concepts = Vec::new();
    walk(&resource["concept"], &mut concepts);
    let index = concepts
        .iter()
        .enumerate()
        .map(|(at, c)| (c.code.clone(), at))
        .collect();
    Some(CodeSystem {
        url,
        name: resource["name"].as_str().map(str::to_string),
        version: resource["version"].as_str().map(str::to_string),
        concepts,
        index,
    })
}

/// The hierarchies of the held code systems (nested concepts and `parent` properties), then
/// those of the specification's code systems that the program does not redefine.
fn hierarchies_of(code_systems: &FxHashMap<String, CodeSystem>) -> FxHashMap<String, Hierarchy> {
    let mut hierarchies: FxHashMap<String, Hierarchy> = FxHashMap::default();
    for (url, cs) in code_systems {
        let mut hierarchy = Hierarchy::default();
        for concept in &cs.concepts {
            for child in &concept.children {
                hierarchy.link(child, &concept.code);
            }
            for property in &concept.properties {
                if matches!(property["code"].as_str(), Some("parent" | "subsumedBy"))
                    && let Some(parent) = property["valueCode"].as_str()
                {
                    hierarchy.link(&concept.code, parent);
                }
            }
        }
        if !hierarchy.parents.is_empty() {
            hierarchies.insert(url.clone(), hierarchy);
        }
    }
    let generated: FxHashMap<String, Vec<(String, String)>> =
        serde_json::from_str(include_str!("r4-hierarchies.json")).unwrap_or_default();
    for (url, pairs) in generated {
        if code_systems.contains_key(&url) {
            continue;
        }
        let mut hierarchy = Hierarchy::default();
        for (code, parent) in &pairs {
            hierarchy.link(code, parent);
        }
        hierarchies.insert(url, hierarchy);
    }
    hierarchies
}

fn strip_version(url: &str) -> &str {
    url.split('|').next().unwrap_or(url)
}

/// `$expand`: `resource` with the expansion of `vs`: the codes whose code or display contain
/// `filter` (case-insensitive), from `offset`, at most `count`. `None` when `vs` has no
/// expansion.
pub fn expansion_resource(
    resource: &Value,
    vs: &ValueSet,
    filter: Option<&str>,
    offset: usize,
    count: Option<usize>,
    timestamp: &str,
) -> Option<Value> {
    let codes = vs.expansion.as_ref()?;
    let needle = filter.map(str::to_lowercase);
    let matching: Vec<&Code> = codes
        .iter()
        .filter(|c| {
            needle.as_deref().is_none_or(|n| {
                c.code.to_lowercase().contains(n)
                    || c.display
                        .as_deref()
                        .is_some_and(|d| d.to_lowercase().contains(n))
            })
        })
        .collect();
    let total = matching.len();
    let page: Vec<Value> = matching
        .into_iter()
        .skip(offset)
        .take(count.unwrap_or(usize::MAX))
        .map(|c| {
            let mut entry = json!({ "system": c.system, "code": c.code });
            if let Some(display) = &c.display {
                entry["display"] = json!(display);
            }
            entry
        })
        .collect();
    let mut out = resource.clone();
    if let Some(map) = out.as_object_mut() {
        map.shift_remove("compose");
        map.shift_remove("text");
        map.shift_remove("meta");
    }
    let mut parameters = vec![json!({ "name": "offset", "valueInteger": offset })];
    if let Some(count) = count {
        parameters.push(json!({ "name": "count", "valueInteger": count }));
    }
    if let Some(filter) = filter {
        parameters.push(json!({ "name": "filter", "valueString": filter }));
    }
    let mut expansion = json!({
        "identifier": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "timestamp": timestamp,
        "total": total,
        "offset": offset,
        "parameter": parameters,
    });
    if !page.is_empty() {
        expansion["contains"] = json!(page);
    }
    out["expansion"] = expansion;
    Some(out)
}
