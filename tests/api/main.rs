//! Integration tests: the real server, over HTTP, on SQLite and (with `DATABASE_URL`) PostgreSQL.

mod helpers;

mod attribution;
mod audit;
mod auth;
mod bundles;
mod concurrency;
mod conditional;
mod crud;
mod dashboard;
mod durability;
mod examples;
mod history;
mod hostile;
mod jwks;
mod measures;
mod migrations;
mod patch;
mod protocol;
mod real_clients;
mod referrals;
mod reindex;
mod search;
mod subscriptions;
mod terminology;
mod validation;
