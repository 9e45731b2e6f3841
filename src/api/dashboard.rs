//! `/dashboard`: the program dashboard, an HTML page rendered on the server with inline SVG
//! charts (no script, no external asset, so it works offline and under a CSP with no sources).
//!
//! Access needs a token like the API. A browser signs in with a form that posts the token to
//! `/dashboard/session`, which keeps it in an HttpOnly, SameSite=Strict cookie (Secure when the
//! request came over https) scoped to `/dashboard`; the token never appears in a URL. A client
//! may also send `Authorization: Bearer`. Every request checks the token again, so an expired
//! or revoked token signs the browser out.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use chrono::Utc;

use crate::api::AppState;
use crate::auth::Access;
use crate::auth::scopes::Permission;
use crate::error::FhirError;
use crate::service::access::visible;
use crate::service::dashboard::{self, Figures};

const COOKIE: &str = "pivot_dashboard";
/// Months shown, unless `?months=` says otherwise (1 to 24).
const DEFAULT_MONTHS: u32 = 6;
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";
const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:1em 0}\
td,th{border:1px solid #bbb;padding:.3em .6em;text-align:right}th{background:#eee}\
.chart{margin:1em 0}.legend span{display:inline-block;margin-right:1em}\
.sw{display:inline-block;width:.8em;height:.8em;margin-right:.3em}";
const METRICS: [(&str, &str, &str); 4] = [
    ("opened", "Opened", "#4e79a7"),
    ("accepted", "Accepted", "#59a14f"),
    ("closed", "Closed", "#9c755f"),
    ("overdue", "Overdue", "#e15759"),
];
const LINE_COLOURS: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    builder
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("Cache-Control", "no-store"));
    builder
}

fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    )
}

/// The sign-in page (401), with a message when a token was refused.
fn sign_in(message: Option<&str>) -> HttpResponse {
    let note = message
        .map(|m| format!("<p role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    page(StatusCode::UNAUTHORIZED)
        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
        .body(document(
            "pivot-fhir dashboard: sign in",
            &format!(
                "<h1>Program dashboard</h1>{note}<form method=\"post\" action=\"/dashboard/session\">\
                 <label>Access token <input type=\"password\" name=\"token\" autocomplete=\"off\" required></label> \
                 <button type=\"submit\">Sign in</button></form>"
            ),
        ))
}

/// The token in the session cookie, if any.
fn session_token(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_string())
}

/// The caller's access: the bearer header, else the session cookie.
async fn access_of(req: &HttpRequest, state: &AppState) -> Result<Access, String> {
    let authorization = match req.headers().get(header::AUTHORIZATION) {
        Some(value) => value.to_str().map(str::to_string).ok(),
        None => session_token(req).map(|token| format!("Bearer {token}")),
    };
    let Some(authorization) = authorization else {
        return Err("Sign in with an access token.".into());
    };
    state
        .auth
        .access(Some(&authorization))
        .await
        .map_err(|_| "The token is not valid (or has expired).".to_string())
}

pub async fn show(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let access = match access_of(&req, &state).await {
        Ok(access) => access,
        Err(message) => {
            let shown =
                req.headers().contains_key(header::AUTHORIZATION) || session_token(&req).is_some();
            return sign_in(shown.then_some(message.as_str()));
        }
    };
    match render(&req, &state, access).await {
        Ok(html) => page(StatusCode::OK).body(html),
        Err(FhirError::Forbidden(message)) => page(StatusCode::FORBIDDEN).body(document(
            "Forbidden",
            &format!("<h1>Forbidden</h1><p>{}</p>", escape(&message)),
        )),
        Err(FhirError::Invalid(_)) => page(StatusCode::BAD_REQUEST).body(document(
            "Bad request",
            "<h1>Bad request</h1><p>months is a whole number from 1 to 24.</p>",
        )),
        Err(err) => {
            tracing::error!(error = %err, "the dashboard could not be rendered");
            page(StatusCode::INTERNAL_SERVER_ERROR)
                .body(document("Error", "<h1>The dashboard is not available</h1>"))
        }
    }
}

async fn render(req: &HttpRequest, state: &AppState, access: Access) -> Result<String, FhirError> {
    let months = match web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .ok()
        .and_then(|q| {
            q.iter()
                .find(|(k, _)| k == "months")
                .map(|(_, v)| v.clone())
        }) {
        None => DEFAULT_MONTHS,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|m| (1..=24).contains(m))
            .ok_or_else(|| FhirError::bad_request("months is 1 to 24"))?,
    };
    let mut grants = Vec::new();
    for resource_type in ["Patient", "Task", "Observation"] {
        grants.push(access.require(resource_type, Permission::Search)?);
    }
    let patient_grant = grants.swap_remove(0);
    let registry = state.registry.current();
    let overdue_days = state.referral_overdue_days;
    let today = Utc::now().date_naive();
    let figures = state
        .store
        .read(move |conn| {
            let unlimited = patient_grant.is_unlimited();
            let mut keep = |conn: &mut crate::store::AnyConnection, patient: &str| {
                if unlimited {
                    Ok(true)
                } else {
                    visible(conn, &registry, "Patient", patient, &patient_grant)
                }
            };
            dashboard::figures(conn, today, months, overdue_days, &mut keep)
        })
        .await?;
    Ok(html(&figures, today, overdue_days))
}

fn percent(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{:.0}%", v * 100.0))
}

fn html(figures: &Figures, today: chrono::NaiveDate, overdue_days: u32) -> String {
    let first = figures
        .months
        .first()
        .map(|m| m.label.clone())
        .unwrap_or_default();
    let mut body = format!(
        "<h1>Program dashboard</h1><p>Referrals and screening per region, {} to {} \
         (overdue: open and authored more than {overdue_days} days ago).</p>\
         <form method=\"post\" action=\"/dashboard/logout\"><button type=\"submit\">Sign out</button></form>",
        escape(&first),
        today
    );
    // the table
    body.push_str("<table id=\"figures\"><thead><tr><th>Region</th><th>Opened</th><th>Accepted</th><th>Closed</th><th>Overdue</th><th>Loop closure (latest month)</th><th>Screening rate (latest)</th></tr></thead><tbody>");
    for (region, f) in &figures.regions {
        let latest = |rates: &[Option<f64>]| rates.iter().rev().find_map(|r| *r);
        body.push_str(&format!(
            "<tr data-region=\"{r}\"><th>{r}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            f.opened,
            f.accepted,
            f.closed,
            f.overdue,
            percent(latest(&f.closure_rate)),
            percent(latest(&f.screening_rate)),
            r = escape(region)
        ));
    }
    body.push_str("</tbody></table>");
    body.push_str(&bar_chart(figures));
    body.push_str(&line_chart(
        figures,
        "closure",
        "Loop-closure rate (referrals authored in the month, closed within 30 days)",
        |f| &f.closure_rate,
    ));
    body.push_str(&line_chart(
        figures,
        "screening",
        "SDOH screening rate at the end of each month",
        |f| &f.screening_rate,
    ));
    document("pivot-fhir dashboard", &body)
}

/// Grouped bars: per region, opened, accepted, closed and overdue.
fn bar_chart(figures: &Figures) -> String {
    let max = figures
        .regions
        .values()
        .flat_map(|f| [f.opened, f.accepted, f.closed, f.overdue])
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let (bar, gap, height, top, left) = (18.0, 24.0, 200.0, 20.0, 40.0);
    let group_width = bar * 4.0 + gap;
    let width = left + group_width * figures.regions.len().max(1) as f64 + gap;
    let mut svg = format!(
        "<h2>Referrals per region</h2><div class=\"legend\">{}</div>\
         <svg class=\"chart\" id=\"referrals-chart\" role=\"img\" aria-label=\"Referrals per region\" \
         xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{:.0}\" viewBox=\"0 0 {width:.0} {:.0}\">",
        METRICS
            .iter()
            .map(|(_, label, colour)| format!(
                "<span><i class=\"sw\" style=\"background:{colour}\"></i>{label}</span>"
            ))
            .collect::<String>(),
        height + top + 40.0,
        height + top + 40.0
    );
    svg.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{width:.0}\" y2=\"{}\" stroke=\"#888\"/>",
        top + height,
        top + height
    ));
    for (index, (region, f)) in figures.regions.iter().enumerate() {
        let x0 = left + gap / 2.0 + group_width * index as f64;
        for (m, (key, label, colour)) in METRICS.iter().enumerate() {
            let value = match *key {
                "opened" => f.opened,
                "accepted" => f.accepted,
                "closed" => f.closed,
                _ => f.overdue,
            };
            let h = height * value as f64 / max;
            let x = x0 + bar * m as f64;
            svg.push_str(&format!(
                "<rect data-region=\"{r}\" data-metric=\"{key}\" data-value=\"{value}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>Region {r}: {label} {value}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{value}</text>",
                top + height - h,
                bar - 2.0,
                x + (bar - 2.0) / 2.0,
                top + height - h - 3.0,
                r = escape(region)
            ));
        }
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">Region {}</text>",
            x0 + bar * 2.0,
            top + height + 16.0,
            escape(region)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// One line per region over the months, 0 to 100%.
fn line_chart(
    figures: &Figures,
    id: &str,
    title: &str,
    series: impl Fn(&dashboard::RegionFigures) -> &Vec<Option<f64>>,
) -> String {
    let (width, height, top, left, right) = (560.0, 180.0, 20.0, 44.0, 20.0);
    let n = figures.months.len().max(1);
    let step = if n > 1 {
        (width - left - right) / (n - 1) as f64
    } else {
        0.0
    };
    let x_of = |i: usize| left + step * i as f64;
    let y_of = |v: f64| top + height * (1.0 - v);
    let mut svg = format!(
        "<h2>{}</h2><svg class=\"chart\" id=\"{id}-chart\" role=\"img\" aria-label=\"{}\" \
         xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{:.0}\" viewBox=\"0 0 {width:.0} {:.0}\">",
        escape(title),
        escape(title),
        height + top + 50.0,
        height + top + 50.0
    );
    for tick in [0.0, 0.5, 1.0] {
        svg.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.0}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.0}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{:.0}%</text>",
            width - right,
            left - 4.0,
            y_of(tick) + 3.0,
            tick * 100.0,
            y = y_of(tick)
        ));
    }
    for (i, month) in figures.months.iter().enumerate() {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x_of(i),
            top + height + 14.0,
            escape(&month.label)
        ));
    }
    for (index, (region, f)) in figures.regions.iter().enumerate() {
        let colour = LINE_COLOURS[index % LINE_COLOURS.len()];
        let values = series(f);
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x_of(i), y_of(v))))
            .collect();
        if points.len() > 1 {
            svg.push_str(&format!(
                "<polyline data-region=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                escape(region),
                points.join(" ")
            ));
        }
        for (i, value) in values.iter().enumerate() {
            let Some(value) = value else { continue };
            let month = figures
                .months
                .get(i)
                .map(|m| m.label.as_str())
                .unwrap_or("");
            svg.push_str(&format!(
                "<circle data-region=\"{r}\" data-month=\"{m}\" data-value=\"{value:.4}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{colour}\"><title>Region {r}, {m}: {}</title></circle>",
                x_of(i),
                y_of(*value),
                percent(Some(*value)),
                r = escape(region),
                m = escape(month)
            ));
        }
        svg.push_str(&format!(
            "<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"10\" fill=\"{colour}\">■ Region {}</text>",
            left + 80.0 * (index % 6) as f64,
            top + height + 32.0 + 12.0 * (index / 6) as f64,
            escape(region)
        ));
    }
    svg.push_str("</svg>");
    svg
}

#[derive(serde::Deserialize)]
struct SessionForm {
    token: String,
}

fn session_cookie(
    req: &HttpRequest,
    state: &AppState,
    value: &str,
    max_age: Option<i64>,
) -> String {
    let secure = req.connection_info().scheme() == "https"
        || state
            .base_url
            .as_deref()
            .is_some_and(|b| b.starts_with("https://"));
    let mut cookie = format!("{COOKIE}={value}; Path=/dashboard; HttpOnly; SameSite=Strict");
    if secure {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    cookie
}

/// `POST /dashboard/session` (form `token=`): keeps a valid token in the session cookie.
pub async fn open_session(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Ok(form) = serde_urlencoded::from_bytes::<SessionForm>(&body) else {
        return sign_in(Some("Send the access token in the form."));
    };
    let token = form.token.trim();
    // a cookie value takes no separators; tokens are base64url JWTs
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return sign_in(Some("The token is not valid (or has expired)."));
    }
    if state
        .auth
        .access(Some(&format!("Bearer {token}")))
        .await
        .is_err()
    {
        return sign_in(Some("The token is not valid (or has expired)."));
    }
    let cookie = session_cookie(&req, &state, token, None);
    let mut response = page(StatusCode::OK);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.insert_header((header::SET_COOKIE, value));
    }
    // A page of the dashboard's own origin moves on, so the SameSite=Strict cookie goes along
    // even when the sign-in form was posted from elsewhere.
    response.body(document(
        "Signed in",
        "<meta http-equiv=\"refresh\" content=\"0;url=/dashboard\"><p>Signed in. <a href=\"/dashboard\">Open the dashboard</a>.</p>",
    ))
}

/// `POST /dashboard/logout`: forgets the session cookie.
pub async fn close_session(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let cookie = session_cookie(&req, &state, "", Some(0));
    let mut response = page(StatusCode::SEE_OTHER);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.insert_header((header::SET_COOKIE, value));
    }
    response
        .insert_header((header::LOCATION, "/dashboard"))
        .finish()
}
