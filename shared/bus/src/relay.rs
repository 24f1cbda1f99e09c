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
use huiqi_eventlog::{Commit, EventLog, Outgoing, Pending, Published};
use huiqi_events::payloads::EventUnpublishable;
use huiqi_events::{subjects, types, Envelope, Partition};
use std::collections::VecDeque;

const INTERNAL: &str = "huiqi.internal.";
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Wakes the relay after a commit, handing it what the commit appended; cheap to clone.
#[derive(Clone, Default)]
pub struct RelayWaker {
    notify: Arc<Notify>,
    handed: Arc<std::sync::Mutex<Handed>>,
}

/// Commits handed to the relay in memory, oldest first ([`Published`]).
#[derive(Default)]
struct Handed {
    commits: VecDeque<Published>,
    events: usize,
}

/// At most this many events wait in memory for the relay; past it the queue is dropped and
/// the relay reads them from the log (a relay that cannot publish, NATS being down, must not
/// hold the service's memory).
const HANDED_MAX: usize = 20_000;

impl RelayWaker {
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Hands over what a durable commit appended (then [`RelayWaker::wake`]).
    pub fn hand(&self, commit: Published) {
        if commit.first > commit.last {
            return;
        }
        let mut h = self.handed.lock().expect("relay hand-over lock");
        if h.events + commit.events.len() > HANDED_MAX {
            h.commits.clear();
            h.events = 0;
        }
        h.events += commit.events.len();
        h.commits.push_back(commit);
    }

    /// The events to publish from record `next` on, with the last record they cover, when the
    /// commits handed over continue the log exactly from `next` (at least one commit, more
    /// while the events stay within `limit`); None when the relay must read the log (after a
    /// start, a dropped queue, or a record written outside the writer).
    fn take_from(&self, next: u64, limit: usize) -> Option<(Vec<Outgoing>, u64)> {
        let mut h = self.handed.lock().expect("relay hand-over lock");
        // What the relay has moved past (it read it from the log) goes.
        while let Some(front) = h.commits.front_mut() {
            if front.last < next {
                let gone = front.events.len();
                h.commits.pop_front();
                h.events -= gone;
                continue;
            }
            if front.first < next {
                let before = front.events.len();
                front.events.retain(|o| o.seq >= next);
                front.first = next;
                let gone = before - front.events.len();
                h.events -= gone;
            }
            break;
        }
        if h.commits.front()?.first != next {
            return None;
        }
        let mut out = Vec::new();
        let mut last = next - 1;
        while let Some(c) = h.commits.front() {
            if c.first != last + 1 || (!out.is_empty() && out.len() + c.events.len() > limit) {
                break;
            }
            let c = h.commits.pop_front().expect("a front");
            h.events -= c.events.len();
            last = c.last;
            out.extend(c.events);
        }
        Some((out, last))
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
                        _ = self.waker.notify.notified() => {}
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
        let (batch, last) = match self.waker.take_from(cursor + 1, self.max_in_flight) {
            Some(handed) => handed,
            None => self.log.outbox_from(cursor + 1, self.max_in_flight)?,
        };
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
                .publish_with_headers(subject.clone(), headers, event)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn out(seq: u64) -> Outgoing {
        Outgoing {
            seq,
            subject: "huiqi.internal.x".into(),
            id: format!("E-{seq}"),
            event: bytes::Bytes::from(format!("{{\"n\":{seq}}}")),
        }
    }

    /// A commit of records `first..=last`, publishing those in `published`.
    fn commit(first: u64, last: u64, published: &[u64]) -> Published {
        Published {
            first,
            last,
            events: published.iter().map(|s| out(*s)).collect(),
        }
    }

    fn seqs(taken: Option<(Vec<Outgoing>, u64)>) -> Option<(Vec<u64>, u64)> {
        taken.map(|(o, last)| (o.iter().map(|o| o.seq).collect(), last))
    }

    #[test]
    fn the_relay_takes_handed_commits_only_where_they_continue_the_log_exactly() {
        let w = RelayWaker::default();
        // Nothing handed (a start): read the log.
        assert_eq!(seqs(w.take_from(1, 100)), None);
        w.hand(commit(1, 3, &[1, 3]));
        w.hand(commit(4, 4, &[]));
        w.hand(commit(5, 6, &[5, 6]));
        // A commit that appended nothing is never queued.
        w.hand(commit(7, 6, &[]));
        // Contiguous from the cursor: taken together, up to the limit.
        assert_eq!(seqs(w.take_from(1, 3)), Some((vec![1, 3], 4)));
        assert_eq!(seqs(w.take_from(5, 100)), Some((vec![5, 6], 6)));
        assert_eq!(seqs(w.take_from(7, 100)), None);
        // A record written outside the writer (seq 9): the relay reads the log from 9 on...
        w.hand(commit(7, 8, &[7, 8]));
        w.hand(commit(10, 12, &[10, 11, 12]));
        assert_eq!(seqs(w.take_from(7, 100)), Some((vec![7, 8], 8)));
        assert_eq!(seqs(w.take_from(9, 100)), None);
        // ...and, having read up to 10 there, takes the rest of that commit from memory.
        assert_eq!(seqs(w.take_from(11, 100)), Some((vec![11, 12], 12)));
        // Past the limit of events held, the queue is dropped (the relay reads the log).
        w.hand(commit(13, 13, &[13]));
        let many: Vec<u64> = (14..14 + HANDED_MAX as u64).collect();
        w.hand(commit(14, 13 + HANDED_MAX as u64, &many));
        assert_eq!(seqs(w.take_from(13, usize::MAX)), None);
        let (taken, last) = seqs(w.take_from(14, usize::MAX)).unwrap();
        assert_eq!((taken.len(), last), (HANDED_MAX, 13 + HANDED_MAX as u64));
        assert_eq!(w.handed.lock().unwrap().events, 0);
    }
}
