//! The outbox relay: publishes every log record that has a `publish` subject, in log order,
//! with `Nats-Msg-Id` = event id and `Huiqi-Signature` = the service's signature of the exact
//! bytes, up to `max_in_flight` publish acks outstanding, and moves the cursor in the sled log
//! only when every ack of the batch is in. A crash republishes from the cursor; JetStream's
//! duplicate window and the consumers' inboxes drop the repeats.
//!
//! An event bigger than the server accepts can never be published: retrying it would block
//! every event behind it for ever. The relay records it instead ([`EventUnpublishable`], on
//! `huiqi.parked.<service>`, with a warning) and moves on; `huiqi status` counts it.

use crate::trust::{SigningKey, SIGNATURE_HEADER};
use crate::BusError;
use async_nats::jetstream;
use async_nats::HeaderMap;
use huiqi_eventlog::{Commit, EventLog, Outgoing, Pending};
use huiqi_events::payloads::EventUnpublishable;
use huiqi_events::{subjects, types, Envelope, Partition};

const INTERNAL: &str = "huiqi.internal.";
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Wakes the relay after a commit; cheap to clone.
#[derive(Clone, Default)]
pub struct RelayWaker(Arc<Notify>);

impl RelayWaker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

pub struct Relay {
    log: Arc<EventLog>,
    js: jetstream::Context,
    waker: RelayWaker,
    max_in_flight: usize,
    service: String,
    key: Arc<SigningKey>,
    fence: crate::lease::Fence,
    partition: Partition,
}

impl Relay {
    pub fn new(
        service: &str,
        log: Arc<EventLog>,
        js: jetstream::Context,
        key: Arc<SigningKey>,
    ) -> Self {
        Relay {
            log,
            js,
            waker: RelayWaker::default(),
            max_in_flight: 1_000,
            service: service.to_string(),
            key,
            fence: crate::lease::Fence::always(),
            partition: Partition::ONLY,
        }
    }

    /// A split service's worker: its events on `huiqi.internal.*` subjects go out on its
    /// partition's (`….<index>`), where the next service's worker for the same partition reads
    /// them; the log keeps the subject as the service named it, so the code that decides never
    /// needs to know the partition. Contract subjects are never changed.
    pub fn in_partition(mut self, partition: Partition) -> Self {
        self.partition = partition;
        self
    }

    /// Publishes only while `fence` holds: an instance whose lease ran out or was taken must
    /// not publish what it decided from a history another instance may have moved past.
    pub fn fenced(mut self, fence: crate::lease::Fence) -> Self {
        self.fence = fence;
        self
    }

    pub fn waker(&self) -> RelayWaker {
        self.waker.clone()
    }

    /// Runs until `shutdown`, then publishes what is already in the log before returning.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BusError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.publish_pending().await {
                Ok(0) => {
                    crate::health::relay(&self.service, true);
                    backoff = Duration::from_millis(100);
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                    tokio::select! {
                        _ = self.waker.0.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Ok(n) => {
                    crate::health::relay(&self.service, true);
                    metrics::counter!("huiqi_events_published_total", "service" => self.service.clone())
                        .increment(n as u64);
                    backoff = Duration::from_millis(100)
                }
                Err(BusError::Log(e)) => return Err(BusError::Log(e)),
                Err(e) => {
                    crate::health::relay(&self.service, false);
                    tracing::warn!(service = %self.service, error = %e, "relay publish failed; retrying");
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Publishes one batch after the cursor; returns how many records it moved past.
    pub async fn publish_pending(&self) -> Result<usize, BusError> {
        if !self.fence.held() {
            return Ok(0);
        }
        let cursor = self.log.outbox_cursor()?;
        let (batch, last) = self.log.outbox_from(cursor + 1, self.max_in_flight)?;
        if last <= cursor {
            return Ok(0);
        }
        let mut acks = Vec::with_capacity(batch.len());
        let mut unpublishable = Vec::new();
        for out in batch {
            // Checked per event: a holder frozen mid-batch (a stalled machine) must not send
            // the rest of it when it thaws after a standby took over. What it sent is sent
            // again by whoever holds the log next, under the same ids.
            if !self.fence.held() {
                return Ok(0);
            }
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", out.id.as_str());
            headers.insert(SIGNATURE_HEADER, self.key.sign(&out.event).as_str());
            let Outgoing {
                seq,
                subject,
                id,
                event,
            } = out;
            let size = event.len();
            let subject = if self.partition.is_split() && subject.starts_with(INTERNAL) {
                self.partition.subject(&subject)
            } else {
                subject
            };
            match self
                .js
                .publish_with_headers(subject.clone(), headers, event.into())
                .await
            {
                Ok(ack) => acks.push((subject, ack)),
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                    unpublishable.push((seq, id, subject, size, e.to_string()));
                }
                Err(e) => {
                    return Err(BusError::Publish {
                        subject,
                        message: e.to_string(),
                    })
                }
            }
        }
        let results =
            futures_util::future::join_all(acks.into_iter().map(|(subject, ack)| async move {
                ack.await.map_err(|e| BusError::Publish {
                    subject,
                    message: e.to_string(),
                })
            }))
            .await;
        for r in results {
            r?;
        }
        for (seq, id, subject, size, reason) in unpublishable {
            self.record_unpublishable(seq, &id, &subject, size, &reason)?;
        }
        self.log.set_outbox_cursor(last)?;
        Ok((last - cursor) as usize)
    }

    /// Logs (and so, on the next round, publishes) the record of an event that cannot be
    /// published, once per log record.
    fn record_unpublishable(
        &self,
        seq: u64,
        id: &str,
        publish_subject: &str,
        size: usize,
        reason: &str,
    ) -> Result<(), BusError> {
        let head = self
            .log
            .records_from(seq)
            .next()
            .and_then(Result::ok)
            .map(|r| (r.envelope.ty, r.envelope.subject));
        let limit = self.js.client().server_info().max_payload as u64;
        let data = EventUnpublishable {
            service: self.service.clone(),
            log_sequence: seq,
            event_id: id.to_string(),
            event_type: head.as_ref().map(|h| h.0.clone()).unwrap_or_default(),
            subject: head.as_ref().map(|h| h.1.clone()).unwrap_or_default(),
            publish_subject: publish_subject.to_string(),
            bytes: size as u64,
            limit,
            reason: reason.to_string(),
        };
        tracing::warn!(
            service = %self.service,
            log_seq = seq,
            event_type = %huiqi_events::escape_control(&data.event_type),
            subject = %huiqi_events::escape_control(&data.subject),
            bytes = size,
            limit,
            "event too large to publish: recorded on huiqi.parked and skipped; its claim waits for an operator"
        );
        let env = Envelope::derived(
            &self.service,
            types::EVENT_UNPUBLISHABLE,
            &data.subject,
            &data,
            id,
            "0",
        )
        .expect("serializes");
        self.log.commit(&[Commit {
            inbox_id: Some(format!("unpublishable@{seq}")),
            events: vec![Pending::publish(
                env,
                subjects::parked_subject(&self.service),
            )],
        }])?;
        Ok(())
    }
}
