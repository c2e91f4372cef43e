//! Emporium's infrastructure, shared by every service: database pools and
//! migrations for SQLite and PostgreSQL, the transactional outbox and its
//! relay, the event bus (in process, NATS JetStream), idempotency keys, the
//! HTTP core, and the assembly of a running process.

pub mod app;
pub mod auth;
pub mod bus;
pub mod db;
pub mod fault;
pub mod gauges;
pub mod http;
pub mod idempotency;
pub mod limit;
pub mod migrate;
pub mod outbox;
pub mod routes;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod worker;
#[cfg(feature = "testing")]
pub mod testing;

pub use db::{Db, DbError, Dialect, Tx};
