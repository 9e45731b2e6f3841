//! A PostgreSQL outage: while the database cannot be reached the server answers 503 with an
//! OperationOutcome and reports itself not ready; once the database is back it recovers by
//! itself, without a restart. The outage is made by a TCP relay between the server and
//! PostgreSQL that drops every connection and refuses new ones (stopping the shared PostgreSQL
//! server would disturb the other tests).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{Backend, TestApp, body, send};

/// A TCP relay to PostgreSQL that can be cut and restored.
struct Relay {
    address: String,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|err| panic!("{err}"));
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = watch::channel(0u64);
        let (relay_up, relay_cut) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !relay_up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cuts = relay_cut.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Relay { address, up, cut }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_rides_out_a_database_outage() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        eprintln!("skipped: DATABASE_URL names no PostgreSQL server");
        return;
    };
    // the same database and schema, reached through the relay
    let Some(host_start) = app.database_url.find('@').map(|at| at + 1) else {
        panic!("no host in {}", app.database_url)
    };
    let host_end = app.database_url[host_start..]
        .find('/')
        .map_or(app.database_url.len(), |slash| host_start + slash);
    let relay = Relay::start(app.database_url[host_start..host_end].to_string()).await;
    let relayed_url = format!(
        "{}{}{}",
        &app.database_url[..host_start],
        relay.address,
        &app.database_url[host_end..]
    );
    let node = app.another_node_with(|settings| settings.database_url = relayed_url);
    let ready = |node: &crate::helpers::Node| {
        let url = node.base.trim_end_matches("/fhir").to_string() + "/health/ready";
        let client = node.client.clone();
        async move { send(client.get(url)).await.status().as_u16() }
    };
    let patient = json!({"resourceType":"Patient","id":"before"});
    let created = send(
        node.request(Method::PUT, "Patient/before")
            .header("Content-Type", "application/fhir+json")
            .body(patient.to_string()),
    )
    .await;
    assert_eq!(created.status().as_u16(), 201);
    assert_eq!(ready(&node).await, 200);

    relay.down();
    let started = Instant::now();
    for _ in 0..3 {
        let read = send(node.request(Method::GET, "Patient/before")).await;
        assert_eq!(read.status().as_u16(), 503);
        let outcome = body(read).await;
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["code"], "transient", "{outcome}");
        let write = send(
            node.request(Method::PUT, "Patient/during")
                .header("Content-Type", "application/fhir+json")
                .body(json!({"resourceType":"Patient","id":"during"}).to_string()),
        )
        .await;
        assert_eq!(write.status().as_u16(), 503);
    }
    assert_eq!(ready(&node).await, 503);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "answers during the outage took {:?}",
        started.elapsed()
    );

    relay.restore();
    let mut recovered = false;
    for _ in 0..60 {
        if send(node.request(Method::GET, "Patient/before"))
            .await
            .status()
            .as_u16()
            == 200
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        recovered,
        "the server did not recover after the database came back"
    );
    assert_eq!(ready(&node).await, 200);
    let written = send(
        node.request(Method::PUT, "Patient/after")
            .header("Content-Type", "application/fhir+json")
            .body(json!({"resourceType":"Patient","id":"after"}).to_string()),
    )
    .await;
    assert_eq!(written.status().as_u16(), 201);
    // nothing of the refused write was kept
    assert_eq!(app.get("Patient/during").await.status().as_u16(), 404);
}
