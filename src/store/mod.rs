//! Storage: every version of every resource on SQLite (embedded) or PostgreSQL (shared by many
//! server nodes). diesel is blocking, so all database work runs on the blocking thread pool
//! through [`Store::read`] and [`Store::write`]; `write` wraps its closure in one transaction,
//! so a multi-resource write commits or rolls back as a whole.

pub mod audit;
pub mod clients;
pub mod conn;
pub mod index;
pub mod jobs;
pub mod resources;
pub mod schema;
pub mod search;
pub mod sql;
pub mod stats;
pub mod subscriptions;

use std::time::Duration;

use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use conn::{AnyConnection, Backend};
use conn::{Manager, Pool};
use diesel::r2d2::ManageConnection;

/// The WAL size beyond which the background checkpoint resets it.
const WAL_TRUNCATE_BYTES: u64 = 64 * 1024 * 1024;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Storage failures, before they become HTTP answers in `crate::error`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, or no connection became free in time.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// PostgreSQL cancelled a statement that ran past the statement timeout.
    #[error("statement timed out: {0}")]
    TimedOut(String),
    #[error("database error: {0}")]
    Backend(DieselError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<DieselError> for StoreError {
    fn from(err: DieselError) -> Self {
        StoreError::classify(err)
    }
}

impl StoreError {
    /// Sorts a diesel error: lost connections and lock timeouts are `Unavailable`.
    pub fn classify(err: DieselError) -> StoreError {
        let sorted = StoreError::sort(err);
        if let StoreError::Unavailable(_) = sorted {
            conn::connections_failed();
        }
        sorted
    }

    fn sort(err: DieselError) -> StoreError {
        match &err {
            // a connection lost in the middle of a transaction leaves this behind
            DieselError::BrokenTransactionManager => StoreError::Unavailable(err.to_string()),
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => StoreError::Unavailable(info.message().to_string()),
            DieselError::DatabaseError(_, info)
                if info
                    .message()
                    .contains("canceling statement due to statement timeout") =>
            {
                StoreError::TimedOut(info.message().to_string())
            }
            DieselError::DatabaseError(_, info) if is_transient_message(info.message()) => {
                StoreError::Unavailable(info.message().to_string())
            }
            _ => StoreError::Backend(err),
        }
    }
}

fn is_transient_message(message: &str) -> bool {
    message.contains("database is locked")
        || message.contains("terminating connection")
        || message.contains("server closed the connection")
        || message.contains("the database system is")
        || message.contains("no connection to the server")
        || message.contains("SSL SYSCALL error")
        || message.contains("could not receive data from server")
        || message.contains("could not send data to server")
}

/// A handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    readers: Pool,
    /// SQLite allows one writer at a time, so writes queue for a single connection instead of
    /// failing with "database is locked"; on PostgreSQL this is the same pool as `readers`.
    writers: Pool,
    /// The SQLite database file (for its WAL's size).
    sqlite_path: Option<std::path::PathBuf>,
    /// SQLite: the queue of the group-commit writer (see `group_writer`).
    group: Option<std::sync::mpsc::Sender<GroupJob>>,
}

/// What a write leaves to do once its group's transaction has committed (or failed): answer
/// its caller.
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A write waiting for the SQLite writer. `alone`: a large write (a transaction Bundle) runs in
/// its own transaction, as a savepoint would copy every page it changes.
struct GroupJob {
    alone: bool,
    run: Box<dyn FnOnce(&mut AnyConnection) -> Completion + Send>,
}

/// Most writes committed together.
const MAX_GROUP: usize = 64;

/// The SQLite writer: takes the writes waiting in the queue (up to `MAX_GROUP`), runs each in
/// its own savepoint inside one transaction, commits once, then answers them all. A write is
/// acknowledged only after the commit that contains it; one that fails is rolled back to its
/// savepoint without affecting the others. Commits are the main cost of small writes on SQLite,
/// so concurrent writers share them. Exits when the store is dropped.
fn group_writer(pool: Pool, queue: std::sync::mpsc::Receiver<GroupJob>) {
    let mut held: Option<GroupJob> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let Ok(mut conn) = pool.get() else {
            // dropping the job drops its answer channel: the caller gets "unavailable"
            continue;
        };
        if first.alone {
            // its own `conn.transaction` commits or rolls back at the top level
            let complete = (first.run)(&mut conn);
            complete(Ok(()));
            continue;
        }
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) if job.alone => {
                    held = Some(job);
                    break;
                }
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut completions: Vec<Completion> = Vec::with_capacity(jobs.len());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            conn.transaction::<_, DieselError, _>(|conn| {
                for job in jobs {
                    completions.push((job.run)(conn));
                }
                Ok(())
            })
        }));
        let commit = match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(format!("the write could not be committed: {err}")),
            Err(_) => {
                let _ = conn.batch_execute("ROLLBACK");
                Err("a write failed unexpectedly".to_string())
            }
        };
        for complete in completions {
            complete(commit.clone());
        }
    }
}

impl Store {
    /// Opens the database named by `url`, creating a SQLite file's folder, and runs pending
    /// migrations (PostgreSQL: under an advisory lock, so nodes starting together take turns).
    pub fn open(url: &str, pool_size: u32) -> anyhow::Result<Store> {
        Store::open_with_timeout(url, pool_size, Duration::ZERO)
    }

    /// [`Store::open`] with a PostgreSQL statement timeout on every pooled connection (zero:
    /// none), so one runaway query cannot hold a connection and a core for minutes.
    pub fn open_with_timeout(
        url: &str,
        pool_size: u32,
        statement_timeout: Duration,
    ) -> anyhow::Result<Store> {
        let (backend, driver_url) = Backend::from_url(url)?;
        if backend == Backend::Sqlite
            && let Some(parent) = std::path::Path::new(&driver_url).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|err| {
                anyhow::anyhow!(
                    "cannot create the database folder {}: {err}",
                    parent.display()
                )
            })?;
        }
        let sqlite_path =
            (backend == Backend::Sqlite).then(|| std::path::PathBuf::from(&driver_url));
        let unlimited = Manager::new(backend, driver_url);
        let manager = unlimited.clone().with_statement_timeout(statement_timeout);
        let build = |size: u32, manager: Manager| {
            Pool::builder()
                .max_size(size)
                .min_idle(Some(1))
                .connection_timeout(Duration::from_secs(10))
                .test_on_check_out(false)
                .build(manager)
                .map_err(|err| anyhow::anyhow!("cannot connect to the database: {err}"))
        };
        let writers = build(
            if backend == Backend::Sqlite {
                1
            } else {
                pool_size.max(2)
            },
            manager.for_writer(),
        )?;
        let readers = if backend == Backend::Sqlite {
            build(pool_size.max(1), manager.clone())?
        } else {
            writers.clone()
        };
        let group = (backend == Backend::Sqlite).then(|| {
            let (sender, receiver) = std::sync::mpsc::channel::<GroupJob>();
            let pool = writers.clone();
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || group_writer(pool, receiver))
                .map(|_| sender)
        });
        let group = group
            .transpose()
            .map_err(|err| anyhow::anyhow!("cannot start the writer thread: {err}"))?;
        let store = Store {
            backend,
            readers,
            writers,
            sqlite_path,
            group,
        };
        // migrations may build indexes on large tables: no statement timeout
        let mut conn = unlimited
            .for_writer()
            .connect()
            .map_err(|err| anyhow::anyhow!("cannot connect to the database: {err}"))?;
        run_migrations(&mut conn)?;
        Ok(store)
    }

    /// Runs `work` with a connection on the calling thread (start-up only).
    pub fn blocking<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E>,
        E: From<StoreError>,
    {
        let mut conn = checkout(&self.readers)?;
        work(&mut conn)
    }

    /// Runs `work` in one transaction with a writing connection on the calling thread
    /// (start-up only, before the server takes requests).
    pub fn blocking_write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E>,
        E: From<StoreError> + From<DieselError>,
    {
        let mut conn = checkout(&self.writers)?;
        conn.transaction(|conn| work(conn))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs `work` with a reading connection on the blocking pool.
    pub async fn read<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        run_blocking(move || {
            let mut conn = checkout(&pool)?;
            work(&mut conn)
        })
        .await
    }

    /// Runs a short read, such as a lookup by primary key. On SQLite it runs on the calling
    /// thread: the query takes microseconds, less than handing it to the blocking pool and back.
    /// On PostgreSQL (a network round trip) it goes through the blocking pool like `read`.
    pub async fn read_point<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        if self.backend == Backend::Sqlite {
            let mut conn = checkout(&self.readers)?;
            return work(&mut conn);
        }
        self.read(work).await
    }

    /// Runs `work` inside one database transaction on the blocking pool: it commits when `work`
    /// returns `Ok` and rolls back otherwise.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + From<DieselError> + Send + 'static,
    {
        self.write_grouped(work, false).await
    }

    /// `write` for a large write (a transaction Bundle): on SQLite it gets a transaction of its
    /// own instead of sharing one.
    pub async fn write_alone<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + From<DieselError> + Send + 'static,
    {
        self.write_grouped(work, true).await
    }

    async fn write_grouped<T, E, F>(&self, work: F, alone: bool) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + From<DieselError> + Send + 'static,
    {
        if let Some(group) = &self.group {
            let (answer, answered) = tokio::sync::oneshot::channel::<Result<T, E>>();
            let run: Box<dyn FnOnce(&mut AnyConnection) -> Completion + Send> =
                Box::new(move |conn| {
                    // Shared: a savepoint inside the group's transaction; alone: the transaction.
                    let result = conn.transaction(|conn| work(conn));
                    Box::new(move |commit: Result<(), String>| {
                        let _ = answer.send(match (result, commit) {
                            (Ok(value), Ok(())) => Ok(value),
                            (Ok(_), Err(message)) => Err(StoreError::Unavailable(message).into()),
                            (Err(err), _) => Err(err),
                        });
                    })
                });
            group
                .send(GroupJob { alone, run })
                .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
            return answered.await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable("the write was not carried out".into()).into())
            });
        }
        let pool = self.writers.clone();
        run_blocking(move || {
            let mut conn = checkout(&pool)?;
            conn.transaction(|conn| work(conn))
        })
        .await
    }

    /// SQLite: copies committed WAL frames back into the database file without blocking the
    /// writer or readers (run every second in the background). Nothing to do on PostgreSQL.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        let Some(path) = &self.sqlite_path else {
            return Ok(());
        };
        self.read(|conn| {
            conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE)")
                .map_err(StoreError::classify)
        })
        .await?;
        // A WAL only starts over once fully copied; under steady writes that takes a moment with
        // the writer's lock, which keeps the file from growing without bound.
        let wal = std::path::PathBuf::from(format!("{}-wal", path.display()));
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_TRUNCATE_BYTES) {
            self.write(|conn| {
                conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    .map_err(StoreError::classify)
            })
            .await?;
        }
        Ok(())
    }

    /// Whether the database answers (readiness).
    /// The connection pools: (name, connections open, idle, most allowed). On PostgreSQL the
    /// readers and writers are one pool.
    pub fn pool_states(&self) -> Vec<(&'static str, u32, u32, u32)> {
        let state = |pool: &Pool| {
            let s = pool.state();
            (s.connections, s.idle_connections, pool.max_size())
        };
        let (open, idle, max) = state(&self.readers);
        let mut pools = vec![("readers", open, idle, max)];
        if self.backend == Backend::Sqlite {
            let (open, idle, max) = state(&self.writers);
            pools.push(("writer", open, idle, max));
        }
        pools
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| conn.batch_execute("SELECT 1").map_err(StoreError::classify))
            .await
    }
}

/// A connection from `pool`. While new connections cannot be opened (the database is down), a
/// request waits briefly for one instead of the full timeout: an outage answers 503 at once.
fn checkout(pool: &Pool) -> Result<conn::PooledConnection, StoreError> {
    pool.get_timeout(conn::checkout_timeout())
        .map_err(|err| StoreError::Unavailable(err.to_string()))
}

async fn run_blocking<T, E, F>(work: F) -> Result<T, E>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    match actix_web::rt::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join_error) => {
            Err(StoreError::Other(anyhow::anyhow!("database task failed: {join_error}")).into())
        }
    }
}

fn run_migrations(conn: &mut AnyConnection) -> anyhow::Result<()> {
    let result = match conn {
        AnyConnection::Sqlite(conn) => conn.run_pending_migrations(SQLITE_MIGRATIONS).map(|_| ()),
        AnyConnection::Postgresql(conn) => {
            // Several nodes may start at once against one database: take turns.
            conn.batch_execute("SELECT pg_advisory_lock(727274)")?;
            let result = conn.run_pending_migrations(POSTGRES_MIGRATIONS).map(|_| ());
            conn.batch_execute("SELECT pg_advisory_unlock(727274)")?;
            result
        }
    };
    result.map_err(|err| anyhow::anyhow!("database migration failed: {err}"))
}
