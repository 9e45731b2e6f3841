//! Connections and pools for the two backends, chosen by the URL scheme.

use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{self, ManageConnection};
use diesel::sqlite::SqliteConnection;

/// One connection to either backend. Queries written once against `AnyConnection` run on both;
/// backend-specific SQL matches on the variant.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// The database backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Picks the backend from the URL scheme; returns the URL to hand to the driver.
    pub fn from_url(url: &str) -> anyhow::Result<(Backend, String)> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                anyhow::bail!(
                    "DATABASE_URL {url:?} names no file; use sqlite://PATH, e.g. sqlite://data/pivot.db"
                );
            }
            Ok((Backend::Sqlite, path.to_string()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok((Backend::Postgres, url.to_string()))
        } else {
            let scheme = url.split("://").next().unwrap_or(url);
            anyhow::bail!(
                "DATABASE_URL has unsupported scheme {scheme:?}: use sqlite://PATH (embedded) or \
                 postgres://USER@HOST:PORT/DATABASE"
            )
        }
    }
}

/// An r2d2 connection manager that opens the configured backend (never guesses from the URL, as
/// SQLite accepts any string as a file name) and applies SQLite's per-connection settings.
#[derive(Debug, Clone)]
pub struct Manager {
    backend: Backend,
    url: String,
    writer: bool,
    /// PostgreSQL `statement_timeout` of every connection (zero: none).
    statement_timeout: std::time::Duration,
}

impl Manager {
    pub fn new(backend: Backend, url: String) -> Self {
        Manager {
            backend,
            url,
            writer: false,
            statement_timeout: std::time::Duration::ZERO,
        }
    }

    /// The same manager with a PostgreSQL statement timeout.
    pub fn with_statement_timeout(self, statement_timeout: std::time::Duration) -> Self {
        Manager {
            statement_timeout,
            ..self
        }
    }

    /// The same manager for the writer connection.
    pub fn for_writer(&self) -> Self {
        Manager {
            writer: true,
            ..self.clone()
        }
    }
}

/// SQLite settings, per connection. WAL lets readers run beside the writer. `synchronous=NORMAL`
/// in WAL mode keeps every committed transaction across a crash or `kill -9` of the server
/// process (the WAL is written before commit returns); only an operating-system crash or power
/// loss can lose the last transactions, which is the trade-off for ~10x faster commits.
///
/// Each connection keeps its own page cache (8 MiB): the operating system's file cache is shared
/// by all of them, so larger per-connection caches mostly multiply memory use.
///
/// Checkpoints (copying the WAL back into the database file) do not run at commit time, where
/// they would stall the single writer: the store runs them in the background (`Store::checkpoint`).
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
    PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
    PRAGMA cache_size = -8000; PRAGMA wal_autocheckpoint = 0;";

/// The writer touches the same index pages over and over: a larger cache keeps them.
const SQLITE_WRITER_PRAGMAS: &str = "PRAGMA cache_size = -65536;";

impl ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, r2d2::Error> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn =
                    SqliteConnection::establish(&self.url).map_err(r2d2::Error::ConnectionError)?;
                conn.batch_execute(SQLITE_PRAGMAS)
                    .map_err(r2d2::Error::QueryError)?;
                if self.writer {
                    conn.batch_execute(SQLITE_WRITER_PRAGMAS)
                        .map_err(r2d2::Error::QueryError)?;
                }
                Ok(AnyConnection::Sqlite(conn))
            }
            Backend::Postgres => {
                let mut conn = PgConnection::establish(&self.url).map_err(|err| {
                    CONNECT_FAILING.store(true, std::sync::atomic::Ordering::Relaxed);
                    r2d2::Error::ConnectionError(err)
                })?;
                CONNECT_FAILING.store(false, std::sync::atomic::Ordering::Relaxed);
                if !self.statement_timeout.is_zero() {
                    conn.batch_execute(&format!(
                        "SET statement_timeout = {}",
                        self.statement_timeout.as_millis()
                    ))
                    .map_err(r2d2::Error::QueryError)?;
                }
                Ok(AnyConnection::Postgresql(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    /// A connection goes back to the pool unless it is broken. Checking costs a round trip, so
    /// it is only done for a while after the database failed: then connections whose socket
    /// died are dropped, and new ones are opened once the database is back.
    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        match conn {
            AnyConnection::Sqlite(_) => false,
            AnyConnection::Postgresql(pg) => {
                diesel::r2d2::R2D2Connection::is_broken(pg)
                    || (failed_recently() && pg.batch_execute("SELECT 1").is_err())
            }
        }
    }
}

/// When the database last failed (milliseconds since the Unix epoch; 0: never).
static LAST_FAILURE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long after a failure returned connections are checked.
const CHECK_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(120);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Records that a database operation failed for want of a working connection.
pub fn connections_failed() {
    LAST_FAILURE_MS.store(now_ms(), std::sync::atomic::Ordering::Relaxed);
}

fn failed_recently() -> bool {
    let last = LAST_FAILURE_MS.load(std::sync::atomic::Ordering::Relaxed);
    last != 0 && now_ms().saturating_sub(last) < CHECK_AFTER_FAILURE.as_millis() as u64
}

/// Whether the last attempt to open a PostgreSQL connection failed.
static CONNECT_FAILING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long a request waits for a pooled connection: under load the pool may be busy for a
/// while, but when the database cannot be reached waiting does not help.
pub fn checkout_timeout() -> std::time::Duration {
    if CONNECT_FAILING.load(std::sync::atomic::Ordering::Relaxed) {
        std::time::Duration::from_millis(500)
    } else {
        std::time::Duration::from_secs(10)
    }
}

pub type Pool = r2d2::Pool<Manager>;
pub type PooledConnection = r2d2::PooledConnection<Manager>;
