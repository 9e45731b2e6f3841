//! Durability: every write the server acknowledged is still there after the process is killed
//! with SIGKILL in the middle of a stream of writes and started again, and no transaction is
//! half applied.

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
        // the test's own HTTP client needs a TLS provider even for plain http
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
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

/// What a writer had acknowledged when the server was killed.
#[derive(Default)]
struct Acknowledged {
    patients: Vec<String>,
    transactions: Vec<String>,
}

/// Each transaction Bundle writes this many Observations sharing one identifier.
const TRANSACTION_SIZE: usize = 5;

/// One writer: alternately a Patient (PUT) and a transaction of `TRANSACTION_SIZE`
/// Observations, until the server stops answering.
async fn write_until_killed(client: reqwest::Client, base: String, writer: usize) -> Acknowledged {
    let mut acknowledged = Acknowledged::default();
    for n in 0.. {
        let key = format!("w{writer}-{n}");
        let (request, is_transaction) = if n % 2 == 0 {
            let patient = json!({"resourceType":"Patient","id":key,"active":true});
            (
                client
                    .put(format!("{base}/fhir/Patient/{key}"))
                    .body(patient.to_string()),
                false,
            )
        } else {
            let entries: Vec<_> = (0..TRANSACTION_SIZE)
                .map(|_| {
                    json!({"resource":{"resourceType":"Observation","status":"final",
                        "identifier":[{"system":"urn:transaction","value":key}],
                        "code":{"text":"durability"}},
                        "request":{"method":"POST","url":"Observation"}})
                })
                .collect();
            let bundle = json!({"resourceType":"Bundle","type":"transaction","entry":entries});
            (
                client.post(format!("{base}/fhir")).body(bundle.to_string()),
                true,
            )
        };
        let answer = request
            .header("Content-Type", "application/fhir+json")
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match answer.map(|r| r.status().as_u16()) {
            Ok(200 | 201) if is_transaction => acknowledged.transactions.push(key),
            Ok(200 | 201) => acknowledged.patients.push(key),
            Ok(status) => panic!("{key}: {status} before the kill"),
            Err(_) => break, // killed
        }
    }
    acknowledged
}

/// Writers stream creates and transactions; the server is killed with SIGKILL in the middle.
/// After a restart every acknowledged write is there, and every transaction is whole or absent.
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
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            tokio::spawn(write_until_killed(
                client.clone(),
                server.base.clone(),
                writer,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    let mut acknowledged = Acknowledged::default();
    for writer in writers {
        let done = writer.await.unwrap_or_else(|err| panic!("{err}"));
        acknowledged.patients.extend(done.patients);
        acknowledged.transactions.extend(done.transactions);
    }
    assert!(
        acknowledged.patients.len() > 10 && acknowledged.transactions.len() > 10,
        "too few writes before the kill: {} patients, {} transactions",
        acknowledged.patients.len(),
        acknowledged.transactions.len()
    );
    let server = Server::start(database_url, port, data.path()).await;
    for key in &acknowledged.patients {
        let status = client
            .get(format!("{}/fhir/Patient/{key}", server.base))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(status, 200, "Patient/{key} was acknowledged but is lost");
    }
    // every transaction, acknowledged or cut off by the kill: all of it or nothing
    let found: serde_json::Value = client
        .get(format!(
            "{}/fhir/Observation?code:text=durability&_count=1000&_elements=identifier",
            server.base
        ))
        .send()
        .await
        .unwrap_or_else(|err| panic!("{err}"))
        .json()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let mut per_transaction = std::collections::BTreeMap::<String, usize>::new();
    for entry in found["entry"].as_array().cloned().unwrap_or_default() {
        let key = entry["resource"]["identifier"][0]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *per_transaction.entry(key).or_default() += 1;
    }
    assert!(
        found["link"]
            .as_array()
            .is_some_and(|links| links.iter().all(|l| l["relation"] != "next")),
        "more than one page"
    );
    for (key, count) in &per_transaction {
        assert_eq!(
            *count, TRANSACTION_SIZE,
            "transaction {key} is half applied"
        );
    }
    for key in &acknowledged.transactions {
        assert!(
            per_transaction.contains_key(key),
            "transaction {key} was acknowledged but is lost"
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
