//! HTTP: the route table, shared state and response building. Handlers are thin: they read the
//! request, call `service` and `store`, and shape the response.

pub mod audit;
pub mod dashboard;
pub mod headers;
pub mod interaction;
pub mod operation;
pub mod response;

use actix_web::{HttpRequest, HttpResponse, web};

pub use headers::FHIR_JSON;

use crate::error::FhirError;
use crate::store::Store;

/// State shared by every handler.
pub struct AppState {
    pub store: Store,
    pub auth: std::sync::Arc<crate::auth::Authenticator>,
    /// The search parameters in force.
    pub registry: std::sync::Arc<crate::service::search_parameters::RegistryHandle>,
    /// Configured public base URL (without `/fhir`), if any.
    pub base_url: Option<String>,
    pub max_body_bytes: usize,
    pub max_bundle_entries: usize,
    /// When the server started, as a FHIR instant (CapabilityStatement.date).
    pub started_at: String,
    pub audit: crate::service::audit::AuditTrail,
    /// Days after which an open referral is overdue (named query `overdue-referrals`).
    pub referral_overdue_days: u32,
    /// Request counters and latencies for `/metrics`.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl AppState {
    /// The FHIR base URL for absolute references in responses: the configured one, else the
    /// request's scheme and `Host`.
    pub fn fhir_base(&self, req: &HttpRequest) -> String {
        match &self.base_url {
            Some(base) => format!("{}/fhir", base.trim_end_matches('/')),
            None => {
                let info = req.connection_info();
                format!("{}://{}/fhir", info.scheme(), info.host())
            }
        }
    }
}

/// The route table.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use interaction::{
        bundle, capabilities, create, delete, health, history, patch, read, search, smart, token,
        update,
    };
    cfg.service(
        web::resource("/health")
            .route(web::get().to(health::live))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/health/ready")
            .route(web::get().to(health::ready))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource([
            "/.well-known/smart-configuration",
            "/fhir/.well-known/smart-configuration",
        ])
        .route(web::get().to(smart::configuration))
        .default_service(web::to(method_not_allowed)),
    )
    // operability: metrics and the API description (openapi::ROUTES documents every route)
    .service(
        web::resource("/metrics")
            .route(web::get().to(crate::metrics::render))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/openapi.json")
            .route(web::get().to(openapi_document))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/docs")
            .route(web::get().to(docs_redirect))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/docs/{tail:.*}")
            .route(web::get().to(docs_file))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/auth/jwks")
            .route(web::get().to(smart::jwks))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/auth/token")
            .app_data(web::PayloadConfig::new(64 * 1024))
            .route(web::post().to(token::token))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/dashboard")
            .route(web::get().to(dashboard::show))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/dashboard/session")
            .app_data(web::PayloadConfig::new(16 * 1024))
            .route(web::post().to(dashboard::open_session))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/dashboard/logout")
            .route(web::post().to(dashboard::close_session))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::scope("/fhir")
            .service(
                web::resource("/metadata")
                    .route(web::get().to(capabilities::capability_statement))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource(["", "/"])
                    .route(web::get().to(search::search_system))
                    .route(web::post().to(bundle::batch_or_transaction))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/$reindex")
                    .route(web::post().to(operation::reindex::reindex_all))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/_job/{id}")
                    .route(web::get().to(operation::reindex::status))
                    .route(web::delete().to(operation::reindex::cancel))
                    .default_service(web::to(method_not_allowed)),
            )
            // Patient/[id]/$everything and Bulk Data $export (before the generic type routes)
            .service(
                web::resource("/Patient/{id}/$everything")
                    .route(web::get().to(operation::everything::patient_everything))
                    .route(web::post().to(operation::everything::patient_everything))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/$export")
                    .route(web::get().to(operation::export::export_system))
                    .route(web::post().to(operation::export::export_system))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/Patient/$export")
                    .route(web::get().to(operation::export::export_patients))
                    .route(web::post().to(operation::export::export_patients))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/Group/{id}/$export")
                    .route(web::get().to(operation::export::export_group))
                    .route(web::post().to(operation::export::export_group))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/_export/{id}")
                    .route(web::get().to(operation::export::status))
                    .route(web::delete().to(operation::export::cancel))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/_export/{id}/{file}")
                    .route(web::get().to(operation::export::file))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/_history")
                    .route(web::get().to(history::system_history))
                    .default_service(web::to(method_not_allowed)),
            )
            // the audit trail: read-only, for administrators
            .service(
                web::resource(["/AuditEvent", "/AuditEvent/_search"])
                    .route(web::get().to(audit::search_trail))
                    .default_service(web::to(audit::refuse_change)),
            )
            .service(web::resource("/AuditEvent/_history").to(audit::refuse_change))
            .service(
                web::resource("/AuditEvent/{id}")
                    .route(web::get().to(audit::read_trail))
                    .default_service(web::to(audit::refuse_change)),
            )
            .service(web::resource("/AuditEvent/{id}/{rest:.*}").to(audit::refuse_change))
            .service(
                web::resource("/{type}")
                    .route(web::get().to(search::search_type))
                    .route(web::post().to(create::create))
                    .route(web::put().to(update::conditional_update))
                    .route(web::patch().to(patch::patch_conditional))
                    .route(web::delete().to(delete::conditional_delete))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/{type}/$reindex")
                    .route(web::post().to(operation::reindex::reindex_type))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/ValueSet/$expand")
                    .route(web::get().to(operation::terminology::expand_type))
                    .route(web::post().to(operation::terminology::expand_type))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/ValueSet/$validate-code")
                    .route(web::get().to(operation::terminology::validate_code_type))
                    .route(web::post().to(operation::terminology::validate_code_type))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/CodeSystem/$lookup")
                    .route(web::get().to(operation::terminology::lookup))
                    .route(web::post().to(operation::terminology::lookup))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/ValueSet/{id}/$expand")
                    .route(web::get().to(operation::terminology::expand_instance))
                    .route(web::post().to(operation::terminology::expand_instance))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/ValueSet/{id}/$validate-code")
                    .route(web::get().to(operation::terminology::validate_code_instance))
                    .route(web::post().to(operation::terminology::validate_code_instance))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/{type}/$validate")
                    .route(web::post().to(operation::validate::validate_type))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/{type}/{id}/$validate")
                    .route(web::get().to(operation::validate::validate_instance))
                    .route(web::post().to(operation::validate::validate_instance))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/{type}/_search")
                    .route(web::post().to(search::search_type_post))
                    .route(web::get().to(search::search_type))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/{type}/_history")
                    .route(web::get().to(history::type_history))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/{type}/{id}")
                    .route(web::get().to(read::read))
                    .route(web::head().to(read::read))
                    .route(web::put().to(update::update))
                    .route(web::patch().to(patch::patch_instance))
                    .route(web::delete().to(delete::delete))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/Subscription/{id}/$events")
                    .route(web::get().to(operation::subscription_events::events))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/Measure/{id}/$evaluate-measure")
                    .route(web::get().to(operation::evaluate_measure::evaluate_measure))
                    .route(web::post().to(operation::evaluate_measure::evaluate_measure))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/{type}/{id}/_history")
                    .route(web::get().to(history::instance_history))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/{compartment}/{id}/{type}")
                    .route(web::get().to(search::search_compartment))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/{type}/{id}/_history/{version}")
                    .route(web::get().to(read::vread))
                    .route(web::head().to(read::vread))
                    .default_service(web::to(method_not_allowed)),
            ),
    )
    .default_service(web::to(not_found));
}

/// `GET /openapi.json`: the document `openapi/openapi.json` holds (built once).
async fn openapi_document() -> HttpResponse {
    static DOCUMENT: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(crate::openapi::document_json);
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}

async fn docs_redirect() -> HttpResponse {
    HttpResponse::Found()
        .insert_header(("Location", "/docs/"))
        .finish()
}

/// `GET /docs/…`: Swagger UI over `/openapi.json`, its files compiled into the binary.
async fn docs_file(tail: web::Path<String>) -> Result<HttpResponse, FhirError> {
    static CONFIG: std::sync::LazyLock<std::sync::Arc<utoipa_swagger_ui::Config<'static>>> =
        std::sync::LazyLock::new(|| {
            std::sync::Arc::new(utoipa_swagger_ui::Config::from("/openapi.json"))
        });
    match utoipa_swagger_ui::serve(&tail, CONFIG.clone()) {
        Ok(Some(file)) => {
            let mut response = HttpResponse::Ok();
            response.content_type(file.content_type);
            if file.gzpipped {
                response.insert_header(("Content-Encoding", "gzip"));
            }
            Ok(response.body(file.bytes.into_owned()))
        }
        Ok(None) => Err(FhirError::NotFound(format!("No file /docs/{tail}"))),
        Err(err) => Err(FhirError::Internal(anyhow::anyhow!("docs: {err}"))),
    }
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, FhirError> {
    Err(FhirError::MethodNotAllowed(format!(
        "{} is not supported on {}",
        req.method(),
        req.path()
    )))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, FhirError> {
    Err(FhirError::NotFound(format!(
        "No route for {} {}",
        req.method(),
        req.path()
    )))
}

/// Checks a resource type from the URL.
pub fn known_type(name: &str) -> Result<&str, FhirError> {
    if crate::fhir::is_resource_type(name) {
        Ok(name)
    } else {
        Err(FhirError::UnknownType(name.to_string()))
    }
}

/// Checks a logical id from the URL.
pub fn valid_id(id: &str) -> Result<&str, FhirError> {
    if crate::fhir::is_valid_id(id) {
        Ok(id)
    } else {
        Err(FhirError::invalid(crate::fhir::outcome::Issue::error(
            "value",
            "The id must be 1 to 64 letters, digits, '-' or '.'",
        )))
    }
}
