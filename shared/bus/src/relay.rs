//! The outbox relay: publishes every log record that has a `publish` subject, in log order,
//! with `Nats-Msg-Id` = event id, up to `max_in_flight` publish acks outstanding, and moves the
//! cursor in the sled log only when every ack of the batch is in. A crash republishes from
//! the cursor; JetStream's duplicate window and the consumers' inboxes drop the repeats.

use crate::BusError;
use async_nats::jetstream;
use async_nats::HeaderMap;
use huiqi_eventlog::EventLog;
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
}

impl Relay {
    pub fn new(service: &str, log: Arc<EventLog>, js: jetstream::Context) -> Self {
        Relay {
            log,
            js,
            waker: RelayWaker::default(),
            max_in_flight: 1_000,
            service: service.to_string(),
        }
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
                Ok(_) => backoff = Duration::from_millis(100),
                Err(BusError::Log(e)) => return Err(BusError::Log(e)),
                Err(e) => {
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
        let cursor = self.log.outbox_cursor()?;
        let mut last = cursor;
        let mut futures = Vec::new();
        let mut scanned = 0usize;
        for rec in self.log.records_from(cursor + 1) {
            let rec = rec?;
            last = rec.seq;
            scanned += 1;
            if let Some(subject) = rec.publish {
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", rec.envelope.id.as_str());
                let payload = rec.envelope.encode().into();
                let ack = self
                    .js
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await
                    .map_err(|e| BusError::Publish {
                        subject: subject.clone(),
                        message: e.to_string(),
                    })?;
                futures.push((subject, ack));
            }
            if futures.len() >= self.max_in_flight || scanned >= 4 * self.max_in_flight {
                break;
            }
        }
        if scanned == 0 {
            return Ok(0);
        }
        let results =
            futures_util::future::join_all(futures.into_iter().map(|(subject, ack)| async move {
                ack.await.map_err(|e| BusError::Publish {
                    subject,
                    message: e.to_string(),
                })
            }))
            .await;
        for r in results {
            r?;
        }
        self.log.set_outbox_cursor(last)?;
        Ok(scanned)
    }
}
