//! The API docs page at `/docs` renders its operations in a real browser (Debian's headless
//! `chromium`), from files served by the binary itself: no network beyond the server.

use crate::helpers::{Backend, TestApp, header, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_renders_the_operations_in_chromium() {
    let Some(browser) = crate::helpers::chromium("/docs") else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite)
        .await
        .unwrap_or_else(|| panic!("server did not start"));
    let redirect = send(
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
            .get(format!("{}/docs", app.root)),
    )
    .await;
    assert_eq!(redirect.status().as_u16(), 302);
    assert_eq!(header(&redirect, "location"), "/docs/");
    let missing = send(app.client.get(format!("{}/docs/nothing-here.js", app.root))).await;
    assert_eq!(missing.status().as_u16(), 404);
    let url = format!("{}/docs/", app.root);
    let profile = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
    let args = vec![
        "90".to_string(),
        browser,
        "--headless".into(),
        "--disable-gpu".into(),
        "--no-sandbox".into(),
        "--no-first-run".into(),
        "--disable-dev-shm-usage".into(),
        format!("--user-data-dir={}", profile.path().display()),
        "--virtual-time-budget=20000".into(),
        "--dump-dom".into(),
        url,
    ];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout").args(&args).output()
    })
    .await
    .unwrap_or_else(|err| panic!("{err}"))
    .unwrap_or_else(|err| panic!("cannot run chromium: {err}"));
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains("swagger-ui"),
        "no Swagger UI in the page: {}\n{}",
        dom.chars().take(2000).collect::<String>(),
        String::from_utf8_lossy(&output.stderr)
    );
    // operations rendered from /openapi.json: the operation blocks with their methods and paths
    let operations = dom.matches("opblock-summary-path").count();
    assert!(operations >= 40, "{operations} operations rendered");
    for path in [
        "/fhir/{type}/{id}",
        "/fhir/metadata",
        "/auth/token",
        "/metrics",
    ] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "{path} not rendered"
        );
    }
    assert!(dom.contains("pivot-fhir"), "the title is not rendered");
}
