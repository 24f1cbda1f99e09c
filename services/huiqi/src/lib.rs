//! `huiqi`: the operator's command line and the all-in-one binary.
//!
//! Why a library behind the binary: the e2e tests start exactly what `huiqi up` starts
//! ([`pipeline::Pipeline`]) in-process, and drive it the way portals and bureaus do
//! ([`watch`]), so the tests exercise the real start-up and wiring. The commands:
//! `up`, `demo`, `submit`, `evaluate`, `replay`, `audit`, `loadgen` (see `main.rs`).

pub mod audit;
pub mod clients;
pub mod commands;
pub mod gen;
pub mod loadgen;
pub mod pipeline;
pub mod progress;
pub mod query;
pub mod status;
pub mod watch;

pub use pipeline::{Pipeline, UpSettings};

#[derive(Debug, thiserror::Error)]
pub enum HuiqiError {
    #[error("starting {0}: {1}")]
    Start(&'static str, String),
    #[error("service {0}: {1}")]
    Service(&'static str, String),
    #[error("nats: {0}")]
    Nats(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Input(String),
    /// What was asked for does not exist (a claim, a parked message, a data directory): the
    /// CLI exits with code 3.
    #[error("not found: {0}")]
    NotFound(String),
    #[error("event log: {0}")]
    Log(#[from] huiqi_eventlog::LogError),
}
