//! Rebuilds a service's sled log from the `HUIQI` stream, the second copy of everything
//! (DESIGN.md, "Disaster recovery").
//!
//! What goes back into the log, in stream order:
//! - every event the service **produced** (signed by a key the trust file gives that service,
//!   retired keys included), with its exact bytes and subject; the relay cursor is set past
//!   them, so nothing is published again;
//! - every event it **consumed** (its consumer's filter, signature checked against the producer
//!   the same way), as the service's [`RestoreRules`] say: recorded with its inbox mark, or
//!   only its inbox mark, or — for what a service records only together with its answer (an
//!   application with its reply, a verified claim with its decision) — only when that answer is
//!   on the stream, placed right before it. An input with no answer yet is left out: the
//!   durable consumer has not had it acked and delivers it again, and the service answers it
//!   then, under the same derived ids.
//!
//! Events whose signature does not verify are counted and left out. Because derived event ids
//! are deterministic, a restored service that re-derives anything republishes nothing new.

use crate::setup::STREAM;
use crate::topology;
use crate::trust::{Mode, TrustStore, SIGNATURE_HEADER};
use crate::BusError;
use async_nats::jetstream;
use futures_util::StreamExt;
use huiqi_eventlog::{Commit, EventLog, Pending};
use huiqi_events::payloads::MessageParked;
use huiqi_events::{types, Envelope};
use std::collections::HashMap;
use std::time::Duration;

/// How a consumed event goes back into the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed {
    /// Recorded (exact bytes) with the inbox mark `inbox`.
    Record { inbox: String },
    /// Recorded with its inbox mark, right before the first of `proofs` (derived ids of the
    /// service's answer); left out when none of them is on the stream.
    RecordIfAnswered { inbox: String, proofs: Vec<String> },
    /// Only the inbox mark, right before the first of `proofs`; left out without one.
    InboxIfAnswered { inbox: String, proofs: Vec<String> },
    /// Not part of the service's log.
    Ignore,
}

/// What each service's log keeps of the events it consumes.
pub trait RestoreRules {
    /// How the event `env`, stored at `stream_seq`, goes back into the log.
    fn consumed(&self, env: &Envelope, stream_seq: u64) -> Consumed;
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    pub stream_messages: u64,
    pub produced: u64,
    pub consumed_recorded: u64,
    pub consumed_inbox_only: u64,
    pub unanswered_left_for_redelivery: u64,
    pub refused_signatures: u64,
    pub refused_examples: Vec<String>,
    pub log_records: u64,
}

fn err(what: &str, e: &dyn std::fmt::Display) -> BusError {
    BusError::Setup {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// Rebuilds `service`'s log in `log` (which must be empty) from the stream read through `js`
/// (a login that may read the whole stream: the admin). `progress` is called now and then
/// with (messages read, messages in the stream).
pub async fn restore(
    js: &jetstream::Context,
    service: &str,
    log: &EventLog,
    trust: &TrustStore,
    rules: &dyn RestoreRules,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RestoreReport, BusError> {
    if !log.is_empty()? {
        return Err(BusError::Setup {
            what: format!("restore of {service}"),
            message: format!(
                "the target log already holds {} records; restore rebuilds a lost log into an empty directory (move the old one away first)",
                log.head()?.0
            ),
        });
    }
    let filter = topology::SERVICE_CONSUMERS
        .iter()
        .find(|(s, _)| *s == service)
        .map(|(_, f)| *f)
        .ok_or_else(|| err("restore", &format!("unknown service `{service}`")))?;
    let mut stream = js.get_stream(STREAM).await.map_err(|e| err("stream", &e))?;
    let last = stream
        .info()
        .await
        .map_err(|e| err("stream info", &e))?
        .state
        .last_sequence;
    let mut report = RestoreReport::default();
    if last == 0 {
        return Ok(report);
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .map_err(|e| err("ordered reader", &e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| err("ordered reader", &e))?;
    // Consumed inputs waiting for their answer: by proof id, indexes into `held`.
    let mut waiting: HashMap<String, Vec<usize>> = HashMap::new();
    let mut held: Vec<Option<Commit>> = Vec::new();
    let mut batch: Vec<Commit> = Vec::new();
    let flush = |batch: &mut Vec<Commit>| -> Result<(), BusError> {
        if !batch.is_empty() {
            log.commit(batch)?;
            batch.clear();
        }
        Ok(())
    };
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .map_err(|_| err("stream read", &"no message for 30 s"))?;
        let Some(msg) = msg else { break };
        let msg = msg.map_err(|e| err("stream read", &e))?;
        let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        report.stream_messages += 1;
        if report.stream_messages % 10_000 == 0 {
            progress(seq, last);
        }
        let subject = msg.subject.to_string();
        let consumed = topology::subject_matches(filter, &subject);
        let signature = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(SIGNATURE_HEADER))
            .map(|v| v.as_str().to_string());
        let signer = trust.verify(signature.as_deref(), &msg.payload, Mode::History);
        let produced = matches!(&signer, Ok(s) if s.service == service);
        if produced || consumed {
            match (&signer, consumed) {
                (Err(e), true) if !produced => {
                    report.refused_signatures += 1;
                    if report.refused_examples.len() < 10 {
                        report
                            .refused_examples
                            .push(format!("stream seq {seq} on {subject}: {e}"));
                    }
                }
                _ => {
                    let env = Envelope::decode(&msg.payload)
                        .and_then(types::upcast)
                        .map_err(|e| err(&format!("stream seq {seq}"), &e))?;
                    if produced {
                        for i in waiting.remove(&env.id).unwrap_or_default() {
                            if let Some(c) = held[i].take() {
                                if c.events.is_empty() {
                                    report.consumed_inbox_only += 1;
                                } else {
                                    report.consumed_recorded += 1;
                                }
                                batch.push(c);
                            }
                        }
                        let mut inbox_id = None;
                        if env.ty == types::MESSAGE_PARKED {
                            if let Ok(p) = env.data_as::<MessageParked>() {
                                inbox_id = Some(format!("stream-seq-{}", p.stream_sequence));
                            }
                        }
                        batch.push(Commit {
                            inbox_id,
                            events: vec![Pending::restored(env, msg.payload.clone(), subject)],
                        });
                        report.produced += 1;
                    } else {
                        match rules.consumed(&env, seq) {
                            Consumed::Record { inbox } => {
                                batch.push(Commit {
                                    inbox_id: Some(inbox),
                                    events: vec![Pending::received(env, msg.payload.clone())],
                                });
                                report.consumed_recorded += 1;
                            }
                            Consumed::RecordIfAnswered { inbox, proofs } => {
                                held.push(Some(Commit {
                                    inbox_id: Some(inbox),
                                    events: vec![Pending::received(env, msg.payload.clone())],
                                }));
                                for p in proofs {
                                    waiting.entry(p).or_default().push(held.len() - 1);
                                }
                            }
                            Consumed::InboxIfAnswered { inbox, proofs } => {
                                held.push(Some(Commit {
                                    inbox_id: Some(inbox),
                                    events: vec![],
                                }));
                                for p in proofs {
                                    waiting.entry(p).or_default().push(held.len() - 1);
                                }
                            }
                            Consumed::Ignore => {}
                        }
                    }
                }
            }
        }
        if batch.len() >= 1_000 {
            flush(&mut batch)?;
        }
        if seq >= last {
            break;
        }
    }
    flush(&mut batch)?;
    progress(last, last);
    // What is still held had no answer on the stream: it will be delivered again.
    report.unanswered_left_for_redelivery = held.iter().filter(|c| c.is_some()).count() as u64;
    let head = log.head()?.0;
    log.set_outbox_cursor(head)?;
    report.log_records = head;
    Ok(report)
}
