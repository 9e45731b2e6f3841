//! Server settings: each one is a command-line flag with an environment variable and a default.

use std::net::SocketAddr;

use crate::auth::AuthMode;

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

    /// PostgreSQL: statements running longer than this many seconds are cancelled, and the
    /// request gets a `too-costly` OperationOutcome (0: no limit). Migrations are not limited.
    #[arg(long, env = "PIVOT_STATEMENT_TIMEOUT_SECONDS", default_value_t = 30)]
    pub statement_timeout_seconds: u64,

    /// HTTP worker threads (default: one per CPU core).
    #[arg(long, env = "PIVOT_WORKERS")]
    pub workers: Option<usize>,

    /// Authorization: `local` (the server issues and checks its own SMART tokens; the default),
    /// `jwks` (tokens of an external authorization server) or `none` (loopback only).
    #[arg(long, env = "PIVOT_AUTH", value_enum, default_value = "local")]
    pub auth: AuthMode,

    /// Folder for the server's own files (its signing key). Default: the SQLite database's folder,
    /// else `data`.
    #[arg(long, env = "PIVOT_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// Mode `jwks`: URL of the authorization server's public keys (JWKS).
    #[arg(long, env = "PIVOT_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// Mode `jwks`: a JWKS file instead of a URL (re-read on refresh, so rotating keys means
    /// replacing the file).
    #[arg(long, env = "PIVOT_JWKS_FILE")]
    pub jwks_file: Option<std::path::PathBuf>,

    /// Mode `jwks`: seconds between background refreshes of the key set.
    #[arg(long, env = "PIVOT_JWKS_REFRESH_SECONDS", default_value_t = 300)]
    pub jwks_refresh_seconds: u64,

    /// Mode `jwks`: least seconds between two refreshes caused by tokens with an unknown key id.
    #[arg(long, env = "PIVOT_JWKS_MIN_REFRESH_SECONDS", default_value_t = 10)]
    pub jwks_min_refresh_seconds: u64,

    /// Mode `jwks`: the authorization server's token endpoint, advertised in SMART discovery.
    #[arg(long, env = "PIVOT_OAUTH_TOKEN_URL")]
    pub oauth_token_url: Option<String>,

    /// Mode `jwks`: the authorization server's authorization endpoint (SMART App Launch).
    #[arg(long, env = "PIVOT_OAUTH_AUTHORIZE_URL")]
    pub oauth_authorize_url: Option<String>,

    /// `iss` of the tokens this server issues and accepts.
    #[arg(long, env = "PIVOT_TOKEN_ISSUER", default_value = "pivot-fhir")]
    pub token_issuer: String,

    /// `aud` of the tokens this server issues and accepts.
    #[arg(long, env = "PIVOT_TOKEN_AUDIENCE", default_value = "pivot-fhir")]
    pub token_audience: String,

    /// The program roles (JSON, see `policy/access-policy.json`, the default).
    #[arg(long, env = "PIVOT_ACCESS_POLICY")]
    pub access_policy: Option<std::path::PathBuf>,

    /// Resource types that must claim a program profile (`meta.profile`) to be written, comma
    /// separated; for the program deployment `Patient,ServiceRequest,Task,Observation` (an
    /// Observation is held to it only when its category is SDOH: `sdoh` or `social-history`).
    /// A resource that claims a program profile is validated against it in any case.
    #[arg(long, env = "PIVOT_REQUIRE_PROFILES", value_delimiter = ',')]
    pub require_profiles: Vec<String>,

    /// Log format: `text` or `json`.
    #[arg(long, env = "PIVOT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    #[command(flatten)]
    pub subscriptions: SubscriptionSettings,

    #[command(flatten)]
    pub referrals: ReferralSettings,

    #[command(flatten)]
    pub exports: ExportSettings,
}

/// Delivery of Subscription notifications.
#[derive(Debug, Clone, clap::Args)]
pub struct SubscriptionSettings {
    /// Hosts (`host` or `host:port`, comma-separated) that Subscription endpoints may name. An
    /// endpoint elsewhere is not activated (its Subscription gets status `error`), so a
    /// Subscription cannot be used to reach hosts of the internal network the administrator has
    /// not listed. Empty (the default): no endpoint but loopback ones, and those only with
    /// `--subscription-allow-loopback`.
    #[arg(long, env = "PIVOT_SUBSCRIPTION_HOSTS", value_delimiter = ',')]
    pub subscription_hosts: Vec<String>,

    /// Allow endpoints on loopback addresses (`localhost`, `127.0.0.0/8`, `::1`): for tests and
    /// single-machine set-ups.
    #[arg(
        long,
        env = "PIVOT_SUBSCRIPTION_ALLOW_LOOPBACK",
        default_value_t = false
    )]
    pub subscription_allow_loopback: bool,

    /// How often each node looks for notifications to send, in milliseconds.
    #[arg(long, env = "PIVOT_SUBSCRIPTION_POLL_MS", default_value_t = 500)]
    pub subscription_poll_ms: u64,

    /// Wait before the first retry of a failed notification, in milliseconds; it doubles with each
    /// attempt, up to 64 times this.
    #[arg(long, env = "PIVOT_SUBSCRIPTION_RETRY_MS", default_value_t = 2000)]
    pub subscription_retry_ms: u64,

    /// Attempts at one notification before its Subscription is set to `error`.
    #[arg(long, env = "PIVOT_SUBSCRIPTION_MAX_ATTEMPTS", default_value_t = 10)]
    pub subscription_max_attempts: u32,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        SubscriptionSettings {
            subscription_hosts: Vec::new(),
            subscription_allow_loopback: false,
            subscription_poll_ms: 500,
            subscription_retry_ms: 2000,
            subscription_max_attempts: 10,
        }
    }
}

/// The referral workflow.
#[derive(Debug, Clone, clap::Args)]
pub struct ReferralSettings {
    /// Days after which an open referral is overdue (`Task?_query=overdue-referrals`).
    #[arg(long, env = "PIVOT_REFERRAL_OVERDUE_DAYS", default_value_t = 30)]
    pub referral_overdue_days: u32,
}

impl Default for ReferralSettings {
    fn default() -> Self {
        ReferralSettings {
            referral_overdue_days: 30,
        }
    }
}

/// Bulk Data `$export` jobs.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportSettings {
    /// Export jobs this node runs at a time; 0: this node runs none (it still takes kick-offs,
    /// which other nodes then run).
    #[arg(long, env = "PIVOT_EXPORT_WORKERS", default_value_t = 1)]
    pub export_workers: usize,

    /// Seconds a finished export's files are kept (then they and the job are deleted).
    #[arg(long, env = "PIVOT_EXPORT_RETENTION_SECONDS", default_value_t = 86_400)]
    pub export_retention_seconds: u64,

    /// Seconds a node holds a running export without renewing its lease before another node
    /// takes the job over (a node that died).
    #[arg(long, env = "PIVOT_EXPORT_LEASE_SECONDS", default_value_t = 30)]
    pub export_lease_seconds: u64,

    /// How often an idle node looks for export jobs, in milliseconds.
    #[arg(long, env = "PIVOT_EXPORT_POLL_MS", default_value_t = 1000)]
    pub export_poll_ms: u64,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            export_workers: 1,
            export_retention_seconds: 86_400,
            export_lease_seconds: 30,
            export_poll_ms: 1000,
        }
    }
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
            statement_timeout_seconds: 30,
            workers: None,
            log_format: "text".into(),
            auth: AuthMode::Local,
            data_dir: None,
            token_issuer: "pivot-fhir".into(),
            token_audience: "pivot-fhir".into(),
            access_policy: None,
            jwks_url: None,
            jwks_file: None,
            jwks_refresh_seconds: 300,
            jwks_min_refresh_seconds: 10,
            oauth_token_url: None,
            oauth_authorize_url: None,
            require_profiles: Vec::new(),
            subscriptions: SubscriptionSettings::default(),
            referrals: ReferralSettings::default(),
            exports: ExportSettings::default(),
        }
    }

    /// The data folder.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| crate::auth::default_data_dir(&self.database_url))
    }

    /// Where mode `jwks` finds the authorization server's keys.
    pub fn jwks(&self) -> crate::auth::JwksSettings {
        crate::auth::JwksSettings {
            url: self.jwks_url.clone(),
            file: self.jwks_file.clone(),
            min_refresh: std::time::Duration::from_secs(self.jwks_min_refresh_seconds),
            token_url: self.oauth_token_url.clone(),
            authorize_url: self.oauth_authorize_url.clone(),
        }
    }

    /// The socket address to bind; without authorization (`--auth none`) only loopback
    /// addresses, so an open server is never reachable from other machines.
    pub fn bind_address(&self) -> anyhow::Result<SocketAddr> {
        let address: SocketAddr = self.bind.parse().map_err(|_| {
            anyhow::anyhow!(
                "--bind {:?} is not an IP address and port such as 127.0.0.1:8080",
                self.bind
            )
        })?;
        if self.auth == AuthMode::None && !address.ip().is_loopback() {
            anyhow::bail!(
                "refusing to listen on {address} with --auth none: without authorization the server only \
                 binds loopback addresses (127.0.0.1 or ::1); use --auth local or --auth jwks"
            );
        }
        Ok(address)
    }
}
