//! The program dashboard's figures, per region: referrals opened, accepted and closed in the
//! window, overdue now; the loop-closure rate of each month's referrals and the SDOH screening
//! rate at the end of each month. Computed from the search index like the measures.

use std::collections::BTreeMap;

use chrono::{Datelike, Days, Months, NaiveDate};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text};
use serde_json::Value;

use super::measures::{self, Evaluation, ReportType};
use crate::error::FhirError;
use crate::search::extract::{DATE_MAX, DATE_MIN};
use crate::store::AnyConnection;
use crate::store::sql::{self, Sql};

const DAY: i64 = 86_400_000_000;
const OPEN: &[&str] = &["requested", "accepted", "in-progress", "on-hold"];
const CLOSED: &[&str] = &["completed", "rejected", "cancelled", "failed"];
/// Regions without a code (recipients whose region is unknown) are shown under this name.
pub const NO_REGION: &str = "none";

/// One month of the window: its first day and the last day counted (today for this month).
#[derive(Debug, Clone)]
pub struct Month {
    pub label: String,
    pub first: NaiveDate,
    pub last: NaiveDate,
}

#[derive(Debug, Clone, Default)]
pub struct RegionFigures {
    pub opened: u64,
    pub accepted: u64,
    pub closed: u64,
    pub overdue: u64,
    /// Per month of the window: referrals authored that month, closed within 30 days, as a
    /// share (None without referrals).
    pub closure_rate: Vec<Option<f64>>,
    /// Per month: the SDOH screening measure's score at the month's last day.
    pub screening_rate: Vec<Option<f64>>,
}

pub struct Figures {
    pub months: Vec<Month>,
    pub regions: BTreeMap<String, RegionFigures>,
}

#[derive(QueryableByName)]
struct TaskRow {
    #[diesel(sql_type = Text)]
    patient: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    authored: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    started: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    closed: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    region: Option<String>,
}

fn micros(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_micros())
        .unwrap_or_default()
}

/// The `count` months ending with `today`'s.
pub fn months(today: NaiveDate, count: u32) -> Vec<Month> {
    let this_month = today.with_day(1).unwrap_or(today);
    (0..count)
        .rev()
        .filter_map(|back| {
            let first = this_month.checked_sub_months(Months::new(back))?;
            let next = first.checked_add_months(Months::new(1))?;
            let last = (next - Days::new(1)).min(today);
            Some(Month {
                label: first.format("%Y-%m").to_string(),
                first,
                last,
            })
        })
        .collect()
}

/// The figures for the `count` months up to `today`; `keep` says which recipients the caller
/// may see.
pub fn figures(
    conn: &mut AnyConnection,
    today: NaiveDate,
    count: u32,
    overdue_days: u32,
    keep: &mut dyn FnMut(&mut AnyConnection, &str) -> Result<bool, FhirError>,
) -> Result<Figures, FhirError> {
    let months = months(today, count);
    let window_start = months.first().map_or(micros(today), |m| micros(m.first));
    let tomorrow = micros(today + Days::new(1));
    let mut q = Sql::for_connection(conn);
    q.push("SELECT p.target_id AS patient, st.code AS status, a.start_at AS authored, \
            (SELECT MIN(pe.start_at) FROM search_date pe WHERE pe.resource_pk = t.pk AND (pe.param || '') = 'period' AND pe.start_at > ");
    q.int(DATE_MIN);
    q.push(") AS started, (SELECT MIN(pe.end_at) FROM search_date pe WHERE pe.resource_pk = t.pk AND (pe.param || '') = 'period' AND pe.end_at < ");
    q.int(DATE_MAX);
    q.push(") AS closed, (SELECT MIN(rt.code) FROM resources pr JOIN search_token rt ON rt.resource_pk = pr.pk AND (rt.param || '') = 'region' WHERE pr.resource_type = 'Patient' AND pr.id = p.target_id AND pr.deleted = 0) AS region \
            FROM resources t \
            JOIN search_token c ON c.resource_pk = t.pk AND (c.param || '') = 'code' AND (c.code || '') = 'fulfill' \
            JOIN search_date a ON a.resource_pk = t.pk AND (a.param || '') = 'authored-on' \
            JOIN search_reference p ON p.resource_pk = t.pk AND (p.param || '') = 'patient' AND p.target_type = 'Patient' \
            JOIN search_token st ON st.resource_pk = t.pk AND (st.param || '') = 'status' \
            WHERE t.resource_type = 'Task' AND t.deleted = 0 AND st.code <> 'entered-in-error' \
            AND NOT EXISTS (SELECT 1 FROM search_reference po WHERE po.resource_pk = t.pk AND (po.param || '') = 'part-of')");
    let tasks: Vec<TaskRow> = sql::run(conn, q)?;
    let mut regions: BTreeMap<String, RegionFigures> = BTreeMap::new();
    let blank = || RegionFigures {
        closure_rate: vec![None; months.len()],
        screening_rate: vec![None; months.len()],
        ..RegionFigures::default()
    };
    let overdue_before = micros(today) - i64::from(overdue_days) * DAY;
    // per region and month: (authored, closed within 30 days)
    let mut closure: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut allowed: BTreeMap<String, bool> = BTreeMap::new();
    for task in tasks {
        let visible = match allowed.get(&task.patient) {
            Some(v) => *v,
            None => {
                let v = keep(conn, &task.patient)?;
                allowed.insert(task.patient.clone(), v);
                v
            }
        };
        if !visible {
            continue;
        }
        let region = task.region.clone().unwrap_or_else(|| NO_REGION.into());
        let figures = regions.entry(region.clone()).or_insert_with(blank);
        let in_window = |t: i64| t >= window_start && t < tomorrow;
        let is_closed = CLOSED.contains(&task.status.as_str());
        if in_window(task.authored) {
            figures.opened += 1;
        }
        if task.started.is_some_and(in_window) {
            figures.accepted += 1;
        }
        if is_closed && task.closed.is_some_and(in_window) {
            figures.closed += 1;
        }
        if OPEN.contains(&task.status.as_str()) && task.authored < overdue_before {
            figures.overdue += 1;
        }
        let per_month = closure
            .entry(region)
            .or_insert_with(|| vec![(0, 0); months.len()]);
        if let Some(index) = months.iter().position(|m| {
            task.authored >= micros(m.first) && task.authored < micros(m.last + Days::new(1))
        }) {
            per_month[index].0 += 1;
            if is_closed && task.closed.is_some_and(|c| c <= task.authored + 30 * DAY) {
                per_month[index].1 += 1;
            }
        }
    }
    for (region, per_month) in closure {
        if let Some(figures) = regions.get_mut(&region) {
            figures.closure_rate = per_month
                .iter()
                .map(|(all, closed)| (*all > 0).then(|| *closed as f64 / *all as f64))
                .collect();
        }
    }
    // the screening measure at each month's end, by region
    let screening = Value::Object(
        serde_json::json!({
            "id": "pivot-sdoh-screening",
            "url": "http://example.org/fhir/pivot/Measure/pivot-sdoh-screening"
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );
    for (index, month) in months.iter().enumerate() {
        let evaluation = Evaluation {
            start: month.first,
            end: month.last,
            subject: None,
            report_type: ReportType::Summary,
        };
        let report = measures::evaluate(conn, &screening, &evaluation, keep)?;
        let strata = report["group"][0]["stratifier"]
            .as_array()
            .and_then(|list| list.iter().find(|s| s["code"][0]["text"] == "region"))
            .and_then(|s| s["stratum"].as_array())
            .cloned()
            .unwrap_or_default();
        for stratum in strata {
            let Some(region) = stratum["value"]["text"].as_str() else {
                continue;
            };
            let figures = regions.entry(region.to_string()).or_insert_with(blank);
            figures.screening_rate[index] = stratum["measureScore"]["value"].as_f64();
        }
    }
    Ok(Figures { months, regions })
}
