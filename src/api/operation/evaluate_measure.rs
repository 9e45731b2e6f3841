//! `$evaluate-measure` (measure-operation-evaluate-measure.html): `GET|POST
//! [base]/Measure/[id]/$evaluate-measure` with `periodStart`, `periodEnd`, `subject` (a Patient
//! or a Group), `reportType` (`individual`, `subject-list`, `summary`) and the program's
//! `persist=true`, which stores the MeasureReport (201 with its Location). The measures are
//! computed natively (`service::measures`).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::NaiveDate;
use serde_json::{Map, Value};

use super::params::OperationParams;
use crate::api::headers::{negotiate, read_body, require_json_body};
use crate::api::{AppState, response, valid_id};
use crate::auth::Access;
use crate::auth::scopes::Permission;
use crate::error::FhirError;
use crate::fhir::outcome::Issue;
use crate::service::access::visible;
use crate::service::measures::{self, Evaluation, ReportType, Subject};
use crate::service::write_effects::Actor;
use crate::store::resources as rows;

/// The resource types a measure's data comes from: the caller needs to be allowed to search each.
const DATA_TYPES: &[&str] = &[
    "Patient",
    "Observation",
    "Task",
    "Encounter",
    "Procedure",
    "CarePlan",
];

fn date_param(params: &OperationParams, name: &str) -> Result<NaiveDate, FhirError> {
    let text = params.text(name).ok_or_else(|| {
        FhirError::invalid(Issue::error("required", format!("{name} is required")).at(name))
    })?;
    // a dateTime counts by its date
    NaiveDate::parse_from_str(text.get(..10).unwrap_or(&text), "%Y-%m-%d").map_err(|_| {
        FhirError::invalid(
            Issue::error("value", format!("{name} must be a date (YYYY-MM-DD)")).at(name),
        )
    })
}

fn evaluation(params: &OperationParams) -> Result<(Evaluation, bool), FhirError> {
    let start = date_param(params, "periodStart")?;
    let end = date_param(params, "periodEnd")?;
    if end < start {
        return Err(FhirError::invalid(
            Issue::error("value", "periodEnd is before periodStart").at("periodEnd"),
        ));
    }
    let subject = match params.text("subject") {
        None => None,
        Some(text) => {
            let (kind, id) = text.split_once('/').unwrap_or(("Patient", text.as_str()));
            if !crate::fhir::is_valid_id(id) {
                return Err(FhirError::invalid(
                    Issue::error("value", "subject must be Patient/[id] or Group/[id]")
                        .at("subject"),
                ));
            }
            match kind {
                "Patient" => Some(Subject::Patient(id.to_string())),
                "Group" => Some(Subject::Group(id.to_string())),
                _ => {
                    return Err(FhirError::invalid(
                        Issue::error("value", "subject must be Patient/[id] or Group/[id]")
                            .at("subject"),
                    ));
                }
            }
        }
    };
    let report_type = match params.text("reportType") {
        Some(text) => ReportType::parse(&text).ok_or_else(|| {
            FhirError::invalid(
                Issue::error("value", "reportType is individual, subject-list or summary")
                    .at("reportType"),
            )
        })?,
        None if matches!(subject, Some(Subject::Patient(_))) => ReportType::Individual,
        None => ReportType::Summary,
    };
    if report_type == ReportType::Individual && !matches!(subject, Some(Subject::Patient(_))) {
        return Err(FhirError::invalid(
            Issue::error("value", "An individual report needs subject=Patient/[id]")
                .at("reportType"),
        ));
    }
    let persist = match params.text("persist").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(FhirError::invalid(
                Issue::error("value", "persist is true or false").at("persist"),
            ));
        }
    };
    Ok((
        Evaluation {
            start,
            end,
            subject,
            report_type,
        },
        persist,
    ))
}

pub async fn evaluate_measure(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    access: Access,
) -> Result<HttpResponse, FhirError> {
    let id = path.into_inner();
    valid_id(&id)?;
    let measure_grant = access.require("Measure", Permission::Read)?;
    let format = negotiate(&req)?;
    let body = if req.method() == actix_web::http::Method::POST
        && req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .is_none_or(|v| v.to_str().unwrap_or("0") != "0")
    {
        require_json_body(&req)?;
        let bytes = read_body(&req, payload, state.max_body_bytes).await?;
        Some(
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|err| FhirError::bad_request(format!("The body is not JSON: {err}")))?,
        )
    } else {
        None
    };
    let params = OperationParams::read(&req, body.as_ref())?;
    let (ev, persist) = evaluation(&params)?;
    let patient_grant = access.require("Patient", Permission::Search)?;
    for data_type in DATA_TYPES {
        access.require(data_type, Permission::Search)?;
    }
    let report_grant = if persist {
        Some(access.require("MeasureReport", Permission::Create)?)
    } else {
        None
    };
    if let Some(Subject::Group(_)) = &ev.subject {
        access.require("Group", Permission::Read)?;
    }
    let registry = state.registry.current();
    let actor = Actor::of(&access);
    let measure_id = id.clone();
    let evaluated = move |conn: &mut crate::store::AnyConnection| {
        if !measure_grant.is_unlimited()
            && !visible(conn, &registry, "Measure", &measure_id, &measure_grant)?
        {
            return Err(FhirError::NotFound(format!(
                "Measure/{measure_id} is not known"
            )));
        }
        let measure: Value = rows::current(conn, "Measure", &measure_id)?
            .and_then(|row| row.content)
            .and_then(|content| serde_json::from_str(&content).ok())
            .ok_or_else(|| FhirError::NotFound(format!("Measure/{measure_id} is not known")))?;
        // a subject outside the caller's reach reads as unknown
        match &ev.subject {
            Some(Subject::Patient(p))
                if !visible(conn, &registry, "Patient", p, &patient_grant)?
                    || rows::current(conn, "Patient", p)?.is_none_or(|r| r.content.is_none()) =>
            {
                return Err(FhirError::NotFound(format!("Patient/{p} is not known")));
            }
            Some(Subject::Group(g)) => {
                let group_grant = access.require("Group", Permission::Read)?;
                if !visible(conn, &registry, "Group", g, &group_grant)? {
                    return Err(FhirError::NotFound(format!("Group/{g} is not known")));
                }
            }
            _ => {}
        }
        let unlimited = patient_grant.is_unlimited();
        let mut keep = |conn: &mut crate::store::AnyConnection, patient: &str| {
            if unlimited {
                Ok(true)
            } else {
                visible(conn, &registry, "Patient", patient, &patient_grant)
            }
        };
        let report = measures::evaluate(conn, &measure, &ev, &mut keep)?;
        let Some(grant) = &report_grant else {
            return Ok::<_, FhirError>((report, None));
        };
        let Value::Object(map) = report else {
            return Err(FhirError::Internal(anyhow::anyhow!(
                "a report is an object"
            )));
        };
        let written = crate::service::resources::create(conn, &registry, &actor, map)?;
        if !visible(conn, &registry, "MeasureReport", &written.id, grant)? {
            return Err(FhirError::Forbidden(
                "The report would be outside the token's reach".into(),
            ));
        }
        let stored: Map<String, Value> = written
            .content
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_default();
        Ok((Value::Object(stored), Some(written)))
    };
    let (report, written) = if persist {
        state.store.write(evaluated).await?
    } else {
        state.store.read(evaluated).await?
    };
    match written {
        None => Ok(response::json(StatusCode::OK, format, &report)),
        Some(written) => {
            let location = format!(
                "{}/MeasureReport/{}/_history/{}",
                state.fhir_base(&req),
                written.id,
                written.version_id
            );
            let mut builder = response::versioned(
                StatusCode::CREATED,
                written.version_id,
                written.last_updated,
            );
            builder.insert_header(("Location", location));
            builder.content_type(format.content_type);
            Ok(builder.body(response::body_text(format, &report.to_string())))
        }
    }
}
