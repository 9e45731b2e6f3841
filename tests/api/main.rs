//! Integration tests: the real server, over HTTP, on SQLite and (with `DATABASE_URL`) PostgreSQL.

mod helpers;

mod auth;
mod bundles;
mod concurrency;
mod conditional;
mod crud;
mod durability;
mod examples;
mod history;
mod migrations;
mod patch;
mod protocol;
mod referrals;
mod reindex;
mod search;
mod subscriptions;
