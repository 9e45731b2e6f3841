//! Subscriptions (R4 rest-hook): a real HTTP receiver on loopback stands in for the subscriber.
//! Activation and the endpoint allow-list, criteria matched by the search engine, the channel's
//! headers and payload, retries while the receiver is down, `error` after repeated failures, no
//! loss and no duplicate across a server restart, and several nodes over one database sending
//! each notification once.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use pivot_fhir::Settings;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, body, expect_outcome, postgres_url};

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub authorization: String,
    pub body: String,
}

struct Shared {
    received: Mutex<Vec<Received>>,
    answer: AtomicU16,
}

/// An HTTP listener on loopback that records what it is sent and answers with a chosen status.
pub struct Receiver {
    pub port: u16,
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

async fn record(req: HttpRequest, payload: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    if let Ok(mut received) = shared.received.lock() {
        received.push(Received {
            method: req.method().to_string(),
            path: req.path().to_string(),
            authorization: header("authorization"),
            body: String::from_utf8_lossy(&payload).into_owned(),
        });
    }
    let status = actix_web::http::StatusCode::from_u16(shared.answer.load(Ordering::SeqCst))
        .unwrap_or(actix_web::http::StatusCode::OK);
    HttpResponse::build(status).finish()
}

impl Receiver {
    /// Listens on `port` (0: any free port).
    pub fn start(port: u16) -> Receiver {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|err| panic!("the receiver cannot listen: {err}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            answer: AtomicU16::new(200),
        });
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(record))
        })
        .workers(1)
        .listen(listener)
        .unwrap_or_else(|err| panic!("the receiver cannot serve: {err}"))
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver {
            port,
            shared,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn answer(&self, status: u16) {
        self.shared.answer.store(status, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Waits until `count` requests have arrived (at most 20 s); returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..400 {
            if self.received().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.received()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Settings for tests: loopback endpoints allowed, quick polling and retries.
pub fn quick(settings: &mut Settings) {
    settings.subscriptions.subscription_allow_loopback = true;
    settings.subscriptions.subscription_poll_ms = 50;
    settings.subscriptions.subscription_retry_ms = 100;
}

pub async fn spawn(backend: Backend, configure: impl FnOnce(&mut Settings)) -> Option<TestApp> {
    TestApp::spawn_with(backend, |settings| {
        quick(settings);
        configure(settings);
    })
    .await
}

/// Creates a Subscription and waits until the server has activated it (or set it to error);
/// returns its id and final status.
pub async fn subscribe(app: &TestApp, subscription: Value) -> (String, Value) {
    let response = app.post("Subscription", &subscription).await;
    let status = response.status().as_u16();
    let created = body(response).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "requested", "the client's request");
    let id = created["id"].as_str().unwrap_or_default().to_string();
    for _ in 0..200 {
        let current = body(app.get(&format!("Subscription/{id}")).await).await;
        if current["status"] != "requested" {
            return (id, current);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Subscription/{id} was never activated");
}

pub fn rest_hook(criteria: &str, endpoint: &str, payload: Option<&str>) -> Value {
    let mut channel = json!({"type":"rest-hook","endpoint":endpoint,"header":["Authorization: Bearer cbo-secret"]});
    if let Some(payload) = payload {
        channel["payload"] = json!(payload);
    }
    json!({"resourceType":"Subscription","status":"requested","reason":"test","criteria":criteria,"channel":channel})
}

fn task(id: &str, owner: &str, status: &str) -> Value {
    json!({"resourceType":"Task","id":id,"status":status,"intent":"order","for":{"reference":"Patient/ana"},
        "owner":{"reference":format!("Organization/{owner}")}})
}

crate::each_backend!(
    matching_changes_are_posted_with_the_channel_headers,
    subscriptions_are_checked_and_endpoints_allow_listed,
    a_receiver_that_is_down_gets_the_notification_later,
    repeated_failures_set_the_subscription_to_error,
    nothing_is_lost_or_repeated_across_a_restart,
);

async fn matching_changes_are_posted_with_the_channel_headers(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    let receiver = Receiver::start(0);
    let (_, with_payload) = subscribe(
        &app,
        rest_hook(
            "Task?owner=Organization/bank&status=requested",
            &receiver.url("/fhir"),
            Some("application/fhir+json"),
        ),
    )
    .await;
    assert_eq!(with_payload["status"], "active");
    let (_, without) = subscribe(
        &app,
        rest_hook("Task?owner=Organization/bank", &receiver.url("/ping"), None),
    )
    .await;
    assert_eq!(without["status"], "active");
    app.put("Task/t1", &task("t1", "bank", "requested")).await;
    app.put("Task/other", &task("other", "pantry", "requested"))
        .await;
    let received = receiver.wait_for(2).await;
    // with a payload: an update of the resource at the endpoint as a base
    let put: Vec<&Received> = received.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(put.len(), 1, "{received:?}");
    assert_eq!(put[0].path, "/fhir/Task/t1");
    assert_eq!(put[0].authorization, "Bearer cbo-secret");
    let sent: Value = serde_json::from_str(&put[0].body).unwrap_or_default();
    assert_eq!(sent["id"], "t1");
    assert_eq!(sent["meta"]["versionId"], "1");
    // without: an empty POST
    let post: Vec<&Received> = received.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(post.len(), 1, "{received:?}");
    assert_eq!(post[0].path, "/ping");
    assert!(post[0].body.is_empty());
    // a change that no longer matches the first criteria reaches only the second
    app.put("Task/t1", &task("t1", "bank", "accepted")).await;
    let received = receiver.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 3, "{received:?}");
    assert_eq!(received[2].method, "POST");
}

async fn subscriptions_are_checked_and_endpoints_allow_listed(backend: Backend) {
    let Some(app) = spawn(backend, |s| {
        s.subscriptions.subscription_hosts = vec!["hooks.example.org".into()];
    })
    .await
    else {
        return;
    };
    for (subscription, expression) in [
        (
            rest_hook("Task?no-such-parameter=1", "http://127.0.0.1:9/x", None),
            "Subscription.criteria",
        ),
        (
            rest_hook("NotAType?x=1", "http://127.0.0.1:9/x", None),
            "Subscription.criteria",
        ),
        (
            rest_hook("Task?status=requested", "ftp://127.0.0.1/x", None),
            "Subscription.channel.endpoint",
        ),
        (
            rest_hook(
                "Task?status=requested",
                "http://127.0.0.1:9/x",
                Some("application/xml"),
            ),
            "Subscription.channel.payload",
        ),
    ] {
        let outcome = expect_outcome(
            app.post("Subscription", &subscription).await,
            422,
            "not-supported",
        )
        .await;
        assert!(outcome.to_string().contains(expression), "{outcome}");
    }
    let mut websocket = rest_hook("Task?status=requested", "http://127.0.0.1:9/x", None);
    websocket["channel"]["type"] = json!("websocket");
    expect_outcome(
        app.post("Subscription", &websocket).await,
        422,
        "not-supported",
    )
    .await;
    // an internal host the administrator did not list is never called
    let (_, refused) = subscribe(
        &app,
        rest_hook("Task?status=requested", "http://10.1.2.3:8080/hook", None),
    )
    .await;
    assert_eq!(refused["status"], "error");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("10.1.2.3")),
        "{refused}"
    );
    let (_, listed) = subscribe(
        &app,
        rest_hook(
            "Task?status=requested",
            "https://hooks.example.org/pivot",
            None,
        ),
    )
    .await;
    assert_eq!(listed["status"], "active");
    // a topic-based subscription is active only once its endpoint accepts the handshake
    let receiver = Receiver::start(0);
    receiver.answer(503);
    let backport = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";
    let mut topic = rest_hook(
        "http://example.org/fhir/pivot/SubscriptionTopic/referral-status",
        &receiver.url("/hook"),
        Some("application/fhir+json"),
    );
    topic["_criteria"] = json!({"extension":[{"url":format!("{backport}/backport-filter-criteria"),"valueString":"Task?owner=Organization/bank"}]});
    let (_, refused) = subscribe(&app, topic.clone()).await;
    assert_eq!(refused["status"], "error");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("handshake") && e.contains("503")),
        "{refused}"
    );
    let handshake: Value = serde_json::from_str(&receiver.received()[0].body).unwrap_or_default();
    assert_eq!(handshake["type"], "history");
    assert_eq!(
        handshake["entry"][0]["resource"]["parameter"][3]["valueCode"],
        "handshake"
    );
    receiver.answer(200);
    let (_, accepted) = subscribe(&app, topic.clone()).await;
    assert_eq!(accepted["status"], "active");
    topic["criteria"] = json!("http://example.org/fhir/pivot/SubscriptionTopic/unknown");
    expect_outcome(app.post("Subscription", &topic).await, 422, "not-supported").await;
    // only administrators register subscriptions: a notification is not checked against a
    // user's reach
    let clinician = crate::helpers::token_for(
        &app.data_dir,
        "user/*.cruds",
        None,
        Some("PractitionerRole/dr"),
    );
    let response = crate::helpers::send(
        reqwest::Client::new()
            .post(format!("{}/Subscription", app.base))
            .bearer_auth(clinician)
            .header("Content-Type", "application/fhir+json")
            .body(rest_hook("Patient?", "http://127.0.0.1:9/x", None).to_string()),
    )
    .await;
    expect_outcome(response, 403, "forbidden").await;
    // the CapabilityStatement names the topics
    let statement = body(app.get("metadata").await).await;
    let subscription = statement["rest"][0]["resource"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["type"] == "Subscription"))
        .cloned()
        .unwrap_or_default();
    assert!(
        subscription["extension"]
            .to_string()
            .contains("SubscriptionTopic/referral-status"),
        "{subscription}"
    );
    // a client cannot activate a Subscription itself
    let mut forced = rest_hook("Task?status=requested", "http://10.1.2.3/hook", None);
    forced["status"] = json!("active");
    let created = body(app.post("Subscription", &forced).await).await;
    assert_eq!(created["status"], "requested");
}

async fn a_receiver_that_is_down_gets_the_notification_later(backend: Backend) {
    let Some(app) = spawn(backend, |_| {}).await else {
        return;
    };
    let port = free_port();
    let (_, subscription) = subscribe(
        &app,
        rest_hook(
            "Task?owner=Organization/bank",
            &format!("http://127.0.0.1:{port}/hook"),
            None,
        ),
    )
    .await;
    assert_eq!(subscription["status"], "active");
    app.put("Task/t1", &task("t1", "bank", "requested")).await;
    // refused connections for a while, then the receiver comes up
    tokio::time::sleep(Duration::from_millis(700)).await;
    let receiver = Receiver::start(port);
    let received = receiver.wait_for(1).await;
    assert_eq!(received.len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1, "delivered once");
    let current = body(
        app.get(&format!(
            "Subscription/{}",
            subscription["id"].as_str().unwrap_or_default()
        ))
        .await,
    )
    .await;
    assert_eq!(current["status"], "active");
}

async fn repeated_failures_set_the_subscription_to_error(backend: Backend) {
    let Some(app) = spawn(backend, |s| {
        s.subscriptions.subscription_max_attempts = 3;
        s.subscriptions.subscription_retry_ms = 20;
    })
    .await
    else {
        return;
    };
    let receiver = Receiver::start(0);
    receiver.answer(500);
    let (id, _) = subscribe(
        &app,
        rest_hook("Task?owner=Organization/bank", &receiver.url("/hook"), None),
    )
    .await;
    app.put("Task/t1", &task("t1", "bank", "requested")).await;
    let mut current = Value::Null;
    for _ in 0..200 {
        current = body(app.get(&format!("Subscription/{id}")).await).await;
        if current["status"] == "error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(current["status"], "error", "{current}");
    let error = current["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("3 attempts") && error.contains("500"),
        "{error}"
    );
    assert_eq!(receiver.received().len(), 3);
    // an errored subscription sends nothing more until the client asks again
    receiver.answer(200);
    app.put("Task/t2", &task("t2", "bank", "requested")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.received().len(), 3);
    current["status"] = json!("requested");
    let response = app.put(&format!("Subscription/{id}"), &current).await;
    assert_eq!(response.status().as_u16(), 200);
    for _ in 0..100 {
        if body(app.get(&format!("Subscription/{id}")).await).await["status"] == "active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.put("Task/t3", &task("t3", "bank", "requested")).await;
    assert_eq!(receiver.wait_for(4).await.len(), 4);
}

/// A server process that can be killed.
struct Node {
    child: Child,
    base: String,
}

impl Node {
    async fn start(database_url: &str, port: u16, data_dir: &std::path::Path) -> Node {
        let child = Command::new(env!("CARGO_BIN_EXE_pivot-fhir"))
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                database_url,
                "--subscription-allow-loopback",
                "--subscription-poll-ms",
                "50",
                "--subscription-retry-ms",
                "100",
                "--data-dir",
            ])
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start the server: {err}"));
        let node = Node {
            child,
            base: format!("http://127.0.0.1:{port}/fhir"),
        };
        for _ in 0..200 {
            if reqwest::get(format!("http://127.0.0.1:{port}/health/ready"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not become ready");
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn nothing_is_lost_or_repeated_across_a_restart(backend: Backend) {
    let data = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let (database_url, schema) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", data.path().join("restart.db").display()),
            None,
        ),
        Backend::Postgres => {
            use diesel::connection::SimpleConnection;
            use diesel::{Connection, PgConnection};
            let Some(url) = postgres_url() else { return };
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            let Ok(mut conn) = PgConnection::establish(&url) else {
                return;
            };
            let _ = conn.batch_execute(&format!("CREATE SCHEMA {schema}"));
            let separator = if url.contains('?') { '&' } else { '?' };
            (
                format!("{url}{separator}options=-c%20search_path%3D{schema}"),
                Some((url, schema)),
            )
        }
    };
    let token = crate::helpers::token_for(data.path(), "system/*.cruds", None, None);
    let client = reqwest::Client::new();
    let port = free_port();
    let node = Node::start(&database_url, port, data.path()).await;
    let receiver_port = free_port();
    let endpoint = format!("http://127.0.0.1:{receiver_port}/hook");
    let created = client
        .post(format!("{}/Subscription", node.base))
        .bearer_auth(&token)
        .header("Content-Type", "application/fhir+json")
        .body(rest_hook("Task?owner=Organization/bank", &endpoint, None).to_string())
        .send()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    let id = body(created).await["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for _ in 0..200 {
        let current = body(
            client
                .get(format!("{}/Subscription/{id}", node.base))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap_or_else(|err| panic!("{err}")),
        )
        .await;
        if current["status"] == "active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 0..3 {
        let response = client
            .put(format!("{}/Task/t{n}", node.base))
            .bearer_auth(&token)
            .header("Content-Type", "application/fhir+json")
            .body(task(&format!("t{n}"), "bank", "requested").to_string())
            .send()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(response.status().as_u16(), 201);
    }
    // the receiver is down; the server dies with the notifications still in its outbox
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.kill();
    let receiver = Receiver::start(receiver_port);
    let node = Node::start(&database_url, port, data.path()).await;
    let received = receiver.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received().len(), 3, "each once: {received:?}");
    drop(node);
    if let Some((url, schema)) = schema {
        use diesel::connection::SimpleConnection;
        use diesel::{Connection, PgConnection};
        if let Ok(mut conn) = PgConnection::establish(&url) {
            let _ = conn.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

/// Two server nodes over one PostgreSQL database: every notification is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_send_each_notification_once() {
    if postgres_url().is_none() {
        eprintln!("skipped: DATABASE_URL names no PostgreSQL server");
        return;
    }
    let Some(app) = spawn(Backend::Postgres, |_| {}).await else {
        return;
    };
    let mut settings = Settings::new("127.0.0.1:0", app.database_url.clone());
    settings.data_dir = Some(app.data_dir.clone());
    settings.workers = Some(1);
    settings.db_pool_size = 4;
    quick(&mut settings);
    let second = pivot_fhir::Application::build(&settings)
        .unwrap_or_else(|err| panic!("the second node did not start: {err:#}"));
    let second_handle = second.handle();
    tokio::spawn(second.run_until_stopped());
    let receiver = Receiver::start(0);
    subscribe(
        &app,
        rest_hook("Task?owner=Organization/bank", &receiver.url("/hook"), None),
    )
    .await;
    let writes = (0..30).map(|n| {
        let app = &app;
        async move {
            app.put(
                &format!("Task/t{n}"),
                &task(&format!("t{n}"), "bank", "requested"),
            )
            .await
        }
    });
    futures::future::join_all(writes).await;
    let received = receiver.wait_for(30).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received().len(), 30, "{}", received.len());
    second_handle.stop(false).await;
}
