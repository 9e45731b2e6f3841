//! FHIR operations (`$name`), one module each.

pub mod evaluate_measure;
pub mod everything;
pub mod export;
pub mod params;
pub mod reindex;
pub mod subscription_events;
pub mod terminology;
pub mod validate;
