//! NATS and JetStream wiring shared by every Huiqi service.
//!
//! Why one crate: at-least-once delivery is only safe when every service does the same things
//! in the same order — check who signed a message before anything else, write the effects and
//! the inbox mark in one sled transaction, flush, then ack — and publishes its own events
//! through a signing outbox relay with `Nats-Msg-Id` = event id. This crate is that order,
//! written once:
//! - [`connect`]: logging in (credentials, TLS) without ever printing a secret.
//! - [`trust`]: signing keys, the trust file, signature checks.
//! - [`access`]: the NATS users and their least-privilege permissions.
//! - [`topology`] and [`setup`]: the stream and the durable consumers, provisioned by an admin.
//! - [`consumer`]: the batch loop (pull many, check signatures, hand the batch to the service,
//!   ack/nak/term each).
//! - [`relay`]: the outbox relay, many publish acks in flight, cursor kept in the sled log.
//! - [`request`]: request/reply to check providers with timeout, backoff, retries and a circuit.
//! - [`restore`]: rebuilding a lost log from the stream.
//! - [`lease`]: one working instance per service, standbys that take over.
//! - [`server`]: a child `nats-server -js` for `huiqi up` and for tests.
//! - [`service`], [`cli`], [`telemetry`]: what every service binary starts with.

pub mod access;
pub mod anchor;
pub mod cli;
pub mod connect;
pub mod consumer;
pub mod health;
pub mod lease;
pub mod relay;
pub mod request;
pub mod reserve;
pub mod restore;
pub mod server;
pub mod service;
pub mod setup;
pub mod telemetry;
pub mod topology;
pub mod trust;
pub mod writer;

pub use connect::{NatsArgs, NatsOptions, Secret};
pub use consumer::{BatchHandler, ConsumerSpec, Delivery, Disposition, Signatures};
pub use relay::Relay;
pub use relay::RelayWaker;
pub use request::{Circuit, RequestError, RetryPolicy};
pub use server::{NatsCluster, NatsServer};
pub use writer::LogWriter;

/// Errors at the bus boundary.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("JetStream setup of {what}: {message}")]
    Setup { what: String, message: String },
    #[error("publish to {subject}: {message}")]
    Publish { subject: String, message: String },
    #[error("consumer {durable}: {message}")]
    Consume { durable: String, message: String },
    #[error("event log: {0}")]
    Log(#[from] huiqi_eventlog::LogError),
    #[error(
        "{service}: log record {seq} cannot be read ({reason}); the service will not start on a \
         log it cannot fold. Restore the log from the stream (`huiqi restore --service {service}`) \
         or, if losing this record is acceptable, skip it explicitly with --skip-record {seq} \
         (the skip is recorded in the log)"
    )]
    Fold {
        service: String,
        seq: u64,
        reason: String,
    },
    #[error(
        "{service}: its lease was taken by {by}; this instance stopped without publishing \
         anything more (its log is stale now). Start it again to stand by"
    )]
    LeaseLost { service: String, by: String },
    #[error("service handler: {0}")]
    Handler(String),
}

/// Connects to an open bus (no credentials), naming the connection: for tests and tools.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, BusError> {
    NatsOptions::new(url).connect(name).await
}
