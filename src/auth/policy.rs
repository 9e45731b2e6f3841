//! Program roles as data (`policy/access-policy.json`, replaceable with `--access-policy`):
//! which resources a community-based organization or a Pivot Entity reaches beyond what its
//! SMART scopes allow, and which elements it may change.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

const DEFAULT_POLICY: &str = include_str!("../../policy/access-policy.json");

#[derive(Debug, Clone, Deserialize, Default)]
pub struct Policy {
    #[serde(default)]
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Role {
    pub name: String,
    /// A search (`Type?criteria`) the token's fhirUser resource must match.
    #[serde(rename = "fhirUser")]
    pub fhir_user: String,
    /// Per resource type (or `*`), the search that limits what the role reaches.
    #[serde(default)]
    pub reach: BTreeMap<String, String>,
    #[serde(default, rename = "writableElements")]
    pub writable_elements: BTreeMap<String, Vec<String>>,
}

impl Policy {
    /// The policy from `path`, or the program's default.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Policy> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", path.display()))?,
            None => DEFAULT_POLICY.to_string(),
        };
        serde_json::from_str(&text)
            .map_err(|err| anyhow::anyhow!("the access policy is not valid: {err}"))
    }
}

/// Fills `{fhirUser}` and `{fhirUserId}` in a policy search.
pub fn substitute(template: &str, fhir_user: &str) -> String {
    let id = fhir_user.rsplit('/').next().unwrap_or(fhir_user);
    template
        .replace("{fhirUser}", fhir_user)
        .replace("{fhirUserId}", id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_loads() {
        let policy = Policy::load(None).unwrap_or_default();
        assert_eq!(
            policy
                .roles
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            vec!["cbo", "pivot-entity"]
        );
        assert_eq!(
            substitute("owner={fhirUser}&_id={fhirUserId}", "Organization/bank"),
            "owner=Organization/bank&_id=bank"
        );
    }
}
