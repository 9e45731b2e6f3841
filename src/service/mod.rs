//! FHIR semantics without HTTP: versioning, `meta` stamping and preconditions. Functions take a
//! connection inside a transaction, so a Bundle can run many of them atomically.

pub mod access;
pub mod attribution;
pub mod audit;
pub mod bundle;
pub mod clock;
pub mod conditional;
pub mod conformance;
pub mod dashboard;
pub mod everything;
pub mod export;
pub mod measures;
pub mod notifications;
pub mod patch;
pub mod referrals;
pub mod resources;
pub mod search;
pub mod search_parameters;
pub mod subscriptions;
pub mod write_effects;
