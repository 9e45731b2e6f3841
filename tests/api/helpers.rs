//! `TestApp`: the real server on port 0 over a fresh database, SQLite (a temporary file) or
//! PostgreSQL (a schema of its own in the database named by `DATABASE_URL`).

use std::sync::LazyLock;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use pivot_fhir::{Application, Settings};
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        pivot_fhir::telemetry::init("text");
    }
});

pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub root: String,
    /// `http://127.0.0.1:PORT/fhir`
    pub base: String,
    pub client: Client,
    handle: actix_web::dev::ServerHandle,
    pub data_dir: std::path::PathBuf,
    pub database_url: String,
    _dir: tempfile::TempDir,
    schema: Option<(String, String)>,
}

impl TestApp {
    /// A server over a fresh database of `backend`; `None` for PostgreSQL when `DATABASE_URL`
    /// does not name one.
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(
        backend: Backend,
        configure: impl FnOnce(&mut Settings),
    ) -> Option<TestApp> {
        LazyLock::force(&TRACING);
        let dir = tempfile::tempdir().ok()?;
        let (database_url, schema) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("test.db").display()),
                None,
            ),
            Backend::Postgres => {
                let url = postgres_url()?;
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = PgConnection::establish(&url).ok()?;
                conn.batch_execute(&format!("CREATE SCHEMA {schema}"))
                    .ok()?;
                let separator = if url.contains('?') { '&' } else { '?' };
                (
                    format!("{url}{separator}options=-c%20search_path%3D{schema}"),
                    Some((url, schema)),
                )
            }
        };
        let mut settings = Settings::new("127.0.0.1:0", database_url);
        settings.workers = Some(2);
        settings.db_pool_size = 4;
        settings.data_dir = Some(dir.path().to_path_buf());
        configure(&mut settings);
        let app = match Application::build(&settings) {
            Ok(app) => app,
            Err(err) => panic!("server did not start: {err:#}"),
        };
        let root = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        // Tests act as a backend service with full access unless they say otherwise.
        let admin = token_for(dir.path(), "system/*.cruds", None, None);
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {admin}")) {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Some(TestApp {
            base: format!("{root}/fhir"),
            root,
            client: Client::builder()
                .default_headers(headers)
                .build()
                .unwrap_or_default(),
            data_dir: dir.path().to_path_buf(),
            database_url: settings.database_url.clone(),
            handle,
            _dir: dir,
            schema,
        })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else if path.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        };
        self.client.request(method, url)
    }

    pub async fn get(&self, path: &str) -> Response {
        send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        send(
            self.request(Method::POST, path)
                .header("Content-Type", "application/fhir+json")
                .body(body.to_string()),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        send(
            self.request(Method::PUT, path)
                .header("Content-Type", "application/fhir+json")
                .body(body.to_string()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Response {
        send(self.request(Method::DELETE, path)).await
    }
}

/// Another server node over the same database and signing key as a `TestApp` (several
/// stateless nodes over one PostgreSQL); stopped when dropped.
pub struct Node {
    pub base: String,
    pub client: Client,
    handle: actix_web::dev::ServerHandle,
}

impl TestApp {
    pub fn another_node(&self) -> Node {
        self.another_node_with(|_| {})
    }

    /// [`TestApp::another_node`] with changed settings (such as another route to the database).
    pub fn another_node_with(&self, configure: impl FnOnce(&mut Settings)) -> Node {
        let mut settings = Settings::new("127.0.0.1:0", self.database_url.clone());
        settings.workers = Some(2);
        settings.db_pool_size = 4;
        settings.data_dir = Some(self.data_dir.clone());
        configure(&mut settings);
        let app = Application::build(&settings)
            .unwrap_or_else(|err| panic!("the other node did not start: {err:#}"));
        let base = format!("http://127.0.0.1:{}/fhir", app.port());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        Node {
            base,
            client: self.client.clone(),
            handle,
        }
    }
}

impl Node {
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(
            method,
            format!("{}/{}", self.base, path.trim_start_matches('/')),
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
        if let Some((url, schema)) = &self.schema
            && let Ok(mut conn) = PgConnection::establish(url)
        {
            let _ = conn.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

/// A token signed with the key in `data_dir` (the server's own key, mode `local`).
pub fn token_for(
    data_dir: &std::path::Path,
    scope: &str,
    patient: Option<&str>,
    fhir_user: Option<&str>,
) -> String {
    let key = pivot_fhir::auth::keys::load_or_create(data_dir)
        .unwrap_or_else(|err| panic!("signing key: {err:#}"));
    let request = pivot_fhir::auth::token::TokenRequest {
        client_id: "test-client".into(),
        scope: scope.into(),
        patient: patient.map(str::to_string),
        fhir_user: fhir_user.map(str::to_string),
        lifetime_seconds: 600,
    };
    pivot_fhir::auth::token::issue(&key, "pivot-fhir", "pivot-fhir", &request)
        .unwrap_or_else(|err| panic!("token: {err:#}"))
}

/// The PostgreSQL server for tests, from `DATABASE_URL` (only a `postgres://` URL counts).
pub fn postgres_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"))
}

pub async fn send(request: RequestBuilder) -> Response {
    match request.send().await {
        Ok(response) => response,
        Err(err) => panic!("request failed: {err}"),
    }
}

/// The JSON body of a response.
pub async fn body(response: Response) -> Value {
    let text = response.text().await.unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
}

/// A response header as text.
pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Asserts an OperationOutcome error response with `status` and first issue code `code`;
/// returns the outcome.
pub async fn expect_outcome(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert!(
        header(&response, "content-type").starts_with("application/fhir+json"),
        "content type"
    );
    let outcome = body(response).await;
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
    assert_eq!(outcome["issue"][0]["code"], code, "{outcome}");
    outcome
}

/// Like `backend_tests!`, for tests that start their servers themselves: each test function
/// gets the backend to use (the PostgreSQL test is skipped without `DATABASE_URL`).
#[macro_export]
macro_rules! each_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::helpers::postgres_url().is_none() {
                        eprintln!("skipped: DATABASE_URL names no PostgreSQL server");
                        return;
                    }
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// Runs one async test body against each backend: `name::sqlite` always, `name::postgres`
/// when `DATABASE_URL` names a PostgreSQL server (otherwise it says it skipped).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await
                        .unwrap_or_else(|| panic!("SQLite test server did not start"));
                    super::$name(app).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let Some(app) = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await else {
                        eprintln!("skipped: DATABASE_URL names no PostgreSQL server");
                        return;
                    };
                    super::$name(app).await;
                }
            }
        )*
    };
}

/// Headless Chromium for the browser tests: its path; `None` only when it is missing and
/// `PIVOT_SKIP_BROWSER_TESTS=1` asks to skip them. Otherwise a missing browser fails `test`.
pub fn chromium(test: &str) -> Option<String> {
    let found = [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|path| std::path::Path::new(path).exists())
    .map(str::to_string);
    if found.is_none() {
        if std::env::var("PIVOT_SKIP_BROWSER_TESTS").is_ok_and(|v| v == "1") {
            eprintln!("SKIPPED: no chromium; the {test} browser test did not run");
        } else {
            panic!(
                "the {test} browser test needs chromium (apt-get install -y chromium; .ci/run \
                 installs it), or PIVOT_SKIP_BROWSER_TESTS=1 to skip it"
            );
        }
    }
    found
}
