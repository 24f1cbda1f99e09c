//! One holder per service (and, later, per partition): a lease in the replicated JetStream
//! key-value bucket `huiqi-leases`, so several instances of a service can run side by side —
//! one working, the others standing by — and a standby takes over when the holder dies.
//!
//! Why a lease and not the consumer: nats-server 2.9 has no exclusive (pinned) pull consumers,
//! and two instances on one durable consumer are unsafe anyway — each keeps what it decided in
//! its own log until its relay publishes it, so the other would decide again from a partial
//! history (a person paid twice).
//!
//! How (docs/SCALING.md):
//! - The key `<service>.<partition>` holds `{holder, ttl_ms, state}`. Taking it is a
//!   create-only write, renewing it an update at the expected revision (compare-and-set) every
//!   `ttl/5`. The bucket keeps no time-to-live: nobody compares clocks across machines.
//! - A standby watches the revision. When it has not moved for the holder's own `ttl` as
//!   measured on the standby's clock — counting only while the bucket takes writes (the
//!   standby's own heartbeat key commits) and over an unbroken watch (a look that failed or
//!   hung starts it again), so a bucket electing a new leader after a node loss does not cost
//!   the holder its lease — the standby takes the key with an update at that
//!   revision; of two standbys only one update succeeds. A holder that stops cleanly writes
//!   `state: released`, which a standby takes at once.
//! - Fencing by time: the holder counts itself holding only until `ttl/2` after the start of
//!   its last successful renewal. Its relay publishes nothing and its consumer settles nothing
//!   outside that window ([`Fence`]), so it has stopped well before a standby may take over
//!   (`ttl` after the standby first saw that revision, which was written after the renewal
//!   started). A renewal that fails on the revision means the lease was taken: the instance
//!   stops for good ([`Holding::Lost`]), its log being stale from then on.
//! - Every read goes to the bucket stream's leader ([`read`]), never a direct get that any
//!   replica may answer: a replica catching up after a restart answers with an old revision,
//!   and a holder that took it for its own would fail every renewal on it and lose the lease.
//! - An instance that restarts with the same id (same host and data directory) takes its own
//!   lease back at once; the previous holder's id tells the taker whether its own log is the
//!   current one or must be rebuilt from the stream (the service start does that).

use crate::BusError;
use async_nats::jetstream::{self, kv, stream};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The bucket of leases.
pub const BUCKET: &str = "huiqi-leases";

/// The stream behind [`BUCKET`].
pub fn bucket_stream() -> String {
    format!("KV_{BUCKET}")
}

/// The key of `service`'s lease on `partition`.
pub fn key(service: &str, partition: u32) -> String {
    format!("{service}.{partition}")
}

/// What the key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The holding (or last) instance.
    pub holder: String,
    /// How long after the last renewal a standby may take over, milliseconds.
    pub ttl_ms: u64,
    /// `held`, or `released` by a holder that stopped cleanly.
    pub state: String,
    /// This run of the instance (a restart is a new incarnation of the same instance).
    #[serde(default)]
    pub incarnation: String,
}

/// What a lease acquisition found.
#[derive(Debug, Clone)]
pub struct Acquired {
    /// The instance that held the lease before (None: never held).
    pub previous: Option<String>,
    /// Which run of it (see [`LeaseValue::incarnation`]); empty when unknown.
    pub previous_incarnation: String,
    /// The revision this instance wrote.
    pub revision: u64,
    /// This run's incarnation, as written in the lease.
    pub incarnation: String,
}

/// The holder's standing, as its service sees it.
#[derive(Debug, Clone)]
pub enum Holding {
    /// Holding until this instant (renewed before it passes).
    Until(Instant),
    /// Taken by another instance: stop for good.
    Lost { by: String },
    /// Given up at a clean stop.
    Released,
}

/// The guard a service's relay and consumer check before acting: cheap to clone; a service
/// without a lease (tools, tests of single pieces) holds [`Fence::always`].
#[derive(Clone)]
pub struct Fence(Option<watch::Receiver<Holding>>);

impl Fence {
    pub fn always() -> Fence {
        Fence(None)
    }

    /// Whether this instance may act now.
    pub fn held(&self) -> bool {
        match &self.0 {
            None => true,
            Some(rx) => matches!(&*rx.borrow(), Holding::Until(t) if Instant::now() < *t),
        }
    }

    /// The instance that took the lease, once it is lost.
    pub fn lost_to(&self) -> Option<String> {
        match &self.0 {
            Some(rx) => match &*rx.borrow() {
                Holding::Lost { by } => Some(by.clone()),
                _ => None,
            },
            None => None,
        }
    }

    /// Resolves once another instance has taken the lease (never without a lease, nor after
    /// a clean release).
    pub async fn wait_lost(&self) {
        let Some(rx) = &self.0 else {
            return std::future::pending().await;
        };
        let mut rx = rx.clone();
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                Holding::Lost { .. } => return,
                Holding::Released => break,
                Holding::Until(_) => {}
            }
            if rx.changed().await.is_err() {
                break; // the renewals ended without a loss (the lease was dropped)
            }
        }
        std::future::pending().await
    }

    /// Waits until this instance may act (true), or until the lease is lost or given up, or
    /// `stop` (false).
    pub async fn wait_held(&self, stop: &CancellationToken) -> bool {
        let Some(rx) = &self.0 else { return true };
        let mut rx = rx.clone();
        loop {
            match &*rx.borrow_and_update() {
                Holding::Until(t) if Instant::now() < *t => return true,
                Holding::Lost { .. } | Holding::Released => return false,
                Holding::Until(_) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}

fn err(what: &str, e: &dyn std::fmt::Display) -> BusError {
    BusError::Setup {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// The bucket's stream (admin): one value per key, file storage, `replicas` copies. Created
/// directly as a stream because async-nats 0.51's `create_key_value` asks for the account
/// info, which it cannot parse from a clustered 2.9 server.
pub fn bucket_config(replicas: usize) -> stream::Config {
    kv_bucket_config(
        BUCKET,
        "Huiqi: which instance holds each service's work",
        replicas,
    )
}

/// The stream of one of Huiqi's key-value buckets (the leases, the cross-partition counts):
/// one value per key, small values, reads from the leader only (a replica still catching up
/// could answer with an old revision), as many replicas as the stream, nothing ever dropped
/// for room.
pub fn kv_bucket_config(bucket: &str, description: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_bytes: -1,
        max_message_size: 4096,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: false,
        num_replicas: replicas.max(1),
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }
}

/// Creates the lease bucket when it is missing (admin; also a service on an open bus).
pub async fn ensure_bucket(js: &jetstream::Context, replicas: usize) -> Result<(), BusError> {
    if let Ok(existing) = js.get_stream(bucket_stream()).await {
        // A bucket made when it allowed direct gets: turned off, so other readers (the
        // operator's tools) see the leader's answer too. The services read the leader anyway.
        let mut config = existing.cached_info().config.clone();
        if config.allow_direct {
            config.allow_direct = false;
            js.update_stream(config)
                .await
                .map_err(|e| err(&format!("lease bucket {BUCKET}"), &e))?;
        }
        return Ok(());
    }
    crate::setup::create_stream_patiently(js, bucket_config(replicas))
        .await
        .map_err(|e| err(&format!("lease bucket {BUCKET}"), &e))
}

/// The lease bucket, waiting (up to `limit`) while JetStream cannot answer; created when
/// missing where the user may (an open bus), otherwise the admin step is named.
pub async fn open_bucket(js: &jetstream::Context, limit: Duration) -> Result<kv::Store, BusError> {
    let not_found = |e: &jetstream::context::GetStreamError| {
        matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
    };
    let what = format!("lease bucket {BUCKET}");
    let found = crate::setup::patiently(
        "lease bucket",
        limit,
        Duration::from_millis(500),
        || js.get_stream(bucket_stream()),
        |e| !not_found(e),
    )
    .await;
    match found {
        Ok(_) => {}
        Err(e) if not_found(&e) => {
            ensure_bucket(js, 1)
                .await
                .map_err(|_| crate::setup::missing_needs_admin(what.clone(), &e))?;
        }
        Err(e) => return Err(err(&what, &e)),
    }
    js.get_key_value(BUCKET).await.map_err(|e| err(&what, &e))
}

/// The current entry of `key`, read from the bucket stream's leader. The KV client's own
/// `entry` uses a direct get when the bucket allows it (buckets made before this did), which
/// any replica may answer — one still catching up after a restart with a revision several
/// renewals old. A holder that adopted such a revision would fail every renewal on it until a
/// standby took the lease over.
pub async fn read(kv: &kv::Store, key: &str) -> Result<Option<kv::Entry>, String> {
    let subject = format!("{}{key}", kv.prefix);
    match kv.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => {
            let operation = m
                .headers
                .get("KV-Operation")
                .and_then(|op| op.as_str().parse().ok())
                .unwrap_or(kv::Operation::Put);
            Ok(Some(kv::Entry {
                bucket: kv.name.clone(),
                key: key.to_string(),
                value: m.payload,
                revision: m.sequence,
                delta: 0,
                created: m.time,
                operation,
                seen_current: false,
            }))
        }
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn encode(v: &LeaseValue) -> bytes::Bytes {
    serde_json::to_vec(v)
        .expect("a lease value serializes")
        .into()
}

fn decode(raw: &[u8]) -> LeaseValue {
    serde_json::from_slice(raw).unwrap_or_else(|_| LeaseValue {
        holder: format!(
            "an unreadable lease value ({})",
            huiqi_events::escape_control(&String::from_utf8_lossy(raw))
        ),
        ttl_ms: 0,
        state: "held".into(),
        incarnation: String::new(),
    })
}

/// A lease being held: its renewals run in a task until [`Lease::release`] or loss.
pub struct Lease {
    key: String,
    fence: Fence,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes `key` for `instance`, standing by (logging who holds it) until it is free, the
    /// holder's lease lapses or `stop`. `ttl` is how long a lapse lasts before a standby may
    /// take over; the holder renews every `ttl/5`.
    pub async fn acquire(
        kv: kv::Store,
        key: &str,
        instance: &str,
        ttl: Duration,
        stop: &CancellationToken,
    ) -> Result<(Lease, Acquired), BusError> {
        let ttl = ttl.max(Duration::from_millis(500));
        let mine = LeaseValue {
            holder: instance.to_string(),
            ttl_ms: ttl.as_millis() as u64,
            state: "held".into(),
            incarnation: incarnation(),
        };
        let poll = (ttl / 5).min(Duration::from_secs(1));
        let beat = format!("{key}.standby.{}", short_hash(instance));
        // The revision a standby last saw, and since when (its own clock).
        let mut seen: Option<(u64, Instant)> = None;
        let mut told: Option<String> = None;
        let acquired = loop {
            let started = Instant::now();
            let attempt: Result<Option<Acquired>, String> = match read(&kv, key).await {
                Err(e) => Err(e),
                Ok(None) => match kv.create(key, encode(&mine)).await {
                    Ok(revision) => Ok(Some(Acquired {
                        previous: None,
                        previous_incarnation: String::new(),
                        revision,
                        incarnation: mine.incarnation.clone(),
                    })),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                    Err(e) => Err(e.to_string()),
                },
                // A deleted key (an admin's act): whoever held it is unknown, so a log here
                // cannot be taken for current.
                Ok(Some(entry)) if entry.operation != kv::Operation::Put => {
                    match kv.update(key, encode(&mine), entry.revision).await {
                        Ok(revision) => Ok(Some(Acquired {
                            previous: Some(
                                "an unknown instance (the lease key was deleted)".into(),
                            ),
                            previous_incarnation: String::new(),
                            revision,
                            incarnation: mine.incarnation.clone(),
                        })),
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Ok(Some(entry)) => {
                    let held = decode(&entry.value);
                    let free = held.holder == instance || held.state == "released";
                    // The lapse counts only while the bucket commits writes, proven by this
                    // standby's own heartbeat key: while the bucket elects a leader and catches
                    // up (a node lost) the holder cannot renew either, and must not lose its
                    // lease for it.
                    let writable = free
                        || tokio::time::timeout(poll * 2, kv.put(&beat, encode(&mine)))
                            .await
                            .is_ok_and(|r| r.is_ok());
                    let lapsed = match seen {
                        _ if !writable => {
                            seen = None;
                            false
                        }
                        // Only while this look was prompt: one that hung (the bucket not
                        // answering) is a gap in the watch, like a failed one.
                        Some((rev, since))
                            if rev == entry.revision && started.elapsed() <= poll * 3 =>
                        {
                            since.elapsed() >= Duration::from_millis(held.ttl_ms.max(1))
                        }
                        // From when the write was answered: a probe that hung through an
                        // election proves nothing about the time it hung.
                        _ => {
                            seen = Some((entry.revision, Instant::now()));
                            false
                        }
                    };
                    if free || lapsed {
                        match kv.update(key, encode(&mine), entry.revision).await {
                            Ok(revision) => Ok(Some(Acquired {
                                previous: Some(held.holder),
                                previous_incarnation: held.incarnation,
                                revision,
                                incarnation: mine.incarnation.clone(),
                            })),
                            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                                Ok(None)
                            }
                            Err(e) => Err(e.to_string()),
                        }
                    } else {
                        if told.as_deref() != Some(held.holder.as_str()) {
                            tracing::info!(lease = key, holder = %held.holder, "standing by: another instance holds this service's work");
                            told = Some(held.holder.clone());
                        }
                        Ok(None)
                    }
                }
            };
            match attempt {
                Ok(Some(a)) => break (a, started),
                Ok(None) => {}
                Err(e) => {
                    // The lapse counts only while this standby watches without a gap: a
                    // revision last seen before the bucket stopped answering and seen again
                    // after it came back has not been unmoved for that long on the holder's
                    // side (it could not renew either). Counting across the gap took a lease
                    // from a live holder at the first read after a quorum loss (cluster test).
                    seen = None;
                    tracing::warn!(lease = key, error = %e, "lease bucket cannot answer; trying again")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return Err(err(&format!("lease {key}"), &"stopped while standing by")),
                _ = tokio::time::sleep(poll) => {}
            }
        };
        let (acquired, started) = acquired;
        tracing::info!(lease = key, previous = ?acquired.previous, "lease taken: this instance does the work");
        let (tx, rx) = watch::channel(Holding::Until(started + ttl / 2));
        let stop = CancellationToken::new();
        let task = tokio::spawn(renew(
            kv,
            key.to_string(),
            mine,
            acquired.revision,
            ttl,
            tx,
            stop.clone(),
        ));
        Ok((
            Lease {
                key: key.to_string(),
                fence: Fence(Some(rx)),
                stop,
                task,
            },
            acquired,
        ))
    }

    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stops renewing without giving the lease up, as a holder that crashed or was cut off
    /// would (for drills and tests): a standby takes over once the lease lapses.
    pub fn abandon(self) {
        self.task.abort();
    }

    /// Stops renewing and marks the lease released, so a standby takes it at once (after the
    /// service has published what it logged).
    pub async fn release(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn renew(
    kv: kv::Store,
    key: String,
    mine: LeaseValue,
    mut revision: u64,
    ttl: Duration,
    tx: watch::Sender<Holding>,
    stop: CancellationToken,
) {
    let every = ttl / 5;
    let mut failing_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        let started = Instant::now();
        let renewed = tokio::time::timeout(ttl / 2, kv.update(&key, encode(&mine), revision)).await;
        match renewed {
            Ok(Ok(r)) => {
                revision = r;
                let _ = tx.send(Holding::Until(started + ttl / 2));
                if let Some(since) = failing_since.take() {
                    tracing::info!(lease = %key, after_ms = since.elapsed().as_millis() as u64, "lease renewed again; resuming");
                }
            }
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let by = match read(&kv, &key).await {
                    // A renewal of ours that timed out here but was committed later: the key
                    // is still ours (nobody wrote since); carry on from its revision. It does
                    // not extend the fence: when it was committed is unknown.
                    Ok(Some(e))
                        if e.operation == kv::Operation::Put && decode(&e.value) == mine =>
                    {
                        revision = e.revision;
                        continue;
                    }
                    Ok(Some(e)) if e.operation == kv::Operation::Put => decode(&e.value).holder,
                    Ok(_) => "nobody (the lease key was deleted)".to_string(),
                    // Who holds it cannot be read now (the bucket electing a leader): not
                    // known to be lost. A failed renewal, then; the next one asks again, and
                    // the fence runs out meanwhile as for any failure. (Concluding "lost"
                    // here stopped a holder whose own late renewal was the newer revision.)
                    Err(e) => {
                        if failing_since.is_none() {
                            failing_since = Some(started);
                            tracing::warn!(lease = %key, error = %e, "lease renewal failed on its revision and the lease cannot be read; work pauses when the lease runs out");
                        }
                        continue;
                    }
                };
                tracing::error!(lease = %key, taken_by = %by, "lease taken by another instance: this instance stops without publishing anything more");
                let _ = tx.send(Holding::Lost { by });
                return;
            }
            failed => {
                let reason = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_string(),
                };
                if failing_since.is_none() {
                    failing_since = Some(started);
                    tracing::warn!(lease = %key, error = %reason, "lease renewal failed; work pauses when the lease runs out and resumes when a renewal succeeds");
                }
            }
        }
    }
    // A clean stop: give the lease up so a standby need not wait out the ttl.
    let _ = tx.send(Holding::Released);
    let released = LeaseValue {
        state: "released".into(),
        ..mine
    };
    if let Err(e) = kv.update(&key, encode(&released), revision).await {
        tracing::warn!(lease = %key, error = %e, "could not mark the lease released; a standby takes over once it lapses");
    }
}

/// A new incarnation's id: process id and start time.
fn incarnation() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// A key-safe digest of an instance id (ids hold `:` and `/`).
fn short_hash(s: &str) -> String {
    // FNV-1a, 64 bits: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The default instance id: this host and the canonical data directory, so a restart of the
/// same instance takes its own lease back at once, and two instances can never share one.
pub fn default_instance(data_dir: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    let dir = std::fs::canonicalize(data_dir)
        .or_else(|_| std::path::absolute(data_dir))
        .unwrap_or_else(|_| data_dir.to_path_buf());
    format!("{host}:{}", dir.display())
}
