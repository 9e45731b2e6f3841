//! What the validator knows of the R4 base definitions beyond the element model: each type's
//! and backbone element's invariants (parsed once), required bindings and reference targets.
//! Generated from the official StructureDefinitions by `scripts/generate-r4-definitions.py`.

use std::sync::LazyLock;

use rustc_hash::FxHashMap;
use serde_json::Value;

use super::Invariant;

pub struct BaseDefinitions {
    /// Invariants by type name or backbone path (`Patient`, `Patient.contact`, `Period`).
    pub constraints: FxHashMap<String, Vec<Invariant>>,
    /// Required bindings: type or backbone path -> JSON key -> value set URL.
    pub bindings: FxHashMap<String, FxHashMap<String, String>>,
    /// Reference targets: type or backbone path -> JSON key -> resource types.
    pub targets: FxHashMap<String, FxHashMap<String, Vec<String>>>,
    /// Invariants that could not be parsed (none expected; a test checks).
    pub unparsed: Vec<String>,
}

static RAW: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("r4-definitions.json")).unwrap_or(Value::Null)
});

static BASE: LazyLock<BaseDefinitions> = LazyLock::new(build);

pub fn base() -> &'static BaseDefinitions {
    &BASE
}

/// The expansions of the R4 value sets with required bindings: URL -> (system, code).
pub fn base_value_sets() -> Vec<(String, Vec<(String, String)>)> {
    RAW["valueSets"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(url, codes)| {
            let codes = codes
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|pair| {
                    Some((
                        pair.get(0)?.as_str()?.to_string(),
                        pair.get(1)?.as_str()?.to_string(),
                    ))
                })
                .collect();
            (url.clone(), codes)
        })
        .collect()
}

fn build() -> BaseDefinitions {
    let mut constraints = FxHashMap::default();
    let mut unparsed = Vec::new();
    for (path, list) in RAW["constraints"].as_object().into_iter().flatten() {
        let mut parsed = Vec::new();
        for entry in list.as_array().into_iter().flatten() {
            let text = |at: usize| entry.get(at).and_then(Value::as_str).unwrap_or_default();
            match Invariant::new(text(0), text(1), text(2), text(3), None) {
                Some(invariant) => parsed.push(invariant),
                None => unparsed.push(format!("{path} {}", text(0))),
            }
        }
        constraints.insert(path.clone(), parsed);
    }
    let nested = |name: &str| -> FxHashMap<String, FxHashMap<String, Value>> {
        RAW[name]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(path, keys)| {
                let keys = keys
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (path.clone(), keys)
            })
            .collect()
    };
    let bindings = nested("bindings")
        .into_iter()
        .map(|(path, keys)| {
            let keys = keys
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
                .collect();
            (path, keys)
        })
        .collect();
    let targets = nested("targets")
        .into_iter()
        .map(|(path, keys)| {
            let keys = keys
                .into_iter()
                .map(|(k, v)| {
                    let names = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|n| n.as_str().map(str::to_string))
                        .collect();
                    (k, names)
                })
                .collect();
            (path, keys)
        })
        .collect();
    BaseDefinitions {
        constraints,
        bindings,
        targets,
        unparsed,
    }
}
