//! Anchored log heads: now and then (and once more at stop) a service publishes its log's head
//! — sequence and chain hash — as a signed `huiqi.log.head.v1` event on `huiqi.heads.<service>`.
//!
//! Why: the hash chain proves a log was not altered *unless* someone rewrote it and recomputed
//! the chain on that one disk. The stream's copy of the heads, signed with the service's key
//! and held by the NATS servers, is out of that person's reach: `huiqi audit heads` checks
//! every anchored head against the log, so such a rewrite shows.

use crate::trust::{SigningKey, SIGNATURE_HEADER};
use crate::BusError;
use async_nats::jetstream;
use huiqi_eventlog::EventLog;
use huiqi_events::payloads::LogHead;
use huiqi_events::{subjects, types, Envelope, Partition};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Hex of a chain hash.
pub fn hex(hash: &[u8]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The signed head event of `service` at `seq` (its id derives from the sequence, so
/// publishing the same head twice is dropped by the stream's duplicate window). A split
/// service's partitions each have their own log, so the partition is part of the id (two
/// partitions at the same sequence must not look like one head published twice).
pub fn head_event(service: &str, partition: Partition, seq: u64, hash: &[u8]) -> Envelope {
    let data = LogHead {
        service: service.to_string(),
        log_sequence: seq,
        head_hash: hex(hash),
    };
    Envelope::derived(
        service,
        types::LOG_HEAD,
        &partition.durable(service),
        &data,
        &if partition.is_split() {
            format!("head-p{}-{seq}", partition.index())
        } else {
            format!("head-{seq}")
        },
        "0",
    )
    .expect("a head serializes")
}

/// Publishes the head of `log` once, waiting for the stream's ack.
pub async fn publish_head(
    js: &jetstream::Context,
    service: &str,
    partition: Partition,
    log: &EventLog,
    key: &SigningKey,
) -> Result<u64, BusError> {
    let (seq, hash) = log.head()?;
    if seq == 0 {
        return Ok(0);
    }
    let env = head_event(service, partition, seq, &hash);
    // Split: `huiqi.heads.<service>.<index>`, one subject per partition's log.
    let subject = partition.subject(&subjects::heads_subject(service));
    let bytes = env.encode();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", env.id.as_str());
    headers.insert(SIGNATURE_HEADER, key.sign(&bytes).as_str());
    let fail = |e: &dyn std::fmt::Display| BusError::Publish {
        subject: subject.clone(),
        message: e.to_string(),
    };
    js.publish_with_headers(subject.clone(), headers, bytes.into())
        .await
        .map_err(|e| fail(&e))?
        .await
        .map_err(|e| fail(&e))?;
    Ok(seq)
}

/// Whose log head is anchored, and where: one service's worker for one partition.
pub struct Anchoring {
    pub js: jetstream::Context,
    pub service: String,
    pub partition: Partition,
    pub key: Arc<SigningKey>,
    /// How often the head is published while it moves.
    pub every: Duration,
}

/// Publishes the head every `every` while it moves, and once more when `stop` fires.
pub async fn run(
    a: Anchoring,
    log: Arc<EventLog>,
    stop: CancellationToken,
    fence: crate::lease::Fence,
) {
    let mut anchored = 0u64;
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(a.every) => false,
        };
        let moved = log.head().map(|(seq, _)| seq > anchored).unwrap_or(false);
        // An instance that no longer holds its lease has no head worth anchoring.
        if moved && fence.held() {
            match publish_head(&a.js, &a.service, a.partition, &log, &a.key).await {
                Ok(seq) => anchored = seq,
                Err(e) => {
                    tracing::warn!(service = %a.service, partition = %a.partition, error = %e, "log head not anchored; trying again later")
                }
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_partitions_heads_at_one_sequence_are_two_events() {
        let hash = [7u8; 32];
        let p0 = head_event("award", Partition::new(0, 2).unwrap(), 5, &hash);
        let p1 = head_event("award", Partition::new(1, 2).unwrap(), 5, &hash);
        // Same id would make the stream's duplicate window drop one of them.
        assert_ne!(p0.id, p1.id);
        // Unsplit, the id is the one heads always had (subject = the service).
        let only = head_event("award", Partition::ONLY, 5, &hash);
        let before = Envelope::derived(
            "award",
            types::LOG_HEAD,
            "award",
            &LogHead {
                service: "award".into(),
                log_sequence: 5,
                head_hash: hex(&hash),
            },
            "head-5",
            "0",
        )
        .unwrap();
        assert_eq!(only.id, before.id);
    }
}
