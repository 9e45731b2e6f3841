//! pivot-fhir: a FHIR R4 server for Medicaid care coordination, SDOH screening and closed-loop
//! community referrals.
//!
//! Layers, each using only those below it:
//! `api` (HTTP: routes, headers, content negotiation) → `service` (FHIR semantics without HTTP) →
//! `store` (diesel, SQLite or PostgreSQL) and `fhir` (resource model helpers, strict parsing,
//! OperationOutcome). `error` is the one place where errors become HTTP responses.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod fhir;
pub mod fhirpath;
pub mod fuzz;
pub mod import;
pub mod metrics;
pub mod openapi;
pub mod search;
pub mod seed;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod terminology;
pub mod validation;

pub use app::Application;
pub use config::Settings;
