//! The batch consumer loop. It pulls messages continuously (the client keeps pulls in flight),
//! groups whatever has arrived into a batch, gives the batch to the service, and settles each
//! message as the service says. The service writes its effects and inbox marks in one sled
//! transaction and flushes *before* it returns, so an ack never precedes durable state.

use crate::trust::{Mode, SignatureError, Signer, TrustStore, SIGNATURE_HEADER};
use crate::BusError;
use async_nats::jetstream::{self, consumer::pull, AckKind};
use bytes::Bytes;
use futures_util::StreamExt;
use huiqi_eventlog::Commit;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A durable consumer's settings. Every number is a choice, not a default:
/// - `ack_wait`: longer than the slowest batch (a sled flush of the largest batch), short enough
///   that a dead instance's messages move on quickly.
/// - `max_deliver`: a message still failing after this many deliveries is a poison message;
///   the handler sees `final_attempt` and parks it instead of retrying.
/// - `max_ack_pending`: how many un-acked messages the server lets out at once: the batch size
///   times a few batches, bounding memory and redelivery storms.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub durable: String,
    pub filter: String,
    pub ack_wait: Duration,
    pub max_deliver: i64,
    pub max_ack_pending: i64,
    pub batch: usize,
}

impl ConsumerSpec {
    pub fn new(durable: &str, filter: &str) -> Self {
        ConsumerSpec {
            durable: durable.to_string(),
            filter: filter.to_string(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_ack_pending: 4_000,
            batch: 500,
        }
    }
}

/// One delivered message, as the service sees it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub subject: String,
    pub payload: Bytes,
    /// The `Nats-Msg-Id` header, when present.
    pub msg_id: Option<String>,
    pub stream_sequence: u64,
    pub delivered: i64,
    /// This is the last delivery JetStream will make: retrying is pointless, park instead.
    pub final_attempt: bool,
    /// The `Huiqi-Signature` header, when present.
    pub signature: Option<String>,
    /// Who signed it, as checked against the trust file before the service sees it:
    /// `Ok(None)` means unsigned where signatures are optional (portal applications).
    pub signer: Result<Option<Signer>, SignatureError>,
}

impl Delivery {
    /// A key naming this stream message: the inbox key of a message that is parked or
    /// cannot be read (never its claimed event id, which a forger could take from a genuine
    /// event to have it dropped later), and the cause of the parked record's derived id.
    pub fn stream_key(&self) -> String {
        format!("stream-seq-{}", self.stream_sequence)
    }
}

/// Whether a service's input must be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signatures {
    /// Internal events: anything unsigned, untrusted or signed for another type is parked
    /// before the service sees it.
    Required,
    /// Portal applications: unsigned is accepted (the portal's NATS login vouches for it); a
    /// signature present must verify, and the service answers one that does not.
    Optional,
}

/// The check every delivery passes before its service sees it; what fails a required
/// signature is recorded as parked (inbox + parked event, then terminated) right here.
pub struct Gate {
    pub service: String,
    pub trust: Arc<TrustStore>,
    pub signatures: Signatures,
    pub writer: crate::LogWriter,
    /// Batches are handled and settled only while this instance holds its lease.
    pub fence: crate::lease::Fence,
}

impl Gate {
    fn check(
        &self,
        signature: Option<&str>,
        payload: &[u8],
    ) -> Result<Option<Signer>, SignatureError> {
        match self.trust.verify(signature, payload, Mode::Live) {
            Ok(s) => Ok(Some(s)),
            Err(SignatureError::Missing) if self.signatures == Signatures::Optional => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// How to settle one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Processed (or already processed): never deliver again.
    Ack,
    /// Transient trouble: deliver again after the delay.
    Retry(Duration),
    /// Never deliverable; the handler has already recorded it as parked.
    Term,
}

/// What a handler made of a batch: the commits that make it durable (inbox marks and events,
/// written in one transaction), one disposition per delivery in order, and what to do once
/// the commits are durable (hand new work to a worker queue).
pub struct Handled {
    pub commits: Vec<Commit>,
    pub dispositions: Vec<Disposition>,
    pub after: Option<Box<dyn FnOnce() + Send>>,
}

impl Handled {
    pub fn new(commits: Vec<Commit>, dispositions: Vec<Disposition>) -> Self {
        Handled {
            commits,
            dispositions,
            after: None,
        }
    }
}

/// A service's batch handler. It decides a batch in memory and says what to write; the loop
/// writes it, and only once it is durable runs `after` and acks. Its state may run ahead of
/// the log by the batches in flight: a failed write stops the service, and a restart folds
/// the state back from what is durable.
pub trait BatchHandler: Send {
    fn handle(
        &mut self,
        batch: Vec<Delivery>,
    ) -> impl Future<Output = Result<Handled, BusError>> + Send;
}

/// Batches that may wait for their write at once: while one is flushed, the next is decided.
const BATCHES_IN_FLIGHT: usize = 2;

/// A batch that takes longer than this to decide is worth a warning.
const SLOW_BATCH: Duration = Duration::from_millis(500);

/// A batch whose commits are with the writer: settled (acked) once they are durable.
struct Settle {
    ticket: crate::writer::Ticket,
    msgs: Vec<jetstream::Message>,
    dispositions: Vec<Disposition>,
    after: Option<Box<dyn FnOnce() + Send>>,
}

impl Settle {
    async fn finish(
        self,
        durable: &str,
        written: Result<Vec<huiqi_eventlog::Applied>, BusError>,
        fence: &crate::lease::Fence,
    ) -> Result<(), BusError> {
        written?;
        if let Some(after) = self.after {
            after();
        }
        if !fence.held() {
            // Logged but not settled: whoever holds the lease next gets them again.
            tracing::warn!(durable = %durable, messages = self.msgs.len(), "lease not held: batch left unacknowledged");
            return Ok(());
        }
        let acks = self
            .msgs
            .iter()
            .zip(self.dispositions)
            .map(|(m, d)| async move {
                let kind = match d {
                    Disposition::Ack => AckKind::Ack,
                    Disposition::Retry(delay) => AckKind::Nak(Some(delay)),
                    Disposition::Term => AckKind::Term,
                };
                m.ack_with(kind).await
            });
        for r in futures_util::future::join_all(acks).await {
            if let Err(e) = r {
                // The message will be redelivered after ack_wait; the inbox makes it a no-op.
                tracing::warn!(durable = %durable, error = %e, "ack failed");
            }
        }
        Ok(())
    }
}

/// Runs the loop until `shutdown`; the batch in hand is finished and settled first.
/// A handler error (the sled log failing) stops the loop with that error: its messages stay
/// un-acked and are redelivered to whoever runs next.
pub async fn run<H: BatchHandler>(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    spec: ConsumerSpec,
    mut handler: H,
    gate: Gate,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let err = |e: &dyn std::fmt::Display| BusError::Consume {
        durable: spec.durable.clone(),
        message: e.to_string(),
    };
    let messages = consumer
        .stream()
        .max_messages_per_batch(spec.batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| err(&e))?;
    let mut chunks = messages.ready_chunks(spec.batch);
    let mut in_flight: std::collections::VecDeque<Settle> = Default::default();
    loop {
        while in_flight.len() >= BATCHES_IN_FLIGHT {
            let mut settle = in_flight.pop_front().expect("non-empty");
            let written = (&mut settle.ticket).await;
            settle.finish(&spec.durable, written, &gate.fence).await?;
        }
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => break,
            c = chunks.next() => c,
            // Nothing new: settle the oldest batch as soon as its write is durable.
            written = async { (&mut in_flight.front_mut().expect("non-empty").ticket).await }, if !in_flight.is_empty() => {
                let settle = in_flight.pop_front().expect("non-empty");
                settle.finish(&spec.durable, written, &gate.fence).await?;
                continue;
            }
        };
        let Some(chunk) = chunk else {
            return Err(err(&"message stream ended"));
        };
        // Only the lease holder handles messages; a paused holder waits, a lost one stops.
        if !gate.fence.wait_held(&shutdown).await {
            break;
        }
        let mut msgs = Vec::with_capacity(chunk.len());
        for m in chunk {
            match m {
                Ok(m) => msgs.push(m),
                Err(e) => tracing::warn!(durable = %spec.durable, error = %e, "pull error"),
            }
        }
        if msgs.is_empty() {
            continue;
        }
        {
            let c = crate::health::counters(&gate.service);
            c.received
                .fetch_add(msgs.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let pending = msgs
                .last()
                .and_then(|m| m.info().ok())
                .map(|i| i.pending)
                .unwrap_or(0);
            c.pending
                .store(pending, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("huiqi_messages_received_total", "service" => gate.service.clone())
                .increment(msgs.len() as u64);
            metrics::gauge!("huiqi_consumer_pending", "service" => gate.service.clone())
                .set(pending as f64);
        }
        let mut dispositions: Vec<Option<Disposition>> = vec![None; msgs.len()];
        let mut batch = Vec::with_capacity(msgs.len());
        let mut admitted = Vec::with_capacity(msgs.len());
        let mut parked = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let (seq, delivered) = m
                .info()
                .map(|i| (i.stream_sequence, i.delivered))
                .unwrap_or((0, 1));
            let header = |name: &str| {
                m.headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_string())
            };
            let signature = header(SIGNATURE_HEADER);
            let signer = gate.check(signature.as_deref(), &m.payload);
            let d = Delivery {
                subject: m.subject.to_string(),
                payload: m.payload.clone(),
                msg_id: header("Nats-Msg-Id"),
                stream_sequence: seq,
                delivered,
                final_attempt: spec.max_deliver > 0 && delivered >= spec.max_deliver,
                signature,
                signer,
            };
            match &d.signer {
                Err(e) if gate.signatures == Signatures::Required => {
                    let reason = format!("signature refused: {e}");
                    tracing::warn!(
                        service = %gate.service,
                        stream_seq = seq,
                        subject = %huiqi_events::escape_control(&d.subject),
                        reason = %reason,
                        "message parked before processing"
                    );
                    parked.push(Commit {
                        inbox_id: Some(d.stream_key()),
                        events: vec![crate::service::parked(&gate.service, &d, &reason)],
                    });
                    dispositions[i] = Some(Disposition::Term);
                }
                _ => {
                    admitted.push(i);
                    batch.push(d);
                }
            }
        }
        let mut commits = parked;
        let mut after = None;
        if !batch.is_empty() {
            let n = batch.len();
            let started = std::time::Instant::now();
            let handled = handler.handle(batch).await?;
            metrics::histogram!("huiqi_batch_seconds", "service" => gate.service.clone())
                .record(started.elapsed().as_secs_f64());
            if started.elapsed() > SLOW_BATCH {
                tracing::warn!(
                    durable = %spec.durable,
                    messages = n,
                    ms = started.elapsed().as_millis() as u64,
                    "slow batch"
                );
            }
            if handled.dispositions.len() != n {
                return Err(BusError::Handler(format!(
                    "handler returned {} dispositions for {n} messages",
                    handled.dispositions.len()
                )));
            }
            for (i, d) in admitted.into_iter().zip(handled.dispositions) {
                dispositions[i] = Some(d);
            }
            commits.extend(handled.commits);
            after = handled.after;
        }
        let ticket = gate.writer.submit(commits).await?;
        in_flight.push_back(Settle {
            ticket,
            msgs,
            dispositions: dispositions
                .into_iter()
                .map(|d| d.expect("every message has a disposition"))
                .collect(),
            after,
        });
    }
    // Stopping: what was decided is written and settled before the loop returns.
    while let Some(mut settle) = in_flight.pop_front() {
        let written = (&mut settle.ticket).await;
        settle.finish(&spec.durable, written, &gate.fence).await?;
    }
    Ok(())
}
