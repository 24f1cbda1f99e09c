//! End-to-end tests: the pipeline against real nats-servers, in-process (`pipeline`) and as
//! separate processes of the built binaries (`processes`), plus the shipped server
//! configuration's permissions (`permissions`). One test binary for the crate.

mod audit;
mod cluster;
mod contract;
mod deploy;
mod observability;
mod partitions;
mod permissions;
mod pipeline;
mod portals;
mod processes;
mod takeover;
