//! Each service's append-only event log on sled 0.34.
//!
//! Why it looks like this:
//! - **Global sequence** keys are big-endian `u64`, so sled's ordered iteration is log order.
//! - **Hash chain**: each record stores the previous record's hash and its own,
//!   `SHA-256(prev_hash ‖ seq ‖ publish subject ‖ event bytes)`. [`EventLog::audit`] recomputes
//!   the chain and the head, so any edit, deletion, insertion or reordering is reported.
//! - **Inbox**: the ids of incoming events already applied, kept for ever (JetStream's dedupe
//!   window is only two minutes). The inbox mark and the events it caused are written in *one*
//!   atomic sled batch by [`EventLog::commit`], which then flushes: a message is acked only
//!   after that, so a crash anywhere either redelivers it (nothing written) or makes it a no-op.
//! - **One tree, key prefixes** (`L` log, `S` index, `I` inbox, `H` head, `C` cursor): sled's
//!   `apply_batch` is atomic within a tree and far cheaper than a multi-tree transaction;
//!   commits are serialised by a mutex, so reading the head and inbox before the batch is safe.
//! - **Outbox**: an event appended with a `publish` subject is published by the relay (in
//!   `huiqi-bus`), which keeps its cursor here. A crash between append and publish republishes
//!   on restart; consumers drop the duplicate by event id.
//! - **Per-subject index**: `subject ‖ 0 ‖ seq` → (), so a claim's timeline is a prefix scan.
//! - **Skipped records** (`K` ‖ seq → reason): a record an operator told the service to skip at
//!   start because it could not be read; the skip is also logged as an event, so it is audited.
//! - **Exact bytes**: an event received from the stream is logged with the bytes it was signed
//!   over ([`Pending::raw`]), so the log and the stream hold the same event byte for byte.

use huiqi_events::Envelope;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

pub type Hash = [u8; 32];

/// Record formats: the event stored as it is, or LZ4-compressed (events of `COMPRESS_FROM`
/// bytes or more). The hash chain is always over the event's own bytes.
const FORMAT: u8 = 1;
const FORMAT_LZ4: u8 = 2;
const COMPRESS_FROM: usize = 256;
const HEAD_KEY: &[u8] = b"H";
const CURSOR_KEY: &[u8] = b"C";
/// Present while a log rebuilt from the stream has not had its answers checked by its service.
const UNCHECKED_KEY: &[u8] = b"R";
const LOG: u8 = b'L';
const INDEX: u8 = b'S';
const INBOX: u8 = b'I';
const SKIPPED: u8 = b'K';

fn log_key(seq: u64) -> [u8; 9] {
    let mut k = [LOG; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn inbox_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(INBOX);
    k.extend_from_slice(id.as_bytes());
    k
}

fn seq_of(key: &[u8]) -> Result<u64, LogError> {
    key.get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| LogError::Meta("a log key is not L + u64".into()))
}

/// Errors of the event log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("record {seq} is unreadable: {reason}")]
    Corrupt { seq: u64, reason: String },
    #[error("log metadata is unreadable: {0}")]
    Meta(String),
}

/// An event to append; `publish` names the NATS subject the relay must publish it on.
#[derive(Debug, Clone)]
pub struct Pending {
    pub envelope: Envelope,
    pub publish: Option<String>,
    /// The event's bytes as received (they decode to `envelope`); logged as they are instead
    /// of re-encoding `envelope`, so a signature over them still verifies.
    pub raw: Option<bytes::Bytes>,
}

impl Pending {
    pub fn publish(envelope: Envelope, subject: impl Into<String>) -> Self {
        Pending {
            envelope,
            publish: Some(subject.into()),
            raw: None,
        }
    }
    pub fn local(envelope: Envelope) -> Self {
        Pending {
            envelope,
            publish: None,
            raw: None,
        }
    }
    /// An event received from the stream, logged with its exact bytes.
    pub fn received(envelope: Envelope, raw: bytes::Bytes) -> Self {
        Pending {
            envelope,
            publish: None,
            raw: Some(raw),
        }
    }
    /// An event restored from the stream that this service had published: logged with its
    /// exact bytes and its subject (the relay cursor is moved past it by the restore).
    pub fn restored(envelope: Envelope, raw: bytes::Bytes, subject: impl Into<String>) -> Self {
        Pending {
            envelope,
            publish: Some(subject.into()),
            raw: Some(raw),
        }
    }
}

/// The effect of one incoming message: mark `inbox_id` as processed and append `events`.
/// Without an `inbox_id` (work a service starts itself) the events are simply appended.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    pub inbox_id: Option<String>,
    pub events: Vec<Pending>,
}

/// What [`EventLog::commit`] did with one [`Commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Appended; the sequence numbers of its events are `first..first + count`.
    Appended { first: u64, count: u64 },
    /// The inbox id was already processed: nothing written.
    Duplicate,
}

/// One record of the log.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: u64,
    pub prev_hash: Hash,
    pub hash: Hash,
    pub publish: Option<String>,
    pub envelope: Envelope,
}

/// An event the relay must publish: its bytes exactly as logged.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub seq: u64,
    pub subject: String,
    pub id: String,
    pub event: Vec<u8>,
}

/// The result of [`EventLog::audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    pub records: u64,
    /// The records' size, bytes (events, subjects and chain hashes).
    pub bytes: u64,
    pub head_hash: String,
    pub problems: Vec<String>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn chain_hash(prev: &Hash, seq: u64, publish: &[u8], event: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update((publish.len() as u32).to_be_bytes());
    h.update(publish);
    h.update(event);
    h.finalize().into()
}

fn encode_record(prev: &Hash, hash: &Hash, publish: &[u8], event: &[u8]) -> Vec<u8> {
    let compressed = (event.len() >= COMPRESS_FROM).then(|| lz4_flex::compress_prepend_size(event));
    let body: &[u8] = compressed.as_deref().unwrap_or(event);
    let mut v = Vec::with_capacity(1 + 64 + 4 + publish.len() + body.len());
    v.push(if compressed.is_some() {
        FORMAT_LZ4
    } else {
        FORMAT
    });
    v.extend_from_slice(prev);
    v.extend_from_slice(hash);
    v.extend_from_slice(&(publish.len() as u32).to_be_bytes());
    v.extend_from_slice(publish);
    v.extend_from_slice(body);
    v
}

/// The raw parts of a stored record, before the event JSON is decoded (the event bytes
/// decompressed when the record holds them compressed).
struct RawRecord<'a> {
    prev: Hash,
    hash: Hash,
    publish: &'a [u8],
    event: std::borrow::Cow<'a, [u8]>,
}

fn split_record(seq: u64, bytes: &[u8]) -> Result<RawRecord<'_>, LogError> {
    let corrupt = |reason: &str| LogError::Corrupt {
        seq,
        reason: reason.to_string(),
    };
    if bytes.len() < 69 || (bytes[0] != FORMAT && bytes[0] != FORMAT_LZ4) {
        return Err(corrupt("bad header"));
    }
    let prev: Hash = bytes[1..33].try_into().expect("32 bytes");
    let hash: Hash = bytes[33..65].try_into().expect("32 bytes");
    let plen = u32::from_be_bytes(bytes[65..69].try_into().expect("4 bytes")) as usize;
    if bytes.len() < 69 + plen {
        return Err(corrupt("truncated subject"));
    }
    let body = &bytes[69 + plen..];
    let event = if bytes[0] == FORMAT_LZ4 {
        std::borrow::Cow::Owned(
            lz4_flex::decompress_size_prepended(body)
                .map_err(|e| corrupt(&format!("compressed event does not decompress: {e}")))?,
        )
    } else {
        std::borrow::Cow::Borrowed(body)
    };
    Ok(RawRecord {
        prev,
        hash,
        publish: &bytes[69..69 + plen],
        event,
    })
}

fn decode_record(seq: u64, bytes: &[u8]) -> Result<Record, LogError> {
    let raw = split_record(seq, bytes)?;
    let publish = if raw.publish.is_empty() {
        None
    } else {
        Some(
            String::from_utf8(raw.publish.to_vec()).map_err(|_| LogError::Corrupt {
                seq,
                reason: "subject is not UTF-8".into(),
            })?,
        )
    };
    let envelope: Envelope = serde_json::from_slice(&raw.event).map_err(|e| LogError::Corrupt {
        seq,
        reason: format!("event JSON: {e}"),
    })?;
    // Readers see today's types: an older schema version is brought up by its upcaster (the
    // stored bytes, which the hash chain and the relay use, are left as written).
    let envelope = huiqi_events::types::upcast(envelope).map_err(|e| LogError::Corrupt {
        seq,
        reason: format!("event type: {e}"),
    })?;
    Ok(Record {
        seq,
        prev_hash: raw.prev,
        hash: raw.hash,
        publish,
        envelope,
    })
}

fn encode_head(seq: u64, hash: &Hash) -> Vec<u8> {
    let mut v = seq.to_be_bytes().to_vec();
    v.extend_from_slice(hash);
    v
}

fn decode_head(bytes: Option<&[u8]>) -> Result<(u64, Hash), LogError> {
    match bytes {
        None => Ok((0, [0u8; 32])),
        Some(b) if b.len() == 40 => Ok((
            u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
            b[8..].try_into().expect("32 bytes"),
        )),
        Some(_) => Err(LogError::Meta("head has the wrong length".into())),
    }
}

fn skipped_key(seq: u64) -> [u8; 9] {
    let mut k = [SKIPPED; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Adds one event to a batch after `seq`/`prev`, moving both on.
fn append(out: &mut sled::Batch, seq: &mut u64, prev: &mut Hash, p: &Pending) {
    *seq += 1;
    let publish = p.publish.as_deref().unwrap_or("").as_bytes();
    let encoded;
    let event: &[u8] = match &p.raw {
        Some(raw) => raw,
        None => {
            encoded = p.envelope.encode();
            &encoded
        }
    };
    let hash = chain_hash(prev, *seq, publish, event);
    out.insert(&log_key(*seq), encode_record(prev, &hash, publish, event));
    out.insert(index_key(&p.envelope.subject, *seq), &[]);
    *prev = hash;
}

fn index_key(subject: &str, seq: u64) -> Vec<u8> {
    let mut k = vec![INDEX];
    k.extend_from_slice(subject.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A service's event log. Share it behind an `Arc`; commits are serialised internally.
pub struct EventLog {
    db: sled::Db,
    tree: sled::Tree,
    writing: Mutex<()>,
}

impl EventLog {
    /// Opens (or creates) the log in `dir`. sled locks the directory: one process at a time.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(32 * 1024 * 1024)
            .open()?;
        Ok(EventLog {
            tree: db.open_tree("events")?,
            db,
            writing: Mutex::new(()),
        })
    }

    /// Applies a batch of commits as one atomic sled batch, then flushes to disk. When this
    /// returns `Ok`, every message in the batch may be acked.
    pub fn commit(&self, batch: &[Commit]) -> Result<Vec<Applied>, LogError> {
        let _one_writer = self
            .writing
            .lock()
            .map_err(|_| LogError::Meta("a commit panicked".into()))?;
        let (mut seq, mut prev) = self.head()?;
        let mut out = sled::Batch::default();
        let mut marked: HashSet<&str> = HashSet::new();
        let mut applied = Vec::with_capacity(batch.len());
        for commit in batch {
            if let Some(id) = &commit.inbox_id {
                if marked.contains(id.as_str()) || self.tree.contains_key(inbox_key(id))? {
                    applied.push(Applied::Duplicate);
                    continue;
                }
                marked.insert(id);
                out.insert(inbox_key(id), &(seq + 1).to_be_bytes());
            }
            let first = seq + 1;
            for p in &commit.events {
                append(&mut out, &mut seq, &mut prev, p);
            }
            applied.push(Applied::Appended {
                first,
                count: commit.events.len() as u64,
            });
        }
        out.insert(HEAD_KEY, encode_head(seq, &prev));
        self.tree.apply_batch(out)?;
        self.db.flush()?;
        Ok(applied)
    }

    /// Marks record `seq` as skipped (an operator's explicit decision) and appends `event`
    /// recording it, in one atomic batch.
    pub fn skip(&self, seq: u64, reason: &str, event: Pending) -> Result<(), LogError> {
        let _one_writer = self
            .writing
            .lock()
            .map_err(|_| LogError::Meta("a commit panicked".into()))?;
        let (mut head, mut prev) = self.head()?;
        let mut out = sled::Batch::default();
        out.insert(skipped_key(seq).to_vec(), reason.as_bytes());
        append(&mut out, &mut head, &mut prev, &event);
        out.insert(HEAD_KEY, encode_head(head, &prev));
        self.tree.apply_batch(out)?;
        self.db.flush()?;
        Ok(())
    }

    /// The records an operator skipped, with the reason given.
    pub fn skipped(&self) -> Result<std::collections::BTreeMap<u64, String>, LogError> {
        let mut out = std::collections::BTreeMap::new();
        for item in self.tree.scan_prefix([SKIPPED]) {
            let (k, v) = item?;
            out.insert(seq_of(&k)?, String::from_utf8_lossy(&v).into_owned());
        }
        Ok(out)
    }

    /// Whether the log holds no record at all (a fresh directory, e.g. before a restore).
    pub fn is_empty(&self) -> Result<bool, LogError> {
        Ok(self.head()?.0 == 0 && self.tree.first()?.is_none())
    }

    /// Whether an incoming event id was already applied.
    pub fn is_processed(&self, id: &str) -> Result<bool, LogError> {
        Ok(self.tree.contains_key(inbox_key(id))?)
    }

    /// The last sequence number and its hash (0 and zeros for an empty log).
    pub fn head(&self) -> Result<(u64, Hash), LogError> {
        decode_head(self.tree.get(HEAD_KEY)?.as_deref())
    }

    /// Records with `seq >= from`, in order.
    pub fn records_from(&self, from: u64) -> impl Iterator<Item = Result<Record, LogError>> + '_ {
        self.tree
            .range(log_key(from)..log_key(u64::MAX))
            .map(|item| {
                let (k, v) = item?;
                let seq = seq_of(&k)?;
                decode_record(seq, &v)
            })
    }

    /// Up to `limit` records with `seq >= from` that have a publish subject, as the raw event
    /// bytes the relay sends (no decode and re-encode), plus the last sequence scanned.
    pub fn outbox_from(&self, from: u64, limit: usize) -> Result<(Vec<Outgoing>, u64), LogError> {
        #[derive(serde::Deserialize)]
        struct IdOnly<'a> {
            #[serde(borrow)]
            id: std::borrow::Cow<'a, str>,
        }
        let mut out = Vec::new();
        let mut last = from.saturating_sub(1);
        for item in self.tree.range(log_key(from)..log_key(u64::MAX)) {
            let (k, v) = item?;
            let seq = seq_of(&k)?;
            last = seq;
            let raw = split_record(seq, &v)?;
            if !raw.publish.is_empty() {
                let subject =
                    String::from_utf8(raw.publish.to_vec()).map_err(|_| LogError::Corrupt {
                        seq,
                        reason: "subject is not UTF-8".into(),
                    })?;
                let id: IdOnly =
                    serde_json::from_slice(&raw.event).map_err(|e| LogError::Corrupt {
                        seq,
                        reason: format!("event JSON: {e}"),
                    })?;
                out.push(Outgoing {
                    seq,
                    subject,
                    id: id.id.into_owned(),
                    event: raw.event.into_owned(),
                });
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok((out, last))
    }

    /// Every record whose envelope subject is `subject` (a claim or application id), in order.
    pub fn subject_records(&self, subject: &str) -> Result<Vec<Record>, LogError> {
        let mut prefix = vec![INDEX];
        prefix.extend_from_slice(subject.as_bytes());
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, _) = item?;
            let seq = u64::from_be_bytes(
                k[prefix.len()..]
                    .try_into()
                    .map_err(|_| LogError::Meta("index key has the wrong length".into()))?,
            );
            if let Some(v) = self.tree.get(log_key(seq))? {
                out.push(decode_record(seq, &v)?);
            }
        }
        Ok(out)
    }

    /// The sequence number of the last record the outbox relay has published.
    pub fn outbox_cursor(&self) -> Result<u64, LogError> {
        match self.tree.get(CURSOR_KEY)? {
            None => Ok(0),
            Some(b) => Ok(u64::from_be_bytes(b.as_ref().try_into().map_err(|_| {
                LogError::Meta("outbox cursor has the wrong length".into())
            })?)),
        }
    }

    /// Moves the relay cursor. Not flushed here: the relay runs on the async runtime and a
    /// blocking fsync per round stalled every other task. The cursor reaches disk with the
    /// writer's next group flush (or sled's own periodic flush); after a crash it can only lag,
    /// never lead, so the relay republishes a few events and JetStream drops them by their
    /// derived `Nats-Msg-Id`.
    pub fn set_outbox_cursor(&self, seq: u64) -> Result<(), LogError> {
        self.tree.insert(CURSOR_KEY, &seq.to_be_bytes())?;
        Ok(())
    }

    /// Marks the log as rebuilt from the stream with its answers not yet checked: an answer is
    /// several events published one after another, and the stream may hold only some of them
    /// (an instance killed mid-way). The service checks at its next start and then calls
    /// [`EventLog::answers_checked`]; until then every start checks again.
    pub fn mark_answers_unchecked(&self) -> Result<(), LogError> {
        self.tree.insert(UNCHECKED_KEY, &[1u8])?;
        self.db.flush()?;
        Ok(())
    }

    /// Whether the log was rebuilt and its service has not checked its answers since.
    pub fn answers_unchecked(&self) -> Result<bool, LogError> {
        Ok(self.tree.contains_key(UNCHECKED_KEY)?)
    }

    /// The service has checked the answers of its rebuilt log (and committed what was missing).
    pub fn answers_checked(&self) -> Result<(), LogError> {
        self.tree.remove(UNCHECKED_KEY)?;
        self.db.flush()?;
        Ok(())
    }

    /// Recomputes the hash chain from the first record to the head.
    pub fn audit(&self) -> Result<AuditReport, LogError> {
        let mut report = AuditReport::default();
        let mut prev: Hash = [0u8; 32];
        let mut expected_seq = 1u64;
        for item in self.tree.scan_prefix([LOG]) {
            let (k, v) = item?;
            let Ok(seq) = seq_of(&k) else {
                report
                    .problems
                    .push("a key is not a sequence number".into());
                continue;
            };
            if seq != expected_seq {
                report.problems.push(format!(
                    "sequence gap: expected record {expected_seq}, found {seq} (records deleted?)"
                ));
            }
            report.bytes += v.len() as u64;
            match split_record(seq, &v) {
                Err(e) => report.problems.push(e.to_string()),
                Ok(raw) => {
                    if raw.prev != prev {
                        report.problems.push(format!(
                            "record {seq}: previous-hash link broken (deleted or reordered records)"
                        ));
                    }
                    let h = chain_hash(&raw.prev, seq, raw.publish, &raw.event);
                    if h != raw.hash {
                        report.problems.push(format!(
                            "record {seq}: content does not match its hash (edited)"
                        ));
                    }
                    if serde_json::from_slice::<Envelope>(&raw.event).is_err() {
                        report
                            .problems
                            .push(format!("record {seq}: event is not valid JSON"));
                    }
                    prev = raw.hash;
                }
            }
            report.records += 1;
            expected_seq = seq + 1;
        }
        let (head_seq, head_hash) = self.head()?;
        if head_seq != expected_seq - 1 || head_hash != prev {
            report.problems.push(format!(
                "head says record {head_seq} but the chain ends at {} (records removed from the end?)",
                expected_seq - 1
            ));
        }
        report.head_hash = hex(&prev);
        Ok(report)
    }

    /// For tests and tamper drills: the raw bytes of a record.
    pub fn raw_record(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.tree.get(log_key(seq))?.map(|v| v.to_vec()))
    }

    /// For tests and tamper drills: overwrite or remove a raw record, bypassing the chain.
    pub fn tamper(&self, seq: u64, bytes: Option<Vec<u8>>) -> Result<(), LogError> {
        match bytes {
            Some(b) => self.tree.insert(log_key(seq), b)?,
            None => self.tree.remove(log_key(seq))?,
        };
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(subject: &str, n: u32) -> Envelope {
        Envelope::new(
            "test",
            "huiqi.claim.opened.v1",
            subject,
            &serde_json::json!({ "n": n }),
        )
        .unwrap()
    }

    fn commit(inbox: Option<&str>, events: Vec<Envelope>) -> Commit {
        Commit {
            inbox_id: inbox.map(str::to_string),
            events: events
                .into_iter()
                .map(|e| Pending::publish(e, "huiqi.internal.x"))
                .collect(),
        }
    }

    #[test]
    fn append_read_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EventLog::open(dir.path()).unwrap();
            let applied = log
                .commit(&[
                    commit(Some("in-1"), vec![ev("C-1", 1), ev("C-2", 2)]),
                    commit(Some("in-2"), vec![ev("C-1", 3)]),
                ])
                .unwrap();
            assert_eq!(applied[0], Applied::Appended { first: 1, count: 2 });
            assert_eq!(applied[1], Applied::Appended { first: 3, count: 1 });
        }
        let log = EventLog::open(dir.path()).unwrap();
        let all: Vec<Record> = log.records_from(1).map(Result::unwrap).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].envelope.data.value()["n"], 3);
        assert_eq!(all[1].prev_hash, all[0].hash);
        let c1 = log.subject_records("C-1").unwrap();
        assert_eq!(c1.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(log.head().unwrap().0, 3);
        assert!(log.audit().unwrap().is_clean());
    }

    #[test]
    fn inbox_rejects_a_repeat_even_inside_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        let applied = log
            .commit(&[
                commit(Some("m-1"), vec![ev("C-1", 1)]),
                commit(Some("m-1"), vec![ev("C-1", 2)]),
            ])
            .unwrap();
        assert_eq!(applied[1], Applied::Duplicate);
        let again = log
            .commit(&[commit(Some("m-1"), vec![ev("C-1", 3)])])
            .unwrap();
        assert_eq!(again, vec![Applied::Duplicate]);
        assert_eq!(log.head().unwrap().0, 1);
        assert!(log.is_processed("m-1").unwrap());
        assert!(!log.is_processed("m-2").unwrap());
    }

    #[test]
    fn chain_detects_edit_delete_and_reorder() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        for i in 0..5 {
            log.commit(&[commit(None, vec![ev("C-1", i)])]).unwrap();
        }
        assert!(log.audit().unwrap().is_clean());

        // Edit one byte of the event in record 3.
        let original = log.raw_record(3).unwrap().unwrap();
        let mut edited = original.clone();
        let pos = edited.len() - 3;
        edited[pos] ^= 0x01;
        log.tamper(3, Some(edited)).unwrap();
        let r = log.audit().unwrap();
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains("record 3") && p.contains("edited")),
            "{:?}",
            r.problems
        );
        log.tamper(3, Some(original.clone())).unwrap();
        assert!(log.audit().unwrap().is_clean());

        // Delete record 2.
        let two = log.raw_record(2).unwrap().unwrap();
        log.tamper(2, None).unwrap();
        assert!(!log.audit().unwrap().is_clean());
        log.tamper(2, Some(two.clone())).unwrap();

        // Swap records 2 and 3.
        log.tamper(2, Some(original)).unwrap();
        log.tamper(3, Some(two)).unwrap();
        assert!(!log.audit().unwrap().is_clean());
    }

    #[test]
    fn large_events_are_stored_compressed_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        let big = Envelope::new(
            "t",
            "huiqi.claim.opened.v1",
            "C-1",
            &serde_json::json!({ "pad": "受理".repeat(2000) }),
        )
        .unwrap();
        log.commit(&[commit(None, vec![big.clone(), ev("C-1", 1)])])
            .unwrap();
        let raw = log.raw_record(1).unwrap().unwrap();
        assert_eq!(raw[0], FORMAT_LZ4);
        assert!(raw.len() < big.encode().len() / 4, "{} bytes", raw.len());
        assert_eq!(
            log.raw_record(2).unwrap().unwrap()[0],
            FORMAT,
            "small events stay as they are"
        );
        let back: Vec<Record> = log.records_from(1).map(Result::unwrap).collect();
        assert_eq!(back[0].envelope, big);
        let (out, _) = log.outbox_from(1, 10).unwrap();
        assert_eq!(
            out[0].event,
            big.encode(),
            "the relay publishes the exact bytes"
        );
        assert!(log.audit().unwrap().is_clean());
        // A flipped bit in the compressed bytes is reported, never read as another event.
        let mut bad = raw.clone();
        let n = bad.len();
        bad[n - 5] ^= 0x40;
        log.tamper(1, Some(bad)).unwrap();
        assert!(!log.audit().unwrap().is_clean());
    }

    #[test]
    fn outbox_cursor_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EventLog::open(dir.path()).unwrap();
            assert_eq!(log.outbox_cursor().unwrap(), 0);
            log.set_outbox_cursor(42).unwrap();
        }
        let log = EventLog::open(dir.path()).unwrap();
        assert_eq!(log.outbox_cursor().unwrap(), 42);
    }
}
