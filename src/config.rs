//! Server settings: each one is a command-line flag with an environment variable and a default.

use std::net::SocketAddr;

/// Settings of `pivot-fhir serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address and port to listen on. Until authorization is available the server only binds
    /// loopback addresses.
    #[arg(long, env = "PIVOT_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,

    /// Database: `sqlite://PATH` (embedded, the default; the parent folder is created) or
    /// `postgres://USER@HOST:PORT/DB` (production; many server nodes may share one database).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/pivot.db")]
    pub database_url: String,

    /// Public base URL of the server (without `/fhir`), used in `Location` headers and Bundle links.
    /// When unset, it is derived from each request's `Host` header.
    #[arg(long, env = "PIVOT_BASE_URL")]
    pub base_url: Option<String>,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "PIVOT_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most entries a batch or transaction Bundle may have; more get 413.
    #[arg(long, env = "PIVOT_MAX_BUNDLE_ENTRIES", default_value_t = 10_000)]
    pub max_bundle_entries: usize,

    /// Database connections per server node (readers; SQLite has one extra writer connection).
    #[arg(long, env = "PIVOT_DB_POOL_SIZE", default_value_t = 8)]
    pub db_pool_size: u32,

    /// HTTP worker threads (default: one per CPU core).
    #[arg(long, env = "PIVOT_WORKERS")]
    pub workers: Option<usize>,

    /// Log format: `text` or `json`.
    #[arg(long, env = "PIVOT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl Settings {
    /// Settings for an embedded SQLite database at `database_url`, listening on `bind`.
    pub fn new(bind: impl Into<String>, database_url: impl Into<String>) -> Self {
        Settings {
            bind: bind.into(),
            database_url: database_url.into(),
            base_url: None,
            max_body_bytes: 32 * 1024 * 1024,
            max_bundle_entries: 10_000,
            db_pool_size: 8,
            workers: None,
            log_format: "text".into(),
        }
    }

    /// The socket address to bind, refusing non-loopback addresses: no request is authorized
    /// yet, so the server must not be reachable from other machines.
    pub fn loopback_bind_address(&self) -> anyhow::Result<SocketAddr> {
        let address: SocketAddr = self.bind.parse().map_err(|_| {
            anyhow::anyhow!("--bind {:?} is not an IP address and port such as 127.0.0.1:8080", self.bind)
        })?;
        if !address.ip().is_loopback() {
            anyhow::bail!(
                "refusing to listen on {address}: this server has no request authorization yet, so it only \
                 binds loopback addresses (127.0.0.1 or ::1); put an authenticating reverse proxy in front \
                 and bind it to loopback"
            );
        }
        Ok(address)
    }
}
