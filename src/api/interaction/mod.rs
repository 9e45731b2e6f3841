//! One module per FHIR interaction (http.html), plus health endpoints.

pub mod bundle;
pub mod capabilities;
pub mod create;
pub mod delete;
pub mod health;
pub mod history;
pub mod patch;
pub mod read;
pub mod search;
pub mod smart;
pub mod token;
pub mod update;
