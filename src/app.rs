//! Application start-up: open the store (running migrations), bind the listener, start the
//! HTTP server. `main` and the integration tests run exactly this.

use std::net::TcpListener;

use actix_web::dev::Server;
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
    delivery: crate::service::notifications::Delivery,
}

impl Application {
    /// Opens the database and binds the listener; the server runs once awaited.
    pub fn build(settings: &Settings) -> anyhow::Result<Application> {
        let address = settings.bind_address()?;
        let policy = crate::auth::policy::Policy::load(settings.access_policy.as_deref())?;
        let auth = Arc::new(Authenticator::new(
            settings.auth,
            &settings.data_dir(),
            settings.token_issuer.clone(),
            settings.token_audience.clone(),
            policy,
        )?);
        if settings.auth == AuthMode::None {
            tracing::warn!(
                "authorization is off (--auth none): every request may do anything; loopback only"
            );
        }
        let store = Store::open(&settings.database_url, settings.db_pool_size)?;
        let listener = TcpListener::bind(address)
            .map_err(|err| anyhow::anyhow!("cannot listen on {address}: {err}"))?;
        let port = listener.local_addr()?.port();
        tracing::info!(%address, port, backend = ?store.backend(), "pivot-fhir listening");
        let (registry, version) = store
            .blocking(|conn| search_parameters::load(conn))
            .map_err(|err| anyhow::anyhow!("cannot load the search parameters: {err}"))?;
        let registry = Arc::new(RegistryHandle::new(registry, version));
        let state = web::Data::new(AppState {
            store: store.clone(),
            auth,
            registry: registry.clone(),
            base_url: settings.base_url.clone(),
            max_body_bytes: settings.max_body_bytes,
            max_bundle_entries: settings.max_bundle_entries,
            started_at: format_instant(now_micros()),
            referral_overdue_days: settings.referrals.referral_overdue_days,
        });
        let mut server =
            HttpServer::new(move || App::new().app_data(state.clone()).configure(api::routes))
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
            delivery,
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
        let notifications = tokio::spawn(crate::service::notifications::run(
            self.store.clone(),
            self.registry.clone(),
            self.delivery,
        ));
        let result = self.server.await;
        background.abort();
        notifications.abort();
        result
    }
}
