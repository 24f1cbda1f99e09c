//! What a portal and a bureau system run against Huiqi, as small library clients (the
//! `examples/portal.rs` and `examples/bureau.rs` programs, and the tests, use exactly these).
//!
//! Why here: docs/PORTALS.md and docs/BUREAUS.md describe how to connect; a client that the
//! test suite runs keeps that description true.
//!
//! - A **portal** named `p` logs in as NATS user `portal-p`, publishes applications on
//!   `huiqi.applications.submitted.p` (waiting for JetStream's ack, with the event id as
//!   `Nats-Msg-Id`) and pulls its answers from its durable consumer `portal-p`, which holds
//!   only that portal's acceptances and rejections; answers stay there until acked, so a portal
//!   that was offline reads what it missed. An answer is matched to what was sent by
//!   `data.application_id` and by `causationid` (the submitted event's id; for input that was
//!   not even readable JSON, the `Nats-Msg-Id` it was published with).
//! - A **bureau** system pulls a `bureau-*` durable consumer (awards, payouts, entitlements),
//!   verifies each event's `Huiqi-Signature` against the deployment's published trust file
//!   before acting on it, and acks. Events older than a point in time can be skipped.

use crate::HuiqiError;
use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;
use huiqi_bus::trust::{Mode, TrustStore};
use huiqi_events::{subjects, Envelope};
use std::time::Duration;

fn nats(e: impl std::fmt::Display) -> HuiqiError {
    HuiqiError::Nats(e.to_string())
}

/// One answer a portal received.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `accepted` or `rejected`.
    pub outcome: String,
    pub application_id: String,
    /// The claim id (accepted) or None.
    pub claim_id: Option<String>,
    /// The submitted event's id this answers (or the Nats-Msg-Id of unreadable input).
    pub answers_event: Option<String>,
    /// `(field, code, message)` per problem of a rejection.
    pub errors: Vec<(String, String, String)>,
    pub subject: String,
}

/// A named portal's connection: submit applications, read its own answers durably.
pub struct Portal {
    pub name: String,
    js: jetstream::Context,
}

impl Portal {
    pub fn new(client: async_nats::Client, name: &str) -> Self {
        Portal {
            name: name.to_string(),
            js: jetstream::new(client),
        }
    }

    /// Publishes application events on this portal's subject and waits for every ack.
    pub async fn submit(&self, events: &[Envelope]) -> Result<(), HuiqiError> {
        crate::watch::publish_all_to(
            &self.js,
            &subjects::portal_submit_subject(&self.name),
            events,
            256,
        )
        .await
    }

    /// Publishes raw bytes (whatever a broken form produced) under `msg_id`.
    pub async fn submit_raw(&self, msg_id: &str, bytes: Vec<u8>) -> Result<(), HuiqiError> {
        crate::watch::publish_raw_to(
            &self.js,
            &subjects::portal_submit_subject(&self.name),
            msg_id,
            bytes,
        )
        .await
    }

    /// Pulls up to `max` answers from this portal's durable consumer, waiting at most `wait`
    /// for them; each answer is acked once read (so a reconnecting portal resumes after it).
    pub async fn answers(&self, max: usize, wait: Duration) -> Result<Vec<Answer>, HuiqiError> {
        let durable = huiqi_bus::access::portal_user(&self.name);
        let mut out = Vec::new();
        pull_each(&self.js, &durable, max, wait, |m| {
            let env = Envelope::decode(&m.payload)
                .map_err(|e| HuiqiError::Input(format!("an answer is not an event: {e}")))?;
            let d = env.data.value();
            out.push(Answer {
                outcome: if m.subject.starts_with(subjects::INTAKE_ACCEPTED) {
                    "accepted".into()
                } else {
                    "rejected".into()
                },
                application_id: d["application_id"].as_str().unwrap_or("").to_string(),
                claim_id: d["claim_id"].as_str().map(str::to_string),
                answers_event: env.causationid.clone(),
                errors: d["errors"]
                    .as_array()
                    .map(|errs| {
                        errs.iter()
                            .map(|e| {
                                let f = |k: &str| e[k].as_str().unwrap_or("").to_string();
                                (f("field"), f("code"), f("message"))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                subject: m.subject.to_string(),
            });
            Ok(())
        })
        .await?;
        Ok(out)
    }
}

/// One event a bureau system received, verified.
#[derive(Debug, Clone)]
pub struct BureauEvent {
    pub subject: String,
    pub stream_sequence: u64,
    /// The service whose key signed it.
    pub signed_by: String,
    pub envelope: Envelope,
}

/// What a bureau pull returned: verified events, and the ones refused (never acted on).
#[derive(Debug, Default)]
pub struct BureauBatch {
    pub events: Vec<BureauEvent>,
    /// `(stream sequence, reason)` of events whose signature did not verify.
    pub refused: Vec<(u64, String)>,
    /// Events older than `since`, acked and skipped.
    pub skipped: usize,
}

/// Pulls up to `max` events from a `bureau-*` durable consumer, verifies each signature
/// against `trust`, skips (and acks) events older than `since`, and acks what it returns.
/// A refused event is acked too (it will never verify) and reported.
pub async fn bureau_pull(
    client: async_nats::Client,
    durable: &str,
    trust: &TrustStore,
    since: Option<chrono::DateTime<chrono::FixedOffset>>,
    max: usize,
    wait: Duration,
) -> Result<BureauBatch, HuiqiError> {
    let js = jetstream::new(client);
    let mut out = BureauBatch::default();
    pull_each(&js, durable, max, wait, |m| {
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        let header = m
            .headers
            .as_ref()
            .and_then(|h| h.get(huiqi_bus::trust::SIGNATURE_HEADER))
            .map(|v| v.as_str().to_string());
        match trust.verify(header.as_deref(), &m.payload, Mode::History) {
            Err(e) => out.refused.push((seq, e.to_string())),
            Ok(signer) => {
                let envelope = Envelope::decode(&m.payload)
                    .map_err(|e| HuiqiError::Input(format!("event {seq}: {e}")))?;
                if since.is_some_and(|t| envelope.time < t) {
                    out.skipped += 1;
                } else {
                    out.events.push(BureauEvent {
                        subject: m.subject.to_string(),
                        stream_sequence: seq,
                        signed_by: signer.service,
                        envelope,
                    });
                }
            }
        }
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Pulls up to `max` messages from durable consumer `durable` within `wait`, hands each to
/// `each` and acks it once handled (an error stops the pull and leaves that message for
/// redelivery).
async fn pull_each(
    js: &jetstream::Context,
    durable: &str,
    max: usize,
    wait: Duration,
    mut each: impl FnMut(&jetstream::Message) -> Result<(), HuiqiError>,
) -> Result<(), HuiqiError> {
    let consumer: jetstream::consumer::Consumer<pull::Config> = js
        .get_consumer_from_stream(durable, huiqi_bus::setup::STREAM)
        .await
        .map_err(nats)?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut pulled = 0;
    while pulled < max {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let mut batch = consumer
            .fetch()
            .max_messages(max - pulled)
            .expires(left.max(Duration::from_millis(100)))
            .messages()
            .await
            .map_err(nats)?;
        while let Some(m) = batch.next().await {
            let m = m.map_err(nats)?;
            each(&m)?;
            m.ack().await.map_err(nats)?;
            pulled += 1;
        }
    }
    Ok(())
}
