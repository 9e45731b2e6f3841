//! The FHIR R4 model as this server uses it: resource type names, logical ids, instants,
//! strict parsing of client JSON and OperationOutcome.

pub mod instant;
pub mod outcome;
pub mod parse;
pub mod profiles;
pub mod structure;

pub use fhir_r4::RESOURCE_TYPES;

/// Whether `name` is a concrete R4 resource type (case-sensitive, as in URLs).
pub fn is_resource_type(name: &str) -> bool {
    RESOURCE_TYPES.binary_search(&name).is_ok()
}

/// Whether `id` is a valid logical id: 1 to 64 of `A-Z a-z 0-9 - .` (R4 `id` datatype).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A weak ETag for a version, `W/"3"`.
pub fn etag(version_id: i64) -> String {
    format!("W/\"{version_id}\"")
}

/// Reads the version from an `If-Match` / `If-None-Match` value: `W/"3"`, `"3"` or `3`.
pub fn parse_etag(value: &str) -> Option<i64> {
    let value = value.trim();
    let value = value.strip_prefix("W/").unwrap_or(value);
    let value = value.trim_matches('"');
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_types_are_sorted_for_binary_search() {
        assert!(RESOURCE_TYPES.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(is_resource_type("Patient"));
        assert!(is_resource_type("VisionPrescription"));
        assert!(!is_resource_type("patient"));
        assert!(!is_resource_type("DomainResource"));
    }

    #[test]
    fn ids_follow_the_r4_id_datatype() {
        assert!(is_valid_id("example-1.2"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("../etc"));
        assert!(!is_valid_id("a_b"));
    }

    #[test]
    fn etags_parse_in_weak_strong_and_bare_forms() {
        assert_eq!(parse_etag("W/\"3\""), Some(3));
        assert_eq!(parse_etag("\"12\""), Some(12));
        assert_eq!(parse_etag("7"), Some(7));
        assert_eq!(parse_etag("W/\"x\""), None);
        assert_eq!(etag(4), "W/\"4\"");
    }
}
