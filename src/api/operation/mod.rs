//! FHIR operations (`$name`), one module each.

pub mod reindex;
