//! Entry points for fuzzing: each takes arbitrary bytes as a client could send them, runs them
//! through the server's own parsing and checking code, and must return without panicking, in
//! bounded time. The fuzz runner (`tests/fuzz.rs`, `scripts/fuzz.sh` for long runs) calls
//! these.

use std::sync::LazyLock;

use serde_json::{Value, json};

use crate::search::registry::Registry;

/// A fuzz target: takes any bytes, must not panic.
pub type Target = fn(&[u8]);

/// The fuzz targets by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("resource_json", resource_json),
    ("search_query", search_query),
    ("fhirpath", fhirpath),
    ("patch", patch),
    ("jwt", jwt),
    ("bundle_entries", bundle_entries),
];

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::r4);

/// A resource body as `POST /fhir/[type]` reads it: strict parsing, the structure check, index
/// extraction and validation.
pub fn resource_json(data: &[u8]) {
    let Ok(resource) = crate::fhir::parse::parse_resource(data, None) else {
        return;
    };
    let issues = crate::fhir::structure::check_resource(&resource);
    if issues
        .iter()
        .any(|issue| issue.severity == crate::fhir::outcome::Severity::Error)
    {
        return;
    }
    let value = Value::Object(resource);
    let _ = crate::search::extract::extract(&REGISTRY, &value);
    let _ = crate::validation::validator().validate(&value, &[]);
}

/// The resource types a search is tried on; the first byte picks one.
const SEARCH_TYPES: &[&str] = &[
    "Patient",
    "Observation",
    "Task",
    "ServiceRequest",
    "Condition",
    "Encounter",
    "Group",
];

/// A search query string: parsing with the R4 search parameters, then the SQL of both dialects.
pub fn search_query(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let resource_type = SEARCH_TYPES[usize::from(first) % SEARCH_TYPES.len()];
    let query = String::from_utf8_lossy(rest);
    let Ok(params) = serde_urlencoded::from_str::<Vec<(String, String)>>(&query) else {
        return;
    };
    for strict in [true, false] {
        let Ok(request) =
            crate::search::request::parse_request(&REGISTRY, resource_type, &params, strict)
        else {
            continue;
        };
        let spec = crate::store::search::SearchSpec {
            types: vec![resource_type.to_string()],
            conditions: request.conditions,
            sort: request.sort,
            after_pk: request.after_pk,
            before_pk: request.before_pk,
            offset: request.offset,
            limit: request.count + 1,
        };
        for sqlite in [true, false] {
            let _ = crate::store::search::search_sql(&spec, sqlite);
        }
    }
}

/// A resource to evaluate expressions and apply patches on.
static SAMPLE: LazyLock<Value> = LazyLock::new(|| {
    json!({"resourceType":"Patient","id":"p1","meta":{"versionId":"2","lastUpdated":"2026-01-02T03:04:05Z"},
        "extension":[{"url":"https://pivot-fhir.example.org/fhir/StructureDefinition/region","valueCode":"3"}],
        "identifier":[{"system":"urn:medicaid","value":"M1"},{"system":"urn:mrn","value":"7"}],
        "name":[{"family":"Ng","given":["Ana","B"]}],"gender":"female","birthDate":"1990-05-06",
        "telecom":[{"system":"phone","value":"555"}],
        "address":[{"line":["1 Main"],"city":"Jackson","postalCode":"39201","period":{"start":"2020"}}],
        "contact":[{"name":{"family":"Ng"},"telecom":[{"value":"1"}]}],
        "link":[{"other":{"reference":"Patient/p2"},"type":"seealso"}]})
});

/// A FHIRPath expression: parsing, then evaluation on a sample resource as a search parameter
/// and with the model checks.
pub fn fhirpath(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expression) = crate::fhirpath::parse(text) else {
        return;
    };
    let _ = crate::fhirpath::evaluate(&expression, &SAMPLE);
    let strict = crate::fhirpath::Options {
        semantic_checks: true,
        check_ordered_functions: true,
        ..crate::fhirpath::Options::default()
    };
    let _ = crate::fhirpath::evaluate_with(&expression, Some(&SAMPLE), &strict);
}

/// A PATCH body as JSON Patch, FHIRPath Patch (Parameters) and JSON Merge Patch, applied to a
/// sample resource; a patched resource goes on to the structure check.
pub fn patch(data: &[u8]) {
    let Ok(document) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut results = vec![crate::service::patch::apply_merge_patch(&SAMPLE, &document)];
    if let Ok(patched) = crate::service::patch::apply_json_patch(&SAMPLE, &document) {
        results.push(patched);
    }
    if let Ok(patched) = crate::service::patch::apply_fhirpath_patch(&SAMPLE, &document) {
        results.push(patched);
    }
    for patched in results {
        if let Value::Object(resource) = patched {
            let _ = crate::fhir::structure::check_resource(&resource);
        }
    }
}

/// The server's own signing key, made once in a temporary folder.
static KEY: LazyLock<Option<(tempfile_free::Folder, crate::auth::keys::SigningKey)>> =
    LazyLock::new(|| {
        let folder = tempfile_free::Folder::new()?;
        let key = crate::auth::keys::load_or_create(&folder.path).ok()?;
        Some((folder, key))
    });

/// A bearer token: header decoding, signature, algorithm and claims checks.
pub fn jwt(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((_, key)) = KEY.as_ref() {
        let _ = crate::auth::token::check(key, "pivot-fhir", "pivot-fhir", token);
    }
    let _ = jsonwebtoken::decode_header(token);
}

/// A batch or transaction Bundle: strict parsing and the reading of its entries.
pub fn bundle_entries(data: &[u8]) {
    let Ok(bundle) = crate::fhir::parse::parse_resource(data, Some("Bundle")) else {
        return;
    };
    let _ = crate::fhir::structure::check_resource(&bundle);
    if let Ok(entries) = crate::service::bundle::parse_entries(&bundle, 1000) {
        for entry in entries {
            if let Some(resource) = entry.resource {
                resource_json(Value::Object(resource).to_string().as_bytes());
            }
        }
    }
}

/// A folder removed on drop, without a dependency on a temporary-file crate.
mod tempfile_free {
    pub struct Folder {
        pub path: std::path::PathBuf,
    }

    impl Folder {
        pub fn new() -> Option<Folder> {
            let path = std::env::temp_dir().join(format!("pivot-fuzz-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).ok()?;
            Some(Folder { path })
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
