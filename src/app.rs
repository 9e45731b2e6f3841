//! Application start-up: open the store (running migrations), bind the listener, start the
//! HTTP server. `main` and the integration tests run exactly this.

use std::net::TcpListener;

use actix_web::dev::{Server, Service};
use actix_web::{App, HttpServer, web};

use crate::api::{self, AppState};
use crate::auth::{AuthMode, Authenticator};
use crate::config::Settings;
use crate::fhir::instant::{format_instant, now_micros};
use crate::service::search_parameters::{self, RegistryHandle};
use crate::store::Store;
use std::sync::Arc;

pub struct Application {
    port: u16,
    server: Server,
    store: Store,
    registry: Arc<RegistryHandle>,
    auth: Arc<Authenticator>,
    jwks_refresh: std::time::Duration,
    audit_queue: crate::service::audit::AuditQueue,
    delivery: crate::service::notifications::Delivery,
    exports: crate::service::export::ExportConfig,
}

impl Application {
    /// Opens the database and binds the listener; the server runs once awaited.
    pub fn build(settings: &Settings) -> anyhow::Result<Application> {
        // rustls (outbound HTTPS) is built without a default crypto provider: use aws-lc-rs,
        // already linked for JWT signatures. Installing twice is harmless (the first stays).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let address = settings.bind_address()?;
        let policy = crate::auth::policy::Policy::load(settings.access_policy.as_deref())?;
        let auth = Arc::new(Authenticator::new(
            settings.auth,
            &settings.data_dir(),
            settings.token_issuer.clone(),
            settings.token_audience.clone(),
            policy,
            &settings.jwks(),
        )?);
        if let Some(remote) = &auth.remote {
            // A key file is checked now; a URL is fetched by the background refresh, so a
            // briefly unreachable authorization server does not stop the start.
            let keys = remote.load_file_now()?;
            tracing::info!(source = %remote.source, keys, "checking tokens of an external authorization server");
        }
        if settings.auth == AuthMode::None {
            tracing::warn!(
                "authorization is off (--auth none): every request may do anything; loopback only"
            );
        }
        let started = std::time::Instant::now();
        crate::validation::warm_up();
        crate::validation::require_profiles(&settings.require_profiles);
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "definitions compiled"
        );
        let store = Store::open_with_timeout(
            &settings.database_url,
            settings.db_pool_size,
            std::time::Duration::from_secs(settings.statement_timeout_seconds),
        )?;
        let listener = TcpListener::bind(address)
            .map_err(|err| anyhow::anyhow!("cannot listen on {address}: {err}"))?;
        let port = listener.local_addr()?.port();
        tracing::info!(%address, port, backend = ?store.backend(), "pivot-fhir listening");
        let (registry, version) = store
            .blocking(search_parameters::load)
            .map_err(|err| anyhow::anyhow!("cannot load the search parameters: {err}"))?;
        let loaded = store
            .blocking_write(|conn| crate::service::conformance::load(conn, &registry))
            .map_err(|err| anyhow::anyhow!("cannot store the program's definitions: {err}"))?;
        tracing::info!(loaded, "program definitions stored");
        let registry = Arc::new(RegistryHandle::new(registry, version));
        let (audit, audit_queue) = crate::service::audit::trail();
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let state = web::Data::new(AppState {
            audit,
            store: store.clone(),
            auth: auth.clone(),
            registry: registry.clone(),
            base_url: settings.base_url.clone(),
            max_body_bytes: settings.max_body_bytes,
            max_bundle_entries: settings.max_bundle_entries,
            started_at: format_instant(now_micros()),
            referral_overdue_days: settings.referrals.referral_overdue_days,
            metrics: metrics.clone(),
        });
        let exports =
            crate::service::export::ExportConfig::new(&settings.data_dir(), &settings.exports);
        let export_config = web::Data::new(exports.clone());
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(export_config.clone())
                .wrap_fn(|req, service| {
                    let audited = api::audit::path_is_audited(&req);
                    let response = service.call(req);
                    async move {
                        let response = response.await?;
                        if audited {
                            api::audit::record(&response).await;
                        }
                        Ok(response)
                    }
                })
                // outermost: request id, log line and metrics for every request
                .wrap_fn(observe)
                .configure(api::routes)
        })
        .listen(listener)?
        .shutdown_timeout(30);
        if let Some(workers) = settings.workers {
            server = server.workers(workers.max(1));
        }
        let delivery = crate::service::notifications::Delivery {
            settings: settings.subscriptions.clone(),
            fhir_base: format!(
                "{}/fhir",
                settings
                    .base_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{}:{port}", address.ip()))
                    .trim_end_matches('/')
            ),
        };
        Ok(Application {
            port,
            server: server.run(),
            store,
            registry,
            auth,
            audit_queue,
            jwks_refresh: std::time::Duration::from_secs(settings.jwks_refresh_seconds.max(1)),
            delivery,
            exports,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the server (gracefully, or at once).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the process is told to stop (SIGINT/SIGTERM finish in-flight requests).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let background = tokio::spawn(search_parameters::run_background(
            self.store.clone(),
            self.registry.clone(),
        ));
        let key_refresh = tokio::spawn(refresh_keys(self.auth.clone(), self.jwks_refresh));
        let audit_writer = tokio::spawn(crate::service::audit::run_writer(
            self.store.clone(),
            self.audit_queue,
        ));
        let notifications = tokio::spawn(crate::service::notifications::run(
            self.store.clone(),
            self.registry.clone(),
            self.delivery,
        ));
        let exports = tokio::spawn(crate::service::export::run(
            self.store.clone(),
            self.registry.clone(),
            self.exports,
        ));
        let result = self.server.await;
        exports.abort();
        background.abort();
        key_refresh.abort();
        notifications.abort();
        // the workers are gone, and with them every sender: the writer drains the queue and ends
        if tokio::time::timeout(std::time::Duration::from_secs(10), audit_writer)
            .await
            .is_err()
        {
            tracing::error!("the audit trail writer did not finish within 10 s of shutdown");
        }
        result
    }
}

/// Gives each request an `X-Request-Id` (the client's, or a new one) that every log line of the
/// request carries and the response echoes; logs one line per request (route pattern, never the
/// path or query, which may hold identifiers or search values) and counts it for `/metrics`.
fn observe<S>(
    req: actix_web::dev::ServiceRequest,
    service: &S,
) -> impl std::future::Future<Output = Result<actix_web::dev::ServiceResponse, actix_web::Error>> + use<S>
where
    S: Service<
            actix_web::dev::ServiceRequest,
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
        >,
{
    use tracing::Instrument;
    let request_id = crate::metrics::request_id(
        req.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
    );
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let method = req.method().to_string();
    let span = tracing::info_span!("request", request_id = %request_id);
    let started = std::time::Instant::now();
    let response = {
        let _entered = span.enter();
        service.call(req)
    };
    async move {
        let in_flight = metrics.as_ref().map(|m| m.start());
        let result = response.await;
        drop(in_flight);
        let elapsed = started.elapsed().as_secs_f64();
        let mut response = result?;
        let pattern = response.request().match_pattern().unwrap_or_default();
        let interaction = crate::openapi::interaction_of(&method, &pattern).unwrap_or("unmatched");
        let resource_type =
            crate::metrics::resource_type_of(&pattern, response.request().match_info().get("type"));
        let status = response.status().as_u16();
        if let Some(metrics) = &metrics {
            metrics.observe(interaction, &resource_type, status, elapsed);
        }
        tracing::info!(
            interaction,
            fhir.resource_type = %resource_type,
            status,
            elapsed_ms = (elapsed * 1000.0) as u64,
            "request"
        );
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("x-request-id"),
                value,
            );
        }
        Ok(response)
    }
    .instrument(span)
}

/// Mode `jwks`: fetches the authorization server's keys at start and then periodically.
async fn refresh_keys(auth: Arc<Authenticator>, every: std::time::Duration) {
    let Some(remote) = &auth.remote else {
        return;
    };
    loop {
        if let Err(err) = remote.refresh().await {
            tracing::warn!(source = %remote.source, error = %err, "cannot refresh the token signing keys");
        }
        tokio::time::sleep(every).await;
    }
}
