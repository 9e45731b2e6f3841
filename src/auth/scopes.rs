//! SMART on FHIR scopes (App Launch 2.0 §scopes-and-launch-context): v1 (`patient/Observation.read`,
//! `user/*.write`, `system/*.*`) and v2 (`patient/Observation.rs`, `system/Patient.cruds`,
//! `patient/Observation.rs?category=sdoh`). Other scopes (openid, fhirUser, launch, offline_access)
//! carry no resource access and are ignored here.

/// Whose data a scope reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Only the `patient` of the launch context.
    Patient,
    /// What the user (`fhirUser`) may see.
    User,
    /// Everything (backend services).
    System,
}

/// The SMART v2 permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Permission {
    fn letter(self) -> char {
        match self {
            Permission::Create => 'c',
            Permission::Read => 'r',
            Permission::Update => 'u',
            Permission::Delete => 'd',
            Permission::Search => 's',
        }
    }
}

/// One resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub context: Context,
    /// `None` for `*`.
    pub resource_type: Option<String>,
    /// v2 letters, in `cruds` order.
    pub permissions: String,
    /// v2 query constraint (`?category=sdoh`), as query parameters.
    pub query: Vec<(String, String)>,
}

impl Scope {
    pub fn applies_to(&self, resource_type: &str) -> bool {
        self.resource_type
            .as_deref()
            .is_none_or(|t| t == resource_type)
    }

    pub fn grants(&self, permission: Permission) -> bool {
        self.permissions.contains(permission.letter())
    }
}

/// Parses one scope; `None` when it is not a resource scope (or is malformed).
pub fn parse_scope(text: &str) -> Option<Scope> {
    let (context, rest) = text.split_once('/')?;
    let context = match context {
        "patient" => Context::Patient,
        "user" => Context::User,
        "system" => Context::System,
        _ => return None,
    };
    let (resource, rest) = rest.split_once('.')?;
    let (permissions, query) = match rest.split_once('?') {
        Some((permissions, query)) => (
            permissions,
            serde_urlencoded::from_str::<Vec<(String, String)>>(query).ok()?,
        ),
        None => (rest, Vec::new()),
    };
    let resource_type = match resource {
        "*" => None,
        name if crate::fhir::is_resource_type(name) => Some(name.to_string()),
        _ => return None,
    };
    let permissions = match permissions {
        "read" => "rs".to_string(),
        "write" => "cud".to_string(),
        "*" => "cruds".to_string(),
        letters => {
            // v2: a subset of `cruds`, in that order, no repeats.
            let mut last = None;
            for c in letters.chars() {
                let position = "cruds".find(c)?;
                if last.is_some_and(|l| position <= l) {
                    return None;
                }
                last = Some(position);
            }
            if letters.is_empty() {
                return None;
            }
            letters.to_string()
        }
    };
    Some(Scope {
        context,
        resource_type,
        permissions,
        query,
    })
}

/// Parses a space-separated scope string, keeping the resource scopes.
pub fn parse_scopes(text: &str) -> Vec<Scope> {
    text.split_whitespace().filter_map(parse_scope).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_scopes_parse() {
        let scope = parse_scope("patient/Observation.read");
        assert_eq!(
            scope.map(|s| (s.context, s.resource_type, s.permissions)),
            Some((Context::Patient, Some("Observation".into()), "rs".into()))
        );
        assert_eq!(
            parse_scope("user/*.write").map(|s| s.permissions),
            Some("cud".into())
        );
        assert_eq!(
            parse_scope("system/*.*").map(|s| s.permissions),
            Some("cruds".into())
        );
        assert_eq!(
            parse_scope("system/Patient.cruds").map(|s| s.permissions),
            Some("cruds".into())
        );
        let constrained = parse_scope(
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|sdoh",
        );
        assert_eq!(
            constrained.map(|s| s.query),
            Some(vec![(
                "category".into(),
                "http://terminology.hl7.org/CodeSystem/observation-category|sdoh".into()
            )])
        );
    }

    #[test]
    fn malformed_scopes_grant_nothing() {
        for bad in [
            "patient/Observation.sr",
            "patient/Observation.rr",
            "patient/Nope.read",
            "admin/*.*",
            "openid",
            "patient/Observation",
            "patient/Observation.",
            "patient/Observation.x",
        ] {
            assert_eq!(parse_scope(bad), None, "{bad}");
        }
        assert!(
            parse_scope("patient/Observation.rs")
                .is_some_and(|s| s.grants(Permission::Search) && !s.grants(Permission::Create))
        );
    }
}
