//! FHIR operations (`$name`), one module each.

pub mod reindex;
pub mod subscription_events;
