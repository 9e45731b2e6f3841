//! `/dashboard`: 401 and a sign-in form without a token; the form keeps the token in an
//! HttpOnly SameSite=Strict cookie; the page carries a CSP with no external source; and in
//! headless Chromium the charts show the right figures per region.

use chrono::{Datelike, Duration, Utc};
use serde_json::{Value, json};

use crate::attribution::{pivot_entities, recipient};
use crate::backend_tests;
use crate::helpers::{TestApp, body, header, send, token_for};

backend_tests!(
    the_dashboard_needs_a_token,
    the_dashboard_charts_render_in_chromium
);

fn day(days_ago: i64) -> String {
    (Utc::now().date_naive() - Duration::days(days_ago)).to_string()
}

fn instant(days_ago: i64) -> String {
    format!("{}T12:00:00Z", day(days_ago))
}

async fn put(app: &TestApp, resource: Value) {
    let path = format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    );
    let response = app.put(&path, &resource).await;
    let status = response.status().as_u16();
    assert!(
        status == 200 || status == 201,
        "{path}: {}",
        body(response).await
    );
}

fn task(id: &str, patient: &str, status: &str, authored: i64, period: Value) -> Value {
    let mut task = json!({"resourceType":"Task","id":id,"status":status,"intent":"order",
        "code":{"coding":[{"system":"http://hl7.org/fhir/CodeSystem/task-code","code":"fulfill"}]},
        "for":{"reference":format!("Patient/{patient}")},"authoredOn":day(authored),
        "requester":{"reference":"Organization/pe-3"},"owner":{"reference":"Organization/bank"}});
    if !period.is_null() {
        task["executionPeriod"] = period;
    }
    task
}

/// Region 3: three referrals (one closed after 5 days, one accepted, one overdue), one of two
/// recipients screened; region 5: one new referral, nobody screened.
async fn set_up(app: &TestApp) {
    pivot_entities(app).await;
    put(app, recipient("a", "39201", "primary-care")).await;
    put(app, recipient("b", "39202", "maternity")).await;
    put(app, recipient("c", "38801", "primary-care")).await;
    put(
        app,
        task(
            "ta",
            "a",
            "completed",
            40,
            json!({"start":instant(39),"end":instant(35)}),
        ),
    )
    .await;
    put(
        app,
        task("tb", "a", "accepted", 10, json!({"start":instant(9)})),
    )
    .await;
    put(app, task("tc", "b", "requested", 50, Value::Null)).await;
    put(app, task("td", "c", "requested", 3, Value::Null)).await;
    put(app, json!({"resourceType":"Observation","id":"sa","status":"final",
        "category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"survey"}]}],
        "code":{"coding":[{"system":"http://loinc.org","code":"96777-8"}]},
        "subject":{"reference":"Patient/a"},"effectiveDateTime":day(1),"valueString":"done"})).await;
}

async fn the_dashboard_needs_a_token(app: TestApp) {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let dashboard = format!("{}/dashboard", app.root);
    let response = send(browser.get(&dashboard)).await;
    assert_eq!(response.status().as_u16(), 401);
    assert!(header(&response, "content-type").starts_with("text/html"));
    let csp = header(&response, "content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(!csp.contains("http"), "no external source: {csp}");
    let page = response.text().await.unwrap_or_default();
    assert!(page.contains("action=\"/dashboard/session\""), "{page}");
    // a bad token, by header or by the form
    let response = send(
        browser
            .get(&dashboard)
            .header("Authorization", "Bearer nope"),
    )
    .await;
    assert_eq!(response.status().as_u16(), 401);
    let response = send(
        browser
            .post(format!("{dashboard}/session"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("token=nope"),
    )
    .await;
    assert_eq!(response.status().as_u16(), 401);
    assert!(header(&response, "set-cookie").is_empty());
    // a token without the scopes the figures need
    let narrow = token_for(&app.data_dir, "system/Patient.rs", None, None);
    let response = send(
        browser
            .get(&dashboard)
            .header("Authorization", format!("Bearer {narrow}")),
    )
    .await;
    assert_eq!(response.status().as_u16(), 403);
    // the form sets the cookie, which then opens the page
    let token = token_for(&app.data_dir, "system/*.rs", None, None);
    let response = send(
        browser
            .post(format!("{dashboard}/session"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("token={token}")),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let cookie = header(&response, "set-cookie");
    for part in [
        "pivot_dashboard=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/dashboard",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    let pair = cookie.split(';').next().unwrap_or_default().to_string();
    let response = send(browser.get(&dashboard).header("Cookie", &pair)).await;
    assert_eq!(response.status().as_u16(), 200);
    let page = response.text().await.unwrap_or_default();
    assert!(page.contains("<svg") && page.contains("id=\"referrals-chart\""));
    // signing out forgets the cookie
    let response = send(
        browser
            .post(format!("{dashboard}/logout"))
            .header("Cookie", &pair),
    )
    .await;
    assert_eq!(response.status().as_u16(), 303);
    assert!(header(&response, "set-cookie").contains("Max-Age=0"));
    // behind https the cookie is Secure
    let response = send(
        browser
            .post(format!("{dashboard}/session"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Forwarded", "proto=https")
            .body(format!("token={token}")),
    )
    .await;
    assert!(header(&response, "set-cookie").contains("; Secure"));
}

async fn the_dashboard_charts_render_in_chromium(app: TestApp) {
    let Some(chromium) = crate::helpers::chromium("/dashboard") else {
        return;
    };
    set_up(&app).await;
    let token = token_for(&app.data_dir, "system/*.rs", None, None);
    // The browser signs in as a person would: a form posting the token (kept in a local file,
    // never in a URL), then the dashboard opens with the cookie.
    let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("temp dir: {err}"));
    let launcher = dir.path().join("sign-in.html");
    std::fs::write(
        &launcher,
        format!(
            "<!DOCTYPE html><form id=\"f\" method=\"post\" action=\"{}/dashboard/session\">\
             <input name=\"token\" value=\"{token}\"></form>\
             <script>document.getElementById('f').submit()</script>",
            app.root
        ),
    )
    .unwrap_or_else(|err| panic!("launcher: {err}"));
    let profile = dir.path().join("profile");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--virtual-time-budget=15000",
                &format!("--user-data-dir={}", profile.display()),
                "--dump-dom",
                &format!("file://{}", launcher.display()),
            ])
            .output()
    })
    .await
    .unwrap_or_else(|err| panic!("chromium task: {err}"))
    .unwrap_or_else(|err| panic!("chromium: {err}"));
    let dom = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        dom.contains("id=\"referrals-chart\""),
        "not the dashboard: {dom}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bar = |region: &str, metric: &str, value: u32| {
        format!("data-region=\"{region}\" data-metric=\"{metric}\" data-value=\"{value}\"")
    };
    for (region, metric, value) in [
        ("3", "opened", 3),
        ("3", "accepted", 2),
        ("3", "closed", 1),
        ("3", "overdue", 1),
        ("5", "opened", 1),
        ("5", "accepted", 0),
        ("5", "closed", 0),
        ("5", "overdue", 0),
    ] {
        assert!(
            dom.contains(&bar(region, metric, value)),
            "{region} {metric} {value}: {dom}"
        );
    }
    let today = Utc::now().date_naive();
    let this_month = format!("{:04}-{:02}", today.year(), today.month());
    // screening at the end of this month: region 3 one of two, region 5 none
    assert!(
        dom.contains(&format!(
            "data-region=\"3\" data-month=\"{this_month}\" data-value=\"0.5000\""
        )),
        "{dom}"
    );
    assert!(
        dom.contains(&format!(
            "data-region=\"5\" data-month=\"{this_month}\" data-value=\"0.0000\""
        )),
        "{dom}"
    );
    // loop closure of the month the closed referral was authored in: 1 of 1, or 1 of 2 when
    // the overdue one was authored in the same month
    let month_of = |days: i64| {
        let date = today - Duration::days(days);
        format!("{:04}-{:02}", date.year(), date.month())
    };
    let rate = if month_of(40) == month_of(50) {
        "0.5000"
    } else {
        "1.0000"
    };
    let month = month_of(40);
    assert!(
        dom.contains(&format!(
            "data-region=\"3\" data-month=\"{month}\" data-value=\"{rate}\""
        )),
        "{dom}"
    );
}
