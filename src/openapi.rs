//! The OpenAPI 3.1 document, generated from one table: `ROUTES`, one entry per method and path the
//! server serves. An entry names its kind; the kind says what the route takes (parameters, media
//! types) and answers (status codes, the OperationOutcome of errors), so documenting a new route
//! is one line. A unit test fails when `api::routes` serves a method and path with no entry; another
//! (tests/api/openapi.rs) fails when `openapi/openapi.json` is not what this module generates.
//! The same table names each route's interaction for the metrics (`interaction_of`).

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Value, json};
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, ParameterStyle, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{ResponseBuilder, Responses, ResponsesBuilder};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ComponentsBuilder, ObjectBuilder, Ref, Schema, Type,
};
use utoipa::openapi::security::{
    ClientCredentials, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Scopes, SecurityRequirement,
    SecurityScheme,
};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{Content, InfoBuilder, OpenApi, OpenApiBuilder, Paths, RefOr, Required};

/// HTTP methods of the table (`HttpMethod` is not `const`-friendly across versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn parse(name: &str) -> Option<Method> {
        Some(match name.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => return None,
        })
    }

    fn http(self) -> HttpMethod {
        match self {
            Method::Get => HttpMethod::Get,
            Method::Head => HttpMethod::Head,
            Method::Post => HttpMethod::Post,
            Method::Put => HttpMethod::Put,
            Method::Patch => HttpMethod::Patch,
            Method::Delete => HttpMethod::Delete,
        }
    }
}

/// What a route is, which decides its parameters, bodies and answers.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Read,
    Vread,
    Create,
    Update,
    ConditionalUpdate,
    Patch,
    ConditionalPatch,
    Delete,
    ConditionalDelete,
    SearchType,
    SearchTypePost,
    SearchSystem,
    SearchCompartment,
    History,
    /// `POST [base]` with a batch or transaction Bundle.
    Bundle,
    Capabilities,
    /// An `$operation` called with GET: its input parameters in the query.
    OperationGet(&'static [Param]),
    /// An `$operation` called with POST: a Parameters resource (or the resource, for $validate).
    OperationPost,
    /// An asynchronous job's status (`202` while running, `200` with the outcome when done).
    JobStatus,
    JobCancel,
    Health,
    SmartConfiguration,
    Jwks,
    Token,
    /// Plain-text or JSON documents about the server (metrics, this document).
    Document(&'static str),
}

/// A query parameter of an operation called with GET.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub description: &'static str,
}

const fn p(name: &'static str, description: &'static str) -> Param {
    Param { name, description }
}

/// One route: method, path (as in `api::routes`, scope prefix included), operationId (also the
/// `interaction` label of the metrics), kind and summary.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub id: &'static str,
    pub kind: Kind,
    pub summary: &'static str,
}

const fn r(
    method: Method,
    path: &'static str,
    id: &'static str,
    kind: Kind,
    summary: &'static str,
) -> Route {
    Route {
        method,
        path,
        id,
        kind,
        summary,
    }
}

const EXPAND: &[Param] = &[
    p("url", "Canonical URL of the ValueSet"),
    p("filter", "Text filter on display and code"),
    p("count", "Codes to return"),
    p("offset", "Codes to skip"),
];
const VALIDATE_CODE: &[Param] = &[
    p("url", "Canonical URL of the ValueSet"),
    p("code", "The code"),
    p("system", "The code system"),
    p("display", "The display to check"),
];
const LOOKUP: &[Param] = &[p("system", "The code system"), p("code", "The code")];
const VALIDATE: &[Param] = &[
    p("profile", "Profile to validate against"),
    p("mode", "create | update | delete"),
];
const EVERYTHING: &[Param] = &[
    p("_since", "Only resources changed after this instant"),
    p("_type", "Only these resource types (comma-separated)"),
    p("_count", "Page size"),
];
const EXPORT: &[Param] = &[
    p(
        "_outputFormat",
        "application/fhir+ndjson | application/ndjson | ndjson",
    ),
    p("_since", "Only resources changed after this instant"),
    p("_type", "Only these resource types (comma-separated)"),
    p(
        "_typeFilter",
        "Type?search queries limiting a type (comma-separated)",
    ),
];
const EVALUATE_MEASURE: &[Param] = &[
    p("periodStart", "Start of the measurement period (date)"),
    p("periodEnd", "End of the measurement period (date)"),
    p(
        "subject",
        "Patient/[id] or Group/[id] (default: the whole program)",
    ),
    p("reportType", "individual | subject-list | summary"),
    p(
        "persist",
        "true: store the MeasureReport (201 with Location)",
    ),
];
const EVENTS: &[Param] = &[
    p("eventsSinceNumber", "First event number"),
    p("eventsUntilNumber", "Last event number"),
    p("content", "empty | id-only | full-resource"),
];

use Kind::*;
use Method::{
    Delete as DELETE, Get as GET, Head as HEAD, Patch as PATCH, Post as POST, Put as PUT,
};

/// Every route the server serves.
#[rustfmt::skip]
pub static ROUTES: &[Route] = &[
    r(GET, "/health", "health-live", Health, "Liveness: the process answers"),
    r(GET, "/health/ready", "health-ready", Health, "Readiness: the database answers"),
    r(GET, "/metrics", "metrics", Document("text/plain; version=0.0.4"), "Prometheus metrics"),
    r(GET, "/openapi.json", "openapi", Document("application/json"), "This OpenAPI document"),
    r(GET, "/docs", "docs-redirect", Document("text/html"), "Redirects to the API docs page"),
    r(GET, "/docs/{tail:.*}", "docs", Document("text/html"), "API docs page (Swagger UI) and its files"),
    r(GET, "/.well-known/smart-configuration", "smart-configuration", SmartConfiguration, "SMART App Launch configuration"),
    r(GET, "/fhir/.well-known/smart-configuration", "smart-configuration-fhir", SmartConfiguration, "SMART App Launch configuration (under the FHIR base)"),
    r(GET, "/auth/jwks", "jwks", Jwks, "The public keys that sign this server's tokens"),
    r(POST, "/auth/token", "token", Token, "OAuth 2.0 token endpoint (SMART Backend Services, client_credentials with a signed JWT assertion)"),
    r(GET, "/fhir/metadata", "capabilities", Capabilities, "CapabilityStatement"),
    r(GET, "/fhir", "search-system", SearchSystem, "Search all resource types"),
    r(POST, "/fhir", "batch-transaction", Bundle, "Batch or transaction Bundle"),
    r(POST, "/fhir/$reindex", "reindex-all", OperationPost, "Rebuild the search index of every type (asynchronous job)"),
    r(GET, "/fhir/_job/{id}", "job-status", JobStatus, "Status of an asynchronous job"),
    r(DELETE, "/fhir/_job/{id}", "job-cancel", JobCancel, "Cancel an asynchronous job"),
    r(GET, "/fhir/Patient/{id}/$everything", "patient-everything", OperationGet(EVERYTHING), "A patient's whole record (searchset Bundle)"),
    r(POST, "/fhir/Patient/{id}/$everything", "patient-everything-post", OperationPost, "A patient's whole record (searchset Bundle)"),
    r(GET, "/fhir/$export", "export-system", OperationGet(EXPORT), "Bulk Data export of every type (Prefer: respond-async)"),
    r(POST, "/fhir/$export", "export-system-post", OperationPost, "Bulk Data export of every type (Prefer: respond-async)"),
    r(GET, "/fhir/Patient/$export", "export-patients", OperationGet(EXPORT), "Bulk Data export of all patients' compartments"),
    r(POST, "/fhir/Patient/$export", "export-patients-post", OperationPost, "Bulk Data export of all patients' compartments"),
    r(GET, "/fhir/Group/{id}/$export", "export-group", OperationGet(EXPORT), "Bulk Data export of a Group's members' compartments"),
    r(POST, "/fhir/Group/{id}/$export", "export-group-post", OperationPost, "Bulk Data export of a Group's members' compartments"),
    r(GET, "/fhir/_export/{id}", "export-status", JobStatus, "Status of a Bulk Data export: 202 with X-Progress, then 200 with the manifest"),
    r(DELETE, "/fhir/_export/{id}", "export-cancel", JobCancel, "Cancel a Bulk Data export and delete its files"),
    r(GET, "/fhir/_export/{id}/{file}", "export-file", Document("application/fhir+ndjson"), "One output file of a Bulk Data export"),
    r(GET, "/fhir/Measure/{id}/$evaluate-measure", "evaluate-measure", OperationGet(EVALUATE_MEASURE), "A program measure's MeasureReport, stratified by region, Pivot Entity and eligibility category"),
    r(POST, "/fhir/Measure/{id}/$evaluate-measure", "evaluate-measure-post", OperationPost, "A program measure's MeasureReport (parameters in a Parameters body)"),
    r(GET, "/dashboard", "dashboard", Document("text/html"), "The program dashboard (sign-in form without a session)"),
    r(POST, "/dashboard/session", "dashboard-session", Document("text/html"), "Signs in to the dashboard with a token (form field token); sets an HttpOnly cookie"),
    r(POST, "/dashboard/logout", "dashboard-logout", Document("text/html"), "Signs out of the dashboard"),
    r(GET, "/fhir/_history", "history-system", History, "History of all resources"),
    r(GET, "/fhir/AuditEvent", "audit-search", SearchType, "Search the audit trail (administrators)"),
    r(GET, "/fhir/AuditEvent/_search", "audit-search-get", SearchType, "Search the audit trail (administrators)"),
    r(GET, "/fhir/AuditEvent/{id}", "audit-read", Read, "Read an audit event (administrators)"),
    r(GET, "/fhir/{type}", "search-type", SearchType, "Search a resource type"),
    r(POST, "/fhir/{type}", "create", Create, "Create a resource (conditional with If-None-Exist)"),
    r(PUT, "/fhir/{type}", "update-conditional", ConditionalUpdate, "Conditional update"),
    r(PATCH, "/fhir/{type}", "patch-conditional", ConditionalPatch, "Conditional patch"),
    r(DELETE, "/fhir/{type}", "delete-conditional", ConditionalDelete, "Conditional delete"),
    r(POST, "/fhir/{type}/$reindex", "reindex-type", OperationPost, "Rebuild the search index of one type (asynchronous job)"),
    r(GET, "/fhir/ValueSet/$expand", "valueset-expand", OperationGet(EXPAND), "Expand a ValueSet"),
    r(POST, "/fhir/ValueSet/$expand", "valueset-expand-post", OperationPost, "Expand a ValueSet"),
    r(GET, "/fhir/ValueSet/$validate-code", "valueset-validate-code", OperationGet(VALIDATE_CODE), "Is a code in a ValueSet"),
    r(POST, "/fhir/ValueSet/$validate-code", "valueset-validate-code-post", OperationPost, "Is a code in a ValueSet"),
    r(GET, "/fhir/CodeSystem/$lookup", "codesystem-lookup", OperationGet(LOOKUP), "Look up a code"),
    r(POST, "/fhir/CodeSystem/$lookup", "codesystem-lookup-post", OperationPost, "Look up a code"),
    r(GET, "/fhir/ValueSet/{id}/$expand", "valueset-expand-instance", OperationGet(EXPAND), "Expand a stored ValueSet"),
    r(POST, "/fhir/ValueSet/{id}/$expand", "valueset-expand-instance-post", OperationPost, "Expand a stored ValueSet"),
    r(GET, "/fhir/ValueSet/{id}/$validate-code", "valueset-validate-code-instance", OperationGet(VALIDATE_CODE), "Is a code in a stored ValueSet"),
    r(POST, "/fhir/ValueSet/{id}/$validate-code", "valueset-validate-code-instance-post", OperationPost, "Is a code in a stored ValueSet"),
    r(POST, "/fhir/{type}/$validate", "validate-type", OperationPost, "Validate a resource"),
    r(GET, "/fhir/{type}/{id}/$validate", "validate-instance", OperationGet(VALIDATE), "Validate a stored resource"),
    r(POST, "/fhir/{type}/{id}/$validate", "validate-instance-post", OperationPost, "Validate a stored resource"),
    r(POST, "/fhir/{type}/_search", "search-type-post", SearchTypePost, "Search a resource type (form body)"),
    r(GET, "/fhir/{type}/_search", "search-type-get", SearchType, "Search a resource type"),
    r(GET, "/fhir/{type}/_history", "history-type", History, "History of a resource type"),
    r(GET, "/fhir/{type}/{id}", "read", Read, "Read a resource"),
    r(HEAD, "/fhir/{type}/{id}", "read-head", Read, "Read a resource's headers"),
    r(PUT, "/fhir/{type}/{id}", "update", Update, "Update (or create with a client id)"),
    r(PATCH, "/fhir/{type}/{id}", "patch", Patch, "Patch (JSON Patch, FHIRPath Patch or JSON Merge Patch)"),
    r(DELETE, "/fhir/{type}/{id}", "delete", Delete, "Delete"),
    r(GET, "/fhir/Subscription/{id}/$events", "subscription-events", OperationGet(EVENTS), "Past notifications of a topic-based Subscription"),
    r(GET, "/fhir/{type}/{id}/_history", "history-instance", History, "History of a resource"),
    r(GET, "/fhir/{compartment}/{id}/{type}", "search-compartment", SearchCompartment, "Search in a Patient compartment"),
    r(GET, "/fhir/{type}/{id}/_history/{version}", "vread", Vread, "Read a version"),
    r(HEAD, "/fhir/{type}/{id}/_history/{version}", "vread-head", Vread, "Read a version's headers"),
];

/// `(method, actix route pattern)` → operationId, for the metrics' `interaction` label.
static BY_PATTERN: LazyLock<HashMap<(Method, &'static str), &'static str>> =
    LazyLock::new(|| ROUTES.iter().map(|r| ((r.method, r.path), r.id)).collect());

/// The interaction of a request, from its method and matched route pattern.
pub fn interaction_of(method: &str, pattern: &str) -> Option<&'static str> {
    let method = Method::parse(method)?;
    let pattern = normalize(pattern);
    BY_PATTERN
        .get(&(method, pattern.as_str()))
        .or_else(|| {
            // actix answers HEAD on GET routes too
            (method == Method::Head)
                .then(|| BY_PATTERN.get(&(Method::Get, pattern.as_str())))
                .flatten()
        })
        .copied()
}

/// `/fhir/` and `/fhir` are one route.
pub fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// A route pattern as an OpenAPI path: `{tail:.*}` is `{tail}`.
fn openapi_path(pattern: &str) -> String {
    normalize(pattern)
        .split('/')
        .map(|segment| match segment.split_once(':') {
            Some((name, _)) if segment.starts_with('{') => format!("{name}}}"),
            _ => segment.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

const FHIR_JSON: &str = "application/fhir+json";

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn fhir_content(schema: &str) -> Content {
    Content::new(Some(schema_ref(schema)))
}

fn path_param(name: &str) -> ParameterBuilder {
    let (schema, description): (Schema, &str) = match name {
        "type" => (
            string()
                .enum_values(Some(crate::fhir::RESOURCE_TYPES.iter().copied()))
                .into(),
            "A FHIR R4 resource type",
        ),
        "compartment" => (
            string().enum_values(Some(["Patient"])).into(),
            "The compartment type (Patient)",
        ),
        "id" => (
            string().pattern(Some("^[A-Za-z0-9\\-.]{1,64}$")).into(),
            "Logical id",
        ),
        "version" => (string().pattern(Some("^[0-9]{1,18}$")).into(), "Version id"),
        "tail" => (string().into(), "A file of the page, e.g. index.html"),
        _ => (string().into(), ""),
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema))
}

fn query(name: &str, description: &str) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(string()))
}

fn header(name: &str, description: &str) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(string()))
}

/// Search parameters: the common ones by name, the type's own as free-form `name=value` pairs.
fn search_params() -> Vec<ParameterBuilder> {
    vec![
        query("_id", "Logical ids, comma-separated"),
        query("_lastUpdated", "Date range, e.g. ge2026-01-01"),
        query("_count", "Page size"),
        query("_sort", "Sort keys, comma-separated, '-' for descending"),
        query(
            "_include",
            "Referenced resources to include, e.g. Task:patient",
        ),
        query("_revinclude", "Referring resources to include"),
        query("_summary", "true | count | data | text | false"),
        query("_elements", "Elements to return, comma-separated"),
        query("_total", "none | estimate | accurate"),
        ParameterBuilder::new()
            .name("criteria")
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some(
                "The type's search parameters (see the CapabilityStatement), with modifiers \
                 and chains, as name=value pairs",
            ))
            .style(Some(ParameterStyle::Form))
            .explode(Some(true))
            .schema(Some(ObjectBuilder::new().additional_properties(Some(
                AdditionalProperties::from(string()),
            )))),
    ]
}

fn format_params() -> Vec<ParameterBuilder> {
    vec![
        query("_format", "json | application/fhir+json"),
        query("_pretty", "true | false"),
    ]
}

/// Shared error answers (components/responses), each an OperationOutcome.
const ERRORS: &[(&str, &str)] = &[
    (
        "400",
        "Bad request: malformed JSON, unknown element, bad parameter",
    ),
    ("401", "No valid bearer token"),
    ("403", "The token's scopes do not allow this"),
    ("404", "No such resource, type or route"),
    ("405", "Method not allowed on this URL"),
    (
        "406",
        "Not acceptable: the server produces application/fhir+json",
    ),
    ("409", "Conflict with the current state"),
    ("410", "Deleted"),
    (
        "412",
        "Precondition failed (If-Match, or several conditional matches)",
    ),
    ("413", "Body larger than the configured limit"),
    ("415", "Unsupported media type"),
    ("422", "Unprocessable: profile or business rule"),
    ("503", "The database is unavailable or overloaded"),
];

fn error_ref(code: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::Ref(Ref::from_response_name(format!("Error{code}")))
}

fn responses(ok: Vec<(&str, ResponseBuilder)>, errors: &[&str]) -> Responses {
    let mut builder = ResponsesBuilder::new();
    for (code, response) in ok {
        builder = builder.response(code, response);
    }
    for code in errors {
        builder = builder.response(*code, error_ref(code));
    }
    builder.build()
}

fn fhir_ok(description: &str, schema: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content(FHIR_JSON, fhir_content(schema))
}

fn json_ok(description: &str, schema: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", fhir_content(schema))
}

fn fhir_body(schema: &str, description: &str) -> RequestBodyBuilder {
    RequestBodyBuilder::new()
        .description(Some(description))
        .required(Some(Required::True))
        .content(FHIR_JSON, fhir_content(schema))
        .content("application/json", fhir_content(schema))
}

/// Query, header, body and answers of a route of kind `kind`.
fn describe(route: &Route) -> OperationBuilder {
    let mut op = OperationBuilder::new()
        .operation_id(Some(route.id))
        .summary(Some(route.summary));
    for segment in route.path.split('/') {
        if let Some(name) = segment
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .map(|s| s.split(':').next().unwrap_or(s))
        {
            op = op.parameter_ref(Ref::new(format!("#/components/parameters/{name}")));
        }
    }
    let reads = ["400", "401", "403", "404", "406", "503"];
    let writes = [
        "400", "401", "403", "404", "406", "409", "412", "413", "415", "422", "503",
    ];
    let (tag, secured) = match route.kind {
        Health | Document(_) => ("operations", false),
        SmartConfiguration | Jwks | Token => ("auth", false),
        Capabilities => ("fhir", false),
        OperationGet(_) | OperationPost | JobStatus | JobCancel => ("operations", true),
        _ => ("fhir", true),
    };
    op = op.tag(tag);
    if secured {
        op = op
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .security(SecurityRequirement::new("smart", Vec::<String>::new()));
    }
    match route.kind {
        Read | Vread => {
            let op = format_params()
                .into_iter()
                .chain([
                    query("_summary", "true | data | text | false"),
                    query("_elements", "Elements to return, comma-separated"),
                    header("If-None-Match", "ETag (W/\"version\"): 304 if unchanged"),
                    header("If-Modified-Since", "HTTP date: 304 if not modified since"),
                ])
                .fold(op, OperationBuilder::parameter);
            op.responses(responses(
                vec![
                    (
                        "200",
                        fhir_ok("The resource (ETag and Last-Modified headers)", "Resource"),
                    ),
                    ("304", ResponseBuilder::new().description("Not modified")),
                ],
                &["400", "401", "403", "404", "406", "410", "503"],
            ))
        }
        Create => op
            .parameter(header(
                "If-None-Exist",
                "Search criteria: create only if none match",
            ))
            .parameter(header(
                "Prefer",
                "return=minimal | representation | OperationOutcome",
            ))
            .request_body(Some(fhir_body("Resource", "The resource").build()))
            .responses(responses(
                vec![
                    ("201", fhir_ok("Created (Location, ETag)", "Resource")),
                    (
                        "200",
                        fhir_ok("A resource matched If-None-Exist", "Resource"),
                    ),
                ],
                &writes,
            )),
        Update | ConditionalUpdate => {
            let op = if matches!(route.kind, ConditionalUpdate) {
                search_params()
                    .into_iter()
                    .fold(op, OperationBuilder::parameter)
            } else {
                op
            };
            op.parameter(header("If-Match", "ETag of the version being replaced"))
                .parameter(header(
                    "Prefer",
                    "return=minimal | representation | OperationOutcome",
                ))
                .request_body(Some(fhir_body("Resource", "The new version").build()))
                .responses(responses(
                    vec![
                        ("200", fhir_ok("Updated", "Resource")),
                        ("201", fhir_ok("Created", "Resource")),
                    ],
                    &writes,
                ))
        }
        Patch | ConditionalPatch => {
            let op = if matches!(route.kind, ConditionalPatch) {
                search_params()
                    .into_iter()
                    .fold(op, OperationBuilder::parameter)
            } else {
                op
            };
            op.parameter(header("If-Match", "ETag of the version being patched"))
                .request_body(Some(
                    RequestBodyBuilder::new()
                        .required(Some(Required::True))
                        .description(Some(
                            "JSON Patch, FHIRPath Patch (Parameters) or JSON Merge Patch",
                        ))
                        .content("application/json-patch+json", fhir_content("JsonPatch"))
                        .content(FHIR_JSON, fhir_content("Parameters"))
                        .content("application/merge-patch+json", fhir_content("Object"))
                        .build(),
                ))
                .responses(responses(
                    vec![("200", fhir_ok("Patched", "Resource"))],
                    &writes,
                ))
        }
        Delete | ConditionalDelete => {
            let op = if matches!(route.kind, ConditionalDelete) {
                search_params()
                    .into_iter()
                    .fold(op, OperationBuilder::parameter)
            } else {
                op
            };
            op.responses(responses(
                vec![
                    ("200", fhir_ok("Deleted", "OperationOutcome")),
                    ("204", ResponseBuilder::new().description("Deleted")),
                ],
                &["400", "401", "403", "404", "409", "412", "503"],
            ))
        }
        SearchType | SearchSystem | SearchCompartment => search_params()
            .into_iter()
            .chain(format_params())
            .fold(op, OperationBuilder::parameter)
            .responses(responses(
                vec![("200", fhir_ok("A searchset Bundle", "Bundle"))],
                &reads,
            )),
        SearchTypePost => op
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::False))
                    .description(Some("Search parameters as a form"))
                    .content(
                        "application/x-www-form-urlencoded",
                        Content::new(Some(
                            ObjectBuilder::new()
                                .additional_properties(Some(AdditionalProperties::from(string()))),
                        )),
                    )
                    .build(),
            ))
            .responses(responses(
                vec![("200", fhir_ok("A searchset Bundle", "Bundle"))],
                &["400", "401", "403", "404", "406", "415", "503"],
            )),
        History => op
            .parameter(query("_count", "Page size"))
            .parameter(query("_since", "Only versions after this instant"))
            .parameter(query("_at", "Versions current at this time"))
            .responses(responses(
                vec![("200", fhir_ok("A history Bundle", "Bundle"))],
                &reads,
            )),
        Bundle => op
            .request_body(Some(
                fhir_body("Bundle", "A batch or transaction Bundle").build(),
            ))
            .responses(responses(
                vec![(
                    "200",
                    fhir_ok("batch-response or transaction-response Bundle", "Bundle"),
                )],
                &writes,
            )),
        Capabilities => format_params()
            .into_iter()
            .chain([query("mode", "full | normative | terminology")])
            .fold(op, OperationBuilder::parameter)
            .responses(responses(
                vec![("200", fhir_ok("The CapabilityStatement", "Resource"))],
                &["400", "406"],
            )),
        OperationGet(params) => params
            .iter()
            .map(|p| query(p.name, p.description))
            .fold(op, OperationBuilder::parameter)
            .responses(responses(
                vec![(
                    "200",
                    fhir_ok(
                        "The result (Parameters, a resource or an OperationOutcome)",
                        "Resource",
                    ),
                )],
                &["400", "401", "403", "404", "422", "503"],
            )),
        OperationPost => op
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::False))
                    .description(Some("Parameters (or, for $validate, the resource)"))
                    .content(FHIR_JSON, fhir_content("Resource"))
                    .build(),
            ))
            .responses(responses(
                vec![
                    (
                        "200",
                        fhir_ok(
                            "The result (Parameters, a resource or an OperationOutcome)",
                            "Resource",
                        ),
                    ),
                    (
                        "202",
                        ResponseBuilder::new().description(
                            "Accepted: an asynchronous job (Content-Location: its status URL)",
                        ),
                    ),
                ],
                &["400", "401", "403", "404", "409", "415", "422", "503"],
            )),
        JobStatus => op.responses(responses(
            vec![
                ("200", fhir_ok("Done: the outcome", "OperationOutcome")),
                (
                    "202",
                    ResponseBuilder::new().description("Still running (X-Progress)"),
                ),
            ],
            &["400", "401", "403", "404", "503"],
        )),
        JobCancel => op.responses(responses(
            vec![("202", ResponseBuilder::new().description("Cancelled"))],
            &["400", "401", "403", "404", "503"],
        )),
        Health => op.responses(responses(
            vec![
                ("200", json_ok("Up", "Health")),
                ("503", json_ok("The database does not answer", "Health")),
            ],
            &[],
        )),
        SmartConfiguration => op.responses(responses(
            vec![("200", json_ok("SMART configuration", "Object"))],
            &[],
        )),
        Jwks => op.responses(responses(
            vec![("200", json_ok("A JWK Set", "Object"))],
            &[],
        )),
        Token => op
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/x-www-form-urlencoded",
                        Content::new(Some(schema_ref("TokenRequest"))),
                    )
                    .build(),
            ))
            .responses(responses(
                vec![
                    ("200", json_ok("An access token", "TokenResponse")),
                    ("400", json_ok("OAuth 2.0 error", "OAuthError")),
                    (
                        "401",
                        json_ok("OAuth 2.0 error (invalid_client)", "OAuthError"),
                    ),
                    (
                        "503",
                        json_ok("OAuth 2.0 error (temporarily_unavailable)", "OAuthError"),
                    ),
                ],
                &[],
            )),
        Document(media) => op.responses(responses(
            vec![(
                "200",
                ResponseBuilder::new()
                    .description("The document")
                    .content(media, Content::new(Some(string()))),
            )],
            &[],
        )),
    }
}

fn components() -> utoipa::openapi::Components {
    let coding = || {
        ObjectBuilder::new()
            .property("system", string())
            .property("code", string())
            .property("display", string())
    };
    let issue = ObjectBuilder::new()
        .property(
            "severity",
            string().enum_values(Some(["fatal", "error", "warning", "information"])),
        )
        .property(
            "code",
            string().description(Some("IssueType, e.g. invalid, not-found, forbidden")),
        )
        .property(
            "details",
            ObjectBuilder::new()
                .property("coding", ArrayBuilder::new().items(coding()))
                .property("text", string()),
        )
        .property("diagnostics", string())
        .property("expression", ArrayBuilder::new().items(string()))
        .required("severity")
        .required("code");
    let outcome = ObjectBuilder::new()
        .description(Some("Every error answer of the FHIR API"))
        .property(
            "resourceType",
            string().enum_values(Some(["OperationOutcome"])),
        )
        .property("issue", ArrayBuilder::new().items(issue).min_items(Some(1)))
        .required("resourceType")
        .required("issue");
    let resource = ObjectBuilder::new()
        .description(Some("A FHIR R4 resource (https://hl7.org/fhir/R4/)"))
        .property("resourceType", string())
        .property("id", string())
        .property(
            "meta",
            ObjectBuilder::new()
                .property("versionId", string())
                .property("lastUpdated", string())
                .property("profile", ArrayBuilder::new().items(string())),
        )
        .required("resourceType")
        .additional_properties(Some(AdditionalProperties::FreeForm(true)));
    let bundle = ObjectBuilder::new()
        .property("resourceType", string().enum_values(Some(["Bundle"])))
        .property(
            "type",
            string().enum_values(Some([
                "searchset",
                "history",
                "batch",
                "transaction",
                "batch-response",
                "transaction-response",
                "collection",
            ])),
        )
        .property("total", ObjectBuilder::new().schema_type(Type::Integer))
        .property(
            "link",
            ArrayBuilder::new().items(
                ObjectBuilder::new()
                    .property("relation", string())
                    .property("url", string()),
            ),
        )
        .property(
            "entry",
            ArrayBuilder::new().items(
                ObjectBuilder::new()
                    .property("fullUrl", string())
                    .property("resource", schema_ref("Resource"))
                    .additional_properties(Some(AdditionalProperties::FreeForm(true))),
            ),
        )
        .required("resourceType")
        .required("type")
        .additional_properties(Some(AdditionalProperties::FreeForm(true)));
    let parameters = ObjectBuilder::new()
        .property("resourceType", string().enum_values(Some(["Parameters"])))
        .property(
            "parameter",
            ArrayBuilder::new().items(
                ObjectBuilder::new()
                    .property("name", string())
                    .required("name")
                    .additional_properties(Some(AdditionalProperties::FreeForm(true))),
            ),
        )
        .required("resourceType");
    let json_patch = ArrayBuilder::new().items(
        ObjectBuilder::new()
            .property(
                "op",
                string().enum_values(Some(["add", "remove", "replace", "move", "copy", "test"])),
            )
            .property("path", string())
            .property("from", string())
            .property("value", ObjectBuilder::new().schema_type(Type::Object))
            .required("op")
            .required("path"),
    );
    let health = ObjectBuilder::new()
        .property("status", string())
        .property("database", string());
    let token_request = ObjectBuilder::new()
        .property(
            "grant_type",
            string().enum_values(Some(["client_credentials"])),
        )
        .property("scope", string())
        .property(
            "client_assertion_type",
            string().enum_values(Some([
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ])),
        )
        .property("client_assertion", string())
        .required("grant_type")
        .required("scope")
        .required("client_assertion_type")
        .required("client_assertion");
    let token_response = ObjectBuilder::new()
        .property("access_token", string())
        .property("token_type", string())
        .property(
            "expires_in",
            ObjectBuilder::new().schema_type(Type::Integer),
        )
        .property("scope", string());
    let oauth_error = ObjectBuilder::new()
        .property("error", string())
        .property("error_description", string());
    let mut components = ComponentsBuilder::new()
        .schema("OperationOutcome", outcome)
        .schema("Resource", resource)
        .schema("Bundle", bundle)
        .schema("Parameters", parameters)
        .schema("JsonPatch", json_patch)
        .schema(
            "Object",
            ObjectBuilder::new().additional_properties(Some(AdditionalProperties::FreeForm(true))),
        )
        .schema("Health", health)
        .schema("TokenRequest", token_request)
        .schema("TokenResponse", token_response)
        .schema("OAuthError", oauth_error)
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A SMART access token: scopes such as system/*.cruds, \
                         user/Task.rs or patient/Observation.rs decide what it may do",
                    ))
                    .build(),
            ),
        )
        .security_scheme(
            "smart",
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::ClientCredentials(ClientCredentials::new(
                    "/auth/token",
                    Scopes::from_iter([
                        ("system/*.cruds", "Everything (administrators)"),
                        ("system/*.rs", "Read and search everything"),
                        ("user/*.rs", "Read and search what the user may see"),
                        ("patient/*.rs", "Read and search the launch patient's data"),
                    ]),
                ))],
                "SMART Backend Services: a client_credentials grant with a signed JWT \
                 (private_key_jwt) at /auth/token",
            )),
        );
    for name in ["type", "compartment", "id", "version", "tail"] {
        components = components.parameter(name, RefOr::T(path_param(name).build()));
    }
    for (code, description) in ERRORS {
        components = components.response(
            format!("Error{code}"),
            ResponseBuilder::new()
                .description(*description)
                .content(FHIR_JSON, fhir_content("OperationOutcome")),
        );
    }
    components.build()
}

/// The OpenAPI document of this server.
pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    for route in ROUTES {
        let path = openapi_path(route.path);
        let item = PathItem::new(route.method.http(), describe(route));
        match paths.paths.get_mut(&path) {
            Some(existing) => existing.merge_operations(item),
            None => {
                paths.paths.insert(path, item);
            }
        }
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("pivot-fhir")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "FHIR R4 server for Medicaid care coordination and closed-loop SDOH \
                     referrals. Resources are application/fhir+json; every error of the FHIR \
                     API is an OperationOutcome. The CapabilityStatement (GET /fhir/metadata) \
                     lists each type's interactions and search parameters.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components()))
        .tags(Some([
            TagBuilder::new()
                .name("fhir")
                .description(Some("FHIR RESTful interactions"))
                .build(),
            TagBuilder::new()
                .name("operations")
                .description(Some("FHIR operations, jobs and server operation"))
                .build(),
            TagBuilder::new()
                .name("auth")
                .description(Some("SMART on FHIR and OAuth 2.0"))
                .build(),
        ]))
        .build()
}

/// The document as committed in `openapi/openapi.json`: pretty JSON and a final newline.
pub fn document_json() -> String {
    let value: Value = serde_json::to_value(document()).unwrap_or_else(|_| json!({}));
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `(method, path)` registered in `api::routes`, read from its source: string literals of
    /// `web::resource(..)` under the enclosing `web::scope(..)` prefixes, and the methods of the
    /// `web::get()`-style routes that follow until the next resource.
    fn served_routes() -> Vec<(Method, String)> {
        let source = include_str!("api/mod.rs");
        let start = source.find("pub fn routes").unwrap_or(0);
        let text = &source[start..];
        let bytes = text.as_bytes();
        let mut depth: i32 = 0;
        let mut scopes: Vec<(String, i32)> = Vec::new();
        let mut current: Vec<String> = Vec::new();
        let mut served = Vec::new();
        let mut i = 0;
        // the body of `routes` ends at the first line that is just "}"
        let end = text.find("\n}\n").unwrap_or(text.len());
        while i < end {
            let rest = &text[i..];
            if rest.starts_with("web::scope(") || rest.starts_with("web::resource(") {
                let is_scope = rest.starts_with("web::scope(");
                let open = i + rest.find('(').unwrap_or(0);
                // the literals up to the matching ')'
                let mut level = 0;
                let mut j = open;
                let mut literals = Vec::new();
                while j < end {
                    match bytes[j] {
                        b'(' | b'[' => level += 1,
                        b')' | b']' => {
                            level -= 1;
                            if level == 0 {
                                break;
                            }
                        }
                        b'"' => {
                            let close = text[j + 1..].find('"').map(|k| j + 1 + k).unwrap_or(end);
                            literals.push(text[j + 1..close].to_string());
                            j = close;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                let prefix: String = scopes.iter().map(|(p, _)| p.as_str()).collect();
                if is_scope {
                    // its services are chained after it, inside the same enclosing parenthesis
                    scopes.push((literals.concat(), depth));
                    i = j + 1;
                    continue;
                }
                current = literals.iter().map(|l| format!("{prefix}{l}")).collect();
                i = j + 1;
                continue;
            }
            for (token, method) in [
                ("web::get()", Method::Get),
                ("web::head()", Method::Head),
                ("web::post()", Method::Post),
                ("web::put()", Method::Put),
                ("web::patch()", Method::Patch),
                ("web::delete()", Method::Delete),
            ] {
                if rest.starts_with(token) {
                    for path in &current {
                        served.push((method, normalize(path)));
                    }
                }
            }
            match bytes[i] {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    while scopes.last().is_some_and(|(_, d)| *d > depth) {
                        scopes.pop();
                    }
                }
                _ => {}
            }
            i += 1;
        }
        served
    }

    #[test]
    fn every_served_route_is_documented() {
        let served = served_routes();
        assert!(
            served.len() > 40,
            "the route table was not read: {served:?}"
        );
        let documented: std::collections::HashSet<(Method, String)> = ROUTES
            .iter()
            .map(|r| (r.method, normalize(r.path)))
            .collect();
        let missing: Vec<_> = served
            .iter()
            .filter(|route| !documented.contains(route))
            .collect();
        assert!(
            missing.is_empty(),
            "routes served by api::routes without an entry in openapi::ROUTES: {missing:?}"
        );
    }

    #[test]
    fn documented_routes_are_served_and_unique() {
        let served: std::collections::HashSet<(Method, String)> =
            served_routes().into_iter().collect();
        let mut seen = std::collections::HashSet::new();
        for route in ROUTES {
            assert!(seen.insert(route.id), "operationId {} twice", route.id);
            assert!(
                served.contains(&(route.method, normalize(route.path))),
                "{:?} {} is documented but not served",
                route.method,
                route.path
            );
        }
    }

    #[test]
    fn interactions_are_named_by_route_pattern() {
        assert_eq!(interaction_of("GET", "/fhir/{type}/{id}"), Some("read"));
        assert_eq!(
            interaction_of("HEAD", "/fhir/{type}/{id}"),
            Some("read-head")
        );
        assert_eq!(interaction_of("POST", "/fhir/"), Some("batch-transaction"));
        assert_eq!(interaction_of("GET", "/nowhere"), None);
        assert_eq!(interaction_of("GET", "/docs/{tail:.*}"), Some("docs"));
        assert_eq!(openapi_path("/docs/{tail:.*}"), "/docs/{tail}");
    }

    #[test]
    fn errors_are_operation_outcomes() {
        let doc = serde_json::to_value(document()).unwrap_or_default();
        let read = &doc["paths"]["/fhir/{type}/{id}"]["get"];
        assert_eq!(
            read["responses"]["404"]["$ref"],
            "#/components/responses/Error404"
        );
        assert_eq!(
            doc["components"]["responses"]["Error404"]["content"]["application/fhir+json"]["schema"]
                ["$ref"],
            "#/components/schemas/OperationOutcome"
        );
        assert!(read["security"].is_array());
    }
}
