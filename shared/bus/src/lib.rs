//! NATS and JetStream wiring shared by every Huiqi service.
//!
//! Why one crate: at-least-once delivery is only safe when every service does the same three
//! things in the same order — write the effects and the inbox mark in one sled transaction,
//! flush, then ack — and publishes its own events through an outbox relay with
//! `Nats-Msg-Id` = event id. This crate is that order, written once:
//! - [`setup`]: the `HUIQI` stream and durable pull consumers, created or updated idempotently.
//! - [`consumer`]: the batch loop (pull many, hand the batch to the service, ack/nak/term each).
//! - [`relay`]: the outbox relay, many publish acks in flight, cursor kept in the sled log.
//! - [`request`]: request/reply to check providers with timeout, backoff, retries and a circuit.
//! - [`server`]: a child `nats-server -js` for `huiqi up` and for tests.

pub mod consumer;
pub mod relay;
pub mod request;
pub mod server;
pub mod service;
pub mod setup;
pub mod writer;

pub use consumer::{BatchHandler, ConsumerSpec, Delivery, Disposition};
pub use relay::Relay;
pub use relay::RelayWaker;
pub use request::{Circuit, RequestError, RetryPolicy};
pub use server::NatsServer;
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
    #[error("service handler: {0}")]
    Handler(String),
}

/// Connects to NATS, naming the connection after the service (visible in server monitoring).
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, BusError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| BusError::Connect {
            url: url.to_string(),
            message: e.to_string(),
        })
}
