//! Attribution of recipients to Pivot Entities (design B1, B4.9).
//!
//! On every Patient write, before validation, the server derives the region from the current
//! residence (ConceptMap `pivot-residence-to-region`: ZIP5, else county) and sets
//! `pivot-attributed-entity` to the Pivot Entity serving that region (an Organization of type
//! `pivot-entity` whose `pivot-region` is that region). Excluded recipients (an excluded
//! eligibility category of CodeSystem `pivot-eligibility`, an MBI or a Medicare `MC`
//! identifier) are attributed to nobody.
//!
//! After the write, in the same transaction, the `attribution` table is brought in line: a
//! change of entity closes the current membership and opens one in the new entity's Group. Each
//! Pivot Entity has one Group (`Group/pivot-attribution-{entity id}`), stored without members;
//! reads and searches show the `attribution` rows as its members, with their periods.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text};
use serde_json::{Map, Value, json};

use super::write_effects::Actor;
use crate::error::FhirError;
use crate::fhir::instant::{Micros, format_instant};
use crate::search::registry::Registry;
use crate::store::AnyConnection;
use crate::store::resources as rows;
use crate::store::sql::{self, Sql};

const BASE: &str = "http://example.org/fhir/pivot";
pub const REGION_EXT: &str = "http://example.org/fhir/pivot/StructureDefinition/pivot-region";
pub const ENTITY_EXT: &str =
    "http://example.org/fhir/pivot/StructureDefinition/pivot-attributed-entity";
pub const ELIGIBILITY_EXT: &str =
    "http://example.org/fhir/pivot/StructureDefinition/pivot-eligibility-category";
pub const ELIGIBILITY_SYSTEM: &str = "http://example.org/fhir/pivot/CodeSystem/pivot-eligibility";
const REGION_SYSTEM: &str = "http://example.org/fhir/pivot/CodeSystem/pivot-region";
const ORG_TYPE_SYSTEM: &str = "http://example.org/fhir/pivot/CodeSystem/pivot-organization-type";
pub const GROUP_PROFILE: &str =
    "http://example.org/fhir/pivot/StructureDefinition/pivot-attribution-group";
/// Ids of the attribution Groups: this prefix and the Pivot Entity's id.
pub const GROUP_PREFIX: &str = "pivot-attribution-";

/// The residence-to-region map, from the embedded ConceptMap (deployment data).
struct Residence {
    by_zip: HashMap<String, String>,
    /// county names in lower case
    by_county: HashMap<String, String>,
}

static RESIDENCE: LazyLock<Residence> = LazyLock::new(|| {
    let mut residence = Residence {
        by_zip: HashMap::new(),
        by_county: HashMap::new(),
    };
    for map in crate::fhir::profiles::artefacts_of("ConceptMap") {
        if map["url"] != format!("{BASE}/ConceptMap/pivot-residence-to-region") {
            continue;
        }
        for group in map["group"].as_array().into_iter().flatten() {
            let source = group["source"].as_str().unwrap_or_default();
            for element in group["element"].as_array().into_iter().flatten() {
                let (Some(code), Some(region)) = (
                    element["code"].as_str(),
                    element["target"][0]["code"].as_str(),
                ) else {
                    continue;
                };
                if source.ends_with("/pivot-zip") {
                    residence.by_zip.insert(code.into(), region.into());
                } else if source.ends_with("/pivot-county") {
                    residence
                        .by_county
                        .insert(code.to_lowercase(), region.into());
                }
            }
        }
    }
    residence
});

/// Eligibility codes whose `program-status` is `excluded` (CodeSystem pivot-eligibility).
static EXCLUDED: LazyLock<HashSet<String>> = LazyLock::new(|| {
    crate::fhir::profiles::artefacts_of("CodeSystem")
        .into_iter()
        .filter(|cs| cs["url"] == ELIGIBILITY_SYSTEM)
        .flat_map(|cs| cs["concept"].as_array().cloned().unwrap_or_default())
        .filter(|concept| {
            concept["property"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["code"] == "program-status" && p["valueCode"] == "excluded")
        })
        .filter_map(|concept| concept["code"].as_str().map(String::from))
        .collect()
});

/// The region of the current residential address, if the map knows it: the first address
/// that is not old and has no period end, by ZIP5, else by county (`district`).
pub fn region_of_residence(patient: &Map<String, Value>) -> Option<String> {
    let addresses = patient.get("address")?.as_array()?;
    let current = addresses.iter().filter(|a| {
        a["use"] != "old" && a.pointer("/period/end").is_none() && a["type"] != "postal"
    });
    for address in current {
        if let Some(zip) = address["postalCode"].as_str() {
            let zip5: String = zip.chars().take(5).collect();
            if let Some(region) = RESIDENCE.by_zip.get(&zip5) {
                return Some(region.clone());
            }
        }
        if let Some(county) = address["district"].as_str() {
            let county = county.trim().trim_end_matches(" County").to_lowercase();
            if let Some(region) = RESIDENCE.by_county.get(&county) {
                return Some(region.clone());
            }
        }
    }
    None
}

fn extensions(resource: &Map<String, Value>, url: &str) -> Vec<Value> {
    resource
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == url)
        .cloned()
        .collect()
}

/// The region code the Patient carries.
pub fn region_code(resource: &Map<String, Value>) -> Option<String> {
    extensions(resource, REGION_EXT)
        .first()
        .and_then(|e| e.pointer("/valueCoding/code"))
        .and_then(Value::as_str)
        .map(String::from)
}

/// Whether the recipient is excluded from the program (dual eligible, long-term care, waiver).
pub fn is_excluded(patient: &Map<String, Value>) -> bool {
    let excluded_category = extensions(patient, ELIGIBILITY_EXT).iter().any(|e| {
        e.pointer("/valueCoding/system") == Some(&json!(ELIGIBILITY_SYSTEM))
            && e.pointer("/valueCoding/code")
                .and_then(Value::as_str)
                .is_some_and(|code| EXCLUDED.contains(code))
    });
    let medicare = patient
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|identifier| {
            identifier["system"] == "http://hl7.org/fhir/sid/us-mbi"
                || identifier
                    .pointer("/type/coding")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        c["system"] == "http://terminology.hl7.org/CodeSystem/v2-0203"
                            && c["code"] == "MC"
                    })
        });
    excluded_category || medicare || patient.get("active") == Some(&Value::Bool(false))
}

fn set_extension(resource: &mut Map<String, Value>, url: &str, value: Option<Value>) {
    let mut list: Vec<Value> = resource
        .get("extension")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let position = list.iter().position(|e| e["url"] == url);
    list.retain(|e| e["url"] != url);
    if let Some(value) = value {
        list.insert(position.unwrap_or(list.len()).min(list.len()), value);
    }
    if list.is_empty() {
        resource.shift_remove("extension");
    } else {
        resource.insert("extension".into(), Value::Array(list));
    }
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = Text)]
    id: String,
}

/// The Pivot Entity serving `region`: an Organization of type pivot-entity with that region
/// (the first by id, should the data hold several).
pub fn entity_of_region(
    conn: &mut AnyConnection,
    region: &str,
) -> Result<Option<String>, FhirError> {
    // Driven from the few Pivot Entities: every recipient of the region has a `region` row too.
    let mut q = Sql::for_connection(conn);
    q.push(
        "SELECT r.id AS id FROM search_token ty JOIN resources r ON r.pk = ty.resource_pk \
            WHERE ty.param = 'type' AND ty.code = 'pivot-entity' AND ty.system = ",
    );
    q.text(ORG_TYPE_SYSTEM);
    q.push(" AND r.resource_type = 'Organization' AND r.deleted = 0 AND EXISTS (SELECT 1 FROM search_token reg WHERE reg.resource_pk = r.pk AND reg.param = 'region' AND ");
    q.unindexed_equals("reg.code");
    q.text(region);
    q.push(" AND reg.system = ");
    q.text(REGION_SYSTEM);
    q.push(") ORDER BY r.id LIMIT 1");
    let found: Vec<IdRow> = sql::run(conn, q)?;
    Ok(found
        .into_iter()
        .next()
        .map(|row| format!("Organization/{}", row.id)))
}

/// Before a Patient is validated and stored: sets the region from the residence (overriding
/// the client's value) and the attributed Pivot Entity (removed when excluded).
pub fn enrich_patient(
    conn: &mut AnyConnection,
    patient: &mut Map<String, Value>,
) -> Result<(), FhirError> {
    if let Some(region) = region_of_residence(patient) {
        set_extension(
            patient,
            REGION_EXT,
            Some(json!({
                "url": REGION_EXT,
                "valueCoding": {"system": REGION_SYSTEM, "code": region, "display": format!("Region {region}")}
            })),
        );
    }
    if is_excluded(patient) {
        set_extension(patient, ENTITY_EXT, None);
        return Ok(());
    }
    // Where the data names no Pivot Entity for the region (or there is no region), the
    // client's value stands, as it does for the region itself.
    let Some(entity) = region_code(patient)
        .map(|region| entity_of_region(conn, &region))
        .transpose()?
        .flatten()
    else {
        return Ok(());
    };
    let entity = Some(entity);
    set_extension(
        patient,
        ENTITY_EXT,
        entity.map(|e| json!({"url": ENTITY_EXT, "valueReference": {"reference": e}})),
    );
    Ok(())
}

#[derive(QueryableByName)]
struct MemberRow {
    #[diesel(sql_type = Text)]
    patient_id: String,
    #[diesel(sql_type = Text)]
    entity: String,
    #[diesel(sql_type = BigInt)]
    period_start: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    period_end: Option<i64>,
}

/// After a Patient write (`content` None for a deletion) at `at`: closes the membership that no
/// longer holds and opens the new one, creating the entity's Group on first use.
pub fn after_patient_write(
    conn: &mut AnyConnection,
    registry: &Registry,
    id: &str,
    content: Option<&str>,
    at: Micros,
) -> Result<(), FhirError> {
    let patient: Option<Map<String, Value>> = content.and_then(|c| serde_json::from_str(c).ok());
    let entity = patient.as_ref().and_then(|p| {
        extensions(p, ENTITY_EXT)
            .first()
            .and_then(|e| e.pointer("/valueReference/reference"))
            .and_then(Value::as_str)
            .map(String::from)
    });
    let region = patient.as_ref().and_then(region_code).unwrap_or_default();
    let mut q = Sql::for_connection(conn);
    q.push(
        "SELECT patient_id, entity, period_start, period_end FROM attribution WHERE patient_id = ",
    );
    q.text(id);
    q.push(" AND period_end IS NULL");
    let open: Vec<MemberRow> = sql::run(conn, q)?;
    if open.len() == 1 && Some(&open[0].entity) == entity.as_ref() {
        return Ok(());
    }
    if !open.is_empty() {
        let mut q = Sql::for_connection(conn);
        q.push("UPDATE attribution SET period_end = ");
        q.int(at);
        q.push(" WHERE patient_id = ");
        q.text(id);
        q.push(" AND period_end IS NULL");
        sql::execute(conn, q)?;
    }
    if let Some(entity) = entity {
        ensure_group(conn, registry, &entity, &region)?;
        let mut q = Sql::for_connection(conn);
        q.push("INSERT INTO attribution (patient_id, entity, region, period_start, period_end) VALUES (");
        q.text(id);
        q.push(", ");
        q.text(&entity);
        q.push(", ");
        q.text(&region);
        q.push(", ");
        q.int(at);
        q.push(", NULL)");
        sql::execute(conn, q)?;
    }
    Ok(())
}

/// The id of the attribution Group of `entity` (`Organization/{id}`).
pub fn group_id(entity: &str) -> String {
    let entity_id = entity.rsplit('/').next().unwrap_or(entity);
    let id: String = format!("{GROUP_PREFIX}{entity_id}")
        .chars()
        .take(64)
        .collect();
    id
}

fn ensure_group(
    conn: &mut AnyConnection,
    registry: &Registry,
    entity: &str,
    region: &str,
) -> Result<(), FhirError> {
    let id = group_id(entity);
    if rows::current(conn, "Group", &id)?.is_some_and(|row| row.content.is_some()) {
        return Ok(());
    }
    let group = json!({
        "resourceType": "Group",
        "id": id,
        "meta": {"profile": [GROUP_PROFILE]},
        "type": "person",
        "actual": true,
        "name": format!("Recipients attributed to {entity}"),
        "managingEntity": {"reference": entity},
        "characteristic": [{
            "code": {"coding": [{"system": format!("{BASE}/CodeSystem/pivot-group-characteristic"), "code": "region"}]},
            "valueCodeableConcept": {"coding": [{"system": REGION_SYSTEM, "code": region}]},
            "exclude": false
        }]
    });
    let Value::Object(mut group) = group else {
        return Ok(());
    };
    if region.is_empty() {
        // attributed by the client without a region: the Group names none
        group.shift_remove("characteristic");
    }
    super::resources::update(conn, registry, &Actor::Server, &id, group, None, "PUT")?;
    Ok(())
}

/// The members of `entity`'s Group: (patient id, start, end) in order of start.
pub fn members(
    conn: &mut AnyConnection,
    entity: &str,
) -> Result<Vec<(String, Micros, Option<Micros>)>, FhirError> {
    let mut q = Sql::for_connection(conn);
    q.push("SELECT patient_id, entity, period_start, period_end FROM attribution WHERE entity = ");
    q.text(entity);
    q.push(" ORDER BY period_start, patient_id");
    let found: Vec<MemberRow> = sql::run(conn, q)?;
    Ok(found
        .into_iter()
        .map(|row| (row.patient_id, row.period_start, row.period_end))
        .collect())
}

/// A stored Group as it is shown: an attribution Group gains its members (with periods; an
/// ended membership is inactive) and its current size. Other content is returned unchanged.
pub fn complete_group(conn: &mut AnyConnection, content: &str) -> Result<String, FhirError> {
    if !content.contains(GROUP_PROFILE) {
        return Ok(content.to_string());
    }
    let Ok(Value::Object(mut group)) = serde_json::from_str::<Value>(content) else {
        return Ok(content.to_string());
    };
    let Some(entity) = group
        .get("managingEntity")
        .and_then(|m| m["reference"].as_str())
        .map(String::from)
    else {
        return Ok(content.to_string());
    };
    let members = members(conn, &entity)?;
    let current = members.iter().filter(|m| m.2.is_none()).count();
    let list: Vec<Value> = members
        .into_iter()
        .map(|(patient, start, end)| {
            let mut period = json!({"start": format_instant(start)});
            if let Some(end) = end {
                period["end"] = json!(format_instant(end));
            }
            json!({
                "entity": {"reference": format!("Patient/{patient}")},
                "period": period,
                "inactive": end.is_some()
            })
        })
        .collect();
    group.insert("quantity".into(), json!(current));
    if !list.is_empty() {
        group.insert("member".into(), Value::Array(list));
    }
    Ok(Value::Object(group).to_string())
}

/// Whether `id` names an attribution Group, which only the server writes.
pub fn is_attribution_group(resource_type: &str, id: &str) -> bool {
    resource_type == "Group" && id.starts_with(GROUP_PREFIX)
}
