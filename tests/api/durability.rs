//! Durability: every write the server acknowledged is still there after the process is killed
//! with SIGKILL and started again.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use serde_json::json;

use crate::helpers::postgres_url;

struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(database_url: &str, port: u16, data_dir: &std::path::Path) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_pivot-fhir"))
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                database_url,
                "--data-dir",
            ])
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start the server: {err}"));
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if reqwest::get(format!("{}/health/ready", server.base))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not become ready");
    }

    fn kill(mut self) {
        let _ = self.child.kill(); // SIGKILL: no shutdown, no flush
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

async fn acknowledged_writes_survive_kill(database_url: &str) {
    let port = free_port();
    let data = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let server = Server::start(database_url, port, data.path()).await;
    let token = crate::helpers::token_for(data.path(), "system/*.cruds", None, None);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .unwrap_or_else(|err| panic!("{err}")),
    );
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap_or_default();
    let writes = (0..200).map(|i| {
        let request = client
            .put(format!("{}/fhir/Patient/durable-{i}", server.base))
            .header("Content-Type", "application/fhir+json")
            .body(
                json!({"resourceType":"Patient","id":format!("durable-{i}"),"active":true})
                    .to_string(),
            );
        async move {
            request
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    });
    let statuses = futures::future::join_all(writes).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    server.kill();
    let server = Server::start(database_url, port, data.path()).await;
    for i in 0..200 {
        let status = client
            .get(format!("{}/fhir/Patient/durable-{i}", server.base))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(
            status, 200,
            "Patient/durable-{i} was acknowledged but is lost"
        );
    }
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_acknowledged_writes_across_kill() {
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    acknowledged_writes_survive_kill(&format!("sqlite://{}/durable.db", dir.path().display()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_acknowledged_writes_across_kill() {
    let Some(url) = postgres_url() else {
        eprintln!("skipped: DATABASE_URL names no PostgreSQL server");
        return;
    };
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::establish(&url).unwrap_or_else(|err| panic!("{err}"));
    conn.batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap_or_else(|err| panic!("{err}"));
    let separator = if url.contains('?') { '&' } else { '?' };
    acknowledged_writes_survive_kill(&format!(
        "{url}{separator}options=-c%20search_path%3D{schema}"
    ))
    .await;
    let _ = conn.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
}
