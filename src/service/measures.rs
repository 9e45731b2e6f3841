//! The program's quality measures (`profiles/Measure-*.json`, design C), computed natively: each
//! population is one SQL query over the search index tables (never a resource parsed per
//! patient), so a summary over a whole state's recipients takes one pass of the indexes.
//!
//! A measure yields, per group, a list of units (a recipient, a referral Task or a delivery)
//! with the recipient each belongs to, whether it is excluded from the denominator, whether it
//! is in the numerator and, for continuous variables, its observation. The report (counts,
//! scores, strata by region, Pivot Entity and eligibility category, subject lists) is built
//! from those lists.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{Days, Months, NaiveDate};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text};
use serde_json::{Value, json};

use super::attribution::{ELIGIBILITY_SYSTEM, GROUP_PROFILE};
use crate::error::FhirError;
use crate::fhir::instant::{Micros, format_instant, now_micros};
use crate::fhir::outcome::Issue;
use crate::store::AnyConnection;
use crate::store::sql::{self, Sql};

const DAY: i64 = 86_400_000_000;
const LOINC: &str = "http://loinc.org";
const POPULATION: &str = "http://terminology.hl7.org/CodeSystem/measure-population";
/// The measures this server computes (ids of `profiles/Measure-*.json`).
pub const SUPPORTED: &[&str] = &[
    "pivot-sdoh-screening",
    "pivot-referral-loop-closure",
    "pivot-referral-days-to-closure",
    "pivot-prenatal-first-trimester",
    "pivot-postpartum-visit",
    "pivot-well-care-3-21",
    "pivot-bmi-recorded",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Patient(String),
    Group(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportType {
    Individual,
    SubjectList,
    Summary,
}

impl ReportType {
    pub fn parse(text: &str) -> Option<ReportType> {
        match text {
            "individual" => Some(ReportType::Individual),
            "subject-list" => Some(ReportType::SubjectList),
            "summary" => Some(ReportType::Summary),
            _ => None,
        }
    }

    fn code(self) -> &'static str {
        match self {
            ReportType::Individual => "individual",
            ReportType::SubjectList => "subject-list",
            ReportType::Summary => "summary",
        }
    }
}

/// What to evaluate: the period (inclusive dates), the subject and the kind of report.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub subject: Option<Subject>,
    pub report_type: ReportType,
}

impl Evaluation {
    fn start_micros(&self) -> Micros {
        micros(self.start)
    }

    /// The first instant after the period.
    fn end_micros(&self) -> Micros {
        micros(self.end + Days::new(1))
    }
}

fn micros(date: NaiveDate) -> Micros {
    date.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_micros())
        .unwrap_or_default()
}

/// One unit of a group's population.
#[derive(Debug, Clone, QueryableByName)]
pub struct Unit {
    /// `Patient/x`, `Task/t` or `CarePlan/c`
    #[diesel(sql_type = Text)]
    pub unit: String,
    #[diesel(sql_type = Text)]
    pub patient: String,
    #[diesel(sql_type = BigInt)]
    pub excluded: i64,
    #[diesel(sql_type = BigInt)]
    pub numerator: i64,
    /// Continuous variables: start and end of what is measured (micros).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub from_at: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub to_at: Option<i64>,
}

/// A computed group: its code (as in the Measure) and units.
struct GroupResult {
    code: String,
    units: Vec<Unit>,
    /// Continuous variable: the aggregate (median, p90) over the units' observations.
    aggregate: Option<Aggregate>,
    has_exclusion: bool,
}

#[derive(Clone, Copy)]
enum Aggregate {
    Median,
    P90,
}

/// Codes by system.
type Codes = Vec<(String, Vec<String>)>;

/// The codes of a program ValueSet (`compose.include.concept`), by system.
fn value_set(id: &str) -> Codes {
    static SETS: LazyLock<HashMap<String, Codes>> = LazyLock::new(|| {
        crate::fhir::profiles::artefacts_of("ValueSet")
            .into_iter()
            .filter_map(|vs| {
                let id = vs["id"].as_str()?.to_string();
                let includes = vs["compose"]["include"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|inc| {
                        let system = inc["system"].as_str()?.to_string();
                        let codes = inc["concept"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| c["code"].as_str().map(String::from))
                            .collect::<Vec<_>>();
                        (!codes.is_empty()).then_some((system, codes))
                    })
                    .collect::<Vec<_>>();
                Some((id, includes))
            })
            .collect()
    });
    SETS.get(id).cloned().unwrap_or_default()
}

/// Eligibility codes by program status (`included` or `excluded`), from CodeSystem
/// pivot-eligibility.
fn eligibility(status: &str) -> Vec<String> {
    crate::fhir::profiles::artefacts_of("CodeSystem")
        .into_iter()
        .filter(|cs| cs["url"] == ELIGIBILITY_SYSTEM)
        .flat_map(|cs| cs["concept"].as_array().cloned().unwrap_or_default())
        .filter(|c| {
            c["property"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["code"] == "program-status" && p["valueCode"] == status)
        })
        .filter_map(|c| c["code"].as_str().map(String::from))
        .collect()
}

/// A column compared row by row: on SQLite an expression no index answers, so that a lookup
/// correlated by `resource_pk` is not planned as a scan of every row with that value.
fn text_col(q: &Sql, column: &str) -> String {
    if q.sqlite {
        format!("({column} || '')")
    } else {
        column.to_string()
    }
}

fn int_col(q: &Sql, column: &str) -> String {
    if q.sqlite {
        format!("({column} + 0)")
    } else {
        column.to_string()
    }
}

/// `alias` (a token row) matches one of `codes`.
fn push_codes(q: &mut Sql, alias: &str, codes: &[(String, Vec<String>)]) {
    if codes.is_empty() {
        q.push("1 = 0");
        return;
    }
    q.push("(");
    for (index, (system, list)) in codes.iter().enumerate() {
        if index > 0 {
            q.push(" OR ");
        }
        q.push(&format!("({alias}.system = "));
        q.text(system);
        let code = text_col(q, &format!("{alias}.code"));
        q.push(&format!(" AND {code} IN ("));
        q.text_list(list.iter().map(String::as_str));
        q.push("))");
    }
    q.push(")");
}

/// The conditions that make `r` (a Patient row) an enrolled recipient in the subject.
fn push_enrolled(q: &mut Sql, evaluation: &Evaluation, subject_entity: &Option<SubjectSet>) {
    q.push("r.resource_type = 'Patient' AND r.deleted = 0 AND EXISTS (SELECT 1 FROM search_token e WHERE e.resource_pk = r.pk AND (e.param || '') = 'eligibility-category' AND e.system = ");
    q.text(ELIGIBILITY_SYSTEM);
    let code = text_col(q, "e.code");
    q.push(&format!(" AND {code} IN ("));
    q.text_list(eligibility("included").iter().map(String::as_str));
    q.push(&format!(")) AND NOT EXISTS (SELECT 1 FROM search_token e WHERE e.resource_pk = r.pk AND (e.param || '') = 'eligibility-category' AND {code} IN ("));
    q.text_list(eligibility("excluded").iter().map(String::as_str));
    let (active, system) = (text_col(q, "a.code"), text_col(q, "i.system"));
    q.push(&format!(")) AND NOT EXISTS (SELECT 1 FROM search_token a WHERE a.resource_pk = r.pk AND (a.param || '') = 'active' AND {active} = 'false')"));
    q.push(&format!(" AND NOT EXISTS (SELECT 1 FROM search_token i WHERE i.resource_pk = r.pk AND (i.param || '') = 'identifier' AND {system} = 'http://hl7.org/fhir/sid/us-mbi')"));
    match subject_entity {
        None => {}
        Some(SubjectSet::Patient(id)) => {
            q.push(" AND r.id = ");
            q.text(id);
        }
        Some(SubjectSet::Entity(entity)) => {
            // members of the attribution Group at the end of the period
            q.push(" AND r.id IN (SELECT m.patient_id FROM attribution m WHERE m.entity = ");
            q.text(entity);
            q.push(" AND m.period_start < ");
            q.int(evaluation.end_micros());
            q.push(" AND (m.period_end IS NULL OR m.period_end >= ");
            q.int(evaluation.end_micros());
            q.push("))");
        }
        Some(SubjectSet::Members(group_id)) => {
            q.push(" AND r.id IN (SELECT m.target_id FROM search_reference m JOIN resources g ON g.pk = m.resource_pk WHERE g.resource_type = 'Group' AND g.deleted = 0 AND g.id = ");
            q.text(group_id);
            q.push(" AND m.param = 'member' AND m.target_type = 'Patient')");
        }
    }
}

/// Age condition on `r`: completed years at the end of the period in `[min, max]`.
fn push_age(q: &mut Sql, evaluation: &Evaluation, min: u32, max: Option<u32>) {
    // born on or before end − min years; after end − (max + 1) years
    let latest = evaluation.end.checked_sub_months(Months::new(12 * min));
    let born = int_col(q, "b.start_at");
    q.push(&format!(" AND EXISTS (SELECT 1 FROM search_date b WHERE b.resource_pk = r.pk AND (b.param || '') = 'birthdate' AND {born} < "));
    q.int(latest.map_or(i64::MIN, |d| micros(d + Days::new(1))));
    if let Some(max) = max {
        let earliest = evaluation
            .end
            .checked_sub_months(Months::new(12 * (max + 1)));
        q.push(&format!(" AND {born} >= "));
        q.int(earliest.map_or(i64::MIN, |d| micros(d + Days::new(1))));
    }
    q.push(")");
}

/// `EXISTS` a resource of `resource_type` about patient `patient_column`, alias `o`.
fn push_about(q: &mut Sql, resource_type: &str, patient_column: &str) {
    q.push("EXISTS (SELECT 1 FROM search_reference s JOIN resources o ON o.pk = s.resource_pk WHERE s.target_id = ");
    q.push(patient_column);
    q.push(" AND s.target_type = 'Patient' AND s.param = 'patient' AND o.resource_type = ");
    q.text(resource_type);
    q.push(" AND o.deleted = 0");
}

fn push_status(q: &mut Sql, statuses: &[&str]) {
    let code = text_col(q, "st.code");
    q.push(&format!(" AND EXISTS (SELECT 1 FROM search_token st WHERE st.resource_pk = o.pk AND (st.param || '') = 'status' AND {code} IN ("));
    q.text_list(statuses.iter().copied());
    q.push("))");
}

fn push_code(q: &mut Sql, params: &[&str], codes: &[(String, Vec<String>)]) {
    q.push(" AND EXISTS (SELECT 1 FROM search_token c WHERE c.resource_pk = o.pk AND (c.param || '') IN (");
    q.text_list(params.iter().copied());
    q.push(") AND ");
    push_codes(q, "c", codes);
    q.push(")");
}

/// `o`'s `date` falls in `[from, to)` where both are SQL expressions.
fn push_date_between(q: &mut Sql, from: &str, to: &str) {
    let start = int_col(q, "d.start_at");
    q.push(&format!(" AND EXISTS (SELECT 1 FROM search_date d WHERE d.resource_pk = o.pk AND (d.param || '') = 'date' AND {start} >= {from} AND {start} < {to})"));
}

fn unit_select(q: &mut Sql) {
    let code = text_col(q, "dc.code");
    q.push(&format!("SELECT 'Patient/' || r.id AS unit, r.id AS patient, CAST(CASE WHEN EXISTS (SELECT 1 FROM search_token dc WHERE dc.resource_pk = r.pk AND (dc.param || '') = 'deceased' AND {code} = 'true') THEN 1 ELSE 0 END AS BIGINT) AS excluded, CAST(CASE WHEN "));
}

fn unit_from(q: &mut Sql, evaluation: &Evaluation, subject: &Option<SubjectSet>) {
    q.push(" THEN 1 ELSE 0 END AS BIGINT) AS numerator, CAST(NULL AS BIGINT) AS from_at, CAST(NULL AS BIGINT) AS to_at FROM resources r WHERE ");
    push_enrolled(q, evaluation, subject);
}

/// The subject resolved to what the SQL filters on.
#[derive(Debug, Clone)]
enum SubjectSet {
    Patient(String),
    /// An attribution Group: its Pivot Entity (`Organization/x`)
    Entity(String),
    /// Any other Group: its `member` references
    Members(String),
}

fn resolve_subject(
    conn: &mut AnyConnection,
    subject: &Option<Subject>,
) -> Result<Option<SubjectSet>, FhirError> {
    Ok(match subject {
        None => None,
        Some(Subject::Patient(id)) => Some(SubjectSet::Patient(id.clone())),
        Some(Subject::Group(id)) => {
            let row = crate::store::resources::current(conn, "Group", id)?
                .and_then(|row| row.content)
                .ok_or_else(|| FhirError::NotFound(format!("Group/{id} is not known")))?;
            let group: Value =
                serde_json::from_str(&row).map_err(|err| FhirError::Internal(err.into()))?;
            let attribution = group["meta"]["profile"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p == GROUP_PROFILE);
            match group["managingEntity"]["reference"].as_str() {
                Some(entity) if attribution => Some(SubjectSet::Entity(entity.to_string())),
                _ => Some(SubjectSet::Members(id.clone())),
            }
        }
    })
}

fn sdoh_screening(
    conn: &mut AnyConnection,
    ev: &Evaluation,
    subject: &Option<SubjectSet>,
) -> Result<Vec<GroupResult>, FhirError> {
    let from = |months: u32| {
        ev.end
            .checked_sub_months(Months::new(months))
            .map_or(i64::MIN, |d| micros(d + Days::new(1)))
    };
    let mut q = Sql::for_connection(conn);
    unit_select(&mut q);
    q.push("(");
    push_about(&mut q, "Observation", "r.id");
    push_status(&mut q, &["final", "corrected"]);
    let (start, flag) = (int_col(&q, "d.start_at"), text_col(&q, "h.code"));
    q.push(&format!(" AND EXISTS (SELECT 1 FROM search_date d WHERE d.resource_pk = o.pk AND (d.param || '') = 'date' AND {start} < "));
    q.int(ev.end_micros());
    q.push(&format!(" AND {start} >= CASE WHEN EXISTS (SELECT 1 FROM search_token h WHERE h.resource_pk = r.pk AND (h.param || '') = 'high-risk' AND {flag} = 'true') THEN "));
    q.int(from(6));
    q.push(" ELSE ");
    q.int(from(12));
    q.push(" END) AND (EXISTS (SELECT 1 FROM search_token c WHERE c.resource_pk = o.pk AND (c.param || '') = 'code' AND ");
    push_codes(&mut q, "c", &value_set("pivot-screening-instrument"));
    q.push(") OR EXISTS (SELECT 1 FROM search_token i WHERE i.resource_pk = o.pk AND (i.param || '') = 'instrument') OR EXISTS (SELECT 1 FROM search_reference df WHERE df.resource_pk = o.pk AND (df.param || '') = 'derived-from' AND df.target_type = 'QuestionnaireResponse'))))");
    unit_from(&mut q, ev, subject);
    Ok(vec![GroupResult {
        code: "screened".into(),
        units: sql::run(conn, q)?,
        aggregate: None,
        has_exclusion: true,
    }])
}

const CLOSED: &[&str] = &["completed", "rejected", "cancelled", "failed"];

#[derive(QueryableByName)]
struct TaskRow {
    #[diesel(sql_type = Text)]
    unit: String,
    #[diesel(sql_type = Text)]
    patient: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    authored: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    closed: Option<i64>,
    #[diesel(sql_type = BigInt)]
    has_output: i64,
}

/// Referral Tasks authored in [start, end − 30 days], not entered in error, not sub-tasks;
/// `closed` is executionPeriod.end, which the server sets at the first closed status.
fn referral_tasks(
    conn: &mut AnyConnection,
    ev: &Evaluation,
    subject: &Option<SubjectSet>,
) -> Result<Vec<TaskRow>, FhirError> {
    let mut q = Sql::for_connection(conn);
    q.push("SELECT 'Task/' || t.id AS unit, p.target_id AS patient, st.code AS status, a.start_at AS authored, \
            (SELECT MIN(pe.end_at) FROM search_date pe WHERE pe.resource_pk = t.pk AND (pe.param || '') = 'period' AND pe.end_at < ");
    q.int(crate::search::extract::DATE_MAX);
    q.push(") AS closed, CAST(CASE WHEN EXISTS (SELECT 1 FROM search_reference op WHERE op.resource_pk = t.pk AND (op.param || '') = 'output' AND op.target_type = 'Procedure') THEN 1 ELSE 0 END AS BIGINT) AS has_output \
            FROM resources t \
            JOIN search_token c ON c.resource_pk = t.pk AND (c.param || '') = 'code' AND (c.code || '') = 'fulfill' \
            JOIN search_date a ON a.resource_pk = t.pk AND (a.param || '') = 'authored-on' \
            JOIN search_reference p ON p.resource_pk = t.pk AND (p.param || '') = 'patient' AND p.target_type = 'Patient' \
            JOIN search_token st ON st.resource_pk = t.pk AND (st.param || '') = 'status' \
            WHERE t.resource_type = 'Task' AND t.deleted = 0 AND st.code <> 'entered-in-error' AND a.start_at >= ");
    q.int(ev.start_micros());
    q.push(" AND a.start_at < ");
    q.int(ev.end_micros() - 30 * DAY);
    q.push(" AND NOT EXISTS (SELECT 1 FROM search_reference po WHERE po.resource_pk = t.pk AND (po.param || '') = 'part-of')");
    if subject.is_some() {
        q.push(" AND p.target_id IN (SELECT r.id FROM resources r WHERE ");
        push_enrolled(&mut q, ev, subject);
        q.push(")");
    }
    q.push(" ORDER BY t.id");
    Ok(sql::run(conn, q)?)
}

fn loop_closure(
    conn: &mut AnyConnection,
    ev: &Evaluation,
    subject: &Option<SubjectSet>,
) -> Result<Vec<GroupResult>, FhirError> {
    let tasks = referral_tasks(conn, ev, subject)?;
    let unit = |t: &TaskRow, numerator: bool| Unit {
        unit: t.unit.clone(),
        patient: t.patient.clone(),
        excluded: 0,
        numerator: i64::from(numerator),
        from_at: Some(t.authored),
        to_at: t.closed,
    };
    let in_time = |t: &TaskRow| {
        CLOSED.contains(&t.status.as_str()) && t.closed.is_some_and(|c| c <= t.authored + 30 * DAY)
    };
    Ok(vec![
        GroupResult {
            code: "closed".into(),
            units: tasks.iter().map(|t| unit(t, in_time(t))).collect(),
            aggregate: None,
            has_exclusion: false,
        },
        GroupResult {
            code: "resolved".into(),
            units: tasks
                .iter()
                .map(|t| {
                    unit(
                        t,
                        in_time(t) && t.status == "completed" && t.has_output == 1,
                    )
                })
                .collect(),
            aggregate: None,
            has_exclusion: false,
        },
    ])
}

fn days_to_closure(
    conn: &mut AnyConnection,
    ev: &Evaluation,
    subject: &Option<SubjectSet>,
) -> Result<Vec<GroupResult>, FhirError> {
    let tasks = referral_tasks(conn, ev, subject)?;
    let units: Vec<Unit> = tasks
        .iter()
        .map(|t| {
            let closed = CLOSED.contains(&t.status.as_str())
                && t.closed.is_some_and(|c| c <= ev.end_micros());
            Unit {
                unit: t.unit.clone(),
                patient: t.patient.clone(),
                excluded: 0,
                numerator: i64::from(closed),
                from_at: Some(t.authored),
                to_at: t.closed,
            }
        })
        .collect();
    Ok(vec![
        GroupResult {
            code: "median".into(),
            units: units.clone(),
            aggregate: Some(Aggregate::Median),
            has_exclusion: false,
        },
        GroupResult {
            code: "p90".into(),
            units,
            aggregate: Some(Aggregate::P90),
            has_exclusion: false,
        },
    ])
}

/// Deliveries: maternity CarePlans with a delivery date in the period, of enrolled recipients;
/// `numerator` is the SQL condition on `cp`, `dd` (delivery date) and `edd`.
fn deliveries(
    conn: &mut AnyConnection,
    ev: &Evaluation,
    subject: &Option<SubjectSet>,
    code: &str,
    numerator: impl Fn(&mut Sql),
) -> Result<Vec<GroupResult>, FhirError> {
    let mut q = Sql::for_connection(conn);
    q.push("SELECT 'CarePlan/' || cp.id AS unit, sp.target_id AS patient, CAST(0 AS BIGINT) AS excluded, CAST(CASE WHEN ");
    numerator(&mut q);
    q.push(" THEN 1 ELSE 0 END AS BIGINT) AS numerator, dd.start_at AS from_at, CAST(NULL AS BIGINT) AS to_at \
            FROM resources cp \
            JOIN search_date dd ON dd.resource_pk = cp.pk AND dd.param = 'delivery-date' \
            JOIN search_reference sp ON sp.resource_pk = cp.pk AND (sp.param || '') = 'patient' AND sp.target_type = 'Patient' \
            LEFT JOIN search_date edd ON edd.resource_pk = cp.pk AND (edd.param || '') = 'edd' \
            WHERE cp.resource_type = 'CarePlan' AND cp.deleted = 0 AND dd.start_at >= ");
    q.int(ev.start_micros());
    q.push(" AND dd.start_at < ");
    q.int(ev.end_micros());
    q.push(" AND sp.target_id IN (SELECT r.id FROM resources r WHERE ");
    push_enrolled(&mut q, ev, subject);
    q.push(") ORDER BY cp.id");
    Ok(vec![GroupResult {
        code: code.into(),
        units: sql::run(conn, q)?,
        aggregate: None,
        has_exclusion: true,
    }])
}

fn prenatal(
    conn: &mut AnyConnection,
    ev: &Evaluation,
    subject: &Option<SubjectSet>,
) -> Result<Vec<GroupResult>, FhirError> {
    deliveries(conn, ev, subject, "timely-prenatal", |q| {
        // a finished prenatal visit in [EDD − 280 d, EDD − 176 d]
        push_about(q, "Encounter", "sp.target_id");
        push_status(q, &["finished"]);
        push_code(
            q,
            &["type", "reason-code"],
            &value_set("pivot-prenatal-visit"),
        );
        push_date_between(
            q,
            &format!("edd.start_at - {}", 280 * DAY),
            &format!("edd.start_at - {}", 175 * DAY),
        );
        q.push(")");
    })
}

fn postpartum(
    conn: &mut AnyConnection,
    ev: &Evaluation,
    subject: &Option<SubjectSet>,
) -> Result<Vec<GroupResult>, FhirError> {
    let codes = value_set("pivot-postpartum-visit");
    deliveries(conn, ev, subject, "postpartum-visit", |q| {
        // a finished Encounter or completed Procedure in [delivery + 7 d, delivery + 84 d]
        let window = (
            format!("dd.start_at + {}", 7 * DAY),
            format!("dd.start_at + {}", 85 * DAY),
        );
        q.push("(");
        push_about(q, "Encounter", "sp.target_id");
        push_status(q, &["finished"]);
        push_code(q, &["type", "reason-code"], &codes);
        push_date_between(q, &window.0, &window.1);
        q.push(") OR ");
        push_about(q, "Procedure", "sp.target_id");
        push_status(q, &["completed"]);
        push_code(q, &["code"], &codes);
        push_date_between(q, &window.0, &window.1);
        q.push("))");
    })
}

fn well_care(
    conn: &mut AnyConnection,
    ev: &Evaluation,
    subject: &Option<SubjectSet>,
) -> Result<Vec<GroupResult>, FhirError> {
    let mut q = Sql::for_connection(conn);
    unit_select(&mut q);
    push_about(&mut q, "Encounter", "r.id");
    push_status(&mut q, &["finished"]);
    push_code(
        &mut q,
        &["type", "reason-code"],
        &value_set("pivot-well-care-visit"),
    );
    push_date_between(
        &mut q,
        &ev.start_micros().to_string(),
        &ev.end_micros().to_string(),
    );
    q.push(")");
    unit_from(&mut q, ev, subject);
    push_age(&mut q, ev, 3, Some(21));
    let mut units: Vec<Unit> = sql::run(conn, q)?;
    // no exclusions in this measure
    units.iter_mut().for_each(|u| u.excluded = 0);
    Ok(vec![GroupResult {
        code: "well-care".into(),
        units,
        aggregate: None,
        has_exclusion: false,
    }])
}

fn bmi(
    conn: &mut AnyConnection,
    ev: &Evaluation,
    subject: &Option<SubjectSet>,
) -> Result<Vec<GroupResult>, FhirError> {
    let recorded = |q: &mut Sql, code: &str, from: Micros| {
        push_about(q, "Observation", "r.id");
        push_status(q, &["final", "amended", "corrected"]);
        push_code(q, &["code"], &[(LOINC.to_string(), vec![code.to_string()])]);
        push_date_between(q, &from.to_string(), &ev.end_micros().to_string());
        q.push(")");
    };
    let mut child = Sql::for_connection(conn);
    unit_select(&mut child);
    recorded(&mut child, "59576-9", ev.start_micros());
    unit_from(&mut child, ev, subject);
    push_age(&mut child, ev, 3, Some(17));
    let mut child_units: Vec<Unit> = sql::run(conn, child)?;
    child_units.iter_mut().for_each(|u| u.excluded = 0);
    // adults: in the period or the year before
    let year_before = ev
        .start
        .checked_sub_months(Months::new(12))
        .map_or(i64::MIN, micros);
    let mut adult = Sql::for_connection(conn);
    unit_select(&mut adult);
    recorded(&mut adult, "39156-5", year_before);
    unit_from(&mut adult, ev, subject);
    push_age(&mut adult, ev, 18, None);
    let adult_units: Vec<Unit> = sql::run(conn, adult)?;
    Ok(vec![
        GroupResult {
            code: "child".into(),
            units: child_units,
            aggregate: None,
            has_exclusion: false,
        },
        GroupResult {
            code: "adult".into(),
            units: adult_units,
            aggregate: None,
            has_exclusion: true,
        },
    ])
}

#[derive(QueryableByName)]
struct Attribute {
    #[diesel(sql_type = Text)]
    patient: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    value: String,
}

/// The stratifier values of recipients: region, attributed entity, eligibility categories.
fn attributes(
    conn: &mut AnyConnection,
    only: Option<&str>,
) -> Result<HashMap<String, Vec<(String, String)>>, FhirError> {
    let mut q = Sql::for_connection(conn);
    let filter = |q: &mut Sql| {
        if let Some(id) = only {
            q.push(" AND r.id = ");
            q.text(id);
        }
    };
    q.push("SELECT r.id AS patient, 'region' AS kind, t.code AS value FROM resources r JOIN search_token t ON t.resource_pk = r.pk AND t.param = 'region' WHERE r.resource_type = 'Patient' AND r.deleted = 0");
    filter(&mut q);
    q.push(" UNION ALL SELECT r.id AS patient, 'attributed-entity' AS kind, f.target_type || '/' || f.target_id AS value FROM resources r JOIN search_reference f ON f.resource_pk = r.pk AND f.param = 'attributed-entity' WHERE r.resource_type = 'Patient' AND r.deleted = 0");
    filter(&mut q);
    q.push(" UNION ALL SELECT r.id AS patient, 'eligibility-category' AS kind, t.code AS value FROM resources r JOIN search_token t ON t.resource_pk = r.pk AND t.param = 'eligibility-category' WHERE r.resource_type = 'Patient' AND r.deleted = 0 AND t.code IN (");
    q.text_list(eligibility("included").iter().map(String::as_str));
    q.push(")");
    filter(&mut q);
    let rows: Vec<Attribute> = sql::run(conn, q)?;
    let mut by_patient: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for row in rows {
        by_patient
            .entry(row.patient)
            .or_default()
            .push((row.kind, row.value));
    }
    Ok(by_patient)
}

/// Computes `measure` (a stored Measure resource) for `ev`; `keep` filters the recipients the
/// caller may see (None: all). Returns the MeasureReport.
pub fn evaluate(
    conn: &mut AnyConnection,
    measure: &Value,
    ev: &Evaluation,
    keep: &mut dyn FnMut(&mut AnyConnection, &str) -> Result<bool, FhirError>,
) -> Result<Value, FhirError> {
    let id = measure["id"].as_str().unwrap_or_default();
    let subject = resolve_subject(conn, &ev.subject)?;
    let mut groups = match id {
        "pivot-sdoh-screening" => sdoh_screening(conn, ev, &subject)?,
        "pivot-referral-loop-closure" => loop_closure(conn, ev, &subject)?,
        "pivot-referral-days-to-closure" => days_to_closure(conn, ev, &subject)?,
        "pivot-prenatal-first-trimester" => prenatal(conn, ev, &subject)?,
        "pivot-postpartum-visit" => postpartum(conn, ev, &subject)?,
        "pivot-well-care-3-21" => well_care(conn, ev, &subject)?,
        "pivot-bmi-recorded" => bmi(conn, ev, &subject)?,
        _ => {
            return Err(FhirError::Unprocessable(vec![Issue::error(
                "not-supported",
                format!(
                    "Measure/{id} is not computed by this server; it computes {}",
                    SUPPORTED.join(", ")
                ),
            )]));
        }
    };
    // recipients outside the caller's reach are left out
    let mut allowed: HashMap<String, bool> = HashMap::new();
    for group in &mut groups {
        let mut kept = Vec::with_capacity(group.units.len());
        for unit in group.units.drain(..) {
            let visible = match allowed.get(&unit.patient) {
                Some(v) => *v,
                None => {
                    let v = keep(conn, &unit.patient)?;
                    allowed.insert(unit.patient.clone(), v);
                    v
                }
            };
            if visible {
                kept.push(unit);
            }
        }
        group.units = kept;
    }
    let only = match &ev.subject {
        Some(Subject::Patient(id)) => Some(id.as_str()),
        _ => None,
    };
    let attributes = attributes(conn, only)?;
    Ok(report(measure, ev, &groups, &attributes))
}

fn population(code: &str, count: usize, list: Option<String>) -> Value {
    let mut population = json!({
        "code": {"coding": [{"system": POPULATION, "code": code}]},
        "count": count
    });
    if let Some(list) = list {
        population["subjectResults"] = json!({"reference": format!("#{list}")});
    }
    population
}

fn percentile(values: &mut [f64], aggregate: Aggregate) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(match aggregate {
        Aggregate::Median if n % 2 == 1 => values[n / 2],
        Aggregate::Median => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        // nearest rank
        Aggregate::P90 => values[((n as f64 * 0.9).ceil() as usize).clamp(1, n) - 1],
    })
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Populations and score of `units`; adds subject lists to `contained` when asked.
fn populations(
    units: &[&Unit],
    group: &GroupResult,
    lists: Option<(&mut Vec<Value>, String)>,
) -> (Vec<Value>, Option<Value>) {
    let initial: Vec<&Unit> = units.to_vec();
    let excluded: Vec<&Unit> = units.iter().copied().filter(|u| u.excluded == 1).collect();
    let numerator: Vec<&Unit> = units
        .iter()
        .copied()
        .filter(|u| u.excluded == 0 && u.numerator == 1)
        .collect();
    let mut list_of = {
        let mut lists = lists;
        move |name: &str, members: &[&Unit]| -> Option<String> {
            let (contained, prefix) = lists.as_mut()?;
            let id = format!("{prefix}-{name}");
            contained.push(json!({
                "resourceType": "List", "id": id, "status": "current", "mode": "snapshot",
                "title": name,
                "entry": members.iter().map(|u| json!({"item": {"reference": u.unit}})).collect::<Vec<_>>()
            }));
            Some(id)
        }
    };
    if let Some(aggregate) = group.aggregate {
        let mut values: Vec<f64> = numerator
            .iter()
            .filter_map(|u| Some((u.to_at? - u.from_at?) as f64 / DAY as f64))
            .collect();
        let score = percentile(&mut values, aggregate).map(round2);
        let pops = vec![
            population(
                "initial-population",
                initial.len(),
                list_of("initial-population", &initial),
            ),
            population(
                "measure-population",
                numerator.len(),
                list_of("measure-population", &numerator),
            ),
        ];
        return (
            pops,
            score.map(|v| json!({"value": v, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"})),
        );
    }
    let mut pops = vec![
        population(
            "initial-population",
            initial.len(),
            list_of("initial-population", &initial),
        ),
        population(
            "denominator",
            initial.len(),
            list_of("denominator", &initial),
        ),
    ];
    if group.has_exclusion {
        pops.push(population(
            "denominator-exclusion",
            excluded.len(),
            list_of("denominator-exclusion", &excluded),
        ));
    }
    pops.push(population(
        "numerator",
        numerator.len(),
        list_of("numerator", &numerator),
    ));
    let denominator = initial.len() - excluded.len();
    let score = (denominator > 0)
        .then(|| json!({"value": round2(numerator.len() as f64 / denominator as f64)}));
    (pops, score)
}

fn report(
    measure: &Value,
    ev: &Evaluation,
    groups: &[GroupResult],
    attributes: &HashMap<String, Vec<(String, String)>>,
) -> Value {
    let mut contained: Vec<Value> = Vec::new();
    let subject_lists = ev.report_type == ReportType::SubjectList;
    let mut out_groups = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        let units: Vec<&Unit> = group.units.iter().collect();
        let lists = subject_lists.then(|| (&mut contained, format!("g{index}")));
        let (pops, score) = populations(&units, group, lists);
        let mut out = json!({"code": {"text": group.code}, "population": pops});
        if let Some(score) = score {
            out["measureScore"] = score;
        }
        if ev.report_type != ReportType::Individual {
            let mut stratifiers = Vec::new();
            for kind in ["region", "attributed-entity", "eligibility-category"] {
                let mut strata: BTreeMap<String, Vec<&Unit>> = BTreeMap::new();
                for unit in &units {
                    let values: HashSet<&String> = attributes
                        .get(&unit.patient)
                        .into_iter()
                        .flatten()
                        .filter(|(k, _)| k == kind)
                        .map(|(_, v)| v)
                        .collect();
                    for value in values {
                        strata.entry(value.clone()).or_default().push(unit);
                    }
                }
                let stratum: Vec<Value> = strata
                    .into_iter()
                    .map(|(value, members)| {
                        let (pops, score) = populations(&members, group, None);
                        let mut s = json!({"value": {"text": value}, "population": pops});
                        if let Some(score) = score {
                            s["measureScore"] = score;
                        }
                        s
                    })
                    .collect();
                stratifiers.push(json!({"code": [{"text": kind}], "stratum": stratum}));
            }
            out["stratifier"] = Value::Array(stratifiers);
        }
        out_groups.push(out);
    }
    let mut report = json!({
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": ev.report_type.code(),
        "measure": measure["url"],
        "date": format_instant(now_micros()),
        "period": {"start": ev.start.to_string(), "end": ev.end.to_string()},
        "group": out_groups
    });
    if let Some(notation) = measure.get("improvementNotation") {
        report["improvementNotation"] = notation.clone();
    }
    match &ev.subject {
        Some(Subject::Patient(id)) => {
            report["subject"] = json!({"reference": format!("Patient/{id}")})
        }
        Some(Subject::Group(id)) => report["subject"] = json!({"reference": format!("Group/{id}")}),
        None => {}
    }
    if !contained.is_empty() {
        report["contained"] = Value::Array(contained);
    }
    report
}
