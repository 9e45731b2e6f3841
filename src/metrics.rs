//! `GET /metrics` in the Prometheus text format (version 0.0.4), written by hand: request counts
//! by interaction, resource type and status, latency histograms per interaction, requests in
//! flight, the database pools, the subscription outbox and the asynchronous jobs. Labels come
//! from bounded sets (the route table's operation ids, the R4 resource types, status codes), never
//! from ids or search values.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use actix_web::{HttpResponse, web};

use crate::api::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when written).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Counters {
    requests: BTreeMap<(&'static str, String, u16), u64>,
    latency: BTreeMap<&'static str, Histogram>,
}

/// The request metrics of one server.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
    in_flight: AtomicI64,
}

/// Counts a request in flight until dropped.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Records a finished request. `resource_type` must be an R4 type or empty.
    pub fn observe(
        &self,
        interaction: &'static str,
        resource_type: &str,
        status: u16,
        seconds: f64,
    ) {
        let Ok(mut counters) = self.counters.lock() else {
            return;
        };
        *counters
            .requests
            .entry((interaction, resource_type.to_string(), status))
            .or_default() += 1;
        let histogram = counters.latency.entry(interaction).or_default();
        if let Some(slot) = BUCKETS.iter().position(|bound| seconds <= *bound)
            && let Some(bucket) = histogram.buckets.get_mut(slot)
        {
            *bucket += 1;
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    fn write_requests(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP pivot_http_requests_in_flight Requests being served.\n\
             # TYPE pivot_http_requests_in_flight gauge\n\
             pivot_http_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let Ok(counters) = self.counters.lock() else {
            return;
        };
        out.push_str(
            "# HELP pivot_http_requests_total Requests answered, by interaction (the OpenAPI \
             operationId), resource type and status.\n# TYPE pivot_http_requests_total counter\n",
        );
        for ((interaction, resource_type, status), n) in &counters.requests {
            let _ = writeln!(
                out,
                "pivot_http_requests_total{{interaction=\"{}\",resource_type=\"{}\",status=\"{status}\"}} {n}",
                escape(interaction),
                escape(resource_type)
            );
        }
        out.push_str(
            "# HELP pivot_http_request_duration_seconds Time to answer, by interaction.\n\
             # TYPE pivot_http_request_duration_seconds histogram\n",
        );
        for (interaction, histogram) in &counters.latency {
            let label = escape(interaction);
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(histogram.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "pivot_http_request_duration_seconds_bucket{{interaction=\"{label}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "pivot_http_request_duration_seconds_bucket{{interaction=\"{label}\",le=\"+Inf\"}} {}\n\
                 pivot_http_request_duration_seconds_sum{{interaction=\"{label}\"}} {}\n\
                 pivot_http_request_duration_seconds_count{{interaction=\"{label}\"}} {}",
                histogram.count, histogram.sum, histogram.count
            );
        }
    }
}

/// Label values are escaped as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`. Holds counts only, no health information; it is open like `/health` so
/// that a scraper needs no token (keep it off public networks).
pub async fn render(state: web::Data<AppState>) -> HttpResponse {
    let mut out = String::with_capacity(4096);
    state.metrics.write_requests(&mut out);
    out.push_str(
        "# HELP pivot_db_pool_connections Database connections open, by pool and state.\n\
         # TYPE pivot_db_pool_connections gauge\n",
    );
    let mut max = String::new();
    for (pool, open, idle, size) in state.store.pool_states() {
        let _ = writeln!(
            out,
            "pivot_db_pool_connections{{pool=\"{pool}\",state=\"idle\"}} {idle}\n\
             pivot_db_pool_connections{{pool=\"{pool}\",state=\"in_use\"}} {}",
            open.saturating_sub(idle)
        );
        let _ = writeln!(
            max,
            "pivot_db_pool_max_connections{{pool=\"{pool}\"}} {size}"
        );
    }
    out.push_str(
        "# HELP pivot_db_pool_max_connections Largest size of each pool.\n\
         # TYPE pivot_db_pool_max_connections gauge\n",
    );
    out.push_str(&max);
    let counts = state
        .store
        .read(|conn| {
            Ok::<_, crate::store::StoreError>((
                crate::store::stats::outbox(conn)?,
                crate::store::stats::jobs(conn)?,
            ))
        })
        .await;
    let up = counts.is_ok();
    let _ = writeln!(
        out,
        "# HELP pivot_database_up Whether the database answered this scrape.\n\
         # TYPE pivot_database_up gauge\npivot_database_up {}",
        u8::from(up)
    );
    match counts {
        Ok((outbox, jobs)) => {
            let pending: i64 = outbox
                .iter()
                .filter(|c| c.status == "pending")
                .map(|c| c.n)
                .sum();
            let _ = writeln!(
                out,
                "# HELP pivot_subscription_outbox_pending Notifications waiting to be delivered.\n\
                 # TYPE pivot_subscription_outbox_pending gauge\n\
                 pivot_subscription_outbox_pending {pending}\n\
                 # HELP pivot_subscription_events Subscription notifications by status.\n\
                 # TYPE pivot_subscription_events gauge"
            );
            for count in &outbox {
                let _ = writeln!(
                    out,
                    "pivot_subscription_events{{status=\"{}\"}} {}",
                    escape(&count.status),
                    count.n
                );
            }
            out.push_str(
                "# HELP pivot_jobs Asynchronous jobs (reindex, export) by kind and status.\n\
                 # TYPE pivot_jobs gauge\n",
            );
            for count in &jobs {
                let _ = writeln!(
                    out,
                    "pivot_jobs{{kind=\"{}\",status=\"{}\"}} {}",
                    escape(&count.kind),
                    escape(&count.status),
                    count.n
                );
            }
        }
        Err(err) => tracing::warn!(error = %err, "metrics: the database did not answer"),
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(out)
}

/// The `X-Request-Id` of a request: the client's when it is short, printable token text, else a
/// new one (so a client cannot write arbitrary text into the logs).
pub fn request_id(header: Option<&str>) -> String {
    match header {
        Some(id)
            if !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id.to_string()
        }
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

/// The resource type a request addressed, from its route: the `{type}` segment when it names an
/// R4 type, else a literal type in the pattern (`/fhir/ValueSet/$expand`), else empty.
pub fn resource_type_of(pattern: &str, type_segment: Option<&str>) -> String {
    if let Some(name) = type_segment.filter(|t| crate::fhir::is_resource_type(t)) {
        return name.to_string();
    }
    pattern
        .strip_prefix("/fhir/")
        .and_then(|rest| rest.split('/').next())
        .filter(|t| crate::fhir::is_resource_type(t))
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let metrics = Metrics::default();
        metrics.observe("read", "Patient", 200, 0.003);
        metrics.observe("read", "Patient", 200, 0.2);
        metrics.observe("read", "Patient", 404, 60.0);
        let mut out = String::new();
        metrics.write_requests(&mut out);
        assert!(out.contains(
            "pivot_http_requests_total{interaction=\"read\",resource_type=\"Patient\",status=\"200\"} 2"
        ));
        assert!(out.contains("le=\"0.005\"} 1\n"));
        assert!(out.contains("le=\"0.25\"} 2\n"));
        assert!(out.contains("le=\"30\"} 2\n"));
        assert!(out.contains("le=\"+Inf\"} 3\n"));
        assert!(out.contains("pivot_http_request_duration_seconds_count{interaction=\"read\"} 3"));
    }

    #[test]
    fn request_ids_are_kept_only_when_harmless() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        assert_ne!(
            request_id(Some("a b\nforged log line")),
            "a b\nforged log line"
        );
        assert_eq!(request_id(None).len(), 36);
        assert_eq!(request_id(Some(&"x".repeat(200))).len(), 36);
    }

    #[test]
    fn resource_types_come_from_bounded_sets() {
        assert_eq!(
            resource_type_of("/fhir/{type}/{id}", Some("Patient")),
            "Patient"
        );
        assert_eq!(resource_type_of("/fhir/{type}/{id}", Some("Nonsense")), "");
        assert_eq!(resource_type_of("/fhir/ValueSet/$expand", None), "ValueSet");
    }
}
