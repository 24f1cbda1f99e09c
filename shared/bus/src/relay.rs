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
        let (batch, last) = self.log.outbox_from(cursor + 1, self.max_in_flight)?;
        if last <= cursor {
            return Ok(0);
        }
        let mut acks = Vec::with_capacity(batch.len());
        for out in batch {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", out.id.as_str());
            let ack = self
                .js
                .publish_with_headers(out.subject.clone(), headers, out.event.into())
                .await
                .map_err(|e| BusError::Publish {
                    subject: out.subject.clone(),
                    message: e.to_string(),
                })?;
            acks.push((out.subject, ack));
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
        self.log.set_outbox_cursor(last)?;
        Ok((last - cursor) as usize)
    }
}
