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
mod docs;
mod durability;
mod everything;
mod examples;
mod export;
mod history;
mod hostile;
mod import;
mod jwks;
mod measures;
mod migrations;
mod operability;
mod outage;
mod patch;
mod protocol;
mod real_clients;
mod referrals;
mod reindex;
mod search;
mod seed;
mod subscriptions;
mod terminology;
mod two_nodes;
mod validation;
