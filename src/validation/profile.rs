//! A program StructureDefinition compiled from its differential into a tree of element rules:
//! children by element name, slices by slice name. Checking walks the resource along the tree.

use serde_json::Value;

use super::{Invariant, Strength, Validator, check_binding, check_target, push};
use crate::fhir::outcome::Issue;
use crate::fhir::structure::element_keys_ref;

/// A compiled profile or extension definition.
pub struct Profile {
    pub url: String,
    /// The constrained type (`Patient`, `Extension`).
    pub type_name: String,
    pub is_extension: bool,
    /// Where an extension may be used (`context.expression` of element contexts).
    pub contexts: Vec<String>,
    root: Node,
}

#[derive(Default)]
struct Node {
    rule: Rule,
    /// Child elements by name (`identifier`, `value[x]`), in definition order.
    children: Vec<(String, Node)>,
    /// Slices by name; for a choice element, type slices are named by their key (`valueQuantity`).
    slices: Vec<(String, Node)>,
}

#[derive(Default)]
struct Rule {
    min: Option<u64>,
    /// `None`: unbounded or not constrained.
    max: Option<u64>,
    /// Allowed type codes (empty: not constrained).
    types: Vec<String>,
    /// Allowed reference target types (from `targetProfile`).
    targets: Vec<String>,
    /// `type.profile` (extension slices name their definition here).
    type_profiles: Vec<String>,
    fixed: Option<Value>,
    pattern: Option<Value>,
    binding: Option<(Strength, String)>,
    invariants: Vec<Invariant>,
    /// Discriminators (type, path) when the element is sliced.
    discriminators: Vec<(String, String)>,
    closed: bool,
}

impl Profile {
    pub fn compile(sd: &Value) -> Option<Profile> {
        let url = sd["url"].as_str()?.to_string();
        let type_name = sd["type"].as_str()?.to_string();
        let mut root = Node::default();
        for element in sd["differential"]["element"].as_array()? {
            let id = element["id"].as_str().or(element["path"].as_str())?;
            let mut segments = id.split('.');
            segments.next();
            let mut node = &mut root;
            for segment in segments {
                let (name, slice) = match segment.split_once(':') {
                    Some((name, slice)) => (name, Some(slice)),
                    None => (segment, None),
                };
                node = child(&mut node.children, name);
                if let Some(slice) = slice {
                    node = child(&mut node.slices, slice);
                }
            }
            node.rule = rule_of(element, &url);
        }
        let contexts = sd["context"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["type"] == "element")
            .filter_map(|c| c["expression"].as_str().map(str::to_string))
            .collect();
        Some(Profile {
            is_extension: type_name == "Extension",
            contexts,
            url,
            type_name,
            root,
        })
    }

    /// Checks a resource against the profile.
    pub fn check(&self, validator: &Validator, resource: &Value, issues: &mut Vec<Issue>) {
        let path = self.type_name.clone();
        self.check_element(
            validator,
            resource,
            &self.type_name,
            &path,
            resource,
            issues,
        );
    }

    /// Checks one element (the resource, or an extension for an extension definition).
    pub fn check_element(
        &self,
        validator: &Validator,
        value: &Value,
        type_code: &str,
        path: &str,
        root: &Value,
        issues: &mut Vec<Issue>,
    ) {
        let checker = Checker {
            validator,
            root,
            profile: &self.url,
        };
        checker.values(&self.root.rule, value, type_code, path, issues);
        checker.children(&self.root, value, type_code, path, issues);
    }
}

fn child<'n>(list: &'n mut Vec<(String, Node)>, name: &str) -> &'n mut Node {
    let at = match list.iter().position(|(n, _)| n == name) {
        Some(at) => at,
        None => {
            list.push((name.to_string(), Node::default()));
            list.len() - 1
        }
    };
    &mut list[at].1
}

fn rule_of(element: &Value, url: &str) -> Rule {
    let mut rule = Rule {
        min: element["min"].as_u64(),
        max: element["max"].as_str().and_then(|m| m.parse().ok()),
        ..Rule::default()
    };
    for t in element["type"].as_array().into_iter().flatten() {
        if let Some(code) = t["code"].as_str() {
            rule.types.push(code.to_string());
        }
        for target in t["targetProfile"].as_array().into_iter().flatten() {
            if let Some(target) = target.as_str() {
                rule.targets.push(target.to_string());
            }
        }
        for profile in t["profile"].as_array().into_iter().flatten() {
            if let Some(profile) = profile.as_str() {
                rule.type_profiles.push(profile.to_string());
            }
        }
    }
    if let Some(map) = element.as_object() {
        for (key, value) in map {
            if key.starts_with("fixed") {
                rule.fixed = Some(value.clone());
            } else if key.starts_with("pattern") {
                rule.pattern = Some(value.clone());
            }
        }
    }
    let binding = &element["binding"];
    if let Some(vs) = binding["valueSet"].as_str() {
        match binding["strength"].as_str() {
            Some("required") => rule.binding = Some((Strength::Required, vs.to_string())),
            Some("extensible") => rule.binding = Some((Strength::Extensible, vs.to_string())),
            _ => {}
        }
    }
    for c in element["constraint"].as_array().into_iter().flatten() {
        let text = |k: &str| c[k].as_str().unwrap_or_default();
        if let Some(invariant) = Invariant::new(
            text("key"),
            text("severity"),
            text("human"),
            text("expression"),
            Some(c["source"].as_str().unwrap_or(url)),
        ) {
            rule.invariants.push(invariant);
        }
    }
    for d in element["slicing"]["discriminator"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let (Some(kind), Some(path)) = (d["type"].as_str(), d["path"].as_str()) {
            rule.discriminators
                .push((kind.to_string(), path.to_string()));
        }
    }
    rule.closed = element["slicing"]["rules"] == "closed";
    rule
}

/// One element found in the resource: its JSON key, value, FHIR type and path.
struct Found<'v> {
    key: String,
    value: &'v Value,
    type_code: String,
    path: String,
}

struct Checker<'c> {
    validator: &'c Validator,
    root: &'c Value,
    profile: &'c str,
}

impl Checker<'_> {
    /// The rules that apply to each value on its own: types, fixed and pattern values, binding,
    /// reference targets, invariants.
    fn values(
        &self,
        rule: &Rule,
        value: &Value,
        type_code: &str,
        path: &str,
        issues: &mut Vec<Issue>,
    ) {
        if let Some(fixed) = &rule.fixed
            && value != fixed
        {
            push(
                issues,
                Issue::error(
                    "value",
                    format!(
                        "The value must be exactly {fixed} (profile {})",
                        self.profile
                    ),
                )
                .at(path),
            );
        }
        if let Some(pattern) = &rule.pattern
            && !matches_pattern(value, pattern)
        {
            push(
                issues,
                Issue::error(
                    "value",
                    format!(
                        "The value must match the pattern {pattern} (profile {})",
                        self.profile
                    ),
                )
                .at(path),
            );
        }
        if let Some((strength, vs)) = &rule.binding {
            check_binding(vs, *strength, value, type_code, path, issues);
        }
        if type_code == "Reference" && !rule.targets.is_empty() {
            // a target profile not held here (US Core, SDOHCC) leaves the type open
            let allowed: Option<Vec<String>> = rule
                .targets
                .iter()
                .map(|url| self.target_type(url))
                .collect();
            if let Some(allowed) = allowed {
                check_target(value, &allowed, self.root, path, issues);
            }
        }
        for invariant in &rule.invariants {
            invariant.check(value, type_code, self.root, path, issues);
        }
    }

    /// The resource type a target profile constrains.
    fn target_type(&self, url: &str) -> Option<String> {
        if let Some(name) = url.strip_prefix("http://hl7.org/fhir/StructureDefinition/") {
            return Some(name.to_string());
        }
        self.validator.profile(url).map(|p| p.type_name.clone())
    }

    fn children(
        &self,
        node: &Node,
        value: &Value,
        type_code: &str,
        path: &str,
        issues: &mut Vec<Issue>,
    ) {
        if node.children.is_empty() {
            return;
        }
        for (name, child) in &node.children {
            let found = gather(value, type_code, name, path);
            self.element(name, child, &found, path, issues);
        }
    }

    /// The rules of one child element over everything found for it in one parent.
    fn element(
        &self,
        name: &str,
        node: &Node,
        found: &[Found],
        parent: &str,
        issues: &mut Vec<Issue>,
    ) {
        let label = format!("{parent}.{}", name.trim_end_matches("[x]"));
        self.cardinality(&node.rule, found.len(), &label, None, issues);
        if !node.rule.types.is_empty() && name.ends_with("[x]") {
            let prefix = name.trim_end_matches("[x]");
            for f in found {
                let allowed = node
                    .rule
                    .types
                    .iter()
                    .any(|t| f.key == format!("{prefix}{}", capitalize(t)));
                if !allowed {
                    push(
                        issues,
                        Issue::error(
                            "structure",
                            format!(
                                "{} is not allowed here: the profile {} allows {}",
                                f.key,
                                self.profile,
                                node.rule.types.join(", ")
                            ),
                        )
                        .at(&f.path),
                    );
                }
            }
        }
        for f in found {
            self.values(&node.rule, f.value, &f.type_code, &f.path, issues);
            self.children(node, f.value, &f.type_code, &f.path, issues);
        }
        if node.slices.is_empty() {
            return;
        }
        let mut claimed = vec![false; found.len()];
        for (slice_name, slice) in &node.slices {
            let Some(matched) = self.slice_members(name, &node.rule, slice_name, slice, found)
            else {
                continue;
            };
            for &at in &matched {
                if let Some(flag) = claimed.get_mut(at) {
                    *flag = true;
                }
            }
            let members: Vec<&Found> = matched.iter().filter_map(|&at| found.get(at)).collect();
            self.cardinality(&slice.rule, members.len(), &label, Some(slice_name), issues);
            for f in members {
                self.values(&slice.rule, f.value, &f.type_code, &f.path, issues);
                self.children(slice, f.value, &f.type_code, &f.path, issues);
            }
        }
        if node.rule.closed {
            for (f, matched) in found.iter().zip(claimed) {
                if !matched {
                    push(
                        issues,
                        Issue::error(
                            "structure",
                            format!("The element matches none of the slices of {label} (closed slicing, profile {})", self.profile),
                        )
                        .at(&f.path),
                    );
                }
            }
        }
    }

    fn cardinality(
        &self,
        rule: &Rule,
        count: usize,
        label: &str,
        slice: Option<&str>,
        issues: &mut Vec<Issue>,
    ) {
        let what = match slice {
            Some(slice) => format!("{label} (slice {slice})"),
            None => label.to_string(),
        };
        if let Some(min) = rule.min
            && (count as u64) < min
        {
            push(
                issues,
                Issue::error(
                    "required",
                    format!(
                        "{what} needs at least {min} value(s), found {count} (profile {})",
                        self.profile
                    ),
                )
                .at(label),
            );
        }
        if let Some(max) = rule.max
            && (count as u64) > max
        {
            push(
                issues,
                Issue::error(
                    "structure",
                    format!(
                        "{what} allows at most {max} value(s), found {count} (profile {})",
                        self.profile
                    ),
                )
                .at(label),
            );
        }
    }

    /// The positions in `found` that belong to a slice; `None` when its discriminators cannot be
    /// evaluated here (`profile`, `exists`), so that the slice is not checked at all.
    fn slice_members(
        &self,
        name: &str,
        parent: &Rule,
        slice_name: &str,
        slice: &Node,
        found: &[Found],
    ) -> Option<Vec<usize>> {
        if name.ends_with("[x]") {
            // a type slice: `value[x]:valueQuantity`
            return Some(
                found
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.key == slice_name)
                    .map(|(at, _)| at)
                    .collect(),
            );
        }
        // extensions are sliced by url unless said otherwise
        let implicit = [("value".to_string(), "url".to_string())];
        let discriminators = match parent.discriminators.as_slice() {
            [] if name == "extension" || name == "modifierExtension" => &implicit[..],
            [] => return None,
            list => list,
        };
        type Test<'t> = Box<dyn Fn(&Found) -> bool + 't>;
        let mut tests: Vec<Test<'_>> = Vec::new();
        for (kind, path) in discriminators {
            match kind.as_str() {
                "value" | "pattern" => {
                    let target = if path == "$this" {
                        Some(slice)
                    } else {
                        descend(slice, path)
                    };
                    let expected = target
                        .and_then(|n| n.rule.fixed.clone().or_else(|| n.rule.pattern.clone()));
                    let expected = expected.or_else(|| {
                        (path == "url")
                            .then(|| {
                                slice
                                    .rule
                                    .type_profiles
                                    .first()
                                    .map(|u| Value::String(u.clone()))
                            })
                            .flatten()
                    });
                    let path = path.clone();
                    match expected {
                        Some(expected) => tests.push(Box::new(move |f: &Found| {
                            at_path(f.value, &path)
                                .iter()
                                .any(|v| matches_pattern(v, &expected))
                        })),
                        None => {
                            let (strength, vs) = target.and_then(|n| n.rule.binding.clone())?;
                            if strength != Strength::Required {
                                return None;
                            }
                            tests.push(Box::new(move |f: &Found| {
                                at_path(f.value, &path).iter().any(|v| in_value_set(v, &vs))
                            }));
                        }
                    }
                }
                "type" => {
                    let target = if path == "$this" {
                        Some(slice)
                    } else {
                        descend(slice, path)
                    };
                    let types = target.map(|n| n.rule.types.clone()).unwrap_or_default();
                    if types.is_empty() {
                        continue;
                    }
                    let field = path.clone();
                    tests.push(Box::new(move |f: &Found| {
                        let Some(map) = f.value.as_object() else {
                            return false;
                        };
                        types.iter().any(|t| {
                            if field == "$this" {
                                f.type_code == *t
                            } else {
                                map.contains_key(&format!("{field}{}", capitalize(t)))
                            }
                        })
                    }));
                }
                _ => return None,
            }
        }
        Some(
            found
                .iter()
                .enumerate()
                .filter(|(_, f)| tests.iter().all(|t| t(f)))
                .map(|(at, _)| at)
                .collect(),
        )
    }
}

/// The node at a dotted path below `node` (`type`, `coding.system`).
fn descend<'n>(node: &'n Node, path: &str) -> Option<&'n Node> {
    let mut current = node;
    for segment in path.split('.') {
        current = current
            .children
            .iter()
            .find(|(name, _)| name == segment || name.trim_end_matches("[x]") == segment)
            .map(|(_, n)| n)?;
    }
    Some(current)
}

/// The values at a dotted path inside a JSON element (arrays flattened; `value` also finds the
/// variants of `value[x]`).
fn at_path<'v>(value: &'v Value, path: &str) -> Vec<&'v Value> {
    let mut current = vec![value];
    if path == "$this" {
        return current;
    }
    for segment in path.split('.') {
        let mut next = Vec::new();
        for v in current {
            let Some(map) = v.as_object() else { continue };
            let mut push_value = |member: &'v Value| match member {
                Value::Array(list) => next.extend(list.iter()),
                other => next.push(other),
            };
            match map.get(segment) {
                Some(member) => push_value(member),
                None => {
                    for (key, member) in map {
                        if key.len() > segment.len()
                            && key.starts_with(segment)
                            && key[segment.len()..].starts_with(|c: char| c.is_ascii_uppercase())
                        {
                            push_value(member);
                        }
                    }
                }
            }
        }
        current = next;
    }
    current
}

fn in_value_set(value: &Value, vs_url: &str) -> bool {
    let mut issues = Vec::new();
    let type_code = if value.is_string() {
        "code"
    } else if value.get("coding").is_some() {
        "CodeableConcept"
    } else {
        "Coding"
    };
    check_binding(
        vs_url,
        Strength::Required,
        value,
        type_code,
        "",
        &mut issues,
    );
    issues.is_empty()
}

/// FHIR pattern matching: every element of the pattern is in the value (arrays: each pattern
/// item matches some item of the value).
pub fn matches_pattern(value: &Value, pattern: &Value) -> bool {
    match (value, pattern) {
        (Value::Object(v), Value::Object(p)) => p
            .iter()
            .all(|(k, pv)| v.get(k).is_some_and(|vv| matches_pattern(vv, pv))),
        (Value::Array(v), Value::Array(p)) => p
            .iter()
            .all(|pi| v.iter().any(|vi| matches_pattern(vi, pi))),
        (Value::Array(v), p) => v.iter().any(|vi| matches_pattern(vi, p)),
        (v, p) => v == p,
    }
}

/// Everything `value` (of type `type_code`) holds for the element `name` (`value[x]`: every
/// variant), with paths.
fn gather<'v>(value: &'v Value, type_code: &str, name: &str, parent: &str) -> Vec<Found<'v>> {
    let Some(map) = value.as_object() else {
        return Vec::new();
    };
    let base = name.trim_end_matches("[x]");
    let mut found = Vec::new();
    for (key, key_type) in element_keys_ref(type_code, base) {
        let Some(member) = map.get(key) else {
            continue;
        };
        match member {
            Value::Array(list) => {
                for (i, item) in list.iter().enumerate() {
                    found.push(Found {
                        key: key.clone(),
                        value: item,
                        type_code: resource_or(item, key_type),
                        path: format!("{parent}.{key}[{i}]"),
                    });
                }
            }
            other => found.push(Found {
                key: key.clone(),
                value: other,
                type_code: resource_or(other, key_type),
                path: format!("{parent}.{key}"),
            }),
        }
    }
    found
}

fn resource_or(value: &Value, type_code: &str) -> String {
    if type_code == "Resource"
        && let Some(name) = value["resourceType"].as_str()
    {
        return name.to_string();
    }
    type_code.to_string()
}

fn capitalize(code: &str) -> String {
    let mut chars = code.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}
