//! Rebuilds a service's sled log from the `HUIQI` stream, the second copy of everything
//! (DESIGN.md, "Disaster recovery").
//!
//! What goes back into the log, in stream order:
//! - every event the service **produced** (on a subject its NATS user may publish on, signed by
//!   a key the trust file gives that service, retired keys included), with its exact bytes and
//!   subject; the relay cursor is set past them, so nothing is published again;
//! - every event it **consumed** (its consumer's filter, signature checked against the producer
//!   the same way), as the service's [`RestoreRules`] say: recorded with its inbox mark, or
//!   only its inbox mark, or — for what a service records only together with its answer (an
//!   application with its reply, a verified claim with its decision) — only when that answer is
//!   on the stream, placed right before it. An input with no answer yet is left out: the
//!   durable consumer has not had it acked and delivers it again, and the service answers it
//!   then, under the same derived ids.
//!
//! A split service's partition (huiqi_events::partition) is rebuilt alone: its inputs are those
//! on its consumer's subjects (`….<index>`), and of what the service produced only what belongs
//! to the partition — on internal subjects by their last token; on contract subjects (awards,
//! entitlements, payouts), which carry none, by their cause: every answer names the input it
//! answers (`causationid`), and that input precedes it on the stream. Parked records go by the
//! subject of the message they park.
//!
//! Events whose signature does not verify are counted and left out. Because derived event ids
//! are deterministic, a restored service that re-derives anything republishes nothing new.

use crate::consumer::Signatures;
use crate::setup::STREAM;
use crate::topology;
use crate::trust::{Mode, SignatureError, TrustStore, SIGNATURE_HEADER};
use crate::BusError;
use async_nats::jetstream;
use futures_util::StreamExt;
use huiqi_eventlog::{Commit, EventLog, Pending};
use huiqi_events::payloads::MessageParked;
use huiqi_events::{types, Envelope, Partition};
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
    /// Whether its input must be signed (as its consumer gate checks it).
    fn signatures(&self) -> Signatures {
        Signatures::Required
    }

    /// How the message `payload` (decoded as `env` when it is a readable event), stored at
    /// `stream_seq`, goes back into the log.
    fn consumed(&self, payload: &[u8], env: Option<&Envelope>, stream_seq: u64) -> Consumed;

    /// Whether the service checks its answers at the first start after a rebuild (award,
    /// whose answer to one input is several events that may have reached the stream in
    /// part): the rebuilt log is marked until it has ([`EventLog::mark_answers_unchecked`]).
    fn checks_answers_after_rebuild(&self) -> bool {
        false
    }

    /// What else the answer whose proof is `proof` needs on the stream to count as given: a
    /// token one of the service's own events provides ([`RestoreRules::provides`]), anywhere
    /// in the stream. Until it is seen the input stays unanswered (delivered again, answered
    /// again under the same ids). Intake: an accepted reply counts only with an opened claim
    /// for its claim — the reply is published after the claim, but a publish refused in an
    /// election and never resent (the instance killed first) leaves the reply alone.
    fn requires(&self, _proof: &Envelope) -> Option<String> {
        None
    }

    /// The token one of the service's own events provides (see [`RestoreRules::requires`]).
    fn provides(&self, _produced: &Envelope) -> Option<String> {
        None
    }
}

/// The rules of a service that records every event it consumes as it arrives (verification's
/// opened claims, payout's payment orders): each goes back with its inbox mark.
pub struct RecordConsumed;

impl RestoreRules for RecordConsumed {
    fn consumed(&self, _payload: &[u8], env: Option<&Envelope>, _stream_seq: u64) -> Consumed {
        match env {
            Some(env) => Consumed::Record {
                inbox: env.id.clone(),
            },
            None => Consumed::Ignore,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    pub stream_messages: u64,
    pub produced: u64,
    pub consumed_recorded: u64,
    pub consumed_inbox_only: u64,
    pub unanswered_left_for_redelivery: u64,
    /// The stream sequence of the first consumed input without an answer on the stream: the
    /// service's consumer must deliver again from there ([`rewind_consumer`]), because an
    /// input whose answer was logged but lost with the directory before it was published had
    /// already been acked.
    pub first_unanswered: Option<u64>,
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
    partition: Partition,
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
    let filter = topology::service_consumer_in(service, partition)
        .map(|spec| spec.filter)
        .ok_or_else(|| err("restore", &format!("unknown service `{service}`")))?;
    let filter = filter.as_str();
    let split = partition.is_split() && topology::is_partitioned(service);
    // Split: the ids of this partition's inputs and of what it produced, so an answer on a
    // contract subject is kept only when its cause is one of them.
    let mut ours: std::collections::HashSet<String> = Default::default();
    let own = crate::access::event_subjects(service);
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
    // Every subject ("" filters nothing), retried when a cluster places it on a dead node.
    let consumer = crate::setup::ordered_reader(js, "").await?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| err("ordered reader", &e))?;
    // Consumed inputs waiting for their answer: by proof id, indexes into `held`; those
    // whose proof came but not what it requires, by that token; the tokens provided.
    let mut waiting: HashMap<String, Vec<usize>> = HashMap::new();
    let mut blocked: HashMap<String, Vec<usize>> = HashMap::new();
    let mut provided: std::collections::HashSet<String> = Default::default();
    let mut held: Vec<(u64, Option<Commit>)> = Vec::new();
    let mut batch: Vec<Commit> = Vec::new();
    let release = |held: &mut Vec<(u64, Option<Commit>)>,
                   i: usize,
                   batch: &mut Vec<Commit>,
                   report: &mut RestoreReport| {
        if let Some(c) = held[i].1.take() {
            if c.events.is_empty() {
                report.consumed_inbox_only += 1;
            } else {
                report.consumed_recorded += 1;
            }
            batch.push(c);
        }
    };
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
        // Only what the service may have published (the subjects its NATS user may publish
        // on) or consumed can be part of its log — checking the signature of everything else
        // was two thirds of a restore's time — and anchored heads describe a log, they are not
        // records of it. A skipped message may be the stream's last (a clean stop anchors).
        let heads = subject.starts_with(huiqi_events::subjects::HEADS_PREFIX);
        if heads || !(consumed || own.iter().any(|f| topology::subject_matches(f, &subject))) {
            if seq >= last {
                break;
            }
            continue;
        }
        let signature = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(SIGNATURE_HEADER))
            .map(|v| v.as_str().to_string());
        let signer = trust.verify(signature.as_deref(), &msg.payload, Mode::History);
        let produced = matches!(&signer, Ok(s) if s.service == service);
        let refused = match &signer {
            Ok(_) => None,
            Err(SignatureError::Missing) if rules.signatures() == Signatures::Optional => None,
            Err(e) => Some(e),
        };
        if split && produced && !consumed {
            let env = Envelope::decode(&msg.payload)
                .and_then(types::upcast)
                .map_err(|e| err(&format!("stream seq {seq}"), &e))?;
            if !in_partition(&env, &subject, partition, filter, &ours) {
                if seq >= last {
                    break;
                }
                continue;
            }
            ours.insert(env.id.clone());
        } else if split && consumed {
            if let Ok(env) = Envelope::decode(&msg.payload) {
                ours.insert(env.id);
            }
        }
        if produced || consumed {
            match (refused, consumed) {
                (Some(e), true) if !produced => {
                    report.refused_signatures += 1;
                    if report.refused_examples.len() < 10 {
                        report
                            .refused_examples
                            .push(format!("stream seq {seq} on {subject}: {e}"));
                    }
                }
                _ if produced => {
                    let env = Envelope::decode(&msg.payload)
                        .and_then(types::upcast)
                        .map_err(|e| err(&format!("stream seq {seq}"), &e))?;
                    {
                        if let Some(token) = rules.provides(&env) {
                            for i in blocked.remove(&token).unwrap_or_default() {
                                release(&mut held, i, &mut batch, &mut report);
                            }
                            provided.insert(token);
                        }
                        let answered = waiting.remove(&env.id).unwrap_or_default();
                        match rules.requires(&env) {
                            Some(token) if !answered.is_empty() && !provided.contains(&token) => {
                                blocked.entry(token).or_default().extend(answered);
                            }
                            _ => {
                                for i in answered {
                                    release(&mut held, i, &mut batch, &mut report);
                                }
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
                    }
                }
                _ => {
                    let env = Envelope::decode(&msg.payload).and_then(types::upcast).ok();
                    {
                        match rules.consumed(&msg.payload, env.as_ref(), seq) {
                            // An unreadable input cannot be recorded (it was parked).
                            Consumed::Record { inbox } => {
                                if let Some(env) = env {
                                    batch.push(Commit {
                                        inbox_id: Some(inbox),
                                        events: vec![Pending::received(env, msg.payload.clone())],
                                    });
                                    report.consumed_recorded += 1;
                                }
                            }
                            Consumed::RecordIfAnswered { inbox, proofs } => {
                                if let Some(env) = env {
                                    held.push((
                                        seq,
                                        Some(Commit {
                                            inbox_id: Some(inbox),
                                            events: vec![Pending::received(
                                                env,
                                                msg.payload.clone(),
                                            )],
                                        }),
                                    ));
                                    for p in proofs {
                                        waiting.entry(p).or_default().push(held.len() - 1);
                                    }
                                }
                            }
                            Consumed::InboxIfAnswered { inbox, proofs } => {
                                held.push((
                                    seq,
                                    Some(Commit {
                                        inbox_id: Some(inbox),
                                        events: vec![],
                                    }),
                                ));
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
    let unanswered: Vec<u64> = held
        .iter()
        .filter(|(_, c)| c.is_some())
        .map(|(seq, _)| *seq)
        .collect();
    report.unanswered_left_for_redelivery = unanswered.len() as u64;
    report.first_unanswered = unanswered.into_iter().min();
    let head = log.head()?.0;
    log.set_outbox_cursor(head)?;
    if rules.checks_answers_after_rebuild() {
        log.mark_answers_unchecked()?;
    }
    report.log_records = head;
    Ok(report)
}

/// Whether an event a split service produced belongs to `partition` (see the module docs):
/// `ours` holds the ids of the partition's inputs and products seen so far.
fn in_partition(
    env: &Envelope,
    subject: &str,
    partition: Partition,
    filter: &str,
    ours: &std::collections::HashSet<String>,
) -> bool {
    if let Some(rest) = subject.strip_prefix("huiqi.internal.") {
        return rest.rsplit_once('.').map(|(_, token)| token)
            == Some(&partition.index().to_string());
    }
    if env.ty == types::MESSAGE_PARKED {
        return env
            .data_as::<MessageParked>()
            .is_ok_and(|p| topology::subject_matches(filter, &p.subject));
    }
    env.causationid.as_ref().is_some_and(|c| ours.contains(c))
}

/// Makes `service`'s durable consumer (its `partition`'s, when split) deliver again from
/// stream sequence `from` (admin): the consumer is deleted and created anew with the same
/// settings, starting there. The restored inbox turns what was already handled into no-ops;
/// what was not is handled now.
pub async fn rewind_consumer(
    js: &jetstream::Context,
    service: &str,
    partition: Partition,
    from: u64,
) -> Result<(), BusError> {
    let spec = topology::service_consumer_in(service, partition)
        .ok_or_else(|| err("rewind", &format!("unknown service `{service}`")))?;
    let stream = js.get_stream(STREAM).await.map_err(|e| err("stream", &e))?;
    // A consumer that is already gone is fine: it is created below.
    let _ = stream.delete_consumer(&spec.durable).await;
    let mut config = crate::setup::pull_config(&spec);
    config.deliver_policy = jetstream::consumer::DeliverPolicy::ByStartSequence {
        start_sequence: from,
    };
    stream
        .create_consumer(config)
        .await
        .map_err(|e| err(&format!("consumer {}", spec.durable), &e))?;
    Ok(())
}
