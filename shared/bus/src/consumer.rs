//! The batch consumer loop. It pulls messages continuously (the client keeps pulls in flight),
//! groups whatever has arrived into a batch, gives the batch to the service, and settles each
//! message as the service says. The service writes its effects and inbox marks in one sled
//! transaction and flushes *before* it returns, so an ack never precedes durable state.

use crate::BusError;
use async_nats::jetstream::{self, consumer::pull, AckKind};
use bytes::Bytes;
use futures_util::StreamExt;
use std::future::Future;
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
}

impl Delivery {
    /// A stable key for the inbox when the payload cannot be read: the stream sequence.
    pub fn fallback_id(&self) -> String {
        format!("stream-seq-{}", self.stream_sequence)
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

/// A service's batch handler. It returns one disposition per delivery, in order.
pub trait BatchHandler: Send {
    fn handle(
        &mut self,
        batch: Vec<Delivery>,
    ) -> impl Future<Output = Result<Vec<Disposition>, BusError>> + Send;
}

/// Runs the loop until `shutdown`; the batch in hand is finished and settled first.
/// A handler error (the sled log failing) stops the loop with that error: its messages stay
/// un-acked and are redelivered to whoever runs next.
pub async fn run<H: BatchHandler>(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    spec: ConsumerSpec,
    mut handler: H,
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
    loop {
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            c = chunks.next() => c,
        };
        let Some(chunk) = chunk else {
            return Err(err(&"message stream ended"));
        };
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
        let batch: Vec<Delivery> = msgs
            .iter()
            .map(|m| {
                let (seq, delivered) = m
                    .info()
                    .map(|i| (i.stream_sequence, i.delivered))
                    .unwrap_or((0, 1));
                Delivery {
                    subject: m.subject.to_string(),
                    payload: m.payload.clone(),
                    msg_id: m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|v| v.as_str().to_string()),
                    stream_sequence: seq,
                    delivered,
                    final_attempt: spec.max_deliver > 0 && delivered >= spec.max_deliver,
                }
            })
            .collect();
        let n = batch.len();
        let dispositions = handler.handle(batch).await?;
        if dispositions.len() != n {
            return Err(BusError::Handler(format!(
                "handler returned {} dispositions for {n} messages",
                dispositions.len()
            )));
        }
        let acks = msgs.iter().zip(dispositions).map(|(m, d)| async move {
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
                tracing::warn!(durable = %spec.durable, error = %e, "ack failed");
            }
        }
    }
}
